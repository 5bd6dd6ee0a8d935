//! Everything the server keeps in PostgreSQL: the registry built from births, readings, and
//! rejected messages. Every write here is idempotent, so redelivered messages store nothing twice.

use std::collections::HashMap;

use chillcloud_proto::{Birth, Data, DroppedInterval, GatewayId, Quality};
use chrono::{DateTime, TimeZone, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// Embedded schema migrations, run at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A gateway session's alias table: `point_ids[alias]` and that point's decimals.
#[derive(Debug, Clone, Default)]
pub struct AliasTable {
    points: Vec<Option<(i64, i32)>>,
}

impl AliasTable {
    fn get(&self, alias: u32) -> Option<(i64, i32)> {
        self.points.get(alias as usize).copied().flatten()
    }
}

/// Caches alias tables, which never change once a session's birth is stored. Bounded by the
/// aliases it holds: past [`AliasCache::MAX_ALIASES`] it starts again from empty (a table
/// missing from it is read back from `gateway_sessions`), so gateways that keep starting new
/// sessions cannot grow it.
#[derive(Debug, Default)]
pub struct AliasCache {
    tables: HashMap<(GatewayId, u64), AliasTable>,
    aliases: usize,
}

impl AliasCache {
    /// At 16 bytes an alias, 32 MiB.
    const MAX_ALIASES: usize = 2_000_000;

    fn insert(&mut self, key: (GatewayId, u64), table: AliasTable) {
        if self.aliases + table.points.len() > Self::MAX_ALIASES {
            self.tables.clear();
            self.aliases = 0;
        }
        self.aliases += table.points.len();
        if let Some(replaced) = self.tables.insert(key, table) {
            self.aliases -= replaced.points.len();
        }
    }
}

/// Most units (devices) one gateway may announce over all its births.
pub const MAX_UNITS_PER_GATEWAY: i64 = 1_000;
/// Most points one gateway may announce over all its births.
pub const MAX_POINTS_PER_GATEWAY: i64 = 50_000;

/// A birth that would take its gateway past [`MAX_UNITS_PER_GATEWAY`] or
/// [`MAX_POINTS_PER_GATEWAY`]; nothing of it is stored.
#[derive(Debug, thiserror::Error)]
#[error(
    "the gateway would have {units} units and {points} points; at most {MAX_UNITS_PER_GATEWAY} and {MAX_POINTS_PER_GATEWAY}"
)]
pub struct SiteFull {
    units: i64,
    points: i64,
}

/// Readings timestamped before 2000-01-01 are refused.
const EARLIEST_ACCEPTABLE_MS: i64 = 946_684_800_000;
/// Readings timestamped more than this far ahead of the server's clock are refused.
const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60 * 1000;

/// What became of a data message.
#[derive(Debug, PartialEq, Eq)]
pub enum DataOutcome {
    /// Readings were stored (duplicates counted as stored: they already were).
    Stored {
        /// Readings whose alias the session does not have (skipped).
        unknown_aliases: usize,
        /// Readings refused for a time before 2000 or in the future, or a non-finite value.
        refused: usize,
    },
    /// The session's birth has not arrived; the message is held until it does.
    HeldForBirth,
    /// The session's birth has not arrived and the gateway already has as much held as its
    /// [`HoldLimit`] allows: this one is refused.
    HoldingFull,
}

/// How much data may wait for a birth that has not arrived, per gateway: a gateway that never
/// sends its birth must not fill the database. A birth follows its gateway's connection within
/// seconds, so what waits longer than [`HoldLimit::MAX_AGE_MINUTES`] is deleted.
#[derive(Debug, Clone, Copy)]
pub struct HoldLimit {
    /// Messages held at most.
    pub messages: i64,
    /// Payload bytes held at most.
    pub bytes: i64,
}

