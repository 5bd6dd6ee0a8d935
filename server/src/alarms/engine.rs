//! The rule engine: readings in, alarm changes out. No I/O and no clock of its own: time is the
//! readings' timestamps and the `now` given to [`Engine::tick`], so tests drive it exactly.
//!
//! Readings are evaluated per unit in time order as they arrive. A reading older than what was
//! already evaluated for its unit (backfill arriving after live data) is stored by ingest but not
//! evaluated: alarms describe the present. Delays run on reading time; [`Engine::tick`] moves
//! them on when no reading arrives (report by exception sends nothing while values hold).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use super::{
    expr::Expr,
    rules::{self, CaptureSettings, Rule, RuleFile, RuleKind},
};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// What an alarm is about: a unit, or a whole site (its gateway).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A unit, by its id.
    Unit(i64),
    /// A gateway (site), by its id.
    Gateway(String),
}

/// An alarm to raise (or, when already raised, whose grade or cause changed), or to clear.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Raise, or update the grade and message of the raised alarm.
    Raise {
        /// What it is about.
        target: Target,
        /// The rule's key.
        rule: String,
        /// Grade 1 to 4.
        grade: u8,
        /// The rule's title (English, Chinese).
        title: (String, String),
        /// The cause, with the values that matter.
        message: String,
        /// When.
        at: Millis,
    },
    /// The condition is over.
    Clear {
        /// What it is about.
        target: Target,
        /// The rule's key.
        rule: String,
        /// When.
        at: Millis,
    },
}

/// A derived value to store as a reading of its own point.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedReading {
    /// The derived point.
    pub point_id: i64,
    /// Its time: the time of the readings it was computed from.
    pub at: Millis,
    /// The value, rounded to its decimals.
    pub value: f64,
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Alarm changes, in time order per target.
    pub changes: Vec<Change>,
    /// Derived values to store.
    pub derived: Vec<DerivedReading>,
}

/// A unit's rules compiled for its points.
#[derive(Debug)]
pub struct CompiledRules {
    derived: Vec<CompiledDerived>,
    rules: Vec<(Rule, Check)>,
    /// Rules that do not apply to this unit, with the reason (missing points, bad definition).
    pub skipped: Vec<(String, String)>,
    /// What is recorded around its alarms.
    pub capture: CaptureSettings,
}

#[derive(Debug)]
struct CompiledDerived {
    name: Arc<str>,
    unit: String,
    decimals: i32,
    kind: DerivedKind,
}

#[derive(Debug)]
enum DerivedKind {
    Formula(Expr),
    Increase { counter: Arc<str>, window_ms: Millis },
    Trend { of: Arc<str>, window_ms: Millis },
}

#[derive(Debug)]
enum Check {
    Condition { when: Expr, gate: Option<Expr>, on_delay: Millis, off_delay: Millis, hysteresis: f64 },
    Rate { of: Expr, rise: f64, window: Millis, gate: Option<Expr> },
    Stuck { point: Arc<str>, for_ms: Millis, tolerance: f64, gate: Option<Expr> },
    Code { point: Arc<str> },
    DeviceOffline { levels: Vec<(Millis, u8)> },
    GatewayOffline { silence: Millis, levels: Vec<(Millis, u8)> },
}

fn ms(seconds: f64) -> Millis {
    (seconds * 1000.0).round() as Millis
}

fn levels_ms(levels: &[(f64, u8)]) -> Vec<(Millis, u8)> {
    levels.iter().map(|(s, g)| (ms(*s), *g)).collect()
}

impl CompiledRules {
    /// Compiles `file` for a unit (or gateway) that has the points `point_names`. Derived values
    /// need all their inputs; rules that read a name the unit lacks are listed in `skipped`.
    pub fn compile(file: &RuleFile, point_names: &[&str]) -> Self {
        let mut available: HashSet<&str> = point_names.iter().copied().collect();
        let mut skipped = Vec::new();
        let mut derived = Vec::new();
        for definition in &file.derived {
            if let Err(error) = rules::check_derived(definition) {
                skipped.push((definition.name.clone(), error.to_string()));
                continue;
            }
            let window_ms = ms(definition.window_s);
            let kind = match (&definition.formula, &definition.increase_of, &definition.trend_of) {
                (Some(formula), _, _) => match Expr::parse(formula) {
                    Ok(expr) => DerivedKind::Formula(expr),
                    Err(error) => {
                        skipped.push((definition.name.clone(), error.to_string()));
                        continue;
                    }
                },
                (None, Some(counter), _) => DerivedKind::Increase { counter: counter.as_str().into(), window_ms },
                (None, None, Some(of)) => DerivedKind::Trend { of: of.as_str().into(), window_ms },
                (None, None, None) => continue,
            };
            let inputs: Vec<&str> = match &kind {
                DerivedKind::Formula(expr) => expr.names(),
                DerivedKind::Increase { counter: input, .. } | DerivedKind::Trend { of: input, .. } => vec![input],
            };
            // A derived value without its inputs is simply not computed (a unit without a flow
            // meter has no cooling power); the rules that read it are skipped, with the reason.
            if inputs.iter().all(|name| available.contains(name)) {
                available.insert(&definition.name);
                derived.push(CompiledDerived {
                    name: definition.name.as_str().into(),
                    unit: definition.unit.clone(),
                    decimals: definition.decimals,
                    kind,
                });
            }
        }
        let mut compiled = Vec::new();
        for value in &file.rules {
            let rule = match rules::parse_rule(value) {
                Ok(rule) => rule,
                Err(error) => {
                    let key = value.get("key").and_then(|k| k.as_str()).unwrap_or("?");
                    skipped.push((key.to_owned(), error.to_string()));
                    continue;
                }
            };
            let parse = |text: &str| Expr::parse(text).expect("checked by parse_rule");
            let parse_gate = |gate: &Option<String>| gate.as_deref().map(parse);
            let check = match &rule.kind {
                RuleKind::Condition { when, gate, on_delay_s, off_delay_s, hysteresis } => Check::Condition {
                    when: parse(when),
                    gate: parse_gate(gate),
                    on_delay: ms(*on_delay_s),
                    off_delay: ms(*off_delay_s),
                    hysteresis: *hysteresis,
                },
                RuleKind::Rate { of, rise, window_s, gate } => {
                    Check::Rate { of: parse(of), rise: *rise, window: ms(*window_s), gate: parse_gate(gate) }
                }
                RuleKind::Stuck { point, for_s, tolerance, gate } => Check::Stuck {
                    point: point.as_str().into(),
                    for_ms: ms(*for_s),
                    tolerance: *tolerance,
                    gate: parse_gate(gate),
                },
                RuleKind::Code { point, .. } => Check::Code { point: point.as_str().into() },
                RuleKind::DeviceOffline { levels } => Check::DeviceOffline { levels: levels_ms(levels) },
                RuleKind::GatewayOffline { silence_s, levels } => {
                    Check::GatewayOffline { silence: ms(*silence_s), levels: levels_ms(levels) }
                }
            };
            let missing: Vec<&str> = check.names().into_iter().filter(|n| !available.contains(n)).collect();
            if missing.is_empty() {
                compiled.push((rule, check));
            } else {
                skipped.push((rule.key, format!("the unit has no {}", missing.join(", "))));
            }
        }
        CompiledRules { derived, rules: compiled, skipped, capture: file.capture.unwrap_or_default() }
    }

