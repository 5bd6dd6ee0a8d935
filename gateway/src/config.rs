//! The gateway's configuration: one TOML file, checked completely at start.
//!
//! The structs named `*File` mirror the file and reject unknown fields, so a typo is an error
//! rather than a silently ignored setting. [`Config::load`] turns them into the checked types
//! the rest of the gateway uses; every error names the field it is about. Points and
//! interlocks, which profile files hold too, are read and checked in [`crate::points`].

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use chillcloud_proto::GatewayId;
use serde::Deserialize;

use crate::{
    modbus::DataType,
    points::{ConfigError, DAY_MS, InterlockFile, MIN_POLL_INTERVAL_MS, PointConfig, PointFile, invalid},
    profile::{self, Edits, InterlockRef, Profile},
    queue::QueueLimits,
};

/// A password that never appears in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself; call only where it is handed to the protocol.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// This gateway's id: its MQTT username and topic level.
    gateway_id: String,
    /// Directory for the gateway's state: the session counter and the store-and-forward queue.
    state_dir: PathBuf,
    mqtt: MqttFile,
    #[serde(default)]
    queue: QueueFile,
    /// The site's own device profiles: data files in the built-in profiles' format
    /// (`gateway/profiles/*.toml`), for controllers without a built-in one.
    #[serde(default)]
    profile_files: Vec<PathBuf>,
    #[serde(default)]
    buses: Vec<BusFile>,
    #[serde(default)]
    devices: Vec<DeviceFile>,
    /// Seconds a configuration from the server is on trial: a device that answered before and
    /// stops answering within them sends the gateway back to the configuration it ran before.
    #[serde(default = "default_config_trial_secs")]
    config_trial_secs: u64,
}

/// The site part of a configuration, which the server may hold and send instead of the file's:
/// the lines, the devices and the queue's bounds. The file keeps what belongs to the box (its
/// id, broker, password and state directory).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    #[serde(default)]
    queue: QueueFile,
    #[serde(default)]
    buses: Vec<BusFile>,
    #[serde(default)]
    devices: Vec<DeviceFile>,
}

