//! The HTTP API: health, metrics, and the JSON API for units, latest values and history (alarms
//! in `alarms::api`).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::{
    history::{self, Bucket, DroppedSpan, HistoryError, QUALITY_NAME, Rows},
    metrics::Metrics,
};

/// What request handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The bearer token the JSON API requires.
    pub api_token: Arc<str>,
    /// The alarm engine, told when rules change.
    pub alarms: crate::alarms::Alarms,
    /// Paging: providers, link secret, public URL.
    pub paging: crate::paging::Paging,
}

/// The one error type of the API. Each variant documents its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no or a wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 404: no such unit or point.
    #[error("not found")]
    NotFound,
    /// 400: the request's parameters are invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 409: the request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// 503: the database failed; logged, never shown to the client.
    #[error("database unavailable")]
    Database(#[from] sqlx::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Database(error) => {
                tracing::error!(%error, "database error while serving a request");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/units", get(list_units))
        .route("/units/{unit_id}", get(unit_detail))
        .route("/units/{unit_id}/history", get(unit_history))
        .route("/points/{point_id}/history", get(point_history))
        .merge(crate::alarms::api::routes())
        .merge(crate::paging::api::routes())
        .merge(crate::tickets::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .merge(crate::paging::api::public_routes())
        .merge(crate::tickets::public_routes())
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.api_token.as_bytes()) => Ok(next.run(request).await),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Ok` when the gateway (site) exists, else 404.
pub(crate) async fn require_gateway(state: &AppState, gateway: &str) -> Result<(), ApiError> {
    let gateway = chillcloud_proto::GatewayId::new(gateway).map_err(|_| ApiError::NotFound)?;
    if crate::store::gateway_exists(&state.pool, &gateway).await? { Ok(()) } else { Err(ApiError::NotFound) }
}

async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    sqlx::query("select 1").execute(&state.pool).await?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// A unit (chiller) as listed.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct UnitSummary {
    /// Unit id.
    pub id: i64,
    /// The gateway it is behind.
    pub gateway_id: String,
    /// Its id in the gateway's configuration.
    pub device_key: String,
    /// Display name, if set.
    pub display_name: Option<String>,
    /// Device profile.
    pub profile: String,
    /// Equipment model.
    pub model: String,
    /// Text its controller reports about itself (model, serial number, firmware).
    pub attributes: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    /// Whether its gateway is connected.
    pub gateway_online: bool,
    /// When its gateway was last heard from.
    pub last_seen: Option<DateTime<Utc>>,
}

/// Selects [`UnitSummary`] rows; callers add the filter and order.
const UNIT_SUMMARY: &str = "select u.id, u.gateway_id, u.device_key, u.display_name, u.profile, u.model, u.attributes,
                                   g.online as gateway_online, g.last_seen
                            from units u join gateways g on g.id = u.gateway_id";

async fn list_units(State(state): State<AppState>) -> Result<Json<Vec<UnitSummary>>, ApiError> {
    let units = sqlx::query_as(sqlx::AssertSqlSafe(format!("{UNIT_SUMMARY} order by u.gateway_id, u.device_key")))
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(units))
}

/// A point with its latest reading.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct PointLatest {
    /// Point id, for the history endpoint.
    pub id: i64,
    /// Point name.
    pub name: String,
    /// Engineering unit.
    pub unit: String,
    /// Whether it accepts remote writes.
    pub writable: bool,
    /// Latest value, if any (none when the last read failed).
    pub value: Option<f64>,
    /// Quality of the latest reading: `good`, `bad` or `uncertain`.
    pub quality: Option<String>,
    /// When the latest reading was taken.
    pub ts: Option<DateTime<Utc>>,
}

/// A unit with its points' latest values.
#[derive(Debug, Serialize, Deserialize)]
pub struct UnitDetail {
    /// The unit.
    #[serde(flatten)]
    pub unit: UnitSummary,
    /// Its points.
    pub points: Vec<PointLatest>,
}

async fn unit_detail(State(state): State<AppState>, Path(unit_id): Path<i64>) -> Result<Json<UnitDetail>, ApiError> {
    let unit: UnitSummary = sqlx::query_as(sqlx::AssertSqlSafe(format!("{UNIT_SUMMARY} where u.id = $1")))
        .bind(unit_id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound)?;
    let points = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select p.id, p.name, p.unit_of_measure as unit, p.writable, l.value, {QUALITY_NAME} as quality, l.ts
         from points p left join latest_readings l on l.point_id = p.id
         where p.unit_id = $1 order by p.id"
    )))
    .bind(unit_id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(UnitDetail { unit, points }))
}

/// Query parameters of the history endpoints.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// Start of the range (inclusive), RFC 3339; default one hour before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End of the range (exclusive), RFC 3339; default now.
    pub to: Option<DateTime<Utc>>,
    /// `raw`, `1m` or `1h`; chosen from the range's length when absent.
    pub bucket: Option<Bucket>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// A history response.
#[derive(Debug, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// The bucket size used.
    pub bucket: Bucket,
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
    /// Raw readings, or dense buckets where a count of 0 marks a gap.
    pub rows: Rows,
    /// Intervals the gateway reported it dropped unsent: gaps whose cause is known.
    #[serde(default)]
    pub dropped: Vec<DroppedSpan>,
}

impl From<HistoryError> for ApiError {
    fn from(error: HistoryError) -> Self {
        match error {
            HistoryError::Range(message) => ApiError::BadRequest(message),
            HistoryError::Database(error) => ApiError::Database(error),
        }
    }
}

async fn point_history(
    State(state): State<AppState>,
    Path(point_id): Path<i64>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let exists: bool = sqlx::query_scalar("select exists (select 1 from points where id = $1)")
        .bind(point_id)
        .fetch_one(&state.pool)
        .await?;
    if !exists {
        return Err(ApiError::NotFound);
    }
    history_response(&state, &[point_id], query).await
}

async fn unit_history(
    State(state): State<AppState>,
    Path(unit_id): Path<i64>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let point_ids: Vec<i64> = sqlx::query_scalar("select id from points where unit_id = $1 order by id")
        .bind(unit_id)
        .fetch_all(&state.pool)
        .await?;
    if point_ids.is_empty() {
        return Err(ApiError::NotFound);
    }
    history_response(&state, &point_ids, query).await
}

async fn history_response(state: &AppState, point_ids: &[i64], query: HistoryQuery) -> Result<Response, ApiError> {
    let to = query.to.unwrap_or_else(Utc::now);
    let from = query.from.unwrap_or(to - Duration::hours(1));
    let bucket = query.bucket.unwrap_or_else(|| Bucket::for_span(to - from));
    let rows = history::query(&state.pool, point_ids, from, to, bucket).await?;
    match query.format.as_deref() {
        None | Some("json") => {
            let dropped = history::dropped(&state.pool, point_ids, from, to).await?;
            Ok(Json(HistoryResponse { bucket, from, to, rows, dropped }).into_response())
        }
        Some("csv") => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"history.csv\""),
            ],
            history::to_csv(&rows),
        )
            .into_response()),
        Some(other) => Err(ApiError::BadRequest(format!("unknown format {other:?}: use json or csv"))),
    }
}
