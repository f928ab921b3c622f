//! Shortest completions: from a state of an [`Index`]'s byte automaton, the bytes of a
//! shortest text that ends in a full match.
//!
//! A breadth-first search over the automaton's states, one edge per byte class (each class
//! is represented by one of its bytes, printable ASCII first, so a completion reads well;
//! every byte of a class leads to the same state, so the choice never changes what is
//! matched). A lazy automaton determinizes the states the search reaches, so the search is
//! bounded ([`COMPLETION_SEARCH_STATES`]): past the bound it is an error, never a stall.

use std::collections::{HashMap, VecDeque};

use crate::index::Stepper;
use crate::{ByteDfa, Index, IndexError, StateId};

/// Most automaton states [`Index::shortest_completion`] visits before it gives up with
/// [`IndexError::TooLarge`] (`limit: "completion search"`).
pub const COMPLETION_SEARCH_STATES: usize = 1 << 16;

/// One byte of each class of `classes`: printable ASCII (`0x20..=0x7E`) where the class has
/// one, else its smallest byte.
pub(crate) fn representatives(classes: &[u8; 256]) -> Vec<u8> {
    let count = classes.iter().copied().max().map_or(0, |c| c as usize + 1);
    let mut reps: Vec<Option<u8>> = vec![None; count];
    let preferred = (0x20..=0x7Eu8).chain(0..0x20).chain(0x7F..=0xFF);
    for b in preferred {
        let slot = &mut reps[classes[b as usize] as usize];
        if slot.is_none() {
            *slot = Some(b);
        }
    }
    reps.into_iter().flatten().collect()
}

/// The search of [`Index::shortest_completion`] over a stepper of the automaton.
pub(crate) fn search(
    stepper: &mut Stepper<'_>,
    reps: &[u8],
    from: StateId,
    limit: usize,
) -> Result<Option<Vec<u8>>, IndexError> {
    if stepper.is_accepting(from) {
        return Ok(Some(Vec::new()));
    }
    // Where each visited state was first reached from: (previous state, byte).
    let mut parent: HashMap<StateId, (StateId, u8)> = HashMap::new();
    parent.insert(from, (from, 0));
    let mut queue = VecDeque::from([from]);
    while let Some(s) = queue.pop_front() {
        for &b in reps {
            let t = stepper.next(s, b);
            if t == ByteDfa::DEAD || parent.contains_key(&t) {
                continue;
            }
            parent.insert(t, (s, b));
            if stepper.is_accepting(t) {
                let mut bytes = Vec::new();
                let mut at = t;
                while at != from {
                    let (prev, byte) = parent[&at];
                    bytes.push(byte);
                    at = prev;
                }
                bytes.reverse();
                return Ok(Some(bytes));
            }
            if parent.len() > limit {
                return Err(IndexError::TooLarge {
                    limit: "completion search",
                    detail: format!(
                        "a shortest completion lies more than {limit} automaton states away"
                    ),
                });
            }
            queue.push_back(t);
        }
    }
    Ok(None)
}

impl Index {
    /// The bytes of a shortest text that, read from `state`, ends in a full match: empty
    /// where `state` accepts; `None` where no match can be reached ([`Index::FINISHED`], an
    /// id that is not a state). Searches at most [`COMPLETION_SEARCH_STATES`] states of the
    /// byte automaton (a lazy one determinizes those it reaches), past which it is
    /// [`IndexError::TooLarge`].
    ///
    /// The completion is a text of the regex's automaton: a vocabulary that cannot spell
    /// one of its bytes may have no tokens for it (see the crate docs on unspellable bytes).
    pub fn shortest_completion(&self, state: StateId) -> Result<Option<Vec<u8>>, IndexError> {
        self.shortest_completion_within(state, COMPLETION_SEARCH_STATES)
    }

