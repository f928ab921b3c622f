//! Vocabularies from Hugging Face `tokenizer.json` files: small tokenizers written here, and
//! one built from the default model's GGUF tokens and merges, which must give the same
//! vocabulary as the GGUF itself. The latter needs `models/SmolLM2-135M-Instruct.Q4_1.gguf`
//! and fails (never skips) without it: run `cargo xtask fetch-model`.
#![cfg(feature = "tokenizers")]

use std::path::PathBuf;

use formwork_index::{IndexError, Vocabulary, gguf};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

fn added(id: u32, content: &str, special: bool) -> Value {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": !special, "special": special
    })
}

fn bpe(vocab: Value, merges: &[&str], unk: Option<&str>, byte_fallback: bool) -> Value {
    json!({
        "type": "BPE", "dropout": null, "unk_token": unk,
        "continuing_subword_prefix": null, "end_of_word_suffix": null,
        "fuse_unk": byte_fallback, "byte_fallback": byte_fallback, "ignore_merges": false,
        "vocab": vocab, "merges": merges
    })
}

fn tokenizer(
    added_tokens: Vec<Value>,
    normalizer: Value,
    pre: Value,
    decoder: Value,
    model: Value,
) -> Tokenizer {
    let json = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added_tokens, "normalizer": normalizer, "pre_tokenizer": pre,
        "post_processor": null, "decoder": decoder, "model": model
    });
    Tokenizer::from_bytes(json.to_string().as_bytes()).expect("the test tokenizer parses")
}

fn byte_level() -> Tokenizer {
    let level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    tokenizer(
        vec![added(0, "<|endoftext|>", true), added(8, "<tool>", false)],
        Value::Null,
        level.clone(),
        level,
        bpe(
            json!({"<|endoftext|>": 0, "Ġ": 1, "h": 2, "i": 3, "Ġh": 4, "Ċ": 5, "æĹ": 6, "hi": 7}),
            &["Ġ h", "h i"],
            None,
            false,
        ),
    )
}

/// What every id of `vocab` adds to the text.
fn bytes(vocab: &Vocabulary) -> Vec<Vec<u8>> {
    (0..vocab.len() as u32)
        .map(|id| vocab.token(id).unwrap().to_vec())
        .collect()
}

#[test]
fn byte_level_bpe_tokens_decode_to_bytes() {
    let tok = byte_level();
    let v = Vocabulary::from_tokenizer(&tok).unwrap();
    let expected: Vec<&[u8]> = vec![
        b"<|endoftext|>",
        b" ",
        b"h",
        b"i",
        b" h",
        b"\n",
        &[0xE6, 0x97],
        b"hi",
        b"<tool>",
    ];
    assert_eq!(bytes(&v), expected);
    assert_eq!(v.eos(), &[0]);
    assert!(v.is_special(0));
    // A non-special added token is text.
    assert!((1..=8).all(|id| !v.is_special(id)));
    // The tokenizer's own encoding spells the text with these bytes.
    let enc = tok.encode(" hi\n", false).unwrap();
    let spelled: Vec<u8> = enc
        .get_ids()
        .iter()
        .flat_map(|&id| v.token(id).unwrap().to_vec())
        .collect();
    assert_eq!(spelled, b" hi\n");
}

fn sentencepiece(metaspace: bool) -> Tokenizer {
    let specials = vec![
        added(0, "<unk>", true),
        added(1, "<s>", true),
        added(2, "</s>", true),
    ];
    let model = bpe(
        json!({"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "<0xE6>": 4, "▁": 5, "a": 6, "▁a": 7, "▁▁": 8, "<0xZZ>": 9}),
        &["▁ a", "▁ ▁"],
        Some("<unk>"),
        true,
    );
    if metaspace {
        // The newer layout: Metaspace pre-tokenizer and decoder.
        let meta = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false});
        tokenizer(specials, Value::Null, meta.clone(), meta, model)
    } else {
        // Llama 2 / Mistral: the normalizer writes `▁`, the decoder undoes it.
        tokenizer(
            specials,
            json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
            ]}),
            Value::Null,
            json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}
            ]}),
            model,
        )
    }
}

#[test]
fn sentencepiece_tokens_decode_to_bytes() {
    for metaspace in [false, true] {
        let tok = sentencepiece(metaspace);
        let v = Vocabulary::from_tokenizer(&tok).unwrap();
        let expected: Vec<&[u8]> = vec![
            b"<unk>",
            b"<s>",
            b"</s>",
            b"\n",
            &[0xE6],
            b" ",
            b"a",
            b" a",
            b"  ",
            // Not a byte: two hex digits are needed.
            b"<0xZZ>",
        ];
        assert_eq!(bytes(&v), expected, "metaspace: {metaspace}");
        assert_eq!(v.eos(), &[2]);
        assert!((0..=2).all(|id| v.is_special(id)));
        assert!((3..=9).all(|id| !v.is_special(id)));
    }
}

