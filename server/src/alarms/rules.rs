//! Rules and derived values as data.
//!
//! Defaults ship per gateway profile in `server/rules/<profile>.toml` (the chiller domain pack),
//! beside `common.toml` for every unit and `site.toml` for every gateway. A site (gateway) and a
//! unit may override a rule, in that order, with a JSON patch of its fields stored in
//! `alarm_rules`; a patch of `null` disables the rule there, and a patch with a new key adds a
//! rule. The merged result is checked like a shipped file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::ToSchema;

use super::expr::Expr;

message_error! {
    /// Why a rule, a derived value or a capture setting is refused: for people, naming the field.
    pub struct InvalidRule;
}

/// One rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Rule {
    /// Identifies the rule within a unit's rule set; alarms name their rule by it.
    pub key: String,
    /// What the alarm says, in English.
    pub title: String,
    /// What the alarm says, in Chinese.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title_zh: String,
    /// Grade 1 (critical) to 4 (warning), as in the service table.
    pub grade: u8,
    /// Seconds the rule's `while` must have held before the rule is evaluated: a start pulls a
    /// warm loop down, loads the compressor and moves every temperature, so rules about steady
    /// running wait this long after one. A server that starts with the gate already true counts
    /// it as settled (a restart must not silence an alarm).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub settle_s: f64,
    /// What raises it.
    #[serde(flatten)]
    pub kind: RuleKind,
}

/// How a rule decides.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleKind {
    /// Raised once `when` has held for `on_delay_s`; cleared once it has failed for
    /// `off_delay_s`. With `hysteresis`, a top-level comparison must fail by that margin.
    Condition {
        /// The alarm condition.
        when: String,
        /// Only evaluated while this holds (for example `running`); false clears.
        #[serde(rename = "while", default, skip_serializing_if = "Option::is_none")]
        gate: Option<String>,
        /// How long the condition must hold before the alarm is raised.
        #[serde(default)]
        on_delay_s: f64,
        /// How long it must have failed before the alarm clears.
        #[serde(default)]
        off_delay_s: f64,
        /// Margin by which a comparison must fail to clear.
        #[serde(default)]
        hysteresis: f64,
    },
    /// Raised when `of` has risen by more than `rise` within `window_s`; cleared when the rise
    /// over the window is back under half of that.
    Rate {
        /// The value watched.
        of: String,
        /// The rise that raises the alarm.
        rise: f64,
        /// The window, seconds.
        window_s: f64,
        /// Only evaluated while this holds.
        #[serde(rename = "while", default, skip_serializing_if = "Option::is_none")]
        gate: Option<String>,
    },
    /// Raised when `point` has not moved by more than `tolerance` for `for_s` while the gate
    /// holds: a frozen sensor.
    Stuck {
        /// The point watched.
        point: String,
        /// How long unchanged, seconds.
        for_s: f64,
        /// Changes up to this size do not count as movement.
        #[serde(default)]
        tolerance: f64,
        /// Only counted while this holds.
        #[serde(rename = "while", default, skip_serializing_if = "Option::is_none")]
        gate: Option<String>,
    },
    /// Raised while `point` (a controller's alarm or diagnostic code) is not 0; the code is
    /// looked up in `codes` for its text and grade, else the rule's own.
    Code {
        /// The code point.
        point: String,
        /// Text and grade by code.
        #[serde(default)]
        codes: BTreeMap<String, CodeInfo>,
    },
    /// The unit sends no good reading while its gateway is online: raised at the first level's
    /// age, the grade rising with each later level.
    DeviceOffline {
        /// `[seconds, grade]`, ascending.
        #[schema(value_type = Vec<Vec<f64>>)]
        levels: Vec<(f64, u8)>,
    },
    /// The gateway is offline (its death message, or silent for `silence_s`): one alarm for the
    /// site, graded by the outage's length like [`RuleKind::DeviceOffline`].
    GatewayOffline {
        /// Silence after which a gateway without a death message counts as offline, seconds.
        silence_s: f64,
        /// `[seconds, grade]`, ascending.
        #[schema(value_type = Vec<Vec<f64>>)]
        levels: Vec<(f64, u8)>,
    },
}

