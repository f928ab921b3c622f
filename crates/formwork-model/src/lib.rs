//! Model backends for Formwork on [candle](https://github.com/huggingface/candle): quantized
//! GGUF files and Hugging Face safetensors folders for the llama family (Llama, Mistral,
//! SmolLM) and Qwen 2/3, with their tokenizer, chat template and end-of-sequence tokens.
//!
//! The engine drives a [`Model`]: one copy of the weights, any number of sequences, each
//! with its own [`KvCache`]. [`Model::forward`] takes a batch of sequences, each advancing by
//! any number of tokens (a whole prompt for prefill, one token for decode), and returns the
//! next-token logits of each.
//!
//! ```no_run
//! use formwork_model::{BatchItem, Device, load};
//!
//! let loaded = load("models/SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &Device::Cpu)?;
//! let prompt = loaded.tokenizer.encode("The capital of France is", true)?;
//! let mut cache = loaded.model.new_cache();
//! let logits = loaded.model.forward(&mut [BatchItem { tokens: &prompt, cache: &mut cache }])?;
//! let next = logits[0]
//!     .iter()
//!     .enumerate()
//!     .max_by(|a, b| a.1.total_cmp(b.1))
//!     .map(|(i, _)| i as u32);
//! # Ok::<(), formwork_model::ModelError>(())
//! ```

mod cache;
mod config;
mod cpu;
mod error;
mod gguf;
mod info;
pub mod kernels;
mod safetensors;
pub mod testing;
mod tokenizer;
mod transformer;

use std::path::Path;
use std::sync::Arc;

pub use cache::KvCache;
pub use candle_core::Device;
pub use config::{Architecture, RopeStyle, TransformerConfig};
pub use error::ModelError;
pub use formwork_gguf::END_TOKEN_NAMES;
pub use info::ModelInfo;
pub use tokenizer::{GgufVocab, Tokenizer};
pub use transformer::Transformer;

/// One sequence's share of a forward pass: the tokens it adds and its own cache.
///
/// The tokens take positions `cache.len()..cache.len() + tokens.len()`.
#[derive(Debug)]
pub struct BatchItem<'a> {
    /// The new tokens (the prompt for prefill, one token for decode).
    pub tokens: &'a [u32],
    /// The sequence's cache; it grows by `tokens.len()`.
    pub cache: &'a mut KvCache,
}

/// What the engine needs from a model.
pub trait Model: Send + Sync {
    /// Logits length, context length and the like.
    fn config(&self) -> &TransformerConfig;
    /// An empty cache for a new sequence.
    fn new_cache(&self) -> KvCache;
    /// Runs each item's tokens against its cache and returns the logits after each item's
    /// last token. Every cache grows by its item's token count; on error no cache grows.
    fn forward(&self, batch: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError>;
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
}

/// A model ready to run: shared weights, tokenizer and metadata.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The weights, shared by every sequence.
    pub model: Arc<Transformer>,
    /// The model's tokenizer.
    pub tokenizer: Tokenizer,
    /// Metadata for the layers above.
    pub info: ModelInfo,
}

/// Loads a model from a `.gguf` file or a Hugging Face folder (config.json, *.safetensors,
/// tokenizer.json, tokenizer_config.json).
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel, ModelError> {
    let meta = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?;
    if meta.is_dir() {
        if path.join("config.json").exists() {
            return safetensors::load(path, device);
        }
        return Err(ModelError::NotAModel {
            path: path.to_path_buf(),
        });
    }
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        if f.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(if path.extension().is_some_and(|e| e == "gguf") {
                ModelError::Gguf {
                    path: path.to_path_buf(),
                    message: "the file does not start with the GGUF magic".into(),
                }
            } else {
                ModelError::NotAModel {
                    path: path.to_path_buf(),
                }
            });
        }
    }
    gguf::load(path, device)
}

/// The device named `cpu`, `cuda[:N]` or `metal[:N]` (the GPU ones need the crate's `cuda` or
/// `metal` feature).
pub fn device(name: &str) -> Result<Device, ModelError> {
    let err = |message: String| ModelError::Device {
        name: name.to_string(),
        message,
    };
    let (kind, ordinal) = match name.split_once(':') {
        Some((k, n)) => (
            k,
            n.parse::<usize>()
                .map_err(|_| err("the ordinal is not a number".into()))?,
        ),
        None => (name, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(ordinal).map_err(|e| err(e.to_string())),
        "metal" => Device::new_metal(ordinal).map_err(|e| err(e.to_string())),
        _ => Err(err("expected cpu, cuda[:N] or metal[:N]".into())),
    }
}
