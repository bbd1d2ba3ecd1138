//! The workflow: what happens to one queue message, and the
//! competing-consumer pool that runs it.
//!
//! [`process`] turns a message into an [`Outcome`] without touching the
//! queue; [`settle`] then completes, abandons (for a retry with backoff) or
//! dead-letters it. Keeping the two apart makes the decision testable and
//! the queue protocol uniform across backends.
//!
//! For a `delivery` message the steps are: validate, upsert the package,
//! create the delivery (its actor stores it and asks the fleet for a drone),
//! and only then complete the message. Every step is idempotent, so a message
//! redelivered after a crash (at-least-once) has no second effect. `cancel`
//! and `reschedule` messages are applied by the delivery's actor; the original
//! system dead-lettered both.

mod consumer;
mod outcome;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::rpc::CallResult;

pub use consumer::{
    drain_workflow, start_workflow, Pump, PumpMsg, WorkflowJob, WorkflowWorker, WORKER_STARTS,
};
pub use outcome::{
    await_create_delay, call_failed, refused, settlement, CallError, DeadLetterReason, Outcome,
    Settlement,
};

use crate::backoff::Backoff;
use crate::context::Context;
use crate::delivery::ActivationError;
use crate::domain::{Confirmation, DeliveryRequest, Package, RescheduleRequest};
use crate::metrics as m;
use crate::ports::{DeadLetter, DeadLetterSource, Operation, QueueMessage, ReceivedMessage};
use crate::protocol::{CreateOutcome, DeliveryError, DeliveryMsg, NewDelivery};

/// Decides the fate of one message. Never panics and never touches the queue.
pub async fn process(ctx: &Arc<Context>, message: &QueueMessage) -> Outcome {
    let Some(op) = Operation::parse(&message.operation) else {
        return Outcome::DeadLetter(DeadLetterReason::UnknownOperation(
            message.operation.clone(),
        ));
    };
    let body: serde_json::Value = match serde_json::from_str(&message.body) {
        Ok(v) => v,
        Err(e) => return Outcome::DeadLetter(DeadLetterReason::NotJson(e.to_string())),
    };
    match op {
        Operation::Delivery => match DeliveryRequest::from_message(&body) {
            Ok(req) => create(ctx, req, message.correlation_id.clone()).await,
            Err(e) => invalid(format!("invalid delivery message: {e}")),
        },
        Operation::Reschedule => match RescheduleRequest::from_message(&body) {
            Ok(req) => {
                let id = req.delivery_id.clone();
                command(ctx, &id, |reply| DeliveryMsg::Reschedule(req, reply)).await
            }
            Err(e) => invalid(format!("invalid reschedule message: {e}")),
        },
        Operation::Confirm => match serde_json::from_value::<ConfirmMessage>(body) {
            Ok(ConfirmMessage {
                delivery_id,
                confirmation,
            }) if !delivery_id.is_empty() => {
                let confirmation = Box::new(confirmation);
                command(ctx, &delivery_id, |reply| {
                    DeliveryMsg::Confirm(confirmation, reply)
                })
                .await
            }
            Ok(_) => invalid("invalid confirm message: empty deliveryId".into()),
            Err(e) => invalid(format!("invalid confirm message: {e}")),
        },
        Operation::Cancel => match body.as_str() {
            Some(id) if !id.is_empty() => command(ctx, id, DeliveryMsg::Cancel).await,
            _ => invalid("cancel message body must be the delivery id as a JSON string".into()),
        },
    }
}

fn invalid(why: String) -> Outcome {
    Outcome::DeadLetter(DeadLetterReason::Invalid(why))
}

/// Body of a `confirm` message.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmMessage {
    /// The delivery confirmed.
    pub delivery_id: String,
    /// The recipient's confirmation.
    pub confirmation: Confirmation,
}

async fn create(
    ctx: &Arc<Context>,
    req: DeliveryRequest,
    correlation_id: Option<String>,
) -> Outcome {
    let id = req.delivery_id.clone();
    tracing::info!(delivery_id = %id, "processing delivery request");
    if let Err(e) = ctx
        .backends
        .packages
        .upsert(&Package::from(&req.package))
        .await
    {
        ctx.breakers.packages.failure();
        return Outcome::Unavailable(format!("package store: {e}"));
    }
    ctx.breakers.packages.success();
    let new = Box::new(NewDelivery {
        request: req,
        correlation_id,
    });
    match call(ctx, &id, |reply| DeliveryMsg::Create(new, reply)).await {
        Ok(Ok(outcome)) => {
            ctx.breakers.deliveries.success();
            if outcome == CreateOutcome::AlreadyExists {
                tracing::info!(delivery_id = %id, "delivery exists already (redelivered message)");
            }
            Outcome::Done
        }
        Ok(Err(e)) => from_delivery_error(ctx, e),
        Err(e) => {
            ctx.breakers.deliveries.failure();
            call_failed(&e)
        }
    }
}

