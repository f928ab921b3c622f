//! Index build times over two real vocabularies side by side: SmolLM2-135M's (49,152
//! byte-level BPE tokens) and Gemma 3's (262,144 SentencePiece tokens): reading the
//! vocabulary, building its trie, eager builds, lazy builds up to the first mask, a first
//! visit of a string state, and mask lookup and advance in a visited state. Benchmarks are
//! named `<case>/<vocabulary>`.
//! Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf` (`cargo xtask fetch-model`); the Gemma
//! cases run when `models/gemma-3-270m-q4_k_m.gguf` is there (`cargo xtask fetch-model
//! gemma3-270m`) and are skipped, saying so, otherwise. Run with
//! `cargo bench -p formwork-index`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use formwork_index::{Guide, Index, Vocabulary};
use formwork_schema::Compiler;

const TWO_PROPERTIES: &str = r#"{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}"#;

/// The schema the tests over real vocabularies index too (`tests/common`).
const TEN_PROPERTIES: &str = include_str!("ten_properties.json");

/// The vocabularies benched: (name, model file), the default model's first.
const VOCABULARIES: [(&str, &str); 2] = [
    ("smollm2_49k", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3_262k", "gemma-3-270m-q4_k_m.gguf"),
];

fn bench(c: &mut Criterion) {
    let schema = |s: &str| {
        Compiler::new()
            .compile_str(s)
            .expect("schema compiles")
            .regex
    };
    let cases = [
        ("two_properties", schema(TWO_PROPERTIES)),
        ("ten_properties", schema(TEN_PROPERTIES)),
        (
            "date",
            r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])".to_string(),
        ),
        (
            "email",
            r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}".to_string(),
        ),
    ];
    for (i, (vocab_name, file)) in VOCABULARIES.iter().enumerate() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models")
            .join(file);
        if !path.exists() {
            assert!(
                i > 0,
                "the default model is missing at {}: run `cargo xtask fetch-model`",
                path.display()
            );
            eprintln!(
                "skipping the {vocab_name} cases: {} is missing (cargo xtask fetch-model \
                 gemma3-270m)",
                path.display()
            );
            continue;
        }
        bench_vocabulary(c, vocab_name, &path, &cases);
    }
}

fn bench_vocabulary(c: &mut Criterion, vocab_name: &str, path: &Path, cases: &[(&str, String)]) {
    let mut g = c.benchmark_group("vocabulary");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function(format!("load/{vocab_name}"), |b| {
        b.iter(|| Vocabulary::from_gguf(black_box(path)).expect("reading the vocabulary"))
    });
    // A fresh vocabulary per iteration (its trie is built once and shared by its clones).
    let tokens = Vocabulary::from_gguf(path).expect("reading the vocabulary");
    let parts = || {
        let table = (0..tokens.len() as u32)
            .map(|t| tokens.token(t).unwrap_or_default().to_vec())
            .collect();
        let special = (0..tokens.len() as u32).filter(|&t| tokens.is_special(t));
        Vocabulary::new(table, tokens.eos().to_vec(), special).expect("the same vocabulary")
    };
    g.bench_function(format!("trie_build/{vocab_name}"), |b| {
        b.iter_batched(
            parts,
            |v| {
                black_box(v.trie().node_count());
                v
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let vocab = tokens;
    vocab.trie();
    for (name, regex) in cases {
        let index = Index::new(regex, &vocab).expect("index builds");
        eprintln!(
            "{name}/{vocab_name}: {} token states, eager memory {:.2} MB",
            index.state_count(),
            index.memory_usage() as f64 / 1e6
        );
    }

    let mut g = c.benchmark_group("index");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (name, regex) in cases {
        g.bench_function(format!("eager/{name}/{vocab_name}"), |b| {
            b.iter(|| Index::new(black_box(regex), &vocab).expect("index builds"))
        });
        g.bench_function(format!("lazy_first_mask/{name}/{vocab_name}"), |b| {
            b.iter(|| {
                let index = Arc::new(Index::lazy(black_box(regex), &vocab).expect("index builds"));
                let guide = Guide::new(index);
                black_box(guide.mask()[0])
            })
        });
    }
    g.finish();

    // A first visit: a fresh lazy index, stepping into a string's contents (a state that
    // allows nearly the whole vocabulary) and asking for its mask.
    let prefix = vocab.tokenize_greedy(br#"{"name":""#).expect("tokenizes");
    let (last, before) = prefix.split_last().expect("tokens");
    c.bench_function(
        &format!("guide/first_visit_string_state/{vocab_name}"),
        |b| {
            b.iter_batched(
                || {
                    let index = Arc::new(Index::lazy(&cases[1].1, &vocab).expect("index builds"));
                    let mut guide = Guide::new(index);
                    for &t in before {
                        guide.advance(t).expect("allowed");
                    }
                    guide.mask();
                    guide
                },
                |mut guide| {
                    guide.advance(*last).expect("allowed");
                    black_box(guide.mask()[0]);
                    guide
                },
                BatchSize::LargeInput,
            )
        },
    );

    // Mask lookup in a visited state: inside the "name" string of the two-property schema.
    let index = Arc::new(Index::new(&cases[0].1, &vocab).expect("index builds"));
    let mut guide = Guide::new(index);
    for t in vocab.tokenize_greedy(br#"{"name":"ab"#).expect("tokenizes") {
        guide.advance(t).expect("allowed");
    }
    guide.mask();
    c.bench_function(&format!("guide/mask_visited_state/{vocab_name}"), |b| {
        b.iter(|| black_box(guide.mask())[0])
    });
    c.bench_function(&format!("guide/advance_and_rollback/{vocab_name}"), |b| {
        let t = guide.allowed_tokens()[guide.allowed_tokens().len() / 2];
        b.iter(|| {
            guide.advance(black_box(t)).expect("allowed");
            guide.rollback(1).expect("rolls back");
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
