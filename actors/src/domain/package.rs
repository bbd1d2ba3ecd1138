//! Packages: what a drone carries.

use serde::{Deserialize, Serialize};

/// Package size class. The original swagger said lower case while the workflow
/// sent `"Small"`; input is accepted in any case and written in the canonical
/// capitalised form.
///
/// The sizes are ordered (`Small < Medium < Large`): a drone's payload class
/// is the largest size it carries (see [`super::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PackageSize {
    /// Fits any drone.
    Small,
    /// Standard box.
    Medium,
    /// Largest class a drone carries.
    Large,
}

impl PackageSize {
    /// Case-insensitive parse of `Small|Medium|Large`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "small" => Some(Self::Small),
            "medium" => Some(Self::Medium),
            "large" => Some(Self::Large),
            _ => None,
        }
    }

    /// The lower-case name (`small`), as configuration and store keys
    /// spell it.
    pub fn lower_name(self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::Medium => "medium",
            Self::Large => "large",
        }
    }

    /// The numeric value the original DroneScheduler model used.
    pub fn as_int(self) -> u8 {
        self as u8
    }
}

impl<'de> Deserialize<'de> for PackageSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("expected one of Small, Medium, Large"))
    }
}

/// The package part of a delivery request (`packageInfo`), as carried on the
/// queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PackageInfo {
    /// Client-chosen id; also the package document's `_id`.
    pub package_id: String,
    /// Size class.
    pub size: PackageSize,
    /// Weight (unit left to the client, as in the original; kilograms by convention).
    pub weight: f64,
    /// Free tag (the original's Cosmos shard key).
    pub tag: Option<String>,
}

/// A stored package, in the original Package service's JSON shape
/// (`{"id","size","weight","tag"}`). Every field but `id` is optional because
/// the original accepted `PUT /api/packages/42` with no body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Package {
    /// Package id (`_id`).
    pub id: String,
    /// Size class.
    pub size: Option<PackageSize>,
    /// Weight.
    pub weight: Option<f64>,
    /// Tag.
    pub tag: Option<String>,
}

impl From<&PackageInfo> for Package {
    fn from(p: &PackageInfo) -> Self {
        Self {
            id: p.package_id.clone(),
            size: Some(p.size),
            weight: Some(p.weight),
            tag: p.tag.clone(),
        }
    }
}

/// A partial update for `PATCH /api/packages/{id}`: only the present fields change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackagePatch {
    /// New size, if given.
    pub size: Option<PackageSize>,
    /// New weight, if given.
    pub weight: Option<f64>,
    /// New tag, if given.
    pub tag: Option<String>,
}

impl PackagePatch {
    /// Applies the patch to a stored package.
    pub fn apply(&self, p: &mut Package) {
        if let Some(s) = self.size {
            p.size = Some(s);
        }
        if let Some(w) = self.weight {
            p.weight = Some(w);
        }
        if let Some(t) = &self.tag {
            p.tag = Some(t.clone());
        }
    }
}

/// Outcome of an upsert, which the HTTP contract maps to 201 or 204.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// The document did not exist.
    Created,
    /// The document existed and was replaced.
    Updated,
}
