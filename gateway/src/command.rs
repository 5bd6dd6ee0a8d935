//! Remote commands: a write the server asks for, checked here again against the device's own
//! map, executed at most once, and confirmed by reading back.
//!
//! The MQTT side hands each command it receives to [`Commands`], which [`admit`]s it: one whose
//! id this gateway has taken before is not executed again (its result is sent again when
//! known), one past its expiry is answered `expired`, one the map does not allow (unknown point,
//! not writable, out of bounds, off the step) is answered `refused`. What is admitted is
//! recorded in the [`Journal`] on disk *before* it goes to the device's poller, so neither a
//! redelivery nor a restart can execute it twice. Between two polls, the device's poller then
//! [`execute`]s it: this module reads the local-mode point and the interlocks' points fresh
//! through the poller, has it write (function code 5, 6, 15 or 16) and read the point back, and
//! judges the outcome `done`, `refused` or `failed`. The result goes back through [`Commands`],
//! which keeps it for later copies, to the MQTT side, which publishes it.

use std::{
    collections::HashMap,
    io::{BufRead, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use chillcloud_proto::{Command, CommandResult, CommandStatus, MessageKind, decode};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::{DeviceConfig, Interlock},
    modbus::{DataType, Payload, RegisterKind, decode_words, encode_words, raw_of},
    now_ms,
    points::PointConfig,
    poll::DevicePoller,
    status::StatusBoard,
    throttle::Throttle,
    transport::RequestError,
};

/// A command whose expiry is further ahead than this is refused: a command is for now (the
/// server gives 30 s), the journal need keep ids only this long, and a gateway whose clock is
/// far behind does not execute old commands. Gateways keep their clocks by NTP.
pub const MAX_EXPIRY_AHEAD: Duration = Duration::from_secs(2 * 60);
/// Ids stay in the journal this long past their expiry, against a late redelivery.
const KEEP_AFTER_EXPIRY_MS: i64 = 60_000;

/// A write the device's map allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Index of the point in the device's `points`.
    pub point: usize,
    /// The engineering value asked for.
    pub value: f64,
    /// The raw form.
    pub payload: Payload,
}

/// What to do with a command that arrived.
#[derive(Debug, PartialEq)]
pub enum Admission {
    /// Recorded in the journal: hand it to device `device` (an index into the devices).
    Execute {
        /// The device's index.
        device: usize,
        /// The command.
        command: Command,
        /// What to write.
        write: Write,
    },
    /// Not executed; answer with this.
    Answer(CommandResult),
    /// A copy of a command taken before whose result is not known (still running, or taken
    /// before a restart): nothing to do.
    Duplicate,
    /// Not a command; nothing can be answered.
    Malformed(String),
}

/// The ids of commands taken, kept on disk until shortly after their expiry, with the results
/// of those finished in this run.
pub struct Journal {
    path: PathBuf,
    taken: HashMap<String, (i64, Option<CommandResult>)>,
}

