//! Tool calling over OpenAI's API: a chat request's `tools`, `tool_choice` and
//! `parallel_tool_calls` read into a [`ToolPlan`], and the engine's reading of a reply
//! ([`formwork_engine::tools`], the one owner of the call formats: schemas, openers,
//! parsers) mapped to OpenAI's `tool_calls`, whole or streamed.
//!
//! - **`"none"`** ([`ToolMode::None`]): no call is made or read; the tools still reach
//!   the chat template (the model may read about them).
//! - **`"auto"`** ([`ToolMode::Auto`], the default when tools are given): the model
//!   answers freely; its reply is read for calls in any family's syntax
//!   ([`ReplyMode::Auto`]). Only the allowed tools' names count; anything else stays
//!   content.
//! - **`"required"`** or a named function ([`ToolMode::Required`]): the reply is
//!   constrained by [`ToolPlan::schema`] to a JSON call of an allowed function
//!   ([`formwork_engine::tool_call_schema`]): `{"name": NAME, "arguments": ARGS}`, an
//!   `anyOf` over several functions, and a JSON array of one or more calls when
//!   `parallel_tool_calls` is not `false` and more than one function is allowed. A reply
//!   cut short by `max_tokens` still gives the calls begun, with truncated arguments
//!   (finish reason `length`), streamed or not.
//! - **`allowed_tools`** (`{"type": "allowed_tools", "allowed_tools": {"mode": ..,
//!   "tools": [..]}}`): every tool reaches the template, but only the listed ones may be
//!   called: `required` is [`ToolMode::Required`] over them, `auto` is [`ToolMode::Auto`]
//!   reading only their calls ([`ToolPlan::allowed`]).
//!
//! Arguments are always a JSON object: a tool's `parameters` of `{}` or without `type`
//! mean an object ([`formwork_engine::tools::arguments_schema`]), one whose `type` is not
//! `object` is refused (400); no `parameters` at all means no arguments (only `{}`).
//!
//! [`ToolPlan::parse`] turns a finished reply into content and calls (ids `call_...`,
//! arguments as a JSON string); [`ToolPlan::stream`] does the same incrementally with
//! OpenAI's delta protocol: a call's first delta has `index`, `id`, `type` and the
//! function's name with `arguments: ""`, later ones fragments of the arguments.
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

use formwork_engine::ToolFunction;
use formwork_engine::tools::{self, ReplyDelta, ReplyMode, ReplyReader};
use formwork_template::Tool;
use serde_json::Value;

use crate::error::ApiError;
use crate::protocol::{
    AllowedToolsMode, ChatCompletionRequest, FinishReason, FunctionCall, FunctionCallDelta,
    ResponsesRequest, ToolCall, ToolCallDelta, ToolChoice, ToolType,
};

/// How a request uses its tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolMode {
    /// No calls: no tools, or `tool_choice: "none"`.
    None,
    /// The model may call a tool; its free reply is read for calls.
    Auto,
    /// The model must call an allowed tool; its reply is constrained.
    Required,
}

