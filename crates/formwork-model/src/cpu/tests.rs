//! The CPU kernels against candle's block decoding (an implementation we did not write) and
//! against each other: the SIMD dot tiles and attention kernels equal the portable code bit
//! for bit (every kernel set this CPU runs, in one process), quantized dots stay close to f32
//! dots, attention stays close to exact attention.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::isa::{CpuKernels, Isa};
use super::matmul::{Input, QMatrix, RowKernels};
use super::pool::Pool;
use super::quant::{ActKind, Acts, QuantKernel, WeightType, dequantize_row, dot_scalar};

fn pool() -> &'static Pool {
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| Pool::new(2).expect("two threads"))
}

/// Every kernel set this CPU runs, the best last (at least the portable one).
fn isas() -> Vec<Isa> {
    let mut all: Vec<Isa> = [
        CpuKernels::Scalar,
        CpuKernels::Avx2,
        CpuKernels::Avx2Vnni,
        CpuKernels::Avx2VnniWide,
    ]
    .into_iter()
    .map(Isa::new)
    .collect();
    all.dedup();
    all
}

fn best() -> Isa {
    Isa::new(CpuKernels::Avx2VnniWide)
}

fn matmul(isa: Isa, m: &QMatrix, input: &mut Input<'_>) -> Vec<f32> {
    super::matmul::matmul(pool(), isa, m, input)
}

fn matmul_many(ms: &[&QMatrix], input: &mut Input<'_>) -> Vec<Vec<f32>> {
    super::matmul::matmul_many(pool(), best(), ms, input)
}

/// Deterministic values with outliers, like activations.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5;
            if i % 97 == 3 { u * 20.0 } else { u }
        })
        .collect()
}

const TYPES: [(WeightType, GgmlDType); 10] = [
    (WeightType::F32, GgmlDType::F32),
    (WeightType::F16, GgmlDType::F16),
    (WeightType::Q4_0, GgmlDType::Q4_0),
    (WeightType::Q4_1, GgmlDType::Q4_1),
    (WeightType::Q5_0, GgmlDType::Q5_0),
    (WeightType::Q5_1, GgmlDType::Q5_1),
    (WeightType::Q8_0, GgmlDType::Q8_0),
    (WeightType::Q4K, GgmlDType::Q4K),
    (WeightType::Q5K, GgmlDType::Q5K),
    (WeightType::Q6K, GgmlDType::Q6K),
];

