//! JSON Schema as a grammar: `formwork-schema`'s rules mode read into a [`RuleSet`].
//!
//! [`formwork_schema::Compiler::compile_rules`] compiles a schema to regexes that refer to each
//! other: a `$ref` is a reference to the rule of its target (so recursion has no depth limit)
//! and an unconstrained value a reference to one recursive rule for any JSON value. Here each
//! regex is parsed, its references become [`Expr::Rule`]s, and the parts around them stay
//! regular; lowering then merges what is small and not recursive back into lexemes, so a small
//! schema without recursion is one lexeme, as with the regex compiler, while a large one is
//! many small lexemes instead of one large automaton.
//!
//! ```
//! use formwork_grammar::{GrammarConfig, json_schema};
//! use formwork_schema::Compiler;
//! use serde_json::json;
//!
//! let list = json!({
//!     "type": "object",
//!     "properties": {
//!         "value": {"type": "integer"},
//!         "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}
//!     },
//!     "required": ["value", "next"]
//! });
//! let json = json_schema(&list, &Compiler::new(), &GrammarConfig::default())?;
//! // The list refers to itself: a nonterminal for `#`.
//! let g = &json.grammar;
//! assert!((0..g.rule_count() as u32).any(|n| g.rule_name(n) == "#"));
//! # Ok::<(), formwork_grammar::GrammarError>(())
//! ```

use formwork_schema::{CompiledRules, Compiler, STRING_CHAR, Unenforced};
use regex_syntax::hir::{Hir, HirKind};
use serde_json::Value;

use crate::grammar::{hir_size_within, holds_closed_long_repetition, long_repetition};
use crate::{Expr, Grammar, GrammarConfig, GrammarError, RuleId, RuleSet};

/// The name of the start rule (rule names from references hold `#`, the any-value rule is
/// `any`, so it cannot clash).
const START: &str = "document";

/// A JSON Schema compiled to a grammar.
#[derive(Debug, Clone)]
pub struct JsonGrammar {
    /// The grammar: its language is the schema's documents as the compiler lays them out.
    pub grammar: Grammar,
    /// Keywords present in the schema that the grammar does not enforce, with their pointers.
    pub unenforced: Vec<Unenforced>,
}

/// Compiles `schema` with `compiler` in rules mode ([`Compiler::compile_rules`]) and lowers
/// the rules to a [`Grammar`] with `config`.
///
/// Errors: the compiler's refusals as [`GrammarError::Schema`]; a grammar over a limit of
/// `config` as [`GrammarError::TooLarge`]; a schema no document satisfies as
/// [`GrammarError::Empty`].
pub fn json_schema(
    schema: &Value,
    compiler: &Compiler,
    config: &GrammarConfig,
) -> Result<JsonGrammar, GrammarError> {
    let mut set = RuleSet::new();
    let (start, unenforced) = json_rules(&mut set, schema, compiler, config)?;
    let grammar = set.compile(start, config)?;
    Ok(JsonGrammar {
        grammar,
        unenforced,
    })
}

/// Compiles `schema` as [`json_schema`] does, into rules added to `set` (names already in
/// it are not reused), so one grammar can hold several schemas or a schema inside other
/// rules. Returns the rule of the schema's documents and the keywords it does not enforce.
pub fn json_rules(
    set: &mut RuleSet,
    schema: &Value,
    compiler: &Compiler,
    config: &GrammarConfig,
) -> Result<(RuleId, Vec<Unenforced>), GrammarError> {
    let compiled = compiler.compile_rules(schema)?;
    let start = add_rules(set, &compiled, config)?;
    Ok((start, compiled.unenforced))
}

