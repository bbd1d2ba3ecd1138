//! Sends: one message per request, or concurrent sends to one queue grouped
//! into the REST protocol's **batch send**.
//!
//! Under load the gateway sends many messages at the same moment, each as
//! its own `POST /{queue}/messages`: a request, a SAS check and a store
//! write at the service per message. Concurrent sends to one partition's
//! queue therefore go through a [`Batcher`] (group commit, see
//! [`crate::adapters::batch`]): whatever waits while earlier sends are in
//! flight goes out as one
//!
//! ```text
//! POST /{queue}/messages
//! Content-Type: application/vnd.microsoft.servicebus.json
//!
//! [{"Body":"{…}","BrokerProperties":{"MessageId":"…","ContentType":"application/json"},
//!   "UserProperties":{"operation":"delivery","Diagnostic-Id":"…"}}, …]
//! ```
//!
//! (Microsoft's *Send Message Batch*). The service enqueues a batch as one
//! operation: all its messages, or none and an error status. So:
//!
//! - every caller is answered only once the request carrying its message
//!   was answered `201`: its `202` still means *its* message is in the
//!   queue;
//! - a refused batch fails exactly its callers (the gateway answers them
//!   `503`, they retry with their idempotency key), never another one;
//! - a batch refused as too large (`403`/`413`: the namespace's message
//!   size limit, which also bounds a batch) is sent again one message per
//!   request, so a batch never fails a message that alone would pass.
//!
//! A batch request carries at most [`MAX_BATCH_BYTES`] of JSON, under the
//! 256 KiB a Standard namespace allows; a message that alone is larger goes
//! as a single send, as before batching. A lone send (no load) is the same
//! single-message request as before: batching costs nothing when there is
//! nothing to group. Custom properties travel as `UserProperties` (string
//! values), and the service delivers them as it does a single send's
//! headers, so receivers cannot tell how a message was sent.

use std::collections::BTreeMap;
use std::sync::Weak;

use azure_core::error::Error as AzureError;
use azure_core::headers;
use azure_core::{Method, Request, Url};
use azure_messaging_servicebus::service_bus::{SendMessageOptions, SettableBrokerProperties};
use dronedelivery_actors::domain::ownership::PartitionId;
use dronedelivery_actors::ports::{QueueMessage, StoreError, StoreResult};
use serde::Serialize;

use super::wire::{describe, failed, quoted, status_of};
use super::{missing_queue, Inner, DIAGNOSTIC_ID, OPERATION, TRACEPARENT, TRACESTATE};
use crate::adapters::batch::{fail_all, BatchConfig, Batcher};

/// `Content-Type` of a batch send.
pub(super) const BATCH_CONTENT_TYPE: &str = "application/vnd.microsoft.servicebus.json";
/// Most JSON text in one batch request: under the 256 KiB a Standard
/// namespace allows per message, and so per batch, leaving room for what
/// the service adds to each message.
pub(super) const MAX_BATCH_BYTES: usize = 192 * 1024;
/// Content type of every body (the JSON text of the message).
const BODY_CONTENT_TYPE: &str = "application/json";

/// The sends of one partition's queue, grouped (see the module docs).
pub(super) type Sender = Batcher<QueueMessage, ()>;

/// Starts the sender of `partition`'s queue. It holds `inner` weakly: the
/// adapter owns its senders, not the reverse, so dropping the adapter
/// ends them.
pub(super) fn spawn(inner: Weak<Inner>, partition: PartitionId, config: BatchConfig) -> Sender {
    Batcher::spawn(
        "servicebus_send",
        config,
        move |messages: Vec<QueueMessage>| {
            let inner = inner.clone();
            async move {
                match inner.upgrade() {
                    Some(inner) => inner.send_all(partition, messages).await,
                    None => fail_all(
                        messages.len(),
                        &StoreError::Unavailable("the Service Bus queue was closed".into()),
                    ),
                }
            }
        },
    )
}

