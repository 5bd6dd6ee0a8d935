//! The doctor's analysis as pure functions of a unit's hours: the report's figures ([`Kpis`]) and
//! its [`Finding`]s. No clock, no database: the tests replay months of a simulated unit through it.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rules::{Check, DoctorRules, FindingRule};

/// What the doctor reads of a unit, whatever its controller calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// 1 while the compressor runs.
    Running,
    /// Compressor current (%RLA) or capacity, %.
    LoadPct,
    /// Chilled-water supply (evaporator leaving), °C.
    Supply,
    /// Chilled-water return (evaporator entering), °C.
    Return,
    /// Active chilled-water setpoint, °C.
    Setpoint,
    /// Supply minus setpoint, K.
    SupplyDeviation,
    /// Return minus supply, K.
    DeltaT,
    /// Supply minus evaporator saturation, K.
    EvapApproach,
    /// Condenser saturation minus condenser leaving water, K.
    CondApproach,
    /// Evaporator saturation temperature, °C.
    EvapSat,
    /// Condenser saturation temperature, °C.
    CondSat,
    /// Condenser leaving water, °C.
    CondLeaving,
    /// Metered unit power, kW.
    PowerKw,
    /// Cooling delivered from a metered flow, kW.
    CoolingKw,
    /// Compressor starts counter.
    Starts,
}

/// How many inputs there are.
pub const INPUTS: usize = 15;

impl Input {
    /// Every input, in index order.
    pub const ALL: [Input; INPUTS] = [
        Input::Running,
        Input::LoadPct,
        Input::Supply,
        Input::Return,
        Input::Setpoint,
        Input::SupplyDeviation,
        Input::DeltaT,
        Input::EvapApproach,
        Input::CondApproach,
        Input::EvapSat,
        Input::CondSat,
        Input::CondLeaving,
        Input::PowerKw,
        Input::CoolingKw,
        Input::Starts,
    ];

    /// The point carrying it in every domain pack (derived values and metered figures).
    pub fn common_name(self) -> Option<&'static str> {
        Some(match self {
            Input::SupplyDeviation => "supply_deviation",
            Input::DeltaT => "chw_delta_t",
            Input::EvapApproach => "evap_approach",
            Input::CondApproach => "cond_approach",
            Input::PowerKw => "unit_power_kw",
            Input::CoolingKw => "cooling_kw",
            _ => return None,
        })
    }

    /// Its engineering unit.
    pub fn unit(self) -> &'static str {
        match self {
            Input::Running => "",
            Input::LoadPct => "%",
            Input::Supply | Input::Return | Input::Setpoint | Input::EvapSat | Input::CondSat | Input::CondLeaving => {
                "°C"
            }
            Input::SupplyDeviation | Input::DeltaT | Input::EvapApproach | Input::CondApproach => "K",
            Input::PowerKw | Input::CoolingKw => "kW",
            Input::Starts => "",
        }
    }
}

/// One hour of a unit: each input's mean over the hour and its last value (for counters).
#[derive(Debug, Clone, PartialEq)]
pub struct Hour {
    /// The hour's start (UTC, whole hours).
    pub start: DateTime<Utc>,
    /// Mean of each input's readings, by [`Input`] index.
    pub mean: [Option<f64>; INPUTS],
    /// The newest reading of each input in the hour.
    pub last: [Option<f64>; INPUTS],
}

impl Hour {
    /// An hour with no readings.
    pub fn empty(start: DateTime<Utc>) -> Self {
        Self { start, mean: [None; INPUTS], last: [None; INPUTS] }
    }

    /// Computes the differences (ΔT, approaches, supply deviation) from the means of the
    /// temperatures they are differences of, where the hour has both: every raw point comes at
    /// least with each snapshot, while derived values are stored only when they change, so the
    /// plain means are the better time averages. Derived values stay where a pack lacks a side.
    pub fn complete(&mut self) {
        let differences = [
            (Input::DeltaT, Input::Return, Input::Supply),
            (Input::SupplyDeviation, Input::Supply, Input::Setpoint),
            (Input::EvapApproach, Input::Supply, Input::EvapSat),
            (Input::CondApproach, Input::CondSat, Input::CondLeaving),
        ];
        for (difference, minuend, subtrahend) in differences {
            if let (Some(a), Some(b)) = (self.get(minuend), self.get(subtrahend)) {
                self.mean[difference as usize] = Some(a - b);
            }
        }
    }

    /// The mean of `input` over the hour.
    pub fn get(&self, input: Input) -> Option<f64> {
        self.mean[input as usize]
    }

    /// The unit ran through the hour: what approaches, lift and compliance are judged on.
    pub fn steady(&self) -> bool {
        self.get(Input::Running).is_some_and(|r| r >= 0.95)
    }

    /// The compressor stood through the hour.
    pub fn stopped(&self) -> bool {
        self.get(Input::Running).is_some_and(|r| r <= 0.05)
    }

