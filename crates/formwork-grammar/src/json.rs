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

use formwork_schema::{CompiledRules, Compiler, FRAGMENTS, Unenforced};
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
    /// The compiler writes a few fragments verbatim into every string, key and number of a
    /// schema ([`FRAGMENTS`]: most of the text of a large one). Each occurrence is read as a
    /// short placeholder group and the fragment's HIR, parsed once per process, is put in its
    /// place. The text is read as written wherever that could differ: an occurrence that is
    /// not one group followed by a quantifier (which would bind to its last part only) keeps
    /// its text, and where some placeholder did not come out as a group (the occurrence was
    /// escaped or bracketed text of a pattern), the whole regex is parsed as written.
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
        let hir = parse_with_fragments(regex, parse)?;
        self.expr(hir, rule)
    }

    /// `hir` as an expression: references become rules, and the parts without any are
    /// kept regular, or split if they are large ([`Reader::split`]). Takes the HIR apart
    /// rather than copying it.
    fn expr(&self, hir: Hir, rule: &str) -> Result<Expr, GrammarError> {
        if hir.properties().explicit_captures_len() == 0 {
            return Ok(self.split(hir));
        }
        Ok(match hir.into_kind() {
            HirKind::Capture(c) => match c.name.as_deref().and_then(CompiledRules::reference) {
                Some(i) => {
                    let id = self.ids.get(i).ok_or_else(|| GrammarError::Regex {
                        rule: rule.to_owned(),
                        reason: format!("a reference to rule {i}, which does not exist"),
                    })?;
                    Expr::Rule(*id)
                }
                None => self.expr(*c.sub, rule)?,
            },
            HirKind::Concat(subs) => Expr::Concat(cut_after_long(
                subs.into_iter()
                    .map(|h| self.expr(h, rule))
                    .collect::<Result<_, _>>()?,
            )),
            HirKind::Alternation(subs) => Expr::Alt(
                subs.into_iter()
                    .map(|h| self.expr(h, rule))
                    .collect::<Result<_, _>>()?,
            ),
            HirKind::Repetition(r) => Expr::Repeat {
                expr: Box::new(self.expr(*r.sub, rule)?),
                min: r.min,
                max: r.max,
            },
            leaf => self.split(rebuilt(leaf)),
        })
    }

    /// A part without references: one regular leaf when it is small enough for a lexeme,
    /// else its structure as expressions, so that lowering cuts it into several lexemes.
    fn split(&self, hir: Hir) -> Expr {
        let (small, repeatable) = (self.config.lexeme_size, self.config.repeat_size);
        // A bounded repetition of a small part stays one lexeme up to `repeat_size`, as
        // lowering would keep it.
        let repeatable_part = |hir: &Hir, sub: &Hir| {
            hir_size_within(sub, small).is_some()
                && !holds_closed_long_repetition(sub)
                && hir_size_within(hir, repeatable).is_some()
        };
        // A long repetition of a part without one is a lexeme of its own (lowering keeps it
        // apart), up to `repeat_size`.
        let lexeme = match hir.kind() {
            HirKind::Repetition(r) if long_repetition(&hir) => repeatable_part(&hir, &r.sub),
            _ => hir_size_within(&hir, small).is_some() && !holds_closed_long_repetition(&hir),
        };
        let repeated =
            matches!(hir.kind(), HirKind::Repetition(r) if repeatable_part(&hir, &r.sub));
        if lexeme || repeated {
            return Expr::Regular(hir);
        }
        match hir.into_kind() {
            HirKind::Capture(c) => self.split(*c.sub),
            HirKind::Concat(subs) => Expr::Concat(cut_after_long(
                subs.into_iter().map(|h| self.split(h)).collect(),
            )),
            HirKind::Alternation(subs) => {
                Expr::Alt(subs.into_iter().map(|h| self.split(h)).collect())
            }
            HirKind::Repetition(r) => Expr::Repeat {
                expr: Box::new(self.split(*r.sub)),
                min: r.min,
                max: r.max,
            },
            HirKind::Literal(l) => split_literal(&l.0, small),
            leaf => Expr::Regular(rebuilt(leaf)),
        }
    }
}

