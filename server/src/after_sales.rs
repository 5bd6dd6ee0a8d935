//! The after-sales loop: alarm events become incidents that page people ([`paging`]) and, for
//! the grades that get one, tickets on the grade's clocks ([`tickets`]); due escalation steps and
//! breached ticket clocks are acted on at every event and every half second. It sits above both,
//! so neither imports the other's loop: tickets send through paging's outbox, and paging knows
//! nothing of tickets.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    alarms::Alarms,
    paging::{self, Paging, outbox},
    tickets,
};

/// Runs the loop until `shutdown`, with the outbox's senders beside it.
pub async fn run(pool: PgPool, paging: Paging, alarms: Alarms, shutdown: CancellationToken) {
    // No redirects: a chat room's or push service's host was checked, not where it might send us.
    let client = reqwest::Client::builder()
        .timeout(paging.limits.send_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let sender = tokio::spawn(outbox::run(pool.clone(), paging.senders(client), paging.wake.clone(), shutdown.clone()));
    let mut events = alarms.subscribe();
    loop {
        if let Err(error) = step(&pool, &paging).await {
            warn!(%error, "after-sales step failed; will retry");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = events.recv() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    let _ = sender.await;
}

/// Reads new alarm events (opening incidents and tickets), then escalates what is due and checks
/// ticket clocks.
async fn step(pool: &PgPool, paging: &Paging) -> sqlx::Result<()> {
    if let Some(mut read) = paging::read_events(pool, paging).await? {
        // In the cursor's transaction: a failure reads the events again, and a ticket is opened
        // once per alarm (its unique alarm_id).
        for alarm_id in &read.ticket_alarms {
            tickets::open_for_alarm(&mut read.tx, *alarm_id, paging.ticket_clock_scale).await?;
        }
        read.commit().await?;
    }
    if paging::escalate(pool, paging).await? + tickets::check_breaches(pool).await? > 0 {
        paging.wake.notify_one();
    }
    Ok(())
}
