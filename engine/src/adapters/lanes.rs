//! Two lanes over one queue port: an **expedited lane** read before the
//! normal one, so that the create of an expedited delivery is not stuck
//! behind a backlog of normal messages in the broker.
//!
//! # Why a second queue, not a priority field
//!
//! None of the brokers orders by priority: a Redis stream and a Service Bus
//! queue are FIFO, and so is the in-process queue that stands in for them.
//! A message's place in the line is fixed when it is sent. So the lane is a
//! second queue of the same broker (a second stream per partition, a second
//! Service Bus queue, a second in-process queue), each with the full
//! peek-lock semantics of its adapter, and [`Lanes`] puts the two behind
//! one [`MessageQueue`]:
//!
//! - [`send`](MessageQueue::send) puts a message marked
//!   [`QueueMessage::expedited`] in the expedited lane and every other
//!   message in the normal one. The gateway marks the create of an
//!   expedited delivery, and the reschedules and cancels of a delivery
//!   whose create took the lane (it remembers the create's lane until the
//!   delivery exists, then reads it from the delivery): all messages of one
//!   delivery travel in one lane, so none overtakes its create and none of
//!   an expedited delivery waits behind a normal backlog. If the expedited
//!   lane refuses a message, it goes to the normal lane (logged): late
//!   beats lost, and a follow-up that arrives before its create waits for
//!   it (the workflow's `AwaitCreate`).
//! - [`receive`](MessageQueue::receive) reads the expedited lane first,
//!   without waiting, and fills the rest of the batch from the normal lane,
//!   which is where it waits when both are empty. Every
//!   [`NORMAL_FIRST_EVERY`]th receive reads the normal lane first instead:
//!   a flood of expedited messages (any client may mark its requests
//!   expedited) slows the normal lane down but cannot stop it.
//! - What comes from the expedited lane is marked `expedited` and its lock
//!   token and broker dead-letter id carry the prefix [`EXPEDITED_TAG`], so
//!   that settling, renewing and replaying go back to the lane the message
//!   came from; the normal lane's tokens are passed through unchanged.
//!
//! # Cost and bound
//!
//! Under load the expedited lane costs one extra non-blocking read per
//! batch (an empty Redis poll, an in-memory check, or what the Service Bus
//! receivers fetched ahead). An expedited message then waits for at most
//! the messages already handed to the workflow pool (the pump's prefetch)
//! and one normal-first batch, however long the normal lane's backlog is.
//! When the engine is idle the blocking read is on the normal lane, so an
//! expedited message can wait up to one receive wait (a quarter of a second)
//! more than a normal one: a cost only where nothing is queued.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::ports::{
    DeadLetter, LockToken, MessageQueue, QueueMessage, ReceivedMessage, StoreError, StoreResult,
};

/// Prefix of the lock tokens and broker dead-letter ids of the expedited
/// lane. No adapter's own tokens start with it (Redis Streams tokens start
/// with a partition number, in-process ones are UUIDs, Service Bus ones are
/// URLs).
pub const EXPEDITED_TAG: &str = "x|";

/// One receive in this many reads the normal lane first: the normal lane's
/// guaranteed share when the expedited lane never runs dry.
pub const NORMAL_FIRST_EVERY: u64 = 4;

/// A normal and an expedited lane behind one [`MessageQueue`].
pub struct Lanes {
    normal: Arc<dyn MessageQueue>,
    expedited: Arc<dyn MessageQueue>,
    turns: AtomicU64,
}

impl Lanes {
    /// Puts `expedited` in front of `normal`. Both must be queues of the
    /// same broker with the same partitioning.
    pub fn new(normal: Arc<dyn MessageQueue>, expedited: Arc<dyn MessageQueue>) -> Arc<Self> {
        Arc::new(Self {
            normal,
            expedited,
            turns: AtomicU64::new(0),
        })
    }

    /// The lane a lock token or dead-letter id belongs to, and the id as
    /// that lane knows it.
    fn lane_of<'a>(&self, id: &'a str) -> (&dyn MessageQueue, &'a str) {
        match id.strip_prefix(EXPEDITED_TAG) {
            Some(inner) => (self.expedited.as_ref(), inner),
            None => (self.normal.as_ref(), id),
        }
    }

    /// The lane a lock belongs to and the lock as that lane knows it; a
    /// normal lane's lock is passed through without a copy.
    fn settle_target<'a>(&self, lock: &'a LockToken) -> (&dyn MessageQueue, Cow<'a, LockToken>) {
        match lock.0.strip_prefix(EXPEDITED_TAG) {
            Some(inner) => (
                self.expedited.as_ref(),
                Cow::Owned(LockToken(inner.to_owned())),
            ),
            None => (self.normal.as_ref(), Cow::Borrowed(lock)),
        }
    }

    /// Receives from the expedited lane, marking what comes out of it. A
    /// failing expedited lane does not stop the normal one: its error is
    /// logged and counts as nothing received (`ping` reports it).
    async fn receive_expedited(&self, from: &[Fence], max: usize) -> Vec<ReceivedMessage> {
        match self.expedited.receive(from, max, Duration::ZERO).await {
            Ok(got) => got
                .into_iter()
                .map(|mut r| {
                    r.message.expedited = true;
                    r.lock = LockToken(format!("{EXPEDITED_TAG}{}", r.lock.0));
                    r
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "expedited lane receive failed; reading the normal lane");
                Vec::new()
            }
        }
    }
}

fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

#[async_trait]
impl MessageQueue for Lanes {
    fn backend(&self) -> &'static str {
        self.normal.backend()
    }

    fn partitioned(&self) -> bool {
        self.normal.partitioned()
    }

    async fn send(&self, message: QueueMessage) -> StoreResult<()> {
        if !message.expedited {
            return self.normal.send(message).await;
        }
        match self.expedited.send(message.clone()).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(message_id = %message.message_id, error = %e, "expedited lane refused a message; sending it in the normal lane");
                self.normal.send(message).await
            }
        }
    }

    async fn receive(
        &self,
        from: &[Fence],
        max: usize,
        wait: Duration,
    ) -> StoreResult<Vec<ReceivedMessage>> {
        let turn = self.turns.fetch_add(1, Ordering::Relaxed);
        if turn % NORMAL_FIRST_EVERY == NORMAL_FIRST_EVERY - 1 {
            let mut got = self.normal.receive(from, max, Duration::ZERO).await?;
            if got.len() < max {
                got.extend(self.receive_expedited(from, max - got.len()).await);
            }
            return Ok(got);
        }
        let mut got = self.receive_expedited(from, max).await;
        if got.len() < max {
            // Wait on the normal lane only when the expedited one had
            // nothing: messages in hand are not held back.
            let wait = if got.is_empty() { wait } else { Duration::ZERO };
            match self.normal.receive(from, max - got.len(), wait).await {
                Ok(more) => got.extend(more),
                // The expedited messages in hand are processed; the next
                // receive meets the error again if it persists.
                Err(e) if !got.is_empty() => {
                    tracing::warn!(error = %e, "normal lane receive failed");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    async fn complete(&self, lock: &LockToken) -> StoreResult<()> {
        let (lane, lock) = self.settle_target(lock);
        lane.complete(&lock).await
    }

    async fn abandon(&self, lock: &LockToken, delay: Duration) -> StoreResult<()> {
        let (lane, lock) = self.settle_target(lock);
        lane.abandon(&lock, delay).await
    }

    async fn dead_letter(&self, lock: &LockToken, reason: &str) -> StoreResult<()> {
        let (lane, lock) = self.settle_target(lock);
        lane.dead_letter(&lock, reason).await
    }

    async fn renew(&self, lock: &LockToken) -> StoreResult<()> {
        let (lane, lock) = self.settle_target(lock);
        lane.renew(&lock).await
    }

    async fn depth(&self) -> StoreResult<Option<u64>> {
        let (normal, expedited) = tokio::join!(self.normal.depth(), self.expedited.depth());
        Ok(sum(normal?, expedited?))
    }

    async fn dead_letters(&self, max: usize) -> StoreResult<Vec<DeadLetter>> {
        let mut letters = self.normal.dead_letters(max).await?;
        if letters.len() < max {
            let expedited = self.expedited.dead_letters(max - letters.len()).await?;
            letters.extend(expedited.into_iter().map(|mut l| {
                l.id = format!("{EXPEDITED_TAG}{}", l.id);
                l
            }));
        }
        Ok(letters)
    }

    async fn replay_dead_letter(&self, id: &str) -> StoreResult<Option<QueueMessage>> {
        let (lane, inner) = self.lane_of(id);
        lane.replay_dead_letter(inner).await
    }

    async fn ping(&self) -> StoreResult<()> {
        let (normal, expedited) = tokio::join!(self.normal.ping(), self.expedited.ping());
        normal?;
        expedited.map_err(|e| match e {
            StoreError::Unavailable(why) => {
                StoreError::Unavailable(format!("expedited lane: {why}"))
            }
            other => other,
        })
    }

    async fn unsettled(&self) -> StoreResult<Option<u64>> {
        let (normal, expedited) = tokio::join!(self.normal.unsettled(), self.expedited.unsettled());
        Ok(sum(normal?, expedited?))
    }

    async fn close(&self) {
        tokio::join!(self.normal.close(), self.expedited.close());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryQueue;

    #[tokio::test]
    async fn in_process_lanes_pass_the_queue_contract_and_overtake_a_backlog() {
        let lock = Duration::from_millis(800);
        let lanes = || Lanes::new(MemoryQueue::new(lock, 1000), MemoryQueue::new(lock, 1000));
        crate::adapters::contract::run_all_with_lanes(lanes(), lanes(), lock).await;
    }

    #[test]
    fn depths_add_up_and_unknown_stays_unknown() {
        assert_eq!(sum(None, None), None);
        assert_eq!(sum(Some(3), None), Some(3));
        assert_eq!(sum(Some(3), Some(4)), Some(7));
    }
}
