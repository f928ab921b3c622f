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
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/jsonschemabench");
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
    assert!(
        out.len() > 10_000,
        "expected the whole benchmark, found {} schemas",
        out.len()
    );
    out
}

fn matcher(regex: &str) -> Option<Regex> {
    regex_automata::meta::Builder::new()
        .configure(regex_automata::meta::Config::new().nfa_size_limit(Some(256 << 20)))
        .build(&format!("^(?:{regex})$"))
        .ok()
}

/// What one schema contributed.
#[derive(Default)]
struct Outcome {
    compiled: bool,
    unsound: Vec<String>,
    valid: usize,
    valid_matched: usize,
    samples: usize,
    bad_samples: Vec<String>,
}

/// Regexes larger than this are only checked by `cargo xtask schema-report` (building their
/// matchers dominates the test's time).
const MATCH_LIMIT: usize = 256 << 10;
/// Every `SAMPLE_EVERY`th compiled schema with a regex under `SAMPLE_LIMIT` is sampled.
const SAMPLE_EVERY: usize = 8;
const SAMPLE_LIMIT: usize = 64 << 10;

fn check(index: usize, c: &Case) -> Outcome {
    let mut out = Outcome::default();
    let Ok(compiled) = Compiler::new().compile_detailed(&c.schema) else {
        return out;
    };
    out.compiled = true;
    if compiled.regex.len() <= MATCH_LIMIT
        && let Some(re) = matcher(&compiled.regex)
    {
        for (is_valid, data) in &c.tests {
            let text = serde_json::to_string(data).expect("serialize");
            let m = re.is_match(&text);
            if *is_valid {
                out.valid += 1;
                out.valid_matched += m as usize;
            } else if m && compiled.unenforced.is_empty() {
                out.unsound.push(format!("{}: {text}", c.id));
            }
        }
    }
    if !index.is_multiple_of(SAMPLE_EVERY)
        || !compiled.unenforced.is_empty()
        || compiled.regex.len() > SAMPLE_LIMIT
    {
        return out;
    }
    let limits = DfaConfig {
        max_states: 50_000,
        max_memory: 128 << 20,
    };
    let Ok(dfa) = ByteDfa::with_config(&compiled.regex, limits) else {
        return out;
    };
    let Ok(oracle) = jsonschema::options()
        .should_validate_formats(true)
        .build(&c.schema)
    else {
        return out;
    };
    for seed in 0..3 {
        let doc = dfa.sample(seed, 128);
        out.samples += 1;
        let ok = std::str::from_utf8(&doc)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .is_some_and(|v| oracle.is_valid(&v));
        if !ok {
            out.bad_samples
                .push(format!("{}: {}", c.id, String::from_utf8_lossy(&doc)));
        }
    }
    out
}

/// One pass over every schema on two threads, each schema watched for a hang:
/// - every schema compiles or returns an error, never panics, within the time bound;
/// - soundness: where every keyword is enforced, no instance labelled invalid matches;
/// - completeness on the valid instances stays at its measured level;
/// - documents sampled from the automaton validate under the `jsonschema` crate.
#[test]
fn jsonschemabench_sound_complete_and_sampled() {
    let cases = std::sync::Arc::new(cases());
    let bound = Duration::from_secs(120);
    let (tx, rx) = mpsc::channel::<Option<(usize, Result<Outcome, String>)>>();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..2 {
        let (tx, next, cases) = (tx.clone(), next.clone(), cases.clone());
        handles.push(std::thread::spawn(move || {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(c) = cases.get(i) else { break };
                tx.send(None).ok();
                let r = std::panic::catch_unwind(|| check(i, c)).map_err(|_| c.id.clone());
                tx.send(Some((i, r))).ok();
            }
        }));
    }
    drop(tx);
    let mut total = Outcome::default();
    let mut panics = Vec::new();
    let mut compiled = 0;
    loop {
        match rx.recv_timeout(bound) {
            Ok(None) => {}
            Ok(Some((_, Ok(o)))) => {
                compiled += o.compiled as usize;
                total.unsound.extend(o.unsound);
                total.valid += o.valid;
                total.valid_matched += o.valid_matched;
                total.samples += o.samples;
                total.bad_samples.extend(o.bad_samples);
            }
            Ok(Some((_, Err(id)))) => panics.push(id),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("a schema took longer than {bound:?}"),
        }
    }
    for h in handles {
        h.join().expect("worker thread");
    }
    assert!(panics.is_empty(), "the compiler panicked on: {panics:?}");
    assert!(compiled > 10_000, "only {compiled} schemas compiled");
    assert!(
        total.unsound.is_empty(),
        "{} invalid instances matched:\n{}",
        total.unsound.len(),
        total.unsound.join("\n")
    );
    let share = total.valid_matched as f64 / total.valid as f64;
    assert!(share >= 0.85, "completeness fell to {:.1}%", share * 100.0);
    assert!(
        total.samples > 1000,
        "only {} samples checked",
        total.samples
    );
    assert!(
        total.bad_samples.is_empty(),
        "{} samples invalid:\n{}",
        total.bad_samples.len(),
        total.bad_samples.join("\n")
    );
}
