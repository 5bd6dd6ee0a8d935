//! The server watching itself. When ingest cannot make progress for
//! [`INGEST_STALLED_AFTER_MS`](crate::routes::INGEST_STALLED_AFTER_MS) (the broker unreachable or
//! refusing the subscriptions, or every batch failing to commit), no reading is stored and no
//! alarm can be raised for any customer: a service alarm pages every person on a site's
//! service team through the outbox like any other page, once per stall and at most once an hour
//! (keyed by the hour, so several server processes stalled together page once). `/health` answers 503
//! meanwhile. With the database itself down nothing can be paged from here; `/health` and the
//! log are then what an outside monitor sees.

use std::{sync::Arc, time::Duration};

use chrono::{TimeZone, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    metrics::{Metrics, Stall},
    paging::{
        Paging,
        outbox::{self, NewMessage},
        providers::Kind,
    },
    routes::INGEST_STALLED_AFTER_MS,
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
    let team: Vec<(i64, String, String)> = sqlx::query_as(
        "select distinct p.id, p.phone, p.language from site_contacts c join people p on p.id = c.person_id
         where c.role = 'service' and p.phone is not null order by p.id",
    )
    .fetch_all(pool)
    .await?;
    let since = Utc.timestamp_millis_opt(since_ms).single().unwrap_or_default().format("%H:%M UTC").to_string();
    let mut enqueued = 0;
    for (person, phone, language) in team {
        let (fault, body) = match language.as_str() {
            "zh" => (
                "数据接收中断",
                format!(
                    "Chillcloud 服务告警：自 {since} 起数据接收中断（{}），读数未入库，告警无法触发。",
                    stall.name()
                ),
            ),
            _ => (
                "ingest stalled",
                format!(
                    "Chillcloud service alarm: ingest stalled since {since} ({}); readings are not stored and no \
                     alarm can be raised.",
                    stall.name()
                ),
            ),
        };
        let message = NewMessage {
            idempotency_key: format!("service-ingest-stalled-{}-person-{person}", since_ms / 3_600_000),
            alarm_id: None,
            ticket_id: None,
            person_id: person,
            channel: "sms",
            address: phone,
            language,
            params: json!({ "kind": Kind::Service.name(), "fault": fault, "since": since }),
            body,
            reply_code: None,
        };
        if outbox::enqueue(pool, &message).await? {
            enqueued += 1;
        }
    }
    Ok(enqueued)
}
