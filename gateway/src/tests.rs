//! Tests of the assembled application's OpenAPI document ([`crate::document`]):
//! every registered route is documented and nothing else, every operation
//! has its statuses, schemas keep the serde names.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::PROBLEM_JSON;
use crate::middleware::Templates;
use crate::openapi::{BEARER_AUTH, OPENAPI_PATH};

/// The document as `/openapi.json` serves it.
fn json() -> Value {
    let json = crate::document().to_json().unwrap_or_default();
    serde_json::from_str(&json).unwrap_or(Value::Null)
}

#[test]
fn routes_do_not_conflict() {
    // axum panics on overlapping or malformed routes when they are added.
    let _ = super::routes();
    let _ = super::worker_routes();
}

/// `/api/deliveries/{id}` → `/api/deliveries/{}`: parameter names do not
/// matter when comparing templates.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn documented_paths(doc: &Value) -> BTreeSet<String> {
    doc["paths"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every `(method, path, operation)` of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((method.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// Resolves a response that may be a `$ref` to `#/components/responses/…`.
fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/responses/"))
    {
        Some(name) => &doc["components"]["responses"][name],
        None => response,
    }
}

#[test]
fn is_openapi_3_1_with_info() {
    let doc = json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Drone delivery engine");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["info"]["description"].is_string());
    assert_eq!(
        doc["components"]["securitySchemes"][BEARER_AUTH]["scheme"],
        "bearer"
    );
}

/// The normaliser's templates are the documented paths under `/api`,
/// `/admin` and `/console`; the only other documented paths are the
/// probes and this document, which match exactly.
#[test]
fn documents_every_normalised_template_and_the_probes() {
    let doc = json();
    let documented: BTreeSet<String> = documented_paths(&doc).iter().map(|p| shape(p)).collect();
    let paths = documented_paths(&doc);
    let templates = Templates::new(paths.iter().map(String::as_str)).paths();
    assert!(
        templates.contains(&"/api/deliveries/{}/status".to_owned()),
        "{templates:?}"
    );
    let mut expected: BTreeSet<String> = templates.into_iter().collect();
    expected.extend(
        [
            "/healthz",
            "/healthz/dependencies",
            "/readyz",
            "/metrics",
            OPENAPI_PATH,
        ]
        .map(str::to_owned),
    );
    assert_eq!(documented, expected);
}

/// The gateway's sources (test code excluded), comments removed.
fn sources() -> Vec<(std::path::PathBuf, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let entries = std::fs::read_dir(dir).map(|d| d.flatten().collect::<Vec<_>>());
    let mut sources = Vec::new();
    for entry in entries.unwrap_or_default() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        sources.push((path, code));
    }
    sources
}

/// Every route is registered with `routes!(handler, …)`, which takes the
/// route's method and path from the handler's `#[utoipa::path]` and adds
/// that operation to the document: registered means documented. This
/// holds the sources to it: the only routes added another way
/// (`.route(…)`) are the admin catch-alls, which only answer 404 after
/// authentication and are not operations; nothing is nested or added as
/// a bare service. And the other way round: the document has exactly
/// one operation per handler registered, so nothing is documented that
/// is not routed.
#[test]
fn documents_every_routed_path() {
    let mut plain_routes = BTreeSet::new();
    let mut handlers = Vec::new();
    for (path, code) in sources() {
        for call in [".route_service(", ".nest(", ".nest_service("] {
            assert!(
                !code.contains(call),
                "{}: {call}…) adds routes the document does not describe",
                path.display()
            );
        }
        for call in code.split(".route(").skip(1) {
            let literal = call
                .trim_start()
                .strip_prefix('"')
                .and_then(|rest| rest.split_once('"'))
                .map(|(lit, _)| lit.to_owned());
            match literal {
                Some(lit) => {
                    plain_routes.insert(lit);
                }
                None => panic!(
                    "{}: a .route( whose path is not a string literal; \
                     this test cannot check it",
                    path.display()
                ),
            }
        }
        for call in code.split("routes!(").skip(1) {
            let args = call.split(')').next().unwrap_or_default();
            handlers.extend(
                args.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{}: {h}", path.display())),
            );
        }
    }
    // The admin catch-alls only answer 404 (after authentication) for
    // paths that do not exist; they are not operations.
    let catch_alls: BTreeSet<String> = ["/admin", "/admin/{*rest}"].map(str::to_owned).into();
    assert_eq!(plain_routes, catch_alls, "routes without documentation");
    let doc = json();
    let ops = operations(&doc);
    assert!(
        handlers.iter().any(|h| h.ends_with(": create")),
        "{handlers:?}"
    );
    assert_eq!(
        handlers.len(),
        ops.len(),
        "one documented operation per registered handler: {handlers:?}"
    );
}

#[test]
fn every_operation_has_a_success_and_problem_errors() {
    let doc = json();
    let ops = operations(&doc);
    assert!(ops.len() >= 23, "{} operations", ops.len());
    let ids: BTreeSet<&str> = ops
        .iter()
        .filter_map(|(_, _, op)| op["operationId"].as_str())
        .collect();
    assert_eq!(ids.len(), ops.len(), "operationIds must be unique: {ids:?}");
    for (method, path, op) in &ops {
        let responses = op["responses"].as_object().cloned().unwrap_or_default();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} has no 2xx response"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| t.len() == 1),
            "{method} {path}: tag"
        );
        assert!(op["summary"].is_string(), "{method} {path}: summary");
        for (status, response) in &responses {
            let response = resolve(&doc, response);
            assert!(
                response["description"].is_string(),
                "{method} {path} {status}"
            );
            if status.starts_with('4') || status.starts_with('5') {
                let content = response["content"].as_object();
                let types: Vec<&String> = content.map(|c| c.keys().collect()).unwrap_or_default();
                assert_eq!(types, [PROBLEM_JSON], "{method} {path} {status}");
                assert_eq!(
                    response["content"][PROBLEM_JSON]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
            if status == "503" || status == "429" {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{method} {path} {status}: Retry-After"
                );
            }
        }
        if path.starts_with("/admin") {
            assert_eq!(
                op["security"][0][BEARER_AUTH],
                serde_json::json!([]),
                "{method} {path}"
            );
            for status in ["401", "403", "404"] {
                assert!(responses.contains_key(status), "{method} {path} {status}");
            }
        }
        if path.starts_with("/api/deliveryrequests") {
            assert!(responses.contains_key("429"), "{method} {path} 429");
        }
        if op.get("requestBody").is_some() {
            assert!(responses.contains_key("413"), "{method} {path} 413");
            assert!(responses.contains_key("415"), "{method} {path} 415");
        }
    }
    let accepted = &doc["paths"]["/api/deliveryrequests"]["post"]["responses"]["202"];
    assert!(accepted["headers"]["Location"].is_object(), "{accepted}");
}

