//! The CPU backend's matrix product on its own: a weight matrix in a GGML format times rows
//! of activations, as the forward pass computes it (activations quantized as ggml does,
//! SIMD tiles, the crate's thread pool). For benchmarks and for programs that want the
//! kernels without a model.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::ModelError;
use crate::cpu::isa::Isa;
use crate::cpu::matmul::{Input, QMatrix, matmul};
use crate::cpu::pool::Pool;
use crate::cpu::quant::WeightType;

/// A weight matrix (`rows` outputs of `cols` inputs) in one of the CPU backend's formats.
#[derive(Debug)]
pub struct QuantizedMatrix {
    matrix: QMatrix,
    pool: Pool,
    isa: Isa,
}

impl QuantizedMatrix {
    /// Quantizes row-major `values` (`rows * cols`) to `format` (`"Q4_0"`, `"Q4_1"`,
    /// `"Q5_0"`, `"Q5_1"`, `"Q8_0"`, `"Q4_K"`, `"Q5_K"`, `"Q6_K"`, `"F16"`, `"BF16"`, `"F32"`),
    /// to be multiplied on `threads` threads with the kernels a model would run
    /// ([`crate::cpu_kernels`]).
    pub fn quantize(
        format: &str,
        rows: usize,
        cols: usize,
        values: &[f32],
        threads: usize,
    ) -> Result<QuantizedMatrix, ModelError> {
        let bad = |message: String| ModelError::Weight {
            path: "<memory>".into(),
            name: format.to_string(),
            message,
        };
        let (ty, dtype) = match format {
            "Q4_0" => (WeightType::Q4_0, GgmlDType::Q4_0),
            "Q4_1" => (WeightType::Q4_1, GgmlDType::Q4_1),
            "Q5_0" => (WeightType::Q5_0, GgmlDType::Q5_0),
            "Q5_1" => (WeightType::Q5_1, GgmlDType::Q5_1),
            "Q8_0" => (WeightType::Q8_0, GgmlDType::Q8_0),
            "Q4_K" => (WeightType::Q4K, GgmlDType::Q4K),
            "Q5_K" => (WeightType::Q5K, GgmlDType::Q5K),
            "Q6_K" => (WeightType::Q6K, GgmlDType::Q6K),
            "F16" => (WeightType::F16, GgmlDType::F16),
            "BF16" => (WeightType::BF16, GgmlDType::BF16),
            "F32" => (WeightType::F32, GgmlDType::F32),
            _ => return Err(bad("unknown format".into())),
        };
        if values.len() != rows * cols || !cols.is_multiple_of(ty.block_len()) {
            return Err(bad(format!(
                "{} values for {rows} x {cols} (columns a multiple of {})",
                values.len(),
                ty.block_len()
            )));
        }
        let t = Tensor::from_slice(values, (rows, cols), &Device::Cpu)?;
        let data = QTensor::quantize(&t, dtype)?.data()?.to_vec();
        let matrix = QMatrix::new(ty, rows, cols, data).ok_or_else(|| bad("size".into()))?;
        let pool = Pool::new(threads).map_err(|e| ModelError::Device {
            name: "cpu".into(),
            message: e.to_string(),
        })?;
        let isa = Isa::new(crate::cpu_kernels()?);
        Ok(QuantizedMatrix { matrix, pool, isa })
    }

    /// `x` (`n * cols` values, row-major) times the matrix: `n * rows` values, row-major.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.matrix.cols, "input size");
        matmul(
            &self.pool,
            self.isa,
            &self.matrix,
            &mut Input::new(x, n, self.matrix.cols),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::QuantizedMatrix;

    #[test]
    fn every_format_is_accepted_and_multiplies_close_to_f32() {
        let (rows, cols) = (8, 512);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 60.0)
            .collect();
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let exact: Vec<f32> = w
            .chunks_exact(cols)
            .map(|r| r.iter().zip(&x).map(|(a, b)| a * b).sum())
            .collect();
        for format in [
            "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16", "F32",
        ] {
            let m = QuantizedMatrix::quantize(format, rows, cols, &w, 2).expect(format);
            let got = m.matmul(&x, 1);
            let norm: f32 = x.iter().map(|v| v.abs()).sum();
            for (g, e) in got.iter().zip(&exact) {
                assert!((g - e).abs() < 0.05 * norm, "{format}: {g} vs {e}");
            }
        }
        assert!(QuantizedMatrix::quantize("Q3_K", rows, cols, &w, 1).is_err());
    }
}
