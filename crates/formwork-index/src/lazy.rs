//! A byte DFA determinized on demand: the subset construction run one transition at a time,
//! as an index walks it, over the Thompson NFA of `regex-automata`.
//!
//! A full [`crate::ByteDfa`] pays for every state before the first token: for a 10-property
//! JSON schema that is 1,700 states and ~12 ms, most of a request's constraint cost. A lazy
//! index only needs the states its guides visit and the states one token's bytes reach from
//! them, so [`LazyDfa`] builds the NFA (about a millisecond) and computes each transition the
//! first time it is asked for. States are numbered densely in order of discovery, never
//! renumbered or forgotten, so a [`StateId`] stays valid for the automaton's lifetime.
//!
//! The full DFA drops the states from which no match is reachable; without the whole graph
//! that cannot be done on the DFA, so it is done on the NFA instead, once, before any state:
//! [`co_reachable`] marks the NFA states that can still reach the match state (an empty class
//! compiles to a `Fail` state, and `$` in the middle of a pattern cuts the paths through it),
//! and closures keep only those. Every NFA state in a subset can then complete a match along
//! its own path, so every DFA state can, as in the full DFA. Regexes with assertions other
//! than the haystack anchors (`^`, `$`, `\A`, `\z`), such as word boundaries or multi-line
//! anchors, are left to the full DFA ([`LazyDfa::build`] says so).

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};

use regex_automata::nfa::thompson::{self, NFA, State, WhichCaptures};
use regex_automata::util::look::{Look, LookSet};
use regex_automata::util::primitives::StateID;

use crate::{ByteDfa, DfaConfig, IndexError, NextBytes, StateId};

/// A transition not computed yet (never returned to callers).
const UNKNOWN: StateId = StateId::MAX - 2;

/// Marks an accepting state at the end of its NFA state set (NFA ids are far smaller).
const ACCEPT: u32 = u32::MAX;

/// The most states a table may hold: ids stay below [`UNKNOWN`] and the index's sentinels.
const MAX_STATES: usize = (StateId::MAX - 3) as usize;

/// A DFA whose states and transitions are computed on first use. Shared across threads: the
/// table sits behind a mutex, which a trie walk takes once for the whole walk.
#[derive(Debug)]
pub(crate) struct LazyDfa {
    nfa: NFA,
    /// Whether each NFA state can still reach the match state ([`co_reachable`]).
    live: Vec<bool>,
    classes: [u8; 256],
    /// One byte of each class.
    reps: Vec<u8>,
    /// Whether each class holds one byte only.
    single: Vec<bool>,
    config: DfaConfig,
    table: Mutex<Table>,
}

/// The determinized part of a [`LazyDfa`], and the closure's scratch space.
#[derive(Debug, Default)]
pub(crate) struct Table {
    stride: usize,
    /// Row-major transitions; [`UNKNOWN`] where not computed yet.
    trans: Vec<StateId>,
    accepting: Vec<bool>,
    /// The bytes that lead on from each state ([`NextBytes`]): 0 not known yet, 1 none,
    /// 2 many, `3 + b` byte `b` alone.
    next_bytes: Vec<u16>,
    /// Each state's NFA states (those that read a byte), sorted, then [`ACCEPT`] if accepting.
    sets: Vec<Arc<[u32]>>,
    /// The state of each set: one allocation per set, shared with `sets`; a fast seeded hash
    /// (sets are short lists of NFA state ids).
    ids: foldhash::HashMap<Arc<[u32]>, StateId>,
    memory: usize,
    /// Set once a limit stopped the table from growing: new states read as dead from then on.
    full: bool,
    stack: Vec<(StateID, bool)>,
    /// `marks[2 * id + end] == stamp`: NFA state `id` was visited in this closure (`end`: after
    /// an end-of-input assertion).
    marks: Vec<u32>,
    stamp: u32,
    seeds: Vec<StateID>,
    set: Vec<u32>,
}

impl LazyDfa {
    /// Builds the NFA of `regex` and the start state. `None` when the regex has assertions
    /// other than `^`/`$`/`\A`/`\z`: those need the full DFA.
    pub(crate) fn build(regex: &str, config: DfaConfig) -> Result<Option<LazyDfa>, IndexError> {
        let nfa = Self::compiler(config)
            .build(regex)
            .map_err(|e| crate::automaton::build_error(regex, &e))?;
        Self::over(nfa, config)
    }