    /// Condensing minus evaporating saturation temperature, K.
    pub fn lift(&self) -> Option<f64> {
        Some(self.get(Input::CondSat)? - self.get(Input::EvapSat)?)
    }

    fn days_since(&self, origin: DateTime<Utc>) -> f64 {
        (self.start - origin).num_seconds() as f64 / 86_400.0
    }
}

/// What the report knows of the unit's size and its price of energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Assumptions {
    /// Cooling at full load, kW; needed to estimate cooling without a flow meter.
    pub rated_cooling_kw: Option<f64>,
    /// Compressor power at full load, kW; needed to estimate energy without a power meter.
    pub rated_power_kw: Option<f64>,
    /// Price of a kWh.
    pub tariff_per_kwh: f64,
    /// Its currency.
    pub currency: String,
    /// Where the tariff came from: `site`, `service` (the service organisation's default) or
    /// `default` (the doctor's file).
    pub tariff_source: String,
}

/// Energy of one hour, kWh, and whether it is estimated from %RLA.
fn energy_kwh(hour: &Hour, assumptions: &Assumptions) -> Option<(f64, bool)> {
    if let Some(power) = hour.get(Input::PowerKw) {
        return Some((power, false));
    }
    Some((assumptions.rated_power_kw? * hour.get(Input::LoadPct)? / 100.0, true))
}

/// Cooling of one hour, kWh, and whether it is estimated from %RLA.
fn cooling_kwh(hour: &Hour, assumptions: &Assumptions) -> Option<(f64, bool)> {
    if let Some(cooling) = hour.get(Input::CoolingKw) {
        return Some((cooling, false));
    }
    Some((assumptions.rated_cooling_kw? * hour.get(Input::LoadPct)? / 100.0, true))
}

/// Hours at load bands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadBand {
    /// From this load, %.
    pub from_pct: f64,
    /// Up to this load, %.
    pub to_pct: f64,
    /// Running hours at it.
    pub hours: f64,
}

/// Bands of the load profile, %.
const LOAD_BANDS: [(f64, f64); 5] = [(0.0, 30.0), (30.0, 50.0), (50.0, 70.0), (70.0, 90.0), (90.0, 200.0)];

/// A period's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Kpis {
    /// Hours in the period.
    pub hours: f64,
    /// Hours with readings.
    pub hours_with_data: u32,
    /// Hours the compressor ran.
    pub run_hours: f64,
    /// Compressor starts, from its counter.
    pub starts: Option<f64>,
    /// Running hours at each load band (by mean load of the hour).
    pub load_profile: Vec<LoadBand>,
    /// Electrical energy, kWh.
    pub energy_kwh: Option<f64>,
    /// Cooling delivered, kWh.
    pub cooling_kwh: Option<f64>,
    /// Whether the electricity is estimated from %RLA and the rated power rather than metered.
    pub energy_estimated: bool,
    /// Whether the cooling is estimated from %RLA and the rated cooling rather than metered.
    pub cooling_estimated: bool,
    /// kW per ton of cooling over the period, where power or cooling is metered.
    pub kw_per_ton: Option<f64>,
    /// Coefficient of performance over the period, where power or cooling is metered.
    pub cop: Option<f64>,
    /// Share of steady running hours whose supply was within 0.5 K of setpoint.
    pub setpoint_compliance: Option<f64>,
    /// Means over steady running hours.
    pub mean_setpoint_c: Option<f64>,
    /// See `mean_setpoint_c`.
    pub mean_load_pct: Option<f64>,
    /// See `mean_setpoint_c`.
    pub evap_approach_k: Option<f64>,
    /// See `mean_setpoint_c`.
    pub cond_approach_k: Option<f64>,
    /// See `mean_setpoint_c`.
    pub lift_k: Option<f64>,
    /// See `mean_setpoint_c`.
    pub delta_t_k: Option<f64>,
}

