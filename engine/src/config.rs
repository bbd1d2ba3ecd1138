//! Command line, environment and configuration file. Every flag has a
//! `DD_*` environment variable, which is how Kubernetes passes configuration
//! (and secrets) to the pod. `serve --config FILE` (or `DD_CONFIG`) also
//! reads a TOML file whose keys are the flag names (`sim-speed = 500`).
//!
//! Precedence, highest first: flag, environment, file, built-in default. The
//! file is applied by turning its entries into clap defaults before parsing
//! ([`parse_cli`]), so one definition (the clap attributes below) documents,
//! validates and parses every setting however it is given, and `--help`
//! stays the reference. Unknown keys in the file are errors, not ignored:
//! a typo must not silently leave a production default in place.

use std::net::SocketAddr;
use std::time::Duration;

use std::ffi::OsString;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use dronedelivery_actors::domain::{FleetMix, FleetSpec, PayloadLimits, ServiceArea};
use dronedelivery_actors::{OwnershipSettings, Role, SimSettings, TreeConfig};
use dronedelivery_gateway::ratelimit::RateLimitSettings;

use crate::server::HttpLimits;

/// Drone delivery engine: an actor-model implementation of the Fabrikam
/// drone delivery reference architecture.
#[derive(Debug, Parser)]
#[command(name = "dronedelivery", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine: HTTP gateway, queue consumers and the actor tree.
    Serve(Box<ServeArgs>),
    /// Operator commands against a running engine's admin API.
    Admin(AdminArgs),
}

/// Settings of `dronedelivery admin`.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Base URL of the engine.
    #[arg(long, env = "DD_ADMIN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The engine's admin token.
    #[arg(long, env = "DD_ADMIN_TOKEN")]
    pub token: Option<Secret>,
    /// What to do.
    #[command(subcommand)]
    pub action: AdminAction,
}

/// Operator actions.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminAction {
    /// Show the live engines (role, version, readiness, partitions,
    /// drones) and who holds which partition.
    Cluster,
    /// Show the supervision tree of the engine at `--url`, of another
    /// engine, or of every engine.
    Supervisors {
        /// An engine id (see `admin cluster`) or `all`.
        #[arg(long)]
        engine: Option<String>,
    },
    /// Restart a supervisor's subtree gracefully, on the engine at `--url`,
    /// on another engine, or on every engine that runs actors one after the
    /// other (a rolling restart, with a line per engine as it goes).
    Restart {
        /// `root`, `fleet`, `deliveries`, `consumers` or `workflow`.
        name: String,
        /// An engine id (see `admin cluster`) or `all`.
        #[arg(long)]
        engine: Option<String>,
    },
    /// List dead letters, newest first.
    Deadletters {
        /// Entries to skip.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Entries to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Put a dead letter back on the queue.
    Replay {
        /// The dead letter's (message) id.
        id: String,
    },
}

/// Which queue carries delivery requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueKind {
    /// In-process queue (embedded default; nothing survives the process).
    Memory,
    /// Redis Streams consumer group (needs `--redis-url`).
    RedisStreams,
    /// Azure Service Bus queue (needs a connection string or namespace, queue and SAS policy).
    Servicebus,
}

/// How API callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// No authentication: anyone who reaches the API may use it (the
    /// original's behaviour).
    None,
    /// OAuth 2.0 bearer tokens (JWT) of an OpenID Connect issuer, with
    /// per-owner scoping and roles (needs `--auth-issuer` and
    /// `--auth-audience`).
    Jwt,
}

