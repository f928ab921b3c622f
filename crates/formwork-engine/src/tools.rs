//! Tool calls: the one place that knows how models write them.
//!
//! Three facts live here, side by side, so the constraint that makes a call and the reader
//! that reads it back never disagree:
//!
//! - **The families' syntaxes** ([`ToolFormat`]): the string that opens a call
//!   ([`ToolFormat::opener`]), the one that closes it ([`ToolFormat::closer`]) and the JSON
//!   Schema of what goes between them ([`ToolFormat::call_schema`]), for the families chat
//!   templates teach: Hermes/Qwen `<tool_call>{..}</tool_call>`, Llama 3.x
//!   `<|python_tag|>{"name": .., "parameters": ..}`, Mistral `[TOOL_CALLS][{..}, ..]`, and
//!   a generic fallback (Hermes's syntax) for templates that teach none.
//!   [`ToolFormat::detect`] picks the family from a template's source.
//! - **The forced call** ([`tool_call_schema`]): when a call is required
//!   (`tool_choice: "required"` or a named function) the whole reply is constrained to a
//!   bare JSON call `{"name": NAME, "arguments": ARGS}`, or with `parallel` a JSON array of
//!   one or more of them, whatever the family. [`arguments_schema`] is the rule that makes
//!   every function's arguments a JSON object.
//! - **The reader** ([`ReplyReader`]): a reply read into content and calls, whole
//!   ([`ReplyReader::read`], a [`ParsedReply`]) or as it streams ([`ReplyReader::push`],
//!   [`ReplyDelta`]s: a call's first [`ToolCallDelta`] has its index, id and name, later
//!   ones fragments of its arguments). A whole reply is read by streaming it, so the two
//!   always agree. Call ids (`call_...`) are made here ([`new_call_id`]).
//!
//! ```
//! use formwork_engine::ToolFunction;
//! use formwork_engine::tools::{ReplyMode, ReplyReader, ToolFormat};
//! use serde_json::json;
//!
//! let functions = [ToolFunction {
//!     name: "get_weather".into(),
//!     parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
//!     strict: true,
//! }];
//! let format = ToolFormat::detect("{{- '<tool_call>' }}{{ tool_call | tojson }}");
//! assert_eq!(format, ToolFormat::Hermes);
//! assert_eq!((format.opener(), format.closer()), ("<tool_call>", "</tool_call>"));
//! let body = format.call_schema(&functions, false)?;
//! assert_eq!(body["properties"]["name"], json!({"const": "get_weather"}));
//!
//! let names = ["get_weather".to_owned()];
//! let reply = ReplyReader::read(
//!     ReplyMode::Auto,
//!     &names,
//!     "Checking.<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>",
//! );
//! assert_eq!(reply.content.as_deref(), Some("Checking."));
//! assert_eq!(reply.calls[0].name, "get_weather");
//! assert_eq!(reply.calls[0].arguments, r#"{"city":"Oslo"}"#);
//! assert!(reply.calls[0].id.starts_with("call_"));
//! # Ok::<(), formwork_engine::EngineError>(())
//! ```

use serde_json::{Map, Value, json};

use crate::{EngineError, ToolFunction};

/// How a family of chat templates writes tool calls: see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ToolFormat {
    /// Hermes 2 Pro / Hermes 3 and Qwen 2.5 / QwQ: each call is
    /// `<tool_call>{"name": .., "arguments": {..}}</tool_call>`; parallel calls are
    /// several blocks.
    Hermes,
    /// Llama 3.1–3.3: one call per reply, `{"name": .., "parameters": {..}}`, after
    /// `<|python_tag|>` or (as the templates teach for custom tools) as the reply's
    /// leading JSON.
    Llama3,
    /// Mistral (Nemo and v3 templates): `[TOOL_CALLS]` then a JSON list of calls
    /// `[{"name": .., "arguments": {..}}, ..]`.
    Mistral,
    /// Templates that teach no syntax of the families above (or one we do not support
    /// yet: functionary's `<function=..>`, firefunction's `functools[..]`, Mistral v11's
    /// `[TOOL_CALLS]name[ARGS]{..}`): Hermes's `<tool_call>` blocks, the most widely
    /// trained syntax.
    #[default]
    Generic,
}

/// Hermes's call markers, also the generic fallback's.
const TOOL_CALL_OPEN: &str = "<tool_call>";
const TOOL_CALL_CLOSE: &str = "</tool_call>";
/// Llama 3.x's call marker (no closer: the call is one JSON value).
const PYTHON_TAG: &str = "<|python_tag|>";
/// Mistral's call marker (no closer: the calls are one JSON list).
const MISTRAL_TOOL_CALLS: &str = "[TOOL_CALLS]";

impl ToolFormat {
    /// Every format, the fallback last.
    pub const ALL: [ToolFormat; 4] = [
        ToolFormat::Hermes,
        ToolFormat::Llama3,
        ToolFormat::Mistral,
        ToolFormat::Generic,
    ];

    /// The family a chat template's source teaches, [`ToolFormat::Generic`] when it is
    /// none we support. The rules, first match wins:
    ///
    /// - `[TOOL_CALLS]` without `[ARGS]` (Mistral v11's name-outside-JSON syntax, not
    ///   supported): [`ToolFormat::Mistral`];
    /// - `<tool_call>`: [`ToolFormat::Hermes`];
    /// - Llama 3's `<|start_header_id|>` with `<|python_tag|>` or a `"parameters"` call
    ///   format, and no functionary `<function=` syntax: [`ToolFormat::Llama3`].
    pub fn detect(template_source: &str) -> ToolFormat {
        let has = |s: &str| template_source.contains(s);
        if has(MISTRAL_TOOL_CALLS) && !has("[ARGS]") {
            ToolFormat::Mistral
        } else if has(TOOL_CALL_OPEN) {
            ToolFormat::Hermes
        } else if has("<|start_header_id|>")
            && (has(PYTHON_TAG) || has("\"parameters\""))
            && !has("<function=")
        {
            ToolFormat::Llama3
        } else {
            ToolFormat::Generic
        }
    }

