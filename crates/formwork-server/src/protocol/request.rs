//! What clients send: the bodies of `POST /v1/chat/completions` and `POST /v1/completions`.
//!
//! [`ChatCompletionRequest`] and [`CompletionRequest`] hold their route's own fields and
//! embed the fields both routes share, declared once: [`SamplingFields`] (OpenAI's
//! sampling and streaming fields, the extras vLLM popularized: `top_k`, `min_p`,
//! `repetition_penalty`, `ignore_eos`, and Formwork's `jump_forward`) and [`StructureFields`] (`response_format`,
//! `metadata`, vLLM's `guided_json`, `guided_regex`, `guided_choice`, `guided_grammar` and
//! `structured_outputs`, llama.cpp's `grammar`).
//! [`options`](crate::options) and [`structure`](crate::structure) read those two
//! structs, whichever route the request came from.
//!
//! A conversation is [`formwork_template`]'s [`Message`]s and [`Tool`]s, the types the
//! chat template renders: the server passes them on as they came (fields they do not
//! model, such as `reasoning_content`, reach the template) and checks with
//! [`validate_messages`] what their types leave open (roles, each role's fields, image
//! parts, tool-call `type` and `arguments`).
//!
//! Unknown fields are ignored, as OpenAI's own server does; a known field of the wrong
//! type is rejected by [`JsonBody`](crate::error::JsonBody) with a message naming it.
//! The shared fields are not embedded with `#[serde(flatten)]`: serde deserializes a
//! flattened struct from members it buffered first, out of `serde_path_to_error`'s
//! sight, so `{"temperature": "hot"}` would lose its `param`. A request's
//! `Deserialize` (written by `request_object!`) instead reads each member straight from
//! the JSON object and hands the ones it does not own to its embedded structs.
//! Serializing does flatten them: the JSON is the flat object OpenAI defines.

use std::fmt;