/// The meaning of one controller code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeInfo {
    /// What the code means.
    pub text: String,
    /// Its grade.
    pub grade: u8,
}

/// A value computed from a unit's points, stored as a point of its own (so charts show it) and
/// usable by rules under its name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Derived {
    /// The derived point's name.
    pub name: String,
    /// Its unit of measure.
    #[serde(default)]
    pub unit: String,
    /// Decimals kept; a new value is stored when the rounded value changes.
    #[serde(default = "one")]
    pub decimals: i32,
    /// A formula over points and earlier derived values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
    /// Or: a counter whose increase over the last `window_s` is the value (starts per hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increase_of: Option<String>,
    /// Or: a value whose trend over the last `window_s` is the value, in its unit per minute
    /// (least squares; known once the samples span 10 s, or half the window if shorter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend_of: Option<String>,
    /// The window of `increase_of` or `trend_of`, seconds.
    #[serde(default = "hour")]
    pub window_s: f64,
}

fn one() -> i32 {
    1
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

fn hour() -> f64 {
    3600.0
}

/// What is recorded around an alarm's moment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureSettings {
    /// Seconds before the alarm.
    pub before_s: f64,
    /// Seconds after it.
    pub after_s: f64,
    /// The gateway polls the unit at this interval for `after_s` (0: no boost).
    pub boost_interval_ms: u32,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self { before_s: 600.0, after_s: 120.0, boost_interval_ms: 200 }
    }
}

/// A rule file: `server/rules/*.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Fault-moment capture, if the file sets it.
    #[serde(default)]
    pub capture: Option<CaptureSettings>,
    /// Derived values.
    #[serde(default)]
    pub derived: Vec<Derived>,
    /// Rules, as JSON objects so patches can be merged field by field before they are checked.
    #[serde(default)]
    pub rules: Vec<Json>,
}

const COMMON: &str = include_str!("../../rules/common.toml");
const SITE: &str = include_str!("../../rules/site.toml");
const PROFILES: [(&str, &str); 3] = [
    ("trane-ch530", include_str!("../../rules/trane-ch530.toml")),
    ("daikin-microtech3", include_str!("../../rules/daikin-microtech3.toml")),
    ("thermal-care-accuchiller", include_str!("../../rules/thermal-care-accuchiller.toml")),
];

fn parse_file(name: &str, text: &str) -> RuleFile {
    // The shipped files are checked by a unit test; a broken one cannot be built into a release.
    toml::from_str(text).unwrap_or_else(|e| panic!("rules/{name}.toml: {e}"))
}

/// The shipped defaults for a unit of `profile`: the profile's derived values first (the common
/// formulas build on them), the common rules first.
pub fn unit_defaults(profile: &str) -> RuleFile {
    let mut file = parse_file("common", COMMON);
    if let Some((name, text)) = PROFILES.iter().find(|(name, _)| *name == profile) {
        let specific = parse_file(name, text);
        file.capture = specific.capture.or(file.capture);
        file.derived.splice(0..0, specific.derived);
        file.rules.extend(specific.rules);
    }
    file
}

/// The shipped defaults for every gateway (site).
pub fn site_defaults() -> RuleFile {
    parse_file("site", SITE)
}

/// Whether `key` names one of the site's own rules (which a site override patches there, not in
/// its units' rules).
pub fn is_site_rule(key: &str) -> bool {
    site_defaults().rules.iter().any(|r| r.get("key").and_then(Json::as_str) == Some(key))
}

/// Names of the profiles that ship a domain pack.
pub fn profiles() -> impl Iterator<Item = &'static str> {
    PROFILES.iter().map(|(name, _)| *name)
}

