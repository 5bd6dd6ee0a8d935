//! Private PostgreSQL and Mosquitto instances run from the system's binaries, so the server
//! works with nothing configured. Both live inside the server's data directory and are started
//! and stopped by it; when the server runs as root they run as their packages' system users.

pub mod broker;
pub mod postgres;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// Errors starting an embedded service.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The service's binaries are not installed.
    #[error("{what} not found: install the Debian package `{package}` (apt-get install {package})")]
    NotInstalled {
        /// What was looked for.
        what: &'static str,
        /// The package that provides it.
        package: &'static str,
    },
    /// A command failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and output.
        detail: String,
    },
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The service did not become ready in time.
    #[error("{0} did not become ready within {1:?}; see its log in the data directory")]
    NotReady(&'static str, Duration),
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io { path: path.to_owned(), source }
}

/// Whether this process runs as root, in which case services run as their own system users.
pub(crate) fn running_as_root() -> bool {
    rustix::process::getuid().is_root()
}

/// The uid and gid of a system user, from `/etc/passwd`.
pub(crate) fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// Runs a command to completion, as `user` when running as root, returning its stdout.
pub(crate) async fn run_command(user: Option<&str>, program: &Path, args: &[&str]) -> Result<String, EmbeddedError> {
    let mut command = match user {
        Some(user) if running_as_root() => {
            let mut command = tokio::process::Command::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        }
        _ => tokio::process::Command::new(program),
    };
    command.args(args).kill_on_drop(true);
    let line = format!("{} {}", program.display(), args.join(" "));
    let output =
        command.output().await.map_err(|e| EmbeddedError::Command { command: line.clone(), detail: e.to_string() })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(EmbeddedError::Command {
            command: line,
            detail: format!(
                "{}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// Creates `dir` and, when running as root, hands it to `user`.
pub(crate) fn prepare_dir(dir: &Path, user: &str) -> Result<(), EmbeddedError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    if running_as_root() {
        let (uid, gid) = system_user(user).ok_or(EmbeddedError::Command {
            command: format!("look up system user {user}"),
            detail: "no such user".into(),
        })?;
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io_error(dir))?;
    }
    Ok(())
}
