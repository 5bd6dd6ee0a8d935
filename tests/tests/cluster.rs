//! Several server replicas on a three-node RabbitMQ cluster: partitions owned by one replica at a
//! time, moved when it dies, with nothing lost or stored twice.

use std::time::{Duration, Instant};

use chillcloud_tests::{
    cluster::{RabbitCluster, Replica},
    harness::{FakeGateway, GATEWAY_READINGS, TestPostgres, add_gateway, shared_temp_dir, wait_for},
};

const GATEWAY: &str = "gw-cluster";

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
