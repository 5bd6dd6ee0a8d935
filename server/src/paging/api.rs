//! Paging endpoints: people, site contacts, rotations and policies, the outbox (where the
//! console provider's messages are read), each person's own channels, quiet hours and push
//! subscriptions, team chat rooms, and the ways to acknowledge without signing in: the signed
//! link (`/a/{token}`, also pressed from a push notification), SMS replies (`/hooks/twilio`,
//! `/hooks/aliyun/…`, `/hooks/tencent/…`) and a call's keypress (`/hooks/twilio-voice/…`,
//! `/hooks/aliyun-voice/…`, `/hooks/tencent-voice/…`).

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

use super::{
    chat::ChatKind,
    links,
    policy::{Channel, Policies},
    providers, push,
};
use crate::{
    alarms::db as alarm_db,
    http::{
        Allowed, ApiError, AppState, ErrorBody, ManagePaging, Read, ReadPaging, System, SystemState, limit,
        require_site,
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
        .routes(routes!(my_paging, set_my_paging))
        .routes(routes!(send_me_a_test))
        .routes(routes!(subscribe_push))
        .routes(routes!(unsubscribe_push))
        .routes(routes!(list_chat_rooms, add_chat_room))
        .routes(routes!(remove_chat_room))
        .routes(routes!(test_chat_room))
}

/// Routes that carry their own proof: a signed link, or a provider's signature.
pub fn system_routes() -> OpenApiRouter<SystemState> {
    OpenApiRouter::new()
        .route("/a/{token}", get(link_page).post(link_acknowledge))
        .route("/hooks/twilio", post(twilio_reply))
        .route("/hooks/aliyun/{token}", post(aliyun_reply))
        .route("/hooks/tencent/{token}", post(tencent_reply))
        .route("/hooks/twilio-voice/{token}", post(twilio_keypress))
        .route("/hooks/aliyun-voice/{token}", post(aliyun_call_report))
        .route("/hooks/tencent-voice/{token}", post(tencent_call_report))
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
    /// The account they sign in with, to choose their own channels and quiet hours.
    #[serde(default)]
    pub user_id: Option<i64>,
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
        sqlx::query_as("select id, name, phone, email, language, user_id from people order by id")
            .fetch_all(&mut *tx)
            .await?,
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
    let id: i64 = sqlx::query_scalar(
        "insert into people (name, phone, email, language, user_id) values ($1, $2, $3, $4, $5) returning id",
    )
    .bind(&person.name)
    .bind(&person.phone)
    .bind(&person.email)
    .bind(&person.language)
    .bind(person.user_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => ApiError::BadRequest("no such user".into()),
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            ApiError::Conflict("that user is another person already".into())
        }
        other => ApiError::Database(other),
    })?;
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
    /// The person (none for a chat room).
    pub person_id: Option<i64>,
    /// `sms`, `voice`, `push`, `email` or `chat`.
    pub channel: String,
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
            "select id, alarm_id, person_id, channel, body, status, merged_into, attempts, provider, last_error,
                 created_at, sent_at
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

/// Where a link was pressed: `?via=push` from a push notification's action.
#[derive(Debug, Deserialize)]
struct LinkVia {
    via: Option<String>,
}

