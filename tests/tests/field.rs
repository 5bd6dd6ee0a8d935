//! The controllers customers really have: a register the controller lacks, a site's corrected
//! map that extends a built-in profile, a device without a local/remote state, a warm loop
//! pulled down after a long stop, a controller gone silent, and what people read about them.
//! On the simulator, whose controllers can be made to differ (`/quirks`), and pymodbus.

use std::time::Duration;

use chillcloud_gateway::{
    command,
    config::Config,
    poll::{DevicePoller, Sample},
    pollers,
    status::StatusBoard,
};
use chillcloud_proto::{Command, CommandStatus, Quality};
use chillcloud_tests::harness::{Api, Plant, Simulator, shared_temp_dir, simulated_chillers, start_pymodbus, wait_for};
use serde_json::{Value, json};

async fn requests_served(sim: &Simulator) -> u64 {
    let stats: Value =
        reqwest::get(format!("{}/stats", sim.control_url)).await.expect("stats").json().await.expect("JSON");
    stats["modbus_requests"].as_u64().expect("count")
}

/// A gateway configuration of `devices` (with `extra` top-level settings), never connected to a
/// broker: for driving pollers directly.
fn offline_config(dir: &std::path::Path, extra: &str, devices: &str) -> Config {
    std::fs::write(dir.join("secret"), "unused").expect("secret");
    let text = format!(
        "gateway_id = \"gw\"\nstate_dir = \"{state}\"\n{extra}\n[mqtt]\nhost = \"localhost\"\npassword_file = \"{secret}\"\n{devices}",
        state = dir.join("state").display(),
        secret = dir.join("secret").display(),
    );
    Config::parse(&text, std::path::Path::new("gateway.toml")).unwrap_or_else(|e| panic!("valid config: {e}"))
}

/// The gateway's status report of `board`, as `chillcloud-gateway status` prints it.
fn report(board: &StatusBoard, dir: &std::path::Path) -> Value {
    let path = dir.join("status.json");
    board.write(&path).expect("write the status report");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read it")).expect("JSON")
}

/// The next poll of `poller`, its 100 ms interval after the last.
async fn next_poll(poller: &mut DevicePoller) -> Vec<Sample> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    poller.poll().await
}

#[tokio::test(flavor = "multi_thread")]
async fn field_a_missing_register_marks_one_point_bad_and_the_rest_polls() {
    let dir = shared_temp_dir();
    let sim = Simulator::start(1, dir.path()).await;
    // Polled every 100 ms (each poll below waits its interval), a snapshot every second.
    let settings = "poll_interval_ms = 100\nsnapshot_interval_secs = 1";
    let config = offline_config(dir.path(), "", &simulated_chillers(&sim, 1, settings, false));
    let board = StatusBoard::default();
    let mut poller = pollers(&config, &board).pop().expect("one device");
    let names: Vec<String> = poller.device().points.iter().map(|p| p.name.clone()).collect();

    // What a healthy controller costs per poll: the merged minimum.
    let before = requests_served(&sim).await;
    let first = next_poll(&mut poller).await;
    assert!(first.iter().all(|s| s.quality == Quality::Good), "{first:?}");
    let minimum = requests_served(&sim).await - before;

    // 30012 (protocol address 11, evap_refrig_temp) sits in the middle of the merged input read.
    sim.control(1, "quirks", json!({"missing_input_registers": [11]})).await;
    let refrig = names.iter().position(|n| n == "evap_refrig_temp").expect("point") as u32;
    let found = next_poll(&mut poller).await;
    let bad: Vec<&str> =
        found.iter().filter(|s| s.quality == Quality::Bad).map(|s| names[s.alias as usize].as_str()).collect();
    assert_eq!(bad, ["evap_refrig_temp"], "the poll that meets the refusal finds the one point");
    // The next snapshot: every other point read and good, the missing one sent as bad.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let snapshot = next_poll(&mut poller).await;
    assert_eq!(snapshot.len(), names.len(), "a snapshot sends every point");
    for sample in &snapshot {
        let expected = if sample.alias == refrig { Quality::Bad } else { Quality::Good };
        assert_eq!(sample.quality, expected, "{}", names[sample.alias as usize]);
    }
    let status = report(&board, dir.path());
    assert_eq!(status["devices"]["chiller-1"]["missing_points"], json!(["evap_refrig_temp"]), "{status}");
    assert_eq!(status["devices"]["chiller-1"]["healthy"], true, "the rest reads: {status}");

    // Back to merged reads: the hole costs one request more than the minimum, no more.
    let before = requests_served(&sim).await;
    for _ in 0..5 {
        next_poll(&mut poller).await;
    }
    let per_cycle = (requests_served(&sim).await - before) as f64 / 5.0;
    println!("requests per cycle: {minimum} healthy, {per_cycle} without register 30012");
    assert!(per_cycle <= (minimum + 1) as f64, "{per_cycle} requests a cycle, merged minimum {minimum}");
}