/// A Modbus RTU line shared by several devices: one request on it at a time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BusFile {
    /// Name the devices on this line give as their `bus`.
    id: String,
    /// Serial device of the RS-485 line, for example `/dev/ttyUSB0`.
    serial_port: Option<PathBuf>,
    /// `host:port` of a serial device server that passes RTU frames over TCP, instead of a
    /// local serial port.
    rtu_over_tcp: Option<String>,
    /// Bits per second.
    #[serde(default = "default_baud_rate")]
    baud_rate: u32,
    /// `even` (the Modbus default), `odd` or `none`.
    #[serde(default)]
    parity: Parity,
    /// 7 or 8.
    #[serde(default = "default_data_bits")]
    data_bits: u8,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    stop_bits: u8,
    /// Silence kept after each answer before the next request, in milliseconds; by default
    /// 3.5 character times at the line's speed, as the Modbus serial line specification asks.
    inter_frame_delay_ms: Option<u64>,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// Even parity (the Modbus default).
    #[default]
    Even,
    /// Odd parity.
    Odd,
    /// No parity.
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MqttFile {
    /// Broker host name or address (one broker); or `brokers`.
    host: Option<String>,
    /// Broker port, with `host`.
    #[serde(default = "default_mqtt_port")]
    port: u16,
    /// `host:port` of each node of a broker cluster, in the order they are tried: when the
    /// broker in use is lost, the gateway moves to the next one.
    #[serde(default)]
    brokers: Vec<String>,
    /// Username; defaults to the gateway id.
    username: Option<String>,
    /// File holding the password (its first line), for example `/etc/chillcloud/gateway.secret`.
    password_file: Option<PathBuf>,
    /// Name of an environment variable holding the password.
    password_env: Option<String>,
    /// Seconds between MQTT keep-alive pings.
    #[serde(default = "default_keep_alive_secs")]
    keep_alive_secs: u64,
    /// TLS to the broker; plain TCP when absent.
    tls: Option<TlsFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    /// PEM file of the certificate authority that signed the broker's certificate.
    ca_file: PathBuf,
    /// PEM file of this gateway's client certificate, for brokers that require one.
    client_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    client_key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueFile {
    /// Most disk space the store-and-forward queue may use, in MiB; the oldest readings are
    /// dropped (and reported) beyond it.
    #[serde(default = "default_queue_max_mb")]
    max_mb: f64,
    /// Readings older than this many hours are dropped (and reported) rather than sent.
    #[serde(default = "default_queue_max_age_hours")]
    max_age_hours: u64,
}

impl Default for QueueFile {
    fn default() -> Self {
        Self { max_mb: default_queue_max_mb(), max_age_hours: default_queue_max_age_hours() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFile {
    /// Unique id of the device within this gateway, for example `chiller-1`.
    id: String,
    /// Built-in profile whose points the device has, for example `trane-ch530`.
    profile: Option<String>,
    /// Equipment model, shown in the cloud.
    #[serde(default)]
    model: String,
    /// The name people know the unit by ("Chiller 2, north plant room"), shown in the dashboard
    /// and in pages instead of its id; the dashboard may rename it.
    #[serde(default)]
    display_name: String,
    /// Host name or address of the Modbus TCP server (for a device on a bus, give `bus`).
    host: Option<String>,
    /// Port of the Modbus TCP server.
    #[serde(default = "default_modbus_port")]
    port: u16,
    /// The `buses` entry of the RTU line the device is on, instead of `host`.
    bus: Option<String>,
    /// Times a failed request is repeated before the poll counts it as failed.
    #[serde(default = "default_retries")]
    retries: u8,
    /// Modbus unit id (slave address).
    #[serde(default = "default_unit_id")]
    unit_id: u8,
    /// Milliseconds between polls.
    #[serde(default = "default_poll_interval_ms")]
    poll_interval_ms: u64,
    /// Seconds between full snapshots: in between, a point is sent only when it moved by more
    /// than its `deadband` or changed quality.
    #[serde(default = "default_snapshot_interval_secs")]
    snapshot_interval_secs: u64,
    /// Milliseconds to wait for each response.
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    /// Largest hole, in registers, that a merged read may span.
    #[serde(default = "default_max_gap")]
    max_gap: u16,
    /// Number of the first register in this device's own `points` addresses (0 or 1).
    #[serde(default)]
    addressing_base: u16,
    /// Points of the profile this controller does not have (by name).
    #[serde(default)]
    remove_points: Vec<String>,
    /// Points in addition to the profile's; one with a profile point's name replaces it.
    #[serde(default)]
    points: Vec<PointFile>,
    /// The point that reads non-zero while the controller is in local control (remote writes
    /// are then refused); replaces the profile's.
    local_mode_point: Option<String>,
    /// States that the controller reports no local/remote state, so remote writes cannot be
    /// refused in local control; replaces the profile's. A device with writable points needs
    /// this or `local_mode_point`.
    without_local_mode: Option<bool>,
    /// Interlocks of the profile to remove, each named by `point` and `requires`.
    #[serde(default)]
    remove_interlocks: Vec<InterlockRef>,
    /// Interlocks in addition to the profile's.
    #[serde(default)]
    interlocks: Vec<InterlockFile>,
}

fn default_mqtt_port() -> u16 {
    1883
}
fn default_keep_alive_secs() -> u64 {
    30
}
fn default_queue_max_mb() -> f64 {
    256.0
}
fn default_queue_max_age_hours() -> u64 {
    24 * 7
}
fn default_snapshot_interval_secs() -> u64 {
    60
}
fn default_modbus_port() -> u16 {
    502
}
fn default_retries() -> u8 {
    1
}
fn default_baud_rate() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_unit_id() -> u8 {
    1
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_max_gap() -> u16 {
    8
}
fn default_config_trial_secs() -> u64 {
    120
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This gateway's id.
    pub gateway_id: GatewayId,
    /// Where the gateway keeps its state.
    pub state_dir: PathBuf,
    /// Broker connection.
    pub mqtt: MqttConfig,
    /// Bounds of the store-and-forward queue.
    pub queue: QueueLimits,
    /// RTU lines, which devices refer to by index.
    pub buses: Vec<BusConfig>,
    /// Devices to poll.
    pub devices: Vec<DeviceConfig>,
    /// The version of the server-held site configuration in force; 0 when the file's own.
    pub site_version: u32,
    /// How long a server-held configuration is on trial.
    pub config_trial: Duration,
}

/// A checked site part (see [`check_site`]).
#[derive(Debug, Clone)]
pub struct Site {
    /// Bounds of the store-and-forward queue.
    pub queue: QueueLimits,
    /// RTU lines.
    pub buses: Vec<BusConfig>,
    /// Devices to poll.
    pub devices: Vec<DeviceConfig>,
}

/// Checks the site part of a configuration held by the server (`[queue]`, `[[buses]]`,
/// `[[devices]]`; built-in profiles only, since the server cannot read a box's profile files).
/// The server checks a change with this before it stores it; the gateway again before it
/// applies it.
pub fn check_site(text: &str) -> Result<Site, ConfigError> {
    let file: SiteFile = toml::from_str(text)
        .map_err(|e| ConfigError::Syntax { path: PathBuf::from("site configuration"), message: e.to_string() })?;
    check_site_parts(file.queue, file.buses, file.devices, &[])
}

fn check_site_parts(
    queue: QueueFile,
    bus_files: Vec<BusFile>,
    device_files: Vec<DeviceFile>,
    profiles: &[Profile],
) -> Result<Site, ConfigError> {
    let mut buses = Vec::with_capacity(bus_files.len());
    for (i, bus) in bus_files.into_iter().enumerate() {
        let field = format!("buses[{i}]");
        if buses.iter().any(|b: &BusConfig| b.id == bus.id) {
            return Err(invalid(format!("{field}.id"), format!("{:?} is used by another bus", bus.id)));
        }
        buses.push(check_bus(bus, &field)?);
    }
    let mut ids = HashSet::new();
    let mut devices = Vec::with_capacity(device_files.len());
    for (i, device) in device_files.into_iter().enumerate() {
        let field = format!("devices[{i}]");
        if !ids.insert(device.id.clone()) {
            return Err(invalid(format!("{field}.id"), format!("{:?} is used by another device", device.id)));
        }
        devices.push(check_device(device, &buses, profiles, &field)?);
    }
    for (i, bus) in buses.iter().enumerate() {
        let units: Vec<u8> = devices.iter().filter(|d| d.transport == Transport::Bus(i)).map(|d| d.unit_id).collect();
        if let Some(unit) = units.iter().enumerate().find_map(|(j, u)| units[..j].contains(u).then_some(*u)) {
            return Err(invalid(
                "devices",
                format!("two devices on bus {:?} have unit id {unit}: unit ids on one line must differ", bus.id),
            ));
        }
    }
    let queue = check_queue(&queue)?;
    Ok(Site { queue, buses, devices })
}

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The brokers to connect to, in the order they are tried (at least one).
    pub brokers: Vec<BrokerAddress>,
    /// MQTT username.
    pub username: String,
    /// MQTT password.
    pub password: Secret,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// TLS settings, when the broker is reached over TLS.
    pub tls: Option<TlsConfig>,
}

/// Most broker addresses a gateway takes.
const MAX_BROKERS: usize = 16;

/// A broker's host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// TLS to the broker, with the PEM files already read.
#[derive(Clone)]
pub struct TlsConfig {
    /// The certificate authority's certificate.
    pub ca: Vec<u8>,
    /// Client certificate and private key, when the broker asks for one.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key is a secret.
        f.debug_struct("TlsConfig").field("client_auth", &self.client_auth.is_some()).finish_non_exhaustive()
    }
}

/// An RTU line.
#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    /// Its name.
    pub id: String,
    /// How it is reached.
    pub endpoint: BusEndpoint,
    /// Silence after each answer.
    pub inter_frame_delay: Duration,
}

/// How an RTU line is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum BusEndpoint {
    /// A local serial port.
    Serial {
        /// The device file.
        path: PathBuf,
        /// Bits per second.
        baud_rate: u32,
        /// Parity.
        parity: Parity,
        /// 7 or 8.
        data_bits: u8,
        /// 1 or 2.
        stop_bits: u8,
    },
    /// A serial device server passing RTU frames over TCP.
    RtuOverTcp {
        /// `host:port`.
        address: String,
    },
}

/// How a device is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// Modbus TCP, one connection per device.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A device on an RTU line: the index of its [`BusConfig`].
    Bus(usize),
}

