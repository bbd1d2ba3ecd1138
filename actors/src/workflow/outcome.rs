//! What becomes of a queue message: the workflow's classification of every
//! failure, as plain functions (no actor, no queue, table-tested below).
//!
//! A message is completed, retried with backoff (and dead-lettered after its
//! last attempt), dead-lettered at once (it can never succeed), or put back
//! however many attempts that takes because a backend is down: an outage
//! must not turn accepted requests into dead letters.

use std::time::Duration;

use crate::domain::lifecycle::Rejection;
use crate::domain::DeliveryStage;
use crate::metrics::DeadLetterKind;
use crate::protocol::DeliveryError;

use super::ActivationError;

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed; complete it.
    Done,
    /// A transient failure; redeliver later (dead-letter after the last attempt).
    Retry(String),
    /// The delivery the message is about does not exist yet: its create may
    /// still be on its way. Retried like [`Outcome::Retry`], except that the
    /// last attempt waits until the message is older than the create grace
    /// (see [`await_create_delay`]).
    AwaitCreate(String),
    /// It can never succeed; dead-letter it with this reason.
    DeadLetter(DeadLetterReason),
    /// A backend is down: redeliver later, however many attempts that takes.
    /// The circuit breaker keeps the pump from hammering the backend.
    Unavailable(String),
}

/// Why a message was dead-lettered. Stored and shown as text (its
/// `Display`); the variant gives the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The message names no known operation.
    UnknownOperation(String),
    /// The body is not JSON (the parser's message).
    NotJson(String),
    /// The body or a field of it is invalid (the whole explanation).
    Invalid(String),
    /// A transient failure outlasted the message's delivery attempts.
    RetriesExhausted {
        /// Deliveries of the message.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The command does not apply in the delivery's stage.
    WrongStage(DeliveryStage),
}

impl DeadLetterReason {
    /// The bounded metric label.
    pub fn kind(&self) -> DeadLetterKind {
        match self {
            Self::UnknownOperation(_) => DeadLetterKind::UnknownOperation,
            Self::NotJson(_) => DeadLetterKind::NotJson,
            Self::Invalid(_) => DeadLetterKind::Invalid,
            Self::RetriesExhausted { .. } => DeadLetterKind::RetriesExhausted,
            Self::WrongStage(_) => DeadLetterKind::WrongStage,
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownOperation(op) => write!(f, "unknown operation '{op}'"),
            Self::NotJson(e) => write!(f, "body is not JSON: {e}"),
            Self::Invalid(why) => f.write_str(why),
            Self::RetriesExhausted { attempts, last } => {
                write!(f, "gave up after {attempts} attempts: {last}")
            }
            Self::WrongStage(stage) => write!(
                f,
                "not possible: the delivery is {}",
                match stage {
                    DeliveryStage::HeadedToDropoff => "already picked up",
                    DeliveryStage::Completed => "already completed",
                    DeliveryStage::Cancelled => "cancelled",
                    other => other.name(),
                }
            ),
        }
    }
}

/// Why a call to a delivery actor failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The actor could not be activated (its state could not be loaded):
    /// an outage, not a failure of the message.
    #[error("activation: {0}")]
    Activation(#[from] ActivationError),
    /// No reply within the call timeout.
    #[error("delivery actor timed out")]
    Timeout,
    /// The actor stopped before it replied.
    #[error("delivery actor stopped before replying")]
    Stopped,
    /// The message could not be sent.
    #[error("delivery actor unreachable: {0}")]
    Unreachable(String),
}

/// Classifies a failed call to a delivery actor.
pub fn call_failed(e: &CallError) -> Outcome {
    match e {
        CallError::Activation(_) => Outcome::Unavailable(e.to_string()),
        _ => Outcome::Retry(e.to_string()),
    }
}

/// Classifies a delivery command's refusal or store failure.
pub fn refused(e: DeliveryError) -> Outcome {
    match e {
        // The create may still be on its way (another consumer, another
        // process): retry, and dead-letter only after the last attempt.
        DeliveryError::Rejected(Rejection::NotFound) => {
            Outcome::AwaitCreate("delivery not found".into())
        }
        DeliveryError::Store(e) => Outcome::Unavailable(format!("delivery store: {e}")),
        // Another writer got there first: apply the command again on the
        // delivery as it is now.
        DeliveryError::Superseded => Outcome::Retry("the delivery changed elsewhere".into()),
        DeliveryError::Rejected(Rejection::WrongStage(stage)) => {
            Outcome::DeadLetter(DeadLetterReason::WrongStage(stage))
        }
        DeliveryError::Rejected(Rejection::Invalid(why)) => {
            Outcome::DeadLetter(DeadLetterReason::Invalid(why))
        }
    }
}

