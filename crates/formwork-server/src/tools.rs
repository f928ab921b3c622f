//! Tool calling: the constraint a forced call must follow, and the model's text read
//! back into OpenAI `tool_calls`, whole or streamed.
//!
//! A [`ToolPlan`] is made from a chat request's `tools`, `tool_choice` and
//! `parallel_tool_calls`:
//!
//! - **`"none"`** ([`ToolMode::None`]): no call is made or parsed; the tools still
//!   reach the chat template (the model may read about them).
//! - **`"auto"`** ([`ToolMode::Auto`], the default when tools are given): the model
//!   answers freely, unconstrained. Its output is read for a call in a syntax a chat
//!   template teaches, where recognizable: Hermes/Qwen `<tool_call>{"name": ..,
//!   "arguments": ..}</tool_call>` blocks anywhere in the text; or, at the very start,
//!   a JSON object (or array of them) with `name` and `arguments` or `parameters`
//!   (Llama 3), optionally after `<|python_tag|>` or `[TOOL_CALLS]` (Mistral). Only
//!   declared tool names count; anything else stays content.
//! - **`"required"`** or a named function ([`ToolMode::Required`]): the output is
//!   constrained by [`ToolPlan::schema`] to a JSON call of an allowed function:
//!   `{"name": NAME, "arguments": PARAMETERS}` (`name` first, as the schema compiler
//!   keeps `properties` order). With several allowed functions, an `anyOf` of those
//!   objects. **Parallel calls**: when `parallel_tool_calls` is not `false` and more than
//!   one function is allowed, the output is a JSON array of one or more calls
//!   (`minItems: 1`, no upper bound: `max_tokens` bounds it); with one allowed function
//!   (a single tool, or a named `tool_choice`) or `parallel_tool_calls: false`, it is
//!   one object. A missing `parameters` means no arguments (`{"type": "object",
//!   "properties": {}, "additionalProperties": false}`: only `{}`). `$ref`s inside a
//!   tool's parameters keep working: such parameters move under the root's `$defs`.
//!
//! [`ToolPlan::parse`] turns a finished output into content and calls (ids `call_...`,
//! arguments as a JSON string); [`ToolPlan::stream`] does the same incrementally, with
//! OpenAI's delta protocol: a call's first delta has `index`, `id`, `type` and the
//! function's name with `arguments: ""`, later ones fragments of the arguments. In
//! required mode the arguments stream as they are generated; in auto mode a call is
//! sent whole once its block is complete, and an output that starts like JSON is held
//! until the end (it may turn out to be content).
//!
//! ```
//! use formwork_server::protocol::ToolChoice;
//! use formwork_server::tools::ToolPlan;
//! use formwork_template::Tool;
//! use serde_json::json;
//!
//! let tools = [Tool::function("get_weather", None, Some(json!({
//!     "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})))];
//! let plan = ToolPlan::new(Some(&tools), Some(&ToolChoice::Required), None).unwrap();
//! assert_eq!(plan.schema().unwrap()["properties"]["name"], json!({"const": "get_weather"}));
//!
//! let out = plan.parse(r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#);
//! assert_eq!(out.tool_calls[0].function.arguments, r#"{"city":"Paris"}"#);
//! assert!(out.tool_calls[0].id.starts_with("call_"));
//! assert_eq!(out.content, None);
//! ```

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::id::random_id;
use crate::protocol::{
    ChatCompletionRequest, FinishReason, FunctionCall, FunctionCallDelta, ToolCall, ToolCallDelta,
    ToolChoice, ToolType,
};
use formwork_template::Tool;

/// How a request uses its tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolMode {
    /// No calls: no tools, or `tool_choice: "none"`.
    None,
    /// The model may call a tool; its free output is parsed for calls.
    Auto,
    /// The model must call an allowed tool; its output is constrained.
    Required,
}

/// What a chat request does with its tools: see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolPlan {
    tools: Vec<Tool>,
    mode: ToolMode,
    /// Names of the functions a call may name (required mode: the allowed ones; auto
    /// mode: all declared ones).
    allowed: Vec<String>,
    /// Whether a required output is an array of calls.
    parallel: bool,
}

impl ToolPlan {
    /// The plan of a chat request.
    pub fn from_chat(req: &ChatCompletionRequest) -> Result<ToolPlan, ApiError> {
        ToolPlan::new(
            req.tools.as_deref(),
            req.tool_choice.as_ref(),
            req.parallel_tool_calls,
        )
    }

