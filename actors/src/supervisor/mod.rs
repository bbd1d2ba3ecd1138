//! Supervisors: OTP-style supervision (one_for_one, one_for_all,
//! rest_for_one) that ractor's core lacks.
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

/// Stops a child gracefully within a timeout (for children that need more
/// than ractor's `stop`, such as a factory that must drain its jobs).
pub type StopFn =
    Arc<dyn Fn(ActorCell, Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How to (re)start one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Child name, as operators see it (`fleet`).
    pub name: String,
    /// Start function.
    pub start: StartFn,
    /// Graceful stop; `None`: ractor's `stop_and_wait`.
    pub stop: Option<StopFn>,
}

/// Stops one child with its own stop function or `stop_and_wait`, killing
/// it if it does not stop in time.
async fn stop_child(supervisor: &str, spec: &ChildSpec, cell: ActorCell, timeout: Duration) {
    match &spec.stop {
        Some(stop) => stop(cell.clone(), timeout).await,
        None => {
            if let Err(e) = cell.stop_and_wait(Some("stop".into()), Some(timeout)).await {
                tracing::warn!(%supervisor, child = %spec.name, error = %e, "child did not stop in time");
            }
        }
    }
    if !matches!(cell.get_status(), ractor::ActorStatus::Stopped) {
        tracing::warn!(%supervisor, child = %spec.name, "killing a child that did not stop");
        cell.kill();
    }
}

/// What a supervisor restarts when one child exits (Erlang/OTP semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// Every child: they depend on each other.
    OneForAll,
    /// The child that exited and every child started after it (later
    /// children depend on earlier ones).
    RestForOne,
}

impl Strategy {
    /// The OTP name.
    pub fn name(self) -> &'static str {
        match self {
            Self::OneForOne => "one_for_one",
            Self::OneForAll => "one_for_all",
            Self::RestForOne => "rest_for_one",
        }
    }
}

/// Restart intensity: at most `max` events within `window`.
#[derive(Debug, Clone)]
pub struct Intensity {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl Intensity {
    /// A limit of `max` events per `window`.
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records an event; true when the limit is now exceeded.
    pub fn exceeded_after_one_more(&mut self) -> bool {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() > self.max
    }

    /// Events within the current window.
    pub fn count(&self) -> usize {
        self.recent.len()
    }
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
    /// How long a child may take to stop gracefully.
    pub stop_timeout: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(30),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(30),
        }
    }
}

/// Messages of a supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Start these children, in order, if they are not running (after a backoff).
    Restart(Vec<usize>),
    /// Operator restart of one child's subtree: stop it gracefully, start it again.
    RestartChild(String, RpcReplyPort<Result<(), String>>),
    /// Operator restart of every child: stop all in reverse order, start all in order.
    RestartAll(RpcReplyPort<Result<(), String>>),
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

/// Whether a supervised actor is up, as operators read it (`"running"`,
/// `"restarting"`, `"stopped"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Up.
    Running,
    /// Down and about to be started again (after its backoff).
    Restarting,
    /// Down for good (the tree is stopping, or it is not part of this role).
    Stopped,
}

impl RunState {
    /// The name operators read.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One supervised child.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChildStatus {
    /// Name.
    pub name: String,
    /// `running` or `restarting`.
    pub status: RunState,
    /// Restarts since start (failures and operator restarts).
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
    /// What to restart when a child exits.
    pub strategy: Strategy,
    /// Children in start order.
    pub children: Vec<ChildSpec>,
    /// Restart policy.
    pub policy: RestartPolicy,
}

/// A supervisor of static children with a [`Strategy`].
pub struct Supervisor;

