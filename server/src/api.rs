//! The HTTP API: health, metrics, and the JSON API for units, latest values and history (alarms
//! in `alarms::api`).

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    middleware,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use crate::{
    accounts::Viewer,
    history::{self, Bucket, DroppedSpan, HistoryError, QUALITY_NAME, Rows},
    metrics::Metrics,
    openapi::ErrorBody,
};

/// What request handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The database as API requests see it: the `chillcloud_api` role under row security,
    /// through [`crate::accounts::Viewer::begin`].
    pub api_pool: PgPool,
    /// The operator's bearer token.
    pub api_token: Arc<str>,
    /// Failed sign-ins, for the rate limit.
    pub sign_ins: Arc<crate::accounts::SignInLimiter>,
    /// Readings as they are committed, for live pages.
    pub live: crate::live::Live,
    /// The alarm engine, told when rules change.
    pub alarms: crate::alarms::Alarms,
    /// Paging: providers, link secret, public URL.
    pub paging: crate::paging::Paging,
    /// Messages for gateways (topic, payload): ingest's MQTT client publishes them at QoS 1.
    pub to_gateways: tokio::sync::mpsc::UnboundedSender<(String, Vec<u8>)>,
    /// History queries and exports: 2 at once, 1 per customer, waiting up to 10 s. Each can keep
    /// a runtime worker and a database connection busy for a second or two: the API pool has 8
    /// connections and the runtime a worker per core, so most stay for everything else.
    pub history_lane: Arc<Lane>,
    /// Live streams: 1,000 at once, 100 per customer.
    pub live_lane: Arc<Lane>,
    /// SMS replies quoting codes nobody was sent, per number.
    pub wrong_codes: Arc<crate::paging::api::WrongCodes>,
}

impl AppState {
    /// The lanes of a server: see [`AppState::history_lane`] and [`AppState::live_lane`].
    pub fn lanes() -> (Arc<Lane>, Arc<Lane>) {
        (
            Arc::new(Lane::new("history requests", 2, 1, std::time::Duration::from_secs(10))),
            Arc::new(Lane::new("live streams", 1_000, 100, std::time::Duration::ZERO)),
        )
    }
}

/// A kind of request that costs more than the others (a history export's seconds of database
/// time, a live stream's lifetime): at most `total` at once, and at most `per_scope` for one
/// customer (or the service organisation), so one of them cannot take what the others need.
#[derive(Debug)]
pub struct Lane {
    what: &'static str,
    total: Arc<tokio::sync::Semaphore>,
    per_scope: usize,
    scopes: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// How long a request may wait for its turn; zero: refused at once when full.
    wait: std::time::Duration,
}

/// A place in a [`Lane`], held until dropped.
#[derive(Debug)]
pub struct InLane {
    _total: tokio::sync::OwnedSemaphorePermit,
    _scope: tokio::sync::OwnedSemaphorePermit,
}

impl Lane {
    /// A lane; `what` names its requests in the 503 answer.
    pub fn new(what: &'static str, total: usize, per_scope: usize, wait: std::time::Duration) -> Self {
        Self {
            what,
            total: Arc::new(tokio::sync::Semaphore::new(total)),
            per_scope,
            scopes: std::sync::Mutex::default(),
            wait,
        }
    }

    /// Takes a place for a request of `scope` (its own limit first, then the total), waiting
    /// in turn for at most the lane's wait; [`ApiError::Busy`] when none came.
    pub async fn enter(&self, scope: &str, metrics: &Metrics) -> Result<InLane, ApiError> {
        let own = {
            let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
            scopes
                .entry(scope.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_scope)))
                .clone()
        };
        let take = async {
            let scope = own.acquire_owned().await.ok()?;
            let total = self.total.clone().acquire_owned().await.ok()?;
            Some(InLane { _total: total, _scope: scope })
        };
        match tokio::time::timeout(self.wait, take).await {
            Ok(Some(place)) => Ok(place),
            _ => {
                metrics.requests_refused_by_bounds.inc();
                Err(ApiError::Busy(self.what))
            }
        }
    }
}

/// A body sent chunk by chunk that keeps its place in a lane until the last chunk was taken.
fn body_in_lane(chunks: impl Iterator<Item = axum::body::Bytes> + Send + 'static, place: InLane) -> axum::body::Body {
    axum::body::Body::from_stream(futures_util::stream::unfold((chunks, place), |(mut chunks, place)| async move {
        chunks.next().map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), (chunks, place)))
    }))
}

