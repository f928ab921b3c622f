//! Replies that end valid: near `max_tokens`, a structured reply is steered to the shortest
//! way to finish its constraint, so that it ends as a complete document
//! ([`crate::FinishReason::Stop`]) whenever its budget allows any.
//!
//! A *plan* is the tokens of a shortest completion of the constraint from where the reply
//! stands: the bytes of [`ConstraintGuide::shortest_completion`] (the DFA's or the grammar's
//! distance to an accepting state) as the model's tokenizer spells them (the vocabulary's
//! greedy spelling where the tokenizer's is not accepted, as for bytes that are not whole
//! UTF-8), checked by walking the guide through them, then EOS where the text could still
//! go on. `c` is its length.
//!
//! The rule keeps one invariant: after every token, a plan of at most the tokens left in
//! the budget exists. Up front, a request whose budget is below the plan from the start is
//! refused ([`EngineError::MaxTokensTooSmall`]). Then, after each sampled token:
//!
//! 1. the token is the plan's next one: the rest of the plan still fits;
//! 2. else, if `d + 1 <= left` (`d` the bytes of a shortest completion after the token,
//!    `left` the tokens left after it), it is kept: no token spells fewer than one byte, so
//!    a plan of at most `d` tokens plus EOS exists. This costs one search for the shortest
//!    completion (a DFA breadth-first search or the grammar's search over the parser's open
//!    items), no tokenizing, and is what every step far from the end pays;
//! 3. else (near the end) the plan after the token is built; the token is kept if it fits;
//! 4. else the token is replaced by the next token of the plan from before it (which fits
//!    by the invariant), and the reply follows that plan.
//!
//! So a token that raises `c` by more than one (opening a nested object with required
//! properties) is allowed while the budget has room for the larger completion, and replaced
//! once it has not. Only the token is replaced: the mask, the sampler and its random stream
//! are those of the step. Constraints composed with free text (segments, reasoning, tools in
//! `auto` mode) are not steered: their free text may end anywhere.

use formwork_index::Vocabulary;
use formwork_model::Tokenizer;

use crate::guide::{ConstraintGuide, GuideError};

/// The tokens of a shortest completion of `guide` from where it stands, checked by walking
/// the guide through them (and back): `None` where there is none the vocabulary spells, or
/// the constraint is not steered.
pub(crate) fn plan(
    guide: &mut ConstraintGuide,
    tokenizer: &Tokenizer,
    vocab: &Vocabulary,
) -> Result<Option<Vec<u32>>, GuideError> {
    let Some(bytes) = completion(guide) else {
        return Ok(None);
    };
    let spelled = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| tokenizer.encode(text, false).ok());
    for tokens in [spelled, vocab.tokenize_greedy(&bytes)]
        .into_iter()
        .flatten()
    {
        if let Some(plan) = walk(guide, tokens, vocab)? {
            return Ok(Some(plan));
        }
    }
    Ok(None)
}

/// Whether a plan from where `guide` stands surely fits `budget` tokens, known without
/// building it: its shortest completion is shorter than `budget` bytes, and every token
/// spells at least one byte (EOS after them makes `budget`). The check a request's budget
/// takes first, so that one far from its constraint's shortest reply is not tokenized and
/// walked on its way in.
pub(crate) fn surely_fits(guide: &ConstraintGuide, budget: usize) -> bool {
    completion(guide).is_some_and(|bytes| bytes.len() < budget)
}

/// The bytes of a shortest completion of `guide`; `None` where there is none, or its search
/// went past its bound (the reply is then not steered: logged, never an error of the
/// request).
fn completion(guide: &ConstraintGuide) -> Option<Vec<u8>> {
    guide.shortest_completion().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no shortest completion: the reply is not steered to end valid");
        None
    })
}

/// `tokens`, with EOS appended where the text after them may go on, if the guide takes them
/// all; the guide is left where it was.
fn walk(
    guide: &mut ConstraintGuide,
    mut tokens: Vec<u32>,
    vocab: &Vocabulary,
) -> Result<Option<Vec<u32>>, GuideError> {
    let mut taken = 0;
    for &t in &tokens {
        if guide.advance(t).is_err() {
            break;
        }
        taken += 1;
    }
    let whole = taken == tokens.len();
    let finished = guide.is_finished();
    guide.rollback(taken)?;
    if !whole {
        return Ok(None);
    }
    if !finished {
        let Some(&eos) = vocab.eos().first() else {
            return Ok(None);
        };
        tokens.push(eos);
    }
    Ok(Some(tokens))
}

/// One choice's steering state: the plan from where it stands, if one was built (kept
/// reversed: the next token last).
#[derive(Debug, Clone, Default)]
pub(crate) struct Steering {
    plan: Vec<u32>,
}

impl Steering {
    /// Whether the reply follows a plan (near the end of its budget). Jump-forward decoding
    /// waits while it does: forced tokens the plan did not spell could outgrow it. Far from
    /// the end (a shortest completion of `d` bytes with `d < left`) a jump is safe: the forced
    /// bytes `F` start every completion, so `d - |F| + 1` tokens finish the reply after it and
    /// the `k <= |F|` forced tokens leave `left - k >= d - |F| + 1`.
    pub(crate) fn follows_plan(&self) -> bool {
        !self.plan.is_empty()
    }

    /// The rule for `token`, just consumed by `guide`, with `left` tokens of budget after
    /// it: `None` to keep it, or the token to put in its place (the guide is then rolled
    /// back past `token`; the caller consumes the replacement unless it is EOS). Where no
    /// plan can be built, the token is kept.
    pub(crate) fn check(
        &mut self,
        guide: &mut ConstraintGuide,
        token: u32,
        left: usize,
        tokenizer: &Tokenizer,
        vocab: &Vocabulary,
    ) -> Result<Option<u32>, GuideError> {
        if self.plan.last() == Some(&token) {
            self.plan.pop();
            return Ok(None);
        }
        let previous = std::mem::take(&mut self.plan);
        let Some(rest) = completion(guide) else {
            return Ok(None);
        };
        if rest.len() < left {
            return Ok(None);
        }
        if let Some(after) = plan(guide, tokenizer, vocab)?
            && after.len() <= left
        {
            self.plan = after.into_iter().rev().collect();
            return Ok(None);
        }
        guide.rollback(1)?;
        let mut before = previous;
        if before.is_empty() {
            match plan(guide, tokenizer, vocab)? {
                Some(p) => before = p.into_iter().rev().collect(),
                None => {
                    // No plan from before either: keep the token (best effort).
                    guide.advance(token)?;
                    return Ok(None);
                }
            }
        }
        let next = before.pop();
        self.plan = before;
        Ok(next)
    }
}
