//! The OpenAI-compatible HTTP layer of Formwork, as a library the `formwork` binary
//! and the tests share.
//!
//! Everything here is independent of the generation engine.
//!
//! - [`error`]: [`ApiError`](error::ApiError), OpenAI's error shape for every failure,
//!   and [`JsonBody`](error::JsonBody), the body extractor that names the bad field.
//! - [`id`]: response and tool-call ids.

pub mod error;
pub mod id;