use formwork_template::{Content, Message, Role, Tool, ToolCall};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Declares a request object: its required members, its optional members (each an
/// `Option`, `null` read as absent), and embedded groups of members (serialized
/// flattened). Its `Deserialize` reads every member directly from the JSON object, so a
/// wrong type keeps its path (see the [module docs](self)); unknown members are skipped.
macro_rules! request_object {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            required { $( $(#[$rdoc:meta])* $req:ident: $rty:ty, )* }
            optional { $( $(#[$odoc:meta])* $opt:ident: $oty:ty, )* }
            groups { $( $(#[$gdoc:meta])* $grp:ident: $gty:ty, )* }
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, ::serde::Serialize)]
        pub struct $name {
            $( $(#[$rdoc])* pub $req: $rty, )*
            $(
                $(#[$odoc])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $opt: Option<$oty>,
            )*
            $( $(#[$gdoc])* #[serde(flatten)] pub $grp: $gty, )*
        }

        impl $name {
            /// Reads the next value into the optional member `key`, or into an embedded
            /// group's; `false` (the value left unread) when `key` is none of them.
            pub(crate) fn read_member<'de, A: ::serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $( stringify!($opt) => self.$opt = map.next_value()?, )*
                    _ => {
                        $( if self.$grp.read_member(key, map)? { return Ok(true); } )*
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                struct ObjectVisitor;
                impl<'de> ::serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let mut out = $name::default();
                        $( let mut $req: Option<$rty> = None; )*
                        while let Some(key) = map.next_key::<String>()? {
                            match key.as_str() {
                                $( stringify!($req) => $req = Some(map.next_value()?), )*
                                key => {
                                    if !out.read_member(key, &mut map)? {
                                        map.next_value::<::serde::de::IgnoredAny>()?;
                                    }
                                }
                            }
                        }
                        $(
                            out.$req = $req
                                .ok_or_else(|| ::serde::de::Error::missing_field(stringify!($req)))?;
                        )*
                        Ok(out)
                    }
                }
                d.deserialize_map(ObjectVisitor)
            }
        }
    };
}

pub(crate) use request_object;

request_object! {
    /// The body of `POST /v1/chat/completions`.
    pub struct ChatCompletionRequest {
        required {
            /// The conversation so far.
            messages: Vec<Message>,
        }
        optional {
            /// The model to use; `None` means the served model.
            model: String,
            /// The most tokens to generate (OpenAI's newer name; wins over `max_tokens`).
            max_completion_tokens: u32,
            /// Return the log-probability of each generated token.
            logprobs: bool,
            /// With `logprobs`, also return this many most likely alternatives per token
            /// (0 to 20).
            top_logprobs: u32,
            /// Functions the model may call.
            tools: Vec<Tool>,
            /// Whether and which tool the model must call.
            tool_choice: ToolChoice,
            /// Whether the model may make several tool calls in one turn (OpenAI's default:
            /// true).
            parallel_tool_calls: bool,
            /// An end-user id, for logs.
            user: String,
            /// vLLM: extra top-level variables for the chat template
            /// (`{"enable_thinking": false}`); `messages`, `tools`, `documents` and
            /// `add_generation_prompt` are refused.
            chat_template_kwargs: Map<String, Value>,
            /// For a reasoning model: most tokens of reasoning before its end tag is forced
            /// (then the answer, constrained as the request says, follows).
            max_reasoning_tokens: u32,
        }
        groups {
            /// The sampling and streaming fields.
            sampling: SamplingFields,
            /// The structure fields.
            structure: StructureFields,
        }
    }
}

impl ChatCompletionRequest {
    /// Checks the conversation beyond its types: see [`validate_messages`]. Sampling
    /// fields are checked by [`options`](crate::options), structure fields by
    /// [`structure`](crate::structure), tools by [`tools`](crate::tools).
    pub fn validate(&self) -> Result<(), ApiError> {
        validate_messages(&self.messages)
    }
}

request_object! {
    /// The body of `POST /v1/completions` (a raw prompt, no chat template).
    pub struct CompletionRequest {
        required {
            /// The prompt: a string, or an array holding one string.
            prompt: Prompt,
        }
        optional {
            /// The model to use; `None` means the served model.
            model: String,
            /// Return the log-probabilities of the chosen token and this many alternatives
            /// (0 to 20).
            logprobs: u32,
            /// Echo the prompt before the completion; not supported (`true` is refused).
            echo: bool,
            /// Text after the completion (insertion); not supported (a non-empty one is
            /// refused).
            suffix: String,
            /// Generate this many and return the best `n`; only `best_of == n` is supported.
            best_of: u32,
            /// An end-user id, for logs.
            user: String,
        }
        groups {
            /// The sampling and streaming fields.
            sampling: SamplingFields,
            /// The structure fields (`response_format` as vLLM accepts it here).
            structure: StructureFields,
        }
    }
}

request_object! {
    /// The sampling and streaming fields both routes share, checked and resolved by
    /// [`GenerationOptions`](crate::options::GenerationOptions).
    pub struct SamplingFields {
        required {}
        optional {
            /// The most tokens to generate (chat's `max_completion_tokens` wins over it).
            max_tokens: u32,
            /// Sampling temperature, 0 to 2; 0 is greedy.
            temperature: f32,
            /// Nucleus sampling: keep the most likely tokens up to this probability mass.
            top_p: f32,
            /// How many choices to generate.
            n: u32,
            /// Strings that end generation (not included in the output).
            stop: Stop,
            /// Seed of the sampler, for reproducible output.
            seed: i64,
            /// Penalty on tokens already present, -2 to 2.
            presence_penalty: f32,
            /// Penalty proportional to how often a token appeared, -2 to 2.
            frequency_penalty: f32,
            /// Token id (as a decimal string) to a bias added to its logit, -100 to 100.
            logit_bias: Map<String, Value>,
            /// Stream the answer as server-sent events.
            stream: bool,
            /// Options of a streamed answer.
            stream_options: StreamOptions,
            /// Keep only the `top_k` most likely tokens; 0 or -1 disables it (vLLM).
            top_k: i32,
            /// Drop tokens less likely than `min_p` times the most likely one (vLLM).
            min_p: f32,
            /// Multiplicative penalty on tokens already present; 1 disables it (vLLM).
            repetition_penalty: f32,
            /// Keep generating past the end-of-sequence token (vLLM; for benchmarks).
            ignore_eos: bool,
            /// Formwork: append text the structure forces without sampling it (jump-forward
            /// decoding); absent: the server's setting (on unless `--no-jump-forward`).
            jump_forward: bool,
            /// Steer a structured reply to end valid near `max_tokens`, and refuse a budget
            /// too small for any valid reply (Formwork; default: the server's setting).
            end_valid: bool,
        }
        groups {}
    }
}

request_object! {
    /// The fields both routes share that ask for structured output, resolved into one
    /// constraint by [`structure`](crate::structure).
    pub struct StructureFields {
        required {}
        optional {
            /// OpenAI's structured output: `text`, `json_object` or `json_schema`.
            response_format: ResponseFormat,
            /// Free-form key-value pairs; the key `structure` carries Formwork's structure
            /// (see [`structure`](crate::structure)), as an object or a string of JSON.
            metadata: Map<String, Value>,
            /// vLLM: the output follows this JSON Schema (an object, or a string of JSON).
            guided_json: Value,
            /// vLLM: the output matches this regex.
            guided_regex: String,
            /// vLLM: the output is one of these strings.
            guided_choice: Value,
            /// vLLM: the output follows this grammar (GBNF when it holds `::=`, else Lark).
            guided_grammar: String,
            /// vLLM: the whitespace allowed between JSON tokens of `guided_json`, a regex.
            guided_whitespace_pattern: String,
            /// vLLM's newer spelling of the `guided_*` fields.
            structured_outputs: StructuredOutputs,
            /// llama.cpp: the output follows this GBNF grammar.
            grammar: String,
        }
        groups {}
    }
}

request_object! {
    /// vLLM's `structured_outputs`: one of its members asks for a structure.
    pub struct StructuredOutputs {
        required {}
        optional {
            /// The output follows this JSON Schema (an object, or a string of JSON).
            json: Value,
            /// The output matches this regex.
            regex: String,
            /// The output is one of these strings.
            choice: Value,
            /// The output follows this grammar (GBNF when it holds `::=`, else Lark).
            grammar: String,
            /// The output is any JSON object.
            json_object: bool,
            /// vLLM's structural tags: not supported, and refused rather than ignored.
            structural_tag: Value,
            /// The whitespace allowed between JSON tokens of `json` and `json_object`, a
            /// regex (default: none).
            whitespace_pattern: String,
            /// No whitespace between JSON tokens: what Formwork does anyway, unless
            /// `whitespace_pattern` asks for some (both at once is a 400).
            disable_any_whitespace: bool,
            /// Objects without `additionalProperties` take no other keys: what Formwork
            /// does anyway; accepted either way.
            disable_additional_properties: bool,
        }
        groups {}
    }
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
    /// With `structural_tag`: the tagged structures (`begin`, `schema`, `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structures: Option<Value>,
    /// With `structural_tag`: the strings that open a structure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Value>,
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
    /// `true` or absent: a keyword Formwork cannot enforce refuses the request (a 400
    /// naming it and its JSON pointer); `false`: such keywords are dropped and listed in
    /// the response's `warnings`.
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
    /// `{"type": "allowed_tools", "allowed_tools": {"mode": "auto" | "required", "tools":
    /// [{"type": "function", "function": {"name": ...}}, ...]}}`: the model may (`auto`)
    /// or must (`required`) call one of these tools; the others stay in the prompt.
    AllowedTools {
        /// `auto` or `required` (never `none`).
        mode: AllowedToolsMode,
        /// The names of the functions that may be called, in order.
        tools: Vec<String>,
    },
}

/// The `mode` of an `allowed_tools` [`ToolChoice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllowedToolsMode {
    /// `auto`: the model may call one of the allowed tools or answer in text.
    Auto,
    /// `required`: the model calls one or more of the allowed tools.
    Required,
}

impl AllowedToolsMode {
    /// Its spelling in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            AllowedToolsMode::Auto => "auto",
            AllowedToolsMode::Required => "required",
        }
    }
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
            ToolChoice::AllowedTools { mode, tools } => serde_json::json!({
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": mode.as_str(),
                    "tools": tools.iter().map(|name| serde_json::json!(
                        {"type": "function", "function": {"name": name}}
                    )).collect::<Vec<_>>(),
                }
            })
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ToolChoice, D::Error> {
        const EXPECTED: &str = r#"expected "none", "auto", "required", {"type": "function", "function": {"name": "..."}} or {"type": "allowed_tools", "allowed_tools": {"mode": "auto" | "required", "tools": [{"type": "function", "function": {"name": "..."}}, ...]}}"#;
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
                    (Some("allowed_tools"), _) => allowed_tools(obj.get("allowed_tools"))
                        .ok_or_else(|| {
                            de::Error::custom(format!("invalid tool_choice {value}, {EXPECTED}"))
                        }),
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

/// The body of an `allowed_tools` tool choice; `None` when it is not of that shape.
fn allowed_tools(body: Option<&Value>) -> Option<ToolChoice> {
    let body = body?.as_object()?;
    let mode = match body.get("mode")?.as_str()? {
        "auto" => AllowedToolsMode::Auto,
        "required" => AllowedToolsMode::Required,
        _ => return None,
    };
    let tools = body
        .get("tools")?
        .as_array()?
        .iter()
        .map(|tool| {
            let kind = tool.get("type").and_then(Value::as_str);
            let name = tool.get("function")?.get("name")?.as_str()?;
            (kind == Some("function")).then(|| name.to_owned())
        })
        .collect::<Option<Vec<String>>>()?;
    Some(ToolChoice::AllowedTools { mode, tools })
}

/// Validates a whole conversation: at least one message, each valid for its role (see
/// [`validate_message`]).
pub fn validate_messages(messages: &[Message]) -> Result<(), ApiError> {
    if messages.is_empty() {
        return Err(
            ApiError::invalid_request("`messages` must hold at least one message")
                .param("messages"),
        );
    }
    messages
        .iter()
        .enumerate()
        .try_for_each(|(i, m)| validate_message(m, i))
}

/// Checks what a message's types cannot: a role OpenAI defines, content where the role
/// needs it, text-only content parts, a `tool_call_id` on tool results, assistant tool
/// calls of `type` `function` with a name and `arguments` that are a string of JSON or
/// an object. `index` is the message's position, for the error's `param`.
pub fn validate_message(message: &Message, index: usize) -> Result<(), ApiError> {
    let at = |field: &str| format!("messages[{index}].{field}");
    if let Some(content) = &message.content {
        validate_content(content, &at("content"))?;
    }
    let require_content = || {
        if message.content.is_none() {
            return Err(ApiError::invalid_request(format!(
                "`messages[{index}]` ({} message) needs `content`",
                message.role
            ))
            .param(at("content")));
        }
        Ok(())
    };
    match &message.role {
        Role::Assistant => {
            let calls = message.tool_calls.as_deref().unwrap_or_default();
            if message.content.is_none() && calls.is_empty() {
                return Err(ApiError::invalid_request(format!(
                    "`messages[{index}]` is an assistant message with neither `content` nor `tool_calls`"
                ))
                .param(at("content")));
            }
            for (i, call) in calls.iter().enumerate() {
                validate_tool_call(call, &at(&format!("tool_calls[{i}]")))?;
            }
            Ok(())
        }
        Role::Tool => {
            if message.tool_call_id.is_none() {
                return Err(ApiError::invalid_request(format!(
                    "`messages[{index}]` is a tool message without `tool_call_id`"
                ))
                .param(at("tool_call_id")));
            }
            require_content()
        }
        Role::System | Role::Developer | Role::User => require_content(),
        Role::Other(role) => Err(ApiError::invalid_request(format!(
            "`messages[{index}].role` is the unknown role `{role}`; expected one of system, developer, user, assistant, tool"
        ))
        .param(at("role"))),
    }
}

/// Refuses non-text parts with a 400 saying what is unsupported; `param` is the
/// content's path (`messages[0].content`).
pub fn validate_content(content: &Content, param: &str) -> Result<(), ApiError> {
    let Content::Parts(parts) = content else {
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

/// A replayed tool call: `type` `function`, a name, `arguments` a string of JSON or an
/// object (Hugging Face's habit; `null` or absent reads as none).
fn validate_tool_call(call: &ToolCall, param: &str) -> Result<(), ApiError> {
    if call.kind != "function" {
        return Err(ApiError::invalid_request(format!(
            "`{param}.type` is `{}`; only `function` tool calls are supported",
            call.kind
        ))
        .param(format!("{param}.type")));
    }
    if call.function.name.is_empty() {
        return Err(ApiError::invalid_request(format!(
            "`{param}.function.name` must not be empty"
        ))
        .param(format!("{param}.function.name")));
    }
    match &call.function.arguments {
        Value::String(_) | Value::Object(_) | Value::Null => Ok(()),
        other => Err(ApiError::invalid_request(format!(
            "`{param}.function.arguments` must be a string of JSON or an object, got {other}"
        ))
        .param(format!("{param}.function.arguments"))),
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
        let body = json!({
            "model": "smollm2",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "user", "content": "Weather?", "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "assistant", "tool_calls": [
                    {"id": "call_2", "function": {"name": "weather", "arguments": {"city": "Rome"}}}],
                 "reasoning_content": "Rome next."}
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
        });
        let req = chat(body.clone()).unwrap();
        req.validate().unwrap();
        assert_eq!(req.messages.len(), 6);
        assert_eq!(req.messages[1].content.as_ref().unwrap().text(), "a\nb");
        assert_eq!(req.messages[2].name.as_deref(), Some("ann"));
        let calls = req.messages[3].tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.arguments, json!(r#"{"city":"Paris"}"#));
        // Hugging Face's object arguments and fields the server does not model reach
        // the chat template as they came.
        let calls = req.messages[5].tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.arguments, json!({"city": "Rome"}));
        assert_eq!(calls[0].kind, "function");
        assert_eq!(req.messages[5].extra["reasoning_content"], "Rome next.");
        assert_eq!(req.model.as_deref(), Some("smollm2"));
        assert_eq!(
            (req.sampling.max_tokens, req.max_completion_tokens),
            (Some(10), Some(20))
        );
        assert_eq!(
            req.sampling.stop,
            Some(Stop::Many(vec!["\n".into(), "END".into()]))
        );
        assert_eq!(req.sampling.seed, Some(-3));
        assert_eq!(
            req.tool_choice,
            Some(ToolChoice::Function("weather".into()))
        );
        assert_eq!(req.sampling.top_k, Some(40));
        assert_eq!(
            req.sampling.stream_options.as_ref().unwrap().include_usage,
            Some(true)
        );
        let rf = req.structure.response_format.as_ref().unwrap();
        assert_eq!(rf.kind, "json_schema");
        assert_eq!(rf.json_schema.as_ref().unwrap().strict, Some(true));
        assert_eq!(req.structure.guided_regex.as_deref(), Some("[a-z]+"));
        assert_eq!(req.tools.as_ref().unwrap()[0].function.name, "weather");

        // It serializes to the flat object OpenAI defines (unknown fields left out), which
        // reads back the same.
        let out = serde_json::to_value(&req).unwrap();
        let keys = |v: &Value| {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        let mut sent = body;
        sent.as_object_mut().unwrap().remove("some_future_field");
        assert_eq!(keys(&out), keys(&sent));
        assert_eq!(out["guided_choice"], sent["guided_choice"]);
        assert_eq!(chat(out).unwrap(), req);
    }

    #[test]
    fn content_and_stop_forms() {
        let req =
            chat(json!({"messages": [{"role": "user", "content": "hi"}], "stop": "x"})).unwrap();
        assert_eq!(req.sampling.stop.unwrap().to_vec(), vec!["x".to_owned()]);
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
            // Own fields, then the shared sampling and structure fields.
            ("logprobs", json!(3), "logprobs"),
            ("top_logprobs", json!("3"), "top_logprobs"),
            ("max_completion_tokens", json!(-2), "max_completion_tokens"),
            (
                "tools",
                json!([{"type": "function", "function": {"name": 3}}]),
                "tools[0].function.name",
            ),
            ("tools", json!([{"type": "function"}]), "tools[0].function"),
            ("tool_choice", json!("sometimes"), "tool_choice"),
            ("tool_choice", json!({"type": "function"}), "tool_choice"),
            ("temperature", json!("hot"), "temperature"),
            ("n", json!(-1), "n"),
            ("max_tokens", json!(1.5), "max_tokens"),
            ("stream", json!("yes"), "stream"),
            (
                "stream_options",
                json!({"include_usage": 1}),
                "stream_options.include_usage",
            ),
            ("seed", json!("42"), "seed"),
            ("logit_bias", json!([1]), "logit_bias"),
            (
                "response_format",
                json!({"json_schema": {}}),
                "response_format.type",
            ),
            ("metadata", json!("x"), "metadata"),
            ("guided_regex", json!(["a"]), "guided_regex"),
        ] {
            let mut body = base();
            body[field] = value;
            let e = chat(body).unwrap_err();
            assert_eq!(e.param_name(), Some(param), "{field}: {e}");
            assert_eq!(e.status().as_u16(), 400);
        }
        let e = chat(json!({"messages": [{"content": "x"}]})).unwrap_err();
        assert_eq!(e.param_name(), Some("messages[0].role"));
        let e = chat(json!({"model": "m"})).unwrap_err();
        assert_eq!(e.param_name(), Some("messages"));
        assert!(e.message().contains("missing field `messages`"), "{e}");
        let e = chat(json!([{"messages": []}])).unwrap_err();
        assert_eq!(e.param_name(), None);
        assert!(e.message().contains("expected a JSON object"), "{e}");
    }

    #[test]
    fn null_is_absent_and_unknown_fields_are_ignored() {
        let req = chat(json!({"messages": [{"role": "user", "content": "x"}],
            "temperature": null, "guided_json": null, "tools": null, "future": [1, {"x": 2}]}))
        .unwrap();
        assert_eq!(req.sampling, SamplingFields::default());
        assert_eq!(req.structure, StructureFields::default());
        assert_eq!(req.tools, None);
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
        let e = check(json!([{"role": "robot", "content": "x"}]));
        assert_eq!(e.param_name(), Some("messages[0].role"));
        assert!(e.message().contains("unknown role `robot`"), "{e}");
        let e = check(json!([{"role": "user"}]));
        assert_eq!(e.param_name(), Some("messages[0].content"));
        let e = check(json!([{"role": "user", "content": "a"}, {"role": "tool", "content": "r"}]));
        assert_eq!(e.param_name(), Some("messages[1].tool_call_id"));
        let e = check(json!([{"role": "assistant", "content": null}]));
        assert_eq!(e.param_name(), Some("messages[0].content"));
        let call = |call: Value| check(json!([{"role": "assistant", "tool_calls": [call]}]));
        let e = call(
            json!({"id": "c", "type": "function", "function": {"name": "", "arguments": "{}"}}),
        );
        assert_eq!(
            e.param_name(),
            Some("messages[0].tool_calls[0].function.name")
        );
        let e = call(json!({"type": "retrieval", "function": {"name": "f"}}));
        assert_eq!(e.param_name(), Some("messages[0].tool_calls[0].type"));
        let e = call(json!({"function": {"name": "f", "arguments": [1]}}));
        assert_eq!(
            e.param_name(),
            Some("messages[0].tool_calls[0].function.arguments")
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
            (
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
                    {"type": "function", "function": {"name": "f"}},
                    {"type": "function", "function": {"name": "g"}}]}}),
                ToolChoice::AllowedTools {
                    mode: AllowedToolsMode::Required,
                    tools: vec!["f".into(), "g".into()],
                },
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}),
                ToolChoice::AllowedTools {
                    mode: AllowedToolsMode::Auto,
                    tools: vec![],
                },
            ),
        ] {
            let parsed: ToolChoice = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(parsed, choice);
            assert_eq!(serde_json::to_value(&parsed).unwrap(), json);
        }
        for bad in [
            json!({"type": "allowed_tools"}),
            json!({"type": "allowed_tools", "allowed_tools": {"mode": "none", "tools": []}}),
            json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "file_search"}]}}),
        ] {
            let e = serde_json::from_value::<ToolChoice>(bad.clone()).unwrap_err();
            assert!(e.to_string().contains("allowed_tools"), "{bad}: {e}");
        }
    }

    #[test]
    fn completion_prompts() {
        let req: CompletionRequest =
            parse_json(br#"{"prompt": "Once upon", "max_tokens": 5, "logprobs": 2}"#).unwrap();
        assert_eq!(req.prompt.text().unwrap(), "Once upon");
        assert_eq!(req.logprobs, Some(2));
        assert_eq!(req.sampling.max_tokens, Some(5));
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
        for (body, param) in [
            (r#"{"prompt": 3}"#, "prompt"),
            (r#"{"model": "m"}"#, "prompt"),
            (r#"{"prompt": "x", "logprobs": true}"#, "logprobs"),
            (r#"{"prompt": "x", "top_p": "1"}"#, "top_p"),
            (r#"{"prompt": "x", "guided_choice": 1, "echo": 1}"#, "echo"),
        ] {
            let e = parse_json::<CompletionRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(e.param_name(), Some(param), "{body}: {e}");
        }
    }
}
