//! The token-level index: for each state of a [`ByteDfa`], the tokens that keep a match
//! possible.
//!
//! Each state keeps the smaller of a sorted token list (4 bytes per allowed token) and a mask
//! (one bit per vocabulary token): states inside JSON strings allow nearly the whole
//! vocabulary and keep a 6 KiB mask rather than a 190 KiB list. Where a token leads is not
//! stored: [`Index::next_state`] runs the DFA over the token's bytes (a few table lookups),
//! which is as fast as looking it up was.
//!
//! The tokens allowed in a state are found by walking the vocabulary's byte trie
//! ([`crate::Trie`]) against the DFA, depth first: a prefix shared by many tokens is matched
//! once, and a subtree is skipped at its first dead byte. Since a [`ByteDfa`] only keeps live
//! states, a token whose bytes never hit [`ByteDfa::DEAD`] leads to a state from which the
//! match can still be completed.
//!
//! An index is built eagerly ([`Index::new`]: the whole DFA, then every state reachable by
//! tokens from the start, from a worklist that all cores take states from) or lazily
//! ([`Index::lazy`]: the DFA itself determinized on demand by `crate::lazy`, and each state's
//! tokens computed on first use and cached in a `OnceLock`, so a request waits only for the
//! states it visits and its first mask for little more than the NFA). Both are the same type
//! and are safe to share across threads.
//!
//! EOS tokens are allowed exactly in accepting states; special tokens never are.
//!
//! When the vocabulary cannot spell every byte (no token holds it), a token may lead to a
//! state from which no *token* sequence completes the match. An eager build drops such
//! tokens (and fails with [`IndexError::Unspellable`] if the start state is one); a lazy
//! index cannot see ahead, so there a guide may reach a state that allows no token. With a
//! vocabulary holding every byte (byte-level BPE and SentencePiece byte fallback usually do)
//! the two agree.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::content::{Horizons, Transitions};
use crate::lazy::LazyDfa;
use crate::{ByteDfa, DfaConfig, IndexError, NextBytes, StateId, Vocabulary};

/// Limits and mode of an [`Index`] build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexConfig {
    /// Limits on the underlying byte DFA.
    pub dfa: DfaConfig,
    /// Most token-level states an eager build may compute.
    pub max_states: usize,
    /// Most bytes the per-state token lists and masks of an eager build may take; for a lazy
    /// index, most bytes the whole index may take before it stops growing.
    pub max_memory: usize,
    /// Compute each state's tokens on first use instead of all up front. A lazy index grows as
    /// requests visit states, within the DFA limits and, for the whole index (automaton and
    /// token lists together), within `max_memory`: past it, states not yet computed allow no
    /// token but EOS where they accept ([`Index::is_truncated`]).
    pub lazy: bool,
    /// Threads for an eager build (0: as many as the machine has cores).
    pub threads: usize,
    /// Record each state's accept points ([`Index::accept_points`]): what a grammar parser
    /// needs to find the tokens that end this regex's match and go on past it.
    pub accept_points: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            dfa: DfaConfig::default(),
            max_states: 1 << 17,
            max_memory: 1 << 30,
            lazy: false,
            threads: 0,
            accept_points: false,
        }
    }
}

/// The allowed tokens of one state, in the smaller of two layouts. Where a token leads is not
/// stored: it is the state the DFA reaches over the token's bytes, found on `advance`.
#[derive(Debug)]
enum Allowed {
    /// Few tokens: their ids, sorted (4 bytes each); the mask is built on first request.
    Sparse {
        tokens: Box<[u32]>,
        mask: OnceLock<Box<[u64]>>,
    },
    /// Many tokens (string contents allow most of the vocabulary): the mask (one bit per
    /// token); the sorted ids are built on first request.
    Dense {
        mask: Box<[u64]>,
        count: usize,
        tokens: OnceLock<Box<[u32]>>,
    },
}

/// One computed state.
#[derive(Debug)]
struct Entry {
    allowed: Allowed,
    /// The distinct states the allowed tokens lead to (EOS's [`Index::FINISHED`] left out);
    /// computed by eager builds only, which need them to find and prune states.
    successors: Box<[StateId]>,
    /// Where each allowed token leads, built on first request ([`Index::next_states`]).
    next: OnceLock<Box<[StateId]>>,
    /// Trie nodes with children whose path from this state ends in an accepting state
    /// (recorded only with [`IndexConfig::accept_points`]).
    accept_points: Box<[u32]>,
}

impl Entry {
    fn memory_usage(&self) -> usize {
        let list = match &self.allowed {
            Allowed::Sparse { tokens, .. } => tokens.len() * 4,
            Allowed::Dense { mask, .. } => mask.len() * 8,
        };
        std::mem::size_of::<Entry>()
            + list
            + self.successors.len() * 4
            + self.accept_points.len() * 4
    }

    fn count(&self) -> usize {
        match &self.allowed {
            Allowed::Sparse { tokens, .. } => tokens.len(),
            Allowed::Dense { count, .. } => *count,
        }
    }

    fn allows(&self, token: u32) -> bool {
        match &self.allowed {
            Allowed::Sparse { tokens, .. } => tokens.binary_search(&token).is_ok(),
            Allowed::Dense { mask, .. } => mask
                .get(token as usize / 64)
                .is_some_and(|w| w & (1 << (token % 64)) != 0),
        }
    }
}

