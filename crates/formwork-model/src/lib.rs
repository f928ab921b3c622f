//! Model backends for Formwork on [candle](https://github.com/huggingface/candle): quantized
//! GGUF files and Hugging Face safetensors folders for the llama family (Llama, Mistral,
//! SmolLM) and Qwen 2/3, with their tokenizer, chat template and end-of-sequence tokens.
//!
//! The engine drives a [`Model`]: one copy of the weights, any number of sequences, each
//! with its own [`KvCache`]. [`Model::forward`] takes a batch of sequences, each advancing by
//! any number of tokens (a whole prompt for prefill, one token for decode), and returns the
//! next-token logits of each.
//!
//! The crate reads in that order: loading ([`load`], [`load_with`]: GGUF files in `gguf`,
//! Hugging Face folders in `safetensors`), then one module per backend behind [`Model`]:
//! `cpu` (Formwork's own kernels, GGUF files on the CPU) and `candle` (GPUs, safetensors
//! folders, the GGUF formats the CPU kernels lack), each with its own key/value buffers. A
//! [`Transformer`] is whichever of them loading picked.
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
mod candle;
mod config;
mod cpu;
mod error;
mod gguf;
mod info;
pub mod kernels;
mod safetensors;
mod spm;
#[cfg(feature = "testing")]
pub mod testing;
mod tokenizer;
mod transformer;

use std::path::Path;
use std::sync::Arc;

pub use cache::{KvBlock, KvCache};
pub use candle_core::Device;
pub use config::{Architecture, RopeStyle, SlidingWindow, TransformerConfig};
pub use cpu::isa::{CPU_KERNELS_ENV, CpuKernels, cpu_kernels};
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
    /// An empty cache for a new sequence, in this model's backend layout (a cache runs only
    /// on a model of the same backend and shape).
    fn new_cache(&self) -> KvCache;
    /// Runs each item's tokens against its cache and returns the logits after each item's
    /// last token. Every cache grows by its item's token count; on error no cache grows.
    fn forward(&self, batch: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError>;
    /// Which arithmetic computes the row at `position` of a sequence whose cache was told its
    /// prompt is `prompt_len` tokens ([`KvCache::set_prompt_len`]). Keys and values computed
    /// for the same tokens in the same classes are the same bits, so a cached prefix may stand
    /// in for a new request's only where the classes match too, not only the tokens (the CPU
    /// backend computes a prompt's last short ubatch with another attention kernel).
    fn kernel_class(&self, prompt_len: usize, position: usize) -> u8 {
        let _ = (prompt_len, position);
        0
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

/// How to load a model: the device, and the threads and kernels of the CPU backend.
///
/// ```
/// use formwork_model::{Device, LoadOptions};
///
/// let options = LoadOptions::new(Device::Cpu).with_threads(4);
/// assert_eq!(options.threads, Some(4));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Where the weights go (see [`device`]).
    pub device: Device,
    /// Threads of a forward pass on the native CPU backend; `None`: `FORMWORK_THREADS`, else
    /// `CANDLE_NUM_THREADS`, else every core. candle ignores it (`CANDLE_NUM_THREADS` sizes
    /// its pool).
    pub threads: Option<usize>,
    /// The kernels of the native CPU backend, lowered to what the CPU has; `None`:
    /// [`cpu_kernels`] (the best the CPU has, unless `FORMWORK_CPU_KERNELS` lowers it).
    /// Every set gives the same bits. candle ignores it.
    pub cpu_kernels: Option<CpuKernels>,
    /// Which attention kernel the native CPU backend gives prompt rows (see
    /// [`PromptAttention`]); candle ignores it.
    pub prompt_attention: PromptAttention,
}

/// Which kernels the native CPU backend computes a prompt's rows with: attention, and the
/// products of Q4_K and Q6_K matrices. Generated rows always take llama.cpp's row-by-row
/// attention kernel (f16 queries and accumulator) and its one-row Q4_K and Q6_K kernels.
///
/// The choice decides which cached keys and values a later prompt can reuse: reuse is exact
/// only where a fresh prompt would compute a position with the same kernels, so the engine's
/// prefix cache asks [`Model::kernel_class`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PromptAttention {
    /// Every row, prompt or generated, takes the row-by-row kernels. A position's keys and
    /// values then depend only on the tokens up to it, never on how a batch was cut, so a
    /// conversation re-sent with the assistant's reply appended reuses the reply's cache
    /// entries (computed while it was generated). Logits equal llama.cpp's on prompts under
    /// 64 tokens (under 4 for a model with Q4_K or Q6_K matrices) and in every decode step
    /// after them; on longer prompts they differ from llama.cpp's by float noise (llama.cpp
    /// switches kernels there).
    #[default]
    RowByRow,
    /// As llama.cpp's server: a prompt's ubatches of 64 rows or more take the tiled
    /// attention kernel (f32 throughout), shorter ones row by row; the Q4_K matrices
    /// llama.cpp's x86 build repacks (output rows a multiple of 8) are multiplied into a
    /// ubatch's rows four at a time as its `ggml_gemm_q4_K_8x8_q8_K` rounds them, except
    /// the ubatch's last `len % 4` rows, which take its one-row kernel; and Q6_K matrices
    /// into a ubatch of 8 rows or more with its tiled product. The ubatches are the server's:
    /// 512 rows within batches of 2048, and, for a model with a sliding window, a batch
    /// ended 516 and 4 tokens before the prompt's end (its context checkpoints). A row's bits
    /// then depend on the prompt's length ([`KvCache::set_prompt_len`]; when the cache was
    /// not told it, a sequence's first forward pass is its whole prompt, and a later pass's
    /// rows are one ubatch), never on the other sequences of a batch. Logits equal
    /// llama.cpp's bit for bit for every prompt tested; a generated reply's entries are not
    /// reusable by a prompt that contains it, since a fresh prompt computes those positions
    /// with the prompt kernels.
    LlamaCpp,
}

