//! What a caller asks for and what it gets back.

use std::time::Duration;

use formwork_grammar::{Grammar, GrammarConfig, GrammarError};
use formwork_sampler::SamplingParams;
use formwork_template::{Message, Tool};
use serde_json::{Map, Value};

/// The text to continue.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Chat messages, rendered through the model's chat template with the generation prompt.
    Chat {
        /// The conversation.
        messages: Vec<Message>,
        /// Tools offered to the model (passed to the template).
        tools: Vec<Tool>,
        /// Extra top-level variables for the template (a request's `chat_template_kwargs`,
        /// e.g. `{"enable_thinking": false}`). The names the engine sets itself
        /// ([`formwork_template::RESERVED_VARIABLES`]: `messages`, `tools`, `documents`,
        /// `add_generation_prompt`) are refused ([`crate::EngineError::InvalidRequest`]).
        template_kwargs: Map<String, Value>,
    },
    /// Raw text, tokenized as is (BOS added when the model wants it).
    Text(String),
    /// Token ids, used as is.
    Tokens(Vec<u32>),
}

/// One function a tool-call constraint may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolFunction {
    /// The function's name.
    pub name: String,
    /// JSON Schema of its arguments (`{"type":"object"}` when the tool gives none).
    pub parameters: Value,
    /// Whether a keyword of `parameters` the compiler cannot enforce refuses the request
    /// (`true`, OpenAI's `strict` and the default) or is dropped with a warning (`false`);
    /// see [`JsonSchema::strict`].
    pub strict: bool,
}

/// A JSON Schema constraint: the schema, how keywords the compiler cannot enforce are
/// treated, and the whitespace allowed between JSON tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonSchema {
    /// The schema.
    pub schema: Value,
    /// `true` (the default): a keyword the compiler cannot enforce (`uniqueItems`, an
    /// unknown `format`, ... see `formwork_schema::Unenforced`) refuses the request with
    /// [`crate::EngineError::Unenforced`], naming the keyword and its JSON pointer. `false`:
    /// such keywords are dropped (the output may violate them) and reported as warnings
    /// ([`crate::RequestHandle::warnings`]).
    pub strict: bool,
    /// A regex for the whitespace allowed between JSON tokens, wherever the compiler allows
    /// any (vLLM's `whitespace_pattern`, e.g. `[ \n]*`); `None`: none at all (compact
    /// documents). Checked by `formwork_schema::Whitespace::pattern`.
    pub whitespace: Option<String>,
}

impl JsonSchema {
    /// A strict constraint to `schema`, compact (no whitespace between tokens).
    pub fn new(schema: Value) -> JsonSchema {
        JsonSchema {
            schema,
            strict: true,
            whitespace: None,
        }
    }

    /// This constraint with [`JsonSchema::strict`] set.
    pub fn strict(mut self, strict: bool) -> JsonSchema {
        self.strict = strict;
        self
    }

    /// This constraint with [`JsonSchema::whitespace`] set.
    pub fn whitespace(mut self, pattern: Option<String>) -> JsonSchema {
        self.whitespace = pattern;
        self
    }
}

/// Tools a reply may call in the middle of its text ([`Request::auto_tools`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoTools {
    /// The functions a call may name.
    pub functions: Vec<ToolFunction>,
    /// Whether a reply may make several calls.
    pub parallel: bool,
}

/// The structure the output must have.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// A document valid under this JSON Schema.
    JsonSchema(JsonSchema),
    /// Text the regex matches in full.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// Any JSON object.
    JsonObject,
    /// A call of one of the functions: `{"name": NAME, "arguments": {...}}`, or with
    /// `parallel` a JSON array of one or more such calls.
    ToolCall {
        /// The functions that may be called.
        functions: Vec<ToolFunction>,
        /// Whether several calls may be made at once.
        parallel: bool,
    },
    /// Text the context-free grammar derives, its start rule matched in full.
    Grammar {
        /// The grammar's notation.
        syntax: GrammarSyntax,
        /// The grammar's source text.
        text: String,
    },
    /// Constraints composed with free text: an optional free prelude (reasoning), then free
    /// text (or another constraint) in which trigger strings open constrained segments.
    Segments(Segments),
}

