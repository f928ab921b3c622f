//! Errors from building automata.

/// Why an automaton could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The regex does not parse.
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
}
