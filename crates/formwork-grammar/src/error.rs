//! Errors from reading, lowering and walking grammars.

/// Why a grammar could not be read, compiled or followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrammarError {
    /// The grammar text does not parse: what was expected, and where (1-based line and column).
    #[error("{syntax} grammar, line {line}, column {column}: {reason}")]
    Syntax {
        /// Which syntax (`"gbnf"`, `"lark"`).
        syntax: &'static str,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong there.
        reason: String,
    },
    /// A rule is used but never defined.
    #[error("rule `{0}` is used but never defined")]
    Undefined(String),
    /// A rule is defined twice.
    #[error("rule `{0}` is defined more than once")]
    Duplicate(String),
    /// The start rule (or the named rule) derives no finite string.
    #[error("rule `{0}` matches no finite string (its language is empty)")]
    Empty(String),
    /// A regex in the grammar does not parse.
    #[error("rule `{rule}`: invalid regex: {reason}")]
    Regex {
        /// The rule (or terminal) holding it.
        rule: String,
        /// regex-syntax's reason.
        reason: String,
    },
    /// The grammar is larger than a configured limit.
    #[error("grammar exceeds the {limit} limit of {max}")]
    TooLarge {
        /// Which limit (`"rules"`, `"symbols"`, `"repetition"`, `"text"`).
        limit: &'static str,
        /// Its value.
        max: usize,
    },
    /// A JSON Schema could not be compiled.
    #[error(transparent)]
    Schema(#[from] formwork_schema::SchemaError),
    /// A lexeme's automaton could not be built.
    #[error("lexeme `{lexeme}`: {source}")]
    Index {
        /// The lexeme's regex (cut to 80 characters).
        lexeme: String,
        /// Why.
        source: formwork_index::IndexError,
    },
    /// The parser's work for one byte went past its bound (a highly ambiguous grammar).
    #[error("the parser needed more than {0} items at one position: the grammar is too ambiguous")]
    Ambiguous(usize),
    /// A token that is not allowed where the guide stands.
    #[error("token {0} is not allowed here")]
    TokenNotAllowed(u32),
    /// A rollback of more tokens than were consumed.
    #[error("cannot roll back {requested} tokens: only {available} were consumed")]
    Rollback {
        /// Tokens asked to undo.
        requested: usize,
        /// Tokens consumed so far.
        available: usize,
    },
}