impl std::str::FromStr for PromptAttention {
    type Err = String;

    fn from_str(s: &str) -> Result<PromptAttention, String> {
        match s {
            "row-by-row" => Ok(PromptAttention::RowByRow),
            "llama-cpp" => Ok(PromptAttention::LlamaCpp),
            _ => Err(format!("{s:?}: expected row-by-row or llama-cpp")),
        }
    }
}

impl LoadOptions {
    /// Loading onto `device` with the default thread count.
    pub fn new(device: Device) -> LoadOptions {
        LoadOptions {
            device,
            threads: None,
            prompt_attention: PromptAttention::default(),
            cpu_kernels: None,
        }
    }

    /// The same options with `threads` threads (at least 1).
    pub fn with_threads(mut self, threads: usize) -> LoadOptions {
        self.threads = Some(threads);
        self
    }

    /// The same options with prompt rows computed as `prompt_attention` says.
    pub fn with_prompt_attention(mut self, prompt_attention: PromptAttention) -> LoadOptions {
        self.prompt_attention = prompt_attention;
        self
    }

    /// The same options with the CPU backend running `kernels`, or the best the CPU has
    /// below them (`CpuKernels::Scalar`: the portable code only).
    pub fn with_cpu_kernels(mut self, kernels: CpuKernels) -> LoadOptions {
        self.cpu_kernels = Some(kernels);
        self
    }
}

impl Default for LoadOptions {
    /// The CPU, the default thread count.
    fn default() -> LoadOptions {
        LoadOptions::new(Device::Cpu)
    }
}

/// Loads a model from a `.gguf` file or a Hugging Face folder (config.json, *.safetensors,
/// tokenizer.json, tokenizer_config.json) onto `device`, with the default options otherwise
/// (see [`load_with`]).
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel, ModelError> {
    load_with(path, &LoadOptions::new(device.clone()))
}

/// Loads a model from a `.gguf` file or a Hugging Face folder (config.json, *.safetensors,
/// tokenizer.json, tokenizer_config.json) as `options` say.
pub fn load_with(path: &Path, options: &LoadOptions) -> Result<LoadedModel, ModelError> {
    if options.threads == Some(0) {
        return Err(ModelError::Device {
            name: "cpu".into(),
            message: "0 threads: a forward pass needs at least one".into(),
        });
    }
    let meta = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?;
    if meta.is_dir() {
        if path.join("config.json").exists() {
            return safetensors::load(path, &options.device);
        }
        return Err(ModelError::NotAModel {
            path: path.to_path_buf(),
        });
    }
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        if f.read_exact(&mut magic).is_err() || magic != formwork_gguf::MAGIC {
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
    gguf::load(path, options)
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
