//! The store-and-forward queue: every batch of readings is written here before it is published,
//! and stays until the broker has acknowledged it.
//!
//! # Design constraints
//!
//! - Nothing the queue has accepted is lost to `kill -9` or a power cut. [`Queue::append`]
//!   writes; the caller then syncs ([`Queue::sync_handle`]) before publishing, so a batch is on
//!   disk before the broker can see it. Batches that queue up during one sync share the next
//!   (group commit), so the cost is one `fdatasync` per poll cycle, not per device.
//! - Bounded by bytes and by age. Past either bound the oldest segment goes first; the readings
//!   it held unsent are counted and reported to the server as a [`DroppedInterval`] in a
//!   message of their own, queued like any other.
//! - Memory does not grow with the backlog: the queue keeps one small summary per segment and
//!   the sequence numbers acknowledged out of order (the live batches sent while a backlog
//!   drains), never the records themselves.
//! - Delivery is at least once: after a crash, batches sent but not yet recorded as
//!   acknowledged are sent again, and the server's unique key on (point, time) drops the copies.
//!
//! # On-disk format
//!
//! `<dir>/<first seq, 20 digits>.seg` files, each a sequence of records, integers
//! little-endian:
//!
//! ```text
//! u32 length of what follows the checksum | u32 CRC-32C of it | u64 seq | encoded proto `Data`
//! ```
//!
//! At open, a record that is cut short or fails its checksum (a crash mid-write) ends its
//! segment: the file is truncated there and the loss counted. `<dir>/acked` holds the sequence
//! number up to which everything has been acknowledged; `<dir>/birth-<session>` holds each
//! session's birth while records of that session remain, so a backlog from an earlier run can
//! be announced before it is sent.

use std::{
    collections::{BTreeSet, VecDeque},
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use chillcloud_proto::{Data, DroppedInterval};
use prost::Message;
use tracing::{error, info, warn};

use crate::{durable, throttle::Throttle};

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
/// Length and checksum.
const HEADER_BYTES: u64 = 8;
/// A record longer than this is corrupt: a batch is at most one MQTT payload.
const MAX_RECORD_BYTES: u32 = chillcloud_proto::MAX_PAYLOAD_BYTES as u32 + 8;

/// How much the queue may hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueLimits {
    /// Most bytes on disk; the oldest segment is dropped beyond this.
    pub max_bytes: u64,
    /// Oldest reading kept; segments whose newest reading is older are dropped.
    pub max_age: Duration,
}

impl QueueLimits {
    /// Size at which a new segment file starts: small enough that dropping one loses little,
    /// large enough that there are not thousands of files.
    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 16).clamp(4 * 1024, 16 * 1024 * 1024)
    }
}

/// One unacknowledged batch read back from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its sequence number (also in `data.seq`).
    pub seq: u64,
    /// The batch.
    pub data: Data,
}

/// What the queue holds and has lost, for the status report.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct QueueStatus {
    /// Batches not yet acknowledged by the broker.
    pub unacked_batches: u64,
    /// Bytes of the segment files.
    pub bytes: u64,
    /// Time of the oldest reading in a segment that holds unacknowledged batches, ms since the
    /// epoch (0 when everything is acknowledged).
    pub oldest_ms: i64,
    /// Batches dropped unsent because of the limits, since the queue was opened.
    pub dropped_batches: u64,
    /// Readings in those batches.
    pub dropped_readings: u64,
    /// Records found corrupt (torn writes) at open and cut off.
    pub corrupt_records: u64,
}

/// Summary of one segment file.
#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// Zero while the segment is empty.
    last_seq: u64,
    bytes: u64,
    oldest_ms: i64,
    newest_ms: i64,
    /// The session of the first record, for cleaning up births no record needs any more.
    first_session: u64,
}

/// The durable queue. See the module documentation.
pub struct Queue {
    dir: PathBuf,
    limits: QueueLimits,
    /// The session whose messages are appended now; dropped-interval reports belong to it.
    session: u64,
    /// Oldest first; the last one is appended to.
    segments: VecDeque<Segment>,
    active: Option<File>,
    next_seq: u64,
    /// Every seq up to this one is acknowledged.
    acked: u64,
    /// Acknowledged seqs above `acked`.
    acked_above: BTreeSet<u64>,
    acked_persisted: u64,
    /// Where the last read stopped: (next seq expected, segment's first seq, byte offset).
    cursor: Option<(u64, u64, u64)>,
    status: QueueStatus,
    drop_warnings: Throttle,
    /// Start a new segment at the next append (the current one is damaged).
    roll_next: bool,
}

