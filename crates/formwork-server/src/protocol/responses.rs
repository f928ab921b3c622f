//! OpenAI's Responses API (`POST /v1/responses`) as clients send and receive it.
//!
//! - [`ResponsesRequest`]: the body. Its `input` (a string, or a list of items) and
//!   `instructions` become the chat template's [`Message`]s
//!   ([`ResponsesRequest::messages`]); its flat function `tools` and `tool_choice` become
//!   the chat route's [`Tool`]s and [`ToolChoice`] ([`ResponsesRequest::function_tools`],
//!   [`ResponsesRequest::tool_choice`]), so both routes share one
//!   [`ToolPlan`](crate::tools::ToolPlan). Its sampling and structure fields are the
//!   ones the chat route embeds ([`SamplingFields`], [`StructureFields`]); `text.format`
//!   is read by [`structure`](crate::structure).
//! - [`ResponseObject`]: the response, with its [`OutputItem`]s (`message`,
//!   `function_call`, `reasoning`) and [`ResponseUsage`].
//! - [`StreamEvent`]: the typed server-sent events of a streamed response, each sent as
//!   `event: TYPE` and `data: {"type": TYPE, "sequence_number": n, ...}`.
//!
//! Items and parts a server without stored responses cannot honour are refused with a
//! 400 whose `param` is their path (`input[2].type`, `input[0].content[1].type`).
//!
//! ```
//! use formwork_server::error::parse_json;
//! use formwork_server::protocol::ResponsesRequest;
//! use formwork_template::Role;
//!
//! let req: ResponsesRequest = parse_json(br#"{
//!     "instructions": "Be brief.",
//!     "input": [
//!         {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
//!         {"type": "function_call", "call_id": "call_1", "name": "get_weather",
//!          "arguments": "{\"city\":\"Paris\"}"},
//!         {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
//!     ]
//! }"#).unwrap();
//! let messages = req.messages().unwrap();
//! let roles: Vec<&Role> = messages.iter().map(|m| &m.role).collect();
//! assert_eq!(roles, [&Role::System, &Role::User, &Role::Assistant, &Role::Tool]);
//! assert_eq!(messages[3].name.as_deref(), Some("get_weather"));
//!
//! let bad: ResponsesRequest = parse_json(br#"{"input": [{"type": "web_search_call"}]}"#).unwrap();
//! assert_eq!(bad.messages().unwrap_err().param_name(), Some("input[0].type"));
//! ```

use formwork_template::{Content, ContentPart, Message, Role, Tool, ToolCall};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::request::{
    AllowedToolsMode, SamplingFields, StructureFields, ToolChoice, request_object,
};
use crate::error::ApiError;

request_object! {
    /// The body of `POST /v1/responses`.
    pub struct ResponsesRequest {
        required {}
        optional {
            /// The conversation: a string (one user message) or a list of items.
            input: Value,
            /// A system message put before the input.
            instructions: String,
            /// The model to use; `None` means the served model.
            model: String,
            /// The most tokens to generate (wins over `max_tokens`).
            max_output_tokens: u32,
            /// Function tools, in the Responses API's flat shape.
            tools: Vec<Value>,
            /// `"auto"`, `"required"`, `"none"`, `{"type": "function", "name": ..}` or
            /// `{"type": "allowed_tools", "mode": .., "tools": [..]}`.
            tool_choice: Value,
            /// Whether a reply may hold several tool calls (default true).
            parallel_tool_calls: bool,
            /// The output's format: `{"format": {"type": "text" | "json_object" |
            /// "json_schema", ..}}`.
            text: TextConfig,
            /// Whether to store the response; responses are never stored here (a
            /// `true` is answered with a warning).
            store: bool,
            /// Continuing a stored response: refused (responses are not stored).
            previous_response_id: String,
            /// A stored conversation: refused (conversations are not stored).
            conversation: Value,
            /// A stored prompt template: refused.
            prompt: Value,
            /// Running in the background: refused when true (nothing is stored to poll).
            background: bool,
            /// A reasoning model's settings (`{"effort": ..}`): accepted, echoed and
            /// ignored (the model reasons as its template says).
            reasoning: Value,
            /// Extra output to include (`reasoning.encrypted_content`...): accepted and
            /// ignored.
            include: Vec<String>,
            /// Log-probabilities per token: not supported on this route (only 0).
            top_logprobs: u32,
            /// An end-user id, for logs; echoed.
            user: String,
            /// vLLM: extra top-level variables for the chat template.
            chat_template_kwargs: Map<String, Value>,
            /// For a reasoning model: most tokens of reasoning before its end tag is forced.
            max_reasoning_tokens: u32,
        }
        groups {
            /// The sampling and streaming fields (`temperature`, `top_p`, `seed`, and the
            /// extras `top_k`, `min_p`, `repetition_penalty`...); `n` must be 1.
            sampling: SamplingFields,
            /// The structure fields (`metadata.structure`, vLLM's `guided_*`...).
            structure: StructureFields,
        }
    }
}

