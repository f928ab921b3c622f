//! Typed errors of model loading and running.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A model file or folder does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The path is neither a GGUF file nor a Hugging Face model folder.
    #[error(
        "{path}: not a model: expected a .gguf file or a folder with config.json and *.safetensors"
    )]
    NotAModel {
        /// The path given.
        path: PathBuf,
    },
    /// The file is not a valid GGUF file, or a tensor in it cannot be read.
    #[error("{path}: corrupt or unreadable GGUF: {message}")]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The model's architecture is not one this crate implements.
    #[error("{path}: unsupported architecture `{architecture}` (supported: {supported})")]
    UnsupportedArchitecture {
        /// The model file or folder.
        path: PathBuf,
        /// The architecture named in its metadata.
        architecture: String,
        /// The architectures that are supported.
        supported: &'static str,
    },
    /// The architecture is implemented, but not by the backend this model would run on
    /// (Gemma 3 runs only on the native CPU backend, from a GGUF file whose tensors are all in
    /// formats it computes with).
    #[error(
        "{path}: architecture `{architecture}` is not supported by the {backend} backend: {hint}"
    )]
    UnsupportedOnBackend {
        /// The model file or folder.
        path: PathBuf,
        /// The architecture named in its metadata.
        architecture: &'static str,
        /// The backend that would have run it (`"candle"`).
        backend: &'static str,
        /// What would run it.
        hint: &'static str,
    },
    /// A required metadata key or config field is missing or has the wrong type.
    #[error("{path}: missing or invalid `{key}`: {message}")]
    Metadata {
        /// The model file or folder.
        path: PathBuf,
        /// The key or config field.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// A weight tensor is missing or has an unexpected shape.
    #[error("{path}: weight `{name}`: {message}")]
    Weight {
        /// The model file or folder.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What was wrong.
        message: String,
    },
    /// The tokenizer could not be built or loaded.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A sequence would grow past the model's context length.
    #[error("sequence of {tokens} tokens exceeds the context length of {context_length}")]
    ContextOverflow {
        /// Tokens the sequence would hold.
        tokens: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// A token id is outside the model's vocabulary.
    #[error("token id {token} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange {
        /// The token id.
        token: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A forward pass was asked for with no tokens in a batch item.
    #[error("batch item {index} has no tokens")]
    EmptyInput {
        /// The index of the item in the batch.
        index: usize,
    },
    /// A device name that is unknown, or a device this build cannot use.
    #[error("device `{name}`: {message}")]
    Device {
        /// The name given.
        name: String,
        /// What was wrong.
        message: String,
    },
    /// A cache handed to a model that cannot use it (made by another backend or for a model
    /// of another shape).
    #[error("key/value cache: {message}")]
    Cache {
        /// What was wrong.
        message: String,
    },
    /// An error inside candle while computing.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
