//! The one reader of GGUF model files in Formwork (versions 2 and 3, as llama.cpp writes
//! them): the header, the metadata key/values, the tensor infos and each tensor's bytes.
//!
//! Every crate that looks into a GGUF file goes through here: `formwork-index` for the
//! vocabulary, `formwork-template` for the chat template and special tokens,
//! `formwork-model` for the configuration, the tokenizer and the weights.
//!
//! - [`Metadata::read`] reads the header and the key/value pairs and stops: the metadata of
//!   a multi-gigabyte model costs what its vocabulary weighs.
//! - [`GgufFile::read`] also reads the tensor infos ([`TensorInfo`]: name, shape, GGML type,
//!   offset) and finds where the data starts (`general.alignment`), checking that every
//!   tensor of a known type lies within the file. [`GgufFile::tensor_data`] then reads one
//!   tensor's raw bytes.
//! - [`write()`] writes a GGUF v3 file, for tests and tools.
//!
//! Every length in a file is checked against the bytes that remain before anything is
//! allocated for it, so a corrupt or hostile file yields a [`GgufError`], never a panic or a
//! huge allocation.
//!
//! ```no_run
//! use formwork_gguf::GgufFile;
//!
//! let file = GgufFile::read("models/SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let arch = file.metadata.get("general.architecture").and_then(|v| v.as_str());
//! println!("{arch:?}, {} tensors", file.tensors().len());
//! let embedding = file.tensor("token_embd.weight").expect("an embedding");
//! println!("{:?} {:?}", embedding.shape, embedding.ggml_type);
//! let mut reader = std::fs::File::open("models/SmolLM2-135M-Instruct.Q4_1.gguf").unwrap();
//! let bytes = file.tensor_data(&mut reader, embedding)?;
//! # Ok::<(), formwork_gguf::GgufError>(())
//! ```

mod error;
mod read;
mod tensor;
mod value;
mod write;

pub use error::GgufError;
pub use read::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GgufFile, MAGIC, MAX_DIMS, Metadata};
pub use tensor::{GgmlType, TensorInfo};
pub use value::Value;
pub use write::{TensorData, write};

/// Token texts that end a turn or a document in the common model families: the
/// end-of-sequence and end-of-turn tokens a vocabulary may hold besides the one its
/// metadata names (`tokenizer.ggml.eos_token_id`).
pub const END_TOKEN_NAMES: &[&str] = &[
    "</s>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end_of_text|>",
    "<|return|>",
    "<eos>",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_token_names_hold_both_former_lists() {
        // `formwork_index::EOS_NAMES` and `formwork_model::END_TOKEN_NAMES` before they were
        // merged into this one list: the index's list, and the two names only the model's
        // had (the rest of the model's list is the index's, in another order).
        let index = [
            "</s>",
            "<|endoftext|>",
            "<|im_end|>",
            "<|eot_id|>",
            "<|end_of_text|>",
            "<|end|>",
            "<end_of_turn>",
            "<eos>",
        ];
        let model_only = ["<|eom_id|>", "<|return|>"];
        for name in index.iter().chain(&model_only) {
            assert!(END_TOKEN_NAMES.contains(name), "{name}");
        }
        let mut unique = END_TOKEN_NAMES.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), END_TOKEN_NAMES.len());
    }
}
