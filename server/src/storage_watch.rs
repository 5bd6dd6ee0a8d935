//! Storage watching itself. TimescaleDB's background jobs (compression, retention, the
//! aggregates' refreshes) can fail for good without anything else noticing: on PostgreSQL 15.20
//! stock TimescaleDB 2.28.3 failed every one, and ingest went on storing while the aggregates
//! stayed empty. And a disk that fills stops everything at once. So every few seconds to minutes
//! the server reads the jobs' statistics, the chunks compression has left behind, the database's
//! size and (for the embedded cluster) its disk's free space, and shows what it found in
//! `/health` and `/metrics`; each kind of trouble is a service alarm (see [`service_alarms`]),
//! paged once when it starts and cleared when it is over.
//!
//! An external database's disk is the operator's to watch: only its size is known here.

use std::{path::PathBuf, sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    ServeSettings,
    metrics::Metrics,
    paging::Paging,
    service_alarms::{self, Fault},
    timescale::StorageMode,
};

/// What is watched, and the thresholds.
#[derive(Debug, Clone)]
pub struct Watched {
    /// How readings are stored: jobs and compression exist only with TimescaleDB.
    pub mode: StorageMode,
    /// A directory on the database's disk, when it is on this machine (the embedded cluster).
    pub disk: Option<PathBuf>,
    /// Alarm when the disk is fuller than this.
    pub disk_alarm_percent: u8,
    /// Chunks older than this should be compressed.
    pub compress_after: Duration,
    /// How often to look.
    pub every: Duration,
}

impl Watched {
    /// What a server with `settings` watches.
    pub fn new(settings: &ServeSettings, mode: StorageMode) -> Self {
        let policies = &settings.storage_policies;
        Self {
            mode,
            disk: settings.storage.database_url.is_none().then(|| settings.storage.data_dir.join("postgres")),
            disk_alarm_percent: policies.disk_alarm_percent,
            compress_after: policies.policies().compress_after,
            every: Duration::from_secs(policies.storage_check_seconds),
        }
    }
}

/// What one look found.
#[derive(Debug, Default)]
pub struct StorageReport {
    /// The database's size on disk.
    pub database_bytes: i64,
    /// How full the database's disk is, when it is on this machine.
    pub disk_used_percent: Option<f64>,
    /// TimescaleDB jobs whose last run failed, with the error.
    pub failing_jobs: Vec<String>,
    /// The server's own TimescaleDB policies that are paused.
    pub paused_jobs: Vec<String>,
    /// Chunks of readings a day or more past due for compression and still uncompressed.
    pub chunks_behind: i64,
}

/// The kinds of trouble, each its own service alarm.
const JOBS: &str = "storage-jobs";
const COMPRESSION: &str = "storage-compression";
const DISK: &str = "storage-disk";