    /// [`Index::shortest_completion`] with an explicit bound on the states searched.
    pub fn shortest_completion_within(
        &self,
        state: StateId,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, IndexError> {
        if state == Self::FINISHED {
            return Ok(None);
        }
        let reps = representatives(self.byte_classes());
        let mut stepper = self.stepper();
        if !stepper.is_state(state) {
            return Ok(None);
        }
        search(&mut stepper, &reps, state, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IndexConfig, Vocabulary};

    fn vocab() -> Vocabulary {
        let tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        Vocabulary::new(tokens, vec![], []).unwrap()
    }

    /// Every string over `alphabet` of length up to `max`, shortest first.
    fn strings(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        let mut layer = vec![Vec::new()];
        for _ in 0..max {
            let mut next = Vec::new();
            for s in &layer {
                for &b in alphabet {
                    let mut t: Vec<u8> = s.clone();
                    t.push(b);
                    next.push(t);
                }
            }
            out.extend(next.iter().cloned());
            layer = next;
        }
        out
    }

    /// From the state after each prefix, the completion is accepted and no completion over
    /// the alphabet is shorter (a brute-force search), eager and lazy alike.
    #[test]
    fn completions_are_accepted_and_shortest() {
        let cases: &[(&str, &[u8])] = &[
            (r"ab(c|dd)e", b"abcde"),
            (r"a(b|cd)*e", b"abcde"),
            (r#"\{"x":(0|[1-9][0-9]*)(,"y":"[a-z]*")?\}"#, b"{}\"xy:,09a"),
            (r"(aa)+|b{3}", b"ab"),
        ];
        for &(re, alphabet) in cases {
            for lazy in [false, true] {
                let config = IndexConfig {
                    lazy,
                    ..IndexConfig::default()
                };
                let index = Index::with_config(re, &vocab(), config).unwrap();
                let dfa = ByteDfa::new(re).unwrap();
                for prefix in strings(alphabet, 4) {
                    let mut s = index.start();
                    for &b in &prefix {
                        s = index.next_byte(s, b);
                        if s == ByteDfa::DEAD {
                            break;
                        }
                    }
                    if s == ByteDfa::DEAD {
                        continue;
                    }
                    let completion = index.shortest_completion(s).unwrap().unwrap();
                    let mut text = prefix.clone();
                    text.extend(&completion);
                    assert!(dfa.matches(&text), "{re}: {text:?}");
                    let shorter = strings(alphabet, completion.len().saturating_sub(1))
                        .into_iter()
                        .filter(|c| c.len() < completion.len())
                        .find(|c| dfa.matches(&[&prefix[..], c].concat()));
                    assert_eq!(shorter, None, "{re} after {prefix:?}: {completion:?}");
                }
            }
        }
    }

    #[test]
    fn an_accepting_state_needs_nothing_and_the_end_has_no_completion() {
        let index = Index::lazy("a|abc", &vocab()).unwrap();
        let a = index.next_byte(index.start(), b'a');
        assert_eq!(index.shortest_completion(a).unwrap(), Some(Vec::new()));
        assert_eq!(
            index.shortest_completion(index.start()).unwrap(),
            Some(b"a".to_vec())
        );
        assert_eq!(index.shortest_completion(Index::FINISHED).unwrap(), None);
    }

    #[test]
    fn classes_are_spelled_in_printable_ascii_and_the_search_is_bounded() {
        let index = Index::lazy(r"[^a-z]x", &vocab()).unwrap();
        assert_eq!(
            index.shortest_completion(index.start()).unwrap(),
            Some(b" x".to_vec())
        );
        let far = Index::lazy(r"[a-z]{40}", &vocab()).unwrap();
        assert!(matches!(
            far.shortest_completion_within(far.start(), 10),
            Err(IndexError::TooLarge {
                limit: "completion search",
                ..
            })
        ));
        assert_eq!(
            far.shortest_completion(far.start())
                .unwrap()
                .map(|c| c.len()),
            Some(40)
        );
    }
}