/// A constraint made of segments (see the `segments` module of the engine for how it is
/// followed token by token).
///
/// The reply is: the [`Prelude`] if any (free text up to its end tag), then what
/// [`Outside`] says, in which each occurrence of a trigger opens a segment: the rest of the
/// begin string of a segment starting with that trigger, a text its body allows, and its end
/// string. While the text is free, no mask is computed; from the trigger on, the segment's
/// grammar takes over, even inside the token that completed the trigger. EOS is allowed only
/// where the whole reply may end: never in the prelude or inside a segment before its body
/// and end are complete.
#[derive(Debug, Clone, PartialEq)]
pub struct Segments {
    /// Free text before the rest, up to an end tag (a reasoning model's thinking).
    pub prelude: Option<Prelude>,
    /// The segments.
    pub segments: Vec<Segment>,
    /// Strings that open a segment where they occur; each must be a prefix of the begin of
    /// at least one segment. Empty: each segment's whole begin string is its trigger.
    pub triggers: Vec<String>,
    /// What the reply is outside segments.
    pub outside: Outside,
    /// Most segments in one reply; `None`: no limit. Past it, triggers open nothing.
    pub max_segments: Option<usize>,
}

/// One kind of segment of [`Segments`].
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The text that opens the segment (it belongs to the reply).
    pub begin: String,
    /// What follows the begin string: a JSON Schema, a regex, choices, a tool call or a
    /// grammar.
    pub body: Constraint,
    /// The text that closes the segment (may be empty when the body ends by itself).
    pub end: String,
}

/// What a [`Segments`] reply is outside its segments.
#[derive(Debug, Clone, PartialEq)]
pub enum Outside {
    /// Free text; the reply may end anywhere outside a segment.
    Free,
    /// Either segments (separated by whitespace) or, when the reply does not start with a
    /// trigger, one text this constraint allows (`response_format` with tools in `auto`
    /// mode: a call or a document, never neither). Whitespace may lead either.
    Either(Box<Constraint>),
    /// Segments only, separated by whitespace (at least one).
    Nothing,
}

/// Free text at the start of a reply, up to an end tag: a reasoning model's thinking.
#[derive(Debug, Clone, PartialEq)]
pub struct Prelude {
    /// The tag that opens it, when the reply itself writes it first (`<think>`); empty when
    /// the prompt already opened it (the reply starts inside).
    pub start: String,
    /// Whether the reply may skip it: it starts with the start tag (then the prelude) or
    /// goes straight to the rest (a model that may answer without thinking).
    pub optional: bool,
    /// The tag that closes it (`</think>`).
    pub end: String,
    /// Most tokens before the end tag is forced.
    pub max_tokens: Option<usize>,
}

impl Constraint {
    /// Whether a request with this constraint may go on past EOS ([`Request::ignore_eos`]):
    /// only [`Constraint::Segments`] over free text, where EOS is allowed only between
    /// segments and changes nothing there. Every other constraint ends at its EOS.
    pub fn may_ignore_eos(&self) -> bool {
        matches!(self, Constraint::Segments(s) if s.outside == Outside::Free)
    }
}

/// The notation of a [`Constraint::Grammar`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrammarSyntax {
    /// llama.cpp's GBNF: `root ::= ...`, character-level (no implicit whitespace).
    Gbnf,
    /// A subset of Lark's EBNF: `start: ...`, terminals in capitals, `%ignore` and `%import`
    /// of Lark's common terminals.
    Lark,
}

impl GrammarSyntax {
    /// Its name in requests and on the command line: `gbnf`, `lark`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrammarSyntax::Gbnf => "gbnf",
            GrammarSyntax::Lark => "lark",
        }
    }

    /// The syntax called `name` (`gbnf`, `lark`; ASCII case ignored).
    pub fn from_name(name: &str) -> Option<GrammarSyntax> {
        [GrammarSyntax::Gbnf, GrammarSyntax::Lark]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }

    /// Reads `text` in this syntax ([`formwork_grammar::gbnf`], [`formwork_grammar::lark`])
    /// and lowers it within `config`'s limits: what a [`Constraint::Grammar`] is compiled
    /// to. Errors name the cause (line and column for syntax errors, the undefined rule, the
    /// empty language, the limit exceeded).
    pub fn compile(self, text: &str, config: &GrammarConfig) -> Result<Grammar, GrammarError> {
        let (rules, start) = match self {
            GrammarSyntax::Gbnf => formwork_grammar::gbnf(text)?,
            GrammarSyntax::Lark => formwork_grammar::lark(text)?,
        };
        rules.compile(start, config)
    }
}

