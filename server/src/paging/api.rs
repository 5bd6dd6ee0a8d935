//! Paging endpoints: people, site contacts, rotations and policies, the outbox (where the
//! console provider's messages are read), and the two ways to acknowledge without signing in:
//! the signed link (`/a/{token}`) and the SMS reply webhook (`/hooks/twilio`).

use axum::{
    Form, Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use utoipa_axum::{router::OpenApiRouter, routes};

use super::{links, policy::Policies, providers};
use crate::{
    alarms::db as alarm_db,
    http::{
        Allowed, ApiError, AppState, ErrorBody, ManagePaging, ReadPaging, System, SystemState, limit, require_site,
    },
    secrets::{constant_time_eq, escape_html},
};

/// Routes for viewers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_people))
        .routes(routes!(add_person))
        .routes(routes!(list_contacts))
        .routes(routes!(add_contact))
        .routes(routes!(site_paging, set_site_paging))
        .routes(routes!(list_rotations, add_rotation))
        .routes(routes!(add_override))
        .routes(routes!(list_outbox))
}

/// Routes that carry their own proof: a signed link, or a provider's signature.
pub fn system_routes() -> OpenApiRouter<SystemState> {
    OpenApiRouter::new()
        .route("/a/{token}", get(link_page).post(link_acknowledge))
        .route("/hooks/twilio", post(twilio_reply))
        .route("/hooks/aliyun/{token}", post(aliyun_reply))
        .route("/hooks/tencent/{token}", post(tencent_reply))
}

/// A person who can be paged.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
#[schema(example = json!({"name": "Wang Wei", "phone": "+8613800138000", "email": "wang.wei@example.com",
    "language": "zh"}))]
pub struct Person {
    /// Id.
    #[serde(default)]
    pub id: i64,
    /// Name.
    pub name: String,
    /// Phone, E.164 (`+` and 8 to 15 digits).
    #[schema(pattern = r"^\+[0-9]{8,15}$")]
    pub phone: Option<String>,
    /// E-mail.
    #[schema(format = Email)]
    pub email: Option<String>,
    /// `en` or `zh`.
    #[serde(default = "english")]
    #[schema(pattern = "^(en|zh)$")]
    pub language: String,
}

fn english() -> String {
    "en".into()
}

/// Everyone who can be paged.
#[utoipa::path(
    get,
    path = "/api/v1/people",
    tag = "paging",
    responses(
        (status = 200, description = "People, by id", body = Vec<Person>),
        (status = 403, description = "The viewer's role may not read people", body = ErrorBody),
    )
)]
pub(crate) async fn list_people(viewer: Allowed<ReadPaging>) -> Result<Json<Vec<Person>>, ApiError> {
    let mut tx = viewer.begin().await?;
    Ok(Json(
        sqlx::query_as("select id, name, phone, email, language from people order by id").fetch_all(&mut *tx).await?,
    ))
}

/// Adds a person who can be paged.
#[utoipa::path(
    post,
    path = "/api/v1/people",
    tag = "paging",
    request_body = Person,
    responses(
        (status = 200, description = "The person, with their id", body = Person),
        (status = 400, description = "An invalid phone, e-mail address, language or name", body = ErrorBody),
        (status = 403, description = "The viewer's role may not manage people", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn add_person(
    viewer: Allowed<ManagePaging>,
    Json(person): Json<Person>,
) -> Result<Json<Person>, ApiError> {
    if let Some(phone) = &person.phone {
        let digits = phone.strip_prefix('+').unwrap_or_default();
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::BadRequest(format!("phone {phone:?}: use E.164, for example +8613800138000")));
        }
    }
    if person.email.as_deref().is_some_and(|e| e.parse::<lettre::Address>().is_err()) {
        return Err(ApiError::BadRequest("email is not an e-mail address".into()));
    }
    if !["en", "zh"].contains(&person.language.as_str()) {
        return Err(ApiError::BadRequest("language is en or zh".into()));
    }
    if person.name.trim().is_empty() {
        return Err(ApiError::BadRequest("name is required".into()));
    }
    let mut tx = viewer.begin().await?;
    let id: i64 =
        sqlx::query_scalar("insert into people (name, phone, email, language) values ($1, $2, $3, $4) returning id")
            .bind(&person.name)
            .bind(&person.phone)
            .bind(&person.email)
            .bind(&person.language)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Json(Person { id, ..person }))
}

