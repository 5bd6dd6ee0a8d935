//! The harness end-to-end tests share: free ports, polling with a deadline, the compiled
//! binaries as child processes, and throwaway PostgreSQL clusters and Mosquitto brokers.
//!
//! Tests never sleep to wait for readiness: they poll a condition until a deadline and fail
//! with the condition's name and the processes' logs.

use std::{
    collections::BTreeMap,
    future::Future,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use chillcloud_server::embedded::{
    broker::{self, EmbeddedBroker},
    postgres::EmbeddedPostgres,
};
use reqwest::Method;
use serde_json::Value;
use sqlx::Connection as _;
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A port that was free a moment ago, for the peers that cannot take port 0 and say which port
/// they got (PostgreSQL, Mosquitto, pymodbus, socat). Our own programs bind port 0 and announce
/// the address they took ([`Process::announced_http_address`], [`Simulator::start`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a free port")
}

/// A test's working directory (processes' logs, configurations, data), which the `postgres` and
/// `mosquitto` system users can enter. Removed when the test passes; when it fails (the thread is
/// panicking), its logs, status reports and configurations are first copied to
/// `target/test-logs/<test>/<directory>/`, so an intermittent failure can be read afterwards.
pub struct TestDir(TempDir);

impl TestDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // libtest names each test's thread after the test.
        let test = std::thread::current().name().unwrap_or("unnamed").replace("::", "-");
        let name = self.0.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let kept = workspace_root().join("target/test-logs").join(test).join(name);
        keep_logs(self.0.path(), &kept);
        eprintln!("----- logs kept in {} -----", kept.display());
    }
}

/// Copies the small text files under `from` that tell what happened (logs, status reports,
/// configurations) to the same places under `to`.
fn keep_logs(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            keep_logs(&path, &to.join(entry.file_name()));
            continue;
        }
        let telling = path.extension().is_some_and(|e| ["log", "json", "toml", "conf"].iter().any(|t| e == *t));
        let small = entry.metadata().is_ok_and(|m| m.len() <= 16 * 1024 * 1024);
        if kind.is_file() && telling && small {
            let _ = std::fs::create_dir_all(to);
            let _ = std::fs::copy(&path, to.join(entry.file_name()));
        }
    }
}

/// A new [`TestDir`].
pub fn shared_temp_dir() -> TestDir {
    let dir = tempfile::Builder::new().prefix("chillcloud-test-").tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod temp dir");
    TestDir(dir)
}

/// Polls `probe` every 50 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The directory holding the compiled binaries (`target/<profile>`), found from the running
/// executable's path: `target/<profile>/deps/<test>` for a test, `target/<profile>/<bin>` for
/// a binary such as the benchmarks.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable has a directory");
    if dir.file_name().is_some_and(|name| name == "deps") { dir.parent().expect("target/<profile>") } else { dir }
        .to_owned()
}

/// The path of a workspace binary, which `cargo test` at the workspace root builds.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (or `cargo build --bins`) from the workspace root",
        path.display()
    );
    path
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_owned()
}

/// A child process whose output goes to a log file; killed when dropped, and its log printed
/// if the test is failing.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args`, logging to `<log_dir>/<name>.log` at the level
    /// `CHILLCLOUD_TEST_LOG` sets (a `RUST_LOG` filter), info by default.
    pub fn spawn(name: &str, program: &Path, args: &[&str], log_dir: &Path) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(program)
            .args(args)
            // CHILLCLOUD_TEST_LOG widens the processes' logs when hunting an intermittent failure.
            .env("RUST_LOG", std::env::var("CHILLCLOUD_TEST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()))
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Self { name: name.to_owned(), child, log }
    }

    /// Kills the process with SIGKILL, as a crash or power loss would end it, and reaps it.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hangup(&self) {
        if let Some(pid) = self.child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::HUP);
        }
    }

    /// Asks the process to stop with SIGTERM and waits up to `timeout` for it.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32))?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        tokio::time::timeout(timeout, self.child.wait()).await.ok()?.ok()
    }

    /// The process's resident memory (VmRSS), in bytes; 0 once it has exited.
    pub fn rss_bytes(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address a `chillcloud-server` started with `--listen <host>:0` took, as it announces
    /// it in its log ("HTTP API listening address=...").
    pub async fn announced_http_address(&self) -> SocketAddr {
        wait_for("the server announces its HTTP address", Duration::from_secs(60), || async {
            self.log().lines().find(|line| line.contains("HTTP API listening")).and_then(|line| {
                let (_, after) = line.split_once("address=")?;
                after.split_whitespace().next()?.trim_matches('"').parse().ok()
            })
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- {} log ({}) -----\n{}", self.name, self.log.display(), self.log());
        }
    }
}

/// Runs a binary to completion and returns its stdout, panicking with its output on failure.
pub async fn run_to_completion(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program).args(args).stdin(Stdio::null()).output().await.expect("run binary");
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}\n{}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Provisions gateway `id` with `chillcloud-server add-gateway id <storage_args>` and returns its
/// MQTT password and broker password-file line.
pub async fn add_gateway(id: &str, storage_args: &[&str]) -> (String, String) {
    let args: Vec<&str> = ["add-gateway", id].into_iter().chain(storage_args.iter().copied()).collect();
    let out: Value = serde_json::from_str(&run_to_completion(&bin("chillcloud-server"), &args).await).expect("JSON");
    let field = |name: &str| out[name].as_str().unwrap_or_else(|| panic!("{name} in {out}")).to_owned();
    (field("password"), field("mosquitto_password_line"))
}

/// A throwaway PostgreSQL database: a cluster of its own listening on a free loopback port
/// (preloading TimescaleDB where it is installed), or, for benchmarks, a database of its own on
/// the server `CHILLCLOUD_BENCH_DATABASE_URL` names.
pub struct TestPostgres {
    /// The cluster, unless the database is on an external server.
    cluster: Option<EmbeddedPostgres>,
    /// The external server's URL and the database made there.
    external: Option<(String, String)>,
    dir: TestDir,
}

