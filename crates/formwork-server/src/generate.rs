//! `POST /v1/chat/completions` and `POST /v1/completions`: requests checked, handed to
//! the engine, and its events written back as one response or as a stream.
//!
//! A request goes through the same steps on both routes:
//!
//! 1. the body is read by [`JsonBody`] (malformed JSON or a wrong type: a 400 naming
//!    the field), the `model` checked (404 `model_not_found`), the conversation
//!    validated, the sampling fields checked by [`GenerationOptions`], and every
//!    structure dialect resolved into one [`Constraint`] by [`structure`](crate::structure);
//! 2. [`Engine::submit`](formwork_engine::Engine::submit) runs on a blocking thread (it
//!    renders the template, tokenizes and, on an index-cache miss, compiles the
//!    constraint); its refusals become 400s (with `param` the field at fault), a 429
//!    when the queue is full, a 503 when the engine is shutting down;
//! 3. the engine's events are collected into one response, or turned into SSE chunks as
//!    they come. Both paths read the same events, so a stream's deltas add up to the
//!    non-streamed answer for the same seed.
//!
//! A request whose constraint was compiled leniently (`strict: false`) carries the
//! keywords left unenforced in a top-level `warnings` list: in the response object, or in
//! a stream's first chunk (empty `choices`, `warnings` only).
//!
//! A reasoning model's chat reply ([`formwork_engine::reasoning`]) is split before the tool
//! reader sees it: the reasoning goes to `message.reasoning_content` (left out when there
//! is none) or `delta.reasoning_content` chunks, and only what follows it is content or
//! tool calls. The splitter gives the same split in any chunking, so streamed and
//! non-streamed replies agree.
//!
//! A stream sends, for chat, each choice's role chunk first, then reasoning, content or
//! tool-call deltas, each choice's finish chunk, the usage chunk when
//! `stream_options.include_usage` is set, and `data: [DONE]`. A failure after the stream
//! started is sent as an error event, then `[DONE]`. Dropping the stream (the client
//! went away) drops the engine's handle, which cancels the request and frees its
//! sequences.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use formwork_engine::{
    Constraint, EngineError, Event, FinishReason, Prompt, ReasoningSplitter, Request,
    RequestHandle, TokenLogprob, Usage,
};
use formwork_sampler::{SamplerError, SamplingParams};
use futures_util::Stream;

use crate::app::AppState;
use crate::error::{ApiError, JsonBody};
use crate::options::GenerationOptions;
use crate::protocol::{
    self, AssistantMessage, ChatChoice, ChatChunkFactory, ChatCompletion, ChatCompletionRequest,
    ChatDelta, ChatLogprobs, CompletionChoice, CompletionChunkFactory, CompletionLogprobs,
    CompletionRequest, TopLogprobMap,
};
use crate::routes::blocking;
use crate::sse;
use crate::structure::{resolve_chat, resolve_completion};
use crate::tools::{StreamDelta, ToolMode, ToolPlan, ToolStream};

/// How often a quiet stream (a request waiting in the queue) sends an SSE comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The request fields that engine refusals are blamed on.
pub(crate) struct Blame {
    /// `messages`, `input` or `prompt`.
    pub(crate) prompt: &'static str,
    /// The field holding the constraint (`response_format.json_schema.schema`...).
    pub(crate) structure: Option<&'static str>,
    /// The field asking for log-probabilities: `top_logprobs` or `logprobs`.
    pub(crate) logprobs: &'static str,
    /// The field holding the budget: `max_tokens` or `max_output_tokens`.
    pub(crate) max_tokens: &'static str,
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    state.check_model(req.model.as_deref())?;
    req.validate()?;
    let options = GenerationOptions::from_chat(&req, &state.config.limits)?;
    let (resolved, plan) = resolve_chat(&req)?;
    let blame = Blame {
        prompt: "messages",
        structure: resolved.as_ref().map(|r| r.param()),
        logprobs: "top_logprobs",
        max_tokens: "max_tokens",
    };
    let request = chat_request(
        req.messages,
        &plan,
        resolved.map(|r| r.constraint),
        &options,
        req.chat_template_kwargs,
        req.max_reasoning_tokens,
    )?;
    let handle = submit(&state, request, &blame).await?;
    let warnings = handle.warnings().to_vec();
    let splitter = handle.reasoning_splitter();
    let model = state.served_model_name().to_owned();
    if options.stream {
        let writer = ChatWriter::new(model, &options, &plan, splitter);
        return Ok(event_stream(handle, writer, options.include_usage));
    }
    let (collected, usage) = collect(handle, options.n).await?;
    let mut choices = Vec::with_capacity(collected.len());
    for (index, choice) in collected.into_iter().enumerate() {
        // Reasoning first; the tool reader and the content see what follows it.
        let (reasoning, text) = match splitter.clone() {
            Some(splitter) => splitter.split(&choice.text),
            None => (String::new(), choice.text),
        };
        let parsed = plan.parse_ended(&text, choice.finish == protocol::FinishReason::Length);
        let finish_reason = parsed.finish_reason(choice.finish);
        // A forced call's reply is never content, even when cut before the call's name.
        let mut message = if parsed.tool_calls.is_empty() && plan.mode() != ToolMode::Required {
            AssistantMessage::text(parsed.content.unwrap_or_default())
        } else {
            AssistantMessage::tool_calls(parsed.content, parsed.tool_calls)
        };
        message.reasoning_content = Some(reasoning).filter(|r| !r.is_empty());
        let logprobs = options.logprobs.map(|_| ChatLogprobs {
            content: Some(choice.logprobs.iter().map(chat_logprob).collect()),
        });
        choices.push(ChatChoice {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            message,
            logprobs,
            finish_reason,
        });
    }
    Ok(Json(ChatCompletion::new(model, choices, usage).with_warnings(warnings)).into_response())
}

