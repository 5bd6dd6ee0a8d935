//! Alarms about the service itself rather than any site (ingest stalled, storage in trouble):
//! grade 3, paged by SMS to everyone on any site's service team through the outbox, like any
//! other page.
//!
//! A condition that lasts is an episode: [`raise`] opens one per kind and pages once, [`clear`]
//! closes it when the condition is over. The open episode is a row with a unique index, so
//! several server processes seeing the same condition page once, and a restarted process does
//! not page again for an episode already announced.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tracing::{error, info};

use crate::paging::{
    outbox::{self, NewMessage},
    providers::Kind,
};

/// The grade of every service alarm: the service cannot do its work for some or all customers.
pub const GRADE: i16 = 3;

/// What a service alarm says, in each language people read.
#[derive(Debug, Clone)]
pub struct Fault {
    /// A few words in English.
    pub en: String,
    /// The same in Chinese.
    pub zh: String,
}

/// Opens an episode of `kind` unless one is open, and pages the service team, in one
/// transaction: an episode is never open without its page. Returns whether this call opened it.
pub async fn raise(pool: &PgPool, kind: &str, fault: &Fault, detail: &str) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let opened: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
        "insert into service_alarms (kind, grade, detail) values ($1, $2, $3)
         on conflict (kind) where cleared_at is null do nothing returning id, raised_at",
    )
    .bind(kind)
    .bind(GRADE)
    .bind(detail)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, raised_at)) = opened else { return Ok(false) };
    let people = page_service_team(&mut tx, &format!("service-alarm-{id}"), fault, raised_at).await?;
    tx.commit().await?;
    error!(kind, detail, people, "service alarm raised: the service team is paged");
    Ok(true)
}

/// Closes the open episode of `kind`, if any; returns whether there was one.
pub async fn clear(pool: &PgPool, kind: &str) -> sqlx::Result<bool> {
    let cleared = sqlx::query("update service_alarms set cleared_at = now() where kind = $1 and cleared_at is null")
        .bind(kind)
        .execute(pool)
        .await?
        .rows_affected();
    if cleared > 0 {
        info!(kind, "service alarm cleared");
    }
    Ok(cleared > 0)
}

/// Enqueues `fault` for everyone on any site's service team, once per `key`; returns how many
/// messages were new (another process that already paged this key adds none).
pub async fn page_service_team(
    db: &mut PgConnection,
    key: &str,
    fault: &Fault,
    since: DateTime<Utc>,
) -> sqlx::Result<usize> {
    let team: Vec<(i64, String, String)> = sqlx::query_as(
        "select distinct p.id, p.phone, p.language from site_contacts c join people p on p.id = c.person_id
         where c.role = 'service' and p.phone is not null order by p.id",
    )
    .fetch_all(&mut *db)
    .await?;
    let since = since.format("%H:%M UTC").to_string();
    let mut enqueued = 0;
    for (person, phone, language) in team {
        let (fault, body) = match language.as_str() {
            "zh" => (&fault.zh, format!("Chillcloud 服务告警（{GRADE} 级）：自 {since} 起{}。", fault.zh)),
            _ => (&fault.en, format!("Chillcloud service alarm (grade {GRADE}): {} since {since}.", fault.en)),
        };
        let message = NewMessage {
            idempotency_key: format!("{key}-person-{person}"),
            alarm_id: None,
            ticket_id: None,
            person_id: Some(person),
            channel: "sms",
            address: phone,
            language,
            params: json!({ "kind": Kind::Service.name(), "fault": fault, "since": since }),
            body,
            reply_code: None,
            chat_room_id: None,
            not_before: None,
            attachment: None,
        };
        if outbox::enqueue(&mut *db, &message).await? {
            enqueued += 1;
        }
    }
    Ok(enqueued)
}
