//! `formwork generate`: one chat reply from a model, optionally constrained, on stdout.
//!
//! The reply is rendered through the model's own chat template (or `--chat-template`); the
//! generated text alone goes to stdout (streamed with `--stream`), and one JSON line with the
//! finish reason, token counts, time to first token and decode speed goes last to stderr. A
//! reasoning model's reasoning (`--reasoning-parser`, detected by default) goes to stderr:
//! between `[reasoning]` and `[/reasoning]` lines before the answer, or streamed as it
//! comes with `--stream`.
//!
//! With `--tools FILE` (a JSON array of OpenAI tool objects) the tools are rendered into the
//! prompt by the chat template, and the reply is read for calls by the engine
//! ([`formwork_engine::tools::ReplyReader`]): `--tool-choice auto` (the default) lets the
//! model answer or call, each call it opens constrained to a declared function
//! ([`formwork_engine::Request::auto_tools`]); `required` or a function's name constrains
//! the whole reply to a call ([`Constraint::ToolCall`]), `none` reads no calls. stdout then
//! holds JSON lines: `{"content": TEXT}` for the text and `{"tool_call": {"id", "name",
//! "arguments"}}` per call; with `--stream`, `{"content": PIECE}` and `{"tool_call_delta":
//! {"index", "id", "name", "arguments"}}` lines as they come (a call's first delta has its id
//! and name, later ones fragments of its arguments).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use formwork_engine::tools::{ReplyDelta, ReplyReader};
use formwork_engine::{Constraint, Engine, EngineConfig, EngineError, Event, Prompt, Request};
use formwork_sampler::SamplingParams;
use formwork_template::{Message, Tool};
use serde_json::json;

use crate::CliError;
use formwork_server::protocol::ToolChoice;
use formwork_server::tools::{ToolMode, ToolPlan};

/// Arguments of `formwork generate`.
#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// A GGUF file or a Hugging Face model folder.
    #[arg(long)]
    model: PathBuf,
    /// The user message.
    #[arg(long)]
    prompt: String,
    /// An optional system message.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// For a reasoning model: most tokens of reasoning before its end tag is forced.
    #[arg(long)]
    max_reasoning_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed of the sampler.
    #[arg(long)]
    seed: Option<u64>,
    /// Constrain the reply to this JSON Schema (a file).
    #[arg(long, group = "constraint")]
    schema: Option<PathBuf>,
    /// Constrain the reply to this regex.
    #[arg(long, group = "constraint")]
    regex: Option<String>,
    /// Constrain the reply to one of these comma-separated strings.
    #[arg(long, group = "constraint", value_delimiter = ',')]
    choice: Option<Vec<String>>,
    /// Constrain the reply to any JSON object.
    #[arg(long, group = "constraint")]
    json: bool,
    /// Tools offered to the model: a JSON file holding an array of OpenAI tool objects
    /// (`{"type": "function", "function": {"name", "description", "parameters"}}`).
    #[arg(long, group = "constraint")]
    tools: Option<PathBuf>,
    /// With `--tools`: `auto` (answer or call), `required` (one or more calls), `none`
    /// (no calls), or a function's name (a call of it).
    #[arg(long, requires = "tools", default_value = "auto")]
    tool_choice: String,
    /// Stop before any of these strings.
    #[arg(long)]
    stop: Vec<String>,
    /// Print text as it is generated.
    #[arg(long)]
    stream: bool,
    /// Device: cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    chat: crate::cli_serve::ChatArgs,
    #[command(flatten)]
    load: crate::cli_serve::LoadArgs,
}

fn input(e: EngineError) -> CliError {
    match e {
        EngineError::Model(_) | EngineError::ShutDown | EngineError::Generation(_) => {
            CliError::Other(e.into())
        }
        other => CliError::Input(other.to_string()),
    }
}

/// Reasoning goes to stderr (streamed as it comes with `--stream`, else collected into
/// `all` and printed once, marked, before the answer): stdout stays the answer alone.
fn write_reasoning(text: &str, stream: bool, all: &mut String) -> Result<(), CliError> {
    if text.is_empty() {
        return Ok(());
    }
    if stream {
        let mut err = std::io::stderr().lock();
        err.write_all(text.as_bytes())
            .context("writing to stderr")?;
        err.flush().context("writing to stderr")?;
    }
    all.push_str(text);
    Ok(())
}

