//! The Chillcloud server: takes gateway data from MQTT, stores it in PostgreSQL, and serves the
//! HTTP API. With nothing configured it runs its own PostgreSQL cluster and MQTT broker.

#[macro_use]
pub mod macros;

pub mod accounts;
pub mod after_sales;
pub mod alarms;
pub mod amqp;
pub mod backup;
pub mod commands;
pub mod doctor;
pub mod embedded;
pub mod gateway_config;
pub mod gateway_link;
pub mod history;
pub mod http;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod paging;
pub mod partitions;
pub mod rabbitmq_users;
pub mod routes;
pub mod secrets;
pub mod service_alarms;
pub mod share;
pub mod storage_watch;
pub mod store;
pub mod tickets;
pub mod timescale;
pub mod ui;
pub mod units;
pub mod watchdog;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use chillcloud_proto::GatewayId;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    embedded::{EmbeddedError, broker::EmbeddedBroker, postgres::EmbeddedPostgres},
    ingest::BrokerSettings,
    metrics::Metrics,
};

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An embedded service could not start.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The database refused a connection or a query.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be migrated.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The settings cannot work.
    #[error("{0}")]
    Config(String),
}

/// A specialised `Result` for the server.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the server keeps its state and finds its database.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageSettings {
    /// Directory for the server's own files (and the embedded database and broker).
    #[arg(long, env = "CHILLCLOUD_DATA_DIR", default_value = "chillcloud-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL; without it the server runs its own cluster inside the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL URL of the role `chillcloud_api`, for API requests, where an administrator
    /// manages that role; without it the server sets the role's password itself (which needs
    /// CREATEROLE) and derives the URL from `--database-url`.
    #[arg(long, env = "CHILLCLOUD_API_DATABASE_URL", hide_env_values = true)]
    pub api_database_url: Option<String>,
}

/// How long readings are kept and how they are stored, and when storage is in trouble.
#[derive(Debug, Clone, clap::Args)]
pub struct StoragePolicySettings {
    /// With TimescaleDB, drop raw readings older than this many days (default: keep them).
    /// Hourly aggregates outlive them.
    #[arg(long, env = "CHILLCLOUD_RETENTION_DAYS", value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub retention_days: Option<u64>,
    /// With TimescaleDB, compress readings older than this many days.
    #[arg(long, env = "CHILLCLOUD_COMPRESS_AFTER_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub compress_after_days: u64,
    /// How many days late readings may arrive: the gateways' backfill horizon (their
    /// `[queue] max_age_hours` divided by 24). With TimescaleDB, the aggregates' refreshes look this far back.
    #[arg(long, env = "CHILLCLOUD_LATE_READINGS_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=365))]
    pub late_readings_days: u64,
    /// Page the service team when the database's disk is fuller than this (percent).
    #[arg(long, env = "CHILLCLOUD_DISK_ALARM_PERCENT", default_value_t = 90,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub disk_alarm_percent: u8,
    /// How often storage (jobs, compression, disk) is checked, in seconds.
    #[arg(long, env = "CHILLCLOUD_STORAGE_CHECK_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub storage_check_seconds: u64,
}

impl StoragePolicySettings {
    /// The TimescaleDB policies these settings ask for.
    pub fn policies(&self) -> timescale::Policies {
        let days = |n: u64| Duration::from_secs(n * 86_400);
        timescale::Policies {
            retention: self.retention_days.map(days),
            compress_after: days(self.compress_after_days),
            late_readings: days(self.late_readings_days),
        }
    }
}

