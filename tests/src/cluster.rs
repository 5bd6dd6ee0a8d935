//! The clustered layout for tests: a three-node RabbitMQ cluster started by
//! `deploy/cluster/rabbitmq-cluster.sh` (the same script an operator uses to see the layout), and
//! server replicas sharing one database through it.

use std::{net::TcpListener, process::Command, time::Duration};

use crate::harness::{Api, Gateway, Process, TestDir, TestPostgres, add_gateway, bin, shared_temp_dir, workspace_root};

/// The cluster's administrator, which the server replicas log in as.
const ADMIN: (&str, &str) = ("chillcloud-server", "cluster-test-secret");

/// A three-node RabbitMQ cluster on loopback ports of its own.
pub struct RabbitCluster {
    /// Ports are `base + offset`: see the script's header.
    base: u16,
    dir: TestDir,
}

impl RabbitCluster {
    /// Starts the three nodes and waits until they form one cluster.
    pub fn start() -> Self {
        let dir = shared_temp_dir();
        let base = free_block(52);
        let out = script(&dir, &["start", &dir.path().join("rabbit").to_string_lossy(), &base.to_string()]);
        eprintln!("{out}");
        Self { base, dir }
    }

    /// The AMQP URL of node `i` (1 to 3), as the administrator.
    pub fn amqp_url(&self, i: u16) -> String {
        format!("amqp://{}:{}@127.0.0.1:{}/%2f", ADMIN.0, ADMIN.1, self.base + i - 1)
    }

    /// Every node's AMQP URL, comma-separated, for `--amqp-url`.
    pub fn amqp_urls(&self) -> String {
        (1..=3).map(|i| self.amqp_url(i)).collect::<Vec<_>>().join(",")
    }

    /// The management API of node `i`, as the administrator.
    pub fn management_url(&self, i: u16) -> String {
        format!("http://{}:{}@127.0.0.1:{}", ADMIN.0, ADMIN.1, self.base + 30 + i - 1)
    }

    /// Every node's management API, comma-separated, for `--rabbitmq-management-url`.
    pub fn management_urls(&self) -> String {
        (1..=3).map(|i| self.management_url(i)).collect::<Vec<_>>().join(",")
    }

    /// What the management API says of queue `name` (messages ready and unacknowledged, its
    /// consumers), for a failing test to show.
    pub async fn queue(&self, name: &str) -> String {
        let url = format!("http://127.0.0.1:{}/api/queues/%2F/{name}", self.base + 30);
        let answer = reqwest::Client::new().get(&url).basic_auth(ADMIN.0, Some(ADMIN.1)).send().await;
        let Ok(answer) = answer else { return "unreachable".into() };
        let queue: serde_json::Value = answer.json().await.unwrap_or_default();
        let keys = ["messages_ready", "messages_unacknowledged", "consumers", "leader", "single_active_consumer_tag"];
        let summary: serde_json::Map<String, serde_json::Value> =
            keys.iter().map(|k| ((*k).to_owned(), queue[*k].clone())).collect();
        serde_json::Value::Object(summary).to_string()
    }

    /// Waits until `gateway`'s user exists in the cluster (the replicas create it).
    pub async fn wait_for_gateway_user(&self, gateway: &str) {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/api/users/{gateway}", self.base + 30);
        crate::harness::wait_for("the gateway's RabbitMQ user", Duration::from_secs(60), || async {
            let answer = client.get(&url).basic_auth(ADMIN.0, Some(ADMIN.1)).send().await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
    }

    /// The `[mqtt]` lines of a gateway that knows every node, node 1 first.
    pub fn gateway_brokers(&self) -> String {
        let nodes: Vec<String> = (1..=3).map(|i| format!("\"127.0.0.1:{}\"", self.mqtt_port(i))).collect();
        format!("brokers = [{}]", nodes.join(", "))
    }

    /// The node (1 to 3) whose MQTT port `address` (`host:port`) is.
    pub fn node_of(&self, address: &str) -> Option<u16> {
        let port: u16 = address.rsplit_once(':')?.1.parse().ok()?;
        (1..=3).find(|&i| self.mqtt_port(i) == port)
    }

    /// The MQTT port of node `i`.
    pub fn mqtt_port(&self, i: u16) -> u16 {
        self.base + 10 + i - 1
    }

    /// The process id of node `i`'s Erlang VM.
    pub fn pid(&self, i: u16) -> i32 {
        let path = self.dir.path().join(format!("rabbit/n{i}.pid"));
        std::fs::read_to_string(&path).expect("node pid file").trim().parse().expect("a pid")
    }

    /// `kill -9` of node `i`.
    pub fn kill9(&self, i: u16) {
        let killed = Command::new("kill").args(["-9", &self.pid(i).to_string()]).status().expect("run kill");
        assert!(killed.success(), "kill -9 node {i}");
    }

    /// Stops node `i` as an operator does for a rolling restart: drained (maintenance mode:
    /// its queue leaders moved, its clients sent to the other nodes), then SIGTERM; waits until
    /// its VM has exited.
    pub async fn stop_node(&self, i: u16) {
        let base = self.dir.path().join("rabbit");
        tokio::task::block_in_place(|| script(&self.dir, &["drain", &base.to_string_lossy(), &i.to_string()]));
        let pid = self.pid(i).to_string();
        let stopped = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(stopped.success(), "kill -TERM node {i}");
        crate::harness::wait_for("the node's VM to exit", Duration::from_secs(60), || async {
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")))
            .then_some(())
        })
        .await;
    }

    /// Starts node `i` again and waits until it runs in the cluster.
    pub fn restart(&self, i: u16) {
        script(&self.dir, &["start-node", &self.dir.path().join("rabbit").to_string_lossy(), &i.to_string()]);
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        let _ = Command::new(workspace_root().join("deploy/cluster/rabbitmq-cluster.sh"))
            .args(["stop", &self.dir.path().join("rabbit").to_string_lossy()])
            .env("RABBITMQ_ADMIN_USER", ADMIN.0)
            .env("RABBITMQ_ADMIN_PASS", ADMIN.1)
            .output();
    }
}

/// Runs the cluster script to completion, panicking with its output when it fails.
fn script(dir: &TestDir, args: &[&str]) -> String {
    let out = Command::new(workspace_root().join("deploy/cluster/rabbitmq-cluster.sh"))
        .args(args)
        .env("RABBITMQ_ADMIN_USER", ADMIN.0)
        .env("RABBITMQ_ADMIN_PASS", ADMIN.1)
        .env("DEADLINE", "180")
        // The replicas create gateways' users through the management API.
        .env("MGMT", "1")
        .output()
        .expect("run deploy/cluster/rabbitmq-cluster.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rabbitmq-cluster.sh {args:?} failed ({}):\n{text}", dir.path().display());
    text
}

/// The first of `n` consecutive loopback ports that are free now (RabbitMQ takes fixed port
/// numbers from its configuration, so a block is reserved by probing). Drawn below the kernel's
/// range for outgoing connections, which could otherwise take one of them before a node binds it.
fn free_block(n: u16) -> u16 {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let below = ephemeral_from.saturating_sub(n).max(10_000 + n + 1);
    for _ in 0..200 {
        let base = rand::random_range(10_000..below);
        if (base..base + n).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return base;
        }
    }
    panic!("no block of {n} free ports");
}

/// A server replica on the cluster, against a shared database.
pub struct Replica {
    /// The process.
    pub process: Process,
    /// Its API.
    pub api: Api,
}

/// The API token every replica uses.
pub const API_TOKEN: &str = "cluster-token";

impl Replica {
    /// Starts replica `name` with its own data directory under `dir`.
    pub async fn start(name: &str, postgres: &TestPostgres, cluster: &RabbitCluster, dir: &TestDir) -> Self {
        Self::start_with(name, postgres, cluster, dir, &[]).await
    }

