//! GGML block formats: decoding weights, quantizing activations, and the portable (scalar)
//! dot products between a weight row and an activation row.
//!
//! The arithmetic follows llama.cpp's CPU backend (ggml-cpu) step for step where it can be
//! reproduced: activations are quantized with the same scale (`127 / max|x|`) and the same
//! rounding (to nearest, ties to even), integer sums are exact, and each block's integer sum
//! is scaled and added in the order of ggml's AVX2 kernels (eight lanes of four consecutive
//! products, summed with `hsum_float_8`). The SIMD kernels in [`super::simd`] give the same
//! bits as these scalar ones.

use half::{bf16, f16};

/// Elements in a block of the 32-element formats.
pub(crate) const QK: usize = 32;
/// Elements in a super-block of the k-quant formats.
pub(crate) const QK_K: usize = 256;

/// A weight format this backend computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl WeightType {
    /// Elements per block.
    pub(crate) fn block_len(self) -> usize {
        match self {
            WeightType::F32 | WeightType::F16 | WeightType::BF16 => 1,
            WeightType::Q4_0
            | WeightType::Q4_1
            | WeightType::Q5_0
            | WeightType::Q5_1
            | WeightType::Q8_0 => QK,
            WeightType::Q4K | WeightType::Q5K | WeightType::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            WeightType::F32 => 4,
            WeightType::F16 | WeightType::BF16 => 2,
            WeightType::Q4_0 => 18,
            WeightType::Q4_1 => 20,
            WeightType::Q5_0 => 22,
            WeightType::Q5_1 => 24,
            WeightType::Q8_0 => 34,
            WeightType::Q4K => 144,
            WeightType::Q5K => 176,
            WeightType::Q6K => 210,
        }
    }

    /// Bytes of a row of `len` elements (`len` a multiple of the block length).
    pub(crate) fn row_bytes(self, len: usize) -> usize {
        len / self.block_len() * self.block_bytes()
    }

    /// How activations are prepared for a dot product with this format (ggml's
    /// `vec_dot_type`).
    pub(crate) fn act_kind(self) -> ActKind {
        match self {
            WeightType::F32 => ActKind::F32,
            WeightType::F16 => ActKind::F16,
            WeightType::BF16 => ActKind::BF16,
            WeightType::Q4_0 | WeightType::Q5_0 | WeightType::Q8_0 => ActKind::Q8_0,
            WeightType::Q4_1 | WeightType::Q5_1 => ActKind::Q8_1,
            WeightType::Q4K | WeightType::Q5K | WeightType::Q6K => ActKind::Q8K,
        }
    }

    /// The format's name as GGML spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            WeightType::F32 => "F32",
            WeightType::F16 => "F16",
            WeightType::BF16 => "BF16",
            WeightType::Q4_0 => "Q4_0",
            WeightType::Q4_1 => "Q4_1",
            WeightType::Q5_0 => "Q5_0",
            WeightType::Q5_1 => "Q5_1",
            WeightType::Q8_0 => "Q8_0",
            WeightType::Q4K => "Q4_K",
            WeightType::Q5K => "Q5_K",
            WeightType::Q6K => "Q6_K",
        }
    }
}

/// Which of llama.cpp's kernels an activation row's products with one matrix follow, where
/// they round differently. llama.cpp's x86 build repacks a Q4_K matrix whose output rows are
/// a multiple of 8 (its "CPU_REPACK" buffer) and multiplies it into a call's rows four at a
/// time with `ggml_gemm_q4_K_8x8_q8_K`, the last `rows % 4` one at a time with
/// `ggml_gemv_q4_K_8x8_q8_K`: both sum the same exact integers and differ in where the floats
/// round, the gemv adding each 256-element super-block into the row's sum with one `fma` (and
/// its mins with one more), the gemm each 64 elements (two sub-blocks). A Q6_K matrix (never
/// repacked) goes through ggml's tiled K-quant product (`ggml-cpu/tiled`) in a call of 8 rows
/// or more, `ggml_vec_dot_q6_K_q8_K` in a smaller one. A row's bits thus depend on how many
/// rows llama.cpp's call has and where the row sits in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum QuantKernel {
    /// One row at a time: `ggml_vec_dot_*`, and `ggml_gemv_q4_K_8x8_q8_K` for a repacked Q4_K
    /// matrix (one `fma` per super-block). A row's bits depend on nothing but the row (the
    /// default).
    #[default]
    Gemv,
    /// A repacked Q4_K matrix's `ggml_gemm_q4_K_8x8_q8_K`: one `fma` per two sub-blocks (64
    /// elements).
    Gemm,
    /// A Q6_K matrix's tiled product (`tiled_run_microtile_avx2`): each super-block's exact
    /// integer sum times the weights' scale, then one `fma` by the activations' scale into the
    /// row's sum (no lanes).
    Tiled,
}

