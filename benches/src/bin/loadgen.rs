//! `loadgen`: the end-to-end load generator of the drone delivery engine
//! (driven by `benches/run.sh`, which starts the engines, runs every
//! scenario and writes the results).
//!
//! Every subcommand but `hello` prints exactly one JSON object on stdout
//! (the figures) and a human summary on stderr.
//!
//! | subcommand | load |
//! |---|---|
//! | `hello --listen ADDR` | serves an axum hello world (`GET /`), the baseline of what an HTTP server on this machine can do; runs until killed |
//! | `hello --listen ADDR --redis-url U --stream S` | the same, plus `POST /api/deliveryrequests`: one `XADD` of the body to `S`, then `202` with the body echoed: the least any ingestion on Redis Streams does, the ceiling of ingestion on this machine |
//! | `http --url U --method M [--body-file F]` | one fixed request, closed or open loop |
//! | `ingest --url U` | `POST /api/deliveryrequests`, each with a unique package id |
//! | `e2e --url U --count N` | N delivery requests, then waits until the engines' workflow has completed N more delivery messages |
//! | `packages --url U --flavor engine\|node` | `PUT` then `GET` of package ids drawn from a fixed pool |
//! | `cleanup` | deletes a run's Redis keys and MongoDB database |
//!
//! # Closed and open loop
//!
//! *Closed loop* (`--mode closed --concurrency N`): N workers, each on its
//! own keep-alive connection, each sending its next request as soon as the
//! previous one is answered. The server sets the pace, so this finds the
//! maximum throughput; the latencies are service times at that saturation.
//!
//! *Open loop* (`--mode open --rate R --connections C`): requests are due on
//! a fixed schedule, R per second in total, whatever the server does. Each
//! of the C connections owns every C-th slot of the schedule (request k of
//! connection i is due at `start + (i + k·C) / R`, the wrk2 scheme).
//!
//! # Coordinated omission
//!
//! A closed-loop client that waits for a slow response also stops sending
//! the requests that would have suffered from it: the stall is recorded
//! once instead of for every request that real users would have sent
//! meanwhile, and the percentiles look far better than what users see. The
//! open loop avoids this by measuring each request's latency from the time
//! it was *due*, not from when it was actually sent: a connection that falls
//! behind sends its late requests at once and their queueing delay counts.
//! A request sent on schedule is timed from the timer's actual wake-up
//! instead, so the timer's millisecond granularity is not charged to the
//! server. `service_ms` gives the time from the actual send, for comparison.
//! Requests still unsent `--grace` seconds after the end are reported as
//! `unsent` rather than silently dropped.
//!
//! # How end-to-end completion is tracked
//!
//! `e2e` reads `dronedelivery_queue_messages_total{operation="delivery",
//! outcome="completed"}` (summed over all series and over every
//! `--metrics-url`, so split gateway/worker setups and several engines
//! work) before it starts, posts N delivery requests closed-loop, and polls
//! the counters every 100 ms until they have risen by the number of
//! requests accepted (or everything accepted is settled one way or another,
//! or `--timeout` passes after the last post). A delivery message is
//! counted completed once the workflow has stored the delivery and handed it
//! to the fleet: the original workflow service's unit of work. Then
//! `deliveries_per_sec = accepted / (time of the poll that saw the last
//! completion − time of the first post)`, and `drain_s` is how long that
//! poll came after the last post was answered. Drone flights finished in
//! the meantime are reported as `flights_completed`.
//!
//! # Cost of the generator
//!
//! The generator shares the machine with the servers it measures, so it
//! does as little as it can per request: a bare hyper HTTP/1.1 connection
//! per worker (no pool, no redirects, no decompression), bodies made before
//! the clock starts, per-worker histograms merged at the end, and by default
//! a single-threaded runtime (`--threads N` for more).

