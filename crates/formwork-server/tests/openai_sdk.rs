//! The official OpenAI Python SDK against `formwork serve` on the default model.
//!
//! Creates (once) a virtualenv under the cargo target dir with `openai pydantic pytest
//! jsonschema` from PyPI, starts `formwork serve` on
//! `models/SmolLM2-135M-Instruct.Q4_1.gguf` at a free local port, waits for `/health`,
//! runs `tests/python/test_openai_sdk.py` with `FORMWORK_BASE_URL` pointing at it, and
//! stops the server. Needs `python3` with `venv`, network access to PyPI on the first
//! run, and the model (`cargo xtask fetch-model`).

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const PACKAGES: &[&str] = &["openai", "pydantic", "pytest", "jsonschema"];
const STARTUP: Duration = Duration::from_secs(180);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtualenv's python, creating the virtualenv on first use.
fn python() -> PathBuf {
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free port")
        .port()
}

/// The server process; killed when dropped, so a failing test never leaves it behind.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(model: &Path) -> Server {
        let port = free_port();
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("formwork-serve-{port}.log"));
        let out = fs::File::create(&log).expect("creating the server log");
        let err = out.try_clone().expect("cloning the server log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_formwork"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting `formwork serve`");
        let mut server = Server { child, port, log };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "`formwork serve` exited with {status} before it was healthy; its log:\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if health(self.port) {
                return;
            }
            assert!(
                start.elapsed() < STARTUP,
                "`formwork serve` was not healthy after {STARTUP:?}; its log:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /health` answers 200.
fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}

#[test]
fn openai_python_sdk_against_default_model() {
    let model = workspace_root().join(MODEL);
    assert!(
        model.exists(),
        "this test needs the default model at {}: run `cargo xtask fetch-model`",
        model.display()
    );
    let python = python();
    let server = Server::start(&model);
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_openai_sdk.py");
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
        "the OpenAI SDK tests failed ({status}); server log: {}",
        server.log.display()
    );
}
