//! Modbus RTU for real: the simulator serves three chillers on one end of a `socat`
//! pseudo-terminal pair, the gateway polls them concurrently through the other end as one
//! shared line, and the readings reach the server.

use std::time::Duration;

use chillcloud_tests::harness::{Gateway, Process, Simulator, Stack, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn rtu_three_unit_ids_share_one_serial_line_without_interleaving() {
    let stack = Stack::start().await;
    let dir = stack.dir.path();
    let (sim_end, gateway_end) = (dir.join("tty-sim"), dir.join("tty-gateway"));
    let _socat = Process::spawn(
        "socat",
        std::path::Path::new("socat"),
        &[
            "-d",
            &format!("pty,raw,echo=0,link={}", sim_end.display()),
            &format!("pty,raw,echo=0,link={}", gateway_end.display()),
        ],
        dir,
    );
    wait_for("socat's serial pair", Duration::from_secs(10), || async {
        (sim_end.exists() && gateway_end.exists()).then_some(())
    })
    .await;
    let sim = Simulator::start_with(3, dir, &["--rtu", &sim_end.to_string_lossy(), "--baud-rate", "19200"]).await;
    sim.control(2, "setpoint", json!({ "celsius": 9.5 })).await;

    // Three chillers and a unit id nobody answers to, all on one line, polled every 200 ms.
    let bus = format!(
        "[[buses]]\nid = \"rs485-1\"\nserial_port = \"{}\"\nbaud_rate = 19200\nparity = \"none\"\n",
        gateway_end.display()
    );
    let devices: String = [1, 2, 3, 9]
        .iter()
        .map(|unit| {
            format!(
                "[[devices]]\nid = \"chiller-{unit}\"\nprofile = \"trane-ch530\"\nbus = \"rs485-1\"\nunit_id = {unit}\npoll_interval_ms = 200\ntimeout_ms = 200\nretries = 0\n"
            )
        })
        .collect();
    let mut gateway = Gateway::new(&stack, "", &format!("{bus}{devices}"));
    gateway.start();

    let status = gateway
        .wait_status("20 requests to each chiller", 1, |s| {
            (1..=3).all(|unit| s["devices"][format!("chiller-{unit}")]["requests"].as_u64() >= Some(20))
        })
        .await;
    for unit in 1..=3 {
        let device = &status["devices"][format!("chiller-{unit}")];
        // Interleaved frames on a shared line fail their CRC or get no answer.
        assert_eq!(device["failed_polls"], 0, "chiller-{unit} read cleanly: {status}");
        assert_eq!(device["healthy"], true, "{status}");
    }
    assert_eq!(status["devices"]["chiller-9"]["healthy"], false, "a silent unit id is reported: {status}");

    // Each unit id's own values, end to end.
    let api = stack.api();
    for (unit, setpoint) in [(1, 7.0), (2, 9.5), (3, 7.0)] {
        let device = format!("chiller-{unit}");
        wait_for(&format!("{device}'s setpoint at the API"), Duration::from_secs(30), || async {
            (api.latest(&device, "active_setpoint").await == Some(setpoint)).then_some(())
        })
        .await;
    }
    let supply = api.latest("chiller-1", "evap_leaving_temp").await.expect("supply temperature");
    assert!((3.0..12.0).contains(&supply), "plausible supply temperature over RTU: {supply}");
    gateway.stop().await;
}
