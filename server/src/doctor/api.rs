//! The remote doctor's API: drafting a unit's report, reading reports, and what the figures
//! need (a unit's ratings, a site's tariff).

use axum::{Json, extract::Path, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{DoctorRules, InvalidReport, ReportContent, check_period, draft, store_draft};
use crate::http::{Allowed, ApiError, AppState, DraftReports, ErrorBody, Read, require_unit};

/// Routes for viewers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(draft_report, list_reports))
        .routes(routes!(report))
        .routes(routes!(set_rating))
        .routes(routes!(set_tariff))
}

impl From<InvalidReport> for ApiError {
    fn from(invalid: InvalidReport) -> Self {
        ApiError::BadRequest(invalid.0)
    }
}

/// The period of a report to draft.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from": "2026-11-01T00:00:00+08:00", "to": "2026-12-01T00:00:00+08:00"}))]
pub struct NewReport {
    /// Start of the period (rounded down to the hour).
    pub from: DateTime<Utc>,
    /// End of the period, exclusive (rounded down to the hour); at most 366 days after `from`.
    pub to: DateTime<Utc>,
}

/// A report.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Report {
    /// Report id.
    pub id: i64,
    /// `draft` until an engineer signs it; owners see signed reports only.
    pub status: String,
    /// Who drafted it.
    pub drafted_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was signed.
    pub signed_at: Option<DateTime<Utc>>,
    /// The engineer's note to the owner.
    pub note: String,
    /// The report itself.
    #[schema(value_type = ReportContent)]
    pub content: sqlx::types::Json<ReportContent>,
}

/// A report as listed.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct ReportSummary {
    /// Report id.
    pub id: i64,
    /// `draft` or `signed`.
    pub status: String,
    /// The period.
    pub period_start: DateTime<Utc>,
    /// See `period_start`.
    pub period_end: DateTime<Utc>,
    /// The headline.
    pub headline: String,
    /// When it was drafted.
    pub created_at: DateTime<Utc>,
    /// When it was signed.
    pub signed_at: Option<DateTime<Utc>>,
}

const REPORT: &str = "select id, status, drafted_by, created_at, signed_at, note, content from reports";

