//! Dependency health: what `GET /healthz/dependencies` reports, and what
//! lets a request that needs a down dependency fail at once.
//!
//! Readiness does **not** depend on this. A readiness probe that checks a
//! shared dependency takes every replica out of load balancing together
//! when that dependency blips, and the outage cascades to whatever calls
//! the engine; reads that another store could have served fail too. So
//! `/readyz` says only whether this process has started and is not
//! draining, and dependencies are watched here instead:
//!
//! - a monitor task probes each dependency every [`PROBE_EVERY`] (each
//!   probe bounded by [`PROBE_TIMEOUT`]) and keeps its last outcome, the
//!   last error (with credentials removed, see [`redact`]) and since when it
//!   is down; `dronedelivery_dependency_up{dependency}` carries the same;
//! - a request path that needs a dependency the monitor saw down fails with
//!   [`StoreError::DependencyDown`] before trying (503 with `Retry-After`
//!   naming the dependency), instead of waiting for a connection timeout;
//!   requests that need only the others are served as usual;
//! - the workflow's circuit breakers ([`crate::breaker`]) stay what holds
//!   the queue back while a store fails; their state is shown beside.
//!
//! A dependency is up until a probe fails: an engine that has just started
//! serves at once, and a wrong verdict costs one request its normal error.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::breaker::{BreakerState, Breakers};
use crate::metrics as m;
use crate::ports::{Backends, DependencyDown, StoreError, StoreResult};

/// How often each dependency is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long one probe may take before it counts as a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the engine depends on, one entry per port that can be probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dependency {
    /// The message queue (Service Bus, Redis Streams or in-process).
    Queue,
    /// Delivery records and tracking events.
    Deliveries,
    /// Drone state.
    Drones,
    /// Packages.
    Packages,
    /// Dead letters.
    DeadLetters,
    /// Delivery history (utilization).
    History,
}

impl Dependency {
    /// Every dependency, in the order they are reported.
    pub const ALL: [Self; 6] = [
        Self::Queue,
        Self::Deliveries,
        Self::Drones,
        Self::Packages,
        Self::DeadLetters,
        Self::History,
    ];

    /// Its name in reports, metrics and problem documents.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Deliveries => "deliveries",
            Self::Drones => "drones",
            Self::Packages => "packages",
            Self::DeadLetters => "deadletters",
            Self::History => "history",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The backend serving it (`redis`, `mongodb`, `servicebus`, `memory`…).
    pub fn backend(self, backends: &Backends) -> &'static str {
        match self {
            Self::Queue => backends.queue.backend(),
            Self::Deliveries => backends.deliveries.backend(),
            Self::Drones => backends.drones.backend(),
            Self::Packages => backends.packages.backend(),
            Self::DeadLetters => backends.dead_letters.backend(),
            Self::History => backends.history.backend(),
        }
    }

    /// One probe of it.
    pub async fn probe(self, backends: &Backends) -> StoreResult<()> {
        match self {
            Self::Queue => backends.queue.ping().await,
            Self::Deliveries => backends.deliveries.ping().await,
            Self::Drones => backends.drones.ping().await,
            Self::Packages => backends.packages.ping().await,
            Self::DeadLetters => backends.dead_letters.ping().await,
            Self::History => backends.history.ping().await,
        }
    }
}

/// One dependency, as `GET /healthz/dependencies` reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DependencyStatus {
    /// `queue`, `deliveries`, `drones`, `packages`, `deadletters`, `history`.
    #[cfg_attr(feature = "openapi", schema(example = "packages"))]
    pub name: String,
    /// What serves it: `servicebus`, `redis-streams`, `redis`, `mongodb`,
    /// `memory`.
    #[cfg_attr(feature = "openapi", schema(example = "mongodb"))]
    pub backend: String,
    /// Whether its last probe succeeded (true before the first).
    pub up: bool,
    /// The workflow's circuit breaker on it (`closed`, `open`,
    /// `half_open`), where the workflow has one.
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = Option<String>, example = "closed"))]
    pub breaker: Option<BreakerState>,
    /// The last probe's error, credentials removed.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_error: Option<String>,
    /// When it was last probed.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub checked_at: Option<DateTime<Utc>>,
    /// Since when it is down.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub down_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone)]
struct Slot {
    down: bool,
    last_error: Option<String>,
    checked_at: Option<DateTime<Utc>>,
    down_since: Option<DateTime<Utc>>,
}

/// The last known health of each dependency (see the module docs).
#[derive(Debug, Default)]
pub struct Health {
    slots: Mutex<[Slot; Dependency::ALL.len()]>,
}

impl Health {
    fn slots(&self) -> std::sync::MutexGuard<'_, [Slot; Dependency::ALL.len()]> {
        // Each critical section replaces one slot whole.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Ok` unless `dependency` is known to be down; then the error that
    /// names it, so the caller fails fast.
    ///
    /// # Errors
    /// [`StoreError::DependencyDown`].
    pub fn require(&self, dependency: Dependency) -> StoreResult<()> {
        if self.slots()[dependency.index()].down {
            return Err(StoreError::DependencyDown(DependencyDown {
                dependency: dependency.name(),
                retry_after: PROBE_EVERY,
            }));
        }
        Ok(())
    }

