//! The HTTP contract of the delivery routes: shapes, prefixes, errors.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, ri_example, spawn_app, stage};

#[tokio::test]
async fn post_answers_202_with_echo_id_and_location() {
    let app = spawn_app().await;
    let res = app
        .send_json(Method::POST, "/api/deliveryrequests", &ri_example())
        .await;
    assert_eq!(res.status(), 202);
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = res.json().await.expect("a JSON answer");
    let id = body["deliveryId"].as_str().unwrap_or_default().to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "deliveryId must be a fresh UUID: {body}"
    );
    assert_eq!(location, Some(format!("/api/deliveries/{id}")));
    assert_eq!(body["dropOffLocation"], "drop off");
    assert_eq!(body["pickupLocation"], "my pickup");
    assert_eq!(body["ownerId"], "myowner");
    assert_eq!(body["confirmationRequired"], "None");
    assert_eq!(body["packageInfo"]["packageId"], "mypackage");
    assert_eq!(body["packageInfo"]["size"], "Small");
    app.stop().await;
}

#[tokio::test]
async fn reads_follow_the_original_shapes_and_prefixes() {
    let app = spawn_app().await;
    let id = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&id, stage::COMPLETED, Duration::from_secs(20))
        .await;

    let delivery: Value = app
        .get(&format!("/api/deliveries/{id}"))
        .await
        .json()
        .await
        .expect("a JSON delivery");
    assert_eq!(delivery["id"], id.as_str());
    assert_eq!(delivery["owner"]["userId"], "myowner");
    assert!(delivery["owner"]["accountId"].is_string());
    assert_eq!(delivery["deadline"], "");
    assert_eq!(
        delivery["expedited"], true,
        "expedited must survive (the original lost it)"
    );
    assert_eq!(delivery["confirmationRequired"], 3);
    assert!(delivery["droneId"]
        .as_str()
        .is_some_and(|d| d.starts_with("drone-")));
    for key in ["pickup", "dropoff"] {
        for coord in ["altitude", "latitude", "longitude"] {
            assert!(
                delivery[key][coord].is_number(),
                "{key}.{coord} in {delivery}"
            );
        }
    }
    // Same text, same place: named locations map deterministically.
    assert_ne!(delivery["pickup"], delivery["dropoff"]);

    for path in [
        format!("/api/deliveries/public/{id}"),
        format!("/v0.1.0/api/deliveries/{id}"),
        format!("/api/Deliveries/{id}"),
    ] {
        let res = app.get(&path).await;
        assert_eq!(res.status(), 200, "{path}");
        let other: Value = res.json().await.expect("a JSON delivery");
        assert_eq!(other, delivery, "{path}");
    }

    let owner: Value = app
        .get(&format!("/api/deliveries/{id}/owner"))
        .await
        .json()
        .await
        .expect("a JSON owner");
    assert_eq!(owner, delivery["owner"]);

    let status = app.status(&id).await.expect("the delivery has a status");
    assert_eq!(status["stage"], stage::COMPLETED);
    assert_eq!(status["stageName"], "Completed");
    assert!(
        status["pickupETA"].is_string() && status["deliveryETA"].is_string(),
        "{status}"
    );
    // The example's deadline is empty: no time, so null.
    assert_eq!(status["deadline"], Value::Null, "{status}");
    assert_eq!(
        status["lastKnownLocation"]["latitude"], delivery["dropoff"]["latitude"],
        "a completed delivery was last seen at its dropoff"
    );

    // The workflow stored the package.
    let package: Value = app
        .get("/api/packages/mypackage")
        .await
        .json()
        .await
        .expect("a JSON package");
    assert_eq!(
        package,
        json!({"id": "mypackage", "size": "Small", "weight": 10.0, "tag": "mytag"})
    );
    app.stop().await;
}

#[tokio::test]
async fn accepts_the_original_load_test_body_with_coordinates() {
    let app = spawn_app().await;
    let body = json!({"confirmationRequired":"FingerPrint","deadline":"DeadlyQueueOfZombiatedDemons","deliveryId":"42","dropOffLocation":"0,47.60,-122.33","expedited":true,"ownerId":"1","packageInfo":{"packageId":"442","size":"Small","tag":"2c3a","weight":"14"},"pickupLocation":"0,47.55,-122.30","pickupTime":"2019-04-05T11:00:00.000Z"});
    let id = app.post_delivery(&body).await;
    assert_ne!(id, "42", "the client's deliveryId is ignored");
    app.wait_for_stage(&id, stage::COMPLETED, Duration::from_secs(20))
        .await;
    let delivery: Value = app
        .get(&format!("/api/deliveries/{id}"))
        .await
        .json()
        .await
        .expect("a JSON delivery");
    assert_eq!(delivery["pickup"]["latitude"], 47.55);
    assert_eq!(delivery["dropoff"]["longitude"], -122.33);
    assert_eq!(delivery["confirmationRequired"], 0);
    app.stop().await;
}

