//! One request's cursor over its compiled constraint, whichever kind of constraint it is.
//!
//! A constraint compiles to a [`ConstraintIndex`], shared by every request asking for it: a
//! token [`Index`] for regular constraints (regexes, choices), a [`GrammarIndex`] for
//! context-free ones (grammars). Each choice of a request walks it with its own
//! [`ConstraintGuide`]. The scheduler talks to the guide through its methods
//! alone (the mask of allowed tokens, `advance`, `is_finished`), so another kind of
//! constraint is another variant of these two types and nothing else.

use std::sync::Arc;

use formwork_grammar::{GrammarError, GrammarGuide, GrammarIndex};
use formwork_index::{Guide, Index, IndexError};

use crate::EngineError;
use crate::segments::{SegmentsGuide, SegmentsIndex};

/// A compiled constraint, shared by every request with that constraint (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) enum ConstraintIndex {
    /// A regular constraint's token index.
    Regular(Arc<Index>),
    /// A grammar's index.
    Grammar(Arc<GrammarIndex>),
    /// Segments composed with free text.
    Segments(Arc<SegmentsIndex>),
}

impl ConstraintIndex {
    /// Bytes it holds now (a lazy index grows as requests visit its states).
    pub(crate) fn memory_usage(&self) -> usize {
        match self {
            ConstraintIndex::Regular(index) => index.memory_usage(),
            ConstraintIndex::Grammar(index) => index.memory_usage(),
            ConstraintIndex::Segments(index) => index.memory_usage(),
        }
    }

    /// A cursor at its start, for one choice of one request (a grammar's start may already
    /// be more ambiguous than the parser's bound).
    pub(crate) fn guide(&self) -> Result<ConstraintGuide, EngineError> {
        self.start()
            .map_err(|e| EngineError::Constraint(e.to_string()))
    }

    /// [`ConstraintIndex::guide`] with the guide's own error.
    pub(crate) fn start(&self) -> Result<ConstraintGuide, GuideError> {
        Ok(match self {
            ConstraintIndex::Regular(index) => ConstraintGuide::Regular(Guide::new(index.clone())),
            ConstraintIndex::Grammar(index) => {
                ConstraintGuide::Grammar(GrammarGuide::new(index.clone())?)
            }
            ConstraintIndex::Segments(index) => ConstraintGuide::Segments(Box::new(index.guide()?)),
        })
    }
}

/// Where one choice stands in its [`ConstraintIndex`].
#[derive(Debug, Clone)]
pub(crate) enum ConstraintGuide {
    /// In a token index.
    Regular(Guide),
    /// In a grammar.
    Grammar(GrammarGuide),
    /// In segments composed with free text.
    Segments(Box<SegmentsGuide>),
}

/// Why a guide cannot go on: the choice ends with this error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuideError {
    /// A lazy index stopped growing at its memory limit and has no token here.
    #[error("the constraint's automaton outgrew its size limits: no token can continue here")]
    Truncated,
    /// No token of the vocabulary continues the text.
    #[error("the constraint allows no token here: the vocabulary cannot spell what it needs next")]
    DeadEnd,
    /// Segments composed with free text do not roll back.
    #[error("segments composed with free text cannot roll back")]
    NoRollback,
    /// The token index refused a step.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The grammar's parser refused a step or could not go on (a grammar too ambiguous).
    #[error(transparent)]
    Grammar(#[from] GrammarError),
}

impl ConstraintGuide {
    /// The tokens allowed now as a bitset over the vocabulary (bit `t % 64` of word
    /// `t / 64`), EOS included where the text may end, or `None` when every token is (free
    /// text); an error when no token is allowed.
    pub(crate) fn mask(&mut self) -> Result<Option<&[u64]>, GuideError> {
        match self {
            ConstraintGuide::Regular(guide) => {
                let index = guide.index();
                if index.allowed_count(guide.state()) == 0 {
                    return Err(if index.is_truncated() {
                        GuideError::Truncated
                    } else {
                        GuideError::DeadEnd
                    });
                }
                Ok(Some(guide.mask()))
            }
            ConstraintGuide::Grammar(guide) => {
                let mask = guide.mask()?;
                if mask.iter().all(|&w| w == 0) {
                    return Err(GuideError::DeadEnd);
                }
                Ok(Some(mask))
            }
            ConstraintGuide::Segments(guide) => {
                let mask = guide.mask()?;
                if mask.is_some_and(|m| m.iter().all(|&w| w == 0)) {
                    return Err(GuideError::DeadEnd);
                }
                Ok(mask)
            }
        }
    }

