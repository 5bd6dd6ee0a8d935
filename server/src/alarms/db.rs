//! All SQL of fault detection: what the engine loads, and the alarm lifecycle.
//!
//! An alarm row is one episode of (target, rule). Raised: a new episode, or the open one raised
//! again (occurrences + 1). Cleared: inactive. Acknowledged: someone took it. Cleared and
//! acknowledged: closed, and the next raise opens a new episode. Every step is an
//! `alarm_events` row, written in the same transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{PgPool, Postgres, Transaction};

use super::{
    engine::{Millis, Target},
    rules::CaptureSettings,
};

/// A unit as the engine needs it.
#[derive(Debug)]
pub struct UnitRow {
    /// Unit id.
    pub id: i64,
    /// Its gateway.
    pub gateway_id: String,
    /// Device id in the gateway's configuration.
    pub device_key: String,
    /// The profile whose domain pack applies: its family (the built-in profile a site's profile
    /// extends), else its own.
    pub profile: String,
    /// Points read from the device: id and name.
    pub points: Vec<(i64, String)>,
    /// What its points measure in, by name.
    pub units_of_measure: std::collections::HashMap<String, String>,
    /// When its points' latest readings are all bad: the newest of them, ms.
    pub unreadable_since: Option<Millis>,
}

/// Gateways (one, or all): id, online, last seen (ms).
pub async fn gateways(pool: &PgPool, only: Option<&str>) -> sqlx::Result<Vec<(String, bool, Option<Millis>)>> {
    let rows: Vec<(String, bool, Option<DateTime<Utc>>)> =
        sqlx::query_as("select id, online, last_seen from gateways where $1::text is null or id = $1 order by id")
            .bind(only)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(id, online, seen)| (id, online, seen.map(|t| t.timestamp_millis()))).collect())
}

/// Units of one gateway, or of all.
pub async fn units(pool: &PgPool, gateway: Option<&str>) -> sqlx::Result<Vec<UnitRow>> {
    type Row = (i64, String, String, String, Vec<i64>, Vec<String>, Vec<String>, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "select u.id, u.gateway_id, u.device_key, coalesce(nullif(u.family, ''), u.profile),
                coalesce(array_agg(p.id order by p.id) filter (where p.id is not null), '{}'),
                coalesce(array_agg(p.name order by p.id) filter (where p.id is not null), '{}'),
                coalesce(array_agg(p.unit_of_measure order by p.id) filter (where p.id is not null), '{}'),
                -- Unreadable: every latest reading bad. Since its last good reading (snapshots
                -- repeat the bad ones, so the newest bad reading says nothing of the start).
                (select coalesce(
                            (select max(r.ts) from points rp join readings r on r.point_id = rp.id
                             where rp.unit_id = u.id and not rp.derived and r.quality = 0),
                            min(l.ts))
                 from latest_readings l join points lp on lp.id = l.point_id
                 where lp.unit_id = u.id and not lp.derived
                 having bool_and(l.quality = 1))
         from units u left join points p on p.unit_id = u.id and not p.derived
         where $1::text is null or u.gateway_id = $1
         group by u.id order by u.id",
    )
    .bind(gateway)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, gateway_id, device_key, profile, ids, names, units, unreadable_since)| UnitRow {
            id,
            gateway_id,
            device_key,
            profile,
            units_of_measure: names.iter().cloned().zip(units).collect(),
            points: ids.into_iter().zip(names).collect(),
            unreadable_since: unreadable_since.map(|t| t.timestamp_millis()),
        })
        .collect())
}

/// Rule overrides of a gateway's site and units: (unit id or none for the site, rule, patch).
pub async fn overrides(db: impl sqlx::PgExecutor<'_>, gateway: &str) -> sqlx::Result<Vec<(Option<i64>, String, Json)>> {
    sqlx::query_as("select unit_id, rule, patch from alarm_rules where gateway_id = $1 order by id")
        .bind(gateway)
        .fetch_all(db)
        .await
}

/// Sets (or with `None` removes) an override.
pub async fn set_override(
    db: &mut sqlx::PgConnection,
    gateway: &str,
    unit: Option<i64>,
    rule: &str,
    patch: Option<&Json>,
    actor: &str,
) -> sqlx::Result<()> {
    match patch {
        Some(patch) => {
            sqlx::query(
                "insert into alarm_rules (gateway_id, unit_id, rule, patch, updated_by) values ($1, $2, $3, $4, $5)
                 on conflict (gateway_id, coalesce(unit_id, 0), rule)
                 do update set patch = excluded.patch, updated_by = excluded.updated_by, updated_at = now()",
            )
            .bind(gateway)
            .bind(unit)
            .bind(rule)
            .bind(patch)
            .bind(actor)
            .execute(&mut *db)
            .await?;
        }
        None => {
            sqlx::query("delete from alarm_rules where gateway_id = $1 and coalesce(unit_id, 0) = coalesce($2, 0) and rule = $3")
                .bind(gateway)
                .bind(unit)
                .bind(rule)
                .execute(&mut *db)
                .await?;
        }
    }
    // On commit, the replica owning the gateway reloads its rules (`alarms::run`).
    sqlx::query("select pg_notify($1, $2)").bind(super::RULES_CHANGED).bind(gateway).execute(&mut *db).await?;
    Ok(())
}

