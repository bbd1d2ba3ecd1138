//! The drone actor: a simulated flight controller, running for one job.
//!
//! The fleet starts it for a drone it has claimed from the pool (or adopted
//! with its partition), on the engine that holds the delivery's partition,
//! so the drone and its delivery talk in-process. A drone flies in real
//! time scaled by `--sim-speed`: it ticks (`send_interval`), moves
//! `speed × elapsed` metres towards its target and writes its position to
//! the drone store with its claim number and the delivery's fence, so that
//! status reads and a restarted actor see where it is, and so that a write
//! from an engine that no longer holds the job is refused (the actor then
//! stops: the job is flown elsewhere). It reports progress to its delivery
//! (by name, through [`crate::delivery::tell`]); a report that cannot be
//! delivered is kept and retried on the next tick rather than lost. When
//! the job ends (released by its delivery, or aborted) the drone is put
//! back in the pool where it is and flies home, claimable all the way (the
//! pool follows its position); the actor stops at the depot, or as soon as
//! another engine's claim takes the drone (its writes are refused). A claim
//! on this engine hands the actor its new job instead ([`DroneMsg::Assign`]).
//!
//! # Handing a finished job back
//!
//! The `Delivered` report is the one report a drone cannot re-derive once it
//! has forgotten the job, so the drone does not forget it on its own: at the
//! dropoff it stays `HeadedToDropoff` (stored), repeats `Delivered` every
//! [`DELIVERED_REPEAT`] and frees itself only when the delivery actor answers
//! [`DroneMsg::Released`], which it sends once `Completed` is stored. A
//! process killed anywhere in between leaves the drone claimed with the
//! job, so the engine that adopts it sends the report again; the delivery
//! actor ignores a repeated `Delivered` and releases the drone again. This
//! is the same at-least-once-plus-idempotent-receiver rule the queue
//! follows.
//!
//! # Battery
//!
//! Every metre flown drains the drone's battery (stored with its position
//! on each tick); parked at its depot it charges (see
//! [`crate::domain::limits::Battery`]). The claim that gave it the job has
//! checked the battery holds the whole flight and the way home.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::context::Context;
use crate::domain::ownership::{partition_of, Fence};
use crate::domain::{DroneReport, DroneState, DroneStatus};
use crate::metrics::LiveActor;
use crate::protocol::{DeliveryMsg, DroneMsg, FleetMsg};

/// How often a drone waiting at the dropoff repeats its `Delivered` report
/// until the delivery releases it. Long enough not to flood a delivery whose
/// store is slow, short enough that a lost report costs seconds.
pub const DELIVERED_REPEAT: Duration = Duration::from_secs(2);

/// The fence a drone's writes carry: its delivery's partition's, while it
/// flies a job for a delivery of a partition this engine holds.
fn fence_of(ctx: &Context, drone: &DroneState) -> Option<Fence> {
    let delivery_id = drone.delivery_id.as_deref()?;
    ctx.owned
        .fence(partition_of(delivery_id, ctx.config.ownership.partitions))
}

/// The actor.
pub struct DroneActor;

/// State of one drone actor.
pub struct DroneActorState {
    ctx: Arc<Context>,
    drone: DroneState,
    /// The fence of the delivery's partition, sent with every write.
    fence: Option<Fence>,
    ticker: Option<JoinHandle<()>>,
    last_tick: Instant,
    unreported: Vec<(String, DroneReport)>,
    /// When `Delivered` was last sent for the job the drone holds at its
    /// dropoff (`None`: not at the dropoff, or not reported since start).
    delivered_sent: Option<Instant>,
    /// The job has ended (released or aborted) but the store has not taken
    /// the freed drone yet: retried on every tick.
    ending: bool,
    _live: LiveActor,
}

impl Actor for DroneActor {
    type Msg = DroneMsg;
    type State = DroneActorState;
    type Arguments = (Arc<Context>, DroneState);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, drone): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let fence = fence_of(&ctx, &drone);
        let mut state = DroneActorState {
            ctx,
            drone,
            fence,
            ticker: None,
            last_tick: Instant::now(),
            unreported: Vec::new(),
            delivered_sent: None,
            ending: false,
            _live: LiveActor::new("drone"),
        };
        state.ensure_ticking(&myself);
        Ok(state)
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A new job or one adopted mid-flight: the delivery hears where the
        // drone is (repeated reports are ignored by its rules).
        state.resync().await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DroneMsg::Assign(drone) => state.assign(*drone, &myself).await,
            DroneMsg::Abort { delivery_id } => state.abort(&delivery_id, &myself).await,
            DroneMsg::Tick => state.tick(&myself).await,
            DroneMsg::Released {
                delivery_id,
                ticket,
            } => state.released(&delivery_id, ticket, &myself).await,
        }
        Ok(())
    }
}

