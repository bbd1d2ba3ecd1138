//! The operator API under `/admin`: bearer-token guard, supervision tree,
//! operator restarts, dead letters, and the `dronedelivery admin` CLI.

use std::time::Duration;

use dronedelivery_actors::ports::{Operation, QueueMessage};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, header, ri_example, spawn_app, spawn_app_with, stage, TestApp,
};

const LONG: Duration = Duration::from_secs(30);
const TOKEN: &str = "s3cret";

async fn spawn_admin_app() -> TestApp {
    spawn_app_with(|a| {
        a.admin_token = Some(TOKEN.parse().unwrap());
    })
    .await
}

/// Sends an admin request, with `Authorization: Bearer <token>` when given.
async fn admin(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn json_of(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status, "{}", res.url());
    res.json().await.unwrap()
}

#[tokio::test]
async fn without_a_token_the_admin_api_does_not_exist() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/admin/supervisors"),
        // Not 405: the path does not exist at all.
        (Method::DELETE, "/admin/supervisors"),
        (Method::POST, "/admin/supervisors/fleet/restart"),
        (Method::GET, "/admin/deadletters"),
        (Method::POST, "/admin/deadletters/x/replay"),
        (Method::GET, "/admin/whatever"),
    ] {
        for token in [None, Some(TOKEN)] {
            let res = admin(&app, method.clone(), path, token).await;
            assert!(res.headers().get("allow").is_none(), "{method} {path}");
            let body = assert_problem(res, 404).await;
            assert_eq!(body["detail"], format!("no resource at {path}"));
        }
    }
    // An unknown non-admin path answers the same.
    let body = assert_problem(app.get("/nothing").await, 404).await;
    assert_eq!(body["detail"], "no resource at /nothing");
    app.stop().await;
}

