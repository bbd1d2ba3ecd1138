//! Partition leases in memory: the embedded default has one engine, which
//! owns every partition. The rules are the domain's own model store, on the
//! process's monotonic clock.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dronedelivery_actors::domain::ownership::{
    Lease, LeaseAnswer, LeaseOp, LeaseRules, ModelStore, PartitionId,
};
use dronedelivery_actors::ports::{OwnershipStore, StoreResult};

/// Leases and membership of engines in one process.
#[derive(Debug)]
pub struct MemoryOwnershipStore {
    started: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The leases, made on first use with the lease duration asked for
    /// (every engine of a deployment uses the same).
    leases: Option<ModelStore>,
    engines: BTreeMap<String, u64>,
}

impl Default for MemoryOwnershipStore {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            state: Mutex::new(State {
                leases: None,
                engines: BTreeMap::new(),
            }),
        }
    }
}

impl MemoryOwnershipStore {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Each critical section leaves the maps consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl OwnershipStore for MemoryOwnershipStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn heartbeat(&self, engine: &str, ttl: Duration) -> StoreResult<Vec<String>> {
        let now = self.now_ms();
        let mut state = self.state();
        state.engines.insert(engine.to_owned(), now + ms(ttl));
        state.engines.retain(|_, until| *until > now);
        Ok(state.engines.keys().cloned().collect())
    }

    async fn leave(&self, engine: &str) -> StoreResult<()> {
        self.state().engines.remove(engine);
        Ok(())
    }

    async fn engines(&self) -> StoreResult<Vec<String>> {
        let now = self.now_ms();
        let state = self.state();
        Ok(state
            .engines
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(e, _)| e.clone())
            .collect())
    }

    async fn lease(
        &self,
        partition: PartitionId,
        engine: &str,
        op: LeaseOp,
        ttl: Duration,
    ) -> StoreResult<LeaseAnswer> {
        let now = self.now_ms();
        let mut state = self.state();
        let model = state
            .leases
            .get_or_insert_with(|| ModelStore::new(0, LeaseRules { ttl_ms: ms(ttl) }));
        model.grow(partition + 1);
        Ok(model.lease(partition, engine, op, now))
    }

    async fn leases(&self, partitions: u32) -> StoreResult<(Vec<Option<Lease>>, u64)> {
        let now = self.now_ms();
        let state = self.state();
        let mut out: Vec<Option<Lease>> = state
            .leases
            .as_ref()
            .map(|m| {
                m.leases()
                    .iter()
                    .take(partitions as usize)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.resize(partitions as usize, None);
        Ok((out, now))
    }
}
