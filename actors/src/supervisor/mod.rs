//! Supervisors: OTP-style one-for-one supervision that ractor's core lacks.
//!
//! ractor's default `handle_supervisor_evt` stops the parent when *any*
//! child exits and has no restart strategy. [`Supervisor`] keeps a
//! [`ChildSpec`] (name and start function) per child, starts children in
//! order, restarts a child that fails or stops with exponential backoff, and
//! escalates (fails itself, so its own parent sees it) when restarts exceed
//! `max_restarts` within `window`, the intensity limit of Erlang/OTP. On stop
//! it stops its children in reverse start order and waits for each, so their
//! `post_stop` hooks run (an exiting ractor actor would otherwise kill them).
//!
//! [`DeliveriesSupervisor`] is the dynamic supervisor of the delivery actors:
//! they are activated on demand and not restarted eagerly, because the next
//! message or read re-activates them from the store.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use serde::Serialize;

use crate::metrics::{self as m, LiveActor};

/// Starts a child linked to the given supervisor cell.
pub type StartFn = Arc<
    dyn Fn(ActorCell) -> Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>
        + Send
        + Sync,
>;

/// How to (re)start one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Child name, as operators see it (`fleet`).
    pub name: String,
    /// Start function.
    pub start: StartFn,
}

/// Restart intensity and backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Restarts allowed within `window` before escalating.
    pub max_restarts: usize,
    /// The intensity window.
    pub window: Duration,
    /// First restart delay; doubles with each restart in the window.
    pub min_backoff: Duration,
    /// Cap of the restart delay.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(30),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Messages of a supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Start child `index` (after its backoff).
    Restart(usize),
    /// Status of the supervisor and its children.
    Status(RpcReplyPort<SupervisorStatus>),
}

/// What operators see of a supervisor.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorStatus {
    /// Name.
    pub name: String,
    /// Strategy.
    pub strategy: &'static str,
    /// Children, in start order.
    pub children: Vec<ChildStatus>,
}

/// One supervised child.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChildStatus {
    /// Name.
    pub name: String,
    /// `running` or `restarting`.
    pub status: &'static str,
    /// Restarts since start.
    pub restarts: u64,
    /// The last failure, if any.
    pub last_failure: Option<String>,
    /// When it last failed.
    pub last_failure_at: Option<DateTime<Utc>>,
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    restarts: u64,
    last_failure: Option<(String, DateTime<Utc>)>,
}

/// Arguments of [`Supervisor`].
pub struct SupervisorArgs {
    /// Supervisor name.
    pub name: String,
    /// Children in start order.
    pub children: Vec<ChildSpec>,
    /// Restart policy.
    pub policy: RestartPolicy,
}

/// A one-for-one supervisor of static children.
pub struct Supervisor;

/// State of a [`Supervisor`].
pub struct SupervisorState {
    name: String,
    children: Vec<Child>,
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
    _live: LiveActor,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::with_capacity(args.children.len());
        for spec in args.children {
            // A child that cannot start at all fails the supervisor's start:
            // better to refuse to come up than to run half a tree.
            let cell = (spec.start)(myself.get_cell()).await?;
            tracing::debug!(supervisor = %args.name, child = %spec.name, "started");
            children.push(Child {
                spec,
                cell: Some(cell),
                restarts: 0,
                last_failure: None,
            });
        }
        Ok(SupervisorState {
            name: args.name,
            children,
            policy: args.policy,
            recent: VecDeque::new(),
            _live: LiveActor::new("supervisor"),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for child in state.children.iter_mut().rev() {
            if let Some(cell) = child.cell.take() {
                if let Err(e) = cell
                    .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(30)))
                    .await
                {
                    tracing::warn!(supervisor = %state.name, child = %child.spec.name, error = %e, "child did not stop in time");
                }
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
        match msg {
            SupervisorMsg::Restart(index) => {
                let Some(child) = state.children.get_mut(index) else {
                    return Ok(());
                };
                if child.cell.is_some() {
                    return Ok(());
                }
                match (child.spec.start)(myself.get_cell()).await {
                    Ok(cell) => {
                        tracing::info!(supervisor = %state.name, child = %child.spec.name, "restarted");
                        child.cell = Some(cell);
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        state.on_exit(&myself, index, Some(reason))?;
                    }
                }
            }
            SupervisorMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.or_else(|| Some("stopped".into())))
            }
            _ => return Ok(()),
        };
        let Some(index) = state
            .children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|x| x.get_id() == cell.get_id()))
        else {
            return Ok(());
        };
        state.children[index].cell = None;
        state.on_exit(&myself, index, reason)
    }
}

impl SupervisorState {
    /// Records an exit and schedules the restart, or escalates.
    fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        index: usize,
        reason: Option<String>,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let child = &mut self.children[index];
        let reason = reason.unwrap_or_else(|| "unknown".into());
        tracing::error!(supervisor = %self.name, child = %child.spec.name, %reason, "child exited");
        child.restarts += 1;
        child.last_failure = Some((reason.clone(), Utc::now()));
        metrics::counter!(m::ACTOR_RESTARTS_TOTAL, "supervisor" => self.name.clone()).increment(1);
        if self.recent.len() > self.policy.max_restarts {
            return Err(format!(
                "supervisor {} gave up: {} restarts within {:?} (last: {} — {})",
                self.name,
                self.recent.len(),
                self.policy.window,
                child.spec.name,
                reason
            )
            .into());
        }
        let exp = u32::try_from(self.recent.len().saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        let delay = self
            .policy
            .min_backoff
            .saturating_mul(1 << exp)
            .min(self.policy.max_backoff);
        myself.send_after(delay, move || SupervisorMsg::Restart(index));
        Ok(())
    }

    fn status(&self) -> SupervisorStatus {
        SupervisorStatus {
            name: self.name.clone(),
            strategy: "one_for_one",
            children: self
                .children
                .iter()
                .map(|c| ChildStatus {
                    name: c.spec.name.clone(),
                    status: if c.cell.is_some() {
                        "running"
                    } else {
                        "restarting"
                    },
                    restarts: c.restarts,
                    last_failure: c.last_failure.as_ref().map(|f| f.0.clone()),
                    last_failure_at: c.last_failure.as_ref().map(|f| f.1),
                })
                .collect(),
        }
    }
}

/// Messages of the deliveries supervisor.
#[derive(Debug)]
pub enum DeliveriesMsg {
    /// Number of failed delivery actors since start.
    Failures(RpcReplyPort<u64>),
}

/// Dynamic supervisor of delivery actors (see the module docs).
pub struct DeliveriesSupervisor;

/// Its state.
pub struct DeliveriesState {
    failures: u64,
    _live: LiveActor,
}

impl Actor for DeliveriesSupervisor {
    type Msg = DeliveriesMsg;
    type State = DeliveriesState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DeliveriesState {
            failures: 0,
            _live: LiveActor::new("supervisor"),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Let every delivery actor finish what is in its mailbox.
        myself
            .get_cell()
            .drain_children_and_wait(Some(Duration::from_secs(30)))
            .await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DeliveriesMsg::Failures(reply) => {
                let _ = reply.send(state.failures);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = event {
            state.failures += 1;
            metrics::counter!(m::ACTOR_RESTARTS_TOTAL, "supervisor" => "deliveries").increment(1);
            tracing::error!(actor = ?cell.get_name(), error = %err, "delivery actor failed; it re-activates from the store on its next message");
        }
        Ok(())
    }
}
