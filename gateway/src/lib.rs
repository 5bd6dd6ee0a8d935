//! The Chillcloud field gateway: polls chiller controllers over Modbus and publishes their
//! readings to the cloud over MQTT.

pub mod backoff;
pub mod boost;
pub mod command;
pub mod config;
pub mod device;
pub mod durable;
pub mod managed;
pub mod modbus;
pub mod points;
pub mod poll;
pub mod profile;
pub mod publish;
pub mod queue;
pub mod scan;
pub mod session;
pub mod status;
pub mod throttle;
pub mod transport;

use std::{collections::BTreeMap, path::Path, time::Duration};

use chillcloud_proto::Birth;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    config::Config, poll::DevicePoller, publish::Forwarder, queue::Queue, session::Session, status::StatusBoard,
};

/// Errors that stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] points::ConfigError),
    /// The state directory cannot be used.
    #[error("state directory {path}: {source}")]
    State {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// The birth of session `session` of `config`, with each device's `attributes` (see
/// [`Session::birth`]).
pub fn birth(config: &Config, session: u64, attributes: &[BTreeMap<String, String>]) -> Birth {
    Session::new(config, session).birth(attributes)
}

/// Pollers for every device of `config`, with aliases matching [`birth`], reporting their
/// health to `status` (see [`Session::pollers`]).
pub fn pollers(config: &Config, status: &StatusBoard) -> Vec<DevicePoller> {
    Session::new(config, 0).pollers(config, status)
}

/// Starts a new session: the number of the previous one plus one, stored durably first so a
/// crash can never reuse a session number.
pub fn next_session(state_dir: &Path) -> Result<u64, Error> {
    let state_error = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::State { path, source }
    };
    std::fs::create_dir_all(state_dir).map_err(state_error(state_dir))?;
    let path = state_dir.join("session");
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|e| Error::State { path: path.clone(), source: std::io::Error::other(e) })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(state_error(&path)(e)),
    };
    let session = previous + 1;
    durable::replace(&path, format!("{session}\n").as_bytes()).map_err(state_error(&path))?;
    Ok(session)
}

/// Runs the gateway as a new session until `shutdown` is cancelled, reporting to `status`;
/// server-held configurations received go out, and reports come in, through `configs`. What
/// it read last is queued before it returns, so a reload loses nothing.
pub async fn run(
    config: Config,
    status: &StatusBoard,
    configs: publish::ConfigChannel,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let session = Session::new(&config, next_session(&config.state_dir)?);
    status.start_session(session.number, config.site_version);
    let mut pollers = session.pollers(&config, status);
    let mut attributes = Vec::with_capacity(pollers.len());
    for poller in &mut pollers {
        attributes.push(poller.read_attributes().await);
    }
    let birth = session.birth(&attributes);
    let queue_dir = config.state_dir.join("queue");
    let queue_error = |source| Error::State { path: queue_dir.clone(), source };
    let queue = Queue::open(&queue_dir, config.queue, session.number).map_err(queue_error)?;
    queue.store_birth(&birth.encode_to_vec()).map_err(queue_error)?;
    info!(gateway = %config.gateway_id, session = session.number, devices = config.devices.len(), "gateway starting");

    let journal = command::Journal::open(&config.state_dir, now_ms())
        .map_err(|source| Error::State { path: config.state_dir.join("commands"), source })?;
    let forwarder = Forwarder::new(queue, &birth);
    let (samples_tx, samples_rx) = mpsc::channel(256);
    let count = pollers.len().max(1) as u32;
    let mut tasks = tokio::task::JoinSet::new();
    let (results_tx, results) = mpsc::channel(16);
    let mut boosts = boost::Boosts::default();
    let mut device_commands = Vec::with_capacity(pollers.len());
    for (i, poller) in pollers.into_iter().enumerate() {
        let stagger = poller.device().poll_interval.mul_f64(f64::from(i as u32) / f64::from(count));
        let boost_rx = boosts.add(poller.device().id.clone());
        // A few commands may wait for a device; more are refused as busy.
        let (command_tx, command_rx) = mpsc::channel(4);
        device_commands.push(command_tx);
        tasks.spawn(device::run_device(
            poller,
            stagger,
            boost_rx,
            command_rx,
            samples_tx.clone(),
            results_tx.clone(),
            shutdown.clone(),
        ));
    }
    if tasks.is_empty() {
        // No devices (a box provisioned before its devices are set on the server): nothing
        // sends samples, yet the gateway stays connected, for its configuration, until stopped.
        let idle = samples_tx.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            drop(idle)
        });
    }
    drop((samples_tx, results_tx));
    let commands = command::Commands::new(journal, device_commands, results);
    let control = publish::Control { boosts, commands, configs };
    // The pollers stop at `shutdown`; the forwarder then queues what they hand over last.
    publish::run(&config, forwarder, session.decimals(), samples_rx, control, status.clone(), shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    info!("gateway stopped");
    Ok(())
}

/// A configuration for unit tests: gateway `gw-1` with `devices` (the TOML of its
/// `[[devices]]`), its password read from a temporary file.
#[cfg(test)]
fn test_config(devices: &str) -> Config {
    let password = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(password.path(), "secret\n").expect("write password");
    let text = format!(
        "gateway_id = \"gw-1\"\nstate_dir = \"/tmp/x\"\n[mqtt]\nhost = \"localhost\"\npassword_file = \"{}\"\n{devices}",
        password.path().display()
    );
    Config::parse(&text, Path::new("gw.toml")).expect("valid config")
}
