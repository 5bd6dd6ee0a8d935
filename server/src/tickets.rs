//! Service tickets: the job behind an alarm, tracked against the response clocks of its grade.
//!
//! A ticket opens from an alarm (automatically for the grades in `auto_open_grades`, grade 1
//! and 2 by default) or by hand. Its clocks come from the service table in PRODUCT.md: respond
//! within 1 h (grade 1) or 2 h, be on site within 4, 24, 48 or 96 h, pass to the maker within
//! 2, 24, 48 or 96 h. A breached clock is recorded and the site's managers are paged. Triage
//! decides remote guidance or a site visit with its parts and tools. On closing, the owner is
//! asked for a 1 to 5 score by SMS (reply `<score> <code>`) or a signed link.

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use tracing::info;
use utoipa::{IntoParams, ToSchema};

use crate::{
    accounts::{Allowed, ReadPaging, ReadTickets, WorkTickets},
    api::{ApiError, AppState},
    openapi::ErrorBody,
    paging::{Paging, links, outbox, providers::Kind},
};

/// The clocks of a grade: respond, be on site, pass to the maker.
pub fn clocks(grade: i16) -> (Duration, Duration, Duration) {
    match grade {
        1 => (Duration::hours(1), Duration::hours(4), Duration::hours(2)),
        2 => (Duration::hours(2), Duration::hours(24), Duration::hours(24)),
        3 => (Duration::hours(2), Duration::hours(48), Duration::hours(48)),
        _ => (Duration::hours(2), Duration::hours(96), Duration::hours(96)),
    }
}

async fn event(
    db: impl sqlx::PgExecutor<'_>,
    ticket: i64,
    kind: &str,
    actor: &str,
    comment: &str,
    data: Option<Value>,
) -> sqlx::Result<()> {
    sqlx::query("insert into ticket_events (ticket_id, kind, actor, comment, data) values ($1, $2, $3, $4, $5)")
        .bind(ticket)
        .bind(kind)
        .bind(actor)
        .bind(comment)
        .bind(data)
        .execute(db)
        .await?;
    Ok(())
}

/// Opens the ticket of an alarm (once); returns its id when it was opened now. It runs in the
/// caller's transaction, so a ticket is opened with the event that asked for it or not at all.
pub async fn open_for_alarm(db: &mut sqlx::PgConnection, alarm_id: i64, scale: f64) -> sqlx::Result<Option<i64>> {
    let grade: Option<i16> =
        sqlx::query_scalar("select grade from alarms where id = $1").bind(alarm_id).fetch_optional(&mut *db).await?;
    let Some(grade) = grade else { return Ok(None) };
    let (respond, on_site, escalate) = scaled(clocks(grade), scale);
    let id: Option<i64> = sqlx::query_scalar(
        "insert into tickets (alarm_id, gateway_id, unit_id, grade, title, respond_by, on_site_by, escalate_by)
         select id, gateway_id, unit_id, grade, title || coalesce(' (' || (select device_key from units where id = unit_id) || ')', ''),
                now() + $2, now() + $3, now() + $4
         from alarms where id = $1
         on conflict (alarm_id) do nothing returning id",
    )
    .bind(alarm_id)
    .bind(respond)
    .bind(on_site)
    .bind(escalate)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(id) = id {
        event(&mut *db, id, "opened", "system", "opened from the alarm", Some(json!({"alarm_id": alarm_id}))).await?;
        info!(ticket = id, alarm = alarm_id, "ticket opened");
    }
    Ok(id)
}

/// Clocks shortened by `scale` (1.0 in production; tests run hours as seconds).
fn scaled((a, b, c): (Duration, Duration, Duration), scale: f64) -> (Duration, Duration, Duration) {
    let s = |d: Duration| Duration::milliseconds((d.num_milliseconds() as f64 * scale) as i64);
    (s(a), s(b), s(c))
}