    /// The plan of `tools`, `tool_choice` and `parallel_tool_calls`. Refuses (400)
    /// tools of a `type` other than `function`, a `strict` that is not a boolean,
    /// duplicate or empty tool names, parameters that are not a schema, a
    /// `tool_choice` other than `"none"` without tools, and a named function that is
    /// not among the tools.
    pub fn new(
        tools: Option<&[Tool]>,
        choice: Option<&ToolChoice>,
        parallel_tool_calls: Option<bool>,
    ) -> Result<ToolPlan, ApiError> {
        let tools = tools.unwrap_or_default().to_vec();
        let mut seen = HashSet::new();
        for (i, tool) in tools.iter().enumerate() {
            if tool.kind != "function" {
                return Err(ApiError::invalid_request(format!(
                    "`tools[{i}].type` is `{}`; only `function` tools are supported",
                    tool.kind
                ))
                .param(format!("tools[{i}].type")));
            }
            if let Some(strict) = tool.function.extra.get("strict")
                && !(strict.is_boolean() || strict.is_null())
            {
                return Err(ApiError::invalid_request(format!(
                    "`tools[{i}].function.strict` must be a boolean, got {strict}"
                ))
                .param(format!("tools[{i}].function.strict")));
            }
            let name = &tool.function.name;
            if name.is_empty() {
                return Err(ApiError::invalid_request("tool names must not be empty")
                    .param(format!("tools[{i}].function.name")));
            }
            if !seen.insert(name.as_str()) {
                return Err(ApiError::invalid_request(format!(
                    "two tools are named `{name}`; tool names must be unique"
                ))
                .param(format!("tools[{i}].function.name")));
            }
            if let Some(p) = &tool.function.parameters
                && !(p.is_object() || p.is_boolean())
            {
                return Err(ApiError::invalid_request(format!(
                    "the parameters of tool `{name}` must be a JSON Schema object, got {p}"
                ))
                .param(format!("tools[{i}].function.parameters")));
            }
        }
        let names = || tools.iter().map(|t| t.function.name.clone()).collect();
        let (mode, allowed) = match choice {
            None if tools.is_empty() => (ToolMode::None, Vec::new()),
            None | Some(ToolChoice::Auto) => (ToolMode::Auto, names()),
            Some(ToolChoice::None) => (ToolMode::None, Vec::new()),
            Some(ToolChoice::Required) => (ToolMode::Required, names()),
            Some(ToolChoice::Function(name)) => {
                if !tools.is_empty() && !tools.iter().any(|t| &t.function.name == name) {
                    return Err(ApiError::invalid_request(format!(
                        "`tool_choice` names the function `{name}`, which is not among the tools"
                    ))
                    .param("tool_choice"));
                }
                (ToolMode::Required, vec![name.clone()])
            }
        };
        if tools.is_empty() && mode != ToolMode::None {
            return Err(ApiError::invalid_request(
                "`tool_choice` is only allowed when `tools` are given",
            )
            .param("tool_choice"));
        }
        let parallel = parallel_tool_calls.unwrap_or(true) && allowed.len() > 1;
        Ok(ToolPlan {
            tools,
            mode,
            allowed,
            parallel,
        })
    }

    /// The request's mode.
    pub fn mode(&self) -> ToolMode {
        self.mode
    }

    /// Whether a required output is a JSON array of calls (else one call object).
    pub fn parallel(&self) -> bool {
        self.parallel
    }

    /// The tools for the chat template, in every mode (`None` when there are none).
    pub fn template_tools(&self) -> Option<Vec<formwork_template::Tool>> {
        (!self.tools.is_empty()).then(|| self.tools.clone())
    }

    /// The functions a required call may name (a tool declared without parameters takes
    /// only `{}`); `None` unless the mode is [`ToolMode::Required`].
    fn functions(&self) -> Option<Vec<formwork_engine::ToolFunction>> {
        if self.mode != ToolMode::Required {
            return None;
        }
        let functions = self
            .allowed
            .iter()
            .map(|name| {
                let tool = self.tools.iter().find(|t| &t.function.name == name);
                formwork_engine::ToolFunction {
                    name: name.clone(),
                    parameters: tool
                        .and_then(|t| t.function.parameters.clone())
                        .unwrap_or_else(no_parameters),
                    // `strict: false` compiles the parameters leniently.
                    strict: tool.and_then(|t| t.function.extra.get("strict"))
                        != Some(&Value::Bool(false)),
                }
            })
            .collect();
        Some(functions)
    }

    /// The JSON Schema a required call must follow ([`formwork_engine::tool_call_schema`]);
    /// `None` unless the mode is [`ToolMode::Required`].
    pub fn schema(&self) -> Option<Value> {
        formwork_engine::tool_call_schema(&self.functions()?, self.parallel).ok()
    }

    /// [`ToolPlan::schema`] as the engine's constraint; `None` unless the mode is
    /// [`ToolMode::Required`].
    pub fn constraint(&self) -> Option<formwork_engine::Constraint> {
        // The engine's own tool-call constraint: the schema of [`ToolPlan::schema`], each
        // function's parameters strict or lenient as its `strict` says.
        Some(formwork_engine::Constraint::ToolCall {
            functions: self.functions()?,
            parallel: self.parallel,
        })
    }

    /// Reads a finished output into content and tool calls.
    ///
    /// Required mode: the output is the constrained JSON; if it does not parse (cut
    /// short by `max_tokens`), it is returned as content with no calls. Auto mode: see
    /// the [module docs](self). None mode: all content.
    pub fn parse(&self, text: &str) -> ParsedOutput {
        let calls = match self.mode {
            ToolMode::None => None,
            ToolMode::Required => json_calls(text, &self.allowed, false),
            ToolMode::Auto => return self.parse_by_streaming(text),
        };
        match calls {
            Some(calls) => ParsedOutput {
                content: None,
                tool_calls: calls.into_iter().map(new_call).collect(),
            },
            None => ParsedOutput {
                content: Some(text.to_owned()),
                tool_calls: Vec::new(),
            },
        }
    }

    /// Auto mode reads a whole output the way it streams it, so both agree.
    fn parse_by_streaming(&self, text: &str) -> ParsedOutput {
        let mut stream = self.stream();
        let mut deltas = stream.push(text);
        deltas.extend(stream.finish());
        let mut content = String::new();
        let mut tool_calls: Vec<ToolCall> = Vec::new();
        for delta in deltas {
            match delta {
                StreamDelta::Content(text) => content.push_str(&text),
                StreamDelta::ToolCalls(pieces) => {
                    for piece in pieces {
                        let arguments = piece.function.arguments.unwrap_or_default();
                        match (piece.id, piece.function.name) {
                            (Some(id), Some(name)) => tool_calls.push(ToolCall {
                                id,
                                kind: ToolType::Function,
                                function: FunctionCall { name, arguments },
                            }),
                            _ => {
                                if let Some(call) = tool_calls.last_mut() {
                                    call.function.arguments.push_str(&arguments);
                                }
                            }
                        }
                    }
                }
            }
        }
        ParsedOutput {
            content: (!content.is_empty()).then_some(content),
            tool_calls,
        }
    }

