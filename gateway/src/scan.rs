//! Commissioning scan: finds the Modbus units that answer at TCP addresses or on an RTU line,
//! identifies each controller, proposes a built-in profile and writes a gateway configuration
//! that `check-config` accepts. It only reads, sends one request at a time and pauses between
//! requests, so it never floods a plant network or a serial line.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr, time::Duration};

use tokio::{
    net::TcpStream,
    time::{Instant, sleep, sleep_until, timeout},
};
use tokio_modbus::{
    ExceptionCode,
    client::{Context, Reader, tcp},
    prelude::ReadCode,
    slave::{Slave, SlaveContext},
};
use tracing::info;

use crate::{
    config::BusConfig,
    modbus::ReadBlock,
    profile::Profile,
    transport::{self, RequestError, SharedBus},
};

/// Most hosts one scan may cover: a wider range is a typo, not a plant network.
pub const MAX_HOSTS: usize = 1024;
/// Most parts of one Read Device Identification answer followed: a device that keeps saying
/// "more follows" is not followed for ever.
const MAX_IDENTIFICATION_PARTS: usize = 4;

/// Where a scan looks.
pub enum Target {
    /// A Modbus TCP server, or a TCP-to-serial gateway with units behind it.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// An RTU line, with the `[[buses]]` table that configures it (printed into the result).
    Line {
        /// The line, checked.
        bus: BusConfig,
        /// Its table's TOML text.
        table: String,
    },
}

impl Target {
    fn label(&self) -> String {
        match self {
            Target::Tcp { host, port } => format!("{host}:{port}"),
            Target::Line { bus, .. } => format!("line {}", bus.id),
        }
    }
}

/// What to scan and how gently.
pub struct Plan {
    /// Where to look, and the unit ids to ask there.
    pub targets: Vec<(Target, Vec<u8>)>,
    /// How long to wait for each answer.
    pub wait: Duration,
    /// Least time between the end of one request and the start of the next.
    pub pause: Duration,
}

/// What a controller reports to Read Device Identification (function 43/14, basic objects).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identification {
    /// Object 0.
    pub vendor_name: String,
    /// Object 1.
    pub product_code: String,
    /// Object 2.
    pub revision: String,
}

/// The profile a unit is proposed to use, and why.
#[derive(Debug, Clone, PartialEq)]
pub enum Proposal {
    /// Its device identification names the profile's vendor and product.
    ByIdentification(String),
    /// The profile's identifying points read plausible values; `others` matched as well.
    ByPoints {
        /// The proposed profile.
        profile: String,
        /// Each identifying point's value and unit.
        readings: Vec<(String, f64, String)>,
        /// Other profiles whose points matched too.
        others: Vec<String>,
    },
    /// No built-in profile matches.
    Unknown,
}

/// A unit that answered.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Index into the plan's targets.
    pub target: usize,
    /// Its unit id.
    pub unit_id: u8,
    /// Its device identification, if it supports function 43/14.
    pub identification: Option<Identification>,
    /// The profile proposed.
    pub proposal: Proposal,
}

/// What a scan found.
#[derive(Default)]
pub struct Findings {
    /// Units that answered, in scan order.
    pub units: Vec<Unit>,
    /// Per target: the unit ids that did not answer.
    pub silent: BTreeMap<usize, Vec<u8>>,
    /// Per target: why it could not be scanned (no connection, no serial port).
    pub unreachable: BTreeMap<usize, String>,
}

/// Scans every target of `plan`, proposing one of `profiles` for each unit that answers.
pub async fn scan(plan: &Plan, profiles: &[Profile]) -> Findings {
    let mut findings = Findings::default();
    for (index, (target, unit_ids)) in plan.targets.iter().enumerate() {
        let mut prober = Prober::new(target, plan.wait, plan.pause);
        for &unit_id in unit_ids {
            match probe_unit(&mut prober, unit_id, profiles).await {
                Ok(Some((identification, proposal))) => {
                    info!(target = %target.label(), unit_id, ?proposal, "unit answered");
                    findings.units.push(Unit { target: index, unit_id, identification, proposal });
                }
                Ok(None) => findings.silent.entry(index).or_default().push(unit_id),
                Err(reason) => {
                    info!(target = %target.label(), %reason, "cannot scan");
                    findings.unreachable.insert(index, reason);
                    break;
                }
            }
        }
    }
    findings
}

