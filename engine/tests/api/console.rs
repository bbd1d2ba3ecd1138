//! The web console as the HTTP layer serves it: every page and asset with
//! its content type, the security headers, conditional requests, 404s for
//! unknown assets, which roles serve it, and the drone list its fleet page
//! reads. (The pages' behaviour in a real browser is tested by
//! `console-tests/`, run by `scripts/console-test.sh`.)

use std::time::Duration;

use dronedelivery_engine::config::RoleArg;
use dronedelivery_gateway::console::{ASSETS, CONTENT_SECURITY_POLICY, PAGES};
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{
    assert_problem, header, ri_example, spawn_app, spawn_app_on, spawn_app_with, stage, TestApp,
};

const LONG: Duration = Duration::from_secs(30);

/// Asserts the headers every console response carries and returns the ETag.
fn assert_console_headers(res: &reqwest::Response, what: &str) -> String {
    assert_eq!(
        header(res, "content-security-policy"),
        CONTENT_SECURITY_POLICY,
        "{what}"
    );
    let csp = header(res, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {directive} missing");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{what}: {csp}");
    assert_eq!(header(res, "x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header(res, "referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header(res, "cache-control"), "no-cache", "{what}");
    let etag = header(res, "etag");
    assert!(
        etag.starts_with("W/\"") && etag.ends_with('"'),
        "{what}: etag {etag:?}"
    );
    etag
}

async fn get_page(app: &TestApp, path: &str) -> String {
    let res = app.get(path).await;
    assert_eq!(res.status(), 200, "{path}");
    assert_eq!(
        header(&res, "content-type"),
        "text/html; charset=utf-8",
        "{path}"
    );
    assert_console_headers(&res, path);
    res.text().await.expect("the page text")
}

#[tokio::test]
async fn pages_are_html_with_a_strict_policy() {
    let app = spawn_app().await;
    let home = get_page(&app, "/console").await;
    assert!(home.contains("Send a test delivery"), "{home}");
    assert!(home.contains(r#"<script type="module" src="/console/assets/landing.js">"#));
    let track = get_page(&app, "/console/track/any-id-at-all").await;
    assert!(track.contains("/console/assets/track.js"));
    assert!(get_page(&app, "/console/fleet").await.contains("fleet.js"));
    assert!(get_page(&app, "/console/ops").await.contains("ops.js"));
    // Static segments match case-insensitively, a trailing slash is
    // ignored, and the original ingress prefix works, as for the API.
    for alias in [
        "/console/",
        "/Console",
        "/v0.1.0/console",
        "/CONSOLE/Fleet/",
    ] {
        let res = app.get(alias).await;
        assert_eq!(res.status(), 200, "{alias}");
        assert_console_headers(&res, alias);
    }
    // Ids are never rewritten: the page is the same whatever the id.
    assert_eq!(get_page(&app, "/console/track/AbC").await, track);
    app.stop().await;
}

#[tokio::test]
async fn assets_have_their_content_type_and_revalidate() {
    let app = spawn_app().await;
    assert!(!ASSETS.is_empty());
    for asset in &ASSETS {
        let path = format!("/console/assets/{}", asset.name);
        let res = app.get(&path).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "content-type"), asset.content_type, "{path}");
        let etag = assert_console_headers(&res, &path);
        let body = res.bytes().await.expect("the asset body");
        assert_eq!(&body[..], asset.body, "{path}");

        // A matching If-None-Match: 304, no body, same validator.
        let res = app
            .client
            .get(app.url(&path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 304, "{path}");
        assert_eq!(header(&res, "etag"), etag);
        assert_eq!(res.bytes().await.expect("the 304 body").len(), 0);
        // A stale one: the file again.
        let res = app
            .client
            .get(app.url(&path))
            .header("if-none-match", "W/\"0000000000000000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    for ext in ["css", "js", "svg"] {
        assert!(
            ASSETS.iter().any(|a| a.name.ends_with(ext)),
            "no .{ext} asset"
        );
    }
    // Distinct files, distinct validators.
    let tags: std::collections::BTreeSet<String> = page_etags(&app).await;
    assert_eq!(tags.len(), PAGES.len());
    app.stop().await;
}

async fn page_etags(app: &TestApp) -> std::collections::BTreeSet<String> {
    let mut tags = std::collections::BTreeSet::new();
    for path in [
        "/console",
        "/console/track/x",
        "/console/fleet",
        "/console/ops",
    ] {
        tags.insert(header(&app.get(path).await, "etag"));
    }
    tags
}

#[tokio::test]
async fn unknown_assets_and_wrong_methods_are_problems() {
    let app = spawn_app().await;
    for path in [
        "/console/assets/nope.js",
        "/console/assets/index.html",
        "/console/assets/..%2Fconsole.css",
        "/console/assets/CONSOLE.CSS",
        "/console/nope",
        "/console/track",
        "/console/assets",
    ] {
        let body = assert_problem(app.get(path).await, 404).await;
        assert!(body["detail"].is_string(), "{path}: {body}");
    }
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let res = app
            .client
            .request(method.clone(), app.url("/console"))
            .send()
            .await
            .unwrap();
        assert_problem(res, 405).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn only_processes_serving_the_api_serve_the_console() {
    let backends = dronedelivery_engine::memory::backends(Duration::from_secs(30), 100_000);
    let gateway = spawn_app_on(|a| a.role = RoleArg::Gateway, Some(backends.clone())).await;
    let worker = spawn_app_on(|a| a.role = RoleArg::Worker, Some(backends)).await;
    get_page(&gateway, "/console").await;
    assert_eq!(gateway.get("/console/assets/common.js").await.status(), 200);
    assert_problem(worker.get("/console").await, 404).await;
    assert_problem(worker.get("/console/assets/common.js").await, 404).await;
    assert_problem(worker.get("/api/drones").await, 404).await;
    // The gateway runs no drones but lists the worker's from the shared store.
    let list: Value = gateway
        .get("/api/drones")
        .await
        .json()
        .await
        .expect("a JSON drone list");
    assert_eq!(list["drones"].as_array().map(Vec::len), Some(10));
    worker.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn the_drone_list_shows_the_fleet_at_work() {
    // A slow charger (about 0.6 km per real second at this simulation's
    // speed), so the drained battery is seen charging.
    let app = spawn_app_with(|a| a.drone_recharge_km_per_hour = 1.0).await;
    let list: Value = app
        .get("/api/drones")
        .await
        .json()
        .await
        .expect("a JSON drone list");
    let drones = list["drones"].as_array().cloned().unwrap_or_default();
    assert_eq!(drones.len(), 10, "{list}");
    let ids: Vec<&str> = drones.iter().filter_map(|d| d["id"].as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "ordered by id");
    for d in &drones {
        assert_eq!(d["status"], "Available", "{d}");
        assert_eq!(d["batteryPercent"], 100, "{d}");
        assert!(d["target"].is_null() && d["deliveryId"].is_null(), "{d}");
        assert_eq!(d["position"], d["depot"], "{d}");
    }
    let area = &list["area"];
    for edge in ["south", "west", "north", "east"] {
        assert!(area[edge].is_f64(), "{area}");
    }

    // A delivery: its drone shows it, then goes home and parks again.
    let id = app.post_delivery(&ri_example()).await;
    let status = app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    let drone = status["droneId"]
        .as_str()
        .expect("a completed delivery names its drone")
        .to_owned();
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let list: Value = app
            .get("/api/drones")
            .await
            .json()
            .await
            .expect("a JSON drone list");
        let d = list["drones"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["id"] == drone.as_str()).cloned())
            .unwrap_or_default();
        assert!(d["flownM"].as_f64().unwrap_or(0.0) > 0.0, "{d}");
        if d["status"] == "Available" {
            // The simulated battery: the flight drained it (its first
            // flight, so by what it flew, less what it has charged since it
            // parked), and it charges at the depot.
            let flown = d["flownM"].as_f64().unwrap_or_default();
            let range = d["rangeLeftM"].as_f64().unwrap_or_default();
            assert!(range >= 100_000.0 - flown - 1.0, "{d}");
            assert!(
                range < 100_000.0 && d["batteryPercent"].as_u64() < Some(100),
                "{d}"
            );
            assert_eq!(d["position"], d["depot"], "{d}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            let again: Value = app.get("/api/drones").await.json().await.expect("json");
            let later = again["drones"]
                .as_array()
                .and_then(|ds| ds.iter().find(|d| d["id"] == drone.as_str()).cloned())
                .unwrap_or_default();
            assert!(
                later["rangeLeftM"].as_f64().unwrap_or_default() > range,
                "charging at the depot: {d} then {later}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{drone} never parked: {d}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}
