//! Group commit: concurrent calls of one kind share one round trip.
//!
//! Under load, many tasks write to a store at the same moment: the HTTP
//! handlers of concurrent requests, the workflow workers of a received
//! batch. Each call as its own round trip pays the network stack, the
//! client's and the server's per-command cost every time; on two cores
//! that, not the work itself, is most of what the stores cost. A
//! [`Batcher`] puts such calls in a queue; one collector takes whatever is
//! waiting (up to [`BatchConfig::max`]), optionally waits up to
//! [`BatchConfig::window`] for more, and hands the lot to one `flush`: one
//! pipeline, one multi-statement command.
//!
//! # What each caller still gets
//!
//! - **Its own answer.** `flush` returns one result per item, in order, and
//!   each caller is woken with its own: a statement refused in a batch
//!   (a fencing refusal, a lost lock, a duplicate key) fails that caller
//!   alone, and the others succeed. Callers keep retrying exactly as they
//!   did one by one.
//! - **An answer only once the store has given it.** Nothing is
//!   acknowledged early: a caller waits until the round trip that carries
//!   its item has returned.
//! - **A failed batch fails exactly its items**, each with the error (for
//!   example the connection dropped): none is silently lost, and none that
//!   was not in it is touched.
//!
//! # Latency
//!
//! With `window` zero (the default) nothing waits on purpose: at low load a
//! call goes out alone, as soon as it comes, and batches form only from
//! what queues up while earlier flushes are in flight (at most
//! [`BatchConfig::in_flight`] at once). Batches therefore grow with the
//! load and cost nothing when there is none: this is the classic group
//! commit of databases' write-ahead logs.
//!
//! The collector runs on its own task and every flush on another, so a
//! panicking flush fails its own callers (their answer channel closes) and
//! the batcher goes on. When every handle is dropped the collector ends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dronedelivery_actors::metrics as m;
use dronedelivery_actors::ports::{StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How a [`Batcher`] groups calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// At most this many calls in one flush.
    pub max: usize,
    /// How long a flush that is not full waits for more calls after the
    /// first one (zero: it never waits, see the module docs).
    pub window: Duration,
    /// Flushes that may be in flight at once. While they all are, calls
    /// queue up and form the next batch.
    pub in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max: 128,
            window: Duration::ZERO,
            in_flight: 2,
        }
    }
}

impl BatchConfig {
    /// One call per flush: the calls go out as they did before batching
    /// (kept for comparisons and for stores that gain nothing).
    pub fn unbatched() -> Self {
        Self {
            max: 1,
            window: Duration::ZERO,
            in_flight: 64,
        }
    }

    /// At most `max` calls per flush, the defaults otherwise; 1 (or 0) is
    /// [`Self::unbatched`]. What `--store-batch-max` sets.
    pub fn with_max(max: usize) -> Self {
        Self::default().capped(max)
    }

    /// This configuration with at most `max` calls per flush; 1 (or 0) is
    /// [`Self::unbatched`] whatever the rest says.
    #[must_use]
    pub fn capped(self, max: usize) -> Self {
        if max <= 1 {
            Self::unbatched()
        } else {
            Self { max, ..self }
        }
    }
}

struct Pending<T, R> {
    item: T,
    reply: oneshot::Sender<StoreResult<R>>,
}

/// Group commit of calls taking a `T` and answering an `R`: see the
/// [module docs](self).
pub struct Batcher<T, R> {
    tx: mpsc::UnboundedSender<Pending<T, R>>,
    name: &'static str,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            name: self.name,
        }
    }
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("name", &self.name).finish()
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the collector of calls named `name` (the `op` label of the
    /// batch-size metric), flushing with `flush`, which must answer one
    /// result per item, in order. Needs a Tokio runtime.
    pub fn spawn<F, Fut>(name: &'static str, config: BatchConfig, flush: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<StoreResult<R>>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(collect(name, config, rx, Arc::new(flush)));
        Self { tx, name }
    }

    /// Submits `item` and waits for its own answer.
    pub async fn submit(&self, item: T) -> StoreResult<R> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { item, reply })
            .map_err(|_| StoreError::Unavailable(format!("{}: batcher stopped", self.name)))?;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "{}: the batch carrying this call failed",
                self.name
            )))
        })
    }
}