impl HoldLimit {
    /// The server's limits: 1,000 messages or 16 MiB a gateway.
    pub const DEFAULT: Self = Self { messages: 1_000, bytes: 16 << 20 };
    /// Held data older than this is deleted.
    pub const MAX_AGE_MINUTES: i32 = 60;
}

/// Whether a gateway has been provisioned.
pub async fn gateway_exists(pool: &PgPool, gateway: &GatewayId) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists (select 1 from gateways where id = $1)")
        .bind(gateway.as_str())
        .fetch_one(pool)
        .await
}

/// Records a provisioned gateway with its password hashed for Mosquitto (the password-file
/// line) and for RabbitMQ, replacing earlier ones.
pub async fn upsert_gateway(
    pool: &PgPool,
    gateway: &GatewayId,
    mqtt_password_hash: &str,
    rabbitmq_password_hash: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into gateways (id, mqtt_password_hash, rabbitmq_password_hash) values ($1, $2, $3)
         on conflict (id) do update set mqtt_password_hash = excluded.mqtt_password_hash,
             rabbitmq_password_hash = excluded.rabbitmq_password_hash",
    )
    .bind(gateway.as_str())
    .bind(mqtt_password_hash)
    .bind(rabbitmq_password_hash)
    .execute(pool)
    .await?;
    Ok(())
}

/// The broker password-file lines of every provisioned gateway.
pub async fn gateway_password_lines(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("select mqtt_password_hash from gateways order by id").fetch_all(pool).await
}

