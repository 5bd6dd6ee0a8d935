//! Several server replicas on a three-node RabbitMQ cluster: partitions owned by one replica at a
//! time, moved when it dies, with nothing lost or stored twice.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use chillcloud_tests::{
    cluster::{Layout, RabbitCluster, Replica},
    harness::{
        FakeGateway, GATEWAY_READINGS, Simulator, TestPostgres, add_gateway, shared_temp_dir, simulated_chillers,
        wait_for,
    },
    providers::FakeProvider,
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
    let mut replicas = Vec::new();
    for name in ["replica-1", "replica-2", "replica-3"] {
        replicas.push(Replica::start(name, &postgres, &cluster, &dir).await);
    }
    cluster.wait_for_gateway_user(GATEWAY).await;
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
    // A unit's live stream, from a replica that does not own it, shows what the owner commits.
    let viewer = &replicas[(owner + 1) % 3].api;
    let unit_id = wait_for("the unit registered", Duration::from_secs(30), || async {
        viewer.get("/api/v1/units").await?.as_array()?.first()?["id"].as_i64()
    })
    .await;
    let stream = tokio::spawn(first_live_reading(viewer.clone(), unit_id));
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
    let reading = stream.await.expect("stream task");
    assert!(reading.contains("point_id"), "a reading event from another replica's commit: {reading}");
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
    assert_stored_once(&pool, queued, &layout).await;
}

/// Gateways' RabbitMQ users come from the database, with the Mosquitto ACL's rights: one
/// provisioned while the replicas run connects with the password `add-gateway` printed, cannot
/// publish as another gateway, and a new password from `add-gateway` replaces the old one.
#[tokio::test(flavor = "multi_thread")]
async fn s1_cluster_gateway_users_come_from_add_gateway_with_their_own_topics_only() {
    let layout = Layout::start(1).await;
    let late = "gw-late";
    let (password, _) = add_gateway(late, &["--database-url", &layout.postgres.url()]).await;
    layout.cluster.wait_for_gateway_user(late).await;
    let (port_1, port_2) = (layout.cluster.mqtt_port(1), layout.cluster.mqtt_port(2));
    assert_eq!(connack(port_2, late, "not-the-password").await, Err("refused".into()), "a wrong password");

    // The late gateway publishes as gw-cluster (66.6); gw-cluster then publishes its own 12.3.
    let mut victim = FakeGateway::connect(port_1, GATEWAY, &layout.password, 1).await;
    let mut forger = FakeGateway::connect(port_2, late, &password, 1).await;
    forger.wait_acked(Duration::from_secs(30)).await;
    let now = chrono::Utc::now().timestamp_millis();
    let forged = victim.data_at(now, &[(0, 66.6)]);
    forger.publish_as(GATEWAY, chillcloud_proto::MessageKind::Data, prost::Message::encode_to_vec(&forged)).await;
    let genuine = victim.data_at(now + 1_000, &[(0, 12.3)]);
    victim.publish_data(&genuine).await;
    let pool = layout.postgres.pool().await;
    wait_for("gw-cluster's genuine reading", Duration::from_secs(30), || async {
        values_of(&pool, GATEWAY).await.contains(&12.3).then_some(())
    })
    .await;
    assert_eq!(values_of(&pool, GATEWAY).await, [12.3], "only gw-cluster's own reading is stored for it");
    drop(forger);

    // A new password replaces the old one on every node.
    let (rotated, _) = add_gateway(late, &["--database-url", &layout.postgres.url()]).await;
    wait_for("the old password refused", Duration::from_secs(30), || async {
        (connack(port_2, late, &password).await == Err("refused".into())).then_some(())
    })
    .await;
    assert_eq!(connack(layout.cluster.mqtt_port(3), late, &rotated).await, Ok(()), "the new password");
}

