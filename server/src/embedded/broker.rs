//! A private Mosquitto broker run from the system's binary, configured so that no client is
//! anonymous and each gateway may use only its own topics (`deploy/mosquitto/acl`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};
use tracing::info;

use super::{EmbeddedError, io_error, prepare_dir, running_as_root};

/// The ACL shared with external Mosquitto deployments.
pub const ACL: &str = include_str!("../../../deploy/mosquitto/acl");

/// The MQTT username the server itself uses.
pub const SERVER_USERNAME: &str = "chillcloud-server";

const READY_TIMEOUT: Duration = Duration::from_secs(10);

fn find(binary: &str) -> Result<PathBuf, EmbeddedError> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(binary))
        .find(|path| path.exists())
        .ok_or(EmbeddedError::NotInstalled { what: "mosquitto", package: "mosquitto" })
}

/// Iterations of Mosquitto's password hash, as `mosquitto_passwd` makes it.
const PASSWORD_ITERATIONS: u32 = 101;

/// The password-file line for `username` with `password`, in Mosquitto's format (`$7$`:
/// PBKDF2-HMAC-SHA512, 101 iterations, 12 random bytes of salt, base64), made here rather than
/// by `mosquitto_passwd`, whose command line would show the password to every local user.
pub fn password_line(username: &str, password: &str) -> String {
    hash_line(username, password, &rand::random::<[u8; 12]>(), PASSWORD_ITERATIONS)
}

fn hash_line(username: &str, password: &str, salt: &[u8], iterations: u32) -> String {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use hmac::{Hmac, KeyInit, Mac};
    type HmacSha512 = Hmac<sha2::Sha512>;
    let mac = |parts: &[&[u8]]| -> [u8; 64] {
        let mut mac = HmacSha512::new_from_slice(password.as_bytes()).expect("HMAC takes any key");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    };
    // One PBKDF2 block: the derived key is as long as SHA-512's output.
    let mut block = mac(&[salt, &1u32.to_be_bytes()]);
    let mut derived = block;
    for _ in 1..iterations {
        block = mac(&[&block]);
        derived.iter_mut().zip(block).for_each(|(d, b)| *d ^= b);
    }
    format!("{username}:$7${iterations}${}${}", STANDARD.encode(salt), STANDARD.encode(derived))
}

