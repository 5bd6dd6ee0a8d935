//! The tickets API, and the satisfaction link's page.

use axum::{
    Form, Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{TicketAction, TicketStatus, ask_satisfaction, clocks, event, record_satisfaction};
use crate::{
    http::{Allowed, ApiError, AppState, ErrorBody, ReadPaging, ReadTickets, System, SystemState, WorkTickets},
    paging::links,
};

/// Routes for viewers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(open_by_hand))
        .routes(routes!(metrics))
        .routes(routes!(detail))
        .routes(routes!(act))
}

/// The satisfaction link's routes: the signed link is the proof.
pub fn system_routes() -> OpenApiRouter<SystemState> {
    OpenApiRouter::new().route("/f/{token}", get(feedback_page).post(feedback_submit))
}

/// A ticket.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Ticket {
    /// Id.
    pub id: i64,
    /// The alarm it came from.
    pub alarm_id: Option<i64>,
    /// Site.
    pub gateway_id: String,
    /// Unit.
    pub unit_id: Option<i64>,
    /// Grade.
    pub grade: i16,
    /// What it is about.
    pub title: String,
    /// Where it is.
    #[sqlx(try_from = "String")]
    pub status: TicketStatus,
    /// remote or site_visit.
    pub triage: Option<String>,
    /// Parts and tools to bring.
    #[schema(value_type = Vec<String>)]
    pub parts: Value,
    /// The engineer.
    pub assignee_id: Option<i64>,
    /// Opened.
    pub opened_at: DateTime<Utc>,
    /// Respond by.
    pub respond_by: DateTime<Utc>,
    /// Be on site by (site visits).
    pub on_site_by: DateTime<Utc>,
    /// Pass to the maker by, unless resolved.
    pub escalate_by: DateTime<Utc>,
    /// Responded.
    pub responded_at: Option<DateTime<Utc>>,
    /// On site.
    pub on_site_at: Option<DateTime<Utc>>,
    /// Resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Clocks breached.
    pub breached: Vec<String>,
    /// The owner's score, 1 to 5.
    pub satisfaction: Option<i16>,
}

const TICKET: &str = "select id, alarm_id, gateway_id, unit_id, grade, title, status, triage, parts, assignee_id, opened_at,
    respond_by, on_site_by, escalate_by, responded_at, on_site_at, resolved_at, closed_at, breached, satisfaction from tickets";

/// Ticket filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketFilter {
    /// open (not closed, default), closed or all.
    #[param(pattern = "^(open|closed|all)$")]
    pub state: Option<String>,
    /// Only this site's.
    pub gateway: Option<String>,
}

/// Tickets, newest first (at most 500).
#[utoipa::path(
    get,
    path = "/api/v1/tickets",
    tag = "tickets",
    params(TicketFilter),
    responses(
        (status = 200, description = "The tickets", body = Vec<Ticket>),
        (status = 400, description = "An unknown state, or a malformed parameter", body = ErrorBody),
        (status = 403, description = "The viewer's role may not read tickets", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    viewer: Allowed<ReadTickets>,
    Query(filter): Query<TicketFilter>,
) -> Result<Json<Vec<Ticket>>, ApiError> {
    let state_sql = match filter.state.as_deref().unwrap_or("open") {
        "open" => "closed_at is null",
        "closed" => "closed_at is not null",
        "all" => "true",
        other => return Err(ApiError::BadRequest(format!("unknown state {other:?}: open, closed or all"))),
    };
    let tickets = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TICKET} where {state_sql} and ($1::text is null or gateway_id = $1) order by opened_at desc limit 500"
    )))
    .bind(&filter.gateway)
    .fetch_all(&mut *viewer.begin().await?)
    .await?;
    Ok(Json(tickets))
}

/// A ticket opened by hand.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"gateway_id": "demo-gw", "grade": 2, "title": "Customer reports warm supply water"}))]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    /// Site.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub gateway_id: String,
    /// Unit, if one.
    pub unit_id: Option<i64>,
    /// Grade 1 to 4.
    #[schema(minimum = 1, maximum = 4)]
    pub grade: i16,
    /// What the customer asked.
    pub title: String,
}