#[path = "loadgen/client.rs"]
mod client;
#[path = "loadgen/drive.rs"]
mod drive;
#[path = "loadgen/prom.rs"]
mod prom;
#[path = "loadgen/requests.rs"]
mod requests;
#[path = "loadgen/stats.rs"]
mod stats;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use dronedelivery_benches::cleanup;
use hyper::Method;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::Target;
use crate::drive::{Plan, RunResult, Shape, Source};
use crate::prom::{Sample, Scraper};
use crate::requests::{Fixed, Flavor, Ingest, Packages};
use crate::stats::round;

/// Load generator of the drone delivery engine's end-to-end benchmarks.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    /// Runtime worker threads (default: 1 for loads, one per core for `hello`).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Bearer token sent with every request (an engine with `--auth-mode jwt`).
    #[arg(long, global = true)]
    bearer: Option<String>,
    /// The `ownerId` of every delivery request (the owner of `--bearer`'s
    /// token); default: 100 owners in turn.
    #[arg(long, global = true)]
    owner: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve `GET /` → "Hello, World!" (axum) until killed.
    Hello {
        /// Address to listen on (port 0: any free port; the JSON line says which).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Also serve `POST /api/deliveryrequests` by one `XADD` of the body
        /// to `--stream` on this Redis, answering `202` with the body: the
        /// stores' share of ingestion with nothing else around it.
        #[arg(long, requires = "stream")]
        redis_url: Option<String>,
        /// The stream of `--redis-url` (deleted when the server starts).
        #[arg(long)]
        stream: Option<String>,
    },
    /// A fixed request, closed or open loop.
    Http(HttpArgs),
    /// `POST /api/deliveryrequests` with unique package ids.
    Ingest(IngestArgs),
    /// Delivery requests through the whole workflow.
    E2e(E2eArgs),
    /// `PUT` then `GET` of packages.
    Packages(PackagesArgs),
    /// Delete a run's Redis keys and MongoDB database.
    Cleanup(CleanupArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Closed,
    Open,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Base URL of the server.
    #[arg(long)]
    url: String,
    /// `closed` (N requests in flight) or `open` (fixed request rate).
    #[arg(long, value_enum, default_value = "closed")]
    mode: Mode,
    /// Closed loop: requests in flight (one connection each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop: requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: connections the schedule is spread over (default: `--concurrency`).
    #[arg(long)]
    connections: Option<usize>,
    /// Length of the run, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Time limit of one request, seconds.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// Open loop: how long past the end late requests may still be sent, seconds.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
}

impl LoadArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        let shape = match self.mode {
            Mode::Closed => Shape::Closed {
                concurrency: self.concurrency.max(1),
            },
            Mode::Open => {
                let rate = self.rate.context("--mode open needs --rate")?;
                if rate.is_nan() || rate <= 0.0 {
                    bail!("--rate must be positive");
                }
                Shape::Open {
                    rate,
                    connections: self.connections.unwrap_or(self.concurrency).max(1),
                }
            }
        };
        Ok(Plan {
            shape,
            duration: Some(secs(self.duration, "--duration")?),
            timeout: secs(self.request_timeout, "--request-timeout")?,
            grace: secs(self.grace, "--grace")?,
        })
    }

    /// Requests the run will most likely send (to size pre-generated bodies).
    fn expected_requests(&self, closed_default: usize) -> usize {
        match (self.mode, self.rate) {
            (Mode::Open, Some(rate)) => (rate * self.duration).ceil() as usize + 1,
            _ => closed_default,
        }
    }

    /// The JSON description of the load.
    fn describe(&self, kind: &str) -> Value {
        let mut v = json!({
            "kind": kind,
            "url": self.url,
            "mode": match self.mode { Mode::Closed => "closed", Mode::Open => "open" },
            "duration_s": self.duration,
        });
        match self.mode {
            Mode::Closed => v["concurrency"] = json!(self.concurrency),
            Mode::Open => {
                v["rate"] = json!(self.rate);
                v["connections"] = json!(self.connections.unwrap_or(self.concurrency));
            }
        }
        v
    }
}

fn secs(s: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{name}: bad number of seconds {s}"))
}

