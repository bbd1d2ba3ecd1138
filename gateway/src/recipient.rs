//! What the recipient of a delivery posts (the original Delivery service's
//! `POST /api/deliveries/{id}/notifymerequests` and `/confirmations`, ri-spec
//! §1.5).
//!
//! Bodies are read leniently like the original's System.Text.Json binding
//! (member names case-insensitive), and strictly where it failed late: every
//! missing or invalid field is reported by name in one 400 problem.
//!
//! Unlike the original, a confirmation is stored with the delivery (through
//! its actor, the delivery's single writer) and only accepted once the
//! delivery is `Completed`: confirming a parcel still in the air is a 409.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use dronedelivery_actors::domain::{
    Confirmation, ConfirmationRequired, ConfirmationTime, DeliveryStage, FieldError, Location,
    ValidationError,
};
use dronedelivery_actors::CommandError;
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{
    ApiError, InternalError, PayloadTooLarge, Problem, ServiceUnavailable, UnsupportedMediaType,
};
use crate::extract::JsonBody;
use crate::lenient::{
    at_least_one_of, confirmation_name, non_blank_pattern, null_or_blank, WHITESPACE_CLASS,
};
use crate::state::AppState;

/// Longest e-mail address accepted (RFC 5321 path limit).
const MAX_EMAIL: usize = 254;

/// Longest SMS number accepted (generous: E.164 is 15 digits, plus formatting).
const MAX_SMS: usize = 64;

/// Routes of the recipient API, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(notify_me))
        .routes(routes!(confirm))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("delivery {id} not found"))
}

/// Collects field errors while reading an object; member names match
/// case-insensitively (an exact match wins).
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn of(body: &'a Value, prefix: &'static str) -> Result<Self, ValidationError> {
        match body.as_object() {
            Some(obj) => Ok(Self {
                obj,
                prefix,
                errors: Vec::new(),
            }),
            None => {
                let name = prefix.trim_end_matches('.');
                Err(ValidationError::field(
                    if name.is_empty() { "body" } else { name },
                    "must be a JSON object",
                ))
            }
        }
    }

    /// The member, `None` when absent or `null`.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj
            .get(name)
            .or_else(|| {
                self.obj
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
            .filter(|v| !v.is_null())
    }

    fn fail(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: format!("{}{name}", self.prefix),
            message: message.into(),
        });
    }

    /// An optional string; an empty one counts as absent.
    fn optional_text(&mut self, name: &str) -> Option<String> {
        match self.get(name)? {
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.trim().to_owned()),
            _ => {
                self.fail(name, "must be a string");
                None
            }
        }
    }

    fn required<T>(
        &mut self,
        name: &str,
        read: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        match self.get(name) {
            None => {
                self.fail(name, "is required");
                None
            }
            Some(v) => match read(v) {
                Ok(t) => Some(t),
                Err(message) => {
                    self.fail(name, message);
                    None
                }
            },
        }
    }

    /// A required object member, read by `read` with its own field prefix.
    fn object<T>(
        &mut self,
        name: &str,
        prefix: &'static str,
        read: impl FnOnce(&mut Fields<'_>) -> Option<T>,
    ) -> Option<T> {
        let Some(value) = self.get(name) else {
            self.fail(name, "is required");
            return None;
        };
        match Fields::of(value, prefix) {
            Ok(mut inner) => {
                let t = read(&mut inner);
                self.errors.append(&mut inner.errors);
                t
            }
            Err(mut e) => {
                self.errors.append(&mut e.errors);
                None
            }
        }
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, ValidationError> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(ValidationError {
                errors: self.errors,
            }),
        }
    }
}

/// A validated notify-me request: at least one of the two channels.
#[derive(Debug, PartialEq)]
struct NotifyMe {
    email_address: Option<String>,
    sms: Option<String>,
}

/// A basic e-mail sanity check (text on both sides of the last `@`, no
/// whitespace), not a full RFC 5322 parser: the address is only logged by the
/// notification step.
fn plausible_email(s: &str) -> bool {
    s.len() <= MAX_EMAIL
        && !s.contains(char::is_whitespace)
        && s.rsplit_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
}

