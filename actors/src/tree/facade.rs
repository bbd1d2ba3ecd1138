//! What the gateway calls: submit to the queue, read the stores (reads
//! never wake an actor), confirmations, notify-me requests, dead letters.

use std::sync::Arc;

use ractor::rpc::CallResult;

use super::Engine;
use crate::domain::lifecycle::Rejection;
use crate::domain::{
    Confirmation, DeliveryRecord, DeliveryStage, DeliveryStatus, DroneState, Package, PackagePatch,
    TrackingEvent, Upserted,
};
use crate::health::Dependency;
use crate::ports::{
    DeadLetter, DependencyDown, IdempotencyStore, MonthSummary, NotifyMeRequest, QueueMessage,
    StoreError, StoreResult, Utilization,
};
use crate::protocol::{DeliveryError, DeliveryMsg};

/// How many of the broker's own dead letters a listing reads at most: the
/// broker hands them out one request each (Service Bus over REST), so a
/// flooded dead-letter queue is shown in part (Azure's tools show the rest).
pub const BROKER_DEAD_LETTERS_LISTED: usize = 100;

/// Why an engine command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such delivery, dead letter or supervisor.
    #[error("not found")]
    NotFound,
    /// Not possible in the delivery's current stage.
    #[error("not possible in stage {}", .0.name())]
    WrongStage(DeliveryStage),
    /// A backend or actor is unavailable; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Not tried: a dependency it needs is known to be down.
    #[error("{} is down", .0.dependency)]
    DependencyDown(DependencyDown),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DependencyDown(down) => Self::DependencyDown(down),
            e => Self::Unavailable(e.to_string()),
        }
    }
}

impl Engine {
    /// Fails at once when `dependency` is known to be down (see
    /// [`crate::health`]): the request that needs it gets a quick 503
    /// naming it instead of waiting for a timeout.
    fn need(&self, dependency: Dependency) -> StoreResult<()> {
        self.ctx.health.require(dependency)
    }

    /// Puts a message on the queue; returns once the broker accepted it.
    pub async fn submit(&self, mut message: QueueMessage) -> StoreResult<()> {
        self.need(Dependency::Queue)?;
        crate::tracecontext::inject(&mut message);
        self.ctx.backends.queue.send(message).await
    }

    /// A delivery record, straight from the store (reads never wake actors).
    pub async fn delivery(&self, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        self.need(Dependency::Deliveries)?;
        self.ctx.backends.deliveries.get(id).await
    }

    /// Status of a delivery: stage and ETAs from its record, position from its
    /// drone while one is assigned. While the drone store is down the
    /// position is the last one tracked, and the status is still served.
    pub async fn status(&self, id: &str) -> StoreResult<Option<DeliveryStatus>> {
        self.need(Dependency::Deliveries)?;
        let Some(record) = self.ctx.backends.deliveries.get(id).await? else {
            return Ok(None);
        };
        self.status_of(&record).await.map(Some)
    }

    /// The status of a delivery whose record the caller has read already
    /// (to check who may see it): [`Self::status`] without a second read.
    pub async fn status_of(&self, record: &DeliveryRecord) -> StoreResult<DeliveryStatus> {
        let id = record.delivery.id.as_str();
        let drones_up = self.need(Dependency::Drones).is_ok();
        let drone = match (&record.delivery.drone_id, record.stage.is_terminal()) {
            (Some(drone_id), false) if drones_up => self.ctx.backends.drones.get(drone_id).await?,
            _ => None,
        };
        let drone_position = drone.as_ref().map(|d| d.position);
        // The ETAs as the drone flies now, not as they were at assignment.
        let (pickup_eta, delivery_eta) =
            drone
                .as_ref()
                .map_or((record.pickup_eta, record.delivery_eta), |d| {
                    crate::domain::lifecycle::live_etas(
                        record,
                        d,
                        self.ctx.config.sim.real_speed_mps(),
                        chrono::Utc::now(),
                    )
                });
        let last_event_location = if drone_position.is_none() {
            self.ctx
                .backends
                .deliveries
                .events(id)
                .await?
                .iter()
                .rev()
                .find_map(|e| e.location)
        } else {
            None
        };
        Ok(DeliveryStatus {
            stage: record.stage,
            stage_name: record.stage.name().to_owned(),
            last_known_location: drone_position.or(last_event_location),
            pickup_eta,
            delivery_eta,
            drone_id: record.delivery.drone_id.clone(),
            deadline: crate::domain::request::parse_time(&record.delivery.deadline),
            scheduled_for: record
                .pickup_time
                .filter(|_| record.stage == DeliveryStage::Scheduled),
            at_risk: record.at_risk.is_some(),
            at_risk_reason: record.at_risk.clone(),
        })
    }

