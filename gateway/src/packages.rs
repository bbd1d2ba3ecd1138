//! `/api/packages`: the original Package service (Node/Koa on Mongo).
//!
//! Kept compatible: `PUT` answers 201 with the document on insert and 204 on
//! replace, and accepts an empty body (`curl -X PUT .../api/packages/42`, from
//! the original README). Changed on purpose: bodies are validated (the
//! original stored anything), and `PATCH` of an unknown id is a 404 (the
//! original answered 204 and did nothing useful).

use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dronedelivery_actors::domain::{
    FieldError, Package, PackagePatch, PackageSize, Upserted, ValidationError,
};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Role};
use crate::error::{
    ApiError, InternalError, PayloadTooLarge, Problem, ServiceUnavailable, UnsupportedMediaType,
};
use crate::extract::OptionalJsonBody;
use crate::lenient::{LenientText, LenientWeight};
use crate::state::{encode_segment, AppState};

/// Routes of the package API, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upsert_new))
        .routes(routes!(package, upsert, patch))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("package {id} not found"))
}

/// A fresh 24-hex-digit id, shaped like the Mongo ObjectId the original
/// minted for `PUT /api/packages`: 4 bytes of Unix seconds (so ids sort
/// roughly by creation) then 8 random bytes.
pub fn new_package_id() -> String {
    let seconds = u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX);
    let random = uuid::Uuid::new_v4().into_bytes();
    // Bytes 6 and 8 of a v4 UUID hold the version and variant bits; skip them.
    let tail = [
        random[0], random[1], random[2], random[3], random[10], random[11], random[12], random[13],
    ];
    let mut id = format!("{seconds:08x}");
    for b in tail {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// Reads `{size?, weight?, tag?}`. Absent and `null` fields are `None`; other
/// members (a `packageId`, say) are ignored, the path id wins. `size` is
/// `Small|Medium|Large` in any case, `weight` a finite number >= 0 (numeric
/// strings accepted, as the original's clients sent `"14"`), `tag` a string
/// (numbers and booleans are converted). Every bad field is reported.
pub fn parse_package_fields(body: Option<&Value>) -> Result<PackagePatch, ValidationError> {
    let obj = match body {
        None | Some(Value::Null) => return Ok(PackagePatch::default()),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            return Err(ValidationError::field(
                "$",
                "the package must be a JSON object",
            ))
        }
    };
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: &str| {
        errors.push(FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        });
    };
    let present = |key: &str| obj.get(key).filter(|v| !v.is_null());
    let size = match present("size") {
        None => None,
        Some(Value::String(s)) => {
            let parsed = PackageSize::parse(s);
            if parsed.is_none() {
                fail("size", "must be one of Small, Medium, Large");
            }
            parsed
        }
        Some(_) => {
            fail("size", "must be one of Small, Medium, Large");
            None
        }
    };
    let weight = match present("weight") {
        None => None,
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n.is_finite() && n >= 0.0 => Some(n),
                Some(_) => {
                    fail("weight", "must be a finite number >= 0");
                    None
                }
                None => {
                    fail("weight", "must be a number");
                    None
                }
            }
        }
    };
    let tag = match present("tag") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(_) => {
            fail("tag", "must be a string");
            None
        }
    };
    if errors.is_empty() {
        Ok(PackagePatch { size, weight, tag })
    } else {
        Err(ValidationError { errors })
    }
}

