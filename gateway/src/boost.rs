//! Poll boosts: the server asks for a device to be polled faster for a while, with every point
//! sent at every poll, so that the moments after a fault are recorded at high resolution. A
//! boost is checked and bounded here and handed to the device's poller.

use std::{collections::HashMap, time::Duration};

use chillcloud_proto::{MessageKind, PollBoost, decode};
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

use crate::{now_ms, points::MIN_POLL_INTERVAL_MS, status::StatusBoard, throttle::Throttle};

/// Shortest time between boosted polls, whatever a boost asks for.
pub const MIN_BOOST_INTERVAL: Duration = Duration::from_millis(MIN_POLL_INTERVAL_MS);
/// Longest a boost lasts, from its receipt.
pub const MAX_BOOST_DURATION: Duration = Duration::from_secs(10 * 60);

/// A device polled faster for a while, with every point sent at every poll, so the moments
/// after a fault are recorded at high resolution (the server's [`PollBoost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boost {
    /// Time between polls while it lasts (never slower than the device's own interval).
    pub interval: Duration,
    /// When it ends.
    pub until: Instant,
    /// When it ends, ms since the Unix epoch, for the status report.
    pub until_ms: i64,
}

/// Why a boost request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoostRefused {
    /// The payload is not a `PollBoost`.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// No device of this gateway has that id.
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    /// An interval of 0.
    #[error("device {0:?}: interval_ms is 0")]
    ZeroInterval(String),
    /// It ended before it arrived.
    #[error("device {device:?}: until_ms {until_ms} is in the past (now {now_ms})")]
    Expired {
        /// The device.
        device: String,
        /// The end asked for.
        until_ms: i64,
        /// The gateway's clock when it arrived.
        now_ms: i64,
    },
}

impl Boost {
    /// The boost `request` asks for, received at `now` (`now_ms` on the wall clock): its
    /// interval raised to [`MIN_BOOST_INTERVAL`], its end brought forward to
    /// [`MAX_BOOST_DURATION`] from now. The end is kept on the monotonic clock, so a change of
    /// the wall clock during a boost neither ends nor prolongs it.
    pub fn new(request: &PollBoost, now: Instant, now_ms: i64) -> Result<Self, BoostRefused> {
        if request.interval_ms == 0 {
            return Err(BoostRefused::ZeroInterval(request.device.clone()));
        }
        if request.until_ms <= now_ms {
            return Err(BoostRefused::Expired { device: request.device.clone(), until_ms: request.until_ms, now_ms });
        }
        let max_ms = MAX_BOOST_DURATION.as_millis() as i64;
        let lasts_ms = request.until_ms.saturating_sub(now_ms).min(max_ms);
        Ok(Self {
            interval: Duration::from_millis(u64::from(request.interval_ms)).max(MIN_BOOST_INTERVAL),
            until: now + Duration::from_millis(lasts_ms as u64),
            until_ms: now_ms + lasts_ms,
        })
    }
}

/// Where boosts go: each device's poller, by device id.
#[derive(Default)]
pub struct Boosts {
    pollers: HashMap<String, watch::Sender<Option<Boost>>>,
    /// Refused boosts are warned about at most once a minute: the server may repeat them.
    warnings: Throttle,
}

impl Boosts {
    /// Adds device `id`; its poller takes its boosts from the receiver, a new one replacing the
    /// one before.
    pub fn add(&mut self, id: String) -> watch::Receiver<Option<Boost>> {
        let (sender, receiver) = watch::channel(None);
        self.pollers.insert(id, sender);
        receiver
    }

    /// The boost a `PollBoost` payload asks for, received at `now` (`now_ms` on the wall clock),
    /// with the request, if it can be honoured by one of the devices (see [`Boost::new`]).
    pub fn accept(&self, payload: &[u8], now: Instant, now_ms: i64) -> Result<(PollBoost, Boost), BoostRefused> {
        let request: PollBoost =
            decode(MessageKind::PollBoost, payload).map_err(|e| BoostRefused::Malformed(e.to_string()))?;
        if !self.pollers.contains_key(&request.device) {
            return Err(BoostRefused::UnknownDevice(request.device));
        }
        let boost = Boost::new(&request, now, now_ms)?;
        Ok((request, boost))
    }

