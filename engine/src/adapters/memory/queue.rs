//! In-process queue with Service Bus peek-lock semantics.
//!
//! It is the embedded default's broker, and it behaves like the real ones so
//! the workflow is exercised the same way: a received message is locked (not
//! deleted) until it is completed, abandoned (visible again after a delay) or
//! its lock expires; the delivery count rises on each redelivery; `send`
//! refuses new messages beyond a capacity instead of growing without bound.
//! Nothing survives the process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::ports::{
    LockToken, MessageQueue, QueueMessage, ReceivedMessage, StoreError, StoreResult,
};
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug)]
struct Entry {
    message: QueueMessage,
    delivery_count: u32,
}

#[derive(Debug, Default)]
struct Inner {
    ready: VecDeque<Entry>,
    locked: HashMap<String, (Entry, Instant)>,
    delayed: Vec<(Instant, Entry)>,
}

impl Inner {
    /// Moves expired locks and due delayed messages back to `ready`.
    fn reclaim(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .locked
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for token in expired {
            if let Some((entry, _)) = self.locked.remove(&token) {
                tracing::warn!(message_id = %entry.message.message_id, "message lock expired; redelivering");
                self.ready.push_back(entry);
            }
        }
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, entry) = self.delayed.swap_remove(i);
                self.ready.push_back(entry);
            } else {
                i += 1;
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let locks = self.locked.values().map(|(_, t)| *t);
        let delayed = self.delayed.iter().map(|(t, _)| *t);
        locks.chain(delayed).min()
    }

    fn len(&self) -> usize {
        self.ready.len() + self.locked.len() + self.delayed.len()
    }
}

/// The in-process queue.
#[derive(Debug)]
pub struct MemoryQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    lock_duration: Duration,
    capacity: usize,
}

impl MemoryQueue {
    /// A queue whose locks last `lock_duration` and which holds at most
    /// `capacity` messages (ready, locked or delayed).
    pub fn new(lock_duration: Duration, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            lock_duration,
            capacity,
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half
        // updated (every critical section is a few collection operations),
        // so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unlock(&self, lock: &LockToken) -> StoreResult<Entry> {
        self.inner()
            .locked
            .remove(&lock.0)
            .map(|(e, _)| e)
            .ok_or_else(|| {
                StoreError::Unavailable("message lock lost (expired or already settled)".into())
            })
    }
}