#[test]
fn schemas_keep_the_serde_names() {
    let doc = json();
    let schemas = &doc["components"]["schemas"];
    let props = |name: &str| -> BTreeSet<String> {
        schemas[name]["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        props("DeliveryStatus"),
        [
            "stage",
            "stageName",
            "lastKnownLocation",
            "pickupETA",
            "deliveryETA",
            "droneId",
            "deadline",
            "scheduledFor",
            "atRisk",
            "atRiskReason"
        ]
        .map(str::to_owned)
        .into()
    );
    assert_eq!(
        props("Problem"),
        [
            "type",
            "title",
            "status",
            "detail",
            "instance",
            "errors",
            "dependency"
        ]
        .map(str::to_owned)
        .into()
    );
    assert_eq!(schemas["DeliveryStage"]["type"], "integer");
    assert_eq!(
        schemas["DeliveryStage"]["enum"],
        serde_json::json!([0, 1, 2, 3, 4, 5, 6])
    );
    assert_eq!(
        schemas["ConfirmationRequired"]["enum"],
        serde_json::json!([0, 1, 2, 3])
    );
    assert_eq!(
        schemas["PackageSize"]["enum"],
        serde_json::json!(["Small", "Medium", "Large"])
    );
}

/// The 202 echo is built with `json!`, so compare its members with the
/// schema's.
#[test]
fn accepted_delivery_schema_matches_the_echo() {
    let body = serde_json::json!({
        "ownerId": "o", "pickupLocation": "a", "dropOffLocation": "b",
        "confirmationRequired": "None",
        "packageInfo": {"packageId": "p", "size": "small"}
    });
    let echo = dronedelivery_actors::domain::DeliveryRequest::from_external(&body, "d".into())
        .map(|r| r.to_external_json())
        .unwrap_or_default();
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let doc = json();
    let schemas = &doc["components"]["schemas"];
    let required = |name: &str| -> BTreeSet<String> {
        schemas[name]["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        keys(&echo),
        keys(&schemas["AcceptedDelivery"]["properties"])
    );
    assert_eq!(keys(&echo), required("AcceptedDelivery"));
    assert_eq!(
        keys(&echo["packageInfo"]),
        keys(&schemas["PackageInfo"]["properties"])
    );
}

/// Patterns written as literals in `#[utoipa::path]` attributes are the ones
/// [`crate::lenient`] builds.
#[test]
fn literal_patterns_match_the_lenient_ones() {
    let doc = json();
    let owner = &doc["paths"]["/api/dronedeliveries/utilization"]["get"]["parameters"][0];
    assert_eq!(owner["name"], "ownerId");
    assert_eq!(
        owner["schema"]["pattern"],
        crate::lenient::non_blank_pattern()
    );
}

/// The tracking stream's response schema describes each event as an
/// `EventSource` reads it (`{event, id, data}`), `data` naming the schema of
/// its JSON, rather than the stream as one string.
#[test]
fn the_event_stream_schema_describes_each_event() {
    let doc = json();
    let content = &doc["paths"]["/api/deliveries/{id}/events"]["get"]["responses"]["200"]
        ["content"]["text/event-stream"];
    assert_eq!(
        content["schema"]["$ref"],
        "#/components/schemas/TrackingStreamEvent"
    );
    let kinds = &doc["components"]["schemas"]["TrackingStreamEvent"]["oneOf"];
    for (i, (event, data)) in [("stage", "StageEvent"), ("position", "PositionEvent")]
        .into_iter()
        .enumerate()
    {
        let kind = &kinds[i];
        assert_eq!(
            kind["properties"]["event"]["enum"],
            serde_json::json!([event])
        );
        let data_schema = &kind["properties"]["data"];
        assert_eq!(data_schema["type"], "string");
        assert_eq!(data_schema["contentMediaType"], "application/json");
        assert_eq!(
            data_schema["contentSchema"]["$ref"],
            format!("#/components/schemas/{data}")
        );
        assert!(doc["components"]["schemas"][data].is_object(), "{data}");
    }
    assert_eq!(
        kinds[0]["required"],
        serde_json::json!(["event", "data", "id"])
    );
}