/// `POST /v1/completions`.
pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    state.check_model(req.model.as_deref())?;
    let text = req.prompt.text()?.to_owned();
    let options = GenerationOptions::from_completion(&req, &state.config.limits)?;
    let resolved = resolve_completion(&req)?;
    let blame = Blame {
        prompt: "prompt",
        structure: resolved.as_ref().map(|r| r.param()),
        logprobs: "logprobs",
        max_tokens: "max_tokens",
    };
    let request = engine_request(Prompt::Text(text), &options, resolved.map(|r| r.constraint));
    let handle = submit(&state, request, &blame).await?;
    let warnings = handle.warnings().to_vec();
    let model = state.served_model_name().to_owned();
    if options.stream {
        let writer = CompletionWriter::new(model, &options);
        return Ok(event_stream(handle, writer, options.include_usage));
    }
    let (collected, usage) = collect(handle, options.n).await?;
    let mut choices = Vec::with_capacity(collected.len());
    for (index, choice) in collected.into_iter().enumerate() {
        let logprobs = options
            .logprobs
            .map(|_| completion_logprobs(&choice.logprobs, 0));
        choices.push(CompletionChoice {
            text: choice.text,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            logprobs,
            finish_reason: Some(choice.finish),
        });
    }
    Ok(
        Json(protocol::Completion::new(model, choices, usage).with_warnings(warnings))
            .into_response(),
    )
}

/// The engine's request of a conversation (chat and responses): the template's tools and
/// variables (a reserved variable is a 400), the constraint, auto-mode tools and the
/// reasoning budget.
pub(crate) fn chat_request(
    messages: Vec<formwork_template::Message>,
    plan: &ToolPlan,
    constraint: Option<Constraint>,
    options: &GenerationOptions,
    template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    max_reasoning_tokens: Option<u32>,
) -> Result<Request, ApiError> {
    let template_kwargs = template_kwargs.unwrap_or_default();
    if let Some(name) = template_kwargs
        .keys()
        .find(|k| formwork_template::RESERVED_VARIABLES.contains(&k.as_str()))
    {
        return Err(ApiError::invalid_request(format!(
            "`chat_template_kwargs.{name}` cannot be set: the request sets it"
        ))
        .param(format!("chat_template_kwargs.{name}")));
    }
    let prompt = Prompt::Chat {
        messages,
        tools: plan.template_tools().unwrap_or_default(),
        template_kwargs,
    };
    let mut request = engine_request(prompt, options, constraint);
    request.auto_tools = plan.auto_tools();
    request.max_reasoning_tokens = max_reasoning_tokens.map(|m| m as usize);
    Ok(request)
}