/// A person's role at a site.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
#[schema(example = json!({"person_id": 1, "role": "owner"}))]
pub struct Contact {
    /// The person.
    pub person_id: i64,
    /// `owner`, `service` or `manager`.
    #[schema(pattern = "^(owner|service|manager)$")]
    pub role: String,
}

/// A site's contacts: who is its owner, service team and managers.
#[utoipa::path(
    get,
    path = "/api/v1/gateways/{gateway_id}/contacts",
    tag = "paging",
    params(
        ("gateway_id" = String, Path, description = "Gateway (site) id", pattern = "^[A-Za-z0-9_-]{1,64}$",
         example = "demo-gw"),
    ),
    responses(
        (status = 200, description = "The site's contacts", body = Vec<Contact>),
        (status = 403, description = "The viewer's role may not read contacts", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    )
)]
pub(crate) async fn list_contacts(
    viewer: Allowed<ReadPaging>,
    Path(gateway): Path<String>,
) -> Result<Json<Vec<Contact>>, ApiError> {
    let mut tx = viewer.begin().await?;
    require_site(&mut tx, &gateway).await?;
    Ok(Json(
        sqlx::query_as("select person_id, role from site_contacts where gateway_id = $1 order by role, person_id")
            .bind(&gateway)
            .fetch_all(&mut *tx)
            .await?,
    ))
}

/// Makes a person a contact of a site, in a role.
#[utoipa::path(
    post,
    path = "/api/v1/gateways/{gateway_id}/contacts",
    tag = "paging",
    params(
        ("gateway_id" = String, Path, description = "Gateway (site) id", pattern = "^[A-Za-z0-9_-]{1,64}$",
         example = "demo-gw"),
    ),
    request_body = Contact,
    responses(
        (status = 200, description = "The contact", body = Contact),
        (status = 400, description = "An unknown role or person", body = ErrorBody),
        (status = 403, description = "The viewer's role may not manage contacts", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn add_contact(
    viewer: Allowed<ManagePaging>,
    Path(gateway): Path<String>,
    Json(contact): Json<Contact>,
) -> Result<Json<Contact>, ApiError> {
    let mut tx = viewer.begin().await?;
    require_site(&mut tx, &gateway).await?;
    if !["owner", "service", "manager"].contains(&contact.role.as_str()) {
        return Err(ApiError::BadRequest("role is owner, service or manager".into()));
    }
    let person: bool = sqlx::query_scalar("select exists (select 1 from people where id = $1)")
        .bind(contact.person_id)
        .fetch_one(&mut *tx)
        .await?;
    if !person {
        return Err(ApiError::BadRequest(format!("no person {}", contact.person_id)));
    }
    sqlx::query("insert into site_contacts (gateway_id, person_id, role) values ($1, $2, $3) on conflict do nothing")
        .bind(&gateway)
        .bind(contact.person_id)
        .bind(&contact.role)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(contact))
}

/// A site's paging: its on-call rotation and, optionally, its own policies by grade.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"rotation_id": 1, "policy": {"grades": {"1": {"levels": [
    {"after_s": 0, "notify": ["on_call", "owner"]}, {"after_s": 300, "notify": ["service"]}], "repeat_s": 600}}}}))]
pub struct SitePaging {
    /// On-call rotation.
    pub rotation_id: Option<i64>,
    /// Policies by grade (`{"grades": {"1": {"levels": [...], "repeat_s": 600}}}`).
    pub policy: Option<Policies>,
}

/// A site's paging as it stands: its rotation, its own policies if any, and the policy that
/// applies to each grade (its own, else the default).
#[derive(Debug, Serialize, ToSchema)]
pub struct SitePagingState {
    /// On-call rotation.
    pub rotation_id: Option<i64>,
    /// The site's own policies, if it has any.
    pub policy: Option<Policies>,
    /// The policy each grade follows, `1` to `4`.
    #[schema(value_type = std::collections::BTreeMap<String, super::policy::Policy>)]
    pub grades: std::collections::BTreeMap<u8, super::policy::Policy>,
}