/// A secret string (connection string, key): never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// What this process runs (see the README's "Roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// HTTP API, queue consumers and actors in one process.
    All,
    /// HTTP ingestion and reads only (stateless, scale freely).
    Gateway,
    /// Queue consumers and actors; HTTP serves probes, metrics and /admin.
    Worker,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::All => Role::All,
            RoleArg::Gateway => Role::Gateway,
            RoleArg::Worker => Role::Worker,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Settings of `dronedelivery serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file of settings, keys named like the flags (`sim-speed = 500`).
    /// Flags and environment variables win over it.
    #[arg(long, env = "DD_CONFIG")]
    pub config: Option<PathBuf>,

    /// What this process runs: `all`, `gateway` (HTTP only) or `worker`
    /// (queue consumers and actors).
    #[arg(long, env = "DD_ROLE", value_enum, default_value_t = RoleArg::All)]
    pub role: RoleArg,

    /// Address the HTTP gateway listens on (port 0 picks a free port).
    #[arg(long, env = "DD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Seconds a client may take to send a request's line and headers; a
    /// keep-alive connection idle for as long is closed too. Without this a
    /// client that connects and trickles its headers a byte at a time
    /// (slowloris), or sends nothing, holds a connection and its file
    /// descriptor for as long as it likes. Behind a proxy that keeps idle
    /// connections to the engine open, keep the proxy's upstream keep-alive
    /// timeout below this, so that the proxy, not the engine, closes them.
    #[arg(long, env = "DD_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout_secs: u64,

    /// Seconds a request body may pause between two chunks before the
    /// request is answered 408 and the connection closed (a client that
    /// sends its headers, then stalls the body). A body that keeps
    /// trickling is cut by the 30 s limit on the whole request (also 408),
    /// so values above 30 change nothing.
    #[arg(long, env = "DD_HTTP_BODY_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_body_timeout_secs: u64,

    /// HTTP connections open at once, at most. Beyond it the engine stops
    /// accepting and new connections wait in the kernel's accept queue until
    /// one closes, so a flood of idle or slow sockets cannot exhaust the
    /// process's file descriptors (which the backends need too). Keep it
    /// below the descriptor limit (`ulimit -n`).
    #[arg(long, env = "DD_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Write requests (POST/PUT/PATCH/DELETE under /api) per second allowed
    /// per client (the token's owner with authentication on, else the
    /// address) before 429 Too Many Requests. 0 disables the limit.
    #[arg(long, env = "DD_RATE_LIMIT_PER_SECOND", default_value_t = 0)]
    pub rate_limit_per_second: u32,

    /// Requests a client may send at once above the per-second rate.
    #[arg(long, env = "DD_RATE_LIMIT_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,

    /// Identify rate-limited clients by the right-most `X-Forwarded-For`
    /// address (set it when every request comes through an ingress or proxy).
    #[arg(long, env = "DD_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Browser origins allowed to call the API (CORS), comma-separated, e.g.
    /// `https://app.example.com`. Empty (default): no CORS headers.
    #[arg(long, env = "DD_CORS_ALLOWED_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub cors_allowed_origins: Vec<String>,

    /// OTLP/HTTP endpoint to export traces to (e.g. `http://otel-collector:4318`).
    /// Needs a binary built with `--features otel`.
    #[arg(long, env = "DD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// How many times faster than real time simulated drones fly.
    #[arg(long, env = "DD_SIM_SPEED", default_value_t = 1.0, value_parser = positive_f64)]
    pub sim_speed: f64,

    /// Drones seeded at the first start, spread over the depots.
    #[arg(long, env = "DD_FLEET_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub fleet_size: u32,

    /// Number of depots the fleet is spread over.
    #[arg(long, env = "DD_DEPOTS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub depots: u32,

    /// Service area as `south,west,north,east` in degrees. Depots sit inside
    /// it and location names (anything that is not `lat,lon`) map into it.
    #[arg(long, env = "DD_SERVICE_AREA", default_value_t = ServiceArea::default())]
    pub service_area: ServiceArea,

    /// Payload classes of the seeded drones, in parts: `small=70,medium=25,large=5`.
    /// Every class with a share gets at least one drone, largest first. A
    /// package no class of the mix can carry is refused with 400.
    #[arg(long, env = "DD_FLEET_MIX", default_value_t = FleetMix::default())]
    pub fleet_mix: FleetMix,

    /// Weight each payload class carries at most (kg): `small=20,medium=100,large=500`;
    /// `inf` for no limit. A class not named keeps its default.
    #[arg(long, env = "DD_PAYLOAD_LIMITS_KG", default_value_t = PayloadLimits::default())]
    pub payload_limits_kg: PayloadLimits,

    /// Range of a drone on a full battery, in km. A drone takes a job only if
    /// it can fly to the pickup, the dropoff and home on what it has; a job
    /// beyond every drone's range is cancelled (compensated). 0: unlimited.
    #[arg(long, env = "DD_DRONE_RANGE_KM", default_value_t = 100.0, value_parser = non_negative_f64)]
    pub drone_range_km: f64,

    /// Range a drone parked at its depot regains per hour of simulated time, in km.
    #[arg(long, env = "DD_DRONE_RECHARGE_KM_PER_HOUR", default_value_t = 600.0, value_parser = positive_f64)]
    pub drone_recharge_km_per_hour: f64,

    /// Drone cruise speed in metres per second (simulated time).
    #[arg(long, env = "DD_DRONE_SPEED", default_value_t = 15.0, value_parser = positive_f64)]
    pub drone_speed: f64,

    /// Real-time interval between two position updates of a flying drone, in milliseconds.
    #[arg(long, env = "DD_TICK_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub tick_ms: u64,

    /// Workers in the competing-consumer pool.
    #[arg(long, env = "DD_CONSUMERS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub consumers: u32,

    /// Messages received and not yet settled, at most (back-pressure on the broker).
    #[arg(long, env = "DD_PREFETCH", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub prefetch: u32,

    /// Deliveries of a message before it is dead-lettered.
    #[arg(long, env = "DD_MAX_DELIVERY_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_delivery_attempts: u32,

    /// Base delay before a failed message is retried, in milliseconds (doubles per attempt).
    #[arg(long, env = "DD_RETRY_DELAY_MS", default_value_t = 200)]
    pub retry_delay_ms: u64,

    /// Peek-lock duration of the in-process queue and of Redis Streams, in
    /// seconds: an unsettled message is redelivered after this. With Service
    /// Bus, set it to the queues' LockDuration: twice this is how long a
    /// reschedule or cancel of a delivery not created yet is kept (its
    /// create may be held by an engine that died) before it is dead-lettered.
    #[arg(long, env = "DD_LOCK_DURATION_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lock_duration_secs: u64,

    /// Capacity of the in-process queue; beyond it new requests get 503.
    #[arg(long, env = "DD_QUEUE_CAPACITY", default_value_t = 1_000_000)]
    pub queue_capacity: usize,

    /// Most store writes of one kind sent in one round trip (group commit:
    /// MongoDB package upserts and history records that arrive together
    /// share one command, each caller still getting its own answer). 1
    /// sends every write alone.
    #[arg(long, env = "DD_STORE_BATCH_MAX", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub store_batch_max: u64,

    /// Most messages sent to one Service Bus queue in one batch send (group
    /// commit of the gateway's concurrent sends; each request still gets
    /// its 202 only once its own message is in the queue). 1 sends every
    /// message alone. Redis Streams needs no such setting: its connection
    /// already writes concurrent commands together.
    #[arg(long, env = "DD_SEND_BATCH_MAX", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4_096))]
    pub send_batch_max: u64,

    /// Log format.
    #[arg(long, env = "DD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Queue backend.
    #[arg(long, env = "DD_QUEUE", value_enum, default_value_t = QueueKind::Memory)]
    pub queue: QueueKind,

    /// Redis URL (`redis://host:6379/0`, or `rediss://host:6380/0` for
    /// TLS, as Azure Cache for Redis serves by default). When set,
    /// deliveries, tracking events, drones and idempotency keys live in
    /// Redis.
    #[arg(long, env = "DD_REDIS_URL")]
    pub redis_url: Option<Secret>,

    /// PEM file of the certificate authorities a `rediss://` server's
    /// certificate must chain to (a private CA). Default: the system's
    /// roots.
    #[arg(long, env = "DD_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<std::path::PathBuf>,

    /// Prefix of every Redis key (several deployments can share a server).
    #[arg(long, env = "DD_REDIS_PREFIX", default_value = "dd")]
    pub redis_prefix: String,

    /// Days a completed or cancelled delivery stays readable (logical delete).
    #[arg(long, env = "DD_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub retention_days: u64,

    /// Redis stream name (with `--queue redis-streams`).
    #[arg(long, env = "DD_STREAM", default_value = "deliveries")]
    pub stream: String,

    /// Consumer group of the workflow (with `--queue redis-streams`).
    #[arg(long, env = "DD_CONSUMER_GROUP", default_value = "workflow")]
    pub consumer_group: String,

    /// MongoDB URI (`mongodb://host:27017/dronedelivery`; the database comes
    /// from the path). When set, packages, delivery history, dead letters and
    /// notify-me requests live in MongoDB.
    #[arg(long, env = "DD_MONGODB_URI")]
    pub mongodb_uri: Option<Secret>,

    /// Service Bus connection string (`Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=queue]`).
    #[arg(long, env = "DD_SERVICEBUS_CONNECTION_STRING")]
    pub servicebus_connection_string: Option<Secret>,

    /// Service Bus namespace (without `.servicebus.windows.net`), when no connection string is given.
    #[arg(long, env = "DD_SERVICEBUS_NAMESPACE")]
    pub servicebus_namespace: Option<String>,

    /// Service Bus queue name: partition 0's queue; partition n reads and
    /// writes the queue `{name}-{n}` (one queue per partition, created by
    /// the operator).
    #[arg(long, env = "DD_SERVICEBUS_QUEUE")]
    pub servicebus_queue: Option<String>,

    /// Service Bus queue of the expedited lane, read before
    /// `--servicebus-queue` so that expedited deliveries are not stuck
    /// behind a backlog (partition n: `{name}-{n}`, created by the operator
    /// like the main queues). Without it expedited deliveries share the
    /// main queue.
    #[arg(long, env = "DD_SERVICEBUS_EXPEDITED_QUEUE")]
    pub servicebus_expedited_queue: Option<String>,

    /// Service Bus SAS policy name.
    #[arg(long, env = "DD_SERVICEBUS_POLICY_NAME")]
    pub servicebus_policy_name: Option<String>,

    /// Service Bus SAS policy key.
    #[arg(long, env = "DD_SERVICEBUS_POLICY_KEY")]
    pub servicebus_policy_key: Option<Secret>,

    /// Base URL overriding `https://{namespace}.servicebus.windows.net` (a
    /// local double of the REST protocol, a proxy).
    #[arg(long, env = "DD_SERVICEBUS_ENDPOINT")]
    pub servicebus_endpoint: Option<String>,

    /// Bearer token of the operator API under `/admin`. Without it the
    /// admin API is disabled (404).
    #[arg(long, env = "DD_ADMIN_TOKEN")]
    pub admin_token: Option<Secret>,

    /// How API callers are authenticated: `none`, or `jwt` (bearer tokens
    /// of `--auth-issuer` for `--auth-audience`; callers see and change
    /// only their own deliveries unless their roles say otherwise).
    #[arg(long, env = "DD_AUTH_MODE", value_enum, default_value_t = AuthMode::None)]
    pub auth_mode: AuthMode,

    /// Token issuer (`iss`), e.g. `https://login.microsoftonline.com/{tenant}/v2.0`.
    #[arg(long, env = "DD_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,

    /// Audience (`aud`) tokens must be issued for: this API's application id or URI.
    #[arg(long, env = "DD_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,

    /// URL of the issuer's signing keys (JWKS); default: the `jwks_uri` of
    /// `{issuer}/.well-known/openid-configuration`.
    #[arg(long, env = "DD_AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,

    /// Claim naming the owner a token speaks for (`oid` for Entra ID).
    #[arg(long, env = "DD_AUTH_OWNER_CLAIM", default_value = "sub")]
    pub auth_owner_claim: String,

    /// Claim listing a token's roles (`Dispatcher`, `Operator`, `PackageWriter`).
    #[arg(long, env = "DD_AUTH_ROLES_CLAIM", default_value = "roles")]
    pub auth_roles_claim: String,

    /// Clock skew allowed on a token's `exp` and `nbf`, in seconds.
    #[arg(long, env = "DD_AUTH_LEEWAY_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub auth_leeway_secs: u64,

    /// Seconds a graceful stop (SIGTERM, operator restart) may take; work
    /// still running then is returned to the queue.
    #[arg(long, env = "DD_SHUTDOWN_GRACE_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_grace_secs: u64,

    /// Seconds after which an idle delivery actor stops (it is re-activated
    /// from the store on its next message or read).
    #[arg(long, env = "DD_PASSIVATE_AFTER_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub passivate_after_secs: u64,

    /// Delivery actors alive at once before idle ones stop after one second
    /// instead of --passivate-after-secs: bounds the memory of deliveries
    /// waiting for a drone when the backlog outgrows the fleet (each live
    /// delivery costs about 20 KiB).
    #[arg(long, env = "DD_MAX_LIVE_DELIVERIES", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_live_deliveries: u64,

    /// Seconds a delivery may wait for a free drone before it is
    /// compensated (cancelled with the reason, its request dead-lettered so an
    /// operator can replay it). 0: wait as long as it takes.
    #[arg(long, env = "DD_MAX_DRONE_WAIT_SECS", default_value_t = 0)]
    pub max_drone_wait_secs: u64,

    /// Seconds a normal (not expedited) delivery may wait for a drone
    /// before it is served as expedited, so a stream of expedited requests
    /// cannot starve it. 0: expedited requests always go first.
    #[arg(long, env = "DD_EXPEDITE_AFTER_SECS", default_value_t = 120)]
    pub expedite_after_secs: u64,

    /// How long before its `pickupTime` a delivery asks for a drone. A later
    /// pickup keeps the delivery `Scheduled` (stage 6) until then, under a
    /// durable timer; a time within this from now, in the past or
    /// unreadable means now.
    #[arg(long, env = "DD_PICKUP_LEAD_SECS", default_value_t = 300)]
    pub pickup_lead_secs: u64,

    /// Partitions deliveries and drones are spread over; engines hold them
    /// by lease, and each is its own stream (Redis Streams) or queue
    /// (Service Bus). Every engine of one deployment must use the same count.
    #[arg(long, env = "DD_PARTITIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,

    /// Seconds a partition lease lasts without renewal (engines renew every
    /// fifth of it): the failover time after a crash, against the risk of a
    /// takeover during a long pause (which fencing makes harmless).
    #[arg(long, env = "DD_LEASE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub lease_secs: u64,

    /// Names the drones this engine seeds into the pool every engine
    /// shares (`{fleet-id}-drone-NNNN`, `--fleet-size` of them). Seeding is
    /// idempotent: engines with the same id (the default, empty) share one
    /// fleet of `--fleet-size` drones; a distinct id adds its own drones to
    /// the pool, where they stay when the engine is gone.
    #[arg(long, env = "DD_FLEET_ID", default_value = "")]
    pub fleet_id: String,
}

