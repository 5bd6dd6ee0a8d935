//! Built-in device profiles: register maps of real chiller controllers, kept as data files
//! under `gateway/profiles/` and compiled into the binary.

use std::path::Path;

use serde::Deserialize;

use crate::config::{InterlockFile, PointConfig, PointFile, check_point};

/// Names of the built-in profiles.
pub const NAMES: &[&str] = &["trane-ch530", "daikin-microtech3", "thermal-care-accuchiller"];

fn source(name: &str) -> Option<&'static str> {
    match name {
        "trane-ch530" => Some(include_str!("../profiles/trane-ch530.toml")),
        "daikin-microtech3" => Some(include_str!("../profiles/daikin-microtech3.toml")),
        "thermal-care-accuchiller" => Some(include_str!("../profiles/thermal-care-accuchiller.toml")),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: String,
    #[allow(dead_code, reason = "documentation inside the data file")]
    description: String,
    /// Number of the first register in this file's addresses (1 for Modicon-style lists).
    addressing_base: u16,
    points: Vec<PointFile>,
    /// The point that reads non-zero while the controller is in local control.
    local_mode_point: Option<String>,
    /// The controller reports no local/remote state.
    #[serde(default)]
    without_local_mode: bool,
    /// Conditions remote writes need.
    #[serde(default)]
    interlocks: Vec<InterlockFile>,
}

/// A device profile with its addresses resolved.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The profile's name.
    pub name: String,
    /// Its points, with zero-based addresses.
    pub points: Vec<PointConfig>,
    /// The point that reads non-zero while the controller is in local control; checked, like
    /// the interlocks, when a device uses the profile (a site may override points).
    pub(crate) local_mode_point: Option<String>,
    /// The controller reports no local/remote state.
    pub(crate) without_local_mode: bool,
    /// Conditions remote writes need.
    pub(crate) interlocks: Vec<InterlockFile>,
}

/// Loads a built-in profile by name.
pub fn builtin(name: &str) -> Option<Profile> {
    let text = source(name)?;
    // The built-in files are checked by this crate's tests, so a failure here is a build defect.
    Some(parse(text, Path::new(name)).unwrap_or_else(|e| panic!("built-in profile {name} is invalid: {e}")))
}

/// Loads a site's own profile from a data file in the built-in profiles' format.
pub fn load(path: &Path) -> Result<Profile, crate::config::ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| crate::config::ConfigError::Read { path: path.to_owned(), source })?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<Profile, crate::config::ConfigError> {
    let file: ProfileFile = toml::from_str(text)
        .map_err(|e| crate::config::ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
    let points = file
        .points
        .into_iter()
        .enumerate()
        .map(|(i, p)| check_point(p, file.addressing_base, &format!("{}: points[{i}]", path.display())))
        .collect::<Result<_, _>>()?;
    Ok(Profile {
        name: file.name,
        points,
        local_mode_point: file.local_mode_point,
        without_local_mode: file.without_local_mode,
        interlocks: file.interlocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_is_valid_and_named_as_listed() {
        for name in NAMES {
            let profile = builtin(name).expect("listed profiles exist");
            assert_eq!(&profile.name, name);
            let mut names: Vec<_> = profile.points.iter().map(|p| &p.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), profile.points.len(), "point names are unique in {name}");
        }
    }

    #[test]
    fn trane_addresses_are_converted_from_the_manuals_numbering() {
        let profile = builtin("trane-ch530").expect("exists");
        let point = |n: &str| profile.points.iter().find(|p| p.name == n).expect("point").clone();
        // Input register 30005 is protocol address 4; holding 40002 is 1; coil 1 is 0.
        assert_eq!(point("evap_leaving_temp").address, 4);
        assert_eq!(point("chw_setpoint").address, 1);
        assert_eq!(point("chiller_enable").address, 0);
    }

    #[test]
    fn other_profiles_keep_their_manuals_numbering_too() {
        let address = |profile: &str, name: &str| {
            builtin(profile).expect("exists").points.iter().find(|p| p.name == name).expect("point").address
        };
        // Daikin's register 17 (1-based) is protocol address 16.
        assert_eq!(address("daikin-microtech3", "evap_leaving_temp"), 16);
        // Thermal Care's discrete input 10013 and input register 30003 are 13 and 3 in their tables.
        assert_eq!(address("thermal-care-accuchiller", "high_supply_temp_alarm"), 13);
        assert_eq!(address("thermal-care-accuchiller", "supply_temp"), 3);
    }
}
