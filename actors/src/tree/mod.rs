//! The supervision tree and the [`Engine`] handle the gateway talks to.
//!
//! ```text
//! root (one_for_one)
//! ├── ownership    membership and partition leases (heartbeat, rebalance)
//! ├── deliveries   dynamic supervisor of delivery/{id} actors
//! ├── fleet        scheduler + supervisor of drone/{id} actors
//! └── consumers    queue pump + workflow factory (competing consumers)
//! ```
//! Start order matters: the partitions are held, and deliveries and drones
//! exist, before the first message is pulled; stop order is the reverse, so
//! the pump stops first and in-flight work drains into live actors, and
//! drones stop before the deliveries they report to.
//!
//! Three jobs, three files: this one builds and stops the tree;
//! `operator.rs` is the operators' view (each supervisor's status, restarts
//! of a subtree, readiness); `facade.rs` is what the gateway calls (submit
//! to the queue, read the stores, confirm, dead letters).

mod facade;
mod operator;

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef, SpawnErr};
use tokio::task::JoinHandle;

pub use facade::CommandError;
pub use operator::SupervisorInfo;

use crate::config::TreeConfig;
use crate::context::Context;
use crate::fleet::FleetActor;
use crate::ownership::OwnershipActor;
use crate::ports::Backends;
use crate::supervisor::{
    ChildSpec, DeliveriesSupervisor, RestartPolicy, StartFn, Strategy, Supervisor, SupervisorArgs,
    SupervisorMsg,
};
use crate::workflow::{drain_workflow, start_workflow, Pump};

/// A running engine: the actor tree plus its backends.
#[derive(Clone)]
pub struct Engine {
    ctx: Arc<Context>,
    root: ActorRef<SupervisorMsg>,
    started_at: chrono::DateTime<chrono::Utc>,
    /// Publishes this engine's card and serves operator requests (see
    /// [`crate::cluster`]); stopped on shutdown.
    control: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

/// Probes the dependencies every [`crate::health::PROBE_EVERY`] until the
/// engine is gone.
async fn watch_dependencies(ctx: std::sync::Weak<Context>) {
    let mut every = tokio::time::interval(crate::health::PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(ctx) = ctx.upgrade() else { return };
        crate::health::probe_all(&ctx.health, &ctx.backends).await;
    }
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
        let ownership = {
            let ctx = Arc::clone(&ctx);
            start_fn(move |sup| {
                let ctx = Arc::clone(&ctx);
                async move {
                    let name = ctx.name("ownership");
                    let (r, _) = Actor::spawn_linked(Some(name), OwnershipActor, ctx, sup).await?;
                    Ok(r.get_cell())
                }
            })
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
                    name: "ownership".into(),
                    start: ownership,
                    stop: None,
                },
                // Deliveries before the fleet: the drones the fleet adopts
                // report to their deliveries as soon as they start, and on
                // a stop the drones stop before the deliveries they report to.
                ChildSpec {
                    name: "deliveries".into(),
                    start: deliveries,
                    stop: None,
                },
                ChildSpec {
                    name: "fleet".into(),
                    start: fleet,
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
        let engine = Self {
            ctx,
            root,
            started_at: chrono::Utc::now(),
            control: Arc::default(),
        };
        let control = engine.spawn_control();
        tokio::spawn(watch_dependencies(Arc::downgrade(&engine.ctx)));
        *engine
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(control);
        Ok((engine, handle))
    }

    /// When this engine started.
    pub fn started_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.started_at
    }

    /// The shared context (settings and backends).
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Stops publishing this engine's card and serving operator requests,
    /// and takes the card down: operators stop seeing a stopping engine at
    /// once rather than when its card lapses.
    async fn leave_cluster(&self) {
        let control = self
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(control) = control {
            control.abort();
        }
        if let Err(e) = self.ctx.backends.control.deregister(self.id()).await {
            tracing::debug!(error = %e, "could not take this engine's card down; it lapses instead");
        }
    }

    /// What this process runs.
    pub fn role(&self) -> crate::config::Role {
        self.ctx.config.role
    }

    /// The fleet's payload classes, limits and batteries, as configured:
    /// what the gateway checks a package against before queueing it.
    pub fn fleet_spec(&self) -> &crate::domain::FleetSpec {
        &self.ctx.config.drones
    }

    /// Stops the tree gracefully: the queue hands back what it received
    /// ahead, the pump stops taking messages, the
    /// workflow pool finishes its jobs, children stop in reverse start order.
    /// Messages still unsettled afterwards (work that outlived the grace
    /// period) are abandoned, so the broker redelivers them at once.
    pub async fn shutdown(&self) {
        self.ctx
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
        let grace = self.ctx.config.shutdown_grace;
        self.leave_cluster().await;
        // Messages received ahead of the pump go back first, while this
        // engine still holds their partitions: the next holders find them
        // as soon as they take the partitions over.
        self.ctx.backends.queue.close().await;
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
}
