//! Message payloads, encoded as Protocol Buffers.
//!
//! Readings are kept small on the wire: a point is named by the small integer alias its
//! session's birth gave it, the time is an offset from the batch's base time, and a value with a
//! known number of decimals travels as a zig-zag varint of `value * 10^decimals` (7.2 °C at one
//! decimal is the two bytes of `72`), falling back to a double when that would lose precision.

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::{DecodeError, MAX_PAYLOAD_BYTES, MessageKind};

/// Gateway to server on (re)connect, retained: what the gateway reads, for one session.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct Birth {
    /// The contract version the gateway speaks ([`crate::PROTOCOL_VERSION`]).
    #[prost(uint32, tag = "1")]
    pub protocol_version: u32,
    /// Increases every time the gateway process starts; aliases are valid within one session.
    #[prost(uint64, tag = "2")]
    pub session: u64,
    /// The gateway's software version.
    #[prost(string, tag = "3")]
    pub software_version: String,
    /// When the session started, milliseconds since the Unix epoch.
    #[prost(int64, tag = "4")]
    pub time_ms: i64,
    /// The devices this gateway polls.
    #[prost(message, repeated, tag = "5")]
    pub devices: Vec<Device>,
    /// The version of the server-held configuration it runs; 0 for its local file alone.
    #[prost(uint32, tag = "6")]
    pub config_version: u32,
}

/// Why a birth cannot define a session.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BirthError {
    /// An alias at or past the number of points: aliases number the points from 0.
    #[error("alias {alias} of point {point:?} is not below the birth's {points} points")]
    AliasOutOfRange {
        /// The alias.
        alias: u32,
        /// Its point's name.
        point: String,
        /// Points in the birth.
        points: usize,
    },
    /// Two points with one alias.
    #[error("alias {0} is used twice")]
    DuplicateAlias(u32),
    /// Two devices with one id.
    #[error("device id {0:?} is used twice")]
    DuplicateDevice(String),
    /// Two points of a device with one name.
    #[error("point name {0:?} is used twice in a device")]
    DuplicatePoint(String),
    /// A device id or point name that is not a plain name ([`crate::is_plain_name`]).
    #[error("{what} {value:?} is not 1 to 64 letters, digits, '-' or '_'")]
    NotPlain {
        /// `device id` or `point name`.
        what: &'static str,
        /// What was sent.
        value: String,
    },
    /// A text longer than its bound, or with control characters.
    #[error("{what} of {chars} characters, or with control characters (at most {max})")]
    BadText {
        /// Which text.
        what: &'static str,
        /// Its length in characters.
        chars: usize,
        /// Its bound.
        max: usize,
    },
}

/// `Ok` when `text` has at most `max` characters and no control characters.
fn bounded_text(what: &'static str, text: &str, max: usize) -> Result<(), BirthError> {
    let chars = text.chars().count();
    if chars > max || text.chars().any(char::is_control) {
        return Err(BirthError::BadText { what, chars, max });
    }
    Ok(())
}

impl Birth {
    /// Checks what a receiver relies on: the aliases number the points from 0 without gaps or
    /// repeats (so an alias table is exactly as long as the birth, whatever numbers a peer
    /// sends); device ids are distinct; ids and names are plain names and the other texts short,
    /// since they end up in SMS texts and pages.
    pub fn check(&self) -> Result<(), BirthError> {
        let plain = |what, value: &str| {
            if crate::is_plain_name(value) {
                Ok(())
            } else {
                Err(BirthError::NotPlain { what, value: value.to_owned() })
            }
        };
        bounded_text("software version", &self.software_version, 64)?;
        let points = self.devices.iter().map(|d| d.points.len()).sum::<usize>();
        let mut seen = vec![false; points];
        let mut devices = std::collections::BTreeSet::new();
        for device in &self.devices {
            plain("device id", &device.id)?;
            bounded_text("profile", &device.profile, 64)?;
            bounded_text("model", &device.model, 64)?;
            bounded_text("profile family", &device.family, 64)?;
            bounded_text("display name", &device.display_name, 64)?;
            if device.attributes.len() > 32 {
                return Err(BirthError::BadText { what: "attributes", chars: device.attributes.len(), max: 32 });
            }
            for (name, value) in &device.attributes {
                bounded_text("attribute name", name, 64)?;
                bounded_text("attribute", value, 256)?;
            }
            if !devices.insert(device.id.as_str()) {
                return Err(BirthError::DuplicateDevice(device.id.clone()));
            }
            let mut names = std::collections::BTreeSet::new();
            for point in &device.points {
                plain("point name", &point.name)?;
                if !names.insert(point.name.as_str()) {
                    return Err(BirthError::DuplicatePoint(point.name.clone()));
                }
                bounded_text("unit of measure", &point.unit, 16)?;
                let slot = seen.get_mut(point.alias as usize).ok_or_else(|| BirthError::AliasOutOfRange {
                    alias: point.alias,
                    point: point.name.clone(),
                    points,
                })?;
                if std::mem::replace(slot, true) {
                    return Err(BirthError::DuplicateAlias(point.alias));
                }
            }
        }
        Ok(())
    }
}

