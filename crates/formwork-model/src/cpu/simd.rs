//! AVX2 dot products of one weight row with up to four activation rows at once.
//!
//! A weight block is loaded and unpacked once and multiplied into every activation row of
//! the tile, which is what makes a batch of rows cheaper than the same rows one by one. Each
//! (weight row, activation row) pair goes through exactly the operations of ggml's AVX2
//! kernel for one row (eight lanes of four consecutive products, `fma` by the block scale,
//! `hsum_float_8`), so the result does not depend on the tile and equals
//! [`super::quant::dot_scalar`] bit for bit.
//!
//! Compiled only when the build targets AVX2 and FMA (the workspace builds with
//! `-C target-cpu=native`); elsewhere the portable code runs.

// The loads below read 16 or 32 bytes from slices whose length is checked first.
#![allow(unsafe_code)]
// Tiles index several per-row arrays by the same row number.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use super::quant::{Acts, QK, QK_K, WeightType, f16_at, q6k_values, scale_min_k4};

/// Whether [`dot_tile`] has a kernel for this format.
pub(crate) fn supports(ty: WeightType) -> bool {
    matches!(
        ty,
        WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q8_0 | WeightType::Q4K | WeightType::Q6K
    )
}

/// `out[c] = row . acts[r0 + c]` for `c < out.len()` (at most 4).
pub(crate) fn dot_tile(ty: WeightType, row: &[u8], acts: &Acts, r0: usize, out: &mut [f32]) {
    // SAFETY: this module is compiled only when the build targets AVX2 and FMA.
    unsafe {
        match out.len() {
            1 => dot_n::<1>(ty, row, acts, r0, out),
            2 => dot_n::<2>(ty, row, acts, r0, out),
            3 => dot_n::<3>(ty, row, acts, r0, out),
            4 => dot_n::<4>(ty, row, acts, r0, out),
            n => panic!("dot_tile takes 1 to 4 rows, not {n}"),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
fn dot_n<const N: usize>(ty: WeightType, row: &[u8], acts: &Acts, r0: usize, out: &mut [f32]) {
    let res = match ty {
        WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q8_0 => q32::<N>(ty, row, acts, r0),
        WeightType::Q4K => q4k::<N>(row, acts, r0),
        WeightType::Q6K => q6k::<N>(row, acts, r0),
        _ => unreachable!("no AVX2 kernel for {}", ty.name()),
    };
    out.copy_from_slice(&res);
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn load16(b: &[u8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: at least 16 readable bytes (checked above); unaligned load.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn load32(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: at least 32 readable bytes (checked above); unaligned load.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn load32_i8(b: &[i8]) -> __m256i {
    assert!(b.len() >= 32);
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

/// Eight i32 lanes, each the sum of four consecutive u8 x i8 products (no pair of products
/// here can saturate the 16-bit step: weights are at most 15, or 127 with `|y| <= 127`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn dot_us8(x: __m256i, y: __m256i) -> __m256i {
    #[cfg(target_feature = "avxvnni")]
    {
        // SAFETY: compiled only when the build targets AVX-VNNI.
        unsafe { vnni(x, y) }
    }
    #[cfg(not(target_feature = "avxvnni"))]
    {
        _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
    }
}

/// The same sums in one instruction (`vpdpbusd`).
#[cfg(target_feature = "avxvnni")]
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

/// Q4_0, Q4_1 and Q8_0 rows against Q8_0 / Q8_1 activations.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q32<const N: usize>(ty: WeightType, row: &[u8], acts: &Acts, r0: usize) -> [f32; N] {
    let len = acts.len;
    let nb = len / QK;
    let bytes = ty.block_bytes();
    assert!(row.len() >= nb * bytes && acts.rows >= r0 + N);
    // Each column's quants, scales and sums, cut to their exact lengths once so the block
    // loop indexes without checks.
    let ys: [&[i8]; N] = core::array::from_fn(|c| &acts.qs[(r0 + c) * len..(r0 + c + 1) * len]);
    let ds: [&[f32]; N] = core::array::from_fn(|c| &acts.d[(r0 + c) * nb..(r0 + c + 1) * nb]);
    let q41 = ty == WeightType::Q4_1;
    let ss: [&[f32]; N] = core::array::from_fn(|c| {
        if q41 {
            &acts.s[(r0 + c) * nb..(r0 + c + 1) * nb]
        } else {
            &[][..]
        }
    });
    let mut acc = [_mm256_setzero_ps(); N];
    let mut summs = [0f32; N];
    match ty {
        WeightType::Q4_1 => {
            for (i, b) in row.chunks_exact(20).take(nb).enumerate() {
                let dx = f16_at(b, 0);
                let m = f16_at(b, 2);
                let wx = nibbles(&b[4..20]);
                for c in 0..N {
                    let y = load32_i8(&ys[c][i * QK..]);
                    let xy = _mm256_cvtepi32_ps(dot_us8(wx, y));
                    let d = _mm256_set1_ps(dx * ds[c][i]);
                    acc[c] = _mm256_fmadd_ps(d, xy, acc[c]);
                    summs[c] = m.mul_add(ss[c][i], summs[c]);
                }
            }
        }
        _ => {
            // Signed weights go through ggml's sign trick: |w| times y with w's sign.
            for (i, b) in row.chunks_exact(bytes).take(nb).enumerate() {
                let dx = f16_at(b, 0);
                let wx = if ty == WeightType::Q4_0 {
                    _mm256_sub_epi8(nibbles(&b[2..18]), _mm256_set1_epi8(8))
                } else {
                    load32(&b[2..34])
                };
                let ax = _mm256_sign_epi8(wx, wx);
                for c in 0..N {
                    let y = load32_i8(&ys[c][i * QK..]);
                    let sy = _mm256_sign_epi8(y, wx);
                    let xy = _mm256_cvtepi32_ps(dot_us8(ax, sy));
                    let d = _mm256_set1_ps(dx * ds[c][i]);
                    acc[c] = _mm256_fmadd_ps(d, xy, acc[c]);
                }
            }
        }
    }
    let mut out = [0f32; N];
    for c in 0..N {
        out[c] = hsum(acc[c]) + summs[c];
    }
    out
}

/// Q4_K rows against Q8_K activations.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q4k<const N: usize>(row: &[u8], acts: &Acts, r0: usize) -> [f32; N] {
    let len = acts.len;
    let nb = len / QK_K;
    assert!(row.len() >= nb * 144 && acts.rows >= r0 + N);
    let mut out = [0f32; N];
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
                _mm256_set1_epi32(sc[2 * j]),
                _mm256_set1_epi32(sc[2 * j + 1]),
            );
            for c in 0..N {
                let base = (r0 + c) * len + i * QK_K + 64 * j;
                let y0 = load32_i8(&acts.qs[base..]);
                let y1 = load32_i8(&acts.qs[base + 32..]);
                let p0 = _mm256_mullo_epi32(dot_us8(lo, y0), s_lo);
                let p1 = _mm256_mullo_epi32(dot_us8(hi, y1), s_hi);
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(p0, p1));
            }
        }
        for c in 0..N {
            let r = r0 + c;
            let bs = &acts.bsums[(r * nb + i) * 16..(r * nb + i + 1) * 16];
            let mut mins = 0i32;
            for j in 0..8 {
                mins += (bs[2 * j] + bs[2 * j + 1]) * mn[j];
            }
            let dy = acts.d[r * nb + i];
            out[c] += d * dy * hsum_i32(sumi[c]) as f32 - dmin * dy * mins as f32;
        }
    }
    out
}

/// Q6_K rows against Q8_K activations: `sum((q - 32) * y) = sum(q * y) - 32 * sum(y)`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q6k<const N: usize>(row: &[u8], acts: &Acts, r0: usize) -> [f32; N] {
    let len = acts.len;
    let nb = len / QK_K;
    assert!(row.len() >= nb * 210 && acts.rows >= r0 + N);
    let mut out = [0f32; N];
    for i in 0..nb {
        let b = &row[i * 210..(i + 1) * 210];
        let values = q6k_values(b);
        let d = f16_at(b, 208);
        let mut sumi = [_mm256_setzero_si256(); N];
        for g in 0..8 {
            // 32 values: sub-blocks 2g and 2g+1 (16 each), two scales.
            let w = load32(&values[32 * g..]);
            let s_lo = b[192 + 2 * g] as i8 as i32;
            let s_hi = b[192 + 2 * g + 1] as i8 as i32;
            let scale = _mm256_setr_epi32(s_lo, s_lo, s_lo, s_lo, s_hi, s_hi, s_hi, s_hi);
            for c in 0..N {
                let y = load32_i8(&acts.qs[(r0 + c) * len + i * QK_K + 32 * g..]);
                let p = _mm256_mullo_epi32(dot_us8(w, y), scale);
                sumi[c] = _mm256_add_epi32(sumi[c], p);
            }
        }
        for c in 0..N {
            let r = r0 + c;
            let bs = &acts.bsums[(r * nb + i) * 16..(r * nb + i + 1) * 16];
            let mut offset = 0i32;
            for s in 0..16 {
                offset += 32 * bs[s] * b[192 + s] as i8 as i32;
            }
            out[c] += d * acts.d[r * nb + i] * (hsum_i32(sumi[c]) - offset) as f32;
        }
    }
    out
}
