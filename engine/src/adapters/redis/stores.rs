//! The delivery, drone and idempotency stores.

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::Script;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::domain::{DeliveryRecord, TrackingEvent};
use dronedelivery_actors::ports::{
    DeliveryStore, IdempotencyStore, Saved, StoreError, StoreResult,
};
use serde::de::DeserializeOwned;

use super::{corrupt, millis, unavailable, Keys};

/// Writes a delivery record, its event, its awaiting-drone membership and
/// its expiry at once, unless the stored record has a newer version.
///
/// The event is not appended again when it repeats the last one stored:
/// the same event (the delivery actor retrying a flush, whose record may
/// have moved on meanwhile), or, at the same record version, an event of
/// the same stage and location (a command such as the create recomputed
/// after a failed commit; only its time differs). Either is a save written
/// once already whose answer was lost (the server died between applying it
/// and replying, or the connection dropped): the record is written again,
/// the event log keeps one copy.
///
/// With a fence, nothing is written unless the partition's lease carries
/// the writer's epoch (see `domain::ownership`): checked here, in the same
/// script as the write, so a stale owner cannot slip a write in between.
///
/// The record's durable timer (`wakeAt`) is indexed in the timers sorted
/// set in the same step, so a timer is stored, moved or cleared exactly
/// with the record that carries it.
///
/// KEYS: record, events list, awaiting set, the partition's lease (only
/// read with a fence), timers sorted set, at-risk set.
/// ARGV: version, record JSON, event JSON (`""`: none), delivery id,
/// `"1"` if awaiting a drone, `"1"` if terminal, retention in ms, fence
/// epoch (`""`: none), timer due in epoch ms (`""`: none), `"1"` if at
/// risk and under way.
/// Returns 1 when written, 0 when ignored as stale, 2 when written without
/// appending the repeated event, -1 when fenced.
const SAVE_DELIVERY: &str = r#"
if ARGV[8] ~= '' then
  local epoch = redis.call('HGET', KEYS[4], 'epoch')
  if not epoch or tonumber(epoch) ~= tonumber(ARGV[8]) then
    return -1
  end
end
local version = tonumber(ARGV[1])
local stored
local current = redis.call('GET', KEYS[1])
if current then
  local ok, doc = pcall(cjson.decode, current)
  if ok and type(doc) == 'table' then
    stored = tonumber(doc['version'])
    if stored and stored > version then
      return 0
    end
  end
end
local function same_place(a, b)
  if type(a) ~= 'table' or type(b) ~= 'table' then
    return type(a) == type(b) and a == b
  end
  return a['latitude'] == b['latitude'] and a['longitude'] == b['longitude']
    and a['altitude'] == b['altitude']
end
local function repeats_last(event)
  local last = redis.call('LINDEX', KEYS[2], -1)
  if not last then
    return false
  end
  if last == event then
    return true
  end
  if stored ~= version then
    return false
  end
  local ok1, a = pcall(cjson.decode, last)
  local ok2, b = pcall(cjson.decode, event)
  return ok1 and ok2 and type(a) == 'table' and type(b) == 'table'
    and a['stage'] == b['stage'] and same_place(a['location'], b['location'])
    and a['atRisk'] == b['atRisk']
end
local written = 1
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  if repeats_last(ARGV[3]) then
    written = 2
  else
    redis.call('RPUSH', KEYS[2], ARGV[3])
  end
end
if ARGV[5] == '1' then
  redis.call('SADD', KEYS[3], ARGV[4])
else
  redis.call('SREM', KEYS[3], ARGV[4])
end
if ARGV[9] ~= '' then
  redis.call('ZADD', KEYS[5], ARGV[9], ARGV[4])
else
  redis.call('ZREM', KEYS[5], ARGV[4])
end
if ARGV[10] == '1' then
  redis.call('SADD', KEYS[6], ARGV[4])
else
  redis.call('SREM', KEYS[6], ARGV[4])
end
if ARGV[6] == '1' then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
else
  -- SET has already cleared any TTL of the record.
  redis.call('PERSIST', KEYS[2])
end
return written
"#;

pub(super) fn decode<T: DeserializeOwned>(key: &str, json: &str) -> StoreResult<T> {
    serde_json::from_str(json).map_err(|e| corrupt(key, e))
}

pub(super) fn encode<T: serde::Serialize>(what: &str, value: &T) -> StoreResult<String> {
    // Serialising these plain structs cannot fail; report it if it ever does.
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) async fn ping(conn: &ConnectionManager) -> StoreResult<()> {
    let mut c = conn.clone();
    ::redis::cmd("PING")
        .query_async::<String>(&mut c)
        .await
        .map(|_| ())
        .map_err(unavailable)
}

/// Deliveries and their tracking events (see the [module docs](super)).
#[derive(Clone)]
pub struct RedisDeliveryStore {
    conn: ConnectionManager,
    keys: Keys,
    retention: Duration,
    save: Script,
}