/// The points derived values are stored under, created as needed, by unit and name, for
/// `(unit id, name, unit of measure, decimals)`.
pub async fn derived_points(
    pool: &PgPool,
    derived: &[(i64, String, String, i32)],
) -> sqlx::Result<HashMap<i64, HashMap<String, i64>>> {
    let units: Vec<i64> = derived.iter().map(|d| d.0).collect();
    let names: Vec<&str> = derived.iter().map(|d| d.1.as_str()).collect();
    let measures: Vec<&str> = derived.iter().map(|d| d.2.as_str()).collect();
    let decimals: Vec<i32> = derived.iter().map(|d| d.3).collect();
    // A gateway point of the same name is a measurement and wins: it is never taken over.
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "insert into points (unit_id, name, unit_of_measure, decimals, derived)
         select *, true from unnest($1::bigint[], $2::text[], $3::text[], $4::int[])
         on conflict (unit_id, name) do update set unit_of_measure = excluded.unit_of_measure,
             decimals = excluded.decimals
         where points.derived
         returning unit_id, name, id",
    )
    .bind(&units)
    .bind(&names)
    .bind(&measures)
    .bind(&decimals)
    .fetch_all(pool)
    .await?;
    let mut ids: HashMap<i64, HashMap<String, i64>> = HashMap::new();
    for (unit, name, id) in rows {
        ids.entry(unit).or_default().insert(name, id);
    }
    Ok(ids)
}

/// Active alarms (of one gateway, or all): target, rule, grade.
pub async fn active_alarms(pool: &PgPool, only: Option<&str>) -> sqlx::Result<Vec<(Target, String, u8)>> {
    let rows: Vec<(String, Option<i64>, String, i16)> = sqlx::query_as(
        "select gateway_id, unit_id, rule, grade from alarms where active and ($1::text is null or gateway_id = $1)",
    )
    .bind(only)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(gateway, unit, rule, grade)| (target(gateway, unit), rule, grade as u8)).collect())
}

fn target(gateway: String, unit: Option<i64>) -> Target {
    unit.map_or(Target::Gateway(gateway), Target::Unit)
}

/// The gateway and unit columns of a target.
pub fn columns(target: &Target, unit_gateway: &str) -> (String, Option<i64>) {
    match target {
        Target::Unit(id) => (unit_gateway.to_owned(), Some(*id)),
        Target::Gateway(id) => (id.clone(), None),
    }
}

fn time(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// One event to announce after commit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlarmEvent {
    /// The event's id: the stream's position.
    pub id: i64,
    /// The alarm.
    pub alarm_id: i64,
    /// raised, reraised, regraded, cleared, acknowledged, shelved, unshelved.
    pub kind: String,
    /// Whether it should reach people.
    pub notify: bool,
}

async fn event(
    tx: &mut Transaction<'_, Postgres>,
    alarm_id: i64,
    kind: &str,
    grade: Option<i16>,
    actor: Option<&str>,
    comment: Option<&str>,
    notify: bool,
) -> sqlx::Result<AlarmEvent> {
    // Events commit in id order, so a reader that moves past an id never misses a lower one
    // committed later: writers of events take turns until commit.
    sqlx::query("select pg_advisory_xact_lock($1)").bind(EVENT_LOCK).execute(&mut **tx).await?;
    let id: i64 = sqlx::query_scalar(
        "insert into alarm_events (alarm_id, kind, grade, actor, comment, notify) values ($1, $2, $3, $4, $5, $6)
         returning id",
    )
    .bind(alarm_id)
    .bind(kind)
    .bind(grade)
    .bind(actor)
    .bind(comment)
    .bind(notify)
    .fetch_one(&mut **tx)
    .await?;
    Ok(AlarmEvent { id, alarm_id, kind: kind.to_owned(), notify })
}

/// Raises within the last [`FLAPPING_WINDOW_MS`] that make an alarm flapping.
const FLAPPING_OCCURRENCES: i64 = 5;
const FLAPPING_WINDOW_MS: i64 = 30 * 60 * 1000;

/// The advisory lock that orders `alarm_events` inserts.
const EVENT_LOCK: i64 = 0x4368_696c_6c41_6c6d;

