//! Which drone serves which delivery: the fleet's scheduling rules as plain
//! data, without actors.
//!
//! The [`Dispatcher`] keeps a slot per drone (free, or serving a delivery's
//! request ticket) and the requests waiting for a free drone. A request goes
//! to the nearest free drone (ties: the lowest drone id, so the choice is
//! deterministic); a request that finds none waits, first come first served,
//! and is never failed. A drone that is free again takes the oldest waiting
//! request. A drone flying home after a job is free: it is chosen by the last
//! position the fleet knows for it.
//!
//! The fleet actor owns one dispatcher and does the sending: it turns each
//! [`Assignment`] into a message to the drone (handing it back with
//! [`Dispatcher::hand_back`] when the drone cannot take messages) and each
//! [`Abort`] into a message telling a drone to drop a job. Every rule is
//! unit-tested in `dispatch/tests.rs`.

mod pending;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::{DroneRequest, DroneState, Location};
use pending::PendingQueue;

/// A drone's slot: where the fleet last knew it and what it serves.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    position: Location,
    serving: Option<Serving>,
}

/// What a busy slot serves.
#[derive(Debug, Clone, PartialEq)]
enum Serving {
    /// The request of a delivery, with its ticket.
    Job {
        /// The delivery.
        delivery_id: String,
        /// The request ticket.
        ticket: u64,
    },
    /// The drone refused a job while busy with one the fleet did not know:
    /// left out until it reports free.
    Unknown,
}

/// A drone to tell to drop its job for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    /// The drone.
    pub drone_id: String,
    /// The delivery whose job it drops.
    pub delivery_id: String,
}

/// A request given to a drone.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The drone chosen.
    pub drone_id: String,
    /// The request it takes.
    pub request: DroneRequest,
    /// When the request started waiting (restored if it is handed back).
    pub waiting_since: Option<DateTime<Utc>>,
}

/// The fleet's scheduling state; see the module docs.
#[derive(Debug, Default)]
pub struct Dispatcher {
    slots: BTreeMap<String, Slot>,
    by_delivery: HashMap<String, String>,
    pending: PendingQueue,
    /// When each waiting delivery started waiting (for compensation).
    waiting_since: HashMap<String, DateTime<Utc>>,
}

impl Dispatcher {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a drone as stored: busy with its delivery unless it is free.
    pub fn add_drone(&mut self, drone: &DroneState) {
        let serving = drone
            .delivery_id
            .clone()
            .filter(|_| !drone.status.is_free())
            .map(|delivery_id| {
                self.by_delivery
                    .insert(delivery_id.clone(), drone.id.clone());
                Serving::Job {
                    delivery_id,
                    ticket: drone.ticket,
                }
            });
        self.slots.insert(
            drone.id.clone(),
            Slot {
                position: drone.position,
                serving,
            },
        );
    }

    /// The drones serving a delivery.
    pub fn busy_drones(&self) -> impl Iterator<Item = &str> {
        self.by_delivery.values().map(String::as_str)
    }

    /// Whether a drone serves `delivery_id`.
    pub fn serves(&self, delivery_id: &str) -> bool {
        self.by_delivery.contains_key(delivery_id)
    }

    /// Queues a request that has been waiting since `since` (a delivery the
    /// store says waits for a drone, re-read when the fleet starts).
    pub fn enqueue(&mut self, request: DroneRequest, since: DateTime<Utc>) {
        self.waiting_since
            .insert(request.delivery_id.clone(), since);
        self.pending.upsert_back(request);
    }

