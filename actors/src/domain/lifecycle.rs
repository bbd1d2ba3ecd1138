//! The delivery's rules as a pure state machine.
//!
//! [`apply`] takes what is stored about a delivery (or nothing), one
//! [`Command`] (a client's create, reschedule, cancel or confirmation, a
//! drone's progress report, the fleet giving up) and the time, and decides:
//! the record to store, the tracking events to append, the writes that must
//! be durable *before* the record (history, a compensation's dead letter),
//! and the [`Effect`]s to send once the record is stored. Or it refuses with
//! a [`Rejection`]. It does no I/O and reads no clock, so every rule is a
//! table test (`lifecycle/tests.rs`); the delivery actor only loads, stores
//! and sends what the decision says, and the gateway asks the same record
//! methods ([`DeliveryRecord::check_reschedule`],
//! [`DeliveryRecord::check_cancel`], [`DeliveryRecord::needs_confirmation`])
//! before it queues a command.
//!
//! ```text
//!            create            drone report            PickedUp           Delivered
//! (none) ──────────▶ Created ───────────────▶ HeadedToPickup ──▶ HeadedToDropoff ──▶ Completed
//!                      │  ▲   reschedule (new ticket)  │
//!                      │  └── Rescheduled ◀───────────┘
//!                      └── cancel (any stage before Completed) ──▶ Cancelled
//!
//! create or reschedule with a pickup time beyond the lead time
//!   ──▶ Scheduled ── wake (durable timer, lead time before pickup) ──▶ Created
//! ```
//!
//! Drone reports cannot be refused (the drone has flown): a stale ticket, a
//! drone that does not serve the delivery or a finished delivery make the
//! report [`Verdict::Ignored`], never an error. Reports are applied by
//! progress, not by arrival: a `Delivered` whose `PickedUp` was lost records
//! the stage it implies first. A `Delivered` always asks for the drone to
//! be released (once the outcome is stored), whatever else it changes.

use chrono::{DateTime, Utc};

use super::{
    CancelReason, Confirmation, Delivery, DeliveryRecord, DeliveryRequest, DeliveryStage,
    DroneReport, DroneRequest, HistoryEntry, PackageSize, RescheduleRequest, ServiceArea,
    TrackingEvent, UserAccount,
};
use crate::domain::geo::resolve_location;
use crate::domain::Package;

#[cfg(test)]
mod tests;

/// A delivery to create, as the workflow received it.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The validated request.
    pub request: DeliveryRequest,
    /// Correlation id carried from the HTTP request.
    pub correlation_id: Option<String>,
}

/// Something that may change a delivery.
#[derive(Debug, Clone)]
pub enum Command {
    /// Create it (idempotent: a redelivered message finds it stored).
    Create(Box<NewDelivery>),
    /// Change route or times.
    Reschedule(RescheduleRequest),
    /// Cancel it (idempotent).
    Cancel,
    /// The recipient confirms receipt.
    Confirm(Box<Confirmation>),
    /// Progress from a drone.
    Drone(DroneReport),
    /// The delivery's durable timer is due (a scheduled pickup's lead
    /// time has come).
    Wake,
    /// The fleet gave up finding a drone for the request with this ticket.
    Compensate {
        /// The request ticket given up on.
        ticket: u64,
        /// Why.
        reason: String,
    },
}

/// What the rules need besides the record: the service area (to resolve
/// named locations) and the drones' cruise speed (for the history's hours).
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Where named locations lie.
    pub area: &'a ServiceArea,
    /// Simulated cruise speed, m/s.
    pub drone_speed_mps: f64,
    /// How long before its pickup time a delivery asks for a drone: a
    /// pickup time later than this from now keeps it `Scheduled` until then.
    pub pickup_lead: chrono::Duration,
}

/// Why a command was refused. An answer to the caller, not a failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// No such delivery (yet).
    #[error("delivery not found")]
    NotFound,
    /// The command does not apply in this stage.
    #[error("not possible in stage {}", .0.name())]
    WrongStage(DeliveryStage),
    /// The command's data is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// What a command did, for the reply and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A new delivery was created.
    Created,
    /// A compensated delivery was taken up again (its request replayed).
    Revived,
    /// The delivery existed already (a redelivered create).
    AlreadyExists,
    /// The record changed.
    Applied,
    /// Accepted, nothing to change (a repeated cancel or confirmation, a
    /// report that adds nothing new).
    Unchanged,
    /// A drone report or compensation that no longer applies.
    Ignored(Ignored),
}

