//! The engine's side of partition ownership: the `ownership` actor
//! heartbeats this engine's membership, renews the leases it holds, and
//! acquires or releases partitions as the balanced plan says
//! ([`crate::domain::ownership::plan`]); on a graceful stop it releases
//! everything at once, so the others take over within a heartbeat instead
//! of a lease's lifetime.
//!
//! Heartbeats alone converge, but slowly: a partition released on a
//! graceful stop would wait for the other engines' next heartbeats. So an
//! engine that joins, releases partitions or leaves **announces** it
//! through the store ([`OwnershipStore::announce`](crate::ports::OwnershipStore::announce)),
//! and every engine's actor plans again as soon as it hears an
//! announcement, between heartbeats. The announcement carries nothing: the
//! store's leases stay the only truth, and a lost announcement only means
//! the next heartbeat does the work.
//!
//! What it holds is published in [`crate::context::Owned`] (shared
//! through the [`Context`]), where the actors find the fence of a partition. A store
//! that cannot be reached changes nothing: the engine keeps what it holds
//! (its writes stay fenced by the store, which is the arbiter), and the next
//! heartbeat tries again.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;

use crate::context::Context;
use crate::domain::ownership::{plan, LeaseAnswer, LeaseOp, PartitionId};
use crate::metrics as m;
use crate::ports::StoreResult;
use crate::protocol::FleetMsg;

/// The cluster as one engine sees it (`GET /admin/cluster`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// This engine.
    pub engine_id: String,
    /// Live engines holding (or able to hold) partitions, sorted.
    pub engines: Vec<String>,
    /// Every live engine, gateways included, with its role, version, start
    /// time, readiness, partitions and drones, sorted by id.
    pub members: Vec<crate::control::EngineCard>,
    /// Every partition's lease (index = partition; `null`: free).
    pub leases: Vec<Option<LeaseView>>,
    /// When this engine last acquired, released or lost a partition.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_change: Option<DateTime<Utc>>,
}

/// A lease as operators read it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LeaseView {
    /// The engine holding it.
    pub owner: String,
    /// Its fencing epoch.
    pub epoch: u64,
    /// Whether it is live (not lapsed) on the store's clock.
    pub live: bool,
}

/// Messages of the ownership actor.
#[derive(Debug)]
pub enum OwnershipMsg {
    /// Heartbeat: renew, then rebalance.
    Tick,
}

/// The actor.
pub struct OwnershipActor;

/// Its state.
pub struct OwnershipState {
    ctx: Arc<Context>,
    held: BTreeMap<PartitionId, u64>,
    last_change: Option<DateTime<Utc>>,
    /// Whether the other engines should plan again now: this one has just
    /// joined or released partitions.
    announce: bool,
    /// Turns announcements heard into ticks; ends with the actor.
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for OwnershipActor {
    type Msg = OwnershipMsg;
    type State = OwnershipState;
    type Arguments = Arc<Context>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: Arc<Context>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = OwnershipState {
            ctx,
            held: BTreeMap::new(),
            last_change: None,
            // A newcomer asks the others to make room at once.
            announce: true,
            listener: None,
        };
        // Take a share before the consumers start; a store that cannot be
        // reached now is retried on the next heartbeat.
        state.tick().await;
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_interval(state.ctx.config.ownership.heartbeat, || OwnershipMsg::Tick);
        let store = Arc::clone(&state.ctx.backends.ownership);
        state.listener = Some(tokio::spawn(async move {
            loop {
                store.next_announcement().await;
                if myself.cast(OwnershipMsg::Tick).is_err() {
                    return;
                }
            }
        }));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OwnershipMsg::Tick => state.tick().await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(listener) = state.listener.take() {
            listener.abort();
        }
        state.hand_over().await;
        Ok(())
    }
}

