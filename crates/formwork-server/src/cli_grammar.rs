//! `formwork grammar`: compile a GBNF or Lark grammar and show what it lowers to, or sample
//! strings from it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use formwork_engine::GrammarSyntax;
use formwork_grammar::{Grammar, GrammarConfig};

use crate::CliError;
use crate::cli_schema::SampleArgs;

/// Arguments of `formwork grammar`.
#[derive(Args)]
pub(crate) struct GrammarArgs {
    #[command(subcommand)]
    command: GrammarCommand,
}

#[derive(Subcommand)]
enum GrammarCommand {
    /// Print the compiled grammar's rule, production and lexeme counts, then its
    /// productions, one per line (lexemes as `/regex/`).
    Compile {
        #[command(flatten)]
        input: GrammarInput,
    },
    /// Print strings drawn at random from the grammar, one JSON-encoded string per line.
    Sample {
        #[command(flatten)]
        input: GrammarInput,
        #[command(flatten)]
        sample: SampleArgs,
    },
}

#[derive(Args)]
struct GrammarInput {
    /// The grammar file, or `-` for standard input.
    file: PathBuf,
    /// The grammar's syntax, `gbnf` or `lark` (default: from the file's extension,
    /// `.gbnf` or `.lark`).
    #[arg(long, value_parser = parse_syntax)]
    syntax: Option<GrammarSyntax>,
}

fn parse_syntax(name: &str) -> Result<GrammarSyntax, String> {
    GrammarSyntax::from_name(name).ok_or_else(|| format!("`{name}` is not gbnf or lark"))
}

impl GrammarInput {
    /// The syntax: `--syntax`, else the file's extension.
    fn syntax(&self) -> Result<GrammarSyntax, CliError> {
        if let Some(syntax) = self.syntax {
            return Ok(syntax);
        }
        self.file
            .extension()
            .and_then(|e| e.to_str())
            .and_then(GrammarSyntax::from_name)
            .ok_or_else(|| {
                CliError::Input(format!(
                    "cannot tell the syntax of {} from its extension: name it with --syntax gbnf or --syntax lark",
                    self.file.display()
                ))
            })
    }

    /// Reads and compiles the grammar, as the engine does for a grammar constraint.
    fn compile(&self) -> Result<Grammar, CliError> {
        let syntax = self.syntax()?;
        let text = crate::read_input(&self.file, "grammar")?;
        syntax
            .compile(&text, &GrammarConfig::default())
            .map_err(|e| CliError::Input(e.to_string()))
    }
}

pub(crate) fn run(args: GrammarArgs) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match args.command {
        GrammarCommand::Compile { input } => {
            let grammar = input.compile()?;
            writeln!(
                out,
                "# {} rules, {} productions, {} lexemes",
                grammar.rule_count(),
                grammar.productions().len(),
                grammar.lexemes().len()
            )
            .and_then(|()| write!(out, "{grammar}"))
            .context("writing the grammar")?;
        }
        GrammarCommand::Sample { input, sample } => {
            let grammar = input.compile()?;
            for i in 0..sample.count {
                let text = grammar
                    .sample(sample.seed_of(i), sample.soft_limit)
                    .map_err(|e| CliError::Input(e.to_string()))?;
                let line = serde_json::to_string(&String::from_utf8_lossy(&text))
                    .context("encoding a sample")?;
                writeln!(out, "{line}").context("writing a sample")?;
            }
        }
    }
    Ok(())
}
