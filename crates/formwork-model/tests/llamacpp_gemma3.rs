//! Gemma 3 270M (base, Q4_K_M) against llama.cpp: `tests/golden/llamacpp_gemma3.json` holds
//! llama.cpp's tokenization of the shared test strings plus Gemma's own (its control tokens,
//! runs of spaces, newlines and tabs, long numbers, CJK, emoji, byte-fallback characters),
//! its first 32 greedy tokens for 16 raw prompts and its top-10 log-probabilities after 3
//! prompts (made by `scripts/llamacpp_goldens.py --name gemma3`).
//!
//! These tests read only the tokenizer (the GGUF metadata), not the weights. They need
//! `models/gemma-3-270m-q4_k_m.gguf` and skip, saying so, without it: run
//! `cargo xtask fetch-model gemma3-270m`.

use std::path::PathBuf;
use std::sync::OnceLock;

use formwork_model::Tokenizer;
use serde_json::Value;

mod common;

use common::{ids, root};

fn model_path() -> Option<PathBuf> {
    let path = root().join("models/gemma-3-270m-q4_k_m.gguf");
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: the Gemma 3 model is missing at {}: run `cargo xtask fetch-model gemma3-270m`",
            path.display()
        );
        None
    }
}

fn tokenizer() -> Option<&'static Tokenizer> {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    let path = model_path()?;
    Some(TOKENIZER.get_or_init(|| Tokenizer::from_gguf(&path).expect("reading Gemma's tokenizer")))
}

fn golden() -> &'static Value {
    static GOLDEN: OnceLock<Value> = OnceLock::new();
    GOLDEN.get_or_init(|| common::read_golden("llamacpp_gemma3.json"))
}

#[test]
fn gemma3_tokenization_matches_llama_cpp() {
    let Some(tokenizer) = tokenizer() else { return };
    common::check_tokenization(tokenizer, golden());
}

#[test]
fn gemma3_prompts_tokenize_as_llama_cpp() {
    let Some(tokenizer) = tokenizer() else { return };
    for e in golden()["greedy"]["entries"].as_array().unwrap() {
        let text = e["prompt_text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, true).unwrap(),
            ids(&e["prompt_ids"]),
            "{}",
            e["name"]
        );
    }
}

/// Decoding the ids of a text gives the text back, wherever it does in llama.cpp (a literal
/// `▁` in the text is a space to SentencePiece, so it comes back as one).
#[test]
fn gemma3_decoding_round_trips() {
    let Some(tokenizer) = tokenizer() else { return };
    let mut checked = 0;
    for e in golden()["tokenization"]["entries"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        let theirs = e["detokenized"].as_str().unwrap();
        if theirs.strip_prefix("<bos>") != Some(text) {
            continue;
        }
        checked += 1;
        let ids = tokenizer.encode(text, false).unwrap();
        assert_eq!(
            tokenizer.decode(&ids, false).unwrap(),
            text,
            "{}",
            e["name"]
        );
    }
    assert!(
        checked >= 50,
        "only {checked} strings round-trip in llama.cpp"
    );
}

#[test]
fn gemma3_vocabulary_metadata() {
    let Some(tokenizer) = tokenizer() else { return };
    let model = &golden()["model"];
    assert_eq!(tokenizer.vocab_size(), 262_144);
    assert!(tokenizer.adds_bos(), "add_bos_token is true");
    assert_eq!(tokenizer.token_to_id("<bos>"), Some(2));
    assert_eq!(tokenizer.token_to_id("<end_of_turn>"), Some(106));
    assert!(
        model["chat_template"].is_null(),
        "the base model has no template"
    );
    // End of generation: llama.cpp's rule, in formwork-gguf, as the model loader applies it.
    let meta = formwork_gguf::Metadata::read(model_path().unwrap()).unwrap();
    let eog: Vec<u32> = ids(&model["eog_token_ids"]);
    assert_eq!(formwork_gguf::end_token_ids(&meta), eog);
    assert_eq!(eog, vec![1, 106], "<eos> and <end_of_turn>");
}