/// A HIR without sub-expressions, from its kind.
fn rebuilt(kind: HirKind) -> Hir {
    match kind {
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(l) => Hir::literal(l.0),
        HirKind::Class(c) => Hir::class(c),
        HirKind::Look(l) => Hir::look(l),
        HirKind::Capture(c) => Hir::capture(c),
        HirKind::Repetition(r) => Hir::repetition(r),
        HirKind::Concat(subs) => Hir::concat(subs),
        HirKind::Alternation(subs) => Hir::alternation(subs),
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

/// The prefix of the placeholder groups [`Reader::read`] writes for [`FRAGMENTS`] (no schema
/// writes a group of this name: the compiler's only groups are references, `fwref_`).
const FRAGMENT_GROUP: &str = "fwfrag_";

/// A fragment of [`FRAGMENTS`]: its text, whether it is one group, and its HIR.
struct Fragment {
    text: &'static str,
    group: bool,
    hir: Hir,
}

/// [`FRAGMENTS`], parsed once per process.
fn fragments() -> &'static [Fragment] {
    static PARSED: std::sync::OnceLock<Vec<Fragment>> = std::sync::OnceLock::new();
    PARSED.get_or_init(|| {
        FRAGMENTS
            .iter()
            .filter_map(|&(text, group)| {
                let hir = regex_syntax::parse(text).ok()?;
                Some(Fragment { text, group, hir })
            })
            .collect()
    })
}

/// `regex` parsed with `parse`, each occurrence of a fragment parsed once per process (see
/// [`Reader::read`]).
fn parse_with_fragments<E>(regex: &str, parse: impl Fn(&str) -> Result<Hir, E>) -> Result<Hir, E> {
    let fragments = fragments();
    let (text, placed) = with_placeholders(regex, fragments);
    if placed.is_empty() {
        return parse(regex);
    }
    let Ok(hir) = parse(&text) else {
        return parse(regex);
    };
    let mut put = 0;
    let hir = put_fragments(hir, &placed, fragments, &mut put);
    if put == placed.len() {
        Ok(hir)
    } else {
        parse(regex)
    }
}

/// `regex` with the occurrences of `fragments` replaced by placeholder groups
/// (`(?P<fwfrag_N>x)`: not empty, since a repetition of a group that matches only "" is cut
/// to one), and the fragment of each placeholder `N`. The first occurrence wins, the longest
/// fragment where several start at once; a fragment that is not one group keeps its text
/// where a quantifier follows it.
fn with_placeholders(regex: &str, fragments: &[Fragment]) -> (String, Vec<usize>) {
    // The next occurrence of each fragment at or after `at` (`usize::MAX`: none).
    let mut next: Vec<usize> = vec![0; fragments.len()];
    let find = |f: &Fragment, from: usize| {
        regex
            .get(from..)
            .and_then(|rest| rest.find(f.text))
            .map_or(usize::MAX, |p| from + p)
    };
    for (i, f) in fragments.iter().enumerate() {
        next[i] = find(f, 0);
    }
    let mut text = String::new();
    let mut placed = Vec::new();
    let mut at = 0;
    while let Some((start, i)) = (0..fragments.len())
        .filter(|&i| next[i] != usize::MAX)
        .map(|i| (next[i], i))
        .min_by_key(|&(start, i)| (start, std::cmp::Reverse(fragments[i].text.len())))
    {
        let f = &fragments[i];
        let end = start + f.text.len();
        let quantified = regex[end..].starts_with(['*', '+', '?', '{']);
        if text.is_empty() {
            text.reserve(regex.len());
        }
        text.push_str(&regex[at..start]);
        if f.group || !quantified {
            text.push_str(&format!("(?P<{FRAGMENT_GROUP}{}>x)", placed.len()));
            placed.push(i);
        } else {
            text.push_str(f.text);
        }
        at = end;
        for (j, g) in fragments.iter().enumerate() {
            if next[j] != usize::MAX && next[j] < at {
                next[j] = find(g, at);
            }
        }
    }
    if placed.is_empty() {
        return (String::new(), placed);
    }
    text.push_str(&regex[at..]);
    (text, placed)
}

/// `hir` with each placeholder group of [`with_placeholders`] replaced by its fragment's HIR
/// (the rest moved, not copied); `put` counts the placeholders replaced.
fn put_fragments(hir: Hir, placed: &[usize], fragments: &[Fragment], put: &mut usize) -> Hir {
    if hir.properties().explicit_captures_len() == 0 {
        return hir;
    }
    let mut again = |h: Hir| put_fragments(h, placed, fragments, put);
    match hir.into_kind() {
        HirKind::Capture(c) => {
            let placeholder = c
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix(FRAGMENT_GROUP))
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| placed.get(n));
            match placeholder {
                Some(&i) => {
                    *put += 1;
                    fragments[i].hir.clone()
                }
                None => Hir::capture(regex_syntax::hir::Capture {
                    sub: Box::new(again(*c.sub)),
                    ..c
                }),
            }
        }
        HirKind::Concat(subs) => Hir::concat(subs.into_iter().map(again).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.into_iter().map(again).collect()),
        HirKind::Repetition(r) => Hir::repetition(regex_syntax::hir::Repetition {
            sub: Box::new(again(*r.sub)),
            ..r
        }),
        leaf => rebuilt(leaf),
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
        let Expr::Concat(parts) = reader.split(hir) else {
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

    /// Fragments put in place give the HIR the text parses to, quantified or not, and an
    /// occurrence that is escaped text or inside brackets is read as written.
    #[test]
    fn fragments_read_once_are_the_regex_as_written() {
        let [char, key, escape, number, integer] =
            [0, 1, 2, 3, 4].map(|i| formwork_schema::FRAGMENTS[i].0);
        let cases = [
            format!(r#""{char}{{0,5}}""#),
            format!(r#""(?:|{key}{key}*)":{number}(?:,{integer})*"#),
            format!("(?:{number})*{number}?x{number}|{number}"),
            format!("a{escape}*b{escape}"),
            format!(r"(?:\{escape}|y)"),
            format!(r"(?:x\{escape})"),
            format!(r"(?:x\\{escape})"),
            format!(r"[{number}]"),
            format!(r"\{integer}"),
        ];
        for regex in &cases {
            let direct = regex_syntax::parse(regex);
            let read = parse_with_fragments(regex, regex_syntax::parse);
            match (direct, read) {
                (Ok(d), Ok(r)) => assert_eq!(d, r, "{regex}"),
                (Err(_), Err(_)) => {}
                (d, r) => panic!("{regex}: {d:?} vs {r:?}"),
            }
        }
    }
}
