//! The fleet's queue of deliveries waiting for a drone, in priority order,
//! with O(1) lookup by delivery id.
//!
//! **Order**: expedited requests first, then by earliest parsed deadline
//! (none last), then by arrival. A normal request that has waited longer
//! than the starvation bound (`max_normal_wait`) is served as expedited from
//! then on, so a stream of expedited requests cannot hold it back forever.
//!
//! Requests are re-sent (a redelivered queue message, a reschedule with a
//! new ticket, a drone refusing a job), so every arrival must check whether
//! the delivery already waits: a map by delivery id gives that, and the
//! order is a sorted set of keys `(class, deadline, sequence)`, so taking
//! the first, adding and removing are `O(log n)` under a backlog of tens of
//! thousands. A second sorted set by arrival holds the normal requests, so
//! the ones past the starvation bound are found without a scan.
//!
//! The order is kept **per package size**, one sorted set each, and the
//! most urgent request is the first of the three firsts. The fleet asks
//! for the most urgent request *smaller than* a size once no free drone
//! carries that size ([`PendingQueue::pop_front_below`]): under a backlog
//! of large packages waiting for the few large drones, a dispatch round
//! then goes straight to the small ones instead of taking out and putting
//! back every large request on its way (which made each round cost the
//! whole backlog).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};

use crate::domain::{DroneRequest, PackageSize};

/// Position in the queue: class (0 expedited or waited too long, 1
/// normal), deadline in ms since the epoch (`i64::MAX`: none), sequence.
type Key = (u8, i64, i64);

#[derive(Debug)]
struct Entry {
    key: Key,
    since: DateTime<Utc>,
    request: DroneRequest,
}

/// Waiting requests in priority order, indexed by delivery id.
#[derive(Debug, Default)]
pub(super) struct PendingQueue {
    /// By package size, smallest first (indexed by `PackageSize as usize`,
    /// as `limits` indexes its class pools).
    order: [BTreeMap<Key, String>; 3],
    /// Normal requests by `(arrival in ms, sequence)`, for the starvation
    /// bound.
    arrivals: BTreeSet<(i64, i64, String)>,
    waiting: HashMap<String, Entry>,
    next_seq: i64,
    /// Sequences of requests put back at the front count down from 0.
    front_seq: i64,
    /// The starvation bound; `None`: normal requests never move up.
    max_normal_wait: Option<Duration>,
}

impl PendingQueue {
    /// A queue whose normal requests are served as expedited once they
    /// have waited `max_normal_wait`.
    pub(super) fn new(max_normal_wait: Option<Duration>) -> Self {
        Self {
            max_normal_wait,
            ..Self::default()
        }
    }

    /// Deliveries waiting.
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Adds `req`, waiting since `since`, or, when its delivery already
    /// waits, replaces the waiting request in place if `req`'s ticket is not
    /// older (its place follows its new urgency; its arrival is kept).
    /// Returns whether the delivery was not waiting before.
    pub(super) fn upsert_back(&mut self, req: DroneRequest, since: DateTime<Utc>) -> bool {
        if let Some(entry) = self.waiting.get(&req.delivery_id) {
            if req.ticket >= entry.request.ticket {
                let (seq, since) = (entry.key.2, entry.since);
                let promoted = entry.key.0 == 0 && !entry.request.expedited;
                self.unlink(&req.delivery_id);
                self.link(req, seq, since, promoted);
            }
            return false;
        }
        let seq = self.seq();
        self.link(req, seq, since, false);
        true
    }

    /// Puts `req` back before every request of its urgency (a request
    /// handed back, to be served next), waiting since `since`.
    pub(super) fn push_front(&mut self, req: DroneRequest, since: DateTime<Utc>) {
        self.unlink(&req.delivery_id);
        self.front_seq -= 1;
        let seq = self.front_seq;
        let promoted = self.overdue(since, since);
        self.link(req, seq, since, promoted);
    }

    /// Removes the waiting request of `delivery_id`.
    pub(super) fn remove(&mut self, delivery_id: &str) -> Option<DroneRequest> {
        self.unlink(delivery_id).map(|e| e.request)
    }

    /// Takes the most urgent waiting request at `now`, with when it started
    /// waiting.
    #[cfg(test)]
    pub(super) fn pop_front(
        &mut self,
        now: DateTime<Utc>,
    ) -> Option<(DroneRequest, DateTime<Utc>)> {
        self.pop_front_below(now, None)
    }