/// The ids of the set bits of `mask`, in order.
fn ids_of(mask: &[u64], count: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(count);
    for (w, &word) in mask.iter().enumerate() {
        let mut x = word;
        while x != 0 {
            out.push((w * 64 + x.trailing_zeros() as usize) as u32);
            x &= x - 1;
        }
    }
    out
}

/// The byte automaton under an index: the full DFA, or one determinized on demand.
#[derive(Debug)]
// One per index: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Automaton {
    Full(ByteDfa),
    Lazy(LazyDfa),
}

impl Automaton {
    fn is_accepting(&self, state: StateId) -> bool {
        match self {
            Automaton::Full(dfa) => (state as usize) < dfa.state_count() && dfa.is_accepting(state),
            Automaton::Lazy(dfa) => dfa.is_accepting(state),
        }
    }

    /// How many states the index may have to hold.
    fn capacity(&self) -> usize {
        match self {
            Automaton::Full(dfa) => dfa.state_count(),
            Automaton::Lazy(dfa) => dfa.max_states(),
        }
    }
}

/// Entries in the first segment of [`Slots`]; segment `b` holds `SEGMENT << b`.
const SEGMENT: usize = 512;

/// Segments of [`Slots`]: enough for every `StateId`.
const SEGMENTS: usize = 24;

/// Entry slots, allocated on first use.
type Segment = OnceLock<Box<[OnceLock<Entry>]>>;

/// One entry slot per automaton state, in segments of doubling size allocated on first use: a
/// lazy index over an automaton that is itself still growing reaches any state's slot without
/// a lock or a resize, and holds at most about twice the slots of the states it has seen.
#[derive(Debug)]
struct Slots {
    segments: [Segment; SEGMENTS],
    len: usize,
}

impl Slots {
    fn new(len: usize) -> Slots {
        Slots {
            segments: std::array::from_fn(|_| OnceLock::new()),
            len: len.min(SEGMENT * ((1 << SEGMENTS) - 1)),
        }
    }

    /// The segment of `state` and the place in it.
    fn locate(state: usize) -> (usize, usize) {
        let j = state / SEGMENT + 1;
        let b = (usize::BITS - 1 - j.leading_zeros()) as usize;
        (b, state - SEGMENT * ((1 << b) - 1))
    }

