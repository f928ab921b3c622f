//! Statistical checks: with a fixed seed, 20,000 draws (5,000 over the larger vocabularies,
//! to keep the debug-build test time down) follow the distribution the knobs define (softmax(logits / T), truncated by top-k, top-p, min-p or a mask, renormalized).
//! Each test compares the empirical frequencies with the exact probabilities by a chi-square
//! statistic (against its 99.9% quantile) and by the largest absolute difference. The seed
//! is fixed, so the draws, and the outcome, are the same on every run: these cannot flake.

use formwork_sampler::{Sampler, SamplingParams};

const DRAWS: usize = 20_000;

/// Draws over the 4,000- and 10,000-token vocabularies.
const LARGE_DRAWS: usize = 5_000;

/// The 99.9% quantile of the chi-square distribution with `df` degrees of freedom.
fn chi_square_999(df: usize) -> f64 {
    const TABLE: [f64; 10] = [
        10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59,
    ];
    TABLE[df - 1]
}

/// Exact sampling probabilities: softmax of `logits / t` over the tokens `keep` accepts.
fn softmax(logits: &[f64], t: f64, keep: impl Fn(usize) -> bool) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| if keep(i) { ((l - max) / t).exp() } else { 0.0 })
        .collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

/// Draws `draws` tokens and counts them into `bins` (token -> bin).
fn counts(
    draws: usize,
    sampler: &mut Sampler,
    logits: &[f32],
    mask: Option<&[u64]>,
    bin_of: impl Fn(u32) -> usize,
    bins: usize,
) -> Vec<u64> {
    let mut counts = vec![0u64; bins];
    let mut scratch = logits.to_vec();
    for _ in 0..draws {
        scratch.copy_from_slice(logits);
        let token = sampler.sample(&mut scratch, mask).expect("a token").token;
        counts[bin_of(token)] += 1;
    }
    counts
}

/// Asserts the counts fit the probabilities: a bin of probability 0 is never hit, the
/// chi-square statistic is below its 99.9% quantile, and no frequency is off by more than
/// 4 standard deviations of the worst case (0.014 at 20,000 draws).
fn assert_fits(counts: &[u64], probs: &[f64]) {
    let n = counts.iter().sum::<u64>() as f64;
    let tolerance = 4.0 * (0.25 / n).sqrt();
    let mut chi2 = 0.0;
    let mut df = 0;
    for (i, (&c, &p)) in counts.iter().zip(probs).enumerate() {
        if p == 0.0 {
            assert_eq!(c, 0, "bin {i} has probability 0 but was drawn {c} times");
            continue;
        }
        assert!(p * n >= 5.0, "bin {i} too small for a chi-square test");
        let expected = p * n;
        chi2 += (c as f64 - expected).powi(2) / expected;
        df += 1;
        let diff = (c as f64 / n - p).abs();
        assert!(
            diff < tolerance,
            "bin {i}: frequency {} vs {p}",
            c as f64 / n
        );
    }
    let limit = chi_square_999(df - 1);
    assert!(
        chi2 < limit,
        "chi-square {chi2:.2} >= {limit} with {} degrees of freedom; counts {counts:?}, probs {probs:?}",
        df - 1
    );
}

fn sampler(params: SamplingParams, vocab: usize) -> Sampler {
    Sampler::new(params, vocab, &[]).expect("valid parameters")
}

const LOGITS: [f64; 6] = [1.0, 2.0, 0.5, -1.0, 1.5, 0.0];

fn logits32(logits: &[f64]) -> Vec<f32> {
    logits.iter().map(|&l| l as f32).collect()
}

#[test]
fn temperature_scales_the_softmax() {
    for (t, seed) in [(0.7, 1), (1.0, 2), (1.8, 3)] {
        let mut s = sampler(
            SamplingParams {
                temperature: t as f32,
                seed: Some(seed),
                ..SamplingParams::default()
            },
            6,
        );
        let c = counts(DRAWS, &mut s, &logits32(&LOGITS), None, |t| t as usize, 6);
        assert_fits(&c, &softmax(&LOGITS, t, |_| true));
    }
}

#[test]
fn top_k_renormalizes_the_k_best() {
    let mut s = sampler(
        SamplingParams {
            temperature: 1.8,
            top_k: 3,
            seed: Some(4),
            ..SamplingParams::default()
        },
        6,
    );
    let c = counts(DRAWS, &mut s, &logits32(&LOGITS), None, |t| t as usize, 6);
    assert_fits(&c, &softmax(&LOGITS, 1.8, |i| matches!(i, 0 | 1 | 4)));
}

#[test]
fn top_p_renormalizes_the_nucleus() {
    let probs = [0.4f64, 0.25, 0.2, 0.1, 0.05];
    let logits: Vec<f64> = probs.iter().map(|p| p.ln()).collect();
    // Cumulative 0.4, 0.65, 0.85, 0.95: top_p 0.9 keeps four tokens.
    let mut s = sampler(
        SamplingParams {
            top_p: 0.9,
            seed: Some(5),
            ..SamplingParams::default()
        },
        5,
    );
    let c = counts(DRAWS, &mut s, &logits32(&logits), None, |t| t as usize, 5);
    assert_fits(&c, &softmax(&logits, 1.0, |i| i < 4));
}