impl TestPostgres {
    /// Creates and starts a cluster.
    pub async fn start() -> Self {
        let dir = shared_temp_dir();
        let cluster =
            EmbeddedPostgres::start(&dir.path().join("pg"), Some(free_port())).await.expect("start PostgreSQL");
        Self { cluster: Some(cluster), external: None, dir }
    }

    /// For benchmarks: a new database on the server of `CHILLCLOUD_BENCH_DATABASE_URL` (its user
    /// needs CREATEDB and CREATEROLE), dropped afterwards; a cluster of its own without it.
    pub async fn start_for_bench() -> Self {
        let Ok(server) = std::env::var("CHILLCLOUD_BENCH_DATABASE_URL") else { return Self::start().await };
        let database = format!("chillcloud_bench_{}", std::process::id());
        let mut connection =
            sqlx::PgConnection::connect(&server).await.expect("connect to CHILLCLOUD_BENCH_DATABASE_URL");
        sqlx::Executor::execute(&mut connection, sqlx::AssertSqlSafe(format!("create database {database}")))
            .await
            .expect("create the benchmark's database");
        Self { cluster: None, external: Some((server, database)), dir: shared_temp_dir() }
    }

    /// URL of the `chillcloud` database (or the benchmark's database on an external server).
    pub fn url(&self) -> String {
        match (&self.cluster, &self.external) {
            (_, Some((server, database))) => {
                let mut url = reqwest::Url::parse(server).expect("CHILLCLOUD_BENCH_DATABASE_URL is a URL");
                url.set_path(database);
                url.to_string()
            }
            (Some(cluster), None) => cluster.tcp_url("chillcloud").expect("listens on TCP"),
            (None, None) => unreachable!("a database is a cluster or external"),
        }
    }

    /// Stops the cluster (fast shutdown, as a service restart does) and starts it again on
    /// the same port.
    pub async fn restart(&mut self) {
        let cluster = self.cluster.as_ref().expect("only a cluster of the test's own restarts");
        cluster.stop().await.expect("stop PostgreSQL");
        let port = self.url().rsplit_once(':').and_then(|(_, rest)| rest.split('/').next()?.parse().ok());
        self.cluster =
            Some(EmbeddedPostgres::start(&self.dir.path().join("pg"), port).await.expect("restart PostgreSQL"));
    }

    /// A connection pool to the `chillcloud` database.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url()).await.expect("connect to the test database")
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside the test's runtime: stop the cluster (or drop
        // the benchmark's database) from a thread with its own small runtime.
        let (cluster, external) = (&self.cluster, &self.external);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                runtime.block_on(async {
                    if let Some(cluster) = cluster {
                        let _ = cluster.kill().await;
                    }
                    if let Some((server, database)) = external
                        && let Ok(mut connection) = sqlx::PgConnection::connect(server).await
                    {
                        let drop = format!("drop database if exists {database} with (force)");
                        let _ = sqlx::Executor::execute(&mut connection, sqlx::AssertSqlSafe(drop)).await;
                    }
                });
            });
        });
    }
}

/// A server on its embedded defaults: its own PostgreSQL cluster and Mosquitto in its data
/// directory, as the README's first command runs it.
pub struct EmbeddedServer {
    /// The server process.
    pub process: Process,
    /// Its API, with [`EmbeddedServer::API_TOKEN`].
    pub api: Api,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The port its embedded broker listens on.
    pub broker_port: u16,
}

impl EmbeddedServer {
    /// The API token the server uses.
    pub const API_TOKEN: &'static str = "embedded-token";

    /// Starts a server on `data_dir` with more `args`, logging into `log_dir` as `name`, and
    /// waits until it is healthy.
    pub async fn start(name: &str, data_dir: &Path, log_dir: &Path, args: &[&str]) -> Self {
        let data = data_dir.to_string_lossy();
        // Mosquitto cannot announce a port it picked: the embedded broker's is chosen free here.
        let broker_port = free_port();
        let broker = format!("127.0.0.1:{broker_port}");
        let mut all = vec!["--data-dir", &data, "--listen", "127.0.0.1:0", "--embedded-broker-listen", &broker];
        all.extend_from_slice(&["--api-token", Self::API_TOKEN]);
        all.extend_from_slice(args);
        let process = Process::spawn(name, &bin("chillcloud-server"), &all, log_dir);
        let api = Api::new(process.announced_http_address().await, Self::API_TOKEN);
        api.wait_healthy(Duration::from_secs(60)).await;
        Self { process, api, data_dir: data_dir.to_owned(), broker_port }
    }

    /// A pool on its database, as the cluster's owner over its socket.
    pub async fn pool(&self) -> sqlx::PgPool {
        embedded_pool(&self.data_dir).await
    }
}

/// A pool on the embedded database of the server whose data directory is `data_dir`, while its
/// cluster runs.
pub async fn embedded_pool(data_dir: &Path) -> sqlx::PgPool {
    let options = sqlx::postgres::PgConnectOptions::new_without_pgpass()
        .socket(data_dir.join("postgres").join("socket"))
        .username("postgres")
        .database("chillcloud");
    sqlx::PgPool::connect_with(options).await.expect("connect to the embedded database")
}

/// Whether this TimescaleDB check may run, from the database `pool` reaches: true when the
/// extension is loaded. Otherwise the check is skipped with one line saying why, or, with
/// `CHILLCLOUD_TEST_TIMESCALE=required` (on machines that have it), fails.
pub async fn timescale_or_skip(pool: &sqlx::PgPool, check: &str) -> bool {
    use chillcloud_server::timescale::{Availability, availability};
    let found = availability(pool).await.expect("ask the database about TimescaleDB");
    match found {
        Availability::Loaded => return true,
        // Our clusters preload it wherever its library is installed.
        Availability::Installed => panic!("TimescaleDB is {found}: {check} found the cluster not preloading it"),
        Availability::Absent => {}
    }
    let required = std::env::var("CHILLCLOUD_TEST_TIMESCALE").is_ok_and(|v| v == "required");
    assert!(!required, "CHILLCLOUD_TEST_TIMESCALE=required, but TimescaleDB is {found} here: {check} cannot run");
    // Straight to the standard error, past the test runner's capture: a skip is seen even when
    // the test passes.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {check}: TimescaleDB is {found} here (CHILLCLOUD_TEST_TIMESCALE=required makes this fail)"
    );
    false
}