/// One device to poll.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Id within the gateway.
    pub id: String,
    /// Profile name, empty if none.
    pub profile: String,
    /// The built-in profile the device's profile derives from (see [`Profile::family`]).
    pub family: String,
    /// Equipment model.
    pub model: String,
    /// The name people know the unit by, empty if none.
    pub display_name: String,
    /// How the device is reached.
    pub transport: Transport,
    /// Modbus unit id.
    pub unit_id: u8,
    /// Times a failed request is repeated.
    pub retries: u8,
    /// Time between polls.
    pub poll_interval: Duration,
    /// Time between full snapshots (report by exception in between).
    pub snapshot_interval: Duration,
    /// Time to wait for one response.
    pub timeout: Duration,
    /// Largest hole a merged read may span.
    pub max_gap: u16,
    /// The numeric points, in birth order.
    pub points: Vec<PointConfig>,
    /// String points, read once a session and announced in the birth.
    pub attributes: Vec<PointConfig>,
    /// The index in `points` of the point that reads non-zero in local control.
    pub local_mode: Option<usize>,
    /// Conditions remote writes need.
    pub interlocks: Vec<Interlock>,
}

/// A condition a remote write needs (see `InterlockFile`), with points as indices into the
/// device's `points`.
#[derive(Debug, Clone, PartialEq)]
pub struct Interlock {
    /// The writable point it guards.
    pub point: usize,
    /// Only writes of this value; every write when `None`.
    pub value: Option<f64>,
    /// The point read just before writing.
    pub requires: usize,
    /// The value it must read.
    pub equals: f64,
    /// Why the write is refused otherwise.
    pub reason: String,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Checks configuration text; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
        let gateway_id = GatewayId::new(file.gateway_id).map_err(|e| invalid("gateway_id", e.to_string()))?;
        let mqtt = check_mqtt(file.mqtt, &gateway_id)?;
        let mut profiles = Vec::with_capacity(file.profile_files.len());
        for path in &file.profile_files {
            let profile = profile::load(path, &profiles)?;
            profiles.push(profile);
        }
        let Site { queue, buses, devices } = check_site_parts(file.queue, file.buses, file.devices, &profiles)?;
        if file.config_trial_secs < MIN_CONFIG_TRIAL_SECS {
            return Err(invalid("config_trial_secs", format!("must be at least {MIN_CONFIG_TRIAL_SECS}")));
        }
        Ok(Config {
            gateway_id,
            state_dir: file.state_dir,
            mqtt,
            queue,
            buses,
            devices,
            site_version: 0,
            config_trial: Duration::from_secs(file.config_trial_secs),
        })
    }

    /// This configuration with the site part `site`, version `version`, from the server.
    pub fn with_site(self, site: Site, version: u32) -> Self {
        Self { queue: site.queue, buses: site.buses, devices: site.devices, site_version: version, ..self }
    }
}

/// Shortest trial of a server-held configuration: a few polls of a slow device.
const MIN_CONFIG_TRIAL_SECS: u64 = 10;

