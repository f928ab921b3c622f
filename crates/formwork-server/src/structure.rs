//! One constraint per request, whichever way the client asked for it.
//!
//! Clients ask for structured output in several dialects; [`resolve_chat`] and
//! [`resolve_completion`] read them all and return one engine
//! [`formwork_engine::Constraint`]:
//!
//! | dialect | example |
//! |---|---|
//! | `metadata.structure` (Formwork's own; an object, or a string of JSON since OpenAI's metadata values are strings) | `{"type": "json_schema", "schema": {...}}`, `{"type": "regex", "pattern": "..."}`, `{"type": "choice", "choices": [...]}`, `{"type": "json_object"}`, `{"type": "grammar", "syntax": "gbnf", "grammar": "..."}` |
//! | `response_format` (OpenAI) | `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`, `{"type": "json_object"}`; `{"type": "text"}` asks for nothing |
//! | `guided_json`, `guided_regex`, `guided_choice`, `guided_grammar` (vLLM) | a schema (object or string of JSON), a regex, a list of strings, a grammar; `guided_whitespace_pattern` |
//! | `structured_outputs` (vLLM's newer spelling) | one of `json`, `regex`, `choice`, `grammar`, `json_object: true`; `whitespace_pattern`, `disable_any_whitespace`, `disable_additional_properties` |
//! | `grammar` (llama.cpp) | a GBNF grammar |
//! | `text.format` (the Responses API, [`resolve_responses`]) | `{"type": "json_schema", "name", "schema", "strict"}`, `{"type": "json_object"}`; `{"type": "text"}` asks for nothing |
//! | `tools` with `tool_choice` `"required"` or a named function (chat and responses) | the schema of a tool call, see [`tools`](crate::tools) |
//!
//! Two dialects in one request are a 400 naming both, unless they ask for the same
//! thing (the same schema, regex, or set of choices). Every malformed structure is a
//! 400 whose `param` points at the field (`metadata.structure.type`,
//! `response_format.json_schema.schema`, `guided_choice[2]`). Whether a schema, regex or
//! grammar compiles is the engine's question: its error is also a 400, with `param` the
//! dialect's field ([`Resolved::param`]). A grammar without a named syntax (vLLM's
//! fields) is GBNF when it holds `::=` and Lark otherwise ([`guess_syntax`]).
//!
//! A JSON Schema is strict unless the request says `strict: false`
//! (`response_format.json_schema.strict`, `metadata.structure.strict`, a tool's
//! `function.strict`): a keyword the compiler cannot enforce is then dropped and reported
//! in the response's `warnings` instead of refusing the request. A whitespace pattern
//! (vLLM's `whitespace_pattern`, `guided_whitespace_pattern`) is checked here: a bad regex
//! is a 400 naming the field.
//!
//! ```
//! use formwork_engine::Constraint;
//! use formwork_server::error::parse_json;
//! use formwork_server::protocol::ChatCompletionRequest;
//! use formwork_server::structure::resolve_chat;
//!
//! let req: ChatCompletionRequest = parse_json(br#"{
//!     "messages": [{"role": "user", "content": "Yes or no?"}],
//!     "metadata": {"structure": "{\"type\": \"choice\", \"choices\": [\"yes\", \"no\"]}"}
//! }"#).unwrap();
//! let (resolved, _tools) = resolve_chat(&req).unwrap();
//! assert_eq!(resolved.unwrap().constraint, Constraint::Choice(vec!["yes".into(), "no".into()]));
//! ```

use formwork_engine::{Constraint, GrammarSyntax, JsonSchema};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::protocol::{
    ChatCompletionRequest, CompletionRequest, ResponseFormat, ResponsesRequest, StructureFields,
    StructuredOutputs, TextFormat,
};
use crate::tools::ToolPlan;

mod structural_tag;

/// Whether two constraints ask for the same output: equal schemas (object members
/// in any order), equal regexes, the same set of choices.
pub fn same_constraint(a: &Constraint, b: &Constraint) -> bool {
    match (a, b) {
        (Constraint::Choice(a), Constraint::Choice(b)) => {
            let mut a: Vec<&String> = a.iter().collect();
            let mut b: Vec<&String> = b.iter().collect();
            a.sort();
            a.dedup();
            b.sort();
            b.dedup();
            a == b
        }
        (a, b) => a == b,
    }
}

/// A request field that can ask for a structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// `metadata.structure`.
    Metadata,
    /// `response_format`.
    ResponseFormat,
    /// `guided_json`.
    GuidedJson,
    /// `guided_regex`.
    GuidedRegex,
    /// `guided_choice`.
    GuidedChoice,
    /// `guided_grammar`.
    GuidedGrammar,
    /// `structured_outputs` (vLLM).
    StructuredOutputs,
    /// `grammar` (llama.cpp's GBNF).
    Grammar,
    /// `tools` with `tool_choice` `"required"` or a named function.
    ToolChoice,
    /// `text.format` (the Responses API).
    TextFormat,
}

impl Dialect {
    /// The request field, as errors name it.
    pub fn field(self) -> &'static str {
        match self {
            Dialect::Metadata => "metadata.structure",
            Dialect::ResponseFormat => "response_format",
            Dialect::GuidedJson => "guided_json",
            Dialect::GuidedRegex => "guided_regex",
            Dialect::GuidedChoice => "guided_choice",
            Dialect::GuidedGrammar => "guided_grammar",
            Dialect::StructuredOutputs => "structured_outputs",
            Dialect::Grammar => "grammar",
            Dialect::ToolChoice => "tool_choice",
            Dialect::TextFormat => "text.format",
        }
    }
}