/// One message of a batch send, as the protocol spells it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Batched<'a> {
    body: &'a str,
    broker_properties: BatchedBroker<'a>,
    user_properties: BTreeMap<&'static str, &'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BatchedBroker<'a> {
    message_id: &'a str,
    content_type: &'static str,
}

/// The custom properties of `message`: the `operation` the original's
/// producer wrote, the correlation id, the W3C trace context.
fn custom_properties(message: &QueueMessage) -> BTreeMap<&'static str, &str> {
    let mut custom = BTreeMap::new();
    custom.insert(OPERATION, message.operation.as_str());
    if let Some(id) = &message.correlation_id {
        custom.insert(DIAGNOSTIC_ID, id.as_str());
    }
    if let Some(traceparent) = &message.traceparent {
        custom.insert(TRACEPARENT, traceparent.as_str());
    }
    if let Some(tracestate) = &message.tracestate {
        custom.insert(TRACESTATE, tracestate.as_str());
    }
    custom
}

/// `message` as one element of a batch's JSON array.
fn batched(message: &QueueMessage) -> String {
    let element = Batched {
        body: &message.body,
        broker_properties: BatchedBroker {
            message_id: &message.message_id,
            content_type: BODY_CONTENT_TYPE,
        },
        user_properties: custom_properties(message),
    };
    // Strings and maps of strings: serializing cannot fail.
    serde_json::to_string(&element).unwrap_or_default()
}

/// Splits `messages` into groups whose JSON arrays stay within `limit`
/// bytes, in order; a message larger than `limit` alone is a group of its
/// own (it goes as a single send). Each message comes with its element.
fn chunks(messages: Vec<QueueMessage>, limit: usize) -> Vec<Vec<(QueueMessage, String)>> {
    let mut out: Vec<Vec<(QueueMessage, String)>> = Vec::new();
    let mut size = 0;
    for message in messages {
        let element = batched(&message);
        // `[` + elements + `,` between them + `]`.
        let grows = element.len() + 1;
        match out.last_mut() {
            Some(last) if !last.is_empty() && size + grows <= limit => {
                size += grows;
                last.push((message, element));
            }
            _ => {
                size = element.len() + 2;
                out.push(vec![(message, element)]);
            }
        }
    }
    out
}

