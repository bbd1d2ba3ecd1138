//! In-memory stores for the embedded default and for tests. They implement
//! the same contracts as the Redis and MongoDB stores (atomic upsert with
//! created/updated, record + event written together), on `RwLock`ed maps.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dronedelivery_actors::domain::limits::{choose, Choice};
use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::domain::{
    DeliveryRecord, DroneRequest, DroneState, Package, PackagePatch, TrackingEvent, Upserted,
};
use dronedelivery_actors::ports::{
    Claimed, DeadLetter, DeadLetterStore, DeliveryStore, DroneStore, HistoryEntry, HistoryStore,
    IdempotencyStore, MonthSummary, NotifyMeRequest, NotifyMeStore, PackageStore, Saved,
    StoreResult, Utilization,
};

/// Poison-tolerant lock helpers: every write is a single map operation, so a
/// panicking writer cannot leave a map inconsistent.
trait Locked<T> {
    fn read_map(&self) -> RwLockReadGuard<'_, T>;
    fn write_map(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> Locked<T> for RwLock<T> {
    fn read_map(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write_map(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Deliveries and their tracking events.
#[derive(Debug, Default)]
pub struct MemoryDeliveryStore {
    records: RwLock<HashMap<String, DeliveryRecord>>,
    events: RwLock<HashMap<String, Vec<TrackingEvent>>>,
}

#[async_trait]
impl DeliveryStore for MemoryDeliveryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        Ok(self.records.read_map().get(id).cloned())
    }

    /// In one process one engine owns everything: a fence is not checked.
    async fn save(
        &self,
        record: &DeliveryRecord,
        event: Option<&TrackingEvent>,
        _fence: Option<Fence>,
    ) -> StoreResult<Saved> {
        let id = &record.delivery.id;
        let mut records = self.records.write_map();
        if records.get(id).is_some_and(|r| r.version > record.version) {
            return Ok(Saved::Stale);
        }
        if let Some(e) = event {
            self.events
                .write_map()
                .entry(record.delivery.id.clone())
                .or_default()
                .push(e.clone());
        }
        records.insert(id.clone(), record.clone());
        Ok(Saved::Written)
    }

    async fn events(&self, id: &str) -> StoreResult<Vec<TrackingEvent>> {
        Ok(self.events.read_map().get(id).cloned().unwrap_or_default())
    }

    async fn awaiting_drone(&self) -> StoreResult<Vec<String>> {
        Ok(self
            .records
            .read_map()
            .values()
            .filter(|r| r.stage.awaits_drone())
            .map(|r| r.delivery.id.clone())
            .collect())
    }

    async fn at_risk_count(&self) -> StoreResult<u64> {
        Ok(self
            .records
            .read_map()
            .values()
            .filter(|r| r.at_risk.is_some() && !r.stage.is_terminal())
            .count() as u64)
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<String>> {
        let mut due: Vec<(DateTime<Utc>, String)> = self
            .records
            .read_map()
            .values()
            .filter_map(|r| {
                r.wake_at
                    .filter(|at| *at <= now)
                    .map(|at| (at, r.delivery.id.clone()))
            })
            .collect();
        due.sort();
        Ok(due.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Drones and the pool, with the same rules as the Redis store (one
/// process: fences are not checked, claim numbers are).
#[derive(Debug, Default)]
pub struct MemoryDroneStore {
    pool: Mutex<DronePool>,
}

#[derive(Debug, Default)]
struct DronePool {
    drones: HashMap<String, DroneState>,
    free: BTreeSet<String>,
    /// Claimed drone → its claim number.
    claims: HashMap<String, u64>,
    /// Delivery → the drone claimed for it.
    by_delivery: HashMap<String, String>,
    last_claim: u64,
}

impl DronePool {
    /// Whether a write carrying `claim` may change `id`.
    fn holds(&self, id: &str, claim: u64) -> bool {
        self.claims.get(id).copied().unwrap_or(0) == claim
    }
}

impl MemoryDroneStore {
    fn pool(&self) -> std::sync::MutexGuard<'_, DronePool> {
        // Each critical section leaves the pool consistent.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl DroneStore for MemoryDroneStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, id: &str) -> StoreResult<Option<DroneState>> {
        Ok(self.pool().drones.get(id).cloned())
    }

    async fn seed(&self, drones: &[DroneState]) -> StoreResult<usize> {
        let mut pool = self.pool();
        let mut added = 0;
        for d in drones {
            if !pool.drones.contains_key(&d.id) {
                pool.drones.insert(d.id.clone(), d.clone());
                if !d.has_job() {
                    pool.free.insert(d.id.clone());
                }
                added += 1;
            }
        }
        Ok(added)
    }

    async fn claim(
        &self,
        job: &DroneRequest,
        _fence: Option<Fence>,
        now: DateTime<Utc>,
    ) -> StoreResult<Claimed> {
        let mut pool = self.pool();
        if let Some(id) = pool.by_delivery.get(&job.delivery_id).cloned() {
            match pool.drones.get(&id) {
                Some(d) if d.ticket >= job.ticket => {
                    return Ok(Claimed::Drone(Box::new(d.clone())))
                }
                Some(_) => return Ok(Claimed::Busy(id)),
                None => {
                    pool.by_delivery.remove(&job.delivery_id);
                }
            }
        }
        let id = match choose(
            pool.free.iter().filter_map(|id| pool.drones.get(id)),
            job,
            now,
        ) {
            Choice::Drone(d) => d.id.clone(),
            Choice::NoneFits => return Ok(Claimed::NoneFits),
            Choice::NoneFree => return Ok(Claimed::NoneFree),
        };
        pool.last_claim += 1;
        let claim = pool.last_claim;
        pool.free.remove(&id);
        pool.claims.insert(id.clone(), claim);
        pool.by_delivery.insert(job.delivery_id.clone(), id.clone());
        let Some(drone) = pool.drones.get_mut(&id) else {
            return Ok(Claimed::NoneFree);
        };
        *drone = drone.claimed(job, claim, now);
        Ok(Claimed::Drone(Box::new(drone.clone())))
    }

    async fn put(&self, drone: &DroneState, _fence: Option<Fence>) -> StoreResult<bool> {
        let mut pool = self.pool();
        if !pool.holds(&drone.id, drone.claim) {
            return Ok(false);
        }
        pool.drones.insert(drone.id.clone(), drone.clone());
        Ok(true)
    }

    async fn release(
        &self,
        drone: &DroneState,
        delivery_id: &str,
        _fence: Option<Fence>,
    ) -> StoreResult<bool> {
        let mut pool = self.pool();
        if !pool.holds(&drone.id, drone.claim) {
            return Ok(false);
        }
        pool.drones.insert(drone.id.clone(), drone.clone());
        if pool.by_delivery.get(delivery_id) == Some(&drone.id) {
            pool.by_delivery.remove(delivery_id);
        }
        pool.free.insert(drone.id.clone());
        Ok(true)
    }

    async fn list(&self) -> StoreResult<Vec<DroneState>> {
        let mut all: Vec<DroneState> = self.pool().drones.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn counts(&self) -> StoreResult<(u64, u64)> {
        let pool = self.pool();
        Ok((pool.drones.len() as u64, pool.free.len() as u64))
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Packages.
#[derive(Debug, Default)]
pub struct MemoryPackageStore {
    packages: RwLock<HashMap<String, Package>>,
}

#[async_trait]
impl PackageStore for MemoryPackageStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Package>> {
        Ok(self.packages.read_map().get(id).cloned())
    }

    async fn upsert(&self, package: &Package) -> StoreResult<Upserted> {
        let previous = self
            .packages
            .write_map()
            .insert(package.id.clone(), package.clone());
        Ok(if previous.is_some() {
            Upserted::Updated
        } else {
            Upserted::Created
        })
    }

    async fn patch(&self, id: &str, patch: &PackagePatch) -> StoreResult<Option<Package>> {
        let mut map = self.packages.write_map();
        Ok(map.get_mut(id).map(|p| {
            patch.apply(p);
            p.clone()
        }))
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Dead letters, newest first on listing.
#[derive(Debug, Default)]
pub struct MemoryDeadLetterStore {
    letters: RwLock<Vec<DeadLetter>>,
}

#[async_trait]
impl DeadLetterStore for MemoryDeadLetterStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn put(&self, letter: DeadLetter) -> StoreResult<()> {
        let mut all = self.letters.write_map();
        match all.iter_mut().find(|l| l.id == letter.id) {
            Some(existing) => {
                existing.attempts = letter.attempts;
                existing.reason = letter.reason;
                existing.last_seen = letter.last_seen;
            }
            None => all.push(letter),
        }
        Ok(())
    }

    async fn list(&self, offset: usize, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        Ok(self
            .letters
            .read_map()
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<DeadLetter>> {
        Ok(self.letters.read_map().iter().find(|l| l.id == id).cloned())
    }

    async fn count(&self) -> StoreResult<u64> {
        Ok(self.letters.read_map().len() as u64)
    }

    async fn remove(&self, id: &str) -> StoreResult<bool> {
        let mut all = self.letters.write_map();
        let before = all.len();
        all.retain(|l| l.id != id);
        Ok(all.len() != before)
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Finished deliveries.
#[derive(Debug, Default)]
pub struct MemoryHistoryStore {
    entries: RwLock<HashMap<String, HistoryEntry>>,
}

impl MemoryHistoryStore {
    /// The owner's entries of deliveries that ended in that month (UTC).
    fn of_month(&self, owner_id: &str, year: i32, month: u32) -> Vec<HistoryEntry> {
        use chrono::Datelike;
        self.entries
            .read_map()
            .values()
            .filter(|e| {
                e.owner_id == owner_id
                    && e.finished_at.year() == year
                    && e.finished_at.month() == month
            })
            .cloned()
            .collect()
    }
}

#[async_trait]
impl HistoryStore for MemoryHistoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn record(&self, entry: &HistoryEntry) -> StoreResult<()> {
        self.entries
            .write_map()
            .insert(entry.delivery_id.clone(), entry.clone());
        Ok(())
    }

    async fn utilization(&self, owner_id: &str, year: i32, month: u32) -> StoreResult<Utilization> {
        Ok(self
            .of_month(owner_id, year, month)
            .iter()
            .fold(Utilization::default(), |mut u, e| {
                u.traveled_miles += e.distance_m / METRES_PER_MILE;
                u.assigned_hours += e.assigned_hours;
                u
            }))
    }

    async fn month_summary(
        &self,
        owner_id: &str,
        year: i32,
        month: u32,
    ) -> StoreResult<MonthSummary> {
        Ok(self
            .of_month(owner_id, year, month)
            .iter()
            .fold(MonthSummary::default(), |mut s, e| {
                s.add(e.stage, 1, e.package_weight);
                s
            }))
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// Metres in a statute mile.
pub const METRES_PER_MILE: f64 = 1_609.344;

/// Notify-me requests.
#[derive(Debug, Default)]
pub struct MemoryNotifyMeStore {
    requests: RwLock<HashMap<String, Vec<NotifyMeRequest>>>,
}

#[async_trait]
impl NotifyMeStore for MemoryNotifyMeStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn add(&self, request: &NotifyMeRequest) -> StoreResult<()> {
        self.requests
            .write_map()
            .entry(request.delivery_id.clone())
            .or_default()
            .push(request.clone());
        Ok(())
    }

    async fn list(&self, delivery_id: &str) -> StoreResult<Vec<NotifyMeRequest>> {
        Ok(self
            .requests
            .read_map()
            .get(delivery_id)
            .cloned()
            .unwrap_or_default())
    }
}

/// Idempotency keys with expiry.
#[derive(Debug, Default)]
pub struct MemoryIdempotencyStore {
    keys: RwLock<HashMap<String, (String, std::time::Instant)>>,
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<Option<String>> {
        let now = std::time::Instant::now();
        let mut keys = self.keys.write_map();
        keys.retain(|_, (_, until)| *until > now);
        if let Some((existing, _)) = keys.get(key) {
            return Ok(Some(existing.clone()));
        }
        keys.insert(key.to_owned(), (value.to_owned(), now + ttl));
        Ok(None)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        let now = std::time::Instant::now();
        Ok(self
            .keys
            .read_map()
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(value, _)| value.clone()))
    }
}

#[cfg(all(test, feature = "test-support"))]
mod tests {
    use std::sync::Arc;

    use super::MemoryDroneStore;

    #[tokio::test]
    async fn the_drone_pool_passes_the_contract() {
        crate::adapters::pool_contract::run_all(Arc::new(MemoryDroneStore::default())).await;
    }
}
