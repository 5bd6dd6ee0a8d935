//! The remote doctor's API: drafting a unit's report, reading reports, and what the figures
//! need (a unit's ratings, a site's tariff).

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    DoctorRules, InvalidReport, ReportContent, SiteSummary, check_period, deliver, draft, fleet_comparison,
    owner_email_languages,
    pdf::{self, Language, PdfError, Signature},
    site_summary, store_draft,
};
use crate::http::{Allowed, ApiError, AppState, DraftReports, ErrorBody, Read, require_unit};

/// Routes for viewers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(draft_report, list_reports))
        .routes(routes!(report, review))
        .routes(routes!(sign))
        .routes(routes!(report_pdf))
        .routes(routes!(set_rating))
        .routes(routes!(set_tariff))
        .routes(routes!(set_reporting))
        .routes(routes!(ask))
        .routes(routes!(draft_site, site_report))
        .routes(routes!(list_all))
}

impl From<InvalidReport> for ApiError {
    fn from(invalid: InvalidReport) -> Self {
        ApiError::BadRequest(invalid.0)
    }
}

impl From<PdfError> for ApiError {
    fn from(error: PdfError) -> Self {
        ApiError::Internal(error.0)
    }
}

/// A report's period (a body to draft, a query to read a site's).
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from": "2026-11-01T00:00:00+08:00", "to": "2026-12-01T00:00:00+08:00"}))]
pub struct Period {
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
    /// Who signed it.
    pub signer: Option<String>,
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

const REPORT: &str = "select id, status, drafted_by, created_at, signer, signed_at, note, content from reports";

/// Report `id` as `db` sees it.
async fn fetch_report(db: &mut sqlx::PgConnection, id: i64) -> Result<Report, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{REPORT} where id = $1")))
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The longest note or edited text, characters.
const MAX_TEXT: usize = 2000;

/// Drafts a unit's operating report for a period from its stored data: figures, findings with
/// their evidence and worth, alarms and tickets. The draft waits for an engineer's signature.
#[utoipa::path(
    post,
    path = "/api/v1/units/{unit_id}/reports",
    tag = "reports",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    request_body = Period,
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
    Json(body): Json<Period>,
) -> Result<Json<Report>, ApiError> {
    let (from, to) = check_period(body.from, body.to)?;
    let mut tx = viewer.begin().await?;
    let content = draft(&mut tx, DoctorRules::shipped(), unit_id, from, to).await?.ok_or(ApiError::NotFound)?;
    let id = store_draft(&mut tx, &content, &viewer.actor()).await?;
    let report = fetch_report(&mut tx, id).await?;
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
    let report = fetch_report(&mut tx, report_id).await?;
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

/// An engineer's review of a draft: a note to the owner, findings dropped, findings' words
/// changed. The headline follows what is kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"note": "We will clean the condenser on our next visit.", "drop": ["oversized"],
    "edits": {"condenser_fouling": {"advice": "Clean the tubes before the summer."}}}))]
pub struct Review {
    /// The note to the owner, up to 2,000 characters; absent keeps the note.
    pub note: Option<String>,
    /// Keys of findings to drop.
    #[serde(default)]
    pub drop: Vec<String>,
    /// New words for findings, by key.
    #[serde(default)]
    pub edits: BTreeMap<String, FindingEdit>,
}

/// New words for a finding; absent fields are kept. Each up to 2,000 characters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FindingEdit {
    /// Title, English.
    pub title: Option<String>,
    /// Title, Chinese.
    pub title_zh: Option<String>,
    /// What was found, English.
    pub summary: Option<String>,
    /// What was found, Chinese.
    pub summary_zh: Option<String>,
    /// What to do, English.
    pub advice: Option<String>,
    /// What to do, Chinese.
    pub advice_zh: Option<String>,
}

fn checked_text(what: &str, text: &str) -> Result<String, ApiError> {
    if text.chars().count() > MAX_TEXT || text.contains('\0') {
        return Err(ApiError::BadRequest(format!("{what}: at most {MAX_TEXT} characters, no NUL")));
    }
    Ok(text.trim().to_owned())
}

/// Loads report `id` for a change, locked; refused unless it is a draft.
async fn locked_draft(tx: &mut sqlx::PgConnection, id: i64) -> Result<ReportContent, ApiError> {
    let row: Option<(String, sqlx::types::Json<ReportContent>)> =
        sqlx::query_as("select status, content from reports where id = $1 for update")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (status, content) = row.ok_or(ApiError::NotFound)?;
    if status != "draft" {
        return Err(ApiError::Conflict("the report is signed: it can no longer change".into()));
    }
    Ok(content.0)
}