/// The constraint a request asks for, and the field that asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The constraint.
    pub constraint: Constraint,
    /// The dialect it came from (the first one, when several agree).
    pub dialect: Dialect,
}

impl Resolved {
    /// The `param` for an error about this structure (a schema that does not compile,
    /// say): the innermost field holding it (`response_format.json_schema.schema`).
    pub fn param(&self) -> &'static str {
        match (self.dialect, &self.constraint) {
            (Dialect::Metadata, Constraint::JsonSchema(_)) => "metadata.structure.schema",
            (Dialect::Metadata, Constraint::Regex(_)) => "metadata.structure.pattern",
            (Dialect::Metadata, Constraint::Choice(_)) => "metadata.structure.choices",
            (Dialect::Metadata, Constraint::Grammar { .. }) => "metadata.structure.grammar",
            (Dialect::StructuredOutputs, c) => match c {
                Constraint::JsonSchema(_) => "structured_outputs.json",
                Constraint::Regex(_) => "structured_outputs.regex",
                Constraint::Choice(_) => "structured_outputs.choice",
                Constraint::Grammar { .. } => "structured_outputs.grammar",
                Constraint::JsonObject => "structured_outputs.json_object",
                _ => "structured_outputs",
            },
            (Dialect::ResponseFormat, Constraint::JsonSchema(_)) => {
                "response_format.json_schema.schema"
            }
            (Dialect::TextFormat, Constraint::JsonSchema(_)) => "text.format.schema",
            (Dialect::ToolChoice, _) => "tools",
            (dialect, _) => dialect.field(),
        }
    }
}

/// The structure of a chat request (all dialects, tools included) and its tool plan.
pub fn resolve_chat(req: &ChatCompletionRequest) -> Result<(Option<Resolved>, ToolPlan), ApiError> {
    let plan = ToolPlan::from_chat(req)?;
    with_tools(candidates(&req.structure)?, plan)
}

/// The structure of a Responses request (`text.format`, the dialects of its
/// [`StructureFields`], tools) and its tool plan.
pub fn resolve_responses(req: &ResponsesRequest) -> Result<(Option<Resolved>, ToolPlan), ApiError> {
    let plan = ToolPlan::from_responses(req)?;
    let mut found = Vec::new();
    if let Some(format) = req.text.as_ref().and_then(|t| t.format.as_ref())
        && let Some(constraint) = text_format(format)?
    {
        found.push(Resolved {
            constraint,
            dialect: Dialect::TextFormat,
        });
    }
    found.extend(candidates(&req.structure)?);
    with_tools(found, plan)
}

/// The candidates and a required tool call's constraint, which must agree.
fn with_tools(
    mut found: Vec<Resolved>,
    plan: ToolPlan,
) -> Result<(Option<Resolved>, ToolPlan), ApiError> {
    if let Some(constraint) = plan.constraint() {
        found.push(Resolved {
            constraint,
            dialect: Dialect::ToolChoice,
        });
    }
    Ok((agree(found)?, plan))
}

/// The structure of a completions request.
pub fn resolve_completion(req: &CompletionRequest) -> Result<Option<Resolved>, ApiError> {
    resolve(&req.structure)
}

/// The structure the fields ask for, if any.
pub fn resolve(fields: &StructureFields) -> Result<Option<Resolved>, ApiError> {
    agree(candidates(fields)?)
}

/// Every dialect's structure, each checked.
fn candidates(fields: &StructureFields) -> Result<Vec<Resolved>, ApiError> {
    let mut found = Vec::new();
    let mut push = |dialect, constraint: Option<Constraint>| {
        if let Some(constraint) = constraint {
            found.push(Resolved {
                constraint,
                dialect,
            });
        }
    };
    if let Some(value) = fields.metadata.as_ref().and_then(|m| m.get("structure")) {
        push(Dialect::Metadata, metadata_structure(value)?);
    }
    if let Some(format) = &fields.response_format {
        push(Dialect::ResponseFormat, response_format(format)?);
    }
    let legacy_whitespace = whitespace(
        fields.guided_whitespace_pattern.as_deref(),
        false,
        "guided_whitespace_pattern",
    )?;
    if let Some(value) = &fields.guided_json {
        push(
            Dialect::GuidedJson,
            schema_value(value, "guided_json", legacy_whitespace.clone())?,
        );
    }
    if let Some(pattern) = &fields.guided_regex {
        push(
            Dialect::GuidedRegex,
            Some(Constraint::Regex(pattern.clone())),
        );
    }
    if let Some(value) = fields.guided_choice.as_ref().filter(|v| !v.is_null()) {
        push(
            Dialect::GuidedChoice,
            Some(choices(value, "guided_choice")?),
        );
    }
    if let Some(text) = &fields.guided_grammar {
        push(Dialect::GuidedGrammar, Some(guessed_grammar(text)));
    }
    if let Some(outputs) = &fields.structured_outputs {
        push(
            Dialect::StructuredOutputs,
            structured_outputs(outputs, legacy_whitespace)?,
        );
    }
    if let Some(text) = &fields.grammar {
        push(
            Dialect::Grammar,
            Some(Constraint::Grammar {
                syntax: GrammarSyntax::Gbnf,
                text: text.clone(),
            }),
        );
    }
    Ok(found)
}

