//! The Debian packages as an operator meets them: built by `scripts/package` (which runs lintian
//! on each), installed into a clean Debian root made by debootstrap, where the gateway runs as
//! its system user with its unit's command line against the simulator and publishes to the
//! stack's broker. An upgrade during a broker outage keeps the configuration and the queue, and
//! every reading arrives. The root is a chroot: no init system runs there, so the test starts
//! the unit's `ExecStart` itself, as the unit's `User=`.
//!
//! The packages hold the debug binaries the test build already made (`--no-build --profile
//! dev`): building release binaries too would double CI's compile time, and the packaging
//! (files, scripts, user, directories, upgrades) is the same.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use chillcloud_tests::harness::{
    GATEWAY_READINGS, Process, Simulator, Stack, run_to_completion, shared_temp_dir, wait_for, workspace_root,
};

const WAIT: Duration = Duration::from_secs(60);

/// A clean Debian root in `dir`: debootstrap's minimal base of this machine's release (with the
/// packages' dependencies), made once and kept as a tarball under `target/`.
async fn clean_root(dir: &Path) -> PathBuf {
    let release = std::fs::read_to_string("/etc/os-release").expect("os-release");
    let field = |name: &str| {
        release.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).map(|v| v.trim_matches('"').to_owned())
    };
    let (id, codename) = (field("ID").unwrap_or_default(), field("VERSION_CODENAME").expect("a release codename"));
    let mirror = std::env::var("CHILLCLOUD_DEBIAN_MIRROR").unwrap_or_else(|_| {
        if id == "ubuntu" { "http://archive.ubuntu.com/ubuntu" } else { "http://deb.debian.org/debian" }.to_owned()
    });
    let cache = workspace_root().join("target/debian-root");
    let tarball = cache.join(format!("{codename}-minbase.tar"));
    if !tarball.exists() {
        std::fs::create_dir_all(&cache).expect("cache dir");
        let base = dir.join("debootstrap");
        run_to_completion(
            Path::new("debootstrap"),
            &["--variant=minbase", "--include=adduser,fonts-wqy-microhei", &codename, &base.to_string_lossy(), &mirror],
        )
        .await;
        let partial = tarball.with_extension("partial");
        run_to_completion(Path::new("tar"), &["-C", &base.to_string_lossy(), "-cf", &partial.to_string_lossy(), "."])
            .await;
        std::fs::rename(&partial, &tarball).expect("keep the base");
        std::fs::remove_dir_all(&base).expect("remove the build");
    }
    let root = dir.join("root");
    std::fs::create_dir(&root).expect("root dir");
    run_to_completion(Path::new("tar"), &["-C", &root.to_string_lossy(), "-xf", &tarball.to_string_lossy()]).await;
    root
}