fn non_negative_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a number >= 0")),
    }
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

impl ServeArgs {
    /// Default settings, as `dronedelivery serve` with no flags and no env.
    pub fn defaults() -> Self {
        // Parsing an empty command line cannot fail: every field has a default.
        match Cli::try_parse_from(["dronedelivery", "serve"]) {
            Ok(Cli {
                command: Command::Serve(args),
            }) => *args,
            other => unreachable!("defaults must parse as `serve`: {other:?}"),
        }
    }

    /// The bearer-token settings, when `--auth-mode jwt`.
    ///
    /// # Errors
    /// `jwt` without an issuer or an audience.
    pub fn oidc(&self) -> anyhow::Result<Option<crate::adapters::oidc::OidcSettings>> {
        if self.auth_mode == AuthMode::None {
            return Ok(None);
        }
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let (Some(issuer), Some(audience)) =
            (nonempty(&self.auth_issuer), nonempty(&self.auth_audience))
        else {
            anyhow::bail!("--auth-mode jwt needs --auth-issuer and --auth-audience");
        };
        Ok(Some(crate::adapters::oidc::OidcSettings {
            issuer,
            audience,
            jwks_url: nonempty(&self.auth_jwks_url),
            owner_claim: self.auth_owner_claim.clone(),
            roles_claim: self.auth_roles_claim.clone(),
            leeway: Duration::from_secs(self.auth_leeway_secs),
        }))
    }

