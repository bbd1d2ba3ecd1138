//! Every Redis key the adapters use, built in this one place.
//!
//! All keys live under a configurable prefix `{p}` (e.g. `dronedelivery`), so
//! that several deployments (or parallel test runs) can share one server and
//! an operator can find or drop everything with `SCAN MATCH {p}:*`.
//!
//! | Key | Type | Holds |
//! |---|---|---|
//! | `{p}:delivery:{id}` | string | JSON of the `DeliveryRecord` |
//! | `{p}:delivery:{id}:events` | list | JSON `TrackingEvent`s, oldest first (`RPUSH`) |
//! | `{p}:deliveries:awaiting` | set | ids of deliveries whose stage awaits a drone |
//! | `{p}:deliveries:at-risk` | set | ids of deliveries under way at risk of missing their deadline |
//! | `{p}:deliveries:timers` | sorted set | ids of deliveries with a durable timer, by due time (epoch ms) |
//! | `{p}:drone:{id}` | string | JSON of the `DroneState` |
//! | `{p}:drones` | set | ids of all stored drones |
//! | `{p}:drones:free` | geo set | the pool: free drones at their positions |
//! | `{p}:drones:free:{class}` | geo set | the free drones of one payload class (`small`, `medium`, `large`) |
//! | `{p}:drone-claim:{id}` | string | claim number of a claimed drone (absent while free) |
//! | `{p}:delivery-drone:{id}` | string | the drone claimed for a delivery |
//! | `{p}:drone-claims` | string | counter claim numbers are taken from |
//! | `{p}:idem:{key}` | string | first answer for an idempotency key (with `PX` TTL) |
//! | `{p}:stream:{stream}` | stream | queue messages of partition 0 (consumer group: the queue's group) |
//! | `{p}:stream:{stream}:{n}` | stream | queue messages of partition `n` > 0 |
//! | `{p}:stream:{stream}[:{n}]:delayed` | sorted set | a partition's abandoned-with-delay messages, score = due time (epoch ms) |
//! | `{p}:stream:{stream}-expedited[:{n}][:delayed]` | stream, sorted set | the same for the expedited lane (see `adapters::lanes`), read first |
//! | `{p}:engines` | sorted set | live engines, score = when their membership lapses (server clock, ms) |
//! | `{p}:lease:{n}` | hash | `owner`, `epoch`, `expires` of partition `n`'s lease |
//! | `{p}:lease-epoch` | string | counter every lease grant takes its epoch from |
//! | `{p}:members` | sorted set | every engine (gateways included), score = when its card lapses (server clock, ms) |
//! | `{p}:member:{id}` | string | engine `id`'s card (JSON: role, version, readiness, partitions, …), expiring with it |
//! | `{p}:control:{id}` | pub/sub channel | operator requests for engine `id` |
//! | `{p}:control-reply:{request}` | list | the answer to one operator request (expires after a minute) |
//! | `{p}:ownership-changes` | pub/sub channel | an engine released partitions, joined or left: the others plan again at once |
//!
//! Ids are embedded verbatim. Delivery ids are UUIDs minted by the gateway
//! and drone ids look like `drone-0042`, so they cannot contain the
//! `:events` suffix and collide with another key.

use dronedelivery_actors::domain::PackageSize;

