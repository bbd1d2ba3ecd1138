//! # dronedelivery-actors
//!
//! The domain and the actor tree of the drone delivery engine, with the ports
//! (traits) behind which queues and stores live. This crate knows nothing of
//! HTTP, Redis or MongoDB: the gateway talks to it through [`tree::Engine`],
//! and the engine crate plugs adapters into [`ports::Backends`].
//!
//! ## How a delivery flows
//! 1. The gateway validates a request ([`domain::DeliveryRequest`]) and puts a
//!    [`ports::QueueMessage`] on the queue; it answers 202 only once the
//!    broker has accepted it.
//! 2. The `consumers` actor pulls messages (bounded by `prefetch`) into a
//!    ractor factory of [`workflow::WorkflowWorker`]s, keyed by delivery id.
//! 3. A worker upserts the package and asks the delivery's actor
//!    ([`delivery::DeliveryActor`], one per id, activated on demand from the
//!    store) to create the delivery. The actor stores it (stage `Created`)
//!    and asks the [`fleet::FleetActor`] for a drone. Only then is the message
//!    completed; a failure is retried with backoff and finally dead-lettered
//!    with its reason ([`workflow::Outcome`]).
//! 4. The fleet claims the nearest free drone from the pool every engine
//!    shares (atomically, in the store; [`ports::DroneStore::claim`]), or
//!    queues the request until one is free ([`domain::dispatch`]). The
//!    [`drone::DroneActor`] flies, simulated in real time
//!    scaled by `--sim-speed`, and reports `Assigned`, `PickedUp`, `Delivered`
//!    to the delivery actor, which stores each stage:
//!    `Created → HeadedToPickup → HeadedToDropoff → Completed`.
//!
//! ## Several engines
//! Deliveries are spread over partitions held by lease ([`ownership`]); a
//! partitioned queue hands an engine only the messages of the partitions it
//! holds, and every write of a delivery or of a drone flying it carries the
//! partition's fencing epoch, which the store checks in the same atomic step
//! as the write ([`domain::ownership`]). Drones belong to no engine: free
//! ones wait in a shared pool, and a claimed drone flies on the engine that
//! holds its delivery, which adopts it when the partition moves
//! ([`fleet`]). See `docs/ownership.md`.
//!
//! ## Supervision
//! ractor gives supervision *events* but no strategy; [`supervisor`] adds
//! one-for-one restarts with backoff and an intensity limit. Actors address
//! each other by registered name ([`context::Context`]), so a restarted actor
//! is found again; state lives in the stores and is reloaded in `pre_start`.
//!
//! ## Rules and actors
//! Every decision is plain code in [`domain`], testable without a runtime:
//! [`domain::lifecycle::apply`] is the delivery's stage machine (a command or
//! a drone report in; the record to store, its tracking events and the
//! effects to send, or a rejection), [`domain::dispatch::Dispatcher`] picks
//! drones, and [`workflow::Outcome`] classifies what becomes of a message.
//! The actors do the I/O around them: load, store, send.
//!
//! ## Layout
//! - [`domain`]: data and rules, no actors, no I/O.
//! - [`protocol`]: the messages actors send each other; [`context`]
//!   addresses actors by name using only those.
//! - [`delivery`], [`drone`], [`fleet`], [`workflow`], [`supervisor`]: one
//!   module per actor (or pool), each depending on `protocol` and
//!   `context`, never on another actor's internals (the fleet supervises
//!   drone actors, so it starts them).
//! - [`ownership`]: the actor that holds this engine's partition leases
//!   (the rules are [`domain::ownership`]; see `docs/ownership.md`).
//! - [`ports`]: the backend traits; [`tree`]: building and stopping the
//!   tree, the operators' view of it, and the [`Engine`] facade.
//! - [`tracecontext`]: W3C trace context carried in queue messages, so a
//!   request's trace continues in the worker that processes it.
//! - [`health`]: what each dependency is doing, for the health report and
//!   for failing fast (readiness does not depend on it).
//! - [`backoff`], [`breaker`], [`metrics`], [`config`]: shared plumbing.

pub mod backoff;
pub mod breaker;
pub mod cluster;
pub mod config;
pub mod context;
pub mod control;
pub mod delivery;
pub mod domain;
pub mod drone;
pub mod fleet;
pub mod health;
pub mod metrics;
pub mod ownership;
pub mod ports;
pub mod protocol;
pub mod supervisor;
pub mod tracecontext;
pub mod tree;
pub mod workflow;

pub use config::{OwnershipSettings, Role, SimSettings, TreeConfig};
pub use ports::Backends;
pub use tree::{CommandError, Engine, SupervisorInfo};
