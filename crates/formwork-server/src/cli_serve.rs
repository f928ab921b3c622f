//! `formwork serve`: the OpenAI-compatible HTTP server.
//!
//! Every flag has an environment variable (`FORMWORK_<FLAG>`), for containers; a flag
//! given on the command line wins. Logs go to stderr, human-readable or one JSON object
//! per line (`--log-format json`), filtered by `RUST_LOG` (default `info`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use formwork_engine::{
    DEFAULT_CONSTRAINT_BYTES, DEFAULT_INDEX_CACHE_BYTES, DEFAULT_MAX_COMPILES, Engine,
    EngineConfig, Reasoning,
};
use formwork_server::app::{
    AppState, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, ServerConfig,
};
use formwork_server::options::Limits;
use formwork_server::serve::{Shutdown, serve, shutdown_signal};

use formwork_template::TemplateSource;

use crate::CliError;

/// Where `--model default` points, relative to the current directory.
const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// How the model's chat replies are rendered, decoded and read: `formwork serve` and
/// `formwork generate` share these flags.
#[derive(Args)]
pub(crate) struct ChatArgs {
    /// A chat template to use instead of the model's: a Jinja file, or a
    /// tokenizer_config.json (its `chat_template`, the `default` one of a list).
    #[arg(long, env = "FORMWORK_CHAT_TEMPLATE")]
    chat_template: Option<PathBuf>,
    /// The reasoning format of the model's replies (`<think>…</think>` split into
    /// `reasoning_content`): qwen3, deepseek_r1, none, or detect (from the chat template).
    #[arg(long, env = "FORMWORK_REASONING_PARSER", default_value = "detect", value_parser = reasoning_parser)]
    reasoning_parser: Reasoning,
    /// Sample every token, even where the structure admits only one continuation (turns
    /// jump-forward decoding off; a request's `jump_forward` field still turns it on).
    #[arg(long, env = "FORMWORK_NO_JUMP_FORWARD")]
    no_jump_forward: bool,
    /// Do not steer structured replies to end valid near `max_tokens` (they may then be cut
    /// mid-document, `finish_reason: "length"`), nor refuse a `max_tokens` too small for any
    /// valid reply; a request's `end_valid` still overrides this.
    #[arg(long, env = "FORMWORK_NO_END_VALID")]
    no_end_valid: bool,
}

/// How the model is loaded: `formwork serve`, `generate` and `bench` share these flags.
#[derive(Args)]
pub(crate) struct LoadArgs {
    /// Which attention kernel computes prompt rows on the CPU: `row-by-row` (every row as a
    /// decode step computes it, so a re-sent conversation reuses the cached keys and values of
    /// the replies it contains) or `llama-cpp` (llama.cpp's tiled kernel for prompts of 64
    /// tokens or more, its four-row Q4_K products where it repacks Q4_K weights and its tiled
    /// Q6_K products: logits equal to llama.cpp's, but a reply is computed again when re-sent).
    #[arg(long, env = "FORMWORK_PROMPT_ATTENTION", default_value = "row-by-row")]
    prompt_attention: formwork_model::PromptAttention,
}

impl LoadArgs {
    /// Load options for `device` with these flags.
    pub(crate) fn options(&self, device: formwork_model::Device) -> formwork_model::LoadOptions {
        formwork_model::LoadOptions::new(device).with_prompt_attention(self.prompt_attention)
    }
}

/// A `--reasoning-parser` value.
fn reasoning_parser(name: &str) -> Result<Reasoning, String> {
    Reasoning::from_name(name).ok_or_else(|| {
        format!("unknown reasoning parser `{name}`; expected qwen3, deepseek_r1, none or detect")
    })
}

impl ChatArgs {
    /// Applies the flags: the template replaces the model's (read before the engine
    /// starts, so its reasoning format is detected from it), the parser and the end-valid
    /// switch go to `config`.
    pub(crate) fn apply(
        &self,
        model: &mut formwork_model::LoadedModel,
        config: &mut EngineConfig,
    ) -> Result<(), CliError> {
        if let Some(path) = &self.chat_template {
            let source = TemplateSource::from_path(path)
                .map_err(|e| CliError::Input(format!("--chat-template: {e}")))?;
            let (_, text) = source
                .get(None)
                .map_err(|e| CliError::Input(format!("--chat-template: {e}")))?;
            model.info.chat_template = Some(text.to_owned());
        }
        config.reasoning = self.reasoning_parser.clone();
        config.jump_forward = !self.no_jump_forward;
        config.end_valid = !self.no_end_valid;
        Ok(())
    }
}

