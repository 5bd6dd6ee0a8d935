//! Device profiles: register maps of real chiller controllers, kept as data files. The built-in
//! ones live under `gateway/profiles/` and are compiled into the binary; a site adds its own in
//! the same format, and a profile may `extends` another to correct a few points of it (remove,
//! replace or add points and interlocks) while keeping the rest and its controller family, whose
//! domain pack (the server's rules) then still applies.

use std::path::Path;

use serde::Deserialize;

use crate::points::{ConfigError, InterlockFile, PointConfig, PointFile, check_point, invalid};

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
    /// A built-in profile, or a site profile listed earlier in `profile_files`, whose points,
    /// local-mode point and interlocks this one starts from.
    extends: Option<String>,
    /// Number of the first register in this file's addresses (1 for Modicon-style lists).
    addressing_base: u16,
    #[serde(default)]
    remove_points: Vec<String>,
    #[serde(default)]
    points: Vec<PointFile>,
    #[serde(default)]
    remove_interlocks: Vec<InterlockRef>,
    #[serde(default)]
    interlocks: Vec<InterlockFile>,
    local_mode_point: Option<String>,
    without_local_mode: Option<bool>,
    /// How `chillcloud-gateway scan` recognises the controller.
    identify: Option<Identify>,
}

/// How a commissioning scan recognises a controller: by what it reports to Modbus Read Device
/// Identification (function 43/14) where it supports it, else by points that read plausible
/// values where this profile has them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identify {
    /// Text found (ignoring case) in the vendor name the controller reports (object 0).
    pub vendor_name: Option<String>,
    /// Text found (ignoring case) in the product code it reports (object 1).
    pub product_code: Option<String>,
    /// Points that read, each within its range, mark this controller; not all zero, since a
    /// register map of zeros proves nothing.
    #[serde(default)]
    pub points: Vec<IdentifyingPoint>,
}

/// A point of the profile and the values it plausibly reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifyingPoint {
    /// The profile point's name.
    pub name: String,
    /// Lowest plausible engineering value.
    pub min: f64,
    /// Highest plausible engineering value.
    pub max: f64,
}

/// What a profile or a device changes in the profile it starts from.
#[derive(Default)]
pub(crate) struct Edits {
    /// Points the controller does not have (by name).
    pub(crate) remove_points: Vec<String>,
    /// Points added; one with an existing point's name replaces it.
    pub(crate) points: Vec<PointFile>,
    /// Interlocks removed, each named by the point it guards and the point it reads.
    pub(crate) remove_interlocks: Vec<InterlockRef>,
    /// Interlocks added.
    pub(crate) interlocks: Vec<InterlockFile>,
    /// The point that reads non-zero while the controller is in local control.
    pub(crate) local_mode_point: Option<String>,
    /// The controller reports no local/remote state.
    pub(crate) without_local_mode: Option<bool>,
}

/// Names an interlock to remove: the point it guards and the point it reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InterlockRef {
    point: String,
    requires: String,
}

/// A device profile with its addresses resolved.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// The profile's name.
    pub name: String,
    /// The built-in profile it derives from (its own name for a built-in one, empty for a site
    /// profile that extends none): the controller family whose domain pack applies.
    pub family: String,
    /// Its points, with zero-based addresses.
    pub points: Vec<PointConfig>,
    /// The point that reads non-zero while the controller is in local control; checked, like
    /// the interlocks, when a device uses the profile (a site may override points).
    pub(crate) local_mode_point: Option<String>,
    /// The controller reports no local/remote state.
    pub(crate) without_local_mode: bool,
    /// Conditions remote writes need, each with the field it came from (for messages).
    pub(crate) interlocks: Vec<(String, InterlockFile)>,
    /// How a scan recognises the controller (not inherited: a profile that extends another
    /// describes a controller that differs from it).
    pub identify: Option<Identify>,
}

