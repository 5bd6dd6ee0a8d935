//! `chillcloud-bench <ID>`: the performance targets of docs/benchmarks.md, each measured side by side
//! with its baseline in the same run. The last line is `<ID> ratio=<r> target<op><t> PASS|FAIL`.
//! Run through `scripts/bench`, which builds in release mode first.

mod cluster;
mod dashboard;
mod detect;
mod doctor;
mod gateway;
mod paging;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chillcloud_proto::{GatewayId, Quality};
use chillcloud_server::{
    history::{self, Bucket},
    store::{self, ReadingRows},
    timescale::{self, StorageMode},
};
use chillcloud_tests::harness::{Stack, TestPostgres, count_readings, numbered_birth, wait_for};
use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt as _;

#[derive(Parser)]
#[command(about = "Chillcloud benchmarks (see docs/benchmarks.md)")]
struct Cli {
    /// P1 (ingest against COPY and INSERT VALUES), P2 (keeping up with mosquitto_sub), P3 (gateway footprint against
    /// thingsboard-gateway and collectd), P4 (Modbus requests per poll against the lower
    /// bound), P5 (wire bytes per point against JSON per tag), P7 (hourly history against raw),
    /// P6 (value crossing to SMS request against Prometheus + Alertmanager), P8 (a unit page's
    /// first load on a phone over 3G against its budget), P9 (the clustered layout's ingest
    /// against one box's), P10 (failover time of a partition), P11 (a unit's monthly doctor report against
    /// the same figures from raw readings, and a 1,000-unit batch), DETECT (fault
    /// detection latency against the 5 s target), or all.
    id: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let id = cli.id.to_uppercase();
    let ids: Vec<&str> = match id.as_str() {
        "ALL" => vec!["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "P11", "DETECT"],
        id @ ("P1" | "P2" | "P3" | "P4" | "P5" | "P6" | "P7" | "P8" | "P9" | "P10" | "P11" | "DETECT") => vec![id],
        other => anyhow::bail!("unknown benchmark {other}: P1 to P11, detect or all"),
    };
    let mut all_pass = true;
    for id in ids {
        let pass = match id {
            "P1" => p1().await?,
            "P2" => p2().await?,
            "P3" => gateway::p3().await?,
            "P4" => gateway::p4().await?,
            "P5" => gateway::p5().await?,
            "P6" => paging::p6().await?,
            "P8" => dashboard::p8().await?,
            "P9" => cluster::p9().await?,
            "P10" => cluster::p10().await?,
            "P11" => doctor::p11().await?,
            "DETECT" => detect::detect().await?,
            _ => p7().await?,
        };
        all_pass &= pass;
    }
    std::process::exit(if all_pass { 0 } else { 1 })
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Registers one gateway with one unit of `points` points and returns the point ids.
async fn register_unit(pool: &PgPool, points: u32) -> anyhow::Result<Vec<i64>> {
    let gateway = GatewayId::new("bench-gw")?;
    store::upsert_gateway(pool, &gateway, "bench-gw:unused", "unused").await?;
    let birth = numbered_birth(1, points);
    store::store_birth(pool, &gateway, &birth).await??;
    Ok(sqlx::query_scalar("select id from points order by id").fetch_all(pool).await?)
}

/// P7: hourly averages over 30 days for one unit, from the rollup against from raw readings.
async fn p7() -> anyhow::Result<bool> {
    const POINTS: u32 = 17; // the Trane CH530 profile's points
    const STEP_S: i64 = 10;
    let postgres = TestPostgres::start_for_bench().await;
    let pool = postgres.pool().await;
    store::MIGRATOR.run(&pool).await?;
    let storage = timescale::prepare(&pool, &timescale::Policies::default()).await;
    println!("P7 storage: {} (TimescaleDB {})", storage.mode, storage.timescaledb);
    let point_ids = register_unit(&pool, POINTS).await?;
    let to = DateTime::<Utc>::from_timestamp(1_700_000_000 / 3600 * 3600, 0).context("time")?;
    let from = to - TimeDelta::days(30);

    // 30 days of readings every 10 s, written through the ingest path (readings + rollup).
    let started = Instant::now();
    let mut rows = ReadingRows::default();
    let mut written = 0usize;
    let mut ts = from;
    while ts < to {
        for (i, point_id) in point_ids.iter().enumerate() {
            let value = 7.0 + (ts.timestamp() as f64 / 3600.0 + i as f64).sin();
            rows.push(*point_id, ts, Some((value * 10.0).round() / 10.0), Quality::Good);
        }
        if rows.len() >= 10_000 {
            written += rows.len();
            store::flush(&pool, std::mem::take(&mut rows)).await?;
        }
        ts += TimeDelta::seconds(STEP_S);
    }
    written += rows.len();
    store::flush(&pool, rows).await?;
    let load_s = started.elapsed().as_secs_f64();
    if storage.mode == StorageMode::Timescale {
        // What the policies would have done while the month's readings arrived: materialise
        // the aggregates and compress the chunks older than a week.
        for (aggregate, ..) in timescale::AGGREGATES {
            sqlx::query(sqlx::AssertSqlSafe(format!("call refresh_continuous_aggregate('{aggregate}', null, $1)")))
                .bind(to)
                .execute(&pool)
                .await?;
        }
        sqlx::query("select compress_chunk(c) from show_chunks('readings', older_than => $1::timestamptz) c")
            .bind(to - TimeDelta::days(7))
            .execute(&pool)
            .await?;
    }
    sqlx::query("analyze").execute(&pool).await?;
    println!("P7 data: {written} readings (30 days x {POINTS} points every {STEP_S} s) written in {load_s:.1} s");

    let mut rollup_ms = Vec::new();
    let mut raw_ms = Vec::new();
    let expected = 30 * 24 * POINTS as usize;
    for round in 0..25 {
        let started = Instant::now();
        let rows = match history::query(&mut *pool.acquire().await?, storage.mode, &point_ids, from, to, Bucket::Hour)
            .await?
        {
            history::Rows::Buckets(rows) => rows.len(),
            history::Rows::Raw(_) => anyhow::bail!("expected buckets"),
        };
        rollup_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(rows == expected, "rollup returned {rows} buckets");
        // The raw query is far slower: a few runs give a stable median.
        if round % 5 == 0 {
            let started = Instant::now();
            let rows = history::hourly_from_raw(&mut *pool.acquire().await?, &point_ids, from, to).await?.len();
            raw_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(rows == expected, "raw returned {rows} buckets");
        }
    }
    let (rollup_p95, rollup_median, raw_median) =
        (percentile(rollup_ms.clone(), 0.95), median(rollup_ms), median(raw_ms));
    let ratio = raw_median / rollup_p95;
    let pass = rollup_p95 <= 100.0 && ratio >= 10.0;
    let source = match storage.mode {
        StorageMode::Plain => "readings_1h",
        StorageMode::Timescale => "readings_1h_continuous",
    };
    println!(
        "P7 rollup ({source}): median {rollup_median:.1} ms, p95 {rollup_p95:.1} ms over 25 runs (target p95 <= 100 ms)"
    );
    println!("P7 raw (date_bin over readings): median {raw_median:.1} ms over 5 runs");
    println!("P7 ratio={ratio:.1} target>=10 {}", verdict(pass));
    Ok(pass)
}

/// The rows one P1 round publishes: `messages` messages of `per_message` readings.
struct P1Round {
    messages: u64,
    per_message: u32,
}

/// P1: readings per second from MQTT through decode into PostgreSQL, against a binary COPY of
/// the same rows into a table of the same shape (a hypertable in TimescaleDB mode), against a
/// loader doing one INSERT per reading (the naive path of common IoT platforms), and, for
/// context, multi-row INSERT VALUES in 1,000-row batches.
/// Readings the server has committed, from its `/metrics`: cheap to poll while it ingests, unlike
/// counting the table, whose scans would take the very CPU being measured (the rows are counted
/// once afterwards).
async fn readings_stored(stack: &Stack) -> Option<u64> {
    let text = reqwest::get(format!("http://{}/metrics", stack.http)).await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("chillcloud_readings_stored_total ")?.trim().parse::<f64>().ok())
        .map(|n| n as u64)
}

async fn p1() -> anyhow::Result<bool> {
    let round = P1Round { messages: 400, per_message: 500 };
    let total = round.messages * u64::from(round.per_message);
    let stack = Stack::start_on(TestPostgres::start_for_bench().await, &[], &[]).await;
    let pool = stack.postgres.pool().await;
    let mode = timescale::current_mode(&pool).await?;
    println!("P1 storage: {mode}");
    for table in ["copy_baseline", "values_baseline", "single_baseline"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("create table {table} (like readings including all)")))
            .execute(&pool)
            .await?;
        if mode == StorageMode::Timescale {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "select create_hypertable('{table}', by_range('ts', interval '1 day'))"
            )))
            .execute(&pool)
            .await?;
        }
    }
    let mut gateway = stack.gateway(round.per_message).await;
    let point_ids: Vec<i64> = wait_for("the birth's points", Duration::from_secs(30), || async {
        let ids: Vec<i64> = sqlx::query_scalar("select id from points order by id").fetch_all(&pool).await.ok()?;
        (ids.len() == round.per_message as usize).then_some(ids)
    })
    .await;

    let (mut ours, mut copy, mut values, mut single) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for repetition in 0..3u64 {
        let base_batch = repetition * round.messages;
        // Ours: publish, then wait until every reading is committed.
        let before = count_readings(&pool).await.0;
        let stored_before = readings_stored(&stack).await.unwrap_or(0);
        let messages: Vec<_> = (0..round.messages).map(|b| gateway.data(base_batch + b, round.per_message)).collect();
        let started = Instant::now();
        for data in &messages {
            gateway.publish_data(data).await;
        }
        wait_for("P1 readings stored", Duration::from_secs(300), || async {
            (readings_stored(&stack).await? >= stored_before + total).then_some(())
        })
        .await;
        ours.push(total as f64 / started.elapsed().as_secs_f64());
        let (count, distinct) = count_readings(&pool).await;
        anyhow::ensure!(
            count == before + total as i64 && distinct == count,
            "P1 stored {count} rows ({distinct} distinct)"
        );

        // The same rows, by binary COPY in 10,000-row batches and by INSERT VALUES in 1,000s.
        let rows: Vec<(i64, DateTime<Utc>, f64)> = messages
            .iter()
            .flat_map(|data| {
                data.readings.iter().map(move |r| {
                    let ts = DateTime::from_timestamp_millis(data.base_time_ms + r.offset_ms).unwrap_or_default();
                    (r.alias, ts, r.value.map_or(0.0, |v| v.to_f64(1)))
                })
            })
            .map(|(alias, ts, value)| (point_ids[alias as usize], ts, value))
            .collect();
        let started = Instant::now();
        for chunk in rows.chunks(10_000) {
            copy_binary(&pool, "copy_baseline", chunk).await?;
        }
        copy.push(total as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        for chunk in rows.chunks(1_000) {
            insert_values(&pool, "values_baseline", chunk).await?;
        }
        values.push(total as f64 / started.elapsed().as_secs_f64());
        // One INSERT per reading is slow enough that a sample gives its rate.
        let sample = &rows[..SINGLE_SAMPLE.min(rows.len())];
        let started = Instant::now();
        for row in sample {
            insert_values(&pool, "single_baseline", std::slice::from_ref(row)).await?;
        }
        single.push(sample.len() as f64 / started.elapsed().as_secs_f64());
    }
    let metrics = reqwest::get(format!("http://{}/metrics", stack.http)).await?.text().await?;
    let metric = |name: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(f64::NAN)
    };
    let (batches, messages, db_seconds) = (
        metric("chillcloud_ingest_batches_total"),
        metric("chillcloud_ingest_batch_messages_total"),
        metric("chillcloud_ingest_database_seconds_total"),
    );
    println!(
        "P1 server: {batches} batches, {:.1} messages per batch, {db_seconds:.2} s in the database",
        messages / batches
    );
    let (ours, copy, values, single) = (median(ours), median(copy), median(values), median(single));
    let (vs_copy, vs_values, vs_single) = (ours / copy, ours / values, ours / single);
    let pass = vs_copy >= 0.8 && vs_single >= 20.0;
    println!(
        "P1 rows per round: {total} ({} messages x {} readings), 3 rounds, medians:",
        round.messages, round.per_message
    );
    println!("P1 ours (MQTT -> decode -> UNNEST with rollup, ack after commit): {ours:.0} readings/s");
    println!("P1 binary COPY, 10,000-row batches: {copy:.0} rows/s");
    println!("P1 INSERT VALUES, 1,000-row batches: {values:.0} rows/s (ours {vs_values:.1}x)");
    println!(
        "P1 one INSERT per reading ({SINGLE_SAMPLE} a round): {single:.0} rows/s (ours {vs_single:.1}x, target >= 20)"
    );
    println!("P1 ratio={vs_copy:.2} target>=0.8 (and >=20x one INSERT per reading) {}", verdict(pass));
    Ok(pass)
}

