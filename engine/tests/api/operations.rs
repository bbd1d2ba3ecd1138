//! What operators rely on: every documented metric is reported after a
//! flow, bodies over the limit are refused, ingestion is rate-limited per
//! client, CORS is off unless configured, and the `gateway` and `worker`
//! roles split one engine's work between processes sharing the backends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dronedelivery_actors::metrics as m;
use dronedelivery_engine::config::RoleArg;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    assert_problem, confirmation, header, ri_example, spawn_app_on, spawn_app_with, stage,
    SwitchableDeliveries, TestApp,
};

const LONG: Duration = Duration::from_secs(30);
const ADMIN_TOKEN: &str = "operations-test-token";

/// Parses a Prometheus text exposition into the largest sample value seen
/// per metric family (histograms by their `_count`, `_sum` and `_bucket`
/// series).
fn family_maxima(text: &str, into: &mut HashMap<String, f64>) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => continue,
        };
        let name = series.split('{').next().unwrap_or(series);
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| m::ALL.contains(base))
            .unwrap_or(name);
        if let Ok(v) = value.parse::<f64>() {
            let entry = into.entry(family.to_owned()).or_insert(f64::MIN);
            *entry = entry.max(v);
        }
    }
}

/// Scrapes `/metrics` every 100 ms until dropped, keeping each family's
/// maximum: level gauges (queue depth, breaker state, pending requests)
/// are non-zero only while something is going on.
fn scrape_continuously(
    app: &TestApp,
) -> (
    Arc<std::sync::Mutex<HashMap<String, f64>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let url = app.url("/metrics");
    let client = app.client.clone();
    let sink = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        loop {
            if let Ok(res) = client.get(&url).send().await {
                if let Ok(text) = res.text().await {
                    if let Ok(mut map) = sink.lock() {
                        family_maxima(&text, &mut map);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (seen, task)
}

#[tokio::test]
async fn after_a_flow_every_documented_metric_is_reported_non_zero() {
    let mut backends = dronedelivery_engine::memory::backends(Duration::from_secs(30), 100_000);
    let store = SwitchableDeliveries::wrap(&mut backends);
    // Two slow-ish drones: requests queue at the fleet, some wait longer
    // than the allowed second and are compensated (cancelled, dead-lettered).
    let app = spawn_app_on(
        |a| {
            a.fleet_size = 2;
            a.depots = 1;
            a.sim_speed = 300.0;
            a.consumers = 2;
            a.prefetch = 2;
            a.max_drone_wait_secs = 1;
            a.passivate_after_secs = 1;
            a.max_delivery_attempts = 2;
            a.admin_token = ADMIN_TOKEN.parse().ok();
        },
        Some(backends),
    )
    .await;
    let (seen, scraper) = scrape_continuously(&app);
    assert_eq!(app.get("/readyz").await.status(), 200);

    // A burst: the queue backs up behind the small prefetch, the fleet's
    // pending list grows, the first two complete.
    let mut ids = Vec::new();
    for i in 0..8 {
        let mut body = ri_example();
        body["pickupLocation"] = json!(format!("operations pickup {i}"));
        if i == 0 {
            // A deadline already past: at risk all the way, then missed.
            body["deadline"] = json!("2000-01-01T00:00:00Z");
        }
        ids.push(app.post_delivery(&body).await);
    }
    let first = ids[0].clone();
    app.wait_for_stage(&first, stage::COMPLETED, LONG).await;
    // Notify-me, then confirmation: a notification is sent.
    let res = app
        .send_json(
            Method::POST,
            &format!("/api/deliveries/{first}/notifymerequests"),
            &json!({"emailAddress": "ops@example.com"}),
        )
        .await;
    assert!(res.status().is_success(), "notify-me: {}", res.status());
    let res = app
        .send_json(
            Method::POST,
            &format!("/api/deliveries/{first}/confirmations"),
            &confirmation(),
        )
        .await;
    assert_eq!(res.status(), 200);

    // A slow store: messages stay in flight (received, not yet settled).
    let mut during = Vec::new();
    store.set_delay(Duration::from_millis(400));
    for i in 0..4 {
        let mut body = ri_example();
        body["pickupLocation"] = json!(format!("slow pickup {i}"));
        during.push(app.post_delivery(&body).await);
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    store.set_delay(Duration::ZERO);

    // A store outage while requests keep coming: the breaker opens, the
    // messages wait in the queue (depth, unsettled, in flight).
    store.set_down(true);
    for i in 0..4 {
        let mut body = ri_example();
        body["pickupLocation"] = json!(format!("outage pickup {i}"));
        during.push(app.post_delivery(&body).await);
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    store.set_down(false);

    // A poison message is dead-lettered; an operator replays a compensated one.
    app.engine
        .submit(dronedelivery_actors::ports::QueueMessage::new(
            dronedelivery_actors::ports::Operation::Delivery,
            &json!({"not": "a delivery"}),
            None,
        ))
        .await
        .unwrap();
    let letters = wait_for_dead_letters(&app, 2).await;
    let compensated = letters
        .iter()
        .find(|l| {
            l["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("compensated"))
        })
        .unwrap_or_else(|| panic!("no compensated delivery among {letters:?}"));
    let replay_id = compensated["id"]
        .as_str()
        .expect("the dead letter has an id")
        .to_owned();
    let res = app
        .client
        .post(app.url(&format!("/admin/deadletters/{replay_id}/replay")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "replay: {}", res.status());

    // An operator restart of the consumers.
    let res = app
        .client
        .post(app.url("/admin/supervisors/consumers/restart"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "restart: {}", res.status());

    // Everything ends; idle actors passivate.
    for id in ids.iter().chain(&during) {
        app.wait_for(id, Duration::from_secs(60), |s| {
            s["stage"] == stage::COMPLETED || s["stage"] == stage::CANCELLED
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    scraper.abort();

    let seen = seen.lock().expect("the scraper did not panic").clone();
    let missing: Vec<&str> = m::ALL
        .iter()
        .copied()
        .filter(|n| !seen.contains_key(*n))
        .collect();
    assert!(missing.is_empty(), "metrics never exported: {missing:?}");
    let zero: Vec<(&str, f64)> = m::ALL
        .iter()
        .map(|n| (*n, seen.get(*n).copied().unwrap_or_default()))
        .filter(|(_, v)| *v <= 0.0)
        .collect();
    assert!(
        zero.is_empty(),
        "metrics that never went above zero: {zero:?}"
    );
    app.stop().await;
}

async fn wait_for_dead_letters(app: &TestApp, at_least: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let res = app
            .client
            .get(app.url("/admin/deadletters?limit=100"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.expect("a JSON dead-letter page");
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= at_least {
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {at_least} dead letters: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_two_megabyte_body_is_refused_with_413() {
    let app = spawn_app_with(|_| {}).await;
    let mut big = ri_example();
    big["packageInfo"]["tag"] = json!("x".repeat(2 * 1024 * 1024));
    // With a Content-Length: read out and refused.
    let res = app
        .send_json(Method::POST, "/api/deliveryrequests", &big)
        .await;
    let body = assert_problem(res, 413).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("64 KiB")),
        "{body}"
    );

    // Chunked, with no length announced: refused once the limit is crossed.
    let payload = big.to_string();
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/deliveryrequests HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in payload.as_bytes().chunks(64 * 1024) {
        let frame = format!("{:x}\r\n", chunk.len());
        // The server may answer and close before taking the whole body.
        if stream.write_all(frame.as_bytes()).await.is_err()
            || stream.write_all(chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "answer: {}",
        &answer[..answer.len().min(300)]
    );
    assert!(answer.contains("application/problem+json"), "{answer}");
    // Nothing was queued.
    assert_eq!(app.engine.queue_depth().await.ok().flatten(), Some(0));
    app.stop().await;
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_gets_429_with_retry_after() {
    let app = spawn_app_with(|a| {
        a.rate_limit_per_second = 1;
        a.rate_limit_burst = 5;
    })
    .await;
    let mut accepted = 0;
    let mut limited = Vec::new();
    for _ in 0..12 {
        let res = app
            .send_json(Method::POST, "/api/deliveryrequests", &ri_example())
            .await;
        match res.status().as_u16() {
            202 => accepted += 1,
            429 => limited.push(res),
            other => panic!("unexpected status {other}"),
        }
    }
    // The burst, plus at most one token regained during the loop.
    assert!((5..=6).contains(&accepted), "accepted {accepted}");
    assert!(limited.len() >= 6, "only {} limited", limited.len());
    let res = limited.remove(0);
    let retry_after: u64 = header(&res, "retry-after").parse().unwrap_or(0);
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    let body = assert_problem(res, 429).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("retry in")),
        "{body}"
    );
    // Reads are not limited; every write route shares the client's quota.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/api/deliveries/nope").await.status(), 404);
    let package = json!({"size": "Small", "weight": 1, "tag": "t"});
    let confirmation = confirmation();
    for (method, path, body) in [
        (Method::PUT, "/api/packages/p-limit", &package),
        (Method::PATCH, "/api/packages/p-limit", &package),
        (Method::PUT, "/api/packages", &package),
        (
            Method::POST,
            "/api/deliveries/x/confirmations",
            &confirmation,
        ),
        (
            Method::POST,
            "/api/deliveries/x/notifymerequests",
            &json!({"sms": "555"}),
        ),
    ] {
        let res = app.send_json(method.clone(), path, body).await;
        assert_eq!(res.status(), 429, "{method} {path}");
    }
    // After the advertised wait the client is accepted again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    app.post_delivery(&ri_example()).await;
    app.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_clients_are_limited_separately() {
    let app = spawn_app_with(|a| {
        a.rate_limit_per_second = 1;
        a.rate_limit_burst = 2;
        a.trust_forwarded_for = true;
    })
    .await;
    let post = |client_ip: &'static str| {
        app.client
            .post(app.url("/api/deliveryrequests"))
            .header("x-forwarded-for", format!("198.51.100.99, {client_ip}"))
            .json(&ri_example())
            .send()
    };
    let mut a = Vec::new();
    for _ in 0..4 {
        a.push(
            post("203.0.113.1")
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0),
        );
    }
    assert_eq!(&a[..2], [202, 202]);
    assert!(a[2..].contains(&429), "{a:?}");
    // Another client behind the same proxy still has its quota.
    let b = post("203.0.113.2")
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(b, 202);
    app.stop().await;
}

#[tokio::test]
async fn cors_is_off_by_default_and_on_for_configured_origins() {
    let app = spawn_app_with(|_| {}).await;
    let preflight = |app: &TestApp| {
        app.client
            .request(Method::OPTIONS, app.url("/api/deliveryrequests"))
            .header("origin", "https://console.example")
            .header("access-control-request-method", "POST")
            .send()
    };
    let res = preflight(&app).await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    app.stop().await;

    let app =
        spawn_app_with(|a| a.cors_allowed_origins = vec!["https://console.example".into()]).await;
    let res = preflight(&app).await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(
        header(&res, "access-control-allow-origin"),
        "https://console.example"
    );
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test]
async fn responses_are_compressed_when_the_client_accepts_gzip() {
    let app = spawn_app_with(|_| {}).await;
    let res = app
        .client
        .get(app.url("/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&res, "content-encoding"), "gzip");
    let res = app.get("/metrics").await;
    assert_eq!(header(&res, "content-encoding"), "");
    app.stop().await;
}

#[tokio::test]
async fn gateway_and_worker_roles_share_the_work() {
    let backends = dronedelivery_engine::memory::backends(Duration::from_secs(30), 100_000);
    let gateway = spawn_app_on(|a| a.role = RoleArg::Gateway, Some(backends.clone())).await;
    let worker = spawn_app_on(
        |a| {
            a.role = RoleArg::Worker;
            a.admin_token = ADMIN_TOKEN.parse().ok();
        },
        Some(backends),
    )
    .await;

    // The gateway only queues; the worker processes; the gateway reads.
    let id = gateway.post_delivery(&ri_example()).await;
    gateway.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    // A confirmation through the gateway is applied by the worker's actor.
    let res = gateway
        .send_json(
            Method::POST,
            &format!("/api/deliveries/{id}/confirmations"),
            &confirmation(),
        )
        .await;
    assert_eq!(res.status(), 200);
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let record = gateway.engine.delivery(&id).await.ok().flatten();
        if record.is_some_and(|r| r.confirmation.is_some()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "confirmation never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The gateway runs no actors; the worker serves no API.
    let tree = gateway.engine.supervisor_tree().await;
    assert_eq!(
        tree.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["root"]
    );
    assert_eq!(tree[0].children, 0);
    let ready: Value = gateway
        .get("/readyz")
        .await
        .json()
        .await
        .expect("a JSON readiness answer");
    assert_eq!(ready["role"], "gateway");
    assert_problem(worker.get(&format!("/api/deliveries/{id}")).await, 404).await;
    assert_problem(
        worker
            .send_json(Method::POST, "/api/deliveryrequests", &ri_example())
            .await,
        404,
    )
    .await;
    assert_eq!(worker.get("/readyz").await.status(), 200);
    assert_eq!(worker.get("/metrics").await.status(), 200);
    let res = worker
        .client
        .get(worker.url("/admin/supervisors"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    worker.stop().await;
    gateway.stop().await;
}

/// A client sending a 3 MB body reads the `413`, every time: the server
/// reads the announced body out before answering instead of closing the
/// connection under the client's writes (which turned the answer into a
/// broken pipe or a reset whenever the body was still on its way). Forty
/// in a row, each on a connection of its own, for two routes.
#[tokio::test]
async fn every_oversized_request_in_a_row_reads_its_413() {
    let app = spawn_app_with(|_| {}).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let body = vec![b'x'; 3 * 1024 * 1024];
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for n in 0..40 {
        let (method, path) = if n % 2 == 0 {
            ("POST", "/api/deliveryrequests")
        } else {
            ("PATCH", "/api/packages/p1")
        };
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        // Sent as a client on a real network does, a piece at a time: the
        // server's answer can come while the body is still on its way.
        let sent = async {
            stream.write_all(head.as_bytes()).await?;
            for piece in body.chunks(64 * 1024) {
                stream.write_all(piece).await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<(), std::io::Error>(())
        }
        .await;
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        let outcome = match (sent, read) {
            (Err(e), _) => format!("write failed: {:?}", e.kind()),
            (_, Err(_)) => "no answer within 10 s".to_owned(),
            (_, Ok(Err(e))) => format!("read failed: {:?}", e.kind()),
            (Ok(()), Ok(Ok(_))) => String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .unwrap_or("empty answer")
                .to_owned(),
        };
        *answers.entry(outcome).or_default() += 1;
    }
    assert_eq!(
        answers.keys().collect::<Vec<_>>(),
        ["HTTP/1.1 413 Payload Too Large"],
        "{answers:?}"
    );
}
