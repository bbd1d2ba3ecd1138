//! What one drone carries and how far it flies: the payload and battery
//! stored with each drone. The rules that use them (which drone may take
//! which job) are in [`super::limits`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::package::PackageSize;

/// What one drone carries: its class and weight limit, stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// The largest package size it carries.
    pub class: PackageSize,
    /// The heaviest package it carries.
    pub max_weight_kg: f64,
}

impl Payload {
    /// Whether a package of `size` and `weight` fits.
    pub fn fits(&self, size: PackageSize, weight: f64) -> bool {
        size <= self.class && weight <= self.max_weight_kg
    }
}

/// A drone's battery, as stored with it: a range in metres.
///
/// While the drone flies, `level_m` is what is left; while it is parked at
/// its depot it charges, and `level_m` is what it had when it started
/// charging at `charging_since_ms` (so the stored document need not be
/// rewritten as it charges: [`Battery::level_at`] adds the charge).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Battery {
    /// Range on a full battery, metres.
    pub capacity_m: f64,
    /// Range left, metres (when charging: when charging started).
    pub level_m: f64,
    /// Metres of range regained per second parked at the depot (real
    /// time: the simulation's speed is applied when the drone is seeded).
    pub recharge_mps: f64,
    /// When charging started (epoch milliseconds); absent while flying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging_since_ms: Option<i64>,
}

impl Battery {
    /// A full battery of `capacity_m`, charging (parked) since `now`.
    pub fn full(capacity_m: f64, recharge_mps: f64, now: DateTime<Utc>) -> Self {
        Self {
            capacity_m,
            level_m: capacity_m,
            recharge_mps,
            charging_since_ms: Some(now.timestamp_millis()),
        }
    }

    /// The range left at `now`, charge included.
    pub fn level_at(&self, now: DateTime<Utc>) -> f64 {
        let charged = self.charging_since_ms.map_or(0.0, |since| {
            let secs = (now.timestamp_millis() - since).max(0) as f64 / 1000.0;
            secs * self.recharge_mps
        });
        (self.level_m + charged).clamp(0.0, self.capacity_m)
    }

    /// The charge at `now`, 0 to 100.
    pub fn percent_at(&self, now: DateTime<Utc>) -> u8 {
        if self.capacity_m <= 0.0 {
            return 0;
        }
        (self.level_at(now) / self.capacity_m * 100.0).round() as u8
    }

    /// Takes off: the charge so far is kept and charging stops.
    pub fn take_off(&mut self, now: DateTime<Utc>) {
        self.level_m = self.level_at(now);
        self.charging_since_ms = None;
    }

    /// Flies `meters`.
    pub fn drain(&mut self, meters: f64) {
        self.level_m = (self.level_m - meters).max(0.0);
    }

    /// Lands at the depot: charging starts (a drone already charging
    /// keeps its start).
    pub fn land(&mut self, now: DateTime<Utc>) {
        if self.charging_since_ms.is_none() {
            self.charging_since_ms = Some(now.timestamp_millis());
        }
    }
}
