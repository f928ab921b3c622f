//! `formwork bench`: time to first token and decode speed of the engine on a model, for
//! unconstrained, JSON-Schema (new, then cached; and a new large one of 49 properties),
//! regex and grammar requests, with 1 and with N concurrent sequences, each case run
//! `--repetitions` times in turn with the others (a new schema every time for the "new"
//! cases), plus an unconstrained run as long as the JSON
//! documents (decode speed falls as the context grows, so that is the JSON rows' baseline),
//! and free text under segments whose trigger never comes (its ratio to the unconstrained
//! decode speed is printed under the table), and jump-forward decoding: the 10-property
//! schema and a forced tool call, each run without and with it side by side, in output
//! characters per second (ratios printed under the table, every output validated).
//! Prints a markdown table of the medians (the one in docs/performance.md), under a header
//! naming the backend, the CPU kernels picked at run time and the threads.
//!
//! With `--prompt-tokens`/`--gen-tokens` it measures the forward pass alone instead, as
//! llama-bench does: a fixed prompt prefilled in one pass, then greedy decode with EOS ignored,
//! a warm-up run, the median of 3; one JSON line
//! `{"prefill_tok_s":..,"decode_tok_s":..,"peak_rss_mb":..,"cpu_kernels":..}`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use formwork_engine::{
    Constraint, Engine, EngineConfig, GrammarSyntax, JsonSchema, Outside, Prompt, Request, Segment,
    Segments, ToolFunction, Usage,
};
use formwork_sampler::SamplingParams;
use formwork_template::Message;
use serde_json::json;

use crate::CliError;

/// Arguments of `formwork bench`.
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// A GGUF file or a Hugging Face model folder.
    #[arg(long)]
    model: PathBuf,
    /// Tokens to generate per unconstrained request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    sequences: Vec<usize>,
    /// Measure the forward pass alone: prefill a prompt of this many tokens...
    #[arg(long)]
    prompt_tokens: Option<usize>,
    /// ...then decode this many tokens one by one (default 256 with --prompt-tokens).
    #[arg(long)]
    gen_tokens: Option<usize>,
    /// Threads per forward pass (default: FORMWORK_THREADS, else CANDLE_NUM_THREADS, else every
    /// core).
    #[arg(long)]
    threads: Option<usize>,
    /// Runs of each case to take the median of (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    #[command(flatten)]
    load: crate::cli_serve::LoadArgs,
}

/// The 10-property schema of the bench; `salt` (a prefix of the `id` pattern) makes it new to
/// the index cache.
fn schema(salt: u64) -> serde_json::Value {
    json!({
        "type": "object",
        "description": format!("bench schema {salt}"),
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "status": {"enum": ["active", "inactive", "pending"]},
            "created": {"type": "string", "format": "date"},
            "email": {"type": "string", "format": "email"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "score": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
            "active": {"type": "boolean"},
            "city": {"type": "string", "maxLength": 20},
            "id": {"type": "string", "pattern": format!("^{:x}-[a-f0-9]{{6}}$", salt % (1 << 24))}
        },
        "required": ["name", "status", "created", "email", "age", "score", "tags", "active", "city", "id"]
    })
}

