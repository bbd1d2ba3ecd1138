//! The control plane contract: what every [`ControlPlane`] must do, so that
//! operators reach engines the same way in one process and across a
//! cluster. Each check panics with a message on the first violation.
//!
//! Test support: compiled only with the engine's `test-support` feature.

// Test support: a check that fails panics, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dronedelivery_actors::cluster::{CallError, ControlReply, ControlRequest, EngineCard};
use dronedelivery_actors::ports::ControlPlane;

fn card(id: &str, role: &str) -> EngineCard {
    EngineCard {
        id: id.to_owned(),
        role: role.to_owned(),
        version: "test".into(),
        started_at: Utc::now(),
        ready: true,
        not_ready: None,
        partitions: vec![1, 2],
        drones_flying: 3,
        counts: Default::default(),
        seen_at: Utc::now(),
    }
}

/// Runs every check on `plane`, which must hold no cards to begin with.
pub async fn run_all(plane: Arc<dyn ControlPlane>) {
    cards_list_the_live_members(plane.as_ref()).await;
    calls_reach_the_engine_named_and_come_back(Arc::clone(&plane)).await;
    calls_to_absent_or_silent_engines_fail_clearly(Arc::clone(&plane)).await;
}

async fn cards_list_the_live_members(plane: &dyn ControlPlane) {
    let (a, b) = (card("contract-a", "worker"), card("contract-b", "gateway"));
    plane.register(&b, Duration::from_secs(30)).await.unwrap();
    plane.register(&a, Duration::from_secs(30)).await.unwrap();
    let members = plane.members().await.unwrap();
    assert_eq!(members, vec![a.clone(), b.clone()], "sorted by id");
    // A refresh replaces the card.
    let mut a2 = a.clone();
    a2.ready = false;
    a2.not_ready = Some("fleet is restarting".into());
    plane.register(&a2, Duration::from_secs(30)).await.unwrap();
    assert_eq!(plane.members().await.unwrap()[0], a2);
    // A card not refreshed lapses; one taken down goes at once.
    plane
        .register(
            &card("contract-short", "worker"),
            Duration::from_millis(200),
        )
        .await
        .unwrap();
    assert_eq!(plane.members().await.unwrap().len(), 3);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(plane.members().await.unwrap().len(), 2, "lapsed");
    plane.deregister("contract-a").await.unwrap();
    plane.deregister("contract-b").await.unwrap();
    assert!(plane.members().await.unwrap().is_empty());
}

async fn calls_reach_the_engine_named_and_come_back(plane: Arc<dyn ControlPlane>) {
    plane
        .register(&card("contract-serving", "worker"), Duration::from_secs(30))
        .await
        .unwrap();
    let server = {
        let plane = Arc::clone(&plane);
        tokio::spawn(async move {
            for n in 0..2 {
                let incoming = plane.next_request("contract-serving").await.unwrap();
                let reply = match &incoming.request {
                    ControlRequest::Restart { supervisor, by } => ControlReply::Failed {
                        detail: format!("{n}: {supervisor} asked by {by}"),
                    },
                    ControlRequest::Supervisors => ControlReply::Supervisors {
                        supervisors: Vec::new(),
                    },
                };
                plane.reply(&incoming, &reply).await.unwrap();
            }
        })
    };
    // The subscription may take a moment to start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        match plane
            .call(
                "contract-serving",
                &ControlRequest::Supervisors,
                Duration::from_secs(5),
            )
            .await
        {
            Ok(reply) => break reply,
            Err(CallError::NotListening(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("call failed: {e}"),
        }
    };
    assert_eq!(
        first,
        ControlReply::Supervisors {
            supervisors: Vec::new()
        }
    );
    let second = plane
        .call(
            "contract-serving",
            &ControlRequest::Restart {
                supervisor: "fleet".into(),
                by: "ops".into(),
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        second,
        ControlReply::Failed {
            detail: "1: fleet asked by ops".into()
        },
        "each reply goes to its own request"
    );
    server.await.unwrap();
    // Served twice, then silent: the next call times out, on time.
    let started = tokio::time::Instant::now();
    let silent = plane
        .call(
            "contract-serving",
            &ControlRequest::Supervisors,
            Duration::from_millis(300),
        )
        .await;
    assert!(
        matches!(silent, Err(CallError::Timeout { .. })),
        "{silent:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    plane.deregister("contract-serving").await.unwrap();
}

async fn calls_to_absent_or_silent_engines_fail_clearly(plane: Arc<dyn ControlPlane>) {
    let unknown = plane
        .call(
            "contract-nobody",
            &ControlRequest::Supervisors,
            Duration::from_secs(5),
        )
        .await;
    assert!(
        matches!(&unknown, Err(CallError::UnknownEngine(id)) if id == "contract-nobody"),
        "{unknown:?}"
    );
    plane
        .register(&card("contract-deaf", "worker"), Duration::from_secs(30))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let deaf = plane
        .call(
            "contract-deaf",
            &ControlRequest::Supervisors,
            Duration::from_secs(5),
        )
        .await;
    assert!(
        matches!(&deaf, Err(CallError::NotListening(id)) if id == "contract-deaf"),
        "{deaf:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "known at once, not after the timeout"
    );
    plane.deregister("contract-deaf").await.unwrap();
}
