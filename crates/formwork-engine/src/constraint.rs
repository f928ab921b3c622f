//! Constraints lowered to what their index is built from (a regex or a grammar).

use formwork_grammar::{Grammar, GrammarConfig, GrammarError};
use serde_json::{Value, json};

use crate::tools::tool_call_schema;
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
