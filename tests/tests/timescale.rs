//! TimescaleDB mode. Where the extension is not loaded (as on the machines this project is built
//! on: no registry has it), each check first verifies what plain mode should be, then prints one
//! SKIPPED line; `CHILLCLOUD_TEST_TIMESCALE=required` turns those skips into failures, for the
//! machines where it is installed.

use std::time::Duration;

use chillcloud_proto::{GatewayId, Quality};
use chillcloud_server::{
    history::{self, Bucket, Rows},
    store,
    timescale::{self, Availability, Policies, StorageMode},
};
use chillcloud_tests::harness::{
    EmbeddedServer, Stack, TestPostgres, numbered_birth, shared_temp_dir, timescale_or_skip, wait_for,
};
use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use serde_json::json;
use sqlx::PgPool;

const DAY: Duration = Duration::from_secs(86_400);

async fn migrated() -> (TestPostgres, PgPool) {
    let postgres = TestPostgres::start().await;
    let pool = postgres.pool().await;
    store::MIGRATOR.run(&pool).await.expect("migrate");
    (postgres, pool)
}

/// One gateway with one unit of `points` points; returns the point ids.
async fn unit_with_points(pool: &PgPool, points: u32) -> Vec<i64> {
    let gateway = GatewayId::new("gw-ts").expect("id");
    store::upsert_gateway(pool, &gateway, "unused", "unused").await.expect("provision");
    store::store_birth(pool, &gateway, &numbered_birth(1, points)).await.expect("birth").expect("within bounds");
    sqlx::query_scalar("select id from points order by id").fetch_all(pool).await.expect("points")
}

/// Stores a reading of every point every `step` over `[from, to)`, through ingest's path.
async fn store_readings(pool: &PgPool, points: &[i64], from: DateTime<Utc>, to: DateTime<Utc>, step: TimeDelta) {
    let mut rows = store::ReadingRows::default();
    let mut at = from;
    while at < to {
        for (i, &point) in points.iter().enumerate() {
            let value = 7.0 + ((at.timestamp() / 60) as f64 / 7.0 + i as f64).sin();
            rows.push(point, at, Some((value * 10.0).round() / 10.0), Quality::Good);
        }
        at += step;
    }
    store::flush(pool, rows).await.expect("flush");
}

/// A policy's job: procedure, relation, job id, and in days: drop_after, compress_after,
/// start_offset.
type Job = (String, String, i32, Option<f64>, Option<f64>, Option<f64>);

