//! AVX2 kernels: dot products of one weight row with up to eight activation rows at once,
//! and one query row of flash attention over an f16 cache.
//!
//! A weight block is loaded and unpacked once and multiplied into every activation row of
//! the tile, which is what makes a batch of rows cheaper than the same rows one by one. Each
//! (weight row, activation row) pair goes through exactly the operations of ggml's AVX2
//! kernel for one row (eight lanes of four consecutive products, `fma` by the block scale,
//! `hsum_float_8`), so the result does not depend on the tile and equals
//! [`super::quant::dot_scalar`] bit for bit.
//!
//! Picked at run time: the kernels are compiled whatever the build's target CPU, and the safe
//! entry points take an [`Avx2`], which only [`Avx2::detect`] makes, after asking the CPU.
//! That is what makes them sound. The entry points ([`dot_n_avx2`], [`dot_n_vnni`],
//! [`flash_row_inner`]) are `#[target_feature]` functions, reached once per tile or query row;
//! the format kernels below them are `#[inline(always)] unsafe fn`s generic over `VNNI`, so
//! each is compiled into both entry points with that entry point's features (AVX-VNNI's
//! `vpdpbusd` or AVX2's two-step multiply-add: the same sums); the small helpers are
//! `#[inline] #[target_feature(enable = "avx2,fma")]` (F16C for [`f16_at`]). Nothing a
//! kernel calls per block may be a plain function of another module (it would be compiled
//! without the features): use this module's helpers or `#[inline]` ones.
//!
//! A new kernel: an `#[inline(always)] unsafe fn k<const N: usize, const VNNI: bool>` (safety:
//! the caller has AVX2, FMA and F16C, and AVX-VNNI when `VNNI`) that takes its 8-bit products
//! from `dot_us8::<VNNI>`, one arm in [`dot_body`] and one format in [`supports`].

// The loads below read 16 or 32 bytes from slices whose length is checked first, and the
// kernels run only where the CPU has their features.
#![allow(unsafe_code)]
// The format kernels are `unsafe fn`s only for their CPU features (see the module doc): their
// bodies call intrinsics throughout.
#![allow(unsafe_op_in_unsafe_fn)]
// Tiles index several per-row arrays by the same row number.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::quant::{Acts, QK, QK_K, QuantKernel, WeightType, q6k_values, scale_min_k4};

/// Proof that the CPU has AVX2, FMA and F16C (and whether it has AVX-VNNI, and AVX-512's
/// registers besides): the key to this module's kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Avx2 {
    vnni: bool,
    wide: bool,
}

impl Avx2 {
    /// The kernels, when the CPU has AVX2, FMA and F16C; with AVX-VNNI when `vnni` is wanted
    /// and the CPU has it; compiled with AVX-512 (F, VL, BW, DQ, CD, VBMI, VNNI) and GFNI
    /// when `wide` is wanted too and the CPU has them (the same operations, 32 vector
    /// registers).
    pub(crate) fn detect(vnni: bool, wide: bool) -> Option<Avx2> {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let vnni = vnni && is_x86_feature_detected!("avxvnni");
        // What a `-C target-cpu=native` build gets on such a CPU besides AVX-512's registers:
        // GFNI and AVX-512's byte permutes, which the compiler uses for the unpacking of
        // 4- and 5-bit weights.
        // A build that targets AVX-512 already compiles every set with it.
        let wide = wide
            && vnni
            && !cfg!(target_feature = "avx512f")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512cd")
            && is_x86_feature_detected!("avx512vbmi")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("gfni")
            && is_x86_feature_detected!("bmi1")
            && is_x86_feature_detected!("bmi2")
            && is_x86_feature_detected!("lzcnt")
            && is_x86_feature_detected!("popcnt")
            && is_x86_feature_detected!("movbe");
        avx2.then_some(Avx2 { vnni, wide })
    }

    /// Whether the 8-bit dot products use AVX-VNNI.
    pub(crate) fn vnni(self) -> bool {
        self.vnni
    }

    /// Whether the kernels are compiled with AVX-512's registers and encodings.
    pub(crate) fn wide(self) -> bool {
        self.wide
    }