impl Queue {
    /// Opens (or creates) the queue in `dir` for the new `session`, recovering from a crash.
    pub fn open(dir: &Path, limits: QueueLimits, session: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let acked = match fs::read_to_string(dir.join("acked")) {
            Ok(text) => text.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut paths: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let first = path.file_name()?.to_str()?.strip_suffix(".seg")?.parse().ok()?;
                Some((first, path))
            })
            .collect();
        paths.sort();
        let mut queue = Queue {
            dir: dir.to_owned(),
            limits,
            session,
            segments: VecDeque::new(),
            active: None,
            next_seq: acked + 1,
            acked,
            acked_above: BTreeSet::new(),
            acked_persisted: acked,
            cursor: None,
            status: QueueStatus::default(),
            drop_warnings: Throttle::default(),
            roll_next: false,
        };
        for (first_seq, path) in paths {
            let segment = queue.recover_segment(first_seq, &path)?;
            // Empty, or wholly acknowledged.
            if segment.last_seq <= acked {
                fs::remove_file(&path)?;
                continue;
            }
            queue.next_seq = queue.next_seq.max(segment.last_seq + 1);
            queue.segments.push_back(segment);
        }
        queue.remove_unneeded_births();
        let status = queue.status();
        if status.unacked_batches > 0 {
            info!(batches = status.unacked_batches, bytes = status.bytes, "queue holds a backlog from before");
        }
        Ok(queue)
    }

    /// Reads a segment's records to rebuild its summary, truncating a torn or corrupt tail.
    fn recover_segment(&mut self, first_seq: u64, path: &Path) -> io::Result<Segment> {
        let mut segment =
            Segment { first_seq, last_seq: 0, bytes: 0, oldest_ms: i64::MAX, newest_ms: i64::MIN, first_session: 0 };
        let file = File::open(path)?;
        let length = file.metadata()?.len();
        let mut reader = BufReader::new(file);
        loop {
            match read_record(&mut reader) {
                Ok(Some((seq, data, size))) => {
                    if segment.last_seq == 0 {
                        segment.first_session = data.session;
                    }
                    segment.last_seq = seq;
                    segment.bytes += size;
                    if let Some((oldest, newest)) = reading_times(&data) {
                        segment.oldest_ms = segment.oldest_ms.min(oldest);
                        segment.newest_ms = segment.newest_ms.max(newest);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    self.status.corrupt_records += 1;
                    warn!(path = %path.display(), offset = segment.bytes, %error, "queue segment has a torn or corrupt record; cutting it off there");
                    break;
                }
            }
        }
        if segment.bytes < length {
            OpenOptions::new().write(true).open(path)?.set_len(segment.bytes)?;
        }
        Ok(segment)
    }

    /// Stores the birth of the queue's session, so a backlog of it can be announced after a
    /// restart.
    pub fn store_birth(&self, birth: &[u8]) -> io::Result<()> {
        durable::replace(&self.dir.join(format!("birth-{}", self.session)), birth)
    }

    /// The stored birth of `session`, if any.
    pub fn birth(&self, session: u64) -> Option<Vec<u8>> {
        fs::read(self.dir.join(format!("birth-{session}"))).ok()
    }

    /// Appends a batch, setting its `seq` to the next sequence number, and applies the limits.
    /// The batch is durable only after the [`Queue::sync_handle`] file has been synced.
    pub fn append(&mut self, data: &mut Data, now_ms: i64) -> io::Result<u64> {
        let seq = self.next_seq;
        data.seq = seq;
        let mut body = Vec::with_capacity(8 + data.encoded_len());
        body.extend_from_slice(&seq.to_le_bytes());
        data.encode(&mut body).map_err(io::Error::other)?;
        let mut record = Vec::with_capacity(body.len() + HEADER_BYTES as usize);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&CRC.checksum(&body).to_le_bytes());
        record.extend_from_slice(&body);

        let roll = self.roll_next || self.segments.back().is_none_or(|s| s.bytes >= self.limits.segment_bytes());
        self.roll_next = false;
        if roll || self.active.is_none() {
            self.start_segment(seq, roll)?;
        }
        let Some(active) = self.active.as_mut() else { unreachable!("a segment was started above") };
        let Some(segment) = self.segments.back_mut() else { unreachable!("a segment was started above") };
        if let Err(error) = active.write_all(&record) {
            // A partial record would hide every later one: cut it off so the file stays whole.
            let _ = active.set_len(segment.bytes);
            return Err(error);
        }
        self.next_seq += 1;
        if segment.last_seq == 0 {
            segment.first_session = data.session;
        }
        segment.last_seq = seq;
        segment.bytes += record.len() as u64;
        if let Some((oldest, newest)) = reading_times(data) {
            segment.oldest_ms = segment.oldest_ms.min(oldest);
            segment.newest_ms = segment.newest_ms.max(newest);
        }
        self.apply_limits(now_ms)?;
        Ok(seq)
    }

    /// Opens the segment to append to: a new one when `roll` (after making the previous one
    /// durable), or the newest existing one after a restart.
    fn start_segment(&mut self, first_seq: u64, roll: bool) -> io::Result<()> {
        if let Some(previous) = self.active.take() {
            previous.sync_data()?;
        }
        if roll {
            self.segments.push_back(Segment {
                first_seq,
                last_seq: 0,
                bytes: 0,
                oldest_ms: i64::MAX,
                newest_ms: i64::MIN,
                first_session: self.session,
            });
        }
        let Some(segment) = self.segments.back() else { unreachable!("pushed above or present") };
        let path = self.segment_path(segment.first_seq);
        self.active = Some(OpenOptions::new().create(true).append(true).open(&path)?);
        if roll {
            // The new file's directory entry must survive a power cut too.
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// A handle on the file appended to; sync it (off the async runtime) to make the appended
    /// batches durable.
    pub fn sync_handle(&self) -> io::Result<Option<File>> {
        self.active.as_ref().map(File::try_clone).transpose()
    }

    /// Drops the oldest segments while the queue is over its limits. What they held unsent is
    /// reported in a new batch, made durable before their files are deleted, so a crash in
    /// between reports the same intervals again (the server stores them once) rather than
    /// never.
    fn apply_limits(&mut self, now_ms: i64) -> io::Result<()> {
        let oldest_allowed = now_ms.saturating_sub(i64::try_from(self.limits.max_age.as_millis()).unwrap_or(i64::MAX));
        let mut total: u64 = self.segments.iter().map(|s| s.bytes).sum();
        let mut doomed = Vec::new();
        // The segment being appended to is never dropped: it holds the newest batch.
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else { break };
            let too_old = oldest.newest_ms != i64::MIN && oldest.newest_ms < oldest_allowed;
            if !(total > self.limits.max_bytes || too_old) {
                break;
            }
            let Some(segment) = self.segments.pop_front() else { break };
            total -= segment.bytes;
            doomed.push(segment);
        }
        if doomed.is_empty() {
            return Ok(());
        }
        let mut lost = Vec::new();
        for segment in &doomed {
            lost.extend(self.unsent_in(segment));
        }
        if !lost.is_empty() {
            let readings: u64 = lost.iter().map(|d| d.readings).sum();
            if let Some(held_back) = self.drop_warnings.allow() {
                warn!(
                    intervals = lost.len(),
                    readings, held_back, "queue full or too old: dropped the oldest unsent readings"
                );
            }
            let mut report = Data { session: self.session, dropped: lost, ..Default::default() };
            self.append(&mut report, now_ms)?;
            if let Some(active) = &self.active {
                active.sync_data()?;
            }
        }
        for segment in doomed {
            fs::remove_file(self.segment_path(segment.first_seq))?;
        }
        self.remove_unneeded_births();
        Ok(())
    }

    /// Counts a segment about to be dropped and returns the intervals of unacknowledged
    /// readings it held, with the earlier drop reports it carried; then treats everything in it
    /// as settled.
    fn unsent_in(&mut self, segment: &Segment) -> Vec<DroppedInterval> {
        let path = self.segment_path(segment.first_seq);
        let mut lost: Vec<DroppedInterval> = Vec::new();
        let mut interval: Option<DroppedInterval> = None;
        let mut reader = match File::open(&path) {
            Ok(file) => BufReader::new(file),
            Err(error) => {
                error!(path = %path.display(), %error, "cannot read a segment being dropped; its loss is not reported");
                return lost;
            }
        };
        while let Ok(Some((seq, data, _))) = read_record(&mut reader) {
            if self.is_acked(seq) {
                continue;
            }
            if !data.readings.is_empty() {
                self.status.dropped_batches += 1;
                self.status.dropped_readings += data.readings.len() as u64;
            }
            lost.extend(data.dropped.iter().copied());
            if let Some((oldest, newest)) = reading_times(&data) {
                let current = interval.get_or_insert(DroppedInterval { from_ms: oldest, to_ms: newest, readings: 0 });
                current.from_ms = current.from_ms.min(oldest);
                current.to_ms = current.to_ms.max(newest);
                current.readings += data.readings.len() as u64;
            }
        }
        lost.extend(interval);
        // Everything in the segment is gone, acknowledged or not.
        self.acked_above.retain(|&seq| seq > segment.last_seq);
        if self.acked < segment.last_seq {
            self.acked = segment.last_seq;
            self.advance_acked();
        }
        lost
    }

    /// Records that the broker acknowledged `seq`.
    pub fn ack(&mut self, seq: u64) {
        if seq > self.acked {
            self.acked_above.insert(seq);
            self.advance_acked();
        }
    }

    fn advance_acked(&mut self) {
        while self.acked_above.first().is_some_and(|&first| first <= self.acked + 1) {
            let Some(first) = self.acked_above.pop_first() else { break };
            self.acked = self.acked.max(first);
        }
    }

    /// Whether the broker has acknowledged `seq`.
    pub fn is_acked(&self, seq: u64) -> bool {
        seq <= self.acked || self.acked_above.contains(&seq)
    }

    /// Every seq up to this one is acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The seq the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Writes down how far the queue is acknowledged, and deletes segments no longer needed.
    /// Not synced: losing this file to a power cut only means sending some batches twice, and
    /// a sync here would stall polling twice a second.
    pub fn persist_acked(&mut self) -> io::Result<()> {
        if self.acked == self.acked_persisted {
            return Ok(());
        }
        durable::replace_unsynced(&self.dir.join("acked"), format!("{}\n", self.acked).as_bytes())?;
        self.acked_persisted = self.acked;
        let mut removed = false;
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.last_seq <= self.acked) {
            let Some(segment) = self.segments.pop_front() else { break };
            fs::remove_file(self.segment_path(segment.first_seq))?;
            removed = true;
        }
        if removed {
            self.remove_unneeded_births();
        }
        Ok(())
    }

    /// Reads unacknowledged batches with seq above `after` and below `before`, oldest first, up
    /// to `max_bytes` of payload (at least one batch).
    pub fn read_after(&mut self, after: u64, before: u64, max_bytes: usize) -> io::Result<Vec<Record>> {
        let mut records = Vec::new();
        let mut want = after.max(self.acked) + 1;
        let mut bytes = 0usize;
        while want < before && (records.is_empty() || bytes < max_bytes) {
            let Some(segment) = self.segments.iter().find(|s| s.last_seq >= want && s.last_seq != 0) else { break };
            let (first_seq, segment_bytes) = (segment.first_seq, segment.bytes);
            let offset = match self.cursor {
                Some((next, first, offset)) if first == first_seq && next <= want => offset,
                _ => 0,
            };
            let mut file = File::open(self.segment_path(first_seq))?;
            file.seek(SeekFrom::Start(offset))?;
            let mut reader = BufReader::new(file.take(segment_bytes - offset));
            let mut position = offset;
            loop {
                let (seq, data, size) = match read_record(&mut reader) {
                    Ok(Some(record)) => record,
                    Ok(None) => break,
                    Err(error) => {
                        // Only a disk fault gets here (a torn write is cut off when it
                        // happens): the rest of this segment cannot be read, so it is settled
                        // as lost rather than holding the queue back for ever.
                        self.status.corrupt_records += 1;
                        error!(segment = first_seq, offset = position, %error, "corrupt queue record; the rest of its segment is lost");
                        let last_seq =
                            self.segments.iter().find(|s| s.first_seq == first_seq).map_or(0, |s| s.last_seq);
                        for seq in want.max(self.acked + 1)..=last_seq {
                            self.ack(seq);
                        }
                        if self.segments.back().is_some_and(|s| s.first_seq == first_seq) {
                            // Nothing appended after the damage could be read back either.
                            self.active = None;
                            self.roll_next = true;
                        }
                        break;
                    }
                };
                position += size;
                self.cursor = Some((seq + 1, first_seq, position));
                if seq < want || self.is_acked(seq) {
                    continue;
                }
                if seq >= before {
                    return Ok(records);
                }
                bytes += data.encoded_len();
                records.push(Record { seq, data });
                want = seq + 1;
                if bytes >= max_bytes {
                    return Ok(records);
                }
            }
            // The rest of this segment is acknowledged: go on with the next one.
            want = want.max(self.segments.iter().find(|s| s.first_seq == first_seq).map_or(want, |s| s.last_seq + 1));
        }
        Ok(records)
    }

    /// What the queue holds and has lost.
    pub fn status(&self) -> QueueStatus {
        let unacked = self.next_seq.saturating_sub(self.acked + 1).saturating_sub(self.acked_above.len() as u64);
        QueueStatus {
            unacked_batches: unacked,
            bytes: self.segments.iter().map(|s| s.bytes).sum(),
            oldest_ms: self
                .segments
                .iter()
                .filter(|s| s.last_seq > self.acked)
                .map(|s| s.oldest_ms)
                .min()
                .filter(|&t| t != i64::MAX && unacked > 0)
                .unwrap_or(0),
            ..self.status
        }
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.dir.join(format!("{first_seq:020}.seg"))
    }

    /// Deletes stored births of sessions that no queued batch belongs to any more.
    fn remove_unneeded_births(&self) {
        let oldest_needed = self.segments.front().map_or(self.session, |s| s.first_session.min(self.session));
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let session = name.to_str().and_then(|n| n.strip_prefix("birth-")).and_then(|s| s.parse::<u64>().ok());
            if session.is_some_and(|s| s < oldest_needed) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The times of a batch's oldest and newest readings, if it has readings.
fn reading_times(data: &Data) -> Option<(i64, i64)> {
    let oldest = data.readings.iter().map(|r| r.offset_ms).min()?;
    let newest = data.readings.iter().map(|r| r.offset_ms).max()?;
    Some((data.base_time_ms.saturating_add(oldest), data.base_time_ms.saturating_add(newest)))
}

/// Reads one record: `Ok(None)` at a clean end, an error for a torn or corrupt record.
fn read_record(reader: &mut impl Read) -> io::Result<Option<(u64, Data, u64)>> {
    let mut header = [0u8; HEADER_BYTES as usize];
    match reader.read_exact(&mut header[..1]) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    reader.read_exact(&mut header[1..])?;
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(8..=MAX_RECORD_BYTES).contains(&length) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("record length {length}")));
    }
    let mut body = vec![0u8; length as usize];
    reader.read_exact(&mut body)?;
    if CRC.checksum(&body) != checksum {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "checksum mismatch"));
    }
    let seq = u64::from_le_bytes([body[0], body[1], body[2], body[3], body[4], body[5], body[6], body[7]]);
    let data = Data::decode(&body[8..]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((seq, data, HEADER_BYTES + u64::from(length))))
}

