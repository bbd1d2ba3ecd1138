//! The control plane in Redis: engines' cards, and operator requests
//! carried to one engine and answered.
//!
//! - `{p}:members`: sorted set of engine ids scored by when their card
//!   lapses (the server's clock, ms); `{p}:member:{id}`: the card (JSON),
//!   expiring with it. Registering re-scores the engine and drops lapsed
//!   ones, in one script.
//! - `{p}:control:{id}`: the pub/sub channel of engine `id`'s requests
//!   (`{"id": request id, "request": …}`). `PUBLISH` answers how many
//!   subscribers received it, so a request to an engine that is not
//!   listening fails at once instead of waiting for its timeout; pub/sub
//!   keeps nothing, so a request is never run late by an engine that comes
//!   back.
//! - `{p}:control-reply:{request id}`: a list the target pushes its answer
//!   to (expiring after a minute); the caller polls it until the timeout.
//!   Polling, not `BLPOP`: operator calls are rare and short, and a poll
//!   needs no connection of its own.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::Script;
use async_trait::async_trait;
use dronedelivery_actors::cluster::{
    CallError, ControlReply, ControlRequest, EngineCard, IncomingRequest,
};
use dronedelivery_actors::ports::{ControlPlane, StoreError, StoreResult};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::pubsub::{self, Event, Flow};
use super::{millis, unavailable, Keys};

/// KEYS: members, card. ARGV: engine, ttl ms, card JSON.
const REGISTER: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return 1
"#;

/// KEYS: members. ARGV: the card key prefix (`{p}:member:`). Returns the
/// live engines' cards.
const MEMBERS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local out = {}
for _, id in ipairs(ids) do
  local card = redis.call('GET', ARGV[1] .. id)
  if card then
    table.insert(out, card)
  end
end
return out
"#;

/// How often a caller looks for its reply.
const REPLY_POLL: Duration = Duration::from_millis(25);
/// How long an unread reply is kept.
const REPLY_TTL: Duration = Duration::from_secs(60);

/// A request on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    id: String,
    request: ControlRequest,
}

/// The control plane of one key prefix.
#[derive(Clone)]
pub struct RedisControlPlane {
    conn: ConnectionManager,
    client: ::redis::Client,
    keys: Keys,
    register: Script,
    members: Script,
    serving: Arc<OnceLock<Serving>>,
}

/// The subscription of the engine serving here.
struct Serving {
    inbox: tokio::sync::Mutex<mpsc::Receiver<IncomingRequest>>,
    /// Kept so the subscription ends when the plane is dropped.
    _alive: Arc<()>,
}

impl std::fmt::Debug for RedisControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisControlPlane")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisControlPlane {
    /// The plane over a shared connection; `client` opens the subscription
    /// (pub/sub needs a connection of its own).
    pub fn new(conn: ConnectionManager, client: ::redis::Client, keys: Keys) -> Self {
        Self {
            conn,
            client,
            keys,
            register: Script::new(REGISTER),
            members: Script::new(MEMBERS),
            serving: Arc::new(OnceLock::new()),
        }
    }

    async fn is_member(&self, engine: &str) -> Result<bool, StoreError> {
        Ok(self.members().await?.iter().any(|c| c.id == engine))
    }
}

#[async_trait]
impl ControlPlane for RedisControlPlane {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn register(&self, card: &EngineCard, ttl: Duration) -> StoreResult<()> {
        let json = serde_json::to_string(card)
            .map_err(|e| StoreError::Corrupt(format!("engine card: {e}")))?;
        let mut c = self.conn.clone();
        self.register
            .key(self.keys.members())
            .key(self.keys.member(&card.id))
            .arg(&card.id)
            .arg(millis(ttl))
            .arg(json)
            .invoke_async::<i64>(&mut c)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn deregister(&self, engine: &str) -> StoreResult<()> {
        let mut c = self.conn.clone();
        ::redis::pipe()
            .atomic()
            .zrem(self.keys.members(), engine)
            .del(self.keys.member(engine))
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn members(&self) -> StoreResult<Vec<EngineCard>> {
        let mut c = self.conn.clone();
        let cards: Vec<String> = self
            .members
            .key(self.keys.members())
            .arg(self.keys.member(""))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut out: Vec<EngineCard> = cards
            .iter()
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(card) => Some(card),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable engine card skipped");
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn call(
        &self,
        engine: &str,
        request: &ControlRequest,
        timeout: Duration,
    ) -> Result<ControlReply, CallError> {
        let id = uuid::Uuid::new_v4().to_string();
        let envelope = serde_json::to_string(&Envelope {
            id: id.clone(),
            request: request.clone(),
        })
        .map_err(|e| StoreError::Corrupt(format!("operator request: {e}")))?;
        let mut c = self.conn.clone();
        let received: i64 = ::redis::cmd("PUBLISH")
            .arg(self.keys.control(engine))
            .arg(envelope)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        if received == 0 {
            return Err(if self.is_member(engine).await? {
                CallError::NotListening(engine.to_owned())
            } else {
                CallError::UnknownEngine(engine.to_owned())
            });
        }
        let key = self.keys.control_reply(&id);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let reply: Option<String> = ::redis::cmd("LPOP")
                .arg(&key)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            if let Some(reply) = reply {
                return serde_json::from_str(&reply)
                    .map_err(|e| StoreError::Corrupt(format!("operator reply: {e}")).into());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CallError::Timeout {
                    engine: engine.to_owned(),
                    timeout,
                });
            }
            tokio::time::sleep(REPLY_POLL).await;
        }
    }

    async fn next_request(&self, engine: &str) -> StoreResult<IncomingRequest> {
        let serving = self.serving.get_or_init(|| {
            let (tx, rx) = mpsc::channel(64);
            let alive = Arc::new(());
            let owner = Arc::downgrade(&alive);
            tokio::spawn(pubsub::subscribe(
                self.client.clone(),
                self.keys.control(engine),
                "operator requests",
                Arc::downgrade(&alive),
                move |event| {
                    let (tx, owner) = (tx.clone(), owner.clone());
                    async move {
                        if owner.strong_count() == 0 {
                            return Flow::Stop;
                        }
                        // Requests missed while away were answered by
                        // nobody: their callers time out.
                        let Event::Message(payload) = event else {
                            return Flow::Continue;
                        };
                        let envelope = match serde_json::from_str::<Envelope>(&payload) {
                            Ok(e) => e,
                            Err(e) => {
                                tracing::warn!(error = %e, "malformed operator request ignored");
                                return Flow::Continue;
                            }
                        };
                        let incoming = IncomingRequest {
                            id: envelope.id,
                            request: envelope.request,
                        };
                        if tx.send(incoming).await.is_err() {
                            Flow::Stop
                        } else {
                            Flow::Continue
                        }
                    }
                },
            ));
            Serving {
                inbox: tokio::sync::Mutex::new(rx),
                _alive: alive,
            }
        });
        serving
            .inbox
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| StoreError::Unavailable("operator requests: subscription ended".into()))
    }

    async fn reply(&self, to: &IncomingRequest, reply: &ControlReply) -> StoreResult<()> {
        let json = serde_json::to_string(reply)
            .map_err(|e| StoreError::Corrupt(format!("operator reply: {e}")))?;
        let key = self.keys.control_reply(&to.id);
        let mut c = self.conn.clone();
        ::redis::pipe()
            .atomic()
            .rpush(&key, json)
            .pexpire(&key, i64::try_from(millis(REPLY_TTL)).unwrap_or(i64::MAX))
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }
}