async fn command<F>(ctx: &Arc<Context>, id: &str, build: F) -> Outcome
where
    F: FnOnce(ractor::RpcReplyPort<Result<(), DeliveryError>>) -> DeliveryMsg,
{
    match call(ctx, id, build).await {
        Ok(Ok(())) => {
            ctx.breakers.deliveries.success();
            Outcome::Done
        }
        Ok(Err(e)) => from_delivery_error(ctx, e),
        Err(e) => {
            ctx.breakers.deliveries.failure();
            call_failed(&e)
        }
    }
}

/// Feeds the store breaker and classifies a refusal or store failure.
fn from_delivery_error(ctx: &Context, e: DeliveryError) -> Outcome {
    if matches!(e, DeliveryError::Store(_)) {
        ctx.breakers.deliveries.failure();
    } else {
        ctx.breakers.deliveries.success();
    }
    refused(e)
}

async fn call<T, F>(ctx: &Arc<Context>, id: &str, build: F) -> Result<T, CallError>
where
    T: Send + 'static,
    F: FnOnce(ractor::RpcReplyPort<T>) -> DeliveryMsg,
{
    let actor = crate::delivery::activate(ctx, id).await?;
    match actor.call(build, Some(ctx.config.call_timeout)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(CallError::Timeout),
        Ok(CallResult::SenderError) => Err(CallError::Stopped),
        Err(e) => Err(CallError::Unreachable(e.to_string())),
    }
}

/// The backoff of a message put back on the queue: the base retry delay
/// doubled per earlier delivery, up to `cap`.
fn retry_delay(ctx: &Context, delivery_count: u32, cap: Duration) -> Duration {
    Backoff::new(ctx.config.retry_delay, cap).delay(delivery_count.saturating_sub(1))
}

/// Applies an [`Outcome`] to the queue. A settle failure is logged and left to
/// the broker: the lock expires and the message comes back, which the
/// idempotent workflow absorbs.
pub async fn settle(ctx: &Context, received: &ReceivedMessage, outcome: Outcome) {
    let queue = &ctx.backends.queue;
    let op = Operation::parse(&received.message.operation).map_or("unknown", Operation::as_str);
    let settlement = settlement(
        outcome,
        received.delivery_count,
        ctx.config.max_delivery_attempts,
    );
    let (label, result) = match settlement {
        Settlement::Complete => ("completed", queue.complete(&received.lock).await),
        Settlement::RetryLater(reason) => {
            let delay = retry_delay(ctx, received.delivery_count, Duration::from_secs(60));
            tracing::warn!(message_id = %received.message.message_id, attempt = received.delivery_count, %reason, ?delay, "retrying message");
            ("retried", queue.abandon(&received.lock, delay).await)
        }
        Settlement::AwaitCreate(reason) => {
            let age = (chrono::Utc::now() - received.message.enqueued_at)
                .to_std()
                .unwrap_or_default();
            let delay = outcome::await_create_delay(
                retry_delay(ctx, received.delivery_count, Duration::from_secs(60)),
                received.delivery_count,
                ctx.config.max_delivery_attempts,
                age,
                ctx.config.create_grace,
            );
            tracing::warn!(message_id = %received.message.message_id, attempt = received.delivery_count, %reason, ?delay, "the delivery does not exist yet; retrying");
            ("retried", queue.abandon(&received.lock, delay).await)
        }
        Settlement::DeadLetter(reason) => {
            ("deadlettered", dead_letter(ctx, received, reason).await)
        }
        Settlement::Defer(reason) => {
            let delay = retry_delay(ctx, received.delivery_count, Duration::from_secs(30));
            tracing::warn!(message_id = %received.message.message_id, attempt = received.delivery_count, %reason, ?delay, "backend unavailable; message goes back to the queue");
            ("deferred", queue.abandon(&received.lock, delay).await)
        }
    };
    metrics::counter!(m::MESSAGES_TOTAL, "operation" => op, "outcome" => label).increment(1);
    if let Err(e) = result {
        tracing::error!(message_id = %received.message.message_id, error = %e, "could not settle message; its lock will expire");
    }
}

async fn dead_letter(
    ctx: &Context,
    received: &ReceivedMessage,
    reason: DeadLetterReason,
) -> crate::ports::StoreResult<()> {
    let kind = reason.kind();
    let reason = reason.to_string();
    tracing::warn!(message_id = %received.message.message_id, %reason, "dead-lettering message");
    let now = Utc::now();
    let letter = DeadLetter {
        id: received.message.message_id.clone(),
        message: received.message.clone(),
        reason: reason.clone(),
        attempts: received.delivery_count,
        first_seen: now,
        last_seen: now,
        source: DeadLetterSource::Engine,
        description: None,
    };
    // Store first: a message is removed from the queue only once its dead
    // letter is safe.
    ctx.backends.dead_letters.put(letter).await?;
    metrics::counter!(m::DEAD_LETTERS_TOTAL, "reason" => kind.label()).increment(1);
    ctx.backends
        .queue
        .dead_letter(&received.lock, &reason)
        .await
}
