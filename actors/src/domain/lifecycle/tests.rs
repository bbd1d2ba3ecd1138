//! Table tests of the delivery's stage machine: every stage × every command
//! and drone report, then the cases a table does not name (stale tickets,
//! repeated and lost reports, another drone, compensation and revival).

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::domain::{ConfirmationRequired, ConfirmationTime, Location, PackageSize};

const D1: &str = "drone-0001";
const D2: &str = "drone-0002";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn area() -> ServiceArea {
    ServiceArea::default()
}

fn rules(area: &ServiceArea) -> Rules<'_> {
    Rules {
        area,
        drone_speed_mps: 10.0,
        pickup_lead: Duration::minutes(5),
    }
}

fn request(id: &str) -> DeliveryRequest {
    DeliveryRequest::from_message(&serde_json::json!({
        "deliveryId": id,
        "ownerId": "owner",
        "pickupLocation": "47.60,-122.30",
        "dropoffLocation": "47.65,-122.20",
        "deadline": "",
        "expedited": true,
        "confirmationRequired": "None",
        "packageInfo": {"packageId": "p1", "size": "Small", "weight": 2.0, "tag": "t"},
    }))
    .unwrap()
}

fn create_command(id: &str) -> Command {
    Command::Create(Box::new(NewDelivery {
        request: request(id),
        correlation_id: Some("corr".into()),
    }))
}

/// A stored record in `stage`, ticket 1; a drone serves it from
/// HeadedToPickup on (and a completed delivery keeps its drone).
fn record(stage: DeliveryStage) -> DeliveryRecord {
    let area = area();
    let created = apply(None, create_command("d-1"), rules(&area), t0()).unwrap();
    let mut r = created.change.unwrap().record;
    if matches!(
        stage,
        DeliveryStage::HeadedToPickup | DeliveryStage::HeadedToDropoff | DeliveryStage::Completed
    ) {
        r.delivery.drone_id = Some(D1.into());
    }
    r.stage = stage;
    r
}

fn reschedule_command() -> Command {
    Command::Reschedule(RescheduleRequest {
        delivery_id: "d-1".into(),
        pickup_location: Some("47.61,-122.31".into()),
        dropoff_location: None,
        deadline: Some("tomorrow".into()),
        pickup_time: None,
    })
}

fn confirm_command() -> Command {
    Command::Confirm(Box::new(Confirmation {
        date_time: ConfirmationTime {
            date_time_value: "2026-01-01T12:30:00Z".into(),
        },
        geo_coordinates: Location::new(47.65, -122.2),
        confirmation_type: ConfirmationRequired::None,
        confirmation_blob: "blob".into(),
        received_at: t0(),
    }))
}

fn assigned(ticket: u64, drone: &str) -> Command {
    Command::Drone(DroneReport::Assigned {
        ticket,
        drone_id: drone.into(),
        position: Location::new(47.5, -122.4),
        pickup_eta: t0() + Duration::minutes(5),
        delivery_eta: t0() + Duration::minutes(10),
    })
}

fn picked_up(ticket: u64, drone: &str) -> Command {
    Command::Drone(DroneReport::PickedUp {
        ticket,
        drone_id: drone.into(),
        position: Location::new(47.6, -122.3),
        delivery_eta: t0() + Duration::minutes(9),
    })
}

fn delivered(ticket: u64, drone: &str) -> Command {
    Command::Drone(DroneReport::Delivered {
        ticket,
        drone_id: drone.into(),
        position: Location::new(47.65, -122.2),
        flown_m: 36_000.0,
    })
}

fn compensate_command(ticket: u64) -> Command {
    Command::Compensate {
        ticket,
        reason: "no drone became free within 60 s".into(),
    }
}

/// The kinds of effects, in order, as short names.
fn effect_names(d: &Decision) -> Vec<&'static str> {
    d.effects
        .iter()
        .map(|e| match e {
            Effect::RequestDrone(_) => "request",
            Effect::Withdraw => "withdraw",
            Effect::ReleaseDrone { .. } => "release",
            Effect::NotifyRecipients => "notify",
        })
        .collect()
}

