//! JSONSchemaBench schemas through `response_format` at temperature 0.8: every answer
//! that finishes with `stop` must parse and validate (the `jsonschema` crate) against its
//! schema. Fifty or more on the tiny random model (whatever the weights, the constraint
//! alone makes the output valid), and a smaller set on the default model.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Server, default_model_path, engine_on, tiny_engine};
use formwork_engine::EngineConfig;
use formwork_server::app::ServerConfig;
use serde_json::{Value, json};

/// Up to `per_file` schemas from each JSONSchemaBench file (every 11th line, in file
/// order) that Formwork's compiler accepts *and fully enforces*, that the `jsonschema`
/// crate can check, and whose text is at most `max_len` bytes.
///
/// Schemas with keywords the compiler reports as not enforced (`uniqueItems`, a `oneOf`
/// whose branches it cannot prove disjoint) compile to a superset of the valid documents
/// by design, so their outputs carry no guarantee and are left out.
fn select_schemas(per_file: usize, max_len: usize) -> Vec<(String, Value)> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/jsonschemabench");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the shared test data is missing)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let compiler = formwork_schema::Compiler::new();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut taken = 0;
        for line in text.lines().step_by(11) {
            if taken == per_file {
                break;
            }
            let row: Value = serde_json::from_str(line).unwrap();
            let schema = match &row["schema"] {
                Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                v => v.clone(),
            };
            if !schema.is_object()
                || schema.to_string().len() > max_len
                || !compiler
                    .compile_detailed(&schema)
                    .is_ok_and(|c| c.unenforced.is_empty())
                || jsonschema::validator_for(&schema).is_err()
            {
                continue;
            }
            out.push((row["id"].as_str().unwrap_or("?").to_owned(), schema));
            taken += 1;
        }
    }
    out
}

#[derive(Debug, Default)]
struct Tally {
    served: AtomicUsize,
    stopped: AtomicUsize,
    validated: AtomicUsize,
    refused: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
}

/// Sends every schema as a chat request with `response_format` from `clients` threads.
fn run(
    server: &Server,
    schemas: Vec<(String, Value)>,
    clients: usize,
    max_tokens: u32,
    describe: bool,
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let queue = Arc::new(Mutex::new(
        schemas.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let addr = server.addr;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (queue, tally) = (queue.clone(), tally.clone());
            std::thread::spawn(move || {
                loop {
                    let Some((i, (id, schema))) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let prompt = if describe {
                        format!("Write one JSON document valid under this JSON Schema:\n{schema}")
                    } else {
                        "json please".to_owned()
                    };
                    let body = json!({
                        "messages": [{"role": "user", "content": prompt}],
                        "temperature": 0.8, "seed": i, "max_tokens": max_tokens,
                        "response_format": {"type": "json_schema",
                                            "json_schema": {"name": "doc", "schema": schema}}
                    });
                    let r = common::request(addr, "POST", "/v1/chat/completions", &[], body.to_string().as_bytes());
                    if r.status == 400 {
                        // Index limits (an automaton too large) and a budget below the
                        // shortest valid document are typed refusals.
                        let message = r.json()["error"]["message"].as_str().unwrap_or("").to_owned();
                        assert!(
                            message.starts_with("The structure cannot be enforced")
                                || message.contains("is too small for any reply this constraint allows"),
                            "{id}: unexpected 400: {message}"
                        );
                        tally.refused.lock().unwrap().push(id);
                        continue;
                    }
                    assert_eq!(r.status, 200, "{id}: {}", r.text());
                    tally.served.fetch_add(1, Ordering::Relaxed);
                    let v = r.json();
                    let choice = &v["choices"][0];
                    let content = choice["message"]["content"].as_str().unwrap_or("");
                    match choice["finish_reason"].as_str() {
                        Some("stop") => {
                            tally.stopped.fetch_add(1, Ordering::Relaxed);
                            let failure = match serde_json::from_str::<Value>(content) {
                                Err(e) => Some(format!("{id}: not JSON ({e}): {content}")),
                                Ok(doc) => {
                                    let validator = jsonschema::validator_for(&schema).unwrap();
                                    let errors: Vec<String> =
                                        validator.iter_errors(&doc).map(|e| e.to_string()).collect();
                                    (!errors.is_empty()).then(|| {
                                        format!("{id}: invalid ({errors:?}): {content}\nschema: {schema}")
                                    })
                                }
                            };
                            match failure {
                                Some(f) => tally.failures.lock().unwrap().push(f),
                                None => {
                                    tally.validated.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Some("length") => {}
                        other => panic!("{id}: finish_reason {other:?}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client thread failed");
    }
    tally
}

fn report(label: &str, tally: &Tally) -> (usize, usize, usize) {
    let served = tally.served.load(Ordering::Relaxed);
    let stopped = tally.stopped.load(Ordering::Relaxed);
    let validated = tally.validated.load(Ordering::Relaxed);
    let refused = tally.refused.lock().unwrap();
    eprintln!(
        "{label}: {served} schemas served, {stopped} finished with stop, {validated} validated, \
         {} refused by index limits {refused:?}",
        refused.len()
    );
    let failures = tally.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} invalid outputs:\n{}",
        failures.len(),
        failures.join("\n")
    );
    (served, stopped, validated)
}

#[test]
fn fifty_jsonschemabench_schemas_on_the_tiny_model_validate() {
    let schemas = select_schemas(3, usize::MAX);
    assert!(
        schemas.len() >= 55,
        "only {} schemas selected",
        schemas.len()
    );
    let server = Server::start(
        tiny_engine(EngineConfig::default()),
        ServerConfig::default(),
    );
    let tally = run(&server, schemas, 8, 400, false);
    let (served, stopped, validated) = report("tiny model", &tally);
    assert!(served >= 50, "only {served} schemas served");
    assert_eq!(stopped, validated);
    // Random weights wander, but most constrained documents close within 400 tokens.
    assert!(
        stopped * 2 >= served,
        "only {stopped} of {served} finished with stop"
    );
}

#[test]
fn default_model_jsonschemabench_schemas_validate() {
    let engine = engine_on(&default_model_path(), EngineConfig::default());
    let schemas: Vec<_> = select_schemas(1, 1200).into_iter().take(12).collect();
    assert!(
        schemas.len() >= 10,
        "only {} schemas selected",
        schemas.len()
    );
    let server = Server::start(engine, ServerConfig::default());
    let tally = run(&server, schemas, 12, 200, true);
    let (served, stopped, validated) = report("default model", &tally);
    assert!(served >= 10, "only {served} schemas served");
    assert_eq!(stopped, validated);
    assert!(
        stopped * 2 >= served,
        "only {stopped} of {served} finished with stop"
    );
}