    /// Hands a poll boost to its device's poller, replacing any boost in force there. One that
    /// cannot be honoured is counted as refused and warned about (at most once a minute), and
    /// is otherwise ignored.
    pub fn receive(&mut self, payload: &[u8], status: &StatusBoard) {
        match self.accept(payload, Instant::now(), now_ms()) {
            Ok((request, boost)) => {
                status.boost_received(false);
                if boost.interval.as_millis() > u128::from(request.interval_ms) {
                    info!(device = %request.device, asked_ms = request.interval_ms, interval_ms = boost.interval.as_millis() as u64, "poll boost interval raised to the shortest allowed");
                }
                if boost.until_ms < request.until_ms {
                    info!(device = %request.device, asked_until_ms = request.until_ms, until_ms = boost.until_ms, max_secs = MAX_BOOST_DURATION.as_secs(), "poll boost shortened to the longest allowed");
                }
                if let Some(poller) = self.pollers.get(&request.device) {
                    poller.send_replace(Some(boost));
                }
            }
            Err(refused) => {
                status.boost_received(true);
                if let Some(held_back) = self.warnings.allow() {
                    warn!(%refused, held_back, "poll boost refused");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn request(interval_ms: u32, until_ms: i64) -> PollBoost {
        PollBoost { device: "chiller-1".into(), interval_ms, until_ms }
    }

    #[test]
    fn a_boost_is_refused_without_an_interval_or_a_future_and_bounded_otherwise() {
        let (now, now_ms) = (Instant::now(), 1_800_000_000_000);
        assert_eq!(
            Boost::new(&request(0, now_ms + 3000), now, now_ms),
            Err(BoostRefused::ZeroInterval("chiller-1".into()))
        );
        for until_ms in [now_ms, now_ms - 1, i64::MIN] {
            let refused = Boost::new(&request(100, until_ms), now, now_ms);
            assert!(matches!(refused, Err(BoostRefused::Expired { .. })), "{until_ms}: {refused:?}");
        }
        // Within the bounds: as asked.
        let boost = Boost::new(&request(250, now_ms + 3000), now, now_ms).expect("accepted");
        assert_eq!(
            boost,
            Boost {
                interval: Duration::from_millis(250),
                until: now + Duration::from_secs(3),
                until_ms: now_ms + 3000
            }
        );
        // Too fast, too long: raised to the shortest interval, ended 10 minutes from receipt.
        for until_ms in [now_ms + 3_600_000, i64::MAX] {
            let boost = Boost::new(&request(1, until_ms), now, now_ms).expect("accepted");
            assert_eq!(boost.interval, MIN_BOOST_INTERVAL);
            assert_eq!((boost.until, boost.until_ms), (now + MAX_BOOST_DURATION, now_ms + 600_000));
        }
    }

    #[test]
    fn a_boost_is_accepted_only_for_a_known_device_and_counted_either_way() {
        let mut boosts = Boosts::default();
        let mut receiver = boosts.add("chiller-1".to_owned());
        let (now, now_ms) = (Instant::now(), 1_800_000_000_000);
        let request = |device: &str| {
            PollBoost { device: device.into(), interval_ms: 100, until_ms: now_ms + 3000 }.encode_to_vec()
        };

        let (asked, boost) = boosts.accept(&request("chiller-1"), now, now_ms).expect("accepted");
        assert_eq!((asked.device.as_str(), boost.until_ms), ("chiller-1", now_ms + 3000));
        assert_eq!(
            boosts.accept(&request("chiller-9"), now, now_ms).map(|(_, b)| b),
            Err(BoostRefused::UnknownDevice("chiller-9".into()))
        );
        let malformed = boosts.accept(&[0xff, 0xff, 0xff], now, now_ms).map(|(_, b)| b);
        assert!(matches!(malformed, Err(BoostRefused::Malformed(_))), "{malformed:?}");

        // Through the handler: the accepted one reaches the poller, every one is counted.
        let status = StatusBoard::default();
        let payload = PollBoost { device: "chiller-1".into(), interval_ms: 100, until_ms: crate::now_ms() + 3000 };
        boosts.receive(&payload.encode_to_vec(), &status);
        assert!(receiver.has_changed().expect("open"));
        assert!(receiver.borrow_and_update().is_some());
        boosts.receive(&request("chiller-9"), &status);
        boosts.receive(&[0xff], &status);
        assert!(!receiver.has_changed().expect("open"), "refused boosts do not reach the poller");
        let report: serde_json::Value = serde_json::from_slice(&status_json(&status)).expect("status JSON");
        assert_eq!((report["boosts_received"].as_u64(), report["boosts_refused"].as_u64()), (Some(3), Some(2)));
    }

    fn status_json(status: &StatusBoard) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("status.json");
        status.write(&path).expect("write status");
        std::fs::read(&path).expect("read status")
    }
}
