//! Fault detection: the rule engine fed by ingest, the alarm lifecycle in the database, and the
//! fault-moment capture.
//!
//! Ingest hands every committed batch to [`run`] (readings, and which gateways were heard from
//! or left). The engine ([`engine`]) turns them into raises and clears; this task writes those
//! as alarm episodes and events ([`db`]), stores derived values as readings, asks the gateway to
//! poll a unit faster when one of its alarms opens, and copies the readings around the alarm's
//! moment into its capture once the window has passed. Committed events are also broadcast
//! in-process ([`AlarmEvent`]); `alarm_events` is the durable stream, in id order.

pub mod api;
pub mod db;
pub mod engine;
pub mod expr;
pub mod rules;

use std::{collections::HashMap, sync::Arc, time::Duration};

use chillcloud_proto::{GatewayId, PollBoost};
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use db::AlarmEvent;
use engine::{Change, CompiledRules, Engine, Millis, Output, Target, UnitSetup};
use rules::RuleFile;

use crate::{
    gateway_link::{GatewayLink, ToGateway},
    metrics::Metrics,
    partitions::Ownership,
    store,
};

/// What ingest tells the engine, after the commit.
#[derive(Debug)]
pub enum Input {
    /// Readings: point id, time (ms), value (`None` for bad quality).
    Readings(Vec<(i64, Millis, Option<f64>)>),
    /// A gateway was heard from.
    Seen {
        /// The gateway.
        gateway: String,
        /// When (ms).
        at: Millis,
    },
    /// A gateway's death message.
    Died {
        /// The gateway.
        gateway: String,
        /// When it arrived (ms).
        at: Millis,
    },
    /// A birth was stored: the gateway's units and points may have changed.
    Birth {
        /// The gateway.
        gateway: String,
    },
    /// Rule overrides of a gateway's site or units changed.
    RulesChanged {
        /// The gateway.
        gateway: String,
    },
}

/// A handle to the running detection task.
#[derive(Clone)]
pub struct Alarms {
    inputs: mpsc::Sender<Input>,
    events: broadcast::Sender<AlarmEvent>,
}

impl Alarms {
    /// Sends an input; waits if the engine is behind (ingest slows rather than memory growing).
    pub async fn send(&self, input: Input) {
        if self.inputs.send(input).await.is_err() {
            debug!("alarm engine stopped; input dropped");
        }
    }

    /// Subscribes to alarm events as they are committed.
    pub fn subscribe(&self) -> broadcast::Receiver<AlarmEvent> {
        self.events.subscribe()
    }

    pub(crate) fn announce(&self, event: AlarmEvent) {
        let _ = self.events.send(event);
    }
}

/// Creates the handle and the receiving end for [`run`].
pub fn channel() -> (Alarms, mpsc::Receiver<Input>) {
    let (inputs, receiver) = mpsc::channel(64);
    let (events, _) = broadcast::channel(1024);
    (Alarms { inputs, events }, receiver)
}

/// How often delays, silences and due captures are looked at.
const TICK: Duration = Duration::from_millis(500);

/// The notification a rule change sends with its commit, whichever replica made it.
const RULES_CHANGED: &str = "chillcloud_rules_changed";

