//! Side by side with the field's engines, over the default model's vocabulary (SmolLM2-135M,
//! 49,152 tokens): `outlines-core` (eager regex index) and `llguidance` (JSON Schema grammar,
//! mask per step).
//!
//! Run with `cargo xtask bench compare` (a crate outside the workspace, so the test build never compiles the two engines) (add `-- NAME` to run only the
//! cases whose name contains NAME). Prints markdown tables of medians and ratios:
//!
//! 1. **outlines-core**: the same regex (from `formwork-schema`, compiled once outside the
//!    timing) indexed by `outlines_core::Index::new` and by ours: eager (default threads and
//!    one thread) and lazy up to the first mask. outlines-core's vocabulary holds our
//!    vocabulary's text tokens (special tokens left out, as our index leaves them out) and its
//!    first EOS id.
//! 2. **llguidance**: from the schema's JSON text to the first mask (llguidance: parse,
//!    grammar from the JSON Schema, parser, `compute_mask`; ours: `formwork-schema` compile,
//!    `Index::lazy`, `Guide::mask`), then the time per step along sampled documents (a
//!    document drawn from our DFA with `ByteDfa::sample`, tokenized greedily; each step
//!    consumes one token and computes the next mask: `consume_token` + `compute_mask_or_eos` for
//!    llguidance, `Guide::advance` + `Guide::mask` for ours). Ours is timed on a fresh lazy
//!    index (each state computed on first visit: what the first request with a schema pays)
//!    and again on the same index (what later requests with the schema pay). llguidance is
//!    set to compact separators (`"whitespace_flexible": false`), the layout our compiler
//!    produces; it keeps its other defaults (objects are open unless the schema closes them,
//!    ours are closed by default).
//!
//! Timing: each measurement runs once to warm up, then 21, 7, 5 or 3 more times depending on
//! how long the first run took (under 20 ms, 200 ms, 2 s, or more); the median is reported.
//! `FORMWORK_COMPARE_MODEL=gemma-3-270m-q4_k_m.gguf` runs it all over Gemma 3's 262,144-token
//! vocabulary instead (a GGUF file name in `models/`).
//! Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf` (`cargo xtask fetch-model`) and
//! `../shared/data/jsonschemabench`. With `FORMWORK_COMPARE_DEBUG` set, sampled documents
//! llguidance refuses are printed with the place it refused them.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use formwork_index::{ByteDfa, Guide, Index, IndexConfig, Vocabulary};
use formwork_schema::Compiler;
use llguidance::api::TopLevelGrammar;
use formwork_compare::{default_vocabulary, llguidance_env};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

const TWO_PROPERTIES: &str = r#"{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}"#;

/// formwork-index's bench schema (its benches and its tests over real vocabularies index it).
const TEN_PROPERTIES: &str =
    include_str!("../../../crates/formwork-index/benches/ten_properties.json");

const DATE: &str = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])";
const EMAIL: &str = r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}";

/// JSONSchemaBench files the sample draws from, and how many schemas from each.
const SAMPLE_FILES: &[&str] = &[
    "Github_easy",
    "Github_medium",
    "Github_hard",
    "Glaiveai2K",
    "Kubernetes",
    "Snowplow",
    "WashingtonPost",
    "JME",
];
const PER_FILE: usize = 3;
/// Every `SAMPLE_STEP`-th line of a file is a candidate.
const SAMPLE_STEP: usize = 37;
/// Candidates whose eager index has more token-level states are skipped (outlines-core walks
/// the whole vocabulary per state: a few thousand states take it minutes).
const SAMPLE_MAX_STATES: usize = 1500;
/// Documents sampled per schema for the per-step timings, and passes over each.
const DOCUMENTS: u64 = 3;
const ROUNDS: usize = 3;

/// A case: a name, the schema text (absent for plain regexes) and the regex.
struct Case {
    name: String,
    schema: Option<String>,
    regex: String,
}

