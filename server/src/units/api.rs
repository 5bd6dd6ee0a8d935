//! The units API: units and their latest values, naming a unit, live readings, history.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::header,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    history::{self, Bucket, DroppedSpan, HistoryError, QUALITY_NAME, Rows},
    http::{Allowed, ApiError, AppState, ErrorBody, InLane, ManageRules, Read, body_in_lane},
    timescale::StorageMode,
};

/// Routes for viewers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_units))
        .routes(routes!(unit_detail))
        .routes(routes!(rename_unit))
        .routes(routes!(unit_history))
        .routes(routes!(unit_live))
        .routes(routes!(point_history))
}

/// A unit (chiller) as listed.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct UnitSummary {
    /// Unit id.
    pub id: i64,
    /// The gateway it is behind.
    pub gateway_id: String,
    /// Its id in the gateway's configuration.
    pub device_key: String,
    /// The name people know it by: set in the dashboard, else in its gateway's configuration;
    /// none when neither names it.
    pub display_name: Option<String>,
    /// Device profile.
    pub profile: String,
    /// The built-in profile its profile derives from, whose domain pack of rules applies.
    pub family: String,
    /// Equipment model.
    pub model: String,
    /// Text its controller reports about itself (model, serial number, firmware).
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub attributes: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    /// Whether its gateway is connected.
    pub gateway_online: bool,
    /// When its gateway was last heard from.
    pub last_seen: Option<DateTime<Utc>>,
    /// Is it OK, at a glance.
    #[sqlx(try_from = "String")]
    pub status: UnitStatus,
    /// Alarms not yet closed.
    pub open_alarms: i64,
}

text_enum! {
    /// A unit at a glance, worst first.
    pub enum UnitStatus {
        /// Its gateway or the unit does not answer, or no point has a good value.
        Offline = "offline",
        /// An alarm is active.
        Alarm = "alarm",
        /// Nothing new for 5 minutes, while snapshots come every minute.
        Stale = "stale",
        /// Its `running` point is 0.
        Stopped = "stopped",
        /// Its `running` point is not 0.
        Running = "running",
        /// Its `running` point is bad, or it has none.
        Unknown = "unknown",
    }
}

/// Selects [`UnitSummary`] rows; callers add the filter and order.
const UNIT_SUMMARY: &str = "select u.id, u.gateway_id, u.device_key,
        coalesce(u.display_name, nullif(u.gateway_display_name, '')) as display_name, u.profile, u.family, u.model,
        u.attributes, g.online as gateway_online, g.last_seen,
        case
            when not g.online then 'offline'
            when exists (select 1 from alarms a where a.unit_id = u.id and a.active and a.rule = 'device_offline')
                then 'offline'
            when not exists (select 1 from latest_readings l join points p on p.id = l.point_id
                             where p.unit_id = u.id and not p.derived and l.value is not null) then 'offline'
            when exists (select 1 from alarms a where a.unit_id = u.id and a.active) then 'alarm'
            when coalesce((select max(l.ts) from latest_readings l join points p on p.id = l.point_id
                           where p.unit_id = u.id), '-infinity') < now() - interval '5 minutes' then 'stale'
            else coalesce((select case when l.value = 0 then 'stopped' when l.value is not null then 'running' end
                           from latest_readings l join points p on p.id = l.point_id
                           where p.unit_id = u.id and p.name = 'running'), 'unknown')
        end as status,
        (select count(*) from alarms a where a.unit_id = u.id and a.closed_at is null) as open_alarms
    from units u join gateways g on g.id = u.gateway_id";

/// Which units to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UnitsQuery {
    /// Only the units behind this gateway (site).
    pub gateway: Option<String>,
}

/// Units with their gateway's online state, status at a glance and open alarms.
#[utoipa::path(
    get,
    path = "/api/v1/units",
    tag = "units",
    params(UnitsQuery),
    responses((status = 200, description = "The viewer's units", body = Vec<UnitSummary>))
)]
pub(crate) async fn list_units(
    viewer: Allowed<Read>,
    axum::extract::Query(query): axum::extract::Query<UnitsQuery>,
) -> Result<Json<Vec<UnitSummary>>, ApiError> {
    let mut tx = viewer.begin().await?;
    let units = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{UNIT_SUMMARY} where $1::text is null or u.gateway_id = $1 order by u.gateway_id, u.device_key"
    )))
    .bind(&query.gateway)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Json(units))
}

