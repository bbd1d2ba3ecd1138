//! The delivery actor: one per delivery id, the single writer of the
//! delivery's record.
//!
//! The rules are not here: every command and drone report goes through the
//! domain's stage machine ([`crate::domain::lifecycle::apply`]), and the
//! actor does what the decision says — store the change (history and a
//! compensation's dead letter first, then the record with its tracking
//! events), then send the effects (ask the fleet for a drone, withdraw,
//! release a drone, notify recipients).
//!
//! It is activated on demand ([`activate`]) and loads its record from
//! the delivery store in `pre_start`, so a crash, a restart of the
//! `deliveries` supervisor or passivation never lose state: the store is the
//! source of truth and the actor is its single writer. Every state change is
//! written (record + tracking event in one store call) *before* it is
//! acknowledged. The actor stops itself once the delivery is terminal; a later
//! read or message re-activates it from the store.
//!
//! Domain errors (unknown delivery, wrong stage) are returned to the caller in
//! the reply; they never fail the actor.

mod activation;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub use activation::{activate, tell, ActivationError};

use crate::backoff::Backoff;
use crate::config::PRESSURE_IDLE;
use crate::context::Context;
use crate::domain::lifecycle::{self, Change, Command, Decision, Effect, Rules, Verdict};
use crate::domain::ownership::{partition_of, Fence, PartitionId};
use crate::domain::{CancelReason, DeliveryRecord, DeliveryStage, HistoryEntry, TrackingEvent};
use crate::metrics::{self as m, LiveActor};
use crate::ports::{DeadLetter, DeadLetterSource, Operation, QueueMessage, Saved, StoreError};
use crate::protocol::{CreateOutcome, DeliveryError, DeliveryMsg, DroneMsg, FleetMsg};

/// Retries of a store write the actor keeps in memory: 100 ms doubling up
/// to 6.4 s.
const FLUSH_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_millis(6_400));