/// What a case measured.
#[derive(Default)]
struct Row {
    name: String,
    states: usize,
    outlines: Option<Result<Duration, String>>,
    eager: Option<Duration>,
    eager_one_thread: Option<Duration>,
    lazy_first_mask: Option<Duration>,
    ll_first_mask: Option<Result<Duration, String>>,
    ours_first_mask: Option<Duration>,
    /// The whole byte DFA's determinization (`ByteDfa::new`), which the lazy index no longer
    /// pays before its first mask.
    dfa_build: Option<Duration>,
    dfa_states: usize,
    steps: Option<Result<Steps, String>>,
}

/// Per-step times along the sampled documents, in nanoseconds.
#[derive(Default)]
struct Steps {
    tokens: usize,
    ll: Vec<f64>,
    ours_cold: Vec<f64>,
    ours_warm: Vec<f64>,
    /// Sampled documents skipped: not spelled by greedy tokenization (bytes no token holds).
    untokenizable: usize,
    /// Sampled documents skipped: llguidance refused a token or did not accept at the end.
    ll_rejected: usize,
}

/// Median of one warm-up run plus 21, 7, 5 or 3 timed runs; the value is dropped outside the
/// timing. The first error ends the measurement.
fn median<T, E: std::fmt::Display>(
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<Duration, String> {
    let t = Instant::now();
    let r = f().map_err(|e| e.to_string())?;
    let first = t.elapsed();
    drop(r);
    let runs = match first.as_millis() {
        0..20 => 21,
        20..200 => 7,
        200..2000 => 5,
        _ => 3,
    };
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let r = black_box(f().map_err(|e| e.to_string())?);
        times.push(t.elapsed());
        drop(r);
    }
    times.sort();
    Ok(times[runs / 2])
}

/// outlines-core's vocabulary over ours: every text token (special ones left out) and the
/// first EOS id.
fn outlines_vocabulary(vocab: &Vocabulary) -> outlines_core::vocabulary::Vocabulary {
    let mut v = outlines_core::vocabulary::Vocabulary::new(vocab.eos()[0]);
    for id in 0..vocab.len() as u32 {
        if !vocab.is_special(id)
            && let Some(t) = vocab.token(id).filter(|t| !t.is_empty())
        {
            v.try_insert(t.to_vec(), id)
                .expect("non-EOS ids are accepted");
        }
    }
    v
}

/// The schema text with llguidance's compact-separator option.
fn llguidance_schema(text: &str) -> Result<Value, String> {
    let mut v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match v.as_object_mut() {
        Some(o) => {
            o.insert(
                "x-guidance".into(),
                serde_json::json!({"whitespace_flexible": false}),
            );
            Ok(v)
        }
        None => Err("schema is not an object".into()),
    }
}

fn ll_grammar(case: &Case) -> Result<TopLevelGrammar, String> {
    match &case.schema {
        Some(text) => llguidance_schema(text).map(TopLevelGrammar::from_json_schema),
        None => Ok(TopLevelGrammar::from_regex(&case.regex)),
    }
}

fn ll_first_mask(factory: &ParserFactory, case: &Case) -> Result<Matcher, String> {
    let grammar = ll_grammar(case)?;
    let mut m = Matcher::new(factory.create_parser(grammar));
    m.compute_mask().map_err(|e| e.to_string())?;
    Ok(m)
}

fn ours_first_mask(vocab: &Vocabulary, case: &Case) -> Result<Arc<Index>, String> {
    let regex = match &case.schema {
        Some(text) => {
            Compiler::new()
                .compile_str(text)
                .map_err(|e| e.to_string())?
                .regex
        }
        None => case.regex.clone(),
    };
    let index = Arc::new(Index::lazy(&regex, vocab).map_err(|e| e.to_string())?);
    black_box(Guide::new(index.clone()).mask()[0]);
    Ok(index)
}

