//! Constraints lowered to what their index is built from (a regex or a grammar), and the
//! JSON Schema of a tool call. Strictness is decided here: a keyword the schema compiler
//! cannot enforce refuses a strict schema and is a warning for a lenient one.

use formwork_grammar::{Grammar, GrammarConfig, GrammarError};
use serde_json::{Value, json};

use formwork_schema::{Compiler, Unenforced, Whitespace};

use crate::tools::tool_call_schema;
use crate::{Constraint, EngineError, JsonSchema};

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
/// index of a regex) and which go through a grammar. Keywords of a schema the compiler cannot
/// enforce refuse a strict constraint ([`EngineError::Unenforced`]) and are pushed onto
/// `warnings` for a lenient one.
pub(crate) fn lower(
    constraint: &Constraint,
    config: &GrammarConfig,
    warnings: &mut Vec<String>,
) -> Result<Lowered, EngineError> {
    let json = |schema: &Value, compiler: &Compiler| {
        formwork_grammar::json_schema(schema, compiler, config)
            .map(|compiled| (compiled.grammar, compiled.unenforced))
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
        Constraint::JsonSchema(schema) => {
            let (grammar, unenforced) = json(&schema.schema, &schema_compiler(schema)?)?;
            check_schema(schema, unenforced, warnings)?;
            Ok(Lowered::Grammar(grammar))
        }
        Constraint::JsonObject => {
            json(&json!({"type": "object"}), &Compiler::new()).map(|g| Lowered::Grammar(g.0))
        }
        Constraint::ToolCall {
            functions,
            parallel,
        } => {
            let schema = tool_call_schema(functions, *parallel)?;
            let (grammar, unenforced) = json(&schema, &Compiler::new())?;
            check_tool_call(functions, *parallel, unenforced, warnings)?;
            Ok(Lowered::Grammar(grammar))
        }
        Constraint::Segments(segments) => Ok(Lowered::Segments(segments.clone())),
    }
}

/// What a JSON Schema constraint does with the keywords its compiler did not enforce: a
/// strict one is refused ([`EngineError::Unenforced`], the first keyword), a lenient one
/// gets a warning per keyword.
pub(crate) fn check_schema(
    schema: &JsonSchema,
    unenforced: Vec<Unenforced>,
    warnings: &mut Vec<String>,
) -> Result<(), EngineError> {
    for u in unenforced {
        if schema.strict {
            return Err(EngineError::Unenforced {
                keyword: u.keyword,
                pointer: u.pointer,
                function: None,
            });
        }
        warnings.push(format!("json schema: {u}"));
    }
    Ok(())
}

/// [`check_schema`] for a tool call's schema ([`tool_call_schema`]): each keyword is the
/// function's whose parameters hold it, and that function's `strict` decides.
pub(crate) fn check_tool_call(
    functions: &[crate::ToolFunction],
    parallel: bool,
    unenforced: Vec<Unenforced>,
    warnings: &mut Vec<String>,
) -> Result<(), EngineError> {
    for u in unenforced {
        let Some((candidates, pointer)) =
            functions_of_pointer(functions, parallel, &u.pointer, &u.keyword)
        else {
            // Not inside any function's parameters: the call's own shape, which the compiler
            // enforces in full.
            continue;
        };
        let mut candidates = candidates.iter().filter_map(|&i| functions.get(i));
        let strict = candidates.clone().find(|f| f.strict);
        if let Some(f) = strict {
            return Err(EngineError::Unenforced {
                keyword: u.keyword,
                pointer,
                function: Some(f.name.clone()),
            });
        }
        if let Some(f) = candidates.next() {
            warnings.push(format!(
                "function `{}`: `{}` at {pointer} is not enforced",
                f.name, u.keyword
            ));
        }
    }
    Ok(())
}

/// The schema compiler for a JSON Schema constraint: its whitespace pattern, checked.
pub(crate) fn schema_compiler(schema: &JsonSchema) -> Result<Compiler, EngineError> {
    Ok(match &schema.whitespace {
        Some(pattern) => Compiler::new().whitespace(Whitespace::pattern(pattern)?),
        None => Compiler::new(),
    })
}

/// Which functions' parameters a pointer into [`tool_call_schema`]'s schema may be in, and
/// the pointer inside them: `[/items][/anyOf/I]/properties/arguments/...` or
/// `/$defs/formwork_tool_I/...` (parameters moved there for their `$ref`s). The compiler
/// may report a keyword inside an `anyOf` without the branch's index (it merges the
/// branches' members); then every function whose parameters hold `keyword` at that
/// pointer is a candidate (all of them when none does). `None`: outside every function's
/// parameters.
fn functions_of_pointer(
    functions: &[crate::ToolFunction],
    parallel: bool,
    pointer: &str,
    keyword: &str,
) -> Option<(Vec<usize>, String)> {
    let index = |rest: &str| -> Option<(usize, usize)> {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        Some((rest.get(..digits)?.parse().ok()?, digits))
    };
    let (known, inner) = if let Some(rest) = pointer.strip_prefix("/$defs/formwork_tool_") {
        let (i, digits) = index(rest)?;
        (Some(i), rest.get(digits..)?)
    } else {
        let mut rest = pointer;
        if parallel {
            rest = rest.strip_prefix("/items").unwrap_or(rest);
        }
        let mut known = None;
        if let Some(after) = rest.strip_prefix("/anyOf/") {
            let (i, digits) = index(after)?;
            known = Some(i);
            rest = after.get(digits..)?;
        }
        (known, rest.strip_prefix("/properties/arguments")?)
    };
    if !(inner.is_empty() || inner.starts_with('/')) {
        return None;
    }
    let shown = if inner.is_empty() { "#" } else { inner }.to_owned();
    if let Some(i) = known {
        return Some((vec![i], shown));
    }
    let at_pointer = |f: &crate::ToolFunction| {
        f.parameters
            .pointer(inner)
            .and_then(Value::as_object)
            .is_some_and(|o| o.contains_key(keyword))
    };
    // Through a `$ref` the pointer is the reference's, not its target's: then any
    // function whose parameters hold the keyword somewhere.
    let anywhere = |f: &crate::ToolFunction| holds_keyword(&f.parameters, keyword, 0);
    for test in [
        &at_pointer as &dyn Fn(&crate::ToolFunction) -> bool,
        &anywhere,
    ] {
        let holding: Vec<usize> = (0..functions.len())
            .filter(|&i| test(&functions[i]))
            .collect();
        if !holding.is_empty() {
            return Some((holding, shown));
        }
    }
    Some(((0..functions.len()).collect(), shown))
}

/// Whether `keyword` is a member of some subschema of `schema`.
fn holds_keyword(schema: &Value, keyword: &str, depth: usize) -> bool {
    if depth > 256 {
        return false;
    }
    match schema {
        Value::Object(obj) => obj.iter().any(|(k, v)| {
            k == keyword
                || (!matches!(k.as_str(), "const" | "enum" | "default" | "examples")
                    && holds_keyword(v, keyword, depth + 1))
        }),
        Value::Array(items) => items.iter().any(|v| holds_keyword(v, keyword, depth + 1)),
        _ => false,
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
    let compiler = Compiler::new();
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
        Constraint::JsonSchema(schema) => Ok(schema_compiler(schema)?.compile(&schema.schema)?),
        Constraint::ToolCall {
            functions,
            parallel,
        } => Ok(compiler.compile(&tool_call_schema(functions, *parallel)?)?),
    }
}