/// State of a [`Supervisor`].
pub struct SupervisorState {
    name: String,
    strategy: Strategy,
    children: Vec<Child>,
    policy: RestartPolicy,
    intensity: Intensity,
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
            strategy: args.strategy,
            children,
            intensity: Intensity::new(args.policy.max_restarts, args.policy.window),
            policy: args.policy,
            _live: LiveActor::new("supervisor"),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let all: Vec<usize> = (0..state.children.len()).collect();
        state.stop_children(&all).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(indices) => {
                if let Err((index, reason)) = state.start_children(&myself, &indices).await {
                    state.on_exit(&myself, index, Some(reason))?;
                }
            }
            SupervisorMsg::RestartChild(name, reply) => {
                let result = match state.children.iter().position(|c| c.spec.name == name) {
                    Some(index) => state.operator_restart(&myself, &[index]).await,
                    None => Err(format!("{} has no child {name}", state.name)),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::RestartAll(reply) => {
                let all: Vec<usize> = (0..state.children.len()).collect();
                let result = state.operator_restart(&myself, &all).await;
                let _ = reply.send(result);
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
        // Children stopped on purpose were detached first, so they do not
        // match here.
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
    /// Stops the given children gracefully, in reverse start order, each
    /// detached first so its exit is not taken for a failure.
    async fn stop_children(&mut self, indices: &[usize]) {
        for &i in indices.iter().rev() {
            let Some(child) = self.children.get_mut(i) else {
                continue;
            };
            if let Some(cell) = child.cell.take() {
                stop_child(&self.name, &child.spec, cell, self.policy.stop_timeout).await;
            }
        }
    }

    /// Starts the given children in order; the first failure is returned
    /// with its index.
    async fn start_children(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        indices: &[usize],
    ) -> Result<(), (usize, String)> {
        for &i in indices {
            let Some(child) = self.children.get_mut(i) else {
                continue;
            };
            if child.cell.is_some() {
                continue;
            }
            match (child.spec.start)(myself.get_cell()).await {
                Ok(cell) => {
                    tracing::info!(supervisor = %self.name, child = %child.spec.name, "started");
                    child.cell = Some(cell);
                }
                Err(e) => return Err((i, e.to_string())),
            }
        }
        Ok(())
    }

    async fn operator_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        indices: &[usize],
    ) -> Result<(), String> {
        tracing::info!(supervisor = %self.name, children = ?indices, "operator restart");
        self.stop_children(indices).await;
        for &i in indices {
            if let Some(c) = self.children.get_mut(i) {
                c.restarts += 1;
            }
        }
        metrics::counter!(m::ACTOR_RESTARTS_TOTAL, "supervisor" => self.name.clone())
            .increment(indices.len() as u64);
        match self.start_children(myself, indices).await {
            Ok(()) => Ok(()),
            Err((i, reason)) => {
                let name = self.children[i].spec.name.clone();
                // Fall back to the automatic restart with backoff.
                let _ = self.on_exit(myself, i, Some(reason.clone()));
                Err(format!("{name} failed to start: {reason}"))
            }
        }
    }

    /// Records an exit and schedules the restarts the strategy asks for, or
    /// escalates when the intensity limit is exceeded.
    fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        index: usize,
        reason: Option<String>,
    ) -> Result<(), ActorProcessingErr> {
        let exceeded = self.intensity.exceeded_after_one_more();
        let reason = reason.unwrap_or_else(|| "unknown".into());
        let child_name = self.children[index].spec.name.clone();
        tracing::error!(supervisor = %self.name, child = %child_name, %reason, strategy = self.strategy.name(), "child exited");
        {
            let child = &mut self.children[index];
            child.restarts += 1;
            child.last_failure = Some((reason.clone(), Utc::now()));
        }
        metrics::counter!(m::ACTOR_RESTARTS_TOTAL, "supervisor" => self.name.clone()).increment(1);
        if exceeded {
            return Err(format!(
                "supervisor {} gave up: {} restarts within {:?} (last: {} — {})",
                self.name,
                self.intensity.count(),
                self.policy.window,
                child_name,
                reason
            )
            .into());
        }
        let affected: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (index..self.children.len()).collect(),
        };
        // Siblings that must restart with the failed child are stopped now,
        // in reverse order; the restart itself waits for the backoff.
        let siblings: Vec<usize> = affected.iter().copied().filter(|&i| i != index).collect();
        if !siblings.is_empty() {
            let cells: Vec<(ChildSpec, ActorCell)> = siblings
                .iter()
                .rev()
                .filter_map(|&i| {
                    let c = &mut self.children[i];
                    c.cell.take().map(|cell| (c.spec.clone(), cell))
                })
                .collect();
            let timeout = self.policy.stop_timeout;
            let name = self.name.clone();
            // Stopping waits for the siblings' own shutdown: do it off the
            // supervisor's mailbox so status queries keep being answered.
            tokio::spawn(async move {
                for (spec, cell) in cells {
                    stop_child(&name, &spec, cell, timeout).await;
                }
            });
        }
        let attempt = u32::try_from(self.intensity.count().saturating_sub(1)).unwrap_or(u32::MAX);
        let delay = crate::backoff::Backoff::new(self.policy.min_backoff, self.policy.max_backoff)
            .delay(attempt);
        myself.send_after(delay, move || SupervisorMsg::Restart(affected));
        Ok(())
    }

    fn status(&self) -> SupervisorStatus {
        SupervisorStatus {
            name: self.name.clone(),
            strategy: self.strategy.name(),
            children: self
                .children
                .iter()
                .map(|c| ChildStatus {
                    name: c.spec.name.clone(),
                    status: if c.cell.is_some() {
                        RunState::Running
                    } else {
                        RunState::Restarting
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
    intensity: Intensity,
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
            // Delivery actors are many and re-activate lazily; a storm of
            // failures means something systemic, which the parent handles
            // by restarting the whole subtree with backoff.
            intensity: Intensity::new(100, Duration::from_secs(10)),
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
            if state.intensity.exceeded_after_one_more() {
                return Err(format!(
                    "deliveries gave up: {} delivery actor failures within 10 s (last: {err})",
                    state.intensity.count()
                )
                .into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
