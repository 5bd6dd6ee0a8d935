//! A private PostgreSQL cluster in a directory, reached over a Unix socket in that directory.
//!
//! The cluster trusts local connections: only the socket's directory, private to the owner,
//! protects it, and it listens on TCP only when a port is asked for (tests do).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use sqlx::{Connection, postgres::PgConnectOptions};
use tracing::info;

use super::{EmbeddedError, io_error, prepare_dir, run_command};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running private cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    tcp_port: Option<u16>,
    /// Whether this process started the cluster (rather than finding it running).
    started_here: bool,
}

/// Finds the newest installed PostgreSQL server's binary directory.
pub fn find_binaries() -> Result<PathBuf, EmbeddedError> {
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    if let Some((_, bin)) = candidates.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("pg_ctl").exists() && dir.join("initdb").exists())
        .ok_or(EmbeddedError::NotInstalled {
            what: "PostgreSQL server binaries (initdb, pg_ctl)",
            package: "postgresql",
        })
}

impl EmbeddedPostgres {
    /// Starts (creating it first if needed) the cluster under `root`, listening also on
    /// 127.0.0.1:`tcp_port` if given. A cluster left running by an earlier process is reused.
    pub async fn start(root: &Path, tcp_port: Option<u16>) -> Result<Self, EmbeddedError> {
        let bin_dir = find_binaries()?;
        let root = std::path::absolute(root).map_err(io_error(root))?;
        prepare_dir(&root, "postgres")?;
        let data_dir = root.join("data");
        let socket_dir = root.join("socket");
        prepare_dir(&socket_dir, "postgres")?;
        // Local connections are trusted, so the socket's directory is what keeps others out.
        std::fs::set_permissions(&socket_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io_error(&socket_dir))?;
        let mut this = Self { bin_dir, data_dir, socket_dir, tcp_port, started_here: false };
        let data = this.data_dir.to_string_lossy().into_owned();
        if !this.data_dir.join("PG_VERSION").exists() {
            info!(dir = %this.data_dir.display(), "creating the embedded PostgreSQL cluster");
            run_command(
                Some("postgres"),
                &this.bin_dir.join("initdb"),
                &["-D", &data, "-U", "postgres", "-A", "trust", "--no-locale", "-E", "UTF8"],
            )
            .await?;
        }
        let running =
            run_command(Some("postgres"), &this.bin_dir.join("pg_ctl"), &["-D", &data, "status"]).await.is_ok();
        if running {
            info!("reusing the embedded PostgreSQL cluster that is already running");
        } else {
            this.started_here = true;
            let listen = match tcp_port {
                Some(port) => format!("-c listen_addresses=127.0.0.1 -p {port}"),
                None => "-c listen_addresses=''".to_owned(),
            };
            let mut options = format!("{listen} -k {} -c fsync=on", this.socket_dir.display());
            // Preloading a library that is not installed stops PostgreSQL from starting, and
            // TimescaleDB cannot be created without it: preload exactly when it is installed.
            if this.timescale_installed() {
                info!("TimescaleDB is installed: preloading it");
                options.push_str(" -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off");
            }
            let log = root.join("postgres.log").to_string_lossy().into_owned();
            let wait = START_TIMEOUT.as_secs().to_string();
            run_command(
                Some("postgres"),
                &this.bin_dir.join("pg_ctl"),
                &["-D", &data, "-l", &log, "-w", "-t", &wait, "-o", &options, "start"],
            )
            .await?;
        }
        this.create_database("chillcloud").await?;
        Ok(this)
    }

    /// Whether TimescaleDB's library is in this PostgreSQL's library directory.
    pub fn timescale_installed(&self) -> bool {
        self.bin_dir.parent().is_some_and(|root| root.join("lib").join("timescaledb.so").exists())
    }

    /// The directory of this PostgreSQL's programs (`pg_dump`, `pg_restore`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Connection options for `database` over the Unix socket.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        let options =
            PgConnectOptions::new_without_pgpass().socket(&self.socket_dir).username("postgres").database(database);
        match self.tcp_port {
            Some(port) => options.port(port),
            None => options,
        }
    }

    /// A libpq URL for `database` over the Unix socket, for PostgreSQL's own programs.
    pub fn socket_url(&self, database: &str) -> String {
        let port = self.tcp_port.map(|port| format!("&port={port}")).unwrap_or_default();
        format!("postgresql://postgres@/{database}?host={}{port}", self.socket_dir.display())
    }

    /// A URL for `database` over TCP, when the cluster listens on TCP.
    pub fn tcp_url(&self, database: &str) -> Option<String> {
        self.tcp_port.map(|port| format!("postgres://postgres@127.0.0.1:{port}/{database}"))
    }

    async fn create_database(&self, name: &str) -> Result<(), EmbeddedError> {
        let failed = |e: sqlx::Error| EmbeddedError::Command {
            command: format!("create database {name}"),
            detail: e.to_string(),
        };
        let mut connection =
            sqlx::PgConnection::connect_with(&self.connect_options("postgres")).await.map_err(failed)?;
        let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&mut connection)
            .await
            .map_err(failed)?;
        if !exists {
            // The name is a constant of ours, not input, so formatting it in is safe.
            sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
                .execute(&mut connection)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    /// Stops the cluster, letting it finish writing first.
    pub async fn stop(&self) -> Result<(), EmbeddedError> {
        let data = self.data_dir.to_string_lossy().into_owned();
        run_command(Some("postgres"), &self.bin_dir.join("pg_ctl"), &["-D", &data, "-m", "fast", "-w", "stop"])
            .await
            .map(|_| ())
    }

    /// Stops the cluster if this process started it; a cluster found running belongs to
    /// whoever started it (for example the server, when a command-line tool shares it).
    pub async fn stop_if_started_here(&self) -> Result<(), EmbeddedError> {
        if self.started_here { self.stop().await } else { Ok(()) }
    }

    /// Stops the cluster abruptly, as a crash would (for tests of recovery).
    pub async fn kill(&self) -> Result<(), EmbeddedError> {
        let data = self.data_dir.to_string_lossy().into_owned();
        run_command(Some("postgres"), &self.bin_dir.join("pg_ctl"), &["-D", &data, "-m", "immediate", "-w", "stop"])
            .await
            .map(|_| ())
    }
}
