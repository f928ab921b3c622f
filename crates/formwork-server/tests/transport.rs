//! The connection limits of `serve` over real sockets on 127.0.0.1, with short configured
//! timeouts: idle keep-alive connections closed (and the header timeout not applied to idle
//! waits), silent, half-sent and trickled headers closed, a trickled body answered 408 and
//! closed, the connection cap with `/health` answered once a slot frees, streams and slow
//! answers outliving every timeout, and shutdown with idle connections open or streams
//! past the drain deadline. Every read has a timeout, so a failure ends the test.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, long_tiny_engine, open_long_stream, read_head, read_sized_body, tiny_engine};
use formwork_engine::EngineConfig;
use formwork_server::app::ServerConfig;
use formwork_server::serve::Shutdown;
use serde_json::{Value, json};

/// The longest any read of these tests waits: a server that should have closed a
/// connection or answered and did not fails the test after this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Slack for the lower bounds on when the server acts: the server starts its clocks a
/// little before the client sees a response.
const SLACK: Duration = Duration::from_millis(200);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Limits short enough for a test; each test shortens the one it watches further.
fn limits(
    header: Duration,
    idle: Duration,
    body: Duration,
    max_connections: usize,
) -> ServerConfig {
    ServerConfig {
        header_timeout: header,
        idle_timeout: idle,
        body_timeout: body,
        max_connections,
        ..ServerConfig::default()
    }
}

fn start(config: ServerConfig) -> Server {
    Server::start(tiny_engine(EngineConfig::default()), config)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connecting to the test server");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// `GET /health` on a kept-alive connection: returns the status and leaves the
/// connection open after reading the whole response.
fn health(conn: &mut BufReader<TcpStream>) -> u16 {
    conn.get_mut()
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("sending GET /health");
    let (status, headers) = read_head(conn);
    read_sized_body(conn, &headers);
    status
}

/// Waits until the server closes the connection (end of stream or a reset) and returns
/// how long that took; fails if it stays open for [`READ_TIMEOUT`].
fn wait_closed(conn: &mut impl Read) -> Duration {
    let start = Instant::now();
    let mut buf = [0; 4096];
    match conn.read(&mut buf) {
        Ok(0) => start.elapsed(),
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => start.elapsed(),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the connection is still open after {READ_TIMEOUT:?}")
        }
        Err(e) => panic!("reading: {e}"),
    }
}

/// Writes `bytes` one at a time, `every` apart, on another thread, until they run out, a
/// write fails, or the returned flag is set.
fn trickle(stream: &TcpStream, bytes: Vec<u8>, every: Duration) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let mut stream = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        for byte in bytes {
            if stopped.load(Ordering::Relaxed) || stream.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    });
    stop
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout_not_the_header_timeout() {
    let idle = ms(1500);
    let s = start(limits(ms(300), idle, ms(300), 16));
    let mut conn = BufReader::new(connect(s.addr));
    assert_eq!(health(&mut conn), 200);
    // Longer than the header timeout: waiting for the next request is not reading headers.
    std::thread::sleep(ms(800));
    assert_eq!(health(&mut conn), 200);
    let after = wait_closed(&mut conn);
    assert!(
        after + SLACK >= idle,
        "closed after {after:?}, before the idle timeout"
    );
    assert_eq!(health(&mut BufReader::new(connect(s.addr))), 200);
}

#[test]
fn silent_half_sent_and_trickled_headers_are_closed() {
    let header = ms(300);
    let s = start(limits(header, Duration::from_secs(60), ms(300), 16));
    // A connection that says nothing.
    let after = wait_closed(&mut connect(s.addr));
    assert!(after + SLACK >= header, "closed after {after:?}");
    // Headers that stop half-way.
    let mut conn = connect(s.addr);
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        .unwrap();
    wait_closed(&mut conn);
    // Headers that keep coming, a byte every 50 ms for 20 s: the time counts from the
    // first byte, not between bytes.
    let conn = connect(s.addr);
    let mut slow = b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ".to_vec();
    slow.extend(std::iter::repeat_n(b'a', 400));
    let stop = trickle(&conn, slow, ms(50));
    wait_closed(&mut &conn);
    stop.store(true, Ordering::Relaxed);
    // The server still answers.
    assert_eq!(health(&mut BufReader::new(connect(s.addr))), 200);
}