    /// Its name: `hermes`, `llama3`, `mistral`, `generic`.
    pub fn name(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::Llama3 => "llama3",
            ToolFormat::Mistral => "mistral",
            ToolFormat::Generic => "generic",
        }
    }

    /// The format called `name` (see [`ToolFormat::name`]; ASCII case ignored).
    pub fn from_name(name: &str) -> Option<ToolFormat> {
        ToolFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The string that opens a call: what an `auto`-mode constraint triggers on.
    /// `<tool_call>` (Hermes, generic), `<|python_tag|>` (Llama 3.x), `[TOOL_CALLS]`
    /// (Mistral).
    pub fn opener(self) -> &'static str {
        match self {
            ToolFormat::Hermes | ToolFormat::Generic => TOOL_CALL_OPEN,
            ToolFormat::Llama3 => PYTHON_TAG,
            ToolFormat::Mistral => MISTRAL_TOOL_CALLS,
        }
    }

    /// The string that closes a call: `</tool_call>` (Hermes, generic), empty (Llama
    /// 3.x, Mistral: the call ends with its JSON value).
    pub fn closer(self) -> &'static str {
        match self {
            ToolFormat::Hermes | ToolFormat::Generic => TOOL_CALL_CLOSE,
            ToolFormat::Llama3 | ToolFormat::Mistral => "",
        }
    }

    /// The key holding a call's arguments: `parameters` for Llama 3.x (as its templates
    /// teach), `arguments` for the others. The reader takes either.
    pub fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3 => "parameters",
            _ => "arguments",
        }
    }

    /// Whether this family may also open a call with bare JSON at the very start of the
    /// reply, no opener (Llama 3.x's custom-tool format). [`ReplyReader`] reads it in
    /// every format.
    pub fn leading_json(self) -> bool {
        self == ToolFormat::Llama3
    }

    /// The JSON Schema of what goes between [`ToolFormat::opener`] and
    /// [`ToolFormat::closer`] for a call of one of `functions`:
    ///
    /// - Hermes, generic, Llama 3.x: one call object `{NAME_KEY: NAME, ARGS_KEY: ARGS}`
    ///   (an `anyOf` over the functions when there are several; the arguments key is
    ///   [`ToolFormat::arguments_key`]). `parallel` does not change it: Hermes's parallel
    ///   calls are several blocks, and Llama 3.x makes one call per reply.
    /// - Mistral: a JSON list of call objects, `minItems: 1`, and `maxItems: 1` unless
    ///   `parallel`.
    ///
    /// Arguments follow [`arguments_schema`]. Errors: no functions, or parameters that
    /// cannot describe an object.
    pub fn call_schema(
        self,
        functions: &[ToolFunction],
        parallel: bool,
    ) -> Result<Value, EngineError> {
        let (call, defs) = call_object_schema(functions, self.arguments_key())?;
        let schema = match self {
            ToolFormat::Mistral => {
                let mut list = json!({"type": "array", "items": call, "minItems": 1});
                if !parallel {
                    list["maxItems"] = json!(1);
                }
                list
            }
            _ => call,
        };
        Ok(with_defs(schema, defs))
    }
}

impl std::fmt::Display for ToolFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The JSON Schema of a forced call (the whole reply, no opener):
/// `{"name": NAME, "arguments": ARGS}` for one of the functions, or with `parallel` a JSON
/// array of one or more of those. Parameters holding root-relative `$ref`s (`#/$defs/X`,
/// `#`) are moved under the root's `$defs` and their refs rewritten, so they still resolve
/// once nested. Arguments follow [`arguments_schema`].
pub fn tool_call_schema(functions: &[ToolFunction], parallel: bool) -> Result<Value, EngineError> {
    let (call, defs) = call_object_schema(functions, "arguments")?;
    let schema = if parallel {
        json!({"type": "array", "items": call, "minItems": 1})
    } else {
        call
    };
    Ok(with_defs(schema, defs))
}

/// The schema a function's arguments are constrained to: OpenAI's arguments are always a
/// JSON object, so a tool's `parameters` must describe one. The rule:
///
/// - `{}` or `true` (any value): any object, `{"type": "object"}`;
/// - a schema without `type`: the same schema with `"type": "object"` added (so
///   `{"properties": {..}}` is an object with those properties);
/// - `type: "object"`, or a list of types holding `"object"`: the schema with
///   `type: "object"`;
/// - any other `type`, `false`, or a value that is not a schema: an error naming the
///   function.
///
/// A tool declared with no `parameters` at all takes no arguments: its caller passes
/// [`no_arguments`].
pub fn arguments_schema(function: &str, parameters: &Value) -> Result<Value, EngineError> {
    let refuse = |what: String| {
        EngineError::Constraint(format!(
            "the parameters of function `{function}` must describe a JSON object (a call's arguments are one), {what}"
        ))
    };
    let mut schema = match parameters {
        Value::Bool(true) => return Ok(json!({"type": "object"})),
        Value::Object(obj) => obj.clone(),
        other => return Err(refuse(format!("got {other}"))),
    };
    match schema.get("type") {
        None => {}
        Some(Value::String(t)) if t == "object" => return Ok(Value::Object(schema)),
        Some(Value::Array(types)) if types.iter().any(|t| t == "object") => {}
        Some(t) => return Err(refuse(format!("got `type: {t}`"))),
    }
    schema.insert("type".to_owned(), json!("object"));
    Ok(Value::Object(schema))
}

/// The arguments of a function declared without parameters: only `{}`.
pub fn no_arguments() -> Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

impl ToolFunction {
    /// The function a chat tool declares (its `parameters` as given; none at all:
    /// [`no_arguments`]). Its arguments schema is checked when a call schema is built
    /// ([`arguments_schema`]).
    pub fn from_tool(tool: &formwork_template::Tool) -> ToolFunction {
        ToolFunction {
            name: tool.function.name.clone(),
            parameters: tool
                .function
                .parameters
                .clone()
                .unwrap_or_else(no_arguments),
            // `strict: false` compiles the parameters leniently.
            strict: tool.function.extra.get("strict") != Some(&Value::Bool(false)),
        }
    }
}

/// A fresh call id: `call_` and 24 random alphanumeric characters.
pub fn new_call_id() -> String {
    crate::id::random_id("call_")
}

/// One call object's schema per function (`anyOf` of them when several), and the `$defs`
/// their moved parameters need at the root.
fn call_object_schema(
    functions: &[ToolFunction],
    arguments_key: &str,
) -> Result<(Value, Map<String, Value>), EngineError> {
    if functions.is_empty() {
        return Err(EngineError::Constraint(
            "a tool call needs at least one function".into(),
        ));
    }
    let mut defs = Map::new();
    let mut calls: Vec<Value> = Vec::with_capacity(functions.len());
    for (i, f) in functions.iter().enumerate() {
        let parameters = arguments_schema(&f.name, &f.parameters)?;
        let arguments = if has_local_ref(&parameters) {
            let key = format!("formwork_tool_{i}");
            let base = format!("#/$defs/{key}");
            let mut moved = parameters;
            rebase_refs(&mut moved, &base, 0);
            defs.insert(key, moved);
            json!({ "$ref": base })
        } else {
            parameters
        };
        let mut properties = Map::new();
        properties.insert("name".to_owned(), json!({"const": f.name}));
        properties.insert(arguments_key.to_owned(), arguments);
        calls.push(json!({
            "type": "object",
            "properties": properties,
            "required": ["name", arguments_key],
            "additionalProperties": false
        }));
    }
    let call = match <[Value; 1]>::try_from(calls) {
        Ok([one]) => one,
        Err(many) => json!({ "anyOf": many }),
    };
    Ok((call, defs))
}

