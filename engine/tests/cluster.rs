//! Partition ownership with real `dronedelivery` processes on one Redis
//! (`127.0.0.1:6379`): engines join, are killed, stop and join again, and
//! the leases in the store show every partition held by exactly one live
//! engine in balanced shares, each change of holder with a newer epoch.
//! Everything is read from the store, sampled all along.

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dronedelivery_actors::domain::ownership::Lease;
use dronedelivery_actors::ports::OwnershipStore;
use dronedelivery_engine::adapters::redis::{connect, RedisConfig, RedisOwnershipStore};
use serde_json::Value;
use tokio::time::Instant;

const REDIS: &str = "redis://127.0.0.1:6379";
const PARTITIONS: u32 = 16;
const LEASE_SECS: u64 = 2;
const TOKEN: &str = "cluster-token";

struct Engine {
    child: Child,
    base: String,
}

impl Engine {
    fn spawn(prefix: &str, fleet_id: &str) -> Self {
        Self::spawn_with_lease(prefix, fleet_id, LEASE_SECS)
    }

    fn spawn_with_lease(prefix: &str, fleet_id: &str, lease_secs: u64) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dronedelivery"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--queue", "redis-streams", "--redis-url", REDIS])
            .args(["--redis-prefix", prefix, "--fleet-id", fleet_id])
            .args(["--fleet-size", "2", "--admin-token", TOKEN])
            .args(["--lease-secs", &lease_secs.to_string()])
            .args(["--partitions", &PARTITIONS.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if std::env::var_os("TEST_LOG").is_none() {
            cmd.stderr(Stdio::null());
        }
        Self {
            child: cmd.spawn().expect("spawn dronedelivery"),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Waits for readiness, then asks the engine its id.
    async fn ready(&mut self) -> String {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dronedelivery exited during start-up: {status}");
            }
            let ready = client.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "engine never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let view: Value = client
            .get(format!("{}/admin/cluster", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        view["engineId"].as_str().expect("engineId").to_owned()
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "a graceful stop exits 0: {exit}");
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_9();
        }
    }
}

/// Live leases per owner.
fn shares(leases: &[Option<Lease>], now: u64) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for l in leases.iter().flatten().filter(|l| l.is_live(now)) {
        *out.entry(l.owner.clone()).or_insert(0) += 1;
    }
    out
}

