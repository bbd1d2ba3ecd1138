//! The delivery actor: one per delivery id, owner of the delivery's stage
//! machine.
//!
//! It is activated on demand ([`Context::delivery`]) and loads its record from
//! the delivery store in `pre_start`, so a crash, a restart of the
//! `deliveries` supervisor or passivation never lose state: the store is the
//! source of truth and the actor is its single writer. Every state change is
//! written (record + tracking event in one store call) *before* it is
//! acknowledged. The actor stops itself once the delivery is terminal; a later
//! read or message re-activates it from the store.
//!
//! Domain errors (unknown delivery, wrong stage) are returned to the caller in
//! the reply; they never fail the actor.

mod messages;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub use messages::{CreateOutcome, DeliveryError, DeliveryMsg, DroneReport, NewDelivery};

use crate::context::Context;
use crate::domain::geo::resolve_location;
use crate::domain::{
    Confirmation, Delivery, DeliveryRecord, DeliveryStage, RescheduleRequest, TrackingEvent,
    UserAccount,
};
use crate::drone::DroneMsg;
use crate::fleet::{DroneRequest, FleetMsg};
use crate::metrics::{self as m, LiveActor};
use crate::ports::{DeadLetter, HistoryEntry, Operation, QueueMessage, StoreError};

/// The actor (stateless behaviour; state lives in [`DeliveryState`]).
pub struct DeliveryActor;

/// State of one delivery actor.
pub struct DeliveryState {
    ctx: Arc<Context>,
    id: String,
    record: Option<DeliveryRecord>,
    /// Changes made in memory that the store has not accepted yet (drone
    /// reports cannot be refused, so they are kept and flushed with backoff).
    unsaved: Vec<TrackingEvent>,
    /// History entry of a finished delivery, written after the record.
    history: Option<HistoryEntry>,
    dirty: bool,
    /// A drone that reported `Delivered` and waits to be let go: released
    /// (`DroneMsg::Released`) once nothing is left unsaved, i.e. once the
    /// outcome it reported is stored. See the drone module on why.
    release: Option<(String, u64)>,
    flush_attempt: u32,
    /// Bumped on every message; a passivation timer only fires for the
    /// generation it was armed in, i.e. after a full idle period.
    generation: u64,
    idle_timer:
        Option<ractor::concurrency::JoinHandle<Result<(), ractor::MessagingErr<DeliveryMsg>>>>,
    _live: LiveActor,
}

impl Drop for DeliveryState {
    /// A pending idle timer holds a reference to the actor; left running, it
    /// would keep the stopped actor's cell and mailboxes allocated until it
    /// fires (`passivate_after` later). Under load that is seconds' worth of
    /// finished actors kept in memory.
    fn drop(&mut self) {
        if let Some(timer) = self.idle_timer.take() {
            timer.abort();
        }
    }
}

impl Actor for DeliveryActor {
    type Msg = DeliveryMsg;
    type State = DeliveryState;
    type Arguments = (Arc<Context>, String);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (ctx, id): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let record = ctx.backends.deliveries.get(&id).await?;
        metrics::counter!(m::ACTIVATIONS_TOTAL).increment(1);
        Ok(DeliveryState {
            ctx,
            id,
            record,
            unsaved: Vec::new(),
            history: None,
            dirty: false,
            release: None,
            flush_attempt: 0,
            generation: 0,
            idle_timer: None,
            _live: LiveActor::new("delivery"),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DeliveryMsg::Create(new, reply) => {
                let result = state.create(*new).await;
                reply_or_log(reply, result);
            }
            DeliveryMsg::Reschedule(req, reply) => {
                let result = state.reschedule(req).await;
                reply_or_log(reply, result);
            }
            DeliveryMsg::Cancel(reply) => {
                let result = state.cancel().await;
                reply_or_log(reply, result);
            }
            DeliveryMsg::Confirm(confirmation, reply) => {
                let result = state.confirm(*confirmation).await;
                reply_or_log(reply, result);
            }
            DeliveryMsg::Get(reply) => {
                let _ = reply.send(state.record.clone());
            }
            DeliveryMsg::Drone(report) => state.on_drone(report),
            DeliveryMsg::Compensate { ticket, reason } => {
                if let Err(e) = state.compensate(ticket, &reason).await {
                    tracing::warn!(delivery_id = %state.id, error = %e, "compensation failed; retrying");
                    myself.send_after(Duration::from_secs(1), move || DeliveryMsg::Compensate {
                        ticket,
                        reason,
                    });
                }
            }
            DeliveryMsg::Flush => state.flush_attempt += 1,
            DeliveryMsg::Passivate(generation) => {
                if generation == state.generation && !state.dirty {
                    metrics::counter!(m::PASSIVATIONS_TOTAL).increment(1);
                    myself.stop(Some("passivated".into()));
                }
                return Ok(());
            }
        }
        // Any other message is activity: restart the idle timer.
        state.generation = state.generation.wrapping_add(1);
        let generation = state.generation;
        if let Some(t) = state.idle_timer.take() {
            t.abort();
        }
        state.idle_timer = Some(
            myself.send_after(state.ctx.config.passivate_after, move || {
                DeliveryMsg::Passivate(generation)
            }),
        );
        if state.dirty {
            if let Err(e) = state.flush().await {
                let delay = backoff(state.flush_attempt);
                tracing::warn!(delivery_id = %state.id, error = %e, ?delay, "could not store delivery; retrying");
                myself.send_after(delay, || DeliveryMsg::Flush);
                return Ok(());
            }
        }
        state.release_drone();
        if state.record.as_ref().is_some_and(|r| r.stage.is_terminal()) && !state.dirty {
            // Passivate: a terminal delivery only serves reads, which the
            // store answers; a late message re-activates it.
            myself.stop(Some("terminal".into()));
        }
        Ok(())
    }
}

