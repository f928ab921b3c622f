//! One sampling step at the vocabulary sizes of SmolLM2 (49,152), Qwen2 (151,936) and Gemma 3
//! (262,144), for
//! the common parameter sets: greedy, temperature + top-p, llama.cpp-style top-k + top-p +
//! min-p, a constrained step whose mask allows ~10% of the tokens, top_logprobs = 5, and the
//! worst case for top-p (a flat distribution whose nucleus is most of the vocabulary).
//!
//! The logits look like a model's: a normal bulk (sd 2.5) and a few dozen tokens 6-14 above
//! it. Each iteration copies fresh logits in first; `copy_only` times that copy. Run with
//! `cargo bench -p formwork-sampler` (add `-- --quick` for a fast pass).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use formwork_sampler::{Sampler, SamplingParams};

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(state: &mut u64) -> f64 {
    (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// Model-like logits: N(0, 2.5) for most tokens, 40 tokens 6 to 14 above.
fn logits(vocab: usize) -> Vec<f32> {
    let mut state = vocab as u64;
    let mut logits: Vec<f32> = (0..vocab)
        .map(|_| {
            let (u1, u2) = (uniform(&mut state).max(1e-12), uniform(&mut state));
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * 2.5) as f32
        })
        .collect();
    for i in 0..40 {
        let t = (splitmix(&mut state) % vocab as u64) as usize;
        logits[t] = 6.0 + 8.0 * (40 - i) as f32 / 40.0;
    }
    logits
}

/// A mask allowing about 10% of the tokens, including the likely ones.
fn mask(logits: &[f32]) -> Vec<u64> {
    let mut state = 77u64;
    let mut words = vec![0u64; logits.len().div_ceil(64)];
    for (t, &l) in logits.iter().enumerate() {
        if l > 6.0 || splitmix(&mut state).is_multiple_of(10) {
            words[t / 64] |= 1 << (t % 64);
        }
    }
    words
}

fn bench(c: &mut Criterion) {
    let base = SamplingParams {
        seed: Some(1),
        ..SamplingParams::default()
    };
    let cases: [(&str, SamplingParams, bool); 5] = [
        ("greedy", SamplingParams::greedy(), false),
        (
            "temp0.8_top_p0.9",
            SamplingParams {
                temperature: 0.8,
                top_p: 0.9,
                ..base.clone()
            },
            false,
        ),
        (
            "top_k40_top_p0.95_min_p0.05",
            SamplingParams {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.95,
                min_p: 0.05,
                ..base.clone()
            },
            false,
        ),
        (
            "mask10pct_temp1",
            SamplingParams {
                temperature: 1.0,
                ..base.clone()
            },
            true,
        ),
        (
            "top_logprobs5_temp1",
            SamplingParams {
                temperature: 1.0,
                top_logprobs: Some(5),
                ..base.clone()
            },
            false,
        ),
    ];
    for vocab in [49_152usize, 151_936, 262_144] {
        let logits = logits(vocab);
        let mask = mask(&logits);
        let mut group = c.benchmark_group(format!("sample/{vocab}"));
        // Every iteration first copies fresh logits into the buffer (the step edits them in
        // place), which also leaves them in cache as a model's output would be. This line
        // times the copy alone; subtract it from the others.
        let mut buf = logits.clone();
        group.bench_function("copy_only", |b| {
            b.iter(|| buf.copy_from_slice(black_box(&logits)))
        });
        for (name, params, masked) in &cases {
            let mut sampler = Sampler::new(params.clone(), vocab, &[]).expect("valid params");
            let mask = masked.then_some(mask.as_slice());
            group.bench_function(*name, |b| {
                b.iter(|| {
                    buf.copy_from_slice(black_box(&logits));
                    black_box(sampler.sample(&mut buf, mask).expect("a token"))
                })
            });
        }
        // The worst case for top-p: a flat distribution (high temperature, no standout
        // token), whose nucleus is most of the vocabulary.
        let flat: Vec<f32> = logits.iter().map(|&l| l.min(6.0) * 0.2).collect();
        let mut sampler = Sampler::new(
            SamplingParams {
                temperature: 1.5,
                top_p: 0.95,
                ..base.clone()
            },
            vocab,
            &[],
        )
        .expect("valid params");
        group.bench_function("flat_temp1.5_top_p0.95", |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(&flat));
                black_box(sampler.sample(&mut buf, None).expect("a token"))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