/// Checks one rule, refusing fields no rule kind has (so a typo is not silently ignored).
pub fn parse_rule(value: &Json) -> Result<Rule, InvalidRule> {
    let rule: Rule = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let known = serde_json::to_value(&rule).map_err(|e| e.to_string())?;
    if let (Some(given), Some(known)) = (value.as_object(), known.as_object()) {
        let optional =
            ["title_zh", "while", "on_delay_s", "off_delay_s", "hysteresis", "tolerance", "codes", "settle_s"];
        if let Some(unknown) = given.keys().find(|k| !known.contains_key(*k) && !optional.contains(&k.as_str())) {
            return Err(format!("rule {:?}: unknown field {unknown:?}", rule.key).into());
        }
    }
    check_rule(&rule).map_err(|e| format!("rule {:?}: {e}", rule.key))?;
    Ok(rule)
}

fn check_rule(rule: &Rule) -> Result<(), InvalidRule> {
    if !(1..=4).contains(&rule.grade) {
        return Err(format!("grade {} is not 1 to 4", rule.grade).into());
    }
    if rule.key.is_empty() || !rule.key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err("a key is letters, digits, '_' and '-'".into());
    }
    // Durations up to 30 days: beyond, milliseconds arithmetic would overflow.
    const MAX_S: f64 = 30.0 * 86_400.0;
    let non_negative = |name: &str, value: f64| -> Result<(), InvalidRule> {
        if value.is_finite() && (0.0..=MAX_S).contains(&value) {
            Ok(())
        } else {
            Err(format!("{name} must be 0 to {MAX_S} s").into())
        }
    };
    non_negative("settle_s", rule.settle_s)?;
    let check_levels = |levels: &[(f64, u8)]| -> Result<(), InvalidRule> {
        if levels.is_empty() {
            return Err("levels must not be empty".into());
        }
        if levels.windows(2).any(|w| w[1].0 <= w[0].0) || levels.iter().any(|(s, g)| *s <= 0.0 || !(1..=4).contains(g))
        {
            return Err("levels are [seconds > 0, grade 1 to 4], ascending in seconds".into());
        }
        Ok(())
    };
    match &rule.kind {
        RuleKind::Condition { when, gate, on_delay_s, off_delay_s, hysteresis } => {
            Expr::parse(when).map_err(|e| e.to_string())?;
            if let Some(gate) = gate {
                Expr::parse(gate).map_err(|e| e.to_string())?;
            }
            non_negative("on_delay_s", *on_delay_s)?;
            non_negative("off_delay_s", *off_delay_s)?;
            non_negative("hysteresis", *hysteresis)?;
        }
        RuleKind::Rate { of, rise, window_s, gate } => {
            Expr::parse(of).map_err(|e| e.to_string())?;
            if let Some(gate) = gate {
                Expr::parse(gate).map_err(|e| e.to_string())?;
            }
            if !(rise.is_finite() && *rise > 0.0 && window_s.is_finite() && *window_s > 0.0 && *window_s <= MAX_S) {
                return Err("rise must be more than 0, window_s more than 0 and at most 30 days".into());
            }
        }
        RuleKind::Stuck { for_s, tolerance, gate, .. } => {
            if let Some(gate) = gate {
                Expr::parse(gate).map_err(|e| e.to_string())?;
            }
            non_negative("tolerance", *tolerance)?;
            if !(for_s.is_finite() && *for_s > 0.0 && *for_s <= MAX_S) {
                return Err("for_s must be more than 0 and at most 30 days".into());
            }
        }
        RuleKind::Code { codes, .. } => {
            if let Some((code, _)) =
                codes.iter().find(|(code, info)| code.parse::<i64>().is_err() || !(1..=4).contains(&info.grade))
            {
                return Err(format!("code {code:?}: codes are integers with grades 1 to 4").into());
            }
        }
        RuleKind::DeviceOffline { levels } => check_levels(levels)?,
        RuleKind::GatewayOffline { silence_s, levels } => {
            check_levels(levels)?;
            if !(silence_s.is_finite() && *silence_s > 0.0 && *silence_s <= MAX_S) {
                return Err("silence_s must be more than 0 and at most 30 days".into());
            }
        }
    }
    Ok(())
}