/// A running private broker; stopped when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    child: Child,
    dir: PathBuf,
    address: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts Mosquitto on `address` with a password file holding `password_lines` (one per
    /// user, as [`password_line`] makes them) and the shared ACL. A broker left running by an
    /// earlier server process is stopped first.
    pub async fn start(root: &Path, address: SocketAddr, password_lines: &[String]) -> Result<Self, EmbeddedError> {
        let mosquitto = find("mosquitto")?;
        let dir = std::path::absolute(root).map_err(io_error(root))?;
        prepare_dir(&dir, "mosquitto")?;
        stop_leftover(&dir);

        let write = |name: &str, text: String| -> Result<PathBuf, EmbeddedError> {
            let path = dir.join(name);
            write_broker_file(&path, &text)?;
            Ok(path)
        };
        let passwd = write("passwd", password_file(password_lines))?;
        let acl = write("acl", ACL.to_owned())?;
        let config = write(
            "mosquitto.conf",
            format!(
                "# Written by chillcloud-server at every start; edits are lost.\n\
                 per_listener_settings false\n\
                 allow_anonymous false\n\
                 password_file {passwd}\n\
                 acl_file {acl}\n\
                 listener {port} {host}\n\
                 persistence true\n\
                 persistence_location {dir}/\n\
                 autosave_interval 60\n\
                 max_inflight_messages 1000\n\
                 max_queued_messages 0\n\
                 max_queued_bytes 1073741824\n\
                 max_packet_size {max_packet}\n\
                 log_dest stderr\n\
                 log_type error\n\
                 log_type warning\n\
                 log_type notice\n\
                 log_type information\n",
                passwd = passwd.display(),
                acl = acl.display(),
                port = address.port(),
                host = address.ip(),
                dir = dir.display(),
                max_packet = chillcloud_proto::MAX_PACKET_BYTES,
            ),
        )?;
        let log_path = dir.join("mosquitto.log");
        let log = std::fs::File::create(&log_path).map_err(io_error(&log_path))?;
        let child =
            Command::new(&mosquitto).arg("-c").arg(&config).stderr(log).kill_on_drop(true).spawn().map_err(|e| {
                EmbeddedError::Command { command: mosquitto.display().to_string(), detail: e.to_string() }
            })?;
        if let Some(pid) = child.id() {
            let pid_file = dir.join("broker.pid");
            std::fs::write(&pid_file, pid.to_string()).map_err(io_error(&pid_file))?;
        }
        let mut broker = Self { child, dir, address };
        broker.wait_ready().await?;
        info!(%address, "embedded MQTT broker (mosquitto) running");
        Ok(broker)
    }

    /// Ready once this process says it is running (it opened its listener) and its port answers.
    /// A port that answers is not enough: another broker may hold the address, and this one
    /// then exits with "Address already in use" while the other answers in its place.
    async fn wait_ready(&mut self) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            let log = std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EmbeddedError::Command { command: "mosquitto".into(), detail: format!("{status}: {log}") });
            }
            let running = log.lines().any(|line| line.contains("mosquitto version") && line.ends_with(" running"));
            if running && tokio::net::TcpStream::connect(self.address).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(EmbeddedError::NotReady("mosquitto", READY_TIMEOUT))
    }

    /// The address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Replaces the password file with `password_lines` and has the running broker reload it
    /// (Mosquitto rereads its password and ACL files on SIGHUP), so newly provisioned gateways
    /// can connect without a restart.
    pub fn reload_passwords(&self, password_lines: &[String]) -> Result<(), EmbeddedError> {
        let path = self.dir.join("passwd");
        let temporary = self.dir.join("passwd.new");
        // Written aside and renamed, so the broker never reads a half-written file.
        write_broker_file(&temporary, &password_file(password_lines))?;
        std::fs::rename(&temporary, &path).map_err(io_error(&path))?;
        if let Some(pid) = self.child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32)) {
            rustix::process::kill_process(pid, rustix::process::Signal::HUP)
                .map_err(|e| EmbeddedError::Command { command: "reload mosquitto".into(), detail: e.to_string() })?;
        }
        Ok(())
    }

    /// Stops the broker and waits for it to exit.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = std::fs::remove_file(self.dir.join("broker.pid"));
    }
}

/// The password file's text: one line per user.
fn password_file(lines: &[String]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// Writes a file only the broker (and this process) may read: it holds password hashes.
fn write_broker_file(path: &Path, text: &str) -> Result<(), EmbeddedError> {
    std::fs::write(path, text).map_err(io_error(path))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(io_error(path))?;
    if let Some((uid, gid)) = running_as_root().then(|| super::system_user("mosquitto")).flatten() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_error(path))?;
    }
    Ok(())
}

/// Stops a broker that an earlier server process started and could not stop (it was killed).
fn stop_leftover(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("broker.pid")) else { return };
    let Ok(pid) = text.trim().parse::<i32>() else { return };
    let is_mosquitto =
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "mosquitto");
    if let (true, Some(pid)) = (is_mosquitto, rustix::process::Pid::from_raw(pid)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line `mosquitto_passwd -b` (Mosquitto 2.0) wrote for gw1 / secretpass, remade from its salt.
    #[test]
    fn the_password_line_is_the_one_mosquitto_passwd_makes() {
        use base64::{Engine as _, engine::general_purpose::STANDARD};
        let from_mosquitto = "gw1:$7$101$cEPgXSthCdkViG4i$SeQvfTgUm/1BL5Lxy7e1+myrGl1f3dY/i+7vPQi/2vfQYgaS13RyVyYJLxuKkbLI/tg85NydTxt/+pvdKhSQEw==";
        let salt = STANDARD.decode("cEPgXSthCdkViG4i").expect("base64");
        assert_eq!(hash_line("gw1", "secretpass", &salt, 101), from_mosquitto);
        assert_ne!(password_line("gw1", "secretpass"), password_line("gw1", "secretpass"), "a fresh salt each time");
    }
}
