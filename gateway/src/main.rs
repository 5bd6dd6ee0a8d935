//! `chillcloud-gateway`: run the gateway, check a configuration, or poll once for commissioning.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use chillcloud_gateway::{
    config::Config,
    managed::{Managed, Received, Verdict},
    now_ms,
    publish::ConfigChannel,
    session::Session,
    status::StatusBoard,
};
use chillcloud_proto::GatewayConfig;
use clap::{Parser, Subcommand};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Chillcloud field gateway: Modbus to MQTT")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written: `text` (coloured only on a terminal) or `json`.
    #[arg(long, global = true, env = "CHILLCLOUD_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Poll the configured devices and publish to the broker until stopped.
    Run {
        /// The configuration file.
        #[arg(long, short, env = "CHILLCLOUD_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and report every problem found.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Read every point of every device once and print the values as JSON (for commissioning).
    PollOnce {
        /// The configuration file.
        file: PathBuf,
    },
    /// Find the Modbus units that answer at TCP addresses or on an RTU line, identify them and
    /// print a configuration for them (only reads; one request at a time, paced).
    Scan(Box<ScanArgs>),
    /// Print the running gateway's status report: devices, broker link, queue.
    Status {
        /// The configuration file.
        #[arg(long, short, env = "CHILLCLOUD_GATEWAY_CONFIG")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct ScanArgs {
    /// Modbus TCP hosts: `host[:port]`, `10.0.0.10-40[:port]` or `10.0.0.0/28[:port]` (port 502
    /// unless given), optionally with their own unit ids after `@` (`10.0.0.5@1-8` for a TCP to
    /// RS-485 gateway); repeat for several.
    #[arg(long = "tcp", value_name = "HOSTS")]
    tcp: Vec<String>,
    /// An RS-485 line's serial port, for example /dev/ttyUSB0.
    #[arg(long, value_name = "PATH", conflicts_with = "rtu_over_tcp")]
    serial_port: Option<PathBuf>,
    /// A serial device server passing RTU frames over TCP, `host:port`, instead of a serial port.
    #[arg(long, value_name = "HOST:PORT")]
    rtu_over_tcp: Option<String>,
    /// The line's bits per second.
    #[arg(long, default_value_t = 9600)]
    baud_rate: u32,
    /// The line's parity: even, odd or none.
    #[arg(long, default_value = "even")]
    parity: String,
    /// The line's stop bits.
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
    /// Unit ids to ask, for example `1-16,100` (default: 1 over TCP, since a TCP device usually
    /// answers to any unit id; 1-247 on a line).
    #[arg(long)]
    unit_ids: Option<String>,
    /// Milliseconds to wait for each answer.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
    /// Least milliseconds between one request's end and the next's start.
    #[arg(long, default_value_t = 100)]
    pause_ms: u64,
    /// The configuration's gateway id.
    #[arg(long, default_value = "gateway-1")]
    gateway_id: String,
    /// The configuration's state directory.
    #[arg(long, default_value = "/var/lib/chillcloud-gateway")]
    state_dir: String,
    /// The broker's host.
    #[arg(long, default_value = "localhost")]
    mqtt_host: String,
    /// The broker's port.
    #[arg(long, default_value_t = 1883)]
    mqtt_port: u16,
    /// The file with the gateway's MQTT password.
    #[arg(long, default_value = "/etc/chillcloud/gateway.secret")]
    password_file: String,
}

/// Scans as `args` say and prints the configuration proposed; fails if no unit got a profile.
fn scan(args: ScanArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    use chillcloud_gateway::{config::BusConfig, profile, scan};
    let unit_ids = |spec: Option<&str>, default: &str| scan::parse_unit_ids(spec.unwrap_or(default));
    let mut targets = Vec::new();
    for spec in &args.tcp {
        let (hosts, ids) = match spec.split_once('@') {
            Some((hosts, ids)) => (hosts, Some(ids)),
            None => (spec.as_str(), args.unit_ids.as_deref()),
        };
        let ids = unit_ids(ids, "1").map_err(anyhow::Error::msg)?;
        let hosts = scan::parse_hosts(hosts).map_err(anyhow::Error::msg)?;
        targets.extend(hosts.into_iter().map(|(host, port)| (scan::Target::Tcp { host, port }, ids.clone())));
    }
    let endpoint = match (&args.serial_port, &args.rtu_over_tcp) {
        (Some(path), _) => Some(format!("serial_port = {}", scan::quoted(&path.to_string_lossy()))),
        (None, Some(address)) => Some(format!("rtu_over_tcp = {}", scan::quoted(address))),
        (None, None) => None,
    };
    if let Some(endpoint) = &endpoint {
        let table = format!(
            "id = \"rs485-1\"\n{endpoint}\nbaud_rate = {}\nparity = {}\nstop_bits = {}\n",
            args.baud_rate,
            scan::quoted(&args.parity),
            args.stop_bits
        );
        let bus = BusConfig::from_table(&table)?;
        let ids = unit_ids(args.unit_ids.as_deref(), "1-247").map_err(anyhow::Error::msg)?;
        targets.push((scan::Target::Line { bus, table }, ids));
    }
    anyhow::ensure!(!targets.is_empty(), "nothing to scan: give --tcp, --serial-port or --rtu-over-tcp");
    let plan = scan::Plan {
        targets,
        wait: Duration::from_millis(args.timeout_ms.max(1)),
        pause: Duration::from_millis(args.pause_ms),
    };
    let profiles: Vec<_> = profile::NAMES.iter().filter_map(|name| profile::builtin(name)).collect();
    let findings = runtime.block_on(scan::scan(&plan, &profiles));
    let preamble = scan::Preamble {
        gateway_id: args.gateway_id,
        state_dir: args.state_dir,
        mqtt_host: args.mqtt_host,
        mqtt_port: args.mqtt_port,
        password_file: args.password_file,
    };
    print!("{}", scan::render(&plan, &findings, &preamble));
    let proposed = findings.units.iter().filter(|u| u.proposal != scan::Proposal::Unknown).count();
    eprintln!(
        "{} unit(s) answered, {proposed} with a profile proposed; {} silent",
        findings.units.len(),
        findings.silent.values().map(Vec::len).sum::<usize>()
    );
    anyhow::ensure!(proposed > 0, "no unit found that a built-in profile fits");
    Ok(())
}

/// How log lines are written.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Coloured text on a terminal, plain text otherwise (a file, journald).
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Logs to standard error in `format`, at the level `RUST_LOG` sets (else `default_filter`).
fn init_logging(format: LogFormat, default_filter: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, "info");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.command {
        Command::Run { config: path } => {
            let config = Config::load(&path)?;
            runtime.block_on(run_until_stopped(config, &path))?;
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            let points: usize = config.devices.iter().map(|d| d.points.len()).sum();
            println!("{}: ok ({} devices, {points} points)", file.display(), config.devices.len());
        }
        Command::Scan(args) => scan(*args, &runtime)?,
        Command::Status { config } => {
            let config = Config::load(&config)?;
            let path = chillcloud_gateway::status::path(&config.state_dir);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("no status report at {} (is the gateway running?)", path.display()))?;
            println!("{text}");
        }
        Command::PollOnce { file } => {
            let config = Config::load(&file)?;
            let session = Session::new(&config, 0);
            let values = runtime.block_on(async {
                let mut out = Vec::new();
                for mut poller in session.pollers(&config, &StatusBoard::default()) {
                    let samples = poller.poll().await;
                    out.extend(samples.into_iter().map(|s| (poller.device().id.clone(), s)));
                }
                out
            });
            let birth = session.birth(&[]);
            let names: Vec<_> =
                birth.devices.iter().flat_map(|d| d.points.iter().map(|p| (p.name.clone(), p.unit.clone()))).collect();
            let rows: Vec<_> = values
                .into_iter()
                .map(|(device, s)| {
                    let (name, unit) = &names[s.alias as usize];
                    json!({"device": device, "point": name, "value": s.value, "unit": unit, "quality": format!("{:?}", s.quality)})
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows).context("render values")?);
        }
    }
    Ok(())
}

