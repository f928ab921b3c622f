//! `cargo xtask schema-report`: how formwork-schema does on JSONSchemaBench.
//!
//! For every schema in `../shared/data/jsonschemabench/*.jsonl`:
//! - **coverage**: does it compile? Refusals are grouped by keyword.
//! - **soundness**: instances labelled invalid that the regex matches (serialized compactly,
//!   key order kept). Matches explained by a keyword the compiler reports as not enforced are
//!   counted on that keyword's line, the rest on the "enforced" line, whose target is 0.
//! - **completeness**: the share of instances labelled valid that the regex matches.
//! - **sampling**: documents drawn by a random walk over the compiled DFA, validated by the
//!   `jsonschema` crate with format validation on.
//! - compile time: median and p99 per file.
//!
//! And the same schemas in grammar mode (`formwork_grammar::json_schema`, with `--grammar`):
//! coverage, refusals by reason beside the regex mode's, lexemes whose DFA cannot be built
//! (the regex mode's counterpart: schemas whose whole regex cannot be determinized), soundness
//! and completeness with the grammar's recognizer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use formwork_grammar::{GrammarConfig, GrammarError, Symbol, json_schema};
use formwork_index::{ByteDfa, DfaConfig};
use formwork_schema::Compiler;
use serde_json::Value;

use crate::workspace_root;

#[derive(Default)]
struct FileStats {
    schemas: usize,
    compiles: Compiles,
    invalid_total: usize,
    unsound_enforced: usize,
    unsound_examples: Vec<String>,
    unsound_unenforced: BTreeMap<String, usize>,
    valid_total: usize,
    valid_matched: usize,
    valid_missed_examples: Vec<String>,
    samples: usize,
    sample_failures: usize,
    sample_failures_unenforced: usize,
    sample_examples: Vec<String>,
    dfa_skipped: usize,
    oracle_skipped: usize,
    grammar: GrammarStats,
}

/// How one mode's compiles went: counted, and the successful ones timed.
#[derive(Default)]
struct Compiles {
    compiled: usize,
    refusals: BTreeMap<String, usize>,
    panics: usize,
    times: Vec<Duration>,
}

impl Compiles {
    /// Runs `compile` on one schema, timed: a panic or a refusal (counted under
    /// `refusal`'s key) gives `None`.
    fn run<T, E>(
        &mut self,
        compile: impl FnOnce() -> Result<T, E>,
        refusal: impl FnOnce(&E) -> String,
    ) -> Option<T> {
        let t0 = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(compile));
        let elapsed = t0.elapsed();
        match result {
            Err(_) => {
                self.panics += 1;
                None
            }
            Ok(Err(e)) => {
                *self.refusals.entry(refusal(&e)).or_default() += 1;
                None
            }
            Ok(Ok(c)) => {
                self.compiled += 1;
                self.times.push(elapsed);
                Some(c)
            }
        }
    }

    fn merge(&mut self, b: Compiles) {
        self.compiled += b.compiled;
        for (k, v) in b.refusals {
            *self.refusals.entry(k).or_default() += v;
        }
        self.panics += b.panics;
        self.times.extend(b.times);
    }
}

/// Grammar mode's figures for one file.
#[derive(Default)]
struct GrammarStats {
    compiles: Compiles,
    /// Compiled schemas with a lexeme whose DFA cannot be built.
    automaton_failures: usize,
    automaton_examples: Vec<String>,
    lexemes: usize,
    largest_lexeme: usize,
    invalid_total: usize,
    unsound_enforced: usize,
    unsound_unenforced: usize,
    unsound_examples: Vec<String>,
    valid_total: usize,
    valid_matched: usize,
}

impl GrammarStats {
    fn merge(&mut self, b: GrammarStats) {
        self.compiles.merge(b.compiles);
        self.automaton_failures += b.automaton_failures;
        self.automaton_examples.extend(b.automaton_examples);
        self.lexemes += b.lexemes;
        self.largest_lexeme = self.largest_lexeme.max(b.largest_lexeme);
        self.invalid_total += b.invalid_total;
        self.unsound_enforced += b.unsound_enforced;
        self.unsound_unenforced += b.unsound_unenforced;
        self.unsound_examples.extend(b.unsound_examples);
        self.valid_total += b.valid_total;
        self.valid_matched += b.valid_matched;
    }
}

