//! The billing queries, answered from the history of finished deliveries:
//!
//! - `GET /api/dronedeliveries/utilization`: drone utilisation of an owner
//!   in a month, the original DroneScheduler service's query (ri-spec §1.4),
//!   rather than a Cosmos DB collection filled by a bulk-import tool;
//! - `GET /api/packages/summary/{ownerId}?year=&month=`: the total weight of
//!   the owner's packages delivered that month (the original Package
//!   service answered a stub, `{"totalWeight":400}`);
//! - `GET /api/deliveries/summary?ownerId=&year=&month=`: how many of the
//!   owner's deliveries were completed, and cancelled, that month (the
//!   original Delivery service answered a random count).
//!
//! All three take the month as `year` and `month` (UTC calendar month) and
//! answer `400` naming each missing or invalid parameter.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use dronedelivery_actors::domain::{FieldError, ValidationError};
use dronedelivery_actors::ports::Utilization;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, InternalError, Problem, ServiceUnavailable};
use crate::state::AppState;

/// Route of the utilisation API, with its documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(utilization))
        .routes(routes!(package_summary))
        .routes(routes!(delivery_summary))
}

/// The validated query.
#[derive(Debug, PartialEq)]
struct UtilizationQuery {
    owner_id: String,
    year: i32,
    month: u32,
}

/// A query parameter by name, case-insensitively (ASP.NET model binding
/// matched query names that way).
fn param<'a>(query: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    query
        .get(name)
        .or_else(|| {
            query
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .map(|v| v.trim())
}

/// Validates `ownerId` (non-empty), `year` (≥ 1) and `month` (1 to 12),
/// reporting every bad parameter by name.
fn parse(query: &HashMap<String, String>) -> Result<UtilizationQuery, ValidationError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: &str| {
        errors.push(FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        });
    };
    let owner_id = match param(query, "ownerId") {
        Some(o) if !o.is_empty() => o.to_owned(),
        _ => {
            fail("ownerId", "is required");
            String::new()
        }
    };
    let year = match param(query, "year").map(str::parse::<i32>) {
        Some(Ok(y)) if y >= 1 => y,
        Some(Ok(_)) => {
            fail("year", "must be 1 or more");
            0
        }
        Some(Err(_)) => {
            fail("year", "must be an integer");
            0
        }
        None => {
            fail("year", "is required");
            0
        }
    };
    let month = match param(query, "month").map(str::parse::<u32>) {
        Some(Ok(m)) if (1..=12).contains(&m) => m,
        Some(_) => {
            fail("month", "must be an integer from 1 to 12");
            0
        }
        None => {
            fail("month", "is required");
            0
        }
    };
    if errors.is_empty() {
        Ok(UtilizationQuery {
            owner_id,
            year,
            month,
        })
    } else {
        Err(ValidationError { errors })
    }
}

/// `GET /api/dronedeliveries/utilization?ownerId=&year=&month=`: 200
/// `{"traveledMiles","assignedHours"}` summed over the owner's deliveries
/// finished in that calendar month (UTC); 404 when both are zero, as in the
/// original; 400 naming each missing or invalid parameter.
#[utoipa::path(
    get,
    path = "/api/dronedeliveries/utilization",
    operation_id = "getDroneUtilization",
    tag = "utilization",
    summary = "Drone utilisation of an owner in a month",
    description = "Miles flown and hours drones were assigned, summed over the owner's \
deliveries that ended in that calendar month (UTC). Parameter names are case-insensitive.",
    params(
        ("ownerId" = String, Query, min_length = 1,
            pattern = "[^\\t-\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]",
            description = "The owner (not blank)"),
        ("year" = i32, Query, minimum = 1, description = "Year"),
        ("month" = u32, Query, minimum = 1, maximum = 12, description = "Month, 1 to 12")
    ),
    responses(
        (status = 200, description = "The utilisation", body = Utilization),
        (status = 400, description = "A missing or invalid parameter (each listed in `errors`)",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No utilisation for that owner and month (both sums are zero)",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn utilization(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Utilization>, ApiError> {
    let q = parse(&query)?;
    caller.must_read_owner(&q.owner_id)?;
    let used = state
        .engine
        .utilization(&q.owner_id, q.year, q.month)
        .await?;
    if used.traveled_miles == 0.0 && used.assigned_hours == 0.0 {
        return Err(ApiError::NotFound(format!(
            "no drone utilization for owner {} in {:04}-{:02}",
            q.owner_id, q.year, q.month
        )));
    }
    Ok(Json(used))
}

/// `GET /api/packages/summary/{ownerId}`: `{"totalWeight": …}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackageSummary {
    /// Total weight of the owner's packages delivered (completed) in the
    /// month; 0 when none.
    #[schema(example = 42.5)]
    pub total_weight: f64,
}

