//! Shared Access Signature tokens: signing (the adapter's own requests) and
//! verification (the double: compiled with the `test-support` feature and
//! in unit tests only).
//!
//! A token is `SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={policy}`
//! where `sr` is the form-url-encoded resource URI, `se` the expiry in Unix
//! seconds and `sig` the form-url-encoded base64 of
//! HMAC-SHA256(key, `sr + "\n" + se`). The key is the UTF-8 bytes of the
//! policy key *string* as shown in the portal (it is not base64-decoded).
//!
//! `azure_core::hmac::hmac_sha256` base64-decodes its key argument, so the
//! policy key is base64-*encoded* once before being handed to it, exactly as
//! `azure_messaging_servicebus::QueueClient::new` does; the same helper thus
//! serves the crate, this module and the double.

use std::time::Duration;

use azure_core::auth::Secret;

/// The key in the form `azure_core::hmac::hmac_sha256` expects.
pub(crate) fn signing_secret(policy_key: &str) -> Secret {
    Secret::new(azure_core::base64::encode(policy_key))
}

/// Form-url-encodes like `url::form_urlencoded::byte_serialize` (which the
/// crate uses for `sr` and `sig`): ASCII alphanumerics and `*-._` stay,
/// space becomes `+`, every other byte `%XX`.
pub(crate) fn form_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes and `+`; `None` on a malformed escape or non-UTF-8.
#[cfg(any(test, feature = "test-support"))]
pub(crate) fn form_urldecode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn signature(encoded_sr: &str, se: i64, key: &Secret) -> azure_core::Result<String> {
    azure_core::hmac::hmac_sha256(&format!("{encoded_sr}\n{se}"), key)
}

/// A token for `resource_uri` valid for `ttl`.
pub(crate) fn token(
    resource_uri: &str,
    policy_name: &str,
    key: &Secret,
    ttl: Duration,
) -> azure_core::Result<String> {
    let sr = form_urlencode(resource_uri);
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let se = chrono::Utc::now().timestamp().saturating_add(ttl);
    let sig = signature(&sr, se, key)?;
    Ok(format!(
        "SharedAccessSignature sr={sr}&sig={}&se={se}&skn={}",
        form_urlencode(&sig),
        form_urlencode(policy_name)
    ))
}

/// The policy name (`skn`) of an `Authorization` header value, decoded.
#[cfg(any(test, feature = "test-support"))]
pub(crate) fn policy_of(authorization: Option<&str>) -> Option<String> {
    let params = authorization?.strip_prefix("SharedAccessSignature ")?;
    params
        .trim()
        .split('&')
        .find_map(|pair| pair.strip_prefix("skn="))
        .and_then(form_urldecode)
}

/// Checks an `Authorization` header value the way the service does: the
/// scheme, the policy name, the signature, the expiry, and that the signed
/// resource covers `request_path` (compared by path, so that a token signed
/// for `https://ns.servicebus.windows.net/q` is accepted by a double that
/// the request was redirected to). Returns why it is refused.
#[cfg(any(test, feature = "test-support"))]
pub(crate) fn verify(
    authorization: Option<&str>,
    policy_name: &str,
    key: &Secret,
    request_path: &str,
    now_unix: i64,
) -> Result<(), String> {
    let Some(header) = authorization else {
        return Err("MissingToken: the authorization header was not provided".into());
    };
    let Some(params) = header.strip_prefix("SharedAccessSignature ") else {
        return Err(
            "InvalidSignature: the token does not use the SharedAccessSignature scheme".into(),
        );
    };
    let mut sr = None;
    let mut sig = None;
    let mut se = None;
    let mut skn = None;
    for pair in params.trim().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sr" => sr = Some(v),
            "sig" => sig = Some(v),
            "se" => se = Some(v),
            "skn" => skn = Some(v),
            _ => {}
        }
    }
    let (Some(sr), Some(sig), Some(se), Some(skn)) = (sr, sig, se, skn) else {
        return Err("InvalidSignature: the token lacks one of sr, sig, se, skn".into());
    };
    if form_urldecode(skn).as_deref() != Some(policy_name) {
        return Err("InvalidSignature: unknown shared access policy".into());
    }
    let se: i64 = se
        .parse()
        .map_err(|_| "InvalidSignature: se is not a number".to_owned())?;
    if se <= now_unix {
        return Err("ExpiredToken: the token has expired".into());
    }
    let expected = signature(sr, se, key).map_err(|e| format!("InvalidSignature: {e}"))?;
    let given = form_urldecode(sig).unwrap_or_default();
    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err("InvalidSignature: the token has an invalid signature".into());
    }
    let resource = form_urldecode(sr).unwrap_or_default();
    let resource_path = resource_path(&resource);
    let covered = request_path
        .to_ascii_lowercase()
        .starts_with(&resource_path.to_ascii_lowercase());
    if !covered {
        return Err(format!(
            "InvalidAudience: the token is for '{resource_path}', not '{request_path}'"
        ));
    }
    Ok(())
}

/// The path of a resource URI (`https://host/a/b?x` → `/a/b`), without a
/// trailing slash; the whole namespace (`""`) when it has none.
#[cfg(any(test, feature = "test-support"))]
fn resource_path(uri: &str) -> String {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/').to_owned()
}

#[cfg(any(test, feature = "test-support"))]
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";

    #[test]
    fn encodes_like_form_urlencoded() {
        assert_eq!(
            form_urlencode("https://ns.servicebus.windows.net/q?timeout=1"),
            "https%3A%2F%2Fns.servicebus.windows.net%2Fq%3Ftimeout%3D1"
        );
        assert_eq!(form_urlencode("a b+/="), "a+b%2B%2F%3D");
        assert_eq!(form_urldecode("a+b%2B%2F%3D").as_deref(), Some("a b+/="));
        assert_eq!(form_urldecode("%zz"), None);
    }

    #[test]
    fn a_signed_token_verifies_and_tampering_is_refused() {
        let key = signing_secret(KEY);
        let t = token(
            "https://ns.servicebus.windows.net/q",
            "Listen",
            &key,
            Duration::from_secs(60),
        )
        .expect("sign");
        let now = chrono::Utc::now().timestamp();
        assert_eq!(
            verify(Some(&t), "Listen", &key, "/q/messages/head", now),
            Ok(())
        );
        assert!(verify(Some(&t), "Send", &key, "/q/messages", now).is_err());
        assert!(verify(
            Some(&t),
            "Listen",
            &signing_secret("other"),
            "/q/messages",
            now
        )
        .is_err());
        assert!(verify(Some(&t), "Listen", &key, "/other/messages", now).is_err());
        assert!(
            verify(Some(&t), "Listen", &key, "/q", now + 3600).is_err(),
            "expired"
        );
        assert!(verify(None, "Listen", &key, "/q", now).is_err());
        assert!(verify(Some("Bearer abc"), "Listen", &key, "/q", now).is_err());
    }

    #[test]
    fn matches_the_crate_signature_scheme() {
        // The crate signs sr = form-urlencoded request URL with the same
        // helper; a token built that way must verify for its own path.
        let key = signing_secret(KEY);
        let url = "https://ns.servicebus.windows.net/q/messages/head?timeout=5";
        let sr = form_urlencode(url);
        let se = chrono::Utc::now().timestamp() + 60;
        let sig = signature(&sr, se, &key).expect("sign");
        let header = format!(
            "SharedAccessSignature sr={sr}&sig={}&se={se}&skn=p",
            form_urlencode(&sig)
        );
        assert_eq!(
            verify(Some(&header), "p", &key, "/q/messages/head", se - 30),
            Ok(())
        );
    }
}
