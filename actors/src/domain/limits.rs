//! What a drone can carry and how far it can fly: payload classes, weight
//! limits, the fleet's mix of classes, and batteries.
//!
//! A drone has a **payload class** (`Small`, `Medium`, `Large`, the sizes of
//! the packages themselves) and a weight limit: it carries a package whose
//! size is not larger than its class and whose weight is within its limit.
//! The limits per class and the mix of classes in a fleet are the
//! deployment's configuration ([`PayloadLimits`], [`FleetMix`]); each drone
//! is stored with its own class and limit ([`Payload`]), so a claim in the
//! store decides on the drone alone, whichever engine seeded it.
//!
//! A drone has a **battery** ([`Battery`]): a range in metres, drained by
//! every metre flown and recharged at its depot at a fixed rate while it is
//! parked there. It takes a job only if it can fly to the pickup, on to the
//! dropoff and back home to its depot on what it has
//! ([`DroneState::can_take`]): so no drone is ever stranded, and a drone
//! short of range for one job may still take a shorter one.
//!
//! A request for a package no drone of the fleet's mix can ever carry is
//! refused when it is made ([`FleetSpec::check_payload`]); one that only the
//! busy drones could carry waits for one of them.
//!
//! The same rules run in the stores' atomic claims (the Redis claim script
//! checks class, weight and battery as [`DroneState::can_take`] does).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

pub use super::capacity::{Battery, Payload};
use super::drone::{DroneRequest, DroneState};
use super::package::PackageSize;

/// Every payload class, smallest first.
pub const CLASSES: [PackageSize; 3] = [PackageSize::Small, PackageSize::Medium, PackageSize::Large];

/// The weight a drone of each class carries at most (kilograms by the
/// original's convention; `inf` for no limit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PayloadLimits {
    /// Limit of a small drone.
    pub small: f64,
    /// Limit of a medium drone.
    pub medium: f64,
    /// Limit of a large drone.
    pub large: f64,
}

impl Default for PayloadLimits {
    /// 20, 100 and 500: the original's clients send small packages of 10 to
    /// 14 and test packages of 100, which keep working.
    fn default() -> Self {
        Self {
            small: 20.0,
            medium: 100.0,
            large: 500.0,
        }
    }
}

impl PayloadLimits {
    /// The limit of `class`.
    pub fn of(&self, class: PackageSize) -> f64 {
        match class {
            PackageSize::Small => self.small,
            PackageSize::Medium => self.medium,
            PackageSize::Large => self.large,
        }
    }
}

/// Why a class list (`small=20,medium=100,large=500`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ClassListError(String);

/// Parses `class=value` pairs, each class at most once, in any order.
fn parse_class_list(text: &str) -> Result<Vec<(PackageSize, f64)>, ClassListError> {
    let mut out: Vec<(PackageSize, f64)> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').ok_or_else(|| {
            ClassListError(format!("'{part}' is not class=value (e.g. small=70)"))
        })?;
        let class = PackageSize::parse(name).ok_or_else(|| {
            ClassListError(format!(
                "unknown class '{}': small, medium or large",
                name.trim()
            ))
        })?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| ClassListError(format!("'{}' is not a number", value.trim())))?;
        if value.is_nan() || value < 0.0 {
            return Err(ClassListError(format!("{part}: must be >= 0")));
        }
        if out.iter().any(|(c, _)| *c == class) {
            return Err(ClassListError(format!(
                "{} given twice",
                class.lower_name()
            )));
        }
        out.push((class, value));
    }
    Ok(out)
}

impl FromStr for PayloadLimits {
    type Err = ClassListError;

    /// `small=20,medium=100,large=500`; a class not named keeps its default.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut limits = Self::default();
        for (class, value) in parse_class_list(s)? {
            match class {
                PackageSize::Small => limits.small = value,
                PackageSize::Medium => limits.medium = value,
                PackageSize::Large => limits.large = value,
            }
        }
        Ok(limits)
    }
}

