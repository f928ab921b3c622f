//! Errors and warnings the compiler reports.
//!
//! A [`SchemaError`] means no regex was produced: the schema is malformed, uses a keyword the
//! compiler cannot express soundly, or the regex would exceed a configured limit. Each variant
//! names the JSON pointer of the offending (sub)schema. An [`Unenforced`] warning means a regex
//! *was* produced but one keyword is not enforced by it; callers that need every keyword
//! enforced can refuse such schemas.

use std::fmt;

/// Why a schema could not be compiled to a regex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The schema is not a valid JSON Schema (a keyword has the wrong type, say).
    #[error("invalid schema at {pointer}: {reason}")]
    Invalid {
        /// JSON pointer of the offending subschema.
        pointer: String,
        /// What is wrong.
        reason: String,
    },
    /// A keyword (or combination of keywords) the compiler cannot express as a regex without
    /// accepting invalid documents.
    #[error("unsupported keyword `{keyword}` at {pointer}: {reason}")]
    Unsupported {
        /// The keyword, e.g. `if` or `pattern`.
        keyword: String,
        /// JSON pointer of the subschema carrying it.
        pointer: String,
        /// Why it cannot be expressed.
        reason: String,
    },
    /// A `pattern` that is not a valid ECMA-262 regex or uses a feature with no regular
    /// equivalent (backreferences, lookaround, word boundaries).
    #[error("cannot translate pattern {pattern:?} at {pointer}: {reason}")]
    Pattern {
        /// JSON pointer of the subschema carrying the pattern.
        pointer: String,
        /// The pattern as written in the schema.
        pattern: String,
        /// Why it cannot be translated.
        reason: String,
    },
    /// A regex the compiler generated that regex-syntax's parser (as regex-automata and
    /// `formwork-index` configure it) would refuse, in practice nesting deeper than its limit of
    /// 250 groups, repetitions and alternations. Names the deepest subschema whose regex is
    /// refused and the keyword that built it.
    #[error("the regex for `{keyword}` at {pointer} cannot be parsed: {reason}")]
    Regex {
        /// JSON pointer of the subschema whose regex is refused.
        pointer: String,
        /// The keyword that produced it (`properties`, `items`, `enum`, `anyOf`...).
        keyword: String,
        /// regex-syntax's reason.
        reason: String,
    },
    /// A whitespace pattern ([`crate::Whitespace::pattern`]) that is not a usable regex.
    #[error("invalid whitespace pattern {pattern:?}: {reason}")]
    Whitespace {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `$ref` that does not resolve inside the document.
    #[error("unresolved $ref {reference:?} at {pointer}")]
    UnresolvedRef {
        /// JSON pointer of the subschema carrying the reference.
        pointer: String,
        /// The reference as written.
        reference: String,
    },
    /// No document satisfies the schema (as far as the compiler can express it).
    #[error("schema at {pointer} accepts no document the compiler can express")]
    Unsatisfiable {
        /// JSON pointer of the unsatisfiable subschema.
        pointer: String,
    },
    /// The schema nests deeper than the compiler's traversal limit.
    #[error("schema at {pointer} nests deeper than the limit of {limit}")]
    TooDeep {
        /// Where the limit was hit.
        pointer: String,
        /// The configured limit.
        limit: usize,
    },
    /// The regex would be larger than the configured size limit.
    #[error("regex would exceed the size limit: at least {size} bytes, limit {limit}")]
    TooLarge {
        /// Size reached when compilation stopped, in bytes.
        size: usize,
        /// The configured limit, in bytes.
        limit: usize,
    },
}

impl SchemaError {
    /// The keyword this error is about, for grouping refusals (`"$ref"`, `"pattern"`, ...).
    pub fn keyword(&self) -> &str {
        match self {
            SchemaError::Invalid { .. } => "invalid",
            SchemaError::Unsupported { keyword, .. } | SchemaError::Regex { keyword, .. } => {
                keyword
            }
            SchemaError::Pattern { .. } => "pattern",
            SchemaError::UnresolvedRef { .. } => "$ref",
            SchemaError::Unsatisfiable { .. } => "unsatisfiable",
            SchemaError::TooDeep { .. } => "depth",
            SchemaError::TooLarge { .. } => "size",
            SchemaError::Whitespace { .. } => "whitespace_pattern",
        }
    }

    /// The JSON pointer the error refers to, when it has one.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            SchemaError::Invalid { pointer, .. }
            | SchemaError::Unsupported { pointer, .. }
            | SchemaError::Pattern { pointer, .. }
            | SchemaError::Regex { pointer, .. }
            | SchemaError::UnresolvedRef { pointer, .. }
            | SchemaError::Unsatisfiable { pointer }
            | SchemaError::TooDeep { pointer, .. } => Some(pointer),
            SchemaError::TooLarge { .. } | SchemaError::Whitespace { .. } => None,
        }
    }
}

/// A keyword present in the schema that the produced regex does not enforce.
///
/// Documents matching the regex may violate this keyword. The compiler only reports keywords
/// here that it documents as not enforced (`uniqueItems`, the exclusivity of `oneOf` where it
/// cannot prove the branches disjoint, formats it does not know).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unenforced {
    /// The keyword, e.g. `uniqueItems`.
    pub keyword: String,
    /// JSON pointer of the subschema carrying it.
    pub pointer: String,
}

impl fmt::Display for Unenforced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` at {} is not enforced", self.keyword, self.pointer)
    }
}
