//! The shape of a decoder-only transformer, independent of where its weights come from.

/// The model families this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// Llama 2/3, Mistral, SmolLM and other `llama`-architecture models.
    Llama,
    /// Qwen 2 and 2.5: llama with biases on the q/k/v projections.
    Qwen2,
    /// Qwen 3: llama with per-head RMS norms on queries and keys.
    Qwen3,
}

impl Architecture {
    /// The list of supported architecture names, for error messages.
    pub const SUPPORTED: &'static str = "llama, mistral, qwen2, qwen3";

    /// The architecture of a GGUF `general.architecture` or a config.json `model_type`.
    pub fn from_name(name: &str) -> Option<Architecture> {
        match name {
            "llama" | "mistral" => Some(Architecture::Llama),
            "qwen2" => Some(Architecture::Qwen2),
            "qwen3" => Some(Architecture::Qwen3),
            _ => None,
        }
    }

    /// The canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
        }
    }
}

/// How rotary position embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: llama.cpp's "normal" rope, used by llama-family GGUF files
    /// (their q/k weights are permuted at conversion).
    Interleaved,
    /// Pairs `(i, i + d/2)`: the Hugging Face layout, and llama.cpp's "neox" rope (Qwen).
    Halves,
}

/// The hyper-parameters of a transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerConfig {
    /// The model family.
    pub architecture: Architecture,
    /// Number of decoder blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Number of query heads.
    pub heads: usize,
    /// Number of key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding and of the output projection).
    pub vocab_size: usize,
    /// Longest sequence the model was trained for.
    pub context_length: usize,
    /// RMS-norm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary embedding base frequency.
    pub rope_theta: f64,
    /// How rotary embeddings pair dimensions.
    pub rope_style: RopeStyle,
}

impl TransformerConfig {
    /// Checks that the dimensions fit together.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.layers == 0 || self.hidden_size == 0 || self.heads == 0 || self.kv_heads == 0 {
            return Err("layers, hidden size and head counts must be positive".into());
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "{} query heads are not a multiple of {} key/value heads",
                self.heads, self.kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(format!("head dimension {} must be even", self.head_dim));
        }
        if self.vocab_size == 0 || self.context_length == 0 {
            return Err("vocabulary size and context length must be positive".into());
        }
        Ok(())
    }
}
