//! The Formwork generation engine: concurrent, constrained, streaming generation over one
//! copy of a model's weights, usable from any Rust program without HTTP.
//!
//! [`Engine::submit`] prepares a [`Request`] on the caller's thread (chat template,
//! tokenization, constraint compilation through an LRU cache: regexes and choices to lazy
//! token indexes, JSON Schemas, tool calls and GBNF or Lark grammars to grammar indexes, so a
//! big schema never stalls the decoding thread; DFA states and their tokens are computed on
//! first visit, one at a time, as sequences reach them; constraints composed with free text,
//! [`Constraint::Segments`], for reasoning, tools in `auto` mode and structural tags) and
//! queues it;
//! the engine's thread runs continuous batching: every step advances every active sequence in
//! one batched forward pass, admitting new requests between steps. The returned
//! [`RequestHandle`] yields [`Event`]s (text deltas, finish reasons, usage); dropping it
//! cancels the request.
//!
//! Tool calls are [`tools`]'s: the call formats of the chat-template families (opener, closer,
//! the JSON Schema between them, detected from a template), the forced call's schema, and the
//! reader of a reply into content and calls, whole or streamed.
//!
//! ```no_run
//! use formwork_engine::{Constraint, Engine, EngineConfig, Event, Prompt, Request};
//! use formwork_template::Message;
//!
//! let model = formwork_model::load(
//!     "models/SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(),
//!     &formwork_model::Device::Cpu,
//! )?;
//! let engine = Engine::new(model, EngineConfig::default())?;
//! let mut request = Request::new(Prompt::Chat {
//!     messages: vec![Message::user("Give me a color.")],
//!     tools: vec![],
//!     template_kwargs: Default::default(),
//! });
//! request.constraint = Some(Constraint::Choice(vec!["red".into(), "green".into()]));
//! let mut handle = engine.submit(request)?;
//! while let Some(event) = handle.blocking_next() {
//!     if let Event::Delta { text, .. } = event {
//!         print!("{text}");
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod budget;
mod compile;
mod constraint;
mod end_valid;
mod error;
mod guide;
pub mod id;
mod jump;
mod metrics;
mod prefix;
pub mod reasoning;
mod request;
mod scheduler;
mod segments;
mod text;
pub mod tools;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use formwork_grammar::GrammarConfig;
use formwork_index::{IndexConfig, Vocabulary};
use formwork_model::{LoadedModel, Model, ModelInfo, Tokenizer};
use formwork_sampler::Sampler;
use formwork_template::{ChatTemplate, RenderArgs, SpecialTokens};
use tokio::sync::mpsc as tokio_mpsc;

pub use constraint::constraint_regex;
pub use error::EngineError;
pub use metrics::{Histogram, HistogramData, LATENCY_BUCKETS, Metrics, MetricsSnapshot};
pub use reasoning::{Reasoning, ReasoningFormat, ReasoningSplitter};
pub use request::{
    AutoTools, Constraint, Event, FinishReason, GrammarSyntax, JsonSchema, Outside, Prelude,
    Prompt, Request, Segment, Segments, TokenLogprob, ToolFunction, Usage,
};
pub use tools::tool_call_schema;

use budget::Budget;
use compile::IndexCache;
use scheduler::{Command, Pending, Scheduler};

/// Limits and sizes of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sequences generating at once (a request with `n` choices counts `n`).
    pub max_active: usize,
    /// Most requests waiting for a slot; more is [`EngineError::QueueFull`].
    pub max_queue: usize,
    /// Most prompt tokens prefilled in one step, so long prompts do not stall decoding.
    pub prefill_chunk: usize,
    /// Most tokens held in KV caches: every active sequence's prompt and completion budget,
    /// and the blocks kept for prefix reuse (dropped, least recently used first, when
    /// requests need the room).
    pub kv_cache_tokens: usize,
    /// Whether requests reuse the key/value blocks of earlier ones whose prompts start with
    /// the same tokens (automatic prefix caching; see the `prefix` module). Outputs are the
    /// same either way; only models whose caches hold blocks (the CPU backend) reuse.
    pub prefix_cache: bool,
    /// Most bytes the cache of compiled constraint indexes holds (each index charged what
    /// it really holds, lazy growth included); least recently used indexes go first.
    pub index_cache_bytes: usize,
    /// Most constraints compiled at once; further new constraints wait their turn (their
    /// requests hold queue slots meanwhile, so waiting is bounded by `max_queue`).
    pub max_compiles: usize,
    /// Limits on one constraint's automaton: [`IndexConfig::max_memory`] bounds a whole lazy
    /// index, `dfa.max_memory` its NFA and determinized states (see
    /// [`EngineConfig::constraint_limit`]).
    pub index: IndexConfig,
    /// Limits on one grammar constraint's compiled grammar (productions, symbols, lexemes).
    pub grammar: GrammarConfig,
    /// The reasoning format of the model's replies: detected from its chat template (the
    /// default), none, or named. See [`reasoning`].
    pub reasoning: Reasoning,
    /// Jump-forward decoding by default (a request may say otherwise,
    /// [`Request::jump_forward`]): text a constraint forces is appended in one forward pass
    /// instead of one sampling step per token.
    pub jump_forward: bool,
    /// Steer structured replies to end valid near `max_tokens` (the default): a reply whose
    /// whole text is one constraint (JSON Schema, regex, choice, grammar, forced tool call)
    /// ends as a complete document whenever its budget allows one, and a budget too small
    /// for any is refused ([`EngineError::MaxTokensTooSmall`]). [`Request::end_valid`]
    /// overrides it per request. The rule is `end_valid`'s module docs.
    pub end_valid: bool,
}

