use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn put_creates_then_updates_and_get_reads() {
    let app = spawn_app().await;
    let body = json!({"size": "Medium", "weight": 100, "tag": "sometag"});
    let res = app
        .send_json(Method::PUT, "/api/packages/somePackageId", &body)
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/api/packages/somePackageId")
    );
    let created: Value = res.json().await.expect("a JSON package");
    assert_eq!(
        created,
        json!({"id": "somePackageId", "size": "Medium", "weight": 100.0, "tag": "sometag"})
    );

    let res = app
        .send_json(
            Method::PUT,
            "/api/packages/somePackageId",
            &json!({"size": "large", "weight": 3}),
        )
        .await;
    assert_eq!(res.status(), 204);

    let got: Value = app
        .get("/api/packages/somePackageId")
        .await
        .json()
        .await
        .expect("a JSON package");
    assert_eq!(got["size"], "Large");
    assert_eq!(got["weight"], 3.0);
    app.stop().await;
}

#[tokio::test]
async fn put_without_body_or_id_works_like_the_original() {
    let app = spawn_app().await;
    let res = app
        .client
        .put(app.url("/api/packages/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = app
        .client
        .put(app.url("/api/packages/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);

    let res = app
        .send_json(Method::PUT, "/api/packages", &json!({"size": "Small"}))
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.expect("a JSON package");
    let id = created["id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 24, "an ObjectId-like id: {created}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(app.get(&format!("/api/packages/{id}")).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn patch_updates_only_given_fields_and_404s_unknown() {
    let app = spawn_app().await;
    let body = json!({"size": "Small", "weight": 1, "tag": "a"});
    assert_eq!(
        app.send_json(Method::PUT, "/api/packages/p1", &body)
            .await
            .status(),
        201
    );
    let res = app
        .send_json(Method::PATCH, "/api/packages/p1", &json!({"tag": "b"}))
        .await;
    assert_eq!(res.status(), 204);
    let got: Value = app
        .get("/api/packages/p1")
        .await
        .json()
        .await
        .expect("a JSON package");
    assert_eq!(
        got,
        json!({"id": "p1", "size": "Small", "weight": 1.0, "tag": "b"})
    );

    let res = app
        .send_json(Method::PATCH, "/api/packages/nope", &json!({"tag": "b"}))
        .await;
    assert_problem(res, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_packages_are_400_and_unknown_are_404() {
    let app = spawn_app().await;
    let res = app
        .send_json(Method::PUT, "/api/packages/p2", &json!({"size": "Huge"}))
        .await;
    let problem = assert_problem(res, 400).await;
    assert!(problem.to_string().contains("size"), "{problem}");
    let res = app
        .send_json(Method::PUT, "/api/packages/p2", &json!({"weight": -3}))
        .await;
    assert_problem(res, 400).await;
    let res = app.get("/api/packages/unknown").await;
    assert_problem(res, 404).await;
    app.stop().await;
}
