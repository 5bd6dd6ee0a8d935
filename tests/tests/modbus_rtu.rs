//! Modbus RTU for real: the simulator serves three chillers on a serial device made by `socat`,
//! and the gateway polls them concurrently as one shared line, either through the other end of
//! a pseudo-terminal pair or through `socat` acting as a serial device server (RTU over TCP).
//! The readings reach the server.

use std::{path::Path, time::Duration};

use chillcloud_tests::harness::{Gateway, Process, Simulator, Stack, free_port, wait_for};
use serde_json::json;

/// Starts `socat` with `addresses` and waits until the serial device `sim_end` exists.
async fn socat(dir: &Path, addresses: [String; 2], sim_end: &Path) -> Process {
    let process = Process::spawn("socat", Path::new("socat"), &["-d", &addresses[0], &addresses[1]], dir);
    wait_for("socat's serial device", Duration::from_secs(10), || async { sim_end.exists().then_some(()) }).await;
    process
}

/// Polls chillers 1 to 3, and with `silent_unit` a unit id nobody answers to, on the line
/// `bus` (a `[[buses]]` table with id `line`), and checks each unit's own values arrive with no
/// failed poll.
async fn check_three_units_share_the_line(stack: &Stack, sim: &Simulator, bus: &str, silent_unit: bool) {
    sim.control(2, "setpoint", json!({ "celsius": 9.5 })).await;
    let units: &[u8] = if silent_unit { &[1, 2, 3, 9] } else { &[1, 2, 3] };
    let devices: String = units
        .iter()
        .map(|unit| {
            format!(
                "[[devices]]\nid = \"chiller-{unit}\"\nprofile = \"trane-ch530\"\nbus = \"line\"\nunit_id = {unit}\npoll_interval_ms = 200\ntimeout_ms = 200\nretries = 0\n"
            )
        })
        .collect();
    let mut gateway = Gateway::new(stack, "", &format!("{bus}{devices}"));
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
    if silent_unit {
        assert_eq!(status["devices"]["chiller-9"]["healthy"], false, "a silent unit id is reported: {status}");
    }

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

#[tokio::test(flavor = "multi_thread")]
async fn rtu_three_unit_ids_share_one_serial_line_without_interleaving() {
    let stack = Stack::start().await;
    let dir = stack.dir.path();
    let (sim_end, gateway_end) = (dir.join("tty-sim"), dir.join("tty-gateway"));
    let pty = |path: &Path| format!("pty,raw,echo=0,link={}", path.display());
    let _socat = socat(dir, [pty(&sim_end), pty(&gateway_end)], &sim_end).await;
    wait_for("the gateway's end", Duration::from_secs(10), || async { gateway_end.exists().then_some(()) }).await;
    let sim = Simulator::start_with(3, dir, &["--rtu", &sim_end.to_string_lossy(), "--baud-rate", "19200"]).await;
    let bus = format!(
        "[[buses]]\nid = \"line\"\nserial_port = \"{}\"\nbaud_rate = 19200\nparity = \"none\"\n",
        gateway_end.display()
    );
    check_three_units_share_the_line(&stack, &sim, &bus, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rtu_over_tcp_through_a_serial_device_server() {
    let stack = Stack::start().await;
    let dir = stack.dir.path();
    let sim_end = dir.join("tty-sim");
    let port = free_port();
    // socat as the serial device server: its serial side is the simulator's device.
    let _socat = socat(
        dir,
        [format!("pty,raw,echo=0,link={}", sim_end.display()), format!("tcp-listen:{port},bind=127.0.0.1,reuseaddr")],
        &sim_end,
    )
    .await;
    let sim = Simulator::start_with(3, dir, &["--rtu", &sim_end.to_string_lossy()]).await;
    let bus = format!("[[buses]]\nid = \"line\"\nrtu_over_tcp = \"127.0.0.1:{port}\"\n");
    // No silent unit here: after a timeout the gateway reconnects, and socat's forked relays
    // would share the line between the old connection and the new one as no real device
    // server does. The silent unit is covered on the serial line above.
    check_three_units_share_the_line(&stack, &sim, &bus, false).await;
}
