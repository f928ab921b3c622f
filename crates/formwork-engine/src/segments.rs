//! Constraints composed with free text: a [`Segments`] constraint followed token by token.
//!
//! A reply under [`Segments`] goes through phases:
//!
//! 1. **Prelude** (reasoning): the start tag if the reply must write it, then free text up to
//!    the end tag. No EOS. Past `max_tokens`, only tokens that spell the rest of the end tag.
//! 2. **Outside** the segments, as [`Outside`] says:
//!    - `Free`: free text. A trigger automaton (Aho–Corasick over the trigger strings) reads
//!      each token's bytes; a trigger may be split across tokens or end inside one, and the
//!      bytes of that token after it already belong to the segment. The mask here is the
//!      model's own: no mask at all, except where some token would complete a trigger and
//!      go on with bytes the segment refuses. Those tokens are found once per automaton
//!      state, by one scan of the vocabulary, and kept in the index.
//!    - `Either(C)`: at the start, the union of `C`'s mask and the tokens that spell a
//!      trigger's beginning; whichever the text leaves alive goes on.
//!    - `Nothing` (and after a segment in `Either`): whitespace, then a trigger or the end.
//! 3. **Segment**: the grammar of what follows its trigger (the rest of the begin string,
//!    the body, the end string; one alternative per segment sharing the trigger) masks every
//!    token until it is complete; then the reply is outside again.
//!
//! Tokens that would leave a tag or a segment in their middle (a token holding the last
//! bytes of `</think>` and more, or of a segment's end string and more) are not allowed:
//! the model writes the tag's end and then the next token. Only trigger-to-segment crossings,
//! the common case of a tokenizer merging `>{"`, are followed inside a token.

use std::sync::{Arc, OnceLock};

use formwork_grammar::{Expr, GrammarConfig, GrammarError, GrammarGuide, GrammarIndex, RuleSet};
use formwork_index::{IndexConfig, Vocabulary};
use serde_json::{Value, json};

use crate::constraint::{
    Lowered, check_schema, check_tool_call, grammar_error, lower, schema_compiler,
};
use crate::guide::{ConstraintGuide, ConstraintIndex, GuideError};
use crate::tools::tool_call_schema;
use crate::{Constraint, EngineError, Outside, Prelude, Segment, Segments};

/// No transition.
const NONE: u32 = u32::MAX;

/// A set of strings found in a byte stream: a trie of them (for text that must spell one,
/// anchored) and its Aho–Corasick automaton (for text in which they may occur anywhere).
#[derive(Debug)]
struct Strings {
    strings: Vec<Vec<u8>>,
    /// Trie edges: `goto[n][b]` or [`NONE`].
    goto: Vec<[u32; 256]>,
    /// The string that node `n` spells in full, if any.
    terminal: Vec<Option<u32>>,
    /// The automaton: `delta[s][b]`, the longest suffix of the text that is a trie node.
    delta: Vec<[u32; 256]>,
    /// The longest string that ends at automaton state `s`.
    fires: Vec<Option<u32>>,
}

impl Strings {
    fn new(strings: Vec<Vec<u8>>) -> Strings {
        let mut goto = vec![[NONE; 256]];
        let mut terminal = vec![None];
        for (i, s) in strings.iter().enumerate() {
            let mut node = 0usize;
            for &b in s {
                if goto[node][usize::from(b)] == NONE {
                    goto[node][usize::from(b)] = goto.len() as u32;
                    goto.push([NONE; 256]);
                    terminal.push(None);
                }
                node = goto[node][usize::from(b)] as usize;
            }
            terminal[node].get_or_insert(i as u32);
        }
        // Breadth first: failure links, then the full transition table.
        let n = goto.len();
        let mut fail = vec![0u32; n];
        let mut delta = vec![[0u32; 256]; n];
        let mut fires = terminal.clone();
        let mut queue = std::collections::VecDeque::new();
        for b in 0..256 {
            let child = goto[0][b];
            if child != NONE {
                delta[0][b] = child;
                queue.push_back(child as usize);
            }
        }
        while let Some(s) = queue.pop_front() {
            let f = fail[s] as usize;
            if fires[s].is_none() {
                fires[s] = fires[f];
            } else if let (Some(mine), Some(theirs)) = (fires[s], fires[f])
                && strings[theirs as usize].len() > strings[mine as usize].len()
            {
                fires[s] = Some(theirs);
            }
            for b in 0..256 {
                let child = goto[s][b];
                if child == NONE {
                    delta[s][b] = delta[f][b];
                } else {
                    fail[child as usize] = delta[f][b];
                    delta[s][b] = child;
                    queue.push_back(child as usize);
                }
            }
        }
        Strings {
            strings,
            goto,
            terminal,
            delta,
            fires,
        }
    }

    fn states(&self) -> usize {
        self.goto.len()
    }

    /// Reads `bytes` from automaton state `state`: the state after them, or the first string
    /// that ends among them, with the position just past it.
    fn scan(&self, mut state: u32, bytes: &[u8]) -> Scan {
        for (i, &b) in bytes.iter().enumerate() {
            state = self.delta[state as usize][usize::from(b)];
            if let Some(s) = self.fires[state as usize] {
                return Scan::Found {
                    string: s,
                    end: i + 1,
                };
            }
        }
        Scan::State(state)
    }

    /// Spells `bytes` from trie node `node`: the node reached, or the string completed first
    /// with the position just past it, or `None` when they leave every string.
    fn spell(&self, mut node: u32, bytes: &[u8]) -> Option<Scan> {
        for (i, &b) in bytes.iter().enumerate() {
            node = self.goto[node as usize][usize::from(b)];
            if node == NONE {
                return None;
            }
            if let Some(s) = self.terminal[node as usize] {
                return Some(Scan::Found {
                    string: s,
                    end: i + 1,
                });
            }
        }
        Some(Scan::State(node))
    }
}

/// What reading bytes through [`Strings`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// No string ended; the state (or trie node) reached.
    State(u32),
    /// `string` ended just before byte `end`.
    Found { string: u32, end: usize },
}

/// Where the reply may end while spelling: the tokens that spell on from a trie node (a
/// bitset over the vocabulary).
type Mask = Vec<u64>;

