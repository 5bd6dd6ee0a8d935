//! Remote control from the dashboard in a real browser: Debian's Chromium at a phone's viewport,
//! driven by playwright-core (`tests/browser/command.mjs`), against the real server, broker,
//! gateway and simulated chiller. An owner changes the chilled-water setpoint in two steps; the
//! command goes from the page through the server and the broker to the gateway, which writes the
//! simulator's Modbus register and reads it back. Screenshots are kept in
//! `target/browser-artifacts/`.

use std::{process::Stdio, time::Duration};

use chillcloud_tests::harness::{Gateway, Simulator, Stack, browser_dir, simulated_chillers, wait_for, workspace_root};

#[tokio::test]
async fn command_a_setpoint_changes_through_the_two_step_confirmation_on_a_phone() {
    let browser_dir = browser_dir();
    let stack = Stack::start().await;
    let api = stack.api();
    let sim = Simulator::start(1, stack.dir.path()).await;
    let mut gateway = Gateway::new(&stack, "", &simulated_chillers(&sim, 1, "poll_interval_ms = 500", false));
    gateway.start();
    let setpoint = wait_for("the simulated chiller's setpoint on the server", Duration::from_secs(60), || {
        api.latest("chiller-1", "chw_setpoint")
    })
    .await;
    assert!((setpoint - 7.0).abs() < 1e-9, "the simulator starts at 7.0 °C, the server has {setpoint}");
    let unit_id = wait_for("the setpoint writable within bounds", Duration::from_secs(30), || async {
        let units = api.get("/api/v1/units").await?;
        let unit = units.as_array()?.iter().find(|u| u["device_key"] == "chiller-1")?.clone();
        let detail = api.get(&format!("/api/v1/units/{}", unit["id"])).await?;
        let point = detail["points"].as_array()?.iter().find(|p| p["name"] == "chw_setpoint")?.clone();
        (point["writable"] == true && point["min"].is_number() && point["max"].is_number())
            .then(|| unit["id"].as_i64())?
    })
    .await;
    stack.site_owner("owner@acme.example", "Li Wei", "li wei's password").await;

    let artifacts = workspace_root().join("target/browser-artifacts");
    let started = std::time::Instant::now();
    let browser = tokio::process::Command::new("node")
        .arg(browser_dir.join("command.mjs"))
        .env("BASE", &api.base)
        .env("LOGIN", "owner@acme.example")
        .env("PASSWORD", "li wei's password")
        .env("UNIT_ID", unit_id.to_string())
        .env("NEW_VALUE", "8.5")
        .env("ARTIFACTS", &artifacts)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), browser)
        .await
        .expect("the browser test finishes in 3 minutes")
        .expect("run node");
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}\nbrowser: {:.1} s", started.elapsed().as_secs_f64());
    let logs = || {
        let server = stack.server.as_ref().map(|p| p.log()).unwrap_or_default();
        let gateway = gateway.process.as_ref().map(|p| p.log()).unwrap_or_default();
        format!("server log:\n{server}\ngateway log:\n{gateway}")
    };
    assert!(output.status.success() && text.contains("ok all"), "the browser test failed:\n{text}\n{}", logs());

    // The chiller itself has the new setpoint: the command went all the way.
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let response = client.get(path).send().await.expect("simulator control");
            response.json::<serde_json::Value>().await.expect("JSON")
        }
    };
    let chiller = get(format!("{}/units/1", sim.control_url)).await;
    assert_eq!(chiller["setpoint"].as_f64(), Some(8.5), "{chiller:#}");
    // Only the confirmed value was written: the one out of bounds never left the page.
    let stats = get(format!("{}/stats", sim.control_url)).await;
    assert_eq!(stats["modbus_writes"], 1, "{stats:#}");

    // The audit trail has it, as the owner asked it.
    let commands = api.get(&format!("/api/v1/units/{unit_id}/commands")).await.expect("the unit's commands");
    let commands = commands.as_array().expect("a list");
    assert_eq!(commands.len(), 1, "{commands:#?}");
    let command = &commands[0];
    assert_eq!(command["point"], "chw_setpoint", "{command:#}");
    assert_eq!(command["status"], "done", "{command:#}");
    assert_eq!(command["value"].as_f64(), Some(8.5), "{command:#}");
    assert!(command["read_back"].as_f64().is_some_and(|v| (v - 8.5).abs() < 1e-9), "{command:#}");
    assert!(command["previous_value"].as_f64().is_some_and(|v| (v - 7.0).abs() < 1e-9), "{command:#}");
    let by = command["requested_by"].as_str().unwrap_or_default();
    assert!(by.contains("Li Wei") || by.contains("owner@acme.example"), "requested by {by:?}");
}