/// Opens a ticket by hand.
#[utoipa::path(
    post,
    path = "/api/v1/tickets",
    tag = "tickets",
    request_body = NewTicket,
    responses(
        (status = 200, description = "The ticket", body = Ticket),
        (status = 400, description = "A grade out of range, no title, or no such site or unit there", body = ErrorBody),
        (status = 403, description = "The viewer's role may not open tickets", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn open_by_hand(
    viewer: Allowed<WorkTickets>,
    Json(new): Json<NewTicket>,
) -> Result<Json<Ticket>, ApiError> {
    if !(1..=4).contains(&new.grade) || new.title.trim().is_empty() {
        return Err(ApiError::BadRequest("grade 1 to 4 and a title are required".into()));
    }
    let (respond, on_site, escalate) = clocks(new.grade);
    let mut tx = viewer.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "insert into tickets (gateway_id, unit_id, grade, title, respond_by, on_site_by, escalate_by)
         select $1, $2, $3, $4, now() + $5, now() + $6, now() + $7
         where exists (select 1 from gateways where id = $1)
           and ($2::bigint is null or exists (select 1 from units where id = $2 and gateway_id = $1))
         returning id",
    )
    .bind(&new.gateway_id)
    .bind(new.unit_id)
    .bind(new.grade)
    .bind(&new.title)
    .bind(respond)
    .bind(on_site)
    .bind(escalate)
    .fetch_optional(&mut *tx)
    .await?;
    let id = id.ok_or_else(|| ApiError::BadRequest("no such site, or the unit is not at that site".into()))?;
    event(&mut *tx, id, "opened", &viewer.actor(), "opened by hand", None).await?;
    let opened = ticket(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(opened))
}

/// The ticket, if `db` sees it.
async fn ticket(db: &mut sqlx::PgConnection, id: i64) -> Result<Ticket, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{TICKET} where id = $1")))
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Something that happened to a ticket.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct TicketEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// opened, assigned, triaged, responded, on_site, note, resolved, closed, breached, feedback.
    pub kind: String,
    /// Who.
    pub actor: String,
    /// What they said, or which clock was breached.
    pub comment: String,
    /// Data attached.
    pub data: Option<Value>,
}

/// A ticket with its history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TicketDetail {
    /// The ticket.
    pub ticket: Ticket,
    /// What happened to it, oldest first.
    pub events: Vec<TicketEvent>,
}

/// A ticket and its history.
#[utoipa::path(
    get,
    path = "/api/v1/tickets/{ticket_id}",
    tag = "tickets",
    params(("ticket_id" = i64, Path, description = "Ticket id", example = 1)),
    responses(
        (status = 200, description = "The ticket", body = TicketDetail),
        (status = 400, description = "The ticket id is not a number", body = ErrorBody),
        (status = 403, description = "The viewer's role may not read tickets", body = ErrorBody),
        (status = 404, description = "No such ticket, or not the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn detail(viewer: Allowed<ReadTickets>, Path(id): Path<i64>) -> Result<Json<TicketDetail>, ApiError> {
    let mut tx = viewer.begin().await?;
    let ticket = ticket(&mut tx, id).await?;
    let events =
        sqlx::query_as("select at, kind, actor, comment, data from ticket_events where ticket_id = $1 order by id")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
    Ok(Json(TicketDetail { ticket, events }))
}

/// Body of ticket actions.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[schema(example = json!({"comment": "condenser fan replaced", "data": {"amps": 12.5}}))]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// assign: the engineer.
    pub person_id: Option<i64>,
    /// triage: `remote` or `site_visit`.
    #[schema(pattern = "^(remote|site_visit)$")]
    pub triage: Option<String>,
    /// triage: parts and tools, for example `["expansion valve", "gauge set"]`.
    pub parts: Option<Vec<String>>,
    /// Any action: what was done or found.
    #[serde(default)]
    pub comment: String,
    /// note: data attached (readings, photos' references).
    pub data: Option<Value>,
}

