//! A point, and the interlocks on writing it, as a site configuration or a profile file
//! writes them, and the checks that turn a point into its resolved [`PointConfig`]. Both the
//! configuration and the profiles hold points, so both build on this module, which knows
//! neither of them.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::modbus::{ByteOrder, DataType, RegisterKind, WordOrder, decode_words};

/// A problem in a configuration or profile file, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names line, column and field).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A field has a value that cannot work.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field, for example `devices[0].points[2].address`.
        field: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// A condition a remote write needs, as written in a site config or a profile file: a write of
/// `point` (of `value` only, when given) is refused with `reason` unless `requires` reads
/// `equals` just before it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InterlockFile {
    /// The writable point it guards.
    pub(crate) point: String,
    /// Only writes of this value (a start, say); every write of the point when absent.
    pub(crate) value: Option<f64>,
    /// The point read before writing.
    pub(crate) requires: String,
    /// The value it must read.
    pub(crate) equals: f64,
    /// Why the write is refused, as the requester reads it.
    pub(crate) reason: String,
}

/// One point, as written in a site config or a profile file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PointFile {
    /// Name, unique within the device.
    pub(crate) name: String,
    /// Register table.
    pub(crate) kind: RegisterKind,
    /// Register or bit number, counted from the file's addressing base.
    pub(crate) address: u32,
    /// How the registers are interpreted; `bool` for coils and discrete inputs.
    #[serde(rename = "type")]
    pub(crate) data_type: Option<DataType>,
    /// Word order of multi-register values.
    #[serde(default)]
    pub(crate) word_order: WordOrder,
    /// Byte order within each register.
    #[serde(default)]
    pub(crate) byte_order: ByteOrder,
    /// For a flag packed in a register: the bit (0 = least significant) read as 0 or 1.
    pub(crate) bit: Option<u8>,
    /// For `type = "string"`: how many registers the text spans (two characters each).
    pub(crate) length: Option<u16>,
    /// Milliseconds between reads of this point when it should be read less often than its
    /// device (run hours, counters); never faster than the device's `poll_interval_ms`.
    pub(crate) poll_interval_ms: Option<u64>,
    /// Engineering value = raw × scale + offset.
    #[serde(default = "default_scale")]
    pub(crate) scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub(crate) offset: f64,
    /// Engineering unit.
    #[serde(default)]
    pub(crate) unit: String,
    /// Decimal places of resolution; derived from `scale` when absent.
    pub(crate) decimals: Option<i32>,
    /// Whether remote writes are allowed: coils, and holding registers with `min` and `max`.
    #[serde(default)]
    pub(crate) writable: bool,
    /// Lowest value a remote write may set, in engineering units.
    pub(crate) min: Option<f64>,
    /// Highest value a remote write may set.
    pub(crate) max: Option<f64>,
    /// Written values are `min` plus a whole number of steps; the point's resolution when absent.
    pub(crate) step: Option<f64>,
    /// Write with function code 15 or 16 even when one coil or register would take 5 or 6 (for
    /// controllers that implement only the multiple-write functions).
    #[serde(default)]
    pub(crate) write_multiple: bool,
    /// Smallest change, in engineering units, that is sent before the next snapshot; 0 sends
    /// every change.
    #[serde(default)]
    pub(crate) deadband: f64,
    /// Whether the register is in the maker's public point list. A site convention
    /// (`listed = false`) is read in requests of its own, so a controller without it never
    /// fails the merged reads of the listed points.
    #[serde(default = "yes")]
    pub(crate) listed: bool,
}

/// Longest interval a setting may take, in milliseconds.
pub(crate) const DAY_MS: u64 = 24 * 3600 * 1000;
/// Shortest poll interval a device or point may take, in milliseconds; a poll boost keeps to it
/// too.
pub const MIN_POLL_INTERVAL_MS: u64 = 100;

fn default_scale() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

/// How a writable point may be written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteRange {
    /// Lowest value.
    pub min: f64,
    /// Highest value.
    pub max: f64,
    /// Values are `min` plus a whole number of steps.
    pub step: f64,
    /// Function code 15 or 16 even for one coil or register.
    pub multiple: bool,
}

