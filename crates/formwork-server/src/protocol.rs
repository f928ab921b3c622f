//! OpenAI's HTTP API as clients send and receive it: serde types for requests and responses.
//!
//! Requests: [`ChatCompletionRequest`] (`POST /v1/chat/completions`) and
//! [`CompletionRequest`] (`POST /v1/completions`), with OpenAI's fields, the sampling
//! extras vLLM popularized (`top_k`, `min_p`, `repetition_penalty`, `ignore_eos`) and
//! vLLM's structure fields (`guided_json`, `guided_regex`, `guided_choice`). Unknown
//! fields are ignored, as OpenAI's own server does; a known field of the wrong type is
//! rejected by [`JsonBody`](crate::error::JsonBody) with a message naming it.
//! Deserialization checks types only; [`ChatCompletionRequest::validate`] checks what
//! the types cannot (roles and their fields, image parts, ranges live in
//! [`options`](crate::options)).
//!
//! Responses: [`ChatCompletion`] and its streamed [`ChatCompletionChunk`]s,
//! [`Completion`] and [`CompletionChunk`], [`ModelList`], with OpenAI's field names
//! and `object` values. [`ChatChunkFactory`] and [`CompletionChunkFactory`] stamp the
//! id, `created` and model a stream's chunks share.
//!
//! ```
//! use formwork_server::error::parse_json;
//! use formwork_server::protocol::{ChatCompletionRequest, MessageContent};
//!
//! let req: ChatCompletionRequest = parse_json(br#"{
//!     "model": "smollm2",
//!     "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
//!     "stop": "\n"
//! }"#).unwrap();
//! req.validate().unwrap();
//! assert_eq!(req.messages[0].content.as_ref().map(MessageContent::text).as_deref(), Some("Hi"));
//! ```

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// The model to use; `None` means the served model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The most tokens to generate (OpenAI's older name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The most tokens to generate (OpenAI's newer name; wins over `max_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// How many choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Strings that end generation (not included in the output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Seed of the sampler, for reproducible output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Penalty on tokens already present, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Penalty proportional to how often a token appeared, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// Token id (as a decimal string) to a bias added to its logit, -100 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map<String, Value>>,
    /// Return the log-probability of each generated token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// With `logprobs`, also return this many most likely alternatives per token (0 to 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Options of a streamed answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// OpenAI's structured output: `text`, `json_object` or `json_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDefinition>>,
    /// Whether and which tool the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may make several tool calls in one turn (OpenAI's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// An end-user id, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Free-form key-value pairs; the key `structure` carries Formwork's structure
    /// (see [`structure`](crate::structure)), as an object or a string of JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Keep only the `top_k` most likely tokens; 0 or -1 disables it (vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i32>,
    /// Drop tokens less likely than `min_p` times the most likely one (vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// Multiplicative penalty on tokens already present; 1 disables it (vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    /// Keep generating past the end-of-sequence token (vLLM; for benchmarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// vLLM: the output follows this JSON Schema (an object, or a string of JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_json: Option<Value>,
    /// vLLM: the output matches this regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_regex: Option<String>,
    /// vLLM: the output is one of these strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_choice: Option<Value>,
    /// vLLM: a context-free grammar; not supported, and refused rather than ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_grammar: Option<Value>,
    /// vLLM: extra variables for the chat template (`{"enable_thinking": false}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template_kwargs: Option<Map<String, Value>>,
}

impl ChatCompletionRequest {
    /// Checks the conversation beyond its types: see [`validate_messages`]. Sampling
    /// fields are checked by [`options`](crate::options), structure fields by
    /// [`structure`](crate::structure), tools by [`tools`](crate::tools).
    pub fn validate(&self) -> Result<(), ApiError> {
        validate_messages(&self.messages)
    }
}

/// The body of `POST /v1/completions` (a raw prompt, no chat template).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The prompt: a string, or an array holding one string.
    pub prompt: Prompt,
    /// The model to use; `None` means the served model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// How many choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Strings that end generation (not included in the output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Seed of the sampler, for reproducible output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Penalty on tokens already present, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Penalty proportional to how often a token appeared, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// Token id (as a decimal string) to a bias added to its logit, -100 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map<String, Value>>,
    /// Return the log-probabilities of the chosen token and this many alternatives (0 to 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Echo the prompt before the completion; not supported (`true` is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Text after the completion (insertion); not supported (a non-empty one is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Generate this many and return the best `n`; only `best_of == n` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of: Option<u32>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Options of a streamed answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Structured output as in chat (`json_object`, `json_schema`), as vLLM accepts it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// An end-user id, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Free-form key-value pairs; the key `structure` carries Formwork's structure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Keep only the `top_k` most likely tokens; 0 or -1 disables it (vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i32>,
    /// Drop tokens less likely than `min_p` times the most likely one (vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// Multiplicative penalty on tokens already present; 1 disables it (vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    /// Keep generating past the end-of-sequence token (vLLM; for benchmarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// vLLM: the output follows this JSON Schema (an object, or a string of JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_json: Option<Value>,
    /// vLLM: the output matches this regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_regex: Option<String>,
    /// vLLM: the output is one of these strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_choice: Option<Value>,
    /// vLLM: a context-free grammar; not supported, and refused rather than ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_grammar: Option<Value>,
}

/// A completion prompt: a string, or an array (of which one string is supported).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    Text(String),
    /// OpenAI's batch or token-id forms; only an array of one string is accepted.
    Array(Vec<Value>),
}

impl Default for Prompt {
    fn default() -> Prompt {
        Prompt::Text(String::new())
    }
}

