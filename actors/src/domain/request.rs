//! Delivery requests: parsing and validation of the ingestion contract.
//!
//! The same lenient parser reads the HTTP body (`ExternalDelivery`, with
//! `dropOffLocation`) and the queue message (with `dropoffLocation`), so a
//! message put on the queue by another producer, the original Java ingestion
//! included, is validated exactly like a request. Leniency follows what the
//! original's Jackson binding accepted (numbers where strings are expected,
//! `"14"` for a weight, ISO-8601 or epoch milliseconds for `pickupTime`);
//! strictness is added where the original crashed with a 500: every missing or
//! invalid field is reported by name.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::delivery::ConfirmationRequired;
use super::geo::LocationSpec;
use super::package::{PackageInfo, PackageSize};

/// One invalid or missing field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// JSON path of the field (`packageInfo.size`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// All problems found in a request, so a client can fix them in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
pub struct ValidationError {
    /// The individual field errors, in document order.
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    /// A single-field error.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError {
                field: field.to_owned(),
                message: message.into(),
            }],
        }
    }
}

/// A validated delivery request.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRequest {
    /// Minted by the gateway.
    pub delivery_id: String,
    /// Owner (`ownerId`).
    pub owner_id: String,
    /// Pickup text as given.
    pub pickup_location: String,
    /// Dropoff text as given.
    pub dropoff_location: String,
    /// Parsed pickup.
    pub pickup: LocationSpec,
    /// Parsed dropoff.
    pub dropoff: LocationSpec,
    /// Requested pickup time.
    pub pickup_time: Option<DateTime<Utc>>,
    /// Free-text deadline.
    pub deadline: String,
    /// Expedited flag.
    pub expedited: bool,
    /// Confirmation type.
    pub confirmation_required: ConfirmationRequired,
    /// The package.
    pub package: PackageInfo,
}

/// A validated reschedule (`PATCH /api/deliveryrequests/{id}`): the fields to change.
#[derive(Debug, Clone, PartialEq)]
pub struct RescheduleRequest {
    /// Path id (a `deliveryId` in the body is ignored, as in the original).
    pub delivery_id: String,
    /// New pickup text.
    pub pickup_location: Option<String>,
    /// New dropoff text.
    pub dropoff_location: Option<String>,
    /// New deadline.
    pub deadline: Option<String>,
    /// New pickup time.
    pub pickup_time: Option<DateTime<Utc>>,
}

/// Collects field errors while reading a JSON object.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
    errors: Vec<FieldError>,
}

impl<'a> Reader<'a> {
    fn new(obj: &'a Map<String, Value>, prefix: &'static str) -> Self {
        Self {
            obj,
            prefix,
            errors: Vec::new(),
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn fail(&mut self, key: &str, message: impl Into<String>) {
        let field = self.path(key);
        self.errors.push(FieldError {
            field,
            message: message.into(),
        });
    }

    fn get(&self, keys: &[&str]) -> Option<&'a Value> {
        keys.iter()
            .find_map(|k| self.obj.get(*k))
            .filter(|v| !v.is_null())
    }

    /// A string (numbers and booleans are accepted and converted, as Jackson did).
    fn text(&mut self, keys: &[&str]) -> Option<String> {
        match self.get(keys)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.fail(keys[0], "must be a string");
                None
            }
        }
    }

    fn required_text(&mut self, keys: &[&str]) -> Option<String> {
        match self.text(keys) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.fail(keys[0], "must not be empty");
                None
            }
            None => {
                if !self.errors.iter().any(|e| e.field == self.path(keys[0])) {
                    self.fail(keys[0], "is required");
                }
                None
            }
        }
    }

    fn location(&mut self, keys: &[&str], required: bool) -> Option<(String, LocationSpec)> {
        let text = if required {
            self.required_text(keys)?
        } else {
            self.text(keys)?
        };
        match LocationSpec::parse(&text) {
            Ok(spec) => Some((text, spec)),
            Err(e) => {
                self.fail(keys[0], e.to_string());
                None
            }
        }
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        match self.get(&[key])? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => {
                self.fail(key, "must be a boolean");
                None
            }
        }
    }

    fn number(&mut self, key: &str) -> Option<f64> {
        let n = match self.get(&[key])? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n >= 0.0 => Some(n),
            Some(_) => {
                self.fail(key, "must be a finite number >= 0");
                None
            }
            None => {
                self.fail(key, "must be a number");
                None
            }
        }
    }

    fn time(&mut self, key: &str) -> Option<DateTime<Utc>> {
        let parsed = match self.get(&[key])? {
            Value::Number(n) => n
                .as_i64()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            Value::String(s) => parse_time(s),
            _ => None,
        };
        if parsed.is_none() {
            self.fail(key, "must be an ISO-8601 date-time or epoch milliseconds");
        }
        parsed
    }
}

