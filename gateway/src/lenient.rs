//! OpenAPI schemas of the values the API reads leniently, shared by the
//! request bodies of several resources.
//!
//! Request bodies are parsed to a `serde_json::Value` and validated by hand
//! (the domain's `from_external` readers, [`crate::packages`],
//! [`crate::recipient`]), because the original's clients rely on inputs a
//! typed deserialiser would refuse: a weight as text (`"14"`), a pickup time
//! as epoch milliseconds, enum names in any case. So the request schemas are
//! schema-only types beside their handlers, and the schemas of these lenient
//! values are written here once, by hand, to say what the readers accept.

use dronedelivery_actors::domain::ConfirmationRequired;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

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

/// A date-time on input: ISO-8601 text (RFC 3339, or without a zone, taken
/// as UTC) or epoch milliseconds.
pub(crate) fn lenient_time() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "ISO-8601 date-time (RFC 3339; without a zone it is UTC), a date, or epoch milliseconds as text",
                )),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some("Epoch milliseconds")),
        )
        .into()
}

/// A weight on input: a number >= 0, or a numeric string (`"14"`).
pub(crate) fn lenient_weight() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0.0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("A number >= 0 as text")),
        )
        .into()
}
