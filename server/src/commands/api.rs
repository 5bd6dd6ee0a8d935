//! The remote-control API: send a command to a unit, follow it, list a unit's commands.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use chillcloud_proto::{Command, GatewayId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{CommandStatus, TIME_TO_LIVE, Target, checked};
use crate::{
    gateway_link::ToGateway,
    http::{Allowed, ApiError, AppState, ErrorBody, Operate, Read, limit, require_unit},
    secrets::random_hex,
};

/// Routes for viewers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(send)).routes(routes!(detail))
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
    /// What became of it.
    #[sqlx(try_from = "String")]
    pub status: CommandStatus,
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
    let mut tx = viewer.begin().await?;
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
    let id = random_hex::<16>();
    let expires_at = Utc::now() + TIME_TO_LIVE;
    sqlx::query(
        "insert into commands (id, unit_id, point_id, gateway_id, value, previous_value, requested_by, user_id,
                               expires_at, status, message, finished_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, case when $12 then now() end)",
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
    .bind(if refused.is_some() { CommandStatus::Refused } else { CommandStatus::Sent }.as_str())
    .bind(refused.as_deref().unwrap_or(""))
    // A refusal is its own result: finished when recorded.
    .bind(refused.is_some())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Some(reason) = refused {
        info!(unit_id, point = %body.point, value = body.value, by = %viewer.actor(), %reason, "command refused");
        return Err(ApiError::Conflict(reason.0));
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
    if !state.gateways.send(gateway, ToGateway::Command(command)) {
        warn!(%id, "the MQTT client has stopped; the command will be marked unanswered");
    }
    info!(%id, unit_id, point = %body.point, value, by = %viewer.actor(), "command sent");
    let mut tx = viewer.begin().await?;
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
    viewer: Allowed<Read>,
    Path(command_id): Path<String>,
) -> Result<Json<CommandRecord>, ApiError> {
    let mut tx = viewer.begin().await?;
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
    viewer: Allowed<Read>,
    Path(unit_id): Path<i64>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<CommandRecord>>, ApiError> {
    let limit = limit(query.limit, 50, 500)?;
    let mut tx = viewer.begin().await?;
    require_unit(&mut tx, unit_id).await?;
    let records = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{RECORD} where c.unit_id = $1 order by c.requested_at desc, c.id limit $2"
    )))
    .bind(unit_id)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Json(records))
}
