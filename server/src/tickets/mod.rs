//! Service tickets: the job behind an alarm, tracked against the response clocks of its grade.
//!
//! A ticket opens from an alarm (automatically for the grades in `auto_open_grades`, grade 1
//! and 2 by default) or by hand. Its clocks come from the service table in docs/service-levels.md: respond
//! within 1 h (grade 1) or 2 h, be on site within 4, 24, 48 or 96 h, pass to the maker within
//! 2, 24, 48 or 96 h. A breached clock is recorded and the site's managers are paged. Triage
//! decides remote guidance or a site visit with its parts and tools. On closing, the owner is
//! asked for a 1 to 5 score by SMS (reply `<score> <code>`) or a signed link.

pub mod api;

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tracing::info;

use crate::paging::{Paging, links, outbox, providers::Kind};

text_enum! {
    /// Where a ticket is.
    pub enum TicketStatus {
        /// Opened; nobody has responded yet.
        Open = "open",
        /// An engineer responded.
        Responded = "responded",
        /// An engineer is on site.
        OnSite = "on_site",
        /// The fault is fixed.
        Resolved = "resolved",
        /// Done, and the owner was asked for a score.
        Closed = "closed",
    }
}

text_enum! {
    /// What can be done to a ticket (the last part of its action's path).
    pub enum TicketAction {
        /// Give it to an engineer.
        Assign = "assign",
        /// Decide remote guidance or a site visit, with parts and tools.
        Triage = "triage",
        /// An engineer responded.
        Respond = "respond",
        /// An engineer arrived on site.
        OnSite = "on_site",
        /// A note, with data.
        Note = "note",
        /// The fault is fixed.
        Resolve = "resolve",
        /// Done: the owner is asked for a score.
        Close = "close",
    }
}

impl TicketAction {
    /// The status it moves the ticket to, if it moves it.
    pub fn status(self) -> Option<TicketStatus> {
        match self {
            Self::Respond => Some(TicketStatus::Responded),
            Self::OnSite => Some(TicketStatus::OnSite),
            Self::Resolve => Some(TicketStatus::Resolved),
            Self::Close => Some(TicketStatus::Closed),
            Self::Assign | Self::Triage | Self::Note => None,
        }
    }

    /// The event recorded when it is done.
    pub fn event(self) -> &'static str {
        match self {
            Self::Assign => "assigned",
            Self::Triage => "triaged",
            Self::Respond => "responded",
            Self::OnSite => "on_site",
            Self::Note => "note",
            Self::Resolve => "resolved",
            Self::Close => "closed",
        }
    }
}

/// The clocks of a grade: respond, be on site, pass to the maker.
pub fn clocks(grade: i16) -> (Duration, Duration, Duration) {
    match grade {
        1 => (Duration::hours(1), Duration::hours(4), Duration::hours(2)),
        2 => (Duration::hours(2), Duration::hours(24), Duration::hours(24)),
        3 => (Duration::hours(2), Duration::hours(48), Duration::hours(48)),
        _ => (Duration::hours(2), Duration::hours(96), Duration::hours(96)),
    }
}

pub(crate) async fn event(
    db: impl sqlx::PgExecutor<'_>,
    ticket: i64,
    kind: &str,
    actor: &str,
    comment: &str,
    data: Option<Value>,
) -> sqlx::Result<()> {
    sqlx::query("insert into ticket_events (ticket_id, kind, actor, comment, data) values ($1, $2, $3, $4, $5)")
        .bind(ticket)
        .bind(kind)
        .bind(actor)
        .bind(comment)
        .bind(data)
        .execute(db)
        .await?;
    Ok(())
}

