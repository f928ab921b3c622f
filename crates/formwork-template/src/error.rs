//! The crate's one error type.
//!
//! Every failure — a template that does not parse, one that calls a filter
//! nobody defined, one that calls `raise_exception`, a model that carries no
//! template, a file that cannot be read — is a variant of [`Error`], carrying
//! the template's name and, where the engine knows it, the line.

use std::path::PathBuf;

/// What went wrong while loading, compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The template does not parse.
    #[error("syntax error in chat template `{template}`{}: {message}", at_line(*.line))]
    Syntax {
        /// The template's name.
        template: String,
        /// The 1-based line of the error, where known.
        line: Option<usize>,
        /// What the parser said.
        message: String,
    },

    /// The template applies a filter that does not exist.
    #[error("chat template `{template}`{} uses an undefined filter `{filter}`", at_line(*.line))]
    UnknownFilter {
        /// The template's name.
        template: String,
        /// The 1-based line of the use, where known.
        line: Option<usize>,
        /// The filter's name.
        filter: String,
    },

    /// The template applies a test (`is name`) that does not exist.
    #[error("chat template `{template}`{} uses an undefined test `{test}`", at_line(*.line))]
    UnknownTest {
        /// The template's name.
        template: String,
        /// The 1-based line of the use, where known.
        line: Option<usize>,
        /// The test's name.
        test: String,
    },

    /// The template calls a function that does not exist.
    #[error("chat template `{template}`{} calls an undefined function: {message}", at_line(*.line))]
    UnknownFunction {
        /// The template's name.
        template: String,
        /// The 1-based line of the call, where known.
        line: Option<usize>,
        /// What the engine said.
        message: String,
    },

    /// The template called `raise_exception(message)`: it refuses the
    /// conversation (for instance "System role not supported").
    #[error("chat template `{template}`{} raised an exception: {message}", at_line(*.line))]
    RaiseException {
        /// The template's name.
        template: String,
        /// The 1-based line of the call, where known.
        line: Option<usize>,
        /// The message the template passed.
        message: String,
    },

    /// Rendering failed for another reason: an undefined value used in an
    /// operation, a type error, iterating over `none`...
    #[error("cannot render chat template `{template}`{}: {message}", at_line(*.line))]
    Render {
        /// The template's name.
        template: String,
        /// The 1-based line of the failure, where known.
        line: Option<usize>,
        /// What the engine said.
        message: String,
    },

    /// The source holds no chat template, or none of the requested name.
    #[error("{}", missing_message(.source_name, .requested.as_deref(), .available))]
    MissingTemplate {
        /// Where the template was looked for (a path or "GGUF metadata").
        source_name: String,
        /// The name asked for, if any.
        requested: Option<String>,
        /// The names that the source does hold.
        available: Vec<String>,
    },

    /// The file or metadata holding the template cannot be read or is malformed.
    #[error("bad chat template source {}: {message}", .path.as_ref().map_or_else(|| "(in memory)".to_owned(), |p| format!("`{}`", p.display())))]
    BadSource {
        /// The file, where there is one.
        path: Option<PathBuf>,
        /// What is wrong with it.
        message: String,
    },

    /// A message, tool or argument could not be turned into template input.
    #[error("bad chat template input: {0}")]
    BadInput(String),
}

impl Error {
    /// The name of the template the error is about, where there is one.
    pub fn template_name(&self) -> Option<&str> {
        match self {
            Error::Syntax { template, .. }
            | Error::UnknownFilter { template, .. }
            | Error::UnknownTest { template, .. }
            | Error::UnknownFunction { template, .. }
            | Error::RaiseException { template, .. }
            | Error::Render { template, .. } => Some(template),
            _ => None,
        }
    }

    /// The 1-based template line the error is about, where known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Syntax { line, .. }
            | Error::UnknownFilter { line, .. }
            | Error::UnknownTest { line, .. }
            | Error::UnknownFunction { line, .. }
            | Error::RaiseException { line, .. }
            | Error::Render { line, .. } => *line,
            _ => None,
        }
    }

    pub(crate) fn bad_source(path: Option<&std::path::Path>, message: impl Into<String>) -> Error {
        Error::BadSource {
            path: path.map(|p| p.to_path_buf()),
            message: message.into(),
        }
    }
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

fn missing_message(source: &str, requested: Option<&str>, available: &[String]) -> String {
    let mut s = match requested {
        Some(name) => format!("{source} has no chat template named `{name}`"),
        None => format!("{source} has no chat template"),
    };
    if !available.is_empty() {
        s.push_str(&format!(" (it has: {})", available.join(", ")));
    }
    s
}

/// The payload of a `raise_exception` call, kept as the source of the
/// engine's error so that it can be told apart from other failures.
#[derive(Debug)]
pub(crate) struct RaisedException(pub String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// Converts an engine error into [`Error`], for the template `template`.
pub(crate) fn from_minijinja(template: &str, err: minijinja::Error) -> Error {
    use minijinja::ErrorKind;

    let line = err.line();
    // Look through the chain (includes, macros) for a raise_exception payload.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = cause {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return Error::RaiseException {
                template: template.to_owned(),
                line,
                message: raised.0.clone(),
            };
        }
        cause = e.source();
    }
    let message = err
        .detail()
        .map_or_else(|| err.kind().to_string(), str::to_owned);
    let template = template.to_owned();
    match err.kind() {
        ErrorKind::SyntaxError | ErrorKind::BadEscape | ErrorKind::InvalidDelimiter => {
            Error::Syntax {
                template,
                line,
                message,
            }
        }
        ErrorKind::UnknownFilter => Error::UnknownFilter {
            template,
            line,
            filter: strip_unknown(&message, "filter"),
        },
        ErrorKind::UnknownTest => Error::UnknownTest {
            template,
            line,
            test: strip_unknown(&message, "test"),
        },
        ErrorKind::UnknownFunction => Error::UnknownFunction {
            template,
            line,
            message,
        },
        ErrorKind::OutOfFuel => Error::Render {
            template,
            line,
            message:
                "rendering ran out of fuel: the template does too much work (an endless loop?)"
                    .into(),
        },
        _ => Error::Render {
            template,
            line,
            message,
        },
    }
}

/// Extracts `name` from minijinja's "filter name is unknown".
fn strip_unknown(message: &str, what: &str) -> String {
    message
        .strip_prefix(what)
        .and_then(|m| m.strip_suffix("is unknown"))
        .map_or_else(|| message.to_owned(), |m| m.trim().to_owned())
}