/// Arguments of `formwork serve`.
#[derive(Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    chat: ChatArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// A GGUF file, a Hugging Face model folder, or `default`
    /// (models/SmolLM2-135M-Instruct.Q4_1.gguf in the current directory).
    #[arg(long, env = "FORMWORK_MODEL", default_value = "default")]
    model: String,
    /// The address to listen on.
    #[arg(long, env = "FORMWORK_HOST", default_value = "127.0.0.1")]
    host: String,
    /// The port to listen on (0: any free port).
    #[arg(long, env = "FORMWORK_PORT", default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "FORMWORK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Most sequences generating at once (a request with n choices counts n).
    #[arg(long, env = "FORMWORK_MAX_SEQUENCES", default_value_t = 16)]
    max_sequences: usize,
    /// Most requests waiting for a slot; more are answered 429.
    #[arg(long, env = "FORMWORK_MAX_QUEUE", default_value_t = 256)]
    max_queue: usize,
    /// Most tokens in KV caches: the prompt and completion budget of all running sequences,
    /// and the blocks kept for prefix reuse (dropped, least recently used first, as needed).
    #[arg(long, env = "FORMWORK_KV_CACHE_TOKENS", default_value_t = 65_536)]
    kv_cache_tokens: usize,
    /// Turn prefix reuse off: every prompt is computed whole, even when an earlier request
    /// started with the same tokens (outputs are the same either way).
    #[arg(long, env = "FORMWORK_NO_PREFIX_CACHE")]
    no_prefix_cache: bool,
    /// Most MiB the cache of compiled constraints holds (each index charged what it really
    /// holds); least recently used constraints are dropped first.
    #[arg(long, env = "FORMWORK_INDEX_CACHE_MB", default_value_t = DEFAULT_INDEX_CACHE_BYTES >> 20)]
    index_cache_mb: usize,
    /// Most MiB one constraint's automaton may take (its NFA, determinized states and token
    /// lists); a constraint whose automaton needs more is answered 400.
    #[arg(long, env = "FORMWORK_MAX_CONSTRAINT_MB", default_value_t = DEFAULT_CONSTRAINT_BYTES >> 20)]
    max_constraint_mb: usize,
    /// Most new constraints compiled at once; others wait their turn.
    #[arg(long, env = "FORMWORK_MAX_COMPILES", default_value_t = DEFAULT_MAX_COMPILES)]
    max_compiles: usize,
    /// The model name clients send and /v1/models lists (default: the model file's name
    /// without `.gguf`). The model's own name is accepted too.
    #[arg(long, env = "FORMWORK_SERVED_MODEL_NAME")]
    served_model_name: Option<String>,
    /// Device: cpu, cuda[:N] or metal[:N].
    #[arg(long, env = "FORMWORK_DEVICE", default_value = "cpu")]
    device: String,
    /// Largest request body in bytes; larger ones are answered 413.
    #[arg(long, env = "FORMWORK_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Seconds a client gets to send a request's headers (from their first byte, or from
    /// connecting); then the connection is closed.
    #[arg(long, env = "FORMWORK_HEADER_TIMEOUT", default_value_t = DEFAULT_HEADER_TIMEOUT.as_secs())]
    header_timeout: u64,
    /// Seconds a client gets to send a request's body, from the end of its headers; a
    /// slower body is answered 408.
    #[arg(long, env = "FORMWORK_BODY_TIMEOUT", default_value_t = DEFAULT_BODY_TIMEOUT.as_secs())]
    body_timeout: u64,
    /// Seconds a kept-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "FORMWORK_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout: u64,
    /// Most connections open at once; more wait in the listen backlog until one closes.
    /// Keep it under the open-files limit (`ulimit -n`).
    #[arg(long, env = "FORMWORK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "FORMWORK_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    shutdown_timeout: u64,
    /// Log format on stderr.
    #[arg(long, env = "FORMWORK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialization (never in the binary) is harmless: keep the first.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The model path `--model` names.
fn model_path(model: &str) -> Result<PathBuf, CliError> {
    if model == "default" {
        let path = PathBuf::from(DEFAULT_MODEL);
        if !path.exists() {
            return Err(CliError::Input(format!(
                "the default model is not at {DEFAULT_MODEL} (relative to {}): run \
                 `cargo xtask fetch-model`, or pass --model PATH",
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| "the current directory".into())
            )));
        }
        return Ok(path);
    }
    let path = PathBuf::from(model);
    if !path.exists() {
        return Err(CliError::Input(format!("no model at {model}")));
    }
    Ok(path)
}

/// The default served name: the file or folder name, without `.gguf`.
/// Which CPU kernels a model runs, for logs and bench headers: `scalar`, `avx2+fma+f16c`, ...,
/// or `none (candle)` on the candle backend.
pub(crate) fn kernels_name(kernels: Option<formwork_model::CpuKernels>) -> &'static str {
    kernels.map_or("none (candle)", formwork_model::CpuKernels::name)
}

