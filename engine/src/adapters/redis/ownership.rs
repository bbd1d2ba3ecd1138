//! Partition leases and cluster membership in Redis: the store side of
//! [`dronedelivery_actors::domain::ownership`].
//!
//! - `{p}:engines`: sorted set of live engines, scored by the time (ms, the
//!   server's clock) their membership lapses; a heartbeat re-scores the
//!   engine and drops every lapsed one.
//! - `{p}:lease:{n}`: hash `owner`, `epoch`, `expires` of partition `n`.
//! - `{p}:lease-epoch`: the counter every new grant takes its epoch from,
//!   so epochs are unique and increase across all partitions and engines.
//!
//! - `{p}:ownership-changes`: a pub/sub channel. An engine that released
//!   partitions, joined or left publishes on it, and every engine's
//!   ownership actor plans again at once: a graceful hand-over takes a round
//!   trip instead of a heartbeat. Pub/sub is fire-and-forget; a missed
//!   announcement only means the next heartbeat does the work.
//!
//! Each operation is one Lua script reading the server's `TIME`, so no
//! engine's clock ever decides an expiry, and the script is the exact
//! translation of `LeaseRules::decide` (the tests compare the two).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Script, Value};
use async_trait::async_trait;
use dronedelivery_actors::domain::ownership::{Lease, LeaseAnswer, LeaseOp, PartitionId};
use dronedelivery_actors::ports::{OwnershipStore, StoreResult};

use super::pubsub::{self, Flow};
use super::{bad_reply, millis, text, unavailable, Keys};

/// The server's clock in ms, shared by the scripts.
const NOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// KEYS: engines. ARGV: engine, ttl ms. Returns the live engines.
const HEARTBEAT: &str = r#"
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// KEYS: engines. Returns the live engines.
const ENGINES: &str = r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"#;

/// KEYS: lease, epoch counter. ARGV: op (`acquire`, `renew`, `release`),
/// engine, epoch (renew, release), ttl ms.
/// Returns `{answer, owner, epoch, expires}`; answer 1 held, 2 taken by
/// another, 3 lost, 4 released.
const LEASE: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'owner')
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch'))
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires'))
local live = owner and expires and expires > now
local op, engine, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4])
local function grant(e)
  local until_ms = now + ttl
  redis.call('HSET', KEYS[1], 'owner', engine, 'epoch', e, 'expires', until_ms)
  return {1, engine, e, until_ms}
end
if op == 'acquire' then
  if live and owner ~= engine then
    return {2, owner, epoch, expires}
  end
  if live then
    return grant(epoch)
  end
  return grant(redis.call('INCR', KEYS[2]))
end
local mine = owner == engine and epoch == tonumber(ARGV[3])
if not mine then
  if owner then
    return {3, owner, epoch, expires}
  end
  return {3}
end
if op == 'renew' then
  return grant(epoch)
end
redis.call('DEL', KEYS[1])
return {4}
"#;

/// KEYS: every partition's lease. Returns `{now, {owner, epoch, expires}…}`
/// (`false` fields for a partition with no lease).
const LEASES: &str = r#"
local out = {now}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'owner', 'epoch', 'expires')
  out[i + 1] = v
end
return out
"#;

/// Leases and membership in Redis (see the [module docs](self)).
#[derive(Clone)]
pub struct RedisOwnershipStore {
    conn: ConnectionManager,
    keys: Keys,
    heartbeat: Script,
    engines: Script,
    lease: Script,
    leases: Script,
    /// Where announcements are listened for; `None`: never told.
    announcements: Option<Arc<Announcements>>,
}

/// The subscription to [`Keys::ownership_changes`], started by the first
/// [`OwnershipStore::next_announcement`].
struct Announcements {
    client: ::redis::Client,
    heard: Arc<tokio::sync::Notify>,
    listening: OnceLock<()>,
}

impl std::fmt::Debug for RedisOwnershipStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOwnershipStore")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisOwnershipStore {
    /// The store over a shared connection.
    pub fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self {
            conn,
            keys,
            heartbeat: Script::new(&format!("{NOW}{HEARTBEAT}")),
            engines: Script::new(&format!("{NOW}{ENGINES}")),
            lease: Script::new(&format!("{NOW}{LEASE}")),
            leases: Script::new(&format!("{NOW}{LEASES}")),
            announcements: None,
        }
    }

    /// Listens for announcements with a subscription of its own through
    /// `client` (pub/sub needs a dedicated connection).
    #[must_use]
    pub fn announced_through(mut self, client: ::redis::Client) -> Self {
        self.announcements = Some(Arc::new(Announcements {
            client,
            heard: Arc::new(tokio::sync::Notify::new()),
            listening: OnceLock::new(),
        }));
        self
    }
}

