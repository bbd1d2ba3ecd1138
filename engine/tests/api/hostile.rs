//! Hostile input: generated bodies, path segments and query strings on
//! every route, sent to the real server over HTTP. Whatever arrives, the
//! answer is a 4xx problem document or a success, never a 5xx, a panic or
//! a hang, and the server keeps answering afterwards.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::Method;

use crate::helpers::{spawn_app_with, TestApp};

/// Every route template with its methods; `{}` is replaced by a generated
/// path segment.
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/deliveryrequests", &["POST"]),
    ("/api/deliveryrequests/{}", &["PATCH", "DELETE"]),
    ("/api/deliveries/{}", &["GET"]),
    ("/api/deliveries/public/{}", &["GET"]),
    ("/api/deliveries/{}/owner", &["GET"]),
    ("/api/deliveries/{}/status", &["GET"]),
    ("/api/deliveries/{}/notifymerequests", &["POST"]),
    ("/api/deliveries/{}/confirmations", &["POST"]),
    ("/api/dronedeliveries/utilization", &["GET"]),
    ("/api/packages", &["PUT"]),
    ("/api/packages/{}", &["GET", "PUT", "PATCH"]),
    ("/admin/supervisors", &["GET"]),
    ("/admin/deadletters", &["GET"]),
    ("/admin/deadletters/{}/replay", &["POST"]),
    ("/v0.1.0/api/deliveryrequests", &["POST"]),
];

/// JSON-ish bodies: valid documents of every shape, near-misses of a
/// delivery request, and arbitrary bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    let json = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("ownerId".to_owned()),
                    Just("pickupLocation".to_owned()),
                    Just("dropOffLocation".to_owned()),
                    Just("packageInfo".to_owned()),
                    Just("pickupTime".to_owned()),
                    Just("confirmationRequired".to_owned()),
                    Just("size".to_owned()),
                    Just("weight".to_owned()),
                    Just("emailAddress".to_owned()),
                    Just("geoCoordinates".to_owned()),
                    ".{0,12}",
                ],
                inner,
                0..8,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        json.prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// A path segment: any text, percent-encoded as a client would send it.
fn segment() -> impl Strategy<Value = String> {
    ".{1,64}".prop_map(|s| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    })
}

/// A query string of arbitrary (encoded) pairs.
fn query() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop_oneof![
                Just("ownerId".to_owned()),
                Just("year".to_owned()),
                Just("month".to_owned()),
                Just("offset".to_owned()),
                Just("limit".to_owned()),
                "[a-z]{1,8}",
            ],
            segment(),
        ),
        0..4,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

async fn send(app: &TestApp, method: &str, path: &str, body: Vec<u8>, token: Option<&str>) -> u16 {
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let mut request = app
        .client
        .request(method.clone(), app.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let res = tokio::time::timeout(Duration::from_secs(10), request.send()).await;
    match res {
        Ok(Ok(res)) => {
            let status = res.status().as_u16();
            if status >= 400 {
                let ct = res
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    ct.starts_with("application/problem+json"),
                    "{method} {path}: {status} with content-type {ct:?}"
                );
            }
            status
        }
        Ok(Err(e)) => panic!("{method} {path}: transport error {e}"),
        Err(_) => panic!("{method} {path}: no answer within 10 s"),
    }
}

#[test]
fn generated_requests_on_every_route_never_get_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(spawn_app_with(|a| {
        a.admin_token = "hostile-test-token".parse().ok();
    }));
    let cases = std::env::var("DD_HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    run(
        &rt,
        &app,
        cases,
        &[Some("hostile-test-token".into())],
        "scenario 6 (hostile input)",
    );
    rt.block_on(app.stop());
}

/// The same with bearer-token authentication on: no token, a garbage one,
/// an owner's and one with every role, drawn for each request.
#[test]
fn with_authentication_on_generated_requests_never_get_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = crate::auth::es256("hostile");
    let issuer = rt.block_on(crate::auth::Issuer::start(&[&key]));
    let app = rt.block_on(crate::auth::spawn_secured(&issuer));
    let cases = std::env::var("DD_HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(500, |n| n / 2);
    let tokens = [
        None,
        Some("not.a.token".to_owned()),
        Some(crate::auth::sign(&key, &issuer.claims("owner-h", &[]))),
        Some(crate::auth::sign(
            &key,
            &issuer.claims("owner-h", &["Dispatcher", "Operator", "PackageWriter"]),
        )),
    ];
    run(
        &rt,
        &app,
        cases,
        &tokens,
        "scenario 6 (hostile input, authentication on)",
    );
    rt.block_on(app.stop());
}

/// Sends `cases` generated requests, each with one of `tokens`, and checks
/// every answer: a 4xx problem or a success, never a 5xx; the server still
/// serves afterwards.
fn run(
    rt: &tokio::runtime::Runtime,
    app: &TestApp,
    cases: u32,
    tokens: &[Option<String>],
    label: &str,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        (0..ROUTES.len(), 0usize..3, 0..tokens.len()),
        segment(),
        query(),
        body(),
    );
    // Answers by class (2xx, 3xx, 4xx, 5xx), for the report.
    let classes = std::cell::RefCell::new([0usize; 4]);
    let result = runner.run(
        &strategy,
        |((route, method, token), segment, query, body)| {
            let (template, methods) = ROUTES[route];
            let method = methods[method % methods.len()];
            let mut path = template.replace("{}", &segment);
            if !query.is_empty() {
                path = format!("{path}?{query}");
            }
            let status = rt.block_on(send(app, method, &path, body, tokens[token].as_deref()));
            if let Some(n) = classes
                .borrow_mut()
                .get_mut(usize::from(status / 100).saturating_sub(2))
            {
                *n += 1;
            }
            prop_assert!(status < 500, "{method} {path} answered {status}");
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    let [ok, redirect, refused, failed] = *classes.borrow();
    println!(
        "{label}: requests={} 2xx={ok} 3xx={redirect} 4xx={refused} 5xx={failed}",
        ok + redirect + refused + failed
    );
    // Still serving, and nothing was queued that cannot be processed:
    // every accepted request was a valid one.
    assert_eq!(rt.block_on(app.get("/healthz")).status(), 200);
    assert_eq!(rt.block_on(app.get("/readyz")).status(), 200);
}
