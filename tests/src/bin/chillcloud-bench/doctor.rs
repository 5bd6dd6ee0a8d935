//! P11: a unit's monthly remote-doctor report against computing the same figures with SQL over
//! the month's raw readings, and a 1,000-unit monthly batch's time and peak memory.

use std::time::Instant;

use chillcloud_proto::{GatewayId, Quality};
use chillcloud_server::{
    doctor::{self, DoctorRules},
    store::{self, ReadingRows},
};
use chillcloud_tests::{
    harness::TestPostgres,
    sim::{
        Chiller,
        chiller::{NOISE_SPAN_K, RATED_POWER_KW},
    },
};
use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

use super::{median, verdict};

const UNITS: usize = 1000;
const DAYS: i64 = 30;
const STEP_S: i64 = 60;

/// The same figures as the report's, from raw readings: hourly means pivoted by point, then the
/// month's run hours, starts, energy, compliance, means over steady hours and the load profile.
const RAW_KPIS: &str = "
with hourly as (
    select date_bin('1 hour', r.ts, $2) as hour,
        avg(r.value) filter (where p.name = 'running') as running,
        avg(r.value) filter (where p.name = 'capacity_rla') as load,
        avg(r.value) filter (where p.name = 'evap_leaving_temp') as supply,
        avg(r.value) filter (where p.name = 'evap_entering_temp') as return,
        avg(r.value) filter (where p.name = 'active_setpoint') as setpoint,
        avg(r.value) filter (where p.name = 'evap_refrig_temp') as evap_sat,
        avg(r.value) filter (where p.name = 'cond_refrig_temp') as cond_sat,
        avg(r.value) filter (where p.name = 'cond_leaving_temp') as cond_leaving,
        max(r.value) filter (where p.name = 'compressor_starts') as starts
    from readings r join points p on p.id = r.point_id
    where p.unit_id = $1 and r.ts >= $2 and r.ts < $3
    group by 1
)
select sum(running), max(starts) - min(starts), sum(load) * $4 / 100,
    avg((abs(supply - setpoint) <= 0.5)::int) filter (where running >= 0.95),
    avg(setpoint) filter (where running >= 0.95), avg(load) filter (where running >= 0.95),
    avg(supply - evap_sat) filter (where running >= 0.95), avg(cond_sat - cond_leaving) filter (where running >= 0.95),
    avg(cond_sat - evap_sat) filter (where running >= 0.95), avg(return - supply) filter (where running >= 0.95),
    sum(running) filter (where load / nullif(running, 0) < 30), sum(running) filter (where load / nullif(running, 0) >= 90)
from hourly";

/// Peak resident memory of this process since the last reset, bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0)
        * 1024
}