/// Builds the keys of one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (a trailing `:` is ignored).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches(':').to_owned(),
        }
    }

    /// The prefix, without a trailing `:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `SCAN MATCH` pattern of every key under the prefix: `{p}:*`.
    pub fn pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }

    /// `{p}:delivery:{id}`: the delivery record (JSON).
    pub fn delivery(&self, id: &str) -> String {
        format!("{}:delivery:{id}", self.prefix)
    }

    /// `{p}:delivery:{id}:events`: the delivery's tracking events (list of JSON).
    pub fn delivery_events(&self, id: &str) -> String {
        format!("{}:delivery:{id}:events", self.prefix)
    }

    /// `{p}:deliveries:awaiting`: set of ids of deliveries waiting for a drone.
    pub fn deliveries_awaiting(&self) -> String {
        format!("{}:deliveries:awaiting", self.prefix)
    }

    /// `{p}:deliveries:at-risk`: set of ids of deliveries under way at
    /// risk of missing their deadline.
    pub fn deliveries_at_risk(&self) -> String {
        format!("{}:deliveries:at-risk", self.prefix)
    }

    /// `{p}:deliveries:timers`: sorted set of delivery ids by the time
    /// their durable timer is due (epoch ms).
    pub fn delivery_timers(&self) -> String {
        format!("{}:deliveries:timers", self.prefix)
    }

    /// `{p}:drone:{id}`: one drone's state (JSON).
    pub fn drone(&self, id: &str) -> String {
        format!("{}:drone:{id}", self.prefix)
    }

    /// `{p}:drones`: set of all drone ids.
    pub fn drones(&self) -> String {
        format!("{}:drones", self.prefix)
    }

    /// `{p}:drones:free`: the pool, a geo set of the free drones at their
    /// positions.
    pub fn drones_free(&self) -> String {
        format!("{}:drones:free", self.prefix)
    }

    /// `{p}:drones:free:{small|medium|large}`: the free drones of one
    /// payload class (a geo set, like the whole pool), which claims search
    /// class by class.
    pub fn drones_free_class(&self, class: PackageSize) -> String {
        format!("{}:drones:free:{}", self.prefix, class.lower_name())
    }

    /// `{p}:drone-claim:{id}`: the claim number of a claimed drone (absent
    /// while it is free).
    pub fn drone_claim(&self, id: &str) -> String {
        format!("{}:drone-claim:{id}", self.prefix)
    }

    /// `{p}:delivery-drone:{id}`: the drone claimed for a delivery.
    pub fn delivery_drone(&self, delivery_id: &str) -> String {
        format!("{}:delivery-drone:{delivery_id}", self.prefix)
    }

    /// `{p}:drone-claims`: the counter claim numbers are taken from.
    pub fn drone_claims(&self) -> String {
        format!("{}:drone-claims", self.prefix)
    }

    /// `{p}:idem:{key}`: the stored answer of an idempotency key.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// `{p}:stream:{stream}`: the queue's stream.
    pub fn stream(&self, stream: &str) -> String {
        format!("{}:stream:{stream}", self.prefix)
    }

    /// The stream of one partition of a partitioned queue: partition 0 keeps
    /// the unpartitioned name `{p}:stream:{stream}` (so a single partition is
    /// the layout of a queue that is not partitioned, and messages queued
    /// before partitioning are still read), partition `n` is
    /// `{p}:stream:{stream}:{n}`.
    pub fn partition_stream(&self, stream: &str, partition: u32) -> String {
        if partition == 0 {
            self.stream(stream)
        } else {
            self.stream(&format!("{stream}:{partition}"))
        }
    }

    /// The delayed set of one partition's stream (see [`Self::partition_stream`]).
    pub fn partition_delayed(&self, stream: &str, partition: u32) -> String {
        format!("{}:delayed", self.partition_stream(stream, partition))
    }

    /// `{p}:engines`: live engines, scored by when their membership lapses.
    pub fn engines(&self) -> String {
        format!("{}:engines", self.prefix)
    }

    /// `{p}:lease:{n}`: the lease of partition `n` (hash: owner, epoch, expires).
    pub fn lease(&self, partition: u32) -> String {
        format!("{}:lease:{partition}", self.prefix)
    }

    /// `{p}:lease-epoch`: the counter lease grants take their epochs from.
    pub fn lease_epoch(&self) -> String {
        format!("{}:lease-epoch", self.prefix)
    }

    /// `{p}:members`: every engine's id, scored by when its card lapses.
    pub fn members(&self) -> String {
        format!("{}:members", self.prefix)
    }

    /// `{p}:member:{id}`: engine `id`'s card (JSON).
    pub fn member(&self, engine: &str) -> String {
        format!("{}:member:{engine}", self.prefix)
    }

    /// `{p}:control:{id}`: the pub/sub channel of engine `id`'s operator
    /// requests.
    pub fn control(&self, engine: &str) -> String {
        format!("{}:control:{engine}", self.prefix)
    }

    /// `{p}:control-reply:{request}`: the answer to one operator request.
    pub fn control_reply(&self, request: &str) -> String {
        format!("{}:control-reply:{request}", self.prefix)
    }

    /// `{p}:ownership-changes`: the pub/sub channel engines announce lease
    /// and membership changes on.
    pub fn ownership_changes(&self) -> String {
        format!("{}:ownership-changes", self.prefix)
    }

    /// `{p}:stream:{stream}:delayed`: messages abandoned with a delay, by due time.
    pub fn stream_delayed(&self, stream: &str) -> String {
        format!("{}:stream:{stream}:delayed", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn layout() {
        let k = Keys::new("dd:");
        assert_eq!(k.prefix(), "dd");
        assert_eq!(k.pattern(), "dd:*");
        assert_eq!(k.delivery("d1"), "dd:delivery:d1");
        assert_eq!(k.delivery_events("d1"), "dd:delivery:d1:events");
        assert_eq!(k.deliveries_awaiting(), "dd:deliveries:awaiting");
        assert_eq!(k.drone("drone-1"), "dd:drone:drone-1");
        assert_eq!(k.drones(), "dd:drones");
        assert_eq!(k.idempotency("abc"), "dd:idem:abc");
        assert_eq!(k.stream("deliveries"), "dd:stream:deliveries");
        assert_eq!(k.engines(), "dd:engines");
        assert_eq!(k.lease(3), "dd:lease:3");
        assert_eq!(k.lease_epoch(), "dd:lease-epoch");
        assert_eq!(
            k.stream_delayed("deliveries"),
            "dd:stream:deliveries:delayed"
        );
    }
}
