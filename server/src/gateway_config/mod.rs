//! Gateway configuration held by the server. Engineers keep each gateway's site part (its RTU
//! lines, devices with their points and intervals, queue bounds: TOML, as in the gateway's file)
//! here, versioned with who changed what, when and why. A change is checked by the gateway's own
//! checker ([`chillcloud_gateway::config::check_site`]) before it is stored, then sent on the
//! gateway's `config` topic. The gateway applies it, keeps it on trial, and reports; its births
//! say which version it runs, and one that runs an older version than the newest (it was
//! offline) is sent the newest on its birth, unless it refused or rolled that back.

pub mod api;
pub mod provision;

use chillcloud_proto::{ConfigOutcome, ConfigReport, GatewayConfig, GatewayId};
use sqlx::PgPool;

/// Records that `gateway` runs `running` (from its birth) and returns the version it should be
/// sent, if any: the newest, when it runs an older one and has not refused or rolled it back.
pub async fn due(pool: &PgPool, gateway: &GatewayId, running: u32) -> sqlx::Result<Option<GatewayConfig>> {
    sqlx::query("update gateways set config_running_version = $2, config_reported_at = now() where id = $1")
        .bind(gateway.as_str())
        .bind(running as i32)
        .execute(pool)
        .await?;
    let newest: Option<(i32, String, String)> = sqlx::query_as(
        "update gateway_config_versions set sent_at = now()
         where (gateway_id, version) = (select gateway_id, version from gateway_config_versions
                                        where gateway_id = $1 order by version desc limit 1)
           and version > $2 and outcome is distinct from 'refused' and outcome is distinct from 'rolled_back'
         returning version, site_toml, changed_by_name",
    )
    .bind(gateway.as_str())
    .bind(running as i32)
    .fetch_optional(pool)
    .await?;
    Ok(newest.map(|(version, site_toml, changed_by)| GatewayConfig {
        gateway_id: gateway.to_string(),
        version: version as u32,
        site_toml,
        changed_by,
    }))
}

/// What became of a report.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Stored with its version.
    Stored,
    /// About a version this gateway was never given.
    UnknownVersion,
    /// An outcome this build does not know.
    UnknownOutcome,
}

/// Records `gateway`'s report on a version: its outcome, and the version it runs now.
pub async fn record_report(pool: &PgPool, gateway: &GatewayId, report: &ConfigReport) -> sqlx::Result<Recorded> {
    if report.outcome() == ConfigOutcome::Unknown {
        return Ok(Recorded::UnknownOutcome);
    }
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "update gateway_config_versions set outcome = $3, outcome_reason = nullif($4, ''), outcome_at = now()
         where gateway_id = $1 and version = $2",
    )
    .bind(gateway.as_str())
    .bind(report.version as i32)
    .bind(report.outcome_name())
    .bind(&report.reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(Recorded::UnknownVersion);
    }
    sqlx::query("update gateways set config_running_version = $2, config_reported_at = now() where id = $1")
        .bind(gateway.as_str())
        .bind(report.running_version as i32)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Recorded::Stored)
}