/// Reviews a draft: the note to the owner, findings dropped or reworded.
#[utoipa::path(
    patch,
    path = "/api/v1/reports/{report_id}",
    tag = "reports",
    params(("report_id" = i64, Path, description = "Report id", example = 1)),
    request_body = Review,
    responses(
        (status = 200, description = "The draft as reviewed", body = Report),
        (status = 400, description = "A text over 2,000 characters, or a finding the report does not have", body = ErrorBody),
        (status = 403, description = "Only the service organisation's engineers review reports", body = ErrorBody),
        (status = 404, description = "No such report, or not the viewer's", body = ErrorBody),
        (status = 409, description = "The report is signed", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn review(
    viewer: Allowed<DraftReports>,
    Path(report_id): Path<i64>,
    Json(body): Json<Review>,
) -> Result<Json<Report>, ApiError> {
    let mut tx = viewer.begin().await?;
    let mut content = locked_draft(&mut tx, report_id).await?;
    for key in body.drop.iter().chain(body.edits.keys()) {
        if !content.findings.iter().any(|f| &f.key == key) {
            return Err(ApiError::BadRequest(format!("the report has no finding `{key}`")));
        }
    }
    content.findings.retain(|f| !body.drop.contains(&f.key));
    for finding in &mut content.findings {
        let Some(edit) = body.edits.get(&finding.key) else { continue };
        let fields = [
            ("title", &edit.title, &mut finding.title),
            ("title_zh", &edit.title_zh, &mut finding.title_zh),
            ("summary", &edit.summary, &mut finding.summary),
            ("summary_zh", &edit.summary_zh, &mut finding.summary_zh),
            ("advice", &edit.advice, &mut finding.advice),
            ("advice_zh", &edit.advice_zh, &mut finding.advice_zh),
        ];
        for (what, new, field) in fields {
            if let Some(new) = new {
                *field = checked_text(what, new)?;
            }
        }
    }
    content.write_headline();
    let note = body.note.as_deref().map(|n| checked_text("note", n)).transpose()?;
    sqlx::query("update reports set content = $2, note = coalesce($3, note) where id = $1")
        .bind(report_id)
        .bind(sqlx::types::Json(&content))
        .bind(note)
        .execute(&mut *tx)
        .await?;
    let report = fetch_report(&mut tx, report_id).await?;
    tx.commit().await?;
    Ok(Json(report))
}

/// Signs a reviewed draft: from now on it is the owner's to read, and it no longer changes. The
/// site's owner contacts get the link by SMS and e-mail.
#[utoipa::path(
    post,
    path = "/api/v1/reports/{report_id}/sign",
    tag = "reports",
    params(("report_id" = i64, Path, description = "Report id", example = 1)),
    responses(
        (status = 200, description = "The signed report", body = Report),
        (status = 400, description = "Reports are signed by a person, not the operator's token", body = ErrorBody),
        (status = 403, description = "Only the service organisation's engineers sign reports", body = ErrorBody),
        (status = 404, description = "No such report, or not the viewer's", body = ErrorBody),
        (status = 409, description = "The report is already signed", body = ErrorBody),
    )
)]
pub(crate) async fn sign(
    State(state): State<AppState>,
    viewer: Allowed<DraftReports>,
    Path(report_id): Path<i64>,
) -> Result<Json<Report>, ApiError> {
    let Some(user_id) = viewer.user_id else {
        return Err(ApiError::BadRequest("a report is signed by an engineer signed in as themselves".into()));
    };
    let mut tx = viewer.begin().await?;
    let mut content = locked_draft(&mut tx, report_id).await?;
    // The fleet as it stands when signed: peers drafted after this one count now.
    content.fleet = fleet_comparison(&mut tx, &content.unit, content.period_start, content.period_end).await?;
    let (signed_at, note): (DateTime<Utc>, String) = sqlx::query_as(
        "update reports set status = 'signed', signed_by = $2, signer = $3, signed_at = now(), content = $4
         where id = $1 returning signed_at, note",
    )
    .bind(report_id)
    .bind(user_id)
    .bind(&viewer.name)
    .bind(sqlx::types::Json(&content))
    .fetch_one(&mut *tx)
    .await?;
    // The owners' e-mails carry the PDF in their language; a PDF that cannot be made (no font)
    // leaves the e-mail with its link only, and does not stop the signature.
    let mut pdfs = std::collections::HashMap::new();
    for language in owner_email_languages(&mut tx, &content.unit.site).await? {
        let signature = Signature { engineer: viewer.name.clone(), at: signed_at, note: note.clone() };
        let content = content.clone();
        let code = Language::from_code(&language);
        match tokio::task::spawn_blocking(move || pdf::render(report_id, &content, Some(&signature), code)).await {
            Ok(Ok(bytes)) => {
                pdfs.insert(language, bytes);
            }
            Ok(Err(error)) => tracing::warn!(%error, report_id, "the owners' e-mail goes without its PDF"),
            Err(error) => tracing::warn!(%error, report_id, "the owners' e-mail goes without its PDF"),
        }
    }
    deliver(&mut tx, &state.paging.public_url, report_id, &content, &pdfs).await?;
    let report = fetch_report(&mut tx, report_id).await?;
    tx.commit().await?;
    state.paging.wake.notify_one();
    Ok(Json(report))
}

