//! Token masks for a grammar: a [`GrammarIndex`] (a grammar over a vocabulary, shared) and
//! the per-request [`GrammarGuide`].
//!
//! The mask where the parser stands is the union, over the lexemes in progress, of two parts:
//!
//! - the tokens that keep the lexeme going: its `formwork_index::Index` mask in the lexeme's
//!   DFA state, computed once per state by a trie walk and shared by every request (the
//!   context-independent tokens: inside a JSON string, nearly the whole vocabulary);
//! - the tokens that end the lexeme inside themselves and go on with what the grammar allows
//!   next: the index records, per state, the trie nodes where the lexeme's match can end and
//!   the token continue (its accept points: after a string's closing quote, say), and only
//!   those subtrees are walked with the parser, a set pushed per byte and popped on the way
//!   back.
//!
//! EOS is allowed exactly where the start symbol is complete.

use std::sync::{Arc, OnceLock};

use formwork_index::{Index, IndexConfig, NextBytes, StateId, Stepper, Vocabulary};

use crate::parser::{Chart, Lexemes, Tables};
use crate::{Grammar, GrammarError};

/// Most items one parser set may hold before the grammar is called too ambiguous.
pub const DEFAULT_MAX_ITEMS: usize = 1 << 16;

/// A grammar over a vocabulary: the parser's tables and one lazily built token index per
/// lexeme. Immutable once built (lexeme indexes fill behind `&self`); share it with `Arc`.
#[derive(Debug)]
pub struct GrammarIndex {
    grammar: Grammar,
    tables: Tables,
    vocab: Vocabulary,
    config: IndexConfig,
    lexemes: Box<[OnceLock<Result<Index, GrammarError>>]>,
    max_items: usize,
    /// Shortest derivation lengths, computed on the first completion asked for.
    lengths: OnceLock<crate::complete::Lengths>,
}

impl GrammarIndex {
    /// An index of `grammar` over `vocab` with default limits. Nothing is built per lexeme
    /// yet: each lexeme's automaton comes on first use.
    pub fn new(grammar: Grammar, vocab: &Vocabulary) -> Result<GrammarIndex, GrammarError> {
        Self::with_config(grammar, vocab, IndexConfig::default())
    }

    /// An index whose lexeme automata are built with `config` (its limits apply to each
    /// lexeme; `lazy` and `accept_points` are always on).
    pub fn with_config(
        grammar: Grammar,
        vocab: &Vocabulary,
        config: IndexConfig,
    ) -> Result<GrammarIndex, GrammarError> {
        let tables = Tables::new(&grammar);
        let lexemes = (0..grammar.lexemes().len())
            .map(|_| OnceLock::new())
            .collect();
        Ok(GrammarIndex {
            tables,
            vocab: vocab.clone(),
            config: IndexConfig {
                lazy: true,
                accept_points: true,
                ..config
            },
            lexemes,
            grammar,
            max_items: DEFAULT_MAX_ITEMS,
            lengths: OnceLock::new(),
        })
    }

    /// The grammar.
    pub fn grammar(&self) -> &Grammar {
        &self.grammar
    }

    /// The vocabulary.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    /// Approximate heap bytes held: the grammar, the tables and every lexeme index built.
    pub fn memory_usage(&self) -> usize {
        self.grammar.memory_usage()
            + self.tables.memory_usage()
            + self
                .lexemes
                .iter()
                .map(|l| match l.get() {
                    Some(Ok(index)) => index.memory_usage(),
                    _ => 16,
                })
                .sum::<usize>()
    }

    /// The parser's tables.
    pub(crate) fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Shortest derivation lengths of the grammar's symbols, computed on first use.
    pub(crate) fn lengths(&self) -> &crate::complete::Lengths {
        self.lengths
            .get_or_init(|| crate::complete::Lengths::new(&self.grammar, &self.tables))
    }

    /// Lexeme `l`'s token index, built on first use.
    pub(crate) fn lexeme(&self, l: u32) -> Result<&Index, GrammarError> {
        let slot = &self.lexemes[l as usize];
        slot.get_or_init(|| {
            let lexeme = self.grammar.lexeme(l);
            Index::with_config_hir(&lexeme.hir, &self.vocab, self.config).map_err(|source| {
                GrammarError::Index {
                    lexeme: lexeme.regex().chars().take(80).collect(),
                    source,
                }
            })
        })
        .as_ref()
        .map_err(Clone::clone)
    }
}

impl Lexemes for GrammarIndex {
    #[inline]
    fn start(&self, l: u32) -> Result<StateId, GrammarError> {
        Ok(self.lexeme(l)?.start())
    }