#[derive(Debug)]
enum Expect {
    /// Refused.
    No(Rejection),
    /// Decided: the verdict, the stage stored (`None`: nothing stored),
    /// the stage events appended, the effects sent.
    Yes(
        Verdict,
        Option<DeliveryStage>,
        usize,
        &'static [&'static str],
    ),
}

use DeliveryStage::*;
use Expect::{No, Yes};
use Verdict::{AlreadyExists, Applied, Ignored as Ign, Unchanged};

fn commands() -> [(&'static str, Command); 8] {
    [
        ("create", create_command("d-1")),
        ("reschedule", reschedule_command()),
        ("cancel", Command::Cancel),
        ("confirm", confirm_command()),
        ("assigned", assigned(1, D1)),
        ("picked up", picked_up(1, D1)),
        ("delivered", delivered(1, D1)),
        ("compensate", compensate_command(1)),
    ]
}

/// Rows: stage; columns: the commands of [`commands`], in order.
fn table() -> Vec<(DeliveryStage, [Expect; 8])> {
    let waiting = |stage| {
        [
            Yes(AlreadyExists, None, 0, &["request"]),
            Yes(Applied, Some(Rescheduled), 1, &["request"]),
            Yes(Applied, Some(Cancelled), 1, &["withdraw"]),
            No(Rejection::WrongStage(stage)),
            Yes(Applied, Some(HeadedToPickup), 1, &[]),
            // A lost Assigned: the pickup implies it.
            Yes(Applied, Some(HeadedToDropoff), 2, &[]),
            // Lost Assigned and PickedUp: the drop-off implies both.
            Yes(Applied, Some(Completed), 3, &["release"]),
            Yes(Applied, Some(Cancelled), 1, &[]),
        ]
    };
    vec![
        (Created, waiting(Created)),
        (Rescheduled, waiting(Rescheduled)),
        (
            HeadedToPickup,
            [
                Yes(AlreadyExists, None, 0, &[]),
                Yes(Applied, Some(Rescheduled), 1, &["request"]),
                Yes(Applied, Some(Cancelled), 1, &["withdraw"]),
                No(Rejection::WrongStage(HeadedToPickup)),
                // A repeated Assigned (a drone resyncing) adds nothing.
                Yes(Unchanged, None, 0, &[]),
                Yes(Applied, Some(HeadedToDropoff), 1, &[]),
                Yes(Applied, Some(Completed), 2, &["release"]),
                Yes(Ign(Ignored::NotWaiting), None, 0, &[]),
            ],
        ),
        (
            HeadedToDropoff,
            [
                Yes(AlreadyExists, None, 0, &[]),
                // Reschedule after pickup: the package is on board.
                No(Rejection::WrongStage(HeadedToDropoff)),
                // Cancel after pickup is allowed (the drone is called off).
                Yes(Applied, Some(Cancelled), 1, &["withdraw"]),
                // Confirmation before delivery.
                No(Rejection::WrongStage(HeadedToDropoff)),
                Yes(Unchanged, None, 0, &[]),
                Yes(Unchanged, None, 0, &[]),
                Yes(Applied, Some(Completed), 1, &["release"]),
                Yes(Ign(Ignored::NotWaiting), None, 0, &[]),
            ],
        ),
        (
            Completed,
            [
                Yes(AlreadyExists, None, 0, &[]),
                No(Rejection::WrongStage(Completed)),
                No(Rejection::WrongStage(Completed)),
                Yes(Applied, Some(Completed), 0, &["notify"]),
                Yes(Ign(Ignored::Finished), None, 0, &[]),
                Yes(Ign(Ignored::Finished), None, 0, &[]),
                // A repeated Delivered still releases the drone.
                Yes(Ign(Ignored::Finished), None, 0, &["release"]),
                Yes(Ign(Ignored::NotWaiting), None, 0, &[]),
            ],
        ),
        (
            Cancelled,
            [
                Yes(AlreadyExists, None, 0, &[]),
                No(Rejection::WrongStage(Cancelled)),
                // Cancel is idempotent.
                Yes(Unchanged, None, 0, &[]),
                No(Rejection::WrongStage(Cancelled)),
                Yes(Ign(Ignored::Finished), None, 0, &[]),
                Yes(Ign(Ignored::Finished), None, 0, &[]),
                Yes(Ign(Ignored::Finished), None, 0, &["release"]),
                Yes(Ign(Ignored::NotWaiting), None, 0, &[]),
            ],
        ),
        (
            Scheduled,
            [
                // No drone asked for yet: a redelivered create asks none.
                Yes(AlreadyExists, None, 0, &[]),
                // Moved to a time that is now: a drone at once.
                Yes(Applied, Some(Rescheduled), 1, &["request"]),
                Yes(Applied, Some(Cancelled), 1, &["withdraw"]),
                No(Rejection::WrongStage(Scheduled)),
                // No drone serves it: reports are another drone's.
                Yes(Ign(Ignored::OtherDrone), None, 0, &[]),
                Yes(Ign(Ignored::OtherDrone), None, 0, &[]),
                Yes(Ign(Ignored::OtherDrone), None, 0, &["release"]),
                Yes(Ign(Ignored::NotWaiting), None, 0, &[]),
            ],
        ),
    ]
}

#[test]
fn every_stage_by_every_command() {
    let area = area();
    let mut cases = 0;
    for (stage, row) in table() {
        let current = record(stage);
        for ((name, command), expect) in commands().into_iter().zip(row) {
            let case = format!("{} × {name}", stage.name());
            let at = t0() + Duration::minutes(1);
            let result = apply(Some(&current), command, rules(&area), at);
            match (expect, result) {
                (No(want), Err(got)) => assert_eq!(got, want, "{case}"),
                (Yes(verdict, stored, events, effects), Ok(d)) => {
                    assert_eq!(d.verdict, verdict, "{case}: verdict");
                    assert_eq!(effect_names(&d), effects, "{case}: effects");
                    let change = d.change.as_ref();
                    assert_eq!(change.map(|c| c.record.stage), stored, "{case}: stage");
                    assert_eq!(
                        change.map_or(0, |c| c.events.len()),
                        events,
                        "{case}: events"
                    );
                    if let Some(c) = change {
                        // Every change is a new version; events are the
                        // stages passed through, in order, ending where the
                        // record is.
                        assert!(c.record.version > current.version, "{case}: version");
                        assert_eq!(c.record.updated_at, at, "{case}: updated_at");
                        if let Some(last) = c.events.last() {
                            assert_eq!(last.stage, c.record.stage, "{case}: last event");
                            assert!(c
                                .events
                                .iter()
                                .all(|e| e.at == at && e.delivery_id == "d-1"));
                        }
                    }
                }
                (expect, got) => panic!("{case}: expected {expect:?}, got {got:?}"),
            }
            cases += 1;
        }
    }
    assert_eq!(cases, DeliveryStage::ALL.len() * 8);
}

#[test]
fn an_unknown_delivery_is_created_and_refuses_everything_else() {
    let area = area();
    let created = apply(None, create_command("d-9"), rules(&area), t0()).unwrap();
    assert_eq!(created.verdict, Verdict::Created);
    let change = created.change.unwrap();
    let r = &change.record;
    assert_eq!(
        (r.stage, r.ticket, r.version),
        (DeliveryStage::Created, 1, 1)
    );
    assert_eq!(r.delivery.id, "d-9");
    assert!(r.delivery.expedited);
    assert_eq!(r.correlation_id.as_deref(), Some("corr"));
    assert_eq!(r.pickup_location, "47.60,-122.30");
    assert_eq!(r.delivery.pickup, Location::new(47.60, -122.30));
    assert_eq!(change.events.len(), 1);
    assert_eq!(
        created.effects,
        [Effect::RequestDrone(DroneRequest {
            delivery_id: "d-9".into(),
            ticket: 1,
            pickup: r.delivery.pickup,
            dropoff: r.delivery.dropoff,
            expedited: r.delivery.expedited,
            deadline: None,
            package_size: r.package_size.unwrap_or(PackageSize::Small),
            package_weight: r.package_weight,
        })]
    );
    for command in [reschedule_command(), Command::Cancel, confirm_command()] {
        assert_eq!(
            apply(None, command, rules(&area), t0()),
            Err(Rejection::NotFound)
        );
    }
    let report = apply(None, delivered(1, D1), rules(&area), t0()).unwrap();
    assert_eq!(report.verdict, Verdict::Ignored(Ignored::UnknownDelivery));
    assert_eq!(effect_names(&report), ["release"]);
    let gave_up = apply(None, compensate_command(1), rules(&area), t0()).unwrap();
    assert_eq!(gave_up.verdict, Verdict::Ignored(Ignored::UnknownDelivery));
}

#[test]
fn reports_and_compensation_of_an_older_ticket_are_ignored() {
    let area = area();
    let mut current = record(DeliveryStage::Rescheduled);
    current.ticket = 2;
    for command in [assigned(1, D1), picked_up(1, D1), compensate_command(1)] {
        let d = apply(Some(&current), command, rules(&area), t0()).unwrap();
        assert_eq!(d.verdict, Verdict::Ignored(Ignored::StaleTicket));
        assert!(d.change.is_none() && d.effects.is_empty());
    }
    // The released drone's Delivered still lets it go.
    let d = apply(Some(&current), delivered(1, D1), rules(&area), t0()).unwrap();
    assert_eq!(d.verdict, Verdict::Ignored(Ignored::StaleTicket));
    assert_eq!(
        d.effects,
        [Effect::ReleaseDrone {
            drone_id: D1.into(),
            ticket: 1
        }]
    );
}

#[test]
fn a_drone_that_does_not_serve_the_delivery_is_ignored() {
    let area = area();
    for stage in [
        DeliveryStage::HeadedToPickup,
        DeliveryStage::HeadedToDropoff,
    ] {
        let current = record(stage);
        for command in [assigned(1, D2), picked_up(1, D2), delivered(1, D2)] {
            let d = apply(Some(&current), command, rules(&area), t0()).unwrap();
            assert_eq!(
                d.verdict,
                Verdict::Ignored(Ignored::OtherDrone),
                "{stage:?}"
            );
            assert!(d.change.is_none());
        }
    }
}

#[test]
fn the_first_report_of_the_ticket_names_the_drone_and_its_etas() {
    let area = area();
    let current = record(DeliveryStage::Created);
    let d = apply(Some(&current), assigned(1, D2), rules(&area), t0()).unwrap();
    let r = d.change.unwrap().record;
    assert_eq!(r.delivery.drone_id.as_deref(), Some(D2));
    assert_eq!(r.pickup_eta, Some(t0() + Duration::minutes(5)));
    assert_eq!(r.delivery_eta, Some(t0() + Duration::minutes(10)));
    // PickedUp updates the delivery ETA and keeps the pickup ETA.
    let d = apply(Some(&r), picked_up(1, D2), rules(&area), t0()).unwrap();
    let change = d.change.unwrap();
    assert_eq!(change.record.pickup_eta, r.pickup_eta);
    assert_eq!(
        change.record.delivery_eta,
        Some(t0() + Duration::minutes(9))
    );
    assert_eq!(change.events[0].location, Some(Location::new(47.6, -122.3)));
}

#[test]
fn delivered_records_history_and_repeats_change_nothing() {
    let area = area();
    let current = record(DeliveryStage::HeadedToDropoff);
    let d = apply(Some(&current), delivered(1, D1), rules(&area), t0()).unwrap();
    let change = d.change.unwrap();
    let history = change.history.unwrap();
    assert_eq!(history.stage, DeliveryStage::Completed);
    assert_eq!(history.drone_id.as_deref(), Some(D1));
    assert_eq!(history.distance_m, 36_000.0);
    // 36 km at 10 m/s is one hour.
    assert!((history.assigned_hours - 1.0).abs() < 1e-9);
    assert_eq!(history.finished_at, t0());
    let again = apply(Some(&change.record), delivered(1, D1), rules(&area), t0()).unwrap();
    assert_eq!(again.verdict, Verdict::Ignored(Ignored::Finished));
    assert!(again.change.is_none());
    assert_eq!(effect_names(&again), ["release"]);
}

#[test]
fn reschedule_takes_a_new_ticket_and_forgets_the_drone() {
    let area = area();
    let mut current = record(DeliveryStage::HeadedToPickup);
    current.pickup_eta = Some(t0());
    let d = apply(Some(&current), reschedule_command(), rules(&area), t0()).unwrap();
    let r = d.change.unwrap().record;
    assert_eq!(r.ticket, 2);
    assert_eq!(r.delivery.drone_id, None);
    assert_eq!((r.pickup_eta, r.delivery_eta), (None, None));
    assert_eq!(r.pickup_location, "47.61,-122.31");
    assert_eq!(r.delivery.pickup, Location::new(47.61, -122.31));
    assert_eq!(r.delivery.deadline, "tomorrow");
    assert!(matches!(&d.effects[..], [Effect::RequestDrone(req)] if req.ticket == 2));
    let bad = Command::Reschedule(RescheduleRequest {
        delivery_id: "d-1".into(),
        pickup_location: Some(String::new()),
        dropoff_location: None,
        deadline: None,
        pickup_time: None,
    });
    assert!(matches!(
        apply(Some(&current), bad, rules(&area), t0()),
        Err(Rejection::Invalid(_))
    ));
}

#[test]
fn a_confirmation_is_stored_once() {
    let area = area();
    let current = record(DeliveryStage::Completed);
    let d = apply(Some(&current), confirm_command(), rules(&area), t0()).unwrap();
    let r = d.change.unwrap().record;
    assert!(r.confirmation.is_some());
    let again = apply(Some(&r), confirm_command(), rules(&area), t0()).unwrap();
    assert_eq!(again.verdict, Verdict::Unchanged);
    assert!(again.change.is_none() && again.effects.is_empty());
}

#[test]
fn cancel_records_history_and_withdraws() {
    let area = area();
    let current = record(DeliveryStage::HeadedToDropoff);
    let d = apply(Some(&current), Command::Cancel, rules(&area), t0()).unwrap();
    let change = d.change.unwrap();
    let history = change.history.unwrap();
    assert_eq!(history.stage, DeliveryStage::Cancelled);
    assert_eq!(history.distance_m, 0.0);
    assert_eq!(change.record.cancel_reason, None);
    assert!(change.dead_letter.is_none());
}

#[test]
fn compensation_cancels_with_the_reason_and_a_replay_revives() {
    let area = area();
    let current = record(DeliveryStage::Created);
    let d = apply(Some(&current), compensate_command(1), rules(&area), t0()).unwrap();
    let change = d.change.unwrap();
    let reason = CancelReason::Compensated("no drone became free within 60 s".into());
    assert_eq!(change.dead_letter.as_ref(), Some(&reason));
    assert_eq!(change.record.cancel_reason.as_ref(), Some(&reason));
    assert_eq!(
        change
            .record
            .cancel_reason
            .as_ref()
            .map(ToString::to_string),
        Some("compensated: no drone became free within 60 s".to_owned())
    );
    assert!(change.record.is_compensated());
    assert!(change.history.is_some());
    // The operator replays the dead letter: the delivery is taken up again
    // with a new ticket.
    let revived = apply(
        Some(&change.record),
        create_command("d-1"),
        rules(&area),
        t0(),
    )
    .unwrap();
    assert_eq!(revived.verdict, Verdict::Revived);
    let r = revived.change.unwrap().record;
    assert_eq!((r.stage, r.ticket, r.cancel_reason), (Created, 2, None));
    assert!(matches!(&revived.effects[..], [Effect::RequestDrone(req)] if req.ticket == 2));
    // A client's cancel is not a compensation: a replay finds it existing.
    let cancelled = record(DeliveryStage::Cancelled);
    let d = apply(Some(&cancelled), create_command("d-1"), rules(&area), t0()).unwrap();
    assert_eq!(d.verdict, Verdict::AlreadyExists);
}

#[test]
fn cancel_reasons_read_back_as_written() {
    for text in [
        "compensated: no drone became free within 60 s",
        "compensated",
        "compensatedly",
        "operator",
    ] {
        let reason = CancelReason::parse(text);
        assert_eq!(reason.to_string(), text);
        let json = serde_json::to_string(&reason).unwrap();
        assert_eq!(json, serde_json::to_string(text).unwrap());
        let back: CancelReason = serde_json::from_str(&json).unwrap();
        assert_eq!(back, reason);
    }
    assert!(CancelReason::parse("compensated: x").is_compensated());
    assert!(!CancelReason::parse("compensatedly").is_compensated());
}

#[test]
fn the_replayed_request_is_a_valid_delivery_message() {
    let current = record(DeliveryStage::Created);
    let body = replay_request(&current, None);
    let again = DeliveryRequest::from_message(&body).unwrap();
    assert_eq!(again.delivery_id, "d-1");
    assert_eq!(again.package.package_id, "p1");
    assert!(again.expedited);
}

/// A create for a pickup at `pickup`.
fn create_for(pickup: Option<DateTime<Utc>>) -> Command {
    let mut request = request("d-s");
    request.pickup_time = pickup;
    Command::Create(Box::new(NewDelivery {
        request,
        correlation_id: None,
    }))
}

#[test]
fn a_pickup_beyond_the_lead_time_is_scheduled_and_a_due_timer_starts_it_once() {
    let area = area();
    let rules = rules(&area);
    let pickup = t0() + Duration::minutes(60);
    let created = apply(None, create_for(Some(pickup)), rules, t0()).unwrap();
    assert_eq!(created.verdict, Verdict::Created);
    assert!(created.effects.is_empty(), "no drone yet");
    let change = created.change.unwrap();
    let r = change.record;
    assert_eq!(r.stage, Scheduled);
    assert_eq!(
        r.wake_at,
        Some(pickup - Duration::minutes(5)),
        "the lead time before the pickup"
    );
    assert_eq!(change.events.len(), 1);
    assert_eq!(change.events[0].stage, Scheduled);
    // Early (the timer moved, or a clock ahead): nothing.
    let early = apply(Some(&r), Command::Wake, rules, t0() + Duration::minutes(54)).unwrap();
    assert_eq!((early.verdict, early.change.is_none()), (Unchanged, true));
    // Due: the delivery asks for its drone, and its timer is cleared.
    let due = apply(Some(&r), Command::Wake, rules, t0() + Duration::minutes(55)).unwrap();
    assert_eq!(due.verdict, Applied);
    assert_eq!(effect_names(&due), ["request"]);
    let started = due.change.unwrap().record;
    assert_eq!((started.stage, started.wake_at), (Created, None));
    assert!(started.version > r.version);
    // A repeated wake (another engine's poll, a retry) changes nothing.
    let again = apply(
        Some(&started),
        Command::Wake,
        rules,
        t0() + Duration::minutes(56),
    )
    .unwrap();
    assert_eq!((again.verdict, again.effects.len()), (Unchanged, 0));
    // A timer left on a delivery that moved on is cleared, not fired.
    let mut stray = started.clone();
    stray.wake_at = Some(t0());
    let cleared = apply(
        Some(&stray),
        Command::Wake,
        rules,
        t0() + Duration::minutes(56),
    )
    .unwrap();
    let cleared_record = cleared.change.unwrap().record;
    assert_eq!(
        (cleared_record.stage, cleared_record.wake_at),
        (Created, None)
    );
    assert!(cleared.effects.is_empty());
    assert_eq!(
        apply(None, Command::Wake, rules, t0()).unwrap().verdict,
        Ign(Ignored::UnknownDelivery)
    );
}

#[test]
fn a_pickup_now_in_the_past_or_within_the_lead_time_asks_for_a_drone_at_once() {
    let area = area();
    let rules = rules(&area);
    for pickup in [
        None,
        Some(t0() - Duration::days(400)),
        Some(t0() + Duration::minutes(5)),
    ] {
        let created = apply(None, create_for(pickup), rules, t0()).unwrap();
        assert_eq!(effect_names(&created), ["request"], "{pickup:?}");
        let r = created.change.unwrap().record;
        assert_eq!((r.stage, r.wake_at), (Created, None), "{pickup:?}");
    }
}

#[test]
fn a_scheduled_delivery_is_rescheduled_or_cancelled_with_its_timer() {
    let area = area();
    let rules = rules(&area);
    let pickup = t0() + Duration::hours(2);
    let scheduled = apply(None, create_for(Some(pickup)), rules, t0())
        .unwrap()
        .change
        .unwrap()
        .record;
    // Cancelled: the timer goes with it.
    let cancelled = apply(Some(&scheduled), Command::Cancel, rules, t0()).unwrap();
    let c = cancelled.change.unwrap().record;
    assert_eq!((c.stage, c.wake_at), (Cancelled, None));
    // Moved to now: a drone at once, with a new ticket.
    let now = RescheduleRequest {
        delivery_id: "d-s".into(),
        pickup_location: None,
        dropoff_location: None,
        deadline: None,
        pickup_time: Some(t0()),
    };
    let now_request = || now.clone();
    let moved = apply(
        Some(&scheduled),
        Command::Reschedule(now.clone()),
        rules,
        t0(),
    )
    .unwrap();
    assert_eq!(effect_names(&moved), ["request"]);
    let m = moved.change.unwrap().record;
    assert_eq!(
        (m.stage, m.wake_at, m.ticket),
        (Rescheduled, None, scheduled.ticket + 1)
    );
    // A waiting delivery moved to tomorrow: scheduled again, its drone
    // request withdrawn.
    let later = RescheduleRequest {
        pickup_time: Some(t0() + Duration::days(1)),
        ..now_request()
    };
    let deferred = apply(Some(&m), Command::Reschedule(later), rules, t0()).unwrap();
    assert_eq!(effect_names(&deferred), ["withdraw"]);
    let d = deferred.change.unwrap().record;
    assert_eq!(d.stage, Scheduled);
    assert_eq!(
        d.wake_at,
        Some(t0() + Duration::days(1) - Duration::minutes(5))
    );
}

/// A create with `deadline` (text) and pickup at `pickup`.
fn create_due(deadline: &str, pickup: Option<DateTime<Utc>>) -> Command {
    let mut request = request("d-r");
    request.deadline = deadline.into();
    request.pickup_time = pickup;
    Command::Create(Box::new(NewDelivery {
        request,
        correlation_id: None,
    }))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

#[test]
fn a_deadline_is_watched_by_the_timer_and_marked_at_risk_once_when_it_passes() {
    let area = area();
    let rules = rules(&area);
    let deadline = t0() + Duration::minutes(30);
    let created = apply(None, create_due(&stamp(deadline), None), rules, t0()).unwrap();
    let r = created.change.unwrap().record;
    assert_eq!((r.at_risk.as_deref(), r.wake_at), (None, Some(deadline)));
    // Free text is no deadline: nothing to watch.
    let text = apply(
        None,
        create_due("LineOfDeadlyZombiatedPeople", None),
        rules,
        t0(),
    )
    .unwrap();
    assert_eq!(text.change.unwrap().record.wake_at, None);
    // The deadline passes while it waits: at risk, with an event saying why.
    let late = t0() + Duration::minutes(31);
    let woken = apply(Some(&r), Command::Wake, rules, late).unwrap();
    let change = woken.change.unwrap();
    let reason = change.record.at_risk.clone().expect("at risk");
    assert!(reason.contains("passed"), "{reason}");
    assert_eq!(change.record.wake_at, None, "nothing more to watch");
    assert_eq!(change.record.stage, Created, "the stage does not change");
    assert_eq!(change.events.len(), 1);
    assert_eq!(change.events[0].at_risk.as_deref(), Some(reason.as_str()));
    assert_eq!(change.events[0].stage, Created);
    // Later changes keep the mark and add no second event.
    let assigned = apply(Some(&change.record), assigned(1, D1), rules, late).unwrap();
    let a = assigned.change.unwrap();
    assert_eq!(a.record.at_risk, Some(reason));
    assert!(a.events.iter().all(|e| e.at_risk.is_none()));
    // Delivered after the deadline: a miss, kept on the completed record.
    let done = apply(Some(&a.record), delivered(1, D1), rules, late).unwrap();
    let d = done.change.unwrap().record;
    assert_eq!(d.stage, Completed);
    assert!(
        d.at_risk
            .as_deref()
            .is_some_and(|r| r.starts_with("missed")),
        "{d:?}"
    );
    assert_eq!(d.wake_at, None);
}

#[test]
fn an_eta_after_the_deadline_marks_it_at_risk_and_a_later_deadline_clears_it() {
    let area = area();
    let rules = rules(&area);
    // The drone's ETA (assigned(…) reports one hour ahead) is after it.
    let deadline = t0() + Duration::minutes(10);
    let r = apply(None, create_due(&stamp(deadline), None), rules, t0())
        .unwrap()
        .change
        .unwrap()
        .record;
    let mut report = assigned(1, D1);
    if let Command::Drone(DroneReport::Assigned { delivery_eta, .. }) = &mut report {
        *delivery_eta = t0() + Duration::minutes(20);
    }
    let change = apply(Some(&r), report, rules, t0())
        .unwrap()
        .change
        .unwrap();
    let reason = change.record.at_risk.clone().expect("at risk by its ETA");
    assert!(reason.starts_with("expected at"), "{reason}");
    assert_eq!(
        change.events.last().and_then(|e| e.at_risk.clone()),
        Some(reason)
    );
    assert_eq!(change.record.wake_at, None);
    // Rescheduled to a later deadline: no longer at risk, watched again.
    let later = t0() + Duration::hours(3);
    let moved = RescheduleRequest {
        delivery_id: "d-r".into(),
        pickup_location: None,
        dropoff_location: None,
        deadline: Some(stamp(later)),
        pickup_time: None,
    };
    let m = apply(
        Some(&change.record),
        Command::Reschedule(moved),
        rules,
        t0(),
    )
    .unwrap()
    .change
    .unwrap()
    .record;
    assert_eq!((m.at_risk, m.wake_at), (None, Some(later)));
}

#[test]
fn a_scheduled_pickup_wakes_at_the_earlier_of_its_lead_time_and_its_deadline() {
    let area = area();
    let rules = rules(&area);
    let pickup = t0() + Duration::hours(2);
    let soon = t0() + Duration::minutes(30);
    let r = apply(None, create_due(&stamp(soon), Some(pickup)), rules, t0())
        .unwrap()
        .change
        .unwrap()
        .record;
    assert_eq!((r.stage, r.wake_at), (Scheduled, Some(soon)));
    // At the deadline: at risk, still scheduled, woken next at the lead time.
    let at = apply(Some(&r), Command::Wake, rules, soon + Duration::seconds(1))
        .unwrap()
        .change
        .unwrap()
        .record;
    assert!(at.at_risk.is_some());
    assert_eq!(
        (at.stage, at.wake_at),
        (Scheduled, Some(pickup - Duration::minutes(5)))
    );
    // A deadline already past at creation is at risk from the start.
    let past = apply(
        None,
        create_due(&stamp(t0() - Duration::days(1)), None),
        rules,
        t0(),
    )
    .unwrap()
    .change
    .unwrap();
    assert!(past.record.at_risk.is_some());
    assert_eq!(past.events.len(), 2, "created, then at risk");
}

#[test]
fn etas_follow_the_drone_as_it_flies() {
    let area = area();
    let rules = rules(&area);
    let created = apply(None, create_command("d-1"), rules, t0()).unwrap();
    let r = created.change.unwrap().record;
    let mut heading = apply(Some(&r), assigned(1, D1), rules, t0())
        .unwrap()
        .change
        .unwrap()
        .record;
    let job = drone_request(&heading);
    let mut drone = crate::domain::DroneState::parked(D1.into(), job.pickup).claimed(&job, 1, t0());
    // Held up 10 km from the pickup, an hour after it said it would be there.
    drone.position = Location::new(
        job.pickup.latitude - 10_000.0 / 111_195.0,
        job.pickup.longitude,
    );
    let now = t0() + Duration::hours(1);
    let (pickup_eta, delivery_eta) = live_etas(&heading, &drone, 100.0, now);
    let to_pickup = drone.position.distance_m(&job.pickup) / 100.0;
    let leg = job.pickup.distance_m(&job.dropoff) / 100.0;
    let secs = |t: Option<DateTime<Utc>>| (t.unwrap() - now).num_milliseconds() as f64 / 1000.0;
    assert!((secs(pickup_eta) - to_pickup).abs() < 0.01);
    assert!((secs(delivery_eta) - to_pickup - leg).abs() < 0.01);
    // On board: only the way to the dropoff is left.
    heading.stage = HeadedToDropoff;
    drone.position = job.pickup;
    let (kept, eta) = live_etas(&heading, &drone, 100.0, now);
    assert_eq!(kept, heading.pickup_eta);
    assert!((secs(eta) - leg).abs() < 0.01);
    // A drone of another request: the stored ETAs.
    drone.ticket += 1;
    assert_eq!(
        live_etas(&heading, &drone, 100.0, now),
        (heading.pickup_eta, heading.delivery_eta)
    );
}