    /// The write rate limit, if enabled.
    pub fn rate_limit(&self) -> Option<RateLimitSettings> {
        Some(RateLimitSettings {
            per_second: NonZeroU32::new(self.rate_limit_per_second)?,
            burst: NonZeroU32::new(self.rate_limit_burst).unwrap_or(NonZeroU32::MIN),
            trust_forwarded_for: self.trust_forwarded_for,
        })
    }

    /// The HTTP server's limits against slow and idle clients.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(self.http_header_timeout_secs),
            body_timeout: Duration::from_secs(self.http_body_timeout_secs),
            max_connections: self.max_connections as usize,
        }
    }

    /// The actor tree's settings.
    pub fn tree_config(&self, instance: String) -> TreeConfig {
        TreeConfig {
            role: self.role.into(),
            instance,
            area: self.service_area,
            fleet_id: self.fleet_id.clone(),
            fleet_size: self.fleet_size as usize,
            depots: self.depots as usize,
            drones: FleetSpec {
                mix: self.fleet_mix,
                limits: self.payload_limits_kg,
                range_m: (self.drone_range_km > 0.0).then_some(self.drone_range_km * 1000.0),
                recharge_mps: self.drone_recharge_km_per_hour * 1000.0 / 3600.0,
            },
            sim: SimSettings {
                speed_factor: self.sim_speed,
                drone_speed_mps: self.drone_speed,
                tick: Duration::from_millis(self.tick_ms),
            },
            consumers: self.consumers as usize,
            prefetch: self.prefetch as usize,
            max_delivery_attempts: self.max_delivery_attempts,
            retry_delay: Duration::from_millis(self.retry_delay_ms),
            create_grace: Duration::from_secs(self.lock_duration_secs.saturating_mul(2)),
            call_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            passivate_after: Duration::from_secs(self.passivate_after_secs),
            max_live_deliveries: usize::try_from(self.max_live_deliveries).unwrap_or(usize::MAX),
            max_drone_wait: (self.max_drone_wait_secs > 0)
                .then(|| Duration::from_secs(self.max_drone_wait_secs)),
            max_normal_wait: (self.expedite_after_secs > 0)
                .then(|| Duration::from_secs(self.expedite_after_secs)),
            pickup_lead: Duration::from_secs(self.pickup_lead_secs),
            ownership: OwnershipSettings {
                engine_id: OwnershipSettings::new_engine_id(
                    &std::env::var("HOSTNAME").unwrap_or_else(|_| "engine".into()),
                ),
                partitions: self.partitions,
                lease: Duration::from_secs(self.lease_secs),
                heartbeat: Duration::from_secs(self.lease_secs) / 5,
            },
        }
    }
}

