//! The drone actor: one per drone, a simulated flight controller.
//!
//! A drone flies in real time scaled by `--sim-speed`: while it has somewhere
//! to go it ticks (`send_interval`), moves `speed × elapsed` metres towards its
//! target and writes its position to the drone store, so that status reads
//! and a restarted actor (which reloads in `pre_start`) see where it is.
//! It reports progress to its delivery (by name, through
//! [`crate::delivery::tell`]); a report that cannot be delivered is kept and
//! retried on the next tick rather than lost.
//!
//! # Handing a finished job back
//!
//! The `Delivered` report is the one report a drone cannot re-derive once it
//! has forgotten the job, so the drone does not forget it on its own: at the
//! dropoff it stays `HeadedToDropoff` (stored), repeats `Delivered` every
//! [`DELIVERED_REPEAT`] and frees itself only when the delivery actor answers
//! [`DroneMsg::Released`], which it sends once `Completed` is stored. A
//! process killed anywhere in between restarts with the drone still holding
//! the job, so the report is sent again; the delivery actor ignores a
//! repeated `Delivered` and releases the drone again. This is the same
//! at-least-once-plus-idempotent-receiver rule the queue follows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::context::Context;
use crate::domain::{DroneReport, DroneRequest, DroneState, DroneStatus};
use crate::metrics::LiveActor;
use crate::protocol::{DeliveryMsg, DroneMsg, FleetMsg};

/// How often a drone waiting at the dropoff repeats its `Delivered` report
/// until the delivery releases it. Long enough not to flood a delivery whose
/// store is slow, short enough that a lost report costs seconds.
pub const DELIVERED_REPEAT: Duration = Duration::from_secs(2);

/// The actor.
pub struct DroneActor;

/// State of one drone actor.
pub struct DroneActorState {
    ctx: Arc<Context>,
    drone: DroneState,
    ticker: Option<JoinHandle<()>>,
    last_tick: Instant,
    unreported: Vec<(String, DroneReport)>,
    /// When `Delivered` was last sent for the job the drone holds at its
    /// dropoff (`None`: not at the dropoff, or not reported since start).
    delivered_sent: Option<Instant>,
    _live: LiveActor,
}

