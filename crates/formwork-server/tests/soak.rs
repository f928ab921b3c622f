//! A bounded soak on loopback: `formwork serve` on the default model (default limits) takes
//! hundreds of hostile requests while four normal clients stream structured replies.
//!
//! The hostile side: heavy regexes (`\w{0,10000}`, `[\s\S]{0,1000000}` and kin, each new),
//! enums of 50,000 values, 6 MB prompts, a stream of malformed bodies, and hundreds of idle
//! and half-sent connections held open. What must hold: every normal client finishes with
//! valid documents, `/health` answers 200 throughout, every hostile request gets a 4xx in
//! OpenAI's shape (or a 200 where the server can afford it) and never a 5xx, and the
//! process's peak RSS stays under [`PEAK_RSS_BOUND_MB`]. Every loop is bounded in count, and
//! the whole run in time.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ServeProcess, request, sse_events};
use serde_json::{Value, json};

/// The bound on the server's peak resident memory over the whole soak (the goal is 1 GB
/// with the default index cache of 256 MiB; the measured figure is printed).
const PEAK_RSS_BOUND_MB: u64 = 1024;

/// The whole soak must end within this.
const DEADLINE: Duration = Duration::from_secs(420);

fn post(addr: SocketAddr, body: &Value) -> common::Reply {
    request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[],
        body.to_string().as_bytes(),
    )
}

/// A reply a hostile request may get: a 4xx in OpenAI's error shape, or a 200.
fn check_hostile(what: &str, reply: &common::Reply) {
    match reply.status {
        200 => {}
        400..=499 => {
            reply.error(reply.status);
        }
        s => panic!("{what}: status {s}: {}", reply.text()),
    }
}

/// One normal client: streamed chat completions with a JSON schema, every one complete.
fn normal_client(addr: SocketAddr, id: u64, turns: u64) {
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    for turn in 0..turns {
        let body = json!({
            "messages": [{"role": "user", "content": format!("Invent person number {id}.{turn} as JSON.")}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
            "stream": true,
            "seed": id * 100 + turn,
            "max_tokens": 48,
        });
        let reply = post(addr, &body);
        assert_eq!(reply.status, 200, "client {id}: {}", reply.text());
        let events = sse_events(&reply.text());
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let mut content = String::new();
        let mut finish = None;
        for e in &events[..events.len() - 1] {
            let chunk: Value = serde_json::from_str(e).unwrap();
            assert!(chunk.get("error").is_none(), "client {id}: {chunk}");
            let choice = &chunk["choices"][0];
            if let Some(t) = choice["delta"]["content"].as_str() {
                content.push_str(t);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_owned());
            }
        }
        match finish.as_deref() {
            Some("stop") => {
                let doc: Value = serde_json::from_str(&content)
                    .unwrap_or_else(|e| panic!("client {id}: {e}: {content}"));
                assert!(doc["name"].is_string() && doc["age"].is_i64(), "{doc}");
            }
            Some("length") => {}
            other => panic!("client {id}: finish {other:?}"),
        }
    }
}

