//! The share-links API, and the public page a link opens.

use axum::{
    Json,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{DAYS_SHOWN, KEY_POINTS, SHOWN, sparkline};
use crate::{
    history::{self, Bucket, Rows},
    http::{Allowed, ApiError, AppState, ErrorBody, Share, System, SystemState, require_unit},
    secrets::{digest, escape_html, random_secret},
};

/// Routes for viewers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(create)).routes(routes!(revoke))
}

/// The public page: the link's secret is the proof.
pub fn system_routes() -> OpenApiRouter<SystemState> {
    OpenApiRouter::new().route("/s/{secret}", get(page))
}

/// A new share link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"label": "Process chiller, food plant", "days": 14}))]
pub struct NewShare {
    /// What the prospect reads instead of the site's name, e.g. "Process chiller, food plant".
    pub label: String,
    /// Days until it expires, 1 to 90 (default 14).
    #[schema(minimum = 1, maximum = 90)]
    pub days: Option<i64>,
}

/// A share link as listed (its secret is shown once, when made).
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct ShareLink {
    /// Its id, to revoke it.
    pub id: i64,
    /// The unit.
    pub unit_id: i64,
    /// Its label.
    pub label: String,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A share link just made, with its address (the only time the secret is shown).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SharedLink {
    /// The link.
    pub link: ShareLink,
    /// Its page, `<public-url>/s/<secret>`.
    pub url: String,
}

/// Makes a read-only share link of a unit's operating record.
#[utoipa::path(
    post,
    path = "/api/v1/units/{unit_id}/shares",
    tag = "units",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    request_body = NewShare,
    responses(
        (status = 200, description = "The link and its address", body = SharedLink),
        (status = 400, description = "No label or one over 100 characters, or days out of range", body = ErrorBody),
        (status = 403, description = "Duty staff may not share", body = ErrorBody),
        (status = 404, description = "No such unit, or not the viewer's", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    viewer: Allowed<Share>,
    Path(unit_id): Path<i64>,
    Json(body): Json<NewShare>,
) -> Result<Json<SharedLink>, ApiError> {
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > 100 || label.contains('\0') {
        return Err(ApiError::BadRequest("a label of 1 to 100 characters is required".into()));
    }
    let days = body.days.unwrap_or(14);
    if !(1..=90).contains(&days) {
        return Err(ApiError::BadRequest("days must be 1 to 90".into()));
    }
    let mut tx = viewer.begin().await?;
    require_unit(&mut tx, unit_id).await?;
    let secret = random_secret();
    let link: ShareLink = sqlx::query_as(
        "insert into share_links (token_hash, unit_id, label, created_by, expires_at)
         values ($1, $2, $3, $4, now() + make_interval(days => $5::int))
         returning id, unit_id, label, created_by, created_at, expires_at, revoked_at",
    )
    .bind(digest(&secret))
    .bind(unit_id)
    .bind(label)
    .bind(viewer.actor())
    .bind(days)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let url = format!("{}/s/{secret}", state.paging.public_url);
    Ok(Json(SharedLink { link, url }))
}

/// A unit's share links, newest first, revoked and expired ones too.
#[utoipa::path(
    get,
    path = "/api/v1/units/{unit_id}/shares",
    tag = "units",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    responses(
        (status = 200, description = "The links", body = Vec<ShareLink>),
        (status = 400, description = "The unit id is not a number", body = ErrorBody),
        (status = 403, description = "Duty staff may not share", body = ErrorBody),
        (status = 404, description = "No such unit, or not the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn list(viewer: Allowed<Share>, Path(unit_id): Path<i64>) -> Result<Json<Vec<ShareLink>>, ApiError> {
    let mut tx = viewer.begin().await?;
    require_unit(&mut tx, unit_id).await?;
    Ok(Json(
        sqlx::query_as(
            "select id, unit_id, label, created_by, created_at, expires_at, revoked_at from share_links
             where unit_id = $1 order by id desc",
        )
        .bind(unit_id)
        .fetch_all(&mut *tx)
        .await?,
    ))
}

/// Revokes a share link: its page stops showing the record at once.
#[utoipa::path(
    delete,
    path = "/api/v1/shares/{share_id}",
    tag = "units",
    params(("share_id" = i64, Path, description = "Share link id", example = 1)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 403, description = "Duty staff may not share", body = ErrorBody),
        (status = 404, description = "No such link, or not the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn revoke(viewer: Allowed<Share>, Path(share_id): Path<i64>) -> Result<StatusCode, ApiError> {
    let mut tx = viewer.begin().await?;
    let revoked = sqlx::query("update share_links set revoked_at = coalesce(revoked_at, now()) where id = $1")
        .bind(share_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    if revoked == 0 { Err(ApiError::NotFound) } else { Ok(StatusCode::NO_CONTENT) }
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex"><meta name="referrer" content="no-referrer"><title>{}</title><style>body{{font:16px system-ui;margin:1em auto;max-width:40em;padding:0 1em;color:#102030}}h1{{font-size:1.4em}}section{{border:1px solid #d0d8e0;border-radius:.6em;padding:.6em .8em;margin:.8em 0}}h2{{font-size:1em;margin:.2em 0}}.sub{{color:#506070}}svg{{width:100%;height:5em}}polyline{{fill:none;stroke:#0b57a4;stroke-width:1.5}}</style></head><body>{body}</body></html>"#,
        escape_html(title)
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(page),
    )
        .into_response()
}

async fn page(State(state): State<AppState>, system: System, Path(secret): Path<String>) -> Response {
    match record(&state, &system, &secret).await {
        Ok(Some(body)) => body,
        Ok(None) => html(
            StatusCode::NOT_FOUND,
            "Chillcloud",
            "<h1>Chillcloud</h1><p>This link has expired or was withdrawn. 此链接已过期或已撤回。</p>",
        ),
        Err(_) => html(StatusCode::SERVICE_UNAVAILABLE, "Chillcloud", "<p>Try again in a moment. 请稍后再试。</p>"),
    }
}

/// The record behind a link, read outside row security: the link names its unit, and the page
/// shows nothing of the site. A link works only while the site has the owner it was made under
/// (a transfer also revokes it).
async fn record(state: &AppState, system: &System, secret: &str) -> sqlx::Result<Option<Response>> {
    let link: Option<(i64, String, DateTime<Utc>, String, String)> = sqlx::query_as(
        "select s.unit_id, s.label, s.expires_at, u.profile, u.model from share_links s join units u on u.id = s.unit_id
         join gateways g on g.id = u.gateway_id
         where s.token_hash = $1 and s.revoked_at is null and s.expires_at > now()
           and s.organisation_id is not distinct from g.organisation_id",
    )
    .bind(digest(secret))
    .fetch_optional(&system.db)
    .await?;
    let Some((unit_id, label, expires_at, profile, model)) = link else { return Ok(None) };
    // A valid link's page reads a week of hourly history: such pages take turns in the history lane,
    // as one customer (anyone holding a link may ask; made-up links never get this far).
    let Ok(_place) = state.history_lane.enter("share links", &state.metrics).await else {
        let busy = "<p>Try again in a moment. 请稍后再试。</p>";
        return Ok(Some(html(StatusCode::SERVICE_UNAVAILABLE, "Chillcloud", busy)));
    };
    let points: Vec<(i64, String, String, Option<f64>)> = sqlx::query_as(
        "select p.id, p.name, p.unit_of_measure, l.value from points p
         left join latest_readings l on l.point_id = p.id where p.unit_id = $1 order by p.id",
    )
    .bind(unit_id)
    .fetch_all(&system.db)
    .await?;
    let rank = |name: &str| KEY_POINTS.iter().position(|k| *k == name).unwrap_or(KEY_POINTS.len());
    let mut shown: Vec<&(i64, String, String, Option<f64>)> = points.iter().collect();
    shown.sort_by_key(|(id, name, _, _)| (rank(name), *id));
    shown.truncate(SHOWN);
    let to = Utc::now();
    let from = to - Duration::days(DAYS_SHOWN);
    let ids: Vec<i64> = shown.iter().map(|(id, ..)| *id).collect();
    let rows = history::query(&mut *system.db.acquire().await?, state.storage, &ids, from, to, Bucket::Hour)
        .await
        .map_err(|e| match e {
            history::HistoryError::Database(error) => error,
            history::HistoryError::Range(message) | history::HistoryError::TooMuch(message) => {
                sqlx::Error::Protocol(message)
            }
        })?;
    let Rows::Buckets(buckets) = rows else { return Ok(None) };
    let mut sections = String::new();
    for (id, name, unit, latest) in &shown {
        let series: Vec<(DateTime<Utc>, Option<f64>)> =
            buckets.iter().filter(|b| b.point_id == *id).map(|b| (b.ts, b.avg)).collect();
        let known: Vec<f64> = series.iter().filter_map(|(_, v)| *v).collect();
        let stats = if known.is_empty() {
            "no readings this week".to_owned()
        } else {
            let mean = known.iter().sum::<f64>() / known.len() as f64;
            let low = known.iter().copied().fold(f64::INFINITY, f64::min);
            let high = known.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("min {low:.1} · mean {mean:.1} · max {high:.1} {}", escape_html(unit))
        };
        let latest = latest.map_or_else(|| "—".to_owned(), |v| format!("{v:.1} {}", escape_html(unit)));
        sections.push_str(&format!(
            r#"<section><h2>{}</h2><p class="sub">now {latest} · {stats}</p>{}</section>"#,
            escape_html(name),
            sparkline(&series, from, to)
        ));
    }
    let equipment = if model.is_empty() { profile } else { format!("{model} ({profile})") };
    let body = format!(
        r#"<h1>{}</h1><p class="sub">{} · the last {DAYS_SHOWN} days, hourly averages · 最近{DAYS_SHOWN}天运行记录</p>{sections}<p class="sub">Shared through Chillcloud until {}.</p>"#,
        escape_html(&label),
        escape_html(&equipment),
        expires_at.format("%Y-%m-%d"),
    );
    Ok(Some(html(StatusCode::OK, &label, &body)))
}
