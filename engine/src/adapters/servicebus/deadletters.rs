//! Service Bus's own dead-letter queue: each partition queue's
//! `$DeadLetterQueue` subqueue, listed and replayed over the REST protocol.
//!
//! The service moves a message there on its own: past the queue's
//! `MaxDeliveryCount`, or when its time to live runs out on a queue with
//! `DeadLetteringOnMessageExpiration`. (The engine's own dead letters, with
//! the workflow's reason, are kept in the dead-letter store: the REST
//! protocol has no dead-letter operation.) Azure's tools and metrics see
//! these messages where they are; the engine lists them beside its own and
//! replays them.
//!
//! The REST protocol cannot browse a queue, only lock its head: a listing
//! peek-locks the messages of each subqueue one request each (every
//! partition at once), reads them and unlocks them all. Two listings at the
//! same moment therefore see each other's locked messages as missing, and
//! each read counts as a delivery in the message's `DeliveryCount` (the
//! subqueue has no delivery limit). A replay locks messages of the
//! partition's subqueue until it finds the one asked for (unlocking the
//! others), sends it back to the queue, then completes it on the subqueue:
//! a crash between the two replays it twice, which the workflow absorbs
//! (messages are idempotent by delivery id).
//!
//! | Operation | Request |
//! |---|---|
//! | read one | `POST /{partition queue}/$DeadLetterQueue/messages/head?timeout=1` (peek-lock; `204` when empty) |
//! | put back after reading | `PUT {lock url}` (unlock) |
//! | remove after a replay | `DELETE {lock url}` (complete) |
//!
//! The reason is the message's custom property `DeadLetterReason` (for
//! example `MaxDeliveryCountExceeded`, `TTLExpiredException`) and
//! `DeadLetterErrorDescription`, as the service sets them.

use azure_core::headers::{self, Headers};
use azure_core::{Method, Request, Url};
use chrono::Utc;
use dronedelivery_actors::domain::ownership::PartitionId;
use dronedelivery_actors::ports::{DeadLetter, DeadLetterSource, StoreError, StoreResult};

use super::transport::RAW_BROKER_PROPERTIES;
use super::wire::{failed, header, parse_http_date, property_value, ReceivedProperties};
use super::{Inner, LockOp};

/// Path segment of a queue's dead-letter subqueue.
pub(super) const SUBQUEUE: &str = "$DeadLetterQueue";
/// Long poll of one read (seconds): a subqueue is read until it answers
/// that nothing is left.
const POLL_SECS: u64 = 1;
/// Most messages locked while looking for the one to replay.
const SCAN_LIMIT: usize = 1000;
/// Prefix of the ids of Service Bus's dead letters (`servicebus:{queue}:{sequence number}`).
const ID_PREFIX: &str = "servicebus:";

/// A dead-lettered message this adapter has locked.
pub(super) struct Locked {
    pub(super) letter: DeadLetter,
    pub(super) lock_url: String,
    pub(super) sequence_number: i64,
}

/// The partition queue and sequence number an id names.
fn parse_id(id: &str) -> Option<(&str, i64)> {
    let rest = id.strip_prefix(ID_PREFIX)?;
    let (queue, seq) = rest.rsplit_once(':')?;
    Some((queue, seq.parse().ok()?))
}