/// `schema` with `defs` as its root `$defs` (unchanged when there are none).
fn with_defs(mut schema: Value, defs: Map<String, Value>) -> Value {
    if !defs.is_empty()
        && let Some(obj) = schema.as_object_mut()
    {
        obj.insert("$defs".to_owned(), Value::Object(defs));
    }
    schema
}

/// Whether a schema holds a `$ref` relative to its own root (`#...`).
fn has_local_ref(schema: &Value) -> bool {
    match schema {
        Value::Object(obj) => obj.iter().any(|(k, v)| match (k.as_str(), v) {
            ("$ref", Value::String(r)) => r.starts_with('#'),
            ("const" | "enum" | "default" | "examples", _) => false,
            _ => has_local_ref(v),
        }),
        Value::Array(items) => items.iter().any(has_local_ref),
        _ => false,
    }
}

/// Rewrites root-relative `$ref`s (`#`, `#/...`) to live under `base`; `$defs` and
/// `definitions` stay where they are, inside the moved schema.
fn rebase_refs(schema: &mut Value, base: &str, depth: usize) {
    if depth > 256 {
        return;
    }
    match schema {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) if r.starts_with('#') => {
                        let fragment = &r[1..];
                        if fragment.starts_with('/') || fragment.is_empty() {
                            *r = format!("{base}{fragment}");
                        }
                        // `#anchor`: anchors are found anywhere in the document.
                    }
                    ("const" | "enum" | "default" | "examples", _) => {}
                    (_, v) => rebase_refs(v, base, depth + 1),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| rebase_refs(v, base, depth + 1)),
        _ => {}
    }
}

/// A call read from a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    /// A fresh id (`call_...`).
    pub id: String,
    /// The function's name (one of the allowed names).
    pub name: String,
    /// The arguments' JSON text (a truncated object when the reply was cut short).
    pub arguments: String,
}

/// A finished reply read by [`ReplyReader::read`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedReply {
    /// The text that is not calls (`None` if there is none).
    pub content: Option<String>,
    /// The calls, in order.
    pub calls: Vec<ParsedCall>,
}

/// A piece of a streamed call: the first piece of a call has `id` and `name` (and empty
/// `arguments`); later pieces only fragments of the arguments' JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the reply, from 0.
    pub index: u32,
    /// The call's id, in its first piece.
    pub id: Option<String>,
    /// The function's name, in its first piece.
    pub name: Option<String>,
    /// A fragment of the arguments' JSON text (empty in the first piece).
    pub arguments: String,
}

/// What a [`ReplyReader`] has to send after a piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyDelta {
    /// Text.
    Content(String),
    /// Pieces of calls.
    ToolCalls(Vec<ToolCallDelta>),
}

/// What a reply may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplyMode {
    /// Text only: no calls are read.
    Plain,
    /// Free text that may hold calls, in any family's syntax (a model does not always
    /// write its template's, and detection is a heuristic): Hermes `<tool_call>` blocks,
    /// `<|python_tag|>` or `[TOOL_CALLS]` followed by a call or a list of calls, anywhere;
    /// a reply that is wholly a JSON call or list of calls (Llama 3.x). Calls name an
    /// allowed function, else they stay text; a call is sent whole once complete. Text
    /// streams at once, but for a tail that may begin a marker and a reply that starts like
    /// JSON (held to the end: it may be a call).
    Auto,
    /// The reply is a forced call ([`tool_call_schema`]): a call is announced as soon as
    /// its name is read and its arguments stream as they come. A reply cut short (by
    /// `max_tokens`) still gives the calls begun, with truncated arguments; there is never
    /// content.
    Forced,
}

/// Reads one reply as it is generated: [`ReplyReader::push`] each new piece of text,
/// [`ReplyReader::finish`] at the end, and send what they return.
#[derive(Debug, Clone)]
pub struct ReplyReader {
    allowed: Vec<String>,
    state: ReaderState,
    /// Calls announced so far.
    calls: u32,
    /// Whitespace-only content held back, before any content or after a call: dropped
    /// next to a call, sent before more text or at the end of a reply with no call.
    held_space: String,
    /// Whether any content was sent.
    sent_content: bool,
}

#[derive(Debug, Clone)]
enum ReaderState {
    Plain,
    Forced(Box<ForcedScanner>),
    Auto(AutoState),
}

impl ReplyReader {
    /// A reader of a reply in `mode`, where calls may name the `allowed` functions.
    pub fn new(mode: ReplyMode, allowed: &[String]) -> ReplyReader {
        ReplyReader {
            allowed: allowed.to_vec(),
            state: match mode {
                ReplyMode::Plain => ReaderState::Plain,
                ReplyMode::Forced => ReaderState::Forced(Box::new(ForcedScanner {
                    allowed: allowed.to_vec(),
                    ..ForcedScanner::default()
                })),
                ReplyMode::Auto => ReaderState::Auto(AutoState::default()),
            },
            calls: 0,
            held_space: String::new(),
            sent_content: false,
        }
    }

    /// Reads a whole reply, the way [`ReplyReader::push`] streams it (so both agree).
    pub fn read(mode: ReplyMode, allowed: &[String], text: &str) -> ParsedReply {
        ReplyReader::read_reply(mode, allowed, text, false)
    }

    /// [`ReplyReader::read`] of a reply that was cut short or not (see
    /// [`ReplyReader::finish_cut`]).
    pub fn read_reply(mode: ReplyMode, allowed: &[String], text: &str, cut: bool) -> ParsedReply {
        let mut reader = ReplyReader::new(mode, allowed);
        let mut deltas = reader.push(text);
        deltas.extend(reader.finish_reply(cut));
        let mut content = String::new();
        let mut calls: Vec<ParsedCall> = Vec::new();
        for delta in deltas {
            match delta {
                ReplyDelta::Content(text) => content.push_str(&text),
                ReplyDelta::ToolCalls(pieces) => {
                    for piece in pieces {
                        match (piece.id, piece.name) {
                            (Some(id), Some(name)) => calls.push(ParsedCall {
                                id,
                                name,
                                arguments: piece.arguments,
                            }),
                            _ => {
                                if let Some(call) = calls.last_mut() {
                                    call.arguments.push_str(&piece.arguments);
                                }
                            }
                        }
                    }
                }
            }
        }
        ParsedReply {
            content: (!content.is_empty()).then_some(content),
            calls,
        }
    }