/// One device (a chiller controller) behind the gateway.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct Device {
    /// The device's id, unique within the gateway.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The device profile it was configured with, empty if none.
    #[prost(string, tag = "2")]
    pub profile: String,
    /// The equipment model, if configured.
    #[prost(string, tag = "3")]
    pub model: String,
    /// The points read from the device.
    #[prost(message, repeated, tag = "4")]
    pub points: Vec<PointInfo>,
    /// Text the device reports about itself (model, serial number, firmware), read when the
    /// session started; a value that could not be read is absent.
    #[prost(btree_map = "string, string", tag = "5")]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// The built-in profile its profile derives from (a site's corrected map `extends` one),
    /// whose domain pack of rules applies; empty when none (or from a gateway before 0.2).
    #[prost(string, tag = "6")]
    pub family: String,
    /// The name people know the unit by, empty if the site gave none.
    #[prost(string, tag = "7")]
    pub display_name: String,
}

/// One point of a device, as announced in the birth.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct PointInfo {
    /// The number that names this point in data messages of the same session.
    #[prost(uint32, tag = "1")]
    pub alias: u32,
    /// The point's name, unique within the device (for example `evap_leaving_temp`).
    #[prost(string, tag = "2")]
    pub name: String,
    /// Engineering unit after scaling (for example `°C`, `%RLA`, `h`).
    #[prost(string, tag = "3")]
    pub unit: String,
    /// Decimal places of resolution; [`Value::Scaled`] values are multiplied by `10^decimals`.
    #[prost(sint32, tag = "4")]
    pub decimals: i32,
    /// Whether the point accepts remote writes.
    #[prost(bool, tag = "5")]
    pub writable: bool,
    /// For a writable register: the lowest value a command may write.
    #[prost(double, optional, tag = "6")]
    pub min: Option<f64>,
    /// For a writable register: the highest value a command may write.
    #[prost(double, optional, tag = "7")]
    pub max: Option<f64>,
    /// For a writable register: written values are `min` plus a whole number of steps.
    #[prost(double, optional, tag = "8")]
    pub step: Option<f64>,
}

/// Gateway to server, as the MQTT last will: the session ended uncleanly.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct Death {
    /// The session that ended.
    #[prost(uint64, tag = "1")]
    pub session: u64,
}

/// Gateway to server: a batch of readings.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct Data {
    /// The session whose birth defines the aliases used here.
    #[prost(uint64, tag = "1")]
    pub session: u64,
    /// The gateway's store-and-forward sequence number of the (last) batch in this message:
    /// increases with every batch the gateway queues, across sessions, so replays show.
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// True when the batch is backfill sent late from the gateway's buffer.
    #[prost(bool, tag = "3")]
    pub history: bool,
    /// Milliseconds since the Unix epoch that reading offsets count from.
    #[prost(int64, tag = "4")]
    pub base_time_ms: i64,
    /// The readings.
    #[prost(message, repeated, tag = "5")]
    pub readings: Vec<Reading>,
    /// Intervals whose readings the gateway had to drop unsent (its buffer was full or the
    /// readings too old), so the cloud can show them as gaps rather than as missing data.
    #[prost(message, repeated, tag = "6")]
    pub dropped: Vec<DroppedInterval>,
}

