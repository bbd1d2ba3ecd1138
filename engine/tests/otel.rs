//! Trace export over OTLP/HTTP (`--features otel`): spans reach a collector.
//! A local axum endpoint stands in for the collector and records what it
//! receives.
#![cfg(feature = "otel")]
// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use dronedelivery_engine::config::LogFormat;
use dronedelivery_engine::telemetry;

type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

async fn collect(State(received): State<Received>, headers: HeaderMap, body: Bytes) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut r) = received.lock() {
        r.push((content_type, body));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_the_collector() {
    let received: Received = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let endpoint = format!("http://{address}");
    let guard = telemetry::init_telemetry(LogFormat::Text, Some(&endpoint)).expect("telemetry");
    tracing::info_span!("otel-export-check", delivery_id = "d-42").in_scope(|| {
        tracing::info!("inside the span");
    });
    // Dropping the guard flushes the batch (a blocking call: off the runtime).
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();

    let received = received
        .lock()
        .expect("the collector did not panic")
        .clone();
    assert!(!received.is_empty(), "the collector received nothing");
    let (content_type, body) = &received[0];
    assert_eq!(content_type, "application/x-protobuf");
    // Protobuf keeps strings as UTF-8 bytes: the span name and attribute are there.
    let text = String::from_utf8_lossy(body);
    assert!(text.contains("otel-export-check"), "span name missing");
    assert!(text.contains("d-42"), "span attribute missing");
    assert!(text.contains("dronedelivery"), "service name missing");
}