/// What a chat request does with its tools: see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolPlan {
    tools: Vec<Tool>,
    mode: ToolMode,
    /// Names of the functions a call may name: the allowed ones (all declared ones, a
    /// named one, or an `allowed_tools` list).
    allowed: Vec<String>,
    /// Whether a required reply is an array of calls.
    parallel: bool,
    /// The request's `parallel_tool_calls` (default true).
    parallel_tool_calls: bool,
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

    /// The plan of a Responses request: its flat function tools and `tool_choice` read
    /// into the chat route's types; errors name the Responses fields (`tools[0].name`).
    pub fn from_responses(req: &ResponsesRequest) -> Result<ToolPlan, ApiError> {
        let tools = req.function_tools()?;
        let choice = req.tool_choice()?;
        ToolPlan::new(Some(&tools), choice.as_ref(), req.parallel_tool_calls).map_err(|e| {
            match e.param_name().map(|p| p.replace(".function.", ".")) {
                Some(param) => e.param(param),
                None => e,
            }
        })
    }

    /// The plan of `tools`, `tool_choice` and `parallel_tool_calls`. Refuses (400)
    /// tools of a `type` other than `function`, a `strict` that is not a boolean,
    /// duplicate or empty tool names, parameters that are not a schema of an object, a
    /// `tool_choice` other than `"none"` without tools, and a named or allowed function
    /// that is not among the tools.
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
            if let Some(p) = &tool.function.parameters {
                tools::arguments_schema(name, p).map_err(|e| {
                    ApiError::invalid_request(e.to_string())
                        .param(format!("tools[{i}].function.parameters"))
                })?;
            }
        }
        let names = || tools.iter().map(|t| t.function.name.clone()).collect();
        let declared = |names: &[String]| {
            names.iter().try_for_each(|name| {
                if tools.is_empty() || tools.iter().any(|t| &t.function.name == name) {
                    Ok(())
                } else {
                    Err(ApiError::invalid_request(format!(
                        "`tool_choice` names the function `{name}`, which is not among the tools"
                    ))
                    .param("tool_choice"))
                }
            })
        };
        let (mode, allowed) = match choice {
            None if tools.is_empty() => (ToolMode::None, Vec::new()),
            None | Some(ToolChoice::Auto) => (ToolMode::Auto, names()),
            Some(ToolChoice::None) => (ToolMode::None, Vec::new()),
            Some(ToolChoice::Required) => (ToolMode::Required, names()),
            Some(ToolChoice::Function(name)) => {
                let allowed = vec![name.clone()];
                declared(&allowed)?;
                (ToolMode::Required, allowed)
            }
            Some(ToolChoice::AllowedTools { mode, tools: list }) => {
                declared(list)?;
                let mode = match mode {
                    AllowedToolsMode::Auto => ToolMode::Auto,
                    AllowedToolsMode::Required if list.is_empty() => {
                        return Err(ApiError::invalid_request(
                            "`tool_choice.allowed_tools.tools` must list at least one tool in `required` mode",
                        )
                        .param("tool_choice.allowed_tools.tools"));
                    }
                    AllowedToolsMode::Required => ToolMode::Required,
                };
                (mode, list.clone())
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
            parallel_tool_calls: parallel_tool_calls.unwrap_or(true),
        })
    }

    /// The request's mode.
    pub fn mode(&self) -> ToolMode {
        self.mode
    }

    /// Whether several calls may be made in one reply (`parallel_tool_calls` not
    /// `false` and more than one allowed function); a required reply is then a JSON
    /// array of calls, else one call object.
    pub fn parallel(&self) -> bool {
        self.parallel
    }

    /// The request's `parallel_tool_calls` (true unless it says `false`): whether a reply
    /// may hold several calls, of the same function too (what an `auto`-mode reply
    /// follows; a required reply follows [`ToolPlan::parallel`]).
    pub fn parallel_tool_calls(&self) -> bool {
        self.parallel_tool_calls
    }

    /// The names of the functions a call may name (empty in [`ToolMode::None`]).
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }

    /// The tools for the chat template, in every mode (`None` when there are none).
    pub fn template_tools(&self) -> Option<Vec<formwork_template::Tool>> {
        (!self.tools.is_empty()).then(|| self.tools.clone())
    }

    /// The functions a call may name, as the engine takes them (a tool declared without
    /// parameters takes only `{}`: [`tools::no_arguments`]); empty in [`ToolMode::None`].
    pub fn functions(&self) -> Vec<ToolFunction> {
        self.allowed
            .iter()
            .filter_map(|name| self.tools.iter().find(|t| &t.function.name == name))
            .map(ToolFunction::from_tool)
            .collect()
    }

    /// The JSON Schema a required reply must follow ([`formwork_engine::tool_call_schema`]);
    /// `None` unless the mode is [`ToolMode::Required`].
    pub fn schema(&self) -> Option<Value> {
        if self.mode != ToolMode::Required {
            return None;
        }
        // `new` checked every parameters schema, so this cannot fail.
        formwork_engine::tool_call_schema(&self.functions(), self.parallel).ok()
    }

    /// [`ToolPlan::schema`] as the engine's constraint; `None` unless the mode is
    /// [`ToolMode::Required`].
    pub fn constraint(&self) -> Option<formwork_engine::Constraint> {
        // The engine's own tool-call constraint: the schema of [`ToolPlan::schema`], each
        // function's parameters strict or lenient as its `strict` says.
        (self.mode == ToolMode::Required).then(|| formwork_engine::Constraint::ToolCall {
            functions: self.functions(),
            parallel: self.parallel,
        })
    }

    /// In `auto` mode, the functions the model may call mid-reply, for the engine to
    /// constrain each call it opens ([`formwork_engine::Request::auto_tools`]); `None` in
    /// the other modes.
    pub fn auto_tools(&self) -> Option<formwork_engine::AutoTools> {
        (self.mode == ToolMode::Auto).then(|| formwork_engine::AutoTools {
            functions: self.functions(),
            parallel: self.parallel_tool_calls,
        })
    }

    /// How the engine reads this plan's replies.
    pub fn reply_mode(&self) -> ReplyMode {
        match self.mode {
            ToolMode::None => ReplyMode::Plain,
            ToolMode::Auto => ReplyMode::Auto,
            ToolMode::Required => ReplyMode::Forced,
        }
    }

    /// Reads a finished reply into content and tool calls ([`ReplyReader::read`]).
    pub fn parse(&self, text: &str) -> ParsedOutput {
        self.parse_ended(text, false)
    }

    /// [`ToolPlan::parse`] of a reply that was `cut` short or not: a cut reply's open call is
    /// still a call ([`ReplyReader::finish_cut`]).
    pub fn parse_ended(&self, text: &str, cut: bool) -> ParsedOutput {
        let reply = ReplyReader::read_reply(self.reply_mode(), &self.allowed, text, cut);
        ParsedOutput {
            content: reply.content,
            tool_calls: reply
                .calls
                .into_iter()
                .map(|call| ToolCall {
                    id: call.id,
                    kind: ToolType::Function,
                    function: FunctionCall {
                        name: call.name,
                        arguments: call.arguments,
                    },
                })
                .collect(),
        }
    }

    /// An incremental reader of one choice's reply.
    pub fn stream(&self) -> ToolStream {
        ToolStream {
            reader: ReplyReader::new(self.reply_mode(), &self.allowed),
        }
    }
}