/// Readings a gateway read but dropped before they could be delivered.
#[derive(Clone, Copy, PartialEq, Message, Serialize, Deserialize)]
pub struct DroppedInterval {
    /// Time of the first dropped reading, milliseconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub from_ms: i64,
    /// Time of the last dropped reading, milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub to_ms: i64,
    /// How many readings were dropped in the interval.
    #[prost(uint64, tag = "3")]
    pub readings: u64,
}

/// One reading of one point.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct Reading {
    /// The point's alias from the session's birth.
    #[prost(uint32, tag = "1")]
    pub alias: u32,
    /// When the value was read: milliseconds after the batch's `base_time_ms`.
    #[prost(sint64, tag = "2")]
    pub offset_ms: i64,
    /// Whether the value can be trusted (the default, good, costs no bytes).
    #[prost(enumeration = "Quality", tag = "5")]
    pub quality: i32,
    /// The value; absent when the read failed.
    #[prost(oneof = "Value", tags = "3, 4")]
    pub value: Option<Value>,
}

/// A reading's value.
#[derive(Clone, Copy, PartialEq, prost::Oneof, Serialize, Deserialize)]
pub enum Value {
    /// `value * 10^decimals` of the point, rounded exactly.
    #[prost(sint64, tag = "3")]
    Scaled(i64),
    /// The value itself, when it has more precision than the point's decimals.
    #[prost(double, tag = "4")]
    Real(f64),
}

/// How far a reading can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration, Serialize, Deserialize)]
#[repr(i32)]
pub enum Quality {
    /// Read from the device just now.
    Good = 0,
    /// The device did not answer or answered with an error: there is no value.
    Bad = 1,
    /// A value that exists but may be wrong (for example out of the sensor's range).
    Uncertain = 2,
}

/// Server to gateway: write `value` to a point.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct Command {
    /// Unique id, echoed in the result; a gateway executes an id at most once.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The device id from the birth.
    #[prost(string, tag = "2")]
    pub device: String,
    /// The point name from the birth.
    #[prost(string, tag = "3")]
    pub point: String,
    /// The engineering value to write.
    #[prost(double, tag = "4")]
    pub value: f64,
    /// After this instant (ms since the epoch) the command must not be executed.
    #[prost(int64, tag = "5")]
    pub expires_at_ms: i64,
    /// Who asked, for the gateway's own log.
    #[prost(string, tag = "6")]
    pub requester: String,
}

/// Gateway to server: what became of a command.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The outcome.
    #[prost(enumeration = "CommandStatus", tag = "2")]
    pub status: i32,
    /// A human-readable reason, for refusals and failures.
    #[prost(string, tag = "3")]
    pub message: String,
    /// The value read back after writing.
    #[prost(double, optional, tag = "4")]
    pub read_back: Option<f64>,
    /// When the gateway finished with the command, ms since the epoch.
    #[prost(int64, tag = "5")]
    pub time_ms: i64,
}

/// Server to gateway: poll one device faster, and report every point of every poll, until
/// `until_ms`, so the moments after a fault are recorded at high resolution. Not a write: it
/// changes nothing on the device. A later boost for the same device replaces an earlier one.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct PollBoost {
    /// The device id from the birth.
    #[prost(string, tag = "1")]
    pub device: String,
    /// The poll interval while boosted, ms; the gateway keeps to its own lower bound.
    #[prost(uint32, tag = "2")]
    pub interval_ms: u32,
    /// When the boost ends, ms since the epoch.
    #[prost(int64, tag = "3")]
    pub until_ms: i64,
}

/// Server to gateway: a version of its configuration. The broker lets only the server publish
/// on a gateway's `config` topic and only that gateway read it; the gateway also refuses one
/// naming another gateway, and never goes back to a version below the one it runs.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct GatewayConfig {
    /// The gateway it is for.
    #[prost(string, tag = "1")]
    pub gateway_id: String,
    /// Increases with every change made on the server.
    #[prost(uint32, tag = "2")]
    pub version: u32,
    /// The site part of the configuration file (`[[buses]]`, `[[devices]]`, `[queue]`) as TOML;
    /// the gateway's own file keeps its id, broker and state directory.
    #[prost(string, tag = "3")]
    pub site_toml: String,
    /// Who made the change, for the gateway's log.
    #[prost(string, tag = "4")]
    pub changed_by: String,
}

