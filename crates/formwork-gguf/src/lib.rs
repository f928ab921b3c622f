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
/// metadata names (`tokenizer.ggml.eos_token_id`): llama.cpp's list of end-of-generation
/// texts (`src/llama-vocab.cpp`: Gemma's `<end_of_turn>`, ChatML's `<|im_end|>`...), then
/// [`PLAIN_EOS_NAMES`].
pub const END_TOKEN_NAMES: &[&str] = &[
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end_of_text|>",
    "<|return|>",
    "<|call|>",
    "<EOT>",
    "_<EOT>",
    "<end_of_utterance>",
    "</s>",
    "<eos>",
];

/// The plain end-of-sequence spellings at the end of [`END_TOKEN_NAMES`]. They name the EOS
/// of a tokenizer file that gives no EOS id; a GGUF file gives one, and there these texts
/// are not end tokens by name (Gemma's user-defined `</s>` is an HTML tag, not its EOS).
pub const PLAIN_EOS_NAMES: &[&str] = &["</s>", "<eos>"];

/// The metadata keys naming end-of-generation token ids.
const END_TOKEN_KEYS: [&str; 3] = [
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
];

/// The end-of-generation token ids of a GGUF vocabulary, sorted, by llama.cpp's rule: the
/// ids `tokenizer.ggml.eos_token_id`, `.eot_token_id` and `.eom_token_id` name, and every
/// token spelled as one of [`END_TOKEN_NAMES`] but not [`PLAIN_EOS_NAMES`]. Gemma's are
/// `<eos>` and `<end_of_turn>`; SmolLM2's `<|endoftext|>` and `<|im_end|>`. Ids that are not
/// unsigned integers, and ids past the end of `tokenizer.ggml.tokens`, are left out.
pub fn end_token_ids(meta: &Metadata) -> Vec<u32> {
    let tokens = meta.get("tokenizer.ggml.tokens").and_then(Value::as_array);
    let mut ids: Vec<u32> = END_TOKEN_KEYS
        .iter()
        .filter_map(|k| meta.get(k)?.as_u64())
        .filter_map(|id| u32::try_from(id).ok())
        .filter(|&id| tokens.is_none_or(|t| (id as usize) < t.len()))
        .collect();
    for (i, token) in tokens.unwrap_or_default().iter().enumerate() {
        let named = token.as_bytes().is_some_and(|t| {
            END_TOKEN_NAMES
                .iter()
                .filter(|n| !PLAIN_EOS_NAMES.contains(n))
                .any(|n| n.as_bytes() == t)
        });
        if named {
            ids.extend(u32::try_from(i).ok());
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

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
        for name in ["<|call|>", "<EOT>", "_<EOT>", "<end_of_utterance>"] {
            assert!(END_TOKEN_NAMES.contains(&name), "llama.cpp's {name}");
        }
        assert!(END_TOKEN_NAMES.ends_with(PLAIN_EOS_NAMES));
        let mut unique = END_TOKEN_NAMES.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), END_TOKEN_NAMES.len());
    }

    fn metadata(entries: Vec<(&str, Value)>) -> Metadata {
        let mut file = Vec::new();
        write(&mut file, &entries, &[]).unwrap();
        Metadata::from_reader(&file[..], file.len() as u64).unwrap()
    }

    fn strings(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
    }

    #[test]
    fn end_tokens_follow_llama_cpp_rule() {
        // Gemma: eos `<eos>` by id, `<end_of_turn>` by name; its `</s>` (an HTML tag) is no
        // end token, nor is `<eos>` by name alone.
        let meta = metadata(vec![
            (
                "tokenizer.ggml.tokens",
                strings(&["<pad>", "<eos>", "<bos>", "<end_of_turn>", "</s>", "<eos>"]),
            ),
            ("tokenizer.ggml.eos_token_id", Value::U32(1)),
        ]);
        assert_eq!(end_token_ids(&meta), vec![1, 3]);
        // Ids from the eot/eom keys count; an id past the vocabulary does not.
        let meta = metadata(vec![
            ("tokenizer.ggml.tokens", strings(&["a", "b", "c"])),
            ("tokenizer.ggml.eos_token_id", Value::U32(7)),
            ("tokenizer.ggml.eot_token_id", Value::U32(2)),
            ("tokenizer.ggml.eom_token_id", Value::U32(0)),
        ]);
        assert_eq!(end_token_ids(&meta), vec![0, 2]);
        // Any token spelled as an end token counts.
        let meta = metadata(vec![(
            "tokenizer.ggml.tokens",
            strings(&["a", "<|im_end|>"]),
        )]);
        assert_eq!(end_token_ids(&meta), vec![1]);
    }
}
