//! `formwork bench`: time to first token and decode speed of the engine on a model, for
//! unconstrained, JSON-Schema (new, then cached) and regex requests, with 1 and with N
//! concurrent sequences. Prints a markdown table (the one in docs/performance.md).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use formwork_engine::{Constraint, Engine, EngineConfig, Prompt, Request, Usage};
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
}

/// The 10-property schema of the bench; `salt` makes it new to the index cache.
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
            "id": {"type": "string", "pattern": format!("^[a-f0-9]{{{}}}$", 6 + salt % 3)}
        },
        "required": ["name", "status", "created", "email", "age", "score", "tags", "active", "city", "id"]
    })
}

struct Row {
    case: String,
    sequences: usize,
    ttft: Duration,
    per_seq_tok_s: f64,
    aggregate_tok_s: f64,
    tokens: usize,
}

fn run_case(
    engine: &Engine,
    sequences: usize,
    max_tokens: usize,
    constraint: impl Fn(usize) -> Option<Constraint>,
) -> Result<(Vec<Usage>, Duration), CliError> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..sequences {
        let mut r = Request::new(Prompt::Chat {
            messages: vec![
                Message::system("You are a helpful assistant."),
                Message::user(format!("Describe person number {i} in detail.")),
            ],
            tools: vec![],
        });
        r.sampling = SamplingParams {
            temperature: 0.8,
            seed: Some(i as u64),
            ..SamplingParams::default()
        };
        r.max_tokens = Some(max_tokens);
        r.constraint = constraint(i);
        r.ignore_eos = r.constraint.is_none();
        handles.push(
            engine
                .submit(r)
                .map_err(|e| CliError::Input(e.to_string()))?,
        );
    }
    let mut usages = Vec::new();
    for h in handles {
        let c = h
            .blocking_collect()
            .map_err(|e| CliError::Other(e.into()))?;
        usages.push(c.usage);
    }
    Ok((usages, start.elapsed()))
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

pub(crate) fn run(args: BenchArgs) -> Result<(), CliError> {
    let model = formwork_model::load(&args.model, &formwork_model::Device::Cpu)
        .map_err(|e| CliError::Input(e.to_string()))?;
    let engine =
        Engine::new(model, EngineConfig::default()).map_err(|e| CliError::Input(e.to_string()))?;
    // Warm up: first-touch page faults and thread pools.
    run_case(&engine, 1, 8, |_| None)?;
    let regex = r"\(\d{3}\) \d{3}-\d{4}, [A-Z][a-z]{2,12} [A-Z][a-z]{2,12}, (19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d)";
    let mut rows = Vec::new();
    let mut salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    for &n in &args.sequences {
        let (u, w) = run_case(&engine, n, args.max_tokens, |_| None)?;
        rows.push(row("unconstrained", n, &u, w));
        salt += 1;
        let s = schema(salt);
        let (u, w) = run_case(&engine, n, args.max_tokens * 4, |_| {
            Some(Constraint::JsonSchema(s.clone()))
        })?;
        rows.push(row("json schema, new (10 properties)", n, &u, w));
        let (u, w) = run_case(&engine, n, args.max_tokens * 4, |_| {
            Some(Constraint::JsonSchema(s.clone()))
        })?;
        rows.push(row("json schema, cached", n, &u, w));
        let (u, w) = run_case(&engine, n, args.max_tokens * 4, |_| {
            Some(Constraint::Regex(regex.into()))
        })?;
        rows.push(row("regex", n, &u, w));
    }
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
    Ok(())
}
