//! The one error type of the crate: what can go wrong when building a [`Sampler`] or taking
//! a sampling step.
//!
//! [`Sampler`]: crate::Sampler

/// Why sampling parameters were rejected or a sampling step failed.
///
/// Every variant names what failed: the parameter and its allowed range, the token, the
/// lengths that disagree. The messages are meant to be shown to API users as they are.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SamplerError {
    /// A sampling parameter is out of its allowed range or not a number.
    #[error("{field} {reason}")]
    InvalidParameter {
        /// The field of [`SamplingParams`](crate::SamplingParams) (or `vocab_size`).
        field: &'static str,
        /// What is wrong, with the allowed range and the value given,
        /// e.g. `must be in [0, 2], got 3`.
        reason: String,
    },
    /// A prompt token id is not below the vocabulary size.
    #[error("token {token} is out of range for a vocabulary of {vocab_size} tokens")]
    TokenOutOfRange {
        /// The offending token id.
        token: u32,
        /// The vocabulary size the sampler was built for.
        vocab_size: usize,
    },
    /// The logits or the mask do not match the vocabulary size.
    ///
    /// For `what == "mask"` the lengths count `u64` words and `expected` is the minimum:
    /// a longer mask is accepted and its extra bits are ignored.
    #[error("{what} has length {got}, expected {expected}")]
    LengthMismatch {
        /// `"logits"` or `"mask"`.
        what: &'static str,
        /// The length the vocabulary size calls for.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// An allowed token's logit is NaN or +infinity (after bias and penalties).
    ///
    /// `-inf` is a valid logit (the token is impossible); masked-out tokens may hold anything.
    #[error("logit of token {token} is {value}: logits must be finite or -inf")]
    NonFiniteLogits {
        /// The first token with a bad logit.
        token: u32,
        /// Its logit.
        value: f32,
    },
    /// No token can be drawn: the mask allows none, or every allowed logit is `-inf`.
    #[error("no token is allowed: the mask allows none, or every allowed logit is -inf")]
    NoAllowedToken,
}
