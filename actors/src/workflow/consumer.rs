//! The competing-consumer pool: a pump that pulls from the queue and a ractor
//! factory of workflow workers.
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

use std::sync::Arc;
use std::time::Duration;

use ractor::factory::{
    queues, routing, Factory, FactoryArguments, FactoryMessage, FactoryRef, Job, Worker,
    WorkerBuilder, WorkerId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{process, settle};
use crate::context::Context;
use crate::metrics::{self as m, LiveActor};
use crate::ports::ReceivedMessage;

/// One received message on its way through the pool, with the permit that
/// counts it against the prefetch limit.
#[derive(Debug)]
pub struct WorkflowJob {
    /// The message and its lock.
    pub received: ReceivedMessage,
    _permit: OwnedSemaphorePermit,
}

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
        Ok(ctx)
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<String, WorkflowJob>>,
        Job { key, msg, .. }: Job<String, WorkflowJob>,
        ctx: &mut Self::State,
    ) -> Result<String, ActorProcessingErr> {
        let outcome = process(ctx, &msg.received.message).await;
        settle(ctx, &msg.received, outcome).await;
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

/// Messages of the consumer actor.
#[derive(Debug)]
pub enum ConsumerMsg {
    /// Pull the next batch.
    Pump,
}

/// The `consumers` actor: owns the pump and the worker factory.
pub struct Consumers;

/// Its state.
pub struct ConsumersState {
    ctx: Arc<Context>,
    factory: FactoryRef<String, WorkflowJob>,
    permits: Arc<Semaphore>,
    failures: u32,
    _live: LiveActor,
}

impl Actor for Consumers {
    type Msg = ConsumerMsg;
    type State = ConsumersState;
    type Arguments = Arc<Context>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: Arc<Context>,
    ) -> Result<Self::State, ActorProcessingErr> {
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
            myself.get_cell(),
        )
        .await?;
        Ok(ConsumersState {
            permits: Arc::new(Semaphore::new(ctx.config.prefetch.max(1))),
            ctx,
            factory,
            failures: 0,
            _live: LiveActor::new("consumer"),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.cast(ConsumerMsg::Pump)?;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Finish the jobs already handed to the pool; their messages are then
        // settled. Anything not finished in time keeps its lock and is
        // redelivered by the broker.
        let cell = state.factory.get_cell();
        if state.factory.drain_requests().is_ok() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while cell.get_status() != ractor::ActorStatus::Stopped
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ConsumerMsg::Pump = msg;
        match state.pump().await {
            Ok(()) => {
                state.failures = 0;
                myself.cast(ConsumerMsg::Pump)?;
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let delay =
                    Duration::from_millis(100u64.saturating_mul(1 << state.failures.min(7)));
                tracing::warn!(error = %e, ?delay, "queue receive failed; backing off");
                myself.send_after(delay, || ConsumerMsg::Pump);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            // The factory is this actor's reason to exist: if it dies, fail so
            // the parent supervisor restarts the whole pool.
            SupervisionEvent::ActorFailed(_, err) => {
                Err(format!("workflow pool failed: {err}").into())
            }
            SupervisionEvent::ActorTerminated(_, _, reason) => {
                Err(format!("workflow pool stopped: {}", reason.unwrap_or_default()).into())
            }
            _ => Ok(()),
        }
    }
}

impl ConsumersState {
    async fn pump(&mut self) -> Result<(), String> {
        // Wait (bounded, so a stop request is seen) for room in the pool.
        let first = match tokio::time::timeout(
            Duration::from_secs(1),
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        let mut permits = vec![first];
        while permits.len() < 64 {
            match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let received = self
            .ctx
            .backends
            .queue
            .receive(permits.len(), Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?;
        for (received, permit) in received.into_iter().zip(permits) {
            let key = received.message.routing_key();
            metrics::gauge!(m::MESSAGES_IN_FLIGHT).increment(1.0);
            let job = WorkflowJob {
                received,
                _permit: permit,
            };
            if let Err(e) = self.factory.dispatch(key, job) {
                // The pool is stopping; the message keeps its lock and is
                // redelivered after it expires.
                metrics::gauge!(m::MESSAGES_IN_FLIGHT).decrement(1.0);
                return Err(format!("workflow pool refused a job: {e}"));
            }
        }
        Ok(())
    }
}