/// `text`: the output's format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// The format; `None` means text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    /// `low`, `medium` or `high`: accepted and echoed, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
}

/// `text.format`: `{"type": "text"}`, `{"type": "json_object"}` or `{"type":
/// "json_schema", "name", "schema", "strict"}` (the chat route's `json_schema` object,
/// flattened).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The schema's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the schema is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema (with `json_schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Whether every keyword must be enforced (default true, as on the chat route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A 400 naming `param`.
fn invalid(message: impl Into<String>, param: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message).param(param)
}

/// `obj[key]` as a string: `Ok(None)` when absent or null, a 400 naming `at.key` when
/// of another type.
fn string_at<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a str>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            format!("`{at}.{key}` must be a string, got {other}"),
            format!("{at}.{key}"),
        )),
    }
}

/// `obj[key]` as a string, required.
fn required_at<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a str, ApiError> {
    string_at(obj, key, at)?
        .ok_or_else(|| invalid(format!("`{at}` needs `{key}`"), format!("{at}.{key}")))
}

impl ResponsesRequest {
    /// Refuses what needs stored state (`previous_response_id`, `conversation`,
    /// `prompt`, `background: true`) and what this route does not do (`top_logprobs`).
    pub fn check_supported(&self) -> Result<(), ApiError> {
        if self.previous_response_id.is_some() {
            return Err(invalid(
                "`previous_response_id` is not supported: this server does not store responses; send the whole conversation in `input`",
                "previous_response_id",
            ));
        }
        if self.conversation.as_ref().is_some_and(|c| !c.is_null()) {
            return Err(invalid(
                "`conversation` is not supported: this server does not store conversations; send the whole conversation in `input`",
                "conversation",
            ));
        }
        if self.prompt.as_ref().is_some_and(|p| !p.is_null()) {
            return Err(invalid(
                "`prompt` (a stored prompt template) is not supported; send `instructions` and `input`",
                "prompt",
            ));
        }
        if self.background == Some(true) {
            return Err(invalid(
                "`background` is not supported: this server does not store responses",
                "background",
            ));
        }
        if self.top_logprobs.is_some_and(|k| k > 0) {
            return Err(invalid(
                "`top_logprobs` is not supported on /v1/responses; use /v1/chat/completions",
                "top_logprobs",
            ));
        }
        Ok(())
    }