/// Runs `args` inside `root` as root and returns what it printed.
async fn in_root(root: &Path, args: &[&str]) -> String {
    let mut all = vec![root.to_string_lossy().into_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    run_to_completion(Path::new("chroot"), &all.iter().map(String::as_str).collect::<Vec<_>>()).await
}

/// Builds the packages named (`gateway`, `server`) at `version` into `out`; returns their paths.
async fn package(out: &Path, version: &str, names: &[&str]) -> Vec<PathBuf> {
    let script = workspace_root().join("scripts/package");
    let mut args = vec!["--no-build", "--profile", "dev", "--deb-version", version];
    let out_arg = out.to_string_lossy();
    args.extend(["--out", &out_arg]);
    args.extend(names);
    let printed = run_to_completion(&script, &args).await;
    let debs: Vec<PathBuf> = printed.lines().filter(|l| l.ends_with(".deb")).map(PathBuf::from).collect();
    assert_eq!(debs.len(), names.len(), "one package each: {printed}");
    debs
}

/// Installs `deb` into `root` with dpkg, as an operator would.
async fn install(root: &Path, deb: &Path) {
    let name = deb.file_name().expect("file name").to_string_lossy().into_owned();
    std::fs::copy(deb, root.join("tmp").join(&name)).expect("copy package");
    in_root(root, &["dpkg", "-i", &format!("/tmp/{name}")]).await;
}

/// `name`'s numeric id in the root's `/etc/passwd` or `/etc/group`.
fn id_in(root: &Path, file: &str, name: &str) -> u32 {
    let text = std::fs::read_to_string(root.join("etc").join(file)).expect("read");
    text.lines()
        .find_map(|l| {
            let fields: Vec<_> = l.split(':').collect();
            (fields[0] == name).then(|| fields[2].parse().expect("numeric id"))
        })
        .unwrap_or_else(|| panic!("{name} in /etc/{file}"))
}

/// The value of `key=` in a unit file.
fn unit_setting(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in the unit"))
        .to_owned()
}

/// Starts the gateway in `root` as its unit would: the unit's command line, as its user, with
/// its supplementary groups.
fn start_gateway(root: &Path, unit: &str, log_dir: &Path, run: u32) -> Process {
    let user = unit_setting(unit, "User");
    let (uid, gid) = (id_in(root, "passwd", &user), id_in(root, "group", &user));
    let groups: Vec<String> = unit_setting(unit, "SupplementaryGroups")
        .split_whitespace()
        .map(|g| id_in(root, "group", g).to_string())
        .collect();
    let mut args = vec![
        format!("--userspec={uid}:{gid}"),
        format!("--groups={}", groups.join(",")),
        root.to_string_lossy().into_owned(),
    ];
    args.extend(unit_setting(unit, "ExecStart").split_whitespace().map(str::to_owned));
    Process::spawn(
        &format!("gateway-in-root-run{run}"),
        Path::new("chroot"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        log_dir,
    )
}

async fn wait_status(root: &Path, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let path = root.join("var/lib/chillcloud-gateway/status.json");
    wait_for(what, WAIT, || async {
        let status: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
        check(&status).then_some(status)
    })
    .await
}

/// The files under `dir` with their contents.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push((path.clone(), std::fs::read(&path).expect("read file")));
        }
    }
    files.sort();
    files
}

async fn readings_in_database(stack: &Stack) -> i64 {
    let pool = stack.postgres.pool().await;
    let count: i64 = sqlx::query_scalar(GATEWAY_READINGS).fetch_one(&pool).await.expect("count");
    pool.close().await;
    count
}