fn set_bit(mask: &mut [u64], t: u32) {
    if let Some(w) = mask.get_mut(t as usize / 64) {
        *w |= 1 << (t % 64);
    }
}

fn clear_bit(mask: &mut [u64], t: u32) {
    if let Some(w) = mask.get_mut(t as usize / 64) {
        *w &= !(1 << (t % 64));
    }
}

fn has_bit(mask: &[u64], t: u32) -> bool {
    mask.get(t as usize / 64)
        .is_some_and(|w| w & (1 << (t % 64)) != 0)
}

/// A compiled [`Segments`] constraint, shared by every request with it.
#[derive(Debug)]
pub(crate) struct SegmentsIndex {
    vocab: Vocabulary,
    prelude: Option<PreludeIndex>,
    triggers: Strings,
    /// The grammar of what follows each trigger.
    targets: Vec<Arc<GrammarIndex>>,
    outside: OutsideIndex,
    max_segments: Option<usize>,
    /// Per automaton state, in free text: the tokens not allowed there (`None`: every token is).
    free: Vec<OnceLock<Option<Mask>>>,
    /// Per trie node: the tokens that spell on toward a trigger.
    spelling: Vec<OnceLock<Mask>>,
    /// Tokens made of whitespace only.
    whitespace: OnceLock<Mask>,
}

#[derive(Debug)]
struct PreludeIndex {
    /// The start tag, spelled before the free text (empty: the reply starts inside).
    start: Strings,
    start_len: usize,
    /// Whether the reply may skip the prelude.
    optional: bool,
    /// The end tag.
    end: Strings,
    max_tokens: Option<usize>,
    /// Per state of the end tag's automaton: tokens allowed in the free text (EOS and
    /// tokens that go on past the end tag removed).
    free: Vec<OnceLock<Mask>>,
    /// Per node of the start tag's trie, then of the end tag's: tokens that spell on.
    start_spelling: Vec<OnceLock<Mask>>,
    end_spelling: Vec<OnceLock<Mask>>,
}

#[derive(Debug)]
enum OutsideIndex {
    Free,
    Either(ConstraintIndex),
    Nothing,
}

/// Lowers and indexes `segments` over `vocab`.
pub(crate) fn compile(
    segments: &Segments,
    vocab: &Vocabulary,
    config: IndexConfig,
    grammar: &GrammarConfig,
    warnings: &mut Vec<String>,
) -> Result<SegmentsIndex, EngineError> {
    let invalid = |m: String| Err(EngineError::Constraint(m));
    let mut triggers: Vec<String> = if segments.triggers.is_empty() {
        segments.segments.iter().map(|s| s.begin.clone()).collect()
    } else {
        segments.triggers.clone()
    };
    triggers.sort();
    triggers.dedup();
    // Without segments, only a prelude before free text or before another constraint
    // means anything.
    let pointless = match segments.outside {
        Outside::Either(_) => false,
        Outside::Free => segments.prelude.is_none(),
        Outside::Nothing => true,
    };
    if segments.segments.is_empty() && pointless {
        return invalid("a segmented constraint needs at least one segment".into());
    }
    if triggers.iter().any(String::is_empty) {
        return invalid("a segment's trigger (or begin string) must not be empty".into());
    }
    let mut targets = Vec::with_capacity(triggers.len());
    for trigger in &triggers {
        let opened: Vec<&crate::Segment> = segments
            .segments
            .iter()
            .filter(|s| s.begin.starts_with(trigger.as_str()))
            .collect();
        if opened.is_empty() {
            return invalid(format!(
                "the trigger {trigger:?} begins no segment: each trigger must be a prefix of a segment's begin string"
            ));
        }
        let g = target_grammar(trigger, &opened, grammar, warnings)?;
        let index = GrammarIndex::with_config(g, vocab, config)
            .map_err(|e| EngineError::Constraint(e.to_string()))?;
        targets.push(Arc::new(index));
    }
    let outside = match &segments.outside {
        Outside::Free => OutsideIndex::Free,
        Outside::Nothing => OutsideIndex::Nothing,
        Outside::Either(c) => OutsideIndex::Either(match lower(c, grammar, warnings)? {
            Lowered::Regex(regex) => ConstraintIndex::Regular(Arc::new(
                formwork_index::Index::with_config(&regex, vocab, config)?,
            )),
            Lowered::Grammar(g) => ConstraintIndex::Grammar(Arc::new(
                GrammarIndex::with_config(g, vocab, config)
                    .map_err(|e| EngineError::Constraint(e.to_string()))?,
            )),
            Lowered::Segments(_) => {
                return invalid("segments cannot nest in segments".into());
            }
        }),
    };
    let prelude = match &segments.prelude {
        None => None,
        Some(p) => {
            if p.end.is_empty() {
                return invalid("a prelude's end tag must not be empty".into());
            }
            let start = Strings::new(vec![p.start.as_bytes().to_vec()]);
            let end = Strings::new(vec![p.end.as_bytes().to_vec()]);
            Some(PreludeIndex {
                start_len: p.start.len(),
                optional: p.optional,
                free: (0..end.states()).map(|_| OnceLock::new()).collect(),
                start_spelling: (0..start.states()).map(|_| OnceLock::new()).collect(),
                end_spelling: (0..end.states()).map(|_| OnceLock::new()).collect(),
                start,
                end,
                max_tokens: p.max_tokens,
            })
        }
    };
    let triggers = Strings::new(triggers.into_iter().map(String::into_bytes).collect());
    Ok(SegmentsIndex {
        vocab: vocab.clone(),
        prelude,
        free: (0..triggers.states()).map(|_| OnceLock::new()).collect(),
        spelling: (0..triggers.states()).map(|_| OnceLock::new()).collect(),
        triggers,
        targets,
        outside,
        max_segments: segments.max_segments,
        whitespace: OnceLock::new(),
    })
}