/// Hands rule changes made through any replica to this one's engine, which reloads the gateway
/// if it owns it. A notification sent while the connection was being re-established is missed:
/// the change then applies at the gateway's next birth or this replica's next reload.
async fn listen_for_rule_changes(pool: PgPool, alarms: Alarms, shutdown: CancellationToken) {
    async fn forward(pool: &PgPool, alarms: &Alarms) -> sqlx::Result<std::convert::Infallible> {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(RULES_CHANGED).await?;
        loop {
            let notification = listener.recv().await?;
            alarms.send(Input::RulesChanged { gateway: notification.payload().to_owned() }).await;
        }
    }
    loop {
        let error = tokio::select! {
            () = shutdown.cancelled() => return,
            Err(error) = forward(&pool, &alarms) => error,
        };
        warn!(%error, "listening for rule changes failed; will retry");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// A unit's rule file: its profile's defaults with its site's, then its own, overrides.
pub fn unit_rule_file(profile: &str, overrides: &[(Option<i64>, String, serde_json::Value)], unit: i64) -> RuleFile {
    let mut file = rules::unit_defaults(profile);
    for scope in [None, Some(unit)] {
        for (_, key, patch) in overrides.iter().filter(|(u, key, _)| *u == scope && !rules::is_site_rule(key)) {
            if key == rules::CAPTURE_KEY {
                file.capture = Some(rules::patch_capture(file.capture.unwrap_or_default(), patch));
            } else if let Some(name) = key.strip_prefix(rules::DERIVED_PREFIX) {
                rules::apply_derived_override(&mut file.derived, name, patch);
            } else {
                rules::apply_override(&mut file.rules, key, patch);
            }
        }
    }
    file
}

/// A gateway's site rule file.
pub fn site_rule_file(overrides: &[(Option<i64>, String, serde_json::Value)]) -> RuleFile {
    let mut file = rules::site_defaults();
    let site_rule = |key: &str| key != rules::CAPTURE_KEY && !key.starts_with(rules::DERIVED_PREFIX);
    for (_, key, patch) in overrides.iter().filter(|(u, key, _)| u.is_none() && site_rule(key)) {
        rules::apply_override(&mut file.rules, key, patch);
    }
    file
}

struct UnitInfo {
    gateway: String,
    device_key: String,
    capture: rules::CaptureSettings,
}

struct Detector {
    pool: PgPool,
    engine: Engine,
    units: HashMap<i64, UnitInfo>,
    alarms: Alarms,
    gateways: GatewayLink,
    live: crate::live::Live,
    metrics: Arc<Metrics>,
    /// The partitions this replica owns: only their gateways are evaluated here.
    ownership: Ownership,
}

/// Runs detection for the gateways of the partitions `ownership` holds, until `shutdown`;
/// rebuilds its state from the database whenever they change. `gateways` reaches the broker
/// through ingest's client.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    pool: PgPool,
    alarms: Alarms,
    mut inputs: mpsc::Receiver<Input>,
    gateways: GatewayLink,
    live: crate::live::Live,
    metrics: Arc<Metrics>,
    mut ownership: Ownership,
    shutdown: CancellationToken,
) {
    ownership.mark_seen();
    tokio::spawn(listen_for_rule_changes(pool.clone(), alarms.clone(), shutdown.clone()));
    let mut detector = Detector {
        pool,
        engine: Engine::default(),
        units: HashMap::new(),
        alarms,
        gateways,
        live,
        metrics,
        ownership: ownership.clone(),
    };
    // Load everything, retrying while the database is unavailable.
    let mut delay = Duration::from_millis(200);
    while let Err(error) = detector.load(None).await {
        warn!(%error, retry_in = ?delay, "loading rules and units failed");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut needs_reload = false;
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => break,
            input = inputs.recv() => match input {
                Some(input) => detector.handle(input).await,
                None => break,
            },
            _ = tick.tick() => if needs_reload { detector.reload().await } else { detector.tick().await },
            changed = ownership.changed() => if changed {
                // A partition taken over starts from what its previous owner committed.
                detector.reload().await
            } else {
                break
            },
        };
        match result {
            Ok(()) => needs_reload = false,
            Err(error) => {
                detector.metrics.alarm_errors.inc();
                warn!(%error, "alarm processing failed; state is reloaded from the database");
                // The engine may be ahead of the database now: start again from what is stored,
                // retried every tick until it loads.
                needs_reload = true;
            }
        }
    }
}

impl Detector {
    /// Rebuilds everything from the database; the running engine stays until that succeeds.
    async fn reload(&mut self) -> sqlx::Result<()> {
        let mut fresh = Detector {
            pool: self.pool.clone(),
            engine: Engine::default(),
            units: HashMap::new(),
            alarms: self.alarms.clone(),
            gateways: self.gateways.clone(),
            live: self.live.clone(),
            metrics: self.metrics.clone(),
            ownership: self.ownership.clone(),
        };
        fresh.load(None).await?;
        *self = fresh;
        info!("alarm state reloaded");
        Ok(())
    }

