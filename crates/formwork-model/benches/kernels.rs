//! Each CPU kernel on the default model's shapes: a 1536 x 576 matrix (the feed-forward
//! gate) times 1, 8 and 64 activation rows, in every format the CPU backend computes with, on
//! one thread (`FORMWORK_BENCH_THREADS` to change it).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use formwork_model::kernels::QuantizedMatrix;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn kernels(c: &mut Criterion) {
    let threads = std::env::var("FORMWORK_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (rows, cols) = (1536, 576);
    let w = values(rows * cols, 1);
    let mut group = c.benchmark_group("matmul_1536x576");
    group.sample_size(20);
    for format in ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K", "F16", "F32"] {
        let m = QuantizedMatrix::quantize(format, rows, cols, &w, threads).unwrap();
        for n in [1usize, 8, 64] {
            let x = values(n * cols, 2);
            group.throughput(Throughput::Elements((rows * cols * n) as u64));
            group.bench_function(format!("{format}/rows_{n}"), |b| b.iter(|| m.matmul(&x, n)));
        }
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
