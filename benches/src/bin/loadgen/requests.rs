//! What the loads send: a fixed request, delivery requests with unique
//! package ids (bodies made before the clock starts), and package writes and
//! reads over a fixed pool of ids.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Uri};
use serde_json::json;

use crate::client::{Req, Target};
use crate::drive::{Source, Worker};

/// The same request over and over (`http` subcommand).
pub struct Fixed {
    pub method: Method,
    pub uri: Uri,
    pub body: Option<Bytes>,
}

impl Source for Fixed {
    fn classes(&self) -> &'static [&'static str] {
        &["request"]
    }

    fn next(&self, _: &mut Worker) -> Option<Req> {
        Some(Req {
            class: 0,
            method: self.method.clone(),
            uri: self.uri.clone(),
            body: self.body.clone(),
        })
    }
}

/// The owner of every delivery request (`loadgen --owner`), for an engine
/// with bearer-token authentication, where a token creates deliveries for
/// its own owner only; unset, requests spread over 100 owners.
pub static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Delivery request `i` of a run tagged `tag` (see
/// [`dronedelivery_benches::delivery_request`]), as the body sent.
pub fn delivery_body(tag: &str, i: usize) -> Bytes {
    Bytes::from(
        dronedelivery_benches::delivery_request(tag, i, OWNER.get().map(String::as_str))
            .to_string(),
    )
}

/// `POST /api/deliveryrequests` with pre-generated bodies, each used once
/// (then again from the start if the run outlasts them, which only repeats
/// package ids). With `limit`, the source ends after that many requests.
pub struct Ingest {
    uri: Uri,
    bodies: Vec<Bytes>,
    cursor: AtomicUsize,
    limit: Option<usize>,
}

impl Ingest {
    pub fn new(
        target: &Arc<Target>,
        tag: &str,
        bodies: usize,
        limit: Option<usize>,
    ) -> anyhow::Result<Self> {
        let bodies = (0..bodies.max(1)).map(|i| delivery_body(tag, i)).collect();
        Ok(Self {
            uri: target.uri("/api/deliveryrequests")?,
            bodies,
            cursor: AtomicUsize::new(0),
            limit,
        })
    }

    /// Requests handed out so far.
    pub fn used(&self) -> usize {
        self.cursor.load(Ordering::Relaxed)
    }

    pub fn bodies(&self) -> usize {
        self.bodies.len()
    }
}

impl Source for Ingest {
    fn classes(&self) -> &'static [&'static str] {
        &["post"]
    }

    fn next(&self, _: &mut Worker) -> Option<Req> {
        let i = self.cursor.fetch_add(1, Ordering::Relaxed);
        if self.limit.is_some_and(|limit| i >= limit) {
            return None;
        }
        let body = self.bodies.get(i % self.bodies.len())?.clone();
        Some(Req {
            class: 0,
            method: Method::POST,
            uri: self.uri.clone(),
            body: Some(body),
        })
    }
}

/// Which package service is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// This engine: `PUT/GET /api/packages/{id}`.
    Engine,
    /// The original Node.js package service (`benches/peers/package-node.sh`).
    Node,
}

impl Flavor {
    /// The path of package `id`.
    pub fn path(self, id: &str) -> String {
        match self {
            Self::Engine | Self::Node => format!("/api/packages/{id}"),
        }
    }

    /// The `PUT` body of a package of `weight`. The Node service stores the
    /// fields as given (its swagger spelled sizes in lower case); the engine
    /// takes `Small|Medium|Large`.
    pub fn body(self, weight: u32) -> Bytes {
        let body = match self {
            Self::Engine => json!({"size": "Small", "weight": weight, "tag": "t"}),
            Self::Node => json!({"size": "small", "weight": weight, "tag": "t"}),
        };
        Bytes::from(body.to_string())
    }
}

/// Package writes and reads: each worker alternates a `PUT` of a random id
/// from a fixed pool with a `GET` of the same id (so reads find it).
pub struct Packages {
    uris: Vec<Uri>,
    bodies: Vec<Bytes>,
}

impl Packages {
    pub fn new(
        target: &Arc<Target>,
        flavor: Flavor,
        tag: &str,
        pool: usize,
    ) -> anyhow::Result<Self> {
        let uris = (0..pool.max(1))
            .map(|i| target.uri(&flavor.path(&format!("{tag}-{i}"))))
            .collect::<anyhow::Result<_>>()?;
        // Several weights, so a PUT usually changes the stored document.
        let bodies = (1..=16).map(|w| flavor.body(w)).collect();
        Ok(Self { uris, bodies })
    }
}

impl Source for Packages {
    fn classes(&self) -> &'static [&'static str] {
        &["put", "get"]
    }

    fn next(&self, worker: &mut Worker) -> Option<Req> {
        // Pair k of this worker: PUT (even count) then GET (odd) of one id.
        let pair = worker.count / 2;
        let mix = (worker.index as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(pair.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        let mix = mix ^ (mix >> 31);
        let uri = self
            .uris
            .get((mix % self.uris.len() as u64) as usize)?
            .clone();
        if worker.count % 2 == 0 {
            let body = self
                .bodies
                .get((worker.random() % self.bodies.len() as u64) as usize)?
                .clone();
            Some(Req {
                class: 0,
                method: Method::PUT,
                uri,
                body: Some(body),
            })
        } else {
            Some(Req {
                class: 1,
                method: Method::GET,
                uri,
                body: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::Worker;

    fn target() -> Arc<Target> {
        Target::parse("http://127.0.0.1:1").unwrap()
    }

    #[test]
    fn delivery_bodies_are_valid_and_unique() {
        let a: serde_json::Value = serde_json::from_slice(&delivery_body("t", 1)).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&delivery_body("t", 2)).unwrap();
        assert_eq!(a["packageInfo"]["packageId"], "t-1");
        assert_ne!(a["packageInfo"]["packageId"], b["packageInfo"]["packageId"]);
        assert_ne!(a["pickupLocation"], b["pickupLocation"]);
        assert_ne!(a["pickupLocation"], a["dropOffLocation"]);
        assert_eq!(a["pickupTime"], "2019-05-08T20:00:00.000Z");
    }

    #[test]
    fn ingest_with_a_limit_ends() {
        let source = Ingest::new(&target(), "t", 3, Some(3)).unwrap();
        let mut w = Worker::for_test(0);
        let n = std::iter::from_fn(|| source.next(&mut w)).count();
        assert_eq!(n, 3);
    }

    #[test]
    fn packages_put_then_get_the_same_id() {
        let source = Packages::new(&target(), Flavor::Engine, "p", 100).unwrap();
        let mut w = Worker::for_test(3);
        for _ in 0..10 {
            let put = source.next(&mut w).unwrap();
            w.count += 1;
            let get = source.next(&mut w).unwrap();
            w.count += 1;
            assert_eq!((put.class, put.method), (0, Method::PUT));
            assert_eq!((get.class, get.method), (1, Method::GET));
            assert_eq!(put.uri, get.uri);
            assert!(put.uri.path().starts_with("/api/packages/p-"));
        }
    }
}
