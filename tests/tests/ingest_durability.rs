//! The server stores every reading the broker accepted exactly once, through server crashes
//! (R2), database and broker restarts (R4), and redelivered or replayed messages.

use std::time::Duration;

use chillcloud_proto::MessageKind;
use chillcloud_tests::harness::{FakeGateway, Stack, count_readings, numbered_birth, wait_for};
use prost::Message as _;

const POINTS: u32 = 50;

/// Waits until the database holds `expected` readings, then checks each is there once with the
/// value the fake gateway gave it.
async fn assert_all_stored_once(pool: &sqlx::PgPool, batches: u64, timeout: Duration) {
    let expected = batches as i64 * i64::from(POINTS);
    wait_for(&format!("{expected} readings in the database"), timeout, || async {
        (count_readings(pool).await.0 >= expected).then_some(())
    })
    .await;
    let (rows, distinct) = count_readings(pool).await;
    assert_eq!((rows, distinct), (expected, expected), "every reading once");
    // Value = batch + alias / 10, so the sum over all readings is known exactly.
    let sum: f64 = sqlx::query_scalar("select sum(value) from readings").fetch_one(pool).await.expect("sum");
    let want: f64 = (0..batches).map(|b| (0..POINTS).map(|a| b as f64 + f64::from(a) / 10.0).sum::<f64>()).sum();
    assert!((sum - want).abs() < 1e-6 * want, "stored values are the published ones: {sum} vs {want}");
    // The hourly rollup counts each reading once too: a batch holding a redelivered reading
    // is stored by the exact path, which aggregates only the rows it inserted.
    let (count, total): (i64, f64) = sqlx::query_as("select sum(n)::bigint, sum(total) from readings_1h")
        .fetch_one(pool)
        .await
        .expect("rollup sums");
    assert_eq!(count, expected, "the rollup counts every reading once");
    assert!((total - want).abs() < 1e-6 * want, "the rollup's total is the readings': {total} vs {want}");
}

