//! Shared by the integration tests: a tiny random model, servers on random ports, and a
//! small blocking HTTP/1.1 client (no HTTP client dependency), with SSE parsing.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use formwork_engine::{Engine, EngineConfig};
use formwork_model::testing::{TinySpec, write_tiny_gguf};
use formwork_server::app::{AppState, ServerConfig};
use serde_json::Value;
use tokio::sync::oneshot;

/// The tiny random model (context 1024), written once per test process.
pub fn tiny_model_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| write_tiny("tiny-llama.gguf", TinySpec::default()))
}

/// The tiny model with a 32k context, for streams that must outlast a test's steps (it
/// generates a thousand tokens in well under a second on an idle machine).
pub fn long_tiny_model_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        write_tiny(
            "tiny-llama-32k.gguf",
            TinySpec {
                context_length: 32_768,
                ..TinySpec::default()
            },
        )
    })
}

fn write_tiny(name: &str, spec: TinySpec) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("formwork-server-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the test model folder");
    let path = dir.join(name);
    write_tiny_gguf(&path, &spec).expect("writing the tiny model");
    path
}

/// The default model (SmolLM2-135M-Instruct Q4_1), or a panic saying how to get it.
pub fn default_model_path() -> PathBuf {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "this test needs the default model at {}: run `cargo xtask fetch-model`",
        path.display()
    );
    path
}

/// An engine on a model file.
pub fn engine_on(path: &Path, config: EngineConfig) -> Arc<Engine> {
    let model =
        formwork_model::load(path, &formwork_model::Device::Cpu).expect("loading the model");
    Arc::new(Engine::new(model, config).expect("starting the engine"))
}

/// An engine on the tiny model.
pub fn tiny_engine(config: EngineConfig) -> Arc<Engine> {
    engine_on(tiny_model_path(), config)
}

/// An engine on the 32k-context tiny model, for streams that run for many seconds.
pub fn long_tiny_engine(config: EngineConfig) -> Arc<Engine> {
    engine_on(long_tiny_model_path(), config)
}

/// One tiny-model engine per test process, for the tests that do not watch its gauges.
pub fn shared_engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| tiny_engine(EngineConfig::default()))
        .clone()
}

/// A server on [`shared_engine`] with a 64 KiB body limit.
pub fn server() -> Server {
    Server::start(
        shared_engine(),
        ServerConfig {
            max_body_bytes: 64 * 1024,
            ..ServerConfig::default()
        },
    )
}

/// A server on a random local port, running on its own runtime thread; it shuts down
/// (gracefully, with a short deadline) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<formwork_server::serve::Shutdown>>,
}

impl Server {
    pub fn start(engine: Arc<Engine>, config: ServerConfig) -> Server {
        Server::start_with_deadline(engine, config, Duration::from_secs(5))
    }

    pub fn start_with_deadline(
        engine: Arc<Engine>,
        config: ServerConfig,
        deadline: Duration,
    ) -> Server {
        let state = Arc::new(AppState::new(engine, config));
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, addr) = std::sync::mpsc::channel();
        let serving = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("test runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("binding a test port");
                bound.send(listener.local_addr().unwrap()).unwrap();
                let shutdown = async move {
                    let _ = stopped.await;
                };
                formwork_server::serve::serve(listener, serving, shutdown, deadline)
                    .await
                    .expect("serving")
            })
        });
        let addr = addr.recv().expect("the server did not start");
        Server {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Signals shutdown and waits for the server to return.
    pub fn shutdown(mut self) -> formwork_server::serve::Shutdown {
        self.stop_and_join().expect("the server thread")
    }

    fn stop_and_join(&mut self) -> Option<formwork_server::serve::Shutdown> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().and_then(|t| t.join().ok())
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        request(self.addr, "POST", path, &[], body.to_string().as_bytes())
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], b"")
    }

    /// The value of one sample line of `/metrics` (`name` with its labels, exactly).
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.get("/metrics").text();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_and_join();
        }
    }
}

/// A whole HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of an SSE body (comments skipped), checking the framing.
    pub fn events(&self) -> Vec<String> {
        sse_events(&self.text())
    }

    /// Asserts an error in OpenAI's shape with this status; returns the error object.
    pub fn error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        let error = body["error"].clone();
        let keys: Vec<&str> = error
            .as_object()
            .unwrap_or_else(|| panic!("no error object: {body}"))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["message", "type", "param", "code"], "{body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        error
    }
}

/// Splits an SSE body into its `data:` payloads; every event must be one `data:` line
/// or a comment, and the body must end with a blank line.
pub fn sse_events(text: &str) -> Vec<String> {
    assert!(
        text.ends_with("\n\n"),
        "an SSE body ends with a blank line: {text:?}"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"));
            assert!(!data.contains('\n'), "one line per event: {e:?}");
            data.to_owned()
        })
        .collect()
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = send(addr, method, path, headers, body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reading the response");
    parse_response(&raw)
}

/// Opens a connection and sends a request; the caller reads the response.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connecting to the test server");
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .expect("sending the request");
    // The server may answer (a 413) before reading the whole body and close.
    let _ = stream.write_all(body);
    stream
}

/// Reads a response's status line and headers from a stream, leaving the body.
pub fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("reading the status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("reading a header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    (status, headers)
}

