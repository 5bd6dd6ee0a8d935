//! The durable outbox. A message is a row before it is sent; senders claim rows with
//! `FOR UPDATE SKIP LOCKED` under a lease, so a crash mid-send only delays a message. Several
//! server processes may send from one outbox: a sender first takes a lease on the recipient
//! (`outbox_recipients`), so one sender at a time decides what a person gets, and every later
//! update of a message is guarded by its claim, so a sender whose lease ran out changes nothing.
//! Per recipient, at most one message goes out per `min_gap`
//! and `per_day` a day (providers cap a number at a few dozen a day): what waits meanwhile is
//! sent as one digest. Providers are tried in order; one that refuses or cannot be reached is
//! skipped at once for the next. One that times out may have sent: the message becomes
//! *unsure*, keeps its text, counts against the recipient's allowance as if sent, is folded
//! into no digest, and goes nowhere again before that provider has been asked whether it sent
//! it ([`Provider::after_timeout`]); a provider that cannot tell is asked for up to
//! `unsure_wait`, then the message is sent again.
//!
//! Every channel goes through here: a message's channel picks who sends it (the text or voice
//! providers, SMTP, Web Push, a chat room's robot), and its allowance, digests and leases are
//! per channel and address, so an SMS does not hold back the call that follows it. A push or a
//! call that cannot reach its person (no browser subscribed; every voice provider refused it
//! [`VOICE_ATTEMPTS`] times) fails over to an SMS: the same step's SMS key, so a person who got
//! that SMS already gets no second one.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::{
    email::Email,
    providers::{AfterTimeout, Kind, Outgoing, Provider, SendError},
    push,
    webpush::VapidKey,
};

/// Attempts at a push or a call before it fails over to an SMS.
pub const VOICE_ATTEMPTS: i32 = 3;

/// What the outbox sends with.
#[derive(Clone)]
pub struct Senders {
    /// Text and voice providers, each carrying one channel, in failover order.
    pub providers: Arc<Vec<Provider>>,
    /// The SMTP sender, if e-mail is configured.
    pub email: Option<Arc<Email>>,
    /// The VAPID key and subject of Web Push, if it is on.
    pub push: Option<Arc<(VapidKey, String)>>,
    /// The server's base URL, for links in chat posts.
    pub public_url: String,
    /// The HTTP client providers are reached with.
    pub client: reqwest::Client,
    /// Per-recipient limits and timeouts.
    pub limits: Limits,
}

impl Senders {
    /// Text providers only (tests of the outbox itself).
    pub fn text(providers: Arc<Vec<Provider>>, client: reqwest::Client, limits: Limits) -> Self {
        Self { providers, email: None, push: None, public_url: String::new(), client, limits }
    }
}

text_enum! {
    /// Where a message is. The SQL of the outbox names these in literals where a partial index
    /// depends on them (`outbox_due`, `outbox_by_person`, `outbox_by_address`).
    pub enum OutboxStatus {
        /// Waiting for its turn (or its retry).
        Pending = "pending",
        /// A sender holds it.
        Sending = "sending",
        /// A provider took it.
        Sent = "sent",
        /// Every provider refused it, or its attempts ran out.
        Failed = "failed",
        /// Sent inside a digest with others to the same person.
        Merged = "merged",
        /// Not needed any more (its alarm was acknowledged first).
        Cancelled = "cancelled",
    }
}

/// Per-recipient limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// At most one message per recipient this often.
    pub min_gap: Duration,
    /// At most this many messages per recipient a day.
    pub per_day: i64,
    /// A claimed message is someone else's to retry after this long.
    pub lease: Duration,
    /// How long a provider may take to answer.
    pub send_timeout: Duration,
    /// Timeouts from one provider before the next is tried.
    pub timeouts_before_failover: i32,
    /// Attempts before a message is given up as failed.
    pub max_attempts: i32,
    /// How long a message a provider timed out on waits for that provider to tell whether it
    /// went out, before it is sent again all the same (a page that never arrives is worse than
    /// a second copy).
    pub unsure_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_gap: Duration::from_secs(60),
            per_day: 40,
            lease: Duration::from_secs(60),
            send_timeout: Duration::from_secs(10),
            timeouts_before_failover: 2,
            max_attempts: 20,
            unsure_wait: Duration::from_secs(60),
        }
    }
}