    /// Consumes `token`; a token not allowed here is an error.
    pub(crate) fn advance(&mut self, token: u32) -> Result<(), GuideError> {
        match self {
            ConstraintGuide::Regular(guide) => Ok(guide.advance(token)?),
            ConstraintGuide::Grammar(guide) => Ok(guide.advance(token)?),
            ConstraintGuide::Segments(guide) => guide.advance(token),
        }
    }

    /// Appends to `out` the text the constraint forces next (at most `max` bytes): the
    /// longest byte string every accepted continuation starts with, up to where the
    /// constraint allows a choice or may end. Empty in free text. A guide that cannot tell
    /// (a grammar too ambiguous to follow) forces nothing: its next mask reports the error.
    /// See [`crate::jump`].
    pub(crate) fn forced_bytes(&mut self, max: usize, out: &mut Vec<u8>) {
        match self {
            ConstraintGuide::Regular(guide) => guide.forced_bytes(max, out),
            ConstraintGuide::Grammar(guide) => {
                if guide.forced_bytes(max, out).is_err() {
                    out.clear();
                }
            }
            ConstraintGuide::Segments(guide) => guide.forced_bytes(max, out),
        }
    }

    /// Whether generation is over: EOS was consumed, or the text is complete and no token
    /// but EOS can extend it.
    pub(crate) fn is_finished(&self) -> bool {
        match self {
            ConstraintGuide::Regular(guide) => guide.is_finished(),
            ConstraintGuide::Grammar(guide) => guide.is_finished(),
            ConstraintGuide::Segments(guide) => guide.is_finished(),
        }
    }

    /// Whether the whole reply is this constraint's (a regex, choice, grammar, JSON Schema
    /// or forced tool call), not free text composed with segments: only such replies are
    /// steered to end valid (`crate::end_valid`).
    pub(crate) fn is_whole(&self) -> bool {
        !matches!(self, ConstraintGuide::Segments(_))
    }

    /// The bytes of a shortest text that completes the constraint from here (empty where
    /// the text so far may end); `None` once EOS was consumed, and for segments composed
    /// with free text, which are not steered (their free text may end anywhere, and a
    /// segment's rest depends on how the model goes on).
    pub(crate) fn shortest_completion(&self) -> Result<Option<Vec<u8>>, GuideError> {
        match self {
            ConstraintGuide::Regular(guide) => Ok(guide.shortest_completion()?),
            ConstraintGuide::Grammar(guide) => Ok(guide.shortest_completion()?),
            ConstraintGuide::Segments(_) => Ok(None),
        }
    }

    /// Undoes the last `n` tokens (segments cannot: an error).
    pub(crate) fn rollback(&mut self, n: usize) -> Result<(), GuideError> {
        match self {
            ConstraintGuide::Regular(guide) => Ok(guide.rollback(n)?),
            ConstraintGuide::Grammar(guide) => Ok(guide.rollback(n)?),
            ConstraintGuide::Segments(_) => Err(GuideError::NoRollback),
        }
    }