    fn segment(b: usize) -> Box<[OnceLock<Entry>]> {
        (0..SEGMENT << b).map(|_| OnceLock::new()).collect()
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The slot of `state`, its segment allocated if need be.
    fn slot(&self, state: usize) -> Option<&OnceLock<Entry>> {
        if state >= self.len {
            return None;
        }
        let (b, i) = Slots::locate(state);
        let segment = self.segments[b].get_or_init(|| Slots::segment(b));
        Some(&segment[i])
    }

    /// The entry of `state`, if computed.
    fn get(&self, state: usize) -> Option<&Entry> {
        if state >= self.len {
            return None;
        }
        let (b, i) = Slots::locate(state);
        self.segments[b].get()?.get(i)?.get()
    }

    fn slot_mut(&mut self, state: usize) -> Option<&mut OnceLock<Entry>> {
        if state >= self.len {
            return None;
        }
        let (b, i) = Slots::locate(state);
        let segment = &mut self.segments[b];
        if segment.get().is_none() {
            let _ = segment.set(Slots::segment(b));
        }
        segment.get_mut()?.get_mut(i)
    }

    fn memory_usage(&self) -> usize {
        let allocated: usize = (0..SEGMENTS)
            .filter(|&b| self.segments[b].get().is_some())
            .map(|b| SEGMENT << b)
            .sum();
        std::mem::size_of::<Self>() + allocated * std::mem::size_of::<OnceLock<Entry>>()
    }
}

/// A token-level index of a regex over a vocabulary. Immutable once built (a lazy index
/// fills its cache behind `&self`); share it with `Arc` and walk it with [`crate::Guide`].
#[derive(Debug)]
pub struct Index {
    dfa: Automaton,
    vocab: Vocabulary,
    config: IndexConfig,
    slots: Slots,
    computed: AtomicUsize,
    memory: AtomicUsize,
    empty_mask: Box<[u64]>,
    /// Set once an eager build is complete: states it did not reach stay empty.
    sealed: bool,
    /// Set once a lazy index reached `config.max_memory` and stopped computing states.
    capped: AtomicBool,
    /// Which states of a lazy automaton allow every content token (`crate::content`).
    horizons: Mutex<Horizons>,
}

/// Per-thread buffers of the trie walk, reused across states.
#[derive(Default)]
struct Scratch {
    bits: Vec<u64>,
    /// Where each token read in the walk leads (valid where its bit is set).
    next: Vec<StateId>,
    states: Vec<StateId>,
    /// `mark[t] == stamp` once state `t` is among the successors of the current walk.
    mark: Vec<u32>,
    stamp: u32,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Index {
    /// The state after an EOS token: the end of the text.
    pub const FINISHED: StateId = StateId::MAX - 1;

    /// Builds the whole index of `regex` (matched in full) over `vocab`, default limits.
    pub fn new(regex: &str, vocab: &Vocabulary) -> Result<Index, IndexError> {
        Self::with_config(regex, vocab, IndexConfig::default())
    }

    /// A lazy index of `regex` over `vocab`: only the NFA and the start state are built now;
    /// each DFA state, and each state's tokens, are computed on first use.
    pub fn lazy(regex: &str, vocab: &Vocabulary) -> Result<Index, IndexError> {
        Self::with_config(
            regex,
            vocab,
            IndexConfig {
                lazy: true,
                ..IndexConfig::default()
            },
        )
    }

    /// Builds the index of `regex` over `vocab` with explicit limits and mode.
    ///
    /// A lazy index determinizes the regex on demand too (regexes with assertions other than
    /// `^`, `$`, `\A` and `\z` excepted: those get the full DFA), so its limits are checked
    /// as it grows: past [`DfaConfig`]'s, new states read as dead. What it allows still
    /// matches the regex; some longer matches are cut off ([`Index::is_truncated`]).
    pub fn with_config(
        regex: &str,
        vocab: &Vocabulary,
        config: IndexConfig,
    ) -> Result<Index, IndexError> {
        if config.lazy
            && let Some(dfa) = LazyDfa::build(regex, config.dfa)?
        {
            return Ok(Self::over(Automaton::Lazy(dfa), vocab, config));
        }
        Self::from_dfa(ByteDfa::with_config(regex, config.dfa)?, vocab, config)
    }

    /// [`Index::with_config`] for a regex already parsed (`regex-syntax`'s HIR, matched in
    /// full): a lazy index builds its automaton from it without printing and parsing it again.
    pub fn with_config_hir(
        hir: &regex_syntax::hir::Hir,
        vocab: &Vocabulary,
        config: IndexConfig,
    ) -> Result<Index, IndexError> {
        if config.lazy
            && let Some(dfa) = LazyDfa::build_from_hir(hir, config.dfa)?
        {
            return Ok(Self::over(Automaton::Lazy(dfa), vocab, config));
        }
        Self::with_config(&hir.to_string(), vocab, config)
    }

    /// Builds the index over an already built DFA.
    pub fn from_dfa(
        dfa: ByteDfa,
        vocab: &Vocabulary,
        config: IndexConfig,
    ) -> Result<Index, IndexError> {
        let mut index = Self::over(Automaton::Full(dfa), vocab, config);
        if !config.lazy {
            index.fill()?;
            index.prune()?;
            index.sealed = true;
        }
        Ok(index)
    }

    /// An index with no state computed yet.
    fn over(dfa: Automaton, vocab: &Vocabulary, config: IndexConfig) -> Index {
        // Build the trie now, so a lazy index's first state does not pay for it.
        vocab.trie();
        Index {
            empty_mask: vec![0; vocab.mask_words()].into_boxed_slice(),
            slots: Slots::new(dfa.capacity()),
            dfa,
            vocab: vocab.clone(),
            config,
            computed: AtomicUsize::new(0),
            memory: AtomicUsize::new(0),
            sealed: false,
            capped: AtomicBool::new(false),
            horizons: Mutex::default(),
        }
    }

    /// The start state.
    pub fn start(&self) -> StateId {
        match &self.dfa {
            Automaton::Full(dfa) => dfa.start(),
            Automaton::Lazy(dfa) => dfa.start(),
        }
    }

    /// Whether the text read so far is a full match (EOS is allowed here).
    pub fn is_accepting(&self, state: StateId) -> bool {
        state != Self::FINISHED && self.dfa.is_accepting(state)
    }

    /// The tokens allowed in `state`, sorted by id (EOS included in accepting states). Empty
    /// for [`Index::FINISHED`], for ids that are not states of this index, and, in an eager
    /// index, for DFA states no token sequence from the start reaches (or that cannot reach a
    /// match). A lazy index computes `state` now if it has not yet. States that allow many
    /// tokens keep only a mask; their list is built on the first call and cached.
    pub fn allowed_tokens(&self, state: StateId) -> &[u32] {
        let Some(e) = self.entry(state) else {
            return &[];
        };
        match &e.allowed {
            Allowed::Sparse { tokens, .. } => tokens,
            Allowed::Dense {
                mask,
                count,
                tokens,
            } => tokens.get_or_init(|| {
                self.memory.fetch_add(count * 4, Ordering::Relaxed);
                ids_of(mask, *count).into_boxed_slice()
            }),
        }
    }

    /// Number of tokens allowed in `state` (the length of [`Index::allowed_tokens`], without
    /// building the list).
    pub fn allowed_count(&self, state: StateId) -> usize {
        self.entry(state).map_or(0, Entry::count)
    }

    /// Whether `token` is allowed in `state`.
    pub fn is_allowed(&self, state: StateId, token: u32) -> bool {
        self.entry(state).is_some_and(|e| e.allows(token))
    }

    /// The state each of [`Index::allowed_tokens`] leads to, in the same order
    /// ([`Index::FINISHED`] for EOS). Built on the first call and cached; a guide does not
    /// need it ([`Index::next_state`] steps the DFA over one token's bytes).
    pub fn next_states(&self, state: StateId) -> &[StateId] {
        let Some(e) = self.entry(state) else {
            return &[];
        };
        e.next.get_or_init(|| {
            let next: Box<[StateId]> = self
                .allowed_tokens(state)
                .iter()
                .map(|&t| self.step(state, t))
                .collect();
            self.memory.fetch_add(next.len() * 4, Ordering::Relaxed);
            next
        })
    }

    /// The distinct states the tokens allowed in `state` lead to ([`Index::FINISHED`] left
    /// out), in no particular order; eager builds only (empty in a lazy index).
    fn successors(&self, state: StateId) -> &[StateId] {
        self.entry(state).map_or(&[], |e| &e.successors)
    }

    /// The state `token` leads to from `state`, or `None` if it is not allowed there: a
    /// lookup in the state's tokens, then the DFA run over the token's bytes.
    pub fn next_state(&self, state: StateId, token: u32) -> Option<StateId> {
        if !self.entry(state)?.allows(token) {
            return None;
        }
        Some(self.step(state, token))
    }

    /// Where an allowed `token` leads from `state`.
    fn step(&self, state: StateId, token: u32) -> StateId {
        if self.vocab.is_eos(token) {
            return Self::FINISHED;
        }
        let bytes = self.vocab.token(token).unwrap_or_default();
        let mut s = state;
        // An allowed text token never reaches DEAD; stop there all the same.
        match &self.dfa {
            Automaton::Full(dfa) => {
                for &b in bytes {
                    if s == ByteDfa::DEAD {
                        break;
                    }
                    s = dfa.next(s, b);
                }
            }
            Automaton::Lazy(dfa) => {
                let mut table = dfa.lock();
                for &b in bytes {
                    if s == ByteDfa::DEAD {
                        break;
                    }
                    s = dfa.next(&mut table, s, b);
                }
            }
        }
        s
    }

    /// The allowed tokens of `state` as a bitset over the vocabulary (bit `t % 64` of word
    /// `t / 64`). All zero for [`Index::FINISHED`]. States that allow few tokens build theirs
    /// on first request and cache it.
    pub fn mask(&self, state: StateId) -> &[u64] {
        let Some(e) = self.entry(state) else {
            return &self.empty_mask;
        };
        match &e.allowed {
            Allowed::Dense { mask, .. } => mask,
            Allowed::Sparse { tokens, mask } => mask.get_or_init(|| {
                let mut m = self.empty_mask.to_vec();
                for &t in tokens.iter() {
                    m[t as usize / 64] |= 1 << (t % 64);
                }
                self.memory.fetch_add(m.len() * 8, Ordering::Relaxed);
                m.into_boxed_slice()
            }),
        }
    }

    /// Number of states whose tokens are computed (all reachable ones, once eager).
    pub fn state_count(&self) -> usize {
        self.computed.load(Ordering::Relaxed)
    }

    /// Approximate heap memory of the index, in bytes: the DFA, each state's token list or
    /// mask, and what was built on request since (masks of states with few tokens, token
    /// lists of states with many, [`Index::next_states`]); the vocabulary and its trie are
    /// shared and not counted.
    pub fn memory_usage(&self) -> usize {
        let dfa = match &self.dfa {
            Automaton::Full(dfa) => dfa.memory_usage(),
            Automaton::Lazy(dfa) => dfa.memory_usage(),
        };
        let horizons = self.horizons.lock().map_or(0, |h| h.memory_usage());
        dfa + self.slots.memory_usage()
            + self.memory.load(Ordering::Relaxed)
            + self.empty_mask.len() * 8
            + horizons
    }

    /// The full byte DFA the index is built on; `None` for a lazy index that determinizes
    /// on demand (the index's states are then numbered in order of discovery).
    pub fn dfa(&self) -> Option<&ByteDfa> {
        match &self.dfa {
            Automaton::Full(dfa) => Some(dfa),
            Automaton::Lazy(_) => None,
        }
    }

    /// Number of byte-level DFA states: all of them for a full DFA, those determinized so
    /// far for one built on demand.
    pub fn dfa_state_count(&self) -> usize {
        match &self.dfa {
            Automaton::Full(dfa) => dfa.state_count(),
            Automaton::Lazy(dfa) => dfa.state_count(),
        }
    }

    /// Whether a lazy index reached its limits (the on-demand DFA's, or
    /// [`IndexConfig::max_memory`] for the whole index), so that some matches (not all of
    /// which are still possible) are cut off. Always `false` for an eager index, which fails
    /// to build instead.
    pub fn is_truncated(&self) -> bool {
        self.capped.load(Ordering::Relaxed)
            || match &self.dfa {
                Automaton::Full(_) => false,
                Automaton::Lazy(dfa) => dfa.is_full(),
            }
    }

    /// The vocabulary the index is over.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    /// Whether states are computed on first use.
    pub fn is_lazy(&self) -> bool {
        self.config.lazy
    }

    fn entry(&self, state: StateId) -> Option<&Entry> {
        if self.sealed {
            return self.slots.get(state as usize);
        }
        if let Some(e) = self.slots.get(state as usize) {
            return Some(e);
        }
        // Ids an on-demand DFA has not handed out yet are not states.
        if let Automaton::Lazy(dfa) = &self.dfa
            && state as usize >= dfa.state_count()
        {
            return None;
        }
        let slot = self.slots.slot(state as usize)?;
        Some(slot.get_or_init(|| {
            let e = if self.memory_usage() > self.config.max_memory {
                self.capped.store(true, Ordering::Relaxed);
                self.capped_entry(state)
            } else {
                self.compute(state)
            };
            self.computed.fetch_add(1, Ordering::Relaxed);
            self.memory.fetch_add(e.memory_usage(), Ordering::Relaxed);
            e
        }))
    }

    /// The entry of a state first visited after a lazy index reached its memory limit: no
    /// token, but EOS where the state accepts, so what it allows still matches the regex.
    fn capped_entry(&self, state: StateId) -> Entry {
        // `Vocabulary::eos` is sorted and free of duplicates, as a sparse list must be.
        let tokens: Box<[u32]> = if self.dfa.is_accepting(state) {
            self.vocab.eos().into()
        } else {
            Box::default()
        };
        Entry {
            allowed: Allowed::Sparse {
                tokens,
                mask: OnceLock::new(),
            },
            successors: Box::default(),
            next: OnceLock::new(),
            accept_points: Box::default(),
        }
    }

    /// The state `byte` leads to from `state`, [`ByteDfa::DEAD`] when no match is possible
    /// any more (or `state` is not a state of this index).
    pub fn next_byte(&self, state: StateId, byte: u8) -> StateId {
        match &self.dfa {
            Automaton::Full(dfa) if (state as usize) < dfa.state_count() => dfa.next(state, byte),
            Automaton::Full(_) => ByteDfa::DEAD,
            Automaton::Lazy(dfa) => {
                let mut table = dfa.lock();
                if (state as usize) < dfa.state_count_locked(&table) {
                    dfa.next(&mut table, state, byte)
                } else {
                    ByteDfa::DEAD
                }
            }
        }
    }

    /// A cursor over the byte automaton that holds its lock (a lazy one's) until dropped, for
    /// walkers that take many steps: `None` when another thread holds the lock now. While a
    /// stepper lives, this thread must not call other methods of this index that read the
    /// automaton (they would wait for the lock it holds).
    pub fn try_stepper(&self) -> Option<Stepper<'_>> {
        Some(match &self.dfa {
            Automaton::Full(dfa) => Stepper(Stepper_::Full(dfa)),
            Automaton::Lazy(dfa) => Stepper(Stepper_::Lazy(dfa, dfa.try_lock()?)),
        })
    }