fn time_from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Stores a birth: creates or updates the gateway's units and points and the session's alias
/// table, and marks the gateway online. Returns the session's alias table, or, storing nothing,
/// that the gateway would have too many units or points. The birth must have passed
/// [`Birth::check`] (dense aliases).
///
/// The birth of an earlier session (sent again ahead of its backlog) only adds what is missing:
/// the current session's metadata stays.
pub async fn store_birth(
    pool: &PgPool,
    gateway: &GatewayId,
    birth: &Birth,
) -> sqlx::Result<Result<AliasTable, SiteFull>> {
    // Refused before any work when the birth alone is past the bounds.
    let announced = birth.devices.iter().map(|d| d.points.len()).sum::<usize>() as i64;
    if birth.devices.len() as i64 > MAX_UNITS_PER_GATEWAY || announced > MAX_POINTS_PER_GATEWAY {
        return Ok(Err(SiteFull { units: birth.devices.len() as i64, points: announced }));
    }
    let mut tx = pool.begin().await?;
    let current: Option<i64> = sqlx::query_scalar("select session from gateways where id = $1 for update")
        .bind(gateway.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
    let earlier = current.is_some_and(|current| (birth.session as i64) < current);
    let (unit_sql, point_sql) = if earlier {
        (
            // A no-op update, so the existing row's id is returned.
            "insert into units (gateway_id, device_key, profile, model, attributes, family, gateway_display_name)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (gateway_id, device_key) do update set gateway_id = units.gateway_id
             returning id",
            "insert into points (unit_id, name, unit_of_measure, decimals, writable, write_min, write_max, write_step)
             select $1, * from unnest($2::text[], $3::text[], $4::int[], $5::bool[], $6::float8[], $7::float8[],
                                      $8::float8[])
             on conflict (unit_id, name) do update set unit_id = points.unit_id
             returning id, name",
        )
    } else {
        (
            "insert into units (gateway_id, device_key, profile, model, attributes, family, gateway_display_name)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (gateway_id, device_key) do update
             set profile = excluded.profile, model = excluded.model,
                 attributes = units.attributes || excluded.attributes, family = excluded.family,
                 gateway_display_name = excluded.gateway_display_name
             returning id",
            "insert into points (unit_id, name, unit_of_measure, decimals, writable, write_min, write_max, write_step)
             select $1, * from unnest($2::text[], $3::text[], $4::int[], $5::bool[], $6::float8[], $7::float8[],
                                      $8::float8[])
             on conflict (unit_id, name) do update
             set unit_of_measure = excluded.unit_of_measure, decimals = excluded.decimals, writable = excluded.writable,
                 write_min = excluded.write_min, write_max = excluded.write_max, write_step = excluded.write_step
             returning id, name",
        )
    };
    let mut table = AliasTable { points: vec![None; announced as usize] };
    for device in &birth.devices {
        let unit_id: i64 = sqlx::query_scalar(unit_sql)
            .bind(gateway.as_str())
            .bind(&device.id)
            .bind(&device.profile)
            .bind(&device.model)
            .bind(sqlx::types::Json(&device.attributes))
            .bind(&device.family)
            .bind(&device.display_name)
            .fetch_one(&mut *tx)
            .await?;
        // One statement per device, not per point: a large birth must not hold ingest up.
        let ids: Vec<(i64, String)> = sqlx::query_as(point_sql)
            .bind(unit_id)
            .bind(device.points.iter().map(|p| p.name.as_str()).collect::<Vec<&str>>())
            .bind(device.points.iter().map(|p| p.unit.as_str()).collect::<Vec<&str>>())
            .bind(device.points.iter().map(|p| p.decimals).collect::<Vec<i32>>())
            .bind(device.points.iter().map(|p| p.writable).collect::<Vec<bool>>())
            .bind(device.points.iter().map(|p| p.min).collect::<Vec<Option<f64>>>())
            .bind(device.points.iter().map(|p| p.max).collect::<Vec<Option<f64>>>())
            .bind(device.points.iter().map(|p| p.step).collect::<Vec<Option<f64>>>())
            .fetch_all(&mut *tx)
            .await?;
        let ids: HashMap<String, i64> = ids.into_iter().map(|(id, name)| (name, id)).collect();
        for point in &device.points {
            if let (Some(slot), Some(&point_id)) = (table.points.get_mut(point.alias as usize), ids.get(&point.name)) {
                *slot = Some((point_id, point.decimals));
            }
        }
    }
    let (units, points): (i64, i64) = sqlx::query_as(
        "select count(distinct u.id), count(p.id) from units u left join points p on p.unit_id = u.id
         where u.gateway_id = $1",
    )
    .bind(gateway.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if units > MAX_UNITS_PER_GATEWAY || points > MAX_POINTS_PER_GATEWAY {
        return Ok(Err(SiteFull { units, points }));
    }
    let point_ids: Vec<Option<i64>> = table.points.iter().map(|p| p.map(|(id, _)| id)).collect();
    // A retained birth is delivered again on every subscription: the first copy wins.
    sqlx::query(
        "insert into gateway_sessions (gateway_id, session, started_at, point_ids) values ($1, $2, $3, $4)
         on conflict (gateway_id, session) do nothing",
    )
    .bind(gateway.as_str())
    .bind(birth.session as i64)
    .bind(time_from_ms(birth.time_ms))
    .bind(&point_ids)
    .execute(&mut *tx)
    .await?;
    // The newest 100 sessions are kept: enough for any backlog (a gateway restarts a few times a
    // year), and a gateway that keeps starting new ones cannot grow the table.
    sqlx::query(
        "delete from gateway_sessions where gateway_id = $1 and session not in
             (select session from gateway_sessions where gateway_id = $1 order by session desc limit 100)",
    )
    .bind(gateway.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update gateways set software_version = $2, session = $3, online = true, last_seen = now()
         where id = $1 and (session is null or session <= $3)",
    )
    .bind(gateway.as_str())
    .bind(&birth.software_version)
    .bind(birth.session as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(table))
}

/// Marks the gateway offline if `session` is still its current one; says whether it was.
pub async fn store_death(pool: &PgPool, gateway: &GatewayId, session: u64) -> sqlx::Result<bool> {
    let updated = sqlx::query("update gateways set online = false where id = $1 and session = $2")
        .bind(gateway.as_str())
        .bind(session as i64)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(updated > 0)
}

async fn alias_table(
    pool: &PgPool,
    cache: &mut AliasCache,
    gateway: &GatewayId,
    session: u64,
) -> sqlx::Result<Option<AliasTable>> {
    let key = (gateway.clone(), session);
    if let Some(table) = cache.tables.get(&key) {
        return Ok(Some(table.clone()));
    }
    /// Point ids by alias, and their decimals in the same order.
    type AliasRow = (Vec<Option<i64>>, Vec<Option<i32>>);
    let row: Option<AliasRow> = sqlx::query_as(
        "select s.point_ids, array(select p.decimals from unnest(s.point_ids) with ordinality as a(id, n)
                                   left join points p on p.id = a.id order by a.n)
         from gateway_sessions s where s.gateway_id = $1 and s.session = $2",
    )
    .bind(gateway.as_str())
    .bind(session as i64)
    .fetch_optional(pool)
    .await?;
    let Some((ids, decimals)) = row else { return Ok(None) };
    let table =
        AliasTable { points: ids.into_iter().zip(decimals).map(|(id, d)| id.map(|id| (id, d.unwrap_or(0)))).collect() };
    cache.insert(key, table.clone());
    Ok(Some(table))
}

/// Remembers a freshly stored birth's alias table.
pub fn cache_birth(cache: &mut AliasCache, gateway: &GatewayId, session: u64, table: AliasTable) {
    cache.insert((gateway.clone(), session), table);
}

/// Readings gathered from many messages, written together by [`flush`].
#[derive(Debug, Default)]
pub struct ReadingRows {
    rows: Vec<(i64, DateTime<Utc>, Option<f64>, i16)>,
    gateways: Vec<GatewayId>,
}

impl ReadingRows {
    /// Number of readings gathered.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The readings as (point id, time in ms, value), a bad one without its value.
    pub fn observations(&self) -> impl Iterator<Item = (i64, i64, Option<f64>)> + '_ {
        self.rows.iter().map(|(point_id, ts, value, _)| (*point_id, ts.timestamp_millis(), *value))
    }

    /// Adds one reading.
    pub fn push(&mut self, point_id: i64, ts: DateTime<Utc>, value: Option<f64>, quality: Quality) {
        self.rows.push((point_id, ts, value, quality as i16));
    }
}