fn check_queue(queue: &QueueFile) -> Result<QueueLimits, ConfigError> {
    // Below 16 KiB the queue would hold a handful of records.
    if queue.max_mb.is_nan() || queue.max_mb < 1.0 / 64.0 {
        return Err(invalid("queue.max_mb", "must be at least 0.015625 (16 KiB)"));
    }
    if queue.max_age_hours == 0 {
        return Err(invalid("queue.max_age_hours", "must be at least 1"));
    }
    Ok(QueueLimits {
        max_bytes: (queue.max_mb * 1024.0 * 1024.0) as u64,
        max_age: Duration::from_secs(queue.max_age_hours.saturating_mul(3600)),
    })
}

fn check_tls(tls: TlsFile) -> Result<TlsConfig, ConfigError> {
    let read = |field: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| invalid(format!("mqtt.tls.{field}"), format!("cannot read {}: {e}", path.display())))
    };
    let ca = read("ca_file", &tls.ca_file)?;
    if !ca.starts_with(b"-----BEGIN") {
        return Err(invalid("mqtt.tls.ca_file", "is not a PEM certificate"));
    }
    let client_auth = match (tls.client_cert_file, tls.client_key_file) {
        (Some(cert), Some(key)) => Some((read("client_cert_file", &cert)?, read("client_key_file", &key)?)),
        (None, None) => None,
        (Some(_), None) => return Err(invalid("mqtt.tls.client_key_file", "is needed with client_cert_file")),
        (None, Some(_)) => return Err(invalid("mqtt.tls.client_cert_file", "is needed with client_key_file")),
    };
    Ok(TlsConfig { ca, client_auth })
}

fn check_mqtt(mqtt: MqttFile, gateway_id: &GatewayId) -> Result<MqttConfig, ConfigError> {
    let password = match (mqtt.password_file, mqtt.password_env) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid("mqtt.password_file", format!("cannot read {}: {e}", path.display())))?;
            text.lines().next().unwrap_or_default().trim().to_owned()
        }
        (None, Some(var)) => std::env::var(&var)
            .map_err(|_| invalid("mqtt.password_env", format!("environment variable {var} is not set")))?,
        (Some(_), Some(_)) => {
            return Err(invalid("mqtt.password_file", "set either password_file or password_env, not both"));
        }
        (None, None) => {
            return Err(invalid(
                "mqtt",
                "no password: set password_file or password_env (anonymous access is refused)",
            ));
        }
    };
    if password.is_empty() {
        return Err(invalid("mqtt.password_file", "the password is empty"));
    }
    if mqtt.keep_alive_secs < 5 {
        return Err(invalid("mqtt.keep_alive_secs", "must be at least 5"));
    }
    let brokers = match (mqtt.host, mqtt.brokers.is_empty()) {
        (Some(host), true) => vec![BrokerAddress { host, port: mqtt.port }],
        (None, false) => check_brokers(&mqtt.brokers)?,
        (Some(_), false) => return Err(invalid("mqtt.brokers", "set either host (one broker) or brokers, not both")),
        (None, true) => return Err(invalid("mqtt.host", "missing: set host (one broker) or brokers (a cluster)")),
    };
    Ok(MqttConfig {
        brokers,
        username: mqtt.username.unwrap_or_else(|| gateway_id.to_string()),
        password: Secret(password),
        keep_alive: Duration::from_secs(mqtt.keep_alive_secs),
        tls: mqtt.tls.map(check_tls).transpose()?,
    })
}

fn check_brokers(brokers: &[String]) -> Result<Vec<BrokerAddress>, ConfigError> {
    if brokers.len() > MAX_BROKERS {
        return Err(invalid("mqtt.brokers", format!("at most {MAX_BROKERS} addresses")));
    }
    let mut checked: Vec<BrokerAddress> = Vec::with_capacity(brokers.len());
    for (i, address) in brokers.iter().enumerate() {
        let field = format!("mqtt.brokers[{i}]");
        let broker = address
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .and_then(|(host, port)| Some(BrokerAddress { host: host.to_owned(), port: port.parse().ok()? }))
            .ok_or_else(|| invalid(&field, format!("{address:?}: expected host:port")))?;
        if checked.contains(&broker) {
            return Err(invalid(&field, format!("{address} is listed twice")));
        }
        checked.push(broker);
    }
    Ok(checked)
}

impl BusConfig {
    /// A line from the text of its `[[buses]]` table, checked as a configuration's are (for
    /// `scan`, which prints that table into the configuration it proposes).
    pub fn from_table(text: &str) -> Result<Self, ConfigError> {
        let bus: BusFile = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: PathBuf::from("[[buses]]"), message: e.to_string() })?;
        check_bus(bus, "buses[0]")
    }
}