/// How a row of activations is stored for a dot product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ActKind {
    /// Plain f32.
    F32,
    /// Rounded to f16 (kept as the f32 values of those f16s).
    F16,
    /// Rounded to bf16 (kept as f32).
    BF16,
    /// Blocks of 32 int8 with one scale.
    Q8_0,
    /// Blocks of 32 int8 with a scale and the scaled sum of the block.
    Q8_1,
    /// Super-blocks of 256 int8 with an f32 scale and sums of each 16.
    Q8K,
}

/// Rows of activations prepared for dot products with one weight format.
#[derive(Debug, Clone)]
pub(crate) struct Acts {
    pub(crate) kind: ActKind,
    pub(crate) rows: usize,
    pub(crate) len: usize,
    /// Quantized values, `rows * len` (the int8 kinds).
    pub(crate) qs: Vec<i8>,
    /// One scale per block (the int8 kinds), as f32.
    pub(crate) d: Vec<f32>,
    /// Q8_1: `d * sum(qs)` of each block, rounded to f16 as ggml stores it.
    pub(crate) s: Vec<f32>,
    /// Q8_K: the sum of each 16 quantized values (at most 16 x 128 in size, as ggml's
    /// `int16_t bsums`).
    pub(crate) bsums: Vec<i16>,
    /// The float kinds: the (rounded) values.
    pub(crate) f: Vec<f32>,
    /// Q8_0/Q8_1: `d` regrouped by tiles of four rows, `[tile][block][row in tile]` (zeros
    /// past the last row), so a kernel loads one tile's four scales of a block at once.
    pub(crate) d4: Vec<f32>,
    /// Q8_1: `s` regrouped the same way.
    pub(crate) s4: Vec<f32>,
}

impl Acts {
    /// Prepares `rows` rows of `len` values (`x.len() == rows * len`).
    #[inline(always)]
    pub(crate) fn new(kind: ActKind, x: &[f32], rows: usize, len: usize) -> Acts {
        let mut a = Acts::unpacked(kind, x, rows, len);
        a.pack4();
        a
    }

    /// [`Acts::new`] without the tile-packed scales (for parts joined and packed later).
    /// Inlined into each instruction set's code (`Isa::run`): its rounding is one
    /// instruction with SSE4.1, a libm call without.
    #[inline(always)]
    pub(crate) fn unpacked(kind: ActKind, x: &[f32], rows: usize, len: usize) -> Acts {
        debug_assert_eq!(x.len(), rows * len);
        let mut a = Acts {
            kind,
            rows,
            len,
            qs: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            bsums: Vec::new(),
            f: Vec::new(),
            d4: Vec::new(),
            s4: Vec::new(),
        };
        match kind {
            ActKind::F32 => a.f = x.to_vec(),
            ActKind::F16 => a.f = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
            ActKind::BF16 => a.f = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect(),
            ActKind::Q8_0 | ActKind::Q8_1 => {
                a.qs = vec![0; x.len()];
                a.d = vec![0.0; x.len() / QK];
                if kind == ActKind::Q8_1 {
                    a.s = vec![0.0; x.len() / QK];
                }
                for (b, (xs, qs)) in x
                    .chunks_exact(QK)
                    .zip(a.qs.chunks_exact_mut(QK))
                    .enumerate()
                {
                    let (d, sum) = quantize_q8_block(xs, qs);
                    a.d[b] = f16::from_f32(d).to_f32();
                    if kind == ActKind::Q8_1 {
                        a.s[b] = f16::from_f32(d * sum as f32).to_f32();
                    }
                }
            }
            ActKind::Q8K => {
                a.qs = vec![0; x.len()];
                a.d = vec![0.0; x.len() / QK_K];
                a.bsums = vec![0; x.len() / 16];
                for (b, (xs, qs)) in x
                    .chunks_exact(QK_K)
                    .zip(a.qs.chunks_exact_mut(QK_K))
                    .enumerate()
                {
                    a.d[b] = quantize_q8k_block(xs, qs);
                    for (j, q16) in qs.chunks_exact(16).enumerate() {
                        a.bsums[b * 16 + j] = q16.iter().map(|&q| q as i16).sum();
                    }
                }
            }
        }
        a
    }

