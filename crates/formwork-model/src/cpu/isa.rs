//! Which kernels the CPU backend runs, picked at run time from what the CPU has.
//!
//! The SIMD kernels ([`super::simd`]) are `#[target_feature]` functions, compiled whatever
//! the build's target CPU, and reached only through an [`Isa`]: a proof, made by asking the
//! CPU (`is_x86_feature_detected!`), that it has their features. A model picks its [`Isa`]
//! once, when it is built, and every kernel call branches on it once (per weight row tile,
//! per attention head), never per element. So one binary runs the AVX2 kernels on any CPU
//! that has them, and the portable code on any other CPU or architecture; both give the
//! same bits.
//!
//! ```
//! use formwork_model::{CpuKernels, cpu_kernels};
//!
//! // What this CPU runs: AVX2 kernels on most x86-64 machines, portable code elsewhere.
//! let best = CpuKernels::detected();
//! assert!(best >= CpuKernels::Scalar);
//! // What a model loaded with default options runs (`FORMWORK_CPU_KERNELS` may lower it).
//! assert!(cpu_kernels()? <= best);
//! println!("CPU kernels: {best}");
//! # Ok::<(), formwork_model::ModelError>(())
//! ```

use std::fmt;

use crate::ModelError;

/// The environment variable that lowers the kernels models load with by default (see
/// [`cpu_kernels`]).
pub const CPU_KERNELS_ENV: &str = "FORMWORK_CPU_KERNELS";

/// A set of CPU kernels of the native backend, weakest first (the order is `Ord`).
///
/// Every set gives the same bits; they differ in speed only. `Display` names the CPU
/// features a set uses (`scalar`, `avx2+fma+f16c`, `avx2+fma+f16c+avxvnni`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CpuKernels {
    /// Portable Rust, on any CPU (vectorized only as far as the build's target CPU allows).
    Scalar,
    /// x86-64 kernels for AVX2 with FMA and F16C (Intel Haswell, AMD Zen and later).
    Avx2,
    /// The AVX2 kernels with AVX-VNNI's `vpdpbusd` for the 8-bit dot products (Intel Alder
    /// Lake, Sapphire Rapids, AMD Zen 5 and later).
    Avx2Vnni,
    /// The AVX-VNNI kernels compiled for a CPU that also has AVX-512 (F, VL, BW, DQ, CD,
    /// VBMI, VNNI) and GFNI: the same 256-bit operations, with AVX-512's 32 vector registers
    /// and byte operations, which the compiler uses for fewer spills and shorter unpacking
    /// (Intel Sapphire Rapids and later, AMD Zen 5). What a build with `-C target-cpu=native`
    /// gets on such a CPU, picked at run time by a build that does not target AVX-512 (one
    /// that does runs [`CpuKernels::Avx2Vnni`], already compiled with it).
    Avx2VnniWide,
}

impl CpuKernels {
    /// The best set this CPU runs.
    pub fn detected() -> CpuKernels {
        Isa::new(CpuKernels::Avx2VnniWide).kernels()
    }

    /// The CPU features the set uses: `"scalar"`, `"avx2+fma+f16c"`,
    /// `"avx2+fma+f16c+avxvnni"` or `"avx2+fma+f16c+avxvnni+avx512vl"`.
    pub fn name(self) -> &'static str {
        match self {
            CpuKernels::Scalar => "scalar",
            CpuKernels::Avx2 => "avx2+fma+f16c",
            CpuKernels::Avx2Vnni => "avx2+fma+f16c+avxvnni",
            CpuKernels::Avx2VnniWide => "avx2+fma+f16c+avxvnni+avx512vl",
        }
    }

    /// The kernels [`CPU_KERNELS_ENV`] asks for: `value` is `None` (unset), `"auto"` or empty
    /// (the best the CPU has), `"avxvnni"` (AVX-VNNI without AVX-512's registers), `"avx2"`
    /// (AVX2 without AVX-VNNI) or `"scalar"`; the result is never more than `detected` has.
    fn from_env_value(value: Option<&str>, detected: CpuKernels) -> Result<CpuKernels, ModelError> {
        let wanted = match value.map(str::trim) {
            None | Some("" | "auto") => CpuKernels::Avx2VnniWide,
            Some("avxvnni") => CpuKernels::Avx2Vnni,
            Some("avx2") => CpuKernels::Avx2,
            Some("scalar") => CpuKernels::Scalar,
            Some(other) => {
                return Err(ModelError::Device {
                    name: "cpu".into(),
                    message: format!(
                        "{CPU_KERNELS_ENV}={other:?}: expected \"auto\", \"avxvnni\", \"avx2\" or \"scalar\""
                    ),
                });
            }
        };
        Ok(wanted.min(detected))
    }
}

impl fmt::Display for CpuKernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kernels a model loaded with default options runs on this CPU (see
/// [`crate::LoadOptions::with_cpu_kernels`]): the best the CPU has
/// ([`CpuKernels::detected`]), lowered by `FORMWORK_CPU_KERNELS` when it is set: `scalar`
/// (the portable code), `avx2` (AVX2 without AVX-VNNI), `avxvnni` (without AVX-512's
/// registers) or `auto` (the default). Any other
/// value is an error ([`ModelError::Device`]), and so is loading a model with it.
pub fn cpu_kernels() -> Result<CpuKernels, ModelError> {
    let value = std::env::var(CPU_KERNELS_ENV).ok();
    CpuKernels::from_env_value(value.as_deref(), CpuKernels::detected())
}

/// Kernels the CPU is known to run: the only way to reach [`super::simd`]'s kernels.
///
/// Made by [`Isa::new`] only, which asks the CPU, so holding one with AVX2 proves the CPU has
/// it. `Copy` and one byte: models keep one and pass it to every kernel call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Isa {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<super::simd::Avx2>,
}