/// A site's on-call rotation and paging policies.
#[utoipa::path(
    get,
    path = "/api/v1/gateways/{gateway_id}/paging",
    tag = "paging",
    params(
        ("gateway_id" = String, Path, description = "Gateway (site) id", pattern = "^[A-Za-z0-9_-]{1,64}$",
         example = "demo-gw"),
    ),
    responses(
        (status = 200, description = "The site's paging", body = SitePagingState),
        (status = 403, description = "The viewer's role may not read paging", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    )
)]
pub(crate) async fn site_paging(
    viewer: Allowed<ReadPaging>,
    Path(gateway): Path<String>,
) -> Result<Json<SitePagingState>, ApiError> {
    let mut tx = viewer.begin().await?;
    require_site(&mut tx, &gateway).await?;
    let row: Option<(Option<i64>, Option<Value>)> =
        sqlx::query_as("select rotation_id, policy from site_paging where gateway_id = $1")
            .bind(&gateway)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    let (rotation_id, policy) = row.unwrap_or_default();
    let policy: Option<Policies> = policy.and_then(|p| serde_json::from_value(p).ok());
    let own = policy.clone().unwrap_or_default();
    let grades = (1..=4).map(|grade| (grade, own.for_grade(grade))).collect();
    Ok(Json(SitePagingState { rotation_id, policy, grades }))
}

/// Sets a site's on-call rotation and paging policies.
#[utoipa::path(
    put,
    path = "/api/v1/gateways/{gateway_id}/paging",
    tag = "paging",
    params(
        ("gateway_id" = String, Path, description = "Gateway (site) id", pattern = "^[A-Za-z0-9_-]{1,64}$",
         example = "demo-gw"),
    ),
    request_body = SitePaging,
    responses(
        (status = 200, description = "The site's paging as set", body = SitePaging),
        (status = 400, description = "An invalid policy, or no such rotation", body = ErrorBody),
        (status = 403, description = "The viewer's role may not manage paging", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn set_site_paging(
    viewer: Allowed<ManagePaging>,
    Path(gateway): Path<String>,
    Json(paging): Json<SitePaging>,
) -> Result<Json<SitePaging>, ApiError> {
    let mut tx = viewer.begin().await?;
    require_site(&mut tx, &gateway).await?;
    if let Some(policies) = &paging.policy {
        for grade in 1..=4 {
            policies.for_grade(grade).check().map_err(|e| ApiError::BadRequest(format!("grade {grade}: {e}")))?;
        }
    }
    let policy = paging.policy.as_ref().map(|p| serde_json::to_value(p).unwrap_or(Value::Null));
    sqlx::query(
        "insert into site_paging (gateway_id, rotation_id, policy) values ($1, $2, $3)
         on conflict (gateway_id) do update set rotation_id = excluded.rotation_id, policy = excluded.policy",
    )
    .bind(&gateway)
    .bind(paging.rotation_id)
    .bind(policy)
    .execute(&mut *tx)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => ApiError::BadRequest("no such rotation".into()),
        other => ApiError::Database(other),
    })?;
    tx.commit().await?;
    Ok(Json(paging))
}

/// An on-call rotation.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Service team", "period_days": 7, "starts_at": "2026-01-05T08:00:00Z", "members": [1]}))]
pub struct Rotation {
    /// Id.
    #[serde(default)]
    pub id: i64,
    /// Name.
    pub name: String,
    /// Turns of 1 (daily) or 7 (weekly) days.
    pub period_days: i32,
    /// When the first member's first turn starts (the handover time of day and weekday).
    pub starts_at: DateTime<Utc>,
    /// People in turn order.
    #[schema(min_items = 1)]
    pub members: Vec<i64>,
}

/// A rotation's turn.
#[derive(Debug, Serialize, ToSchema)]
pub struct Turn {
    /// Who is on call.
    pub person_id: i64,
    /// From.
    pub starts_at: DateTime<Utc>,
    /// Until.
    pub ends_at: DateTime<Utc>,
}

/// A rotation, who is on call now, the coming turns and the overrides not yet over.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotationSchedule {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Turns of 1 (daily) or 7 (weekly) days.
    pub period_days: i32,
    /// When the first member's first turn starts.
    pub starts_at: DateTime<Utc>,
    /// People in turn order.
    pub members: Vec<i64>,
    /// Who is paged as on call now (an override wins).
    pub on_call_now: Option<i64>,
    /// This turn and the next five.
    pub turns: Vec<Turn>,
    /// Others on call for a while, now or later.
    pub overrides: Vec<Turn>,
}

