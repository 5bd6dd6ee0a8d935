//! Remote control end to end: the API, the server's checks, MQTT through the real broker, the
//! real gateway's own checks, Modbus writes to the chiller simulator and to pymodbus, read-back,
//! and the audit trail. The simulator counts every Modbus write it receives, so "nothing was
//! written" is checked where the write would land.

use std::time::Duration;

use chillcloud_proto::{Command, CommandResult, CommandStatus, GatewayId, MessageKind, Topic};
use chillcloud_server::embedded::broker::SERVER_USERNAME;
use chillcloud_tests::harness::{Api, Gateway, Simulator, Stack, simulated_chillers, start_pymodbus, wait_for};
use prost::Message as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A stack with the simulator's chiller 1 polled by the real gateway, and the unit's id once
/// its writable points and their bounds have arrived.
async fn plant() -> (Stack, Simulator, Gateway, i64) {
    let stack = Stack::start().await;
    let sim = Simulator::start(1, stack.dir.path()).await;
    let mut gateway = Gateway::new(&stack, "", &simulated_chillers(&sim, 1, "poll_interval_ms = 500", false));
    gateway.start();
    let unit_id = wait_for_unit(&stack.api(), "chw_setpoint").await;
    (stack, sim, gateway, unit_id)
}

/// Waits until the unit `chiller-1` is online with `point` writable, bounded and read.
async fn wait_for_unit(api: &Api, point: &str) -> i64 {
    wait_for("the unit with its writable points", Duration::from_secs(60), || async {
        let units = api.get("/api/v1/units").await?;
        let unit = units.as_array()?.iter().find(|u| u["device_key"] == "chiller-1" && u["gateway_online"] == true)?;
        let id = unit["id"].as_i64()?;
        let detail = api.get(&format!("/api/v1/units/{id}")).await?;
        let p = detail["points"].as_array()?.iter().find(|p| p["name"] == point)?.clone();
        (p["writable"] == true && p["min"].is_number() && p["value"].is_number()).then_some(id)
    })
    .await
}

/// Asks for `value` on `point` and returns the answer's status and body.
async fn command(api: &Api, unit_id: i64, point: &str, value: f64) -> (u16, Value) {
    api.send(Method::POST, &format!("/api/v1/units/{unit_id}/commands"), json!({"point": point, "value": value})).await
}

/// Sends a command that must be accepted and waits for its final record.
async fn finished(api: &Api, unit_id: i64, point: &str, value: f64) -> Value {
    let (status, sent) = command(api, unit_id, point, value).await;
    assert_eq!(status, 202, "{point} = {value}: {sent}");
    assert_eq!(sent["status"], "sent");
    let id = sent["id"].as_str().expect("an id").to_owned();
    wait_for("the command's result", Duration::from_secs(30), || async {
        let record = api.get(&format!("/api/v1/commands/{id}")).await?;
        (record["status"] != "sent").then_some(record)
    })
    .await
}

async fn simulator_unit(sim: &Simulator) -> Value {
    reqwest::get(format!("{}/units/1", sim.control_url)).await.expect("simulator").json().await.expect("JSON")
}

async fn modbus_writes(sim: &Simulator) -> u64 {
    let stats: Value =
        reqwest::get(format!("{}/stats", sim.control_url)).await.expect("simulator").json().await.expect("JSON");
    stats["modbus_writes"].as_u64().expect("a write count")
}