/// Per-step times of both engines along documents sampled from our DFA.
fn steps(
    vocab: &Vocabulary,
    factory: &ParserFactory,
    case: &Case,
    dfa_index: &Index,
) -> Result<Steps, String> {
    let mut out = Steps::default();
    let mut docs = Vec::new();
    let mut seed = 0u64;
    while (docs.len() as u64) < DOCUMENTS && seed < 30 {
        seed += 1;
        let doc = dfa_index
            .dfa()
            .expect("an eager index keeps its full DFA")
            .sample(seed, 256);
        let Some(tokens) = vocab.tokenize_greedy(&doc) else {
            out.untokenizable += 1;
            continue;
        };
        // Keep documents both engines accept, token by token.
        let mut m = ll_first_mask(factory, case)?;
        let ll_ok =
            tokens.iter().all(|&t| m.consume_token(t).is_ok()) && m.is_accepting().unwrap_or(false);
        if !ll_ok {
            if std::env::var_os("FORMWORK_COMPARE_DEBUG").is_some() {
                let mut m = ll_first_mask(factory, case)?;
                let at = tokens.iter().position(|&t| m.consume_token(t).is_err());
                let cut = at.map_or(doc.len(), |k| {
                    tokens[..k]
                        .iter()
                        .map(|&t| vocab.token(t).map_or(0, <[u8]>::len))
                        .sum()
                });
                eprintln!(
                    "llguidance refused {:?} at byte {cut}: {:?}",
                    String::from_utf8_lossy(&doc),
                    String::from_utf8_lossy(&doc[cut..])
                );
            }
            out.ll_rejected += 1;
            continue;
        }
        docs.push(tokens);
    }
    if docs.is_empty() {
        return Err(format!(
            "no sampled document usable ({} untokenizable, {} rejected by llguidance)",
            out.untokenizable, out.ll_rejected
        ));
    }
    let ns = |d: Duration| d.as_nanos() as f64;
    for tokens in &docs {
        out.tokens += tokens.len();
        for _ in 0..ROUNDS {
            let mut m = ll_first_mask(factory, case)?;
            for &t in tokens {
                let s = Instant::now();
                m.consume_token(t).map_err(|e| e.to_string())?;
                let mask = m.compute_mask_or_eos().map_err(|e| e.to_string())?;
                out.ll.push(ns(s.elapsed()));
                black_box(mask);
            }
            let index = ours_first_mask(vocab, case)?;
            for pass in 0..2 {
                let mut g = Guide::new(index.clone());
                black_box(g.mask()[0]);
                for &t in tokens {
                    let s = Instant::now();
                    g.advance(t).map_err(|e| e.to_string())?;
                    let w = g.mask()[0];
                    let e = s.elapsed();
                    black_box(w);
                    if pass == 0 {
                        out.ours_cold.push(ns(e));
                    } else {
                        out.ours_warm.push(ns(e));
                    }
                }
            }
        }
    }
    out.tokens /= docs.len();
    Ok(out)
}