/// What settling does with an outcome after `attempts` deliveries of the
/// message, of at most `max_attempts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Remove it from the queue.
    Complete,
    /// Put it back for another attempt after a backoff.
    RetryLater(String),
    /// Put it back for another attempt, waiting for the delivery's create
    /// (see [`await_create_delay`]).
    AwaitCreate(String),
    /// Dead-letter it.
    DeadLetter(DeadLetterReason),
    /// Put it back (a backend is down), whatever the attempt count.
    Defer(String),
}

/// Decides how to settle an outcome.
pub fn settlement(outcome: Outcome, attempts: u32, max_attempts: u32) -> Settlement {
    match outcome {
        Outcome::Done => Settlement::Complete,
        Outcome::Retry(reason) if attempts < max_attempts => Settlement::RetryLater(reason),
        Outcome::AwaitCreate(reason) if attempts < max_attempts => Settlement::AwaitCreate(reason),
        Outcome::Retry(last) | Outcome::AwaitCreate(last) => {
            Settlement::DeadLetter(DeadLetterReason::RetriesExhausted { attempts, last })
        }
        Outcome::DeadLetter(reason) => Settlement::DeadLetter(reason),
        Outcome::Unavailable(reason) => Settlement::Defer(reason),
    }
}

/// The delay before retrying a message whose delivery does not exist yet,
/// after `attempts` deliveries of at most `max_attempts`, `age` after it
/// was sent.
///
/// The create of a delivery and what follows it (a reschedule or cancel
/// sent a moment later) do not always travel together: the create may be in
/// the queue's expedited lane, or locked by an engine that died holding it,
/// invisible until its lock expires. Dead-lettering the follow-up after the
/// usual quick retries would then drop a request the client was told was
/// accepted. So the retries keep their `backoff`, but the **last** one
/// waits until the message is `grace` old (twice the lock duration: time
/// for a held create's lock to expire and for it to be taken over), so a
/// create that is coming at all has come.
pub fn await_create_delay(
    backoff: Duration,
    attempts: u32,
    max_attempts: u32,
    age: Duration,
    grace: Duration,
) -> Duration {
    if attempts.saturating_add(1) >= max_attempts {
        backoff.max(grace.saturating_sub(age))
    } else {
        backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::StoreError;

    #[test]
    fn delivery_refusals() {
        let table = [
            (
                DeliveryError::Rejected(Rejection::NotFound),
                Outcome::AwaitCreate("delivery not found".into()),
            ),
            (
                DeliveryError::Store(StoreError::Unavailable("down".into())),
                Outcome::Unavailable("delivery store: backend unavailable: down".into()),
            ),
            (
                DeliveryError::Superseded,
                Outcome::Retry("the delivery changed elsewhere".into()),
            ),
            (
                DeliveryError::Store(StoreError::Corrupt("x".into())),
                Outcome::Unavailable("delivery store: corrupt document: x".into()),
            ),
            (
                DeliveryError::Rejected(Rejection::WrongStage(DeliveryStage::HeadedToDropoff)),
                Outcome::DeadLetter(DeadLetterReason::WrongStage(DeliveryStage::HeadedToDropoff)),
            ),
            (
                DeliveryError::Rejected(Rejection::Invalid("unknown location".into())),
                Outcome::DeadLetter(DeadLetterReason::Invalid("unknown location".into())),
            ),
        ];
        for (error, outcome) in table {
            assert_eq!(refused(error.clone()), outcome, "{error:?}");
        }
    }

    #[test]
    fn a_missing_delivery_is_awaited_for_the_grace_before_the_last_attempt() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        // Early attempts keep their backoff.
        assert_eq!(
            await_create_delay(ms(400), 2, 5, ms(600), secs(10)),
            ms(400)
        );
        // The last retry waits until the message is `grace` old.
        assert_eq!(
            await_create_delay(ms(1_600), 4, 5, secs(3), secs(10)),
            secs(7)
        );
        assert_eq!(
            await_create_delay(ms(1_600), 4, 5, secs(30), secs(10)),
            ms(1_600)
        );
        // Retried until the last attempt, then dead-lettered.
        let wait = Outcome::AwaitCreate("delivery not found".into());
        assert_eq!(
            settlement(wait.clone(), 4, 5),
            Settlement::AwaitCreate("delivery not found".into())
        );
        assert!(matches!(
            settlement(wait, 5, 5),
            Settlement::DeadLetter(DeadLetterReason::RetriesExhausted { attempts: 5, .. })
        ));
    }

    #[test]
    fn call_failures_are_outages_only_when_activation_failed() {
        let table = [
            (
                CallError::Activation(ActivationError::NoSupervisor),
                Outcome::Unavailable("activation: the deliveries supervisor is not running".into()),
            ),
            (
                CallError::Activation(ActivationError::Spawn("store down".into())),
                Outcome::Unavailable(
                    "activation: delivery actor failed to start: store down".into(),
                ),
            ),
            (
                CallError::Timeout,
                Outcome::Retry("delivery actor timed out".into()),
            ),
            (
                CallError::Stopped,
                Outcome::Retry("delivery actor stopped before replying".into()),
            ),
            (
                CallError::Unreachable("gone".into()),
                Outcome::Retry("delivery actor unreachable: gone".into()),
            ),
        ];
        for (error, outcome) in table {
            assert_eq!(call_failed(&error), outcome, "{error:?}");
        }
    }

    #[test]
    fn settlements_by_attempt() {
        let retry = || Outcome::Retry("delivery not found".into());
        let table = [
            (Outcome::Done, 1, Settlement::Complete),
            (Outcome::Done, 9, Settlement::Complete),
            (
                retry(),
                1,
                Settlement::RetryLater("delivery not found".into()),
            ),
            (
                retry(),
                4,
                Settlement::RetryLater("delivery not found".into()),
            ),
            (
                retry(),
                5,
                Settlement::DeadLetter(DeadLetterReason::RetriesExhausted {
                    attempts: 5,
                    last: "delivery not found".into(),
                }),
            ),
            (
                Outcome::DeadLetter(DeadLetterReason::NotJson("eof".into())),
                1,
                Settlement::DeadLetter(DeadLetterReason::NotJson("eof".into())),
            ),
            // An outage never turns into a dead letter, however long.
            (
                Outcome::Unavailable("down".into()),
                50,
                Settlement::Defer("down".into()),
            ),
        ];
        for (outcome, attempts, settlement) in table {
            assert_eq!(
                super::settlement(outcome.clone(), attempts, 5),
                settlement,
                "{outcome:?} at attempt {attempts}"
            );
        }
    }

    #[test]
    fn reasons_read_as_before_and_have_bounded_kinds() {
        let table = [
            (
                DeadLetterReason::UnknownOperation("launch".into()),
                "unknown operation 'launch'",
                "unknown_operation",
            ),
            (
                DeadLetterReason::NotJson("expected value at line 1 column 1".into()),
                "body is not JSON: expected value at line 1 column 1",
                "not_json",
            ),
            (
                DeadLetterReason::Invalid("invalid delivery message: x".into()),
                "invalid delivery message: x",
                "invalid",
            ),
            (
                DeadLetterReason::RetriesExhausted {
                    attempts: 3,
                    last: "delivery not found".into(),
                },
                "gave up after 3 attempts: delivery not found",
                "retries_exhausted",
            ),
            (
                DeadLetterReason::WrongStage(DeliveryStage::HeadedToDropoff),
                "not possible: the delivery is already picked up",
                "wrong_stage",
            ),
            (
                DeadLetterReason::WrongStage(DeliveryStage::Completed),
                "not possible: the delivery is already completed",
                "wrong_stage",
            ),
            (
                DeadLetterReason::WrongStage(DeliveryStage::Cancelled),
                "not possible: the delivery is cancelled",
                "wrong_stage",
            ),
        ];
        for (reason, text, kind) in table {
            assert_eq!(reason.to_string(), text);
            assert_eq!(reason.kind().label(), kind);
        }
    }
}