impl Profile {
    /// Applies `edits` (from a profile that extends this one, or a device's own settings),
    /// their addresses counted from `base`; errors name fields under `field`.
    pub(crate) fn edit(&mut self, edits: Edits, base: u16, field: &str) -> Result<(), ConfigError> {
        // `devices[0]` + `points[1]` is `devices[0].points[1]`; `file.toml:` + it, `file.toml: points[1]`.
        let at =
            |rest: String| if field.ends_with(':') { format!("{field} {rest}") } else { format!("{field}.{rest}") };
        for (i, name) in edits.remove_points.iter().enumerate() {
            let at = self.points.iter().position(|p| &p.name == name).ok_or_else(|| {
                invalid(at(format!("remove_points[{i}]")), format!("there is no point {name:?} to remove"))
            })?;
            self.points.remove(at);
        }
        for (i, gone) in edits.remove_interlocks.iter().enumerate() {
            let before = self.interlocks.len();
            self.interlocks.retain(|(_, lock)| !(lock.point == gone.point && lock.requires == gone.requires));
            if self.interlocks.len() == before {
                return Err(invalid(
                    at(format!("remove_interlocks[{i}]")),
                    format!("there is no interlock on {:?} that reads {:?}", gone.point, gone.requires),
                ));
            }
        }
        for (i, point) in edits.points.into_iter().enumerate() {
            let point = check_point(point, base, &at(format!("points[{i}]")))?;
            match self.points.iter_mut().find(|p| p.name == point.name) {
                Some(existing) => *existing = point,
                None => self.points.push(point),
            }
        }
        let label = |i| at(format!("interlocks[{i}]"));
        self.interlocks.extend(edits.interlocks.into_iter().enumerate().map(|(i, lock)| (label(i), lock)));
        match (edits.local_mode_point, edits.without_local_mode) {
            (Some(_), Some(true)) => {
                return Err(invalid(
                    at("without_local_mode".into()),
                    "set either local_mode_point or without_local_mode = true, not both",
                ));
            }
            (Some(point), _) => (self.local_mode_point, self.without_local_mode) = (Some(point), false),
            (None, Some(true)) => (self.local_mode_point, self.without_local_mode) = (None, true),
            (None, Some(false)) => self.without_local_mode = false,
            (None, None) => {}
        }
        Ok(())
    }
}

/// Loads a built-in profile by name.
pub fn builtin(name: &str) -> Option<Profile> {
    let text = source(name)?;
    // The built-in files are checked by this crate's tests, so a failure here is a build defect.
    Some(parse(text, Path::new(name), &[], true).unwrap_or_else(|e| panic!("built-in profile {name} is invalid: {e}")))
}

/// Loads a site's own profile from a data file in the built-in profiles' format; it may extend
/// a built-in profile or one of `earlier`.
pub fn load(path: &Path, earlier: &[Profile]) -> Result<Profile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(&text, path, earlier, false)
}

/// The profile named `name`: one of the site's `own`, else a built-in one.
pub fn find(name: &str, own: &[Profile]) -> Option<Profile> {
    own.iter().find(|p| p.name == name).cloned().or_else(|| builtin(name))
}

/// The names a configuration may use: the built-in profiles and the site's `own`.
pub fn known(own: &[Profile]) -> String {
    let mut names: Vec<&str> = NAMES.to_vec();
    names.extend(own.iter().map(|p| p.name.as_str()));
    names.join(", ")
}

fn parse(text: &str, path: &Path, earlier: &[Profile], builtin: bool) -> Result<Profile, ConfigError> {
    let file: ProfileFile =
        toml::from_str(text).map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
    let field = format!("{}:", path.display());
    let mut profile = match &file.extends {
        Some(base) => {
            let mut base = find(base, earlier).ok_or_else(|| {
                invalid(
                    format!("{field} extends"),
                    format!(
                        "unknown profile {base:?}; it may extend {} (site profiles listed before it)",
                        known(earlier)
                    ),
                )
            })?;
            base.name = file.name.clone();
            base
        }
        None => Profile {
            name: file.name.clone(),
            family: String::new(),
            points: Vec::new(),
            local_mode_point: None,
            without_local_mode: false,
            interlocks: Vec::new(),
            identify: None,
        },
    };
    if !builtin && (NAMES.contains(&file.name.as_str()) || earlier.iter().any(|p| p.name == file.name)) {
        return Err(invalid(
            format!("{field} name"),
            format!(
                "profile name {:?} is already taken: give yours another name, with `extends = {:?}` to keep that \
                 profile's points and domain pack",
                file.name, file.name
            ),
        ));
    }
    if builtin {
        profile.family = file.name.clone();
    }
    let edits = Edits {
        remove_points: file.remove_points,
        points: file.points,
        remove_interlocks: file.remove_interlocks,
        interlocks: file.interlocks,
        local_mode_point: file.local_mode_point,
        without_local_mode: file.without_local_mode,
    };
    profile.edit(edits, file.addressing_base, &field)?;
    profile.identify = file.identify;
    if let Some(identify) = &profile.identify {
        for (i, point) in identify.points.iter().enumerate() {
            let at = format!("{field} identify.points[{i}]");
            if !profile.points.iter().any(|p| p.name == point.name) {
                return Err(invalid(at, format!("the profile has no point {:?}", point.name)));
            }
            if point.min.partial_cmp(&point.max) != Some(std::cmp::Ordering::Less) {
                return Err(invalid(at, "min must be less than max"));
            }
        }
    }
    Ok(profile)
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
