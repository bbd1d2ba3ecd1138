//! `GET /openapi.json` held to the running application: every documented
//! operation is routed, every method left undocumented on a documented path
//! is refused by the router, and real responses have the documented status,
//! media type and schema.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Datelike;
use dronedelivery_actors::ports::{Operation, QueueMessage};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::helpers::{ri_example, spawn_app_with, stage, TestApp};

const TOKEN: &str = "openapi-s3cret";
const LONG: Duration = Duration::from_secs(30);

/// Methods probed on every documented path.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn spawn() -> TestApp {
    spawn_app_with(|a| {
        a.admin_token = Some(TOKEN.parse().unwrap_or_else(|e| panic!("{e:?}")));
    })
    .await
}

async fn document(app: &TestApp) -> Value {
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap_or_else(|e| panic!("{e}"))
}

/// Documented methods per path.
fn operations(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(path, item)| {
            let methods = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (*m).to_owned())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// A template with each `{param}` replaced by a placeholder value.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg.strip_prefix('{') {
            Some(name) => format!("openapi-{}", name.trim_end_matches('}')),
            None => seg.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Sends `method path`, authenticated on `/admin`, with `{}` as the JSON
/// body of methods that take one.
async fn send(app: &TestApp, method: &str, path: &str) -> reqwest::Response {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut req = app.client.request(method.clone(), app.url(path));
    if path.starts_with("/admin") {
        req = req.bearer_auth(TOKEN);
    }
    if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        req = req.json(&json!({}));
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The router's own answers: 405 (method not allowed) or the fallback's
/// 404 problem, whose detail is `no resource at <path>`. A handler's 404
/// names what it did not find (`delivery … not found`).
async fn router_fallback(res: reqwest::Response) -> Option<String> {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let fallback = status == 405
        || (status == 404
            && body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("no resource at ")));
    fallback.then(|| format!("{status} {body}"))
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = spawn().await;
    let doc = document(&app).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 20, "{ops:?}");
    for (template, methods) in &ops {
        let path = concrete(template);
        for method in methods {
            let res = send(&app, method, &path).await;
            if let Some(answer) = router_fallback(res).await {
                panic!("{method} {template} is documented but not routed: {answer}");
            }
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn undocumented_methods_are_not_routed() {
    let app = spawn().await;
    let doc = document(&app).await;
    for (template, methods) in &operations(&doc) {
        let path = concrete(template);
        for method in METHODS.iter().filter(|m| !methods.contains(**m)) {
            let res = send(&app, method, &path).await;
            let status = res.status().as_u16();
            let body = res.text().await.unwrap_or_default();
            assert_eq!(
                status, 405,
                "{method} {template} is routed but not documented: {body}"
            );
        }
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------
// A small JSON Schema check, for the subset the document uses: `$ref`,
// `allOf` (flattened objects), `oneOf`, `type` (with `null`), `enum`,
// `properties`/`required`, `items`. Objects are checked strictly: a member
// the schema does not list is an error, so an undocumented field fails.
// ---------------------------------------------------------------------------

fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        schema = &doc["components"]["schemas"][name];
        assert!(!schema.is_null(), "unresolved {r}");
    }
    schema
}

fn type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

fn check_object(
    doc: &Value,
    properties: &Map<String, Value>,
    required: &[Value],
    value: &Value,
    at: &str,
) -> Result<(), String> {
    let Some(obj) = value.as_object() else {
        return Err(format!("{at}: expected an object, got {value}"));
    };
    for name in required.iter().filter_map(Value::as_str) {
        if !obj.contains_key(name) {
            return Err(format!("{at}: required member {name} missing from {value}"));
        }
    }
    for (name, member) in obj {
        let Some(schema) = properties.get(name) else {
            return Err(format!("{at}: member {name} is not documented"));
        };
        check(doc, schema, member, &format!("{at}.{name}"))?;
    }
    Ok(())
}

fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(parts) = schema["allOf"].as_array() {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for part in parts {
            let part = resolve(doc, part);
            properties.extend(part["properties"].as_object().cloned().unwrap_or_default());
            required.extend(part["required"].as_array().cloned().unwrap_or_default());
        }
        return check_object(doc, &properties, &required, value, at);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let matching = options
            .iter()
            .filter(|o| check(doc, o, value, at).is_ok())
            .count();
        return if matching == 1 {
            Ok(())
        } else {
            Err(format!("{at}: {value} matches {matching} oneOf options"))
        };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        return Err(format!("{at}: {value} is not of type {types:?}"));
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(properties) = schema["properties"].as_object() {
        if !value.is_null() {
            let required = schema["required"].as_array().cloned().unwrap_or_default();
            check_object(doc, properties, &required, value, at)?;
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, item) in values.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The media type without parameters, lower case.
fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Checks a response against the document's `method template` operation:
/// its status is documented, its media type is the documented one and its
/// JSON body matches the schema. Returns the body as text.
async fn conforms(doc: &Value, method: &str, template: &str, res: reqwest::Response) -> String {
    let status = res.status().as_u16().to_string();
    let media_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(essence);
    let text = res.text().await.unwrap_or_default();
    let what = format!("{method} {template} {status}");
    let mut response = &doc["paths"][template][method]["responses"][&status];
    if let Some(r) = response["$ref"].as_str() {
        response = &doc["components"]["responses"][r.trim_start_matches("#/components/responses/")];
    }
    assert!(
        response.is_object(),
        "{what}: status not documented: {text}"
    );
    let Some(content) = response["content"].as_object() else {
        assert!(
            text.is_empty(),
            "{what}: documented without a body, got {text}"
        );
        return text;
    };
    let media_type = media_type.unwrap_or_else(|| panic!("{what}: no Content-Type"));
    let (_, documented) = content
        .iter()
        .find(|(ct, _)| essence(ct) == media_type)
        .unwrap_or_else(|| panic!("{what}: {media_type} is not documented"));
    if media_type.ends_with("json") {
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
        if let Err(e) = check(doc, &documented["schema"], &body, "$") {
            panic!("{what}: {e}");
        }
    }
    text
}

/// `(event, data)` of each event of a server-sent event stream.
fn sse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = Some(e.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.trim_start().to_owned());
                }
            }
            Some((event?, data.join("\n")))
        })
        .collect()
}