fn reply_or_log<T: Send + 'static>(reply: RpcReplyPort<T>, value: T) {
    if reply.send(value).is_err() {
        tracing::debug!("caller went away before the reply");
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)))
}

impl DeliveryState {
    /// Writes the record and the first unsaved event (one stage change per
    /// write keeps the store's record and event log consistent).
    async fn flush(&mut self) -> Result<(), StoreError> {
        let Some(record) = &self.record else {
            self.dirty = false;
            return Ok(());
        };
        // History first: once a reader sees the terminal stage, the history
        // entry exists (writing it again is idempotent).
        if let Some(entry) = &self.history {
            self.ctx.backends.history.record(entry).await?;
            self.history = None;
        }
        if self.unsaved.is_empty() {
            self.ctx.backends.deliveries.save(record, None).await?;
        } else {
            // Events are appended oldest first; the record is the latest.
            while let Some(event) = self.unsaved.first() {
                self.ctx
                    .backends
                    .deliveries
                    .save(record, Some(event))
                    .await?;
                self.unsaved.remove(0);
            }
        }
        self.dirty = false;
        self.flush_attempt = 0;
        Ok(())
    }

    /// Applies `change` to a copy of the record and stores it; only a stored
    /// change becomes the actor's state.
    async fn commit(
        &mut self,
        mut next: DeliveryRecord,
        stage: DeliveryStage,
    ) -> Result<(), DeliveryError> {
        let event = advance(&mut next, stage, None);
        self.ctx
            .backends
            .deliveries
            .save(&next, Some(&event))
            .await
            .map_err(DeliveryError::Store)?;
        self.record = Some(next);
        Ok(())
    }

    async fn create(&mut self, new: NewDelivery) -> Result<CreateOutcome, DeliveryError> {
        if let Some(existing) = self.record.as_ref().filter(|r| is_compensated(r)) {
            // A compensated delivery's request was replayed by an operator
            // (more drones now, say): it is taken up again.
            let mut next = existing.clone();
            next.cancel_reason = None;
            next.delivery.drone_id = None;
            next.ticket += 1;
            self.commit(next, DeliveryStage::Created).await?;
            tracing::info!(delivery_id = %self.id, "compensated delivery revived by a replay");
            self.request_drone();
            return Ok(CreateOutcome::Created);
        }
        if let Some(existing) = &self.record {
            // A redelivered queue message: the delivery exists already.
            // Make sure a delivery still waiting for a drone is queued at the
            // fleet (the fleet de-duplicates by delivery id).
            if existing.stage.awaits_drone() {
                self.request_drone();
            }
            return Ok(CreateOutcome::AlreadyExists);
        }
        let req = &new.request;
        let area = &self.ctx.config.area;
        let now = Utc::now();
        let record = DeliveryRecord {
            delivery: Delivery {
                id: req.delivery_id.clone(),
                owner: UserAccount::for_owner(&req.owner_id),
                pickup: req.pickup.resolve(area),
                dropoff: req.dropoff.resolve(area),
                deadline: req.deadline.clone(),
                expedited: req.expedited,
                confirmation_required: req.confirmation_required,
                drone_id: None,
            },
            stage: DeliveryStage::Created,
            package_id: req.package.package_id.clone(),
            pickup_location: req.pickup_location.clone(),
            dropoff_location: req.dropoff_location.clone(),
            pickup_time: req.pickup_time,
            pickup_eta: None,
            delivery_eta: None,
            correlation_id: new.correlation_id.clone(),
            created_at: now,
            updated_at: now,
            version: 0,
            ticket: 1,
            confirmation: None,
            cancel_reason: None,
        };
        self.commit(record, DeliveryStage::Created).await?;
        metrics::counter!(m::DELIVERIES_CREATED_TOTAL).increment(1);
        self.request_drone();
        Ok(CreateOutcome::Created)
    }

