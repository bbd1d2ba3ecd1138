//! The competing-consumer pool: the `workflow` factory of workflow workers
//! and the `pump` that feeds it from the queue, both under the `consumers`
//! supervisor (one_for_all: a pump without its pool, or a pool without its
//! pump, is useless).
//!
//! The pump holds one semaphore permit per message it has received and not
//! yet settled, so it never holds more than `prefetch` messages: the queue,
//! not process memory, absorbs bursts (ractor mailboxes are unbounded, the
//! semaphore is the back-pressure). Jobs are keyed by delivery id and routed
//! with `KeyPersistentRouting`, so the messages of one delivery are processed
//! in order within a process.
//!
//! A factory replaces a crashed worker but loses its in-flight job; here that
//! job's message is simply not settled, so its lock expires and the broker
//! redelivers it. Workers never return `Err` for a bad message: that is an
//! [`Outcome`](super::Outcome), not a crash.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::factory::{
    queues, routing, Factory, FactoryArguments, FactoryMessage, FactoryRef, Job, Worker,
    WorkerBuilder, WorkerId,
};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

use super::{process, settle};
use crate::backoff::Backoff;
use crate::context::Context;
use crate::domain::ownership::partition_of;
use crate::metrics::{self as m, LiveActor};
use crate::ports::ReceivedMessage;

/// How long one receive waits for a first message. It also bounds how late
/// the pump starts reading a partition the engine has just gained (the
/// partitions read are fixed for the length of a receive), so it is short:
/// an idle engine's extra cost is a few blocking reads a second.
const RECEIVE_WAIT: Duration = Duration::from_millis(250);

/// Messages taken in one receive, at most.
const RECEIVE_BATCH: usize = 64;

/// How much room the pump waits for before it receives again: a quarter of
/// the prefetch, at most one receive's `batch`.
///
/// Waiting for the first free place instead would make a busy engine
/// receive one message at a time: with the pool full (its workers behind
/// the queue), every settled message frees one place, and each place would
/// cost a receive of its own, a round trip to the broker and, on Redis, a
/// script over every partition's stream. Waiting for a quarter keeps three
/// quarters of the prefetch queued for the workers, so they never run dry,
/// and takes the backlog in full batches. An idle pool has all its room
/// free, so a message after a quiet spell is taken at once.
fn refill_mark(prefetch: usize, batch: usize) -> usize {
    (prefetch / 4).clamp(1, batch.max(1))
}

/// Pause after a failed receive: 100 ms doubling up to 12.8 s.
const RECEIVE_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_millis(12_800));

/// One received message on its way through the pool, with the permit that
/// counts it against the prefetch limit.
#[derive(Debug)]
pub struct WorkflowJob {
    /// The message and its lock.
    pub received: ReceivedMessage,
    _permit: OwnedSemaphorePermit,
}

/// Workers started since the engine started: more than the pool width means
/// workers crashed and were replaced.
pub static WORKER_STARTS: AtomicU64 = AtomicU64::new(0);

/// Factory worker running the workflow.
pub struct WorkflowWorker;

impl Worker for WorkflowWorker {
    type Key = String;
    type Message = WorkflowJob;
    type Arguments = Arc<Context>;
    type State = Arc<Context>;

    async fn pre_start(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<String, WorkflowJob>>,
        ctx: Arc<Context>,
    ) -> Result<Self::State, ActorProcessingErr> {
        WORKER_STARTS.fetch_add(1, Ordering::Relaxed);
        Ok(ctx)
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<String, WorkflowJob>>,
        Job { key, msg, .. }: Job<String, WorkflowJob>,
        ctx: &mut Self::State,
    ) -> Result<String, ActorProcessingErr> {
        let span = crate::tracecontext::span_for(&msg.received.message);
        async {
            let outcome = process(ctx, &msg.received.message).await;
            settle(ctx, &msg.received, outcome).await;
        }
        .instrument(span)
        .await;
        ctx.in_flight.remove(&msg.received.lock);
        drop(msg);
        metrics::gauge!(m::MESSAGES_IN_FLIGHT).decrement(1.0);
        Ok(key)
    }
}

