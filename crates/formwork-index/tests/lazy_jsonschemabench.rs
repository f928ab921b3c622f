//! The on-demand DFA of a lazy index against the full DFA, over real schemas: a sample of
//! JSONSchemaBench (`../shared/data/jsonschemabench`) compiled by `formwork-schema`. Over a
//! byte vocabulary (one token per byte) a guide's answers are the automaton's, so every
//! labelled instance must be accepted by the lazy index exactly when the full DFA matches it,
//! documents sampled from the full DFA must be accepted, and random walks of the lazy index
//! that end on EOS must be matches.

use std::path::PathBuf;
use std::sync::Arc;

use formwork_index::{ByteDfa, DfaConfig, Guide, Index, Vocabulary};
use formwork_schema::Compiler;
use serde_json::Value;

/// Every how many schemas one is checked.
const STRIDE: usize = 40;

fn data_dir() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/jsonschemabench");
    assert!(
        dir.is_dir(),
        "test data missing: {} (the shared/ folder beside the checkout)",
        dir.display()
    );
    dir
}

/// Each schema with the instances its tests list.
fn schemas() -> Vec<(String, Value, Vec<Value>)> {
    let mut files: Vec<_> = std::fs::read_dir(data_dir())
        .expect("read data dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read jsonl");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("jsonl line");
            let instances = v["tests"]
                .as_array()
                .map(|ts| ts.iter().filter_map(|t| t.get("data").cloned()).collect())
                .unwrap_or_default();
            out.push((
                v["id"].as_str().unwrap_or("?").to_string(),
                v["schema"].clone(),
                instances,
            ));
        }
    }
    out
}

/// Token `b` is byte `b`; 256 is EOS.
fn byte_vocab() -> Vocabulary {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    tokens.push(b"</s>".to_vec());
    Vocabulary::new(tokens, vec![256], []).unwrap()
}

/// Whether the lazy index accepts `text` in full, one byte token at a time.
fn accepts(index: &Arc<Index>, text: &[u8]) -> bool {
    let mut g = Guide::new(index.clone());
    text.iter().all(|&b| g.advance(u32::from(b)).is_ok()) && g.accepts_eos()
}

#[test]
fn lazy_dfa_agrees_with_the_full_dfa_on_jsonschemabench() {
    let vocab = byte_vocab();
    let limits = DfaConfig {
        max_states: 5_000,
        ..DfaConfig::default()
    };
    let (mut checked, mut instances, mut walks) = (0, 0, 0);
    for (i, (id, schema, tests)) in schemas().into_iter().enumerate() {
        if i % STRIDE != 0 {
            continue;
        }
        let Ok(compiled) = Compiler::new().compile(&schema) else {
            continue;
        };
        let Ok(full) = ByteDfa::with_config(&compiled, limits) else {
            continue;
        };
        let lazy = Arc::new(Index::lazy(&compiled, &vocab).unwrap());
        assert!(lazy.dfa().is_none(), "{id}: determinized on demand");
        for instance in &tests {
            let text = serde_json::to_string(instance).unwrap();
            assert_eq!(
                accepts(&lazy, text.as_bytes()),
                full.matches(text.as_bytes()),
                "{id}: {text}"
            );
            instances += 1;
        }
        for seed in 0..4 {
            let doc = full.sample(seed, 200);
            assert!(
                accepts(&lazy, &doc),
                "{id}: {}",
                String::from_utf8_lossy(&doc)
            );
        }
        // Random walks of the lazy index: what ends on EOS matches.
        let mut rng = i as u64 ^ 0x5DEE_CE66;
        for _ in 0..4 {
            let mut g = Guide::new(lazy.clone());
            let mut text = Vec::new();
            for _ in 0..300 {
                let allowed = g.allowed_tokens();
                assert!(!allowed.is_empty(), "{id}: a state allows no token");
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let t = if g.accepts_eos() && (rng >> 61) == 0 {
                    256
                } else {
                    allowed[((rng >> 33) % allowed.len() as u64) as usize]
                };
                g.advance(t).unwrap();
                if t == 256 {
                    assert!(
                        full.matches(&text),
                        "{id}: {}",
                        String::from_utf8_lossy(&text)
                    );
                    walks += 1;
                    break;
                }
                text.push(t as u8);
            }
        }
        checked += 1;
    }
    eprintln!("{checked} schemas, {instances} instances, {walks} finished walks");
    assert!(checked >= 150, "only {checked} schemas checked");
}