#[derive(Debug, Args)]
struct HttpArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Path appended to the URL's own path.
    #[arg(long, default_value = "")]
    path: String,
    /// File whose content is the request body (sent as JSON).
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
struct IngestArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Bodies made before a closed-loop run (reused from the start if the
    /// run sends more; an open-loop run makes rate × duration).
    #[arg(long, default_value_t = 200_000)]
    bodies: usize,
    /// Prefix of the package ids (default: unique per run).
    #[arg(long)]
    id_prefix: Option<String>,
}

#[derive(Debug, Args)]
struct E2eArgs {
    /// Base URL of the engine (or gateway) taking the delivery requests;
    /// repeat the flag to spread the posting connections over several.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Metrics endpoints of every engine running the workflow (base or
    /// `/metrics` URLs; repeat the flag; summed). Default: `--url`.
    #[arg(long = "metrics-url")]
    metrics_urls: Vec<String>,
    /// Delivery requests to post.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Requests in flight while posting.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to wait for the workflow after the last post, seconds.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// Time limit of one request, seconds.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// Prefix of the package ids (default: unique per run).
    #[arg(long)]
    id_prefix: Option<String>,
}

#[derive(Debug, Args)]
struct PackagesArgs {
    /// Base URL of the package service.
    #[arg(long)]
    url: String,
    /// Length of the run, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Requests in flight (one connection each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Which service: its paths and body shape.
    #[arg(long, value_enum, default_value = "engine")]
    flavor: Flavor,
    /// Package ids in the pool.
    #[arg(long, default_value_t = 10_000)]
    pool: usize,
    /// Time limit of one request, seconds.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// Prefix of the package ids (default: unique per run).
    #[arg(long)]
    id_prefix: Option<String>,
}

