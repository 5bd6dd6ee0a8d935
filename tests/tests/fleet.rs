//! Running a fleet: commissioning a site with `chillcloud-gateway scan`, gateway configuration
//! held by the server, and the management screens (provisioning, sites, paging, accounts).

use std::{path::Path, time::Duration};

use chillcloud_tests::harness::{
    Api, EmbeddedServer, GATEWAY_READINGS, Gateway, Process, Simulator, Stack, bin, free_port, run_browser_script,
    run_to_completion, shared_temp_dir, start_pymodbus, wait_for,
};
use serde_json::json;

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

/// The site part for chiller 1 and, when given, chiller 2 at `chiller_2_port`.
fn site(sim: &Simulator, chiller_2_port: Option<u16>, extra: &str) -> String {
    let device = |unit: u8, port: u16| {
        format!(
            "[[devices]]\nid = \"chiller-{unit}\"\nprofile = \"trane-ch530\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             unit_id = {unit}\npoll_interval_ms = 200\ntimeout_ms = 300\nretries = 0\nsnapshot_interval_secs = 1\n{extra}"
        )
    };
    let mut text = device(1, sim.modbus.port());
    if let Some(port) = chiller_2_port {
        text.push_str(&device(2, port));
    }
    text
}

async fn change(api: &Api, site_toml: &str, base_version: i64, note: &str) -> (u16, serde_json::Value) {
    let body = json!({ "site_toml": site_toml, "base_version": base_version, "note": note });
    api.send(reqwest::Method::PUT, "/api/v1/gateways/gw-stack/config", body).await
}

async fn wait_config(api: &Api, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    wait_for(what, Duration::from_secs(120), || async {
        api.get("/api/v1/gateways/gw-stack/config").await.filter(|c| check(c))
    })
    .await
}

