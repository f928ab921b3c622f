//! The per-request cursor over a shared [`Index`].
//!
//! A [`Guide`] is a state and a history over an `Arc<Index>`: creating, cloning and advancing
//! it costs next to nothing, and it works the same over an eager and a lazy index (a lazy one
//! computes the states this guide visits on first use).

use std::sync::Arc;

use crate::{Index, IndexError, StateId};

/// Where one generation stands in an [`Index`].
#[derive(Debug, Clone)]
pub struct Guide {
    index: Arc<Index>,
    state: StateId,
    history: Vec<StateId>,
}

impl Guide {
    /// A guide at the start state of `index`.
    pub fn new(index: Arc<Index>) -> Self {
        let state = index.start();
        Guide {
            index,
            state,
            history: Vec::new(),
        }
    }

    /// The index this guide walks.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The current state ([`Index::FINISHED`] once EOS was consumed).
    pub fn state(&self) -> StateId {
        self.state
    }

    /// The tokens allowed now, sorted by id; EOS included when the text is a full match.
    pub fn allowed_tokens(&self) -> &[u32] {
        self.index.allowed_tokens(self.state)
    }

    /// The allowed tokens as a bitset over the vocabulary (bit `t % 64` of word `t / 64`).
    pub fn mask(&self) -> &[u64] {
        self.index.mask(self.state)
    }

    /// Whether `token` is allowed now.
    pub fn is_allowed(&self, token: u32) -> bool {
        self.index.is_allowed(self.state, token)
    }

    /// Consumes `token`. A token not allowed here is an error and leaves the guide unchanged.
    pub fn advance(&mut self, token: u32) -> Result<(), IndexError> {
        let next = self
            .index
            .next_state(self.state, token)
            .ok_or(IndexError::TokenNotAllowed {
                token,
                state: self.state,
            })?;
        self.history.push(self.state);
        self.state = next;
        Ok(())
    }

    /// Appends to `out` the bytes every continuation from here starts with (at most `max`),
    /// stopping where the regex allows a choice of bytes or a full match ends it (EOS is a
    /// choice there): see [`Index::forced_bytes`]. A decoder may append them without
    /// sampling. Nothing once EOS was consumed.
    pub fn forced_bytes(&self, max: usize, out: &mut Vec<u8>) {
        self.index.forced_bytes(self.state, max, out);
    }

    /// Whether EOS is allowed now (the text so far is a full match).
    pub fn accepts_eos(&self) -> bool {
        self.index.is_accepting(self.state) && !self.index.vocabulary().eos().is_empty()
    }

    /// Whether generation is over: EOS was consumed, or the text is a full match that no
    /// token can extend.
    pub fn is_finished(&self) -> bool {
        // In an accepting state every EOS token is allowed: only they are when the counts agree.
        self.state == Index::FINISHED
            || (self.index.is_accepting(self.state)
                && self.index.allowed_count(self.state) == self.index.vocabulary().eos().len())
    }

    /// The bytes of a shortest text that completes a full match from here (empty when the
    /// text so far is one); `None` once EOS was consumed. See [`Index::shortest_completion`].
    pub fn shortest_completion(&self) -> Result<Option<Vec<u8>>, IndexError> {
        self.index.shortest_completion(self.state)
    }

    /// Number of tokens consumed (and not rolled back).
    pub fn len(&self) -> usize {
        self.history.len()
    }

    /// Whether no token was consumed.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// Undoes the last `n` tokens. Asking for more than were consumed is an error and
    /// leaves the guide unchanged.
    pub fn rollback(&mut self, n: usize) -> Result<(), IndexError> {
        let available = self.history.len();
        if n > available {
            return Err(IndexError::Rollback {
                requested: n,
                available,
            });
        }
        if n > 0 {
            self.state = self.history[available - n];
            self.history.truncate(available - n);
        }
        Ok(())
    }

    /// Back to the start state, history cleared.
    pub fn reset(&mut self) {
        self.state = self.index.start();
        self.history.clear();
    }
}
