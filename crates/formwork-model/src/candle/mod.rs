//! The candle backend: the batched forward pass of a llama-style decoder on candle's tensors,
//! for every GPU device (`cuda`, `metal` features), Hugging Face safetensors folders, and GGUF
//! files with a tensor format the CPU backend ([`crate::cpu`]) lacks.
//!
//! One call advances any number of sequences, each by any number of tokens, against that
//! sequence's own cache ([`CandleCache`]). The token rows of all sequences are stacked so
//! every projection and feed-forward layer runs as one matrix multiplication over the batch;
//! only attention runs per sequence, over its own cache.

mod cache;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

use crate::cache::KvCache;
use crate::config::{Architecture, RopeStyle, TransformerConfig};
use crate::transformer::stack;
use crate::{BatchItem, Model, ModelError};
pub(crate) use cache::CandleCache;

/// Whether this backend implements `architecture` (Gemma 3 runs only on the native CPU
/// backend).
pub(crate) fn runs(architecture: Architecture) -> bool {
    !matches!(architecture, Architecture::Gemma3)
}

/// The error for a model of an architecture this backend does not implement.
pub(crate) fn unsupported(path: &std::path::Path, architecture: Architecture) -> ModelError {
    ModelError::UnsupportedOnBackend {
        path: path.to_path_buf(),
        architecture: architecture.as_str(),
        backend: "candle",
        hint: "it runs on the native CPU backend only: a GGUF file whose tensors are F32, F16, \
               BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K or Q6_K, on the cpu device, \
               without FORMWORK_BACKEND=candle",
    }
}

/// A linear layer: quantized or dense weights, an optional bias.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub(crate) weight: QMatMul,
    pub(crate) bias: Option<Tensor>,
    /// A dequantized copy of `weight` for batches of rows (see [`CandleModel::densify`]).
    pub(crate) dense: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(weight: QMatMul, bias: Option<Tensor>) -> Linear {
        Linear {
            weight,
            bias,
            dense: None,
        }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.dense {
            Some(w) if x.dim(0)? >= DENSE_MIN_ROWS => x.matmul(&w.t()?)?,
            _ => self.weight.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Batches of at least this many rows use the dense weights when there are some: a
/// quantized kernel costs the same per row however many rows there are, while a dense GEMM
/// reads the weights once for all of them.
const DENSE_MIN_ROWS: usize = 2;

/// An RMS norm over the last dimension.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// The token embedding table, quantized or dense.
#[derive(Debug, Clone)]
pub(crate) enum Embedding {
    Quantized(std::sync::Arc<candle_core::quantized::QTensor>),
    Dense(Tensor),
}

impl Embedding {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Embedding::Quantized(q) => q.embedding(ids),
            Embedding::Dense(t) => t.index_select(ids, 0),
        }
    }
}

/// One decoder block's weights.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) attn_norm: RmsNorm,
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    pub(crate) q_norm: Option<RmsNorm>,
    pub(crate) k_norm: Option<RmsNorm>,
    pub(crate) ffn_norm: RmsNorm,
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

/// A transformer's weights and rotary tables as candle tensors, on one device.
#[derive(Debug)]
pub(crate) struct CandleModel {
    config: TransformerConfig,
    embedding: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

impl CandleModel {
    /// Assembles a model from its parts and precomputes the rotary tables.
    pub(crate) fn new(
        config: TransformerConfig,
        embedding: Embedding,
        layers: Vec<Layer>,
        norm: RmsNorm,
        lm_head: Linear,
        device: &Device,
    ) -> Result<CandleModel, ModelError> {
        let half = config.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                1.0 / config
                    .rope_theta
                    .powf(2.0 * i as f64 / config.head_dim as f64) as f32
            })
            .collect();
        let positions = config.context_length;
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let t = Tensor::arange(0u32, positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = t.matmul(&inv_freq)?;
        Ok(CandleModel {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            config,
            embedding,
            layers,
            norm,
            lm_head,
            device: device.clone(),
        })
    }

    /// The device the weights live on.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// On the CPU, keeps a dequantized f32 copy of every quantized projection when all of them
    /// fit in `limit_bytes` (see [`crate::Transformer::densify`]). Returns the bytes added.
    pub(crate) fn densify(&mut self, limit_bytes: usize) -> Result<usize, ModelError> {
        if !self.device.is_cpu() {
            return Ok(0);
        }
        let mut linears: Vec<&mut Linear> = Vec::new();
        for layer in &mut self.layers {
            linears.extend([
                &mut layer.q,
                &mut layer.k,
                &mut layer.v,
                &mut layer.o,
                &mut layer.gate,
                &mut layer.up,
                &mut layer.down,
            ]);
        }
        linears.push(&mut self.lm_head);
        let size: usize = linears
            .iter()
            .map(|l| match &l.weight {
                QMatMul::QTensor(q) => q.shape().elem_count() * 4,
                _ => 0,
            })
            .sum();
        if size == 0 || size > limit_bytes {
            return Ok(0);
        }
        for l in linears {
            if let QMatMul::QTensor(q) = &l.weight {
                l.dense = Some(q.dequantize(&self.device)?);
            }
        }
        Ok(size)
    }