    /// The conversation for the chat template: `instructions` as a system message, then
    /// the input. See [`docs/api.md`] for each item type.
    ///
    /// [`docs/api.md`]: https://github.com/formwork/formwork/blob/main/docs/api.md
    pub fn messages(&self) -> Result<Vec<Message>, ApiError> {
        let mut out = Vec::new();
        if let Some(text) = &self.instructions {
            out.push(Message::system(text.clone()));
        }
        match &self.input {
            None | Some(Value::Null) => return Err(invalid("`input` is required", "input")),
            Some(Value::String(text)) => out.push(Message::user(text.clone())),
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(invalid("`input` must hold at least one item", "input"));
            }
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    input_item(item, i, &mut out)?;
                }
            }
            Some(other) => {
                return Err(invalid(
                    format!("`input` must be a string or a list of items, got {other}"),
                    "input",
                ));
            }
        }
        Ok(out)
    }

    /// The function tools in the chat template's shape (`strict` kept in the function's
    /// extra fields, where [`ToolPlan`](crate::tools::ToolPlan) reads it). Tools of any
    /// other `type` (OpenAI's hosted tools) are a 400 naming `tools[i].type`.
    pub fn function_tools(&self) -> Result<Vec<Tool>, ApiError> {
        let tools = self.tools.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(tools.len());
        for (i, tool) in tools.iter().enumerate() {
            let at = format!("tools[{i}]");
            let obj = tool
                .as_object()
                .ok_or_else(|| invalid(format!("`{at}` must be an object"), at.clone()))?;
            match string_at(obj, "type", &at)? {
                Some("function") => {}
                Some(other) => {
                    return Err(invalid(
                        format!(
                            "`{at}.type` is `{other}`; only `function` tools are supported (OpenAI's hosted tools are not)"
                        ),
                        format!("{at}.type"),
                    ));
                }
                None => {
                    return Err(invalid(
                        format!("`{at}` has no `type`; expected `function`"),
                        format!("{at}.type"),
                    ));
                }
            }
            let name = required_at(obj, "name", &at)?;
            let description = string_at(obj, "description", &at)?.map(str::to_owned);
            let parameters = obj.get("parameters").filter(|p| !p.is_null()).cloned();
            let mut tool = Tool::function(name, description, parameters);
            if let Some(strict) = obj.get("strict") {
                tool.function.extra.insert("strict".into(), strict.clone());
            }
            out.push(tool);
        }
        Ok(out)
    }

    /// `tool_choice` as the chat route's [`ToolChoice`]; `None` when absent.
    pub fn tool_choice(&self) -> Result<Option<ToolChoice>, ApiError> {
        const EXPECTED: &str = r#"expected "auto", "required", "none", {"type": "function", "name": ..} or {"type": "allowed_tools", "mode": .., "tools": [..]}"#;
        let Some(value) = self.tool_choice.as_ref().filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let choice = match value {
            Value::String(s) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                "none" => ToolChoice::None,
                other => {
                    return Err(invalid(
                        format!("unknown `tool_choice` `{other}`; {EXPECTED}"),
                        "tool_choice",
                    ));
                }
            },
            Value::Object(obj) => match string_at(obj, "type", "tool_choice")? {
                Some("function") => {
                    ToolChoice::Function(required_at(obj, "name", "tool_choice")?.to_owned())
                }
                Some("allowed_tools") => allowed_tools(obj)?,
                Some(other) => {
                    return Err(invalid(
                        format!(
                            "`tool_choice.type` is `{other}`; only function tools are supported, {EXPECTED}"
                        ),
                        "tool_choice.type",
                    ));
                }
                None => {
                    return Err(invalid(
                        format!("`tool_choice` has no `type`; {EXPECTED}"),
                        "tool_choice.type",
                    ));
                }
            },
            other => {
                return Err(invalid(
                    format!("invalid `tool_choice` {other}; {EXPECTED}"),
                    "tool_choice",
                ));
            }
        };
        Ok(Some(choice))
    }

    /// `metadata` as OpenAI echoes it: a map of strings (a value that is not a string,
    /// such as a `structure` object, is echoed as its JSON text).
    pub fn echoed_metadata(&self) -> Map<String, Value> {
        let metadata = self.structure.metadata.clone().unwrap_or_default();
        metadata
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, Value::String(s)),
                other => (k, Value::String(other.to_string())),
            })
            .collect()
    }
}

