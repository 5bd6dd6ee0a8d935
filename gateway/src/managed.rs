//! Configuration held by the server. A version the server sends on the gateway's `config` topic
//! replaces the site part of the file (lines, devices, queue bounds; the file keeps the box's
//! id, broker, password and state directory). It is checked again here with the checker the
//! server used ([`check_site`]) and applied as a reload is. It is then on trial: if a device
//! that answered before the change has not answered for a while within the trial, the gateway
//! goes back to the configuration it ran before and reports why; at the end of the trial it
//! reports the version applied. What runs, what it would fall back to and the last report
//! survive restarts in `<state_dir>/managed.json`.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use chillcloud_proto::{ConfigOutcome, ConfigReport, GatewayConfig, GatewayId};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    config::{Config, check_site},
    durable,
    status::DeviceStatus,
};

/// Least time a watched device may go without answering before the trial fails.
const MIN_GRACE: Duration = Duration::from_secs(5);

/// A version from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Version {
    number: u32,
    site_toml: String,
    changed_by: String,
}

/// A version on trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Trial {
    /// When it was applied, ms since the epoch.
    started_ms: i64,
    /// The devices that answered before and are still configured.
    watched: Vec<String>,
    /// What to go back to: the version confirmed before it, or the file's own site (`None`).
    fallback: Option<Version>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The version in force; `None` while the file's own site part is.
    running: Option<Version>,
    trial: Option<Trial>,
    /// The highest version received: an older or equal one is never applied again.
    highest_seen: u32,
    /// The last report, sent again on each connection until a newer one replaces it.
    last_report: Option<ConfigReport>,
}

/// What to do with a version received.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// Apply it: the session restarts with [`Managed::config`].
    Apply,
    /// Not applied; send this report.
    Refused(ConfigReport),
    /// A copy of one already handled: nothing to do but report again, if there is a report.
    Duplicate(Option<ConfigReport>),
}

/// How the trial stands.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// No version on trial, or its trial goes on.
    Pending,
    /// The trial ended well; send this report.
    Confirmed(ConfigReport),
    /// A watched device stopped answering: the session restarts with the fallback, and this
    /// report is sent.
    RolledBack(ConfigReport),
}

/// The server-held configuration's state on this gateway.
pub struct Managed {
    path: PathBuf,
    state: State,
}