#[cfg(test)]
mod tests {
    use chillcloud_proto::{Reading, Value};

    use super::*;

    const LIMITS: QueueLimits = QueueLimits { max_bytes: 1 << 20, max_age: Duration::from_secs(3600) };
    const T0: i64 = 1_800_000_000_000;

    /// A batch of `n` readings taken at `time_ms`.
    fn batch(time_ms: i64, n: u32) -> Data {
        Data {
            session: 1,
            base_time_ms: time_ms,
            readings: (0..n)
                .map(|alias| Reading { alias, offset_ms: 0, quality: 0, value: Some(Value::Scaled(1)) })
                .collect(),
            ..Default::default()
        }
    }

    fn seqs(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn batches_come_back_in_order_until_acknowledged_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut queue = Queue::open(dir.path(), LIMITS, 1).expect("open");
        for i in 0..10 {
            queue.append(&mut batch(T0 + i, 3), T0).expect("append");
        }
        assert_eq!(seqs(&queue.read_after(0, u64::MAX, 1 << 20).expect("read")), (1..=10).collect::<Vec<_>>());
        // Acknowledged out of order: 1-3 and 6.
        for seq in [2, 1, 3, 6] {
            queue.ack(seq);
        }
        assert_eq!(queue.acked(), 3);
        assert_eq!(seqs(&queue.read_after(0, u64::MAX, 1 << 20).expect("read")), [4, 5, 7, 8, 9, 10]);
        assert_eq!(seqs(&queue.read_after(4, 9, 1 << 20).expect("read")), [5, 7, 8]);
        queue.persist_acked().expect("persist");
        drop(queue);

        // Reopened (as after kill -9): what was not recorded as acknowledged comes back.
        let mut queue = Queue::open(dir.path(), LIMITS, 2).expect("reopen");
        assert_eq!(seqs(&queue.read_after(0, u64::MAX, 1 << 20).expect("read")), (4..=10).collect::<Vec<_>>());
        assert_eq!(queue.append(&mut batch(T0, 1), T0).expect("append"), 11, "sequence numbers keep increasing");
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut queue = Queue::open(dir.path(), LIMITS, 1).expect("open");
        for i in 0..3 {
            queue.append(&mut batch(T0 + i, 2), T0).expect("append");
        }
        drop(queue);
        let segment = dir.path().join(format!("{:020}.seg", 1));
        let length = fs::metadata(&segment).expect("segment").len();
        OpenOptions::new().write(true).open(&segment).expect("open").set_len(length - 3).expect("truncate");

        let mut queue = Queue::open(dir.path(), LIMITS, 2).expect("reopen");
        assert_eq!(queue.status().corrupt_records, 1);
        assert_eq!(seqs(&queue.read_after(0, u64::MAX, 1 << 20).expect("read")), [1, 2]);
        assert_eq!(queue.append(&mut batch(T0, 1), T0).expect("append"), 3);
        assert_eq!(seqs(&queue.read_after(0, u64::MAX, 1 << 20).expect("read")), [1, 2, 3]);
    }