/// Readings the one-INSERT-per-reading loader writes each round.
const SINGLE_SAMPLE: usize = 20_000;

/// Writes rows with `COPY ... FROM STDIN (FORMAT binary)`.
async fn copy_binary(pool: &PgPool, table: &str, rows: &[(i64, DateTime<Utc>, f64)]) -> anyhow::Result<()> {
    // PostgreSQL's binary COPY: a header, then per row a field count and length-prefixed fields.
    let postgres_epoch_us = 946_684_800_000_000i64;
    let mut buffer = Vec::with_capacity(rows.len() * 48 + 32);
    buffer.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buffer.extend_from_slice(&0i32.to_be_bytes());
    buffer.extend_from_slice(&0i32.to_be_bytes());
    for (point_id, ts, value) in rows {
        buffer.extend_from_slice(&4i16.to_be_bytes());
        buffer.extend_from_slice(&8i32.to_be_bytes());
        buffer.extend_from_slice(&point_id.to_be_bytes());
        buffer.extend_from_slice(&8i32.to_be_bytes());
        buffer.extend_from_slice(&(ts.timestamp_micros() - postgres_epoch_us).to_be_bytes());
        buffer.extend_from_slice(&8i32.to_be_bytes());
        buffer.extend_from_slice(&value.to_be_bytes());
        buffer.extend_from_slice(&2i32.to_be_bytes());
        buffer.extend_from_slice(&0i16.to_be_bytes());
    }
    buffer.extend_from_slice(&(-1i16).to_be_bytes());
    let mut connection = pool.acquire().await?;
    let mut copy = connection
        .copy_in_raw(&format!("copy {table} (point_id, ts, value, quality) from stdin (format binary)"))
        .await?;
    copy.send(buffer).await?;
    copy.finish().await?;
    Ok(())
}

