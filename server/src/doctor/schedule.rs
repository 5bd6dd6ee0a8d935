//! Reports drafted on their own: each site's calendar weeks (from Monday) and months, in its
//! time zone, once the period is over. Every replica runs it; the unique index on scheduled
//! reports keeps one draft per unit and period whichever replica gets there first.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{DoctorRules, draft};

/// How often the schedule looks for periods that ended.
const EVERY: Duration = Duration::from_secs(600);
/// Drafts made per look, so that a fleet's month-end spreads over several looks.
const BATCH: i64 = 500;
/// Drafts nobody signed are deleted after this many days: a fleet's drafts would otherwise pile
/// up (100,000 units drafting monthly is 1.2 million a year), and an old draft is stale advice.
pub const DRAFTS_KEPT_DAYS: i64 = 90;

/// Units whose last whole period (by their site's time zone and periods) has no scheduled report
/// yet and had readings: `(unit, from, to)`.
const DUE: &str = "
with periods as (
    -- Cut at the hour, as the hourly rollup is: a zone half an hour off UTC starts its days at
    -- the UTC hour before its midnight.
    select g.id as gateway_id, k.kind,
        date_trunc('hour', (date_trunc(k.kind, now() at time zone g.time_zone) - ('1 ' || k.kind)::interval)
            at time zone g.time_zone) as period_start,
        date_trunc('hour', date_trunc(k.kind, now() at time zone g.time_zone) at time zone g.time_zone) as period_end
    from gateways g cross join unnest(g.report_periods) as k(kind)
)
select u.id, d.period_start, d.period_end from periods d join units u on u.gateway_id = d.gateway_id
where not exists (select 1 from reports r where r.unit_id = u.id and r.scheduled
                  and r.period_start = d.period_start and r.period_end = d.period_end)
  and exists (select 1 from points p join readings_1h h on h.point_id = p.id
              where p.unit_id = u.id and h.bucket >= d.period_start and h.bucket < d.period_end)
order by u.id limit $1";

/// Drafts what is due, up to a batch; returns how many drafts it stored. One replica at a time
/// (a session lock): the others would only draft the same units again.
pub async fn draft_due(pool: &PgPool, rules: &DoctorRules) -> sqlx::Result<usize> {
    let mut db = pool.acquire().await?;
    let mine: bool = sqlx::query_scalar("select pg_try_advisory_lock(19, 0)").fetch_one(&mut *db).await?;
    if !mine {
        return Ok(0);
    }
    let drafted = draft_batch(&mut db, rules).await;
    sqlx::query("select pg_advisory_unlock(19, 0)").execute(&mut *db).await?;
    drafted
}

async fn draft_batch(db: &mut sqlx::PgConnection, rules: &DoctorRules) -> sqlx::Result<usize> {
    let due: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(DUE).bind(BATCH).fetch_all(&mut *db).await?;
    let mut stored = 0;
    for (unit, from, to) in due {
        let Some(content) = draft(&mut *db, rules, unit, from, to).await? else { continue };
        let inserted = sqlx::query(
            "insert into reports (unit_id, period_start, period_end, content, drafted_by, scheduled)
             values ($1, $2, $3, $4, 'schedule', true) on conflict do nothing",
        )
        .bind(unit)
        .bind(from)
        .bind(to)
        .bind(sqlx::types::Json(&content))
        .execute(&mut *db)
        .await?
        .rows_affected();
        stored += inserted as usize;
    }
    Ok(stored)
}

/// Looks every ten minutes (and at once) until `shutdown`.
pub async fn run(pool: PgPool, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match draft_due(&pool, DoctorRules::shipped()).await {
            Ok(0) => {}
            Ok(drafts) => info!(drafts, "scheduled reports drafted; they wait for an engineer's signature"),
            Err(error) => warn!(%error, "drafting scheduled reports failed; trying again in 10 minutes"),
        }
        let expired = sqlx::query(
            "delete from reports where status = 'draft' and created_at < now() - make_interval(days => $1::int)",
        )
        .bind(DRAFTS_KEPT_DAYS)
        .execute(&pool)
        .await;
        match expired {
            Ok(done) if done.rows_affected() > 0 => info!(drafts = done.rows_affected(), "unsigned drafts expired"),
            Ok(_) => {}
            Err(error) => warn!(%error, "deleting expired drafts failed"),
        }
    }
}