    /// Runs portable code compiled for AVX2, FMA and F16C (`mul_add` one instruction, wider
    /// loops; the same bits), and AVX-512 where the set is wide. Only what is inlined here
    /// gets the features: pass an `#[inline(always)]` closure, whose callees are `#[inline]`
    /// (small) or `#[inline(always)]` (big bodies).
    pub(crate) fn run<R>(self, f: impl FnOnce() -> R) -> R {
        // SAFETY: an `Avx2` is made only when the CPU has these features (and AVX-512's
        // when `wide`).
        unsafe { if self.wide { run_wide(f) } else { run_avx2(f) } }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Compiles a function for the wide set: AVX2, FMA, F16C and AVX-VNNI with AVX-512 (F, VL,
/// BW, DQ, CD, VBMI, VNNI), GFNI and BMI, the one list of its features ([`Avx2::detect`] asks
/// the CPU for each).
macro_rules! wide {
    ($f:item) => {
        #[target_feature(
            enable = "avx2,fma,f16c,avxvnni,avx512f,avx512vl,avx512bw,avx512dq,avx512cd,avx512vbmi,avx512vnni,gfni,bmi1,bmi2,lzcnt,popcnt,movbe"
        )]
        $f
    };
}

wide! {
    fn run_wide<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// Whether [`dot_tile`] has a kernel for this format.
pub(crate) fn supports(ty: WeightType) -> bool {
    matches!(
        ty,
        WeightType::Q4_0
            | WeightType::Q4_1
            | WeightType::Q5_0
            | WeightType::Q5_1
            | WeightType::Q8_0
            | WeightType::Q4K
            | WeightType::Q6K
    )
}

/// `out[c] = row . acts[r0 + c]` for `c < out.len()` (at most 8; `r0` a multiple of 4 for
/// the 32-element formats), Q4_K and Q6_K rows with `kernel`'s float steps.
#[cfg(test)]
pub(crate) fn dot_tile(
    avx2: Avx2,
    ty: WeightType,
    row: &[u8],
    acts: &Acts,
    r0: usize,
    kernel: QuantKernel,
    out: &mut [f32],
) {
    let n = out.len();
    let tiles = Tiles {
        ty,
        rows: &[row],
        acts,
        r0,
        kernel,
        stride: n,
    };
    dot_tiles(avx2, tiles, n, out);
}

/// Weight rows against activation rows `r0..r0 + n`: what [`dot_tiles`] is asked.
#[derive(Clone, Copy)]
pub(crate) struct Tiles<'a> {
    /// The rows' format.
    pub(crate) ty: WeightType,
    /// The weight rows (a block of them).
    pub(crate) rows: &'a [&'a [u8]],
    /// The prepared activations.
    pub(crate) acts: &'a Acts,
    /// The first activation row.
    pub(crate) r0: usize,
    /// The float steps of Q4_K and Q6_K rows.
    pub(crate) kernel: QuantKernel,
    /// Outputs of weight row `i` start at `i * stride`.
    pub(crate) stride: usize,
}

/// `out[i * stride + c] = rows[i] . acts[r0 + c]` for every weight row `i` and `c < n` (`n` at
/// most 8). One call runs a whole block of weight rows, so the dispatch to the
/// `#[target_feature]` code (a real call in a build that does not target AVX2) is paid once
/// per block, not once per row.
pub(crate) fn dot_tiles(avx2: Avx2, tiles: Tiles<'_>, n: usize, out: &mut [f32]) {
    assert!(tiles.rows.is_empty() || (tiles.rows.len() - 1) * tiles.stride + n <= out.len());
    match n {
        1 => dot_n::<1>(avx2, tiles, out),
        2 => dot_n::<2>(avx2, tiles, out),
        3 => dot_n::<3>(avx2, tiles, out),
        4 => dot_n::<4>(avx2, tiles, out),
        5 => dot_n::<5>(avx2, tiles, out),
        6 => dot_n::<6>(avx2, tiles, out),
        7 => dot_n::<7>(avx2, tiles, out),
        8 => dot_n::<8>(avx2, tiles, out),
        n => panic!("dot_tiles takes 1 to 8 activation rows, not {n}"),
    }
}

/// One weight row against activation rows `r0..`: what [`dot_body`] computes.
#[derive(Clone, Copy)]
struct Tile<'a> {
    ty: WeightType,
    row: &'a [u8],
    acts: &'a Acts,
    r0: usize,
    kernel: QuantKernel,
}

/// Each row of `tiles` in turn, through `dot_body::<N, VNNI>`.
///
/// # Safety
///
/// As [`dot_body`]'s.
#[inline(always)]
unsafe fn each_row<const N: usize, const VNNI: bool>(tiles: Tiles<'_>, out: &mut [f32]) {
    for (i, &row) in tiles.rows.iter().enumerate() {
        let tile = Tile {
            ty: tiles.ty,
            row,
            acts: tiles.acts,
            r0: tiles.r0,
            kernel: tiles.kernel,
        };
        let at = i * tiles.stride;
        dot_body::<N, VNNI>(tile, &mut out[at..at + N]);
    }
}

