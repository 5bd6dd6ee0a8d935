//! Polling schedules against the simulator, counted by the requests it serves: points with
//! their own slower interval are read less often than the rest of their device.

use std::time::Duration;

use chillcloud_gateway::{config::Config, pollers, status::StatusBoard};
use chillcloud_tests::harness::{Simulator, bank_points, shared_temp_dir};

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
    // The profile every 100 ms (3 requests a poll); the 100-register bank every second.
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
    let bank_reads = requests_served(&sim).await - before - 3 * POLLS;
    // 25 polls 100 ms apart span about 2.4 s: the bank is read at 0, 1 and 2 s (more only if
    // the machine stretched the polls out).
    let most = 1 + span.ceil() as u64;
    assert!((3..=most).contains(&bank_reads), "the bank is read once a second: {bank_reads} reads in {span:.1} s");
}