/// Applies an override: `null` removes the rule, an object's fields replace the default's
/// (a new key adds a rule). Returns the merged rule list.
pub fn apply_override(rules: &mut Vec<Json>, key: &str, patch: &Json) {
    let position = rules.iter().position(|r| r.get("key").and_then(Json::as_str) == Some(key));
    match (position, patch) {
        (Some(at), Json::Null) => {
            rules.remove(at);
        }
        // A patch that changes the kind replaces the rule: the old kind's fields mean nothing to
        // the new one.
        (Some(at), Json::Object(fields)) if fields.get("kind").is_some_and(|k| Some(k) != rules[at].get("kind")) => {
            let mut rule = fields.clone();
            rule.insert("key".into(), Json::String(key.to_owned()));
            rules[at] = Json::Object(rule);
        }
        (Some(at), Json::Object(fields)) => {
            if let Some(existing) = rules[at].as_object_mut() {
                for (name, value) in fields {
                    existing.insert(name.clone(), value.clone());
                }
                existing.insert("key".into(), Json::String(key.to_owned()));
            }
        }
        (None, Json::Object(fields)) => {
            let mut rule = fields.clone();
            rule.insert("key".into(), Json::String(key.to_owned()));
            rules.push(Json::Object(rule));
        }
        _ => {}
    }
}

/// The override key that sets the fault-moment capture instead of a rule.
pub const CAPTURE_KEY: &str = "capture";

/// Applies a patch to capture settings; fields it does not set, or sets wrongly, stay as they
/// were (the API checks patches with [`check_capture_patch`] first).
pub fn patch_capture(settings: CaptureSettings, patch: &Json) -> CaptureSettings {
    let mut merged = serde_json::to_value(settings).unwrap_or(Json::Null);
    if let (Some(merged), Some(patch)) = (merged.as_object_mut(), patch.as_object()) {
        merged.extend(patch.clone());
    }
    serde_json::from_value(merged).unwrap_or(settings)
}

/// Checks a capture patch: known fields, windows of 0 to 3,600 s, a boost of 0 (none) or
/// 100 ms and more.
pub fn check_capture_patch(patch: &Json) -> Result<(), InvalidRule> {
    let mut merged = serde_json::to_value(CaptureSettings::default()).map_err(|e| e.to_string())?;
    match (merged.as_object_mut(), patch.as_object()) {
        (Some(merged), Some(patch)) => merged.extend(patch.clone()),
        _ => return Err("send an object with before_s, after_s and/or boost_interval_ms".into()),
    }
    let settings: CaptureSettings = serde_json::from_value(merged).map_err(|e| format!("capture: {e}"))?;
    let window = 0.0..=3600.0;
    if !window.contains(&settings.before_s) || !window.contains(&settings.after_s) {
        return Err("capture: before_s and after_s are 0 to 3600".into());
    }
    if (1..100).contains(&settings.boost_interval_ms) {
        return Err("capture: boost_interval_ms is 0 (no boost) or at least 100".into());
    }
    Ok(())
}

/// Checks a derived value definition.
pub fn check_derived(derived: &Derived) -> Result<(), InvalidRule> {
    if !chillcloud_proto::is_plain_name(&derived.name) || derived.unit.chars().count() > 16 {
        return Err(format!(
            "derived {:?}: a name is 1 to 64 letters, digits, '-' or '_', a unit at most 16 characters",
            derived.name
        )
        .into());
    }
    if !(0..=6).contains(&derived.decimals) {
        return Err(format!("derived {:?}: decimals are 0 to 6", derived.name).into());
    }
    let window = derived.window_s > 0.0 && derived.window_s <= 30.0 * 86_400.0;
    match (&derived.formula, &derived.increase_of, &derived.trend_of) {
        (Some(formula), None, None) => Expr::parse(formula).map(|_| ()).map_err(|e| InvalidRule(e.to_string())),
        (None, Some(_), None) | (None, None, Some(_)) if window => Ok(()),
        _ => Err(format!(
            "derived {:?}: give one of formula, increase_of or trend_of (the last two with window_s > 0 and at most 30 days)",
            derived.name
        ).into()),
    }
}

/// The override key prefix that adds, changes or (with `null`) removes a derived value instead
/// of a rule: `derived:<name>`.
pub const DERIVED_PREFIX: &str = "derived:";