impl Inner {
    /// Reads (peek-locks) the next message of `partition`'s subqueue.
    async fn dead_letter_peek(&self, partition: PartitionId) -> StoreResult<Option<Locked>> {
        let name = self.entity(partition).name.clone();
        let url = Url::parse(&format!(
            "{}/{name}/{SUBQUEUE}/messages/head?timeout={POLL_SECS}",
            self.base
        ))
        .map_err(super::config::invalid)?;
        let mut request = Request::new(url, Method::Post);
        let token = self.token(partition).map_err(|e| failed("sign", &e))?;
        request.insert_header(headers::AUTHORIZATION, token);
        request.insert_header(headers::CONTENT_LENGTH, "0");
        let response = self
            .http
            .execute_request(&request)
            .await
            .map_err(|e| failed("dead-letter peek-lock", &e))?;
        let (status, headers, body) = response.deconstruct();
        let body = body
            .collect()
            .await
            .map_err(|e| failed("dead-letter peek-lock", &e))?;
        let body = String::from_utf8_lossy(&body).into_owned();
        match u16::from(status) {
            200 | 201 => {}
            204 => return Ok(None),
            s @ (401 | 403) => {
                return Err(StoreError::Unavailable(format!(
                    "Service Bus dead-letter peek-lock failed: HTTP {s}: not authorized \
                     (the key needs the Listen right)"
                )))
            }
            404 => return Err(super::missing_queue(&name, self.entities.len())),
            s => {
                let detail: String = body.chars().take(200).collect();
                return Err(StoreError::Unavailable(format!(
                    "Service Bus dead-letter peek-lock failed: HTTP {s}: {detail}"
                )));
            }
        }
        let props = broker_properties(&headers);
        let Some(sequence_number) = props.sequence_number else {
            return Err(StoreError::Corrupt(
                "a dead-lettered message came without a SequenceNumber; \
                 it returns to its subqueue when its lock expires"
                    .into(),
            ));
        };
        let lock_url = self
            .lock_url_of(&headers, &props, &format!("{name}/{SUBQUEUE}"))
            .ok_or_else(|| {
                StoreError::Corrupt(
                    "a dead-lettered message came without Location nor LockToken".into(),
                )
            })?;
        let message = super::message_of(&headers, &props, body, sequence_number.to_string());
        let seen = message.enqueued_at;
        let reason = header(&headers, "DeadLetterReason")
            .map(property_value)
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "dead-lettered by Service Bus".to_owned());
        let description = header(&headers, "DeadLetterErrorDescription")
            .map(property_value)
            .filter(|d| !d.is_empty());
        Ok(Some(Locked {
            letter: DeadLetter {
                id: format!("{ID_PREFIX}{name}:{sequence_number}"),
                message,
                reason,
                attempts: props.delivery_count.unwrap_or(1),
                first_seen: seen,
                last_seen: seen,
                source: DeadLetterSource::Broker,
                description,
            },
            lock_url,
            sequence_number,
        }))
    }

    /// Gives locks taken for reading back at once (a failure only delays
    /// the message until its lock expires).
    async fn unlock_all(&self, locked: Vec<Locked>) {
        for l in locked {
            if let Err(e) = self.lock_request(&l.lock_url, None, LockOp::Unlock).await {
                tracing::debug!(error = %super::wire::describe(&e), dead_letter = %l.letter.id,
                    "could not unlock a dead-lettered message after reading it; it comes back when its lock expires");
            }
        }
    }

    /// At most `max` messages of `partition`'s subqueue, locked.
    async fn dead_letters_of(
        &self,
        partition: PartitionId,
        max: usize,
    ) -> StoreResult<Vec<Locked>> {
        let mut locked = Vec::new();
        while locked.len() < max {
            match self.dead_letter_peek(partition).await {
                Ok(Some(l)) => locked.push(l),
                Ok(None) => break,
                Err(e) => {
                    self.unlock_all(locked).await;
                    return Err(e);
                }
            }
        }
        Ok(locked)
    }

    /// Up to `max` dead letters over every partition's subqueue (read, then
    /// unlocked).
    pub(super) async fn dead_letters(&self, max: usize) -> StoreResult<Vec<DeadLetter>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let partitions = u32::try_from(self.entities.len()).unwrap_or(1);
        let reads =
            futures::future::join_all((0..partitions).map(|p| self.dead_letters_of(p, max))).await;
        let mut letters = Vec::new();
        let mut first_error = None;
        for read in reads {
            match read {
                Ok(locked) => {
                    letters.extend(locked.iter().map(|l| l.letter.clone()));
                    self.unlock_all(locked).await;
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        letters.truncate(max);
        Ok(letters)
    }

    /// Finds and locks the dead letter `id`; `None` when no subqueue of
    /// these queues holds it.
    pub(super) async fn find_dead_letter(&self, id: &str) -> StoreResult<Option<Locked>> {
        let Some((queue, sequence_number)) = parse_id(id) else {
            return Ok(None);
        };
        let Some(&partition) = self.by_name.get(&queue.to_ascii_lowercase()) else {
            return Ok(None);
        };
        let mut passed = Vec::new();
        let mut found = None;
        while passed.len() < SCAN_LIMIT {
            match self.dead_letter_peek(partition).await {
                Ok(Some(l)) if l.sequence_number == sequence_number => {
                    found = Some(l);
                    break;
                }
                Ok(Some(l)) => passed.push(l),
                Ok(None) => break,
                Err(e) => {
                    self.unlock_all(passed).await;
                    return Err(e);
                }
            }
        }
        self.unlock_all(passed).await;
        Ok(found)
    }

    /// Removes a replayed dead letter from its subqueue.
    pub(super) async fn remove_dead_letter(&self, locked: &Locked) -> StoreResult<()> {
        self.lock_request(&locked.lock_url, None, LockOp::Complete)
            .await
            .map_err(|e| failed("dead-letter complete", &e))
    }

    /// Puts a dead letter that could not be replayed back at once.
    pub(super) async fn release_dead_letter(&self, locked: Locked) {
        self.unlock_all(vec![locked]).await;
    }
}

/// The `BrokerProperties` of a peek-lock answer (renamed by the transport).
pub(super) fn broker_properties(headers: &Headers) -> ReceivedProperties {
    let raw = headers
        .get_optional_str(&RAW_BROKER_PROPERTIES)
        .or_else(|| header(headers, "BrokerProperties"));
    match raw.map(serde_json::from_str) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "undecodable BrokerProperties on a received message");
            ReceivedProperties::default()
        }
        None => ReceivedProperties::default(),
    }
}

/// When the service says a message was enqueued; now when it does not.
pub(super) fn enqueued_at(props: &ReceivedProperties) -> chrono::DateTime<Utc> {
    props
        .enqueued_time_utc
        .as_deref()
        .and_then(parse_http_date)
        .unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_queue_and_the_sequence_number() {
        assert_eq!(
            parse_id("servicebus:deliveries-3:42"),
            Some(("deliveries-3", 42))
        );
        assert_eq!(parse_id("servicebus:a:b:7"), Some(("a:b", 7)));
        assert_eq!(parse_id("servicebus:deliveries:x"), None);
        assert_eq!(parse_id("9b2f3c1e-message-id"), None);
    }
}