/// Adds the rules of `compiled` to `set` under names not used yet; returns its start rule.
fn add_rules(
    set: &mut RuleSet,
    compiled: &CompiledRules,
    config: &GrammarConfig,
) -> Result<RuleId, GrammarError> {
    let new_rule = |set: &mut RuleSet, name: &str| match set.get(name) {
        Some(_) => set.fresh(name),
        None => set.rule(name),
    };
    let ids: Vec<RuleId> = compiled
        .rules
        .iter()
        .map(|r| new_rule(set, &r.name))
        .collect();
    let start = new_rule(set, START);
    let reader = Reader { ids: &ids, config };
    for (rule, &id) in compiled.rules.iter().zip(&ids) {
        let body = match &rule.regex {
            Some(regex) => reader.read(regex, &rule.name)?,
            // No document: the empty alternation.
            None => Expr::Alt(Vec::new()),
        };
        set.define(id, body)?;
        if rule.shared {
            // Written once, referred to from every alternative that repeats it: inlined, it
            // would be copied into each again.
            set.keep(id);
        }
    }
    set.define(start, reader.read(&compiled.start, START)?)?;
    Ok(start)
}

/// Turns the rules' regexes into [`Expr`]s.
struct Reader<'a> {
    /// The rule of each index of [`CompiledRules::rules`].
    ids: &'a [RuleId],
    config: &'a GrammarConfig,
}

impl Reader<'_> {
    /// Parses `regex` (rule `rule`) the way `formwork-index` parses the regexes it builds
    /// automata from (regex-syntax's defaults: Unicode, UTF-8) and reads it.
    ///
    /// A JSON string's character ([`STRING_CHAR`]) is written into every string of a schema,
    /// most of the text of a large one: each is read as a short placeholder group and the
    /// character's HIR, parsed once, put in its place.
    fn read(&self, regex: &str, rule: &str) -> Result<Expr, GrammarError> {
        let parse = |text: &str| {
            regex_syntax::ParserBuilder::new()
                .build()
                .parse(text)
                .map_err(|e| GrammarError::Regex {
                    rule: rule.to_owned(),
                    reason: e.to_string().replace('\n', " "),
                })
        };
        // Parsed once per process (it is a constant).
        static CHAR_HIR: std::sync::OnceLock<Option<Hir>> = std::sync::OnceLock::new();
        let char_hir = CHAR_HIR.get_or_init(|| regex_syntax::parse(STRING_CHAR).ok());
        let hir = if let Some(char_hir) = char_hir
            && regex.contains(STRING_CHAR)
        {
            let mut text = String::with_capacity(regex.len() / 2);
            for (n, piece) in regex.split(STRING_CHAR).enumerate() {
                if n > 0 {
                    // Not empty: a repetition of a group that matches only "" is cut to one.
                    text.push_str(&format!("(?P<{CHAR_GROUP}{n}>x)"));
                }
                text.push_str(piece);
            }
            put_chars(&parse(&text)?, char_hir)
        } else {
            parse(regex)?
        };
        Ok(match self.expr(&hir, rule)? {
            Some(e) => e,
            None => self.split(&hir),
        })
    }

    /// `hir` as an expression, or `None` when it holds no reference (the caller keeps it
    /// regular, or splits it if it is large).
    fn expr(&self, hir: &Hir, rule: &str) -> Result<Option<Expr>, GrammarError> {
        Ok(match hir.kind() {
            HirKind::Capture(c) => match c.name.as_deref().and_then(CompiledRules::reference) {
                Some(i) => {
                    let id = self.ids.get(i).ok_or_else(|| GrammarError::Regex {
                        rule: rule.to_owned(),
                        reason: format!("a reference to rule {i}, which does not exist"),
                    })?;
                    Some(Expr::Rule(*id))
                }
                None => self.expr(&c.sub, rule)?,
            },
            HirKind::Concat(subs) | HirKind::Alternation(subs) => {
                let parts = subs
                    .iter()
                    .map(|h| self.expr(h, rule))
                    .collect::<Result<Vec<_>, _>>()?;
                if parts.iter().all(Option::is_none) {
                    return Ok(None);
                }
                let parts = parts
                    .into_iter()
                    .zip(subs)
                    .map(|(p, h)| p.unwrap_or_else(|| self.split(h)))
                    .collect();
                Some(if matches!(hir.kind(), HirKind::Concat(_)) {
                    Expr::Concat(cut_after_long(parts))
                } else {
                    Expr::Alt(parts)
                })
            }
            HirKind::Repetition(r) => self.expr(&r.sub, rule)?.map(|sub| Expr::Repeat {
                expr: Box::new(sub),
                min: r.min,
                max: r.max,
            }),
            HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => None,
        })
    }

    /// A part without references: one regular leaf when it is small enough for a lexeme,
    /// else its structure as expressions, so that lowering cuts it into several lexemes.
    fn split(&self, hir: &Hir) -> Expr {
        let (small, repeatable) = (self.config.lexeme_size, self.config.repeat_size);
        // A long repetition of a part without one is a lexeme of its own (lowering keeps it
        // apart), up to `repeat_size`.
        let lexeme = match hir.kind() {
            HirKind::Repetition(r) if long_repetition(hir) => {
                hir_size_within(&r.sub, small).is_some()
                    && !holds_closed_long_repetition(&r.sub)
                    && hir_size_within(hir, repeatable).is_some()
            }
            _ => hir_size_within(hir, small).is_some() && !holds_closed_long_repetition(hir),
        };
        if lexeme {
            return Expr::Regular(hir.clone());
        }
        match hir.kind() {
            HirKind::Capture(c) => self.split(&c.sub),
            HirKind::Concat(subs) => {
                Expr::Concat(cut_after_long(subs.iter().map(|h| self.split(h)).collect()))
            }
            HirKind::Alternation(subs) => Expr::Alt(subs.iter().map(|h| self.split(h)).collect()),
            // A bounded repetition of a small part stays one lexeme up to `repeat_size`, as
            // lowering would keep it.
            HirKind::Repetition(r)
                if hir_size_within(&r.sub, small).is_some()
                    && !holds_closed_long_repetition(&r.sub)
                    && hir_size_within(hir, repeatable).is_some() =>
            {
                Expr::Regular(hir.clone())
            }
            HirKind::Repetition(r) => Expr::Repeat {
                expr: Box::new(self.split(&r.sub)),
                min: r.min,
                max: r.max,
            },
            HirKind::Literal(l) => split_literal(&l.0, small),
            HirKind::Empty | HirKind::Class(_) | HirKind::Look(_) => Expr::Regular(hir.clone()),
        }
    }
}

