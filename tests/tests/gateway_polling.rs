//! Polling schedules against the simulator, counted by the requests it serves: points with
//! their own slower interval are read less often than the rest of their device; and poll
//! boosts from the server, counted in the database.

use std::{collections::BTreeMap, time::Duration};

use chillcloud_gateway::{config::Config, pollers, status::StatusBoard};
use chillcloud_proto::{MessageKind, PollBoost, Topic};
use chillcloud_tests::harness::{
    GATEWAY_READINGS, Gateway, Simulator, Stack, bank_points, shared_temp_dir, simulated_chillers, wait_for,
};
use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

async fn requests_served(sim: &Simulator) -> u64 {
    let stats: serde_json::Value =
        reqwest::get(format!("{}/stats", sim.control_url)).await.expect("stats").json().await.expect("JSON");
    stats["modbus_requests"].as_u64().expect("count")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_point_group_with_its_own_interval_is_read_less_often() {
    let dir = shared_temp_dir();
    let sim = Simulator::start(1, dir.path()).await;
    std::fs::write(dir.path().join("secret"), "unused").expect("secret");
    // The profile every 100 ms (4 requests a poll: coils, holding, the listed input registers and the site-convention diagnostic code); the 100-register bank every second.
    let bank = bank_points("devices.points", "poll_interval_ms = 1000\n");
    let text = format!(
        "gateway_id = \"gw\"\nstate_dir = \"{state}\"\n[mqtt]\nhost = \"localhost\"\npassword_file = \"{secret}\"\n[[devices]]\nid = \"chiller-1\"\nprofile = \"trane-ch530\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 100\n{bank}",
        state = dir.path().join("state").display(),
        secret = dir.path().join("secret").display(),
        port = sim.modbus.port(),
    );
    let config = Config::parse(&text, std::path::Path::new("gateway.toml")).expect("valid config");
    let mut poller = pollers(&config, &StatusBoard::default()).pop().expect("one device");

    let before = requests_served(&sim).await;
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    const POLLS: u64 = 25;
    let started = std::time::Instant::now();
    for _ in 0..POLLS {
        ticks.tick().await;
        let samples = poller.poll().await;
        assert!(samples.iter().all(|s| s.quality == chillcloud_proto::Quality::Good));
    }
    let span = started.elapsed().as_secs_f64();
    let bank_reads = requests_served(&sim).await - before - 4 * POLLS;
    // 25 polls 100 ms apart span about 2.4 s: the bank is read at 0, 1 and 2 s (more only if
    // the machine stretched the polls out).
    let most = 1 + span.ceil() as u64;
    assert!((3..=most).contains(&bank_reads), "the bank is read once a second: {bank_reads} reads in {span:.1} s");
}

/// An MQTT client with the server's credentials (the broker's ACL lets it publish boosts), and
/// the broker's acknowledgements of its publishes.
async fn server_client(stack: &Stack) -> (AsyncClient, mpsc::UnboundedReceiver<()>) {
    let mut options = MqttOptions::new("boost-test", "127.0.0.1", stack.broker.address().port());
    options.set_credentials(chillcloud_server::embedded::broker::SERVER_USERNAME, &stack.broker.server_password);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let (acks_tx, acks) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    if acks_tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    eprintln!("boost client: {error}");
                    return;
                }
            }
        }
    });
    (client, acks)
}

/// Publishes `payload` on the gateway's boost topic at QoS 1 and waits for the broker to take it.
async fn publish_boost(stack: &Stack, client: &AsyncClient, acks: &mut mpsc::UnboundedReceiver<()>, payload: Vec<u8>) {
    let gateway = chillcloud_proto::GatewayId::new(stack.gateway_id).expect("gateway id");
    let topic = Topic::new(gateway, MessageKind::PollBoost).to_string();
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.expect("queue the boost");
    tokio::time::timeout(Duration::from_secs(10), acks.recv())
        .await
        .expect("the broker acknowledges the boost")
        .expect("the boost client is connected");
}

/// Readings stored for each point of each unit, by (device, point), taken in `[from_ms, to_ms)`.
async fn readings_per_point(pool: &sqlx::PgPool, from_ms: i64, to_ms: i64) -> BTreeMap<(String, String), i64> {
    let time = |ms| chrono::DateTime::from_timestamp_millis(ms).expect("time");
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select u.device_key, p.name, count(r.ts) from points p join units u on u.id = p.unit_id \
         left join readings r on r.point_id = p.id and r.ts >= $1 and r.ts < $2 where not p.derived group by 1, 2",
    )
    .bind(time(from_ms))
    .bind(time(to_ms))
    .fetch_all(pool)
    .await
    .expect("count readings");
    rows.into_iter().map(|(device, point, count)| ((device, point), count)).collect()
}