    #[inline]
    fn next(&self, l: u32, state: StateId, byte: u8) -> Result<StateId, GrammarError> {
        Ok(self.lexeme(l)?.next_byte(state, byte))
    }

    #[inline]
    fn accepting(&self, l: u32, state: StateId) -> Result<bool, GrammarError> {
        Ok(self.lexeme(l)?.is_accepting(state))
    }

    fn can_continue(&self, l: u32, state: StateId) -> Result<bool, GrammarError> {
        Ok(self.lexeme(l)?.can_continue(state))
    }
}

impl Grammar {
    /// Whether `text` is in the grammar's language (a recognizer: no vocabulary involved).
    pub fn matches(&self, text: &[u8]) -> Result<bool, GrammarError> {
        let vocab =
            Vocabulary::new(Vec::new(), Vec::new(), []).map_err(|source| GrammarError::Index {
                lexeme: String::new(),
                source,
            })?;
        let index = GrammarIndex::new(self.clone(), &vocab)?;
        let mut chart = Chart::new(&index.tables, &index, index.max_items)?;
        for &b in text {
            chart.step(&index.tables, &index, b)?;
            if !chart.is_viable() {
                return Ok(false);
            }
        }
        Ok(chart.accepts())
    }
}

/// Feeds `bytes` to `chart`; on a byte the grammar refuses, truncates back to `mark` and
/// returns `false` (or the parser's error).
fn step_bytes(
    chart: &mut Chart,
    index: &GrammarIndex,
    bytes: &[u8],
    mark: crate::parser::Mark,
) -> Result<bool, GrammarError> {
    for &b in bytes {
        let r = chart.step(&index.tables, index, b);
        if r.is_err() || !chart.is_viable() {
            chart.truncate(mark);
            r?;
            return Ok(false);
        }
    }
    Ok(true)
}

/// One token consumed: where the chart stood before it.
#[derive(Debug, Clone, Copy)]
struct Step {
    mark: crate::parser::Mark,
    finished: bool,
}

/// Where one generation stands in a [`GrammarIndex`]: the Earley chart of the text so far,
/// and the mask for the next token (computed on first request after each move).
#[derive(Debug, Clone)]
pub struct GrammarGuide {
    index: Arc<GrammarIndex>,
    chart: Chart,
    history: Vec<Step>,
    finished: bool,
    mask: Vec<u64>,
    mask_valid: bool,
    /// Boxed: it is large, and only mask computations touch it.
    scratch: Box<Scratch>,
}

/// The buffers of one mask computation, kept by the guide for the next.
#[derive(Debug, Clone, Default)]
struct Scratch {
    /// The lexeme items open where the guide stands, sorted.
    open: Vec<(u32, StateId, u32)>,
    /// The items of one (lexeme, state) pair: (lexeme, origin).
    ends: Vec<(u32, u32)>,
    walk: Walk,
}

impl GrammarGuide {
    /// A guide at the start of the grammar.
    pub fn new(index: Arc<GrammarIndex>) -> Result<GrammarGuide, GrammarError> {
        let chart = Chart::new(&index.tables, &*index, index.max_items)?;
        let words = index.vocab.mask_words();
        Ok(GrammarGuide {
            index,
            chart,
            history: Vec::new(),
            finished: false,
            mask: vec![0; words],
            mask_valid: false,
            scratch: Box::default(),
        })
    }

    /// The index this guide walks.
    pub fn index(&self) -> &Arc<GrammarIndex> {
        &self.index
    }

    /// The allowed tokens as a bitset over the vocabulary (bit `t % 64` of word `t / 64`),
    /// EOS included where the text is complete.
    pub fn mask(&mut self) -> Result<&[u64], GrammarError> {
        if !self.mask_valid {
            self.compute_mask()?;
            self.mask_valid = true;
        }
        Ok(&self.mask)
    }

    /// The allowed tokens, sorted by id.
    pub fn allowed_tokens(&mut self) -> Result<Vec<u32>, GrammarError> {
        let mask = self.mask()?;
        let mut out = Vec::new();
        for (w, &word) in mask.iter().enumerate() {
            let mut x = word;
            while x != 0 {
                out.push((w * 64 + x.trailing_zeros() as usize) as u32);
                x &= x - 1;
            }
        }
        Ok(out)
    }

    /// Whether `token` is allowed now.
    pub fn is_allowed(&mut self, token: u32) -> Result<bool, GrammarError> {
        let mask = self.mask()?;
        Ok(mask
            .get(token as usize / 64)
            .is_some_and(|w| w & (1 << (token % 64)) != 0))
    }

