//! The HTTP server: the gateway's router served over HTTP/1.1 by hyper, with
//! the limits that keep slow and idle clients from exhausting the process.
//!
//! `axum::serve` sets no timeout on reading a request, so a client that
//! connects and trickles its headers a byte at a time (slowloris), or sends
//! nothing at all, would hold a connection, a task and a file descriptor for
//! as long as it liked. Here:
//!
//! - hyper's `header_read_timeout` closes a connection whose request line and
//!   headers are not complete in time; hyper starts that timer whenever it
//!   waits for a request head, so it also closes keep-alive connections left
//!   idle for that long, and connections that never send a byte;
//! - tower-http's [`RequestBodyTimeoutLayer`] fails a request body that
//!   pauses too long between two chunks; the gateway answers it `408` and
//!   the connection is closed. A body that keeps trickling is bounded by the
//!   gateway's limit on the whole request
//!   ([`dronedelivery_gateway::middleware::REQUEST_TIMEOUT`], also `408`);
//! - at most [`HttpLimits::max_connections`] connections are open at once:
//!   beyond that the server stops accepting, and new connections wait in
//!   the kernel's accept queue until a slot frees up.
//!
//! Only HTTP/1.1 is served: HTTP/2 over cleartext with prior knowledge, which
//! `axum::serve` also accepted, starts with a preface whose detection has no
//! timeout at all, and no client of the engine uses it (ingress controllers
//! and load balancers speak HTTP/1.1 to their backends).
//!
//! Graceful shutdown is hyper-util's: stop accepting, close idle and silent
//! connections, let each other connection finish its request in flight, and
//! wait for all of them. A request whose headers are still arriving counts
//! as in flight, so a slowloris client can hold the shutdown until the
//! header timeout; [`crate::startup::Application::run_until`] stops waiting
//! after 5 s anyway.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// The HTTP server's protections against slow and idle clients (see the
/// module documentation and the `--http-*` / `--max-connections` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest a client may take to send a request line and headers; also
    /// the longest a keep-alive connection stays idle.
    pub header_timeout: Duration,
    /// Longest pause between two chunks of a request body.
    pub body_timeout: Duration,
    /// Connections open at once, at most.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `stop` resolves, then shuts down
/// gracefully: no new connections, requests in flight finish, and the
/// future completes once every connection is closed.
///
/// Handlers see the peer address as `ConnectInfo<SocketAddr>`, as with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stop: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut saturated = false;
    tokio::pin!(stop);
    loop {
        let full = slots.available_permits() == 0;
        if full && !saturated {
            tracing::warn!(
                max_connections = limits.max_connections,
                "HTTP connection limit reached: new connections wait until one closes"
            );
        }
        saturated = full;
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut stop => break,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = ServiceBuilder::new()
            .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
            .layer(Extension(ConnectInfo(peer)))
            .service(app.clone());
        let connection = graceful
            .watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts, resets and malformed requests: the client's doing.
                tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::debug!(
        connections = graceful.count(),
        "HTTP stopped accepting; waiting for open connections"
    );
    graceful.shutdown().await;
    tracing::debug!("HTTP connections closed");
}

/// What to do when `accept` fails. A connection reset before it was
/// accepted is the client's business; anything else (typically `EMFILE`:
/// out of file descriptors) is logged and the loop pauses for a second, so
/// that it does not spin while connections close and free descriptors (as
/// `axum::serve` does).
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "could not accept an HTTP connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
