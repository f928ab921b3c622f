//! Where minijinja and Python's jinja2 differ, and what this crate does about it.
//!
//! - Iterating over `none`: jinja2 raises `TypeError: 'NoneType' object is
//!   not iterable` (templates that loop over `tools` without checking it fail
//!   when a request has no tools), minijinja iterates nothing. Before
//!   compiling, every `{% for ... in EXPR %}` is rewritten on the token level
//!   to `{% for ... in (EXPR)|__formwork_iterable %}`, a filter that fails on
//!   `none` as Python does. The rewrite never adds a line, so line numbers in
//!   errors stay those of the original template.
//! - transformers' `{% generation %}` tags (assistant masks) become `{% if true %}`
//!   blocks in the same rewrite, which render their body as transformers does.
//! - Unknown filters and tests: jinja2 refuses them when compiling,
//!   minijinja only when the filter is reached. [`check_names`] walks the
//!   compiled instructions to refuse them up front, with their line.
//! - Python methods on strings, lists and dicts (`.strip()`, `.items()`...):
//!   minijinja-contrib's pycompat callback, plus the few it lacks.

use minijinja::machinery::{Instruction, Token, tokenize};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{ValueKind, from_args};
use minijinja::{Environment, Error as MjError, ErrorKind, State, Value};

/// The filter the rewrite applies to each for-loop's iterable.
pub(crate) const ITERABLE_FILTER: &str = "__formwork_iterable";

/// The outcome of scanning a template's tokens.
pub(crate) struct Rewritten {
    /// The template text to compile.
    pub source: String,
    /// Whether some for-loop iterates over an expression naming `content`:
    /// the template handles content given as a list of parts.
    pub iterates_content: bool,
}

/// Rewrites each for-loop's iterable through [`ITERABLE_FILTER`]. A template
/// that does not tokenize is returned unchanged, for the compiler to report.
pub(crate) fn rewrite_for_loops(source: &str, syntax: &SyntaxConfig) -> Rewritten {
    let unchanged = || Rewritten {
        source: source.to_owned(),
        iterates_content: false,
    };
    let tokens: Vec<_> = match tokenize(source, false, syntax.clone()).collect() {
        Ok(tokens) => tokens,
        Err(_) => return unchanged(),
    };
    // (start, end, text) replacements, in increasing offset order.
    let mut edits: Vec<(usize, usize, &str)> = Vec::new();
    let mut iterates_content = false;
    let mut i = 0;
    while i + 1 < tokens.len() {
        // transformers' `{% generation %}` marks assistant text for masks and
        // renders its body unchanged: an `if true` block does the same, with
        // the same whitespace control.
        if matches!(tokens[i].0, Token::BlockStart)
            && let Token::Ident(tag @ ("generation" | "endgeneration")) = tokens[i + 1].0
            && tokens
                .get(i + 2)
                .is_some_and(|t| matches!(t.0, Token::BlockEnd))
        {
            let span = tokens[i + 1].1;
            let with = if tag == "generation" {
                "if true"
            } else {
                "endif"
            };
            edits.push((span.start_offset as usize, span.end_offset as usize, with));
            i += 3;
            continue;
        }
        if !(matches!(tokens[i].0, Token::BlockStart)
            && matches!(tokens[i + 1].0, Token::Ident("for")))
        {
            i += 1;
            continue;
        }
        // Find `in` at depth 0 after the loop target.
        let mut j = i + 2;
        let mut depth = 0i32;
        let mut found_in = None;
        while j < tokens.len() {
            match tokens[j].0 {
                Token::ParenOpen | Token::BracketOpen | Token::BraceOpen => depth += 1,
                Token::ParenClose | Token::BracketClose | Token::BraceClose => depth -= 1,
                Token::Ident("in") if depth == 0 => {
                    found_in = Some(j);
                    break;
                }
                Token::BlockEnd => break,
                _ => {}
            }
            j += 1;
        }
        let Some(in_idx) = found_in else {
            i = j;
            continue;
        };
        // The iterable runs until `if` or `recursive` at depth 0, or the block's end.
        let mut k = in_idx + 1;
        depth = 0;
        while k < tokens.len() {
            match tokens[k].0 {
                Token::ParenOpen | Token::BracketOpen | Token::BraceOpen => depth += 1,
                Token::ParenClose | Token::BracketClose | Token::BraceClose => depth -= 1,
                Token::Ident("if" | "recursive") if depth == 0 => break,
                Token::BlockEnd => break,
                Token::Ident("content") | Token::Str("content") => iterates_content = true,
                _ => {}
            }
            k += 1;
        }
        if k > in_idx + 1 && k < tokens.len() {
            let start = tokens[in_idx + 1].1.start_offset as usize;
            let end = tokens[k - 1].1.end_offset as usize;
            edits.push((start, start, "("));
            edits.push((end, end, ")|__formwork_iterable"));
        }
        i = k;
    }
    let mut out = String::with_capacity(source.len() + edits.len() * 12);
    let mut last = 0;
    for (start, end, text) in edits {
        if start < last
            || end < start
            || end > source.len()
            || !source.is_char_boundary(start)
            || !source.is_char_boundary(end)
        {
            return unchanged();
        }
        out.push_str(&source[last..start]);
        out.push_str(text);
        last = end;
    }
    out.push_str(&source[last..]);
    Rewritten {
        source: out,
        iterates_content,
    }
}

