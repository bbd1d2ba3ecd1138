//! Reading and writing the REST protocol's details: broker properties,
//! custom property values, HTTP dates, errors, the lock duration, the queue
//! depth out of a management entity description.

use std::time::Duration;

use azure_core::error::{Error as AzureError, ErrorKind};
use azure_core::headers::{HeaderName, Headers};
use chrono::{DateTime, Utc};
use dronedelivery_actors::ports::StoreError;
use serde::Deserialize;

/// Lock duration assumed when a peek-lock answer does not tell (the
/// service's minimum; erring short only means renewing more often).
pub(super) const DEFAULT_LOCK_DURATION: Duration = Duration::from_secs(5);

/// `BrokerProperties` of a received message, decoded leniently: every field
/// optional, sequence numbers `i64` (the crate's `i32` overflows on
/// partitioned entities), unknown fields ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct ReceivedProperties {
    pub(super) delivery_count: Option<u32>,
    pub(super) sequence_number: Option<i64>,
    pub(super) enqueued_time_utc: Option<String>,
    pub(super) lock_token: Option<String>,
    pub(super) locked_until_utc: Option<String>,
    pub(super) message_id: Option<String>,
    pub(super) correlation_id: Option<String>,
}

pub(super) fn parse_http_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// A custom property value: JSON-quoted strings are unquoted, anything else
/// is taken as it is.
pub(super) fn property_value(raw: &str) -> String {
    let raw = raw.trim();
    if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
        serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw[1..raw.len() - 1].to_owned())
    } else {
        raw.to_owned()
    }
}

/// A JSON-quoted property value, non-ASCII escaped as `\uXXXX` so that it
/// is a valid HTTP header value.
pub(super) fn quoted(value: &str) -> String {
    let json = serde_json::Value::from(value).to_string();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

pub(super) fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.get_optional_str(&HeaderName::from(name.to_ascii_lowercase()))
}

pub(super) fn status_of(e: &AzureError) -> Option<u16> {
    match e.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(u16::from(*status)),
        _ => None,
    }
}

pub(super) fn describe(e: &AzureError) -> String {
    match status_of(e) {
        Some(s @ (401 | 403)) => format!(
            "HTTP {s}: not authorized (check the shared access policy name, key and rights)"
        ),
        Some(s @ (404 | 410)) => {
            format!("HTTP {s}: the message lock is lost (expired, settled or taken over)")
        }
        Some(s) => format!("HTTP {s}"),
        None => {
            // azure_core's message alone ("failed to execute `reqwest`
            // request") hides the cause: append the source chain.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

pub(super) fn failed(what: &str, e: &AzureError) -> StoreError {
    StoreError::Unavailable(format!("Service Bus {what} failed: {}", describe(e)))
}

/// Lock duration from a peek-lock answer: `LockedUntilUtc` minus the
/// service's `Date` (both from the service's clock, so skew does not
/// matter; one-second resolution), clamped to a sane range.
pub(super) fn lock_duration(locked_until: Option<&str>, date: Option<&str>) -> Duration {
    let Some(until) = locked_until.and_then(parse_http_date) else {
        return DEFAULT_LOCK_DURATION;
    };
    let now = date.and_then(parse_http_date).unwrap_or_else(Utc::now);
    (until - now)
        .to_std()
        .unwrap_or(DEFAULT_LOCK_DURATION)
        .clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// Reads `ActiveMessageCount` out of a management entity description
/// without an XML parser: the text of the first element whose local name is
/// `ActiveMessageCount` (namespace prefix ignored).
pub(super) fn parse_active_message_count(xml: &str) -> Option<u64> {
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let end = rest.find('>')?;
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        let name = tag.split_whitespace().next().unwrap_or_default();
        let local = name.rsplit(':').next().unwrap_or(name);
        if !name.starts_with('/') && !tag.ends_with('/') && local == "ActiveMessageCount" {
            let text = &rest[..rest.find('<')?];
            return text.trim().parse().ok();
        }
    }
    None
}