impl fmt::Display for PayloadLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "small={},medium={},large={}",
            self.small, self.medium, self.large
        )
    }
}

/// The share of each payload class in a fleet, in parts (percent by
/// convention): `small=70,medium=25,large=5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetMix {
    /// Parts of small drones.
    pub small: u32,
    /// Parts of medium drones.
    pub medium: u32,
    /// Parts of large drones.
    pub large: u32,
}

impl Default for FleetMix {
    fn default() -> Self {
        Self {
            small: 70,
            medium: 25,
            large: 5,
        }
    }
}

impl FleetMix {
    fn parts(&self, class: PackageSize) -> u32 {
        match class {
            PackageSize::Small => self.small,
            PackageSize::Medium => self.medium,
            PackageSize::Large => self.large,
        }
    }

    /// The classes of a fleet of `n` drones, by drone index: each class
    /// with a share gets at least one drone, the largest classes first
    /// (so a small fleet can still carry everything its mix names), and the
    /// rest is shared by largest remainder. The classes are interleaved
    /// (`drone i` of a fleet spread over depots round-robin), so every depot
    /// gets its share of each class.
    pub fn classes(&self, n: usize) -> Vec<PackageSize> {
        let total: u64 = CLASSES.iter().map(|c| u64::from(self.parts(*c))).sum();
        if n == 0 || total == 0 {
            return vec![PackageSize::Large; n];
        }
        let mut counts = [0usize; 3];
        let mut left = n;
        // At least one of each class with a share, largest first.
        for (i, class) in CLASSES.iter().enumerate().rev() {
            if self.parts(*class) > 0 && left > 0 {
                counts[i] = 1;
                left -= 1;
            }
        }
        // The rest by largest remainder of the exact shares.
        let exact: Vec<f64> = CLASSES
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let share = n as f64 * f64::from(self.parts(*c)) / total as f64;
                (share - counts[i] as f64).max(0.0)
            })
            .collect();
        let mut given = 0usize;
        for (i, e) in exact.iter().enumerate() {
            let whole = (e.floor() as usize).min(left - given);
            counts[i] += whole;
            given += whole;
        }
        let mut order: Vec<usize> = (0..3).filter(|i| self.parts(CLASSES[*i]) > 0).collect();
        order.sort_by(|a, b| {
            let fa = exact[*a] - exact[*a].floor();
            let fb = exact[*b] - exact[*b].floor();
            fb.total_cmp(&fa).then(b.cmp(a))
        });
        for i in order.iter().cycle().take(left - given) {
            counts[*i] += 1;
        }
        // Interleave: spread each class evenly over the indices.
        let mut out = Vec::with_capacity(n);
        let mut placed = [0usize; 3];
        for k in 0..n {
            // The class furthest behind its share of the first k+1 drones.
            let next = (0..3)
                .filter(|i| placed[*i] < counts[*i])
                .max_by(|a, b| {
                    let da = counts[*a] as f64 * (k + 1) as f64 / n as f64 - placed[*a] as f64;
                    let db = counts[*b] as f64 * (k + 1) as f64 / n as f64 - placed[*b] as f64;
                    da.total_cmp(&db).then(a.cmp(b))
                })
                .unwrap_or(2);
            placed[next] += 1;
            out.push(CLASSES[next]);
        }
        out
    }

    /// The largest class with a share (`None`: an empty mix).
    pub fn largest(&self) -> Option<PackageSize> {
        CLASSES.iter().rev().copied().find(|c| self.parts(*c) > 0)
    }
}

impl FromStr for FleetMix {
    type Err = ClassListError;