    /// Loads (or reloads) the rules, units and raised alarms of one gateway, or of all, of the
    /// partitions owned.
    async fn load(&mut self, only: Option<&str>) -> sqlx::Result<()> {
        let now = now_ms();
        let owned = self.ownership.owned();
        let owns = |gateway: &str| owned.contains(&crate::partitions::of(gateway));
        let mut active = db::active_alarms(&self.pool, only).await?;
        // Units not owned are never loaded, so their alarms are passed over below; a site
        // alarm of a gateway not owned must not be taken for one whose rule is gone.
        active.retain(|(target, _, _)| !matches!(target, Target::Gateway(id) if !owns(id)));
        for (gateway, online, last_seen) in db::gateways(&self.pool, only).await? {
            if !owns(&gateway) {
                continue;
            }
            let overrides = db::overrides(&self.pool, &gateway).await?;
            let site = Arc::new(CompiledRules::compile(&site_rule_file(&overrides), &[]));
            // Silence is counted from when this server started listening: a server that was
            // down itself must not find every site silent. A site already alarmed as silent
            // keeps its real last contact.
            let alarmed = active.iter().any(|(t, _, _)| *t == Target::Gateway(gateway.clone()));
            let since = if online && !alarmed { now } else { last_seen.unwrap_or(now) };
            self.engine.set_gateway(&gateway, site, online, since);
            let mut compiled_units = Vec::new();
            let mut derived = Vec::new();
            for unit in db::units(&self.pool, Some(&gateway)).await? {
                let file = unit_rule_file(&unit.profile, &overrides, unit.id);
                let names: Vec<&str> = unit.points.iter().map(|(_, name)| name.as_str()).collect();
                let compiled = CompiledRules::compile(&file, &names);
                for (key, reason) in &compiled.skipped {
                    debug!(unit = unit.id, rule = key, reason, "rule not applied");
                }
                for definition in file.derived.iter().filter(|d| compiled.derived_names().any(|n| n == d.name)) {
                    derived.push((unit.id, definition.name.clone(), definition.unit.clone(), definition.decimals));
                }
                compiled_units.push((unit, compiled));
            }
            // One statement for the whole site: a server with tens of thousands of units
            // starts in seconds.
            let mut derived_points = db::derived_points(&self.pool, &derived).await?;
            for (unit, compiled) in compiled_units {
                self.units.insert(
                    unit.id,
                    UnitInfo { gateway: gateway.clone(), device_key: unit.device_key, capture: compiled.capture },
                );
                let setup = UnitSetup {
                    unit_id: unit.id,
                    gateway: gateway.clone(),
                    points: unit.points,
                    units_of_measure: unit.units_of_measure,
                    derived_points: derived_points.remove(&unit.id).unwrap_or_default(),
                    rules: Arc::new(compiled),
                    unreadable_since: unit.unreadable_since,
                };
                self.engine.set_unit(setup);
            }
        }
        for (target, rule, grade) in active {
            let gateway = match &target {
                Target::Unit(id) => self.units.get(id).map(|u| u.gateway.clone()),
                Target::Gateway(id) => Some(id.clone()),
            };
            let Some(gateway) = gateway else { continue };
            if !self.engine.restore(&target, &rule, grade) {
                // The rule was removed or disabled: its alarm is over.
                let (gateway, unit) = db::columns(&target, &gateway);
                info!(%gateway, ?unit, rule, "alarm cleared: its rule no longer applies");
                if let Some(event) = db::clear(&self.pool, &gateway, unit, &rule, now).await? {
                    self.alarms.announce(event);
                }
            }
        }
        Ok(())
    }