impl Managed {
    /// The state kept in `state_dir`; a missing file means none (the file's own site part).
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let path = state_dir.join("managed.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => State::default(),
            Err(error) => return Err(error),
        };
        Ok(Self { path, state })
    }

    /// `local` (the file) with the site part in force.
    pub fn config(&self, local: &Config) -> Config {
        let Some(version) = &self.state.running else { return local.clone() };
        match check_site(&version.site_toml) {
            Ok(site) => {
                if !local.devices.is_empty() {
                    info!(version = version.number, "the devices come from the server's configuration, not the file");
                }
                local.clone().with_site(site, version.number)
            }
            // Checked before it was applied: only a newer gateway build could refuse it now.
            Err(error) => {
                warn!(version = version.number, %error, "the server's configuration no longer checks; using the file's");
                local.clone()
            }
        }
    }

    /// Whether a version is on trial.
    pub fn on_trial(&self) -> bool {
        self.state.trial.is_some()
    }

    /// The report to send on each connection.
    pub fn last_report(&self) -> Option<ConfigReport> {
        self.state.last_report.clone()
    }

    fn running_number(&self) -> u32 {
        self.state.running.as_ref().map_or(0, |v| v.number)
    }

    /// Takes `message` for `gateway`, whose devices in `answering` answered at their last poll.
    pub fn receive(
        &mut self,
        message: &GatewayConfig,
        gateway: &GatewayId,
        answering: &[String],
        now_ms: i64,
    ) -> io::Result<Received> {
        let report = |outcome: ConfigOutcome, running_version, reason: String| ConfigReport {
            version: message.version,
            outcome: outcome as i32,
            running_version,
            reason,
        };
        if message.gateway_id != gateway.as_str() {
            // The broker's ACL keeps other gateways' topics away: this is a misdelivery.
            let reason = format!("addressed to gateway {:?}, not this one", message.gateway_id);
            return Ok(Received::Refused(report(ConfigOutcome::Refused, self.running_number(), reason)));
        }
        if message.version <= self.state.highest_seen {
            let about_it = self.state.last_report.clone().filter(|r| r.version == message.version);
            return Ok(Received::Duplicate(about_it));
        }
        self.state.highest_seen = message.version;
        let site = match check_site(&message.site_toml) {
            Ok(site) => site,
            Err(error) => {
                let refused = report(ConfigOutcome::Refused, self.running_number(), error.to_string());
                self.state.last_report = Some(refused.clone());
                self.save()?;
                return Ok(Received::Refused(refused));
            }
        };
        let watched = site.devices.iter().map(|d| d.id.clone()).filter(|id| answering.contains(id)).collect::<Vec<_>>();
        // A version on trial was never confirmed: the fallback stays the one confirmed before.
        let fallback = match self.state.trial.take() {
            Some(trial) => trial.fallback,
            None => self.state.running.clone(),
        };
        info!(version = message.version, by = %message.changed_by, watched = ?watched, "applying the server's configuration");
        self.state.running = Some(Version {
            number: message.version,
            site_toml: message.site_toml.clone(),
            changed_by: message.changed_by.clone(),
        });
        self.state.trial = Some(Trial { started_ms: now_ms, watched, fallback });
        self.save()?;
        Ok(Received::Apply)
    }

    /// Judges the version on trial by `devices`' health: it fails when a watched device has not
    /// answered for a quarter of `length` (at least [`MIN_GRACE`]) since the change or since its
    /// last answer, and passes once `length` has gone by without that.
    pub fn judge(
        &mut self,
        devices: &BTreeMap<String, DeviceStatus>,
        length: Duration,
        now_ms: i64,
    ) -> io::Result<Verdict> {
        let Some(trial) = &self.state.trial else { return Ok(Verdict::Pending) };
        let version = self.running_number();
        let grace = (length / 4).max(MIN_GRACE).as_millis() as i64;
        let silent: Vec<String> = (trial.watched.iter())
            .filter_map(|id| {
                let status = devices.get(id);
                let last = status.map_or(0, |s| s.last_good_ms).max(trial.started_ms);
                (now_ms - last > grace).then(|| match status.and_then(|s| s.last_error.as_ref()) {
                    Some(error) => format!("{id} ({error})"),
                    None => id.clone(),
                })
            })
            .collect();
        let verdict = if !silent.is_empty() {
            let Some(trial) = self.state.trial.take() else { unreachable!("checked above") };
            let back_to = trial.fallback.as_ref().map_or(0, |v| v.number);
            self.state.running = trial.fallback;
            let reason = format!(
                "{} stopped answering under version {version}; back to {}",
                silent.join(", "),
                if back_to == 0 { "the local file".to_owned() } else { format!("version {back_to}") }
            );
            warn!(version, %reason, "configuration rolled back");
            Verdict::RolledBack(ConfigReport {
                version,
                outcome: ConfigOutcome::RolledBack as i32,
                running_version: back_to,
                reason,
            })
        } else if now_ms - trial.started_ms >= length.as_millis() as i64 {
            self.state.trial = None;
            info!(version, "configuration confirmed: every device that answered before answers");
            Verdict::Confirmed(ConfigReport {
                version,
                outcome: ConfigOutcome::Applied as i32,
                running_version: version,
                reason: String::new(),
            })
        } else {
            return Ok(Verdict::Pending);
        };
        if let Verdict::Confirmed(report) | Verdict::RolledBack(report) = &verdict {
            self.state.last_report = Some(report.clone());
        }
        self.save()?;
        Ok(verdict)
    }

    /// Writes the state durably: a version applied is never forgotten by a power cut.
    fn save(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(io::Error::other)?;
        durable::replace(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "[[devices]]\nid = \"chiller-1\"\nprofile = \"trane-ch530\"\nhost = \"10.0.0.5\"\n";

    fn message(version: u32, site_toml: &str) -> GatewayConfig {
        GatewayConfig { gateway_id: "gw-1".into(), version, site_toml: site_toml.into(), changed_by: "ann".into() }
    }

    fn healthy(last_good_ms: i64) -> BTreeMap<String, DeviceStatus> {
        BTreeMap::from([("chiller-1".to_owned(), DeviceStatus { healthy: true, last_good_ms, ..Default::default() })])
    }

    #[test]
    fn a_version_is_applied_once_on_trial_and_confirmed_after_it() {
        let dir = tempfile::tempdir().expect("dir");
        let gateway = GatewayId::new("gw-1").expect("id");
        let mut managed = Managed::open(dir.path()).expect("open");
        let answering = ["chiller-1".to_owned()];
        assert_eq!(managed.receive(&message(3, SITE), &gateway, &answering, 1_000).expect("io"), Received::Apply);
        assert_eq!(
            managed.receive(&message(3, SITE), &gateway, &answering, 1_500).expect("io"),
            Received::Duplicate(None)
        );
        let length = Duration::from_secs(20);
        assert_eq!(managed.judge(&healthy(9_000), length, 10_000).expect("io"), Verdict::Pending);
        let Verdict::Confirmed(report) = managed.judge(&healthy(20_000), length, 21_000).expect("io") else {
            panic!("confirmed")
        };
        assert_eq!((report.version, report.outcome_name()), (3, "applied"));
        // It survives a restart, and an older version is not taken.
        let mut reopened = Managed::open(dir.path()).expect("reopen");
        assert_eq!(reopened.last_report(), Some(report));
        assert!(matches!(
            reopened.receive(&message(2, SITE), &gateway, &[], 30_000).expect("io"),
            Received::Duplicate(_)
        ));
    }

    #[test]
    fn a_device_that_stops_answering_rolls_back_to_what_ran_before() {
        let dir = tempfile::tempdir().expect("dir");
        let gateway = GatewayId::new("gw-1").expect("id");
        let mut managed = Managed::open(dir.path()).expect("open");
        let answering = ["chiller-1".to_owned()];
        managed.receive(&message(1, SITE), &gateway, &answering, 0).expect("io");
        let length = Duration::from_secs(20);
        assert!(matches!(managed.judge(&healthy(19_000), length, 20_000).expect("io"), Verdict::Confirmed(_)));
        let moved = SITE.replace("10.0.0.5", "10.0.0.6");
        managed.receive(&message(2, &moved), &gateway, &answering, 30_000).expect("io");
        let silent = BTreeMap::from([(
            "chiller-1".to_owned(),
            DeviceStatus { last_good_ms: 29_000, last_error: Some("connection refused".into()), ..Default::default() },
        )]);
        assert_eq!(managed.judge(&silent, length, 34_000).expect("io"), Verdict::Pending, "within the grace");
        let Verdict::RolledBack(report) = managed.judge(&silent, length, 36_000).expect("io") else {
            panic!("rolled back")
        };
        assert_eq!((report.version, report.running_version), (2, 1));
        assert!(report.reason.contains("chiller-1 (connection refused) stopped answering"), "{}", report.reason);
        assert_eq!(managed.running_number(), 1);
    }

    #[test]
    fn an_invalid_version_or_one_for_another_gateway_is_refused_naming_why() {
        let dir = tempfile::tempdir().expect("dir");
        let gateway = GatewayId::new("gw-1").expect("id");
        let mut managed = Managed::open(dir.path()).expect("open");
        let bad = SITE.replace("trane-ch530", "trane-ch999");
        let Received::Refused(report) = managed.receive(&message(1, &bad), &gateway, &[], 0).expect("io") else {
            panic!("refused")
        };
        assert!(report.reason.contains("devices[0].profile"), "{}", report.reason);
        let mut other = message(2, SITE);
        other.gateway_id = "gw-2".into();
        assert!(matches!(managed.receive(&other, &gateway, &[], 0).expect("io"), Received::Refused(_)));
        assert_eq!(managed.running_number(), 0, "still the file's own");
    }
}