    /// Appends to `out` the bytes every continuation of the text starts with (at most
    /// `max`): followed while the lexemes in progress allow exactly one next byte between
    /// them and the text is not complete (where it is, EOS is a choice). The chart is
    /// stepped over them to look further and left as it was. A decoder may append them
    /// without sampling. Nothing once EOS was consumed.
    pub fn forced_bytes(&mut self, max: usize, out: &mut Vec<u8>) -> Result<(), GrammarError> {
        if self.finished {
            return Ok(());
        }
        let index = &*self.index;
        let base = self.chart.mark();
        let mut result = Ok(());
        let mut taken = 0;
        while taken < max && !self.chart.accepts() {
            let mut next = NextBytes::None;
            for (l, state, _) in self.chart.open_lexemes() {
                match index.lexeme(l) {
                    Ok(lexeme) => next = next.union(lexeme.next_bytes(state)),
                    Err(e) => {
                        result = Err(e);
                        next = NextBytes::None;
                        break;
                    }
                }
                if next == NextBytes::Many {
                    break;
                }
            }
            let NextBytes::One(b) = next else { break };
            if let Err(e) = self.chart.step(&index.tables, index, b) {
                result = Err(e);
                break;
            }
            if !self.chart.is_viable() {
                break;
            }
            out.push(b);
            taken += 1;
        }
        self.chart.truncate(base);
        result
    }

    /// Whether EOS is allowed now (the text so far is in the language).
    pub fn accepts_eos(&self) -> bool {
        !self.finished && self.chart.accepts() && !self.index.vocab.eos().is_empty()
    }

    /// Whether generation is over: EOS was consumed, or the text is complete and no byte
    /// can extend it.
    pub fn is_finished(&self) -> bool {
        self.finished || (self.chart.accepts() && !self.chart.is_open())
    }

    /// Number of tokens consumed (and not rolled back).
    pub fn len(&self) -> usize {
        self.history.len()
    }

    /// Whether EOS was consumed.
    pub(crate) fn is_finished_by_eos(&self) -> bool {
        self.finished
    }

    /// The parser's chart of the text so far.
    pub(crate) fn chart(&self) -> &Chart {
        &self.chart
    }

    /// Whether no token was consumed.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// Consumes `token`. A token not allowed here is an error and leaves the guide unchanged.
    pub fn advance(&mut self, token: u32) -> Result<(), GrammarError> {
        let vocab = &self.index.vocab;
        let step = Step {
            mark: self.chart.mark(),
            finished: self.finished,
        };
        if self.finished {
            return Err(GrammarError::TokenNotAllowed(token));
        }
        if vocab.is_eos(token) {
            if !self.chart.accepts() {
                return Err(GrammarError::TokenNotAllowed(token));
            }
            self.finished = true;
        } else {
            let bytes = match vocab.token(token) {
                Some(b) if !b.is_empty() && !vocab.is_special(token) => b,
                _ => return Err(GrammarError::TokenNotAllowed(token)),
            };
            if !step_bytes(&mut self.chart, &self.index, bytes, step.mark)? {
                return Err(GrammarError::TokenNotAllowed(token));
            }
        }
        self.history.push(step);
        self.mask_valid = false;
        Ok(())
    }

    /// Consumes `bytes` as one step (one [`GrammarGuide::rollback`] undoes it), for text that
    /// is not one token of the vocabulary: the rest of a token whose first bytes belonged to
    /// something else (a trigger that opened this grammar). Returns whether the grammar
    /// allows them; when not, the guide is unchanged. Empty `bytes` are a step that changes
    /// nothing.
    pub fn advance_bytes(&mut self, bytes: &[u8]) -> Result<bool, GrammarError> {
        if self.finished && !bytes.is_empty() {
            return Ok(false);
        }
        let step = Step {
            mark: self.chart.mark(),
            finished: self.finished,
        };
        if !step_bytes(&mut self.chart, &self.index, bytes, step.mark)? {
            return Ok(false);
        }
        self.history.push(step);
        self.mask_valid = false;
        Ok(true)
    }

    /// Undoes the last `n` tokens. Asking for more than were consumed is an error and leaves
    /// the guide unchanged.
    pub fn rollback(&mut self, n: usize) -> Result<(), GrammarError> {
        let available = self.history.len();
        if n > available {
            return Err(GrammarError::Rollback {
                requested: n,
                available,
            });
        }
        if n > 0 {
            let step = self.history[available - n];
            self.chart.truncate(step.mark);
            self.finished = step.finished;
            self.history.truncate(available - n);
            self.mask_valid = false;
        }
        Ok(())
    }