    async fn reschedule(&mut self, req: RescheduleRequest) -> Result<(), DeliveryError> {
        let Some(current) = &self.record else {
            return Err(DeliveryError::NotFound);
        };
        if current.stage.is_terminal() || current.stage == DeliveryStage::HeadedToDropoff {
            return Err(DeliveryError::WrongStage(current.stage));
        }
        let area = &self.ctx.config.area;
        let mut next = current.clone();
        if let Some(text) = &req.pickup_location {
            next.delivery.pickup =
                resolve_location(text, area).map_err(|e| DeliveryError::Invalid(e.to_string()))?;
            next.pickup_location.clone_from(text);
        }
        if let Some(text) = &req.dropoff_location {
            next.delivery.dropoff =
                resolve_location(text, area).map_err(|e| DeliveryError::Invalid(e.to_string()))?;
            next.dropoff_location.clone_from(text);
        }
        if let Some(deadline) = &req.deadline {
            next.delivery.deadline.clone_from(deadline);
        }
        if req.pickup_time.is_some() {
            next.pickup_time = req.pickup_time;
        }
        // The route changed: whatever drone was coming is released and a
        // new request (with a new ticket) goes to the fleet.
        next.delivery.drone_id = None;
        next.pickup_eta = None;
        next.delivery_eta = None;
        next.ticket += 1;
        self.commit(next, DeliveryStage::Rescheduled).await?;
        self.request_drone();
        Ok(())
    }

    /// Stores the recipient's confirmation (the first one wins; a repeated
    /// confirmation is accepted and ignored) and tells whoever asked to be
    /// notified.
    async fn confirm(&mut self, confirmation: Confirmation) -> Result<(), DeliveryError> {
        let Some(current) = &self.record else {
            return Err(DeliveryError::NotFound);
        };
        if !current
            .needs_confirmation()
            .map_err(DeliveryError::WrongStage)?
        {
            return Ok(());
        }
        let mut next = current.clone();
        next.confirmation = Some(confirmation);
        next.version += 1;
        next.updated_at = Utc::now();
        self.ctx
            .backends
            .deliveries
            .save(&next, None)
            .await
            .map_err(DeliveryError::Store)?;
        self.record = Some(next);
        match self.ctx.backends.notify.list(&self.id).await {
            Ok(requests) => {
                for r in requests {
                    // Delivery of e-mail/SMS is outside this engine: the
                    // notification is recorded in the log and the metric.
                    tracing::info!(delivery_id = %self.id, email = ?r.email_address, sms = ?r.sms, "notify: delivery confirmed");
                    metrics::counter!(m::NOTIFICATIONS_TOTAL).increment(1);
                }
            }
            Err(e) => {
                tracing::warn!(delivery_id = %self.id, error = %e, "could not read notify-me requests")
            }
        }
        Ok(())
    }

