//! The input form every front end writes: named rules whose bodies are regular expressions
//! with references to other rules ([`Expr`] in a [`RuleSet`]).
//!
//! GBNF, Lark and JSON Schema all read into this form; [`RuleSet::compile`] then lowers it to
//! the [`crate::Grammar`] the parser runs, choosing which parts become lexemes. A body is a
//! tree of concatenations, alternations and repetitions over regular leaves (regex-syntax
//! [`Hir`], so a leaf may be any regex) and rule references; recursion, left or right, is
//! only possible through references.

use std::collections::HashMap;

use regex_syntax::hir::Hir;

use crate::GrammarError;

/// A rule of a [`RuleSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub(crate) u32);

impl RuleId {
    /// The rule's position in its set.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The body of a rule: a regular expression whose leaves are regexes or other rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A regular language, as regex-syntax's HIR (matched in full, over bytes of UTF-8 text).
    Regular(Hir),
    /// The language of another rule.
    Rule(RuleId),
    /// The parts one after the other (empty: the empty string).
    Concat(Vec<Expr>),
    /// Any one of the alternatives (empty: nothing at all).
    Alt(Vec<Expr>),
    /// `expr` repeated at least `min` and at most `max` times (`None`: no upper bound).
    Repeat {
        /// What is repeated.
        expr: Box<Expr>,
        /// Fewest repetitions.
        min: u32,
        /// Most repetitions, if bounded.
        max: Option<u32>,
    },
}

impl Expr {
    /// Exactly the UTF-8 bytes of `text`.
    pub fn literal(text: &str) -> Expr {
        Expr::bytes(text.as_bytes())
    }

    /// Exactly `bytes`.
    pub fn bytes(bytes: &[u8]) -> Expr {
        Expr::Regular(Hir::literal(bytes))
    }

    /// The empty string.
    pub fn empty() -> Expr {
        Expr::Concat(Vec::new())
    }

    /// A regex in regex-syntax's syntax (Unicode mode, matched in full). `rule` names the
    /// rule it belongs to, for the error.
    pub fn regex(pattern: &str, rule: &str) -> Result<Expr, GrammarError> {
        regex_syntax::ParserBuilder::new()
            .nest_limit(200)
            .build()
            .parse(pattern)
            .map(Expr::Regular)
            .map_err(|e| GrammarError::Regex {
                rule: rule.to_owned(),
                reason: e.to_string().replace('\n', " "),
            })
    }

    /// The alternation of `alts` read by a front end, with its nesting depth: the one
    /// alternative itself when there is one (at `depth`), else an [`Expr::Alt`] one deeper.
    pub(crate) fn alternation(mut alts: Vec<Expr>, depth: usize) -> (Expr, usize) {
        if alts.len() == 1 {
            (alts.pop().unwrap_or_else(Expr::empty), depth)
        } else {
            (Expr::Alt(alts), depth + 1)
        }
    }

    /// `self` or nothing.
    pub fn optional(self) -> Expr {
        self.repeat(0, Some(1))
    }

    /// `self` repeated `min..=max` times.
    pub fn repeat(self, min: u32, max: Option<u32>) -> Expr {
        Expr::Repeat {
            expr: Box::new(self),
            min,
            max,
        }
    }
}

/// A set of named rules: what a front end builds and [`RuleSet::compile`] lowers.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    names: Vec<String>,
    bodies: Vec<Option<Expr>>,
    by_name: HashMap<String, RuleId>,
    /// Rules lowering keeps as nonterminals ([`RuleSet::keep`]).
    kept: Vec<bool>,
}

impl RuleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The rule called `name`, declared now (without a body) if it is new.
    pub fn rule(&mut self, name: &str) -> RuleId {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = RuleId(self.names.len() as u32);
        self.names.push(name.to_owned());
        self.bodies.push(None);
        self.kept.push(false);
        self.by_name.insert(name.to_owned(), id);
        id
    }

    /// A new rule whose name starts with `hint` and is not used yet (for rules a front end
    /// makes up, such as one per `$ref`).
    pub fn fresh(&mut self, hint: &str) -> RuleId {
        let mut n = self.names.len();
        loop {
            let name = format!("{hint}#{n}");
            if !self.by_name.contains_key(&name) {
                return self.rule(&name);
            }
            n += 1;
        }
    }

    /// The rule called `name`, if declared.
    pub fn get(&self, name: &str) -> Option<RuleId> {
        self.by_name.get(name).copied()
    }

    /// Gives `rule` its body; a rule has one body (a second is [`GrammarError::Duplicate`]:
    /// front ends that allow several definitions join them with [`Expr::Alt`] themselves).
    pub fn define(&mut self, rule: RuleId, body: Expr) -> Result<(), GrammarError> {
        let slot = &mut self.bodies[rule.index()];
        if slot.is_some() {
            return Err(GrammarError::Duplicate(self.names[rule.index()].clone()));
        }
        *slot = Some(body);
        Ok(())
    }

    /// Makes lowering keep `rule` as its own nonterminal, never inlined into the lexemes
    /// around it, even when its language is regular (Lark's `%ignore`: merged into every
    /// lexeme beside it, a comment pattern would multiply their automata).
    pub fn keep(&mut self, rule: RuleId) {
        self.kept[rule.index()] = true;
    }

    /// Whether `rule` is kept as a nonterminal ([`RuleSet::keep`]).
    pub fn is_kept(&self, rule: RuleId) -> bool {
        self.kept[rule.index()]
    }

    /// The name of `rule`.
    pub fn name(&self, rule: RuleId) -> &str {
        &self.names[rule.index()]
    }

    /// The body of `rule`, if defined.
    pub fn body(&self, rule: RuleId) -> Option<&Expr> {
        self.bodies[rule.index()].as_ref()
    }

    /// Number of rules declared.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no rule is declared.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every rule, in declaration order.
    pub fn rules(&self) -> impl Iterator<Item = RuleId> + '_ {
        (0..self.names.len() as u32).map(RuleId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_declared_once_and_defined_once() {
        let mut set = RuleSet::new();
        let a = set.rule("a");
        assert_eq!(set.rule("a"), a);
        assert_eq!(set.get("a"), Some(a));
        set.define(a, Expr::literal("x")).unwrap();
        assert_eq!(
            set.define(a, Expr::literal("y")),
            Err(GrammarError::Duplicate("a".into()))
        );
        let f = set.fresh("a");
        assert_ne!(f, a);
        assert!(set.name(f).starts_with("a#"));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn a_bad_regex_names_its_rule() {
        let err = Expr::regex("[a-", "digits").unwrap_err();
        assert!(matches!(err, GrammarError::Regex { ref rule, .. } if rule == "digits"));
    }
}
