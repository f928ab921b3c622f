//! The Vercel AI SDK against `formwork serve` on the default model: its default OpenAI
//! provider (`openai(model)`, which speaks the Responses API) with `generateObject` and a
//! zod schema, `streamText`, a required tool call, and `openai.chat(model)`.
//!
//! Installs (once) `ai@7`, `@ai-sdk/openai@4` and `zod@4` from npm into a folder under the
//! cargo target dir, starts `formwork serve` at a free local port, and runs
//! `tests/js/vercel_ai_sdk.cjs` with Node. Needs `node` and `npm` (the test prints why and
//! passes when either is missing: Node is not part of the Rust toolchain), network access
//! to npm on the first run, and the model (`cargo xtask fetch-model`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::ServeProcess;

const PACKAGES: &[&str] = &["ai@7", "@ai-sdk/openai@4", "zod@4"];

/// Whether `tool --version` runs.
fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The `node_modules` folder with the packages, installing them on first use.
fn node_modules() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vercel-ai-sdk");
    let ready = dir.join(".formwork-packages");
    if fs::read_to_string(&ready).ok().as_deref() == Some(&PACKAGES.join(" ")) {
        return dir.join("node_modules");
    }
    fs::create_dir_all(&dir).expect("creating the npm folder");
    fs::write(dir.join("package.json"), "{\"private\": true}\n").expect("writing package.json");
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .args(PACKAGES)
        .current_dir(&dir)
        .status()
        .expect("running npm install");
    assert!(
        status.success(),
        "npm install {PACKAGES:?} failed: {status}"
    );
    fs::write(&ready, PACKAGES.join(" ")).expect("writing the npm folder marker");
    dir.join("node_modules")
}

#[test]
fn vercel_ai_sdk_against_default_model() {
    if let Some(missing) = ["node", "npm"].into_iter().find(|t| !available(t)) {
        println!("skipped: `{missing}` is not installed; the Vercel AI SDK test needs Node.js");
        return;
    }
    let model = common::default_model_path();
    let modules = node_modules();
    let server = ServeProcess::start(&model, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/vercel_ai_sdk.cjs");
    let status = Command::new("node")
        .arg(&script)
        .env(
            "FORMWORK_BASE_URL",
            format!("http://127.0.0.1:{}/v1", server.port),
        )
        .env("FORMWORK_NODE_MODULES", &modules)
        .status()
        .expect("running node");
    assert!(
        status.success(),
        "the Vercel AI SDK checks failed ({status}); server log: {}",
        server.log.display()
    );
}
