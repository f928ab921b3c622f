//! Serving the router on a socket: connection limits, timeouts and graceful shutdown.
//!
//! [`serve`] answers HTTP/1.1 on a bound listener until its shutdown future completes (the
//! binary passes [`shutdown_signal`]: Ctrl-C or SIGTERM). It holds every connection to
//! the limits of the state's [`ServerConfig`](crate::app::ServerConfig), so that idle or
//! half-sent connections cannot pile up until the process runs out of file descriptors:
//!
//! - **headers**: a request's headers must arrive within `header_timeout` of their first
//!   byte (of connecting, for a connection's first request), or the connection is closed
//!   unanswered. Trickling a byte at a time does not help: the time is counted from the
//!   start, not between reads.
//! - **idle**: a kept-alive connection waiting for its next request is closed after
//!   `idle_timeout`.
//! - **bodies**: the router answers a body still arriving `body_timeout` after its
//!   headers with a 408 (see [`app`](crate::app)), and the connection is then closed.
//! - **connections**: at most `max_connections` are open at once. At the cap the server
//!   stops accepting, so new connections wait in the kernel's listen backlog (they hold no
//!   descriptor of ours) and are accepted, in order, as soon as any connection closes. A
//!   `/health` probe arriving during a flood of idle connections is answered once the
//!   timeouts have closed one, instead of being turned away as accepting and closing the
//!   extras would do.
//!
//! None of these cut a response being written: a stream of server-sent events runs as long
//! as its generation does, and a slow non-streamed generation is waited for.
//!
//! When the shutdown future completes, [`serve`] stops accepting (the listener is closed),
//! marks the state as shutting down (`/health` answers 503, new generation requests a
//! 503), closes idle connections, lets in-flight requests and streams finish, and returns
//! once they have, or once the drain deadline passes, whichever comes first. Connections
//! still open at the deadline are dropped, which cancels their requests in the engine.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use formwork_server::app::{router, AppState};
//! use formwork_server::serve::{serve, shutdown_signal};
//!
//! # async fn run(state: Arc<AppState>) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, state, shutdown_signal(), Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::Request;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::app::{AppState, router};

/// How long in-flight requests get to finish after a shutdown signal, by default.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// How long the accept loop pauses after an accept error that is not about one connection
/// (out of file descriptors, say), rather than spinning on it.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How a [`serve`] call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every in-flight request finished before the deadline.
    Drained,
    /// The deadline passed with requests still running; they were dropped.
    DeadlinePassed,
}

/// Serves [`router`]`(state)` on `listener` until `shutdown` completes, then drains
/// in-flight requests for at most `deadline`; see the [module docs](self).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    deadline: Duration,
) -> io::Result<Shutdown> {
    let config = state.config();
    let timeouts = ReadTimeouts {
        header: config.header_timeout,
        idle: config.idle_timeout,
    };
    let slots = Arc::new(Semaphore::new(
        config.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let app = router(state.clone());
    let (closing, on_closing) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: at the cap, connections queue in the
        // kernel's backlog instead of taking a descriptor each.
        let next = async {
            let slot = slots.clone().acquire_owned().await;
            (slot, listener.accept().await)
        };
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections as they end (a `None` here disables the branch).
            Some(_) = connections.join_next() => {}
            (slot, accepted) = next => match (slot, accepted) {
                (Ok(slot), Ok((stream, _))) => {
                    connections.spawn(connection(
                        stream,
                        app.clone(),
                        timeouts,
                        on_closing.clone(),
                        slot,
                    ));
                }
                // The semaphore is never closed.
                (Err(_), _) => break,
                (Ok(_), Err(e)) => {
                    if !is_connection_error(&e) {
                        tracing::error!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                }
            },
        }
    }
    drop(listener);
    state.begin_shutdown();
    tracing::info!(
        deadline_s = deadline.as_secs_f64(),
        "shutting down: no new connections; waiting for in-flight requests"
    );
    let _ = closing.send(true);
    let drained = tokio::time::timeout(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_ok() {
        tracing::info!("all requests finished; stopped");
        Ok(Shutdown::Drained)
    } else {
        tracing::warn!("drain deadline passed; dropping the requests still running");
        connections.abort_all();
        Ok(Shutdown::DeadlinePassed)
    }
}

/// Whether an accept error concerns only the connection being accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it closes or, after the shutdown signal, until its
/// request in flight is answered. Holds its connection slot until then.
async fn connection(
    stream: TcpStream,
    app: Router,
    timeouts: ReadTimeouts,
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let clock = Arc::new(ConnectionClock::new());
    let io = TokioIo::new(TimedStream::new(stream, clock.clone(), timeouts));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        clock.request_started();
        let clock = clock.clone();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await;
            response.map(|r| {
                r.map(|body| ResponseBody {
                    body,
                    _finished: ResponseFinished(clock),
                })
            })
        }
    });
    // Headers are timed by `TimedStream`: hyper's own header timer would also run while
    // the connection waits for its next request, making the idle timeout the same.
    let conn = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // (A closed channel means `serve` has returned and is dropping this task anyway.)
        _ = async { closing.wait_for(|closing| *closing).await.is_ok() } => {
            // Closes the connection now if idle, else after the response in flight.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection closed");
    }
}

