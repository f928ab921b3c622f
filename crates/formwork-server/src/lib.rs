//! The OpenAI-compatible HTTP server of Formwork, as a library the `formwork` binary
//! and the tests share.
//!
//! The request-side modules are independent of the engine's running state: they read
//! requests, check them, decide what constraint the output must follow, and write
//! responses and streams in OpenAI's exact shapes. The serving modules put them in front
//! of a [`formwork_engine::Engine`].
//!
//! - [`protocol`]: serde types of OpenAI's chat-completions, completions, responses and
//!   models API.
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
//! - [`app`]: the shared state and [`router`](app::router), the whole API as an axum
//!   `Router` (authentication, request counting and logging, body limit).
//! - `generate` (private): the generation routes, from request to engine to response or
//!   stream; its behaviour is documented on [`app`] and in `docs/api.md`.
//! - `responses` (private): `POST /v1/responses`, OpenAI's Responses API over the same
//!   steps, its output items built from the reply whole or streamed as typed events.
//! - [`routes`]: models, tokenizer, metrics and health routes.
//! - [`prometheus`]: the `/metrics` text exposition.
//! - [`serve`](mod@serve): serving on a socket: connection timeouts and cap, graceful
//!   shutdown.
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

pub mod app;
pub mod error;
mod generate;
pub mod id;
pub mod options;
pub mod prometheus;
pub mod protocol;
mod responses;
pub mod routes;
pub mod serve;
pub mod sse;
pub mod structure;
pub mod tools;
