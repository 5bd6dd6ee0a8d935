//! The fleet API: the gateways with their state; a gateway's configuration held by the server
//! (read its versions with what it runs, make a new version, checked by the gateway's own
//! checker, then sent to it); provisioning a gateway and renewing its password.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chillcloud_proto::{GatewayConfig, GatewayId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::provision;
use crate::{
    gateway_link::ToGateway,
    http::{Allowed, ApiError, AppState, ConfigureGateways, ErrorBody, ProvisionGateways},
};

/// Largest site part taken, in bytes: well within one MQTT message to the gateway.
pub const MAX_SITE_BYTES: usize = 200_000;
/// Longest note on a change, in characters.
pub const MAX_NOTE_CHARS: usize = 500;
/// Most changes to one gateway's configuration in a day: far above what engineers make, low
/// enough that a runaway script cannot fill the database.
pub const MAX_CHANGES_PER_DAY: i64 = 200;

/// Routes for viewers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(gateway_config, change_config))
        .routes(routes!(list_gateways, provision_gateway))
        .routes(routes!(renew_password))
}

/// One version of a gateway's configuration.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ConfigVersion {
    /// Its number: 1, 2, ...
    pub version: i32,
    /// The site part (`[[buses]]`, `[[devices]]`, `[queue]`) as TOML.
    pub site_toml: String,
    /// Who made it.
    pub changed_by: String,
    /// Why, in their words.
    pub note: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was last sent to the gateway.
    pub sent_at: Option<DateTime<Utc>>,
    /// The gateway's report: `applied` (after its trial), `refused` or `rolled_back`; none yet.
    pub outcome: Option<String>,
    /// The gateway's reason, for refusals and rollbacks.
    pub outcome_reason: Option<String>,
    /// When it reported.
    pub outcome_at: Option<DateTime<Utc>>,
}

/// Where a gateway's configuration stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayConfigState {
    /// The gateway.
    pub gateway_id: String,
    /// The customer organisation that owns its site, if any.
    pub organisation_id: Option<i64>,
    /// Whether it is connected now.
    pub online: bool,
    /// The version it last said it runs; 0 for its own file.
    pub running_version: i32,
    /// When it said so.
    pub reported_at: Option<DateTime<Utc>>,
    /// The newest version: what it should run. None while the gateway runs its own file.
    pub desired: Option<ConfigVersion>,
    /// `local` (no server-held version), `in_sync` (runs the desired version, confirmed),
    /// `on_trial` (runs it, trial not over), `sending` (online, not yet running it),
    /// `waiting` (offline: it gets the version when it reconnects), `refused` or `rolled_back`
    /// (the gateway's reason is in `desired`).
    pub state: String,
    /// Whether what runs differs from what is desired.
    pub drift: bool,
    /// Every version, newest first (at most 100).
    pub versions: Vec<ConfigVersion>,
}

/// The state (see [`GatewayConfigState::state`]) of a gateway running `running` whose newest
/// version is `desired` (its number and the gateway's outcome).
fn state_of(desired: Option<(i32, Option<&str>)>, running: i32, online: bool) -> &'static str {
    let Some((version, outcome)) = desired else { return "local" };
    match outcome {
        Some("refused") => "refused",
        Some("rolled_back") => "rolled_back",
        Some("applied") if running == version => "in_sync",
        _ if running == version => "on_trial",
        _ if online => "sending",
        _ => "waiting",
    }
}

/// A gateway in the fleet list.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct FleetGateway {
    /// Its id.
    pub id: String,
    /// The customer that owns the site, if any.
    pub organisation: Option<String>,
    /// Whether it is connected now.
    pub online: bool,
    /// When it was last heard from.
    pub last_seen: Option<DateTime<Utc>>,
    /// Its software version, from its birth.
    pub software_version: Option<String>,
    /// Units it polls.
    pub units: i64,
    /// The configuration version it runs (0: its file).
    pub running_version: i32,
    /// The newest server-held version, if any.
    pub desired_version: Option<i32>,
    /// The gateway's report on it.
    #[serde(skip)]
    pub desired_outcome: Option<String>,
    /// Its configuration's state, as on its own page.
    #[sqlx(skip)]
    pub config_state: String,
}

/// Which gateways to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    /// Only gateways whose id sorts after this one (the last of the previous page).
    pub after: Option<String>,
}

/// Most gateways in one page of the list.
pub const FLEET_PAGE: i64 = 200;

