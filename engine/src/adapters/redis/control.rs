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

use std::sync::{Arc, OnceLock, Weak};
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
/// First and longest pause before subscribing again.
const RESUBSCRIBE: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));

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

/// Subscribes to `channel` and passes each request on; ends when the plane
/// is gone.
async fn subscribe(
    client: ::redis::Client,
    channel: String,
    tx: mpsc::Sender<IncomingRequest>,
    alive: Weak<()>,
) {
    use futures::StreamExt;
    let mut failures = 0u32;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, ::redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                failures = 0;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    if alive.strong_count() == 0 {
                        return;
                    }
                    let payload: String = match msg.get_payload() {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable operator request ignored");
                            continue;
                        }
                    };
                    match serde_json::from_str::<Envelope>(&payload) {
                        Ok(e) => {
                            let incoming = IncomingRequest {
                                id: e.id,
                                request: e.request,
                            };
                            if tx.send(incoming).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed operator request ignored");
                        }
                    }
                }
                tracing::warn!("lost the subscription to operator requests; subscribing again");
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(error = %e, "cannot subscribe to operator requests; retrying");
                }
            }
        }
        if alive.strong_count() == 0 {
            return;
        }
        let (first, longest) = RESUBSCRIBE;
        tokio::time::sleep(
            first
                .saturating_mul(2u32.saturating_pow(failures.min(8)))
                .min(longest),
        )
        .await;
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
            tokio::spawn(subscribe(
                self.client.clone(),
                self.keys.control(engine),
                tx,
                Arc::downgrade(&alive),
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