async fn readings_in_database(stack: &Stack) -> i64 {
    let pool = stack.postgres.pool().await;
    let count: i64 = sqlx::query_scalar(GATEWAY_READINGS).fetch_one(&pool).await.expect("count");
    pool.close().await;
    count
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_config_push_applies_rolls_back_and_reports_drift() {
    let stack = Stack::start().await;
    assert_eq!(stack.gateway_id, "gw-stack", "the paths below name the stack's gateway");
    let sim = Simulator::start(2, stack.dir.path()).await;
    let api = stack.api();
    // The box's own file polls chiller 1; trials last 10 s here (120 s by default).
    let mut gateway = Gateway::new(&stack, "config_trial_secs = 10", &site(&sim, None, ""));
    gateway.start();
    gateway.wait_status("chiller 1 answering", 1, |s| s["devices"]["chiller-1"]["healthy"] == true).await;
    let local = wait_config(&api, "the gateway's own file reported", |c| c["state"] == "local").await;
    assert_eq!(local["running_version"], 0);

    // A good change: a second chiller is polled.
    let (status, made) = change(&api, &site(&sim, Some(sim.modbus.port()), ""), 0, "chiller 2 added").await;
    assert_eq!((status, &made["version"]), (201, &json!(1)), "{made}");
    let on_trial = wait_config(&api, "version 1 running", |c| c["running_version"] == 1).await;
    assert_eq!(on_trial["drift"], false, "{on_trial}");
    wait_for("chiller 2's readings at the server", Duration::from_secs(30), || async {
        api.latest("chiller-2", "evap_leaving_temp").await
    })
    .await;
    let applied = wait_config(&api, "version 1 confirmed", |c| c["state"] == "in_sync").await;
    assert_eq!(applied["desired"]["outcome"], "applied");
    assert_eq!(applied["desired"]["changed_by"], "operator");

    // A bad change is refused by the server, naming the field, and goes nowhere.
    let broken = site(&sim, Some(sim.modbus.port()), "").replace("trane-ch530", "trane-ch999");
    let (status, refused) = change(&api, &broken, 1, "typo").await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("devices[0].profile")), "{refused}");
    let (status, stale) = change(&api, &site(&sim, None, ""), 0, "from an old page").await;
    assert_eq!(status, 409, "a change made from an older version is refused: {stale}");

    // A change that breaks polling (chiller 2 at a port nobody listens on): the gateway goes
    // back to version 1 by itself and says why, well within 2 minutes.
    let wrong_port = free_port();
    let started = std::time::Instant::now();
    let (status, made) = change(&api, &site(&sim, Some(wrong_port), ""), 1, "chiller 2 moved").await;
    assert_eq!((status, &made["version"]), (201, &json!(2)), "{made}");
    let rolled_back = wait_config(&api, "version 2 rolled back", |c| c["state"] == "rolled_back").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(120), "rolled back after {took:?}");
    assert_eq!((rolled_back["running_version"].as_i64(), rolled_back["drift"].as_bool()), (Some(1), Some(true)));
    let reason = rolled_back["desired"]["outcome_reason"].as_str().expect("a reason");
    assert!(
        reason.contains("chiller-2") && reason.contains("stopped answering") && reason.contains("version 1"),
        "{reason}"
    );
    let status = gateway
        .wait_status("version 1 polling again", gateway_session(&gateway), |s| {
            s["config_version"] == 1 && s["devices"]["chiller-2"]["healthy"] == true
        })
        .await;
    println!("rolled back in {took:?}: {reason}; gateway status {}", status["devices"]);

    // A change made while the gateway is offline reaches it when it reconnects.
    let first_run = gateway.stop().await;
    wait_config(&api, "the gateway offline", |c| c["online"] == false).await;
    let (status, made) =
        change(&api, &site(&sim, Some(sim.modbus.port()), "display_name = \"Plant room\"\n"), 2, "offline").await;
    assert!(made.is_object() && status == 201, "{made}");
    let waiting = wait_config(&api, "version 3 waiting", |c| c["state"] == "waiting").await;
    assert_eq!((waiting["running_version"].as_i64(), waiting["drift"].as_bool()), (Some(1), Some(true)));
    gateway.start();
    let in_sync = wait_config(&api, "version 3 applied on reconnection", |c| c["state"] == "in_sync").await;
    assert_eq!((in_sync["running_version"].as_i64(), in_sync["drift"].as_bool()), (Some(3), Some(false)));
    assert_eq!(in_sync["versions"].as_array().map(Vec::len), Some(2), "versions 2 and 1 kept: {in_sync}");

    // The same in the dashboard, on a phone: an engineer's mistake refused naming the field, the
    // corrected change sent and taken.
    let (status, service) =
        api.send(reqwest::Method::POST, "/api/v1/organisations", json!({"name": "Service", "kind": "service"})).await;
    assert_eq!(status, 200, "{service}");
    let engineer = json!({"login": "zhou@service.example", "name": "Zhou Gong", "role": "engineer",
        "organisation_id": service["id"], "language": "en"});
    stack.user(engineer, "the engineer's password").await;
    let env = [
        ("BASE", api.base.as_str()),
        ("LOGIN", "zhou@service.example"),
        ("PASSWORD", "the engineer's password"),
        ("GATEWAY", stack.gateway_id),
    ];
    run_browser_script("gateway-config.mjs", &env).await;
    let by_phone = wait_config(&api, "version 4 applied", |c| c["state"] == "in_sync").await;
    assert_eq!(by_phone["desired"]["version"], 4);
    assert_eq!(by_phone["desired"]["changed_by"], "Zhou Gong (zhou@service.example)");
    assert_eq!(by_phone["desired"]["note"], "one retry on chiller 1");

    // No reading lost through five configurations and two processes.
    let second_run = gateway.stop().await;
    let expected =
        first_run["readings_queued"].as_i64().expect("count") + second_run["readings_queued"].as_i64().expect("count");
    let mut stored = 0;
    let settled = tokio::time::timeout(Duration::from_secs(60), async {
        while stored < expected {
            stored = readings_in_database(&stack).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "{stored} of {expected} readings stored");
    assert_eq!(readings_in_database(&stack).await, expected, "none twice");
}

/// The session the gateway runs now.
fn gateway_session(gateway: &Gateway) -> u64 {
    gateway.status().and_then(|s| s["session"].as_u64()).expect("a status report")
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_admin_screens_in_a_phone_browser() {
    let stack = Stack::start().await;
    let mut gateway = stack.gateway(1).await;
    let api = stack.api();
    wait_for("the unit registered", Duration::from_secs(30), || async {
        api.get("/api/v1/units").await.filter(|u| u.as_array().is_some_and(|a| !a.is_empty()))
    })
    .await;
    let (status, service) =
        api.send(reqwest::Method::POST, "/api/v1/organisations", json!({"name": "Service", "kind": "service"})).await;
    assert_eq!(status, 200, "{service}");
    let manager = json!({"login": "he@service.example", "name": "He Jingli", "role": "manager",
        "organisation_id": service["id"], "language": "en"});
    stack.user(manager, "the manager's password").await;
    // Someone already on the team, second in the rotation the manager makes.
    let (status, other) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/people",
            json!({"name": "Liu Gong", "phone": "+8613900000002", "language": "zh"}),
        )
        .await;
    assert_eq!(status, 200, "{other}");
    // A grade-1 fault the unit will have: point p0 above 50.
    let rule = json!({"title": "Hot p0", "title_zh": "p0 过热", "grade": 1, "kind": "condition", "when": "p0 > 50"});
    let (status, body) =
        api.send(reqwest::Method::PUT, &format!("/api/v1/gateways/{}/rules/hot0", stack.gateway_id), rule).await;
    assert_eq!(status, 200, "{body}");

    let env = [
        ("BASE", api.base.as_str()),
        ("LOGIN", "he@service.example"),
        ("PASSWORD", "the manager's password"),
        ("GATEWAY", stack.gateway_id),
        ("NAME", "Chen Gong"),
        ("PHONE", "+8613900000001"),
        ("OTHER", "Liu Gong"),
    ];
    run_browser_script("admin.mjs", &env).await;

    // What the screens made, as the API has it.
    let rotations = api.get("/api/v1/rotations").await.expect("rotations");
    let rotation = &rotations[0];
    assert_eq!((rotation["name"].as_str(), rotation["period_days"].as_i64()), (Some("Plant A on call"), Some(7)));
    let people = api.get("/api/v1/people").await.expect("people");
    let chen = people.as_array().expect("array").iter().find(|p| p["name"] == "Chen Gong").expect("Chen Gong added");
    assert_eq!((chen["phone"].as_str(), chen["language"].as_str()), (Some("+8613900000001"), Some("zh")));
    assert_eq!(rotation["members"], json!([chen["id"], other["id"]]));
    assert_eq!(rotation["on_call_now"], chen["id"]);
    // The stand-in next week is listed, and leaves who is on call now as it was.
    assert_eq!(rotation["overrides"].as_array().map(Vec::len), Some(1), "{rotation}");
    assert_eq!(rotation["overrides"][0]["person_id"], other["id"]);
    let paging = api.get(&format!("/api/v1/gateways/{}/paging", stack.gateway_id)).await.expect("paging");
    assert_eq!(paging["rotation_id"], rotation["id"]);
    assert_eq!(paging["grades"]["1"], json!({"levels": [{"after_s": 0.0, "notify": ["on_call"]}], "repeat_s": 600.0}));

    // A grade-1 alarm pages whoever the rotation says is on call, and nobody else.
    let data = gateway.data_at(chrono::Utc::now().timestamp_millis(), &[(0, 60.0)]);
    gateway.publish_data(&data).await;
    let paged = wait_for("the on-call engineer paged", Duration::from_secs(30), || async {
        let outbox = api.get("/api/v1/outbox?limit=100").await?;
        let messages = outbox.as_array()?.clone();
        (!messages.is_empty()).then_some(messages)
    })
    .await;
    let people_paged: Vec<&serde_json::Value> = paged.iter().map(|m| &m["person_id"]).collect();
    assert_eq!(people_paged, [&chen["id"]], "only the on-call engineer: {paged:?}");
}

/// Runs `tests/browser/admin-site.mjs` in `phase` against `base`, as the administrator, with
/// more environment.
async fn admin_site_browser(base: &str, phase: &str, more: &[(&str, &str)]) {
    let mut env = vec![
        ("BASE", base),
        ("LOGIN", "zhao@service.example"),
        ("PASSWORD", "the administrator's password"),
        ("GATEWAY", "plant-b-gw1"),
        ("PHASE", phase),
    ];
    env.extend_from_slice(more);
    run_browser_script("admin-site.mjs", &env).await;
}

/// Waits up to a minute until plant-b-gw1's row in the fleet list satisfies `check`.
async fn wait_listed(api: &Api, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    wait_for(what, Duration::from_secs(60), || async {
        let fleet = api.get("/api/v1/gateways").await?;
        fleet.as_array()?.iter().find(|g| g["id"] == "plant-b-gw1").filter(|g| check(g)).map(drop)
    })
    .await;
}

/// An administrator on a phone provisions a gateway; the box installed with the two files the
/// page offered connects to the server's own broker at once and polls the devices set on the
/// server. Then the same administrator plans maintenance, changes a rule of one unit, shares it,
/// adds the customer, invites its owner and gives them the site, each checked through the API.
#[tokio::test(flavor = "multi_thread")]
async fn fleet_provisioning_and_site_screens_in_a_phone_browser() {
    let dir = shared_temp_dir();
    let server = EmbeddedServer::start("server", &dir.path().join("server"), dir.path(), &[]).await;
    let api = &server.api;
    let (status, service) =
        api.send(reqwest::Method::POST, "/api/v1/organisations", json!({"name": "Service", "kind": "service"})).await;
    assert_eq!(status, 200, "{service}");
    let admin = json!({"login": "zhao@service.example", "name": "Zhao Zong", "role": "admin",
        "organisation_id": service["id"], "language": "en"});
    api.user(admin, "the administrator's password").await;

    let out = dir.path().join("downloads");
    std::fs::create_dir_all(&out).expect("downloads directory");
    admin_site_browser(&api.base, "provision", &[("OUT", &out.to_string_lossy())]).await;

    // Installed as on a box, but under the test's directory.
    let state_dir = dir.path().join("gateway-state");
    let secret = out.join("gateway.secret");
    let file = std::fs::read_to_string(out.join("gateway.toml")).expect("the downloaded configuration");
    let config = out.join("installed.toml");
    let installed = file
        .replace("/var/lib/chillcloud-gateway", &state_dir.to_string_lossy())
        .replace("/etc/chillcloud/gateway.secret", &secret.to_string_lossy());
    assert_ne!(installed, file, "the file names the package's paths");
    std::fs::write(&config, installed).expect("install the configuration");
    run_to_completion(&bin("chillcloud-gateway"), &["check-config", &config.to_string_lossy()]).await;
    let mut gateway = Gateway::from_file(config, state_dir, dir.path());
    gateway.start();
    wait_listed(api, "the provisioned gateway online", |g| g["online"] == true).await;

    // Its devices, from the server.
    let sim = Simulator::start(1, dir.path()).await;
    let body = json!({ "site_toml": site(&sim, None, ""), "base_version": 0, "note": "commissioned" });
    let (status, made) = api.send(reqwest::Method::PUT, "/api/v1/gateways/plant-b-gw1/config", body).await;
    assert_eq!(status, 201, "{made}");
    wait_for("chiller 1's readings at the server", Duration::from_secs(60), || async {
        api.latest("chiller-1", "evap_leaving_temp").await
    })
    .await;
    let units = api.get("/api/v1/units").await.expect("units");
    let unit = units[0]["id"].as_i64().expect("unit id");
    let rules = api.get(&format!("/api/v1/units/{unit}/rules")).await.expect("rules");
    let rule = (rules["rules"].as_array().expect("rules").iter())
        .find(|r| r["grade"].as_i64().is_some_and(|g| g > 1))
        .and_then(|r| r["key"].as_str())
        .expect("a rule of grade 2 or more")
        .to_owned();

    admin_site_browser(&api.base, "site", &[("RULE", &rule)]).await;
    let windows = api.get("/api/v1/gateways/plant-b-gw1/maintenance").await.expect("maintenance");
    assert_eq!((windows[0]["reason"].as_str(), &windows[0]["unit_id"]), (Some("Annual tube cleaning"), &json!(null)));
    let rules = api.get(&format!("/api/v1/units/{unit}/rules")).await.expect("rules");
    assert_eq!(rules["overrides"], json!([[unit, rule, {"grade": 1}]]), "{rules}");
    let changed =
        rules["rules"].as_array().expect("rules").iter().find(|r| r["key"] == rule.as_str()).expect("in force");
    assert_eq!(changed["grade"], 1);
    let shares = api.get(&format!("/api/v1/units/{unit}/shares")).await.expect("shares");
    assert_eq!(shares[0]["label"], "Process chiller, food plant");
    let users = api.get("/api/v1/users").await.expect("users");
    let owner = users.as_array().expect("users").iter().find(|u| u["login"] == "wang@acme.example").expect("invited");
    assert_eq!((owner["role"].as_str(), owner["active"].as_bool()), (Some("owner"), Some(false)));
    wait_listed(api, "the site given to Acme Foods", |g| g["organisation"] == "Acme Foods").await;

    // The server's own broker user is not a gateway id anyone may take.
    let (status, refused) =
        api.send(reqwest::Method::POST, "/api/v1/gateways", json!({"id": "chillcloud-server"})).await;
    assert_eq!(status, 400, "{refused}");
    // A new password: the box restarted with it connects again.
    gateway.stop().await;
    wait_listed(api, "the gateway offline", |g| g["online"] == false).await;
    let (status, renewed) = api.send(reqwest::Method::POST, "/api/v1/gateways/plant-b-gw1/password", json!(null)).await;
    assert_eq!(status, 200, "{renewed}");
    let old = std::fs::read_to_string(&secret).expect("old secret");
    let new = renewed["password"].as_str().expect("a new password");
    assert_ne!(old.trim(), new);
    std::fs::write(&secret, new).expect("install the new password");
    gateway.start();
    wait_listed(api, "the gateway online with its new password", |g| g["online"] == true).await;
    gateway.stop().await;
}
