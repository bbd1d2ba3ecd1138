//! `store_limit`: what the stores themselves allow on this machine, with no
//! HTTP and no actors: the ceilings the engine's figures are reported
//! against (`BENCHMARKS.md`).
//!
//! | subcommand | what it does |
//! |---|---|
//! | `packages` | the bare `mongodb` driver loop of what `PUT` then `GET /api/packages/{id}` do: an `update_one` upsert of `{size, weight, tag}` then a `find_one` by `_id`, over a pool of ids, `--concurrency` loops at once |
//! | `upserts` | package upserts only, `--batch` per command: 1 is one `update` command per upsert (the driver's `update_one`), more is one `update` command carrying that many statements, unordered (what the engine's batched upsert sends) |
//! | `pipeline` | the stores' work of `--count` end-to-end deliveries through the engine's own adapters, no HTTP and no actors: the ceiling of this design on this machine (see `pipeline.rs`) |
//!
//! Each prints one JSON object on stdout (operations, seconds, operations
//! per second) and a line on stderr.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mongodb::bson::{doc, Bson, Document};
use mongodb::Collection;
use serde_json::json;

#[path = "store_limit/pipeline.rs"]
mod pipeline;

#[derive(Parser, Debug)]
struct Cli {
    /// MongoDB URI; the database is the bench's own and dropped afterwards.
    #[arg(long, default_value = "mongodb://127.0.0.1:27017")]
    mongodb_uri: String,
    /// Length of the run, seconds.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Loops running at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Package ids in the pool.
    #[arg(long, default_value_t = 10_000)]
    pool: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Upsert then read one package, as `PUT` then `GET` do.
    Packages,
    /// Package upserts, `--batch` statements per command.
    Upserts {
        /// Statements per `update` command.
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// The stores' work of end-to-end deliveries (the ceiling).
    Pipeline {
        /// Redis server.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
        /// Deliveries.
        #[arg(long, default_value_t = 15_000)]
        count: usize,
        /// Tasks sending the requests (the gateway's concurrent requests).
        #[arg(long, default_value_t = 64)]
        senders: usize,
        /// Deliveries worked on at once. The default is wide enough that
        /// the stores, not the concurrency, are the limit (throughput
        /// stops growing from about 256 on this machine).
        #[arg(long, default_value_t = 256)]
        consumers: usize,
        /// Messages held unsettled at most (the engine's `--prefetch`).
        #[arg(long, default_value_t = 2048)]
        prefetch: usize,
        /// Messages per receive.
        #[arg(long, default_value_t = 256)]
        receive_max: usize,
        /// Partitions (the engine's default).
        #[arg(long, default_value_t = 16)]
        partitions: u32,
        /// Drones seeded (scenario d flies 1,000).
        #[arg(long, default_value_t = 1000)]
        fleet_size: usize,
        /// The engine's `--store-batch-max` (1: no batching).
        #[arg(long, default_value_t = 128)]
        batch_max: usize,
    },
}

const SIZES: [&str; 3] = ["Small", "Medium", "Large"];

/// The `$set` of a package upsert, as the engine sends it.
fn set(n: u64) -> Document {
    doc! { "$set": {
        "size": SIZES[(n % 3) as usize],
        "weight": (n % 16 + 1) as f64,
        "tag": "store-limit",
    } }
}

/// One upsert statement of an `update` command.
fn statement(id: &str, n: u64) -> Document {
    doc! { "q": { "_id": id }, "u": set(n), "upsert": true }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Pipeline {
        redis_url,
        count,
        senders,
        consumers,
        prefetch,
        receive_max,
        partitions,
        fleet_size,
        batch_max,
    } = &cli.cmd
    {
        let batch = dronedelivery_engine::adapters::batch::BatchConfig::with_max(*batch_max);
        let figures = pipeline::run(pipeline::Args {
            redis_url: redis_url.clone(),
            mongodb_uri: cli.mongodb_uri.clone(),
            count: *count,
            senders: *senders,
            consumers: *consumers,
            prefetch: *prefetch,
            receive_max: *receive_max,
            partitions: *partitions,
            fleet_size: *fleet_size,
            batch,
        })
        .await?;
        println!("{figures}");
        return Ok(());
    }
    let client = mongodb::Client::with_uri_str(&cli.mongodb_uri)
        .await
        .context("connect to MongoDB")?;
    let db = client.database(&format!("store_limit_{}", std::process::id()));
    let duration = Duration::from_secs_f64(cli.secs);
    let ids: Arc<Vec<String>> =
        Arc::new((0..cli.pool.max(1)).map(|i| format!("pkg-{i}")).collect());
    let (kind, batch) = match cli.cmd {
        Cmd::Packages => ("packages", 1),
        Cmd::Upserts { batch } => ("upserts", batch.max(1)),
        Cmd::Pipeline { .. } => unreachable!("handled above"),
    };
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut loops = Vec::new();
    for worker in 0..cli.concurrency.max(1) {
        let (db, ids, ops, errors, stop) = (
            db.clone(),
            ids.clone(),
            ops.clone(),
            errors.clone(),
            stop.clone(),
        );
        loops.push(tokio::spawn(async move {
            let packages: Collection<Document> = db.collection("packages");
            let mut n = worker as u64 * 7919;
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let pick =
                    |k: u64| ids[((n >> 17).wrapping_add(k) % ids.len() as u64) as usize].as_str();
                let done = match kind {
                    "packages" => {
                        let id = pick(0);
                        let put = packages
                            .update_one(doc! { "_id": id }, set(n))
                            .upsert(true)
                            .await;
                        let get = packages.find_one(doc! { "_id": id }).await;
                        match (put, get) {
                            (Ok(_), Ok(_)) => Ok(2),
                            (Err(e), _) | (_, Err(e)) => Err(e),
                        }
                    }
                    _ if batch == 1 => packages
                        .update_one(doc! { "_id": pick(0) }, set(n))
                        .upsert(true)
                        .await
                        .map(|_| 1),
                    _ => {
                        let updates: Vec<Bson> = (0..batch as u64)
                            .map(|k| Bson::Document(statement(pick(k), n + k)))
                            .collect();
                        db.run_command(
                            doc! { "update": "packages", "updates": updates, "ordered": false },
                        )
                        .await
                        .map(|_| batch as u64)
                    }
                };
                match done {
                    Ok(k) => {
                        ops.fetch_add(k, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("store_limit: {e}");
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let ops = ops.load(Ordering::Relaxed);
    let _ = db.drop().await;
    let per_sec = ops as f64 / secs;
    eprintln!("store_limit {kind} (batch {batch}, {} loops): {ops} operations in {secs:.1} s: {per_sec:.0}/s", cli.concurrency);
    println!(
        "{}",
        json!({"kind": kind, "batch": batch, "concurrency": cli.concurrency, "operations": ops,
            "errors": errors.load(Ordering::Relaxed), "seconds": secs, "per_second": per_sec})
    );
    Ok(())
}
