//! Who owns what across engines: the rules of partition leases and fencing,
//! as plain code.
//!
//! Deliveries and drones are spread over a fixed number of **partitions**
//! by a stable hash of their id ([`partition_of`]). Each partition has at
//! most one owner at a time: the engine holding its **lease** in the store.
//! Every lease grant gets a new **epoch** from a counter in the store
//! (monotonic, never reused), and every write an owner makes to an entity of
//! the partition carries that epoch as a **fence** ([`Fence`]): the store
//! refuses a write whose epoch is not the partition's current one, in the
//! same atomic step as the write. A paused or partitioned engine whose lease
//! expired and was taken over therefore cannot overwrite anything, whatever
//! its clock says: correctness rests on the epoch check where the data
//! lives, expiry only decides *when* another engine may take over (Kleppmann's
//! fencing tokens; Kafka's generation ids; Orleans' ETag-checked storage).
//!
//! - [`LeaseRules::decide`] is what the store's lease script does (acquire,
//!   renew, release), over the stored lease and the store's own clock.
//! - [`targets`] is the balanced, deterministic share each live engine aims
//!   for; [`plan`] is what one engine does about it (acquire free or expired
//!   partitions up to its share, release what is above it), cooperatively:
//!   an engine only ever gives up its own partitions, nobody takes a live
//!   lease away.
//! - [`ModelStore`] applies the same rules in memory; the seeded simulation
//!   in this module's tests drives engines over it with crashes, pauses and
//!   clock jumps and checks that no stale write is ever accepted and that
//!   every partition ends up owned.

use std::collections::BTreeMap;
use std::hash::Hasher;

/// A partition number, `0..partitions`.
pub type PartitionId = u32;

/// The partition of an entity id: FNV-1a over the id's bytes, modulo the
/// partition count. Stable across processes, builds and platforms, so every
/// engine (and the gateway routing a message) agrees.
pub fn partition_of(id: &str, partitions: u32) -> PartitionId {
    let mut h = fnv::FnvHasher::default();
    h.write(id.as_bytes());
    let n = u64::from(partitions.max(1));
    // The remainder is below `partitions`, which is a u32.
    u32::try_from(h.finish() % n).unwrap_or(0)
}

/// A partition's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The engine holding it.
    pub owner: String,
    /// The epoch granted with it.
    pub epoch: u64,
    /// When it lapses unless renewed (the store's clock, ms).
    pub expires_at_ms: u64,
}

impl Lease {
    /// Whether it is still held at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms > now_ms
    }
}

/// What a write carries so the store can refuse a stale owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The entity's partition.
    pub partition: PartitionId,
    /// The epoch of the writer's lease.
    pub epoch: u64,
}

impl Fence {
    /// Whether a write with this fence may be applied while `current` is
    /// the partition's stored lease. Only the epoch counts: an expired lease
    /// nobody has taken over yet still fences correctly (nobody else can
    /// have written with a newer epoch).
    pub fn admits(&self, current: Option<&Lease>) -> bool {
        current.is_some_and(|l| l.epoch == self.epoch)
    }
}

/// A lease operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOp {
    /// Take the lease if it is free or lapsed (or extend it if held).
    Acquire,
    /// Extend a lease held with this epoch.
    Renew(u64),
    /// Give up a lease held with this epoch (cooperative hand-over).
    Release(u64),
}

/// The answer of a lease operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// Held by the caller with this epoch until the given time.
    Held(Lease),
    /// Held by another engine.
    Taken(Lease),
    /// The caller does not hold it (any more): renewing or releasing a
    /// lease that was taken over.
    Lost,
    /// Released.
    Released,
}

/// The rules of the store's lease script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRules {
    /// How long a grant or renewal lasts, ms.
    pub ttl_ms: u64,
}

impl LeaseRules {
    /// Decides `op` by `engine` on the stored lease at the store's `now_ms`.
    /// `next_epoch` is called (once) only when a new grant needs an epoch.
    /// Returns the lease to store (`None`: delete it) and the answer.
    pub fn decide(
        &self,
        stored: Option<&Lease>,
        engine: &str,
        op: LeaseOp,
        now_ms: u64,
        next_epoch: impl FnOnce() -> u64,
    ) -> (Option<Lease>, LeaseAnswer) {
        let expires_at_ms = now_ms.saturating_add(self.ttl_ms);
        let keep = || stored.cloned();
        match op {
            LeaseOp::Acquire => match stored {
                Some(l) if l.owner != engine && l.is_live(now_ms) => {
                    (keep(), LeaseAnswer::Taken(l.clone()))
                }
                // Still ours: extend, same epoch (nobody else wrote since).
                Some(l) if l.owner == engine && l.is_live(now_ms) => {
                    let next = Lease {
                        expires_at_ms,
                        ..l.clone()
                    };
                    (Some(next.clone()), LeaseAnswer::Held(next))
                }
                // Free or lapsed (ours or not): a new grant, a new epoch, so
                // that writes of any earlier holding are refused.
                _ => {
                    let next = Lease {
                        owner: engine.to_owned(),
                        epoch: next_epoch(),
                        expires_at_ms,
                    };
                    (Some(next.clone()), LeaseAnswer::Held(next))
                }
            },
            LeaseOp::Renew(epoch) => match stored {
                Some(l) if l.owner == engine && l.epoch == epoch => {
                    let next = Lease {
                        expires_at_ms,
                        ..l.clone()
                    };
                    (Some(next.clone()), LeaseAnswer::Held(next))
                }
                _ => (keep(), LeaseAnswer::Lost),
            },
            LeaseOp::Release(epoch) => match stored {
                Some(l) if l.owner == engine && l.epoch == epoch => (None, LeaseAnswer::Released),
                _ => (keep(), LeaseAnswer::Lost),
            },
        }
    }
}