impl Prompt {
    /// The prompt's text, or a 400 for the forms this server does not accept
    /// (several prompts, token ids).
    pub fn text(&self) -> Result<&str, ApiError> {
        let unsupported = |what: &str| {
            ApiError::invalid_request(format!(
                "{what} are not supported; send one prompt string per request"
            ))
            .param("prompt")
        };
        match self {
            Prompt::Text(s) => Ok(s),
            Prompt::Array(items) => match items.as_slice() {
                [Value::String(s)] => Ok(s),
                [] => Err(
                    ApiError::invalid_request("`prompt` must not be an empty array")
                        .param("prompt"),
                ),
                items if items.iter().all(Value::is_string) => Err(unsupported("Batched prompts")),
                _ => Err(unsupported("Token-id prompts")),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Prompt, D::Error> {
        struct PromptVisitor;
        impl<'de> Visitor<'de> for PromptVisitor {
            type Value = Prompt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of one string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Prompt, E> {
                Ok(Prompt::Text(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Prompt, E> {
                Ok(Prompt::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompt, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Prompt::Array(items))
            }
        }
        d.deserialize_any(PromptVisitor)
    }
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stop, D::Error> {
        struct StopVisitor;
        impl<'de> Visitor<'de> for StopVisitor {
            type Value = Stop;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Stop, E> {
                Ok(Stop::One(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Stop, E> {
                Ok(Stop::One(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stop, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(Stop::Many(items))
            }
        }
        d.deserialize_any(StopVisitor)
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the token usage (and empty `choices`) before `[DONE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

/// `response_format`, as sent; [`structure`](crate::structure) checks its `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// With `json_schema`: the schema and its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat>,
}

/// The `json_schema` member of a `response_format`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// The schema's name (OpenAI requires it; Formwork does not use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the schema is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema the output must follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// OpenAI's strict mode; Formwork always enforces the schema, so it changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// Instructions for the model.
    System,
    /// Instructions from the application developer (OpenAI's newer name for system).
    Developer,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
}

impl ChatRole {
    /// The role's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::Developer => "developer",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
            ChatRole::Tool => "tool",
        }
    }
}

/// One message of the conversation.
///
/// One flat struct for every role (rather than an enum tagged by `role`) so that a
/// type error deep inside keeps its full path; [`ChatMessage::validate`] checks the
/// fields each role needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: ChatRole,
    /// What it says; may be `null` on an assistant turn that only calls tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    /// The author's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tool calls an assistant turn made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For a `tool` message, the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with text content.
    pub fn new(role: ChatRole, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: Some(MessageContent::Text(content.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
        }
    }

    /// Checks what the types cannot: content where the role needs it, text-only
    /// content parts, a `tool_call_id` on tool results. `index` is the message's
    /// position, for the error's `param`.
    pub fn validate(&self, index: usize) -> Result<(), ApiError> {
        let at = |field: &str| format!("messages[{index}].{field}");
        if let Some(content) = &self.content {
            content.validate(&at("content"))?;
        }
        match self.role {
            ChatRole::Assistant => {
                if self.content.is_none() && self.tool_calls.as_ref().is_none_or(Vec::is_empty) {
                    return Err(ApiError::invalid_request(format!(
                        "`messages[{index}]` is an assistant message with neither `content` nor `tool_calls`"
                    ))
                    .param(at("content")));
                }
                for (i, call) in self.tool_calls.iter().flatten().enumerate() {
                    call.validate(&at(&format!("tool_calls[{i}]")))?;
                }
            }
            ChatRole::Tool => {
                if self.tool_call_id.is_none() {
                    return Err(ApiError::invalid_request(format!(
                        "`messages[{index}]` is a tool message without `tool_call_id`"
                    ))
                    .param(at("tool_call_id")));
                }
                self.require_content(index)?;
            }
            ChatRole::System | ChatRole::Developer | ChatRole::User => {
                self.require_content(index)?;
            }
        }
        Ok(())
    }

    fn require_content(&self, index: usize) -> Result<(), ApiError> {
        if self.content.is_none() {
            return Err(ApiError::invalid_request(format!(
                "`messages[{index}]` ({} message) needs `content`",
                self.role.as_str()
            ))
            .param(format!("messages[{index}].content")));
        }
        Ok(())
    }

    /// The message as the chat template sees it.
    pub fn to_template(&self) -> formwork_template::Message {
        use formwork_template::{Content, ContentPart, Message, Role};
        let role = match self.role {
            ChatRole::System => Role::System,
            ChatRole::Developer => Role::Developer,
            ChatRole::User => Role::User,
            ChatRole::Assistant => Role::Assistant,
            ChatRole::Tool => Role::Tool,
        };
        let content = self.content.as_ref().map(|c| match c {
            MessageContent::Text(s) => Content::Text(s.clone()),
            MessageContent::Parts(parts) => Content::Parts(
                parts
                    .iter()
                    .map(|p| ContentPart::text(p.text.clone().unwrap_or_default()))
                    .collect(),
            ),
        });
        let tool_calls = self.tool_calls.as_ref().map(|calls| {
            calls
                .iter()
                .map(|c| {
                    formwork_template::ToolCall::function(
                        c.id.clone(),
                        c.function.name.clone(),
                        Value::String(c.function.arguments.clone()),
                    )
                })
                .collect()
        });
        let mut message = Message::new(role, Content::Text(String::new()));
        message.content = content;
        message.name = self.name.clone();
        message.tool_calls = tool_calls;
        message.tool_call_id = self.tool_call_id.clone();
        message
    }
}

/// Validates a whole conversation: at least one message, each valid for its role.
pub fn validate_messages(messages: &[ChatMessage]) -> Result<(), ApiError> {
    if messages.is_empty() {
        return Err(
            ApiError::invalid_request("`messages` must hold at least one message")
                .param("messages"),
        );
    }
    messages
        .iter()
        .enumerate()
        .try_for_each(|(i, m)| m.validate(i))
}

/// A message's content: a string, or an array of content parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed parts; only `text` parts are accepted by [`MessageContent::validate`].
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text: the string itself, or the text parts joined with `"\n"`.
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(s) => s.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Refuses non-text parts with a 400 saying what is unsupported; `param` is the
    /// content's path (`messages[0].content`).
    pub fn validate(&self, param: &str) -> Result<(), ApiError> {
        let MessageContent::Parts(parts) = self else {
            return Ok(());
        };
        for (i, part) in parts.iter().enumerate() {
            let at = format!("{param}[{i}]");
            let what = match part.kind.as_str() {
                "text" => {
                    if part.text.is_none() {
                        return Err(ApiError::invalid_request(format!(
                            "`{at}` is a text part without `text`"
                        ))
                        .param(format!("{at}.text")));
                    }
                    continue;
                }
                "image_url" | "input_image" | "image" => "Image",
                "input_audio" | "audio" => "Audio",
                "file" | "input_file" => "File",
                _ => {
                    return Err(ApiError::invalid_request(format!(
                        "`{at}` has the unknown content part type `{}`; only `text` parts are supported",
                        part.kind
                    ))
                    .param(format!("{at}.type")));
                }
            };
            return Err(ApiError::invalid_request(format!(
                "{what} content is not supported: `{at}` is a part of type `{}`; this server's models read text only",
                part.kind
            ))
            .param(format!("{at}.type")));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MessageContent, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = MessageContent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MessageContent, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(MessageContent::Parts(parts))
            }
        }
        d.deserialize_any(ContentVisitor)
    }
}

/// One part of a multi-part content (`{"type": "text", "text": "..."}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// The part's type: `text`, `image_url`...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> ContentPart {
        ContentPart {
            kind: "text".to_owned(),
            text: Some(text.into()),
        }
    }
}

/// The type of a tool or tool call; only `function` exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolType {
    /// A function tool.
    #[default]
    Function,
}

/// A function the model may call (an element of `tools`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Always `function`.
    #[serde(rename = "type", default)]
    pub kind: ToolType,
    /// The function.
    pub function: FunctionDefinition,
}

impl ToolDefinition {
    /// A function tool.
    pub fn function(name: impl Into<String>, parameters: Option<Value>) -> ToolDefinition {
        ToolDefinition {
            kind: ToolType::Function,
            function: FunctionDefinition {
                name: name.into(),
                description: None,
                parameters,
                strict: None,
            },
        }
    }

    /// The tool as the chat template sees it.
    pub fn to_template(&self) -> formwork_template::Tool {
        let mut tool = formwork_template::Tool::function(
            self.function.name.clone(),
            self.function.description.clone(),
            self.function.parameters.clone(),
        );
        if let Some(strict) = self.function.strict {
            tool.function
                .extra
                .insert("strict".to_owned(), Value::Bool(strict));
        }
        tool
    }
}

/// The declaration of a function tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// The function's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters, as a JSON Schema; none means no parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// OpenAI's strict mode; Formwork always enforces the schema of a required call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// `"none"`: the model does not call tools.
    None,
    /// `"auto"`: the model decides.
    Auto,
    /// `"required"`: the model calls one or more tools.
    Required,
    /// `{"type": "function", "function": {"name": ...}}`: the model calls this function.
    Function(String),
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::None => s.serialize_str("none"),
            ToolChoice::Auto => s.serialize_str("auto"),
            ToolChoice::Required => s.serialize_str("required"),
            ToolChoice::Function(name) => serde_json::json!({
                "type": "function", "function": {"name": name}
            })
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ToolChoice, D::Error> {
        const EXPECTED: &str = r#"expected "none", "auto", "required" or {"type": "function", "function": {"name": "..."}}"#;
        let value = Value::deserialize(d)?;
        match &value {
            Value::String(s) => match s.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                other => Err(de::Error::custom(format!(
                    "unknown tool_choice `{other}`, {EXPECTED}"
                ))),
            },
            Value::Object(obj) => {
                let kind = obj.get("type").and_then(Value::as_str);
                let name = obj
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str);
                match (kind, name) {
                    (Some("function"), Some(name)) => Ok(ToolChoice::Function(name.to_owned())),
                    _ => Err(de::Error::custom(format!(
                        "invalid tool_choice {value}, {EXPECTED}"
                    ))),
                }
            }
            _ => Err(de::Error::custom(format!(
                "invalid tool_choice {value}, {EXPECTED}"
            ))),
        }
    }
}

