//! Circuit breakers, one per backend the workflow writes to.
//!
//! After `threshold` consecutive failures a breaker opens: the pump stops
//! pulling messages (they wait in the queue, their delivery count untouched,
//! instead of burning retries and ending dead-lettered because a store was
//! down for a minute). After `cooldown` it lets work through again
//! (half-open); the first success closes it, a failure opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics as m;

/// Breaker state, as the `dronedelivery_breaker_state` gauge reports it
/// (0 closed, 1 open, 2 half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are held back until the cooldown ends.
    Open,
    /// Trial calls flow; the next outcome decides.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
}

/// One backend's breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    backend: &'static str,
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(backend: &'static str, threshold: u32, cooldown: Duration) -> Self {
        metrics::gauge!(m::BREAKER_STATE, "backend" => backend).set(0.0);
        Self {
            backend,
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: None,
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A few field updates per critical section: a poisoned lock still
        // holds a consistent breaker.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, inner: &mut Inner, state: BreakerState) {
        if inner.state != state {
            tracing::warn!(
                backend = self.backend,
                ?state,
                "circuit breaker changed state"
            );
        }
        inner.state = state;
        let v = match state {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        };
        metrics::gauge!(m::BREAKER_STATE, "backend" => self.backend).set(v);
    }

    /// Whether work may go to this backend now (moves an open breaker whose
    /// cooldown has passed to half-open).
    pub fn allows(&self) -> bool {
        let mut inner = self.inner();
        match inner.state {
            BreakerState::Closed | BreakerState::HalfOpen => true,
            BreakerState::Open => {
                if inner
                    .opened_at
                    .is_some_and(|t| t.elapsed() >= self.cooldown)
                {
                    self.set(&mut inner, BreakerState::HalfOpen);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// A call succeeded.
    pub fn success(&self) {
        let mut inner = self.inner();
        inner.failures = 0;
        inner.opened_at = None;
        self.set(&mut inner, BreakerState::Closed);
    }

    /// A call failed because the backend was unavailable.
    pub fn failure(&self) {
        let mut inner = self.inner();
        inner.failures = inner.failures.saturating_add(1);
        if inner.state == BreakerState::HalfOpen || inner.failures >= self.threshold {
            inner.opened_at = Some(Instant::now());
            self.set(&mut inner, BreakerState::Open);
        }
    }

    /// Current state.
    pub fn state(&self) -> BreakerState {
        self.inner().state
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.backend
    }
}

/// The breakers of the backends the workflow depends on.
#[derive(Debug)]
pub struct Breakers {
    /// Delivery store.
    pub deliveries: CircuitBreaker,
    /// Package store.
    pub packages: CircuitBreaker,
}

impl Breakers {
    /// Breakers that open after `threshold` consecutive failures for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            deliveries: CircuitBreaker::new("deliveries", threshold, cooldown),
            packages: CircuitBreaker::new("packages", threshold, cooldown),
        }
    }

    /// Whether a breaker is half-open: the pump then pulls one message at a
    /// time, as the trial.
    pub fn trial_only(&self) -> bool {
        self.deliveries.state() == BreakerState::HalfOpen
            || self.packages.state() == BreakerState::HalfOpen
    }

    /// Whether every backend accepts work (the pump pulls only then).
    pub fn all_allow(&self) -> bool {
        // Evaluate both so each open breaker can move to half-open.
        let d = self.deliveries.allows();
        let p = self.packages.allows();
        d && p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_recovers_through_half_open() {
        let b = CircuitBreaker::new("test", 3, Duration::from_millis(30));
        b.failure();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allows());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allows());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.failure();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "a failed trial opens it again"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allows());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = CircuitBreaker::new("test", 2, Duration::from_secs(60));
        b.failure();
        b.success();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
