//! The index over Gemma 3's vocabulary (262,144 SentencePiece tokens: `▁` for a space,
//! `<0xNN>` byte-fallback tokens, user-defined runs of spaces, newlines and tabs, thousands of
//! control tokens). These tests read only the metadata of `models/gemma-3-270m-q4_k_m.gguf`
//! and skip, saying so, without it: run `cargo xtask fetch-model gemma3-270m`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use formwork_index::{Guide, Index, Vocabulary};

mod common;

fn gemma_vocab() -> Option<&'static Vocabulary> {
    static VOCAB: OnceLock<Vocabulary> = OnceLock::new();
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/gemma-3-270m-q4_k_m.gguf");
    if !path.exists() {
        eprintln!(
            "SKIPPED: the Gemma 3 model is missing at {}: run `cargo xtask fetch-model gemma3-270m`",
            path.display()
        );
        return None;
    }
    Some(VOCAB.get_or_init(|| Vocabulary::from_gguf(&path).expect("reading Gemma's vocabulary")))
}

fn eager_index() -> Option<Arc<Index>> {
    static INDEX: OnceLock<Arc<Index>> = OnceLock::new();
    let v = gemma_vocab()?;
    Some(INDEX.get_or_init(|| common::schema_index(v, false)).clone())
}

#[test]
fn gemma3_token_bytes() {
    let Some(v) = gemma_vocab() else { return };
    assert_eq!(v.len(), 262_144);
    // `<eos>` and `<end_of_turn>` end generation (llama.cpp's rule); both are special.
    assert_eq!(v.eos(), &[1, 106]);
    // `▁` is a space, `▁the` " the"; `<0x0A>` (id 248) is the byte 0x0A, `<0x00>` (238) 0x00.
    assert_eq!(v.token(236743), Some(&b" "[..]));
    assert_eq!(v.token(506), Some(&b" the"[..]));
    assert_eq!(v.token(248), Some(&b"\n"[..]));
    assert_eq!(v.token(238), Some(&b"\0"[..]));
    // User-defined runs of newlines, spaces and tabs are their text, and usable in text.
    assert_eq!(v.token(107), Some(&b"\n"[..]));
    assert_eq!(v.token(109), Some(&b"\n\n\n"[..]));
    assert_eq!(v.token(138), Some(&b"  "[..]));
    assert_eq!(v.token(255968), Some(&b"\t"[..]));
    for id in [107, 109, 138, 255968, 236743, 248] {
        assert!(!v.is_special(id), "{id}");
    }
    // Control tokens never appear in constrained text: <pad> <eos> <bos> <unk> <mask>,
    // <unused0>, <start_of_turn>, <end_of_turn>, <unused6241>.
    for id in [0, 1, 2, 3, 4, 6, 105, 106, 262_143] {
        assert!(v.is_special(id), "{id}");
    }
    // Every byte is some token (byte fallback), so any document can be spelled.
    for b in 0..=255u8 {
        assert!(v.tokenize_greedy(&[b]).is_some(), "byte {b:#x}");
    }
    let text = "Hello, 世界! 😀\n\n  x";
    let toks = v.tokenize_greedy(text.as_bytes()).unwrap();
    let back: Vec<u8> = toks
        .iter()
        .flat_map(|&t| v.token(t).unwrap().to_vec())
        .collect();
    assert_eq!(back, text.as_bytes());
}

#[test]
fn gemma3_schema_index_allows_only_valid_tokens() {
    let (Some(v), Some(index)) = (gemma_vocab(), eager_index()) else {
        return;
    };
    assert!(!index.allowed_tokens(index.start()).is_empty());
    common::assert_allowed_tokens_lead_to_live_states(&index, v);
    // A valid document, spelled in Gemma tokens, is accepted to the end.
    let doc = br#"{"name":"Ada","status":"active","created":"2024-01-02T03:04:05Z","email":"ada@example.com","age":36,"tags":["x"],"active":true,"id":"0123abcd"}"#;
    assert!(index.dfa().unwrap().matches(doc));
    let mut g = Guide::new(index.clone());
    for t in v.tokenize_greedy(doc).unwrap() {
        g.advance(t).unwrap();
    }
    assert!(g.accepts_eos());
    g.advance(106).unwrap();
    assert!(g.is_finished());
    // An invalid one is refused where it goes wrong.
    let mut g = Guide::new(index.clone());
    let bad = v.tokenize_greedy(br#"{"name":5"#).unwrap();
    let refused = bad.iter().any(|&t| g.advance(t).is_err());
    assert!(refused);
}

#[test]
fn gemma3_lazy_index_matches_eager() {
    let (Some(v), Some(eager)) = (gemma_vocab(), eager_index()) else {
        return;
    };
    let lazy = common::schema_index(v, true);
    let mut walked = 0;
    for seed in 0..12 {
        let doc = eager.dfa().unwrap().sample(seed, 200);
        let toks = v.tokenize_greedy(&doc).unwrap();
        walked += 1;
        let mut a = Guide::new(eager.clone());
        let mut b = Guide::new(lazy.clone());
        for t in toks {
            assert_eq!(a.allowed_tokens(), b.allowed_tokens());
            a.advance(t).unwrap();
            b.advance(t).unwrap();
        }
        assert!(a.accepts_eos() && b.accepts_eos());
    }
    assert_eq!(walked, 12);
}