    /// A package.
    pub async fn package(&self, id: &str) -> StoreResult<Option<Package>> {
        self.need(Dependency::Packages)?;
        self.ctx.backends.packages.get(id).await
    }

    /// Creates or replaces a package.
    pub async fn upsert_package(&self, package: &Package) -> StoreResult<Upserted> {
        self.need(Dependency::Packages)?;
        self.ctx.backends.packages.upsert(package).await
    }

    /// Partially updates a package.
    pub async fn patch_package(
        &self,
        id: &str,
        patch: &PackagePatch,
    ) -> StoreResult<Option<Package>> {
        self.need(Dependency::Packages)?;
        self.ctx.backends.packages.patch(id, patch).await
    }

    /// Tracking events of a delivery, oldest first.
    pub async fn events(&self, id: &str) -> StoreResult<Vec<TrackingEvent>> {
        self.need(Dependency::Deliveries)?;
        self.ctx.backends.deliveries.events(id).await
    }

    /// Every drone's stored state (of every engine sharing the drone store),
    /// straight from the store like the other reads.
    pub async fn drones(&self) -> StoreResult<Vec<DroneState>> {
        self.need(Dependency::Drones)?;
        self.ctx.backends.drones.list().await
    }

    /// Drone utilisation of an owner in a month (UTC), from the history of
    /// finished deliveries.
    pub async fn utilization(
        &self,
        owner_id: &str,
        year: i32,
        month: u32,
    ) -> StoreResult<Utilization> {
        self.need(Dependency::History)?;
        self.ctx
            .backends
            .history
            .utilization(owner_id, year, month)
            .await
    }

    /// An owner's deliveries finished in a month (UTC): completed and
    /// cancelled counts, and the weight of the completed ones' packages.
    pub async fn month_summary(
        &self,
        owner_id: &str,
        year: i32,
        month: u32,
    ) -> StoreResult<MonthSummary> {
        self.need(Dependency::History)?;
        self.ctx
            .backends
            .history
            .month_summary(owner_id, year, month)
            .await
    }

    /// Records a notify-me request for an existing delivery.
    pub async fn add_notify_me(
        &self,
        id: &str,
        email_address: Option<String>,
        sms: Option<String>,
    ) -> Result<(), CommandError> {
        self.need(Dependency::Deliveries)?;
        if self.ctx.backends.deliveries.get(id).await?.is_none() {
            return Err(CommandError::NotFound);
        }
        let request = NotifyMeRequest {
            delivery_id: id.to_owned(),
            email_address,
            sms,
            created_at: chrono::Utc::now(),
        };
        self.ctx.backends.notify.add(&request).await?;
        Ok(())
    }

    /// Stores the recipient's confirmation of a completed delivery (through
    /// its actor, the delivery's single writer) and notifies subscribers.
    ///
    /// A `gateway`-role process runs no delivery actors: it checks the stage
    /// in the store and sends a `confirm` message that a worker applies
    /// through the actor.
    pub async fn confirm(&self, id: &str, confirmation: Confirmation) -> Result<(), CommandError> {
        self.need(Dependency::Deliveries)?;
        let Some(record) = self.ctx.backends.deliveries.get(id).await? else {
            return Err(CommandError::NotFound);
        };
        if !self.ctx.config.role.runs_actors() {
            if !record
                .needs_confirmation()
                .map_err(CommandError::WrongStage)?
            {
                return Ok(());
            }
            let body = serde_json::to_value(crate::workflow::ConfirmMessage {
                delivery_id: id.to_owned(),
                confirmation,
            })
            .map_err(|e| CommandError::Unavailable(e.to_string()))?;
            let mut message = QueueMessage::new(crate::ports::Operation::Confirm, &body, None);
            self.need(Dependency::Queue)?;
            crate::tracecontext::inject(&mut message);
            self.ctx.backends.queue.send(message).await?;
            return Ok(());
        }
        let actor = crate::delivery::activate(&self.ctx, id)
            .await
            .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let confirmation = Box::new(confirmation);
        match actor
            .call(
                |reply| DeliveryMsg::Confirm(confirmation, reply),
                Some(self.ctx.config.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(Ok(()))) => Ok(()),
            Ok(CallResult::Success(Err(DeliveryError::Rejected(Rejection::NotFound)))) => {
                Err(CommandError::NotFound)
            }
            Ok(CallResult::Success(Err(DeliveryError::Rejected(Rejection::WrongStage(stage))))) => {
                Err(CommandError::WrongStage(stage))
            }
            Ok(CallResult::Success(Err(e))) => Err(CommandError::Unavailable(e.to_string())),
            Ok(_) | Err(_) => Err(CommandError::Unavailable(
                "the delivery actor did not answer".into(),
            )),
        }
    }

