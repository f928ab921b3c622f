//! formwork-grammar against llguidance, over the whole distribution of real schemas and over
//! grammars, on the default model's vocabulary (SmolLM2-135M, 49,152 tokens).
//!
//! 1. **Schema text to first mask** for a uniform random sample (fixed seed) of all
//!    JSONSchemaBench schemas (every file; `FORMWORK_COMPARE_ALL=1` takes all of them):
//!    ours (`json_schema`, `GrammarIndex`, `GrammarGuide::mask`, nothing cached from earlier
//!    schemas but the vocabulary's trie) against llguidance in lenient mode and in its default
//!    (strict) mode, both with compact separators. Median of three runs per schema; the table
//!    reports the median, p90 and worst over the schemas both compile, and what each refuses.
//! 2. **Per step** (consume one token, then the next mask) along the valid instances of the
//!    sampled schemas (compact JSON, schema property order, greedily tokenized; at most two
//!    per schema), kept where both engines accept them token by token: llguidance, ours on a
//!    fresh index (first visit) and ours again on the same index (revisit): mean and p99.
//! 3. **Grammars**: Lark grammars (JSON, arithmetic, a C-like language) and five recursive
//!    schemas, first mask and per step along documents sampled from our grammar.
//!
//! Run with `cargo xtask bench compare` (add `-- grammar` to run only this one).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use formwork_grammar::{Grammar, GrammarConfig, GrammarGuide, GrammarIndex, json_schema};
use formwork_index::Vocabulary;
use formwork_schema::Compiler;
use llguidance::api::TopLevelGrammar;
use formwork_compare::{default_vocabulary, llguidance_env};
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};

/// Schemas in the default sample.
const SAMPLE: usize = 600;
const SEED: u64 = 2026;
/// Instances timed per schema, and the longest kept (tokens).
const DOCS_PER_SCHEMA: usize = 2;
const MAX_DOC_TOKENS: usize = 400;

/// SplitMix64, for the sample.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A JSONSchemaBench entry.
struct Entry {
    name: String,
    schema: Value,
    valid: Vec<Value>,
}

fn jsonschemabench() -> Vec<Entry> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/jsonschemabench");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let valid = v["tests"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter(|t| t["valid"] == json!(true))
                        .map(|t| t["data"].clone())
                        .collect()
                })
                .unwrap_or_default();
            out.push(Entry {
                name: format!("{stem}:{}", i + 1),
                schema: v["schema"].clone(),
                valid,
            });
        }
    }
    out
}

