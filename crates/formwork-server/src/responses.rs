//! `POST /v1/responses`: OpenAI's Responses API over the same engine as the chat route.
//!
//! A request is read by [`ResponsesRequest`] (its `input` items become the chat
//! template's messages), checked by the same steps as a chat request
//! ([`GenerationOptions`], [`resolve_responses`] for every structure dialect plus
//! `text.format`, a [`ToolPlan`](crate::tools::ToolPlan) for its tools), and submitted
//! through the chat route's code (the private `generate` module).
//!
//! One [`ResponseWriter`] turns the model's reply into output items, whether the reply
//! comes whole or token by token: the reasoning splitter (a reasoning model's
//! reasoning becomes a `reasoning` item), then the tool reader (text becomes a `message`
//! item with an `output_text` part, calls become `function_call` items). A whole
//! response is the writer fed the whole reply at once; a stream is the same writer fed
//! each piece, sending typed events as items and parts open, grow and close. Both read
//! the reply with the same readers, which give the same result in any chunking, so a
//! stream's deltas add up to the whole response's output for the same seed.
//!
//! A stream sends `response.created` and `response.in_progress`, then per item
//! `response.output_item.added`, (for text) `response.content_part.added`, the item's
//! deltas (`response.output_text.delta`, `response.reasoning_text.delta`,
//! `response.function_call_arguments.delta`), their `.done` events,
//! `response.content_part.done` and `response.output_item.done`; then
//! `response.completed`, or `response.incomplete` when `max_output_tokens` cut the
//! output, or `response.failed` when generation failed after the stream started. Each
//! event is `event: TYPE` and `data: {"type": TYPE, "sequence_number": n, ...}`; no
//! `[DONE]` follows. Dropping the stream (the client went away) drops the engine's
//! handle, which cancels the request.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use formwork_engine::{ReasoningSplitter, TokenLogprob};
use serde_json::json;

use crate::app::AppState;
use crate::error::{ApiError, JsonBody};
use crate::generate::{Blame, ChunkWriter, chat_request, collect, event_stream, submit};
use crate::id::{random_id, unix_time};
use crate::options::GenerationOptions;
use crate::protocol::{
    self, ContentPartOut, IncompleteDetails, OutputItem, ResponseError, ResponseObject,
    ResponseStatus, ResponseUsage, ResponsesRequest, SequencedEvent, StreamEvent, TextConfig,
    TextFormat, ToolCallDelta,
};
use crate::sse;
use crate::structure::resolve_responses;
use crate::tools::{StreamDelta, ToolPlan, ToolStream};

/// `POST /v1/responses`.
pub(crate) async fn create_response(
    State(state): State<Arc<AppState>>,
    JsonBody(mut req): JsonBody<ResponsesRequest>,
) -> Result<Response, ApiError> {
    state.check_model(req.model.as_deref())?;
    req.check_supported()?;
    let messages = req.messages()?;
    let options = GenerationOptions::from_responses(&req, &state.config.limits)?;
    let (resolved, plan) = resolve_responses(&req)?;
    let blame = Blame {
        prompt: "input",
        structure: resolved.as_ref().map(|r| r.param()),
        logprobs: "top_logprobs",
        max_tokens: "max_output_tokens",
    };
    let mut envelope = envelope(&req, state.served_model_name(), &options);
    if req.store == Some(true) {
        envelope
            .warnings
            .push("`store` is ignored: this server does not store responses".into());
    }
    let request = chat_request(
        messages,
        &plan,
        resolved.map(|r| r.constraint),
        &options,
        req.chat_template_kwargs.take(),
        req.max_reasoning_tokens,
    )?;
    let handle = submit(&state, request, &blame).await?;
    let mut writer = ResponseWriter::new(envelope, &plan, handle.reasoning_splitter());
    if options.stream {
        writer.streaming = true;
        return Ok(event_stream(handle, writer, false));
    }
    let warnings = handle.warnings().to_vec();
    let (choices, usage) = collect(handle, 1).await?;
    // Not streaming: the writer sends no events.
    let mut unsent = VecDeque::new();
    writer.warnings(warnings, &mut unsent);
    for choice in choices {
        writer.delta(0, &choice.text, Vec::new(), &mut unsent);
        writer.finish(0, choice.finish, &mut unsent);
    }
    writer.done(usage, false, &mut unsent);
    Ok(Json(writer.response).into_response())
}