/// How many partitions each live engine should own: engines sorted by id,
/// the first `partitions % engines` get one more. Every engine computes the
/// same table from the same membership.
pub fn targets(partitions: u32, engines: &[String]) -> BTreeMap<String, u32> {
    let mut sorted: Vec<&String> = engines.iter().collect();
    sorted.sort();
    sorted.dedup();
    let n = u32::try_from(sorted.len()).unwrap_or(u32::MAX).max(1);
    let (base, extra) = (partitions / n, partitions % n);
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let more = u32::from(u32::try_from(i).unwrap_or(u32::MAX) < extra);
            (e.clone(), base + more)
        })
        .collect()
}

/// What one engine should do about its leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Free or lapsed partitions to try to acquire.
    pub acquire: Vec<PartitionId>,
    /// Own partitions to give up (above the share), highest first.
    pub release: Vec<PartitionId>,
}

/// Plans `me`'s next step from the live engines and every partition's
/// stored lease (index = partition) at the store's `now_ms`. An engine not
/// in `live` (it has not registered yet) plans as if it were.
pub fn plan(me: &str, live: &[String], leases: &[Option<Lease>], now_ms: u64) -> Plan {
    let mut engines = live.to_vec();
    if !engines.iter().any(|e| e == me) {
        engines.push(me.to_owned());
    }
    let partitions = u32::try_from(leases.len()).unwrap_or(u32::MAX);
    let target = targets(partitions, &engines).get(me).copied().unwrap_or(0) as usize;
    let is_mine = |l: &Option<Lease>| {
        l.as_ref()
            .is_some_and(|l| l.owner == me && l.is_live(now_ms))
    };
    let is_free = |l: &Option<Lease>| l.as_ref().is_none_or(|l| !l.is_live(now_ms));
    let ids = || (0..partitions).zip(leases.iter());
    let mine: Vec<PartitionId> = ids().filter(|(_, l)| is_mine(l)).map(|(p, _)| p).collect();
    let mut out = Plan::default();
    if mine.len() > target {
        out.release = mine
            .iter()
            .rev()
            .take(mine.len() - target)
            .copied()
            .collect();
    } else {
        out.acquire = ids()
            .filter(|(_, l)| is_free(l))
            .map(|(p, _)| p)
            .take(target - mine.len())
            .collect();
    }
    out
}

/// An in-memory store that applies [`LeaseRules`] and [`Fence::admits`]
/// exactly as the real store's scripts do: the reference the simulation
/// and the adapters' tests compare against.
#[derive(Debug, Clone)]
pub struct ModelStore {
    rules: LeaseRules,
    leases: Vec<Option<Lease>>,
    epochs: u64,
    /// Per entity: the version last written and the epoch that wrote it.
    entities: BTreeMap<String, (u64, u64)>,
}

/// Why the model store refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRefused {
    /// The fence's epoch is not the partition's current one.
    Fenced,
    /// The entity's stored version is not the one the writer expected.
    Version {
        /// What is stored.
        stored: u64,
    },
}

impl ModelStore {
    /// A store of `partitions` partitions with no leases.
    pub fn new(partitions: u32, rules: LeaseRules) -> Self {
        Self {
            rules,
            leases: vec![None; partitions as usize],
            epochs: 0,
            entities: BTreeMap::new(),
        }
    }

    /// Makes room for at least `partitions` partitions.
    pub fn grow(&mut self, partitions: u32) {
        if self.leases.len() < partitions as usize {
            self.leases.resize(partitions as usize, None);
        }
    }

    /// Every partition's stored lease.
    pub fn leases(&self) -> &[Option<Lease>] {
        &self.leases
    }

    /// Applies a lease operation at `now_ms`.
    pub fn lease(&mut self, p: PartitionId, engine: &str, op: LeaseOp, now_ms: u64) -> LeaseAnswer {
        let Some(slot) = self.leases.get_mut(p as usize) else {
            return LeaseAnswer::Lost;
        };
        let epochs = &mut self.epochs;
        let (next, answer) = self.rules.decide(slot.as_ref(), engine, op, now_ms, || {
            *epochs += 1;
            *epochs
        });
        *slot = next;
        answer
    }

    /// A fenced compare-and-set write of `entity` from version `expected`
    /// to `expected + 1`.
    pub fn write(
        &mut self,
        entity: &str,
        fence: Fence,
        expected: u64,
    ) -> Result<u64, WriteRefused> {
        let current = self
            .leases
            .get(fence.partition as usize)
            .and_then(Option::as_ref);
        if !fence.admits(current) {
            return Err(WriteRefused::Fenced);
        }
        let stored = self.entities.get(entity).map_or(0, |(v, _)| *v);
        if stored != expected {
            return Err(WriteRefused::Version { stored });
        }
        self.entities
            .insert(entity.to_owned(), (expected + 1, fence.epoch));
        Ok(expected + 1)
    }

    /// The stored version of an entity and the epoch that wrote it.
    pub fn entity(&self, entity: &str) -> Option<(u64, u64)> {
        self.entities.get(entity).copied()
    }
}

#[cfg(test)]
mod tests;
