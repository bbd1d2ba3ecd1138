//! `Idempotency-Key` on `POST /api/deliveryrequests`: a client that retries a
//! request (a timeout, a dropped connection) gets the first answer again
//! instead of creating a second delivery.
//!
//! ## Contract
//! - The header is optional; with it, its value must be 1 to
//!   [`MAX_KEY_LEN`] visible ASCII characters (and sent once), else 400.
//! - The first request with a key wins. A repeated request with the same key
//!   and the same request (compared after validation, so key order or
//!   `"14"` for `14` do not matter) gets the stored answer: same status (202),
//!   body and `Location`, plus `Idempotent-Replayed: true`.
//! - The same key with a different request is a **422** problem.
//! - Keys belong to the request's owner: two owners may use the same key for
//!   requests of their own, and neither learns that the other did (with
//!   authentication on, an owner is whoever the token speaks for). A key is
//!   kept [`KEY_TTL`] (24 h) under `deliveryrequests:{id}`, where `id` is
//!   the delivery id the owner and the key make ([`delivery_id`]: bounded
//!   length, whatever the owner id), in the engine's [`IdempotencyStore`],
//!   shared by every gateway replica. An invalid body is a 400 and stores
//!   nothing, so the key stays usable.
//!
//! [`IdempotencyStore`]: dronedelivery_actors::ports::IdempotencyStore
//!
//! ## Why it is safe, with a store that only has `put_if_absent`
//! The answer to a create is fully determined by the request and the
//! delivery id, so the record stored under the key (a fingerprint of the
//! request, the id, the status, the `Location` and the body) is written in
//! one atomic `put_if_absent` **before** the message is queued. The rule that
//! makes this sound is: *every* 202, first or replayed, is sent only after a
//! message for that delivery id is known to be queued. So:
//! 1. the winner of `put_if_absent` submits and answers 202 only if the
//!    broker accepted the message (else 503);
//! 2. a repeat first reads the delivery: if the store has it, the message was
//!    queued and processed, and the stored answer is returned; if not, the
//!    first submit may have failed, or the message is still waiting, so the
//!    repeat **submits again** with the same delivery id before answering.
//!    A retry after a failed submit is therefore never stuck with an answer
//!    for a message that does not exist.
//! 3. Submitting twice is harmless because both messages carry the same
//!    delivery id and the workflow's create is idempotent by id (the second
//!    finds the delivery and does nothing; messages of one delivery are
//!    handled in order). Concurrent first requests resolve the same way: one
//!    wins the key, the others replay its answer, at worst after queueing a
//!    duplicate that is ignored.
//!
//! The id itself is derived from the key (UUIDv5 over the owner and the key,
//! see [`delivery_id`]) rather than random, as a second line of defence: if
//! the key store loses the key (an in-memory store restarted, an eviction),
//! a retry still maps to the same delivery and is de-duplicated by the
//! workflow. The flip side is that a key must not be reused for a new
//! delivery of the same owner even after it expired (the IETF draft already
//! forbids reuse); such a request would be answered 202 for the old
//! delivery's id.

use std::time::Duration;

use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Set to `true` on an answer replayed from the store.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 200;

/// How long a key is remembered.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The `Idempotency-Key` of a request, if it has one: 400 unless it is one
/// header of 1 to [`MAX_KEY_LEN`] visible ASCII characters.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::BadRequest(format!(
            "Idempotency-Key must be sent once, with 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(invalid());
    }
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| invalid())
}

/// The store key of `owner_id`'s idempotency key `key`: named after the
/// delivery id they make, so that keys are per owner and of bounded length.
pub fn store_key(owner_id: &str, key: &str) -> String {
    format!("deliveryrequests:{}", delivery_id(owner_id, key))
}

/// The delivery id of a keyed request: UUIDv5 (in a namespace of our own)
/// over the owner and the key, so that it is the same on every replica and
/// after the key store lost the key.
pub fn delivery_id(owner_id: &str, key: &str) -> String {
    let namespace = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        b"urn:dronedelivery:idempotency:deliveryrequests",
    );
    let name = format!("{}\n{owner_id}\n{key}", owner_id.len());
    uuid::Uuid::new_v5(&namespace, name.as_bytes()).to_string()
}