impl std::fmt::Display for GrammarSyntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A generation request.
#[derive(Debug, Clone)]
pub struct Request {
    /// What to continue.
    pub prompt: Prompt,
    /// Sampling parameters (seeded choices use `seed + index`).
    pub sampling: SamplingParams,
    /// Most tokens to generate per choice (default: what the context leaves).
    pub max_tokens: Option<usize>,
    /// Generation ends before the first of these strings; they are never sent.
    pub stop: Vec<String>,
    /// Number of choices; they share one prefill.
    pub n: usize,
    /// The structure the output must have.
    pub constraint: Option<Constraint>,
    /// Functions the model may call in the middle of its reply (tools in `auto` mode): each
    /// call it opens, in its chat template's format, is constrained to a declared function
    /// and its parameters' schema, around [`Request::constraint`] if any (then the reply is
    /// calls or a document that constraint allows, never neither).
    pub auto_tools: Option<AutoTools>,
    /// For a reasoning model ([`crate::Engine::reasoning`]): most tokens of reasoning before
    /// its end tag is forced (`None`: no limit but `max_tokens`).
    pub max_reasoning_tokens: Option<usize>,
    /// Keep generating after an end-of-sequence token (unconstrained requests, and segments
    /// over free text: see [`Constraint::may_ignore_eos`]).
    pub ignore_eos: bool,
    /// Jump-forward decoding: where the constraint admits only one continuation, append its
    /// tokens without sampling them, in one forward pass (`None`: the engine's
    /// [`crate::EngineConfig::jump_forward`]). Never for a request asking for logprobs. The
    /// boundary rule between sampled and forced text is in `docs/api.md`.
    pub jump_forward: Option<bool>,
    /// Steer a structured reply to end valid near `max_tokens`, and refuse a budget too
    /// small for any valid reply; `None`: the engine's [`crate::EngineConfig::end_valid`].
    pub end_valid: Option<bool>,
}

impl Request {
    /// A request for `prompt` with default sampling, one choice and no constraint.
    pub fn new(prompt: Prompt) -> Request {
        Request {
            prompt,
            sampling: SamplingParams::default(),
            max_tokens: None,
            stop: Vec::new(),
            n: 1,
            constraint: None,
            auto_tools: None,
            max_reasoning_tokens: None,
            ignore_eos: false,
            jump_forward: None,
            end_valid: None,
        }
    }
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token, a stop string, or a complete structure.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
    /// The request was cancelled.
    Cancelled,
    /// The engine failed while generating (the message came in an [`Event::Error`]).
    Error,
}

impl FinishReason {
    /// The OpenAI spelling (`stop`, `length`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error => "error",
        }
    }
}

/// A token's log-probability and its most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token id.
    pub token: u32,
    /// The bytes the token adds to the text.
    pub bytes: Vec<u8>,
    /// Its log-probability (after the mask, bias and penalties; before temperature).
    pub logprob: f32,
    /// The most likely tokens at this step: id, bytes, log-probability.
    pub top: Vec<(u32, Vec<u8>, f32)>,
}

/// Token counts and timings of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated, over all choices.
    pub completion_tokens: usize,
    /// From submission to the first generated token.
    pub time_to_first_token: Duration,
    /// From the first generated token to the end.
    pub decode_time: Duration,
    /// Tokens, over all choices, sampled under a constraint's mask. Free text (no
    /// constraint, or the free parts of [`Constraint::Segments`]) costs no mask work and is
    /// not counted.
    pub masked_tokens: usize,
    /// Prompt tokens whose keys and values came from cached blocks of earlier requests
    /// (prefix reuse) instead of being computed (OpenAI's `cached_tokens`).
    pub cached_tokens: usize,
    /// Tokens, over all choices, that the constraint forced and jump-forward decoding
    /// appended without sampling (counted in `completion_tokens` too; see
    /// [`Request::jump_forward`]).
    pub forced_tokens: usize,
}

impl Usage {
    /// Generated tokens per second after the first.
    pub fn decode_tokens_per_second(&self) -> f64 {
        let secs = self.decode_time.as_secs_f64();
        if secs > 0.0 && self.completion_tokens > 1 {
            (self.completion_tokens - 1) as f64 / secs
        } else {
            0.0
        }
    }
}

/// What a request's handle yields, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text of choice `index` (whole characters; stop strings held back), and the tokens
    /// generated since the last delta with their log-probabilities when asked for.
    Delta {
        /// The choice.
        index: usize,
        /// New text (may be empty when only logprobs are new).
        text: String,
        /// The tokens behind it, with log-probabilities (empty unless requested).
        logprobs: Vec<TokenLogprob>,
    },
    /// Choice `index` ended.
    Finished {
        /// The choice.
        index: usize,
        /// Why.
        reason: FinishReason,
        /// Tokens this choice generated.
        completion_tokens: usize,
    },
    /// The engine failed while generating this request.
    Error {
        /// What went wrong.
        message: String,
    },
    /// Every choice ended; the last event.
    Done(Usage),
}
