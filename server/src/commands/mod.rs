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

pub mod api;

use std::time::Duration;

use chillcloud_proto::{CommandResult, GatewayId};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

message_error! {
    /// Why the server refuses a command before sending it, for the person who asked.
    pub struct Refusal;
}

text_enum! {
    /// What became of a command.
    pub enum CommandStatus {
        /// On its way, or executing.
        Sent = "sent",
        /// Written and read back equal.
        Done = "done",
        /// Not written; its message says why (the server's check, or the gateway's).
        Refused = "refused",
        /// The write or the read back failed.
        Failed = "failed",
        /// It reached the gateway too late; not written.
        Expired = "expired",
        /// No result came: it may or may not have been written.
        Unanswered = "unanswered",
    }
}

impl CommandStatus {
    /// The outcome a gateway reported, by the wire format's own reading of it
    /// ([`CommandResult::outcome`]).
    pub fn of(result: &CommandResult) -> Self {
        Self::try_from(result.outcome().to_owned()).unwrap_or(Self::Failed)
    }
}

/// How long a command may take to reach the gateway and its device; after that the gateway
/// does not execute it.
pub const TIME_TO_LIVE: Duration = Duration::from_secs(30);
/// How long after its expiry a command without a result is marked `unanswered`.
const ANSWER_GRACE: Duration = Duration::from_secs(30);

/// The point a command targets, as the viewer's transaction sees it.
#[derive(sqlx::FromRow)]
pub(crate) struct Target {
    pub(crate) gateway_id: String,
    pub(crate) device_key: String,
    pub(crate) online: bool,
    pub(crate) point_id: Option<i64>,
    pub(crate) writable: Option<bool>,
    pub(crate) write_min: Option<f64>,
    pub(crate) write_max: Option<f64>,
    pub(crate) write_step: Option<f64>,
    pub(crate) unit_of_measure: Option<String>,
    pub(crate) latest: Option<f64>,
}

/// The value to send, on its step exactly (as the gateway judges it: 0.9999999 is a start, 1),
/// or why the server refuses the command before sending it.
pub(crate) fn checked(target: &Target, point: &str, value: f64) -> Result<f64, Refusal> {
    if target.writable != Some(true) {
        return Err(format!("{point} is read only").into());
    }
    let unit = target.unit_of_measure.as_deref().filter(|u| !u.is_empty()).map(|u| format!(" {u}")).unwrap_or_default();
    let (Some(min), Some(max)) = (target.write_min, target.write_max) else {
        return Err(format!("{point}: the gateway announced no bounds for it; update the gateway").into());
    };
    if !value.is_finite() || value < min || value > max {
        return Err(format!("{point}: {value}{unit} is outside the allowed {min} to {max}{unit}").into());
    }
    let step = target.write_step.unwrap_or(1.0);
    let Some(value) = chillcloud_proto::on_step(value, min, step) else {
        return Err(format!("{point}: {value}{unit} is not {min} plus a multiple of {step}{unit}").into());
    };
    if !target.online {
        return Err("the unit's gateway is offline: nothing was sent".into());
    }
    Ok(value)
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
    let status = CommandStatus::of(result);
    let read_back = result.read_back.filter(|v| v.is_finite());
    let updated = sqlx::query(
        "update commands set status = $3, message = $4, read_back = $5, finished_at = now()
         where id = $1 and gateway_id = $2 and status in ($6, $7)",
    )
    .bind(&result.id)
    .bind(gateway.as_str())
    .bind(status.as_str())
    .bind(result.message.replace('\0', ""))
    .bind(read_back)
    .bind(CommandStatus::Sent.as_str())
    .bind(CommandStatus::Unanswered.as_str())
    .execute(pool)
    .await?;
    if updated.rows_affected() > 0 {
        info!(%gateway, id = %result.id, %status, message = %result.message, "command result");
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
            // `status = 'sent'` is a literal so the planner can use the partial index
            // `commands_waiting` (a parameter would hide the predicate from a generic plan).
            "update commands set status = $2, finished_at = now(),
                 message = 'no result from the gateway: it may or may not have written the value; check the reading'
             where status = 'sent' and expires_at < now() - make_interval(secs => $1)",
        )
        .bind(ANSWER_GRACE.as_secs_f64())
        .bind(CommandStatus::Unanswered.as_str())
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
