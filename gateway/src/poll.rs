//! Polling one device over its link ([`crate::transport`]): the read plan and turning registers
//! into timestamped samples, faster and with every point sent while a [`Boost`] is in force. For
//! commands it offers reading fresh, writing and reading back; running a device (polls, boosts
//! and commands between them) is [`crate::device`].

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chillcloud_proto::Quality;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{
    backoff::Backoff,
    boost::Boost,
    config::DeviceConfig,
    modbus::{Payload, ReadBlock, Span, decode_string, plan_reads},
    now_ms,
    points::PointConfig,
    status::StatusBoard,
    transport::{Link, RequestError, SharedBus},
};

/// One reading of one point, as taken from the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The point's alias in the current session.
    pub alias: u32,
    /// When the value was read, ms since the Unix epoch.
    pub time_ms: i64,
    /// The engineering value; `None` when the read failed.
    pub value: Option<f64>,
    /// Whether the value can be trusted.
    pub quality: Quality,
}

/// Polls one device and remembers what it needs between polls.
pub struct DevicePoller {
    device: DeviceConfig,
    first_alias: u32,
    blocks: Vec<ReadBlock>,
    /// Each block's time between reads and when it is next due (`None`: at the next poll).
    schedule: Vec<(Duration, Option<Instant>)>,
    link: Link,
    /// Polls in a row that found the device unreachable, for polling it less often.
    pub(crate) backoff: Backoff,
    /// What was last sent for each point: report by exception compares against it.
    last_sent: Vec<Option<(Option<f64>, Quality)>>,
    /// The time of each point's last sample, ms: the next is later, always.
    last_time_ms: Vec<i64>,
    /// When the next poll sends every point whatever its change.
    next_snapshot: Option<tokio::time::Instant>,
    /// The boost in force, if any.
    boost: Option<Boost>,
    /// Points the device has refused with an address exception: not in the read plan, sent
    /// as bad, tried again on their own every [`PROBE_INTERVAL`].
    missing: Vec<bool>,
    /// Registers no request may cover: the missing points' and holes the device refused.
    avoid: Vec<Span>,
    /// When the missing points are next tried again.
    next_probe: Option<Instant>,
    status: StatusBoard,
}

/// How often points a device refused are tried again (a controller's firmware may be updated,
/// a card fitted): once in ten minutes costs one request per missing point.
const PROBE_INTERVAL: Duration = Duration::from_secs(600);

/// Whether an exception answer to a read means "not these registers": a merged read that gets
/// it is split to find which point is missing. Illegal data value is what some controllers say
/// when a read runs into registers they do not have.
fn refuses_registers(code: tokio_modbus::ExceptionCode) -> bool {
    matches!(code, tokio_modbus::ExceptionCode::IllegalDataAddress | tokio_modbus::ExceptionCode::IllegalDataValue)
}

impl DevicePoller {
    /// A poller for `device` whose points take aliases from `first_alias` on; `bus` is the
    /// shared line when the device is on one.
    pub fn new(device: DeviceConfig, first_alias: u32, bus: Option<Arc<SharedBus>>, status: StatusBoard) -> Self {
        let points = device.points.len();
        let mut poller = Self {
            device,
            first_alias,
            blocks: Vec::new(),
            schedule: Vec::new(),
            link: Link::new(bus),
            backoff: Backoff::default(),
            last_sent: vec![None; points],
            last_time_ms: vec![i64::MIN; points],
            next_snapshot: None,
            boost: None,
            missing: vec![false; points],
            avoid: Vec::new(),
            next_probe: None,
            status,
        };
        poller.plan();
        poller
    }

    /// Plans the reads of the points not missing: points read at the same interval together
    /// (the listed ones apart from site conventions), every block due at the next poll.
    fn plan(&mut self) {
        let device = &self.device;
        let interval_of = |p: &PointConfig| p.poll_interval.unwrap_or_default().max(device.poll_interval);
        let mut intervals: Vec<Duration> = device.points.iter().map(interval_of).collect();
        intervals.sort();
        intervals.dedup();
        let (mut blocks, mut schedule) = (Vec::new(), Vec::new());
        // Registers outside the maker's public list are read apart from the listed ones.
        for (interval, listed) in intervals.into_iter().flat_map(|i| [(i, true), (i, false)]) {
            let members: Vec<usize> = (0..device.points.len())
                .filter(|&i| {
                    let point = &device.points[i];
                    !self.missing[i] && point.listed == listed && interval_of(point) == interval
                })
                .collect();
            let spans: Vec<Span> = members.iter().map(|&i| span_of(&device.points[i])).collect();
            for mut block in plan_reads(&spans, device.max_gap, &self.avoid) {
                block.points = block.points.iter().map(|&j| members[j]).collect();
                blocks.push(block);
                schedule.push((interval, None));
            }
        }
        (self.blocks, self.schedule) = (blocks, schedule);
    }

