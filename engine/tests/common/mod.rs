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
        .unwrap_or_else(|e| panic!("redis url: {e}"))
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("redis connection: {e}"))
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
            .unwrap_or_else(|e| panic!("SCAN: {e}"));
        if !keys.is_empty() {
            ::redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut c)
                .await
                .unwrap_or_else(|e| panic!("DEL: {e}"));
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
