//! `bench serve`: `formwork serve` and llama.cpp's server under the same concurrent chat load.
//!
//! Builds `formwork` in release, starts `formwork serve` on the default model at a free local
//! port (`FORMWORK_THREADS` threads, `--max-sequences` = clients, a KV budget of
//! [`CONTEXT_PER_SEQUENCE`] tokens per client), waits for `/health`, runs the load generator
//! (`scripts/serve_bench.py load`, in the `target/serve-bench-venv` venv) and stops it; then
//! starts llama.cpp's server (`scripts/serve_bench.py llamacpp-server`: the pinned `xllamacpp`
//! wheel, one slot per client with the same context each, the same threads, prompt caching
//! and everything else at the server's defaults) and runs the same load. Prints one table per
//! workload with both servers side by side and their ratio, and writes every figure (each
//! request's too) to `target/bench-serve.json`.
//!
//! The workloads, their messages, the sampling and what counts as a valid reply are the
//! script's (its module doc says what each workload sends).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{LLAMACPP_PACKAGE, build_formwork, python_venv, workspace_root};

/// Tokens of context each sequence (llama.cpp: each slot) may use: the default model's
/// context length. Both servers get this many tokens of KV cache per client in all.
pub const CONTEXT_PER_SEQUENCE: usize = 8192;

/// The load generator's Python packages, pinned.
const PACKAGES: &[&str] = &[LLAMACPP_PACKAGE, "openai==3.63.0", "jsonschema==4.26.0"];

/// How long a server may take to answer `/health` with 200 after it starts.
const STARTUP: Duration = Duration::from_secs(180);

/// The two servers, in the order they run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    Formwork,
    LlamaCpp,
}

impl Server {
    /// The name the script, the JSON file and `--only` use.
    fn key(self) -> &'static str {
        match self {
            Server::Formwork => "formwork",
            Server::LlamaCpp => "llamacpp",
        }
    }

    /// The name in the tables.
    fn title(self) -> &'static str {
        match self {
            Server::Formwork => "Formwork",
            Server::LlamaCpp => "llama.cpp",
        }
    }
}

/// The command line of `bench serve`.
#[derive(Debug)]
struct Options {
    clients: usize,
    requests: usize,
    max_tokens: usize,
    threads: usize,
    workloads: Option<String>,
    servers: Vec<Server>,
    out: PathBuf,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            clients: 8,
            requests: 32,
            max_tokens: 160,
            threads: 2,
            workloads: None,
            servers: vec![Server::Formwork, Server::LlamaCpp],
            out: workspace_root().join("target/bench-serve.json"),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            let number = |v: &String| -> Result<usize> {
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => bail!("{a} takes a positive whole number, not {v:?}"),
                }
            };
            match a.as_str() {
                "--clients" => o.clients = number(value()?)?,
                "--requests" => o.requests = number(value()?)?,
                "--max-tokens" => o.max_tokens = number(value()?)?,
                "--threads" => o.threads = number(value()?)?,
                "--workloads" => o.workloads = Some(value()?.clone()),
                "--out" => o.out = PathBuf::from(value()?),
                "--only" => {
                    o.servers = match value()?.as_str() {
                        "formwork" => vec![Server::Formwork],
                        "llamacpp" => vec![Server::LlamaCpp],
                        other => bail!("--only takes formwork or llamacpp, not {other:?}"),
                    }
                }
                other => bail!(
                    "unknown option {other:?} (expected --clients N, --requests N, \
                     --max-tokens N, --threads N, --workloads A,B, --only formwork|llamacpp \
                     or --out FILE)"
                ),
            }
        }
        Ok(o)
    }

    /// The total KV budget each server gets: one full context per client.
    fn kv_tokens(&self) -> usize {
        self.clients * CONTEXT_PER_SEQUENCE
    }
}

