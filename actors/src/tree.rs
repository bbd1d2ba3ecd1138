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
use crate::domain::{DeliveryRecord, DeliveryStatus, Package, PackagePatch, Upserted};
use crate::fleet::{FleetActor, FleetSnapshot};
use crate::ports::{Backends, QueueMessage, StoreResult};
use crate::supervisor::{
    ChildSpec, DeliveriesSupervisor, RestartPolicy, StartFn, Supervisor, SupervisorArgs,
    SupervisorMsg, SupervisorStatus,
};
use crate::workflow::Consumers;

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
        let consumers = {
            let ctx = Arc::clone(&ctx);
            start_fn(move |sup| {
                let ctx = Arc::clone(&ctx);
                async move {
                    let name = ctx.name("consumers");
                    let (r, _) = Actor::spawn_linked(Some(name), Consumers, ctx, sup).await?;
                    Ok(r.get_cell())
                }
            })
        };
        let args = SupervisorArgs {
            name: "root".into(),
            children: vec![
                ChildSpec {
                    name: "fleet".into(),
                    start: fleet,
                },
                ChildSpec {
                    name: "deliveries".into(),
                    start: deliveries,
                },
                ChildSpec {
                    name: "consumers".into(),
                    start: consumers,
                },
            ],
            policy: RestartPolicy::default(),
        };
        let (root, handle) = Actor::spawn(Some(ctx.name("root")), Supervisor, args).await?;
        Ok((Self { ctx, root }, handle))
    }

    /// The shared context (settings and backends).
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Stops the tree gracefully: children in reverse order, each drained.
    pub async fn shutdown(&self) {
        if let Err(e) = self
            .root
            .stop_and_wait(
                Some("shutdown".into()),
                Some(std::time::Duration::from_secs(60)),
            )
            .await
        {
            tracing::warn!(error = %e, "tree did not stop in time");
        }
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
