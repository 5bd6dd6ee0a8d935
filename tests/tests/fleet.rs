//! Running a fleet: commissioning a site with `chillcloud-gateway scan`.

use std::{path::Path, time::Duration};

use chillcloud_tests::harness::{
    Process, Simulator, bin, run_to_completion, shared_temp_dir, start_pymodbus, wait_for,
};

/// Starts `socat` with a pseudo-terminal pair `sim_end` and `gateway_end`.
async fn serial_pair(dir: &Path, sim_end: &Path, gateway_end: &Path) -> Process {
    let pty = |path: &Path| format!("pty,raw,echo=0,link={}", path.display());
    let process = Process::spawn("socat", Path::new("socat"), &["-d", &pty(sim_end), &pty(gateway_end)], dir);
    wait_for("socat's serial devices", Duration::from_secs(10), || async {
        (sim_end.exists() && gateway_end.exists()).then_some(())
    })
    .await;
    process
}

async fn sim_stats(sim: &Simulator) -> serde_json::Value {
    reqwest::get(format!("{}/stats", sim.control_url)).await.expect("stats").json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_scan_finds_the_simulated_units_and_writes_a_valid_config() {
    let dir = shared_temp_dir();
    let (sim_end, gateway_end) = (dir.path().join("tty-sim"), dir.path().join("tty-gateway"));
    let _socat = serial_pair(dir.path(), &sim_end, &gateway_end).await;
    // Three chillers (unit ids 1-3) over TCP and on a serial line; unit id 4 is silent.
    let sim =
        Simulator::start_with(3, dir.path(), &["--rtu", &sim_end.to_string_lossy(), "--baud-rate", "19200"]).await;
    let (_pymodbus, pymodbus_port) = start_pymodbus(dir.path()).await;
    let secret = dir.path().join("gateway.secret");
    std::fs::write(&secret, "scan-test").expect("secret");

    let pause_ms = 50;
    let started = std::time::Instant::now();
    let output = tokio::process::Command::new(bin("chillcloud-gateway"))
        // The simulator as a TCP to RS-485 gateway (unit ids behind it), pymodbus as one device.
        .args(["scan", "--tcp", &format!("{}@1-4", sim.modbus), "--tcp", &format!("127.0.0.1:{pymodbus_port}@1")])
        .args(["--serial-port", &gateway_end.to_string_lossy(), "--baud-rate", "19200", "--parity", "none"])
        .args(["--unit-ids", "1-4", "--timeout-ms", "300", "--pause-ms", &pause_ms.to_string()])
        .args(["--gateway-id", "plant-scan", "--state-dir", &dir.path().join("state").to_string_lossy()])
        .args(["--password-file", &secret.to_string_lossy()])
        .output()
        .await
        .expect("run scan");
    let elapsed = started.elapsed();
    let config = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "scan failed: {report}\n{config}");
    println!("{config}\n{report}");

    // Six chillers, each recognised by its points as the Trane controller the simulator is.
    assert_eq!(config.lines().filter(|line| *line == "[[devices]]").count(), 6, "{config}");
    assert_eq!(config.matches("profile = \"trane-ch530\"").count(), 6, "{config}");
    assert_eq!(config.matches("bus = \"rs485-1\"").count(), 3, "three on the serial line: {config}");
    assert!(config.contains(&format!("# {}: 3 unit(s) answered; silent: 4", sim.modbus)), "{config}");
    assert!(config.contains("# line rs485-1: 3 unit(s) answered; silent: 4"), "{config}");
    // pymodbus names itself through device identification; no built-in profile fits it.
    assert!(
        config.contains(&format!(
            "# 127.0.0.1:{pymodbus_port} unit 1: identifies as vendor \"Pymodbus\", product \"PM-INTEROP\", revision \"3.16\""
        )),
        "{config}"
    );
    assert!(config.contains("No built-in profile matches"), "{config}");

    // It only read, and paced itself: never two requests closer than the pause.
    let stats = sim_stats(&sim).await;
    assert_eq!(stats["modbus_writes"], 0, "{stats}");
    let requests = stats["modbus_requests"].as_u64().expect("requests");
    assert!(requests >= 8, "{stats}");
    assert!(
        elapsed >= Duration::from_millis(pause_ms * (requests - 1)),
        "{requests} requests to the simulator in {elapsed:?}: faster than one each {pause_ms} ms"
    );

    // The configuration is valid and polls every chiller.
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &config).expect("write config");
    let checked = run_to_completion(&bin("chillcloud-gateway"), &["check-config", &path.to_string_lossy()]).await;
    assert!(checked.contains("ok (6 devices"), "{checked}");
    let polled = run_to_completion(&bin("chillcloud-gateway"), &["poll-once", &path.to_string_lossy()]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&polled).expect("JSON rows");
    for device in 1..=6 {
        let supply = rows
            .iter()
            .find(|r| r["device"] == format!("chiller-{device}") && r["point"] == "evap_leaving_temp")
            .unwrap_or_else(|| panic!("chiller-{device} polled: {polled}"));
        assert_eq!(supply["quality"], "Good", "{supply}");
        let celsius = supply["value"].as_f64().expect("a value");
        assert!((3.0..12.0).contains(&celsius), "plausible supply temperature {celsius}");
    }
}
