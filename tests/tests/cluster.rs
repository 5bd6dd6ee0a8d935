//! Several server replicas on a three-node RabbitMQ cluster: partitions owned by one replica at a
//! time, moved when it dies, with nothing lost or stored twice.

use std::time::{Duration, Instant};

use chillcloud_tests::{
    cluster::{Layout, RabbitCluster, Replica},
    harness::{
        FakeGateway, GATEWAY_READINGS, Simulator, TestPostgres, add_gateway, shared_temp_dir, simulated_chillers,
        wait_for,
    },
};

const GATEWAY: &str = "gw-cluster";

/// The simulated chillers' polling: every 100 ms, a snapshot every second.
const POLLING: &str = "poll_interval_ms = 100\ntimeout_ms = 300\nsnapshot_interval_secs = 1";

/// `kill -9` of the replica owning a gateway's partition while the gateway sends 10,000 points a
/// second: another replica takes the partition over, and every reading the broker acknowledged
/// is stored exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn replica_kill9_moves_its_partition_and_loses_no_reading() {
    const POINTS: u32 = 100;
    const BATCHES: u64 = 2_000; // 100 a second: 10,000 points a second for 20 s
    const KILL_AT: u64 = 500;
    let cluster = tokio::task::block_in_place(RabbitCluster::start);
    let postgres = TestPostgres::start().await;
    let dir = shared_temp_dir();
    let (password, _) = add_gateway(GATEWAY, &["--database-url", &postgres.url()]).await;
    cluster.add_gateway_user(GATEWAY, &password);
    let mut replicas = Vec::new();
    for name in ["replica-1", "replica-2", "replica-3"] {
        replicas.push(Replica::start(name, &postgres, &cluster, &dir).await);
    }
    // Every partition owned, and spread: no replica holds more than its share.
    wait_for("the 32 partitions spread over the 3 replicas", Duration::from_secs(30), || async {
        let mut owned = Vec::new();
        for replica in &replicas {
            owned.push(replica.partitions().await);
        }
        let total: usize = owned.iter().map(Vec::len).sum();
        (total == 32 && owned.iter().all(|p| p.len() <= 11)).then_some(())
    })
    .await;
    let partition = chillcloud_server::partitions::of(GATEWAY);
    let mut owner = None;
    for (i, replica) in replicas.iter().enumerate() {
        if replica.partitions().await.contains(&partition) {
            owner = Some(i);
        }
    }
    let owner = owner.expect("a replica owns the gateway's partition");

    let mut gateway = FakeGateway::connect(cluster.mqtt_port(1), GATEWAY, &password, POINTS).await;
    let started = Instant::now();
    let mut takeover = None;
    for batch in 0..BATCHES {
        let data = gateway.data(batch, POINTS);
        gateway.publish_data(&data).await;
        if batch == KILL_AT {
            replicas[owner].process.kill9().await;
            takeover = Some(tokio::spawn(watch_takeover(
                replicas.iter().enumerate().filter(|(i, _)| *i != owner).map(|(_, r)| r.api.clone()).collect(),
                partition,
            )));
        }
        tokio::time::sleep_until((started + Duration::from_millis(batch * 10)).into()).await;
    }
    gateway.wait_acked(Duration::from_secs(120)).await;
    let took_over = takeover.expect("the owner was killed").await.expect("watcher");
    eprintln!("partition {partition} owned by a survivor {took_over:?} after the kill");
    assert!(took_over <= Duration::from_secs(15), "failover took {took_over:?}");

    let pool = postgres.pool().await;
    let expected = (BATCHES * u64::from(POINTS)) as i64;
    let stored = wait_for("every acknowledged reading stored", Duration::from_secs(120), || async {
        let stored: i64 = sqlx::query_scalar(GATEWAY_READINGS).fetch_one(&pool).await.ok()?;
        (stored >= expected).then_some(stored)
    })
    .await;
    // Redeliveries of what the dead replica had not acknowledged are harmless by key
    // (`(point_id, ts)`): counted both ways, nothing is missing and nothing is extra.
    let (rows, keys): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct (r.point_id, r.ts)) from readings r join points p on p.id = r.point_id
         where not p.derived",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!((stored, rows, keys), (expected, expected, expected), "0 lost, 0 duplicated");
}

/// How long after now one of `survivors` reports owning `partition` in `/health`.
async fn watch_takeover(survivors: Vec<chillcloud_tests::harness::Api>, partition: u16) -> Duration {
    let killed_at = Instant::now();
    wait_for("a surviving replica to own the partition", Duration::from_secs(30), || async {
        for api in &survivors {
            let health = api.get("/health").await?;
            if health["partitions"].as_array()?.iter().any(|p| p.as_u64() == Some(u64::from(partition))) {
                return Some(killed_at.elapsed());
            }
        }
        None
    })
    .await
}

/// R8: `kill -9` of the broker node the gateway is connected to, during ingest: the gateway moves
/// to another node, every reading it queued is stored once, and the node restarts and rejoins.
#[tokio::test(flavor = "multi_thread")]
async fn r8_broker_node_loss_loses_nothing() {
    let layout = Layout::start(2).await;
    let sim = Simulator::start(3, layout.dir.path()).await;
    let mut gateway = layout.gateway(&simulated_chillers(&sim, 3, POLLING, false));
    gateway.start();
    let before = gateway
        .wait_status("the gateway connected and sending", 1, |s| {
            s["connected"] == true && s["readings_queued"].as_u64() > Some(1_000)
        })
        .await;
    let lost_node = layout.cluster.node_of(before["broker"].as_str().expect("broker")).expect("a node's port");
    layout.cluster.kill9(lost_node);
    let moved = gateway
        .wait_status("the gateway on another node", 1, |s| {
            s["connected"] == true
                && layout.cluster.node_of(s["broker"].as_str().unwrap_or_default()) != Some(lost_node)
        })
        .await;
    eprintln!("R8: node {lost_node} killed; the gateway moved to {}", moved["broker"]);
    gateway
        .wait_status("more readings sent through the new node", 1, |s| {
            s["readings_queued"].as_u64() > moved["readings_queued"].as_u64().map(|n| n + 1_000)
        })
        .await;
    tokio::task::block_in_place(|| layout.cluster.restart(lost_node));

    let last = gateway.stop().await;
    assert_eq!(last["queue"]["unacked_batches"], 0, "a clean stop flushes what is in flight: {last}");
    assert_eq!(last["queue"]["dropped_readings"], 0);
    let queued = last["readings_queued"].as_i64().expect("count");
    let pool = layout.postgres.pool().await;
    let stored = wait_for("every queued reading stored", Duration::from_secs(120), || async {
        let stored: i64 = sqlx::query_scalar(GATEWAY_READINGS).fetch_one(&pool).await.ok()?;
        (stored >= queued).then_some(stored)
    })
    .await;
    assert_eq!(stored, queued, "0 lost, 0 duplicated");
}