impl StorageReport {
    /// Each kind of trouble, with what to say when there is some.
    pub fn troubles(&self, disk_alarm_percent: u8) -> [(&'static str, Option<(Fault, String)>); 3] {
        let jobs = (!self.failing_jobs.is_empty() || !self.paused_jobs.is_empty()).then(|| {
            let failing = self.failing_jobs.iter().map(|job| format!("failing: {job}"));
            let paused = self.paused_jobs.iter().map(|job| format!("paused: {job}"));
            let detail = failing.chain(paused).collect::<Vec<_>>().join("; ");
            let count = self.failing_jobs.len() + self.paused_jobs.len();
            // A text message stays short: which jobs and why is in /health.
            let fault = Fault {
                en: format!("{count} TimescaleDB storage job(s) failing or paused (see /health)"),
                zh: format!("{count} 个 TimescaleDB 存储任务失败或暂停（详见 /health）"),
            };
            (fault, detail)
        });
        let compression = (self.chunks_behind > 0).then(|| {
            let detail = format!("{} chunk(s) of readings uncompressed a day past due", self.chunks_behind);
            let fault = Fault {
                en: format!("compression is falling behind: {detail}"),
                zh: format!("数据压缩滞后：{} 个读数分块逾期一天未压缩", self.chunks_behind),
            };
            (fault, detail)
        });
        let disk = self.disk_used_percent.filter(|used| *used >= f64::from(disk_alarm_percent)).map(|used| {
            let detail = format!("the database's disk is {used:.0}% full (alarm at {disk_alarm_percent}%)");
            let fault = Fault {
                en: detail.clone(),
                zh: format!("数据库磁盘已用 {used:.0}%（告警阈值 {disk_alarm_percent}%）"),
            };
            (fault, detail)
        });
        [(JOBS, jobs), (COMPRESSION, compression), (DISK, disk)]
    }
}

/// Looks once.
pub async fn check(pool: &PgPool, watched: &Watched) -> sqlx::Result<StorageReport> {
    let database_bytes: i64 = sqlx::query_scalar("select pg_database_size(current_database())").fetch_one(pool).await?;
    let disk_used_percent = watched.disk.as_deref().and_then(|dir| match rustix::fs::statvfs(dir) {
        // As df counts: used over what is used plus what an unprivileged writer may still use.
        Ok(stats) => {
            let used = stats.f_blocks.saturating_sub(stats.f_bfree) as f64;
            let usable = used + stats.f_bavail as f64;
            (usable > 0.0).then(|| 100.0 * used / usable)
        }
        Err(error) => {
            warn!(dir = %dir.display(), %error, "cannot read the database disk's free space");
            None
        }
    });
    let mut report = StorageReport { database_bytes, disk_used_percent, ..StorageReport::default() };
    if watched.mode == StorageMode::Timescale {
        // A job is failing when its last run failed and it has not succeeded for two of its
        // periods (and 10 minutes): one failure a retry fixes pages nobody, and a job that fails
        // now and then never opens episode after episode. Telemetry is not storage, and fails
        // wherever the internet is out of reach.
        report.failing_jobs = sqlx::query_scalar(
            "select format('%s on %s (job %s): %s', j.proc_name, coalesce(j.hypertable_name::text, 'the database'),
                           j.job_id,
                           coalesce((select e.err_message from timescaledb_information.job_errors e
                                     where e.job_id = j.job_id order by e.finish_time desc limit 1), 'no error recorded'))
             from timescaledb_information.jobs j join timescaledb_information.job_stats s on s.job_id = j.job_id
             where s.last_run_status = 'Failed' and j.proc_name <> 'policy_telemetry'
               and coalesce(s.last_successful_finish, '-infinity')
                   < now() - greatest(2 * j.schedule_interval, interval '10 minutes')
             order by j.job_id",
        )
        .fetch_all(pool)
        .await?;
        report.paused_jobs = sqlx::query_scalar(
            "select format('%s on %s (job %s)', proc_name, hypertable_name, job_id) from timescaledb_information.jobs
             where not scheduled and hypertable_schema = current_schema() order by job_id",
        )
        .fetch_all(pool)
        .await?;
        report.chunks_behind = sqlx::query_scalar(
            "select count(*) from timescaledb_information.chunks
             where hypertable_schema = current_schema() and hypertable_name = 'readings' and not is_compressed
               and range_end < now() - make_interval(secs => $1) - interval '1 day'",
        )
        .bind(watched.compress_after.as_secs_f64())
        .fetch_one(pool)
        .await?;
    }
    Ok(report)
}

/// Looks every `watched.every` until `shutdown`: publishes what it found and raises or clears
/// the service alarms.
pub async fn run(pool: PgPool, watched: Watched, paging: Paging, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        match check(&pool, &watched).await {
            Ok(report) => {
                let troubles = report.troubles(watched.disk_alarm_percent);
                // Alarms first: once /health says a trouble is over, its episode is closed.
                if let Err(error) = alarm(&pool, &paging, &troubles).await {
                    warn!(%error, "storage alarms cannot be raised or cleared; /health shows the trouble");
                }
                metrics
                    .storage
                    .publish(&report, troubles.iter().filter_map(|(_, t)| t.as_ref().map(|(_, d)| d.clone())));
            }
            // The database being down is ingest's watchdog's to report.
            Err(error) => warn!(%error, "cannot check storage"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(watched.every) => {}
        }
    }
}

async fn alarm(pool: &PgPool, paging: &Paging, troubles: &[(&str, Option<(Fault, String)>)]) -> sqlx::Result<()> {
    for (kind, trouble) in troubles {
        match trouble {
            Some((fault, detail)) => {
                if service_alarms::raise(pool, kind, fault, detail).await? {
                    paging.wake.notify_one();
                }
            }
            None => {
                service_alarms::clear(pool, kind).await?;
            }
        }
    }
    Ok(())
}