/// Waits until every partition is held live by exactly the engines in
/// `owners`, in balanced shares; returns how long it took.
async fn balanced_among(
    store: &RedisOwnershipStore,
    owners: &[&str],
    within: Duration,
) -> Duration {
    let start = Instant::now();
    let mut want: Vec<u32> = {
        let n = owners.len() as u32;
        (0..n)
            .map(|i| PARTITIONS / n + u32::from(i < PARTITIONS % n))
            .collect()
    };
    want.sort_unstable();
    loop {
        let (leases, now) = store.leases(PARTITIONS).await.unwrap();
        let s = shares(&leases, now);
        let mut counts: Vec<u32> = s.values().copied().collect();
        counts.sort_unstable();
        let holders: Vec<&str> = s.keys().map(String::as_str).collect();
        let mut expected: Vec<&str> = owners.to_vec();
        expected.sort_unstable();
        if holders == expected && counts == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not balanced among {owners:?} after {within:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the sampler saw: per partition, every (owner, epoch) in order.
type History = Arc<Mutex<BTreeMap<usize, Vec<(String, u64)>>>>;

#[tokio::test]
async fn engines_join_die_leave_and_rejoin_and_every_partition_has_one_live_owner() {
    let prefix = format!(
        "cluster-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let store = connect(&RedisConfig::new(REDIS, prefix.as_str()))
        .await
        .expect("Redis must be running on 127.0.0.1:6379")
        .ownership;

    // Sample the leases all along: a partition's holder only ever changes
    // with a newer epoch, and never goes back to an older one.
    let history: History = Arc::default();
    let sampler = {
        let (store, history) = (Arc::clone(&store), Arc::clone(&history));
        tokio::spawn(async move {
            loop {
                if let Ok((leases, _)) = store.leases(PARTITIONS).await {
                    let mut h = history.lock().unwrap();
                    for (p, l) in leases.iter().enumerate() {
                        let Some(l) = l else { continue };
                        let seen = h.entry(p).or_default();
                        if seen.last() != Some(&(l.owner.clone(), l.epoch)) {
                            seen.push((l.owner.clone(), l.epoch));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut a = Engine::spawn(&prefix, "a");
    let mut b = Engine::spawn(&prefix, "b");
    let mut c = Engine::spawn(&prefix, "c");
    let (ida, idb, idc) = (a.ready().await, b.ready().await, c.ready().await);
    let joined = balanced_among(&store, &[&ida, &idb, &idc], Duration::from_secs(30)).await;
    let (before, _) = store.leases(PARTITIONS).await.unwrap();

    // kill -9: a's leases lapse on the store's clock and are taken over.
    a.kill_9();
    let takeover = balanced_among(&store, &[&idb, &idc], Duration::from_secs(30)).await;
    let (after, _) = store.leases(PARTITIONS).await.unwrap();
    for (p, (old, new)) in before.iter().zip(&after).enumerate() {
        let (old, new) = (old.as_ref().unwrap(), new.as_ref().unwrap());
        if old.owner == ida {
            assert!(new.epoch > old.epoch, "partition {p}: {old:?} then {new:?}");
        }
    }

    // SIGTERM: b hands its partitions over at once.
    b.terminate();
    let handover = balanced_among(&store, &[&idc], Duration::from_secs(30)).await;
    assert!(
        !store.engines().await.unwrap().contains(&idb),
        "a stopped engine leaves the cluster"
    );

    // Scale up: a new engine takes half.
    let mut d = Engine::spawn(&prefix, "d");
    let idd = d.ready().await;
    let rejoin = balanced_among(&store, &[&idc, &idd], Duration::from_secs(30)).await;

    // Scale to zero and back: a lone engine ends up holding everything.
    c.terminate();
    d.terminate();
    let mut e = Engine::spawn(&prefix, "e");
    let ide = e.ready().await;
    let restart = balanced_among(&store, &[&ide], Duration::from_secs(30)).await;

    sampler.abort();
    let history = history.lock().unwrap().clone();
    let mut changes = 0;
    for (p, seen) in &history {
        for pair in seen.windows(2) {
            assert!(
                pair[1].1 > pair[0].1,
                "partition {p}: holder {:?} after {:?}",
                pair[1],
                pair[0]
            );
            changes += 1;
        }
    }
    assert_eq!(history.len(), PARTITIONS as usize);
    println!(
        "cluster (lease {LEASE_SECS} s, {PARTITIONS} partitions): balanced over 3 engines {joined:?} after the last was ready; \
after kill -9 all taken over in {takeover:?}; after SIGTERM handed over in {handover:?}; \
scale-up balanced in {rejoin:?}; from zero to one engine in {restart:?}; {changes} changes of holder, each with a newer epoch"
    );
    e.terminate();
    common::cleanup(REDIS, &prefix).await;
}

/// Announcements: with a 60 s lease the engines heartbeat every 12 s, yet a
/// newcomer gets its share, and a stopping engine's partitions their new
/// holder, within a few seconds: the joining engine announces itself, the
/// holder plans again at once and releases, announces that, and the
/// newcomer acquires; a graceful stop announces its release. Heartbeats
/// alone would take up to two heartbeats (24 s) for the first and one for
/// the second.
#[tokio::test]
async fn announcements_move_partitions_between_heartbeats() {
    const LONG_LEASE: u64 = 60;
    const WITHIN: Duration = Duration::from_secs(5);
    let prefix = format!(
        "announce-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let stores = connect(&RedisConfig::new(REDIS, &prefix)).await.unwrap();
    let store = stores.ownership;
    let mut a = Engine::spawn_with_lease(&prefix, "a", LONG_LEASE);
    let ida = a.ready().await;
    balanced_among(&store, &[&ida], WITHIN).await;
    let mut b = Engine::spawn_with_lease(&prefix, "b", LONG_LEASE);
    let idb = b.ready().await;
    let joined = balanced_among(&store, &[&ida, &idb], WITHIN).await;
    b.terminate();
    let left = balanced_among(&store, &[&ida], WITHIN).await;
    println!(
        "announcements (lease {LONG_LEASE} s, heartbeat 12 s): a newcomer balanced {joined:?} after it was ready; \
a stopped engine's partitions held again in {left:?}"
    );
    a.terminate();
    common::cleanup(REDIS, &prefix).await;
}