/// A finished reply read by [`ToolPlan::parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOutput {
    /// The text that is not tool calls (`None` if there is none).
    pub content: Option<String>,
    /// The calls, with fresh ids.
    pub tool_calls: Vec<ToolCall>,
}

impl ParsedOutput {
    /// The choice's finish reason: `tool_calls` when calls were made and the engine
    /// stopped normally, else the engine's reason (`length` for a cut call).
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

/// Reads one choice's reply as it is generated: [`ToolStream::push`] each new piece
/// of text, [`ToolStream::finish`] at the end, and send what they return.
#[derive(Debug, Clone)]
pub struct ToolStream {
    reader: ReplyReader,
}

impl ToolStream {
    /// Takes the next piece of generated text; returns what to send now.
    pub fn push(&mut self, text: &str) -> Vec<StreamDelta> {
        self.reader
            .push(text)
            .into_iter()
            .map(openai_delta)
            .collect()
    }

    /// Ends the reply; returns what is left to send.
    pub fn finish(&mut self) -> Vec<StreamDelta> {
        self.finish_reply(false)
    }

    /// Ends a reply that was `cut` short or not ([`ReplyReader::finish_cut`]).
    pub fn finish_reply(&mut self, cut: bool) -> Vec<StreamDelta> {
        self.reader
            .finish_reply(cut)
            .into_iter()
            .map(openai_delta)
            .collect()
    }

    /// Whether any tool call was sent.
    pub fn made_calls(&self) -> bool {
        self.reader.made_calls()
    }