#[inline]
fn dot_n<const N: usize>(avx2: Avx2, tiles: Tiles<'_>, out: &mut [f32]) {
    // SAFETY: an `Avx2` proves AVX2, FMA and F16C, AVX-VNNI when `vnni` is set, and AVX-512
    // when `wide` is.
    unsafe {
        if avx2.wide {
            dot_n_wide::<N>(tiles, out)
        } else if avx2.vnni {
            dot_n_vnni::<N>(tiles, out)
        } else {
            dot_n_avx2::<N>(tiles, out)
        }
    }
}

wide! {
    fn dot_n_wide<const N: usize>(tiles: Tiles<'_>, out: &mut [f32]) {
        // SAFETY: this function has AVX2, FMA, F16C, AVX-VNNI and AVX-512.
        unsafe { each_row::<N, true>(tiles, out) }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_n_avx2<const N: usize>(tiles: Tiles<'_>, out: &mut [f32]) {
    // SAFETY: this function has AVX2, FMA and F16C.
    unsafe { each_row::<N, false>(tiles, out) }
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn dot_n_vnni<const N: usize>(tiles: Tiles<'_>, out: &mut [f32]) {
    // SAFETY: this function has AVX2, FMA, F16C and AVX-VNNI.
    unsafe { each_row::<N, true>(tiles, out) }
}

/// The kernel of each format.
///
/// # Safety
///
/// The CPU has AVX2, FMA and F16C, and AVX-VNNI when `VNNI` (the caller has those features,
/// so this is compiled with them).
#[inline(always)]
unsafe fn dot_body<const N: usize, const VNNI: bool>(tile: Tile<'_>, out: &mut [f32]) {
    let Tile {
        ty,
        row,
        acts,
        r0,
        kernel,
    } = tile;
    let res = match ty {
        WeightType::Q4_0
        | WeightType::Q4_1
        | WeightType::Q5_0
        | WeightType::Q5_1
        | WeightType::Q8_0 => q32::<N, VNNI>(ty, row, acts, r0),
        // An unrepacked Q4_K matrix never asks for `Tiled` (see `quant::dot_scalar`).
        WeightType::Q4K => match kernel {
            QuantKernel::Gemv | QuantKernel::Tiled => q4k::<N, VNNI, false>(row, acts, r0),
            QuantKernel::Gemm => q4k::<N, VNNI, true>(row, acts, r0),
        },
        WeightType::Q6K => match kernel {
            QuantKernel::Gemv | QuantKernel::Gemm => q6k::<N, VNNI, false>(row, acts, r0),
            QuantKernel::Tiled => q6k::<N, VNNI, true>(row, acts, r0),
        },
        _ => unreachable!("no AVX2 kernel for {}", ty.name()),
    };
    out.copy_from_slice(&res);
}

/// The little-endian f16 at byte `at` of `b`, widened with F16C: exact, the same value as
/// [`super::quant::f16_at`] (which, in a build without F16C, would ask the CPU every call).
///
/// Without AVX-512 FP16 in the build, written as two instructions the compiler keeps: from
/// `_mm_cvtph_ps` of one value it emits
/// `vpinsrw` into lane 0, which merges with whatever register it picks, and where that was a
/// loop's accumulator every block waited for the last one's `fma` (in a build without
/// AVX-512, whose `vmovsh` has no such input: decode 15% slower). `vmovd` writes the whole
/// register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_at(b: &[u8], at: usize) -> f32 {
    let h = u16::from_le_bytes([b[at], b[at + 1]]);
    if cfg!(target_feature = "avx512fp16") {
        // `vmovsh` and `vcvtsh2ss`: no merge, and one instruction fewer.
        return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))));
    }
    let h = u32::from(h);
    let x: __m128;
    // SAFETY: register-only instructions of the features this function has (AVX, F16C).
    unsafe {
        core::arch::asm!(
            "vmovd {x}, {h:e}",
            "vcvtph2ps {x}, {x}",
            h = in(reg) h,
            x = out(xmm_reg) x,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    _mm_cvtss_f32(x)
}

/// 16 bytes from the start of `b` (bytes or int8s).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load16<T: Copy>(b: &[T]) -> __m128i {
    assert!(size_of::<T>() == 1 && b.len() >= 16);
    // SAFETY: at least 16 readable bytes (checked above); unaligned load.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// 32 bytes from the start of `b` (bytes or int8s).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load32<T: Copy>(b: &[T]) -> __m256i {
    assert!(size_of::<T>() == 1 && b.len() >= 32);
    // SAFETY: at least 32 readable bytes (checked above); unaligned load.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// ggml's `bytes_from_nibbles_32`: low nibbles in the low 128 bits, high ones above.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn nibbles(qs: &[u8]) -> __m256i {
    let tmp = load16(qs);
    let bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    _mm256_and_si256(bytes, _mm256_set1_epi8(0x0f))
}