fn number(v: &Value) -> Option<u64> {
    text(v)?.parse().ok()
}

/// `{owner, epoch, expires}` as a lease; `None` when the fields are absent.
fn lease_of(parts: &[Value]) -> Option<Lease> {
    Some(Lease {
        owner: text(parts.first()?)?,
        epoch: number(parts.get(1)?)?,
        expires_at_ms: number(parts.get(2)?)?,
    })
}

#[async_trait]
impl OwnershipStore for RedisOwnershipStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn heartbeat(&self, engine: &str, ttl: Duration) -> StoreResult<Vec<String>> {
        let mut c = self.conn.clone();
        let mut live: Vec<String> = self
            .heartbeat
            .key(self.keys.engines())
            .arg(engine)
            .arg(millis(ttl))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        live.sort();
        Ok(live)
    }

    async fn leave(&self, engine: &str) -> StoreResult<()> {
        let mut c = self.conn.clone();
        ::redis::cmd("ZREM")
            .arg(self.keys.engines())
            .arg(engine)
            .query_async::<i64>(&mut c)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn engines(&self) -> StoreResult<Vec<String>> {
        let mut c = self.conn.clone();
        let mut live: Vec<String> = self
            .engines
            .key(self.keys.engines())
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        live.sort();
        Ok(live)
    }

    async fn lease(
        &self,
        partition: PartitionId,
        engine: &str,
        op: LeaseOp,
        ttl: Duration,
    ) -> StoreResult<LeaseAnswer> {
        let (name, epoch) = match op {
            LeaseOp::Acquire => ("acquire", 0),
            LeaseOp::Renew(e) => ("renew", e),
            LeaseOp::Release(e) => ("release", e),
        };
        let mut c = self.conn.clone();
        let reply: Value = self
            .lease
            .key(self.keys.lease(partition))
            .key(self.keys.lease_epoch())
            .arg(name)
            .arg(engine)
            .arg(epoch)
            .arg(millis(ttl))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let Value::Array(parts) = &reply else {
            return Err(bad_reply("lease", &reply));
        };
        let lease = || lease_of(&parts[1..]).ok_or_else(|| bad_reply("lease", &reply));
        match parts.first().and_then(number) {
            Some(1) => Ok(LeaseAnswer::Held(lease()?)),
            Some(2) => Ok(LeaseAnswer::Taken(lease()?)),
            Some(3) => Ok(LeaseAnswer::Lost),
            Some(4) => Ok(LeaseAnswer::Released),
            _ => Err(bad_reply("lease", &reply)),
        }
    }

    async fn announce(&self) -> StoreResult<()> {
        let mut c = self.conn.clone();
        ::redis::cmd("PUBLISH")
            .arg(self.keys.ownership_changes())
            .arg("")
            .query_async::<i64>(&mut c)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn next_announcement(&self) {
        let Some(a) = &self.announcements else {
            return std::future::pending().await;
        };
        a.listening.get_or_init(|| {
            // Every message, and every (re)subscription (announcements may
            // have been missed), wakes the listener: it plans again.
            let heard = Arc::downgrade(&a.heard);
            tokio::spawn(pubsub::subscribe(
                a.client.clone(),
                self.keys.ownership_changes(),
                "ownership announcements",
                Arc::downgrade(&a.heard),
                move |_| {
                    let heard = heard.upgrade();
                    async move {
                        match heard {
                            Some(heard) => {
                                heard.notify_one();
                                Flow::Continue
                            }
                            None => Flow::Stop,
                        }
                    }
                },
            ));
        });
        a.heard.notified().await;
    }

    async fn leases(&self, partitions: u32) -> StoreResult<(Vec<Option<Lease>>, u64)> {
        let mut invocation = self.leases.prepare_invoke();
        for p in 0..partitions {
            invocation.key(self.keys.lease(p));
        }
        let mut c = self.conn.clone();
        let reply: Value = invocation.invoke_async(&mut c).await.map_err(unavailable)?;
        let Value::Array(parts) = &reply else {
            return Err(bad_reply("leases", &reply));
        };
        let now = parts
            .first()
            .and_then(number)
            .ok_or_else(|| bad_reply("leases", &reply))?;
        let leases = parts[1..]
            .iter()
            .map(|v| match v {
                Value::Array(fields) => lease_of(fields),
                _ => None,
            })
            .collect();
        Ok((leases, now))
    }
}
