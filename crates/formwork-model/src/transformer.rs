//! The batched forward pass of a llama-style decoder.
//!
//! One call advances any number of sequences, each by any number of tokens (a whole prompt
//! for prefill, one token for decode), against that sequence's own [`KvCache`]. The token
//! rows of all sequences are stacked so every projection and feed-forward layer runs as one
//! matrix multiplication over the batch (the weights are read once per step, which is what
//! makes continuous batching pay on a CPU); only attention runs per sequence, over its own
//! cache.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

use crate::cache::KvCache;
use crate::config::{Architecture, RopeStyle, TransformerConfig};
use crate::cpu::NativeModel;
use crate::{BatchItem, ModelError};

/// A linear layer: quantized or dense weights, an optional bias.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub(crate) weight: QMatMul,
    pub(crate) bias: Option<Tensor>,
    /// A dequantized copy of `weight` for batches of rows (see [`Transformer::densify`]).
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

/// A loaded transformer: its configuration and weights, run either by candle or by
/// Formwork's own CPU kernels ([`crate::cpu`]).
#[derive(Debug)]
pub struct Transformer {
    pub(crate) config: TransformerConfig,
    backend: Backend,
    device: Device,
}

/// Which code runs the forward pass.
#[derive(Debug)]
enum Backend {
    Candle(CandleWeights),
    Native(NativeModel),
}

/// candle tensors: weights and rotary tables.
#[derive(Debug)]
struct CandleWeights {
    embedding: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
}

/// Where one batch item's rows sit in the stacked batch.
pub(crate) struct Span {
    /// The item's first row in the stacked batch.
    pub(crate) offset: usize,
    /// Its rows (new tokens).
    pub(crate) len: usize,
    /// The position of its first new token (the tokens its cache already holds).
    pub(crate) start: usize,
}

/// Every item's new tokens stacked into one list of ids, and where each item's rows sit.
pub(crate) fn stack(batch: &[BatchItem<'_>]) -> (Vec<u32>, Vec<Span>) {
    let mut ids = Vec::new();
    let mut spans = Vec::with_capacity(batch.len());
    for item in batch {
        spans.push(Span {
            offset: ids.len(),
            len: item.tokens.len(),
            start: item.cache.len(),
        });
        ids.extend_from_slice(item.tokens);
    }
    (ids, spans)
}

impl Transformer {
    /// Assembles a transformer from its parts and precomputes the rotary tables.
    pub(crate) fn new(
        config: TransformerConfig,
        embedding: Embedding,
        layers: Vec<Layer>,
        norm: RmsNorm,
        lm_head: Linear,
        device: &Device,
    ) -> Result<Transformer, ModelError> {
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
        Ok(Transformer {
            config,
            backend: Backend::Candle(CandleWeights {
                cos: freqs.cos()?,
                sin: freqs.sin()?,
                embedding,
                layers,
                norm,
                lm_head,
            }),
            device: device.clone(),
        })
    }

    /// A transformer run by Formwork's own CPU kernels.
    pub(crate) fn native(model: NativeModel) -> Transformer {
        Transformer {
            config: model.config.clone(),
            backend: Backend::Native(model),
            device: Device::Cpu,
        }
    }

    /// Which backend runs the forward pass: `"cpu-native"` (Formwork's kernels) or
    /// `"candle"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Candle(_) => "candle",
            Backend::Native(_) => "cpu-native",
        }
    }

    /// Threads a forward pass uses on the native CPU backend (`None` on candle, whose pool
    /// `CANDLE_NUM_THREADS` sizes).
    pub fn threads(&self) -> Option<usize> {
        match &self.backend {
            Backend::Native(m) => Some(m.threads()),
            Backend::Candle(_) => None,
        }
    }

    /// Runs forward passes on `threads` threads from now on (the native CPU backend; candle
    /// ignores it).
    pub fn set_threads(&mut self, threads: usize) -> Result<(), ModelError> {
        match &mut self.backend {
            Backend::Native(m) => m.set_threads(threads),
            Backend::Candle(_) => Ok(()),
        }
    }

    /// Bytes of weights held by the native backend (`None` on candle).
    pub fn weight_bytes(&self) -> Option<usize> {
        match &self.backend {
            Backend::Native(m) => Some(m.weight_bytes()),
            Backend::Candle(_) => None,
        }
    }

    /// On the CPU, keeps a dequantized f32 copy of every quantized projection when all of them
    /// fit in `limit_bytes`, so prefill and batched decode run as dense matrix products (several
    /// times faster than the quantized kernels for more than one row), while single-sequence
    /// decode keeps the quantized kernels (less memory traffic). Returns the bytes added.
    pub fn densify(&mut self, limit_bytes: usize) -> Result<usize, ModelError> {
        let Backend::Candle(weights) = &mut self.backend else {
            return Ok(0);
        };
        if !self.device.is_cpu() {
            return Ok(0);
        }
        let mut linears: Vec<&mut Linear> = Vec::new();
        for layer in &mut weights.layers {
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
        linears.push(&mut weights.lm_head);
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

    /// The model's hyper-parameters.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.layers, self.config.context_length)
    }

    /// Runs every item's new tokens through the model against its own cache and returns, for
    /// each item, the logits of its last token (`vocab_size` floats).
    pub fn forward(&self, batch: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = &self.config;
        for (index, item) in batch.iter().enumerate() {
            if item.tokens.is_empty() {
                return Err(ModelError::EmptyInput { index });
            }
            let total = item.cache.len() + item.tokens.len();
            if total > cfg.context_length.min(item.cache.max_len()) {
                return Err(ModelError::ContextOverflow {
                    tokens: total,
                    context_length: cfg.context_length.min(item.cache.max_len()),
                });
            }
            if let Some(&bad) = item.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(ModelError::TokenOutOfRange {
                    token: bad,
                    vocab_size: cfg.vocab_size,
                });
            }
        }
        match &self.backend {
            Backend::Native(m) => m.forward(batch),
            Backend::Candle(w) => self.forward_candle(w, batch),
        }
    }
}

