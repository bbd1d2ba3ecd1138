//! Building the supervision tree and the handle the gateway talks to.
//!
//! ```text
//! root (one_for_one)
//! ├── fleet        scheduler + supervisor of drone/{id} actors
//! ├── deliveries   dynamic supervisor of delivery/{id} actors
//! └── consumers    queue pump + workflow factory (competing consumers)
//! ```
//! Start order matters: drones and deliveries exist before the first message
//! is pulled; stop order is the reverse, so the pump stops first and in-flight
//! work drains into live actors.

use std::sync::Arc;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorRef, ActorStatus, SpawnErr};
use tokio::task::JoinHandle;

use crate::config::TreeConfig;
use crate::context::Context;
use crate::delivery::{DeliveryError, DeliveryMsg};
use crate::domain::{
    Confirmation, DeliveryRecord, DeliveryStage, DeliveryStatus, DroneState, Package, PackagePatch,
    TrackingEvent, Upserted,
};
use crate::fleet::{FleetActor, FleetSnapshot};
use crate::ports::{Backends, QueueMessage, StoreResult};
use crate::ports::{DeadLetter, IdempotencyStore, NotifyMeRequest, StoreError, Utilization};
use crate::supervisor::{
    ChildSpec, DeliveriesSupervisor, RestartPolicy, StartFn, Strategy, Supervisor, SupervisorArgs,
    SupervisorMsg, SupervisorStatus,
};
use crate::workflow::{drain_workflow, start_workflow, Pump};

/// Why an engine command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such delivery, dead letter or supervisor.
    #[error("not found")]
    NotFound,
    /// Not possible in the delivery's current stage.
    #[error("not possible in stage {}", .0.name())]
    WrongStage(DeliveryStage),
    /// A backend or actor is unavailable; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// One supervisor as operators see it (`GET /admin/supervisors`).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorInfo {
    /// `root`, `fleet`, `deliveries`, `consumers` or `workflow`.
    pub name: String,
    /// `one_for_one`, `one_for_all` or `rest_for_one`.
    pub strategy: &'static str,
    /// `running`, `restarting` or `stopped`.
    pub status: &'static str,
    /// Live children.
    pub children: usize,
    /// Restarts of it and its children since start.
    pub restarts: u64,
    /// The last failure seen, if any.
    pub last_failure: Option<String>,
}

fn status_of(child: Option<&crate::supervisor::ChildStatus>, alive: bool) -> &'static str {
    match child {
        Some(c) if c.status != "running" => c.status,
        _ if alive => "running",
        _ => "stopped",
    }
}

fn latest_failure(children: &[crate::supervisor::ChildStatus]) -> Option<String> {
    children
        .iter()
        .filter_map(|c| Some((c.last_failure_at?, c)))
        .max_by_key(|(at, _)| *at)
        .and_then(|(_, c)| c.last_failure.clone())
}

/// A running engine: the actor tree plus its backends.
#[derive(Clone)]
pub struct Engine {
    ctx: Arc<Context>,
    root: ActorRef<SupervisorMsg>,
}

fn start_fn<F, Fut>(f: F) -> StartFn
where
    F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
{
    Arc::new(move |sup| Box::pin(f(sup)))
}