/// `{"type": "allowed_tools", "mode": "auto" | "required", "tools": [{"type": "function",
/// "name": ..}]}`.
fn allowed_tools(obj: &Map<String, Value>) -> Result<ToolChoice, ApiError> {
    let mode = match string_at(obj, "mode", "tool_choice")? {
        Some("auto") => AllowedToolsMode::Auto,
        Some("required") => AllowedToolsMode::Required,
        _ => {
            return Err(invalid(
                "`tool_choice.mode` must be `auto` or `required`",
                "tool_choice.mode",
            ));
        }
    };
    let Some(list) = obj.get("tools").and_then(Value::as_array) else {
        return Err(invalid(
            "`tool_choice.tools` must be a list of tools",
            "tool_choice.tools",
        ));
    };
    let mut tools = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let at = format!("tool_choice.tools[{i}]");
        let obj = tool
            .as_object()
            .ok_or_else(|| invalid(format!("`{at}` must be an object"), at.clone()))?;
        if string_at(obj, "type", &at)? != Some("function") {
            return Err(invalid(
                format!("`{at}.type` must be `function`"),
                format!("{at}.type"),
            ));
        }
        tools.push(required_at(obj, "name", &at)?.to_owned());
    }
    Ok(ToolChoice::AllowedTools { mode, tools })
}

/// Reads `input[i]` into the conversation.
fn input_item(item: &Value, i: usize, out: &mut Vec<Message>) -> Result<(), ApiError> {
    let at = format!("input[{i}]");
    let obj = item
        .as_object()
        .ok_or_else(|| invalid(format!("`{at}` must be an object"), at.clone()))?;
    let kind = match string_at(obj, "type", &at)? {
        Some(kind) => kind,
        // OpenAI's "easy" input message: a role and content, no type.
        None if obj.contains_key("role") => "message",
        None => {
            return Err(invalid(
                format!("`{at}` has neither `type` nor `role`"),
                format!("{at}.type"),
            ));
        }
    };
    match kind {
        "message" => out.push(input_message(obj, &at)?),
        "function_call" => {
            let call_id = required_at(obj, "call_id", &at)?;
            let name = required_at(obj, "name", &at)?;
            let arguments = required_at(obj, "arguments", &at)?;
            let call = ToolCall::function(call_id, name, Value::String(arguments.to_owned()));
            // Calls after an assistant turn belong to it; the first of a turn opens one.
            match out.last_mut() {
                Some(last) if last.role == Role::Assistant => {
                    last.tool_calls.get_or_insert_with(Vec::new).push(call);
                }
                _ => out.push(Message {
                    content: None,
                    tool_calls: Some(vec![call]),
                    ..Message::new(Role::Assistant, "")
                }),
            }
        }
        "function_call_output" => {
            let call_id = required_at(obj, "call_id", &at)?;
            let name = out
                .iter()
                .flat_map(|m| m.tool_calls.as_deref().unwrap_or_default())
                .find(|c| c.id.as_deref() == Some(call_id))
                .map(|c| c.function.name.clone())
                .ok_or_else(|| {
                    invalid(
                        format!(
                            "`{at}.call_id` `{call_id}` answers no earlier `function_call` item of the input"
                        ),
                        format!("{at}.call_id"),
                    )
                })?;
            let output = match obj.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    content_text(parts, &format!("{at}.output"))?.join("\n")
                }
                _ => {
                    return Err(invalid(
                        format!("`{at}.output` must be a string or a list of text parts"),
                        format!("{at}.output"),
                    ));
                }
            };
            out.push(Message {
                name: Some(name),
                tool_call_id: Some(call_id.to_owned()),
                ..Message::new(Role::Tool, output)
            });
        }
        // Earlier reasoning is not replayed: chat templates drop it from past turns too.
        "reasoning" => {}
        "item_reference" => {
            return Err(invalid(
                format!("`{at}` is an `item_reference`: this server does not store items"),
                format!("{at}.type"),
            ));
        }
        other => {
            return Err(invalid(
                format!(
                    "unknown `{at}.type` `{other}`; expected message, function_call, function_call_output or reasoning"
                ),
                format!("{at}.type"),
            ));
        }
    }
    Ok(())
}