/// The jobs of the server's policies.
async fn policies(pool: &PgPool) -> Vec<Job> {
    sqlx::query_as(
        "select proc_name::text, hypertable_name::text, job_id,
                extract(epoch from (config->>'drop_after')::interval)::float8 / 86400,
                extract(epoch from (config->>'compress_after')::interval)::float8 / 86400,
                extract(epoch from (config->>'start_offset')::interval)::float8 / 86400
         from timescaledb_information.jobs
         where hypertable_schema = 'public' order by 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("jobs")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_storage_mode_follows_the_extension_and_ingest_works_in_it() {
    let (_postgres, pool) = migrated().await;
    let storage = timescale::prepare(&pool, &Policies::default()).await;
    if !timescale_or_skip(&pool, "the_storage_mode_follows_the_extension_and_ingest_works_in_it").await {
        assert_eq!(storage.mode, StorageMode::Plain);
        assert_ne!(storage.timescaledb, Availability::Loaded);
        return;
    }
    assert_eq!(storage, timescale::Storage { mode: StorageMode::Timescale, timescaledb: Availability::Loaded });
    let hypertables: Vec<String> =
        sqlx::query_scalar("select hypertable_name::text from timescaledb_information.hypertables")
            .fetch_all(&pool)
            .await
            .expect("hypertables");
    assert!(hypertables.contains(&"readings".to_owned()), "{hypertables:?}");
    let aggregates: Vec<(String, bool)> = sqlx::query_as(
        "select view_name::text, materialized_only from timescaledb_information.continuous_aggregates order by 1",
    )
    .fetch_all(&pool)
    .await
    .expect("continuous aggregates");
    assert_eq!(
        aggregates,
        [("readings_1h_continuous".to_owned(), false), ("readings_1m_continuous".to_owned(), false)],
        "both aggregates, computing their newest buckets in real time"
    );
    // Preparing again (every server start) changes nothing and fails nothing.
    let jobs: Vec<i32> = sqlx::query_scalar("select job_id from timescaledb_information.jobs order by 1")
        .fetch_all(&pool)
        .await
        .expect("jobs");
    assert_eq!(timescale::prepare(&pool, &Policies::default()).await.mode, StorageMode::Timescale);
    let again: Vec<i32> = sqlx::query_scalar("select job_id from timescaledb_information.jobs order by 1")
        .fetch_all(&pool)
        .await
        .expect("jobs");
    assert_eq!(jobs, again, "the same policies are kept, not replaced");

    // Ingest's idempotent insert works on the hypertable: the same batch twice stores it once.
    let ids = unit_with_points(&pool, 3).await;
    let at = Utc::now() - TimeDelta::minutes(5);
    for _ in 0..2 {
        let mut rows = store::ReadingRows::default();
        for &id in &ids {
            rows.push(id, at, Some(7.0), Quality::Good);
        }
        store::flush(&pool, rows).await.expect("flush");
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from readings").fetch_one(&pool).await.expect("count");
    assert_eq!(stored, 3, "a repeated batch stores nothing twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_default_preloads_timescaledb_and_runs_in_its_mode() {
    let dir = shared_temp_dir();
    let server = EmbeddedServer::start("server", &dir.path().join("server"), dir.path(), &[]).await;
    let health = server.api.get("/health").await.expect("health");
    let pool = server.pool().await;
    let log = server.process.log();
    if !timescale_or_skip(&pool, "the_embedded_default_preloads_timescaledb_and_runs_in_its_mode").await {
        assert_eq!(health["mode"], "plain PostgreSQL", "{health}");
        assert!(log.contains("database ready") && log.contains("mode=plain PostgreSQL"), "{log}");
        return;
    }
    assert_eq!(health["mode"], "TimescaleDB", "{health}");
    assert!(log.contains("mode=TimescaleDB timescaledb=loaded"), "the start-up line says which: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_and_compression_follow_the_flags_across_restarts() {
    let (_postgres, pool) = migrated().await;
    let storage = timescale::prepare(&pool, &Policies::default()).await;
    if !timescale_or_skip(&pool, "retention_and_compression_follow_the_flags_across_restarts").await {
        assert_eq!(storage.mode, StorageMode::Plain);
        return;
    }
    let policy = |jobs: &[Job], proc: &str, on: &str| jobs.iter().find(|job| job.0 == proc && job.1 == on).cloned();
    let start = |retention: Option<u64>, compress: u64| Policies {
        retention: retention.map(|d| DAY * d as u32),
        compress_after: DAY * compress as u32,
        late_readings: DAY * 7,
    };

    // --retention-days 30, then 5 (was ignored: the first policy stayed), then none; each
    // repeated, as a restart with the same flags is.
    let steps: [(Option<u64>, u64); 5] = [(Some(30), 7), (Some(5), 7), (Some(5), 7), (None, 3), (None, 3)];
    let mut previous = None;
    for (retention, compress) in steps {
        assert_eq!(timescale::prepare(&pool, &start(retention, compress)).await.mode, StorageMode::Timescale);
        let jobs = policies(&pool).await;
        assert_eq!(
            policy(&jobs, "policy_retention", "readings").and_then(|job| job.3),
            retention.map(|d| d as f64),
            "retention after --retention-days {retention:?}: {jobs:?}"
        );
        assert_eq!(
            policy(&jobs, "policy_compression", "readings").and_then(|job| job.4),
            Some(compress as f64),
            "compression after --compress-after-days {compress}: {jobs:?}"
        );
        assert_eq!(
            policy(&jobs, "policy_retention", "readings_1m_continuous").and_then(|job| job.3),
            retention.map(|d| d as f64),
            "minute aggregates go with the raw readings: {jobs:?}"
        );
        // The refresh window never reaches where retention dropped raw readings.
        let window = retention.map_or(8.0, |r| (r as f64).min(8.0));
        for aggregate in ["readings_1m_continuous", "readings_1h_continuous"] {
            let job = policy(&jobs, "policy_refresh_continuous_aggregate", aggregate).expect("refresh policy");
            assert_eq!(job.5, Some(window), "{aggregate}: {job:?}");
        }
        if let Some((flags, before)) = &previous
            && *flags == (retention, compress)
        {
            assert_eq!(&jobs, before, "the same flags again keep the same jobs");
        }
        previous = Some(((retention, compress), jobs));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn late_readings_show_in_the_aggregates_after_one_refresh_and_history_equals_raw() {
    let (_postgres, pool) = migrated().await;
    let storage = timescale::prepare(&pool, &Policies::default()).await;
    if !timescale_or_skip(&pool, "late_readings_show_in_the_aggregates_after_one_refresh_and_history_equals_raw").await
    {
        assert_eq!(storage.mode, StorageMode::Plain);
        return;
    }
    let points = unit_with_points(&pool, 3).await;
    let now = Utc::now().duration_trunc(TimeDelta::hours(1)).expect("hour");
    // Six days ago, inside the gateways' 7-day backfill horizon: the first half of an outage's
    // hours arrive, their chunk is compressed, then the backlog's rest arrives late.
    let late_from = now - TimeDelta::days(6);
    let late_to = late_from + TimeDelta::hours(3);
    let half = late_from + TimeDelta::minutes(90);
    store_readings(&pool, &points, late_from, half, TimeDelta::seconds(30)).await;
    // Live readings kept arriving meanwhile, and the policies refreshed the aggregates.
    store_readings(&pool, &points, now - TimeDelta::hours(3), now - TimeDelta::minutes(20), TimeDelta::seconds(30))
        .await;
    refresh_aggregates(&pool).await;
    let compressed: i64 = sqlx::query_scalar(
        "select count(compress_chunk(c)) from show_chunks('readings', older_than => now() - interval '5 days') c",
    )
    .fetch_one(&pool)
    .await
    .expect("compress the old chunk");
    assert!(compressed >= 1, "the late hours' chunk is compressed");
    // Newest readings: the last 20 minutes, after the last refresh.
    store_readings(&pool, &points, now - TimeDelta::minutes(20), Utc::now(), TimeDelta::seconds(30)).await;
    // The backlog's rest, and a resend of what was already stored.
    store_readings(&pool, &points, late_from, late_to, TimeDelta::seconds(30)).await;
    let raw: i64 = sqlx::query_scalar("select count(*) from readings where ts < $1")
        .bind(late_to)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(raw, 3 * 3 * 120, "every late reading stored once, in the compressed chunk too");

    let mut db = pool.acquire().await.expect("connection");
    let totals = |rows: &[history::BucketRow]| rows.iter().map(|r| r.count).sum::<i64>();
    // Before the next refresh the aggregates hold what had arrived by the last one ...
    let before = bucketed(&mut db, StorageMode::Timescale, &points, late_from, late_to, Bucket::Hour).await;
    assert_eq!(totals(&before), 3 * 180, "late readings are not in the aggregates before a refresh");
    // ... and the newest readings already, computed in real time.
    let recent_from = now - TimeDelta::minutes(20);
    let recent = bucketed(&mut db, StorageMode::Timescale, &points, recent_from, now, Bucket::Minute).await;
    let recent_raw = bucketed(&mut db, StorageMode::Plain, &points, recent_from, now, Bucket::Minute).await;
    assert_same_buckets(&recent, &recent_raw);
    assert!(totals(&recent) > 0);

    // One refresh of each aggregate, as its policy runs it.
    refresh_aggregates(&pool).await;

    // The history API now equals SQL over the raw readings, hours and minutes.
    let hours = bucketed(&mut db, StorageMode::Timescale, &points, late_from, late_to, Bucket::Hour).await;
    let raw_hours = history::hourly_from_raw(&mut db, &points, late_from, late_to).await.expect("raw hours");
    assert_eq!(hours.len(), 9);
    assert_same_buckets(&hours, &raw_hours);
    let minutes = bucketed(&mut db, StorageMode::Timescale, &points, late_from, late_to, Bucket::Minute).await;
    let raw_minutes = bucketed(&mut db, StorageMode::Plain, &points, late_from, late_to, Bucket::Minute).await;
    assert_eq!(minutes.len(), 3 * 180);
    assert_same_buckets(&minutes, &raw_minutes);
    // And the hours the API serves in plain mode (ingest's rollup) are the same too.
    let rollup = bucketed(&mut db, StorageMode::Plain, &points, late_from, late_to, Bucket::Hour).await;
    assert_same_buckets(&hours, &rollup);
}

#[tokio::test(flavor = "multi_thread")]
async fn readings_stored_in_plain_mode_are_in_the_aggregates_once_timescaledb_is_set_up() {
    let (_postgres, pool) = migrated().await;
    let points = unit_with_points(&pool, 2).await;
    // A month-old plain database: readings 20 days old, far before any refresh window.
    let old = Utc::now().duration_trunc(TimeDelta::hours(1)).expect("hour") - TimeDelta::days(20);
    store_readings(&pool, &points, old, old + TimeDelta::hours(2), TimeDelta::minutes(1)).await;
    let live = Utc::now() - TimeDelta::hours(3);
    store_readings(&pool, &points, live, live + TimeDelta::hours(1), TimeDelta::minutes(1)).await;
    let storage = timescale::prepare(&pool, &Policies::default()).await;
    if !timescale_or_skip(&pool, "readings_stored_in_plain_mode_are_in_the_aggregates_once_timescaledb_is_set_up").await
    {
        assert_eq!(storage.mode, StorageMode::Plain);
        return;
    }
    // The policies run: their windows move the watermark to now, over the old readings.
    refresh_aggregates(&pool).await;
    let mut db = pool.acquire().await.expect("connection");
    let hours = bucketed(&mut db, StorageMode::Timescale, &points, old, old + TimeDelta::hours(2), Bucket::Hour).await;
    let raw = history::hourly_from_raw(&mut db, &points, old, old + TimeDelta::hours(2)).await.expect("raw");
    assert_eq!(raw.len(), 4);
    assert_same_buckets(&hours, &raw);
}

/// The history API's buckets of `points` over `[from, to)`, read as `storage` keeps them.
async fn bucketed(
    db: &mut sqlx::PgConnection,
    storage: StorageMode,
    points: &[i64],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> Vec<history::BucketRow> {
    match history::query(db, storage, points, from, to, bucket).await.expect("history") {
        Rows::Buckets(rows) => rows,
        Rows::Raw(_) => panic!("buckets expected"),
    }
}

/// Runs each aggregate's refresh policy once, as its schedule does. The scheduler may be running
/// the same policy at that moment (TimescaleDB refuses a concurrent refresh): then again.
async fn refresh_aggregates(pool: &PgPool) {
    for aggregate in ["readings_1m_continuous", "readings_1h_continuous"] {
        let job: i32 = sqlx::query_scalar(
            "select job_id from timescaledb_information.jobs
             where proc_name = 'policy_refresh_continuous_aggregate' and hypertable_name = $1",
        )
        .bind(aggregate)
        .fetch_one(pool)
        .await
        .expect("refresh policy");
        wait_for("a refresh not concurrent with the scheduler's", Duration::from_secs(30), || async {
            match sqlx::query(sqlx::AssertSqlSafe(format!("call run_job({job})"))).execute(pool).await {
                Ok(_) => Some(()),
                Err(error) if error.as_database_error().and_then(|e| e.code()).as_deref() == Some("55P03") => None,
                Err(error) => panic!("refresh {aggregate}: {error}"),
            }
        })
        .await;
    }
}

/// Bucket rows equal, values to rounding.
fn assert_same_buckets(ours: &[history::BucketRow], reference: &[history::BucketRow]) {
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        (a, b) => a == b,
    };
    let reference: Vec<&history::BucketRow> = reference.iter().filter(|r| r.count > 0).collect();
    let ours: Vec<&history::BucketRow> = ours.iter().filter(|r| r.count > 0).collect();
    assert_eq!(ours.len(), reference.len(), "buckets with readings");
    for (a, b) in ours.iter().zip(&reference) {
        assert!(
            a.point_id == b.point_id
                && a.ts == b.ts
                && a.count == b.count
                && close(a.avg, b.avg)
                && close(a.min, b.min)
                && close(a.max, b.max)
                && close(a.last, b.last),
            "{a:?} != {b:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_or_paused_storage_job_degrades_health_and_pages_the_service_team_once() {
    let postgres = TestPostgres::start().await;
    let pool = postgres.pool().await;
    if !timescale_or_skip(&pool, "a_failing_or_paused_storage_job_degrades_health_and_pages_the_service_team_once")
        .await
    {
        return;
    }
    let stack = Stack::start_on(postgres, &[], &["--storage-check-seconds", "1"]).await;
    let api = stack.api();
    let health = api.get("/health").await.expect("health");
    assert_eq!((&health["status"], &health["storage"]), (&json!("ok"), &json!("ok")), "{health}");
    api.add_service_engineer(stack.gateway_id, "+8613800000017").await;

    // A job that fails every run, as stock TimescaleDB 2.28.3's did on PostgreSQL 15.20.
    sqlx::query(
        "create procedure storage_test_failing(job_id int, config jsonb) language plpgsql as
         $$ begin raise exception 'cannot drop portal \"\" while it is being set up'; end $$",
    )
    .execute(&pool)
    .await
    .expect("procedure");
    let job: i32 = sqlx::query_scalar("select add_job('storage_test_failing', '1 hour', initial_start => now())")
        .fetch_one(&pool)
        .await
        .expect("add job");
    let health = wait_for("/health to show the failing job", Duration::from_secs(60), || async {
        let health = api.get("/health").await?;
        (health["status"] == "degraded").then_some(health)
    })
    .await;
    let troubles = health["storage"].to_string();
    assert!(troubles.contains("failing: storage_test_failing") && troubles.contains("cannot drop portal"), "{health}");
    assert!(api.metric("chillcloud_storage_jobs_in_trouble").await >= 1.0);
    let page = wait_for("the service team paged", Duration::from_secs(30), || async {
        api.service_pages().await.into_iter().next()
    })
    .await;
    let body = page["body"].as_str().expect("body");
    assert!(body.contains("service alarm (grade 3)") && body.contains("storage job"), "{page}");

    // Gone: healthy again, the episode closed, and one page for it.
    sqlx::query("select delete_job($1)").bind(job).execute(&pool).await.expect("delete job");
    wait_for("/health to be ok again", Duration::from_secs(30), || async {
        let health = api.get("/health").await?;
        (health["status"] == "ok").then_some(())
    })
    .await;
    let open: i64 = sqlx::query_scalar("select count(*) from service_alarms where cleared_at is null")
        .fetch_one(&pool)
        .await
        .expect("open service alarms");
    assert_eq!(open, 0);
    assert_eq!(api.service_pages().await.len(), 1, "one page for one episode");

    // A paused policy is trouble too: compression would silently stop.
    sqlx::query(
        "select alter_job(job_id, scheduled => false) from timescaledb_information.jobs
         where proc_name = 'policy_compression'",
    )
    .execute(&pool)
    .await
    .expect("pause");
    let health = wait_for("/health to show the paused policy", Duration::from_secs(30), || async {
        let health = api.get("/health").await?;
        (health["status"] == "degraded").then_some(health)
    })
    .await;
    assert!(health["storage"].to_string().contains("paused: policy_compression on readings"), "{health}");
    wait_for("a second episode paged", Duration::from_secs(30), || async {
        (api.service_pages().await.len() == 2).then_some(())
    })
    .await;
    sqlx::query(
        "select alter_job(job_id, scheduled => true) from timescaledb_information.jobs
         where proc_name = 'policy_compression'",
    )
    .execute(&pool)
    .await
    .expect("resume");
    wait_for("/health to be ok once the policy runs again", Duration::from_secs(30), || async {
        let health = api.get("/health").await?;
        (health["status"] == "ok").then_some(())
    })
    .await;
}