/// Works a ticket: `assign` (`person_id`), `triage` (`triage`, `parts`), `respond`, `on_site`,
/// `note` (`comment`, `data`), `resolve`, or `close` (which asks the owner for a score).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{ticket_id}/{action}",
    tag = "tickets",
    params(
        ("ticket_id" = i64, Path, description = "Ticket id", example = 1),
        ("action" = String, Path, description = "What to do",
         pattern = "^(assign|triage|respond|on_site|note|resolve|close)$"),
    ),
    request_body = Action,
    responses(
        (status = 200, description = "The ticket as it is now", body = Ticket),
        (status = 400, description = "An unknown action, or what it needs is missing or invalid", body = ErrorBody),
        (status = 403, description = "The viewer's role may not work tickets", body = ErrorBody),
        (status = 404, description = "No such ticket", body = ErrorBody),
        (status = 409, description = "The ticket is closed, or not resolved before closing", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn act(
    State(state): State<AppState>,
    viewer: Allowed<WorkTickets>,
    Path((id, action)): Path<(i64, String)>,
    Json(body): Json<Action>,
) -> Result<Json<Ticket>, ApiError> {
    let mut tx = viewer.begin().await?;
    let current = ticket(&mut tx, id).await?;
    if current.closed_at.is_some() {
        return Err(ApiError::Conflict("the ticket is closed".into()));
    }
    let action = TicketAction::try_from(action)
        .map_err(|unknown| ApiError::BadRequest(format!("unknown action {:?}", unknown.name)))?;
    let (sql, data): (&str, Option<Value>) = match action {
        TicketAction::Assign => {
            let person = body.person_id.ok_or_else(|| ApiError::BadRequest("person_id is required".into()))?;
            let exists: bool = sqlx::query_scalar("select exists (select 1 from people where id = $1)")
                .bind(person)
                .fetch_one(&mut *tx)
                .await?;
            if !exists {
                return Err(ApiError::BadRequest(format!("no person {person}")));
            }
            sqlx::query("update tickets set assignee_id = $2 where id = $1")
                .bind(id)
                .bind(person)
                .execute(&mut *tx)
                .await?;
            ("", Some(json!({"person_id": person})))
        }
        TicketAction::Triage => {
            let triage = body.triage.clone().filter(|t| t == "remote" || t == "site_visit");
            let triage = triage.ok_or_else(|| ApiError::BadRequest("triage is remote or site_visit".into()))?;
            let parts = json!(body.parts.clone().unwrap_or_default());
            sqlx::query("update tickets set triage = $2, parts = $3 where id = $1")
                .bind(id)
                .bind(&triage)
                .bind(&parts)
                .execute(&mut *tx)
                .await?;
            ("", Some(json!({"triage": triage, "parts": parts})))
        }
        TicketAction::Respond => {
            ("update tickets set status = $2, responded_at = coalesce(responded_at, now()) where id = $1", None)
        }
        TicketAction::OnSite => (
            "update tickets set status = $2, on_site_at = coalesce(on_site_at, now()),
                 responded_at = coalesce(responded_at, now()) where id = $1",
            None,
        ),
        TicketAction::Note => ("", body.data.clone()),
        TicketAction::Resolve => (
            "update tickets set status = $2, resolved_at = coalesce(resolved_at, now()),
                 responded_at = coalesce(responded_at, now()) where id = $1",
            None,
        ),
        TicketAction::Close => {
            if current.resolved_at.is_none() {
                return Err(ApiError::Conflict("resolve the ticket before closing it".into()));
            }
            ("update tickets set status = $2, closed_at = now() where id = $1", None)
        }
    };
    if let Some(status) = action.status() {
        sqlx::query(sql).bind(id).bind(status.as_str()).execute(&mut *tx).await?;
    }
    event(&mut *tx, id, action.event(), &viewer.actor(), &body.comment, data).await?;
    if action == TicketAction::Close {
        ask_satisfaction(&mut tx, &state.paging, id).await?;
    }
    let acted = ticket(&mut tx, id).await?;
    tx.commit().await?;
    if action == TicketAction::Close {
        state.paging.wake.notify_one();
    }
    Ok(Json(acted))
}

/// Metrics period and grouping.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// Tickets opened from (default 30 days ago).
    pub from: Option<DateTime<Utc>>,
    /// To (default now).
    pub to: Option<DateTime<Utc>>,
    /// `site` (default) or `assignee`.
    #[param(pattern = "^(site|assignee)$")]
    pub by: Option<String>,
}

/// Ticket metrics of one site or engineer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TicketMetrics {
    /// The site, or the engineer's name.
    pub group: String,
    /// Tickets opened in the period.
    pub tickets: i64,
    /// Mean minutes from the alarm to its acknowledgement.
    pub minutes_to_acknowledge: Option<f64>,
    /// Mean minutes from opening to responding.
    pub minutes_to_respond: Option<f64>,
    /// Mean minutes from opening to resolving.
    pub minutes_to_resolve: Option<f64>,
    /// Share of tickets responded to within their clock.
    pub responded_within_target: Option<f64>,
    /// Share of tickets resolved within their clock.
    pub resolved_within_target: Option<f64>,
    /// Mean satisfaction score, 1 to 5.
    pub satisfaction: Option<f64>,
}