/// An input message: a role and content (a string, or text parts).
fn input_message(obj: &Map<String, Value>, at: &str) -> Result<Message, ApiError> {
    let role = match required_at(obj, "role", at)? {
        "user" => Role::User,
        "system" => Role::System,
        "developer" => Role::Developer,
        "assistant" => Role::Assistant,
        other => {
            return Err(invalid(
                format!("`{at}.role` is `{other}`; expected user, system, developer or assistant"),
                format!("{at}.role"),
            ));
        }
    };
    let content = match obj.get("content") {
        Some(Value::String(s)) => Content::Text(s.clone()),
        Some(Value::Array(parts)) => Content::Parts(
            content_text(parts, &format!("{at}.content"))?
                .into_iter()
                .map(ContentPart::text)
                .collect(),
        ),
        _ => {
            return Err(invalid(
                format!("`{at}.content` must be a string or a list of content parts"),
                format!("{at}.content"),
            ));
        }
    };
    Ok(Message::new(role, content))
}

/// The texts of content parts (`input_text`, `output_text`, `refusal`); other parts
/// (images, files, audio) are a 400 naming `param[j].type`.
fn content_text(parts: &[Value], param: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{param}[{j}]");
        let obj = part
            .as_object()
            .ok_or_else(|| invalid(format!("`{at}` must be an object"), at.clone()))?;
        let text = match required_at(obj, "type", &at)? {
            "input_text" | "output_text" | "text" => required_at(obj, "text", &at)?,
            "refusal" => required_at(obj, "refusal", &at)?,
            kind @ ("input_image" | "input_file" | "input_audio") => {
                return Err(invalid(
                    format!("`{at}` is an `{kind}` part; this server reads text only"),
                    format!("{at}.type"),
                ));
            }
            other => {
                return Err(invalid(
                    format!("unknown `{at}.type` `{other}`; expected input_text or output_text"),
                    format!("{at}.type"),
                ));
            }
        };
        out.push(text.to_owned());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The response
// ---------------------------------------------------------------------------------------

/// A response's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    /// Being generated (the first events of a stream).
    InProgress,
    /// Finished normally.
    Completed,
    /// Cut short (`incomplete_details` says why).
    Incomplete,
    /// Failed (`error` says why).
    Failed,
}

/// Why a response is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens`.
    pub reason: String,
}

/// A failed response's `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseError {
    /// `server_error` or `rate_limit_exceeded`.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// The body of `POST /v1/responses`, and of the `response.*` lifecycle events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    /// `resp_...`.
    pub id: String,
    /// Always `response`.
    pub object: String,
    /// When the request was accepted (Unix seconds).
    pub created_at: u64,
    /// Where the response stands.
    pub status: ResponseStatus,
    /// Why it failed, or `null`.
    pub error: Option<ResponseError>,
    /// Why it is incomplete, or `null`.
    pub incomplete_details: Option<IncompleteDetails>,
    /// The request's `instructions`.
    pub instructions: Option<String>,
    /// The request's `max_output_tokens`.
    pub max_output_tokens: Option<u32>,
    /// The served model's name.
    pub model: String,
    /// What the model produced, in order.
    pub output: Vec<OutputItem>,
    /// The request's `parallel_tool_calls` (default true).
    pub parallel_tool_calls: bool,
    /// Always `null`: responses are not stored.
    pub previous_response_id: Option<String>,
    /// The request's `reasoning`, echoed.
    pub reasoning: Option<Value>,
    /// Always false: responses are not stored.
    pub store: bool,
    /// The sampling temperature used.
    pub temperature: f32,
    /// The nucleus mass used.
    pub top_p: f32,
    /// The request's `text` (`{"format": {"type": "text"}}` by default).
    pub text: TextConfig,
    /// The request's `tool_choice` (`auto` by default).
    pub tool_choice: Value,
    /// The request's tools.
    pub tools: Vec<Value>,
    /// Always `disabled`: a prompt over the context is a 400.
    pub truncation: String,
    /// Token counts, once generation ended.
    pub usage: Option<ResponseUsage>,
    /// The request's `user`.
    pub user: Option<String>,
    /// The request's `metadata`, each value a string.
    pub metadata: Map<String, Value>,
    /// Formwork: keywords of a lenient schema left unenforced, and other notes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One item of a response's `output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// The assistant's text.
    Message {
        /// `msg_...`.
        id: String,
        /// `in_progress`, `completed` or `incomplete`.
        status: ResponseStatus,
        /// Always `assistant`.
        role: String,
        /// `output_text` parts.
        content: Vec<ContentPartOut>,
    },
    /// A call of a function tool.
    FunctionCall {
        /// `fc_...`.
        id: String,
        /// `call_...`, what the `function_call_output` of the next turn refers to.
        call_id: String,
        /// The function.
        name: String,
        /// The arguments, a string of JSON.
        arguments: String,
        /// `in_progress`, `completed` or `incomplete`.
        status: ResponseStatus,
    },
    /// A reasoning model's reasoning.
    Reasoning {
        /// `rs_...`.
        id: String,
        /// Always empty: no summaries are made.
        summary: Vec<Value>,
        /// `reasoning_text` parts.
        content: Vec<ContentPartOut>,
        /// `in_progress`, `completed` or `incomplete`.
        status: ResponseStatus,
    },
}

