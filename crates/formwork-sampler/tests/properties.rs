//! Property tests: for random logits, masks and parameters, the sampled token is always one
//! the mask allows with a finite logit (and `NoAllowedToken` comes exactly when there is
//! none); `top_logprobs` only lists such tokens, sorted; seeded runs repeat; `validate`
//! accepts exactly the documented ranges and never panics, whatever the floats.

use formwork_sampler::{Sampler, SamplerError, SamplingParams};
use proptest::prelude::*;

/// Logits: mostly finite, some `-inf`.
fn logits(vocab: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![8 => -30.0f32..30.0, 1 => Just(f32::NEG_INFINITY)],
        vocab,
    )
}

/// A mask word: all, none, one bit, few bits, or anything.
fn mask_word() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(0u64),
        (0u32..64).prop_map(|b| 1u64 << b),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| a & b & 0x0101_0101_0101_0101),
        any::<u64>(),
    ]
}

/// Optional mask with exactly enough words, or one more.
fn mask(vocab: usize) -> impl Strategy<Value = Option<Vec<u64>>> {
    let words = vocab.div_ceil(64);
    prop_oneof![
        1 => Just(None),
        4 => (words..=words + 1).prop_flat_map(|n| prop::collection::vec(mask_word(), n)).prop_map(Some),
    ]
}

