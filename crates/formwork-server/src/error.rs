//! The server's one error type, rendered in OpenAI's error shape.
//!
//! Every handler returns `Result<_, ApiError>`; [`ApiError`] implements
//! [`IntoResponse`], so a handler just uses `?`. The body is what OpenAI sends
//! and what the OpenAI SDKs turn into typed exceptions (`BadRequestError` for a
//! 400, `NotFoundError` for a 404...):
//!
//! ```json
//! {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}
//! ```
//!
//! [`JsonBody`] is the request-body extractor: it reads the body as JSON whatever its
//! content type, and turns malformed JSON or a field of the wrong type into a 400 in that
//! shape, with `param` naming the field (`messages[0].content`).
//!
//! ```
//! use axum::http::StatusCode;
//! use formwork_server::error::ApiError;
//!
//! let e = ApiError::invalid_request("temperature must be between 0 and 2").param("temperature");
//! assert_eq!(e.status(), StatusCode::BAD_REQUEST);
//! assert_eq!(e.body()["error"]["param"], "temperature");
//! ```

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// The kind of an [`ApiError`]: it fixes the HTTP status and OpenAI's `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 400: the request is malformed or asks for something unsupported.
    InvalidRequest,
    /// 401: a missing or wrong API key.
    Authentication,
    /// 404: an unknown model or route.
    NotFound,
    /// 405: a known route asked with the wrong HTTP method.
    MethodNotAllowed,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 413: the request body is larger than the server accepts.
    PayloadTooLarge,
    /// 429: too many requests are waiting; retry later.
    RateLimit,
    /// 503: the server is overloaded or shutting down; retry later.
    Overloaded,
    /// 500: a failure on the server's side.
    Server,
}

impl ErrorKind {
    /// The HTTP status this kind is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Authentication => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Server => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `type` field for this kind.
    pub fn type_name(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::PayloadTooLarge
            | ErrorKind::MethodNotAllowed
            | ErrorKind::RequestTimeout => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Server => "server_error",
        }
    }
}

/// An error answered to an API client: an HTTP status and OpenAI's error object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
    param: Option<String>,
    code: Option<String>,
}

impl ApiError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// A 400 `invalid_request_error`.
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidRequest, message)
    }

    /// A 401 `authentication_error`, code `invalid_api_key`.
    pub fn authentication(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Authentication, message).code("invalid_api_key")
    }

    /// A 404 `not_found_error`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, message)
    }

    /// A 404 for a model this server does not serve, with `param` `model` and code
    /// `model_not_found`, as OpenAI answers.
    pub fn model_not_found(model: &str) -> ApiError {
        ApiError::not_found(format!("The model `{model}` does not exist."))
            .param("model")
            .code("model_not_found")
    }

    /// A 429: the waiting queue is full.
    pub fn rate_limit(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::RateLimit, message)
    }

    /// A 503: the server is overloaded or shutting down.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Overloaded, message)
    }

    /// A 500 `server_error`.
    pub fn server(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Server, message)
    }

    /// Sets `param`: the request field at fault, as a path (`messages[0].content`).
    #[must_use]
    pub fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// Sets `code`: a machine-readable reason (`model_not_found`, `invalid_api_key`).
    #[must_use]
    pub fn code(mut self, code: impl Into<String>) -> ApiError {
        self.code = Some(code.into());
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status the error is sent with.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request field at fault, if known.
    pub fn param_name(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// The machine-readable code, if any.
    pub fn code_name(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The response body: `{"error": {"message", "type", "param", "code"}}`.
    ///
    /// The same object is sent as an SSE event when a stream fails after it started.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": self.object() })
    }

    fn object(&self) -> ErrorObject<'_> {
        ErrorObject {
            message: &self.message,
            kind: self.kind.type_name(),
            param: self.param.as_deref(),
            code: self.code.as_deref(),
        }
    }
}

/// OpenAI's error object (the value of the body's `error` field).
#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

/// A request body still arriving when its time ran out
/// ([`ServerConfig::body_timeout`](crate::app::ServerConfig::body_timeout)): the error
/// the router's body deadline raises, which [`JsonBody`] answers with a 408.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive within {} s", after.as_secs_f64())]
pub struct BodyTimedOut {
    /// The time the body had.
    pub after: std::time::Duration,
}

