//! `--auth-mode jwt` against a local OpenID Connect issuer: a discovery
//! document and a key set (JWKS) served by the test, with keys made in the
//! test (ES256 with `ring`, RS256 with the `openssl` command), and tokens
//! signed with them. Each refusal, key rotation, owners kept apart, and the
//! roles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use dronedelivery_engine::config::AuthMode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::helpers::{confirmation, ri_example, spawn_app_with, stage, TestApp};

const AUDIENCE: &str = "api://dronedelivery";

/// A signing key of the test issuer: its private half and its JWK.
pub(crate) struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// The public key's bytes (what an HMAC forgery would use as secret).
    public: Vec<u8>,
}

/// A P-256 key made with `ring`.
pub(crate) fn es256(kid: &str) -> SigningKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    SigningKey {
        kid: kid.into(),
        algorithm: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}),
        public: point,
    }
}

/// A 2048-bit RSA key made with the `openssl` command.
fn rs256(kid: &str) -> SigningKey {
    let dir = std::env::temp_dir().join(format!("dd-auth-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("key.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(ok.status.success(), "openssl genpkey failed");
    let modulus = std::process::Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    let text = String::from_utf8(modulus.stdout).unwrap();
    let hex = text.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let private = std::fs::read(&pem).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    SigningKey {
        kid: kid.into(),
        algorithm: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(&private).unwrap(),
        jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": B64.encode(&n), "e": "AQAB"}),
        public: n,
    }
}

/// The test's OpenID Connect issuer: discovery and key set, the keys it
/// publishes changeable, its key-set fetches counted.
#[derive(Clone)]
pub(crate) struct Issuer {
    url: String,
    published: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl Issuer {
    pub(crate) async fn start(keys: &[&SigningKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Self {
            url: url.clone(),
            published: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect())),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/keys")});
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let d = discovery.clone();
                    async move { Json(d) }
                }),
            )
            .route(
                "/keys",
                get(|State(issuer): State<Issuer>| async move {
                    issuer.fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = issuer.published.lock().unwrap().clone();
                    Json(json!({ "keys": keys }))
                }),
            )
            .with_state(issuer.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        issuer
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.published.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Claims of a token valid now for `owner` with `roles`.
    pub(crate) fn claims(&self, owner: &str, roles: &[&str]) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({"iss": self.url, "aud": AUDIENCE, "sub": owner, "roles": roles,
            "iat": now, "nbf": now - 5, "exp": now + 600})
    }
}

pub(crate) fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(key.algorithm);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

pub(crate) async fn spawn_secured(issuer: &Issuer) -> TestApp {
    spawn_secured_at(issuer, 2_000.0).await
}

/// With the simulation at `sim_speed` (slower to watch a flight).
async fn spawn_secured_at(issuer: &Issuer, sim_speed: f64) -> TestApp {
    let url = issuer.url.clone();
    spawn_app_with(move |a| {
        a.auth_mode = AuthMode::Jwt;
        a.auth_issuer = Some(url);
        a.auth_audience = Some(AUDIENCE.into());
        a.auth_leeway_secs = 5;
        a.sim_speed = sim_speed;
    })
    .await
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.unwrap()
}

/// Asserts a 401 refusal with the bearer challenge, `invalid_token` when a
/// token was sent; returns the problem's detail.
async fn assert_refused(res: reqwest::Response, invalid_token: bool) -> String {
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"dronedelivery\""),
        "{challenge}"
    );
    assert_eq!(
        challenge.contains("error=\"invalid_token\""),
        invalid_token,
        "{challenge}"
    );
    let body: Value = res.json().await.unwrap();
    body["detail"].as_str().unwrap_or_default().to_owned()
}

fn request_for(owner: &str) -> Value {
    let mut body = ri_example();
    body["ownerId"] = json!(owner);
    body
}

