//! The fleet's queue of deliveries waiting for a drone: first come, first
//! served, with O(1) lookup by delivery id.
//!
//! Requests are re-sent (a redelivered queue message, a reschedule with a
//! new ticket, a drone refusing a job), so every arrival must check whether
//! the delivery already waits. A plain `VecDeque` made that a linear scan,
//! which under a backlog of tens of thousands of waiting deliveries became
//! the engine's largest CPU cost. Here the order is a queue of
//! `(delivery id, sequence)` and the requests live in a map; removing a
//! request only drops it from the map, and its queue entry, now stale (its
//! sequence no longer matches), is skipped when it reaches the front.

use std::collections::{HashMap, VecDeque};

use crate::domain::DroneRequest;

/// Waiting requests in arrival order, indexed by delivery id.
#[derive(Debug, Default)]
pub(super) struct PendingQueue {
    order: VecDeque<(String, u64)>,
    waiting: HashMap<String, (u64, DroneRequest)>,
    next_seq: u64,
}

impl PendingQueue {
    /// Deliveries waiting.
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Adds `req` at the back, or, when its delivery already waits, replaces
    /// the waiting request in place if `req`'s ticket is not older. Returns
    /// whether the delivery was not waiting before.
    pub(super) fn upsert_back(&mut self, req: DroneRequest) -> bool {
        if let Some((_, existing)) = self.waiting.get_mut(&req.delivery_id) {
            if req.ticket >= existing.ticket {
                *existing = req;
            }
            return false;
        }
        let seq = self.seq();
        self.order.push_back((req.delivery_id.clone(), seq));
        self.waiting.insert(req.delivery_id.clone(), (seq, req));
        true
    }

    /// Puts `req` first (a request handed back, to be served next).
    pub(super) fn push_front(&mut self, req: DroneRequest) {
        let seq = self.seq();
        self.order.push_front((req.delivery_id.clone(), seq));
        self.waiting.insert(req.delivery_id.clone(), (seq, req));
    }

    /// Removes the waiting request of `delivery_id`.
    pub(super) fn remove(&mut self, delivery_id: &str) -> Option<DroneRequest> {
        let removed = self.waiting.remove(delivery_id).map(|(_, r)| r);
        self.compact();
        removed
    }

    /// Takes the oldest waiting request.
    pub(super) fn pop_front(&mut self) -> Option<DroneRequest> {
        self.skip_stale();
        let (id, _) = self.order.pop_front()?;
        self.waiting.remove(&id).map(|(_, r)| r)
    }

    /// Every waiting request, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &DroneRequest> {
        self.waiting.values().map(|(_, r)| r)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn is_current(&self, (id, seq): &(String, u64)) -> bool {
        self.waiting.get(id).is_some_and(|(s, _)| s == seq)
    }

    fn skip_stale(&mut self) {
        while let Some(entry) = self.order.front() {
            if self.is_current(entry) {
                break;
            }
            self.order.pop_front();
        }
    }

    /// Drops stale entries once they outnumber the live ones, so removals
    /// from the middle cannot grow the order queue without bound.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.waiting.len() + 1024 {
            let order = std::mem::take(&mut self.order);
            self.order = order.into_iter().filter(|e| self.is_current(e)).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Location;

    fn req(id: &str, ticket: u64) -> DroneRequest {
        DroneRequest {
            delivery_id: id.into(),
            ticket,
            pickup: Location::new(47.6, -122.3),
            dropoff: Location::new(47.7, -122.2),
        }
    }

    fn drain(q: &mut PendingQueue) -> Vec<(String, u64)> {
        std::iter::from_fn(|| q.pop_front().map(|r| (r.delivery_id, r.ticket))).collect()
    }

    #[test]
    fn first_come_first_served_with_in_place_updates() {
        let mut q = PendingQueue::default();
        assert!(q.upsert_back(req("a", 1)));
        assert!(q.upsert_back(req("b", 1)));
        assert!(q.upsert_back(req("c", 1)));
        // A newer ticket replaces the request but keeps its place; an older
        // one is ignored.
        assert!(!q.upsert_back(req("a", 2)));
        assert!(!q.upsert_back(req("b", 0)));
        assert_eq!(q.len(), 3);
        assert_eq!(
            drain(&mut q),
            [("a".into(), 2), ("b".into(), 1), ("c".into(), 1)]
        );
        assert_eq!(q.len(), 0);
        assert!(q.pop_front().is_none());
    }

    #[test]
    fn removed_and_requeued_requests_are_not_served_twice() {
        let mut q = PendingQueue::default();
        for id in ["a", "b", "c"] {
            q.upsert_back(req(id, 1));
        }
        assert_eq!(q.remove("b").map(|r| r.ticket), Some(1));
        assert!(q.remove("b").is_none());
        // "a" handed back to the front after being taken.
        let a = q.pop_front();
        assert_eq!(a.as_ref().map(|r| r.delivery_id.as_str()), Some("a"));
        q.push_front(req("a", 3));
        // "c" withdrawn and requested again goes to the back.
        q.remove("c");
        q.upsert_back(req("d", 1));
        q.upsert_back(req("c", 2));
        assert_eq!(
            drain(&mut q),
            [("a".into(), 3), ("d".into(), 1), ("c".into(), 2)]
        );
    }

    #[test]
    fn stale_entries_are_compacted() {
        let mut q = PendingQueue::default();
        for n in 0..10_000 {
            q.upsert_back(req(&format!("d{n}"), 1));
        }
        for n in 0..9_990 {
            q.remove(&format!("d{n}"));
        }
        assert_eq!(q.len(), 10);
        assert!(q.order.len() <= 2 * q.len() + 1024 + 1);
        assert_eq!(drain(&mut q).len(), 10);
        assert_eq!(q.iter().count(), 0);
    }
}