/// A request body read as JSON into `T`; failures are [`ApiError`]s in OpenAI's shape.
///
/// Unlike `axum::Json` it does not insist on a `content-type: application/json`
/// header (curl users often forget it). Malformed JSON is a 400 with the line and
/// column; a field of the wrong type, or a missing one, is a 400 whose `param` is
/// the field's path (`messages[1].content`, `temperature`); JSON nested deeper than
/// [`MAX_JSON_DEPTH`] a 400 that says so. A body over the router's limit is a 413, one
/// that did not arrive in time ([`BodyTimedOut`]) a 408.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let mut causes =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                });
            if let Some(timeout) = causes.find_map(|e| e.downcast_ref::<BodyTimedOut>()) {
                return ApiError::new(
                    ErrorKind::RequestTimeout,
                    format!("Request timeout: {timeout}."),
                );
            }
            let kind = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ErrorKind::PayloadTooLarge
            } else {
                ErrorKind::InvalidRequest
            };
            ApiError::new(kind, e.body_text())
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a request body as JSON into `T`, with the error [`JsonBody`] gives.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end().map_err(|e| {
        ApiError::invalid_request(format!("The request body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

/// The most levels arrays and objects may nest in a request body (the body's own object
/// is the first): serde_json's recursion limit of 128 refuses the 128th, as a syntax error
/// (`recursion limit exceeded`).
pub const MAX_JSON_DEPTH: usize = 127;

/// Turns a deserialization error into a 400 naming the field at fault.
fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    let message = inner.to_string();
    // serde_json has no error code for this in its public API, only the message.
    if let Some(position) = message.strip_prefix("recursion limit exceeded") {
        return ApiError::invalid_request(format!(
            "The request body is nested too deeply: arrays and objects may nest at most \
             {MAX_JSON_DEPTH} levels{position}"
        ));
    }
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return ApiError::invalid_request(format!("The request body is not valid JSON: {inner}"));
    }
    let path = e.path().to_string();
    // A missing field is reported at its parent; name the field itself.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field);
    let param = match (path.as_str(), missing) {
        (".", Some(field)) => Some(field.to_owned()),
        (".", None) => None,
        // The body is an array where an object was expected (serde reads structs from
        // arrays too); an index is no field name.
        (path, _) if path.starts_with('[') => {
            return ApiError::invalid_request(format!(
                "Invalid request body at `{path}`: {message}; expected a JSON object"
            ));
        }
        (parent, Some(field)) => Some(format!("{parent}.{field}")),
        (path, None) => Some(path.to_owned()),
    };
    match param {
        Some(param) => {
            ApiError::invalid_request(format!("Invalid `{param}`: {message}")).param(param)
        }
        None => ApiError::invalid_request(format!("Invalid request body: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Req {
        model: String,
        #[serde(default)]
        temperature: Option<f32>,
        #[serde(default)]
        messages: Vec<Msg>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
        content: String,
    }

    async fn response_json(response: Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn extract(body: &str) -> Result<Req, ApiError> {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .body(Body::from(body.to_owned()))
            .unwrap();
        JsonBody::<Req>::from_request(req, &()).await.map(|b| b.0)
    }

    #[tokio::test]
    async fn renders_openai_error_shape() {
        let e = ApiError::invalid_request("bad temperature").param("temperature");
        let (status, body) = response_json(e.into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"error": {"message": "bad temperature", "type": "invalid_request_error",
                   "param": "temperature", "code": null}})
        );
        let (status, body) =
            response_json(ApiError::model_not_found("gpt-9").into_response()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(body["error"]["type"], "not_found_error");
    }

    #[test]
    fn kinds_have_statuses_and_types() {
        for (kind, status, name) in [
            (ErrorKind::InvalidRequest, 400, "invalid_request_error"),
            (ErrorKind::Authentication, 401, "authentication_error"),
            (ErrorKind::NotFound, 404, "not_found_error"),
            (ErrorKind::MethodNotAllowed, 405, "invalid_request_error"),
            (ErrorKind::RequestTimeout, 408, "invalid_request_error"),
            (ErrorKind::PayloadTooLarge, 413, "invalid_request_error"),
            (ErrorKind::RateLimit, 429, "rate_limit_error"),
            (ErrorKind::Overloaded, 503, "overloaded_error"),
            (ErrorKind::Server, 500, "server_error"),
        ] {
            assert_eq!(kind.status().as_u16(), status);
            assert_eq!(kind.type_name(), name);
        }
        assert_eq!(
            ApiError::authentication("no key").code_name(),
            Some("invalid_api_key")
        );
    }

    #[tokio::test]
    async fn extracts_valid_json_without_content_type() {
        let req = extract(r#"{"model": "m", "temperature": 0.5, "extra": [1, 2]}"#)
            .await
            .unwrap();
        assert_eq!(req.model, "m");
        assert_eq!(req.temperature, Some(0.5));
    }

    #[tokio::test]
    async fn malformed_json_is_a_400() {
        let e = extract(r#"{"model": "m",}"#).await.unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(
            e.message()
                .starts_with("The request body is not valid JSON"),
            "{e}"
        );
        assert_eq!(e.param_name(), None);
        let e = extract("").await.unwrap_err();
        assert!(e.message().contains("not valid JSON"), "{e}");
        let e = extract(r#"{"model": "m"} trailing"#).await.unwrap_err();
        assert!(e.message().contains("not valid JSON"), "{e}");
    }

    #[tokio::test]
    async fn too_deep_json_is_not_called_invalid() {
        // Free-form fields (`metadata`, a JSON schema) are where deep nesting can hide.
        let deep = |depth: usize| {
            format!(
                r#"{{"model": "m", "metadata": {}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        let extract = |body: String| async move {
            let req = Request::builder().body(Body::from(body)).unwrap();
            JsonBody::<serde_json::Value>::from_request(req, &())
                .await
                .map(|b| b.0)
        };
        // The outer object is the first level.
        for depth in [MAX_JSON_DEPTH, 10 * MAX_JSON_DEPTH] {
            let e = extract(deep(depth)).await.unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert!(
                e.message().starts_with(
                    "The request body is nested too deeply: arrays and objects may nest at \
                     most 127 levels at line 1 column"
                ),
                "{e}"
            );
        }
        // With the outer object, MAX_JSON_DEPTH - 1 arrays are the most allowed.
        extract(deep(MAX_JSON_DEPTH - 1)).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_types_name_the_field() {
        let e = extract(r#"{"model": "m", "temperature": "hot"}"#)
            .await
            .unwrap_err();
        assert_eq!(e.param_name(), Some("temperature"));
        assert!(e.message().contains("invalid type: string \"hot\""), "{e}");

        let e = extract(r#"{"model": "m", "messages": [{"role": "user", "content": 5}]}"#)
            .await
            .unwrap_err();
        assert_eq!(e.param_name(), Some("messages[0].content"));

        let e = extract(r#"{"temperature": 1}"#).await.unwrap_err();
        assert_eq!(e.param_name(), Some("model"));
        assert!(e.message().contains("missing field `model`"), "{e}");

        let e = extract(r#"{"model": "m", "messages": [{"role": "user"}]}"#)
            .await
            .unwrap_err();
        assert_eq!(e.param_name(), Some("messages[0].content"));

        for body in ["[1]", "\"text\""] {
            let e = extract(body).await.unwrap_err();
            assert_eq!(e.param_name(), None);
            assert!(e.message().starts_with("Invalid request body"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_body_that_timed_out_is_a_408() {
        use axum::extract::DefaultBodyLimit;
        use axum::routing::post;
        // Through a router with a body limit, which wraps the body and its errors once more.
        let app = axum::Router::new()
            .route(
                "/",
                post(|JsonBody(v): JsonBody<serde_json::Value>| async move { Json(v) }),
            )
            .layer(DefaultBodyLimit::max(1024));
        let after = std::time::Duration::from_millis(1500);
        let chunks = [
            Ok(Bytes::from_static(b"{\"model\"")),
            Err(BodyTimedOut { after }),
        ];
        let req = Request::builder()
            .method("POST")
            .uri("/")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
        let response = tower::ServiceExt::oneshot(app, req).await.unwrap();
        let (status, body) = response_json(response).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(
            body["error"]["message"],
            "Request timeout: the request body did not arrive within 1.5 s."
        );
        // Other body errors stay 400s.
        let chunks = [Err::<Bytes, _>(std::io::Error::other("reset"))];
        let req = Request::builder()
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
        let e = JsonBody::<serde_json::Value>::from_request(req, &())
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn oversized_body_is_a_413() {
        use axum::extract::DefaultBodyLimit;
        use axum::routing::post;
        // Go through a router so the body limit layer applies.
        let app = axum::Router::new()
            .route(
                "/",
                post(|JsonBody(v): JsonBody<serde_json::Value>| async move { Json(v) }),
            )
            .layer(DefaultBodyLimit::max(8));
        let req = Request::builder()
            .method("POST")
            .uri("/")
            .body(Body::from("[1,2,3,4,5,6,7,8,9]"))
            .unwrap();
        let response = tower::ServiceExt::oneshot(app, req).await.unwrap();
        let (status, body) = response_json(response).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
}