    /// An incremental reader of one choice's output.
    pub fn stream(&self) -> ToolStream {
        ToolStream {
            allowed: self.allowed.clone(),
            state: match self.mode {
                ToolMode::None => StreamState::Plain,
                ToolMode::Required => StreamState::Required(Box::new(RequiredScanner {
                    allowed: self.allowed.clone(),
                    ..RequiredScanner::default()
                })),
                ToolMode::Auto => StreamState::Auto(AutoState::default()),
            },
            calls: 0,
            held_space: String::new(),
        }
    }
}

/// A finished output read by [`ToolPlan::parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOutput {
    /// The text that is not tool calls (`None` if there is none).
    pub content: Option<String>,
    /// The calls, with fresh ids.
    pub tool_calls: Vec<ToolCall>,
}

impl ParsedOutput {
    /// The choice's finish reason: `tool_calls` when calls were made and the engine
    /// stopped normally, else the engine's reason.
    pub fn finish_reason(&self, engine: FinishReason) -> FinishReason {
        finish_reason(!self.tool_calls.is_empty(), engine)
    }
}

fn finish_reason(made_calls: bool, engine: FinishReason) -> FinishReason {
    if made_calls && engine == FinishReason::Stop {
        FinishReason::ToolCalls
    } else {
        engine
    }
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamDelta {
    /// Text.
    Content(String),
    /// Tool-call pieces.
    ToolCalls(Vec<ToolCallDelta>),
}

/// Reads one choice's output as it is generated: [`ToolStream::push`] each new piece
/// of text, [`ToolStream::finish`] at the end, and send what they return.
#[derive(Debug, Clone)]
pub struct ToolStream {
    allowed: Vec<String>,
    state: StreamState,
    /// Calls announced so far.
    calls: u32,
    /// Whitespace-only content held back after a call (dropped if nothing follows).
    held_space: String,
}

#[derive(Debug, Clone)]
enum StreamState {
    Plain,
    Required(Box<RequiredScanner>),
    Auto(AutoState),
}

impl ToolStream {
    /// Takes the next piece of generated text; returns what to send now.
    pub fn push(&mut self, text: &str) -> Vec<StreamDelta> {
        let mut out = Vec::new();
        match &mut self.state {
            StreamState::Plain => {
                if !text.is_empty() {
                    out.push(StreamDelta::Content(text.to_owned()));
                }
            }
            StreamState::Required(scanner) => {
                scanner.feed(text);
                let deltas = scanner.take_deltas();
                self.calls = scanner.announced;
                if !deltas.is_empty() {
                    out.push(StreamDelta::ToolCalls(deltas));
                }
            }
            StreamState::Auto(_) => self.push_auto(text, false, &mut out),
        }
        out
    }

    /// Ends the output; returns what is left to send.
    pub fn finish(&mut self) -> Vec<StreamDelta> {
        let mut out = Vec::new();
        if let StreamState::Auto(_) = self.state {
            self.push_auto("", true, &mut out);
        }
        out
    }

    /// Whether any tool call was sent.
    pub fn made_calls(&self) -> bool {
        self.calls > 0
    }

    /// The choice's finish reason: `tool_calls` when calls were sent and the engine
    /// stopped normally, else the engine's reason.
    pub fn finish_reason(&self, engine: FinishReason) -> FinishReason {
        finish_reason(self.made_calls(), engine)
    }

    fn push_auto(&mut self, text: &str, end: bool, out: &mut Vec<StreamDelta>) {
        let StreamState::Auto(state) = &mut self.state else {
            return;
        };
        state.buf.push_str(text);
        let mut pieces: Vec<AutoPiece> = Vec::new();
        loop {
            match state.phase {
                AutoPhase::Start => {
                    let trimmed = state.buf.trim_start();
                    if trimmed.is_empty() && !end {
                        return;
                    }
                    let json_like = trimmed.starts_with(['{', '['])
                        || JSON_PREFIXES.iter().any(|p| trimmed.starts_with(p));
                    let undecided = JSON_PREFIXES
                        .iter()
                        .chain([&TOOL_CALL_OPEN])
                        .any(|p| p.starts_with(trimmed) && *p != trimmed);
                    if json_like {
                        state.phase = AutoPhase::Json;
                    } else if undecided && !end {
                        return;
                    } else {
                        state.phase = AutoPhase::Text;
                    }
                }
                AutoPhase::Json => {
                    if !end {
                        return;
                    }
                    let text = std::mem::take(&mut state.buf);
                    match leading_json_calls(&text, &self.allowed) {
                        Some(calls) => pieces.extend(calls.into_iter().map(AutoPiece::Call)),
                        None => pieces.push(AutoPiece::Text(text)),
                    }
                    break;
                }
                AutoPhase::Text => {
                    if let Some(i) = state.buf.find(TOOL_CALL_OPEN) {
                        pieces.push(AutoPiece::Text(state.buf[..i].to_owned()));
                        state.buf.drain(..i + TOOL_CALL_OPEN.len());
                        state.phase = AutoPhase::Block;
                        continue;
                    }
                    // Keep back a tail that may be the start of `<tool_call>`.
                    let keep = if end {
                        0
                    } else {
                        partial_suffix(&state.buf, TOOL_CALL_OPEN)
                    };
                    let send = state.buf.len() - keep;
                    pieces.push(AutoPiece::Text(state.buf[..send].to_owned()));
                    state.buf.drain(..send);
                    break;
                }
                AutoPhase::Block => {
                    let close = state.buf.find(TOOL_CALL_CLOSE);
                    if close.is_none() && !end {
                        return_pieces(self, pieces, out);
                        return;
                    }
                    let (body, rest_at) = match close {
                        Some(j) => (&state.buf[..j], j + TOOL_CALL_CLOSE.len()),
                        None => (state.buf.as_str(), state.buf.len()),
                    };
                    match json_calls(body, &self.allowed, true) {
                        Some(calls) => pieces.extend(calls.into_iter().map(AutoPiece::Call)),
                        None => pieces.push(AutoPiece::Text(format!(
                            "{TOOL_CALL_OPEN}{}",
                            &state.buf[..rest_at]
                        ))),
                    }
                    state.buf.drain(..rest_at);
                    state.phase = AutoPhase::Text;
                }
            }
        }
        return_pieces(self, pieces, out);
        if end {
            self.held_space.clear();
        }
    }

    fn send_text(&mut self, text: String, out: &mut Vec<StreamDelta>) {
        if text.is_empty() {
            return;
        }
        if self.calls > 0 && text.trim().is_empty() {
            self.held_space.push_str(&text);
            return;
        }
        let text = std::mem::take(&mut self.held_space) + &text;
        match out.last_mut() {
            Some(StreamDelta::Content(prev)) => prev.push_str(&text),
            _ => out.push(StreamDelta::Content(text)),
        }
    }

    fn send_call(&mut self, (name, arguments): (String, String), out: &mut Vec<StreamDelta>) {
        self.held_space.clear();
        let index = self.calls;
        self.calls += 1;
        let deltas = vec![header_delta(index, name), argument_delta(index, arguments)];
        match out.last_mut() {
            Some(StreamDelta::ToolCalls(prev)) => prev.extend(deltas),
            _ => out.push(StreamDelta::ToolCalls(deltas)),
        }
    }
}

fn return_pieces(stream: &mut ToolStream, pieces: Vec<AutoPiece>, out: &mut Vec<StreamDelta>) {
    for piece in pieces {
        match piece {
            AutoPiece::Text(text) => stream.send_text(text, out),
            AutoPiece::Call(call) => stream.send_call(call, out),
        }
    }
}

enum AutoPiece {
    Text(String),
    Call((String, String)),
}

#[derive(Debug, Clone, Default)]
struct AutoState {
    phase: AutoPhase,
    /// Text not yet sent.
    buf: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum AutoPhase {
    /// Nothing but whitespace seen: the output may be a leading JSON call.
    #[default]
    Start,
    /// The output starts like JSON: held until the end.
    Json,
    /// Text, watched for `<tool_call>`.
    Text,
    /// Inside a `<tool_call>` block.
    Block,
}

const TOOL_CALL_OPEN: &str = "<tool_call>";
const TOOL_CALL_CLOSE: &str = "</tool_call>";
/// Markers some templates put before a leading JSON call.
const JSON_PREFIXES: [&str; 2] = ["<|python_tag|>", "[TOOL_CALLS]"];

/// The parameters of a function declared without any: only `{}`.
fn no_parameters() -> Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

/// The length of the longest tail of `text` that is a proper prefix of `marker`.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && text.ends_with(&marker[..n]))
        .unwrap_or(0)
}

fn header_delta(index: u32, name: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: Some(random_id("call_")),
        kind: Some(ToolType::Function),
        function: FunctionCallDelta {
            name: Some(name),
            arguments: Some(String::new()),
        },
    }
}