/// A tool call: made by the model in a response, or replayed in an assistant message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (`call_...`), which the tool result refers to.
    #[serde(default)]
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default)]
    pub kind: ToolType,
    /// The function called.
    pub function: FunctionCall,
}

impl ToolCall {
    fn validate(&self, param: &str) -> Result<(), ApiError> {
        if self.function.name.is_empty() {
            return Err(ApiError::invalid_request(format!(
                "`{param}.function.name` must not be empty"
            ))
            .param(format!("{param}.function.name")));
        }
        Ok(())
    }
}

/// The function of a [`ToolCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// Its arguments as a string of JSON. A request may also send them as a JSON
    /// object (Hugging Face's habit); they are read into their JSON text.
    #[serde(default, deserialize_with = "arguments_text")]
    pub arguments: String,
}

fn arguments_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Null => Ok(String::new()),
        v @ Value::Object(_) => Ok(v.to_string()),
        v => Err(de::Error::custom(format!(
            "invalid arguments {v}, expected a string of JSON or an object"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its answer, or a stop string was met.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
    /// The answer is tool calls.
    ToolCalls,
    /// The answer was cut by a content filter.
    ContentFilter,
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated, over all choices.
    pub completion_tokens: u32,
    /// The sum of both.
    pub total_tokens: u32,
}

impl Usage {
    /// Usage of a prompt and a completion; the total is their sum.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// The response of a non-streamed chat completion (`object: "chat.completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix time in seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// A fingerprint of the backend configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// The choices, `n` of them.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

impl ChatCompletion {
    /// A completion with a fresh id and the current time.
    pub fn new(model: impl Into<String>, choices: Vec<ChatChoice>, usage: Usage) -> ChatCompletion {
        ChatCompletion {
            id: crate::id::random_id("chatcmpl-"),
            object: "chat.completion".to_owned(),
            created: crate::id::unix_time(),
            model: model.into(),
            system_fingerprint: None,
            choices,
            usage,
        }
    }
}

/// One choice of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// The choice's position, 0 to n-1.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// Log-probabilities of the answer's tokens, if asked for (`null` otherwise).
    pub logprobs: Option<ChatLogprobs>,
    /// Why the choice ended.
    pub finish_reason: FinishReason,
}

/// The model's answer in a [`ChatChoice`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: ChatRole,
    /// The text; `null` when the answer is only tool calls.
    pub content: Option<String>,
    /// The tool calls, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl AssistantMessage {
    /// A text answer.
    pub fn text(content: impl Into<String>) -> AssistantMessage {
        AssistantMessage {
            role: ChatRole::Assistant,
            content: Some(content.into()),
            tool_calls: Vec::new(),
        }
    }

    /// An answer of tool calls, with optional text before them.
    pub fn tool_calls(content: Option<String>, tool_calls: Vec<ToolCall>) -> AssistantMessage {
        AssistantMessage {
            role: ChatRole::Assistant,
            content,
            tool_calls,
        }
    }
}

/// A streamed piece of a chat completion (`object: "chat.completion.chunk"`).
///
/// A stream sends, per choice, a first chunk whose delta carries the role, then
/// content or tool-call deltas, then a chunk with `finish_reason`; with
/// `stream_options.include_usage`, a last chunk with empty `choices` and the usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The same `chatcmpl-...` id for every chunk of a stream.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Unix time in seconds, the same for every chunk.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// A fingerprint of the backend configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// The choices this chunk advances (empty in the usage chunk).
    pub choices: Vec<ChatChunkChoice>,
    /// Token counts; only in the usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice of a [`ChatCompletionChunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice {
    /// The choice's position.
    pub index: u32,
    /// What this chunk adds.
    pub delta: ChatDelta,
    /// Log-probabilities of this chunk's tokens, if asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// Set on the choice's last chunk.
    pub finish_reason: Option<FinishReason>,
}