impl Isa {
    /// The best kernels the CPU runs, no better than `wanted`.
    pub(crate) fn new(wanted: CpuKernels) -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = match wanted {
                CpuKernels::Scalar => None,
                CpuKernels::Avx2 => super::simd::Avx2::detect(false, false),
                CpuKernels::Avx2Vnni => super::simd::Avx2::detect(true, false),
                CpuKernels::Avx2VnniWide => super::simd::Avx2::detect(true, true),
            };
            Isa { avx2 }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = wanted;
            Isa {}
        }
    }

    /// The portable code only.
    #[cfg(test)]
    pub(crate) fn scalar() -> Isa {
        Isa::new(CpuKernels::Scalar)
    }

    /// Which set this is.
    pub(crate) fn kernels(self) -> CpuKernels {
        #[cfg(target_arch = "x86_64")]
        match self.avx2 {
            Some(a) if a.wide() => return CpuKernels::Avx2VnniWide,
            Some(a) if a.vnni() => return CpuKernels::Avx2Vnni,
            Some(_) => return CpuKernels::Avx2,
            None => {}
        }
        CpuKernels::Scalar
    }

    /// Runs portable code `f` compiled for this set's features (AVX2, FMA and F16C where it
    /// has them: `mul_add` one instruction instead of a libm call, wider loops; the same
    /// bits). For element-wise loops outside the kernels (activations, rotary embeddings, the
    /// tiled attention). Only what is inlined gets the features: pass an `#[inline(always)]`
    /// closure (`isa.run(#[inline(always)] || ...)`), whose callees are `#[inline]` (small)
    /// or `#[inline(always)]` (big bodies).
    #[inline]
    pub(crate) fn run<R>(self, f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = self.avx2 {
            return avx2.run(f);
        }
        f()
    }

    /// The AVX2 kernels, when the CPU has them and they were wanted.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn avx2(self) -> Option<super::simd::Avx2> {
        self.avx2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_value_lowers_the_kernels_and_never_raises_them() {
        use CpuKernels::*;
        let pick = |v, d| CpuKernels::from_env_value(v, d).expect("a known value");
        assert_eq!(pick(None, Avx2Vnni), Avx2Vnni);
        assert_eq!(pick(None, Avx2VnniWide), Avx2VnniWide);
        assert_eq!(pick(Some("avxvnni"), Avx2VnniWide), Avx2Vnni);
        assert_eq!(pick(Some("auto"), Avx2), Avx2);
        assert_eq!(pick(Some(""), Scalar), Scalar);
        assert_eq!(pick(Some("avx2"), Avx2Vnni), Avx2);
        assert_eq!(pick(Some(" avx2 "), Scalar), Scalar);
        assert_eq!(pick(Some("scalar"), Avx2Vnni), Scalar);
        let err = CpuKernels::from_env_value(Some("sse"), Avx2).expect_err("unknown value");
        assert!(err.to_string().contains("FORMWORK_CPU_KERNELS"), "{err}");
    }

    #[test]
    fn an_isa_is_what_was_wanted_as_far_as_the_cpu_goes() {
        let best = CpuKernels::detected();
        for wanted in [
            CpuKernels::Scalar,
            CpuKernels::Avx2,
            CpuKernels::Avx2Vnni,
            CpuKernels::Avx2VnniWide,
        ] {
            assert_eq!(Isa::new(wanted).kernels(), wanted.min(best));
        }
        assert_eq!(Isa::scalar().kernels(), CpuKernels::Scalar);
        assert_eq!(CpuKernels::Avx2.to_string(), "avx2+fma+f16c");
    }

    /// The run-time dispatch: on an x86-64 CPU with AVX2, FMA and F16C the AVX2 kernels are
    /// picked, whatever the build's target CPU (a build without `-C target-cpu=native` has
    /// `cfg!(target_feature = "avx2")` false and must still pick them).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_cpu_with_avx2_runs_the_avx2_kernels_whatever_the_build_targets() {
        let has = |f| match f {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            "avx512" => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512cd")
                    && std::arch::is_x86_feature_detected!("avx512vbmi")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("gfni")
                    && std::arch::is_x86_feature_detected!("bmi1")
                    && std::arch::is_x86_feature_detected!("bmi2")
                    && std::arch::is_x86_feature_detected!("lzcnt")
                    && std::arch::is_x86_feature_detected!("popcnt")
                    && std::arch::is_x86_feature_detected!("movbe")
            }
            _ => std::arch::is_x86_feature_detected!("avxvnni"),
        };
        let want = if !(has("avx2") && has("fma") && has("f16c")) {
            CpuKernels::Scalar
        } else if has("avxvnni") && has("avx512") && !cfg!(target_feature = "avx512f") {
            CpuKernels::Avx2VnniWide
        } else if has("avxvnni") {
            CpuKernels::Avx2Vnni
        } else {
            CpuKernels::Avx2
        };
        eprintln!(
            "build targets avx2: {}; CPU runs {want}",
            cfg!(target_feature = "avx2")
        );
        assert_eq!(CpuKernels::detected(), want);
        assert_eq!(
            Isa::new(CpuKernels::Avx2VnniWide).avx2().is_some(),
            want >= CpuKernels::Avx2
        );
    }
}
