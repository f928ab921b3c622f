//! Why a GGUF file could not be read.

/// Why a GGUF file, or a tensor in it, could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("reading the GGUF file: {0}")]
    Io(String),
    /// The file does not start with the GGUF magic.
    #[error("not a GGUF file (bad magic)")]
    NotGguf,
    /// A GGUF version this reader does not know (it reads 2 and 3).
    #[error("unsupported GGUF version {0} (2 and 3 are supported)")]
    UnsupportedVersion(u32),
    /// The file ends inside the header, or a length points past its end.
    #[error("the GGUF file is truncated or a length in it is corrupt")]
    Truncated,
    /// A value type code that GGUF does not define.
    #[error("unknown GGUF value type {0}")]
    InvalidType(u32),
    /// Arrays nested deeper than this reader accepts.
    #[error("GGUF arrays nested too deeply")]
    TooDeep,
    /// A key is not valid UTF-8.
    #[error("a GGUF key is not valid UTF-8")]
    InvalidKey,
    /// A key appears twice in the metadata.
    #[error("the GGUF metadata key `{0}` appears twice")]
    DuplicateKey(String),
    /// `general.alignment` is not a power of two.
    #[error("`general.alignment` is not a power of two")]
    InvalidAlignment,
    /// A tensor's info is malformed (too many dimensions, sizes that overflow, data past the
    /// end of the file, a duplicate name), or its data cannot be read.
    #[error("tensor `{name}`: {reason}")]
    InvalidTensor {
        /// The tensor's name (lossily decoded when it is not UTF-8).
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl GgufError {
    pub(crate) fn tensor(name: &str, reason: impl Into<String>) -> GgufError {
        GgufError::InvalidTensor {
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(e: std::io::Error) -> GgufError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            GgufError::Truncated
        } else {
            GgufError::Io(e.to_string())
        }
    }
}