/// The read timeouts [`TimedStream`] enforces.
#[derive(Debug, Clone, Copy)]
struct ReadTimeouts {
    /// From a request's first byte (or the connection's start) to the end of its headers.
    header: Duration,
    /// Between a response and the next request's first byte.
    idle: Duration,
}

/// Where a connection is in its request cycle, which decides its read deadline.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Reading a request's headers, which began (first byte, or connection start) then.
    Headers(Instant),
    /// A request is being answered: its body is the router's to time
    /// ([`ServerConfig::body_timeout`](crate::app::ServerConfig::body_timeout)) and its
    /// response, stream or not, has no deadline.
    Busy,
    /// Waiting since then for the next request on a kept-alive connection.
    Idle(Instant),
}

/// The phase of one connection, shared by its socket (which sees bytes arrive), its
/// service (which sees requests start) and its responses (which see themselves finish).
#[derive(Debug)]
struct ConnectionClock(Mutex<ClockState>);

#[derive(Debug)]
struct ClockState {
    phase: Phase,
    /// The connection task, to wake when the phase changes outside a read, so that the
    /// socket arms the new deadline.
    task: Option<Waker>,
}

impl ConnectionClock {
    fn new() -> ConnectionClock {
        ConnectionClock(Mutex::new(ClockState {
            phase: Phase::Headers(Instant::now()),
            task: None,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, ClockState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// hyper has read a request's headers and calls the router.
    fn request_started(&self) {
        self.lock().phase = Phase::Busy;
    }

    /// A response has been handed to the socket whole (or dropped).
    fn response_finished(&self) {
        let mut state = self.lock();
        state.phase = Phase::Idle(Instant::now());
        if let Some(task) = state.task.take() {
            task.wake();
        }
    }

    /// Bytes came in: on an idle connection, the next request's headers have begun.
    fn bytes_arrived(&self) {
        let mut state = self.lock();
        if let Phase::Idle(_) = state.phase {
            state.phase = Phase::Headers(Instant::now());
        }
    }

    /// Remembers the connection task and returns the read deadline now, with what it
    /// times, or `None` while a request is answered (or for a deadline past the clock's
    /// range).
    fn read_deadline(
        &self,
        timeouts: &ReadTimeouts,
        task: &Waker,
    ) -> Option<(Instant, &'static str)> {
        let mut state = self.lock();
        match &mut state.task {
            Some(known) if known.will_wake(task) => {}
            slot => *slot = Some(task.clone()),
        }
        match state.phase {
            Phase::Headers(since) => Some((since.checked_add(timeouts.header)?, "headers")),
            Phase::Idle(since) => Some((since.checked_add(timeouts.idle)?, "idle")),
            Phase::Busy => None,
        }
    }
}

/// A connection's socket, whose reads fail with [`io::ErrorKind::TimedOut`] once the
/// deadline of its [`ConnectionClock`] passes; hyper then closes the connection. Writes
/// pass through untimed.
struct TimedStream {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
    timeouts: ReadTimeouts,
    /// The timer, and the deadline it is set to.
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl TimedStream {
    fn new(stream: TcpStream, clock: Arc<ConnectionClock>, timeouts: ReadTimeouts) -> Self {
        TimedStream {
            stream,
            clock,
            timeouts,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.bytes_arrived();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some((deadline, what)) = this.clock.read_deadline(&this.timeouts, cx.waker()) else {
            return Poll::Pending;
        };
        if this.armed != Some(deadline) {
            this.timer.as_mut().reset(deadline);
            this.armed = Some(deadline);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("closing the connection: {what} timeout"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A response body that tells its connection's clock when hyper is done with it.
struct ResponseBody {
    body: Body,
    _finished: ResponseFinished,
}

/// Marks the response finished when dropped: hyper drops a body once it has taken its
/// last frame, or when the connection ends.
struct ResponseFinished(Arc<ConnectionClock>);

impl Drop for ResponseFinished {
    fn drop(&mut self) {
        self.0.response_finished();
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM. If a handler cannot be installed
/// it waits on the other (or forever), rather than shutting the server down.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