    /// The rules that apply.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|(rule, _)| rule)
    }

    /// Names of the derived values the unit gets, in evaluation order.
    pub fn derived_names(&self) -> impl Iterator<Item = &str> {
        self.derived.iter().map(|d| &*d.name)
    }
}

impl Check {
    fn names(&self) -> Vec<&str> {
        let (mut names, gate) = match self {
            Check::Condition { when, gate, .. } => (when.names(), gate),
            Check::Rate { of, gate, .. } => (of.names(), gate),
            Check::Stuck { point, gate, .. } => (vec![&**point], gate),
            Check::Code { point } => return vec![point],
            Check::DeviceOffline { .. } | Check::GatewayOffline { .. } => return Vec::new(),
        };
        if let Some(gate) = gate {
            names.extend(gate.names());
        }
        names
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Normal,
    /// The condition holds since then; raised after the on-delay.
    Pending(Millis),
    Active,
    /// The condition failed since then; cleared after the off-delay.
    Clearing(Millis),
}

#[derive(Debug)]
struct RuleState {
    phase: Phase,
    /// The grade and cause identity of the raised alarm.
    raised: Option<(u8, String)>,
    samples: VecDeque<(Millis, f64)>,
    /// Stuck rules: the reference value and since when it has not moved.
    still: Option<(f64, Millis)>,
    /// Since when the rule's `while` has held (`None`: it does not), and whether it has been
    /// evaluated at all (the first time, a gate that holds counts as settled).
    gate_since: Option<Millis>,
    gate_seen: bool,
}

fn fresh_states(rules: &CompiledRules) -> Vec<RuleState> {
    rules.rules.iter().map(|_| RuleState::new()).collect()
}

/// The states of `new`'s rules: carried over from `old` where the rule is unchanged.
fn carry_states(old: &CompiledRules, states: Vec<RuleState>, new: &CompiledRules) -> Vec<RuleState> {
    let mut kept: HashMap<&str, (&Rule, RuleState)> = old
        .rules
        .iter()
        .map(|(rule, _)| (rule.key.as_str(), rule))
        .zip(states)
        .map(|((k, r), s)| (k, (r, s)))
        .collect();
    new.rules
        .iter()
        .map(|(rule, _)| match kept.remove(rule.key.as_str()) {
            Some((old_rule, state)) if old_rule == rule => state,
            _ => RuleState::new(),
        })
        .collect()
}

impl RuleState {
    fn new() -> Self {
        RuleState {
            phase: Phase::Normal,
            raised: None,
            samples: VecDeque::new(),
            still: None,
            gate_since: None,
            gate_seen: false,
        }
    }
}

#[derive(Debug)]
struct DerivedState {
    point_id: Option<i64>,
    stored: Option<f64>,
    samples: VecDeque<(Millis, f64)>,
}

/// What the engine needs to know of a unit.
#[derive(Debug)]
pub struct UnitSetup {
    /// The unit's id.
    pub unit_id: i64,
    /// Its gateway.
    pub gateway: String,
    /// Its points: id and name.
    pub points: Vec<(i64, String)>,
    /// What its points measure in (`°C`, `kPa`), by name, for alarm messages.
    pub units_of_measure: HashMap<String, String>,
    /// The point ids its derived values are stored under, by name.
    pub derived_points: HashMap<String, i64>,
    /// Its compiled rules.
    pub rules: Arc<CompiledRules>,
    /// Since when every point of it has been bad (the gateway cannot read it), if so.
    pub unreadable_since: Option<Millis>,
}

#[derive(Debug)]
struct Unit {
    gateway: String,
    rules: Arc<CompiledRules>,
    /// What points and derived values measure in, by name.
    units_of_measure: HashMap<Arc<str>, String>,
    values: HashMap<Arc<str>, f64>,
    /// Since when no point has a good value: the gateway reports the unit unreadable. (Not
    /// "no reading lately": report by exception sends nothing while values hold.)
    unreadable_since: Option<Millis>,
    evaluated_at: Millis,
    derived: Vec<DerivedState>,
    states: Vec<RuleState>,
}

#[derive(Debug)]
struct Gateway {
    rules: Arc<CompiledRules>,
    /// Since when it is known to be gone (its death message), if it is.
    dead_since: Option<Millis>,
    last_seen: Millis,
    states: Vec<RuleState>,
}

impl Gateway {
    /// Since when the gateway is offline at `now`, or `None` while it is online.
    fn offline_since(&self, now: Millis) -> Option<Millis> {
        let silence = self.rules.rules.iter().find_map(|(_, check)| match check {
            Check::GatewayOffline { silence, .. } => Some(*silence),
            _ => None,
        });
        self.dead_since.or_else(|| silence.filter(|s| now - self.last_seen > *s).map(|_| self.last_seen))
    }
}

/// The engine's whole state.
#[derive(Debug, Default)]
pub struct Engine {
    units: HashMap<i64, Unit>,
    gateways: HashMap<String, Gateway>,
    /// Point id to unit id and point name.
    points: HashMap<i64, (i64, Arc<str>)>,
}

impl Engine {
    /// Adds or replaces a gateway (site) and its rules; `online` and `last_seen` from the
    /// registry. The states of rules that did not change are kept; others start afresh (see
    /// [`Engine::restore`]).
    pub fn set_gateway(&mut self, id: &str, rules: Arc<CompiledRules>, online: bool, last_seen: Millis) {
        let existing = self.gateways.remove(id);
        let (dead_since, last_seen, states) = match existing {
            Some(g) => (g.dead_since, g.last_seen, carry_states(&g.rules, g.states, &rules)),
            None => ((!online).then_some(last_seen), last_seen, fresh_states(&rules)),
        };
        self.gateways.insert(id.to_owned(), Gateway { rules, dead_since, last_seen, states });
    }

