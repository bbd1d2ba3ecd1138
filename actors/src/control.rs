//! What engines tell each other and operators about themselves: the
//! documents the control plane carries (see [`crate::cluster`] for how they
//! are used, and [`crate::ports::ControlPlane`] for the port that carries
//! them). Plain data with no dependency on the runtime, so the port and the
//! engine can both name it.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ownership::PartitionId;
use crate::supervisor::RunState;

/// One supervisor as operators see it (`GET /admin/supervisors`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SupervisorInfo {
    /// `root`, `fleet`, `deliveries`, `consumers` or `workflow`.
    pub name: String,
    /// `one_for_one`, `one_for_all` or `rest_for_one`.
    pub strategy: String,
    /// `running`, `restarting` or `stopped`.
    pub status: RunState,
    /// Live children.
    pub children: usize,
    /// Restarts of it and its children since start.
    pub restarts: u64,
    /// The last failure seen, if any.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_failure: Option<String>,
}

/// One engine as the cluster sees it (`GET /admin/cluster`, `members`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EngineCard {
    /// The engine's id (its partition leases name it).
    pub id: String,
    /// `all`, `gateway` or `worker`.
    pub role: String,
    /// The engine's version.
    pub version: String,
    /// When the engine started.
    pub started_at: DateTime<Utc>,
    /// Whether its readiness probe passes.
    pub ready: bool,
    /// Why it is not ready, if it is not.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub not_ready: Option<String>,
    /// The partitions it holds.
    pub partitions: Vec<PartitionId>,
    /// Drones flying for its deliveries.
    pub drones_flying: usize,
    /// Deliveries it accepted, completed and cancelled since it started.
    pub counts: CountsView,
    /// When it last refreshed this card.
    pub seen_at: DateTime<Utc>,
}

/// What one engine counts, for the cluster-wide figures (see
/// [`Engine::fleet_summary`](crate::Engine::fleet_summary)). Plain atomics beside the Prometheus
/// counters, which cannot be read back.
#[derive(Debug, Default)]
pub struct Counts {
    accepted: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
}

impl Counts {
    /// A delivery request was accepted (queued) here.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A delivery completed here.
    pub fn completed(&self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// A delivery was cancelled here.
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn view(&self) -> CountsView {
        CountsView {
            accepted: self.accepted.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
        }
    }
}

/// [`Counts`] as published.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CountsView {
    /// Delivery requests accepted.
    pub accepted: u64,
    /// Deliveries completed.
    pub completed: u64,
    /// Deliveries cancelled.
    pub cancelled: u64,
}

/// An operator command for one engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ControlRequest {
    /// Its supervision tree.
    Supervisors,
    /// A graceful restart of one supervisor's subtree.
    Restart {
        /// The supervisor.
        supervisor: String,
        /// Who asked (for the target's log).
        by: String,
    },
}

/// An engine's answer to a [`ControlRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum ControlReply {
    /// The supervision tree, parents first.
    Supervisors {
        /// Every supervisor.
        supervisors: Vec<SupervisorInfo>,
    },
    /// Restarted; its new state.
    Restarted {
        /// The supervisor after the restart.
        supervisor: SupervisorInfo,
    },
    /// No supervisor of that name there.
    NotFound {
        /// What was not found.
        detail: String,
    },
    /// The engine could not do it.
    Failed {
        /// Why.
        detail: String,
    },
}

/// A request as the serving engine receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    /// Names the reply.
    pub id: String,
    /// What is asked.
    pub request: ControlRequest,
}
