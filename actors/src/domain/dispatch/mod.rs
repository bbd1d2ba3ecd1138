//! Which delivery waits for a drone and which drone serves which delivery,
//! as one engine's fleet sees it: the scheduling rules as plain data,
//! without actors or stores.
//!
//! The choice of a drone is the store's: the fleet claims the nearest free
//! drone from the pool shared by every engine ([`crate::ports::DroneStore`]),
//! atomically, so two engines never get one drone. What stays here is the
//! queue of requests waiting for a claim (expedited first, then earliest
//! deadline, then arrival, a normal request waiting past the starvation
//! bound served as expedited; never failed; a repeated request is served
//! once; a newer ticket of the same delivery takes the job off the drone
//! that served the older one) and the
//! drones that serve this engine's deliveries (to abort one when its
//! delivery is cancelled or its partition moves to another engine).
//!
//! The fleet actor owns one dispatcher and does the I/O: it claims for
//! [`Dispatcher::next_request`], records the answer ([`Dispatcher::serve`],
//! [`Dispatcher::hand_back`], [`Dispatcher::defer`]) and turns each
//! [`Abort`] into a message to a drone. Every rule is unit-tested in
//! `dispatch/tests.rs`.

mod pending;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{DroneRequest, DroneState, PackageSize};
use pending::PendingQueue;

/// A drone to tell to drop its job for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    /// The drone.
    pub drone_id: String,
    /// The delivery whose job it drops.
    pub delivery_id: String,
}

/// A request taken from the queue to be claimed for, with when it started
/// waiting (given back with it if the claim finds no drone).
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    /// The request.
    pub request: DroneRequest,
    /// When it started waiting.
    pub since: Option<DateTime<Utc>>,
}

/// The fleet's scheduling state; see the module docs.
#[derive(Debug, Default)]
pub struct Dispatcher {
    /// Delivery → (the drone serving it, the ticket it serves).
    serving: HashMap<String, (String, u64)>,
    /// Drone → the delivery it serves (the reverse of `serving`).
    by_drone: HashMap<String, String>,
    pending: PendingQueue,
    /// When each waiting delivery started waiting (for compensation).
    waiting_since: HashMap<String, DateTime<Utc>>,
}

impl Dispatcher {
    /// An empty dispatcher whose normal requests never move ahead of
    /// expedited ones.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty dispatcher that serves a normal request as expedited once
    /// it has waited `max_normal_wait` (the starvation bound).
    pub fn with_starvation_bound(max_normal_wait: Option<chrono::Duration>) -> Self {
        Self {
            pending: PendingQueue::new(max_normal_wait),
            ..Self::default()
        }
    }

    /// Records a drone serving its job (claimed, or adopted from the store);
    /// its delivery stops waiting.
    pub fn serve(&mut self, drone: &DroneState) {
        let Some(delivery_id) = drone.delivery_id.clone().filter(|_| drone.has_job()) else {
            return;
        };
        self.pending.remove(&delivery_id);
        self.waiting_since.remove(&delivery_id);
        if let Some((before, _)) = self
            .serving
            .insert(delivery_id.clone(), (drone.id.clone(), drone.ticket))
        {
            self.by_drone.remove(&before);
        }
        if let Some(other) = self.by_drone.insert(drone.id.clone(), delivery_id.clone()) {
            if other != delivery_id {
                self.serving.remove(&other);
            }
        }
    }

    /// The delivery `drone_id` serves, if any.
    pub fn job_of(&self, drone_id: &str) -> Option<&str> {
        self.by_drone.get(drone_id).map(String::as_str)
    }

    /// Whether a drone serves `delivery_id`.
    pub fn serves(&self, delivery_id: &str) -> bool {
        self.serving.contains_key(delivery_id)
    }

    /// Deliveries served by a drone.
    pub fn served(&self) -> usize {
        self.serving.len()
    }

    /// Queues a request that has been waiting since `since` (a delivery the
    /// store says waits for a drone, re-read when the fleet starts).
    pub fn enqueue(&mut self, request: DroneRequest, since: DateTime<Utc>) {
        self.waiting_since
            .insert(request.delivery_id.clone(), since);
        self.pending.upsert_back(request, since);
    }