/// The grammar of what follows `trigger`: for each segment it opens, the rest of its begin
/// string, its body and its end string.
fn target_grammar(
    trigger: &str,
    opened: &[&crate::Segment],
    config: &GrammarConfig,
    warnings: &mut Vec<String>,
) -> Result<formwork_grammar::Grammar, EngineError> {
    let (mut set, outer) = match opened {
        [one] => match &one.body {
            Constraint::Grammar { syntax, text } => {
                let (set, start) = match syntax {
                    crate::GrammarSyntax::Gbnf => formwork_grammar::gbnf(text),
                    crate::GrammarSyntax::Lark => formwork_grammar::lark(text),
                }
                .map_err(grammar_error)?;
                (set, Some(start))
            }
            _ => (RuleSet::new(), None),
        },
        _ => (RuleSet::new(), None),
    };
    let mut alternatives = Vec::with_capacity(opened.len());
    for segment in opened {
        let body = match (&segment.body, outer) {
            (Constraint::Grammar { .. }, Some(start)) => Expr::Rule(start),
            (Constraint::Grammar { .. }, None) => {
                return Err(EngineError::Constraint(format!(
                    "a grammar body needs a trigger of its own; {trigger:?} opens {} segments",
                    opened.len()
                )));
            }
            (body, _) => body_expr(&mut set, body, config, warnings)?,
        };
        let rest = segment.begin.get(trigger.len()..).unwrap_or_default();
        alternatives.push(Expr::Concat(vec![
            Expr::literal(rest),
            body,
            Expr::literal(&segment.end),
        ]));
    }
    let start = set.fresh("segment");
    set.define(start, Expr::Alt(alternatives))
        .map_err(grammar_error)?;
    set.compile(start, config).map_err(grammar_error)
}

/// A segment's body as an expression of `set`; a schema's keywords it cannot enforce are
/// refused or reported as its strictness says ([`check_schema`]).
fn body_expr(
    set: &mut RuleSet,
    body: &Constraint,
    config: &GrammarConfig,
    warnings: &mut Vec<String>,
) -> Result<Expr, EngineError> {
    let rules = |set: &mut RuleSet, schema: &Value, compiler: &formwork_schema::Compiler| {
        formwork_grammar::json_rules(set, schema, compiler, config).map_err(grammar_error)
    };
    match body {
        Constraint::JsonSchema(s) => {
            let (rule, unenforced) = rules(set, &s.schema, &schema_compiler(s)?)?;
            check_schema(s, unenforced, warnings)?;
            Ok(Expr::Rule(rule))
        }
        Constraint::JsonObject => {
            let object = json!({"type": "object"});
            Ok(Expr::Rule(
                rules(set, &object, &formwork_schema::Compiler::new())?.0,
            ))
        }
        Constraint::ToolCall {
            functions,
            parallel,
        } => {
            let schema = tool_call_schema(functions, *parallel)?;
            let (rule, unenforced) = rules(set, &schema, &formwork_schema::Compiler::new())?;
            check_tool_call(functions, *parallel, unenforced, warnings)?;
            Ok(Expr::Rule(rule))
        }
        Constraint::Regex(r) => Expr::regex(r, "segment").map_err(grammar_error),
        Constraint::Choice(choices) => {
            if choices.is_empty() {
                return Err(EngineError::Constraint("the choice list is empty".into()));
            }
            Ok(Expr::Alt(
                choices.iter().map(|c| Expr::literal(c)).collect(),
            ))
        }
        Constraint::Grammar { .. } | Constraint::Segments(_) => Err(EngineError::Constraint(
            "a segment's body cannot be segments".into(),
        )),
    }
}

/// Composes what a request asks of its reply into one constraint: its own `constraint` (a
/// `response_format`, say), the segment of a tool call the model may open in its own format
/// (`calls`: tools in `auto` mode; `parallel`: several calls), and a reasoning `prelude`.
///
/// - Nothing but the constraint: the constraint, unchanged.
/// - A prelude alone: free text after it, so its end tag can be forced past its budget; with
///   no budget there is nothing to enforce, and no constraint (free text costs nothing).
/// - With calls: free text in which the call's opener opens a call, or, with a constraint,
///   either calls or a document the constraint allows, never neither; segments (structural
///   tags) get the call as one more segment.
/// - With a prelude: the rest only applies after it.
pub(crate) fn compose(
    constraint: Option<Constraint>,
    calls: Option<(Segment, bool)>,
    prelude: Option<Prelude>,
) -> Option<Constraint> {
    let (call, parallel) = match calls {
        Some((call, parallel)) => (Some(call), parallel),
        None => (None, true),
    };
    let mut segments = match (constraint, &call, &prelude) {
        (c, None, None) => return c,
        (None, None, Some(p)) if p.max_tokens.is_none() => return None,
        (Some(Constraint::Segments(s)), _, _) => s,
        (c, _, _) => Segments {
            prelude: None,
            segments: Vec::new(),
            triggers: Vec::new(),
            outside: c.map_or(Outside::Free, |c| Outside::Either(Box::new(c))),
            max_segments: None,
        },
    };
    if let Some(call) = call {
        if !segments.triggers.is_empty() {
            segments.triggers.push(call.begin.clone());
        }
        segments.segments.push(call);
        if !parallel {
            segments.max_segments = Some(1);
        }
    }
    if prelude.is_some() {
        segments.prelude = prelude;
    }
    Some(Constraint::Segments(segments))
}

impl SegmentsIndex {
    /// Bytes it holds (its grammars and the masks found so far).
    pub(crate) fn memory_usage(&self) -> usize {
        let words = self.vocab.mask_words() * 8;
        let masks = |v: &[OnceLock<Mask>]| v.iter().filter(|m| m.get().is_some()).count();
        let free = self
            .free
            .iter()
            .filter(|m| matches!(m.get(), Some(Some(_))))
            .count();
        let prelude = self.prelude.as_ref().map_or(0, |p| {
            masks(&p.free) + masks(&p.start_spelling) + masks(&p.end_spelling)
        });
        let tables = self.triggers.states() * 256 * 8;
        let targets: usize = self.targets.iter().map(|t| t.memory_usage()).sum();
        let outside = match &self.outside {
            OutsideIndex::Either(c) => c.memory_usage(),
            _ => 0,
        };
        (free + masks(&self.spelling) + prelude + 1) * words + tables + targets + outside
    }

