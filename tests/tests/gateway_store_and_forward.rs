//! The real gateway's store and forward, end to end: simulator → `chillcloud-gateway` →
//! Mosquitto → server → PostgreSQL, with the broker stopped (a WAN outage), the gateway killed
//! with SIGKILL, a queue too small for the outage, and a device that stops answering.
//!
//! The ground truth is the gateway's own count of readings it queued (its status report) and,
//! after a SIGKILL, what its queue holds on disk: every one of them must be in the database
//! exactly once, or reported as dropped.

use std::time::Duration;

use chillcloud_gateway::queue::{Queue, QueueLimits};
use chillcloud_tests::harness::{Api, GATEWAY_READINGS, Gateway, Simulator, Stack, simulated_chillers, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Settings of the chillers these tests poll: every 100 ms, with a snapshot every second.
const POLLING: &str = "poll_interval_ms = 100\ntimeout_ms = 300\nsnapshot_interval_secs = 1";

async fn readings_in_database(stack: &Stack) -> i64 {
    let pool = stack.postgres.pool().await;
    let count: i64 = sqlx::query_scalar(GATEWAY_READINGS).fetch_one(&pool).await.expect("count");
    pool.close().await;
    count
}

/// Waits until the database holds `expected` readings, then checks it stays there.
async fn assert_database_settles_at(stack: &Stack, expected: i64) {
    let mut last = 0;
    let settled = tokio::time::timeout(WAIT, async {
        loop {
            last = readings_in_database(stack).await;
            if last >= expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "the database holds {last} readings, expected {expected}");
    assert_eq!(readings_in_database(stack).await, expected, "no reading stored twice or from nowhere");
}

async fn metric(api: &Api, name: &str) -> f64 {
    let (_, body) = api.get_raw("/metrics").await;
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} in {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn r1_broker_outage_delivers_every_reading_once_with_the_backlog_as_history() {
    let mut stack = Stack::start().await;
    // 10 chillers x 121 points every 100 ms: 12,100 points a second.
    let sim = Simulator::start(10, stack.dir.path()).await;
    let mut gateway = Gateway::new(&stack, "", &simulated_chillers(&sim, 10, POLLING, true));
    gateway.start();
    gateway
        .wait_status("the gateway connected and sending", 1, |s| {
            s["connected"] == true && s["readings_queued"].as_u64() > Some(0)
        })
        .await;

    // The outage: the broker goes away while the gateway keeps polling into its queue.
    stack.broker.stop().await;
    let cut = gateway.wait_status("the gateway noticed the outage", 1, |s| s["connected"] == false).await;
    let during = gateway
        .wait_status("a backlog of 8 s", 1, |s| {
            s["connected"] == false && s["queue"]["oldest_age_secs"].as_f64() >= Some(8.0)
        })
        .await;
    // Readings queued between these two reports cannot have been sent live.
    let surely_history =
        during["readings_queued"].as_i64().expect("count") - cut["readings_queued"].as_i64().expect("count");
    stack.broker.resume().await;
    let reconnected = gateway.wait_status("the gateway reconnected", 1, |s| s["connected"] == true).await;
    let drained = gateway
        .wait_status("the backlog drained", 1, |s| {
            s["connected"] == true && s["queue"]["unacked_batches"].as_u64() <= Some(2)
        })
        .await;
    // The status is written twice a second: the drain took at most this long.
    let time = |s: &serde_json::Value| s["time_ms"].as_f64().expect("time") / 1000.0;
    let outage = time(&reconnected) - time(&cut);
    let drain = time(&drained) - time(&reconnected) + 0.5;
    eprintln!("R1: outage {outage:.1} s, {surely_history} readings queued in it at least; drained within {drain:.1} s");
    assert!(outage / drain >= 5.0, "the backlog drains at 5x the live rate or faster ({outage:.1} s in {drain:.1} s)");

    let last = gateway.stop().await;
    assert_eq!(last["queue"]["unacked_batches"], 0, "a clean stop flushes what is in flight: {last}");
    assert_eq!(last["queue"]["dropped_readings"], 0);
    let queued = last["readings_queued"].as_i64().expect("count");
    assert_database_settles_at(&stack, queued).await;
    let history = metric(&stack.api(), "chillcloud_readings_history_total").await;
    assert!(history >= surely_history as f64, "the backlog arrived flagged as history ({history} < {surely_history})");
    assert!(history < queued as f64, "readings sent live are not flagged as history ({history} of {queued})");
}

#[tokio::test(flavor = "multi_thread")]
async fn r3_gateway_kill9_with_a_backlog_on_disk_loses_and_duplicates_nothing() {
    let mut stack = Stack::start().await;
    let sim = Simulator::start(3, stack.dir.path()).await;
    // No broker while the first run polls: everything it reads stays in its queue.
    stack.broker.stop().await;
    let mut gateway = Gateway::new(&stack, "", &simulated_chillers(&sim, 3, POLLING, false));
    gateway.start();
    gateway.wait_status("a backlog of 30 batches", 1, |s| s["queue"]["unacked_batches"].as_u64() >= Some(30)).await;
    gateway.process.as_mut().expect("running").kill9().await;

    // What the killed gateway left on disk (opened as the restarted gateway will open it: a
    // record torn by the kill is cut off, and was never counted as queued).
    let queue_dir = gateway.state_dir.join("queue");
    let limits = QueueLimits { max_bytes: u64::MAX, max_age: Duration::from_secs(86_400 * 365) };
    let mut queue = Queue::open(&queue_dir, limits, 0).expect("open the killed gateway's queue");
    let backlog: usize =
        queue.read_after(0, u64::MAX, usize::MAX).expect("read backlog").iter().map(|r| r.data.readings.len()).sum();
    drop(queue);
    assert!(backlog > 0);

    stack.broker.resume().await;
    gateway.start();
    gateway
        .wait_status("the backlog drained", 2, |s| {
            s["connected"] == true && s["queue"]["unacked_batches"].as_u64() <= Some(2)
        })
        .await;
    let last = gateway.stop().await;
    assert_eq!(last["queue"]["unacked_batches"], 0, "{last}");
    let second_run = last["readings_queued"].as_i64().expect("count");
    assert_database_settles_at(&stack, backlog as i64 + second_run).await;
    // The first run's session was announced from the queue's stored birth, so its readings
    // were stored rather than held.
    let pool = stack.postgres.pool().await;
    let sessions: i64 =
        sqlx::query_scalar("select count(*) from gateway_sessions").fetch_one(&pool).await.expect("sessions");
    assert_eq!(sessions, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_longer_than_the_disk_cap_drops_the_oldest_and_the_server_shows_the_gap() {
    let mut stack = Stack::start().await;
    let sim = Simulator::start(8, stack.dir.path()).await;
    stack.broker.stop().await;
    // The smallest queue allowed, 16 KiB: a few seconds of eight chillers.
    let mut gateway = Gateway::new(&stack, "[queue]\nmax_mb = 0.015625", &simulated_chillers(&sim, 8, POLLING, false));
    gateway.start();
    let full = gateway
        .wait_status("readings dropped for want of space", 1, |s| s["queue"]["dropped_readings"].as_u64() > Some(200))
        .await;
    assert!(full["queue"]["bytes"].as_u64().expect("bytes") <= 16 * 1024, "disk use under the cap: {full}");

    stack.broker.resume().await;
    gateway
        .wait_status("the backlog drained", 1, |s| {
            s["connected"] == true && s["queue"]["unacked_batches"].as_u64() <= Some(2)
        })
        .await;
    let last = gateway.stop().await;
    let (queued, dropped) = (
        last["readings_queued"].as_i64().expect("queued"),
        last["queue"]["dropped_readings"].as_i64().expect("dropped"),
    );
    assert!(dropped > 0);
    // Every reading is either stored or reported dropped.
    assert_database_settles_at(&stack, queued - dropped).await;

    let api = stack.api();
    let reported = metric(&api, "chillcloud_readings_dropped_by_gateways_total").await;
    assert_eq!(reported, dropped as f64, "the server counted what the gateway dropped");
    let units = api.get("/api/v1/units").await.expect("units");
    let unit = &units.as_array().expect("list")[0];
    let history = api.get(&format!("/api/v1/units/{}/history?bucket=1m", unit["id"])).await.expect("history");
    let gaps = history["dropped"].as_array().expect("dropped intervals");
    assert!(!gaps.is_empty(), "the history shows the dropped interval: {history}");
    let gap_readings: i64 = gaps.iter().map(|g| g["readings"].as_i64().expect("readings")).sum();
    assert_eq!(gap_readings, dropped);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_device_goes_bad_and_stale_and_is_never_sent_as_fresh() {
    let stack = Stack::start().await;
    let sim = Simulator::start(2, stack.dir.path()).await;
    let mut gateway = Gateway::new(&stack, "", &simulated_chillers(&sim, 2, POLLING, false));
    gateway.start();
    let api = stack.api();
    wait_for("chiller-2's first reading", WAIT, || async { api.latest("chiller-2", "active_setpoint").await }).await;

    sim.control(2, "scenario", json!({ "scenario": "offline" })).await;
    let status = gateway
        .wait_status("chiller-2 reported unhealthy", 1, |s| {
            s["devices"]["chiller-2"]["failed_polls"].as_u64() >= Some(3)
        })
        .await;
    assert_eq!(status["devices"]["chiller-1"]["healthy"], true, "the other chiller is fine: {status}");
    assert!(status["devices"]["chiller-2"]["last_error"].is_string(), "{status}");

    let pool = stack.postgres.pool().await;
    let latest_of = |device: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (Option<f64>, i16)>(
                "select l.value, l.quality from latest_readings l join points p on p.id = l.point_id
                 join units u on u.id = p.unit_id where u.device_key = $1 and p.name = 'active_setpoint'",
            )
            .bind(device)
            .fetch_one(&pool)
            .await
            .expect("latest")
        }
    };
    wait_for("chiller-2 marked bad", WAIT, || async { (latest_of("chiller-2").await == (None, 1)).then_some(()) })
        .await;
    // Several more polls: chiller-1 keeps reporting, chiller-2 has no good reading at all.
    let since = chrono::Utc::now();
    wait_for("three more snapshots of chiller-1", WAIT, || async {
        let count: i64 = sqlx::query_scalar(
            "select count(*) from readings r join points p on p.id = r.point_id join units u on u.id = p.unit_id
             where u.device_key = 'chiller-1' and p.name = 'active_setpoint' and r.ts > $1",
        )
        .bind(since)
        .fetch_one(&pool)
        .await
        .expect("count");
        (count >= 3).then_some(())
    })
    .await;
    let fresh: i64 = sqlx::query_scalar(
        "select count(*) from readings r join points p on p.id = r.point_id join units u on u.id = p.unit_id
         where u.device_key = 'chiller-2' and r.ts > $1 and r.quality = 0",
    )
    .bind(since)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(fresh, 0, "no fresh-looking value from a dead device");

    sim.control(2, "scenario", json!({ "scenario": "normal" })).await;
    wait_for("chiller-2 back", WAIT, || async { latest_of("chiller-2").await.0.map(|_| ()) }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_configuration_without_losing_buffered_data() {
    let mut stack = Stack::start().await;
    let sim = Simulator::start(3, stack.dir.path()).await;
    stack.broker.stop().await;
    let mut gateway = Gateway::new(&stack, "", &simulated_chillers(&sim, 2, POLLING, false));
    gateway.start();
    gateway.wait_status("a backlog of 20 batches", 1, |s| s["queue"]["unacked_batches"].as_u64() >= Some(20)).await;

    // A broken file is refused and the running configuration stays.
    gateway.rewrite_config(|text| text.replace("poll_interval_ms = 100", "poll_interval_ms = 5"));
    gateway.process.as_ref().expect("running").hangup();
    wait_for("the refusal in the log", WAIT, || async {
        let log = gateway.process.as_ref().expect("running").log();
        log.contains("configuration not reloaded").then_some(log)
    })
    .await;
    assert_eq!(gateway.status().expect("status")["session"], 1);

    // A good one (a third chiller) takes over as a new session, with the backlog kept.
    // (`Gateway::new` rewrites the same file and shares the state directory.)
    let mut with_three = Gateway::new(&stack, "", &simulated_chillers(&sim, 3, POLLING, false));
    with_three.process = gateway.process.take();
    with_three.process.as_ref().expect("running").hangup();
    with_three
        .wait_status("the third chiller polled in session 2", 2, |s| s["devices"]["chiller-3"]["healthy"] == true)
        .await;

    stack.broker.resume().await;
    with_three
        .wait_status("the backlog drained", 2, |s| {
            s["connected"] == true && s["queue"]["unacked_batches"].as_u64() <= Some(2)
        })
        .await;
    let last = with_three.stop().await;
    assert_eq!(last["queue"]["dropped_readings"], 0);
    assert_database_settles_at(&stack, last["readings_queued"].as_i64().expect("count")).await;
}
