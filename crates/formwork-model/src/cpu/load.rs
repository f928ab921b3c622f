//! Reading a GGUF file's tensors as raw GGML bytes for the CPU backend.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;

use super::matmul::QMatrix;
use super::quant::WeightType;
use super::{NativeLayer, NativeModel};
use crate::ModelError;
use crate::config::{Architecture, TransformerConfig};

fn weight_type(dtype: GgmlDType) -> Option<WeightType> {
    Some(match dtype {
        GgmlDType::F32 => WeightType::F32,
        GgmlDType::F16 => WeightType::F16,
        GgmlDType::BF16 => WeightType::BF16,
        GgmlDType::Q4_0 => WeightType::Q4_0,
        GgmlDType::Q4_1 => WeightType::Q4_1,
        GgmlDType::Q8_0 => WeightType::Q8_0,
        GgmlDType::Q4K => WeightType::Q4K,
        GgmlDType::Q6K => WeightType::Q6K,
        _ => return None,
    })
}

/// The model's weights for the CPU backend, or `None` when a tensor is in a format it does not
/// compute with (the caller then loads the file on candle).
pub(crate) fn load_gguf<R: Read + Seek>(
    path: &Path,
    content: &Content,
    reader: &mut R,
    config: &TransformerConfig,
) -> Result<Option<NativeModel>, ModelError> {
    if content
        .tensor_infos
        .values()
        .any(|t| weight_type(t.ggml_dtype).is_none())
    {
        return Ok(None);
    }
    let mut r = Reader {
        path,
        content,
        reader,
    };
    let (hidden, ffn) = (config.hidden_size, config.intermediate_size);
    let (q_width, kv_width) = (
        config.heads * config.head_dim,
        config.kv_heads * config.head_dim,
    );
    let embedding = r.matrix("token_embd.weight", config.vocab_size, hidden)?;
    let lm_head = if content.tensor_infos.contains_key("output.weight") {
        Some(r.matrix("output.weight", config.vocab_size, hidden)?)
    } else {
        None
    };
    let biases = config.architecture == Architecture::Qwen2;
    let qk_norm = crate::Transformer::has_qk_norm(config.architecture);
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
            ffn_norm: r.vector(&format!("{p}.ffn_norm.weight"), hidden)?,
            gate: r.matrix(&format!("{p}.ffn_gate.weight"), ffn, hidden)?,
            up: r.matrix(&format!("{p}.ffn_up.weight"), ffn, hidden)?,
            down: r.matrix(&format!("{p}.ffn_down.weight"), hidden, ffn)?,
        });
    }
    let norm = r.vector("output_norm.weight", hidden)?;
    NativeModel::new(config.clone(), embedding, lm_head, layers, norm).map(Some)
}

struct Reader<'a, R> {
    path: &'a Path,
    content: &'a Content,
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
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.err(name, "missing"))?;
        let ty = weight_type(info.ggml_dtype)
            .ok_or_else(|| self.err(name, format!("format {:?}", info.ggml_dtype)))?;
        let dims = info.shape.dims().to_vec();
        let elems: usize = dims.iter().product();
        let inner = *dims.last().unwrap_or(&1);
        if !inner.is_multiple_of(ty.block_len()) {
            return Err(self.err(
                name,
                format!("rows of {inner} are not whole {} blocks", ty.name()),
            ));
        }
        let size = elems / ty.block_len() * ty.block_bytes();
        let start = self.content.tensor_data_offset + info.offset;
        let mut data = vec![0u8; size];
        self.reader
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.reader.read_exact(&mut data))
            .map_err(|e| self.err(name, format!("cannot read {size} bytes: {e}")))?;
        Ok((ty, dims, data))
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