#[test]
fn explicit_eos_and_missing_eos() {
    // No token named like an EOS: an error that says how to give one.
    let tok = tokenizer(
        vec![added(0, "<stop>", true)],
        Value::Null,
        Value::Null,
        Value::Null,
        bpe(json!({"<stop>": 0, "a": 1, "b": 2}), &[], None, false),
    );
    let err = Vocabulary::from_tokenizer(&tok).unwrap_err();
    assert!(err.to_string().contains("from_tokenizer_with_eos"), "{err}");
    let v = Vocabulary::from_tokenizer_with_eos(&tok, vec![0]).unwrap();
    assert_eq!(v.eos(), &[0]);
    assert_eq!(
        bytes(&v),
        vec![b"<stop>".to_vec(), b"a".to_vec(), b"b".to_vec()]
    );
    assert!(matches!(
        Vocabulary::from_tokenizer_with_eos(&tok, vec![3]),
        Err(IndexError::Vocabulary(_))
    ));
    // The explicit ids replace the names found.
    let v = Vocabulary::from_tokenizer_with_eos(&byte_level(), vec![8]).unwrap();
    assert_eq!(v.eos(), &[8]);
    assert!(v.is_special(8) && v.is_special(0));
}

#[test]
fn position_dependent_tokenizers_are_refused() {
    let wordpiece = json!({
        "type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
        "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "[SEP]": 1, "a": 2, "##b": 3}
    });
    let tok = tokenizer(
        vec![added(0, "[UNK]", true), added(1, "[SEP]", true)],
        Value::Null,
        json!({"type": "BertPreTokenizer"}),
        json!({"type": "WordPiece", "prefix": "##", "cleanup": true}),
        wordpiece,
    );
    let err = Vocabulary::from_tokenizer_with_eos(&tok, vec![1]).unwrap_err();
    assert!(err.to_string().contains("WordPiece"), "{err}");
}

#[test]
fn tokenizer_file_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("formwork-index-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.json");
    let err = Vocabulary::from_tokenizer_file(&missing).unwrap_err();
    assert!(
        matches!(&err, IndexError::Tokenizer { path, .. } if *path == missing),
        "{err}"
    );
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    assert!(matches!(
        Vocabulary::from_tokenizer_file(&bad),
        Err(IndexError::Tokenizer { .. })
    ));
    let good = dir.join("tokenizer.json");
    std::fs::write(&good, byte_level().to_string(false).unwrap()).unwrap();
    let v = Vocabulary::from_tokenizer_file(&good).unwrap();
    assert_eq!(v.len(), 9);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A byte-level `tokenizer.json` written from the GGUF's tokens, types and merges gives the
/// same bytes and special tokens as the GGUF vocabulary itself.
#[test]
fn default_model_tokenizer_json_matches_gguf() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "the default model is missing at {}: run `cargo xtask fetch-model`",
        path.display()
    );
    let meta = gguf::Metadata::read(&path).unwrap();
    let gguf = Vocabulary::from_gguf_metadata(&meta).unwrap();
    let array = |key: &str| {
        meta.get(key)
            .and_then(gguf::Value::as_array)
            .unwrap_or_else(|| panic!("{key}"))
    };
    let tokens: Vec<&str> = array("tokenizer.ggml.tokens")
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let types: Vec<i64> = array("tokenizer.ggml.token_type")
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    let merges: Vec<&str> = array("tokenizer.ggml.merges")
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let mut vocab = serde_json::Map::new();
    let mut added_tokens = Vec::new();
    for (id, (t, ty)) in tokens.iter().zip(&types).enumerate() {
        vocab.insert(t.to_string(), json!(id));
        match ty {
            3 => added_tokens.push(added(id as u32, t, true)),
            4 => added_tokens.push(added(id as u32, t, false)),
            _ => {}
        }
    }
    let level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let tok = tokenizer(
        added_tokens,
        Value::Null,
        level.clone(),
        level,
        bpe(Value::Object(vocab), &merges, None, false),
    );
    let from_json = Vocabulary::from_tokenizer(&tok).unwrap();
    assert_eq!(from_json.len(), gguf.len());
    for id in 0..gguf.len() as u32 {
        assert_eq!(from_json.token(id), gguf.token(id), "token {id}");
        assert_eq!(from_json.is_special(id), gguf.is_special(id), "token {id}");
    }
    // SmolLM2's 17 control tokens (`<|endoftext|>` .. `<empty_output>`) are ids 0..=16.
    assert!((0..=16).all(|id| from_json.is_special(id)) && !from_json.is_special(17));
    // The GGUF names `<|im_end|>` (2) as EOS; by name, `<|endoftext|>` (0) is one too, in the
    // tokenizer file as in the GGUF (llama.cpp's end-of-generation rule: its EOG ids are
    // [0, 2] in tests/golden/llamacpp_smollm2.json of formwork-model).
    assert_eq!(gguf.eos(), &[0, 2]);
    assert_eq!(from_json.eos(), &[0, 2]);
    let explicit = Vocabulary::from_tokenizer_with_eos(&tok, gguf.eos().to_vec()).unwrap();
    assert_eq!(explicit.eos(), gguf.eos());
    assert_eq!(bytes(&explicit), bytes(&gguf));
    // The tokenizer's own BPE spells text with the same bytes.
    let text = "{\"name\": \"Zoë\", \"note\": \"日本語 😀\"}\n\tend";
    let enc = tok.encode(text, false).unwrap();
    let spelled: Vec<u8> = enc
        .get_ids()
        .iter()
        .flat_map(|&id| gguf.token(id).unwrap().to_vec())
        .collect();
    assert_eq!(spelled, text.as_bytes());
}