/// What a raise did.
#[derive(Debug)]
pub struct Raised {
    /// The alarm row.
    pub alarm_id: i64,
    /// Whether it opened a new episode (so a capture is due).
    pub new_episode: bool,
    /// The event written, if any.
    pub event: Option<AlarmEvent>,
}

/// A raise from the engine: opens an episode, raises the open one again, or regrades it.
#[allow(clippy::too_many_arguments)]
pub async fn raise(
    pool: &PgPool,
    gateway: &str,
    unit: Option<i64>,
    rule: &str,
    grade: u8,
    title: &(String, String),
    message: &str,
    at: Millis,
    capture: Option<CaptureSettings>,
) -> sqlx::Result<Raised> {
    let mut tx = pool.begin().await?;
    let grade = i16::from(grade);
    type Open = (i64, bool, i16, i32, bool, Option<DateTime<Utc>>);
    let open: Option<Open> = sqlx::query_as(
        "select id, active, grade, occurrences, flapping, shelved_until from alarms
         where gateway_id = $1 and coalesce(unit_id, 0) = coalesce($2, 0) and rule = $3 and closed_at is null
         for update",
    )
    .bind(gateway)
    .bind(unit)
    .bind(rule)
    .fetch_optional(&mut *tx)
    .await?;
    let at_time = time(at);
    // Maintenance is checked at every raise: what matters is whether this moment is muted.
    let muted: bool = sqlx::query_scalar(
        "select exists (select 1 from maintenance_windows where gateway_id = $1
         and (unit_id is null or unit_id = $2) and $3 >= starts_at and $3 < ends_at)",
    )
    .bind(gateway)
    .bind(unit)
    .bind(at_time)
    .fetch_one(&mut *tx)
    .await?;
    let raised = match open {
        None => {
            let window = capture.filter(|_| unit.is_some()).map(|c| {
                let to = at_time + chrono::Duration::milliseconds((c.after_s * 1000.0) as i64);
                let from = at_time - chrono::Duration::milliseconds((c.before_s * 1000.0) as i64);
                // A little grace after the window for the last readings to arrive.
                (from, to, to + chrono::Duration::seconds(5))
            });
            let alarm_id: i64 = sqlx::query_scalar(
                "insert into alarms (gateway_id, unit_id, rule, grade, title, title_zh, message, active, raised_at,
                     last_raised_at, muted, capture_from, capture_to, capture_due_at)
                 values ($1, $2, $3, $4, $5, $6, $7, true, $8, $8, $9, $10, $11, $12) returning id",
            )
            .bind(gateway)
            .bind(unit)
            .bind(rule)
            .bind(grade)
            .bind(&title.0)
            .bind(&title.1)
            .bind(message)
            .bind(at_time)
            .bind(muted)
            .bind(window.map(|w| w.0))
            .bind(window.map(|w| w.1))
            .bind(window.map(|w| w.2))
            .fetch_one(&mut *tx)
            .await?;
            let event = event(&mut tx, alarm_id, "raised", Some(grade), None, Some(message), !muted).await?;
            Raised { alarm_id, new_episode: true, event: Some(event) }
        }
        Some((alarm_id, true, old_grade, _, flapping, shelved)) => {
            sqlx::query("update alarms set grade = $2, message = $3, muted = $4 where id = $1")
                .bind(alarm_id)
                .bind(grade)
                .bind(message)
                .bind(muted)
                .execute(&mut *tx)
                .await?;
            let event = if grade != old_grade {
                // Worse news is announced; a milder grade is only recorded.
                let quiet = flapping || muted || shelved.is_some_and(|s| s > at_time);
                Some(
                    event(&mut tx, alarm_id, "regraded", Some(grade), None, Some(message), grade < old_grade && !quiet)
                        .await?,
                )
            } else {
                None
            };
            Raised { alarm_id, new_episode: false, event }
        }
        Some((alarm_id, false, _, occurrences, flapping, shelved)) => {
            let occurrences = occurrences + 1;
            // Raised this often within the last half hour (this raise included): flapping.
            let recent: i64 = sqlx::query_scalar(
                "select count(*) from alarm_events where alarm_id = $1 and kind in ('raised', 'reraised')
                 and at > $2 - make_interval(secs => $3::double precision / 1000)",
            )
            .bind(alarm_id)
            .bind(at_time)
            .bind(FLAPPING_WINDOW_MS as f64)
            .fetch_one(&mut *tx)
            .await?;
            let flapping = flapping || recent + 1 >= FLAPPING_OCCURRENCES;
            sqlx::query(
                "update alarms set active = true, grade = $2, message = $3, occurrences = $4, last_raised_at = $5,
                     cleared_at = null, flapping = $6, muted = $7
                 where id = $1",
            )
            .bind(alarm_id)
            .bind(grade)
            .bind(message)
            .bind(occurrences)
            .bind(at_time)
            .bind(flapping)
            .bind(muted)
            .execute(&mut *tx)
            .await?;
            let quiet = flapping || muted || shelved.is_some_and(|s| s > at_time);
            let event = event(&mut tx, alarm_id, "reraised", Some(grade), None, Some(message), !quiet).await?;
            Raised { alarm_id, new_episode: false, event: Some(event) }
        }
    };
    tx.commit().await?;
    Ok(raised)
}