    /// Takes the next piece of generated text; returns what to send now.
    pub fn push(&mut self, text: &str) -> Vec<ReplyDelta> {
        let mut out = Vec::new();
        match &mut self.state {
            ReaderState::Plain => {
                if !text.is_empty() {
                    out.push(ReplyDelta::Content(text.to_owned()));
                }
            }
            ReaderState::Forced(scanner) => {
                scanner.feed(text);
                let deltas = scanner.take_deltas();
                self.calls = scanner.announced;
                if !deltas.is_empty() {
                    out.push(ReplyDelta::ToolCalls(deltas));
                }
            }
            ReaderState::Auto(_) => self.push_auto(text, false, &mut out),
        }
        out
    }

    /// Ends the reply; returns what is left to send.
    pub fn finish(&mut self) -> Vec<ReplyDelta> {
        self.finish_reply(false)
    }

    /// Ends a reply cut short (by `max_tokens`): in `auto` mode a call the reply opened and
    /// did not close is still a call, its name and its arguments so far (truncated JSON), as
    /// a cut forced call is; cut before its name, it is dropped. Its text is never content.
    /// Otherwise as [`ReplyReader::finish`].
    pub fn finish_cut(&mut self) -> Vec<ReplyDelta> {
        self.finish_reply(true)
    }

    /// [`ReplyReader::finish`] or, with `cut`, [`ReplyReader::finish_cut`].
    pub fn finish_reply(&mut self, cut: bool) -> Vec<ReplyDelta> {
        let mut out = Vec::new();
        if let ReaderState::Auto(state) = &mut self.state {
            state.cut = cut;
            self.push_auto("", true, &mut out);
        }
        out
    }

    /// Whether any call was sent.
    pub fn made_calls(&self) -> bool {
        self.calls > 0
    }

    fn push_auto(&mut self, text: &str, end: bool, out: &mut Vec<ReplyDelta>) {
        let ReaderState::Auto(state) = &mut self.state else {
            return;
        };
        state.buf.push_str(text);
        let mut pieces: Vec<AutoPiece> = Vec::new();
        loop {
            match state.phase {
                AutoPhase::Start => {
                    let trimmed = state.buf.trim_start();
                    let undecided = MARKERS
                        .iter()
                        .any(|m| m.open.starts_with(trimmed) && m.open != trimmed);
                    if (trimmed.is_empty() || undecided) && !end {
                        break;
                    }
                    let marker = MARKERS.iter().any(|m| trimmed.starts_with(m.open));
                    state.phase = if !marker && trimmed.starts_with(['{', '[']) {
                        AutoPhase::Json
                    } else {
                        AutoPhase::Text
                    };
                }
                AutoPhase::Json => {
                    if !end {
                        break;
                    }
                    let text = std::mem::take(&mut state.buf);
                    match json_calls(&text, &self.allowed, true) {
                        Some(calls) => pieces.extend(calls.into_iter().map(AutoPiece::Call)),
                        None => pieces.push(AutoPiece::Text(text)),
                    }
                    break;
                }
                AutoPhase::Text => {
                    let found = MARKERS
                        .iter()
                        .filter_map(|m| state.buf.find(m.open).map(|i| (i, m)))
                        .min_by_key(|(i, _)| *i);
                    if let Some((i, marker)) = found {
                        pieces.push(AutoPiece::Text(state.buf[..i].to_owned()));
                        state.buf.drain(..i + marker.open.len());
                        state.phase = AutoPhase::Call(marker);
                        continue;
                    }
                    // Keep back a tail that may be the start of a marker.
                    let keep = if end {
                        0
                    } else {
                        MARKERS
                            .iter()
                            .map(|m| partial_suffix(&state.buf, m.open))
                            .max()
                            .unwrap_or(0)
                    };
                    let send = state.buf.len() - keep;
                    pieces.push(AutoPiece::Text(state.buf[..send].to_owned()));
                    state.buf.drain(..send);
                    break;
                }
                AutoPhase::Call(marker) => {
                    let Some(read) = read_call(&state.buf, marker, end) else {
                        break;
                    };
                    // A call left open by a cut reply: what it holds so far, or nothing
                    // when not even its name was read (never its text as content).
                    let open = end && state.cut && read.consumed == state.buf.len();
                    let calls = read.body.and_then(|b| {
                        json_calls(b, &self.allowed, true).or_else(|| {
                            open.then(|| cut_calls(b, &self.allowed).unwrap_or_default())
                        })
                    });
                    match calls {
                        Some(calls) => pieces.extend(calls.into_iter().map(AutoPiece::Call)),
                        // Not a call: the marker and the text read stay text.
                        None => pieces.push(AutoPiece::Text(format!(
                            "{}{}",
                            marker.open,
                            &state.buf[..read.consumed]
                        ))),
                    }
                    state.buf.drain(..read.consumed);
                    state.phase = AutoPhase::Text;
                }
            }
        }
        for piece in pieces {
            match piece {
                AutoPiece::Text(text) => self.send_text(text, out),
                AutoPiece::Call(call) => self.send_call(call, out),
            }
        }
        if end {
            let held = std::mem::take(&mut self.held_space);
            if self.calls == 0 {
                push_content(held, out);
            }
        }
    }

    fn send_text(&mut self, text: String, out: &mut Vec<ReplyDelta>) {
        if text.is_empty() {
            return;
        }
        if text.trim().is_empty() && (self.calls > 0 || !self.sent_content) {
            self.held_space.push_str(&text);
            return;
        }
        self.sent_content = true;
        let text = std::mem::take(&mut self.held_space) + &text;
        push_content(text, out);
    }

    fn send_call(&mut self, (name, arguments): (String, String), out: &mut Vec<ReplyDelta>) {
        self.held_space.clear();
        let index = self.calls;
        self.calls += 1;
        let deltas = vec![header_delta(index, name), argument_delta(index, arguments)];
        match out.last_mut() {
            Some(ReplyDelta::ToolCalls(prev)) => prev.extend(deltas),
            _ => out.push(ReplyDelta::ToolCalls(deltas)),
        }
    }
}