    /// A cursor over the byte automaton, waiting for a lazy one's lock if another thread
    /// holds it (see [`Index::try_stepper`] for what the holder must not do meanwhile).
    pub(crate) fn stepper(&self) -> Stepper<'_> {
        match &self.dfa {
            Automaton::Full(dfa) => Stepper(Stepper_::Full(dfa)),
            Automaton::Lazy(dfa) => Stepper(Stepper_::Lazy(dfa, dfa.lock())),
        }
    }

    /// The automaton's byte classes (bytes of a class lead to the same state everywhere).
    pub(crate) fn byte_classes(&self) -> &[u8; 256] {
        match &self.dfa {
            Automaton::Full(dfa) => dfa.raw().0,
            Automaton::Lazy(dfa) => dfa.classes(),
        }
    }

    /// Whether some byte leads from `state` to a live state (the match can go on). Every
    /// live state that is not accepting can; an accepting one may be the end.
    pub fn can_continue(&self, state: StateId) -> bool {
        self.stepper().can_continue(state)
    }

    /// The bytes that lead from `state` to a live state: none, exactly one, or more. A lazy
    /// automaton computes the state's transitions once and keeps the answer, so asking
    /// again costs a lookup.
    pub fn next_bytes(&self, state: StateId) -> NextBytes {
        self.stepper().next_bytes(state)
    }

