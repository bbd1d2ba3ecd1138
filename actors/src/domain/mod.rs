//! The domain: plain data and rules, no actors and no I/O.

pub mod delivery;
pub mod drone;
pub mod geo;
pub mod package;
pub mod request;

pub use delivery::{
    Confirmation, ConfirmationRequired, ConfirmationTime, Delivery, DeliveryRecord, DeliveryStage,
    DeliveryStatus, TrackingEvent, UserAccount,
};
pub use drone::{DroneState, DroneStatus};
pub use geo::{Location, LocationSpec, ServiceArea};
pub use package::{Package, PackageInfo, PackagePatch, PackageSize, Upserted};
pub use request::{DeliveryRequest, FieldError, RescheduleRequest, ValidationError};