    /// A cursor at the reply's start.
    pub(crate) fn guide(self: &Arc<Self>) -> Result<SegmentsGuide, GuideError> {
        let phase = match &self.prelude {
            Some(p) if p.start_len > 0 && p.optional => Phase::MaybePrelude {
                node: Some(0),
                rest: Some(Box::new(self.guide_at(self.outside_start()?))),
            },
            Some(p) if p.start_len > 0 => Phase::PreludeStart { node: 0 },
            Some(_) => Phase::Prelude {
                state: 0,
                tokens: 0,
            },
            None => self.outside_start()?,
        };
        Ok(self.guide_at(phase))
    }

    fn guide_at(self: &Arc<Self>, phase: Phase) -> SegmentsGuide {
        SegmentsGuide {
            index: self.clone(),
            phase,
            segments: 0,
            mask: vec![0; self.vocab.mask_words()],
            mask_ready: false,
            special_text: false,
        }
    }

    /// Where the reply stands after the prelude (or at its start without one).
    fn outside_start(&self) -> Result<Phase, GuideError> {
        Ok(match &self.outside {
            OutsideIndex::Free => self.free_phase(0),
            OutsideIndex::Either(c) => Phase::Either {
                guide: Some(Box::new(c.start()?)),
                node: Some(0),
            },
            OutsideIndex::Nothing => Phase::Between { node: 0 },
        })
    }

    fn may_open(&self, segments: usize) -> bool {
        self.max_segments.is_none_or(|m| segments < m)
    }

    fn free_phase(&self, state: u32) -> Phase {
        Phase::Free { state }
    }

    fn full_mask(&self) -> Mask {
        let mut mask = vec![0u64; self.vocab.mask_words()];
        for t in 0..self.vocab.len() as u32 {
            set_bit(&mut mask, t);
        }
        mask
    }

    /// The bytes `token` adds to the text the matchers read: none for EOS; a special token's
    /// content counts only where it spells a whole tag or trigger.
    fn bytes(&self, token: u32) -> &[u8] {
        self.vocab.token(token).unwrap_or_default()
    }

    /// In free text at automaton state `state`: the tokens not allowed (they complete a
    /// trigger and go on with bytes its segment refuses), as the mask of the others.
    fn free_mask(&self, state: u32) -> Result<Option<&Mask>, GuideError> {
        let slot = &self.free[state as usize];
        if let Some(m) = slot.get() {
            return Ok(m.as_ref());
        }
        let mut blocked = Vec::new();
        let mut probes: Vec<Option<GrammarGuide>> = vec![None; self.targets.len()];
        for t in 0..self.vocab.len() as u32 {
            if self.vocab.is_special(t) {
                continue;
            }
            let bytes = self.bytes(t);
            if let Scan::Found { string, end } = self.triggers.scan(state, bytes) {
                let rest = &bytes[end..];
                if rest.is_empty() {
                    continue;
                }
                let target = string as usize;
                let probe = match &mut probes[target] {
                    Some(p) => p,
                    slot => slot.insert(GrammarGuide::new(self.targets[target].clone())?),
                };
                if probe.advance_bytes(rest)? {
                    probe.rollback(1)?;
                } else {
                    blocked.push(t);
                }
            }
        }
        let mask = (!blocked.is_empty()).then(|| {
            let mut mask = self.full_mask();
            for t in blocked {
                clear_bit(&mut mask, t);
            }
            mask
        });
        Ok(slot.get_or_init(|| mask).as_ref())
    }

    /// Tokens that spell on from trie node `node` of `strings` without passing a string's
    /// end: prefixes of what is left, or exactly the rest of a string.
    fn spelling_mask<'a>(
        &self,
        strings: &Strings,
        slot: &'a OnceLock<Mask>,
        node: u32,
    ) -> &'a Mask {
        slot.get_or_init(|| {
            let mut mask = vec![0u64; self.vocab.mask_words()];
            for t in 0..self.vocab.len() as u32 {
                if self.vocab.is_eos(t) {
                    continue;
                }
                let bytes = self.bytes(t);
                if bytes.is_empty() {
                    continue;
                }
                let ok = match strings.spell(node, bytes) {
                    Some(Scan::Found { end, .. }) => end == bytes.len(),
                    // A special token spells a whole string or nothing.
                    Some(Scan::State(_)) => !self.vocab.is_special(t),
                    None => false,
                };
                if ok {
                    set_bit(&mut mask, t);
                }
            }
            mask
        })
    }

    fn whitespace_mask(&self) -> &Mask {
        self.whitespace.get_or_init(|| {
            let mut mask = vec![0u64; self.vocab.mask_words()];
            for t in 0..self.vocab.len() as u32 {
                let bytes = self.bytes(t);
                if !self.vocab.is_special(t)
                    && !bytes.is_empty()
                    && bytes
                        .iter()
                        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                {
                    set_bit(&mut mask, t);
                }
            }
            mask
        })
    }
}

/// Where one reply stands in a [`SegmentsIndex`].
#[derive(Debug, Clone)]
enum Phase {
    /// Spelling the prelude's start tag, at this trie node.
    PreludeStart { node: u32 },
    /// At the start of a reply that may skip its prelude: spelling the start tag (while the
    /// text does), and the reply without a prelude (while the text allows it).
    MaybePrelude {
        node: Option<u32>,
        rest: Option<Box<SegmentsGuide>>,
    },
    /// In the prelude's free text: the end tag's automaton state, tokens spent.
    Prelude { state: u32, tokens: usize },
    /// Free text: the trigger automaton's state.
    Free { state: u32 },
    /// At the start of an [`Outside::Either`]: the constraint's guide while it is alive, the
    /// trigger trie's node while the text spells toward a trigger.
    Either {
        guide: Option<Box<ConstraintGuide>>,
        node: Option<u32>,
    },
    /// Between segments: whitespace, then a trigger (this trie node) or the end.
    Between { node: u32 },
    /// Inside the segment opened by a trigger.
    Segment { guide: GrammarGuide },
}

/// One reply's cursor over a [`SegmentsIndex`].
#[derive(Debug, Clone)]
pub(crate) struct SegmentsGuide {
    index: Arc<SegmentsIndex>,
    phase: Phase,
    /// Segments opened so far.
    segments: usize,
    /// The union mask of the phases that combine several (computed once per step: the
    /// scheduler asks for it, then `advance` checks the token against it).
    mask: Mask,
    /// Whether `mask` holds this step's union.
    mask_ready: bool,
    /// Whether the last token was a special token whose content belongs to the text (it
    /// spelled a tag or a trigger).
    special_text: bool,
}