impl OutputItem {
    /// The item's id.
    pub fn id(&self) -> &str {
        match self {
            OutputItem::Message { id, .. }
            | OutputItem::FunctionCall { id, .. }
            | OutputItem::Reasoning { id, .. } => id,
        }
    }
}

/// A content part of an output item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPartOut {
    /// Text of a message.
    OutputText {
        /// The text.
        text: String,
        /// Always empty.
        annotations: Vec<Value>,
    },
    /// Text of reasoning.
    ReasoningText {
        /// The text.
        text: String,
    },
}

impl ContentPartOut {
    /// The part's text.
    pub fn text_mut(&mut self) -> &mut String {
        match self {
            ContentPartOut::OutputText { text, .. } | ContentPartOut::ReasoningText { text } => {
                text
            }
        }
    }
}

/// A response's `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseUsage {
    /// Tokens of the prompt.
    pub input_tokens: u32,
    /// Details of the prompt's tokens.
    pub input_tokens_details: InputTokensDetails,
    /// Tokens generated.
    pub output_tokens: u32,
    /// Details of the generated tokens.
    pub output_tokens_details: OutputTokensDetails,
    /// The sum of both.
    pub total_tokens: u32,
}

/// `usage.input_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    /// Prompt tokens whose keys and values were reused from earlier requests (prefix reuse).
    pub cached_tokens: u32,
    /// Always 0.
    pub cache_write_tokens: u32,
}

/// `usage.output_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    /// Always 0: reasoning tokens are counted in `output_tokens`.
    pub reasoning_tokens: u32,
}

impl ResponseUsage {
    /// Usage of a prompt and an output; the total is their sum.
    pub fn new(input_tokens: u32, output_tokens: u32) -> ResponseUsage {
        ResponseUsage {
            input_tokens,
            input_tokens_details: InputTokensDetails::default(),
            output_tokens,
            output_tokens_details: OutputTokensDetails::default(),
            total_tokens: input_tokens.saturating_add(output_tokens),
        }
    }
}

impl From<super::Usage> for ResponseUsage {
    /// The Responses API's shape of a completion's usage.
    fn from(usage: super::Usage) -> ResponseUsage {
        let mut out = ResponseUsage::new(usage.prompt_tokens, usage.completion_tokens);
        out.input_tokens_details.cached_tokens = usage.cached_tokens();
        out
    }
}