/// A message to enqueue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Unique: enqueueing the same key again does nothing.
    pub idempotency_key: String,
    /// The alarm it is about.
    pub alarm_id: Option<i64>,
    /// Or the ticket.
    pub ticket_id: Option<i64>,
    /// The person (none for a chat room).
    pub person_id: Option<i64>,
    /// `sms`, `voice`, `push`, `email` or `chat`.
    pub channel: &'static str,
    /// Their phone number or e-mail address; `push:<person>` or `chat:<room>`.
    pub address: String,
    /// The chat room, for `chat`.
    pub chat_room_id: Option<i64>,
    /// Not sent before this (the end of the person's quiet hours); not at all if its alarm
    /// cleared by then.
    pub not_before: Option<DateTime<Utc>>,
    /// `en` or `zh`.
    pub language: String,
    /// Template parameters.
    pub params: Value,
    /// The rendered text.
    pub body: String,
    /// The code a reply quotes, when a reply means something.
    pub reply_code: Option<String>,
    /// A file an e-mail carries.
    pub attachment: Option<Attachment>,
}

/// A file an e-mail carries (at most 8 MiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Its name, for example `report-12.pdf`.
    pub filename: String,
    /// Its MIME type.
    pub content_type: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// Writes a message to the outbox; `false` if its key was enqueued before. A message with an
/// attachment is two statements: enqueue it inside a transaction.
pub async fn enqueue(db: &mut sqlx::PgConnection, message: &NewMessage) -> sqlx::Result<bool> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "insert into outbox (idempotency_key, alarm_id, ticket_id, person_id, channel, address, language, params, body,
             reply_code, chat_room_id, not_before, next_attempt_at)
         values ($1, $2, $9, $3, $10, $4, $5, $6, $7, $8, $11, $12, coalesce($12, now()))
         on conflict (idempotency_key) do nothing returning id",
    )
    .bind(&message.idempotency_key)
    .bind(message.alarm_id)
    .bind(message.person_id)
    .bind(&message.address)
    .bind(&message.language)
    .bind(&message.params)
    .bind(&message.body)
    .bind(&message.reply_code)
    .bind(message.ticket_id)
    .bind(message.channel)
    .bind(message.chat_room_id)
    .bind(message.not_before)
    .fetch_optional(&mut *db)
    .await?;
    if let (Some(id), Some(attachment)) = (inserted, &message.attachment) {
        sqlx::query("insert into outbox_attachments (outbox_id, filename, content_type, data) values ($1, $2, $3, $4)")
            .bind(id)
            .bind(&attachment.filename)
            .bind(&attachment.content_type)
            .bind(&attachment.data)
            .execute(&mut *db)
            .await?;
    }
    Ok(inserted.is_some())
}

#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: i64,
    alarm_id: Option<i64>,
    person_id: Option<i64>,
    chat_room_id: Option<i64>,
    not_before: Option<DateTime<Utc>>,
    channel: String,
    idempotency_key: String,
    address: String,
    language: String,
    params: Value,
    body: String,
    reply_code: Option<String>,
    attempts: i32,
    /// Timeouts so far, for failover.
    timeouts: i32,
    /// The claim this send is under; updates are guarded by it.
    claim: i64,
    /// A provider that timed out on it, and so may have sent it; since when.
    unsure_provider: Option<String>,
    unsure_since: Option<DateTime<Utc>>,
}