/// Turns shown per rotation.
const TURNS_SHOWN: usize = 6;

/// The rotations, each with who is on call now and when each of the next turns is (by the rule
/// paging follows).
#[utoipa::path(
    get,
    path = "/api/v1/rotations",
    tag = "paging",
    responses(
        (status = 200, description = "Rotations, by id", body = Vec<RotationSchedule>),
        (status = 403, description = "The viewer's role may not read rotations", body = ErrorBody),
    )
)]
pub(crate) async fn list_rotations(viewer: Allowed<ReadPaging>) -> Result<Json<Vec<RotationSchedule>>, ApiError> {
    let mut tx = viewer.begin().await?;
    let rotations: Vec<Rotation> =
        sqlx::query_as("select id, name, period_days, starts_at, members from rotations order by id limit 500")
            .fetch_all(&mut *tx)
            .await?;
    let overrides: Vec<(i64, i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "select rotation_id, person_id, starts_at, ends_at from rotation_overrides where ends_at > now()
         order by starts_at limit 5000",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let now = Utc::now().timestamp_millis();
    let time = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let schedules = rotations
        .into_iter()
        .map(|Rotation { id, name, period_days, starts_at, members }| {
            let own: Vec<(i64, i64, i64)> = (overrides.iter())
                .filter(|o| o.0 == id)
                .map(|o| (o.1, o.2.timestamp_millis(), o.3.timestamp_millis()))
                .collect();
            let period = i64::from(period_days);
            let start = starts_at.timestamp_millis();
            let on_call_now = super::policy::on_call(&members, period, start, &own, now);
            let turn =
                |(person_id, from, to): (i64, i64, i64)| Turn { person_id, starts_at: time(from), ends_at: time(to) };
            let turns = super::policy::turns(&members, period, start, now, TURNS_SHOWN).into_iter().map(turn).collect();
            RotationSchedule {
                id,
                name,
                period_days,
                starts_at,
                members,
                on_call_now,
                turns,
                overrides: own.into_iter().map(turn).collect(),
            }
        })
        .collect();
    Ok(Json(schedules))
}

/// Adds an on-call rotation.
#[utoipa::path(
    post,
    path = "/api/v1/rotations",
    tag = "paging",
    request_body = Rotation,
    responses(
        (status = 200, description = "The rotation, with its id", body = Rotation),
        (status = 400, description = "A period other than 1 or 7 days, no members, or a member who is not a person",
         body = ErrorBody),
        (status = 403, description = "The viewer's role may not manage rotations", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn add_rotation(
    viewer: Allowed<ManagePaging>,
    Json(rotation): Json<Rotation>,
) -> Result<Json<Rotation>, ApiError> {
    if ![1, 7].contains(&rotation.period_days) || rotation.members.is_empty() {
        return Err(ApiError::BadRequest("period_days is 1 or 7, with at least one member".into()));
    }
    let mut tx = viewer.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "insert into rotations (name, period_days, starts_at, members)
         select $1, $2, $3, $4 where (select count(*) from people where id = any($4)) = cardinality($4)
         returning id",
    )
    .bind(&rotation.name)
    .bind(rotation.period_days)
    .bind(rotation.starts_at)
    .bind(&rotation.members)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::BadRequest("every member must be a person".into()))?;
    tx.commit().await?;
    Ok(Json(Rotation { id, ..rotation }))
}

/// Someone else on call for a while.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"person_id": 1, "starts_at": "2026-02-01T08:00:00Z", "ends_at": "2026-02-02T08:00:00Z"}))]
pub struct Override {
    /// Who.
    pub person_id: i64,
    /// From.
    pub starts_at: DateTime<Utc>,
    /// Until.
    pub ends_at: DateTime<Utc>,
}

/// Puts someone else on call in a rotation for a while.
#[utoipa::path(
    post,
    path = "/api/v1/rotations/{rotation_id}/overrides",
    tag = "paging",
    params(("rotation_id" = i64, Path, description = "Rotation id", example = 1)),
    request_body = Override,
    responses(
        (status = 200, description = "The override", body = Override),
        (status = 400, description = "The override ends before it starts", body = ErrorBody),
        (status = 403, description = "The viewer's role may not manage rotations", body = ErrorBody),
        (status = 404, description = "No such rotation or person", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn add_override(
    viewer: Allowed<ManagePaging>,
    Path(rotation): Path<i64>,
    Json(cover): Json<Override>,
) -> Result<Json<Override>, ApiError> {
    if cover.ends_at <= cover.starts_at {
        return Err(ApiError::BadRequest("ends_at must be after starts_at".into()));
    }
    let mut tx = viewer.begin().await?;
    sqlx::query("insert into rotation_overrides (rotation_id, person_id, starts_at, ends_at) values ($1, $2, $3, $4)")
        .bind(rotation)
        .bind(cover.person_id)
        .bind(cover.starts_at)
        .bind(cover.ends_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => ApiError::NotFound,
            other => ApiError::Database(other),
        })?;
    tx.commit().await?;
    Ok(Json(cover))
}

/// A message in the outbox.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct OutboxMessage {
    /// Id.
    pub id: i64,
    /// The alarm.
    pub alarm_id: Option<i64>,
    /// The person.
    pub person_id: Option<i64>,
    /// Text.
    pub body: String,
    /// Where it is.
    #[sqlx(try_from = "String")]
    pub status: super::outbox::OutboxStatus,
    /// The digest that carried it.
    pub merged_into: Option<i64>,
    /// Attempts so far.
    pub attempts: i32,
    /// The provider that took it.
    pub provider: Option<String>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Enqueued.
    pub created_at: DateTime<Utc>,
    /// Sent.
    pub sent_at: Option<DateTime<Utc>>,
}

/// Outbox filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only messages about this alarm.
    pub alarm: Option<i64>,
    /// At most this many, newest first (default 100, at most 1,000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Messages to people, newest first, with their status, provider and last error.
#[utoipa::path(
    get,
    path = "/api/v1/outbox",
    tag = "paging",
    params(OutboxQuery),
    responses(
        (status = 200, description = "The messages", body = Vec<OutboxMessage>),
        (status = 400, description = "A limit out of range, or a malformed parameter", body = ErrorBody),
        (status = 403, description = "The viewer's role may not read the outbox", body = ErrorBody),
    )
)]
pub(crate) async fn list_outbox(
    viewer: Allowed<ReadPaging>,
    Query(query): Query<OutboxQuery>,
) -> Result<Json<Vec<OutboxMessage>>, ApiError> {
    let limit = limit(query.limit, 100, 1000)?;
    let mut tx = viewer.begin().await?;
    Ok(Json(
        sqlx::query_as(
            "select id, alarm_id, person_id, body, status, merged_into, attempts, provider, last_error, created_at, sent_at
             from outbox where $1::bigint is null or alarm_id = $1 order by id desc limit $2",
        )
        .bind(query.alarm)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?,
    ))
}