/// The response before any output: the request's settings echoed as OpenAI does.
fn envelope(req: &ResponsesRequest, model: &str, options: &GenerationOptions) -> ResponseObject {
    let text = req.text.clone().unwrap_or_else(|| TextConfig {
        format: Some(TextFormat {
            kind: "text".into(),
            ..TextFormat::default()
        }),
        verbosity: None,
    });
    ResponseObject {
        id: random_id("resp_"),
        object: "response".into(),
        created_at: unix_time(),
        status: ResponseStatus::InProgress,
        error: None,
        incomplete_details: None,
        instructions: req.instructions.clone(),
        max_output_tokens: options.max_tokens,
        model: model.to_owned(),
        output: Vec::new(),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        previous_response_id: None,
        reasoning: req.reasoning.clone().filter(|r| !r.is_null()),
        store: false,
        temperature: options.temperature,
        top_p: options.top_p,
        text,
        tool_choice: req
            .tool_choice
            .clone()
            .filter(|c| !c.is_null())
            .unwrap_or_else(|| json!("auto")),
        tools: req.tools.clone().unwrap_or_default(),
        truncation: "disabled".into(),
        usage: None,
        user: req.user.clone(),
        metadata: req.echoed_metadata(),
        warnings: Vec::new(),
    }
}

/// Builds a response's output from the model's reply, and (when streaming) the events
/// that say so: see the [module docs](self).
pub(crate) struct ResponseWriter {
    /// The response so far.
    response: ResponseObject,
    /// A reasoning model's splitter, in front of the tool reader.
    splitter: Option<ReasoningSplitter>,
    reader: ToolStream,
    /// Whether events are sent (else only the response is built).
    streaming: bool,
    sequence: u64,
    /// The open reasoning item's index in `output`.
    reasoning: Option<usize>,
    /// The open message item's index in `output`.
    message: Option<usize>,
    /// The open call item's index in `output`.
    call: Option<usize>,
    /// Each call's index in `output`, by the tool reader's call index.
    calls: Vec<usize>,
}

impl ResponseWriter {
    fn new(
        response: ResponseObject,
        plan: &ToolPlan,
        splitter: Option<ReasoningSplitter>,
    ) -> ResponseWriter {
        ResponseWriter {
            response,
            splitter,
            reader: plan.stream(),
            streaming: false,
            sequence: 0,
            reasoning: None,
            message: None,
            call: None,
            calls: Vec::new(),
        }
    }

    /// Queues `event` with the next sequence number (only when streaming).
    fn emit(&mut self, event: StreamEvent, out: &mut VecDeque<SseEvent>) {
        if !self.streaming {
            return;
        }
        let sequenced = SequencedEvent {
            event,
            sequence_number: self.sequence,
        };
        self.sequence += 1;
        out.push_back(match serde_json::to_value(&sequenced) {
            Ok(value) => {
                let name = value["type"].as_str().unwrap_or_default().to_owned();
                SseEvent::default().event(name).data(value.to_string())
            }
            Err(e) => sse::error_event(&ApiError::server(format!(
                "could not serialize a stream event: {e}"
            ))),
        });
    }

    fn snapshot(&self) -> Box<ResponseObject> {
        Box::new(self.response.clone())
    }

    /// Adds an item (with one empty part, for text items) to `output`; returns its index.
    fn open(&mut self, item: OutputItem, out: &mut VecDeque<SseEvent>) -> usize {
        let index = self.response.output.len();
        let part = match &item {
            OutputItem::Message { .. } => Some(ContentPartOut::OutputText {
                text: String::new(),
                annotations: Vec::new(),
            }),
            OutputItem::Reasoning { .. } => Some(ContentPartOut::ReasoningText {
                text: String::new(),
            }),
            OutputItem::FunctionCall { .. } => None,
        };
        let item_id = item.id().to_owned();
        self.response.output.push(item.clone());
        self.emit(
            StreamEvent::OutputItemAdded {
                output_index: index,
                item,
            },
            out,
        );
        if let Some(part) = part {
            if let Some(
                OutputItem::Message { content, .. } | OutputItem::Reasoning { content, .. },
            ) = self.response.output.get_mut(index)
            {
                content.push(part.clone());
            }
            self.emit(
                StreamEvent::ContentPartAdded {
                    item_id,
                    output_index: index,
                    content_index: 0,
                    part,
                },
                out,
            );
        }
        index
    }