/// Parses the date formats seen on this contract: RFC 3339, ISO-8601 without a
/// zone (taken as UTC), Jackson's `+0000` offsets, a bare date, epoch
/// milliseconds as a string, and Gson's default `"May 8, 2019 8:00:00 PM"`
/// (the original queue format, with Java 9+'s narrow no-break space too).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim().replace('\u{202f}', " ");
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(&s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%b %d, %Y %I:%M:%S %p",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&s, fmt) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| Utc.from_utc_datetime(&t));
    }
    s.parse::<i64>()
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

fn as_object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ValidationError> {
    value
        .as_object()
        .ok_or_else(|| ValidationError::field("$", format!("{what} must be a JSON object")))
}

impl DeliveryRequest {
    /// Validates an `ExternalDelivery` body (HTTP) under a freshly minted id.
    /// The body's own `deliveryId` is ignored, as in the original.
    pub fn from_external(value: &Value, delivery_id: String) -> Result<Self, ValidationError> {
        Self::read(value, Some(delivery_id))
    }

    /// Validates a queue message body, which must carry its `deliveryId`.
    pub fn from_message(value: &Value) -> Result<Self, ValidationError> {
        Self::read(value, None)
    }

    fn read(value: &Value, delivery_id: Option<String>) -> Result<Self, ValidationError> {
        let obj = as_object(value, "the delivery request")?;
        let mut r = Reader::new(obj, "");
        let delivery_id = match delivery_id {
            Some(id) => Some(id),
            None => r.required_text(&["deliveryId"]),
        };
        let owner_id = r.required_text(&["ownerId"]);
        let pickup = r.location(&["pickupLocation"], true);
        let dropoff = r.location(&["dropOffLocation", "dropoffLocation"], true);
        let pickup_time = r.time("pickupTime");
        let deadline = r.text(&["deadline"]).unwrap_or_default();
        let expedited = r.boolean("expedited").unwrap_or(false);
        let confirmation = match r.required_text(&["confirmationRequired"]) {
            Some(s) => match ConfirmationRequired::parse(&s) {
                Some(c) => Some(c),
                None => {
                    r.fail(
                        "confirmationRequired",
                        "must be one of FingerPrint, Picture, Voice, None",
                    );
                    None
                }
            },
            None => None,
        };
        let mut errors = std::mem::take(&mut r.errors);
        let package = match r.get(&["packageInfo"]) {
            None => {
                errors.push(FieldError {
                    field: "packageInfo".into(),
                    message: "is required".into(),
                });
                None
            }
            Some(Value::Object(p)) => {
                let mut pr = Reader::new(p, "packageInfo.");
                let package_id = pr.required_text(&["packageId"]);
                let size = match pr.required_text(&["size"]) {
                    Some(s) => PackageSize::parse(&s).or_else(|| {
                        pr.fail("size", "must be one of Small, Medium, Large");
                        None
                    }),
                    None => None,
                };
                let weight = pr.number("weight").unwrap_or(0.0);
                let tag = pr.text(&["tag"]);
                errors.append(&mut pr.errors);
                match (package_id, size) {
                    (Some(package_id), Some(size)) => Some(PackageInfo {
                        package_id,
                        size,
                        weight,
                        tag,
                    }),
                    _ => None,
                }
            }
            Some(_) => {
                errors.push(FieldError {
                    field: "packageInfo".into(),
                    message: "must be an object".into(),
                });
                None
            }
        };
        match (
            delivery_id,
            owner_id,
            pickup,
            dropoff,
            confirmation,
            package,
        ) {
            (
                Some(delivery_id),
                Some(owner_id),
                Some(pickup),
                Some(dropoff),
                Some(confirmation_required),
                Some(package),
            ) if errors.is_empty() => Ok(Self {
                delivery_id,
                owner_id,
                pickup_location: pickup.0,
                pickup: pickup.1,
                dropoff_location: dropoff.0,
                dropoff: dropoff.1,
                pickup_time,
                deadline,
                expedited,
                confirmation_required,
                package,
            }),
            _ => Err(ValidationError { errors }),
        }
    }

    /// The 202 echo: the `ExternalDelivery` shape with the new `deliveryId`.
    pub fn to_external_json(&self) -> Value {
        let mut v = self.to_message_json();
        if let Some(obj) = v.as_object_mut() {
            if let Some(d) = obj.remove("dropoffLocation") {
                obj.insert("dropOffLocation".into(), d);
            }
        }
        v
    }

    /// [`Self::to_message_json`] as text, serialised straight from the
    /// fields: the ingestion hot path, where building a `Value` (an ordered
    /// map per object) cost more than the rest of the validation.
    pub fn message_body(&self) -> String {
        self.wire(false)
    }

