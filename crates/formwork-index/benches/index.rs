//! Index build times over the default model's vocabulary (SmolLM2-135M, 49,152 tokens):
//! eager builds, lazy builds up to the first mask, a first visit of a string state, and mask
//! lookup and advance in a visited state.
//! Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf` (`cargo xtask fetch-model`). Run with
//! `cargo bench -p formwork-index`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use formwork_index::{Guide, Index, Vocabulary};
use formwork_schema::Compiler;

const TWO_PROPERTIES: &str = r#"{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}"#;

const TEN_PROPERTIES: &str = r#"{
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 40},
    "status": {"enum": ["active", "inactive", "pending"]},
    "created": {"type": "string", "format": "date-time"},
    "email": {"type": "string", "format": "email"},
    "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "score": {"type": "number"},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    "active": {"type": "boolean"},
    "note": {"type": ["string", "null"]},
    "id": {"type": "string", "pattern": "^[a-f0-9]{8}$"}
  },
  "required": ["name", "status", "created", "email", "age", "tags", "active", "id"]
}"#;

fn bench(c: &mut Criterion) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "the default model is missing at {}: run `cargo xtask fetch-model`",
        path.display()
    );
    let vocab = Vocabulary::from_gguf(&path).expect("reading the vocabulary");
    vocab.trie();
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

    for (name, regex) in &cases {
        let index = Index::new(regex, &vocab).expect("index builds");
        eprintln!(
            "{name}: {} token states, eager memory {:.2} MB",
            index.state_count(),
            index.memory_usage() as f64 / 1e6
        );
    }

    let mut g = c.benchmark_group("index");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (name, regex) in &cases {
        g.bench_function(format!("eager/{name}"), |b| {
            b.iter(|| Index::new(black_box(regex), &vocab).expect("index builds"))
        });
        g.bench_function(format!("lazy_first_mask/{name}"), |b| {
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
    c.bench_function("guide/first_visit_string_state", |b| {
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
    });

    // Mask lookup in a visited state: inside the "name" string of the two-property schema.
    let index = Arc::new(Index::new(&cases[0].1, &vocab).expect("index builds"));
    let mut guide = Guide::new(index);
    for t in vocab.tokenize_greedy(br#"{"name":"ab"#).expect("tokenizes") {
        guide.advance(t).expect("allowed");
    }
    guide.mask();
    c.bench_function("guide/mask_visited_state", |b| {
        b.iter(|| black_box(guide.mask())[0])
    });
    c.bench_function("guide/advance_and_rollback", |b| {
        let t = guide.allowed_tokens()[guide.allowed_tokens().len() / 2];
        b.iter(|| {
            guide.advance(black_box(t)).expect("allowed");
            guide.rollback(1).expect("rolls back");
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
