//! TimescaleDB, when the database has the extension: `readings` becomes a hypertable with
//! compression and (if configured) retention, and one-minute and one-hour continuous aggregates
//! are kept refreshed for long-range analysis. On plain PostgreSQL none of this exists and the
//! API works the same: its history comes from `readings` and the `readings_1h` rollup that
//! ingest maintains in both modes.
//!
//! Every step is idempotent, and a failure leaves the server in plain mode with a warning, so an
//! extension that is installed but unusable (old version, no privileges) never stops ingest.

use std::{fmt, time::Duration};

use sqlx::PgPool;
use tracing::{info, warn};

/// How readings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMode {
    /// Plain PostgreSQL tables.
    Plain,
    /// A TimescaleDB hypertable with compression and continuous aggregates.
    Timescale,
}

impl fmt::Display for StorageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageMode::Plain => "plain PostgreSQL",
            StorageMode::Timescale => "TimescaleDB",
        })
    }
}

/// Chunks of `readings` older than this are compressed.
const COMPRESS_AFTER: &str = "7 days";

/// Whether the database can load TimescaleDB.
pub async fn available(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists (select 1 from pg_available_extensions where name = 'timescaledb')")
        .fetch_one(pool)
        .await
}

/// Sets TimescaleDB up when it is available and says which mode the server runs in.
/// `retention` drops raw readings older than it (none: keep everything).
pub async fn prepare(pool: &PgPool, retention: Option<Duration>) -> StorageMode {
    match available(pool).await {
        Ok(true) => {}
        Ok(false) => return StorageMode::Plain,
        Err(error) => {
            warn!(%error, "cannot tell whether TimescaleDB is available; running on plain PostgreSQL");
            return StorageMode::Plain;
        }
    }
    match set_up(pool, retention).await {
        Ok(()) => {
            info!(
                compress_after = COMPRESS_AFTER,
                ?retention,
                "TimescaleDB hypertable, compression and continuous aggregates ready"
            );
            StorageMode::Timescale
        }
        Err(error) => {
            warn!(%error, "TimescaleDB is installed but could not be set up; running on plain PostgreSQL");
            StorageMode::Plain
        }
    }
}

async fn set_up(pool: &PgPool, retention: Option<Duration>) -> sqlx::Result<()> {
    let statements = [
        "create extension if not exists timescaledb".to_owned(),
        // (point_id, ts) is unique and includes the time column, as a hypertable requires.
        "select create_hypertable('readings', by_range('ts', interval '1 day'), if_not_exists => true, migrate_data => true)"
            .to_owned(),
        // One segment per point, newest first: history reads one point's range at a time.
        "alter table readings set (timescaledb.compress, timescaledb.compress_segmentby = 'point_id', \
         timescaledb.compress_orderby = 'ts desc')"
            .to_owned(),
        format!("select add_compression_policy('readings', interval '{COMPRESS_AFTER}', if_not_exists => true)"),
        continuous_aggregate("readings_1m_continuous", "1 minute"),
        "select add_continuous_aggregate_policy('readings_1m_continuous', start_offset => interval '2 hours', \
         end_offset => interval '1 minute', schedule_interval => interval '1 minute', if_not_exists => true)"
            .to_owned(),
        continuous_aggregate("readings_1h_continuous", "1 hour"),
        "select add_continuous_aggregate_policy('readings_1h_continuous', start_offset => interval '3 days', \
         end_offset => interval '1 hour', schedule_interval => interval '1 hour', if_not_exists => true)"
            .to_owned(),
    ];
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(pool).await?;
    }
    if let Some(retention) = retention {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "select add_retention_policy('readings', interval '{} seconds', if_not_exists => true)",
            retention.as_secs()
        )))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// A continuous aggregate of `readings` over `width` buckets: avg, min, max, last and count.
fn continuous_aggregate(name: &str, width: &str) -> String {
    format!(
        "create materialized view if not exists {name} with (timescaledb.continuous) as \
         select point_id, time_bucket(interval '{width}', ts) as bucket, avg(value) as avg, min(value) as min, \
         max(value) as max, last(value, ts) as last, count(value) as n \
         from readings group by point_id, bucket with no data"
    )
}