/// Settings of `chillcloud-server serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeSettings {
    /// Where to find the database.
    #[command(flatten)]
    pub storage: StorageSettings,
    /// Retention, compression and storage alarms.
    #[command(flatten)]
    pub storage_policies: StoragePolicySettings,
    /// Address the HTTP API listens on.
    #[arg(long, env = "CHILLCLOUD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// External MQTT broker as host:port; without it (and without --amqp-url) the server runs
    /// its own Mosquitto.
    #[arg(long, env = "CHILLCLOUD_MQTT_BROKER", conflicts_with = "amqp_urls")]
    pub mqtt_broker: Option<String>,
    /// The clustered broker tier (RabbitMQ): one `amqp://user:password@host:port/%2f` per node,
    /// tried in turn. Several replicas of the server share the gateways' partitions through it.
    #[arg(long = "amqp-url", env = "CHILLCLOUD_AMQP_URLS", value_delimiter = ',', hide_env_values = true)]
    pub amqp_urls: Vec<String>,
    /// RabbitMQ's management API, one `http://user:password@host:15672` per node (the user
    /// tagged `administrator`): gateways' users and permissions are created there from the
    /// database. Without it they are created by hand (deploy/cluster/README.md).
    #[arg(
        long = "rabbitmq-management-url",
        env = "CHILLCLOUD_RABBITMQ_MANAGEMENT_URLS",
        value_delimiter = ',',
        hide_env_values = true,
        requires = "amqp_urls"
    )]
    pub rabbitmq_management_urls: Vec<String>,
    /// MQTT username at the external broker.
    #[arg(long, env = "CHILLCLOUD_MQTT_USERNAME", default_value = embedded::broker::SERVER_USERNAME)]
    pub mqtt_username: String,
    /// MQTT password at the external broker.
    #[arg(long, env = "CHILLCLOUD_MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,
    /// MQTT client id; the broker keeps this session's undelivered messages across restarts.
    #[arg(long, env = "CHILLCLOUD_MQTT_CLIENT_ID", default_value = "chillcloud-server")]
    pub mqtt_client_id: String,
    /// Address the embedded broker listens on, for gateways.
    #[arg(long, env = "CHILLCLOUD_EMBEDDED_BROKER_LISTEN", default_value = "127.0.0.1:1883")]
    pub embedded_broker_listen: SocketAddr,
    /// Bearer token for the JSON API; without it one is generated into `<data-dir>/api-token`.
    #[arg(long, env = "CHILLCLOUD_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Paging configuration (providers, limits, policies); without it messages go to the console
    /// and the outbox.
    #[arg(long, env = "CHILLCLOUD_PAGING_CONFIG")]
    pub paging_config: Option<PathBuf>,
    /// The server's address as people's phones reach it, for links in messages (default: the
    /// address it listens on, with the port it took when `--listen` asks for port 0).
    #[arg(long, env = "CHILLCLOUD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The MQTT brokers gateways connect to, `host:port` in failover order, as written into
    /// the configuration file of a gateway provisioned in the dashboard. Default: the address
    /// of --mqtt-broker, of each --amqp-url's host (port 1883), or of the embedded broker.
    #[arg(long = "gateway-broker", env = "CHILLCLOUD_GATEWAY_BROKERS", value_delimiter = ',')]
    pub gateway_brokers: Vec<String>,
}

/// The database, and the embedded cluster behind it if there is one.
pub struct Database {
    /// Connection pool of the server's own tasks (the schema's owner).
    pub pool: PgPool,
    /// Connection pool of API requests: role `chillcloud_api`, seeing nothing until a request
    /// sets its scope (see `accounts`).
    pub api_pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to the configured database, or starts the embedded one, and migrates it.
    pub async fn open(storage: &StorageSettings) -> Result<Self> {
        let pool_options = PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10));
        let (options, embedded) = match &storage.database_url {
            Some(url) => (url.parse::<sqlx::postgres::PgConnectOptions>()?, None),
            None => {
                let cluster = EmbeddedPostgres::start(&storage.data_dir.join("postgres"), None).await?;
                (cluster.connect_options("chillcloud"), Some(cluster))
            }
        };
        let pool = pool_options.connect_with(options.clone()).await?;
        store::MIGRATOR.run(&pool).await?;
        // API requests log in as `chillcloud_api` (created by the migrations), not as the owner
        // switching roles.
        let api_options = match &storage.api_database_url {
            Some(url) => url.parse::<sqlx::postgres::PgConnectOptions>()?,
            None => {
                let password = api_login_password(&pool).await?;
                options.clone().username("chillcloud_api").password(&password)
            }
        };
        let api_pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *connection, "set chillcloud.scope = 'none'").await.map(drop)
                })
            })
            .connect_lazy_with(api_options);
        Ok(Self { pool, api_pool, embedded })
    }

    /// Closes the pool and stops the embedded cluster if this process started it, or always
    /// when `owner` (the server owns its cluster, even one a crashed predecessor left running).
    pub async fn close(self, owner: bool) {
        self.api_pool.close().await;
        self.pool.close().await;
        if let Some(cluster) = self.embedded {
            let stopped = if owner { cluster.stop().await } else { cluster.stop_if_started_here().await };
            if let Err(error) = stopped {
                warn!(%error, "stopping the embedded PostgreSQL failed");
            }
        }
    }
}