/// Whether `unit_id` answers and what it is; `Err` when the target cannot be reached at all.
async fn probe_unit(
    prober: &mut Prober<'_>,
    unit_id: u8,
    profiles: &[Profile],
) -> Result<Option<(Option<Identification>, Proposal)>, String> {
    let identification = match prober.identification(unit_id).await {
        Ok(identification) => Some(identification),
        Err(Miss::Refused) => None,
        Err(Miss::Silent) => {
            // Some controllers ignore function codes they lack instead of refusing them: a unit
            // is present if it answers a plain read, even with an exception.
            let block = ReadBlock { kind: crate::modbus::RegisterKind::Holding, start: 0, count: 1, points: vec![] };
            match prober.read(unit_id, &block).await {
                Ok(_) | Err(Miss::Refused) => None,
                Err(Miss::Silent) => return Ok(None),
                Err(Miss::Unreachable(reason)) => return Err(reason),
            }
        }
        Err(Miss::Unreachable(reason)) => return Err(reason),
    };
    if let Some(found) = identification.as_ref().and_then(|id| named_by(id, profiles)) {
        return Ok(Some((identification, Proposal::ByIdentification(found.name.clone()))));
    }
    let mut matches = Vec::new();
    for profile in profiles {
        match identifying_readings(prober, unit_id, profile).await {
            Ok(Some(readings)) => matches.push((profile.name.clone(), readings)),
            Ok(None) => {}
            Err(reason) => return Err(reason),
        }
    }
    let mut matches = matches.into_iter();
    let proposal = match matches.next() {
        Some((profile, readings)) => Proposal::ByPoints { profile, readings, others: matches.map(|m| m.0).collect() },
        None => Proposal::Unknown,
    };
    Ok(Some((identification, proposal)))
}

/// The profile whose vendor and product text the identification contains.
pub fn named_by<'a>(identification: &Identification, profiles: &'a [Profile]) -> Option<&'a Profile> {
    let contains = |text: &str, part: &Option<String>| {
        part.as_ref().is_some_and(|part| text.to_lowercase().contains(&part.to_lowercase()))
    };
    profiles.iter().find(|profile| {
        profile.identify.as_ref().is_some_and(|identify| {
            contains(&identification.vendor_name, &identify.vendor_name)
                && (identify.product_code.is_none() || contains(&identification.product_code, &identify.product_code))
        })
    })
}

/// The values of `profile`'s identifying points if every one reads within its range and not
/// all of them are zero; `None` otherwise.
async fn identifying_readings(
    prober: &mut Prober<'_>,
    unit_id: u8,
    profile: &Profile,
) -> Result<Option<Vec<(String, f64, String)>>, String> {
    let Some(identify) = profile.identify.as_ref().filter(|i| !i.points.is_empty()) else { return Ok(None) };
    let mut readings = Vec::new();
    for wanted in &identify.points {
        let Some(point) = profile.points.iter().find(|p| p.name == wanted.name) else { return Ok(None) };
        let block = ReadBlock { kind: point.kind, start: point.address, count: point.width, points: vec![] };
        let value = match prober.read(unit_id, &block).await {
            Ok(words) => point.engineering_value(&words),
            Err(Miss::Unreachable(reason)) => return Err(reason),
            Err(Miss::Refused | Miss::Silent) => return Ok(None),
        };
        if !(wanted.min..=wanted.max).contains(&value) {
            return Ok(None);
        }
        readings.push((point.name.clone(), value, point.unit.clone()));
    }
    Ok(readings.iter().any(|(_, value, _)| *value != 0.0).then_some(readings))
}

/// Why a request got no useful answer.
enum Miss {
    /// The unit answered with an exception: it is there, without what was asked.
    Refused,
    /// No answer in time, or a TCP gateway reporting that no unit answered behind it.
    Silent,
    /// The target cannot be reached at all.
    Unreachable(String),
}

/// One target's connection, one request at a time, paced.
struct Prober<'a> {
    target: &'a Target,
    context: Option<Context>,
    wait: Duration,
    pause: Duration,
    next_request: Instant,
}

impl<'a> Prober<'a> {
    fn new(target: &'a Target, wait: Duration, pause: Duration) -> Self {
        Self { target, context: None, wait, pause, next_request: Instant::now() }
    }

