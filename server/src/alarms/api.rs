//! The alarm API: list and detail (with the fault-moment capture), acknowledge, shelve, the
//! event stream, rules per site and unit, and maintenance windows.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{db, engine::CompiledRules, rules};
use crate::http::{
    Acknowledge, Allowed, ApiError, AppState, ErrorBody, ManageRules, Read, ReadPaging, limit, require_site,
};

/// Routes for viewers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(events))
        .routes(routes!(detail))
        .routes(routes!(acknowledge))
        .routes(routes!(shelve))
        .routes(routes!(unit_rules))
        .routes(routes!(put_unit_rule))
        .routes(routes!(delete_unit_rule))
        .routes(routes!(site_rules))
        .routes(routes!(put_site_rule))
        .routes(routes!(delete_site_rule))
        .routes(routes!(list_maintenance))
        .routes(routes!(add_maintenance))
}

/// An alarm as listed.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct AlarmSummary {
    /// Alarm id.
    pub id: i64,
    /// Its gateway (site).
    pub gateway_id: String,
    /// Its unit; none for a site alarm.
    pub unit_id: Option<i64>,
    /// The unit's device id.
    pub device_key: Option<String>,
    /// The rule's key.
    pub rule: String,
    /// 1 (critical) to 4 (warning).
    pub grade: i16,
    /// English title.
    pub title: String,
    /// Chinese title.
    pub title_zh: String,
    /// Cause and key values.
    pub message: String,
    /// Where it is.
    #[sqlx(try_from = "String")]
    pub state: AlarmState,
    /// When the episode began.
    pub raised_at: DateTime<Utc>,
    /// When it was last raised.
    pub last_raised_at: DateTime<Utc>,
    /// When it last cleared.
    pub cleared_at: Option<DateTime<Utc>>,
    /// When it was acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When it closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// How many times it was raised in this episode.
    pub occurrences: i32,
    /// Raised and cleared too often: no longer announced.
    pub flapping: bool,
    /// Raised during maintenance: not announced.
    pub muted: bool,
    /// Not announced until then.
    pub shelved_until: Option<DateTime<Utc>>,
}

const ALARM_SUMMARY: &str = "select a.id, a.gateway_id, a.unit_id, u.device_key, a.rule, a.grade, a.title, a.title_zh,
        a.message,
        case when a.closed_at is not null then 'closed'
             when a.active and a.acknowledged_at is not null then 'acknowledged'
             when a.active then 'active' else 'cleared' end as state,
        a.raised_at, a.last_raised_at, a.cleared_at, a.acknowledged_at, a.acknowledged_by, a.closed_at,
        a.occurrences, a.flapping, a.muted, a.shelved_until
    from alarms a left join units u on u.id = a.unit_id";

/// Filters of the alarm list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlarmFilter {
    /// Only this gateway's (site's) alarms.
    pub gateway: Option<String>,
    /// Only this unit's.
    pub unit: Option<i64>,
    /// Only this grade or more severe (1 is the most severe).
    pub grade: Option<i16>,
    /// `open` (default: not closed), `active`, `unacknowledged`, `closed` or `all`.
    #[param(pattern = "^(open|active|unacknowledged|closed|all)$")]
    pub state: Option<String>,
    /// At most this many, newest first (default 100, at most 1,000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Alarms, newest first: open ones by default.
#[utoipa::path(
    get,
    path = "/api/v1/alarms",
    tag = "alarms",
    params(AlarmFilter),
    responses(
        (status = 200, description = "The alarms", body = Vec<AlarmSummary>),
        (status = 400, description = "An unknown state, a limit out of range, or a malformed parameter",
         body = ErrorBody),
    )
)]
pub(crate) async fn list(
    viewer: Allowed<Read>,
    Query(filter): Query<AlarmFilter>,
) -> Result<Json<Vec<AlarmSummary>>, ApiError> {
    let state_sql = match filter.state.as_deref().unwrap_or("open") {
        "open" => "a.closed_at is null",
        "active" => "a.active",
        "unacknowledged" => "a.acknowledged_at is null and a.closed_at is null",
        "closed" => "a.closed_at is not null",
        "all" => "true",
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown state {other:?}: use open, active, unacknowledged, closed or all"
            )));
        }
    };
    let limit = limit(filter.limit, 100, 1000)?;
    let alarms = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ALARM_SUMMARY} where {state_sql} and ($1::text is null or a.gateway_id = $1)
             and ($2::bigint is null or a.unit_id = $2) and ($3::smallint is null or a.grade <= $3)
         order by a.raised_at desc, a.id desc limit $4"
    )))
    .bind(&filter.gateway)
    .bind(filter.unit)
    .bind(filter.grade)
    .bind(limit)
    .fetch_all(&mut *viewer.begin().await?)
    .await?;
    Ok(Json(alarms))
}