/// The default most bytes of the index cache: 256 MiB.
pub const DEFAULT_INDEX_CACHE_BYTES: usize = 256 << 20;

/// The default most constraints compiled at once.
pub const DEFAULT_MAX_COMPILES: usize = 2;

/// The default most bytes of one constraint's automaton: 64 MiB.
pub const DEFAULT_CONSTRAINT_BYTES: usize = 64 << 20;

impl EngineConfig {
    /// This config with one constraint's automaton bounded by `bytes`: its NFA, its
    /// determinized states, and the whole lazy index (token lists included). A constraint
    /// whose NFA alone exceeds it is refused ([`EngineError::Index`]); one whose lazy index
    /// grows past it stops growing (no token but EOS where the text may end, then a clear
    /// error).
    pub fn constraint_limit(mut self, bytes: usize) -> EngineConfig {
        self.index.max_memory = bytes;
        self.index.dfa.max_memory = bytes;
        self
    }
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            max_active: 16,
            max_queue: 256,
            prefill_chunk: 512,
            kv_cache_tokens: 65_536,
            prefix_cache: true,
            index_cache_bytes: DEFAULT_INDEX_CACHE_BYTES,
            max_compiles: DEFAULT_MAX_COMPILES,
            index: IndexConfig {
                lazy: true,
                ..IndexConfig::default()
            },
            grammar: GrammarConfig::default(),
            reasoning: Reasoning::Detect,
            jump_forward: true,
            end_valid: true,
        }
        .constraint_limit(DEFAULT_CONSTRAINT_BYTES)
    }
}

/// State shared by the engine's handle and its thread.
pub(crate) struct Shared {
    pub(crate) model: Arc<dyn Model>,
    pub(crate) info: ModelInfo,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) template: Option<ChatTemplate>,
    /// The reasoning format of the model's replies, when it has one.
    pub(crate) reasoning: Option<ReasoningFormat>,
    pub(crate) indexes: IndexCache,
    pub(crate) config: EngineConfig,
    pub(crate) metrics: Metrics,
    /// The longest token in bytes: a prompt of `b` bytes has at least `b / longest` tokens.
    pub(crate) longest_token: usize,
    /// Set when the engine's state is no longer sound, with the reason.
    pub(crate) failure: std::sync::OnceLock<String>,
    /// Bytes of text being tokenized at once: the tokenizer takes tens of bytes of memory
    /// per byte of text, so concurrent large prompts take turns.
    pub(crate) tokenizing: Budget,
}

/// The most bytes of prompt text tokenized at once (a larger prompt runs alone).
const TOKENIZING_BYTES: usize = 4 << 20;

impl Shared {
    /// Marks the engine unhealthy.
    pub(crate) fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
    }
}

/// The message of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

/// A running engine. Cheap to share behind an `Arc`; dropping the last one stops its thread
/// (requests still running end with [`FinishReason::Cancelled`]).
pub struct Engine {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.shared.info.name)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// The token bytes and end-of-sequence ids a constraint is compiled against, built once from
/// the loaded model's own tokenizer, without reading the model file again: each token is the
/// bytes the tokenizer's decoder makes of it ([`Vocabulary::from_tokenizer_with_eos`]: byte
/// level or SentencePiece, read from the tokenizer's pipeline), its special tokens (control
/// tokens, the unknown token) are special, and every end-of-generation id of the model
/// (`<|endoftext|>` as well as `<|im_end|>`) is EOS.
pub fn vocabulary_for(model: &LoadedModel) -> Result<Vocabulary, EngineError> {
    vocabulary_of(&model.tokenizer, &model.info.eos_token_ids)
}