/// ggml's `bytes_from_bits_32`: byte `j` all ones where bit `j` of the 32 bits at `qh` (Q5's
/// fifth bits, little-endian) is set, zero elsewhere.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn bytes_from_bits(qh: &[u8]) -> __m256i {
    let x32 = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let shuffle = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32 as i32), shuffle);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Eight i32 lanes, each the sum of four consecutive u8 x i8 products (no pair of products
/// here can saturate the 16-bit step: weights are at most 15, or 127 with `|y| <= 127`), so
/// AVX-VNNI (`VNNI`) and AVX2 give the same sums.
///
/// # Safety
///
/// As [`dot_body`]'s.
#[inline(always)]
unsafe fn dot_us8<const VNNI: bool>(x: __m256i, y: __m256i) -> __m256i {
    if VNNI {
        vnni(x, y)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
    }
}

/// `acc` plus [`dot_us8`]`(x, y)` times `scale`, lane by lane, where `scale` holds each
/// lane's factor in both its 16-bit halves: the u8 x i8 pairs summed to 16 bits (no pair can
/// saturate, as in [`dot_us8`]), then multiplied by the scale and summed in pairs to 32 bits:
/// the same integers as [`dot_us8`] times the scale, in one `vpdpwssd` with AVX-VNNI (where
/// `vpmulld` took two micro-ops).
///
/// # Safety
///
/// As [`dot_body`]'s.
#[inline(always)]
unsafe fn dot_scaled_add<const VNNI: bool>(
    acc: __m256i,
    x: __m256i,
    y: __m256i,
    scale: __m256i,
) -> __m256i {
    let pairs = _mm256_maddubs_epi16(x, y);
    if VNNI {
        vnni_words_add(acc, pairs, scale)
    } else {
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, scale))
    }
}

/// `acc` plus the sums of products of 16-bit pairs, in one instruction (`vpdpwssd`).
#[inline]
#[target_feature(enable = "avx2,fma,avxvnni")]
fn vnni_words_add(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
    _mm256_dpwssd_avx_epi32(acc, x, y)
}

/// The same sums in one instruction (`vpdpbusd`).
#[inline]
#[target_feature(enable = "avx2,fma,avxvnni")]
fn vnni(x: __m256i, y: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), x, y)
}

