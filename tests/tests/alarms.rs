//! Fault scenarios end to end: simulated chillers, the real gateway, Mosquitto, the server and
//! PostgreSQL. Each scenario makes one simulated unit misbehave and checks that exactly the
//! expected alarms are raised, with their grades, within the rule's delay plus 5 s of the
//! condition showing in the stored readings.
//!
//! Delays that are minutes in the shipped rules are shortened per unit through the rules API,
//! which is itself under test here; the simulator runs faster than real time so its physics
//! reach the fault within seconds.

use std::time::Duration;

use chillcloud_tests::harness::{Plant, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn raised_ms(alarm: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(alarm["raised_at"].as_str().expect("raised_at"))
        .expect("time")
        .timestamp_millis()
}

/// Asserts the alarm of `rule` was raised no later than `delay_s` + 5 s after `onset_ms`.
fn assert_raised_in_time(alarms: &[Value], rule: &str, onset_ms: i64, delay_s: i64) {
    let alarm = alarms.iter().find(|a| a["rule"] == rule).expect("the alarm");
    let late_ms = raised_ms(alarm) - onset_ms;
    println!("{rule}: raised {late_ms} ms after the condition (delay {delay_s} s)");
    assert!(late_ms <= (delay_s + 5) * 1000, "{rule} raised {late_ms} ms after its condition");
    assert!(late_ms >= delay_s * 1000 - 1000, "{rule} raised before its delay: {late_ms} ms");
}

#[tokio::test]
async fn scenario_cannot_hold_the_chilled_water_setpoint() {
    let plant = Plant::start(2, 20.0, "poll_interval_ms = 500").await;
    // The on-delay alone: the pull-down allowance (the supply's trend, in real time) is what
    // field_no_false_alarm_when_a_unit_pulls_down_after_a_long_stop tests at this speed.
    plant.set_rule(1, "chw_supply_high", json!({"on_delay_s": 10, "when": "supply_deviation > 2"})).await;
    let start = now_ms();
    plant.sim.control(1, "scenario", json!({"scenario": "cannot_hold"})).await;
    let onset = plant.onset(1, "supply_deviation", "> 2", start).await;
    let alarms = plant.expect_alarms(1, &[("chw_supply_high", 1)]).await;
    assert_raised_in_time(&alarms, "chw_supply_high", onset, 10);
    assert!(alarms[0]["message"].as_str().expect("message").contains("supply_deviation"), "{alarms:?}");
    assert!(plant.alarms(Some(2)).await.is_empty(), "the healthy unit raised alarms");
}

#[tokio::test]
async fn scenario_trip_with_a_diagnostic_code() {
    let plant = Plant::start(1, 20.0, "poll_interval_ms = 500").await;
    let start = now_ms();
    plant.sim.control(1, "scenario", json!({"scenario": "trip", "code": 47})).await;
    let onset = plant.onset(1, "diagnostic_code", "= 47", start).await;
    let alarms = plant.expect_alarms(1, &[("trip", 1)]).await;
    assert_raised_in_time(&alarms, "trip", onset, 0);
    assert!(alarms[0]["message"].as_str().expect("message").contains("Evaporator water flow lost"), "{alarms:?}");
    // Back to normal: the trip clears; unacknowledged, it stays open as cleared.
    plant.sim.control(1, "scenario", json!({"scenario": "normal"})).await;
    wait_for("the trip to clear", Duration::from_secs(30), || async {
        (plant.alarms(Some(1)).await[0]["state"] == "cleared").then_some(())
    })
    .await;
}

#[tokio::test]
async fn scenario_freeze_risk() {
    let plant = Plant::start(1, 20.0, "poll_interval_ms = 500").await;
    let start = now_ms();
    plant.sim.control(1, "scenario", json!({"scenario": "freeze_risk"})).await;
    let onset = plant.onset(1, "evap_refrig_temp", "< 0", start).await;
    let leaving = plant.onset(1, "evap_leaving_temp", "< 3", start).await;
    let alarms = plant.expect_alarms(1, &[("freeze_risk", 2)]).await;
    assert_raised_in_time(&alarms, "freeze_risk", onset.min(leaving), 10);
}

#[tokio::test]
async fn scenario_high_condenser_pressure() {
    let plant = Plant::start(1, 20.0, "poll_interval_ms = 500").await;
    plant.set_rule(1, "high_condenser_pressure", json!({"on_delay_s": 5})).await;
    let start = now_ms();
    plant.sim.control(1, "scenario", json!({"scenario": "high_head_pressure"})).await;
    let onset = plant.onset(1, "cond_refrig_pressure", "> 1150", start).await;
    let alarms = plant.expect_alarms(1, &[("high_condenser_pressure", 2)]).await;
    assert_raised_in_time(&alarms, "high_condenser_pressure", onset, 5);
}

#[tokio::test]
async fn scenario_condenser_fouling() {
    let plant = Plant::start(1, 20.0, "poll_interval_ms = 500").await;
    plant.set_rule(1, "cond_approach_high", json!({"on_delay_s": 5})).await;
    let start = now_ms();
    plant.sim.control(1, "scenario", json!({"scenario": "condenser_fouling"})).await;
    let onset = plant.onset(1, "cond_approach", "> 5", start).await;
    let alarms = plant.expect_alarms(1, &[("cond_approach_high", 3)]).await;
    assert_raised_in_time(&alarms, "cond_approach_high", onset, 5);
}

#[tokio::test]
async fn scenario_evaporator_fouling() {
    let plant = Plant::start(1, 20.0, "poll_interval_ms = 500").await;
    plant.set_rule(1, "evap_approach_high", json!({"on_delay_s": 5})).await;
    // The fouled evaporator's refrigerant ends below 0 °C: freeze risk follows, as it would.
    let start = now_ms();
    plant.sim.control(1, "scenario", json!({"scenario": "evaporator_fouling"})).await;
    let onset = plant.onset(1, "evap_approach", "> 5", start).await;
    let alarms = plant.expect_alarms(1, &[("evap_approach_high", 3), ("freeze_risk", 2)]).await;
    assert_raised_in_time(&alarms, "evap_approach_high", onset, 5);
}

#[tokio::test]
async fn scenario_low_flow() {
    let plant = Plant::start(1, 20.0, "poll_interval_ms = 500").await;
    plant.set_rule(1, "high_delta_t", json!({"on_delay_s": 5})).await;
    let start = now_ms();
    plant.sim.control(1, "scenario", json!({"scenario": "low_flow"})).await;
    let onset = plant.onset(1, "flow_proven", "= 0", start).await;
    let alarms = plant.expect_alarms(1, &[("low_flow", 1), ("high_delta_t", 3)]).await;
    assert_raised_in_time(&alarms, "low_flow", onset, 5);
}

#[tokio::test]
async fn scenario_short_cycling() {
    // 90 s on, 90 s off at 60x: a start every 3 s.
    let plant = Plant::start(1, 60.0, "poll_interval_ms = 500").await;
    let start = now_ms();
    plant.sim.control(1, "scenario", json!({"scenario": "short_cycling"})).await;
    let onset = plant.onset(1, "starts_per_hour", "> 6", start).await;
    let alarms = plant.expect_alarms(1, &[("short_cycling", 3)]).await;
    assert_raised_in_time(&alarms, "short_cycling", onset, 0);
}

#[tokio::test]
async fn scenario_sensor_open_circuit() {
    let plant = Plant::start(1, 20.0, "poll_interval_ms = 500").await;
    let start = now_ms();
    plant.sim.control(1, "scenario", json!({"scenario": "sensor_open"})).await;
    let onset = plant.onset(1, "evap_leaving_temp", "< -20", start).await;
    let alarms = plant.expect_alarms(1, &[("sensor_out_of_range", 3)]).await;
    assert_raised_in_time(&alarms, "sensor_out_of_range", onset, 5);
}

#[tokio::test]
async fn scenario_sensor_stuck() {
    let plant = Plant::start(1, 20.0, "poll_interval_ms = 500").await;
    plant.set_rule(1, "sensor_stuck", json!({"for_s": 15})).await;
    let start = now_ms();
    plant.sim.control(1, "scenario", json!({"scenario": "sensor_stuck"})).await;
    let alarms = plant.expect_alarms(1, &[("sensor_stuck", 3)]).await;
    let late_ms = raised_ms(&alarms[0]) - start;
    assert!((14_000..=20_000).contains(&late_ms), "stuck raised {late_ms} ms after the sensor froze");
}

#[tokio::test]
async fn scenario_one_unit_offline_behind_a_live_gateway() {
    let plant = Plant::start(2, 1.0, "poll_interval_ms = 500").await;
    plant.set_rule(2, "device_offline", json!({"levels": [[4, 3], [3600, 2]]})).await;
    let start = now_ms();
    plant.sim.control(2, "scenario", json!({"scenario": "offline"})).await;
    let alarms = plant.expect_alarms(2, &[("device_offline", 3)]).await;
    let late_ms = raised_ms(&alarms[0]) - start;
    // The gateway's timeout and retries come first (a few seconds), then the 4 s level.
    assert!(late_ms <= 4_000 + 5_000 + 5_000, "device alarm {late_ms} ms after the unit stopped answering");
    assert!(plant.alarms(Some(1)).await.is_empty(), "the answering unit raised alarms");
    assert!(plant.alarms(None).await.is_empty(), "a site alarm for one unit's silence");
}

#[tokio::test]
async fn scenario_gateway_outage_raises_one_site_alarm_and_no_unit_flood() {
    let mut plant = Plant::start(3, 1.0, "poll_interval_ms = 500").await;
    let api = plant.api();
    let site = format!("/api/v1/gateways/{}/rules", plant.stack.gateway_id);
    let (status, body) =
        api.send(Method::PUT, &format!("{site}/gateway_offline"), json!({"levels": [[3, 3], [3600, 2]]})).await;
    assert_eq!(status, 200, "{body}");
    // The site's units would alarm 3 s into any silence of their own.
    let (status, body) = api.send(Method::PUT, &format!("{site}/device_offline"), json!({"levels": [[3, 3]]})).await;
    assert_eq!(status, 200, "{body}");
    let process = plant.gateway.process.as_mut().expect("running");
    process.kill9().await;
    let start = now_ms();
    // The broker publishes the gateway's last will once it notices (keep-alive 1.5x).
    let site_alarms = wait_for("one site alarm", Duration::from_secs(90), || async {
        let alarms = plant.alarms(None).await;
        (!alarms.is_empty()).then_some(alarms)
    })
    .await;
    assert_eq!(site_alarms.len(), 1, "{site_alarms:#?}");
    assert_eq!((site_alarms[0]["rule"].as_str(), site_alarms[0]["grade"].as_i64()), (Some("gateway_offline"), Some(3)));
    println!("site alarm {} ms after the gateway was killed", raised_ms(&site_alarms[0]) - start);
    // Well past the units' 3 s: none of them alarms while their gateway is the cause.
    let quiet = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < quiet {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for unit in 1..=3 {
        assert!(plant.alarms(Some(unit)).await.is_empty(), "chiller-{unit} alarmed during the gateway outage");
    }
    // Back: the site alarm clears, and the units' silence during the outage is not theirs.
    plant.gateway.start();
    wait_for("the site alarm to clear", Duration::from_secs(30), || async {
        (plant.alarms(None).await[0]["state"] == "cleared").then_some(())
    })
    .await;
    let settle = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for unit in 1..=3 {
        let alarms = plant.alarms(Some(unit)).await;
        let log = plant.gateway.process.as_ref().map(|p| p.log()).unwrap_or_default();
        assert!(alarms.is_empty(), "chiller-{unit} alarmed after the gateway came back: {alarms:#?}\n{log}");
    }
}

#[tokio::test]
async fn a_fault_moment_capture_covers_its_window_with_fast_readings_after_the_trigger() {
    let plant = Plant::start(1, 1.0, "poll_interval_ms = 1000\nsnapshot_interval_secs = 2").await;
    plant.set_rule(1, "capture", json!({"before_s": 8, "after_s": 6, "boost_interval_ms": 100})).await;
    plant.set_rule(1, "sensor_out_of_range", json!({"on_delay_s": 0})).await;
    // Some history before the trigger.
    let since = now_ms();
    wait_for("8 s of readings", Duration::from_secs(30), || async { (now_ms() - since > 8_000).then_some(()) }).await;
    plant.sim.control(1, "scenario", json!({"scenario": "sensor_open"})).await;
    let alarms = plant.expect_alarms(1, &[("sensor_out_of_range", 3)]).await;
    let id = alarms[0]["id"].as_i64().expect("id");
    let raised = raised_ms(&alarms[0]);
    let detail = wait_for("the capture", Duration::from_secs(30), || async {
        plant.api().get(&format!("/api/v1/alarms/{id}")).await.filter(|d| !d["capture"].is_null())
    })
    .await;
    let series = detail["capture"].as_array().expect("series");
    let readings = |point: &str| -> Vec<(i64, Option<f64>)> {
        let series = series.iter().find(|s| s["point"] == point).unwrap_or_else(|| panic!("{point} captured"));
        series["readings"]
            .as_array()
            .expect("readings")
            .iter()
            .map(|r| (r[0].as_i64().expect("ms"), r[1].as_f64()))
            .collect()
    };
    let time = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(detail[field].as_str().expect("window")).expect("time").timestamp_millis()
    };
    assert_eq!((raised - time("capture_from"), time("capture_to") - raised), (8_000, 6_000), "the configured window");
    let all: Vec<i64> = series
        .iter()
        .flat_map(|s| s["readings"].as_array().expect("readings").iter().map(|r| r[0].as_i64().expect("ms")))
        .collect();
    assert!(all.iter().all(|t| (raised - 8_000..=raised + 6_000).contains(t)), "readings outside the window");
    assert!(all.iter().any(|t| *t < raised - 4_000), "nothing from well before the trigger");
    assert!(all.iter().any(|t| *t > raised + 5_000), "nothing from the end of the window");
    let setpoint = readings("active_setpoint");
    // A constant point is sent only by snapshot normally; boosted, at every 100 ms poll.
    let after = setpoint.iter().filter(|(t, _)| *t > raised).count();
    assert!(after >= 20, "only {after} readings of active_setpoint in the 6 s after the trigger");
    let before = setpoint.iter().filter(|(t, _)| *t < raised).count();
    assert!(before <= 5, "{before} readings of a constant point in the 8 s before the trigger, snapshots every 2 s");
    assert!(
        readings("evap_leaving_temp").iter().any(|(_, v)| *v == Some(-50.0)),
        "the open sensor's value is in the capture"
    );
    assert!(series.iter().any(|s| s["derived"] == true), "derived values are captured too");
}

#[tokio::test]
async fn alarms_are_acknowledged_shelved_and_their_history_kept() {
    let plant = Plant::start(1, 20.0, "poll_interval_ms = 500").await;
    let api = plant.api();
    // A bad rule is refused with the reason.
    let (status, body) = api
        .send(Method::PUT, &format!("/api/v1/units/{}/rules/chw_supply_high", plant.unit(1)), json!({"on_delay_s": -1}))
        .await;
    assert_eq!((status, body["error"].as_str().is_some_and(|e| e.contains("on_delay_s"))), (400, true), "{body}");
    // A site tunes a profile rule with a partial patch.
    let site = format!("/api/v1/gateways/{}/rules", plant.stack.gateway_id);
    let (status, body) =
        api.send(Method::PUT, &format!("{site}/high_condenser_pressure"), json!({"on_delay_s": 120})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.send(Method::PUT, &format!("{site}/not_a_rule"), json!({"on_delay_s": 120})).await;
    assert_eq!(status, 400, "a new rule must be whole: {body}");
    plant.sim.control(1, "scenario", json!({"scenario": "sensor_open"})).await;
    let alarms = plant.expect_alarms(1, &[("sensor_out_of_range", 3)]).await;
    let id = alarms[0]["id"].as_i64().expect("id");
    let (status, shelved) = api
        .send(Method::POST, &format!("/api/v1/alarms/{id}/shelve"), json!({"minutes": 30, "comment": "known"}))
        .await;
    assert_eq!(status, 200, "{shelved}");
    assert!(shelved["shelved_until"].is_string());
    let (status, acked) =
        api.send(Method::POST, &format!("/api/v1/alarms/{id}/acknowledge"), json!({"comment": "on my way"})).await;
    assert_eq!((status, acked["state"].as_str()), (200, Some("acknowledged")), "{acked}");
    let (status, _) = api.send(Method::POST, &format!("/api/v1/alarms/{id}/acknowledge"), json!({})).await;
    assert_eq!(status, 409, "a second acknowledgement conflicts");
    // Cleared after acknowledgement: closed. The next fault is a new episode.
    plant.sim.control(1, "scenario", json!({"scenario": "normal"})).await;
    let detail = wait_for("the alarm to close", Duration::from_secs(60), || async {
        api.get(&format!("/api/v1/alarms/{id}")).await.filter(|d| d["state"] == "closed")
    })
    .await;
    let kinds: Vec<&str> =
        detail["events"].as_array().expect("events").iter().map(|e| e["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds, ["raised", "shelved", "acknowledged", "cleared"]);
    let acknowledged = &detail["events"][2];
    assert_eq!(
        (acknowledged["actor"].as_str(), acknowledged["comment"].as_str()),
        (Some("operator"), Some("on my way"))
    );
    let stream = api.get("/api/v1/alarms/events?after=0").await.expect("event stream");
    assert_eq!(stream.as_array().expect("events").len(), 4);
    assert_eq!(api.get_raw("/api/v1/alarms?state=bogus").await.0, 400);
    assert_eq!(api.get_raw("/api/v1/alarms/999999").await.0, 404);
}

#[tokio::test]
async fn a_restarted_server_keeps_its_alarms_and_clears_them_when_the_fault_ends() {
    let mut plant = Plant::start(2, 20.0, "poll_interval_ms = 500").await;
    plant.sim.control(1, "scenario", json!({"scenario": "sensor_open"})).await;
    let alarms = plant.expect_alarms(1, &[("sensor_out_of_range", 3)]).await;
    let id = alarms[0]["id"].clone();
    plant.stack.server.as_mut().expect("server").kill9().await;
    plant.stack.start_server().await;
    // Still one active alarm, the same one, and no storm of site or unit alarms from the restart.
    let alarms = plant.expect_alarms(1, &[("sensor_out_of_range", 3)]).await;
    assert_eq!((&alarms[0]["id"], alarms[0]["state"].as_str()), (&id, Some("active")));
    assert!(plant.alarms(None).await.is_empty(), "site alarm after a server restart");
    assert!(plant.alarms(Some(2)).await.is_empty(), "unit alarm after a server restart");
    // The restarted engine clears what the previous one raised.
    plant.sim.control(1, "scenario", json!({"scenario": "normal"})).await;
    wait_for("the alarm raised before the restart to clear", Duration::from_secs(60), || async {
        let alarms = plant.alarms(Some(1)).await;
        (alarms.len() == 1 && alarms[0]["state"] == "cleared").then_some(())
    })
    .await;
}
