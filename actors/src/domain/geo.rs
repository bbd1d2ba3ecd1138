//! Geography: locations, the service area, and the deterministic mapping of
//! free-text addresses to points.
//!
//! The original system accepted `pickupLocation`/`dropOffLocation` as free text
//! and then flew drones between *random* points in `[0,1)`. Here a location is
//! either explicit coordinates (`"lat,lon"` or `"altitude,lat,lon"`, as the
//! original load test sent) or any other text, which is hashed (FNV-1a, a fixed
//! algorithm, so the mapping is stable across processes, releases and
//! machines) onto a point inside the configured [`ServiceArea`]. Two requests
//! naming `"my pickup"` therefore always fly to the same place, and every
//! flight has a real, bounded distance.

use std::fmt;
use std::hash::Hasher;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Mean Earth radius used by the haversine distance, in metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A point in space, with the field names of the original Delivery service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// Metres above ground.
    pub altitude: f64,
    /// Degrees north, in `[-90, 90]`.
    pub latitude: f64,
    /// Degrees east, in `[-180, 180]`.
    pub longitude: f64,
}

impl Location {
    /// A ground-level point.
    pub fn new(latitude: f64, longitude: f64) -> Self {
        Self {
            altitude: 0.0,
            latitude,
            longitude,
        }
    }

    /// Great-circle distance in metres (haversine; altitude ignored, drones fly
    /// at a few dozen metres so it does not matter for range or ETA).
    pub fn distance_m(&self, other: &Location) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().atan2((1.0 - a).sqrt())
    }

    /// The point `meters` along the way to `target`, or `target` itself when it
    /// is closer than that. Linear interpolation in degrees: exact enough for
    /// the short hops a simulation tick makes.
    pub fn step_towards(&self, target: &Location, meters: f64) -> Location {
        let total = self.distance_m(target);
        if total <= meters || total <= f64::EPSILON {
            return *target;
        }
        let f = meters / total;
        Location {
            altitude: self.altitude + (target.altitude - self.altitude) * f,
            latitude: self.latitude + (target.latitude - self.latitude) * f,
            longitude: self.longitude + (target.longitude - self.longitude) * f,
        }
    }

    fn is_valid(&self) -> bool {
        self.latitude.is_finite()
            && self.longitude.is_finite()
            && self.altitude.is_finite()
            && (-90.0..=90.0).contains(&self.latitude)
            && (-180.0..=180.0).contains(&self.longitude)
    }
}

/// Why a location text was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LocationError {
    /// Empty or whitespace only.
    #[error("must not be empty")]
    Empty,
    /// Looked like coordinates but was out of range or not finite.
    #[error(
        "coordinates out of range: latitude must be in [-90, 90] and longitude in [-180, 180]"
    )]
    OutOfRange,
}

/// A parsed location text: explicit coordinates, or a name to be mapped into
/// the service area.
#[derive(Debug, Clone, PartialEq)]
pub enum LocationSpec {
    /// `"lat,lon"` or `"altitude,lat,lon"`.
    Coordinates(Location),
    /// Any other text (an address, a landmark, a customer code).
    Named(String),
}

impl LocationSpec {
    /// Parses a location text without needing the service area, so that the
    /// gateway can reject bad input before anything is queued.
    pub fn parse(text: &str) -> Result<Self, LocationError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(LocationError::Empty);
        }
        let parts: Vec<&str> = trimmed.split(',').map(str::trim).collect();
        if parts.len() == 2 || parts.len() == 3 {
            let numbers: Option<Vec<f64>> = parts.iter().map(|p| p.parse::<f64>().ok()).collect();
            if let Some(n) = numbers {
                let loc = if n.len() == 2 {
                    Location::new(n[0], n[1])
                } else {
                    Location {
                        altitude: n[0],
                        latitude: n[1],
                        longitude: n[2],
                    }
                };
                return if loc.is_valid() {
                    Ok(Self::Coordinates(loc))
                } else {
                    Err(LocationError::OutOfRange)
                };
            }
        }
        Ok(Self::Named(trimmed.to_owned()))
    }

    /// The point this spec designates inside `area`.
    pub fn resolve(&self, area: &ServiceArea) -> Location {
        match self {
            Self::Coordinates(loc) => *loc,
            Self::Named(name) => area.point_for_name(name),
        }
    }
}

/// Parses and resolves a location text in one step.
pub fn resolve_location(text: &str, area: &ServiceArea) -> Result<Location, LocationError> {
    LocationSpec::parse(text).map(|spec| spec.resolve(area))
}

/// The rectangle (south, west, north, east in degrees) the fleet serves. Depots
/// sit inside it and named locations are mapped into it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceArea {
    /// Southern edge (min latitude).
    pub south: f64,
    /// Western edge (min longitude).
    pub west: f64,
    /// Northern edge (max latitude).
    pub north: f64,
    /// Eastern edge (max longitude).
    pub east: f64,
}

