//! Plain string content: the tokens a JSON string's body can hold whatever surrounds them,
//! and the check that a lazy automaton's state allows all of them.
//!
//! Inside a string with a length bound (`"maxLength": 2000` is a body counted to 256
//! characters) every character read is a new DFA state, so every step of a lazy index would
//! walk the whole trie again to find a mask that is nearly the same each time. A *content
//! token* is one of at most [`CONTENT_LEN`] bytes of whole UTF-8 characters, none of them a
//! control character, `"`, `\` or DEL (most of a vocabulary). When every such string of up
//! to [`CONTENT_LEN`] bytes keeps a state alive and never reaches an accepting state, every
//! content token is allowed there and no accept point lies on their paths: the walk takes
//! them all at once (the vocabulary's content mask) and visits only the subtrees that hold
//! another token ([`crate::Trie`]'s `rest` flags). The check is memoized per (state, UTF-8
//! position) pair, so along a counted string each new state costs a few transitions, not a
//! walk of the trie.

use crate::{ByteDfa, StateId};

/// Longest content token, in bytes (longer ones are walked).
pub(crate) const CONTENT_LEN: u8 = 16;

/// Where a reader of content bytes stands inside a UTF-8 character: 0 at a character
/// boundary, else which continuation bytes may come ([`RANGES`]).
type Utf8 = u8;

/// The bytes each reader position takes, as ranges, and the position after each.
const RANGES: [&[(u8, u8, Utf8)]; 8] = [
    &[
        (0x20, 0x21, 0),
        (0x23, 0x5B, 0),
        (0x5D, 0x7E, 0),
        (0xC2, 0xDF, 1),
        (0xE0, 0xE0, 4),
        (0xE1, 0xEC, 2),
        (0xED, 0xED, 5),
        (0xEE, 0xEF, 2),
        (0xF0, 0xF0, 6),
        (0xF1, 0xF3, 3),
        (0xF4, 0xF4, 7),
    ],
    &[(0x80, 0xBF, 0)],
    &[(0x80, 0xBF, 1)],
    &[(0x80, 0xBF, 2)],
    &[(0xA0, 0xBF, 1)],
    &[(0x80, 0x9F, 1)],
    &[(0x90, 0xBF, 2)],
    &[(0x80, 0x8F, 2)],
];

/// The reader's position after `byte` (`None`: not content here).
fn step(at: Utf8, byte: u8) -> Option<Utf8> {
    RANGES
        .get(at as usize)?
        .iter()
        .find(|&&(from, to, _)| (from..=to).contains(&byte))
        .map(|&(_, _, next)| next)
}

/// Whether `token` is a content token.
pub(crate) fn is_content(token: &[u8]) -> bool {
    !token.is_empty()
        && token.len() <= usize::from(CONTENT_LEN)
        && token.iter().try_fold(0, |at, &b| step(at, b)) == Some(0)
}

/// The transitions the check reads.
pub(crate) trait Transitions {
    /// The state after `byte` from `state` ([`ByteDfa::DEAD`] when none).
    fn next(&mut self, state: StateId, byte: u8) -> StateId;
    /// Whether `state` accepts.
    fn accepting(&mut self, state: StateId) -> bool;
    /// The byte class of `byte` (bytes of one class lead to the same state).
    fn class(&self, byte: u8) -> u8;
}

/// Memoized answers of [`Horizons::allows_all`]: per (state, reader position), bounds on the
/// length of content strings that are safe from it (alive and never accepting).
#[derive(Debug, Default)]
pub(crate) struct Horizons {
    /// (lowest length known safe, highest length that may be safe).
    known: foldhash::HashMap<(StateId, Utf8), (u8, u8)>,
}

impl Horizons {
    /// Whether every content string of up to [`CONTENT_LEN`] bytes read from `state` keeps
    /// the automaton alive and never reaches an accepting state.
    pub(crate) fn allows_all(&mut self, dfa: &mut impl Transitions, state: StateId) -> bool {
        self.safe(dfa, state, 0, CONTENT_LEN)
    }