#[tokio::test(flavor = "multi_thread")]
async fn r2_server_kill9_during_steady_ingest_loses_and_duplicates_nothing() {
    let mut stack = Stack::start().await;
    let pool = stack.postgres.pool().await;
    let mut gateway = stack.gateway(POINTS).await;
    const BATCHES: u64 = 600;
    let publisher = tokio::spawn(async move {
        for batch in 0..BATCHES {
            let data = gateway.data(batch, POINTS);
            gateway.publish_data(&data).await;
            // A steady stream (about 200 messages, 10,000 readings a second), not one burst.
            if batch % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        gateway.wait_acked(Duration::from_secs(60)).await;
        gateway
    });
    wait_for("ingest under way", Duration::from_secs(30), || async {
        (count_readings(&pool).await.0 >= 100 * i64::from(POINTS)).then_some(())
    })
    .await;
    // Stall the database so the server is caught holding a received batch that is not yet
    // committed: the moment an early acknowledgement would lose data.
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("lock table readings in share mode").execute(&mut *lock).await.expect("lock readings");
    wait_for("an insert blocked on the lock", Duration::from_secs(30), || async {
        let blocked: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%insert into readings %'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (blocked > 0).then_some(())
    })
    .await;
    stack.server.as_mut().expect("running").kill9().await;
    lock.rollback().await.expect("release the lock");
    let stored_at_kill = count_readings(&pool).await.0;
    assert!(stored_at_kill < BATCHES as i64 * i64::from(POINTS), "the kill happened mid-ingest");
    stack.start_server().await;
    let _gateway = publisher.await.expect("publisher");
    assert_all_stored_once(&pool, BATCHES, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn r4_database_then_broker_restart_during_ingest_recovers_by_itself() {
    let mut stack = Stack::start().await;
    let pool = stack.postgres.pool().await;
    let mut gateway = stack.gateway(POINTS).await;
    const BATCHES: u64 = 90;
    let mut batch = 0;
    let mut publish = async |gateway: &mut FakeGateway, count: u64| {
        for _ in 0..count {
            let data = gateway.data(batch, POINTS);
            gateway.publish_data(&data).await;
            batch += 1;
        }
    };
    publish(&mut gateway, 30).await;
    stack.postgres.restart().await;
    publish(&mut gateway, 30).await;
    gateway.wait_acked(Duration::from_secs(30)).await;
    stack.broker.restart().await;
    publish(&mut gateway, 30).await;
    gateway.wait_acked(Duration::from_secs(30)).await;
    drop(pool);
    let pool = stack.postgres.pool().await;
    assert_all_stored_once(&pool, BATCHES, Duration::from_secs(60)).await;
    let server = stack.server.as_ref().expect("running");
    assert!(server.log().contains("connected to broker"), "the server reconnected by itself");
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_and_replayed_messages_store_nothing_twice() {
    let stack = Stack::start().await;
    let pool = stack.postgres.pool().await;
    let mut gateway = stack.gateway(POINTS).await;
    let batches: Vec<_> = (0..20).map(|b| gateway.data(b, POINTS)).collect();
    for data in &batches {
        gateway.publish_data(data).await;
    }
    // The same messages again (a QoS 1 redelivery looks the same to the server), then the
    // whole run replayed once more, as a gateway resending its buffer would.
    for data in batches.iter().chain(&batches) {
        gateway.publish_data(data).await;
    }
    // A bad message between good ones is refused without stopping ingest.
    gateway.publish_raw(MessageKind::Data, vec![0xff, 0xff, 0xff]).await;
    let late = gateway.data(20, POINTS);
    gateway.publish_data(&late).await;
    gateway.wait_acked(Duration::from_secs(30)).await;
    assert_all_stored_once(&pool, 21, Duration::from_secs(30)).await;
    let rejected: i64 = sqlx::query_scalar("select count(*) from dead_letters").fetch_one(&pool).await.expect("count");
    assert_eq!(rejected, 1, "the malformed message is dead-lettered");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_counted_and_dead_lettered_while_ingest_goes_on() {
    let stack = Stack::start().await;
    let pool = stack.postgres.pool().await;
    let mut gateway = stack.gateway(POINTS).await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let far_future = gateway.data_at(now_ms + 24 * 3600 * 1000, &[(0, 1.0)]);
    let before_2000 = gateway.data_at(900_000_000_000, &[(0, 1.0)]);
    let not_a_number = gateway.data_at(now_ms, &[(0, f64::NAN), (1, 2.0)]);
    // A drop report at times PostgreSQL cannot even store.
    let mut impossible_gap = gateway.data_at(now_ms, &[]);
    impossible_gap.dropped =
        vec![chillcloud_proto::DroppedInterval { from_ms: i64::MIN, to_ms: i64::MAX, readings: u64::MAX }];
    let good = gateway.data(0, POINTS);
    gateway.publish_raw(MessageKind::Data, vec![0xff, 0xff, 0xff]).await;
    gateway.publish_raw(MessageKind::Data, Vec::new()).await;
    for data in [&far_future, &before_2000, &not_a_number, &impossible_gap] {
        gateway.publish_data(data).await;
    }
    // Text PostgreSQL cannot store (a NUL) in a birth (refused by the birth's own check) and in
    // a command result (refused by the database): refused, and ingest goes on instead of
    // retrying them for ever.
    let mut birth = numbered_birth(1, POINTS);
    birth.devices[0].points[0].name = "p\0".into();
    gateway.publish_raw(MessageKind::Birth, birth.encode_to_vec()).await;
    let result = chillcloud_proto::CommandResult { id: "c\0".into(), status: 1, ..Default::default() };
    gateway.publish_raw(MessageKind::CommandResult, result.encode_to_vec()).await;
    gateway.publish_data(&good).await;
    gateway.wait_acked(Duration::from_secs(30)).await;
    // The good message and the good reading beside the NaN are stored.
    wait_for("the good readings", Duration::from_secs(30), || async {
        (count_readings(&pool).await.0 == i64::from(POINTS) + 1).then_some(())
    })
    .await;
    let reasons: Vec<String> =
        sqlx::query_scalar("select reason from dead_letters order by id").fetch_all(&pool).await.expect("dead letters");
    assert_eq!(reasons.len(), 8, "{reasons:?}");
    assert!(reasons[0].contains("malformed data payload"), "{reasons:?}");
    assert!(reasons[1].contains("without a session"), "{reasons:?}");
    assert!(reasons[2..5].iter().all(|r| r.contains("1 readings refused")), "{reasons:?}");
    assert!(reasons[5].contains("1 dropped intervals refused"), "{reasons:?}");
    assert!(reasons[6].contains("birth refused: point name \"p\\0\""), "{reasons:?}");
    assert!(reasons[7].contains("the database cannot store it"), "{reasons:?}");
    let metrics = stack.api().get_raw("/metrics").await.1;
    assert!(metrics.contains("chillcloud_mqtt_messages_rejected_total 8"), "{metrics}");
    assert!(metrics.contains("chillcloud_readings_refused_total 3"), "{metrics}");
}

/// A burst of more messages than the broker's inflight window and the server's acknowledgement
/// queue together: the server must keep reading from the broker while it acknowledges (a
/// bounded hand-over between the two once deadlocked here).
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_small_messages_is_stored_without_stalling() {
    const MESSAGES: u64 = 3_000;
    const PER_MESSAGE: u32 = 5;
    let stack = Stack::start().await;
    let pool = stack.postgres.pool().await;
    let mut gateway = stack.gateway(PER_MESSAGE).await;
    for batch in 0..MESSAGES {
        let data = gateway.data(batch, PER_MESSAGE);
        gateway.publish_data(&data).await;
    }
    let expected = (MESSAGES * u64::from(PER_MESSAGE)) as i64;
    wait_for("every reading of the burst", Duration::from_secs(120), || async {
        (count_readings(&pool).await.0 == expected).then_some(())
    })
    .await;
    gateway.wait_acked(Duration::from_secs(30)).await;
    // The readings were taken in 2023: the lag gauge says how stale they were on arrival.
    let metrics = stack.api().get_raw("/metrics").await.1;
    let lag: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("chillcloud_ingest_lag_seconds ")?.parse().ok())
        .expect("the lag gauge");
    assert!(lag > 86_400.0, "lag {lag} s");
    assert!(metrics.contains("# TYPE chillcloud_ingest_lag_seconds gauge"), "{metrics}");
}

/// Data whose birth never arrives is held only up to a limit per gateway, by messages and by
/// bytes, so a gateway that never announces itself cannot fill the database.
#[tokio::test(flavor = "multi_thread")]
async fn r5_data_held_for_a_missing_birth_is_capped_per_gateway_by_count_bytes_and_age() {
    use chillcloud_server::store::{self, AliasCache, DataOutcome, HoldLimit, ReadingRows};
    use prost::Message;
    let postgres = chillcloud_tests::harness::TestPostgres::start().await;
    let pool = postgres.pool().await;
    store::MIGRATOR.run(&pool).await.expect("migrate");
    let gateway = chillcloud_proto::GatewayId::new("gw-silent").expect("id");
    store::upsert_gateway(&pool, &gateway, "unused", "unused").await.expect("provision");
    let data = chillcloud_proto::Data { session: 7, base_time_ms: 1_800_000_000_000, ..Default::default() };
    let payload = data.encode_to_vec();
    // What becomes of `times` messages with `payload` from `gateway`, its birth missing.
    let hold = |gateway: &chillcloud_proto::GatewayId, payload: Vec<u8>, limit: HoldLimit, times: usize| {
        let (pool, gateway, data) = (pool.clone(), gateway.clone(), data.clone());
        async move {
            let mut outcomes = Vec::new();
            for _ in 0..times {
                let (mut rows, mut cache) = (ReadingRows::default(), AliasCache::default());
                let outcome = store::gather_data(&pool, &mut cache, &gateway, &data, &payload, &mut rows, limit).await;
                outcomes.push(outcome.expect("stored or refused"));
            }
            outcomes
        }
    };
    assert_eq!(
        hold(&gateway, payload, HoldLimit { messages: 3, bytes: 1 << 20 }, 4).await,
        [DataOutcome::HeldForBirth, DataOutcome::HeldForBirth, DataOutcome::HeldForBirth, DataOutcome::HoldingFull]
    );
    // By bytes: a 250 KB message fits under 600 KB twice, not a third time (r5: 200 messages of
    // 250 KB once stored 48 MB for one gateway).
    let other = chillcloud_proto::GatewayId::new("gw-big").expect("id");
    store::upsert_gateway(&pool, &other, "unused", "unused").await.expect("provision");
    let big = vec![0u8; 250_000];
    let limit = HoldLimit { messages: 1_000, bytes: 600_000 };
    assert_eq!(
        hold(&other, big.clone(), limit, 3).await,
        [DataOutcome::HeldForBirth, DataOutcome::HeldForBirth, DataOutcome::HoldingFull]
    );
    // What waited an hour for its birth is gone at the next hold.
    sqlx::query("update pending_data set received_at = now() - interval '61 minutes' where gateway_id = 'gw-big'")
        .execute(&pool)
        .await
        .expect("age");
    assert_eq!(hold(&other, big, limit, 1).await, [DataOutcome::HeldForBirth]);
    let held: i64 = sqlx::query_scalar("select count(*) from pending_data where gateway_id = 'gw-big'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(held, 1);
}