/// ggml's `hsum_float_8`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(x: __m256) -> f32 {
    let mut r = _mm256_extractf128_ps(x, 1);
    r = _mm_add_ps(r, _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_i32(x: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 rows against Q8_0 / Q8_1 activations, rows `r0..r0 + N` (`r0` a
/// multiple of 4, `N` at most 8: one or two tiles of four). Per block each tile's four scale
/// products come from one 128-bit multiply and its Q4_1 and Q5_1 offset terms from one 128-bit `fma`,
/// lane by lane the same roundings as ggml's scalar code.
///
/// # Safety
///
/// As [`dot_body`]'s.
#[inline(always)]
unsafe fn q32<const N: usize, const VNNI: bool>(
    ty: WeightType,
    row: &[u8],
    acts: &Acts,
    r0: usize,
) -> [f32; N] {
    if N == 1 && ty == WeightType::Q8_0 {
        // One row of a decode step (most of all a model's output matrix): the general tile
        // code's lane shuffles and per-block format tests cost more than the product here.
        let mut out = [0f32; N];
        out[0] = q8_0_row::<VNNI>(row, acts, r0);
        return out;
    }
    let len = acts.len;
    let nb = len / QK;
    let bytes = ty.block_bytes();
    assert!(row.len() >= nb * bytes && acts.rows >= r0 + N && r0.is_multiple_of(4) && N <= 8);
    let tile = r0 / 4;
    let tiles = N.div_ceil(4);
    let d4 = &acts.d4[tile * nb * 4..(tile + tiles) * nb * 4];
    let q41 = matches!(ty, WeightType::Q4_1 | WeightType::Q5_1);
    let s4 = if q41 {
        &acts.s4[tile * nb * 4..(tile + tiles) * nb * 4]
    } else {
        &[][..]
    };
    // Each column's quants, cut to their exact length once.
    let ys: [&[i8]; N] = core::array::from_fn(|c| &acts.qs[(r0 + c) * len..(r0 + c + 1) * len]);
    let lane: [__m256i; N] = core::array::from_fn(|c| _mm256_set1_epi32((c % 4) as i32));
    let mut acc = [_mm256_setzero_ps(); N];
    let mut summs = [_mm_setzero_ps(); 2];
    for i in 0..nb {
        let b = &row[i * bytes..(i + 1) * bytes];
        let dx = _mm_set1_ps(f16_at(b, 0));
        let mut dd = [_mm256_setzero_ps(); 2];
        for t in 0..tiles {
            let d = _mm_mul_ps(dx, load4(&d4[(t * nb + i) * 4..]));
            dd[t] = _mm256_set_m128(d, d);
        }
        if q41 {
            let m = _mm_set1_ps(f16_at(b, 2));
            for t in 0..tiles {
                summs[t] = _mm_fmadd_ps(m, load4(&s4[(t * nb + i) * 4..]), summs[t]);
            }
            let wx = if ty == WeightType::Q4_1 {
                nibbles(&b[4..20])
            } else {
                // The fifth bits as 0x10 (ggml's `bytes_from_bits_32 & 0x10`).
                let hi = _mm256_and_si256(bytes_from_bits(&b[4..8]), _mm256_set1_epi8(0x10));
                _mm256_or_si256(nibbles(&b[8..24]), hi)
            };
            for c in 0..N {
                let xy = _mm256_cvtepi32_ps(dot_us8::<VNNI>(wx, load32(&ys[c][i * QK..])));
                let d = _mm256_permutevar8x32_ps(dd[c / 4], lane[c]);
                acc[c] = _mm256_fmadd_ps(d, xy, acc[c]);
            }
        } else {
            // Signed weights go through ggml's sign trick: |w| times y with w's sign.
            let wx = match ty {
                WeightType::Q4_0 => _mm256_sub_epi8(nibbles(&b[2..18]), _mm256_set1_epi8(8)),
                WeightType::Q5_0 => {
                    // A clear fifth bit makes the byte `nibble | 0xf0`: `nibble - 16`.
                    let hi = bytes_from_bits(&b[2..6]);
                    let hi = _mm256_andnot_si256(hi, _mm256_set1_epi8(0xf0u8 as i8));
                    _mm256_or_si256(nibbles(&b[6..22]), hi)
                }
                _ => load32(&b[2..34]),
            };
            let ax = _mm256_sign_epi8(wx, wx);
            for c in 0..N {
                let sy = _mm256_sign_epi8(load32(&ys[c][i * QK..]), wx);
                let xy = _mm256_cvtepi32_ps(dot_us8::<VNNI>(ax, sy));
                let d = _mm256_permutevar8x32_ps(dd[c / 4], lane[c]);
                acc[c] = _mm256_fmadd_ps(d, xy, acc[c]);
            }
        }
    }
    let mut sm = [[0f32; 4]; 2];
    for t in 0..tiles {
        store4(&mut sm[t], summs[t]);
    }
    let mut out = [0f32; N];
    for c in 0..N {
        out[c] = hsum(acc[c]) + if q41 { sm[c / 4][c % 4] } else { 0.0 };
    }
    out
}

/// A Q8_0 row against activation row `r0` ([`q32`] with one row): ggml's
/// `ggml_vec_dot_q8_0_q8_0`, the same float steps (the scales' product, an `fma` per block,
/// `hsum_float_8`).
///
/// # Safety
///
/// As [`dot_body`]'s.
#[inline(always)]
unsafe fn q8_0_row<const VNNI: bool>(row: &[u8], acts: &Acts, r0: usize) -> f32 {
    let len = acts.len;
    let nb = len / QK;
    assert!(row.len() >= nb * 34 && acts.rows > r0);
    // The activations' scales are laid out by tiles of four rows, a row's at its lane.
    let d4 = &acts.d4[(r0 / 4) * nb * 4..];
    let lane = r0 % 4;
    assert!(d4.len() >= nb * 4);
    let y = &acts.qs[r0 * len..(r0 + 1) * len];
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let b = &row[i * 34..(i + 1) * 34];
        let d = _mm256_set1_ps(f16_at(b, 0) * d4[i * 4 + lane]);
        let wx = load32(&b[2..34]);
        let ax = _mm256_sign_epi8(wx, wx);
        let sy = _mm256_sign_epi8(load32(&y[i * QK..]), wx);
        let xy = _mm256_cvtepi32_ps(dot_us8::<VNNI>(ax, sy));
        acc = _mm256_fmadd_ps(d, xy, acc);
    }
    hsum(acc)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn load4(x: &[f32]) -> __m128 {
    assert!(x.len() >= 4);
    // SAFETY: at least four readable floats (checked above); unaligned load.
    unsafe { _mm_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn store4(out: &mut [f32; 4], x: __m128) {
    // SAFETY: `out` holds four floats; unaligned store.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), x) }
}

/// Q4_K rows against Q8_K activations, with the float steps of
/// [`super::quant::dot_scalar`]: llama.cpp's `ggml_gemv_q4_K_8x8_q8_K`, or with `GEMM` its
/// `ggml_gemm_q4_K_8x8_q8_K` (an `fma` per two sub-blocks, [`QuantKernel::Gemm`]).
///
/// # Safety
///
/// As [`dot_body`]'s.
#[inline(always)]
unsafe fn q4k<const N: usize, const VNNI: bool, const GEMM: bool>(
    row: &[u8],
    acts: &Acts,
    r0: usize,
) -> [f32; N] {
    let len = acts.len;
    let nb = len / QK_K;
    assert!(row.len() >= nb * 144 && acts.rows >= r0 + N);
    assert!(N <= 8);
    // `GEMM`: one float per row; else lane `c` of the vectors is row `c`'s.
    let mut acc = [0f32; N];
    let mut acc_min = [0f32; N];
    let (mut acc_v, mut acc_min_v) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mask = _mm256_set1_epi8(0x0f);
    for i in 0..nb {
        let b = &row[i * 144..(i + 1) * 144];
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let (scales, qs) = (&b[4..16], &b[16..144]);
        let mut sc = [0i32; 8];
        let mut mn = [0i32; 8];
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, scales);
            sc[j] = s as i32;
            mn[j] = m as i32;
        }
        let mut sumi = [_mm256_setzero_si256(); N];
        for j in 0..4 {
            let q = load32(&qs[32 * j..]);
            let lo = _mm256_and_si256(q, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
            let (s_lo, s_hi) = (
                _mm256_set1_epi16(sc[2 * j] as i16),
                _mm256_set1_epi16(sc[2 * j + 1] as i16),
            );
            for c in 0..N {
                let base = (r0 + c) * len + i * QK_K + 64 * j;
                let y0 = load32(&acts.qs[base..]);
                let y1 = load32(&acts.qs[base + 32..]);
                if !GEMM {
                    let p = dot_scaled_add::<VNNI>(sumi[c], lo, y0, s_lo);
                    sumi[c] = dot_scaled_add::<VNNI>(p, hi, y1, s_hi);
                } else {
                    let p = dot_scaled_add::<VNNI>(_mm256_setzero_si256(), lo, y0, s_lo);
                    let pair = dot_scaled_add::<VNNI>(p, hi, y1, s_hi);
                    // These two sub-blocks' sums go into the row's floats now.
                    let r = r0 + c;
                    let bs = &acts.bsums[(r * nb + i) * 16 + 4 * j..(r * nb + i) * 16 + 4 * j + 4];
                    let mins = (bs[0] as i32 + bs[1] as i32) * mn[2 * j]
                        + (bs[2] as i32 + bs[3] as i32) * mn[2 * j + 1];
                    let dy = acts.d[r * nb + i];
                    acc[c] = (hsum_i32(pair) as f32).mul_add(d * dy, acc[c]);
                    acc_min[c] = (mins as f32).mul_add(dmin * dy, acc_min[c]);
                }
            }
        }
        if GEMM {
            continue;
        }
        // The rows' sums and mins side by side, one lane per row: each lane takes the float
        // steps of `(sum as f32).mul_add(d * dy, acc)`, as the scalar code does row by row.
        // Each 32-bit half of `mins16`'s lane `j` is the sub-block's min `j`, so a lane of
        // the 16-bit products is `(bsums[2j] + bsums[2j + 1]) * min[j]`.
        let m = _mm256_loadu_si256(mn.as_ptr().cast());
        let mins16 = _mm256_or_si256(m, _mm256_slli_epi32(m, 16));
        let mut lanes = [_mm256_setzero_si256(); 8];
        let mut mins = [_mm256_setzero_si256(); 8];
        let mut dy = [0f32; 8];
        for c in 0..N {
            let r = r0 + c;
            let at = (r * nb + i) * 16;
            let bs = _mm256_loadu_si256(acts.bsums[at..at + 16].as_ptr().cast());
            lanes[c] = sumi[c];
            mins[c] = _mm256_madd_epi16(bs, mins16);
            dy[c] = acts.d[r * nb + i];
        }
        let dy = _mm256_loadu_ps(dy.as_ptr());
        let sums = _mm256_cvtepi32_ps(hsum8_i32(&lanes));
        let mins = _mm256_cvtepi32_ps(hsum8_i32(&mins));
        acc_v = _mm256_fmadd_ps(sums, _mm256_mul_ps(_mm256_set1_ps(d), dy), acc_v);
        acc_min_v = _mm256_fmadd_ps(mins, _mm256_mul_ps(_mm256_set1_ps(dmin), dy), acc_min_v);
    }
    if !GEMM {
        store8(&mut acc, acc_v);
        store8(&mut acc_min, acc_min_v);
    }
    core::array::from_fn(|c| acc[c] - acc_min[c])
}

/// Eight rows' lane sums: lane `c` of the result is the sum of `v[c]`'s lanes (integers, so
/// in any order the same).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum8_i32(v: &[__m256i; 8]) -> __m256i {
    let a01 = _mm256_hadd_epi32(v[0], v[1]);
    let a23 = _mm256_hadd_epi32(v[2], v[3]);
    let a45 = _mm256_hadd_epi32(v[4], v[5]);
    let a67 = _mm256_hadd_epi32(v[6], v[7]);
    // Per 128-bit half: rows 0-3 (and 4-7), each the sum of its four lanes of that half.
    let b0 = _mm256_hadd_epi32(a01, a23);
    let b1 = _mm256_hadd_epi32(a45, a67);
    let lo = _mm256_permute2x128_si256::<0x20>(b0, b1);
    let hi = _mm256_permute2x128_si256::<0x31>(b0, b1);
    _mm256_add_epi32(lo, hi)
}

/// The first `N` (at most 8) lanes of `x` into `out`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn store8<const N: usize>(out: &mut [f32; N], x: __m256) {
    let mut all = [0f32; 8];
    // SAFETY: `all` holds eight floats; unaligned store.
    unsafe { _mm256_storeu_ps(all.as_mut_ptr(), x) };
    out.copy_from_slice(&all[..N]);
}

/// Q6_K rows against Q8_K activations: eight integer lanes per super-block (the unsigned
/// weights times the activations, scaled per 16 values, less the weights' offset of 32 per
/// two sub-blocks), `fma`-ed by `dy * d` (`ggml_vec_dot_q6_K_q8_K`); when `TILED` the lanes
/// summed first, times `d`, `fma`-ed by `dy` into one sum (ggml's tiled product).
///
/// # Safety
///
/// As [`dot_body`]'s.
#[inline(always)]
unsafe fn q6k<const N: usize, const VNNI: bool, const TILED: bool>(
    row: &[u8],
    acts: &Acts,
    r0: usize,
) -> [f32; N] {
    let len = acts.len;
    let nb = len / QK_K;
    assert!(row.len() >= nb * 210 && acts.rows >= r0 + N);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut sum = [0f32; N];
    for i in 0..nb {
        let b = &row[i * 210..(i + 1) * 210];
        let values = q6k_values(b);
        let scale = |j: usize| b[192 + j] as i8 as i32;
        let mut sumi = [_mm256_setzero_si256(); N];
        for g in 0..8 {
            // 32 values: sub-blocks 2g and 2g+1 (16 each), two scales.
            let w = load32(&values[32 * g..]);
            let (s_lo, s_hi) = (scale(2 * g), scale(2 * g + 1));
            let scale = _mm256_set_m128i(_mm_set1_epi16(s_hi as i16), _mm_set1_epi16(s_lo as i16));
            for c in 0..N {
                let y = load32(&acts.qs[(r0 + c) * len + i * QK_K + 32 * g..]);
                sumi[c] = dot_scaled_add::<VNNI>(sumi[c], w, y, scale);
            }
        }
        // The weights' offset of 32, per lane `l` over sub-blocks `2l` and `2l + 1`.
        let scales16 = _mm256_cvtepi8_epi16(load16(&b[192..208]));
        for c in 0..N {
            let at = ((r0 + c) * nb + i) * 16;
            let bs = _mm256_loadu_si256(acts.bsums[at..at + 16].as_ptr().cast());
            // Lane `l`: `32 * (bsums[2l] * scale[2l] + bsums[2l + 1] * scale[2l + 1])`.
            let off = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bs, scales16));
            sumi[c] = _mm256_sub_epi32(sumi[c], off);
        }
        let d = f16_at(b, 208);
        for c in 0..N {
            let dy = acts.d[(r0 + c) * nb + i];
            if TILED {
                sum[c] = (d * hsum_i32(sumi[c]) as f32).mul_add(dy, sum[c]);
            } else {
                let dd = _mm256_set1_ps(dy * d);
                acc[c] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(sumi[c]), acc[c]);
            }
        }
    }
    if TILED {
        sum
    } else {
        core::array::from_fn(|c| hsum(acc[c]))
    }
}