    /// Appends `text` to a text item's part, or a call's arguments.
    fn append(&mut self, index: usize, text: &str) {
        match self.response.output.get_mut(index) {
            Some(OutputItem::Message { content, .. } | OutputItem::Reasoning { content, .. }) => {
                if let Some(part) = content.first_mut() {
                    part.text_mut().push_str(text);
                }
            }
            Some(OutputItem::FunctionCall { arguments, .. }) => arguments.push_str(text),
            None => {}
        }
    }

    fn item_id(&self, index: usize) -> String {
        self.response
            .output
            .get(index)
            .map(|item| item.id().to_owned())
            .unwrap_or_default()
    }

    /// Ends an item with `status`, sending its `.done` events.
    fn close(&mut self, index: usize, status: ResponseStatus, out: &mut VecDeque<SseEvent>) {
        let Some(item) = self.response.output.get_mut(index) else {
            return;
        };
        match item {
            OutputItem::Message { status: s, .. }
            | OutputItem::Reasoning { status: s, .. }
            | OutputItem::FunctionCall { status: s, .. } => *s = status,
        }
        let item = item.clone();
        let item_id = item.id().to_owned();
        match &item {
            OutputItem::Message { content, .. } | OutputItem::Reasoning { content, .. } => {
                if let Some(part) = content.first() {
                    let text = match part {
                        ContentPartOut::OutputText { text, .. }
                        | ContentPartOut::ReasoningText { text } => text.clone(),
                    };
                    let done = if matches!(item, OutputItem::Message { .. }) {
                        StreamEvent::OutputTextDone {
                            item_id: item_id.clone(),
                            output_index: index,
                            content_index: 0,
                            text,
                            logprobs: Vec::new(),
                        }
                    } else {
                        StreamEvent::ReasoningTextDone {
                            item_id: item_id.clone(),
                            output_index: index,
                            content_index: 0,
                            text,
                        }
                    };
                    self.emit(done, out);
                    self.emit(
                        StreamEvent::ContentPartDone {
                            item_id,
                            output_index: index,
                            content_index: 0,
                            part: part.clone(),
                        },
                        out,
                    );
                }
            }
            OutputItem::FunctionCall {
                name, arguments, ..
            } => self.emit(
                StreamEvent::FunctionCallArgumentsDone {
                    item_id,
                    output_index: index,
                    name: name.clone(),
                    arguments: arguments.clone(),
                },
                out,
            ),
        }
        self.emit(
            StreamEvent::OutputItemDone {
                output_index: index,
                item,
            },
            out,
        );
    }

    /// Ends the open items: `keep` says which kind stays open.
    fn close_open(&mut self, keep: Open, status: ResponseStatus, out: &mut VecDeque<SseEvent>) {
        for (kind, slot) in [
            (Open::Reasoning, self.reasoning),
            (Open::Message, self.message),
            (Open::Call, self.call),
        ] {
            if kind != keep
                && let Some(index) = slot
            {
                match kind {
                    Open::Reasoning => self.reasoning = None,
                    Open::Message => self.message = None,
                    Open::Call => self.call = None,
                    Open::Nothing => {}
                }
                self.close(index, status, out);
            }
        }
    }

    /// The open item text of `kind` (reasoning, else the message) goes to; opened now,
    /// closing the item open before it, when there is none.
    fn text_item(&mut self, kind: Open, out: &mut VecDeque<SseEvent>) -> usize {
        let reasoning = kind == Open::Reasoning;
        if let Some(index) = if reasoning {
            self.reasoning
        } else {
            self.message
        } {
            return index;
        }
        self.close_open(kind, ResponseStatus::Completed, out);
        let item = if reasoning {
            OutputItem::Reasoning {
                id: random_id("rs_"),
                summary: Vec::new(),
                content: Vec::new(),
                status: ResponseStatus::InProgress,
            }
        } else {
            OutputItem::Message {
                id: random_id("msg_"),
                status: ResponseStatus::InProgress,
                role: "assistant".into(),
                content: Vec::new(),
            }
        };
        let index = self.open(item, out);
        if reasoning {
            self.reasoning = Some(index);
        } else {
            self.message = Some(index);
        }
        index
    }

    fn reasoning_text(&mut self, text: &str, out: &mut VecDeque<SseEvent>) {
        if text.is_empty() {
            return;
        }
        let index = self.text_item(Open::Reasoning, out);
        self.append(index, text);
        let event = StreamEvent::ReasoningTextDelta {
            item_id: self.item_id(index),
            output_index: index,
            content_index: 0,
            delta: text.to_owned(),
        };
        self.emit(event, out);
    }