/// Every `SAMPLE_STEP`-th schema of each sample file that compiles and whose index is small
/// enough, `PER_FILE` per file.
fn jsonschemabench_sample(vocab: &Vocabulary) -> Vec<Case> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/jsonschemabench");
    let mut out = Vec::new();
    for file in SAMPLE_FILES {
        let path = dir.join(format!("{file}.jsonl"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut taken = 0;
        for (line_no, line) in text.lines().enumerate().step_by(SAMPLE_STEP) {
            if taken == PER_FILE {
                break;
            }
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let schema = v["schema"].to_string();
            let Ok(compiled) = Compiler::new().compile_str(&schema) else {
                continue;
            };
            let config = IndexConfig {
                max_states: SAMPLE_MAX_STATES,
                ..IndexConfig::default()
            };
            if Index::with_config(&compiled.regex, vocab, config).is_err() {
                continue;
            }
            taken += 1;
            out.push(Case {
                name: format!("{file}:{}", line_no + 1),
                schema: Some(schema),
                regex: compiled.regex,
            });
        }
    }
    out
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let vocab = default_vocabulary();
    let ovocab = outlines_vocabulary(&vocab);
    let env = llguidance_env(&vocab);
    let mut factory = ParserFactory::new_simple(&env).expect("llguidance factory");
    factory.quiet();

    let schema = |name: &str, text: &str| Case {
        name: name.into(),
        schema: Some(text.into()),
        regex: Compiler::new()
            .compile_str(text)
            .expect("schema compiles")
            .regex,
    };
    let mut cases = vec![
        schema("two_properties", TWO_PROPERTIES),
        schema("ten_properties", TEN_PROPERTIES),
        Case {
            name: "date".into(),
            schema: None,
            regex: DATE.into(),
        },
        Case {
            name: "email".into(),
            schema: None,
            regex: EMAIL.into(),
        },
    ];
    if filter.as_ref().is_none_or(|f| {
        SAMPLE_FILES
            .iter()
            .any(|s| f.contains(s) || s.contains(f.as_str()))
    }) {
        cases.extend(jsonschemabench_sample(&vocab));
    }
    cases.retain(|c| filter.as_ref().is_none_or(|f| c.name.contains(f.as_str())));

    let mut rows = Vec::new();
    for case in &cases {
        eprintln!("{} ({} regex bytes)", case.name, case.regex.len());
        let mut row = Row {
            name: case.name.clone(),
            ..Row::default()
        };
        let eager = Index::new(&case.regex, &vocab).expect("our eager index builds");
        row.states = eager.state_count();
        row.eager = median(|| Index::new(&case.regex, &vocab)).ok();
        let one = IndexConfig {
            threads: 1,
            ..IndexConfig::default()
        };
        row.eager_one_thread = median(|| Index::with_config(&case.regex, &vocab, one)).ok();
        row.lazy_first_mask = median(|| {
            let index = Arc::new(Index::lazy(&case.regex, &vocab)?);
            let w = Guide::new(index.clone()).mask()[0];
            black_box(w);
            Ok::<_, formwork_index::IndexError>(index)
        })
        .ok();
        row.outlines = Some(median(|| {
            outlines_core::index::Index::new(&case.regex, &ovocab)
        }));
        row.ours_first_mask = median(|| ours_first_mask(&vocab, case)).ok();
        row.dfa_build = median(|| ByteDfa::new(&case.regex)).ok();
        row.dfa_states = eager.dfa_state_count();
        row.ll_first_mask = Some(median(|| ll_first_mask(&factory, case)));
        row.steps = Some(steps(&vocab, &factory, case, &eager));
        rows.push(row);
    }
    print_tables(&rows);
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns < 1000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64().max(1e-9))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn p99(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get((s.len() * 99 / 100).min(s.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// Geometric mean of ratios.
fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len().max(1) as f64).exp()
}

fn print_tables(rows: &[Row]) {
    let dash = || "—".to_string();
    println!("\n### outlines-core eager index vs ours (median)\n");
    println!(
        "| case | token states | outlines-core | ours eager | ours eager, 1 thread | ours lazy to first mask | outlines/ours eager | outlines/ours 1 thread | outlines/ours lazy |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let (mut r_eager, mut r_one, mut r_lazy) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let (Some(e), Some(e1), Some(l)) = (r.eager, r.eager_one_thread, r.lazy_first_mask) else {
            continue;
        };
        let (o, re, r1, rl) = match &r.outlines {
            Some(Ok(o)) => {
                r_eager.push(o.as_secs_f64() / e.as_secs_f64());
                r_one.push(o.as_secs_f64() / e1.as_secs_f64());
                r_lazy.push(o.as_secs_f64() / l.as_secs_f64());
                (fmt(*o), ratio(*o, e), ratio(*o, e1), ratio(*o, l))
            }
            Some(Err(err)) => (format!("failed: {err}"), dash(), dash(), dash()),
            None => (dash(), dash(), dash(), dash()),
        };
        println!(
            "| {} | {} | {o} | {} | {} | {} | {re} | {r1} | {rl} |",
            r.name,
            r.states,
            fmt(e),
            fmt(e1),
            fmt(l)
        );
    }
    println!(
        "\nGeometric mean of outlines/ours over {} cases: eager {:.1}x, one thread {:.1}x, lazy first mask {:.1}x.",
        r_eager.len(),
        geomean(&r_eager),
        geomean(&r_one),
        geomean(&r_lazy)
    );

    println!("\n### llguidance vs ours: schema text to first mask (median)\n");
    println!(
        "| case | DFA states | llguidance | ours | full DFA build (not paid) | llguidance/ours |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut r_first = Vec::new();
    for r in rows {
        let Some(ours) = r.ours_first_mask else {
            continue;
        };
        let (ll, rt) = match &r.ll_first_mask {
            Some(Ok(ll)) => {
                r_first.push(ll.as_secs_f64() / ours.as_secs_f64());
                (fmt(*ll), ratio(*ll, ours))
            }
            Some(Err(e)) => (format!("failed: {e}"), dash()),
            None => (dash(), dash()),
        };
        let dfa = r.dfa_build.map_or_else(dash, fmt);
        println!(
            "| {} | {} | {ll} | {} | {dfa} | {rt} |",
            r.name,
            r.dfa_states,
            fmt(ours)
        );
    }
    println!(
        "\nGeometric mean of llguidance/ours over {} cases: {:.1}x.",
        r_first.len(),
        geomean(&r_first)
    );

    println!(
        "\n### llguidance vs ours: per step (consume one token + next mask) along sampled documents\n"
    );
    println!(
        "| case | tokens/doc | llguidance mean | p99 | ours first visit mean | p99 | ours revisit mean | p99 | llguidance/ours mean (first visit) | llguidance/ours p99 (first visit) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let (mut all_ll, mut all_cold, mut all_warm) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        match &r.steps {
            Some(Ok(s)) => {
                all_ll.extend_from_slice(&s.ll);
                all_cold.extend_from_slice(&s.ours_cold);
                all_warm.extend_from_slice(&s.ours_warm);
                let note = match (s.untokenizable, s.ll_rejected) {
                    (0, 0) => String::new(),
                    (u, 0) => format!(" ({u} docs untokenizable)"),
                    (0, r) => format!(" ({r} docs refused by llguidance)"),
                    (u, r) => format!(" ({u} docs untokenizable, {r} refused by llguidance)"),
                };
                println!(
                    "| {}{note} | {} | {} | {} | {} | {} | {} | {} | {:.1}x | {:.1}x |",
                    r.name,
                    s.tokens,
                    fmt_ns(mean(&s.ll)),
                    fmt_ns(p99(&s.ll)),
                    fmt_ns(mean(&s.ours_cold)),
                    fmt_ns(p99(&s.ours_cold)),
                    fmt_ns(mean(&s.ours_warm)),
                    fmt_ns(p99(&s.ours_warm)),
                    mean(&s.ll) / mean(&s.ours_cold).max(1e-9),
                    p99(&s.ll) / p99(&s.ours_cold).max(1e-9),
                );
            }
            Some(Err(e)) => println!("| {} | failed: {e} | | | | | | | | |", r.name),
            None => {}
        }
    }
    println!(
        "| **all steps pooled** | | {} | {} | {} | {} | {} | {} | {:.1}x | {:.1}x |",
        fmt_ns(mean(&all_ll)),
        fmt_ns(p99(&all_ll)),
        fmt_ns(mean(&all_cold)),
        fmt_ns(p99(&all_cold)),
        fmt_ns(mean(&all_warm)),
        fmt_ns(p99(&all_warm)),
        mean(&all_ll) / mean(&all_cold).max(1e-9),
        p99(&all_ll) / p99(&all_cold).max(1e-9),
    );
}