    /// [`Self::to_external_json`] as text (the 202 echo), like
    /// [`Self::message_body`].
    pub fn external_body(&self) -> String {
        self.wire(true)
    }

    fn wire(&self, external: bool) -> String {
        let dropoff = self.dropoff_location.as_str();
        let wire = Wire {
            delivery_id: &self.delivery_id,
            owner_id: &self.owner_id,
            pickup_location: &self.pickup_location,
            dropoff_message: (!external).then_some(dropoff),
            dropoff_external: external.then_some(dropoff),
            pickup_time: self
                .pickup_time
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            deadline: &self.deadline,
            expedited: self.expedited,
            confirmation_required: self.confirmation_required.name(),
            package_info: &self.package,
        };
        // Strings, numbers and booleans only: serialising cannot fail.
        serde_json::to_string(&wire).unwrap_or_else(|_| {
            if external {
                self.to_external_json().to_string()
            } else {
                self.to_message_json().to_string()
            }
        })
    }

    /// The queue message body, field for field the original's (`dropoffLocation`).
    pub fn to_message_json(&self) -> Value {
        serde_json::json!({
            "deliveryId": self.delivery_id,
            "ownerId": self.owner_id,
            "pickupLocation": self.pickup_location,
            "dropoffLocation": self.dropoff_location,
            "pickupTime": self.pickup_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "deadline": self.deadline,
            "expedited": self.expedited,
            "confirmationRequired": self.confirmation_required.name(),
            "packageInfo": {
                "packageId": self.package.package_id,
                "size": self.package.size,
                "weight": self.package.weight,
                "tag": self.package.tag,
            }
        })
    }
}

/// A delivery request as it is written on the wire: the queue message
/// (`dropoffLocation`) or the external echo (`dropOffLocation`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    delivery_id: &'a str,
    owner_id: &'a str,
    pickup_location: &'a str,
    #[serde(rename = "dropoffLocation", skip_serializing_if = "Option::is_none")]
    dropoff_message: Option<&'a str>,
    #[serde(rename = "dropOffLocation", skip_serializing_if = "Option::is_none")]
    dropoff_external: Option<&'a str>,
    pickup_time: Option<String>,
    deadline: &'a str,
    expedited: bool,
    confirmation_required: &'static str,
    package_info: &'a PackageInfo,
}

impl RescheduleRequest {
    /// Validates a reschedule body (`ExternalRescheduledDelivery`) for `delivery_id`.
    /// At least one of the changeable fields must be present.
    pub fn from_external(value: &Value, delivery_id: String) -> Result<Self, ValidationError> {
        let obj = as_object(value, "the reschedule request")?;
        let mut r = Reader::new(obj, "");
        let pickup_location = r.location(&["pickupLocation"], false).map(|l| l.0);
        let dropoff_location = r
            .location(&["dropOffLocation", "dropoffLocation"], false)
            .map(|l| l.0);
        let deadline = r.text(&["deadline"]);
        let pickup_time = r.time("pickupTime");
        if !r.errors.is_empty() {
            return Err(ValidationError { errors: r.errors });
        }
        if pickup_location.is_none()
            && dropoff_location.is_none()
            && deadline.is_none()
            && pickup_time.is_none()
        {
            return Err(ValidationError::field(
                "$",
                "nothing to change: give pickupLocation, dropOffLocation, deadline or pickupTime",
            ));
        }
        Ok(Self {
            delivery_id,
            pickup_location,
            dropoff_location,
            deadline,
            pickup_time,
        })
    }

    /// Reads a queue message body, which carries its `deliveryId`.
    pub fn from_message(value: &Value) -> Result<Self, ValidationError> {
        let obj = as_object(value, "the reschedule message")?;
        let mut r = Reader::new(obj, "");
        let id = r.required_text(&["deliveryId"]);
        match id {
            Some(id) => Self::from_external(value, id),
            None => Err(ValidationError { errors: r.errors }),
        }
    }

