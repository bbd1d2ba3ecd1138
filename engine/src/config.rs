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
            Err(e) => unreachable!("defaults must parse: {e}"),
        }
    }

    /// The actor tree's settings.
    pub fn tree_config(&self, instance: String) -> TreeConfig {
        TreeConfig {
            instance,
            area: self.service_area,
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
