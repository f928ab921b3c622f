//! The token-level index: for each state of a [`ByteDfa`], the tokens that keep a match
//! possible and the state each leads to.
//!
//! The tokens allowed in a state are found by walking the vocabulary's byte trie
//! ([`crate::Trie`]) against the DFA, depth first: a prefix shared by many tokens is matched
//! once, and a subtree is skipped at its first dead byte. Since a [`ByteDfa`] only keeps live
//! states, a token whose bytes never hit [`ByteDfa::DEAD`] leads to a state from which the
//! match can still be completed.
//!
//! An index is built eagerly ([`Index::new`]: every state reachable by tokens from the start,
//! from a worklist that all cores take states from) or lazily
//! ([`Index::lazy`]: each state on first use, cached in a `OnceLock`, so a request waits only
//! for the states it visits). Both are the same type and are safe to share across threads.
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{ByteDfa, DfaConfig, IndexError, StateId, Vocabulary};

/// Limits and mode of an [`Index`] build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexConfig {
    /// Limits on the underlying byte DFA.
    pub dfa: DfaConfig,
    /// Most token-level states an eager build may compute.
    pub max_states: usize,
    /// Most bytes the per-state token lists of an eager build may take.
    pub max_memory: usize,
    /// Compute each state's tokens on first use instead of all up front. A lazy index checks
    /// only the DFA limits; it grows as requests visit states.
    pub lazy: bool,
    /// Threads for an eager build (0: as many as the machine has cores).
    pub threads: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            dfa: DfaConfig::default(),
            max_states: 1 << 17,
            max_memory: 1 << 30,
            lazy: false,
            threads: 0,
        }
    }
}

/// The allowed tokens of one state, sorted by id, with the state each leads to.
#[derive(Debug)]
struct Entry {
    tokens: Box<[u32]>,
    next: Box<[StateId]>,
    mask: OnceLock<Box<[u64]>>,
}

impl Entry {
    fn memory_usage(&self) -> usize {
        std::mem::size_of::<Entry>() + self.tokens.len() * 8
    }
}

/// A token-level index of a regex over a vocabulary. Immutable once built (a lazy index
/// fills its cache behind `&self`); share it with `Arc` and walk it with [`crate::Guide`].
#[derive(Debug)]
pub struct Index {
    dfa: ByteDfa,
    vocab: Vocabulary,
    config: IndexConfig,
    slots: Vec<OnceLock<Entry>>,
    computed: AtomicUsize,
    memory: AtomicUsize,
    empty_mask: Box<[u64]>,
    /// Set once an eager build is complete: states it did not reach stay empty.
    sealed: bool,
}

/// Per-thread buffers of the trie walk, reused across states.
#[derive(Default)]
struct Scratch {
    bits: Vec<u64>,
    next: Vec<StateId>,
    states: Vec<StateId>,
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

    /// A lazy index of `regex` over `vocab`: only the DFA is built now; each state's tokens
    /// are computed on first use.
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
    pub fn with_config(
        regex: &str,
        vocab: &Vocabulary,
        config: IndexConfig,
    ) -> Result<Index, IndexError> {
        Self::from_dfa(ByteDfa::with_config(regex, config.dfa)?, vocab, config)
    }

    /// Builds the index over an already built DFA.
    pub fn from_dfa(
        dfa: ByteDfa,
        vocab: &Vocabulary,
        config: IndexConfig,
    ) -> Result<Index, IndexError> {
        // Build the trie now, so a lazy index's first state does not pay for it.
        vocab.trie();
        let mut slots = Vec::new();
        slots.resize_with(dfa.state_count(), OnceLock::new);
        let mut index = Index {
            empty_mask: vec![0; vocab.mask_words()].into_boxed_slice(),
            dfa,
            vocab: vocab.clone(),
            config,
            slots,
            computed: AtomicUsize::new(0),
            memory: AtomicUsize::new(0),
            sealed: false,
        };
        if !config.lazy {
            index.fill()?;
            index.prune()?;
            index.sealed = true;
        }
        Ok(index)
    }

    /// The start state.
    pub fn start(&self) -> StateId {
        self.dfa.start()
    }

    /// Whether the text read so far is a full match (EOS is allowed here).
    pub fn is_accepting(&self, state: StateId) -> bool {
        state != Self::FINISHED
            && (state as usize) < self.slots.len()
            && self.dfa.is_accepting(state)
    }

    /// The tokens allowed in `state`, sorted by id (EOS included in accepting states). Empty
    /// for [`Index::FINISHED`], for ids that are not states of this index, and, in an eager
    /// index, for DFA states no token sequence from the start reaches (or that cannot reach a
    /// match). A lazy index computes `state` now if it has not yet.
    pub fn allowed_tokens(&self, state: StateId) -> &[u32] {
        self.entry(state).map_or(&[], |e| &e.tokens)
    }

    /// The state each of [`Index::allowed_tokens`] leads to, in the same order
    /// ([`Index::FINISHED`] for EOS).
    pub fn next_states(&self, state: StateId) -> &[StateId] {
        self.entry(state).map_or(&[], |e| &e.next)
    }

    /// The state `token` leads to from `state`, or `None` if it is not allowed there.
    pub fn next_state(&self, state: StateId, token: u32) -> Option<StateId> {
        let e = self.entry(state)?;
        let k = e.tokens.binary_search(&token).ok()?;
        Some(e.next[k])
    }

    /// The allowed tokens of `state` as a bitset over the vocabulary (bit `t % 64` of word
    /// `t / 64`), built on first request and cached. All zero for [`Index::FINISHED`].
    pub fn mask(&self, state: StateId) -> &[u64] {
        let Some(e) = self.entry(state) else {
            return &self.empty_mask;
        };
        e.mask.get_or_init(|| {
            let mut m = self.empty_mask.to_vec();
            for &t in e.tokens.iter() {
                m[t as usize / 64] |= 1 << (t % 64);
            }
            self.memory.fetch_add(m.len() * 8, Ordering::Relaxed);
            m.into_boxed_slice()
        })
    }