/// The reason a grammar-mode refusal is counted under.
fn grammar_refusal(e: &GrammarError) -> String {
    match e {
        GrammarError::Schema(e) => e.keyword().to_string(),
        GrammarError::Empty(_) => "unsatisfiable".into(),
        GrammarError::TooLarge { limit, .. } => format!("grammar {limit}"),
        other => format!("grammar: {other}"),
    }
}

/// Compiles `item`'s schema in grammar mode, builds every lexeme's DFA, and matches its
/// instances with the grammar's recognizer.
fn check_grammar(item: &Item, compiler: &Compiler, stats: &mut GrammarStats) {
    let Some(schema) = item.line.get("schema") else {
        return;
    };
    let id = item.line.get("id").and_then(Value::as_str).unwrap_or("?");
    let Some(compiled) = stats.compiles.run(
        || json_schema(schema, compiler, &GrammarConfig::default()),
        grammar_refusal,
    ) else {
        return;
    };
    let config = DfaConfig {
        max_states: 200_000,
        max_memory: 256 << 20,
    };
    // The lexemes a production uses (lowering leaves those of parts that match nothing out
    // of every production: no guide ever builds them).
    let g = &compiled.grammar;
    let mut used: Vec<u32> = g
        .productions()
        .iter()
        .flat_map(|p| p.rhs.iter())
        .filter_map(|s| match *s {
            Symbol::Lexeme(l) => Some(l),
            Symbol::Rule(_) => None,
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    stats.lexemes += g.lexemes().len();
    for l in g.lexemes() {
        stats.largest_lexeme = stats.largest_lexeme.max(l.regex().len());
    }
    let failed = used.iter().map(|&l| g.lexeme(l)).find_map(|l| {
        ByteDfa::with_config_hir(&l.hir, config)
            .err()
            .map(|e| format!("{id}: {e}: {}", truncate(&l.regex(), 120)))
    });
    if let Some(failure) = failed {
        stats.automaton_failures += 1;
        if stats.automaton_examples.len() < 5 {
            stats.automaton_examples.push(failure);
        }
    }
    let tests = item.line.get("tests").and_then(Value::as_array);
    for t in tests.into_iter().flatten() {
        let (Some(valid), Some(data)) = (t.get("valid").and_then(Value::as_bool), t.get("data"))
        else {
            continue;
        };
        let text = serde_json::to_string(data).unwrap_or_default();
        let m = compiled.grammar.matches(text.as_bytes()).unwrap_or(false);
        if valid {
            stats.valid_total += 1;
            stats.valid_matched += m as usize;
        } else {
            stats.invalid_total += 1;
            if m && compiled.unenforced.is_empty() {
                stats.unsound_enforced += 1;
                if stats.unsound_examples.len() < 5 {
                    stats
                        .unsound_examples
                        .push(format!("{id}: {}", truncate(&text, 160)));
                }
            } else if m {
                stats.unsound_unenforced += 1;
            }
        }
    }
}

struct Item {
    file: String,
    line: Value,
}

fn unenforced_key(k: &str) -> String {
    if k.starts_with("format:") {
        "format (unknown)".into()
    } else {
        k.to_string()
    }
}

fn check(item: &Item, samples: usize, compiler: &Compiler, stats: &mut FileStats) {
    let t_all = Instant::now();
    check_inner(item, samples, compiler, stats);
    if t_all.elapsed() > Duration::from_secs(3)
        && std::env::var_os("FORMWORK_REPORT_SLOW").is_some()
    {
        eprintln!(
            "slow: {} {:.1}s",
            item.line.get("id").and_then(Value::as_str).unwrap_or("?"),
            t_all.elapsed().as_secs_f64()
        );
    }
}

fn check_inner(item: &Item, samples: usize, compiler: &Compiler, stats: &mut FileStats) {
    let id = item
        .line
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    let Some(schema) = item.line.get("schema") else {
        return;
    };
    stats.schemas += 1;
    let Some(compiled) = stats.compiles.run(
        || compiler.compile_detailed(schema),
        |e| e.keyword().to_string(),
    ) else {
        return;
    };
    let mut unenforced: Vec<String> = compiled
        .unenforced
        .iter()
        .map(|u| unenforced_key(&u.keyword))
        .collect();
    unenforced.sort();
    unenforced.dedup();

    let matcher = regex_automata::meta::Builder::new()
        .configure(
            regex_automata::meta::Config::new()
                .nfa_size_limit(Some(512 << 20))
                .hybrid_cache_capacity(64 << 20),
        )
        .build(&format!("^(?:{})$", compiled.regex));
    let tests = item
        .line
        .get("tests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Ok(re) = &matcher {
        for t in &tests {
            let (Some(valid), Some(data)) =
                (t.get("valid").and_then(Value::as_bool), t.get("data"))
            else {
                continue;
            };
            let text = serde_json::to_string(data).unwrap_or_default();
            let m = re.is_match(&text);
            if valid {
                stats.valid_total += 1;
                stats.valid_matched += m as usize;
                if !m && stats.valid_missed_examples.len() < 3 {
                    stats
                        .valid_missed_examples
                        .push(format!("{id}: {}", truncate(&text, 200)));
                }
            } else {
                stats.invalid_total += 1;
                if m {
                    if unenforced.is_empty() {
                        stats.unsound_enforced += 1;
                        if stats.unsound_examples.len() < 5 {
                            stats
                                .unsound_examples
                                .push(format!("{id}: {}", truncate(&text, 160)));
                        }
                    } else {
                        for k in &unenforced {
                            *stats.unsound_unenforced.entry(k.clone()).or_default() += 1;
                        }
                    }
                }
            }
        }
    }
    if samples == 0 {
        return;
    }
    // Determinizing multi-megabyte regexes takes minutes; they are counted as skipped.
    if compiled.regex.len() > 64 << 10 {
        stats.dfa_skipped += 1;
        return;
    }
    let config = DfaConfig {
        max_states: 200_000,
        max_memory: 256 << 20,
    };
    let dfa = match ByteDfa::with_config(&compiled.regex, config) {
        Ok(d) => d,
        Err(_) => {
            stats.dfa_skipped += 1;
            return;
        }
    };
    let validator = match jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
    {
        Ok(v) => v,
        Err(_) => {
            stats.oracle_skipped += 1;
            return;
        }
    };
    for seed in 0..samples as u64 {
        let doc = dfa.sample(seed, 256);
        stats.samples += 1;
        let ok = std::str::from_utf8(&doc)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .is_some_and(|v| validator.is_valid(&v));
        if !ok {
            if unenforced.is_empty() {
                stats.sample_failures += 1;
                if stats.sample_examples.len() < 5 {
                    stats.sample_examples.push(format!(
                        "{id}: {}",
                        truncate(&String::from_utf8_lossy(&doc), 160)
                    ));
                }
            } else {
                stats.sample_failures_unenforced += 1;
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn percentile(times: &mut [Duration], p: f64) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    times.sort();
    let i = ((times.len() - 1) as f64 * p).round() as usize;
    times[i].as_secs_f64() * 1000.0
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * a as f64 / b as f64)
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let mut out_file = None;
    let mut misses = false;
    let mut compiler = Compiler::new();
    let mut only: Option<Vec<String>> = None;
    let mut samples = 5usize;
    let mut grammar = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out_file = it.next().cloned(),
            "--files" => only = it.next().map(|s| s.split(',').map(String::from).collect()),
            "--misses" => misses = true,
            "--grammar" => grammar = true,
            "--open-objects" => compiler = compiler.open_objects(true),
            "--samples" => samples = it.next().and_then(|s| s.parse().ok()).unwrap_or(5),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let dir = workspace_root().join("../shared/data/jsonschemabench");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut items = Vec::new();
    for f in &files {
        let name = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        if only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line: Value =
                serde_json::from_str(line).with_context(|| format!("a line of {name}"))?;
            items.push(Item {
                file: name.clone(),
                line,
            });
        }
    }
    let stats: Mutex<BTreeMap<String, FileStats>> = Mutex::new(BTreeMap::new());
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let mut local = FileStats::default();
                    check(item, samples, &compiler, &mut local);
                    if grammar {
                        check_grammar(item, &compiler, &mut local.grammar);
                    }
                    merge_into(
                        stats
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(item.file.clone())
                            .or_default(),
                        local,
                    );
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if d.is_multiple_of(500) {
                        eprintln!(
                            "{d}/{} schemas, {:.0}s",
                            items.len(),
                            start.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    let mut stats = stats.into_inner().unwrap_or_else(|e| e.into_inner());
    if misses {
        for (name, s) in &stats {
            for e in &s.valid_missed_examples {
                eprintln!("valid not matched [{name}] {e}");
            }
        }
    }
    let mut report = render_grammar(&mut stats, grammar);
    report.insert_str(0, &render(&mut stats, samples));
    print!("{report}");
    if let Some(path) = out_file {
        std::fs::write(&path, &report).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

fn merge_into(a: &mut FileStats, b: FileStats) {
    a.schemas += b.schemas;
    a.compiles.merge(b.compiles);
    a.invalid_total += b.invalid_total;
    a.unsound_enforced += b.unsound_enforced;
    a.unsound_examples.extend(b.unsound_examples);
    for (k, v) in b.unsound_unenforced {
        *a.unsound_unenforced.entry(k).or_default() += v;
    }
    a.valid_total += b.valid_total;
    a.valid_matched += b.valid_matched;
    a.valid_missed_examples.extend(b.valid_missed_examples);
    a.samples += b.samples;
    a.sample_failures += b.sample_failures;
    a.sample_failures_unenforced += b.sample_failures_unenforced;
    a.sample_examples.extend(b.sample_examples);
    a.dfa_skipped += b.dfa_skipped;
    a.oracle_skipped += b.oracle_skipped;
    a.grammar.merge(b.grammar);
}

/// The grammar mode's tables (nothing without `--grammar`); call before [`render`], which
/// empties the stats.
fn render_grammar(stats: &mut BTreeMap<String, FileStats>, grammar: bool) -> String {
    let mut r = String::new();
    if !grammar {
        return r;
    }
    let _ = writeln!(
        r,
        "\n## Grammar mode\n\n| file | schemas | regex: compiled | regex: no automaton | grammar: compiled | grammar: lexeme automaton failures | lexemes | invalid matched (enforced) | invalid matched (not enforced) | valid matched | completeness | grammar compile median ms | p99 ms |"
    );
    let _ = writeln!(
        r,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut total = FileStats::default();
    for (name, s) in stats.iter_mut() {
        r.push_str(&grammar_row(name, s));
        total.schemas += s.schemas;
        total.compiles.compiled += s.compiles.compiled;
        total.dfa_skipped += s.dfa_skipped;
        for (k, v) in &s.compiles.refusals {
            *total.compiles.refusals.entry(k.clone()).or_default() += v;
        }
        total.grammar.merge(std::mem::take(&mut s.grammar));
    }
    r.push_str(&grammar_row("**total**", &mut total));
    let g = &total.grammar;
    let _ = writeln!(
        r,
        "\n{} lexemes in all, the longest {} bytes of regex. Panics: {}.",
        g.lexemes, g.largest_lexeme, g.compiles.panics
    );
    let _ = writeln!(
        r,
        "\n### Refusals by reason, regex mode and grammar mode\n\n| reason | regex mode | grammar mode |\n|---|---:|---:|"
    );
    let mut reasons: Vec<&String> = total
        .compiles
        .refusals
        .keys()
        .chain(g.compiles.refusals.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let count = |m: &BTreeMap<String, usize>, k: &str| m.get(k).copied().unwrap_or(0);
    reasons.sort_by_key(|k| {
        std::cmp::Reverse(count(&total.compiles.refusals, k) + count(&g.compiles.refusals, k))
    });
    for k in reasons {
        let _ = writeln!(
            r,
            "| `{k}` | {} | {} |",
            count(&total.compiles.refusals, k),
            count(&g.compiles.refusals, k)
        );
    }
    for e in g.automaton_examples.iter().take(10) {
        let _ = writeln!(r, "- lexeme automaton failed: `{e}`");
    }
    for e in g.unsound_examples.iter().take(10) {
        let _ = writeln!(r, "- invalid matched by the grammar: `{e}`");
    }
    r
}

/// One line of the grammar-mode table.
fn grammar_row(name: &str, s: &mut FileStats) -> String {
    let g = &mut s.grammar;
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {} | {:.2} | {:.2} |\n",
        s.schemas,
        s.compiles.compiled,
        s.dfa_skipped,
        g.compiles.compiled,
        g.automaton_failures,
        g.lexemes,
        g.unsound_enforced,
        g.invalid_total,
        g.unsound_unenforced,
        g.valid_matched,
        g.valid_total,
        pct(g.valid_matched, g.valid_total),
        percentile(&mut g.compiles.times, 0.5),
        percentile(&mut g.compiles.times, 0.99)
    )
}

fn render(stats: &mut BTreeMap<String, FileStats>, samples: usize) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "| file | schemas | compiled | coverage | invalid matched (enforced) | invalid matched (not enforced) | valid matched | completeness | samples | sample failures (enforced) | sample failures (not enforced) | compile median ms | compile p99 ms |"
    );
    let _ = writeln!(
        r,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut total = FileStats::default();
    for (name, s) in stats.iter_mut() {
        let unenforced: usize = s.unsound_unenforced.values().sum();
        let _ = writeln!(
            r,
            "| {name} | {} | {} | {} | {} / {} | {} | {} / {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            s.schemas,
            s.compiles.compiled,
            pct(s.compiles.compiled, s.schemas),
            s.unsound_enforced,
            s.invalid_total,
            unenforced,
            s.valid_matched,
            s.valid_total,
            pct(s.valid_matched, s.valid_total),
            s.samples,
            s.sample_failures,
            s.sample_failures_unenforced,
            percentile(&mut s.compiles.times, 0.5),
            percentile(&mut s.compiles.times, 0.99)
        );
        merge_into(&mut total, std::mem::take(s));
    }
    let unenforced: usize = total.unsound_unenforced.values().sum();
    let _ = writeln!(
        r,
        "| **total** | {} | {} | {} | {} / {} | {} | {} / {} | {} | {} | {} | {} | {:.2} | {:.2} |",
        total.schemas,
        total.compiles.compiled,
        pct(total.compiles.compiled, total.schemas),
        total.unsound_enforced,
        total.invalid_total,
        unenforced,
        total.valid_matched,
        total.valid_total,
        pct(total.valid_matched, total.valid_total),
        total.samples,
        total.sample_failures,
        total.sample_failures_unenforced,
        percentile(&mut total.compiles.times, 0.5),
        percentile(&mut total.compiles.times, 0.99)
    );
    let _ = writeln!(
        r,
        "\nSamples: {samples} per compiled schema; {} schemas not sampled because their regex exceeds 64 KiB or their DFA 50k states, {} because the `jsonschema` crate cannot build a validator for them. Panics: {}.",
        total.dfa_skipped, total.oracle_skipped, total.compiles.panics
    );
    let _ = writeln!(
        r,
        "\n### Refusals by keyword\n\n| keyword | schemas |\n|---|---:|"
    );
    let mut refusals: Vec<_> = total.compiles.refusals.iter().collect();
    refusals.sort_by(|a, b| b.1.cmp(a.1));
    for (k, v) in refusals {
        let _ = writeln!(r, "| `{k}` | {v} |");
    }
    let _ = writeln!(
        r,
        "\n### Invalid instances matched, by keyword not enforced\n\n| keyword | invalid instances matched |\n|---|---:|"
    );
    for (k, v) in &total.unsound_unenforced {
        let _ = writeln!(r, "| `{k}` | {v} |");
    }
    if !total.unsound_examples.is_empty() || !total.sample_examples.is_empty() {
        let _ = writeln!(r, "\n### Examples of failures\n");
        for e in total.unsound_examples.iter().take(20) {
            let _ = writeln!(r, "- invalid matched: `{e}`");
        }
        for e in total.sample_examples.iter().take(20) {
            let _ = writeln!(r, "- bad sample: `{e}`");
        }
    }
    r
}