/// Runs the gateway until SIGTERM or Ctrl-C. The configuration in force is the file, with the
/// site part of the server-held version when there is one ([`Managed`]). On SIGHUP the file is
/// read again: if it is valid the session stops (queueing what it read last) and starts afresh
/// with it; if not, the errors are logged and the running configuration stays. A version from
/// the server restarts the session the same way and is then on trial: the session restarts once
/// more, with the configuration before it, if a device that answered stops answering.
async fn run_until_stopped(mut local: Config, path: &Path) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let status = StatusBoard::default();
    let mut managed = Managed::open(&local.state_dir)
        .with_context(|| format!("read the server-held configuration's state in {}", local.state_dir.display()))?;
    let (received_tx, mut received) = mpsc::unbounded_channel();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let config = managed.config(&local);
        let devices = config.devices.len();
        let (reports, reports_rx) = mpsc::unbounded_channel();
        let channel =
            ConfigChannel { received: received_tx.clone(), reports: reports_rx, last_report: managed.last_report() };
        let generation = shutdown.child_token();
        let started = tokio::time::Instant::now();
        // The running session owns its configuration: a reload brings a new one.
        let run = chillcloud_gateway::run(config, &status, channel, generation.clone());
        tokio::pin!(run);
        // A version that comes before the session has polled every device waits for that (or
        // for 10 s): which devices answered is what its trial watches.
        let mut waiting: Option<GatewayConfig> = None;
        loop {
            let settled = status.devices().len() >= devices || started.elapsed() >= Duration::from_secs(10);
            if settled && let Some(message) = waiting.take() {
                let answering: Vec<String> =
                    status.devices().into_iter().filter(|(_, d)| d.healthy).map(|(id, _)| id).collect();
                match managed.receive(&message, &local.gateway_id, &answering, now_ms()) {
                    Ok(Received::Apply) => break,
                    Ok(Received::Refused(report)) => {
                        tracing::warn!(version = report.version, reason = %report.reason, "server's configuration refused");
                        let _ = reports.send(report);
                    }
                    Ok(Received::Duplicate(report)) => {
                        if let Some(report) = report {
                            let _ = reports.send(report);
                        }
                    }
                    Err(error) => tracing::error!(%error, "cannot record the server's configuration; not applied"),
                }
            }
            tokio::select! {
                result = &mut run => {
                    result?;
                    return Ok(());
                }
                _ = hangup.recv() => match Config::load(path) {
                    Ok(new) => {
                        tracing::info!(path = %path.display(), "configuration reloaded; restarting");
                        local = new;
                        break;
                    }
                    Err(error) => tracing::error!(%error, "configuration not reloaded; keeping the running one"),
                },
                Some(message) = received.recv() => waiting = Some(message),
                _ = tick.tick() => {
                    if !managed.on_trial() {
                        continue;
                    }
                    match managed.judge(&status.devices(), local.config_trial, now_ms()) {
                        Ok(Verdict::Pending) => {}
                        Ok(Verdict::Confirmed(report)) => {
                            let _ = reports.send(report);
                        }
                        // The next session runs the configuration before and sends the report.
                        Ok(Verdict::RolledBack(_)) => break,
                        Err(error) => tracing::error!(%error, "cannot record the trial's outcome"),
                    }
                }
            }
        }
        generation.cancel();
        (&mut run).await?;
        if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    shutdown.cancel();
}