    /// Appends to `out` the *forced continuation* of `state`: the bytes every match that
    /// goes on from here starts with, followed while exactly one byte leads on and the text
    /// is not a full match (where it is, ending is a choice), at most `max` of them. Empty
    /// for [`Index::FINISHED`] and ids that are not states. Costs a table lookup per byte
    /// once the states on the way are known ([`Index::next_bytes`]).
    pub fn forced_bytes(&self, state: StateId, max: usize, out: &mut Vec<u8>) {
        let mut stepper = self.stepper();
        let mut s = state;
        let mut taken = 0;
        while taken < max && s != Self::FINISHED && !stepper.is_accepting(s) {
            let NextBytes::One(b) = stepper.next_bytes(s) else {
                break;
            };
            out.push(b);
            taken += 1;
            s = stepper.next(s, b);
        }
    }

    /// The trie nodes ([`crate::Trie`]) that have children and whose path, read from
    /// `state`, keeps a match possible and ends in an accepting state: the places where a
    /// token may end this regex's match and go on with something else. Empty unless the
    /// index was built with [`IndexConfig::accept_points`]; a lazy index computes `state` now.
    pub fn accept_points(&self, state: StateId) -> &[u32] {
        self.entry(state).map_or(&[], |e| &e.accept_points)
    }