    /// [`LazyDfa::build`] from a parsed regex (nothing parsed again).
    pub(crate) fn build_from_hir(
        hir: &regex_syntax::hir::Hir,
        config: DfaConfig,
    ) -> Result<Option<LazyDfa>, IndexError> {
        // One compiler per thread: its UTF-8 suffix cache (ten thousand entries, allocated on
        // its first Unicode class) then serves every build instead of being made for each
        // (a grammar builds one automaton per lexeme, most of them small).
        thread_local! {
            static COMPILER: RefCell<thompson::Compiler> = RefCell::new(NFA::compiler());
        }
        let nfa = COMPILER.with(|compiler| {
            let mut compiler = compiler.borrow_mut();
            compiler.configure(Self::compiler_config(config));
            compiler
                .build_from_hir(hir)
                .map_err(|e| crate::automaton::build_error(&hir.to_string(), &e))
        })?;
        Self::over(nfa, config)
    }

    fn compiler(config: DfaConfig) -> thompson::Compiler {
        let mut compiler = NFA::compiler();
        compiler.configure(Self::compiler_config(config));
        compiler
    }

    fn compiler_config(config: DfaConfig) -> thompson::Config {
        thompson::Config::new()
            .which_captures(WhichCaptures::None)
            .nfa_size_limit(Some(config.max_memory))
    }

    /// The automaton over `nfa`, its start state computed.
    fn over(nfa: NFA, config: DfaConfig) -> Result<Option<LazyDfa>, IndexError> {
        let anchors = LookSet::empty().insert(Look::Start).insert(Look::End);
        if !nfa.look_set_any().subtract(anchors).is_empty() {
            return Ok(None);
        }
        let (classes, reps) = crate::automaton::class_map(nfa.byte_classes());
        let mut sizes = vec![0usize; reps.len()];
        for &c in &classes {
            sizes[c as usize] += 1;
        }
        let single = sizes.iter().map(|&n| n == 1).collect();
        let mut table = Table {
            stride: reps.len(),
            marks: vec![0; 2 * nfa.states().len()],
            seeds: vec![nfa.start_anchored()],
            ..Table::default()
        };
        let live = co_reachable(&nfa);
        let mut dfa = LazyDfa {
            nfa,
            live,
            classes,
            reps,
            single,
            config,
            table: Mutex::default(),
        };
        dfa.closure(&mut table, true);
        if table.set.is_empty() {
            return Err(IndexError::Empty);
        }
        if dfa.intern(&mut table) == ByteDfa::DEAD {
            return Err(IndexError::TooLarge {
                limit: if dfa.max_states() == 0 {
                    "states"
                } else {
                    "memory"
                },
                detail: "the DFA's start state alone exceeds the limits".into(),
            });
        }
        dfa.table = Mutex::new(table);
        Ok(Some(dfa))
    }

    /// The start state.
    pub(crate) fn start(&self) -> StateId {
        0
    }

