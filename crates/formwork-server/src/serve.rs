//! Serving the router on a socket, with graceful shutdown.
//!
//! [`serve`] answers on a bound listener until its shutdown future completes (the binary
//! passes [`shutdown_signal`]: Ctrl-C or SIGTERM). Then it stops accepting connections,
//! marks the state as shutting down (`/health` answers 503, new generation requests a
//! 503), lets in-flight requests and streams finish, and returns once they have, or once
//! the drain deadline passes, whichever comes first. Streams still running at the
//! deadline are dropped, which cancels their requests in the engine.
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

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{AppState, router};

/// How long in-flight requests get to finish after a shutdown signal, by default.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

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
) -> std::io::Result<Shutdown> {
    let (signalled, mut on_signal) = watch::channel(false);
    let draining = state.clone();
    let graceful = async move {
        shutdown.await;
        draining.begin_shutdown();
        tracing::info!(
            deadline_s = deadline.as_secs_f64(),
            "shutting down: no new connections; waiting for in-flight requests"
        );
        let _ = signalled.send(true);
    };
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(graceful)
        .into_future();
    let deadline_passed = async move {
        // A closed channel means the server already returned; the select below ends first.
        if on_signal.wait_for(|s| *s).await.is_ok() {
            tokio::time::sleep(deadline).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => {
            result?;
            tracing::info!("all requests finished; stopped");
            Ok(Shutdown::Drained)
        }
        () = deadline_passed => {
            tracing::warn!("drain deadline passed; dropping the requests still running");
            Ok(Shutdown::DeadlinePassed)
        }
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