/// Sends what is due until `shutdown`; `wake` is notified when something is enqueued.
pub async fn run(pool: PgPool, senders: Senders, wake: Arc<Notify>, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        match send_due(&pool, &senders).await {
            Ok(0) => {}
            Ok(_) => continue,
            Err(error) => warn!(%error, "sending from the outbox failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Claims and sends due messages, one per recipient and channel at a time; returns how many it
/// handled.
pub async fn send_due(pool: &PgPool, senders: &Senders) -> sqlx::Result<usize> {
    let limits = senders.limits;
    let claim = rand::random::<i64>();
    let mut tx = pool.begin().await?;
    let due: Vec<(i64, String)> = sqlx::query_as(
        "select id, channel || ':' || address from outbox
         where status in ('pending', 'sending') and next_attempt_at <= now()
         order by next_attempt_at, id limit 200 for update skip locked",
    )
    .fetch_all(&mut *tx)
    .await?;
    // One claim per recipient (channel and address), and only for recipients no other sender
    // holds: what else waits for them is merged into it.
    let mut seen = std::collections::HashSet::new();
    let first: Vec<(i64, String)> = due.into_iter().filter(|(_, recipient)| seen.insert(recipient.clone())).collect();
    // In one order for every sender, so two never wait on each other's leases.
    let mut recipients: Vec<&str> = first.iter().map(|(_, recipient)| recipient.as_str()).collect();
    recipients.sort_unstable();
    let held: Vec<String> = sqlx::query_scalar(
        "insert into outbox_recipients (address, claim, held_until)
         select unnest($1::text[]), $2, now() + make_interval(secs => $3::double precision)
         on conflict (address) do update set claim = excluded.claim, held_until = excluded.held_until
             where outbox_recipients.held_until <= now()
         returning address",
    )
    .bind(&recipients)
    .bind(claim)
    .bind(limits.lease.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let held: std::collections::HashSet<String> = held.into_iter().collect();
    let ids: Vec<i64> = first.iter().filter(|(_, recipient)| held.contains(recipient)).map(|(id, _)| *id).collect();
    let claimed: Vec<Claimed> = sqlx::query_as(
        "update outbox set status = 'sending', attempts = attempts + 1, claim = $3,
             next_attempt_at = now() + make_interval(secs => $2::double precision)
         where id = any($1)
         returning id, alarm_id, person_id, chat_room_id, not_before, channel, idempotency_key, address, language,
             params, body, reply_code, attempts, timeouts, claim, unsure_provider, unsure_since",
    )
    .bind(&ids)
    .bind(limits.lease.as_secs_f64())
    .bind(claim)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let count = claimed.len();
    let mut sends = tokio::task::JoinSet::new();
    for message in claimed {
        let (pool, senders) = (pool.clone(), senders.clone());
        sends.spawn(async move {
            let (recipient, claim) = (format!("{}:{}", message.channel, message.address), message.claim);
            let delivered = deliver(&pool, &senders, message).await;
            // The next message to this recipient may be claimed at once (by any sender).
            let released =
                sqlx::query("update outbox_recipients set held_until = now() where address = $1 and claim = $2")
                    .bind(&recipient)
                    .bind(claim)
                    .execute(&pool)
                    .await;
            delivered.and(released.map(drop))
        });
    }
    // Every send finishes (a dropped set would abort sends in flight, to be sent again later).
    let mut first_error = None;
    while let Some(result) = sends.join_next().await {
        if let Ok(Err(error)) = result {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(count), Err)
}

async fn deliver(pool: &PgPool, senders: &Senders, mut message: Claimed) -> sqlx::Result<()> {
    let (limits, client) = (senders.limits, &senders.client);
    // An alarm acknowledged (or closed) while its message waited: nobody needs it any more; nor
    // a minor one that cleared while quiet hours held its message.
    if let Some(alarm) = message.alarm_id {
        let settled: bool = sqlx::query_scalar(
            "select acknowledged_at is not null or closed_at is not null or ($2 and cleared_at is not null)
             from alarms where id = $1",
        )
        .bind(alarm)
        .bind(message.not_before.is_some())
        .fetch_one(pool)
        .await?;
        if settled {
            let mut tx = pool.begin().await?;
            let cancelled = sqlx::query("update outbox set status = 'cancelled' where id = $1 and claim = $2")
                .bind(message.id)
                .bind(message.claim)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // A digest carried other alarms: those still open go out on their own again.
            if cancelled == 1 {
                sqlx::query(
                    "update outbox set status = 'pending', merged_into = null, next_attempt_at = now()
                     where merged_into = $1 and status = 'merged'
                       and alarm_id in (select id from alarms where acknowledged_at is null and closed_at is null)",
                )
                .bind(message.id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            debug!(id = message.id, alarm, "message cancelled: its alarm was acknowledged");
            return Ok(());
        }
    }
    // The recipient's allowance on this channel: one per `min_gap`, `per_day` a day.
    // A message that timed out may be on the phone already: it counts, from when it timed out.
    let (last_sent, today): (Option<DateTime<Utc>>, i64) = sqlx::query_as(
        "select max(coalesce(sent_at, unsure_since)),
                count(*) filter (where coalesce(sent_at, unsure_since) > now() - interval '1 day')
         from outbox where address = $1 and channel = $3 and id <> $2
           and (status = 'sent' or (status in ('pending', 'sending') and unsure_provider is not null))",
    )
    .bind(&message.address)
    .bind(message.id)
    .bind(&message.channel)
    .fetch_one(pool)
    .await?;
    let gap = chrono::Duration::from_std(limits.min_gap).unwrap_or_default();
    let now = Utc::now();
    let wait_until = match last_sent {
        _ if today >= limits.per_day => Some(now + chrono::Duration::hours(1)),
        Some(last) if last + gap > now => Some(last + gap),
        _ => None,
    };
    if let Some(until) = wait_until {
        sqlx::query(
            "update outbox set status = 'pending', attempts = attempts - 1, next_attempt_at = $2
             where id = $1 and claim = $3",
        )
        .bind(message.id)
        .bind(until)
        .bind(message.claim)
        .execute(pool)
        .await?;
        debug!(id = message.id, "held back by the recipient's limit; will go out as or in a digest");
        return Ok(());
    }
    // A message that may have gone out keeps its text, so the provider can be asked about it.
    if message.unsure_provider.is_none() && !merge_waiting(pool, &mut message).await? {
        return Ok(());
    }
    let outgoing = Outgoing {
        id: message.id,
        idempotency_key: message.idempotency_key.clone(),
        language: message.language.clone(),
        address: message.address.clone(),
        body: message.body.clone(),
        params: message.params.clone(),
    };
    // The channel's senders, in order. A message that timed out at a provider goes back to it
    // (same key) before the next.
    let chain: Vec<Provider> = match message.channel.as_str() {
        "email" => vec![Provider::mail()],
        "push" => vec![Provider::push()],
        "chat" => {
            let room: Option<(String, String, Option<String>)> =
                sqlx::query_as("select kind, url, secret from chat_rooms where id = $1")
                    .bind(message.chat_room_id)
                    .fetch_optional(pool)
                    .await?;
            match room.and_then(|(kind, url, secret)| Some((super::chat::ChatKind::from_name(&kind)?, url, secret))) {
                Some((kind, url, secret)) => vec![Provider::chat(kind, url, secret, &senders.public_url)],
                None => {
                    sqlx::query("update outbox set status = 'cancelled', last_error = 'the chat room was removed' where id = $1 and claim = $2")
                        .bind(message.id)
                        .bind(message.claim)
                        .execute(pool)
                        .await?;
                    return Ok(());
                }
            }
        }
        // Text providers carry `sms` (and the older `webhook` and `console` rows).
        channel => {
            let channel = if channel == "voice" { "voice" } else { "sms" };
            senders.providers.iter().filter(|p| p.channel() == channel).cloned().collect()
        }
    };
    if chain.is_empty() {
        return give_up(pool, &message, "no provider carries this channel").await;
    }
    // A call report comes when the call ends (ringing, then the alarm said twice): minutes.
    let unsure_wait =
        if message.channel == "voice" { limits.unsure_wait.max(Duration::from_secs(300)) } else { limits.unsure_wait };
    if let Some(unsure) = chain.iter().find(|p| message.unsure_provider.as_deref() == Some(p.name())) {
        let since = message.unsure_since.unwrap_or(now);
        let asked = unsure.after_timeout(client, pool, &outgoing, since, limits.send_timeout);
        let answer = tokio::time::timeout(limits.send_timeout, asked).await;
        let decision = match answer {
            Ok(Ok(decision)) => decision,
            Ok(Err(error)) => {
                // Asked again every 5 s until `unsure_wait`: the timeout was logged once, and
                // the outcome will be.
                debug!(id = message.id, provider = unsure.name(), %error, "could not ask whether a message went out");
                AfterTimeout::Wait
            }
            Err(_) => AfterTimeout::Wait,
        };
        match decision {
            AfterTimeout::Sent(reference) => {
                info!(id = message.id, provider = unsure.name(), "the provider had sent it before timing out");
                return mark_sent(pool, &message, unsure, &reference).await;
            }
            AfterTimeout::Wait if now - since < chrono::Duration::from_std(unsure_wait).unwrap_or_default() => {
                sqlx::query(
                    "update outbox set status = 'pending', attempts = attempts - 1,
                         next_attempt_at = now() + interval '5 seconds'
                     where id = $1 and claim = $2",
                )
                .bind(message.id)
                .bind(message.claim)
                .execute(pool)
                .await?;
                debug!(id = message.id, "waiting for the provider to tell whether the message went out");
                return Ok(());
            }
            AfterTimeout::Wait => {
                warn!(
                    id = message.id,
                    provider = unsure.name(),
                    "cannot tell whether a message went out; sending it again"
                );
            }
            AfterTimeout::Resend => debug!(id = message.id, "the provider did not send it; sending again"),
        }
    }
    // Each run of timeouts moves the first provider tried one on, round the list.
    let start = (message.timeouts / limits.timeouts_before_failover.max(1)) as usize;
    let mut errors = Vec::new();
    let mut timed_out = None;
    let mut unreachable = false;
    for provider in (0..chain.len()).map(|i| &chain[(start + i) % chain.len()]) {
        let sent = async {
            if provider.is_mail() {
                let Some(email) = &senders.email else {
                    return Err(SendError::Failed("no [email] in the paging configuration".into()));
                };
                let attachment = attachment_of(pool, message.id).await.map_err(|e| SendError::Failed(e.to_string()))?;
                email.send(&outgoing.address, &subject(&outgoing.params), &outgoing.body, attachment.as_ref()).await
            } else if provider.is_push() {
                let (Some(push), Some(person)) = (&senders.push, message.person_id) else {
                    return Err(SendError::Unreachable("push is off".into()));
                };
                push::send(pool, &push.0, &push.1, client, person, &outgoing).await
            } else {
                provider.send(client, &outgoing).await
            }
        };
        match tokio::time::timeout(limits.send_timeout, sent).await {
            Ok(Ok(reference)) => return mark_sent(pool, &message, provider, &reference).await,
            Ok(Err(SendError::Failed(error))) => errors.push(format!("{}: {error}", provider.name())),
            Ok(Err(SendError::Unreachable(error))) => {
                errors.push(format!("{}: {error}", provider.name()));
                unreachable = true;
            }
            // A push that may have gone out is harmless to repeat (its topic replaces it).
            Ok(Err(SendError::Timeout)) | Err(_) if provider.is_push() => {
                errors.push(format!("{}: timed out", provider.name()));
            }
            Ok(Err(SendError::Timeout)) | Err(_) => {
                errors.push(format!("{}: timed out", provider.name()));
                timed_out = Some(provider.name());
                break;
            }
        }
    }
    // A push or a call that cannot get through becomes an SMS (but a test stays a test).
    let personal_channel = matches!(message.channel.as_str(), "push" | "voice") && message.alarm_id.is_some();
    if timed_out.is_none() && personal_channel && (unreachable || message.attempts >= VOICE_ATTEMPTS) {
        return give_up(pool, &message, &errors.join("; ")).await;
    }
    let failed = message.attempts >= limits.max_attempts;
    let backoff =
        Duration::from_secs(2u64.saturating_pow(message.attempts.clamp(0, 8) as u32)).min(Duration::from_secs(300));
    warn!(id = message.id, attempt = message.attempts, errors = ?errors, "message not sent");
    sqlx::query(
        "update outbox set status = $2, last_error = $3,
             next_attempt_at = now() + make_interval(secs => $4::double precision),
             timeouts = timeouts + case when $5 then 1 else 0 end,
             unsure_provider = case when $5 then $7 else unsure_provider end,
             unsure_since = case when $5 then now() else unsure_since end
         where id = $1 and claim = $6",
    )
    .bind(message.id)
    .bind(if failed { "failed" } else { "pending" })
    .bind(errors.join("; "))
    .bind(backoff.as_secs_f64())
    .bind(timed_out.is_some())
    .bind(message.claim)
    .bind(timed_out)
    .execute(pool)
    .await?;
    Ok(())
}

async fn mark_sent(pool: &PgPool, message: &Claimed, provider: &Provider, reference: &str) -> sqlx::Result<()> {
    let updated = sqlx::query(
        "update outbox set status = 'sent', sent_at = now(), provider = $2, provider_reference = $3,
             last_error = null, unsure_provider = null
         where id = $1 and claim = $4",
    )
    .bind(message.id)
    .bind(provider.name())
    .bind(reference)
    .bind(message.claim)
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 {
        warn!(id = message.id, "message sent after its claim ran out; the lease is too short");
    } else {
        info!(id = message.id, provider = provider.name(), "message sent");
        // A sent file need not be kept twice: the report it came from stays.
        sqlx::query("delete from outbox_attachments where outbox_id = $1").bind(message.id).execute(pool).await?;
    }
    Ok(())
}

/// Marks a message failed for good; a push or call about an alarm fails over to the SMS of
/// the same step (its key: one SMS per person and step, whichever channel asked for it).
async fn give_up(pool: &PgPool, message: &Claimed, why: &str) -> sqlx::Result<()> {
    let updated = sqlx::query("update outbox set status = 'failed', last_error = $3 where id = $1 and claim = $2")
        .bind(message.id)
        .bind(message.claim)
        .bind(why)
        .execute(pool)
        .await?
        .rows_affected();
    let sms_key = message.idempotency_key.trim_end_matches("-push").trim_end_matches("-voice");
    if updated == 0 || !matches!(message.channel.as_str(), "push" | "voice") || message.alarm_id.is_none() {
        warn!(id = message.id, channel = message.channel, why, "message failed");
        return Ok(());
    }
    let phone: Option<String> = sqlx::query_scalar("select phone from people where id = $1")
        .bind(message.person_id)
        .fetch_optional(pool)
        .await?
        .flatten();
    let Some(phone) = phone else {
        warn!(id = message.id, channel = message.channel, why, "message failed; no phone number to fail over to");
        return Ok(());
    };
    let code = super::reply_code();
    let mut params = message.params.clone();
    params["code"] = Value::String(code.clone());
    let sms = NewMessage {
        idempotency_key: sms_key.to_owned(),
        alarm_id: message.alarm_id,
        ticket_id: None,
        person_id: message.person_id,
        channel: "sms",
        address: phone,
        language: message.language.clone(),
        body: super::sms_text(&params, &message.language),
        params,
        reply_code: Some(code),
        attachment: None,
        chat_room_id: None,
        not_before: None,
    };
    let enqueued = enqueue(&mut *pool.acquire().await?, &sms).await?;
    info!(id = message.id, channel = message.channel, why, enqueued, "message failed over to SMS");
    Ok(())
}

/// Folds the recipient's other waiting messages into this one, as a digest.
/// Only alarm messages are merged, and only about alarms still unacknowledged, and none that
/// quiet hours still hold; what an earlier digest carried moves into this one, so a reply to it
/// reaches every alarm. Calls and pushes are never digests: a keypress or a notification's
/// action acknowledges the one alarm it names.
/// `false` if the message is no longer this sender's to send.
async fn merge_waiting(pool: &PgPool, message: &mut Claimed) -> sqlx::Result<bool> {
    if message.alarm_id.is_none() || matches!(message.channel.as_str(), "voice" | "push") {
        return Ok(true);
    }
    let mut tx = pool.begin().await?;
    let waiting: Vec<(i64, Value)> = sqlx::query_as(
        "update outbox set status = 'merged', merged_into = $1
         where id in (select o.id from outbox o join alarms a on a.id = o.alarm_id
                      where o.address = $2 and o.channel = $3 and o.status = 'pending' and o.id <> $1
                        and o.unsure_provider is null and (o.not_before is null or o.not_before <= now())
                        and a.acknowledged_at is null and a.closed_at is null
                      for update of o skip locked)
         returning id, params",
    )
    .bind(message.id)
    .bind(&message.address)
    .bind(&message.channel)
    .fetch_all(&mut *tx)
    .await?;
    if waiting.is_empty() {
        tx.commit().await?;
        return Ok(true);
    }
    let ids: Vec<i64> = waiting.iter().map(|(id, _)| *id).collect();
    sqlx::query("update outbox set merged_into = $1 where merged_into = any($2)")
        .bind(message.id)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    let mut items = vec![message.params.clone()];
    items.extend(waiting.into_iter().map(|(_, params)| params));
    let code = message.reply_code.clone().unwrap_or_default();
    let (body, params) = digest(&message.language, &items, &code);
    let updated = sqlx::query("update outbox set body = $2, params = $3 where id = $1 and claim = $4")
        .bind(message.id)
        .bind(&body)
        .bind(&params)
        .bind(message.claim)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        // Another sender holds this message now: leave everything to it.
        tx.rollback().await?;
        return Ok(false);
    }
    tx.commit().await?;
    message.body = body;
    message.params = params;
    Ok(true)
}

/// An e-mail's subject from the template parameters.
/// The file an e-mail carries, if it has one.
async fn attachment_of(pool: &PgPool, id: i64) -> sqlx::Result<Option<Attachment>> {
    let row: Option<(String, String, Vec<u8>)> =
        sqlx::query_as("select filename, content_type, data from outbox_attachments where outbox_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(filename, content_type, data)| Attachment { filename, content_type, data }))
}

fn subject(params: &Value) -> String {
    let text = |key: &str| params[key].as_str().unwrap_or_default().to_owned();
    match params["kind"].as_str() {
        Some("report") => format!("Chillcloud {} {}", text("unit"), text("period")),
        _ => format!("Chillcloud G{} {}: {}", text("grade"), text("unit"), text("fault")),
    }
}

/// One short text for several alarms; the link is the first alarm's.
pub fn digest(language: &str, items: &[Value], code: &str) -> (String, Value) {
    let text = |p: &Value, key: &str| p[key].as_str().unwrap_or("?").to_owned();
    let lines: Vec<String> =
        items.iter().map(|p| format!("G{} {} {}", text(p, "grade"), text(p, "unit"), text(p, "fault"))).collect();
    let faults: Vec<String> = items.iter().map(|p| text(p, "fault")).collect();
    let body = if language == "zh" {
        format!("Chillcloud {}条报警：{}。回复 1 {code} 全部确认", items.len(), lines.join("；"))
    } else {
        format!("Chillcloud {} alarms: {}. Reply 1 {code} to acknowledge all", items.len(), lines.join("; "))
    };
    let first = items.first().cloned().unwrap_or_default();
    let params = json!({
        "kind": Kind::Digest.name(),
        "count": items.len().to_string(),
        "grade": items.iter().filter_map(|p| p["grade"].as_str()).min().unwrap_or("?"),
        "unit": format!("{} alarms", items.len()),
        "fault": faults.join(if language == "zh" { "；" } else { "; " }),
        "code": code,
        "token": first["token"],
        "link": first["link"],
    });
    (body, params)
}