/// `GET /api/deliveries/summary`: `{"count": …, "completed": …, "cancelled": …}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySummary {
    /// Deliveries completed in the month (what is invoiced; the original's
    /// field).
    #[schema(example = 12)]
    pub count: u64,
    /// The same as `count`, named.
    #[schema(example = 12)]
    pub completed: u64,
    /// Deliveries cancelled in the month.
    #[schema(example = 1)]
    pub cancelled: u64,
}

/// `GET /api/packages/summary/{ownerId}?year=&month=`.
#[utoipa::path(
    get,
    path = "/api/packages/summary/{ownerId}",
    operation_id = "getPackageSummary",
    tag = "packages",
    summary = "Total weight an owner had delivered in a month",
    description = "The weight of the packages of the owner's deliveries completed in that \
calendar month (UTC), from the delivery history; 0 when there are none. Parameter names are \
case-insensitive.",
    params(
        ("ownerId" = String, Path, min_length = 1,
            pattern = "[^\\t-\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]",
            description = "The owner (not blank)"),
        ("year" = i32, Query, minimum = 1, description = "Year"),
        ("month" = u32, Query, minimum = 1, maximum = 12, description = "Month, 1 to 12")
    ),
    responses(
        (status = 200, description = "The total", body = PackageSummary),
        (status = 400, description = "A missing or invalid parameter (each listed in `errors`)",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn package_summary(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(owner_id): axum::extract::Path<String>,
    Query(mut query): Query<HashMap<String, String>>,
) -> Result<Json<PackageSummary>, ApiError> {
    query.retain(|k, _| !k.eq_ignore_ascii_case("ownerId"));
    query.insert("ownerId".into(), owner_id);
    let q = parse(&query)?;
    caller.must_read_owner(&q.owner_id)?;
    let summary = state
        .engine
        .month_summary(&q.owner_id, q.year, q.month)
        .await?;
    Ok(Json(PackageSummary {
        total_weight: summary.total_weight,
    }))
}

/// `GET /api/deliveries/summary?ownerId=&year=&month=`.
#[utoipa::path(
    get,
    path = "/api/deliveries/summary",
    operation_id = "getDeliverySummary",
    tag = "deliveries",
    summary = "How many deliveries an owner had in a month",
    description = "The owner's deliveries completed (`count`, `completed`) and cancelled in that \
calendar month (UTC), from the delivery history; zeros when there are none. Parameter names are \
case-insensitive.",
    params(
        ("ownerId" = String, Query, min_length = 1,
            pattern = "[^\\t-\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]",
            description = "The owner (not blank)"),
        ("year" = i32, Query, minimum = 1, description = "Year"),
        ("month" = u32, Query, minimum = 1, maximum = 12, description = "Month, 1 to 12")
    ),
    responses(
        (status = 200, description = "The counts", body = DeliverySummary),
        (status = 400, description = "A missing or invalid parameter (each listed in `errors`)",
            body = Problem, content_type = "application/problem+json"),
        (status = 500, response = InternalError),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn delivery_summary(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<DeliverySummary>, ApiError> {
    let q = parse(&query)?;
    caller.must_read_owner(&q.owner_id)?;
    let summary = state
        .engine
        .month_summary(&q.owner_id, q.year, q.month)
        .await?;
    Ok(Json(DeliverySummary {
        count: summary.completed,
        completed: summary.completed,
        cancelled: summary.cancelled,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn fields(r: Result<UtilizationQuery, ValidationError>) -> Vec<String> {
        r.err()
            .map(|e| e.errors.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn accepts_a_valid_query_case_insensitively() {
        assert_eq!(
            parse(&query(&[
                ("OwnerId", "o1"),
                ("YEAR", "2024"),
                ("month", "12")
            ]))
            .ok(),
            Some(UtilizationQuery {
                owner_id: "o1".into(),
                year: 2024,
                month: 12
            })
        );
    }

    #[test]
    fn names_every_bad_parameter() {
        assert_eq!(fields(parse(&query(&[]))), ["ownerId", "year", "month"]);
        assert_eq!(
            fields(parse(&query(&[
                ("ownerId", " "),
                ("year", "0"),
                ("month", "13")
            ]))),
            ["ownerId", "year", "month"]
        );
        assert_eq!(
            fields(parse(&query(&[
                ("ownerId", "o"),
                ("year", "x"),
                ("month", "0")
            ]))),
            ["year", "month"]
        );
        assert_eq!(
            fields(parse(&query(&[
                ("ownerId", "o"),
                ("year", "2024"),
                ("month", "May")
            ]))),
            ["month"]
        );
    }
}