/// A point with its latest reading.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct PointLatest {
    /// Point id, for the history endpoint.
    pub id: i64,
    /// Point name.
    pub name: String,
    /// Engineering unit.
    pub unit: String,
    /// Whether it accepts remote writes (`POST /api/v1/units/{id}/commands`).
    pub writable: bool,
    /// For a writable point: the lowest value a command may set.
    pub min: Option<f64>,
    /// For a writable point: the highest value a command may set.
    pub max: Option<f64>,
    /// For a writable point: values are `min` plus a whole number of steps.
    pub step: Option<f64>,
    /// Latest value, if any (none when the last read failed).
    pub value: Option<f64>,
    /// Quality of the latest reading: `good`, `bad` or `uncertain`.
    pub quality: Option<String>,
    /// When the latest reading was taken.
    pub ts: Option<DateTime<Utc>>,
}

/// A unit with its points' latest values.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnitDetail {
    /// The unit.
    #[serde(flatten)]
    pub unit: UnitSummary,
    /// Its points.
    pub points: Vec<PointLatest>,
}

/// A unit's points with their latest values and quality.
#[utoipa::path(
    get,
    path = "/api/v1/units/{unit_id}",
    tag = "units",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    responses(
        (status = 200, description = "The unit and its points", body = UnitDetail),
        (status = 400, description = "The unit id is not a number", body = ErrorBody),
        (status = 404, description = "No such unit, or not the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn unit_detail(viewer: Allowed<Read>, Path(unit_id): Path<i64>) -> Result<Json<UnitDetail>, ApiError> {
    let mut tx = viewer.begin().await?;
    let unit: UnitSummary = sqlx::query_as(sqlx::AssertSqlSafe(format!("{UNIT_SUMMARY} where u.id = $1")))
        .bind(unit_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    let points = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select p.id, p.name, p.unit_of_measure as unit, p.writable, p.write_min as min, p.write_max as max,
                p.write_step as step, l.value, {QUALITY_NAME} as quality, l.ts
         from points p left join latest_readings l on l.point_id = p.id
         where p.unit_id = $1 order by p.id"
    )))
    .bind(unit_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Json(UnitDetail { unit, points }))
}

/// A unit's new display name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitRename {
    /// The name people know it by, up to 64 characters; null or empty goes back to the name its
    /// gateway's configuration gives (or its id).
    pub display_name: Option<String>,
}

/// Names a unit ("Chiller 2, north plant room"): the dashboard and pages show it instead of the
/// unit's id.
#[utoipa::path(
    patch,
    path = "/api/v1/units/{unit_id}",
    tag = "units",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    request_body = UnitRename,
    responses(
        (status = 200, description = "The unit as it is now", body = UnitSummary),
        (status = 400, description = "A name too long or with control characters", body = ErrorBody),
        (status = 403, description = "The viewer's role may not change unit settings", body = ErrorBody),
        (status = 404, description = "No such unit, or not the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn rename_unit(
    viewer: Allowed<ManageRules>,
    Path(unit_id): Path<i64>,
    Json(rename): Json<UnitRename>,
) -> Result<Json<UnitSummary>, ApiError> {
    let name = rename.display_name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 64 || n.chars().any(char::is_control)) {
        return Err(ApiError::BadRequest("display_name: at most 64 characters, without control characters".into()));
    }
    let mut tx = viewer.begin().await?;
    let updated = sqlx::query("update units set display_name = $2 where id = $1")
        .bind(unit_id)
        .bind(&name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(ApiError::NotFound);
    }
    let unit = sqlx::query_as(sqlx::AssertSqlSafe(format!("{UNIT_SUMMARY} where u.id = $1")))
        .bind(unit_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(unit))
}