    fn output_text(&mut self, text: &str, out: &mut VecDeque<SseEvent>) {
        if text.is_empty() {
            return;
        }
        let index = self.text_item(Open::Message, out);
        self.append(index, text);
        let event = StreamEvent::OutputTextDelta {
            item_id: self.item_id(index),
            output_index: index,
            content_index: 0,
            delta: text.to_owned(),
            logprobs: Vec::new(),
        };
        self.emit(event, out);
    }

    fn call_delta(&mut self, delta: ToolCallDelta, out: &mut VecDeque<SseEvent>) {
        let arguments = delta.function.arguments.unwrap_or_default();
        let index = match delta.id {
            // A new call: the items before it are whole.
            Some(call_id) => {
                self.close_open(Open::Nothing, ResponseStatus::Completed, out);
                let item = OutputItem::FunctionCall {
                    id: random_id("fc_"),
                    call_id,
                    name: delta.function.name.unwrap_or_default(),
                    arguments: String::new(),
                    status: ResponseStatus::InProgress,
                };
                let index = self.open(item, out);
                self.calls.push(index);
                self.call = Some(index);
                index
            }
            None => match self.calls.get(delta.index as usize) {
                Some(&index) => index,
                None => return,
            },
        };
        if arguments.is_empty() {
            return;
        }
        self.append(index, &arguments);
        let event = StreamEvent::FunctionCallArgumentsDelta {
            item_id: self.item_id(index),
            output_index: index,
            delta: arguments,
        };
        self.emit(event, out);
    }

    /// Reasoning, then what the tool reader makes of the rest.
    fn absorb(&mut self, reasoning: &str, deltas: Vec<StreamDelta>, out: &mut VecDeque<SseEvent>) {
        self.reasoning_text(reasoning, out);
        for delta in deltas {
            match delta {
                StreamDelta::Content(text) => self.output_text(&text, out),
                StreamDelta::ToolCalls(calls) => {
                    for call in calls {
                        self.call_delta(call, out);
                    }
                }
            }
        }
    }
}

/// Which kind of item [`ResponseWriter::close_open`] leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Reasoning,
    Message,
    Call,
    Nothing,
}

impl ChunkWriter for ResponseWriter {
    fn start(&mut self, out: &mut VecDeque<SseEvent>) {
        let response = self.snapshot();
        self.emit(StreamEvent::Created { response }, out);
        let response = self.snapshot();
        self.emit(StreamEvent::InProgress { response }, out);
    }

    fn delta(
        &mut self,
        index: usize,
        text: &str,
        _logprobs: Vec<TokenLogprob>,
        out: &mut VecDeque<SseEvent>,
    ) {
        if index != 0 {
            return;
        }
        let (reasoning, content) = match &mut self.splitter {
            Some(splitter) => splitter.push(text),
            None => (String::new(), text.to_owned()),
        };
        let deltas = self.reader.push(&content);
        self.absorb(&reasoning, deltas, out);
    }

    fn finish(
        &mut self,
        index: usize,
        reason: protocol::FinishReason,
        out: &mut VecDeque<SseEvent>,
    ) {
        if index != 0 {
            return;
        }
        let (reasoning, content) = match &mut self.splitter {
            Some(splitter) => splitter.finish(),
            None => (String::new(), String::new()),
        };
        let mut deltas = self.reader.push(&content);
        deltas.extend(
            self.reader
                .finish_reply(reason == protocol::FinishReason::Length),
        );
        self.absorb(&reasoning, deltas, out);
        let status = if reason == protocol::FinishReason::Length {
            self.response.incomplete_details = Some(IncompleteDetails {
                reason: "max_output_tokens".into(),
            });
            ResponseStatus::Incomplete
        } else {
            ResponseStatus::Completed
        };
        self.close_open(Open::Nothing, status, out);
        self.response.status = status;
    }

    /// Never sent: the usage is in the last event's response ([`ChunkWriter::done`]).
    fn usage(&self, usage: protocol::Usage) -> SseEvent {
        sse::event(&ResponseUsage::from(usage))
    }

    fn warnings(&mut self, warnings: Vec<String>, _out: &mut VecDeque<SseEvent>) {
        self.response.warnings.extend(warnings);
    }

    fn done(&mut self, usage: protocol::Usage, _include_usage: bool, out: &mut VecDeque<SseEvent>) {
        self.response.usage = Some(ResponseUsage::from(usage));
        if self.response.status == ResponseStatus::InProgress {
            self.response.status = ResponseStatus::Completed;
        }
        let response = self.snapshot();
        let event = match self.response.status {
            ResponseStatus::Incomplete => StreamEvent::Incomplete { response },
            _ => StreamEvent::Completed { response },
        };
        self.emit(event, out);
    }