/// What provisioning gateways takes from `settings`: the brokers gateways connect to (see
/// [`ServeSettings::gateway_brokers`]) and the broker users that are not gateways'.
fn provisioning(settings: &ServeSettings) -> Result<gateway_config::provision::Provisioning> {
    use gateway_config::provision::broker_address;
    let urls = || settings.amqp_urls.iter().chain(&settings.rabbitmq_management_urls);
    let parsed = |url: &String| reqwest::Url::parse(url).map_err(|e| Error::Config(format!("{url:?}: {e}")));
    let mut brokers: Vec<String> = if !settings.gateway_brokers.is_empty() {
        settings.gateway_brokers.iter().map(|b| b.trim().to_owned()).collect()
    } else if let Some(broker) = &settings.mqtt_broker {
        vec![broker.clone()]
    } else if !settings.amqp_urls.is_empty() {
        // Each node's host, with RabbitMQ's MQTT port.
        let hosts: Result<Vec<String>> = (settings.amqp_urls.iter())
            .map(|url| Ok(format!("{}:1883", parsed(url)?.host_str().unwrap_or_default())))
            .collect();
        hosts?
    } else {
        let listen = settings.embedded_broker_listen;
        let public_host =
            (settings.public_url.as_ref()).and_then(|url| reqwest::Url::parse(url).ok()?.host_str().map(str::to_owned));
        let host = match (listen.ip().is_unspecified(), public_host) {
            (true, Some(host)) => host,
            (true, None) => "127.0.0.1".to_owned(),
            (false, _) => listen.ip().to_string(),
        };
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
        vec![format!("{host}:{}", listen.port())]
    };
    let mut seen = std::collections::HashSet::new();
    brokers.retain(|b| seen.insert(b.clone()));
    if brokers.is_empty() || brokers.len() > 16 {
        return Err(Error::Config("--gateway-broker: give 1 to 16 brokers".into()));
    }
    for broker in &brokers {
        let Some((host, _)) = broker_address(broker) else {
            return Err(Error::Config(format!("--gateway-broker {broker:?}: expected host:port ([v6 address]:port)")));
        };
        if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) || host == "[::1]" {
            warn!(%broker, "gateways provisioned in the dashboard are told to connect to this machine itself; set --gateway-broker to the address they reach");
        }
    }
    let mut reserved =
        vec![embedded::broker::SERVER_USERNAME.to_owned(), settings.mqtt_username.clone(), "guest".to_owned()];
    for url in urls() {
        let user = parsed(url)?.username().to_owned();
        if !user.is_empty() {
            reserved.push(user);
        }
    }
    Ok(gateway_config::provision::Provisioning { brokers: brokers.into(), reserved: reserved.into() })
}

/// Provisions a gateway: a new random broker password, stored hashed for Mosquitto and for
/// RabbitMQ. Returns the password, which is shown once and never stored in the clear, and the
/// Mosquitto password-file line.
pub async fn add_gateway(pool: &PgPool, gateway: &GatewayId) -> Result<(String, String)> {
    let credentials = gateway_config::provision::Credentials::generate(gateway);
    let (password, line) = (credentials.password, credentials.mosquitto_line);
    store::upsert_gateway(pool, gateway, &line, &credentials.rabbitmq_hash).await?;
    // A running server with an embedded broker reloads its password file on this; replicas on
    // the clustered tier bind the gateway's topics and create its RabbitMQ user.
    sqlx::query("select pg_notify($1, $2)").bind(GATEWAYS_CHANGED).bind(gateway.as_str()).execute(pool).await?;
    Ok((password, line))
}

/// The PostgreSQL notification channel announcing provisioned or changed gateways.
pub(crate) const GATEWAYS_CHANGED: &str = "chillcloud_gateways_changed";