    /// Walks the trie against the DFA from `state`.
    fn compute(&self, state: StateId) -> Entry {
        match &self.dfa {
            Automaton::Full(dfa) => {
                let (classes, table, stride) = dfa.raw();
                let step = FullStep {
                    dfa,
                    classes,
                    table,
                    stride,
                };
                self.walk::<false>(state, dfa.is_accepting(state), dfa.state_count(), step)
            }
            Automaton::Lazy(dfa) => {
                // One lock for the whole walk; transitions not seen yet are computed in it.
                let mut table = dfa.lock();
                let classes = dfa.classes();
                let accepting = table.is_accepting(state);
                let mut step = LazyStep {
                    dfa,
                    classes,
                    table: &mut table,
                };
                // Where every content token is allowed, the walk takes them from the
                // vocabulary's mask and visits only the other tokens' paths.
                let content = self
                    .horizons
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .allows_all(&mut step, state);
                if content {
                    self.walk::<true>(state, accepting, 0, step)
                } else {
                    self.walk::<false>(state, accepting, 0, step)
                }
            }
        }
    }

    /// The walk of [`Index::compute`], over the transitions `next(state, byte)`. `states`:
    /// the automaton's size, for an eager build's successor marks. `CONTENT`: every content
    /// token is allowed from `state` and no accept point lies on their paths
    /// (`crate::content`), so only the subtrees holding other tokens are walked (never for an
    /// eager build, which needs every token's successor); a constant, so the walk without
    /// it tests nothing more per node.
    #[inline]
    fn walk<const CONTENT: bool>(
        &self,
        state: StateId,
        accepting: bool,
        states: usize,
        mut step: impl Step,
    ) -> Entry {
        let mut accept_points = Vec::new();
        let trie = self.vocab.trie();
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let sc = &mut *guard;
            // One extra bit for the dummy token (the vocabulary size).
            sc.bits.clear();
            sc.bits.resize((self.vocab.len() + 1).div_ceil(64), 0);
            if sc.next.len() < self.vocab.len() + 1 {
                sc.next.resize(self.vocab.len() + 1, 0);
            }
            // The walk, in preorder: `states[d]` is the DFA state after the path to the last
            // node read at depth `d`, so a node's parent state is `states[depth - 1]` and no
            // stack is needed. A dead node skips its subtree. The loop is nearly branch-free:
            // a node's first token is written unconditionally, to a dummy slot (the vocabulary
            // size) when the node is dead or ends no token; more tokens at one node are rare.
            let a = trie.raw();
            let dummy = self.vocab.len();
            let bits = &mut sc.bits[..];
            let next = &mut sc.next[..];
            let path = &mut sc.states;
            path.clear();
            path.resize(trie.max_depth() + 1, ByteDfa::DEAD);
            path[0] = state;
            let n = a.label.len();
            let mut i = 1;
            while i < n {
                if CONTENT && !a.rest[i] {
                    i = a.end[i] as usize;
                    continue;
                }
                let d = a.depth[i] as usize;
                let t = step.next(path[d - 1], a.label[i]);
                let alive = t != ByteDfa::DEAD;
                path[d] = t;
                let slot = if alive { a.first[i] as usize } else { dummy };
                bits[slot / 64] |= 1 << (slot % 64);
                next[slot] = t;
                if alive && a.tok_start[i + 1] - a.tok_start[i] > 1 {
                    for &tok in &a.tokens[a.tok_start[i] as usize + 1..a.tok_start[i + 1] as usize]
                    {
                        bits[tok as usize / 64] |= 1 << (tok % 64);
                        next[tok as usize] = t;
                    }
                }
                if alive
                    && self.config.accept_points
                    && a.end[i] as usize > i + 1
                    && step.accepting(t)
                {
                    accept_points.push(i as u32);
                }
                i = if alive { i + 1 } else { a.end[i] as usize };
            }
            // Clear the dummy bit.
            bits[dummy / 64] &= !(1 << (dummy % 64));
            if CONTENT {
                for (b, &c) in bits.iter_mut().zip(trie.content_mask()) {
                    *b |= c;
                }
            }
            if accepting {
                for &e in self.vocab.eos() {
                    bits[e as usize / 64] |= 1 << (e % 64);
                    next[e as usize] = Self::FINISHED;
                }
            }
            // An eager build needs the distinct successors (to find the next states to compute
            // and to prune); a lazy index never does.
            let mut successors = Vec::new();
            if !self.config.lazy {
                // `mark[t] == stamp`: `t` is already listed. The stamp is new for every walk,
                // so marks left by other walks (of this index or another) never match.
                sc.stamp = sc.stamp.wrapping_add(1);
                if sc.stamp == 0 || sc.mark.len() < states {
                    sc.mark.clear();
                    sc.mark.resize(states, 0);
                    sc.stamp = 1;
                }
                for (w, &word) in bits.iter().enumerate() {
                    let mut x = word;
                    while x != 0 {
                        let t = next[w * 64 + x.trailing_zeros() as usize];
                        x &= x - 1;
                        if t == Self::FINISHED {
                            continue;
                        }
                        if let Some(m) = sc.mark.get_mut(t as usize)
                            && *m != sc.stamp
                        {
                            *m = sc.stamp;
                            successors.push(t);
                        }
                    }
                }
            }
            let words = self.vocab.mask_words();
            let count = bits.iter().map(|w| w.count_ones() as usize).sum::<usize>();
            // Keep the smaller layout: 4 bytes per token, or 8 bytes per 64 tokens.
            let allowed = if count * 4 < words * 8 {
                Allowed::Sparse {
                    tokens: ids_of(&bits[..words], count).into_boxed_slice(),
                    mask: OnceLock::new(),
                }
            } else {
                Allowed::Dense {
                    mask: bits[..words].into(),
                    count,
                    tokens: OnceLock::new(),
                }
            };
            bits.fill(0);
            Entry {
                allowed,
                successors: successors.into_boxed_slice(),
                next: OnceLock::new(),
                accept_points: accept_points.into_boxed_slice(),
            }
        })
    }
}

