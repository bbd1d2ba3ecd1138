//! Building and running the application: backends, actor tree, HTTP gateway.
//!
//! [`Application::build`] binds the listener itself (port 0 allowed) and
//! starts everything, so tests run the real thing on a random port;
//! [`Application::run_until_stopped`] serves until SIGTERM/Ctrl-C or until
//! the actor tree dies, then shuts down in order: stop accepting HTTP, stop
//! the tree (consumers first, so in-flight messages finish), exit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::HeaderValue;
use dronedelivery_actors::metrics as m;
use dronedelivery_actors::{Backends, Engine};
use dronedelivery_gateway::ratelimit::RateLimiter;
use dronedelivery_gateway::AppState;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{QueueKind, ServeArgs};
use crate::server::{self, HttpLimits};
use crate::{backends, telemetry};

/// A built, running application.
pub struct Application {
    address: SocketAddr,
    listener: TcpListener,
    engine: Engine,
    tree: JoinHandle<()>,
    state: AppState,
    gauges: JoinHandle<()>,
    http_limits: HttpLimits,
}

impl Application {
    /// Starts the actor tree on the backends the settings select and binds
    /// the HTTP listener.
    pub async fn build(args: &ServeArgs) -> anyhow::Result<Self> {
        let connected = backends::connect(args).await?;
        let described = connected.backends.describe();
        let embedded = args.queue == QueueKind::Memory
            && args.redis_url.is_none()
            && args.mongodb_uri.is_none();
        if connected.persistent {
            tracing::info!(backends = %described, "backends connected; state is persisted");
        } else if embedded {
            tracing::info!(
                backends = %described,
                "using the embedded default: in-process queue and in-memory stores; nothing is persisted"
            );
        } else {
            tracing::warn!(
                backends = %described,
                "some backends are in memory: their state is lost on exit"
            );
        }
        Self::build_with(args, connected.backends).await
    }

    /// Same as [`Application::build`] with explicit backends.
    pub async fn build_with(args: &ServeArgs, backends: Backends) -> anyhow::Result<Self> {
        let instance = format!("dd-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        // The recorder first: what the tree records while it starts (the
        // partitions it acquires) is counted too.
        let prometheus = telemetry::prometheus();
        let (engine, tree) = Engine::start(args.tree_config(instance), backends)
            .await
            .context("could not start the actor tree")?;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("could not listen on {}", args.listen))?;
        let address = listener
            .local_addr()
            .context("listener has no local address")?;
        let cors_origins = args
            .cors_allowed_origins
            .iter()
            .filter(|o| !o.is_empty())
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("invalid CORS origin '{o}'")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let auth = match args.oidc()? {
            Some(settings) => dronedelivery_gateway::auth::Auth::Jwt(
                crate::adapters::oidc::OidcAuthenticator::start(settings).await?,
            ),
            None => dronedelivery_gateway::auth::Auth::Off,
        };
        let state = AppState::new(engine.clone(), move || {
            prometheus.as_ref().map(|h| h.render()).unwrap_or_default()
        })
        .with_admin_token(args.admin_token.as_ref().map(|t| t.expose()))
        .with_rate_limit(args.rate_limit())
        .with_cors_origins(cors_origins)
        .with_auth(auth);
        let gauges = tokio::spawn(refresh_gauges(engine.clone()));
        if let Some(limiter) = state.rate_limiter.clone() {
            tokio::spawn(forget_idle_clients(limiter));
        }
        tracing::info!(%address, role = engine.role().name(), "listening");
        Ok(Self {
            address,
            listener,
            engine,
            tree,
            state,
            gauges,
            http_limits: args.http_limits(),
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The running engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Serves until a termination signal (SIGTERM, Ctrl-C).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` resolves or the actor tree ends, then shuts down
    /// gracefully.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            engine,
            mut tree,
            state,
            gauges,
            http_limits,
            ..
        } = self;
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let app = dronedelivery_gateway::app_for(engine.role(), state);
        let server = tokio::spawn(server::serve(listener, app, http_limits, async {
            let _ = http_stopped.await;
        }));
        let tree_died = tokio::select! {
            () = stop => false,
            _ = &mut tree => true,
        };
        let _ = stop_http.send(());
        gauges.abort();
        if tree_died {
            let _ = server.await;
            anyhow::bail!("the actor tree stopped: the root supervisor gave up");
        }
        tracing::info!("shutting down: HTTP stopped accepting, draining the actor tree");
        // Long-lived responses (event streams), and requests whose headers
        // are still trickling in (until the header timeout), would hold a
        // graceful HTTP shutdown open: give requests a moment, then drain the
        // tree anyway.
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => tracing::warn!("HTTP connections did not close in time"),
        }
        engine.shutdown().await;
        let _ = tree.await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Forgets, every minute, the rate-limit state of clients that went quiet.
/// Holds only a weak reference, so it ends with the application.
async fn forget_idle_clients(limiter: Arc<RateLimiter>) {
    let limiter = Arc::downgrade(&limiter);
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        match limiter.upgrade() {
            Some(limiter) => limiter.forget_idle(),
            None => return,
        }
    }
}

/// Queue depth is a property of the broker, not of this process, and the
/// deliveries at risk one of the stores: poll them.
async fn refresh_gauges(engine: Engine) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match engine.queue_depth().await {
            Ok(Some(depth)) => metrics::gauge!(m::QUEUE_DEPTH).set(depth as f64),
            // Unknown: no value rather than a made-up zero (the adapter
            // logs why, once).
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "could not read the queue depth"),
        }
        if let Ok(Some(unsettled)) = engine.context().backends.queue.unsettled().await {
            metrics::gauge!(m::QUEUE_UNSETTLED).set(unsettled as f64);
        }
        // A property of the stores too: the whole cluster's deliveries.
        if let Ok(at_risk) = engine.context().backends.deliveries.at_risk_count().await {
            metrics::gauge!(m::DELIVERIES_AT_RISK).set(at_risk as f64);
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("termination signal received");
}