    /// Records a probe's outcome.
    pub fn record(&self, dependency: Dependency, outcome: &StoreResult<()>) {
        let now = Utc::now();
        let mut slots = self.slots();
        let slot = &mut slots[dependency.index()];
        let was_down = slot.down;
        slot.checked_at = Some(now);
        match outcome {
            Ok(()) => {
                slot.down = false;
                slot.down_since = None;
                if was_down {
                    tracing::info!(dependency = dependency.name(), "dependency is back");
                }
            }
            Err(e) => {
                let error = redact(&e.to_string());
                if !was_down {
                    tracing::warn!(dependency = dependency.name(), %error,
                        "dependency is down: requests that need it fail fast until it is back");
                    slot.down_since = Some(now);
                }
                slot.down = true;
                slot.last_error = Some(error);
            }
        }
        metrics::gauge!(m::DEPENDENCY_UP, "dependency" => dependency.name()).set(if slot.down {
            0.0
        } else {
            1.0
        });
    }

    /// Every dependency's status, with the workflow breakers' states.
    pub fn report(&self, backends: &Backends, breakers: &Breakers) -> Vec<DependencyStatus> {
        let slots = self.slots().clone();
        Dependency::ALL
            .iter()
            .map(|&d| {
                let slot = &slots[d.index()];
                DependencyStatus {
                    name: d.name().to_owned(),
                    backend: d.backend(backends).to_owned(),
                    up: !slot.down,
                    breaker: match d {
                        Dependency::Deliveries => Some(breakers.deliveries.state()),
                        Dependency::Packages => Some(breakers.packages.state()),
                        _ => None,
                    },
                    last_error: slot.last_error.clone(),
                    checked_at: slot.checked_at,
                    down_since: slot.down_since,
                }
            })
            .collect()
    }
}

/// Probes every dependency once, at most [`PROBE_TIMEOUT`] each, and
/// records the outcomes.
pub async fn probe_all(health: &Health, backends: &Backends) {
    let one = |d: Dependency| async move {
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, d.probe(backends)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                PROBE_TIMEOUT.as_millis()
            ))),
        };
        health.record(d, &outcome);
    };
    let [a, b, c, d, e, f] = Dependency::ALL;
    tokio::join!(one(a), one(b), one(c), one(d), one(e), one(f));
}

/// `text` with credentials removed: the password of `scheme://user:pass@`
/// URLs, and the values of `key=`/`sig=`/`password=`-like settings
/// (connection strings, SAS tokens), so a backend's error can be shown to
/// anyone who can read the health report.
pub fn redact(text: &str) -> String {
    const SECRET_KEYS: &[&str] = &[
        "sharedaccesskey=",
        "accountkey=",
        "password=",
        "pwd=",
        "sig=",
        "key=",
        "token=",
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        // `://user:secret@host` → `://user:***@host`.
        if let Some(after) = rest.strip_prefix("://") {
            let end = after
                .find(|c: char| c == '/' || c.is_whitespace())
                .unwrap_or(after.len());
            if let Some(at) = after[..end].rfind('@') {
                let userinfo = &after[..at];
                out.push_str("://");
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str("***"),
                }
                rest = &after[at..];
                continue;
            }
        }
        let boundary = out
            .chars()
            .last()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        if boundary {
            let key = SECRET_KEYS.iter().find(|k| {
                rest.get(..k.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(k))
            });
            if let Some(key) = key {
                out.push_str(&rest[..key.len()]);
                out.push_str("***");
                let after = &rest[key.len()..];
                let end = after
                    .find(|c: char| c == ';' || c == '&' || c == ',' || c.is_whitespace())
                    .unwrap_or(after.len());
                rest = &after[end..];
                continue;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_removed_from_errors() {
        assert_eq!(
            redact("cannot connect to rediss://default:s3cr3t@cache.example:6380/0: refused"),
            "cannot connect to rediss://default:***@cache.example:6380/0: refused"
        );
        assert_eq!(
            redact("mongodb://admin:p%40ss@db:27017 timed out"),
            "mongodb://admin:***@db:27017 timed out"
        );
        assert_eq!(
            redact("Endpoint=sb://ns/;SharedAccessKeyName=listen;SharedAccessKey=abc+/=;x"),
            "Endpoint=sb://ns/;SharedAccessKeyName=listen;SharedAccessKey=***;x"
        );
        assert_eq!(
            redact("sr=https%3a%2f%2fns&sig=AbC%2b&se=1&skn=p"),
            "sr=https%3a%2f%2fns&sig=***&se=1&skn=p"
        );
        assert_eq!(redact("monkey=1 turkey=2"), "monkey=1 turkey=2");
        assert_eq!(
            redact("connection refused (os error 111)"),
            "connection refused (os error 111)"
        );
        assert_eq!(redact("été://x"), "été://x");
    }

    #[test]
    fn a_failed_probe_makes_requests_fail_fast_until_one_succeeds() {
        let health = Health::default();
        assert!(
            health.require(Dependency::Packages).is_ok(),
            "up until probed"
        );
        health.record(
            Dependency::Packages,
            &Err(StoreError::Unavailable("mongodb://u:pw@h refused".into())),
        );
        match health.require(Dependency::Packages) {
            Err(StoreError::DependencyDown(down)) => {
                assert_eq!(down.dependency, "packages");
                assert_eq!(down.retry_after, PROBE_EVERY);
            }
            other => panic!("expected DependencyDown, got {other:?}"),
        }
        assert!(
            health.require(Dependency::Deliveries).is_ok(),
            "the others are still served"
        );
        let slot = health.slots()[Dependency::Packages.index()].clone();
        assert!(slot.down_since.is_some());
        assert!(slot
            .last_error
            .as_deref()
            .is_some_and(|e| !e.contains("pw")));
        health.record(Dependency::Packages, &Ok(()));
        assert!(health.require(Dependency::Packages).is_ok());
        assert!(health.slots()[Dependency::Packages.index()]
            .down_since
            .is_none());
    }
}