/// Gathered readings as the column arrays the insert statements bind.
#[derive(Default)]
struct Columns {
    point_ids: Vec<i64>,
    times: Vec<DateTime<Utc>>,
    values: Vec<Option<f64>>,
    qualities: Vec<i16>,
}

impl Columns {
    fn push(&mut self, (point_id, ts, value, quality): (i64, DateTime<Utc>, Option<f64>, i16)) {
        self.point_ids.push(point_id);
        self.times.push(ts);
        self.values.push(value);
        self.qualities.push(quality);
    }
}

/// Adds a data message's readings to `rows`, or holds the raw payload if its birth is unknown
/// and the gateway's held data stays within `limit`.
pub async fn gather_data(
    pool: &PgPool,
    cache: &mut AliasCache,
    gateway: &GatewayId,
    data: &Data,
    payload: &[u8],
    rows: &mut ReadingRows,
    limit: HoldLimit,
) -> sqlx::Result<DataOutcome> {
    let Some(table) = alias_table(pool, cache, gateway, data.session).await? else {
        let expired = sqlx::query("delete from pending_data where received_at < now() - make_interval(mins => $1)")
            .bind(HoldLimit::MAX_AGE_MINUTES)
            .execute(pool)
            .await?
            .rows_affected();
        if expired > 0 {
            tracing::warn!(messages = expired, "deleted data whose birth never arrived within the hour");
        }
        let held = sqlx::query(
            "insert into pending_data (gateway_id, session, payload)
             select $1, $2, $3
             from (select count(*) as messages, coalesce(sum(length(payload)), 0) as bytes
                   from pending_data where gateway_id = $1) held
             where held.messages < $4 and held.bytes + length($3) <= $5",
        )
        .bind(gateway.as_str())
        .bind(data.session as i64)
        .bind(payload)
        .bind(limit.messages)
        .bind(limit.bytes)
        .execute(pool)
        .await?
        .rows_affected();
        return Ok(if held == 1 { DataOutcome::HeldForBirth } else { DataOutcome::HoldingFull });
    };
    let (mut unknown_aliases, mut refused) = (0, 0);
    let latest_acceptable_ms = Utc::now().timestamp_millis() + MAX_CLOCK_AHEAD_MS;
    for reading in &data.readings {
        let Some((point_id, decimals)) = table.get(reading.alias) else {
            unknown_aliases += 1;
            continue;
        };
        let quality = reading.quality();
        let value = reading.value.map(|v| v.to_f64(decimals)).filter(|_| quality != Quality::Bad);
        let time_ms = data.base_time_ms.saturating_add(reading.offset_ms);
        // A gateway whose clock is wrong would otherwise plant readings years away, where they
        // would hide the latest value or never be seen.
        if !(EARLIEST_ACCEPTABLE_MS..=latest_acceptable_ms).contains(&time_ms) || value.is_some_and(|v| !v.is_finite())
        {
            refused += 1;
            continue;
        }
        rows.push(point_id, time_from_ms(time_ms), value, quality);
    }
    if !rows.gateways.contains(gateway) {
        rows.gateways.push(gateway.clone());
    }
    Ok(DataOutcome::Stored { unknown_aliases, refused })
}

