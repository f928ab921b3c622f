//! The HTTP application: the state every handler shares and the router.
//!
//! [`router`] builds the whole API over an [`AppState`] (an engine and the server's
//! settings); nothing here binds a port, so tests drive the router in-process with
//! `tower::ServiceExt::oneshot` or serve it on a random port, and the binary serves it
//! with [`serve`](crate::serve::serve).
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/chat/completions` | chat, streamed or not, with every structure dialect and tools |
//! | `POST /v1/completions` | raw-prompt completions |
//! | `POST /v1/responses` | OpenAI's Responses API: the chat route's engine, structure and tools, typed stream events; nothing is stored |
//! | `GET /v1/models`, `GET /v1/models/{id}` | the served model |
//! | `POST /tokenize`, `POST /detokenize` | the model's tokenizer |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /health` | 200 while serving, 503 while shutting down; never needs the API key |
//!
//! Every route but `/health` needs `Authorization: Bearer KEY` when the server has an
//! API key. Every response, errors included, is counted in `formwork_requests_total` by
//! route and status and logged with its latency. Bodies over
//! [`ServerConfig::max_body_bytes`] are a 413 in OpenAI's error shape, bodies still
//! arriving [`ServerConfig::body_timeout`] after their request began a 408; unknown routes
//! a 404 and wrong methods a 405 in the same shape. The connection limits of
//! [`ServerConfig`] (header and idle timeouts, most connections) are
//! [`serve`](crate::serve::serve)'s to enforce: the router never sees a connection.
//!
//! ```no_run
//! use std::sync::Arc;
//! use formwork_engine::{Engine, EngineConfig};
//! use formwork_server::app::{router, AppState, ServerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let model = formwork_model::load("model.gguf".as_ref(), &formwork_model::Device::Cpu)?;
//! let engine = Arc::new(Engine::new(model, EngineConfig::default())?);
//! let state = Arc::new(AppState::new(engine, ServerConfig::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, router(state)).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use formwork_engine::Engine;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use crate::error::{ApiError, BodyTimedOut};
use crate::options::Limits;
use crate::{generate, responses, routes};

/// The default most bytes of a request body: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The default time a client gets to send a request's headers: 10 s. A client sends them
/// in one packet or a few; ten seconds covers a slow mobile link and still closes a
/// connection that trickles its headers (slowloris) or says nothing.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a client gets to send a request's whole body: 30 s. Request bodies
/// are JSON prompts of a few kilobytes; even the 8 MiB limit needs only about 280 KB/s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a kept-alive connection may wait for its next request: 60 s. Longer
/// than the idle expiry of the usual clients' pools (httpx 5 s, Node 4 s, aiohttp 15 s),
/// so the server rarely closes a connection a client is about to reuse.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default most open connections: 512. Half the usual soft limit of open files (1024),
/// leaving the rest to the model files and the runtime; still more than the requests the
/// engine can take (16 running and 256 waiting by default) plus idle pooled connections
/// and health probes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The server's settings beyond the engine's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The name clients send as `model` and `GET /v1/models` lists; `None` means the
    /// model's own name. The model's own name is accepted in requests either way.
    pub served_model_name: Option<String>,
    /// When set, every route but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Per-request limits (`n`, stop strings, `top_logprobs`).
    pub limits: Limits,
    /// The most bytes of a request body; a larger one is a 413.
    pub max_body_bytes: usize,
    /// How long a request's body may take to arrive, from when its headers did; a body
    /// still arriving then is a 408 and the connection is closed. The router enforces it.
    pub body_timeout: Duration,
    /// How long a client may take to send a request's headers, from its first byte (from
    /// connecting, for a connection's first request); then the connection is closed
    /// unanswered. [`serve`](crate::serve::serve) enforces it.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request before it is closed.
    /// Responses being written, streams included, are never cut by any of these timeouts.
    /// [`serve`](crate::serve::serve) enforces it.
    pub idle_timeout: Duration,
    /// The most connections open at once (at least 1). Past it the server stops accepting:
    /// new connections wait in the kernel's listen backlog until one closes.
    /// [`serve`](crate::serve::serve) enforces it.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            served_model_name: None,
            api_key: None,
            limits: Limits::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// What every handler shares: the engine, the settings, and the HTTP counters.
#[derive(Debug)]
pub struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: ServerConfig,
    /// The served name first, then the model's own name if different.
    pub(crate) model_names: Vec<String>,
    /// When the server started (Unix seconds), as `created` in the model list.
    pub(crate) started: u64,
    /// Responses by (route, status).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    shutting_down: AtomicBool,
}

impl AppState {
    /// The state of a server answering with `engine`. `config.limits.max_n` is lowered
    /// to the engine's `max_active` if above it (more choices could never run at once).
    pub fn new(engine: Arc<Engine>, mut config: ServerConfig) -> AppState {
        let own = engine.info().name.clone();
        let served = config
            .served_model_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| own.clone());
        let mut model_names = vec![served];
        if !model_names.contains(&own) {
            model_names.push(own);
        }
        let max_active = u32::try_from(engine.config().max_active).unwrap_or(u32::MAX);
        config.limits.max_n = config.limits.max_n.min(max_active.max(1));
        AppState {
            engine,
            config,
            model_names,
            started: crate::id::unix_time(),
            requests: Mutex::new(BTreeMap::new()),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The name responses carry and `GET /v1/models` lists.
    pub fn served_model_name(&self) -> &str {
        &self.model_names[0]
    }

    /// Checks a request's `model`: absent, empty, the served name or the model's own
    /// name are fine; anything else is a 404 `model_not_found`.
    pub fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            None | Some("") => Ok(()),
            Some(m) if self.model_names.iter().any(|n| n == m) => Ok(()),
            Some(m) => Err(ApiError::model_not_found(m)),
        }
    }

    /// Marks the server as shutting down: `/health` answers 503 and new generation
    /// requests are refused with a 503, while running ones finish.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether [`AppState::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Responses so far, by route and status code.
    pub fn request_counts(&self) -> Vec<(&'static str, u16, u64)> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&(route, status), &count)| (route, status, count))
            .collect()
    }

    fn count(&self, route: &'static str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((route, status)).or_insert(0) += 1;
    }
}