/// The widest head [`flash_row`] takes.
pub(crate) const FLASH_MAX_DIM: usize = 256;

/// `G` query rows of llama.cpp's row-by-row flash attention over the same f16 keys and
/// values (the query heads of one key/value head, at one position), each with the
/// arithmetic it has alone (see [`super::attention::Head::rows`], whose portable code this
/// equals bit for bit): the head `dim` a multiple of 32 from 32 to [`FLASH_MAX_DIM`], the
/// queries already rounded to f16. A key and a value are converted once for all `G` rows.
/// The positions come in `runs` (keys, values, count): within a run, key and value `p` start
/// at `p * stride + offset`.
pub(crate) fn flash_rows<'a, const G: usize>(
    avx2: Avx2,
    qs: [&[f32]; G],
    runs: impl Iterator<Item = (&'a [half::f16], &'a [half::f16], usize)>,
    stride: usize,
    offset: usize,
    scale: f32,
    outs: [&mut [f32]; G],
) {
    avx2.run(
        #[inline(always)]
        || {
            // SAFETY: `run` compiles this for the features an `Avx2` proves.
            unsafe { flash_rows_body::<G>(qs, runs, stride, offset, scale, outs) }
        },
    )
}

/// [`flash_rows`]' body.
///
/// # Safety
///
/// The CPU has AVX2, FMA and F16C (the caller, [`Avx2::run`]'s code, has those features, so
/// this is compiled with them).
#[inline(always)]
unsafe fn flash_rows_body<'a, const G: usize>(
    qs: [&[f32]; G],
    runs: impl Iterator<Item = (&'a [half::f16], &'a [half::f16], usize)>,
    stride: usize,
    offset: usize,
    scale: f32,
    outs: [&mut [f32]; G],
) {
    const MAX: usize = FLASH_MAX_DIM / 8;
    let dim = qs[0].len();
    let regs = dim / 8;
    // At least 32: the first four accumulators below load 32 values of every key.
    assert!(dim >= 32 && dim.is_multiple_of(32) && regs <= MAX);
    assert!(qs.iter().all(|q| q.len() == dim) && outs.iter().all(|o| o.len() == dim));
    let mut qv = [[_mm256_setzero_ps(); MAX]; G];
    for (qv, q) in qv.iter_mut().zip(qs) {
        for (j, qv) in qv.iter_mut().enumerate().take(regs) {
            // SAFETY: `j * 8 + 8 <= dim == q.len()`.
            *qv = unsafe { _mm256_loadu_ps(q.as_ptr().add(j * 8)) };
        }
    }
    let mut acc = [[_mm_setzero_si128(); MAX]; G];
    let mut m = [f32::NEG_INFINITY; G];
    let mut sum = [0f32; G];
    // The positions come in runs (the cache's blocks); the online softmax goes on across them.
    for (keys, values, n) in runs {
        assert!(n == 0 || (n - 1) * stride + offset + dim <= keys.len().min(values.len()));
        for p in 0..n {
            let base = p * stride + offset;
            // SAFETY (all loads below): `base + dim` is within both slices (asserted above).
            let kp = unsafe { keys.as_ptr().add(base) }.cast::<__m128i>();
            let vp = unsafe { values.as_ptr().add(base) }.cast::<__m128i>();
            // ggml_vec_dot_f16: four accumulators over each 32 values, reduced pairwise.
            let mut a = [[_mm256_setzero_ps(); 4]; G];
            for l in 0..4 {
                let k = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(kp.add(l)) });
                for g in 0..G {
                    a[g][l] = _mm256_mul_ps(k, qv[g][l]);
                }
            }
            let mut j = 4;
            while j < regs {
                for l in 0..4 {
                    let k = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(kp.add(j + l)) });
                    for g in 0..G {
                        a[g][l] = _mm256_fmadd_ps(k, qv[g][j + l], a[g][l]);
                    }
                }
                j += 4;
            }
            let mut vs = [1f32; G];
            for g in 0..G {
                let a = &a[g];
                let r = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
                let t0 = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
                let t1 = _mm_hadd_ps(t0, t0);
                let s = _mm_cvtss_f32(_mm_hadd_ps(t1, t1)) * scale;
                let mut ms = 1f32;
                if s > m[g] {
                    ms = (m[g] - s).exp();
                    m[g] = s;
                    let msv = _mm256_set1_ps(ms);
                    for a in acc[g].iter_mut().take(regs) {
                        *a = _mm256_cvtps_ph::<0>(_mm256_mul_ps(_mm256_cvtph_ps(*a), msv));
                    }
                } else {
                    vs[g] = (s - m[g]).exp();
                }
                sum[g] = sum[g] * ms + vs[g];
            }
            let vsv: [__m256; G] = core::array::from_fn(|g| _mm256_set1_ps(vs[g]));
            for j in 0..regs {
                let v = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(vp.add(j)) });
                for g in 0..G {
                    let a = &mut acc[g][j];
                    *a = _mm256_cvtps_ph::<0>(_mm256_fmadd_ps(v, vsv[g], _mm256_cvtph_ps(*a)));
                }
            }
        }
    }
    for (g, out) in outs.into_iter().enumerate() {
        let inv = _mm256_set1_ps(if sum[g] == 0.0 { 0.0 } else { 1.0 / sum[g] });
        for (j, a) in acc[g].iter().enumerate().take(regs) {
            // SAFETY: `j * 8 + 8 <= dim == out.len()`.
            unsafe {
                _mm256_storeu_ps(
                    out.as_mut_ptr().add(j * 8),
                    _mm256_mul_ps(_mm256_cvtph_ps(*a), inv),
                )
            };
        }
    }
}
