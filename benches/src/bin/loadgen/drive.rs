//! The two load shapes. Closed loop: `concurrency` workers, each sending its
//! next request as soon as the previous one is answered (measures the
//! maximum throughput; latency is service time). Open loop: requests are
//! due at fixed intervals whatever the server does, and latency is counted
//! from the time a request was due (no coordinated omission).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use crate::client::{Conn, Outcome, Req, Target};
use crate::stats::Stats;

/// Generates the requests of a load.
pub trait Source: Send + Sync + 'static {
    /// Names of the request classes, reported separately (e.g. `put`, `get`).
    fn classes(&self) -> &'static [&'static str];
    /// The worker's next request, or `None` when the source is exhausted.
    fn next(&self, worker: &mut Worker) -> Option<Req>;
}

/// Per-worker state a [`Source`] may use: the worker's index, how many
/// requests it has made, and a cheap random number generator.
#[derive(Debug)]
pub struct Worker {
    pub index: usize,
    pub count: u64,
    rng: u64,
}

impl Worker {
    fn new(index: usize) -> Self {
        Self {
            index,
            count: 0,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
        }
    }

    #[cfg(test)]
    pub fn for_test(index: usize) -> Self {
        Self::new(index)
    }

    /// xorshift64*: plenty for picking ids.
    pub fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// How requests are issued.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// `concurrency` requests in flight at all times.
    Closed { concurrency: usize },
    /// `rate` requests per second in total, spread over `connections`.
    Open { rate: f64, connections: usize },
}