fn argument_delta(index: u32, arguments: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: None,
        kind: None,
        function: FunctionCallDelta {
            name: None,
            arguments: Some(arguments),
        },
    }
}

fn new_call((name, arguments): (String, String)) -> ToolCall {
    ToolCall {
        id: random_id("call_"),
        kind: ToolType::Function,
        function: FunctionCall { name, arguments },
    }
}

/// A whole output that is JSON calls, after an optional marker.
fn leading_json_calls(text: &str, allowed: &[String]) -> Option<Vec<(String, String)>> {
    let mut body = text.trim_start();
    for prefix in JSON_PREFIXES {
        if let Some(rest) = body.strip_prefix(prefix) {
            body = rest;
        }
    }
    json_calls(body, allowed, true)
}

/// Reads `text` as one call object or an array of them, each naming an allowed
/// function; returns (name, arguments JSON text) pairs. `lenient` also takes
/// `parameters` for `arguments`, arguments given as a string of JSON, and missing
/// arguments (as `{}`).
fn json_calls(text: &str, allowed: &[String], lenient: bool) -> Option<Vec<(String, String)>> {
    let value: Value = serde_json::from_str(text.trim()).ok()?;
    let items = match value {
        Value::Array(items) if !items.is_empty() => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return None,
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Object(mut obj) = item else {
                return None;
            };
            let Some(Value::String(name)) = obj.remove("name") else {
                return None;
            };
            if !allowed.contains(&name) {
                return None;
            }
            let arguments = match obj.remove("arguments") {
                Some(v) => Some(v),
                None if lenient => obj.remove("parameters"),
                None => None,
            };
            let arguments = match arguments {
                Some(v @ Value::Object(_)) => v.to_string(),
                Some(Value::String(s)) if lenient => {
                    serde_json::from_str::<Map<String, Value>>(&s).ok()?;
                    s
                }
                None if lenient => "{}".to_owned(),
                _ => return None,
            };
            Some((name, arguments))
        })
        .collect()
}