/// Runs `bench serve` with `args` on the model at `model`.
pub fn run(model: &Path, args: &[String]) -> Result<()> {
    let opts = Options::parse(args)?;
    let python = python_venv("serve-bench-venv", PACKAGES)?;
    let formwork = if opts.servers.contains(&Server::Formwork) {
        Some(build_formwork()?)
    } else {
        None
    };
    let started = Instant::now();
    let mut reports = Vec::new();
    for &server in &opts.servers {
        let process = match server {
            Server::Formwork => {
                let bin = formwork.as_deref().context("formwork was not built")?;
                ServerProcess::formwork(bin, model, &opts)?
            }
            Server::LlamaCpp => ServerProcess::llamacpp(&python, model, &opts)?,
        };
        eprintln!("{} is up at {}", server.title(), process.base_url);
        let mut report = load(&python, server, &process.base_url, &opts)?;
        if let (Some(obj), Some(extra)) = (report.as_object_mut(), process.facts.as_object()) {
            obj.extend(extra.clone());
        }
        drop(process);
        reports.push((server, report));
    }
    let elapsed = started.elapsed().as_secs_f64();
    print!("{}", tables(&reports, &opts));
    let file = json!({
        "command": std::iter::once("cargo xtask bench serve".to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
        "model": model.display().to_string(),
        "clients": opts.clients,
        "requests": opts.requests,
        "max_tokens": opts.max_tokens,
        "threads": opts.threads,
        "context_per_sequence": CONTEXT_PER_SEQUENCE,
        "kv_tokens": opts.kv_tokens(),
        "elapsed_s": elapsed,
        "servers": reports
            .iter()
            .map(|(s, r)| (s.key().to_string(), r.clone()))
            .collect::<serde_json::Map<_, _>>(),
    });
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&opts.out, serde_json::to_string_pretty(&file)? + "\n")
        .with_context(|| format!("writing {}", opts.out.display()))?;
    println!(
        "every figure: {} (the whole run took {elapsed:.0} s)",
        opts.out.display()
    );
    Ok(())
}