/// One structure out of several candidates: they must all ask for the same thing.
fn agree(found: Vec<Resolved>) -> Result<Option<Resolved>, ApiError> {
    let mut found = found.into_iter();
    let Some(first) = found.next() else {
        return Ok(None);
    };
    for other in found {
        if !same_constraint(&first.constraint, &other.constraint) {
            return Err(ApiError::invalid_request(format!(
                "`{}` and `{}` ask for different structures; send only one of them",
                first.dialect.field(),
                other.dialect.field()
            ))
            .param(other.dialect.field()));
        }
    }
    Ok(Some(first))
}

/// A JSON object sent as one or as a string holding one (OpenAI's `metadata` values are
/// strings; vLLM sends `structural_tag` so); `None` for `null`.
fn object_member<'a>(
    value: &'a Value,
    param: &str,
) -> Result<Option<std::borrow::Cow<'a, Map<String, Value>>>, ApiError> {
    use std::borrow::Cow;
    match value {
        Value::Null => Ok(None),
        Value::Object(obj) => Ok(Some(Cow::Borrowed(obj))),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(obj)) => Ok(Some(Cow::Owned(obj))),
            Ok(_) => Err(not_an_object(param)),
            Err(e) => Err(
                ApiError::invalid_request(format!("`{param}` is not valid JSON: {e}")).param(param),
            ),
        },
        _ => Err(not_an_object(param)),
    }
}

/// `metadata.structure`: an object, or a string holding one.
fn metadata_structure(value: &Value) -> Result<Option<Constraint>, ApiError> {
    const PARAM: &str = "metadata.structure";
    let Some(obj) = object_member(value, PARAM)? else {
        return Ok(None);
    };
    let obj: &Map<String, Value> = &obj;
    let kind = match obj.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "`{PARAM}.type` must be a string, got {other}"
            ))
            .param("metadata.structure.type"));
        }
        None => {
            return Err(ApiError::invalid_request(format!(
                "`{PARAM}` has no `type`; expected one of {METADATA_TYPES}"
            ))
            .param("metadata.structure.type"));
        }
    };
    let structure = match kind {
        "json_schema" => {
            let strict = match obj.get("strict") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(strict)) => *strict,
                Some(other) => {
                    return Err(ApiError::invalid_request(format!(
                        "`{PARAM}.strict` must be a boolean, got {other}"
                    ))
                    .param("metadata.structure.strict"));
                }
            };
            let schema = schema(obj.get("schema"), "metadata.structure.schema")?;
            Constraint::JsonSchema(JsonSchema::new(schema).strict(strict))
        }
        "regex" => Constraint::Regex(required_string(obj, kind, "pattern")?.to_owned()),
        "choice" => match obj.get("choices") {
            Some(v) => choices(v, "metadata.structure.choices")?,
            None => {
                return Err(ApiError::invalid_request(
                    "`metadata.structure` of type choice needs `choices`",
                )
                .param("metadata.structure.choices"));
            }
        },
        "json_object" => Constraint::JsonObject,
        "grammar" => metadata_grammar(obj)?,
        "structural_tag" => structural_tag::structural_tag(obj, PARAM)?,
        other => {
            return Err(ApiError::invalid_request(format!(
                "unknown `{PARAM}.type` `{other}`; expected one of {METADATA_TYPES}"
            ))
            .param("metadata.structure.type"));
        }
    };
    Ok(Some(structure))
}

/// `response_format`: `text` asks for nothing.
fn response_format(format: &ResponseFormat) -> Result<Option<Constraint>, ApiError> {
    match format.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(Constraint::JsonObject)),
        "json_schema" => {
            let Some(spec) = &format.json_schema else {
                return Err(ApiError::invalid_request(
                    "`response_format` of type json_schema needs `json_schema`",
                )
                .param("response_format.json_schema"));
            };
            let schema = schema(spec.schema.as_ref(), "response_format.json_schema.schema")?;
            Ok(Some(Constraint::JsonSchema(
                JsonSchema::new(schema).strict(spec.strict.unwrap_or(true)),
            )))
        }
        "structural_tag" => {
            let mut obj = Map::new();
            for (key, value) in [("structures", &format.structures), ("triggers", &format.triggers)] {
                if let Some(v) = value {
                    obj.insert(key.to_owned(), v.clone());
                }
            }
            structural_tag::structural_tag(&obj, "response_format").map(Some)
        }
        other => Err(ApiError::invalid_request(format!(
            "unknown `response_format.type` `{other}`; expected one of text, json_object, json_schema, structural_tag"
        ))
        .param("response_format.type")),
    }
}

/// The Responses API's `text.format`: `text` asks for nothing; a schema is strict unless
/// `strict: false`, as `response_format`'s.
fn text_format(format: &TextFormat) -> Result<Option<Constraint>, ApiError> {
    match format.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(Constraint::JsonObject)),
        "json_schema" => {
            let schema = schema(format.schema.as_ref(), "text.format.schema")?;
            Ok(Some(Constraint::JsonSchema(
                JsonSchema::new(schema).strict(format.strict.unwrap_or(true)),
            )))
        }
        other => Err(ApiError::invalid_request(format!(
            "unknown `text.format.type` `{other}`; expected one of text, json_object, json_schema"
        ))
        .param("text.format.type")),
    }
}