/// The fleet's gateways, by id, 200 a page: connection, units, configuration state.
#[utoipa::path(
    get,
    path = "/api/v1/gateways",
    tag = "fleet",
    params(FleetQuery),
    responses(
        (status = 200, description = "A page of gateways; ask for the next with `after`", body = [FleetGateway]),
        (status = 403, description = "Only the service organisation's engineers configure gateways", body = ErrorBody),
    )
)]
pub(crate) async fn list_gateways(
    viewer: Allowed<ConfigureGateways>,
    axum::extract::Query(query): axum::extract::Query<FleetQuery>,
) -> Result<Json<Vec<FleetGateway>>, ApiError> {
    let mut tx = viewer.begin().await?;
    let mut page: Vec<FleetGateway> = sqlx::query_as(
        "select g.id, o.name as organisation, g.online, g.last_seen, g.software_version,
                (select count(*) from units u where u.gateway_id = g.id) as units,
                g.config_running_version as running_version, d.version as desired_version,
                d.outcome as desired_outcome
         from gateways g
         left join organisations o on o.id = g.organisation_id
         left join lateral (select version, outcome from gateway_config_versions v
                            where v.gateway_id = g.id order by version desc limit 1) d on true
         where g.id > coalesce($1, '') order by g.id limit $2",
    )
    .bind(&query.after)
    .bind(FLEET_PAGE)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    for gateway in &mut page {
        let desired = gateway.desired_version.map(|v| (v, gateway.desired_outcome.as_deref()));
        gateway.config_state = state_of(desired, gateway.running_version, gateway.online).to_owned();
    }
    Ok(Json(page))
}

/// What [`gateway_config`] reads of the gateway itself.
#[derive(sqlx::FromRow)]
struct GatewayRow {
    online: bool,
    config_running_version: i32,
    config_reported_at: Option<DateTime<Utc>>,
    organisation_id: Option<i64>,
}

/// A gateway's configuration: the versions, the one it runs and any drift.
#[utoipa::path(
    get,
    path = "/api/v1/gateways/{gateway_id}/config",
    tag = "fleet",
    params(("gateway_id" = String, Path, description = "The gateway", example = "gw-plant-1")),
    responses(
        (status = 200, description = "The configuration's state and versions", body = GatewayConfigState),
        (status = 403, description = "Only the service organisation's engineers configure gateways", body = ErrorBody),
        (status = 404, description = "No such gateway", body = ErrorBody),
    )
)]
pub(crate) async fn gateway_config(
    viewer: Allowed<ConfigureGateways>,
    Path(gateway_id): Path<String>,
) -> Result<Json<GatewayConfigState>, ApiError> {
    let mut tx = viewer.begin().await?;
    let Some(gateway) = sqlx::query_as::<_, GatewayRow>(
        "select online, config_running_version, config_reported_at, organisation_id from gateways where id = $1",
    )
    .bind(&gateway_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Err(ApiError::NotFound);
    };
    let GatewayRow {
        online,
        config_running_version: running_version,
        config_reported_at: reported_at,
        organisation_id,
    } = gateway;
    let versions: Vec<ConfigVersion> = sqlx::query_as(
        "select version, site_toml, changed_by_name as changed_by, note, created_at, sent_at, outcome,
                outcome_reason, outcome_at
         from gateway_config_versions where gateway_id = $1 order by version desc limit 100",
    )
    .bind(&gateway_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let newest = versions.first().map(|v| (v.version, v.outcome.as_deref()));
    let state = state_of(newest, running_version, online).to_owned();
    let drift = versions.first().is_some_and(|d| d.version != running_version);
    let mut versions = versions.into_iter();
    let desired = versions.next();
    Ok(Json(GatewayConfigState {
        gateway_id,
        organisation_id,
        online,
        running_version,
        reported_at,
        desired,
        state,
        drift,
        versions: versions.collect(),
    }))
}

/// A change to a gateway's configuration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "site_toml": "[[devices]]\nid = \"chiller-1\"\nprofile = \"trane-ch530\"\nhost = \"10.0.0.21\"\n",
    "note": "Chiller 1's controller moved to its own address",
    "base_version": 3
}))]
pub struct ConfigChange {
    /// The whole site part as TOML (`[[buses]]`, `[[devices]]`, `[queue]`), as in the gateway's
    /// file; built-in profiles only. At most 200,000 bytes.
    pub site_toml: String,
    /// Why, up to 500 characters.
    #[serde(default)]
    pub note: String,
    /// The version the change was made from (0 for the first): the change is refused if
    /// someone made another since, so nobody's change is lost unseen.
    pub base_version: i32,
}

/// The version made.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigMade {
    /// Its number.
    pub version: i32,
    /// Whether it was handed to the broker for the gateway now (it is also sent when the
    /// gateway next connects, if it does not run it by then).
    pub sent: bool,
}