async fn link_acknowledge(
    State(state): State<AppState>,
    system: System,
    Path(token): Path<String>,
    Query(via): Query<LinkVia>,
) -> Response {
    let (grant, alarm, person) = match grant(&state, &system, &token).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let how = if via.via.as_deref() == Some("push") { "push" } else { "link" };
    let acknowledged = match system.db.acquire().await {
        Ok(mut db) => alarm_db::acknowledge(&mut db, grant.subject, &format!("{person} ({how})"), "").await,
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
    let Some(token) = state.paging.providers.iter().find_map(|p| p.twilio_auth_token(false)) else {
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

/// The viewer's own person: who the paging lists know them as.
async fn own_person(viewer: &Allowed<Read>, tx: &mut sqlx::PgConnection) -> Result<super::Recipient, ApiError> {
    let user = viewer
        .user_id
        .ok_or_else(|| ApiError::BadRequest("sign in as a user: the operator's token has no person".into()))?;
    let id: Option<i64> =
        sqlx::query_scalar("select id from people where user_id = $1").bind(user).fetch_optional(&mut *tx).await?;
    let id = id.ok_or(ApiError::NotFound)?;
    super::people_by_id(&mut *tx, &[id]).await?.pop().ok_or(ApiError::NotFound)
}

/// Quiet hours, local times in the person's time zone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// From, `22:00`.
    #[schema(example = "22:00")]
    pub from: String,
    /// To, `07:00` (the next morning when earlier than `from`).
    #[schema(example = "07:00")]
    pub to: String,
}

/// Which channels reach the viewer now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Reachable {
    /// A browser of theirs is subscribed to push.
    pub push: bool,
    /// They have a phone number.
    pub sms: bool,
    /// They have a phone number and a voice provider is configured.
    pub voice: bool,
    /// They have an e-mail address and e-mail is configured.
    pub email: bool,
}

/// A push subscription, without its keys.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct PushDevice {
    /// Id.
    pub id: i64,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The browser that made it.
    pub user_agent: String,
}

/// How the viewer is paged.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MyPaging {
    /// Their person.
    pub person_id: i64,
    /// Their name.
    pub name: String,
    /// Their channels in order: `push`, `sms`, `voice`, `email`.
    pub channels: Vec<Channel>,
    /// Which channels can reach them.
    pub available: Reachable,
    /// Quiet hours for grade 3 and 4 alarms (grades 1 and 2 always get through).
    pub quiet_hours: Option<QuietHours>,
    /// Their IANA time zone; none until they choose one.
    pub timezone: Option<String>,
    /// The server's VAPID public key (base64url): the browser's `applicationServerKey`.
    pub push_key: Option<String>,
    /// Their browsers subscribed to push.
    pub subscriptions: Vec<PushDevice>,
}

async fn my_paging_state(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    person: &super::Recipient,
) -> Result<MyPaging, ApiError> {
    let subscriptions: Vec<PushDevice> =
        sqlx::query_as("select id, created_at, user_agent from push_subscriptions where person_id = $1 order by id")
            .bind(person.id)
            .fetch_all(&mut *tx)
            .await?;
    let paging = &state.paging;
    let channels = match &person.channels {
        Some(names) => names.iter().filter_map(|n| Channel::from_name(n)).collect(),
        None => vec![Channel::Push, Channel::Sms, Channel::Email],
    };
    let time = |t: chrono::NaiveTime| t.format("%H:%M").to_string();
    Ok(MyPaging {
        person_id: person.id,
        name: person.name.clone(),
        channels,
        available: Reachable {
            push: paging.reaches(Channel::Push, person),
            sms: paging.reaches(Channel::Sms, person),
            voice: paging.reaches(Channel::Voice, person),
            email: paging.reaches(Channel::Email, person),
        },
        quiet_hours: person
            .quiet_from
            .zip(person.quiet_to)
            .map(|(from, to)| QuietHours { from: time(from), to: time(to) }),
        timezone: person.timezone.clone(),
        push_key: paging.push.as_ref().map(|push| push.0.public_key()),
        subscriptions,
    })
}

/// How the viewer is paged: their channels, quiet hours and push devices.
#[utoipa::path(
    get,
    path = "/api/v1/me/paging",
    tag = "paging",
    responses(
        (status = 200, description = "The viewer's paging", body = MyPaging),
        (status = 404, description = "The viewer is on no paging list", body = ErrorBody),
    )
)]
pub(crate) async fn my_paging(
    State(state): State<AppState>,
    viewer: Allowed<Read>,
) -> Result<Json<MyPaging>, ApiError> {
    let mut tx = viewer.begin().await?;
    let person = own_person(&viewer, &mut tx).await?;
    let paging = my_paging_state(&state, &mut tx, &person).await?;
    tx.commit().await?;
    Ok(Json(paging))
}

/// The viewer's choice of channels and quiet hours.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MyPagingChoice {
    /// Channels in order, 1 to 4 of `push`, `sms`, `voice`, `email`.
    pub channels: Vec<Channel>,
    /// Quiet hours for grade 3 and 4 alarms; none: always.
    pub quiet_hours: Option<QuietHours>,
    /// IANA time zone, `Asia/Shanghai`.
    pub timezone: String,
}

