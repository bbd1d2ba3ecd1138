//! The fleet: scheduler of drones and supervisor of the drone actors.
//!
//! The fleet is the single owner of drone assignment, so two deliveries can
//! never get the same drone. It keeps a slot per drone (free or serving a
//! delivery) and a FIFO of requests waiting for a free drone: a delivery that
//! finds no free drone waits, it is never failed. A request goes to the
//! nearest free drone; a drone that becomes free takes the oldest waiting
//! request.
//!
//! On start it reloads drones from the drone store (seeding the fleet over the
//! depots the first time) and re-queues every delivery the store says is
//! waiting for a drone, so a restart of the fleet loses no request. A drone
//! actor that fails is restarted with backoff and resumes from its stored
//! state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::Serialize;

mod pending;

use pending::PendingQueue;

use crate::context::Context;
use crate::domain::{DroneState, Location};
use crate::drone::{DroneActor, DroneMsg};
use crate::metrics::{self as m, LiveActor};

/// A delivery's request for a drone.
#[derive(Debug, Clone, PartialEq)]
pub struct DroneRequest {
    /// The delivery.
    pub delivery_id: String,
    /// The delivery's request ticket (see [`crate::domain::DeliveryRecord::ticket`]).
    pub ticket: u64,
    /// Where to pick up.
    pub pickup: Location,
    /// Where to drop off.
    pub dropoff: Location,
}

/// Messages of the fleet.
#[derive(Debug)]
pub enum FleetMsg {
    /// Find a drone for a delivery (idempotent per delivery id; a newer
    /// ticket replaces an older request and releases its drone).
    Request(DroneRequest),
    /// The delivery no longer needs a drone (cancelled).
    Withdraw {
        /// The delivery.
        delivery_id: String,
    },
    /// A drone finished its job.
    Free {
        /// The drone.
        drone_id: String,
        /// The delivery it finished.
        delivery_id: String,
        /// Where it is.
        position: Location,
    },
    /// A drone refused a job (it was busy): queue the request again.
    Rejected {
        /// The drone.
        drone_id: String,
        /// The refused request.
        request: DroneRequest,
    },
    /// Restart a drone actor (after a failure and its backoff).
    Respawn(String),
    /// Counts for operators.
    Snapshot(RpcReplyPort<FleetSnapshot>),
    /// Give up on deliveries that waited longer than `--max-drone-wait-secs`.
    Expire,
}

/// What the fleet looks like now.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FleetSnapshot {
    /// Drones in the fleet.
    pub drones: usize,
    /// Drones free.
    pub free: usize,
    /// Requests waiting for a drone.
    pub pending: usize,
    /// Drone actor restarts since the fleet started.
    pub restarts: u64,
}

#[derive(Debug)]
struct Slot {
    position: Location,
    serving: Option<(String, u64)>,
}

/// The actor.
pub struct FleetActor;

