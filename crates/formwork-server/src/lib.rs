//! The OpenAI-compatible HTTP layer of Formwork, as a library the `formwork` binary
//! and the tests share.
//!
//! Everything here is independent of the generation engine.
//!
//! - [`protocol`]: serde types of OpenAI's chat-completions, completions and models API.
//! - [`error`]: [`ApiError`](error::ApiError), OpenAI's error shape for every failure,
//!   and [`JsonBody`](error::JsonBody), the body extractor that names the bad field.
//! - [`options`]: sampling and streaming fields checked and normalized for the engine.
//! - [`structure`]: every structure dialect resolved into one
//!   [`Structure`](structure::Structure).
//! - [`tools`]: the constraint of a forced tool call, and model output read back into
//!   `tool_calls`, whole or streamed.
//! - [`id`]: response and tool-call ids.

pub mod error;
pub mod id;
pub mod options;
pub mod protocol;
pub mod structure;
pub mod tools;