#[tokio::test]
async fn responses_match_the_documented_schemas() {
    let app = spawn().await;
    let doc = document(&app).await;
    let admin = |method: Method, path: &str| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(TOKEN)
            .send()
    };

    // Ingestion, then the delivery's documents once it has completed.
    let res = app
        .send_json(Method::POST, "/api/deliveryrequests", &ri_example())
        .await;
    let echo = conforms(&doc, "post", "/api/deliveryrequests", res).await;
    let echo: Value = serde_json::from_str(&echo).unwrap_or_default();
    let id = echo["deliveryId"].as_str().unwrap_or_default().to_owned();
    app.wait_for_stage(&id, stage::COMPLETED, LONG).await;
    for template in [
        "/api/deliveries/{id}",
        "/api/deliveries/public/{id}",
        "/api/deliveries/{id}/owner",
        "/api/deliveries/{id}/status",
    ] {
        let res = app.get(&template.replace("{id}", &id)).await;
        assert_eq!(res.status(), 200, "{template}");
        conforms(&doc, "get", template, res).await;
    }

    // The tracking stream of a completed delivery: its whole history, then
    // the end of the stream.
    let res = app.get(&format!("/api/deliveries/{id}/events")).await;
    assert_eq!(res.status(), 200);
    let text = conforms(&doc, "get", "/api/deliveries/{id}/events", res).await;
    let events = sse_events(&text);
    assert!(events.iter().any(|(e, _)| e == "stage"), "{text}");
    for (event, data) in &events {
        let schema = match event.as_str() {
            "stage" => json!({"$ref": "#/components/schemas/StageEvent"}),
            "position" => json!({"$ref": "#/components/schemas/PositionEvent"}),
            other => panic!("undocumented event {other}: {text}"),
        };
        let data: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
        if let Err(e) = check(&doc, &schema, &data, event) {
            panic!("{e}");
        }
    }

    // The recipient.
    let res = app
        .send_json(
            Method::POST,
            &format!("/api/deliveries/{id}/notifymerequests"),
            &json!({"emailAddress": "someone@example.com"}),
        )
        .await;
    assert_eq!(res.status(), 204);
    conforms(&doc, "post", "/api/deliveries/{id}/notifymerequests", res).await;
    let res = app
        .send_json(
            Method::POST,
            &format!("/api/deliveries/{id}/confirmations"),
            &json!({
                "dateTime": {"dateTimeValue": "2019-05-08T20:30:00Z"},
                "geoCoordinates": {"latitude": 47.61, "longitude": -122.33},
                "confirmationType": 1,
                "confirmationBlob": "cGljdHVyZQ=="
            }),
        )
        .await;
    assert_eq!(res.status(), 200);
    conforms(&doc, "post", "/api/deliveries/{id}/confirmations", res).await;

    // Utilisation of the month the delivery ended in (now, UTC; retried in
    // case the history entry is still being written).
    let now = chrono::Utc::now();
    let query = format!(
        "/api/dronedeliveries/utilization?ownerId=myowner&year={}&month={}",
        now.year(),
        now.month()
    );
    let deadline = tokio::time::Instant::now() + LONG;
    let res = loop {
        let res = app.get(&query).await;
        if res.status() == 200 || tokio::time::Instant::now() > deadline {
            break res;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(res.status(), 200);
    conforms(&doc, "get", "/api/dronedeliveries/utilization", res).await;

    // Packages: create, read, replace, patch.
    let res = app
        .send_json(
            Method::PUT,
            "/api/packages",
            &json!({"size": "small", "weight": "2"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created = conforms(&doc, "put", "/api/packages", res).await;
    let package_id = serde_json::from_str::<Value>(&created).unwrap_or_default()["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let package = format!("/api/packages/{package_id}");
    let res = app.get(&package).await;
    assert_eq!(res.status(), 200);
    conforms(&doc, "get", "/api/packages/{id}", res).await;
    let res = app
        .send_json(Method::PUT, &package, &json!({"tag": "t"}))
        .await;
    assert_eq!(res.status(), 204);
    conforms(&doc, "put", "/api/packages/{id}", res).await;
    let res = app
        .send_json(Method::PATCH, &package, &json!({"weight": 3}))
        .await;
    assert_eq!(res.status(), 204);
    conforms(&doc, "patch", "/api/packages/{id}", res).await;

    // Reschedule and cancel of a delivery that has ended: refused, as
    // documented.
    let path = format!("/api/deliveryrequests/{id}");
    let res = app
        .send_json(Method::PATCH, &path, &json!({"deadline": "tomorrow"}))
        .await;
    assert_eq!(res.status(), 409);
    conforms(&doc, "patch", "/api/deliveryrequests/{id}", res).await;
    let res = app.client.delete(app.url(&path)).send().await;
    let res = res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 409);
    conforms(&doc, "delete", "/api/deliveryrequests/{id}", res).await;

    // Problems.
    let res = app
        .send_json(
            Method::POST,
            "/api/deliveryrequests",
            &json!({"ownerId": 1}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let problem = conforms(&doc, "post", "/api/deliveryrequests", res).await;
    assert!(problem.contains("\"errors\""), "{problem}");
    let res = app.get("/api/deliveries/no-such-delivery").await;
    assert_eq!(res.status(), 404);
    conforms(&doc, "get", "/api/deliveries/{id}", res).await;

    // Probes, this document, the drone list and the console's pages.
    for template in [
        "/healthz",
        "/healthz/dependencies",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/api/drones",
        "/console",
        "/console/fleet",
        "/console/ops",
    ] {
        let res = app.get(template).await;
        assert_eq!(res.status(), 200, "{template}");
        conforms(&doc, "get", template, res).await;
    }

    // The admin API, with a dead letter to list and replay.
    let res = admin(Method::GET, "/admin/supervisors").await;
    let res = res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    conforms(&doc, "get", "/admin/supervisors", res).await;
    let mut poison = QueueMessage::new(Operation::Delivery, &json!({"deliveryId": "p"}), None);
    poison.operation = "explode".into();
    app.engine
        .submit(poison.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let res = admin(Method::GET, "/admin/deadletters").await;
        let res = res.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 200);
        let page = conforms(&doc, "get", "/admin/deadletters", res).await;
        if page.contains(&poison.message_id) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replay = format!("/admin/deadletters/{}/replay", poison.message_id);
    let res = admin(Method::POST, &replay).await;
    let res = res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 202);
    conforms(&doc, "post", "/admin/deadletters/{id}/replay", res).await;
    let res = app.get("/admin/supervisors").await;
    assert_eq!(res.status(), 401);
    conforms(&doc, "get", "/admin/supervisors", res).await;
    app.stop().await;
}

#[test]
fn the_schema_check_is_strict() {
    let doc = json!({"components": {"schemas": {
        "A": {"type": "object", "properties": {"x": {"type": "integer"},
              "y": {"type": ["string", "null"]}}, "required": ["x"]},
        "B": {"allOf": [{"$ref": "#/components/schemas/A"},
              {"type": "object", "properties": {"z": {"enum": [1, 2]}}, "required": ["z"]}]}
    }}});
    let a = json!({"$ref": "#/components/schemas/A"});
    let b = json!({"$ref": "#/components/schemas/B"});
    assert!(check(&doc, &a, &json!({"x": 1, "y": null}), "$").is_ok());
    assert!(check(&doc, &a, &json!({"x": 1, "extra": 0}), "$").is_err());
    assert!(check(&doc, &a, &json!({"y": "s"}), "$").is_err());
    assert!(check(&doc, &a, &json!({"x": "1"}), "$").is_err());
    assert!(check(&doc, &b, &json!({"x": 1, "z": 2}), "$").is_ok());
    assert!(check(&doc, &b, &json!({"x": 1, "z": 3}), "$").is_err());
    assert!(check(&doc, &b, &json!({"x": 1}), "$").is_err());
}
