//! OpenAPI schemas of the values the API reads leniently, shared by the
//! request bodies of several resources.
//!
//! Request bodies are parsed to a `serde_json::Value` and validated by hand
//! (the domain's `from_external` readers, [`crate::packages`],
//! [`crate::recipient`]), because the original's clients rely on inputs a
//! typed deserialiser would refuse: a weight as text (`"14"`), a pickup time
//! as epoch milliseconds, a number where text is expected, `null` for a
//! member left out. So the request schemas are schema-only types beside
//! their handlers, and the values those readers accept leniently are
//! described here once, as components ([`LenientText`], [`NonBlankText`],
//! [`LenientTime`], [`LenientWeight`], [`LenientBoolean`]), to say exactly
//! what the readers accept: a client (or a fuzzer) that sends what a schema
//! allows gets the request accepted, and what it forbids is refused.
//!
//! "Blank" is what Rust's `str::trim` removes (Unicode `White_Space`),
//! spelled out in the patterns because the `\s` of ECMAScript and of
//! Python's `re` each differ from it.

use chrono::{DateTime, Utc};
use dronedelivery_actors::domain::{ConfirmationRequired, ValidationError};
use serde_json::{json, Value};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// The characters `str::trim` removes (Unicode `White_Space`), as the body
/// of a regular expression character class.
pub const WHITESPACE_CLASS: &str =
    r"\t-\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// Pattern of a text that is not blank: it has a character `str::trim`
/// keeps. Unanchored, as JSON Schema patterns are.
pub fn non_blank_pattern() -> String {
    format!("[^{WHITESPACE_CLASS}]")
}

/// `confirmationRequired` on the ingestion API: the type's name.
pub(crate) fn confirmation_name() -> Schema {
    let names: Vec<&str> = (0..)
        .map_while(ConfirmationRequired::from_int)
        .map(ConfirmationRequired::name)
        .collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .description(Some(
            "How the recipient confirms (case-insensitive on input).",
        ))
        .into()
}

/// A string, number or boolean: what the readers accept where the contract
/// has text.
fn text_types() -> SchemaType {
    SchemaType::from_iter([Type::String, Type::Number, Type::Boolean])
}

/// Text. A number or a boolean is accepted too and converted to text, as
/// the original's Jackson binding did.
#[derive(Debug)]
pub struct LenientText;

impl PartialSchema for LenientText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(text_types())
            .description(Some(
                "Text. A number or a boolean is accepted too and converted to text (`14`, `true`), \
as the original's Jackson binding did.",
            ))
            .into()
    }
}

impl ToSchema for LenientText {}

/// [`LenientText`] that must not be blank.
#[derive(Debug)]
pub struct NonBlankText;

impl PartialSchema for NonBlankText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(text_types())
            .pattern(Some(non_blank_pattern()))
            .description(Some(
                "Text that is not blank (not empty, not only whitespace). A number or a boolean is \
accepted too and converted to text, as the original's Jackson binding did.",
            ))
            .into()
    }
}

impl ToSchema for NonBlankText {}

/// First instant a pickup time may be: `0000-01-01T00:00:00Z`, in epoch
/// milliseconds. Years outside 0 to 9999 have no RFC 3339 form, which the
/// echo and the queue message write the time in.
pub const FIRST_PICKUP_MS: i64 = -62_167_219_200_000;

/// Last instant a pickup time may be: `9999-12-31T23:59:59.999Z`.
pub const LAST_PICKUP_MS: i64 = 253_402_300_799_999;

/// Refuses a pickup time outside [`FIRST_PICKUP_MS`]..=[`LAST_PICKUP_MS`]:
/// the domain's reader takes any instant chrono can hold, but one outside
/// years 0 to 9999 has no RFC 3339 form, so the queued message could not be
/// read back (it would be dead-lettered after a 2xx).
pub fn check_pickup_time(time: Option<DateTime<Utc>>) -> Result<(), ValidationError> {
    match time.map(|t| t.timestamp_millis()) {
        Some(ms) if !(FIRST_PICKUP_MS..=LAST_PICKUP_MS).contains(&ms) => {
            Err(ValidationError::field(
                "pickupTime",
                "must be between 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z",
            ))
        }
        _ => Ok(()),
    }
}