/// Records breached clocks and pages the site's managers about them; returns messages enqueued.
pub async fn check_breaches(pool: &PgPool) -> sqlx::Result<usize> {
    let breaches: Vec<(i64, String, i16, String, String)> = sqlx::query_as(
        "select t.id, t.gateway_id, t.grade, t.title, c.clock from tickets t,
             lateral (values ('respond', t.responded_at is null and t.respond_by < now()),
                             ('on_site', t.on_site_at is null and t.triage = 'site_visit' and t.on_site_by < now()),
                             ('escalate', t.resolved_at is null and t.escalate_by < now())) as c(clock, late)
         where t.closed_at is null and c.late and not c.clock = any(t.breached)",
    )
    .fetch_all(pool)
    .await?;
    let mut enqueued = 0;
    for (ticket, gateway, grade, title, clock) in breaches {
        let updated = sqlx::query(
            "update tickets set breached = array_append(breached, $2) where id = $1 and not $2 = any(breached)",
        )
        .bind(ticket)
        .bind(&clock)
        .execute(pool)
        .await?
        .rows_affected();
        if updated == 0 {
            continue;
        }
        event(pool, ticket, "breached", "system", &clock, None).await?;
        let managers: Vec<(i64, String, Option<String>, String)> = sqlx::query_as(
            "select p.id, p.name, p.phone, p.language from site_contacts c join people p on p.id = c.person_id
             where c.gateway_id = $1 and c.role = 'manager'",
        )
        .bind(&gateway)
        .fetch_all(pool)
        .await?;
        for (person, _, phone, language) in managers {
            let Some(phone) = phone else { continue };
            let what = match (clock.as_str(), language.as_str()) {
                ("respond", "zh") => "响应超时",
                ("on_site", "zh") => "到场超时",
                (_, "zh") => "未按时解决，需上报厂家",
                ("respond", _) => "response clock breached",
                ("on_site", _) => "on-site clock breached",
                _ => "not resolved in time: pass to the maker",
            };
            let body = format!("Chillcloud ticket #{ticket} G{grade} {title}: {what}");
            let message = outbox::NewMessage {
                idempotency_key: format!("ticket-{ticket}-breach-{clock}-person-{person}"),
                alarm_id: None,
                ticket_id: Some(ticket),
                person_id: person,
                channel: "sms",
                address: phone,
                language,
                params: json!({
                    "kind": Kind::Breach.name(), "ticket": ticket.to_string(), "grade": grade.to_string(),
                    "unit": format!("#{ticket}"), "fault": title, "clock": what,
                }),
                body,
                reply_code: None,
            };
            if outbox::enqueue(pool, &message).await? {
                enqueued += 1;
            }
        }
    }
    Ok(enqueued)
}

/// Asks the site's owner contacts for a score of the closed ticket.
async fn ask_satisfaction(pool: &PgPool, paging: &Paging, ticket: i64) -> sqlx::Result<()> {
    let owners: Vec<(i64, Option<String>, String, String)> = sqlx::query_as(
        "select p.id, p.phone, p.language, t.title from tickets t join site_contacts c on c.gateway_id = t.gateway_id
         join people p on p.id = c.person_id where t.id = $1 and c.role = 'owner'",
    )
    .bind(ticket)
    .fetch_all(pool)
    .await?;
    for (person, phone, language, title) in owners {
        let Some(phone) = phone else { continue };
        let grant = links::Grant { subject: ticket, person_id: person, expires: Utc::now().timestamp() + 14 * 86_400 };
        let token = links::sign(&paging.link_secret, links::Purpose::Feedback, &grant);
        let link = format!("{}/f/{token}", paging.public_url);
        let code = crate::paging::reply_code();
        let body = if language == "zh" {
            format!("Chillcloud 服务单 #{ticket}（{title}）已完成。请评分：回复 1-5 {code} 或打开 {link}")
        } else {
            format!(
                "Chillcloud job #{ticket} ({title}) is done. How satisfied are you? Reply 1-5 {code} or open {link}"
            )
        };
        let message = outbox::NewMessage {
            idempotency_key: format!("ticket-{ticket}-feedback-person-{person}"),
            alarm_id: None,
            ticket_id: Some(ticket),
            person_id: person,
            channel: "sms",
            address: phone,
            language,
            params: json!({
                "kind": Kind::Feedback.name(), "ticket": ticket.to_string(), "unit": format!("#{ticket}"),
                "fault": title, "code": code, "token": token, "link": link,
            }),
            body,
            reply_code: Some(code),
        };
        outbox::enqueue(pool, &message).await?;
    }
    paging.wake.notify_one();
    Ok(())
}

/// Records a satisfaction score (the first one counts).
pub async fn record_satisfaction(pool: &PgPool, ticket: i64, score: i16, actor: &str) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "update tickets set satisfaction = $2, satisfaction_at = now() where id = $1 and satisfaction is null and closed_at is not null",
    )
    .bind(ticket)
    .bind(score)
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 1 {
        event(pool, ticket, "feedback", actor, &score.to_string(), None).await?;
    }
    Ok(updated == 1)
}

/// Ticket routes behind the API token.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tickets", get(list).post(open_by_hand))
        .route("/tickets/metrics", get(metrics))
        .route("/tickets/{ticket_id}", get(detail))
        .route("/tickets/{ticket_id}/{action}", post(act))
}

