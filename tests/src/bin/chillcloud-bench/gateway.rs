//! Gateway benchmarks against the simulator: P4 (Modbus requests per poll cycle against the
//! lower bound) and P5 (bytes on the wire per point, TLS on, against one JSON message per tag).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chillcloud_gateway::{config::Config, modbus::RegisterKind, status::StatusBoard};
use chillcloud_server::embedded::broker::password_line;
use chillcloud_tests::harness::{
    PasswordMosquitto, Process, Simulator, bank_points, bin, run_to_completion, shared_temp_dir, simulated_chillers,
    wait_for,
};
use rumqttc::{AsyncClient, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::verdict;

const PASSWORD: &str = "bench-password";

/// A gateway configuration file in `dir` for broker `port` (TLS when `ca` is given).
fn write_config(dir: &Path, name: &str, port: u16, ca: Option<&Path>, devices: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("secret"), PASSWORD).expect("write secret");
    let tls = ca.map(|ca| format!("tls = {{ ca_file = \"{}\" }}\n", ca.display())).unwrap_or_default();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "gateway_id = \"{name}\"\nstate_dir = \"{state}\"\n[mqtt]\nhost = \"localhost\"\nport = {port}\npassword_file = \"{secret}\"\n{tls}{devices}",
            state = dir.join(format!("{name}-state")).display(),
            secret = dir.join("secret").display(),
        ),
    )
    .expect("write config");
    path
}

async fn sim_requests(sim: &Simulator) -> anyhow::Result<u64> {
    let stats: serde_json::Value = reqwest::get(format!("{}/stats", sim.control_url)).await?.json().await?;
    stats["modbus_requests"].as_u64().ok_or_else(|| anyhow::anyhow!("no request count in {stats}"))
}

/// The fewest read requests one poll of `config`'s devices can take, worked out apart from the
/// gateway's planner: per device and table, points sorted by address form runs wherever the
/// hole to the next is at most the device's `max_gap`; a run needs ceil(length / limit)
/// requests, the limit being 125 registers or 2,000 bits.
fn lower_bound(config: &Config) -> u64 {
    let mut total = 0;
    for device in &config.devices {
        for kind in [RegisterKind::Coil, RegisterKind::DiscreteInput, RegisterKind::Input, RegisterKind::Holding] {
            let mut spans: Vec<(u32, u32)> = device
                .points
                .iter()
                .filter(|p| p.kind == kind)
                .map(|p| (u32::from(p.address), u32::from(p.address) + u32::from(p.width)))
                .collect();
            spans.sort();
            let limit = if kind.is_bit() { 2000 } else { 125 };
            let mut run: Option<(u32, u32)> = None;
            for (start, end) in spans {
                run = match run {
                    Some((first, last)) if start <= last + u32::from(device.max_gap) => Some((first, last.max(end))),
                    Some((first, last)) => {
                        total += u64::from((last - first).div_ceil(limit));
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
            }
            if let Some((first, last)) = run {
                total += u64::from((last - first).div_ceil(limit));
            }
        }
    }
    total
}

/// P4: requests the gateway sends in one poll cycle of 100 chillers (Trane profile plus a
/// 100-register bank each), counted by the simulator, against the lower bound.
pub async fn p4() -> anyhow::Result<bool> {
    const UNITS: u8 = 100;
    let dir = shared_temp_dir();
    let sim = Simulator::start(UNITS, dir.path()).await;
    let path = write_config(dir.path(), "bench-p4", 1883, None, &simulated_chillers(&sim, UNITS, "", true));
    let config = Config::load(&path)?;
    let points: usize = config.devices.iter().map(|d| d.points.len()).sum();
    let bound = lower_bound(&config);

    let before = sim_requests(&sim).await?;
    run_to_completion(&bin("chillcloud-gateway"), &["poll-once", &path.to_string_lossy()]).await;
    let ours = sim_requests(&sim).await? - before;

    let ratio = ours as f64 / bound as f64;
    println!("P4 {UNITS} devices, {points} points (Trane CH530 profile + 100 input registers each), one poll cycle");
    println!("P4 one request per point would take {points} requests");
    println!("P4 lower bound: {bound} requests (runs bridging holes up to max_gap, 125 registers or 2,000 bits each)");
    println!("P4 ours: {ours} requests, counted by the simulator");
    let pass = ratio <= 1.0;
    println!("P4 ratio={ratio:.2} target=1.0 {}", verdict(pass));
    Ok(pass)
}

/// A TCP relay that counts the bytes it carries in both directions.
struct CountingProxy {
    port: u16,
    bytes: Arc<AtomicU64>,
}

impl CountingProxy {
    async fn start(upstream: u16) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let bytes = Arc::new(AtomicU64::new(0));
        let counter = bytes.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(relay(client_read, server_write, counter.clone()));
                tokio::spawn(relay(server_read, client_write, counter.clone()));
            }
        });
        Ok(Self { port, bytes })
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buffer).await {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// The baseline of P5: polls the same chillers every second and publishes every point as its
/// own JSON message (`{"ts": …, "value": …}` on `telemetry/<device>/<point>`), QoS 1, over TLS,
/// as tag-per-message gateways do.
async fn json_per_tag_publisher(config: Config, port: u16, ca: Vec<u8>) -> anyhow::Result<()> {
    let mut options = MqttOptions::new("bench-json", "localhost", port);
    options.set_credentials("bench-json", PASSWORD);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth: None }));
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let birth = chillcloud_gateway::birth(&config, 1, &[]);
    let names: Vec<(String, String)> =
        birth.devices.iter().flat_map(|d| d.points.iter().map(|p| (d.id.clone(), p.name.clone()))).collect();
    let mut pollers = chillcloud_gateway::pollers(&config, &StatusBoard::default());
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        for poller in &mut pollers {
            for sample in poller.poll().await {
                let (device, point) = &names[sample.alias as usize];
                let payload = serde_json::json!({ "ts": sample.time_ms, "value": sample.value }).to_string();
                client.publish(format!("telemetry/{device}/{point}"), QoS::AtLeastOnce, false, payload).await?;
            }
        }
    }
}

