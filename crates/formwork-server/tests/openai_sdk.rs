//! The official OpenAI Python SDK against `formwork serve` on the default model.
//!
//! Creates (once) a virtualenv under the cargo target dir with `openai pydantic pytest
//! jsonschema` from PyPI, starts `formwork serve` on
//! `models/SmolLM2-135M-Instruct.Q4_1.gguf` at a free local port, waits for `/health`,
//! runs `tests/python/test_openai_sdk.py` with `FORMWORK_BASE_URL` pointing at it, and
//! stops the server; then the same with `test_openai_sdk_reasoning.py` against a server
//! whose chat template opens a reasoning block; then the Responses API
//! (`test_openai_sdk_responses.py`, and `test_openai_sdk_responses_reasoning.py` on the
//! reasoning setup); then `test_openai_sdk_gemma.py` against Gemma 3 270M behind Gemma's
//! chat template. Needs `python3` with `venv`, network access to PyPI on the first run, and
//! the models (`cargo xtask fetch-model`, `cargo xtask fetch-model gemma3-270m`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::ServeProcess;

const PACKAGES: &[&str] = &["openai", "pydantic", "pytest", "jsonschema"];

/// The virtualenv's python, creating the virtualenv on first use (once per test binary:
/// its tests run at once, and two `python3 -m venv` on one folder fail).
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(create_venv).clone()
}

fn create_venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openai-sdk-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".formwork-packages");
    if fs::read_to_string(&ready).ok().as_deref() == Some(&PACKAGES.join(" ")) {
        return python;
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PACKAGES));
    fs::write(&ready, PACKAGES.join(" ")).expect("writing the virtualenv marker");
    python
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// Runs one file of `tests/python` against `formwork serve` on the default model with
/// extra `args`.
fn run_sdk_tests(file: &str, args: &[&str]) {
    run_sdk_tests_on(&common::default_model_path(), file, args);
}

/// Runs one file of `tests/python` against `formwork serve` on `model` with extra `args`.
fn run_sdk_tests_on(model: &Path, file: &str, args: &[&str]) {
    let python = python();
    let server = ServeProcess::start(model, args);
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(file);
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .env(
            "FORMWORK_BASE_URL",
            format!("http://127.0.0.1:{}/v1", server.port),
        )
        .status()
        .expect("running pytest");
    assert!(
        status.success(),
        "the OpenAI SDK tests of {file} failed ({status}); server log: {}",
        server.log.display()
    );
}

#[test]
fn openai_python_sdk_against_default_model() {
    run_sdk_tests("test_openai_sdk.py", &[]);
}

/// The server arguments of a reasoning model: the default model behind a template that
/// opens a `<think>` block (`tests/fixtures/think.jinja`), with `--reasoning-parser
/// deepseek_r1`.
const REASONING_ARGS: &[&str] = &[
    "--chat-template",
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/think.jinja"),
    "--reasoning-parser",
    "deepseek_r1",
];

/// A reasoning model's replies.
#[test]
fn openai_python_sdk_reasoning_on_default_model() {
    run_sdk_tests("test_openai_sdk_reasoning.py", REASONING_ARGS);
}

/// `POST /v1/responses`: `responses.create` whole and streamed, `responses.parse`,
/// function tools over two turns, `metadata.structure`, refusals.
#[test]
fn openai_python_sdk_responses_against_default_model() {
    run_sdk_tests("test_openai_sdk_responses.py", &[]);
}

/// `POST /v1/responses` on a reasoning model: a `reasoning` item, then the structured
/// message, whole and streamed.
#[test]
fn openai_python_sdk_responses_reasoning_on_default_model() {
    run_sdk_tests("test_openai_sdk_responses_reasoning.py", REASONING_ARGS);
}

/// Gemma 3 270M (`cargo xtask fetch-model gemma3-270m`): a base model with no chat template
/// of its own, served behind Gemma's (`--chat-template`), its 262,144-token vocabulary masked
/// by every structured dialect. Skips, saying so, when the model file is absent.
#[test]
fn openai_python_sdk_against_gemma3() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gemma-3-270m-q4_k_m.gguf");
    if !model.exists() {
        eprintln!(
            "SKIPPED: {} is absent: run `cargo xtask fetch-model gemma3-270m`",
            model.display()
        );
        return;
    }
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/chat_templates/google-gemma-2-2b-it.jinja");
    let template = template.to_str().expect("a UTF-8 path");
    run_sdk_tests_on(
        &model,
        "test_openai_sdk_gemma.py",
        &["--chat-template", template],
    );
}