/// The satisfaction link's routes.
pub fn public_routes() -> Router<AppState> {
    Router::new().route("/f/{token}", get(feedback_page).post(feedback_submit))
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
    /// open, responded, on_site, resolved, closed.
    pub status: String,
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
    State(state): State<AppState>,
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
    .fetch_all(&mut *viewer.begin(&state.api_pool).await?)
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
    State(state): State<AppState>,
    viewer: Allowed<WorkTickets>,
    Json(new): Json<NewTicket>,
) -> Result<Json<Ticket>, ApiError> {
    if !(1..=4).contains(&new.grade) || new.title.trim().is_empty() {
        return Err(ApiError::BadRequest("grade 1 to 4 and a title are required".into()));
    }
    let (respond, on_site, escalate) = clocks(new.grade);
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
    .fetch_optional(&state.pool)
    .await?;
    let id = id.ok_or_else(|| ApiError::BadRequest("no such site, or the unit is not at that site".into()))?;
    event(&state.pool, id, "opened", &viewer.actor(), "opened by hand", None).await?;
    Ok(Json(ticket(&mut *state.pool.acquire().await?, id).await?))
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
pub(crate) async fn detail(
    State(state): State<AppState>,
    viewer: Allowed<ReadTickets>,
    Path(id): Path<i64>,
) -> Result<Json<TicketDetail>, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
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
    let current = ticket(&mut *state.pool.acquire().await?, id).await?;
    if current.closed_at.is_some() {
        return Err(ApiError::Conflict("the ticket is closed".into()));
    }
    let pool = &state.pool;
    let (sql, data): (&str, Option<Value>) = match action.as_str() {
        "assign" => {
            let person = body.person_id.ok_or_else(|| ApiError::BadRequest("person_id is required".into()))?;
            let exists: bool = sqlx::query_scalar("select exists (select 1 from people where id = $1)")
                .bind(person)
                .fetch_one(pool)
                .await?;
            if !exists {
                return Err(ApiError::BadRequest(format!("no person {person}")));
            }
            sqlx::query("update tickets set assignee_id = $2 where id = $1")
                .bind(id)
                .bind(person)
                .execute(pool)
                .await?;
            ("", Some(json!({"person_id": person})))
        }
        "triage" => {
            let triage = body.triage.clone().filter(|t| t == "remote" || t == "site_visit");
            let triage = triage.ok_or_else(|| ApiError::BadRequest("triage is remote or site_visit".into()))?;
            let parts = json!(body.parts.clone().unwrap_or_default());
            sqlx::query("update tickets set triage = $2, parts = $3 where id = $1")
                .bind(id)
                .bind(&triage)
                .bind(&parts)
                .execute(pool)
                .await?;
            ("", Some(json!({"triage": triage, "parts": parts})))
        }
        "respond" => (
            "update tickets set status = 'responded', responded_at = coalesce(responded_at, now()) where id = $1",
            None,
        ),
        "on_site" => (
            "update tickets set status = 'on_site', on_site_at = coalesce(on_site_at, now()),
                 responded_at = coalesce(responded_at, now()) where id = $1",
            None,
        ),
        "note" => ("", body.data.clone()),
        "resolve" => (
            "update tickets set status = 'resolved', resolved_at = coalesce(resolved_at, now()),
                 responded_at = coalesce(responded_at, now()) where id = $1",
            None,
        ),
        "close" => {
            if current.resolved_at.is_none() {
                return Err(ApiError::Conflict("resolve the ticket before closing it".into()));
            }
            ("update tickets set status = 'closed', closed_at = now() where id = $1", None)
        }
        other => return Err(ApiError::BadRequest(format!("unknown action {other:?}"))),
    };
    if !sql.is_empty() {
        sqlx::query(sql).bind(id).execute(pool).await?;
    }
    let kind = if action == "assign" {
        "assigned"
    } else if action == "triage" {
        "triaged"
    } else {
        action.as_str()
    };
    let kind = match kind {
        "respond" => "responded",
        "resolve" => "resolved",
        "close" => "closed",
        other => other,
    };
    event(pool, id, kind, &viewer.actor(), &body.comment, data).await?;
    if action == "close" {
        ask_satisfaction(pool, &state.paging, id).await?;
    }
    Ok(Json(ticket(&mut *state.pool.acquire().await?, id).await?))
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
        (status = 400, description = "An unknown grouping, or a malformed parameter", body = ErrorBody),
        (status = 403, description = "The viewer's role may not read metrics", body = ErrorBody),
    )
)]
pub(crate) async fn metrics(
    State(state): State<AppState>,
    _: Allowed<ReadPaging>,
    Query(query): Query<MetricsQuery>,
) -> Result<Json<Vec<TicketMetrics>>, ApiError> {
    let to = query.to.unwrap_or_else(Utc::now);
    let from = match query.from {
        Some(from) => from,
        None => to.checked_sub_signed(Duration::days(30)).ok_or(ApiError::BadRequest("`to` is out of range".into()))?,
    };
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
        .fetch_all(&state.pool)
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
    match record_satisfaction(&state.pool, grant.subject, form.score, &actor).await {
        Ok(_) => Html("<p>Thank you. 谢谢！</p>".to_owned()).into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