/// P5: bytes on the wire (both directions, TLS on) per point polled, in steady state, for the
/// gateway against the same points published as one JSON message per tag.
pub async fn p5() -> anyhow::Result<bool> {
    const UNITS: u8 = 3;
    const WINDOW: Duration = Duration::from_secs(120);
    let dir = shared_temp_dir();
    let lines = [
        password_line("bench-p5", PASSWORD),
        password_line("bench-p5-all", PASSWORD),
        password_line("bench-json", PASSWORD),
    ];
    let broker = PasswordMosquitto::start_tls(dir.path(), &lines).await;
    let sim = Simulator::start(UNITS, dir.path()).await;
    let ours_proxy = CountingProxy::start(broker.port).await?;
    let json_proxy = CountingProxy::start(broker.port).await?;
    let all_proxy = CountingProxy::start(broker.port).await?;

    // Ours on its defaults: a poll a second, report by exception, a snapshot a minute.
    let ours_config = write_config(
        dir.path(),
        "bench-p5",
        ours_proxy.port,
        Some(&broker.ca),
        &simulated_chillers(&sim, UNITS, "", false),
    );
    let points_per_poll: usize = Config::load(&ours_config)?.devices.iter().map(|d| d.points.len()).sum();
    let _gateway = Process::spawn(
        "gateway",
        &bin("chillcloud-gateway"),
        &["run", "--config", &ours_config.to_string_lossy()],
        dir.path(),
    );
    // Ours again sending every point every second, to tell the encoding's share from report
    // by exception's.
    let all_config = write_config(
        dir.path(),
        "bench-p5-all",
        all_proxy.port,
        Some(&broker.ca),
        &simulated_chillers(&sim, UNITS, "snapshot_interval_secs = 1", false),
    );
    let _gateway_all = Process::spawn(
        "gateway-all",
        &bin("chillcloud-gateway"),
        &["run", "--config", &all_config.to_string_lossy()],
        dir.path(),
    );
    // The baseline sends every point every second, whether it changed or not.
    let json_config = write_config(
        dir.path(),
        "bench-json",
        json_proxy.port,
        Some(&broker.ca),
        &simulated_chillers(&sim, UNITS, "snapshot_interval_secs = 1", false),
    );
    let baseline =
        tokio::spawn(json_per_tag_publisher(Config::load(&json_config)?, json_proxy.port, std::fs::read(&broker.ca)?));

    // Steady state: both connected and past their first (birth, connect) messages.
    wait_for("both publishers sending", Duration::from_secs(30), || async {
        (ours_proxy.bytes() > 2000 && json_proxy.bytes() > 2000 && all_proxy.bytes() > 2000).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ours_start, json_start, all_start) = (ours_proxy.bytes(), json_proxy.bytes(), all_proxy.bytes());
    // A measurement window, not a wait for readiness.
    tokio::time::sleep(WINDOW).await;
    let (ours, json, all) =
        (ours_proxy.bytes() - ours_start, json_proxy.bytes() - json_start, all_proxy.bytes() - all_start);
    baseline.abort();

    let point_polls = (points_per_poll as u64 * WINDOW.as_secs()) as f64;
    let (ours_per_point, json_per_point, all_per_point) =
        (ours as f64 / point_polls, json as f64 / point_polls, all as f64 / point_polls);
    let ratio = ours_per_point / json_per_point;
    println!(
        "P5 {points_per_poll} points ({UNITS} chillers) polled every second for {} s; bytes through TLS, both directions",
        WINDOW.as_secs()
    );
    println!(
        "P5 ours, defaults (protobuf batches, report by exception, snapshot every 60 s): {ours} bytes, {ours_per_point:.2} bytes per point polled"
    );
    println!(
        "P5 ours, every point every second: {all} bytes, {all_per_point:.2} bytes per point polled ({:.3}x JSON)",
        all_per_point / json_per_point
    );
    println!("P5 JSON message per tag, QoS 1: {json} bytes, {json_per_point:.2} bytes per point polled");
    let pass = ratio <= 0.3;
    println!("P5 ratio={ratio:.3} target<=0.3 {}", verdict(pass));
    Ok(pass)
}

/// Resident memory (KiB) and CPU time (seconds) of `pid` and its descendants, from `/proc`.
fn footprint(pid: u32) -> (u64, f64) {
    let stat_fields = |pid: u32| -> Option<Vec<String>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which may hold spaces: state, ppid, … utime, stime.
        Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_owned).collect())
    };
    let mut pids = vec![pid];
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, stat_fields(p)?.get(1)?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    while let Some(child) = all.iter().find(|(p, parent)| pids.contains(parent) && !pids.contains(p)) {
        pids.push(child.0);
    }
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let mut rss_kib = 0;
    let mut cpu_s = 0.0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        rss_kib += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if let Some(fields) = stat_fields(pid) {
            let time = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
            cpu_s += (time(11) + time(12)) / ticks;
        }
    }
    (rss_kib, cpu_s)
}