/// One thing that happened to an alarm.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct EventRow {
    /// Event id: its position in the stream.
    pub id: i64,
    /// The alarm.
    pub alarm_id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// raised, reraised, regraded, cleared, acknowledged, shelved, unshelved.
    pub kind: String,
    /// The grade it was raised or regraded to.
    pub grade: Option<i16>,
    /// Who, for people's actions.
    pub actor: Option<String>,
    /// Their comment, or the cause.
    pub comment: Option<String>,
    /// Whether it is to be announced to people.
    pub notify: bool,
}

/// An alarm with its history and capture.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlarmDetail {
    /// The alarm.
    #[serde(flatten)]
    pub alarm: AlarmSummary,
    /// What happened to it, oldest first.
    pub events: Vec<EventRow>,
    /// The capture's window, if the alarm has one.
    pub capture_from: Option<DateTime<Utc>>,
    /// End of the capture's window.
    pub capture_to: Option<DateTime<Utc>>,
    /// The readings of all the unit's points in the window, once taken:
    /// `[{"point", "unit", "derived", "readings": [[ms, value], ...]}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub capture: Option<Json_>,
}

/// An alarm, its events and its fault-moment capture.
#[utoipa::path(
    get,
    path = "/api/v1/alarms/{alarm_id}",
    tag = "alarms",
    params(("alarm_id" = i64, Path, description = "Alarm id", example = 1)),
    responses(
        (status = 200, description = "The alarm", body = AlarmDetail),
        (status = 400, description = "The alarm id is not a number", body = ErrorBody),
        (status = 404, description = "No such alarm, or not the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn detail(viewer: Allowed<Read>, Path(alarm_id): Path<i64>) -> Result<Json<AlarmDetail>, ApiError> {
    let mut tx = viewer.begin().await?;
    let alarm = summary(&mut tx, alarm_id).await?;
    let events = sqlx::query_as("select * from alarm_events where alarm_id = $1 order by id")
        .bind(alarm_id)
        .fetch_all(&mut *tx)
        .await?;
    let (capture_from, capture_to, capture): (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<Json_>) =
        sqlx::query_as(
            "select a.capture_from, a.capture_to, c.series from alarms a
             left join alarm_captures c on c.alarm_id = a.id where a.id = $1",
        )
        .bind(alarm_id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(Json(AlarmDetail { alarm, events, capture_from, capture_to, capture }))
}

/// Body of acknowledge and shelve.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"minutes": 60, "comment": "waiting for the condenser fan part"}))]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why, or what was done.
    #[serde(default)]
    pub comment: String,
    /// Shelve only: for how many minutes (0 unshelves; at most a week).
    #[schema(minimum = 0, maximum = 10080)]
    pub minutes: Option<i64>,
}

/// Acknowledges an alarm; acknowledged and cleared, it closes.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/{alarm_id}/acknowledge",
    tag = "alarms",
    params(("alarm_id" = i64, Path, description = "Alarm id", example = 1)),
    request_body = ActionBody,
    responses(
        (status = 200, description = "The alarm as it is now", body = AlarmSummary),
        (status = 400, description = "The alarm id is not a number, or the body is not JSON", body = ErrorBody),
        (status = 403, description = "The viewer's role may not acknowledge", body = ErrorBody),
        (status = 404, description = "No such alarm, or not the viewer's", body = ErrorBody),
        (status = 409, description = "The alarm is already acknowledged or closed", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn acknowledge(
    State(state): State<AppState>,
    viewer: Allowed<Acknowledge>,
    Path(alarm_id): Path<i64>,
    Json(body): Json<ActionBody>,
) -> Result<Json<AlarmSummary>, ApiError> {
    let mut tx = viewer.begin().await?;
    summary(&mut tx, alarm_id).await?;
    let event = db::acknowledge(&mut tx, alarm_id, &viewer.actor(), &body.comment).await?;
    let alarm = summary(&mut tx, alarm_id).await?;
    tx.commit().await?;
    match event {
        Some(event) => state.alarms.announce(event),
        None if alarm.acknowledged_at.is_some() || alarm.closed_at.is_some() => {
            return Err(ApiError::Conflict("the alarm is already acknowledged or closed".into()));
        }
        None => {}
    }
    Ok(Json(alarm))
}

/// Shelves an alarm (it is not announced until the shelf ends), or unshelves it with 0 minutes.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/{alarm_id}/shelve",
    tag = "alarms",
    params(("alarm_id" = i64, Path, description = "Alarm id", example = 1)),
    request_body = ActionBody,
    responses(
        (status = 200, description = "The alarm as it is now", body = AlarmSummary),
        (status = 400, description = "minutes is missing or out of range, or the body is not JSON", body = ErrorBody),
        (status = 403, description = "The viewer's role may not shelve", body = ErrorBody),
        (status = 404, description = "No such alarm, or not the viewer's", body = ErrorBody),
        (status = 409, description = "The alarm is closed", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn shelve(
    State(state): State<AppState>,
    viewer: Allowed<Acknowledge>,
    Path(alarm_id): Path<i64>,
    Json(body): Json<ActionBody>,
) -> Result<Json<AlarmSummary>, ApiError> {
    let minutes = body.minutes.ok_or_else(|| ApiError::BadRequest("minutes is required".into()))?;
    if !(0..=7 * 24 * 60).contains(&minutes) {
        return Err(ApiError::BadRequest("minutes must be 0 to 10080 (a week)".into()));
    }
    let until = (minutes > 0).then(|| Utc::now() + chrono::Duration::minutes(minutes));
    let mut tx = viewer.begin().await?;
    summary(&mut tx, alarm_id).await?;
    let Some(event) = db::shelve(&mut tx, alarm_id, until, &viewer.actor(), &body.comment).await? else {
        return Err(ApiError::Conflict("a closed alarm cannot be shelved".into()));
    };
    let alarm = summary(&mut tx, alarm_id).await?;
    tx.commit().await?;
    state.alarms.announce(event);
    Ok(Json(alarm))
}

/// The alarm if the viewer's transaction sees it, else 404.
async fn summary(db: &mut sqlx::PgConnection, alarm_id: i64) -> Result<AlarmSummary, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{ALARM_SUMMARY} where a.id = $1")))
        .bind(alarm_id)
        .fetch_optional(db)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Position in the event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events after this id (default 0: from the start).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1,000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The durable event stream, in id order: a consumer remembers the last id it handled.
#[utoipa::path(
    get,
    path = "/api/v1/alarms/events",
    tag = "alarms",
    params(EventsQuery),
    responses(
        (status = 200, description = "Events after `after`, oldest first", body = Vec<EventRow>),
        (status = 400, description = "A limit out of range, or a malformed parameter", body = ErrorBody),
        (status = 403, description = "The viewer's role may not read the event stream", body = ErrorBody),
    )
)]
pub(crate) async fn events(
    viewer: Allowed<ReadPaging>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Vec<EventRow>>, ApiError> {
    let limit = limit(query.limit, 100, 1000)?;
    let events = sqlx::query_as("select * from alarm_events where id > $1 order by id limit $2")
        .bind(query.after.unwrap_or(0))
        .bind(limit)
        .fetch_all(&mut *viewer.begin().await?)
        .await?;
    Ok(Json(events))
}

/// A unit's or a site's rules as they apply.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RulesView {
    /// The rules in force, after overrides.
    pub rules: Vec<rules::Rule>,
    /// Rules that do not apply here, and why: `[rule, reason]`.
    #[schema(value_type = Vec<Vec<String>>)]
    pub skipped: Vec<(String, String)>,
    /// Derived values computed for the unit.
    pub derived: Vec<String>,
    /// The fault-moment capture (override key `capture`).
    pub capture: rules::CaptureSettings,
    /// The overrides set here and at the site: `[unit id or null, rule, patch]`.
    #[schema(value_type = Vec<Vec<Value>>)]
    pub overrides: Vec<(Option<i64>, String, Json_)>,
}

text_enum! {
    /// Where an alarm is, as listed.
    pub enum AlarmState {
        /// Its condition holds and nobody has acknowledged it.
        Active = "active",
        /// Its condition holds; someone has acknowledged it.
        Acknowledged = "acknowledged",
        /// Its condition is gone; nobody has acknowledged it yet.
        Cleared = "cleared",
        /// Over: cleared and acknowledged.
        Closed = "closed",
    }
}

impl From<rules::InvalidRule> for ApiError {
    fn from(invalid: rules::InvalidRule) -> Self {
        ApiError::BadRequest(invalid.0)
    }
}

/// Where a rule override applies: one unit, or a whole site.
#[derive(Debug, Clone)]
enum RuleScope {
    Unit(i64),
    Site(String),
}

/// A unit's site, the family whose domain pack applies, and its points (derived ones aside); 404
/// when the viewer does not see it.
async fn unit_scope(db: &mut sqlx::PgConnection, unit_id: i64) -> Result<(String, String, Vec<String>), ApiError> {
    let row: Option<(String, String, Vec<String>)> = sqlx::query_as(
        "select u.gateway_id, coalesce(nullif(u.family, ''), u.profile),
                coalesce(array_agg(p.name) filter (where p.id is not null and not p.derived), '{}')
         from units u left join points p on p.unit_id = u.id where u.id = $1 group by u.id",
    )
    .bind(unit_id)
    .fetch_optional(db)
    .await?;
    row.ok_or(ApiError::NotFound)
}

/// The rules in force for a unit, the skipped ones with the reason, derived values, capture
/// settings and overrides.
#[utoipa::path(
    get,
    path = "/api/v1/units/{unit_id}/rules",
    tag = "alarms",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    responses(
        (status = 200, description = "The unit's rules", body = RulesView),
        (status = 400, description = "The unit id is not a number", body = ErrorBody),
        (status = 403, description = "The viewer's role may not read rules", body = ErrorBody),
        (status = 404, description = "No such unit", body = ErrorBody),
    )
)]
pub(crate) async fn unit_rules(
    viewer: Allowed<ReadPaging>,
    Path(unit_id): Path<i64>,
) -> Result<Json<RulesView>, ApiError> {
    rules_view(&mut *viewer.begin().await?, &RuleScope::Unit(unit_id)).await
}

/// The rules of a scope as they apply, with the overrides set there (and, for a unit, at its site).
async fn rules_view(db: &mut sqlx::PgConnection, scope: &RuleScope) -> Result<Json<RulesView>, ApiError> {
    let (compiled, overrides) = match scope {
        RuleScope::Unit(unit_id) => {
            let (gateway, profile, points) = unit_scope(db, *unit_id).await?;
            let overrides = db::overrides(&mut *db, &gateway).await?;
            let file = super::unit_rule_file(&profile, &overrides, *unit_id);
            let names: Vec<&str> = points.iter().map(String::as_str).collect();
            let overrides = overrides.into_iter().filter(|(u, _, _)| u.is_none() || *u == Some(*unit_id)).collect();
            (CompiledRules::compile(&file, &names), overrides)
        }
        RuleScope::Site(gateway) => {
            require_site(db, gateway).await?;
            let overrides = db::overrides(&mut *db, gateway).await?;
            let compiled = CompiledRules::compile(&super::site_rule_file(&overrides), &[]);
            (compiled, overrides.into_iter().filter(|(u, _, _)| u.is_none()).collect())
        }
    };
    Ok(Json(RulesView {
        rules: compiled.rules().cloned().collect(),
        skipped: compiled.skipped.clone(),
        derived: compiled.derived_names().map(str::to_owned).collect(),
        capture: compiled.capture,
        overrides,
    }))
}

/// Sets (`Some`) or removes (`None`) the override `key` at `scope` once the rules it gives
/// check (the replica owning the site reloads them), and answers the scope's rules as they are now.
async fn change_rule(
    viewer: &Allowed<ManageRules>,
    scope: RuleScope,
    key: &str,
    patch: Option<Json_>,
) -> Result<Json<RulesView>, ApiError> {
    let mut tx = viewer.begin().await?;
    let (gateway, unit) = match &scope {
        RuleScope::Unit(unit_id) => {
            let (gateway, profile, _) = unit_scope(&mut tx, *unit_id).await?;
            if let Some(patch) = &patch {
                let others: Vec<_> = db::overrides(&mut *tx, &gateway)
                    .await?
                    .into_iter()
                    .filter(|(u, k, _)| !(*u == Some(*unit_id) && k == key))
                    .collect();
                check_patch(super::unit_rule_file(&profile, &others, *unit_id), key, patch)?;
            }
            (gateway, Some(*unit_id))
        }
        RuleScope::Site(gateway) => {
            require_site(&mut tx, gateway).await?;
            if let Some(patch) = &patch {
                let others: Vec<_> = db::overrides(&mut *tx, gateway)
                    .await?
                    .into_iter()
                    .filter(|(u, k, _)| !(u.is_none() && k == key))
                    .collect();
                check_site_patch(&others, key, patch)?;
            }
            (gateway.clone(), None)
        }
    };
    db::set_override(&mut tx, &gateway, unit, key, patch.as_ref(), &viewer.actor()).await?;
    tx.commit().await?;
    rules_view(&mut *viewer.begin().await?, &scope).await
}

/// Checks that `patch` (an object of fields, or null) gives a valid rule set at its scope.
fn check_patch(mut file: rules::RuleFile, key: &str, patch: &Json_) -> Result<(), ApiError> {
    if key == rules::CAPTURE_KEY {
        return Ok(rules::check_capture_patch(patch)?);
    }
    if let Some(name) = key.strip_prefix(rules::DERIVED_PREFIX) {
        return Ok(rules::check_derived_patch(&file.derived, name, patch)?);
    }
    if !(patch.is_object() || patch.is_null()) {
        return Err(ApiError::BadRequest("send an object of rule fields, or null to disable the rule".into()));
    }
    rules::apply_override(&mut file.rules, key, patch);
    for rule in &file.rules {
        rules::parse_rule(rule)?;
    }
    Ok(())
}

/// Checks a site override: against the site's own rules for a site rule, else against every
/// profile that has the rule (or derived value); one no profile has must be whole.
fn check_site_patch(others: &[(Option<i64>, String, Json_)], key: &str, patch: &Json_) -> Result<(), ApiError> {
    if rules::is_site_rule(key) {
        return check_patch(super::site_rule_file(others), key, patch);
    }
    let has = |file: &rules::RuleFile| match key.strip_prefix(rules::DERIVED_PREFIX) {
        Some(name) => file.derived.iter().any(|d| d.name == name),
        None => file.rules.iter().any(|r| r.get("key").and_then(Json_::as_str) == Some(key)),
    };
    let files: Vec<rules::RuleFile> =
        rules::profiles().chain([""]).map(|p| super::unit_rule_file(p, others, 0)).collect();
    let with_key: Vec<&rules::RuleFile> = files.iter().filter(|f| has(f)).collect();
    if with_key.is_empty() {
        check_patch(files[files.len() - 1].clone(), key, patch)?;
    }
    for file in with_key {
        check_patch(file.clone(), key, patch)?;
    }
    Ok(())
}

/// Overrides a rule's fields for one unit with a JSON patch (`null` disables the rule; a new key
/// adds one; the key `capture` sets the fault-moment capture).
#[utoipa::path(
    put,
    path = "/api/v1/units/{unit_id}/rules/{rule}",
    tag = "alarms",
    params(
        ("unit_id" = i64, Path, description = "Unit id", example = 1),
        ("rule" = String, Path, description = "Rule key", example = "chw_supply_high"),
    ),
    request_body(content = Value, description = "An object of rule fields, or null"),
    responses(
        (status = 200, description = "The unit's rules as they are now", body = RulesView),
        (status = 400, description = "The patch gives an invalid rule", body = ErrorBody),
        (status = 403, description = "The viewer's role may not change rules", body = ErrorBody),
        (status = 404, description = "No such unit", body = ErrorBody),
        (status = 422, description = "The body is not JSON", body = ErrorBody),
    )
)]
pub(crate) async fn put_unit_rule(
    viewer: Allowed<ManageRules>,
    Path((unit_id, key)): Path<(i64, String)>,
    Json(patch): Json<Json_>,
) -> Result<Json<RulesView>, ApiError> {
    change_rule(&viewer, RuleScope::Unit(unit_id), &key, Some(patch)).await
}