/// Gateway to server: what became of a configuration version.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct ConfigReport {
    /// The version concerned.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The outcome.
    #[prost(enumeration = "ConfigOutcome", tag = "2")]
    pub outcome: i32,
    /// The version the gateway runs now (after a refusal or a rollback, the earlier one).
    #[prost(uint32, tag = "3")]
    pub running_version: u32,
    /// Why, for refusals and rollbacks.
    #[prost(string, tag = "4")]
    pub reason: String,
}

/// What became of a configuration version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration, Serialize, Deserialize)]
#[repr(i32)]
pub enum ConfigOutcome {
    /// An outcome this build does not know (sent by a newer gateway).
    Unknown = 0,
    /// Running, and every device that answered before answers with it.
    Applied = 1,
    /// Not applied: invalid for this gateway (the reason names the field).
    Refused = 2,
    /// Applied, then left again because devices that answered before stopped answering.
    RolledBack = 3,
}

impl ConfigReport {
    /// The outcome's name as the server records it: `applied`, `refused`, `rolled_back`, or
    /// `unknown`.
    pub fn outcome_name(&self) -> &'static str {
        match self.outcome() {
            ConfigOutcome::Applied => "applied",
            ConfigOutcome::Refused => "refused",
            ConfigOutcome::RolledBack => "rolled_back",
            ConfigOutcome::Unknown => "unknown",
        }
    }
}

/// Outcome of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration, Serialize, Deserialize)]
#[repr(i32)]
pub enum CommandStatus {
    /// A status this build does not know (sent by a newer gateway).
    Unknown = 0,
    /// Written and confirmed by reading back.
    Done = 1,
    /// Not written, for the reason in `message`.
    Refused = 2,
    /// Written or attempted, but the write or the read-back failed.
    Failed = 3,
    /// Arrived after its expiry; not written.
    Expired = 4,
}

impl CommandResult {
    /// The outcome's name as the server records it and the gateway counts it: `done`,
    /// `refused`, `expired`, or `failed` (a status this build does not know counts as failed).
    pub fn outcome(&self) -> &'static str {
        match CommandStatus::try_from(self.status) {
            Ok(CommandStatus::Done) => "done",
            Ok(CommandStatus::Refused) => "refused",
            Ok(CommandStatus::Expired) => "expired",
            Ok(CommandStatus::Failed | CommandStatus::Unknown) | Err(_) => "failed",
        }
    }
}

impl Value {
    /// The engineering value, given the point's `decimals` from the birth.
    pub fn to_f64(self, decimals: i32) -> f64 {
        match self {
            // Dividing by a power of ten (not multiplying by its inverse) is exact for the
            // decimal values the gateway sent, such as 72 / 10 = 7.2.
            Value::Scaled(scaled) => scaled as f64 / 10f64.powi(decimals),
            Value::Real(value) => value,
        }
    }
}

/// Chooses the most compact exact wire form of `value` for a point with `decimals` decimals.
pub fn encode_value(value: f64, decimals: i32) -> Value {
    let scaled = (value * 10f64.powi(decimals)).round();
    if scaled.is_finite() && scaled.abs() < 2f64.powi(53) {
        let scaled = scaled as i64;
        if Value::Scaled(scaled).to_f64(decimals) == value {
            return Value::Scaled(scaled);
        }
    }
    Value::Real(value)
}