#[tokio::test(flavor = "multi_thread")]
async fn field_a_missing_register_on_pymodbus_marks_one_point_bad() {
    let dir = shared_temp_dir();
    let (_pymodbus, port) = start_pymodbus(dir.path()).await;
    // pymodbus holds 3 input registers: a read of the fourth is refused with exception 2.
    let devices = format!(
        "[[devices]]\nid = \"pymodbus\"\nhost = \"127.0.0.1\"\nport = {port}\npoints = [\n\
         {{ name = \"u32_centi\", kind = \"input\", address = 0, type = \"u32\", scale = 0.01 }},\n\
         {{ name = \"offset\", kind = \"input\", address = 2, type = \"i16\", scale = 0.1, offset = 40 }},\n\
         {{ name = \"absent\", kind = \"input\", address = 3 }},\n]\n"
    );
    let config = offline_config(dir.path(), "", &devices);
    let board = StatusBoard::default();
    let mut poller = pollers(&config, &board).pop().expect("one device");
    poller.poll().await;
    let samples = poller.poll().await;
    let quality: Vec<(u32, Quality)> = samples.iter().map(|s| (s.alias, s.quality)).collect();
    assert!(!quality.contains(&(0, Quality::Bad)) && !quality.contains(&(1, Quality::Bad)), "{quality:?}");
    let status = report(&board, dir.path());
    assert_eq!(status["devices"]["pymodbus"]["missing_points"], json!(["absent"]), "{status}");
}

/// A CH530 as met in the field: its status word's bits laid out differently, no flow-proven and
/// no local/remote bit. The site's profile extends the built-in one and corrects that.
const SITE_PROFILE: &str = r#"
name = "site-tracer"
description = "Tracer CH530 with the field's status word"
extends = "trane-ch530"
addressing_base = 1
remove_points = ["flow_proven", "local_control"]
remove_interlocks = [{ point = "chiller_enable", requires = "flow_proven" }]
without_local_mode = true

[[points]]
name = "diagnostic_active"
kind = "input"
address = 9
bit = 0

[[points]]
name = "running"
kind = "input"
address = 9
bit = 1
"#;

