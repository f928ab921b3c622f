//! The byte-level DFA: a regex compiled by `regex-automata`, re-laid as a compact table.
//!
//! `regex-automata` determinizes the regex (anchored, all matches kept, so a full-match check
//! is exact). We then walk the reachable states once, number them densely, and drop every
//! state from which no accepting state can be reached: in the table a transition is either to
//! a live state or to [`ByteDfa::DEAD`], so a walker can never paint itself into a corner.

use std::collections::{HashMap, VecDeque};

use regex_automata::dfa::{Automaton, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

use crate::IndexError;

/// A state of a [`ByteDfa`].
pub type StateId = u32;

/// Limits on building a [`ByteDfa`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DfaConfig {
    /// Most live states the table may have.
    pub max_states: usize,
    /// Most bytes `regex-automata` may use for the NFA and for determinization.
    pub max_memory: usize,
}

impl Default for DfaConfig {
    fn default() -> Self {
        DfaConfig {
            max_states: 1 << 20,
            max_memory: 512 << 20,
        }
    }
}

/// The error of a `regex-automata` build of `regex`: a regex that does not parse (with
/// regex-syntax's reason and where in the regex), or a limit hit.
pub(crate) fn build_error(regex: &str, error: &(dyn std::error::Error + 'static)) -> IndexError {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(syntax) = e.downcast_ref::<regex_syntax::Error>() {
            return IndexError::Regex(syntax_message(regex, syntax));
        }
        cause = e.source();
    }
    let message = error.to_string();
    if message.contains("limit") || message.contains("exceeded") {
        IndexError::TooLarge {
            limit: "memory",
            detail: message,
        }
    } else {
        IndexError::Regex(message)
    }
}

/// One line saying why regex-syntax refuses `regex` and at which bytes, with those bytes (at
/// most 40 characters of them).
fn syntax_message(regex: &str, error: &regex_syntax::Error) -> String {
    let (reason, span) = match error {
        regex_syntax::Error::Parse(e) => (e.kind().to_string(), e.span()),
        regex_syntax::Error::Translate(e) => (e.kind().to_string(), e.span()),
        other => return other.to_string().replace('\n', " "),
    };
    let (start, end) = (span.start.offset, span.end.offset);
    let snippet: String = regex
        .get(start..end)
        .unwrap_or("")
        .chars()
        .take(40)
        .collect();
    format!("{reason} at bytes {start}..{end} (`{snippet}`)")
}

/// The class of each byte, and one byte of each class (classes are numbered in byte order).
pub(crate) fn class_map(
    classes: &regex_automata::util::alphabet::ByteClasses,
) -> ([u8; 256], Vec<u8>) {
    let mut map = [0u8; 256];
    let mut reps = Vec::new();
    for b in 0..=255u8 {
        let c = classes.get(b);
        map[b as usize] = c;
        if c as usize == reps.len() {
            reps.push(b);
        }
    }
    (map, reps)
}

/// The bytes that can follow a state of an automaton without leaving every match: what a
/// decoder needs to tell a choice from a forced continuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextBytes {
    /// No byte (the match cannot go on).
    None,
    /// Exactly this byte.
    One(u8),
    /// Two bytes or more.
    Many,
}

impl NextBytes {
    /// Adds one more live byte to what was found so far.
    #[inline]
    pub(crate) fn with(self, byte: u8) -> NextBytes {
        match self {
            NextBytes::None => NextBytes::One(byte),
            NextBytes::One(b) if b == byte => self,
            _ => NextBytes::Many,
        }
    }

    /// What either of two sets of bytes allows: their union.
    pub fn union(self, other: NextBytes) -> NextBytes {
        match other {
            NextBytes::None => self,
            NextBytes::One(b) => self.with(b),
            NextBytes::Many => NextBytes::Many,
        }
    }
}

/// A byte-level DFA over live states only. Immutable and cheap to share.
#[derive(Debug, Clone)]
pub struct ByteDfa {
    classes: [u8; 256],
    stride: usize,
    table: Vec<StateId>,
    accepting: Vec<bool>,
    distance: Vec<u32>,
}

impl ByteDfa {
    /// The transition target meaning "no match is possible any more".
    pub const DEAD: StateId = StateId::MAX;

    /// Builds the DFA for `regex` (matched against the whole input) with default limits.
    pub fn new(regex: &str) -> Result<Self, IndexError> {
        Self::with_config(regex, DfaConfig::default())
    }

