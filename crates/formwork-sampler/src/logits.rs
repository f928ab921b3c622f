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
        // Bits past the end of the last chunk do not name tokens.
        let word = if chunk.len() < 64 {
            word & ((1u64 << chunk.len()) - 1)
        } else {
            word
        };
        let allowed = word.count_ones() as usize;
        if allowed == chunk.len() {
            continue;
        }
        // A per-token select compiles to a masked store (slow on many x86 cores), so work
        // per word on whichever side is smaller.
        if allowed <= 32 {
            // Few allowed: save them, fill the chunk with -inf, put them back.
            let mut saved = [0.0f32; 32];
            for (slot, bit) in saved.iter_mut().zip(bits(word)) {
                *slot = chunk.get(bit).copied().unwrap_or(f32::NEG_INFINITY);
            }
            chunk.fill(f32::NEG_INFINITY);
            for (&value, bit) in saved.iter().zip(bits(word)) {
                if let Some(logit) = chunk.get_mut(bit) {
                    *logit = value;
                }
            }
        } else {
            // Few masked: overwrite just those.
            for bit in bits(!word) {
                if let Some(logit) = chunk.get_mut(bit) {
                    *logit = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// The positions of the set bits of `word`, lowest first.
fn bits(mut word: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if word == 0 {
            None
        } else {
            let bit = word.trailing_zeros() as usize;
            word &= word - 1;
            Some(bit)
        }
    })
}

/// How many of the first `vocab_size` tokens `mask` allows.
pub(crate) fn count_allowed(mask: &[u64], vocab_size: usize) -> usize {
    let full = vocab_size / 64;
    let mut count: usize = mask
        .iter()
        .take(full)
        .map(|w| w.count_ones() as usize)
        .sum();
    let tail = vocab_size % 64;
    if tail > 0
        && let Some(&word) = mask.get(full)
    {
        count += (word & ((1u64 << tail) - 1)).count_ones() as usize;
    }
    count
}

/// Replaces `ids` and `values` with the allowed tokens and their logits, in id order.
pub(crate) fn gather_allowed(
    logits: &[f32],
    mask: &[u64],
    ids: &mut Vec<u32>,
    values: &mut Vec<f32>,
) {
    ids.clear();
    values.clear();
    for (w, (chunk, &word)) in logits.chunks(64).zip(mask).enumerate() {
        for bit in bits(word) {
            if let Some(&logit) = chunk.get(bit) {
                ids.push((w * 64 + bit) as u32);
                values.push(logit);
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

/// The first index holding exactly `value`, or `None`.
///
/// Each 64-token chunk is first tested as a whole (a branch-free fold, vectorized), and
/// only the chunk that holds the value is scanned one by one: a plain `position` compiles to
/// a scalar loop, about 1 ns per token.
pub(crate) fn first_position(logits: &[f32], value: f32) -> Option<usize> {
    for (c, chunk) in logits.chunks(64).enumerate() {
        if chunk.iter().fold(false, |hit, &l| hit | (l == value)) {
            return chunk.iter().position(|&l| l == value).map(|i| c * 64 + i);
        }
    }
    None
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
        // Both strategies (few allowed, few masked) against a per-bit reference.
        let mut state = 3u64;
        for density in [1, 8, 31, 32, 33, 56, 63] {
            let mask: Vec<u64> = (0..4)
                .map(|_| {
                    let mut word = 0u64;
                    while (word.count_ones() as usize) < density {
                        word |= 1 << (crate::rng::splitmix64(&mut state) % 64);
                    }
                    word
                })
                .collect();
            let mut logits: Vec<f32> = (0..250).map(|i| i as f32).collect();
            apply_mask(&mut logits, &mask);
            for (i, &l) in logits.iter().enumerate() {
                let allowed = mask[i / 64] >> (i % 64) & 1 == 1;
                assert_eq!(
                    l,
                    if allowed { i as f32 } else { NEG },
                    "density {density}, token {i}"
                );
            }
        }
    }

    #[test]
    fn allowed_tokens_are_counted_and_gathered_in_id_order() {
        let logits: Vec<f32> = (0..130).map(|i| i as f32 * 0.5).collect();
        let mask = [1 | (1 << 63), 1 << 5, u64::MAX];
        assert_eq!(count_allowed(&mask, 130), 5);
        assert_eq!(count_allowed(&mask, 128), 3);
        assert_eq!(count_allowed(&mask[..1], 64), 2);
        let (mut ids, mut values) = (Vec::new(), Vec::new());
        gather_allowed(&logits, &mask, &mut ids, &mut values);
        assert_eq!(ids, [0, 63, 69, 128, 129]);
        assert_eq!(values, [0.0, 31.5, 34.5, 64.0, 64.5]);
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
    fn first_position_finds_the_first_match() {
        let mut logits = vec![0.0f32; 300];
        assert_eq!(first_position(&logits, 1.0), None);
        logits[299] = 1.0;
        assert_eq!(first_position(&logits, 1.0), Some(299));
        logits[70] = 1.0;
        logits[64] = 1.0;
        assert_eq!(first_position(&logits, 1.0), Some(64));
        assert_eq!(first_position(&logits, 0.0), Some(0));
        assert_eq!(first_position(&[], 0.0), None);
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
