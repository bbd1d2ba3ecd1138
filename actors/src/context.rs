//! The shared context every actor of one engine gets, and name-based
//! addressing.
//!
//! Actors find each other by registered name (`{instance}/fleet`,
//! `{instance}/delivery/{id}`), never by a stored `ActorRef`: a restarted actor
//! has a new `ActorRef` but the same name, so addressing by name survives
//! restarts (location transparency within the process).
//!
//! The context knows the actors only by their messages
//! ([`crate::protocol`]); activating a delivery actor that is not running is
//! the delivery module's job ([`crate::delivery::activate`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use ractor::ActorRef;

use crate::config::TreeConfig;
use crate::domain::ownership::{Fence, PartitionId};
use crate::ports::{Backends, LockToken};
use crate::protocol::{DroneMsg, FleetMsg};

/// Shared engine context.
pub struct Context {
    /// Settings.
    pub config: TreeConfig,
    /// Queue and stores.
    pub backends: Backends,
    /// Locks of the messages received and not yet settled by this process.
    /// What is left here when the tree has stopped (work that did not finish
    /// within the grace period) is abandoned, so the broker redelivers it
    /// at once instead of after the lock expires.
    pub in_flight: InFlight,
    /// Circuit breakers of the stores the workflow writes to.
    pub breakers: crate::breaker::Breakers,
    /// The partitions this engine holds (kept by the `ownership` actor).
    pub owned: Owned,
    /// Deliveries this engine accepted, completed and cancelled since it
    /// started: published on its card, summed across the cluster.
    pub counts: crate::control::Counts,
    /// What each dependency is doing (probed by a task of the tree).
    pub health: crate::health::Health,
    /// Set when shutdown begins: the engine is no longer ready.
    pub draining: std::sync::atomic::AtomicBool,
    /// Delivery actors alive in this process (see
    /// `TreeConfig::max_live_deliveries`).
    pub live_deliveries: std::sync::atomic::AtomicUsize,
}

/// The set of unsettled locks (see [`Context::in_flight`]).
#[derive(Debug, Default)]
pub struct InFlight(std::sync::Mutex<std::collections::HashSet<LockToken>>);

impl InFlight {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<LockToken>> {
        // Each critical section is one set operation: a poisoned lock holds
        // a consistent set.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message was received.
    pub fn insert(&self, lock: &LockToken) {
        self.set().insert(lock.clone());
    }

    /// A message was settled.
    pub fn remove(&self, lock: &LockToken) {
        self.set().remove(lock);
    }

    /// Takes every lock still held.
    pub fn take_all(&self) -> Vec<LockToken> {
        self.set().drain().collect()
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.set().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The partitions this engine holds, with their epochs, and when that last
/// changed.
#[derive(Debug, Default)]
pub struct Owned(RwLock<OwnedState>);

#[derive(Debug, Default)]
struct OwnedState {
    held: BTreeMap<PartitionId, u64>,
    last_change: Option<DateTime<Utc>>,
}

impl Owned {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, OwnedState> {
        // Written whole in one step: a poisoned lock still holds a
        // consistent state.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes what the `ownership` actor holds now.
    pub(crate) fn replace(
        &self,
        held: &BTreeMap<PartitionId, u64>,
        last_change: Option<DateTime<Utc>>,
    ) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = OwnedState {
            held: held.clone(),
            last_change,
        };
    }

    /// The fence of `partition`, if this engine holds it.
    pub fn fence(&self, partition: PartitionId) -> Option<Fence> {
        self.read()
            .held
            .get(&partition)
            .map(|&epoch| Fence { partition, epoch })
    }

    /// The fences of every partition held.
    pub fn fences(&self) -> Vec<Fence> {
        self.read()
            .held
            .iter()
            .map(|(&partition, &epoch)| Fence { partition, epoch })
            .collect()
    }

    /// Every partition held, with its epoch.
    pub fn held(&self) -> Vec<(PartitionId, u64)> {
        self.read().held.iter().map(|(p, e)| (*p, *e)).collect()
    }

    /// When this engine last acquired, released or lost a partition.
    pub fn last_change(&self) -> Option<DateTime<Utc>> {
        self.read().last_change
    }
}

impl Context {
    /// A new shared context.
    pub fn new(config: TreeConfig, backends: Backends) -> Arc<Self> {
        Arc::new(Self {
            config,
            backends,
            in_flight: InFlight::default(),
            breakers: crate::breaker::Breakers::new(5, std::time::Duration::from_secs(5)),
            owned: Owned::default(),
            counts: crate::control::Counts::default(),
            health: crate::health::Health::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            live_deliveries: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Registered name of a named singleton (`fleet`, `deliveries`, ...).
    pub fn name(&self, what: &str) -> String {
        format!("{}/{}", self.config.instance, what)
    }

    /// Registered name of a delivery actor.
    pub fn delivery_name(&self, id: &str) -> String {
        format!("{}/delivery/{}", self.config.instance, id)
    }

    /// Registered name of a drone actor.
    pub fn drone_name(&self, id: &str) -> String {
        format!("{}/drone/{}", self.config.instance, id)
    }

    /// The fleet, if it is running.
    pub fn fleet(&self) -> Option<ActorRef<FleetMsg>> {
        ActorRef::where_is(self.name("fleet"))
    }

    /// A drone actor, if it is running.
    pub fn drone(&self, id: &str) -> Option<ActorRef<DroneMsg>> {
        ActorRef::where_is(self.drone_name(id))
    }
}
