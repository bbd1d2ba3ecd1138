//! The fleet: scheduler of drones and supervisor of the drone actors.
//!
//! The fleet is the single owner of drone assignment, so two deliveries can
//! never get the same drone. The choice itself is the domain's
//! [`Dispatcher`] (nearest free drone, requests waiting first come first
//! served, never failed); the actor feeds it the messages it receives and
//! sends the assignments and aborts it decides.
//!
//! On start it reloads drones from the drone store (seeding the fleet over the
//! depots the first time) and re-queues every delivery the store says is
//! waiting for a drone, so a restart of the fleet loses no request. A drone
//! actor that fails is restarted with backoff and resumes from its stored
//! state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::backoff::Backoff;
use crate::context::Context;
use crate::domain::dispatch::{Abort, Dispatcher};
use crate::domain::lifecycle::drone_request;
use crate::domain::{DroneRequest, DroneState};
use crate::drone::DroneActor;
use crate::metrics::{self as m, LiveActor};
use crate::protocol::{DeliveryMsg, DroneMsg, FleetMsg, FleetSnapshot};

/// Restarts of a failed drone actor: 100 ms doubling up to 12.8 s.
const RESPAWN_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_millis(12_800));

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
        let prefix = drone_prefix(&ctx.config.fleet_id);
        let mut drones: Vec<DroneState> = ctx
            .backends
            .drones
            .list()
            .await?
            .into_iter()
            .filter(|d| {
                d.id.strip_prefix(&prefix)
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            })
            .collect();
        if drones.is_empty() {
            drones = seed(&ctx);
            for d in &drones {
                ctx.backends.drones.put(d).await?;
            }
            tracing::info!(
                drones = drones.len(),
                depots = ctx.config.depots,
                "seeded the fleet"
            );
        }
        let mut state = FleetState {
            ctx: Arc::clone(&ctx),
            dispatch: Dispatcher::new(),
            children: HashMap::new(),
            restarts: HashMap::new(),
            total_restarts: 0,
            intensity: crate::supervisor::Intensity::new(20, Duration::from_secs(30)),
            _live: LiveActor::new("fleet"),
        };
        for d in drones {
            state.dispatch.add_drone(&d);
            state.spawn_drone(&myself, d).await?;
        }
        // Drones in the middle of a job report their progress again, in
        // case a report was lost when their previous actor stopped.
        for drone_id in state.dispatch.busy_drones() {
            if let Some(drone) = ctx.drone(drone_id) {
                let _ = drone.cast(DroneMsg::Resync);
            }
        }
        // Deliveries that were waiting for a drone when the fleet stopped
        // (those a drone already serves are not queued twice).
        for id in ctx.backends.deliveries.awaiting_drone().await? {
            if state.dispatch.serves(&id) {
                continue;
            }
            if let Some(r) = ctx.backends.deliveries.get(&id).await? {
                if r.stage.awaits_drone() {
                    state.dispatch.enqueue(drone_request(&r), r.updated_at);
                }
            }
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Stop the drones gracefully (a handler in progress finishes and
        // stores its state) instead of letting ractor kill them.
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
        state.dispatch_pending();
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
            FleetMsg::Request(req) => state.request(req),
            FleetMsg::Withdraw { delivery_id } => {
                let abort = state.dispatch.withdraw(&delivery_id);
                state.abort(abort);
                state.dispatch_pending();
            }
            FleetMsg::Free {
                drone_id,
                delivery_id,
                position,
            } => {
                state.dispatch.free(&drone_id, &delivery_id, position);
                state.dispatch_pending();
            }
            FleetMsg::Rejected { drone_id, request } => {
                state.dispatch.rejected(&drone_id, request, Utc::now());
                state.dispatch_pending();
            }
            FleetMsg::Respawn(drone_id) => {
                let seed = state
                    .ctx
                    .backends
                    .drones
                    .get(&drone_id)
                    .await
                    .ok()
                    .flatten();
                match seed {
                    Some(d) => {
                        if let Err(e) = state.spawn_drone(&myself, d).await {
                            tracing::error!(%drone_id, error = %e, "drone restart failed; retrying");
                            state.schedule_respawn(&myself, drone_id);
                        }
                    }
                    None => state.schedule_respawn(&myself, drone_id),
                }
            }
            FleetMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
            FleetMsg::Expire => state.expire().await,
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
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(drone_id) = state.children.remove(&cell.get_id()) {
                    tracing::warn!(%drone_id, ?reason, "drone actor stopped; restarting");
                    state.schedule_respawn(&myself, drone_id);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Prefix of the drone ids of this engine's fleet partition.
pub fn drone_prefix(fleet_id: &str) -> String {
    if fleet_id.is_empty() {
        "drone-".to_owned()
    } else {
        format!("{fleet_id}-drone-")
    }
}

fn seed(ctx: &Context) -> Vec<DroneState> {
    let depots = ctx.config.area.depots(ctx.config.depots);
    let prefix = drone_prefix(&ctx.config.fleet_id);
    (0..ctx.config.fleet_size)
        .map(|i| DroneState::parked(format!("{prefix}{i:04}"), depots[i % depots.len()]))
        .collect()
}

impl FleetState {
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

    fn request(&mut self, req: DroneRequest) {
        let abort = self.dispatch.request(req, Utc::now());
        self.abort(abort);
        self.dispatch_pending();
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

    /// Sends the dispatcher's assignments to their drones, oldest request
    /// first, until no drone is free or nothing waits. A drone whose actor
    /// is restarting gets its assignment handed back, tried again later.
    fn dispatch_pending(&mut self) {
        while let Some(assignment) = self.dispatch.next_assignment() {
            let Some(drone) = self.ctx.drone(&assignment.drone_id) else {
                self.dispatch.hand_back(assignment);
                break;
            };
            let drone_id = assignment.drone_id.clone();
            let waiting_since = assignment.waiting_since;
            if let Err(ractor::MessagingErr::SendErr(DroneMsg::Assign(request))) =
                drone.cast(DroneMsg::Assign(assignment.request))
            {
                self.dispatch
                    .hand_back(crate::domain::dispatch::Assignment {
                        drone_id,
                        request,
                        waiting_since,
                    });
                break;
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
            tracing::warn!(delivery_id = %req.delivery_id, %reason, "compensating: giving up on the delivery");
            let msg = DeliveryMsg::Compensate {
                ticket: req.ticket,
                reason,
            };
            if let Err(e) = crate::delivery::tell(&self.ctx, &req.delivery_id, msg).await {
                // Keep it waiting, already expired; the next tick tries again.
                tracing::warn!(delivery_id = %req.delivery_id, error = %e, "could not reach the delivery to compensate");
                self.dispatch
                    .enqueue(req, now - max - chrono::Duration::seconds(1));
            }
        }
    }

    fn snapshot(&self) -> FleetSnapshot {
        FleetSnapshot {
            drones: self.dispatch.drones(),
            free: self.dispatch.free_drones(),
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