/// Registers `UNITS` CH530 units behind one gateway; returns their ids, in order.
async fn register(pool: &PgPool) -> anyhow::Result<Vec<i64>> {
    let names: Vec<&str> = Chiller::new(1, 12.0).profile_values().iter().map(|(n, _)| *n).collect();
    let gateway = GatewayId::new("bench-doctor")?;
    store::upsert_gateway(pool, &gateway, "bench-doctor:unused", "unused").await?;
    let birth = chillcloud_proto::Birth {
        protocol_version: chillcloud_proto::PROTOCOL_VERSION,
        session: 1,
        software_version: "bench".into(),
        time_ms: 1_700_000_000_000,
        config_version: 0,
        devices: (0..UNITS)
            .map(|i| chillcloud_proto::Device {
                id: format!("chiller-{i:04}"),
                profile: "trane-ch530".into(),
                family: "trane-ch530".into(),
                points: names
                    .iter()
                    .enumerate()
                    .map(|(alias, name)| chillcloud_proto::PointInfo {
                        alias: (i * names.len() + alias) as u32,
                        name: (*name).into(),
                        decimals: 1,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    };
    store::store_birth(pool, &gateway, &birth).await??;
    sqlx::query("update units set rated_cooling_kw = 1000, rated_power_kw = $1")
        .bind(RATED_POWER_KW)
        .execute(pool)
        .await?;
    Ok(sqlx::query_scalar("select id from units order by device_key").fetch_all(pool).await?)
}

pub async fn p11() -> anyhow::Result<bool> {
    let postgres = TestPostgres::start_for_bench().await;
    let pool = postgres.pool().await;
    store::MIGRATOR.run(&pool).await?;
    let units = register(&pool).await?;
    let first = units[0];
    let to = DateTime::<Utc>::from_timestamp(1_790_000_000 / 3600 * 3600, 0).expect("time");
    let from = to - TimeDelta::days(DAYS);

    // The first unit's month: the simulator at one-minute steps through the ingest path
    // (readings and the hourly rollup), with 0.1 K a day of condenser fouling to find.
    let started = Instant::now();
    let points: Vec<(String, i64)> =
        sqlx::query_as("select name, id from points where unit_id = $1").bind(first).fetch_all(&pool).await?;
    let id_of = |name: &str| points.iter().find(|(n, _)| n == name).map(|(_, id)| *id);
    let mut chiller = Chiller::new(1, 0.0);
    chiller.wear.condenser_fouling_k_per_day = 0.1;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut rows = ReadingRows::default();
    let mut written = 0;
    for step in 0..DAYS * 86_400 / STEP_S {
        let at = from + TimeDelta::seconds(step * STEP_S);
        let hour = (at.timestamp().rem_euclid(86_400)) as f64 / 3600.0;
        chiller.step(STEP_S as f64, hour, (rng.random::<f64>() - 0.5) * NOISE_SPAN_K);
        for (name, value) in chiller.profile_values() {
            if let Some(id) = id_of(name) {
                rows.push(id, at, Some(value), Quality::Good);
            }
        }
        if rows.len() >= 10_000 {
            written += rows.len();
            store::flush(&pool, std::mem::take(&mut rows)).await?;
        }
    }
    written += rows.len();
    store::flush(&pool, rows).await?;
    // The other units' months as the rollup holds them (the report reads nothing else): the
    // first unit's hours, point by point.
    let copied = sqlx::query(
        "insert into readings_1h (point_id, bucket, n, total, lo, hi, last_ts, last_value)
         select other.id, h.bucket, h.n, h.total, h.lo, h.hi, h.last_ts, h.last_value
         from readings_1h h join points mine on mine.id = h.point_id
         join points other on other.name = mine.name and other.unit_id <> mine.unit_id
         where mine.unit_id = $1",
    )
    .bind(first)
    .execute(&pool)
    .await?
    .rows_affected();
    sqlx::query("analyze").execute(&pool).await?;
    println!(
        "P11 data: {written} raw readings for one unit ({DAYS} days x {} points every {STEP_S} s), {copied} hourly rows for {} more units, in {:.1} s",
        points.len(),
        UNITS - 1,
        started.elapsed().as_secs_f64()
    );

    let rules = DoctorRules::shipped();
    let mut report_ms = Vec::new();
    let mut raw_ms = Vec::new();
    for _ in 0..7 {
        let mut connection = pool.acquire().await?;
        let started = Instant::now();
        let report = doctor::draft(&mut connection, rules, first, from, to).await?.expect("the unit");
        report_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(report.findings.iter().any(|f| f.key == "condenser_fouling"), "the fouling is found");
        let started = Instant::now();
        let row = sqlx::query(RAW_KPIS)
            .bind(first)
            .bind(from)
            .bind(to)
            .bind(RATED_POWER_KW)
            .fetch_one(&mut *connection)
            .await?;
        let run_hours: Option<f64> = sqlx::Row::try_get(&row, 0)?;
        anyhow::ensure!(run_hours.is_some_and(|h| h > 700.0), "raw run hours {run_hours:?}");
        raw_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let (report_median, raw_median) = (median(report_ms), median(raw_ms));
    let ratio = report_median / raw_median;
    println!("P11 report (hourly rollup, figures and findings): median {report_median:.1} ms over 7 runs");
    println!(
        "P11 raw (the same figures with SQL over the month's raw readings): median {raw_median:.1} ms over 7 runs"
    );

    // The fleet's monthly batch: every unit's report in turn, on one connection.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss();
    let started = Instant::now();
    let mut connection = pool.acquire().await?;
    let mut findings = 0;
    for unit in &units {
        findings += doctor::draft(&mut connection, rules, *unit, from, to).await?.expect("the unit").findings.len();
    }
    let batch_s = started.elapsed().as_secs_f64();
    println!(
        "P11 batch: {UNITS} monthly reports in {batch_s:.1} s ({:.1} ms each), {findings} findings, peak resident memory {:.0} MB (was {:.0} MB before)",
        batch_s * 1000.0 / UNITS as f64,
        peak_rss() as f64 / 1e6,
        before as f64 / 1e6
    );
    let pass = ratio <= 0.1;
    println!("P11 ratio={ratio:.3} target<=0.1 {}", verdict(pass));
    Ok(pass)
}