/// A `rows x cols` matrix quantized by candle: our matrix and candle's decoding of it.
fn quantized(ty: GgmlDType, rows: usize, cols: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let w = Tensor::from_vec(values(rows * cols, seed), (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, ty).unwrap();
    let bytes = q.data().unwrap().to_vec();
    let deq = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
    (bytes, deq.to_vec1::<f32>().unwrap())
}

#[test]
fn every_format_decodes_as_candle_decodes_it() {
    let (rows, cols) = (3, 512);
    for (ours, theirs) in TYPES {
        let (bytes, want) = quantized(theirs, rows, cols, 7);
        let m = QMatrix::new(ours, rows, cols, bytes).expect("sizes match");
        for r in 0..rows {
            let mut got = vec![0f32; cols];
            m.dequantize_row(r, &mut got);
            assert_eq!(
                got,
                want[r * cols..(r + 1) * cols],
                "{} row {r}",
                ours.name()
            );
        }
    }
}

#[test]
fn quantized_dots_are_close_to_f32_dots_of_the_decoded_weights() {
    let cols = 768;
    for (ours, theirs) in TYPES {
        let (bytes, deq) = quantized(theirs, 1, cols, 11);
        let x = values(cols, 5);
        let acts = Acts::new(ours.act_kind(), &x, 1, cols);
        let got = dot_scalar(ours, &bytes, &acts, 0, QuantKernel::Gemv);
        let exact: f64 = deq
            .iter()
            .zip(&x)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let norm: f64 = deq
            .iter()
            .zip(&x)
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum();
        assert!(
            (got as f64 - exact).abs() <= 0.02 * norm,
            "{}: {got} vs {exact} (scale {norm})",
            ours.name()
        );
    }
}

#[test]
fn batched_products_equal_one_row_at_a_time_bit_for_bit() {
    // 7 rows: a tile of 4 and a tile of 3 on AVX2; each row alone must give the same bits,
    // and so must every kernel set.
    let (out_rows, cols, t) = (40, 512, 7);
    for isa in isas() {
        for (ours, theirs) in TYPES {
            let (bytes, _) = quantized(theirs, out_rows, cols, 3);
            let m = QMatrix::new(ours, out_rows, cols, bytes.clone()).unwrap();
            let x = values(t * cols, 9);
            let all = matmul(isa, &m, &mut Input::new(&x, t, cols));
            let what = format!("{} on {}", ours.name(), isa.kernels());
            for j in 0..t {
                let row = &x[j * cols..(j + 1) * cols];
                let one = matmul(isa, &m, &mut Input::new(row, 1, cols));
                assert_eq!(one, all[j * out_rows..(j + 1) * out_rows], "{what} row {j}");
                let acts = Acts::new(ours.act_kind(), row, 1, cols);
                let row_bytes = ours.row_bytes(cols);
                for r in 0..out_rows {
                    let w = &bytes[r * row_bytes..(r + 1) * row_bytes];
                    let scalar = dot_scalar(ours, w, &acts, 0, QuantKernel::Gemv);
                    assert_eq!(scalar.to_bits(), one[r].to_bits(), "{what} ({r}, {j})");
                }
            }
        }
    }
}

/// llama.cpp's repacked Q4_K products: the rows an `Input` marks take the gemm kernel (an
/// `fma` per 64 elements), the others the gemv kernel, in every kernel set and whatever the
/// tile; a matrix llama.cpp does not repack (rows not a multiple of 8) ignores the marks.
#[test]
fn q4k_rows_follow_the_kernel_their_input_names() {
    let cols = 1024;
    // Two sequences as a batch: 6 prompt rows (4 in a group, 2 alone), then 5 (4 and 1).
    let kernels: Vec<QuantKernel> = [4, 2, 4, 1]
        .into_iter()
        .zip([QuantKernel::Gemm, QuantKernel::Gemv].into_iter().cycle())
        .flat_map(|(n, k)| std::iter::repeat_n(k, n))
        .collect();
    let rows: Vec<RowKernels> = kernels
        .iter()
        .map(|&k| RowKernels {
            q4k_gemm: k == QuantKernel::Gemm,
            tiled: true,
        })
        .collect();
    let t = kernels.len();
    let x = values(t * cols, 31);
    let acts = Acts::new(ActKind::Q8K, &x, t, cols);
    let mut differ = 0;
    for out_rows in [24, 12] {
        let (bytes, _) = quantized(GgmlDType::Q4K, out_rows, cols, 32);
        let m = QMatrix::new(WeightType::Q4K, out_rows, cols, bytes.clone()).unwrap();
        assert_eq!(m.repacked(), out_rows % 8 == 0);
        let row_bytes = WeightType::Q4K.row_bytes(cols);
        for isa in isas() {
            let got = matmul(isa, &m, &mut Input::new(&x, t, cols).with_kernels(&rows));
            for (j, &k) in kernels.iter().enumerate() {
                let k = if m.repacked() { k } else { QuantKernel::Gemv };
                for r in 0..out_rows {
                    let w = &bytes[r * row_bytes..(r + 1) * row_bytes];
                    let want = dot_scalar(WeightType::Q4K, w, &acts, j, k);
                    assert_eq!(
                        got[j * out_rows + r].to_bits(),
                        want.to_bits(),
                        "{out_rows} rows on {}: ({r}, {j}) {k:?}",
                        isa.kernels()
                    );
                    let other = dot_scalar(WeightType::Q4K, w, &acts, j, QuantKernel::Gemv);
                    differ += usize::from(other.to_bits() != want.to_bits());
                }
            }
        }
    }
    // The two kernels round differently: the marks must have been followed.
    assert!(differ > 0, "the gemm rows gave the gemv's bits everywhere");
}

/// A Q6_K matrix's products: the rows an `Input` marks tiled take ggml's tiled product (an
/// `fma` per super-block, no lanes), the others `ggml_vec_dot_q6_K_q8_K`'s eight lanes, in
/// every kernel set and whatever the tile.
#[test]
fn q6k_rows_follow_the_kernel_their_input_names() {
    let (cols, out_rows) = (1024, 12);
    let rows: Vec<RowKernels> = [true, true, false, true, false, false, true, true, true]
        .map(|tiled| RowKernels {
            q4k_gemm: true,
            tiled,
        })
        .to_vec();
    let t = rows.len();
    let x = values(t * cols, 33);
    let acts = Acts::new(ActKind::Q8K, &x, t, cols);
    let (bytes, _) = quantized(GgmlDType::Q6K, out_rows, cols, 34);
    let m = QMatrix::new(WeightType::Q6K, out_rows, cols, bytes.clone()).unwrap();
    let row_bytes = WeightType::Q6K.row_bytes(cols);
    let mut differ = 0;
    for isa in isas() {
        let got = matmul(isa, &m, &mut Input::new(&x, t, cols).with_kernels(&rows));
        for (j, k) in rows.iter().enumerate() {
            let (kernel, other) = if k.tiled {
                (QuantKernel::Tiled, QuantKernel::Gemv)
            } else {
                (QuantKernel::Gemv, QuantKernel::Tiled)
            };
            for r in 0..out_rows {
                let w = &bytes[r * row_bytes..(r + 1) * row_bytes];
                let want = dot_scalar(WeightType::Q6K, w, &acts, j, kernel);
                assert_eq!(
                    got[j * out_rows + r].to_bits(),
                    want.to_bits(),
                    "({r}, {j}) {kernel:?} on {}",
                    isa.kernels()
                );
                let other = dot_scalar(WeightType::Q6K, w, &acts, j, other);
                differ += usize::from(other.to_bits() != want.to_bits());
            }
        }
    }
    // The two kernels round differently: the marks must have been followed.
    assert!(
        differ > 0,
        "the tiled rows gave the vec_dot's bits everywhere"
    );
}

/// The rows of a prompt llama.cpp multiplies four at a time: all but the last `len % 4`
/// (ubatches of 512 keep the groups), never a generated row.
#[test]
fn prompt_rows_take_the_gemm_in_whole_groups_of_four() {
    let gemm = |len: usize| {
        (0..len + 3)
            .filter(|&p| super::gemm_prompt_row(len, p, false))
            .count()
    };
    assert_eq!(gemm(1), 0);
    assert_eq!(gemm(3), 0);
    assert_eq!(gemm(4), 4);
    assert_eq!(gemm(7), 4);
    assert_eq!(gemm(513), 512);
    assert_eq!(gemm(1030), 1028);
    assert!(super::gemm_prompt_row(9, 7, false) && !super::gemm_prompt_row(9, 8, false));
}

/// The ubatches of every row of a prompt of `len` tokens, in order.
fn ubatches(len: usize, checkpoints: bool) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for p in 0..len {
        let u = super::prompt_ubatch(len, p, checkpoints);
        assert!(u.contains(&p), "{len}: {p} in {u:?}");
        if out.last() != Some(&u) {
            out.push(u);
        }
    }
    out
}