/// Retries of a compensation that could not be stored: 1 s doubling up to
/// 30 s, until the delivery takes it.
const COMPENSATE_RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

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
    /// The delivery's partition.
    partition: PartitionId,
    /// The fence of the partition when the record was loaded, sent with
    /// every write so that the store refuses them once another engine has
    /// taken the partition over; `None` when this engine does not hold it
    /// (then it does not write at all, unless the queue is not partitioned:
    /// see `save`).
    fence: Option<Fence>,
    /// The store refused a write as stale or fenced: another writer has
    /// changed the delivery, so this actor's copy is out of date. It stops
    /// after the message; the next message activates it from the store.
    superseded: bool,
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
        self.ctx.live_deliveries.fetch_sub(1, Ordering::Relaxed);
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
        let partition = partition_of(&id, ctx.config.ownership.partitions);
        // The fence is read before the record, so that a takeover in
        // between is seen as a fence change on the first message.
        let fence = ctx.owned.fence(partition);
        let record = ctx.backends.deliveries.get(&id).await?;
        metrics::counter!(m::ACTIVATIONS_TOTAL).increment(1);
        // Counted down when the state drops.
        ctx.live_deliveries.fetch_add(1, Ordering::Relaxed);
        Ok(DeliveryState {
            ctx,
            id,
            record,
            unsaved: Vec::new(),
            history: None,
            dirty: false,
            release: None,
            flush_attempt: 0,
            partition,
            fence,
            superseded: false,
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
        state.refence().await;
        match msg {
            DeliveryMsg::Create(new, reply) => {
                let result = state.command(Command::Create(new)).await.map(|v| match v {
                    Verdict::Created | Verdict::Revived => CreateOutcome::Created,
                    _ => CreateOutcome::AlreadyExists,
                });
                reply_or_log(reply, result);
            }
            DeliveryMsg::Reschedule(req, reply) => {
                let result = state.command(Command::Reschedule(req)).await;
                reply_or_log(reply, result.map(drop));
            }
            DeliveryMsg::Cancel(reply) => {
                let result = state.command(Command::Cancel).await;
                reply_or_log(reply, result.map(drop));
            }
            DeliveryMsg::Confirm(confirmation, reply) => {
                let result = state.command(Command::Confirm(confirmation)).await;
                reply_or_log(reply, result.map(drop));
            }
            DeliveryMsg::Get(reply) => {
                let _ = reply.send(state.record.clone());
            }
            DeliveryMsg::Drone(report) => state.on_drone(report).await,
            DeliveryMsg::Wake => {
                if let Err(e) = state.command(Command::Wake).await {
                    // The timer stays due in the store: the next poll
                    // wakes the delivery again.
                    tracing::warn!(delivery_id = %state.id, error = %e, "could not act on a due timer; it is tried again");
                }
            }
            DeliveryMsg::Compensate { ticket, reason } => {
                let command = Command::Compensate {
                    ticket,
                    reason: reason.clone(),
                };
                if let Err(e) = state.command(command).await {
                    // Each write is idempotent: the whole step is retried,
                    // through the registry, since a superseded actor stops
                    // and the retry must reach the next activation.
                    tracing::warn!(delivery_id = %state.id, error = %e, "compensation failed; retrying");
                    let (ctx, id) = (Arc::clone(&state.ctx), state.id.clone());
                    tokio::spawn(async move {
                        for attempt in 0.. {
                            tokio::time::sleep(COMPENSATE_RETRY.delay(attempt)).await;
                            let msg = DeliveryMsg::Compensate {
                                ticket,
                                reason: reason.clone(),
                            };
                            match tell(&ctx, &id, msg).await {
                                Ok(()) => break,
                                Err(e) => {
                                    tracing::warn!(delivery_id = %id, error = %e, "could not reach the delivery to retry its compensation")
                                }
                            }
                        }
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
        state.idle_timer = Some(myself.send_after(state.idle_timeout(), move || {
            DeliveryMsg::Passivate(generation)
        }));
        if state.dirty {
            if let Err(e) = state.flush().await {
                let delay = FLUSH_BACKOFF.delay(state.flush_attempt);
                tracing::warn!(delivery_id = %state.id, error = %e, ?delay, "could not store delivery; retrying");
                myself.send_after(delay, || DeliveryMsg::Flush);
                return Ok(());
            }
        }
        if state.superseded {
            myself.stop(Some("superseded".into()));
            return Ok(());
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

impl DeliveryState {
    /// How long this actor may stay idle before it stops: the configured
    /// `passivate_after`, or [`PRESSURE_IDLE`] while more deliveries are
    /// alive than `max_live_deliveries` allows.
    fn idle_timeout(&self) -> Duration {
        let config = &self.ctx.config;
        if self.ctx.live_deliveries.load(Ordering::Relaxed) > config.max_live_deliveries {
            PRESSURE_IDLE.min(config.passivate_after)
        } else {
            config.passivate_after
        }
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            area: &self.ctx.config.area,
            drone_speed_mps: self.ctx.config.sim.drone_speed_mps,
            pickup_lead: chrono::Duration::from_std(self.ctx.config.pickup_lead)
                .unwrap_or(chrono::Duration::MAX),
        }
    }

    /// A client's command or the fleet's compensation: decided by the
    /// rules, stored, and only then answered and sent on. A refused or
    /// failed store leaves the actor's state as it was.
    async fn command(&mut self, command: Command) -> Result<Verdict, DeliveryError> {
        let decision = lifecycle::apply(self.record.as_ref(), command, self.rules(), Utc::now())?;
        let Decision {
            verdict,
            change,
            effects,
        } = decision;
        if let Some(change) = change {
            self.store(change).await?;
        }
        match verdict {
            Verdict::Created => metrics::counter!(m::DELIVERIES_CREATED_TOTAL).increment(1),
            Verdict::Revived => {
                tracing::info!(delivery_id = %self.id, "compensated delivery revived by a replay")
            }
            Verdict::Ignored(why) => {
                tracing::debug!(delivery_id = %self.id, ?why, "command no longer applies")
            }
            _ => {}
        }
        self.send(effects).await;
        Ok(verdict)
    }

    /// Writes a decided change: the compensation's dead letter and the
    /// history entry first (once a reader sees the final stage, both exist;
    /// writing them again is idempotent), then the record with its events.
    async fn store(&mut self, change: Change) -> Result<(), DeliveryError> {
        if let Some(reason) = &change.dead_letter {
            self.dead_letter_request(&change.record, reason).await?;
        }
        if let Some(entry) = &change.history {
            self.ctx.backends.history.record(entry).await?;
        }
        for event in saves(&change.events) {
            let saved = self.save(&change.record, event).await?;
            if !saved.is_stored() {
                self.supersede(saved);
                return Err(DeliveryError::Superseded);
            }
        }
        observe(&self.ctx, self.record.as_ref(), &change);
        self.record = Some(change.record);
        Ok(())
    }

    /// The partition's fence has changed since the record was loaded (this
    /// engine lost the partition, or regained it, or gained it after the
    /// activation): whatever another holder wrote meanwhile is in the
    /// store, so the record is loaded again and changes not yet stored are
    /// dropped (a drone repeats the report that matters, `Delivered`). A
    /// store that cannot be read leaves the old fence in place: the store
    /// refuses its writes if it is stale, which stops the actor.
    async fn refence(&mut self) {
        let current = self.ctx.owned.fence(self.partition);
        if current == self.fence {
            return;
        }
        match self.ctx.backends.deliveries.get(&self.id).await {
            Ok(record) => {
                tracing::debug!(delivery_id = %self.id, before = ?self.fence, now = ?current, "partition changed hands; reloaded the delivery");
                self.record = record;
                self.unsaved.clear();
                self.history = None;
                self.release = None;
                self.dirty = false;
                self.fence = current;
            }
            Err(e) => {
                tracing::warn!(delivery_id = %self.id, error = %e, "partition changed hands and the delivery could not be reloaded");
            }
        }
    }

    /// One save of the record (with an event), fenced. An engine that does
    /// not hold the partition of a partitioned queue's delivery does not
    /// write it at all: refused here as the store would refuse a stale
    /// holder. (Without partitions any engine may receive the delivery's
    /// messages, and the store then checks versions only.)
    async fn save(
        &self,
        record: &DeliveryRecord,
        event: Option<&TrackingEvent>,
    ) -> Result<Saved, StoreError> {
        if self.fence.is_none() && self.ctx.backends.queue.partitioned() {
            return Ok(Saved::Fenced);
        }
        self.ctx
            .backends
            .deliveries
            .save(record, event, self.fence)
            .await
    }

    /// The store refused a write: another writer changed the delivery. The
    /// actor drops what it holds in memory and stops (see `superseded`); a
    /// drone waiting to be released repeats its report to the next
    /// activation, which applies it to the current record.
    fn supersede(&mut self, saved: Saved) {
        tracing::warn!(delivery_id = %self.id, ?saved, "delivery changed elsewhere; reloading on the next message");
        self.superseded = true;
        self.unsaved.clear();
        self.history = None;
        self.release = None;
        self.dirty = false;
    }

    /// Sends what a decision asks for once its change is stored.
    async fn send(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::RequestDrone(request) => match self.ctx.fleet() {
                    Some(fleet) => {
                        if fleet.cast(FleetMsg::Request(request)).is_err() {
                            tracing::warn!(delivery_id = %self.id, "fleet stopped; it re-reads waiting deliveries when it restarts");
                        }
                    }
                    None => {
                        tracing::warn!(delivery_id = %self.id, "fleet not running; it re-reads waiting deliveries when it starts")
                    }
                },
                Effect::Withdraw => {
                    if let Some(fleet) = self.ctx.fleet() {
                        let _ = fleet.cast(FleetMsg::Withdraw {
                            delivery_id: self.id.clone(),
                        });
                    }
                }
                // Sent once nothing is left unsaved (see `release_drone`).
                Effect::ReleaseDrone { drone_id, ticket } => {
                    self.release = Some((drone_id, ticket));
                }
                Effect::NotifyRecipients => self.notify_recipients().await,
            }
        }
    }

    /// Tells whoever asked to be notified that the delivery was confirmed.
    async fn notify_recipients(&self) {
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
    }

    /// Puts a compensated delivery's request in the dead letters, so that
    /// operators see it and a replay takes it up again.
    async fn dead_letter_request(
        &self,
        record: &DeliveryRecord,
        reason: &CancelReason,
    ) -> Result<(), StoreError> {
        let backends = &self.ctx.backends;
        let package = backends.packages.get(&record.package_id).await?;
        let body = lifecycle::replay_request(record, package.as_ref());
        let mut message =
            QueueMessage::new(Operation::Delivery, &body, record.correlation_id.clone());
        message.message_id = format!("compensated-{}", record.delivery.id);
        message.expedited = record.delivery.expedited;
        let now = Utc::now();
        backends
            .dead_letters
            .put(DeadLetter {
                id: message.message_id.clone(),
                message,
                reason: reason.to_string(),
                attempts: 1,
                first_seen: now,
                last_seen: now,
                source: DeadLetterSource::Engine,
                description: None,
            })
            .await?;
        tracing::warn!(delivery_id = %self.id, %reason, "delivery compensated: cancelled and dead-lettered");
        Ok(())
    }

    /// Writes the record and the unsaved events, oldest first (one stage
    /// change per write keeps the store's record and event log consistent).
    async fn flush(&mut self) -> Result<(), StoreError> {
        let Some(record) = &self.record else {
            self.dirty = false;
            return Ok(());
        };
        if let Some(entry) = &self.history {
            self.ctx.backends.history.record(entry).await?;
            self.history = None;
        }
        // One save per unsaved event (or one without an event), oldest
        // first; each event leaves the list only once stored.
        if self.unsaved.is_empty() {
            let saved = self.save(record, None).await?;
            if !saved.is_stored() {
                self.supersede(saved);
                return Ok(());
            }
        }
        while let Some(event) = self.unsaved.first() {
            let saved = self.save(record, Some(event)).await?;
            if !saved.is_stored() {
                self.supersede(saved);
                return Ok(());
            }
            self.unsaved.remove(0);
        }
        self.dirty = false;
        self.flush_attempt = 0;
        Ok(())
    }

    /// A drone's report. The drone has flown whatever the store says, so
    /// the change is applied in memory at once and written by `flush` (with
    /// backoff until the store takes it).
    async fn on_drone(&mut self, report: crate::domain::DroneReport) {
        let decision = match lifecycle::apply(
            self.record.as_ref(),
            Command::Drone(report),
            self.rules(),
            Utc::now(),
        ) {
            Ok(d) => d,
            Err(e) => {
                // The rules never refuse a report; log rather than lose it silently.
                tracing::warn!(delivery_id = %self.id, error = %e, "drone report refused");
                return;
            }
        };
        if let Verdict::Ignored(why) = decision.verdict {
            tracing::debug!(delivery_id = %self.id, ?why, "drone report ignored");
        }
        if let Some(change) = decision.change {
            observe(&self.ctx, self.record.as_ref(), &change);
            self.unsaved.extend(change.events);
            if change.history.is_some() {
                self.history = change.history;
            }
            self.record = Some(change.record);
            self.dirty = true;
        }
        self.send(decision.effects).await;
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
}

/// The saves of a record with its stage events: one per event, oldest
/// first (one stage change per write keeps the record and the event log
/// consistent), or one without an event.
fn saves(events: &[TrackingEvent]) -> impl Iterator<Item = Option<&TrackingEvent>> {
    let none = events.is_empty().then_some(None);
    events.iter().map(Some).chain(none)
}

/// Records the metrics of a change: how long the delivery spent in each
/// stage it left (waiting for a drone, flying to the pickup, flying to the
/// dropoff), completions with their duration, cancellations and
/// compensations.
fn observe(ctx: &Context, before: Option<&DeliveryRecord>, change: &Change) {
    let (mut stage, mut since) = before
        .map_or((DeliveryStage::Created, change.record.created_at), |r| {
            (r.stage, r.updated_at)
        });
    for TrackingEvent {
        stage: next, at, ..
    } in change.events.iter().filter(|e| e.at_risk.is_none())
    {
        let secs = (*at - since).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!(m::STAGE_DURATION_SECONDS, "stage" => stage.name()).record(secs);
        match next {
            DeliveryStage::Completed => {
                metrics::counter!(m::DELIVERIES_COMPLETED_TOTAL).increment(1);
                ctx.counts.completed();
                let record = &change.record;
                let secs =
                    (record.updated_at - record.created_at).num_milliseconds() as f64 / 1000.0;
                metrics::histogram!(m::DELIVERY_DURATION_SECONDS).record(secs);
                // Completed after its deadline: the rules keep the miss as
                // its at-risk reason (`lifecycle::at_risk`).
                if record.at_risk.is_some() {
                    metrics::counter!(m::DEADLINES_MISSED_TOTAL).increment(1);
                }
            }
            DeliveryStage::Cancelled => {
                metrics::counter!(m::DELIVERIES_CANCELLED_TOTAL).increment(1);
                ctx.counts.cancelled();
            }
            _ => {}
        }
        (stage, since) = (*next, *at);
    }
    if change.dead_letter.is_some() {
        metrics::counter!(m::COMPENSATIONS_TOTAL).increment(1);
        metrics::counter!(m::DEAD_LETTERS_TOTAL, "reason" => m::DeadLetterKind::Compensated.label())
            .increment(1);
    }
}
