//! Deliveries: the stage machine and the documents clients read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::geo::Location;

/// Stage of a delivery. Serialised as the original's integers
/// (`0 Created … 5 Cancelled`, and `6 Scheduled` of its own) so that existing
/// clients keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStage {
    /// Accepted and stored; waiting for a drone.
    Created = 0,
    /// Pickup/dropoff changed; waiting for the drone to head out again.
    Rescheduled = 1,
    /// A drone is flying to the pickup.
    HeadedToPickup = 2,
    /// The package is on board.
    HeadedToDropoff = 3,
    /// Delivered (terminal).
    Completed = 4,
    /// Cancelled by the client (terminal).
    Cancelled = 5,
    /// Booked for a pickup time later than the lead time: no drone yet;
    /// the delivery asks for one at `pickupTime` minus the lead time (a
    /// durable timer, see [`DeliveryRecord::wake_at`]).
    Scheduled = 6,
}

impl DeliveryStage {
    /// All stages in declaration order.
    pub const ALL: [DeliveryStage; 7] = [
        Self::Created,
        Self::Rescheduled,
        Self::HeadedToPickup,
        Self::HeadedToDropoff,
        Self::Completed,
        Self::Cancelled,
        Self::Scheduled,
    ];

    /// The stage's name (`"HeadedToPickup"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Rescheduled => "Rescheduled",
            Self::HeadedToPickup => "HeadedToPickup",
            Self::HeadedToDropoff => "HeadedToDropoff",
            Self::Completed => "Completed",
            Self::Cancelled => "Cancelled",
            Self::Scheduled => "Scheduled",
        }
    }

    /// From the integer code.
    pub fn from_int(n: u64) -> Option<Self> {
        Self::ALL.get(usize::try_from(n).ok()?).copied()
    }

    /// Completed and Cancelled never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }

    /// A delivery in these stages has no drone and is waiting for one.
    pub fn awaits_drone(self) -> bool {
        matches!(self, Self::Created | Self::Rescheduled)
    }
}

impl Serialize for DeliveryStage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for DeliveryStage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        Self::from_int(n).ok_or_else(|| serde::de::Error::custom("unknown delivery stage"))
    }
}

/// How the recipient confirms a delivery. Strings on the ingestion API
/// (`FingerPrint|Picture|Voice|None`), integers in the delivery document, as
/// in the original services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfirmationRequired {
    /// Fingerprint scan.
    FingerPrint = 0,
    /// Photo of the package at the door.
    Picture = 1,
    /// Voice confirmation.
    Voice = 2,
    /// Nothing required.
    None = 3,
}

impl ConfirmationRequired {
    /// Parses the ingestion API's string form (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fingerprint" => Some(Self::FingerPrint),
            "picture" => Some(Self::Picture),
            "voice" => Some(Self::Voice),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// The ingestion API's string form.
    pub fn name(self) -> &'static str {
        match self {
            Self::FingerPrint => "FingerPrint",
            Self::Picture => "Picture",
            Self::Voice => "Voice",
            Self::None => "None",
        }
    }

    /// From the integer code.
    pub fn from_int(n: u64) -> Option<Self> {
        [Self::FingerPrint, Self::Picture, Self::Voice, Self::None]
            .get(usize::try_from(n).ok()?)
            .copied()
    }
}

impl Serialize for ConfirmationRequired {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for ConfirmationRequired {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        Self::from_int(n).ok_or_else(|| serde::de::Error::custom("unknown confirmation type"))
    }
}

/// OpenAPI schemas of the two integer-coded enums, written by hand because
/// their serde form (an integer, see the `Serialize` impls above) is not what
/// a derive would describe (the variant names as strings). Values and names
/// come from the types themselves, so the schemas cannot drift.
#[cfg(feature = "openapi")]
mod schema {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;

    use super::{ConfirmationRequired, DeliveryStage};

