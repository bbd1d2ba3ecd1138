//! Memory per live actor, measured with a counting global allocator.
//!
//! ```sh
//! cargo run --release -p dronedelivery-benches --bin actor_memory -- --deliveries 100000 --drones 100000
//! ```
//!
//! RSS alone is a poor measure of an actor's size: the allocator keeps freed
//! pages and grows in steps. So every allocation of this process is counted
//! (`stats_alloc` around the system allocator) and the figures are net heap
//! bytes (allocated − freed) between two points:
//!
//! - **Per delivery actor:** `N` deliveries are created through the workflow
//!   with the in-memory backends (each activates its actor), then every
//!   delivery actor is stopped. The drop in live heap divided by `N` is what
//!   one live delivery actor costs: its state (the record), the ractor cell,
//!   mailbox and task, and its registry entry. The records stay in the
//!   in-memory store, so they are not part of the figure.
//! - **Per drone actor:** the live heap grown by starting an engine with `M`
//!   drones, minus the heap of a copy of the drones' stored state (what the
//!   in-memory drone store holds), divided by `M`.
//!
//! It prints one JSON object (also the process's peak RSS, `VmHWM`, which is
//! the figure to hold against the 4 GiB budget for 1,000,000 deliveries; that
//! one does include the in-memory stores).

use std::alloc::System;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dronedelivery_actors::domain::DeliveryRequest;
use dronedelivery_actors::ports::{Operation, QueueMessage};
use dronedelivery_actors::workflow::{process, Outcome};
use dronedelivery_actors::{Engine, TreeConfig};
use dronedelivery_benches::ri_example;
use ractor::ActorRef;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Net live heap bytes since the process started.
fn live_heap() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

/// A field of `/proc/self/status`, in bytes (`VmRSS`, `VmHWM`).
fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == name {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a value"))?;
            return v
                .parse()
                .with_context(|| format!("{name}: not a number: {v}"));
        }
    }
    Ok(default)
}

fn main() -> anyhow::Result<()> {
    let deliveries = arg("--deliveries", 100_000)?.max(1);
    let drones = arg("--drones", 100_000)?.max(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(deliveries, drones))
}

async fn run(deliveries: usize, drones: usize) -> anyhow::Result<()> {
    let _region = Region::new(GLOBAL);

    // Drones: an engine seeding `drones` drone actors.
    let before = live_heap();
    let config = TreeConfig {
        instance: "mem-drones".into(),
        fleet_size: drones,
        depots: 4,
        ..TreeConfig::default()
    };
    let backends = dronedelivery_engine::memory::backends(Duration::from_secs(60), 1_000);
    let (drone_engine, _tree) = Engine::start(config, backends.clone())
        .await
        .map_err(|e| anyhow::anyhow!("start: {e}"))?;
    let with_drones = live_heap() - before;
    let stored = {
        let before_copy = live_heap();
        let copy = backends.drones.list().await?;
        let bytes = live_heap() - before_copy;
        anyhow::ensure!(
            copy.len() == drones,
            "seeded {} drones, expected {drones}",
            copy.len()
        );
        drop(copy);
        bytes
    };
    let per_drone = (with_drones - stored) as f64 / drones as f64;
    drone_engine.shutdown().await;

    // Deliveries: create `deliveries`, each activating its actor.
    let config = TreeConfig {
        instance: "mem-deliveries".into(),
        fleet_size: 10,
        consumers: 1,
        passivate_after: Duration::from_secs(24 * 3600),
        ..TreeConfig::default()
    };
    let backends = dronedelivery_engine::memory::backends(Duration::from_secs(60), 10_000_000);
    let (engine, _tree) = Engine::start(config, backends)
        .await
        .map_err(|e| anyhow::anyhow!("start: {e}"))?;
    let ctx = engine.context().clone();
    let mut ids = Vec::with_capacity(deliveries);
    let started = Instant::now();
    for n in 0..deliveries {
        let id = format!("mem-{n:08}");
        let mut body = ri_example();
        body["packageInfo"]["packageId"] = serde_json::json!(format!("p-{n}"));
        let req = DeliveryRequest::from_external(&body, id.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let message = QueueMessage::new(Operation::Delivery, &req.to_message_json(), None);
        let outcome = process(&ctx, &message).await;
        anyhow::ensure!(outcome == Outcome::Done, "delivery {id}: {outcome:?}");
        ids.push(id);
    }
    let create_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = live_heap();
    let rss_live = proc_status_bytes("VmRSS:");
    for id in &ids {
        if let Some(actor) =
            ActorRef::<dronedelivery_actors::protocol::DeliveryMsg>::where_is(ctx.delivery_name(id))
        {
            actor.stop(None);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let remaining = ractor::registry::where_is(ctx.name("deliveries"))
            .map_or(0, |c| c.get_children().len());
        if remaining == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = live_heap();
    let per_delivery = (live - stopped) as f64 / deliveries as f64;
    let result = serde_json::json!({
        "deliveries": deliveries,
        "drones": drones,
        "bytes_per_delivery_actor": per_delivery.round(),
        "bytes_per_drone_actor": per_drone.round(),
        "drone_state_bytes_in_store_per_drone": (stored as f64 / drones as f64).round(),
        "deliveries_created_per_sec_in_process": (deliveries as f64 / create_secs).round(),
        "rss_with_live_deliveries_bytes": rss_live,
        "peak_rss_bytes": proc_status_bytes("VmHWM:"),
    });
    println!("{result}");
    engine.shutdown().await;
    Ok(())
}