    /// Compensation for a delivery no drone could take: the request goes to
    /// the dead letters with the reason (so operators see it and can replay
    /// it), the finished delivery to the history, and the delivery is
    /// cancelled with the reason. Each write is idempotent, so a failure is
    /// simply retried.
    async fn compensate(&mut self, ticket: u64, reason: &str) -> Result<(), StoreError> {
        let Some(current) = self.record.clone() else {
            return Ok(());
        };
        if current.ticket != ticket || !current.stage.awaits_drone() {
            return Ok(()); // a drone came after all, or it was cancelled meanwhile
        }
        let backends = &self.ctx.backends;
        let package = backends.packages.get(&current.package_id).await?;
        let now = Utc::now();
        let body = serde_json::json!({
            "deliveryId": current.delivery.id,
            "ownerId": current.delivery.owner.user_id,
            "pickupLocation": current.pickup_location,
            "dropoffLocation": current.dropoff_location,
            "pickupTime": current.pickup_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "deadline": current.delivery.deadline,
            "expedited": current.delivery.expedited,
            "confirmationRequired": current.delivery.confirmation_required.name(),
            "packageInfo": {
                "packageId": current.package_id,
                "size": package.as_ref().and_then(|p| p.size).unwrap_or(crate::domain::PackageSize::Small),
                "weight": package.as_ref().and_then(|p| p.weight).unwrap_or(0.0),
                "tag": package.as_ref().and_then(|p| p.tag.clone()),
            }
        });
        let mut message =
            QueueMessage::new(Operation::Delivery, &body, current.correlation_id.clone());
        message.message_id = format!("compensated-{}", current.delivery.id);
        backends
            .dead_letters
            .put(DeadLetter {
                id: message.message_id.clone(),
                message,
                reason: format!("compensated: {reason}"),
                attempts: 1,
                first_seen: now,
                last_seen: now,
            })
            .await?;
        let mut finished = current.clone();
        finished.stage = DeliveryStage::Cancelled;
        finished.updated_at = now;
        backends
            .history
            .record(&history_entry(&finished, 0.0, 0.0))
            .await?;
        let mut next = current;
        next.cancel_reason = Some(format!("compensated: {reason}"));
        self.commit(next, DeliveryStage::Cancelled)
            .await
            .map_err(|e| match e {
                DeliveryError::Store(e) => e,
                other => StoreError::Unavailable(other.to_string()),
            })?;
        metrics::counter!(m::COMPENSATIONS_TOTAL).increment(1);
        metrics::counter!(m::DEAD_LETTERS_TOTAL, "reason" => "compensated").increment(1);
        metrics::counter!(m::DELIVERIES_CANCELLED_TOTAL).increment(1);
        tracing::warn!(delivery_id = %self.id, %reason, "delivery compensated: cancelled and dead-lettered");
        Ok(())
    }

    async fn cancel(&mut self) -> Result<(), DeliveryError> {
        let Some(current) = &self.record else {
            return Err(DeliveryError::NotFound);
        };
        match current.stage {
            DeliveryStage::Cancelled => return Ok(()), // idempotent
            DeliveryStage::Completed => {
                return Err(DeliveryError::WrongStage(DeliveryStage::Completed))
            }
            _ => {}
        }
        let next = current.clone();
        let mut finished = next.clone();
        finished.stage = DeliveryStage::Cancelled;
        finished.updated_at = Utc::now();
        self.ctx
            .backends
            .history
            .record(&history_entry(&finished, 0.0, 0.0))
            .await
            .map_err(DeliveryError::Store)?;
        self.commit(next, DeliveryStage::Cancelled).await?;
        metrics::counter!(m::DELIVERIES_CANCELLED_TOTAL).increment(1);
        if let Some(fleet) = self.ctx.fleet() {
            let _ = fleet.cast(FleetMsg::Withdraw {
                delivery_id: self.id.clone(),
            });
        }
        Ok(())
    }

    /// Lets go of a drone that reported `Delivered`, once the record is
    /// stored. A drone that is not running here (it is being restarted)
    /// repeats its report, and is released then.
    fn release_drone(&mut self) {
        if self.dirty {
            return;
        }
        let Some((drone_id, ticket)) = self.release.take() else {
            return;
        };
        match self.ctx.drone(&drone_id) {
            Some(drone) => {
                let _ = drone.cast(DroneMsg::Released {
                    delivery_id: self.id.clone(),
                    ticket,
                });
            }
            None => {
                tracing::debug!(delivery_id = %self.id, %drone_id, "drone not running here; it reports again")
            }
        }
    }

    fn request_drone(&self) {
        let Some(record) = &self.record else { return };
        let request = DroneRequest {
            delivery_id: self.id.clone(),
            ticket: record.ticket,
            pickup: record.delivery.pickup,
            dropoff: record.delivery.dropoff,
        };
        match self.ctx.fleet() {
            Some(fleet) => {
                if fleet.cast(FleetMsg::Request(request)).is_err() {
                    tracing::warn!(delivery_id = %self.id, "fleet stopped; it re-reads waiting deliveries when it restarts");
                }
            }
            None => {
                tracing::warn!(delivery_id = %self.id, "fleet not running; it re-reads waiting deliveries when it starts")
            }
        }
    }