/// A large schema (48 properties of six kinds: long strings, enums, integer ranges, nested
/// objects, arrays of objects, emails; half of them required, all in one closed object), new
/// to the index cache for each `salt`: what a large real schema costs before its first token.
fn large_schema(salt: u64) -> serde_json::Value {
    let nested = json!({
        "type": "object",
        "properties": {
            "label": {"type": "string", "maxLength": 64},
            "weight": {"type": "number"},
            "enabled": {"type": "boolean"},
            "kind": {"enum": ["alpha", "beta", "gamma", "delta"]},
            "since": {"type": "string", "format": "date"}
        },
        "required": ["label", "kind"]
    });
    let mut properties = serde_json::Map::new();
    for i in 0..48u64 {
        let value = match i % 6 {
            0 => json!({"type": "string", "maxLength": 256}),
            1 => json!({"enum": (0..5).map(|j| format!("choice {i}.{j}")).collect::<Vec<_>>()}),
            2 => json!({"type": "integer", "minimum": i, "maximum": 1000 + i * 37}),
            3 => nested.clone(),
            4 => json!({"type": "array", "items": nested.clone(), "maxItems": 4}),
            _ => json!({"type": "string", "format": "email"}),
        };
        properties.insert(format!("field_{i}"), value);
    }
    properties.insert(
        "key".into(),
        json!({"type": "string", "pattern": format!("^{:x}-[a-f0-9]{{6}}$", salt % (1 << 24))}),
    );
    let required: Vec<String> = (0..48).step_by(2).map(|i| format!("field_{i}")).collect();
    json!({
        "type": "object",
        "description": format!("large bench schema {salt}"),
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

/// The recursive grammar of the bench: a list of 16 to 60 items, each a number, a string or
/// a list nested freely (at least 16 items, so a reply is long enough to time decoding).
const NESTED_LISTS: &str = r#"
start: "[" item ("," item) ~ 15..59 "]"
?item: list | NUMBER | ESCAPED_STRING
list: "[" [item ("," item)*] "]"
%import common.NUMBER
%import common.ESCAPED_STRING
"#;

struct Row {
    case: String,
    sequences: usize,
    ttft: Duration,
    per_seq_tok_s: f64,
    aggregate_tok_s: f64,
    tokens: usize,
}

/// One run of a case: `sequences` requests at once. Returns each one's usage and text, and
/// the wall time. `jump_forward`: `None` for the engine's default.
fn run_case(
    engine: &Engine,
    sequences: usize,
    max_tokens: usize,
    constraint: impl Fn(usize) -> Option<Constraint>,
    jump_forward: Option<bool>,
) -> Result<(Vec<Usage>, Vec<String>, Duration), CliError> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..sequences {
        let mut r = Request::new(Prompt::Chat {
            messages: vec![
                Message::system("You are a helpful assistant."),
                Message::user(format!("Describe person number {i} in detail.")),
            ],
            tools: vec![],
            template_kwargs: Default::default(),
        });
        r.sampling = SamplingParams {
            temperature: 0.8,
            seed: Some(i as u64),
            ..SamplingParams::default()
        };
        r.max_tokens = Some(max_tokens);
        r.constraint = constraint(i);
        r.ignore_eos = true;
        r.jump_forward = jump_forward;
        handles.push(
            engine
                .submit(r)
                .map_err(|e| CliError::Input(e.to_string()))?,
        );
    }
    let mut usages = Vec::new();
    let mut texts = Vec::new();
    for h in handles {
        let mut c = h
            .blocking_collect()
            .map_err(|e| CliError::Other(e.into()))?;
        usages.push(c.usage);
        texts.push(c.texts.pop().unwrap_or_default());
    }
    Ok((usages, texts, start.elapsed()))
}

fn row(case: &str, sequences: usize, usages: &[Usage], wall: Duration) -> Row {
    let n = usages.len().max(1) as f64;
    let ttft = usages
        .iter()
        .map(|u| u.time_to_first_token)
        .sum::<Duration>()
        / usages.len().max(1) as u32;
    let per_seq = usages
        .iter()
        .map(Usage::decode_tokens_per_second)
        .sum::<f64>()
        / n;
    let tokens: usize = usages.iter().map(|u| u.completion_tokens).sum();
    // Aggregate: tokens after the first of each sequence, over the time after the first token.
    let first = usages
        .iter()
        .map(|u| u.time_to_first_token)
        .min()
        .unwrap_or_default();
    let decode_wall = wall.saturating_sub(first).as_secs_f64();
    let aggregate = if decode_wall > 0.0 {
        tokens.saturating_sub(usages.len()) as f64 / decode_wall
    } else {
        0.0
    };
    Row {
        case: case.to_string(),
        sequences,
        ttft,
        per_seq_tok_s: per_seq,
        aggregate_tok_s: aggregate,
        tokens,
    }
}

/// The medians of several runs of one case.
fn median_row(runs: Vec<Row>) -> Row {
    let pick = |f: fn(&Row) -> f64| median(runs.iter().map(f).collect());
    Row {
        case: runs[0].case.clone(),
        sequences: runs[0].sequences,
        ttft: Duration::from_secs_f64(pick(|r| r.ttft.as_secs_f64())),
        per_seq_tok_s: pick(|r| r.per_seq_tok_s),
        aggregate_tok_s: pick(|r| r.aggregate_tok_s),
        tokens: pick(|r| r.tokens as f64).round() as usize,
    }
}

/// The peak resident memory of this process in MiB (Linux `VmHWM`), if known.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// `--prompt-tokens`: prefill and decode speed of the forward pass, like llama-bench.
fn run_forward(
    model: &formwork_model::LoadedModel,
    prompt_tokens: usize,
    gen_tokens: usize,
    repetitions: usize,
) -> Result<(), CliError> {
    use formwork_model::BatchItem;
    let m = &model.model;
    let vocab = model.info.vocab_size as u32;
    if prompt_tokens == 0 || prompt_tokens + gen_tokens > model.info.context_length {
        return Err(CliError::Input(format!(
            "--prompt-tokens {prompt_tokens} plus --gen-tokens {gen_tokens} must be positive and \
             fit the context of {} tokens",
            model.info.context_length
        )));
    }
    // A fixed prompt of ordinary tokens (no specials), the same on every run.
    let prompt: Vec<u32> = (0..prompt_tokens as u32)
        .map(|i| 300 + (i * 7919) % (vocab.saturating_sub(400).max(1)))
        .collect();
    let err = |e: formwork_model::ModelError| CliError::Other(e.into());
    let once = |steps: usize| -> Result<(f64, f64), CliError> {
        let mut greedy = formwork_sampler::Sampler::new(
            SamplingParams::greedy(),
            model.info.vocab_size,
            &prompt,
        )
        .map_err(|e| CliError::Other(e.into()))?;
        let mut pick = |logits: &mut [f32]| {
            greedy
                .sample(logits, None)
                .map(|s| s.token)
                .map_err(|e| CliError::Other(e.into()))
        };
        let mut cache = m.new_cache();
        let t = Instant::now();
        let mut logits = m
            .forward(&mut [BatchItem {
                tokens: &prompt,
                cache: &mut cache,
            }])
            .map_err(err)?;
        let prefill = t.elapsed().as_secs_f64();
        let mut next = pick(&mut logits[0])?;
        let t = Instant::now();
        for _ in 0..steps {
            let mut logits = m
                .forward(&mut [BatchItem {
                    tokens: &[next],
                    cache: &mut cache,
                }])
                .map_err(err)?;
            next = pick(&mut logits[0])?;
        }
        let decode = t.elapsed().as_secs_f64();
        Ok((
            prompt_tokens as f64 / prefill,
            steps as f64 / decode.max(1e-9),
        ))
    };
    once(gen_tokens.min(16))?;
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for _ in 0..repetitions.max(1) {
        let (p, d) = once(gen_tokens)?;
        prefill.push(p);
        decode.push(d);
    }
    println!(
        "{}",
        json!({
            "prefill_tok_s": (median(prefill) * 10.0).round() / 10.0,
            "decode_tok_s": (median(decode) * 10.0).round() / 10.0,
            "peak_rss_mb": peak_rss_mb().map(|x| x.round()),
            "prompt_tokens": prompt_tokens,
            "gen_tokens": gen_tokens,
            "threads": m.threads(),
            "backend": m.backend_name(),
            "cpu_kernels": m.cpu_kernels().map(formwork_model::CpuKernels::name),
        })
    );
    Ok(())
}

pub(crate) fn run(args: BenchArgs) -> Result<(), CliError> {
    if args.threads == Some(0) {
        return Err(CliError::Input("--threads must be at least 1".into()));
    }
    let mut options = args.load.options(formwork_model::Device::Cpu);
    options.threads = args.threads;
    let model = formwork_model::load_with(&args.model, &options)
        .map_err(|e| CliError::Input(e.to_string()))?;
    if args.prompt_tokens.is_some() || args.gen_tokens.is_some() {
        return run_forward(
            &model,
            args.prompt_tokens.unwrap_or(512),
            args.gen_tokens.unwrap_or(256),
            args.repetitions,
        );
    }
    let header = format!(
        "{} backend, CPU kernels: {}, threads: {}",
        model.model.backend_name(),
        crate::cli_serve::kernels_name(model.model.cpu_kernels()),
        model
            .model
            .threads()
            .map_or_else(|| "candle's".to_string(), |t| t.to_string()),
    );
    let engine =
        Engine::new(model, EngineConfig::default()).map_err(|e| CliError::Input(e.to_string()))?;
    // Warm up: first-touch page faults and thread pools.
    run_case(&engine, 1, 8, |_| None, None)?;
    let regex = r"\(\d{3}\) \d{3}-\d{4}, [A-Z][a-z]{2,12} [A-Z][a-z]{2,12}, (19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d)";
    let mut rows = Vec::new();
    let mut salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let repetitions = args.repetitions.max(1);
    let mut ratios = Vec::new();
    let jump_cases = jump_cases()?;
    let mut jumps = Vec::new();
    for &n in &args.sequences {
        let mut runs: [Vec<Row>; 8] = Default::default();
        let mut jump_runs: Vec<Vec<(JumpRun, JumpRun)>> = vec![Vec::new(); jump_cases.len()];
        let constrained = args.max_tokens * 4;
        for _ in 0..repetitions {
            // Runs case `i` and keeps its row; returns the mean completion length.
            let mut case = |i: usize, name: &str, max_tokens: usize, c: Option<Constraint>| {
                let (u, _, w) = run_case(&engine, n, max_tokens, |_| c.clone(), None)?;
                runs[i].push(row(name, n, &u, w));
                Ok::<_, CliError>(u.iter().map(|u| u.completion_tokens).sum::<usize>() / n.max(1))
            };
            case(0, "unconstrained", args.max_tokens, None)?;
            // Right after its baseline, so the machine's drift between cases weighs less.
            case(
                6,
                "segments, never triggered (free text)",
                args.max_tokens,
                Some(untriggered()),
            )?;
            salt += 1;
            let json = Some(Constraint::JsonSchema(formwork_engine::JsonSchema::new(
                schema(salt),
            )));
            let json_tokens = case(
                1,
                "json schema, new (10 properties)",
                constrained,
                json.clone(),
            )?;
            case(2, "json schema, cached", constrained, json)?;
            let large = Some(Constraint::JsonSchema(formwork_engine::JsonSchema::new(
                large_schema(salt),
            )));
            case(
                7,
                "json schema, new (large: 49 properties, nested)",
                constrained,
                large,
            )?;
            // Decode speed falls as the context grows: the constrained runs' baseline is an
            // unconstrained run of the same length.
            case(
                3,
                "unconstrained, as long as the JSON",
                json_tokens.max(1),
                None,
            )?;
            case(
                4,
                "regex",
                constrained,
                Some(Constraint::Regex(regex.into())),
            )?;
            case(
                5,
                "grammar (Lark, nested lists of 16+ items)",
                constrained,
                Some(Constraint::Grammar {
                    syntax: GrammarSyntax::Lark,
                    text: NESTED_LISTS.into(),
                }),
            )?;
            for (case, runs) in jump_cases.iter().zip(&mut jump_runs) {
                // Without, then with: side by side, so drift weighs on both alike.
                let without = case.run(&engine, n, constrained * 2, false)?;
                let with = case.run(&engine, n, constrained * 2, true)?;
                runs.push((without, with));
            }
        }
        for (case, runs) in jump_cases.iter().zip(jump_runs) {
            jumps.push((case.name, n, runs));
        }
        // Each repetition's ratio to the baseline run just before it.
        let mut per_run: Vec<f64> = runs[6]
            .iter()
            .zip(&runs[0])
            .map(|(seg, base)| seg.per_seq_tok_s / base.per_seq_tok_s)
            .collect();
        per_run.sort_by(f64::total_cmp);
        let medians: Vec<Row> = runs.into_iter().map(median_row).collect();
        ratios.push((
            n,
            medians[6].per_seq_tok_s / medians[0].per_seq_tok_s,
            per_run,
        ));
        rows.extend(medians);
    }
    println!("Medians of {repetitions} runs per case ({header}).\n");
    println!(
        "| case | sequences | TTFT mean (ms) | decode tok/s per sequence | aggregate tok/s | tokens |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} |",
            r.case,
            r.sequences,
            r.ttft.as_secs_f64() * 1e3,
            r.per_seq_tok_s,
            r.aggregate_tok_s,
            r.tokens
        );
    }
    println!();
    for (n, ratio, per_run) in ratios {
        let (mid, p90, worst) = spread(per_run.clone());
        println!(
            "Free text under segments that never trigger, {n} sequence(s): {:.1}% of the unconstrained decode tok/s per sequence (medians); per repetition: median {:.1}%, p90 {:.1}%, worst {:.1}% over {} runs.",
            ratio * 100.0,
            mid * 100.0,
            p90 * 100.0,
            worst * 100.0,
            per_run.len()
        );
    }
    for (name, n, runs) in jumps {
        let without = median(runs.iter().map(|r| r.0.chars_per_s).collect());
        let with = median(runs.iter().map(|r| r.1.chars_per_s).collect());
        let (mid, p90, worst) = spread(
            runs.iter()
                .map(|(a, b)| b.chars_per_s / a.chars_per_s)
                .collect(),
        );
        let total = |f: fn(&JumpRun) -> usize, with: bool| {
            runs.iter()
                .map(|r| f(if with { &r.1 } else { &r.0 }))
                .sum::<usize>()
        };
        println!(
            "Jump-forward, {name}, {n} sequence(s): {without:.0} -> {with:.0} output chars/s per sequence (medians), {:.2}x; per repetition: median {mid:.2}x, p90 {p90:.2}x, worst {worst:.2}x over {} runs; {} of {} tokens forced; valid outputs {}/{} without, {}/{} with.",
            with / without,
            runs.len(),
            total(|r| r.forced, true),
            total(|r| r.tokens, true),
            total(|r| r.valid, false),
            total(|r| r.outputs, false),
            total(|r| r.valid, true),
            total(|r| r.outputs, true),
        );
    }
    Ok(())
}

/// The median, the 90th percentile on the slow side (the 10th of the ratios: slowest first)
/// and the worst of per-repetition ratios.
fn spread(mut per_run: Vec<f64>) -> (f64, f64, f64) {
    per_run.sort_by(f64::total_cmp);
    (
        median(per_run.clone()),
        per_run[per_run.len() / 10],
        per_run[0],
    )
}

/// A case run without and with jump-forward decoding: a JSON Schema with fixed keys, and the
/// oracle its outputs are checked with.
struct JumpCase {
    name: &'static str,
    constraint: Constraint,
    validator: jsonschema::Validator,
}

/// What one run of a [`JumpCase`] gave.
#[derive(Clone, Copy)]
struct JumpRun {
    /// Output characters per second of decoding (after the first token), mean over sequences.
    chars_per_s: f64,
    /// Outputs that are valid documents, of `outputs`.
    valid: usize,
    outputs: usize,
    /// Forced tokens, of `tokens` generated.
    forced: usize,
    tokens: usize,
}

/// The jump-forward cases: the 10-property schema and a forced tool call.
fn jump_cases() -> Result<Vec<JumpCase>, CliError> {
    let event = ToolFunction {
        name: "create_event".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 40},
                "date": {"type": "string", "format": "date"},
                "location": {"type": "string", "maxLength": 30},
                "attendees": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
                "all_day": {"type": "boolean"}
            },
            "required": ["title", "date", "location", "attendees", "all_day"]
        }),
        strict: true,
    };
    let call = formwork_engine::tool_call_schema(&[event], false)
        .map_err(|e| CliError::Other(e.into()))?;
    [("10-property schema", schema(0)), ("tool call", call)]
        .into_iter()
        .map(|(name, schema)| {
            let validator = jsonschema::validator_for(&schema)
                .map_err(|e| CliError::Other(anyhow::anyhow!("{name}: {e}")))?;
            Ok(JumpCase {
                name,
                constraint: Constraint::JsonSchema(JsonSchema::new(schema)),
                validator,
            })
        })
        .collect()
}