    /// Like [`Replica::start`], with more arguments for the server.
    pub async fn start_with(
        name: &str,
        postgres: &TestPostgres,
        cluster: &RabbitCluster,
        dir: &TestDir,
        more: &[&str],
    ) -> Self {
        let data_dir = dir.path().join(name);
        let args = [
            "--database-url",
            &postgres.url(),
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
            "--amqp-url",
            &cluster.amqp_urls(),
            "--rabbitmq-management-url",
            &cluster.management_urls(),
            "--api-token",
            API_TOKEN,
        ];
        let args: Vec<&str> = args.iter().copied().chain(more.iter().copied()).collect();
        let process = Process::spawn(name, &bin("chillcloud-server"), &args, dir.path());
        let api = Api::new(process.announced_http_address().await, API_TOKEN);
        api.wait_healthy(Duration::from_secs(60)).await;
        Self { process, api }
    }

    /// The partitions this replica owns now.
    pub async fn partitions(&self) -> Vec<u16> {
        let health = self.api.get("/health").await.unwrap_or_default();
        health["partitions"]
            .as_array()
            .map(|p| p.iter().filter_map(|v| v.as_u64()).map(|v| v as u16).collect())
            .unwrap_or_default()
    }
}

/// The whole clustered layout: three RabbitMQ nodes, server replicas on one database, and one
/// provisioned gateway, whose broker user the replicas create.
pub struct Layout {
    /// The replicas, in start order.
    pub replicas: Vec<Replica>,
    /// The broker cluster.
    pub cluster: RabbitCluster,
    /// The database.
    pub postgres: TestPostgres,
    /// The gateway's id.
    pub gateway_id: &'static str,
    /// Its password (MQTT).
    pub password: String,
    /// Logs and data directories.
    pub dir: TestDir,
}

impl Layout {
    /// Starts the cluster, the database and `replicas` replicas, and provisions `gw-cluster`.
    pub async fn start(replicas: usize) -> Self {
        Self::start_with(replicas, &[]).await
    }

    /// Like [`Layout::start`], with more arguments for every replica.
    pub async fn start_with(replicas: usize, server_args: &[&str]) -> Self {
        let cluster = tokio::task::block_in_place(RabbitCluster::start);
        let postgres = TestPostgres::start().await;
        let dir = shared_temp_dir();
        let gateway_id = "gw-cluster";
        let (password, _) = add_gateway(gateway_id, &["--database-url", &postgres.url()]).await;
        let mut layout = Self { replicas: Vec::new(), cluster, postgres, gateway_id, password, dir };
        for i in 1..=replicas {
            let name = format!("replica-{i}");
            let replica = Replica::start_with(&name, &layout.postgres, &layout.cluster, &layout.dir, server_args).await;
            layout.replicas.push(replica);
        }
        layout.cluster.wait_for_gateway_user(gateway_id).await;
        layout
    }

    /// The real gateway binary for `gw-cluster`, knowing every node, polling `devices`.
    pub fn gateway(&self, devices: &str) -> Gateway {
        Gateway::in_dir(self.dir.path(), self.gateway_id, &self.password, &self.cluster.gateway_brokers(), "", devices)
    }

    /// The index of the replica owning the gateway's partition now, if one reports it.
    pub async fn owner(&self) -> Option<usize> {
        let partition = chillcloud_server::partitions::of(self.gateway_id);
        for (i, replica) in self.replicas.iter().enumerate() {
            if replica.partitions().await.contains(&partition) {
                return Some(i);
            }
        }
        None
    }
}