impl Default for ServiceArea {
    /// Greater Seattle, roughly 33 km × 30 km.
    fn default() -> Self {
        Self {
            south: 47.45,
            west: -122.45,
            north: 47.75,
            east: -122.05,
        }
    }
}

impl ServiceArea {
    /// Maps a name onto a point of the area. The name is normalised (trimmed,
    /// lower-cased, inner whitespace collapsed) so that trivial spelling
    /// differences land on the same point; the 64-bit FNV-1a hash is split into
    /// two 32-bit fractions for latitude and longitude.
    pub fn point_for_name(&self, name: &str) -> Location {
        let normalised = name
            .split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" ");
        let mut hasher = fnv::FnvHasher::default();
        hasher.write(normalised.as_bytes());
        let h = hasher.finish();
        let fy = (h >> 32) as f64 / f64::from(u32::MAX);
        let fx = (h & 0xffff_ffff) as f64 / f64::from(u32::MAX);
        Location::new(
            self.south + (self.north - self.south) * fy,
            self.west + (self.east - self.west) * fx,
        )
    }

    /// `n` depot positions spread over the area on a near-square grid, each at
    /// the centre of its cell.
    pub fn depots(&self, n: usize) -> Vec<Location> {
        let n = n.max(1);
        let cols = (n as f64).sqrt().ceil() as usize;
        let rows = n.div_ceil(cols);
        (0..n)
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                Location::new(
                    self.south + (self.north - self.south) * (r as f64 + 0.5) / rows as f64,
                    self.west + (self.east - self.west) * (c as f64 + 0.5) / cols as f64,
                )
            })
            .collect()
    }

    /// Whether a point lies inside the rectangle.
    pub fn contains(&self, loc: &Location) -> bool {
        (self.south..=self.north).contains(&loc.latitude)
            && (self.west..=self.east).contains(&loc.longitude)
    }
}

impl fmt::Display for ServiceArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.south, self.west, self.north, self.east
        )
    }
}

/// Error of [`ServiceArea::from_str`].
#[derive(Debug, thiserror::Error)]
#[error(
    "service area must be 'south,west,north,east' in degrees with south < north and west < east"
)]
pub struct ServiceAreaParseError;

impl FromStr for ServiceArea {
    type Err = ServiceAreaParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| ServiceAreaParseError)?;
        let [south, west, north, east] = n[..] else {
            return Err(ServiceAreaParseError);
        };
        let area = Self {
            south,
            west,
            north,
            east,
        };
        let corners_valid =
            Location::new(south, west).is_valid() && Location::new(north, east).is_valid();
        if !corners_valid || south >= north || west >= east {
            return Err(ServiceAreaParseError);
        }
        Ok(area)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_with_and_without_altitude() {
        assert_eq!(
            LocationSpec::parse("47.6, -122.3").ok(),
            Some(LocationSpec::Coordinates(Location::new(47.6, -122.3)))
        );
        let spec = LocationSpec::parse("0,36.778261,-119.41793200000001").ok();
        assert!(
            matches!(spec, Some(LocationSpec::Coordinates(l)) if (l.latitude - 36.778261).abs() < 1e-9)
        );
        assert_eq!(LocationSpec::parse("95,10"), Err(LocationError::OutOfRange));
        assert_eq!(LocationSpec::parse("   "), Err(LocationError::Empty));
    }

    #[test]
    fn named_locations_are_stable_and_inside_the_area() {
        let area = ServiceArea::default();
        let a = resolve_location("my pickup", &area).ok();
        let b = resolve_location("  My   PICKUP ", &area).ok();
        assert_eq!(a, b);
        let a = a.unwrap_or_default();
        assert!(area.contains(&a));
        // Pinned value: the mapping must never change between releases, or
        // stored deliveries and clients' expectations would move.
        assert!((a.latitude - 47.693_462_586_413_01).abs() < 1e-9, "{a:?}");
        assert!((a.longitude + 122.160_236_699_718_57).abs() < 1e-9, "{a:?}");
    }

    #[test]
    fn depots_fill_the_area() {
        let area = ServiceArea::default();
        let depots = area.depots(5);
        assert_eq!(depots.len(), 5);
        assert!(depots.iter().all(|d| area.contains(d)));
    }

    #[test]
    fn steps_never_overshoot() {
        let a = Location::new(47.5, -122.3);
        let b = Location::new(47.6, -122.2);
        let d = a.distance_m(&b);
        assert!((d - 13_380.0).abs() < 200.0, "{d}");
        let mid = a.step_towards(&b, d / 2.0);
        assert!((mid.distance_m(&b) - d / 2.0).abs() < 50.0);
        assert_eq!(a.step_towards(&b, d * 2.0), b);
    }

    #[test]
    fn service_area_parses() {
        assert!("47.45,-122.45,47.75,-122.05".parse::<ServiceArea>().is_ok());
        assert!("1,2,0,3".parse::<ServiceArea>().is_err());
        assert!("1,2,3".parse::<ServiceArea>().is_err());
    }
}