    /// Number of states whose tokens are computed (all reachable ones, once eager).
    pub fn state_count(&self) -> usize {
        self.computed.load(Ordering::Relaxed)
    }

    /// Approximate heap memory of the index, in bytes: the DFA, the per-state token lists
    /// and the masks built so far (the vocabulary and its trie are shared and not counted).
    pub fn memory_usage(&self) -> usize {
        self.dfa.memory_usage()
            + self.slots.len() * std::mem::size_of::<OnceLock<Entry>>()
            + self.memory.load(Ordering::Relaxed)
            + self.empty_mask.len() * 8
    }

    /// The byte DFA the index is built on.
    pub fn dfa(&self) -> &ByteDfa {
        &self.dfa
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
        let slot = self.slots.get(state as usize)?;
        if self.sealed {
            return slot.get();
        }
        Some(slot.get_or_init(|| {
            let e = self.compute(state);
            self.computed.fetch_add(1, Ordering::Relaxed);
            self.memory.fetch_add(e.memory_usage(), Ordering::Relaxed);
            e
        }))
    }

    /// Walks the trie against the DFA from `state`.
    fn compute(&self, state: StateId) -> Entry {
        let trie = self.vocab.trie();
        let dfa = &self.dfa;
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let sc = &mut *guard;
            // One extra bit and slot for the dummy token (the vocabulary size).
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
            let (classes, table, stride) = dfa.raw();
            let a = trie.raw();
            let dummy = self.vocab.len();
            let bits = &mut sc.bits[..];
            let next = &mut sc.next[..];
            let states = &mut sc.states;
            states.clear();
            states.resize(trie.max_depth() + 1, ByteDfa::DEAD);
            states[0] = state;
            let n = a.label.len();
            let mut i = 1;
            while i < n {
                let d = a.depth[i] as usize;
                let parent = states[d - 1] as usize;
                let t = table[parent * stride + classes[a.label[i] as usize] as usize];
                let alive = t != ByteDfa::DEAD;
                states[d] = t;
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
                i = if alive { i + 1 } else { a.end[i] as usize };
            }
            // Clear the dummy slot.
            bits[dummy / 64] &= !(1 << (dummy % 64));
            let mut count = bits.iter().map(|w| w.count_ones() as usize).sum::<usize>();
            if dfa.is_accepting(state) {
                for &e in self.vocab.eos() {
                    sc.bits[e as usize / 64] |= 1 << (e % 64);
                    sc.next[e as usize] = Self::FINISHED;
                    count += 1;
                }
            }
            let mut tokens = Vec::with_capacity(count);
            let mut next = Vec::with_capacity(count);
            for (w, word) in sc.bits.iter_mut().enumerate() {
                let mut x = std::mem::take(word);
                while x != 0 {
                    let id = w * 64 + x.trailing_zeros() as usize;
                    tokens.push(id as u32);
                    next.push(sc.next[id]);
                    x &= x - 1;
                }
            }
            Entry {
                tokens: tokens.into_boxed_slice(),
                next: next.into_boxed_slice(),
                mask: OnceLock::new(),
            }
        })
    }

    /// Drops the tokens that lead to states from which no token sequence reaches an accepting
    /// state. Such states exist only when the vocabulary cannot spell some bytes the regex
    /// needs (SmolLM2, say, has no token holding the byte 0x04).
    fn prune(&mut self) -> Result<(), IndexError> {
        let n = self.slots.len();
        let mut preds: Vec<Vec<StateId>> = vec![Vec::new(); n];
        let mut mark = vec![StateId::MAX; n];
        for (s, slot) in self.slots.iter().enumerate() {
            let Some(e) = slot.get() else { continue };
            for &t in e.next.iter() {
                if t != Self::FINISHED && mark[t as usize] != s as StateId {
                    mark[t as usize] = s as StateId;
                    preds[t as usize].push(s as StateId);
                }
            }
        }
        let mut live = vec![false; n];
        let mut queue: Vec<StateId> = Vec::new();
        for (s, slot) in self.slots.iter().enumerate() {
            if slot.get().is_some() && self.dfa.is_accepting(s as StateId) {
                live[s] = true;
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
        for (s, slot) in self.slots.iter_mut().enumerate() {
            if !live[s] {
                slot.take();
                continue;
            }
            let Some(e) = slot.get_mut() else { continue };
            if e.next
                .iter()
                .any(|&t| t != Self::FINISHED && !live[t as usize])
            {
                let keep = |k: &usize| e.next[*k] == Self::FINISHED || live[e.next[*k] as usize];
                let (tokens, next): (Vec<u32>, Vec<StateId>) = (0..e.tokens.len())
                    .filter(keep)
                    .map(|k| (e.tokens[k], e.next[k]))
                    .unzip();
                e.tokens = tokens.into_boxed_slice();
                e.next = next.into_boxed_slice();
            }
            computed += 1;
            memory += e.memory_usage();
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
        let mut successors: Vec<StateId> = Vec::new();
        let mut mark: Vec<StateId> = Vec::new();
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
            // Distinct successors, found outside the lock.
            if mark.is_empty() {
                mark.resize(self.slots.len(), StateId::MAX);
            }
            successors.clear();
            for &t in self.next_states(state) {
                if t != Self::FINISHED && mark[t as usize] != state {
                    mark[t as usize] = state;
                    successors.push(t);
                }
            }
            let used = self.memory.load(Ordering::Relaxed);
            let mut w = lock();
            for &t in &successors {
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