/// The one error type of the API. Each variant documents its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no or a wrong token or session, or a failed sign-in.
    #[error("sign in, or present a valid bearer token")]
    Unauthorized,
    /// 403: the viewer's role may not do this, or a session's change lacked its CSRF token.
    #[error("not allowed")]
    Forbidden,
    /// 429: too many failed sign-ins; try again later.
    #[error("too many failed sign-ins; try again in 15 minutes")]
    TooManyRequests,
    /// 404: no such unit or point.
    #[error("not found")]
    NotFound,
    /// 400: the request's parameters are invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 409: the request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// 422: the request asks for more than one answer may hold (rows, bytes); it says how to ask
    /// for less.
    #[error("{0}")]
    TooMuch(String),
    /// 503 with `Retry-After`: as many such requests as the server takes at once are under way.
    #[error("too many {0} under way; try again shortly")]
    Busy(&'static str),
    /// 500: a bug; logged, never shown to the client.
    #[error("internal error")]
    Internal(String),
    /// 503: the database failed; logged, never shown to the client.
    #[error("database unavailable")]
    Database(#[from] sqlx::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooMuch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(error) => {
                tracing::error!(%error, "internal error while serving a request");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Busy(_) => {
                let body = Json(serde_json::json!({ "error": self.to_string() }));
                return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "2")], body).into_response();
            }
            ApiError::Database(error) => {
                if let Some((status, message)) = refused_input(error) {
                    tracing::info!(%error, "the database refused a request's input");
                    return (status, Json(serde_json::json!({ "error": message }))).into_response();
                }
                tracing::error!(%error, "database error while serving a request");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

/// What the database refused about a request's own input (a value it cannot store, a reference
/// to nothing, a duplicate), as the status and message to answer with: bad input, not a failed
/// database. Other errors are not the request's fault.
fn refused_input(error: &sqlx::Error) -> Option<(StatusCode, &'static str)> {
    let code = error.as_database_error()?.code()?;
    Some(match code.as_ref() {
        // invalid_byte_sequence (a NUL character), untranslatable_character (\u0000 in JSON)
        "22021" | "22P05" => (StatusCode::BAD_REQUEST, "text must not contain NUL characters"),
        "22003" => (StatusCode::BAD_REQUEST, "a number is out of range"),
        "22008" => (StatusCode::BAD_REQUEST, "a time is out of range"),
        "22001" => (StatusCode::BAD_REQUEST, "a text is too long"),
        "23514" => (StatusCode::BAD_REQUEST, "a value is not one of those allowed"),
        "23503" => (StatusCode::CONFLICT, "it refers to something that does not exist, or something refers to it"),
        "23505" => (StatusCode::CONFLICT, "it exists already"),
        _ => return None,
    })
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/units", get(list_units))
        .route("/units/{unit_id}", get(unit_detail).patch(rename_unit))
        .route("/units/{unit_id}/history", get(unit_history))
        .route("/units/{unit_id}/live", get(unit_live))
        .route("/points/{point_id}/history", get(point_history))
        .merge(crate::alarms::api::routes())
        .merge(crate::paging::api::routes())
        .merge(crate::tickets::routes())
        .merge(crate::accounts::routes())
        .merge(crate::share::routes())
        .merge(crate::commands::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::accounts::authenticate));
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/openapi.json", get(crate::openapi::openapi_json))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .merge(crate::paging::api::public_routes())
        .merge(crate::tickets::public_routes())
        .merge(crate::accounts::public_routes())
        .merge(crate::share::public_routes())
        .merge(crate::ui::routes())
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), security_headers))
        .with_state(state)
}

/// The policy of the server-rendered pages (acknowledgement, feedback, invitation, share) that
/// do not set their own: no script, nothing loaded from elsewhere, forms only to this server,
/// never inside another site's frame.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Headers every answer carries: no content sniffing, no referrer (links carry tokens), a page
/// policy for HTML without one (and no framing for any), and HSTS when people reach the server
/// over HTTPS.
async fn security_headers(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    use axum::http::HeaderValue;
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    headers.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("no-referrer"));
    let html = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if html {
        let policy = match headers.get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()) {
            None => Some(PAGE_POLICY.to_owned()),
            Some(own) if !own.contains("frame-ancestors") => Some(format!("{own}; frame-ancestors 'none'")),
            Some(_) => None,
        };
        if let Some(policy) = policy.and_then(|p| HeaderValue::from_str(&p).ok()) {
            headers.insert(header::CONTENT_SECURITY_POLICY, policy);
        }
    }
    if state.paging.public_url.starts_with("https://") {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    response
}