/// Listens for [`GATEWAYS_CHANGED`] and reloads the broker's passwords on each notification,
/// until the database connection fails. It also reloads once on (re)connecting, in case a
/// notification was sent while nobody listened.
async fn listen_and_reload(pool: &PgPool, broker: &EmbeddedBroker, server_line: &str) -> sqlx::Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(GATEWAYS_CHANGED).await?;
    loop {
        let mut lines = store::gateway_password_lines(pool).await?;
        lines.push(server_line.to_owned());
        if let Err(error) = broker.reload_passwords(&lines) {
            warn!(%error, "reloading the broker's passwords failed");
        }
        let notification = listener.recv().await?;
        info!(gateway = notification.payload(), "gateway provisioned; reloading broker passwords");
    }
}

/// Keeps the embedded broker's password file in step with the provisioned gateways: on every
/// [`GATEWAYS_CHANGED`] notification, rewrites it and has the broker reload it.
async fn sync_broker_passwords(
    pool: PgPool,
    broker: Arc<EmbeddedBroker>,
    server_line: String,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let listened = listen_and_reload(&pool, &broker, &server_line);
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = listened => if let Err(error) = result {
                warn!(%error, retry_in = ?delay, "listening for gateway changes failed");
            },
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Sets the password of `chillcloud_api` and returns it. The password is random, made once and
/// kept in `server_secrets` (nothing is granted on it: only the schema's owner reads it), so every
/// server process against this database uses the same. It is set as a SCRAM verifier computed
/// here, so the statement (which a server may log) does not hold the password.
async fn api_login_password(pool: &PgPool) -> Result<String> {
    sqlx::query(
        "insert into server_secrets (name, value) values ('chillcloud_api password', $1) on conflict do nothing",
    )
    .bind(secrets::random_hex::<24>())
    .execute(pool)
    .await?;
    let password: String =
        sqlx::query_scalar("select value from server_secrets where name = 'chillcloud_api password'")
            .fetch_one(pool)
            .await?;
    let verifier = scram_verifier(&password, &rand::random::<[u8; 16]>());
    sqlx::query(sqlx::AssertSqlSafe(format!("alter role chillcloud_api password '{verifier}'")))
        .execute(pool)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "the database user cannot set the password of the role chillcloud_api (it needs CREATEROLE; or \
                 have an administrator set it and give --api-database-url): {e}"
            ))
        })?;
    Ok(password)
}

/// PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802, 7677): the salted password
/// by PBKDF2-HMAC-SHA-256 with 4,096 iterations, and from it the stored and server keys.
fn scram_verifier(password: &str, salt: &[u8]) -> String {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use sha2::{Digest, Sha256};
    const ITERATIONS: u32 = 4096;
    let hmac = secrets::hmac_sha256;
    // PBKDF2 with one block: the output is as long as the hash.
    let mut block = hmac(password.as_bytes(), &[salt, &1u32.to_be_bytes()]);
    let mut salted = block;
    for _ in 1..ITERATIONS {
        block = hmac(password.as_bytes(), &[&block]);
        salted.iter_mut().zip(&block).for_each(|(s, b)| *s ^= b);
    }
    let stored_key = Sha256::digest(hmac(&salted, &[b"Client Key"]));
    let server_key = hmac(&salted, &[b"Server Key"]);
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// A secret: the configured one, or the one generated into `<data-dir>/<name>` (mode 0600).
fn secret(settings: &ServeSettings, name: &str, configured: Option<&String>) -> Result<String> {
    if let Some(secret) = configured {
        return Ok(secret.clone());
    }
    let path = settings.storage.data_dir.join(name);
    let io = |context: &str| {
        let context = format!("{context} {}", path.display());
        move |source| Error::Io { context, source }
    };
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.trim().len() >= 32 => return Ok(secret.trim().to_owned()),
        // Too short to be one this server wrote (a crash while writing it): links signed with it
        // could be forged, so a new one replaces it.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read")(e)),
    }
    std::fs::create_dir_all(&settings.storage.data_dir).map_err(io("create directory for"))?;
    let secret = secrets::random_hex::<24>();
    std::fs::write(&path, format!("{secret}\n")).map_err(io("write"))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(io("protect"))?;
    info!(path = %path.display(), "generated a secret");
    Ok(secret)
}