/// Applies a derived-value override (`name` without its prefix): `null` removes it, an object's
/// fields replace the shipped definition's (a new name adds one, computed after the others). The
/// API checks patches with [`check_derived_patch`] first; one that does not give a definition is
/// left out.
pub fn apply_derived_override(derived: &mut Vec<Derived>, name: &str, patch: &Json) {
    let position = derived.iter().position(|d| d.name == name);
    match (position, patch) {
        (Some(at), Json::Null) => {
            derived.remove(at);
        }
        (position, Json::Object(_)) => match (position, patched_derived(derived, name, patch)) {
            (Some(at), Ok(definition)) => derived[at] = definition,
            (None, Ok(definition)) => derived.push(definition),
            (_, Err(_)) => {}
        },
        _ => {}
    }
}

/// Checks a derived-value override the way [`apply_derived_override`] applies it.
pub fn check_derived_patch(derived: &[Derived], name: &str, patch: &Json) -> Result<(), InvalidRule> {
    match patch {
        Json::Null if derived.iter().any(|d| d.name == name) => Ok(()),
        Json::Null => Err(format!("there is no derived value {name:?} to remove").into()),
        Json::Object(_) => check_derived(&patched_derived(derived, name, patch)?),
        _ => Err("send an object of derived-value fields, or null to remove it".into()),
    }
}

/// The definition of `name` with the object `patch`'s fields over it (over nothing, when new).
fn patched_derived(derived: &[Derived], name: &str, patch: &Json) -> Result<Derived, InvalidRule> {
    let existing = derived.iter().find(|d| d.name == name);
    let mut merged =
        existing.and_then(|d| serde_json::to_value(d).ok()).unwrap_or_else(|| Json::Object(Default::default()));
    if let (Some(merged), Some(fields)) = (merged.as_object_mut(), patch.as_object()) {
        merged.extend(fields.clone());
        merged.insert("name".into(), Json::String(name.to_owned()));
    }
    serde_json::from_value(merged).map_err(|e| InvalidRule(format!("derived {name:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_rule_file_is_valid() {
        let mut files = vec![("site", site_defaults())];
        files.extend(profiles().map(|p| (p, unit_defaults(p))));
        for (name, file) in files {
            assert!(!file.rules.is_empty(), "{name} has no rules");
            for rule in &file.rules {
                parse_rule(rule).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            for derived in &file.derived {
                check_derived(derived).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }

    #[test]
    fn a_typo_in_a_rule_is_refused() {
        let rule = serde_json::json!({"key": "x", "title": "X", "grade": 2, "kind": "condition", "when": "a > 1", "on_dealy_s": 5});
        let error = parse_rule(&rule).expect_err("an error");
        assert!(error.contains("on_dealy_s"), "{error}");
        let bad_grade = serde_json::json!({"key": "x", "title": "X", "grade": 7, "kind": "condition", "when": "a > 1"});
        assert!(parse_rule(&bad_grade).expect_err("an error").contains("grade"));
        let bad_expr = serde_json::json!({"key": "x", "title": "X", "grade": 2, "kind": "condition", "when": "a >"});
        assert!(parse_rule(&bad_expr).is_err());
    }

    #[test]
    fn overrides_patch_fields_disable_rules_and_add_new_ones() {
        let mut rules = vec![
            serde_json::json!({"key": "a", "title": "A", "grade": 2, "kind": "condition", "when": "x > 1", "on_delay_s": 60}),
        ];
        apply_override(&mut rules, "a", &serde_json::json!({"on_delay_s": 5}));
        assert_eq!(
            parse_rule(&rules[0]).expect("valid").kind,
            RuleKind::Condition {
                when: "x > 1".into(),
                gate: None,
                on_delay_s: 5.0,
                off_delay_s: 0.0,
                hysteresis: 0.0
            }
        );
        apply_override(
            &mut rules,
            "b",
            &serde_json::json!({"title": "B", "grade": 3, "kind": "stuck", "point": "x", "for_s": 60}),
        );
        assert_eq!(rules.len(), 2);
        apply_override(&mut rules, "a", &Json::Null);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["key"], "b");
    }
}
