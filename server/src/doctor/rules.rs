//! The doctor's rules as data: `server/doctor/findings.toml`, its energy relationship, the points
//! each domain pack names what the doctor reads, and the findings.

use std::{collections::BTreeMap, sync::LazyLock};

use serde::{Deserialize, Serialize};

use super::analysis::Input;

const SHIPPED: &str = include_str!("../../doctor/findings.toml");

/// The whole rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoctorRules {
    /// How energy is estimated and priced.
    pub energy: EnergyRules,
    /// Per domain pack (profile family): which point carries each input.
    pub inputs: BTreeMap<String, BTreeMap<Input, String>>,
    /// The findings, in the order a report lists them.
    pub findings: Vec<FindingRule>,
}

/// The energy relationship and the default tariff.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyRules {
    /// Bounds on the share of compressor power a kelvin of lift costs, %.
    pub percent_per_k_min: f64,
    /// See `percent_per_k_min`.
    pub percent_per_k_max: f64,
    /// Price of a kWh until the service organisation or the site sets one.
    pub default_tariff_per_kwh: f64,
    /// Its currency (ISO 4217).
    pub currency: String,
}

impl EnergyRules {
    /// The share of compressor power one kelvin of lift costs at `lift_k`: 1/lift (Carnot),
    /// within the file's bounds.
    pub fn per_kelvin(&self, lift_k: f64) -> f64 {
        (1.0 / lift_k).clamp(self.percent_per_k_min / 100.0, self.percent_per_k_max / 100.0)
    }
}

/// One finding: what it says and how it decides.
#[derive(Debug, Clone, Deserialize)]
pub struct FindingRule {
    /// Identifies the finding in reports and overrides.
    pub key: String,
    /// Its title, in English and Chinese.
    pub title: String,
    /// See `title`.
    pub title_zh: String,
    /// What to do.
    pub advice: String,
    /// See `advice`.
    pub advice_zh: String,
    /// The relationship its figures rest on.
    pub reference: String,
    /// See `reference`.
    pub reference_zh: String,
    /// How it decides.
    #[serde(flatten)]
    pub check: Check,
}

/// How a finding decides, with its thresholds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Check {
    /// An approach rising at steady load: fitted against load and time over steady hours.
    ApproachTrend {
        /// `cond_approach` or `evap_approach`.
        input: Input,
        /// Rise over the data considered, K.
        min_rise_k: f64,
        /// Days with steady hours needed.
        min_days: u32,
        /// How far back the trend looks from the end of the report's period.
        lookback_days: u32,
    },
    /// The supply held colder than the load needs.
    SetpointReset {
        /// The supply the plant is designed for, °C.
        design_supply_c: f64,
        /// Smallest raise worth suggesting, K.
        min_raise_k: f64,
        /// Largest raise suggested at once, K.
        max_raise_k: f64,
        /// The load's 90th percentile over steady hours must stay below this, %.
        max_load_p90_pct: f64,
        /// The supply must hold its setpoint: mean |deviation| of steady hours, K.
        max_mean_deviation_k: f64,
        /// Steady hours in the period needed.
        min_steady_hours: u32,
    },
    /// Chilled-water ΔT well below design at high load.
    LowDeltaT {
        /// Design ΔT, K.
        design_delta_t_k: f64,
        /// Below this fraction of design is low.
        min_fraction: f64,
        /// Hours at or above this load count, %.
        high_load_pct: f64,
        /// How many such hours are needed.
        min_hours: u32,
    },
    /// Hours with too many starts.
    ShortCycling {
        /// Starts in an hour beyond which the hour counts.
        max_starts_per_hour: f64,
        /// Hours needed.
        min_hours: u32,
    },
    /// Most running hours at low load.
    Oversized {
        /// Low load, %.
        low_load_pct: f64,
        /// Share of running hours at low load beyond which it is a finding.
        max_share: f64,
        /// Running hours needed.
        min_running_hours: u32,
    },
    /// The offset between two sensors that agree while stopped, moving.
    SensorDrift {
        /// The two inputs.
        first: Input,
        /// See `first`.
        second: Input,
        /// Change of the offset over the data considered, K.
        max_change_k: f64,
        /// Stopped hours needed.
        min_hours: u32,
        /// How far back it looks.
        lookback_days: u32,
    },
}

impl Check {
    /// Days of history before the period this check reads.
    pub fn lookback_days(&self) -> u32 {
        match self {
            Check::ApproachTrend { lookback_days, .. } | Check::SensorDrift { lookback_days, .. } => *lookback_days,
            _ => 0,
        }
    }
}

impl DoctorRules {
    /// The shipped rules.
    pub fn shipped() -> &'static Self {
        static SHIPPED_RULES: LazyLock<DoctorRules> =
            LazyLock::new(|| toml::from_str(SHIPPED).expect("server/doctor/findings.toml is checked by a unit test"));
        &SHIPPED_RULES
    }

    /// Which point carries each input for a unit of `family`: the pack's own names, then the
    /// names every pack shares.
    pub fn point_names(&self, family: &str) -> BTreeMap<Input, String> {
        let mut names: BTreeMap<Input, String> =
            Input::ALL.iter().filter_map(|i| Some((*i, i.common_name()?.to_owned()))).collect();
        if let Some(own) = self.inputs.get(family) {
            names.extend(own.iter().map(|(i, n)| (*i, n.clone())));
        }
        names
    }

    /// The longest history any finding reads before a period, days.
    pub fn lookback_days(&self) -> u32 {
        self.findings.iter().map(|f| f.check.lookback_days()).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_parse_and_name_every_input_they_read() {
        let rules = DoctorRules::shipped();
        assert_eq!(rules.findings.len(), 7);
        let trane = rules.point_names("trane-ch530");
        assert_eq!(trane[&Input::LoadPct], "capacity_rla");
        assert_eq!(trane[&Input::CondApproach], "cond_approach");
        assert!(rules.point_names("unknown-family").contains_key(&Input::DeltaT));
        assert_eq!(rules.lookback_days(), 90);
        // 1/lift, bounded.
        assert!((rules.energy.per_kelvin(30.0) - 1.0 / 30.0).abs() < 1e-12);
        assert_eq!(rules.energy.per_kelvin(10.0), 0.04);
        assert_eq!(rules.energy.per_kelvin(100.0), 0.02);
    }
}