    /// Fills [`Acts::d4`] and [`Acts::s4`] from `d` and `s`.
    pub(crate) fn pack4(&mut self) {
        if !matches!(self.kind, ActKind::Q8_0 | ActKind::Q8_1) {
            return;
        }
        let nb = self.len / QK;
        let tiles = self.rows.div_ceil(4);
        let pack = |src: &[f32]| {
            let mut out = vec![0f32; tiles * nb * 4];
            for r in 0..self.rows {
                let (tile, lane) = (r / 4, r % 4);
                for b in 0..nb {
                    out[(tile * nb + b) * 4 + lane] = src[r * nb + b];
                }
            }
            out
        };
        self.d4 = pack(&self.d);
        if self.kind == ActKind::Q8_1 {
            self.s4 = pack(&self.s);
        }
    }
}

/// ggml's `quantize_row_q8_0`/`q8_1` for one block: `d = max|x| / 127`, values
/// `round(x * 127 / max|x|)` (ties to even, as `_mm256_round_ps` rounds). Returns `d` (before
/// its rounding to f16) and the sum of the quantized values.
#[inline]
fn quantize_q8_block(xs: &[f32], qs: &mut [i8]) -> (f32, i32) {
    let amax = xs.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0;
    for (q, &v) in qs.iter_mut().zip(xs) {
        let r = (v * id).round_ties_even() as i32;
        *q = r as i8;
        sum += r;
    }
    (d, sum)
}

/// ggml's `quantize_row_q8_K_ref` for one super-block: the scale comes from the value of
/// largest magnitude with its sign, `iscale = -127 / max`, values clamped to 127. Returns
/// `d = 1 / iscale`.
#[inline]
fn quantize_q8k_block(xs: &[f32], qs: &mut [i8]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in xs {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        qs.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in qs.iter_mut().zip(xs) {
        *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
    }
    1.0 / iscale
}

#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// ggml's `hsum_float_8`: the two 128-bit halves added, then lanes (0+2, 1+3), then those two.
#[inline]
pub(crate) fn hsum8(v: &[f32; 8]) -> f32 {
    let r = [v[4] + v[0], v[5] + v[1], v[6] + v[2], v[7] + v[3]];
    let r = [r[0] + r[2], r[1] + r[3]];
    r[0] + r[1]
}

/// Adds `d * (sum of each 4 consecutive products)` into eight lanes, as ggml's AVX2 kernels do
/// for one 32-element block.
#[inline(always)]
fn lanes_fma(acc: &mut [f32; 8], d: f32, w: &[i32; 32], a: &[i8]) {
    for l in 0..8 {
        let mut s = 0i32;
        for j in 0..4 {
            s += w[4 * l + j] * a[4 * l + j] as i32;
        }
        acc[l] = d.mul_add(s as f32, acc[l]);
    }
}

/// Decodes the 32 nibbles of a Q4 block: low nibbles are elements 0..16, high ones 16..32.
#[inline(always)]
fn nibbles(qs: &[u8], offset: i32) -> [i32; 32] {
    let mut w = [0i32; 32];
    for j in 0..16 {
        w[j] = (qs[j] & 0x0f) as i32 - offset;
        w[j + 16] = (qs[j] >> 4) as i32 - offset;
    }
    w
}

/// The 32 fifth bits of a Q5 block (`qh`, little-endian) added to its nibbles, as bit 4:
/// element `j` takes bit `j` (ggml's `xh_0`/`xh_1`).
#[inline(always)]
fn with_high_bits(mut w: [i32; 32], qh: &[u8], offset: i32) -> [i32; 32] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, w) in w.iter_mut().enumerate() {
        *w += (((qh >> j) & 1) << 4) as i32 - offset;
    }
    w
}

