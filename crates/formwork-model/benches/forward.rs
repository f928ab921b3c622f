//! Forward-pass speed of the default model (SmolLM2-135M-Instruct Q4_1) on this machine:
//! prefill of a 128-token prompt, and one decode step for 1 and for 8 sequences batched
//! together (each with a 128-token history).
//!
//! Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf` (`cargo xtask fetch-model`).

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use formwork_model::{BatchItem, Device, load};

fn forward(c: &mut Criterion) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let loaded =
        load(&path, &Device::Cpu).expect("the default model: run `cargo xtask fetch-model`");
    let model = loaded.model;
    let prompt: Vec<u32> = (0..128u32).map(|i| 200 + i * 37 % 40_000).collect();
    let mut group = c.benchmark_group("smollm2_135m_q4_1");
    group.sample_size(10);
    group.bench_function("prefill_128", |b| {
        b.iter(|| {
            let mut cache = model.new_cache();
            model
                .forward(&mut [BatchItem {
                    tokens: &prompt,
                    cache: &mut cache,
                }])
                .unwrap()
        })
    });
    for batch in [1usize, 8] {
        let mut caches: Vec<_> = (0..batch)
            .map(|_| {
                let mut cache = model.new_cache();
                model
                    .forward(&mut [BatchItem {
                        tokens: &prompt,
                        cache: &mut cache,
                    }])
                    .unwrap();
                cache
            })
            .collect();
        let token = [1234u32];
        group.bench_function(format!("decode_step_batch_{batch}"), |b| {
            b.iter(|| {
                let mut items: Vec<BatchItem> = caches
                    .iter_mut()
                    .map(|cache| BatchItem {
                        tokens: &token,
                        cache,
                    })
                    .collect();
                let out = model.forward(&mut items).unwrap();
                for cache in caches.iter_mut() {
                    cache.truncate(prompt.len());
                }
                out
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
