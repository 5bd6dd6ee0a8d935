//! Counters the server exposes at `/metrics` in the Prometheus text format.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A running total of time, exposed in seconds.
#[derive(Debug, Default)]
pub struct SecondsCounter(AtomicU64);

impl SecondsCounter {
    /// Adds a duration.
    pub fn add_duration(&self, duration: std::time::Duration) {
        self.0.fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// The total in seconds.
    pub fn seconds(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// A value that goes up and down, kept as the bits of an `f64`.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// What the last look at storage found (see `storage_watch`).
#[derive(Debug, Default)]
pub struct StorageStatus {
    database_bytes: Gauge,
    disk_used_percent: Gauge,
    jobs_in_trouble: Gauge,
    chunks_behind: Gauge,
    troubles: std::sync::Mutex<Vec<String>>,
}

impl StorageStatus {
    /// Records a look's report and the troubles it shows.
    pub fn publish(&self, report: &crate::storage_watch::StorageReport, troubles: impl Iterator<Item = String>) {
        self.database_bytes.set(report.database_bytes as f64);
        self.disk_used_percent.set(report.disk_used_percent.unwrap_or(f64::NAN));
        self.jobs_in_trouble.set((report.failing_jobs.len() + report.paused_jobs.len()) as f64);
        self.chunks_behind.set(report.chunks_behind as f64);
        *self.troubles.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = troubles.collect();
    }

    /// The troubles of the last look; none before the first.
    pub fn troubles(&self) -> Vec<String> {
        self.troubles.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Why ingest cannot make progress: the broker is away (or refused the subscriptions), or the
/// database keeps refusing a batch. Each records since when (Unix ms, 0 while fine).
#[derive(Debug, Default)]
pub struct IngestProgress {
    broker_down_since_ms: AtomicI64,
    database_failing_since_ms: AtomicI64,
}

/// What stops ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Not connected and subscribed at the broker.
    Broker,
    /// Batches fail to commit.
    Database,
}

impl Stall {
    /// How `/health` and the logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Stall::Broker => "not subscribed at the broker",
            Stall::Database => "the database refuses to store batches",
        }
    }
}

impl IngestProgress {
    fn clock(&self, stall: Stall) -> &AtomicI64 {
        match stall {
            Stall::Broker => &self.broker_down_since_ms,
            Stall::Database => &self.database_failing_since_ms,
        }
    }

    /// Ingest cannot progress for this reason from `now_ms` on, unless it already could not.
    pub fn stalled(&self, stall: Stall, now_ms: i64) {
        let _ = self.clock(stall).compare_exchange(0, now_ms, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// This reason is over.
    pub fn resumed(&self, stall: Stall) {
        self.clock(stall).store(0, Ordering::Relaxed);
    }

    /// The longest-standing stall at `now_ms` and how long it has lasted, in ms.
    pub fn longest(&self, now_ms: i64) -> Option<(Stall, i64)> {
        [Stall::Broker, Stall::Database]
            .into_iter()
            .filter_map(|stall| {
                let since = self.clock(stall).load(Ordering::Relaxed);
                (since != 0).then(|| (stall, now_ms.saturating_sub(since).max(0)))
            })
            .max_by_key(|&(_, lasted)| lasted)
    }
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// MQTT messages received from the broker.
    pub messages_received: Counter,
    /// Messages refused (bad topic, payload or gateway).
    pub messages_rejected: Counter,
    /// Data messages held because their session's birth had not arrived.
    pub messages_held_for_birth: Counter,
    /// Readings committed to the database.
    pub readings_stored: Counter,
    /// Readings skipped because their alias is not in the session's birth.
    pub readings_unknown_alias: Counter,
    /// Readings refused for an impossible time or a non-finite value.
    pub readings_refused: Counter,
    /// Readings that arrived as backfill from a gateway's store-and-forward queue.
    pub readings_history: Counter,
    /// Readings gateways reported they dropped unsent (their queue was full or too old).
    pub readings_dropped_by_gateways: Counter,
    /// Database operations that failed (and were retried).
    pub database_errors: Counter,
    /// Batches committed by ingest.
    pub batches_stored: Counter,
    /// Messages in committed batches (divided by `batches_stored`: the mean batch size).
    pub batch_messages: Counter,
    /// Time spent storing batches.
    pub database_seconds: SecondsCounter,
    /// How old the oldest live reading of the last committed batch was when it was committed.
    pub ingest_lag_seconds: Gauge,
    /// 1 while the broker has granted the ingest subscriptions on the current connection, else 0.
    pub broker_subscribed: Gauge,
    /// Whether ingest can make progress, and since when not.
    pub ingest: IngestProgress,
    /// Storage's health.
    pub storage: StorageStatus,
    /// Requests refused because a bound was reached (a queue full, a result too large).
    pub requests_refused_by_bounds: Counter,
    /// Sign-in attempts refused by the rate limits.
    pub sign_ins_limited: Counter,
    /// Alarm episodes opened.
    pub alarms_raised: Counter,
    /// Derived values stored as readings.
    pub derived_stored: Counter,
    /// Alarm processing failures (the engine's state is then reloaded from the database).
    pub alarm_errors: Counter,
    /// SMS replies that acknowledged alarms.
    pub replies_accepted: Counter,
    /// SMS replies refused: bad signature, unknown code or unreadable text.
    pub replies_refused: Counter,
    /// Imports of gateways' users into RabbitMQ that failed (retried on the next occasion).
    pub broker_user_imports_failed: Counter,
}

impl Metrics {
    /// Renders every counter in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let counters: [(&str, &str, f64); 20] = [
            (
                "chillcloud_mqtt_messages_received_total",
                "MQTT messages received from the broker",
                self.messages_received.get() as f64,
            ),
            (
                "chillcloud_mqtt_messages_rejected_total",
                "MQTT messages refused and dead-lettered",
                self.messages_rejected.get() as f64,
            ),
            (
                "chillcloud_mqtt_messages_held_for_birth_total",
                "Data messages held until their birth arrives",
                self.messages_held_for_birth.get() as f64,
            ),
            (
                "chillcloud_readings_stored_total",
                "Readings committed to the database",
                self.readings_stored.get() as f64,
            ),
            (
                "chillcloud_readings_unknown_alias_total",
                "Readings skipped for an alias missing from the birth",
                self.readings_unknown_alias.get() as f64,
            ),
            (
                "chillcloud_readings_refused_total",
                "Readings refused for an impossible time or value",
                self.readings_refused.get() as f64,
            ),
            (
                "chillcloud_readings_history_total",
                "Readings received as backfill from gateway queues",
                self.readings_history.get() as f64,
            ),
            (
                "chillcloud_readings_dropped_by_gateways_total",
                "Readings gateways reported dropped before delivery",
                self.readings_dropped_by_gateways.get() as f64,
            ),
            (
                "chillcloud_database_errors_total",
                "Database operations that failed and were retried",
                self.database_errors.get() as f64,
            ),
            ("chillcloud_ingest_batches_total", "Batches committed by ingest", self.batches_stored.get() as f64),
            (
                "chillcloud_ingest_batch_messages_total",
                "Messages in committed batches",
                self.batch_messages.get() as f64,
            ),
            ("chillcloud_ingest_database_seconds_total", "Time spent storing batches", self.database_seconds.seconds()),
            ("chillcloud_alarms_raised_total", "Alarm episodes opened", self.alarms_raised.get() as f64),
            (
                "chillcloud_derived_values_stored_total",
                "Derived values stored as readings",
                self.derived_stored.get() as f64,
            ),
            (
                "chillcloud_alarm_errors_total",
                "Alarm processing failures (state reloaded from the database)",
                self.alarm_errors.get() as f64,
            ),
            (
                "chillcloud_sms_replies_accepted_total",
                "SMS replies that acknowledged alarms",
                self.replies_accepted.get() as f64,
            ),
            (
                "chillcloud_http_requests_refused_by_bounds_total",
                "Requests refused because a bound was reached (a queue full, a result too large)",
                self.requests_refused_by_bounds.get() as f64,
            ),
            (
                "chillcloud_sign_ins_limited_total",
                "Sign-in attempts refused by the rate limits",
                self.sign_ins_limited.get() as f64,
            ),
            (
                "chillcloud_sms_replies_refused_total",
                "SMS replies refused (signature, code or text)",
                self.replies_refused.get() as f64,
            ),
            (
                "chillcloud_broker_user_imports_failed_total",
                "Imports of gateways' users into RabbitMQ's management API that failed",
                self.broker_user_imports_failed.get() as f64,
            ),
        ];
        let stalled_ms = self.ingest.longest(chrono::Utc::now().timestamp_millis()).map_or(0, |(_, ms)| ms);
        let storage = &self.storage;
        let gauges: [(&str, &str, f64); 8] = [
            (
                "chillcloud_ingest_lag_seconds",
                "Age of the oldest live (not backfilled) reading of the last batch when it was committed",
                self.ingest_lag_seconds.get(),
            ),
            (
                "chillcloud_broker_subscribed",
                "1 while the broker has granted the ingest subscriptions, 0 while disconnected or waiting",
                self.broker_subscribed.get(),
            ),
            (
                "chillcloud_ingest_stalled_seconds",
                "How long ingest has been unable to make progress (0 while it can)",
                stalled_ms as f64 / 1000.0,
            ),
            ("chillcloud_storage_database_bytes", "Size of the database on disk", storage.database_bytes.get()),
            (
                "chillcloud_storage_disk_used_percent",
                "How full the database's disk is (NaN when it is not on this machine)",
                storage.disk_used_percent.get(),
            ),
            (
                "chillcloud_storage_jobs_in_trouble",
                "TimescaleDB jobs whose last run failed, and the server's policies that are paused",
                storage.jobs_in_trouble.get(),
            ),
            (
                "chillcloud_storage_chunks_behind",
                "Chunks of readings a day or more past due for compression",
                storage.chunks_behind.get(),
            ),
            (
                "chillcloud_storage_troubles",
                "Kinds of storage trouble found by the last check (each a service alarm)",
                storage.troubles().len() as f64,
            ),
        ];
        let render = |kind: &str, (name, help, value): &(&str, &str, f64)| {
            format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n")
        };
        counters.iter().map(|c| render("counter", c)).chain(gauges.iter().map(|g| render("gauge", g))).collect()
    }
}