/// The engine's request for checked options and a constraint.
fn engine_request(
    prompt: Prompt,
    options: &GenerationOptions,
    constraint: Option<Constraint>,
) -> Request {
    let mut sampling = SamplingParams {
        temperature: options.temperature,
        top_k: options.top_k.map_or(0, |k| k as usize),
        top_p: options.top_p,
        min_p: options.min_p,
        repetition_penalty: options.repetition_penalty,
        presence_penalty: options.presence_penalty,
        frequency_penalty: options.frequency_penalty,
        logit_bias: options.logit_bias.clone(),
        seed: options.seed,
        top_logprobs: options.logprobs.map(|k| k as usize),
    };
    // OpenAI reads `top_p: 0` as "only the most likely token"; the sampler wants (0, 1].
    if sampling.top_p <= 0.0 {
        sampling.top_p = 1.0;
        sampling.temperature = 0.0;
    }
    let mut request = Request::new(prompt);
    request.sampling = sampling;
    request.max_tokens = options.max_tokens.map(|m| m as usize);
    request.stop = options.stop.clone();
    request.n = options.n as usize;
    request.constraint = constraint;
    request.ignore_eos = options.ignore_eos;
    request.jump_forward = options.jump_forward;
    request.end_valid = options.end_valid;
    request
}

/// Hands a request to the engine on a blocking thread.
pub(crate) async fn submit(
    state: &AppState,
    request: Request,
    blame: &Blame,
) -> Result<RequestHandle, ApiError> {
    if state.is_shutting_down() {
        return Err(ApiError::overloaded(
            "The server is shutting down; retry on another instance.",
        ));
    }
    let engine = state.engine.clone();
    blocking(move || engine.submit(request))
        .await?
        .map_err(|e| engine_error(e, blame))
}

/// An engine refusal as the client sees it.
fn engine_error(e: EngineError, blame: &Blame) -> ApiError {
    let message = e.to_string();
    match e {
        EngineError::QueueFull { .. } => ApiError::rate_limit(message).code("queue_full"),
        EngineError::PromptTooLong { .. } | EngineError::PromptTooLarge { .. } => {
            ApiError::invalid_request(message)
                .param(blame.prompt)
                .code("context_length_exceeded")
        }
        EngineError::EmptyPrompt => ApiError::invalid_request(message).param(blame.prompt),
        EngineError::Template(_) => ApiError::invalid_request(message).param(blame.prompt),
        EngineError::Sampling(SamplerError::InvalidParameter { field, .. }) => {
            let param = match field {
                "top_logprobs" => blame.logprobs,
                "vocab_size" => return ApiError::server(message),
                field => field,
            };
            ApiError::invalid_request(message).param(param)
        }
        EngineError::Sampling(_) | EngineError::InvalidRequest(_) => {
            ApiError::invalid_request(message)
        }
        EngineError::Schema(schema) => {
            // The schema error names the keyword and the JSON pointer inside the schema.
            let e =
                ApiError::invalid_request(format!("The JSON Schema cannot be enforced: {schema}"));
            match blame.structure {
                Some(param) => e.param(param),
                None => e,
            }
        }
        EngineError::Unenforced { .. } => {
            // The message names the keyword, its JSON pointer and the way out (strict: false).
            let e = ApiError::invalid_request(format!("The JSON Schema is refused: {message}"))
                .code("unenforced_keyword");
            match blame.structure {
                Some(param) => e.param(param),
                None => e,
            }
        }
        EngineError::Index(_) | EngineError::Constraint(_) => {
            let e =
                ApiError::invalid_request(format!("The structure cannot be enforced: {message}"));
            match blame.structure {
                Some(param) => e.param(param),
                None => e,
            }
        }
        EngineError::MaxTokensTooSmall { .. } => {
            ApiError::invalid_request(message).param(blame.max_tokens)
        }
        EngineError::ShutDown => ApiError::overloaded(message),
        // The model failing, generation failing, and whatever the engine adds later.
        _ => ApiError::server(message),
    }
}

/// One choice of a whole answer.
#[derive(Debug)]
pub(crate) struct CollectedChoice {
    pub(crate) text: String,
    pub(crate) logprobs: Vec<TokenLogprob>,
    pub(crate) finish: protocol::FinishReason,
}