/// Sets the viewer's channels and quiet hours.
#[utoipa::path(
    put,
    path = "/api/v1/me/paging",
    tag = "paging",
    request_body = MyPagingChoice,
    responses(
        (status = 200, description = "The viewer's paging as set", body = MyPaging),
        (status = 400, description = "A channel twice, no channel, a bad time or time zone", body = ErrorBody),
        (status = 404, description = "The viewer is on no paging list", body = ErrorBody),
    )
)]
pub(crate) async fn set_my_paging(
    State(state): State<AppState>,
    viewer: Allowed<Read>,
    Json(choice): Json<MyPagingChoice>,
) -> Result<Json<MyPaging>, ApiError> {
    let mut names: Vec<&str> = Vec::new();
    for channel in &choice.channels {
        if names.contains(&channel.name()) {
            return Err(ApiError::BadRequest(format!("channels: {} is listed twice", channel.name())));
        }
        names.push(channel.name());
    }
    if names.is_empty() {
        return Err(ApiError::BadRequest("channels: choose at least one".into()));
    }
    if choice.timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ApiError::BadRequest(format!("timezone {:?} is not an IANA time zone", choice.timezone)));
    }
    let parse = |field: &str, text: &str| {
        chrono::NaiveTime::parse_from_str(text, "%H:%M")
            .map_err(|_| ApiError::BadRequest(format!("quiet_hours.{field}: a time like 22:00")))
    };
    let quiet = match &choice.quiet_hours {
        Some(q) => {
            let (from, to) = (parse("from", &q.from)?, parse("to", &q.to)?);
            if from == to {
                return Err(ApiError::BadRequest("quiet_hours: from and to differ".into()));
            }
            Some((from, to))
        }
        None => None,
    };
    let mut tx = viewer.begin().await?;
    let person = own_person(&viewer, &mut tx).await?;
    sqlx::query(
        "insert into paging_preferences (person_id, channels, quiet_from, quiet_to, timezone, updated_at)
         values ($1, $2, $3, $4, $5, now())
         on conflict (person_id) do update set channels = excluded.channels, quiet_from = excluded.quiet_from,
             quiet_to = excluded.quiet_to, timezone = excluded.timezone, updated_at = now()",
    )
    .bind(person.id)
    .bind(&names)
    .bind(quiet.map(|q| q.0))
    .bind(quiet.map(|q| q.1))
    .bind(&choice.timezone)
    .execute(&mut *tx)
    .await?;
    let person = own_person(&viewer, &mut tx).await?;
    let paging = my_paging_state(&state, &mut tx, &person).await?;
    tx.commit().await?;
    Ok(Json(paging))
}

/// A channel to test.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestChannel {
    /// `push`, `sms`, `voice` or `email`.
    pub channel: Channel,
}

/// A message enqueued.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Enqueued {
    /// Its id in the outbox.
    pub id: Option<i64>,
}

/// Tests a day per person.
const TESTS_PER_DAY: i64 = 10;

/// Sends the viewer a test message on one channel, through the outbox like any page.
#[utoipa::path(
    post,
    path = "/api/v1/me/paging/test",
    tag = "paging",
    request_body = TestChannel,
    responses(
        (status = 202, description = "Enqueued", body = Enqueued),
        (status = 400, description = "The channel cannot reach the viewer", body = ErrorBody),
        (status = 404, description = "The viewer is on no paging list", body = ErrorBody),
        (status = 429, description = "More than 10 tests today", body = ErrorBody),
    )
)]
pub(crate) async fn send_me_a_test(
    State(state): State<AppState>,
    viewer: Allowed<Read>,
    Json(test): Json<TestChannel>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    let mut tx = viewer.begin().await?;
    let person = own_person(&viewer, &mut tx).await?;
    if !state.paging.reaches(test.channel, &person) {
        return Err(ApiError::BadRequest(format!("{} cannot reach you yet", test.channel.name())));
    }
    let today: i64 = sqlx::query_scalar(
        "select count(*) from outbox where person_id = $1 and idempotency_key like 'test-%'
           and created_at > now() - interval '1 day'",
    )
    .bind(person.id)
    .fetch_one(&mut *tx)
    .await?;
    if today >= TESTS_PER_DAY {
        return Err(ApiError::TooManyRequests);
    }
    let address = match test.channel {
        Channel::Push => Some(format!("push:{}", person.id)),
        Channel::Email => person.email.clone(),
        Channel::Sms | Channel::Voice => person.phone.clone(),
    };
    let address = address.ok_or_else(|| ApiError::BadRequest("no address for that channel".into()))?;
    let message = super::test_message(&person, test.channel, address, Utc::now());
    super::outbox::enqueue(&mut tx, &message).await?;
    let id: Option<i64> = sqlx::query_scalar("select id from outbox where idempotency_key = $1")
        .bind(&message.idempotency_key)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    state.paging.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(Enqueued { id })))
}

