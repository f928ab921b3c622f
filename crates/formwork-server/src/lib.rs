//! The OpenAI-compatible HTTP layer of Formwork, as a library the `formwork` binary
//! and the tests share.
//!
//! Everything here is independent of the generation engine: it reads requests,
//! checks them, decides what structure the output must have, and writes responses
//! and streams in OpenAI's exact shapes.
//!
//! - [`protocol`]: serde types of OpenAI's chat-completions, completions and models API.
//! - [`error`]: [`ApiError`](error::ApiError), OpenAI's error shape for every failure,
//!   and [`JsonBody`](error::JsonBody), the body extractor that names the bad field.
//! - [`options`]: sampling and streaming fields checked and normalized for the engine.
//! - [`structure`]: every structure dialect (`metadata.structure`, `response_format`,
//!   vLLM's `guided_*`, forced tool calls) resolved into one engine
//!   [`Constraint`](formwork_engine::Constraint).
//! - [`tools`]: the constraint of a forced tool call, and model output read back into
//!   `tool_calls`, whole or streamed.
//! - [`sse`]: server-sent event framing.
//! - [`id`]: response and tool-call ids.
//!
//! ```
//! use formwork_engine::Constraint;
//! use formwork_server::error::parse_json;
//! use formwork_server::options::{GenerationOptions, Limits};
//! use formwork_server::protocol::ChatCompletionRequest;
//! use formwork_server::structure::resolve_chat;
//!
//! let body = br#"{
//!     "model": "smollm2",
//!     "messages": [{"role": "user", "content": "Pick a colour"}],
//!     "guided_choice": ["red", "green"],
//!     "max_tokens": 5
//! }"#;
//! let req: ChatCompletionRequest = parse_json(body)?;
//! req.validate()?;
//! let options = GenerationOptions::from_chat(&req, &Limits::default())?;
//! let (resolved, _tools) = resolve_chat(&req)?;
//! assert_eq!(options.max_tokens, Some(5));
//! assert_eq!(resolved.unwrap().constraint, Constraint::Choice(vec!["red".into(), "green".into()]));
//! # Ok::<(), formwork_server::error::ApiError>(())
//! ```

pub mod error;
pub mod id;
pub mod options;
pub mod protocol;
pub mod sse;
pub mod structure;
pub mod tools;
