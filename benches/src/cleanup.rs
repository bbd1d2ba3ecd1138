//! Removes what a benchmark run left in Redis (every key under its prefix)
//! and MongoDB (its database).

use anyhow::Context as _;
use dronedelivery_engine::adapters::redis::Keys;

/// Deletes every key under `prefix`; returns how many.
pub async fn redis(url: &str, prefix: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url).context("redis URL")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connect to redis")?;
    let pattern = Keys::new(prefix).pattern();
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .context("SCAN")?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .context("UNLINK")?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// Drops the database named in `uri`.
pub async fn mongo(uri: &str) -> anyhow::Result<String> {
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .context("connect to MongoDB")?;
    let db = client
        .default_database()
        .context("the MongoDB URI names no database")?;
    let name = db.name().to_owned();
    db.drop().await.context("drop database")?;
    Ok(name)
}