/// A browser's push subscription, as `PushSubscription.toJSON()` gives it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewPushSubscription {
    /// The push service's URL for this browser.
    pub endpoint: String,
    /// When it expires (browsers give null).
    #[serde(default, rename = "expirationTime")]
    pub expiration_time: Option<f64>,
    /// Its keys.
    pub keys: PushKeys,
}

/// A subscription's keys.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PushKeys {
    /// The browser's P-256 public key, base64url.
    pub p256dh: String,
    /// Its authentication secret, base64url.
    pub auth: String,
}

/// A subscription kept.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PushSubscribed {
    /// Its id.
    pub id: i64,
}

/// Subscribes the viewer's browser to push: alarms then reach it as notifications.
#[utoipa::path(
    post,
    path = "/api/v1/me/push",
    tag = "paging",
    request_body = NewPushSubscription,
    responses(
        (status = 200, description = "Subscribed", body = PushSubscribed),
        (status = 400, description = "Not a push service's URL, or bad keys", body = ErrorBody),
        (status = 404, description = "The viewer is on no paging list, or push is off", body = ErrorBody),
        (status = 429, description = "Ten browsers subscribed already", body = ErrorBody),
    )
)]
pub(crate) async fn subscribe_push(
    State(state): State<AppState>,
    viewer: Allowed<Read>,
    headers: HeaderMap,
    Json(subscription): Json<NewPushSubscription>,
) -> Result<Json<PushSubscribed>, ApiError> {
    if state.paging.push.is_none() {
        return Err(ApiError::NotFound);
    }
    if subscription.endpoint.len() > 1024 || !push::endpoint_allowed(&subscription.endpoint, &state.paging.push_hosts) {
        return Err(ApiError::BadRequest("endpoint is not a push service's URL".into()));
    }
    // The keys must be what encryption needs: checked by encrypting nothing for them.
    if subscription.keys.p256dh.len() > 100
        || subscription.keys.auth.len() > 40
        || super::webpush::encrypt(&subscription.keys.p256dh, &subscription.keys.auth, b"").is_err()
    {
        return Err(ApiError::BadRequest("keys.p256dh or keys.auth is not a browser's push key".into()));
    }
    let agent: String =
        headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default().chars().take(300).collect();
    let mut tx = viewer.begin().await?;
    let person = own_person(&viewer, &mut tx).await?;
    let count: i64 =
        sqlx::query_scalar("select count(*) from push_subscriptions where person_id = $1 and endpoint <> $2")
            .bind(person.id)
            .bind(&subscription.endpoint)
            .fetch_one(&mut *tx)
            .await?;
    if count >= push::MAX_SUBSCRIPTIONS {
        return Err(ApiError::TooManyRequests);
    }
    let id: Option<i64> = sqlx::query_scalar(
        "insert into push_subscriptions (person_id, endpoint, p256dh, auth, user_agent) values ($1, $2, $3, $4, $5)
         on conflict (endpoint) do update set p256dh = excluded.p256dh, auth = excluded.auth
             where push_subscriptions.person_id = excluded.person_id
         returning id",
    )
    .bind(person.id)
    .bind(&subscription.endpoint)
    .bind(&subscription.keys.p256dh)
    .bind(&subscription.keys.auth)
    .bind(agent)
    .fetch_optional(&mut *tx)
    .await?;
    // Another person's endpoint (a shared phone): theirs until they unsubscribe.
    let id = id.ok_or_else(|| ApiError::Conflict("this browser is subscribed for someone else".into()))?;
    tx.commit().await?;
    Ok(Json(PushSubscribed { id }))
}