/// Whether a rendered chat prompt still needs the model's BOS (llama.cpp's rule): a
/// template that writes `{{ bos_token }}` (Gemma's, Llama's) already starts with it; the ChatML
/// fallback for a model without a template (a base Gemma) writes none, so the tokenizer adds
/// it, if the model asks for BOS at all (`add_bos_token`).
fn chat_needs_bos(rendered: &str, bos_token: Option<&str>) -> bool {
    !bos_token.is_some_and(|bos| !bos.is_empty() && rendered.starts_with(bos))
}

/// The constraint vocabulary of `tokenizer` with EOS ids `eos` (those the tokenizer does not
/// know are left out).
fn vocabulary_of(tokenizer: &Tokenizer, eos: &[u32]) -> Result<Vocabulary, EngineError> {
    let inner = tokenizer.inner();
    let eos = eos
        .iter()
        .copied()
        .filter(|&id| inner.id_to_token(id).is_some())
        .collect();
    Ok(Vocabulary::from_tokenizer_with_eos(inner, eos)?)
}

impl Engine {
    /// Starts an engine on a loaded model.
    pub fn new(model: LoadedModel, config: EngineConfig) -> Result<Engine, EngineError> {
        let vocabulary = vocabulary_for(&model)?;
        Engine::with_vocabulary(model, vocabulary, config)
    }

    /// Starts an engine with an explicit constraint vocabulary.
    pub fn with_vocabulary(
        model: LoadedModel,
        vocabulary: Vocabulary,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        Engine::with_model(model.model, model.tokenizer, model.info, vocabulary, config)
    }

    /// Starts an engine on any [`Model`] (another backend, or a wrapper that injects faults
    /// in a test) with its tokenizer, metadata and constraint vocabulary.
    pub fn with_model(
        model: Arc<dyn Model>,
        tokenizer: Tokenizer,
        info: ModelInfo,
        vocabulary: Vocabulary,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        if vocabulary.len() > info.vocab_size {
            return Err(EngineError::InvalidRequest(format!(
                "the vocabulary has {} tokens but the model only {} logits",
                vocabulary.len(),
                info.vocab_size
            )));
        }
        let specials = SpecialTokens::new(info.bos_token.as_deref(), info.eos_token.as_deref());
        let template = match &info.chat_template {
            Some(source) => Some(ChatTemplate::new("chat_template", source, specials)?),
            None => Some(ChatTemplate::chatml(specials)?),
        };
        let reasoning = config.reasoning.resolve(info.chat_template.as_deref());
        if let Some(format) = &reasoning {
            tracing::info!(format = format.name, "replies carry reasoning");
        }
        let longest_token = (0..vocabulary.len() as u32)
            .filter_map(|t| vocabulary.token(t).map(<[u8]>::len))
            .max()
            .unwrap_or(1)
            .max(1);
        let shared = Arc::new(Shared {
            model,
            info,
            tokenizer,
            template,
            reasoning,
            indexes: IndexCache::new(
                vocabulary,
                config.index,
                config.grammar,
                config.index_cache_bytes,
                config.max_compiles,
            ),
            config,
            metrics: Metrics::new(),
            longest_token,
            failure: std::sync::OnceLock::new(),
            tokenizing: Budget::new(TOKENIZING_BYTES),
        });
        let (commands, receiver) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("formwork-engine".into())
            .spawn(move || Scheduler::new(thread_shared, receiver).run())
            .map_err(|e| {
                EngineError::InvalidRequest(format!("cannot start the engine thread: {e}"))
            })?;
        Ok(Engine {
            shared,
            commands,
            thread: Some(thread),
        })
    }

    /// The model's metadata.
    pub fn info(&self) -> &ModelInfo {
        &self.shared.info
    }

    /// The one constraint a request's reply follows: its own [`Request::constraint`], with
    /// the calls of [`Request::auto_tools`] in the model's own format (a segment opened by
    /// [`tools::ToolFormat::opener`]), after a reasoning model's `prelude`; see [`Segments`].
    fn composed_constraint(
        &self,
        request: &Request,
        prelude: Option<Prelude>,
    ) -> Result<Option<Constraint>, EngineError> {
        let calls = match &request.auto_tools {
            Some(auto) if !auto.functions.is_empty() => {
                let format = self.tool_format();
                let call = Segment {
                    begin: format.opener().to_owned(),
                    // One schema for every function's calls: lenient when one of them
                    // asks for it (`strict: false`), so it never refuses that function.
                    body: Constraint::JsonSchema(
                        JsonSchema::new(format.call_schema(&auto.functions, auto.parallel)?)
                            .strict(auto.functions.iter().all(|f| f.strict)),
                    ),
                    end: format.closer().to_owned(),
                };
                Some((call, auto.parallel))
            }
            _ => None,
        };
        Ok(segments::compose(
            request.constraint.clone(),
            calls,
            prelude,
        ))
    }

