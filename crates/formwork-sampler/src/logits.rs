//! The stages that edit a logits slice in place before anything is drawn: the allowed-token
//! mask, OpenAI's `logit_bias`, the repetition/presence/frequency penalties, and the scan
//! that checks the result and finds its maximum.
//!
//! Each stage is a small function over the slice, composed once per step by
//! [`Sampler::sample`](crate::Sampler::sample) in the documented order. A masked-out token
//! is set to `-inf`, and `-inf` is a fixed point of every later stage (`-inf + b`,
//! `-inf * p`, `-inf / p` are all `-inf`), which is why no bias or penalty can bring a
//! masked token back.

use crate::SamplerError;
use crate::math::LANES;

/// Sets the logit of every token whose bit is clear in `mask` to `-inf` (bit `i % 64` of
/// word `i / 64` set means token `i` is allowed). Words past the logits are ignored; the
/// caller checks that the mask covers every token.
pub(crate) fn apply_mask(logits: &mut [f32], mask: &[u64]) {
    for (chunk, &word) in logits.chunks_mut(64).zip(mask) {
        if word == u64::MAX {
            continue;
        }
        if word == 0 {
            chunk.fill(f32::NEG_INFINITY);
            continue;
        }
        for (bit, logit) in chunk.iter_mut().enumerate() {
            if (word >> bit) & 1 == 0 {
                *logit = f32::NEG_INFINITY;
            }
        }
    }
}

/// Adds each bias to its token's logit (ids past the slice are ignored; they were rejected
/// by validation).
pub(crate) fn apply_bias(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(token, b) in bias {
        if let Some(logit) = logits.get_mut(token as usize) {
            *logit += b;
        }
    }
}

/// The CTRL/Hugging Face repetition penalty over `tokens` (each listed once): a positive
/// logit is divided by `penalty`, a negative one multiplied by it.
pub(crate) fn apply_repetition_penalty(logits: &mut [f32], tokens: &[u32], penalty: f32) {
    for &token in tokens {
        if let Some(logit) = logits.get_mut(token as usize) {
            *logit = if *logit > 0.0 {
                *logit / penalty
            } else {
                *logit * penalty
            };
        }
    }
}

/// OpenAI's presence and frequency penalties: `logit -= count * frequency`, then
/// `logit -= presence` for each generated token (with its count), in vLLM's order.
pub(crate) fn apply_presence_frequency(
    logits: &mut [f32],
    counts: impl Iterator<Item = (u32, u32)>,
    presence: f32,
    frequency: f32,
) {
    for (token, count) in counts {
        if let Some(logit) = logits.get_mut(token as usize) {
            *logit -= count as f32 * frequency;
            *logit -= presence;
        }
    }
}

/// Checks the processed logits and returns their maximum.
///
/// A NaN or `+inf` is [`SamplerError::NonFiniteLogits`] (masked tokens are `-inf` by now, so
/// only allowed tokens can fail); a maximum of `-inf` is [`SamplerError::NoAllowedToken`].
pub(crate) fn checked_max(logits: &[f32]) -> Result<f32, SamplerError> {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut bad = [false; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for ((m, b), &l) in maxes.iter_mut().zip(bad.iter_mut()).zip(chunk) {
            *b |= l.is_nan() | (l == f32::INFINITY);
            *m = if l > *m { l } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &m in &maxes {
        max = if m > max { m } else { max };
    }
    let mut any_bad = bad.iter().any(|&b| b);
    for &l in rest {
        any_bad |= l.is_nan() | (l == f32::INFINITY);
        max = if l > max { l } else { max };
    }
    if any_bad {
        let (token, &value) = logits
            .iter()
            .enumerate()
            .find(|&(_, &l)| l.is_nan() || l == f32::INFINITY)
            .unwrap_or((0, &f32::NAN));
        return Err(SamplerError::NonFiniteLogits {
            token: token as u32,
            value,
        });
    }
    if max == f32::NEG_INFINITY {
        return Err(SamplerError::NoAllowedToken);
    }
    Ok(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEG: f32 = f32::NEG_INFINITY;

    #[test]
    fn mask_sets_disallowed_tokens_to_neg_inf() {
        let mut logits: Vec<f32> = (0..130).map(|i| i as f32).collect();
        // Word 0: tokens 0 and 63; word 1: none; word 2: tokens 128 and 129 (plus bits past
        // the end, ignored).
        let mask = [1 | (1 << 63), 0, u64::MAX];
        apply_mask(&mut logits, &mask);
        for (i, &l) in logits.iter().enumerate() {
            let allowed = matches!(i, 0 | 63 | 128 | 129);
            assert_eq!(l, if allowed { i as f32 } else { NEG }, "token {i}");
        }
    }

    #[test]
    fn bias_adds_and_cannot_lift_a_masked_token() {
        let mut logits = [1.0, NEG, 3.0];
        apply_bias(&mut logits, &[(0, 2.5), (1, 100.0), (2, -100.0)]);
        assert_eq!(logits, [3.5, NEG, -97.0]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let mut logits = [2.0, -1.0, 0.0, 4.0, NEG];
        apply_repetition_penalty(&mut logits, &[0, 1, 2, 4], 2.0);
        assert_eq!(logits, [1.0, -2.0, 0.0, 4.0, NEG]);
        let mut logits = [2.0, -1.0];
        apply_repetition_penalty(&mut logits, &[0, 1], 0.5);
        assert_eq!(logits, [4.0, -0.5]);
    }

    #[test]
    fn presence_and_frequency_follow_openai() {
        let mut logits = [1.0, 1.0, 1.0];
        apply_presence_frequency(&mut logits, [(0, 3), (2, 1)].into_iter(), 0.5, 0.25);
        // token 0: 1 - 3 * 0.25 - 0.5; token 2: 1 - 0.25 - 0.5.
        assert_eq!(logits, [-0.25, 1.0, 0.25]);
        let mut logits = [1.0];
        apply_presence_frequency(&mut logits, [(0, 2)].into_iter(), -1.0, -0.5);
        assert_eq!(logits, [3.0]);
    }

    #[test]
    fn checked_max_finds_the_max_and_rejects_bad_values() {
        let mut logits: Vec<f32> = (0..37).map(|i| -(i as f32)).collect();
        logits[21] = 5.0;
        assert_eq!(checked_max(&logits), Ok(5.0));
        logits[30] = f32::NAN;
        assert!(matches!(
            checked_max(&logits),
            Err(SamplerError::NonFiniteLogits { token: 30, .. })
        ));
        logits[30] = 0.0;
        logits[36] = f32::INFINITY;
        assert_eq!(
            checked_max(&logits),
            Err(SamplerError::NonFiniteLogits {
                token: 36,
                value: f32::INFINITY
            })
        );
        assert_eq!(checked_max(&[NEG; 20]), Err(SamplerError::NoAllowedToken));
        assert_eq!(checked_max(&[NEG, NEG, -1e30]), Ok(-1e30));
    }
}