/// The filter behind the rewrite: returns its input, but fails on `none`
/// (and other non-iterables) as Python's `for` does.
pub(crate) fn iterable_filter(value: Value) -> Result<Value, MjError> {
    match value.kind() {
        ValueKind::None => Err(MjError::new(
            ErrorKind::InvalidOperation,
            "'NoneType' object is not iterable",
        )),
        ValueKind::Bool => Err(MjError::new(
            ErrorKind::InvalidOperation,
            "'bool' object is not iterable",
        )),
        ValueKind::Number => Err(MjError::new(
            ErrorKind::InvalidOperation,
            if value.is_integer() {
                "'int' object is not iterable"
            } else {
                "'float' object is not iterable"
            },
        )),
        _ => Ok(value),
    }
}

/// A filter or test that a template uses and the environment lacks.
pub(crate) struct UnknownName {
    /// `true` for a filter, `false` for a test.
    pub is_filter: bool,
    /// Its name.
    pub name: String,
    /// The 1-based line of its first use.
    pub line: Option<usize>,
}

/// Refuses filters and tests the environment does not define, as jinja2
/// does when it compiles a template.
pub(crate) fn check_names(env: &Environment<'static>, name: &str) -> Result<(), UnknownName> {
    let Ok(tmpl) = env.get_template(name) else {
        return Ok(());
    };
    let compiled = minijinja::machinery::get_compiled_template(&tmpl);
    let mut state = env.empty_state();
    let streams = std::iter::once(&compiled.instructions).chain(compiled.blocks.values());
    for instructions in streams {
        let mut idx = 0u32;
        while let Some(instr) = instructions.get(idx) {
            let unknown = match instr {
                Instruction::ApplyFilter(f, ..) => matches!(
                    state.apply_filter(f, &[]),
                    Err(e) if e.kind() == ErrorKind::UnknownFilter
                )
                .then_some((true, *f)),
                Instruction::PerformTest(t, ..) => matches!(
                    state.perform_test(t, &[]),
                    Err(e) if e.kind() == ErrorKind::UnknownTest
                )
                .then_some((false, *t)),
                _ => None,
            };
            if let Some((is_filter, what)) = unknown {
                return Err(UnknownName {
                    is_filter,
                    name: what.to_owned(),
                    line: instructions.get_line(idx),
                });
            }
            idx += 1;
        }
    }
    Ok(())
}

/// Python methods on values: minijinja-contrib's pycompat plus a few more.
pub(crate) fn unknown_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, MjError> {
    match (value.kind(), method) {
        (ValueKind::String, "rsplit") => {
            let s = value.as_str().unwrap_or_default();
            let (sep, maxsplit): (Option<&str>, Option<i64>) = from_args(args)?;
            let maxsplit = maxsplit.filter(|m| *m >= 0).map(|m| m as usize);
            let mut parts: Vec<Value> = match (sep, maxsplit) {
                (Some(sep), Some(n)) => s.rsplitn(n + 1, sep).map(Value::from).collect(),
                (Some(sep), None) => s.rsplit(sep).map(Value::from).collect(),
                (None, _) => {
                    let words: Vec<&str> = s.split_whitespace().collect();
                    match maxsplit {
                        Some(n) if n < words.len() => {
                            // Keep the head unsplit, as Python does.
                            let mut rest = s.trim_end();
                            let mut tail = Vec::new();
                            for _ in 0..n {
                                let cut = rest.rfind(char::is_whitespace).unwrap_or(0);
                                tail.push(Value::from(rest[cut..].trim_start()));
                                rest = rest[..cut].trim_end();
                            }
                            tail.push(Value::from(rest));
                            tail
                        }
                        _ => words.into_iter().rev().map(Value::from).collect(),
                    }
                }
            };
            parts.reverse();
            Ok(Value::from(parts))
        }
        (ValueKind::String, "removeprefix") => {
            let s = value.as_str().unwrap_or_default();
            let (prefix,): (&str,) = from_args(args)?;
            Ok(Value::from(s.strip_prefix(prefix).unwrap_or(s)))
        }
        (ValueKind::String, "removesuffix") => {
            let s = value.as_str().unwrap_or_default();
            let (suffix,): (&str,) = from_args(args)?;
            Ok(Value::from(s.strip_suffix(suffix).unwrap_or(s)))
        }
        (ValueKind::Map, "__contains__") | (ValueKind::Seq, "__contains__") => {
            let (needle,): (Value,) = from_args(args)?;
            Ok(Value::from(value.try_iter()?.any(|v| v == needle)))
        }
        _ => minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_for_loops_keeping_lines() {
        let src = "{% for x in a + b if x %}{{ x }}{% endfor %}\n{%- for k, v in m.items() recursive -%}\n{% endfor %}{% for p in message['content'] %}{% endfor %}";
        let out = rewrite_for_loops(src, &SyntaxConfig::default());
        assert_eq!(
            out.source,
            "{% for x in (a + b)|__formwork_iterable if x %}{{ x }}{% endfor %}\n{%- for k, v in (m.items())|__formwork_iterable recursive -%}\n{% endfor %}{% for p in (message['content'])|__formwork_iterable %}{% endfor %}"
        );
        assert!(out.iterates_content);
        let plain = rewrite_for_loops(
            "{{ content }}{% for m in messages %}{% endfor %}",
            &SyntaxConfig::default(),
        );
        assert!(!plain.iterates_content);
    }

    #[test]
    fn generation_tags_become_plain_blocks() {
        let src = "{%- generation -%}\n{{ x }}\n{% endgeneration %}";
        assert_eq!(
            rewrite_for_loops(src, &SyntaxConfig::default()).source,
            "{%- if true -%}\n{{ x }}\n{% endif %}"
        );
    }

    #[test]
    fn broken_templates_are_left_alone() {
        let src = "{% for x in %}{{ 'unterminated }}";
        assert_eq!(rewrite_for_loops(src, &SyntaxConfig::default()).source, src);
    }
}