/// Forgets one of the viewer's push subscriptions.
#[utoipa::path(
    delete,
    path = "/api/v1/me/push/{id}",
    tag = "paging",
    params(("id" = i64, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 404, description = "No such subscription of the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn unsubscribe_push(viewer: Allowed<Read>, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    let mut tx = viewer.begin().await?;
    let person = own_person(&viewer, &mut tx).await?;
    let deleted = sqlx::query("delete from push_subscriptions where id = $1 and person_id = $2")
        .bind(id)
        .bind(person.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    if deleted == 0 { Err(ApiError::NotFound) } else { Ok(StatusCode::NO_CONTENT) }
}

/// A team chat room alarms are posted to; its URL and secret are never shown again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatRoom {
    /// Id.
    pub id: i64,
    /// Its site; none: every site.
    pub gateway_id: Option<String>,
    /// `wecom`, `dingtalk`, `feishu` or `slack`.
    pub kind: ChatKind,
    /// What people call it.
    pub name: String,
    /// `en` or `zh`.
    pub language: String,
    /// The webhook's host and the last characters of its key, to tell rooms apart.
    pub url_hint: String,
    /// Whether posts are signed (DingTalk, Feishu).
    pub signed: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct ChatRoomRow {
    id: i64,
    gateway_id: Option<String>,
    kind: String,
    name: String,
    language: String,
    url: String,
    signed: bool,
}

impl ChatRoomRow {
    fn shown(self) -> ChatRoom {
        let host =
            reqwest::Url::parse(&self.url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        let tail: String = self.url.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        ChatRoom {
            id: self.id,
            gateway_id: self.gateway_id,
            kind: ChatKind::from_name(&self.kind).unwrap_or(ChatKind::Wecom),
            name: self.name,
            language: self.language,
            url_hint: format!("{host} …{tail}"),
            signed: self.signed,
        }
    }
}

/// Which rooms to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ChatRoomQuery {
    /// A site's rooms and the team-wide ones; none: every room.
    pub gateway: Option<String>,
}

/// The team chat rooms alarms are posted to.
#[utoipa::path(
    get,
    path = "/api/v1/chat-rooms",
    tag = "paging",
    params(ChatRoomQuery),
    responses(
        (status = 200, description = "Rooms, by id", body = Vec<ChatRoom>),
        (status = 403, description = "The viewer's role may not read paging", body = ErrorBody),
    )
)]
pub(crate) async fn list_chat_rooms(
    viewer: Allowed<ReadPaging>,
    Query(query): Query<ChatRoomQuery>,
) -> Result<Json<Vec<ChatRoom>>, ApiError> {
    let mut tx = viewer.begin().await?;
    let rows: Vec<ChatRoomRow> = sqlx::query_as(
        "select id, gateway_id, kind, name, language, url, secret is not null as signed from chat_rooms
         where $1::text is null or gateway_id = $1 or gateway_id is null order by id limit 500",
    )
    .bind(&query.gateway)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Json(rows.into_iter().map(ChatRoomRow::shown).collect()))
}

/// A chat room to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChatRoom {
    /// Its site; none: every site.
    pub gateway_id: Option<String>,
    /// `wecom`, `dingtalk`, `feishu` or `slack`.
    pub kind: ChatKind,
    /// What people call it.
    pub name: String,
    /// The robot's webhook URL, from the chat app.
    pub url: String,
    /// The signing secret (DingTalk 加签, Feishu 签名校验).
    pub secret: Option<String>,
    /// `en` or `zh` (default `zh`).
    pub language: Option<String>,
}