/// Whether a 32-element format stores a min (`m` at byte 2) besides its scale.
fn has_min(ty: WeightType) -> bool {
    matches!(ty, WeightType::Q4_1 | WeightType::Q5_1)
}

/// The 32 integer weights of one block of a 32-element format (scale `d` at byte 0), with the
/// offset of the formats without a min already taken off (Q4_0: 8, Q5_0: 16).
#[inline(always)]
fn block32(ty: WeightType, b: &[u8]) -> [i32; 32] {
    match ty {
        WeightType::Q4_0 => nibbles(&b[2..18], 8),
        WeightType::Q4_1 => nibbles(&b[4..20], 0),
        WeightType::Q5_0 => with_high_bits(nibbles(&b[6..22], 0), &b[2..6], 16),
        WeightType::Q5_1 => with_high_bits(nibbles(&b[8..24], 0), &b[4..8], 0),
        _ => {
            let mut w = [0i32; 32];
            for (w, &q) in w.iter_mut().zip(&b[2..34]) {
                *w = q as i8 as i32;
            }
            w
        }
    }
}

/// `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` of a Q4_K super-block.
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 6-bit values (0..64) of a Q6_K super-block, in element order.
#[inline]
pub(crate) fn q6k_values(block: &[u8]) -> [u8; QK_K] {
    let (ql, rest) = block.split_at(128);
    let qh = &rest[..64];
    let mut out = [0u8; QK_K];
    for half in 0..2 {
        let (ql, qh) = (&ql[half * 64..], &qh[half * 32..]);
        let y = &mut out[half * 128..];
        for l in 0..32 {
            y[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
            y[l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
            y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    out
}

/// Decodes one row of weights into f32 (`out.len()` elements).
pub(crate) fn dequantize_row(ty: WeightType, row: &[u8], out: &mut [f32]) {
    match ty {
        WeightType::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        WeightType::F16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        WeightType::BF16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        WeightType::Q4_0
        | WeightType::Q4_1
        | WeightType::Q5_0
        | WeightType::Q5_1
        | WeightType::Q8_0 => {
            for (o, b) in out
                .chunks_exact_mut(QK)
                .zip(row.chunks_exact(ty.block_bytes()))
            {
                let d = f16_at(b, 0);
                let w = block32(ty, b);
                if has_min(ty) {
                    let m = f16_at(b, 2);
                    for (o, w) in o.iter_mut().zip(w) {
                        *o = w as f32 * d + m;
                    }
                } else {
                    for (o, w) in o.iter_mut().zip(w) {
                        *o = w as f32 * d;
                    }
                }
            }
        }
        WeightType::Q4K => {
            for (o, b) in out.chunks_exact_mut(QK_K).zip(row.chunks_exact(144)) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let (scales, qs) = (&b[4..16], &b[16..144]);
                for j in 0..4 {
                    let (sc1, m1) = scale_min_k4(2 * j, scales);
                    let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
                    let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
                    let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
                    let q = &qs[32 * j..32 * j + 32];
                    for l in 0..32 {
                        o[64 * j + l] = d1 * (q[l] & 0x0f) as f32 - m1;
                        o[64 * j + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
                    }
                }
            }
        }
        WeightType::Q5K => {
            for (o, b) in out.chunks_exact_mut(QK_K).zip(row.chunks_exact(176)) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let values = q5k_values(b);
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, &b[4..16]);
                    let (d, m) = (d * sc as f32, dmin * m as f32);
                    for l in 0..32 {
                        o[32 * j + l] = d * values[32 * j + l] as f32 - m;
                    }
                }
            }
        }
        WeightType::Q6K => {
            for (o, b) in out.chunks_exact_mut(QK_K).zip(row.chunks_exact(210)) {
                let d = f16_at(b, 208);
                let values = q6k_values(b);
                for (i, o) in o.iter_mut().enumerate() {
                    let sc = b[192 + i / 16] as i8 as f32;
                    *o = d * sc * (values[i] as i32 - 32) as f32;
                }
            }
        }
    }
}

/// ggml's `ggml_vec_dot_f16` (AVX2: four accumulators of eight lanes over each 32 elements,
/// reduced pairwise), with `b` holding the f32 values of f16s.
pub(crate) fn dot_f32_ggml(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let np = n & !31;
    let mut acc = [[0f32; 8]; 4];
    let mut i = 0;
    while i < np {
        for (j, acc) in acc.iter_mut().enumerate() {
            let (x, y) = (&a[i + 8 * j..i + 8 * j + 8], &b[i + 8 * j..i + 8 * j + 8]);
            for l in 0..8 {
                acc[l] = x[l].mul_add(y[l], acc[l]);
            }
        }
        i += 32;
    }
    let mut r = [0f32; 8];
    for l in 0..8 {
        r[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let t0 = [r[0] + r[4], r[1] + r[5], r[2] + r[6], r[3] + r[7]];
    let t1 = [t0[0] + t0[1], t0[2] + t0[3]];
    let mut sum = (t1[0] + t1[1]) as f64;
    for k in np..n {
        sum += (a[k] * b[k]) as f64;
    }
    sum as f32
}

/// The dot product of one weight row with row `r` of `acts` (portable code); a Q4_K or Q6_K
/// row with the float steps of `kernel`.
pub(crate) fn dot_scalar(
    ty: WeightType,
    row: &[u8],
    acts: &Acts,
    r: usize,
    kernel: QuantKernel,
) -> f32 {
    let len = acts.len;
    match ty {
        WeightType::F32 | WeightType::F16 | WeightType::BF16 => {
            let mut w = vec![0f32; len];
            dequantize_row(ty, row, &mut w);
            dot_f32_ggml(&w, &acts.f[r * len..(r + 1) * len])
        }
        WeightType::Q4_0
        | WeightType::Q4_1
        | WeightType::Q5_0
        | WeightType::Q5_1
        | WeightType::Q8_0 => {
            let nb = len / QK;
            let qs = &acts.qs[r * len..];
            let mut acc = [0f32; 8];
            let mut summs = 0f32;
            for (i, b) in row.chunks_exact(ty.block_bytes()).take(nb).enumerate() {
                let dy = acts.d[r * nb + i];
                let dx = f16_at(b, 0);
                if has_min(ty) {
                    summs = f16_at(b, 2).mul_add(acts.s[r * nb + i], summs);
                }
                lanes_fma(
                    &mut acc,
                    dx * dy,
                    &block32(ty, b),
                    &qs[i * QK..(i + 1) * QK],
                );
            }
            hsum8(&acc) + summs
        }
        WeightType::Q4K => {
            // llama.cpp's AVX2 build repacks Q4_K matrices (rows a multiple of 8) and runs
            // `ggml_gemv_q4_K_8x8_q8_K` or `ggml_gemm_q4_K_8x8_q8_K` ([`QuantKernel`]): the
            // integer sums of each two sub-blocks, `fma`-ed by `d * dy` (and the min sums by
            // `dmin * dy`) per super-block or per two sub-blocks, the min sums subtracted at
            // the end.
            let nb = len / QK_K;
            let (mut acc, mut acc_min) = (0f32, 0f32);
            for (i, b) in row.chunks_exact(144).take(nb).enumerate() {
                let q8 = &acts.qs[r * len + i * QK_K..r * len + (i + 1) * QK_K];
                let bsums = &acts.bsums[(r * nb + i) * 16..(r * nb + i + 1) * 16];
                let pairs = q4k_pair_sums(b, q8, bsums);
                let dy = acts.d[r * nb + i];
                let (d, dmin) = (f16_at(b, 0) * dy, f16_at(b, 2) * dy);
                match kernel {
                    // A Q4_K matrix takes the tiled product only unrepacked, which this backend
                    // does not follow ([`super::matmul::Input`] never asks for it).
                    QuantKernel::Gemv | QuantKernel::Tiled => {
                        let sumi: i32 = pairs.iter().map(|p| p.0).sum();
                        let mins: i32 = pairs.iter().map(|p| p.1).sum();
                        acc = (sumi as f32).mul_add(d, acc);
                        acc_min = (mins as f32).mul_add(dmin, acc_min);
                    }
                    QuantKernel::Gemm => {
                        for (sumi, mins) in pairs {
                            acc = (sumi as f32).mul_add(d, acc);
                            acc_min = (mins as f32).mul_add(dmin, acc_min);
                        }
                    }
                }
            }
            acc - acc_min
        }
        WeightType::Q5K => {
            let nb = len / QK_K;
            let mut acc = [0f32; 8];
            let mut summs = 0f32;
            for (i, b) in row.chunks_exact(176).take(nb).enumerate() {
                let q8 = &acts.qs[r * len + i * QK_K..r * len + (i + 1) * QK_K];
                let bsums = &acts.bsums[(r * nb + i) * 16..(r * nb + i + 1) * 16];
                let dy = acts.d[r * nb + i];
                let (lanes, mins) = q5k_block_sums(b, q8, bsums);
                summs = (-dy * f16_at(b, 2)).mul_add(mins as f32, summs);
                let d = dy * f16_at(b, 0);
                for (a, &l) in acc.iter_mut().zip(&lanes) {
                    *a = d.mul_add(l as f32, *a);
                }
            }
            hsum8(&acc) + summs
        }
        WeightType::Q6K if kernel == QuantKernel::Tiled => {
            let nb = len / QK_K;
            let mut acc = 0f32;
            for (i, b) in row.chunks_exact(210).take(nb).enumerate() {
                let q8 = &acts.qs[r * len + i * QK_K..r * len + (i + 1) * QK_K];
                let values = q6k_values(b);
                let mut sum = 0i32;
                for (j, (w, y)) in values.chunks_exact(16).zip(q8.chunks_exact(16)).enumerate() {
                    let p: i32 = w
                        .iter()
                        .zip(y)
                        .map(|(&w, &y)| (w as i32 - 32) * y as i32)
                        .sum();
                    sum += p * b[192 + j] as i8 as i32;
                }
                acc = (f16_at(b, 208) * sum as f32).mul_add(acts.d[r * nb + i], acc);
            }
            acc
        }
        WeightType::Q6K => {
            // ggml_vec_dot_q6_K_q8_K (AVX2): eight integer lanes per super-block, each
            // `fma`-ed by `dy * d` into its float lane, the lanes summed at the end. Lane `l`
            // holds `scale * q * q8` (q unsigned, 0..64) of bytes `4l..4l + 4` of every
            // 32 values, less the weights' offset of 32 over sub-blocks `2l` and `2l + 1`
            // (`32 * scale * bsum`): the lanes' split of the block's sum is ggml's, and with
            // it the float rounding.
            let nb = len / QK_K;
            let mut acc = [0f32; 8];
            for (i, b) in row.chunks_exact(210).take(nb).enumerate() {
                let q8 = &acts.qs[r * len + i * QK_K..r * len + (i + 1) * QK_K];
                let bsums = &acts.bsums[(r * nb + i) * 16..(r * nb + i + 1) * 16];
                let values = q6k_values(b);
                let scale = |j: usize| b[192 + j] as i8 as i32;
                let mut lanes = [0i32; 8];
                for c in 0..8 {
                    for (l, lane) in lanes.iter_mut().enumerate() {
                        let at = 32 * c + 4 * l;
                        let mut p = 0i32;
                        for k in at..at + 4 {
                            p += values[k] as i32 * q8[k] as i32;
                        }
                        *lane += p * scale(at / 16);
                    }
                }
                for (l, lane) in lanes.iter_mut().enumerate() {
                    *lane -= 32
                        * (bsums[2 * l] as i32 * scale(2 * l)
                            + bsums[2 * l + 1] as i32 * scale(2 * l + 1));
                }
                let d = acts.d[r * nb + i] * f16_at(b, 208);
                for (a, &l) in acc.iter_mut().zip(&lanes) {
                    *a = d.mul_add(l as f32, *a);
                }
            }
            hsum8(&acc)
        }
    }
}

/// The integer parts of a Q4_K x Q8_K super-block, per two sub-blocks `2k, 2k + 1` (64
/// elements): `sum(scale_j * q4 . q8)` and `sum(min_j * sum(q8 of sub-block j))` over the two.
pub(crate) fn q4k_pair_sums(b: &[u8], q8: &[i8], bsums: &[i16]) -> [(i32, i32); 4] {
    let (scales, qs) = (&b[4..16], &b[16..144]);
    let mut out = [(0i32, 0i32); 4];
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        let shift = if j % 2 == 0 { 0 } else { 4 };
        let mut p = 0i32;
        for l in 0..32 {
            p += ((q[l] >> shift) & 0x0f) as i32 * q8[32 * j + l] as i32;
        }
        out[j / 2].0 += p * sc as i32;
        out[j / 2].1 += (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32) * m as i32;
    }
    out
}

/// The 5-bit values (0..32) of a Q5_K super-block, in element order: sub-block `j` takes the
/// low (even `j`) or high (odd `j`) nibbles of bytes `32 * (j / 2)..` and bit `j` of `qh`.
pub(crate) fn q5k_values(block: &[u8]) -> [u8; QK_K] {
    let (qh, qs) = (&block[16..48], &block[48..176]);
    let mut out = [0u8; QK_K];
    for j in 0..8 {
        let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        let shift = if j % 2 == 0 { 0 } else { 4 };
        for l in 0..32 {
            out[32 * j + l] = ((q[l] >> shift) & 0x0f) | (((qh[l] >> j) & 1) << 4);
        }
    }
    out
}

/// The integer parts of a Q5_K x Q8_K super-block as ggml's AVX2 kernel holds them: eight
/// lanes, lane `l` the sum over sub-blocks `j` of `scale_j` times the products of elements
/// `32 j + 4 l..32 j + 4 l + 4`; and `sum(min_j * sum(q8 of sub-block j))`.
pub(crate) fn q5k_block_sums(b: &[u8], q8: &[i8], bsums: &[i16]) -> ([i32; 8], i32) {
    let values = q5k_values(b);
    let mut lanes = [0i32; 8];
    let mut mins = 0i32;
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &b[4..16]);
        for (l, lane) in lanes.iter_mut().enumerate() {
            let mut p = 0i32;
            for k in 32 * j + 4 * l..32 * j + 4 * l + 4 {
                p += values[k] as i32 * q8[k] as i32;
            }
            *lane += p * sc as i32;
        }
        mins += (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32) * m as i32;
    }
    (lanes, mins)
}