/// Why the command line or the configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has an unsupported type.
    #[error("invalid configuration file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A flag or value was refused; clap's error renders the usage.
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// Parses the command line, reading `serve --config FILE` (or `DD_CONFIG`)
/// first so that the file's settings become the defaults the flags and
/// environment override.
pub fn parse_cli<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Cli::command();
    let is_serve = args.get(1).is_some_and(|a| a == "serve");
    let path = if is_serve {
        config_path(&args[2..]).or_else(|| std::env::var_os("DD_CONFIG").map(PathBuf::from))
    } else {
        None
    };
    if let Some(path) = path {
        let entries = read_config_file(&path)?;
        // File keys are long flag names; clap addresses arguments by id.
        let ids: std::collections::HashMap<String, String> = command
            .find_subcommand("serve")
            .into_iter()
            .flat_map(|serve| serve.get_arguments())
            .filter_map(|a| Some((a.get_long()?.to_owned(), a.get_id().to_string())))
            .collect();
        let mut defaults = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let Some(id) = ids.get(&key).filter(|_| key != "config") else {
                return Err(ConfigError::Invalid {
                    path,
                    reason: format!(
                        "unknown setting '{key}' (keys are the `serve` flag names, e.g. sim-speed)"
                    ),
                });
            };
            defaults.push((id.clone(), value));
        }
        command = command.mut_subcommand("serve", |serve| {
            defaults.into_iter().fold(serve, |serve, (id, value)| {
                serve.mut_arg(id, |a| a.default_value(value))
            })
        });
    }
    let matches = command.try_get_matches_from(args)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// `--config PATH` or `--config=PATH` among the `serve` arguments.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// The file's entries as flag name → value text (arrays joined by commas,
