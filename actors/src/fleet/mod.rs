//! The fleet: one engine's scheduler of drones and supervisor of the drone
//! actors flying its deliveries.
//!
//! Drones are not owned by an engine: free drones wait in a pool in the
//! drone store that every engine shares, and a fleet claims the nearest
//! free one for each delivery it serves ([`crate::ports::DroneStore::claim`],
//! atomic in the store, so a drone serves one delivery and a delivery has
//! one drone whichever engines claim at once). A fleet serves the
//! deliveries of the partitions its engine holds: it queues their requests
//! ([`Dispatcher`]), claims a drone for each, and runs the claimed drone's
//! actor until the job ends and the drone goes back to the pool.
//!
//! When the engine gains a partition, the fleet reads the partition's
//! deliveries waiting for a drone and **adopts** the drones flying its
//! deliveries (claimed by an engine that died or left), so their flights go
//! on; when it loses one, it stops those drone actors (their writes would
//! be refused anyway: they carry the old holder's fence) and drops the
//! waiting requests. So no drone and no delivery waits for a particular
//! process to come back, and scaling to zero and back loses nothing.
//!
//! On start the fleet seeds its share of drones into the pool (idempotent;
//! `--fleet-id` names them) and takes up the partitions held. A drone actor
//! that fails is restarted with backoff from its stored state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::backoff::Backoff;
use crate::context::Context;
use crate::domain::dispatch::{Abort, Dispatcher};
use crate::domain::lifecycle::drone_request;
use crate::domain::ownership::{partition_of, PartitionId};
use crate::domain::{DroneRequest, DroneState, PackageSize};
use crate::drone::DroneActor;
use crate::metrics::{self as m, LiveActor};
use crate::ports::{Claimed, StoreError};
use crate::protocol::{DeliveryMsg, DroneMsg, FleetMsg, FleetSnapshot};

/// Restarts of a failed drone actor: 100 ms doubling up to 12.8 s.
const RESPAWN_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_millis(12_800));

/// How soon a fleet whose claim found no free drone tries again: drones
/// released by other engines are only seen by claiming.
const RETRY_CLAIM: Duration = Duration::from_millis(200);

/// Requests a dispatch round tries that no free drone can take (each costs
/// a claim in the store that reads up to `limits::CLAIM_SCAN_MAX` drones)
/// before it waits for the next round.
const MAX_UNFIT_PER_ROUND: usize = 8;

/// How often the fleet reads the deliveries' due timers (scheduled
/// pickups): the precision of a pickup's start.
const TIMER_POLL: Duration = Duration::from_millis(500);

/// Due timers read per poll: more wait for the next one.
const TIMERS_PER_POLL: usize = 256;

/// Every how many timer polls (5 s) the fleet looks for drones left
/// flying home with no actor (their engine stopped).
const STRAYS_EVERY_POLLS: u64 = 10;

/// How often the fleet reads the pool's counts (drones, free) for operators.
const POOL_READ_EVERY: Duration = Duration::from_secs(1);

/// The actor.
pub struct FleetActor;

/// The fleet's state.
pub struct FleetState {
    ctx: Arc<Context>,
    dispatch: Dispatcher,
    children: HashMap<ActorId, String>,
    restarts: HashMap<String, u32>,
    total_restarts: u64,
    intensity: crate::supervisor::Intensity,
    /// Drones in the pool and free, as last read, and when.
    pool: (u64, u64),
    pool_read: Option<std::time::Instant>,
    /// The depots of the service area (for jobs beyond every drone's range).
    depots: Vec<crate::domain::Location>,
    /// A `Dispatch` is scheduled.
    retry_armed: bool,
    /// Timer polls so far (the strays check runs every few).
    timer_polls: u64,
    _live: LiveActor,
}

