//! Operating every engine from any engine: who is in the cluster, and
//! operator commands carried to a named engine.
//!
//! Each engine, whatever its role, publishes a **card** (id, role, version,
//! start time, readiness, the partitions it holds, drones flying) through
//! the [`ControlPlane`](crate::ports::ControlPlane) every [`CARD_EVERY`], valid for [`CARD_TTL`]: the
//! members of the cluster are the cards that have not lapsed. Gateways
//! publish cards too, though they hold no partitions (the partition leases
//! count only the engines that run actors).
//!
//! Each engine also **serves** the operator commands addressed to it
//! ([`ControlRequest`]: read the supervision tree, restart a subtree). The
//! control plane carries a request to one engine by its id and the reply
//! back, with a timeout, so an operator reaches any engine through the one
//! in front of it; no engine needs to know another's address. Requests are
//! at most once: one that finds nobody listening, or no answer in time, is
//! reported ([`CallError`]), never queued for an engine that may never come
//! back. A command aimed at the engine itself runs in place.
//!
//! A **rolling restart** ([`Engine::rolling_restart`]) restarts one
//! supervisor on every engine that runs actors, one after the other, each
//! once the previous one is ready again, so the cluster never loses more
//! than one engine's share of work at a time.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use tokio::task::JoinHandle;

pub use crate::control::{
    ControlReply, ControlRequest, Counts, CountsView, EngineCard, IncomingRequest, SupervisorInfo,
};
pub use crate::ports::CallError;
use crate::ports::StoreError;
use crate::tree::{CommandError, Engine};

/// How often an engine refreshes its card.
pub const CARD_EVERY: Duration = Duration::from_secs(1);
/// How long a card lasts unrefreshed: an engine that stops refreshing (it
/// died) leaves the members after this.
pub const CARD_TTL: Duration = Duration::from_secs(5);
/// How long a call for the supervision tree waits for its answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a restart call waits: the engine bounds its own restart to 25 s.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a rolling restart waits for each engine to be ready again.
pub const READY_AGAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The figures of the whole cluster (`GET /api/fleet`), for the console's
/// fleet page whichever engine serves it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FleetSummary {
    /// Live engines counted.
    pub engines: usize,
    /// Accepted, completed and cancelled deliveries: the sum of the live
    /// engines' counts since each started (an engine that restarts starts
    /// from zero).
    pub counts: CountsView,
    /// Deliveries waiting for a drone (from the store).
    pub waiting_for_drone: u64,
    /// Deliveries under way at risk of missing their deadline (from the
    /// store).
    #[serde(default)]
    pub at_risk: u64,
    /// Messages waiting on the queue; `null` when the broker does not tell
    /// this engine (a Service Bus key without the Manage right).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub queue_depth: Option<u64>,
    /// Dead letters (from the store).
    pub dead_letters: u64,
    /// Drones flying a delivery, summed over the live engines.
    pub drones_flying: usize,
}

/// Why a command on a named engine failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The target refused or failed the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The target could not be reached.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// How one engine fared in a rolling restart.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EngineRestart {
    /// The engine.
    pub engine: String,
    /// `restarted` (and ready again), `failed` or `skipped` (after a
    /// failure, the remaining engines are left alone).
    pub outcome: String,
    /// The supervisor's state after the restart.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub supervisor: Option<SupervisorInfo>,
    /// What went wrong.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error: Option<String>,
}

impl Engine {
    /// This engine's id.
    pub fn id(&self) -> &str {
        &self.context().config.ownership.engine_id
    }

    /// This engine's card, as of now.
    pub async fn card(&self) -> EngineCard {
        let ready = self.readiness().await;
        let fleet = self.fleet().await;
        let ctx = self.context();
        EngineCard {
            id: self.id().to_owned(),
            role: ctx.config.role.name().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started_at(),
            ready: ready.is_ok(),
            not_ready: ready.err(),
            partitions: ctx.owned.fences().iter().map(|f| f.partition).collect(),
            drones_flying: fleet.map_or(0, |f| f.flying),
            counts: ctx.counts.view(),
            seen_at: Utc::now(),
        }
    }

    /// The cluster's figures: counts summed over the live engines' cards,
    /// the rest read from the shared queue and stores.
    pub async fn fleet_summary(&self) -> Result<FleetSummary, StoreError> {
        let b = &self.context().backends;
        let members = b.control.members().await?;
        let mut counts = CountsView::default();
        for c in &members {
            counts.accepted += c.counts.accepted;
            counts.completed += c.counts.completed;
            counts.cancelled += c.counts.cancelled;
        }
        Ok(FleetSummary {
            engines: members.len(),
            counts,
            waiting_for_drone: b.deliveries.awaiting_drone_count().await?,
            at_risk: b.deliveries.at_risk_count().await?,
            queue_depth: b.queue.depth().await?,
            dead_letters: b.dead_letters.count().await?,
            drones_flying: members.iter().map(|c| c.drones_flying).sum(),
        })
    }

    /// The live engines' cards, sorted by id.
    pub async fn members(&self) -> Result<Vec<EngineCard>, StoreError> {
        self.context().backends.control.members().await
    }

    /// The supervision tree of `engine` (this one's without a call).
    pub async fn supervisors_of(&self, engine: &str) -> Result<Vec<SupervisorInfo>, RemoteError> {
        if engine == self.id() {
            return Ok(self.supervisor_tree().await);
        }
        match self
            .call(engine, &ControlRequest::Supervisors, READ_TIMEOUT)
            .await?
        {
            ControlReply::Supervisors { supervisors } => Ok(supervisors),
            other => Err(unexpected(&other)),
        }
    }