/// A uniform sample of `n` entries without replacement (all when `n` is at least the size).
fn sample(mut all: Vec<Entry>, n: usize, seed: u64) -> Vec<Entry> {
    let mut rng = Rng(seed);
    let n = n.min(all.len());
    for i in 0..n {
        let j = i + (rng.next() % (all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(n);
    all
}

/// The median of three runs of `f`; what it returns is dropped after the clock stops (a
/// compiled grammar is freed when a cache evicts it, not on the way to its first mask), for
/// both engines alike.
fn median3<T>(mut f: impl FnMut() -> Result<T, String>) -> Result<Duration, String> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let result = f()?;
        times.push(t.elapsed());
        drop(result);
    }
    times.sort();
    Ok(times[1])
}

fn ours_grammar(schema: &Value) -> Result<Grammar, String> {
    json_schema(schema, &Compiler::new(), &GrammarConfig::default())
        .map(|g| g.grammar)
        .map_err(|e| e.to_string())
}

fn ours_first_mask(vocab: &Vocabulary, schema_text: &str) -> Result<GrammarGuide, String> {
    let schema: Value = serde_json::from_str(schema_text).map_err(|e| e.to_string())?;
    let grammar = ours_grammar(&schema)?;
    let index = Arc::new(GrammarIndex::new(grammar, vocab).map_err(|e| e.to_string())?);
    let mut guide = GrammarGuide::new(index).map_err(|e| e.to_string())?;
    black_box(guide.mask().map_err(|e| e.to_string())?[0]);
    Ok(guide)
}

fn ll_schema(schema_text: &str, lenient: bool) -> Result<TopLevelGrammar, String> {
    let mut v: Value = serde_json::from_str(schema_text).map_err(|e| e.to_string())?;
    let Some(o) = v.as_object_mut() else {
        return Err("schema is not an object".into());
    };
    o.insert(
        "x-guidance".into(),
        json!({"whitespace_flexible": false, "lenient": lenient}),
    );
    Ok(TopLevelGrammar::from_json_schema(v))
}

fn ll_first_mask(factory: &ParserFactory, grammar: TopLevelGrammar) -> Result<Matcher, String> {
    let mut m = Matcher::new(factory.create_parser(grammar));
    if let Some(e) = m.get_error() {
        return Err(e);
    }
    m.compute_mask().map_err(|e| e.to_string())?;
    Ok(m)
}

/// Per-step nanoseconds: llguidance, ours first visit, ours revisit.
#[derive(Default)]
struct Steps {
    ll: Vec<f64>,
    cold: Vec<f64>,
    warm: Vec<f64>,
    docs: usize,
    refused: usize,
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Times the steps along `docs` (token lists) where both engines accept them.
fn time_steps(
    vocab: &Vocabulary,
    factory: &ParserFactory,
    ours: &dyn Fn() -> Result<GrammarGuide, String>,
    ll: &dyn Fn() -> Result<Matcher, String>,
    docs: &[Vec<u32>],
    out: &mut Steps,
) -> Result<(), String> {
    let _ = (vocab, factory);
    for tokens in docs {
        // Both must accept the document, token by token.
        let mut m = ll()?;
        let ll_ok =
            tokens.iter().all(|&t| m.consume_token(t).is_ok()) && m.is_accepting().unwrap_or(false);
        let mut g = ours()?;
        let ours_ok = tokens.iter().all(|&t| g.advance(t).is_ok()) && g.accepts_eos();
        if !(ll_ok && ours_ok) {
            out.refused += 1;
            continue;
        }
        out.docs += 1;
        let mut m = ll()?;
        for &t in tokens {
            let s = Instant::now();
            m.consume_token(t).map_err(|e| e.to_string())?;
            black_box(m.compute_mask_or_eos().map_err(|e| e.to_string())?);
            out.ll.push(ns(s.elapsed()));
        }
        let first = ours()?;
        for pass in 0..2 {
            let mut g = first.clone();
            g.reset();
            black_box(g.mask().map_err(|e| e.to_string())?[0]);
            for &t in tokens {
                let s = Instant::now();
                g.advance(t).map_err(|e| e.to_string())?;
                black_box(g.mask().map_err(|e| e.to_string())?[0]);
                let e = ns(s.elapsed());
                if pass == 0 {
                    out.cold.push(e);
                } else {
                    out.warm.push(e);
                }
            }
        }
    }
    Ok(())
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// The mean (NaN for no values, shown as "-").
fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn fmt_ns(ns: f64) -> String {
    if ns.is_nan() {
        "-".into()
    } else if ns < 1000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

const JSON_LARK: &str = r#"
start: value
?value: object | array | string | SIGNED_NUMBER | "true" | "false" | "null"
array: "[" [value ("," value)*] "]"
object: "{" [pair ("," pair)*] "}"
pair: string ":" value
string: ESCAPED_STRING
%import common.ESCAPED_STRING
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
"#;

const ARITHMETIC_LARK: &str = r#"
start: sum
?sum: product | sum "+" product | sum "-" product
?product: atom | product "*" atom | product "/" atom
?atom: NUMBER | "-" atom | "(" sum ")"
%import common.NUMBER
%import common.WS_INLINE
%ignore WS_INLINE
"#;

const C_LIKE_LARK: &str = r#"
start: function+
function: type NAME "(" [param ("," param)*] ")" block
param: type NAME
type: "int" | "void" | "char" | "float"
block: "{" statement* "}"
statement: type NAME ["=" expr] ";"
         | NAME "=" expr ";"
         | "if" "(" expr ")" block ["else" block]
         | "while" "(" expr ")" block
         | "return" [expr] ";"
         | block
?expr: term | expr ("+" | "-" | "<" | "==") term
?term: factor | term ("*" | "/") factor
?factor: NAME | INT | "(" expr ")" | NAME "(" [expr ("," expr)*] ")"
NAME: /[a-z_][a-z0-9_]*/
%import common.INT
%import common.WS
%ignore WS
"#;

fn recursive_schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "tree",
            json!({"type": "object", "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#"}}}, "required": ["value", "children"], "additionalProperties": false}),
        ),
        (
            "linked_list",
            json!({"$defs": {"node": {"type": "object", "properties": {"item": {"type": "string", "maxLength": 12}, "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}}, "required": ["item", "next"], "additionalProperties": false}}, "$ref": "#/$defs/node"}),
        ),
        (
            "expression_ast",
            json!({"$defs": {"expr": {"anyOf": [
                {"type": "object", "properties": {"num": {"type": "number"}}, "required": ["num"], "additionalProperties": false},
                {"type": "object", "properties": {"op": {"enum": ["+", "-", "*", "/"]}, "left": {"$ref": "#/$defs/expr"}, "right": {"$ref": "#/$defs/expr"}}, "required": ["op", "left", "right"], "additionalProperties": false}
            ]}}, "$ref": "#/$defs/expr"}),
        ),
        (
            "mutual_recursion",
            json!({"$defs": {
                "folder": {"type": "object", "properties": {"name": {"type": "string"}, "entries": {"type": "array", "items": {"$ref": "#/$defs/entry"}}}, "required": ["name", "entries"], "additionalProperties": false},
                "entry": {"anyOf": [{"$ref": "#/$defs/folder"}, {"type": "object", "properties": {"file": {"type": "string"}, "size": {"type": "integer", "minimum": 0}}, "required": ["file", "size"], "additionalProperties": false}]}
            }, "$ref": "#/$defs/folder"}),
        ),
        (
            "comment_thread",
            json!({"$defs": {"Comment": {"title": "Comment", "type": "object", "properties": {"author": {"type": "string"}, "text": {"type": "string"}, "score": {"type": "integer"}, "replies": {"type": "array", "items": {"$ref": "#/$defs/Comment"}, "maxItems": 4}}, "required": ["author", "text", "score", "replies"], "additionalProperties": false}}, "$ref": "#/$defs/Comment"}),
        ),
    ]
}

fn main() {
    let vocab = default_vocabulary();
    let env = llguidance_env(&vocab);
    let mut factory = ParserFactory::new_simple(&env).expect("llguidance factory");
    factory.quiet();

    let all = jsonschemabench();
    let total = all.len();
    let n = if std::env::var_os("FORMWORK_COMPARE_ALL").is_some() {
        total
    } else {
        SAMPLE
    };
    let mut entries = sample(all, n, SEED);
    // `FORMWORK_COMPARE_ONLY=Snowplow:207,JME:1` keeps only those of the sample (for profiling).
    if let Ok(only) = std::env::var("FORMWORK_COMPARE_ONLY") {
        let names: Vec<&str> = only.split(',').map(str::trim).collect();
        entries.retain(|e| names.contains(&e.name.as_str()));
    }
    eprintln!("{} of {total} schemas (seed {SEED})", entries.len());

    // (name, ours, lenient, strict)
    let mut first: Vec<(String, Option<f64>, Option<f64>, Option<f64>)> = Vec::new();
    let mut ours_errors: Vec<(String, String)> = Vec::new();
    let mut steps = Steps::default();
    // Per schema: (name, ours revisit mean, llguidance mean, ours first-visit mean), for the
    // slowest lists.
    let mut per_schema: Vec<(String, f64, f64, f64)> = Vec::new();
    for (k, e) in entries.iter().enumerate() {
        let text = e.schema.to_string();
        if k % 50 == 0 {
            eprintln!("{k}/{}", entries.len());
        }
        let ours = median3(|| ours_first_mask(&vocab, &text));
        if let Err(err) = &ours {
            ours_errors.push((e.name.clone(), err.clone()));
        }
        let lenient = median3(|| {
            ll_schema(&text, true).and_then(|g| ll_first_mask(&factory, g))
        });
        let strict = median3(|| {
            ll_schema(&text, false).and_then(|g| ll_first_mask(&factory, g))
        });
        let ms = |r: &Result<Duration, String>| r.as_ref().ok().map(|d| d.as_secs_f64() * 1e3);
        first.push((e.name.clone(), ms(&ours), ms(&lenient), ms(&strict)));
        if ours.is_ok() && lenient.is_ok() {
            let docs: Vec<Vec<u32>> = e
                .valid
                .iter()
                .take(DOCS_PER_SCHEMA)
                .filter_map(|d| vocab.tokenize_greedy(d.to_string().as_bytes()))
                .filter(|t| t.len() <= MAX_DOC_TOKENS)
                .collect();
            let ours_guide = || ours_first_mask(&vocab, &text);
            let ll = || ll_schema(&text, true).and_then(|g| ll_first_mask(&factory, g));
            let mut mine = Steps::default();
            if let Err(err) = time_steps(&vocab, &factory, &ours_guide, &ll, &docs, &mut mine) {
                eprintln!("{}: steps failed: {err}", e.name);
            }
            if !mine.warm.is_empty() {
                per_schema.push((
                    e.name.clone(),
                    mean(&mine.warm),
                    mean(&mine.ll),
                    mean(&mine.cold),
                ));
            }
            steps.ll.extend(mine.ll);
            steps.cold.extend(mine.cold);
            steps.warm.extend(mine.warm);
            steps.docs += mine.docs;
            steps.refused += mine.refused;
        }
    }

    // `FORMWORK_COMPARE_DUMP=file.tsv` writes each schema's first-mask times (ms; empty where
    // refused): name, ours, llguidance lenient, llguidance strict.
    if let Ok(path) = std::env::var("FORMWORK_COMPARE_DUMP") {
        let ms = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.3}"));
        let rows: Vec<String> = first
            .iter()
            .map(|r| format!("{}\t{}\t{}\t{}", r.0, ms(r.1), ms(r.2), ms(r.3)))
            .collect();
        std::fs::write(&path, rows.join("\n") + "\n").expect("writing the dump");
    }
    println!("\n### Schema text to first mask: {} JSONSchemaBench schemas (uniform sample of {total}, seed {SEED})\n", entries.len());
    let count = |f: &dyn Fn(&(String, Option<f64>, Option<f64>, Option<f64>)) -> bool| {
        first.iter().filter(|r| f(r)).count()
    };
    println!(
        "Compiled: ours {}, llguidance lenient {}, llguidance strict {} (of {}).\n",
        count(&|r| r.1.is_some()),
        count(&|r| r.2.is_some()),
        count(&|r| r.3.is_some()),
        first.len()
    );
    println!("| set | schemas | ours median | p90 | max | llguidance median | p90 | max | schemas over 100 ms (ours / llguidance) | ours faster on |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, pick) in [("lenient", 2usize), ("strict", 3usize)] {
        let both: Vec<(f64, f64)> = first
            .iter()
            .filter_map(|r| {
                let theirs = if pick == 2 { r.2 } else { r.3 };
                Some((r.1?, theirs?))
            })
            .collect();
        let ours: Vec<f64> = both.iter().map(|x| x.0).collect();
        let theirs: Vec<f64> = both.iter().map(|x| x.1).collect();
        println!(
            "| both compile (llguidance {label}) | {} | {:.2} ms | {:.2} ms | {:.1} ms | {:.2} ms | {:.2} ms | {:.1} ms | {} / {} | {} |",
            both.len(),
            quantile(&ours, 0.5),
            quantile(&ours, 0.9),
            quantile(&ours, 1.0),
            quantile(&theirs, 0.5),
            quantile(&theirs, 0.9),
            quantile(&theirs, 1.0),
            ours.iter().filter(|&&x| x > 100.0).count(),
            theirs.iter().filter(|&&x| x > 100.0).count(),
            both.iter().filter(|x| x.0 < x.1).count(),
        );
    }
    let mut slowest: Vec<&(String, Option<f64>, Option<f64>, Option<f64>)> =
        first.iter().filter(|r| r.1.is_some()).collect();
    slowest.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    println!("\nSlowest five (ours): {}", slowest.iter().take(5).map(|r| format!("{} {:.1} ms (llguidance {})", r.0, r.1.unwrap_or(0.0), r.2.map_or("refused".into(), |x| format!("{x:.1} ms")))).collect::<Vec<_>>().join("; "));
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, e) in &ours_errors {
        let key: String = e.chars().take(60).collect();
        *reasons.entry(key).or_default() += 1;
    }
    println!("\nOurs refused {}: {:?}", ours_errors.len(), reasons.iter().take(12).collect::<Vec<_>>());

    println!("\n### Per step (consume one token + next mask) along valid instances ({} documents, {} steps; {} refused by one engine)\n", steps.docs, steps.ll.len(), steps.refused);
    println!("| engine | mean | p99 |");
    println!("|---|---:|---:|");
    for (name, v) in [("llguidance (lenient)", &steps.ll), ("ours, first visit", &steps.cold), ("ours, revisit", &steps.warm)] {
        println!("| {name} | {} | {} |", fmt_ns(mean(v)), fmt_ns(quantile(v, 0.99)));
    }

    for (label, first_visit) in [("revisit", false), ("first visit", true)] {
        let pick = |r: &(String, f64, f64, f64)| if first_visit { r.3 } else { r.1 };
        per_schema.sort_by(|a, b| pick(b).total_cmp(&pick(a)));
        println!(
            "\nSlowest five per step (ours {label} mean vs llguidance): {}",
            per_schema
                .iter()
                .take(5)
                .map(|r| format!("{} {} vs {}", r.0, fmt_ns(pick(r)), fmt_ns(r.2)))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    println!("\n### Grammars and recursive schemas\n");
    println!("| grammar | ours first mask | llguidance first mask | ours step mean (first / revisit) | p99 (first / revisit) | llguidance step mean | p99 | docs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows: Vec<(String, Grammar, TopLevelGrammar)> = Vec::new();
    for (name, text) in [("JSON (Lark)", JSON_LARK), ("arithmetic (Lark)", ARITHMETIC_LARK), ("C-like (Lark)", C_LIKE_LARK)] {
        let (set, start) = formwork_grammar::lark(text).expect("our Lark grammar");
        let g = set.compile(start, &GrammarConfig::default()).expect("lowering");
        rows.push((name.into(), g, TopLevelGrammar::from_lark(text.into())));
    }
    for (name, schema) in recursive_schemas() {
        let g = ours_grammar(&schema).expect("recursive schema compiles");
        let text = schema.to_string();
        rows.push((format!("schema: {name}"), g, ll_schema(&text, true).expect("ll schema")));
    }
    for (name, g, llg) in rows {
        let index_first = median3(|| {
            let index = Arc::new(GrammarIndex::new(g.clone(), &vocab).map_err(|e| e.to_string())?);
            let mut guide = GrammarGuide::new(index).map_err(|e| e.to_string())?;
            black_box(guide.mask().map_err(|e| e.to_string())?[0]);
            Ok(guide)
        });
        let ll_first = median3(|| ll_first_mask(&factory, llg.clone()));
        let docs: Vec<Vec<u32>> = (1..=40u64)
            .filter_map(|seed| g.sample(seed, 300).ok())
            .filter_map(|d| vocab.tokenize_greedy(&d))
            .filter(|t| t.len() <= MAX_DOC_TOKENS)
            .collect();
        let mut s = Steps::default();
        let ours = || {
            let index = Arc::new(GrammarIndex::new(g.clone(), &vocab).map_err(|e| e.to_string())?);
            let mut guide = GrammarGuide::new(index).map_err(|e| e.to_string())?;
            guide.mask().map_err(|e| e.to_string())?;
            Ok(guide)
        };
        let ll = || ll_first_mask(&factory, llg.clone());
        if let Err(e) = time_steps(&vocab, &factory, &ours, &ll, &docs, &mut s) {
            eprintln!("{name}: {e}");
        }
        let f = |r: &Result<Duration, String>| r.as_ref().map_or_else(|e| format!("failed: {e}"), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3));
        println!(
            "| {name} | {} | {} | {} / {} | {} / {} | {} | {} | {} ({} refused) |",
            f(&index_first),
            f(&ll_first),
            fmt_ns(mean(&s.cold)),
            fmt_ns(mean(&s.warm)),
            fmt_ns(quantile(&s.cold, 0.99)),
            fmt_ns(quantile(&s.warm, 0.99)),
            fmt_ns(mean(&s.ll)),
            fmt_ns(quantile(&s.ll, 0.99)),
            s.docs,
            s.refused
        );
    }
}