/// Removes a unit's override of a rule.
#[utoipa::path(
    delete,
    path = "/api/v1/units/{unit_id}/rules/{rule}",
    tag = "alarms",
    params(
        ("unit_id" = i64, Path, description = "Unit id", example = 1),
        ("rule" = String, Path, description = "Rule key", example = "chw_supply_high"),
    ),
    responses(
        (status = 200, description = "The unit's rules as they are now", body = RulesView),
        (status = 400, description = "The unit id is not a number", body = ErrorBody),
        (status = 403, description = "The viewer's role may not change rules", body = ErrorBody),
        (status = 404, description = "No such unit", body = ErrorBody),
    )
)]
pub(crate) async fn delete_unit_rule(
    viewer: Allowed<ManageRules>,
    Path((unit_id, key)): Path<(i64, String)>,
) -> Result<Json<RulesView>, ApiError> {
    change_rule(&viewer, RuleScope::Unit(unit_id), &key, None).await
}

/// A site's own rules (gateway offline) and the overrides it sets for all its units.
#[utoipa::path(
    get,
    path = "/api/v1/gateways/{gateway_id}/rules",
    tag = "alarms",
    params(
        ("gateway_id" = String, Path, description = "Gateway (site) id", pattern = "^[A-Za-z0-9_-]{1,64}$",
         example = "demo-gw"),
    ),
    responses(
        (status = 200, description = "The site's rules", body = RulesView),
        (status = 403, description = "The viewer's role may not read rules", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    )
)]
pub(crate) async fn site_rules(
    viewer: Allowed<ReadPaging>,
    Path(gateway): Path<String>,
) -> Result<Json<RulesView>, ApiError> {
    rules_view(&mut *viewer.begin().await?, &RuleScope::Site(gateway)).await
}