struct Builder(Arc<Context>);

impl WorkerBuilder<WorkflowWorker, Arc<Context>> for Builder {
    fn build(&mut self, _wid: WorkerId) -> (WorkflowWorker, Arc<Context>) {
        (WorkflowWorker, Arc::clone(&self.0))
    }
}

type WorkflowFactory = Factory<
    String,
    WorkflowJob,
    Arc<Context>,
    WorkflowWorker,
    routing::KeyPersistentRouting<String, WorkflowJob>,
    queues::DefaultQueue<String, WorkflowJob>,
>;

/// Starts the `workflow` factory linked to `supervisor`.
pub async fn start_workflow(
    ctx: Arc<Context>,
    supervisor: ActorCell,
) -> Result<ActorCell, SpawnErr> {
    let args = FactoryArguments::builder()
        .worker_builder(Box::new(Builder(Arc::clone(&ctx))))
        .queue(Default::default())
        .router(Default::default())
        .num_initial_workers(ctx.config.consumers.max(1))
        .build();
    let (factory, _) = Actor::spawn_linked(
        Some(ctx.name("workflow")),
        WorkflowFactory::default(),
        args,
        supervisor,
    )
    .await?;
    Ok(factory.get_cell())
}

/// Stops the `workflow` factory gracefully: it finishes the jobs it holds
/// (their messages are then settled), then stops.
pub async fn drain_workflow(cell: ActorCell, timeout: Duration) {
    let factory: FactoryRef<String, WorkflowJob> = ActorRef::from(cell.clone());
    if factory.drain_requests().is_ok() {
        let deadline = tokio::time::Instant::now() + timeout;
        while cell.get_status() != ractor::ActorStatus::Stopped
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Messages of the pump.
#[derive(Debug)]
pub enum PumpMsg {
    /// Pull the next batch.
    Pump,
}

/// The `pump`: pulls messages from the queue into the `workflow` factory.
pub struct Pump;

/// Its state.
pub struct PumpState {
    ctx: Arc<Context>,
    permits: Arc<Semaphore>,
    failures: u32,
    _live: LiveActor,
}

impl Actor for Pump {
    type Msg = PumpMsg;
    type State = PumpState;
    type Arguments = Arc<Context>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: Arc<Context>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(PumpState {
            permits: Arc::new(Semaphore::new(ctx.config.prefetch.max(1))),
            ctx,
            failures: 0,
            _live: LiveActor::new("pump"),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.cast(PumpMsg::Pump)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let PumpMsg::Pump = msg;
        if !state.ctx.breakers.all_allow() {
            // A store is down: leave the messages in the queue until the
            // breaker lets a trial through.
            myself.send_after(Duration::from_millis(250), || PumpMsg::Pump);
            return Ok(());
        }
        match state.pump().await {
            Ok(()) => {
                state.failures = 0;
                myself.cast(PumpMsg::Pump)?;
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let delay = RECEIVE_BACKOFF.delay(state.failures);
                tracing::warn!(error = %e, ?delay, "queue receive failed; backing off");
                myself.send_after(delay, || PumpMsg::Pump);
            }
        }
        Ok(())
    }
}

impl PumpState {
    /// Whether a message of a partitioned queue is this engine's to process.
    /// A message in the stream of another partition than its own (queued
    /// before the queue was partitioned, or under another partition count)
    /// is moved to its own; one of a partition this engine no longer holds
    /// (lost since the receive) is given back at once, for the new holder.
    async fn belongs_here(&self, key: &str, received: &ReceivedMessage) -> bool {
        let queue = &self.ctx.backends.queue;
        let home = partition_of(key, self.ctx.config.ownership.partitions);
        let lock = &received.lock;
        let outcome = if received.partition != Some(home) {
            tracing::info!(message_id = %received.message.message_id, from = ?received.partition, to = home, "moving a message to its partition's stream");
            // Sent before it is removed: a failure in between leaves a copy
            // in both streams, which the idempotent workflow tolerates,
            // rather than none.
            match queue.send(received.message.clone()).await {
                Ok(()) => queue.complete(lock).await,
                Err(e) => Err(e),
            }
        } else if self.ctx.owned.fence(home).is_none() {
            tracing::debug!(message_id = %received.message.message_id, partition = home, "partition no longer held; giving the message back");
            queue.abandon(lock, Duration::ZERO).await
        } else {
            return true;
        };
        if let Err(e) = outcome {
            // The lock expires and the message is redelivered; nothing is lost.
            tracing::warn!(message_id = %received.message.message_id, error = %e, "could not hand a message on");
        }
        false
    }

    async fn pump(&mut self) -> Result<(), String> {
        let Some(factory) =
            ActorRef::<FactoryMessage<String, WorkflowJob>>::where_is(self.ctx.name("workflow"))
        else {
            return Err("the workflow pool is not running".into());
        };
        // Wait (bounded, so a stop request is seen) for room in the pool:
        // for a whole refill's worth, not for the first free place (see
        // `refill_mark`).
        let batch = if self.ctx.breakers.trial_only() {
            1
        } else {
            RECEIVE_BATCH
        };
        let refill = refill_mark(self.ctx.config.prefetch, batch);
        let mut room = match tokio::time::timeout(
            Duration::from_secs(1),
            Arc::clone(&self.permits).acquire_many_owned(refill as u32),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        while room.num_permits() < batch {
            match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(p) => room.merge(p),
                Err(_) => break,
            }
        }
        let queue = &self.ctx.backends.queue;
        let from = self.ctx.owned.fences();
        let received = queue
            .receive(&from, room.num_permits(), RECEIVE_WAIT)
            .await
            .map_err(|e| e.to_string())?;
        // One permit per message, each released when its message is
        // settled; the room not filled is released here.
        let permits = std::iter::from_fn(|| room.split(1));
        for (received, permit) in received.into_iter().zip(permits) {
            let key = received.message.routing_key();
            if queue.partitioned() && !self.belongs_here(&key, &received).await {
                continue;
            }
            if received.delivery_count <= 1 {
                let lag = (chrono::Utc::now() - received.message.enqueued_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0;
                let lane = if received.message.expedited {
                    "expedited"
                } else {
                    "normal"
                };
                metrics::histogram!(m::QUEUE_LAG_SECONDS, "lane" => lane).record(lag);
            }
            self.ctx.in_flight.insert(&received.lock);
            metrics::gauge!(m::MESSAGES_IN_FLIGHT).increment(1.0);
            let job = WorkflowJob {
                received,
                _permit: permit,
            };
            if let Err(e) = factory.dispatch(key, job) {
                // The pool is stopping; the message stays in `in_flight` and
                // is abandoned at shutdown (or its lock expires).
                metrics::gauge!(m::MESSAGES_IN_FLIGHT).decrement(1.0);
                return Err(format!("workflow pool refused a job: {e}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{refill_mark, RECEIVE_BATCH};

    #[test]
    fn a_busy_pump_waits_for_a_quarter_of_its_prefetch_up_to_a_batch() {
        // The default prefetch: a full receive's worth.
        assert_eq!(refill_mark(256, RECEIVE_BATCH), 64);
        assert_eq!(refill_mark(100_000, RECEIVE_BATCH), RECEIVE_BATCH);
        // Small prefetches keep three quarters queued for the workers.
        assert_eq!(refill_mark(40, RECEIVE_BATCH), 10);
        assert_eq!(refill_mark(8, RECEIVE_BATCH), 2);
        // Never waits for nothing, nor for more than one receive takes.
        assert_eq!(refill_mark(3, RECEIVE_BATCH), 1);
        assert_eq!(refill_mark(1, RECEIVE_BATCH), 1);
        assert_eq!(refill_mark(256, 1), 1);
        assert_eq!(refill_mark(256, 0), 1);
    }
}