/// The language of a PDF.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PdfQuery {
    /// `en` or `zh`; the viewer's own language when absent.
    pub lang: Option<String>,
}

/// The report as an A4 PDF with its charts, in the viewer's language or `lang`'s.
#[utoipa::path(
    get,
    path = "/api/v1/reports/{report_id}/pdf",
    tag = "reports",
    params(("report_id" = i64, Path, description = "Report id", example = 1), PdfQuery),
    responses(
        (status = 200, description = "The PDF", content_type = "application/pdf"),
        (status = 400, description = "`lang` is neither `en` nor `zh`", body = ErrorBody),
        (status = 404, description = "No such report, or not the viewer's", body = ErrorBody),
        (status = 503, description = "Too many costly requests under way; try again shortly", body = ErrorBody),
    )
)]
pub(crate) async fn report_pdf(
    State(state): State<AppState>,
    viewer: Allowed<Read>,
    Path(report_id): Path<i64>,
    Query(query): Query<PdfQuery>,
) -> Result<Response, ApiError> {
    let language = match query.lang.as_deref() {
        None => Language::from_code(&viewer.language),
        Some("en") => Language::En,
        Some("zh") => Language::Zh,
        Some(_) => return Err(ApiError::BadRequest("lang is `en` or `zh`".into())),
    };
    let report: Report = {
        let mut tx = viewer.begin().await?;
        fetch_report(&mut tx, report_id).await?
    };
    let signature = match (&report.signer, report.signed_at) {
        (Some(engineer), Some(at)) => Some(Signature { engineer: engineer.clone(), at, note: report.note.clone() }),
        _ => None,
    };
    // Typesetting takes a CPU for a moment: in the history lane (two at once, one per
    // customer), off the runtime's workers.
    // The place moves into the task: a client that goes away does not free it while it renders.
    let place = state.history_lane.enter(&viewer.scope(), &state.metrics).await?;
    let bytes = tokio::task::spawn_blocking(move || {
        let _place = place;
        pdf::render(report.id, &report.content, signature.as_ref(), language)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("PDF task: {e}")))??;
    let name = format!("attachment; filename=\"report-{report_id}.pdf\"");
    Ok(([(header::CONTENT_TYPE, "application/pdf".to_owned()), (header::CONTENT_DISPOSITION, name)], bytes)
        .into_response())
}

/// When a site's reports are drafted on their own.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"time_zone": "Asia/Shanghai", "periods": ["month"]}))]
pub struct Reporting {
    /// The site's time zone, an IANA name (`Asia/Shanghai`); periods start at its midnight.
    pub time_zone: String,
    /// `week` (Monday to Monday) and/or `month`; empty for none.
    pub periods: Vec<String>,
}