    /// How the model's chat template writes tool calls ([`tools::ToolFormat::detect`] on
    /// its source; [`tools::ToolFormat::Generic`] without a template).
    pub fn tool_format(&self) -> tools::ToolFormat {
        self.shared
            .template
            .as_ref()
            .map_or(tools::ToolFormat::Generic, |t| {
                tools::ToolFormat::detect(t.source())
            })
    }

    /// The reasoning format of the model's replies ([`EngineConfig::reasoning`] resolved
    /// against its chat template), if any.
    pub fn reasoning(&self) -> Option<&ReasoningFormat> {
        self.shared.reasoning.as_ref()
    }

    /// The engine's limits.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.shared.tokenizer
    }

    /// The constraint vocabulary (token bytes).
    pub fn vocabulary(&self) -> &Vocabulary {
        self.shared.indexes.vocabulary()
    }

    /// Current counters and histograms.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut m = self.shared.metrics.snapshot();
        m.index_cache_size = self.shared.indexes.len() as u64;
        m.index_cache_bytes = self.shared.indexes.memory_usage() as u64;
        m.healthy = self.health().is_ok();
        m
    }

    /// `Ok` while the engine serves soundly; else why not: its thread stopped (a fault it
    /// could not contain), or a fault left its state unsound. A panic in one step that the
    /// engine contained (failing that step's requests) leaves it healthy.
    pub fn health(&self) -> Result<(), String> {
        if let Some(reason) = self.shared.failure.get() {
            return Err(reason.clone());
        }
        if self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
            return Err("the engine's thread has stopped".into());
        }
        Ok(())
    }

    /// Renders chat messages through the model's template, with the generation prompt.
    ///
    /// A template that cannot render a `null` content (one that concatenates
    /// `message['content']`, as SmolLM2's does, fails on the assistant turn of a tool call)
    /// gets one more try with every `null` content as an empty string, as vLLM renders
    /// them for templates that expect strings; templates that handle `null` see it as sent.
    pub fn render_chat(
        &self,
        messages: &[formwork_template::Message],
        tools: &[formwork_template::Tool],
    ) -> Result<String, EngineError> {
        self.render_chat_with(messages, tools, &serde_json::Map::new())
    }

    /// [`Engine::render_chat`] with extra top-level template variables (`kwargs`, a
    /// request's `chat_template_kwargs`): a name the engine sets itself
    /// ([`formwork_template::RESERVED_VARIABLES`]) is refused.
    pub fn render_chat_with(
        &self,
        messages: &[formwork_template::Message],
        tools: &[formwork_template::Tool],
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, EngineError> {
        let template =
            self.shared.template.as_ref().ok_or_else(|| {
                EngineError::InvalidRequest("the model has no chat template".into())
            })?;
        if let Some(name) = kwargs
            .keys()
            .find(|k| formwork_template::RESERVED_VARIABLES.contains(&k.as_str()))
        {
            return Err(EngineError::InvalidRequest(format!(
                "chat_template_kwargs: `{name}` is set from the request itself and cannot be overridden"
            )));
        }
        let render = |messages: &[formwork_template::Message]| {
            let mut args = RenderArgs::new(messages)
                .add_generation_prompt(true)
                .kwargs(kwargs.clone());
            if !tools.is_empty() {
                args = args.tools(tools);
            }
            template.render(&args)
        };
        match render(messages) {
            Err(_) if messages.iter().any(|m| m.content.is_none()) => {
                let mut filled = messages.to_vec();
                for m in &mut filled {
                    m.content
                        .get_or_insert_with(|| formwork_template::Content::Text(String::new()));
                }
                Ok(render(&filled)?)
            }
            rendered => Ok(rendered?),
        }
    }

    /// The prompt's token ids. A chat prompt is rendered by [`Engine::render_chat`] (with
    /// its retry of `null` contents as empty strings). A text that is too long for the
    /// context whatever its tokenization (more bytes than the context holds tokens of the
    /// vocabulary's longest) is refused before it is tokenized, so its size costs no more
    /// than the text itself.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        self.prepare_prompt(prompt).map(|(tokens, _)| tokens)
    }

    /// [`Engine::prompt_tokens`], and a chat prompt's rendered text.
    fn prepare_prompt(&self, prompt: &Prompt) -> Result<(Vec<u32>, Option<String>), EngineError> {
        let mut rendered = None;
        let tokens = match prompt {
            Prompt::Chat {
                messages,
                tools,
                template_kwargs,
            } => {
                if messages.is_empty() {
                    return Err(EngineError::EmptyPrompt);
                }
                let text = self.render_chat_with(messages, tools, template_kwargs)?;
                self.check_prompt_size(&text)?;
                let _turn = self.shared.tokenizing.take(text.len());
                let add_bos = chat_needs_bos(&text, self.shared.info.bos_token.as_deref());
                let tokens = self.shared.tokenizer.encode(&text, add_bos)?;
                rendered = Some(text);
                tokens
            }
            Prompt::Text(text) => {
                self.check_prompt_size(text)?;
                let _turn = self.shared.tokenizing.take(text.len());
                self.shared.tokenizer.encode(text, true)?
            }
            Prompt::Tokens(ids) => {
                let vocab = self.shared.info.vocab_size;
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                    return Err(EngineError::InvalidRequest(format!(
                        "token id {bad} is outside the vocabulary of {vocab}"
                    )));
                }
                ids.clone()
            }
        };
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        Ok((tokens, rendered))
    }

    /// Refuses a budget below the tokens of the shortest document `guide` (at its start)
    /// allows ([`Engine::min_reply_tokens`]).
    fn check_budget(
        &self,
        guide: &mut guide::ConstraintGuide,
        max_tokens: usize,
    ) -> Result<(), EngineError> {
        if end_valid::surely_fits(guide, max_tokens) {
            return Ok(());
        }
        match self.plan_len(guide)? {
            Some(min_tokens) if min_tokens > max_tokens => Err(EngineError::MaxTokensTooSmall {
                max_tokens,
                min_tokens,
            }),
            _ => Ok(()),
        }
    }

    /// The length of `guide`'s plan ([`end_valid::plan`]), if it has one.
    fn plan_len(&self, guide: &mut guide::ConstraintGuide) -> Result<Option<usize>, EngineError> {
        let vocab = self.shared.indexes.vocabulary();
        let plan = end_valid::plan(guide, &self.shared.tokenizer, vocab)
            .map_err(|e| EngineError::Constraint(e.to_string()))?;
        Ok(plan.map(|p| p.len()))
    }

    /// The tokens of the shortest reply `constraint` allows, as the model's tokenizer spells
    /// it (EOS included where the text could go on): the smallest `max_tokens` a request
    /// with this constraint is accepted with while [`EngineConfig::end_valid`] is on.
    /// `None` for constraints composed with free text ([`Constraint::Segments`]), which are
    /// not steered, and where the vocabulary cannot spell any. Compiles the constraint
    /// through the engine's cache, as a request does (its errors are a request's).
    pub fn min_reply_tokens(&self, constraint: &Constraint) -> Result<Option<usize>, EngineError> {
        let compiled = self.shared.indexes.get(constraint)?;
        let mut guide = compiled.index.guide()?;
        if !guide.is_whole() {
            return Ok(None);
        }
        self.plan_len(&mut guide)
    }

    /// Refuses a text that cannot fit the context however it is tokenized. Every token
    /// spells at most `longest_token` bytes; the factor 2 leaves room for normalizers
    /// that shorten the text before it is split.
    fn check_prompt_size(&self, text: &str) -> Result<(), EngineError> {
        let context = self.shared.info.context_length;
        let per_token = 2 * self.shared.longest_token;
        let min_tokens = text.len() / per_token;
        if min_tokens >= context {
            return Err(EngineError::PromptTooLarge {
                bytes: text.len(),
                min_tokens,
                context_length: context,
            });
        }
        Ok(())
    }

    /// Prepares and queues a request: takes a queue slot first (a full queue is refused
    /// before any work), then runs the template, the tokenizer and the constraint compiler
    /// (on a cache miss, or waiting for another request compiling the same constraint) on
    /// the calling thread: call it from a blocking context.
    pub fn submit(&self, request: Request) -> Result<RequestHandle, EngineError> {
        let submitted = Instant::now();
        let shared = &self.shared;
        if request.n == 0 {
            return Err(EngineError::InvalidRequest("n must be at least 1".into()));
        }
        if request.n > shared.config.max_active {
            return Err(EngineError::InvalidRequest(format!(
                "n = {} exceeds the {} sequences this server runs at once",
                request.n, shared.config.max_active
            )));
        }
        if request.max_tokens == Some(0) {
            return Err(EngineError::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        request.sampling.validate(shared.info.vocab_size)?;
        let slot = QueueSlot::take(shared)?;
        let (prompt, rendered) = self.prepare_prompt(&request.prompt)?;
        // A chat reply of a reasoning model: its reasoning is free text before what the
        // request constrains (the prelude of its constraint).
        let (reasoning, prelude) = match (&shared.reasoning, rendered) {
            (Some(format), Some(text)) => (
                Some((format.clone(), format.starts_inside(&text))),
                format.prelude(&text, request.max_reasoning_tokens),
            ),
            _ => (None, None),
        };
        let context = shared.info.context_length;
        if prompt.len() >= context {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: prompt.len(),
                context_length: context,
            });
        }
        let room = context - prompt.len();
        let max_tokens = request.max_tokens.unwrap_or(room).min(room);
        let mut warnings: Arc<[String]> = Arc::new([]);
        let constraint = self.composed_constraint(&request, prelude)?;
        let guide = match &constraint {
            None => None,
            Some(c) => {
                let compiled = shared.indexes.get(c)?;
                for w in compiled.warnings.iter() {
                    tracing::warn!(warning = %w, "lenient constraint");
                }
                warnings = compiled.warnings.clone();
                if compiled.hit {
                    shared
                        .metrics
                        .index_cache_hits
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    shared
                        .metrics
                        .index_cache_misses
                        .fetch_add(1, Ordering::Relaxed);
                    shared.metrics.index_compile.observe(compiled.compile_time);
                }
                Some(compiled.index.guide()?)
            }
        };
        let end_valid = request.end_valid.unwrap_or(shared.config.end_valid);
        let mut guide = guide;
        if end_valid && let Some(g) = guide.as_mut().filter(|g| g.is_whole()) {
            self.check_budget(g, max_tokens)?;
        }
        let sampler = Sampler::new(request.sampling.clone(), shared.info.vocab_size, &prompt)?;
        let (events, receiver) = tokio_mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let pending = Pending {
            prompt,
            n: request.n,
            max_tokens,
            stop: request.stop,
            ignore_eos: request.ignore_eos
                && constraint.as_ref().is_none_or(Constraint::may_ignore_eos),
            top_logprobs: request.sampling.top_logprobs,
            // Forced tokens have no logits: requests asking for logprobs never jump.
            jump_forward: guide.is_some()
                && request.sampling.top_logprobs.is_none()
                && request.jump_forward.unwrap_or(shared.config.jump_forward),
            sampler,
            guide,
            end_valid,
            events,
            cancel: cancel.clone(),
            submitted,
        };
        if self
            .commands
            .send(Command::Submit(Box::new(pending)))
            .is_err()
        {
            return Err(EngineError::ShutDown);
        }
        // The engine's thread owns the slot now: it frees it on admission or cancellation.
        slot.hand_over();
        Ok(RequestHandle {
            events: receiver,
            cancel,
            warnings,
            reasoning,
        })
    }
}