/// A site override patches both the site's own rules and every unit's rule of that key.
#[utoipa::path(
    put,
    path = "/api/v1/gateways/{gateway_id}/rules/{rule}",
    tag = "alarms",
    params(
        ("gateway_id" = String, Path, description = "Gateway (site) id", pattern = "^[A-Za-z0-9_-]{1,64}$",
         example = "demo-gw"),
        ("rule" = String, Path, description = "Rule key", example = "chw_supply_high"),
    ),
    request_body(content = Value, description = "An object of rule fields, or null"),
    responses(
        (status = 200, description = "The site's rules as they are now", body = RulesView),
        (status = 400, description = "The patch gives an invalid rule", body = ErrorBody),
        (status = 403, description = "The viewer's role may not change rules", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
        (status = 422, description = "The body is not JSON", body = ErrorBody),
    )
)]
pub(crate) async fn put_site_rule(
    viewer: Allowed<ManageRules>,
    Path((gateway, key)): Path<(String, String)>,
    Json(patch): Json<Json_>,
) -> Result<Json<RulesView>, ApiError> {
    change_rule(&viewer, RuleScope::Site(gateway), &key, Some(patch)).await
}

/// Removes a site's override of a rule.
#[utoipa::path(
    delete,
    path = "/api/v1/gateways/{gateway_id}/rules/{rule}",
    tag = "alarms",
    params(
        ("gateway_id" = String, Path, description = "Gateway (site) id", pattern = "^[A-Za-z0-9_-]{1,64}$",
         example = "demo-gw"),
        ("rule" = String, Path, description = "Rule key", example = "chw_supply_high"),
    ),
    responses(
        (status = 200, description = "The site's rules as they are now", body = RulesView),
        (status = 403, description = "The viewer's role may not change rules", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    )
)]
pub(crate) async fn delete_site_rule(
    viewer: Allowed<ManageRules>,
    Path((gateway, key)): Path<(String, String)>,
) -> Result<Json<RulesView>, ApiError> {
    change_rule(&viewer, RuleScope::Site(gateway), &key, None).await
}