/// One point with its address resolved to the zero-based protocol address.
#[derive(Debug, Clone, PartialEq)]
pub struct PointConfig {
    /// Name, unique within the device.
    pub name: String,
    /// Register table.
    pub kind: RegisterKind,
    /// Zero-based protocol address.
    pub address: u16,
    /// Interpretation of the registers.
    pub data_type: DataType,
    /// Word order.
    pub word_order: WordOrder,
    /// Byte order within each register.
    pub byte_order: ByteOrder,
    /// The bit read from a 16-bit register, for flags packed in status words.
    pub bit: Option<u8>,
    /// Registers or bits the point spans.
    pub width: u16,
    /// Its own time between reads, when slower than its device's.
    pub poll_interval: Option<Duration>,
    /// Multiplier from raw to engineering value.
    pub scale: f64,
    /// Added after scaling.
    pub offset: f64,
    /// Engineering unit.
    pub unit: String,
    /// Decimal places of resolution.
    pub decimals: i32,
    /// How remote writes may set it; `None` when they may not.
    pub write: Option<WriteRange>,
    /// Smallest change sent before the next snapshot.
    pub deadband: f64,
    /// Whether the register is in the maker's public point list (else read on its own).
    pub listed: bool,
}

impl PointConfig {
    /// The engineering value in `words`, the point's registers (or its bit's register).
    pub fn engineering_value(&self, words: &[u16]) -> f64 {
        if let Some(bit) = self.bit {
            return f64::from((words[0] >> bit) & 1);
        }
        let value = decode_words(words, self.data_type, self.word_order, self.byte_order) * self.scale + self.offset;
        if self.data_type.is_float() {
            value
        } else {
            // An integer register scaled by 0.1 has exactly one decimal; rounding removes the
            // binary noise of the multiplication (3 × 0.1 = 0.30000000000000004), which would
            // otherwise cost a double on the wire.
            let factor = 10f64.powi(self.decimals);
            (value * factor).round() / factor
        }
    }
}

/// A [`ConfigError::Invalid`] about `field`.
pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

/// Checks one point and resolves its address against `base`.
pub(crate) fn check_point(point: PointFile, base: u16, field: &str) -> Result<PointConfig, ConfigError> {
    if !chillcloud_proto::is_plain_name(&point.name) {
        return Err(invalid(format!("{field}.name"), "must be 1 to 64 letters, digits, '-' or '_'"));
    }
    let data_type = match (point.kind.is_bit(), point.data_type) {
        (true, None | Some(DataType::Bool)) => DataType::Bool,
        (true, Some(_)) => {
            return Err(invalid(format!("{field}.type"), "coils and discrete inputs are read as bool"));
        }
        (false, None) => DataType::U16,
        (false, Some(DataType::Bool)) => {
            return Err(invalid(
                format!("{field}.type"),
                "bool is for coils and discrete inputs; registers take u16, i16, u32, i32, u64, i64, f32, f64 or string",
            ));
        }
        (false, Some(t)) => t,
    };
    let width = match (data_type, point.length) {
        (DataType::String, Some(length @ 1..=125)) if !point.kind.is_bit() => length,
        (DataType::String, _) => {
            return Err(invalid(
                format!("{field}.length"),
                "a string needs `length`, 1 to 125 registers of an input or holding table",
            ));
        }
        (_, Some(_)) => return Err(invalid(format!("{field}.length"), "only strings have a length")),
        (other, None) => other.width(),
    };
    if let Some(bit) = point.bit {
        if point.kind.is_bit() || !matches!(data_type, DataType::U16 | DataType::I16) {
            return Err(invalid(format!("{field}.bit"), "a bit is read from one 16-bit register (type u16)"));
        }
        if bit > 15 {
            return Err(invalid(format!("{field}.bit"), format!("{bit} is not a bit of a 16-bit register (0 to 15)")));
        }
        if point.scale != 1.0 || point.offset != 0.0 {
            return Err(invalid(format!("{field}.bit"), "a bit reads 0 or 1: leave scale and offset out"));
        }
    }
    let address = point.address.checked_sub(u32::from(base)).ok_or_else(|| {
        invalid(format!("{field}.address"), format!("{} is below the addressing base {base}", point.address))
    })?;
    if address + u32::from(width) > 65536 {
        return Err(invalid(
            format!("{field}.address"),
            format!("{} with {width} registers runs past the last address 65535", point.address),
        ));
    }
    if !point.scale.is_finite() || point.scale == 0.0 {
        return Err(invalid(format!("{field}.scale"), "must be a finite non-zero number"));
    }
    if point.poll_interval_ms.is_some_and(|ms| !(MIN_POLL_INTERVAL_MS..=DAY_MS).contains(&ms)) {
        return Err(invalid(format!("{field}.poll_interval_ms"), "must be at least 100 and at most a day"));
    }
    if !point.deadband.is_finite() || point.deadband < 0.0 {
        return Err(invalid(format!("{field}.deadband"), "must be a finite number, 0 or more"));
    }
    if !point.offset.is_finite() {
        return Err(invalid(format!("{field}.offset"), "must be finite"));
    }
    let decimals = point.decimals.unwrap_or_else(|| decimals_of(point.scale).max(decimals_of(point.offset)));
    if !(0..=9).contains(&decimals) {
        return Err(invalid(format!("{field}.decimals"), "must be between 0 and 9"));
    }
    let write = check_write(&point, data_type, decimals, field)?;
    Ok(PointConfig {
        name: point.name,
        kind: point.kind,
        address: address as u16,
        data_type,
        word_order: point.word_order,
        byte_order: point.byte_order,
        bit: point.bit,
        width,
        poll_interval: point.poll_interval_ms.map(Duration::from_millis),
        scale: point.scale,
        offset: point.offset,
        unit: point.unit,
        decimals,
        write,
        deadband: point.deadband,
        listed: point.listed,
    })
}

