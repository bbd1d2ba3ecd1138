//! Benchmarks of the drone delivery engine.
//!
//! `benches/hot_paths.rs` holds criterion micro-benchmarks of the hot paths
//! (request validation and serialisation, location mapping, a queue round
//! trip). Run them with `cargo bench -p dronedelivery-benches`; results and
//! the machine they were measured on are recorded in `BENCHMARKS.md`.
//!
//! [`cleanup`] removes what a run left in the stores; `loadgen cleanup` and
//! `store_limit pipeline` both use it.

pub mod cleanup;

/// The original system's example delivery request, the payload every
/// benchmark starts from.
pub fn ri_example() -> serde_json::Value {
    serde_json::json!({
       "confirmationRequired": "None",
       "deadline": "",
       "dropOffLocation": "drop off",
       "expedited": true,
       "ownerId": "myowner",
       "packageInfo": {"packageId": "mypackage", "size": "Small", "tag": "mytag", "weight": 10},
       "pickupLocation": "my pickup",
       "pickupTime": "2019-05-08T20:00:00.000Z"
    })
}