/// The fewest and the most readings any point of `device` has in `counts`.
fn range_of(counts: &BTreeMap<(String, String), i64>, device: &str) -> (i64, i64) {
    let of_device: Vec<i64> = counts.iter().filter(|((d, _), _)| d == device).map(|(_, &n)| n).collect();
    assert!(!of_device.is_empty(), "{device} has points: {counts:?}");
    (of_device.iter().copied().min().unwrap_or(0), of_device.iter().copied().max().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poll_boost_reads_every_point_of_its_device_faster_until_it_ends() {
    let stack = Stack::start().await;
    let sim = Simulator::start(2, stack.dir.path()).await;
    // Every second, report by exception (deadband 0, a snapshot a minute).
    let mut gateway = Gateway::new(&stack, "", &simulated_chillers(&sim, 2, "poll_interval_ms = 1000", false));
    gateway.start();
    gateway
        .wait_status("the gateway connected, both chillers healthy", 1, |s| {
            s["connected"] == true && ["chiller-1", "chiller-2"].iter().all(|d| s["devices"][d]["healthy"] == true)
        })
        .await;
    let pool = stack.postgres.pool().await;
    wait_for("both chillers' points registered", Duration::from_secs(30), || async {
        let units: i64 =
            sqlx::query_scalar("select count(distinct p.unit_id) from points p").fetch_one(&pool).await.ok()?;
        (units == 2).then_some(())
    })
    .await;
    let (client, mut acks) = server_client(&stack).await;

    // Refused, counted, and the gateway carries on: a device it does not have, and garbage.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let unknown = PollBoost { device: "chiller-9".into(), interval_ms: 100, until_ms: now_ms + 3000 };
    publish_boost(&stack, &client, &mut acks, unknown.encode_to_vec()).await;
    publish_boost(&stack, &client, &mut acks, vec![0xff, 0xff]).await;
    gateway
        .wait_status("both boosts refused", 1, |s| {
            s["boosts_received"].as_u64() == Some(2) && s["boosts_refused"].as_u64() == Some(2)
        })
        .await;

    // chiller-1 every 100 ms for 3 s.
    let start_ms = chrono::Utc::now().timestamp_millis();
    let until_ms = start_ms + 3000;
    let boost = PollBoost { device: "chiller-1".into(), interval_ms: 100, until_ms };
    publish_boost(&stack, &client, &mut acks, boost.encode_to_vec()).await;
    let boosted = gateway
        .wait_status("chiller-1 boosted", 1, |s| s["devices"]["chiller-1"]["boost_until_ms"].as_i64() == Some(until_ms))
        .await;
    assert!(boosted["devices"]["chiller-2"]["boost_until_ms"].is_null(), "only chiller-1 is boosted: {boosted}");
    assert_eq!((boosted["boosts_received"].as_u64(), boosted["boosts_refused"].as_u64()), (Some(3), Some(2)));
    let after = gateway
        .wait_status("the boost over, and 4 s more", 1, |s| {
            s["devices"]["chiller-1"]["boost_until_ms"].is_null() && s["time_ms"].as_i64() >= Some(until_ms + 4000)
        })
        .await;
    assert_eq!(after["connected"], true, "{after}");
    let queued = after["readings_queued"].as_i64().expect("count");
    wait_for("the database to hold every reading queued", Duration::from_secs(30), || async {
        let stored: i64 = sqlx::query_scalar(GATEWAY_READINGS).fetch_one(&pool).await.ok()?;
        (stored >= queued).then_some(())
    })
    .await;

    // During the boost (its first and last half second left out): every point of chiller-1 at
    // least 5 times a second; chiller-2 at most once a second, as before.
    let during = readings_per_point(&pool, start_ms + 500, until_ms - 500).await;
    let (fewest, most) = range_of(&during, "chiller-1");
    eprintln!(
        "boost: chiller-1 {fewest} to {most} readings a point in 2 s; chiller-2 {:?}",
        range_of(&during, "chiller-2")
    );
    assert!(fewest >= 10, "every point of chiller-1 at 5/s or more while boosted: {during:?}");
    assert!(range_of(&during, "chiller-2").1 <= 3, "chiller-2 unchanged: {during:?}");

    // After it: report by exception at the configured interval again, for both.
    let normal = readings_per_point(&pool, until_ms + 1500, until_ms + 3500).await;
    for device in ["chiller-1", "chiller-2"] {
        assert!(range_of(&normal, device).1 <= 3, "{device} back to at most once a second: {normal:?}");
    }
    // A constant point goes back to waiting for the next snapshot.
    assert!(normal[&("chiller-1".to_owned(), "active_setpoint".to_owned())] <= 1, "{normal:?}");

    let last = gateway.stop().await;
    assert_eq!((last["boosts_received"].as_u64(), last["boosts_refused"].as_u64()), (Some(3), Some(2)));
}