/// as the list flags take them).
fn read_config_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
    let scalar = |key: &str, v: &toml::Value| -> Result<String, ConfigError> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(invalid(format!(
                "'{key}' must be a string, number or boolean, not {}",
                other.type_str()
            ))),
        }
    };
    table
        .iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| scalar(key, v))
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                other => scalar(key, other)?,
            };
            Ok((key.clone(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(cli: Result<Cli, ConfigError>) -> ServeArgs {
        match cli {
            Ok(Cli {
                command: Command::Serve(args),
            }) => *args,
            other => panic!("did not parse as serve: {other:?}"),
        }
    }

    #[test]
    fn config_file_sets_defaults_that_flags_override() {
        let dir = std::env::temp_dir().join(format!("dd-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let file = dir.join("dronedelivery.toml");
        std::fs::write(
            &file,
            "role = \"worker\"\nsim-speed = 250.0\nconsumers = 8\ntrust-forwarded-for = true\ncors-allowed-origins = [\"https://a.example\", \"https://b.example\"]\n",
        )
        .unwrap_or_default();
        let path = file.to_string_lossy().to_string();
        let args = serve_args(parse_cli(["dronedelivery", "serve", "--config", &path]));
        assert_eq!(args.role, RoleArg::Worker);
        assert_eq!(args.sim_speed, 250.0);
        assert_eq!(args.consumers, 8);
        assert!(args.trust_forwarded_for);
        assert_eq!(
            args.cors_allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        // A flag wins over the file.
        let args = serve_args(parse_cli([
            "dronedelivery",
            "serve",
            "--consumers",
            "3",
            &format!("--config={path}"),
        ]));
        assert_eq!(args.consumers, 3);
        assert_eq!(args.sim_speed, 250.0);

        // Unknown keys and bad values are refused with the file named.
        std::fs::write(&file, "sim-sped = 2\n").unwrap_or_default();
        let err = parse_cli(["dronedelivery", "serve", "--config", &path]);
        assert!(
            matches!(&err, Err(ConfigError::Invalid { reason, .. }) if reason.contains("sim-sped")),
            "{err:?}"
        );
        std::fs::write(&file, "sim-speed = \"fast\"\n").unwrap_or_default();
        assert!(matches!(
            parse_cli(["dronedelivery", "serve", "--config", &path]),
            Err(ConfigError::Clap(_))
        ));
        std::fs::write(&file, "sim-speed = [1, {a = 2}]\n").unwrap_or_default();
        assert!(matches!(
            parse_cli(["dronedelivery", "serve", "--config", &path]),
            Err(ConfigError::Invalid { .. })
        ));
        let missing = dir.join("missing.toml").to_string_lossy().to_string();
        assert!(matches!(
            parse_cli(["dronedelivery", "serve", "--config", &missing]),
            Err(ConfigError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rate_limit_is_off_unless_a_rate_is_set() {
        assert!(ServeArgs::defaults().rate_limit().is_none());
        let args = serve_args(parse_cli([
            "dronedelivery",
            "serve",
            "--rate-limit-per-second",
            "5",
            "--rate-limit-burst",
            "10",
        ]));
        let limit = args.rate_limit();
        assert_eq!(
            limit.map(|l| (l.per_second.get(), l.burst.get())),
            Some((5, 10))
        );
        assert_eq!(args.tree_config("x".into()).role, Role::All);
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "dronedelivery",
            "serve",
            "--listen",
            "0.0.0.0:9000",
            "--sim-speed",
            "500",
            "--fleet-size",
            "7",
            "--service-area",
            "1,2,3,4",
        ]);
        let Ok(Cli {
            command: Command::Serve(args),
        }) = cli
        else {
            panic!("did not parse: {cli:?}");
        };
        assert_eq!(args.listen.port(), 9000);
        assert_eq!(args.sim_speed, 500.0);
        assert_eq!(args.tree_config("x".into()).fleet_size, 7);
        assert_eq!(args.service_area.north, 3.0);
        assert_eq!(
            ServeArgs::defaults().http_limits(),
            HttpLimits {
                header_timeout: Duration::from_secs(10),
                body_timeout: Duration::from_secs(10),
                max_connections: 10_000,
            }
        );
        assert!(Cli::try_parse_from(["dronedelivery", "serve", "--max-connections", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["dronedelivery", "serve", "--http-header-timeout-secs", "0"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["dronedelivery", "serve", "--sim-speed", "0"]).is_err());
        assert!(Cli::try_parse_from(["dronedelivery", "serve", "--fleet-size", "0"]).is_err());
    }
}