impl CandleWeights {
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

impl Transformer {
    fn forward_candle(
        &self,
        w: &CandleWeights,
        batch: &mut [BatchItem<'_>],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let cfg = &self.config;
        let (ids, spans) = stack(batch);
        let rows = ids.len();
        let ids = Tensor::from_vec(ids, rows, &self.device)?;
        let mut x = w.embedding.forward(&ids)?;
        let (heads, kv_heads, head_dim) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let group = heads / kv_heads;
        let scale = 1.0 / (head_dim as f64).sqrt();

        for (li, layer) in w.layers.iter().enumerate() {
            let h = layer.attn_norm.forward(&x)?;
            let q = layer.q.forward(&h)?;
            let k = layer.k.forward(&h)?;
            let v = layer.v.forward(&h)?;
            let mut outputs = Vec::with_capacity(batch.len());
            for (item, span) in batch.iter_mut().zip(&spans) {
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
                let qi = w.rope(cfg.rope_style, &qi.transpose(0, 1)?, span.start, t)?;
                let ki = w.rope(cfg.rope_style, &ki.transpose(0, 1)?, span.start, t)?;
                let vi = vi.transpose(0, 1)?.contiguous()?;
                let (keys, values) = item.cache.append(li, &ki, &vi)?;
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
        for (item, span) in batch.iter_mut().zip(&spans) {
            item.cache.commit(span.len);
        }
        let last: Vec<u32> = spans
            .iter()
            .map(|s| (s.offset + s.len - 1) as u32)
            .collect();
        let last = Tensor::from_vec(last, spans.len(), &self.device)?;
        let x = w.norm.forward(&x.index_select(&last, 0)?)?;
        let logits = w.lm_head.forward(&x)?.to_dtype(DType::F32)?;
        let logits = logits.to_device(&Device::Cpu)?;
        Ok(logits.to_vec2::<f32>()?)
    }

    /// Whether this architecture normalizes queries and keys per head.
    pub(crate) fn has_qk_norm(arch: Architecture) -> bool {
        matches!(arch, Architecture::Qwen3)
    }
}