impl Journal {
    /// Opens `<state_dir>/commands`, forgetting ids long expired.
    pub fn open(state_dir: &Path, now_ms: i64) -> std::io::Result<Self> {
        let path = state_dir.join("commands");
        let mut taken = HashMap::new();
        match std::fs::File::open(&path) {
            Ok(file) => {
                for line in std::io::BufReader::new(file).lines() {
                    // A torn last line (a crash mid-append) is skipped: its command was never
                    // handed to a device, since the append is synced first.
                    if let Some((expires, id)) = line?.split_once(' ')
                        && let Ok(expires_ms) = expires.parse::<i64>()
                        && expires_ms.saturating_add(KEEP_AFTER_EXPIRY_MS) > now_ms
                    {
                        taken.insert(id.to_owned(), (expires_ms, None));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let journal = Self { path, taken };
        journal.rewrite()?;
        Ok(journal)
    }

    /// Writes the ids still kept to a new file and puts it in place.
    fn rewrite(&self) -> std::io::Result<()> {
        let lines: String = self.taken.iter().map(|(id, (expires_ms, _))| format!("{expires_ms} {id}\n")).collect();
        crate::durable::replace(&self.path, lines.as_bytes())
    }

    /// Records `command` as taken, durably.
    fn take(&mut self, command: &Command) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        writeln!(file, "{} {}", command.expires_at_ms, command.id)?;
        file.sync_data()?;
        self.taken.insert(command.id.clone(), (command.expires_at_ms, None));
        Ok(())
    }

    /// Keeps `result`, to answer a later copy of its command with.
    pub fn finished(&mut self, result: &CommandResult) {
        if let Some((_, kept)) = self.taken.get_mut(&result.id) {
            *kept = Some(result.clone());
        }
    }

    /// Whether the command `id` was taken and has finished in this run.
    pub fn is_finished(&self, id: &str) -> bool {
        self.taken.get(id).is_some_and(|(_, result)| result.is_some())
    }

    /// Remembers, for this run, the answer to a command that was not executed, so a copy gets
    /// the same answer even if it would now pass (a reload changed the map, the disk recovered).
    fn answered(&mut self, command: &Command, result: &CommandResult, now_ms: i64) {
        let keep_until = command.expires_at_ms.min(now_ms.saturating_add(MAX_EXPIRY_AHEAD.as_millis() as i64));
        self.taken.entry(command.id.clone()).or_insert_with(|| (keep_until, Some(result.clone())));
    }

    /// Forgets ids long expired, and rewrites the file when it forgot any.
    pub fn prune(&mut self, now_ms: i64) -> std::io::Result<()> {
        let before = self.taken.len();
        self.taken.retain(|_, (expires_ms, _)| expires_ms.saturating_add(KEEP_AFTER_EXPIRY_MS) > now_ms);
        if self.taken.len() < before { self.rewrite() } else { Ok(()) }
    }
}

/// Where commands meet the pollers: an admitted command goes to its device's poller, and the
/// results the pollers send back are recorded; each command is counted in the status report.
pub struct Commands {
    journal: Journal,
    /// Each device's admitted commands, in device order.
    devices: Vec<mpsc::Sender<(Command, Write)>>,
    /// Results of executed commands.
    results: mpsc::Receiver<CommandResult>,
    /// Commands not executed are logged at most once a minute: a requester may repeat them.
    warnings: Throttle,
}

impl Commands {
    /// Commands recorded in `journal`, admitted ones sent to `devices` (a sender for each
    /// device's poller, in device order), whose results come back on `results`.
    pub fn new(
        journal: Journal,
        devices: Vec<mpsc::Sender<(Command, Write)>>,
        results: mpsc::Receiver<CommandResult>,
    ) -> Self {
        Self { journal, devices, results, warnings: Throttle::default() }
    }

    /// Admits the command in `payload`, from the server, for `devices` and hands it to its
    /// device's poller; returns the answer when it is not executed (refused, expired, or the
    /// result of an earlier copy).
    pub fn receive(&mut self, payload: &[u8], devices: &[DeviceConfig], status: &StatusBoard) -> Option<CommandResult> {
        match admit(&mut self.journal, devices, payload, now_ms()) {
            Admission::Execute { device, command, write } => {
                let id = command.id.clone();
                match self.devices[device].try_send((command, write)) {
                    Ok(()) => None,
                    Err(_) => {
                        let busy = answer(
                            &id,
                            CommandStatus::Refused,
                            "the device is busy with earlier commands; not executed",
                            now_ms(),
                        );
                        self.journal.finished(&busy);
                        status.command("refused");
                        Some(busy)
                    }
                }
            }
            Admission::Answer(result) => {
                // A repeated answer to a copy counts as a duplicate, not a second outcome.
                let repeated = self.journal.is_finished(&result.id);
                status.command(if repeated { "duplicate" } else { result.outcome() });
                if let Some(held_back) = self.warnings.allow() {
                    info!(id = %result.id, status = result.outcome(), message = %result.message, held_back, "remote command not executed");
                }
                Some(result)
            }
            Admission::Duplicate => {
                status.command("duplicate");
                info!("a copy of a command already taken; not executed again");
                None
            }
            Admission::Malformed(error) => {
                status.command("malformed");
                if let Some(held_back) = self.warnings.allow() {
                    warn!(%error, held_back, "a command that cannot be read was ignored");
                }
                None
            }
        }
    }

    /// The next result a poller sends back, kept to answer a later copy of its command with and
    /// counted in `status`; `None` once every poller has stopped.
    pub async fn next_result(&mut self, status: &StatusBoard) -> Option<CommandResult> {
        let result = self.results.recv().await?;
        self.journal.finished(&result);
        status.command(result.outcome());
        Some(result)
    }

    /// Forgets ids long expired (see [`Journal::prune`]).
    pub fn prune(&mut self, now_ms: i64) -> std::io::Result<()> {
        self.journal.prune(now_ms)
    }
}

/// A result of `status` for `command` with `message`.
pub fn answer(id: &str, status: CommandStatus, message: impl Into<String>, now_ms: i64) -> CommandResult {
    CommandResult {
        id: id.to_owned(),
        status: status as i32,
        message: message.into(),
        read_back: None,
        time_ms: now_ms,
    }
}

/// Decides what to do with the command in `payload`, received at `now_ms`, for `devices`;
/// records an admitted one in `journal` first.
pub fn admit(journal: &mut Journal, devices: &[DeviceConfig], payload: &[u8], now_ms: i64) -> Admission {
    let command: Command = match decode(MessageKind::Command, payload) {
        Ok(command) => command,
        Err(error) => return Admission::Malformed(error.to_string()),
    };
    // Ids go into the journal's lines and the server's table: keep them plain.
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if command.id.is_empty() || command.id.len() > 64 || !command.id.chars().all(plain) {
        return match command.id.is_empty() {
            true => Admission::Malformed("a command without an id".into()),
            false => Admission::Answer(answer(
                &command.id,
                CommandStatus::Refused,
                "the id must be 1 to 64 letters, digits, '-' or '_'",
                now_ms,
            )),
        };
    }
    if let Some((_, result)) = journal.taken.get(&command.id) {
        return match result {
            Some(result) => Admission::Answer(result.clone()),
            None => Admission::Duplicate,
        };
    }
    let not_executed = |journal: &mut Journal, status: CommandStatus, message: String| {
        let result = answer(&command.id, status, message, now_ms);
        journal.answered(&command, &result, now_ms);
        Admission::Answer(result)
    };
    if command.expires_at_ms <= now_ms {
        let late = now_ms.saturating_sub(command.expires_at_ms);
        let message = format!("arrived {late} ms after its expiry; not executed");
        return not_executed(journal, CommandStatus::Expired, message);
    }
    if command.expires_at_ms.saturating_sub(now_ms) > MAX_EXPIRY_AHEAD.as_millis() as i64 {
        let message = format!(
            "expires more than {} s ahead: a command is for now (or this gateway's clock is behind)",
            MAX_EXPIRY_AHEAD.as_secs()
        );
        return not_executed(journal, CommandStatus::Refused, message);
    }
    let Some(device) = devices.iter().position(|d| d.id == command.device) else {
        let message = format!("no device {:?} on this gateway", command.device);
        return not_executed(journal, CommandStatus::Refused, message);
    };
    let write = match plan(&devices[device], &command.point, command.value) {
        Ok(write) => write,
        Err(message) => return not_executed(journal, CommandStatus::Refused, message),
    };
    if let Err(error) = journal.take(&command) {
        // Without the record a redelivery could execute it twice: better not at all.
        let message = format!("not executed: cannot record it on the gateway's disk ({error})");
        return not_executed(journal, CommandStatus::Failed, message);
    }
    Admission::Execute { device, command, write }
}

/// The write of `value` to the point named `point` that `device`'s map allows, or why not.
pub fn plan(device: &DeviceConfig, point: &str, value: f64) -> Result<Write, String> {
    let index = device
        .points
        .iter()
        .position(|p| p.name == point)
        .ok_or_else(|| format!("no point {point:?} on device {:?}", device.id))?;
    let config = &device.points[index];
    let range = config.write.ok_or_else(|| format!("{point} is read only"))?;
    let unit = if config.unit.is_empty() { String::new() } else { format!(" {}", config.unit) };
    if !value.is_finite() {
        return Err(format!("{point}: {value} is not a number"));
    }
    if value < range.min || value > range.max {
        return Err(format!("{point}: {value}{unit} is outside the allowed {} to {}{unit}", range.min, range.max));
    }
    // The value on its step exactly, so the interlocks, the payload and the read-back all judge
    // the value that is written (0.9999999 is a start, 1).
    let Some(value) = chillcloud_proto::on_step(value, range.min, range.step) else {
        return Err(format!("{point}: {value}{unit} is not {} plus a multiple of {}{unit}", range.min, range.step));
    };
    let payload = match config.kind {
        RegisterKind::Coil => Payload::Coil(value == 1.0),
        _ => Payload::Registers(encode(config, value)?),
    };
    Ok(Write { point: index, value, payload })
}

/// The registers of `value`, refused unless they read back as `value` (within a float's
/// precision) and within the point's bounds.
fn encode(point: &PointConfig, value: f64) -> Result<Vec<u16>, String> {
    debug_assert!(point.data_type != DataType::Bool);
    let words =
        encode_words(raw_of(value, point.scale, point.offset), point.data_type, point.word_order, point.byte_order)
            .map_err(|message| format!("{}: {value} cannot be written: {message}", point.name))?;
    let written =
        decode_words(&words, point.data_type, point.word_order, point.byte_order) * point.scale + point.offset;
    let tolerance = if point.data_type == DataType::F32 { 1e-6 } else { 1e-9 } * value.abs().max(1.0);
    let within = point.write.is_some_and(|w| w.min - tolerance <= written && written <= w.max + tolerance);
    if (written - value).abs() > tolerance || !within {
        return Err(format!("{}: {value} cannot be written exactly (the register would hold {written})", point.name));
    }
    Ok(words)
}

/// Executes an admitted command on `poller`'s device: refused while the controller is in local
/// control or an interlock is not met, both read fresh from the device, since a value polled
/// seconds ago may no longer hold; otherwise written once (a write is never repeated on its own)
/// and read back: `done` only when the device reads exactly what was asked.
pub async fn execute(poller: &mut DevicePoller, command: &Command, write: &Write) -> CommandResult {
    let id = command.id.as_str();
    if command.expires_at_ms <= now_ms() {
        return answer(id, CommandStatus::Expired, "expired while waiting for the device; not executed", now_ms());
    }
    let refuse = |message: String| answer(id, CommandStatus::Refused, message, now_ms());
    let device = poller.device();
    let local_mode = device.local_mode;
    let interlocks: Vec<Interlock> = (device.interlocks.iter())
        .filter(|i| i.point == write.point && i.value.is_none_or(|value| value == write.value))
        .cloned()
        .collect();
    let checked: Vec<usize> = local_mode.into_iter().chain(interlocks.iter().map(|i| i.requires)).collect();
    let mut values = match poller.read_fresh(&checked).await {
        Ok(values) => values.into_iter(),
        Err(error) => {
            let names: Vec<&str> = checked.iter().map(|&i| poller.device().points[i].name.as_str()).collect();
            return refuse(format!("cannot read {} to check the write: {error}", names.join(", ")));
        }
    };
    if local_mode.is_some() && values.next() != Some(0.0) {
        return refuse(
            "the controller is in local control: remote writes are refused until it is switched back to remote".into(),
        );
    }
    for (interlock, value) in interlocks.iter().zip(values) {
        if value != interlock.equals {
            let requires = &poller.device().points[interlock.requires].name;
            return refuse(format!("{} ({requires} reads {value})", interlock.reason));
        }
    }
    // The checks above may have waited for the line and for retries: the expiry holds until the
    // write itself.
    if command.expires_at_ms <= now_ms() {
        return answer(id, CommandStatus::Expired, "expired while its checks ran; not executed", now_ms());
    }
    let device = poller.device().id.clone();
    let point = poller.device().points[write.point].clone();
    info!(device = %device, point = %point.name, value = write.value, requester = %command.requester, id, "executing a remote command");
    let written = poller.write(write.point, &write.payload).await;
    let read_back = poller.read_words(write.point).await;
    let result = judge(id, &point, &write.payload, &written, &read_back);
    match CommandStatus::try_from(result.status) {
        Ok(CommandStatus::Done) => info!(device = %device, id, "remote command done and confirmed by reading back"),
        _ => warn!(device = %device, id, message = %result.message, "remote command failed"),
    }
    result
}

/// The result of writing `payload` to `point` for command `id`, from how the write went and
/// what the point reads back.
fn judge(
    id: &str,
    point: &PointConfig,
    payload: &Payload,
    written: &Result<(), RequestError>,
    read_back: &Result<Vec<u16>, RequestError>,
) -> CommandResult {
    let value = |words: &[u16]| point.engineering_value(words);
    let failed = |message: String| answer(id, CommandStatus::Failed, message, now_ms());
    let mut result = match (written, read_back) {
        (Ok(()), Ok(words)) if confirms(payload, words) => answer(id, CommandStatus::Done, "", now_ms()),
        // No answer to the write, yet the device holds exactly what was asked.
        (Err(RequestError::Timeout(_) | RequestError::Transport(_)), Ok(words)) if confirms(payload, words) => answer(
            id,
            CommandStatus::Done,
            "the write got no answer, but the device reads back what was asked",
            now_ms(),
        ),
        (Ok(()), Ok(words)) => failed(format!("written, but the device reads back {}", value(words))),
        // An exception is the device's answer: it did not take the value, and says so.
        (Err(RequestError::Exception(code)), Ok(words)) => answer(
            id,
            CommandStatus::Refused,
            format!("the device refused the write ({code}); it still reads {}", value(words)),
            now_ms(),
        ),
        (Ok(()), Err(error)) => failed(format!("written, but reading back failed: {error}")),
        (Err(error), Ok(words)) => failed(format!(
            "the write got no answer ({error}) and the device reads {}: it may still apply the write",
            value(words)
        )),
        (Err(error), Err(_)) => {
            failed(format!("the write failed ({error}) and reading back failed too: it may have been applied"))
        }
    };
    result.read_back = read_back.as_deref().ok().map(value);
    result
}

/// Whether what the device reads back (`read`: the point's words, or its bit as 0 or 1) is
/// exactly what was written: a device that clamps or rounds the value does not confirm it.
pub fn confirms(written: &Payload, read: &[u16]) -> bool {
    match written {
        Payload::Coil(on) => read == [u16::from(*on)],
        Payload::Registers(words) => read == words.as_slice(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices() -> Vec<DeviceConfig> {
        crate::test_config("[[devices]]\nid = \"chiller-1\"\nprofile = \"trane-ch530\"\nhost = \"127.0.0.1\"\n").devices
    }

    fn command(id: &str, point: &str, value: f64, expires_at_ms: i64) -> Vec<u8> {
        use prost::Message as _;
        Command {
            id: id.into(),
            device: "chiller-1".into(),
            point: point.into(),
            value,
            expires_at_ms,
            requester: "test".into(),
        }
        .encode_to_vec()
    }

    fn status(admission: &Admission) -> Option<(CommandStatus, String)> {
        match admission {
            Admission::Answer(result) => Some((CommandStatus::try_from(result.status).ok()?, result.message.clone())),
            _ => None,
        }
    }

    #[test]
    fn the_map_bounds_every_write_and_picks_its_payload() {
        let devices = devices();
        let device = &devices[0];
        let write = plan(device, "chw_setpoint", 6.5).expect("within bounds");
        assert_eq!(write.payload, Payload::Registers(vec![65]));
        // A value a hair off its step is judged, written and recorded as the step's value, so
        // an interlock on a start (value 1) cannot be passed by with 0.9999999.
        let start = plan(device, "chiller_enable", 0.999_999_9).expect("a start");
        assert_eq!((start.value, start.payload), (1.0, Payload::Coil(true)));
        assert_eq!(plan(device, "chw_setpoint", 6.500_000_01).map(|w| w.value), Ok(6.5));
        assert_eq!(plan(device, "chiller_enable", 1.0).map(|w| w.payload), Ok(Payload::Coil(true)));
        for (point, value, says) in [
            ("chw_setpoint", 2.0, "outside the allowed"),
            ("chw_setpoint", 30.0, "outside the allowed"),
            ("chw_setpoint", 6.55, "multiple of"),
            ("chw_setpoint", f64::NAN, "not a number"),
            ("chiller_enable", 0.5, "multiple of"),
            ("current_limit_setpoint", 39.0, "outside the allowed"),
            ("evap_leaving_temp", 7.0, "read only"),
            ("no_such_point", 1.0, "no point"),
        ] {
            let refused = plan(device, point, value).expect_err(point);
            assert!(refused.contains(says), "{point} {value}: {refused}");
        }
    }

    #[test]
    fn a_command_is_taken_once_and_never_after_its_expiry() {
        let devices = devices();
        let dir = tempfile::tempdir().expect("temp dir");
        let now = 1_800_000_000_000;
        let mut journal = Journal::open(dir.path(), now).expect("journal");
        let first = admit(&mut journal, &devices, &command("c-1", "chw_setpoint", 6.5, now + 30_000), now);
        assert!(matches!(first, Admission::Execute { device: 0, .. }), "{first:?}");
        // A redelivered copy is not executed again; once finished, its result is sent again.
        let copy = command("c-1", "chw_setpoint", 6.5, now + 30_000);
        assert_eq!(admit(&mut journal, &devices, &copy, now + 1), Admission::Duplicate);
        let done = answer("c-1", CommandStatus::Done, "", now + 2);
        journal.finished(&done);
        assert_eq!(admit(&mut journal, &devices, &copy, now + 3), Admission::Answer(done));
        // ... and not after a restart either.
        let mut reopened = Journal::open(dir.path(), now + 4).expect("journal");
        assert_eq!(admit(&mut reopened, &devices, &copy, now + 4), Admission::Duplicate);

        let expired = admit(&mut reopened, &devices, &command("c-2", "chw_setpoint", 6.5, now - 1), now);
        assert_eq!(status(&expired).map(|s| s.0), Some(CommandStatus::Expired));
        let far = admit(&mut reopened, &devices, &command("c-3", "chw_setpoint", 6.5, now + 3_600_000), now);
        assert_eq!(status(&far).map(|s| s.0), Some(CommandStatus::Refused));
        let refused = command("c-4", "chw_setpoint", 1.0, now + 30_000);
        let bounds = admit(&mut reopened, &devices, &refused, now);
        assert_eq!(status(&bounds).map(|s| s.0), Some(CommandStatus::Refused));
        // A copy of a refused one gets the same answer in this run; nothing of it is on disk.
        assert_eq!(admit(&mut reopened, &devices, &refused, now + 1), bounds);
        assert!(!Journal::open(dir.path(), now).expect("journal").taken.contains_key("c-4"));
        let bad_id = admit(&mut reopened, &devices, &command("c 5\n", "chw_setpoint", 6.5, now + 30_000), now);
        assert_eq!(status(&bad_id).map(|s| s.0), Some(CommandStatus::Refused));
        assert!(matches!(admit(&mut reopened, &devices, &[0xff, 0xff], now), Admission::Malformed(_)));

        // Ids are forgotten a minute after their expiry (at the latest two minutes ahead).
        reopened.prune(now + MAX_EXPIRY_AHEAD.as_millis() as i64 + KEEP_AFTER_EXPIRY_MS).expect("prune");
        assert!(reopened.taken.is_empty());
        assert!(Journal::open(dir.path(), now).expect("journal").taken.is_empty());
    }

    #[test]
    fn a_write_is_done_only_when_the_device_reads_back_what_was_asked() {
        let devices = devices();
        let write = plan(&devices[0], "chw_setpoint", 6.5).expect("within bounds");
        let point = &devices[0].points[write.point];
        let judged = |written: Result<(), RequestError>, read_back: Result<Vec<u16>, RequestError>| {
            let result = judge("c-1", point, &write.payload, &written, &read_back);
            (CommandStatus::try_from(result.status).expect("a status"), result.read_back)
        };
        let timeout = || RequestError::Timeout(Duration::from_secs(1));
        assert_eq!(judged(Ok(()), Ok(vec![65])), (CommandStatus::Done, Some(6.5)));
        assert_eq!(judged(Err(timeout()), Ok(vec![65])), (CommandStatus::Done, Some(6.5)), "applied unanswered");
        assert_eq!(judged(Ok(()), Ok(vec![60])), (CommandStatus::Failed, Some(6.0)), "clamped by the device");
        let refused = RequestError::Exception(tokio_modbus::ExceptionCode::IllegalDataValue);
        assert_eq!(judged(Err(refused), Ok(vec![60])), (CommandStatus::Refused, Some(6.0)));
        assert_eq!(judged(Ok(()), Err(timeout())), (CommandStatus::Failed, None));
        assert_eq!(judged(Err(timeout()), Err(timeout())), (CommandStatus::Failed, None));
    }

    #[test]
    fn only_the_very_words_written_confirm_a_write() {
        assert!(confirms(&Payload::Registers(vec![65]), &[65]));
        assert!(!confirms(&Payload::Registers(vec![65]), &[64]), "a device that rounds does not confirm");
        assert!(!confirms(&Payload::Registers(vec![1, 2]), &[1]));
        assert!(confirms(&Payload::Coil(true), &[1]) && !confirms(&Payload::Coil(true), &[0]));
    }
}