/// Reads a response body of the length its `Content-Length` header gives, leaving the
/// connection open after it.
pub fn read_sized_body(reader: &mut impl Read, headers: &[(String, String)]) -> Vec<u8> {
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .expect("a content-length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("reading the body");
    body
}

/// Sends a streamed chat request, checks that it is answered 200, and reads the stream's
/// lines until one meets `until`; returns the connection with the rest unread.
pub fn open_stream(
    addr: SocketAddr,
    body: &Value,
    until: impl FnMut(&str) -> bool,
) -> BufReader<TcpStream> {
    open_stream_at(addr, "/v1/chat/completions", body, until)
}

/// [`open_stream`] on another route.
pub fn open_stream_at(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    mut until: impl FnMut(&str) -> bool,
) -> BufReader<TcpStream> {
    let stream = send(addr, "POST", path, &[], body.to_string().as_bytes());
    let mut reader = BufReader::new(stream);
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 200);
    let mut line = String::new();
    while !until(&line) {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("reading the stream") > 0,
            "the stream ended early"
        );
    }
    reader
}

/// Opens a stream of 30,000 tokens (tens of seconds on the 32k tiny model, far longer
/// than the steps of a test) and reads until its first generated token; returns the
/// connection.
pub fn open_long_stream(addr: SocketAddr) -> BufReader<TcpStream> {
    let body = serde_json::json!({"messages": [{"role": "user", "content": "Go on forever"}],
                                  "max_tokens": 30_000, "ignore_eos": true, "stream": true,
                                  "temperature": 1.0});
    // The role chunk, then the first token's.
    let mut data_lines = 0;
    open_stream(addr, &body, |line| {
        if line.starts_with("data: ") {
            data_lines += 1;
        }
        data_lines == 2
    })
}

/// Polls `/metrics` until `sample` has `value`, or fails after `timeout`.
/// Drops a client's open stream once its sequence runs, and waits until the server cancelled
/// it and freed the sequence.
pub fn disconnect_and_wait_cancelled(s: &Server, reader: BufReader<TcpStream>) {
    let wait = |sample: &str, value: f64| {
        wait_for_metric(s, sample, |v| v == value, Duration::from_secs(10));
    };
    wait("formwork_active_sequences", 1.0);
    drop(reader);
    wait("formwork_active_sequences", 0.0);
    wait(
        "formwork_sequences_finished_total{reason=\"cancelled\"}",
        1.0,
    );
}

pub fn wait_for_metric(s: &Server, sample: &str, ok: impl Fn(f64) -> bool, timeout: Duration) {
    let start = Instant::now();
    loop {
        let v = s.metric(sample);
        if v.is_some_and(&ok) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{sample} is {v:?} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse_response(raw: &[u8]) -> Reply {
    let mut reader = BufReader::new(raw);
    let (status, headers) = read_head(&mut reader);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).expect("reading a chunk size");
            let size = usize::from_str_radix(size.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("reading a chunk");
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body).expect("reading the body");
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// How long `formwork serve` may take to load a model and answer `/health`.
const STARTUP: Duration = Duration::from_secs(180);

/// `formwork serve` as a child process on a free local port; killed when dropped, so a
/// failing test never leaves it behind.
pub struct ServeProcess {
    child: Child,
    pub addr: SocketAddr,
    pub port: u16,
    pub log: PathBuf,
}

impl ServeProcess {
    /// Starts the binary on `model` with extra `args`, and waits until `/health` is 200.
    ///
    /// The server picks its own port (`--port 0`) and the address is read from its log:
    /// a port found free here and passed on could be taken by another test's server
    /// before this one, still loading its model, binds it, and `/health` would then be
    /// answered by the wrong server.
    pub fn start(model: &Path, args: &[&str]) -> ServeProcess {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("formwork-serve-{}-{n}.log", std::process::id()));
        let out = std::fs::File::create(&log).expect("creating the server log");
        let err = out.try_clone().expect("cloning the server log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_formwork"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting `formwork serve`");
        let mut server = ServeProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            port: 0,
            log,
        };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "`formwork serve` exited with {status} before it was healthy; its log:\n{}",
                    self.log_text()
                );
            }
            if self.port == 0
                && let Some(addr) = listening_address(&self.log_text())
            {
                self.addr = addr;
                self.port = addr.port();
            }
            if self.port != 0 && health(self.addr, Duration::from_secs(5)) == Some(200) {
                return;
            }
            assert!(
                start.elapsed() < STARTUP,
                "`formwork serve` was not healthy after {STARTUP:?}; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a server log's `listening on http://ADDR` line.
fn listening_address(log: &str) -> Option<SocketAddr> {
    let (_, rest) = log.split_once("listening on http://")?;
    let end = rest
        .find(|c: char| c.is_whitespace() || c.is_control())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The status of `GET /health`, or `None` when no answer came within `timeout`.
pub fn health(addr: SocketAddr, timeout: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the `formwork` binary with `args` and `stdin`; returns its exit code, stdout and
/// stderr.
pub fn formwork(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_formwork"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A command that fails before reading its input closes the pipe: not this test's error.
    let _ = input.write_all(stdin.unwrap_or("").as_bytes());
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}
