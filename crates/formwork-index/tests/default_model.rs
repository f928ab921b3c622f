//! The index over the default model's vocabulary (SmolLM2-135M-Instruct, 49,152 tokens,
//! GPT-2 byte-level BPE). These tests need `models/SmolLM2-135M-Instruct.Q4_1.gguf` and fail
//! (never skip) without it: run `cargo xtask fetch-model`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use formwork_index::{Guide, Index, IndexConfig, Vocabulary};
use proptest::prelude::*;

mod common;

fn default_model_vocab() -> &'static Vocabulary {
    static VOCAB: OnceLock<Vocabulary> = OnceLock::new();
    VOCAB.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            path.exists(),
            "the default model is missing at {}: run `cargo xtask fetch-model`",
            path.display()
        );
        Vocabulary::from_gguf(&path).expect("reading the default model's vocabulary")
    })
}

fn schema_index(lazy: bool) -> Arc<Index> {
    common::schema_index(default_model_vocab(), lazy)
}

fn eager_schema_index() -> Arc<Index> {
    static INDEX: OnceLock<Arc<Index>> = OnceLock::new();
    INDEX.get_or_init(|| schema_index(false)).clone()
}

#[test]
fn default_model_vocabulary() {
    let v = default_model_vocab();
    assert_eq!(v.len(), 49152);
    assert!(!v.eos().is_empty());
    for &e in v.eos() {
        assert!(v.is_special(e));
    }
    // `Ġthe` is " the"; `Ċ` is a newline.
    let find = |b: &[u8]| (0..v.len() as u32).find(|&t| v.token(t) == Some(b));
    assert!(find(b" the").is_some());
    assert!(find(b"\n").is_some());
    // Printable ASCII, newline, tab and UTF-8 continuation bytes are single-byte tokens.
    // (Not every byte is: SmolLM2 has no token holding 0x04 or 0xF1, for instance, so some
    // documents a regex matches cannot be spelled in tokens at all.)
    for b in (0x20..=0x7Eu8).chain([b'\n', b'\t']).chain(0x80..=0xBF) {
        assert!(find(&[b]).is_some(), "byte {b:#x}");
    }
    let toks = v.tokenize_greedy("Hello, 世界! 😀".as_bytes()).unwrap();
    let text: Vec<u8> = toks
        .iter()
        .flat_map(|&t| v.token(t).unwrap().to_vec())
        .collect();
    assert_eq!(text, "Hello, 世界! 😀".as_bytes());
    // Control tokens such as <|im_start|> are special.
    let im_start = (0..v.len() as u32).find(|&t| v.token(t) == Some(b"<|im_start|>"));
    assert!(im_start.is_some_and(|t| v.is_special(t)));
}

#[test]
fn default_model_schema_index_builds() {
    let t = Instant::now();
    let index = eager_schema_index();
    eprintln!(
        "schema index: {} states, {} DFA states, {:.1} ms, {} KiB",
        index.state_count(),
        index.dfa_state_count(),
        t.elapsed().as_secs_f64() * 1e3,
        index.memory_usage() / 1024
    );
    let start = index.allowed_tokens(index.start());
    assert!(!start.is_empty());
    // States inside strings allow nearly all 49,152 tokens; they keep a 6 KiB mask, not a
    // token list (the per-token lists of the first version took 42 MB here). A fresh index:
    // the shared one grows as other tests ask for token lists.
    let fresh = schema_index(false);
    assert!(
        fresh.memory_usage() < 8 << 20,
        "{} bytes",
        fresh.memory_usage()
    );
    common::assert_allowed_tokens_lead_to_live_states(&index, default_model_vocab());
}

#[test]
fn default_model_one_thread_or_many_same_index() {
    let eager = eager_schema_index();
    let regex = formwork_schema::Compiler::new()
        .compile_str(common::SCHEMA)
        .unwrap()
        .regex;
    let config = IndexConfig {
        threads: 1,
        ..Default::default()
    };
    let single = Index::with_config(&regex, default_model_vocab(), config).unwrap();
    assert_eq!(single.state_count(), eager.state_count());
    for s in 0..eager.dfa_state_count() as u32 {
        assert_eq!(single.allowed_tokens(s), eager.allowed_tokens(s));
        assert_eq!(single.next_states(s), eager.next_states(s));
    }
}