    /// Dead letters and how many there are in all: first those the broker
    /// dead-lettered on its own (at most [`BROKER_DEAD_LETTERS_LISTED`],
    /// newest first), then the engine's, newest first.
    pub async fn dead_letters(
        &self,
        offset: usize,
        limit: usize,
    ) -> StoreResult<(Vec<DeadLetter>, u64)> {
        self.need(Dependency::DeadLetters)?;
        let mut broker = self
            .ctx
            .backends
            .queue
            .dead_letters(BROKER_DEAD_LETTERS_LISTED)
            .await?;
        broker.sort_by_key(|l| std::cmp::Reverse(l.last_seen));
        let mut page: Vec<DeadLetter> = broker.iter().skip(offset).take(limit).cloned().collect();
        let room = limit - page.len();
        if room > 0 {
            let from = offset.saturating_sub(broker.len());
            page.extend(self.ctx.backends.dead_letters.list(from, room).await?);
        }
        let total = self.ctx.backends.dead_letters.count().await? + broker.len() as u64;
        Ok((page, total))
    }

    /// Puts a dead-lettered message back on the queue (same message id, so
    /// a second failure updates the same dead letter), then removes the dead
    /// letter. Returns the message sent.
    ///
    /// A dead letter of the broker's own is replayed by the queue adapter:
    /// sent back, then removed from the broker's dead-letter queue.
    pub async fn replay_dead_letter(&self, id: &str) -> Result<QueueMessage, CommandError> {
        self.need(Dependency::DeadLetters)?;
        self.need(Dependency::Queue)?;
        let Some(letter) = self.ctx.backends.dead_letters.get(id).await? else {
            let message = self
                .ctx
                .backends
                .queue
                .replay_dead_letter(id)
                .await?
                .ok_or(CommandError::NotFound)?;
            metrics::counter!(crate::metrics::DEAD_LETTERS_REPLAYED_TOTAL).increment(1);
            tracing::info!(message_id = %message.message_id, dead_letter = %id, "broker dead letter replayed");
            return Ok(message);
        };
        let mut message = letter.message.clone();
        message.enqueued_at = chrono::Utc::now();
        // Remove first: if the replayed message fails again quickly, its new
        // dead letter must not be deleted by this replay. If the send fails,
        // the dead letter is put back.
        self.ctx.backends.dead_letters.remove(id).await?;
        if let Err(e) = self.ctx.backends.queue.send(message.clone()).await {
            if let Err(e2) = self.ctx.backends.dead_letters.put(letter).await {
                tracing::error!(message_id = %id, error = %e2, "could not restore a dead letter after a failed replay");
            }
            return Err(e.into());
        }
        metrics::counter!(crate::metrics::DEAD_LETTERS_REPLAYED_TOTAL).increment(1);
        tracing::info!(message_id = %id, "dead letter replayed");
        Ok(message)
    }

    /// The idempotency-key store (`Idempotency-Key` on POST).
    pub fn idempotency(&self) -> &Arc<dyn IdempotencyStore> {
        &self.ctx.backends.idempotency
    }

    /// Messages waiting in the queue.
    pub async fn queue_depth(&self) -> StoreResult<Option<u64>> {
        self.ctx.backends.queue.depth().await
    }
}
