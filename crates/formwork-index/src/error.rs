//! Errors from building and walking automata and indexes.

/// Why an automaton could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The regex does not parse: regex-syntax's reason and the bytes of the regex it points at,
    /// as in ``unclosed group at bytes 2..3 (`(`)``; a regex nesting deeper than the parser's
    /// limit of 250 levels is one.
    #[error("invalid regex: {0}")]
    Regex(String),
    /// Building the automaton would exceed a configured limit.
    #[error("automaton exceeds the {limit} limit: {detail}")]
    TooLarge {
        /// Which limit (`"states"`, `"memory"`).
        limit: &'static str,
        /// What was being built when the limit was hit.
        detail: String,
    },
    /// The regex matches nothing, so no document can be produced.
    #[error("the regex matches no string")]
    Empty,
    /// No sequence of the vocabulary's tokens spells a match of the regex.
    #[error("no sequence of tokens spells a match of the regex")]
    Unspellable,
    /// A GGUF file's metadata could not be read.
    #[error(transparent)]
    Gguf(#[from] formwork_gguf::GgufError),
    /// A `tokenizer.json` file could not be read or is not supported.
    #[error("tokenizer {}: {reason}", path.display())]
    Tokenizer {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A vocabulary is malformed or unsupported (missing keys, ids out of range).
    #[error("vocabulary: {0}")]
    Vocabulary(String),
    /// A token that is not allowed in the guide's current state.
    #[error("token {token} is not allowed in state {state}")]
    TokenNotAllowed {
        /// The token offered.
        token: u32,
        /// The state it was offered in.
        state: u32,
    },
    /// A rollback of more tokens than were consumed.
    #[error("cannot roll back {requested} tokens: only {available} were consumed")]
    Rollback {
        /// Tokens asked to undo.
        requested: usize,
        /// Tokens consumed so far.
        available: usize,
    },
}
