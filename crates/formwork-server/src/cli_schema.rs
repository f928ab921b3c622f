//! `formwork schema`: compile a JSON Schema to a regex, or sample documents from it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use formwork_index::{ByteDfa, DfaConfig};
use formwork_schema::{Compiler, Whitespace};

use crate::CliError;

/// Arguments of `formwork schema`.
#[derive(Args)]
pub(crate) struct SchemaArgs {
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Print the regex a schema compiles to.
    Compile {
        #[command(flatten)]
        input: SchemaInput,
        /// Also print, on stderr, the keywords the regex does not enforce.
        #[arg(long)]
        warnings: bool,
    },
    /// Print documents drawn at random from the schema's compiled automaton, one per line.
    Sample {
        #[command(flatten)]
        input: SchemaInput,
        #[command(flatten)]
        sample: SampleArgs,
    },
}

/// How many random documents or strings to print, and how (`schema sample`, `grammar sample`).
#[derive(Args)]
pub(crate) struct SampleArgs {
    /// How many to print.
    #[arg(long, default_value_t = 10)]
    pub(crate) count: u64,
    /// Seed of the random walk; equal seeds give equal output.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Length (bytes) after which the walk heads for the nearest end.
    #[arg(long, default_value_t = 256)]
    pub(crate) soft_limit: usize,
}

impl SampleArgs {
    /// The seed of the `i`-th output: spread apart from `seed`'s other outputs.
    pub(crate) fn seed_of(&self, i: u64) -> u64 {
        self.seed.wrapping_mul(0x100_0000_01B3).wrapping_add(i)
    }
}

#[derive(Args)]
struct SchemaInput {
    /// The schema file, or `-` for standard input.
    file: PathBuf,
    /// Allow up to N whitespace characters between tokens (default: none).
    #[arg(long, value_name = "N")]
    whitespace: Option<usize>,
    /// How many times one `$ref` may be expanded along a path.
    #[arg(long, default_value_t = 3)]
    max_recursion: usize,
    /// Let objects carry keys beyond the declared properties when the schema allows them.
    #[arg(long)]
    open_objects: bool,
}

impl SchemaInput {
    fn compile(&self) -> Result<formwork_schema::Compiled, CliError> {
        let text = crate::read_input(&self.file, "schema")?;
        let whitespace = match self.whitespace {
            Some(max) => Whitespace::Flexible { max },
            None => Whitespace::Compact,
        };
        Compiler::new()
            .whitespace(whitespace)
            .max_recursion(self.max_recursion)
            .open_objects(self.open_objects)
            .compile_str(&text)
            .map_err(|e| CliError::Input(e.to_string()))
    }
}

pub(crate) fn run(args: SchemaArgs) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match args.command {
        SchemaCommand::Compile { input, warnings } => {
            let compiled = input.compile()?;
            writeln!(out, "{}", compiled.regex).context("writing the regex")?;
            if warnings {
                for w in &compiled.unenforced {
                    eprintln!("warning: {w}");
                }
            }
        }
        SchemaCommand::Sample { input, sample } => {
            let compiled = input.compile()?;
            let dfa = ByteDfa::with_config(&compiled.regex, DfaConfig::default())
                .map_err(|e| CliError::Input(format!("building the automaton: {e}")))?;
            for i in 0..sample.count {
                let doc = dfa.sample(sample.seed_of(i), sample.soft_limit);
                out.write_all(&doc).context("writing a sample")?;
                out.write_all(b"\n").context("writing a sample")?;
            }
        }
    }
    Ok(())
}