fn parse_notify_me(body: &Value) -> Result<NotifyMe, ValidationError> {
    let mut f = Fields::of(body, "")?;
    let email_address = f.optional_text("emailAddress");
    let sms = f.optional_text("sms");
    if let Some(e) = &email_address {
        if !plausible_email(e) {
            f.fail("emailAddress", "must be an e-mail address (name@domain)");
        }
    }
    // Characters, as the schema's maxLength counts them, not UTF-8 bytes.
    if sms.as_ref().is_some_and(|s| s.chars().count() > MAX_SMS) {
        f.fail("sms", format!("must be at most {MAX_SMS} characters"));
    }
    if email_address.is_none() && sms.is_none() && f.errors.is_empty() {
        f.fail("emailAddress", "emailAddress or sms is required");
    }
    f.finish(Some(NotifyMe { email_address, sms }))
}

/// `POST /api/deliveries/{id}/notifymerequests` `{emailAddress?, sms?}`:
/// **204**; 404 for an unknown delivery; 400 when neither channel is given
/// or one is invalid.
#[utoipa::path(
    post,
    path = "/api/deliveries/{id}/notifymerequests",
    operation_id = "addNotifyMeRequest",
    tag = "recipient",
    summary = "Ask to be notified about a delivery",
    params(("id" = String, Path, description = "Delivery id")),
    request_body(content = NotifyMeRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, description = "Neither `emailAddress` nor `sms`, an invalid one (listed in `errors`), or malformed JSON",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn notify_me(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    let request = parse_notify_me(&body)?;
    crate::deliveries::check_readable(&state, &caller, &id).await?;
    match state
        .engine
        .add_notify_me(&id, request.email_address, request.sms)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(CommandError::NotFound) => Err(not_found(&id)),
        Err(e) => Err(e.into()),
    }
}

fn number(v: &Value) -> Result<f64, String> {
    v.as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| "must be a number".to_owned())
}

fn in_range(v: &Value, max: f64) -> Result<f64, String> {
    let n = number(v)?;
    if (-max..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between -{max} and {max}"))
    }
}

fn confirmation_type(v: &Value) -> Result<ConfirmationRequired, String> {
    const EXPECTED: &str = "must be 0 to 3 or one of FingerPrint, Picture, Voice, None";
    match v {
        // `1.0` is the integer 1 to JSON Schema, so to the document.
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..=3.0).contains(f))
                    .map(|f| f as u64)
            })
            .and_then(ConfirmationRequired::from_int),
        Value::String(s) => ConfirmationRequired::parse(s).or_else(|| {
            s.trim()
                .parse::<u64>()
                .ok()
                .and_then(ConfirmationRequired::from_int)
        }),
        _ => None,
    }
    .ok_or_else(|| EXPECTED.to_owned())
}

/// Validates a confirmation body; `received_at` is now.
fn parse_confirmation(body: &Value) -> Result<Confirmation, ValidationError> {
    let mut f = Fields::of(body, "")?;
    let date_time = f.object("dateTime", "dateTime.", |d| {
        d.required("dateTimeValue", |v| match v.as_str().map(str::trim) {
            Some(s) if !s.is_empty() => Ok(ConfirmationTime {
                date_time_value: s.to_owned(),
            }),
            Some(_) => Err("must not be empty".to_owned()),
            None => Err("must be a string".to_owned()),
        })
    });
    let geo_coordinates = f.object("geoCoordinates", "geoCoordinates.", |g| {
        let altitude = match g.get("altitude") {
            None => Some(0.0),
            Some(v) => match number(v) {
                Ok(n) => Some(n),
                Err(m) => {
                    g.fail("altitude", m);
                    None
                }
            },
        };
        let latitude = g.required("latitude", |v| in_range(v, 90.0));
        let longitude = g.required("longitude", |v| in_range(v, 180.0));
        Some(Location {
            altitude: altitude?,
            latitude: latitude?,
            longitude: longitude?,
        })
    });
    let confirmation_type = f.required("confirmationType", confirmation_type);
    let confirmation_blob = f.required("confirmationBlob", |v| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| "must be a string".to_owned())
    });
    let confirmation = match (
        date_time,
        geo_coordinates,
        confirmation_type,
        confirmation_blob,
    ) {
        (
            Some(date_time),
            Some(geo_coordinates),
            Some(confirmation_type),
            Some(confirmation_blob),
        ) => Some(Confirmation {
            date_time,
            geo_coordinates,
            confirmation_type,
            confirmation_blob,
            received_at: Utc::now(),
        }),
        _ => None,
    };
    f.finish(confirmation)
}