/// Writes gathered readings in one transaction: the readings (duplicates ignored), their hourly
/// rollup, the latest value of each point (never overwritten by older backfill), and the
/// gateways' last contact.
pub async fn flush(pool: &PgPool, rows: ReadingRows) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // Sorted by key, the rows land in the primary key's index in order (measured about 1.5x
    // faster than arrival order), duplicates within the batch sit side by side, and the last
    // row of each point is its latest.
    let ReadingRows { rows: mut sorted, gateways } = rows;
    sorted.sort_unstable_by_key(|&(point_id, ts, _, _)| (point_id, ts));
    sorted.dedup_by_key(|&mut (point_id, ts, _, _)| (point_id, ts));
    let mut all = Columns::default();
    let mut latest = Columns::default();
    for (i, row) in sorted.iter().enumerate() {
        all.push(*row);
        if sorted.get(i + 1).is_none_or(|next| next.0 != row.0) {
            latest.push(*row);
        }
    }
    let gateways: Vec<&str> = gateways.iter().map(GatewayId::as_str).collect();

    // The fast path: insert, and if every row was new, fold the batch's own aggregates into
    // the rollup. When some rows were already stored (a redelivery), roll back and take the
    // exact path, which aggregates only the rows the insert kept. Redeliveries are rare, so
    // the common case never pays for finding out which rows were new.
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "insert into readings (point_id, ts, value, quality)
         select * from unnest($1::bigint[], $2::timestamptz[], $3::float8[], $4::int2[])",
    )
    .bind(&all.point_ids)
    .bind(&all.times)
    .bind(&all.values)
    .bind(&all.qualities)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => fold_hourly(&mut tx, &hourly_aggregates(&sorted)).await?,
        Err(error) if error.as_database_error().is_some_and(|e| e.is_unique_violation()) => {
            tx.rollback().await?;
            tx = pool.begin().await?;
            insert_readings_exactly(&mut tx, &all).await?;
        }
        Err(error) => return Err(error),
    }
    sqlx::query(
        "insert into latest_readings (point_id, ts, value, quality)
         select * from unnest($1::bigint[], $2::timestamptz[], $3::float8[], $4::int2[])
         on conflict (point_id) do update set ts = excluded.ts, value = excluded.value, quality = excluded.quality
         where latest_readings.ts < excluded.ts",
    )
    .bind(&latest.point_ids)
    .bind(&latest.times)
    .bind(&latest.values)
    .bind(&latest.qualities)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update gateways set last_seen = now(), online = true where id = any($1)")
        .bind(&gateways)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Hourly aggregates of rows sorted by (point, time), one entry per (point, hour).