impl Engine {
    /// Starts the tree. Returns once every actor is up (drones seeded or
    /// reloaded, pump running), with the root's join handle: the process
    /// should exit when it ends.
    pub async fn start(
        config: TreeConfig,
        backends: Backends,
    ) -> Result<(Self, JoinHandle<()>), SpawnErr> {
        let ctx = Context::new(config, backends);
        let policy = RestartPolicy {
            stop_timeout: ctx.config.shutdown_grace,
            ..RestartPolicy::default()
        };
        let fleet = {
            let ctx = Arc::clone(&ctx);
            start_fn(move |sup| {
                let ctx = Arc::clone(&ctx);
                async move {
                    let name = ctx.name("fleet");
                    let (r, _) = Actor::spawn_linked(Some(name), FleetActor, ctx, sup).await?;
                    Ok(r.get_cell())
                }
            })
        };
        let deliveries = {
            let ctx = Arc::clone(&ctx);
            start_fn(move |sup| {
                let name = ctx.name("deliveries");
                async move {
                    let (r, _) =
                        Actor::spawn_linked(Some(name), DeliveriesSupervisor, (), sup).await?;
                    Ok(r.get_cell())
                }
            })
        };
        let workflow = {
            let ctx = Arc::clone(&ctx);
            start_fn(move |sup| start_workflow(Arc::clone(&ctx), sup))
        };
        let pump = {
            let ctx = Arc::clone(&ctx);
            start_fn(move |sup| {
                let ctx = Arc::clone(&ctx);
                async move {
                    let name = ctx.name("pump");
                    let (r, _) = Actor::spawn_linked(Some(name), Pump, ctx, sup).await?;
                    Ok(r.get_cell())
                }
            })
        };
        let consumer_children = vec![
            ChildSpec {
                name: "workflow".into(),
                start: workflow,
                stop: Some(Arc::new(|cell, timeout| {
                    Box::pin(drain_workflow(cell, timeout))
                })),
            },
            ChildSpec {
                name: "pump".into(),
                start: pump,
                stop: None,
            },
        ];
        let consumers = {
            let ctx = Arc::clone(&ctx);
            let policy = policy.clone();
            start_fn(move |sup| {
                let name = ctx.name("consumers");
                let args = SupervisorArgs {
                    name: "consumers".into(),
                    strategy: Strategy::OneForAll,
                    children: consumer_children.clone(),
                    policy: policy.clone(),
                };
                async move {
                    let (r, _) = Actor::spawn_linked(Some(name), Supervisor, args, sup).await?;
                    Ok(r.get_cell())
                }
            })
        };
        let children = if ctx.config.role.runs_actors() {
            vec![
                ChildSpec {
                    name: "fleet".into(),
                    start: fleet,
                    stop: None,
                },
                ChildSpec {
                    name: "deliveries".into(),
                    start: deliveries,
                    stop: None,
                },
                ChildSpec {
                    name: "consumers".into(),
                    start: consumers,
                    stop: None,
                },
            ]
        } else {
            // A gateway runs no actors: the root stays, childless, so the
            // admin API and readiness see the same shape in every role.
            Vec::new()
        };
        let args = SupervisorArgs {
            name: "root".into(),
            strategy: Strategy::OneForOne,
            children,
            policy,
        };
        let (root, handle) = Actor::spawn(Some(ctx.name("root")), Supervisor, args).await?;
        Ok((Self { ctx, root }, handle))
    }

    /// The shared context (settings and backends).
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// What this process runs.
    pub fn role(&self) -> crate::config::Role {
        self.ctx.config.role
    }