#[derive(Debug, Args)]
struct CleanupArgs {
    /// Redis server.
    #[arg(long)]
    redis_url: Option<String>,
    /// Key prefix (`--redis-prefix` of the engines) whose keys are deleted.
    #[arg(long)]
    redis_prefix: Option<String>,
    /// MongoDB URI naming the database to drop.
    #[arg(long)]
    mongodb_uri: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(owner) = &cli.owner {
        let _ = requests::OWNER.set(owner.clone());
    }
    if let Some(token) = &cli.bearer {
        match hyper::header::HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(v) => {
                let _ = client::BEARER.set(v);
            }
            Err(_) => {
                eprintln!("loadgen: --bearer is not a valid header value");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let hello = matches!(cli.command, Cmd::Hello { .. });
    let runtime = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None if hello => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let result = runtime
        .context("tokio runtime")
        .and_then(|rt| rt.block_on(run(cli.command, cli.threads.unwrap_or(1))));
    match result {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Records the generator's runtime threads in its result.
fn with_threads(mut v: Value, threads: usize) -> Value {
    v["loadgen_threads"] = json!(threads);
    v
}

async fn run(cmd: Cmd, threads: usize) -> anyhow::Result<Value> {
    match cmd {
        Cmd::Hello {
            listen,
            redis_url,
            stream,
        } => hello(&listen, redis_url.zip(stream)).await,
        Cmd::Http(a) => http(a).await.map(|v| with_threads(v, threads)),
        Cmd::Ingest(a) => ingest(a).await.map(|v| with_threads(v, threads)),
        Cmd::E2e(a) => e2e(a).await.map(|v| with_threads(v, threads)),
        Cmd::Packages(a) => packages(a).await.map(|v| with_threads(v, threads)),
        Cmd::Cleanup(a) => cleanup(a).await,
    }
}

async fn hello(listen: &str, xadd: Option<(String, String)>) -> anyhow::Result<Value> {
    let mut app = axum::Router::new().route("/", axum::routing::get(|| async { "Hello, World!" }));
    if let Some((url, stream)) = &xadd {
        let mut conn = redis::Client::open(url.as_str())
            .context("--redis-url")?
            .get_multiplexed_async_connection()
            .await
            .context("connect to Redis")?;
        let _: i64 = redis::cmd("DEL").arg(stream).query_async(&mut conn).await?;
        let state = Arc::new(HelloXadd {
            conn,
            stream: stream.clone(),
            next: std::sync::atomic::AtomicU64::new(0),
        });
        app = app.route(
            "/api/deliveryrequests",
            axum::routing::post(hello_xadd).with_state(state),
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let addr = listener.local_addr()?;
    // The address goes out before serving, as the one JSON line.
    println!(
        "{}",
        json!({"kind": "hello", "listen": addr.to_string(), "xadd": xadd.is_some()})
    );
    eprintln!("hello world on http://{addr}/");
    axum::serve(listener, app).await?;
    bail!("server stopped")
}

/// What `hello --redis-url` needs to answer a delivery request.
struct HelloXadd {
    conn: redis::aio::MultiplexedConnection,
    stream: String,
    next: std::sync::atomic::AtomicU64,
}

/// One `XADD` of the request's body (with an id and the operation, as the
/// engine's stream entries have), then `202` with the body: what any
/// ingestion on Redis Streams must do at the least.
async fn hello_xadd(
    axum::extract::State(s): axum::extract::State<Arc<HelloXadd>>,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let id = s.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut conn = s.conn.clone();
    let added: redis::RedisResult<String> = redis::cmd("XADD")
        .arg(&s.stream)
        .arg("*")
        .arg("id")
        .arg(id)
        .arg("operation")
        .arg("delivery")
        .arg("body")
        .arg(body.as_ref())
        .query_async(&mut conn)
        .await;
    match added {
        Ok(_) => (
            hyper::StatusCode::ACCEPTED,
            [(hyper::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (hyper::StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// A tag making package ids unique to this run.
fn run_tag(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("lg{}-{:x}", std::process::id(), nanos % 0xFFFF_FFFF)
    })
}

/// The generator's own CPU use during the run: seconds, and the share of
/// one core over the run.
fn add_cpu(v: &mut Value, result: &RunResult) {
    if let Some(cpu) = result.cpu {
        let secs = cpu.as_secs_f64();
        v["loadgen_cpu_s"] = json!(round(secs, 3));
        v["loadgen_cpu_share"] = json!(round(secs / result.elapsed().as_secs_f64().max(1e-9), 3));
        eprintln!(
            "  loadgen used {secs:.2} CPU-s ({:.0}% of one core)",
            100.0 * secs / result.elapsed().as_secs_f64().max(1e-9)
        );
    }
}

/// The figures of a duration-bounded run: its description, the totals and
/// each class (when there are several).
fn report(mut v: Value, result: &RunResult) -> anyhow::Result<Value> {
    let elapsed = result.elapsed();
    let total = result.total()?;
    if let (Value::Object(dst), Value::Object(src)) = (&mut v, total.to_json(elapsed)) {
        dst.extend(src);
    }
    v["elapsed_s"] = json!(round(elapsed.as_secs_f64(), 3));
    v["unsent"] = json!(result.unsent);
    add_cpu(&mut v, result);
    if result.classes.len() > 1 {
        for (name, s) in &result.classes {
            v[*name] = s.to_json(elapsed);
        }
    }
    eprintln!("{}", total.human(elapsed));
    if result.classes.len() > 1 {
        for (name, s) in &result.classes {
            eprintln!("  {name}: {}", s.human(elapsed));
        }
    }
    if result.unsent > 0 {
        eprintln!(
            "  {} requests fell too far behind schedule and were not sent",
            result.unsent
        );
    }
    Ok(v)
}

async fn http(a: HttpArgs) -> anyhow::Result<Value> {
    let target = Target::parse(&a.load.url)?;
    let method = Method::from_bytes(a.method.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("bad method {}", a.method))?;
    let body = match &a.body_file {
        Some(f) => Some(Bytes::from(
            std::fs::read(f).with_context(|| format!("read {}", f.display()))?,
        )),
        None => None,
    };
    let path = if a.path.is_empty() && target.uri("").is_err() {
        "/".to_owned()
    } else {
        a.path.clone()
    };
    let source = Arc::new(Fixed {
        method: method.clone(),
        uri: target.uri(&path)?,
        body,
    });
    let plan = a.load.plan()?;
    eprintln!("http: {method} {}{path}, {:?}", a.load.url, plan.shape);
    let result = drive::run(&target, source, plan).await?;
    let mut v = a.load.describe("http");
    v["method"] = json!(method.as_str());
    report(v, &result)
}

async fn ingest(a: IngestArgs) -> anyhow::Result<Value> {
    let target = Target::parse(&a.load.url)?;
    let plan = a.load.plan()?;
    let tag = run_tag(a.id_prefix.clone());
    let made = Instant::now();
    let source = Arc::new(Ingest::new(
        &target,
        &tag,
        a.load.expected_requests(a.bodies),
        None,
    )?);
    eprintln!(
        "ingest: {} bodies made in {:.2}s; {:?}",
        source.bodies(),
        made.elapsed().as_secs_f64(),
        plan.shape
    );
    let result = drive::run(&target, source.clone() as Arc<dyn Source>, plan).await?;
    let mut v = a.load.describe("ingest");
    v["bodies"] = json!(source.bodies());
    v["bodies_reused"] = json!(source.used() > source.bodies());
    report(v, &result)
}

async fn packages(a: PackagesArgs) -> anyhow::Result<Value> {
    let target = Target::parse(&a.url)?;
    let tag = run_tag(a.id_prefix.clone());
    let source = Arc::new(Packages::new(&target, a.flavor, &tag, a.pool)?);
    let plan = Plan {
        shape: Shape::Closed {
            concurrency: a.concurrency.max(1),
        },
        duration: Some(secs(a.duration, "--duration")?),
        timeout: secs(a.request_timeout, "--request-timeout")?,
        grace: Duration::ZERO,
    };
    eprintln!(
        "packages ({:?}): {} ids, {:?}",
        a.flavor, a.pool, plan.shape
    );
    let result = drive::run(&target, source, plan).await?;
    let v = json!({
        "kind": "packages",
        "url": a.url,
        "flavor": format!("{:?}", a.flavor).to_lowercase(),
        "mode": "closed",
        "concurrency": a.concurrency,
        "duration_s": a.duration,
        "pool": a.pool,
    });
    report(v, &result)
}

async fn e2e(a: E2eArgs) -> anyhow::Result<Value> {
    let targets = a
        .urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let target = targets.first().context("no --url")?;
    let metrics_urls = if a.metrics_urls.is_empty() {
        a.urls.clone()
    } else {
        a.metrics_urls.clone()
    };
    let scraper = Arc::new(Scraper::new(&metrics_urls)?);
    let tag = run_tag(a.id_prefix.clone());
    let made = Instant::now();
    let source = Arc::new(Ingest::new(target, &tag, a.count, Some(a.count))?);
    eprintln!(
        "e2e: {} bodies made in {:.2}s; posting with {} in flight",
        a.count,
        made.elapsed().as_secs_f64(),
        a.concurrency
    );
    let before = scraper.sample().await.context("first metrics scrape")?;

    // The poller follows the counters from the first post on; it learns how
    // many completions to wait for once the posts are done.
    let (goal_tx, goal_rx) = watch::channel::<Option<(u64, Instant)>>(None);
    let timeout = secs(a.timeout, "--timeout")?;
    let poller = tokio::spawn(poll(scraper.clone(), before, goal_rx, timeout));

    let plan = Plan {
        shape: Shape::Closed {
            concurrency: a.concurrency.max(1),
        },
        duration: None,
        timeout: secs(a.request_timeout, "--request-timeout")?,
        grace: Duration::ZERO,
    };
    let result = drive::run_spread(&targets, source, plan).await?;
    let posted = result.total()?;
    let post_elapsed = result.elapsed();
    let last_post = result.last_done;
    eprint!("e2e posts: ");
    eprintln!("{}", posted.human(post_elapsed));
    let accepted = posted.ok;
    goal_tx
        .send(Some((accepted, last_post)))
        .map_err(|_| anyhow::anyhow!("metrics poller stopped early"))?;
    let polled = poller.await.context("metrics poller panicked")??;

    let delta = polled.last.since(&before);
    let completed = delta.completed.max(0.0) as u64;
    let done_at = polled.done_at.unwrap_or(polled.last_at);
    let total_s = done_at
        .saturating_duration_since(result.start)
        .as_secs_f64();
    let drain_s = done_at.saturating_duration_since(last_post).as_secs_f64();
    let per_sec = if total_s > 0.0 {
        completed as f64 / total_s
    } else {
        0.0
    };
    let mut v = json!({
        "kind": "e2e",
        "urls": a.urls,
        "metrics_urls": metrics_urls,
        "count": a.count,
        "concurrency": a.concurrency,
        "accepted": accepted,
        "ingest": posted.to_json(post_elapsed),
        "post_s": round(post_elapsed.as_secs_f64(), 3),
        "completed": completed,
        "retried": delta.retried,
        "deferred": delta.deferred,
        "deadlettered": delta.deadlettered,
        "flights_completed": delta.flights_completed,
        "timed_out": polled.done_at.is_none(),
        "scrape_errors": polled.scrape_errors,
        "total_s": round(total_s, 3),
        "drain_s": round(drain_s, 3),
        "deliveries_per_sec": round(per_sec, 1),
    });
    v["ingest"]["loadgen_cpu_s"] = json!(result.cpu.map(|c| round(c.as_secs_f64(), 3)));
    eprintln!(
        "e2e: {accepted} accepted, {completed} completed in {total_s:.2}s ({per_sec:.0} deliveries/s), drained {drain_s:.2}s after the last post{}",
        if polled.done_at.is_none() { "; TIMED OUT" } else { "" }
    );
    Ok(v)
}

struct Polled {
    /// When a scrape first saw every accepted request completed (or settled).
    done_at: Option<Instant>,
    last: Sample,
    last_at: Instant,
    scrape_errors: u64,
}

/// Scrapes every 100 ms until the completed count has risen by the goal
/// (known once the posts are done) or `timeout` has passed since then.
async fn poll(
    scraper: Arc<Scraper>,
    before: Sample,
    mut goal: watch::Receiver<Option<(u64, Instant)>>,
    timeout: Duration,
) -> anyhow::Result<Polled> {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = before;
    let mut last_at = Instant::now();
    let mut scrape_errors = 0;
    loop {
        ticker.tick().await;
        match scraper.sample().await {
            Ok(s) => {
                last = s;
                last_at = Instant::now();
            }
            Err(e) => {
                scrape_errors += 1;
                if scrape_errors % 10 == 1 {
                    eprintln!("e2e: metrics scrape failed: {e:#}");
                }
            }
        }
        let current = *goal.borrow_and_update();
        if let Some((goal, last_post)) = current {
            let d = last.since(&before);
            let settled = d.completed + d.deadlettered;
            if d.completed >= goal as f64 || settled >= goal as f64 {
                return Ok(Polled {
                    done_at: Some(last_at),
                    last,
                    last_at,
                    scrape_errors,
                });
            }
            if last_at.saturating_duration_since(last_post) >= timeout {
                eprintln!(
                    "e2e: timed out: {} of {goal} completed {:?} after the last post",
                    d.completed, timeout
                );
                return Ok(Polled {
                    done_at: None,
                    last,
                    last_at,
                    scrape_errors,
                });
            }
        }
    }
}

async fn cleanup(a: CleanupArgs) -> anyhow::Result<Value> {
    let mut v = json!({"kind": "cleanup"});
    if let (Some(url), Some(prefix)) = (&a.redis_url, &a.redis_prefix) {
        let n = cleanup::redis(url, prefix).await?;
        eprintln!("cleanup: deleted {n} Redis keys under {prefix}:");
        v["redis_keys_deleted"] = json!(n);
    }
    if let Some(uri) = &a.mongodb_uri {
        let name = cleanup::mongo(uri).await?;
        eprintln!("cleanup: dropped MongoDB database {name}");
        v["mongodb_dropped"] = json!(name);
    }
    Ok(v)
}