#[tokio::test]
async fn field_a_site_profile_extending_the_builtin_keeps_the_domain_pack() {
    const UNITS: u8 = 5;
    let dir = shared_temp_dir();
    let profile = dir.path().join("site-tracer.toml");
    std::fs::write(&profile, SITE_PROFILE).expect("write the site profile");
    let top_level = format!("profile_files = [\"{}\"]", profile.display());
    // 90 s on, 90 s off at 60x: a start every 3 s for the short-cycling unit.
    let plant = Plant::start_with(UNITS, 60.0, &top_level, |sim| {
        simulated_chillers(sim, UNITS, "poll_interval_ms = 500", false).replace("trane-ch530", "site-tracer")
    })
    .await;
    for unit in 1..=UNITS {
        plant.sim.control(unit, "quirks", json!({"status_word": "tracer"})).await;
    }
    let api = plant.api();
    let rules = api.get(&format!("/api/v1/units/{}/rules", plant.unit(1))).await.expect("rules");
    let keys: Vec<&str> = rules["rules"].as_array().expect("rules").iter().filter_map(|r| r["key"].as_str()).collect();
    for key in ["chw_supply_high", "trip", "sensor_stuck", "cond_approach_high", "short_cycling"] {
        assert!(keys.contains(&key), "the Trane pack applies to the site profile: {key} in {keys:?}");
    }
    let skipped = rules["skipped"].to_string();
    assert!(skipped.contains("low_flow") && skipped.contains("flow_proven"), "skipped with its reason: {skipped}");
    assert!(!keys.contains(&"low_flow"), "no rule reads a point the controller lacks");

    // A start: no false alarm (no flow-proven bit to read as lost flow).
    plant.sim.control(1, "enabled", json!({"enabled": false})).await;
    wait_for("unit 1 stopped", Duration::from_secs(20), || async {
        (api.latest("chiller-1", "running").await? == 0.0).then_some(())
    })
    .await;
    plant.sim.control(1, "enabled", json!({"enabled": true})).await;
    wait_for("unit 1 running", Duration::from_secs(20), || async {
        (api.latest("chiller-1", "running").await? == 1.0).then_some(())
    })
    .await;
    let quiet = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < quiet {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(plant.alarms(Some(1)).await.is_empty(), "{:#?}", plant.alarms(Some(1)).await);

    // The pack still raises on its faults, read through the remapped bits.
    plant.set_rule(2, "chw_supply_high", json!({"on_delay_s": 5})).await;
    plant.set_rule(3, "sensor_stuck", json!({"for_s": 15})).await;
    plant.set_rule(4, "cond_approach_high", json!({"on_delay_s": 5})).await;
    plant.sim.control(1, "scenario", json!({"scenario": "trip", "code": 47})).await;
    plant.sim.control(2, "scenario", json!({"scenario": "cannot_hold"})).await;
    plant.sim.control(3, "scenario", json!({"scenario": "sensor_stuck"})).await;
    plant.sim.control(4, "scenario", json!({"scenario": "condenser_fouling"})).await;
    plant.sim.control(5, "scenario", json!({"scenario": "short_cycling"})).await;
    let trip = plant.expect_alarms(1, &[("trip", 1)]).await;
    assert!(trip[0]["message"].as_str().expect("message").contains("Evaporator water flow lost"), "{trip:?}");
    let supply = plant.expect_alarms(2, &[("chw_supply_high", 1)]).await;
    let message = supply[0]["message"].as_str().expect("message");
    assert!(message.contains("supply_deviation") && message.contains(" K"), "a value with its unit: {message}");
    plant.expect_alarms(3, &[("sensor_stuck", 3)]).await;
    plant.expect_alarms(4, &[("cond_approach_high", 3)]).await;
    plant.expect_alarms(5, &[("short_cycling", 3)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn field_without_local_mode_on_a_device_allows_remote_writes() {
    let dir = shared_temp_dir();
    let sim = Simulator::start(1, dir.path()).await;
    // The profile names a local-mode point; this controller has none (it reads 1 here, as an
    // unrelated bit would), and the device says so.
    sim.control(1, "local", json!({"local": true})).await;
    let config = offline_config(dir.path(), "", &simulated_chillers(&sim, 1, "without_local_mode = true", false));
    assert_eq!(config.devices[0].local_mode, None, "the device's setting wins over the profile's");
    let mut poller = pollers(&config, &StatusBoard::default()).pop().expect("one device");
    let write = command::plan(poller.device(), "chw_setpoint", 8.0).expect("a valid write");
    let order = Command {
        id: "c-1".into(),
        device: "chiller-1".into(),
        point: "chw_setpoint".into(),
        value: 8.0,
        expires_at_ms: chrono::Utc::now().timestamp_millis() + 30_000,
        requester: "field-test".into(),
    };
    let result = chillcloud_gateway::command::execute(&mut poller, &order, &write).await;
    assert_eq!(result.status, CommandStatus::Done as i32, "{result:?}");
    assert_eq!(result.read_back, Some(8.0));
}

#[tokio::test]
async fn field_no_false_alarm_when_a_unit_pulls_down_after_a_long_stop() {
    const SPEED: f64 = 20.0;
    let plant = Plant::start(1, SPEED, "poll_interval_ms = 500").await;
    // The shipped rule, on the simulator's clock: 600 s settle, a 300 s trend in K a minute and
    // a 60 s delay are SPEED times shorter in real time, and a K a minute SPEED times more.
    plant.set_rule(1, "derived:supply_trend", json!({"window_s": 300.0 / SPEED})).await;
    let when = format!("supply_deviation > 2 && supply_trend > {}", -0.1 * SPEED);
    plant
        .set_rule(1, "chw_supply_high", json!({"when": when, "settle_s": 600.0 / SPEED, "on_delay_s": 60.0 / SPEED}))
        .await;
    // Stopped 10 minutes (simulated) while the loop warms, then started.
    plant.sim.control(1, "enabled", json!({"enabled": false})).await;
    tokio::time::sleep(Duration::from_secs_f64(600.0 / SPEED)).await;
    let started = chrono::Utc::now().timestamp_millis();
    plant.sim.control(1, "enabled", json!({"enabled": true})).await;
    // The pull-down is real: the supply is more than 2 K above setpoint for longer than the
    // rule's delay after the start...
    let warm = plant.onset(1, "supply_deviation", "> 2", started).await;
    let settled = plant.onset(1, "supply_deviation", "< 1", started).await;
    let pull_down_s = (settled - started) as f64 / 1000.0 * SPEED;
    println!("pull-down: {pull_down_s:.0} simulated s above setpoint (first warm reading {warm})");
    assert!(pull_down_s > 180.0, "a pull-down that would have tripped the rule: {pull_down_s} s");
    // ...and no alarm comes of it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(plant.alarms(Some(1)).await.is_empty(), "{:#?}", plant.alarms(Some(1)).await);
    // A real cannot-hold still raises.
    plant.sim.control(1, "scenario", json!({"scenario": "cannot_hold"})).await;
    plant.expect_alarms(1, &[("chw_supply_high", 1)]).await;
}

/// A unit's status at a glance, as the fleet page shows it.
async fn unit_status(api: &Api, unit: i64) -> Option<String> {
    let units = api.get("/api/v1/units").await?;
    units.as_array()?.iter().find(|u| u["id"] == unit).and_then(|u| u["status"].as_str()).map(str::to_owned)
}

#[tokio::test]
async fn field_a_silent_controller_is_not_shown_running() {
    let plant = Plant::start(2, 1.0, "poll_interval_ms = 500\ntimeout_ms = 300\nretries = 0").await;
    let api = plant.api();
    let status = |unit: i64| unit_status(&api, unit);
    assert_eq!(status(plant.unit(1)).await.as_deref(), Some("running"));
    plant.sim.control(1, "scenario", json!({"scenario": "offline"})).await;
    // Long before its device_offline alarm (5 minutes), the fleet page stops saying running.
    let shown = wait_for("the silent unit shown offline", Duration::from_secs(30), || async {
        status(plant.unit(1)).await.filter(|s| s == "offline")
    })
    .await;
    assert_eq!(shown, "offline");
    assert_eq!(status(plant.unit(2)).await.as_deref(), Some("running"), "the other unit still runs");
}