#[test]
fn min_p_renormalizes_the_survivors() {
    let probs = [0.4f64, 0.25, 0.2, 0.1, 0.05];
    let logits: Vec<f64> = probs.iter().map(|p| p.ln()).collect();
    // min_p 0.2 keeps probabilities >= 0.08.
    let mut s = sampler(
        SamplingParams {
            min_p: 0.2,
            seed: Some(6),
            ..SamplingParams::default()
        },
        5,
    );
    let c = counts(DRAWS, &mut s, &logits32(&logits), None, |t| t as usize, 5);
    assert_fits(&c, &softmax(&logits, 1.0, |i| i < 4));
}

#[test]
fn a_mask_renormalizes_the_allowed_tokens() {
    let mask = [0b110101u64]; // tokens 0, 2, 4 and 5
    let mut s = sampler(
        SamplingParams {
            temperature: 1.2,
            logit_bias: vec![(1, 100.0)],
            seed: Some(7),
            ..SamplingParams::default()
        },
        6,
    );
    let c = counts(
        DRAWS,
        &mut s,
        &logits32(&LOGITS),
        Some(&mask),
        |t| t as usize,
        6,
    );
    assert_fits(&c, &softmax(&LOGITS, 1.2, |i| mask[0] >> i & 1 == 1));
}

/// A 4,000-token vocabulary: 8 likely tokens spread over the 512-token blocks (together 68%
/// of the mass at T = 1), and a flat tail that holds the rest.
fn large_vocab() -> (Vec<f64>, [usize; 8]) {
    vocab_with_tail(4000, -5.0)
}

/// `size` tokens: the 8 likely tokens of [`large_vocab`] and a flat tail at `tail`.
fn vocab_with_tail(size: usize, tail: f64) -> (Vec<f64>, [usize; 8]) {
    let likely = [3, 600, 1023, 1024, 2047, 2500, 3333, 3999];
    let mut logits = vec![tail; size];
    for (rank, &t) in likely.iter().enumerate() {
        logits[t] = 3.0 - 0.4 * rank as f64;
    }
    (logits, likely)
}

#[test]
fn full_vocabulary_draws_across_blocks() {
    let (logits, likely) = large_vocab();
    let bin_of = |t: u32| likely.iter().position(|&l| l == t as usize).unwrap_or(8);
    for (t, seed) in [(1.0, 8), (0.6, 9)] {
        let mut s = sampler(
            SamplingParams {
                temperature: t as f32,
                seed: Some(seed),
                ..SamplingParams::default()
            },
            logits.len(),
        );
        let c = counts(LARGE_DRAWS, &mut s, &logits32(&logits), None, bin_of, 9);
        let p = softmax(&logits, t, |_| true);
        let mut bins = vec![0.0; 9];
        for (i, &pi) in p.iter().enumerate() {
            bins[bin_of(i as u32)] += pi;
        }
        assert_fits(&c, &bins);
    }
}

#[test]
fn top_p_over_a_large_vocabulary_keeps_the_exact_nucleus() {
    // 4,000 tokens: the nucleus is found among the few thousand tokens near the top. 10,000
    // tokens with a tail 7 nats below the best: too many tokens are near the top (over
    // 8,192), and the cut is found with a histogram.
    for (size, tail, seed) in [(4000, -5.0, 10), (10_000, -4.0, 20)] {
        top_p_keeps_the_exact_nucleus(vocab_with_tail(size, tail), seed);
    }
}

fn top_p_keeps_the_exact_nucleus((logits, likely): (Vec<f64>, [usize; 8]), seed: u64) {
    let p = softmax(&logits, 1.0, |_| true);
    // The nucleus by a full sort in f64 (ties: lowest id first).
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let bin_of = |t: u32| likely.iter().position(|&l| l == t as usize).unwrap_or(8);
    // 0.45: likely tokens only; 0.9: all likely tokens and the lowest-id part of the tail.
    for (top_p, seed) in [(0.45, seed), (0.9, seed + 1)] {
        let mut acc = 0.0;
        let size = order
            .iter()
            .position(|&i| {
                acc += p[i];
                acc >= top_p
            })
            .unwrap()
            + 1;
        let mut in_nucleus = vec![false; logits.len()];
        for &i in &order[..size] {
            in_nucleus[i] = true;
        }
        let mut s = sampler(
            SamplingParams {
                top_p: top_p as f32,
                seed: Some(seed),
                ..SamplingParams::default()
            },
            logits.len(),
        );
        let c = counts(LARGE_DRAWS, &mut s, &logits32(&logits), None, bin_of, 9);
        let q = softmax(&logits, 1.0, |i| in_nucleus[i]);
        let mut bins = vec![0.0; 9];
        for (i, &qi) in q.iter().enumerate() {
            bins[bin_of(i as u32)] += qi;
        }
        assert_fits(&c, &bins);
    }
}
