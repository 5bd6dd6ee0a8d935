//! Remote control: start, stop and setpoint changes asked through the API, sent to the unit's
//! gateway over MQTT, and their results.
//!
//! The server checks what it can (the viewer's role and sites, the point is writable, the
//! value is within the bounds and step the gateway's birth announced, the gateway is online),
//! records the command, and publishes it with an id, an expiry ([`TIME_TO_LIVE`]) and the
//! requester. The gateway checks again against its own map, refuses in local control or when an
//! interlock is not met, executes the id at most once, reads the point back and answers
//! (`gateway::command`). Results are recorded by ingest ([`record_result`]); a command still
//! without one a while after its expiry is marked `unanswered` ([`run_sweeper`]). The
//! `commands` table is the audit trail: who, what, when, from which value to which, and the
//! outcome, server-side refusals included.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Extension, Path, Query, State},
    http::StatusCode,
    routing::get,
};
use chillcloud_proto::{Command, CommandResult, GatewayId, MessageKind, Topic};
use chrono::{DateTime, Utc};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

use crate::{
    accounts::{Allowed, Operate, Viewer},
    api::{ApiError, AppState},
    openapi::ErrorBody,
};

/// How long a command may take to reach the gateway and its device; after that the gateway
/// does not execute it.
pub const TIME_TO_LIVE: Duration = Duration::from_secs(30);
/// How long after its expiry a command without a result is marked `unanswered`.
const ANSWER_GRACE: Duration = Duration::from_secs(30);

/// Routes behind authentication, nested under `/api/v1`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/units/{unit_id}/commands", get(list).post(send)).route("/commands/{command_id}", get(detail))
}

/// A command asked of a unit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"point": "chw_setpoint", "value": 6.5}))]
pub struct NewCommand {
    /// The writable point's name, as the unit's points list it.
    pub point: String,
    /// The value to write, in the point's unit (0 or 1 for a switch such as `chiller_enable`).
    pub value: f64,
}

/// A command and what became of it.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct CommandRecord {
    /// Its id, as the gateway saw it.
    pub id: String,
    /// The unit.
    pub unit_id: i64,
    /// The point written.
    pub point: String,
    /// The point's unit of measure.
    pub unit: String,
    /// The value asked for.
    pub value: f64,
    /// The point's latest reading when it was asked.
    pub previous_value: Option<f64>,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// After this the gateway does not execute it.
    pub expires_at: DateTime<Utc>,
    /// `sent` (on its way, or executing), `done` (written and read back equal), `refused` (not
    /// written; see `message`), `failed` (the write or the read back failed), `expired` (reached
    /// the gateway too late; not written), `unanswered` (no result came).
    pub status: String,
    /// Why it was refused or failed.
    pub message: String,
    /// What the device read after the write.
    pub read_back: Option<f64>,
    /// When the result came.
    pub finished_at: Option<DateTime<Utc>>,
}

const RECORD: &str = "select c.id, c.unit_id, p.name as point, p.unit_of_measure as unit, c.value, c.previous_value,
        c.requested_by, c.requested_at, c.expires_at, c.status, c.message, c.read_back, c.finished_at
    from commands c join points p on p.id = c.point_id";

/// The point a command targets, as the viewer's transaction sees it.
#[derive(sqlx::FromRow)]
struct Target {
    gateway_id: String,
    device_key: String,
    online: bool,
    point_id: Option<i64>,
    writable: Option<bool>,
    write_min: Option<f64>,
    write_max: Option<f64>,
    write_step: Option<f64>,
    unit_of_measure: Option<String>,
    latest: Option<f64>,
}

/// The value to send, on its step exactly (as the gateway judges it: 0.9999999 is a start, 1),
/// or why the server refuses the command before sending it.
fn checked(target: &Target, point: &str, value: f64) -> Result<f64, String> {
    if target.writable != Some(true) {
        return Err(format!("{point} is read only"));
    }
    let unit = target.unit_of_measure.as_deref().filter(|u| !u.is_empty()).map(|u| format!(" {u}")).unwrap_or_default();
    let (Some(min), Some(max)) = (target.write_min, target.write_max) else {
        return Err(format!("{point}: the gateway announced no bounds for it; update the gateway"));
    };
    if !value.is_finite() || value < min || value > max {
        return Err(format!("{point}: {value}{unit} is outside the allowed {min} to {max}{unit}"));
    }
    let step = target.write_step.unwrap_or(1.0);
    let Some(value) = chillcloud_proto::on_step(value, min, step) else {
        return Err(format!("{point}: {value}{unit} is not {min} plus a multiple of {step}{unit}"));
    };
    if !target.online {
        return Err("the unit's gateway is offline: nothing was sent".into());
    }
    Ok(value)
}

