//! The domain: plain data and rules, no actors and no I/O.
//!
//! Every decision the engine makes about a delivery lives here as plain
//! functions over plain data, testable without a runtime:
//! [`lifecycle::apply`] (the delivery's stage machine), [`dispatch`] (which
//! drone serves which request), and the validation of client input
//! ([`request`]). The actors around them load, store and send.

pub mod capacity;
pub mod delivery;
pub mod dispatch;
pub mod drone;
pub mod geo;
pub mod lifecycle;
pub mod limits;
pub mod ownership;
pub mod package;
pub mod request;

pub use delivery::{
    CancelReason, Confirmation, ConfirmationRequired, ConfirmationTime, Delivery, DeliveryRecord,
    DeliveryStage, DeliveryStatus, HistoryEntry, TrackingEvent, UserAccount,
};
pub use drone::{DroneReport, DroneRequest, DroneState, DroneStatus};
pub use geo::{Location, LocationSpec, ServiceArea};
pub use limits::{Battery, FleetMix, FleetSpec, Payload, PayloadLimits};
pub use package::{Package, PackageInfo, PackagePatch, PackageSize, Upserted};
pub use request::{DeliveryRequest, FieldError, RescheduleRequest, ValidationError};