    /// Restarts `supervisor` on `engine` (in place on this one); `by` says
    /// who asked, for the target's log.
    pub async fn restart_on(
        &self,
        engine: &str,
        supervisor: &str,
        by: &str,
    ) -> Result<SupervisorInfo, RemoteError> {
        if engine == self.id() {
            tracing::info!(%supervisor, %by, "restart requested");
            return Ok(self.restart_supervisor(supervisor).await?);
        }
        let request = ControlRequest::Restart {
            supervisor: supervisor.to_owned(),
            by: by.to_owned(),
        };
        match self.call(engine, &request, RESTART_TIMEOUT).await? {
            ControlReply::Restarted { supervisor } => Ok(supervisor),
            ControlReply::NotFound { .. } => Err(CommandError::NotFound.into()),
            ControlReply::Failed { detail } => Err(CommandError::Unavailable(detail).into()),
            other => Err(unexpected(&other)),
        }
    }

    /// Restarts `supervisor` on every engine that runs actors, in id order,
    /// one at a time: each once the previous one is ready again. Stops at
    /// the first failure (the others are `skipped`), so a restart that
    /// breaks engines breaks one. `progress` hears each outcome as it
    /// comes.
    pub async fn rolling_restart(
        &self,
        supervisor: &str,
        by: &str,
        mut progress: impl FnMut(&EngineRestart) + Send,
    ) -> Result<Vec<EngineRestart>, StoreError> {
        let targets: Vec<String> = self
            .members()
            .await?
            .into_iter()
            .filter(|c| c.role != crate::config::Role::Gateway.name())
            .map(|c| c.id)
            .collect();
        let mut out = Vec::with_capacity(targets.len());
        let mut failed = false;
        for engine in targets {
            let outcome = if failed {
                EngineRestart {
                    engine,
                    outcome: "skipped".into(),
                    supervisor: None,
                    error: Some("an earlier engine's restart failed".into()),
                }
            } else {
                let done = self.restart_on(&engine, supervisor, by).await;
                let done = match done {
                    Ok(info) => self.ready_again(&engine).await.map(|()| info),
                    Err(e) => Err(e.to_string()),
                };
                match done {
                    Ok(info) => EngineRestart {
                        engine,
                        outcome: "restarted".into(),
                        supervisor: Some(info),
                        error: None,
                    },
                    Err(e) => {
                        failed = true;
                        EngineRestart {
                            engine,
                            outcome: "failed".into(),
                            supervisor: None,
                            error: Some(e),
                        }
                    }
                }
            };
            progress(&outcome);
            out.push(outcome);
        }
        Ok(out)
    }

    /// Waits until `engine`'s card, refreshed after now, says it is ready.
    async fn ready_again(&self, engine: &str) -> Result<(), String> {
        let since = Utc::now();
        let deadline = tokio::time::Instant::now() + READY_AGAIN_TIMEOUT;
        let mut last = String::from("no fresh card");
        loop {
            match self.members().await {
                Ok(members) => match members.into_iter().find(|c| c.id == engine) {
                    Some(c) if c.seen_at > since && c.ready => return Ok(()),
                    Some(c) if c.seen_at > since => {
                        last = c.not_ready.unwrap_or_else(|| "not ready".into());
                    }
                    Some(_) => {}
                    None => last = "left the cluster".into(),
                },
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "not ready again within {READY_AGAIN_TIMEOUT:?}: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn call(
        &self,
        engine: &str,
        request: &ControlRequest,
        timeout: Duration,
    ) -> Result<ControlReply, CallError> {
        self.context()
            .backends
            .control
            .call(engine, request, timeout)
            .await
    }

    /// Answers one request addressed to this engine.
    async fn answer(&self, request: ControlRequest) -> ControlReply {
        match request {
            ControlRequest::Supervisors => ControlReply::Supervisors {
                supervisors: self.supervisor_tree().await,
            },
            ControlRequest::Restart { supervisor, by } => {
                tracing::info!(%supervisor, %by, "restart requested through the control plane");
                match self.restart_supervisor(&supervisor).await {
                    Ok(supervisor) => ControlReply::Restarted { supervisor },
                    Err(CommandError::NotFound) => ControlReply::NotFound {
                        detail: format!("no supervisor named {supervisor}"),
                    },
                    Err(e) => ControlReply::Failed {
                        detail: e.to_string(),
                    },
                }
            }
        }
    }

    /// Publishes this engine's card and serves the requests addressed to
    /// it, until the engine shuts down (see [`Engine::leave_cluster`]).
    pub(crate) fn spawn_control(&self) -> JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let control = Arc::clone(&engine.context().backends.control);
            let mut every = tokio::time::interval(CARD_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        let card = engine.card().await;
                        match control.register(&card, CARD_TTL).await {
                            Ok(()) => failing = false,
                            Err(e) if !failing => {
                                failing = true;
                                tracing::warn!(error = %e, "cannot publish this engine's card; it leaves the members until the store answers");
                            }
                            Err(_) => {}
                        }
                    }
                    incoming = control.next_request(engine.id()) => match incoming {
                        Ok(incoming) => {
                            let engine = engine.clone();
                            let control = Arc::clone(&control);
                            // A restart takes seconds: reads go on meanwhile.
                            tokio::spawn(async move {
                                let reply = engine.answer(incoming.request.clone()).await;
                                if let Err(e) = control.reply(&incoming, &reply).await {
                                    tracing::warn!(error = %e, request = %incoming.id, "could not answer an operator request");
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "control requests cannot be read; retrying");
                            tokio::time::sleep(CARD_EVERY).await;
                        }
                    },
                }
            }
        })
    }
}

fn unexpected(reply: &ControlReply) -> RemoteError {
    CommandError::Unavailable(format!("unexpected answer: {reply:?}")).into()
}