/// `parts` with each literal that follows a long repetition cut after its first character,
/// which then closes the repetition's lexeme (a string's closing quote) while the rest goes
/// on with what follows.
fn cut_after_long(parts: Vec<Expr>) -> Vec<Expr> {
    let mut out = Vec::with_capacity(parts.len() + 1);
    let mut after_long = false;
    for part in parts {
        let long = matches!(&part, Expr::Regular(h) if long_repetition(h));
        match (&part, after_long) {
            (Expr::Regular(h), true) => match h.kind() {
                HirKind::Literal(l) if l.0.len() > 1 => {
                    let cut = std::str::from_utf8(&l.0)
                        .ok()
                        .and_then(|t| t.chars().next())
                        .map_or(1, char::len_utf8);
                    out.push(Expr::bytes(&l.0[..cut]));
                    out.push(Expr::bytes(&l.0[cut..]));
                }
                _ => out.push(part),
            },
            _ => out.push(part),
        }
        after_long = long;
    }
    out
}

/// The prefix of the placeholder groups [`Reader::read`] writes for [`STRING_CHAR`] (no
/// schema writes a group: the compiler's only groups are references, `fwref_`).
const CHAR_GROUP: &str = "fwchar_";

/// `hir` with each placeholder group of [`Reader::read`] replaced by `char_hir`.
fn put_chars(hir: &Hir, char_hir: &Hir) -> Hir {
    if hir.properties().explicit_captures_len() == 0 {
        return hir.clone();
    }
    match hir.kind() {
        HirKind::Capture(c) if c.name.as_deref().is_some_and(|n| n.starts_with(CHAR_GROUP)) => {
            char_hir.clone()
        }
        HirKind::Capture(c) => Hir::capture(regex_syntax::hir::Capture {
            index: c.index,
            name: c.name.clone(),
            sub: Box::new(put_chars(&c.sub, char_hir)),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(|h| put_chars(h, char_hir)).collect()),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.iter().map(|h| put_chars(h, char_hir)).collect())
        }
        HirKind::Repetition(r) => Hir::repetition(regex_syntax::hir::Repetition {
            min: r.min,
            max: r.max,
            greedy: r.greedy,
            sub: Box::new(put_chars(&r.sub, char_hir)),
        }),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => hir.clone(),
    }
}