fn check_bus(bus: BusFile, field: &str) -> Result<BusConfig, ConfigError> {
    if bus.id.is_empty() {
        return Err(invalid(format!("{field}.id"), "must not be empty"));
    }
    let endpoint = match (bus.serial_port, bus.rtu_over_tcp) {
        (Some(path), None) => {
            if bus.baud_rate == 0 {
                return Err(invalid(format!("{field}.baud_rate"), "must be more than 0"));
            }
            if !matches!(bus.data_bits, 7 | 8) {
                return Err(invalid(format!("{field}.data_bits"), "must be 7 or 8"));
            }
            if !matches!(bus.stop_bits, 1 | 2) {
                return Err(invalid(format!("{field}.stop_bits"), "must be 1 or 2"));
            }
            BusEndpoint::Serial {
                path,
                baud_rate: bus.baud_rate,
                parity: bus.parity,
                data_bits: bus.data_bits,
                stop_bits: bus.stop_bits,
            }
        }
        (None, Some(address)) => BusEndpoint::RtuOverTcp { address },
        _ => return Err(invalid(format!("{field}.serial_port"), "give either serial_port or rtu_over_tcp")),
    };
    // 3.5 characters of 11 bits (start, 8 data, parity or second stop, stop).
    let character_times = Duration::from_secs_f64(3.5 * 11.0 / f64::from(bus.baud_rate.max(1)));
    let inter_frame_delay = bus.inter_frame_delay_ms.map_or(character_times, Duration::from_millis);
    Ok(BusConfig { id: bus.id, endpoint, inter_frame_delay })
}

fn check_device(
    device: DeviceFile,
    buses: &[BusConfig],
    profiles: &[Profile],
    field: &str,
) -> Result<DeviceConfig, ConfigError> {
    if !chillcloud_proto::is_plain_name(&device.id) {
        return Err(invalid(format!("{field}.id"), "must be 1 to 64 letters, digits, '-' or '_'"));
    }
    if !(MIN_POLL_INTERVAL_MS..=DAY_MS).contains(&device.poll_interval_ms) {
        return Err(invalid(format!("{field}.poll_interval_ms"), "must be at least 100 and at most a day"));
    }
    if !(1..=DAY_MS / 1000).contains(&device.snapshot_interval_secs) {
        return Err(invalid(format!("{field}.snapshot_interval_secs"), "must be at least 1 and at most a day"));
    }
    if !(1..=DAY_MS).contains(&device.timeout_ms) {
        return Err(invalid(format!("{field}.timeout_ms"), "must be more than 0 and at most a day"));
    }
    let transport = match (device.host, device.bus) {
        (Some(host), None) => Transport::Tcp { host, port: device.port },
        (None, Some(bus)) => Transport::Bus(
            buses
                .iter()
                .position(|b| b.id == bus)
                .ok_or_else(|| invalid(format!("{field}.bus"), format!("no bus {bus:?} in `buses`")))?,
        ),
        (Some(_), Some(_)) => return Err(invalid(format!("{field}.host"), "give either host or bus, not both")),
        (None, None) => {
            return Err(invalid(format!("{field}.host"), "missing: give host (Modbus TCP) or bus (Modbus RTU)"));
        }
    };
    if matches!(transport, Transport::Bus(_)) && !(1..=247).contains(&device.unit_id) {
        return Err(invalid(format!("{field}.unit_id"), "must be between 1 and 247 on an RTU line"));
    }
    let mut profile = match &device.profile {
        Some(name) => profile::find(name, profiles).ok_or_else(|| {
            invalid(
                format!("{field}.profile"),
                format!(
                    "unknown profile {name:?}; known profiles: {} (a site adds its own with profile_files)",
                    profile::known(profiles)
                ),
            )
        })?,
        None => Profile::default(),
    };
    if device.display_name.chars().count() > 64 || device.display_name.chars().any(char::is_control) {
        return Err(invalid(
            format!("{field}.display_name"),
            "must be at most 64 characters, without control characters",
        ));
    }
    let edits = Edits {
        remove_points: device.remove_points,
        points: device.points,
        remove_interlocks: device.remove_interlocks,
        interlocks: device.interlocks,
        local_mode_point: device.local_mode_point,
        without_local_mode: device.without_local_mode,
    };
    profile.edit(edits, device.addressing_base, field)?;
    let Profile { family, points, local_mode_point, without_local_mode, interlocks, .. } = profile;
    let (attributes, points): (Vec<PointConfig>, Vec<PointConfig>) =
        points.into_iter().partition(|p| p.data_type == DataType::String);
    if points.is_empty() {
        return Err(invalid(format!("{field}.points"), "the device has no points: give a profile or points"));
    }
    let (local_mode, interlocks) = check_control(&points, local_mode_point.as_deref(), &interlocks, field)?;
    if local_mode.is_none() && !without_local_mode && points.iter().any(|p| p.write.is_some()) {
        return Err(invalid(
            format!("{field}.local_mode_point"),
            "a device with writable points names the point that reads non-zero in local control, or states \
             `without_local_mode = true` when the controller reports none",
        ));
    }
    Ok(DeviceConfig {
        id: device.id,
        profile: device.profile.unwrap_or_default(),
        family,
        model: device.model,
        display_name: device.display_name,
        transport,
        unit_id: device.unit_id,
        retries: device.retries,
        poll_interval: Duration::from_millis(device.poll_interval_ms),
        snapshot_interval: Duration::from_secs(device.snapshot_interval_secs),
        timeout: Duration::from_millis(device.timeout_ms),
        max_gap: device.max_gap,
        points,
        attributes,
        local_mode,
        interlocks,
    })
}