/// A Mosquitto broker from Debian's package, configured with the ACL we ship, on a free port.
pub struct TestMosquitto {
    broker: Option<EmbeddedBroker>,
    address: SocketAddr,
    lines: Vec<String>,
    /// The server's MQTT password.
    pub server_password: String,
    dir: TestDir,
}

impl TestMosquitto {
    /// Starts a broker that knows the server and the given gateway password-file lines.
    pub async fn start(gateway_lines: &[String]) -> Self {
        let dir = shared_temp_dir();
        let server_password = "test-server-password".to_owned();
        let mut lines = gateway_lines.to_vec();
        lines.push(broker::password_line(broker::SERVER_USERNAME, &server_password));
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        let broker =
            EmbeddedBroker::start(&dir.path().join("mosquitto"), address, &lines).await.expect("start mosquitto");
        Self { broker: Some(broker), address, lines, server_password, dir }
    }

    /// Stops the broker gracefully (it saves its persistent sessions) and starts it again on
    /// the same address.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.resume().await;
    }

    /// Stops the broker gracefully: to its clients, a network outage.
    pub async fn stop(&mut self) {
        self.broker.take().expect("running").stop().await;
    }

    /// Starts the stopped broker again on the same address.
    pub async fn resume(&mut self) {
        let broker = EmbeddedBroker::start(&self.dir.path().join("mosquitto"), self.address, &self.lines)
            .await
            .expect("restart mosquitto");
        self.broker = Some(broker);
    }

    /// The broker's `host:port`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for TestMosquitto {
    fn drop(&mut self) {
        // The broker's child process is killed on drop.
        self.broker.take();
    }
}

/// A running `chillcloud-sim` and its addresses.
pub struct Simulator {
    /// The process.
    pub process: Process,
    /// Modbus TCP address.
    pub modbus: SocketAddr,
    /// Control interface base URL.
    pub control_url: String,
}

impl Simulator {
    /// Starts `units` simulated chillers.
    pub async fn start(units: u8, log_dir: &Path) -> Self {
        Self::start_with(units, log_dir, &[]).await
    }