/// `POST /api/deliveries/{id}/confirmations`: stores the recipient's
/// confirmation and notifies the notify-me subscribers. **200** (empty body,
/// as the original); a repeated confirmation is accepted and the first one
/// kept. 404 for an unknown delivery, 409 while it is not `Completed` yet
/// (or when it was cancelled), 400 naming each invalid field.
#[utoipa::path(
    post,
    path = "/api/deliveries/{id}/confirmations",
    operation_id = "confirmDelivery",
    tag = "recipient",
    summary = "Confirm receipt of a delivery",
    description = "Stores the recipient's confirmation with the delivery and notifies the \
notify-me subscribers. A repeated confirmation is accepted; the first one is kept.",
    params(("id" = String, Path, description = "Delivery id")),
    request_body(content = ConfirmationRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Confirmed (empty body)"),
        (status = 400, description = "Invalid or missing fields (listed in `errors`), or malformed JSON",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The delivery is not completed yet, or was cancelled",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn confirm(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<StatusCode, ApiError> {
    let confirmation = parse_confirmation(&body)?;
    crate::deliveries::check_readable(&state, &caller, &id).await?;
    match state.engine.confirm(&id, confirmation).await {
        Ok(()) => {
            tracing::info!(delivery_id = %id, "delivery confirmed by the recipient");
            Ok(StatusCode::OK)
        }
        Err(CommandError::NotFound) => Err(not_found(&id)),
        Err(CommandError::WrongStage(DeliveryStage::Cancelled)) => Err(ApiError::Conflict(
            "cannot confirm: the delivery was cancelled".into(),
        )),
        Err(CommandError::WrongStage(stage)) => Err(ApiError::Conflict(format!(
            "not delivered yet: the delivery is {}",
            stage.name()
        ))),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------
// Request bodies, as documented. Schema only: the handlers read them
// leniently from a `serde_json::Value` (see the module docs); these types
// describe what that reader accepts.
// ---------------------------------------------------------------------------

/// `confirmationType` of a confirmation: the integer code or the name.
fn confirmation_type_input() -> Schema {
    OneOfBuilder::new()
        .item(Ref::from_schema_name(
            <ConfirmationRequired as ToSchema>::name(),
        ))
        .item(confirmation_name())
        .into()
}

/// `POST /api/deliveries/{id}/notifymerequests`: where to notify the
/// recipient. At least one of the two is required (a blank or `null` one
/// counts as absent). Member names are case-insensitive.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifyMeChannels {
    /// E-mail address.
    #[schema(schema_with = email_address)]
    pub email_address: Option<String>,
    /// Phone number for text messages (surrounding whitespace is trimmed).
    #[schema(max_length = 64)]
    pub sms: Option<String>,
}

/// `emailAddress`: blank, or `name@domain` without whitespace, as
/// [`plausible_email`] checks it.
fn email_address() -> Schema {
    let ws = WHITESPACE_CLASS;
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(MAX_EMAIL))
        .pattern(Some(format!("^(?:[{ws}]*|[^{ws}]+@[^@{ws}]+)$")))
        .description(Some(
            "E-mail address (`name@domain`, no whitespace; not checked further).",
        ))
        .into()
}

/// The documented body of `POST /api/deliveries/{id}/notifymerequests`: the
/// members of [`NotifyMeChannels`], at least one of them not blank.
#[derive(Debug)]
pub struct NotifyMeRequest;

impl PartialSchema for NotifyMeRequest {
    fn schema() -> RefOr<Schema> {
        at_least_one_of(
            NotifyMeChannels::schema(),
            &[("emailAddress", null_or_blank()), ("sms", null_or_blank())],
        )
    }
}

impl ToSchema for NotifyMeRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        NotifyMeChannels::schemas(schemas);
    }
}

/// `POST /api/deliveries/{id}/confirmations`: the recipient confirms
/// receipt. Member names are case-insensitive.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationRequest {
    /// When the recipient confirmed, as text.
    pub date_time: ConfirmationDateTime,
    /// Where.
    pub geo_coordinates: GeoCoordinates,
    /// How.
    #[schema(schema_with = confirmation_type_input)]
    pub confirmation_type: u8,
    /// The evidence (a picture, a fingerprint hash, …), opaque.
    pub confirmation_blob: String,
}

/// When a confirmation was made, in the original's shape
/// (`{"dateTimeValue": "..."}`), kept as the client wrote it (trimmed).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationDateTime {
    /// The date-time text.
    #[schema(schema_with = date_time_value)]
    pub date_time_value: String,
}

/// `dateTimeValue`: any text that is not blank.
fn date_time_value() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(non_blank_pattern()))
        .description(Some("The date-time text (not blank)."))
        .into()
}