/// Mean of what `f` gives over `hours`, if any.
fn mean_of<'a>(hours: impl Iterator<Item = &'a Hour>, f: impl Fn(&Hour) -> Option<f64>) -> Option<f64> {
    let (sum, n) = hours.filter_map(f).fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

/// Starts counted hour by hour: the counter's last value in each hour against the hour just
/// before (`before` for the first), so that a gap's starts are never put into one hour (nor
/// starts from before the period into it); a counter reset by the controller counts nothing,
/// not minus millions. With the hour each was counted in.
fn starts_by_hour(hours: &[Hour], before: Option<f64>) -> Vec<(usize, f64)> {
    let mut previous = before;
    let mut starts = Vec::new();
    for (i, hour) in hours.iter().enumerate() {
        let count = hour.last[Input::Starts as usize];
        if let (Some(count), Some(previous)) = (count, previous) {
            starts.push((i, (count - previous).max(0.0)));
        }
        previous = count;
    }
    starts
}

/// The figures of `hours` (one per hour of the period, empty ones included); `before` is the
/// starts counter at the period's start, when known.
pub fn kpis(hours: &[Hour], before_starts: Option<f64>, assumptions: &Assumptions) -> Kpis {
    let with_data = || hours.iter().filter(|h| h.mean.iter().any(Option::is_some));
    let steady = || hours.iter().filter(|h| h.steady());
    let run_hours: f64 = hours.iter().filter_map(|h| h.get(Input::Running)).sum();
    let starts = starts_by_hour(hours, before_starts);
    let load_profile = LOAD_BANDS
        .iter()
        .map(|&(from_pct, to_pct)| LoadBand {
            from_pct,
            to_pct: to_pct.min(100.0),
            hours: hours
                .iter()
                .filter_map(|h| Some((h.get(Input::Running)?, h.get(Input::LoadPct)? / h.get(Input::Running)?)))
                .filter(|(running, load)| *running > 0.0 && (from_pct..to_pct).contains(load))
                .map(|(running, _)| running)
                .sum(),
        })
        .collect();
    let energy: Vec<(f64, bool)> = hours.iter().filter_map(|h| energy_kwh(h, assumptions)).collect();
    let cooling: Vec<(f64, bool)> = hours.iter().filter_map(|h| cooling_kwh(h, assumptions)).collect();
    let energy_kwh = (!energy.is_empty()).then(|| energy.iter().map(|e| e.0).sum::<f64>());
    let cooling_kwh = (!cooling.is_empty()).then(|| cooling.iter().map(|e| e.0).sum::<f64>());
    let compliant = steady().filter_map(|h| h.get(Input::SupplyDeviation)).map(|d| d.abs() <= 0.5);
    let (within, judged) = compliant.fold((0u32, 0u32), |(w, n), ok| (w + u32::from(ok), n + 1));
    // Both estimated from %RLA, their ratio would only restate the ratings: not shown.
    let both_estimated = energy.iter().all(|e| e.1) && cooling.iter().all(|e| e.1);
    let ratio = match (energy_kwh, cooling_kwh) {
        (Some(e), Some(c)) if e > 0.0 && c > 0.0 && !both_estimated => Some((e, c)),
        _ => None,
    };
    Kpis {
        hours: hours.len() as f64,
        hours_with_data: with_data().count() as u32,
        run_hours,
        starts: (!starts.is_empty()).then(|| starts.iter().map(|s| s.1).sum()),
        load_profile,
        energy_kwh,
        cooling_kwh,
        energy_estimated: energy.iter().any(|e| e.1),
        cooling_estimated: cooling.iter().any(|e| e.1),
        kw_per_ton: ratio.map(|(e, c)| e / (c / 3.517)),
        cop: ratio.map(|(e, c)| c / e),
        setpoint_compliance: (judged > 0).then(|| f64::from(within) / f64::from(judged)),
        mean_setpoint_c: mean_of(steady(), |h| h.get(Input::Setpoint)),
        mean_load_pct: mean_of(steady(), |h| h.get(Input::LoadPct)),
        evap_approach_k: mean_of(steady(), |h| h.get(Input::EvapApproach)),
        cond_approach_k: mean_of(steady(), |h| h.get(Input::CondApproach)),
        lift_k: mean_of(steady(), Hour::lift),
        delta_t_k: mean_of(steady(), |h| h.get(Input::DeltaT)),
    }
}

/// One calendar month's means over steady hours: the trend a report draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MonthTrend {
    /// `YYYY-MM`.
    pub month: String,
    /// Means over the month's steady hours, K.
    pub evap_approach_k: Option<f64>,
    /// See `evap_approach_k`.
    pub cond_approach_k: Option<f64>,
    /// See `evap_approach_k`.
    pub lift_k: Option<f64>,
    /// See `evap_approach_k`.
    pub delta_t_k: Option<f64>,
}

/// Monthly means of the approaches, lift and ΔT over `hours` (UTC months).
pub fn monthly_trend(hours: &[Hour]) -> Vec<MonthTrend> {
    let mut months: BTreeMap<(i32, u32), Vec<&Hour>> = BTreeMap::new();
    for hour in hours.iter().filter(|h| h.steady()) {
        months.entry((hour.start.year(), hour.start.month())).or_default().push(hour);
    }
    months
        .into_iter()
        .map(|((year, month), hours)| MonthTrend {
            month: format!("{year:04}-{month:02}"),
            evap_approach_k: mean_of(hours.iter().copied(), |h| h.get(Input::EvapApproach)),
            cond_approach_k: mean_of(hours.iter().copied(), |h| h.get(Input::CondApproach)),
            lift_k: mean_of(hours.iter().copied(), Hour::lift),
            delta_t_k: mean_of(hours.iter().copied(), |h| h.get(Input::DeltaT)),
        })
        .collect()
}

