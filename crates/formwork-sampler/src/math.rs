//! Numeric kernels over a logits slice: a branch-free `exp` for non-positive arguments and
//! blocked sums of per-token weights.
//!
//! Every sampling step turns up to ~150k logits into weights `exp((l - max) / T)`, once or
//! twice. `f32::exp` is a libm call the compiler cannot vectorize; [`exp_nonpositive`] is a
//! Cephes-style polynomial written without branches or calls, so the loops below compile to
//! SIMD code, and it is as accurate as `expf` (relative error below 2e-7, tested).
//!
//! Sums run in blocks of [`BLOCK`] tokens: within a block in `f32` over [`LANES`]
//! independent lanes (vectorizable), across blocks in `f64`. Keeping the per-block sums lets
//! a draw find the block that holds its target without recomputing the others.

/// Tokens per block of a blocked sum.
pub(crate) const BLOCK: usize = 512;

/// Independent accumulators in a vectorized loop: two 256-bit vectors of `f32`, enough to
/// hide the latency of the adds.
pub(crate) const LANES: usize = 16;

/// Arguments are clamped to this before the range reduction, so that `2^n` stays within the
/// exponent arithmetic below; `e^-100` is 0 in `f32` anyway.
const EXP_CLAMP: f32 = -100.0;

/// `e^x` for `x <= 0` (including `-inf`, which gives 0). Results below the smallest normal
/// `f32` (`x` below about -87.7) are 0.
///
/// Cephes `expf`: `x = n ln 2 + r` with `|r| <= ln 2 / 2` (two-constant Cody-Waite
/// reduction), `e^r` by a degree-7 polynomial, and `2^n` built from its exponent bits (0
/// when `n` is below the normal range). No branch, no call, no float-to-int conversion: the
/// loops that call it vectorize (a float-to-int `as` saturates, which does not).
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer n held in the low mantissa bits; subtracting
    // it again gives n as a float.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < EXP_CLAMP { EXP_CLAMP } else { x };
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = mul_add(-n, LN2_LO, mul_add(-n, LN2_HI, x));
    let p = 1.987_569_1e-4_f32;
    let p = mul_add(p, r, 1.398_199_9e-3);
    let p = mul_add(p, r, 8.333_452e-3);
    let p = mul_add(p, r, 4.166_579_6e-2);
    let p = mul_add(p, r, 1.666_666_5e-1);
    // Cephes has 5.0000001201e-1 here, which rounds to 0.5 in f32.
    let p = mul_add(p, r, 0.5);
    let y = mul_add(p, r * r, r) + 1.0;
    // The biased exponent n + 127, read from the bits of `shifted`; at or below 0 the
    // scale (and the result) is 0.
    let biased = (shifted.to_bits() as i32)
        .wrapping_sub(ROUND.to_bits() as i32)
        .wrapping_add(127);
    let biased = if biased < 0 { 0 } else { biased };
    y * f32::from_bits((biased as u32) << 23)
}

/// `a * b + c`, fused where the target has FMA (one rounding, and 1.5x faster `exp` loops),
/// else a multiply and an add (`f32::mul_add` without hardware FMA is a slow libm call).
#[inline(always)]
fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

/// Sums `weight(index, logit)` over `logits`: returns the total, and when `block_sums` is
/// given, fills it with one `f32` sum per [`BLOCK`] tokens (their `f64` sum is the total).
#[inline(always)]
pub(crate) fn blocked_sum(
    logits: &[f32],
    weight: impl Fn(usize, f32) -> f32,
    mut block_sums: Option<&mut Vec<f32>>,
) -> f64 {
    if let Some(sums) = block_sums.as_deref_mut() {
        sums.clear();
    }
    let mut total = 0.0f64;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        let start = b * BLOCK;
        let mut acc = [0.0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let rest = chunks.remainder();
        let rest_start = start + block.len() - rest.len();
        for (c, chunk) in chunks.enumerate() {
            let base = start + c * LANES;
            for (lane, (a, &l)) in acc.iter_mut().zip(chunk).enumerate() {
                *a += weight(base + lane, l);
            }
        }
        let mut sum = acc.iter().sum::<f32>();
        for (i, &l) in rest.iter().enumerate() {
            sum += weight(rest_start + i, l);
        }
        if let Some(sums) = block_sums.as_deref_mut() {
            sums.push(sum);
        }
        total += f64::from(sum);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_as_accurate_as_expf() {
        let mut worst = 0.0f64;
        let steps = 1_000_000;
        for i in 0..=steps {
            let x = -87.0 * (i as f32 / steps as f32);
            let got = f64::from(exp_nonpositive(x));
            let want = f64::from(x).exp();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
    }

    #[test]
    fn exp_underflows_to_zero() {
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(-88.0), 0.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert!(exp_nonpositive(-87.3) > 0.0);
        assert_eq!(exp_nonpositive(-1e30), 0.0);
    }

    #[test]
    fn blocked_sum_adds_up_and_keeps_block_sums() {
        let logits: Vec<f32> = (0..1300).map(|i| (i % 7) as f32).collect();
        let mut sums = Vec::new();
        let total = blocked_sum(&logits, |_, l| l, Some(&mut sums));
        let want: f64 = logits.iter().map(|&l| f64::from(l)).sum();
        assert_eq!(total, want);
        assert_eq!(sums.len(), 3);
        assert_eq!(sums.iter().map(|&s| f64::from(s)).sum::<f64>(), want);
        assert_eq!(blocked_sum(&[], |_, l| l, None), 0.0);
        // The index is the token's position.
        let positions = blocked_sum(&logits, |i, _| i as f32, None);
        assert_eq!(positions, (0..1300).sum::<usize>() as f64);
    }
}