    /// Finds out which of `members` (a merged read the device refused) the device lacks, by
    /// reading them in halves until every point is read or found missing. Returns each read
    /// point's value and the missing points, or the error that stopped the search (the device
    /// stopped answering).
    async fn isolate(
        &mut self,
        members: &[usize],
        requests: &mut u64,
    ) -> Result<(Vec<(usize, Option<f64>)>, Vec<usize>), RequestError> {
        let (mut read, mut missing) = (Vec::new(), Vec::new());
        let mut groups = vec![members.to_vec()];
        while let Some(group) = groups.pop() {
            let spans: Vec<Span> = group.iter().map(|&i| span_of(&self.device.points[i])).collect();
            for block in plan_reads(&spans, self.device.max_gap, &self.avoid) {
                let points: Vec<usize> = block.points.iter().map(|&j| group[j]).collect();
                *requests += 1;
                match self.link.read(&self.device, &block).await {
                    Ok(words) => read.extend(self.values(block.start, &points, &words)),
                    Err(RequestError::Exception(code)) if refuses_registers(code) => match points.as_slice() {
                        [single] => missing.push(*single),
                        _ => {
                            let (first, second) = points.split_at(points.len() / 2);
                            groups.push(second.to_vec());
                            groups.push(first.to_vec());
                        }
                    },
                    Err(error) => return Err(error),
                }
            }
        }
        // No point refused, yet the request was: one of its holes, where no point lies, is what
        // the device lacks. Requests keep out of them from now on.
        let mut covered: Vec<Span> = members.iter().map(|&i| span_of(&self.device.points[i])).collect();
        covered.sort_by_key(|s| s.address);
        for pair in covered.windows(2).filter(|_| missing.is_empty()) {
            let end = pair[0].address.saturating_add(pair[0].width);
            if pair[1].address > end {
                self.avoid.push(Span { kind: pair[0].kind, address: end, width: pair[1].address - end });
            }
        }
        for &i in &missing {
            self.missing[i] = true;
            self.avoid.push(span_of(&self.device.points[i]));
        }
        self.next_probe = Some(Instant::now() + PROBE_INTERVAL);
        Ok((read, missing))
    }

    /// The values of `points` in the words of a read from `start`; a float register holding NaN
    /// or infinity has no usable value.
    fn values(&self, start: u16, points: &[usize], words: &[u16]) -> Vec<(usize, Option<f64>)> {
        (points.iter())
            .map(|&i| (i, Some(value_in(&self.device.points[i], start, words)).filter(|v| v.is_finite())))
            .collect()
    }

    /// Tries the missing points again, each on its own; a point that answers is planned again.
    async fn probe_missing(&mut self, now: Instant, requests: &mut u64) {
        if !self.missing.contains(&true) || self.next_probe.is_some_and(|at| now < at) {
            return;
        }
        self.next_probe = Some(now + PROBE_INTERVAL);
        let mut found = false;
        let missing: Vec<usize> = (0..self.missing.len()).filter(|&i| self.missing[i]).collect();
        for i in missing {
            *requests += 1;
            if self.read_words(i).await.is_ok() {
                let span = span_of(&self.device.points[i]);
                info!(device = %self.device.id, point = %self.device.points[i].name, "the device now answers for this point; read with the others again");
                self.missing[i] = false;
                self.avoid.retain(|a| *a != span);
                found = true;
            }
        }
        if found {
            self.plan();
        }
    }

    /// Names of the points the device has refused.
    fn missing_names(&self) -> Vec<String> {
        (0..self.missing.len()).filter(|&i| self.missing[i]).map(|i| self.device.points[i].name.clone()).collect()
    }

    /// The device being polled.
    pub fn device(&self) -> &DeviceConfig {
        &self.device
    }

    /// Boosts the device (replacing any boost in force): until `boost.until`, every poll reads
    /// every point and sends it, every `boost.interval` or the device's own interval, whichever
    /// is shorter.
    pub fn set_boost(&mut self, boost: Option<Boost>) {
        if let Some(boost) = boost {
            let interval = boost.interval.min(self.device.poll_interval);
            info!(device = %self.device.id, interval_ms = interval.as_millis() as u64, until_ms = boost.until_ms, "poll boost starts");
        }
        self.boost = boost;
    }