/// Drafts a unit's operating report for a period from its stored data: figures, findings with
/// their evidence and worth, alarms and tickets. The draft waits for an engineer's signature.
#[utoipa::path(
    post,
    path = "/api/v1/units/{unit_id}/reports",
    tag = "reports",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    request_body = NewReport,
    responses(
        (status = 200, description = "The draft", body = Report),
        (status = 400, description = "The period is empty, reversed, longer than 366 days or outside 2000 to tomorrow", body = ErrorBody),
        (status = 403, description = "Only the service organisation's engineers draft reports", body = ErrorBody),
        (status = 404, description = "No such unit, or not the viewer's", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn draft_report(
    viewer: Allowed<DraftReports>,
    Path(unit_id): Path<i64>,
    Json(body): Json<NewReport>,
) -> Result<Json<Report>, ApiError> {
    let (from, to) = check_period(body.from, body.to)?;
    let mut tx = viewer.begin().await?;
    let content = draft(&mut tx, DoctorRules::shipped(), unit_id, from, to).await?.ok_or(ApiError::NotFound)?;
    let id = store_draft(&mut tx, &content, &viewer.actor()).await?;
    let report =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{REPORT} where id = $1"))).bind(id).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(Json(report))
}

/// A unit's reports, newest period first (owners see signed ones only).
#[utoipa::path(
    get,
    path = "/api/v1/units/{unit_id}/reports",
    tag = "reports",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    responses(
        (status = 200, description = "The reports", body = Vec<ReportSummary>),
        (status = 400, description = "The unit id is not a number", body = ErrorBody),
        (status = 404, description = "No such unit, or not the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn list_reports(
    viewer: Allowed<Read>,
    Path(unit_id): Path<i64>,
) -> Result<Json<Vec<ReportSummary>>, ApiError> {
    let mut tx = viewer.begin().await?;
    require_unit(&mut tx, unit_id).await?;
    Ok(Json(
        sqlx::query_as(
            "select id, status, period_start, period_end, content ->> 'headline' as headline, created_at, signed_at
             from reports where unit_id = $1 order by period_end desc, id desc limit 500",
        )
        .bind(unit_id)
        .fetch_all(&mut *tx)
        .await?,
    ))
}

/// A report with its figures, findings and evidence (a customer sees it once signed).
#[utoipa::path(
    get,
    path = "/api/v1/reports/{report_id}",
    tag = "reports",
    params(("report_id" = i64, Path, description = "Report id", example = 1)),
    responses(
        (status = 200, description = "The report", body = Report),
        (status = 400, description = "The report id is not a number", body = ErrorBody),
        (status = 404, description = "No such report, or not the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn report(viewer: Allowed<Read>, Path(report_id): Path<i64>) -> Result<Json<Report>, ApiError> {
    let mut tx = viewer.begin().await?;
    let report = sqlx::query_as(sqlx::AssertSqlSafe(format!("{REPORT} where id = $1")))
        .bind(report_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(report))
}

/// A unit's size, for energy and cooling estimated from %RLA where nothing is metered.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"rated_cooling_kw": 1000.0, "rated_power_kw": 180.0}))]
pub struct Rating {
    /// Cooling at full load, kW (a ton is 3.517 kW); null if unknown.
    pub rated_cooling_kw: Option<f64>,
    /// Compressor power at full load, kW; null if unknown.
    pub rated_power_kw: Option<f64>,
}

/// Sets a unit's rated cooling and power (from its nameplate or data sheet).
#[utoipa::path(
    put,
    path = "/api/v1/units/{unit_id}/rating",
    tag = "reports",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    request_body = Rating,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "A rating is not a positive number under 1,000,000 kW", body = ErrorBody),
        (status = 403, description = "Only the service organisation's engineers set ratings", body = ErrorBody),
        (status = 404, description = "No such unit, or not the viewer's", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn set_rating(
    viewer: Allowed<DraftReports>,
    Path(unit_id): Path<i64>,
    Json(body): Json<Rating>,
) -> Result<StatusCode, ApiError> {
    let valid = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0 && v < 1e6);
    if !valid(body.rated_cooling_kw) || !valid(body.rated_power_kw) {
        return Err(ApiError::BadRequest("ratings are positive numbers of kW under 1,000,000".into()));
    }
    let mut tx = viewer.begin().await?;
    let updated = sqlx::query("update units set rated_cooling_kw = $2, rated_power_kw = $3 where id = $1")
        .bind(unit_id)
        .bind(body.rated_cooling_kw)
        .bind(body.rated_power_kw)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A site's price of electricity.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"tariff_per_kwh": 0.85}))]
pub struct Tariff {
    /// Price of a kWh in the doctor's currency; null goes back to the service organisation's
    /// default.
    pub tariff_per_kwh: Option<f64>,
}

/// Sets a site's tariff, which prices the findings of its units' reports.
#[utoipa::path(
    put,
    path = "/api/v1/gateways/{gateway_id}/tariff",
    tag = "reports",
    params(("gateway_id" = String, Path, description = "The site's gateway id", example = "gw-plant-1")),
    request_body = Tariff,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "The tariff is not a number from 0 to 1,000", body = ErrorBody),
        (status = 403, description = "Only the service organisation's engineers set tariffs", body = ErrorBody),
        (status = 404, description = "No such site, or not the viewer's", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn set_tariff(
    viewer: Allowed<DraftReports>,
    Path(gateway_id): Path<String>,
    Json(body): Json<Tariff>,
) -> Result<StatusCode, ApiError> {
    if body.tariff_per_kwh.is_some_and(|t| !(t.is_finite() && (0.0..1000.0).contains(&t))) {
        return Err(ApiError::BadRequest("a tariff is a number from 0 to 1,000 a kWh".into()));
    }
    let mut tx = viewer.begin().await?;
    let updated = sqlx::query("update gateways set tariff_per_kwh = $2 where id = $1")
        .bind(&gateway_id)
        .bind(body.tariff_per_kwh)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