impl DroneActorState {
    fn ensure_ticking(&mut self, myself: &ActorRef<DroneMsg>) {
        if self.ticker.is_none() {
            self.last_tick = Instant::now();
            self.ticker = Some(myself.send_interval(self.ctx.config.sim.tick, || DroneMsg::Tick));
        }
    }

    /// Stores the drone's progress; a refused write means another engine
    /// flies this job now (or the drone was released): the actor stops.
    async fn persist(&mut self, myself: &ActorRef<DroneMsg>) {
        self.drone.updated_at = Utc::now();
        match self.ctx.backends.drones.put(&self.drone, self.fence).await {
            Ok(true) => {}
            Ok(false) => self.lost(myself),
            // The next tick writes again; the actor keeps the truth.
            Err(e) => {
                tracing::warn!(drone_id = %self.drone.id, error = %e, "could not store drone state")
            }
        }
    }

    /// The fleet claimed this drone again while its actor still runs here
    /// (flying home, or a repeated claim for the same job): the stored
    /// claim, if not older, is the drone's state from now on.
    async fn assign(&mut self, drone: DroneState, myself: &ActorRef<DroneMsg>) {
        if drone.id != self.drone.id || drone.claim < self.drone.claim {
            return;
        }
        let new_job = drone.claim != self.drone.claim || drone.ticket != self.drone.ticket;
        if new_job {
            self.fence = fence_of(&self.ctx, &drone);
            self.drone = drone;
            self.delivered_sent = None;
            self.ending = false;
            self.unreported.clear();
        }
        self.ensure_ticking(myself);
        self.resync().await;
    }

    fn lost(&mut self, myself: &ActorRef<DroneMsg>) {
        tracing::info!(drone_id = %self.drone.id, delivery_id = ?self.drone.delivery_id, "drone's job is flown elsewhere now; stopping here");
        self.ending = false;
        myself.stop(Some("job taken over".into()));
    }

    async fn resync(&mut self) {
        let Some(delivery_id) = self.drone.delivery_id.clone() else {
            return;
        };
        let sim = &self.ctx.config.sim;
        let now = Utc::now();
        let report = match (self.drone.status, self.drone.pickup, self.drone.dropoff) {
            (DroneStatus::HeadedToPickup, Some(pickup), Some(dropoff)) => {
                let pickup_eta = now + sim.flight_time(self.drone.position.distance_m(&pickup));
                DroneReport::Assigned {
                    ticket: self.drone.ticket,
                    drone_id: self.drone.id.clone(),
                    position: self.drone.position,
                    pickup_eta,
                    delivery_eta: pickup_eta + sim.flight_time(pickup.distance_m(&dropoff)),
                }
            }
            (DroneStatus::HeadedToDropoff, _, Some(dropoff)) => DroneReport::PickedUp {
                ticket: self.drone.ticket,
                drone_id: self.drone.id.clone(),
                position: self.drone.position,
                delivery_eta: now + sim.flight_time(self.drone.position.distance_m(&dropoff)),
            },
            _ => return,
        };
        self.report(delivery_id, report).await;
    }

    /// The fleet took the job away (cancelled, or rescheduled to a newer
    /// ticket): the drone goes back to the pool where it is.
    async fn abort(&mut self, delivery_id: &str, myself: &ActorRef<DroneMsg>) {
        if self.drone.delivery_id.as_deref() != Some(delivery_id) {
            return;
        }
        self.end(myself).await;
    }

    /// Ends the job: the drone, freed where it is, back in the pool; then
    /// the fleet hears of it and the actor stops. A store that cannot be
    /// reached is retried on the next tick.
    async fn end(&mut self, myself: &ActorRef<DroneMsg>) {
        self.ending = true;
        let freed = self.drone.released(Utc::now());
        let delivery_id = self.drone.delivery_id.clone().unwrap_or_default();
        let released = self
            .ctx
            .backends
            .drones
            .release(&freed, &delivery_id, self.fence);
        match released.await {
            Ok(true) => {
                tracing::debug!(drone_id = %self.drone.id, %delivery_id, "job ended; drone back in the pool");
                self.drone = freed;
                // The flight home belongs to no delivery's partition.
                self.fence = None;
                self.ending = false;
                self.delivered_sent = None;
                if let Some(fleet) = self.ctx.fleet() {
                    let _ = fleet.cast(FleetMsg::Free {
                        drone_id: self.drone.id.clone(),
                        delivery_id,
                    });
                }
                if self.drone.target().is_none() {
                    myself.stop(Some("parked".into()));
                }
            }
            Ok(false) => self.lost(myself),
            Err(e) => {
                tracing::warn!(drone_id = %self.drone.id, error = %e, "could not put the drone back in the pool; retrying");
            }
        }
    }