/// What one gateway costs while polling.
struct Footprint {
    rss_mib: f64,
    cpu_percent: f64,
    requests_per_s: f64,
}

/// Lets `child` warm up, then measures it over `window`, sampling its memory every 10 s.
/// Returns the figures at the end of the window and the memory samples.
async fn measure(
    child: &mut tokio::process::Child,
    sim: &Simulator,
    window: Duration,
) -> anyhow::Result<(Footprint, Vec<f64>)> {
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("process gone"))?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (_, cpu_start) = footprint(pid);
    let requests_start = sim_requests(sim).await?;
    let started = std::time::Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < window {
        samples.push(footprint(pid).0 as f64 / 1024.0);
        tokio::time::sleep(Duration::from_secs(10).min(window)).await;
    }
    let (rss_kib, cpu_end) = footprint(pid);
    let elapsed = started.elapsed().as_secs_f64();
    let requests = sim_requests(sim).await? - requests_start;
    anyhow::ensure!(child.try_wait()?.is_none(), "the gateway exited during the measurement");
    samples.push(rss_kib as f64 / 1024.0);
    let figures = Footprint {
        rss_mib: rss_kib as f64 / 1024.0,
        cpu_percent: (cpu_end - cpu_start) / elapsed * 100.0,
        requests_per_s: requests as f64 / elapsed,
    };
    Ok((figures, samples))
}