/// A cursor over an index's byte automaton ([`Index::try_stepper`]).
#[derive(Debug)]
pub struct Stepper<'a>(StepperInner<'a>);

#[derive(Debug)]
enum StepperInner<'a> {
    /// A full DFA: plain table reads.
    Full(&'a ByteDfa),
    /// An on-demand DFA, its table locked.
    Lazy(&'a LazyDfa, std::sync::MutexGuard<'a, crate::lazy::Table>),
}

use StepperInner as Stepper_;

impl Stepper<'_> {
    /// The state after `byte` from `state` ([`ByteDfa::DEAD`] when no match is possible).
    #[inline]
    pub fn next(&mut self, state: StateId, byte: u8) -> StateId {
        match &mut self.0 {
            Stepper_::Full(dfa) if (state as usize) < dfa.state_count() => dfa.next(state, byte),
            Stepper_::Lazy(dfa, table) if (state as usize) < dfa.state_count_locked(table) => {
                dfa.next(table, state, byte)
            }
            _ => ByteDfa::DEAD,
        }
    }

    /// Whether `state` accepts.
    #[inline]
    pub fn is_accepting(&self, state: StateId) -> bool {
        match &self.0 {
            Stepper_::Full(dfa) => (state as usize) < dfa.state_count() && dfa.is_accepting(state),
            Stepper_::Lazy(_, table) => table.is_accepting(state),
        }
    }

    /// Whether `state` is a state of the automaton (determinized so far, for a lazy one).
    pub(crate) fn is_state(&self, state: StateId) -> bool {
        match &self.0 {
            Stepper_::Full(dfa) => (state as usize) < dfa.state_count(),
            Stepper_::Lazy(dfa, table) => (state as usize) < dfa.state_count_locked(table),
        }
    }

    /// Whether some byte leads from `state` to a live state ([`Index::can_continue`]).
    pub fn can_continue(&mut self, state: StateId) -> bool {
        self.next_bytes(state) != NextBytes::None
    }

    /// The bytes that lead from `state` to a live state ([`Index::next_bytes`]).
    pub fn next_bytes(&mut self, state: StateId) -> NextBytes {
        match &mut self.0 {
            Stepper_::Full(dfa) if (state as usize) < dfa.state_count() => dfa.next_bytes(state),
            Stepper_::Lazy(dfa, table) if (state as usize) < dfa.state_count_locked(table) => {
                dfa.next_bytes(table, state)
            }
            _ => NextBytes::None,
        }
    }
}

/// The transitions a trie walk follows.
trait Step {
    /// The state after `byte` from `state`.
    fn next(&mut self, state: StateId, byte: u8) -> StateId;
    /// Whether `state` accepts.
    fn accepting(&mut self, state: StateId) -> bool;
}

/// The transitions of a full DFA's table.
struct FullStep<'a> {
    dfa: &'a ByteDfa,
    classes: &'a [u8; 256],
    table: &'a [StateId],
    stride: usize,
}

impl Step for FullStep<'_> {
    #[inline]
    fn next(&mut self, state: StateId, byte: u8) -> StateId {
        self.table[state as usize * self.stride + self.classes[byte as usize] as usize]
    }

    fn accepting(&mut self, state: StateId) -> bool {
        self.dfa.is_accepting(state)
    }
}

/// The transitions of an on-demand DFA, computed under its lock as the walk needs them.
struct LazyStep<'a, 'b> {
    dfa: &'a LazyDfa,
    classes: &'a [u8; 256],
    table: &'a mut std::sync::MutexGuard<'b, crate::lazy::Table>,
}

impl Transitions for LazyStep<'_, '_> {
    fn next(&mut self, state: StateId, byte: u8) -> StateId {
        Step::next(self, state, byte)
    }

    fn accepting(&mut self, state: StateId) -> bool {
        Step::accepting(self, state)
    }

    fn class(&self, byte: u8) -> u8 {
        self.classes[byte as usize]
    }
}

impl Step for LazyStep<'_, '_> {
    #[inline]
    fn next(&mut self, state: StateId, byte: u8) -> StateId {
        self.dfa
            .next_class(self.table, state, self.classes[byte as usize] as usize)
    }

    fn accepting(&mut self, state: StateId) -> bool {
        self.table.is_accepting(state)
    }
}