/// Waits until the gateway's `queued` readings are stored, and asserts none is stored twice; on
/// a timeout, names the stretches of time where a point has no reading for over 1.5 s (the
/// gateway sends every point at least once a second), so a loss can be placed.
async fn assert_stored_once(pool: &sqlx::PgPool, queued: i64, layout: &Layout) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let stored = loop {
        let stored: i64 = sqlx::query_scalar(GATEWAY_READINGS).fetch_one(pool).await.expect("count readings");
        if stored >= queued || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if stored < queued {
        let gaps: Vec<(String, String, chrono::DateTime<chrono::Utc>, f64)> = sqlx::query_as(
            "select u.device_key, p.name, prev, extract(epoch from ts - prev)::float8 from (
                 select point_id, ts, lag(ts) over (partition by point_id order by ts) prev
                 from readings) r
             join points p on p.id = r.point_id join units u on u.id = p.unit_id
             where not p.derived and ts - prev > interval '1.5 s' order by prev limit 20",
        )
        .fetch_all(pool)
        .await
        .expect("gaps");
        let (pending, dead): (i64, i64) =
            sqlx::query_as("select (select count(*) from pending_data), (select count(*) from dead_letters)")
                .fetch_one(pool)
                .await
                .expect("held and refused messages");
        let partition = chillcloud_server::partitions::of(GATEWAY);
        let queue = layout.cluster.queue(&chillcloud_server::amqp::queue(partition)).await;
        // Readings the replicas dropped on purpose, since each last started.
        let mut dropped = Vec::new();
        for replica in &layout.replicas {
            let url = format!("{}/metrics", replica.api.base);
            let text = reqwest::Client::new().get(url).bearer_auth(&replica.api.token).send().await.ok();
            let text = match text {
                Some(answer) => answer.text().await.unwrap_or_default(),
                None => String::new(),
            };
            dropped.extend(
                text.lines()
                    .filter(|l| {
                        l.starts_with("chillcloud_readings_refused_total")
                            || l.starts_with("chillcloud_readings_unknown_alias_total")
                    })
                    .map(str::to_owned),
            );
        }
        panic!(
            "{stored} of {queued} readings stored after 120 s; {pending} messages held for a birth, {dead} refused; \
             readings dropped by the replicas: {dropped:?}; the partition's queue: {queue}; \
             gaps over 1.5 s (device, point, from, s; a poll that failed under load leaves one too): {gaps:?}"
        );
    }
    assert_eq!(stored, queued, "0 lost, 0 duplicated");
}

/// Connects to the MQTT port `port` as `user` and tells whether the broker accepted.
async fn connack(port: u16, user: &str, password: &str) -> Result<(), String> {
    let mut options = rumqttc::MqttOptions::new(format!("{user}-probe"), "127.0.0.1", port);
    options.set_credentials(user, password);
    let (_client, mut events) = rumqttc::AsyncClient::new(options, 10);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(rumqttc::ConnectionError::ConnectionRefused(_))) => return Err("refused".into()),
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("no answer in 10 s".into()),
        }
    }
}

/// The values of point `p0` stored for `gateway`, in time order.
async fn values_of(pool: &sqlx::PgPool, gateway: &str) -> Vec<f64> {
    sqlx::query_scalar(
        "select r.value from readings r join points p on p.id = r.point_id join units u on u.id = p.unit_id
         where u.gateway_id = $1 and p.name = 'p0' and r.value is not null order by r.ts",
    )
    .bind(gateway)
    .fetch_all(pool)
    .await
    .expect("readings")
}