    /// The queue message body (`dropoffLocation`, as the original).
    pub fn to_message_json(&self) -> Value {
        serde_json::json!({
            "deliveryId": self.delivery_id,
            "pickupLocation": self.pickup_location,
            "dropoffLocation": self.dropoff_location,
            "deadline": self.deadline,
            "pickupTime": self.pickup_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ri_example() -> Value {
        json!({
           "confirmationRequired": "None", "deadline": "", "dropOffLocation": "drop off",
           "expedited": true, "ownerId": "myowner",
           "packageInfo": {"packageId": "mypackage", "size": "Small", "tag": "mytag", "weight": 10},
           "pickupLocation": "my pickup", "pickupTime": "2019-05-08T20:00:00.000Z"
        })
    }

    #[test]
    fn accepts_the_original_example() {
        let r = DeliveryRequest::from_external(&ri_example(), "d1".into());
        let r = r.map_err(|e| e.to_string());
        assert_eq!(r.as_ref().map(|r| r.package.size), Ok(PackageSize::Small));
        let r = r.unwrap();
        assert_eq!(r.pickup_time.map(|t| t.timestamp()), Some(1_557_345_600));
        assert!(r.expedited);
        let echo = r.to_external_json();
        assert_eq!(echo["dropOffLocation"], "drop off");
        assert_eq!(echo["deliveryId"], "d1");
        // Round trip through the queue body.
        let back = DeliveryRequest::from_message(&r.to_message_json());
        assert_eq!(back, Ok(r));
    }

    #[test]
    fn accepts_the_original_load_test_body() {
        let body = json!({"confirmationRequired":"FingerPrint","deadline":"DeadlyQueueOfZombiatedDemons","deliveryId":"42","dropOffLocation":"0,37.4315730000000,-78.65689399999997","expedited":true,"ownerId":"1","packageInfo":{"packageId":"442","size":"Small","tag":"t","weight":"14"},"pickupLocation":"0,36.778261,-119.41793200000001","pickupTime":"2019-04-05T11:00:00.000Z"});
        let r = DeliveryRequest::from_external(&body, "new".into()).unwrap();
        assert_eq!(r.delivery_id, "new");
        assert_eq!(r.package.weight, 14.0);
        assert!(matches!(r.pickup, LocationSpec::Coordinates(_)));
    }

    #[test]
    fn names_every_missing_field() {
        let err =
            DeliveryRequest::from_external(&json!({"pickupTime": 1557345600000i64}), "x".into())
                .err()
                .map(|e| e.errors.into_iter().map(|e| e.field).collect::<Vec<_>>());
        assert_eq!(
            err,
            Some(vec![
                "ownerId".to_string(),
                "pickupLocation".into(),
                "dropOffLocation".into(),
                "confirmationRequired".into(),
                "packageInfo".into()
            ])
        );
    }

    #[test]
    fn rejects_bad_enums_and_types() {
        let mut body = ri_example();
        body["confirmationRequired"] = json!("Telepathy");
        body["packageInfo"]["size"] = json!("Huge");
        body["packageInfo"]["weight"] = json!(-1);
        body["expedited"] = json!([1]);
        let fields: Vec<String> = DeliveryRequest::from_external(&body, "x".into())
            .expect_err("the request is invalid")
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "expedited",
                "confirmationRequired",
                "packageInfo.size",
                "packageInfo.weight"
            ]
        );
        assert!(DeliveryRequest::from_external(&json!([1, 2]), "x".into()).is_err());
    }

    #[test]
    fn parses_all_time_formats() {
        let expected = Utc.with_ymd_and_hms(2019, 5, 8, 20, 0, 0).single();
        for s in [
            "2019-05-08T20:00:00.000Z",
            "2019-05-08T20:00:00.000+0000",
            "2019-05-08T20:00:00",
            "May 8, 2019 8:00:00 PM",
            "May 8, 2019 8:00:00\u{202f}PM",
            "1557345600000",
        ] {
            assert_eq!(parse_time(s), expected, "{s}");
        }
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn reschedule_needs_something_to_change() {
        assert!(
            RescheduleRequest::from_external(&json!({"deliveryId": "ignored"}), "d".into())
                .is_err()
        );
        let r = RescheduleRequest::from_external(
            &json!({"dropOffLocation": "47.6,-122.3"}),
            "d".into(),
        );
        assert_eq!(r.as_ref().map(|r| r.delivery_id.as_str()), Ok("d"));
        let msg = r.map(|r| r.to_message_json()).unwrap();
        assert_eq!(
            RescheduleRequest::from_message(&msg).map(|r| r.dropoff_location),
            Ok(Some("47.6,-122.3".into()))
        );
    }

    #[test]
    fn wire_bodies_match_the_json_forms() {
        let mut body = serde_json::json!({
            "confirmationRequired": "Picture", "deadline": "soon", "dropOffLocation": "drop \"off\"",
            "expedited": true, "ownerId": "o1",
            "packageInfo": {"packageId": "p1", "size": "Large", "tag": null, "weight": 12.5},
            "pickupLocation": "0,47.6,-122.3", "pickupTime": "2019-05-08T20:00:00.000Z"
        });
        for _ in 0..2 {
            let req = DeliveryRequest::from_external(&body, "d-1".into()).unwrap();
            let message: Value = serde_json::from_str(&req.message_body()).unwrap();
            assert_eq!(message, req.to_message_json());
            let external: Value = serde_json::from_str(&req.external_body()).unwrap();
            assert_eq!(external, req.to_external_json());
            // Again without a pickup time and with a tag.
            body["pickupTime"] = Value::Null;
            body["packageInfo"]["tag"] = serde_json::json!("t");
        }
    }
}