#[test]
fn a_trickled_body_is_a_408_and_the_connection_closes() {
    let s = start(limits(ms(300), ms(300), ms(500), 16));
    let body = json!({"messages": [{"role": "user", "content": "x".repeat(200)}]}).to_string();
    let conn = connect(s.addr);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    (&conn).write_all(head.as_bytes()).unwrap();
    (&conn).write_all(&body.as_bytes()[..20]).unwrap();
    // The rest at a byte every 100 ms would take 20 s.
    let stop = trickle(&conn, body.as_bytes()[20..].to_vec(), ms(100));
    let mut reader = BufReader::new(&conn);
    let (status, headers) = read_head(&mut reader);
    assert_eq!(status, 408);
    let error = read_sized_body(&mut reader, &headers);
    let error: Value = serde_json::from_slice(&error).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert_eq!(
        error["error"]["message"],
        "Request timeout: the request body did not arrive within 0.5 s.",
    );
    wait_closed(&mut reader);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(health(&mut BufReader::new(connect(s.addr))), 200);
}

#[test]
fn at_the_connection_cap_health_is_answered_once_an_idle_connection_times_out() {
    let idle = ms(1000);
    let s = start(limits(Duration::from_secs(30), idle, ms(300), 2));
    // Two kept-alive connections fill the cap and sit idle.
    let mut idlers: Vec<_> = (0..2).map(|_| BufReader::new(connect(s.addr))).collect();
    for conn in &mut idlers {
        assert_eq!(health(conn), 200);
    }
    // A third waits in the backlog until the idle timeout frees a slot.
    let start = Instant::now();
    let mut third = BufReader::new(connect(s.addr));
    assert_eq!(health(&mut third), 200);
    let waited = start.elapsed();
    assert!(
        waited + SLACK >= idle,
        "answered after {waited:?}, while the cap was full"
    );
    for conn in &mut idlers {
        wait_closed(conn);
    }
}

#[test]
fn streams_and_slow_answers_outlive_every_timeout() {
    let timeout = ms(100);
    let s = Server::start(
        long_tiny_engine(EngineConfig::default()),
        limits(timeout, timeout, timeout, 16),
    );
    let mut stream = open_long_stream(s.addr);
    let start = Instant::now();
    let mut line = String::new();
    while start.elapsed() < 5 * timeout {
        line.clear();
        assert!(
            stream.read_line(&mut line).unwrap() > 0,
            "the stream was cut after {:?}",
            start.elapsed()
        );
        assert!(
            !line.contains("[DONE]"),
            "the stream ended too soon to tell"
        );
    }
    drop(stream);
    // An answer that takes longer than every timeout to generate is waited for.
    let body = json!({"prompt": "Go on", "max_tokens": 2000, "ignore_eos": true});
    let start = Instant::now();
    let r = s.post("/v1/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"], 2000);
    assert!(
        start.elapsed() > timeout,
        "the answer was too quick to tell ({:?})",
        start.elapsed()
    );
}

#[test]
fn shutdown_closes_idle_connections_and_drops_streams_at_the_deadline() {
    // An idle kept-alive connection does not hold the shutdown up.
    let s = start(limits(
        Duration::from_secs(60),
        Duration::from_secs(60),
        ms(300),
        16,
    ));
    let mut idler = BufReader::new(connect(s.addr));
    assert_eq!(health(&mut idler), 200);
    let silent = connect(s.addr);
    assert_eq!(s.shutdown(), Shutdown::Drained);
    wait_closed(&mut idler);
    wait_closed(&mut &silent);

    // A stream still running at the deadline is cut, which cancels it in the engine.
    let s = Server::start_with_deadline(
        long_tiny_engine(EngineConfig::default()),
        ServerConfig::default(),
        ms(300),
    );
    let mut stream = open_long_stream(s.addr);
    let engine = s.state.engine().clone();
    assert_eq!(s.shutdown(), Shutdown::DeadlinePassed);
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    assert!(!rest.contains("[DONE]"), "the stream ran to its end");
    let start = Instant::now();
    while engine.metrics().active > 0 {
        assert!(
            start.elapsed() < READ_TIMEOUT,
            "the stream's sequence still runs"
        );
        std::thread::sleep(ms(20));
    }
}
