//! The compiler over JSONSchemaBench (`../shared/data/jsonschemabench`, about 10,800 real
//! schemas with instances labelled valid or invalid): no panic or hang on any schema, no
//! invalid instance matched where every keyword is enforced, and samples drawn from the
//! compiled automaton validate under the `jsonschema` crate.
//!
//! `cargo xtask schema-report` prints the full figures; these tests pin the guarantees.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use formwork_index::{ByteDfa, DfaConfig};
use formwork_schema::Compiler;
use regex_automata::meta::Regex;
use serde_json::Value;

fn data_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/jsonschemabench");
    assert!(
        dir.is_dir(),
        "test data missing: {} (the shared/ folder beside the checkout)",
        dir.display()
    );
    dir
}

struct Case {
    id: String,
    schema: Value,
    tests: Vec<(bool, Value)>,
}

fn cases() -> Vec<Case> {
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
            let tests = v["tests"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .filter_map(|t| Some((t["valid"].as_bool()?, t.get("data")?.clone())))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Case {
                id: v["id"].as_str().unwrap_or("?").to_string(),
                schema: v["schema"].clone(),
                tests,
            });
        }
    }
    assert!(out.len() > 10_000, "expected the whole benchmark, found {} schemas", out.len());
    out
}

fn matcher(regex: &str) -> Option<Regex> {
    regex_automata::meta::Builder::new()
        .configure(regex_automata::meta::Config::new().nfa_size_limit(Some(256 << 20)))
        .build(&format!("^(?:{regex})$"))
        .ok()
}

/// Compiles every schema on worker threads, each watched for a hang: a schema that takes
/// longer than the bound fails the test by name.
#[test]
fn every_schema_compiles_or_errors_never_panics_or_hangs() {
    let cases = cases();
    let bound = Duration::from_secs(60);
    let chunks: Vec<Vec<Case>> = {
        let mut v: Vec<Vec<Case>> = (0..2).map(|_| Vec::new()).collect();
        for (i, c) in cases.into_iter().enumerate() {
            v[i % 2].push(c);
        }
        v
    };
    let (tx, rx) = mpsc::channel::<(String, bool)>();
    let mut handles = Vec::new();
    for chunk in chunks {
        let tx = tx.clone();
        handles.push(std::thread::spawn(move || {
            for c in chunk {
                tx.send((c.id.clone(), false)).ok();
                let r = std::panic::catch_unwind(|| Compiler::new().compile_detailed(&c.schema));
                tx.send((c.id, r.is_ok())).ok();
            }
        }));
    }
    drop(tx);
    let mut panics = Vec::new();
    let mut compiled = 0;
    loop {
        match rx.recv_timeout(bound) {
            Ok((_, false)) => {}
            Ok((id, true)) => {
                compiled += 1;
                let _ = id;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("a schema took longer than {bound:?}"),
        }
    }
    for h in handles {
        if h.join().is_err() {
            panics.push("worker");
        }
    }
    assert!(compiled > 10_000);
    assert!(panics.is_empty());
}

/// Soundness: where the compiler reports every keyword as enforced, no instance labelled
/// invalid may match. Also pins completeness on the valid instances.
#[test]
fn no_invalid_instance_matches_and_valid_ones_mostly_do() {
    let mut unsound = Vec::new();
    let (mut valid, mut valid_matched) = (0usize, 0usize);
    for c in cases() {
        let Ok(compiled) = Compiler::new().compile_detailed(&c.schema) else { continue };
        let Some(re) = matcher(&compiled.regex) else { continue };
        for (is_valid, data) in &c.tests {
            let text = serde_json::to_string(data).expect("serialize");
            let m = re.is_match(&text);
            if *is_valid {
                valid += 1;
                valid_matched += m as usize;
            } else if m && compiled.unenforced.is_empty() {
                unsound.push(format!("{}: {text}", c.id));
            }
        }
    }
    assert!(unsound.is_empty(), "{} invalid instances matched:\n{}", unsound.len(), unsound.join("\n"));
    let share = valid_matched as f64 / valid as f64;
    assert!(share >= 0.85, "completeness fell to {:.1}% ({valid_matched}/{valid})", share * 100.0);
}

/// Sampling: documents drawn from the automaton validate. Every 16th schema, to keep the test
/// fast; `cargo xtask schema-report` samples all of them.
#[test]
fn samples_from_the_automaton_validate() {
    let mut failures = Vec::new();
    let mut checked = 0;
    let limits = DfaConfig { max_states: 50_000, max_memory: 128 << 20 };
    for c in cases().into_iter().step_by(16) {
        let Ok(compiled) = Compiler::new().compile_detailed(&c.schema) else { continue };
        if !compiled.unenforced.is_empty() {
            continue;
        }
        let Ok(dfa) = ByteDfa::with_config(&compiled.regex, limits) else { continue };
        let Ok(oracle) = jsonschema::options().should_validate_formats(true).build(&c.schema) else { continue };
        for seed in 0..3 {
            let doc = dfa.sample(seed, 128);
            checked += 1;
            let ok = std::str::from_utf8(&doc)
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .is_some_and(|v| oracle.is_valid(&v));
            if !ok {
                failures.push(format!("{}: {}", c.id, String::from_utf8_lossy(&doc)));
            }
        }
    }
    assert!(checked > 500, "only {checked} samples checked");
    assert!(failures.is_empty(), "{} samples invalid:\n{}", failures.len(), failures.join("\n"));
}