/// What a chunk adds to a choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    /// `assistant`, in the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<ChatRole>,
    /// More text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Pieces of tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A piece of a streamed tool call.
///
/// The first piece of a call carries `index`, `id`, `type` and the function's name
/// with `arguments: ""`; later pieces carry only `index` and a fragment of the arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the choice this piece belongs to, from 0.
    pub index: u32,
    /// The call's id, in its first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, in its first piece.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ToolType>,
    /// The function's name and a fragment of its arguments.
    pub function: FunctionCallDelta,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// The function's name, in the call's first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fragment of the arguments' JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Makes the chunks of one chat stream: they share an id, a `created` time and a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatChunkFactory {
    /// `chatcmpl-...`.
    pub id: String,
    /// Unix time in seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// A fingerprint of the backend configuration.
    pub system_fingerprint: Option<String>,
}

impl ChatChunkFactory {
    /// A factory with a fresh id and the current time.
    pub fn new(model: impl Into<String>) -> ChatChunkFactory {
        ChatChunkFactory {
            id: crate::id::random_id("chatcmpl-"),
            created: crate::id::unix_time(),
            model: model.into(),
            system_fingerprint: None,
        }
    }

    /// A chunk advancing one choice.
    pub fn chunk(
        &self,
        index: u32,
        delta: ChatDelta,
        logprobs: Option<ChatLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> ChatCompletionChunk {
        self.with_choices(vec![ChatChunkChoice {
            index,
            delta,
            logprobs,
            finish_reason,
        }])
    }

    /// The first chunk of a choice: role `assistant` and empty content.
    pub fn role(&self, index: u32) -> ChatCompletionChunk {
        let delta = ChatDelta {
            role: Some(ChatRole::Assistant),
            content: Some(String::new()),
            tool_calls: None,
        };
        self.chunk(index, delta, None, None)
    }

    /// The first chunk of a choice known to be tool calls (a required call): role
    /// `assistant` and no content, so clients that accumulate the stream end with
    /// `content: null`, as for a non-streamed call.
    pub fn role_for_tool_calls(&self, index: u32) -> ChatCompletionChunk {
        let delta = ChatDelta {
            role: Some(ChatRole::Assistant),
            ..ChatDelta::default()
        };
        self.chunk(index, delta, None, None)
    }

    /// A chunk of text.
    pub fn content(
        &self,
        index: u32,
        text: impl Into<String>,
        logprobs: Option<ChatLogprobs>,
    ) -> ChatCompletionChunk {
        let delta = ChatDelta {
            content: Some(text.into()),
            ..ChatDelta::default()
        };
        self.chunk(index, delta, logprobs, None)
    }

    /// A chunk of tool-call pieces.
    pub fn tool_calls(&self, index: u32, deltas: Vec<ToolCallDelta>) -> ChatCompletionChunk {
        let delta = ChatDelta {
            tool_calls: Some(deltas),
            ..ChatDelta::default()
        };
        self.chunk(index, delta, None, None)
    }

    /// The last chunk of a choice: an empty delta and the finish reason.
    pub fn finish(&self, index: u32, reason: FinishReason) -> ChatCompletionChunk {
        self.chunk(index, ChatDelta::default(), None, Some(reason))
    }

    /// The usage chunk: no choices.
    pub fn usage(&self, usage: Usage) -> ChatCompletionChunk {
        ChatCompletionChunk {
            usage: Some(usage),
            ..self.with_choices(Vec::new())
        }
    }

    fn with_choices(&self, choices: Vec<ChatChunkChoice>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.system_fingerprint.clone(),
            choices,
            usage: None,
        }
    }
}