/// A point given by the recipient.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeoCoordinates {
    /// Metres above ground (default 0, also for `null`).
    pub altitude: Option<f64>,
    /// Degrees north.
    #[schema(minimum = -90.0, maximum = 90.0)]
    pub latitude: f64,
    /// Degrees east.
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub longitude: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields<T>(r: Result<T, ValidationError>) -> Vec<String> {
        r.err()
            .map(|e| e.errors.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn notify_me_needs_one_valid_channel() {
        assert_eq!(
            parse_notify_me(&json!({"EmailAddress": " a@b.c ", "sms": ""})).ok(),
            Some(NotifyMe {
                email_address: Some("a@b.c".into()),
                sms: None
            })
        );
        assert!(parse_notify_me(&json!({"sms": "+1 555 0100"})).is_ok());
        // 64 characters of several UTF-8 bytes each are within the limit.
        assert!(parse_notify_me(&json!({"sms": "पन्ह".repeat(16)})).is_ok());
        assert_eq!(
            fields(parse_notify_me(&json!({"sms": "é".repeat(65)}))),
            ["sms"]
        );
        assert_eq!(fields(parse_notify_me(&json!({}))), ["emailAddress"]);
        assert_eq!(
            fields(parse_notify_me(&json!({"emailAddress": null, "sms": ""}))),
            ["emailAddress"]
        );
        for bad in ["nope", "@b", "a@", "a b@c"] {
            assert_eq!(
                fields(parse_notify_me(&json!({"emailAddress": bad}))),
                ["emailAddress"],
                "{bad}"
            );
        }
        assert_eq!(
            fields(parse_notify_me(&json!({"emailAddress": 1, "sms": true}))),
            ["emailAddress", "sms"]
        );
        assert_eq!(fields(parse_notify_me(&json!([]))), ["body"]);
    }

    fn ri_confirmation() -> Value {
        json!({
            "dateTime": {"dateTimeValue": "2019-05-08T20:30:00Z"},
            "geoCoordinates": {"altitude": 1.5, "latitude": 47.6, "longitude": -122.3},
            "confirmationType": 1,
            "confirmationBlob": "cGljdHVyZQ=="
        })
    }

    #[test]
    fn reads_a_confirmation() {
        let c = parse_confirmation(&ri_confirmation());
        assert!(
            c.as_ref()
                .is_ok_and(|c| c.confirmation_type == ConfirmationRequired::Picture
                    && c.geo_coordinates.latitude == 47.6
                    && c.date_time.date_time_value == "2019-05-08T20:30:00Z"),
            "{c:?}"
        );
        let mut named = ri_confirmation();
        named["confirmationType"] = json!("fingerprint");
        named["geoCoordinates"] = json!({"Latitude": 0, "Longitude": 0});
        let c = parse_confirmation(&named);
        assert!(
            c.as_ref()
                .is_ok_and(|c| c.confirmation_type == ConfirmationRequired::FingerPrint
                    && c.geo_coordinates.altitude == 0.0),
            "{c:?}"
        );
    }

    #[test]
    fn an_integral_float_is_a_confirmation_type_code() {
        assert_eq!(
            confirmation_type(&json!(1.0)),
            Ok(ConfirmationRequired::Picture)
        );
        assert!(confirmation_type(&json!(1.5)).is_err());
        assert!(confirmation_type(&json!(4.0)).is_err());
        assert!(confirmation_type(&json!(-0.0)).is_ok());
    }

    #[test]
    fn names_every_invalid_confirmation_field() {
        assert_eq!(
            fields(parse_confirmation(&json!({}))),
            [
                "dateTime",
                "geoCoordinates",
                "confirmationType",
                "confirmationBlob"
            ]
        );
        assert_eq!(
            fields(parse_confirmation(&json!({
                "dateTime": {"dateTimeValue": ""},
                "geoCoordinates": {"altitude": "x", "latitude": 91, "longitude": "east"},
                "confirmationType": 4,
                "confirmationBlob": 7
            }))),
            [
                "dateTime.dateTimeValue",
                "geoCoordinates.altitude",
                "geoCoordinates.latitude",
                "geoCoordinates.longitude",
                "confirmationType",
                "confirmationBlob"
            ]
        );
        assert_eq!(
            fields(parse_confirmation(&json!({
                "dateTime": "now",
                "geoCoordinates": {"latitude": 1, "longitude": 2},
                "confirmationType": "Smell",
                "confirmationBlob": ""
            }))),
            ["dateTime", "confirmationType"]
        );
    }
}