/// Peak and current resident memory of a process, in MB.
fn rss_mb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn soak_hostile_traffic_beside_normal_clients_on_the_default_model() {
    let start = Instant::now();
    let model = common::default_model_path();
    let mut server = ServeProcess::start(&model, &[]);
    let addr = server.addr;
    let (rss_idle, _) = rss_mb(server.pid());
    let done = AtomicBool::new(false);
    let health_checks = AtomicU64::new(0);
    let slowest_health = Mutex::new(Duration::ZERO);
    let hostile_count = AtomicU64::new(0);
    let held: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());

    std::thread::scope(|s| {
        // `/health` every 200 ms for the whole soak: it must always answer 200.
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let status = common::health(addr, Duration::from_secs(10));
                assert_eq!(status, Some(200), "/health failed during the soak");
                let took = t.elapsed();
                let mut slowest = slowest_health.lock().unwrap();
                *slowest = (*slowest).max(took);
                drop(slowest);
                health_checks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        });

        // Idle and half-sent connections, held open until the end.
        s.spawn(|| {
            for i in 0..300 {
                let Ok(mut c) = TcpStream::connect(addr) else {
                    continue;
                };
                if i % 2 == 1 {
                    let _ =
                        c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le");
                }
                held.lock().unwrap().push(c);
                hostile_count.fetch_add(1, Ordering::Relaxed);
            }
        });

        // Heavy regexes, each one new.
        s.spawn(|| {
            for i in 0..24u32 {
                let regex = match i % 4 {
                    0 => format!(r"\w{{0,{}}}", 10_000 + i),
                    1 => format!(r"[\s\S]{{0,{}}}", 1_000_000 + i),
                    2 => format!(r"(?:[a-z]{{0,30}}@[0-9]{{0,30}}){{0,{}}}", 3_000 + i),
                    _ => format!(r"\d{{{}}}(x|y){{0,{}}}", 1 + i, 200_000 + i),
                };
                let reply = post(
                    addr,
                    &json!({
                        "messages": [{"role": "user", "content": "hi"}],
                        "guided_regex": regex,
                        "max_tokens": 4,
                    }),
                );
                check_hostile(&format!("regex {regex}"), &reply);
                hostile_count.fetch_add(1, Ordering::Relaxed);
            }
        });

        // Huge enums and large prompts.
        s.spawn(|| {
            for i in 0..6u32 {
                let values: Vec<Value> = (0..50_000)
                    .map(|k| Value::from(format!("value-{i}-{k:05}")))
                    .collect();
                let reply = post(
                    addr,
                    &json!({
                        "messages": [{"role": "user", "content": "pick one"}],
                        "response_format": {"type": "json_schema", "json_schema": {
                            "name": "e", "schema": {"enum": values}}},
                        "max_tokens": 8,
                    }),
                );
                check_hostile("a 50k-value enum", &reply);
                hostile_count.fetch_add(1, Ordering::Relaxed);
            }
            let big = "lorem ipsum ".repeat(500_000);
            for _ in 0..8 {
                let reply = post(
                    addr,
                    &json!({"messages": [{"role": "user", "content": big}], "max_tokens": 4}),
                );
                reply.error(400);
                hostile_count.fetch_add(1, Ordering::Relaxed);
            }
        });

        // Malformed and refused requests.
        s.spawn(|| {
            let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
            let bodies: Vec<Vec<u8>> = vec![
                b"{not json".to_vec(),
                deep.into_bytes(),
                br#"{"messages": "nope"}"#.to_vec(),
                br#"{"messages": [{"role": "user", "content": "x"}], "n": 1000}"#.to_vec(),
                br#"{"messages": [{"role": "user", "content": "x"}], "guided_regex": "a("}"#
                    .to_vec(),
                br#"{"messages": [{"role": "user", "content": "x"}], "model": "gpt-9"}"#.to_vec(),
                br#"{"messages": [{"role": "user", "content": "x"}], "temperature": -3}"#.to_vec(),
            ];
            for i in 0..210 {
                let body = &bodies[i % bodies.len()];
                let reply = request(addr, "POST", "/v1/chat/completions", &[], body);
                assert!(
                    (400..500).contains(&reply.status),
                    "malformed body {i}: {} {}",
                    reply.status,
                    reply.text()
                );
                reply.error(reply.status);
                hostile_count.fetch_add(1, Ordering::Relaxed);
            }
        });

        // The normal clients; the soak ends when they are done.
        let clients: Vec<_> = (0..4)
            .map(|id| s.spawn(move || normal_client(addr, id, 3)))
            .collect();
        for c in clients {
            c.join().expect("a normal client failed");
        }
        assert!(start.elapsed() < DEADLINE, "the soak ran past its deadline");
        // Let the hostile threads finish too, then stop the health checks.
        while hostile_count.load(Ordering::Relaxed) < 300 + 24 + 6 + 8 + 210 {
            assert!(
                start.elapsed() < DEADLINE,
                "the hostile requests ran past the deadline"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        done.store(true, Ordering::Relaxed);
    });
    drop(held);
    assert!(
        server.is_running(),
        "the server died: {}",
        server.log_text()
    );
    let (peak, now) = rss_mb(server.pid());
    let metrics = request(addr, "GET", "/metrics", &[], b"").text();
    let cache_bytes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("formwork_index_cache_bytes "))
        .unwrap_or("?")
        .to_owned();
    println!(
        "soak: {} hostile requests and connections, 12 normal streams, {} health checks \
         (slowest {:?}); RSS idle {rss_idle} MB, peak {peak} MB, at the end {now} MB; \
         index cache {cache_bytes} bytes; {:.0} s",
        hostile_count.load(Ordering::Relaxed),
        health_checks.load(Ordering::Relaxed),
        slowest_health.lock().unwrap(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        peak < PEAK_RSS_BOUND_MB,
        "peak RSS {peak} MB is over the {PEAK_RSS_BOUND_MB} MB bound"
    );
}