/// A writable point's value on its step: `min` plus the nearest whole number of `step`s, at the
/// decimals of `min` and `step`; `None` when `value` is further than a millionth of a step from
/// one. Server and gateway judge a command's value by this one rule, so both check, and the
/// gateway writes, the same value (0.9999999 on a 0/1 switch is 1, a start).
pub fn on_step(value: f64, min: f64, step: f64) -> Option<f64> {
    let steps = (value - min) / step;
    if !steps.is_finite() || (steps - steps.round()).abs() > 1e-6 {
        return None;
    }
    let exact_at = |d: i32| [min, step].iter().all(|x| (x * 10f64.powi(d)).fract().abs() < 1e-9);
    let factor = 10f64.powi((0..=9).find(|&d| exact_at(d)).unwrap_or(9));
    Some(((min + steps.round() * step) * factor).round() / factor)
}

/// Decodes a payload of the given kind, refusing oversized ones.
pub fn decode<M: Message + Default>(kind: MessageKind, payload: &[u8]) -> Result<M, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    M::decode(payload).map_err(|source| DecodeError::Malformed { kind, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_birth_numbers_its_points_densely_from_zero() {
        let point = |alias| PointInfo { alias, name: format!("p{alias}"), ..Default::default() };
        let named = |id: &str, name: &str| Birth {
            devices: vec![Device {
                id: id.into(),
                points: vec![PointInfo { name: name.into(), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(named("chiller-1", "chw_setpoint").check(), Ok(()));
        assert!(matches!(named("https://evil.example", "p").check(), Err(BirthError::NotPlain { .. })));
        assert!(matches!(named("a", "p\0").check(), Err(BirthError::NotPlain { .. })));
        assert!(matches!(named("a", "").check(), Err(BirthError::NotPlain { .. })));
        let birth = |aliases: &[u32]| Birth {
            devices: vec![Device {
                id: "a".into(),
                points: aliases.iter().map(|&a| point(a)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(birth(&[1, 0, 2]).check(), Ok(()));
        assert_eq!(birth(&[]).check(), Ok(()));
        assert!(matches!(birth(&[u32::MAX]).check(), Err(BirthError::AliasOutOfRange { alias: u32::MAX, .. })));
        assert!(matches!(birth(&[0, 5_000_000]).check(), Err(BirthError::AliasOutOfRange { .. })));
        let mut same_alias = birth(&[0, 1]);
        same_alias.devices[0].points[1].alias = 0;
        assert_eq!(same_alias.check(), Err(BirthError::DuplicateAlias(0)));
        assert_eq!(birth(&[0, 0]).check(), Err(BirthError::DuplicatePoint("p0".into())));
        let mut twice = birth(&[0]);
        twice.devices.push(Device { id: "a".into(), ..Default::default() });
        assert_eq!(twice.check(), Err(BirthError::DuplicateDevice("a".into())));
    }

    #[test]
    fn values_go_on_their_step_at_its_decimals() {
        assert_eq!(on_step(8.5, 4.4, 0.1), Some(8.5));
        assert_eq!(on_step(6.500_000_01, 4.4, 0.1), Some(6.5));
        assert_eq!(on_step(0.999_999_9, 0.0, 1.0), Some(1.0));
        assert_eq!(on_step(1.5, 0.5, 1.0), Some(1.5));
        assert_eq!(on_step(-9_876_543_211.0, -1e12, 1.0), Some(-9_876_543_211.0));
        assert_eq!(on_step(45.5, 45.0, 0.5), Some(45.5));
        assert_eq!(on_step(6.55, 4.4, 0.1), None);
        assert_eq!(on_step(0.5, 0.0, 1.0), None);
        assert_eq!(on_step(f64::NAN, 0.0, 1.0), None);
    }

    #[test]
    fn values_take_the_compact_form_only_when_exact() {
        assert_eq!(encode_value(7.2, 1), Value::Scaled(72));
        assert_eq!(encode_value(-12.5, 1), Value::Scaled(-125));
        assert_eq!(encode_value(42.0, 0), Value::Scaled(42));
        assert_eq!(encode_value(7.25, 1), Value::Real(7.25));
        assert!(encode_value(f64::NAN, 1).to_f64(1).is_nan());
        assert_eq!(encode_value(1e300, 2), Value::Real(1e300));
        for (value, decimals) in [(7.2, 1), (0.1, 1), (123.456, 3), (-0.3, 1)] {
            assert_eq!(encode_value(value, decimals).to_f64(decimals), value);
        }
    }
}