/// Streams required-mode calls: a JSON scanner over the constrained output that
/// announces a call once its name is read and sends its arguments' text as it comes.
#[derive(Debug, Clone, Default)]
struct RequiredScanner {
    /// Names a call may have; a call naming another function is not announced.
    allowed: Vec<String>,
    /// All text so far.
    buf: String,
    /// Bytes of `buf` scanned.
    pos: usize,
    /// Nesting depth of objects and arrays.
    depth: usize,
    /// The depth calls start at: 0 for a single object, 1 inside an array; `None`
    /// until the first non-space character.
    call_level: Option<usize>,
    in_string: bool,
    escaped: bool,
    string_start: usize,
    call: Option<CallScan>,
    /// Calls announced so far.
    announced: u32,
    /// Deltas ready to send.
    ready: Vec<ToolCallDelta>,
}

#[derive(Debug, Clone, Default)]
struct CallScan {
    /// The last key read at the call object's level.
    key: Option<String>,
    /// Whether the next string at the call's level is a value (after `:`).
    expect_value: bool,
    name: Option<String>,
    args_start: Option<usize>,
    args_end: Option<usize>,
    /// Bytes of the arguments sent so far, from `args_start`.
    args_sent: usize,
    /// This call's index, once announced.
    index: Option<u32>,
}

impl RequiredScanner {
    fn feed(&mut self, text: &str) {
        self.buf.push_str(text);
        while let Some(c) = self.buf[self.pos..].chars().next() {
            let i = self.pos;
            self.pos += c.len_utf8();
            self.scan(i, c);
        }
    }

    fn scan(&mut self, i: usize, c: char) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '"' {
                self.in_string = false;
                self.string_end(i);
            }
            return;
        }
        if c.is_whitespace() {
            return;
        }
        let level = *self.call_level.get_or_insert(usize::from(c == '['));
        let at_call = self.depth == level + 1;
        if at_call
            && let Some(call) = &mut self.call
            && call.expect_value
            && call.key.as_deref() == Some("arguments")
            && call.args_start.is_none()
        {
            call.args_start = Some(i);
        }
        match c {
            '"' => {
                self.in_string = true;
                self.string_start = i;
            }
            '{' | '[' => {
                if c == '{' && self.depth == level {
                    self.call = Some(CallScan::default());
                }
                self.depth += 1;
            }
            '}' | ']' => {
                self.depth = self.depth.saturating_sub(1);
                if let Some(call) = &mut self.call {
                    if self.depth == level + 1 && call.key.as_deref() == Some("arguments") {
                        call.args_end.get_or_insert(i + 1);
                    }
                    if self.depth == level {
                        // A primitive `arguments` value ends at the call's `}`.
                        if call.args_start.is_some() {
                            call.args_end.get_or_insert(i);
                        }
                        self.flush_call();
                        self.call = None;
                    }
                }
            }
            ':' if at_call => {
                if let Some(call) = &mut self.call {
                    call.expect_value = true;
                }
            }
            ',' if at_call => {
                if let Some(call) = &mut self.call {
                    if call.key.as_deref() == Some("arguments") && call.args_start.is_some() {
                        call.args_end.get_or_insert(i);
                    }
                    call.expect_value = false;
                    call.key = None;
                }
            }
            _ => {}
        }
    }

    fn string_end(&mut self, end: usize) {
        let Some(level) = self.call_level else { return };
        if self.depth != level + 1 {
            return;
        }
        let Some(call) = &mut self.call else { return };
        let decoded = serde_json::from_str::<String>(&self.buf[self.string_start..=end]).ok();
        if call.expect_value {
            match call.key.as_deref() {
                Some("name") => call.name = decoded,
                Some("arguments") => {
                    call.args_end.get_or_insert(end + 1);
                }
                _ => {}
            }
        } else {
            call.key = decoded;
        }
    }

    /// Moves what the current call has ready into `ready`.
    fn flush_call(&mut self) {
        let Some(call) = &mut self.call else { return };
        if call.index.is_none() {
            let Some(name) = call.name.clone().filter(|n| self.allowed.contains(n)) else {
                return;
            };
            let index = self.announced;
            self.announced += 1;
            call.index = Some(index);
            self.ready.push(header_delta(index, name));
        }
        let (Some(index), Some(start)) = (call.index, call.args_start) else {
            return;
        };
        let end = call.args_end.unwrap_or(self.pos);
        let from = start + call.args_sent;
        if end > from {
            self.ready
                .push(argument_delta(index, self.buf[from..end].to_owned()));
            call.args_sent = end - start;
        }
    }

    fn take_deltas(&mut self) -> Vec<ToolCallDelta> {
        self.flush_call();
        merge_deltas(std::mem::take(&mut self.ready))
    }
}