/// llama.cpp's server computes a prompt in ubatches of 512 within batches of 2048, and for a
/// model with a sliding window ends a batch 516 and 4 tokens before the prompt's end (its
/// context checkpoints), as it did for Gemma 3's goldens: `<bos>The capital of France is` (6
/// tokens) as 2 rows then 4.
#[test]
fn prompts_are_cut_where_llama_cpps_server_cuts_them() {
    assert_eq!(ubatches(600, false), [0..512, 512..600]);
    assert_eq!(ubatches(6, true), [0..2, 2..6]);
    assert_eq!(ubatches(4, true), vec![0..4]);
    assert_eq!(ubatches(5, true), [0..1, 1..5]);
    assert_eq!(ubatches(517, true), [0..1, 1..513, 513..517]);
    assert_eq!(ubatches(600, true), [0..84, 84..596, 596..600]);
    assert_eq!(
        ubatches(3000, true),
        [
            0..512,
            512..1024,
            1024..1536,
            1536..2048,
            2048..2484,
            2484..2996,
            2996..3000
        ]
    );
    // The 6-token prompt: its first two rows alone (one-row Q4_K kernel), then four (gemm).
    let gemm: Vec<bool> = (0..7).map(|p| super::gemm_prompt_row(6, p, true)).collect();
    assert_eq!(gemm, [false, false, true, true, true, true, false]);
    let tiled = |len: usize| {
        (0..len)
            .filter(|&p| super::tiled_prompt_row(len, p, true))
            .count()
    };
    assert_eq!(tiled(600), 596);
    assert_eq!(tiled(67), 0);
    assert_eq!(tiled(68), 64);
}

