//! Live readings: what ingest (and the rule engine, for derived values) has just committed,
//! fanned out in process to the dashboard's server-sent event streams, each of which keeps its
//! own unit's points.

use std::sync::Arc;

use tokio::sync::broadcast;

/// One committed reading: point id, time (Unix ms), value (`None` when bad).
pub type Reading = (i64, i64, Option<f64>);

/// The fan-out. A subscriber that falls behind skips what it missed (the page shows values,
/// not a log), and nothing waits for subscribers.
#[derive(Clone)]
pub struct Live {
    sender: broadcast::Sender<Arc<[Reading]>>,
}

impl Default for Live {
    fn default() -> Self {
        Self { sender: broadcast::channel(256).0 }
    }
}

impl Live {
    /// Publishes committed readings.
    pub fn publish(&self, readings: &[Reading]) {
        if !readings.is_empty() && self.sender.receiver_count() > 0 {
            let _ = self.sender.send(readings.into());
        }
    }

    /// Receives what is published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[Reading]>> {
        self.sender.subscribe()
    }
}