/// Why a drone report or a compensation was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The delivery is not stored.
    UnknownDelivery,
    /// The report or compensation answers an older drone request.
    StaleTicket,
    /// The delivery is completed or cancelled.
    Finished,
    /// The reporting drone does not serve this delivery.
    OtherDrone,
    /// A drone took the job after all (compensation only).
    NotWaiting,
}

/// A change to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The record after the change.
    pub record: DeliveryRecord,
    /// Stage events to append, oldest first (none for a confirmation).
    pub events: Vec<TrackingEvent>,
    /// Written before the record: once a reader sees the final stage, the
    /// history entry exists (writing it twice is harmless).
    pub history: Option<HistoryEntry>,
    /// Compensation: the request goes to the dead letters with this reason
    /// before the delivery is stored as cancelled.
    pub dead_letter: Option<CancelReason>,
}

/// Sent once the change (if any) is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Ask the fleet for a drone (a newer ticket replaces an older request
    /// and releases its drone).
    RequestDrone(DroneRequest),
    /// Tell the fleet the delivery needs no drone any more.
    Withdraw,
    /// Let the drone that reported `Delivered` go.
    ReleaseDrone {
        /// The drone.
        drone_id: String,
        /// The ticket of the job it held.
        ticket: u64,
    },
    /// Tell whoever asked to be notified that the delivery was confirmed.
    NotifyRecipients,
}

/// The outcome of [`apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What happened.
    pub verdict: Verdict,
    /// What to store, if anything.
    pub change: Option<Change>,
    /// What to send afterwards.
    pub effects: Vec<Effect>,
}

impl Decision {
    fn unchanged(verdict: Verdict) -> Self {
        Self {
            verdict,
            change: None,
            effects: Vec::new(),
        }
    }

    fn ignored(why: Ignored, effects: Vec<Effect>) -> Self {
        Self {
            verdict: Verdict::Ignored(why),
            change: None,
            effects,
        }
    }
}

/// Decides what `command` does to the delivery stored as `current`, at
/// `now`. See the module docs.
pub fn apply(
    current: Option<&DeliveryRecord>,
    command: Command,
    rules: Rules<'_>,
    now: DateTime<Utc>,
) -> Result<Decision, Rejection> {
    let mut decision = match command {
        Command::Create(new) => Ok(create(current, *new, rules, now)),
        Command::Reschedule(req) => {
            reschedule(current.ok_or(Rejection::NotFound)?, req, rules, now)
        }
        Command::Cancel => cancel(current.ok_or(Rejection::NotFound)?, now),
        Command::Confirm(confirmation) => {
            confirm(current.ok_or(Rejection::NotFound)?, *confirmation, now)
        }
        Command::Drone(report) => Ok(drone_report(current, report, rules, now)),
        Command::Wake => Ok(wake(current, rules, now)),
        Command::Compensate { ticket, reason } => Ok(compensate(current, ticket, reason, now)),
    }?;
    if let Some(change) = decision.change.as_mut() {
        watch(change, rules, now);
    }
    Ok(decision)
}

/// The drone request of a record's current ticket.
pub fn drone_request(record: &DeliveryRecord) -> DroneRequest {
    DroneRequest {
        delivery_id: record.delivery.id.clone(),
        ticket: record.ticket,
        pickup: record.delivery.pickup,
        dropoff: record.delivery.dropoff,
        expedited: record.delivery.expedited,
        // Free text ("LineOfDeadlyZombiatedPeople") means no deadline.
        deadline: super::request::parse_time(&record.delivery.deadline),
        package_size: record.package_size.unwrap_or(super::PackageSize::Small),
        package_weight: record.package_weight,
    }
}

fn changed(
    verdict: Verdict,
    record: DeliveryRecord,
    events: Vec<TrackingEvent>,
    effects: Vec<Effect>,
) -> Decision {
    Decision {
        verdict,
        change: Some(Change {
            record,
            events,
            history: None,
            dead_letter: None,
        }),
        effects,
    }
}

