//! Compile time of formwork-schema over a fixed sample of JSONSchemaBench and a few typical
//! schemas. Run with `cargo bench -p formwork-schema`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use formwork_schema::Compiler;
use serde_json::{Value, json};

/// Every 40th schema of every file that compiles: a fixed, varied sample.
fn sample() -> Vec<Value> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/jsonschemabench");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines().step_by(40) {
            if let Ok(v) = serde_json::from_str::<Value>(line)
                && Compiler::new().compile(&v["schema"]).is_ok()
            {
                out.push(v["schema"].clone());
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let compiler = Compiler::new();
    let typical = [
        (
            "two_properties",
            json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}),
        ),
        (
            "ten_properties",
            json!({"type": "object", "properties": {
                "id": {"type": "string", "format": "uuid"},
                "status": {"enum": ["active", "inactive", "pending"]},
                "created": {"type": "string", "format": "date-time"},
                "email": {"type": "string", "format": "email"},
                "age": {"type": "integer", "minimum": 0, "maximum": 150},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "name": {"type": "string", "maxLength": 40},
                "verified": {"type": "boolean"},
                "note": {"type": ["string", "null"]}
            }, "required": ["id", "status", "created", "email"]}),
        ),
    ];
    for (name, schema) in &typical {
        c.bench_function(&format!("compile/{name}"), |b| {
            b.iter(|| compiler.compile(black_box(schema)).expect("compiles"))
        });
    }
    let schemas = sample();
    c.bench_function(
        &format!("compile/jsonschemabench_sample_{}", schemas.len()),
        |b| {
            b.iter(|| {
                for s in &schemas {
                    black_box(compiler.compile(black_box(s)).ok());
                }
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