/// Asks the unit's gateway to write a value: the command is recorded and sent, and answered at
/// once with status `sent`; its result follows within seconds (poll `GET /api/v1/commands/{id}`).
/// A command the server refuses (read only, out of bounds, off the step, gateway offline) is
/// recorded as `refused` and answered 409 with the reason; nothing is sent.
#[utoipa::path(
    post,
    path = "/api/v1/units/{unit_id}/commands",
    tag = "units",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1)),
    request_body = NewCommand,
    responses(
        (status = 202, description = "Sent to the gateway; the result follows", body = CommandRecord),
        (status = 400, description = "No such point on the unit, or the body is not JSON", body = ErrorBody),
        (status = 403, description = "The viewer's role may not operate units", body = ErrorBody),
        (status = 404, description = "No such unit, or not the viewer's", body = ErrorBody),
        (status = 409, description = "Refused and recorded: read only, out of bounds, off the step, or the gateway is offline", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn send(
    State(state): State<AppState>,
    viewer: Allowed<Operate>,
    Path(unit_id): Path<i64>,
    Json(body): Json<NewCommand>,
) -> Result<(StatusCode, Json<CommandRecord>), ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
    let target: Target = sqlx::query_as(
        "select u.gateway_id, u.device_key, g.online, p.id as point_id, p.writable, p.write_min, p.write_max,
                p.write_step, p.unit_of_measure, l.value as latest
         from units u join gateways g on g.id = u.gateway_id
         left join points p on p.unit_id = u.id and p.name = $2
         left join latest_readings l on l.point_id = p.id
         where u.id = $1",
    )
    .bind(unit_id)
    .bind(&body.point)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    let Some(point_id) = target.point_id else {
        return Err(ApiError::BadRequest(format!("the unit has no point {:?}", body.point)));
    };
    let (value, refused) = match checked(&target, &body.point, body.value) {
        Ok(value) => (value, None),
        Err(reason) => (body.value, Some(reason)),
    };
    let id = hex::encode(rand::random::<[u8; 16]>());
    let expires_at = Utc::now() + TIME_TO_LIVE;
    sqlx::query(
        "insert into commands (id, unit_id, point_id, gateway_id, value, previous_value, requested_by, user_id,
                               expires_at, status, message, finished_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, case when $10 = 'sent' then null else now() end)",
    )
    .bind(&id)
    .bind(unit_id)
    .bind(point_id)
    .bind(&target.gateway_id)
    .bind(value)
    .bind(target.latest)
    .bind(viewer.actor())
    .bind(viewer.user_id)
    .bind(expires_at)
    .bind(if refused.is_some() { "refused" } else { "sent" })
    .bind(refused.as_deref().unwrap_or(""))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Some(reason) = refused {
        info!(unit_id, point = %body.point, value = body.value, by = %viewer.actor(), %reason, "command refused");
        return Err(ApiError::Conflict(reason));
    }
    let gateway = GatewayId::new(target.gateway_id.clone()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let command = Command {
        id: id.clone(),
        device: target.device_key,
        point: body.point.clone(),
        value,
        expires_at_ms: expires_at.timestamp_millis(),
        requester: viewer.actor(),
    };
    let topic = Topic::new(gateway, MessageKind::Command).to_string();
    if state.to_gateways.send((topic, command.encode_to_vec())).is_err() {
        warn!(%id, "the MQTT client has stopped; the command will be marked unanswered");
    }
    info!(%id, unit_id, point = %body.point, value, by = %viewer.actor(), "command sent");
    let mut tx = viewer.begin(&state.api_pool).await?;
    let record = one(&mut tx, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(record)))
}

async fn one(db: &mut sqlx::PgConnection, id: &str) -> Result<CommandRecord, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{RECORD} where c.id = $1")))
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(ApiError::NotFound)
}

/// One command and its result.
#[utoipa::path(
    get,
    path = "/api/v1/commands/{command_id}",
    tag = "units",
    params(("command_id" = String, Path, description = "Command id", example = "5f0c3e8a9b1d4c2e8f7a6b5c4d3e2f10")),
    responses(
        (status = 200, description = "The command", body = CommandRecord),
        (status = 404, description = "No such command, or not the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn detail(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(command_id): Path<String>,
) -> Result<Json<CommandRecord>, ApiError> {
    let mut tx = viewer.begin(&state.api_pool).await?;
    Ok(Json(one(&mut tx, &command_id).await?))
}

/// How many commands to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// At most this many, newest first (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A unit's commands, newest first: the audit trail of its remote control.
#[utoipa::path(
    get,
    path = "/api/v1/units/{unit_id}/commands",
    tag = "units",
    params(("unit_id" = i64, Path, description = "Unit id", example = 1), ListQuery),
    responses(
        (status = 200, description = "Its commands, newest first", body = [CommandRecord]),
        (status = 400, description = "The limit is out of range", body = ErrorBody),
        (status = 404, description = "No such unit, or not the viewer's", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(unit_id): Path<i64>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<CommandRecord>>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 500".into()));
    }
    let mut tx = viewer.begin(&state.api_pool).await?;
    sqlx::query("select 1 from units where id = $1")
        .bind(unit_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound)?;
    let records = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{RECORD} where c.unit_id = $1 order by c.requested_at desc, c.id limit $2"
    )))
    .bind(unit_id)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Json(records))
}