/// Adds a team chat room.
#[utoipa::path(
    post,
    path = "/api/v1/chat-rooms",
    tag = "paging",
    request_body = NewChatRoom,
    responses(
        (status = 200, description = "The room", body = ChatRoom),
        (status = 400, description = "Not the robot's URL, a bad name, secret or language", body = ErrorBody),
        (status = 403, description = "The viewer's role may not manage paging", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    )
)]
pub(crate) async fn add_chat_room(
    State(state): State<AppState>,
    viewer: Allowed<ManagePaging>,
    Json(room): Json<NewChatRoom>,
) -> Result<Json<ChatRoom>, ApiError> {
    let url = reqwest::Url::parse(&room.url).map_err(|_| ApiError::BadRequest("url is not a URL".into()))?;
    let host = url.host_str().unwrap_or_default();
    let extra = state.paging.chat_hosts.iter().any(|h| h == host);
    if room.url.len() > 500 || !(extra || (url.scheme() == "https" && room.kind.hosts().contains(&host))) {
        return Err(ApiError::BadRequest(format!(
            "url: a {} robot's webhook is on {}",
            room.kind.name(),
            room.kind.hosts().join(" or ")
        )));
    }
    let name = room.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest("name: 1 to 100 characters".into()));
    }
    let secret = room.secret.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if secret.is_some_and(|s| s.len() > 200)
        || (secret.is_some() && !matches!(room.kind, ChatKind::Dingtalk | ChatKind::Feishu))
    {
        return Err(ApiError::BadRequest(
            "secret: only DingTalk and Feishu robots sign, with up to 200 characters".into(),
        ));
    }
    let language = room.language.unwrap_or_else(|| "zh".into());
    if !["en", "zh"].contains(&language.as_str()) {
        return Err(ApiError::BadRequest("language is en or zh".into()));
    }
    let mut tx = viewer.begin().await?;
    if let Some(gateway) = &room.gateway_id {
        require_site(&mut tx, gateway).await?;
    }
    let row: ChatRoomRow = sqlx::query_as(
        "insert into chat_rooms (gateway_id, kind, name, url, secret, language) values ($1, $2, $3, $4, $5, $6)
         returning id, gateway_id, kind, name, language, url, secret is not null as signed",
    )
    .bind(&room.gateway_id)
    .bind(room.kind.name())
    .bind(name)
    .bind(&room.url)
    .bind(secret)
    .bind(&language)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(row.shown()))
}

/// Removes a team chat room.
#[utoipa::path(
    delete,
    path = "/api/v1/chat-rooms/{id}",
    tag = "paging",
    params(("id" = i64, Path, description = "Room id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "The viewer's role may not manage paging", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    )
)]
pub(crate) async fn remove_chat_room(
    viewer: Allowed<ManagePaging>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let mut tx = viewer.begin().await?;
    let deleted = sqlx::query("delete from chat_rooms where id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    if deleted == 0 { Err(ApiError::NotFound) } else { Ok(StatusCode::NO_CONTENT) }
}

/// Posts a test message to a room, through the outbox.
#[utoipa::path(
    post,
    path = "/api/v1/chat-rooms/{id}/test",
    tag = "paging",
    params(("id" = i64, Path, description = "Room id")),
    responses(
        (status = 202, description = "Enqueued", body = Enqueued),
        (status = 403, description = "The viewer's role may not manage paging", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    )
)]
pub(crate) async fn test_chat_room(
    State(state): State<AppState>,
    viewer: Allowed<ManagePaging>,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    let mut tx = viewer.begin().await?;
    let room: Option<(String, String)> =
        sqlx::query_as("select name, language from chat_rooms where id = $1").bind(id).fetch_optional(&mut *tx).await?;
    let (name, language) = room.ok_or(ApiError::NotFound)?;
    let now = Utc::now();
    let message = super::outbox::NewMessage {
        // One a minute: a double click posts once.
        idempotency_key: format!("chat-test-{id}-{}", now.timestamp() / 60),
        alarm_id: None,
        ticket_id: None,
        person_id: None,
        channel: "chat",
        address: format!("chat:{id}"),
        language,
        params: serde_json::json!({"kind": providers::Kind::Test.name(), "unit": name}),
        body: format!("test post to {name}"),
        reply_code: None,
        attachment: None,
        chat_room_id: Some(id),
        not_before: None,
    };
    super::outbox::enqueue(&mut tx, &message).await?;
    let enqueued: Option<i64> = sqlx::query_scalar("select id from outbox where idempotency_key = $1")
        .bind(&message.idempotency_key)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    state.paging.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(Enqueued { id: enqueued })))
}