/// Valid parameters for a vocabulary of `vocab` tokens.
fn params(vocab: usize) -> impl Strategy<Value = SamplingParams> {
    let bias = prop::collection::btree_map(0..vocab as u32, -100.0f32..=100.0, 0..4)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    (
        prop_oneof![Just(0.0f32), 0.01f32..=2.0],
        prop_oneof![Just(0usize), 1usize..60],
        prop_oneof![Just(1.0f32), 0.01f32..=1.0],
        prop_oneof![Just(0.0f32), 0.0f32..=1.0],
        prop_oneof![Just(1.0f32), 0.5f32..2.0],
        -2.0f32..=2.0,
        -2.0f32..=2.0,
        bias,
        any::<u64>(),
        prop::option::of(0usize..=20),
    )
        .prop_map(
            |(
                temperature,
                top_k,
                top_p,
                min_p,
                rep,
                presence,
                frequency,
                logit_bias,
                seed,
                top,
            )| {
                SamplingParams {
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    repetition_penalty: rep,
                    presence_penalty: presence,
                    frequency_penalty: frequency,
                    logit_bias,
                    seed: Some(seed),
                    top_logprobs: top,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct Case {
    vocab: usize,
    logits: Vec<f32>,
    mask: Option<Vec<u64>>,
    params: SamplingParams,
    prompt: Vec<u32>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..400).prop_flat_map(|vocab| {
        (
            logits(vocab),
            mask(vocab),
            params(vocab),
            prop::collection::vec(0..vocab as u32, 0..20),
        )
            .prop_map(move |(logits, mask, params, prompt)| Case {
                vocab,
                logits,
                mask,
                params,
                prompt,
            })
    })
}

fn allowed(case: &Case, token: u32) -> bool {
    let t = token as usize;
    let by_mask = case
        .mask
        .as_ref()
        .is_none_or(|m| m[t / 64] >> (t % 64) & 1 == 1);
    by_mask && t < case.vocab && case.logits[t] > f32::NEG_INFINITY
}

proptest! {
    #[test]
    fn sampled_tokens_are_allowed(case in case()) {
        let mut sampler = Sampler::new(case.params.clone(), case.vocab, &case.prompt).unwrap();
        let any_allowed = (0..case.vocab as u32).any(|t| allowed(&case, t));
        for _ in 0..3 {
            let mut scratch = case.logits.clone();
            match sampler.sample(&mut scratch, case.mask.as_deref()) {
                Ok(out) => {
                    prop_assert!(allowed(&case, out.token), "drew {}", out.token);
                    let k = case.params.top_logprobs.unwrap_or(0);
                    prop_assert!(out.top_logprobs.len() <= k);
                    for &(t, lp) in &out.top_logprobs {
                        prop_assert!(allowed(&case, t), "listed {}", t);
                        prop_assert!(lp <= 1e-6 && lp.is_finite() || lp == f32::NEG_INFINITY);
                    }
                    prop_assert!(out.top_logprobs.windows(2).all(|w| w[0].1 >= w[1].1 && w[0].0 != w[1].0));
                    if case.params.top_logprobs.is_some() {
                        prop_assert!(out.logprob <= 1e-6);
                    } else {
                        prop_assert!(out.logprob.is_nan());
                    }
                }
                Err(SamplerError::NoAllowedToken) => prop_assert!(!any_allowed),
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }

    #[test]
    fn seeded_runs_repeat(case in case()) {
        let mut a = Sampler::new(case.params.clone(), case.vocab, &case.prompt).unwrap();
        let mut b = Sampler::new(case.params.clone(), case.vocab, &case.prompt).unwrap();
        for _ in 0..3 {
            let ra = a.sample(&mut case.logits.clone(), case.mask.as_deref());
            let rb = b.sample(&mut case.logits.clone(), case.mask.as_deref());
            match (ra, rb) {
                (Ok(x), Ok(y)) => {
                    prop_assert_eq!(x.token, y.token);
                    prop_assert_eq!(x.logprob.to_bits(), y.logprob.to_bits());
                    prop_assert_eq!(x.top_logprobs, y.top_logprobs);
                }
                (x, y) => prop_assert_eq!(x.map(|s| s.token), y.map(|s| s.token)),
            }
        }
    }

    #[test]
    fn validate_accepts_exactly_the_documented_ranges(
        vocab in 0usize..300,
        temperature in any::<f32>(),
        top_p in any::<f32>(),
        min_p in any::<f32>(),
        rep in any::<f32>(),
        presence in any::<f32>(),
        frequency in any::<f32>(),
        top_k in any::<usize>(),
        top_logprobs in prop::option::of(0usize..40),
        logit_bias in prop::collection::vec((0u32..400, any::<f32>()), 0..4),
        ranges in prop::bool::weighted(0.5),
    ) {
        // Half the cases draw every float from all bit patterns (NaN, inf, huge); half from
        // near the range ends, so both answers occur often.
        let pick = |x: f32, lo: f32, hi: f32| if ranges { lo + (hi - lo) * (x.abs().fract() * 1.2 - 0.1) } else { x };
        let params = SamplingParams {
            temperature: pick(temperature, 0.0, 2.0),
            top_k,
            top_p: pick(top_p, 0.0, 1.0),
            min_p: pick(min_p, 0.0, 1.0),
            repetition_penalty: pick(rep, 0.0, 2.0),
            presence_penalty: pick(presence, -2.0, 2.0),
            frequency_penalty: pick(frequency, -2.0, 2.0),
            logit_bias: logit_bias.iter().map(|&(t, b)| (t, pick(b, -100.0, 100.0))).collect(),
            seed: None,
            top_logprobs,
        };
        let in_range = |x: f32, lo: f32, hi: f32| x >= lo && x <= hi;
        let mut ids: Vec<u32> = params.logit_bias.iter().map(|&(t, _)| t).collect();
        ids.sort_unstable();
        ids.dedup();
        let spec = vocab >= 1
            && in_range(params.temperature, 0.0, 2.0)
            && params.top_p > 0.0 && params.top_p <= 1.0
            && in_range(params.min_p, 0.0, 1.0)
            && params.repetition_penalty > 0.0 && params.repetition_penalty.is_finite()
            && in_range(params.presence_penalty, -2.0, 2.0)
            && in_range(params.frequency_penalty, -2.0, 2.0)
            && top_logprobs.is_none_or(|k| k <= 20)
            && params.logit_bias.iter().all(|&(t, b)| (t as usize) < vocab && in_range(b, -100.0, 100.0))
            && ids.len() == params.logit_bias.len();
        let result = params.validate(vocab);
        prop_assert_eq!(result.is_ok(), spec, "{:?}", result);
        if let Err(SamplerError::InvalidParameter { field, reason }) = &result {
            prop_assert!(!field.is_empty() && !reason.is_empty());
        }
        prop_assert_eq!(Sampler::new(params, vocab, &[]).is_ok(), spec);
    }
}
