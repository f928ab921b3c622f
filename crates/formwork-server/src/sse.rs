//! Server-sent events as OpenAI streams them.
//!
//! A streamed response is a `text/event-stream` of `data: {json}\n\n` events, one per
//! chunk, ended by `data: [DONE]\n\n`. An error after the stream started (the status
//! line is already sent) goes as one more event holding OpenAI's error object, then
//! `[DONE]`. [`data`], [`DONE`] and [`error_data`] give the exact bytes;
//! [`event`], [`done_event`] and [`error_event`] the same as
//! [`axum::response::sse::Event`]s for [`axum::response::sse::Sse`], which frames them
//! identically. The OpenAI SDKs ignore SSE comments, so `Sse::keep_alive` is safe.
//!
//! ```
//! use formwork_server::sse::{data, DONE};
//!
//! assert_eq!(data(&serde_json::json!({"a": 1})), "data: {\"a\":1}\n\n");
//! assert_eq!(DONE, "data: [DONE]\n\n");
//! ```

use axum::response::sse::Event;
use serde::Serialize;

use crate::error::ApiError;

/// The event that ends every stream.
pub const DONE: &str = "data: [DONE]\n\n";

/// One `data: {json}\n\n` event. A value that fails to serialize (which our types
/// never do) becomes an error event instead, so the stream stays well-formed.
pub fn data<T: Serialize>(value: &T) -> String {
    match serde_json::to_string(value) {
        Ok(json) => format!("data: {json}\n\n"),
        Err(e) => error_data(&serialize_error(&e)),
    }
}

/// The event of an error that ends a stream early: `data: {"error": {...}}\n\n`.
pub fn error_data(error: &ApiError) -> String {
    format!("data: {}\n\n", error.body())
}

/// [`data`] as an axum [`Event`].
pub fn event<T: Serialize>(value: &T) -> Event {
    match serde_json::to_string(value) {
        Ok(json) => Event::default().data(json),
        Err(e) => error_event(&serialize_error(&e)),
    }
}

/// [`DONE`] as an axum [`Event`].
pub fn done_event() -> Event {
    Event::default().data("[DONE]")
}

/// [`error_data`] as an axum [`Event`].
pub fn error_event(error: &ApiError) -> Event {
    Event::default().data(error.body().to_string())
}

/// The bytes an [`axum::response::sse::Sse`] response sends for these events (for
/// tests of code that produces events).
#[cfg(test)]
pub(crate) async fn sse_body_for_tests(events: Vec<Event>) -> String {
    use axum::response::IntoResponse;
    let stream =
        futures_util::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
    let response = axum::response::sse::Sse::new(stream).into_response();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    String::from_utf8_lossy(&body).into_owned()
}

fn serialize_error(e: &serde_json::Error) -> ApiError {
    ApiError::server(format!("could not serialize a stream chunk: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ChatChunkFactory, FinishReason, Usage};
    use axum::response::IntoResponse;
    use axum::response::sse::Sse;
    use std::convert::Infallible;

    #[test]
    fn frames_data_and_done() {
        let f = ChatChunkFactory::new("m");
        let chunk = f.content(0, "line one\nline two", None);
        let text = data(&chunk);
        assert!(text.starts_with("data: {\"id\":\"chatcmpl-"));
        assert!(text.ends_with("}\n\n"));
        // JSON escapes newlines, so one event is one line.
        assert_eq!(text.matches('\n').count(), 2);
        let json: serde_json::Value =
            serde_json::from_str(text.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(json["choices"][0]["delta"]["content"], "line one\nline two");
        assert_eq!(DONE, "data: [DONE]\n\n");
        let e = error_data(&ApiError::overloaded("busy"));
        assert_eq!(
            e,
            "data: {\"error\":{\"message\":\"busy\",\"type\":\"overloaded_error\",\"param\":null,\"code\":null}}\n\n"
        );
    }

    #[tokio::test]
    async fn axum_events_frame_the_same_bytes() {
        let f = ChatChunkFactory::new("m");
        let chunks = [
            f.role(0),
            f.content(0, "Hi\n", None),
            f.finish(0, FinishReason::Stop),
            f.usage(Usage::new(3, 2)),
        ];
        let mut expected: String = chunks.iter().map(data).collect();
        expected.push_str(&error_data(&ApiError::server("boom")));
        expected.push_str(DONE);

        let mut events: Vec<Result<Event, Infallible>> =
            chunks.iter().map(|c| Ok(event(c))).collect();
        events.push(Ok(error_event(&ApiError::server("boom"))));
        events.push(Ok(done_event()));
        let response = Sse::new(futures_util::stream::iter(events)).into_response();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
    }
}