/// A clear from the engine. An acknowledged alarm closes.
pub async fn clear(
    pool: &PgPool,
    gateway: &str,
    unit: Option<i64>,
    rule: &str,
    at: Millis,
) -> sqlx::Result<Option<AlarmEvent>> {
    let mut tx = pool.begin().await?;
    let alarm_id: Option<i64> = sqlx::query_scalar(
        "update alarms set active = false, cleared_at = $4,
             closed_at = case when acknowledged_at is not null then $4 end
         where gateway_id = $1 and coalesce(unit_id, 0) = coalesce($2, 0) and rule = $3 and closed_at is null and active
         returning id",
    )
    .bind(gateway)
    .bind(unit)
    .bind(rule)
    .bind(time(at))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(alarm_id) = alarm_id else { return Ok(None) };
    let event = event(&mut tx, alarm_id, "cleared", None, None, None, false).await?;
    tx.commit().await?;
    Ok(Some(event))
}

/// Acknowledges an open, unacknowledged alarm; a cleared one closes. `None`: nothing to do.
pub async fn acknowledge(
    db: &mut sqlx::PgConnection,
    alarm_id: i64,
    actor: &str,
    comment: &str,
) -> sqlx::Result<Option<AlarmEvent>> {
    let mut tx = sqlx::Connection::begin(db).await?;
    let updated = sqlx::query(
        "update alarms set acknowledged_at = now(), acknowledged_by = $2,
             closed_at = case when not active then now() end
         where id = $1 and acknowledged_at is null and closed_at is null",
    )
    .bind(alarm_id)
    .bind(actor)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(None);
    }
    let event = event(&mut tx, alarm_id, "acknowledged", None, Some(actor), Some(comment), false).await?;
    tx.commit().await?;
    Ok(Some(event))
}

/// Shelves an open alarm until `until` (or unshelves with `None`): no announcements meanwhile.
pub async fn shelve(
    db: &mut sqlx::PgConnection,
    alarm_id: i64,
    until: Option<DateTime<Utc>>,
    actor: &str,
    comment: &str,
) -> sqlx::Result<Option<AlarmEvent>> {
    let mut tx = sqlx::Connection::begin(db).await?;
    let updated = sqlx::query("update alarms set shelved_until = $2 where id = $1 and closed_at is null")
        .bind(alarm_id)
        .bind(until)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Ok(None);
    }
    let kind = if until.is_some() { "shelved" } else { "unshelved" };
    let event = event(&mut tx, alarm_id, kind, None, Some(actor), Some(comment), false).await?;
    tx.commit().await?;
    Ok(Some(event))
}

/// Captures of `units` whose window has passed: alarm id, unit id, from, to.
pub async fn due_captures(pool: &PgPool, units: &[i64]) -> sqlx::Result<Vec<(i64, i64, DateTime<Utc>, DateTime<Utc>)>> {
    sqlx::query_as(
        "select id, unit_id, capture_from, capture_to from alarms
         where capture_due_at <= now() and unit_id = any($1) order by capture_due_at limit 100",
    )
    .bind(units)
    .fetch_all(pool)
    .await
}

/// Copies the readings of all the unit's points within the window into the alarm's capture.
pub async fn take_capture(
    pool: &PgPool,
    alarm_id: i64,
    unit_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into alarm_captures (alarm_id, series)
         select $1, coalesce(jsonb_agg(jsonb_build_object(
                    'point', p.name, 'unit', p.unit_of_measure, 'derived', p.derived,
                    'readings', (select coalesce(jsonb_agg(jsonb_build_array(
                                     (extract(epoch from r.ts) * 1000)::bigint, r.value) order by r.ts), '[]')
                                 from readings r where r.point_id = p.id and r.ts between $2 and $3))
                order by p.name), '[]')
         from points p where p.unit_id = $4
         on conflict (alarm_id) do nothing",
    )
    .bind(alarm_id)
    .bind(from)
    .bind(to)
    .bind(unit_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update alarms set capture_due_at = null where id = $1").bind(alarm_id).execute(&mut *tx).await?;
    tx.commit().await
}