/// How remote writes may set `point`: coils between 0 and 1; holding registers within their
/// `min` and `max` (required, so nothing is writable without bounds), each representable in the
/// register's type. Input tables and flags packed in registers (a write would rewrite the other
/// bits) are read only.
fn check_write(
    point: &PointFile,
    data_type: DataType,
    decimals: i32,
    field: &str,
) -> Result<Option<WriteRange>, ConfigError> {
    if !point.writable {
        if point.min.is_some() || point.max.is_some() || point.step.is_some() || point.write_multiple {
            return Err(invalid(
                format!("{field}.writable"),
                "min, max, step and write_multiple are for writable points",
            ));
        }
        return Ok(None);
    }
    let field = format!("{field}.writable");
    match point.kind {
        RegisterKind::Input | RegisterKind::DiscreteInput => {
            return Err(invalid(field, "input registers and discrete inputs are read only"));
        }
        RegisterKind::Coil => {
            if point.min.is_some() || point.max.is_some() || point.step.is_some() {
                return Err(invalid(field, "a coil is written 0 or 1: leave min, max and step out"));
            }
            return Ok(Some(WriteRange { min: 0.0, max: 1.0, step: 1.0, multiple: point.write_multiple }));
        }
        RegisterKind::Holding => {}
    }
    if point.bit.is_some() {
        return Err(invalid(field, "a flag packed in a register cannot be written: it would rewrite the other bits"));
    }
    if data_type == DataType::String {
        return Err(invalid(field, "text points are read only"));
    }
    let (Some(min), Some(max)) = (point.min, point.max) else {
        return Err(invalid(field, "a writable register needs min and max, the range a remote write may set"));
    };
    if !(min.is_finite() && max.is_finite() && min <= max) {
        return Err(invalid(field, format!("min {min} and max {max} must be finite with min <= max")));
    }
    // An integer register holds whole multiples of its scale: bounds and step must be too, or a
    // checked value would be written rounded (to another value, even past a bound).
    let step = point.step.unwrap_or(if data_type.is_float() { 10f64.powi(-decimals) } else { point.scale.abs() });
    if !(step.is_finite() && step > 0.0) {
        return Err(invalid(field, format!("step {step} must be a finite number above 0")));
    }
    let whole = |x: f64| (x - x.round()).abs() < 1e-6;
    if !data_type.is_float() {
        for (what, value) in [("min", min - point.offset), ("max", max - point.offset), ("step", step)] {
            if !whole(value / point.scale) {
                return Err(invalid(
                    field,
                    format!(
                        "{what} is not a whole number of the register's scale {}: it could not be written exactly",
                        point.scale
                    ),
                ));
            }
        }
    }
    for bound in [min, max] {
        if let Err(message) = crate::modbus::encode_words(
            crate::modbus::raw_of(bound, point.scale, point.offset),
            data_type,
            point.word_order,
            point.byte_order,
        ) {
            return Err(invalid(field, format!("{bound} cannot be written to this register: {message}")));
        }
    }
    Ok(Some(WriteRange { min, max, step, multiple: point.write_multiple }))
}

/// The resolution a scale factor implies: 0.1 gives 1 decimal, 0.01 gives 2, 1 and 10 give 0.
fn decimals_of(scale: f64) -> i32 {
    (0..=9).find(|&d| (scale * 10f64.powi(d)).fract().abs() < 1e-9).unwrap_or(9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_follow_the_scale() {
        assert_eq!(
            [decimals_of(1.0), decimals_of(0.1), decimals_of(0.01), decimals_of(10.0), decimals_of(0.5)],
            [0, 1, 2, 0, 1]
        );
    }
}
