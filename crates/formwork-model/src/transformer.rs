//! [`Transformer`]: a loaded model, whichever backend runs it, and what the backends share
//! (the checks on a batch, where each item's rows sit in it).
//!
//! Each backend is a module that implements [`Model`]: [`crate::cpu`] (Formwork's own kernels,
//! GGUF files on the CPU) and [`crate::candle`] (every GPU, safetensors folders, the GGUF
//! formats the CPU kernels lack). Loading picks one; a [`Transformer`] forwards to it.

use candle_core::Device;

use crate::cache::KvCache;
use crate::candle::CandleModel;
use crate::config::TransformerConfig;
use crate::cpu::NativeModel;
use crate::{BatchItem, Model, ModelError};

/// A loaded transformer: its configuration and weights, run either by candle or by
/// Formwork's own CPU kernels.
#[derive(Debug)]
pub struct Transformer {
    backend: Backend,
}

/// Which code runs the forward pass.
#[derive(Debug)]
enum Backend {
    Candle(CandleModel),
    Native(NativeModel),
}

impl Transformer {
    /// A transformer run by candle.
    pub(crate) fn candle(model: CandleModel) -> Transformer {
        Transformer {
            backend: Backend::Candle(model),
        }
    }

    /// A transformer run by Formwork's own CPU kernels.
    pub(crate) fn native(model: NativeModel) -> Transformer {
        Transformer {
            backend: Backend::Native(model),
        }
    }

    /// The backend, as the engine sees it.
    fn model(&self) -> &dyn Model {
        match &self.backend {
            Backend::Candle(m) => m,
            Backend::Native(m) => m,
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

    /// The kernels the native CPU backend runs, picked when the model was loaded
    /// ([`crate::LoadOptions::with_cpu_kernels`], [`crate::cpu_kernels`]); `None` on candle.
    pub fn cpu_kernels(&self) -> Option<crate::CpuKernels> {
        match &self.backend {
            Backend::Native(m) => Some(m.kernels()),
            Backend::Candle(_) => None,
        }
    }

    /// Bytes of weights held by the native backend (`None` on candle).
    pub fn weight_bytes(&self) -> Option<usize> {
        match &self.backend {
            Backend::Native(m) => Some(m.weight_bytes()),
            Backend::Candle(_) => None,
        }
    }

    /// On candle on the CPU, keeps a dequantized f32 copy of every quantized projection when
    /// all of them fit in `limit_bytes`, so prefill and batched decode run as dense matrix
    /// products (several times faster than the quantized kernels for more than one row),
    /// while single-sequence decode keeps the quantized kernels (less memory traffic).
    /// Returns the bytes added (0 on the native backend and on GPUs).
    pub fn densify(&mut self, limit_bytes: usize) -> Result<usize, ModelError> {
        match &mut self.backend {
            Backend::Candle(m) => m.densify(limit_bytes),
            Backend::Native(_) => Ok(0),
        }
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &TransformerConfig {
        self.model().config()
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        match &self.backend {
            Backend::Candle(m) => m.device(),
            Backend::Native(_) => &Device::Cpu,
        }
    }

    /// An empty cache for one sequence, in the backend's own layout.
    pub fn new_cache(&self) -> KvCache {
        self.model().new_cache()
    }

    /// Runs every item's new tokens through the model against its own cache and returns, for
    /// each item, the logits of its last token (`vocab_size` floats).
    pub fn forward(&self, batch: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        check_batch(self.config(), batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.model().forward(batch)
    }
}

impl Model for Transformer {
    fn config(&self) -> &TransformerConfig {
        Transformer::config(self)
    }

    fn new_cache(&self) -> KvCache {
        Transformer::new_cache(self)
    }

    fn forward(&self, batch: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        Transformer::forward(self, batch)
    }

    fn kernel_class(&self, prompt_len: usize, position: usize) -> u8 {
        self.model().kernel_class(prompt_len, position)
    }
}

/// Checks a batch before any backend touches it: every item has tokens, fits the context
/// and names tokens of the vocabulary.
pub(crate) fn check_batch(
    cfg: &TransformerConfig,
    batch: &[BatchItem<'_>],
) -> Result<(), ModelError> {
    for (index, item) in batch.iter().enumerate() {
        if item.tokens.is_empty() {
            return Err(ModelError::EmptyInput { index });
        }
        let total = item.cache.len() + item.tokens.len();
        let limit = cfg.context_length.min(item.cache.max_len());
        if total > limit {
            return Err(ModelError::ContextOverflow {
                tokens: total,
                context_length: limit,
            });
        }
        if let Some(&bad) = item.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(ModelError::TokenOutOfRange {
                token: bad,
                vocab_size: cfg.vocab_size,
            });
        }
    }
    Ok(())
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
