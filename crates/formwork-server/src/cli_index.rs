//! `formwork index`: build the token-level index of a schema or regex over a model's
//! vocabulary and report its size and timings as one JSON line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use formwork_index::{Guide, Index, IndexConfig, Vocabulary};
use formwork_schema::Compiler;

use crate::CliError;

/// Arguments of `formwork index`.
#[derive(Args)]
pub(crate) struct IndexArgs {
    /// A JSON Schema file to compile and index.
    #[arg(long, conflicts_with = "regex", required_unless_present = "regex")]
    schema: Option<PathBuf>,
    /// A regex to index (matched in full).
    #[arg(long)]
    regex: Option<String>,
    /// The GGUF model whose vocabulary to index over.
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// A Hugging Face `tokenizer.json` whose vocabulary to index over, instead of `--model`.
    #[arg(long, conflicts_with = "model")]
    tokenizer: Option<PathBuf>,
    /// Compute states on first use; `compile_ms` is then the time to the first mask.
    #[arg(long)]
    lazy: bool,
}

pub(crate) fn run(args: IndexArgs) -> Result<(), CliError> {
    let vocab_start = Instant::now();
    let vocab = match &args.tokenizer {
        // The error names the file already.
        Some(path) => {
            Vocabulary::from_tokenizer_file(path).map_err(|e| CliError::Input(e.to_string()))?
        }
        None => Vocabulary::from_gguf(&args.model)
            .map_err(|e| CliError::Input(format!("{}: {e}", args.model.display())))?,
    };
    vocab.trie();
    let vocab_ms = vocab_start.elapsed().as_secs_f64() * 1e3;

    let text = match &args.schema {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => None,
    };
    let start = Instant::now();
    let regex = match (&text, &args.regex) {
        (Some(text), _) => {
            Compiler::new()
                .compile_str(text)
                .map_err(|e| CliError::Input(e.to_string()))?
                .regex
        }
        (None, Some(regex)) => regex.clone(),
        (None, None) => return Err(CliError::Input("give --schema FILE or --regex R".into())),
    };
    let config = IndexConfig {
        lazy: args.lazy,
        ..IndexConfig::default()
    };
    let index = Arc::new(
        Index::with_config(&regex, &vocab, config)
            .map_err(|e| CliError::Input(format!("building the index: {e}")))?,
    );
    let built = Instant::now();
    let guide = Guide::new(index.clone());
    let mask = guide.mask();
    let mask_ready = Instant::now();
    let allowed: u32 = mask.iter().map(|w| w.count_ones()).sum();
    let compile_ms = if args.lazy {
        mask_ready - start
    } else {
        built - start
    }
    .as_secs_f64()
        * 1e3;
    let first_mask_us = (mask_ready - built).as_secs_f64() * 1e6;
    let line = serde_json::json!({
        "states": index.state_count(),
        "compile_ms": round(compile_ms, 3),
        "first_mask_us": round(first_mask_us, 1),
        "allowed_at_start": allowed,
        "dfa_states": index.dfa_state_count(),
        "memory_bytes": index.memory_usage(),
        "vocab_ms": round(vocab_ms, 3),
        "lazy": args.lazy,
    });
    writeln!(std::io::stdout().lock(), "{line}").context("writing the report")?;
    Ok(())
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}
