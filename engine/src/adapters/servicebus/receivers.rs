//! One receiver per partition held, and the messages they received ahead.
//!
//! Each partition is its own queue, and the REST protocol long-polls one
//! queue per request, so an engine holding several partitions cannot wait
//! for "the next message of any of them" with one request. Each held
//! partition therefore gets a **receiver**: a task that long-polls that
//! partition's queue (peek-lock, [`LONG_POLL_SECS`]) and passes what it
//! locks into one bounded channel, the **inbox**, which
//! [`MessageQueue::receive`](dronedelivery_actors::ports::MessageQueue::receive)
//! drains. This is the service SDKs' prefetch, kept small and honest:
//!
//! - A receiver reserves room in the inbox *before* it peeks, so the
//!   messages locked ahead of the caller never exceed [`AHEAD`], whatever
//!   the number of partitions, and a receiver never holds a message it has
//!   nowhere to put.
//! - A message's lock keeps running while it waits in the inbox. One handed
//!   to the caller with less than half its lock left is renewed first; one
//!   whose lock was lost meanwhile is dropped (the service redelivers it).
//! - `receive` reconciles the receivers with the partitions it is asked to
//!   read: a partition given up stops its receiver, and a message of it
//!   still waiting in the inbox, or locked by the stopped receiver's last
//!   request, is unlocked at once for the partition's next holder.
//! - [`MessageQueue::close`](dronedelivery_actors::ports::MessageQueue::close)
//!   stops every receiver and unlocks the inbox, so a stopping engine leaves
//!   nothing locked behind it but the messages its workflow still settles.
//! - A receiver that fails backs off (200 ms doubling to 5 s) and records
//!   the error; `receive` reports it when nothing came from any partition,
//!   so an unreachable or unauthorised namespace is seen by the pump (and
//!   its backoff), not hidden behind empty batches.
//! - Receivers hold the adapter weakly: dropping the adapter ends them
//!   after their current request.
//!
//! An idle held partition costs one request per [`LONG_POLL_SECS`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use dronedelivery_actors::domain::ownership::PartitionId;
use dronedelivery_actors::ports::{ReceivedMessage, StoreError, StoreResult};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Inner, LockOp};

/// Long-poll timeout of a receiver's peek-lock. Bounds how long a stopping
/// engine waits for its receivers' last requests, and the idle cost.
pub(super) const LONG_POLL_SECS: u64 = 3;
/// Messages locked ahead of the caller, all partitions together.
pub(super) const AHEAD: usize = 32;
/// How often a `receive` that has nothing yet checks for failing receivers.
const FAILURE_CHECK: Duration = Duration::from_millis(250);
/// First and longest pause after a failed request.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// The receivers of one adapter.
pub(super) struct Receivers {
    tx: mpsc::Sender<ReceivedMessage>,
    inbox: tokio::sync::Mutex<mpsc::Receiver<ReceivedMessage>>,
    running: Mutex<HashMap<PartitionId, Running>>,
    closed: AtomicBool,
}