/// A place in the engine's queue, taken before a request's preparation starts (counted in
/// `queued`) and given back on drop unless handed over with the request.
struct QueueSlot<'a> {
    shared: &'a Shared,
    handed_over: bool,
}

impl<'a> QueueSlot<'a> {
    /// Takes a slot, or [`EngineError::QueueFull`]; one atomic step, so concurrent
    /// submissions can never overfill the queue.
    fn take(shared: &'a Shared) -> Result<QueueSlot<'a>, EngineError> {
        let capacity = shared.config.max_queue as u64;
        shared
            .metrics
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < capacity).then_some(q + 1)
            })
            .map_err(|_| EngineError::QueueFull {
                capacity: shared.config.max_queue,
            })?;
        Ok(QueueSlot {
            shared,
            handed_over: false,
        })
    }

    fn hand_over(mut self) {
        self.handed_over = true;
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        if !self.handed_over {
            self.shared.metrics.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The caller's end of a request: a stream of [`Event`]s. Dropping it cancels the request.
#[derive(Debug)]
pub struct RequestHandle {
    events: tokio_mpsc::UnboundedReceiver<Event>,
    cancel: Arc<AtomicBool>,
    warnings: Arc<[String]>,
    /// The reply's reasoning format and whether the prompt opened its block.
    reasoning: Option<(ReasoningFormat, bool)>,
}

impl RequestHandle {
    /// A splitter of one choice's reply into reasoning and content, for a chat request to
    /// a reasoning model ([`Engine::reasoning`]; a constraint shapes only what follows the
    /// reasoning); `None` otherwise (the reply is all content). It knows whether the rendered prompt left the
    /// reply inside the reasoning block ([`ReasoningFormat::starts_inside`]).
    pub fn reasoning_splitter(&self) -> Option<ReasoningSplitter> {
        self.reasoning
            .as_ref()
            .map(|(format, inside)| ReasoningSplitter::new(format.clone(), *inside))
    }

    /// What the constraint's compiler dropped from a lenient schema
    /// ([`JsonSchema::strict`] `false`, a tool with `strict: false`): each keyword it does not
    /// enforce, with its JSON pointer. Known at submission; empty for a strict constraint
    /// (which is refused instead) or none.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The next event; `None` after [`Event::Done`].
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event, blocking the thread (not for use inside an async runtime).
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.events.blocking_recv()
    }

    /// Asks the engine to stop this request; it ends with [`FinishReason::Cancelled`].
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the whole request: the text of each choice, each finish reason, and usage.
    pub fn blocking_collect(mut self) -> Result<Completion, EngineError> {
        let mut completion = Completion {
            warnings: self.warnings.to_vec(),
            ..Completion::default()
        };
        while let Some(event) = self.blocking_next() {
            completion.absorb(event)?;
        }
        Ok(completion)
    }

    /// [`RequestHandle::blocking_collect`] for async callers.
    pub async fn collect(mut self) -> Result<Completion, EngineError> {
        let mut completion = Completion {
            warnings: self.warnings.to_vec(),
            ..Completion::default()
        };
        while let Some(event) = self.next().await {
            completion.absorb(event)?;
        }
        Ok(completion)
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// A whole request's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// The text of each choice.
    pub texts: Vec<String>,
    /// Why each choice ended.
    pub finish_reasons: Vec<Option<FinishReason>>,
    /// Log-probabilities of each choice's tokens (when asked for).
    pub logprobs: Vec<Vec<TokenLogprob>>,
    /// Token counts and timings.
    pub usage: Usage,
    /// The request's warnings ([`RequestHandle::warnings`]).
    pub warnings: Vec<String>,
}

impl Completion {
    fn slot(&mut self, index: usize) {
        if self.texts.len() <= index {
            self.texts.resize(index + 1, String::new());
            self.finish_reasons.resize(index + 1, None);
            self.logprobs.resize(index + 1, Vec::new());
        }
    }

    fn absorb(&mut self, event: Event) -> Result<(), EngineError> {
        match event {
            Event::Delta {
                index,
                text,
                logprobs,
            } => {
                self.slot(index);
                self.texts[index].push_str(&text);
                self.logprobs[index].extend(logprobs);
            }
            Event::Finished { index, reason, .. } => {
                self.slot(index);
                self.finish_reasons[index] = Some(reason);
            }
            Event::Error { message } => return Err(EngineError::Generation(message)),
            Event::Done(usage) => self.usage = usage,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use formwork_index::gguf::{self, Value};
    use formwork_model::GgufVocab;

    use super::*;

    /// Each token's bytes and special flag, and the EOS ids.
    fn table(v: &Vocabulary) -> (Vec<(Vec<u8>, bool)>, Vec<u32>) {
        let tokens = (0..v.len() as u32)
            .map(|id| (v.token(id).unwrap_or_default().to_vec(), v.is_special(id)))
            .collect();
        (tokens, v.eos().to_vec())
    }

    /// A SentencePiece vocabulary (Llama 2, Mistral) rebuilt into the model's tokenizer gives
    /// the constraint vocabulary its GGUF metadata gives: `▁` is a space, `<0xNN>` one raw
    /// byte, control and unknown tokens special, user-defined ones literal.
    #[test]
    fn a_sentencepiece_tokenizer_gives_the_vocabulary_of_its_gguf_metadata() {
        let mut tokens: Vec<(String, u32)> =
            vec![("<unk>".into(), 2), ("<s>".into(), 3), ("</s>".into(), 3)];
        for b in 0..=255u8 {
            tokens.push((format!("<0x{b:02X}>"), 6));
        }
        for piece in [
            "▁", "▁the", "▁a", "he", "llo", "▁hello", "ab", "日本", "▁{\"", "\":",
        ] {
            tokens.push((piece.into(), 1));
        }
        tokens.push(("<tool>".into(), 4));
        let strings: Vec<String> = tokens.iter().map(|t| t.0.clone()).collect();
        let types: Vec<u32> = tokens.iter().map(|t| t.1).collect();
        let vocab = GgufVocab {
            model: "llama".into(),
            tokens: strings.clone(),
            token_types: types.clone(),
            scores: (0..tokens.len()).map(|i| -(i as f64)).collect(),
            unk_id: Some(0),
            ..GgufVocab::default()
        };
        let tokenizer = Tokenizer::from_gguf_vocab(&vocab, Some(1), true).unwrap();
        let built = vocabulary_of(&tokenizer, &[2]).unwrap();

        let mut file = Vec::new();
        let metadata = [
            ("tokenizer.ggml.model", Value::String("llama".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(strings.into_iter().map(Value::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.iter().map(|&t| Value::I32(t as i32)).collect()),
            ),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ];
        gguf::write(&mut file, &metadata, &[]).unwrap();
        let meta = gguf::Metadata::from_reader(&file[..], file.len() as u64).unwrap();
        let from_file = Vocabulary::from_gguf_metadata(&meta).unwrap();
        assert_eq!(table(&built), table(&from_file));
        // The cases that matter, spelled out.
        assert_eq!(built.token(3 + 0x0A), Some(&b"\n"[..]));
        assert_eq!(built.token(3 + 256 + 5), Some(&b" hello"[..]));
        assert!(built.is_special(0) && built.is_special(1) && !built.is_special(3 + 256 + 10));
        assert_eq!(built.eos(), &[2]);
    }

    #[test]
    fn a_chat_prompt_gets_bos_once() {
        // Gemma's template writes `<bos>`: the tokenizer must not add a second one.
        assert!(!chat_needs_bos("<bos><start_of_turn>user\n", Some("<bos>")));
        // The ChatML fallback writes none: the tokenizer adds it (if the model wants BOS).
        assert!(chat_needs_bos("<|im_start|>user\n", Some("<bos>")));
        assert!(chat_needs_bos("<|im_start|>user\n", None));
        assert!(chat_needs_bos("x", Some("")));
    }

    /// The Gemma 3 GGUF, or `None` (saying so) when it was not fetched.
    fn gemma3_path() -> Option<std::path::PathBuf> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/gemma-3-270m-q4_k_m.gguf");
        if path.exists() {
            return Some(path);
        }
        eprintln!(
            "SKIPPED: the Gemma 3 model is missing at {}: run `cargo xtask fetch-model \
             gemma3-270m`",
            path.display()
        );
        None
    }

    /// Gemma's chat template (the shared test data's, Gemma 2's turn format) renders a
    /// conversation that Gemma's tokenizer turns into its turn tokens, with one `<bos>`:
    /// llama.cpp's ids for the same text (`gemma_turns` in the Gemma golden file).
    #[test]
    fn gemma3_chat_prompt_tokenizes_as_its_turns() {
        let Some(path) = gemma3_path() else { return };
        let source = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/chat_templates/google-gemma-2-2b-it.jinja"
        ))
        .expect("shared/data/chat_templates is missing");
        let template = ChatTemplate::new(
            "gemma",
            &source,
            SpecialTokens::new(Some("<bos>"), Some("<eos>")),
        )
        .unwrap();
        let messages = [formwork_template::Message::user("Hi there")];
        let text = template
            .render(&RenderArgs::new(&messages).add_generation_prompt(true))
            .unwrap();
        let tokenizer = Tokenizer::from_gguf(&path).unwrap();
        let ids = tokenizer
            .encode(&text, chat_needs_bos(&text, Some("<bos>")))
            .unwrap();
        assert_eq!(
            ids,
            [2, 105, 2364, 107, 10979, 993, 106, 107, 105, 4368, 107]
        );
    }

    /// Gemma 3's 262,144-token vocabulary, as the engine builds it from the loaded tokenizer,
    /// equals the one `formwork-index` reads from the GGUF metadata: the same bytes for every
    /// token (`▁`, `<0xNN>`, the user-defined whitespace runs), the same special tokens, and
    /// `<eos>` and `<end_of_turn>` as EOS. Skips, saying so, without the model file.
    #[test]
    fn gemma3_tokenizer_gives_the_vocabulary_of_its_gguf_file() {
        let Some(path) = gemma3_path() else { return };
        let tokenizer = Tokenizer::from_gguf(&path).unwrap();
        let meta = gguf::Metadata::read(&path).unwrap();
        let built = vocabulary_of(&tokenizer, &gguf::end_token_ids(&meta)).unwrap();
        let from_file = Vocabulary::from_gguf_metadata(&meta).unwrap();
        assert_eq!(built.len(), 262_144);
        assert_eq!(built.eos(), &[1, 106]);
        assert_eq!(table(&built), table(&from_file));
    }
}