/// Writes `value` as JSON with object keys sorted, whatever the `serde_json`
/// features, so equal documents always give the same bytes.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// SHA-256 (hex) of the canonical form of a validated request, to tell a
/// repeat from a different request under the same key.
pub fn fingerprint(request: &Value) -> String {
    let mut text = String::new();
    canonical(request, &mut text);
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What is stored under a key: the request's fingerprint and the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredAnswer {
    /// [`fingerprint`] of the request that set the key.
    pub fingerprint: String,
    /// The delivery the key stands for.
    pub delivery_id: String,
    /// HTTP status of the answer.
    pub status: u16,
    /// `Location` of the answer.
    pub location: String,
    /// Body of the answer.
    pub body: Value,
}

impl StoredAnswer {
    /// The stored value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored value; an undecodable one is a 500 (corrupt store).
    pub fn from_json(text: &str) -> Result<Self, ApiError> {
        serde_json::from_str(text)
            .map_err(|e| ApiError::Internal(format!("undecodable idempotency record: {e}")))
    }

    /// The answer, with `Idempotent-Replayed: true` when `replayed`.
    pub fn response(&self, replayed: bool) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::ACCEPTED);
        let mut response = (status, Json(self.body.clone())).into_response();
        if let Ok(location) = HeaderValue::from_str(&self.location) {
            response.headers_mut().insert(LOCATION, location);
        }
        if replayed {
            response.headers_mut().insert(
                HeaderName::from_static(IDEMPOTENT_REPLAYED),
                HeaderValue::from_static("true"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.append(IDEMPOTENCY_KEY, v);
            }
        }
        h
    }

    #[test]
    fn validates_the_key() {
        assert_eq!(key(&headers(&[])).ok(), Some(None));
        assert_eq!(
            key(&headers(&[&b"abc-123_\"x\""[..]])).ok(),
            Some(Some("abc-123_\"x\"".into()))
        );
        let long = [b'k'; MAX_KEY_LEN];
        assert!(key(&headers(&[&long[..]])).is_ok());
        let too_long = [b'k'; MAX_KEY_LEN + 1];
        for bad in [
            &b""[..],
            &b"a b"[..],
            &b"a\tb"[..],
            &too_long[..],
            "é".as_bytes(),
        ] {
            assert!(
                key(&headers(&[bad])).is_err_and(|e| e.status() == StatusCode::BAD_REQUEST),
                "{bad:?}"
            );
        }
        assert!(key(&headers(&[&b"a"[..], &b"a"[..]])).is_err());
    }

    #[test]
    fn ids_are_deterministic_per_owner_and_key() {
        let a = delivery_id("o1", "k1");
        assert_eq!(a, delivery_id("o1", "k1"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
        assert_ne!(a, delivery_id("o2", "k1"));
        assert_ne!(a, delivery_id("o1", "k2"));
        // The length prefix keeps ("a\nb", "c") and ("a", "b\nc") apart.
        assert_ne!(delivery_id("a\nb", "c"), delivery_id("a", "b\nc"));
    }

    #[test]
    fn store_keys_are_per_owner_and_bounded() {
        assert_eq!(store_key("o1", "k1"), store_key("o1", "k1"));
        assert_ne!(store_key("o1", "k1"), store_key("o2", "k1"));
        let long = "o".repeat(10_000);
        assert!(store_key(&long, "k1").len() < 64);
    }

    #[test]
    fn fingerprints_ignore_key_order_only() {
        let a = fingerprint(&json!({"a": 1, "b": {"y": [1, 2], "x": "s"}}));
        assert_eq!(
            a,
            fingerprint(&json!({"b": {"x": "s", "y": [1, 2]}, "a": 1}))
        );
        assert_eq!(a.len(), 64);
        assert_ne!(
            a,
            fingerprint(&json!({"a": 1, "b": {"x": "s", "y": [2, 1]}}))
        );
        assert_ne!(
            a,
            fingerprint(&json!({"a": "1", "b": {"x": "s", "y": [1, 2]}}))
        );
    }

    #[tokio::test]
    async fn replays_the_stored_answer() {
        let stored = StoredAnswer {
            fingerprint: "f".into(),
            delivery_id: "d".into(),
            status: 202,
            location: "/api/deliveries/d".into(),
            body: json!({"deliveryId": "d"}),
        };
        let again = StoredAnswer::from_json(&stored.to_json()).ok();
        assert_eq!(again.as_ref(), Some(&stored));
        let r = stored.response(true);
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(
            r.headers().get(LOCATION).and_then(|v| v.to_str().ok()),
            Some("/api/deliveries/d")
        );
        assert_eq!(
            r.headers()
                .get(IDEMPOTENT_REPLAYED)
                .and_then(|v| v.to_str().ok()),
            Some("true")
        );
        assert!(stored
            .response(false)
            .headers()
            .get(IDEMPOTENT_REPLAYED)
            .is_none());
    }
}