/// The routes, in the label they are counted under.
const ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/models",
    "/tokenize",
    "/detokenize",
    "/metrics",
    "/health",
];

/// The label a request is counted under: its route, or `unmatched`, so a client
/// probing random paths cannot grow the metrics without bound.
fn route_label(path: &str) -> &'static str {
    if let Some(route) = ROUTES.iter().find(|r| **r == path) {
        return route;
    }
    if path.starts_with("/v1/models/") {
        return "/v1/models/{id}";
    }
    "unmatched"
}

/// The whole API over `state`; see the [module docs](self).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(generate::chat_completions))
        .route("/v1/completions", post(generate::completions))
        .route("/v1/responses", post(responses::create_response))
        .route("/v1/models", get(routes::models))
        .route("/v1/models/{id}", get(routes::model))
        .route("/tokenize", post(routes::tokenize))
        .route("/detokenize", post(routes::detokenize))
        .route("/metrics", get(routes::metrics))
        .route("/health", get(routes::health))
        .method_not_allowed_fallback(routes::method_not_allowed)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), front_door))
        .with_state(state)
}

/// Puts the body deadline on the request, authenticates, then counts and logs every
/// response.
async fn front_door(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let timeout = state.config.body_timeout;
    let request = request.map(|body| Body::new(DeadlineBody::new(body, timeout)));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = route_label(&path);
    let response = match authorize(&state, &request, route) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    };
    let status = response.status().as_u16();
    state.count(route, status);
    let latency_ms = start.elapsed().as_secs_f64() * 1e3;
    if response.status().is_server_error() {
        tracing::warn!(%method, path, status, latency_ms, "request");
    } else {
        tracing::info!(%method, path, status, latency_ms, "request");
    }
    response
}

fn authorize(state: &AppState, request: &Request, route: &str) -> Result<(), ApiError> {
    let Some(key) = state.config.api_key.as_deref() else {
        return Ok(());
    };
    if route == "/health" {
        return Ok(());
    }
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::authentication("Incorrect API key provided.")),
        None => Err(ApiError::authentication(
            "Missing API key: send it as `Authorization: Bearer <key>`.",
        )),
    }
}

/// The token of an `Authorization: Bearer TOKEN` value. The scheme is case-insensitive
/// (RFC 9110, section 11.1: `bearer` and `BEARER` are `Bearer`); other schemes are `None`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A request body that must arrive whole within a time limit; past it, reading fails with
/// [`BodyTimedOut`], which [`JsonBody`](crate::error::JsonBody) answers with a 408.
struct DeadlineBody {
    body: Body,
    timeout: Duration,
    /// Created on the first read, so that bodies nobody reads cost no timer.
    deadline: Option<Pin<Box<Sleep>>>,
    /// When the request began: the deadline counts from here, not from the first read.
    start: Instant,
}

impl DeadlineBody {
    fn new(body: Body, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            body,
            timeout,
            deadline: None,
            start: Instant::now(),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let (start, timeout) = (this.start, this.timeout);
        let deadline = this.deadline.get_or_insert_with(|| {
            // `sleep` takes any duration: one past the clock's end never fires.
            Box::pin(tokio::time::sleep(timeout.saturating_sub(start.elapsed())))
        });
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut { after: timeout }))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Compares two keys in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_without_unbounded_values() {
        assert_eq!(route_label("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(route_label("/v1/responses"), "/v1/responses");
        assert_eq!(route_label("/v1/models/foo"), "/v1/models/{id}");
        assert_eq!(route_label("/../etc/passwd"), "unmatched");
        assert_eq!(route_label("/v1/chat/completions/"), "unmatched");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in [
            "Bearer k",
            "bearer k",
            "BEARER k",
            "bEaReR   k ",
            " Bearer k",
        ] {
            assert_eq!(bearer_token(value), Some("k"), "{value:?}");
        }
        for value in ["k", "Basic k", "Bearerk", "Bearer", "Token Bearer k"] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[tokio::test]
    async fn bodies_must_arrive_before_their_deadline() {
        let timeout = Duration::from_millis(50);
        let never_ends =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
        let e = axum::body::to_bytes(Body::new(DeadlineBody::new(never_ends, timeout)), 1024)
            .await
            .unwrap_err();
        let cause = std::iter::successors(std::error::Error::source(&e), |c| c.source())
            .find_map(|c| c.downcast_ref::<BodyTimedOut>());
        assert_eq!(cause, Some(&BodyTimedOut { after: timeout }), "{e:?}");
        // A body that is all there is read whole, however long ago its request began.
        let body = DeadlineBody::new(Body::from("{}"), timeout);
        tokio::time::sleep(2 * timeout).await;
        let bytes = axum::body::to_bytes(Body::new(body), 1024).await.unwrap();
        assert_eq!(&bytes[..], b"{}");
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