/// The log-probability OpenAI sends for a token the model could not have chosen
/// (JSON has no `-Infinity`).
pub const MIN_LOGPROB: f32 = -9999.0;

/// A log-probability safe for JSON: `-inf` and NaN become [`MIN_LOGPROB`].
pub fn finite_logprob(logprob: f32) -> f32 {
    if logprob.is_finite() {
        logprob
    } else {
        MIN_LOGPROB
    }
}

/// Chat log-probabilities: `{"content": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Option<Vec<TokenLogprob>>,
}

/// The log-probability of one generated token, with its most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text (invalid UTF-8 replaced; see `bytes`).
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// The token's bytes.
    pub bytes: Option<Vec<u8>>,
    /// The most likely tokens at this position, `top_logprobs` of them.
    pub top_logprobs: Vec<TopLogprob>,
}

impl TokenLogprob {
    /// The entry of a token given its bytes and log-probability, and the alternatives
    /// as (bytes, log-probability) pairs.
    pub fn new<'a>(
        bytes: &[u8],
        logprob: f32,
        top: impl IntoIterator<Item = (&'a [u8], f32)>,
    ) -> TokenLogprob {
        TokenLogprob {
            token: String::from_utf8_lossy(bytes).into_owned(),
            logprob: finite_logprob(logprob),
            bytes: Some(bytes.to_vec()),
            top_logprobs: top
                .into_iter()
                .map(|(bytes, logprob)| TopLogprob::new(bytes, logprob))
                .collect(),
        }
    }
}

/// One alternative in [`TokenLogprob::top_logprobs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// The token's bytes.
    pub bytes: Option<Vec<u8>>,
}

impl TopLogprob {
    /// The entry of a token given its bytes and log-probability.
    pub fn new(bytes: &[u8], logprob: f32) -> TopLogprob {
        TopLogprob {
            token: String::from_utf8_lossy(bytes).into_owned(),
            logprob: finite_logprob(logprob),
            bytes: Some(bytes.to_vec()),
        }
    }
}

/// Completions log-probabilities, in parallel arrays with one entry per token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    /// The tokens' text.
    pub tokens: Vec<String>,
    /// Their log-probabilities.
    pub token_logprobs: Vec<Option<f32>>,
    /// Per token, the most likely alternatives, token text to log-probability.
    pub top_logprobs: Vec<Option<TopLogprobMap>>,
    /// Per token, its byte offset in the choice's text.
    pub text_offset: Vec<u32>,
}

impl CompletionLogprobs {
    /// Appends a token: its text, log-probability and alternatives; its offset is the
    /// previous token's offset plus that token's text length (in bytes), starting at `start`.
    pub fn push(&mut self, start: u32, token: String, logprob: f32, top: TopLogprobMap) {
        let offset = match (self.text_offset.last(), self.tokens.last()) {
            (Some(&off), Some(prev)) => {
                off.saturating_add(u32::try_from(prev.len()).unwrap_or(u32::MAX))
            }
            _ => start,
        };
        self.tokens.push(token);
        self.token_logprobs.push(Some(finite_logprob(logprob)));
        self.top_logprobs.push(Some(top));
        self.text_offset.push(offset);
    }
}

/// Alternatives of a completions token, serialized as a JSON object
/// `{token: logprob}` in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopLogprobMap(pub Vec<(String, f32)>);

impl Serialize for TopLogprobMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (token, logprob) in &self.0 {
            map.serialize_entry(token, &finite_logprob(*logprob))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TopLogprobMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopLogprobMap, D::Error> {
        let map = Map::<String, Value>::deserialize(d)?;
        Ok(TopLogprobMap(
            map.into_iter()
                .map(|(k, v)| (k, v.as_f64().unwrap_or(f64::from(MIN_LOGPROB)) as f32))
                .collect(),
        ))
    }
}

/// The response of a non-streamed completion (`object: "text_completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// `cmpl-...`.
    pub id: String,
    /// Always `text_completion`.
    pub object: String,
    /// Unix time in seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// A fingerprint of the backend configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// The choices, `n` of them.
    pub choices: Vec<CompletionChoice>,
    /// Token counts; only in the usage chunk of a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl Completion {
    /// A completion with a fresh id and the current time.
    pub fn new(
        model: impl Into<String>,
        choices: Vec<CompletionChoice>,
        usage: Usage,
    ) -> Completion {
        Completion {
            id: crate::id::random_id("cmpl-"),
            object: "text_completion".to_owned(),
            created: crate::id::unix_time(),
            model: model.into(),
            system_fingerprint: None,
            choices,
            usage: Some(usage),
        }
    }
}

/// One choice of a [`Completion`] (or of a streamed chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// The generated text (in a chunk: the new piece).
    pub text: String,
    /// The choice's position.
    pub index: u32,
    /// Log-probabilities, if asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// Why the choice ended (`null` in a chunk before the last).
    pub finish_reason: Option<FinishReason>,
}

/// A streamed piece of a completion: the same shape as a [`Completion`], OpenAI
/// sends `object: "text_completion"` for both.
pub type CompletionChunk = Completion;