fn push_content(text: String, out: &mut Vec<ReplyDelta>) {
    if text.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(ReplyDelta::Content(prev)) => prev.push_str(&text),
        _ => out.push(ReplyDelta::Content(text)),
    }
}

enum AutoPiece {
    Text(String),
    Call((String, String)),
}

/// A call marker an auto-mode reply is watched for.
#[derive(Debug, PartialEq, Eq)]
struct Marker {
    open: &'static str,
    /// The closing string; `None` when the call is the one JSON value after `open`.
    close: Option<&'static str>,
}

/// Every family's opener (see [`ToolFormat::opener`]), the one list the reader watches.
static MARKERS: [Marker; 3] = [
    Marker {
        open: TOOL_CALL_OPEN,
        close: Some(TOOL_CALL_CLOSE),
    },
    Marker {
        open: PYTHON_TAG,
        close: None,
    },
    Marker {
        open: MISTRAL_TOOL_CALLS,
        close: None,
    },
];

#[derive(Debug, Clone, Default)]
struct AutoState {
    phase: AutoPhase,
    /// Text not yet sent.
    buf: String,
    /// Whether the reply was cut short (set when it ends).
    cut: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum AutoPhase {
    /// Nothing but whitespace seen: the reply may be a leading JSON call.
    #[default]
    Start,
    /// The reply starts like JSON: held until the end.
    Json,
    /// Text, watched for markers.
    Text,
    /// After a marker.
    Call(&'static Marker),
}

/// What follows a marker, once it can be decided.
struct CallRead<'a> {
    /// The call's JSON text, if it was read whole.
    body: Option<&'a str>,
    /// Bytes of the buffer it used (the closer included).
    consumed: usize,
}

/// Reads a call after `marker` from `buf`: `None` while more text is needed.
fn read_call<'a>(buf: &'a str, marker: &Marker, end: bool) -> Option<CallRead<'a>> {
    match marker.close {
        Some(close) => match buf.find(close) {
            Some(j) => Some(CallRead {
                body: Some(&buf[..j]),
                consumed: j + close.len(),
            }),
            None if end => Some(CallRead {
                body: Some(buf),
                consumed: buf.len(),
            }),
            None => None,
        },
        None => {
            let mut values = serde_json::Deserializer::from_str(buf).into_iter::<Value>();
            match values.next() {
                Some(Ok(_)) => {
                    let consumed = values.byte_offset();
                    Some(CallRead {
                        body: Some(&buf[..consumed]),
                        consumed,
                    })
                }
                Some(Err(e)) if e.is_eof() && !end => None,
                None if !end => None,
                // Not JSON: the marker alone stays text and the rest is read as text.
                _ => Some(CallRead {
                    body: None,
                    consumed: 0,
                }),
            }
        }
    }
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
        id: Some(new_call_id()),
        name: Some(name),
        arguments: String::new(),
    }
}

fn argument_delta(index: u32, arguments: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: None,
        name: None,
        arguments,
    }
}