    /// Adds or replaces a unit and its rules, keeping its current values and the states of rules
    /// and derived values that did not change; others start afresh (see [`Engine::restore`]).
    pub fn set_unit(&mut self, setup: UnitSetup) {
        let existing = self.units.remove(&setup.unit_id);
        for (point_id, name) in &setup.points {
            self.points.insert(*point_id, (setup.unit_id, name.as_str().into()));
        }
        let (values, unreadable_since, evaluated_at, states, mut old_derived) = match existing {
            Some(unit) => {
                let states = carry_states(&unit.rules, unit.states, &setup.rules);
                let derived: HashMap<Arc<str>, DerivedState> =
                    unit.rules.derived.iter().map(|d| d.name.clone()).zip(unit.derived).collect();
                (unit.values, unit.unreadable_since, unit.evaluated_at, states, derived)
            }
            None => (HashMap::new(), setup.unreadable_since, 0, fresh_states(&setup.rules), HashMap::new()),
        };
        let derived = setup
            .rules
            .derived
            .iter()
            .map(|d| {
                let point_id = setup.derived_points.get(&*d.name).copied();
                match old_derived.remove(&d.name) {
                    Some(state) => DerivedState { point_id, ..state },
                    None => DerivedState { point_id, stored: None, samples: VecDeque::new() },
                }
            })
            .collect();
        let mut units_of_measure: HashMap<Arc<str>, String> =
            setup.units_of_measure.into_iter().map(|(name, unit)| (name.into(), unit)).collect();
        units_of_measure.extend(setup.rules.derived.iter().map(|d| (d.name.clone(), d.unit.clone())));
        self.units.insert(
            setup.unit_id,
            Unit {
                gateway: setup.gateway,
                units_of_measure,
                rules: setup.rules,
                values,
                unreadable_since,
                evaluated_at,
                derived,
                states,
            },
        );
    }

    /// Marks an alarm raised before (by an earlier run) as raised, so the engine clears it when
    /// its condition is over. Returns false when the target has no such rule any more.
    pub fn restore(&mut self, target: &Target, rule: &str, grade: u8) -> bool {
        let (rules, states) = match target {
            Target::Unit(id) => match self.units.get_mut(id) {
                Some(unit) => (&unit.rules, &mut unit.states),
                None => return false,
            },
            Target::Gateway(id) => match self.gateways.get_mut(id) {
                Some(gateway) => (&gateway.rules, &mut gateway.states),
                None => return false,
            },
        };
        let Some(index) = rules.rules.iter().position(|(r, _)| r.key == rule) else { return false };
        let state = &mut states[index];
        state.phase = Phase::Active;
        state.raised = Some((grade, String::new()));
        true
    }

    /// A gateway was heard from at `at` (any message).
    pub fn gateway_seen(&mut self, id: &str, at: Millis) -> Output {
        let mut output = Output::default();
        let Some(gateway) = self.gateways.get_mut(id) else { return output };
        gateway.dead_since = None;
        gateway.last_seen = gateway.last_seen.max(at);
        let target = Target::Gateway(id.to_owned());
        for ((rule, check), state) in gateway.rules.rules.iter().zip(&mut gateway.states) {
            if matches!(check, Check::GatewayOffline { .. }) {
                settle(state, &target, rule, None, at, &mut output);
            }
        }
        output
    }

    /// A gateway's death message: it is gone since `at`.
    pub fn gateway_died(&mut self, id: &str, at: Millis) {
        if let Some(gateway) = self.gateways.get_mut(id) {
            gateway.dead_since = Some(at);
        }
    }

