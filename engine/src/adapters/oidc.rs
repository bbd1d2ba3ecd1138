//! OpenID Connect bearer tokens: the [`Authenticator`] behind
//! `--auth-mode jwt` (Microsoft Entra ID, or any OpenID Connect issuer).
//!
//! # What is checked
//!
//! - The token is a JWS whose header names an **asymmetric** algorithm,
//!   RS256 or ES256, and a key id (`kid`). `alg: none`, HMAC (including the
//!   old trick of signing with the issuer's *public* key as an HMAC secret)
//!   and every other algorithm are refused before any key is looked at; the
//!   algorithm must also be the one of the key it names.
//! - The signature, with the issuer's key of that `kid`.
//! - `iss` equals `--auth-issuer`, `aud` contains `--auth-audience`, `exp`
//!   is in the future and `nbf` (when present) in the past, both with
//!   `--auth-leeway-secs` of clock skew allowed.
//!
//! The token's owner is its `--auth-owner-claim` (`sub`; `oid` for Entra
//! ID) and its roles are the known values of `--auth-roles-claim` (`roles`,
//! an array or a space-separated string).
//!
//! # Keys
//!
//! The key set (JWKS) comes from `--auth-jwks-url`, or else from the
//! issuer's discovery document (`{issuer}/.well-known/openid-configuration`,
//! whose `issuer` must be the configured one). It is fetched at start (a
//! failure there is logged, not fatal: the engine serves what needs no
//! token) and cached. A token naming a `kid` the cache does not hold makes
//! the key set be fetched again, so a rotated key is picked up without a
//! restart; those refetches are at most one per [`REFETCH_EVERY`] and one
//! at a time, so tokens with made-up key ids cannot turn the engine into a
//! load generator against the issuer. When the keys cannot be fetched at
//! all the answer is `503` (the caller did nothing wrong), not `401`.
//!
//! # Verified tokens are remembered
//!
//! A client sends the same token with every request until it expires (an
//! hour, typically), and checking an RS256 signature costs more than the
//! rest of an ingestion request. So a token that passed every check is
//! remembered, by the SHA-256 of its exact text, with its identity and its
//! `exp`: the same token again is answered from memory until `exp` (plus
//! the leeway) passes. Any other text (a changed claim, another signature)
//! is another key and is checked in full. At most [`REMEMBERED`] tokens are
//! kept; expired ones are dropped when it is full, and everything when the
//! key set is fetched again, so a key the issuer withdrew stops working
//! then, as it would without the memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use dronedelivery_gateway::auth::{AuthError, Authenticator, Identity, Role};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

/// The fewest seconds between two key-set fetches caused by unknown key ids.
pub const REFETCH_EVERY: Duration = Duration::from_secs(10);
/// How long one fetch (discovery or key set) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Most verified tokens remembered.
pub const REMEMBERED: usize = 10_000;
/// The algorithms accepted: asymmetric only.
const ACCEPTED: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// Settings of bearer-token authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer (`iss`), e.g. `https://login.microsoftonline.com/{tenant}/v2.0`.
    pub issuer: String,
    /// The audience (`aud`) tokens must be for: this API's application id
    /// or URI.
    pub audience: String,
    /// Where the key set is; `None`: from the issuer's discovery document.
    pub jwks_url: Option<String>,
    /// The claim naming the owner a token speaks for (`sub`, `oid`).
    pub owner_claim: String,
    /// The claim listing the token's roles (`roles`).
    pub roles_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// One verification key of the set.
struct Key {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// When the key set was last fetched, and from where.
#[derive(Default)]
struct Fetching {
    last: Option<Instant>,
    jwks_url: Option<String>,
}

/// Checks tokens against an OpenID Connect issuer's keys.
pub struct OidcAuthenticator {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, Arc<Key>>>>,
    fetching: tokio::sync::Mutex<Fetching>,
    /// Verified tokens by the SHA-256 of their text: identity and `exp`.
    verified: std::sync::Mutex<HashMap<[u8; 32], (Identity, i64)>>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

fn unavailable(what: impl std::fmt::Display) -> AuthError {
    AuthError::KeysUnavailable(what.to_string())
}

fn invalid(why: impl Into<String>) -> AuthError {
    AuthError::InvalidToken(why.into())
}

impl OidcAuthenticator {
    /// An authenticator for `settings`, with its key set fetched once (a
    /// failure is logged; the next token with a key id tries again).
    ///
    /// # Errors
    /// Only when the HTTP client cannot be built.
    pub async fn start(settings: OidcSettings) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?;
        let this = Arc::new(Self {
            settings,
            http,
            keys: RwLock::new(Arc::new(HashMap::new())),
            fetching: tokio::sync::Mutex::new(Fetching::default()),
            verified: std::sync::Mutex::new(HashMap::new()),
        });
        match this.fetch(&mut *this.fetching.lock().await).await {
            Ok(n) => {
                tracing::info!(issuer = %this.settings.issuer, keys = n, "token signing keys fetched")
            }
            Err(e) => {
                tracing::warn!(issuer = %this.settings.issuer, error = %e, "could not fetch the token signing keys; tokens are refused with 503 until they can be")
            }
        }
        Ok(this)
    }