#[tokio::test(flavor = "multi_thread")]
async fn package_installs_into_a_clean_root_runs_the_gateway_and_upgrades_keeping_config_and_queue() {
    let mut stack = Stack::start().await;
    let dir = shared_temp_dir();
    let sim = Simulator::start(1, dir.path()).await;
    let debs = dir.path().join("debs");
    let first = package(&debs, "0.1.0-1", &["gateway", "server"]).await;
    let root = clean_root(dir.path()).await;

    // The gateway's package: its user, directories and unit.
    install(&root, &first[0]).await;
    let passwd = in_root(&root, &["getent", "passwd", "chillcloud-gateway"]).await;
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert!(fields[2].parse::<u32>().expect("uid") < 1000, "a system user: {passwd}");
    assert_eq!(fields[5], "/var/lib/chillcloud-gateway", "{passwd}");
    assert!(fields[6].ends_with("nologin"), "no login shell: {passwd}");
    let groups = in_root(&root, &["id", "-nG", "chillcloud-gateway"]).await;
    assert!(groups.split_whitespace().any(|g| g == "dialout"), "may open serial ports: {groups}");
    let state = root.join("var/lib/chillcloud-gateway");
    let meta = std::fs::metadata(&state).expect("state dir");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (id_in(&root, "passwd", "chillcloud-gateway"), 0o750));
    assert!(root.join("etc/chillcloud/gateway.example.toml").exists(), "the example configuration");
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/chillcloud-gateway.service")).expect("unit");
    assert_eq!(unit_setting(&unit, "ConditionPathExists"), "/etc/chillcloud/gateway.toml", "no start unconfigured");
    let enabled = root.join("etc/systemd/system/multi-user.target.wants/chillcloud-gateway.service");
    assert!(enabled.is_symlink(), "enabled at boot");

    // Configured as docs/packages.md says, it polls the simulator and publishes.
    let config = format!(
        "gateway_id = \"{}\"\nstate_dir = \"/var/lib/chillcloud-gateway\"\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n\
         password_file = \"/etc/chillcloud/gateway.secret\"\n[[devices]]\nid = \"chiller-1\"\nprofile = \"trane-ch530\"\n\
         host = \"127.0.0.1\"\nport = {}\npoll_interval_ms = 200\nsnapshot_interval_secs = 1\n",
        stack.gateway_id,
        stack.broker.address().port(),
        sim.modbus.port()
    );
    std::fs::write(root.join("etc/chillcloud/gateway.toml"), &config).expect("config");
    let secret = root.join("etc/chillcloud/gateway.secret");
    std::fs::write(&secret, &stack.password).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    in_root(&root, &["chgrp", "chillcloud-gateway", "/etc/chillcloud/gateway.secret"]).await;
    let mut gateway = start_gateway(&root, &unit, dir.path(), 1);
    wait_status(&root, "the installed gateway publishing", |s| {
        s["connected"] == true && s["readings_queued"].as_u64() > Some(0)
    })
    .await;
    let api = stack.api();
    wait_for("a reading at the server", WAIT, || async { api.latest("chiller-1", "evap_leaving_temp").await }).await;

    // A broker outage leaves readings in the queue; the gateway stops for the upgrade.
    stack.broker.stop().await;
    wait_status(&root, "a backlog in the queue", |s| {
        s["connected"] == false && s["queue"]["unacked_batches"].as_u64() >= Some(3)
    })
    .await;
    assert!(gateway.terminate(Duration::from_secs(20)).await.expect("stops on SIGTERM").success());
    let before = wait_status(&root, "the final report", |_| true).await;
    let first_run = before["readings_queued"].as_i64().expect("count");
    let queue = files_under(&state.join("queue"));
    assert!(!queue.is_empty(), "the queue is on disk");

    let second = package(&debs, "0.1.0-2", &["gateway"]).await;
    install(&root, &second[0]).await;
    let version = in_root(&root, &["dpkg-query", "-W", "-f=${Version}", "chillcloud-gateway"]).await;
    assert_eq!(version, "0.1.0-2");
    assert_eq!(std::fs::read_to_string(root.join("etc/chillcloud/gateway.toml")).expect("config"), config);
    assert_eq!(files_under(&state.join("queue")), queue, "the upgrade leaves the queue as it was");
    let meta = std::fs::metadata(&state).expect("state dir");
    assert_eq!(meta.mode() & 0o777, 0o750);

    // The upgraded gateway sends the backlog: every reading of both runs arrives.
    stack.broker.resume().await;
    let mut gateway = start_gateway(&root, &unit, dir.path(), 2);
    wait_status(&root, "the backlog sent", |s| {
        s["session"].as_u64() > before["session"].as_u64() && s["queue"]["unacked_batches"].as_u64() == Some(0)
    })
    .await;
    assert!(gateway.terminate(Duration::from_secs(20)).await.expect("stops on SIGTERM").success());
    let after = wait_status(&root, "the final report", |_| true).await;
    let expected = first_run + after["readings_queued"].as_i64().expect("count");
    let mut stored = 0;
    let settled = tokio::time::timeout(WAIT, async {
        while stored < expected {
            stored = readings_in_database(&stack).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "{stored} of {expected} readings stored");
    assert_eq!(readings_in_database(&stack).await, expected, "none twice");

    // The server's package installs beside it, with its data directory and its settings file.
    install(&root, &first[1]).await;
    let help = in_root(&root, &["/usr/bin/chillcloud-server", "--version"]).await;
    assert!(help.starts_with("chillcloud-server"), "{help}");
    let data = std::fs::metadata(root.join("var/lib/chillcloud")).expect("data dir");
    assert_eq!(data.mode() & 0o777, 0o700);
    let env = std::fs::metadata(root.join("etc/chillcloud/server.env")).expect("settings");
    assert_eq!(env.mode() & 0o777, 0o640, "it will hold passwords");

    // Purging the gateway removes its state and its example, not the operator's configuration.
    in_root(&root, &["dpkg", "--purge", "chillcloud-gateway"]).await;
    assert!(!state.exists(), "state removed on purge");
    assert!(!root.join("etc/chillcloud/gateway.example.toml").exists());
    assert!(root.join("etc/chillcloud/gateway.toml").exists(), "the operator's file is theirs");
}
