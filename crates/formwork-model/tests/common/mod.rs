//! Helpers shared by the llama.cpp golden tests (`llamacpp.rs` for SmolLM2,
//! `llamacpp_gemma3.rs` for Gemma 3): reading a golden file of `tests/golden/` and checking a
//! tokenizer against its tokenization entries.

#![allow(dead_code)]

use std::path::PathBuf;

use formwork_model::Tokenizer;
use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The golden file `tests/golden/<name>` (written by `scripts/llamacpp_goldens.py`).
pub fn read_golden(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Encodes every tokenization entry of `golden` (BOS added as the model asks, special
/// tokens parsed) and decodes llama.cpp's ids; panics listing every string where `tokenizer`
/// and llama.cpp differ.
pub fn check_tokenization(tokenizer: &Tokenizer, golden: &Value) {
    let mut failures = Vec::new();
    let entries = golden["tokenization"]["entries"].as_array().unwrap();
    for e in entries {
        let text = e["text"].as_str().unwrap();
        let expected = ids(&e["ids"]);
        let ours = tokenizer.encode(text, true).unwrap();
        if ours != expected {
            failures.push(format!(
                "{}: {text:?}\n  llama.cpp {expected:?}\n  ours      {ours:?}",
                e["name"]
            ));
        }
        let decoded = tokenizer.decode(&expected, false).unwrap();
        if decoded != e["detokenized"].as_str().unwrap() {
            failures.push(format!(
                "decoding {}: llama.cpp {:?}, ours {decoded:?}",
                e["name"], e["detokenized"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        entries.len(),
        failures.join("\n")
    );
}