/// What recording a gateway's result did.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The command now has its result.
    Stored,
    /// It had one already (a copy the gateway sent again): nothing changed.
    AlreadyFinished,
    /// The gateway has no command with that id.
    Unknown,
}

/// Records `result` from `gateway`, for a command of that gateway still waiting for one (or
/// marked unanswered meanwhile).
pub async fn record_result(pool: &PgPool, gateway: &GatewayId, result: &CommandResult) -> sqlx::Result<Recorded> {
    let status = result.outcome();
    let read_back = result.read_back.filter(|v| v.is_finite());
    let updated = sqlx::query(
        "update commands set status = $3, message = $4, read_back = $5, finished_at = now()
         where id = $1 and gateway_id = $2 and status in ('sent', 'unanswered')",
    )
    .bind(&result.id)
    .bind(gateway.as_str())
    .bind(status)
    .bind(result.message.replace('\0', ""))
    .bind(read_back)
    .execute(pool)
    .await?;
    if updated.rows_affected() > 0 {
        info!(%gateway, id = %result.id, status, message = %result.message, "command result");
        return Ok(Recorded::Stored);
    }
    let exists: Option<i32> = sqlx::query_scalar("select 1 from commands where id = $1 and gateway_id = $2")
        .bind(&result.id)
        .bind(gateway.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(if exists.is_some() { Recorded::AlreadyFinished } else { Recorded::Unknown })
}

/// Marks commands that got no result by [`ANSWER_GRACE`] after their expiry `unanswered`, every
/// few seconds until `shutdown`. A result that still comes replaces the mark.
pub async fn run_sweeper(pool: PgPool, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let swept = sqlx::query(
            "update commands set status = 'unanswered', finished_at = now(),
                 message = 'no result from the gateway: it may or may not have written the value; check the reading'
             where status = 'sent' and expires_at < now() - make_interval(secs => $1)",
        )
        .bind(ANSWER_GRACE.as_secs_f64())
        .execute(&pool)
        .await;
        match swept {
            Ok(done) if done.rows_affected() > 0 => warn!(commands = done.rows_affected(), "commands unanswered"),
            Ok(_) => {}
            Err(error) => warn!(%error, "cannot mark unanswered commands"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setpoint(online: bool) -> Target {
        Target {
            gateway_id: "gw".into(),
            device_key: "chiller-1".into(),
            online,
            point_id: Some(1),
            writable: Some(true),
            write_min: Some(4.4),
            write_max: Some(15.6),
            write_step: Some(0.1),
            unit_of_measure: Some("°C".into()),
            latest: Some(7.0),
        }
    }

    #[test]
    fn the_server_refuses_what_the_birth_does_not_allow_and_offline_gateways() {
        assert_eq!(checked(&setpoint(true), "chw_setpoint", 6.5), Ok(6.5));
        assert_eq!(checked(&setpoint(true), "chw_setpoint", 4.4), Ok(4.4));
        assert_eq!(checked(&setpoint(true), "chw_setpoint", 15.6), Ok(15.6));
        assert_eq!(checked(&setpoint(true), "chw_setpoint", 6.500_000_01), Ok(6.5), "on its step");
        let switch = Target { write_min: Some(0.0), write_max: Some(1.0), write_step: Some(1.0), ..setpoint(true) };
        assert_eq!(checked(&switch, "chiller_enable", 0.999_999_9), Ok(1.0), "a start is a start");
        for (value, says) in [(2.0, "outside"), (16.0, "outside"), (6.55, "multiple of 0.1"), (f64::NAN, "outside")] {
            let refused = checked(&setpoint(true), "chw_setpoint", value).expect_err("refused");
            assert!(refused.contains(says), "{value}: {refused}");
        }
        assert!(checked(&setpoint(false), "chw_setpoint", 6.5).is_err_and(|r| r.contains("offline")));
        let read_only = Target { writable: Some(false), ..setpoint(true) };
        assert!(checked(&read_only, "evap_leaving_temp", 6.5).is_err_and(|r| r.contains("read only")));
    }
}