    async fn identification(&mut self, unit_id: u8) -> Result<Identification, Miss> {
        let mut objects = BTreeMap::new();
        let mut object_id = 0;
        for _ in 0..MAX_IDENTIFICATION_PARTS {
            let wait = self.wait;
            let context = self.context(unit_id).await?;
            let answer = timeout(wait, context.read_device_identification(ReadCode::Basic, object_id)).await;
            let answer =
                answer.map_err(|_| RequestError::Timeout(wait)).and_then(|a| a?.map_err(RequestError::Exception));
            let response = match self.settle(answer).await {
                Ok(response) => response,
                // A later part that fails leaves what the first parts told.
                Err(_) if !objects.is_empty() => break,
                Err(miss) => return Err(miss),
            };
            for object in response.device_id_objects {
                objects.insert(object.id, String::from_utf8_lossy(&object.value).trim().to_owned());
            }
            if !response.more_follows || response.next_object_id <= object_id {
                break;
            }
            object_id = response.next_object_id;
        }
        let mut object = |id| objects.remove(&id).unwrap_or_default();
        Ok(Identification { vendor_name: object(0), product_code: object(1), revision: object(2) })
    }

    async fn read(&mut self, unit_id: u8, block: &ReadBlock) -> Result<Vec<u16>, Miss> {
        let wait = self.wait;
        let context = self.context(unit_id).await?;
        let answer = transport::read(context, block, wait).await;
        self.settle(answer).await
    }

    /// The connection, opened if need be, addressed to `unit_id`, once the pause since the last
    /// request has passed.
    async fn context(&mut self, unit_id: u8) -> Result<&mut Context, Miss> {
        sleep_until(self.next_request).await;
        if self.context.is_none() {
            let opened = match self.target {
                Target::Tcp { host, port } => {
                    let address = format!("{host}:{port}");
                    let socket = transport::resolve(&address).await.map_err(|e| Miss::Unreachable(e.to_string()))?;
                    match timeout(self.wait, TcpStream::connect(socket)).await {
                        Ok(Ok(stream)) => tcp::attach_slave(stream, Slave(unit_id)),
                        Ok(Err(error)) => return Err(Miss::Unreachable(format!("cannot connect: {error}"))),
                        Err(_) => return Err(Miss::Unreachable(format!("no connection within {:?}", self.wait))),
                    }
                }
                Target::Line { bus, .. } => {
                    SharedBus::new(bus.clone()).open(self.wait).await.map_err(|e| Miss::Unreachable(e.to_string()))?
                }
            };
            self.context = Some(opened);
        }
        let Some(context) = self.context.as_mut() else { unreachable!("opened above") };
        context.set_slave(Slave(unit_id));
        Ok(context)
    }

    /// Sorts an answer and keeps the pacing: after a timeout the connection is dropped, since a
    /// late answer must not be taken for the next request's (on a line, after a silence).
    async fn settle<T>(&mut self, answer: Result<T, RequestError>) -> Result<T, Miss> {
        let result = match answer {
            Ok(value) => Ok(value),
            Err(RequestError::Exception(
                ExceptionCode::GatewayPathUnavailable | ExceptionCode::GatewayTargetDevice,
            )) => Err(Miss::Silent),
            Err(RequestError::Exception(_)) => Err(Miss::Refused),
            Err(RequestError::Connect(address, error)) => Err(Miss::Unreachable(format!("{address}: {error}"))),
            Err(RequestError::Timeout(_) | RequestError::Transport(_) | RequestError::Skipped) => {
                self.context = None;
                if matches!(self.target, Target::Line { .. }) {
                    sleep(self.wait).await;
                }
                Err(Miss::Silent)
            }
        };
        let inter_frame = match self.target {
            Target::Line { bus, .. } => bus.inter_frame_delay,
            Target::Tcp { .. } => Duration::ZERO,
        };
        self.next_request = Instant::now() + self.pause.max(inter_frame);
        result
    }
}