/// Twilio's `<Gather>` action: the key pressed during a call. Signed by Twilio for this URL;
/// the URL's link token names the alarm and the person called. `1` acknowledges.
async fn twilio_keypress(
    State(state): State<AppState>,
    system: System,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let Some(auth_token) = state.paging.providers.iter().find_map(|p| p.twilio_auth_token(true)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let url = format!("{}/hooks/twilio-voice/{token}", state.paging.public_url);
    let given = headers.get("X-Twilio-Signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), providers::twilio_signature(auth_token, &url, &form).as_bytes()) {
        state.metrics.replies_refused.inc();
        return StatusCode::FORBIDDEN.into_response();
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
    let say = |text: &str, zh: bool| {
        let voice = providers::say_in(if zh { "zh" } else { "en" });
        (
            [(header::CONTENT_TYPE, "text/xml")],
            format!(r#"<Response><Say {voice}>{}</Say></Response>"#, escape_html(text)),
        )
            .into_response()
    };
    let Ok(grant) =
        links::verify(&state.paging.link_secret, links::Purpose::Acknowledge, &token, Utc::now().timestamp())
    else {
        state.metrics.replies_refused.inc();
        return say("This alarm can no longer be acknowledged by phone.", false);
    };
    let pressed = field("Digits");
    let _ =
        record_voice_event(&system, "twilio_voice", &field("CallSid"), None, &field("To"), "gather", &pressed).await;
    let language: Option<String> = sqlx::query_scalar("select language from people where id = $1")
        .bind(grant.person_id)
        .fetch_optional(&system.db)
        .await
        .ok()
        .flatten();
    let zh = language.as_deref() == Some("zh");
    if pressed != "1" {
        return say(if zh { "未确认。" } else { "Not acknowledged." }, zh);
    }
    match acknowledge_by_call(&state, &system, grant.subject, grant.person_id).await {
        Ok(()) => say(if zh { "已确认，谢谢。" } else { "Acknowledged. Thank you." }, zh),
        Err(status) => status.into_response(),
    }
}

/// Acknowledges an alarm for the person a call reached.
async fn acknowledge_by_call(state: &AppState, system: &System, alarm: i64, person: i64) -> Result<(), StatusCode> {
    let name: String = sqlx::query_scalar("select name from people where id = $1")
        .bind(person)
        .fetch_optional(&system.db)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
        .unwrap_or_default();
    let mut db = system.db.acquire().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    if let Some(event) = alarm_db::acknowledge(&mut db, alarm, &format!("{name} (call)"), "keypress")
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
    {
        state.alarms.announce(event);
    }
    state.metrics.replies_accepted.inc();
    Ok(())
}

/// Keeps what a provider reported of a call.
async fn record_voice_event(
    system: &System,
    provider: &str,
    call_id: &str,
    outbox_id: Option<i64>,
    number: &str,
    status: &str,
    digits: &str,
) -> sqlx::Result<()> {
    let clip = |text: &str, n: usize| text.chars().take(n).collect::<String>();
    sqlx::query(
        "insert into voice_events (provider, call_id, outbox_id, number, status, digits)
         values ($1, $2, (select id from outbox where id = $3), $4, $5, $6)",
    )
    .bind(provider)
    .bind(clip(call_id, 100))
    .bind(outbox_id)
    .bind(clip(number.trim_start_matches('+'), 32))
    .bind(clip(status, 40))
    .bind(clip(digits, 20))
    .execute(&system.db)
    .await
    .map(drop)
}

/// The alarm and person of a call the outbox placed through `provider`: by our message id
/// (Aliyun's `out_id`) or by the provider's call id.
async fn called(system: &System, provider: &str, outbox_id: Option<i64>, call_id: &str) -> Option<(i64, i64, i64)> {
    sqlx::query_as(
        "select id, alarm_id, person_id from outbox
         where channel = 'voice' and alarm_id is not null and person_id is not null
           and (id = $1 or (provider = $2 and provider_reference = $3 and $3 <> ''))
         order by id limit 1",
    )
    .bind(outbox_id)
    .bind(provider)
    .bind(call_id)
    .fetch_optional(&system.db)
    .await
    .ok()
    .flatten()
}

/// Reports handled from one push.
const MAX_REPORTS_PER_PUSH: usize = 100;

/// Aliyun's call reports (`VoiceReport`, `VoiceCallReport`), pushed in batches as a JSON array;
/// unsigned, so the URL carries a secret. A report with `dtmf` `1` acknowledges the call's
/// alarm. Answered `{"code": 0, "msg": "接收成功"}` (Aliyun only checks that `code` is a number).
async fn aliyun_call_report(
    State(state): State<AppState>,
    system: System,
    Path(token): Path<String>,
    Json(reports): Json<Value>,
) -> Response {
    if !reply_token_ok(&state, "aliyun_voice", &token) {
        state.metrics.replies_refused.inc();
        return StatusCode::NOT_FOUND.into_response();
    }
    let reports = reports.as_array().map(Vec::as_slice).unwrap_or_default();
    for report in reports.iter().take(MAX_REPORTS_PER_PUSH) {
        let text = |k: &str| match &report[k] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let (call_id, dtmf) = (text("call_id"), text("dtmf"));
        let out_id = text("out_id").parse::<i64>().ok();
        let callee = text("callee");
        // Mainland numbers come without the country code.
        let number = if callee.len() == 11 && callee.starts_with('1') { format!("86{callee}") } else { callee };
        let found = called(&system, "aliyun_voice", out_id, &call_id).await;
        let status = [text("status_code"), text("smart_status_code")].join(" ");
        if record_voice_event(&system, "aliyun_voice", &call_id, found.map(|f| f.0), &number, status.trim(), &dtmf)
            .await
            .is_err()
        {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        if dtmf.starts_with('1') {
            match found {
                Some((_, alarm, person)) => {
                    if let Err(status) = acknowledge_by_call(&state, &system, alarm, person).await {
                        return status.into_response();
                    }
                }
                None => state.metrics.replies_refused.inc(),
            }
        }
    }
    Json(serde_json::json!({"code": 0, "msg": "接收成功"})).into_response()
}

/// Tencent's voice callbacks: `voiceprompt_callback` (the call's outcome) and
/// `voicekey_callback` (a key pressed; `1` acknowledges); unsigned, so the URL carries a
/// secret. Answered `{"result": 0, "errmsg": "OK"}`.
async fn tencent_call_report(
    State(state): State<AppState>,
    system: System,
    Path(token): Path<String>,
    Json(callback): Json<Value>,
) -> Response {
    if !reply_token_ok(&state, "tencent_voice", &token) {
        state.metrics.replies_refused.inc();
        return StatusCode::NOT_FOUND.into_response();
    }
    let (event, kind) = match (&callback["voicekey_callback"], &callback["voiceprompt_callback"]) {
        (key, _) if key.is_object() => (key, "keypress"),
        (_, prompt) if prompt.is_object() => (prompt, "prompt"),
        // Other notices (a failed call's reason) are kept and answered alike, so Tencent does
        // not retry them.
        _ => match callback.as_object().and_then(|o| o.values().find(|v| v.is_object())) {
            Some(other) => (other, "other"),
            None => return Json(serde_json::json!({"result": 0, "errmsg": "OK"})).into_response(),
        },
    };
    let text = |k: &str| event[k].as_str().unwrap_or_default().to_owned();
    let call_id = text("callid");
    let number = format!("{}{}", text("nationcode"), text("mobile"));
    let found = called(&system, "tencent_voice", None, &call_id).await;
    let digits = if kind == "keypress" { text("keypress") } else { String::new() };
    let status = match kind {
        "keypress" => "keypress".to_owned(),
        "prompt" => format!("result {}", text("result")),
        _ => "other".to_owned(),
    };
    if record_voice_event(&system, "tencent_voice", &call_id, found.map(|f| f.0), &number, &status, &digits)
        .await
        .is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if digits == "1" {
        match found {
            Some((_, alarm, person)) => {
                if let Err(status) = acknowledge_by_call(&state, &system, alarm, person).await {
                    return status.into_response();
                }
            }
            None => state.metrics.replies_refused.inc(),
        }
    }
    Json(serde_json::json!({"result": 0, "errmsg": "OK"})).into_response()
}
