//! The handlers of every route but generation: models, tokenizer, metrics, health.
//!
//! - `GET /v1/models`: OpenAI's model list, the served name only.
//! - `GET /v1/models/{id}`: one model card, for the served name or the model's own name.
//! - `POST /tokenize`: `{"prompt": "..."}` (tokenized as `/v1/completions` would:
//!   BOS added when the model wants it, unless `"add_special_tokens": false`) or
//!   `{"messages": [...], "tools": [...]}` (rendered through the chat template as
//!   `/v1/chat/completions` would) to `{"tokens": [...], "count": n, "max_model_len": ctx}`.
//! - `POST /detokenize`: `{"tokens": [...]}` to `{"prompt": "..."}` (special tokens kept).
//! - `GET /metrics`: see [`prometheus`](crate::prometheus).
//! - `GET /health`: `{"status": "ok"}`, or a 503 `{"status": "shutting_down"}`, or a
//!   503 `{"status": "unhealthy", "reason": ...}` once the engine cannot serve soundly
//!   (its thread stopped, or panics recurred on fresh state).
//!
//! Unknown routes are a 404 and known routes asked with the wrong method a 405, both in
//! OpenAI's error shape.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use formwork_engine::Prompt;
use formwork_template::{Message, Tool};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::AppState;
use crate::error::{ApiError, ErrorKind, JsonBody};
use crate::protocol::{ModelCard, ModelList, validate_messages};
use crate::tools::ToolPlan;

/// `GET /v1/models`.
pub(crate) async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList::new(vec![ModelCard::new(
        state.served_model_name(),
        state.started,
    )]))
}

/// `GET /v1/models/{id}`.
pub(crate) async fn model(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    state.check_model(Some(&id))?;
    Ok(Json(ModelCard::new(id, state.started)))
}

/// The body of `POST /tokenize`: a prompt or a conversation.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenizeRequest {
    /// The model; `None` means the served model.
    #[serde(default)]
    pub model: Option<String>,
    /// A raw prompt.
    #[serde(default)]
    pub prompt: Option<String>,
    /// A conversation, rendered through the chat template with the generation prompt.
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// Tools for the chat template (with `messages`).
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    /// With `prompt`: whether to add BOS when the model wants it. Default true.
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
}

/// The answer of `POST /tokenize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizeResponse {
    /// The token ids.
    pub tokens: Vec<u32>,
    /// How many.
    pub count: usize,
    /// The model's context length.
    pub max_model_len: usize,
}

/// `POST /tokenize`.
pub(crate) async fn tokenize(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<TokenizeRequest>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    state.check_model(req.model.as_deref())?;
    let engine = state.engine.clone();
    let tokens = match (req.prompt, req.messages) {
        (Some(prompt), None) => {
            let add_bos = req.add_special_tokens.unwrap_or(true);
            blocking(move || engine.tokenizer().encode(&prompt, add_bos))
                .await?
                .map_err(|e| ApiError::invalid_request(e.to_string()).param("prompt"))?
        }
        (None, Some(messages)) => {
            validate_messages(&messages)?;
            let plan = ToolPlan::new(req.tools.as_deref(), None, None)?;
            let prompt = Prompt::Chat {
                messages,
                tools: plan.template_tools().unwrap_or_default(),
                template_kwargs: Default::default(),
            };
            blocking(move || engine.prompt_tokens(&prompt))
                .await?
                .map_err(|e| ApiError::invalid_request(e.to_string()).param("messages"))?
        }
        (Some(_), Some(_)) => {
            return Err(
                ApiError::invalid_request("send either `prompt` or `messages`, not both")
                    .param("messages"),
            );
        }
        (None, None) => {
            return Err(
                ApiError::invalid_request("`prompt` or `messages` is required").param("prompt"),
            );
        }
    };
    Ok(Json(TokenizeResponse {
        count: tokens.len(),
        tokens,
        max_model_len: state.engine.info().context_length,
    }))
}

/// The body of `POST /detokenize`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DetokenizeRequest {
    /// The model; `None` means the served model.
    #[serde(default)]
    pub model: Option<String>,
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// `POST /detokenize`.
pub(crate) async fn detokenize(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<DetokenizeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.check_model(req.model.as_deref())?;
    let vocab = state.engine.info().vocab_size;
    if let Some(i) = req.tokens.iter().position(|&t| t as usize >= vocab) {
        return Err(ApiError::invalid_request(format!(
            "token id {} is outside the vocabulary of {vocab} tokens",
            req.tokens[i]
        ))
        .param(format!("tokens[{i}]")));
    }
    let engine = state.engine.clone();
    let text = blocking(move || engine.tokenizer().decode(&req.tokens, false))
        .await?
        .map_err(|e| ApiError::invalid_request(e.to_string()).param("tokens"))?;
    Ok(Json(json!({ "prompt": text })))
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = crate::prometheus::render(&state.engine.metrics(), &state.request_counts());
    (
        [(header::CONTENT_TYPE, crate::prometheus::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// `GET /health`.
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
            .into_response();
    }
    match state.engine.health() {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "reason": reason})),
        )
            .into_response(),
    }
}

/// Any other route: a 404 in OpenAI's shape.
pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("Unknown route `{}`", uri.path()))
}

/// A known route asked with the wrong method: a 405 in OpenAI's shape.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!("`{}` does not accept {method}", uri.path()),
    )
}

/// Runs CPU-bound work (tokenizing a long text) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::server(format!("internal task failed: {e}")))
}