/// Sets a site's time zone and the periods whose reports are drafted on their own once over
/// (default: months, in UTC). Drafts wait for an engineer's signature.
#[utoipa::path(
    put,
    path = "/api/v1/gateways/{gateway_id}/reporting",
    tag = "reports",
    params(("gateway_id" = String, Path, description = "The site's gateway id", example = "gw-plant-1")),
    request_body = Reporting,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "An unknown time zone, or a period other than `week` and `month`", body = ErrorBody),
        (status = 403, description = "Only the service organisation's engineers set the schedule", body = ErrorBody),
        (status = 404, description = "No such site, or not the viewer's", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn set_reporting(
    viewer: Allowed<DraftReports>,
    Path(gateway_id): Path<String>,
    Json(body): Json<Reporting>,
) -> Result<StatusCode, ApiError> {
    if body.periods.iter().any(|p| p != "week" && p != "month") || body.periods.len() > 2 {
        return Err(ApiError::BadRequest("periods are `week` and `month`".into()));
    }
    if body.time_zone.is_empty() || body.time_zone.len() > 64 {
        return Err(ApiError::BadRequest("a time zone is an IANA name such as Asia/Shanghai".into()));
    }
    let mut tx = viewer.begin().await?;
    // PostgreSQL knows the IANA zones.
    let known: bool = sqlx::query_scalar("select exists (select 1 from pg_timezone_names where name = $1)")
        .bind(&body.time_zone)
        .fetch_one(&mut *tx)
        .await?;
    if !known {
        return Err(ApiError::BadRequest(format!(
            "unknown time zone {:?}: use an IANA name such as Asia/Shanghai",
            body.time_zone
        )));
    }
    let updated = sqlx::query("update gateways set time_zone = $2, report_periods = $3 where id = $1")
        .bind(&gateway_id)
        .bind(&body.time_zone)
        .bind(&body.periods)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which reports to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportFilter {
    /// `draft` (the engineers' queue, oldest first) or `signed` (newest first; the default).
    pub status: Option<String>,
    /// At most this many, up to 500 (default 100).
    pub limit: Option<i64>,
}

/// A report in a list across units.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct ListedReport {
    /// Report id.
    pub id: i64,
    /// The unit.
    pub unit_id: i64,
    /// `draft` or `signed`.
    pub status: String,
    /// The period.
    pub period_start: DateTime<Utc>,
    /// See `period_start`.
    pub period_end: DateTime<Utc>,
    /// The headline.
    pub headline: String,
    /// How many findings it holds.
    pub findings: i64,
    /// When it was drafted.
    pub created_at: DateTime<Utc>,
}

/// Reports of every unit the viewer sees: the drafts waiting for review (service staff), or the
/// signed ones.
#[utoipa::path(
    get,
    path = "/api/v1/reports",
    tag = "reports",
    params(ReportFilter),
    responses(
        (status = 200, description = "The reports", body = Vec<ListedReport>),
        (status = 400, description = "An unknown status, or a limit outside 1 to 500", body = ErrorBody),
    )
)]
pub(crate) async fn list_all(
    viewer: Allowed<Read>,
    Query(filter): Query<ReportFilter>,
) -> Result<Json<Vec<ListedReport>>, ApiError> {
    let limit = filter.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit is 1 to 500".into()));
    }
    let query = match filter.status.as_deref() {
        None | Some("signed") => {
            "select id, unit_id, status, period_start, period_end, content ->> 'headline' as headline,
                    jsonb_array_length(content -> 'findings')::bigint as findings, created_at
             from reports where status = 'signed' order by signed_at desc limit $1"
        }
        Some("draft") => {
            "select id, unit_id, status, period_start, period_end, content ->> 'headline' as headline,
                    jsonb_array_length(content -> 'findings')::bigint as findings, created_at
             from reports where status = 'draft' order by created_at limit $1"
        }
        Some(_) => return Err(ApiError::BadRequest("status is `draft` or `signed`".into())),
    };
    let mut tx = viewer.begin().await?;
    Ok(Json(sqlx::query_as(query).bind(limit).fetch_all(&mut *tx).await?))
}

/// The most questions one report takes; beyond, the owner calls the service.
const MAX_QUESTIONS: i64 = 10;

/// An owner's question about a report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"text": "Should we clean the condenser before the summer?"}))]
pub struct Question {
    /// The question, 1 to 2,000 characters.
    pub text: String,
}

/// Where the question went.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Asked {
    /// The service ticket that carries it to the engineers.
    pub ticket_id: i64,
}