/// One server-sent event of a streamed response, without its `sequence_number` (see
/// [`SequencedEvent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    /// The response was accepted (status `in_progress`, no output).
    #[serde(rename = "response.created")]
    Created {
        /// The response so far.
        response: Box<ResponseObject>,
    },
    /// Generation began.
    #[serde(rename = "response.in_progress")]
    InProgress {
        /// The response so far.
        response: Box<ResponseObject>,
    },
    /// The response finished normally.
    #[serde(rename = "response.completed")]
    Completed {
        /// The whole response.
        response: Box<ResponseObject>,
    },
    /// The response was cut short.
    #[serde(rename = "response.incomplete")]
    Incomplete {
        /// The whole response.
        response: Box<ResponseObject>,
    },
    /// Generation failed.
    #[serde(rename = "response.failed")]
    Failed {
        /// The response, with `error`.
        response: Box<ResponseObject>,
    },
    /// An output item began.
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        /// Its index in `output`.
        output_index: usize,
        /// The item, empty so far.
        item: OutputItem,
    },
    /// An output item ended.
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        /// Its index in `output`.
        output_index: usize,
        /// The whole item.
        item: OutputItem,
    },
    /// A content part began.
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        /// The item's id.
        item_id: String,
        /// The item's index in `output`.
        output_index: usize,
        /// The part's index in the item's `content`.
        content_index: usize,
        /// The part, empty so far.
        part: ContentPartOut,
    },
    /// A content part ended.
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        /// The item's id.
        item_id: String,
        /// The item's index in `output`.
        output_index: usize,
        /// The part's index in the item's `content`.
        content_index: usize,
        /// The whole part.
        part: ContentPartOut,
    },
    /// More text of a message.
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        /// The message's id.
        item_id: String,
        /// The message's index in `output`.
        output_index: usize,
        /// The part's index.
        content_index: usize,
        /// The new text.
        delta: String,
        /// Always empty.
        logprobs: Vec<Value>,
    },
    /// A message's text is whole.
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        /// The message's id.
        item_id: String,
        /// The message's index in `output`.
        output_index: usize,
        /// The part's index.
        content_index: usize,
        /// The whole text.
        text: String,
        /// Always empty.
        logprobs: Vec<Value>,
    },
    /// More reasoning.
    #[serde(rename = "response.reasoning_text.delta")]
    ReasoningTextDelta {
        /// The reasoning item's id.
        item_id: String,
        /// Its index in `output`.
        output_index: usize,
        /// The part's index.
        content_index: usize,
        /// The new text.
        delta: String,
    },
    /// The reasoning is whole.
    #[serde(rename = "response.reasoning_text.done")]
    ReasoningTextDone {
        /// The reasoning item's id.
        item_id: String,
        /// Its index in `output`.
        output_index: usize,
        /// The part's index.
        content_index: usize,
        /// The whole text.
        text: String,
    },
    /// More of a call's arguments.
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        /// The call item's id.
        item_id: String,
        /// Its index in `output`.
        output_index: usize,
        /// The new text.
        delta: String,
    },
    /// A call's arguments are whole.
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        /// The call item's id.
        item_id: String,
        /// Its index in `output`.
        output_index: usize,
        /// The function's name.
        name: String,
        /// The whole arguments.
        arguments: String,
    },
}