/// The `type`s `metadata.structure` knows.
const METADATA_TYPES: &str = "json_schema, regex, choice, json_object, grammar, structural_tag";

/// `metadata.structure` of type grammar: `grammar` (the text) and `syntax` (`gbnf` or
/// `lark`; guessed from the text when absent).
fn metadata_grammar(obj: &Map<String, Value>) -> Result<Constraint, ApiError> {
    let text = required_string(obj, "grammar", "grammar")?;
    let syntax = match string_member(obj, "syntax")? {
        None => guess_syntax(text),
        Some(name) => GrammarSyntax::from_name(name).ok_or_else(|| {
            ApiError::invalid_request(format!(
                "unknown `metadata.structure.syntax` `{name}`; expected gbnf or lark"
            ))
            .param("metadata.structure.syntax")
        })?,
    };
    Ok(Constraint::Grammar {
        syntax,
        text: text.to_owned(),
    })
}

/// Member `key` of `metadata.structure`: a string, or absent (`null` too).
fn string_member<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::invalid_request(format!(
            "`metadata.structure.{key}` must be a string, got {other}"
        ))
        .param(format!("metadata.structure.{key}"))),
    }
}

/// Member `key` of a `metadata.structure` of type `kind`, which needs it.
fn required_string<'a>(
    obj: &'a Map<String, Value>,
    kind: &str,
    key: &str,
) -> Result<&'a str, ApiError> {
    string_member(obj, key)?.ok_or_else(|| {
        ApiError::invalid_request(format!(
            "`metadata.structure` of type {kind} needs a `{key}`"
        ))
        .param(format!("metadata.structure.{key}"))
    })
}

/// The syntax of a grammar sent without one (vLLM's fields): GBNF when it holds `::=`
/// (GBNF's rule operator, which Lark has no use for), else Lark.
pub fn guess_syntax(text: &str) -> GrammarSyntax {
    if text.contains("::=") {
        GrammarSyntax::Gbnf
    } else {
        GrammarSyntax::Lark
    }
}

/// A grammar whose syntax is guessed ([`guess_syntax`]).
fn guessed_grammar(text: &str) -> Constraint {
    Constraint::Grammar {
        syntax: guess_syntax(text),
        text: text.to_owned(),
    }
}

/// `structured_outputs`: at most one of its members (an empty object asks for nothing),
/// JSON laid out with its `whitespace_pattern` (or `legacy`, `guided_whitespace_pattern`).
fn structured_outputs(
    outputs: &StructuredOutputs,
    legacy: Option<String>,
) -> Result<Option<Constraint>, ApiError> {
    let pattern = whitespace(
        outputs.whitespace_pattern.as_deref(),
        outputs.disable_any_whitespace == Some(true),
        "structured_outputs.whitespace_pattern",
    )?
    .or(legacy.filter(|_| outputs.disable_any_whitespace != Some(true)));
    let mut found: Vec<(&str, Constraint)> = Vec::new();
    if let Some(value) = &outputs.structural_tag
        && let Some(c) =
            structural_tag::structural_tag_value(value, "structured_outputs.structural_tag")?
    {
        found.push(("structural_tag", c));
    }
    if let Some(value) = &outputs.json
        && let Some(c) = schema_value(value, "structured_outputs.json", pattern.clone())?
    {
        found.push(("json", c));
    }
    if let Some(pattern) = &outputs.regex {
        found.push(("regex", Constraint::Regex(pattern.clone())));
    }
    if let Some(value) = outputs.choice.as_ref().filter(|v| !v.is_null()) {
        found.push(("choice", choices(value, "structured_outputs.choice")?));
    }
    if let Some(text) = &outputs.grammar {
        found.push(("grammar", guessed_grammar(text)));
    }
    if outputs.json_object == Some(true) {
        // With a whitespace pattern, the schema of any object laid out with it.
        let object = match pattern {
            None => Constraint::JsonObject,
            Some(p) => Constraint::JsonSchema(
                JsonSchema::new(serde_json::json!({"type": "object"})).whitespace(Some(p)),
            ),
        };
        found.push(("json_object", object));
    }
    let mut found = found.into_iter();
    let first = found.next();
    if let (Some((a, _)), Some((b, _))) = (&first, found.next()) {
        return Err(ApiError::invalid_request(format!(
            "`structured_outputs` sets both `{a}` and `{b}`; set only one of them"
        ))
        .param(format!("structured_outputs.{b}")));
    }
    Ok(first.map(|(_, c)| c))
}

/// A whitespace pattern (`param`), checked; `disable` (vLLM's `disable_any_whitespace`)
/// asks for none, and both at once are a 400.
fn whitespace(
    pattern: Option<&str>,
    disable: bool,
    param: &str,
) -> Result<Option<String>, ApiError> {
    let Some(pattern) = pattern else {
        return Ok(None);
    };
    if disable {
        return Err(ApiError::invalid_request(format!(
            "`{param}` and `disable_any_whitespace` contradict each other; send one of them"
        ))
        .param(param));
    }
    formwork_schema::Whitespace::pattern(pattern)
        .map_err(|e| ApiError::invalid_request(e.to_string()).param(param))?;
    Ok(Some(pattern.to_owned()))
}

