//! `chillcloud-server`: serve, or administer gateways.

use anyhow::Context as _;
use chillcloud_proto::GatewayId;
use chillcloud_server::{Database, ServeSettings, StorageSettings};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Chillcloud server: MQTT ingest, storage and API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeSettings,
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