impl JumpCase {
    /// One run without or with jump-forward decoding.
    fn run(
        &self,
        engine: &Engine,
        sequences: usize,
        max_tokens: usize,
        jump: bool,
    ) -> Result<JumpRun, CliError> {
        let (usages, texts, _) = run_case(
            engine,
            sequences,
            max_tokens,
            |_| Some(self.constraint.clone()),
            Some(jump),
        )?;
        let rates: Vec<f64> = usages
            .iter()
            .zip(&texts)
            .filter(|(u, _)| u.decode_time > Duration::ZERO)
            .map(|(u, t)| t.chars().count() as f64 / u.decode_time.as_secs_f64())
            .collect();
        let valid = texts
            .iter()
            .filter(|t| {
                serde_json::from_str::<serde_json::Value>(t)
                    .is_ok_and(|doc| self.validator.is_valid(&doc))
            })
            .count();
        Ok(JumpRun {
            chars_per_s: rates.iter().sum::<f64>() / rates.len().max(1) as f64,
            valid,
            outputs: texts.len(),
            forced: usages.iter().map(|u| u.forced_tokens).sum(),
            tokens: usages.iter().map(|u| u.completion_tokens).sum(),
        })
    }
}

/// Segments whose trigger the bench's replies never write: a structural tag over free text,
/// so the case measures what composing costs while nothing is constrained.
fn untriggered() -> Constraint {
    Constraint::Segments(Segments {
        prelude: None,
        segments: vec![Segment {
            begin: "<answer>".into(),
            body: Constraint::JsonSchema(JsonSchema::new(json!({"type": "integer"}))),
            end: "</answer>".into(),
        }],
        triggers: vec![],
        outside: Outside::Free,
        max_segments: None,
    })
}
