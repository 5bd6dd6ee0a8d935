//! The gateway's status report: per-device health, the broker link and the queue, written to
//! `<state_dir>/status.json` twice a second and at exit, and printed by
//! `chillcloud-gateway status`. A file rather than a port: nothing listens on the site network.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};

use crate::queue::QueueStatus;

/// The whole report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// The running session.
    pub session: u64,
    /// The version of the server-held configuration it runs; 0 for the file's own.
    #[serde(default)]
    pub config_version: u32,
    /// When the report was written, ms since the epoch.
    pub time_ms: i64,
    /// Whether the broker connection is up.
    pub connected: bool,
    /// Broker connections made since start.
    pub connections: u64,
    /// The broker (`host:port`) of the current connection, or of the one being tried.
    #[serde(default)]
    pub broker: String,
    /// Readings queued since the process started, across reloads (every one is delivered or
    /// reported dropped).
    pub readings_queued: u64,
    /// Readings lost because the queue could not be written (a failing or full disk).
    pub readings_lost_to_disk_errors: u64,
    /// Poll boosts received from the server since the process started, refused ones included.
    #[serde(default)]
    pub boosts_received: u64,
    /// Of those, the ones refused (malformed, for an unknown device, with no interval, or
    /// already over).
    #[serde(default)]
    pub boosts_refused: u64,
    /// Remote commands received since the process started, by outcome: `done`, `refused`,
    /// `failed`, `expired`, `duplicate` (a copy of one already taken, not executed again) and
    /// `malformed` (not a command at all).
    #[serde(default)]
    pub commands: BTreeMap<String, u64>,
    /// The store-and-forward queue.
    pub queue: QueueStatusReport,
    /// Each device by id.
    pub devices: BTreeMap<String, DeviceStatus>,
}

/// The queue part of the report (see [`QueueStatus`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueStatusReport {
    /// Batches not yet acknowledged by the broker.
    pub unacked_batches: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Age of the oldest reading waiting to be sent (to a segment's precision), in seconds.
    pub oldest_age_secs: f64,
    /// Batches dropped because of the queue's limits since start.
    pub dropped_batches: u64,
    /// Readings in them.
    pub dropped_readings: u64,
    /// Corrupt records cut off at start.
    pub corrupt_records: u64,
}

impl QueueStatusReport {
    fn new(queue: QueueStatus, now_ms: i64) -> Self {
        Self {
            unacked_batches: queue.unacked_batches,
            bytes: queue.bytes,
            oldest_age_secs: if queue.oldest_ms == 0 { 0.0 } else { (now_ms - queue.oldest_ms) as f64 / 1000.0 },
            dropped_batches: queue.dropped_batches,
            dropped_readings: queue.dropped_readings,
            corrupt_records: queue.corrupt_records,
        }
    }
}

/// One device's health.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Whether the last poll read every block.
    pub healthy: bool,
    /// When every block last read, ms since the epoch (0: never).
    pub last_good_ms: i64,
    /// Polls in a row that failed.
    pub failed_polls: u64,
    /// Requests sent since start.
    pub requests: u64,
    /// The last error, if the last poll failed.
    pub last_error: Option<String>,
    /// While a poll boost is in force, when it ends, ms since the epoch.
    #[serde(default)]
    pub boost_until_ms: Option<i64>,
    /// Points whose registers the device refuses (it does not have them): sent as bad, tried
    /// again every ten minutes.
    #[serde(default)]
    pub missing_points: Vec<String>,
}

/// The report being built, shared by the pollers and the forwarder.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<GatewayStatus>>);

impl StatusBoard {
    /// A session starts (at start and after each reload): devices are reported afresh.
    pub fn start_session(&self, session: u64, config_version: u32) {
        let mut status = self.lock();
        status.session = session;
        status.config_version = config_version;
        status.devices.clear();
    }

    /// Counts readings written to the queue.
    pub fn queued(&self, readings: u64) {
        self.lock().readings_queued += readings;
    }

    /// Counts a poll boost received, and whether it was refused.
    pub fn boost_received(&self, refused: bool) {
        let mut status = self.lock();
        status.boosts_received += 1;
        status.boosts_refused += u64::from(refused);
    }

    /// Counts a command by its outcome (see [`GatewayStatus::commands`]).
    pub fn command(&self, outcome: &str) {
        *self.lock().commands.entry(outcome.to_owned()).or_default() += 1;
    }

    /// Counts readings the queue could not take.
    pub fn lost_to_disk_error(&self, readings: u64) {
        self.lock().readings_lost_to_disk_errors += readings;
    }

    fn lock(&self) -> MutexGuard<'_, GatewayStatus> {
        // Plain data: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every device's health now.
    pub fn devices(&self) -> BTreeMap<String, DeviceStatus> {
        self.lock().devices.clone()
    }

    /// Updates one device's health.
    pub fn device(&self, id: &str, update: impl FnOnce(&mut DeviceStatus)) {
        update(self.lock().devices.entry(id.to_owned()).or_default());
    }

    /// Updates the link and queue figures.
    pub fn link(
        &self,
        connected: bool,
        connections: u64,
        broker: &dyn std::fmt::Display,
        queue: QueueStatus,
        now_ms: i64,
    ) {
        let mut status = self.lock();
        status.connected = connected;
        status.connections = connections;
        status.broker = broker.to_string();
        status.queue = QueueStatusReport::new(queue, now_ms);
        status.time_ms = now_ms;
    }

    /// Writes the report to `path` (replacing it whole, so readers never see half of it).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(&*self.lock()).map_err(std::io::Error::other)?;
        // Rewritten twice a second and rebuilt from scratch at start: not worth a sync.
        crate::durable::replace_unsynced(path, &text)
    }
}

/// Where the report of a gateway with state in `state_dir` is written.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}