    /// Back to the start, history cleared.
    pub fn reset(&mut self) {
        if let Some(first) = self.history.first() {
            self.chart.truncate(first.mark);
        }
        self.history.clear();
        self.finished = false;
        self.mask_valid = false;
    }

    /// Approximate heap bytes this guide holds (its chart and mask).
    pub fn memory_usage(&self) -> usize {
        self.chart.memory_usage() + self.mask.len() * 8 + self.history.len() * 24
    }

    fn compute_mask(&mut self) -> Result<(), GrammarError> {
        self.mask.fill(0);
        if self.finished {
            return Ok(());
        }
        let index = &*self.index;
        let trie = index.vocab.trie();
        // Items of one lexeme in one state (begun at different places: an ambiguous
        // grammar) share their tokens and accept points: one mask and one walk per pair,
        // the parser completing them from all their origins at once.
        // Buffers kept across tokens (no allocation per mask once they have grown).
        let Scratch { open, ends, walk } = &mut *self.scratch;
        open.clear();
        open.extend(self.chart.open_lexemes());
        open.sort_unstable();
        let mut k = 0;
        while k < open.len() {
            let (l, state, _) = open[k];
            ends.clear();
            while k < open.len() && open[k].0 == l && open[k].1 == state {
                ends.push((l, open[k].2));
                k += 1;
            }
            let lexeme = index.lexeme(l)?;
            for (m, &w) in self.mask.iter_mut().zip(lexeme.mask(state)) {
                *m |= w;
            }
            let points = lexeme.accept_points(state);
            if points.is_empty() {
                continue;
            }
            // What follows the lexeme's end is the same at every accept point: one set.
            let base = self.chart.mark();
            self.chart.complete_all(&index.tables, index, &ends[..])?;
            if self.chart.is_open() {
                // With many accept points, the bytes some next lexeme can start with are
                // found once, and every child of an accept point whose byte is not one of
                // them is skipped without stepping each lexeme over it.
                walk.first = if points.len() > FIRST_BYTES_FROM {
                    Some(first_bytes(index, &self.chart)?)
                } else {
                    None
                };
                for &node in points {
                    walk.subtree(&mut self.chart, index, trie, node as usize, &mut self.mask)?;
                }
            }
            self.chart.truncate(base);
        }
        // EOS comes from the parser, not from the lexemes' own accepting states.
        for &e in index.vocab.eos() {
            let (w, bit) = (e as usize / 64, 1u64 << (e % 64));
            if self.chart.accepts() {
                self.mask[w] |= bit;
            } else {
                self.mask[w] &= !bit;
            }
        }
        Ok(())
    }
}

/// The lexeme automata a walk steps, each locked once for the whole walk rather than once
/// per byte. A lock another thread holds is not waited for while this walk holds others
/// (no two walks can wait on each other): the walk lets go of all it holds and takes that
/// one step the slow way.
struct Steppers<'a> {
    index: &'a GrammarIndex,
    held: Vec<(u32, Stepper<'a>)>,
}

impl<'a> Steppers<'a> {
    fn get(&mut self, l: u32) -> Result<Option<&mut Stepper<'a>>, GrammarError> {
        if let Some(k) = self.held.iter().position(|(x, _)| *x == l) {
            return Ok(Some(&mut self.held[k].1));
        }
        match self.index.lexeme(l)?.try_stepper() {
            Some(stepper) => {
                self.held.push((l, stepper));
                Ok(self.held.last_mut().map(|(_, s)| s))
            }
            None => {
                self.held.clear();
                Ok(None)
            }
        }
    }

    #[inline]
    fn next(&mut self, l: u32, state: StateId, byte: u8) -> Result<StateId, GrammarError> {
        match self.get(l)? {
            Some(s) => Ok(s.next(state, byte)),
            None => self.index.next(l, state, byte),
        }
    }

    #[inline]
    fn accepting(&mut self, l: u32, state: StateId) -> Result<bool, GrammarError> {
        match self.get(l)? {
            Some(s) => Ok(s.is_accepting(state)),
            None => self.index.accepting(l, state),
        }
    }

    fn can_continue(&mut self, l: u32, state: StateId) -> Result<bool, GrammarError> {
        match self.get(l)? {
            Some(s) => Ok(s.can_continue(state)),
            None => self.index.can_continue(l, state),
        }
    }
}

/// Accept points of one lexeme state past which [`first_bytes`] is worth computing.
const FIRST_BYTES_FROM: usize = 8;