    #[test]
    fn a_record_corrupted_on_disk_later_is_settled_as_lost_and_does_not_stall_the_queue() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut queue = Queue::open(dir.path(), LIMITS, 1).expect("open");
        for i in 0..5 {
            queue.append(&mut batch(T0 + i, 2), T0).expect("append");
        }
        // Flip a byte inside the third record's payload.
        let segment = dir.path().join(format!("{:020}.seg", 1));
        let mut bytes = fs::read(&segment).expect("read");
        let record_len = bytes.len() / 5;
        bytes[2 * record_len + 12] ^= 0xff;
        fs::write(&segment, bytes).expect("write");

        assert_eq!(seqs(&queue.read_after(0, u64::MAX, 1 << 20).expect("read")), [1, 2]);
        let status = queue.status();
        assert_eq!((status.corrupt_records, status.unacked_batches), (1, 2), "{status:?}");
        assert_eq!(queue.append(&mut batch(T0, 1), T0).expect("append"), 6);
        assert_eq!(seqs(&queue.read_after(2, u64::MAX, 1 << 20).expect("read")), [6]);
    }

    #[test]
    fn over_the_cap_the_oldest_go_first_and_the_loss_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits = QueueLimits { max_bytes: 64 * 1024, max_age: Duration::from_secs(3600) };
        let mut queue = Queue::open(dir.path(), limits, 1).expect("open");
        for i in 0..2000 {
            queue.append(&mut batch(T0 + i * 1000, 10), T0 + i * 1000).expect("append");
        }
        let status = queue.status();
        assert!(status.bytes <= limits.max_bytes, "{status:?}");
        assert!(status.dropped_batches > 0 && status.dropped_readings == status.dropped_batches * 10, "{status:?}");

        let records = queue.read_after(0, u64::MAX, usize::MAX).expect("read");
        let reports: Vec<&DroppedInterval> = records.iter().flat_map(|r| &r.data.dropped).collect();
        let reported: u64 = reports.iter().map(|d| d.readings).sum();
        assert_eq!(reported, status.dropped_readings, "every dropped reading is reported exactly once");
        assert_eq!(reports.iter().map(|d| d.from_ms).min(), Some(T0), "the oldest went first");
        let oldest_kept = records.iter().filter_map(|r| reading_times(&r.data)).map(|t| t.0).min().expect("kept");
        assert!(reports.iter().all(|d| d.to_ms < oldest_kept), "only older readings were dropped");
        assert_eq!(records.last().map(|r| r.data.base_time_ms), Some(T0 + 1999 * 1000), "the newest is kept");
    }

    #[test]
    fn readings_older_than_the_age_limit_are_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits = QueueLimits { max_bytes: 64 * 1024, max_age: Duration::from_secs(60) };
        let mut queue = Queue::open(dir.path(), limits, 1).expect("open");
        for i in 0..100 {
            queue.append(&mut batch(T0 + i * 1000, 50), T0 + i * 1000).expect("append");
        }
        let records = queue.read_after(0, u64::MAX, usize::MAX).expect("read");
        let oldest_kept = records.iter().filter_map(|r| reading_times(&r.data)).map(|t| t.0).min().expect("kept");
        // Whole segments go, so a little more than the limit may stay, but nothing much older.
        assert!(oldest_kept >= T0 + 99_000 - 60_000 - 20_000, "oldest kept {}", oldest_kept - T0);
        assert!(queue.status().dropped_batches > 0);
    }
}