    /// Whether a boost is in force at `now`; one that has run out is dropped.
    fn boosted(&mut self, now: Instant) -> bool {
        match self.boost {
            Some(boost) if now < boost.until => true,
            Some(_) => {
                info!(device = %self.device.id, "poll boost over; back to the configured interval and report by exception");
                self.boost = None;
                false
            }
            None => false,
        }
    }

    /// The time between polls at `now`: the boost's while one is in force.
    pub(crate) fn interval(&self, now: Instant) -> Duration {
        match self.boost {
            Some(boost) if now < boost.until => boost.interval.min(self.device.poll_interval),
            _ => self.device.poll_interval,
        }
    }

    /// Starts a poll at `now`: whether it reads every block whatever its own interval (while
    /// boosted), and whether it sends every point (while boosted, or when a snapshot is due).
    /// Boosted polls leave the snapshot schedule alone.
    fn start_poll(&mut self, now: Instant) -> (bool, bool) {
        if self.boosted(now) {
            return (true, true);
        }
        let snapshot = self.next_snapshot.is_none_or(|at| now >= at);
        if snapshot {
            self.next_snapshot = Some(now + self.device.snapshot_interval);
        }
        (false, snapshot)
    }

    /// Reads the points that are due (all of them while boosted) and returns what is to be
    /// sent: on a snapshot or boosted poll every point, otherwise only points that moved by more
    /// than their deadband or changed quality. A point whose read failed is sent as bad, without
    /// a value: its last value is never repeated as if it were fresh.
    pub async fn poll(&mut self) -> Vec<Sample> {
        let now = tokio::time::Instant::now();
        let (boosted, snapshot) = self.start_poll(now);
        let mut samples = Vec::with_capacity(self.device.points.len());
        let mut unreachable = false;
        let mut first_error: Option<String> = None;
        let mut requests = 0;
        let mut replan = false;
        for block_index in 0..self.blocks.len() {
            let (interval, due) = self.schedule[block_index];
            if !boosted && due.is_some_and(|due| now < due) {
                continue;
            }
            // Half a device interval early counts as due, so timer jitter never skips a read.
            self.schedule[block_index].1 = Some(now + interval - self.device.poll_interval / 2);
            // Once the device has not answered, the rest of this poll would only wait out
            // more timeouts.
            let result = if unreachable {
                Err(RequestError::Skipped)
            } else {
                requests += 1;
                self.read_block(block_index).await
            };
            let time_ms = now_ms();
            let result = match result {
                Err(RequestError::Exception(code)) if refuses_registers(code) => {
                    let members = self.blocks[block_index].points.clone();
                    match self.isolate(&members, &mut requests).await {
                        Ok((read, missing)) => {
                            for &i in &missing {
                                let point = &self.device.points[i];
                                warn!(device = %self.device.id, point = %point.name, kind = ?point.kind, address = point.address, %code,
                                    "the device refuses this point's register: marked bad, the other points are read without it");
                            }
                            replan = true;
                            Ok(read)
                        }
                        Err(error) => Err(error),
                    }
                }
                Ok(words) => {
                    let block = &self.blocks[block_index];
                    Ok(self.values(block.start, &block.points, &words))
                }
                Err(error) => Err(error),
            };
            match result {
                Ok(read) => {
                    for (i, value) in read {
                        self.report(i, value, time_ms, snapshot, &mut samples);
                    }
                }
                Err(error) => {
                    first_error.get_or_insert_with(|| error.to_string());
                    // The plan changes only after the loop: the block is still this one.
                    let block = &self.blocks[block_index];
                    let fresh_failure =
                        block.points.iter().any(|&i| !matches!(self.last_sent[i], Some((None, Quality::Bad))));
                    if fresh_failure && !matches!(error, RequestError::Skipped) {
                        let names: Vec<&str> =
                            block.points.iter().map(|&i| self.device.points[i].name.as_str()).collect();
                        warn!(device = %self.device.id, kind = ?block.kind, start = block.start, count = block.count, points = %names.join(","), %error, "read failed; points marked bad");
                    } else {
                        debug!(device = %self.device.id, %error, "read still failing");
                    }
                    for k in 0..self.blocks[block_index].points.len() {
                        let i = self.blocks[block_index].points[k];
                        self.report(i, None, time_ms, snapshot, &mut samples);
                    }
                    if !matches!(error, RequestError::Exception(_)) {
                        unreachable = true;
                    }
                }
            }
        }
        if replan {
            self.plan();
        }
        if !unreachable {
            self.probe_missing(now, &mut requests).await;
        }
        // Missing points are sent as bad, like any point that cannot be read.
        let time_ms = now_ms();
        for i in 0..self.missing.len() {
            if self.missing[i] {
                self.report(i, None, time_ms, snapshot, &mut samples);
            }
        }
        let finished_ms = now_ms();
        // Only a device that does not answer is backed off; one refusing a register (an
        // exception) still answers.
        if unreachable {
            self.backoff.failed();
        } else {
            self.backoff.reset();
        }
        let boost_until_ms = self.boost.map(|boost| boost.until_ms);
        let missing_points = self.missing_names();
        self.status.device(&self.device.id, |status| {
            status.boost_until_ms = boost_until_ms;
            status.missing_points = missing_points;
            status.requests += requests;
            status.healthy = first_error.is_none();
            if status.healthy {
                status.last_good_ms = finished_ms;
                status.failed_polls = 0;
            } else {
                status.failed_polls += 1;
            }
            status.last_error = first_error;
        });
        samples
    }