    fn integer_enum(what: &str, codes: &[(u8, &str)]) -> RefOr<Schema> {
        let names: Vec<String> = codes
            .iter()
            .map(|(n, name)| format!("{n} {name}"))
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .enum_values(Some(codes.iter().map(|(n, _)| *n)))
            .description(Some(format!(
                "{what}, as an integer code: {}.",
                names.join(", ")
            )))
            .into()
    }

    impl utoipa::PartialSchema for DeliveryStage {
        fn schema() -> RefOr<Schema> {
            let codes = Self::ALL.map(|s| (s as u8, s.name()));
            integer_enum("Stage of a delivery", &codes)
        }
    }

    impl utoipa::ToSchema for DeliveryStage {}

    impl utoipa::PartialSchema for ConfirmationRequired {
        fn schema() -> RefOr<Schema> {
            let codes: Vec<(u8, &str)> = (0..)
                .map_while(ConfirmationRequired::from_int)
                .map(|c| (c as u8, c.name()))
                .collect();
            integer_enum("How the recipient confirms the delivery", &codes)
        }
    }

    impl utoipa::ToSchema for ConfirmationRequired {}
}

/// The owner of a delivery (`{"userId","accountId"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserAccount {
    /// The request's `ownerId`.
    pub user_id: String,
    /// Derived deterministically from the owner (UUIDv5), where the original
    /// minted a fresh random GUID on every call.
    pub account_id: String,
}

impl UserAccount {
    /// The account of an owner id.
    pub fn for_owner(owner_id: &str) -> Self {
        Self {
            user_id: owner_id.to_owned(),
            account_id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, owner_id.as_bytes())
                .to_string(),
        }
    }
}

/// The delivery document of `GET /api/deliveries/{id}`, field for field the
/// original Delivery service's model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Delivery id (a UUID minted by the gateway).
    pub id: String,
    /// Owner.
    pub owner: UserAccount,
    /// Pickup point.
    pub pickup: Location,
    /// Dropoff point.
    pub dropoff: Location,
    /// Free-text deadline, as given.
    pub deadline: String,
    /// Expedited flag (the original lost it on the way to the scheduler).
    pub expedited: bool,
    /// Confirmation type, as an integer.
    pub confirmation_required: ConfirmationRequired,
    /// Assigned drone, once there is one.
    pub drone_id: Option<String>,
}

/// Everything the engine keeps about a delivery: the public document plus the
/// stage machine's state. This is what the delivery store holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// The public document.
    pub delivery: Delivery,
    /// Current stage.
    pub stage: DeliveryStage,
    /// The package carried.
    pub package_id: String,
    /// The pickup text as the client wrote it.
    pub pickup_location: String,
    /// The dropoff text as the client wrote it.
    pub dropoff_location: String,
    /// Requested pickup time.
    pub pickup_time: Option<DateTime<Utc>>,
    /// When the drone is expected at the pickup.
    pub pickup_eta: Option<DateTime<Utc>>,
    /// When the package is expected at the dropoff.
    pub delivery_eta: Option<DateTime<Utc>>,
    /// Correlation id of the request that created it.
    pub correlation_id: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Bumped on every change; lets stores and readers order writes.
    pub version: u64,
    /// Ticket of the current drone request. Bumped whenever a new drone is
    /// requested (create, reschedule) so that late reports from a drone of an
    /// earlier request are recognised and ignored.
    #[serde(default)]
    pub ticket: u64,
    /// The recipient's confirmation, once given.
    #[serde(default)]
    pub confirmation: Option<Confirmation>,
    /// Why the engine cancelled it (compensation), when it was not the client.
    #[serde(default)]
    pub cancel_reason: Option<CancelReason>,
    /// The package's weight as requested, for the monthly summaries (0 in
    /// records written before it was kept).
    #[serde(default)]
    pub package_weight: f64,
    /// The package's size as requested: the drone's class must be at least
    /// this (`None` in records written before it was kept: any drone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_size: Option<super::PackageSize>,
    /// When the engine must look at this delivery again: the durable timer
    /// of a scheduled pickup. The delivery store indexes it by time in the
    /// same atomic write as the record, so a timer is never lost nor
    /// orphaned; the engine holding the delivery's partition wakes it when
    /// due (another engine after a takeover, the same after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<DateTime<Utc>>,
    /// Why the delivery is at risk of missing its deadline (the deadline
    /// passed, or the expected delivery time is after it); `None` while it
    /// is not, or has no deadline. Kept on a completed delivery that missed
    /// its deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk: Option<String>,
}