    /// The choice's finish reason: `tool_calls` when calls were sent and the engine
    /// stopped normally, else the engine's reason.
    pub fn finish_reason(&self, engine: FinishReason) -> FinishReason {
        finish_reason(self.made_calls(), engine)
    }
}

/// The engine's delta in OpenAI's shape: a call's first piece has `type: "function"`.
fn openai_delta(delta: ReplyDelta) -> StreamDelta {
    match delta {
        ReplyDelta::Content(text) => StreamDelta::Content(text),
        ReplyDelta::ToolCalls(pieces) => StreamDelta::ToolCalls(
            pieces
                .into_iter()
                .map(|d| ToolCallDelta {
                    index: d.index,
                    kind: d.id.is_some().then_some(ToolType::Function),
                    id: d.id,
                    function: FunctionCallDelta {
                        name: d.name,
                        arguments: Some(d.arguments),
                    },
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    /// Streams `text` in pieces of `n` characters; returns content and (id, name,
    /// arguments) per call, checking OpenAI's delta shape.
    fn stream_all(
        plan: &ToolPlan,
        text: &str,
        n: usize,
    ) -> (String, Vec<(String, String, String)>) {
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
                StreamDelta::Content(t) => content.push_str(&t),
                StreamDelta::ToolCalls(tc) => {
                    for d in tc {
                        if let Some(id) = d.id {
                            assert_eq!(d.kind, Some(ToolType::Function));
                            assert_eq!(d.function.arguments.as_deref(), Some(""));
                            calls.push((id, d.function.name.unwrap(), String::new()));
                        } else {
                            assert_eq!((d.kind, &d.function.name), (None, &None));
                            calls[d.index as usize]
                                .2
                                .push_str(&d.function.arguments.unwrap());
                        }
                    }
                }
            }
        }
        (content, calls)
    }

    #[test]
    fn schemas_by_choice_and_parallel() {
        let p = plan(&[weather()], Some(ToolChoice::Required), None);
        assert_eq!(p.mode(), ToolMode::Required);
        assert!(!p.parallel());
        assert_eq!(
            p.schema().unwrap()["properties"]["name"]["const"],
            "get_weather"
        );
        let p = plan(&[weather(), time()], Some(ToolChoice::Required), None);
        assert!(p.parallel());
        let s = p.schema().unwrap();
        assert_eq!(s["type"], "array");
        // No parameters: only `{}`.
        assert_eq!(
            s["items"]["anyOf"][1]["properties"]["arguments"],
            tools::no_arguments()
        );
        let p = plan(
            &[weather(), time()],
            Some(ToolChoice::Required),
            Some(false),
        );
        assert!(!p.parallel());
        assert!(!p.parallel_tool_calls());
        assert!(plan(&[weather()], None, None).parallel_tool_calls());
        assert!(p.schema().unwrap()["anyOf"].is_array());
        // A named function: one object, whatever parallel_tool_calls says.
        let p = plan(
            &[weather(), time()],
            Some(ToolChoice::Function("get_time".into())),
            Some(true),
        );
        assert_eq!(
            p.schema().unwrap()["properties"]["name"]["const"],
            "get_time"
        );
    }

    /// Issue 15, item 8: `parameters: {}` left a forced call's `arguments` free (a string
    /// came back as content); now it is an object, and a non-object schema is a 400.
    #[test]
    fn empty_parameters_are_an_object() {
        let echo = Tool::function("echo", None, Some(json!({})));
        let p = plan(&[echo], Some(ToolChoice::Required), None);
        assert_eq!(
            p.schema().unwrap()["properties"]["arguments"],
            json!({"type": "object"})
        );
        let out = p.parse(r#"{"name":"echo","arguments":{"text":"Smaramire: "}}"#);
        assert_eq!(out.content, None);
        assert_eq!(
            out.tool_calls[0].function.arguments,
            r#"{"text":"Smaramire: "}"#
        );
        let e = ToolPlan::new(
            Some(&[Tool::function("f", None, Some(json!({"type": "string"})))]),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.param_name(), Some("tools[0].function.parameters"));
    }

    #[test]
    fn allowed_tools_restrict_the_calls() {
        let tools = [weather(), time()];
        let choice = |mode, names: &[&str]| ToolChoice::AllowedTools {
            mode,
            tools: names.iter().map(|n| n.to_string()).collect(),
        };
        let p = plan(
            &tools,
            Some(choice(AllowedToolsMode::Required, &["get_time"])),
            None,
        );
        assert_eq!(p.mode(), ToolMode::Required);
        assert_eq!(p.allowed(), ["get_time"]);
        assert_eq!(
            p.schema().unwrap()["properties"]["name"]["const"],
            "get_time"
        );
        assert_eq!(p.template_tools().unwrap().len(), 2);
        let p = plan(
            &tools,
            Some(choice(AllowedToolsMode::Auto, &["get_time"])),
            None,
        );
        assert_eq!(p.mode(), ToolMode::Auto);
        assert_eq!(p.functions().len(), 1);
        assert_eq!(p.schema(), None);
        // Calls of tools outside the list stay content.
        let text =
            r#"<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>"#;
        assert!(p.parse(text).tool_calls.is_empty());
        let text = r#"<tool_call>{"name": "get_time", "arguments": {}}</tool_call>"#;
        assert_eq!(p.parse(text).tool_calls[0].function.name, "get_time");
        for (choice, param) in [
            (choice(AllowedToolsMode::Auto, &["nope"]), "tool_choice"),
            (
                choice(AllowedToolsMode::Required, &[]),
                "tool_choice.allowed_tools.tools",
            ),
        ] {
            let e = ToolPlan::new(Some(&tools), Some(&choice), None).unwrap_err();
            assert_eq!(e.param_name(), Some(param));
        }
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
        assert!(none.functions().is_empty());
        assert_eq!(
            none.template_tools().unwrap()[0].function.name,
            "get_weather"
        );
        let text = r#"{"name": "get_weather", "arguments": {"city": "Oslo"}}"#;
        assert_eq!(none.parse(text).content.as_deref(), Some(text));
        assert_eq!(plan(&tools, None, None).schema(), None);
    }

    /// Issue 15, item 8: a forced call cut by `max_tokens` came back non-streamed as
    /// content holding `{"name":..,"argu`; streamed, it was a `tool_calls` delta. Both are
    /// now a call with truncated arguments and finish reason `length`.
    #[test]
    fn a_cut_required_call_agrees_streamed_and_not() {
        let p = plan(&[weather(), time()], Some(ToolChoice::Required), None);
        let text = r#"[{"name":"get_weather","arguments":{"city":"Par"#;
        let out = p.parse(text);
        assert_eq!(out.content, None);
        assert_eq!(out.tool_calls.len(), 1);
        assert_eq!(out.tool_calls[0].function.name, "get_weather");
        assert_eq!(out.tool_calls[0].function.arguments, r#"{"city":"Par"#);
        assert_eq!(
            out.finish_reason(FinishReason::Length),
            FinishReason::Length
        );
        let (content, calls) = stream_all(&p, text, 3);
        assert_eq!(content, "");
        assert_eq!(
            (calls[0].1.as_str(), calls[0].2.as_str()),
            ("get_weather", r#"{"city":"Par"#)
        );
        let mut s = p.stream();
        s.push(text);
        assert_eq!(s.finish_reason(FinishReason::Length), FinishReason::Length);
    }

    #[test]
    fn calls_map_to_openai_shapes() {
        let p = plan(&[weather(), time()], Some(ToolChoice::Required), None);
        let text = r#"[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_time","arguments":{}}]"#;
        let out = p.parse(text);
        assert_eq!(out.content, None);
        assert_eq!(out.tool_calls.len(), 2);
        assert_eq!(out.tool_calls[1].function.arguments, "{}");
        assert_eq!(
            out.finish_reason(FinishReason::Stop),
            FinishReason::ToolCalls
        );
        let (_, calls) = stream_all(&p, text, 5);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].2, r#"{"city":"Paris"}"#);
        // Auto mode: content and calls.
        let p = plan(&[weather(), time()], None, None);
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>";
        let out = p.parse(text);
        assert_eq!(out.content.as_deref(), Some("Let me check.\n"));
        assert_eq!(out.tool_calls[0].function.arguments, r#"{"city":"Rome"}"#);
        let (content, calls) = stream_all(&p, text, 2);
        assert_eq!(content, "Let me check.\n");
        assert_eq!(calls[0].2, r#"{"city":"Rome"}"#);
        let mut s = p.stream();
        assert_eq!(s.push("Hello"), vec![StreamDelta::Content("Hello".into())]);
        assert!(s.finish().is_empty());
        assert_eq!(s.finish_reason(FinishReason::Stop), FinishReason::Stop);
    }
}