    /// Adds point `i`'s reading (`None`: bad, no value) to `samples` if it is to be sent: on a
    /// snapshot (or boosted) poll always, otherwise when it moved beyond the point's deadband or
    /// changed quality.
    fn report(&mut self, i: usize, value: Option<f64>, time_ms: i64, snapshot: bool, samples: &mut Vec<Sample>) {
        let deadband = self.device.points[i].deadband;
        let changed = match (self.last_sent[i], value) {
            (Some((Some(last), Quality::Good)), Some(value)) if deadband > 0.0 => (value - last).abs() > deadband,
            (Some((Some(last), Quality::Good)), Some(value)) => value != last,
            (Some((None, Quality::Bad)), None) => false,
            _ => true,
        };
        if snapshot || changed {
            let quality = if value.is_some() { Quality::Good } else { Quality::Bad };
            // The server keeps one reading per point and millisecond: a point's times strictly
            // increase, even when the wall clock steps back or two reads land in one millisecond.
            let time_ms = time_ms.max(self.last_time_ms[i].saturating_add(1));
            self.last_time_ms[i] = time_ms;
            samples.push(Sample { alias: self.first_alias + i as u32, time_ms, value, quality });
            self.last_sent[i] = Some((value, quality));
        }
    }

    /// Reads one block of the plan.
    async fn read_block(&mut self, block_index: usize) -> Result<Vec<u16>, RequestError> {
        self.link.read(&self.device, &self.blocks[block_index]).await
    }

    /// Reads point `i`'s words (its bit as 0 or 1) on their own, now.
    pub(crate) async fn read_words(&mut self, i: usize) -> Result<Vec<u16>, RequestError> {
        let point = &self.device.points[i];
        self.link.read(&self.device, &read_of(point)).await
    }

    /// Reads the values of `points` fresh, in the fewest requests (the local-mode flag and the
    /// interlocks' flags usually share one status register).
    pub(crate) async fn read_fresh(&mut self, points: &[usize]) -> Result<Vec<f64>, RequestError> {
        let spans: Vec<Span> = (points.iter().map(|&i| &self.device.points[i])).map(span_of).collect();
        let mut values = vec![0.0; points.len()];
        for block in plan_reads(&spans, self.device.max_gap, &self.avoid) {
            let words = self.link.read(&self.device, &block).await?;
            for &j in &block.points {
                values[j] = value_in(&self.device.points[points[j]], block.start, &words);
            }
        }
        Ok(values)
    }

    /// Writes `payload` to point `i`, once.
    pub(crate) async fn write(&mut self, i: usize, payload: &Payload) -> Result<(), RequestError> {
        self.link.write(&self.device, &self.device.points[i], payload).await
    }

    /// Reads the device's string points, for the birth; one that cannot be read is left out
    /// (and logged), since a device may be off when the gateway starts.
    pub async fn read_attributes(&mut self) -> BTreeMap<String, String> {
        let mut attributes = BTreeMap::new();
        for point in &self.device.attributes {
            match self.link.read(&self.device, &read_of(point)).await {
                Ok(words) => {
                    attributes.insert(point.name.clone(), decode_string(&words, point.byte_order));
                }
                Err(error) => warn!(device = %self.device.id, point = %point.name, %error, "attribute not read"),
            }
        }
        attributes
    }
}