impl SegmentsGuide {
    /// The tokens allowed now; `None` when every token is (free text: no mask at all).
    pub(crate) fn mask(&mut self) -> Result<Option<&[u64]>, GuideError> {
        if self.mask_ready {
            return Ok(Some(&self.mask));
        }
        let index = &*self.index;
        match &mut self.phase {
            Phase::PreludeStart { node } => {
                let p = index.prelude.as_ref().ok_or(GuideError::DeadEnd)?;
                let slot = &p.start_spelling[*node as usize];
                Ok(Some(index.spelling_mask(&p.start, slot, *node)))
            }
            Phase::MaybePrelude { node, rest } => {
                let p = index.prelude.as_ref().ok_or(GuideError::DeadEnd)?;
                self.mask.fill(0);
                if let Some(rest) = rest {
                    match rest.mask()? {
                        Some(m) => self.mask.copy_from_slice(m),
                        None => return Ok(None),
                    }
                }
                if let Some(n) = node {
                    let slot = &p.start_spelling[*n as usize];
                    let spelled = index.spelling_mask(&p.start, slot, *n);
                    self.mask.iter_mut().zip(spelled).for_each(|(a, b)| *a |= b);
                }
                self.mask_ready = true;
                Ok(Some(&self.mask))
            }
            Phase::Prelude { state, tokens } => {
                let p = index.prelude.as_ref().ok_or(GuideError::DeadEnd)?;
                if p.max_tokens.is_some_and(|m| *tokens >= m) {
                    let slot = &p.end_spelling[*state as usize];
                    return Ok(Some(index.spelling_mask(&p.end, slot, *state)));
                }
                let state = *state;
                Ok(Some(
                    p.free[state as usize].get_or_init(|| prelude_free_mask(index, p, state)),
                ))
            }
            Phase::Free { state } => {
                if !index.may_open(self.segments) {
                    return Ok(None);
                }
                Ok(index.free_mask(*state)?.map(Vec::as_slice))
            }
            Phase::Either { guide, node } => {
                self.mask.fill(0);
                if let Some(g) = guide {
                    match g.mask()? {
                        Some(m) => self.mask.iter_mut().zip(m).for_each(|(a, b)| *a |= b),
                        None => return Ok(None),
                    }
                }
                if let Some(n) = node {
                    let spelled =
                        index.spelling_mask(&index.triggers, &index.spelling[*n as usize], *n);
                    self.mask.iter_mut().zip(spelled).for_each(|(a, b)| *a |= b);
                }
                self.mask_ready = true;
                Ok(Some(&self.mask))
            }
            Phase::Between { node } => {
                self.mask.fill(0);
                if index.may_open(self.segments) {
                    let spelled = index.spelling_mask(
                        &index.triggers,
                        &index.spelling[*node as usize],
                        *node,
                    );
                    self.mask.copy_from_slice(spelled);
                }
                if *node == 0 {
                    self.mask
                        .iter_mut()
                        .zip(index.whitespace_mask())
                        .for_each(|(a, b)| *a |= b);
                    // Segments only: at least one.
                    if self.segments > 0 {
                        for &e in index.vocab.eos() {
                            set_bit(&mut self.mask, e);
                        }
                    }
                }
                self.mask_ready = true;
                Ok(Some(&self.mask))
            }
            Phase::Segment { guide } => Ok(Some(guide.mask()?)),
        }
    }

    /// Consumes `token`; a token not allowed here is an error.
    pub(crate) fn advance(&mut self, token: u32) -> Result<(), GuideError> {
        let index = self.index.clone();
        let refuse = || GuideError::Grammar(GrammarError::TokenNotAllowed(token));
        let special = index.vocab.is_special(token);
        let bytes = index.bytes(token);
        self.special_text = false;
        let allowed = match self.mask()? {
            Some(mask) => has_bit(mask, token),
            None => true,
        };
        if !allowed {
            return Err(refuse());
        }
        self.mask_ready = false;
        if index.vocab.is_eos(token) {
            // The reply ends here; nothing follows.
            return Ok(());
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Between { node: 0 });
        self.phase = match phase {
            Phase::PreludeStart { node } => {
                let p = index.prelude.as_ref().ok_or_else(refuse)?;
                self.special_text = special;
                match p.start.spell(node, bytes) {
                    Some(Scan::State(n)) => Phase::PreludeStart { node: n },
                    Some(Scan::Found { .. }) => Phase::Prelude {
                        state: 0,
                        tokens: 0,
                    },
                    None => return Err(refuse()),
                }
            }
            Phase::MaybePrelude { node, rest } => {
                let p = index.prelude.as_ref().ok_or_else(refuse)?;
                let rest = match rest {
                    Some(mut r) => {
                        let alive = match r.mask()? {
                            Some(m) => has_bit(m, token),
                            None => true,
                        };
                        if alive {
                            r.advance(token)?;
                            Some(r)
                        } else {
                            None
                        }
                    }
                    None => None,
                };
                match (node.and_then(|n| p.start.spell(n, bytes)), rest) {
                    (Some(Scan::Found { end, .. }), _) if end == bytes.len() => {
                        self.special_text = special;
                        Phase::Prelude {
                            state: 0,
                            tokens: 0,
                        }
                    }
                    (Some(Scan::State(n)), rest) if !special => Phase::MaybePrelude {
                        node: Some(n),
                        rest,
                    },
                    // The start tag is out of reach: the reply goes on without a prelude.
                    (_, Some(rest)) => {
                        *self = *rest;
                        return Ok(());
                    }
                    _ => return Err(refuse()),
                }
            }
            Phase::Prelude { state, tokens } => {
                let p = index.prelude.as_ref().ok_or_else(refuse)?;
                if special {
                    if bytes == p.end.strings[0].as_slice() {
                        self.special_text = true;
                        index.outside_start()?
                    } else {
                        Phase::Prelude {
                            state,
                            tokens: tokens + 1,
                        }
                    }
                } else {
                    match p.end.scan(state, bytes) {
                        Scan::State(s) => Phase::Prelude {
                            state: s,
                            tokens: tokens + 1,
                        },
                        Scan::Found { .. } => index.outside_start()?,
                    }
                }
            }
            Phase::Free { state } => {
                if !index.may_open(self.segments) {
                    Phase::Free { state }
                } else if special {
                    match index.triggers.spell(0, bytes) {
                        Some(Scan::Found { string, end }) if end == bytes.len() => {
                            self.special_text = true;
                            self.open(string, &[])?
                        }
                        _ => Phase::Free { state: 0 },
                    }
                } else {
                    match index.triggers.scan(state, bytes) {
                        Scan::State(s) => Phase::Free { state: s },
                        Scan::Found { string, end } => self.open(string, &bytes[end..])?,
                    }
                }
            }
            Phase::Either { guide, node } => {
                let guide = match guide {
                    Some(mut g) => {
                        let alive = match g.mask()? {
                            Some(m) => has_bit(m, token),
                            None => true,
                        };
                        if alive {
                            g.advance(token)?;
                            Some(g)
                        } else {
                            None
                        }
                    }
                    None => None,
                };
                match node.and_then(|n| index.triggers.spell(n, bytes)) {
                    Some(Scan::Found { string, end }) if end == bytes.len() => {
                        self.special_text = special;
                        self.open(string, &[])?
                    }
                    Some(Scan::State(n)) if !special => Phase::Either {
                        guide,
                        node: Some(n),
                    },
                    _ if guide.is_some() => Phase::Either { guide, node: None },
                    _ => return Err(refuse()),
                }
            }
            Phase::Between { node } => {
                let is_space = node == 0 && has_bit(index.whitespace_mask(), token);
                match index.triggers.spell(node, bytes) {
                    Some(Scan::Found { string, end }) if end == bytes.len() => {
                        self.special_text = special;
                        self.open(string, &[])?
                    }
                    Some(Scan::State(n)) if !special && !is_space => Phase::Between { node: n },
                    _ if is_space => Phase::Between { node: 0 },
                    _ => return Err(refuse()),
                }
            }
            Phase::Segment { mut guide } => {
                guide.advance(token)?;
                if guide.is_finished() {
                    self.after_segment()
                } else {
                    Phase::Segment { guide }
                }
            }
        };
        Ok(())
    }