/// A maintenance window: alarms raised during it are recorded but not announced.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
#[schema(example = json!({"unit_id": 1, "starts_at": "2026-03-01T06:00:00Z", "ends_at": "2026-03-01T12:00:00Z",
    "reason": "annual tube cleaning"}))]
pub struct MaintenanceWindow {
    /// Window id.
    #[serde(default)]
    pub id: i64,
    /// One unit, or none for the whole site.
    pub unit_id: Option<i64>,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// A site's current and coming maintenance windows.
#[utoipa::path(
    get,
    path = "/api/v1/gateways/{gateway_id}/maintenance",
    tag = "alarms",
    params(
        ("gateway_id" = String, Path, description = "Gateway (site) id", pattern = "^[A-Za-z0-9_-]{1,64}$",
         example = "demo-gw"),
    ),
    responses(
        (status = 200, description = "Windows not yet ended, by start", body = Vec<MaintenanceWindow>),
        (status = 403, description = "The viewer's role may not read maintenance windows", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    )
)]
pub(crate) async fn list_maintenance(
    viewer: Allowed<ReadPaging>,
    Path(gateway): Path<String>,
) -> Result<Json<Vec<MaintenanceWindow>>, ApiError> {
    let mut tx = viewer.begin().await?;
    require_site(&mut tx, &gateway).await?;
    let windows = sqlx::query_as(
        "select id, unit_id, starts_at, ends_at, reason from maintenance_windows
         where gateway_id = $1 and ends_at > now() order by starts_at",
    )
    .bind(&gateway)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Json(windows))
}

