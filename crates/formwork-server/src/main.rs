//! The `formwork` command: structured generation from the command line, and the
//! OpenAI-compatible server (`formwork serve`).
//!
//! Subcommands compose the library crates; each prints its result on stdout and, on failure,
//! one line on stderr with exit code 2 for bad input (an invalid schema, say) and 1 for
//! anything else.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod cli_bench;
mod cli_generate;
mod cli_grammar;
mod cli_index;
mod cli_schema;
mod cli_serve;
mod cli_template;

/// Structured generation: JSON Schema, regex, choice and grammar constraints for language models.
#[derive(Parser)]
#[command(name = "formwork", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile JSON Schemas to regexes and sample documents from them.
    Schema(cli_schema::SchemaArgs),
    /// Compile GBNF and Lark grammars and sample strings from them.
    Grammar(cli_grammar::GrammarArgs),
    /// Render conversations through a model's chat template.
    Template(cli_template::TemplateArgs),
    /// Build the token-level index of a schema or regex over a model's vocabulary.
    Index(cli_index::IndexArgs),
    /// Generate one chat reply, optionally constrained, from a model.
    Generate(cli_generate::GenerateArgs),
    /// Time to first token and decode speed, unconstrained and constrained.
    Bench(cli_bench::BenchArgs),
    /// Serve a model over HTTP with OpenAI's chat-completions and completions API.
    Serve(cli_serve::ServeArgs),
}

/// An error the binary reports: bad input (exit 2) or a failure (exit 1).
pub(crate) enum CliError {
    /// The user's input is invalid or unsupported.
    Input(String),
    /// Something else went wrong.
    Other(anyhow::Error),
}

/// The text of `file`, or of standard input when it is `-`; `what` (`schema`, `grammar`)
/// names it in errors.
pub(crate) fn read_input(file: &Path, what: &str) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("reading the {what} from standard input"))?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Other(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Schema(args) => cli_schema::run(args),
        Command::Grammar(args) => cli_grammar::run(args),
        Command::Index(args) => cli_index::run(args),
        Command::Generate(args) => cli_generate::run(args),
        Command::Bench(args) => cli_bench::run(args),
        Command::Serve(args) => cli_serve::run(args),
        // Every template failure is about the user's files: a bad template, bad messages.
        Command::Template(args) => {
            cli_template::run(args).map_err(|e| CliError::Input(format!("{e:#}")))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Input(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(CliError::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