impl RedisDeliveryStore {
    pub(crate) fn new(conn: ConnectionManager, keys: Keys, retention: Duration) -> Self {
        Self {
            conn,
            keys,
            retention,
            save: Script::new(SAVE_DELIVERY),
        }
    }

    /// The key builder of this store.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
}

/// Reads and decodes one JSON document.
pub(super) async fn get_json<T: DeserializeOwned>(
    conn: &ConnectionManager,
    key: &str,
) -> StoreResult<Option<T>> {
    let mut c = conn.clone();
    let json: Option<String> = ::redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .map_err(unavailable)?;
    json.map(|j| decode(key, &j)).transpose()
}

#[async_trait]
impl DeliveryStore for RedisDeliveryStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        get_json(&self.conn, &self.keys.delivery(id)).await
    }

    async fn save(
        &self,
        record: &DeliveryRecord,
        event: Option<&TrackingEvent>,
        fence: Option<Fence>,
    ) -> StoreResult<Saved> {
        let id = &record.delivery.id;
        let record_json = encode("delivery record", record)?;
        let event_json = match event {
            Some(e) => encode("tracking event", e)?,
            None => String::new(),
        };
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut c = self.conn.clone();
        let written: i64 = self
            .save
            .key(self.keys.delivery(id))
            .key(self.keys.delivery_events(id))
            .key(self.keys.deliveries_awaiting())
            .key(self.keys.lease(fence.map_or(0, |f| f.partition)))
            .key(self.keys.delivery_timers())
            .key(self.keys.deliveries_at_risk())
            .arg(record.version)
            .arg(record_json)
            .arg(event_json)
            .arg(id)
            .arg(flag(record.stage.awaits_drone()))
            .arg(flag(record.stage.is_terminal()))
            .arg(millis(self.retention))
            .arg(fence.map_or(String::new(), |f| f.epoch.to_string()))
            .arg(
                record
                    .wake_at
                    .map_or(String::new(), |t| t.timestamp_millis().to_string()),
            )
            .arg(flag(
                record.at_risk.is_some() && !record.stage.is_terminal(),
            ))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        match written {
            1 => Ok(Saved::Written),
            2 => {
                tracing::debug!(
                    delivery_id = %id,
                    version = record.version,
                    "repeated save: its tracking event is stored already"
                );
                Ok(Saved::Repeated)
            }
            0 => Ok(Saved::Stale),
            -1 => Ok(Saved::Fenced),
            other => Err(StoreError::Unavailable(format!(
                "redis: unexpected save reply {other}"
            ))),
        }
    }

    async fn events(&self, id: &str) -> StoreResult<Vec<TrackingEvent>> {
        let key = self.keys.delivery_events(id);
        let mut c = self.conn.clone();
        let items: Vec<String> = ::redis::cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        items.iter().map(|j| decode(&key, j)).collect()
    }

    async fn awaiting_drone(&self) -> StoreResult<Vec<String>> {
        let mut c = self.conn.clone();
        let mut ids: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(self.keys.deliveries_awaiting())
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        ids.sort();
        Ok(ids)
    }

    async fn awaiting_drone_count(&self) -> StoreResult<u64> {
        let mut c = self.conn.clone();
        ::redis::cmd("SCARD")
            .arg(self.keys.deliveries_awaiting())
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn at_risk_count(&self) -> StoreResult<u64> {
        let mut c = self.conn.clone();
        ::redis::cmd("SCARD")
            .arg(self.keys.deliveries_at_risk())
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<String>> {
        let mut c = self.conn.clone();
        ::redis::cmd("ZRANGE")
            .arg(self.keys.delivery_timers())
            .arg("-inf")
            .arg(now.timestamp_millis())
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> StoreResult<()> {
        ping(&self.conn).await
    }
}

/// Idempotency keys (see the [module docs](super)).
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    conn: ConnectionManager,
    keys: Keys,
}

impl RedisIdempotencyStore {
    pub(crate) fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self { conn, keys }
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> StoreResult<Option<String>> {
        let k = self.keys.idempotency(key);
        let mut c = self.conn.clone();
        // The existing key can expire between the failed SET NX and the GET;
        // then the next SET NX may win. Two rounds are enough unless keys
        // expire as fast as we can ask, hence the bound.
        for _ in 0..3 {
            let set: Option<String> = ::redis::cmd("SET")
                .arg(&k)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            if set.is_some() {
                return Ok(None);
            }
            let existing: Option<String> = ::redis::cmd("GET")
                .arg(&k)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            if existing.is_some() {
                return Ok(existing);
            }
        }
        Err(StoreError::Unavailable(format!(
            "idempotency key {key} keeps expiring while being read"
        )))
    }

    async fn get(&self, key: &str) -> StoreResult<Option<String>> {
        let mut c = self.conn.clone();
        ::redis::cmd("GET")
            .arg(self.keys.idempotency(key))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }
}