/// A [`StreamEvent`] with its place in the stream, as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequencedEvent {
    /// The event.
    #[serde(flatten)]
    pub event: StreamEvent,
    /// 0 for the first event of the stream, then one more per event.
    pub sequence_number: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::parse_json;
    use serde_json::json;

    fn request(body: Value) -> ResponsesRequest {
        parse_json(body.to_string().as_bytes()).unwrap()
    }

    fn messages(input: Value) -> Vec<Message> {
        request(json!({"input": input})).messages().unwrap()
    }

    fn error_param(body: Value) -> String {
        let req = request(body);
        let e = req
            .messages()
            .map(drop)
            .and(req.function_tools().map(drop))
            .and(req.tool_choice().map(drop))
            .and(req.check_supported())
            .unwrap_err();
        e.param_name().unwrap_or_default().to_owned()
    }

    #[test]
    fn input_items_become_the_conversation() {
        let m = messages(json!("Hi"));
        assert_eq!((m.len(), &m[0].role), (1, &Role::User));
        let m = messages(json!([
            {"type": "message", "role": "developer", "content": "Be kind."},
            {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"x\":1}"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
        ]));
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["developer", "user", "assistant", "tool", "tool"]);
        assert_eq!(m[1].content.as_ref().unwrap().text(), "a\nb");
        // Calls after an assistant message are its tool calls.
        assert_eq!(m[2].content.as_ref().unwrap().text(), "Checking.");
        let calls = m[2].tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].id.as_deref(), Some("c2"));
        assert_eq!(calls[1].function.arguments, json!("{\"x\":1}"));
        // Outputs name their call's function.
        assert_eq!(
            (m[3].tool_call_id.as_deref(), m[3].name.as_deref()),
            (Some("c2"), Some("g"))
        );
        assert_eq!(m[3].content.as_ref().unwrap().text(), "two");
        assert_eq!(m[4].name.as_deref(), Some("f"));
        // A call with no assistant message before it opens one with no content.
        let m = messages(json!([
            {"role": "user", "content": "q"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ]));
        assert_eq!(m[1].role, Role::Assistant);
        assert_eq!(m[1].content, None);
        // Instructions come first.
        let m = request(json!({"input": "q", "instructions": "sys"}))
            .messages()
            .unwrap();
        assert_eq!(
            (&m[0].role, m[0].content.as_ref().unwrap().text()),
            (&Role::System, "sys".into())
        );
    }

    #[test]
    fn bad_items_name_their_path() {
        for (body, param) in [
            (
                json!({"input": [{"role": "user", "content": "x"}, 3]}),
                "input[1]",
            ),
            (json!({"input": [{"content": "x"}]}), "input[0].type"),
            (json!({"input": [{"type": 5}]}), "input[0].type"),
            (json!({"input": [{"role": "user"}]}), "input[0].content"),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}),
                "input[0].content[0].text",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}),
                "input[0].content[0].type",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "weird"}]}]}),
                "input[0].content[0].type",
            ),
            (
                json!({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}),
                "input[0].arguments",
            ),
            (
                json!({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                              {"type": "function_call_output", "call_id": "c", "output": 3}]}),
                "input[1].output",
            ),
            (json!({"input": "x", "tools": ["f"]}), "tools[0]"),
            (
                json!({"input": "x", "tools": [{"name": "f"}]}),
                "tools[0].type",
            ),
            (
                json!({"input": "x", "tool_choice": {"type": "function"}}),
                "tool_choice.name",
            ),
            (json!({"input": "x", "tool_choice": 3}), "tool_choice"),
            (
                json!({"input": "x", "tool_choice": {"type": "allowed_tools", "mode": "sometimes", "tools": []}}),
                "tool_choice.mode",
            ),
            (
                json!({"input": "x", "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "mcp"}]}}),
                "tool_choice.tools[0].type",
            ),
            (json!({"input": "x", "prompt": {"id": "p"}}), "prompt"),
        ] {
            assert_eq!(error_param(body.clone()), param, "{body}");
        }
    }

    #[test]
    fn tools_and_tool_choice_read_into_the_chat_types() {
        let req = request(json!({"input": "x",
            "tools": [{"type": "function", "name": "f", "description": "d", "strict": true,
                       "parameters": {"type": "object"}}],
            "tool_choice": {"type": "allowed_tools", "mode": "required",
                            "tools": [{"type": "function", "name": "f"}]}}));
        let tools = req.function_tools().unwrap();
        assert_eq!(tools[0].function.name, "f");
        assert_eq!(tools[0].function.description.as_deref(), Some("d"));
        assert_eq!(tools[0].function.extra["strict"], json!(true));
        assert_eq!(
            req.tool_choice().unwrap(),
            Some(ToolChoice::AllowedTools {
                mode: AllowedToolsMode::Required,
                tools: vec!["f".into()]
            })
        );
        for (choice, expected) in [
            (json!("auto"), ToolChoice::Auto),
            (json!("none"), ToolChoice::None),
            (json!("required"), ToolChoice::Required),
            (
                json!({"type": "function", "name": "f"}),
                ToolChoice::Function("f".into()),
            ),
        ] {
            let req = request(json!({"input": "x", "tool_choice": choice}));
            assert_eq!(req.tool_choice().unwrap(), Some(expected));
        }
    }
}