/// Starts a peer from the `commands.json` that `tests/peers/configs.py` wrote.
fn spawn_peer(commands: &serde_json::Value, name: &str, log: &Path) -> anyhow::Result<tokio::process::Child> {
    let command = &commands[name];
    let argv: Vec<&str> = command["argv"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
    let (program, args) = argv.split_first().ok_or_else(|| anyhow::anyhow!("no command for {name}"))?;
    let envs = command["env"].as_object().into_iter().flatten().filter_map(|(k, v)| Some((k, v.as_str()?)));
    let log = std::fs::File::create(log)?;
    Ok(tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(envs)
        .current_dir(command["cwd"].as_str().unwrap_or("."))
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?)
}

/// P3: memory and CPU of the gateway polling 100 simulated devices x 100 registers every
/// second, against thingsboard-gateway and collectd's modbus plugin polling the same, each run
/// alone in turn. Ours runs five minutes to show its memory staying flat.
pub async fn p3() -> anyhow::Result<bool> {
    const UNITS: u8 = 100;
    const PEER_WINDOW: Duration = Duration::from_secs(30);
    const OUR_WINDOW: Duration = Duration::from_secs(300);
    let root = chillcloud_tests::harness::workspace_root();
    let dir = shared_temp_dir();
    let lines = [password_line("bench-p3", PASSWORD), password_line("bench-peer", PASSWORD)];
    let broker = PasswordMosquitto::start_plain(dir.path(), &lines).await;
    let sim = Simulator::start(UNITS, dir.path()).await;

    // Ours: the same 100 registers of each device, nothing else, on its defaults. The register
    // map is a site profile file that every device uses, as the peers' configurations define
    // it once too.
    let profile = dir.path().join("bank.toml");
    let points = bank_points("points", "");
    std::fs::write(&profile, format!("name = \"bank\"\ndescription = \"P3\"\naddressing_base = 0\n{points}"))?;
    let devices: String = (1..=UNITS)
        .map(|unit| {
            format!(
                "[[devices]]\nid = \"device-{unit}\"\nprofile = \"bank\"\nhost = \"127.0.0.1\"\nport = {}\nunit_id = {unit}\n",
                sim.modbus.port()
            )
        })
        .collect();
    let config = write_config(dir.path(), "bench-p3", broker.port, None, &devices);
    // The profile list is a top-level key: it goes before the tables.
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(&config, format!("profile_files = [\"{}\"]\n{text}", profile.display()))?;
    let mut ours = tokio::process::Command::new(bin("chillcloud-gateway"))
        .args(["run", "--config", &config.to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("gateway.log"))?)
        .kill_on_drop(true)
        .spawn()?;
    let (ours_figures, memory) = measure(&mut ours, &sim, OUR_WINDOW).await?;
    ours.kill().await?;

    // The peers, configured by tests/peers/configs.py (installed by tests/peers/setup.sh).
    let venv = root.join("target/peers-venv");
    let output = tokio::process::Command::new("python3")
        .arg(root.join("tests/peers/configs.py"))
        .args(["--modbus", &sim.modbus.to_string(), "--devices", &UNITS.to_string()])
        .args(["--out", &dir.path().join("peers").to_string_lossy()])
        .args([
            "--mqtt",
            &format!("127.0.0.1:{}", broker.port),
            "--mqtt-user",
            "bench-peer",
            "--mqtt-password",
            PASSWORD,
        ])
        .args(["--venv", &venv.to_string_lossy()])
        .output()
        .await?;
    anyhow::ensure!(output.status.success(), "configs.py: {}", String::from_utf8_lossy(&output.stderr));
    let commands: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("peers/commands.json"))?)?;
    let mut peers = Vec::new();
    for name in ["thingsboard-gateway", "collectd"] {
        let mut child = spawn_peer(&commands, name, &dir.path().join(format!("{name}.log")))?;
        let (figures, _) = measure(&mut child, &sim, PEER_WINDOW).await?;
        child.kill().await?;
        peers.push((name, figures));
    }

    println!("P3 {UNITS} devices x 100 input registers polled every second, each gateway alone, after 30 s of warm-up");
    let line = |name: &str, f: &Footprint| {
        println!(
            "P3 {name}: RSS {:.1} MiB, CPU {:.1} % of a core, {:.0} Modbus requests/s",
            f.rss_mib, f.cpu_percent, f.requests_per_s
        )
    };
    line("ours", &ours_figures);
    for (name, figures) in &peers {
        line(name, figures);
    }
    let (low, high) = memory.iter().fold((f64::MAX, 0f64), |(lo, hi), m| (lo.min(*m), hi.max(*m)));
    println!(
        "P3 ours over {} s: RSS between {low:.1} and {high:.1} MiB in {} samples (first {:.1}, last {:.1})",
        OUR_WINDOW.as_secs(),
        memory.len(),
        memory.first().copied().unwrap_or_default(),
        memory.last().copied().unwrap_or_default(),
    );
    let best_rss = peers.iter().map(|(_, f)| f.rss_mib).fold(f64::MAX, f64::min);
    let best_cpu = peers.iter().map(|(_, f)| f.cpu_percent).fold(f64::MAX, f64::min);
    let (rss_ratio, cpu_ratio) = (ours_figures.rss_mib / best_rss, ours_figures.cpu_percent / best_cpu);
    println!("P3 ours against the best peer: RSS {rss_ratio:.2}x, CPU {cpu_ratio:.2}x; absolute RSS target 20 MiB");
    let ratio = rss_ratio.max(cpu_ratio);
    let pass = ratio <= 0.5 && ours_figures.rss_mib < 20.0;
    println!("P3 ratio={ratio:.2} target<=0.5 {}", verdict(pass));
    Ok(pass)
}