    /// The table, locked (a poisoned lock is taken over: the table is never left half-written).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The table, locked, unless another thread holds it now.
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, Table>> {
        match self.table.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The class map, for walkers that hold the lock.
    pub(crate) fn classes(&self) -> &[u8; 256] {
        &self.classes
    }

    /// The state after `byte` in `state`, computing it if needed.
    pub(crate) fn next(&self, table: &mut Table, state: StateId, byte: u8) -> StateId {
        let class = self.classes[byte as usize] as usize;
        self.next_class(table, state, class)
    }

    /// The state after any byte of `class` in `state`, computing it if needed.
    #[inline]
    pub(crate) fn next_class(&self, table: &mut Table, state: StateId, class: usize) -> StateId {
        let t = table.trans[state as usize * table.stride + class];
        if t != UNKNOWN {
            return t;
        }
        self.compute(table, state, class)
    }

    /// The bytes that lead from `state` to a live state, computing its transitions if
    /// needed (once per state: the answer is kept).
    pub(crate) fn next_bytes(&self, table: &mut Table, state: StateId) -> NextBytes {
        match table.next_bytes.get(state as usize) {
            None => return NextBytes::None,
            Some(0) => {}
            Some(&known) => return decode_next_bytes(known),
        }
        let mut found = NextBytes::None;
        for class in 0..self.reps.len() {
            if self.next_class(table, state, class) == ByteDfa::DEAD {
                continue;
            }
            found = if self.single[class] {
                found.with(self.reps[class])
            } else {
                NextBytes::Many
            };
            if found == NextBytes::Many {
                break;
            }
        }
        if let Some(slot) = table.next_bytes.get_mut(state as usize) {
            *slot = match found {
                NextBytes::None => 1,
                NextBytes::Many => 2,
                NextBytes::One(b) => 3 + b as u16,
            };
        }
        found
    }

    /// Whether the text read up to `state` is a full match.
    pub(crate) fn is_accepting(&self, state: StateId) -> bool {
        self.lock().is_accepting(state)
    }

    /// Whether `input` matches the regex in full.
    #[cfg(test)]
    pub(crate) fn matches(&self, input: &[u8]) -> bool {
        let mut table = self.lock();
        let mut s = self.start();
        for &b in input {
            s = self.next(&mut table, s, b);
            if s == ByteDfa::DEAD {
                return false;
            }
        }
        table.accepting[s as usize]
    }

    /// States determinized so far.
    pub(crate) fn state_count(&self) -> usize {
        self.lock().accepting.len()
    }

    /// Number of states determinized so far, read under a lock the caller holds.
    pub(crate) fn state_count_locked(&self, table: &Table) -> usize {
        table.accepting.len()
    }

    /// The most states the table may grow to (the index sizes its slots by it).
    pub(crate) fn max_states(&self) -> usize {
        self.config.max_states.min(MAX_STATES)
    }

    /// Approximate heap memory: the NFA and what has been determinized.
    pub(crate) fn memory_usage(&self) -> usize {
        self.nfa.memory_usage() + self.lock().memory
    }

    /// Whether a limit stopped the table from growing (the states beyond it read as dead, so
    /// what the automaton still allows matches the regex, but some matches are cut off).
    pub(crate) fn is_full(&self) -> bool {
        self.lock().full
    }

    /// Computes the transition of `state` on `class`.
    #[cold]
    fn compute(&self, table: &mut Table, state: StateId, class: usize) -> StateId {
        let byte = self.reps[class];
        let mut seeds = std::mem::take(&mut table.seeds);
        seeds.clear();
        for &id in table.sets[state as usize].iter() {
            if id == ACCEPT {
                break;
            }
            let next = match self.nfa.state(StateID::new_unchecked(id as usize)) {
                State::ByteRange { trans } => trans.matches_byte(byte).then_some(trans.next),
                State::Sparse(sparse) => sparse.matches_byte(byte),
                State::Dense(dense) => dense.matches_byte(byte),
                _ => None,
            };
            seeds.extend(next);
        }
        table.seeds = seeds;
        let t = if table.seeds.is_empty() {
            ByteDfa::DEAD
        } else {
            self.closure(table, false);
            if table.set.is_empty() {
                ByteDfa::DEAD
            } else {
                self.intern(table)
            }
        };
        let stride = table.stride;
        table.trans[state as usize * stride + class] = t;
        t
    }

    /// The epsilon closure of `table.seeds` into `table.set`: the NFA states that read a byte,
    /// sorted, then [`ACCEPT`] if the match state is reached. `at_start`: the closure of the
    /// start, where `^` holds.
    fn closure(&self, table: &mut Table, at_start: bool) {
        table.stamp = table.stamp.wrapping_add(1);
        if table.stamp == 0 {
            table.marks.fill(0);
            table.stamp = 1;
        }
        let stamp = table.stamp;
        table.set.clear();
        table.stack.clear();
        for i in (0..table.seeds.len()).rev() {
            let seed = table.seeds[i];
            table.stack.push((seed, false));
        }
        let mut accepting = false;
        while let Some((id, end)) = table.stack.pop() {
            let mark = &mut table.marks[2 * id.as_usize() + end as usize];
            if *mark == stamp {
                continue;
            }
            *mark = stamp;
            match self.nfa.state(id) {
                State::ByteRange { .. } | State::Sparse(_) | State::Dense(_) => {
                    // After the end of the input no byte can be read; a state that cannot
                    // reach the match is left out, so that no DFA state is a dead end.
                    if !end && self.live[id.as_usize()] {
                        table.set.push(id.as_u32());
                    }
                }
                State::Match { .. } => accepting = true,
                State::Fail => {}
                State::Union { alternates } => {
                    table
                        .stack
                        .extend(alternates.iter().rev().map(|&a| (a, end)));
                }
                State::BinaryUnion { alt1, alt2 } => {
                    table.stack.push((*alt2, end));
                    table.stack.push((*alt1, end));
                }
                State::Capture { next, .. } => table.stack.push((*next, end)),
                State::Look { look, next } => match look {
                    Look::Start if at_start => table.stack.push((*next, end)),
                    Look::End => table.stack.push((*next, true)),
                    // `^` past the start; other assertions never get here (see `build`).
                    _ => {}
                },
            }
        }
        table.set.sort_unstable();
        if accepting {
            table.set.push(ACCEPT);
        }
    }

    /// The state of `table.set`, added if new (or [`ByteDfa::DEAD`] once the table is full).
    fn intern(&self, table: &mut Table) -> StateId {
        if let Some(&id) = table.ids.get(table.set.as_slice()) {
            return id;
        }
        let row = table.stride * 4 + 1;
        let bytes = row + 2 * table.set.len() * 4 + 48;
        if table.accepting.len() >= self.max_states()
            || table.memory + bytes > self.config.max_memory
        {
            table.full = true;
            return ByteDfa::DEAD;
        }
        let id = table.accepting.len() as StateId;
        let key: Arc<[u32]> = table.set.as_slice().into();
        table.accepting.push(key.last() == Some(&ACCEPT));
        table.next_bytes.push(0);
        table.sets.push(key.clone());
        table.ids.insert(key, id);
        let stride = table.stride;
        table.trans.resize(table.trans.len() + stride, UNKNOWN);
        table.memory += bytes;
        id
    }
}

/// The [`NextBytes`] a [`Table`] keeps in its encoding (not 0, which means unknown).
fn decode_next_bytes(code: u16) -> NextBytes {
    match code {
        1 => NextBytes::None,
        2 => NextBytes::Many,
        c => NextBytes::One((c - 3) as u8),
    }
}

/// Which NFA states can still reach the match state, over paths that respect the anchors: no
/// byte after `$`, and no `^` after a byte. (`^` is only ever crossed in the start closure,
/// before any byte state; whether a byte state is live is what the closures need.) Found
/// backwards from the match states over nodes `(state, after $)`.
fn co_reachable(nfa: &NFA) -> Vec<bool> {
    let n = nfa.states().len();
    let node = |id: StateID, end: bool| (2 * id.as_usize() + end as usize) as u32;
    // The edges as (to, from), then grouped by `to` (one allocation, not one per node).
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(2 * n);
    let mut live = vec![false; 2 * n];
    let mut stack = Vec::new();
    for (i, state) in nfa.states().iter().enumerate() {
        let id = StateID::new_unchecked(i);
        for end in [false, true] {
            let from = node(id, end);
            match state {
                State::ByteRange { trans } if !end => edges.push((node(trans.next, false), from)),
                State::Sparse(sparse) if !end => edges.extend(
                    sparse
                        .transitions
                        .iter()
                        .map(|t| (node(t.next, false), from)),
                ),
                State::Dense(dense) if !end => edges.extend(
                    dense
                        .transitions
                        .iter()
                        .filter(|&&t| t != StateID::ZERO)
                        .map(|&t| (node(t, false), from)),
                ),
                State::Union { alternates } => {
                    edges.extend(alternates.iter().map(|&a| (node(a, end), from)))
                }
                State::BinaryUnion { alt1, alt2 } => {
                    edges.extend([(node(*alt1, end), from), (node(*alt2, end), from)])
                }
                State::Capture { next, .. } => edges.push((node(*next, end), from)),
                State::Look {
                    look: Look::End,
                    next,
                } => edges.push((node(*next, true), from)),
                State::Match { .. } => {
                    live[from as usize] = true;
                    stack.push(from as usize);
                }
                _ => {}
            }
        }
    }
    // `sources[start[x]..start[x + 1]]`: the nodes with an edge to `x`.
    let mut start = vec![0u32; 2 * n + 1];
    for &(to, _) in &edges {
        start[to as usize + 1] += 1;
    }
    for x in 0..2 * n {
        start[x + 1] += start[x];
    }
    let mut fill = start.clone();
    let mut sources = vec![0u32; edges.len()];
    for &(to, from) in &edges {
        sources[fill[to as usize] as usize] = from;
        fill[to as usize] += 1;
    }
    while let Some(x) = stack.pop() {
        for &p in &sources[start[x] as usize..start[x + 1] as usize] {
            if !live[p as usize] {
                live[p as usize] = true;
                stack.push(p as usize);
            }
        }
    }
    (0..n).map(|i| live[2 * i]).collect()
}

impl Table {
    /// Whether `state` is accepting (`false` for ids that are not states).
    pub(crate) fn is_accepting(&self, state: StateId) -> bool {
        self.accepting.get(state as usize).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lazy(re: &str) -> LazyDfa {
        LazyDfa::build(re, DfaConfig::default()).unwrap().unwrap()
    }

    #[test]
    fn agrees_with_the_full_dfa() {
        let cases: &[(&str, &[&str])] = &[
            (
                r#"\{"a":(?:0|[1-9][0-9]{0,3}),"b":"[^"\\\x00-\x1F]{0,4}"\}"#,
                &[
                    r#"{"a":12,"b":"é😀"}"#,
                    r#"{"a":012,"b":""}"#,
                    r#"{"a":1,"b":"xxxxx"}"#,
                ],
            ),
            (r"(?:日本|語)+x?", &["日本語", "日", "語x", "x", ""]),
            (r"^ab$|c", &["ab", "c", "abc", ""]),
            (r"a*", &["", "aaa", "b"]),
            (r"(a)|(b)c", &["a", "bc", "b"]),
        ];
        for (re, inputs) in cases {
            let full = ByteDfa::new(re).unwrap();
            let lazy = lazy(re);
            for input in inputs.iter() {
                assert_eq!(
                    lazy.matches(input.as_bytes()),
                    full.matches(input.as_bytes()),
                    "{re} on {input:?}"
                );
            }
            // Every document the full DFA samples matches lazily too.
            for seed in 0..50 {
                let doc = full.sample(seed, 64);
                assert!(lazy.matches(&doc), "{re}: {doc:?}");
            }
        }
    }

    #[test]
    fn no_state_is_a_dead_end() {
        // Paths into an empty class, or through `$` to more bytes, are cut off as in the full
        // DFA: after "x" the only way on is "y"; `[^\s\S]` or a mid-pattern `$` alone match
        // nothing.
        for re in [r"x[a-z]*[^\s\S]|xy", r"x[a-z]*$z|xy", r"ab$c|xy"] {
            let lazy = lazy(re);
            let mut table = lazy.lock();
            let x = lazy.next(&mut table, 0, b'x');
            assert_ne!(x, ByteDfa::DEAD, "{re}");
            assert_eq!(lazy.next(&mut table, x, b'a'), ByteDfa::DEAD, "{re}");
            let y = lazy.next(&mut table, x, b'y');
            assert!(table.is_accepting(y), "{re}");
            assert_eq!(lazy.next(&mut table, 0, b'a'), ByteDfa::DEAD, "{re}");
        }
        for re in [r"a[a-z][^\s\S]", r"a$b"] {
            assert!(matches!(
                LazyDfa::build(re, DfaConfig::default()),
                Err(IndexError::Empty)
            ));
            assert!(matches!(ByteDfa::new(re), Err(IndexError::Empty)));
        }
    }

    #[test]
    fn a_start_state_over_the_limits_is_an_error() {
        let config = DfaConfig {
            max_states: 0,
            ..DfaConfig::default()
        };
        assert!(matches!(
            LazyDfa::build("abc", config),
            Err(IndexError::TooLarge { .. })
        ));
    }

    #[test]
    fn states_are_computed_on_demand() {
        let lazy = lazy(r"[a-z]{0,40}");
        assert_eq!(lazy.state_count(), 1);
        assert!(lazy.matches(b"abc"));
        assert_eq!(lazy.state_count(), 4);
    }

    #[test]
    fn word_boundaries_are_left_to_the_full_dfa() {
        assert!(
            LazyDfa::build(r"\bab", DfaConfig::default())
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            LazyDfa::build(r"[^\s\S]", DfaConfig::default()),
            Err(IndexError::Empty)
        ));
        assert!(matches!(
            LazyDfa::build(r"a(", DfaConfig::default()),
            Err(IndexError::Regex(_))
        ));
    }

    #[test]
    fn a_full_table_cuts_matches_off_but_never_allows_more() {
        let config = DfaConfig {
            max_states: 3,
            ..DfaConfig::default()
        };
        let lazy = LazyDfa::build(r"[a-z]{0,40}", config).unwrap().unwrap();
        assert!(lazy.matches(b"ab"));
        assert!(!lazy.matches(b"abc"));
        assert!(lazy.is_full());
    }
}