async fn collect<T, R, F, Fut>(
    name: &'static str,
    config: BatchConfig,
    mut rx: mpsc::UnboundedReceiver<Pending<T, R>>,
    flush: Arc<F>,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<StoreResult<R>>> + Send + 'static,
{
    let max = config.max.max(1);
    let slots = Arc::new(Semaphore::new(config.in_flight.max(1)));
    loop {
        // A free slot first: while every flush is in flight, calls wait in
        // the channel and make the next batch bigger.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = Vec::with_capacity(max.min(64));
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if batch.len() < max && !config.window.is_zero() {
            let deadline = tokio::time::Instant::now() + config.window;
            while batch.len() < max {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => batch.push(p),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        metrics::histogram!(m::STORE_BATCH_SIZE, "op" => name).record(batch.len() as f64);
        let flush = flush.clone();
        tokio::spawn(async move {
            let (items, replies): (Vec<T>, Vec<_>) =
                batch.into_iter().map(|p| (p.item, p.reply)).unzip();
            let n = items.len();
            let results = flush(items).await;
            drop(slot);
            if results.len() != n {
                tracing::error!(
                    op = name,
                    expected = n,
                    got = results.len(),
                    "a batch flush answered the wrong number of results"
                );
                let e = StoreError::Unavailable(format!("{name}: batch answered badly"));
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
            for (reply, result) in replies.into_iter().zip(results) {
                // A caller that stopped waiting has nothing to be told.
                let _ = reply.send(result);
            }
        });
    }
}

/// Answers every item of a batch with the same error (the round trip
/// carrying them failed as a whole).
pub fn fail_all<R>(n: usize, error: &StoreError) -> Vec<StoreResult<R>> {
    (0..n).map(|_| Err(error.clone())).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn each_caller_gets_its_own_answer_and_calls_share_flushes() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let counted = flushes.clone();
        let batcher = Batcher::spawn(
            "test",
            BatchConfig {
                max: 64,
                window: Duration::from_millis(20),
                in_flight: 1,
            },
            move |items: Vec<u32>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    items
                        .into_iter()
                        .map(|i| {
                            if i % 7 == 0 {
                                Err(StoreError::Unavailable(format!("refused {i}")))
                            } else {
                                Ok(i * 2)
                            }
                        })
                        .collect()
                }
            },
        );
        let calls: Vec<_> = (1..=100u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(i).await) })
            })
            .collect();
        for call in calls {
            let (i, answer) = call.await.unwrap();
            match answer {
                Ok(v) => assert_eq!(v, i * 2),
                Err(e) => {
                    assert_eq!(i % 7, 0, "{e}");
                    assert!(e.to_string().contains(&format!("refused {i}")));
                }
            }
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!((2..100).contains(&n), "100 calls in {n} flushes");
    }

    #[tokio::test]
    async fn a_failed_or_wrong_flush_fails_exactly_its_callers() {
        let batcher = Batcher::spawn(
            "test",
            BatchConfig::default(),
            |items: Vec<u32>| async move {
                if items.contains(&13) {
                    fail_all(items.len(), &StoreError::Unavailable("down".into()))
                } else if items.contains(&14) {
                    Vec::new()
                } else {
                    items.into_iter().map(Ok).collect()
                }
            },
        );
        assert!(batcher.submit(13).await.is_err());
        assert!(batcher.submit(14).await.is_err());
        assert_eq!(batcher.submit(15).await.unwrap(), 15);
    }

    #[tokio::test]
    async fn a_panicking_flush_fails_its_callers_and_the_batcher_goes_on() {
        let batcher = Batcher::spawn(
            "test",
            BatchConfig::default(),
            |items: Vec<u32>| async move {
                assert!(!items.contains(&0), "boom");
                items.into_iter().map(Ok).collect()
            },
        );
        assert!(batcher.submit(0).await.is_err());
        assert_eq!(batcher.submit(1).await.unwrap(), 1);
    }
}