/// Why the engine (not the client) cancelled a delivery. Stored as the text
/// operators read (`"compensated: no drone became free within 60 s"`); the
/// variant, not a prefix of the text, is what the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelReason {
    /// Compensation: no drone could take it. A replay of its dead-lettered
    /// request revives it.
    Compensated(String),
    /// Any other stored text (kept as it was written).
    Other(String),
}

impl CancelReason {
    const COMPENSATED: &'static str = "compensated";

    /// Parses the stored text.
    pub fn parse(text: &str) -> Self {
        match text.strip_prefix(Self::COMPENSATED) {
            Some("") => Self::Compensated(String::new()),
            Some(rest) => match rest.strip_prefix(": ") {
                Some(why) => Self::Compensated(why.to_owned()),
                None => Self::Other(text.to_owned()),
            },
            None => Self::Other(text.to_owned()),
        }
    }

    /// Whether it was cancelled by compensation.
    pub fn is_compensated(&self) -> bool {
        matches!(self, Self::Compensated(_))
    }
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Compensated(why) if why.is_empty() => f.write_str(Self::COMPENSATED),
            Self::Compensated(why) => write!(f, "{}: {why}", Self::COMPENSATED),
            Self::Other(text) => f.write_str(text),
        }
    }
}

impl Serialize for CancelReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CancelReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

/// When a confirmation was made, in the original's shape
/// (`{"dateTimeValue": "..."}`), kept as the client wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationTime {
    /// The date-time text.
    pub date_time_value: String,
}

/// `POST /api/deliveries/{id}/confirmations`: the recipient confirms
/// receipt. The original discarded it; here it is stored with the delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Confirmation {
    /// When the recipient confirmed.
    pub date_time: ConfirmationTime,
    /// Where.
    pub geo_coordinates: Location,
    /// How.
    pub confirmation_type: ConfirmationRequired,
    /// The evidence (a picture, a fingerprint hash, ...), opaque.
    pub confirmation_blob: String,
    /// When the engine received it.
    #[serde(default = "Utc::now")]
    pub received_at: DateTime<Utc>,
}

impl DeliveryRecord {
    /// Whether a recipient's confirmation is to be stored: `Ok(true)` for a
    /// completed delivery not confirmed yet, `Ok(false)` when one is stored
    /// already (the first wins; a repeat is accepted and ignored), and the
    /// stage when it is not completed.
    pub fn needs_confirmation(&self) -> Result<bool, DeliveryStage> {
        if self.stage != DeliveryStage::Completed {
            return Err(self.stage);
        }
        Ok(self.confirmation.is_none())
    }

    /// Whether the route or times may still change: not once the package is
    /// on board, nor after the end.
    pub fn check_reschedule(&self) -> Result<(), DeliveryStage> {
        if self.stage.is_terminal() || self.stage == DeliveryStage::HeadedToDropoff {
            return Err(self.stage);
        }
        Ok(())
    }

    /// Whether a cancellation changes anything: `Ok(true)` for a delivery
    /// that is still under way, `Ok(false)` for one cancelled already (a
    /// repeat is accepted and ignored), and the stage when it is completed.
    pub fn check_cancel(&self) -> Result<bool, DeliveryStage> {
        match self.stage {
            DeliveryStage::Cancelled => Ok(false),
            DeliveryStage::Completed => Err(DeliveryStage::Completed),
            _ => Ok(true),
        }
    }

    /// Cancelled by compensation (not by the client): a replay revives it.
    pub fn is_compensated(&self) -> bool {
        self.stage == DeliveryStage::Cancelled
            && self
                .cancel_reason
                .as_ref()
                .is_some_and(CancelReason::is_compensated)
    }

