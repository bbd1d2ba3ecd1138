//! The operators' view of the tree: every supervisor's status, a graceful
//! restart of a subtree, readiness.

use ractor::rpc::CallResult;
use ractor::{ActorRef, ActorStatus};

use super::{CommandError, Engine};
pub use crate::control::SupervisorInfo;
use crate::ownership::{ClusterView, LeaseView};
use crate::ports::StoreResult;
use crate::protocol::{FleetMsg, FleetSnapshot};
use crate::supervisor::{ChildStatus, RunState, Strategy, SupervisorMsg, SupervisorStatus};

fn status_of(child: Option<&ChildStatus>, alive: bool) -> RunState {
    match child {
        Some(c) if c.status != RunState::Running => c.status,
        _ if alive => RunState::Running,
        _ => RunState::Stopped,
    }
}

fn latest_failure(children: &[ChildStatus]) -> Option<String> {
    children
        .iter()
        .filter_map(|c| Some((c.last_failure_at?, c)))
        .max_by_key(|(at, _)| *at)
        .and_then(|(_, c)| c.last_failure.clone())
}

impl Engine {
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
            strategy: Strategy::OneForOne.name().to_owned(),
            status: if root.is_some() {
                RunState::Running
            } else {
                RunState::Stopped
            },
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
            strategy: Strategy::OneForOne.name().to_owned(),
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
            strategy: Strategy::OneForOne.name().to_owned(),
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
            strategy: Strategy::OneForAll.name().to_owned(),
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
            strategy: Strategy::OneForOne.name().to_owned(),
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

    /// The cluster as this engine sees it, from the store: the live
    /// engines and every partition's lease.
    pub async fn cluster(&self) -> StoreResult<ClusterView> {
        let settings = &self.ctx.config.ownership;
        let store = &self.ctx.backends.ownership;
        let (leases, now) = store.leases(settings.partitions).await?;
        Ok(ClusterView {
            engine_id: settings.engine_id.clone(),
            engines: store.engines().await?,
            members: self.ctx.backends.control.members().await?,
            leases: leases
                .into_iter()
                .map(|l| {
                    l.map(|l| LeaseView {
                        live: l.is_live(now),
                        owner: l.owner,
                        epoch: l.epoch,
                    })
                })
                .collect(),
            last_change: self.ctx.owned.last_change(),
        })
    }

    /// The fleet's counts, when it is running.
    pub async fn fleet(&self) -> Option<FleetSnapshot> {
        let fleet = self.ctx.fleet()?;
        match fleet
            .call(FleetMsg::Snapshot, Some(self.ctx.config.call_timeout))
            .await
        {
            Ok(CallResult::Success(s)) => Some(s),
            _ => None,
        }
    }

    /// Ready when start-up is done, the root and every child is running, and
    /// shutdown has not begun. Dependencies do not count (see
    /// [`crate::health`]): a store outage must not take every replica out
    /// of load balancing at once.
    pub async fn readiness(&self) -> Result<(), String> {
        if self.ctx.draining.load(std::sync::atomic::Ordering::Acquire) {
            return Err("draining: the engine is shutting down".into());
        }
        self.tree_readiness().await
    }

    /// Every dependency's last known health (see [`crate::health`]).
    pub fn dependencies(&self) -> Vec<crate::health::DependencyStatus> {
        self.ctx
            .health
            .report(&self.ctx.backends, &self.ctx.breakers)
    }

    /// The tree's half of [`Engine::readiness`]: the root and every child
    /// running. Cheap (one actor call), unlike pinging every backend.
    pub(crate) async fn tree_readiness(&self) -> Result<(), String> {
        if self.root.get_status() != ActorStatus::Running {
            return Err("the supervision tree is not running".into());
        }
        let tree = self
            .supervisors()
            .await
            .ok_or("the root supervisor does not answer")?;
        if let Some(child) = tree.children.iter().find(|c| c.status != RunState::Running) {
            return Err(format!("{} is {}", child.name, child.status));
        }
        Ok(())
    }
}