impl Index {
    /// Drops the tokens that lead to states from which no token sequence reaches an accepting
    /// state. Such states exist only when the vocabulary cannot spell some bytes the regex
    /// needs (SmolLM2, say, has no token holding the byte 0x04).
    fn prune(&mut self) -> Result<(), IndexError> {
        let n = self.slots.len();
        let mut preds: Vec<Vec<StateId>> = vec![Vec::new(); n];
        for s in 0..n {
            let Some(e) = self.slots.get(s) else { continue };
            for &t in e.successors.iter() {
                preds[t as usize].push(s as StateId);
            }
        }
        let mut live = vec![false; n];
        let mut queue: Vec<StateId> = Vec::new();
        for (s, l) in live.iter_mut().enumerate() {
            if self.slots.get(s).is_some() && self.dfa.is_accepting(s as StateId) {
                *l = true;
                queue.push(s as StateId);
            }
        }
        while let Some(s) = queue.pop() {
            for &p in &preds[s as usize] {
                if !live[p as usize] {
                    live[p as usize] = true;
                    queue.push(p);
                }
            }
        }
        if !live[self.start() as usize] {
            return Err(IndexError::Unspellable);
        }
        let mut computed = 0;
        let mut memory = 0;
        for s in 0..n {
            if !live[s] {
                if let Some(slot) = self.slots.slot_mut(s) {
                    slot.take();
                }
                continue;
            }
            let Some(e) = self.slots.get(s) else {
                continue;
            };
            if e.successors.iter().any(|&t| !live[t as usize]) {
                // Rare: filter this state's tokens by where each leads.
                let keep: Vec<u32> = self
                    .allowed_tokens(s as StateId)
                    .iter()
                    .copied()
                    .filter(|&t| {
                        let q = self.step(s as StateId, t);
                        q == Self::FINISHED || live[q as usize]
                    })
                    .collect();
                let successors: Box<[StateId]> = e
                    .successors
                    .iter()
                    .copied()
                    .filter(|&t| live[t as usize])
                    .collect();
                let entry = Entry {
                    allowed: Allowed::Sparse {
                        tokens: keep.into_boxed_slice(),
                        mask: OnceLock::new(),
                    },
                    successors,
                    next: OnceLock::new(),
                    accept_points: e.accept_points.clone(),
                };
                if let Some(slot) = self.slots.slot_mut(s) {
                    *slot = OnceLock::from(entry);
                }
            }
            if let Some(e) = self.slots.get(s) {
                computed += 1;
                memory += e.memory_usage();
            }
        }
        *self.computed.get_mut() = computed;
        *self.memory.get_mut() = memory;
        Ok(())
    }

    /// Computes every state reachable by tokens from the start.
    ///
    /// Workers take states from a shared worklist and add the successors not seen yet, so
    /// every core stays busy while two or more states are pending. The result does not depend
    /// on the order: each state's entry is a function of the state alone.
    fn fill(&self) -> Result<(), IndexError> {
        let threads = match self.config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let n = self.slots.len();
        let mut seen = vec![false; n];
        seen[self.start() as usize] = true;
        let work = Mutex::new(Worklist {
            pending: vec![self.start()],
            seen,
            discovered: 1,
            active: 0,
            error: None,
        });
        let wake = Condvar::new();
        // Small builds finish on this thread before helpers would even start: spawn them only
        // once the build has run for a couple of milliseconds.
        let deadline = Instant::now() + Duration::from_millis(2);
        let done = self.work(&work, &wake, Some(deadline));
        if !done {
            if threads <= 1 {
                self.work(&work, &wake, None);
            } else {
                std::thread::scope(|scope| {
                    for _ in 1..threads {
                        scope.spawn(|| self.work(&work, &wake, None));
                    }
                    self.work(&work, &wake, None);
                });
            }
        }
        let work = work.into_inner().unwrap_or_else(|e| e.into_inner());
        match work.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One worker of [`Index::fill`]. Returns whether the build is over (all states done, or
    /// an error); with a deadline, it also returns (`false`) between two states once past it.
    fn work(&self, work: &Mutex<Worklist>, wake: &Condvar, deadline: Option<Instant>) -> bool {
        let lock = || work.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let state = {
                let mut w = lock();
                loop {
                    if w.error.is_some() {
                        return true;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) && !w.pending.is_empty() {
                        return false;
                    }
                    if let Some(s) = w.pending.pop() {
                        w.active += 1;
                        break s;
                    }
                    if w.active == 0 {
                        wake.notify_all();
                        return true;
                    }
                    w = wake.wait(w).unwrap_or_else(|e| e.into_inner());
                }
            };
            let successors = self.successors(state);
            let used = self.memory.load(Ordering::Relaxed);
            let mut w = lock();
            for &t in successors {
                if !w.seen[t as usize] {
                    w.seen[t as usize] = true;
                    w.pending.push(t);
                    w.discovered += 1;
                }
            }
            if w.discovered > self.config.max_states && w.error.is_none() {
                w.error = Some(IndexError::TooLarge {
                    limit: "states",
                    detail: format!("more than {} token-level states", self.config.max_states),
                });
            }
            if used > self.config.max_memory && w.error.is_none() {
                w.error = Some(IndexError::TooLarge {
                    limit: "memory",
                    detail: format!(
                        "the token lists take {used} bytes, over {}",
                        self.config.max_memory
                    ),
                });
            }
            w.active -= 1;
            drop(w);
            wake.notify_all();
        }
    }
}

/// The shared state of an eager build's workers.
struct Worklist {
    pending: Vec<StateId>,
    seen: Vec<bool>,
    discovered: usize,
    active: usize,
    error: Option<IndexError>,
}