/// Joins consecutive argument fragments of the same call.
fn merge_deltas(deltas: Vec<ToolCallDelta>) -> Vec<ToolCallDelta> {
    let mut out: Vec<ToolCallDelta> = Vec::with_capacity(deltas.len());
    for d in deltas {
        if let Some(prev) = out.last_mut()
            && prev.index == d.index
            && prev.id.is_none()
            && d.id.is_none()
            && let (Some(a), Some(b)) = (&mut prev.function.arguments, &d.function.arguments)
        {
            a.push_str(b);
            continue;
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ToolChoice;

    fn weather() -> Tool {
        Tool::function(
            "get_weather",
            None,
            Some(
                json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            ),
        )
    }

    fn time() -> Tool {
        Tool::function("get_time", None, None)
    }

    fn plan(tools: &[Tool], choice: Option<ToolChoice>, parallel: Option<bool>) -> ToolPlan {
        ToolPlan::new(Some(tools), choice.as_ref(), parallel).unwrap()
    }

    /// Streams `text` in pieces of `n` characters and reassembles the calls and content.
    fn stream_all(
        plan: &ToolPlan,
        text: &str,
        n: usize,
    ) -> (String, Vec<(String, String, String)>, bool) {
        let mut s = plan.stream();
        let mut deltas = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(n) {
            deltas.extend(s.push(&piece.iter().collect::<String>()));
        }
        deltas.extend(s.finish());
        let mut content = String::new();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        for d in deltas {
            match d {
                StreamDelta::Content(t) => {
                    assert!(!t.is_empty());
                    content.push_str(&t);
                }
                StreamDelta::ToolCalls(tc) => {
                    for d in tc {
                        let i = d.index as usize;
                        if let Some(id) = d.id {
                            assert_eq!(i, calls.len(), "calls are announced in order");
                            assert_eq!(d.kind, Some(ToolType::Function));
                            assert_eq!(d.function.arguments.as_deref(), Some(""));
                            calls.push((id, d.function.name.unwrap(), String::new()));
                        } else {
                            assert!(d.function.name.is_none());
                            calls[i].2.push_str(&d.function.arguments.unwrap());
                        }
                    }
                }
            }
        }
        (content, calls, s.made_calls())
    }

    #[test]
    fn one_tool_schema_is_one_object() {
        let p = plan(&[weather()], Some(ToolChoice::Required), None);
        assert_eq!(p.mode(), ToolMode::Required);
        assert!(!p.parallel());
        assert_eq!(
            p.schema().unwrap(),
            json!({"type": "object",
                   "properties": {"name": {"const": "get_weather"},
                                  "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                   "required": ["name", "arguments"], "additionalProperties": false})
        );
    }

    #[test]
    fn several_tools_schema_is_an_array_of_any_of() {
        let p = plan(&[weather(), time()], Some(ToolChoice::Required), None);
        assert!(p.parallel());
        let s = p.schema().unwrap();
        assert_eq!(s["type"], "array");
        assert_eq!(s["minItems"], 1);
        let any = s["items"]["anyOf"].as_array().unwrap();
        assert_eq!(any.len(), 2);
        assert_eq!(any[1]["properties"]["name"]["const"], "get_time");
        assert_eq!(
            any[1]["properties"]["arguments"],
            json!({"type": "object", "properties": {}, "additionalProperties": false})
        );
        let p = plan(
            &[weather(), time()],
            Some(ToolChoice::Required),
            Some(false),
        );
        assert!(!p.parallel());
        assert!(p.schema().unwrap()["anyOf"].is_array());
        // A named function: one object, whatever parallel_tool_calls says.
        let p = plan(
            &[weather(), time()],
            Some(ToolChoice::Function("get_time".into())),
            Some(true),
        );
        let s = p.schema().unwrap();
        assert_eq!(s["properties"]["name"]["const"], "get_time");
    }

    #[test]
    fn schemas_compile_and_admit_the_calls() {
        let tools = [weather(), time()];
        for (choice, parallel, good, bad) in [
            (
                ToolChoice::Required,
                None,
                r#"[{"name":"get_time","arguments":{}},{"name":"get_weather","arguments":{"city":"Oslo"}}]"#,
                r#"[{"name":"get_weather","arguments":{}}]"#,
            ),
            (
                ToolChoice::Required,
                Some(false),
                r#"{"name":"get_weather","arguments":{"city":"Oslo"}}"#,
                r#"{"name":"nope","arguments":{}}"#,
            ),
            (
                ToolChoice::Function("get_time".into()),
                None,
                r#"{"name":"get_time","arguments":{}}"#,
                r#"{"name":"get_time","arguments":{"x":1}}"#,
            ),
        ] {
            let schema = plan(&tools, Some(choice), parallel).schema().unwrap();
            let regex = formwork_schema::Compiler::new().compile(&schema).unwrap();
            let dfa = formwork_index::ByteDfa::new(&regex).unwrap();
            assert!(dfa.matches(good.as_bytes()), "{good} against {regex}");
            assert!(!dfa.matches(bad.as_bytes()), "{bad} against {regex}");
            let validator = jsonschema::validator_for(&schema).unwrap();
            assert!(validator.is_valid(&serde_json::from_str(good).unwrap()));
        }
    }

    #[test]
    fn refs_in_parameters_still_resolve() {
        let tool = Tool::function(
            "add_person",
            None,
            Some(json!({
                "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                "type": "object",
                "properties": {"address": {"$ref": "#/$defs/Address"}, "const_ref": {"const": {"$ref": "#/x"}}},
                "required": ["address"]
            })),
        );
        let p = plan(&[tool, time()], Some(ToolChoice::Required), Some(false));
        let schema = p.schema().unwrap();
        assert_eq!(
            schema["anyOf"][0]["properties"]["arguments"],
            json!({"$ref": "#/$defs/formwork_tool_0"})
        );
        let moved = &schema["$defs"]["formwork_tool_0"];
        assert_eq!(
            moved["properties"]["address"]["$ref"],
            "#/$defs/formwork_tool_0/$defs/Address"
        );
        assert_eq!(moved["properties"]["const_ref"]["const"]["$ref"], "#/x");
        let regex = formwork_schema::Compiler::new().compile(&schema).unwrap();
        let dfa = formwork_index::ByteDfa::new(&regex).unwrap();
        assert!(dfa.matches(br#"{"name":"add_person","arguments":{"address":{"city":"Oslo"}}}"#));
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(
            validator.is_valid(
                &json!({"name": "add_person", "arguments": {"address": {"city": "Oslo"}}})
            )
        );
        assert!(!validator.is_valid(&json!({"name": "add_person", "arguments": {"address": {}}})));
    }

    #[test]
    fn plan_errors() {
        let e = ToolPlan::new(None, Some(&ToolChoice::Required), None).unwrap_err();
        assert_eq!(e.param_name(), Some("tool_choice"));
        let e = ToolPlan::new(None, Some(&ToolChoice::Auto), None).unwrap_err();
        assert_eq!(e.param_name(), Some("tool_choice"));
        assert!(ToolPlan::new(None, Some(&ToolChoice::None), None).is_ok());
        let e = ToolPlan::new(
            Some(&[weather()]),
            Some(&ToolChoice::Function("x".into())),
            None,
        )
        .unwrap_err();
        assert!(e.message().contains("`x`"), "{e}");
        let e = ToolPlan::new(Some(&[weather(), weather()]), None, None).unwrap_err();
        assert_eq!(e.param_name(), Some("tools[1].function.name"));
        let e = ToolPlan::new(Some(&[Tool::function("", None, None)]), None, None).unwrap_err();
        assert_eq!(e.param_name(), Some("tools[0].function.name"));
        let e = ToolPlan::new(
            Some(&[Tool::function("f", None, Some(json!("x")))]),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.param_name(), Some("tools[0].function.parameters"));
        let mut retrieval = weather();
        retrieval.kind = "retrieval".into();
        let e = ToolPlan::new(Some(&[retrieval]), None, None).unwrap_err();
        assert_eq!(e.param_name(), Some("tools[0].type"));
        let mut strict = weather();
        strict.function.extra.insert("strict".into(), json!("yes"));
        let e = ToolPlan::new(Some(&[strict.clone()]), None, None).unwrap_err();
        assert_eq!(e.param_name(), Some("tools[0].function.strict"));
        strict.function.extra.insert("strict".into(), json!(true));
        // `strict` reaches the chat template as sent.
        let plan = ToolPlan::new(Some(&[strict]), None, None).unwrap();
        assert_eq!(
            plan.template_tools().unwrap()[0].function.extra["strict"],
            json!(true)
        );
    }

    #[test]
    fn modes_and_template_tools() {
        let tools = [weather()];
        assert_eq!(plan(&tools, None, None).mode(), ToolMode::Auto);
        assert_eq!(
            plan(&tools, Some(ToolChoice::None), None).mode(),
            ToolMode::None
        );
        assert_eq!(plan(&[], None, None).mode(), ToolMode::None);
        assert!(plan(&[], None, None).template_tools().is_none());
        let none = plan(&tools, Some(ToolChoice::None), None);
        assert_eq!(none.schema(), None);
        assert_eq!(
            none.template_tools().unwrap()[0].function.name,
            "get_weather"
        );
        assert_eq!(plan(&tools, None, None).schema(), None);
    }

    #[test]
    fn parses_required_output() {
        let p = plan(&[weather(), time()], Some(ToolChoice::Required), None);
        let out = p.parse(r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_time","arguments":{}}]"#);
        assert_eq!(out.content, None);
        assert_eq!(out.tool_calls.len(), 2);
        assert_eq!(out.tool_calls[0].function.name, "get_weather");
        assert_eq!(out.tool_calls[0].function.arguments, r#"{"city":"Paris"}"#);
        assert_eq!(out.tool_calls[1].function.arguments, "{}");
        assert_ne!(out.tool_calls[0].id, out.tool_calls[1].id);
        assert_eq!(
            out.finish_reason(FinishReason::Stop),
            FinishReason::ToolCalls
        );
        // Cut short: content, no calls.
        let out = p.parse(r#"[{"name":"get_weather","argu"#);
        assert!(out.tool_calls.is_empty());
        assert_eq!(
            out.content.as_deref(),
            Some(r#"[{"name":"get_weather","argu"#)
        );
        assert_eq!(
            out.finish_reason(FinishReason::Length),
            FinishReason::Length
        );
    }

    #[test]
    fn parses_auto_output() {
        let p = plan(&[weather(), time()], None, None);
        // Hermes / Qwen blocks, with text before.
        let out = p.parse(
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>\n<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>\n",
        );
        assert_eq!(out.content.as_deref(), Some("Let me check.\n"));
        assert_eq!(out.tool_calls.len(), 2);
        assert_eq!(out.tool_calls[0].function.arguments, r#"{"city":"Rome"}"#);
        // Llama 3 JSON with `parameters`, and Mistral's marker.
        let out = p.parse(r#" {"name": "get_weather", "parameters": {"city": "Oslo"}}"#);
        assert_eq!(out.content, None);
        assert_eq!(out.tool_calls[0].function.arguments, r#"{"city":"Oslo"}"#);
        let out = p.parse(r#"[TOOL_CALLS][{"name": "get_time", "arguments": "{}"}]"#);
        assert_eq!(out.tool_calls[0].function.arguments, "{}");
        let out = p.parse(r#"<|python_tag|>{"name": "get_time"}"#);
        assert_eq!(out.tool_calls[0].function.arguments, "{}");
        // Unknown names, plain JSON, broken blocks and text stay content.
        for text in [
            r#"{"name": "rm_rf", "arguments": {}}"#,
            r#"{"answer": 42}"#,
            "<tool_call>{oops}</tool_call> done",
            "It is sunny.",
            "",
        ] {
            let out = p.parse(text);
            assert!(out.tool_calls.is_empty(), "{text}");
            assert_eq!(out.content.as_deref(), (!text.is_empty()).then_some(text));
        }
        // None mode: everything is content.
        let none = plan(&[weather()], Some(ToolChoice::None), None);
        let text = r#"{"name": "get_weather", "arguments": {"city": "Oslo"}}"#;
        assert_eq!(none.parse(text).content.as_deref(), Some(text));
    }

    #[test]
    fn streams_required_calls_incrementally() {
        let p = plan(&[weather(), time()], Some(ToolChoice::Required), None);
        let text = r#"[{"name":"get_weather","arguments":{"city":"Pa\"ris }","n":[1,{"a":2}]}},{"name":"get_time","arguments":{}}]"#;
        for n in [1, 2, 3, 7, 1000] {
            let (content, calls, made) = stream_all(&p, text, n);
            assert_eq!(content, "");
            assert!(made);
            assert_eq!(calls.len(), 2, "piece size {n}");
            assert_eq!(calls[0].1, "get_weather");
            assert_eq!(calls[0].2, r#"{"city":"Pa\"ris }","n":[1,{"a":2}]}"#);
            assert_eq!(calls[1].1, "get_time");
            assert_eq!(calls[1].2, "{}");
            assert!(calls[0].0.starts_with("call_"));
        }
        // Arguments stream before the call is complete.
        let mut s = p.stream();
        let first = s.push(r#"[{"name":"get_weather","arguments":{"ci"#);
        let StreamDelta::ToolCalls(deltas) = &first[0] else {
            panic!("{first:?}")
        };
        assert_eq!(deltas.len(), 2);
        assert_eq!(deltas[1].function.arguments.as_deref(), Some(r#"{"ci"#));
        let next = s.push(r#"ty":"X"}}]"#);
        assert_eq!(
            next,
            vec![StreamDelta::ToolCalls(vec![argument_delta(
                0,
                r#"ty":"X"}"#.into()
            )])]
        );
        assert!(s.finish().is_empty());
        assert_eq!(s.finish_reason(FinishReason::Stop), FinishReason::ToolCalls);
    }

    #[test]
    fn streams_a_single_required_call() {
        let p = plan(&[weather()], Some(ToolChoice::Required), None);
        let text = "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Zürich\"}}";
        for n in [1, 4, 100] {
            let (content, calls, _) = stream_all(&p, text, n);
            assert_eq!(content, "");
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].2, "{\"city\":\"Zürich\"}");
        }
        // Non-streamed parse gives the same arguments.
        assert_eq!(
            p.parse(text).tool_calls[0].function.arguments,
            "{\"city\":\"Zürich\"}"
        );
    }

    #[test]
    fn streams_auto_output() {
        let p = plan(&[weather(), time()], None, None);
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>\n<tool_call>{\"name\": \"get_time\"}</tool_call>\n";
        for n in [1, 2, 5, 1000] {
            let (content, calls, made) = stream_all(&p, text, n);
            assert_eq!(content, "Let me check.\n", "piece size {n}");
            assert!(made);
            assert_eq!(calls.len(), 2);
            assert_eq!(calls[0].2, r#"{"city":"Rome"}"#);
            assert_eq!(calls[1].2, "{}");
        }
        for text in [
            "Plain text < with <tool brackets> and <tool_call",
            "<tool_call>{broken</tool_call> after",
            r#"{"answer": 42}"#,
            "[1, 2]",
            "   ",
            "<|python_",
        ] {
            for n in [1, 3, 1000] {
                let (content, calls, made) = stream_all(&p, text, n);
                assert_eq!(content, text, "piece size {n}");
                assert!(calls.is_empty() && !made);
                assert_eq!(
                    p.parse(text).content.as_deref(),
                    (!text.is_empty()).then_some(text)
                );
            }
        }
        for text in [
            r#"  {"name": "get_weather", "parameters": {"city": "Oslo"}}"#,
            r#"[TOOL_CALLS][{"name": "get_time", "arguments": {}}]"#,
        ] {
            let (content, calls, _) = stream_all(&p, text, 2);
            assert_eq!(content, "");
            assert_eq!(calls.len(), 1, "{text}");
            assert_eq!(p.parse(text).tool_calls[0].function.arguments, calls[0].2);
        }
        // An unterminated block at the end still counts.
        let (_, calls, _) =
            stream_all(&p, r#"<tool_call>{"name": "get_time", "arguments": {}}"#, 3);
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn text_streams_immediately_in_auto_mode() {
        let p = plan(&[weather()], None, None);
        let mut s = p.stream();
        assert_eq!(s.push("Hello"), vec![StreamDelta::Content("Hello".into())]);
        assert_eq!(s.push(" <tool"), vec![StreamDelta::Content(" ".into())]);
        assert_eq!(
            s.push("box>"),
            vec![StreamDelta::Content("<toolbox>".into())]
        );
        assert!(s.finish().is_empty());
        assert!(!s.made_calls());
        assert_eq!(s.finish_reason(FinishReason::Stop), FinishReason::Stop);
    }

    #[test]
    fn partial_suffixes() {
        assert_eq!(partial_suffix("abc<tool", "<tool_call>"), 5);
        assert_eq!(partial_suffix("abc<", "<tool_call>"), 1);
        assert_eq!(partial_suffix("abc", "<tool_call>"), 0);
        assert_eq!(partial_suffix("é<t", "<tool_call>"), 2);
        assert_eq!(partial_suffix("", "<tool_call>"), 0);
    }
}
