//! Counters and latency histograms. Each worker keeps its own [`Stats`]
//! (no shared state on the hot path); they are merged once the run ends.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::client::Outcome;

/// Longest latency a histogram holds (longer ones are clamped), in µs.
const MAX_US: u64 = 3_600_000_000;

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, MAX_US, 3)?)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(MAX_US).max(1)
}

/// What happened to the requests of one class.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Requests sent (answered or not).
    pub sent: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Other responses, by status.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Requests without a response, by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Latency of every response (2xx or not), µs. In the open loop it is
    /// measured from the intended send time.
    pub latency: Histogram<u64>,
    /// Open loop only: time from the actual send to the response, µs.
    pub service: Histogram<u64>,
}

impl Stats {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            sent: 0,
            ok: 0,
            non_2xx: BTreeMap::new(),
            errors: BTreeMap::new(),
            latency: histogram()?,
            service: histogram()?,
        })
    }

    /// Records one request: its outcome, its latency and (open loop) its
    /// service time.
    pub fn record(&mut self, outcome: Outcome, latency: Duration, service: Option<Duration>) {
        self.sent += 1;
        match outcome {
            Outcome::Status(status) => {
                if (200..300).contains(&status) {
                    self.ok += 1;
                } else {
                    *self.non_2xx.entry(status).or_default() += 1;
                }
                self.latency.saturating_record(micros(latency));
                if let Some(s) = service {
                    self.service.saturating_record(micros(s));
                }
            }
            Outcome::Error(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: &Self) -> anyhow::Result<()> {
        self.sent += other.sent;
        self.ok += other.ok;
        for (k, v) in &other.non_2xx {
            *self.non_2xx.entry(*k).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latency.add(&other.latency)?;
        self.service.add(&other.service)?;
        Ok(())
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn answered(&self) -> u64 {
        self.sent - self.error_count()
    }

    /// The JSON figures of this class over `elapsed`.
    pub fn to_json(&self, elapsed: Duration) -> Value {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let non_2xx: BTreeMap<String, u64> = self
            .non_2xx
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let mut v = json!({
            "sent": self.sent,
            "ok": self.ok,
            "non_2xx": non_2xx,
            "errors": self.error_count(),
            "error_kinds": self.errors,
            "rps": round(self.answered() as f64 / secs, 1),
            "ok_rps": round(self.ok as f64 / secs, 1),
            "latency_ms": summary(&self.latency),
        });
        if !self.service.is_empty() {
            v["service_ms"] = summary(&self.service);
        }
        v
    }

    /// One line for people: rate, p50, p99, max.
    pub fn human(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        format!(
            "{} sent, {} ok, {} non-2xx, {} errors, {:.0} rps; latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            self.sent,
            self.ok,
            self.non_2xx.values().sum::<u64>(),
            self.error_count(),
            self.answered() as f64 / secs,
            ms(self.latency.value_at_quantile(0.5)),
            ms(self.latency.value_at_quantile(0.9)),
            ms(self.latency.value_at_quantile(0.99)),
            ms(self.latency.value_at_quantile(0.999)),
            ms(self.latency.max()),
        )
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// p50, p90, p99, p99.9, max and mean of a µs histogram, in ms.
pub fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": round(ms(h.value_at_quantile(0.5)), 3),
        "p90": round(ms(h.value_at_quantile(0.9)), 3),
        "p99": round(ms(h.value_at_quantile(0.99)), 3),
        "p99_9": round(ms(h.value_at_quantile(0.999)), 3),
        "max": round(ms(h.max()), 3),
        "mean": round(h.mean() / 1000.0, 3),
    })
}