#[async_trait]
impl MessageQueue for MemoryQueue {
    fn backend(&self) -> &'static str {
        "in-process"
    }

    async fn send(&self, message: QueueMessage) -> StoreResult<()> {
        {
            let mut inner = self.inner();
            if inner.len() >= self.capacity {
                return Err(StoreError::Unavailable(format!(
                    "queue full ({} messages)",
                    self.capacity
                )));
            }
            inner.ready.push_back(Entry {
                message,
                delivery_count: 0,
            });
        }
        self.notify.notify_one();
        Ok(())
    }

    async fn receive(
        &self,
        _from: &[Fence],
        max: usize,
        wait: Duration,
    ) -> StoreResult<Vec<ReceivedMessage>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_due = {
                let now = Instant::now();
                let mut inner = self.inner();
                inner.reclaim(now);
                let mut out = Vec::new();
                while out.len() < max {
                    let Some(mut entry) = inner.ready.pop_front() else {
                        break;
                    };
                    entry.delivery_count += 1;
                    let token = uuid::Uuid::new_v4().to_string();
                    out.push(ReceivedMessage {
                        message: entry.message.clone(),
                        lock: LockToken(token.clone()),
                        delivery_count: entry.delivery_count,
                        partition: None,
                    });
                    inner
                        .locked
                        .insert(token, (entry, now + self.lock_duration));
                }
                if !out.is_empty() {
                    if !inner.ready.is_empty() {
                        // Let another consumer take the rest.
                        self.notify.notify_one();
                    }
                    return Ok(out);
                }
                inner.next_due()
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next_due.map_or(deadline, |t| t.min(deadline));
            let _ = tokio::time::timeout_at(until, notified).await;
        }
    }

    async fn complete(&self, lock: &LockToken) -> StoreResult<()> {
        self.unlock(lock).map(|_| ())
    }

    async fn abandon(&self, lock: &LockToken, delay: Duration) -> StoreResult<()> {
        let entry = self.unlock(lock)?;
        {
            let mut inner = self.inner();
            if delay.is_zero() {
                inner.ready.push_back(entry);
            } else {
                inner.delayed.push((Instant::now() + delay, entry));
            }
        }
        // Wake a waiting receiver so it recomputes when to look again.
        self.notify.notify_one();
        Ok(())
    }

    async fn dead_letter(&self, lock: &LockToken, _reason: &str) -> StoreResult<()> {
        self.unlock(lock).map(|_| ())
    }

    async fn renew(&self, lock: &LockToken) -> StoreResult<()> {
        let mut inner = self.inner();
        let until = Instant::now() + self.lock_duration;
        match inner.locked.get_mut(&lock.0) {
            Some((_, t)) => {
                *t = until;
                Ok(())
            }
            None => Err(StoreError::Unavailable("message lock lost".into())),
        }
    }

    async fn depth(&self) -> StoreResult<Option<u64>> {
        let inner = self.inner();
        Ok(Some((inner.ready.len() + inner.delayed.len()) as u64))
    }

    async fn unsettled(&self) -> StoreResult<Option<u64>> {
        Ok(Some(self.inner().locked.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dronedelivery_actors::ports::Operation;

    fn msg(n: u32) -> QueueMessage {
        QueueMessage::new(Operation::Cancel, &serde_json::json!(format!("d{n}")), None)
    }

    #[tokio::test]
    async fn peek_lock_complete_and_abandon() -> StoreResult<()> {
        let q = MemoryQueue::new(Duration::from_secs(30), 10);
        q.send(msg(1)).await?;
        q.send(msg(2)).await?;
        let got = q.receive(&[], 10, Duration::from_millis(10)).await?;
        assert_eq!(got.len(), 2);
        assert_eq!(q.depth().await?, Some(0));
        q.complete(&got[0].lock).await?;
        assert!(
            q.complete(&got[0].lock).await.is_err(),
            "a settled lock is gone"
        );
        q.abandon(&got[1].lock, Duration::ZERO).await?;
        let again = q.receive(&[], 10, Duration::from_millis(10)).await?;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].delivery_count, 2);
        assert_eq!(again[0].message, got[1].message);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn expired_locks_and_delays_redeliver() -> StoreResult<()> {
        let q = MemoryQueue::new(Duration::from_secs(5), 10);
        q.send(msg(1)).await?;
        let first = q.receive(&[], 1, Duration::from_millis(1)).await?;
        assert_eq!(first.len(), 1);
        // Not settled: comes back once the lock expires.
        let second = q.receive(&[], 1, Duration::from_secs(10)).await?;
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].delivery_count, 2);
        assert!(
            q.complete(&first[0].lock).await.is_err(),
            "the old lock is lost"
        );
        q.abandon(&second[0].lock, Duration::from_secs(2)).await?;
        assert!(q.receive(&[], 1, Duration::from_secs(1)).await?.is_empty());
        assert_eq!(q.receive(&[], 1, Duration::from_secs(2)).await?.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn passes_the_queue_contract() {
        let lock = Duration::from_millis(800);
        crate::adapters::contract::run_all(MemoryQueue::new(lock, 1000), lock).await;
    }

    #[tokio::test]
    async fn refuses_beyond_capacity() -> StoreResult<()> {
        let q = MemoryQueue::new(Duration::from_secs(5), 1);
        q.send(msg(1)).await?;
        assert!(q.send(msg(2)).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_on_send() -> StoreResult<()> {
        let q = MemoryQueue::new(Duration::from_secs(5), 10);
        let q2 = Arc::clone(&q);
        let waiter = tokio::spawn(async move { q2.receive(&[], 1, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.send(msg(1)).await?;
        let got = waiter
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        assert_eq!(got.len(), 1);
        Ok(())
    }
}