/// R7: `kill -9` of the replica owning a gateway sending over 10,000 points a second, just after a
/// command was sent and a trip began: nothing lost or stored twice, the trip's alarm raised once,
/// each engineer paged once, and the command ends done or unanswered, written at most once.
#[tokio::test(flavor = "multi_thread")]
async fn r7_replica_kill9_moves_its_partitions_and_loses_nothing() {
    let config_dir = shared_temp_dir();
    let (twilio, paging) = twilio_paging(&config_dir).await;
    let mut layout = Layout::start_with(3, &["--paging-config", &paging.to_string_lossy()]).await;
    // 10 chillers of 121 points every 100 ms: 12,100 points a second.
    let sim = Simulator::start(10, layout.dir.path()).await;
    let mut gateway = layout.gateway(&simulated_chillers(&sim, 10, POLLING, true));
    gateway.start();
    let owner = wait_for("a replica owning the gateway", Duration::from_secs(30), || layout.owner()).await;
    // Everything the test asks goes through a replica that survives.
    let api = layout.replicas[(owner + 1) % 3].api.clone();
    let unit_id = wait_for("chiller-1 online with its setpoint", Duration::from_secs(60), || async {
        let units = api.get("/api/v1/units").await?;
        let unit = units.as_array()?.iter().find(|u| u["device_key"] == "chiller-1" && u["gateway_online"] == true)?;
        let id = unit["id"].as_i64()?;
        let detail = api.get(&format!("/api/v1/units/{id}")).await?;
        let setpoint = detail["points"].as_array()?.iter().find(|p| p["name"] == "chw_setpoint")?.clone();
        (setpoint["writable"] == true && setpoint["value"].is_number()).then_some(id)
    })
    .await;
    let phones = ["+15550000001", "+15550000002"];
    for phone in phones {
        api.add_service_engineer(layout.gateway_id, phone).await;
    }
    let policy = json!({"grades": {"1": {"levels": [{"after_s": 0, "notify": ["service"]}], "repeat_s": 3600}}});
    let path = format!("/api/v1/gateways/{}/paging", layout.gateway_id);
    let (status, body) = api.send(Method::PUT, &path, json!({"policy": policy})).await;
    assert_eq!(status, 200, "{body}");

    let command = json!({"point": "chw_setpoint", "value": 8.5});
    let (status, sent) = api.send(Method::POST, &format!("/api/v1/units/{unit_id}/commands"), command).await;
    assert_eq!(status, 202, "{sent}");
    let command_id = sent["id"].as_str().expect("a command id").to_owned();
    sim.control(1, "scenario", json!({"scenario": "trip", "code": 47})).await;
    layout.replicas[owner].process.kill9().await;

    let trips = |alarms: Value| -> Vec<Value> {
        let alarms = alarms.as_array().cloned().unwrap_or_default();
        alarms.into_iter().filter(|a| a["unit_id"].as_i64() == Some(unit_id) && a["rule"] == "trip").collect()
    };
    let trip_id = wait_for("the trip's alarm", Duration::from_secs(60), || async {
        trips(api.get("/api/v1/alarms?state=all&limit=1000").await?).first()?["id"].as_i64()
    })
    .await;
    let trip_pages = || pages_for(&twilio, trip_id);
    wait_for("each engineer paged for the trip", Duration::from_secs(60), || async {
        (trip_pages().await.len() >= 2).then_some(())
    })
    .await;
    let finished = wait_for("the command's end", Duration::from_secs(120), || async {
        let record = api.get(&format!("/api/v1/commands/{command_id}")).await?;
        (record["status"] != "sent").then_some(record)
    })
    .await;

    let last = gateway.stop().await;
    assert_eq!(last["queue"]["dropped_readings"], 0);
    let queued = last["readings_queued"].as_i64().expect("count");
    let pool = layout.postgres.pool().await;
    assert_stored_once(&pool, queued, &layout).await;
    let trips = trips(api.get("/api/v1/alarms?state=all&limit=1000").await.expect("alarms"));
    assert_eq!(trips.len(), 1, "the trip raised once: {trips:?}");
    assert_eq!(trips[0]["occurrences"].as_i64().unwrap_or(1), 1, "and not re-raised: {trips:?}");
    // By now (the gateway stopped, every reading stored) any second page would have gone out.
    assert_eq!(trip_pages().await, phones, "each engineer paged exactly once for the trip");
    let status = finished["status"].as_str().unwrap_or_default();
    eprintln!(
        "R7: {queued} readings stored once; trip alarm {trip_id} raised once; pages {phones:?}; command {status}"
    );
    assert!(matches!(status, "done" | "unanswered"), "the command ended {finished}");
    let stats: Value =
        reqwest::get(format!("{}/stats", sim.control_url)).await.expect("simulator").json().await.expect("JSON");
    assert!(stats["modbus_writes"].as_u64().expect("writes") <= 1, "the command written at most once: {stats}");
}

