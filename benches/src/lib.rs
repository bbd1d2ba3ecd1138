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

const STREETS: &[&str] = &[
    "Pine St",
    "Pike St",
    "Union St",
    "Madison St",
    "Main St",
    "Broadway",
    "Aurora Ave N",
    "Rainier Ave S",
    "NE 45th St",
    "Market St",
    "Bellevue Way NE",
    "Mercer St",
    "Denny Way",
    "Fremont Ave N",
    "California Ave SW",
    "Lake City Way NE",
];
const CITIES: &[&str] = &["Seattle", "Bellevue", "Redmond", "Kirkland", "Renton"];
const SIZES: &[&str] = &["Small", "Medium", "Large"];

fn address(n: usize) -> String {
    // Free text: the engine maps it deterministically to a point in the
    // service area, so different texts are different places.
    let number = 100 + (n * 7919) % 9900;
    let street = STREETS[(n / 7) % STREETS.len()];
    let city = CITIES[(n / 3) % CITIES.len()];
    format!("{number} {street}, {city}")
}

/// Delivery request `i` of a run tagged `tag`, as `loadgen` posts it and
/// `store_limit pipeline` queues it: the original's example request with a
/// unique package id, varied pickup and drop-off text, size (a third each
/// of `Small`, `Medium`, `Large`), weight (1 to 20 kg) and urgency (every
/// other one expedited), for `owner` (else 100 owners in turn).
pub fn delivery_request(tag: &str, i: usize, owner: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "confirmationRequired": "None",
        "deadline": "",
        "dropOffLocation": address(i.wrapping_mul(31).wrapping_add(17)),
        "expedited": i % 2 == 0,
        "ownerId": owner.map_or_else(|| format!("owner{}", i % 100), str::to_owned),
        "packageInfo": {
            "packageId": format!("{tag}-{i}"),
            "size": SIZES[i % SIZES.len()],
            "tag": format!("tag{}", i % 10),
            "weight": 1 + i % 20,
        },
        "pickupLocation": address(i),
        "pickupTime": "2019-05-08T20:00:00.000Z",
    })
}