/// `GET /api/packages/{id}`: `{"id","size","weight","tag"}`.
#[utoipa::path(
    get,
    path = "/api/packages/{id}",
    operation_id = "getPackage",
    tag = "packages",
    summary = "Read a package",
    params(("id" = String, Path, description = "Package id")),
    responses(
        (status = 200, description = "The package", body = Package),
        (status = 404, description = "No such package",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn package(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Package>, ApiError> {
    state
        .engine
        .package(&id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// `PUT /api/packages/{id}`: creates (201 + document + `Location`) or
/// replaces (204) the package; fields missing from the body become null.
#[utoipa::path(
    put,
    path = "/api/packages/{id}",
    operation_id = "putPackage",
    tag = "packages",
    summary = "Create or replace a package",
    description = "Creates the package (201) or replaces it (204); fields missing from the \
body become null. The body may be empty (no `Content-Type` needed then).",
    params(("id" = String, Path, description = "Package id")),
    request_body(content = Option<PackageFields>, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = Package,
            headers(("Location" = String, description = "`/api/packages/{id}`"))),
        (status = 204, description = "Replaced"),
        (status = 400, description = "Invalid fields (listed in `errors`) or malformed JSON",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    caller.must_have(Role::PackageWriter)?;
    store(&state, id, body.as_ref()).await
}

/// `PUT /api/packages`: as with an id, under a freshly minted one.
#[utoipa::path(
    put,
    path = "/api/packages",
    operation_id = "createPackage",
    tag = "packages",
    summary = "Create a package under a new id",
    description = "Creates a package under a freshly minted id (24 hex digits, like a Mongo \
ObjectId). The body may be empty.",
    request_body(content = Option<PackageFields>, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = Package,
            headers(("Location" = String, description = "`/api/packages/{id}`"))),
        (status = 400, description = "Invalid fields (listed in `errors`) or malformed JSON",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn upsert_new(
    State(state): State<AppState>,
    caller: Caller,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    caller.must_have(Role::PackageWriter)?;
    store(&state, new_package_id(), body.as_ref()).await
}

async fn store(state: &AppState, id: String, body: Option<&Value>) -> Result<Response, ApiError> {
    let fields = parse_package_fields(body)?;
    let package = Package {
        id,
        size: fields.size,
        weight: fields.weight,
        tag: fields.tag,
    };
    match state.engine.upsert_package(&package).await? {
        Upserted::Created => {
            tracing::info!(package_id = %package.id, "package created");
            let location = format!("/api/packages/{}", encode_segment(&package.id));
            Ok((StatusCode::CREATED, [(LOCATION, location)], Json(package)).into_response())
        }
        Upserted::Updated => {
            tracing::debug!(package_id = %package.id, "package replaced");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}

/// `PATCH /api/packages/{id}`: changes only the fields given; 204, or 404
/// when the package does not exist.
#[utoipa::path(
    patch,
    path = "/api/packages/{id}",
    operation_id = "patchPackage",
    tag = "packages",
    summary = "Change some fields of a package",
    description = "Changes only the fields given (absent and null ones are kept).",
    params(("id" = String, Path, description = "Package id")),
    request_body(content = Option<PackageFields>, content_type = "application/json"),
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Invalid fields (listed in `errors`) or malformed JSON",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such package",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<StatusCode, ApiError> {
    caller.must_have(Role::PackageWriter)?;
    let fields = parse_package_fields(body.as_ref())?;
    match state.engine.patch_package(&id, &fields).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(not_found(&id)),
    }
}

// The documented body of `PUT` and `PATCH`. Schema only: the body is read
// leniently from a `serde_json::Value` by `parse_package_fields`, which this
// describes.
/// `PUT /api/packages[/{id}]` and `PATCH /api/packages/{id}`: the package's
/// fields; absent and null ones are not set. Other members (a `packageId`)
/// are ignored: the path id wins.
#[derive(ToSchema)]
pub struct PackageFields {
    /// Size class, case-insensitive on input.
    pub size: Option<PackageSize>,
    /// Weight.
    pub weight: Option<LenientWeight>,
    /// Free tag (numbers and booleans are converted to text).
    pub tag: Option<LenientText>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_lenient_fields() {
        let p = parse_package_fields(Some(
            &json!({"size": "small", "weight": "14", "tag": 7, "packageId": "ignored"}),
        ));
        assert_eq!(
            p,
            Ok(PackagePatch {
                size: Some(PackageSize::Small),
                weight: Some(14.0),
                tag: Some("7".into())
            })
        );
        assert_eq!(parse_package_fields(None), Ok(PackagePatch::default()));
        assert_eq!(
            parse_package_fields(Some(&json!({"size": null}))),
            Ok(PackagePatch::default())
        );
    }

    #[test]
    fn reports_every_bad_field() {
        let fields: Vec<String> =
            parse_package_fields(Some(&json!({"size": "Huge", "weight": -1, "tag": []})))
                .err()
                .map(|e| e.errors.into_iter().map(|e| e.field).collect())
                .unwrap_or_default();
        assert_eq!(fields, ["size", "weight", "tag"]);
        assert!(parse_package_fields(Some(&json!({"weight": "NaN"}))).is_err());
        assert!(parse_package_fields(Some(&json!([1]))).is_err());
    }

    #[test]
    fn mints_object_id_shaped_ids() {
        let a = new_package_id();
        assert_eq!(a.len(), 24);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, new_package_id());
    }
}