    /// A delivery asks for a drone (idempotent per delivery id). A request
    /// whose ticket the serving drone already has is a repeat and changes
    /// nothing; a newer ticket takes the drone off the older job (returned,
    /// to be aborted) and waits for the nearest free drone again.
    pub fn request(&mut self, request: DroneRequest, now: DateTime<Utc>) -> Option<Abort> {
        let mut abort = None;
        if let Some(drone_id) = self.by_delivery.get(&request.delivery_id) {
            let ticket = match self.slots.get(drone_id).and_then(|s| s.serving.as_ref()) {
                Some(Serving::Job { ticket, .. }) => Some(*ticket),
                _ => None,
            };
            if ticket.is_some_and(|t| t >= request.ticket) {
                return None; // already served (a redelivered message)
            }
            abort = self.release(&request.delivery_id);
        }
        let delivery_id = request.delivery_id.clone();
        if self.pending.upsert_back(request) {
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

    /// Frees the slot serving `delivery_id`.
    fn release(&mut self, delivery_id: &str) -> Option<Abort> {
        let drone_id = self.by_delivery.remove(delivery_id)?;
        if let Some(slot) = self.slots.get_mut(&drone_id) {
            slot.serving = None;
        }
        Some(Abort {
            drone_id,
            delivery_id: delivery_id.to_owned(),
        })
    }

    /// A drone finished its job for `delivery_id` at `position`. A report
    /// for a job the slot no longer holds only updates the position; any
    /// report frees a drone left out as busy with an unknown job.
    pub fn free(&mut self, drone_id: &str, delivery_id: &str, position: Location) {
        let Some(slot) = self.slots.get_mut(drone_id) else {
            return;
        };
        slot.position = position;
        let finished = match &slot.serving {
            Some(Serving::Job {
                delivery_id: serving,
                ..
            }) => serving == delivery_id,
            Some(Serving::Unknown) => true,
            None => false,
        };
        if finished {
            slot.serving = None;
            if self.by_delivery.get(delivery_id).map(String::as_str) == Some(drone_id) {
                self.by_delivery.remove(delivery_id);
            }
        }
    }

    /// A drone refused `request` because it is busy with a job the fleet
    /// did not know: the drone is left out until it reports free, and the
    /// request is served next.
    pub fn rejected(&mut self, drone_id: &str, request: DroneRequest, now: DateTime<Utc>) {
        if let Some(slot) = self.slots.get_mut(drone_id) {
            let was_this = matches!(
                &slot.serving,
                Some(Serving::Job { delivery_id, .. }) if *delivery_id == request.delivery_id
            );
            if was_this {
                slot.serving = Some(Serving::Unknown);
            }
        }
        self.by_delivery.remove(&request.delivery_id);
        self.waiting_since
            .entry(request.delivery_id.clone())
            .or_insert(now);
        self.pending.push_front(request);
    }

    /// The nearest free drone to `pickup` (ties: the lowest drone id).
    pub fn nearest_free(&self, pickup: &Location) -> Option<&str> {
        self.slots
            .iter()
            .filter(|(_, s)| s.serving.is_none())
            .min_by(|(_, a), (_, b)| {
                a.position
                    .distance_m(pickup)
                    .total_cmp(&b.position.distance_m(pickup))
            })
            .map(|(id, _)| id.as_str())
    }

    /// Takes the oldest waiting request and gives it to the nearest free
    /// drone, or `None` when nothing waits or no drone is free.
    pub fn next_assignment(&mut self) -> Option<Assignment> {
        let pickup = self.pending.front()?.pickup;
        let drone_id = self.nearest_free(&pickup)?.to_owned();
        let request = self.pending.pop_front()?;
        if let Some(slot) = self.slots.get_mut(&drone_id) {
            slot.serving = Some(Serving::Job {
                delivery_id: request.delivery_id.clone(),
                ticket: request.ticket,
            });
        }
        let waiting_since = self.waiting_since.remove(&request.delivery_id);
        self.by_delivery
            .insert(request.delivery_id.clone(), drone_id.clone());
        Some(Assignment {
            drone_id,
            request,
            waiting_since,
        })
    }

    /// Undoes an assignment the drone could not receive (its actor is
    /// restarting): the drone is free again and the request is served next.
    pub fn hand_back(&mut self, assignment: Assignment) {
        let Assignment {
            drone_id,
            request,
            waiting_since,
        } = assignment;
        if let Some(slot) = self.slots.get_mut(&drone_id) {
            slot.serving = None;
        }
        self.by_delivery.remove(&request.delivery_id);
        if let Some(since) = waiting_since {
            self.waiting_since
                .insert(request.delivery_id.clone(), since);
        }
        self.pending.push_front(request);
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

    /// Drones in the fleet.
    pub fn drones(&self) -> usize {
        self.slots.len()
    }

    /// Drones free.
    pub fn free_drones(&self) -> usize {
        self.slots.values().filter(|s| s.serving.is_none()).count()
    }

    /// Requests waiting for a drone.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}