    /// Approximate heap bytes.
    pub(crate) fn memory_usage(&self) -> usize {
        self.known.capacity() * 16
    }

    /// Whether every content continuation of up to `need` bytes from (`state`, `at`) is safe.
    fn safe(&mut self, dfa: &mut impl Transitions, state: StateId, at: Utf8, need: u8) -> bool {
        if need == 0 {
            return true;
        }
        let (lo, hi) = self
            .known
            .get(&(state, at))
            .copied()
            .unwrap_or((0, u8::MAX));
        if lo >= need {
            return true;
        }
        if hi < need {
            return false;
        }
        let ok = RANGES[at as usize].iter().all(|&(from, to, after)| {
            let mut last = None;
            (from..=to).all(|b| {
                // Bytes of one class lead to the same state: the first of a run decides.
                let class = dfa.class(b);
                if last == Some(class) {
                    return true;
                }
                last = Some(class);
                let t = dfa.next(state, b);
                t != ByteDfa::DEAD && !dfa.accepting(t) && self.safe(dfa, t, after, need - 1)
            })
        });
        let bounds = self.known.entry((state, at)).or_insert((0, u8::MAX));
        if ok {
            bounds.0 = bounds.0.max(need);
        } else {
            bounds.1 = bounds.1.min(need - 1);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A string body counted to `max` bytes: states `0..=max` count, `"` leads to the
    /// accepting state `max + 1`; with `body_accepts`, every count accepts too.
    struct Counted {
        max: StateId,
        body_accepts: bool,
        steps: usize,
    }

    impl Transitions for Counted {
        fn next(&mut self, state: StateId, byte: u8) -> StateId {
            self.steps += 1;
            match byte {
                b'"' if state <= self.max => self.max + 1,
                b'"' | b'\\' | 0..0x20 | 0x7F => ByteDfa::DEAD,
                _ if state < self.max => state + 1,
                _ => ByteDfa::DEAD,
            }
        }

        fn accepting(&mut self, state: StateId) -> bool {
            state == self.max + 1 || (self.body_accepts && state <= self.max)
        }

        fn class(&self, byte: u8) -> u8 {
            match byte {
                b'"' => 0,
                b'\\' | 0..0x20 | 0x7F => 1,
                _ => 2,
            }
        }
    }

    #[test]
    fn a_count_with_room_for_the_longest_content_token_allows_them_all() {
        let mut dfa = Counted {
            max: 100,
            body_accepts: false,
            steps: 0,
        };
        let mut h = Horizons::default();
        for k in 0..=100 {
            assert_eq!(
                h.allows_all(&mut dfa, k),
                k + StateId::from(CONTENT_LEN) <= 100,
                "count {k}"
            );
        }
        // Memoized: asking again steps nothing.
        let steps = dfa.steps;
        assert!(h.allows_all(&mut dfa, 3));
        assert_eq!(dfa.steps, steps);
        // A body that may end anywhere has accept points on every path: never all at once.
        let mut open = Counted {
            max: 100,
            body_accepts: true,
            steps: 0,
        };
        assert!(!Horizons::default().allows_all(&mut open, 0));
    }

    #[test]
    fn content_tokens_are_whole_characters_without_quotes_escapes_or_controls() {
        for ok in [
            "hello",
            " world",
            "é",
            "日本",
            "🙂",
            "a'b",
            "0123456789abcdef",
        ] {
            assert!(is_content(ok.as_bytes()), "{ok:?}");
        }
        for no in ["a\"", "\\n", "a\nb", "\t", "\x7f", "0123456789abcdefg", ""] {
            assert!(!is_content(no.as_bytes()), "{no:?}");
        }
        // Parts of characters, overlong forms and surrogates are not content.
        for no in [
            &b"\xC3"[..],
            b"\xE6\x97",
            b"\xC0\xAF",
            b"\xED\xA0\x80",
            b"\xF4\x90\x80\x80",
        ] {
            assert!(!is_content(no), "{no:?}");
        }
    }
}