/// Asks the service a question about a signed report: it opens a grade 4 service ticket for the
/// unit with the question as its note, so it reaches the engineers with the grade's clocks.
#[utoipa::path(
    post,
    path = "/api/v1/reports/{report_id}/questions",
    tag = "reports",
    params(("report_id" = i64, Path, description = "Report id", example = 1)),
    request_body = Question,
    responses(
        (status = 200, description = "The ticket that carries it", body = Asked),
        (status = 400, description = "No question, or one over 2,000 characters", body = ErrorBody),
        (status = 404, description = "No such report, or not the viewer's", body = ErrorBody),
        (status = 409, description = "The report is a draft", body = ErrorBody),
        (status = 422, description = "The report has its 10 questions already, or the body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn ask(
    viewer: Allowed<Read>,
    Path(report_id): Path<i64>,
    Json(body): Json<Question>,
) -> Result<Json<Asked>, ApiError> {
    let text = checked_text("text", &body.text)?;
    if text.is_empty() {
        return Err(ApiError::BadRequest("a question needs words".into()));
    }
    let mut tx = viewer.begin().await?;
    let row: Option<(i64, String, String)> = sqlx::query_as(
        "select r.unit_id, u.gateway_id, r.status from reports r join units u on u.id = r.unit_id where r.id = $1",
    )
    .bind(report_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (unit, site, status) = row.ok_or(ApiError::NotFound)?;
    if status != "signed" {
        return Err(ApiError::Conflict("a draft is the engineers' own: ask once it is signed".into()));
    }
    // One question of a report at a time, so that the bound holds (customers may not lock the
    // report's row: they do not write reports).
    sqlx::query("select pg_advisory_xact_lock(19, $1::int)").bind(report_id as i32).execute(&mut *tx).await?;
    let asked: i64 = sqlx::query_scalar("select count(*) from tickets where report_id = $1")
        .bind(report_id)
        .fetch_one(&mut *tx)
        .await?;
    if asked >= MAX_QUESTIONS {
        return Err(ApiError::TooMuch(format!("a report takes {MAX_QUESTIONS} questions; call your service engineer")));
    }
    let ticket_id = crate::tickets::open_for_question(&mut tx, report_id, &site, unit, &viewer.actor(), &text).await?;
    tx.commit().await?;
    Ok(Json(Asked { ticket_id }))
}

/// Drafts the report of every unit at a site for a period (each waits for an engineer's
/// signature) and answers the site's summary.
#[utoipa::path(
    post,
    path = "/api/v1/gateways/{gateway_id}/reports",
    tag = "reports",
    params(("gateway_id" = String, Path, description = "The site's gateway id", example = "gw-plant-1")),
    request_body = Period,
    responses(
        (status = 200, description = "The site's summary of the new drafts", body = SiteSummary),
        (status = 400, description = "The period is empty, reversed, longer than 366 days or outside 2000 to tomorrow", body = ErrorBody),
        (status = 403, description = "Only the service organisation's engineers draft reports", body = ErrorBody),
        (status = 404, description = "No such site, or not the viewer's", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn draft_site(
    viewer: Allowed<DraftReports>,
    Path(gateway_id): Path<String>,
    Json(body): Json<Period>,
) -> Result<Json<SiteSummary>, ApiError> {
    let (from, to) = check_period(body.from, body.to)?;
    let mut tx = viewer.begin().await?;
    let units: Vec<i64> = sqlx::query_scalar("select id from units where gateway_id = $1 order by id")
        .bind(&gateway_id)
        .fetch_all(&mut *tx)
        .await?;
    for unit in units {
        if let Some(content) = draft(&mut tx, DoctorRules::shipped(), unit, from, to).await? {
            store_draft(&mut tx, &content, &viewer.actor()).await?;
        }
    }
    let summary = site_summary(&mut tx, &gateway_id, from, to).await?.ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(Json(summary))
}

/// A site's period at a glance: its units' reports of exactly that period, summed (customers:
/// the signed ones).
#[utoipa::path(
    get,
    path = "/api/v1/gateways/{gateway_id}/reports",
    tag = "reports",
    params(("gateway_id" = String, Path, description = "The site's gateway id", example = "gw-plant-1"), Period),
    responses(
        (status = 200, description = "The site's summary", body = SiteSummary),
        (status = 400, description = "The period is empty, reversed, longer than 366 days or outside 2000 to tomorrow", body = ErrorBody),
        (status = 404, description = "No such site, or not the viewer's", body = ErrorBody),
        (status = 503, description = "Too many costly requests under way; try again shortly", body = ErrorBody),
    )
)]
pub(crate) async fn site_report(
    State(state): State<AppState>,
    viewer: Allowed<Read>,
    Path(gateway_id): Path<String>,
    Query(period): Query<Period>,
) -> Result<Json<SiteSummary>, ApiError> {
    let (from, to) = check_period(period.from, period.to)?;
    // Up to 1,000 units' reports: in the history lane, like other costly reads.
    let _place = state.history_lane.enter(&viewer.scope(), &state.metrics).await?;
    let mut tx = viewer.begin().await?;
    Ok(Json(site_summary(&mut tx, &gateway_id, from, to).await?.ok_or(ApiError::NotFound)?))
}
