//! What the layers above need to know about a model besides its weights.

use std::path::PathBuf;

use formwork_gguf::END_TOKEN_NAMES;

use crate::config::Architecture;

/// Model metadata for the engine and the server.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// A human-readable name (GGUF `general.name`, or the file or folder name).
    pub name: String,
    /// The model family.
    pub architecture: Architecture,
    /// Rows of the output projection: the length of every logits vector.
    pub vocab_size: usize,
    /// Longest sequence (prompt + completion) the model accepts.
    pub context_length: usize,
    /// Every token id that ends generation (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`...).
    pub eos_token_ids: Vec<u32>,
    /// The beginning-of-sequence token id, if the vocabulary has one.
    pub bos_token_id: Option<u32>,
    /// Whether raw prompts start with BOS.
    pub add_bos_token: bool,
    /// The BOS token's text, for chat templates.
    pub bos_token: Option<String>,
    /// The EOS token's text, for chat templates.
    pub eos_token: Option<String>,
    /// The chat template source (Jinja), if the model ships one.
    pub chat_template: Option<String>,
    /// The file or folder the model was loaded from.
    pub path: PathBuf,
}

/// The ids of the special tokens whose text is one of [`END_TOKEN_NAMES`].
pub(crate) fn eos_ids_by_name<'a>(specials: impl Iterator<Item = (u32, &'a str)>) -> Vec<u32> {
    specials
        .filter(|(_, t)| END_TOKEN_NAMES.contains(t))
        .map(|(i, _)| i)
        .collect()
}