/// Resolves a device's local-mode point and interlocks (each with the field it came from)
/// against its points, the profile's and the site's merged.
fn check_control(
    points: &[PointConfig],
    local_mode_point: Option<&str>,
    interlocks: &[(String, InterlockFile)],
    field: &str,
) -> Result<(Option<usize>, Vec<Interlock>), ConfigError> {
    let find = |name: &str, field: String| {
        (points.iter().position(|p| p.name == name))
            .ok_or_else(|| invalid(field, format!("no numeric point {name:?} in the device")))
    };
    let local_mode = (local_mode_point.map(|name| find(name, format!("{field}.local_mode_point"))).transpose())
        .map_err(|e| hint(e, "name another point, or state `without_local_mode = true`"))?;
    let mut resolved = Vec::with_capacity(interlocks.len());
    for (field, interlock) in interlocks {
        let point = find(&interlock.point, format!("{field}.point"))?;
        if points[point].write.is_none() {
            return Err(invalid(format!("{field}.point"), format!("{:?} is not writable", interlock.point)));
        }
        if interlock.reason.trim().is_empty() {
            return Err(invalid(format!("{field}.reason"), "must say why the write is refused"));
        }
        resolved.push(Interlock {
            point,
            value: interlock.value,
            requires: find(&interlock.requires, format!("{field}.requires")).map_err(|e| {
                hint(e, "remove the interlock too, with remove_interlocks = [{ point = .., requires = .. }]")
            })?,
            equals: interlock.equals,
            reason: interlock.reason.clone(),
        });
    }
    Ok((local_mode, resolved))
}