#[tokio::test(flavor = "multi_thread")]
async fn command_start_stop_and_setpoint_round_trip_through_the_broker_and_change_the_simulator() {
    let (stack, sim, _gateway, unit_id) = plant().await;
    let api = stack.api();
    assert_eq!(simulator_unit(&sim).await["setpoint"], 7.0);

    let setpoint = finished(&api, unit_id, "chw_setpoint", 8.5).await;
    assert_eq!(setpoint["status"], "done", "{setpoint}");
    assert_eq!(setpoint["read_back"], 8.5);
    assert_eq!(simulator_unit(&sim).await["setpoint"], 8.5, "the controller's setpoint changed");

    let stop = finished(&api, unit_id, "chiller_enable", 0.0).await;
    assert_eq!((stop["status"].as_str(), stop["read_back"].as_f64()), (Some("done"), Some(0.0)), "{stop}");
    assert_eq!(simulator_unit(&sim).await["enabled"], false);
    // The controller stops the compressor, and the cloud sees it.
    wait_for("the unit to stop", Duration::from_secs(30), || async {
        (api.latest("chiller-1", "running").await == Some(0.0)).then_some(())
    })
    .await;

    let start = finished(&api, unit_id, "chiller_enable", 1.0).await;
    assert_eq!(start["status"], "done", "{start}");
    assert_eq!(simulator_unit(&sim).await["enabled"], true);
    wait_for("the unit to run again", Duration::from_secs(30), || async {
        (api.latest("chiller-1", "running").await == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(modbus_writes(&sim).await, 3, "one Modbus write per command");

    // The audit trail: who, what, when, from which value to which, and the result.
    let trail = api.get(&format!("/api/v1/units/{unit_id}/commands")).await.expect("the unit's commands");
    let rows: Vec<(String, f64, Option<f64>, String, String)> = trail
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| {
            assert!(c["requested_at"].is_string() && c["finished_at"].is_string(), "{c}");
            (
                c["point"].as_str().unwrap_or_default().to_owned(),
                c["value"].as_f64().unwrap_or(f64::NAN),
                c["previous_value"].as_f64(),
                c["requested_by"].as_str().unwrap_or_default().to_owned(),
                c["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let row = |point: &str, value: f64, previous: f64| {
        (point.to_owned(), value, Some(previous), "operator".to_owned(), "done".to_owned())
    };
    assert_eq!(
        rows,
        [row("chiller_enable", 1.0, 0.0), row("chiller_enable", 0.0, 1.0), row("chw_setpoint", 8.5, 7.0)],
        "newest first"
    );
}

/// A bearer-token client for a new user with `role` in `organisation`: invited, signed in, and
/// a token made in their session.
async fn user_api(stack: &Stack, login: &str, role: &str, organisation: i64) -> Api {
    let user = json!({"login": login, "name": login, "role": role, "organisation_id": organisation});
    let (status, invited) = stack.api().send(Method::POST, "/api/v1/users", user).await;
    assert_eq!(status, 200, "{invited}");
    let url = invited["invitation_url"].as_str().expect("invitation url");
    let (_, secret) = url.split_once("/invite/").expect("an invitation link");
    let base = format!("http://{}", stack.http);
    let client = reqwest::Client::new();
    let password = "a long enough password";
    let taken = client.post(format!("{base}/invite/{secret}")).form(&[("password", password)]).send().await;
    assert_eq!(taken.expect("invitation").status(), 200);
    let signed_in = client
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .expect("sign in");
    let cookie =
        signed_in.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
    let session: Value = signed_in.json().await.expect("session");
    let token: Value = client
        .post(format!("{base}/api/v1/tokens"))
        .header("cookie", cookie)
        .header("x-csrf-token", session["csrf_token"].as_str().expect("csrf"))
        .json(&json!({"name": "test"}))
        .send()
        .await
        .expect("make a token")
        .json()
        .await
        .expect("token");
    Api::new(stack.http, token["token"].as_str().expect("a token"))
}

#[tokio::test(flavor = "multi_thread")]
async fn command_refused_out_of_bounds_unauthorised_in_local_control_or_by_an_interlock_writes_nothing() {
    let (stack, sim, mut gateway, unit_id) = plant().await;
    let api = stack.api();
    let before = simulator_unit(&sim).await;

    // The server refuses what the unit's map does not allow, and records the refusal.
    for (point, value, says) in [
        ("chw_setpoint", 2.0, "outside the allowed 4.4 to 15.6 °C"),
        ("chw_setpoint", 20.0, "outside the allowed"),
        ("chw_setpoint", 8.55, "multiple of 0.1"),
        ("chiller_enable", 2.0, "outside the allowed 0 to 1"),
        ("evap_leaving_temp", 7.0, "read only"),
    ] {
        let (status, body) = command(&api, unit_id, point, value).await;
        assert_eq!(status, 409, "{point} = {value}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains(says)), "{point} = {value}: {body}");
    }
    let (status, body) = command(&api, unit_id, "no_such_point", 1.0).await;
    assert_eq!(status, 400, "{body}");
    let trail = api.get(&format!("/api/v1/units/{unit_id}/commands")).await.expect("commands");
    let refused = trail.as_array().expect("a list").iter().filter(|c| c["status"] == "refused").count();
    assert_eq!(refused, 5, "every refusal is in the audit trail: {trail}");

    // Roles and organisations: sales may look but not operate; another customer sees nothing.
    let (_, service) =
        api.send(Method::POST, "/api/v1/organisations", json!({"name": "Service", "kind": "service"})).await;
    let sales = user_api(&stack, "sales@service.example", "sales", service["id"].as_i64().expect("id")).await;
    assert!(sales.get(&format!("/api/v1/units/{unit_id}")).await.is_some(), "sales read the unit");
    assert_eq!(command(&sales, unit_id, "chw_setpoint", 8.0).await.0, 403);
    let (_, other) =
        api.send(Method::POST, "/api/v1/organisations", json!({"name": "Other Foods", "kind": "customer"})).await;
    let stranger = user_api(&stack, "owner@other.example", "owner", other["id"].as_i64().expect("id")).await;
    assert_eq!(command(&stranger, unit_id, "chw_setpoint", 8.0).await.0, 404);
    assert_eq!(stranger.get_raw(&format!("/api/v1/units/{unit_id}/commands")).await.0, 404);

    // The gateway refuses in local control, read fresh from the controller.
    sim.control(1, "local", json!({"local": true})).await;
    let local = finished(&api, unit_id, "chw_setpoint", 9.0).await;
    assert_eq!(local["status"], "refused", "{local}");
    assert!(local["message"].as_str().is_some_and(|m| m.contains("local control")), "{local}");
    sim.control(1, "local", json!({"local": false})).await;

    // Interlocks: no start without proven flow, nor while a trip is active.
    sim.control(1, "scenario", json!({"scenario": "low_flow"})).await;
    let no_flow = finished(&api, unit_id, "chiller_enable", 1.0).await;
    assert_eq!(no_flow["status"], "refused", "{no_flow}");
    assert!(no_flow["message"].as_str().is_some_and(|m| m.contains("flow is not proven")), "{no_flow}");
    sim.control(1, "scenario", json!({"scenario": "trip", "code": 47})).await;
    let tripped = finished(&api, unit_id, "chiller_enable", 1.0).await;
    assert_eq!(tripped["status"], "refused", "{tripped}");
    assert!(tripped["message"].as_str().is_some_and(|m| m.contains("trip")), "{tripped}");

    // An offline gateway gets nothing.
    gateway.stop().await;
    wait_for("the gateway to be offline", Duration::from_secs(30), || async {
        let units = api.get("/api/v1/units").await?;
        (units.as_array()?.iter().any(|u| u["id"] == unit_id && u["gateway_online"] == false)).then_some(())
    })
    .await;
    let (status, body) = command(&api, unit_id, "chw_setpoint", 8.0).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("offline")), "{body}");

    assert_eq!(modbus_writes(&sim).await, 0, "no Modbus write reached the controller");
    let after = simulator_unit(&sim).await;
    assert_eq!((&after["setpoint"], &after["enabled"]), (&before["setpoint"], &before["enabled"]));
}

/// An MQTT client with the server's credentials, seeing the gateway's command results.
async fn observer(stack: &Stack) -> (rumqttc::AsyncClient, mpsc::UnboundedReceiver<CommandResult>) {
    let mut options = rumqttc::MqttOptions::new("test-observer", "127.0.0.1", stack.broker.address().port());
    options.set_credentials(SERVER_USERNAME, &stack.broker.server_password);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    let (results_tx, results) = mpsc::unbounded_channel();
    let (subscribed_tx, mut subscribed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(message))) => {
                    if let Ok(result) = CommandResult::decode(message.payload) {
                        let _ = results_tx.send(result);
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let gateway = GatewayId::new(stack.gateway_id).expect("gateway id");
    let topic = Topic::new(gateway, MessageKind::CommandResult).to_string();
    client.subscribe(topic, rumqttc::QoS::AtLeastOnce).await.expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), subscribed.recv()).await.expect("subscribed in time");
    (client, results)
}

async fn publish_command(client: &rumqttc::AsyncClient, stack: &Stack, command: &Command) {
    let gateway = GatewayId::new(stack.gateway_id).expect("gateway id");
    let topic = Topic::new(gateway, MessageKind::Command).to_string();
    client.publish(topic, rumqttc::QoS::AtLeastOnce, false, command.encode_to_vec()).await.expect("publish");
}

async fn next_result(results: &mut mpsc::UnboundedReceiver<CommandResult>, id: &str) -> CommandResult {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let result = results.recv().await.expect("observer running");
            if result.id == id {
                return result;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no result for {id}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn command_redelivered_executes_once_even_across_a_restart_and_late_or_unchecked_ones_are_refused() {
    let (stack, sim, mut gateway, unit_id) = plant().await;
    let api = stack.api();
    let (client, mut results) = observer(&stack).await;

    // The server's command, then a copy of it as a QoS 1 redelivery would bring it.
    let done = finished(&api, unit_id, "chw_setpoint", 9.5).await;
    assert_eq!(done["status"], "done", "{done}");
    let id = done["id"].as_str().expect("id").to_owned();
    let expires_at = chrono::DateTime::parse_from_rfc3339(done["expires_at"].as_str().expect("expiry")).expect("time");
    let copy = Command {
        id: id.clone(),
        device: "chiller-1".into(),
        point: "chw_setpoint".into(),
        value: 9.5,
        expires_at_ms: expires_at.timestamp_millis(),
        requester: "operator".into(),
    };
    let first = next_result(&mut results, &id).await;
    assert_eq!(first.status, CommandStatus::Done as i32);
    // Meanwhile someone at the panel sets 7.5: a second execution would overwrite it.
    sim.control(1, "setpoint", json!({"celsius": 7.5})).await;
    publish_command(&client, &stack, &copy).await;
    let again = next_result(&mut results, &id).await;
    assert_eq!(again.status, CommandStatus::Done as i32, "the copy is answered with the first result");
    assert_eq!(modbus_writes(&sim).await, 1, "and not executed again");
    assert_eq!(simulator_unit(&sim).await["setpoint"], 7.5);

    // Not after a restart of the gateway either (its journal is on disk).
    let stopped = gateway.stop().await;
    gateway.start();
    let session = stopped["session"].as_u64().expect("a session") + 1;
    gateway.wait_status("the restarted gateway to connect", session, |s| s["connected"] == true).await;
    publish_command(&client, &stack, &copy).await;
    gateway.wait_status("the copy to be counted", session, |s| s["commands"]["duplicate"] == 1).await;
    assert_eq!(modbus_writes(&sim).await, 1, "a restart does not execute it again");

    // A command that arrives after its expiry is not executed.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let late = Command { id: "late-1".into(), value: 10.0, expires_at_ms: now_ms - 1000, ..copy.clone() };
    publish_command(&client, &stack, &late).await;
    let expired = next_result(&mut results, "late-1").await;
    assert_eq!(expired.status, CommandStatus::Expired as i32, "{expired:?}");

    // The gateway checks its own map whatever the sender checked.
    let unchecked = Command { id: "wild-1".into(), value: 1.0, expires_at_ms: now_ms + 30_000, ..copy.clone() };
    publish_command(&client, &stack, &unchecked).await;
    let refused = next_result(&mut results, "wild-1").await;
    assert_eq!(refused.status, CommandStatus::Refused as i32, "{refused:?}");
    assert!(refused.message.contains("outside the allowed 4.4 to 15.6"), "{refused:?}");
    let unknown = Command { id: "wild-2".into(), point: "evap_leaving_temp".into(), ..unchecked.clone() };
    publish_command(&client, &stack, &unknown).await;
    assert_eq!(next_result(&mut results, "wild-2").await.status, CommandStatus::Refused as i32);

    assert_eq!(modbus_writes(&sim).await, 1, "none of them wrote anything");
    assert_eq!(simulator_unit(&sim).await["setpoint"], 7.5);
}

#[tokio::test(flavor = "multi_thread")]
async fn command_writes_of_every_type_read_back_equal_on_pymodbus() {
    let stack = Stack::start().await;
    let (pymodbus, port) = start_pymodbus(stack.dir.path()).await;
    // One writable point of each type and function code, over the server's known layout.
    let points = [
        ("coil_single", "kind = \"coil\", address = 0", 0.0),
        ("coil_multiple", "kind = \"coil\", address = 1, write_multiple = true", 1.0),
        ("u16", "kind = \"holding\", address = 0, type = \"u16\", min = 0, max = 65535", 40000.0),
        ("i16", "kind = \"holding\", address = 1, type = \"i16\", min = -1000, max = 1000", -321.0),
        ("u32_big", "kind = \"holding\", address = 2, type = \"u32\", min = 0, max = 4000000000", 3_000_000_000.0),
        (
            "i32_little",
            "kind = \"holding\", address = 4, type = \"i32\", word_order = \"little\", min = -2000000000, max = 2000000000",
            -1_999_999_999.0,
        ),
        ("f32_big", "kind = \"holding\", address = 6, type = \"f32\", decimals = 2, min = -100, max = 100", 21.25),
        (
            "f32_little",
            "kind = \"holding\", address = 8, type = \"f32\", word_order = \"little\", decimals = 1, min = -50, max = 50",
            -3.5,
        ),
        (
            "scaled",
            "kind = \"holding\", address = 10, type = \"i16\", scale = 0.1, unit = \"°C\", min = 4, max = 15",
            6.5,
        ),
        ("f64_big", "kind = \"holding\", address = 11, type = \"f64\", decimals = 4, min = 0, max = 10000", 1234.5678),
        (
            "i64_little",
            "kind = \"holding\", address = 15, type = \"i64\", word_order = \"little\", min = -1e12, max = 1e12",
            -9_876_543_211.0,
        ),
        (
            "u16_multiple",
            "kind = \"holding\", address = 19, type = \"u16\", write_multiple = true, min = 0, max = 100",
            42.0,
        ),
    ];
    let listed: String =
        points.iter().map(|(name, spec, _)| format!("  {{ name = \"{name}\", {spec}, writable = true }},\n")).collect();
    let devices = format!(
        "[[devices]]\nid = \"chiller-1\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 500\nwithout_local_mode = true\npoints = [\n{listed}]\n"
    );
    let mut gateway = Gateway::new(&stack, "", &devices);
    gateway.start();
    let api = stack.api();
    let unit_id = wait_for_unit(&api, "u16_multiple").await;

    for (name, _, value) in points {
        let record = finished(&api, unit_id, name, value).await;
        assert_eq!(record["status"], "done", "{name}: {record}");
        assert_eq!(record["read_back"].as_f64(), Some(value), "{name} reads back what was written");
    }

    // What went on the wire, as pymodbus received it: the function code the map implies, and
    // the words in the map's order.
    let writes: Vec<Value> = pymodbus.log().lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let codes: Vec<(u64, u64)> =
        writes.iter().map(|w| (w["fc"].as_u64().unwrap_or(0), w["address"].as_u64().unwrap_or(0))).collect();
    assert_eq!(
        codes,
        [(5, 0), (15, 1), (6, 0), (6, 1), (16, 2), (16, 4), (16, 6), (16, 8), (6, 10), (16, 11), (16, 15), (16, 19)],
        "{writes:?}"
    );
    let words = |i: usize| -> Vec<u64> {
        writes[i]["values"].as_array().expect("values").iter().filter_map(Value::as_u64).collect()
    };
    let i32_bits = (-1_999_999_999i32) as u32;
    assert_eq!(words(5), [u64::from(i32_bits & 0xFFFF), u64::from(i32_bits >> 16)], "i32, low word first");
    let f32_bits = 21.25f32.to_bits();
    assert_eq!(words(6), [u64::from(f32_bits >> 16), u64::from(f32_bits & 0xFFFF)], "f32, high word first");
    assert_eq!(words(8), [65], "6.5 °C at 0.1 °C a count");
}