    /// The same among the requests whose package is smaller than `below`
    /// (`None`: any), leaving the others in place.
    pub(super) fn pop_front_below(
        &mut self,
        now: DateTime<Utc>,
        below: Option<PackageSize>,
    ) -> Option<(DroneRequest, DateTime<Utc>)> {
        self.promote_overdue(now);
        let sizes = below.map_or(self.order.len(), |size| size as usize);
        let (_, order) = self.order[..sizes]
            .iter_mut()
            .filter_map(|o| o.first_key_value().map(|(k, _)| *k).map(|k| (k, o)))
            .min_by_key(|(k, _)| *k)?;
        let (_, id) = order.pop_first()?;
        let entry = self.waiting.remove(&id)?;
        self.arrivals
            .remove(&(entry.since.timestamp_millis(), entry.key.2, id));
        Some((entry.request, entry.since))
    }

    /// Every waiting request, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &DroneRequest> {
        self.waiting.values().map(|e| &e.request)
    }

    fn seq(&mut self) -> i64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Whether a request waiting since `since` is past the bound at `now`.
    fn overdue(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.max_normal_wait.is_some_and(|max| now - since >= max)
    }

    fn link(&mut self, request: DroneRequest, seq: i64, since: DateTime<Utc>, promoted: bool) {
        let urgent = request.expedited || promoted;
        let deadline = request.deadline.map_or(i64::MAX, |d| d.timestamp_millis());
        let key = (u8::from(!urgent), deadline, seq);
        let id = request.delivery_id.clone();
        self.order[request.package_size as usize].insert(key, id.clone());
        if !urgent {
            self.arrivals
                .insert((since.timestamp_millis(), seq, id.clone()));
        }
        self.waiting.insert(
            id,
            Entry {
                key,
                since,
                request,
            },
        );
    }

    fn unlink(&mut self, delivery_id: &str) -> Option<Entry> {
        let entry = self.waiting.remove(delivery_id)?;
        self.order[entry.request.package_size as usize].remove(&entry.key);
        self.arrivals.remove(&(
            entry.since.timestamp_millis(),
            entry.key.2,
            delivery_id.to_owned(),
        ));
        Some(entry)
    }

    /// Serves as expedited every normal request past the bound at `now`.
    fn promote_overdue(&mut self, now: DateTime<Utc>) {
        let Some(max) = self.max_normal_wait else {
            return;
        };
        let cutoff = (now - max).timestamp_millis();
        while let Some((since, _, _)) = self.arrivals.first() {
            if *since > cutoff {
                break;
            }
            let Some((_, _, id)) = self.arrivals.pop_first() else {
                break;
            };
            if let Some(entry) = self.unlink(&id) {
                tracing::debug!(delivery_id = %id, "waited past the starvation bound: served as expedited");
                self.link(entry.request, entry.key.2, entry.since, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::{Location, PackageSize};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn req(id: &str, ticket: u64) -> DroneRequest {
        DroneRequest {
            delivery_id: id.into(),
            ticket,
            pickup: Location::new(47.6, -122.3),
            dropoff: Location::new(47.7, -122.2),
            expedited: false,
            deadline: None,
            package_size: PackageSize::Small,
            package_weight: 1.0,
        }
    }

    fn expedited(id: &str) -> DroneRequest {
        DroneRequest {
            expedited: true,
            ..req(id, 1)
        }
    }

    fn due(id: &str, minutes: i64) -> DroneRequest {
        DroneRequest {
            deadline: Some(t0() + Duration::minutes(minutes)),
            ..req(id, 1)
        }
    }

    fn drain_at(q: &mut PendingQueue, now: DateTime<Utc>) -> Vec<(String, u64)> {
        std::iter::from_fn(|| q.pop_front(now).map(|(r, _)| (r.delivery_id, r.ticket))).collect()
    }

    fn drain(q: &mut PendingQueue) -> Vec<(String, u64)> {
        drain_at(q, t0())
    }

    fn ids(drained: Vec<(String, u64)>) -> Vec<String> {
        drained.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn first_come_first_served_with_in_place_updates() {
        let mut q = PendingQueue::default();
        assert!(q.upsert_back(req("a", 1), t0()));
        assert!(q.upsert_back(req("b", 1), t0()));
        assert!(q.upsert_back(req("c", 1), t0()));
        // A newer ticket replaces the request but keeps its place; an older
        // one is ignored.
        assert!(!q.upsert_back(req("a", 2), t0()));
        assert!(!q.upsert_back(req("b", 0), t0()));
        assert_eq!(q.len(), 3);
        assert_eq!(
            drain(&mut q),
            [("a".into(), 2), ("b".into(), 1), ("c".into(), 1)]
        );
        assert_eq!(q.len(), 0);
        assert!(q.pop_front(t0()).is_none());
    }

    #[test]
    fn removed_and_requeued_requests_are_not_served_twice() {
        let mut q = PendingQueue::default();
        for id in ["a", "b", "c"] {
            q.upsert_back(req(id, 1), t0());
        }
        assert_eq!(q.remove("b").map(|r| r.ticket), Some(1));
        assert!(q.remove("b").is_none());
        // "a" handed back to the front after being taken.
        let a = q.pop_front(t0());
        assert_eq!(a.as_ref().map(|(r, _)| r.delivery_id.as_str()), Some("a"));
        q.push_front(req("a", 3), t0());
        // "c" withdrawn and requested again goes to the back.
        q.remove("c");
        q.upsert_back(req("d", 1), t0());
        q.upsert_back(req("c", 2), t0());
        assert_eq!(
            drain(&mut q),
            [("a".into(), 3), ("d".into(), 1), ("c".into(), 2)]
        );
    }

    #[test]
    fn expedited_first_then_earliest_deadline_then_arrival() {
        let mut q = PendingQueue::default();
        q.upsert_back(req("n1", 1), t0());
        q.upsert_back(due("late", 90), t0());
        q.upsert_back(req("n2", 1), t0());
        q.upsert_back(expedited("e1"), t0());
        q.upsert_back(due("soon", 10), t0());
        q.upsert_back(
            DroneRequest {
                deadline: Some(t0() + Duration::minutes(30)),
                ..expedited("e2")
            },
            t0(),
        );
        assert_eq!(
            ids(drain(&mut q)),
            ["e2", "e1", "soon", "late", "n1", "n2"],
            "expedited (a deadline first among them), then deadlines, then arrival"
        );
    }

    #[test]
    fn a_reschedule_moves_the_request_to_its_new_urgency() {
        let mut q = PendingQueue::default();
        q.upsert_back(req("a", 1), t0());
        q.upsert_back(req("b", 1), t0());
        assert!(!q.upsert_back(
            DroneRequest {
                ticket: 2,
                ..expedited("b")
            },
            t0()
        ));
        assert_eq!(ids(drain(&mut q)), ["b", "a"]);
    }

    #[test]
    fn a_handed_back_request_is_first_of_its_urgency() {
        let mut q = PendingQueue::default();
        q.upsert_back(req("a", 1), t0());
        q.upsert_back(req("b", 1), t0());
        let (a, since) = q.pop_front(t0()).unwrap();
        q.push_front(a, since);
        q.upsert_back(expedited("e"), t0());
        assert_eq!(ids(drain(&mut q)), ["e", "a", "b"]);
    }

    #[test]
    fn a_normal_request_past_the_starvation_bound_is_served_as_expedited() {
        let mut q = PendingQueue::new(Some(Duration::minutes(5)));
        q.upsert_back(req("old", 1), t0());
        q.upsert_back(req("young", 1), t0() + Duration::minutes(3));
        for n in 0..3 {
            q.upsert_back(expedited(&format!("e{n}")), t0() + Duration::minutes(4));
        }
        // At 4 minutes nobody is overdue: the expedited go first.
        assert_eq!(
            q.pop_front(t0() + Duration::minutes(4))
                .map(|(r, _)| r.delivery_id),
            Some("e0".into())
        );
        // At 6 minutes "old" has waited past the bound: it ranks with the
        // expedited, by its arrival (before theirs); "young" has not.
        assert_eq!(
            ids(drain_at(&mut q, t0() + Duration::minutes(6))),
            ["old", "e1", "e2", "young"]
        );
    }

    #[test]
    fn without_a_bound_normal_requests_wait_behind_every_expedited() {
        let mut q = PendingQueue::default();
        q.upsert_back(req("old", 1), t0());
        q.upsert_back(expedited("e"), t0() + Duration::days(1));
        assert_eq!(
            ids(drain_at(&mut q, t0() + Duration::days(2))),
            ["e", "old"]
        );
    }

    #[test]
    fn large_queues_stay_consistent() {
        let mut q = PendingQueue::new(Some(Duration::minutes(1)));
        for n in 0..10_000 {
            q.upsert_back(req(&format!("d{n}"), 1), t0());
        }
        for n in 0..9_990 {
            q.remove(&format!("d{n}"));
        }
        assert_eq!(q.len(), 10);
        assert_eq!(q.order.iter().map(BTreeMap::len).sum::<usize>(), 10);
        assert_eq!(q.arrivals.len(), 10);
        assert_eq!(drain_at(&mut q, t0() + Duration::minutes(2)).len(), 10);
        assert_eq!(q.iter().count(), 0);
        assert!(q.arrivals.is_empty() && q.order.iter().all(BTreeMap::is_empty));
    }
}