/// A run: shape, length (`None`: until the source is exhausted), the time
/// limit of one request, and (open loop) how long past the end requests
/// that fell behind schedule may still be sent.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub shape: Shape,
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub grace: Duration,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct RunResult {
    /// Merged figures per class, in the source's class order.
    pub classes: Vec<(&'static str, Stats)>,
    /// When the first request was due.
    pub start: Instant,
    /// When the last response arrived.
    pub last_done: Instant,
    /// Open loop: requests that were due but never sent (the generator or
    /// the server fell too far behind).
    pub unsent: u64,
    /// CPU time the generator itself used during the run (Linux only).
    pub cpu: Option<Duration>,
}

impl RunResult {
    /// Time from the start to the last response.
    pub fn elapsed(&self) -> Duration {
        self.last_done.saturating_duration_since(self.start)
    }

    /// All classes merged.
    pub fn total(&self) -> anyhow::Result<Stats> {
        let mut total = Stats::new()?;
        for (_, s) in &self.classes {
            total.merge(s)?;
        }
        Ok(total)
    }
}

struct WorkerResult {
    stats: Vec<Stats>,
    last_done: Option<Instant>,
    unsent: u64,
}

/// Runs `plan` against `target` with requests from `source`. Connections
/// are opened before the clock starts.
pub async fn run(
    target: &Arc<Target>,
    source: Arc<dyn Source>,
    plan: Plan,
) -> anyhow::Result<RunResult> {
    run_spread(std::slice::from_ref(target), source, plan).await
}

/// [`run`] with the workers spread round-robin over several servers that
/// share the same paths (e.g. two engines on one queue).
pub async fn run_spread(
    targets: &[Arc<Target>],
    source: Arc<dyn Source>,
    plan: Plan,
) -> anyhow::Result<RunResult> {
    if targets.is_empty() {
        anyhow::bail!("no target");
    }
    let workers = match plan.shape {
        Shape::Closed { concurrency } => concurrency,
        Shape::Open { connections, .. } => connections,
    }
    .max(1);
    let mut conns = Vec::with_capacity(workers);
    for i in 0..workers {
        let mut conn = Conn::new(targets[i % targets.len()].clone());
        conn.connect().await?;
        conns.push(conn);
    }
    let cpu_before = cpu_time();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for (index, conn) in conns.into_iter().enumerate() {
        let source = source.clone();
        handles.push(tokio::spawn(async move {
            match plan.shape {
                Shape::Closed { .. } => closed(index, conn, source, start, plan).await,
                Shape::Open { rate, connections } => {
                    open(index, conn, source, start, plan, rate, connections).await
                }
            }
        }));
    }
    let mut classes: Vec<(&'static str, Stats)> = Vec::new();
    for name in source.classes() {
        classes.push((name, Stats::new()?));
    }
    let mut last_done = start;
    let mut unsent = 0;
    for handle in handles {
        let result = handle.await.context("load worker panicked")??;
        for ((_, total), s) in classes.iter_mut().zip(&result.stats) {
            total.merge(s)?;
        }
        if let Some(t) = result.last_done {
            last_done = last_done.max(t);
        }
        unsent += result.unsent;
    }
    let cpu = cpu_before
        .zip(cpu_time())
        .map(|(before, after)| after.saturating_sub(before));
    Ok(RunResult {
        classes,
        start,
        last_done,
        unsent,
        cpu,
    })
}

/// CPU time this process has used so far: the sum over its threads of
/// `/proc/self/task/*/schedstat` (first field, ns on a CPU). `None` where
/// that is not readable.
pub fn cpu_time() -> Option<Duration> {
    let mut total: u64 = 0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

fn new_stats(source: &Arc<dyn Source>) -> anyhow::Result<Vec<Stats>> {
    source.classes().iter().map(|_| Stats::new()).collect()
}

/// Sends the worker's next request and records its outcome; `None` when the
/// source has no more. Latency counts from `due` when given (open loop: when
/// the request was due, with the service time recorded beside it), else
/// from the send.
async fn send_next(
    conn: &mut Conn,
    source: &Arc<dyn Source>,
    worker: &mut Worker,
    stats: &mut [Stats],
    plan: &Plan,
    due: Option<Instant>,
) -> Option<(Outcome, Instant)> {
    let req = source.next(worker)?;
    worker.count += 1;
    let class = req.class;
    let sent = Instant::now();
    let outcome = conn.send(req, plan.timeout).await;
    let done = Instant::now();
    let (latency, service) = match due {
        Some(due) => (done - due, Some(done - sent)),
        None => (done - sent, None),
    };
    if let Some(s) = stats.get_mut(class) {
        s.record(outcome, latency, service);
    }
    Some((outcome, done))
}

async fn closed(
    index: usize,
    mut conn: Conn,
    source: Arc<dyn Source>,
    start: Instant,
    plan: Plan,
) -> anyhow::Result<WorkerResult> {
    let mut stats = new_stats(&source)?;
    let mut worker = Worker::new(index);
    let end = plan.duration.map(|d| start + d);
    let mut last_done = None;
    loop {
        if end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        let Some((outcome, done)) =
            send_next(&mut conn, &source, &mut worker, &mut stats, &plan, None).await
        else {
            break;
        };
        last_done = Some(done);
        if matches!(outcome, Outcome::Error("connect")) {
            // Do not spin on a server that is not there.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(WorkerResult {
        stats,
        last_done,
        unsent: 0,
    })
}

/// Open-loop worker `index` of `connections`: its requests are due at
/// `start + (index + k * connections) / rate`, k = 0, 1, … (the wrk2
/// scheme: each connection carries an equal share of the schedule).
async fn open(
    index: usize,
    mut conn: Conn,
    source: Arc<dyn Source>,
    start: Instant,
    plan: Plan,
    rate: f64,
    connections: usize,
) -> anyhow::Result<WorkerResult> {
    let mut stats = new_stats(&source)?;
    let mut worker = Worker::new(index);
    let n = connections as f64;
    let end = plan.duration.map(|d| start + d);
    let hard_stop = end.map(|e| e + plan.grace);
    // How many requests this worker owes over the whole run.
    let owed = plan.duration.map(|d| {
        let total = d.as_secs_f64() * rate - index as f64;
        if total <= 0.0 {
            0
        } else {
            (total / n).ceil() as u64
        }
    });
    let mut last_done = None;
    let mut k: u64 = 0;
    loop {
        if owed.is_some_and(|owed| k >= owed) {
            break;
        }
        let due = start + Duration::from_secs_f64((index as f64 + k as f64 * n) / rate);
        let now = Instant::now();
        // On schedule: wait for the due time and count from the actual wake-up
        // (the timer's millisecond granularity is not the server's fault).
        // Behind schedule: send at once and count from the due time, so the
        // queueing delay the server caused is part of the latency.
        let begin = if due > now {
            tokio::time::sleep_until(due).await;
            Instant::now()
        } else {
            due
        };
        if hard_stop.is_some_and(|h| Instant::now() >= h) {
            break;
        }
        let Some((_, done)) = send_next(
            &mut conn,
            &source,
            &mut worker,
            &mut stats,
            &plan,
            Some(begin),
        )
        .await
        else {
            break;
        };
        last_done = Some(done);
        k += 1;
    }
    let unsent = owed.map_or(0, |owed| owed.saturating_sub(k));
    Ok(WorkerResult {
        stats,
        last_done,
        unsent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::Fixed;
    use hyper::Method;

    async fn hello_server() -> Arc<Target> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "Hello, World!" }))
            .route(
                "/missing",
                axum::routing::get(|| async { (hyper::StatusCode::NOT_FOUND, "no") }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Target::parse(&format!("http://{addr}")).unwrap()
    }

    fn fixed(target: &Arc<Target>, path: &str) -> Arc<dyn Source> {
        Arc::new(Fixed {
            method: Method::GET,
            uri: target.uri(path).unwrap(),
            body: None,
        })
    }

    #[tokio::test]
    async fn closed_loop_counts_every_response() {
        let target = hello_server().await;
        let plan = Plan {
            shape: Shape::Closed { concurrency: 4 },
            duration: Some(Duration::from_millis(300)),
            timeout: Duration::from_secs(5),
            grace: Duration::ZERO,
        };
        let r = run(&target, fixed(&target, "/"), plan).await.unwrap();
        let total = r.total().unwrap();
        assert!(total.sent > 10, "{total:?}");
        assert_eq!(total.ok, total.sent);
        assert_eq!(total.latency.len(), total.sent);

        let r = run(&target, fixed(&target, "/missing"), plan)
            .await
            .unwrap();
        let total = r.total().unwrap();
        assert_eq!(total.ok, 0);
        assert_eq!(total.non_2xx.get(&404), Some(&total.sent));
    }

    #[tokio::test]
    async fn open_loop_keeps_to_the_schedule() {
        let target = hello_server().await;
        let plan = Plan {
            shape: Shape::Open {
                rate: 400.0,
                connections: 8,
            },
            duration: Some(Duration::from_millis(500)),
            timeout: Duration::from_secs(5),
            grace: Duration::from_secs(5),
        };
        let r = run(&target, fixed(&target, "/"), plan).await.unwrap();
        let total = r.total().unwrap();
        // 400/s for 0.5 s: exactly 200 requests are due, all sent.
        assert_eq!(total.sent, 200);
        assert_eq!(total.ok, 200);
        assert_eq!(r.unsent, 0);
        // Paced, not as fast as possible.
        assert!(
            r.elapsed() >= Duration::from_millis(480),
            "{:?}",
            r.elapsed()
        );
    }

    #[tokio::test]
    async fn a_dead_server_gives_errors_not_latencies() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let target = Target::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let plan = Plan {
            shape: Shape::Closed { concurrency: 1 },
            duration: Some(Duration::from_millis(100)),
            timeout: Duration::from_secs(1),
            grace: Duration::ZERO,
        };
        // Connections are opened before the clock starts: no server, no run.
        assert!(run(&target, fixed(&target, "/"), plan).await.is_err());
    }
}