#[test]
fn several_matrices_in_one_region_equal_each_alone() {
    let cols = 256;
    let (a, _) = quantized(GgmlDType::Q4_1, 24, cols, 1);
    let (b, _) = quantized(GgmlDType::Q8_0, 8, cols, 2);
    let a = QMatrix::new(WeightType::Q4_1, 24, cols, a).unwrap();
    let b = QMatrix::new(WeightType::Q8_0, 8, cols, b).unwrap();
    let x = values(5 * cols, 4);
    let both = matmul_many(&[&a, &b], &mut Input::new(&x, 5, cols));
    assert_eq!(both[0], matmul(best(), &a, &mut Input::new(&x, 5, cols)));
    assert_eq!(both[1], matmul(best(), &b, &mut Input::new(&x, 5, cols)));
}

#[test]
fn activation_quantization_follows_ggml() {
    // Ties round to even, the scale is 127 / max|x|, the stored scale is f16.
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 0.5;
    x[2] = 1.5;
    x[3] = -2.5;
    let a = Acts::new(ActKind::Q8_1, &x, 1, 32);
    assert_eq!(&a.qs[..4], &[127, 0, 2, -2]);
    assert_eq!(a.d[0], 1.0);
    assert_eq!(a.s[0], 127.0);
    let zero = Acts::new(ActKind::Q8_0, &[0.0; 32], 1, 32);
    assert!(zero.qs.iter().all(|&q| q == 0) && zero.d[0] == 0.0);
    let k = Acts::new(ActKind::Q8K, &values(256, 1), 1, 256);
    assert_eq!(k.bsums.len(), 16);
    assert_eq!(
        k.bsums[0] as i32,
        k.qs[..16].iter().map(|&q| q as i32).sum::<i32>()
    );
}

#[test]
fn decoding_of_a_float_row() {
    let x = [1.0f32, -2.5, 3.25];
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = [0f32; 3];
    dequantize_row(WeightType::F32, &bytes, &mut out);
    assert_eq!(out, x);
}

#[test]
fn ggml_exp_is_within_two_ulp_of_libm() {
    for i in -2000..2000 {
        let x = i as f32 * 0.0437;
        let (ours, libm) = (super::quant::v_expf(x), x.exp());
        let ulp = (libm.to_bits() as i64 - ours.to_bits() as i64).abs();
        assert!(ulp <= 2, "exp({x}): {ours} vs {libm}");
    }
    assert_eq!(super::quant::v_expf(-200.0), 0.0);
    assert!(super::quant::v_expf(100.0).is_infinite());
}