/// A long literal as a concatenation of pieces of at most `max` bytes, cut between
/// characters.
fn split_literal(bytes: &[u8], max: usize) -> Expr {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Expr::bytes(bytes);
    };
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if i + c.len_utf8() - start > max.max(4) {
            pieces.push(Expr::literal(&text[start..i]));
            start = i;
        }
    }
    pieces.push(Expr::literal(&text[start..]));
    Expr::Concat(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(schema: Value) -> CompiledRules {
        Compiler::new().compile_rules(&schema).unwrap()
    }

    #[test]
    fn two_schemas_share_one_rule_set_without_clashing() {
        let config = GrammarConfig::default();
        let compiler = Compiler::new();
        let list = |item: &str| serde_json::json!({"type": "array", "items": {"anyOf": [{"type": item}, {"$ref": "#"}]}});
        let mut set = RuleSet::new();
        let (a, _) = json_rules(&mut set, &list("integer"), &compiler, &config).unwrap();
        let (b, _) = json_rules(&mut set, &list("boolean"), &compiler, &config).unwrap();
        let both = set.fresh("both");
        set.define(both, Expr::Concat(vec![Expr::Rule(a), Expr::Rule(b)]))
            .unwrap();
        let g = set.compile(both, &config).unwrap();
        // Each `#` is its own schema's root.
        assert!(g.matches(b"[1,[2]][true,[[false]]]").unwrap());
        assert!(!g.matches(b"[true][1]").unwrap());
    }

    #[test]
    fn references_become_rules_and_the_rest_stays_regular() {
        let compiled = rules(serde_json::json!({
            "type": "object",
            "properties": {"next": {"$ref": "#"}, "v": {"type": "integer"}},
            "required": ["v"]
        }));
        let mut set = RuleSet::new();
        let start = add_rules(&mut set, &compiled, &GrammarConfig::default()).unwrap();
        let root = set.get("#").unwrap();
        // Somewhere in the start rule's body is a reference to `#`.
        fn refers(e: &Expr, to: RuleId) -> bool {
            match e {
                Expr::Rule(r) => *r == to,
                Expr::Concat(v) | Expr::Alt(v) => v.iter().any(|e| refers(e, to)),
                Expr::Repeat { expr, .. } => refers(expr, to),
                Expr::Regular(h) => {
                    assert_eq!(h.properties().explicit_captures_len(), 0);
                    false
                }
            }
        }
        assert!(refers(set.body(start).unwrap(), root));
        assert!(refers(set.body(root).unwrap(), root));
    }

    #[test]
    fn a_large_part_without_references_is_split() {
        let config = GrammarConfig {
            lexeme_size: 64,
            ..GrammarConfig::default()
        };
        let reader = Reader {
            ids: &[],
            config: &config,
        };
        let hir = regex_syntax::parse(&format!("(?:{}|b)c", "a".repeat(200))).unwrap();
        let Expr::Concat(parts) = reader.split(&hir) else {
            panic!("not split")
        };
        assert!(
            matches!(&parts[0], Expr::Alt(alts) if matches!(&alts[0], Expr::Concat(p) if p.len() == 4))
        );
    }

    #[test]
    fn a_reference_to_a_missing_rule_is_an_error() {
        let reader = Reader {
            ids: &[],
            config: &GrammarConfig::default(),
        };
        let err = reader.read("a(?P<fwref_3_0>)", "r").unwrap_err();
        assert!(matches!(err, GrammarError::Regex { ref rule, .. } if rule == "r"));
    }
}