/// A date-time on input: RFC 3339 text, epoch milliseconds as text, or
/// epoch milliseconds as a number, from year 0 to 9999.
///
/// The reader also accepts a date-time without a zone (taken as UTC), a
/// bare date and the original queue's Gson format
/// (`"May 8, 2019 8:00:00 PM"`); they are named in the description rather
/// than in a pattern, which could not say which of them are real dates.
#[derive(Debug)]
pub struct LenientTime;

impl PartialSchema for LenientTime {
    fn schema() -> RefOr<Schema> {
        let ws = WHITESPACE_CLASS;
        let first = FIRST_PICKUP_MS;
        let last = LAST_PICKUP_MS;
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                    .description(Some("RFC 3339 date-time")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(format!(
                        "^[{ws}]*(?:[+]?[0-9]{{1,14}}|-[0-9]{{1,13}})[{ws}]*$"
                    )))
                    .description(Some("Epoch milliseconds as text")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(first))
                    .maximum(Some(last))
                    .description(Some("Epoch milliseconds")),
            )
            .description(Some(
                "A date-time from year 0 to 9999 (UTC): RFC 3339 text, or epoch milliseconds as a \
number or as text. Also accepted: ISO-8601 without a zone (taken as UTC), a date (`2019-05-08`, \
midnight UTC) and `May 8, 2019 8:00:00 PM` (UTC).",
            ))
            .into()
    }
}

impl ToSchema for LenientTime {}

/// A weight on input: a number >= 0, or such a number as text (`"14"`).
#[derive(Debug)]
pub struct LenientWeight;

impl PartialSchema for LenientWeight {
    fn schema() -> RefOr<Schema> {
        let ws = WHITESPACE_CLASS;
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(0)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(format!(
                        r"^[{ws}]*\+?(?:[0-9]{{1,200}}(?:\.[0-9]{{0,100}})?|\.[0-9]{{1,100}})(?:[eE][+-]?[0-9]{{1,2}})?[{ws}]*$"
                    )))
                    .description(Some("A number >= 0 as text (`\"14\"`, `\"2.5\"`)")),
            )
            .description(Some(
                "A weight >= 0: a number, or a number as text (`\"14\"`), which the original's \
clients send.",
            ))
            .into()
    }
}

impl ToSchema for LenientWeight {}

/// A boolean on input: `true`/`false`, or that as text in any case.
#[derive(Debug)]
pub struct LenientBoolean;

impl PartialSchema for LenientBoolean {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$")),
            )
            .description(Some(
                "A boolean, or `\"true\"`/`\"false\"` as text in any case.",
            ))
            .into()
    }
}

impl ToSchema for LenientBoolean {}

/// Any JSON value: a member the reader ignores.
pub(crate) fn ignored(description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(description))
        .into()
}

/// `schema` (an object schema) saying that at least one of `members` is
/// given: each is paired with the schema of a value that counts as not
/// given (`null`, or blank text, which the readers take for a member left
/// out), and the object must not have every member absent or not given.
///
/// Written as `not: {properties: …}` rather than an `anyOf` of `required`
/// members, which says the same but which test generators read as
/// "removing this required member is invalid" when another branch still
/// holds.
pub(crate) fn at_least_one_of(schema: RefOr<Schema>, members: &[(&str, Value)]) -> RefOr<Schema> {
    let RefOr::T(Schema::Object(mut object)) = schema else {
        return schema;
    };
    let none_given: serde_json::Map<String, Value> = members
        .iter()
        .map(|(name, not_given)| ((*name).to_owned(), not_given.clone()))
        .collect();
    // utoipa's object builder has no `not`; a schema's extension map is
    // serialised flat into it, so it carries the keyword.
    let mut extensions = object.extensions.take().unwrap_or_default();
    extensions.merge(Extensions::from_iter([(
        "not",
        json!({ "properties": none_given }),
    )]));
    object.extensions = Some(extensions);
    RefOr::T(Schema::Object(object))
}

/// A member value that counts as not given: `null`.
pub(crate) fn null() -> Value {
    json!({"type": "null"})
}