    /// Evaluates committed readings: `(point id, time, value)`, `None` for bad quality.
    pub fn observe(&mut self, readings: &[(i64, Millis, Option<f64>)]) -> Output {
        type Readings = Vec<(Millis, Arc<str>, Option<f64>)>;
        let mut by_unit: HashMap<i64, Readings> = HashMap::new();
        for (point_id, at, value) in readings {
            if let Some((unit_id, name)) = self.points.get(point_id) {
                by_unit.entry(*unit_id).or_default().push((*at, name.clone(), *value));
            }
        }
        let mut output = Output::default();
        for (unit_id, mut readings) in by_unit {
            let Some(unit) = self.units.get_mut(&unit_id) else { continue };
            let gateway = self.gateways.get(&unit.gateway);
            readings.sort_by_key(|(at, _, _)| *at);
            let mut readings = readings.into_iter().peekable();
            while let Some((at, name, value)) = readings.next() {
                if at < unit.evaluated_at {
                    continue;
                }
                unit.apply(name, value);
                // Evaluate once all readings of this instant are in.
                if readings.peek().is_none_or(|(next, _, _)| *next != at) {
                    unit.evaluate(unit_id, gateway, at, false, &mut output);
                }
            }
        }
        output
    }

    /// Moves delays and time-based rules on to `now`.
    pub fn tick(&mut self, now: Millis) -> Output {
        let mut output = Output::default();
        for (unit_id, unit) in &mut self.units {
            let gateway = self.gateways.get(&unit.gateway);
            unit.evaluate(*unit_id, gateway, now.max(unit.evaluated_at), true, &mut output);
        }
        for (id, gateway) in &mut self.gateways {
            let target = Target::Gateway(id.clone());
            let since = gateway.offline_since(now);
            for ((rule, check), state) in gateway.rules.rules.iter().zip(&mut gateway.states) {
                if let Check::GatewayOffline { levels, .. } = check {
                    let want = since.and_then(|since| level(levels, now - since)).map(|grade| {
                        let seconds = (now - since.unwrap_or(now)) / 1000;
                        (grade, String::new(), format!("no message from the gateway for {seconds} s"))
                    });
                    settle(state, &target, rule, want, now, &mut output);
                }
            }
        }
        output
    }
}

/// The grade of the highest level `age` has reached.
fn level(levels: &[(Millis, u8)], age: Millis) -> Option<u8> {
    levels.iter().rev().find(|(after, _)| age >= *after).map(|(_, grade)| *grade)
}

/// Raises (`want` = grade, cause identity, message) or clears (`None`) as needed.
fn settle(
    state: &mut RuleState,
    target: &Target,
    rule: &Rule,
    want: Option<(u8, String, String)>,
    at: Millis,
    output: &mut Output,
) {
    match want {
        Some((grade, identity, message)) => {
            if state.raised.as_ref().is_none_or(|(g, i)| *g != grade || (*i != identity && !identity.is_empty())) {
                state.raised = Some((grade, identity));
                output.changes.push(Change::Raise {
                    target: target.clone(),
                    rule: rule.key.clone(),
                    grade,
                    title: (rule.title.clone(), rule.title_zh.clone()),
                    message,
                    at,
                });
            }
        }
        None => {
            if state.raised.take().is_some() {
                output.changes.push(Change::Clear { target: target.clone(), rule: rule.key.clone(), at });
            }
        }
    }
}

/// Keeps `samples` within `window` of `at`, one sample per `window / 120` at most.
fn keep_sample(samples: &mut VecDeque<(Millis, f64)>, at: Millis, value: f64, window: Millis) {
    if samples.back().is_none_or(|(last, _)| at - last >= window / 120) {
        samples.push_back((at, value));
    }
    while samples.front().is_some_and(|(first, _)| *first < at - window) {
        samples.pop_front();
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

impl Unit {
    fn apply(&mut self, name: Arc<str>, value: Option<f64>) {
        match value {
            Some(value) => {
                self.values.insert(name, value);
            }
            None => {
                self.values.remove(&name);
            }
        }
    }

    fn evaluate(&mut self, unit_id: i64, gateway: Option<&Gateway>, at: Millis, tick: bool, output: &mut Output) {
        if !tick {
            self.compute_derived(at, output);
            self.evaluated_at = at;
            self.unreadable_since =
                if self.values.is_empty() { Some(self.unreadable_since.unwrap_or(at)) } else { None };
        }
        let target = Target::Unit(unit_id);
        let gateway_offline = gateway.is_none_or(|g| g.offline_since(at).is_some());
        // While the gateway is away the values are stale: time alone changes nothing.
        if tick && gateway_offline {
            return;
        }
        let values = &self.values;
        let units = &self.units_of_measure;
        let lookup = |name: &str| values.get(name).copied();
        for ((rule, check), state) in self.rules.rules.iter().zip(&mut self.states) {
            // Whether the gate holds and has held for the rule's settle time (unknown: `None`).
            let mut holds = |gate: &Option<Expr>| {
                let held = match gate {
                    None => return Some(true),
                    Some(gate) => gate.eval(&lookup).map(|v| v != 0.0)?,
                };
                let first = !std::mem::replace(&mut state.gate_seen, true);
                if !held {
                    state.gate_since = None;
                    return Some(false);
                }
                let settle = ms(rule.settle_s);
                let since = *state.gate_since.get_or_insert(if first { at - settle } else { at });
                Some(at - since >= settle)
            };
            let want = match check {
                Check::Condition { when, gate, on_delay, off_delay, hysteresis } => {
                    // On a tick only pending delays move; nothing else changed.
                    if tick && !matches!(state.phase, Phase::Pending(_) | Phase::Clearing(_)) {
                        continue;
                    }
                    let gate = holds(gate);
                    let active = matches!(state.phase, Phase::Active | Phase::Clearing(_));
                    let condition = match gate {
                        Some(false) => Some(false),
                        None => None,
                        Some(true) if active => when.eval_with_margin(*hysteresis, &lookup).map(|v| v != 0.0),
                        Some(true) => when.eval(&lookup).map(|v| v != 0.0),
                    };
                    let Some(condition) = condition else { continue };
                    state.phase = match (state.phase, condition) {
                        (Phase::Normal, true) => Phase::Pending(at),
                        (Phase::Pending(_), false) => Phase::Normal,
                        (Phase::Active, false) => Phase::Clearing(at),
                        (Phase::Clearing(_), true) => Phase::Active,
                        (phase, _) => phase,
                    };
                    state.phase = match state.phase {
                        Phase::Pending(since) if at - since >= *on_delay => Phase::Active,
                        Phase::Clearing(since) if at - since >= *off_delay => Phase::Normal,
                        phase => phase,
                    };
                    match state.phase {
                        Phase::Active | Phase::Clearing(_) => {
                            Some((rule.grade, String::new(), describe(&when.names(), values, units)))
                        }
                        Phase::Normal | Phase::Pending(_) => None,
                    }
                }
                Check::Rate { of, rise, window, gate } => {
                    if tick {
                        continue;
                    }
                    let gate = holds(gate);
                    match (gate, of.eval(&lookup)) {
                        // Paused while the gate is false (a comfort chiller stops at night): the
                        // trend is over running time.
                        (Some(false), _) => continue,
                        (Some(true), Some(value)) => {
                            keep_sample(&mut state.samples, at, value, *window);
                            // Compared with the value a window ago, once there is one: a trend,
                            // not a step that has just happened.
                            let Some(&(first_at, first)) = state.samples.front() else { continue };
                            if at - first_at < window * 9 / 10 {
                                continue;
                            }
                            let threshold = if state.raised.is_some() { rise / 2.0 } else { *rise };
                            (value - first > threshold).then(|| {
                                let message = format!(
                                    "rose {:.1} in {} s; {}",
                                    value - first,
                                    (at - first_at) / 1000,
                                    describe(&of.names(), values, units)
                                );
                                (rule.grade, String::new(), message)
                            })
                        }
                        _ => continue,
                    }
                }
                Check::Stuck { point, for_ms, tolerance, gate } => {
                    let Some(value) = lookup(point) else { continue };
                    let moving = holds(gate) != Some(true);
                    let unit = units.get(&**point).map_or("", String::as_str);
                    // Restored as raised (a restart or reload): frozen until it moves.
                    if state.still.is_none() && state.raised.is_some() {
                        state.still = Some((value, at - for_ms));
                    }
                    match state.still {
                        Some((reference, _)) if !moving && (value - reference).abs() <= *tolerance => {}
                        _ => state.still = Some((value, at)),
                    }
                    let since = state.still.map_or(at, |(_, since)| since);
                    (at - since >= *for_ms).then(|| {
                        let value = with_unit(value, unit);
                        (rule.grade, String::new(), format!("{point} has read {value} for {} s", (at - since) / 1000))
                    })
                }
                Check::Code { point } => {
                    if tick {
                        continue;
                    }
                    let Some(code) = lookup(point) else { continue };
                    (code != 0.0).then(|| {
                        let key = format!("{code}");
                        let (text, grade) = match &rule.kind {
                            RuleKind::Code { codes, .. } => {
                                codes.get(&key).map_or((format!("code {key}"), rule.grade), |c| {
                                    (format!("{key}: {}", c.text), c.grade)
                                })
                            }
                            _ => (key.clone(), rule.grade),
                        };
                        (grade, key, text)
                    })
                }
                Check::DeviceOffline { levels } => {
                    // Held back while the gateway is offline: its site alarm says it once.
                    if gateway_offline {
                        continue;
                    }
                    self.unreadable_since.and_then(|since| {
                        let message = format!("the gateway cannot read the unit for {} s", (at - since) / 1000);
                        level(levels, at - since).map(|grade| (grade, String::new(), message))
                    })
                }
                Check::GatewayOffline { .. } => continue,
            };
            settle(state, &target, rule, want, at, output);
        }
    }

    fn compute_derived(&mut self, at: Millis, output: &mut Output) {
        for (definition, state) in self.rules.derived.iter().zip(&mut self.derived) {
            let value = match &definition.kind {
                DerivedKind::Formula(expr) => expr.eval(&|name| self.values.get(name).copied()),
                DerivedKind::Increase { counter, window_ms } => self.values.get(counter).copied().map(|count| {
                    // A counter that went backwards was reset: start the window again.
                    if state.samples.back().is_some_and(|(_, last)| count < *last) {
                        state.samples.clear();
                    }
                    keep_sample(&mut state.samples, at, count, *window_ms);
                    count - state.samples.front().map_or(count, |(_, first)| *first)
                }),
                DerivedKind::Trend { of, window_ms } => self.values.get(of).copied().and_then(|value| {
                    keep_sample(&mut state.samples, at, value, *window_ms);
                    slope_per_minute(&state.samples, (*window_ms / 2).min(10_000))
                }),
            };
            match value {
                Some(value) => {
                    let value = round(value, definition.decimals);
                    self.values.insert(definition.name.clone(), value);
                    if let Some(point_id) = state.point_id
                        && state.stored != Some(value)
                    {
                        state.stored = Some(value);
                        output.derived.push(DerivedReading { point_id, at, value });
                    }
                }
                None => {
                    self.values.remove(&definition.name);
                }
            }
        }
    }
}

/// `name value unit, name value unit` for the names an expression reads.
pub(crate) fn describe(names: &[&str], values: &HashMap<Arc<str>, f64>, units: &HashMap<Arc<str>, String>) -> String {
    let parts: Vec<String> = names
        .iter()
        .map(|name| match values.get(*name) {
            Some(value) => format!("{name} {}", with_unit(*value, units.get(*name).map_or("", String::as_str))),
            None => format!("{name} ?"),
        })
        .collect();
    parts.join(", ")
}

/// `1182 kPa`, `3.2 K`, `-50 °C`; a value without a unit alone.
fn with_unit(value: f64, unit: &str) -> String {
    let value = round(value, 2);
    if unit.is_empty() { format!("{value}") } else { format!("{value} {unit}") }
}

/// The least-squares slope of `samples` per minute, once they span `at_least` ms.
fn slope_per_minute(samples: &VecDeque<(Millis, f64)>, at_least: Millis) -> Option<f64> {
    let (first, last) = (samples.front()?.0, samples.back()?.0);
    if last - first < at_least.max(1) {
        return None;
    }
    let n = samples.len() as f64;
    let minutes = |at: Millis| (at - first) as f64 / 60_000.0;
    let (mean_t, mean_v) = samples.iter().fold((0.0, 0.0), |(t, v), (at, value)| (t + minutes(*at) / n, v + value / n));
    let (covariance, variance) = samples.iter().fold((0.0, 0.0), |(c, s), (at, value)| {
        let dt = minutes(*at) - mean_t;
        (c + dt * (value - mean_v), s + dt * dt)
    });
    (variance > 0.0).then(|| covariance / variance)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `profile`'s shipped rules with `overrides` applied.
    fn patched(profile: &str, overrides: &[(&str, serde_json::Value)]) -> RuleFile {
        let mut file = rules::unit_defaults(profile);
        for (key, patch) in overrides {
            rules::apply_override(&mut file.rules, key, patch);
        }
        file
    }

    /// An engine with gateway `gw` (shipped site rules, online) and units 1 to `units` under
    /// `file`, each with the points `names` (point `i` of unit `n` has id `(n - 1) * 100 + i`)
    /// and `derived_points`.
    fn site(file: &RuleFile, names: &[&str], units: i64, derived_points: HashMap<String, i64>) -> Engine {
        let mut engine = Engine::default();
        engine.set_gateway("gw", Arc::new(CompiledRules::compile(&rules::site_defaults(), &[])), true, 0);
        for unit in 1..=units {
            let points =
                names.iter().enumerate().map(|(i, n)| ((unit - 1) * 100 + i as i64, (*n).to_owned())).collect();
            engine.set_unit(UnitSetup {
                unit_id: unit,
                gateway: "gw".into(),
                points,
                units_of_measure: HashMap::new(),
                derived_points: derived_points.clone(),
                rules: Arc::new(CompiledRules::compile(file, names)),
                unreadable_since: None,
            });
        }
        engine
    }

    /// The data-driven helper every rule test goes through: a unit of `profile` whose points
    /// start at `baseline`; at each `(second, point, value)` a point changes (`None`: bad
    /// quality). Every second of `duration` the unit reports all its points (like a gateway's
    /// snapshot) and the clock ticks; with `jitter`, temperatures flicker by 0.1 as real ones
    /// do. Returns what happened as `"<second>s raise <rule> g<grade>"`
    /// and `"<second>s clear <rule>"`.
    fn run(
        profile: &str,
        overrides: &[(&str, serde_json::Value)],
        baseline: &[(&str, f64)],
        changes: &[(i64, &str, Option<f64>)],
        duration: i64,
        jitter: bool,
    ) -> Vec<String> {
        let names: Vec<&str> = baseline.iter().map(|(name, _)| *name).collect();
        let mut engine = site(&patched(profile, overrides), &names, 1, HashMap::new());
        let mut values: Vec<Option<f64>> = baseline.iter().map(|(_, v)| Some(*v)).collect();
        let mut log = Vec::new();
        for second in 0..=duration {
            for (_, name, value) in changes.iter().filter(|(at, _, _)| *at == second) {
                let index = names.iter().position(|n| n == name).expect("a baseline point");
                values[index] = *value;
            }
            let at = second * 1000;
            engine.gateway_seen("gw", at);
            // Real temperatures flicker in their last digit.
            let flicker =
                |i: usize| if jitter && names[i].ends_with("_temp") { 0.1 * (second % 2) as f64 } else { 0.0 };
            let readings: Vec<(i64, Millis, Option<f64>)> =
                values.iter().enumerate().map(|(i, v)| (i as i64, at, v.map(|v| v + flicker(i)))).collect();
            let mut output = engine.observe(&readings);
            output.changes.extend(engine.tick(at + 500).changes);
            for change in output.changes {
                log.push(match change {
                    Change::Raise { rule, grade, at, .. } => format!("{}s raise {rule} g{grade}", at / 1000),
                    Change::Clear { rule, at, .. } => format!("{}s clear {rule}", at / 1000),
                });
            }
        }
        log
    }

    /// A healthy CH530 at part load.
    const CH530: [(&str, f64); 12] = [
        ("running", 1.0),
        ("flow_proven", 1.0),
        ("active_setpoint", 7.0),
        ("evap_leaving_temp", 7.1),
        ("evap_entering_temp", 11.5),
        ("evap_refrig_temp", 4.9),
        ("cond_entering_temp", 29.0),
        ("cond_leaving_temp", 33.5),
        ("cond_refrig_temp", 35.6),
        ("cond_refrig_pressure", 890.0),
        ("compressor_starts", 1200.0),
        ("diagnostic_code", 0.0),
    ];

    fn ch530(changes: &[(i64, &str, Option<f64>)], duration: i64) -> Vec<String> {
        run("trane-ch530", &[], &CH530, changes, duration, true)
    }

    #[test]
    fn a_healthy_unit_raises_nothing() {
        assert_eq!(ch530(&[], 4000), Vec::<String>::new());
    }

    #[test]
    fn supply_too_warm_while_running_raises_after_the_on_delay_and_clears_with_hysteresis() {
        let log = ch530(
            &[
                (40, "evap_leaving_temp", Some(9.5)),
                (200, "evap_leaving_temp", Some(8.8)),
                (300, "evap_leaving_temp", Some(8.2)),
            ],
            400,
        );
        // (The supply's trend is known once its readings span 10 s.) On at 40 s + 60 s; 8.8 is
        // within the 0.5 K hysteresis; 8.2 clears 30 s later.
        assert_eq!(log, ["100s raise chw_supply_high g1", "330s clear chw_supply_high"]);
    }

    #[test]
    fn field_a_pull_down_after_a_start_raises_nothing_but_a_unit_that_stops_falling_does() {
        // Stopped, the loop warms to 12 °C; started at 100 s, the supply falls 0.5 K a minute.
        let mut changes =
            vec![(0, "running", Some(0.0)), (0, "evap_leaving_temp", Some(12.0)), (100, "running", Some(1.0))];
        let pull_down: Vec<(i64, f64)> = (0..=10).map(|m| (100 + 60 * m, 12.0 - 0.5 * m as f64)).collect();
        changes.extend(pull_down.iter().map(|(at, t)| (*at, "evap_leaving_temp", Some(*t))));
        assert_eq!(ch530(&changes, 1500), Vec::<String>::new(), "a pull-down is not a fault");
        // The same start, but the supply stalls at 10 °C (3 K above setpoint) after 4 minutes.
        let mut stalled =
            vec![(0, "running", Some(0.0)), (0, "evap_leaving_temp", Some(12.0)), (100, "running", Some(1.0))];
        stalled.extend(pull_down.iter().take(5).map(|(at, t)| (*at, "evap_leaving_temp", Some(*t))));
        // (The evaporator approach widens too in this sketch; only the supply rule is looked at.)
        let log: Vec<String> = ch530(&stalled, 1500).into_iter().filter(|l| l.contains("chw_supply_high")).collect();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].ends_with("raise chw_supply_high g1"), "{log:?}");
        let at: i64 = log[0].split('s').next().and_then(|s| s.parse().ok()).expect("a time");
        // Not before the 10 minutes' settling after the start, nor long after it.
        assert!((700..=800).contains(&at), "raised at {at} s: {log:?}");
    }

    #[test]
    fn a_condition_that_fails_before_its_delay_raises_nothing() {
        assert_eq!(
            ch530(&[(10, "evap_leaving_temp", Some(9.5)), (50, "evap_leaving_temp", Some(7.0))], 200),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_stopped_unit_is_not_held_to_its_setpoint() {
        let log = ch530(&[(10, "running", Some(0.0)), (10, "evap_leaving_temp", Some(14.0))], 300);
        assert_eq!(log, Vec::<String>::new());
    }

    #[test]
    fn a_trip_raises_with_the_code_text_and_grade_and_a_new_code_regrades() {
        let log = ch530(
            &[
                (5, "running", Some(0.0)),
                (5, "diagnostic_code", Some(101.0)),
                (20, "diagnostic_code", Some(47.0)),
                (60, "diagnostic_code", Some(0.0)),
            ],
            100,
        );
        assert_eq!(log, ["5s raise trip g4", "20s raise trip g1", "60s clear trip"]);
    }

    #[test]
    fn freeze_risk_from_low_refrigerant_temperature() {
        let log = ch530(&[(10, "evap_refrig_temp", Some(-1.0)), (100, "evap_refrig_temp", Some(4.0))], 200);
        assert_eq!(log, ["20s raise freeze_risk g2", "160s clear freeze_risk"]);
    }

    #[test]
    fn high_condenser_pressure_and_approach() {
        let log = ch530(&[(10, "cond_refrig_pressure", Some(1250.0)), (10, "cond_refrig_temp", Some(41.0))], 400);
        assert_eq!(log, ["40s raise high_condenser_pressure g2", "310s raise cond_approach_high g3"]);
    }

    #[test]
    fn a_rising_approach_is_caught_by_its_rate_before_its_threshold() {
        let overrides = [("cond_approach_rising", serde_json::json!({"window_s": 600}))];
        let changes: Vec<(i64, &str, Option<f64>)> =
            (1..=5).map(|minute| (minute * 60, "cond_refrig_temp", Some(35.6 + 0.5 * minute as f64))).collect();
        let log = run("trane-ch530", &overrides, &CH530, &changes, 700, true);
        // 0.5 K a minute for 5 minutes: once the window is 90 % full (540 s) the approach has
        // risen 2.5 K, past the 2 K rise, while still under the 5 K threshold.
        assert_eq!(log, ["540s raise cond_approach_rising g4"]);
    }

    #[test]
    fn lost_flow_while_running() {
        let log = ch530(&[(10, "flow_proven", Some(0.0)), (50, "flow_proven", Some(1.0))], 100);
        assert_eq!(log, ["15s raise low_flow g1", "80s clear low_flow"]);
    }

    #[test]
    fn short_cycling_counts_starts_over_the_last_hour() {
        let changes: Vec<(i64, &str, Option<f64>)> =
            (1..=8).map(|n| (n * 300, "compressor_starts", Some(1200.0 + n as f64))).collect();
        let log = ch530(&changes, 2500);
        assert_eq!(log, ["2100s raise short_cycling g3"]);
    }

    #[test]
    fn a_sensor_out_of_range_or_frozen() {
        assert_eq!(ch530(&[(10, "evap_leaving_temp", Some(-50.0))], 30), ["15s raise sensor_out_of_range g3"]);
        let overrides = [("sensor_stuck", serde_json::json!({"for_s": 120}))];
        // Baseline values never move: the frozen sensor is the only one watched.
        let log = run("trane-ch530", &overrides, &CH530, &[(200, "evap_leaving_temp", Some(7.2))], 210, false);
        assert_eq!(log, ["120s raise sensor_stuck g3", "200s clear sensor_stuck"]);
    }

    #[test]
    fn a_unit_that_stops_answering_is_graded_by_how_long() {
        let bad: Vec<(i64, &str, Option<f64>)> = CH530.iter().map(|(name, _)| (100, *name, None)).collect();
        let log = ch530(&bad, 3800);
        assert_eq!(log, ["400s raise device_offline g3", "3700s raise device_offline g2"]);
        // One failed sensor is not a unit that stops answering.
        assert_eq!(ch530(&[(100, "cond_entering_temp", None)], 1000), Vec::<String>::new());
    }

    #[test]
    fn a_gateway_outage_raises_one_site_alarm_and_holds_back_the_units() {
        let names: Vec<&str> = CH530.iter().map(|(n, _)| *n).collect();
        let mut engine = site(&rules::unit_defaults("trane-ch530"), &names, 3, HashMap::new());
        engine.gateway_seen("gw", 0);
        engine.gateway_died("gw", 1_000);
        let mut changes = Vec::new();
        for second in 1..=4000 {
            changes.extend(engine.tick(second * 1000).changes);
        }
        let rules: Vec<(Target, String, u8)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Raise { target, rule, grade, .. } => Some((target.clone(), rule.clone(), *grade)),
                Change::Clear { .. } => None,
            })
            .collect();
        let site = Target::Gateway("gw".into());
        assert_eq!(rules, [(site.clone(), "gateway_offline".into(), 3), (site.clone(), "gateway_offline".into(), 2)]);
        // Back: the site alarm clears and the units' silence was the gateway's, not theirs.
        let back = engine.gateway_seen("gw", 4_001_000);
        assert_eq!(back.changes, [Change::Clear { target: site, rule: "gateway_offline".into(), at: 4_001_000 }]);
        assert!(engine.tick(4_002_000).changes.is_empty());
    }

    #[test]
    fn stale_values_during_a_gateway_outage_raise_nothing() {
        let file = patched("trane-ch530", &[("sensor_stuck", serde_json::json!({"for_s": 60}))]);
        let names: Vec<&str> = CH530.iter().map(|(n, _)| *n).collect();
        let mut engine = site(&file, &names, 1, HashMap::new());
        let readings: Vec<(i64, Millis, Option<f64>)> =
            CH530.iter().enumerate().map(|(i, (_, v))| (i as i64, 1000, Some(*v))).collect();
        engine.gateway_seen("gw", 1000);
        assert!(engine.observe(&readings).changes.is_empty());
        engine.gateway_died("gw", 2000);
        // An hour without data: only the site alarm.
        let mut changes = Vec::new();
        for second in 3..3600 {
            changes.extend(engine.tick(second * 1000).changes);
        }
        assert!(changes.iter().all(|c| matches!(c, Change::Raise { target: Target::Gateway(_), .. })), "{changes:?}");
    }

    #[test]
    fn derived_values_are_stored_when_they_change() {
        let file = rules::unit_defaults("trane-ch530");
        let names: Vec<&str> = CH530.iter().map(|(n, _)| *n).collect();
        let rules = Arc::new(CompiledRules::compile(&file, &names));
        assert_eq!(
            rules.derived_names().collect::<Vec<_>>(),
            ["chw_delta_t", "supply_deviation", "evap_approach", "cond_approach", "supply_trend", "starts_per_hour"]
        );
        let derived_points = HashMap::from([("chw_delta_t".to_owned(), 100)]);
        let mut engine = site(&file, &names, 1, derived_points);
        let all = |at| -> Vec<(i64, Millis, Option<f64>)> {
            CH530.iter().enumerate().map(|(i, (_, v))| (i as i64, at, Some(*v))).collect()
        };
        assert_eq!(engine.observe(&all(1000)).derived, [DerivedReading { point_id: 100, at: 1000, value: 4.4 }]);
        assert!(engine.observe(&all(2000)).derived.is_empty(), "unchanged values are not stored again");
        let warmer = engine.observe(&[(4, 3000, Some(12.0))]).derived;
        assert_eq!(warmer, [DerivedReading { point_id: 100, at: 3000, value: 4.9 }]);
    }

    #[test]
    fn rules_for_points_a_unit_lacks_are_skipped_with_the_reason() {
        let compiled = CompiledRules::compile(&rules::unit_defaults("trane-ch530"), &["evap_leaving_temp", "running"]);
        let skipped: Vec<&str> = compiled.skipped.iter().map(|(key, _)| key.as_str()).collect();
        assert!(skipped.contains(&"chw_supply_high"), "{skipped:?}");
        assert!(compiled.rules().any(|r| r.key == "sensor_stuck"));
    }
}