    async fn handle(&mut self, input: Input) -> sqlx::Result<()> {
        let output = match input {
            Input::Readings(readings) => self.engine.observe(&readings),
            Input::Seen { gateway, at } => self.engine.gateway_seen(&gateway, at),
            Input::Died { gateway, at } => {
                self.engine.gateway_died(&gateway, at);
                Output::default()
            }
            Input::Birth { gateway } | Input::RulesChanged { gateway } => {
                self.load(Some(&gateway)).await?;
                Output::default()
            }
        };
        self.apply(output).await
    }

    async fn tick(&mut self) -> sqlx::Result<()> {
        let output = self.engine.tick(now_ms());
        self.apply(output).await?;
        // A capture that fails is retried on the next tick; it never resets detection.
        let units: Vec<i64> = self.units.keys().copied().collect();
        match db::due_captures(&self.pool, &units).await {
            Ok(due) => {
                for (alarm_id, unit_id, from, to) in due {
                    match db::take_capture(&self.pool, alarm_id, unit_id, from, to).await {
                        Ok(()) => debug!(alarm_id, "fault-moment capture taken"),
                        Err(error) => warn!(alarm_id, %error, "taking a capture failed; will retry"),
                    }
                }
            }
            Err(error) => warn!(%error, "looking for due captures failed; will retry"),
        }
        Ok(())
    }

    async fn apply(&mut self, output: Output) -> sqlx::Result<()> {
        if !output.derived.is_empty() {
            let mut rows = store::ReadingRows::default();
            for reading in &output.derived {
                let at = chrono::DateTime::from_timestamp_millis(reading.at).unwrap_or_default();
                rows.push(reading.point_id, at, Some(reading.value), chillcloud_proto::Quality::Good);
            }
            self.metrics.derived_stored.add(rows.len() as u64);
            store::flush(&self.pool, rows).await?;
            let live: Vec<crate::live::Reading> =
                output.derived.iter().map(|r| (r.point_id, r.at, Some(r.value))).collect();
            self.live.publish(&live);
        }
        for change in output.changes {
            match change {
                Change::Raise { target, rule, grade, title, message, at } => {
                    let unit = match &target {
                        Target::Unit(id) => self.units.get(id),
                        Target::Gateway(_) => None,
                    };
                    let gateway = unit.map_or_else(|| db::columns(&target, "").0, |u| u.gateway.clone());
                    let (_, unit_id) = db::columns(&target, &gateway);
                    let capture = unit.map(|u| u.capture);
                    let raised =
                        db::raise(&self.pool, &gateway, unit_id, &rule, grade, &title, &message, at, capture).await?;
                    if raised.new_episode {
                        self.metrics.alarms_raised.inc();
                        info!(%gateway, unit = ?unit_id, rule, grade, message, "alarm raised");
                        if let Some(unit) = unit {
                            self.boost(unit, at);
                        }
                    }
                    if let Some(event) = raised.event {
                        self.alarms.announce(event);
                    }
                }
                Change::Clear { target, rule, at } => {
                    let gateway = match &target {
                        Target::Unit(id) => self.units.get(id).map(|u| u.gateway.clone()).unwrap_or_default(),
                        Target::Gateway(id) => id.clone(),
                    };
                    let (gateway, unit_id) = db::columns(&target, &gateway);
                    if let Some(event) = db::clear(&self.pool, &gateway, unit_id, &rule, at).await? {
                        info!(%gateway, unit = ?unit_id, rule, "alarm cleared");
                        self.alarms.announce(event);
                    }
                }
            }
        }
        Ok(())
    }

    /// Asks the unit's gateway to poll it fast for the capture's after-window.
    fn boost(&self, unit: &UnitInfo, at: Millis) {
        let capture = unit.capture;
        if capture.boost_interval_ms == 0 {
            return;
        }
        let Ok(gateway) = GatewayId::new(unit.gateway.clone()) else { return };
        let boost = PollBoost {
            device: unit.device_key.clone(),
            interval_ms: capture.boost_interval_ms,
            until_ms: at.max(now_ms()) + (capture.after_s * 1000.0) as i64,
        };
        if !self.gateways.send(gateway, ToGateway::PollBoost(boost)) {
            debug!("broker client stopped; poll boost not sent");
        }
    }
}