/// `error` with what to do about it added to its message.
fn hint(error: ConfigError, what_to_do: &str) -> ConfigError {
    match error {
        ConfigError::Invalid { field, message } => {
            ConfigError::Invalid { field, message: format!("{message}: {what_to_do}") }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::points::WriteRange;

    const GOOD: &str = r#"
gateway_id = "gw-1"
state_dir = "/tmp/x"
[mqtt]
host = "localhost"
password_file = "PASSWORD_FILE"
[[devices]]
id = "chiller-1"
profile = "trane-ch530"
host = "127.0.0.1"
[[devices.points]]
name = "extra"
kind = "holding"
address = 100
type = "f32"
word_order = "little"
scale = 0.1
"#;

    /// `GOOD` with its password file pointing at a real file holding "secret".
    fn good() -> (String, tempfile::NamedTempFile) {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), "secret\n").expect("write password");
        (GOOD.replace("PASSWORD_FILE", &file.path().display().to_string()), file)
    }

    /// Parses `GOOD` with `from` replaced by `to` and checks the error names `expected`.
    fn check_error(from: &str, to: &str, expected: &str) {
        let (good, _password) = good();
        let text = good.replace(from, to);
        assert_ne!(text, good, "the replacement must apply");
        let err = Config::parse(&text, Path::new("gw.toml")).expect_err("config is invalid").to_string();
        assert!(err.contains(expected), "{err:?} should contain {expected:?}");
    }

    #[test]
    fn a_broker_list_is_tried_in_order_and_checked() {
        let (single, _password) = good();
        let text = single.replace("host = \"localhost\"", "brokers = [\"10.0.0.1:1883\", \"mq-2.example.com:8883\"]");
        let config = Config::parse(&text, Path::new("gw.toml")).expect("valid");
        let brokers: Vec<String> = config.mqtt.brokers.iter().map(ToString::to_string).collect();
        assert_eq!(brokers, ["10.0.0.1:1883", "mq-2.example.com:8883"]);
        let one = Config::parse(&single, Path::new("gw.toml")).expect("valid");
        assert_eq!(one.mqtt.brokers, [BrokerAddress { host: "localhost".into(), port: 1883 }]);

        let list = "host = \"localhost\"";
        check_error(list, "brokers = [\"a:1883\", \"a:1883\"]", "mqtt.brokers[1]");
        check_error(list, "brokers = [\"a\"]", "expected host:port");
        check_error(list, "brokers = [\":1883\"]", "mqtt.brokers[0]");
        check_error(list, "brokers = [\"a:99999\"]", "mqtt.brokers[0]");
        check_error(list, "host = \"a\"\nbrokers = [\"b:1883\"]", "not both");
        check_error(list, "", "mqtt.host");
        let many: Vec<String> = (0..17).map(|i| format!("\"b{i}:1883\"")).collect();
        check_error(list, &format!("brokers = [{}]", many.join(", ")), "at most 16");
    }

    #[test]
    fn a_good_config_loads_with_profile_points_and_extras() {
        let (good, _password) = good();
        let config = Config::parse(&good, Path::new("gw.toml")).expect("valid");
        let device = &config.devices[0];
        assert!(device.points.len() > 10);
        let extra = device.points.iter().find(|p| p.name == "extra").expect("extra point");
        assert_eq!((extra.address, extra.decimals, extra.data_type), (100, 1, DataType::F32));
        assert_eq!(config.mqtt.username, "gw-1");
        assert_eq!(config.mqtt.password.expose(), "secret");
        assert!(!format!("{config:?}").contains("secret"), "the password must not be printed");
    }

    #[test]
    fn each_mistake_names_its_field() {
        check_error("gw-1", "gw/1", "gateway_id");
        check_error("host = \"localhost\"", "hots = \"localhost\"", "unknown field `hots`");
        check_error("trane-ch530", "carrier-x", "devices[0].profile: unknown profile");
        check_error("address = 100", "address = 65535", "devices[0].points[0].address");
        check_error("type = \"f32\"", "type = \"float\"", "unknown variant `float`");
        check_error("type = \"f32\"", "type = \"bool\"", "devices[0].points[0].type");
        check_error("scale = 0.1", "scale = 0", "devices[0].points[0].scale");
        check_error("password_file", "#password_file", "no password");
        check_error("password_file", "password_env = \"CHILLCLOUD_TEST_UNSET\"\n#", "mqtt.password_env");
        check_error("[[devices.points]]", "poll_interval_ms = 5\n[[devices.points]]", "devices[0].poll_interval_ms");
        check_error("scale = 0.1", "scale = 0.1\ndeadband = -1", "devices[0].points[0].deadband");
        check_error("type = \"f32\"", "type = \"f32\"\nbit = 3", "devices[0].points[0].bit: a bit is read");
        check_error("type = \"f32\"", "type = \"string\"", "devices[0].points[0].length: a string needs");
        check_error("type = \"f32\"", "type = \"f32\"\nlength = 2", "devices[0].points[0].length: only strings");
        check_error("type = \"f32\"", "type = \"u16\"\nbit = 16", "devices[0].points[0].bit: 16 is not a bit");
        check_error("[mqtt]", "[queue]\nmax_mb = 0\n[mqtt]", "queue.max_mb");
        check_error("host = \"127.0.0.1\"", "bus = \"rs485\"", "devices[0].bus: no bus \"rs485\"");
        check_error("host = \"127.0.0.1\"", "port = 502", "devices[0].host: missing");
        check_error("[[devices]]", "[[buses]]\nid = \"a\"\n[[devices]]", "buses[0].serial_port");
        check_error(
            "[[devices]]",
            "[[buses]]\nid = \"a\"\nserial_port = \"/dev/ttyS0\"\nparity = \"mark\"\n[[devices]]",
            "unknown variant `mark`",
        );
        check_error("[mqtt]", "[queue]\nmax_size = 5\n[mqtt]", "unknown field `max_size`");
        check_error(
            "host = \"localhost\"",
            "host = \"localhost\"\ntls = { ca_file = \"/nonexistent.pem\" }",
            "mqtt.tls.ca_file",
        );
    }

    #[test]
    fn writes_need_bounds_and_interlocks_name_points_of_the_device() {
        let (good, _password) = good();
        for name in profile::NAMES {
            let text = good.replace("trane-ch530", name);
            Config::parse(&text, Path::new("gw.toml")).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let config = Config::parse(&good, Path::new("gw.toml")).expect("valid");
        let device = &config.devices[0];
        let name = |i: usize| device.points[i].name.as_str();
        assert_eq!(device.local_mode.map(name), Some("local_control"));
        let guards: Vec<_> =
            device.interlocks.iter().map(|i| (name(i.point), i.value, name(i.requires), i.equals)).collect();
        assert_eq!(
            guards,
            [
                ("chiller_enable", Some(1.0), "flow_proven", 1.0),
                ("chiller_enable", Some(1.0), "diagnostic_active", 0.0)
            ]
        );
        let setpoint = device.points.iter().find(|p| p.name == "chw_setpoint").expect("setpoint");
        assert_eq!(setpoint.write, Some(WriteRange { min: 4.4, max: 15.6, step: 0.1, multiple: false }));

        let extra = "kind = \"holding\"\naddress = 100\ntype = \"f32\"";
        check_error(
            extra,
            &format!("{extra}\nwritable = true"),
            "devices[0].points[0].writable: a writable register needs min and max",
        );
        check_error(extra, &format!("{extra}\nmin = 1.0"), "min, max, step and write_multiple are for writable points");
        check_error("kind = \"holding\"", "kind = \"input\"\nwritable = true", "read only");
        check_error(
            extra,
            "kind = \"holding\"\naddress = 100\ntype = \"i16\"\nwritable = true\nmin = 0\nmax = 5000",
            "5000 cannot be written",
        );
        check_error(extra, &format!("{extra}\nwritable = true\nmin = 5\nmax = 1"), "min <= max");
        check_error(
            "type = \"f32\"\nword_order = \"little\"\nscale = 0.1",
            "bit = 3\nwritable = true\nmin = 0\nmax = 1",
            "other bits",
        );
        check_error(
            "host = \"127.0.0.1\"",
            "host = \"127.0.0.1\"\nlocal_mode_point = \"nope\"",
            "devices[0].local_mode_point: no numeric point \"nope\"",
        );
        let interlock = |point: &str, requires: &str| {
            format!(
                "host = \"127.0.0.1\"\ninterlocks = [{{ point = \"{point}\", requires = \"{requires}\", equals = 1, reason = \"r\" }}]"
            )
        };
        check_error(
            "host = \"127.0.0.1\"",
            &interlock("evap_leaving_temp", "running"),
            "devices[0].interlocks[0].point: \"evap_leaving_temp\" is not writable",
        );
        check_error(
            "host = \"127.0.0.1\"",
            &interlock("chw_setpoint", "nope"),
            "devices[0].interlocks[0].requires: no numeric point",
        );
        // An integer register holds whole multiples of its scale: 15 on a register counting tens
        // would be written as 20.
        let register = "type = \"f32\"\nword_order = \"little\"\nscale = 0.1";
        check_error(
            register,
            "type = \"u16\"\nscale = 10\nwritable = true\nmin = 0\nmax = 15",
            "max is not a whole number of the register's scale 10",
        );
        check_error(
            register,
            "type = \"i16\"\nscale = 0.1\nwritable = true\nmin = 0\nmax = 10\nstep = 0.05",
            "step is not a whole number",
        );
        // A device with writable points says how local control shows, or that it does not.
        let own = good
            .replace("profile = \"trane-ch530\"\n", "")
            .replace(register, "type = \"u16\"\nwritable = true\nmin = 0\nmax = 10");
        let refused = Config::parse(&own, Path::new("gw.toml")).expect_err("no local mode").to_string();
        assert!(refused.contains("devices[0].local_mode_point: a device with writable points"), "{refused}");
        let stated = own.replace("host = \"127.0.0.1\"", "host = \"127.0.0.1\"\nwithout_local_mode = true");
        let config = Config::parse(&stated, Path::new("gw.toml")).expect("stated");
        assert_eq!(config.devices[0].points[0].write.map(|w| w.step), Some(1.0), "the default step is the scale");
    }

    #[test]
    fn field_a_site_profile_extends_a_builtin_one_and_a_device_corrects_it_further() {
        let (good, _password) = good();
        let dir = tempfile::tempdir().expect("temp dir");
        let profile = dir.path().join("site.toml");
        let write = |text: &str| std::fs::write(&profile, text).expect("write profile");
        write(
            "name = \"site-tracer\"\ndescription = \"x\"\nextends = \"trane-ch530\"\naddressing_base = 1\n\
             remove_points = [\"flow_proven\", \"local_control\"]\n\
             remove_interlocks = [{ point = \"chiller_enable\", requires = \"flow_proven\" }]\n\
             without_local_mode = true\n[[points]]\nname = \"running\"\nkind = \"input\"\naddress = 9\nbit = 1\n",
        );
        let site = good.replace("trane-ch530", "site-tracer");
        let text = format!("profile_files = [\"{}\"]\n{site}", profile.display());
        let config = Config::parse(&text, Path::new("gw.toml")).expect("valid");
        let device = &config.devices[0];
        assert_eq!((device.profile.as_str(), device.family.as_str()), ("site-tracer", "trane-ch530"));
        let names: Vec<&str> = device.points.iter().map(|p| p.name.as_str()).collect();
        assert!(!names.contains(&"flow_proven") && names.contains(&"evap_leaving_temp"), "{names:?}");
        let running = device.points.iter().find(|p| p.name == "running").expect("running");
        assert_eq!(running.bit, Some(1), "replaced");
        assert_eq!((device.local_mode, device.interlocks.len()), (None, 1));

        // A removed point an interlock still reads, a point that is not there, a reused name.
        write(
            "name = \"x\"\ndescription = \"x\"\nextends = \"trane-ch530\"\naddressing_base = 1\nremove_points = [\"flow_proven\"]\n",
        );
        let text = format!("profile_files = [\"{}\"]\n{}", profile.display(), good.replace("trane-ch530", "x"));
        let error = Config::parse(&text, Path::new("gw.toml")).expect_err("the interlock reads it").to_string();
        assert!(error.contains("interlocks[0].requires") && error.contains("remove_interlocks"), "{error}");
        write(
            "name = \"x\"\ndescription = \"x\"\nextends = \"trane-ch530\"\naddressing_base = 1\nremove_points = [\"nope\"]\n",
        );
        let error = Config::parse(&text, Path::new("gw.toml")).expect_err("no such point").to_string();
        assert!(error.contains("remove_points[0]: there is no point \"nope\""), "{error}");
        write("name = \"trane-ch530\"\ndescription = \"x\"\naddressing_base = 1\n");
        let error = Config::parse(&text, Path::new("gw.toml")).expect_err("taken").to_string();
        assert!(error.contains("extends = \"trane-ch530\""), "says what to do: {error}");
        write(
            "name = \"x\"\ndescription = \"x\"\naddressing_base = 1\nlocal_mode_point = \"a\"\nwithout_local_mode = true\n",
        );
        let error = Config::parse(&text, Path::new("gw.toml")).expect_err("both").to_string();
        assert!(error.contains("not both"), "{error}");
        let unknown = good.replace("trane-ch530", "nope");
        let error = Config::parse(&unknown, Path::new("gw.toml")).expect_err("unknown").to_string();
        assert!(error.contains("known profiles: trane-ch530"), "{error}");
    }

    #[test]
    fn field_without_local_mode_on_a_device_wins_over_the_profiles_local_mode_point() {
        let (good, _password) = good();
        let text = good.replace("host = \"127.0.0.1\"", "host = \"127.0.0.1\"\nwithout_local_mode = true");
        let config = Config::parse(&text, Path::new("gw.toml")).expect("valid");
        assert_eq!(config.devices[0].local_mode, None);
        let both =
            text.replace("without_local_mode = true", "without_local_mode = true\nlocal_mode_point = \"running\"");
        assert!(Config::parse(&both, Path::new("gw.toml")).is_err(), "one or the other");
    }
}