/// Writes rows with one multi-row `INSERT ... VALUES` statement.
async fn insert_values(pool: &PgPool, table: &str, rows: &[(i64, DateTime<Utc>, f64)]) -> anyhow::Result<()> {
    let placeholders: Vec<String> =
        (0..rows.len()).map(|i| format!("(${}, ${}, ${}, 0)", i * 3 + 1, i * 3 + 2, i * 3 + 3)).collect();
    let sql = format!(
        "insert into {table} (point_id, ts, value, quality) values {} on conflict do nothing",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (point_id, ts, value) in rows {
        query = query.bind(point_id).bind(ts).bind(value);
    }
    query.execute(pool).await?;
    Ok(())
}

/// P2: whether the server keeps up with what the broker delivers, against `mosquitto_sub`
/// receiving the same messages from the same broker at the same time. The publisher sends
/// gateway-sized data messages (50 readings each) at QoS 1 at a steady rate for 10 s; each
/// side's rate is its messages over the time until its last one was received (stored, for
/// ours). The verdict is at the design load, [`P2_DESIGN_RATE`]; higher rates show where ours
/// stops keeping up, and a burst (everything at once) shows the raw capacity of each.
async fn p2() -> anyhow::Result<bool> {
    let stack = Stack::start_on(TestPostgres::start_for_bench().await, &[], &[]).await;
    let pool = stack.postgres.pool().await;
    println!("P2 storage: {}", timescale::current_mode(&pool).await?);
    let mut gateway = stack.gateway(P2_READINGS).await;
    wait_for("the birth's points", Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from points").fetch_one(&pool).await.ok()?;
        (n == i64::from(P2_READINGS)).then_some(())
    })
    .await;

    // The baseline subscriber prints one line (the topic) per message it receives at QoS 1, and
    // with -d its protocol exchanges, among them the SUBACK that says it is subscribed. stdbuf
    // makes its output line-buffered, so each line is timed as it is received (a few small
    // writes per message, next to nothing beside the network).
    let mut subscriber = tokio::process::Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &stack.broker.address().port().to_string()])
        .args(["-u", chillcloud_server::embedded::broker::SERVER_USERNAME, "-P", &stack.broker.server_password])
        .args(["-i", "bench-p2-mosquitto-sub", "-q", "1", "-t", "chillcloud/v1/+/data", "-F", "%t", "-d"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = subscriber.stdout.take().context("subscriber output")?;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let event = if line.contains("received SUBACK") {
                None
            } else if line.starts_with("chillcloud/v1/") {
                Some(Instant::now())
            } else {
                continue;
            };
            if lines_tx.send(event).is_err() {
                return;
            }
        }
    });
    let subscribed = tokio::time::timeout(Duration::from_secs(30), lines.recv()).await?;
    anyhow::ensure!(subscribed == Some(None), "mosquitto_sub did not subscribe");
    // A probe shows both subscribers receive before the load starts.
    let probe = gateway.data(0, P2_READINGS);
    gateway.publish_data(&probe).await;
    tokio::time::timeout(Duration::from_secs(30), lines.recv()).await?.context("mosquitto_sub received the probe")?;
    wait_for("the probe stored", Duration::from_secs(30), || async {
        (readings_stored(&stack).await? >= u64::from(P2_READINGS)).then_some(())
    })
    .await;

    println!("P2 data messages of {P2_READINGS} readings at QoS 1, each load for {} s:", P2_SECONDS);
    let mut batch = 1;
    let mut design_ratio = 0.0;
    for rate in P2_RATES.into_iter().map(Some).chain([None]) {
        let messages = rate.map_or(P2_BURST, |rate| u64::from(rate) * P2_SECONDS);
        let load: Vec<_> = (batch..batch + messages).map(|b| gateway.data(b, P2_READINGS)).collect();
        batch += messages;
        let stored_before = readings_stored(&stack).await.context("the server's metrics")?;
        let started = Instant::now();
        let publishing = async {
            match rate {
                // 100 ticks a second, each publishing its share of the rate.
                Some(rate) => {
                    let mut ticks = tokio::time::interval(Duration::from_millis(10));
                    for chunk in load.chunks((rate as usize / 100).max(1)) {
                        ticks.tick().await;
                        for data in chunk {
                            gateway.publish_data(data).await;
                        }
                    }
                }
                None => {
                    for data in &load {
                        gateway.publish_data(data).await;
                    }
                }
            }
            started.elapsed()
        };
        let baseline = async {
            let mut last = started;
            for _ in 0..messages {
                last = lines.recv().await.flatten().context("mosquitto_sub ended")?;
            }
            anyhow::Ok(last.duration_since(started))
        };
        let target = stored_before + messages * u64::from(P2_READINGS);
        let ours = async {
            wait_for("P2 readings stored", Duration::from_secs(300), || async {
                (readings_stored(&stack).await? >= target).then_some(())
            })
            .await;
            started.elapsed()
        };
        let (published, baseline, ours) = tokio::join!(publishing, baseline, ours);
        let baseline = baseline?;
        let per_second = |elapsed: Duration| messages as f64 / elapsed.as_secs_f64();
        let ratio = per_second(ours) / per_second(baseline);
        let load = match rate {
            Some(rate) => format!("{rate} messages/s ({} readings/s)", rate * P2_READINGS),
            None => format!("burst of {messages}, published in {:.2} s", published.as_secs_f64()),
        };
        println!(
            "P2 {load}: mosquitto_sub {:.0} messages/s (last after {:.2} s); ours {:.0} messages/s, {:.0} readings/s (last stored after {:.2} s): {ratio:.2}",
            per_second(baseline),
            baseline.as_secs_f64(),
            per_second(ours),
            per_second(ours) * f64::from(P2_READINGS),
            ours.as_secs_f64(),
        );
        if rate == Some(P2_DESIGN_RATE) {
            design_ratio = ratio;
        }
    }
    let (count, distinct) = count_readings(&pool).await;
    let expected = (batch * u64::from(P2_READINGS)) as i64;
    anyhow::ensure!(
        count == expected && distinct == count,
        "P2 stored {count} rows ({distinct} distinct), not {expected}"
    );
    let pass = design_ratio >= 0.9;
    println!(
        "P2 design load: {P2_DESIGN_RATE} messages/s of {P2_READINGS} readings ({} readings/s: 20,000 units each sending 50 readings every 10 s)",
        P2_DESIGN_RATE * P2_READINGS
    );
    println!("P2 ratio={design_ratio:.2} target>=0.9 {}", verdict(pass));
    Ok(pass)
}

/// Readings per P2 message: a gateway's poll of a chiller.
const P2_READINGS: u32 = 50;
/// Seconds each steady load lasts.
const P2_SECONDS: u64 = 10;
/// The steady loads, messages a second.
const P2_RATES: [u32; 4] = [1_000, 2_000, 4_000, 6_000];
/// The load the verdict is at.
const P2_DESIGN_RATE: u32 = 2_000;
/// Messages of the burst.
const P2_BURST: u64 = 5_000;