/// The hosts of `spec`: `host[:port]`, a range `10.0.0.10-10.0.0.40[:port]` or
/// `10.0.0.10-40[:port]`, or a network `10.0.0.0/28[:port]` (its usable addresses); the port is
/// 502 unless given.
pub fn parse_hosts(spec: &str) -> Result<Vec<(String, u16)>, String> {
    let (hosts, port) = match spec.rsplit_once(':') {
        Some((hosts, port)) => (hosts, port.parse::<u16>().map_err(|_| format!("{spec:?}: bad port {port:?}"))?),
        None => (spec, 502),
    };
    let address =
        |text: &str| text.parse::<Ipv4Addr>().map_err(|_| format!("{spec:?}: {text:?} is not an IPv4 address"));
    let (first, last) = if let Some((network, bits)) = hosts.split_once('/') {
        let bits: u32 = bits.parse().ok().filter(|b| (8..=32).contains(b)).ok_or(format!("{spec:?}: bad prefix"))?;
        let base = u32::from(address(network)?) & (u32::MAX.checked_shl(32 - bits).unwrap_or(0));
        let size = 1u64 << (32 - bits);
        // A network's first and last addresses (network, broadcast) are not hosts, below /31.
        if size > 2 { (base + 1, base + size as u32 - 2) } else { (base, base + size as u32 - 1) }
    } else if let Some((first, last)) = hosts.split_once('-') {
        let first = u32::from(address(first)?);
        let last = match last.parse::<u8>() {
            Ok(octet) => (first & !0xff) | u32::from(octet),
            Err(_) => u32::from(address(last)?),
        };
        (first, last)
    } else if hosts.is_empty() {
        return Err(format!("{spec:?}: no host"));
    } else {
        // One host, by name or address.
        return Ok(vec![(hosts.to_owned(), port)]);
    };
    if last < first {
        return Err(format!("{spec:?}: the range ends before it starts"));
    }
    if (last - first) as usize >= MAX_HOSTS {
        return Err(format!("{spec:?}: {} hosts; at most {MAX_HOSTS} in one scan", u64::from(last - first) + 1));
    }
    Ok((first..=last).map(|a| (Ipv4Addr::from(a).to_string(), port)).collect())
}

/// Unit ids from `spec`, for example `1-4,7`: 1 to 255 (0 is the broadcast address, which
/// never answers).
pub fn parse_unit_ids(spec: &str) -> Result<Vec<u8>, String> {
    let mut ids = Vec::new();
    for part in spec.split(',') {
        let id = |text: &str| {
            text.trim().parse::<u8>().ok().filter(|&id| id > 0).ok_or(format!("{part:?}: unit ids are 1 to 255"))
        };
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (id(first)?, id(last)?),
            None => (id(part)?, id(part)?),
        };
        if last < first {
            return Err(format!("{part:?}: the range ends before it starts"));
        }
        ids.extend(first..=last);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// What the configuration written says besides the devices.
pub struct Preamble {
    /// The gateway's id.
    pub gateway_id: String,
    /// Its state directory.
    pub state_dir: String,
    /// The broker's host.
    pub mqtt_host: String,
    /// The broker's port.
    pub mqtt_port: u16,
    /// The file with the gateway's MQTT password.
    pub password_file: String,
}

/// A gateway configuration with a device for each unit a profile was proposed for, and a
/// comment for every other unit and target.
pub fn render(plan: &Plan, findings: &Findings, preamble: &Preamble) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `chillcloud-gateway scan`. Check it with `chillcloud-gateway check-config FILE`,\n\
         # read every value once with `chillcloud-gateway poll-once FILE`, then give the devices the\n\
         # names people know them by (`display_name`)."
    );
    for (index, (target, _)) in plan.targets.iter().enumerate() {
        let answered = findings.units.iter().filter(|u| u.target == index).count();
        let mut line = format!("# {}: {answered} unit(s) answered", target.label());
        if let Some(silent) = findings.silent.get(&index) {
            let _ = write!(line, "; silent: {}", ranges(silent));
        }
        if let Some(reason) = findings.unreachable.get(&index) {
            let _ = write!(line, "; not scanned: {}", reason.replace('\n', " "));
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "\ngateway_id = {}\nstate_dir = {}\n\n[mqtt]\nhost = {}\nport = {}\npassword_file = {}",
        quoted(&preamble.gateway_id),
        quoted(&preamble.state_dir),
        quoted(&preamble.mqtt_host),
        preamble.mqtt_port,
        quoted(&preamble.password_file),
    );
    for (index, (target, _)) in plan.targets.iter().enumerate() {
        if let Target::Line { table, .. } = target
            && findings.units.iter().any(|u| u.target == index)
        {
            let _ = writeln!(out, "\n[[buses]]\n{}", table.trim_end());
        }
    }
    let mut number = 0;
    for unit in &findings.units {
        let (target, _) = &plan.targets[unit.target];
        let what = match &unit.identification {
            Some(id) => format!(
                "identifies as vendor {:?}, product {:?}, revision {:?}",
                id.vendor_name, id.product_code, id.revision
            ),
            None => "no device identification (function 43/14)".to_owned(),
        };
        let _ = writeln!(out, "\n# {} unit {}: {what}", target.label(), unit.unit_id);
        let profile = match &unit.proposal {
            Proposal::ByIdentification(profile) => {
                let _ = writeln!(out, "# profile {profile}: named by its device identification");
                profile
            }
            Proposal::ByPoints { profile, readings, others } => {
                let values: Vec<String> =
                    readings.iter().map(|(name, value, unit)| format!("{name} = {value} {unit}")).collect();
                let _ = writeln!(out, "# profile {profile}: its points read {}", values.join(", ").replace('\n', " "));
                if !others.is_empty() {
                    let _ = writeln!(out, "# (the points of {} read plausibly too: check)", others.join(", "));
                }
                profile
            }
            Proposal::Unknown => {
                let _ = writeln!(
                    out,
                    "# No built-in profile matches: write one for it (docs/gateway.md, \"Controllers that differ\n\
                     # from a built-in profile\") and add a [[devices]] entry."
                );
                continue;
            }
        };
        number += 1;
        let _ = writeln!(out, "[[devices]]\nid = \"chiller-{number}\"\nprofile = {}", quoted(profile));
        match target {
            Target::Tcp { host, port } => {
                let _ = writeln!(out, "host = {}\nport = {port}", quoted(host));
            }
            Target::Line { bus, .. } => {
                let _ = writeln!(out, "bus = {}", quoted(&bus.id));
            }
        }
        let _ = writeln!(out, "unit_id = {}", unit.unit_id);
    }
    out
}