    /// Applies a drone's report. Reports for an older ticket (a drone that
    /// was released by a reschedule or cancel) are ignored. Reports are
    /// applied by progress, not by arrival: a `PickedUp` or `Delivered`
    /// whose earlier reports were lost (a drone actor restarted between
    /// sending and delivering them) first records the stages it implies.
    fn on_drone(&mut self, report: DroneReport) {
        if let DroneReport::Delivered {
            ticket, drone_id, ..
        } = &report
        {
            // Whatever this report changes (or not: a repeat, a stale
            // ticket, a cancelled delivery), the drone is let go once the
            // record is stored.
            self.release = Some((drone_id.clone(), *ticket));
        }
        let Some(record) = &mut self.record else {
            tracing::warn!(delivery_id = %self.id, "drone report for an unknown delivery");
            return;
        };
        if report.ticket() != record.ticket || record.stage.is_terminal() {
            tracing::debug!(delivery_id = %self.id, ?report, "stale drone report ignored");
            return;
        }
        let (drone_id, position) = match &report {
            DroneReport::Assigned {
                drone_id, position, ..
            }
            | DroneReport::PickedUp {
                drone_id, position, ..
            }
            | DroneReport::Delivered {
                drone_id, position, ..
            } => (drone_id.clone(), *position),
        };
        if record.stage.awaits_drone() {
            // Any report of the current ticket means this drone took the job.
            record.delivery.drone_id = Some(drone_id.clone());
            if let DroneReport::Assigned {
                pickup_eta,
                delivery_eta,
                ..
            } = &report
            {
                set_etas(record, Some(*pickup_eta), Some(*delivery_eta));
            }
            let e = advance(record, DeliveryStage::HeadedToPickup, Some(position));
            self.unsaved.push(e);
        } else if record.delivery.drone_id.as_deref() != Some(drone_id.as_str()) {
            tracing::debug!(delivery_id = %self.id, %drone_id, "report from a drone that does not serve this delivery ignored");
            return;
        }
        match report {
            DroneReport::Assigned { .. } => {}
            DroneReport::PickedUp { delivery_eta, .. } => {
                if record.stage == DeliveryStage::HeadedToPickup {
                    set_etas(record, record.pickup_eta, Some(delivery_eta));
                    let e = advance(record, DeliveryStage::HeadedToDropoff, Some(position));
                    self.unsaved.push(e);
                }
            }
            DroneReport::Delivered { flown_m, .. } => {
                if record.stage == DeliveryStage::HeadedToPickup {
                    let e = advance(record, DeliveryStage::HeadedToDropoff, None);
                    self.unsaved.push(e);
                }
                let e = advance(record, DeliveryStage::Completed, Some(position));
                self.unsaved.push(e);
                let speed = self.ctx.config.sim.drone_speed_mps.max(f64::MIN_POSITIVE);
                self.history = Some(history_entry(record, flown_m, flown_m / speed / 3600.0));
                metrics::counter!(m::DELIVERIES_COMPLETED_TOTAL).increment(1);
                let secs =
                    (record.updated_at - record.created_at).num_milliseconds() as f64 / 1000.0;
                metrics::histogram!(m::DELIVERY_DURATION_SECONDS).record(secs);
            }
        }
        if !self.unsaved.is_empty() {
            self.dirty = true;
        }
    }
}

/// Moves `record` to `stage` and records how long it spent in the stage it
/// leaves (the per-stage latency operators watch: waiting for a drone,
/// flying to the pickup, flying to the dropoff).
fn advance(
    record: &mut DeliveryRecord,
    stage: DeliveryStage,
    location: Option<crate::domain::Location>,
) -> TrackingEvent {
    let left = record.stage;
    let secs = (Utc::now() - record.updated_at).num_milliseconds().max(0) as f64 / 1000.0;
    metrics::histogram!(m::STAGE_DURATION_SECONDS, "stage" => left.name()).record(secs);
    record.advance(stage, location)
}

/// Cancelled by compensation (not by the client): a replay revives it.
fn is_compensated(record: &DeliveryRecord) -> bool {
    record.stage == DeliveryStage::Cancelled
        && record
            .cancel_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("compensated"))
}

fn history_entry(record: &DeliveryRecord, distance_m: f64, assigned_hours: f64) -> HistoryEntry {
    HistoryEntry {
        delivery_id: record.delivery.id.clone(),
        owner_id: record.delivery.owner.user_id.clone(),
        drone_id: record.delivery.drone_id.clone(),
        stage: record.stage,
        distance_m,
        assigned_hours,
        created_at: record.created_at,
        finished_at: record.updated_at,
    }
}

fn set_etas(
    record: &mut DeliveryRecord,
    pickup: Option<DateTime<Utc>>,
    delivery: Option<DateTime<Utc>>,
) {
    record.pickup_eta = pickup;
    record.delivery_eta = delivery;
}
