//! Live readings: what ingest (and the rule engine, for derived values) has just committed,
//! fanned out to the dashboard's server-sent event streams, each of which keeps its own unit's
//! points.
//!
//! With one server the fan-out is in process. With replicas ([`Live::relayed`]), a unit's
//! readings are committed by the replica owning it while its page may be streamed by any: what
//! is committed goes to the broker ([`crate::amqp`]), which hands it to every replica with a
//! stream open (the committing one included), so each stream sees every reading once.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

/// One committed reading: point id, time (Unix ms), value (`None` when bad).
pub type Reading = (i64, i64, Option<f64>);

/// Batches waiting for the broker; beyond it live batches are dropped (pages show values, not
/// a log, and the readings are stored).
const RELAY_CAPACITY: usize = 256;

/// The fan-out. A subscriber that falls behind skips what it missed (the page shows values,
/// not a log), and nothing waits for subscribers.
#[derive(Clone)]
pub struct Live {
    sender: broadcast::Sender<Arc<[Reading]>>,
    relay: Option<mpsc::Sender<Arc<[Reading]>>>,
}

impl Default for Live {
    fn default() -> Self {
        Self { sender: broadcast::channel(256).0, relay: None }
    }
}

/// What a relayed [`Live`] hands to the broker.
pub type Relay = mpsc::Receiver<Arc<[Reading]>>;

impl Live {
    /// A fan-out through the broker: what is published goes to the returned end, and what the
    /// broker brings back is [`Live::deliver`]ed.
    pub fn relayed() -> (Self, Relay) {
        let (relay, relayed) = mpsc::channel(RELAY_CAPACITY);
        (Self { relay: Some(relay), ..Self::default() }, relayed)
    }

    /// Publishes committed readings.
    pub fn publish(&self, readings: &[Reading]) {
        if readings.is_empty() {
            return;
        }
        match &self.relay {
            Some(relay) => {
                let _ = relay.try_send(readings.into());
            }
            None => self.deliver(readings.into()),
        }
    }

    /// Hands readings to this process's streams.
    pub fn deliver(&self, readings: Arc<[Reading]>) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(readings);
        }
    }

    /// Whether a stream is open in this process.
    pub fn watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Receives what is published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[Reading]>> {
        self.sender.subscribe()
    }
}

/// The bytes of a batch on the broker: per reading, point id, time and value (NaN when bad; a
/// stored value is never NaN), little-endian.
pub fn encode(readings: &[Reading]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(readings.len() * 24);
    for (point, ts, value) in readings {
        bytes.extend_from_slice(&point.to_le_bytes());
        bytes.extend_from_slice(&ts.to_le_bytes());
        bytes.extend_from_slice(&value.unwrap_or(f64::NAN).to_le_bytes());
    }
    bytes
}

/// A batch from its bytes; `None` when they are not whole readings.
pub fn decode(bytes: &[u8]) -> Option<Arc<[Reading]>> {
    if !bytes.len().is_multiple_of(24) {
        return None;
    }
    let word = |chunk: &[u8], at: usize| <[u8; 8]>::try_from(&chunk[at..at + 8]).ok();
    bytes
        .chunks_exact(24)
        .map(|chunk| {
            let value = f64::from_le_bytes(word(chunk, 16)?);
            Some((
                i64::from_le_bytes(word(chunk, 0)?),
                i64::from_le_bytes(word(chunk, 8)?),
                (!value.is_nan()).then_some(value),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cross_the_broker_unchanged() {
        let batch: Vec<Reading> = vec![(1, 1_700_000_000_000, Some(7.25)), (42, -1, None), (i64::MAX, 0, Some(-0.0))];
        assert_eq!(decode(&encode(&batch)).as_deref(), Some(batch.as_slice()));
        assert!(decode(&[0; 23]).is_none());
        assert_eq!(decode(&[]).as_deref(), Some(&[][..]));
    }
}