/// Makes a new version of a gateway's configuration and sends it to the gateway. It is checked
/// first by the code the gateway itself checks configurations with; a refusal names the field.
#[utoipa::path(
    put,
    path = "/api/v1/gateways/{gateway_id}/config",
    tag = "fleet",
    params(("gateway_id" = String, Path, description = "The gateway", example = "gw-plant-1")),
    request_body = ConfigChange,
    responses(
        (status = 201, description = "Stored and sent", body = ConfigMade),
        (status = 400, description = "The configuration is invalid (the message names the field), too large, or the note too long", body = ErrorBody),
        (status = 403, description = "Only the service organisation's engineers configure gateways", body = ErrorBody),
        (status = 404, description = "No such gateway", body = ErrorBody),
        (status = 409, description = "Someone made another version since `base_version`", body = ErrorBody),
        (status = 422, description = "The body does not match the schema, or too many changes today", body = ErrorBody),
    )
)]
pub(crate) async fn change_config(
    viewer: Allowed<ConfigureGateways>,
    State(state): State<AppState>,
    Path(gateway_id): Path<String>,
    Json(change): Json<ConfigChange>,
) -> Result<(StatusCode, Json<ConfigMade>), ApiError> {
    let gateway = GatewayId::new(&gateway_id).map_err(|_| ApiError::NotFound)?;
    if change.site_toml.len() > MAX_SITE_BYTES {
        return Err(ApiError::BadRequest(format!("the configuration is over {MAX_SITE_BYTES} bytes")));
    }
    if change.note.chars().count() > MAX_NOTE_CHARS || change.note.contains('\0') {
        return Err(ApiError::BadRequest(format!("a note is at most {MAX_NOTE_CHARS} characters of text")));
    }
    chillcloud_gateway::config::check_site(&change.site_toml).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut tx = viewer.begin().await?;
    // The gateway's row, locked: two changes at once are made one after the other.
    let exists: Option<bool> = sqlx::query_scalar("select true from gateways where id = $1 for update")
        .bind(gateway.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(ApiError::NotFound);
    }
    let (newest, today): (Option<i32>, i64) = sqlx::query_as(
        "select max(version), count(*) filter (where created_at > now() - interval '1 day')
         from gateway_config_versions where gateway_id = $1",
    )
    .bind(gateway.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let newest = newest.unwrap_or(0);
    if change.base_version != newest {
        return Err(ApiError::Conflict(format!(
            "version {newest} was made since version {}: reload and make the change again",
            change.base_version
        )));
    }
    if today >= MAX_CHANGES_PER_DAY {
        return Err(ApiError::TooMuch(format!("at most {MAX_CHANGES_PER_DAY} changes a day to one gateway")));
    }
    let version = newest + 1;
    sqlx::query(
        "insert into gateway_config_versions (gateway_id, version, site_toml, changed_by, changed_by_name, note, sent_at)
         values ($1, $2, $3, $4, $5, $6, now())",
    )
    .bind(gateway.as_str())
    .bind(version)
    .bind(&change.site_toml)
    .bind(viewer.user_id)
    .bind(viewer.actor())
    .bind(&change.note)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(gateway = %gateway, version, by = %viewer.actor(), "gateway configuration changed");
    let message = GatewayConfig {
        gateway_id: gateway.to_string(),
        version: version as u32,
        site_toml: change.site_toml,
        changed_by: viewer.actor(),
    };
    let sent = state.gateways.send(gateway, ToGateway::Config(message));
    Ok((StatusCode::CREATED, Json(ConfigMade { version, sent })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_says_what_the_gateway_runs_against_what_is_desired() {
        assert_eq!(state_of(None, 0, true), "local");
        assert_eq!(state_of(Some((3, Some("applied"))), 3, true), "in_sync");
        assert_eq!(state_of(Some((3, Some("applied"))), 0, true), "sending", "it lost its state: sent again");
        assert_eq!(state_of(Some((3, None)), 3, true), "on_trial");
        assert_eq!(state_of(Some((3, None)), 2, true), "sending");
        assert_eq!(state_of(Some((3, None)), 2, false), "waiting");
        assert_eq!(state_of(Some((3, Some("rolled_back"))), 2, true), "rolled_back");
        assert_eq!(state_of(Some((3, Some("refused"))), 2, false), "refused");
    }
}

/// A gateway to provision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "plant-a-gw1"}))]
pub struct NewGateway {
    /// Its id, which is also its MQTT username: letters, digits, `-` and `_`, at most 64.
    pub id: String,
}

/// A gateway's credentials and configuration file, answered once.
#[derive(Debug, Serialize, ToSchema)]
pub struct Provisioned {
    /// The gateway.
    pub gateway_id: String,
    /// Its MQTT password: shown this once, stored only hashed.
    pub password: String,
    /// Its configuration file (`/etc/chillcloud/gateway.toml`).
    pub gateway_toml: String,
    /// Its line for an external Mosquitto's password file (the embedded broker and the
    /// clustered tier take it from the database by themselves).
    pub mosquitto_password_line: String,
}

impl Provisioned {
    fn new(gateway: &GatewayId, credentials: provision::Credentials, gateway_toml: String) -> Self {
        Self {
            gateway_id: gateway.to_string(),
            password: credentials.password,
            gateway_toml,
            mosquitto_password_line: credentials.mosquitto_line,
        }
    }
}

/// Provisions a gateway: makes its broker credentials and answers its password (once) with the
/// configuration file to install. The embedded broker and the clustered tier accept it at once;
/// an external Mosquitto once `mosquitto_password_line` is in its password file.
#[utoipa::path(
    post,
    path = "/api/v1/gateways",
    tag = "fleet",
    request_body = NewGateway,
    responses(
        (status = 201, description = "Provisioned: the password is not shown again", body = Provisioned),
        (status = 400, description = "The id is not a valid gateway id, or is one of the server's broker users",
         body = ErrorBody),
        (status = 403, description = "Only administrators and managers provision gateways", body = ErrorBody),
        (status = 409, description = "A gateway with that id exists", body = ErrorBody),
        (status = 422, description = "The body does not match the schema", body = ErrorBody),
    )
)]
pub(crate) async fn provision_gateway(
    State(state): State<AppState>,
    viewer: Allowed<ProvisionGateways>,
    Json(body): Json<NewGateway>,
) -> Result<(StatusCode, Json<Provisioned>), ApiError> {
    let gateway = GatewayId::new(body.id).map_err(|e| ApiError::BadRequest(format!("id: {e}")))?;
    if !state.provisioning.allows(&gateway) {
        return Err(ApiError::BadRequest(format!("id: {gateway} is a broker user of the server's, not a gateway's")));
    }
    let credentials = provision::Credentials::generate(&gateway);
    let mut tx = viewer.begin().await?;
    sqlx::query_scalar::<_, String>(
        "insert into gateways (id, mqtt_password_hash, rabbitmq_password_hash) values ($1, $2, $3)
         on conflict (id) do nothing returning id",
    )
    .bind(gateway.as_str())
    .bind(&credentials.mosquitto_line)
    .bind(&credentials.rabbitmq_hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::Conflict(format!("gateway {gateway} exists; renew its password instead")))?;
    provision::announce(&mut tx, &gateway).await?;
    tx.commit().await?;
    let file = provision::gateway_file(&gateway, &state.provisioning.brokers);
    Ok((StatusCode::CREATED, Json(Provisioned::new(&gateway, credentials, file))))
}

/// Gives a gateway a new broker password and answers it (once) with the configuration file: for
/// a box replaced or a password lost. The old password is refused from the next connection on;
/// one already open stays until it drops.
#[utoipa::path(
    post,
    path = "/api/v1/gateways/{gateway_id}/password",
    tag = "fleet",
    params(("gateway_id" = String, Path, description = "Gateway id", pattern = "^[A-Za-z0-9_-]{1,64}$",
            example = "demo-gw")),
    responses(
        (status = 200, description = "The new password: it is not shown again", body = Provisioned),
        (status = 403, description = "Only administrators and managers provision gateways", body = ErrorBody),
        (status = 404, description = "No such gateway", body = ErrorBody),
    )
)]
pub(crate) async fn renew_password(
    State(state): State<AppState>,
    viewer: Allowed<ProvisionGateways>,
    Path(gateway): Path<String>,
) -> Result<Json<Provisioned>, ApiError> {
    let gateway = GatewayId::new(gateway).map_err(|_| ApiError::NotFound)?;
    let credentials = provision::Credentials::generate(&gateway);
    let mut tx = viewer.begin().await?;
    sqlx::query_scalar::<_, String>(
        "update gateways set mqtt_password_hash = $2, rabbitmq_password_hash = $3 where id = $1 returning id",
    )
    .bind(gateway.as_str())
    .bind(&credentials.mosquitto_line)
    .bind(&credentials.rabbitmq_hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound)?;
    provision::announce(&mut tx, &gateway).await?;
    tx.commit().await?;
    let file = provision::gateway_file(&gateway, &state.provisioning.brokers);
    Ok(Json(Provisioned::new(&gateway, credentials, file)))
}
