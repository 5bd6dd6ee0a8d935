//! `chillcloud-gateway`: run the gateway, check a configuration, or poll once for commissioning.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chillcloud_gateway::{config::Config, session::Session, status::StatusBoard};
use clap::{Parser, Subcommand};
use serde_json::json;
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
    /// Print the running gateway's status report: devices, broker link, queue.
    Status {
        /// The configuration file.
        #[arg(long, short, env = "CHILLCLOUD_GATEWAY_CONFIG")]
        config: PathBuf,
    },
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

/// Runs the gateway until SIGTERM or Ctrl-C. On SIGHUP the configuration file is read again:
/// if it is valid the gateway stops (queueing what it read last) and starts afresh with it;
/// if not, the errors are logged and the running configuration stays.
async fn run_until_stopped(mut config: Config, path: &Path) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let status = StatusBoard::default();
    loop {
        let generation = shutdown.child_token();
        // The running session owns its configuration: a reload brings a new one.
        let run = chillcloud_gateway::run(config, &status, generation.clone());
        tokio::pin!(run);
        let reloaded = loop {
            tokio::select! {
                result = &mut run => {
                    result?;
                    break None;
                }
                _ = hangup.recv() => match Config::load(path) {
                    Ok(new) => {
                        tracing::info!(path = %path.display(), "configuration reloaded; restarting");
                        generation.cancel();
                        (&mut run).await?;
                        break Some(new);
                    }
                    Err(error) => tracing::error!(%error, "configuration not reloaded; keeping the running one"),
                },
            }
        };
        match reloaded {
            Some(new) if !shutdown.is_cancelled() => config = new,
            _ => return Ok(()),
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