    /// Moves to `stage` now; see [`advance_at`](Self::advance_at).
    pub fn advance(&mut self, stage: DeliveryStage, location: Option<Location>) -> TrackingEvent {
        self.advance_at(stage, location, Utc::now())
    }

    /// Moves to `stage` at `now`, bumping the version, and returns the
    /// tracking event to store with it.
    pub fn advance_at(
        &mut self,
        stage: DeliveryStage,
        location: Option<Location>,
        now: DateTime<Utc>,
    ) -> TrackingEvent {
        self.stage = stage;
        self.updated_at = now;
        self.version += 1;
        TrackingEvent {
            delivery_id: self.delivery.id.clone(),
            stage,
            location,
            at: self.updated_at,
            at_risk: None,
        }
    }
}

/// One finished delivery, for the drone utilisation report (the
/// original's never-built Delivery History service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Delivery id (unique: writing it twice keeps one entry).
    pub delivery_id: String,
    /// Owner.
    pub owner_id: String,
    /// The drone that flew it, if one was assigned.
    pub drone_id: Option<String>,
    /// `Completed` or `Cancelled`.
    pub stage: DeliveryStage,
    /// Metres the drone flew for this delivery.
    pub distance_m: f64,
    /// Simulated hours the drone was assigned.
    pub assigned_hours: f64,
    /// Creation of the delivery.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Its package's weight, as requested.
    #[serde(default)]
    pub package_weight: f64,
}

impl HistoryEntry {
    /// The entry of a finished `record`.
    pub fn of(record: &DeliveryRecord, distance_m: f64, assigned_hours: f64) -> Self {
        Self {
            delivery_id: record.delivery.id.clone(),
            owner_id: record.delivery.owner.user_id.clone(),
            drone_id: record.delivery.drone_id.clone(),
            stage: record.stage,
            distance_m,
            assigned_hours,
            created_at: record.created_at,
            finished_at: record.updated_at,
            package_weight: record.package_weight,
        }
    }
}

/// One stage change, kept per delivery (the original wrote these and never
/// read them; here they feed the status and, later, the live stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TrackingEvent {
    /// Delivery id.
    pub delivery_id: String,
    /// Stage entered.
    pub stage: DeliveryStage,
    /// Where it happened, when known.
    pub location: Option<Location>,
    /// When.
    pub at: DateTime<Utc>,
    /// Set on the event that marks the delivery at risk of missing its
    /// deadline (the stage is the one it is in): why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk: Option<String>,
}

/// `GET /api/deliveries/{id}/status`: the original's field names
/// (`stage`, `lastKnownLocation`, `pickupETA`, `deliveryETA`), with real values
/// where the original returned a hard-coded stub. ETAs are RFC 3339 instants
/// rather than server-culture strings; `stageName` is added for humans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// Stage code.
    pub stage: DeliveryStage,
    /// Stage name.
    pub stage_name: String,
    /// The drone's position while one is assigned, else the last stage event's location.
    pub last_known_location: Option<Location>,
    /// Drone expected at pickup.
    #[serde(rename = "pickupETA")]
    pub pickup_eta: Option<DateTime<Utc>>,
    /// Package expected at dropoff.
    #[serde(rename = "deliveryETA")]
    pub delivery_eta: Option<DateTime<Utc>>,
    /// Assigned drone.
    pub drone_id: Option<String>,
    /// The deadline, when the request's `deadline` names a time (ISO-8601
    /// or epoch milliseconds); `null` for free text or none. Waiting
    /// deliveries with earlier deadlines get drones first.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub deadline: Option<DateTime<Utc>>,
    /// The booked pickup time while the delivery is `Scheduled` (stage 6):
    /// it asks for a drone at this time minus the lead time. `null` once it
    /// has, or when it was never scheduled.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Whether the delivery is at risk of missing its deadline: the
    /// deadline passed before delivery, or the expected delivery time is
    /// after it (see `atRiskReason`). A completed delivery that missed its
    /// deadline keeps it.
    #[serde(default)]
    pub at_risk: bool,
    /// Why it is at risk; `null` when it is not.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub at_risk_reason: Option<String>,
}
