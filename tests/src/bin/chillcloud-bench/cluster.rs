//! P9 (the clustered layout's ingest against the one-box layout's) and P10 (failover time), on
//! the layout of `deploy/cluster`: three RabbitMQ nodes and three server replicas.

use std::time::{Duration, Instant};

use chillcloud_tests::{
    cluster::{Layout, Replica},
    harness::{FakeGateway, Simulator, Stack, add_gateway, simulated_chillers, wait_for},
};
use sqlx::PgPool;

use super::verdict;

/// Trials of P10.
const P10_TRIALS: usize = 5;

/// P10: from `kill -9` of the replica owning a gateway's partition to the first rule evaluation
/// for one of its units on the new owner (the first derived value, which only the rule engine
/// computes, for a reading taken after the kill), over 5 trials.
pub async fn p10() -> anyhow::Result<bool> {
    let mut layout = Layout::start(3).await;
    let sim = Simulator::start(2, layout.dir.path()).await;
    let polling = "poll_interval_ms = 200\ntimeout_ms = 500\nsnapshot_interval_secs = 1";
    let mut gateway = layout.gateway(&simulated_chillers(&sim, 2, polling, false));
    gateway.start();
    let pool = layout.postgres.pool().await;
    wait_for("derived values computed", Duration::from_secs(60), || async {
        (derived_after(&pool, chrono::DateTime::UNIX_EPOCH).await? > 0).then_some(())
    })
    .await;
    let mut trials = Vec::new();
    for trial in 1..=P10_TRIALS {
        let owner = wait_for("a replica owning the gateway", Duration::from_secs(30), || layout.owner()).await;
        let killed_wall = chrono::Utc::now();
        let killed = Instant::now();
        layout.replicas[owner].process.kill9().await;
        // Readings taken after the kill can only be evaluated by another replica.
        let took = wait_for("a rule evaluation on the new owner", Duration::from_secs(60), || async {
            (derived_after(&pool, killed_wall).await? > 0).then_some(killed.elapsed())
        })
        .await;
        println!(
            "P10 trial {trial}: replica-{} killed; first evaluation on the new owner after {:.2} s",
            owner + 1,
            took.as_secs_f64()
        );
        trials.push(took.as_secs_f64());
        // Back to three replicas (the same data directory, so the same replica id).
        let name = format!("replica-{}", owner + 1);
        layout.replicas[owner] = Replica::start(&name, &layout.postgres, &layout.cluster, &layout.dir).await;
    }
    gateway.stop().await;
    let median = super::median(trials.clone());
    let pass = median <= 15.0;
    println!("P10 trials {trials:.2?} s, median {median:.2} s (lease 5 s, renewed every 1 s)");
    println!("P10 median={median:.2} target<=15 {}", verdict(pass));
    Ok(pass)
}

/// Derived readings (rule engine output) for readings taken after `after`.
async fn derived_after(pool: &PgPool, after: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    sqlx::query_scalar(
        "select count(*) from readings r join points p on p.id = r.point_id where p.derived and r.ts > $1",
    )
    .bind(after)
    .fetch_one(pool)
    .await
    .ok()
}

/// Gateways sharing P9's load, so that it spreads over partitions and replicas.
const P9_GATEWAYS: usize = 8;
/// Readings per message, messages a second in all (P2's design load) and for how long.
const P9_READINGS: u32 = 50;
const P9_RATE: u64 = 2_000;
const P9_SECONDS: u64 = 10;

/// P9: sustained ingest at the design load, the clustered layout against the one-box layout.
pub async fn p9() -> anyhow::Result<bool> {
    let names: Vec<String> = (1..P9_GATEWAYS).map(|i| format!("gw-p9-{i}")).collect();
    let more: Vec<&str> = names.iter().map(String::as_str).collect();

    let one_box = Stack::start_with_sites(&more, &[]).await;
    let mut gateways = vec![
        FakeGateway::connect(one_box.broker.address().port(), one_box.gateway_id, &one_box.password, P9_READINGS).await,
    ];
    for (id, password) in &one_box.more_gateways {
        gateways.push(FakeGateway::connect(one_box.broker.address().port(), id, password, P9_READINGS).await);
    }
    let pool = one_box.postgres.pool().await;
    let one_box_rate = sustained(&mut gateways, &pool).await;
    println!("P9 one box (Mosquitto, 1 server): {one_box_rate:.0} messages/s stored");
    drop(gateways);
    drop(one_box);

    let layout = Layout::start(3).await;
    let mut gateways =
        vec![FakeGateway::connect(layout.cluster.mqtt_port(1), layout.gateway_id, &layout.password, P9_READINGS).await];
    for (i, id) in names.iter().enumerate() {
        let (password, _) = add_gateway(id, &["--database-url", &layout.postgres.url()]).await;
        layout.cluster.wait_for_gateway_user(id).await;
        let node = 1 + (i as u16 + 1) % 3;
        gateways.push(FakeGateway::connect(layout.cluster.mqtt_port(node), id, &password, P9_READINGS).await);
    }
    let pool = layout.postgres.pool().await;
    let cluster_rate = sustained(&mut gateways, &pool).await;
    println!("P9 cluster (3 RabbitMQ nodes, 3 replicas): {cluster_rate:.0} messages/s stored");
    let ratio = cluster_rate / one_box_rate;
    let pass = ratio >= 0.8;
    println!(
        "P9 design load {P9_RATE} messages/s of {P9_READINGS} readings from {P9_GATEWAYS} gateways for {P9_SECONDS} s"
    );
    println!("P9 ratio={ratio:.2} target>=0.8 {}", verdict(pass));
    Ok(pass)
}

/// Publishes the design load for `P9_SECONDS` from `gateways` in turn, 100 ticks a second, and
/// returns messages stored per second, from the first publish to the last reading stored.
async fn sustained(gateways: &mut [FakeGateway], pool: &PgPool) -> f64 {
    let count = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from readings").fetch_one(pool).await.unwrap_or_default()
    };
    let before = count().await;
    let messages = P9_RATE * P9_SECONDS;
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let per_tick = P9_RATE / 100;
    let mut batch = 1;
    for _ in 0..messages / per_tick {
        ticks.tick().await;
        for _ in 0..per_tick {
            let gateway = &mut gateways[(batch % gateways.len() as u64) as usize];
            let data = gateway.data(batch, P9_READINGS);
            gateway.publish_data(&data).await;
            batch += 1;
        }
    }
    let target = before + (messages * u64::from(P9_READINGS)) as i64;
    wait_for("P9 readings stored", Duration::from_secs(600), || async { (count().await >= target).then_some(()) })
        .await;
    messages as f64 / started.elapsed().as_secs_f64()
}