/// Waits for a whole answer ([`RequestHandle::collect`]) and reads it in OpenAI's terms:
/// a generation failure is a 500, a choice that did not end (the engine shut down) a 503.
pub(crate) async fn collect(
    handle: RequestHandle,
    n: u32,
) -> Result<(Vec<CollectedChoice>, protocol::Usage), ApiError> {
    let completion = handle.collect().await.map_err(|e| match e {
        EngineError::Generation(message) => {
            ApiError::server(format!("Generation failed: {message}"))
        }
        e => ApiError::server(e.to_string()),
    })?;
    let formwork_engine::Completion {
        texts,
        finish_reasons,
        logprobs,
        usage,
        ..
    } = completion;
    if finish_reasons.len() < n as usize {
        finish_reason(None)?;
    }
    let choices = texts
        .into_iter()
        .zip(logprobs)
        .zip(finish_reasons)
        .map(|((text, logprobs), reason)| {
            Ok(CollectedChoice {
                text,
                logprobs,
                finish: finish_reason(reason)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    log_usage(&usage);
    Ok((choices, openai_usage(&usage)))
}

/// OpenAI's token counts of the engine's usage.
fn openai_usage(usage: &Usage) -> protocol::Usage {
    protocol::Usage::new(count(usage.prompt_tokens), count(usage.completion_tokens))
        .with_cached_tokens(count(usage.cached_tokens))
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Logs a finished request's token counts and speed.
fn log_usage(usage: &Usage) {
    tracing::info!(
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        cached_tokens = usage.cached_tokens,
        ttft_ms = usage.time_to_first_token.as_secs_f64() * 1e3,
        decode_tok_s = usage.decode_tokens_per_second(),
        "generation finished"
    );
}

/// OpenAI's finish reason for the engine's; a cancelled or failed choice is an error.
fn finish_reason(reason: Option<FinishReason>) -> Result<protocol::FinishReason, ApiError> {
    match reason {
        Some(FinishReason::Stop) => Ok(protocol::FinishReason::Stop),
        Some(FinishReason::Length) => Ok(protocol::FinishReason::Length),
        Some(FinishReason::Cancelled) | None => Err(ApiError::overloaded(
            "The request was cancelled: the server is shutting down.",
        )),
        Some(FinishReason::Error) => Err(ApiError::server("Generation failed.")),
    }
}

/// A chat log-probability entry.
fn chat_logprob(lp: &TokenLogprob) -> protocol::TokenLogprob {
    protocol::TokenLogprob::new(
        &lp.bytes,
        lp.logprob,
        lp.top.iter().map(|(_, bytes, l)| (bytes.as_slice(), *l)),
    )
}

/// Completions log-probabilities of some tokens, offsets counted from `start`.
fn completion_logprobs(lps: &[TokenLogprob], start: u32) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for lp in lps {
        let top = lp
            .top
            .iter()
            .map(|(_, bytes, l)| (String::from_utf8_lossy(bytes).into_owned(), *l))
            .collect();
        out.push(
            start,
            String::from_utf8_lossy(&lp.bytes).into_owned(),
            lp.logprob,
            TopLogprobMap(top),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------

/// Turns a request's events into one route's SSE chunks.
pub(crate) trait ChunkWriter: Send + 'static {
    /// Chunks sent before any event (chat: each choice's role).
    fn start(&mut self, out: &mut VecDeque<SseEvent>);
    /// New text and tokens of a choice.
    fn delta(
        &mut self,
        index: usize,
        text: &str,
        logprobs: Vec<TokenLogprob>,
        out: &mut VecDeque<SseEvent>,
    );
    /// A choice ended normally.
    fn finish(
        &mut self,
        index: usize,
        reason: protocol::FinishReason,
        out: &mut VecDeque<SseEvent>,
    );
    /// The usage chunk.
    fn usage(&self, usage: protocol::Usage) -> SseEvent;
    /// The warnings (keywords of a lenient schema left unenforced), before [`start`]:
    /// a chunk with no choices.
    ///
    /// [`start`]: ChunkWriter::start
    fn warnings(&mut self, warnings: Vec<String>, out: &mut VecDeque<SseEvent>);
    /// The last events, once the engine is done: the usage chunk when asked for, then
    /// `[DONE]`.
    fn done(&mut self, usage: protocol::Usage, include_usage: bool, out: &mut VecDeque<SseEvent>) {
        if include_usage {
            out.push_back(self.usage(usage));
        }
        out.push_back(sse::done_event());
    }
    /// The last events of a stream that failed after it started: an error event, then
    /// `[DONE]`.
    fn fail(&mut self, error: &ApiError, out: &mut VecDeque<SseEvent>) {
        out.push_back(sse::error_event(error));
        out.push_back(sse::done_event());
    }
}

/// The state of one streamed response.
struct Streaming<W> {
    /// `None` once the request ended: dropping it cancels the request.
    handle: Option<RequestHandle>,
    writer: W,
    include_usage: bool,
    queue: VecDeque<SseEvent>,
    /// `[DONE]` is queued: nothing more is sent.
    ended: bool,
}

impl<W: ChunkWriter> Streaming<W> {
    /// Reads one engine event into the queue; ends the stream after `[DONE]`.
    fn absorb(&mut self, event: Option<Event>) {
        if self.ended {
            return;
        }
        match event {
            Some(Event::Delta {
                index,
                text,
                logprobs,
            }) => self.writer.delta(index, &text, logprobs, &mut self.queue),
            Some(Event::Finished { index, reason, .. }) => match finish_reason(Some(reason)) {
                Ok(reason) => self.writer.finish(index, reason, &mut self.queue),
                Err(e) => self.fail(&e),
            },
            Some(Event::Error { message }) => {
                self.fail(&ApiError::server(format!("Generation failed: {message}")));
            }
            Some(Event::Done(usage)) => {
                log_usage(&usage);
                self.writer
                    .done(openai_usage(&usage), self.include_usage, &mut self.queue);
                self.end();
            }
            None => self.fail(&ApiError::overloaded(
                "The request ended early: the server is shutting down.",
            )),
        }
    }

    /// Sends the writer's failure events and ends the stream.
    fn fail(&mut self, error: &ApiError) {
        tracing::warn!(error = error.message(), "stream failed");
        self.writer.fail(error, &mut self.queue);
        self.end();
    }

    fn end(&mut self) {
        self.ended = true;
        self.handle = None;
    }
}

/// The SSE response of a request: the writer's chunks as the engine's events come.
pub(crate) fn event_stream<W: ChunkWriter>(
    handle: RequestHandle,
    mut writer: W,
    include_usage: bool,
) -> Response {
    let mut queue = VecDeque::new();
    if !handle.warnings().is_empty() {
        writer.warnings(handle.warnings().to_vec(), &mut queue);
    }
    writer.start(&mut queue);
    let state = Streaming {
        handle: Some(handle),
        writer,
        include_usage,
        queue,
        ended: false,
    };
    Sse::new(events(state))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn events<W: ChunkWriter>(
    state: Streaming<W>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.queue.pop_front() {
                return Some((Ok(event), s));
            }
            let handle = s.handle.as_mut()?;
            let event = handle.next().await;
            s.absorb(event);
        }
    })
}

/// Chat chunks: role first, reasoning, content or tool-call deltas, finish.
struct ChatWriter {
    factory: ChatChunkFactory,
    /// Per choice, the reasoning splitter in front of the tool reader (reasoning models).
    splitters: Vec<Option<ReasoningSplitter>>,
    streams: Vec<ToolStream>,
    /// Log-probabilities not yet sent, per choice (text can be held back by the tool
    /// reader; its tokens' entries go with the next chunk that carries content).
    pending: Vec<Vec<protocol::TokenLogprob>>,
    logprobs: bool,
    required_tools: bool,
}

impl ChatWriter {
    fn new(
        model: String,
        options: &GenerationOptions,
        plan: &ToolPlan,
        splitter: Option<ReasoningSplitter>,
    ) -> ChatWriter {
        let n = options.n as usize;
        ChatWriter {
            factory: ChatChunkFactory::new(model),
            splitters: vec![splitter; n],
            streams: (0..n).map(|_| plan.stream()).collect(),
            pending: vec![Vec::new(); n],
            logprobs: options.logprobs.is_some(),
            required_tools: plan.mode() == ToolMode::Required,
        }
    }

    fn take_logprobs(&mut self, index: usize) -> Option<ChatLogprobs> {
        let pending = self.pending.get_mut(index)?;
        (self.logprobs && !pending.is_empty()).then(|| ChatLogprobs {
            content: Some(std::mem::take(pending)),
        })
    }

    /// A reasoning chunk, when there is reasoning.
    fn send_reasoning(&mut self, index: usize, reasoning: String, out: &mut VecDeque<SseEvent>) {
        if reasoning.is_empty() {
            return;
        }
        let i = u32::try_from(index).unwrap_or(u32::MAX);
        let logprobs = self.take_logprobs(index);
        out.push_back(sse::event(&self.factory.reasoning(i, reasoning, logprobs)));
    }

    fn send(&mut self, index: usize, deltas: Vec<StreamDelta>, out: &mut VecDeque<SseEvent>) {
        let i = u32::try_from(index).unwrap_or(u32::MAX);
        for delta in deltas {
            let chunk = match delta {
                StreamDelta::Content(text) => {
                    let logprobs = self.take_logprobs(index);
                    self.factory.content(i, text, logprobs)
                }
                StreamDelta::ToolCalls(calls) => self.factory.tool_calls(i, calls),
            };
            out.push_back(sse::event(&chunk));
        }
    }
}

impl ChunkWriter for ChatWriter {
    fn start(&mut self, out: &mut VecDeque<SseEvent>) {
        for index in 0..self.streams.len() {
            let i = u32::try_from(index).unwrap_or(u32::MAX);
            let chunk = if self.required_tools {
                self.factory.role_for_tool_calls(i)
            } else {
                self.factory.role(i)
            };
            out.push_back(sse::event(&chunk));
        }
    }

    fn delta(
        &mut self,
        index: usize,
        text: &str,
        logprobs: Vec<TokenLogprob>,
        out: &mut VecDeque<SseEvent>,
    ) {
        if self.logprobs
            && let Some(pending) = self.pending.get_mut(index)
        {
            pending.extend(logprobs.iter().map(chat_logprob));
        }
        let (reasoning, content) = match self.splitters.get_mut(index) {
            Some(Some(splitter)) => splitter.push(text),
            _ => (String::new(), text.to_owned()),
        };
        self.send_reasoning(index, reasoning, out);
        let Some(stream) = self.streams.get_mut(index) else {
            return;
        };
        let deltas = stream.push(&content);
        self.send(index, deltas, out);
    }

    fn finish(
        &mut self,
        index: usize,
        reason: protocol::FinishReason,
        out: &mut VecDeque<SseEvent>,
    ) {
        let (reasoning, content) = match self.splitters.get_mut(index) {
            Some(Some(splitter)) => splitter.finish(),
            _ => (String::new(), String::new()),
        };
        self.send_reasoning(index, reasoning, out);
        let Some(stream) = self.streams.get_mut(index) else {
            return;
        };
        let mut deltas = stream.push(&content);
        deltas.extend(stream.finish_reply(reason == protocol::FinishReason::Length));
        let reason = stream.finish_reason(reason);
        self.send(index, deltas, out);
        let i = u32::try_from(index).unwrap_or(u32::MAX);
        let logprobs = self.take_logprobs(index);
        let chunk = self
            .factory
            .chunk(i, ChatDelta::default(), logprobs, Some(reason));
        out.push_back(sse::event(&chunk));
    }

    fn usage(&self, usage: protocol::Usage) -> SseEvent {
        sse::event(&self.factory.usage(usage))
    }

    fn warnings(&mut self, warnings: Vec<String>, out: &mut VecDeque<SseEvent>) {
        out.push_back(sse::event(&self.factory.warnings(warnings)));
    }
}

/// Completions chunks: text pieces, then a finish chunk per choice.
struct CompletionWriter {
    factory: CompletionChunkFactory,
    logprobs: bool,
    /// Per choice, the text offset of the next token's log-probability entry.
    offsets: Vec<u32>,
}

impl CompletionWriter {
    fn new(model: String, options: &GenerationOptions) -> CompletionWriter {
        CompletionWriter {
            factory: CompletionChunkFactory::new(model),
            logprobs: options.logprobs.is_some(),
            offsets: vec![0; options.n as usize],
        }
    }
}

impl ChunkWriter for CompletionWriter {
    fn start(&mut self, _out: &mut VecDeque<SseEvent>) {}

    fn delta(
        &mut self,
        index: usize,
        text: &str,
        logprobs: Vec<TokenLogprob>,
        out: &mut VecDeque<SseEvent>,
    ) {
        let Some(offset) = self.offsets.get_mut(index) else {
            return;
        };
        let logprobs = (self.logprobs && !logprobs.is_empty()).then(|| {
            let lps = completion_logprobs(&logprobs, *offset);
            if let (Some(last), Some(token)) = (lps.text_offset.last(), lps.tokens.last()) {
                *offset = last.saturating_add(count(token.len()));
            }
            lps
        });
        if text.is_empty() && logprobs.is_none() {
            return;
        }
        let i = u32::try_from(index).unwrap_or(u32::MAX);
        out.push_back(sse::event(&self.factory.text(i, text, logprobs, None)));
    }

    fn finish(
        &mut self,
        index: usize,
        reason: protocol::FinishReason,
        out: &mut VecDeque<SseEvent>,
    ) {
        let i = u32::try_from(index).unwrap_or(u32::MAX);
        out.push_back(sse::event(&self.factory.text(i, "", None, Some(reason))));
    }

    fn usage(&self, usage: protocol::Usage) -> SseEvent {
        sse::event(&self.factory.usage(usage))
    }

    fn warnings(&mut self, warnings: Vec<String>, out: &mut VecDeque<SseEvent>) {
        out.push_back(sse::event(&self.factory.warnings(warnings)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::sse_body_for_tests;
    use serde_json::{Value, json};

    fn options(extra: Value) -> GenerationOptions {
        let mut body = json!({"messages": [{"role": "user", "content": "x"}], "stream": true});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let req: ChatCompletionRequest =
            crate::error::parse_json(body.to_string().as_bytes()).unwrap();
        GenerationOptions::from_chat(&req, &crate::options::Limits::default()).unwrap()
    }

    /// Feeds events to a stream's state (no engine) and returns the `data:` payloads.
    async fn feed<W: ChunkWriter>(
        mut writer: W,
        events: Vec<Option<Event>>,
        usage: bool,
    ) -> Vec<Value> {
        let mut queue = VecDeque::new();
        writer.start(&mut queue);
        let mut state = Streaming {
            handle: None,
            writer,
            include_usage: usage,
            queue,
            ended: false,
        };
        for event in events {
            state.absorb(event);
        }
        let text = sse_body_for_tests(state.queue.into_iter().collect()).await;
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let data = e.strip_prefix("data: ").unwrap();
                serde_json::from_str(data).unwrap_or(Value::String(data.to_owned()))
            })
            .collect()
    }

    fn delta(index: usize, text: &str, logprobs: Vec<TokenLogprob>) -> Option<Event> {
        Some(Event::Delta {
            index,
            text: text.into(),
            logprobs,
        })
    }

    fn finished(index: usize, reason: FinishReason) -> Option<Event> {
        Some(Event::Finished {
            index,
            reason,
            completion_tokens: 1,
        })
    }

    fn lp(text: &str) -> TokenLogprob {
        TokenLogprob {
            token: 7,
            bytes: text.as_bytes().to_vec(),
            logprob: -0.5,
            top: vec![(7, text.as_bytes().to_vec(), -0.5)],
        }
    }

    #[tokio::test]
    async fn an_error_after_the_stream_started_is_an_event_then_done() {
        let plan = ToolPlan::new(None, None, None).unwrap();
        let writer = ChatWriter::new("m".into(), &options(json!({})), &plan, None);
        let out = feed(
            writer,
            vec![
                delta(0, "Hel", vec![]),
                Some(Event::Error {
                    message: "the model failed".into(),
                }),
                // Nothing after the error is sent.
                delta(0, "lo", vec![]),
            ],
            true,
        )
        .await;
        assert_eq!(out[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(out[1]["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(out[2]["error"]["type"], "server_error");
        assert_eq!(
            out[2]["error"]["message"],
            "Generation failed: the model failed"
        );
        assert_eq!(out[3], "[DONE]");
        assert_eq!(out.len(), 4);
    }

    #[tokio::test]
    async fn a_cancelled_or_cut_stream_ends_with_an_error_event() {
        let writer = CompletionWriter::new("m".into(), &options(json!({})));
        let out = feed(
            writer,
            vec![delta(0, "a", vec![]), finished(0, FinishReason::Cancelled)],
            false,
        )
        .await;
        assert_eq!(out[0]["choices"][0]["text"], "a");
        assert_eq!(out[1]["error"]["type"], "overloaded_error");
        assert_eq!(out[2], "[DONE]");

        // The engine's channel closing before `Done` (it shut down).
        let writer = CompletionWriter::new("m".into(), &options(json!({})));
        let out = feed(writer, vec![delta(0, "a", vec![]), None], false).await;
        assert_eq!(out[1]["error"]["type"], "overloaded_error");
        assert_eq!(out[2], "[DONE]");
    }

    #[tokio::test]
    async fn held_back_logprobs_go_with_the_next_content_or_the_finish() {
        let writer = ChatWriter::new(
            "m".into(),
            &options(json!({"logprobs": true, "top_logprobs": 1, "n": 2})),
            &ToolPlan::new(None, None, None).unwrap(),
            None,
        );
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 3,
            ..Default::default()
        };
        let out = feed(
            writer,
            vec![
                // A token whose text is held back (half a character, a stop prefix).
                delta(1, "", vec![lp("\u{e9}")]),
                delta(1, "ab", vec![lp("ab")]),
                delta(0, "", vec![lp("x")]),
                finished(0, FinishReason::Stop),
                finished(1, FinishReason::Length),
                Some(Event::Done(usage)),
            ],
            true,
        )
        .await;
        // Both roles first, in order.
        assert_eq!(out[0]["choices"][0]["index"], 0);
        assert_eq!(out[1]["choices"][0]["index"], 1);
        assert!(
            out[..2]
                .iter()
                .all(|c| c["choices"][0]["delta"]["role"] == "assistant")
        );
        // Choice 1's content chunk carries both tokens' entries.
        let c = &out[2]["choices"][0];
        assert_eq!(
            (c["index"].clone(), c["delta"]["content"].clone()),
            (json!(1), json!("ab"))
        );
        assert_eq!(c["logprobs"]["content"].as_array().unwrap().len(), 2);
        // Choice 0 never sent content: its entry goes with its finish chunk.
        let c = &out[3]["choices"][0];
        assert_eq!(c["finish_reason"], "stop");
        assert_eq!(c["delta"], json!({}));
        assert_eq!(c["logprobs"]["content"][0]["token"], "x");
        assert_eq!(out[4]["choices"][0]["finish_reason"], "length");
        assert_eq!(out[4]["choices"][0]["logprobs"], Value::Null);
        assert_eq!(out[5]["usage"]["total_tokens"], 6);
        assert_eq!(out[6], "[DONE]");
    }

    #[tokio::test]
    async fn completion_chunks_count_text_offsets_across_chunks() {
        let writer = CompletionWriter::new("m".into(), &options(json!({})));
        let mut writer = writer;
        writer.logprobs = true;
        let out = feed(
            writer,
            vec![
                delta(0, "ab", vec![lp("ab")]),
                delta(0, "cde", vec![lp("c"), lp("de")]),
                finished(0, FinishReason::Stop),
            ],
            false,
        )
        .await;
        assert_eq!(out[0]["choices"][0]["logprobs"]["text_offset"], json!([0]));
        assert_eq!(
            out[1]["choices"][0]["logprobs"]["text_offset"],
            json!([2, 3])
        );
        assert_eq!(out[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(out[2]["choices"][0]["text"], "");
    }

    #[test]
    fn engine_refusals_name_the_field() {
        let blame = Blame {
            prompt: "prompt",
            structure: Some("guided_regex"),
            logprobs: "logprobs",
            max_tokens: "max_tokens",
        };
        let e = engine_error(EngineError::QueueFull { capacity: 4 }, &blame);
        assert_eq!(
            (e.status().as_u16(), e.code_name()),
            (429, Some("queue_full"))
        );
        let e = engine_error(
            EngineError::PromptTooLong {
                prompt_tokens: 9,
                context_length: 8,
            },
            &blame,
        );
        assert_eq!(e.param_name(), Some("prompt"));
        assert_eq!(e.code_name(), Some("context_length_exceeded"));
        let e = engine_error(
            EngineError::Index(formwork_index::IndexError::Regex("bad".into())),
            &blame,
        );
        assert_eq!(
            (e.status().as_u16(), e.param_name()),
            (400, Some("guided_regex"))
        );
        let e = engine_error(
            EngineError::Sampling(SamplerError::InvalidParameter {
                field: "top_logprobs",
                reason: "too many".into(),
            }),
            &blame,
        );
        assert_eq!(e.param_name(), Some("logprobs"));
        assert_eq!(
            engine_error(EngineError::ShutDown, &blame)
                .status()
                .as_u16(),
            503
        );
        let e = engine_error(EngineError::Generation("x".into()), &blame);
        assert_eq!(e.status().as_u16(), 500);
        let e = engine_error(
            EngineError::MaxTokensTooSmall {
                max_tokens: 3,
                min_tokens: 7,
            },
            &blame,
        );
        assert_eq!(
            (e.status().as_u16(), e.param_name()),
            (400, Some("max_tokens"))
        );
    }

    #[test]
    fn top_p_zero_is_greedy() {
        let mut o = options(json!({"top_p": 0, "temperature": 1}));
        o.stream = false;
        let r = engine_request(Prompt::Text("x".into()), &o, None);
        assert_eq!((r.sampling.top_p, r.sampling.temperature), (1.0, 0.0));
        let o = options(json!({"top_p": 0.5, "top_k": 3, "seed": -1, "n": 2, "stop": "z"}));
        let r = engine_request(Prompt::Text("x".into()), &o, Some(Constraint::JsonObject));
        assert_eq!(r.sampling.top_p, 0.5);
        assert_eq!(r.sampling.top_k, 3);
        assert_eq!(r.sampling.seed, Some(u64::MAX));
        assert_eq!((r.n, r.stop.clone()), (2, vec!["z".to_owned()]));
        assert_eq!(r.constraint, Some(Constraint::JsonObject));
    }
}