impl OwnershipState {
    /// One heartbeat; failures are logged and retried on the next. The
    /// fleet hears of partitions gained or lost once they are published.
    async fn tick(&mut self) {
        let before: Vec<PartitionId> = self.held.keys().copied().collect();
        match self.rebalance().await {
            Ok(()) => {
                if std::mem::take(&mut self.announce) {
                    self.announce().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, held = self.held.len(), "ownership heartbeat failed; keeping the partitions held");
            }
        }
        self.publish();
        let gained: Vec<PartitionId> = self
            .held
            .keys()
            .filter(|p| !before.contains(p))
            .copied()
            .collect();
        let lost: Vec<PartitionId> = before
            .into_iter()
            .filter(|p| !self.held.contains_key(p))
            .collect();
        if gained.is_empty() && lost.is_empty() {
            return;
        }
        // A fleet not running now reads the held partitions when it starts.
        if let Some(fleet) = self.ctx.fleet() {
            let _ = fleet.cast(FleetMsg::Partitions { gained, lost });
        }
    }

    async fn rebalance(&mut self) -> StoreResult<()> {
        let ctx = Arc::clone(&self.ctx);
        let settings = &ctx.config.ownership;
        let store = &ctx.backends.ownership;
        let engine = settings.engine_id.as_str();
        let live = store.heartbeat(engine, settings.lease).await?;
        metrics::gauge!(m::CLUSTER_ENGINES).set(live.len() as f64);
        let held: Vec<(PartitionId, u64)> = self.held.iter().map(|(p, e)| (*p, *e)).collect();
        for (partition, epoch) in held {
            let answer = store
                .lease(partition, engine, LeaseOp::Renew(epoch), settings.lease)
                .await?;
            if !matches!(answer, LeaseAnswer::Held(_)) {
                tracing::warn!(
                    partition,
                    epoch,
                    "partition lease lost: another engine took it over"
                );
                self.held.remove(&partition);
                self.changed("lost");
            }
        }
        let (leases, now) = store.leases(settings.partitions).await?;
        let plan = plan(engine, &live, &leases, now);
        for partition in plan.release {
            if let Some(epoch) = self.held.remove(&partition) {
                store
                    .lease(partition, engine, LeaseOp::Release(epoch), settings.lease)
                    .await?;
                tracing::info!(partition, epoch, "partition handed over");
                self.changed("released");
                self.announce = true;
            }
        }
        for partition in plan.acquire {
            let answer = store
                .lease(partition, engine, LeaseOp::Acquire, settings.lease)
                .await?;
            if let LeaseAnswer::Held(lease) = answer {
                tracing::info!(partition, epoch = lease.epoch, "partition acquired");
                self.held.insert(partition, lease.epoch);
                self.changed("acquired");
            }
        }
        Ok(())
    }

    fn changed(&mut self, change: &'static str) {
        self.last_change = Some(Utc::now());
        metrics::counter!(m::PARTITION_CHANGES_TOTAL, "change" => change).increment(1);
    }

    fn publish(&self) {
        self.ctx.owned.replace(&self.held, self.last_change);
        metrics::gauge!(m::OWNED_PARTITIONS).set(self.held.len() as f64);
    }

    /// A graceful stop: every lease released and the membership left, so
    /// the other engines take over at their next heartbeat.
    async fn hand_over(&mut self) {
        let ctx = Arc::clone(&self.ctx);
        let settings = &ctx.config.ownership;
        let store = &ctx.backends.ownership;
        let engine = settings.engine_id.as_str();
        let held = std::mem::take(&mut self.held);
        self.publish();
        for (partition, epoch) in held {
            match store
                .lease(partition, engine, LeaseOp::Release(epoch), settings.lease)
                .await
            {
                Ok(_) => self.changed("released"),
                Err(e) => {
                    tracing::warn!(partition, error = %e, "could not release a partition; it lapses instead")
                }
            }
        }
        if let Err(e) = store.leave(engine).await {
            tracing::warn!(error = %e, "could not leave the cluster; the membership lapses instead");
        }
        self.announce().await;
    }

    /// Tells the other engines to plan again now (best effort).
    async fn announce(&self) {
        if let Err(e) = self.ctx.backends.ownership.announce().await {
            tracing::debug!(error = %e, "could not announce an ownership change; heartbeats carry it instead");
        }
    }
}