pub(crate) fn run(args: GenerateArgs) -> Result<(), CliError> {
    let device =
        formwork_model::device(&args.device).map_err(|e| CliError::Input(e.to_string()))?;
    let model = formwork_model::load_with(&args.model, &args.load.options(device))
        .map_err(|e| CliError::Input(e.to_string()))?;
    let constraint = if let Some(path) = &args.schema {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(|e| CliError::Input(format!("{e:#}")))?;
        let schema = serde_json::from_str(&text)
            .map_err(|e| CliError::Input(format!("{}: not JSON: {e}", path.display())))?;
        Some(Constraint::JsonSchema(formwork_engine::JsonSchema::new(
            schema,
        )))
    } else if let Some(r) = &args.regex {
        Some(Constraint::Regex(r.clone()))
    } else if let Some(c) = &args.choice {
        Some(Constraint::Choice(c.clone()))
    } else if args.json {
        Some(Constraint::JsonObject)
    } else {
        None
    };
    let plan = match &args.tools {
        Some(path) => tool_plan(path, &args.tool_choice)?,
        None => ToolPlan::new(None, None, None).map_err(|e| CliError::Input(e.to_string()))?,
    };
    let constraint = match plan.mode() {
        ToolMode::Required => Some(Constraint::ToolCall {
            functions: plan.functions(),
            parallel: plan.parallel(),
        }),
        _ => constraint,
    };
    let mut model = model;
    let mut config = EngineConfig::default();
    args.chat.apply(&mut model, &mut config)?;
    let engine = Engine::new(model, config).map_err(input)?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::system(system.as_str()));
    }
    messages.push(Message::user(args.prompt.as_str()));
    let mut request = Request::new(Prompt::Chat {
        messages,
        tools: plan.template_tools().unwrap_or_default(),
        template_kwargs: Default::default(),
    });
    request.sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        ..SamplingParams::default()
    };
    request.max_tokens = Some(args.max_tokens);
    request.max_reasoning_tokens = args.max_reasoning_tokens;
    request.stop = args.stop.clone();
    request.constraint = constraint;
    request.auto_tools = plan.auto_tools();
    let mut handle = engine.submit(request).map_err(input)?;
    let mut splitter = handle.reasoning_splitter();
    let mut out = std::io::stdout().lock();
    let mut reader = args
        .tools
        .is_some()
        .then(|| ReplyReader::new(plan.reply_mode(), plan.allowed()));
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut finish = None;
    let mut usage = None;
    while let Some(event) = handle.blocking_next() {
        match event {
            Event::Delta { text: t, .. } => {
                let (r, t) = match &mut splitter {
                    Some(s) => s.push(&t),
                    None => (String::new(), t),
                };
                write_reasoning(&r, args.stream, &mut reasoning)?;
                if args.stream {
                    match reader.as_mut() {
                        Some(reader) => write_deltas(&mut out, reader.push(&t))?,
                        None => {
                            out.write_all(t.as_bytes()).context("writing to stdout")?;
                            out.flush().context("writing to stdout")?;
                        }
                    }
                }
                text.push_str(&t);
            }
            Event::Finished { reason, .. } => finish = Some(reason),
            Event::Error { message } => {
                return Err(CliError::Other(anyhow::anyhow!(
                    "generation failed: {message}"
                )));
            }
            Event::Done(u) => usage = Some(u),
        }
    }
    if let Some(s) = &mut splitter {
        let (r, t) = s.finish();
        write_reasoning(&r, args.stream, &mut reasoning)?;
        if args.stream {
            match reader.as_mut() {
                Some(reader) => write_deltas(&mut out, reader.push(&t))?,
                None => out.write_all(t.as_bytes()).context("writing to stdout")?,
            }
        }
        text.push_str(&t);
    }
    if !args.stream && !reasoning.is_empty() {
        let mut err = std::io::stderr().lock();
        writeln!(err, "[reasoning]\n{reasoning}\n[/reasoning]").context("writing to stderr")?;
    }
    // A reply cut by --max-tokens keeps an open call as a call.
    let cut = finish == Some(formwork_engine::FinishReason::Length);
    match reader.as_mut() {
        Some(reader) if args.stream => write_deltas(&mut out, reader.finish_reply(cut))?,
        Some(_) => {
            let reply = ReplyReader::read_reply(plan.reply_mode(), plan.allowed(), &text, cut);
            let mut lines: Vec<serde_json::Value> = reply
                .content
                .into_iter()
                .map(|content| json!({"content": content}))
                .collect();
            lines.extend(reply.calls.into_iter().map(|call| {
                json!({"tool_call": {"id": call.id, "name": call.name, "arguments": call.arguments}})
            }));
            for line in lines {
                writeln!(out, "{line}").context("writing to stdout")?;
            }
        }
        None => {
            if !args.stream {
                out.write_all(text.as_bytes())
                    .context("writing to stdout")?;
            }
            writeln!(out).context("writing to stdout")?;
        }
    }
    out.flush().context("writing to stdout")?;
    let usage = usage.unwrap_or_default();
    let line = serde_json::json!({
        "finish_reason": finish.map(|f| f.as_str()),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "ttft_ms": usage.time_to_first_token.as_secs_f64() * 1e3,
        "decode_tok_s": usage.decode_tokens_per_second(),
    });
    eprintln!("{line}");
    Ok(())
}

/// The plan of a `--tools` file (a JSON array of OpenAI tool objects) and a
/// `--tool-choice` (`auto`, `required`, `none` or a function's name), checked as
/// `/v1/chat/completions` checks them ([`ToolPlan::new`]).
fn tool_plan(path: &std::path::Path, choice: &str) -> Result<ToolPlan, CliError> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(|e| CliError::Input(format!("{e:#}")))?;
    let tools: Vec<Tool> = serde_json::from_str(&text).map_err(|e| {
        CliError::Input(format!(
            "{}: not a JSON array of tool objects: {e}",
            path.display()
        ))
    })?;
    let choice = match choice {
        "auto" => ToolChoice::Auto,
        "none" => ToolChoice::None,
        "required" => ToolChoice::Required,
        name => ToolChoice::Function(name.to_owned()),
    };
    ToolPlan::new(Some(&tools), Some(&choice), None)
        .map_err(|e| CliError::Input(format!("{}: {}", path.display(), e.message())))
}

/// Streamed tool-reader deltas as JSON lines.
fn write_deltas(out: &mut impl Write, deltas: Vec<ReplyDelta>) -> Result<(), CliError> {
    for delta in deltas {
        let lines = match delta {
            ReplyDelta::Content(text) => vec![json!({"content": text})],
            ReplyDelta::ToolCalls(pieces) => pieces
                .into_iter()
                .map(|d| {
                    json!({"tool_call_delta": {
                        "index": d.index, "id": d.id, "name": d.name, "arguments": d.arguments}})
                })
                .collect(),
        };
        for line in lines {
            writeln!(out, "{line}").context("writing to stdout")?;
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}