    /// Builds the DFA for `regex` with explicit limits.
    pub fn with_config(regex: &str, config: DfaConfig) -> Result<Self, IndexError> {
        let hir = regex_syntax::parse(regex).map_err(|e| build_error(regex, &e))?;
        Self::with_config_hir(&hir, config)
    }

    /// Builds the DFA for an already parsed regex with explicit limits (nothing is parsed
    /// again, so a regex nested deeper than the parser allows, as lowering can build one,
    /// still builds).
    pub fn with_config_hir(
        hir: &regex_syntax::hir::Hir,
        config: DfaConfig,
    ) -> Result<Self, IndexError> {
        let nfa = regex_automata::nfa::thompson::Compiler::new()
            .configure(
                regex_automata::nfa::thompson::Config::new()
                    .nfa_size_limit(Some(config.max_memory)),
            )
            .build_from_hir(hir)
            .map_err(|e| build_error(&hir.to_string(), &e))?;
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(regex_automata::dfa::StartKind::Anchored)
                    .minimize(false)
                    .byte_classes(true)
                    .determinize_size_limit(Some(config.max_memory))
                    .dfa_size_limit(Some(config.max_memory)),
            )
            .build_from_nfa(&nfa)
            .map_err(|e| build_error(&hir.to_string(), &e))?;
        Self::explore(dfa, config)
    }

    /// The table of `dfa`'s states reachable from its start, within `config`'s limits.
    fn explore(dfa: dense::DFA<Vec<u32>>, config: DfaConfig) -> Result<Self, IndexError> {
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| IndexError::Regex(e.to_string()))?;

        let (classes, reps) = class_map(dfa.byte_classes());
        let stride = reps.len();

        // Explore the reachable states breadth-first from the start state.
        let mut ids: HashMap<StateID, StateId> = HashMap::new();
        let mut order: Vec<StateID> = Vec::new();
        let mut queue = VecDeque::new();
        let mut raw: Vec<StateId> = Vec::new();
        let mut accepting = Vec::new();
        ids.insert(start, 0);
        order.push(start);
        queue.push_back(start);
        while let Some(s) = queue.pop_front() {
            accepting.push(dfa.is_match_state(dfa.next_eoi_state(s)));
            for &b in &reps {
                let t = dfa.next_state(s, b);
                if dfa.is_dead_state(t) || dfa.is_quit_state(t) {
                    raw.push(Self::DEAD);
                    continue;
                }
                let next_id = ids.len() as StateId;
                let id = *ids.entry(t).or_insert_with(|| {
                    order.push(t);
                    queue.push_back(t);
                    next_id
                });
                raw.push(id);
            }
            if ids.len() > config.max_states {
                return Err(IndexError::TooLarge {
                    limit: "states",
                    detail: format!("more than {} DFA states", config.max_states),
                });
            }
        }
        let n = order.len();

        // Distance to the nearest accepting state, by reverse breadth-first search.
        let mut reverse: Vec<Vec<StateId>> = vec![Vec::new(); n];
        for s in 0..n {
            for &t in &raw[s * stride..(s + 1) * stride] {
                if t != Self::DEAD {
                    reverse[t as usize].push(s as StateId);
                }
            }
        }
        let mut distance = vec![u32::MAX; n];
        let mut queue: VecDeque<usize> = VecDeque::new();
        for (s, &acc) in accepting.iter().enumerate() {
            if acc {
                distance[s] = 0;
                queue.push_back(s);
            }
        }
        while let Some(s) = queue.pop_front() {
            for &p in &reverse[s] {
                if distance[p as usize] == u32::MAX {
                    distance[p as usize] = distance[s] + 1;
                    queue.push_back(p as usize);
                }
            }
        }
        if distance[0] == u32::MAX {
            return Err(IndexError::Empty);
        }
        // Renumber live states densely (the start state stays 0).
        let mut live_id = vec![Self::DEAD; n];
        let mut next = 0;
        for s in 0..n {
            if distance[s] != u32::MAX {
                live_id[s] = next;
                next += 1;
            }
        }
        let live = next as usize;
        let mut table = Vec::with_capacity(live * stride);
        let mut acc = Vec::with_capacity(live);
        let mut dist = Vec::with_capacity(live);
        for s in 0..n {
            if distance[s] == u32::MAX {
                continue;
            }
            for &t in &raw[s * stride..(s + 1) * stride] {
                table.push(if t == Self::DEAD {
                    Self::DEAD
                } else {
                    live_id[t as usize]
                });
            }
            acc.push(accepting[s]);
            dist.push(distance[s]);
        }
        Ok(ByteDfa {
            classes,
            stride,
            table,
            accepting: acc,
            distance: dist,
        })
    }

    /// The class map, the transition table (row-major, `class_count` columns) and the stride,
    /// for the index's inner loop.
    pub(crate) fn raw(&self) -> (&[u8; 256], &[StateId], usize) {
        (&self.classes, &self.table, self.stride)
    }

    /// The start state.
    pub fn start(&self) -> StateId {
        0
    }

    /// Number of live states.
    pub fn state_count(&self) -> usize {
        self.accepting.len()
    }

    /// Number of byte equivalence classes (bytes in one class behave alike everywhere).
    pub fn class_count(&self) -> usize {
        self.stride
    }

    /// The equivalence class of a byte.
    pub fn class_of(&self, byte: u8) -> u8 {
        self.classes[byte as usize]
    }

    /// The state after reading `byte` in `state`, or [`ByteDfa::DEAD`].
    #[inline]
    pub fn next(&self, state: StateId, byte: u8) -> StateId {
        self.table[state as usize * self.stride + self.classes[byte as usize] as usize]
    }

    /// Whether the input read so far is a full match.
    pub fn is_accepting(&self, state: StateId) -> bool {
        self.accepting[state as usize]
    }

    /// The bytes that lead from `state` to a live state.
    pub fn next_bytes(&self, state: StateId) -> NextBytes {
        let mut found = NextBytes::None;
        for b in 0..=255u8 {
            if self.next(state, b) != Self::DEAD {
                found = found.with(b);
                if found == NextBytes::Many {
                    break;
                }
            }
        }
        found
    }

    /// The fewest bytes that lead from `state` to an accepting state.
    pub fn distance_to_accept(&self, state: StateId) -> u32 {
        self.distance[state as usize]
    }

    /// Approximate heap memory of the table, in bytes.
    pub fn memory_usage(&self) -> usize {
        self.table.len() * 4 + self.accepting.len() * 5 + 256
    }

    /// Whether `input` matches the regex in full.
    pub fn matches(&self, input: &[u8]) -> bool {
        let mut s = self.start();
        for &b in input {
            s = self.next(s, b);
            if s == Self::DEAD {
                return false;
            }
        }
        self.is_accepting(s)
    }

    /// Draws one full match by a seeded random walk over the table.
    ///
    /// At each state the walk picks a byte class uniformly among those that stay live, then a
    /// byte of that class; in an accepting state it stops with a probability that grows with
    /// the length. Past `soft_limit` bytes it only takes steps that bring an accepting state
    /// closer, so it always ends. Equal seeds give equal results.
    pub fn sample(&self, seed: u64, soft_limit: usize) -> Vec<u8> {
        let mut rng = SplitMix64(seed ^ 0x9E37_79B9_7F4A_7C15);
        let mut out = Vec::new();
        let mut s = self.start();
        let mut choices: Vec<u8> = Vec::with_capacity(self.stride);
        loop {
            if self.is_accepting(s) {
                let p_stop = 0.1 + 0.9 * (out.len() as f64 / soft_limit.max(1) as f64).min(1.0);
                let has_next = self.table[s as usize * self.stride..][..self.stride]
                    .iter()
                    .any(|&t| t != Self::DEAD);
                if !has_next || rng.unit() < p_stop {
                    return out;
                }
            }
            choices.clear();
            let here = self.distance[s as usize];
            for c in 0..self.stride {
                let t = self.table[s as usize * self.stride + c];
                if t == Self::DEAD {
                    continue;
                }
                if out.len() >= soft_limit && self.distance[t as usize] >= here {
                    continue;
                }
                choices.push(c as u8);
            }
            let Some(&class) = choices.get(rng.below(choices.len())) else {
                return out;
            };
            let members: Vec<u8> = (0..=255u8)
                .filter(|&b| self.classes[b as usize] == class)
                .collect();
            let byte = members[rng.below(members.len())];
            out.push(byte);
            s = self.next(s, byte);
        }
    }
}