    /// Whether the token consumed last, a special token, spelled part of the text (a tag or
    /// trigger of segments): its content is then the reply's, not left out as specials are.
    pub(crate) fn special_text(&self) -> bool {
        match self {
            ConstraintGuide::Segments(guide) => guide.special_text(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use formwork_grammar::{Expr, GrammarConfig, RuleSet};
    use formwork_index::{IndexConfig, Vocabulary};

    use super::*;

    fn vocab() -> Vocabulary {
        let tokens = vec![b"a".to_vec(), b"b".to_vec(), b"<eos>".to_vec()];
        Vocabulary::new(tokens, vec![2], [2]).unwrap()
    }

    #[test]
    fn a_regular_guide_masks_advances_and_finishes() {
        let index = Index::with_config("ab", &vocab(), IndexConfig::default()).unwrap();
        let compiled = ConstraintIndex::Regular(Arc::new(index));
        let mut guide = compiled.guide().unwrap();
        assert_eq!(guide.mask().unwrap().unwrap()[0], 0b001);
        assert!(guide.advance(1).is_err());
        guide.advance(0).unwrap();
        assert!(!guide.is_finished());
        assert_eq!(guide.mask().unwrap().unwrap()[0], 0b010);
        guide.advance(1).unwrap();
        assert!(guide.is_finished());
    }

    #[test]
    fn a_guide_with_no_token_is_a_dead_end_not_an_empty_mask() {
        // `c` cannot be spelled by this vocabulary; a lazy index finds out on arrival.
        let config = IndexConfig {
            lazy: true,
            ..IndexConfig::default()
        };
        let index = Index::with_config("ac", &vocab(), config).unwrap();
        let mut guide = ConstraintIndex::Regular(Arc::new(index)).guide().unwrap();
        guide.advance(0).unwrap();
        assert!(matches!(guide.mask(), Err(GuideError::DeadEnd)));
    }

    /// `s → "a" s "b" | ""` over tokens `a`, `b`, `<eos>`.
    fn balanced() -> ConstraintIndex {
        let mut rules = RuleSet::new();
        let s = rules.rule("s");
        let body = Expr::Alt(vec![
            Expr::Concat(vec![Expr::literal("a"), Expr::Rule(s), Expr::literal("b")]),
            Expr::empty(),
        ]);
        rules.define(s, body).unwrap();
        let grammar = rules.compile(s, &GrammarConfig::default()).unwrap();
        ConstraintIndex::Grammar(Arc::new(GrammarIndex::new(grammar, &vocab()).unwrap()))
    }

    #[test]
    fn a_grammar_guide_counts_what_no_regex_can() {
        let compiled = balanced();
        let mut guide = compiled.guide().unwrap();
        // Empty text is complete: `a` or EOS.
        assert_eq!(guide.mask().unwrap().unwrap()[0], 0b101);
        for _ in 0..5 {
            guide.advance(0).unwrap();
        }
        // Five open: `a` or `b`, not EOS.
        assert_eq!(guide.mask().unwrap().unwrap()[0], 0b011);
        for _ in 0..5 {
            assert!(!guide.is_finished());
            guide.advance(1).unwrap();
        }
        // Balanced: the whole text is one `s`, so only EOS, and nothing can extend it.
        assert_eq!(guide.mask().unwrap().unwrap()[0], 0b100);
        assert!(guide.is_finished());
        assert!(matches!(
            guide.advance(1),
            Err(GuideError::Grammar(GrammarError::TokenNotAllowed(1)))
        ));
        guide.advance(2).unwrap();
        assert!(guide.is_finished());
        // Forks of a guide walk on their own.
        let mut fork = compiled.guide().unwrap();
        let copy = fork.clone();
        fork.advance(0).unwrap();
        let mut copy = copy;
        assert_eq!(copy.mask().unwrap().unwrap()[0], 0b101);
    }

    #[test]
    fn a_grammar_too_ambiguous_to_follow_is_a_guide_error() {
        // After `x` the parser predicts 25 000 recursive alternatives at once, past its bound
        // on items per position: the mask or the step says so, as an error.
        let mut rules = RuleSet::new();
        let root = rules.rule("root");
        let many = rules.rule("many");
        let alternatives = (0..25_000)
            .map(|i| {
                let r = rules.rule(&format!("r{i}"));
                let nested =
                    Expr::Concat(vec![Expr::literal("a"), Expr::Rule(r), Expr::literal("b")]);
                rules
                    .define(r, Expr::Alt(vec![nested, Expr::literal("a")]))
                    .unwrap();
                Expr::Rule(r)
            })
            .collect();
        rules.define(many, Expr::Alt(alternatives)).unwrap();
        rules
            .define(
                root,
                Expr::Concat(vec![Expr::literal("x"), Expr::Rule(many)]),
            )
            .unwrap();
        let grammar = rules.compile(root, &GrammarConfig::default()).unwrap();
        let tokens = vec![
            b"x".to_vec(),
            b"a".to_vec(),
            b"b".to_vec(),
            b"<eos>".to_vec(),
        ];
        let vocab = Vocabulary::new(tokens, vec![3], [3]).unwrap();
        let index = GrammarIndex::new(grammar, &vocab).unwrap();
        let mut guide = ConstraintIndex::Grammar(Arc::new(index)).guide().unwrap();
        let walked = guide
            .mask()
            .map(|_| ())
            .and_then(|()| guide.advance(0))
            .and_then(|()| guide.mask().map(|_| ()));
        assert!(
            matches!(walked, Err(GuideError::Grammar(GrammarError::Ambiguous(_)))),
            "{walked:?}"
        );
    }

    #[test]
    fn a_grammar_guide_with_no_token_is_a_dead_end() {
        // `ab` then `c`, which this vocabulary cannot spell.
        let mut rules = RuleSet::new();
        let s = rules.rule("s");
        let t = rules.rule("t");
        rules
            .define(s, Expr::Concat(vec![Expr::literal("a"), Expr::Rule(t)]))
            .unwrap();
        rules
            .define(
                t,
                Expr::Alt(vec![
                    Expr::literal("c"),
                    Expr::Concat(vec![Expr::literal("c"), Expr::Rule(t)]),
                ]),
            )
            .unwrap();
        let grammar = rules.compile(s, &GrammarConfig::default()).unwrap();
        let index = GrammarIndex::new(grammar, &vocab()).unwrap();
        let mut guide = ConstraintIndex::Grammar(Arc::new(index)).guide().unwrap();
        guide.advance(0).unwrap();
        assert!(matches!(guide.mask(), Err(GuideError::DeadEnd)));
    }
}