/// Runs the server until `shutdown`: database, broker, ingest and HTTP API. `listener` is
/// bound by the caller so tests can use port 0.
pub async fn serve(settings: ServeSettings, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    // Check the settings before starting anything.
    let external_broker = match &settings.mqtt_broker {
        Some(address) => {
            let (host, port) = address
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
                .ok_or_else(|| Error::Config(format!("--mqtt-broker {address:?}: expected host:port")))?;
            let password = settings
                .mqtt_password
                .clone()
                .ok_or_else(|| Error::Config("--mqtt-password is required with --mqtt-broker".into()))?;
            Some(ingest::Broker::Mqtt(BrokerSettings {
                host,
                port,
                username: settings.mqtt_username.clone(),
                password,
                client_id: settings.mqtt_client_id.clone(),
            }))
        }
        None if !settings.amqp_urls.is_empty() => {
            let management = (!settings.rabbitmq_management_urls.is_empty())
                .then(|| rabbitmq_users::Management::new(&settings.rabbitmq_management_urls))
                .transpose()
                .map_err(|error| Error::Config(error.to_string()))?;
            Some(ingest::Broker::Amqp(amqp::AmqpSettings { urls: settings.amqp_urls.clone(), management }))
        }
        None => None,
    };
    let provisioning = provisioning(&settings)?;
    let api_token = secret(&settings, "api-token", settings.api_token.as_ref())?;
    let link_secret = secret(&settings, "link-secret", None)?;
    let address = listener.local_addr().map_err(|source| Error::Io { context: "listener address".into(), source })?;
    // The bound address, not the asked one: `--listen 127.0.0.1:0` takes a free port.
    let public_url = settings.public_url.clone().unwrap_or_else(|| format!("http://{address}"));
    let paging = paging::Paging::load(settings.paging_config.as_ref(), link_secret.into_bytes(), public_url)
        .map_err(|invalid| Error::Config(invalid.to_string()))?;
    let database = Database::open(&settings.storage).await?;
    let storage = timescale::prepare(&database.pool, &settings.storage_policies.policies()).await;
    info!(embedded = database.embedded.is_some(), mode = %storage.mode, timescaledb = %storage.timescaledb, "database ready");
    let metrics = Arc::new(Metrics::default());

    let (broker_settings, embedded_broker) = match external_broker {
        Some(broker) => (broker, None),
        None => {
            let password = secrets::random_hex::<24>();
            let server_line = embedded::broker::password_line(embedded::broker::SERVER_USERNAME, &password);
            let mut lines = store::gateway_password_lines(&database.pool).await?;
            lines.push(server_line.clone());
            let broker = EmbeddedBroker::start(
                &settings.storage.data_dir.join("mosquitto"),
                settings.embedded_broker_listen,
                &lines,
            )
            .await?;
            let address = broker.address();
            let settings = ingest::Broker::Mqtt(BrokerSettings {
                host: address.ip().to_string(),
                port: address.port(),
                username: embedded::broker::SERVER_USERNAME.into(),
                password,
                client_id: settings.mqtt_client_id.clone(),
            });
            let broker = Arc::new(broker);
            let sync = tokio::spawn(sync_broker_passwords(
                database.pool.clone(),
                broker.clone(),
                server_line,
                shutdown.clone(),
            ));
            (settings, Some((broker, sync)))
        }
    };

    let data_dir = &settings.storage.data_dir;
    let replica = partitions::replica_id(data_dir)
        .map_err(|source| Error::Io { context: format!("replica id in {}", data_dir.display()), source })?;
    let (leases, ownership) = partitions::Leases::new(database.pool.clone(), replica);
    leases.start().await?;
    // Renewed until ingest and detection have stopped, after the rest of the server.
    let stop_leases = CancellationToken::new();
    let leases = tokio::spawn(leases.run(stop_leases.clone()));
    let (alarms, alarm_inputs) = alarms::channel();
    let (gateways, to_gateways) = gateway_link::GatewayLink::new();
    // Replicas share live readings through the broker; one server fans out in process.
    let (live, relay) = match &broker_settings {
        ingest::Broker::Amqp(_) => {
            let (live, relay) = live::Live::relayed();
            (live, Some(relay))
        }
        ingest::Broker::Mqtt(_) => (live::Live::default(), None),
    };
    let detection = tokio::spawn(alarms::run(
        database.pool.clone(),
        alarms.clone(),
        alarm_inputs,
        gateways.clone(),
        live.clone(),
        metrics.clone(),
        ownership.clone(),
        shutdown.clone(),
    ));
    let ingest = tokio::spawn(ingest::run(
        database.pool.clone(),
        broker_settings,
        alarms.clone(),
        live.clone(),
        (gateways.clone(), to_gateways),
        metrics.clone(),
        ownership.clone(),
        relay,
        shutdown.clone(),
    ));
    let paging_task =
        tokio::spawn(after_sales::run(database.pool.clone(), paging.clone(), alarms.clone(), shutdown.clone()));
    let sweeper = tokio::spawn(commands::run_sweeper(database.pool.clone(), shutdown.clone()));
    let report_schedule = tokio::spawn(doctor::schedule::run(database.pool.clone(), shutdown.clone()));
    let watchdog =
        tokio::spawn(watchdog::run(database.pool.clone(), paging.clone(), metrics.clone(), shutdown.clone()));
    let storage_watch = tokio::spawn(storage_watch::run(
        database.pool.clone(),
        storage_watch::Watched::new(&settings, storage.mode),
        paging.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let state = http::SystemState::new(
        database.pool.clone(),
        database.api_pool.clone(),
        api_token.into(),
        metrics,
        live,
        alarms,
        paging,
        gateways,
        storage.mode,
        ownership,
        provisioning,
    );
    info!(%address, "HTTP API listening");
    http::serve(listener, routes::router(state), shutdown.clone()).await;
    // Stop taking input, let ingest finish the message in hand, then stop the services.
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(10), ingest).await.is_err() {
        warn!("ingest did not stop within 10 s");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), detection).await;
    // Ingest and detection have stopped: the partitions can go to the other replicas now.
    stop_leases.cancel();
    if let Ok(leases) = leases.await
        && let Err(error) = leases.release().await
    {
        warn!(%error, "giving up partition leases failed; they lapse on their own");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), paging_task).await;
    let _ = sweeper.await;
    let _ = report_schedule.await;
    let _ = watchdog.await;
    let _ = storage_watch.await;
    if let Some((broker, sync)) = embedded_broker {
        let _ = sync.await;
        // The sync task has ended, so this is the last handle; were it not, dropping it would
        // still kill the broker's process.
        if let Ok(broker) = Arc::try_unwrap(broker) {
            broker.stop().await;
        }
    }
    database.close(true).await;
    info!("server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Domain, storage and ingest code never names the HTTP framework: only a feature's `api.rs`
    /// and the `http` and `routes` modules do. Checked on the source, file by file.
    #[test]
    fn domain_storage_and_ingest_do_not_import_axum() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        for feature in ["accounts", "alarms", "commands", "gateway_config", "paging", "share", "tickets", "units"] {
            for entry in std::fs::read_dir(src.join(feature)).expect("feature folder") {
                let path = entry.expect("entry").path();
                if path.file_name().is_some_and(|name| name != "api.rs") {
                    files.push(path);
                }
            }
        }
        for module in [
            "ingest",
            "store",
            "history",
            "timescale",
            "storage_watch",
            "service_alarms",
            "backup",
            "gateway_link",
            "partitions",
            "amqp",
            "rabbitmq_users",
            "live",
            "watchdog",
            "metrics",
            "secrets",
        ] {
            files.push(src.join(format!("{module}.rs")));
        }
        assert!(files.len() > 25, "{files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            assert!(
                !text.contains("axum"),
                "{} names axum: move its HTTP part to the feature's api.rs",
                file.display()
            );
        }
    }

    #[test]
    fn a_scram_verifier_is_what_postgresql_stores() {
        use base64::{Engine as _, engine::general_purpose::STANDARD};
        // The salt of RFC 7677's example; the keys computed independently (Python's hashlib).
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
        assert_eq!(
            scram_verifier("pencil", &salt),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
             wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }
}