#[test]
fn the_pool_runs_every_task_once_and_reraises_panics() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let counts: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
    for _ in 0..50 {
        pool().run(counts.len(), &|i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
    }
    assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 50));
    let caught = std::panic::catch_unwind(|| {
        pool().run(64, &|i| {
            if i == 63 {
                panic!("task 63");
            }
        })
    });
    assert!(caught.is_err());
    // The pool still works after a panic.
    let n = AtomicUsize::new(0);
    pool().run(10, &|_| {
        n.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(n.load(Ordering::Relaxed), 10);
}

/// Values rounded to f16, as the cache holds them.
fn f16s(n: usize, seed: u64, scale: f32) -> Vec<half::f16> {
    values(n, seed)
        .into_iter()
        .map(|v| half::f16::from_f32(v * scale))
        .collect()
}

/// One head's attention computed exactly (f64, the stored f16 keys and values, the query
/// rounded to f16), for query row `q` over positions `0..n`.
fn exact_attention(head: &super::attention::Head<'_>, q: &[f32], n: usize) -> Vec<f64> {
    exact_attention_from(head, q, 0, n)
}

/// [`exact_attention`] over positions `from..n`.
fn exact_attention_from(
    head: &super::attention::Head<'_>,
    q: &[f32],
    from: usize,
    n: usize,
) -> Vec<f64> {
    let dim = head.dim;
    let key = |p: usize, d: usize| head.kv.key(p)[head.offset + d].to_f64();
    let value = |p: usize, d: usize| head.kv.value(p)[head.offset + d].to_f64();
    let q: Vec<f64> = q.iter().map(|&x| half::f16::from_f32(x).to_f64()).collect();
    let scores: Vec<f64> = (from..n)
        .map(|p| (0..dim).map(|d| q[d] * key(p, d)).sum::<f64>() * head.scale as f64)
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    (0..dim)
        .map(|d| {
            (from..n)
                .map(|p| weights[p - from] * value(p, d))
                .sum::<f64>()
                / total
        })
        .collect()
}

#[test]
fn the_attention_row_kernel_equals_its_portable_code_at_real_head_widths() {
    // Two key/value heads per position; the head under test is the second (a non-zero
    // offset). Lengths 1, 7 and 300: one position, a few, many rescalings.
    // On a CPU with AVX2, FMA and F16C `rows` runs the SIMD kernel for these widths.
    let kv_heads = 2;
    for dim in [64, 96, 128, 256] {
        for len in [1, 7, 300] {
            let stride = kv_heads * dim;
            // Keys growing along the sequence, so new maxima (and rescalings) keep coming.
            let keys: Vec<half::f16> = f16s(len * stride, dim as u64 + len as u64, 2.0)
                .chunks_exact(stride)
                .enumerate()
                .flat_map(|(p, k)| {
                    let grow = 1.0 + 3.0 * p as f32 / len as f32;
                    k.iter()
                        .map(move |x| half::f16::from_f32(x.to_f32() * grow))
                })
                .collect();
            let values = f16s(len * stride, 1000 + len as u64, 1.0);
            let rows = len.min(3);
            let q = values_scaled(rows * dim, 77 + dim as u64, 3.0);
            // In a cache, so the kernels read them across its blocks.
            let mut cache = super::cache::NativeCache::new(1, stride);
            let f32s = |x: &[half::f16]| x.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
            cache.append(0, 0, &f32s(&keys), &f32s(&values));
            let head = super::attention::Head {
                kv: cache.layer(0),
                stride,
                offset: dim,
                dim,
                scale: 1.0 / (dim as f32).sqrt(),
                window: None,
                start: len - rows,
                queries: q.chunks_exact(dim).collect(),
            };
            let fast = head.rows(best());
            let portable = head.rows_portable();
            assert_eq!(fast.len(), rows * dim);
            for (i, (a, b)) in fast.iter().zip(&portable).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "dim {dim}, length {len}, row {}, lane {}: {a} vs {b}",
                    i / dim,
                    i % dim
                );
            }
            // Two query heads of this key/value head computed together: each gets its bits
            // alone (the second with other queries).
            if best().avx2().is_some() {
                let q2 = values_scaled(rows * dim, 91 + dim as u64, 3.0);
                let other = super::attention::Head {
                    queries: q2.chunks_exact(dim).collect(),
                    ..head.clone()
                };
                let [a, b] = head.rows_pair(&other, best()).expect("the AVX2 kernel");
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                assert_eq!(
                    bits(&a),
                    bits(&fast),
                    "dim {dim}, length {len}: first of a pair"
                );
                let alone = other.rows(best());
                assert_eq!(
                    bits(&b),
                    bits(&alone),
                    "dim {dim}, length {len}: second of a pair"
                );
            }
            // And both are attention: within the f16 accumulator's rounding of the exact one
            // (a relative 2^-11 per update).
            for (r, out) in portable.chunks_exact(dim).enumerate() {
                let exact = exact_attention(&head, head.queries[r], len - rows + r + 1);
                for (d, (&got, want)) in out.iter().zip(exact).enumerate() {
                    assert!(
                        (got as f64 - want).abs() <= 5e-3 * (1.0 + want.abs()),
                        "dim {dim}, length {len}, row {r}, lane {d}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

fn values_scaled(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    values(n, seed).into_iter().map(|v| v * scale).collect()
}

/// Every tile width of the AVX2 dot kernels (1 to 8 activation rows, at row 0, 4 and 8; with
/// and without AVX-VNNI where the CPU has it) against the portable dot product, bit for bit.
#[cfg(target_arch = "x86_64")]
#[test]
fn every_simd_dot_tile_width_equals_the_portable_dot() {
    let mut kernels: Vec<_> = [(false, false), (true, false), (true, true)]
        .into_iter()
        .filter_map(|(vnni, wide)| super::simd::Avx2::detect(vnni, wide))
        .collect();
    kernels.dedup();
    if kernels.is_empty() {
        eprintln!("this CPU lacks AVX2, FMA or F16C: no SIMD kernel to test");
    }
    let (rows, cols) = (16, 512);
    for avx2 in kernels {
        for (ours, theirs) in TYPES {
            if !super::simd::supports(ours) {
                continue;
            }
            let (bytes, _) = quantized(theirs, 1, cols, 21);
            let x = values(rows * cols, 22);
            let acts = Acts::new(ours.act_kind(), &x, rows, cols);
            // Q4_K and Q6_K tiles may start anywhere (a change of kernel ends a tile).
            let starts: &[usize] = if matches!(ours, WeightType::Q4K | WeightType::Q6K) {
                &[0, 1, 4, 6, 8]
            } else {
                &[0, 4, 8]
            };
            for (&r0, q4k) in starts.iter().flat_map(|r0| {
                [QuantKernel::Gemv, QuantKernel::Gemm, QuantKernel::Tiled].map(|k| (r0, k))
            }) {
                for n in 1..=8 {
                    let mut out = vec![0f32; n];
                    super::simd::dot_tile(avx2, ours, &bytes, &acts, r0, q4k, &mut out);
                    for (c, got) in out.iter().enumerate() {
                        let want = dot_scalar(ours, &bytes, &acts, r0 + c, q4k);
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{} rows {r0}+{c} of a tile of {n} ({q4k:?}, VNNI {}, wide {})",
                            ours.name(),
                            avx2.vnni(),
                            avx2.wide()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gelu_follows_ggmls_f16_table() {
    // (input, output) f16 bits of ggml_table_gelu_f16 as llama.cpp's CPU backend (the
    // xllamacpp build of the goldens) fills it in ggml_cpu_init. Checked against all 63,000
    // finite entries below 10 in magnitude when written; these are a spread of them.
    const TABLE: [(u16, u16); 29] = [
        (0x3c00, 0x3abb),
        (0xbc00, 0xb115),
        (0x0001, 0x0000),
        (0x8001, 0x8000),
        (0x3555, 0x32b9),
        (0xc000, 0xa9d0),
        (0xc8cc, 0x8000),
        (0x48cc, 0x48cc),
        (0x2e66, 0x2ae8),
        (0xae66, 0xa9e4),
        (0x4000, 0x3fd2),
        (0xbe00, 0xae6d),
        (0x1400, 0x1001),
        (0x9400, 0x8ffe),
        (0x3a00, 0x38a4),
        (0xba00, 0xb171),
        (0x3ceb, 0x3c61),
        (0x97b7, 0x93b4),
        (0x8b52, 0x8752),
        (0x2163, 0x1d6f),
        (0x9a9a, 0x9696),
        (0xa02f, 0x9c28),
        (0x94b2, 0x90b1),
        (0x10c6, 0x0cc7),
        (0x9b08, 0x9703),
        (0x035e, 0x01af),
        (0x4265, 0x4264),
        (0x8d00, 0x8900),
        (0x3bfd, 0x3ab8),
    ];
    for (x, want) in TABLE {
        let x = half::f16::from_bits(x).to_f32();
        let want = half::f16::from_bits(want).to_f32();
        assert_eq!(
            super::quant::geglu(x, 1.0).to_bits(),
            want.to_bits(),
            "gelu({x})"
        );
        // The gate multiplies the looked-up value.
        assert_eq!(super::quant::geglu(x, -3.0), want * -3.0);
    }
    // Outside [-10, 10] there is no lookup.
    assert_eq!(super::quant::geglu(-10.0, 2.0), 0.0);
    assert_eq!(super::quant::geglu(12.5, 2.0), 25.0);
    // Inputs are rounded to f16 before the lookup.
    assert_eq!(
        super::quant::geglu(1.0001, 1.0),
        super::quant::geglu(1.0, 1.0)
    );
}

#[test]
fn sliding_window_attention_sees_only_the_window_in_both_kernels() {
    // 150 positions, a window of 40: the last 70 rows take the tiled kernel (its window starts
    // mid-tile and moves across tiles), the last 3 the row kernel. Each row equals exact
    // attention over its window, not over everything before it.
    let (dim, len, window) = (64, 150, 40);
    let keys = f16s(len * dim, 5, 2.0);
    let values = f16s(len * dim, 6, 1.0);
    let mut cache = super::cache::NativeCache::new(1, dim);
    let f32s = |x: &[half::f16]| x.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    cache.append(0, 0, &f32s(&keys), &f32s(&values));
    for rows in [70, 3] {
        let q = values_scaled(rows * dim, 8 + rows as u64, 3.0);
        let head = super::attention::Head {
            kv: cache.layer(0),
            stride: dim,
            offset: 0,
            dim,
            scale: 0.125,
            window: Some(window),
            start: len - rows,
            queries: q.chunks_exact(dim).collect(),
        };
        let out = if rows >= super::attention::TILE {
            head.tiled(best())
        } else {
            head.rows(best())
        };
        let mut far_from_full = false;
        for (r, out) in out.chunks_exact(dim).enumerate() {
            let pos = len - rows + r;
            let exact = exact_attention_from(&head, head.queries[r], pos + 1 - window, pos + 1);
            let full = exact_attention(&head, head.queries[r], pos + 1);
            for (d, &got) in out.iter().enumerate() {
                assert!(
                    (got as f64 - exact[d]).abs() <= 5e-3 * (1.0 + exact[d].abs()),
                    "{rows} rows, row {r}, lane {d}: {got} vs {}",
                    exact[d]
                );
                far_from_full |= (got as f64 - full[d]).abs() > 0.05;
            }
        }
        assert!(far_from_full, "the window changes the result");
    }
}
