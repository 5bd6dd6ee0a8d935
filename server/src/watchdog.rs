//! The server watching itself. When ingest cannot make progress for
//! [`INGEST_STALLED_AFTER_MS`](crate::routes::INGEST_STALLED_AFTER_MS) (the broker unreachable or
//! refusing the subscriptions, or every batch failing to commit), no reading is stored and no
//! alarm can be raised for any customer: a service alarm pages every person on a site's
//! service team (see [`service_alarms`]), once per stall and at most once an hour (keyed by the
//! hour, so several server processes stalled together page once). `/health` answers 503
//! meanwhile. With the database itself down nothing can be paged from here; `/health` and the
//! log are then what an outside monitor sees.

use std::{sync::Arc, time::Duration};

use chrono::{TimeZone, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    metrics::{Metrics, Stall},
    paging::Paging,
    routes::INGEST_STALLED_AFTER_MS,
    service_alarms::{self, Fault},
};

/// Checks ingest every few seconds until `shutdown`.
pub async fn run(pool: PgPool, paging: Paging, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    // The start of the stall already paged for, so each stall pages once.
    let mut paged_since: Option<i64> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let now_ms = Utc::now().timestamp_millis();
        let Some((stall, lasted_ms)) = metrics.ingest.longest(now_ms) else {
            if paged_since.take().is_some() {
                info!("ingest makes progress again");
            }
            continue;
        };
        let since_ms = now_ms - lasted_ms;
        if lasted_ms < INGEST_STALLED_AFTER_MS || paged_since == Some(since_ms) {
            continue;
        }
        error!(reason = stall.name(), seconds = lasted_ms / 1000, "ingest is stalled: paging the service team");
        match page_service_team(&pool, stall, since_ms).await {
            Ok(enqueued) => {
                paged_since = Some(since_ms);
                info!(people = enqueued, "service alarm enqueued");
                paging.wake.notify_one();
            }
            Err(error) => warn!(%error, "the service alarm cannot be enqueued; /health reports the stall"),
        }
    }
}

/// Enqueues the service alarm for everyone on any site's service team; returns how many
/// messages were new (another process that already paged this hour adds none).
async fn page_service_team(pool: &PgPool, stall: Stall, since_ms: i64) -> sqlx::Result<usize> {
    let fault = Fault {
        en: format!("ingest stalled ({}); readings are not stored and no alarm can be raised", stall.name()),
        zh: format!("数据接收中断（{}），读数未入库，告警无法触发", stall.name()),
    };
    let since = Utc.timestamp_millis_opt(since_ms).single().unwrap_or_default();
    let key = format!("service-ingest-stalled-{}", since_ms / 3_600_000);
    service_alarms::page_service_team(&mut *pool.acquire().await?, &key, &fault, since).await
}