/// Posts a delivery for `owner` with `token` and waits until it is
/// completed (read with the same token).
async fn delivered(app: &TestApp, token: &str, owner: &str) -> String {
    let res = call(
        app,
        Method::POST,
        "/api/deliveryrequests",
        Some(token),
        Some(&request_for(owner)),
    )
    .await;
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["deliveryId"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let res = call(
            app,
            Method::GET,
            &format!("/api/deliveries/{id}/status"),
            Some(token),
            None,
        )
        .await;
        if res.status() == 200 && res.json::<Value>().await.unwrap()["stage"] == stage::COMPLETED {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never completed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every refusal: no token, not a JWT, `alg: none`, HMAC signed with the
/// public key, a key the issuer does not publish, expired, not yet valid,
/// another issuer, another audience, a bad signature; all `401` with the
/// challenge, nothing else served. A valid token of either algorithm is
/// accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_for_every_reason_and_accepted_when_valid() {
    let ec = es256("ec-1");
    let rsa = rs256("rsa-1");
    let issuer = Issuer::start(&[&ec, &rsa]).await;
    let app = spawn_secured(&issuer).await;
    let path = "/api/deliveries/nope";

    assert_refused(call(&app, Method::GET, path, None, None).await, false).await;
    let res = app
        .client
        .get(app.url(path))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_refused(res, false).await;

    let good = issuer.claims("owner-a", &[]);
    let now = chrono::Utc::now().timestamp();
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT","kid":"ec-1"}"#),
        B64.encode(good.to_string())
    );
    let mut hmac_header = Header::new(Algorithm::HS256);
    hmac_header.kid = Some("rsa-1".into());
    let forged =
        jsonwebtoken::encode(&hmac_header, &good, &EncodingKey::from_secret(&rsa.public)).unwrap();
    let mut ec_header = Header::new(Algorithm::HS256);
    ec_header.kid = Some("ec-1".into());
    let forged_ec =
        jsonwebtoken::encode(&ec_header, &good, &EncodingKey::from_secret(&ec.public)).unwrap();
    let stranger = sign(&es256("ec-1"), &good);
    let unpublished = sign(&es256("ec-unknown"), &good);
    let cases: Vec<(&str, String, &str)> = vec![
        ("not a JWT", "abc.def".into(), "RS256 or ES256"),
        ("alg none", none, "RS256 or ES256"),
        ("HMAC with the RSA public key", forged, "not accepted"),
        ("HMAC with the EC public key", forged_ec, "not accepted"),
        ("another key under a published kid", stranger, "signature"),
        ("an unpublished kid", unpublished, "unknown key"),
        (
            "expired",
            sign(&ec, &with("exp", json!(now - 60))),
            "expired",
        ),
        (
            "not yet valid",
            sign(&ec, &with("nbf", json!(now + 60))),
            "not valid yet",
        ),
        (
            "another issuer",
            sign(&ec, &with("iss", json!("https://evil.example"))),
            "issuer",
        ),
        (
            "another audience",
            sign(&ec, &with("aud", json!("api://other"))),
            "audience",
        ),
        (
            "no expiry",
            sign(&ec, &{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
            "'exp'",
        ),
    ];
    for (what, token, says) in cases {
        let detail = assert_refused(
            call(&app, Method::GET, path, Some(&token), None).await,
            true,
        )
        .await;
        assert!(detail.contains(says), "{what}: {detail}");
    }
    // Within the leeway (5 s) an expired token still passes, and is
    // remembered as verified; once the leeway has passed too it is refused,
    // remembered or not.
    let late = sign(&ec, &with("exp", json!(now - 2)));
    let res = call(&app, Method::GET, path, Some(&late), None).await;
    assert_eq!(res.status(), 404, "within the leeway");
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let detail = assert_refused(call(&app, Method::GET, path, Some(&late), None).await, true).await;
    assert!(detail.contains("expired"), "{detail}");
    for key in [&ec, &rsa] {
        let res = call(&app, Method::GET, path, Some(&sign(key, &good)), None).await;
        assert_eq!(
            res.status(),
            404,
            "{:?}: a valid token reaches the route",
            key.algorithm
        );
    }
    // What needs no token still needs none.
    for open in ["/healthz", "/metrics", "/openapi.json", "/console"] {
        assert_eq!(app.get(open).await.status(), 200, "{open}");
    }
    app.stop().await;
}

/// A key rotated in at the issuer is picked up without a restart, while
/// tokens with made-up key ids cannot make the engine fetch the key set
/// more than once per refetch interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_picked_up_and_key_fetches_are_bounded() {
    let old = es256("old");
    let issuer = Issuer::start(&[&old]).await;
    let app = spawn_secured(&issuer).await;
    let path = "/api/deliveries/nope";
    let claims = issuer.claims("owner-a", &[]);
    assert_eq!(
        call(&app, Method::GET, path, Some(&sign(&old, &claims)), None)
            .await
            .status(),
        404
    );
    let fetched = issuer.fetches.load(Ordering::SeqCst);
    assert_eq!(fetched, 1, "fetched once, at start");

    // A flood of made-up key ids: refused, and the key set is not fetched
    // for each of them.
    for n in 0..50 {
        let token = sign(&es256(&format!("made-up-{n}")), &claims);
        assert_refused(
            call(&app, Method::GET, path, Some(&token), None).await,
            true,
        )
        .await;
    }
    assert!(
        issuer.fetches.load(Ordering::SeqCst) <= fetched + 1,
        "made-up key ids fetched the key set {} times",
        issuer.fetches.load(Ordering::SeqCst) - fetched
    );

    let new = rs256("new");
    issuer.publish(&[&old, &new]);
    let token = sign(&new, &claims);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = call(&app, Method::GET, path, Some(&token), None)
            .await
            .status();
        if status == 404 {
            break;
        }
        assert_eq!(status, 401);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated key was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    app.stop().await;
}

/// Owner A cannot create for B (403), nor see or change B's delivery on any
/// route that takes its id (404, as if it did not exist); B and a
/// dispatcher can. A's own utilisation is A's only. Drones show which
/// delivery they carry to dispatchers only; packages are written by
/// package writers only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_see_only_their_own_and_roles_widen_that() {
    let key = es256("k");
    let issuer = Issuer::start(&[&key]).await;
    // Slow enough that a flight can be watched on `/api/drones`.
    let app = spawn_secured_at(&issuer, 300.0).await;
    let a = sign(&key, &issuer.claims("owner-a", &[]));
    let b = sign(&key, &issuer.claims("owner-b", &[]));
    let dispatcher = sign(&key, &issuer.claims("desk", &["Dispatcher"]));
    let writer = sign(&key, &issuer.claims("packer", &["PackageWriter"]));

    let res = call(
        &app,
        Method::POST,
        "/api/deliveryrequests",
        Some(&a),
        Some(&request_for("owner-b")),
    )
    .await;
    assert_eq!(res.status(), 403, "A creates for B");
    let id = delivered(&app, &b, "owner-b").await;

    let reschedule = json!({"pickupLocation": "47.61,-122.20", "deadline": "tomorrow"});
    let confirmation = confirmation();
    let notify = json!({"emailAddress": "a@example.com"});
    let routes: Vec<(Method, String, Option<&Value>)> = vec![
        (Method::GET, format!("/api/deliveries/{id}"), None),
        (Method::GET, format!("/api/deliveries/public/{id}"), None),
        (Method::GET, format!("/api/deliveries/{id}/owner"), None),
        (Method::GET, format!("/api/deliveries/{id}/status"), None),
        (Method::GET, format!("/api/deliveries/{id}/events"), None),
        (
            Method::PATCH,
            format!("/api/deliveryrequests/{id}"),
            Some(&reschedule),
        ),
        (Method::DELETE, format!("/api/deliveryrequests/{id}"), None),
        (
            Method::POST,
            format!("/api/deliveries/{id}/notifymerequests"),
            Some(&notify),
        ),
        (
            Method::POST,
            format!("/api/deliveries/{id}/confirmations"),
            Some(&confirmation),
        ),
    ];
    for (method, path, body) in &routes {
        let res = call(&app, method.clone(), path, Some(&a), *body).await;
        assert_eq!(res.status(), 404, "A on {method} {path}");
    }
    for (who, token) in [("B", &b), ("a dispatcher", &dispatcher)] {
        for path in [
            format!("/api/deliveries/{id}"),
            format!("/api/deliveries/{id}/status"),
        ] {
            let res = call(&app, Method::GET, &path, Some(token), None).await;
            assert_eq!(res.status(), 200, "{who} on {path}");
        }
        // The stream of a completed delivery answers at once.
        let res = call(
            &app,
            Method::GET,
            &format!("/api/deliveries/{id}/events"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(res.status(), 200, "{who} tracks it");
    }
    // Cancelling a completed delivery is a conflict for its owner: the
    // route was reached, not hidden.
    let res = call(
        &app,
        Method::DELETE,
        &format!("/api/deliveryrequests/{id}"),
        Some(&b),
        None,
    )
    .await;
    assert_eq!(res.status(), 409);

    let month = chrono::Utc::now().format("year=%Y&month=%-m").to_string();
    let res = call(
        &app,
        Method::GET,
        &format!("/api/dronedeliveries/utilization?ownerId=owner-b&{month}"),
        Some(&a),
        None,
    )
    .await;
    assert_eq!(res.status(), 403, "A reads B's utilisation");
    let res = call(
        &app,
        Method::GET,
        &format!("/api/deliveries/summary?ownerId=owner-b&{month}"),
        Some(&b),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["completed"], 1);

    let res = call(
        &app,
        Method::PUT,
        "/api/packages/p-auth",
        Some(&a),
        Some(&json!({"size": "Small", "weight": 1, "tag": "t"})),
    )
    .await;
    assert_eq!(res.status(), 403, "packages need PackageWriter");
    let res = call(
        &app,
        Method::PUT,
        "/api/packages/p-auth",
        Some(&writer),
        Some(&json!({"size": "Small", "weight": 1, "tag": "t"})),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        call(&app, Method::GET, "/api/packages/p-auth", Some(&a), None)
            .await
            .status(),
        200
    );

    // A flight in progress: its delivery id is shown to the dispatcher only.
    let res = call(
        &app,
        Method::POST,
        "/api/deliveryrequests",
        Some(&b),
        Some(&request_for("owner-b")),
    )
    .await;
    assert_eq!(res.status(), 202);
    let carried = |list: Value| {
        list["drones"]
            .as_array()
            .map(|d| d.iter().filter(|d| d["deliveryId"].is_string()).count())
            .unwrap_or(0)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen_by_dispatcher = carried(
            call(&app, Method::GET, "/api/drones", Some(&dispatcher), None)
                .await
                .json()
                .await
                .unwrap(),
        );
        let seen_by_a = carried(
            call(&app, Method::GET, "/api/drones", Some(&a), None)
                .await
                .json()
                .await
                .unwrap(),
        );
        assert_eq!(seen_by_a, 0, "an owner sees no assignments");
        if seen_by_dispatcher > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no drone ever carried it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

/// `GET /api/me` tells a client (the console) what the engine makes of its
/// token, with the engine's claims: `401` without one when authentication
/// is on, the owner and roles with one, and "none" when it is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_learns_what_the_engine_makes_of_its_token() {
    let key = es256("k");
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn_secured(&issuer).await;
    assert_refused(call(&app, Method::GET, "/api/me", None, None).await, false).await;
    let owner = sign(
        &key,
        &issuer.claims("owner-a", &["Unknown", "PackageWriter"]),
    );
    let res = call(&app, Method::GET, "/api/me", Some(&owner), None).await;
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(
        me,
        json!({"authentication": "jwt", "owner": "owner-a", "roles": ["PackageWriter"],
            "readsEveryDelivery": false, "writesPackages": true, "operates": false})
    );
    let operator = sign(&key, &issuer.claims("ops", &["Operator"]));
    let me: Value = call(&app, Method::GET, "/api/me", Some(&operator), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["roles"], json!(["Operator"]));
    assert_eq!(me["readsEveryDelivery"], true);
    assert_eq!(me["operates"], true);
    app.stop().await;

    let open = spawn_app_with(|_| {}).await;
    let me: Value = call(&open, Method::GET, "/api/me", None, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["authentication"], "none");
    assert_eq!(me["owner"], Value::Null);
    open.stop().await;
}

/// An `Idempotency-Key` belongs to its owner: owner B using the key owner A
/// used gets its own delivery (not A's answer, not a 422 that would tell B
/// the key was taken), and each owner's repeat replays its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_per_owner() {
    let key = es256("k");
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn_secured(&issuer).await;
    let post = |token: String, owner: &'static str| {
        let app = &app;
        async move {
            let res = app
                .client
                .post(app.url("/api/deliveryrequests"))
                .bearer_auth(token)
                .header("idempotency-key", "order-1")
                .json(&request_for(owner))
                .send()
                .await
                .unwrap();
            let replayed = res.headers().contains_key("idempotent-replayed");
            (res.status(), replayed, res.json::<Value>().await.unwrap())
        }
    };
    let a = sign(&key, &issuer.claims("owner-a", &[]));
    let b = sign(&key, &issuer.claims("owner-b", &[]));
    let (status, replayed, first_a) = post(a.clone(), "owner-a").await;
    assert_eq!((status.as_u16(), replayed), (202, false), "{first_a}");
    let (status, replayed, first_b) = post(b.clone(), "owner-b").await;
    assert_eq!((status.as_u16(), replayed), (202, false), "{first_b}");
    assert_ne!(first_a["deliveryId"], first_b["deliveryId"]);
    let (status, replayed, again_a) = post(a, "owner-a").await;
    assert_eq!((status.as_u16(), replayed), (202, true));
    assert_eq!(again_a, first_a);
    let (status, replayed, again_b) = post(b, "owner-b").await;
    assert_eq!((status.as_u16(), replayed), (202, true));
    assert_eq!(again_b, first_b);
    app.stop().await;
}

/// `/admin` with authentication on and no static token: an `Operator`
/// token restarts a supervisor; a valid token without the role is `403`;
/// none is `401`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_use_the_admin_api_and_owners_do_not() {
    let key = es256("k");
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn_secured(&issuer).await;
    let path = "/admin/supervisors/fleet/restart";
    assert_refused(call(&app, Method::POST, path, None, None).await, false).await;
    let owner = sign(&key, &issuer.claims("owner-a", &["Dispatcher"]));
    assert_eq!(
        call(&app, Method::POST, path, Some(&owner), None)
            .await
            .status(),
        403
    );
    let operator = sign(&key, &issuer.claims("ops", &["Operator"]));
    let res = call(&app, Method::POST, path, Some(&operator), None).await;
    assert_eq!(res.status(), 200);
    let info: Value = res.json().await.unwrap();
    assert!(info["restarts"].as_u64().unwrap_or(0) >= 1, "{info}");
    app.stop().await;
}

/// Every write route is throttled, per token owner: owner A over its quota
/// gets `429` on each of them, while owner B, calling from the same
/// address, still has its own quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_throttled_per_token_owner() {
    let key = es256("k");
    let issuer = Issuer::start(&[&key]).await;
    let url = issuer.url.clone();
    let app = spawn_app_with(move |a| {
        a.auth_mode = AuthMode::Jwt;
        a.auth_issuer = Some(url);
        a.auth_audience = Some(AUDIENCE.into());
        a.rate_limit_per_second = 1;
        a.rate_limit_burst = 2;
    })
    .await;
    let a = sign(&key, &issuer.claims("owner-a", &["PackageWriter"]));
    let b = sign(&key, &issuer.claims("owner-b", &["PackageWriter"]));
    let package = json!({"size": "Small", "weight": 1, "tag": "t"});
    for _ in 0..2 {
        let res = call(
            &app,
            Method::PUT,
            "/api/packages/p-a",
            Some(&a),
            Some(&package),
        )
        .await;
        assert!(res.status().is_success(), "{}", res.status());
    }
    let confirmation = confirmation();
    let writes: [(Method, &str, Value); 8] = [
        (
            Method::POST,
            "/api/deliveryrequests",
            request_for("owner-a"),
        ),
        (
            Method::PATCH,
            "/api/deliveryrequests/x",
            json!({"deadline": "x"}),
        ),
        (Method::DELETE, "/api/deliveryrequests/x", Value::Null),
        (Method::PUT, "/api/packages/p-a", package.clone()),
        (Method::PATCH, "/api/packages/p-a", package.clone()),
        (Method::PUT, "/api/packages", package.clone()),
        (
            Method::POST,
            "/api/deliveries/x/confirmations",
            confirmation,
        ),
        (
            Method::POST,
            "/api/deliveries/x/notifymerequests",
            json!({"sms": "555"}),
        ),
    ];
    for (method, path, body) in &writes {
        let body = (!body.is_null()).then_some(body);
        let res = call(&app, method.clone(), path, Some(&a), body).await;
        assert_eq!(res.status(), 429, "{method} {path}");
        assert!(res.headers().contains_key("retry-after"));
    }
    // Reads are not throttled.
    assert_eq!(
        call(&app, Method::GET, "/api/packages/p-a", Some(&a), None)
            .await
            .status(),
        200
    );
    let res = call(
        &app,
        Method::POST,
        "/api/deliveryrequests",
        Some(&b),
        Some(&request_for("owner-b")),
    )
    .await;
    assert_eq!(
        res.status(),
        202,
        "another owner from the same address has its own quota"
    );
    app.stop().await;
}