/// R9: every replica, then every broker node, restarted one after another during ingest and an
/// escalating page: every queued reading stored once, and each level of the escalation paged
/// once, none missed or doubled.
#[tokio::test(flavor = "multi_thread")]
async fn r9_rolling_restart_of_everything_loses_nothing() {
    let config_dir = shared_temp_dir();
    let (twilio, paging) = twilio_paging(&config_dir).await;
    let paging_args = ["--paging-config".to_owned(), paging.to_string_lossy().into_owned()];
    let paging_args: Vec<&str> = paging_args.iter().map(String::as_str).collect();
    let mut layout = Layout::start_with(3, &paging_args).await;
    let sim = Simulator::start(3, layout.dir.path()).await;
    let mut gateway = layout.gateway(&simulated_chillers(&sim, 3, POLLING, false));
    gateway.start();
    let api = layout.replicas[0].api.clone();
    let unit_id = wait_for("chiller-1 online", Duration::from_secs(60), || async {
        let units = api.get("/api/v1/units").await?;
        let unit = units.as_array()?.iter().find(|u| u["device_key"] == "chiller-1" && u["gateway_online"] == true)?;
        unit["id"].as_i64()
    })
    .await;
    let (engineer, manager) = ("+15550000011", "+15550000012");
    api.add_service_engineer(layout.gateway_id, engineer).await;
    let (status, person) =
        api.send(Method::POST, "/api/v1/people", json!({"name": "manager", "phone": manager, "language": "en"})).await;
    assert_eq!(status, 200, "{person}");
    let contact = json!({"person_id": person["id"], "role": "manager"});
    let path = format!("/api/v1/gateways/{}/contacts", layout.gateway_id);
    assert_eq!(api.send(Method::POST, &path, contact).await.0, 200);
    // The engineer at once, the manager 40 s later, while everything restarts.
    let policy = json!({"grades": {"1": {"levels": [
        {"after_s": 0, "notify": ["service"]}, {"after_s": 40, "notify": ["manager"]}
    ], "repeat_s": 3600}}});
    let path = format!("/api/v1/gateways/{}/paging", layout.gateway_id);
    let (status, body) = api.send(Method::PUT, &path, json!({"policy": policy})).await;
    assert_eq!(status, 200, "{body}");
    sim.control(1, "scenario", json!({"scenario": "trip", "code": 47})).await;
    let trip_id = wait_for("the trip's alarm", Duration::from_secs(60), || async {
        let alarms = api.get("/api/v1/alarms?state=all&limit=1000").await?;
        let trip = alarms.as_array()?.iter().find(|a| a["unit_id"].as_i64() == Some(unit_id) && a["rule"] == "trip")?;
        trip["id"].as_i64()
    })
    .await;
    let pages = || pages_for(&twilio, trip_id);
    wait_for("the engineer paged", Duration::from_secs(30), || async { (pages().await == [engineer]).then_some(()) })
        .await;

    let started = Instant::now();
    for i in 0..layout.replicas.len() {
        let name = format!("replica-{}", i + 1);
        layout.replicas[i].process.terminate(Duration::from_secs(30)).await.expect("a replica stops on SIGTERM");
        layout.replicas[i] =
            Replica::start_with(&name, &layout.postgres, &layout.cluster, &layout.dir, &paging_args).await;
    }
    for node in 1..=3 {
        layout.cluster.stop_node(node).await;
        tokio::task::block_in_place(|| layout.cluster.restart(node));
    }
    eprintln!("R9: 3 replicas and 3 broker nodes restarted in {:.1} s", started.elapsed().as_secs_f64());
    wait_for("the manager paged", Duration::from_secs(60), || async { (pages().await.len() >= 2).then_some(()) }).await;

    let last = gateway.stop().await;
    assert_eq!(last["queue"]["dropped_readings"], 0);
    let queued = last["readings_queued"].as_i64().expect("count");
    let pool = layout.postgres.pool().await;
    assert_stored_once(&pool, queued, &layout).await;
    assert_eq!(pages().await, [engineer, manager], "each level of the escalation paged once");
}

/// The first `reading` event of unit `unit_id`'s live stream on `api`'s replica.
async fn first_live_reading(api: chillcloud_tests::harness::Api, unit_id: i64) -> String {
    let mut response = reqwest::Client::new()
        .get(format!("{}/api/v1/units/{unit_id}/live", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("live stream");
    assert!(response.status().is_success(), "live stream: {}", response.status());
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = response.chunk().await.expect("stream chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(at) = text.find("event: reading") {
                return text[at..].to_owned();
            }
        }
        panic!("the live stream ended without a reading: {text}");
    })
    .await;
    read.unwrap_or_else(|_| panic!("no live reading within 60 s: {text}"))
}

/// A Twilio fake and a paging configuration in `dir` that pages through it.
async fn twilio_paging(dir: &chillcloud_tests::harness::TestDir) -> (FakeProvider, std::path::PathBuf) {
    const TWILIO: (&str, &str) = ("AC0123456789abcdef0123456789abcdef", "twilio-test-token");
    let twilio = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    std::fs::write(dir.path().join("twilio.secret"), TWILIO.1).expect("write secret");
    let paging = dir.path().join("paging.toml");
    let providers = format!(
        "min_gap_s = 0\n[[providers]]\nkind = \"twilio\"\nendpoint = \"{}\"\naccount_sid = \"{}\"\nauth_token_file = \"{}\"\nfrom = \"+15005550006\"\n",
        twilio.url(),
        TWILIO.0,
        dir.path().join("twilio.secret").display()
    );
    std::fs::write(&paging, providers).expect("write paging config");
    (twilio, paging)
}

/// Whom `fake` has paged about alarm `alarm_id` (outbox keys `alarm-<id>-…` are Twilio's
/// idempotency tokens), sorted.
async fn pages_for(fake: &FakeProvider, alarm_id: i64) -> Vec<String> {
    let key = format!("alarm-{alarm_id}-");
    let delivered = fake.wait_delivered(0, Duration::ZERO).await;
    let mut to: Vec<String> = delivered
        .iter()
        .filter(|d| d.idempotency_key.as_deref().is_some_and(|k| k.starts_with(&key)))
        .map(|d| d.recipient.clone())
        .collect();
    to.sort_unstable();
    to
}