/// Time to acknowledge, respond and resolve, share within target and satisfaction, per site or
/// engineer, of tickets opened in a period.
#[utoipa::path(
    get,
    path = "/api/v1/tickets/metrics",
    tag = "tickets",
    params(MetricsQuery),
    responses(
        (status = 200, description = "One row per site or engineer", body = Vec<TicketMetrics>),
        (status = 400, description = "An unknown grouping, a period over 366 days, or a malformed parameter", body = ErrorBody),
        (status = 403, description = "The viewer's role may not read metrics", body = ErrorBody),
    )
)]
pub(crate) async fn metrics(
    viewer: Allowed<ReadPaging>,
    Query(query): Query<MetricsQuery>,
) -> Result<Json<Vec<TicketMetrics>>, ApiError> {
    let to = query.to.unwrap_or_else(Utc::now);
    let from = match query.from {
        Some(from) => from,
        None => to.checked_sub_signed(Duration::days(30)).ok_or(ApiError::BadRequest("`to` is out of range".into()))?,
    };
    if to - from > Duration::days(366) {
        return Err(ApiError::BadRequest("a period of at most 366 days".into()));
    }
    let group = match query.by.as_deref().unwrap_or("site") {
        "site" => "t.gateway_id",
        "assignee" => "coalesce(p.name, '(unassigned)')",
        other => return Err(ApiError::BadRequest(format!("unknown grouping {other:?}: site or assignee"))),
    };
    type Row = (String, i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>);
    let rows: Vec<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {group}, count(*),
                avg(extract(epoch from a.acknowledged_at - a.raised_at) / 60)::float8,
                avg(extract(epoch from t.responded_at - t.opened_at) / 60)::float8,
                avg(extract(epoch from t.resolved_at - t.opened_at) / 60)::float8,
                (avg(case when t.responded_at <= t.respond_by then 1.0 when t.responded_at is not null or now() > t.respond_by then 0.0 end))::float8,
                (avg(case when t.resolved_at <= t.escalate_by then 1.0 when t.resolved_at is not null or now() > t.escalate_by then 0.0 end))::float8,
                avg(t.satisfaction)::float8
             from tickets t left join alarms a on a.id = t.alarm_id left join people p on p.id = t.assignee_id
             where t.opened_at >= $1 and t.opened_at < $2 group by 1 order by 1"
        )))
        .bind(from)
        .bind(to)
        .fetch_all(&mut *viewer.begin().await?)
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|(group, tickets, ack, respond, resolve, respond_share, resolve_share, satisfaction)| TicketMetrics {
                group,
                tickets,
                minutes_to_acknowledge: ack,
                minutes_to_respond: respond,
                minutes_to_resolve: resolve,
                responded_within_target: respond_share,
                resolved_within_target: resolve_share,
                satisfaction,
            })
            .collect(),
    ))
}

async fn feedback_grant(state: &AppState, token: &str) -> Result<links::Grant, Response> {
    links::verify(&state.paging.link_secret, links::Purpose::Feedback, token, Utc::now().timestamp())
        .map_err(|e| (StatusCode::FORBIDDEN, Html(format!("<p>{e}</p>"))).into_response())
}

async fn feedback_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    match feedback_grant(&state, &token).await {
        Ok(grant) => {
            let buttons: String = (1..=5)
                .map(|n| format!(r#"<button name="score" value="{n}" style="font-size:1.5em;margin:.2em;padding:.5em 1em">{n}</button>"#))
                .collect();
            Html(format!(
                r#"<!doctype html><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>Chillcloud</title><h1>Job #{} / 服务单 #{}</h1><p>How satisfied are you? 请评分（5 最满意）</p><form method="post">{buttons}</form>"#,
                grant.subject, grant.subject
            ))
            .into_response()
        }
        Err(response) => response,
    }
}

/// The score form.
#[derive(Debug, Deserialize)]
pub struct ScoreForm {
    /// 1 to 5.
    pub score: i16,
}

async fn feedback_submit(
    State(state): State<AppState>,
    system: System,
    Path(token): Path<String>,
    Form(form): Form<ScoreForm>,
) -> Response {
    let grant = match feedback_grant(&state, &token).await {
        Ok(grant) => grant,
        Err(response) => return response,
    };
    if !(1..=5).contains(&form.score) {
        return (StatusCode::BAD_REQUEST, Html("<p>score 1 to 5</p>".to_owned())).into_response();
    }
    let actor = format!("person {} (link)", grant.person_id);
    match record_satisfaction(&system.db, grant.subject, form.score, &actor).await {
        Ok(_) => Html("<p>Thank you. 谢谢！</p>".to_owned()).into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
