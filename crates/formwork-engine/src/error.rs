//! Typed errors of the engine.

/// Why a request was refused before generation started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The waiting queue is full (map to HTTP 429/503).
    #[error("the request queue is full ({capacity} requests waiting); retry later")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The prompt leaves no room to generate in the model's context.
    #[error(
        "the prompt has {prompt_tokens} tokens; the model's context is {context_length} tokens"
    )]
    PromptTooLong {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// The prompt's text is too long for the model's context whatever its tokenization;
    /// found from its size, before tokenizing it.
    #[error(
        "the prompt is {bytes} bytes, so at least {min_tokens} tokens; the model's context is {context_length} tokens"
    )]
    PromptTooLarge {
        /// Bytes of the prompt's text (the rendered chat for a conversation).
        bytes: usize,
        /// The fewest tokens a text of that size can be.
        min_tokens: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// The prompt is empty.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A bad sampling parameter.
    #[error(transparent)]
    Sampling(#[from] formwork_sampler::SamplerError),
    /// The chat template failed (unknown role, a template that raises...).
    #[error("chat template: {0}")]
    Template(#[from] formwork_template::Error),
    /// The JSON Schema cannot be compiled.
    #[error("json schema: {0}")]
    Schema(#[from] formwork_schema::SchemaError),
    /// A strict JSON Schema holds a keyword the compiler cannot enforce (documents could
    /// violate it); send the schema with `strict: false` to drop it with a warning.
    #[error(
        "json schema: `{keyword}` at {pointer} cannot be enforced{}; send strict: false to generate without it",
        function.as_ref().map(|f| format!(" (parameters of function `{f}`)")).unwrap_or_default()
    )]
    Unenforced {
        /// The keyword, e.g. `uniqueItems`.
        keyword: String,
        /// JSON pointer of the subschema carrying it, inside the schema as sent (inside
        /// the function's parameters for a tool call).
        pointer: String,
        /// The tool function whose parameters hold it, for a tool-call constraint.
        function: Option<String>,
    },
    /// `max_tokens` is below the tokens of the shortest reply the constraint allows (as the
    /// model's tokenizer spells it, EOS included where the text could go on), so no reply
    /// could end valid ([`crate::EngineConfig::end_valid`]).
    #[error(
        "max_tokens {max_tokens} is too small for any reply this constraint allows: the shortest takes {min_tokens} tokens"
    )]
    MaxTokensTooSmall {
        /// The budget asked for (or what the context leaves, when smaller).
        max_tokens: usize,
        /// Tokens of the shortest reply.
        min_tokens: usize,
    },
    /// The regex cannot be compiled into a token index, or is too large.
    #[error("constraint: {0}")]
    Index(#[from] formwork_index::IndexError),
    /// Another problem with the constraint (an empty choice list...).
    #[error("constraint: {0}")]
    Constraint(String),
    /// Another problem with the request (n = 0, token ids out of range...).
    #[error("{0}")]
    InvalidRequest(String),
    /// The model failed (tokenizer or forward pass).
    #[error(transparent)]
    Model(#[from] formwork_model::ModelError),
    /// Generation failed after it started (reported through [`crate::Event::Error`]).
    #[error("generation failed: {0}")]
    Generation(String),
    /// The engine has stopped.
    #[error("the engine has shut down")]
    ShutDown,
}