    /// Stops the tree gracefully: the pump stops taking messages, the
    /// workflow pool finishes its jobs, children stop in reverse start order.
    /// Messages still unsettled afterwards (work that outlived the grace
    /// period) are abandoned, so the broker redelivers them at once.
    pub async fn shutdown(&self) {
        let grace = self.ctx.config.shutdown_grace;
        if let Err(e) = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(grace * 2))
            .await
        {
            tracing::warn!(error = %e, "tree did not stop in time");
        }
        let unfinished = self.ctx.in_flight.take_all();
        if !unfinished.is_empty() {
            tracing::warn!(
                messages = unfinished.len(),
                "returning unfinished messages to the queue"
            );
        }
        for lock in unfinished {
            if let Err(e) = self
                .ctx
                .backends
                .queue
                .abandon(&lock, std::time::Duration::ZERO)
                .await
            {
                tracing::warn!(error = %e, "could not return a message; its lock will expire");
            }
        }
    }

    /// Every supervisor of the tree, parents first: `root`, `fleet`,
    /// `deliveries`, `consumers`, `workflow`.
    pub async fn supervisor_tree(&self) -> Vec<SupervisorInfo> {
        let timeout = Some(self.ctx.config.call_timeout);
        let root = match self.root.call(SupervisorMsg::Status, timeout).await {
            Ok(CallResult::Success(s)) => Some(s),
            _ => None,
        };
        let child = |name: &str| {
            root.as_ref()
                .and_then(|r| r.children.iter().find(|c| c.name == name).cloned())
        };
        let consumers = match ActorRef::<SupervisorMsg>::where_is(self.ctx.name("consumers")) {
            Some(c) => match c.call(SupervisorMsg::Status, timeout).await {
                Ok(CallResult::Success(s)) => Some(s),
                _ => None,
            },
            None => None,
        };
        let mut out = Vec::new();
        out.push(SupervisorInfo {
            name: "root".into(),
            strategy: Strategy::OneForOne.name(),
            status: if root.is_some() { "running" } else { "stopped" },
            children: root.as_ref().map_or(0, |r| r.children.len()),
            restarts: root
                .as_ref()
                .map_or(0, |r| r.children.iter().map(|c| c.restarts).sum()),
            last_failure: root.as_ref().and_then(|r| latest_failure(&r.children)),
        });
        if !self.ctx.config.role.runs_actors() {
            return out;
        }
        let fleet = self.fleet().await;
        let fleet_child = child("fleet");
        out.push(SupervisorInfo {
            name: "fleet".into(),
            strategy: Strategy::OneForOne.name(),
            status: status_of(fleet_child.as_ref(), fleet.is_some()),
            children: fleet.as_ref().map_or(0, |f| f.drones),
            restarts: fleet.as_ref().map_or(0, |f| f.restarts)
                + fleet_child.as_ref().map_or(0, |c| c.restarts),
            last_failure: fleet_child.as_ref().and_then(|c| c.last_failure.clone()),
        });
        let deliveries_cell = ractor::registry::where_is(self.ctx.name("deliveries"));
        let deliveries_child = child("deliveries");
        let failures = match ActorRef::<crate::supervisor::DeliveriesMsg>::where_is(
            self.ctx.name("deliveries"),
        ) {
            Some(d) => match d
                .call(crate::supervisor::DeliveriesMsg::Failures, timeout)
                .await
            {
                Ok(CallResult::Success(n)) => n,
                _ => 0,
            },
            None => 0,
        };
        out.push(SupervisorInfo {
            name: "deliveries".into(),
            strategy: Strategy::OneForOne.name(),
            status: status_of(deliveries_child.as_ref(), deliveries_cell.is_some()),
            children: deliveries_cell.map_or(0, |c| c.get_children().len()),
            restarts: failures + deliveries_child.as_ref().map_or(0, |c| c.restarts),
            last_failure: deliveries_child
                .as_ref()
                .and_then(|c| c.last_failure.clone()),
        });
        let consumers_child = child("consumers");
        out.push(SupervisorInfo {
            name: "consumers".into(),
            strategy: Strategy::OneForAll.name(),
            status: status_of(consumers_child.as_ref(), consumers.is_some()),
            children: consumers.as_ref().map_or(0, |c| c.children.len()),
            restarts: consumers_child.as_ref().map_or(0, |c| c.restarts)
                + consumers
                    .as_ref()
                    .map_or(0, |c| c.children.iter().map(|x| x.restarts).sum()),
            last_failure: consumers
                .as_ref()
                .and_then(|c| latest_failure(&c.children))
                .or_else(|| {
                    consumers_child
                        .as_ref()
                        .and_then(|c| c.last_failure.clone())
                }),
        });
        let workflow_child = consumers
            .as_ref()
            .and_then(|c| c.children.iter().find(|x| x.name == "workflow").cloned());
        let workflow_cell = ractor::registry::where_is(self.ctx.name("workflow"));
        let width = self.ctx.config.consumers.max(1) as u64;
        let starts = crate::workflow::WORKER_STARTS.load(std::sync::atomic::Ordering::Relaxed);
        out.push(SupervisorInfo {
            name: "workflow".into(),
            strategy: Strategy::OneForOne.name(),
            status: status_of(workflow_child.as_ref(), workflow_cell.is_some()),
            children: workflow_cell.map_or(0, |c| c.get_children().len()),
            // Workers started beyond the pool width replaced crashed ones
            // (a restart of the whole pool starts `width` more).
            restarts: starts
                .saturating_sub(width * (1 + workflow_child.as_ref().map_or(0, |c| c.restarts))),
            last_failure: workflow_child.as_ref().and_then(|c| c.last_failure.clone()),
        });
        out
    }

    /// Restarts a supervisor's subtree gracefully (operator action): its
    /// parent stops it (children in reverse order, work drained) and starts
    /// it again. `root` restarts every child of the root. Returns the new
    /// status, or `NotFound` for an unknown name.
    pub async fn restart_supervisor(&self, name: &str) -> Result<SupervisorInfo, CommandError> {
        // Answer within an HTTP request's lifetime; a restart that takes
        // longer goes on and shows in the tree's status.
        let timeout =
            Some((self.ctx.config.shutdown_grace * 3).min(std::time::Duration::from_secs(25)));
        let result = match name {
            "root" => self.root.call(SupervisorMsg::RestartAll, timeout).await,
            _ if !self.ctx.config.role.runs_actors() => return Err(CommandError::NotFound),
            "fleet" | "deliveries" | "consumers" => {
                let child = name.to_owned();
                self.root
                    .call(|reply| SupervisorMsg::RestartChild(child, reply), timeout)
                    .await
            }
            "workflow" => {
                let consumers = ActorRef::<SupervisorMsg>::where_is(self.ctx.name("consumers"))
                    .ok_or_else(|| CommandError::Unavailable("consumers is not running".into()))?;
                consumers
                    .call(
                        |reply| SupervisorMsg::RestartChild("workflow".into(), reply),
                        timeout,
                    )
                    .await
            }
            _ => return Err(CommandError::NotFound),
        };
        match result {
            Ok(CallResult::Success(Ok(()))) => {}
            Ok(CallResult::Success(Err(e))) => return Err(CommandError::Unavailable(e)),
            Ok(_) | Err(_) => {
                return Err(CommandError::Unavailable(
                    "the supervisor did not answer".into(),
                ))
            }
        }
        self.supervisor_tree()
            .await
            .into_iter()
            .find(|s| s.name == name)
            .ok_or(CommandError::NotFound)
    }

    /// Puts a message on the queue; returns once the broker accepted it.
    pub async fn submit(&self, message: QueueMessage) -> StoreResult<()> {
        self.ctx.backends.queue.send(message).await
    }

    /// A delivery record, straight from the store (reads never wake actors).
    pub async fn delivery(&self, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        self.ctx.backends.deliveries.get(id).await
    }

    /// Status of a delivery: stage and ETAs from its record, position from its
    /// drone while one is assigned.
    pub async fn status(&self, id: &str) -> StoreResult<Option<DeliveryStatus>> {
        let Some(record) = self.ctx.backends.deliveries.get(id).await? else {
            return Ok(None);
        };
        let drone_position = match (&record.delivery.drone_id, record.stage.is_terminal()) {
            (Some(drone_id), false) => self
                .ctx
                .backends
                .drones
                .get(drone_id)
                .await?
                .map(|d| d.position),
            _ => None,
        };
        let last_event_location = if drone_position.is_none() {
            self.ctx
                .backends
                .deliveries
                .events(id)
                .await?
                .iter()
                .rev()
                .find_map(|e| e.location)
        } else {
            None
        };
        Ok(Some(DeliveryStatus {
            stage: record.stage,
            stage_name: record.stage.name().to_owned(),
            last_known_location: drone_position.or(last_event_location),
            pickup_eta: record.pickup_eta,
            delivery_eta: record.delivery_eta,
            drone_id: record.delivery.drone_id.clone(),
        }))
    }

    /// A package.
    pub async fn package(&self, id: &str) -> StoreResult<Option<Package>> {
        self.ctx.backends.packages.get(id).await
    }

    /// Creates or replaces a package.
    pub async fn upsert_package(&self, package: &Package) -> StoreResult<Upserted> {
        self.ctx.backends.packages.upsert(package).await
    }

    /// Partially updates a package.
    pub async fn patch_package(
        &self,
        id: &str,
        patch: &PackagePatch,
    ) -> StoreResult<Option<Package>> {
        self.ctx.backends.packages.patch(id, patch).await
    }

    /// Tracking events of a delivery, oldest first.
    pub async fn events(&self, id: &str) -> StoreResult<Vec<TrackingEvent>> {
        self.ctx.backends.deliveries.events(id).await
    }

    /// Every drone's stored state (of every engine sharing the drone store),
    /// straight from the store like the other reads.
    pub async fn drones(&self) -> StoreResult<Vec<DroneState>> {
        self.ctx.backends.drones.list().await
    }

    /// Drone utilisation of an owner in a month (UTC), from the history of
    /// finished deliveries.
    pub async fn utilization(
        &self,
        owner_id: &str,
        year: i32,
        month: u32,
    ) -> StoreResult<Utilization> {
        self.ctx
            .backends
            .history
            .utilization(owner_id, year, month)
            .await
    }

    /// Records a notify-me request for an existing delivery.
    pub async fn add_notify_me(
        &self,
        id: &str,
        email_address: Option<String>,
        sms: Option<String>,
    ) -> Result<(), CommandError> {
        if self.ctx.backends.deliveries.get(id).await?.is_none() {
            return Err(CommandError::NotFound);
        }
        let request = NotifyMeRequest {
            delivery_id: id.to_owned(),
            email_address,
            sms,
            created_at: chrono::Utc::now(),
        };
        self.ctx.backends.notify.add(&request).await?;
        Ok(())
    }

    /// Stores the recipient's confirmation of a completed delivery (through
    /// its actor, the delivery's single writer) and notifies subscribers.
    ///
    /// A `gateway`-role process runs no delivery actors: it checks the stage
    /// in the store and sends a `confirm` message that a worker applies
    /// through the actor.
    pub async fn confirm(&self, id: &str, confirmation: Confirmation) -> Result<(), CommandError> {
        let Some(record) = self.ctx.backends.deliveries.get(id).await? else {
            return Err(CommandError::NotFound);
        };
        if !self.ctx.config.role.runs_actors() {
            if !record
                .needs_confirmation()
                .map_err(CommandError::WrongStage)?
            {
                return Ok(());
            }
            let body = serde_json::to_value(crate::workflow::ConfirmMessage {
                delivery_id: id.to_owned(),
                confirmation,
            })
            .map_err(|e| CommandError::Unavailable(e.to_string()))?;
            let message = QueueMessage::new(crate::ports::Operation::Confirm, &body, None);
            self.ctx.backends.queue.send(message).await?;
            return Ok(());
        }
        let actor = self
            .ctx
            .delivery(id)
            .await
            .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let confirmation = Box::new(confirmation);
        match actor
            .call(
                |reply| DeliveryMsg::Confirm(confirmation, reply),
                Some(self.ctx.config.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(Ok(()))) => Ok(()),
            Ok(CallResult::Success(Err(DeliveryError::NotFound))) => Err(CommandError::NotFound),
            Ok(CallResult::Success(Err(DeliveryError::WrongStage(stage)))) => {
                Err(CommandError::WrongStage(stage))
            }
            Ok(CallResult::Success(Err(e))) => Err(CommandError::Unavailable(e.to_string())),
            Ok(_) | Err(_) => Err(CommandError::Unavailable(
                "the delivery actor did not answer".into(),
            )),
        }
    }

    /// Dead letters, newest first, and how many there are in all.
    pub async fn dead_letters(
        &self,
        offset: usize,
        limit: usize,
    ) -> StoreResult<(Vec<DeadLetter>, u64)> {
        let page = self.ctx.backends.dead_letters.list(offset, limit).await?;
        let total = self.ctx.backends.dead_letters.count().await?;
        Ok((page, total))
    }

    /// Puts a dead-lettered message back on the queue (same message id, so
    /// a second failure updates the same dead letter), then removes the dead
    /// letter. Returns the message sent.
    pub async fn replay_dead_letter(&self, id: &str) -> Result<QueueMessage, CommandError> {
        let letter = self
            .ctx
            .backends
            .dead_letters
            .get(id)
            .await?
            .ok_or(CommandError::NotFound)?;
        let mut message = letter.message.clone();
        message.enqueued_at = chrono::Utc::now();
        // Remove first: if the replayed message fails again quickly, its new
        // dead letter must not be deleted by this replay. If the send fails,
        // the dead letter is put back.
        self.ctx.backends.dead_letters.remove(id).await?;
        if let Err(e) = self.ctx.backends.queue.send(message.clone()).await {
            if let Err(e2) = self.ctx.backends.dead_letters.put(letter).await {
                tracing::error!(message_id = %id, error = %e2, "could not restore a dead letter after a failed replay");
            }
            return Err(e.into());
        }
        metrics::counter!(crate::metrics::DEAD_LETTERS_REPLAYED_TOTAL).increment(1);
        tracing::info!(message_id = %id, "dead letter replayed");
        Ok(message)
    }

    /// The idempotency-key store (`Idempotency-Key` on POST).
    pub fn idempotency(&self) -> &Arc<dyn IdempotencyStore> {
        &self.ctx.backends.idempotency
    }

    /// Messages waiting in the queue.
    pub async fn queue_depth(&self) -> StoreResult<u64> {
        self.ctx.backends.queue.depth().await
    }

    /// The root supervisor's view of the tree.
    pub async fn supervisors(&self) -> Option<SupervisorStatus> {
        match self
            .root
            .call(SupervisorMsg::Status, Some(self.ctx.config.call_timeout))
            .await
        {
            Ok(CallResult::Success(s)) => Some(s),
            _ => None,
        }
    }

    /// The fleet's counts, when it is running.
    pub async fn fleet(&self) -> Option<FleetSnapshot> {
        let fleet = self.ctx.fleet()?;
        match fleet
            .call(
                crate::fleet::FleetMsg::Snapshot,
                Some(self.ctx.config.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(s)) => Some(s),
            _ => None,
        }
    }

    /// Ready when the root and every child is running and every backend answers.
    pub async fn readiness(&self) -> Result<(), String> {
        if self.root.get_status() != ActorStatus::Running {
            return Err("the supervision tree is not running".into());
        }
        let tree = self
            .supervisors()
            .await
            .ok_or("the root supervisor does not answer")?;
        if let Some(child) = tree.children.iter().find(|c| c.status != "running") {
            return Err(format!("{} is {}", child.name, child.status));
        }
        self.ctx.backends.ping().await
    }
}