impl Actor for FleetActor {
    type Msg = FleetMsg;
    type State = FleetState;
    type Arguments = Arc<Context>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: Arc<Context>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let added = ctx.backends.drones.seed(&seed(&ctx)).await?;
        if added > 0 {
            tracing::info!(
                drones = added,
                depots = ctx.config.depots,
                "seeded drones into the pool"
            );
        }
        let mut state = FleetState {
            ctx: Arc::clone(&ctx),
            dispatch: Dispatcher::with_starvation_bound(
                ctx.config
                    .max_normal_wait
                    .and_then(|d| chrono::Duration::from_std(d).ok()),
            ),
            children: HashMap::new(),
            restarts: HashMap::new(),
            total_restarts: 0,
            intensity: crate::supervisor::Intensity::new(20, Duration::from_secs(30)),
            pool: (0, 0),
            pool_read: None,
            depots: ctx.config.area.depots(ctx.config.depots),
            retry_armed: false,
            timer_polls: 0,
            _live: LiveActor::new("fleet"),
        };
        // The partitions held: their flying drones and waiting deliveries.
        let held: Vec<PartitionId> = ctx.owned.held().into_iter().map(|(p, _)| p).collect();
        state.take_up(&myself, &held).await?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Stop the drones gracefully (a handler in progress finishes and
        // stores its state) instead of letting ractor kill them. Their jobs
        // stay claimed in the store; the partitions' next holder adopts them.
        state.children.clear();
        myself
            .get_cell()
            .stop_children_and_wait(
                Some("fleet stopping".into()),
                Some(state.ctx.config.shutdown_grace),
            )
            .await;
        Ok(())
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.ctx.config.max_drone_wait.is_some() {
            myself.send_interval(Duration::from_secs(1), || FleetMsg::Expire);
        }
        myself.send_interval(TIMER_POLL, || FleetMsg::Timers);
        state.dispatch_pending(&myself).await;
        state.publish();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FleetMsg::Request(req) => {
                if state.beyond_range(&req).await {
                    state.publish();
                    return Ok(());
                }
                let abort = state.dispatch.request(req, Utc::now());
                state.abort(abort);
                state.dispatch_pending(&myself).await;
            }
            FleetMsg::Withdraw { delivery_id } => {
                let abort = state.dispatch.withdraw(&delivery_id);
                state.abort(abort);
            }
            FleetMsg::Free {
                drone_id,
                delivery_id,
            } => {
                state.dispatch.free(&drone_id, &delivery_id);
                state.dispatch_pending(&myself).await;
            }
            FleetMsg::Dispatch => {
                state.retry_armed = false;
                state.dispatch_pending(&myself).await;
            }
            FleetMsg::Respawn(drone_id) => state.respawn(&myself, drone_id).await,
            FleetMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
            FleetMsg::Expire => state.expire().await,
            FleetMsg::Timers => {
                state.wake_due().await;
                state.timer_polls = state.timer_polls.wrapping_add(1);
                if state.timer_polls % STRAYS_EVERY_POLLS == 0 {
                    state.fly_strays(&myself).await;
                }
            }
            FleetMsg::Partitions { gained, lost } => {
                state.give_up(&lost);
                if let Err(e) = state.take_up(&myself, &gained).await {
                    // Escalate: a restarted fleet takes up every held partition.
                    return Err(format!("could not take up gained partitions: {e}").into());
                }
                state.dispatch_pending(&myself).await;
            }
        }
        state.publish();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The default handler would stop the fleet when any drone stops.
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(drone_id) = state.children.remove(&cell.get_id()) {
                    tracing::error!(%drone_id, error = %err, "drone actor failed; restarting");
                    metrics::counter!(m::ACTOR_RESTARTS_TOTAL, "supervisor" => "fleet")
                        .increment(1);
                    state.total_restarts += 1;
                    if state.intensity.exceeded_after_one_more() {
                        // Escalate: the root restarts the fleet with backoff.
                        return Err(format!(
                            "fleet gave up: {} drone failures within 30 s (last: {drone_id}: {err})",
                            state.intensity.count()
                        )
                        .into());
                    }
                    state.schedule_respawn(&myself, drone_id);
                }
            }
            // A drone actor stops when it parks, or when its job moved
            // elsewhere. One that stopped while this engine still counts on
            // it (it was claimed again here just as it stopped) is started
            // again from the store.
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(drone_id) = state.children.remove(&cell.get_id()) {
                    state.restarts.remove(&drone_id);
                    if state.dispatch.job_of(&drone_id).is_some() {
                        state.schedule_respawn(&myself, drone_id);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Prefix of the drone ids this engine seeds.
pub fn drone_prefix(fleet_id: &str) -> String {
    if fleet_id.is_empty() {
        "drone-".to_owned()
    } else {
        format!("{fleet_id}-drone-")
    }
}

/// This engine's share of drones: spread over the depots round-robin, each
/// with its payload class (the mix interleaved, so every depot gets its
/// share of each class) and a full battery. Drones stored already keep what
/// they have (the seed is idempotent).
fn seed(ctx: &Context) -> Vec<DroneState> {
    let config = &ctx.config;
    let depots = config.area.depots(config.depots);
    let prefix = drone_prefix(&config.fleet_id);
    let classes = config.drones.mix.classes(config.fleet_size);
    let now = Utc::now();
    (0..config.fleet_size)
        .map(|i| {
            DroneState::parked(format!("{prefix}{i:04}"), depots[i % depots.len()]).with_limits(
                config.drones.payload(&classes, i),
                config.drones.battery(config.sim.speed_factor, now),
            )
        })
        .collect()
}

impl FleetState {
    fn partition(&self, delivery_id: &str) -> PartitionId {
        partition_of(delivery_id, self.ctx.config.ownership.partitions)
    }

    /// Takes up `partitions` just held: adopts the drones flying their
    /// deliveries and queues their deliveries waiting for a drone.
    async fn take_up(
        &mut self,
        myself: &ActorRef<FleetMsg>,
        partitions: &[PartitionId],
    ) -> Result<(), StoreError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let ctx = Arc::clone(&self.ctx);
        let mine = |id: &str| partitions.contains(&self.partition(id));
        let flying: Vec<DroneState> = ctx
            .backends
            .drones
            .list()
            .await?
            .into_iter()
            .filter(|d| d.has_job() && d.delivery_id.as_deref().is_some_and(mine))
            .collect();
        let waiting: Vec<String> = ctx
            .backends
            .deliveries
            .awaiting_drone()
            .await?
            .into_iter()
            .filter(|id| mine(id))
            .collect();
        let adopted = flying.len();
        for drone in flying {
            self.dispatch.serve(&drone);
            if ctx.drone(&drone.id).is_none() {
                self.fly(myself, drone).await;
            }
        }
        for id in waiting {
            if self.dispatch.serves(&id) {
                continue;
            }
            if let Some(r) = ctx.backends.deliveries.get(&id).await? {
                if r.stage.awaits_drone() {
                    self.dispatch.enqueue(drone_request(&r), r.updated_at);
                }
            }
        }
        tracing::info!(
            ?partitions,
            adopted,
            waiting = self.dispatch.waiting(),
            "took up partitions"
        );
        Ok(())
    }

    /// Gives up `partitions` lost: their waiting requests are dropped and
    /// the drones flying their deliveries stop here (the new holder adopts
    /// them; their writes from here would be refused).
    fn give_up(&mut self, partitions: &[PartitionId]) {
        if partitions.is_empty() {
            return;
        }
        let count = self.ctx.config.ownership.partitions;
        let stopped = self
            .dispatch
            .drop_deliveries(|id| partitions.contains(&partition_of(id, count)));
        for Abort { drone_id, .. } in &stopped {
            if let Some(drone) = self.ctx.drone(drone_id) {
                drone.stop(Some("partition moved".into()));
            }
        }
        tracing::info!(?partitions, drones = stopped.len(), "gave up partitions");
    }

    /// Starts the actor that flies `drone`'s job here; one that cannot be
    /// started is tried again from the store after a backoff.
    async fn fly(&mut self, myself: &ActorRef<FleetMsg>, drone: DroneState) {
        let drone_id = drone.id.clone();
        if let Err(e) = self.spawn_drone(myself, drone).await {
            tracing::error!(%drone_id, error = %e, "could not start a drone actor; retrying");
            self.schedule_respawn(myself, drone_id);
        }
    }

    async fn spawn_drone(
        &mut self,
        myself: &ActorRef<FleetMsg>,
        drone: DroneState,
    ) -> Result<(), ActorProcessingErr> {
        let id = drone.id.clone();
        let (actor, _) = Actor::spawn_linked(
            Some(self.ctx.drone_name(&id)),
            DroneActor,
            (Arc::clone(&self.ctx), drone),
            myself.get_cell(),
        )
        .await?;
        self.children.insert(actor.get_id(), id);
        Ok(())
    }

    fn schedule_respawn(&mut self, myself: &ActorRef<FleetMsg>, drone_id: String) {
        let n = self.restarts.entry(drone_id.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let delay = RESPAWN_BACKOFF.delay(*n - 1);
        myself.send_after(delay, move || FleetMsg::Respawn(drone_id));
    }

    /// Restarts a failed drone actor from its stored state, if its job is
    /// still one of this engine's deliveries.
    async fn respawn(&mut self, myself: &ActorRef<FleetMsg>, drone_id: String) {
        if self.ctx.drone(&drone_id).is_some() {
            return;
        }
        match self.ctx.backends.drones.get(&drone_id).await {
            Ok(Some(d)) => {
                let held = d
                    .delivery_id
                    .as_deref()
                    .is_some_and(|id| self.ctx.owned.fence(self.partition(id)).is_some());
                if !d.has_job() || !held {
                    return; // released meanwhile, or flown elsewhere now
                }
                self.dispatch.serve(&d);
                self.fly(myself, d).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%drone_id, error = %e, "could not read a drone to restart; retrying");
                self.schedule_respawn(myself, drone_id);
            }
        }
    }

    /// Tells a drone to drop a job the dispatcher took from it.
    fn abort(&self, abort: Option<Abort>) {
        let Some(Abort {
            drone_id,
            delivery_id,
        }) = abort
        else {
            return;
        };
        if let Some(drone) = self.ctx.drone(&drone_id) {
            let _ = drone.cast(DroneMsg::Abort { delivery_id });
        }
    }

    /// Claims drones for the waiting requests, most urgent first (see
    /// [`Dispatcher`]), until none is
    /// free or nothing waits; tries again soon when the pool was empty or
    /// the store could not be reached.
    async fn dispatch_pending(&mut self, myself: &ActorRef<FleetMsg>) {
        let mut budget = self.dispatch.waiting();
        let mut retry = false;
        // Requests no free drone can take now (too heavy or too far for
        // the free ones, or none of their classes free): the next ones are
        // tried, and these keep their place.
        let mut unfit = Vec::new();
        let mut tried_unfit = 0;
        // The smallest package size no free drone carries this round: a
        // request of that size or larger is not claimed for again.
        let mut none_free_from: Option<PackageSize> = None;
        while budget > 0 && tried_unfit < MAX_UNFIT_PER_ROUND {
            budget -= 1;
            // Only packages smaller than the sizes no free drone carries:
            // the others keep their place, untouched.
            let Some(waiting) = self.dispatch.next_request_below(Utc::now(), none_free_from) else {
                break;
            };
            let request = waiting.request.clone();
            let fence = self.ctx.owned.fence(self.partition(&request.delivery_id));
            if fence.is_none() && self.ctx.backends.queue.partitioned() {
                continue; // its partition moved: served by its new holder
            }
            match self
                .ctx
                .backends
                .drones
                .claim(&request, fence, Utc::now())
                .await
            {
                Ok(Claimed::Drone(drone)) => self.start_job(myself, *drone).await,
                Ok(Claimed::NoneFree) => {
                    // No drone of its classes is free: nor for any larger
                    // package; none at all for a small one.
                    retry = true;
                    let size = request.package_size;
                    unfit.push(waiting);
                    if size == PackageSize::Small {
                        break;
                    }
                    none_free_from = Some(none_free_from.map_or(size, |s| s.min(size)));
                }
                Ok(Claimed::NoneFits) => {
                    unfit.push(waiting);
                    tried_unfit += 1;
                    retry = true;
                }
                Ok(Claimed::Busy(drone_id)) => {
                    // The drone of the delivery's older request is still
                    // being released: make sure it is told, try again later.
                    self.ensure_aborted(myself, &drone_id, &request).await;
                    self.dispatch.defer(waiting, Utc::now());
                    retry = true;
                }
                Ok(Claimed::Fenced) => {
                    tracing::info!(delivery_id = %request.delivery_id, "partition moved; its new holder claims the drone");
                }
                Err(e) => {
                    tracing::warn!(delivery_id = %request.delivery_id, error = %e, "could not claim a drone; retrying");
                    self.dispatch.hand_back(waiting, Utc::now());
                    retry = true;
                    break;
                }
            }
        }
        let now = Utc::now();
        for waiting in unfit.into_iter().rev() {
            self.dispatch.hand_back(waiting, now);
        }
        if retry && !self.retry_armed && self.dispatch.waiting() > 0 {
            self.retry_armed = true;
            myself.send_after(RETRY_CLAIM, || FleetMsg::Dispatch);
        }
        self.read_pool().await;
    }

    /// Refreshes the pool's counts for operators, at most once a second
    /// (they are a gauge, not a decision).
    async fn read_pool(&mut self) {
        if self
            .pool_read
            .is_some_and(|at| at.elapsed() < POOL_READ_EVERY)
        {
            return;
        }
        if let Ok(pool) = self.ctx.backends.drones.counts().await {
            self.pool = pool;
            self.pool_read = Some(std::time::Instant::now());
        }
    }

    /// A drone claimed for a job: its actor flies it (an actor still
    /// running here, flying home or already on this job, is handed the
    /// claim).
    async fn start_job(&mut self, myself: &ActorRef<FleetMsg>, drone: DroneState) {
        self.dispatch.serve(&drone);
        if let Some(running) = self.ctx.drone(&drone.id) {
            if running
                .cast(DroneMsg::Assign(Box::new(drone.clone())))
                .is_ok()
            {
                return;
            }
        }
        tracing::info!(drone_id = %drone.id, delivery_id = ?drone.delivery_id, "assigned drone");
        self.fly(myself, drone).await;
    }

    /// Tells the drone still serving an older request of the delivery to
    /// drop it, adopting the drone first if no actor flies it here.
    async fn ensure_aborted(
        &mut self,
        myself: &ActorRef<FleetMsg>,
        drone_id: &str,
        request: &DroneRequest,
    ) {
        if self.ctx.drone(drone_id).is_none() {
            self.respawn(myself, drone_id.to_owned()).await;
        }
        if let Some(drone) = self.ctx.drone(drone_id) {
            let _ = drone.cast(DroneMsg::Abort {
                delivery_id: request.delivery_id.clone(),
            });
        }
    }

    /// Flies home the drones left on their way home with no actor: freed
    /// by an engine that stopped before they reached their depot, they
    /// would hang where they were, never charging. Each stray is flown by
    /// the engine holding its id's partition (one engine; a claim by any
    /// engine meanwhile refuses this flight's writes and stops it).
    async fn fly_strays(&mut self, myself: &ActorRef<FleetMsg>) {
        let Ok(drones) = self.ctx.backends.drones.list().await else {
            return;
        };
        let tick = self.ctx.config.sim.tick;
        let stale = chrono::Duration::from_std((tick * 4).max(Duration::from_secs(3)))
            .unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        let partitioned = self.ctx.backends.queue.partitioned();
        for drone in drones {
            let stray = drone.status == crate::domain::DroneStatus::Returning
                && drone.delivery_id.is_none()
                && now - drone.updated_at > stale
                && self.ctx.drone(&drone.id).is_none()
                && (!partitioned || self.ctx.owned.fence(self.partition(&drone.id)).is_some());
            if stray {
                tracing::info!(drone_id = %drone.id, "flying home a drone its engine left on the way");
                self.fly(myself, drone).await;
            }
        }
    }

    /// Compensation at once for a job no drone can ever fly (even a full
    /// battery from the best depot does not hold it): its delivery is
    /// cancelled with the reason and dead-lettered, not left waiting.
    /// Returns whether it was.
    async fn beyond_range(&mut self, req: &DroneRequest) -> bool {
        let Some(need) = self.ctx.config.drones.beyond_range(req, &self.depots) else {
            return false;
        };
        let range = self.ctx.config.drones.range_m.unwrap_or(f64::INFINITY);
        let reason = format!(
            "beyond the range of every drone: the shortest flight from a depot and back is {:.1} km, a full battery holds {:.1} km",
            need / 1000.0,
            range / 1000.0
        );
        // Not reached: left waiting; compensation by wait time (if
        // configured) or an operator's cancel ends it.
        self.compensate(req, reason).await
    }

    /// Tells the delivery of `req` that the fleet gives up on it with
    /// `reason` (its actor cancels it and dead-letters the request);
    /// whether the delivery was reached.
    async fn compensate(&self, req: &DroneRequest, reason: String) -> bool {
        tracing::warn!(delivery_id = %req.delivery_id, %reason, "compensating: giving up on the delivery");
        let msg = DeliveryMsg::Compensate {
            ticket: req.ticket,
            reason,
        };
        match crate::delivery::tell(&self.ctx, &req.delivery_id, msg).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(delivery_id = %req.delivery_id, error = %e, "could not reach the delivery to compensate");
                false
            }
        }
    }

    /// Wakes the deliveries whose durable timer is due, in the partitions
    /// this engine holds (after a takeover, the new holder's poll finds
    /// them; after a restart, this engine's). A wake that does not arrive
    /// leaves the timer due in the store, so the next poll tries again; a
    /// repeated wake is ignored by the delivery's rules.
    async fn wake_due(&mut self) {
        let due = match self
            .ctx
            .backends
            .deliveries
            .due(Utc::now(), TIMERS_PER_POLL)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::debug!(error = %e, "could not read due timers; next poll tries again");
                return;
            }
        };
        let partitioned = self.ctx.backends.queue.partitioned();
        for id in due {
            if partitioned && self.ctx.owned.fence(self.partition(&id)).is_none() {
                continue; // another engine's partition: its fleet wakes it
            }
            if let Err(e) = crate::delivery::tell(&self.ctx, &id, DeliveryMsg::Wake).await {
                tracing::warn!(delivery_id = %id, error = %e, "could not wake a delivery; next poll tries again");
            }
        }
    }

    /// Compensation: a delivery that waited longer than the configured
    /// maximum leaves the queue of requests and is told to give up (its actor
    /// cancels it with the reason and dead-letters it for operators).
    async fn expire(&mut self) {
        let Some(max) = self.ctx.config.max_drone_wait else {
            return;
        };
        let Ok(max) = chrono::Duration::from_std(max) else {
            return;
        };
        let now = Utc::now();
        for req in self.dispatch.take_expired(now, max) {
            let reason = format!("no drone became free within {} s", max.num_seconds());
            if !self.compensate(&req, reason).await {
                // Keep it waiting, already expired; the next tick tries again.
                self.dispatch
                    .enqueue(req, now - max - chrono::Duration::seconds(1));
            }
        }
    }

    fn snapshot(&self) -> FleetSnapshot {
        let (drones, free) = self.pool;
        FleetSnapshot {
            drones: usize::try_from(drones).unwrap_or(usize::MAX),
            free: usize::try_from(free).unwrap_or(usize::MAX),
            flying: self.children.len(),
            pending: self.dispatch.waiting(),
            restarts: self.total_restarts,
        }
    }

    fn publish(&self) {
        let s = self.snapshot();
        metrics::gauge!(m::FLEET_PENDING).set(s.pending as f64);
        metrics::gauge!(m::FLEET_FREE_DRONES).set(s.free as f64);
    }
}