    /// `small=70,medium=25,large=5`; a class not named has no drones. At
    /// least one class must have a share.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mix = Self {
            small: 0,
            medium: 0,
            large: 0,
        };
        for (class, value) in parse_class_list(s)? {
            if value.fract() != 0.0 || value > f64::from(u32::MAX) {
                return Err(ClassListError(format!(
                    "{}={value}: parts must be whole numbers",
                    class.lower_name()
                )));
            }
            let parts = value as u32;
            match class {
                PackageSize::Small => mix.small = parts,
                PackageSize::Medium => mix.medium = parts,
                PackageSize::Large => mix.large = parts,
            }
        }
        if mix.largest().is_none() {
            return Err(ClassListError(
                "the mix needs at least one class with a share".into(),
            ));
        }
        Ok(mix)
    }
}

impl fmt::Display for FleetMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "small={},medium={},large={}",
            self.small, self.medium, self.large
        )
    }
}

/// The metres a drone at `from` flies for a job: to the pickup, on to the
/// dropoff, and home to its depot.
pub fn job_distance_m(drone: &DroneState, job: &DroneRequest) -> f64 {
    drone.position.distance_m(&job.pickup)
        + job.pickup.distance_m(&job.dropoff)
        + job.dropoff.distance_m(&drone.depot)
}

impl DroneState {
    /// Whether this drone may take `job` at `now`: the package fits its
    /// payload, and its battery holds the whole flight (to the pickup, the
    /// dropoff and home). A drone stored without a payload or a battery
    /// (seeded by an earlier version) has no such limit.
    pub fn can_take(&self, job: &DroneRequest, now: DateTime<Utc>) -> bool {
        let fits = self
            .payload
            .is_none_or(|p| p.fits(job.package_size, job.package_weight));
        fits && self
            .battery
            .is_none_or(|b| job_distance_m(self, job) <= b.level_at(now))
    }
}

/// The free drones a claim reads at most (nearest first, over the classes
/// it looks at) before it answers that none can take the job now: a bound
/// on the cost of a claim when many free drones are short of range.
pub const CLAIM_SCAN_MAX: usize = 256;

/// The payload class a drone is pooled under: its own, or `Large` (carries
/// anything) for a drone stored without one.
pub fn pool_class(drone: &DroneState) -> PackageSize {
    drone.payload.map_or(PackageSize::Large, |p| p.class)
}

/// The pool's rule for choosing a drone: the **smallest class** that
/// carries the package's size, then the next ones, so the larger drones
/// stay free for what only they can carry; within a class the nearest free
/// drone to the pickup (ties: the lowest id) that can take the job at `now`
/// (weight limit and battery). At most [`CLAIM_SCAN_MAX`] drones are
/// looked at.
pub fn choose<'a>(
    free: impl IntoIterator<Item = &'a DroneState>,
    job: &DroneRequest,
    now: DateTime<Utc>,
) -> Choice<'a> {
    let mut by_class: [Vec<&DroneState>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for d in free {
        by_class[pool_class(d) as usize].push(d);
    }
    let mut scanned = 0;
    let mut any = false;
    for class in &mut by_class[job.package_size as usize..] {
        if class.is_empty() {
            continue;
        }
        any = true;
        class.sort_by(|a, b| {
            a.position
                .distance_m(&job.pickup)
                .total_cmp(&b.position.distance_m(&job.pickup))
                .then_with(|| a.id.cmp(&b.id))
        });
        for d in class.iter() {
            if scanned == CLAIM_SCAN_MAX {
                return Choice::NoneFits;
            }
            scanned += 1;
            if d.can_take(job, now) {
                return Choice::Drone(d);
            }
        }
    }
    if any {
        Choice::NoneFits
    } else {
        Choice::NoneFree
    }
}

/// What [`choose`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice<'a> {
    /// The drone to claim.
    Drone(&'a DroneState),
    /// Free drones of the classes that carry the package, none of which can
    /// take this job now (over its weight limit, or short of range):
    /// another job may still find one.
    NoneFits,
    /// No free drone of a class that carries the package's size: no other
    /// job of that size or larger finds one either.
    NoneFree,
}

/// The drones a deployment seeds: how many of each class, with which
/// weight limits and battery.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSpec {
    /// Share of each class.
    pub mix: FleetMix,
    /// Weight limit per class.
    pub limits: PayloadLimits,
    /// Range on a full battery, metres (`None`: unlimited).
    pub range_m: Option<f64>,
    /// Metres of range regained per second of simulated time at the depot.
    pub recharge_mps: f64,
}