#[derive(Default)]
struct Hourly {
    point_ids: Vec<i64>,
    buckets: Vec<DateTime<Utc>>,
    counts: Vec<i64>,
    totals: Vec<f64>,
    lows: Vec<Option<f64>>,
    highs: Vec<Option<f64>>,
    last_times: Vec<Option<DateTime<Utc>>>,
    last_values: Vec<Option<f64>>,
}

fn hour_of(ts: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = ts.timestamp().div_euclid(3600) * 3600;
    DateTime::from_timestamp(seconds, 0).unwrap_or(ts)
}

fn hourly_aggregates(sorted: &[(i64, DateTime<Utc>, Option<f64>, i16)]) -> Hourly {
    let mut hourly = Hourly::default();
    for &(point_id, ts, value, _) in sorted {
        let bucket = hour_of(ts);
        let same = hourly.point_ids.last() == Some(&point_id) && hourly.buckets.last() == Some(&bucket);
        if !same {
            hourly.point_ids.push(point_id);
            hourly.buckets.push(bucket);
            hourly.counts.push(0);
            hourly.totals.push(0.0);
            hourly.lows.push(None);
            hourly.highs.push(None);
            hourly.last_times.push(None);
            hourly.last_values.push(None);
        }
        if let Some(value) = value {
            let i = hourly.point_ids.len() - 1;
            hourly.counts[i] += 1;
            hourly.totals[i] += value;
            hourly.lows[i] = Some(hourly.lows[i].map_or(value, |low| low.min(value)));
            hourly.highs[i] = Some(hourly.highs[i].map_or(value, |high| high.max(value)));
            // Rows are sorted by time, so the last one seen is the newest.
            hourly.last_times[i] = Some(ts);
            hourly.last_values[i] = Some(value);
        }
    }
    hourly
}

/// Merges new readings' aggregates into `readings_1h`.
const MERGE_HOURLY: &str = "on conflict (point_id, bucket) do update set
         n = h.n + excluded.n,
         total = h.total + excluded.total,
         lo = least(h.lo, excluded.lo),
         hi = greatest(h.hi, excluded.hi),
         last_value = case when h.last_ts is null or excluded.last_ts > h.last_ts
                           then excluded.last_value else h.last_value end,
         last_ts = greatest(h.last_ts, excluded.last_ts)";

async fn fold_hourly(tx: &mut Transaction<'_, Postgres>, hourly: &Hourly) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "insert into readings_1h as h (point_id, bucket, n, total, lo, hi, last_ts, last_value)
         select * from unnest($1::bigint[], $2::timestamptz[], $3::int8[], $4::float8[], $5::float8[], $6::float8[],
                              $7::timestamptz[], $8::float8[])
         {MERGE_HOURLY}"
    )))
    .bind(&hourly.point_ids)
    .bind(&hourly.buckets)
    .bind(&hourly.counts)
    .bind(&hourly.totals)
    .bind(&hourly.lows)
    .bind(&hourly.highs)
    .bind(&hourly.last_times)
    .bind(&hourly.last_values)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts readings and folds exactly the inserted ones (not the duplicates) into the rollup,
/// in one statement. The newest value of each bucket is found by joining back on its time.
async fn insert_readings_exactly(tx: &mut Transaction<'_, Postgres>, all: &Columns) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "with inserted as (
             insert into readings (point_id, ts, value, quality)
             select * from unnest($1::bigint[], $2::timestamptz[], $3::float8[], $4::int2[])
             on conflict (point_id, ts) do nothing
             returning point_id, ts, value
         ), hourly as (
             select point_id, date_bin('1 hour', ts, timestamptz '2000-01-01 00:00:00+00') as bucket,
                    count(value) as n, coalesce(sum(value), 0) as total, min(value) as lo, max(value) as hi,
                    max(ts) filter (where value is not null) as last_ts
             from inserted group by 1, 2
         )
         insert into readings_1h as h (point_id, bucket, n, total, lo, hi, last_ts, last_value)
         select b.point_id, b.bucket, b.n, b.total, b.lo, b.hi, b.last_ts, i.value
         from hourly b left join inserted i on i.point_id = b.point_id and i.ts = b.last_ts
         {MERGE_HOURLY}"
    )))
    .bind(&all.point_ids)
    .bind(&all.times)
    .bind(&all.values)
    .bind(&all.qualities)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records intervals a gateway dropped unsent. Returns how many readings were newly reported
