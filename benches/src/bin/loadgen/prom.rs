//! Reading counters from the engines' Prometheus endpoints.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use crate::client::{self, Target};

/// Queue messages settled, by operation and outcome.
const MESSAGES_TOTAL: &str = "dronedelivery_queue_messages_total";
/// Deliveries whose drone flight reached Completed.
const DELIVERIES_COMPLETED_TOTAL: &str = "dronedelivery_deliveries_completed_total";

/// The counters the end-to-end load follows, summed over every engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// `delivery` messages settled `completed`: the workflow created the
    /// delivery and asked the fleet for a drone (the original workflow
    /// service's unit of work).
    pub completed: f64,
    pub retried: f64,
    pub deferred: f64,
    pub deadlettered: f64,
    /// Drone flights finished (`Completed` stage).
    pub flights_completed: f64,
}

impl Sample {
    /// `self - before`, field by field.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            completed: self.completed - before.completed,
            retried: self.retried - before.retried,
            deferred: self.deferred - before.deferred,
            deadlettered: self.deadlettered - before.deadlettered,
            flights_completed: self.flights_completed - before.flights_completed,
        }
    }
}

/// Scrapes one or more `/metrics` endpoints.
pub struct Scraper {
    targets: Vec<Arc<Target>>,
}

impl Scraper {
    /// `urls` are engine base URLs or full `/metrics` URLs.
    pub fn new(urls: &[String]) -> anyhow::Result<Self> {
        if urls.is_empty() {
            bail!("no metrics URL");
        }
        let targets = urls
            .iter()
            .map(|u| {
                let u = u.trim_end_matches('/');
                if u.ends_with("/metrics") {
                    Target::parse(u)
                } else {
                    Target::parse(&format!("{u}/metrics"))
                }
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { targets })
    }

    /// The counters now, summed over the endpoints.
    pub async fn sample(&self) -> anyhow::Result<Sample> {
        let mut s = Sample::default();
        for target in &self.targets {
            let (status, body) = client::get(target, "", Duration::from_secs(10)).await?;
            if status != 200 {
                bail!("metrics answered {status}");
            }
            let text = String::from_utf8_lossy(&body);
            let msg = |outcome| {
                sum(
                    &text,
                    MESSAGES_TOTAL,
                    &[("operation", "delivery"), ("outcome", outcome)],
                )
            };
            s.completed += msg("completed");
            s.retried += msg("retried");
            s.deferred += msg("deferred");
            s.deadlettered += msg("deadlettered");
            s.flights_completed += sum(&text, DELIVERIES_COMPLETED_TOTAL, &[]);
        }
        Ok(s)
    }
}

/// Sum of the samples of metric `name` whose labels include every pair of
/// `labels` (Prometheus text format).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_set, value) = if let Some(r) = rest.strip_prefix('{') {
                let (set, value) = r.split_once('}')?;
                (set, value)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None;
            };
            let has_all = labels.iter().all(|(k, v)| {
                label_set
                    .split(',')
                    .any(|pair| pair.trim() == format!("{k}=\"{v}\""))
            });
            if !has_all {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_series() {
        let text = "# TYPE dronedelivery_queue_messages_total counter\n\
dronedelivery_queue_messages_total{operation=\"delivery\",outcome=\"completed\"} 7\n\
dronedelivery_queue_messages_total{operation=\"cancel\",outcome=\"completed\"} 100\n\
dronedelivery_queue_messages_total{outcome=\"completed\",operation=\"delivery\",x=\"y\"} 3\n\
dronedelivery_queue_messages_total_other{operation=\"delivery\",outcome=\"completed\"} 1000\n\
dronedelivery_deliveries_completed_total 5\n";
        let labels = [("operation", "delivery"), ("outcome", "completed")];
        assert_eq!(sum(text, MESSAGES_TOTAL, &labels), 10.0);
        assert_eq!(sum(text, DELIVERIES_COMPLETED_TOTAL, &[]), 5.0);
    }
}
