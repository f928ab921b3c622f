//! `formwork template render`: show the prompt a model's chat template makes
//! of a conversation.
//!
//! ```text
//! formwork template render --template FILE --messages FILE.json [--tools FILE.json] [--add-generation-prompt]
//! ```
//!
//! `--template` is a GGUF model, a `tokenizer_config.json`, a `.jinja`
//! file or a model folder; the special tokens (bos/eos) come from the same source (for a
//! `.jinja` file, from a `tokenizer_config.json` beside it, if any).
//! `--messages` holds a JSON array of OpenAI-style messages, or a whole
//! chat-completions request (`{"messages": [...], "tools": [...]}`).
//! Tool-call `arguments` may be a JSON object or a JSON string.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use formwork_template::{Message, RenderArgs, TemplateOptions, TemplateSource, Tool};
use serde_json::Value as Json;

/// Arguments of `formwork template`.
#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// What to do with the template.
    #[command(subcommand)]
    pub command: TemplateCommand,
}

/// The `formwork template` subcommands.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Render a conversation into the prompt the model sees.
    Render(RenderCommand),
}

/// Arguments of `formwork template render`.
#[derive(Debug, Args)]
pub struct RenderCommand {
    /// The template's source: a .gguf model, a tokenizer_config.json or a .jinja file.
    #[arg(long, value_name = "FILE")]
    pub template: PathBuf,

    /// The conversation: a JSON array of messages, or a request object with `messages`.
    #[arg(long, value_name = "FILE.json")]
    pub messages: PathBuf,

    /// The tools: a JSON array of OpenAI-style tools (or an object with `tools`).
    #[arg(long, value_name = "FILE.json")]
    pub tools: Option<PathBuf>,

    /// End the prompt with the start of an assistant turn.
    #[arg(long)]
    pub add_generation_prompt: bool,

    /// Use the named template variant (e.g. `tool_use`) instead of the default one.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Fall back to ChatML when the source has no template, instead of failing.
    #[arg(long)]
    pub chatml_fallback: bool,

    /// An extra template variable, as NAME=JSON (e.g. `enable_thinking=false`);
    /// a value that is not JSON is taken as a string. May be repeated.
    #[arg(long = "var", value_name = "NAME=JSON")]
    pub vars: Vec<String>,
}

/// Runs `formwork template ...`.
pub fn run(args: TemplateArgs) -> Result<()> {
    match args.command {
        TemplateCommand::Render(render) => run_render(render),
    }
}

fn run_render(args: RenderCommand) -> Result<()> {
    let source = TemplateSource::from_path(&args.template)
        .with_context(|| format!("reading the chat template from {}", args.template.display()))?;
    let template = if args.chatml_fallback {
        source.compile_or_chatml(args.name.as_deref(), TemplateOptions::default())
    } else {
        source.compile(args.name.as_deref(), TemplateOptions::default())
    }
    .with_context(|| format!("compiling the chat template of {}", args.template.display()))?;

    let request = read_json(&args.messages)?;
    let (messages, request_tools) = match request {
        Json::Array(_) => (request, None),
        Json::Object(mut obj) => {
            let Some(messages) = obj.remove("messages") else {
                bail!(
                    "{}: expected an array of messages or an object with `messages`",
                    args.messages.display()
                );
            };
            (messages, obj.remove("tools"))
        }
        _ => bail!(
            "{}: expected an array of messages or an object with `messages`",
            args.messages.display()
        ),
    };
    let messages: Vec<Message> = serde_json::from_value(messages)
        .with_context(|| format!("{}: invalid messages", args.messages.display()))?;

    let tools = match &args.tools {
        Some(path) => Some(match read_json(path)? {
            Json::Object(mut obj) if obj.contains_key("tools") => {
                obj.remove("tools").unwrap_or(Json::Null)
            }
            other => other,
        }),
        None => request_tools,
    };
    let tools: Option<Vec<Tool>> = match tools {
        None | Some(Json::Null) => None,
        Some(tools) => Some(serde_json::from_value(tools).context("invalid tools")?),
    };

    let mut render = RenderArgs::new(&messages).add_generation_prompt(args.add_generation_prompt);
    if let Some(tools) = &tools {
        render = render.tools(tools);
    }
    for var in &args.vars {
        let Some((name, value)) = var.split_once('=') else {
            bail!("--var {var:?}: expected NAME=JSON");
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_owned()));
        render = render.kwarg(name, value);
    }

    let prompt = template
        .render(&render)
        .context("rendering the chat template")?;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(prompt.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the prompt")
        }
        _ => Ok(()),
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}
