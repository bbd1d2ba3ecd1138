//! Strategies, backoff and intensity, with real actors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use super::*;

/// A child that fails when told to.
struct Crashy;

#[derive(Debug)]
enum CrashyMsg {
    Crash,
}

impl Actor for Crashy {
    type Msg = CrashyMsg;
    type State = ();
    type Arguments = Arc<AtomicUsize>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        starts: Arc<AtomicUsize>,
    ) -> Result<(), ActorProcessingErr> {
        starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CrashyMsg::Crash => Err("told to crash".into()),
        }
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

struct Tree {
    supervisor: ActorRef<SupervisorMsg>,
    handle: ractor::concurrency::JoinHandle<()>,
    names: Vec<String>,
    starts: Vec<Arc<AtomicUsize>>,
}

async fn tree(strategy: Strategy, n: usize, policy: RestartPolicy) -> Tree {
    let id = NEXT.fetch_add(1, Ordering::SeqCst);
    let mut names = Vec::new();
    let mut starts = Vec::new();
    let mut children = Vec::new();
    for i in 0..n {
        let name = format!("sup-test-{id}-{i}");
        let counter = Arc::new(AtomicUsize::new(0));
        let (spawn_name, spawn_counter) = (name.clone(), Arc::clone(&counter));
        let start: StartFn = Arc::new(move |sup: ActorCell| {
            let (name, counter) = (spawn_name.clone(), Arc::clone(&spawn_counter));
            Box::pin(async move {
                let (r, _) = Actor::spawn_linked(Some(name), Crashy, counter, sup).await?;
                Ok(r.get_cell())
            })
        });
        children.push(ChildSpec {
            name: format!("c{i}"),
            start,
            stop: None,
        });
        names.push(name);
        starts.push(counter);
    }
    let args = SupervisorArgs {
        name: format!("sup-test-{id}"),
        strategy,
        children,
        policy,
    };
    let (supervisor, handle) = Actor::spawn(None, Supervisor, args).await.unwrap();
    Tree {
        supervisor,
        handle,
        names,
        starts,
    }
}

fn fast() -> RestartPolicy {
    RestartPolicy {
        max_restarts: 10,
        window: Duration::from_secs(10),
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        stop_timeout: Duration::from_secs(5),
    }
}

impl Tree {
    fn crash(&self, i: usize) {
        let child = ActorRef::<CrashyMsg>::where_is(self.names[i].clone())
            .unwrap_or_else(|| panic!("{} is not running", self.names[i]));
        child.cast(CrashyMsg::Crash).unwrap();
    }

    fn starts(&self) -> Vec<usize> {
        self.starts
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }

    /// Waits until every child runs again and the start counts are `want`.
    async fn settle(&self, want: &[usize]) {
        for _ in 0..200 {
            let running = self
                .names
                .iter()
                .all(|n| ActorRef::<CrashyMsg>::where_is(n.clone()).is_some());
            if running && self.starts() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("starts were {:?}, expected {want:?}", self.starts());
    }

    async fn status(&self) -> SupervisorStatus {
        match self
            .supervisor
            .call(SupervisorMsg::Status, Some(Duration::from_secs(5)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(s)) => s,
            other => panic!("no status: {other:?}"),
        }
    }
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let t = tree(Strategy::OneForOne, 3, fast()).await;
    t.settle(&[1, 1, 1]).await;
    t.crash(1);
    t.settle(&[1, 2, 1]).await;
    let status = t.status().await;
    assert_eq!(status.strategy, "one_for_one");
    assert_eq!(status.children[1].restarts, 1);
    assert_eq!(
        status.children[1].last_failure.as_deref(),
        Some("told to crash")
    );
    assert_eq!(status.children[0].restarts, 0);
}

#[tokio::test]
async fn one_for_all_restarts_every_child() {
    let t = tree(Strategy::OneForAll, 3, fast()).await;
    t.settle(&[1, 1, 1]).await;
    t.crash(1);
    t.settle(&[2, 2, 2]).await;
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_later_ones() {
    let t = tree(Strategy::RestForOne, 3, fast()).await;
    t.settle(&[1, 1, 1]).await;
    t.crash(1);
    t.settle(&[1, 2, 2]).await;
}

#[tokio::test]
async fn operator_restart_is_graceful_and_counted() {
    let t = tree(Strategy::OneForOne, 2, fast()).await;
    t.settle(&[1, 1]).await;
    let result = t
        .supervisor
        .call(
            |r| SupervisorMsg::RestartChild("c0".into(), r),
            Some(Duration::from_secs(5)),
        )
        .await;
    assert!(
        matches!(result, Ok(ractor::rpc::CallResult::Success(Ok(())))),
        "{result:?}"
    );
    t.settle(&[2, 1]).await;
    let status = t.status().await;
    assert_eq!(status.children[0].restarts, 1);
    assert_eq!(
        status.children[0].last_failure, None,
        "an operator restart is not a failure"
    );
    let unknown = t
        .supervisor
        .call(
            |r| SupervisorMsg::RestartChild("nope".into(), r),
            Some(Duration::from_secs(5)),
        )
        .await;
    assert!(matches!(
        unknown,
        Ok(ractor::rpc::CallResult::Success(Err(_)))
    ));
}

#[tokio::test]
async fn exceeding_the_intensity_limit_escalates() {
    let policy = RestartPolicy {
        max_restarts: 2,
        ..fast()
    };
    let t = tree(Strategy::OneForOne, 1, policy).await;
    let mut expected = 1;
    t.settle(&[expected]).await;
    for _ in 0..2 {
        t.crash(0);
        expected += 1;
        t.settle(&[expected]).await;
    }
    // The third failure within the window is one too many: the supervisor
    // fails, which its own parent sees (here: its join handle ends).
    t.crash(0);
    let ended = tokio::time::timeout(Duration::from_secs(5), t.handle).await;
    assert!(ended.is_ok(), "the supervisor did not give up");
    assert_eq!(t.supervisor.get_status(), ractor::ActorStatus::Stopped);
}
