//! `chillcloud-server backup` and `restore`: the whole database in one file, in pg_dump's custom
//! format, taken from a running server without stopping it (pg_dump reads one consistent
//! snapshot) and restored into an empty database (a fresh data directory for the embedded
//! default). A database in TimescaleDB mode is restored between TimescaleDB's
//! `timescaledb_pre_restore()` and `timescaledb_post_restore()`, into a PostgreSQL that has the
//! same TimescaleDB version loaded.
//!
//! What a dump does not hold is recreated: the `chillcloud_api` role (roles belong to the
//! cluster, not the database), as the migrations left it. The secrets in the data directory
//! (`api-token`, `link-secret`) are files, not data: copy them along to keep links already sent
//! working.

use std::{
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use sqlx::PgPool;
use tracing::info;

use crate::{
    Error, Result, StorageSettings,
    embedded::postgres::{EmbeddedPostgres, find_binaries},
};

/// The database a command works on, and what reaches it.
struct Target {
    /// A URL without its password, for pg_dump and pg_restore.
    url: String,
    /// The password, given to them in the environment rather than on the command line.
    password: Option<String>,
    /// Where pg_dump and pg_restore are.
    bin_dir: PathBuf,
    pool: PgPool,
    cluster: Option<EmbeddedPostgres>,
}

impl Target {
    async fn open(storage: &StorageSettings) -> Result<Self> {
        match &storage.database_url {
            Some(url) => {
                let (without_password, password) = split_password(url)?;
                let pool = PgPool::connect(url).await?;
                Ok(Self { url: without_password, password, bin_dir: find_binaries()?, pool, cluster: None })
            }
            None => {
                let cluster = EmbeddedPostgres::start(&storage.data_dir.join("postgres"), None).await?;
                let pool = PgPool::connect_with(cluster.connect_options("chillcloud")).await?;
                Ok(Self {
                    url: cluster.socket_url("chillcloud"),
                    password: None,
                    bin_dir: cluster.bin_dir().to_owned(),
                    pool,
                    cluster: Some(cluster),
                })
            }
        }
    }

    async fn close(self) {
        self.pool.close().await;
        if let Some(cluster) = self.cluster
            && let Err(error) = cluster.stop_if_started_here().await
        {
            tracing::warn!(%error, "stopping the embedded PostgreSQL failed");
        }
    }

    /// Runs `program` (pg_dump, pg_restore) on the database with `args`.
    async fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let mut command = tokio::process::Command::new(self.bin_dir.join(program));
        command.args(args).arg("--dbname").arg(&self.url).kill_on_drop(true);
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        let output =
            command.output().await.map_err(|source| Error::Io { context: format!("run {program}"), source })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "{program} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}

/// Takes the password out of a PostgreSQL URL, whether it is in the user part or the query, so
/// it can go to pg_dump in the environment rather than on a command line others can read.
fn split_password(url: &str) -> Result<(String, Option<String>)> {
    let mut parsed =
        reqwest::Url::parse(url).map_err(|e| Error::Config(format!("--database-url is not a URL: {e}")))?;
    let in_user_part =
        parsed.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
    let _ = parsed.set_password(None);
    let query: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let (secret, kept): (Vec<_>, Vec<_>) = query.into_iter().partition(|(key, _)| key == "password");
    let password = secret.into_iter().next().map(|(_, value)| value).or(in_user_part);
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((parsed.to_string(), password))
}

/// Writes the whole database to `to` in pg_dump's custom format.
pub async fn backup(storage: &StorageSettings, to: &Path) -> Result<()> {
    let target = Target::open(storage).await?;
    let mode = crate::timescale::current_mode(&target.pool).await;
    let to_text = to.to_string_lossy().into_owned();
    // The dump holds the server's secrets (the API role's password): readable by its owner only.
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)
        .map_err(|source| Error::Io { context: format!("create {}", to.display()), source });
    let dumped = match created {
        Ok(_) => target.run("pg_dump", &["--format", "custom", "--file", &to_text]).await,
        Err(error) => Err(error),
    };
    target.close().await;
    dumped?;
    info!(file = %to.display(), mode = %mode?, "backup written");
    Ok(())
}

/// Restores a backup written by [`backup`] into an empty database.
pub async fn restore(storage: &StorageSettings, from: &Path) -> Result<()> {
    let target = Target::open(storage).await?;
    let restored = restore_into(&target, from).await;
    target.close().await;
    restored
}

async fn restore_into(target: &Target, from: &Path) -> Result<()> {
    let from_text = from.to_string_lossy().into_owned();
    if !from.is_file() {
        return Err(Error::Config(format!("{}: no such backup file", from.display())));
    }
    let tables: i64 = sqlx::query_scalar("select count(*) from pg_tables where schemaname = current_schema()")
        .fetch_one(&target.pool)
        .await?;
    if tables > 0 {
        return Err(Error::Config(format!(
            "the database already holds {tables} tables: restore goes into an empty one (a fresh --data-dir, or a new \
             database for --database-url)"
        )));
    }
    // The backup's table of contents says whether it was taken in TimescaleDB mode.
    let contents = read_backup(target, from, &["--list"]).await?;
    let timescale = contents.lines().any(|l| l.contains("EXTENSION - timescaledb"));
    sqlx::query(API_ROLE).execute(&target.pool).await?;
    if timescale {
        let available = crate::timescale::availability(&target.pool).await?;
        if available != crate::timescale::Availability::Loaded {
            return Err(Error::Config(format!(
                "the backup was taken in TimescaleDB mode, and TimescaleDB is {available} here: restore it where the \
                 same TimescaleDB version is installed and preloaded"
            )));
        }
        // TimescaleDB restores only into its own version, and says so only after the restore:
        // compare first, with the version the backup's catalogue records.
        let metadata = ["--schema", "_timescaledb_catalog", "--table", "metadata", "--data-only", "--file", "-"];
        let metadata = read_backup(target, from, &metadata).await?;
        let backup_version = recorded_timescale_version(&metadata);
        let here: String =
            sqlx::query_scalar("select default_version from pg_available_extensions where name = 'timescaledb'")
                .fetch_one(&target.pool)
                .await?;
        if let Some(backup_version) = backup_version.filter(|version| *version != here) {
            return Err(Error::Config(format!(
                "the backup was taken with TimescaleDB {backup_version} and {here} is installed here: restore it \
                 where TimescaleDB {backup_version} is installed, then update the extension"
            )));
        }
        sqlx::query("create extension if not exists timescaledb").execute(&target.pool).await?;
        sqlx::query("select timescaledb_pre_restore()").execute(&target.pool).await?;
    }
    // Objects belong to whoever restores them: the server's user on the new database. One
    // transaction: a restore that fails leaves the database empty, to be tried again.
    let restored =
        target.run("pg_restore", &["--no-owner", "--exit-on-error", "--single-transaction", &from_text]).await;
    if timescale {
        // Also after a failure: pre-restore leaves TimescaleDB's background jobs stopped. Its
        // counterpart refuses (a TimescaleDB version other than the backup's) before it resets
        // the restoring flag, so that is reset by hand then.
        if let Err(error) = sqlx::query("select timescaledb_post_restore()").execute(&target.pool).await {
            let _ = sqlx::query("do $$ begin execute format('alter database %I reset timescaledb.restoring', current_database()); end $$")
                .execute(&target.pool)
                .await;
            return Err(Error::Config(format!(
                "TimescaleDB's post-restore step failed ({error}); the restore itself: {}",
                restored.map_or_else(|e| e.to_string(), |()| "done".into())
            )));
        }
    }
    restored?;
    info!(file = %from.display(), timescale, "backup restored");
    Ok(())
}

/// What pg_restore prints of the backup file `from` alone (no database) with `args`.
async fn read_backup(target: &Target, from: &Path, args: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new(target.bin_dir.join("pg_restore"))
        .args(args)
        .arg(from)
        .output()
        .await
        .map_err(|source| Error::Io { context: "run pg_restore".into(), source })?;
    if !output.status.success() {
        return Err(Error::Config(format!(
            "{} is not a backup pg_restore can read: {}",
            from.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The TimescaleDB version in the data of `_timescaledb_catalog.metadata`, as pg_restore prints it.
fn recorded_timescale_version(metadata: &str) -> Option<String> {
    metadata.lines().find_map(|line| Some(line.strip_prefix("timescaledb_version\t")?.split('\t').next()?.to_owned()))
}

/// The role API requests run as, as migrations 0011 and 0014 leave it: roles belong to the
/// cluster, so a dump of the database holds the grants to it but not the role.
const API_ROLE: &str = "do $$
begin
    if not exists (select from pg_roles where rolname = 'chillcloud_api') then
        create role chillcloud_api nologin;
    end if;
    begin
        execute format('grant chillcloud_api to %I', current_user);
        alter role chillcloud_api login;
        alter role chillcloud_api set statement_timeout = '15s';
        alter role chillcloud_api set idle_in_transaction_session_timeout = '60s';
    exception when insufficient_privilege or invalid_grant_operation then
        raise notice 'chillcloud_api must be given LOGIN and its timeouts by an administrator';
    end;
end
$$";

#[cfg(test)]
mod tests {
    #[test]
    fn the_timescaledb_version_is_read_from_the_backups_catalogue() {
        let printed = "COPY _timescaledb_catalog.metadata (key, value, include_in_telemetry) FROM stdin;\n\
                       install_timestamp\t2026-12-02 14:36:53+00\tt\ntimescaledb_version\t2.28.3\tf\n\\.\n";
        assert_eq!(super::recorded_timescale_version(printed).as_deref(), Some("2.28.3"));
        assert_eq!(super::recorded_timescale_version("-- no data\n"), None);
    }

    #[test]
    fn the_password_leaves_the_url_from_either_place() {
        let split = |url: &str| super::split_password(url).expect("a URL");
        assert_eq!(
            split("postgres://chill:p%40ss@db.example:5432/chillcloud"),
            ("postgres://chill@db.example:5432/chillcloud".to_owned(), Some("p@ss".to_owned()))
        );
        assert_eq!(
            split("postgres://chill@db/chillcloud?sslmode=require&password=s3cret"),
            ("postgres://chill@db/chillcloud?sslmode=require".to_owned(), Some("s3cret".to_owned()))
        );
        assert_eq!(
            split("postgres://chill@db/chillcloud?password=x"),
            ("postgres://chill@db/chillcloud".to_owned(), Some("x".to_owned()))
        );
        assert_eq!(split("postgres://db/chillcloud"), ("postgres://db/chillcloud".to_owned(), None));
    }
}