/// A small, fast, seedable generator (SplitMix64), enough for sampling.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_match_semantics() {
        let dfa = ByteDfa::new("a|ab|abc").unwrap();
        for (s, m) in [
            ("a", true),
            ("ab", true),
            ("abc", true),
            ("abcd", false),
            ("", false),
        ] {
            assert_eq!(dfa.matches(s.as_bytes()), m, "{s}");
        }
    }

    #[test]
    fn dead_ends_are_pruned() {
        // `b` leads nowhere useful: after it no accepting state is reachable.
        let dfa = ByteDfa::new("a+|b[^\\x00-\\x{10FFFF}]").unwrap();
        assert_eq!(dfa.next(dfa.start(), b'b'), ByteDfa::DEAD);
        assert!(matches!(
            ByteDfa::new("[^\\x00-\\x{10FFFF}]"),
            Err(IndexError::Empty)
        ));
    }

    #[test]
    fn samples_always_match_and_are_reproducible() {
        let dfa = ByteDfa::new(r"(?:[a-z]+|[0-9]{2,5}|日本+)x?").unwrap();
        for seed in 0..200 {
            let s = dfa.sample(seed, 32);
            assert!(dfa.matches(&s), "{:?}", String::from_utf8_lossy(&s));
            assert!(std::str::from_utf8(&s).is_ok());
            assert_eq!(s, dfa.sample(seed, 32));
        }
    }

    #[test]
    fn limits_are_errors() {
        let tight = DfaConfig {
            max_states: 10,
            max_memory: 1 << 20,
        };
        assert!(matches!(
            ByteDfa::with_config("[a-z]{0,100}", tight),
            Err(IndexError::TooLarge {
                limit: "states",
                ..
            })
        ));
        assert!(matches!(
            ByteDfa::new("(unclosed"),
            Err(IndexError::Regex(_))
        ));
    }

    #[test]
    fn a_regex_that_does_not_parse_says_where_and_why() {
        for (regex, why, at) in [
            ("ab(cd", "unclosed group", "bytes 2..3"),
            ("a{3,1}", "invalid repetition count range", "bytes 1..6"),
        ] {
            let message = match ByteDfa::new(regex) {
                Err(IndexError::Regex(m)) => m,
                other => panic!("{regex}: {other:?}"),
            };
            assert!(message.contains(why), "{regex}: {message}");
            assert!(message.contains(at), "{regex}: {message}");
            assert!(!message.contains('\n'), "one line: {message}");
            let lazy = match crate::lazy::LazyDfa::build(regex, DfaConfig::default()) {
                Err(IndexError::Regex(m)) => m,
                other => panic!("{regex}: {:?}", other.map(|_| ())),
            };
            assert_eq!(lazy, message);
        }
    }

    /// A regex built as a HIR deeper than the parser's nesting limit (as lowering can build
    /// one) still builds, and a parsed one builds the same automaton as its text.
    #[test]
    fn a_dfa_builds_from_a_hir_nested_past_the_parsers_limit() {
        use regex_syntax::hir::{Hir, Repetition};
        let mut hir = Hir::literal(*b"z");
        for i in 0..400u32 {
            let byte = b'a' + (i % 26) as u8;
            hir = Hir::repetition(Repetition {
                min: 0,
                max: Some(1),
                greedy: true,
                sub: Box::new(Hir::concat(vec![Hir::literal([byte]), hir])),
            });
        }
        assert!(ByteDfa::new(&hir.to_string()).is_err());
        let dfa = ByteDfa::with_config_hir(&hir, DfaConfig::default()).unwrap();
        // Outermost first: the letters of i = 399 down to 0, then `z`.
        let mut whole: Vec<u8> = (0..400u32).rev().map(|i| b'a' + (i % 26) as u8).collect();
        whole.push(b'z');
        assert!(dfa.matches(b""));
        assert!(dfa.matches(&whole));
        assert!(dfa.matches(&whole[..7]));
        assert!(!dfa.matches(b"z"));
        assert!(!dfa.matches(&whole[1..]));
        let parsed = regex_syntax::parse("(?:ab|c)[0-9]{2,3}").unwrap();
        let from_hir = ByteDfa::with_config_hir(&parsed, DfaConfig::default()).unwrap();
        let from_text = ByteDfa::new("(?:ab|c)[0-9]{2,3}").unwrap();
        for text in [&b"ab12"[..], b"c123", b"c1", b"ab1234", b"b12"] {
            assert_eq!(from_hir.matches(text), from_text.matches(text), "{text:?}");
        }
    }
}
