//! `chillcloud-server`: serve, or administer gateways.

use anyhow::Context as _;
use chillcloud_proto::GatewayId;
use chillcloud_server::{Database, ServeSettings, StorageSettings, accounts};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Chillcloud server: MQTT ingest, storage and API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeSettings,
    /// How log lines are written: `text` (coloured only on a terminal) or `json`.
    #[arg(long, global = true, env = "CHILLCLOUD_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Provision a gateway and print its MQTT password (shown once) as JSON.
    AddGateway {
        /// The gateway's id, which is also its MQTT username.
        id: String,
        /// Where the database is.
        #[command(flatten)]
        storage: StorageSettings,
    },
    /// Create an administrator of the service organisation and print their password (shown
    /// once) as JSON.
    CreateAdmin {
        /// Their login.
        login: String,
        /// Their name.
        #[arg(long)]
        name: String,
        /// The service organisation (the maker or installer); made if missing.
        #[arg(long, default_value = "Service")]
        organisation: String,
        /// Where the database is.
        #[command(flatten)]
        storage: StorageSettings,
    },
    /// Write the whole database to a file (pg_dump's custom format), from a running server or
    /// not.
    Backup {
        /// The file to write.
        #[arg(long)]
        to: std::path::PathBuf,
        /// Where the database is.
        #[command(flatten)]
        storage: StorageSettings,
    },
    /// Restore a file written by `backup` into an empty database (a fresh `--data-dir`).
    Restore {
        /// The file to read.
        #[arg(long)]
        from: std::path::PathBuf,
        /// Where the database is.
        #[command(flatten)]
        storage: StorageSettings,
    },
    /// Invite a user: print, as JSON, the link on which they choose their password (7 days).
    Invite {
        /// Their login.
        login: String,
        /// Their name.
        #[arg(long)]
        name: String,
        /// admin, manager, engineer, sales (the service organisation) or owner, duty (a customer).
        #[arg(long)]
        role: String,
        /// Their organisation; made if missing, of the kind the role needs.
        #[arg(long)]
        organisation: String,
        /// en or zh.
        #[arg(long)]
        language: Option<String>,
        /// The server's address as people reach it.
        #[arg(long, env = "CHILLCLOUD_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
        public_url: String,
        /// Where the database is.
        #[command(flatten)]
        storage: StorageSettings,
    },
}

/// Pins glibc's thresholds for returning freed memory to the system. By default glibc raises
/// them to the size of the largest block freed so far (up to 32 MiB, and twice that for
/// trimming): after one 19 MiB password hash or a 30 MB history answer, every thread's arena kept
/// up to 60 MB it no longer used, and a sign-in flood that hashed nothing more took the server
/// from 40 to 250 MB resident. Pinned, large blocks are mapped and unmapped on their own and
/// arenas give back what they free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn pin_malloc_thresholds() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // allocates (the runtime is built after it), and an unsupported value is ignored.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn pin_malloc_thresholds() {}

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
    pin_malloc_thresholds();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, "info,sqlx=warn");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(cli.serve.listen)
                .await
                .with_context(|| format!("bind {}", cli.serve.listen))?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            chillcloud_server::serve(cli.serve, listener, shutdown).await?;
        }
        Command::AddGateway { id, storage } => {
            let gateway = GatewayId::new(id)?;
            let database = Database::open(&storage).await?;
            let result = chillcloud_server::add_gateway(&database.pool, &gateway).await;
            database.close(false).await;
            let (password, line) = result?;
            println!(
                "{}",
                serde_json::json!({ "gateway_id": gateway.as_str(), "password": password, "mosquitto_password_line": line })
            );
        }
        Command::CreateAdmin { login, name, organisation, storage } => {
            let database = Database::open(&storage).await?;
            let result = accounts::create_admin(&database.pool, &login, &name, &organisation).await;
            database.close(false).await;
            let password = result.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::json!({ "login": login, "password": password }));
        }
        Command::Backup { to, storage } => chillcloud_server::backup::backup(&storage, &to).await?,
        Command::Restore { from, storage } => chillcloud_server::backup::restore(&storage, &from).await?,
        Command::Invite { login, name, role, organisation, language, public_url, storage } => {
            let role = accounts::Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("--role {role:?}: admin, manager, engineer, sales, owner or duty"))?;
            let database = Database::open(&storage).await?;
            let result = accounts::invite(&database.pool, &login, &name, role, &organisation, language).await;
            database.close(false).await;
            let secret = result.map_err(|e| anyhow::anyhow!("{e}"))?;
            let url = format!("{}/invite/{secret}", public_url.trim_end_matches('/'));
            println!("{}", serde_json::json!({ "login": login, "invitation_url": url }));
        }
    }
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else { return };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    shutdown.cancel();
}
