//! Helpers shared by the integration tests that use a real Redis, and the
//! counts the fault scenarios report ([`tally`]).
#![allow(dead_code)]

use dronedelivery_engine::adapters::redis::Keys;

pub mod tally;

/// The server the tests use (`REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A plain connection for inspecting what the adapters wrote.
pub async fn raw(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// Deletes every key under `prefix` (SCAN + DEL).
pub async fn cleanup(url: &str, prefix: &str) {
    let mut c = raw(url).await;
    let pattern = Keys::new(prefix).pattern();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .expect("SCAN");
        if !keys.is_empty() {
            ::redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut c)
                .await
                .expect("DEL");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