    fn fail(&mut self, error: &ApiError, out: &mut VecDeque<SseEvent>) {
        self.response.status = ResponseStatus::Failed;
        self.response.error = Some(ResponseError {
            code: "server_error".into(),
            message: error.message().to_owned(),
        });
        let response = self.snapshot();
        self.emit(StreamEvent::Failed { response }, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::parse_json;
    use crate::options::Limits;
    use crate::sse::sse_body_for_tests;
    use formwork_engine::ReasoningFormat;
    use serde_json::Value;

    fn request(extra: Value) -> ResponsesRequest {
        let mut body = json!({"input": "x"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        parse_json(body.to_string().as_bytes()).unwrap()
    }

    fn writer(
        extra: Value,
        splitter: Option<ReasoningSplitter>,
        streaming: bool,
    ) -> ResponseWriter {
        let req = request(extra);
        let options = GenerationOptions::from_responses(&req, &Limits::default()).unwrap();
        let plan = ToolPlan::from_responses(&req).unwrap();
        let mut writer = ResponseWriter::new(envelope(&req, "m", &options), &plan, splitter);
        writer.streaming = streaming;
        writer
    }

    /// Feeds `text` in pieces of `n` characters and finishes; returns the response and
    /// the events (name, data).
    async fn feed(
        mut writer: ResponseWriter,
        text: &str,
        n: usize,
        reason: protocol::FinishReason,
    ) -> (ResponseObject, Vec<(String, Value)>) {
        let mut out = VecDeque::new();
        writer.start(&mut out);
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(n) {
            writer.delta(0, &piece.iter().collect::<String>(), Vec::new(), &mut out);
        }
        writer.finish(0, reason, &mut out);
        writer.done(protocol::Usage::new(3, 4), false, &mut out);
        let body = sse_body_for_tests(out.into_iter().collect()).await;
        let events = body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e
                    .strip_prefix("event: ")
                    .and_then(|e| e.split_once("\ndata: "))
                    .unwrap();
                (name.to_owned(), serde_json::from_str(data).unwrap())
            })
            .collect();
        (writer.response, events)
    }

    /// The output without its random ids.
    fn output(response: &ResponseObject) -> Value {
        let mut v = serde_json::to_value(&response.output).unwrap();
        for item in v.as_array_mut().unwrap() {
            item["id"] = Value::Null;
            if item.get("call_id").is_some() {
                item["call_id"] = Value::Null;
            }
        }
        v
    }

    fn names(events: &[(String, Value)]) -> Vec<&str> {
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        names
            .iter()
            .enumerate()
            .filter(|&(i, n)| i == 0 || names[i - 1] != *n)
            .map(|(_, n)| *n)
            .collect()
    }

    #[tokio::test]
    async fn any_chunking_gives_the_same_output_and_the_whole_sends_no_events() {
        let reply = "<think>\nhmm, Paris</think>\n\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";
        let extra = json!({"tools": [{"type": "function", "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": "required"});
        let splitter = || Some(ReasoningSplitter::new(ReasoningFormat::DEEPSEEK_R1, false));
        let stop = protocol::FinishReason::Stop;
        let (whole, events) = feed(
            writer(extra.clone(), splitter(), false),
            reply,
            10_000,
            stop,
        )
        .await;
        assert!(events.is_empty());
        assert_eq!(whole.status, ResponseStatus::Completed);
        let expected = output(&whole);
        assert_eq!(expected[0]["type"], "reasoning");
        assert_eq!(expected[0]["content"][0]["text"], "\nhmm, Paris");
        assert_eq!(expected[1]["type"], "function_call");
        assert_eq!(expected[1]["arguments"], r#"{"city": "Paris"}"#);
        assert_eq!(expected[1]["status"], "completed");
        for n in [1, 2, 3, 7] {
            let (streamed, events) =
                feed(writer(extra.clone(), splitter(), true), reply, n, stop).await;
            assert_eq!(output(&streamed), expected, "pieces of {n}");
            assert_eq!(
                names(&events),
                [
                    "response.created",
                    "response.in_progress",
                    "response.output_item.added",
                    "response.content_part.added",
                    "response.reasoning_text.delta",
                    "response.reasoning_text.done",
                    "response.content_part.done",
                    "response.output_item.done",
                    "response.output_item.added",
                    "response.function_call_arguments.delta",
                    "response.function_call_arguments.done",
                    "response.output_item.done",
                    "response.completed",
                ]
            );
            let numbers: Vec<u64> = events
                .iter()
                .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
                .collect();
            assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
            let last = &events.last().unwrap().1["response"];
            assert_eq!(last["usage"]["total_tokens"], 7);
            assert_eq!(
                last["output"],
                serde_json::to_value(&streamed.output).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn text_then_a_call_in_auto_mode_are_two_items() {
        let extra = json!({"tools": [{"type": "function", "name": "f"}]});
        let reply = "Let me check.<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>";
        let (whole, _) = feed(
            writer(extra.clone(), None, false),
            reply,
            10_000,
            protocol::FinishReason::Stop,
        )
        .await;
        let (streamed, events) = feed(
            writer(extra, None, true),
            reply,
            4,
            protocol::FinishReason::Stop,
        )
        .await;
        assert_eq!(output(&streamed), output(&whole));
        let out = output(&whole);
        assert_eq!(out[0]["type"], "message", "{out}");
        assert_eq!(out[0]["content"][0]["text"], "Let me check.");
        assert_eq!(out[1]["type"], "function_call");
        assert_eq!(out[1]["name"], "f");
        // The message is done before the call is added.
        let names = names(&events);
        let message_done = names
            .iter()
            .position(|n| *n == "response.output_text.done")
            .unwrap();
        let call_added = names
            .iter()
            .rposition(|n| *n == "response.output_item.added")
            .unwrap();
        assert!(message_done < call_added, "{names:?}");
    }

    #[tokio::test]
    async fn a_cut_reply_is_incomplete_and_a_failure_is_a_failed_event() {
        let (response, events) = feed(
            writer(json!({}), None, true),
            "Hello",
            2,
            protocol::FinishReason::Length,
        )
        .await;
        assert_eq!(response.status, ResponseStatus::Incomplete);
        assert_eq!(
            response.incomplete_details,
            Some(IncompleteDetails {
                reason: "max_output_tokens".into()
            })
        );
        assert_eq!(events.last().unwrap().0, "response.incomplete");
        assert_eq!(output(&response)[0]["status"], "incomplete");

        let mut w = writer(json!({}), None, true);
        let mut out = VecDeque::new();
        w.start(&mut out);
        w.delta(0, "Hel", Vec::new(), &mut out);
        w.fail(&ApiError::server("Generation failed: boom"), &mut out);
        let body = sse_body_for_tests(out.into_iter().collect()).await;
        let last = body.trim_end().rsplit("\n\n").next().unwrap();
        assert!(last.starts_with("event: response.failed\ndata: "), "{last}");
        let data: Value = serde_json::from_str(last.split_once("data: ").unwrap().1).unwrap();
        assert_eq!(data["response"]["status"], "failed");
        assert_eq!(data["response"]["error"]["code"], "server_error");
        assert_eq!(
            data["response"]["error"]["message"],
            "Generation failed: boom"
        );
        assert!(!body.contains("[DONE]"));
    }

    #[test]
    fn the_envelope_echoes_the_request() {
        let req = request(
            json!({"instructions": "hi", "temperature": 0.5, "top_p": 0.9,
            "max_output_tokens": 9, "parallel_tool_calls": false, "user": "u",
            "reasoning": {"effort": "low"}, "metadata": {"a": "b", "structure": {"type": "json_object"}},
            "text": {"format": {"type": "json_object"}}}),
        );
        let options = GenerationOptions::from_responses(&req, &Limits::default()).unwrap();
        let e = serde_json::to_value(envelope(&req, "m", &options)).unwrap();
        assert_eq!(e["instructions"], "hi");
        assert_eq!(e["temperature"], 0.5);
        assert!((e["top_p"].as_f64().unwrap() - 0.9).abs() < 1e-6);
        assert_eq!(e["max_output_tokens"], 9);
        assert_eq!(e["parallel_tool_calls"], false);
        assert_eq!(e["user"], "u");
        assert_eq!(e["reasoning"], json!({"effort": "low"}));
        assert_eq!(
            e["metadata"],
            json!({"a": "b", "structure": "{\"type\":\"json_object\"}"})
        );
        assert_eq!(e["text"], json!({"format": {"type": "json_object"}}));
        assert_eq!(e["status"], "in_progress");
        assert_eq!(e["usage"], Value::Null);
        assert!(e.get("warnings").is_none());
    }
}