/// A value on a day: a point of a finding's chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DayValue {
    /// The day (UTC).
    pub day: NaiveDate,
    /// The value.
    pub value: f64,
}

/// The readings a finding rests on, as a chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    /// What is drawn.
    pub input: Input,
    /// Its unit.
    pub unit: String,
    /// Daily means over the hours the finding judged.
    pub daily: Vec<DayValue>,
    /// The fitted trend at the mean load of the days fitted, where the finding fits one: its
    /// first and last day.
    pub fit: Vec<DayValue>,
}

/// A finding of the doctor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    /// The rule's key.
    pub key: String,
    /// Title, in English and Chinese.
    pub title: String,
    /// See `title`.
    pub title_zh: String,
    /// What was found, with its figures, in English and Chinese.
    pub summary: String,
    /// See `summary`.
    pub summary_zh: String,
    /// What to do.
    pub advice: String,
    /// See `advice`.
    pub advice_zh: String,
    /// The relationship the figures rest on.
    pub reference: String,
    /// See `reference`.
    pub reference_zh: String,
    /// How sure the doctor is, 0 to 1: more data and a clearer signal are surer.
    pub confidence: f64,
    /// The figures the finding computed (rise, per-kelvin cost, suggested setpoint, ...).
    pub figures: BTreeMap<String, f64>,
    /// Energy it cost (or would have saved) in the report's period, kWh; none where the rule
    /// does not estimate energy or the unit's ratings are unknown.
    pub period_kwh: Option<f64>,
    /// The same over a year at this period's operation, kWh.
    pub yearly_kwh: Option<f64>,
    /// `yearly_kwh` at the tariff.
    pub yearly_cost: Option<f64>,
    /// Whether the energy figures rest on %RLA rather than a power meter.
    pub estimated: bool,
    /// The chart of its readings.
    pub evidence: Evidence,
}

/// Least squares: coefficients of `y = Σ c_i x_i` and the standard error of each.
fn least_squares<const K: usize>(rows: &[([f64; K], f64)]) -> Option<([f64; K], [f64; K])> {
    if rows.len() <= K {
        return None;
    }
    let mut xtx = [[0.0; K]; K];
    let mut xty = [0.0; K];
    for (x, y) in rows {
        for i in 0..K {
            xty[i] += x[i] * y;
            for j in 0..K {
                xtx[i][j] += x[i] * x[j];
            }
        }
    }
    let inverse = invert(xtx)?;
    let mut coefficients = [0.0; K];
    for i in 0..K {
        coefficients[i] = (0..K).map(|j| inverse[i][j] * xty[j]).sum();
    }
    let residual: f64 = rows
        .iter()
        .map(|(x, y)| {
            let fitted: f64 = (0..K).map(|i| coefficients[i] * x[i]).sum();
            (y - fitted).powi(2)
        })
        .sum();
    let variance = residual / (rows.len() - K) as f64;
    let mut errors = [0.0; K];
    for i in 0..K {
        errors[i] = (variance * inverse[i][i]).max(0.0).sqrt();
    }
    Some((coefficients, errors))
}

/// Gauss-Jordan inversion; none when singular (a regressor that never varies).
fn invert<const K: usize>(mut a: [[f64; K]; K]) -> Option<[[f64; K]; K]> {
    let mut inverse = [[0.0; K]; K];
    for (i, row) in inverse.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for column in 0..K {
        let pivot = (column..K).max_by(|&x, &y| a[x][column].abs().total_cmp(&a[y][column].abs()))?;
        if a[pivot][column].abs() < 1e-12 {
            return None;
        }
        a.swap(column, pivot);
        inverse.swap(column, pivot);
        let scale = a[column][column];
        for j in 0..K {
            a[column][j] /= scale;
            inverse[column][j] /= scale;
        }
        for row in 0..K {
            if row != column {
                let factor = a[row][column];
                for j in 0..K {
                    a[row][j] -= factor * a[column][j];
                    inverse[row][j] -= factor * inverse[column][j];
                }
            }
        }
    }
    Some(inverse)
}

/// Daily means of `f` over the hours `keep` selects.
fn daily(hours: &[Hour], keep: impl Fn(&Hour) -> bool, f: impl Fn(&Hour) -> Option<f64>) -> Vec<DayValue> {
    let mut days: BTreeMap<NaiveDate, (f64, u32)> = BTreeMap::new();
    for hour in hours.iter().filter(|h| keep(h)) {
        if let Some(value) = f(hour) {
            let day = days.entry(hour.start.date_naive()).or_default();
            *day = (day.0 + value, day.1 + 1);
        }
    }
    days.into_iter().map(|(day, (sum, n))| DayValue { day, value: round(sum / f64::from(n), 2) }).collect()
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// What the findings are judged on: the period's hours and the history before it.
#[derive(Debug)]
pub struct Case<'a> {
    /// Hours from the longest lookback's start to the period's end, one per hour.
    pub hours: &'a [Hour],
    /// Where the period starts in `hours`.
    pub period_from: usize,
    /// The starts counter before the period.
    pub before_starts: Option<f64>,
    /// Ratings and tariff.
    pub assumptions: &'a Assumptions,
}

