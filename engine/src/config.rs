//! Command line and environment. Every flag has a `DD_*` environment
//! variable, which is how Kubernetes passes configuration (and secrets) to
//! the pod; flags win over the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use dronedelivery_actors::domain::ServiceArea;
use dronedelivery_actors::{SimSettings, TreeConfig};

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
    /// Show the supervision tree.
    Supervisors,
    /// Restart a supervisor's subtree gracefully.
    Restart {
        /// `root`, `fleet`, `deliveries`, `consumers` or `workflow`.
        name: String,
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
    /// Address the HTTP gateway listens on (port 0 picks a free port).
    #[arg(long, env = "DD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

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

    /// Peek-lock duration of the in-process queue, in seconds: an unsettled
    /// message is redelivered after this.
    #[arg(long, env = "DD_LOCK_DURATION_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lock_duration_secs: u64,

    /// Capacity of the in-process queue; beyond it new requests get 503.
    #[arg(long, env = "DD_QUEUE_CAPACITY", default_value_t = 1_000_000)]
    pub queue_capacity: usize,

    /// Log format.
    #[arg(long, env = "DD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Queue backend.
    #[arg(long, env = "DD_QUEUE", value_enum, default_value_t = QueueKind::Memory)]
    pub queue: QueueKind,

    /// Redis URL (`redis://host:6379/0`). When set, deliveries, tracking
    /// events, drones and idempotency keys live in Redis.
    #[arg(long, env = "DD_REDIS_URL")]
    pub redis_url: Option<Secret>,

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

    /// Service Bus queue name.
    #[arg(long, env = "DD_SERVICEBUS_QUEUE")]
    pub servicebus_queue: Option<String>,

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

    /// Seconds a graceful stop (SIGTERM, operator restart) may take; work
    /// still running then is returned to the queue.
    #[arg(long, env = "DD_SHUTDOWN_GRACE_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_grace_secs: u64,

    /// Seconds after which an idle delivery actor stops (it is re-activated
    /// from the store on its next message or read).
    #[arg(long, env = "DD_PASSIVATE_AFTER_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub passivate_after_secs: u64,

    /// Seconds a delivery may wait for a free drone before it is
    /// compensated (cancelled with the reason, its request dead-lettered so an
    /// operator can replay it). 0: wait as long as it takes.
    #[arg(long, env = "DD_MAX_DRONE_WAIT_SECS", default_value_t = 0)]
    pub max_drone_wait_secs: u64,

    /// This engine's fleet partition: it schedules only drones
    /// `{fleet-id}-drone-NNNN`. Engines sharing one Redis need distinct,
    /// stable ids (e.g. the StatefulSet pod name).
    #[arg(long, env = "DD_FLEET_ID", default_value = "")]
    pub fleet_id: String,
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

    /// The actor tree's settings.
    pub fn tree_config(&self, instance: String) -> TreeConfig {
        TreeConfig {
            instance,
            area: self.service_area,
            fleet_id: self.fleet_id.clone(),
            fleet_size: self.fleet_size as usize,
            depots: self.depots as usize,
            sim: SimSettings {
                speed_factor: self.sim_speed,
                drone_speed_mps: self.drone_speed,
                tick: Duration::from_millis(self.tick_ms),
            },
            consumers: self.consumers as usize,
            prefetch: self.prefetch as usize,
            max_delivery_attempts: self.max_delivery_attempts,
            retry_delay: Duration::from_millis(self.retry_delay_ms),
            call_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            passivate_after: Duration::from_secs(self.passivate_after_secs),
            max_drone_wait: (self.max_drone_wait_secs > 0)
                .then(|| Duration::from_secs(self.max_drone_wait_secs)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(Cli::try_parse_from(["dronedelivery", "serve", "--sim-speed", "0"]).is_err());
        assert!(Cli::try_parse_from(["dronedelivery", "serve", "--fleet-size", "0"]).is_err());
    }
}