/// A JSON Schema member (`guided_json`, `structured_outputs.json`): a schema, or a string
/// holding one, strict, with whitespace `pattern`; `null` asks for nothing.
fn schema_value(
    value: &Value,
    param: &str,
    pattern: Option<String>,
) -> Result<Option<Constraint>, ApiError> {
    let schema = match value {
        Value::Null => return Ok(None),
        Value::String(text) => serde_json::from_str::<Value>(text).map_err(|e| {
            ApiError::invalid_request(format!("`{param}` is not valid JSON: {e}")).param(param)
        })?,
        other => other.clone(),
    };
    Ok(Some(Constraint::JsonSchema(
        JsonSchema::new(self::schema(Some(&schema), param)?).whitespace(pattern),
    )))
}

/// A JSON Schema: an object or a boolean.
fn schema(value: Option<&Value>, param: &str) -> Result<Value, ApiError> {
    match value {
        Some(v @ (Value::Object(_) | Value::Bool(_))) => Ok(v.clone()),
        Some(other) => Err(ApiError::invalid_request(format!(
            "`{param}` must be a JSON Schema (an object), got {other}"
        ))
        .param(param)),
        None => Err(ApiError::invalid_request(format!("`{param}` is missing")).param(param)),
    }
}

/// A non-empty array of strings.
fn choices(value: &Value, param: &str) -> Result<Constraint, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid_request(format!(
            "`{param}` must be an array of strings, got {value}"
        ))
        .param(param));
    };
    if items.is_empty() {
        return Err(
            ApiError::invalid_request(format!("`{param}` must hold at least one choice"))
                .param(param),
        );
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(ApiError::invalid_request(format!(
                "`{param}[{i}]` must be a string, got {other}"
            ))
            .param(format!("{param}[{i}]"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Constraint::Choice)
}

fn not_an_object(param: &str) -> ApiError {
    ApiError::invalid_request(format!(
        "`{param}` must be a JSON object, or a string holding one"
    ))
    .param(param)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::parse_json;
    use serde_json::json;

    fn chat(extra: Value) -> Result<Option<Resolved>, ApiError> {
        let mut body = json!({"messages": [{"role": "user", "content": "x"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let req: ChatCompletionRequest = parse_json(body.to_string().as_bytes())?;
        resolve_chat(&req).map(|(resolved, _)| resolved)
    }

    fn structure(extra: Value) -> Constraint {
        chat(extra).unwrap().unwrap().constraint
    }

    fn error_param(extra: Value) -> String {
        let e = chat(extra.clone()).unwrap_err();
        assert_eq!(e.status().as_u16(), 400, "{extra}");
        e.param_name().unwrap_or_default().to_owned()
    }

    #[test]
    fn no_structure() {
        assert_eq!(chat(json!({})).unwrap(), None);
        assert_eq!(
            chat(json!({"response_format": {"type": "text"}})).unwrap(),
            None
        );
        assert_eq!(chat(json!({"metadata": {"user": "x"}})).unwrap(), None);
        assert_eq!(
            chat(json!({"guided_json": null, "guided_choice": null})).unwrap(),
            None
        );
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        assert_eq!(
            chat(json!({"tools": tools, "tool_choice": "auto"})).unwrap(),
            None
        );
        assert_eq!(
            chat(json!({"tools": tools, "tool_choice": "none"})).unwrap(),
            None
        );
        assert_eq!(chat(json!({"tools": tools})).unwrap(), None);
    }

    #[test]
    fn metadata_structure_as_object_or_string() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let s = json!({"type": "json_schema", "schema": schema});
        assert_eq!(
            structure(json!({"metadata": {"structure": s}})),
            Constraint::JsonSchema(JsonSchema::new(schema.clone()))
        );
        assert_eq!(
            structure(json!({"metadata": {"structure": s.to_string()}})),
            Constraint::JsonSchema(JsonSchema::new(schema))
        );
        assert_eq!(
            structure(json!({"metadata": {"structure": {"type": "regex", "pattern": "[0-9]+"}}})),
            Constraint::Regex("[0-9]+".into())
        );
        assert_eq!(
            structure(
                json!({"metadata": {"structure": "{\"type\":\"choice\",\"choices\":[\"a\",\"b\"]}"}})
            ),
            Constraint::Choice(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            structure(json!({"metadata": {"structure": {"type": "json_object"}}})),
            Constraint::JsonObject
        );
        let r = chat(json!({"metadata": {"structure": {"type": "json_object"}}}))
            .unwrap()
            .unwrap();
        assert_eq!(r.dialect, Dialect::Metadata);
    }

    #[test]
    fn metadata_structure_errors() {
        for (s, param) in [
            (json!({}), "metadata.structure.type"),
            (json!({"type": 1}), "metadata.structure.type"),
            (json!({"type": "grammar"}), "metadata.structure.grammar"),
            (
                json!({"type": "grammar", "grammar": 1}),
                "metadata.structure.grammar",
            ),
            (
                json!({"type": "grammar", "grammar": "a", "syntax": "ebnf"}),
                "metadata.structure.syntax",
            ),
            (
                json!({"type": "grammar", "grammar": "a", "syntax": 2}),
                "metadata.structure.syntax",
            ),
            (json!({"type": "cfg"}), "metadata.structure.type"),
            (json!({"type": "json_schema"}), "metadata.structure.schema"),
            (
                json!({"type": "json_schema", "schema": "x"}),
                "metadata.structure.schema",
            ),
            (json!({"type": "regex"}), "metadata.structure.pattern"),
            (
                json!({"type": "regex", "pattern": 1}),
                "metadata.structure.pattern",
            ),
            (json!({"type": "choice"}), "metadata.structure.choices"),
            (
                json!({"type": "choice", "choices": []}),
                "metadata.structure.choices",
            ),
            (
                json!({"type": "choice", "choices": "a"}),
                "metadata.structure.choices",
            ),
            (
                json!({"type": "choice", "choices": ["a", 2]}),
                "metadata.structure.choices[1]",
            ),
            (json!("{not json"), "metadata.structure"),
            (json!("[1]"), "metadata.structure"),
            (json!(5), "metadata.structure"),
        ] {
            assert_eq!(
                error_param(json!({"metadata": {"structure": s}})),
                param,
                "{s}"
            );
        }
        let e = chat(json!({"metadata": {"structure": {"type": "cfg"}}})).unwrap_err();
        assert!(
            e.message().contains(
                "unknown `metadata.structure.type` `cfg`; expected one of json_schema, regex, choice, json_object, grammar"
            ),
            "{e}"
        );
        let e = chat(json!({"metadata": {"structure": {"type": "choice", "choices": []}}}))
            .unwrap_err();
        assert!(e.message().contains("at least one choice"), "{e}");
    }

    #[test]
    fn response_format_dialect() {
        let schema = json!({"type": "object"});
        assert_eq!(
            structure(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "schema": schema, "strict": true}}})),
            Constraint::JsonSchema(JsonSchema::new(schema))
        );
        assert_eq!(
            structure(json!({"response_format": {"type": "json_object"}})),
            Constraint::JsonObject
        );
        for (rf, param) in [
            (
                json!({"type": "json_schema"}),
                "response_format.json_schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "x"}}),
                "response_format.json_schema.schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"schema": [1]}}),
                "response_format.json_schema.schema",
            ),
            (
                json!({"type": "structural_tag"}),
                "response_format.structures",
            ),
            (json!({"type": "bogus"}), "response_format.type"),
        ] {
            assert_eq!(error_param(json!({"response_format": rf})), param, "{rf}");
        }
        let r = chat(
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.param(), "response_format.json_schema.schema");
    }

    #[test]
    fn strictness_and_whitespace_are_read() {
        let schema = json!({"type": "object"});
        assert_eq!(
            structure(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "schema": schema, "strict": false}}})),
            Constraint::JsonSchema(JsonSchema::new(schema.clone()).strict(false))
        );
        assert_eq!(
            structure(json!({"metadata": {"structure":
                {"type": "json_schema", "schema": schema, "strict": false}}})),
            Constraint::JsonSchema(JsonSchema::new(schema.clone()).strict(false))
        );
        assert_eq!(
            error_param(json!({"metadata": {"structure":
                {"type": "json_schema", "schema": schema, "strict": "no"}}})),
            "metadata.structure.strict"
        );
        let spaced = JsonSchema::new(schema.clone()).whitespace(Some("[ ]?".into()));
        assert_eq!(
            structure(
                json!({"structured_outputs": {"json": schema, "whitespace_pattern": "[ ]?"}})
            ),
            Constraint::JsonSchema(spaced.clone())
        );
        assert_eq!(
            structure(json!({"guided_json": schema, "guided_whitespace_pattern": "[ ]?"})),
            Constraint::JsonSchema(spaced.clone())
        );
        assert_eq!(
            structure(
                json!({"structured_outputs": {"json_object": true, "whitespace_pattern": "[ ]?"}})
            ),
            Constraint::JsonSchema(spaced)
        );
        assert_eq!(
            error_param(json!({"guided_json": schema, "guided_whitespace_pattern": "("})),
            "guided_whitespace_pattern"
        );
    }

    #[test]
    fn vllm_dialects() {
        let schema = json!({"type": "array"});
        assert_eq!(
            structure(json!({"guided_json": schema})),
            Constraint::JsonSchema(JsonSchema::new(schema.clone()))
        );
        assert_eq!(
            structure(json!({"guided_json": schema.to_string()})),
            Constraint::JsonSchema(JsonSchema::new(schema))
        );
        assert_eq!(
            structure(json!({"guided_regex": "a|b"})),
            Constraint::Regex("a|b".into())
        );
        assert_eq!(
            structure(json!({"guided_choice": ["x", "y"]})),
            Constraint::Choice(vec!["x".into(), "y".into()])
        );
        assert_eq!(error_param(json!({"guided_json": "{"})), "guided_json");
        assert_eq!(error_param(json!({"guided_json": 3})), "guided_json");
        assert_eq!(error_param(json!({"guided_choice": []})), "guided_choice");
        assert_eq!(
            error_param(json!({"guided_choice": [1]})),
            "guided_choice[0]"
        );
    }

    fn grammar(syntax: GrammarSyntax, text: &str) -> Constraint {
        Constraint::Grammar {
            syntax,
            text: text.into(),
        }
    }

    #[test]
    fn grammar_dialects() {
        let gbnf = r#"root ::= "a" root | "b""#;
        let lark = r#"start: "a" start | "b""#;
        // vLLM's fields guess the syntax from `::=`.
        let r = chat(json!({"guided_grammar": gbnf})).unwrap().unwrap();
        assert_eq!(r.constraint, grammar(GrammarSyntax::Gbnf, gbnf));
        assert_eq!(r.param(), "guided_grammar");
        assert_eq!(
            structure(json!({"guided_grammar": lark})),
            grammar(GrammarSyntax::Lark, lark)
        );
        let r = chat(json!({"structured_outputs": {"grammar": lark}}))
            .unwrap()
            .unwrap();
        assert_eq!(r.constraint, grammar(GrammarSyntax::Lark, lark));
        assert_eq!(r.param(), "structured_outputs.grammar");
        // llama.cpp's field is always GBNF, even without `::=` (an error then).
        let r = chat(json!({"grammar": lark})).unwrap().unwrap();
        assert_eq!(r.constraint, grammar(GrammarSyntax::Gbnf, lark));
        assert_eq!(r.param(), "grammar");
        // Formwork's own names the syntax, or has it guessed.
        let r = chat(json!({"metadata": {"structure": {"type": "grammar", "syntax": "LARK", "grammar": gbnf}}}))
            .unwrap()
            .unwrap();
        assert_eq!(r.constraint, grammar(GrammarSyntax::Lark, gbnf));
        assert_eq!(r.param(), "metadata.structure.grammar");
        assert_eq!(
            structure(json!({"metadata": {"structure": {"type": "grammar", "grammar": gbnf}}})),
            grammar(GrammarSyntax::Gbnf, gbnf)
        );
        // The same grammar twice agrees; different ones conflict.
        assert!(chat(json!({"grammar": gbnf, "guided_grammar": gbnf})).is_ok());
        let e = chat(json!({"grammar": gbnf, "guided_grammar": lark})).unwrap_err();
        assert_eq!(
            e.message(),
            "`guided_grammar` and `grammar` ask for different structures; send only one of them"
        );
        let e = chat(json!({"grammar": gbnf, "guided_regex": "a"})).unwrap_err();
        assert_eq!(e.param_name(), Some("grammar"));
        assert_eq!(error_param(json!({"grammar": 1})), "grammar");
        assert_eq!(
            error_param(json!({"guided_grammar": ["x"]})),
            "guided_grammar"
        );
    }

    #[test]
    fn structured_outputs_dialect() {
        let schema = json!({"type": "object"});
        for (outputs, constraint, param) in [
            (
                json!({"json": schema}),
                Constraint::JsonSchema(JsonSchema::new(schema.clone())),
                "structured_outputs.json",
            ),
            (
                json!({"json": schema.to_string()}),
                Constraint::JsonSchema(JsonSchema::new(schema.clone())),
                "structured_outputs.json",
            ),
            (
                json!({"regex": "[0-9]+"}),
                Constraint::Regex("[0-9]+".into()),
                "structured_outputs.regex",
            ),
            (
                json!({"choice": ["a", "b"]}),
                Constraint::Choice(vec!["a".into(), "b".into()]),
                "structured_outputs.choice",
            ),
            (
                json!({"json_object": true, "regex": null}),
                Constraint::JsonObject,
                "structured_outputs.json_object",
            ),
        ] {
            let r = chat(json!({ "structured_outputs": outputs }))
                .unwrap()
                .unwrap();
            assert_eq!(r.constraint, constraint, "{outputs}");
            assert_eq!(r.dialect, Dialect::StructuredOutputs);
            assert_eq!(r.param(), param);
        }
        assert_eq!(chat(json!({"structured_outputs": {}})).unwrap(), None);
        assert_eq!(
            chat(json!({"structured_outputs": {"json_object": false}})).unwrap(),
            None
        );
        let e = chat(json!({"structured_outputs": {"regex": "a", "grammar": "start: \"a\""}}))
            .unwrap_err();
        assert_eq!(
            e.message(),
            "`structured_outputs` sets both `regex` and `grammar`; set only one of them"
        );
        assert_eq!(e.param_name(), Some("structured_outputs.grammar"));
        for (outputs, param) in [
            (json!({"json": "{"}), "structured_outputs.json"),
            (json!({"choice": []}), "structured_outputs.choice"),
            (json!({"choice": ["a", 1]}), "structured_outputs.choice[1]"),
            (json!({"regex": 1}), "structured_outputs.regex"),
            (json!({"grammar": {}}), "structured_outputs.grammar"),
            (
                json!({"structural_tag": "{}"}),
                "structured_outputs.structural_tag.structures",
            ),
            (
                json!({"structural_tag": "[1]"}),
                "structured_outputs.structural_tag",
            ),
            (json!("json"), "structured_outputs"),
        ] {
            assert_eq!(
                error_param(json!({ "structured_outputs": outputs })),
                param,
                "{outputs}"
            );
        }
        let e =
            chat(json!({"structured_outputs": {"regex": "a"}, "guided_regex": "b"})).unwrap_err();
        assert!(
            e.message()
                .contains("`guided_regex` and `structured_outputs`"),
            "{e}"
        );
    }

    #[test]
    fn structural_tags_in_every_dialect() {
        let tag = json!({
            "structures": [{"begin": "<answer>", "schema": {"type": "integer"}, "end": "</answer>"}],
            "triggers": ["<answer>"]
        });
        let mut rf = tag.clone();
        rf["type"] = json!("structural_tag");
        let from_rf = structure(json!({ "response_format": rf }));
        let mut md = tag.clone();
        md["type"] = json!("structural_tag");
        let from_metadata = structure(json!({"metadata": {"structure": md.to_string()}}));
        let from_vllm =
            structure(json!({"structured_outputs": {"structural_tag": tag.to_string()}}));
        assert_eq!(from_rf, from_metadata);
        assert_eq!(from_rf, from_vllm);
        let Constraint::Segments(s) = from_rf else {
            panic!("{from_rf:?}")
        };
        assert_eq!(s.segments[0].end, "</answer>");
    }

    #[test]
    fn two_dialects_conflict_unless_equal() {
        let schema = json!({"type": "object", "properties": {"a": {}, "b": {}}});
        let reordered = json!({"properties": {"b": {}, "a": {}}, "type": "object"});
        let ok = chat(json!({
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
            "guided_json": reordered.to_string(),
            "metadata": {"structure": {"type": "json_schema", "schema": schema}}
        }))
        .unwrap()
        .unwrap();
        assert_eq!(ok.dialect, Dialect::Metadata);
        assert!(
            chat(json!({"guided_choice": ["a", "b", "a"], "metadata": {"structure": {"type": "choice", "choices": ["b", "a"]}}}))
                .is_ok()
        );

        let e = chat(json!({"guided_regex": "a", "response_format": {"type": "json_object"}}))
            .unwrap_err();
        assert_eq!(
            e.message(),
            "`response_format` and `guided_regex` ask for different structures; send only one of them"
        );
        assert_eq!(e.param_name(), Some("guided_regex"));
        let e = chat(json!({"metadata": {"structure": {"type": "regex", "pattern": "a"}}, "guided_choice": ["a"]}))
            .unwrap_err();
        assert!(
            e.message()
                .contains("`metadata.structure` and `guided_choice`"),
            "{e}"
        );

        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let e = chat(json!({"tools": tools, "tool_choice": "required", "response_format": {"type": "json_object"}}))
            .unwrap_err();
        assert!(
            e.message().contains("`response_format` and `tool_choice`"),
            "{e}"
        );
    }

    #[test]
    fn text_format_is_the_responses_dialect() {
        let resolve = |extra: Value| {
            let mut body = json!({"input": "x"});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let req: ResponsesRequest =
                crate::error::parse_json(body.to_string().as_bytes()).unwrap();
            resolve_responses(&req).map(|(r, _)| r)
        };
        let schema = json!({"type": "object"});
        let r = resolve(json!({"text": {"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": false}}}))
            .unwrap()
            .unwrap();
        assert_eq!(
            r.constraint,
            Constraint::JsonSchema(JsonSchema::new(schema.clone()).strict(false))
        );
        assert_eq!(
            (r.dialect, r.param()),
            (Dialect::TextFormat, "text.format.schema")
        );
        let r = resolve(
            json!({"text": {"format": {"type": "json_schema", "name": "n", "schema": schema}}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            r.constraint,
            Constraint::JsonSchema(JsonSchema::new(schema.clone()).strict(true))
        );
        let r = resolve(json!({"text": {"format": {"type": "json_object"}}}))
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.param(), r.constraint),
            ("text.format", Constraint::JsonObject)
        );
        assert_eq!(
            resolve(json!({"text": {"format": {"type": "text"}}})).unwrap(),
            None
        );
        // The other dialects, and agreement between them.
        let r = resolve(json!({"guided_regex": "a+"})).unwrap().unwrap();
        assert_eq!(r.constraint, Constraint::Regex("a+".into()));
        let r = resolve(json!({"text": {"format": {"type": "json_object"}}, "metadata": {"structure": {"type": "json_object"}}}))
            .unwrap()
            .unwrap();
        assert_eq!(r.dialect, Dialect::TextFormat);
        let e = resolve(json!({"text": {"format": {"type": "json_object"}}, "guided_regex": "a"}))
            .unwrap_err();
        assert_eq!(e.param_name(), Some("guided_regex"));
        // A required call agrees with no other structure.
        let e = resolve(
            json!({"text": {"format": {"type": "json_object"}}, "tool_choice": "required",
            "tools": [{"type": "function", "name": "f"}]}),
        )
        .unwrap_err();
        assert_eq!(e.param_name(), Some("tool_choice"));
    }

    #[test]
    fn required_tools_are_a_structure() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let r = chat(json!({"tools": tools, "tool_choice": "required"}))
            .unwrap()
            .unwrap();
        assert_eq!(r.dialect, Dialect::ToolChoice);
        assert!(matches!(r.constraint, Constraint::ToolCall { .. }));
        let r = chat(
            json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "f"}}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.param(), "tools");
    }

    #[test]
    fn completions_read_the_same_dialects() {
        let req: CompletionRequest = parse_json(
            br#"{"prompt": "x", "guided_choice": ["a"], "response_format": {"type": "text"}}"#,
        )
        .unwrap();
        let r = resolve_completion(&req).unwrap().unwrap();
        assert_eq!(r.constraint, Constraint::Choice(vec!["a".into()]));
        assert_eq!(r.param(), "guided_choice");
    }
}