impl Default for FleetSpec {
    /// The default mix and limits, 100 km of range (any job inside the
    /// default service area, from the depot nearest its pickup and back)
    /// and a recharge of 600 km per simulated hour (ten minutes from empty:
    /// a fast charger or a battery swap at the depot).
    fn default() -> Self {
        Self {
            mix: FleetMix::default(),
            limits: PayloadLimits::default(),
            range_m: Some(100_000.0),
            recharge_mps: 600_000.0 / 3600.0,
        }
    }
}

/// Why no drone of the fleet can ever carry a package.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// Larger than the largest class in the fleet.
    #[error(
        "no drone carries a {size:?} package: the largest drones in the fleet are {largest:?}"
    )]
    TooLarge {
        /// The package's size.
        size: PackageSize,
        /// The fleet's largest class.
        largest: PackageSize,
    },
    /// Heavier than every class that could take its size.
    #[error("no drone carries {weight} kg: the limit of the fleet's largest drones is {limit} kg")]
    TooHeavy {
        /// The package's weight.
        weight: f64,
        /// The highest limit among the classes that take its size.
        limit: f64,
    },
}

impl PayloadError {
    /// The request field at fault (`packageInfo.size` or `.weight`).
    pub fn field(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "packageInfo.size",
            Self::TooHeavy { .. } => "packageInfo.weight",
        }
    }
}

impl From<PayloadError> for super::ValidationError {
    fn from(e: PayloadError) -> Self {
        Self::field(e.field(), e.to_string())
    }
}

impl FleetSpec {
    /// Whether some drone of this fleet can carry a package of `size` and
    /// `weight` (when free and charged): a request no drone can ever carry
    /// is refused when made, not left waiting.
    pub fn check_payload(&self, size: PackageSize, weight: f64) -> Result<(), PayloadError> {
        let Some(largest) = self.mix.largest() else {
            return Ok(());
        };
        if size > largest {
            return Err(PayloadError::TooLarge { size, largest });
        }
        let limit = CLASSES
            .iter()
            .filter(|c| **c >= size && self.mix.parts(**c) > 0)
            .map(|c| self.limits.of(*c))
            .fold(f64::NEG_INFINITY, f64::max);
        if weight > limit {
            return Err(PayloadError::TooHeavy { weight, limit });
        }
        Ok(())
    }

    /// The shortest flight that serves `job` from any of `depots` and back
    /// to it, when even that is beyond a full battery: no drone can ever
    /// fly the job. `None`: some drone can (or range is unlimited).
    pub fn beyond_range(&self, job: &DroneRequest, depots: &[super::Location]) -> Option<f64> {
        let range = self.range_m?;
        let leg = job.pickup.distance_m(&job.dropoff);
        let shortest = depots
            .iter()
            .map(|d| d.distance_m(&job.pickup) + leg + job.dropoff.distance_m(d))
            .fold(f64::INFINITY, f64::min);
        (shortest.is_finite() && shortest > range).then_some(shortest)
    }

    /// Drone `index`'s payload in a fleet of `n`.
    pub fn payload(&self, classes: &[PackageSize], index: usize) -> Payload {
        let class = classes.get(index).copied().unwrap_or(PackageSize::Large);
        Payload {
            class,
            // JSON has no infinity: no limit is stored as the largest number.
            max_weight_kg: self.limits.of(class).min(f64::MAX),
        }
    }

    /// A full battery for a drone seeded at `now` (`None`: unlimited
    /// range), its recharge rate scaled by the simulation's `speed_factor`.
    pub fn battery(&self, speed_factor: f64, now: DateTime<Utc>) -> Option<Battery> {
        self.range_m
            .map(|range| Battery::full(range, self.recharge_mps * speed_factor, now))
    }
}

#[cfg(test)]
mod tests;
