//! TimescaleDB, when the database has the extension loaded: `readings` becomes a hypertable with
//! compression and (if asked) retention, and one-minute and one-hour continuous aggregates serve
//! the history API's bucketed ranges. On plain PostgreSQL none of this exists and the API works
//! the same, from `readings` and the `readings_1h` rollup ingest maintains.
//!
//! The policies follow the server's flags at every start: set, changed and removed as they say,
//! and left alone when they already agree. Every step is idempotent, servers starting together
//! take turns (an advisory lock), and a failure leaves the server in plain mode with a warning,
//! so an extension that is installed but unusable (old version, no privileges) never stops
//! ingest.

use std::{fmt, time::Duration};

use sqlx::{PgConnection, PgPool};
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

/// Whether the database can use TimescaleDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// The extension's files are not installed.
    Absent,
    /// Installed, but not in `shared_preload_libraries`: creating it would fail.
    Installed,
    /// Installed and preloaded: usable.
    Loaded,
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Availability::Absent => "absent",
            Availability::Installed => "installed but not preloaded (shared_preload_libraries)",
            Availability::Loaded => "loaded",
        })
    }
}

/// Asks the database whether TimescaleDB is absent, installed or loaded.
pub async fn availability(pool: &PgPool) -> sqlx::Result<Availability> {
    let (installed, preloaded): (bool, bool) = sqlx::query_as(
        "select exists (select 1 from pg_available_extensions where name = 'timescaledb'),
                current_setting('shared_preload_libraries') ~ '(^|[\\s,\"])timescaledb([\\s,\"]|$)'",
    )
    .fetch_one(pool)
    .await?;
    Ok(match (installed, preloaded) {
        (false, _) => Availability::Absent,
        (true, false) => Availability::Installed,
        (true, true) => Availability::Loaded,
    })
}

/// Whether this database already runs in TimescaleDB mode (the extension is created and
/// `readings` is a hypertable), without changing anything: for tools other than the server.
pub async fn current_mode(pool: &PgPool) -> sqlx::Result<StorageMode> {
    let created: bool = sqlx::query_scalar("select exists (select 1 from pg_extension where extname = 'timescaledb')")
        .fetch_one(pool)
        .await?;
    if !created {
        return Ok(StorageMode::Plain);
    }
    let hypertable: bool = sqlx::query_scalar(
        "select exists (select 1 from timescaledb_information.hypertables
                        where hypertable_schema = current_schema() and hypertable_name = 'readings')",
    )
    .fetch_one(pool)
    .await?;
    Ok(if hypertable { StorageMode::Timescale } else { StorageMode::Plain })
}

/// What the storage policies should be, from the server's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policies {
    /// Drop raw readings older than this (none: keep them).
    pub retention: Option<Duration>,
    /// Compress chunks of readings older than this.
    pub compress_after: Duration,
    /// How late readings may arrive (the gateways' backfill horizon): the aggregates' refreshes
    /// look this far back, so a backlog delivered after an outage shows in them.
    pub late_readings: Duration,
}

impl Default for Policies {
    fn default() -> Self {
        Self { retention: None, compress_after: DAY * 7, late_readings: DAY * 7 }
    }
}

const DAY: Duration = Duration::from_secs(86_400);

impl Policies {
    /// How far back the aggregates' refreshes reach: the backfill horizon and a day for the
    /// readings in flight, but never where retention has dropped the raw readings (a refresh
    /// there would empty the buckets it should keep).
    fn refresh_window(&self) -> Duration {
        let window = self.late_readings + DAY;
        self.retention.map_or(window, |retention| window.min(retention))
    }
}

/// The continuous aggregates: name, bucket width, how often they are refreshed, and how far
/// behind now their refreshes stop (newer buckets are computed from raw readings on each query).
pub const AGGREGATES: [(&str, &str, &str, &str); 2] = [
    ("readings_1m_continuous", "1 minute", "1 minute", "1 minute"),
    ("readings_1h_continuous", "1 hour", "10 minutes", "1 hour"),
];

/// How the server stores readings, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storage {
    /// How readings are stored.
    pub mode: StorageMode,
    /// Whether the database has TimescaleDB.
    pub timescaledb: Availability,
}