/// A member value that counts as not given: `null` or blank text.
pub(crate) fn null_or_blank() -> Value {
    json!({"type": ["null", "string"], "pattern": format!("^[{WHITESPACE_CLASS}]*$")})
}

/// Rewrites `member` of the object `body` from an integral float
/// (`12702.0`) to the integer it is. The domain's readers take epoch
/// milliseconds only as a JSON integer, but JSON Schema, so the document,
/// calls `12702.0` an integer too (and Jackson, which the original used,
/// read it as one); fractions stay as they are and are refused.
pub(crate) fn integral_float_as_integer(body: &mut Value, member: &str) {
    let Some(value) = body.get_mut(member) else {
        return;
    };
    let integral = value
        .as_f64()
        .filter(|_| !value.is_i64() && !value.is_u64())
        .filter(|f| f.fract() == 0.0 && *f >= -(2f64.powi(63)) && *f < 2f64.powi(63));
    if let Some(f) = integral {
        // In range and integral: the cast is exact.
        *value = Value::from(f as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dronedelivery_actors::domain::request::parse_time;

    fn json_schema<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap_or_default()
    }

    fn pattern(schema: &Value, branch: usize) -> String {
        schema["oneOf"][branch]["pattern"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn integral_floats_become_integers() {
        let mut body = json!({"pickupTime": 12702.0, "other": 1.0});
        integral_float_as_integer(&mut body, "pickupTime");
        assert_eq!(body, json!({"pickupTime": 12702, "other": 1.0}));
        for kept in [
            json!({"pickupTime": 1.5}),
            json!({"pickupTime": 1e300}),
            json!({"pickupTime": "1.0"}),
            json!({}),
        ] {
            let mut body = kept.clone();
            integral_float_as_integer(&mut body, "pickupTime");
            assert_eq!(body, kept);
        }
    }

    #[test]
    fn the_whitespace_class_is_what_trim_removes() {
        let class: Vec<char> = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .collect();
        let expected: String = class
            .iter()
            .map(|c| format!("{:04X} ", *c as u32))
            .collect();
        assert_eq!(
            expected,
            "0009 000A 000B 000C 000D 0020 0085 00A0 1680 2000 2001 2002 2003 2004 2005 2006 \
2007 2008 2009 200A 2028 2029 202F 205F 3000 "
        );
    }

    /// A few values each pattern admits, and the reader accepts.
    #[test]
    fn what_the_patterns_admit_the_readers_accept() {
        for weight in ["14", " 2.5 ", "+.5", "5.", "1e99", "0E-05"] {
            let n = weight.trim().parse::<f64>();
            assert!(n.is_ok_and(|n| n.is_finite() && n >= 0.0), "{weight}");
        }
        let time = json_schema::<LenientTime>();
        assert!(pattern(&time, 1).contains("{1,14}"), "{time}");
        for millis in ["0", " -9999999999999", "+99999999999999 "] {
            let t = parse_time(millis);
            assert!(t.is_some() && check_pickup_time(t).is_ok(), "{millis}");
        }
        for rfc3339 in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999-23:59"] {
            assert!(parse_time(rfc3339).is_some(), "{rfc3339}");
        }
        assert_eq!(time["oneOf"][2]["minimum"], FIRST_PICKUP_MS);
        assert_eq!(time["oneOf"][2]["maximum"], LAST_PICKUP_MS);
        use chrono::TimeZone;
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).single();
        let text = |ms: i64| at(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        assert_eq!(
            text(FIRST_PICKUP_MS).as_deref(),
            Some("0000-01-01T00:00:00.000Z")
        );
        assert_eq!(
            text(LAST_PICKUP_MS).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert!(check_pickup_time(at(FIRST_PICKUP_MS)).is_ok());
        assert!(check_pickup_time(at(LAST_PICKUP_MS)).is_ok());
        assert!(check_pickup_time(at(FIRST_PICKUP_MS - 1)).is_err());
        assert!(check_pickup_time(at(LAST_PICKUP_MS + 1)).is_err());
        assert!(check_pickup_time(None).is_ok());
    }
}
