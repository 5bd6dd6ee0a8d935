//! Running one device: its poller's polls on their schedule, a boost's faster polls, and the
//! commands for it executed between polls, so they share its connection or line.

use std::time::Duration;

use chillcloud_proto::{Command, CommandResult};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    boost::Boost,
    command::{self, Write},
    poll::{DevicePoller, Sample},
};

/// Longest wait between polls of a device that does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Polls a device every `interval` until `shutdown`, sending each poll's samples to `out`.
///
/// `stagger` delays the first poll so that devices sharing a gateway are not all hit at once.
/// A device that does not answer is polled less and less often (doubling, up to a minute), so
/// its timeouts do not hold up the other devices on its line. A boost from `boosts` is polled
/// for at once, since the moments right after a fault are the ones it is for. Commands from
/// `commands` are executed between polls (so they share the connection or the line), their
/// results go to `results`, and a poll follows at once so the new value is sent.
pub async fn run_device(
    mut poller: DevicePoller,
    stagger: Duration,
    mut boosts: watch::Receiver<Option<Boost>>,
    mut commands: mpsc::Receiver<(Command, Write)>,
    out: mpsc::Sender<Vec<Sample>>,
    results: mpsc::Sender<CommandResult>,
    shutdown: CancellationToken,
) {
    let mut next = Instant::now() + stagger;
    let mut boosts_open = true;
    loop {
        tokio::select! {
            // A stop goes first: no command starts once it has begun.
            biased;
            () = shutdown.cancelled() => return,
            changed = boosts.changed(), if boosts_open => {
                if changed.is_err() {
                    // No more boosts can come; the one in force runs its course.
                    boosts_open = false;
                    continue;
                }
                poller.set_boost(*boosts.borrow_and_update());
                next = Instant::now();
            }
            Some((command, write)) = commands.recv() => {
                let result = command::execute(&mut poller, &command, &write).await;
                if results.send(result).await.is_err() {
                    return;
                }
                next = Instant::now();
            }
            () = tokio::time::sleep_until(next) => {
                let samples = poller.poll().await;
                if !samples.is_empty() && out.send(samples).await.is_err() {
                    return;
                }
                let interval = poller.interval(Instant::now());
                let wait = poller.backoff.delay(interval, MAX_BACKOFF.max(interval));
                // A poll that ran late is followed by one poll at once, not a burst of catch-ups.
                next = (next + wait).max(Instant::now() + if poller.backoff.is_failing() { wait / 2 } else { Duration::ZERO });
            }
        }
    }
}