    /// A delivery asks for a drone (idempotent per delivery id). A request
    /// whose ticket the serving drone already has is a repeat and changes
    /// nothing; a newer ticket takes the drone off the older job (returned,
    /// to be aborted) and waits for a claim again.
    pub fn request(&mut self, request: DroneRequest, now: DateTime<Utc>) -> Option<Abort> {
        let mut abort = None;
        if let Some((_, ticket)) = self.serving.get(&request.delivery_id) {
            if *ticket >= request.ticket {
                return None; // already served (a redelivered message)
            }
            abort = self.release(&request.delivery_id);
        }
        let delivery_id = request.delivery_id.clone();
        if self.pending.upsert_back(request, now) {
            self.waiting_since.entry(delivery_id).or_insert(now);
        }
        abort
    }

    /// The delivery needs no drone any more (cancelled): it stops waiting,
    /// and the drone serving it, if any, is returned to be aborted.
    pub fn withdraw(&mut self, delivery_id: &str) -> Option<Abort> {
        self.pending.remove(delivery_id);
        self.waiting_since.remove(delivery_id);
        self.release(delivery_id)
    }

    fn release(&mut self, delivery_id: &str) -> Option<Abort> {
        let (drone_id, _) = self.serving.remove(delivery_id)?;
        self.by_drone.remove(&drone_id);
        Some(Abort {
            drone_id,
            delivery_id: delivery_id.to_owned(),
        })
    }

    /// A drone's job for `delivery_id` ended (released to the pool).
    pub fn free(&mut self, drone_id: &str, delivery_id: &str) {
        if self
            .serving
            .get(delivery_id)
            .is_some_and(|(d, _)| d == drone_id)
        {
            self.release(delivery_id);
        }
    }

    /// Takes the most urgent waiting request at `now`, to claim a drone
    /// for.
    pub fn next_request(&mut self, now: DateTime<Utc>) -> Option<Waiting> {
        self.next_request_below(now, None)
    }

    /// The same among the requests whose package is smaller than `below`
    /// (`None`: any): once no free drone carries a size, a dispatch round
    /// asks only for smaller packages, and the larger ones keep their place
    /// untouched.
    pub fn next_request_below(
        &mut self,
        now: DateTime<Utc>,
        below: Option<PackageSize>,
    ) -> Option<Waiting> {
        let (request, _) = self.pending.pop_front_below(now, below)?;
        let since = self.waiting_since.remove(&request.delivery_id);
        Some(Waiting { request, since })
    }

    /// Gives back a request the claim found no drone for: served first of
    /// its urgency next time, its waiting time kept.
    pub fn hand_back(&mut self, waiting: Waiting, now: DateTime<Utc>) {
        self.restore_since(&waiting);
        self.pending
            .push_front(waiting.request, waiting.since.unwrap_or(now));
    }

    /// Puts a request that cannot be served yet (its previous drone is still
    /// being released) back behind the others of its urgency, its waiting
    /// time kept.
    pub fn defer(&mut self, waiting: Waiting, now: DateTime<Utc>) {
        self.restore_since(&waiting);
        self.pending
            .upsert_back(waiting.request, waiting.since.unwrap_or(now));
    }

    fn restore_since(&mut self, waiting: &Waiting) {
        if let Some(since) = waiting.since {
            self.waiting_since
                .insert(waiting.request.delivery_id.clone(), since);
        }
    }

    /// Forgets the deliveries `gone` names (their partition moved to
    /// another engine, whose fleet serves them now): their waiting requests
    /// are dropped and the drones serving them are returned, to be stopped
    /// here (the new holder adopts them).
    pub fn drop_deliveries(&mut self, gone: impl Fn(&str) -> bool) -> Vec<Abort> {
        let waiting: Vec<String> = self
            .pending
            .iter()
            .filter(|r| gone(&r.delivery_id))
            .map(|r| r.delivery_id.clone())
            .collect();
        for id in &waiting {
            self.pending.remove(id);
            self.waiting_since.remove(id);
        }
        let served: Vec<String> = self.serving.keys().filter(|id| gone(id)).cloned().collect();
        served.iter().filter_map(|id| self.release(id)).collect()
    }

    /// Takes out of the queue every request that has waited longer than
    /// `max` at `now` (compensation gives up on them).
    pub fn take_expired(&mut self, now: DateTime<Utc>, max: chrono::Duration) -> Vec<DroneRequest> {
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|r| {
                self.waiting_since
                    .get(&r.delivery_id)
                    .is_some_and(|t| now - *t > max)
            })
            .map(|r| r.delivery_id.clone())
            .collect();
        expired
            .iter()
            .filter_map(|id| {
                self.waiting_since.remove(id);
                self.pending.remove(id)
            })
            .collect()
    }

    /// Requests waiting for a drone.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}