    /// Opens the segment of trigger `string`, its first bytes `rest` (from the token that
    /// completed the trigger).
    fn open(&mut self, string: u32, rest: &[u8]) -> Result<Phase, GuideError> {
        let target = self
            .index
            .targets
            .get(string as usize)
            .ok_or(GuideError::DeadEnd)?;
        let mut guide = GrammarGuide::new(target.clone())?;
        if !guide.advance_bytes(rest)? {
            return Err(GuideError::DeadEnd);
        }
        self.segments += 1;
        Ok(if guide.is_finished() {
            self.after_segment()
        } else {
            Phase::Segment { guide }
        })
    }

    /// Where the reply stands once a segment is complete.
    fn after_segment(&self) -> Phase {
        match self.index.outside {
            OutsideIndex::Free => Phase::Free { state: 0 },
            OutsideIndex::Either(_) | OutsideIndex::Nothing => Phase::Between { node: 0 },
        }
    }

    /// Appends to `out` the text forced next (at most `max` bytes): inside a segment, what
    /// its grammar forces (the rest of a key, a structural tag's end string); in an
    /// [`Outside::Either`] reply that left the triggers behind, what the other constraint
    /// forces; nothing in free text, in a prelude or between segments, where the model
    /// chooses.
    pub(crate) fn forced_bytes(&mut self, max: usize, out: &mut Vec<u8>) {
        let failed = match &mut self.phase {
            Phase::Segment { guide } => guide.forced_bytes(max, out).is_err(),
            Phase::Either {
                guide: Some(guide),
                node: None,
            } => {
                guide.forced_bytes(max, out);
                false
            }
            _ => false,
        };
        // A grammar too ambiguous to follow forces nothing: its next mask says so.
        if failed {
            out.clear();
        }
    }

    /// Whether the reply is complete and nothing can follow.
    pub(crate) fn is_finished(&self) -> bool {
        match &self.phase {
            Phase::Either { guide, node } => {
                node.is_none() && guide.as_ref().is_some_and(|g| g.is_finished())
            }
            _ => false,
        }
    }

    /// Whether the last token was a special token whose content is part of the reply's text
    /// (a tag or a trigger the model spelled with one token).
    pub(crate) fn special_text(&self) -> bool {
        self.special_text
    }
}