#[tokio::test]
async fn the_admin_api_needs_the_bearer_token() {
    let app = spawn_admin_app().await;
    // No credentials: 401 with a Bearer challenge, whatever the path or method.
    for (method, path) in [
        (Method::GET, "/admin/supervisors"),
        (Method::DELETE, "/admin/supervisors"),
        (Method::POST, "/admin/deadletters/x/replay"),
        (Method::GET, "/admin/unknown/path"),
    ] {
        let res = admin(&app, method.clone(), path, None).await;
        let challenge = header(&res, "www-authenticate");
        assert!(
            challenge.starts_with("Bearer"),
            "{method} {path}: {challenge:?}"
        );
        assert!(res.headers().get("allow").is_none());
        assert_problem(res, 401).await;
    }
    // Not a bearer token.
    let res = app
        .client
        .get(app.url("/admin/supervisors"))
        .basic_auth("admin", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
    // Wrong token: 403, no challenge.
    for wrong in ["s3cre", "s3cret!", "S3CRET", "x"] {
        let res = admin(&app, Method::GET, "/admin/supervisors", Some(wrong)).await;
        assert!(res.headers().get("www-authenticate").is_none());
        assert_problem(res, 403).await;
    }
    // Authenticated: unknown paths are 404, wrong methods 405 with Allow.
    let res = admin(&app, Method::GET, "/admin/unknown/path", Some(TOKEN)).await;
    assert_problem(res, 404).await;
    let res = admin(&app, Method::DELETE, "/admin/supervisors", Some(TOKEN)).await;
    let allow = header(&res, "allow");
    assert!(allow.contains("GET"), "{allow:?}");
    assert_problem(res, 405).await;
    // Static segments are case-insensitive, with or without the version prefix.
    let res = admin(&app, Method::GET, "/v0.1.0/Admin/Supervisors", Some(TOKEN)).await;
    assert_eq!(res.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn lists_the_supervision_tree() {
    let app = spawn_admin_app().await;
    let res = admin(&app, Method::GET, "/admin/supervisors", Some(TOKEN)).await;
    let ct = header(&res, "content-type");
    assert!(ct.starts_with("application/json"), "{ct}");
    let body = json_of(res, 200).await;
    let supervisors = body["supervisors"]
        .as_array()
        .unwrap_or_else(|| panic!("no supervisors in {body}"));
    let names: Vec<&str> = supervisors
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["root", "fleet", "deliveries", "consumers", "workflow"]
    );
    for s in supervisors {
        assert!(
            matches!(
                s["strategy"].as_str(),
                Some("one_for_one" | "one_for_all" | "rest_for_one")
            ),
            "{s}"
        );
        assert_eq!(s["status"], "running", "{s}");
        assert!(s["children"].is_u64(), "{s}");
        assert!(s["restarts"].is_u64(), "{s}");
    }
    let fleet = &supervisors[1];
    assert_eq!(
        fleet["children"], 10,
        "the fleet supervises the 10 drones: {fleet}"
    );
    assert_eq!(supervisors[3]["strategy"], "one_for_all");
    app.stop().await;
}

#[tokio::test]
async fn a_single_engine_holds_every_partition() {
    let app = spawn_admin_app().await;
    let body = json_of(
        admin(&app, Method::GET, "/admin/cluster", Some(TOKEN)).await,
        200,
    )
    .await;
    let me = body["engineId"].as_str().expect("engineId").to_owned();
    assert_eq!(body["engines"], json!([me]), "{body}");
    let leases = body["leases"].as_array().expect("leases");
    assert_eq!(leases.len(), 16, "the default partition count: {body}");
    let mut epochs: Vec<u64> = Vec::new();
    for lease in leases {
        assert_eq!(lease["owner"], me.as_str(), "{lease}");
        assert_eq!(lease["live"], true, "{lease}");
        epochs.push(lease["epoch"].as_u64().expect("epoch"));
    }
    epochs.sort_unstable();
    epochs.dedup();
    assert_eq!(epochs.len(), 16, "every grant has its own epoch");
    assert!(body["lastChange"].is_string(), "{body}");
    // Without the token, the cluster is as hidden as the rest of /admin.
    let res = admin(&app, Method::GET, "/admin/cluster", None).await;
    assert_eq!(res.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn restarting_the_fleet_keeps_deliveries_flowing() {
    let app = spawn_admin_app().await;
    let info = json_of(
        admin(
            &app,
            Method::POST,
            "/admin/supervisors/fleet/restart",
            Some(TOKEN),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(info["name"], "fleet");
    assert!(info["restarts"].as_u64().unwrap_or(0) >= 1, "{info}");
    assert_eq!(info["status"], "running", "{info}");

    let id = app.post_delivery(&ri_example()).await;
    app.wait_for_stage(&id, stage::COMPLETED, LONG).await;

    let res = admin(
        &app,
        Method::POST,
        "/admin/supervisors/nope/restart",
        Some(TOKEN),
    )
    .await;
    let body = assert_problem(res, 404).await;
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("nope")),
        "{body}"
    );
    app.stop().await;
}

/// The dead letters page, asserted 200.
async fn dead_letters(app: &TestApp, query: &str) -> Value {
    json_of(
        admin(
            app,
            Method::GET,
            &format!("/admin/deadletters{query}"),
            Some(TOKEN),
        )
        .await,
        200,
    )
    .await
}

/// Polls the dead letters until one with `id` is listed; returns it.
async fn wait_for_dead_letter(app: &TestApp, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let page = dead_letters(app, "").await;
        let found = page["items"]
            .as_array()
            .and_then(|items| items.iter().find(|l| l["id"] == id).cloned());
        if let Some(letter) = found {
            return letter;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never dead-lettered: {page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed() {
    let app = spawn_admin_app().await;
    let mut poison = QueueMessage::new(Operation::Delivery, &json!({"deliveryId": "p1"}), None);
    poison.operation = "explode".into();
    app.engine.submit(poison.clone()).await.unwrap();

    let letter = wait_for_dead_letter(&app, &poison.message_id).await;
    assert!(
        letter["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown operation")),
        "{letter}"
    );
    assert_eq!(letter["message"]["operation"], "explode");
    let page = dead_letters(&app, "?offset=0&limit=5").await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["offset"], 0);
    assert_eq!(page["limit"], 5);
    let page = dead_letters(&app, "?offset=1").await;
    assert_eq!(page["items"], json!([]), "{page}");
    assert_eq!(page["total"], 1);
    assert_eq!(page["limit"], 20);

    // Replayed: queued again under the same id, and since the operation is
    // still unknown, dead-lettered again under that id.
    let res = admin(
        &app,
        Method::POST,
        &format!("/admin/deadletters/{}/replay", poison.message_id),
        Some(TOKEN),
    )
    .await;
    let body = json_of(res, 202).await;
    assert_eq!(
        body,
        json!({"replayed": poison.message_id, "operation": "explode"})
    );
    let again = wait_for_dead_letter(&app, &poison.message_id).await;
    assert!(
        again["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown operation")),
        "{again}"
    );

    let res = admin(
        &app,
        Method::POST,
        "/admin/deadletters/no-such-letter/replay",
        Some(TOKEN),
    )
    .await;
    assert_problem(res, 404).await;
    for bad in ["?limit=0", "?limit=101", "?limit=abc", "?offset=-1"] {
        let res = admin(
            &app,
            Method::GET,
            &format!("/admin/deadletters{bad}"),
            Some(TOKEN),
        )
        .await;
        let body = assert_problem(res, 400).await;
        let field = if bad.contains("offset") {
            "offset"
        } else {
            "limit"
        };
        assert_eq!(body["errors"][0]["field"], field, "{bad}: {body}");
    }
    app.stop().await;
}

/// Runs `dronedelivery admin --url <app> <args…>`; exit status and stdout.
async fn cli(app: &TestApp, args: &[&str]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dronedelivery"));
    command
        .arg("admin")
        .arg("--url")
        .arg(&app.address)
        .args(args)
        .env_remove("DD_ADMIN_TOKEN")
        .env_remove("DD_ADMIN_URL");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("could not run the binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_calls_the_admin_api() {
    let app = spawn_admin_app().await;
    let (code, stdout) = cli(&app, &["--token", TOKEN, "supervisors"]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("fleet"), "{stdout}");
    let (code, stdout) = cli(&app, &["--token", TOKEN, "cluster"]).await;
    assert_eq!(code, Some(0), "{stdout}");
    let view: Value = serde_json::from_str(&stdout).expect("the cluster as JSON");
    assert_eq!(
        view["leases"].as_array().map(Vec::len),
        Some(16),
        "{stdout}"
    );
    let (code, stdout) = cli(&app, &["--token", TOKEN, "deadletters", "--limit", "5"]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("\"total\""), "{stdout}");
    let (code, _) = cli(&app, &["--token", "wrong", "supervisors"]).await;
    assert_ne!(code, Some(0));
    let (code, _) = cli(&app, &["supervisors"]).await;
    assert_ne!(code, Some(0));
    app.stop().await;
}