impl Actor for DroneActor {
    type Msg = DroneMsg;
    type State = DroneActorState;
    type Arguments = (Arc<Context>, DroneState);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, seed): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // The store wins over the seed: it holds the position and job of a
        // drone that was flying when its actor stopped.
        let drone = ctx.backends.drones.get(&seed.id).await?.unwrap_or(seed);
        let mut state = DroneActorState {
            ctx,
            drone,
            ticker: None,
            last_tick: Instant::now(),
            unreported: Vec::new(),
            delivered_sent: None,
            _live: LiveActor::new("drone"),
        };
        state.ensure_ticking(&myself);
        Ok(state)
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
            DroneMsg::Assign(job) => state.assign(job, &myself).await,
            DroneMsg::Abort { delivery_id } => state.abort(&delivery_id).await,
            DroneMsg::Tick => state.tick(&myself).await,
            DroneMsg::Resync => state.resync().await,
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
        if self.drone.target().is_some() && self.ticker.is_none() {
            self.last_tick = Instant::now();
            self.ticker = Some(myself.send_interval(self.ctx.config.sim.tick, || DroneMsg::Tick));
        }
    }

    fn stop_ticking(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }

    async fn persist(&mut self) {
        self.drone.updated_at = Utc::now();
        if let Err(e) = self.ctx.backends.drones.put(&self.drone).await {
            // The next tick or change writes again; the actor keeps the truth.
            tracing::warn!(drone_id = %self.drone.id, error = %e, "could not store drone state");
        }
    }

    async fn assign(&mut self, job: DroneRequest, myself: &ActorRef<DroneMsg>) {
        let busy_elsewhere = !self.drone.status.is_free()
            && self.drone.delivery_id.as_deref() != Some(&job.delivery_id);
        if busy_elsewhere {
            tracing::warn!(drone_id = %self.drone.id, delivery_id = %job.delivery_id, "assigned while busy; handing the job back");
            if let Some(fleet) = self.ctx.fleet() {
                let _ = fleet.cast(FleetMsg::Rejected {
                    drone_id: self.drone.id.clone(),
                    request: job,
                });
            }
            return;
        }
        let sim = &self.ctx.config.sim;
        let now = Utc::now();
        let to_pickup = self.drone.position.distance_m(&job.pickup);
        let to_dropoff = job.pickup.distance_m(&job.dropoff);
        let pickup_eta = now + sim.flight_time(to_pickup);
        let delivery_eta = pickup_eta + sim.flight_time(to_dropoff);
        if self.drone.delivery_id.as_deref() != Some(&job.delivery_id)
            || self.drone.status.is_free()
        {
            self.drone.job_start_m = self.drone.flown_m;
        }
        self.drone.status = DroneStatus::HeadedToPickup;
        self.drone.delivery_id = Some(job.delivery_id.clone());
        self.drone.pickup = Some(job.pickup);
        self.drone.dropoff = Some(job.dropoff);
        self.drone.ticket = job.ticket;
        self.persist().await;
        tracing::info!(drone_id = %self.drone.id, delivery_id = %job.delivery_id, "assigned drone");
        self.report(
            job.delivery_id,
            DroneReport::Assigned {
                ticket: job.ticket,
                drone_id: self.drone.id.clone(),
                position: self.drone.position,
                pickup_eta,
                delivery_eta,
            },
        )
        .await;
        self.ensure_ticking(myself);
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

    async fn abort(&mut self, delivery_id: &str) {
        if self.drone.delivery_id.as_deref() != Some(delivery_id) || self.drone.status.is_free() {
            return;
        }
        self.drop_job();
        self.persist().await;
    }

    /// Forgets the current job and heads home.
    fn drop_job(&mut self) {
        self.drone.status = DroneStatus::Returning;
        self.drone.delivery_id = None;
        self.drone.pickup = None;
        self.drone.dropoff = None;
        self.delivered_sent = None;
    }

    async fn tick(&mut self, myself: &ActorRef<DroneMsg>) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        // Retry reports that could not be delivered earlier.
        for (delivery_id, report) in std::mem::take(&mut self.unreported) {
            self.report(delivery_id, report).await;
        }
        let Some(target) = self.drone.target() else {
            self.stop_ticking();
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
        self.drone.flown_m += self.drone.position.distance_m(&next);
        self.drone.position = next;
        if next == target {
            self.arrive().await;
        }
        self.persist().await;
        if self.awaiting_release() {
            // Stored at the dropoff first, so a restart resumes from here.
            self.report_delivered().await;
        }
        if self.drone.target().is_none() {
            self.stop_ticking();
        } else {
            self.ensure_ticking(myself);
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
            DroneStatus::Returning => self.drone.status = DroneStatus::Available,
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

    /// The delivery has stored the drop-off: forget the job, store that,
    /// then tell the fleet the drone is free (in that order, so a fleet
    /// that restarts in between reads a drone that is free).
    async fn released(&mut self, delivery_id: &str, ticket: u64, myself: &ActorRef<DroneMsg>) {
        if self.drone.delivery_id.as_deref() != Some(delivery_id)
            || self.drone.ticket != ticket
            || self.drone.status != DroneStatus::HeadedToDropoff
        {
            return; // a late answer for a job already handed back
        }
        let position = self.drone.position;
        self.drop_job();
        self.persist().await;
        tracing::debug!(drone_id = %self.drone.id, %delivery_id, "released by its delivery");
        if let Some(fleet) = self.ctx.fleet() {
            let _ = fleet.cast(FleetMsg::Free {
                drone_id: self.drone.id.clone(),
                delivery_id: delivery_id.to_owned(),
                position,
            });
        }
        self.ensure_ticking(myself);
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