    /// Rotates `len` rows of `x` (`[heads, len, head_dim]`) for positions from `start`.
    fn rope(
        &self,
        style: RopeStyle,
        x: &Tensor,
        start: usize,
        len: usize,
    ) -> candle_core::Result<Tensor> {
        let cos = self.cos.narrow(0, start, len)?;
        let sin = self.sin.narrow(0, start, len)?;
        let x = x.contiguous()?.unsqueeze(0)?;
        let y = match style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
            RopeStyle::Halves => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
        };
        y.squeeze(0)
    }
}

impl Model for CandleModel {
    fn config(&self) -> &TransformerConfig {
        &self.config
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(&self.config, CandleCache::new(self.config.layers))
    }

    /// The batch was checked by [`crate::Transformer::forward`].
    fn forward(&self, batch: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let cfg = &self.config;
        let (ids, spans) = stack(batch);
        let mut caches = batch
            .iter_mut()
            .map(|item| item.cache.buffers_mut::<CandleCache>(cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = ids.len();
        let ids = Tensor::from_vec(ids, rows, &self.device)?;
        let mut x = self.embedding.forward(&ids)?;
        let (heads, kv_heads, head_dim) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let group = heads / kv_heads;
        let scale = 1.0 / (head_dim as f64).sqrt();

        for (li, layer) in self.layers.iter().enumerate() {
            let h = layer.attn_norm.forward(&x)?;
            let q = layer.q.forward(&h)?;
            let k = layer.k.forward(&h)?;
            let v = layer.v.forward(&h)?;
            let mut outputs = Vec::with_capacity(spans.len());
            for (cache, span) in caches.iter_mut().zip(&spans) {
                let t = span.len;
                let mut qi = q.narrow(0, span.offset, t)?.reshape((t, heads, head_dim))?;
                let mut ki = k
                    .narrow(0, span.offset, t)?
                    .reshape((t, kv_heads, head_dim))?;
                let vi = v
                    .narrow(0, span.offset, t)?
                    .reshape((t, kv_heads, head_dim))?;
                if let Some(norm) = &layer.q_norm {
                    qi = norm.forward(&qi)?;
                }
                if let Some(norm) = &layer.k_norm {
                    ki = norm.forward(&ki)?;
                }
                let qi = self.rope(cfg.rope_style, &qi.transpose(0, 1)?, span.start, t)?;
                let ki = self.rope(cfg.rope_style, &ki.transpose(0, 1)?, span.start, t)?;
                let vi = vi.transpose(0, 1)?.contiguous()?;
                let (keys, values) = cache.append(li, span.start, &ki, &vi, cfg.context_length)?;
                let total = span.start + t;
                // Query heads sharing a key/value head are stacked along the row axis, so
                // grouped-query attention needs no copy of the keys and values.
                let qg = qi.reshape((kv_heads, group * t, head_dim))?;
                let mut att = (qg.matmul(&keys.t()?)? * scale)?;
                if t > 1 {
                    let mut mask = vec![0f32; t * total];
                    for (i, row) in mask.chunks_mut(total).enumerate() {
                        for cell in &mut row[span.start + i + 1..] {
                            *cell = f32::NEG_INFINITY;
                        }
                    }
                    let mask = Tensor::from_vec(mask, (t, total), &self.device)?;
                    att = att
                        .reshape((kv_heads, group, t, total))?
                        .broadcast_add(&mask)?
                        .reshape((kv_heads, group * t, total))?;
                }
                let att = candle_nn::ops::softmax_last_dim(&att)?;
                let out = att.matmul(&values.contiguous()?)?;
                let out = out
                    .reshape((heads, t, head_dim))?
                    .transpose(0, 1)?
                    .reshape((t, heads * head_dim))?;
                outputs.push(out);
            }
            let attn = if outputs.len() == 1 {
                outputs.pop().expect("one output")
            } else {
                Tensor::cat(&outputs, 0)?
            };
            x = (x + layer.o.forward(&attn)?)?;
            let h = layer.ffn_norm.forward(&x)?;
            let gate = candle_nn::ops::silu(&layer.gate.forward(&h)?)?;
            let ff = layer.down.forward(&(gate * layer.up.forward(&h)?)?)?;
            x = (x + ff)?;
        }
        drop(caches);
        let last: Vec<u32> = spans
            .iter()
            .map(|s| (s.offset + s.len - 1) as u32)
            .collect();
        let last = Tensor::from_vec(last, spans.len(), &self.device)?;
        let x = self.norm.forward(&x.index_select(&last, 0)?)?;
        let logits = self.lm_head.forward(&x)?.to_dtype(DType::F32)?;
        let logits = logits.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        for (item, span) in batch.iter_mut().zip(&spans) {
            item.cache.commit(span.len);
        }
        Ok(logits)
    }
}