/// The prelude's free text at end-tag state `state`: every token but EOS and those that run
/// on past the end tag.
fn prelude_free_mask(index: &SegmentsIndex, p: &PreludeIndex, state: u32) -> Mask {
    let mut mask = index.full_mask();
    for &e in index.vocab.eos() {
        clear_bit(&mut mask, e);
    }
    for t in 0..index.vocab.len() as u32 {
        if index.vocab.is_special(t) {
            continue;
        }
        let bytes = index.bytes(t);
        if let Scan::Found { end, .. } = p.end.scan(state, bytes)
            && end < bytes.len()
        {
            clear_bit(&mut mask, t);
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_find_split_and_overlapping_triggers() {
        let s = Strings::new(vec![b"<a>".to_vec(), b"a>b".to_vec()]);
        // Split across reads.
        let Scan::State(st) = s.scan(0, b"xx<") else {
            panic!("no trigger in `xx<`")
        };
        assert_eq!(s.scan(st, b"a>yy"), Scan::Found { string: 0, end: 2 });
        // Anchored spelling stops at a string's end.
        assert_eq!(s.spell(0, b"<a>z"), Some(Scan::Found { string: 0, end: 3 }));
        assert_eq!(s.spell(0, b"z"), None);
        assert_eq!(s.scan(0, b"a>b"), Scan::Found { string: 1, end: 3 });
    }

    /// Single bytes, a few merged tokens, a special `<T>` and EOS.
    const MERGED: [&str; 8] = ["<a", "a>", "<a>", ">y", "x<a>y", "<a>z", "</a>", "</th>\n"];

    fn vocab() -> (Vocabulary, impl Fn(&str) -> u32) {
        vocab_without("")
    }

    /// [`vocab`] with merged token `left_out` spelling nothing (not in the trie).
    fn vocab_without(left_out: &str) -> (Vocabulary, impl Fn(&str) -> u32) {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        tokens.extend(MERGED.iter().map(|t| {
            if *t == left_out {
                vec![]
            } else {
                t.as_bytes().to_vec()
            }
        }));
        tokens.push(b"<T>".to_vec());
        tokens.push(b"<eos>".to_vec());
        let n = tokens.len() as u32;
        let v = Vocabulary::new(tokens.clone(), vec![n - 1], [n - 2, n - 1]).unwrap();
        let id = move |t: &str| match t {
            "<eos>" => n - 1,
            "<T>" => n - 2,
            t if t.len() == 1 => u32::from(t.as_bytes()[0]),
            t => 256 + MERGED.iter().position(|m| *m == t).unwrap() as u32,
        };
        (v, id)
    }

    fn guide(segments: Segments) -> (SegmentsGuide, impl Fn(&str) -> u32) {
        guide_without(segments, "")
    }

    fn guide_without(segments: Segments, left_out: &str) -> (SegmentsGuide, impl Fn(&str) -> u32) {
        let (v, id) = vocab_without(left_out);
        let index = compile(
            &segments,
            &v,
            IndexConfig::default(),
            &GrammarConfig::default(),
            &mut Vec::new(),
        )
        .unwrap();
        (Arc::new(index).guide().unwrap(), id)
    }

    fn answer(outside: Outside) -> Segments {
        Segments {
            prelude: None,
            segments: vec![Segment {
                begin: "<a>".into(),
                body: Constraint::Choice(vec!["yes".into(), "yz".into()]),
                end: "</a>".into(),
            }],
            triggers: vec![],
            outside,
            max_segments: None,
        }
    }

    fn allowed(g: &mut SegmentsGuide, token: u32) -> bool {
        g.mask().unwrap().is_none_or(|m| has_bit(m, token))
    }

    fn feed(g: &mut SegmentsGuide, id: &impl Fn(&str) -> u32, tokens: &[&str]) {
        for t in tokens {
            g.advance(id(t)).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        }
    }

    #[test]
    fn free_text_has_no_mask_and_a_split_trigger_opens_the_segment() {
        // Without `<a>z`, no token completes the trigger with bytes the segment refuses.
        let (mut g, id) = guide_without(answer(Outside::Free), "<a>z");
        // Free text: no mask at all, EOS included.
        assert!(g.mask().unwrap().is_none());
        feed(&mut g, &id, &["h", "i", "<a"]);
        // Half a trigger: `>y` completes it and goes on into the body (`y` starts `yes`).
        assert!(allowed(&mut g, id(">y")));
        feed(&mut g, &id, &[">y"]);
        // In the segment: only the body, no EOS until the end string.
        assert!(allowed(&mut g, id("e")) && allowed(&mut g, id("z")));
        assert!(!allowed(&mut g, id("<eos>")) && !allowed(&mut g, id("q")));
        feed(&mut g, &id, &["e", "s"]);
        assert!(!allowed(&mut g, id("<eos>")));
        feed(&mut g, &id, &["</a>"]);
        // Free again, and the reply may end.
        assert!(g.mask().unwrap().is_none());
        assert!(!g.is_finished());
    }

    #[test]
    fn a_trigger_inside_a_token_hands_the_rest_to_the_segment() {
        let (mut g, id) = guide(answer(Outside::Free));
        // `x<a>y`: text, the trigger, and `y`, which the body allows; `<a>z` is refused since
        // no answer starts with `z`, though `z` alone would be free text.
        let mask = g
            .mask()
            .unwrap()
            .expect("a token is refused, so there is a mask");
        assert!(has_bit(mask, id("x<a>y")));
        assert!(!has_bit(mask, id("<a>z")));
        assert!(has_bit(mask, id("<a>")) && has_bit(mask, id("z")) && has_bit(mask, id("<eos>")));
        feed(&mut g, &id, &["x<a>y"]);
        assert!(allowed(&mut g, id("z")) && !allowed(&mut g, id("x")));
        feed(&mut g, &id, &["z", "</a>"]);
        assert!(!allowed(&mut g, id("<a>z")) && allowed(&mut g, id("q")));
        assert!(g.advance(id("<a>z")).is_err());
    }

    #[test]
    fn max_segments_turns_triggers_off() {
        let mut segments = answer(Outside::Free);
        segments.max_segments = Some(1);
        let (mut g, id) = guide(segments);
        feed(&mut g, &id, &["<a>", "y", "z", "</a>"]);
        // Past the limit a trigger is plain text.
        assert!(g.mask().unwrap().is_none());
        feed(&mut g, &id, &["<a>z", "q"]);
    }

    #[test]
    fn either_a_segment_or_the_other_constraint() {
        let (mut g, id) = guide(answer(Outside::Either(Box::new(Constraint::Regex(
            "[0-9]+".into(),
        )))));
        let mask = g.mask().unwrap().unwrap().to_vec();
        assert!(has_bit(&mask, id("<a")) && has_bit(&mask, id("<a>")) && has_bit(&mask, id("7")));
        assert!(!has_bit(&mask, id("x")) && !has_bit(&mask, id("<eos>")));
        feed(&mut g, &id, &["4", "2"]);
        // The number may end the reply; a trigger can no longer start.
        assert!(allowed(&mut g, id("<eos>")) && !allowed(&mut g, id("<")));

        let (mut g, id) = guide(answer(Outside::Either(Box::new(Constraint::Regex(
            "[0-9]+".into(),
        )))));
        feed(&mut g, &id, &["<", "a>", "y", "e", "s", "</a>"]);
        // After a segment: whitespace, another segment, or the end; not the number.
        assert_eq!(g.segments, 1);
        assert!(allowed(&mut g, id("\n")) && allowed(&mut g, id("<eos>")));
        assert!(allowed(&mut g, id("<a>")) && !allowed(&mut g, id("4")));
        feed(&mut g, &id, &["\n", "<a>", "y", "z", "</a>"]);
        assert!(allowed(&mut g, id("<eos>")));
    }

    #[test]
    fn a_prelude_is_free_without_eos_and_its_end_is_forced_after_its_budget() {
        let mut segments = answer(Outside::Either(Box::new(Constraint::Choice(vec![
            "ok".into(),
        ]))));
        segments.prelude = Some(Prelude {
            start: String::new(),
            optional: false,
            end: "</th>".into(),
            max_tokens: Some(3),
        });
        let (mut g, id) = guide(segments.clone());
        let mask = g.mask().unwrap().unwrap().to_vec();
        assert!(!has_bit(&mask, id("<eos>")) && has_bit(&mask, id("x")));
        // A token running on past the end tag is not allowed.
        feed(&mut g, &id, &["<", "/", "t"]);
        assert!(!allowed(&mut g, id("</th>\n")));
        // The budget is spent: only the rest of the end tag.
        assert!(allowed(&mut g, id("h")) && !allowed(&mut g, id("x")));
        feed(&mut g, &id, &["h", ">"]);
        assert!(allowed(&mut g, id("o")) && allowed(&mut g, id("<a>")));
        feed(&mut g, &id, &["o", "k"]);
        assert!(g.is_finished());

        // A start tag the reply must write first; a special token can spell it whole.
        segments.prelude = Some(Prelude {
            start: "<T>".into(),
            optional: false,
            end: "</th>".into(),
            max_tokens: None,
        });
        let (mut g, id) = guide(segments);
        assert!(allowed(&mut g, id("<T>")) && allowed(&mut g, id("<")));
        assert!(!allowed(&mut g, id("x")));
        feed(&mut g, &id, &["<T>"]);
        assert!(g.special_text());
        feed(&mut g, &id, &["x", "</a>", "<", "/", "t", "h", ">", "<a>"]);
        assert!(!g.special_text());
    }

    #[test]
    fn an_optional_prelude_is_either_written_first_or_skipped() {
        let mut segments = answer(Outside::Either(Box::new(Constraint::Choice(vec![
            "<b>ok".into(),
            "no".into(),
        ]))));
        segments.prelude = Some(Prelude {
            start: "<th>".into(),
            optional: true,
            end: "</th>".into(),
            max_tokens: None,
        });
        let (mut g, id) = guide(segments.clone());
        // The start tag, the answer, or a segment's trigger.
        for t in ["<", "n", "<a>"] {
            assert!(allowed(&mut g, id(t)), "{t}");
        }
        assert!(!allowed(&mut g, id("x")));
        // `<` is all three; `t` only the start tag: the prelude, then free text to its end.
        feed(
            &mut g,
            &id,
            &["<", "t", "h", ">", "x", "<", "/", "t", "h", ">"],
        );
        assert!(allowed(&mut g, id("n")) && !allowed(&mut g, id("x")));
        feed(&mut g, &id, &["n", "o"]);
        assert!(g.is_finished());
        // `<`, then `b`: no prelude; the answer goes on.
        let (mut g, id) = guide(segments);
        feed(&mut g, &id, &["<", "b"]);
        assert!(allowed(&mut g, id(">")) && !allowed(&mut g, id("h")));
        feed(&mut g, &id, &[">", "o", "k"]);
        assert!(g.is_finished());
    }

    #[test]
    fn segments_only_need_one_before_the_end() {
        let (mut g, id) = guide(answer(Outside::Nothing));
        assert!(allowed(&mut g, id("\n")) && !allowed(&mut g, id("<eos>")));
        feed(&mut g, &id, &["\n", "<a>", "y", "e", "s", "</a>"]);
        assert!(allowed(&mut g, id("<eos>")));
    }

    #[test]
    fn compose_puts_calls_prelude_and_constraint_together() {
        let number = || Constraint::Regex("[0-9]+".into());
        let call = || Segment {
            begin: "<call>".into(),
            body: Constraint::JsonObject,
            end: "</call>".into(),
        };
        let think = |max_tokens| Prelude {
            start: String::new(),
            optional: false,
            end: "</th>".into(),
            max_tokens,
        };
        assert_eq!(compose(Some(number()), None, None), Some(number()));
        assert_eq!(compose(None, None, Some(think(None))), None);
        let Some(Constraint::Segments(s)) = compose(None, None, Some(think(Some(4)))) else {
            panic!("a budget needs a constraint")
        };
        assert_eq!((s.outside, s.segments.len()), (Outside::Free, 0));
        let Some(Constraint::Segments(s)) = compose(Some(number()), Some((call(), false)), None)
        else {
            panic!("calls and a document compose")
        };
        assert_eq!(s.outside, Outside::Either(Box::new(number())));
        assert_eq!((s.segments, s.max_segments), (vec![call()], Some(1)));
        // A structural tag gets the call as one more segment, its opener a trigger.
        let tag = Constraint::Segments(Segments {
            prelude: None,
            segments: vec![Segment {
                begin: "<a>".into(),
                body: number(),
                end: "</a>".into(),
            }],
            triggers: vec!["<a".into()],
            outside: Outside::Free,
            max_segments: None,
        });
        let Some(Constraint::Segments(s)) =
            compose(Some(tag), Some((call(), true)), Some(think(None)))
        else {
            panic!("segments compose")
        };
        assert_eq!(s.triggers, vec!["<a".to_owned(), "<call>".to_owned()]);
        assert_eq!((s.segments.len(), s.max_segments), (2, None));
        assert_eq!(s.prelude, Some(think(None)));
    }

    #[test]
    fn bad_segments_are_refused() {
        let (v, _) = vocab();
        let refused = |s: Segments| {
            compile(
                &s,
                &v,
                IndexConfig::default(),
                &GrammarConfig::default(),
                &mut Vec::new(),
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        let mut s = answer(Outside::Free);
        s.triggers = vec!["<b".into()];
        assert!(refused(s).contains("begins no segment"));
        let mut s = answer(Outside::Free);
        s.segments.clear();
        assert!(refused(s).contains("at least one segment"));
        let mut s = answer(Outside::Free);
        s.segments[0].body = Constraint::Regex("(".into());
        assert!(!refused(s).is_empty());
    }
}