/// Makes the chunks of one completions stream: they share an id, a `created` time
/// and a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionChunkFactory {
    /// `cmpl-...`.
    pub id: String,
    /// Unix time in seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// A fingerprint of the backend configuration.
    pub system_fingerprint: Option<String>,
}

impl CompletionChunkFactory {
    /// A factory with a fresh id and the current time.
    pub fn new(model: impl Into<String>) -> CompletionChunkFactory {
        CompletionChunkFactory {
            id: crate::id::random_id("cmpl-"),
            created: crate::id::unix_time(),
            model: model.into(),
            system_fingerprint: None,
        }
    }

    /// A chunk of text (`finish_reason` set on the choice's last one).
    pub fn text(
        &self,
        index: u32,
        text: impl Into<String>,
        logprobs: Option<CompletionLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> CompletionChunk {
        self.with_choices(vec![CompletionChoice {
            text: text.into(),
            index,
            logprobs,
            finish_reason,
        }])
    }

    /// The usage chunk: no choices.
    pub fn usage(&self, usage: Usage) -> CompletionChunk {
        CompletionChunk {
            usage: Some(usage),
            ..self.with_choices(Vec::new())
        }
    }

    fn with_choices(&self, choices: Vec<CompletionChoice>) -> CompletionChunk {
        CompletionChunk {
            id: self.id.clone(),
            object: "text_completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.system_fingerprint.clone(),
            choices,
            usage: None,
        }
    }
}

/// The response of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The served models.
    pub data: Vec<ModelCard>,
}

impl ModelList {
    /// A list of models.
    pub fn new(data: Vec<ModelCard>) -> ModelList {
        ModelList {
            object: "list".to_owned(),
            data,
        }
    }
}

/// One model of a [`ModelList`] (also the response of `GET /v1/models/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The name clients send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix time in seconds (when the server loaded it).
    pub created: u64,
    /// Who serves it.
    pub owned_by: String,
}