/// Opens a grade 4 ticket for an owner's question about report `report` of `unit` at `site`,
/// with the question as its first note, in the caller's transaction; returns its id.
pub async fn open_for_question(
    db: &mut sqlx::PgConnection,
    report: i64,
    site: &str,
    unit: i64,
    actor: &str,
    question: &str,
) -> sqlx::Result<i64> {
    let grade = 4;
    let (respond, on_site, escalate) = clocks(grade);
    // The title reaches managers' SMS when a clock is breached: ours, not the owner's words.
    let title = format!("Question on remote-doctor report #{report}");
    let id: i64 = sqlx::query_scalar(
        "insert into tickets (gateway_id, unit_id, report_id, grade, title, respond_by, on_site_by, escalate_by)
         values ($1, $2, $3, $4, $5, now() + $6, now() + $7, now() + $8) returning id",
    )
    .bind(site)
    .bind(unit)
    .bind(report)
    .bind(grade)
    .bind(&title)
    .bind(respond)
    .bind(on_site)
    .bind(escalate)
    .fetch_one(&mut *db)
    .await?;
    event(&mut *db, id, "opened", actor, "a question about a remote-doctor report", None).await?;
    event(&mut *db, id, TicketAction::Note.event(), actor, question, None).await?;
    Ok(id)
}

/// Opens the ticket of an alarm (once); returns its id when it was opened now. It runs in the
/// caller's transaction, so a ticket is opened with the event that asked for it or not at all.
pub async fn open_for_alarm(db: &mut sqlx::PgConnection, alarm_id: i64, scale: f64) -> sqlx::Result<Option<i64>> {
    let grade: Option<i16> =
        sqlx::query_scalar("select grade from alarms where id = $1").bind(alarm_id).fetch_optional(&mut *db).await?;
    let Some(grade) = grade else { return Ok(None) };
    let (respond, on_site, escalate) = scaled(clocks(grade), scale);
    let id: Option<i64> = sqlx::query_scalar(
        "insert into tickets (alarm_id, gateway_id, unit_id, grade, title, respond_by, on_site_by, escalate_by)
         select id, gateway_id, unit_id, grade, title || coalesce(' (' || (select device_key from units where id = unit_id) || ')', ''),
                now() + $2, now() + $3, now() + $4
         from alarms where id = $1
         on conflict (alarm_id) do nothing returning id",
    )
    .bind(alarm_id)
    .bind(respond)
    .bind(on_site)
    .bind(escalate)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(id) = id {
        event(&mut *db, id, "opened", "system", "opened from the alarm", Some(json!({"alarm_id": alarm_id}))).await?;
        info!(ticket = id, alarm = alarm_id, "ticket opened");
    }
    Ok(id)
}

/// Clocks shortened by `scale` (1.0 in production; tests run hours as seconds).
fn scaled((a, b, c): (Duration, Duration, Duration), scale: f64) -> (Duration, Duration, Duration) {
    let s = |d: Duration| Duration::milliseconds((d.num_milliseconds() as f64 * scale) as i64);
    (s(a), s(b), s(c))
}