/// How long one live stream runs before the browser must reconnect (and be checked again).
const LIVE_STREAM_LENGTH: std::time::Duration = std::time::Duration::from_secs(300);

/// A unit's readings as they are committed, as server-sent events named `reading` with data
/// `{"point_id", "value", "quality", "ts"}` (value null when bad).
#[utoipa::path(
    get,
    path = "/api/v1/units/{unit_id}/live",
    tag = "units",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    responses(
        (status = 200, description = "A stream of `reading` events; it ends after five minutes and the client reconnects",
         content_type = "text/event-stream", body = String),
        (status = 400, description = "The unit id is not a number", body = ErrorBody),
        (status = 404, description = "No such unit, or it has no points", body = ErrorBody),
    )
)]
pub(crate) async fn unit_live(
    State(state): State<AppState>,
    viewer: Allowed<Read>,
    Path(unit_id): Path<i64>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let mut tx = viewer.begin().await?;
    let points: std::collections::HashSet<i64> = sqlx::query_scalar("select id from points where unit_id = $1")
        .bind(unit_id)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    drop(tx);
    if points.is_empty() {
        return Err(ApiError::NotFound);
    }
    let place = state.live_lane.enter(&viewer.scope(), &state.metrics).await?;
    let receiver = state.live.subscribe();
    // The stream ends after a while and the browser reconnects, so access is checked again: a
    // session that ended or a site that changed hands stops the flow within that time.
    let until = tokio::time::Instant::now() + LIVE_STREAM_LENGTH;
    // The stream holds its place in the lane until it ends or its client goes.
    let batches =
        futures_util::stream::unfold((receiver, points, place), move |(mut receiver, points, place)| async move {
            loop {
                let Ok(received) = tokio::time::timeout_at(until, receiver.recv()).await else { return None };
                match received {
                    Ok(batch) => {
                        let events: Vec<Result<Event, std::convert::Infallible>> = batch
                            .iter()
                            .filter(|(point, _, _)| points.contains(point))
                            .map(|(point, ts, value)| {
                                let data = serde_json::json!({
                                    "point_id": point,
                                    "value": value,
                                    "quality": if value.is_some() { "good" } else { "bad" },
                                    "ts": DateTime::<Utc>::from_timestamp_millis(*ts),
                                });
                                Ok(Event::default().event("reading").data(data.to_string()))
                            })
                            .collect();
                        if !events.is_empty() {
                            return Some((futures_util::stream::iter(events), (receiver, points, place)));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
    Ok(Sse::new(futures_util::StreamExt::flatten(batches)).keep_alive(KeepAlive::default()))
}

/// Query parameters of the history endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Start of the range (inclusive), RFC 3339; default one hour before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End of the range (exclusive), RFC 3339; default now.
    pub to: Option<DateTime<Utc>>,
    /// `raw`, `1m` or `1h`; chosen from the range's length when absent.
    pub bucket: Option<Bucket>,
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
}

/// A history response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
            HistoryError::TooMuch(message) => ApiError::TooMuch(message),
            HistoryError::Database(error) => ApiError::Database(error),
        }
    }
}

/// A point's readings or buckets over a range, with the intervals its gateway dropped.
#[utoipa::path(
    get,
    path = "/api/v1/points/{point_id}/history",
    tag = "units",
    params(("point_id" = i64, Path, description = "Point id", example = 1), HistoryQuery),
    responses(
        (status = 200, description = "The history, as JSON or (format=csv) CSV",
         content((HistoryResponse = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A parameter is invalid, or the range is empty or too long", body = ErrorBody),
        (status = 404, description = "No such point, or not the viewer's", body = ErrorBody),
        (status = 422, description = "The answer would hold more than 100,000 rows: a larger bucket or a shorter range", body = ErrorBody),
        (status = 503, description = "Another of the customer's history requests (or two in all) has been under way for 10 s", body = ErrorBody),
    )
)]
pub(crate) async fn point_history(
    State(state): State<AppState>,
    viewer: Allowed<Read>,
    Path(point_id): Path<i64>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    history_of(&state, &viewer, HistoryOf::Point(point_id), query).await
}

/// The history of every point of a unit.
#[utoipa::path(
    get,
    path = "/api/v1/units/{unit_id}/history",
    tag = "units",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1), HistoryQuery),
    responses(
        (status = 200, description = "The history, as JSON or (format=csv) CSV",
         content((HistoryResponse = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A parameter is invalid, or the range is empty or too long", body = ErrorBody),
        (status = 404, description = "No such unit, or it has no points", body = ErrorBody),
        (status = 422, description = "The answer would hold more than 100,000 rows: a larger bucket or a shorter range", body = ErrorBody),
        (status = 503, description = "Another of the customer's history requests (or two in all) has been under way for 10 s", body = ErrorBody),
    )
)]
pub(crate) async fn unit_history(
    State(state): State<AppState>,
    viewer: Allowed<Read>,
    Path(unit_id): Path<i64>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    history_of(&state, &viewer, HistoryOf::Unit(unit_id), query).await
}

/// Whose history a request asks for.
#[derive(Debug, Clone, Copy)]
enum HistoryOf {
    /// One point.
    Point(i64),
    /// Every point of a unit.
    Unit(i64),
}

/// The history of a point or a unit the viewer sees: 404 when they see none of its points.
async fn history_of(
    state: &AppState,
    viewer: &Allowed<Read>,
    of: HistoryOf,
    query: HistoryQuery,
) -> Result<Response, ApiError> {
    // A turn first, then a connection: waiting must not hold one of the pool's few.
    let place = state.history_lane.enter(&viewer.scope(), &state.metrics).await?;
    let mut tx = viewer.begin().await?;
    let (sql, id) = match of {
        HistoryOf::Point(id) => ("select id from points where id = $1", id),
        HistoryOf::Unit(id) => ("select id from points where unit_id = $1 order by id", id),
    };
    let point_ids: Vec<i64> = sqlx::query_scalar(sql).bind(id).fetch_all(&mut *tx).await?;
    if point_ids.is_empty() {
        return Err(ApiError::NotFound);
    }
    history_response(&mut tx, state.storage, &point_ids, query, place).await
}

/// The history of points the viewer's transaction has found visible.
///
/// The answer's body holds `place` in the history lane until it has been sent: what a client
/// has not read yet still counts against its customer (and a client that stops reading is cut
/// off by the listener).
async fn history_response(
    db: &mut sqlx::PgConnection,
    storage: StorageMode,
    point_ids: &[i64],
    query: HistoryQuery,
    place: InLane,
) -> Result<Response, ApiError> {
    let to = query.to.unwrap_or_else(Utc::now);
    let from = match query.from {
        Some(from) => from,
        None => to.checked_sub_signed(Duration::hours(1)).ok_or(HistoryError::Range("`to` is out of range".into()))?,
    };
    let bucket = query.bucket.unwrap_or_else(|| Bucket::for_span(to - from));
    let rows = history::query(&mut *db, storage, point_ids, from, to, bucket).await?;
    match query.format.as_deref() {
        None | Some("json") => {
            let dropped = history::dropped(&mut *db, point_ids, from, to).await?;
            // Up to 12 MB of JSON: written on a blocking thread, so the runtime's few workers
            // keep serving everyone else meanwhile.
            let response = HistoryResponse { bucket, from, to, rows, dropped };
            let json = tokio::task::spawn_blocking(move || serde_json::to_vec(&response))
                .await
                .map_err(|e| ApiError::Internal(format!("writing history: {e}")))?
                .map_err(|e| ApiError::Internal(format!("writing history: {e}")))?;
            let json = axum::body::Bytes::from(json);
            let chunks =
                (0..json.len()).step_by(64 * 1024).map(move |at| json.slice(at..json.len().min(at + 64 * 1024)));
            Ok(([(header::CONTENT_TYPE, "application/json")], body_in_lane(chunks, place)).into_response())
        }
        Some("csv") => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"history.csv\""),
            ],
            body_in_lane(history::csv_chunks(rows).map(axum::body::Bytes::from), place),
        )
            .into_response()),
        Some(other) => Err(ApiError::BadRequest(format!("unknown format {other:?}: use json or csv"))),
    }
}