/// A read of `point` on its own.
fn read_of(point: &PointConfig) -> ReadBlock {
    ReadBlock { kind: point.kind, start: point.address, count: point.width, points: Vec::new() }
}

/// The value of `point` in the words of a read from register `start`.
fn value_in(point: &PointConfig, start: u16, words: &[u16]) -> f64 {
    let at = usize::from(point.address - start);
    point.engineering_value(&words[at..at + usize::from(point.width)])
}

/// Where `point` lives, as the read planner sees it.
fn span_of(point: &PointConfig) -> Span {
    Span { kind: point.kind, address: point.address, width: point.width }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A poller for one TCP device (never connected) polled every second, with a point `flow`
    /// sent by exception beyond 1.0, and read only every 5 s.
    fn poller() -> (DevicePoller, usize) {
        let config = crate::test_config(
            "[[devices]]\nid = \"chiller-1\"\nprofile = \"trane-ch530\"\nhost = \"127.0.0.1\"\npoll_interval_ms = 1000\n[[devices.points]]\nname = \"flow\"\nkind = \"input\"\naddress = 90\ndeadband = 1.0\npoll_interval_ms = 5000\n",
        );
        let device = config.devices[0].clone();
        let flow = device.points.iter().position(|p| p.name == "flow").expect("flow point");
        (DevicePoller::new(device, 0, None, StatusBoard::default()), flow)
    }

    #[test]
    fn a_points_times_strictly_increase_even_when_the_clock_steps_back() {
        let (mut poller, flow) = poller();
        let mut samples = Vec::new();
        for (time_ms, value) in [(5_000, 1.0), (5_000, 2.0), (4_950, 3.0), (6_000, 4.0)] {
            poller.report(flow, Some(value), time_ms, true, &mut samples);
        }
        let times: Vec<i64> = samples.iter().map(|s| s.time_ms).collect();
        assert_eq!(times, [5_000, 5_001, 5_002, 6_000], "the server keeps one reading per point and millisecond");
    }

    #[test]
    fn a_boosted_poll_reads_and_sends_every_point_until_the_boost_ends() {
        let (mut poller, flow) = poller();
        let t0 = Instant::now();
        let sent = |poller: &mut DevicePoller, report_all: bool, value: f64| {
            let mut samples = Vec::new();
            poller.report(flow, Some(value), 0, report_all, &mut samples);
            samples.len()
        };
        // The first poll is a snapshot; the next ones send only changes beyond the deadband,
        // and read the slow point only when it is due.
        assert_eq!(poller.start_poll(t0), (false, true));
        assert_eq!(sent(&mut poller, true, 7.0), 1);
        assert_eq!(poller.start_poll(t0 + Duration::from_secs(1)), (false, false));
        assert_eq!(sent(&mut poller, false, 7.5), 0, "within the deadband");
        assert_eq!(poller.interval(t0), Duration::from_secs(1));

        // Boosted: every block read, every point sent, at the boost's interval.
        let until = t0 + Duration::from_secs(3);
        poller.set_boost(Some(Boost { interval: Duration::from_millis(100), until, until_ms: 3000 }));
        assert_eq!(poller.interval(t0 + Duration::from_secs(1)), Duration::from_millis(100));
        for ms in [1100, 1200, 2999] {
            assert_eq!(poller.start_poll(t0 + Duration::from_millis(ms)), (true, true), "at {ms} ms");
            assert_eq!(sent(&mut poller, true, 7.5), 1, "at {ms} ms");
        }

        // Over: the configured interval and report by exception again (against what the boost
        // sent last).
        assert_eq!(poller.interval(until), Duration::from_secs(1));
        assert_eq!(poller.start_poll(until), (false, false));
        assert_eq!(poller.boost, None);
        assert_eq!(sent(&mut poller, false, 8.0), 0, "within the deadband of the last value sent");
        assert_eq!(sent(&mut poller, false, 8.6), 1, "beyond it");
    }

    #[test]
    fn a_boost_never_slows_a_device_down() {
        let (mut poller, _) = poller();
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(60);
        poller.set_boost(Some(Boost { interval: Duration::from_secs(5), until, until_ms: 60_000 }));
        assert_eq!(poller.interval(t0), Duration::from_secs(1));
        // A later boost replaces it.
        poller.set_boost(Some(Boost { interval: Duration::from_millis(200), until, until_ms: 60_000 }));
        assert_eq!(poller.interval(t0), Duration::from_millis(200));
    }
}