fn page(status: StatusCode, title: &str, text: &str, form: Option<&str>) -> Response {
    let form = form
        .map(|action| {
            format!(
                r#"<form method="post" action="{}"><button type="submit">Acknowledge / 确认</button></form>"#,
                escape_html(action)
            )
        })
        .unwrap_or_default();
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer"><title>{title}</title><style>body{{font:18px system-ui;margin:1.5em}}button{{font-size:1.2em;padding:.8em 1.5em}}</style></head><body><h1>{title}</h1><p>{text}</p>{form}</body></html>"#,
        title = escape_html(title),
        text = escape_html(text),
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

async fn grant(state: &AppState, system: &System, token: &str) -> Result<(links::Grant, String, String), Response> {
    let grant = links::verify(&state.paging.link_secret, links::Purpose::Acknowledge, token, Utc::now().timestamp())
        .map_err(|e| page(StatusCode::FORBIDDEN, "Chillcloud", &e.to_string(), None))?;
    let row: Option<(String, String)> = sqlx::query_as(
        "select a.title || ': ' || a.message, p.name from alarms a, people p where a.id = $1 and p.id = $2",
    )
    .bind(grant.subject)
    .bind(grant.person_id)
    .fetch_optional(&system.db)
    .await
    .map_err(|_| page(StatusCode::SERVICE_UNAVAILABLE, "Chillcloud", "try again in a moment", None))?;
    let (alarm, person) = row.ok_or_else(|| page(StatusCode::NOT_FOUND, "Chillcloud", "no such alarm", None))?;
    Ok((grant, alarm, person))
}

/// Shows the alarm and a button. A GET never acknowledges: link previews fetch URLs.
async fn link_page(State(state): State<AppState>, system: System, Path(token): Path<String>) -> Response {
    match grant(&state, &system, &token).await {
        Ok((grant, alarm, _)) => {
            page(StatusCode::OK, &format!("Alarm {}", grant.subject), &alarm, Some(&format!("/a/{token}")))
        }
        Err(response) => response,
    }
}

async fn link_acknowledge(State(state): State<AppState>, system: System, Path(token): Path<String>) -> Response {
    let (grant, alarm, person) = match grant(&state, &system, &token).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let acknowledged = match system.db.acquire().await {
        Ok(mut db) => alarm_db::acknowledge(&mut db, grant.subject, &format!("{person} (link)"), "").await,
        Err(error) => Err(error),
    };
    match acknowledged {
        Ok(Some(event)) => {
            state.alarms.announce(event);
            page(StatusCode::OK, "Acknowledged / 已确认", &alarm, None)
        }
        Ok(None) => page(StatusCode::OK, "Already acknowledged / 已确认", &alarm, None),
        Err(_) => page(StatusCode::SERVICE_UNAVAILABLE, "Chillcloud", "try again in a moment", None),
    }
}

/// Twilio's inbound SMS webhook: `1 <code>` acknowledges the message's alarm (or all of a
/// digest's), `2 <code>` too, noted as resolved; `<1 to 5> <code>` answers a ticket's
/// satisfaction question. Only requests bearing Twilio's signature for
/// this URL are taken, and only replies from the number the code was sent to.
async fn twilio_reply(
    State(state): State<AppState>,
    system: System,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let Some(token) = state.paging.providers.iter().find_map(providers::Provider::twilio_auth_token) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let url = format!("{}/hooks/twilio", state.paging.public_url);
    let given = headers.get("X-Twilio-Signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let expected = providers::twilio_signature(token, &url, &form);
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        state.metrics.replies_refused.inc();
        return StatusCode::FORBIDDEN.into_response();
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
    let twiml = |text: &str| {
        let text = text.replace('&', "&amp;").replace('<', "&lt;");
        ([(header::CONTENT_TYPE, "text/xml")], format!("<Response><Message>{text}</Message></Response>"))
            .into_response()
    };
    match handle_reply(&state, &system, &[field("From")], &field("Body")).await {
        Ok(text) => twiml(&text),
        Err(status) => status.into_response(),
    }
}

/// The reply token of the configured provider of `kind`, checked against the URL's.
fn reply_token_ok(state: &AppState, kind: &str, token: &str) -> bool {
    state
        .paging
        .providers
        .iter()
        .filter_map(|p| p.reply_token(kind))
        .any(|expected| constant_time_eq(token.as_bytes(), expected.as_bytes()))
}

/// Replies handled from one push: Aliyun batches far fewer.
const MAX_REPLIES_PER_PUSH: usize = 100;

/// Aliyun's SmsUp push (HTTP batch push of replies): a JSON array of
/// `{"phone_number", "content", "send_time", "sign_name", "dest_code", "sequence_id"}`. Aliyun
/// does not sign it, so the URL carries a secret. Answered `{"code": 0, "msg": "成功"}`.
async fn aliyun_reply(
    State(state): State<AppState>,
    system: System,
    Path(token): Path<String>,
    Json(replies): Json<Value>,
) -> Response {
    if !reply_token_ok(&state, "aliyun", &token) {
        state.metrics.replies_refused.inc();
        return StatusCode::NOT_FOUND.into_response();
    }
    let replies = replies.as_array().map(Vec::as_slice).unwrap_or_default();
    if replies.len() > MAX_REPLIES_PER_PUSH {
        state.metrics.replies_refused.add((replies.len() - MAX_REPLIES_PER_PUSH) as u64);
        tracing::warn!(
            replies = replies.len(),
            "an Aliyun push with more replies than it sends at once: the rest are ignored"
        );
    }
    for reply in replies.iter().take(MAX_REPLIES_PER_PUSH) {
        let phone = reply["phone_number"].as_str().unwrap_or_default();
        // Mainland numbers come without the country code.
        let candidates = [phone.to_owned(), format!("+{phone}"), format!("+86{phone}")];
        if let Err(status) =
            handle_reply(&state, &system, &candidates, reply["content"].as_str().unwrap_or_default()).await
        {
            return status.into_response();
        }
    }
    Json(serde_json::json!({"code": 0, "msg": "成功"})).into_response()
}

/// Tencent's reply callback: `{"mobile", "nationcode", "text", "sign", "time", "extend"}`, one
/// reply per request, unsigned, so the URL carries a secret. Answered `{"result": 0, "errmsg": "OK"}`.
async fn tencent_reply(
    State(state): State<AppState>,
    system: System,
    Path(token): Path<String>,
    Json(reply): Json<Value>,
) -> Response {
    if !reply_token_ok(&state, "tencent", &token) {
        state.metrics.replies_refused.inc();
        return StatusCode::NOT_FOUND.into_response();
    }
    let phone =
        format!("+{}{}", reply["nationcode"].as_str().unwrap_or("86"), reply["mobile"].as_str().unwrap_or_default());
    match handle_reply(&state, &system, &[phone], reply["text"].as_str().unwrap_or_default()).await {
        Ok(_) => Json(serde_json::json!({"result": 0, "errmsg": "OK"})).into_response(),
        Err(status) => status.into_response(),
    }
}

/// Acts on a reply from one of `from` (the forms a provider may give the number in): `1 <code>`
/// or `2 <code>` acknowledges the alarm(s) of the message the code was sent in, `<1-5> <code>`
/// answers a ticket's satisfaction question. Returns the text to answer with.
async fn handle_reply(state: &AppState, system: &System, from: &[String], body: &str) -> Result<String, StatusCode> {
    let mut words = body.split_whitespace();
    let (Some(number), Some(code)) = (words.next().and_then(|w| w.parse::<i16>().ok()), words.next()) else {
        state.metrics.replies_refused.inc();
        return Ok("Reply 1 <code> to acknowledge, 2 <code> when resolved.".into());
    };
    let code = code.to_uppercase();
    let number_key = from.first().cloned().unwrap_or_default();
    if state.wrong_codes.blocked(&number_key) {
        state.metrics.replies_refused.inc();
        return Ok("Unknown code.".into());
    }
    // The message the code was sent in (and, for a digest, the messages folded into it).
    /// Alarm or ticket, and the person's name.
    type Found = (Option<i64>, Option<i64>, String);
    let found: Vec<Found> = sqlx::query_as(
        "select m.alarm_id, m.ticket_id, p.name from outbox o join outbox m on m.id = o.id or m.merged_into = o.id
         join people p on p.id = o.person_id
         where o.reply_code = $1 and o.address = any($2)",
    )
    .bind(&code)
    .bind(from)
    .fetch_all(&system.db)
    .await
    .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    if found.is_empty() {
        state.wrong_codes.wrong(&number_key);
        state.metrics.replies_refused.inc();
        return Ok("Unknown code.".into());
    }
    // A satisfaction question: the number is the score.
    if let [(None, Some(ticket), person)] = found.as_slice() {
        if !(1..=5).contains(&number) {
            state.metrics.replies_refused.inc();
            return Ok("Reply with a score from 1 to 5 and the code.".into());
        }
        crate::tickets::record_satisfaction(&system.db, *ticket, number, &format!("{person} (SMS)"))
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        state.metrics.replies_accepted.inc();
        return Ok("Thank you for your feedback.".into());
    }
    if !(1..=2).contains(&number) {
        state.metrics.replies_refused.inc();
        return Ok("Reply 1 <code> to acknowledge, 2 <code> when resolved.".into());
    }
    let alarms: Vec<(i64, String)> =
        found.into_iter().filter_map(|(alarm, _, person)| Some((alarm?, person))).collect();
    let comment = if number == 2 { "resolved (SMS reply)" } else { "SMS reply" };
    let mut db = system.db.acquire().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    for (alarm_id, person) in &alarms {
        if let Some(event) = alarm_db::acknowledge(&mut db, *alarm_id, &format!("{person} (SMS)"), comment)
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
        {
            state.alarms.announce(event);
        }
    }
    state.metrics.replies_accepted.inc();
    Ok(format!("Acknowledged {} alarm(s). Thank you.", alarms.len()))
}
