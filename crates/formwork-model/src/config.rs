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
    /// Gemma 3: embeddings scaled by `sqrt(hidden_size)`, RMS norms before and after
    /// attention and the feed-forward layer, per-head query/key norms, a GELU-gated
    /// feed-forward layer, interleaved sliding-window and global attention layers
    /// ([`SlidingWindow`]), queries scaled before attention. CPU backend only.
    Gemma3,
}

impl Architecture {
    /// The list of supported architecture names, for error messages.
    pub const SUPPORTED: &'static str = "llama, mistral, qwen2, qwen3, gemma3";

    /// The architecture of a GGUF `general.architecture` or a config.json `model_type`.
    pub fn from_name(name: &str) -> Option<Architecture> {
        match name {
            "llama" | "mistral" => Some(Architecture::Llama),
            "qwen2" => Some(Architecture::Qwen2),
            "qwen3" => Some(Architecture::Qwen3),
            "gemma3" => Some(Architecture::Gemma3),
            _ => None,
        }
    }

    /// The canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma3 => "gemma3",
        }
    }

    /// Whether queries and keys get per-head RMS norms.
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Architecture::Qwen3 | Architecture::Gemma3)
    }
}

/// Gemma-style interleaved attention: local layers attend only to the last `window`
/// positions, with their own rotary base; the others (global layers) to all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    /// Positions a local layer sees: the query's own and the `window - 1` before it.
    pub window: usize,
    /// For each layer, whether it is local.
    pub local_layers: Vec<bool>,
    /// Rotary base frequency of the local layers.
    pub rope_theta: f64,
}

impl SlidingWindow {
    /// Whether layer `layer` attends through the window.
    pub fn is_local(&self, layer: usize) -> bool {
        self.local_layers.get(layer).copied().unwrap_or(false)
    }

    /// llama.cpp's `set_swa_pattern(period)` for `layers` layers: every `period`-th layer is
    /// global (layers `period - 1`, `2 * period - 1`, ...), the others local; a period of 0
    /// makes every layer local.
    pub fn periodic(layers: usize, period: usize) -> Vec<bool> {
        (0..layers)
            .map(|i| period == 0 || i % period < period - 1)
            .collect()
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
    /// Linear rotary scaling of the global layers: positions are multiplied by this (1: none;
    /// `1 / rope.scaling.factor` of a `linear` scaling).
    pub rope_freq_scale: f64,
    /// Local sliding-window layers, if the model has them.
    pub sliding_window: Option<SlidingWindow>,
    /// Queries are multiplied by this before attention, which then applies no scale of its
    /// own; `None`: attention scales scores by `1 / sqrt(head_dim)`.
    pub query_scale: Option<f64>,
    /// Logits are capped to `c * tanh(logit / c)` with this `c`, if set.
    pub final_logit_softcapping: Option<f64>,
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
        if self.sliding_window.as_ref().is_some_and(|w| w.window == 0) {
            return Err("the sliding window must be positive".into());
        }
        Ok(())
    }
}