/// The bytes with which some lexeme open in the chart's last set can go on.
fn first_bytes(index: &GrammarIndex, chart: &Chart) -> Result<[bool; 256], GrammarError> {
    let mut dfa = Steppers {
        index,
        held: Vec::new(),
    };
    let mut first = [false; 256];
    for (l, s, _) in chart.open_lexemes() {
        for b in 0..=255u8 {
            if !first[b as usize] && dfa.next(l, s, b)? != formwork_index::ByteDfa::DEAD {
                first[b as usize] = true;
            }
        }
    }
    Ok(first)
}

/// Scratch of the walk below an accept point.
#[derive(Debug, Clone, Default)]
struct Walk {
    /// The bytes the lexemes after the accept point can start with, when computed
    /// ([`first_bytes`]): children of the accept point with another byte are dead.
    first: Option<[bool; 256]>,
    /// Lexemes ending at the node being looked at: (lexeme, origin set).
    ends: Vec<(u32, u32)>,
    /// The lexeme items alive at each depth of the current path, one frame per depth:
    /// frame `d` is `items[frames[d]..frames[d + 1]]` (the last runs to the end).
    items: Vec<(u32, StateId, u32)>,
    frames: Vec<usize>,
    /// The chart before the set pushed at each depth, if one was.
    marks: Vec<Option<crate::parser::Mark>>,
}

impl Walk {
    /// Marks the tokens below trie node `node` that the grammar allows, given that the
    /// chart's last set is the parser's state after the path to `node`. Bytes are read by the lexemes' DFAs;
    /// the parser is only asked where a lexeme ends (a set pushed on the chart, popped on
    /// the way back).
    fn subtree(
        &mut self,
        chart: &mut Chart,
        index: &GrammarIndex,
        trie: &formwork_index::Trie,
        node: usize,
        mask: &mut [u64],
    ) -> Result<(), GrammarError> {
        self.items.clear();
        self.frames.clear();
        self.marks.clear();
        let mut dfa = Steppers {
            index,
            held: Vec::new(),
        };
        // Frame 0: the lexemes the chart's last set (after the lexeme ending at `node`) opens.
        self.frames.push(0);
        self.items.extend(chart.open_lexemes());
        self.marks.push(None);
        let base_depth = trie.depth(node);
        let end = trie.end(node);
        let mut i = node + 1;
        while i < end {
            let d = trie.depth(i) - base_depth;
            if d == 1
                && let Some(first) = &self.first
                && !first[trie.label(i) as usize]
            {
                // No lexeme after the accept point starts with this byte.
                i = trie.end(i);
                continue;
            }
            // Back up to the parent's frame (depth d - 1).
            while self.frames.len() > d {
                self.pop(chart);
            }
            let parent = self.frames[d - 1];
            let parent_end = self.items.len();
            let byte = trie.label(i);
            self.frames.push(parent_end);
            self.marks.push(None);
            self.ends.clear();
            for k in parent..parent_end {
                let (l, s, origin) = self.items[k];
                let next = dfa.next(l, s, byte)?;
                if next == formwork_index::ByteDfa::DEAD {
                    continue;
                }
                if dfa.accepting(l, next)? {
                    self.ends.push((l, origin));
                    if !dfa.can_continue(l, next)? {
                        continue;
                    }
                }
                self.items.push((l, next, origin));
            }
            let mut viable = self.items.len() > parent_end;
            if !self.ends.is_empty() && trie.end(i) > i + 1 {
                // Some lexeme ends here and the path goes on: what follows comes from the
                // parser.
                let mark = chart.mark();
                chart.complete_all(&index.tables, index, &self.ends)?;
                viable |= chart.is_viable();
                self.items.extend(chart.open_lexemes());
                if let Some(m) = self.marks.last_mut() {
                    *m = Some(mark);
                }
            } else if !self.ends.is_empty() && !viable {
                // A token ending here is allowed if the parser can finish or go on.
                let mark = chart.mark();
                chart.complete_all(&index.tables, index, &self.ends)?;
                viable = chart.is_viable();
                chart.truncate(mark);
            }
            if viable {
                for &t in trie.tokens_at(i) {
                    mask[t as usize / 64] |= 1 << (t % 64);
                }
            }
            if self.items.len() > parent_end {
                i += 1;
            } else {
                self.pop(chart);
                i = trie.end(i);
            }
        }
        while !self.frames.is_empty() {
            self.pop(chart);
        }
        Ok(())
    }

    /// Drops the deepest frame and the set it pushed.
    fn pop(&mut self, chart: &mut Chart) {
        if let Some(start) = self.frames.pop() {
            self.items.truncate(start);
        }
        if let Some(Some(m)) = self.marks.pop() {
            chart.truncate(m);
        }
    }
}
