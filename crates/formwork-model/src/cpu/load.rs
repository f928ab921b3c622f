//! Reading a GGUF file's tensors as raw GGML bytes for the CPU backend, through the
//! `formwork-gguf` reader.

use std::io::{Read, Seek};
use std::path::Path;

use formwork_gguf::{GgmlType, GgufFile};

use super::isa::Isa;
use super::matmul::QMatrix;
use super::quant::WeightType;
use super::{NativeLayer, NativeModel};
use crate::ModelError;
use crate::config::{Architecture, TransformerConfig};

fn weight_type(ty: GgmlType) -> Option<WeightType> {
    Some(match ty {
        GgmlType::F32 => WeightType::F32,
        GgmlType::F16 => WeightType::F16,
        GgmlType::BF16 => WeightType::BF16,
        GgmlType::Q4_0 => WeightType::Q4_0,
        GgmlType::Q4_1 => WeightType::Q4_1,
        GgmlType::Q5_0 => WeightType::Q5_0,
        GgmlType::Q5_1 => WeightType::Q5_1,
        GgmlType::Q8_0 => WeightType::Q8_0,
        GgmlType::Q4K => WeightType::Q4K,
        GgmlType::Q5K => WeightType::Q5K,
        GgmlType::Q6K => WeightType::Q6K,
        _ => return None,
    })
}

/// The model's weights for the CPU backend, or `None` when a tensor is in a format it does not
/// compute with (the caller then loads the file on candle).
pub(crate) fn load_gguf<R: Read + Seek>(
    path: &Path,
    gguf: &GgufFile,
    reader: &mut R,
    config: &TransformerConfig,
    threads: Option<usize>,
    isa: Isa,
) -> Result<Option<NativeModel>, ModelError> {
    if gguf
        .tensors()
        .iter()
        .any(|t| weight_type(t.ggml_type).is_none())
    {
        return Ok(None);
    }
    let mut r = Reader { path, gguf, reader };
    let (hidden, ffn) = (config.hidden_size, config.intermediate_size);
    let (q_width, kv_width) = (
        config.heads * config.head_dim,
        config.kv_heads * config.head_dim,
    );
    let embedding = r.matrix("token_embd.weight", config.vocab_size, hidden)?;
    let lm_head = if gguf.tensor("output.weight").is_some() {
        Some(r.matrix("output.weight", config.vocab_size, hidden)?)
    } else {
        None
    };
    let biases = config.architecture == Architecture::Qwen2;
    let qk_norm = config.architecture.has_qk_norm();
    let post_norms = config.architecture == Architecture::Gemma3;
    let mut layers = Vec::with_capacity(config.layers);
    for i in 0..config.layers {
        let p = format!("blk.{i}");
        let bias = |r: &mut Reader<'_, R>, name: &str, n: usize| {
            if biases {
                r.vector(&format!("{p}.{name}.bias"), n).map(Some)
            } else {
                Ok(None)
            }
        };
        let norm = |r: &mut Reader<'_, R>, name: &str, n: usize| {
            if qk_norm {
                r.vector(&format!("{p}.{name}.weight"), n).map(Some)
            } else {
                Ok(None)
            }
        };
        let post_norm = |r: &mut Reader<'_, R>, name: &str| {
            if post_norms {
                r.vector(&format!("{p}.{name}.weight"), hidden).map(Some)
            } else {
                Ok(None)
            }
        };
        layers.push(NativeLayer {
            attn_norm: r.vector(&format!("{p}.attn_norm.weight"), hidden)?,
            q: r.matrix(&format!("{p}.attn_q.weight"), q_width, hidden)?,
            k: r.matrix(&format!("{p}.attn_k.weight"), kv_width, hidden)?,
            v: r.matrix(&format!("{p}.attn_v.weight"), kv_width, hidden)?,
            q_bias: bias(&mut r, "attn_q", q_width)?,
            k_bias: bias(&mut r, "attn_k", kv_width)?,
            v_bias: bias(&mut r, "attn_v", kv_width)?,
            o: r.matrix(&format!("{p}.attn_output.weight"), hidden, q_width)?,
            q_norm: norm(&mut r, "attn_q_norm", config.head_dim)?,
            k_norm: norm(&mut r, "attn_k_norm", config.head_dim)?,
            post_attn_norm: post_norm(&mut r, "post_attention_norm")?,
            ffn_norm: r.vector(&format!("{p}.ffn_norm.weight"), hidden)?,
            post_ffn_norm: post_norm(&mut r, "post_ffw_norm")?,
            gate: r.matrix(&format!("{p}.ffn_gate.weight"), ffn, hidden)?,
            up: r.matrix(&format!("{p}.ffn_up.weight"), ffn, hidden)?,
            down: r.matrix(&format!("{p}.ffn_down.weight"), hidden, ffn)?,
        });
    }
    let norm = r.vector("output_norm.weight", hidden)?;
    NativeModel::new(
        config.clone(),
        embedding,
        lm_head,
        layers,
        norm,
        threads,
        isa,
    )
    .map(Some)
}

struct Reader<'a, R> {
    path: &'a Path,
    gguf: &'a GgufFile,
    reader: &'a mut R,
}

impl<R: Read + Seek> Reader<'_, R> {
    fn err(&self, name: &str, message: impl Into<String>) -> ModelError {
        ModelError::Weight {
            path: self.path.to_path_buf(),
            name: name.to_string(),
            message: message.into(),
        }
    }

    /// The tensor's format, its dimensions (outermost first) and its bytes.
    fn raw(&mut self, name: &str) -> Result<(WeightType, Vec<usize>, Vec<u8>), ModelError> {
        let info = self
            .gguf
            .tensor(name)
            .ok_or_else(|| self.err(name, "missing"))?;
        let ty = weight_type(info.ggml_type)
            .ok_or_else(|| self.err(name, format!("format {}", info.ggml_type)))?;
        let data = self
            .gguf
            .tensor_data(self.reader, info)
            .map_err(|e| crate::gguf::gguf_error(self.path, e))?;
        // The reader sized the data by ggml's block layout; the kernels' must agree.
        let elems = info.elements();
        if !elems.is_multiple_of(ty.block_len())
            || data.len() != elems / ty.block_len() * ty.block_bytes()
        {
            return Err(self.err(
                name,
                format!(
                    "{} bytes are not {elems} {} elements",
                    data.len(),
                    ty.name()
                ),
            ));
        }
        Ok((ty, info.shape.clone(), data))
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<QMatrix, ModelError> {
        let (ty, dims, data) = self.raw(name)?;
        if dims != [rows, cols] {
            return Err(self.err(name, format!("shape {dims:?}, expected [{rows}, {cols}]")));
        }
        QMatrix::new(ty, rows, cols, data).ok_or_else(|| self.err(name, "size does not match"))
    }

    fn vector(&mut self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        let (ty, dims, data) = self.raw(name)?;
        if dims.iter().product::<usize>() != n {
            return Err(self.err(name, format!("shape {dims:?}, expected [{n}]")));
        }
        let mut out = vec![0f32; n];
        super::quant::dequantize_row(ty, &data, &mut out);
        Ok(out)
    }
}