/// Reads `text` (after an optional leading marker) as one call object or an array of
/// them, each naming an allowed function; returns (name, arguments JSON text) pairs.
/// `lenient` also takes `parameters` for `arguments`, arguments given as a string of JSON,
/// and missing arguments (as `{}`).
fn json_calls(text: &str, allowed: &[String], lenient: bool) -> Option<Vec<(String, String)>> {
    let mut body = text.trim_start();
    for marker in &MARKERS {
        if marker.close.is_none()
            && let Some(rest) = body.strip_prefix(marker.open)
        {
            body = rest;
        }
    }
    let value: Value = serde_json::from_str(body.trim()).ok()?;
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

/// Streams forced calls: a JSON scanner over the constrained reply that announces a call
/// once its name is read and sends its arguments' text as it comes.
#[derive(Debug, Clone, Default)]
struct ForcedScanner {
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

impl ForcedScanner {
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

/// The calls a cut reply began in `body` (after a call opener): each call whose name was
/// read, with its arguments so far; `None` when no name was read.
fn cut_calls(body: &str, allowed: &[String]) -> Option<Vec<(String, String)>> {
    let mut scanner = ForcedScanner {
        allowed: allowed.to_vec(),
        ..ForcedScanner::default()
    };
    scanner.feed(body.trim_start());
    let mut calls: Vec<(String, String)> = Vec::new();
    for delta in scanner.take_deltas() {
        match delta.name {
            Some(name) => calls.push((name, delta.arguments)),
            None => {
                if let Some(call) = calls.last_mut() {
                    call.1.push_str(&delta.arguments);
                }
            }
        }
    }
    (!calls.is_empty()).then_some(calls)
}

/// Joins consecutive argument fragments of the same call.
fn merge_deltas(deltas: Vec<ToolCallDelta>) -> Vec<ToolCallDelta> {
    let mut out: Vec<ToolCallDelta> = Vec::with_capacity(deltas.len());
    for d in deltas {
        if let Some(prev) = out.last_mut()
            && prev.index == d.index
            && prev.id.is_none()
            && d.id.is_none()
        {
            prev.arguments.push_str(&d.arguments);
            continue;
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_auto_call_cut_short_is_still_a_call() {
        let names = ["get_weather".to_owned()];
        let text =
            "Let me check.<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par";
        // Ended normally, an open block is text; cut short, it is a call with what it has.
        let whole = ReplyReader::read(ReplyMode::Auto, &names, text);
        assert!(whole.calls.is_empty());
        let cut = ReplyReader::read_reply(ReplyMode::Auto, &names, text, true);
        assert_eq!(cut.content.as_deref(), Some("Let me check."));
        assert_eq!(cut.calls.len(), 1);
        assert_eq!(cut.calls[0].name, "get_weather");
        assert!(
            cut.calls[0].arguments.starts_with("{\"city\""),
            "{:?}",
            cut.calls[0]
        );
        // Streamed in pieces, the same.
        let mut reader = ReplyReader::new(ReplyMode::Auto, &names);
        let mut deltas = Vec::new();
        for piece in text.as_bytes().chunks(7) {
            deltas.extend(reader.push(std::str::from_utf8(piece).unwrap()));
        }
        deltas.extend(reader.finish_cut());
        let names_sent: Vec<_> = deltas
            .iter()
            .filter_map(|d| match d {
                ReplyDelta::ToolCalls(c) => c.iter().find_map(|c| c.name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(names_sent, ["get_weather"]);
        // Cut before the name was read: no call, and the call's text is not content.
        let early = "Hm.<tool_call>{\"na";
        let cut = ReplyReader::read_reply(ReplyMode::Auto, &names, early, true);
        assert!(cut.calls.is_empty());
        assert_eq!(cut.content.as_deref(), Some("Hm."));
    }

    use super::*;

    fn weather() -> ToolFunction {
        ToolFunction {
            name: "get_weather".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            strict: true,
        }
    }

    fn time() -> ToolFunction {
        ToolFunction {
            name: "get_time".into(),
            parameters: no_arguments(),
            strict: true,
        }
    }

    fn names() -> Vec<String> {
        vec!["get_weather".into(), "get_time".into()]
    }

    /// Streams `text` in pieces of `n` characters and reassembles content and calls.
    fn stream_all(
        mode: ReplyMode,
        text: &str,
        n: usize,
    ) -> (String, Vec<(String, String, String)>, bool) {
        let mut reader = ReplyReader::new(mode, &names());
        let mut deltas = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(n) {
            deltas.extend(reader.push(&piece.iter().collect::<String>()));
        }
        deltas.extend(reader.finish());
        let mut content = String::new();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        for d in deltas {
            match d {
                ReplyDelta::Content(t) => {
                    assert!(!t.is_empty());
                    content.push_str(&t);
                }
                ReplyDelta::ToolCalls(tc) => {
                    for d in tc {
                        let i = d.index as usize;
                        if let Some(id) = d.id {
                            assert_eq!(i, calls.len(), "calls are announced in order");
                            assert_eq!(d.arguments, "");
                            calls.push((id, d.name.unwrap(), String::new()));
                        } else {
                            assert!(d.name.is_none());
                            calls[i].2.push_str(&d.arguments);
                        }
                    }
                }
            }
        }
        // A whole reply reads the same.
        let whole = ReplyReader::read(mode, &names(), text);
        assert_eq!(whole.content.as_deref().unwrap_or(""), content, "{text}");
        let whole_calls: Vec<_> = whole
            .calls
            .iter()
            .map(|c| (&c.name, &c.arguments))
            .collect();
        let streamed: Vec<_> = calls.iter().map(|c| (&c.1, &c.2)).collect();
        assert_eq!(whole_calls, streamed, "{text}");
        (content, calls, reader.made_calls())
    }

    fn compiles_to(schema: &Value) -> formwork_index::ByteDfa {
        let regex = formwork_schema::Compiler::new().compile(schema).unwrap();
        formwork_index::ByteDfa::new(&regex).unwrap()
    }

    #[test]
    fn one_function_forced_schema_is_one_object() {
        assert_eq!(
            tool_call_schema(&[weather()], false).unwrap(),
            json!({"type": "object",
                   "properties": {"name": {"const": "get_weather"},
                                  "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                   "required": ["name", "arguments"], "additionalProperties": false})
        );
    }

    #[test]
    fn several_functions_forced_schema_is_an_array_of_any_of() {
        let s = tool_call_schema(&[weather(), time()], true).unwrap();
        assert_eq!(s["type"], "array");
        assert_eq!(s["minItems"], 1);
        let any = s["items"]["anyOf"].as_array().unwrap();
        assert_eq!(any.len(), 2);
        assert_eq!(any[1]["properties"]["name"]["const"], "get_time");
        assert_eq!(any[1]["properties"]["arguments"], no_arguments());
        assert!(tool_call_schema(&[weather(), time()], false).unwrap()["anyOf"].is_array());
        assert!(tool_call_schema(&[], false).is_err());
    }

    #[test]
    fn forced_schemas_compile_and_admit_the_calls() {
        for (functions, parallel, good, bad) in [
            (
                vec![weather(), time()],
                true,
                r#"[{"name":"get_time","arguments":{}},{"name":"get_weather","arguments":{"city":"Oslo"}}]"#,
                r#"[{"name":"get_weather","arguments":{}}]"#,
            ),
            (
                vec![weather(), time()],
                false,
                r#"{"name":"get_weather","arguments":{"city":"Oslo"}}"#,
                r#"{"name":"nope","arguments":{}}"#,
            ),
            (
                vec![time()],
                false,
                r#"{"name":"get_time","arguments":{}}"#,
                r#"{"name":"get_time","arguments":{"x":1}}"#,
            ),
        ] {
            let schema = tool_call_schema(&functions, parallel).unwrap();
            let dfa = compiles_to(&schema);
            assert!(dfa.matches(good.as_bytes()), "{good}");
            assert!(!dfa.matches(bad.as_bytes()), "{bad}");
            let validator = jsonschema::validator_for(&schema).unwrap();
            assert!(validator.is_valid(&serde_json::from_str(good).unwrap()));
        }
    }

    #[test]
    fn refs_in_parameters_still_resolve() {
        let person = ToolFunction {
            name: "add_person".into(),
            parameters: json!({
                "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                "type": "object",
                "properties": {"address": {"$ref": "#/$defs/Address"}, "const_ref": {"const": {"$ref": "#/x"}}},
                "required": ["address"]
            }),
            strict: true,
        };
        let schema = tool_call_schema(&[person.clone(), time()], false).unwrap();
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
        let dfa = compiles_to(&schema);
        assert!(dfa.matches(br#"{"name":"add_person","arguments":{"address":{"city":"Oslo"}}}"#));
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(
            validator.is_valid(
                &json!({"name": "add_person", "arguments": {"address": {"city": "Oslo"}}})
            )
        );
        assert!(!validator.is_valid(&json!({"name": "add_person", "arguments": {"address": {}}})));
        // Parameters that are a root `$ref` (no `type`: one is added beside it).
        let by_ref = ToolFunction {
            name: "by_ref".into(),
            parameters: json!({"$defs": {"Args": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
                               "$ref": "#/$defs/Args"}),
            strict: true,
        };
        let schema = tool_call_schema(&[by_ref], false).unwrap();
        let dfa = compiles_to(&schema);
        assert!(dfa.matches(br#"{"name":"by_ref","arguments":{"n":3}}"#));
        assert!(!dfa.matches(br#"{"name":"by_ref","arguments":{}}"#));
        // A family's body keeps the refs resolvable too (Mistral: under a list).
        let body = ToolFormat::Mistral.call_schema(&[person], true).unwrap();
        let dfa = compiles_to(&body);
        assert!(dfa.matches(br#"[{"name":"add_person","arguments":{"address":{"city":"Oslo"}}}]"#));
    }

    /// Issue 15, item 8: `parameters: {}` allowed any JSON value, so a forced call's
    /// `arguments` came out as a string (`"arguments":"Smaramire: "`).
    #[test]
    fn empty_parameters_mean_an_object() {
        let any = ToolFunction {
            name: "echo".into(),
            parameters: json!({}),
            strict: true,
        };
        let schema = tool_call_schema(&[any], false).unwrap();
        assert_eq!(schema["properties"]["arguments"], json!({"type": "object"}));
        let dfa = compiles_to(&schema);
        assert!(!dfa.matches(br#"{"name":"echo","arguments":"Smaramire: "}"#));
        assert!(dfa.matches(br#"{"name":"echo","arguments":{"text":"hi"}}"#));
        // The rule: no `type` gets `"type": "object"`; a type list keeps its object.
        assert_eq!(
            arguments_schema("f", &json!({"properties": {"a": {"type": "integer"}}})).unwrap(),
            json!({"type": "object", "properties": {"a": {"type": "integer"}}})
        );
        assert_eq!(
            arguments_schema("f", &json!(true)).unwrap(),
            json!({"type": "object"})
        );
        assert_eq!(
            arguments_schema("f", &json!({"type": ["object", "null"]})).unwrap(),
            json!({"type": "object"})
        );
        for bad in [
            json!({"type": "string"}),
            json!(false),
            json!("x"),
            json!(3),
        ] {
            let e = arguments_schema("f", &bad).unwrap_err().to_string();
            assert!(e.contains("`f`") && e.contains("object"), "{e}");
        }
        // And the reader returns such a call as a call.
        let reply = ReplyReader::read(
            ReplyMode::Forced,
            &["echo".to_owned()],
            r#"{"name":"echo","arguments":{"text":"hi"}}"#,
        );
        assert_eq!(reply.content, None);
        assert_eq!(reply.calls[0].arguments, r#"{"text":"hi"}"#);
    }

    #[test]
    fn family_bodies() {
        let functions = [weather(), time()];
        for format in [ToolFormat::Hermes, ToolFormat::Generic] {
            assert_eq!(format.opener(), "<tool_call>");
            assert_eq!(format.closer(), "</tool_call>");
            let body = format.call_schema(&functions, true).unwrap();
            assert_eq!(body, tool_call_schema(&functions, false).unwrap());
        }
        let llama = ToolFormat::Llama3.call_schema(&functions, true).unwrap();
        assert_eq!(
            (ToolFormat::Llama3.opener(), ToolFormat::Llama3.closer()),
            ("<|python_tag|>", "")
        );
        assert_eq!(llama["anyOf"][0]["required"], json!(["name", "parameters"]));
        let dfa = compiles_to(&llama);
        assert!(dfa.matches(br#"{"name":"get_weather","parameters":{"city":"Rome"}}"#));
        assert!(!dfa.matches(br#"{"name":"get_weather","arguments":{"city":"Rome"}}"#));
        let one = ToolFormat::Mistral.call_schema(&functions, false).unwrap();
        assert_eq!(one["maxItems"], 1);
        let many = ToolFormat::Mistral.call_schema(&functions, true).unwrap();
        let dfa = compiles_to(&many);
        assert!(dfa.matches(br#"[{"name":"get_time","arguments":{}},{"name":"get_weather","arguments":{"city":"Rome"}}]"#));
        assert!(!compiles_to(&one).matches(
            br#"[{"name":"get_time","arguments":{}},{"name":"get_time","arguments":{}}]"#
        ));
        // What the family's body admits, its reader reads back as calls.
        for (format, text) in [
            (
                ToolFormat::Hermes,
                r#"<tool_call>{"name":"get_weather","arguments":{"city":"Rome"}}</tool_call>"#,
            ),
            (
                ToolFormat::Llama3,
                r#"<|python_tag|>{"name":"get_weather","parameters":{"city":"Rome"}}"#,
            ),
            (
                ToolFormat::Mistral,
                r#"[TOOL_CALLS][{"name":"get_weather","arguments":{"city":"Rome"}}]"#,
            ),
        ] {
            let (content, calls, _) = stream_all(ReplyMode::Auto, &format!("Sure. {text}"), 3);
            assert_eq!(content, "Sure. ", "{format}");
            assert_eq!(calls.len(), 1, "{format}");
            assert_eq!(calls[0].2, r#"{"city":"Rome"}"#);
        }
        for format in ToolFormat::ALL {
            assert_eq!(ToolFormat::from_name(format.name()), Some(format));
        }
    }

    /// Detection on the real templates of ../shared/data/chat_templates.
    #[test]
    fn detects_the_families_of_real_templates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/chat_templates");
        let expected = [
            (
                "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use",
                ToolFormat::Hermes,
            ),
            (
                "NousResearch-Hermes-3-Llama-3.1-8B-tool_use",
                ToolFormat::Hermes,
            ),
            ("Qwen-Qwen2.5-7B-Instruct", ToolFormat::Hermes),
            ("Qwen-QwQ-32B", ToolFormat::Hermes),
            ("meta-llama-Llama-3.2-3B-Instruct", ToolFormat::Llama3),
            ("meta-llama-Llama-3.3-70B-Instruct", ToolFormat::Llama3),
            ("mistralai-Mistral-Nemo-Instruct-2407", ToolFormat::Mistral),
            // Mistral v11's `[TOOL_CALLS]name[ARGS]{..}`: not supported, generic.
            ("Mistral-Small-3.2-24B-Instruct-2506", ToolFormat::Generic),
            ("unsloth-mistral-Devstral-Small-2507", ToolFormat::Generic),
            ("meetkai-functionary-medium-v3.1", ToolFormat::Generic),
            ("meetkai-functionary-medium-v3.2", ToolFormat::Generic),
            ("fireworks-ai-llama-3-firefunction-v2", ToolFormat::Generic),
            (
                "deepseek-ai-DeepSeek-R1-Distill-Llama-8B",
                ToolFormat::Generic,
            ),
            ("google-gemma-2-2b-it", ToolFormat::Generic),
            ("microsoft-Phi-3.5-mini-instruct", ToolFormat::Generic),
            (
                "CohereForAI-c4ai-command-r-plus-tool_use",
                ToolFormat::Generic,
            ),
        ];
        for (name, format) in expected {
            let path = dir.join(format!("{name}.jinja"));
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("test data {}: {e}", path.display()));
            assert_eq!(ToolFormat::detect(&source), format, "{name}");
        }
        assert_eq!(ToolFormat::detect(""), ToolFormat::Generic);
    }

    #[test]
    fn reads_forced_replies() {
        let text = r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_time","arguments":{}}]"#;
        let reply = ReplyReader::read(ReplyMode::Forced, &names(), text);
        assert_eq!(reply.content, None);
        assert_eq!(reply.calls.len(), 2);
        assert_eq!(reply.calls[0].name, "get_weather");
        assert_eq!(reply.calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(reply.calls[1].arguments, "{}");
        assert_ne!(reply.calls[0].id, reply.calls[1].id);
    }

    /// Issue 15, item 8: a forced call cut by `max_tokens` came back whole as content
    /// (`{"name":..,"argu`), while streamed it was a call. Now both are a call with
    /// truncated arguments.
    #[test]
    fn a_cut_forced_call_is_still_a_call() {
        for (text, arguments) in [
            (r#"[{"name":"get_weather","argu"#, ""),
            (
                r#"{"name":"get_weather","arguments":{"city":"Pa"#,
                r#"{"city":"Pa"#,
            ),
            (
                r#"[{"name":"get_time","arguments":{}},{"name":"get_weather","arguments":{"ci"#,
                r#"{"ci"#,
            ),
        ] {
            for n in [1, 4, 1000] {
                let (content, calls, made) = stream_all(ReplyMode::Forced, text, n);
                assert_eq!(content, "");
                assert!(made);
                assert_eq!(calls.last().unwrap().2, arguments, "{text}");
            }
            let reply = ReplyReader::read(ReplyMode::Forced, &names(), text);
            assert_eq!(reply.content, None, "{text}");
            assert_eq!(reply.calls.last().unwrap().arguments, arguments);
        }
        // Cut inside the name: no call yet, and never our JSON as content.
        let reply = ReplyReader::read(ReplyMode::Forced, &names(), r#"{"name":"get_wea"#);
        assert_eq!(reply, ParsedReply::default());
    }

    #[test]
    fn streams_forced_calls_incrementally() {
        let text = r#"[{"name":"get_weather","arguments":{"city":"Pa\"ris }","n":[1,{"a":2}]}},{"name":"get_time","arguments":{}}]"#;
        for n in [1, 2, 3, 7, 1000] {
            let (content, calls, made) = stream_all(ReplyMode::Forced, text, n);
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
        let mut reader = ReplyReader::new(ReplyMode::Forced, &names());
        let first = reader.push(r#"[{"name":"get_weather","arguments":{"ci"#);
        let ReplyDelta::ToolCalls(deltas) = &first[0] else {
            panic!("{first:?}")
        };
        assert_eq!(deltas.len(), 2);
        assert_eq!(deltas[1].arguments, r#"{"ci"#);
        let next = reader.push(r#"ty":"X"}}]"#);
        assert_eq!(
            next,
            vec![ReplyDelta::ToolCalls(vec![argument_delta(
                0,
                r#"ty":"X"}"#.into()
            )])]
        );
        assert!(reader.finish().is_empty());
        // One call object, non-ASCII.
        let text = "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Zürich\"}}";
        for n in [1, 4, 100] {
            let (_, calls, _) = stream_all(ReplyMode::Forced, text, n);
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].2, "{\"city\":\"Zürich\"}");
        }
    }

    #[test]
    fn reads_auto_replies() {
        // Hermes / Qwen blocks, with text before.
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>\n<tool_call>{\"name\": \"get_time\"}</tool_call>\n";
        for n in [1, 2, 5, 1000] {
            let (content, calls, made) = stream_all(ReplyMode::Auto, text, n);
            assert_eq!(content, "Let me check.\n", "piece size {n}");
            assert!(made);
            assert_eq!(calls.len(), 2);
            assert_eq!(calls[0].2, r#"{"city":"Rome"}"#);
            assert_eq!(calls[1].2, "{}");
        }
        // Llama 3 JSON with `parameters`, and the markers.
        for (text, arguments) in [
            (
                r#"  {"name": "get_weather", "parameters": {"city": "Oslo"}}"#,
                r#"{"city":"Oslo"}"#,
            ),
            (
                r#"[TOOL_CALLS][{"name": "get_time", "arguments": "{}"}]"#,
                "{}",
            ),
            (
                r#"[TOOL_CALLS][{"name": "get_time", "arguments": {}}]"#,
                "{}",
            ),
            (r#"<|python_tag|>{"name": "get_time"}"#, "{}"),
        ] {
            for n in [1, 2, 1000] {
                let (content, calls, _) = stream_all(ReplyMode::Auto, text, n);
                assert_eq!(content, "", "{text}");
                assert_eq!(calls.len(), 1, "{text}");
                assert_eq!(calls[0].2, arguments);
            }
        }
        // Unknown names, plain JSON, broken blocks and text stay content.
        for text in [
            r#"{"name": "rm_rf", "arguments": {}}"#,
            r#"{"answer": 42}"#,
            "<tool_call>{oops}</tool_call> done",
            "<tool_call>{broken</tool_call> after",
            "Plain text < with <tool brackets> and <tool_call",
            "It is sunny.",
            "[1, 2]",
            "   ",
            "<|python_",
            "<|python_tag|>not json",
            "[TOOL_CALLS] [{\"name\": \"rm_rf\"}] ok",
            "",
        ] {
            for n in [1, 3, 1000] {
                let (content, calls, made) = stream_all(ReplyMode::Auto, text, n);
                assert_eq!(content, text, "piece size {n}");
                assert!(calls.is_empty() && !made);
            }
        }
        // An unterminated block at the end still counts.
        let (_, calls, _) = stream_all(
            ReplyMode::Auto,
            r#"<tool_call>{"name": "get_time", "arguments": {}}"#,
            3,
        );
        assert_eq!(calls.len(), 1);
        // Plain mode: everything is content.
        let text = r#"{"name": "get_weather", "arguments": {"city": "Oslo"}}"#;
        let (content, calls, _) = stream_all(ReplyMode::Plain, text, 4);
        assert_eq!((content.as_str(), calls.len()), (text, 0));
    }

    #[test]
    fn text_streams_immediately_in_auto_mode() {
        let mut reader = ReplyReader::new(ReplyMode::Auto, &names());
        assert_eq!(
            reader.push("Hello"),
            vec![ReplyDelta::Content("Hello".into())]
        );
        assert_eq!(reader.push(" <tool"), vec![ReplyDelta::Content(" ".into())]);
        assert_eq!(
            reader.push("box>"),
            vec![ReplyDelta::Content("<toolbox>".into())]
        );
        assert_eq!(reader.push(" [TOOL"), vec![ReplyDelta::Content(" ".into())]);
        assert_eq!(
            reader.push("S]"),
            vec![ReplyDelta::Content("[TOOLS]".into())]
        );
        assert!(reader.finish().is_empty());
        assert!(!reader.made_calls());
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