impl Inner {
    /// Sends `message` alone: the single-message request (body as is,
    /// `BrokerProperties` and custom properties as headers).
    pub(super) async fn send_one(
        &self,
        partition: PartitionId,
        message: &QueueMessage,
    ) -> StoreResult<()> {
        let custom = custom_properties(message)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), quoted(v)))
            .collect();
        let options = SendMessageOptions {
            content_type: Some(BODY_CONTENT_TYPE.to_owned()),
            broker_properties: Some(SettableBrokerProperties {
                message_id: Some(message.message_id.clone()),
                ..SettableBrokerProperties::default()
            }),
            custom_properties: Some(custom),
        };
        self.entity(partition)
            .client
            .send_message(&message.body, Some(options))
            .await
            .map_err(|e| self.send_error(partition, "send", &e))
    }

    /// What a refused send of `partition`'s queue means: the queue is
    /// missing (`404`/`410`, named in the error), or `what` failed.
    fn send_error(&self, partition: PartitionId, what: &str, e: &AzureError) -> StoreError {
        match status_of(e) {
            Some(404 | 410) => missing_queue(&self.entity(partition).name, self.entities.len()),
            _ => failed(what, e),
        }
    }

    /// What a [`Sender`] flushes: `messages`, as few requests as the size
    /// limit allows (sent concurrently), one answer per message in order.
    pub(super) async fn send_all(
        &self,
        partition: PartitionId,
        messages: Vec<QueueMessage>,
    ) -> Vec<StoreResult<()>> {
        // A lone message (no load) goes as a single send, without being
        // written as a batch element first.
        if let [message] = messages.as_slice() {
            return vec![self.send_one(partition, message).await];
        }
        let requests = chunks(messages, MAX_BATCH_BYTES)
            .into_iter()
            .map(|chunk| self.send_chunk(partition, chunk));
        futures::future::join_all(requests)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn send_chunk(
        &self,
        partition: PartitionId,
        chunk: Vec<(QueueMessage, String)>,
    ) -> Vec<StoreResult<()>> {
        if let [(message, _)] = chunk.as_slice() {
            return vec![self.send_one(partition, message).await];
        }
        let n = chunk.len();
        match self.post_batch(partition, &chunk).await {
            Ok(()) => (0..n).map(|_| Ok(())).collect(),
            Err(e) if matches!(status_of(&e), Some(403 | 413)) => {
                tracing::warn!(messages = n, error = %describe(&e),
                    "Service Bus refused a batch send; sending its messages one by one");
                let alone = chunk.iter().map(|(m, _)| self.send_one(partition, m));
                futures::future::join_all(alone).await
            }
            Err(e) => fail_all(n, &self.send_error(partition, "batch send", &e)),
        }
    }

    async fn post_batch(
        &self,
        partition: PartitionId,
        chunk: &[(QueueMessage, String)],
    ) -> azure_core::Result<()> {
        let entity = self.entity(partition);
        let url = Url::parse(&format!("{}/{}/messages", self.base, entity.name))?;
        let mut body =
            String::with_capacity(chunk.iter().map(|(_, e)| e.len() + 1).sum::<usize>() + 2);
        body.push('[');
        for (i, (_, element)) in chunk.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(element);
        }
        body.push(']');
        let mut request = Request::new(url, Method::Post);
        request.insert_header(headers::AUTHORIZATION, self.token(partition)?);
        request.insert_header(headers::CONTENT_TYPE, BATCH_CONTENT_TYPE);
        request.set_body(body);
        self.http
            .execute_request_check_status(&request)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use dronedelivery_actors::ports::Operation;

    use super::*;

    fn message(body_len: usize) -> QueueMessage {
        let mut m = QueueMessage::new(
            Operation::Delivery,
            &serde_json::json!({"deliveryId": "d1", "pad": "x".repeat(body_len)}),
            Some("corr-1".into()),
        );
        m.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        m
    }

    #[test]
    fn an_element_carries_body_id_and_properties_as_the_protocol_spells_them() {
        let m = message(3);
        let v: serde_json::Value = serde_json::from_str(&batched(&m)).unwrap();
        assert_eq!(v["Body"], m.body.as_str());
        assert_eq!(v["BrokerProperties"]["MessageId"], m.message_id.as_str());
        assert_eq!(v["BrokerProperties"]["ContentType"], "application/json");
        assert_eq!(v["UserProperties"]["operation"], "delivery");
        assert_eq!(v["UserProperties"]["Diagnostic-Id"], "corr-1");
        assert_eq!(
            v["UserProperties"]["traceparent"],
            m.traceparent.as_deref().unwrap()
        );
        assert!(v["UserProperties"].get("tracestate").is_none());
    }

    #[test]
    fn chunks_keep_the_order_and_stay_within_the_limit() {
        let messages: Vec<_> = (0..50).map(|i| message(100 * (i % 7))).collect();
        let ids: Vec<_> = messages.iter().map(|m| m.message_id.clone()).collect();
        let limit = 2_000;
        let groups = chunks(messages, limit);
        assert!(groups.len() > 1);
        for group in &groups {
            let json = format!(
                "[{}]",
                group
                    .iter()
                    .map(|(_, e)| e.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            assert!(json.len() <= limit || group.len() == 1, "{}", json.len());
            let parsed: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
            assert_eq!(parsed.len(), group.len());
        }
        let flat: Vec<_> = groups
            .into_iter()
            .flatten()
            .map(|(m, _)| m.message_id)
            .collect();
        assert_eq!(flat, ids);
    }

    #[test]
    fn a_message_larger_than_the_limit_goes_alone() {
        let groups = chunks(vec![message(10), message(5_000), message(10)], 2_000);
        let sizes: Vec<_> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }
}