/// Sets TimescaleDB up when it is loaded, makes its policies what `policies` says, and says which
/// mode the server runs in (and logs why when it is plain).
pub async fn prepare(pool: &PgPool, policies: &Policies) -> Storage {
    let timescaledb = match availability(pool).await {
        Ok(availability) => availability,
        Err(error) => {
            warn!(%error, "cannot tell whether TimescaleDB is available; running on plain PostgreSQL");
            return Storage { mode: StorageMode::Plain, timescaledb: Availability::Absent };
        }
    };
    let mode = prepare_loaded(pool, policies, timescaledb).await;
    Storage { mode, timescaledb }
}

async fn prepare_loaded(pool: &PgPool, policies: &Policies, availability: Availability) -> StorageMode {
    match availability {
        Availability::Absent => return StorageMode::Plain,
        Availability::Installed => {
            warn!(
                timescaledb = %availability,
                "TimescaleDB is installed but not preloaded; running on plain PostgreSQL (add timescaledb to \
                 shared_preload_libraries and restart PostgreSQL to use it)"
            );
            return StorageMode::Plain;
        }
        Availability::Loaded => {}
    }
    match set_up(pool, policies).await {
        Ok(()) => {
            info!(
                compress_after_days = policies.compress_after.as_secs() / 86_400,
                retention_days = policies.retention.map(|r| r.as_secs() / 86_400),
                refresh_window_days = policies.refresh_window().as_secs() / 86_400,
                "TimescaleDB hypertable, compression, retention and continuous aggregates follow the flags"
            );
            StorageMode::Timescale
        }
        Err(error) => {
            warn!(%error, "TimescaleDB is loaded but could not be set up; running on plain PostgreSQL");
            StorageMode::Plain
        }
    }
}

fn seconds(duration: Duration) -> String {
    format!("{} seconds", duration.as_secs())
}

/// Held while a server sets TimescaleDB up, so servers starting together take turns.
const SET_UP_LOCK: i64 = 0x6368_696c_6c5f_7473; // "chill_ts"

async fn set_up(pool: &PgPool, policies: &Policies) -> sqlx::Result<()> {
    let mut db = pool.acquire().await?;
    sqlx::query("select pg_advisory_lock($1)").bind(SET_UP_LOCK).execute(&mut *db).await?;
    let result = set_up_locked(&mut db, policies).await;
    // Closing the connection would release the lock too; unlocking keeps it usable.
    sqlx::query("select pg_advisory_unlock($1)").bind(SET_UP_LOCK).execute(&mut *db).await?;
    result
}

async fn set_up_locked(db: &mut PgConnection, policies: &Policies) -> sqlx::Result<()> {
    let statements = [
        "create extension if not exists timescaledb",
        // (point_id, ts) is unique and includes the time column, as a hypertable requires.
        "select create_hypertable('readings', by_range('ts', interval '1 day'), if_not_exists => true, migrate_data => true)",
        // One segment per point, newest first: history reads one point's range at a time.
        "alter table readings set (timescaledb.compress, timescaledb.compress_segmentby = 'point_id', \
         timescaledb.compress_orderby = 'ts desc')",
    ];
    for statement in statements {
        sqlx::query(statement).execute(&mut *db).await?;
    }
    let compress_after = seconds(policies.compress_after);
    Policy::Compression.set(db, "readings", Some(&[("compress_after", &compress_after)])).await?;
    let drop_after = policies.retention.map(seconds);
    let retention = drop_after.as_deref().map(|drop_after| [("drop_after", drop_after)]);
    Policy::Retention.set(db, "readings", retention.as_ref().map(|config| config.as_slice())).await?;
    let window = policies.refresh_window();
    let start_offset = seconds(window);
    for (name, width, every, end_offset) in AGGREGATES {
        create_aggregate(db, name, width).await?;
        let refresh =
            [("start_offset", start_offset.as_str()), ("end_offset", end_offset), ("schedule_interval", every)];
        Policy::Refresh.set(db, name, Some(&refresh)).await?;
        // The policy only ever looks back over its window: what is older (readings kept from
        // plain mode, or before a first materialisation failed) is materialised once, here.
        // (Asked of the materialised rows: the view itself computes what they lack from raw.)
        let (schema, table): (String, String) = sqlx::query_as(
            "select materialization_hypertable_schema::text, materialization_hypertable_name::text
             from timescaledb_information.continuous_aggregates where view_name = $1",
        )
        .bind(name)
        .fetch_one(&mut *db)
        .await?;
        let missing: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select exists (select 1 from readings where ts < now() - make_interval(secs => $1))
                and not exists (select 1 from \"{schema}\".\"{table}\" where bucket < now() - make_interval(secs => $1))"
        )))
        .bind(window.as_secs_f64())
        .fetch_one(&mut *db)
        .await?;
        if missing {
            info!(aggregate = name, "materialising the continuous aggregate over the readings stored before it");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "call refresh_continuous_aggregate('{name}', null, now() - interval '{end_offset}')"
            )))
            .execute(&mut *db)
            .await?;
        }
    }
    // Minute buckets serve ranges of up to 3 days: they go with the raw readings, hours stay.
    Policy::Retention.set(db, AGGREGATES[0].0, retention.as_ref().map(|config| config.as_slice())).await
}