impl Case<'_> {
    fn period(&self) -> &[Hour] {
        &self.hours[self.period_from..]
    }

    /// The period's hours with their energy, kWh, and whether it is estimated.
    fn period_energy(&self) -> impl Iterator<Item = (&Hour, f64, bool)> {
        self.period().iter().filter_map(|h| energy_kwh(h, self.assumptions).map(|(e, est)| (h, e, est)))
    }

    /// The hours within `days` before the period's end.
    fn lookback(&self, days: u32) -> &[Hour] {
        let Some(end) = self.hours.last().map(|h| h.start) else { return &[] };
        let from = end - chrono::Duration::days(i64::from(days));
        let first = self.hours.partition_point(|h| h.start <= from);
        &self.hours[first..]
    }

    /// The period's energy that `kelvins` of each hour's lift cost (or would save), at 1/lift per
    /// kelvin from the hour's own lift when it ran through it, else the period's steady mean; and
    /// whether it rests on %RLA. None when no hour could be priced.
    fn priced(&self, energy: &super::rules::EnergyRules, kelvins: impl Fn(&Hour) -> f64) -> Option<(f64, bool)> {
        let mean_lift = self.mean_steady_lift();
        let mut total: Option<(f64, bool)> = None;
        for (hour, kwh, estimated) in self.period_energy() {
            if let Some(lift) = hour.steady().then(|| hour.lift()).flatten().or(mean_lift) {
                let (sum, any) = total.unwrap_or_default();
                total = Some((sum + kwh * kelvins(hour) * energy.per_kelvin(lift), any || estimated));
            }
        }
        total
    }

    fn mean_steady_lift(&self) -> Option<f64> {
        mean_of(self.period().iter().filter(|h| h.steady()), Hour::lift)
    }

    /// Yearly figures from a period's kWh.
    fn per_year(&self, period_kwh: f64) -> (f64, f64) {
        let yearly = period_kwh * 8760.0 / self.period().len().max(1) as f64;
        (yearly, yearly * self.assumptions.tariff_per_kwh)
    }
}

/// The findings of `case` under `rules`, in the rules' order.
pub fn findings(rules: &DoctorRules, case: &Case) -> Vec<Finding> {
    rules.findings.iter().filter_map(|rule| judge(rules, rule, case)).collect()
}