/// The fleet's state.
pub struct FleetState {
    ctx: Arc<Context>,
    slots: BTreeMap<String, Slot>,
    by_delivery: HashMap<String, String>,
    pending: PendingQueue,
    /// When each waiting delivery started waiting (for compensation).
    waiting_since: HashMap<String, DateTime<Utc>>,
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
            slots: BTreeMap::new(),
            by_delivery: HashMap::new(),
            pending: PendingQueue::default(),
            waiting_since: HashMap::new(),
            children: HashMap::new(),
            restarts: HashMap::new(),
            total_restarts: 0,
            intensity: crate::supervisor::Intensity::new(20, Duration::from_secs(30)),
            _live: LiveActor::new("fleet"),
        };
        for d in drones {
            let serving = d
                .delivery_id
                .clone()
                .filter(|_| !d.status.is_free())
                .map(|id| (id, d.ticket));
            if let Some((delivery, _)) = &serving {
                state.by_delivery.insert(delivery.clone(), d.id.clone());
            }
            state.slots.insert(
                d.id.clone(),
                Slot {
                    position: d.position,
                    serving,
                },
            );
            state.spawn_drone(&myself, d).await?;
        }
        // Drones in the middle of a job report their progress again, in
        // case a report was lost when their previous actor stopped.
        for drone_id in state.by_delivery.values() {
            if let Some(drone) = ctx.drone(drone_id) {
                let _ = drone.cast(DroneMsg::Resync);
            }
        }
        // Deliveries that were waiting for a drone when the fleet stopped
        // (those a drone already serves are not queued twice).
        for id in ctx.backends.deliveries.awaiting_drone().await? {
            if state.by_delivery.contains_key(&id) {
                continue;
            }
            if let Some(r) = ctx.backends.deliveries.get(&id).await? {
                if r.stage.awaits_drone() {
                    state.waiting_since.insert(id.clone(), r.updated_at);
                    state.pending.upsert_back(DroneRequest {
                        delivery_id: id,
                        ticket: r.ticket,
                        pickup: r.delivery.pickup,
                        dropoff: r.delivery.dropoff,
                    });
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
                state.pending.remove(&delivery_id);
                state.waiting_since.remove(&delivery_id);
                state.release(&delivery_id);
                state.dispatch_pending();
            }
            FleetMsg::Free {
                drone_id,
                delivery_id,
                position,
            } => {
                if let Some(slot) = state.slots.get_mut(&drone_id) {
                    slot.position = position;
                    // An empty id marks a drone that refused a job while busy
                    // with one the fleet did not know: any Free releases it.
                    if slot
                        .serving
                        .as_ref()
                        .is_some_and(|(d, _)| *d == delivery_id || d.is_empty())
                    {
                        slot.serving = None;
                        state.by_delivery.remove(&delivery_id);
                    }
                }
                state.dispatch_pending();
            }
            FleetMsg::Rejected { drone_id, request } => {
                if let Some(slot) = state.slots.get_mut(&drone_id) {
                    if slot
                        .serving
                        .as_ref()
                        .is_some_and(|(d, _)| *d == request.delivery_id)
                    {
                        // The drone is busy with something we lost track of:
                        // leave it out until it reports free.
                        slot.serving = Some((String::new(), 0));
                    }
                }
                state.by_delivery.remove(&request.delivery_id);
                state
                    .waiting_since
                    .entry(request.delivery_id.clone())
                    .or_insert_with(Utc::now);
                state.pending.push_front(request);
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
        let delay = Duration::from_millis(50u64.saturating_mul(1 << (*n).min(8)));
        myself.send_after(delay, move || FleetMsg::Respawn(drone_id));
    }

    fn request(&mut self, req: DroneRequest) {
        if let Some(drone_id) = self.by_delivery.get(&req.delivery_id) {
            let current = self
                .slots
                .get(drone_id)
                .and_then(|s| s.serving.as_ref())
                .map(|(_, t)| *t);
            if current.is_some_and(|t| t >= req.ticket) {
                return; // already served (a redelivered message)
            }
            self.release(&req.delivery_id);
        }
        let delivery_id = req.delivery_id.clone();
        if self.pending.upsert_back(req) {
            self.waiting_since
                .entry(delivery_id)
                .or_insert_with(Utc::now);
        }
        self.dispatch_pending();
    }

    /// Frees the drone serving `delivery_id`, telling it to abort.
    fn release(&mut self, delivery_id: &str) {
        if let Some(drone_id) = self.by_delivery.remove(delivery_id) {
            if let Some(slot) = self.slots.get_mut(&drone_id) {
                slot.serving = None;
            }
            if let Some(drone) = self.ctx.drone(&drone_id) {
                let _ = drone.cast(DroneMsg::Abort {
                    delivery_id: delivery_id.to_owned(),
                });
            }
        }
    }

    /// Assigns waiting requests, oldest first, each to the nearest free drone.
    fn dispatch_pending(&mut self) {
        while let Some(req) = self.pending.front() {
            let nearest = self
                .slots
                .iter()
                .filter(|(_, s)| s.serving.is_none())
                .min_by(|(_, a), (_, b)| {
                    a.position
                        .distance_m(&req.pickup)
                        .total_cmp(&b.position.distance_m(&req.pickup))
                })
                .map(|(id, _)| id.clone());
            let Some(drone_id) = nearest else { break };
            let Some(req) = self.pending.pop_front() else {
                break;
            };
            let Some(drone) = self.ctx.drone(&drone_id) else {
                // Restarting: keep the request, try another drone later.
                self.pending.push_front(req);
                break;
            };
            if let Some(slot) = self.slots.get_mut(&drone_id) {
                slot.serving = Some((req.delivery_id.clone(), req.ticket));
            }
            self.waiting_since.remove(&req.delivery_id);
            self.by_delivery
                .insert(req.delivery_id.clone(), drone_id.clone());
            if let Err(ractor::MessagingErr::SendErr(DroneMsg::Assign(req))) =
                drone.cast(DroneMsg::Assign(req))
            {
                if let Some(slot) = self.slots.get_mut(&drone_id) {
                    slot.serving = None;
                }
                self.by_delivery.remove(&req.delivery_id);
                self.pending.push_front(req);
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
        let expired: Vec<DroneRequest> = self
            .pending
            .iter()
            .filter(|r| {
                self.waiting_since
                    .get(&r.delivery_id)
                    .is_some_and(|t| now - *t > max)
            })
            .cloned()
            .collect();
        for req in expired {
            self.pending.remove(&req.delivery_id);
            self.waiting_since.remove(&req.delivery_id);
            let reason = format!("no drone became free within {} s", max.num_seconds());
            tracing::warn!(delivery_id = %req.delivery_id, %reason, "compensating: giving up on the delivery");
            let msg = crate::delivery::DeliveryMsg::Compensate {
                ticket: req.ticket,
                reason,
            };
            if let Err(e) = self.ctx.tell_delivery(&req.delivery_id, msg).await {
                // Keep it waiting; the next tick tries again.
                tracing::warn!(delivery_id = %req.delivery_id, error = %e, "could not reach the delivery to compensate");
                self.waiting_since.insert(
                    req.delivery_id.clone(),
                    now - max - chrono::Duration::seconds(1),
                );
                self.pending.upsert_back(req);
            }
        }
    }

    fn snapshot(&self) -> FleetSnapshot {
        FleetSnapshot {
            drones: self.slots.len(),
            free: self.slots.values().filter(|s| s.serving.is_none()).count(),
            pending: self.pending.len(),
            restarts: self.total_restarts,
        }
    }

    fn publish(&self) {
        let s = self.snapshot();
        metrics::gauge!(m::FLEET_PENDING).set(s.pending as f64);
        metrics::gauge!(m::FLEET_FREE_DRONES).set(s.free as f64);
    }
}