fn default_served_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    Some(name.strip_suffix(".gguf").unwrap_or(name).to_owned())
}

/// Descriptors the process needs besides its connections: the standard streams, the
/// listener, the model file, the runtime's own, a few for the tokenizer and logging.
const SPARE_FILES: u64 = 64;

/// Warns when `--max-connections` could run the process out of file descriptors, which
/// would stop it accepting (`/health` included) before the cap does.
fn warn_if_over_open_files(max_connections: usize) {
    let Some(limit) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| open_files_limit(&limits))
    else {
        return;
    };
    if (max_connections as u64).saturating_add(SPARE_FILES) > limit {
        tracing::warn!(
            max_connections,
            open_files_limit = limit,
            "--max-connections is close to the open-files limit: raise `ulimit -n` or lower \
             --max-connections to at most {}",
            limit.saturating_sub(SPARE_FILES)
        );
    }
}

/// The soft limit of open files in the text of `/proc/self/limits` (`None`: unlimited or
/// not found).
fn open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.strip_prefix("Max open files")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(crate) fn run(args: ServeArgs) -> Result<(), CliError> {
    init_logging(args.log_format);
    for (flag, value) in [
        ("--max-sequences", args.max_sequences as u64),
        ("--max-connections", args.max_connections as u64),
        ("--header-timeout", args.header_timeout),
        ("--body-timeout", args.body_timeout),
        ("--idle-timeout", args.idle_timeout),
    ] {
        if value == 0 {
            return Err(CliError::Input(format!("{flag} must be at least 1")));
        }
    }
    warn_if_over_open_files(args.max_connections);
    let path = model_path(&args.model)?;
    let device =
        formwork_model::device(&args.device).map_err(|e| CliError::Input(e.to_string()))?;
    let start = Instant::now();
    tracing::info!(model = %path.display(), device = args.device, "loading the model");
    let mut model = formwork_model::load_with(&path, &args.load.options(device))
        .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    let backend = model.model.backend_name();
    let kernels = kernels_name(model.model.cpu_kernels());
    let mut config = EngineConfig {
        max_active: args.max_sequences,
        max_queue: args.max_queue,
        kv_cache_tokens: args.kv_cache_tokens,
        prefix_cache: !args.no_prefix_cache,
        index_cache_bytes: args.index_cache_mb.saturating_mul(1 << 20),
        max_compiles: args.max_compiles,
        ..EngineConfig::default()
    }
    .constraint_limit(args.max_constraint_mb.saturating_mul(1 << 20));
    args.chat.apply(&mut model, &mut config)?;
    let engine = Engine::new(model, config)
        .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    let info = engine.info();
    tracing::info!(
        name = info.name,
        architecture = info.architecture.as_str(),
        vocab_size = info.vocab_size,
        context_length = info.context_length,
        backend,
        cpu_kernels = kernels,
        load_s = start.elapsed().as_secs_f64(),
        "model ready"
    );
    let server_config = ServerConfig {
        served_model_name: args
            .served_model_name
            .clone()
            .or_else(|| default_served_name(&path)),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        limits: Limits::default(),
        max_body_bytes: args.max_body_bytes,
        body_timeout: Duration::from_secs(args.body_timeout),
        header_timeout: Duration::from_secs(args.header_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        max_connections: args.max_connections,
    };
    let state = Arc::new(AppState::new(Arc::new(engine), server_config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let deadline = Duration::from_secs(args.shutdown_timeout);
    let outcome = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr: SocketAddr = listener.local_addr().context("reading the bound address")?;
        tracing::info!(
            %addr,
            model = state.served_model_name(),
            auth = state.config().api_key.is_some(),
            max_connections = state.config().max_connections,
            "listening on http://{addr}"
        );
        serve(listener, state, shutdown_signal(), deadline)
            .await
            .context("serving")
    })?;
    if outcome == Shutdown::DeadlinePassed {
        tracing::warn!("exited with requests still running");
    }
    // Do not wait for blocking tasks (a schema still compiling) on the way out.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_name_drops_gguf() {
        assert_eq!(
            default_served_name(Path::new("models/SmolLM2-135M-Instruct.Q4_1.gguf")).as_deref(),
            Some("SmolLM2-135M-Instruct.Q4_1")
        );
        assert_eq!(
            default_served_name(Path::new("/m/Qwen3-0.6B")).as_deref(),
            Some("Qwen3-0.6B")
        );
    }

    #[test]
    fn open_files_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(open_files_limit(unlimited), None);
        assert_eq!(open_files_limit(""), None);
    }

    #[test]
    fn missing_models_say_what_to_do() {
        let Err(CliError::Input(msg)) = model_path("/no/such/model.gguf") else {
            panic!("a missing model must be an input error");
        };
        assert!(msg.contains("/no/such/model.gguf"), "{msg}");
    }
}