    /// Starts `units` simulated chillers with more command-line arguments (for example
    /// `--rtu <serial device>`).
    pub async fn start_with(units: u8, log_dir: &Path, args: &[&str]) -> Self {
        let program = bin("chillcloud-sim");
        let mut child = Command::new(&program)
            .args(["--modbus", "127.0.0.1:0", "--control", "127.0.0.1:0", "--units", &units.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start simulator");
        let stdout = child.stdout.take().expect("piped stdout");
        let line = tokio::time::timeout(Duration::from_secs(10), BufReader::new(stdout).lines().next_line())
            .await
            .expect("simulator announces its addresses")
            .expect("read simulator output")
            .expect("a line");
        let announced: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        let modbus = announced["modbus"].as_str().and_then(|a| a.parse().ok()).expect("modbus address");
        let control_url = format!("http://{}", announced["control"].as_str().expect("control address"));
        let log = log_dir.join("simulator.log");
        std::fs::write(&log, &line).expect("write log");
        Self { process: Process { name: "simulator".into(), child, log }, modbus, control_url }
    }

    /// Sends a control request, for example `("setpoint", json!({"celsius": 9.5}))`.
    pub async fn control(&self, unit_id: u8, what: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .put(format!("{}/units/{unit_id}/{what}", self.control_url))
            .json(&body)
            .send()
            .await
            .expect("simulator control request");
        assert!(response.status().is_success(), "simulator refused {what}: {}", response.status());
    }
}

/// A client for the server's HTTP API.
#[derive(Clone)]
pub struct Api {
    /// Base URL, for example `http://127.0.0.1:8080`.
    pub base: String,
    /// Bearer token.
    pub token: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for the server at `address` using `token`.
    pub fn new(address: SocketAddr, token: &str) -> Self {
        Self { base: format!("http://{address}"), token: token.to_owned(), client: reqwest::Client::new() }
    }

    /// GETs a JSON document, `None` on any failure (for use inside [`wait_for`]).
    pub async fn get(&self, path: &str) -> Option<serde_json::Value> {
        let response = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// GETs `path` and returns the status and body, whatever they are.
    pub async fn get_raw(&self, path: &str) -> (u16, String) {
        let response =
            self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.expect("request");
        (response.status().as_u16(), response.text().await.expect("body"))
    }

    /// Invites a user (`{"login", "name", "role", "organisation_id", "language"}`) and takes up
    /// the invitation with `password`; returns their id.
    pub async fn user(&self, user: serde_json::Value, password: &str) -> i64 {
        let (status, invited) = self.send(Method::POST, "/api/v1/users", user).await;
        assert_eq!(status, 200, "{invited}");
        let url = invited["invitation_url"].as_str().expect("invitation url");
        let (_, secret) = url.split_once("/invite/").expect("an invitation link");
        let set = reqwest::Client::new()
            .post(format!("{}/invite/{secret}", self.base))
            .form(&[("password", password)])
            .send()
            .await
            .expect("take up the invitation");
        assert_eq!(set.status(), 200);
        invited["id"].as_i64().expect("user id")
    }

    /// A client acting as `login`: it signs in and makes itself an API token, as a user's
    /// script would.
    pub async fn signed_in(&self, login: &str, password: &str) -> Api {
        let client = reqwest::Client::new();
        let response = client
            .post(format!("{}/api/v1/session", self.base))
            .json(&serde_json::json!({"login": login, "password": password}))
            .send()
            .await
            .expect("sign in");
        assert!(response.status().is_success(), "sign in as {login}: {}", response.status());
        let cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let session = cookies
            .iter()
            .find(|c| c.starts_with("chillcloud_session="))
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_owned();
        let body: serde_json::Value = response.json().await.expect("session body");
        let token: serde_json::Value = client
            .post(format!("{}/api/v1/tokens", self.base))
            .header("cookie", session)
            .header("x-csrf-token", body["csrf_token"].as_str().expect("csrf token"))
            .json(&serde_json::json!({"name": "test"}))
            .send()
            .await
            .expect("make a token")
            .json()
            .await
            .expect("token body");
        Api { base: self.base.clone(), token: token["token"].as_str().expect("token").to_owned(), client }
    }

    /// Sends `body` with `method` (PUT, POST, DELETE) and returns the status and the JSON
    /// answer (null when there is none).
    pub async fn send(&self, method: reqwest::Method, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A Prometheus value from `/metrics`; panics with the text when it is missing.
    pub async fn metric(&self, name: &str) -> f64 {
        let metrics = self.get_raw("/metrics").await.1;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    }

    /// A person (English, with `phone`) on the service team of `gateway`'s site; returns their id.
    pub async fn add_service_engineer(&self, gateway: &str, phone: &str) -> Value {
        let person = serde_json::json!({"name": "engineer", "phone": phone, "language": "en"});
        let (status, person) = self.send(Method::POST, "/api/v1/people", person).await;
        assert_eq!(status, 200, "{person}");
        let contact = serde_json::json!({"person_id": person["id"], "role": "service"});
        let (status, body) = self.send(Method::POST, &format!("/api/v1/gateways/{gateway}/contacts"), contact).await;
        assert_eq!(status, 200, "{body}");
        person["id"].clone()
    }

    /// The outbox's service alarms (about the service itself, not a site).
    pub async fn service_pages(&self) -> Vec<Value> {
        let outbox = self.get("/api/v1/outbox?limit=1000").await.expect("outbox");
        let pages = outbox.as_array().expect("array").iter();
        pages.filter(|m| m["body"].as_str().is_some_and(|b| b.contains("service alarm"))).cloned().collect()
    }

    /// Waits until the server is healthy and subscribed at the broker: a gateway's message
    /// published before that would not be kept for it.
    pub async fn wait_healthy(&self, timeout: Duration) {
        wait_for("the server healthy and subscribed at the broker", timeout, || async {
            self.get("/health").await.filter(|health| health["broker"] == "subscribed")
        })
        .await;
    }

    /// The latest value of `point` on the unit with `device_key`, if the server has one.
    pub async fn latest(&self, device_key: &str, point: &str) -> Option<f64> {
        let units = self.get("/api/v1/units").await?;
        let unit = units.as_array()?.iter().find(|u| u["device_key"] == device_key)?;
        let detail = self.get(&format!("/api/v1/units/{}", unit["id"])).await?;
        detail["points"].as_array()?.iter().find(|p| p["name"] == point)?["value"].as_f64()
    }
}

/// A birth for one device, `chiller-1`, with `points` points named `p0`, `p1`, … at one
/// decimal: what [`FakeGateway`] announces and the benchmarks register.
pub fn numbered_birth(session: u64, points: u32) -> chillcloud_proto::Birth {
    chillcloud_proto::Birth {
        protocol_version: chillcloud_proto::PROTOCOL_VERSION,
        session,
        software_version: "test".into(),
        time_ms: 1_700_000_000_000,
        devices: vec![chillcloud_proto::Device {
            id: "chiller-1".into(),
            profile: String::new(),
            model: String::new(),
            points: (0..points)
                .map(|alias| chillcloud_proto::PointInfo {
                    alias,
                    name: format!("p{alias}"),
                    unit: String::new(),
                    decimals: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        config_version: 0,
    }
}

/// A scripted gateway speaking the wire protocol directly, for tests that need exact control
/// over what is published (replays, known readings, steady load).
pub struct FakeGateway {
    client: rumqttc::AsyncClient,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    driver: tokio::task::JoinHandle<()>,
    gateway_id: chillcloud_proto::GatewayId,
    /// The session announced in the birth.
    pub session: u64,
    seq: u64,
    published: u64,
}

impl FakeGateway {
    /// Connects to the broker on `port` as `gateway_id` and publishes a birth for one device,
    /// `chiller-1`, with `points` points named `p0`, `p1`, … at one decimal.
    pub async fn connect(port: u16, gateway_id: &str, password: &str, points: u32) -> Self {
        Self::connect_with_birth(port, gateway_id, password, numbered_birth(1, points)).await
    }

    /// Connects like [`FakeGateway::connect`] and publishes `birth` (its session is this
    /// gateway's).
    pub async fn connect_with_birth(
        port: u16,
        gateway_id: &str,
        password: &str,
        birth: chillcloud_proto::Birth,
    ) -> Self {
        use prost::Message;
        let mut options = rumqttc::MqttOptions::new(gateway_id, "127.0.0.1", port);
        options.set_credentials(gateway_id, password);
        options.set_keep_alive(Duration::from_secs(10));
        options.set_clean_session(false);
        // A test gateway may publish what no real one would (oversized messages included).
        options.set_max_packet_size(32 << 20, 32 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1024);
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = acked.clone();
        let driver = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    // The broker may be restarting: retry (the client resends what is unacked).
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let gateway_id = chillcloud_proto::GatewayId::new(gateway_id).expect("valid gateway id");
        let session = birth.session;
        let mut gateway = Self { client, acked, driver, gateway_id, session, seq: 0, published: 0 };
        gateway.publish(chillcloud_proto::MessageKind::Birth, birth.encode_to_vec(), true).await;
        gateway
    }

    async fn publish(&mut self, kind: chillcloud_proto::MessageKind, payload: Vec<u8>, retain: bool) {
        let topic = chillcloud_proto::Topic::new(self.gateway_id.clone(), kind).to_string();
        self.client.publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload).await.expect("queue publish");
        self.published += 1;
    }

    /// The data message for batch number `batch`: every point read at one instant, 1 s after
    /// the previous batch, with value `batch + alias / 10`.
    pub fn data(&mut self, batch: u64, points: u32) -> chillcloud_proto::Data {
        self.seq += 1;
        chillcloud_proto::Data {
            session: self.session,
            seq: self.seq,
            history: false,
            base_time_ms: 1_700_000_000_000 + batch as i64 * 1000,
            readings: (0..points)
                .map(|alias| chillcloud_proto::Reading {
                    alias,
                    offset_ms: 0,
                    quality: 0,
                    value: Some(chillcloud_proto::Value::Scaled(batch as i64 * 10 + i64::from(alias))),
                })
                .collect(),
            dropped: vec![],
        }
    }

    /// A data message with `(alias, value)` readings all taken at `time_ms`.
    pub fn data_at(&mut self, time_ms: i64, readings: &[(u32, f64)]) -> chillcloud_proto::Data {
        self.seq += 1;
        chillcloud_proto::Data {
            session: self.session,
            seq: self.seq,
            history: false,
            base_time_ms: time_ms,
            readings: readings
                .iter()
                .map(|&(alias, value)| chillcloud_proto::Reading {
                    alias,
                    offset_ms: 0,
                    quality: 0,
                    value: Some(chillcloud_proto::encode_value(value, 1)),
                })
                .collect(),
            dropped: vec![],
        }
    }

    /// A data message with `(alias, time_ms, value)` readings taken over a span of time, each
    /// value at one decimal.
    pub fn data_series(&mut self, readings: &[(u32, i64, f64)]) -> chillcloud_proto::Data {
        self.seq += 1;
        let base_time_ms = readings.iter().map(|r| r.1).min().unwrap_or(0);
        chillcloud_proto::Data {
            session: self.session,
            seq: self.seq,
            history: false,
            base_time_ms,
            readings: readings
                .iter()
                .map(|&(alias, time_ms, value)| chillcloud_proto::Reading {
                    alias,
                    offset_ms: time_ms - base_time_ms,
                    quality: 0,
                    value: Some(chillcloud_proto::encode_value(value, 1)),
                })
                .collect(),
            dropped: vec![],
        }
    }

    /// Publishes a data message.
    pub async fn publish_data(&mut self, data: &chillcloud_proto::Data) {
        use prost::Message;
        self.publish(chillcloud_proto::MessageKind::Data, data.encode_to_vec(), false).await;
    }

    /// Publishes raw bytes on another gateway's topic, as a gateway posing as it would.
    pub async fn publish_as(&mut self, other: &str, kind: chillcloud_proto::MessageKind, payload: Vec<u8>) {
        let other = chillcloud_proto::GatewayId::new(other).expect("valid gateway id");
        let topic = chillcloud_proto::Topic::new(other, kind).to_string();
        self.client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await.expect("queue publish");
        self.published += 1;
    }

    /// Publishes raw bytes on one of this gateway's topics.
    pub async fn publish_raw(&mut self, kind: chillcloud_proto::MessageKind, payload: Vec<u8>) {
        self.publish(kind, payload, false).await;
    }

    /// Publishes raw bytes on one of this gateway's topics, retained by the broker.
    pub async fn publish_retained(&mut self, kind: chillcloud_proto::MessageKind, payload: Vec<u8>) {
        self.publish(kind, payload, true).await;
    }

    /// Waits until the broker has acknowledged everything published so far.
    pub async fn wait_acked(&self, timeout: Duration) {
        let published = self.published;
        wait_for("the broker to acknowledge every publish", timeout, || async {
            (self.acked.load(std::sync::atomic::Ordering::SeqCst) >= published).then_some(())
        })
        .await;
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Counts the readings gateways sent, leaving out the derived values the server computes.
pub const GATEWAY_READINGS: &str =
    "select count(*) from readings r join points p on p.id = r.point_id where not p.derived";

/// Counts the readings stored in `pool`: (rows, distinct (point, ts) keys).
pub async fn count_readings(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("select count(*), count(distinct (point_id, ts)) from readings")
        .fetch_one(pool)
        .await
        .expect("count readings")
}

/// A server run against a throwaway PostgreSQL and a Debian Mosquitto, with one provisioned
/// gateway, for tests that drive it with a [`FakeGateway`].
pub struct Stack {
    /// The server process, once started. Dropped first (fields drop in order), so a failing
    /// test prints its log before the directory holding it is removed.
    pub server: Option<Process>,
    /// The database.
    pub postgres: TestPostgres,
    /// The broker.
    pub broker: TestMosquitto,
    /// The server's HTTP address.
    pub http: SocketAddr,
    /// The provisioned gateway's id.
    pub gateway_id: &'static str,
    /// Its MQTT password.
    pub password: String,
    /// More arguments for the server (for example `--paging-config`).
    pub server_args: Vec<String>,
    /// More provisioned gateways (sites): id and MQTT password.
    pub more_gateways: Vec<(String, String)>,
    /// Logs and the server's data directory; removed last.
    pub dir: TestDir,
}

impl Stack {
    /// The API token the stack's server uses.
    pub const API_TOKEN: &'static str = "stack-token";

    /// Starts everything and provisions the gateway `gw-stack`.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Like [`Stack::start`], with more arguments for the server.
    pub async fn start_with(server_args: &[&str]) -> Self {
        Self::start_with_sites(&[], server_args).await
    }

    /// Like [`Stack::start_with`], with more gateways (sites) provisioned beside `gw-stack`.
    pub async fn start_with_sites(more_gateways: &[&str], server_args: &[&str]) -> Self {
        Self::start_on(TestPostgres::start().await, more_gateways, server_args).await
    }

    /// Like [`Stack::start_with_sites`], on a database already made.
    pub async fn start_on(postgres: TestPostgres, more_gateways: &[&str], server_args: &[&str]) -> Self {
        let dir = shared_temp_dir();
        let gateway_id = "gw-stack";
        let mut provisioned = Vec::new();
        for id in std::iter::once(gateway_id).chain(more_gateways.iter().copied()) {
            let (password, line) = add_gateway(id, &["--database-url", &postgres.url()]).await;
            provisioned.push((id.to_owned(), password, line));
        }
        let lines: Vec<String> = provisioned.iter().map(|(_, _, line)| line.clone()).collect();
        let broker = TestMosquitto::start(&lines).await;
        let mut provisioned = provisioned.into_iter().map(|(id, password, _)| (id, password));
        let (_, password) = provisioned.next().expect("gw-stack");
        let mut stack = Self {
            dir,
            postgres,
            broker,
            server: None,
            // Port 0 until the server announces the port it took.
            http: "127.0.0.1:0".parse().expect("address"),
            gateway_id,
            password,
            server_args: server_args.iter().map(|a| (*a).to_owned()).collect(),
            more_gateways: provisioned.collect(),
        };
        stack.start_server().await;
        stack
    }

    /// Starts (or restarts) the server and waits until it is healthy.
    pub async fn start_server(&mut self) {
        let (url, broker, http) = (self.postgres.url(), self.broker.address().to_string(), self.http.to_string());
        let data_dir = self.dir.path().join("server");
        let args = [
            "--database-url",
            &url,
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--listen",
            &http,
            "--mqtt-broker",
            &broker,
            "--mqtt-password",
            &self.broker.server_password,
            "--api-token",
            Self::API_TOKEN,
        ];
        // Each start gets its own log so a restart does not hide the first run's output.
        let name = if self.server.is_some() { "server-restarted" } else { "server" };
        let args: Vec<&str> = args.iter().copied().chain(self.server_args.iter().map(String::as_str)).collect();
        let server = Process::spawn(name, &bin("chillcloud-server"), &args, self.dir.path());
        // A restart keeps the port the first run took, so clients made before it still reach it.
        if self.http.port() == 0 {
            self.http = server.announced_http_address().await;
        }
        self.server = Some(server);
        self.api().wait_healthy(Duration::from_secs(30)).await;
    }

    /// A client for the server's API.
    pub fn api(&self) -> Api {
        Api::new(self.http, Self::API_TOKEN)
    }

    /// Makes `login` (with `password`) an owner of the stack's site through the API, as an
    /// administrator would: a customer organisation, the site given to it, an invitation
    /// taken up. Returns the organisation's id.
    pub async fn site_owner(&self, login: &str, name: &str, password: &str) -> i64 {
        self.owner_of(self.gateway_id, login, name, password).await
    }

    /// Like [`Stack::site_owner`], for the site of `gateway`.
    pub async fn owner_of(&self, gateway: &str, login: &str, name: &str, password: &str) -> i64 {
        let api = self.api();
        let (status, customer) = api
            .send(Method::POST, "/api/v1/organisations", serde_json::json!({"name": login, "kind": "customer"}))
            .await;
        assert_eq!(status, 200, "{customer}");
        let organisation = customer["id"].as_i64().expect("organisation id");
        let path = format!("/api/v1/gateways/{gateway}/organisation");
        let (status, body) = api.send(Method::PUT, &path, serde_json::json!({"organisation_id": organisation})).await;
        assert_eq!(status, 204, "{body}");
        self.user(
            serde_json::json!({"login": login, "name": name, "role": "owner", "organisation_id": organisation}),
            password,
        )
        .await;
        organisation
    }

    /// Invites a user (`{"login", "name", "role", "organisation_id", "language"}`) through the
    /// API and takes up the invitation with `password`; returns their id.
    pub async fn user(&self, user: serde_json::Value, password: &str) -> i64 {
        self.api().user(user, password).await
    }

    /// Connects a fake gateway with `points` points.
    pub async fn gateway(&self, points: u32) -> FakeGateway {
        FakeGateway::connect(self.broker.address().port(), self.gateway_id, &self.password, points).await
    }
}

/// A `chillcloud-gateway` run against a [`Stack`], with its config, state and logs in the
/// stack's directory.
pub struct Gateway {
    config: PathBuf,
    /// Its state directory (session counter, queue, status report).
    pub state_dir: PathBuf,
    log_dir: PathBuf,
    /// The running process.
    pub process: Option<Process>,
    runs: u32,
}

impl Gateway {
    /// Writes a config for the stack's gateway: `top_level` goes before the tables (for
    /// example a `[queue]` table), `devices` after the `[mqtt]` table.
    pub fn new(stack: &Stack, top_level: &str, devices: &str) -> Self {
        let broker = format!("host = \"127.0.0.1\"\nport = {}", stack.broker.address().port());
        Self::in_dir(stack.dir.path(), stack.gateway_id, &stack.password, &broker, top_level, devices)
    }

    /// Writes a config in `dir` for `gateway` with `password`: `broker` is the `[mqtt]` table's
    /// broker lines (`host`/`port`, or `brokers`), `top_level` and `devices` as for [`Gateway::new`].
    pub fn in_dir(dir: &Path, gateway: &str, password: &str, broker: &str, top_level: &str, devices: &str) -> Self {
        std::fs::write(dir.join("gateway.secret"), password).expect("write secret");
        let state_dir = dir.join("gateway-state");
        let config = format!(
            "gateway_id = \"{gateway}\"\nstate_dir = \"{state}\"\n{top_level}\n[mqtt]\n{broker}\npassword_file = \"{secret}\"\n{devices}",
            state = state_dir.display(),
            secret = dir.join("gateway.secret").display(),
        );
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config).expect("write gateway config");
        Self { config: path, state_dir, log_dir: dir.to_owned(), process: None, runs: 0 }
    }

    /// A gateway run from the configuration file at `config` (whose `state_dir` is `state_dir`),
    /// logging into `log_dir`.
    pub fn from_file(config: PathBuf, state_dir: PathBuf, log_dir: &Path) -> Self {
        Self { config, state_dir, log_dir: log_dir.to_owned(), process: None, runs: 0 }
    }

    /// Replaces the configuration file's text.
    pub fn rewrite_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("read gateway config");
        std::fs::write(&self.config, edit(text)).expect("write gateway config");
    }

    /// Starts (or restarts) the gateway.
    pub fn start(&mut self) {
        self.runs += 1;
        let name = format!("gateway-run{}", self.runs);
        let config = self.config.to_string_lossy().into_owned();
        self.process =
            Some(Process::spawn(&name, &bin("chillcloud-gateway"), &["run", "--config", &config], &self.log_dir));
    }

    /// The status report of the running (or last) gateway.
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(self.state_dir.join("status.json")).ok()?).ok()
    }

    /// Waits up to a minute until the status report of `session` satisfies `check`.
    pub async fn wait_status(
        &self,
        what: &str,
        session: u64,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(what, Duration::from_secs(60), || async {
            self.status().filter(|s| s["session"].as_u64() == Some(session) && check(s))
        })
        .await
    }

    /// Stops the gateway cleanly and returns its final status report.
    pub async fn stop(&mut self) -> serde_json::Value {
        let mut process = self.process.take().expect("running");
        let exit = process.terminate(Duration::from_secs(20)).await.expect("gateway stops on SIGTERM");
        assert!(exit.success(), "gateway exit status {exit}");
        self.status().expect("final status report")
    }
}

/// `tests/browser`: the browser tests' scripts and their playwright-core, which drive Debian's
/// Chromium. Panics saying how to install them when either is missing.
pub fn browser_dir() -> PathBuf {
    let dir = workspace_root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "scripts/test installs Chromium and playwright-core (npm ci in tests/browser)"
    );
    dir
}

/// Runs the browser script `tests/browser/<script>` with `env` (and `ARTIFACTS`, where its
/// screenshots go), prints what it printed, and panics unless it succeeds within 3 minutes.
pub async fn run_browser_script(script: &str, env: &[(&str, &str)]) {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(browser_dir().join(script))
        .env("ARTIFACTS", workspace_root().join("target/browser-artifacts"))
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("the browser test finishes in 3 minutes")
        .expect("node");
    let printed = String::from_utf8_lossy(&output.stdout);
    println!("{printed}");
    assert!(output.status.success(), "{script}: {printed}\n{}", String::from_utf8_lossy(&output.stderr));
}

/// The third-party Modbus server (`tests/interop/pymodbus_server.py`) listening, with its log in
/// `dir`, and its port.
pub async fn start_pymodbus(dir: &Path) -> (Process, u16) {
    let python = pymodbus_python().await;
    let port = free_port();
    let script = workspace_root().join("tests/interop/pymodbus_server.py");
    let process = Process::spawn("pymodbus", &python, &[&script.to_string_lossy(), &port.to_string()], dir);
    wait_for("pymodbus to listen", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
    (process, port)
}

/// A Python with pymodbus 3.16: `$CHILLCLOUD_PYMODBUS_PYTHON`, or a venv under `target/`
/// created on first use.
pub async fn pymodbus_python() -> PathBuf {
    if let Some(python) = std::env::var_os("CHILLCLOUD_PYMODBUS_PYTHON") {
        return python.into();
    }
    let venv = bin_dir().parent().expect("target dir").join("pymodbus-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        run_to_completion(std::path::Path::new("python3"), &["-m", "venv", &venv.to_string_lossy()]).await;
    }
    let check = tokio::process::Command::new(&python)
        .args(["-c", "import pymodbus.server"])
        .output()
        .await
        .expect("run python");
    if !check.status.success() {
        run_to_completion(&venv.join("bin/pip"), &["install", "--quiet", "pymodbus==3.16.*"]).await;
    }
    python
}

/// A certificate authority and a server certificate for `localhost` and 127.0.0.1, made with
/// the `openssl` command in `dir`: `ca.pem`, `server.pem`, `server.key`.
pub async fn make_test_certificates(dir: &Path) {
    let run = |args: Vec<String>| async move {
        let output = Command::new("openssl").args(&args).current_dir(dir).output().await.expect("run openssl");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let args = |text: &str| text.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    run(args("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=chillcloud-test-ca")).await;
    run(args("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj /CN=localhost")).await;
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("write extension");
    run(args(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext",
    ))
    .await;
    for name in ["server.key", "server.pem", "ca.pem"] {
        // Mosquitto drops to its own user and must read them.
        std::fs::set_permissions(dir.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod certificate");
    }
}

/// A Mosquitto broker with password authentication and no topic ACL, with one listener on a
/// free port: TLS (certificates from [`make_test_certificates`]) or plain. Killed when dropped.
pub struct PasswordMosquitto {
    /// The broker process.
    pub process: Process,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA certificate clients trust, for a TLS listener.
    pub ca: PathBuf,
}

impl PasswordMosquitto {
    /// Starts a TLS broker in `dir` accepting the users of `password_lines`.
    pub async fn start_tls(dir: &Path, password_lines: &[String]) -> Self {
        make_test_certificates(dir).await;
        Self::start(dir, password_lines, true).await
    }

    /// Starts a plain-TCP broker in `dir` accepting the users of `password_lines`.
    pub async fn start_plain(dir: &Path, password_lines: &[String]) -> Self {
        Self::start(dir, password_lines, false).await
    }

    async fn start(dir: &Path, password_lines: &[String], tls: bool) -> Self {
        let port = free_port();
        let passwords = dir.join("passwd");
        std::fs::write(&passwords, password_lines.iter().map(|l| format!("{l}\n")).collect::<String>())
            .expect("write password file");
        std::fs::set_permissions(&passwords, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod password file");
        let config = dir.join("mosquitto-password.conf");
        std::fs::write(
            &config,
            format!(
                "per_listener_settings false\nallow_anonymous false\npassword_file {passwords}\nlistener {port} 127.0.0.1\n{tls}",
                passwords = passwords.display(),
                tls = if tls {
                    format!(
                        "cafile {dir}/ca.pem\ncertfile {dir}/server.pem\nkeyfile {dir}/server.key\n",
                        dir = dir.display()
                    )
                } else {
                    String::new()
                },
            ),
        )
        .expect("write mosquitto config");
        let mosquitto = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("mosquitto installed");
        let process = Process::spawn("mosquitto-password", &mosquitto, &["-c", &config.to_string_lossy()], dir);
        wait_for("the broker to listen", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
        })
        .await;
        Self { process, port, ca: dir.join("ca.pem") }
    }
}

/// `[[devices]]` tables for the simulator's chillers 1 to `units` over Modbus TCP on the Trane
/// profile, each with the `settings` lines (for example `poll_interval_ms = 100`) and, with
/// `bank`, the simulator's 100-register benchmark bank as extra points.
pub fn simulated_chillers(sim: &Simulator, units: u8, settings: &str, bank: bool) -> String {
    let bank = if bank { bank_points("devices.points", "") } else { String::new() };
    (1..=units)
        .map(|unit| {
            format!(
                "[[devices]]\nid = \"chiller-{unit}\"\nprofile = \"trane-ch530\"\nhost = \"127.0.0.1\"\nport = {}\nunit_id = {unit}\n{settings}\n{bank}",
                sim.modbus.port()
            )
        })
        .collect()
}

/// The simulator's benchmark bank (input registers 100 to 199) as `[[<table>]]` point tables
/// (`devices.points` in a gateway configuration, `points` in a profile), each with `settings`.
pub fn bank_points(table: &str, settings: &str) -> String {
    let first = crate::sim::chiller::BENCH_BANK_START;
    (first..first + 100)
        .map(|address| {
            format!("[[{table}]]\nname = \"bank_{address}\"\nkind = \"input\"\naddress = {address}\n{settings}")
        })
        .collect()
}

/// A running plant: the stack, `units` simulated chillers and the gateway polling them.
pub struct Plant {
    /// Server, broker and database.
    pub stack: Stack,
    /// The simulated chillers.
    pub sim: Simulator,
    /// The gateway polling them.
    pub gateway: Gateway,
    /// Unit ids by device key.
    pub units: BTreeMap<String, i64>,
}

impl Plant {
    /// Starts `units` chillers simulated at `speed` times real time, polled with the device
    /// `settings` (for example `poll_interval_ms = 500`).
    pub async fn start(units: u8, speed: f64, settings: &str) -> Self {
        Self::start_with(units, speed, "", |sim| simulated_chillers(sim, units, settings, false)).await
    }

    /// Starts `units` chillers at `speed` polled by a gateway with the `top_level` settings and
    /// the `devices` tables made for the simulator.
    pub async fn start_with(
        units: u8,
        speed: f64,
        top_level: &str,
        devices: impl FnOnce(&Simulator) -> String,
    ) -> Self {
        let stack = Stack::start().await;
        let speed = speed.to_string();
        let sim = Simulator::start_with(units, stack.dir.path(), &["--speed", &speed, "--start-hour", "14"]).await;
        let devices = devices(&sim);
        let mut gateway = Gateway::new(&stack, top_level, &devices);
        gateway.start();
        let api = stack.api();
        let units = wait_for("every unit registered with values", Duration::from_secs(30), || async {
            let list = api.get("/api/v1/units").await?;
            let list = list.as_array()?;
            if list.len() != usize::from(units) {
                return None;
            }
            for unit in list {
                api.latest(unit["device_key"].as_str()?, "evap_leaving_temp").await?;
            }
            Some(
                list.iter()
                    .map(|u| (u["device_key"].as_str().expect("key").to_owned(), u["id"].as_i64().expect("id")))
                    .collect(),
            )
        })
        .await;
        Self { stack, sim, gateway, units }
    }

    /// An API client as the operator.
    pub fn api(&self) -> Api {
        self.stack.api()
    }

    /// The unit id of `chiller-<number>`.
    pub fn unit(&self, number: u8) -> i64 {
        self.units[&format!("chiller-{number}")]
    }

    /// Overrides rule fields for one unit.
    pub async fn set_rule(&self, number: u8, rule: &str, patch: Value) {
        let (status, body) =
            self.api().send(Method::PUT, &format!("/api/v1/units/{}/rules/{rule}", self.unit(number)), patch).await;
        assert_eq!(status, 200, "rule override refused: {body}");
    }

    /// Alarms of a unit (or, with `None`, site alarms), any state.
    pub async fn alarms(&self, number: Option<u8>) -> Vec<Value> {
        let all = self.api().get("/api/v1/alarms?state=all&limit=1000").await.expect("alarm list");
        let unit = number.map(|n| self.unit(n));
        all.as_array().expect("array").iter().filter(|a| a["unit_id"].as_i64() == unit).cloned().collect()
    }

    /// Waits until the unit's alarms are exactly `expected` (rule, grade) and stay so for 3 s.
    pub async fn expect_alarms(&self, number: u8, expected: &[(&str, i64)]) -> Vec<Value> {
        let expected: BTreeMap<String, i64> = expected.iter().map(|(r, g)| ((*r).to_owned(), *g)).collect();
        let summary = |alarms: &[Value]| -> BTreeMap<String, i64> {
            alarms
                .iter()
                .map(|a| (a["rule"].as_str().expect("rule").to_owned(), a["grade"].as_i64().expect("grade")))
                .collect()
        };
        wait_for(&format!("alarms {expected:?} on chiller-{number}"), Duration::from_secs(60), || async {
            let alarms = self.alarms(Some(number)).await;
            (summary(&alarms) == expected).then_some(())
        })
        .await;
        // Nothing else follows at once.
        let settle = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let alarms = self.alarms(Some(number)).await;
        assert_eq!(summary(&alarms), expected, "alarms of chiller-{number}: {alarms:#?}");
        assert!(alarms.iter().all(|a| a["occurrences"] == 1), "one episode, no duplicates: {alarms:#?}");
        alarms
    }

    /// When the stored readings of `point` first satisfied `condition` after `after`, ms.
    pub async fn onset(&self, number: u8, point: &str, condition: &str, after: i64) -> i64 {
        let pool = self.stack.postgres.pool().await;
        let sql = format!(
            "select (extract(epoch from min(r.ts)) * 1000)::bigint from readings r join points p on p.id = r.point_id
             where p.unit_id = $1 and p.name = $2 and r.ts >= to_timestamp($3 / 1000.0) and r.value {condition}"
        );
        wait_for(&format!("{point} {condition}"), Duration::from_secs(60), || async {
            sqlx::query_scalar::<_, Option<i64>>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(self.unit(number))
                .bind(point)
                .bind(after)
                .fetch_one(&pool)
                .await
                .ok()
                .flatten()
        })
        .await
    }
}
