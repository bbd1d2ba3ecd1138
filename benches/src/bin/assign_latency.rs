//! `assign_latency`: how long a delivery waits for a drone, expedited
//! against normal, behind a backlog (driven by `benches/assign-latency.sh`,
//! which starts the engine).
//!
//! It posts `--backlog` normal delivery requests, so the fleet has far more
//! work than drones (or, with `--backlog-concurrency` high enough, so the
//! queue holds more than the workflow drains meanwhile), then `--pairs` pairs of requests, one expedited and one
//! normal, one pair every `--interval-ms`. Each request of a pair is timed
//! from its `202` until its status first names a drone (polled every
//! `--poll-ms`, so that is the resolution), or with `--until created` until
//! it has a status at all: the time it spent in the queue. The expedited ones should be
//! served as soon as a drone frees up; the normal ones only after the
//! backlog ahead of them.
//!
//! Prints one JSON object on stdout (percentiles per class, in ms, and the
//! ratio of the medians) and a summary on stderr.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// Engine base URL.
    #[arg(long)]
    url: String,
    /// Normal requests posted first.
    #[arg(long, default_value_t = 300)]
    backlog: usize,
    /// Expedited + normal pairs posted behind the backlog.
    #[arg(long, default_value_t = 30)]
    pairs: usize,
    /// Time between two pairs.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// Status poll interval of each timed request.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Give up on a request not assigned after this long.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Backlog requests in flight at once: 1 builds the backlog at the
    /// fleet (each request is taken from the queue as it comes); more
    /// builds it in the queue itself, faster than the workflow drains it.
    #[arg(long, default_value_t = 1)]
    backlog_concurrency: usize,
    /// What a timed request waits for: `drone` (its status names a drone)
    /// or `created` (the workflow took it from the queue and created it:
    /// its status exists).
    #[arg(long, value_enum, default_value_t = Until::Drone)]
    until: Until,
}

/// The event a timed request waits for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    /// A drone is assigned.
    Drone,
    /// The delivery exists (the queue handed it to the workflow).
    Created,
}

fn body(n: usize, expedited: bool) -> Value {
    json!({
        "ownerId": "assign-latency",
        "pickupLocation": format!("assign pickup {n}"),
        "dropOffLocation": format!("assign dropoff {n}"),
        "pickupTime": "2019-05-08T20:00:00.000Z",
        "deadline": "",
        "expedited": expedited,
        "confirmationRequired": "None",
        "packageInfo": {"packageId": format!("assign-{n}"), "size": "Small", "weight": 1.0, "tag": "bench"},
    })
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<String> {
    let res = client
        .post(format!("{url}/api/deliveryrequests"))
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(res.status() == 202, "POST answered {}", res.status());
    let v: Value = res.json().await?;
    v["deliveryId"]
        .as_str()
        .map(str::to_owned)
        .context("no deliveryId")
}

/// Milliseconds from `since` until the delivery's status names a drone
/// (or, with `until` = created, until it has a status at all).
async fn time_to(
    until: Until,
    client: reqwest::Client,
    url: String,
    id: String,
    since: Instant,
    poll: Duration,
    timeout: Duration,
) -> anyhow::Result<f64> {
    loop {
        let res = client
            .get(format!("{url}/api/deliveries/{id}/status"))
            .send()
            .await?;
        if res.status() == 200 {
            let s: Value = res.json().await?;
            if until == Until::Created || s["droneId"].is_string() {
                return Ok(since.elapsed().as_secs_f64() * 1000.0);
            }
        }
        anyhow::ensure!(
            since.elapsed() < timeout,
            "{id}: not {until:?} after {timeout:?}"
        );
        tokio::time::sleep(poll).await;
    }
}

async fn collect(
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<f64>>>,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await??);
    }
    Ok(out)
}

fn percentiles(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    json!({"n": v.len(), "p50_ms": at(0.5), "p90_ms": at(0.9), "max_ms": at(1.0)})
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let url = args.url.trim_end_matches('/').to_owned();
    // The backlog, `backlog_concurrency` requests in flight at once.
    let mut posts = tokio::task::JoinSet::new();
    for n in 0..args.backlog {
        if posts.len() >= args.backlog_concurrency.max(1) {
            if let Some(done) = posts.join_next().await {
                done??;
            }
        }
        let (client, url) = (client.clone(), url.clone());
        posts.spawn(async move { post(&client, &url, &body(n, false)).await });
    }
    while let Some(done) = posts.join_next().await {
        done??;
    }
    let poll = Duration::from_millis(args.poll_ms);
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut expedited = Vec::new();
    let mut normal = Vec::new();
    for k in 0..args.pairs {
        for (urgent, list) in [(true, &mut expedited), (false, &mut normal)] {
            let n = args.backlog + 2 * k + usize::from(!urgent);
            let id = post(&client, &url, &body(n, urgent)).await?;
            let since = Instant::now();
            list.push(tokio::spawn(time_to(
                args.until,
                client.clone(),
                url.clone(),
                id,
                since,
                poll,
                timeout,
            )));
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    let expedited = collect(expedited).await?;
    let normal = collect(normal).await?;
    let median = |v: &Value| v["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let (e, n) = (percentiles(expedited), percentiles(normal));
    let ratio = median(&n) / median(&e);
    eprintln!(
        "request to {:?}, behind a backlog of {}: expedited p50 {:.0} ms p90 {:.0} ms; normal p50 {:.0} ms p90 {:.0} ms; normal/expedited (p50) {:.1}",
        args.until,
        args.backlog,
        median(&e),
        e["p90_ms"].as_f64().unwrap_or(f64::NAN),
        median(&n),
        n["p90_ms"].as_f64().unwrap_or(f64::NAN),
        ratio
    );
    println!(
        "{}",
        json!({
            "backlog": args.backlog,
            "backlog_concurrency": args.backlog_concurrency,
            "until": format!("{:?}", args.until).to_lowercase(),
            "pairs": args.pairs,
            "poll_ms": args.poll_ms,
            "expedited": e,
            "normal": n,
            "normal_over_expedited_p50": ratio,
        })
    );
    Ok(())
}