/// Runs the load generator against `base_url`; returns its report.
fn load(python: &Path, server: Server, base_url: &str, opts: &Options) -> Result<Value> {
    let mut cmd = Command::new(python);
    cmd.arg(workspace_root().join("scripts/serve_bench.py"))
        .args(["load", "--base-url", base_url, "--server", server.key()])
        .args(["--clients", &opts.clients.to_string()])
        .args(["--requests", &opts.requests.to_string()])
        .args(["--max-tokens", &opts.max_tokens.to_string()]);
    if let Some(w) = &opts.workloads {
        cmd.args(["--workloads", w]);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/serve_bench.py")?;
    if !out.status.success() {
        bail!(
            "the load generator failed against {} ({})",
            server.title(),
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the load generator printed no JSON line")?;
    Ok(serde_json::from_str(line)?)
}

/// A running server: killed when dropped, so an error on the way stops it too.
struct ServerProcess {
    child: Child,
    base_url: String,
    /// What the server's launcher reported (llama.cpp: the xllamacpp version).
    facts: Value,
    log: PathBuf,
}

impl ServerProcess {
    /// `formwork serve` on `model` at a free port, waited for.
    fn formwork(bin: &Path, model: &Path, opts: &Options) -> Result<ServerProcess> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let log = workspace_root().join("target/bench-serve-formwork.log");
        let out = std::fs::File::create(&log).context("creating the server log")?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--max-sequences", &opts.clients.to_string()])
            .args(["--kv-cache-tokens", &opts.kv_tokens().to_string()])
            .env("FORMWORK_THREADS", opts.threads.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting `formwork serve`")?;
        let mut server = ServerProcess {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            facts: json!({}),
            log,
        };
        server.wait_healthy(port)?;
        Ok(server)
    }

    /// llama.cpp's server (through `scripts/serve_bench.py llamacpp-server`), waited for.
    fn llamacpp(python: &Path, model: &Path, opts: &Options) -> Result<ServerProcess> {
        let log = workspace_root().join("target/bench-serve-llamacpp.log");
        let err = std::fs::File::create(&log).context("creating the server log")?;
        let mut child = Command::new(python)
            .arg(workspace_root().join("scripts/serve_bench.py"))
            .arg("llamacpp-server")
            .arg("--model")
            .arg(model)
            .args(["--threads", &opts.threads.to_string()])
            .args(["--slots", &opts.clients.to_string()])
            .args(["--ctx-per-slot", &CONTEXT_PER_SEQUENCE.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .context("starting llama.cpp's server")?;
        let mut first = String::new();
        if let Some(stdout) = child.stdout.take() {
            BufReader::new(stdout)
                .read_line(&mut first)
                .context("reading llama.cpp's address")?;
        }
        let mut server = ServerProcess {
            child,
            base_url: String::new(),
            facts: json!({}),
            log,
        };
        let facts: Value = match serde_json::from_str(&first) {
            Ok(v) => v,
            Err(_) => bail!(
                "llama.cpp's server did not start; its log:\n{}",
                server.log_tail()
            ),
        };
        server.base_url = facts["base_url"]
            .as_str()
            .context("no base_url from the llama.cpp launcher")?
            .trim_end_matches('/')
            .to_string();
        let port = server
            .base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no port in {}", server.base_url))?;
        server.facts = json!({ "xllamacpp": facts["xllamacpp"] });
        server.wait_healthy(port)?;
        Ok(server)
    }

    /// Waits until `/health` on 127.0.0.1:`port` answers 200.
    fn wait_healthy(&mut self, port: u16) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited with {status} before it was healthy; its log:\n{}",
                    self.log_tail()
                );
            }
            if health(port) == Some(200) {
                return Ok(());
            }
            if start.elapsed() > STARTUP {
                bail!(
                    "the server was not healthy after {STARTUP:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The end of the server's log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The llama.cpp launcher exits when its stdin closes (so it also goes when xtask is
        // killed); `formwork serve` is killed.
        if let Some(stdin) = self.child.stdin.take() {
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of `GET /health` on 127.0.0.1:`port`, if it answers.
fn health(port: u16) -> Option<u16> {
    let addr = ("127.0.0.1", port);
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}

/// One figure of the tables: its label, its field in a workload's report, its unit.
const FIGURES: &[(&str, &str, &str)] = &[
    ("aggregate tok/s", "agg_tok_s", ""),
    ("TTFT mean", "ttft_mean_s", " s"),
    ("TTFT p99", "ttft_p99_s", " s"),
    ("latency p50", "latency_p50_s", " s"),
    ("latency p99", "latency_p99_s", " s"),
    ("completion tokens", "completion_tokens", ""),
    ("prompt tokens cached", "cached_tokens", ""),
];

/// The Markdown tables: one per workload, the servers side by side, and their ratio.
fn tables(reports: &[(Server, Value)], opts: &Options) -> String {
    let mut out = String::new();
    let workloads: Vec<&Value> = reports
        .first()
        .and_then(|(_, r)| r["workloads"].as_array())
        .map(|w| w.iter().collect())
        .unwrap_or_default();
    for first in workloads {
        let name = first["workload"].as_str().unwrap_or("?");
        let rows: Vec<(Server, &Value)> = reports
            .iter()
            .filter_map(|(s, r)| {
                let w = r["workloads"]
                    .as_array()?
                    .iter()
                    .find(|w| w["workload"] == name)?;
                Some((*s, w))
            })
            .collect();
        let _ = writeln!(
            out,
            "\n### {name}: {} requests, {} clients, max_tokens {}, {} threads\n",
            first["requests"], opts.clients, opts.max_tokens, opts.threads
        );
        let head: Vec<&str> = rows.iter().map(|(s, _)| s.title()).collect();
        let ratio = rows.len() == 2;
        let _ = writeln!(
            out,
            "| figure | {} |{}",
            head.join(" | "),
            if ratio { " ratio |" } else { "" }
        );
        let _ = writeln!(
            out,
            "|---|{}{}",
            "---:|".repeat(rows.len()),
            if ratio { "---:|" } else { "" }
        );
        for (label, key, unit) in FIGURES {
            let values: Vec<Option<f64>> = rows.iter().map(|(_, w)| w[*key].as_f64()).collect();
            let cells: Vec<String> = values
                .iter()
                .map(|v| match v {
                    Some(x) if unit.is_empty() && x.fract() == 0.0 => format!("{x:.0}"),
                    Some(x) if unit.is_empty() => format!("{x:.1}"),
                    Some(x) => format!("{x:.2}{unit}"),
                    None => "-".into(),
                })
                .collect();
            let r = match values.as_slice() {
                [Some(a), Some(b)] if ratio && *b != 0.0 => format!(" {:.2} |", a / b),
                _ if ratio => " - |".into(),
                _ => String::new(),
            };
            let _ = writeln!(out, "| {label} | {} |{r}", cells.join(" | "));
        }
        let valid: Vec<String> = rows
            .iter()
            .map(|(_, w)| format!("{}/{}", w["valid"], w["total"]))
            .collect();
        let _ = writeln!(
            out,
            "| valid | {} |{}",
            valid.join(" | "),
            if ratio { " |" } else { "" }
        );
        for (s, w) in &rows {
            if let Some(e) = w["first_error"].as_str() {
                let _ = writeln!(
                    out,
                    "\n{}: {} errors, the first: {e}",
                    s.title(),
                    w["errors"]
                );
            }
        }
    }
    if reports.len() == 2 {
        out.push_str(
            "\n(ratio: Formwork / llama.cpp; above 1 is better for tok/s, below 1 for times)\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_default_to_the_issue_run() {
        let o = Options::parse(&[]).unwrap();
        assert_eq!(
            (o.clients, o.requests, o.max_tokens, o.threads),
            (8, 32, 160, 2)
        );
        assert_eq!(o.servers, [Server::Formwork, Server::LlamaCpp]);
        assert_eq!(o.kv_tokens(), 8 * CONTEXT_PER_SEQUENCE);
    }

    #[test]
    fn options_parse_and_refuse() {
        let o = Options::parse(&args(&[
            "--clients",
            "4",
            "--requests",
            "8",
            "--max-tokens",
            "32",
            "--only",
            "llamacpp",
            "--workloads",
            "plain",
        ]))
        .unwrap();
        assert_eq!((o.clients, o.requests, o.max_tokens), (4, 8, 32));
        assert_eq!(o.servers, [Server::LlamaCpp]);
        assert_eq!(o.workloads.as_deref(), Some("plain"));
        assert!(Options::parse(&args(&["--clients", "0"])).is_err());
        assert!(Options::parse(&args(&["--only", "vllm"])).is_err());
        assert!(Options::parse(&args(&["--requests"])).is_err());
        assert!(Options::parse(&args(&["--fast"])).is_err());
    }

    #[test]
    fn tables_put_servers_side_by_side_with_the_ratio() {
        let report = |tok: f64, ttft: f64| {
            json!({"workloads": [{
                "workload": "plain", "requests": 8, "agg_tok_s": tok, "ttft_mean_s": ttft,
                "ttft_p99_s": ttft, "latency_p50_s": 1.0, "latency_p99_s": 2.0,
                "completion_tokens": 256, "cached_tokens": 0, "valid": 8, "total": 8,
                "errors": 0, "first_error": null
            }]})
        };
        let opts = Options::parse(&[]).unwrap();
        let t = tables(
            &[
                (Server::Formwork, report(200.0, 0.25)),
                (Server::LlamaCpp, report(100.0, 0.5)),
            ],
            &opts,
        );
        assert!(t.contains("### plain: 8 requests"), "{t}");
        assert!(t.contains("| aggregate tok/s | 200 | 100 | 2.00 |"), "{t}");
        assert!(t.contains("| TTFT mean | 0.25 s | 0.50 s | 0.50 |"), "{t}");
        assert!(t.contains("| valid | 8/8 | 8/8 | |"), "{t}");
        let one = tables(&[(Server::LlamaCpp, report(100.0, 0.5))], &opts);
        assert!(one.contains("| aggregate tok/s | 100 |\n"), "{one}");
    }

    #[test]
    fn health_is_none_when_nothing_listens() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        assert_eq!(health(port), None);
    }
}