#[test]
fn default_model_lazy_matches_eager() {
    let eager = eager_schema_index();
    let lazy = schema_index(true);
    let mut walked = 0;
    for seed in 0..40 {
        let doc = eager.dfa().unwrap().sample(seed, 200);
        // Documents with bytes no token holds cannot be generated; skip them.
        let Some(toks) = default_model_vocab().tokenize_greedy(&doc) else {
            continue;
        };
        walked += 1;
        let mut a = Guide::new(eager.clone());
        let mut b = Guide::new(lazy.clone());
        for t in toks {
            assert_eq!(a.allowed_tokens(), b.allowed_tokens());
            assert_eq!(a.mask(), b.mask());
            a.advance(t).unwrap();
            b.advance(t).unwrap();
        }
        assert!(a.accepts_eos() && b.accepts_eos());
    }
    assert!(
        walked >= 10,
        "only {walked} of 40 samples could be tokenized"
    );
    assert!(lazy.state_count() <= eager.state_count());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn default_model_sampled_documents_are_accepted(seed in any::<u64>()) {
        let index = eager_schema_index();
        let v = default_model_vocab();
        let doc = index.dfa().unwrap().sample(seed, 300);
        // Documents with bytes no token holds cannot be generated.
        let toks = v.tokenize_greedy(&doc);
        prop_assume!(toks.is_some());
        let toks = toks.unwrap_or_default();
        let mut g = Guide::new(index.clone());
        for t in toks {
            prop_assert!(g.advance(t).is_ok());
        }
        prop_assert!(g.accepts_eos());
        prop_assert!(g.advance(v.eos()[0]).is_ok());
        prop_assert!(g.is_finished());
    }

    #[test]
    fn default_model_random_walks_match(seed in any::<u64>(), lazy in any::<bool>()) {
        // The lazy index (what the engine uses) determinizes as the walks go.
        static LAZY: OnceLock<Arc<Index>> = OnceLock::new();
        let index = if lazy {
            LAZY.get_or_init(|| schema_index(true)).clone()
        } else {
            eager_schema_index()
        };
        let full = eager_schema_index();
        let v = default_model_vocab();
        let mut g = Guide::new(index.clone());
        let mut text = Vec::new();
        let mut rng = seed;
        for _ in 0..400 {
            let allowed = g.allowed_tokens();
            prop_assert!(!allowed.is_empty());
            // Prefer EOS when it is allowed half of the time, to end some walks.
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let eos_ok = g.accepts_eos();
            let t = if eos_ok && (rng >> 60) < 8 {
                v.eos()[0]
            } else {
                allowed[((rng >> 33) % allowed.len() as u64) as usize]
            };
            g.advance(t).unwrap();
            if v.is_eos(t) {
                prop_assert!(full.dfa().unwrap().matches(&text), "{:?}", String::from_utf8_lossy(&text));
                break;
            }
            text.extend_from_slice(v.token(t).unwrap());
        }
    }
}

/// A JSON string counted to 40 characters and closed by its quote, built lazily with
/// accept points as formwork-grammar builds its lexemes: where the count leaves room for
/// the longest content token, the lazy walk takes the content tokens from the vocabulary's
/// mask and visits only the other tokens' paths. At every count it allows exactly the eager
/// index's tokens and finds exactly its accept points.
#[test]
fn default_model_counted_string_takes_content_tokens_at_once() {
    let regex = r#""(?:[^"\\\x00-\x1F]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4}){0,40}""#;
    let v = default_model_vocab();
    let config = |lazy| IndexConfig {
        lazy,
        accept_points: true,
        ..Default::default()
    };
    let lazy = Index::with_config(regex, v, config(true)).unwrap();
    let eager = Index::with_config(regex, v, config(false)).unwrap();
    let (mut l, mut e) = (lazy.start(), eager.start());
    // The quote and 40 characters.
    for (k, &b) in b"\"the quick brown fox jumps over the lazy "
        .iter()
        .enumerate()
    {
        l = lazy.next_byte(l, b);
        e = eager.next_byte(e, b);
        assert_eq!(
            lazy.allowed_tokens(l),
            eager.allowed_tokens(e),
            "after {k} bytes"
        );
        assert_eq!(
            lazy.accept_points(l),
            eager.accept_points(e),
            "after {k} bytes"
        );
    }
    // At the count only the quote is left.
    let quote = lazy.allowed_tokens(l);
    assert!(!quote.is_empty());
    assert!(
        quote
            .iter()
            .all(|&t| v.token(t).unwrap().starts_with(b"\""))
    );
}