fn create(
    current: Option<&DeliveryRecord>,
    new: NewDelivery,
    rules: Rules<'_>,
    now: DateTime<Utc>,
) -> Decision {
    if let Some(existing) = current {
        if existing.is_compensated() {
            // A compensated delivery's request was replayed by an operator
            // (more drones now, say): it is taken up again.
            let mut next = existing.clone();
            next.cancel_reason = None;
            next.delivery.drone_id = None;
            next.ticket += 1;
            let event = next.advance_at(DeliveryStage::Created, None, now);
            let effects = vec![Effect::RequestDrone(drone_request(&next))];
            return changed(Verdict::Revived, next, vec![event], effects);
        }
        // A redelivered queue message: the delivery exists already. One
        // still waiting for a drone is queued at the fleet again (the fleet
        // de-duplicates by delivery id).
        let effects = if existing.stage.awaits_drone() {
            vec![Effect::RequestDrone(drone_request(existing))]
        } else {
            Vec::new()
        };
        return Decision {
            verdict: Verdict::AlreadyExists,
            change: None,
            effects,
        };
    }
    let req = new.request;
    let mut record = DeliveryRecord {
        delivery: Delivery {
            id: req.delivery_id,
            owner: UserAccount::for_owner(&req.owner_id),
            pickup: req.pickup.resolve(rules.area),
            dropoff: req.dropoff.resolve(rules.area),
            deadline: req.deadline,
            expedited: req.expedited,
            confirmation_required: req.confirmation_required,
            drone_id: None,
        },
        stage: DeliveryStage::Created,
        package_weight: req.package.weight,
        package_size: Some(req.package.size),
        package_id: req.package.package_id,
        pickup_location: req.pickup_location,
        dropoff_location: req.dropoff_location,
        pickup_time: req.pickup_time,
        pickup_eta: None,
        delivery_eta: None,
        correlation_id: new.correlation_id,
        created_at: now,
        updated_at: now,
        version: 0,
        ticket: 1,
        confirmation: None,
        cancel_reason: None,
        wake_at: None,
        at_risk: None,
    };
    if start_later(record.pickup_time, rules, now).is_some() {
        let event = record.advance_at(DeliveryStage::Scheduled, None, now);
        return changed(Verdict::Created, record, vec![event], Vec::new());
    }
    let event = record.advance_at(DeliveryStage::Created, None, now);
    let effects = vec![Effect::RequestDrone(drone_request(&record))];
    changed(Verdict::Created, record, vec![event], effects)
}

/// When a delivery picked up at `pickup_time` asks for a drone, if that is
/// later than `now`: the lead time before the pickup. A time in the past,
/// within the lead time or none means now (`None`).
pub fn start_later(
    pickup_time: Option<DateTime<Utc>>,
    rules: Rules<'_>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    start_of(pickup_time, rules).filter(|start| *start > now)
}

/// When a delivery picked up at `pickup_time` asks for a drone: the lead
/// time before it.
fn start_of(pickup_time: Option<DateTime<Utc>>, rules: Rules<'_>) -> Option<DateTime<Utc>> {
    pickup_time?.checked_sub_signed(rules.pickup_lead)
}

/// The durable timer is due: a scheduled delivery whose lead time has come
/// asks for its drone; a deadline that has come marks the delivery at risk
/// (see [`watch`]). A wake that is early (the timer moved later meanwhile)
/// changes nothing. Whatever it finds, the record's next timer is in the
/// future or none, so the store's index never keeps a due entry.
fn wake(current: Option<&DeliveryRecord>, rules: Rules<'_>, now: DateTime<Utc>) -> Decision {
    let Some(current) = current else {
        return Decision::ignored(Ignored::UnknownDelivery, Vec::new());
    };
    match current.wake_at {
        Some(due) if due <= now => {}
        _ => return Decision::unchanged(Verdict::Unchanged),
    }
    let mut next = current.clone();
    if current.stage == DeliveryStage::Scheduled
        && start_later(current.pickup_time, rules, now).is_none()
    {
        let event = next.advance_at(DeliveryStage::Created, None, now);
        let effects = vec![Effect::RequestDrone(drone_request(&next))];
        return changed(Verdict::Applied, next, vec![event], effects);
    }
    // Only the watch changes (see `watch`); the stage's time stays.
    next.version += 1;
    changed(Verdict::Applied, next, Vec::new(), Vec::new())
}