    fn cached(&self, kid: &str) -> Option<Arc<Key>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    /// The key `kid`, fetching the key set again if it is unknown and the
    /// last fetch is old enough.
    async fn key(&self, kid: &str) -> Result<Arc<Key>, AuthError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let mut fetching = self.fetching.lock().await;
        // Fetched by another request while this one waited?
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        if fetching.last.is_some_and(|at| at.elapsed() < REFETCH_EVERY) {
            return Err(invalid("the token is signed with an unknown key"));
        }
        self.fetch(&mut fetching).await?;
        self.cached(kid)
            .ok_or_else(|| invalid("the token is signed with an unknown key"))
    }

    /// Fetches the key set (after discovery, the first time, when no URL
    /// was configured) and replaces the cache; the number of usable keys.
    async fn fetch(&self, fetching: &mut Fetching) -> Result<usize, AuthError> {
        fetching.last = Some(Instant::now());
        let url = match (&self.settings.jwks_url, &fetching.jwks_url) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => {
                let url = self.discover().await?;
                fetching.jwks_url = Some(url.clone());
                url
            }
        };
        let set: JwkSet = self.get_json(&url).await?;
        let keys: HashMap<String, Arc<Key>> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
                    (Some(KeyAlgorithm::RS256), _) => Algorithm::RS256,
                    (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
                    (Some(_), _) => return None,
                    (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                    (None, AlgorithmParameters::EllipticCurve(ec))
                        if ec.curve == EllipticCurve::P256 =>
                    {
                        Algorithm::ES256
                    }
                    (None, _) => return None,
                };
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, Arc::new(Key { algorithm, key })))
            })
            .collect();
        let n = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        // A withdrawn key's tokens must not outlive it in memory.
        self.remembered().clear();
        Ok(n)
    }

    /// The key set URL of the issuer's discovery document.
    async fn discover(&self) -> Result<String, AuthError> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let doc: Discovery = self
            .get_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        if doc.issuer.trim_end_matches('/') != issuer {
            return Err(unavailable(format!(
                "the discovery document names the issuer '{}', not '{issuer}'",
                doc.issuer
            )));
        }
        Ok(doc.jwks_uri)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, AuthError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(format!("GET {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("GET {url}: {}", response.status())));
        }
        response
            .json()
            .await
            .map_err(|e| unavailable(format!("GET {url}: {e}")))
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Identity, i64)>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a token expiring at `exp` is still valid at `now`, with the
    /// leeway (epoch seconds).
    fn unexpired(&self, exp: i64, now: i64) -> bool {
        let leeway = i64::try_from(self.settings.leeway.as_secs()).unwrap_or(i64::MAX);
        now <= exp.saturating_add(leeway)
    }

    /// The identity of a token verified before and not expired since.
    fn recall(&self, digest: &[u8; 32], now: i64) -> Option<Identity> {
        self.remembered()
            .get(digest)
            .filter(|(_, exp)| self.unexpired(*exp, now))
            .map(|(identity, _)| identity.clone())
    }

    fn remember(&self, digest: [u8; 32], identity: Identity, exp: i64, now: i64) {
        let mut remembered = self.remembered();
        if remembered.len() >= REMEMBERED {
            remembered.retain(|_, (_, e)| self.unexpired(*e, now));
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert(digest, (identity, exp));
    }

    fn identity(&self, claims: &Map<String, Value>) -> Identity {
        let owner = claims
            .get(&self.settings.owner_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let roles = match claims.get(&self.settings.roles_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .filter_map(Role::parse)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().filter_map(Role::parse).collect(),
            _ => Default::default(),
        };
        Identity { owner, roles }
    }
}

#[async_trait]
impl Authenticator for OidcAuthenticator {
    async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        if let Some(identity) = self.recall(&digest, now) {
            return Ok(identity);
        }
        let header = decode_header(token).map_err(|_| {
            invalid("the token is not a JWT signed with an accepted algorithm (RS256 or ES256)")
        })?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(invalid(format!(
                "the algorithm {:?} is not accepted (RS256 or ES256)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| invalid("the token names no signing key (kid)"))?;
        let key = self.key(&kid).await?;
        if key.algorithm != header.alg {
            return Err(invalid("the token's algorithm is not its key's"));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway.as_secs();
        let data = decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| invalid(reason(e.kind())))?;
        let identity = self.identity(&data.claims);
        if let Some(exp) = data.claims.get("exp").and_then(Value::as_i64) {
            self.remember(digest, identity.clone(), exp, now);
        }
        Ok(identity)
    }
}

/// What a client is told about a refused token.
fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidIssuer => "the token is from another issuer".into(),
        K::InvalidAudience => "the token is for another audience".into(),
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::MissingRequiredClaim(claim) => format!("the token has no '{claim}' claim"),
        K::InvalidAlgorithm => "the token's algorithm is not its key's".into(),
        _ => "the token cannot be read".into(),
    }
}
