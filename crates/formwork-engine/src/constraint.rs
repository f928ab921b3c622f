//! Constraints lowered to what their index is built from (a regex or a grammar), and the
//! JSON Schema of a tool call.

use formwork_grammar::{Grammar, GrammarConfig, GrammarError};
use serde_json::{Map, Value, json};

use crate::{Constraint, EngineError};

/// What a constraint's index is built from.
pub(crate) enum Lowered {
    /// A regex, for a token index.
    Regex(String),
    /// A grammar, for a grammar index.
    Grammar(Grammar),
    /// Segments composed with free text, indexed by [`crate::segments::compile`].
    Segments(crate::Segments),
}

/// Lowers a constraint: the one place that decides which constraints are regular (a token
/// index of a regex) and which go through a grammar.
pub(crate) fn lower(
    constraint: &Constraint,
    config: &GrammarConfig,
) -> Result<Lowered, EngineError> {
    let json = |schema: &Value| {
        formwork_grammar::json_schema(schema, &formwork_schema::Compiler::new(), config)
            .map(|compiled| Lowered::Grammar(compiled.grammar))
            .map_err(grammar_error)
    };
    match constraint {
        Constraint::Regex(_) | Constraint::Choice(_) => {
            constraint_regex(constraint).map(Lowered::Regex)
        }
        Constraint::Grammar { syntax, text } => syntax
            .compile(text, config)
            .map(Lowered::Grammar)
            .map_err(grammar_error),
        Constraint::JsonSchema(schema) => json(schema),
        Constraint::JsonObject => json(&json!({"type": "object"})),
        Constraint::ToolCall {
            functions,
            parallel,
        } => json(&tool_call_schema(functions, *parallel)?),
        Constraint::Segments(segments) => Ok(Lowered::Segments(segments.clone())),
    }
}

/// A grammar's error as the engine reports it: a schema's as [`EngineError::Schema`] (the
/// keyword and its pointer), any other as [`EngineError::Constraint`] with its message.
pub(crate) fn grammar_error(e: GrammarError) -> EngineError {
    match e {
        GrammarError::Schema(e) => EngineError::Schema(e),
        e => EngineError::Constraint(e.to_string()),
    }
}

/// The regex a constraint compiles to; a grammar has none (it is not a regular language in
/// general), so it is an error.
pub fn constraint_regex(constraint: &Constraint) -> Result<String, EngineError> {
    let compiler = formwork_schema::Compiler::new();
    match constraint {
        Constraint::Grammar { syntax, .. } => Err(EngineError::Constraint(format!(
            "a {syntax} grammar compiles to a grammar, not a regex"
        ))),
        Constraint::Segments(_) => Err(EngineError::Constraint(
            "segments compose free text with constraints; they have no regex".into(),
        )),
        Constraint::Regex(r) => Ok(r.clone()),
        Constraint::Choice(choices) => {
            if choices.is_empty() {
                return Err(EngineError::Constraint("the choice list is empty".into()));
            }
            let alternatives: Vec<String> =
                choices.iter().map(|c| regex_syntax::escape(c)).collect();
            Ok(alternatives.join("|"))
        }
        Constraint::JsonObject => Ok(compiler.compile(&json!({"type": "object"}))?),
        Constraint::JsonSchema(schema) => Ok(compiler.compile(schema)?),
        Constraint::ToolCall {
            functions,
            parallel,
        } => Ok(compiler.compile(&tool_call_schema(functions, *parallel)?)?),
    }
}

/// The JSON Schema of a tool call: `{"name": NAME, "arguments": ARGS}` for one of the
/// functions, or an array of one or more of those when `parallel`. Parameters holding
/// root-relative `$ref`s (`#/$defs/X`, `#`) are moved under the root's `$defs` and their refs
/// rewritten, so they still resolve once nested.
pub fn tool_call_schema(
    functions: &[crate::ToolFunction],
    parallel: bool,
) -> Result<Value, EngineError> {
    if functions.is_empty() {
        return Err(EngineError::Constraint(
            "a tool call needs at least one function".into(),
        ));
    }
    let mut defs = Map::new();
    let mut calls: Vec<Value> = Vec::with_capacity(functions.len());
    for (i, f) in functions.iter().enumerate() {
        let arguments = if has_local_ref(&f.parameters) {
            let key = format!("formwork_tool_{i}");
            let base = format!("#/$defs/{key}");
            let mut moved = f.parameters.clone();
            rebase_refs(&mut moved, &base, 0);
            defs.insert(key, moved);
            json!({ "$ref": base })
        } else {
            f.parameters.clone()
        };
        calls.push(json!({
            "type": "object",
            "properties": {"name": {"const": f.name}, "arguments": arguments},
            "required": ["name", "arguments"],
            "additionalProperties": false
        }));
    }
    let call = match <[Value; 1]>::try_from(calls) {
        Ok([one]) => one,
        Err(many) => json!({ "anyOf": many }),
    };
    let mut schema = if parallel {
        json!({"type": "array", "items": call, "minItems": 1})
    } else {
        call
    };
    if !defs.is_empty()
        && let Some(obj) = schema.as_object_mut()
    {
        obj.insert("$defs".to_owned(), Value::Object(defs));
    }
    Ok(schema)
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