/// `text` as a TOML string, quoted and escaped.
pub fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// `1-3, 7` for [1, 2, 3, 7].
fn ranges(ids: &[u8]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = i;
        while i + 1 < ids.len() && ids[i + 1] == ids[i] + 1 {
            i += 1;
        }
        parts.push(if i == start { ids[i].to_string() } else { format!("{}-{}", ids[start], ids[i]) });
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile;

    #[test]
    fn host_specs_cover_ranges_and_networks_within_the_bound() {
        assert_eq!(parse_hosts("plc.local").expect("valid"), vec![("plc.local".to_owned(), 502)]);
        let range = parse_hosts("10.0.0.10-12:5020").expect("valid");
        assert_eq!(range, ["10.0.0.10", "10.0.0.11", "10.0.0.12"].map(|h| (h.to_owned(), 5020)).to_vec());
        assert_eq!(parse_hosts("10.0.0.10-10.0.0.11").expect("valid").len(), 2);
        let network = parse_hosts("192.168.1.0/29").expect("valid");
        assert_eq!(network.first().expect("valid").0, "192.168.1.1");
        assert_eq!(network.last().expect("valid").0, "192.168.1.6");
        assert!(parse_hosts("10.0.0.0/8").expect_err("refused").contains("at most 1024"));
        assert!(parse_hosts("10.0.0.9-3").expect_err("refused").contains("ends before"));
        assert!(parse_hosts("10.0.0.1:http").is_err());
    }

    #[test]
    fn unit_ids_are_lists_of_ranges_without_the_broadcast_address() {
        assert_eq!(parse_unit_ids("1-4,7,3").expect("valid"), vec![1, 2, 3, 4, 7]);
        assert!(parse_unit_ids("0-3").is_err());
        assert!(parse_unit_ids("5-2").is_err());
        assert!(parse_unit_ids("300").is_err());
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
    }

    #[test]
    fn device_identification_names_a_builtin_profile_ignoring_case() {
        let profiles: Vec<_> = profile::NAMES.iter().map(|n| profile::builtin(n).expect("valid")).collect();
        let id = |vendor: &str, product: &str| Identification {
            vendor_name: vendor.into(),
            product_code: product.into(),
            revision: String::new(),
        };
        assert_eq!(named_by(&id("TRANE Inc.", "Tracer CH530 Modbus"), &profiles).expect("valid").name, "trane-ch530");
        assert_eq!(
            named_by(&id("Daikin Applied", "MicroTech III"), &profiles).expect("valid").name,
            "daikin-microtech3"
        );
        assert!(named_by(&id("Trane", "UC800"), &profiles).is_none(), "the product must match too");
        assert!(named_by(&id("Pymodbus", "PM"), &profiles).is_none());
    }

    #[test]
    fn every_builtin_profile_can_be_recognised_by_a_scan() {
        for name in profile::NAMES {
            let identify = profile::builtin(name).expect("valid").identify.expect("identify section");
            assert!(identify.vendor_name.is_some() && identify.points.len() >= 2, "{name}");
        }
    }
}