/// One partition's receiver.
struct Running {
    stop: watch::Sender<bool>,
    /// The error of its latest request; `None` once a request succeeds.
    failing: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one read or one replacement.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Receivers {
    pub(super) fn new() -> Self {
        let (tx, rx) = mpsc::channel(AHEAD);
        Self {
            tx,
            inbox: tokio::sync::Mutex::new(rx),
            running: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Starts a receiver for each partition of `held` that has none (or
    /// whose receiver ended) and stops those of partitions not in `held`.
    pub(super) fn reconcile(inner: &Arc<Inner>, held: &HashSet<PartitionId>) {
        let me = &inner.receivers;
        if me.closed.load(Ordering::Acquire) {
            return;
        }
        let mut running = lock(&me.running);
        running.retain(|partition, r| {
            let keep = held.contains(partition) && !r.task.is_finished();
            if !keep {
                let _ = r.stop.send(true);
                tracing::debug!(partition, "Service Bus receiver stopped");
            }
            keep
        });
        for &partition in held {
            if running.contains_key(&partition) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let failing = Arc::new(Mutex::new(None));
            let task = tokio::spawn(receive_loop(
                Arc::downgrade(inner),
                partition,
                stopped,
                Arc::clone(&failing),
                me.tx.clone(),
            ));
            tracing::debug!(partition, "Service Bus receiver started");
            running.insert(
                partition,
                Running {
                    stop,
                    failing,
                    task,
                },
            );
        }
    }

    /// The error of a failing receiver of one of `held`, if any.
    fn failure(&self, held: &HashSet<PartitionId>) -> Option<String> {
        lock(&self.running)
            .iter()
            .filter(|(p, _)| held.contains(p))
            .find_map(|(_, r)| lock(&r.failing).clone())
    }

    /// Stops every receiver and unlocks what they received ahead.
    pub(super) async fn close(&self, inner: &Inner) {
        self.closed.store(true, Ordering::Release);
        let tasks: Vec<JoinHandle<()>> = lock(&self.running)
            .drain()
            .map(|(_, r)| {
                let _ = r.stop.send(true);
                r.task
            })
            .collect();
        self.hand_back(inner).await;
        // A request in flight ends within its long poll; a message it locks
        // is unlocked by its receiver, or lands in the inbox just before
        // the receiver saw the stop, hence the second pass.
        let last_requests = Duration::from_secs(LONG_POLL_SECS + 2);
        if tokio::time::timeout(last_requests, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!("a Service Bus receiver did not stop in time; what it locks returns when its lock expires");
        }
        self.hand_back(inner).await;
    }

    async fn hand_back(&self, inner: &Inner) {
        let mut inbox = self.inbox.lock().await;
        let mut ahead = Vec::new();
        while let Ok(m) = inbox.try_recv() {
            ahead.push(m);
        }
        drop(inbox);
        if !ahead.is_empty() {
            tracing::info!(
                messages = ahead.len(),
                "handing back Service Bus messages received ahead"
            );
        }
        futures::future::join_all(ahead.iter().map(|m| inner.unlock_quietly(m))).await;
    }
}

impl Inner {
    /// Up to `max` messages of the partitions in `held`, waiting up to
    /// `wait` for the first.
    pub(super) async fn take(
        &self,
        held: &HashSet<PartitionId>,
        max: usize,
        wait: Duration,
    ) -> StoreResult<Vec<ReceivedMessage>> {
        self.sweep();
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        if self.receivers.closed.load(Ordering::Acquire) {
            tokio::time::sleep_until(deadline).await;
            return Ok(out);
        }
        let Ok(mut inbox) = tokio::time::timeout_at(deadline, self.receivers.inbox.lock()).await
        else {
            return Ok(out);
        };
        while out.len() < max {
            let next = if out.is_empty() {
                let slice = deadline.min(Instant::now() + FAILURE_CHECK);
                match tokio::time::timeout_at(slice, inbox.recv()).await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(_) => {
                        // Nothing yet: a failing receiver is reported now
                        // rather than at the end of a long wait.
                        if let Some(error) = self.receivers.failure(held) {
                            return Err(StoreError::Unavailable(error));
                        }
                        if slice >= deadline {
                            break;
                        }
                        continue;
                    }
                }
            } else {
                match inbox.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            if !next.partition.is_some_and(|p| held.contains(&p)) {
                // Received for a partition given up since: back to its
                // queue, for the partition's next holder.
                self.unlock_quietly(&next).await;
                continue;
            }
            if self.still_locked(&next).await {
                out.push(next);
            }
        }
        Ok(out)
    }

    /// Whether a message received ahead still holds its lock, renewing a
    /// lock past half its duration first.
    async fn still_locked(&self, m: &ReceivedMessage) -> bool {
        let Some(held) = self.held(&m.lock.0) else {
            return true;
        };
        let left = held.expires().saturating_duration_since(Instant::now());
        if left > held.lock_duration / 2 {
            return true;
        }
        match self.settle(&m.lock.0, LockOp::Renew).await {
            Ok(()) => true,
            Err(e) => {
                // `settle` forgets a lock the service says is gone.
                let lost = self.held(&m.lock.0).is_none();
                if lost {
                    tracing::debug!(message_id = %m.message.message_id, error = %e,
                        "a message received ahead lost its lock while waiting; the service redelivers it");
                }
                !lost
            }
        }
    }

    /// Unlocks a message nobody will process here.
    pub(super) async fn unlock_quietly(&self, m: &ReceivedMessage) {
        if let Err(e) = self.settle(&m.lock.0, LockOp::Unlock).await {
            tracing::debug!(message_id = %m.message.message_id, error = %e,
                "could not hand a message back; it returns when its lock expires");
        }
    }
}

fn backoff(failures: u32) -> Duration {
    let (first, longest) = BACKOFF;
    first
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(longest)
}

/// One partition's receiver: reserve room, peek-lock, pass it on.
async fn receive_loop(
    inner: Weak<Inner>,
    partition: PartitionId,
    mut stopped: watch::Receiver<bool>,
    failing: Arc<Mutex<Option<String>>>,
    tx: mpsc::Sender<ReceivedMessage>,
) {
    let mut failures = 0u32;
    loop {
        let slot = tokio::select! {
            biased;
            _ = stopped.wait_for(|s| *s) => return,
            slot = tx.reserve() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.peek(partition, LONG_POLL_SECS).await {
            Ok(got) => {
                failures = 0;
                *lock(&failing) = None;
                if let Some(m) = got {
                    if *stopped.borrow() {
                        drop(slot);
                        inner.unlock_quietly(&m).await;
                        return;
                    }
                    slot.send(m);
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(partition, error = %e, "Service Bus receive failed; retrying with backoff");
                } else {
                    tracing::debug!(partition, error = %e, failures, "Service Bus receive failed again");
                }
                *lock(&failing) = Some(e.to_string());
                drop(slot);
                drop(inner);
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(backoff(failures)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_limit() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(6), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }
}