/// Adds a maintenance window for a unit of the site, or the whole site.
#[utoipa::path(
    post,
    path = "/api/v1/gateways/{gateway_id}/maintenance",
    tag = "alarms",
    params(
        ("gateway_id" = String, Path, description = "Gateway (site) id", pattern = "^[A-Za-z0-9_-]{1,64}$",
         example = "demo-gw"),
    ),
    request_body = MaintenanceWindow,
    responses(
        (status = 200, description = "The window, with its id", body = MaintenanceWindow),
        (status = 400, description = "The window ends before it starts, or the unit is not at the site",
         body = ErrorBody),
        (status = 403, description = "The viewer's role may not add maintenance windows", body = ErrorBody),
        (status = 404, description = "No such site or unit", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn add_maintenance(
    viewer: Allowed<ManageRules>,
    Path(gateway): Path<String>,
    Json(window): Json<MaintenanceWindow>,
) -> Result<Json<MaintenanceWindow>, ApiError> {
    let mut tx = viewer.begin().await?;
    require_site(&mut tx, &gateway).await?;
    if window.ends_at <= window.starts_at {
        return Err(ApiError::BadRequest("ends_at must be after starts_at".into()));
    }
    if let Some(unit) = window.unit_id {
        let (unit_gateway, _, _) = unit_scope(&mut tx, unit).await?;
        if unit_gateway != gateway {
            return Err(ApiError::BadRequest(format!("unit {unit} is not behind gateway {gateway}")));
        }
    }
    let id: i64 = sqlx::query_scalar(
        "insert into maintenance_windows (gateway_id, unit_id, starts_at, ends_at, reason, created_by)
         values ($1, $2, $3, $4, $5, $6) returning id",
    )
    .bind(&gateway)
    .bind(window.unit_id)
    .bind(window.starts_at)
    .bind(window.ends_at)
    .bind(&window.reason)
    .bind(viewer.actor())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(MaintenanceWindow { id, ..window }))
}
