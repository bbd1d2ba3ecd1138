//! A subscription that outlives lost connections: the pattern behind the
//! ownership announcements (`ownership`) and the operator requests
//! (`control`), written once.
//!
//! Pub/sub needs a connection of its own (a subscribed connection can do
//! nothing else), and Redis keeps nothing for a subscriber that was away, so
//! the handler hears when it has just (re)subscribed and may have missed
//! messages, and decides what that means for it.

use std::future::Future;
use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;

/// First and longest pause before subscribing again.
const RESUBSCRIBE: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));

/// What a subscription hands its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Subscribed (again): messages published meanwhile were missed.
    Subscribed,
    /// A message's payload.
    Message(String),
}

/// Whether the subscription goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep listening.
    Continue,
    /// End the subscription.
    Stop,
}

/// Subscribes to `channel` through `client` and hands each [`Event`] to
/// `handle`, subscribing again with backoff (500 ms doubling to 10 s) when
/// the connection is lost. Ends when `handle` answers [`Flow::Stop`] or,
/// between connections, when `owner` is gone. `what` names the
/// subscription in the logs.
pub(crate) async fn subscribe<T, F, Fut>(
    client: ::redis::Client,
    channel: String,
    what: &'static str,
    owner: Weak<T>,
    mut handle: F,
) where
    F: FnMut(Event) -> Fut,
    Fut: Future<Output = Flow>,
{
    let mut failures = 0u32;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, ::redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                failures = 0;
                if handle(Event::Subscribed).await == Flow::Stop {
                    return;
                }
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    match msg.get_payload::<String>() {
                        Ok(payload) => {
                            if handle(Event::Message(payload)).await == Flow::Stop {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(what, error = %e, "unreadable message ignored"),
                    }
                }
                tracing::warn!(what, "lost the subscription; subscribing again");
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(what, error = %e, "cannot subscribe; retrying with backoff");
                }
            }
        }
        if owner.strong_count() == 0 {
            return;
        }
        let (first, longest) = RESUBSCRIBE;
        tokio::time::sleep(
            first
                .saturating_mul(2u32.saturating_pow(failures.min(8)))
                .min(longest),
        )
        .await;
    }
}