/// Creates the continuous aggregate `name` of `readings` over `width` buckets (avg, min, max, the
/// newest value and the count of values, as the history API serves them), unless it exists.
/// Real-time aggregation stays on: buckets newer than the last refresh are computed from raw
/// readings on each query.
async fn create_aggregate(db: &mut PgConnection, name: &str, width: &str) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "create materialized view if not exists {name}
         with (timescaledb.continuous, timescaledb.materialized_only = false) as
         select point_id, time_bucket(interval '{width}', ts) as bucket, avg(value) as avg, min(value) as min,
                max(value) as max, last(value, ts) filter (where value is not null) as last, count(value) as n
         from readings group by point_id, bucket with no data"
    )))
    .execute(&mut *db)
    .await?;
    // Earlier versions created them materialised-only: the newest buckets were empty.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "alter materialized view {name} set (timescaledb.materialized_only = false)"
    )))
    .execute(&mut *db)
    .await?;
    // API requests read them for points they have already found visible, as they read `readings`.
    sqlx::query(sqlx::AssertSqlSafe(format!("grant select on {name} to chillcloud_api"))).execute(&mut *db).await?;
    Ok(())
}

/// The kinds of TimescaleDB policy the server keeps.
#[derive(Debug, Clone, Copy)]
enum Policy {
    Compression,
    Retention,
    Refresh,
}

impl Policy {
    /// The job's procedure, and the functions that add and remove the policy.
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Policy::Compression => ("policy_compression", "add_compression_policy", "remove_compression_policy"),
            Policy::Retention => ("policy_retention", "add_retention_policy", "remove_retention_policy"),
            Policy::Refresh => (
                "policy_refresh_continuous_aggregate",
                "add_continuous_aggregate_policy",
                "remove_continuous_aggregate_policy",
            ),
        }
    }

    /// Makes this policy on `relation` have `settings` (named interval arguments of its add
    /// function; `schedule_interval` is the job's schedule): kept when it already does, replaced
    /// when it differs, removed when `settings` is none. The caller holds [`SET_UP_LOCK`].
    async fn set(self, db: &mut PgConnection, relation: &str, settings: Option<&[(&str, &str)]>) -> sqlx::Result<()> {
        let (proc, add, remove) = self.names();
        let wanted: serde_json::Map<String, serde_json::Value> =
            settings.unwrap_or_default().iter().map(|(key, value)| ((*key).to_owned(), (*value).into())).collect();
        // Intervals compare as intervals: '5 days' is '432000 seconds'.
        let current: Option<Option<bool>> = sqlx::query_scalar(
            "select bool_and(case w.key when 'schedule_interval' then j.schedule_interval = w.value::interval
                                        else (j.config->>w.key)::interval = w.value::interval end)
             from timescaledb_information.jobs j left join jsonb_each_text($3) w on true
             where j.proc_name = $1 and j.hypertable_schema = current_schema() and j.hypertable_name = $2
             group by j.job_id",
        )
        .bind(proc)
        .bind(relation)
        .bind(serde_json::Value::Object(wanted))
        .fetch_optional(&mut *db)
        .await?;
        let unchanged = match (current, settings) {
            (None, None) => true,
            (Some(same), Some(_)) => same == Some(true),
            _ => false,
        };
        if unchanged {
            return Ok(());
        }
        info!(policy = proc, relation, ?settings, "changing a TimescaleDB policy to follow the flags");
        if current.is_some() {
            sqlx::query(sqlx::AssertSqlSafe(format!("select {remove}('{relation}', if_exists => true)")))
                .execute(&mut *db)
                .await?;
        }
        if let Some(settings) = settings {
            let arguments: Vec<String> =
                settings.iter().map(|(key, value)| format!("{key} => interval '{value}'")).collect();
            sqlx::query(sqlx::AssertSqlSafe(format!("select {add}('{relation}', {})", arguments.join(", "))))
                .execute(&mut *db)
                .await?;
        }
        Ok(())
    }
}