    async fn tick(&mut self, myself: &ActorRef<DroneMsg>) {
        if self.ending {
            self.end(myself).await;
            return;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        // Retry reports that could not be delivered earlier.
        for (delivery_id, report) in std::mem::take(&mut self.unreported) {
            self.report(delivery_id, report).await;
        }
        let Some(target) = self.drone.target() else {
            myself.stop(Some("parked".into()));
            return;
        };
        if self.awaiting_release() {
            // Already stored at the dropoff: nothing moves, only the report
            // is repeated until the delivery lets the drone go.
            self.report_delivered().await;
            return;
        }
        let step = elapsed * self.ctx.config.sim.real_speed_mps();
        let next = self.drone.position.step_towards(&target, step);
        let flown = self.drone.position.distance_m(&next);
        self.drone.flown_m += flown;
        if let Some(battery) = self.drone.battery.as_mut() {
            battery.drain(flown);
        }
        self.drone.position = next;
        if next == target {
            self.arrive().await;
        }
        self.persist(myself).await;
        if self.awaiting_release() {
            // Stored at the dropoff first, so an adopter resumes from here.
            self.report_delivered().await;
        }
        if self.drone.target().is_none() {
            myself.stop(Some("parked".into()));
        }
    }

    async fn arrive(&mut self) {
        let position = self.drone.position;
        let delivery_id = self.drone.delivery_id.clone().unwrap_or_default();
        match self.drone.status {
            DroneStatus::HeadedToPickup => {
                self.drone.status = DroneStatus::HeadedToDropoff;
                let to_dropoff = self
                    .drone
                    .dropoff
                    .map(|d| position.distance_m(&d))
                    .unwrap_or(0.0);
                let delivery_eta = Utc::now() + self.ctx.config.sim.flight_time(to_dropoff);
                let report = DroneReport::PickedUp {
                    ticket: self.drone.ticket,
                    drone_id: self.drone.id.clone(),
                    position,
                    delivery_eta,
                };
                self.report(delivery_id, report).await;
            }
            // The drone keeps the job (and stores it, in `tick`) until the
            // delivery releases it; see the module docs.
            DroneStatus::HeadedToDropoff => self.delivered_sent = None,
            DroneStatus::Returning => {
                self.drone.status = DroneStatus::Available;
                // Home: it charges from now on (see `domain::limits`).
                if let Some(battery) = self.drone.battery.as_mut() {
                    battery.land(Utc::now());
                }
            }
            DroneStatus::Available => {}
        }
    }

    /// At the dropoff with the job still held: the `Delivered` report is
    /// outstanding.
    fn awaiting_release(&self) -> bool {
        self.drone.status == DroneStatus::HeadedToDropoff
            && self.drone.dropoff == Some(self.drone.position)
    }

    /// Sends `Delivered` for the held job, at most every [`DELIVERED_REPEAT`].
    async fn report_delivered(&mut self) {
        if self
            .delivered_sent
            .is_some_and(|at| at.elapsed() < DELIVERED_REPEAT)
        {
            return;
        }
        let Some(delivery_id) = self.drone.delivery_id.clone() else {
            return;
        };
        self.delivered_sent = Some(Instant::now());
        let report = DroneReport::Delivered {
            ticket: self.drone.ticket,
            drone_id: self.drone.id.clone(),
            position: self.drone.position,
            flown_m: self.drone.flown_m - self.drone.job_start_m,
        };
        self.report(delivery_id, report).await;
    }

    /// The delivery has stored the drop-off: the job ends (see `end`).
    async fn released(&mut self, delivery_id: &str, ticket: u64, myself: &ActorRef<DroneMsg>) {
        if self.drone.delivery_id.as_deref() != Some(delivery_id)
            || self.drone.ticket != ticket
            || self.drone.status != DroneStatus::HeadedToDropoff
        {
            return; // a late answer for a job already handed back
        }
        self.end(myself).await;
    }

    async fn report(&mut self, delivery_id: String, report: DroneReport) {
        if let Err(e) =
            crate::delivery::tell(&self.ctx, &delivery_id, DeliveryMsg::Drone(report.clone())).await
        {
            tracing::warn!(drone_id = %self.drone.id, %delivery_id, error = %e, "could not report to delivery; will retry");
            self.unreported.push((delivery_id, report));
        }
    }
}
