//! Trace export over OTLP/HTTP (`--features otel`): spans reach a collector,
//! and one request's trace continues across the queue in the worker. A
//! local axum endpoint stands in for the collector and records what it
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

/// One request, one trace, across the queue and across processes: a
/// gateway process and a worker process on Redis Streams both export to the
/// collector; the worker's span for the request's message has the trace id
/// of the gateway's span for the `POST`, and no other request's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_gateway_and_worker() {
    let received: Received = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let prefix = format!("otel-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let spawn = |role: &str| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_dronedelivery"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--role", role, "--queue", "redis-streams"])
            .args([
                "--redis-url",
                "redis://127.0.0.1:6379",
                "--redis-prefix",
                &prefix,
            ])
            .args(["--otlp-endpoint", &collector])
            .args(["--sim-speed", "2000", "--tick-ms", "20"])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn dronedelivery");
        (child, format!("http://127.0.0.1:{port}"))
    };
    let (mut gateway, gateway_url) = spawn("gateway");
    let (mut worker, worker_url) = spawn("worker");
    let client = reqwest::Client::new();
    for url in [&gateway_url, &worker_url] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(std::time::Instant::now() < deadline, "{url} never ready");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let res = client
        .post(format!("{gateway_url}/api/deliveryrequests"))
        .json(&serde_json::json!({
            "confirmationRequired": "None", "deadline": "", "dropOffLocation": "drop off",
            "expedited": true, "ownerId": "otel-owner",
            "packageInfo": {"packageId": format!("{prefix}-package"), "size": "Small", "tag": "t", "weight": 10},
            "pickupLocation": "pickup", "pickupTime": "2019-05-08T20:00:00.000Z"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<serde_json::Value>().await.unwrap()["deliveryId"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stage = client
            .get(format!("{gateway_url}/api/deliveries/{id}/status"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200);
        let stage = match stage {
            Some(r) => r.json::<serde_json::Value>().await.unwrap_or_default()["stage"].as_u64(),
            None => None,
        };
        if stage == Some(4) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{id} never completed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A graceful stop flushes each process's spans.
    for child in [&mut gateway, &mut worker] {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = tokio::task::block_in_place(|| child.wait()).unwrap();
        assert!(status.success(), "{status}");
    }
    let mut spans = Vec::new();
    for (_, body) in received.lock().unwrap().iter() {
        spans.extend(otlp::spans(body));
    }
    let posts: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "http_request" && s.text.contains("/api/deliveryrequests"))
        .collect();
    assert_eq!(posts.len(), 1, "one POST span: {spans:#?}");
    let messages: Vec<_> = spans.iter().filter(|s| s.name == "queue_message").collect();
    assert_eq!(messages.len(), 1, "one message processed: {spans:#?}");
    assert_eq!(
        messages[0].trace_id, posts[0].trace_id,
        "the worker's span continues the request's trace"
    );
    assert_ne!(
        messages[0].parent_span_id,
        Vec::<u8>::new(),
        "the worker's span has a parent"
    );
    let others = spans
        .iter()
        .filter(|s| s.name == "http_request" && !s.text.contains("/api/deliveryrequests"))
        .filter(|s| s.trace_id == posts[0].trace_id)
        .count();
    assert_eq!(others, 0, "other requests are other traces");
}

/// Just enough of the OTLP protobuf (`ExportTraceServiceRequest`) to read
/// spans: resource_spans(1) → scope_spans(2) → spans(2) → trace_id(1),
/// parent_span_id(4), name(5).
mod otlp {
    #[derive(Debug)]
    pub struct Span {
        pub trace_id: Vec<u8>,
        pub parent_span_id: Vec<u8>,
        pub name: String,
        /// The span's bytes as text: attribute keys and values are in it.
        pub text: String,
    }

    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// The length-delimited fields of a message, by field number.
    fn fields(mut buf: &[u8]) -> Vec<(u64, &[u8])> {
        let mut out = Vec::new();
        while let Some(key) = varint(&mut buf) {
            match key & 7 {
                0 => {
                    varint(&mut buf);
                }
                1 => buf = buf.get(8..).unwrap_or_default(),
                5 => buf = buf.get(4..).unwrap_or_default(),
                2 => {
                    let Some(len) = varint(&mut buf).and_then(|l| usize::try_from(l).ok()) else {
                        break;
                    };
                    let Some(value) = buf.get(..len) else { break };
                    out.push((key >> 3, value));
                    buf = &buf[len..];
                }
                _ => break,
            }
        }
        out
    }

    pub fn spans(request: &[u8]) -> Vec<Span> {
        let mut spans = Vec::new();
        for (_, resource_spans) in fields(request).into_iter().filter(|(f, _)| *f == 1) {
            for (_, scope_spans) in fields(resource_spans).into_iter().filter(|(f, _)| *f == 2) {
                for (_, span) in fields(scope_spans).into_iter().filter(|(f, _)| *f == 2) {
                    let parts = fields(span);
                    let get = |n: u64| {
                        parts
                            .iter()
                            .find(|(f, _)| *f == n)
                            .map(|(_, v)| v.to_vec())
                            .unwrap_or_default()
                    };
                    spans.push(Span {
                        trace_id: get(1),
                        parent_span_id: get(4),
                        name: String::from_utf8_lossy(&get(5)).into_owned(),
                        text: String::from_utf8_lossy(span).into_owned(),
                    });
                }
            }
        }
        spans
    }
}
