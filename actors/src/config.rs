//! Settings of the actor tree (the engine fills them from flags and env).

use std::time::Duration;

use crate::domain::{FleetSpec, ServiceArea};

/// How the drone simulation runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    /// How many times faster than real time drones fly (`--sim-speed`).
    pub speed_factor: f64,
    /// Cruise speed of a drone in metres per second of simulated time.
    pub drone_speed_mps: f64,
    /// Real-time interval between two position updates of a flying drone.
    pub tick: Duration,
}

impl SimSettings {
    /// Effective ground speed in metres per real second.
    pub fn real_speed_mps(&self) -> f64 {
        self.drone_speed_mps * self.speed_factor
    }

    /// Real time needed to fly `meters`.
    pub fn flight_time(&self, meters: f64) -> Duration {
        let secs = meters / self.real_speed_mps().max(f64::MIN_POSITIVE);
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            speed_factor: 1.0,
            drone_speed_mps: 15.0,
            tick: Duration::from_millis(250),
        }
    }
}

/// Which parts of the engine one process runs. The same binary serves every
/// role, so a deployment can scale HTTP ingestion and queue consumption
/// separately (the original ran them as separate services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Role {
    /// HTTP API, queue consumers and the actor tree in one process (the
    /// embedded default and small deployments).
    #[default]
    All,
    /// HTTP ingestion and reads only: requests go to the queue, reads to the
    /// stores. No consumers, fleet or delivery actors, so it is stateless and
    /// any number of replicas can run.
    Gateway,
    /// Queue consumers, the fleet and the delivery actors; its HTTP port
    /// serves only probes, metrics and the admin API.
    Worker,
}

impl Role {
    /// Whether this process runs the actor tree (fleet, deliveries, consumers).
    pub fn runs_actors(self) -> bool {
        !matches!(self, Self::Gateway)
    }

    /// Whether this process serves the public `/api` routes.
    pub fn serves_api(self) -> bool {
        !matches!(self, Self::Worker)
    }

    /// The role's name, as the `--role` flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Gateway => "gateway",
            Self::Worker => "worker",
        }
    }
}

/// How long an idle delivery actor lives while more than
/// [`TreeConfig::max_live_deliveries`] are alive: long enough for a drone
/// assigned at once (the fleet answers within milliseconds when one is
/// free) to find the actor still there, short enough to bound the live
/// count near the limit plus one second of creations.
pub const PRESSURE_IDLE: Duration = Duration::from_secs(1);

/// Everything the actor tree needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeConfig {
    /// What this process runs (see [`Role`]).
    pub role: Role,
    /// Prefix of this engine's actor names. Names are process-global in
    /// ractor; a prefix lets several engines live in one process (tests).
    pub instance: String,
    /// Service area.
    pub area: ServiceArea,
    /// This engine's fleet partition. Drones are shared state in the drone
    /// store; each engine process schedules only the drones of its own
    /// partition (ids `{fleet_id}-drone-NNNN`, or `drone-NNNN` when empty), so
    /// two processes on one store never assign the same drone. Give every
    /// process a stable, distinct id (a StatefulSet ordinal).
    pub fleet_id: String,
    /// Drones seeded at first start.
    pub fleet_size: usize,
    /// Depots the fleet is spread over.
    pub depots: usize,
    /// The seeded drones' payload classes, weight limits and batteries;
    /// also what the gateway checks a package against.
    pub drones: FleetSpec,
    /// Drone simulation.
    pub sim: SimSettings,
    /// Workers in the competing-consumer pool.
    pub consumers: usize,
    /// Messages held (received but unsettled) at most; bounds memory and
    /// gives the broker back-pressure.
    pub prefetch: usize,
    /// Deliveries of one message before it is dead-lettered.
    pub max_delivery_attempts: u32,
    /// Base delay before a failed message is redelivered (doubles per attempt).
    pub retry_delay: Duration,
    /// How long a message about a delivery that does not exist yet is kept
    /// before its last attempt: twice the queue's lock duration, time for a
    /// create held by an engine that died to come back (see
    /// [`crate::workflow::await_create_delay`]).
    pub create_grace: Duration,
    /// Timeout of calls between actors.
    pub call_timeout: Duration,
    /// How long a graceful stop may take (SIGTERM, operator restarts):
    /// in-flight work still running after it is abandoned to the queue.
    pub shutdown_grace: Duration,
    /// An idle delivery actor stops after this long; the next message or
    /// read re-activates it from the store.
    pub passivate_after: Duration,
    /// Delivery actors alive at once before idle ones are let go sooner:
    /// past it, an idle delivery stops after [`PRESSURE_IDLE`] instead of
    /// `passivate_after`. Each live delivery holds its actor, mailboxes and
    /// record (about 20 KiB); a delivery waiting for a drone is idle until
    /// one is assigned, and with a backlog larger than the fleet, tens of
    /// thousands wait. The limit bounds that memory by count, as Akka's
    /// active-entity limit does, instead of leaving it to the creation
    /// rate times the idle timeout.
    pub max_live_deliveries: usize,
    /// A delivery waiting longer than this for a free drone is compensated:
    /// cancelled with the reason and dead-lettered. `None`: wait forever.
    pub max_drone_wait: Option<Duration>,
    /// The starvation bound: a normal delivery waiting this long for a
    /// drone is served as expedited. `None`: expedited ones always go first.
    pub max_normal_wait: Option<Duration>,
    /// How long before its pickup time a scheduled delivery asks for a
    /// drone; a pickup time within this from now means now.
    pub pickup_lead: Duration,
    /// Partition ownership across engines.
    pub ownership: OwnershipSettings,
}

/// How engines share partitions (see [`crate::domain::ownership`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipSettings {
    /// This process's id among the engines: unique per process, never
    /// reused, so a restarted engine never inherits its predecessor's
    /// leases and epochs (it takes them over once they lapse).
    pub engine_id: String,
    /// Partitions the ids are spread over. Every engine of one deployment
    /// must use the same count.
    pub partitions: u32,
    /// How long a lease lasts without renewal: the failover time after a
    /// crash, against the risk of a takeover during a long pause.
    pub lease: Duration,
    /// How often an engine renews its membership and leases and rebalances;
    /// well under `lease`.
    pub heartbeat: Duration,
}

impl OwnershipSettings {
    /// A fresh, unique engine id: `{host}-{pid}-{random}`.
    pub fn new_engine_id(host: &str) -> String {
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &random[..8])
    }
}

impl Default for OwnershipSettings {
    fn default() -> Self {
        Self {
            engine_id: Self::new_engine_id("engine"),
            partitions: 16,
            lease: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
        }
    }
}

impl Default for TreeConfig {
    fn default() -> Self {
        Self {
            role: Role::All,
            instance: "dd".into(),
            area: ServiceArea::default(),
            fleet_id: String::new(),
            fleet_size: 100,
            depots: 4,
            drones: FleetSpec::default(),
            sim: SimSettings::default(),
            consumers: 16,
            prefetch: 256,
            max_delivery_attempts: 5,
            retry_delay: Duration::from_millis(200),
            create_grace: Duration::from_secs(120),
            call_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(20),
            passivate_after: Duration::from_secs(15),
            max_live_deliveries: 20_000,
            max_drone_wait: None,
            max_normal_wait: Some(Duration::from_secs(120)),
            pickup_lead: Duration::from_secs(300),
            ownership: OwnershipSettings::default(),
        }
    }
}
