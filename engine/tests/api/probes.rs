use crate::helpers::{ri_example, spawn_app, stage};
use std::time::Duration;

#[tokio::test]
async fn liveness_and_readiness() {
    let app = spawn_app().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_and_deliveries() {
    let app = spawn_app().await;
    let id = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&id, stage::COMPLETED, Duration::from_secs(20))
        .await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("the metrics text");
    for name in [
        "dronedelivery_http_requests_total",
        "dronedelivery_deliveries_accepted_total",
        "dronedelivery_deliveries_completed_total",
        "dronedelivery_queue_depth",
        "dronedelivery_actors_live",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    // Route templates, never raw ids, label HTTP metrics.
    assert!(text.contains("/api/deliveries/{id}/status"), "{text}");
    assert!(
        !text.contains(&id),
        "a raw delivery id leaked into metric labels"
    );
    let completed = text
        .lines()
        .find(|l| l.starts_with("dronedelivery_deliveries_completed_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(completed.is_some_and(|c| c >= 1.0), "{text}");
    app.stop().await;
}
