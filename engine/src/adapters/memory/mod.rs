//! The embedded default: in-process queue and in-memory stores, so that
//! `dronedelivery serve` shows the whole flow with no services. Nothing is
//! persisted.

mod control;
mod ownership;
mod queue;
mod stores;

use std::sync::Arc;
use std::time::Duration;

use dronedelivery_actors::Backends;

pub use control::MemoryControlPlane;
pub use ownership::MemoryOwnershipStore;
pub use queue::MemoryQueue;
pub use stores::{
    MemoryDeadLetterStore, MemoryDeliveryStore, MemoryDroneStore, MemoryHistoryStore,
    MemoryIdempotencyStore, MemoryNotifyMeStore, MemoryPackageStore, METRES_PER_MILE,
};

/// Every backend in memory. `lock_duration` is the queue's peek-lock time;
/// `capacity` bounds each of the queue's two lanes (normal and expedited,
/// see [`crate::adapters::lanes`]).
pub fn backends(lock_duration: Duration, capacity: usize) -> Backends {
    Backends {
        queue: crate::adapters::lanes::Lanes::new(
            MemoryQueue::new(lock_duration, capacity),
            MemoryQueue::new(lock_duration, capacity),
        ),
        deliveries: Arc::new(MemoryDeliveryStore::default()),
        drones: Arc::new(MemoryDroneStore::default()),
        packages: Arc::new(MemoryPackageStore::default()),
        dead_letters: Arc::new(MemoryDeadLetterStore::default()),
        history: Arc::new(MemoryHistoryStore::default()),
        notify: Arc::new(MemoryNotifyMeStore::default()),
        idempotency: Arc::new(MemoryIdempotencyStore::default()),
        ownership: Arc::new(MemoryOwnershipStore::default()),
        control: Arc::new(MemoryControlPlane::default()),
    }
}