/// (a redelivered report adds nothing) and how many intervals were refused for impossible
/// times, as readings at such times are.
pub async fn store_dropped(
    pool: &PgPool,
    gateway: &GatewayId,
    dropped: &[DroppedInterval],
) -> sqlx::Result<(u64, usize)> {
    let latest_acceptable_ms = Utc::now().timestamp_millis() + MAX_CLOCK_AHEAD_MS;
    let acceptable = |ms: i64| (EARLIEST_ACCEPTABLE_MS..=latest_acceptable_ms).contains(&ms);
    let all = dropped.len();
    let dropped: Vec<&DroppedInterval> =
        dropped.iter().filter(|d| acceptable(d.from_ms) && acceptable(d.to_ms) && d.from_ms <= d.to_ms).collect();
    let refused = all - dropped.len();
    let from: Vec<DateTime<Utc>> = dropped.iter().map(|d| time_from_ms(d.from_ms)).collect();
    let to: Vec<DateTime<Utc>> = dropped.iter().map(|d| time_from_ms(d.to_ms)).collect();
    let readings: Vec<i64> = dropped.iter().map(|d| i64::try_from(d.readings).unwrap_or(i64::MAX)).collect();
    let added: Vec<i64> = sqlx::query_scalar(
        "insert into dropped_intervals (gateway_id, from_ts, to_ts, readings)
         select $1, * from unnest($2::timestamptz[], $3::timestamptz[], $4::bigint[])
         on conflict do nothing
         returning readings",
    )
    .bind(gateway.as_str())
    .bind(&from)
    .bind(&to)
    .bind(&readings)
    .fetch_all(pool)
    .await?;
    Ok((added.iter().fold(0u64, |sum, &n| sum.saturating_add(n.max(0) as u64)), refused))
}

/// The held payloads of a session, oldest first, with their ids for [`delete_pending`].
pub async fn pending(pool: &PgPool, gateway: &GatewayId, session: u64) -> sqlx::Result<Vec<(i64, Vec<u8>)>> {
    sqlx::query_as("select id, payload from pending_data where gateway_id = $1 and session = $2 order by id")
        .bind(gateway.as_str())
        .bind(session as i64)
        .fetch_all(pool)
        .await
}

/// Deletes held payloads once their readings are stored. Storing is idempotent, so a crash
/// between the two only stores them again, harmlessly.
pub async fn delete_pending(pool: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("delete from pending_data where id = any($1)").bind(ids).execute(pool).await?;
    Ok(())
}

/// Keeps a sample of a rejected message. At most `keep` rows are kept; the oldest go first.
pub async fn dead_letter(pool: &PgPool, topic: &str, reason: &str, payload: &[u8]) -> sqlx::Result<()> {
    const KEEP: i64 = 10_000;
    const SAMPLE_BYTES: usize = 4096;
    let sample = &payload[..payload.len().min(SAMPLE_BYTES)];
    sqlx::query("insert into dead_letters (topic, reason, payload) values ($1, $2, $3)")
        .bind(topic)
        .bind(reason)
        .bind(sample)
        .execute(pool)
        .await?;
    sqlx::query("delete from dead_letters where id <= (select max(id) from dead_letters) - $1")
        .bind(KEEP)
        .execute(pool)
        .await?;
    Ok(())
}