/// Keeps a changed record's watch on its time limits current: whether it
/// is at risk of missing its deadline (marked once, with a tracking event
/// that says why; cleared if a reschedule moves the deadline away) and
/// when the engine must look at it next ([`DeliveryRecord::wake_at`]: the
/// lead time of a scheduled pickup, or the deadline of one not at risk).
/// Applied to every change [`apply`] decides, so no rule can forget it.
fn watch(change: &mut Change, rules: Rules<'_>, now: DateTime<Utc>) {
    let record = &mut change.record;
    let risk = at_risk(record, now);
    match (&record.at_risk, risk) {
        (None, Some(reason)) => {
            change.events.push(TrackingEvent {
                delivery_id: record.delivery.id.clone(),
                stage: record.stage,
                location: None,
                at: now,
                at_risk: Some(reason.clone()),
            });
            record.at_risk = Some(reason);
        }
        (Some(_), None) => record.at_risk = None,
        // Delivered: the outcome (a miss) replaces the warning.
        (Some(_), Some(reason)) if record.stage == DeliveryStage::Completed => {
            record.at_risk = Some(reason);
        }
        // Still at risk: the first reason stands.
        (Some(_), Some(_)) | (None, None) => {}
    }
    record.wake_at = next_wake(record, rules);
}

/// Why `record` is at risk of missing its deadline at `now`, if it is: the
/// deadline passed before delivery, or the expected delivery time is after
/// it. A deadline that is free text is none. A completed delivery is at
/// risk (it missed) if it was completed after the deadline.
pub fn at_risk(record: &DeliveryRecord, now: DateTime<Utc>) -> Option<String> {
    let deadline = super::request::parse_time(&record.delivery.deadline)?;
    match record.stage {
        DeliveryStage::Cancelled => None,
        DeliveryStage::Completed => (record.updated_at > deadline).then(|| {
            format!(
                "missed: delivered at {}, after the deadline {}",
                stamp(record.updated_at),
                stamp(deadline)
            )
        }),
        _ if now > deadline => Some(format!(
            "the deadline {} passed before delivery",
            stamp(deadline)
        )),
        _ => record
            .delivery_eta
            .filter(|eta| *eta > deadline)
            .map(|eta| {
                format!(
                    "expected at {}, after the deadline {}",
                    stamp(eta),
                    stamp(deadline)
                )
            }),
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The ETAs of `record` as its `drone` flies now at `speed_mps` (metres
/// per real second), straight to the pickup and on to the dropoff, rather
/// than as the drone reported them when it took the job or picked up
/// (a drone held up, by an outage say, is later than it said). A drone
/// that does not serve this delivery's current request leaves them as
/// stored.
pub fn live_etas(
    record: &DeliveryRecord,
    drone: &super::DroneState,
    speed_mps: f64,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let stored = (record.pickup_eta, record.delivery_eta);
    if drone.delivery_id.as_deref() != Some(record.delivery.id.as_str())
        || drone.ticket != record.ticket
        || speed_mps <= 0.0
    {
        return stored;
    }
    let after = |metres: f64| {
        chrono::Duration::try_milliseconds((metres / speed_mps * 1000.0) as i64)
            .and_then(|d| now.checked_add_signed(d))
    };
    let (pickup, dropoff) = (record.delivery.pickup, record.delivery.dropoff);
    match record.stage {
        DeliveryStage::HeadedToPickup => {
            let to_pickup = drone.position.distance_m(&pickup);
            (
                after(to_pickup),
                after(to_pickup + pickup.distance_m(&dropoff)),
            )
        }
        DeliveryStage::HeadedToDropoff => (
            record.pickup_eta,
            after(drone.position.distance_m(&dropoff)),
        ),
        _ => stored,
    }
}

/// When the engine must look at `record` again: a scheduled pickup's lead
/// time, and the deadline of a delivery not yet at risk (to mark it when
/// it passes), whichever comes first; none once it has ended.
pub fn next_wake(record: &DeliveryRecord, rules: Rules<'_>) -> Option<DateTime<Utc>> {
    if record.stage.is_terminal() {
        return None;
    }
    let start = (record.stage == DeliveryStage::Scheduled)
        .then(|| start_of(record.pickup_time, rules))
        .flatten();
    let deadline = record
        .at_risk
        .is_none()
        .then(|| super::request::parse_time(&record.delivery.deadline))
        .flatten();
    match (start, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn reschedule(
    current: &DeliveryRecord,
    req: RescheduleRequest,
    rules: Rules<'_>,
    now: DateTime<Utc>,
) -> Result<Decision, Rejection> {
    current.check_reschedule().map_err(Rejection::WrongStage)?;
    let invalid = |e: super::geo::LocationError| Rejection::Invalid(e.to_string());
    let mut next = current.clone();
    if let Some(text) = req.pickup_location {
        next.delivery.pickup = resolve_location(&text, rules.area).map_err(invalid)?;
        next.pickup_location = text;
    }
    if let Some(text) = req.dropoff_location {
        next.delivery.dropoff = resolve_location(&text, rules.area).map_err(invalid)?;
        next.dropoff_location = text;
    }
    if let Some(deadline) = req.deadline {
        next.delivery.deadline = deadline;
    }
    if req.pickup_time.is_some() {
        next.pickup_time = req.pickup_time;
    }
    // The route changed: whatever drone was coming is released and a new
    // request (with a new ticket) goes to the fleet, now or, for a pickup
    // time later than the lead time, when the lead time comes.
    next.delivery.drone_id = None;
    next.pickup_eta = None;
    next.delivery_eta = None;
    next.ticket += 1;
    if start_later(next.pickup_time, rules, now).is_some() {
        let event = next.advance_at(DeliveryStage::Scheduled, None, now);
        return Ok(changed(
            Verdict::Applied,
            next,
            vec![event],
            vec![Effect::Withdraw],
        ));
    }
    let event = next.advance_at(DeliveryStage::Rescheduled, None, now);
    let effects = vec![Effect::RequestDrone(drone_request(&next))];
    Ok(changed(Verdict::Applied, next, vec![event], effects))
}

fn cancel(current: &DeliveryRecord, now: DateTime<Utc>) -> Result<Decision, Rejection> {
    if !current.check_cancel().map_err(Rejection::WrongStage)? {
        return Ok(Decision::unchanged(Verdict::Unchanged));
    }
    let mut next = current.clone();
    let event = next.advance_at(DeliveryStage::Cancelled, None, now);
    Ok(Decision {
        verdict: Verdict::Applied,
        change: Some(Change {
            history: Some(HistoryEntry::of(&next, 0.0, 0.0)),
            record: next,
            events: vec![event],
            dead_letter: None,
        }),
        effects: vec![Effect::Withdraw],
    })
}

/// The first confirmation wins; a repeated one is accepted and ignored.
fn confirm(
    current: &DeliveryRecord,
    confirmation: Confirmation,
    now: DateTime<Utc>,
) -> Result<Decision, Rejection> {
    if !current
        .needs_confirmation()
        .map_err(Rejection::WrongStage)?
    {
        return Ok(Decision::unchanged(Verdict::Unchanged));
    }
    let mut next = current.clone();
    next.confirmation = Some(confirmation);
    next.version += 1;
    next.updated_at = now;
    Ok(changed(
        Verdict::Applied,
        next,
        Vec::new(),
        vec![Effect::NotifyRecipients],
    ))
}

fn drone_report(
    current: Option<&DeliveryRecord>,
    report: DroneReport,
    rules: Rules<'_>,
    now: DateTime<Utc>,
) -> Decision {
    // Whatever a `Delivered` changes (or not: a repeat, a stale ticket, a
    // cancelled delivery), the drone is let go once the record is stored.
    let effects = match &report {
        DroneReport::Delivered {
            ticket, drone_id, ..
        } => vec![Effect::ReleaseDrone {
            drone_id: drone_id.clone(),
            ticket: *ticket,
        }],
        _ => Vec::new(),
    };
    let Some(current) = current else {
        return Decision::ignored(Ignored::UnknownDelivery, effects);
    };
    if report.ticket() != current.ticket {
        return Decision::ignored(Ignored::StaleTicket, effects);
    }
    if current.stage.is_terminal() {
        return Decision::ignored(Ignored::Finished, effects);
    }
    let position = report.position();
    let mut next = current.clone();
    let mut events = Vec::new();
    if next.stage.awaits_drone() {
        // Any report of the current ticket means this drone took the job.
        next.delivery.drone_id = Some(report.drone_id().to_owned());
        if let DroneReport::Assigned {
            pickup_eta,
            delivery_eta,
            ..
        } = &report
        {
            next.pickup_eta = Some(*pickup_eta);
            next.delivery_eta = Some(*delivery_eta);
        }
        events.push(next.advance_at(DeliveryStage::HeadedToPickup, Some(position), now));
    } else if next.delivery.drone_id.as_deref() != Some(report.drone_id()) {
        return Decision::ignored(Ignored::OtherDrone, effects);
    }
    let mut history = None;
    match report {
        DroneReport::Assigned { .. } => {}
        DroneReport::PickedUp { delivery_eta, .. } => {
            if next.stage == DeliveryStage::HeadedToPickup {
                next.delivery_eta = Some(delivery_eta);
                events.push(next.advance_at(DeliveryStage::HeadedToDropoff, Some(position), now));
            }
        }
        DroneReport::Delivered { flown_m, .. } => {
            if next.stage == DeliveryStage::HeadedToPickup {
                events.push(next.advance_at(DeliveryStage::HeadedToDropoff, None, now));
            }
            events.push(next.advance_at(DeliveryStage::Completed, Some(position), now));
            let speed = rules.drone_speed_mps.max(f64::MIN_POSITIVE);
            history = Some(HistoryEntry::of(&next, flown_m, flown_m / speed / 3600.0));
        }
    }
    if events.is_empty() {
        return Decision {
            verdict: Verdict::Unchanged,
            change: None,
            effects,
        };
    }
    Decision {
        verdict: Verdict::Applied,
        change: Some(Change {
            record: next,
            events,
            history,
            dead_letter: None,
        }),
        effects,
    }
}

/// Compensation for a delivery no drone could take: its request goes to
/// the dead letters with the reason (so operators see it and can replay
/// it), the finished delivery to the history, and the delivery is cancelled
/// with the reason.
fn compensate(
    current: Option<&DeliveryRecord>,
    ticket: u64,
    reason: String,
    now: DateTime<Utc>,
) -> Decision {
    let Some(current) = current else {
        return Decision::ignored(Ignored::UnknownDelivery, Vec::new());
    };
    if current.ticket != ticket {
        return Decision::ignored(Ignored::StaleTicket, Vec::new());
    }
    if !current.stage.awaits_drone() {
        // A drone came after all, or it was cancelled meanwhile.
        return Decision::ignored(Ignored::NotWaiting, Vec::new());
    }
    let reason = CancelReason::Compensated(reason);
    let mut next = current.clone();
    next.cancel_reason = Some(reason.clone());
    let event = next.advance_at(DeliveryStage::Cancelled, None, now);
    Decision {
        verdict: Verdict::Applied,
        change: Some(Change {
            history: Some(HistoryEntry::of(&next, 0.0, 0.0)),
            record: next,
            events: vec![event],
            dead_letter: Some(reason),
        }),
        effects: Vec::new(),
    }
}

/// The delivery request of a compensated delivery, in the queue message's
/// shape, so that replaying its dead letter creates it again. The package's
/// size, weight and tag come from the package store (`None`: defaults).
pub fn replay_request(record: &DeliveryRecord, package: Option<&Package>) -> serde_json::Value {
    serde_json::json!({
        "deliveryId": record.delivery.id,
        "ownerId": record.delivery.owner.user_id,
        "pickupLocation": record.pickup_location,
        "dropoffLocation": record.dropoff_location,
        "pickupTime": record.pickup_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "deadline": record.delivery.deadline,
        "expedited": record.delivery.expedited,
        "confirmationRequired": record.delivery.confirmation_required.name(),
        "packageInfo": {
            "packageId": record.package_id,
            "size": package.and_then(|p| p.size).unwrap_or(PackageSize::Small),
            "weight": package.and_then(|p| p.weight).unwrap_or(0.0),
            "tag": package.and_then(|p| p.tag.clone()),
        }
    })
}