/// ggml's vectorized `expf` (`ggml_v_expf`, AVX2), one lane: a polynomial after range
/// reduction, within about 1.5 ulp of the true value. ggml's SiLU and softmax use it.
#[inline]
pub(crate) fn v_expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // 0x1.715476p+0
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),                  // 0x1.7f7d1cp-20
        (-n).mul_add(f32::from_bits(0x3f31_7200), x), // 0x1.62e4p-1
    );
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010) // 0x1.0e4020p-7
        .mul_add(b, f32::from_bits(0x3d2b_9f17)) // 0x1.573e2ep-5
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)), // 0x1.555e66p-3, 0x1.fffdb6p-2
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6) * b); // 0x1.ffffecp-1
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// ggml's SiLU: `x / (1 + exp(-x))` with [`v_expf`].
#[inline]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + v_expf(-x))
}

/// ggml's `ggml_gelu_f32` (the tanh approximation), with the one product GCC fuses in
/// llama.cpp's build (`1 + a*x*x` as `fma(a*x, x, 1)`) and libm's `tanhf`.
fn gelu_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh())
}

/// ggml's `ggml_table_gelu_f16`: GELU of every f16, rounded to f16.
fn gelu_table() -> &'static [f16] {
    static TABLE: std::sync::OnceLock<Vec<f16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_f32(f16::from_bits(bits).to_f32())))
            .collect()
    })
}

/// ggml's `ggml_vec_geglu_f32` on the CPU (built with `GGML_GELU_FP16`): `gelu(x) * g`, with
/// GELU looked up for `x` rounded to f16, 0 below -10 and `x` itself above 10.
pub(crate) fn geglu(x: f32, g: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x * g
    } else {
        gelu_table()[f16::from_f32(x).to_bits() as usize].to_f32() * g
    }
}