/// Records breached clocks and pages the site's managers about them; returns messages enqueued.
pub async fn check_breaches(pool: &PgPool) -> sqlx::Result<usize> {
    let breaches: Vec<(i64, String, i16, String, String)> = sqlx::query_as(
        "select t.id, t.gateway_id, t.grade, t.title, c.clock from tickets t,
             lateral (values ('respond', t.responded_at is null and t.respond_by < now()),
                             ('on_site', t.on_site_at is null and t.triage = 'site_visit' and t.on_site_by < now()),
                             ('escalate', t.resolved_at is null and t.escalate_by < now())) as c(clock, late)
         where t.closed_at is null and c.late and not c.clock = any(t.breached)",
    )
    .fetch_all(pool)
    .await?;
    let mut enqueued = 0;
    for (ticket, gateway, grade, title, clock) in breaches {
        let updated = sqlx::query(
            "update tickets set breached = array_append(breached, $2) where id = $1 and not $2 = any(breached)",
        )
        .bind(ticket)
        .bind(&clock)
        .execute(pool)
        .await?
        .rows_affected();
        if updated == 0 {
            continue;
        }
        event(pool, ticket, "breached", "system", &clock, None).await?;
        let managers: Vec<(i64, String, Option<String>, String)> = sqlx::query_as(
            "select p.id, p.name, p.phone, p.language from site_contacts c join people p on p.id = c.person_id
             where c.gateway_id = $1 and c.role = 'manager'",
        )
        .bind(&gateway)
        .fetch_all(pool)
        .await?;
        for (person, _, phone, language) in managers {
            let Some(phone) = phone else { continue };
            let what = match (clock.as_str(), language.as_str()) {
                ("respond", "zh") => "响应超时",
                ("on_site", "zh") => "到场超时",
                (_, "zh") => "未按时解决，需上报厂家",
                ("respond", _) => "response clock breached",
                ("on_site", _) => "on-site clock breached",
                _ => "not resolved in time: pass to the maker",
            };
            let body = format!("Chillcloud ticket #{ticket} G{grade} {title}: {what}");
            let message = outbox::NewMessage {
                idempotency_key: format!("ticket-{ticket}-breach-{clock}-person-{person}"),
                alarm_id: None,
                ticket_id: Some(ticket),
                person_id: Some(person),
                channel: "sms",
                address: phone,
                language,
                params: json!({
                    "kind": Kind::Breach.name(), "ticket": ticket.to_string(), "grade": grade.to_string(),
                    "unit": format!("#{ticket}"), "fault": title, "clock": what,
                }),
                body,
                reply_code: None,
                chat_room_id: None,
                not_before: None,
                attachment: None,
            };
            if outbox::enqueue(&mut *pool.acquire().await?, &message).await? {
                enqueued += 1;
            }
        }
    }
    Ok(enqueued)
}

/// Asks the site's owner contacts for a score of the closed ticket, in the caller's transaction:
/// wake the paging task once it is committed.
pub(crate) async fn ask_satisfaction(db: &mut sqlx::PgConnection, paging: &Paging, ticket: i64) -> sqlx::Result<()> {
    let owners: Vec<(i64, Option<String>, String, String)> = sqlx::query_as(
        "select p.id, p.phone, p.language, t.title from tickets t join site_contacts c on c.gateway_id = t.gateway_id
         join people p on p.id = c.person_id where t.id = $1 and c.role = 'owner'",
    )
    .bind(ticket)
    .fetch_all(&mut *db)
    .await?;
    for (person, phone, language, title) in owners {
        let Some(phone) = phone else { continue };
        let grant = links::Grant { subject: ticket, person_id: person, expires: Utc::now().timestamp() + 14 * 86_400 };
        let token = links::sign(&paging.link_secret, links::Purpose::Feedback, &grant);
        let link = format!("{}/f/{token}", paging.public_url);
        let code = crate::paging::reply_code();
        let body = if language == "zh" {
            format!("Chillcloud 服务单 #{ticket}（{title}）已完成。请评分：回复 1-5 {code} 或打开 {link}")
        } else {
            format!(
                "Chillcloud job #{ticket} ({title}) is done. How satisfied are you? Reply 1-5 {code} or open {link}"
            )
        };
        let message = outbox::NewMessage {
            idempotency_key: format!("ticket-{ticket}-feedback-person-{person}"),
            alarm_id: None,
            ticket_id: Some(ticket),
            person_id: Some(person),
            channel: "sms",
            address: phone,
            language,
            params: json!({
                "kind": Kind::Feedback.name(), "ticket": ticket.to_string(), "unit": format!("#{ticket}"),
                "fault": title, "code": code, "token": token, "link": link,
            }),
            body,
            reply_code: Some(code),
            chat_room_id: None,
            not_before: None,
            attachment: None,
        };
        outbox::enqueue(&mut *db, &message).await?;
    }
    Ok(())
}

/// Records a satisfaction score (the first one counts).
pub async fn record_satisfaction(pool: &PgPool, ticket: i64, score: i16, actor: &str) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "update tickets set satisfaction = $2, satisfaction_at = now() where id = $1 and satisfaction is null and closed_at is not null",
    )
    .bind(ticket)
    .bind(score)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 1 {
        event(&mut *tx, ticket, "feedback", actor, &score.to_string(), None).await?;
    }
    tx.commit().await?;
    Ok(updated == 1)
}