/// Answers axum's own refusals under `/api/v1` (a malformed path or query parameter or JSON
/// body: 400, 415 or 422 in plain text) as the API's other errors are: `{"error": "..."}`.
async fn json_errors(request: axum::extract::Request, next: middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/v1/");
    let response = next.run(request).await;
    let plain = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(api && plain && response.status().is_client_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    (parts.status, Json(serde_json::json!({ "error": String::from_utf8_lossy(&text) }))).into_response()
}

/// Text made safe to put in HTML, in element content and in quoted attributes.
pub(crate) fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
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

/// 200 while the database answers (503 otherwise), with whether ingest is subscribed at the
/// broker: `"broker": "subscribed"` or `"waiting"` (connecting, or the broker is down). A
/// broker outage does not fail the check: the server rides it out by itself.
async fn health(State(state): State<AppState>) -> Result<Response, ApiError> {
    sqlx::query("select 1").execute(&state.pool).await?;
    let broker = if state.metrics.broker_subscribed.get() == 1.0 { "subscribed" } else { "waiting" };
    // A broker restart or a database hiccup is ridden out; ingest stuck for longer is not.
    let stall = state.metrics.ingest.longest(Utc::now().timestamp_millis());
    Ok(match stall {
        Some((stall, lasted_ms)) if lasted_ms >= INGEST_STALLED_AFTER_MS => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "unhealthy",
                "broker": broker,
                "ingest": format!("stalled for {} s: {}", lasted_ms / 1000, stall.name()),
            })),
        )
            .into_response(),
        _ => Json(serde_json::json!({ "status": "ok", "broker": broker, "ingest": "ok" })).into_response(),
    })
}

/// How long ingest may be unable to progress before `/health` says the server is unhealthy and a
/// service alarm is raised.
pub const INGEST_STALLED_AFTER_MS: i64 = 30_000;

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
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
    /// Is it OK, at a glance: `offline` (its gateway or the unit does not answer, or no point
    /// has a good value), `alarm` (an alarm is active), `stale` (nothing new for 5 minutes, while
    /// snapshots come every minute), `stopped` (its `running` point is 0), `running`, or
    /// `unknown` (its `running` point is bad, or it has none).
    pub status: String,
    /// Alarms not yet closed.
    pub open_alarms: i64,
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

/// Units with their gateway's online state, status at a glance and open alarms.
#[utoipa::path(
    get,
    path = "/api/v1/units",
    tag = "units",
    responses((status = 200, description = "The viewer's units", body = Vec<UnitSummary>))
)]
pub(crate) async fn list_units(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Json<Vec<UnitSummary>>, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
    let units = sqlx::query_as(sqlx::AssertSqlSafe(format!("{UNIT_SUMMARY} order by u.gateway_id, u.device_key")))
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
pub(crate) async fn unit_detail(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(unit_id): Path<i64>,
) -> Result<Json<UnitDetail>, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
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
    State(state): State<AppState>,
    viewer: crate::accounts::Allowed<crate::accounts::ManageRules>,
    Path(unit_id): Path<i64>,
    Json(rename): Json<UnitRename>,
) -> Result<Json<UnitSummary>, ApiError> {
    let name = rename.display_name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 64 || n.chars().any(char::is_control)) {
        return Err(ApiError::BadRequest("display_name: at most 64 characters, without control characters".into()));
    }
    let mut tx = viewer.begin(&state.api_pool).await?;
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
    Extension(viewer): Extension<Viewer>,
    Path(unit_id): Path<i64>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
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
    Extension(viewer): Extension<Viewer>,
    Path(point_id): Path<i64>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    // A turn first, then a connection: waiting must not hold one of the pool's few.
    let place = state.history_lane.enter(&viewer.scope(), &state.metrics).await?;
    let mut tx = viewer.begin(&state.api_pool).await?;
    let exists: bool = sqlx::query_scalar("select exists (select 1 from points where id = $1)")
        .bind(point_id)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(ApiError::NotFound);
    }
    history_response(&mut tx, &[point_id], query, place).await
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
    Extension(viewer): Extension<Viewer>,
    Path(unit_id): Path<i64>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let place = state.history_lane.enter(&viewer.scope(), &state.metrics).await?;
    let mut tx = viewer.begin(&state.api_pool).await?;
    let point_ids: Vec<i64> = sqlx::query_scalar("select id from points where unit_id = $1 order by id")
        .bind(unit_id)
        .fetch_all(&mut *tx)
        .await?;
    if point_ids.is_empty() {
        return Err(ApiError::NotFound);
    }
    history_response(&mut tx, &point_ids, query, place).await
}

/// The history of points the viewer's transaction has found visible.
///
/// The answer's body holds `place` in the history lane until it has been sent: what a client
/// has not read yet still counts against its customer (and a client that stops reading is cut
/// off by the listener).
async fn history_response(
    db: &mut sqlx::PgConnection,
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
    let rows = history::query(&mut *db, point_ids, from, to, bucket).await?;
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