fn judge(rules: &DoctorRules, rule: &FindingRule, case: &Case) -> Option<Finding> {
    let finding = |confidence: f64, summary: (String, String), figures: Vec<(&str, f64)>, evidence: Evidence| Finding {
        key: rule.key.clone(),
        title: rule.title.clone(),
        title_zh: rule.title_zh.clone(),
        summary: summary.0,
        summary_zh: summary.1,
        advice: rule.advice.clone(),
        advice_zh: rule.advice_zh.clone(),
        reference: rule.reference.clone(),
        reference_zh: rule.reference_zh.clone(),
        confidence: round(confidence.clamp(0.0, 1.0), 2),
        figures: figures.into_iter().map(|(k, v)| (k.to_owned(), round(v, 3))).collect(),
        period_kwh: None,
        yearly_kwh: None,
        yearly_cost: None,
        estimated: false,
        evidence,
    };
    let energy = &rules.energy;
    match rule.check {
        Check::ApproachTrend { input, min_rise_k, min_days, lookback_days } => {
            let hours = case.lookback(lookback_days);
            let origin = hours.iter().find(|h| h.steady() && h.get(input).is_some())?.start;
            // Fitted on daily means of the steady hours: hours of one day are not independent
            // (their residuals move together), so an hourly fit would overstate its certainty.
            let mut days: BTreeMap<NaiveDate, [f64; 4]> = BTreeMap::new();
            for hour in hours.iter().filter(|h| h.steady()) {
                if let (Some(load), Some(value)) = (hour.get(Input::LoadPct), hour.get(input)) {
                    let day = days.entry(hour.start.date_naive()).or_default();
                    *day = [day[0] + load / 100.0, day[1] + hour.days_since(origin), day[2] + value, day[3] + 1.0];
                }
            }
            let rows: Vec<([f64; 3], f64)> =
                days.values().map(|[load, at, value, n]| ([1.0, load / n, at / n], value / n)).collect();
            let daily_values = daily(hours, Hour::steady, |h| h.get(input));
            if rows.len() < min_days as usize {
                return None;
            }
            let ([a, b, per_day], [_, _, per_day_error]) = least_squares(&rows)?;
            let span_days = rows.iter().map(|r| r.0[2]).fold(0.0, f64::max);
            let rise = per_day * span_days;
            let t = per_day / per_day_error.max(1e-9);
            if rise < min_rise_k || t < 5.0 {
                return None;
            }
            // Energy: each hour's excess over where the approach started, at 1/lift per kelvin.
            let mean_lift = case.mean_steady_lift();
            let priced = case.priced(energy, |h| (per_day * h.days_since(origin)).max(0.0));
            let mean_load = rows.iter().map(|r| r.0[1]).sum::<f64>() / rows.len() as f64;
            let fitted = |days: f64| a + b * mean_load + per_day * days;
            let first_day = origin.date_naive();
            let last_day = (origin + chrono::Duration::seconds((span_days * 86_400.0) as i64)).date_naive();
            let per_k_pct = mean_lift.map(|l| energy.per_kelvin(l) * 100.0).unwrap_or(f64::NAN);
            let what =
                if input == Input::CondApproach { ("condenser", "冷凝器") } else { ("evaporator", "蒸发器") };
            let summary = (
                format!(
                    "The {} approach rose {rise:.1} K in {span_days:.0} days at steady load ({:.2} K a day), from {:.1} to {:.1} K; each kelvin costs about {per_k_pct:.1} % of compressor power.",
                    what.0,
                    per_day,
                    fitted(0.0),
                    fitted(span_days)
                ),
                format!(
                    "{}趋近温度在 {span_days:.0} 天内稳定负荷下上升 {rise:.1} K（每天 {:.2} K），由 {:.1} K 升至 {:.1} K；每升高 1 K 约多耗压缩机功率 {per_k_pct:.1}%。",
                    what.1,
                    per_day,
                    fitted(0.0),
                    fitted(span_days)
                ),
            );
            let evidence = Evidence {
                input,
                unit: input.unit().into(),
                daily: daily_values,
                fit: vec![
                    DayValue { day: first_day, value: round(fitted(0.0), 2) },
                    DayValue { day: last_day, value: round(fitted(span_days), 2) },
                ],
            };
            let days = evidence.daily.len() as f64;
            let mut found = finding(
                (days / 28.0).min(1.0) * (t / 10.0).min(1.0),
                summary,
                vec![("rise_k", rise), ("k_per_day", per_day), ("percent_per_k", per_k_pct)],
                evidence,
            );
            if let Some((period_kwh, estimated)) = priced {
                // A year at the excess it has now, on this period's energy.
                let period_energy: f64 = case.period_energy().map(|e| e.1).sum();
                let (yearly_kwh, yearly_cost) =
                    case.per_year(period_energy * rise * mean_lift.map_or(0.0, |l| energy.per_kelvin(l)));
                found.period_kwh = Some(round(period_kwh, 1));
                found.yearly_kwh = Some(round(yearly_kwh, 0));
                found.yearly_cost = Some(round(yearly_cost, 0));
                found.estimated = estimated;
            }
            Some(found)
        }
        Check::SetpointReset {
            design_supply_c,
            min_raise_k,
            max_raise_k,
            max_load_p90_pct,
            max_mean_deviation_k,
            min_steady_hours,
        } => {
            let steady: Vec<&Hour> = case.period().iter().filter(|h| h.steady()).collect();
            let setpoint = mean_of(steady.iter().copied(), |h| h.get(Input::Setpoint))?;
            let deviation = mean_of(steady.iter().copied(), |h| h.get(Input::SupplyDeviation).map(f64::abs))?;
            let mut loads: Vec<f64> = steady.iter().filter_map(|h| h.get(Input::LoadPct)).collect();
            if loads.len() < min_steady_hours as usize {
                return None;
            }
            loads.sort_by(f64::total_cmp);
            let p90 = loads[loads.len() * 9 / 10];
            let raise = (design_supply_c - setpoint).min(max_raise_k);
            if raise < min_raise_k || p90 > max_load_p90_pct || deviation > max_mean_deviation_k {
                return None;
            }
            let suggested = setpoint + raise;
            let mean_lift = case.mean_steady_lift();
            let priced = case.priced(energy, |_| raise);
            let per_k_pct = mean_lift.map(|l| energy.per_kelvin(l) * 100.0).unwrap_or(f64::NAN);
            let summary = (
                format!(
                    "The supply was held at {setpoint:.1} °C while the load stayed low (90 % of steady hours under {p90:.0} %); {suggested:.1} °C would save about {:.1} % of compressor energy ({per_k_pct:.1} % a kelvin).",
                    raise * per_k_pct
                ),
                format!(
                    "出水温度保持在 {setpoint:.1} °C，而负荷一直较低（90% 的稳定运行时间低于 {p90:.0}%）；设定为 {suggested:.1} °C 约可节省压缩机能耗 {:.1}%（每 K {per_k_pct:.1}%）。",
                    raise * per_k_pct
                ),
            );
            let evidence = Evidence {
                input: Input::Setpoint,
                unit: "°C".into(),
                daily: daily(case.period(), Hour::steady, |h| h.get(Input::Setpoint)),
                fit: vec![],
            };
            let margin = if p90 <= max_load_p90_pct - 10.0 { 1.0 } else { 0.7 };
            let mut found = finding(
                (steady.len() as f64 / 200.0).min(1.0) * margin,
                summary,
                vec![
                    ("setpoint_c", setpoint),
                    ("suggested_setpoint_c", suggested),
                    ("raise_k", raise),
                    ("load_p90_pct", p90),
                    ("percent_per_k", per_k_pct),
                ],
                evidence,
            );
            if let Some((period_kwh, estimated)) = priced {
                let (yearly_kwh, yearly_cost) = case.per_year(period_kwh);
                found.period_kwh = Some(round(period_kwh, 1));
                found.yearly_kwh = Some(round(yearly_kwh, 0));
                found.yearly_cost = Some(round(yearly_cost, 0));
                found.estimated = estimated;
            }
            Some(found)
        }
        Check::LowDeltaT { design_delta_t_k, min_fraction, high_load_pct, min_hours } => {
            let high = |h: &Hour| h.steady() && h.get(Input::LoadPct).is_some_and(|l| l >= high_load_pct);
            let values: Vec<f64> =
                case.period().iter().filter(|h| high(h)).filter_map(|h| h.get(Input::DeltaT)).collect();
            if values.len() < min_hours as usize {
                return None;
            }
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let limit = design_delta_t_k * min_fraction;
            if mean >= limit {
                return None;
            }
            let summary = (
                format!(
                    "At loads of {high_load_pct:.0} % and more the chilled-water delta T averaged {mean:.1} K over {} hours, against {design_delta_t_k:.1} K by design.",
                    values.len()
                ),
                format!(
                    "负荷不低于 {high_load_pct:.0}% 的 {} 小时内，冷冻水温差平均 {mean:.1} K，设计值为 {design_delta_t_k:.1} K。",
                    values.len()
                ),
            );
            let evidence = Evidence {
                input: Input::DeltaT,
                unit: "K".into(),
                daily: daily(case.period(), high, |h| h.get(Input::DeltaT)),
                fit: vec![],
            };
            Some(finding(
                (values.len() as f64 / 100.0).min(1.0),
                summary,
                vec![("delta_t_k", mean), ("design_delta_t_k", design_delta_t_k), ("hours", values.len() as f64)],
                evidence,
            ))
        }
        Check::ShortCycling { max_starts_per_hour, min_hours } => {
            let period = case.period();
            let starts = starts_by_hour(period, case.before_starts);
            let busy: Vec<&(usize, f64)> = starts.iter().filter(|s| s.1 > max_starts_per_hour).collect();
            if busy.len() < min_hours as usize {
                return None;
            }
            let most = busy.iter().map(|s| s.1).fold(0.0, f64::max);
            let summary = (
                format!(
                    "{} hours had more than {max_starts_per_hour:.0} starts (up to {most:.0} in one hour).",
                    busy.len()
                ),
                format!("有 {} 个小时启动超过 {max_starts_per_hour:.0} 次（单小时最多 {most:.0} 次）。", busy.len()),
            );
            let mut per_day: BTreeMap<NaiveDate, f64> = BTreeMap::new();
            for (i, count) in &starts {
                *per_day.entry(period[*i].start.date_naive()).or_default() += count;
            }
            let evidence = Evidence {
                input: Input::Starts,
                unit: "starts/day".into(),
                daily: per_day.into_iter().map(|(day, value)| DayValue { day, value }).collect(),
                fit: vec![],
            };
            Some(finding(
                (busy.len() as f64 / 50.0).min(1.0),
                summary,
                vec![("hours", busy.len() as f64), ("most_starts_in_an_hour", most)],
                evidence,
            ))
        }
        Check::Oversized { low_load_pct, max_share, min_running_hours } => {
            let running: Vec<(f64, f64)> = case
                .period()
                .iter()
                .filter_map(|h| {
                    let running = h.get(Input::Running).filter(|r| *r > 0.0)?;
                    Some((running, h.get(Input::LoadPct)? / running))
                })
                .collect();
            let total: f64 = running.iter().map(|r| r.0).sum();
            if total < f64::from(min_running_hours) {
                return None;
            }
            let low: f64 = running.iter().filter(|r| r.1 < low_load_pct).map(|r| r.0).sum();
            let share = low / total;
            if share <= max_share {
                return None;
            }
            let summary = (
                format!("{:.0} % of {total:.0} running hours were below {low_load_pct:.0} % load.", share * 100.0),
                format!("{total:.0} 小时运行时间中有 {:.0}% 负荷低于 {low_load_pct:.0}%。", share * 100.0),
            );
            let evidence = Evidence {
                input: Input::LoadPct,
                unit: "%".into(),
                daily: daily(
                    case.period(),
                    |h| h.get(Input::Running).is_some_and(|r| r > 0.0),
                    |h| h.get(Input::LoadPct),
                ),
                fit: vec![],
            };
            Some(finding(
                (total / 300.0).min(1.0),
                summary,
                vec![("low_load_share", share), ("running_hours", total)],
                evidence,
            ))
        }
        Check::SensorDrift { first, second, max_change_k, min_hours, lookback_days } => {
            let hours = case.lookback(lookback_days);
            let offset = |h: &Hour| Some(h.get(first)? - h.get(second)?);
            let origin = hours.iter().find(|h| h.stopped() && offset(h).is_some())?.start;
            let rows: Vec<([f64; 2], f64)> = hours
                .iter()
                .filter(|h| h.stopped())
                .filter_map(|h| Some(([1.0, h.days_since(origin)], offset(h)?)))
                .collect();
            if rows.len() < min_hours as usize {
                return None;
            }
            let ([start, per_day], [_, per_day_error]) = least_squares(&rows)?;
            let span_days = rows.iter().map(|r| r.0[1]).fold(0.0, f64::max);
            let change = per_day * span_days;
            let t = per_day.abs() / per_day_error.max(1e-9);
            if change.abs() <= max_change_k || t < 5.0 {
                return None;
            }
            let summary = (
                format!(
                    "While stopped, {first:?} minus {second:?} moved {change:+.1} K in {span_days:.0} days (from {start:.1} K)."
                ),
                format!(
                    "停机时 {first:?} 与 {second:?} 的差值在 {span_days:.0} 天内变化 {change:+.1} K（起始 {start:.1} K）。"
                ),
            );
            let evidence =
                Evidence { input: first, unit: "K".into(), daily: daily(hours, Hour::stopped, offset), fit: vec![] };
            Some(finding(
                (rows.len() as f64 / 200.0).min(1.0) * (t / 10.0).min(1.0),
                summary,
                vec![("change_k", change), ("k_per_day", per_day)],
                evidence,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(at: i64, values: &[(Input, f64)]) -> Hour {
        let mut hour = Hour::empty(DateTime::from_timestamp(1_800_000_000 / 3600 * 3600 + at * 3600, 0).expect("time"));
        for (input, value) in values {
            hour.mean[*input as usize] = Some(*value);
            hour.last[*input as usize] = Some(*value);
        }
        hour
    }

    fn assumptions() -> Assumptions {
        Assumptions {
            rated_cooling_kw: Some(1000.0),
            rated_power_kw: Some(180.0),
            tariff_per_kwh: 1.0,
            currency: "CNY".into(),
            tariff_source: "default".into(),
        }
    }

    #[test]
    fn least_squares_recovers_a_plane() {
        let rows: Vec<([f64; 3], f64)> = (0..50)
            .map(|i| ([1.0, f64::from(i % 7), f64::from(i)], 2.0 + 0.5 * f64::from(i % 7) + 0.1 * f64::from(i)))
            .collect();
        let (c, e) = least_squares(&rows).expect("solvable");
        assert!((c[0] - 2.0).abs() < 1e-9 && (c[1] - 0.5).abs() < 1e-9 && (c[2] - 0.1).abs() < 1e-9, "{c:?}");
        assert!(e.iter().all(|e| *e < 1e-6));
        assert!(least_squares(&[([1.0, 1.0], 1.0), ([1.0, 1.0], 2.0), ([1.0, 1.0], 3.0)]).is_none(), "singular");
    }

    #[test]
    fn figures_come_from_the_hours() {
        let running = |at, load: f64| {
            hour(
                at,
                &[
                    (Input::Running, 1.0),
                    (Input::LoadPct, load),
                    (Input::SupplyDeviation, 0.1),
                    (Input::CondSat, 36.0),
                    (Input::EvapSat, 5.0),
                    (Input::Starts, 100.0),
                ],
            )
        };
        let hours = vec![running(0, 50.0), running(1, 95.0), hour(2, &[(Input::Running, 0.0), (Input::LoadPct, 0.0)])];
        let kpis = kpis(&hours, Some(98.0), &assumptions());
        assert_eq!(kpis.run_hours, 2.0);
        assert_eq!(kpis.starts, Some(2.0));
        assert_eq!(kpis.energy_kwh, Some(180.0 * 1.45));
        assert!(kpis.energy_estimated && kpis.cooling_estimated);
        assert_eq!(kpis.setpoint_compliance, Some(1.0));
        assert_eq!(kpis.lift_k, Some(31.0));
        let bands: Vec<f64> = kpis.load_profile.iter().map(|b| b.hours).collect();
        assert_eq!(bands, [0.0, 0.0, 1.0, 0.0, 1.0]);
    }
}