#[tokio::test]
async fn invalid_requests_are_400_problems_naming_the_fields() {
    let app = spawn_app().await;
    let res = app
        .send_json(Method::POST, "/api/deliveryrequests", &json!({}))
        .await;
    let problem = assert_problem(res, 400).await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        fields,
        [
            "ownerId",
            "pickupLocation",
            "dropOffLocation",
            "confirmationRequired",
            "packageInfo"
        ]
    );

    let mut body = ri_example();
    body["confirmationRequired"] = json!("Telepathy");
    body["packageInfo"]["size"] = json!(null);
    body["pickupLocation"] = json!("95,200");
    let res = app
        .send_json(Method::POST, "/api/deliveryrequests", &body)
        .await;
    let problem = assert_problem(res, 400).await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    for field in ["confirmationRequired", "packageInfo.size", "pickupLocation"] {
        assert!(detail.contains(field), "{field} not named in {detail}");
    }

    let res = app
        .client
        .post(app.url("/api/deliveryrequests"))
        .header("content-type", "application/json")
        .body("{\"ownerId\": ")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400).await;

    let res = app
        .client
        .post(app.url("/api/deliveryrequests"))
        .header("content-type", "text/plain")
        .body(ri_example().to_string())
        .send()
        .await
        .unwrap();
    assert_problem(res, 415).await;

    let res = app
        .send_json(
            Method::PATCH,
            "/api/deliveryrequests/some-id",
            &json!({"deliveryId": "x"}),
        )
        .await;
    assert_problem(res, 400).await;

    // Nothing invalid reached the queue.
    assert_eq!(app.engine.queue_depth().await.ok().flatten(), Some(0));
    app.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_404_problems() {
    let app = spawn_app().await;
    for path in [
        "/api/deliveries/nope",
        "/api/deliveries/public/nope",
        "/api/deliveries/nope/owner",
        "/api/deliveries/nope/status",
        "/api/packages/nope",
        "/no/such/route",
    ] {
        let res = app.get(path).await;
        assert_problem(res, 404).await;
    }
    app.stop().await;
}

/// The original's invoicing stubs, made real: the package weight an owner
/// had delivered in a month and how many of its deliveries were completed
/// and cancelled, from the delivery history; zeros for another owner or
/// month; 400 naming each bad parameter.
#[tokio::test]
async fn monthly_summaries_come_from_the_delivery_history() {
    use chrono::Datelike;
    // Flights of a few seconds: the third delivery is cancelled before its
    // drone delivers it.
    let app = crate::helpers::spawn_app_on(|a| a.sim_speed = 400.0, None).await;
    let owner = format!("summary-owner-{}", uuid::Uuid::new_v4().simple());
    let mut completed = Vec::new();
    for (n, weight) in [(0, 2.5), (1, 4.0)] {
        let mut body = ri_example();
        body["ownerId"] = json!(owner);
        body["pickupLocation"] = json!(format!("summary pickup {n}"));
        body["packageInfo"]["packageId"] = json!(format!("summary-package-{n}-{owner}"));
        body["packageInfo"]["weight"] = json!(weight);
        // A deadline that names a time is returned parsed; free text is not.
        body["deadline"] = json!(["2030-01-02T03:04:05Z", "LineOfDeadlyZombiatedPeople"][n]);
        completed.push(app.post_delivery(&body).await);
    }
    for id in &completed {
        app.wait_for_stage(id, stage::COMPLETED, Duration::from_secs(30))
            .await;
    }
    let deadlines: Vec<Value> = deadlines_of(&app, &completed).await;
    assert_eq!(deadlines, [json!("2030-01-02T03:04:05Z"), Value::Null]);
    // A third one cancelled: counted apart, its weight not delivered.
    let mut body = ri_example();
    body["ownerId"] = json!(owner);
    body["packageInfo"]["weight"] = json!(100);
    let cancelled = app.post_delivery(&body).await;
    let res = app
        .send_json(
            Method::DELETE,
            &format!("/api/deliveryrequests/{cancelled}"),
            &json!({}),
        )
        .await;
    assert!(res.status().is_success(), "cancel: {}", res.status());
    app.wait_for_stage(&cancelled, stage::CANCELLED, Duration::from_secs(30))
        .await;

    let now = chrono::Utc::now();
    let (year, month) = (now.year(), now.month());
    let read = |path: String| {
        let app = &app;
        async move {
            let res = app.get(&path).await;
            assert_eq!(res.status(), 200, "{path}");
            res.json::<Value>().await.expect("a JSON answer")
        }
    };
    let weight = read(format!(
        "/api/packages/summary/{owner}?year={year}&month={month}"
    ))
    .await;
    assert_eq!(weight, json!({"totalWeight": 6.5}));
    let counts = read(format!(
        "/api/deliveries/summary?ownerId={owner}&Year={year}&MONTH={month}"
    ))
    .await;
    assert_eq!(counts, json!({"count": 2, "completed": 2, "cancelled": 1}));
    let other = read(format!(
        "/api/deliveries/summary?ownerId=someone-else&year={year}&month={month}"
    ))
    .await;
    assert_eq!(other, json!({"count": 0, "completed": 0, "cancelled": 0}));
    let earlier = read(format!("/api/packages/summary/{owner}?year=2019&month=5")).await;
    assert_eq!(earlier, json!({"totalWeight": 0.0}));

    let res = app
        .get(&format!("/api/packages/summary/{owner}?year=x&month=13"))
        .await;
    let problem = assert_problem(res, 400).await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|f| f["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["year", "month"], "{problem}");
    let res = app.get("/api/deliveries/summary?year=2026").await;
    let problem = assert_problem(res, 400).await;
    assert!(problem.to_string().contains("ownerId"), "{problem}");
    app.stop().await;
}

/// The `deadline` of each delivery's status.
async fn deadlines_of(app: &crate::helpers::TestApp, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        let status = app.status(id).await.expect("a status");
        out.push(status["deadline"].clone());
    }
    out
}