impl ModelCard {
    /// A model card owned by `formwork`.
    pub fn new(id: impl Into<String>, created: u64) -> ModelCard {
        ModelCard {
            id: id.into(),
            object: "model".to_owned(),
            created,
            owned_by: "formwork".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::parse_json;
    use serde_json::json;

    fn chat(body: Value) -> Result<ChatCompletionRequest, ApiError> {
        parse_json(body.to_string().as_bytes())
    }

    #[test]
    fn reads_a_full_chat_request() {
        let req = chat(json!({
            "model": "smollm2",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "user", "content": "Weather?", "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "assistant", "tool_calls": [
                    {"id": "call_2", "function": {"name": "weather", "arguments": {"city": "Rome"}}}]}
            ],
            "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0, "top_p": 0.9, "n": 2,
            "stop": ["\n", "END"], "seed": -3, "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "logit_bias": {"42": -100, "7": 5.5}, "logprobs": true, "top_logprobs": 3,
            "stream": true, "stream_options": {"include_usage": true},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
            "tools": [{"type": "function", "function": {"name": "weather", "description": "d",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "parallel_tool_calls": false, "user": "u1", "metadata": {"structure": "{\"type\":\"json_object\"}", "k": "v"},
            "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": false,
            "guided_json": "{\"type\": \"object\"}", "guided_regex": "[a-z]+", "guided_choice": ["a", "b"],
            "chat_template_kwargs": {"enable_thinking": false},
            "some_future_field": {"ignored": true}
        }))
        .unwrap();
        req.validate().unwrap();
        assert_eq!(req.messages.len(), 6);
        assert_eq!(req.messages[1].content.as_ref().unwrap().text(), "a\nb");
        assert_eq!(req.messages[2].name.as_deref(), Some("ann"));
        let calls = req.messages[3].tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
        let calls = req.messages[5].tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.arguments, r#"{"city":"Rome"}"#);
        assert_eq!(calls[0].kind, ToolType::Function);
        assert_eq!(req.stop, Some(Stop::Many(vec!["\n".into(), "END".into()])));
        assert_eq!(req.seed, Some(-3));
        assert_eq!(
            req.tool_choice,
            Some(ToolChoice::Function("weather".into()))
        );
        assert_eq!(req.top_k, Some(40));
        assert_eq!(req.stream_options.unwrap().include_usage, Some(true));
        let rf = req.response_format.unwrap();
        assert_eq!(rf.kind, "json_schema");
        assert_eq!(rf.json_schema.unwrap().strict, Some(true));
    }

    #[test]
    fn content_and_stop_forms() {
        let req =
            chat(json!({"messages": [{"role": "user", "content": "hi"}], "stop": "x"})).unwrap();
        assert_eq!(req.stop.unwrap().to_vec(), vec!["x".to_owned()]);
        assert_eq!(req.model, None);

        let e = chat(json!({"messages": [{"role": "user", "content": 5}]})).unwrap_err();
        assert_eq!(e.param_name(), Some("messages[0].content"));
        assert!(
            e.message()
                .contains("expected a string or an array of content parts"),
            "{e}"
        );
        let e =
            chat(json!({"messages": [{"role": "user", "content": "x"}], "stop": [1]})).unwrap_err();
        assert_eq!(e.param_name(), Some("stop[0]"));
        let e =
            chat(json!({"messages": [{"role": "user", "content": "x"}], "stop": 3})).unwrap_err();
        assert!(
            e.message().contains("a string or an array of strings"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let base = || json!({"messages": [{"role": "user", "content": "x"}]});
        for (field, value, param) in [
            ("temperature", json!("hot"), "temperature"),
            ("n", json!(-1), "n"),
            ("max_tokens", json!(1.5), "max_tokens"),
            ("logprobs", json!(3), "logprobs"),
            ("top_logprobs", json!("3"), "top_logprobs"),
            ("stream", json!("yes"), "stream"),
            (
                "tools",
                json!([{"type": "function", "function": {"name": 3}}]),
                "tools[0].function.name",
            ),
            (
                "tools",
                json!([{"type": "retrieval", "function": {"name": "f"}}]),
                "tools[0].type",
            ),
            ("tools", json!([{"type": "function"}]), "tools[0].function"),
            (
                "response_format",
                json!({"json_schema": {}}),
                "response_format.type",
            ),
            (
                "stream_options",
                json!({"include_usage": 1}),
                "stream_options.include_usage",
            ),
            ("tool_choice", json!("sometimes"), "tool_choice"),
            ("tool_choice", json!({"type": "function"}), "tool_choice"),
            ("seed", json!("42"), "seed"),
            ("metadata", json!("x"), "metadata"),
            ("guided_regex", json!(["a"]), "guided_regex"),
        ] {
            let mut body = base();
            body[field] = value;
            let e = chat(body).unwrap_err();
            assert_eq!(e.param_name(), Some(param), "{field}: {e}");
            assert_eq!(e.status().as_u16(), 400);
        }
        let e = chat(json!({"messages": [{"role": "robot", "content": "x"}]})).unwrap_err();
        assert_eq!(e.param_name(), Some("messages[0].role"));
        assert!(e.message().contains("unknown variant `robot`"), "{e}");
        let e = chat(json!({"messages": [{"content": "x"}]})).unwrap_err();
        assert_eq!(e.param_name(), Some("messages[0].role"));
        let e = chat(json!({"model": "m"})).unwrap_err();
        assert_eq!(e.param_name(), Some("messages"));
    }

    #[test]
    fn validation_by_role() {
        let check = |messages: Value| {
            chat(json!({ "messages": messages }))
                .unwrap()
                .validate()
                .unwrap_err()
        };
        let e = check(json!([]));
        assert_eq!(e.param_name(), Some("messages"));
        let e = check(json!([{"role": "user"}]));
        assert_eq!(e.param_name(), Some("messages[0].content"));
        let e = check(json!([{"role": "user", "content": "a"}, {"role": "tool", "content": "r"}]));
        assert_eq!(e.param_name(), Some("messages[1].tool_call_id"));
        let e = check(json!([{"role": "assistant", "content": null}]));
        assert_eq!(e.param_name(), Some("messages[0].content"));
        let e = check(json!([{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "", "arguments": "{}"}}]}]));
        assert_eq!(
            e.param_name(),
            Some("messages[0].tool_calls[0].function.name")
        );
    }

    #[test]
    fn image_parts_are_refused_clearly() {
        let req = chat(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        ]}]}))
        .unwrap();
        let e = req.validate().unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
        assert_eq!(e.param_name(), Some("messages[0].content[1].type"));
        assert!(
            e.message().starts_with("Image content is not supported"),
            "{e}"
        );

        let req =
            chat(json!({"messages": [{"role": "user", "content": [{"type": "video"}]}]})).unwrap();
        let e = req.validate().unwrap_err();
        assert!(
            e.message().contains("unknown content part type `video`"),
            "{e}"
        );
        let req =
            chat(json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]})).unwrap();
        assert_eq!(
            req.validate().unwrap_err().param_name(),
            Some("messages[0].content[0].text")
        );
    }

    #[test]
    fn tool_choice_round_trips() {
        for (json, choice) in [
            (json!("none"), ToolChoice::None),
            (json!("auto"), ToolChoice::Auto),
            (json!("required"), ToolChoice::Required),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                ToolChoice::Function("f".into()),
            ),
        ] {
            let parsed: ToolChoice = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(parsed, choice);
            assert_eq!(serde_json::to_value(&parsed).unwrap(), json);
        }
    }

    #[test]
    fn completion_prompts() {
        let req: CompletionRequest =
            parse_json(br#"{"prompt": "Once upon", "max_tokens": 5, "logprobs": 2}"#).unwrap();
        assert_eq!(req.prompt.text().unwrap(), "Once upon");
        assert_eq!(req.logprobs, Some(2));
        let req: CompletionRequest = parse_json(br#"{"prompt": ["Once"]}"#).unwrap();
        assert_eq!(req.prompt.text().unwrap(), "Once");
        for (body, needle) in [
            (r#"{"prompt": ["a", "b"]}"#, "Batched prompts"),
            (r#"{"prompt": [1, 2, 3]}"#, "Token-id prompts"),
            (r#"{"prompt": [[1, 2]]}"#, "Token-id prompts"),
            (r#"{"prompt": []}"#, "empty array"),
        ] {
            let req: CompletionRequest = parse_json(body.as_bytes()).unwrap();
            let e = req.prompt.text().unwrap_err();
            assert!(e.message().contains(needle), "{body}: {e}");
            assert_eq!(e.param_name(), Some("prompt"));
        }
        let e = parse_json::<CompletionRequest>(br#"{"prompt": 3}"#).unwrap_err();
        assert_eq!(e.param_name(), Some("prompt"));
        let e = parse_json::<CompletionRequest>(br#"{"model": "m"}"#).unwrap_err();
        assert_eq!(e.param_name(), Some("prompt"));
    }

    #[test]
    fn converts_to_template_types() {
        let req = chat(json!({"messages": [
            {"role": "developer", "content": [{"type": "text", "text": "a"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"}
        ], "tools": [{"type": "function", "function": {"name": "f", "strict": true}}]}))
        .unwrap();
        let msgs: Vec<_> = req.messages.iter().map(ChatMessage::to_template).collect();
        assert_eq!(msgs[0].role, formwork_template::Role::Developer);
        assert_eq!(msgs[0].content.as_ref().unwrap().text(), "a");
        assert_eq!(msgs[1].content, None);
        let call = &msgs[1].tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.id.as_deref(), Some("c1"));
        assert_eq!(call.function.arguments, json!("{\"x\":1}"));
        assert_eq!(msgs[2].tool_call_id.as_deref(), Some("c1"));
        let tool = req.tools.as_ref().unwrap()[0].to_template();
        assert_eq!(tool.function.name, "f");
        assert_eq!(tool.function.extra["strict"], json!(true));
    }

    #[test]
    fn chat_completion_has_openai_shape() {
        let done = ChatCompletion::new(
            "smollm2",
            vec![ChatChoice {
                index: 0,
                message: AssistantMessage::text("Hello"),
                logprobs: None,
                finish_reason: FinishReason::Stop,
            }],
            Usage::new(5, 2),
        );
        let v = serde_json::to_value(&done).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(
            v["choices"],
            json!([{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                    "logprobs": null, "finish_reason": "stop"}])
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
        );
        assert!(v.get("system_fingerprint").is_none());

        let call = ToolCall {
            id: "call_x".into(),
            kind: ToolType::Function,
            function: FunctionCall {
                name: "f".into(),
                arguments: "{}".into(),
            },
        };
        let msg = serde_json::to_value(AssistantMessage::tool_calls(None, vec![call])).unwrap();
        assert_eq!(
            msg,
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        );
    }

    #[test]
    fn chat_chunks_have_openai_shape() {
        let f = ChatChunkFactory::new("m");
        let chunks = [
            f.role(0),
            f.content(0, "Hel", None),
            f.tool_calls(
                0,
                vec![ToolCallDelta {
                    index: 0,
                    id: Some("call_1".into()),
                    kind: Some(ToolType::Function),
                    function: FunctionCallDelta {
                        name: Some("f".into()),
                        arguments: Some(String::new()),
                    },
                }],
            ),
            f.finish(0, FinishReason::ToolCalls),
            f.usage(Usage::new(1, 2)),
        ];
        let v: Vec<Value> = chunks
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        assert!(v.iter().all(|c| c["id"] == v[0]["id"]
            && c["object"] == "chat.completion.chunk"
            && c["created"] == v[0]["created"]
            && c["model"] == "m"));
        assert_eq!(
            v[0]["choices"],
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                    "logprobs": null, "finish_reason": null}])
        );
        assert_eq!(v[1]["choices"][0]["delta"], json!({"content": "Hel"}));
        assert_eq!(
            serde_json::to_value(f.role_for_tool_calls(1)).unwrap()["choices"][0]["delta"],
            json!({"role": "assistant"})
        );
        assert_eq!(
            v[2]["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "f", "arguments": ""}}]})
        );
        assert_eq!(v[3]["choices"][0]["delta"], json!({}));
        assert_eq!(v[3]["choices"][0]["finish_reason"], "tool_calls");
        assert!(v[3].get("usage").is_none());
        assert_eq!(v[4]["choices"], json!([]));
        assert_eq!(v[4]["usage"]["total_tokens"], 3);
        // Our chunks read back.
        let back: ChatCompletionChunk = serde_json::from_value(v[2].clone()).unwrap();
        assert_eq!(back, chunks[2]);
    }

    #[test]
    fn logprobs_have_openai_shape() {
        let lp = ChatLogprobs {
            content: Some(vec![TokenLogprob::new(
                b"Hi",
                -0.25,
                [(&b"Hi"[..], -0.25), (&b"\xff"[..], f32::NEG_INFINITY)],
            )]),
        };
        assert_eq!(
            serde_json::to_value(&lp).unwrap(),
            json!({"content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": [
                {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                {"token": "\u{fffd}", "logprob": -9999.0, "bytes": [255]}]}]})
        );

        let mut lp = CompletionLogprobs::default();
        lp.push(
            0,
            "Hel".into(),
            -0.5,
            TopLogprobMap(vec![("Hel".into(), -0.5), ("He".into(), -1.0)]),
        );
        lp.push(
            0,
            "lo".into(),
            f32::NAN,
            TopLogprobMap(vec![("lo".into(), -0.125)]),
        );
        assert_eq!(
            serde_json::to_value(&lp).unwrap(),
            json!({"tokens": ["Hel", "lo"], "token_logprobs": [-0.5, -9999.0],
                   "top_logprobs": [{"Hel": -0.5, "He": -1.0}, {"lo": -0.125}],
                   "text_offset": [0, 3]})
        );
    }

    #[test]
    fn completion_and_models_have_openai_shape() {
        let c = Completion::new(
            "m",
            vec![CompletionChoice {
                text: "there".into(),
                index: 0,
                logprobs: None,
                finish_reason: Some(FinishReason::Length),
            }],
            Usage::new(2, 1),
        );
        let v = serde_json::to_value(&c).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 3);

        let f = CompletionChunkFactory::new("m");
        let v = serde_json::to_value(f.text(0, "a", None, None)).unwrap();
        assert_eq!(
            v["choices"],
            json!([{"text": "a", "index": 0, "logprobs": null, "finish_reason": null}])
        );
        assert!(v.get("usage").is_none());
        let v = serde_json::to_value(f.usage(Usage::new(1, 1))).unwrap();
        assert_eq!(v["choices"], json!([]));

        let models = ModelList::new(vec![ModelCard::new("smollm2", 1_700_000_000)]);
        assert_eq!(
            serde_json::to_value(&models).unwrap(),
            json!({"object": "list", "data": [
                {"id": "smollm2", "object": "model", "created": 1_700_000_000, "owned_by": "formwork"}]})
        );
    }
}
