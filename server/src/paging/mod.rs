//! Paging: who hears of an alarm, when, and how.
//!
//! The task reads the alarm event stream (`alarm_events`, from a cursor kept in the database)
//! and opens an incident for every alarm to be announced. Incidents escalate by their site's
//! policy ([`policy`]): each due step enqueues a message per person in the step's audience into
//! the durable outbox ([`outbox`]), keyed so a step is never enqueued twice, and never more than
//! one message per person and incident within the repeat window. Acknowledging the alarm (API,
//! signed link, or an SMS reply quoting the message's code) stops the incident for everyone.

pub mod api;
pub mod chat;
pub mod email;
pub mod links;
pub mod outbox;
pub mod policy;
pub mod providers;
pub mod push;
pub mod webpush;

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;
use tracing::{debug, info};

use policy::{Audience, Channel, Policies, Policy};
use providers::{Provider, ProviderConfig};

/// The paging configuration file (`--paging-config`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PagingFile {
    /// Providers in failover order; none: the console.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Seconds a provider may take to answer (default 10).
    pub send_timeout_s: Option<f64>,
    /// At most one message per person this often, seconds (default 60).
    pub min_gap_s: Option<f64>,
    /// At most this many messages per person a day (default 40).
    pub per_day: Option<i64>,
    /// Policies by grade for every site without its own.
    #[serde(default)]
    pub policies: Policies,
    /// How long acknowledgement links work, hours (default 24).
    pub link_hours: Option<f64>,
    /// Grades whose alarms open a service ticket by themselves (default 1 and 2).
    pub auto_open_grades: Option<Vec<i16>>,
    /// Ticket clocks times this (default 1; below 1 only for drills and tests).
    pub ticket_clock_scale: Option<f64>,
    /// E-mail beside SMS, for people with an address.
    pub email: Option<email::EmailConfig>,
    /// Web Push to the installed dashboard (default on).
    pub push: Option<bool>,
    /// The VAPID subject push services may contact (`mailto:` or `https:`; default the public
    /// URL when it is https).
    pub push_subject: Option<String>,
    /// Hosts beside the browsers' push services that subscriptions may point at (a private
    /// push service; `http` is allowed for these).
    #[serde(default)]
    pub push_hosts: Vec<String>,
    /// Hosts beside the chat robots' own that a room's webhook URL may be on (a proxy).
    #[serde(default)]
    pub chat_hosts: Vec<String>,
}

message_error! {
    /// Why the paging configuration (`--paging-config`) cannot be used, naming the setting.
    pub struct InvalidPagingConfig;
}

/// Replies with a code nobody was sent, per phone number, before that number's replies are
/// refused unread for the rest of 15 minutes: a code (5 of 32 characters) cannot be guessed.
const MAX_WRONG_CODES: usize = 5;

/// Wrong codes by phone number, in a sliding window; at most 10,000 numbers (the oldest go).
#[derive(Debug, Default)]
pub struct WrongCodes(std::sync::Mutex<std::collections::HashMap<String, Vec<std::time::Instant>>>);

impl WrongCodes {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

    /// Whether `number` has sent too many wrong codes lately.
    pub fn blocked(&self, number: &str) -> bool {
        let mut numbers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = numbers.get_mut(number) else { return false };
        times.retain(|t| t.elapsed() < Self::WINDOW);
        times.len() >= MAX_WRONG_CODES
    }

    /// Counts a wrong code from `number`.
    pub fn wrong(&self, number: &str) {
        let mut numbers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if numbers.len() >= 10_000 && !numbers.contains_key(number) {
            numbers.retain(|_, times| times.iter().any(|t| t.elapsed() < Self::WINDOW));
            if numbers.len() >= 10_000 {
                numbers.clear();
            }
        }
        numbers.entry(number.to_owned()).or_default().push(std::time::Instant::now());
    }
}

/// Paging as the server runs it.
#[derive(Clone)]
pub struct Paging {
    /// Providers in failover order.
    pub providers: Arc<Vec<Provider>>,
    /// Outbox limits.
    pub limits: outbox::Limits,
    /// Default policies.
    pub policies: Policies,
    /// Key of signed links.
    pub link_secret: Arc<[u8]>,
    /// Base URL in links, for example `https://chillcloud.example.com`.
    pub public_url: String,
    /// How long links work.
    pub link_ttl: Duration,
    /// Woken when messages are enqueued.
    pub wake: Arc<Notify>,
    /// Grades whose alarms open a ticket.
    pub auto_open_grades: Vec<i16>,
    /// Ticket clocks times this.
    pub ticket_clock_scale: f64,
    /// The SMTP sender, if e-mail is configured.
    pub email: Option<Arc<email::Email>>,
    /// The VAPID key and subject of Web Push, unless push is off.
    pub push: Option<Arc<(webpush::VapidKey, String)>>,
    /// Extra hosts push subscriptions may point at.
    pub push_hosts: Vec<String>,
    /// Extra hosts chat rooms' webhooks may be on.
    pub chat_hosts: Vec<String>,
}

impl Paging {
    /// Reads the configuration (`None`: console only, defaults).
    pub fn load(file: Option<&PathBuf>, link_secret: Vec<u8>, public_url: String) -> Result<Self, InvalidPagingConfig> {
        let config: PagingFile = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => PagingFile::default(),
        };
        let mut providers = Vec::new();
        for provider in config.providers {
            providers
                .push(Provider::load(provider, &public_url).map_err(|e| format!("a provider's secret file: {e}"))?);
        }
        if !providers.iter().any(|p| p.channel() == "sms") {
            providers.push(Provider::console());
        }
        let push_subject = match config.push_subject {
            Some(subject) if subject.starts_with("mailto:") || subject.starts_with("https:") => subject,
            Some(_) => return Err("push_subject starts with mailto: or https:".into()),
            None if public_url.starts_with("https:") => public_url.clone(),
            None => "mailto:paging@chillcloud.invalid".into(),
        };
        for grade in 1..=4 {
            config.policies.for_grade(grade).check().map_err(|e| format!("grade {grade} policy: {e}"))?;
        }
        if config.link_hours.is_some_and(|h| !(h.is_finite() && h > 0.0 && h <= 24.0 * 30.0)) {
            return Err("link_hours is more than 0 and at most 720".into());
        }
        if config.send_timeout_s.is_some_and(|t| !t.is_finite()) || config.per_day.is_some_and(|d| d < 1) {
            return Err("send_timeout_s must be a number and per_day at least 1".into());
        }
        if config.min_gap_s.is_some_and(|g| !(g.is_finite() && g >= 0.0)) {
            return Err("min_gap_s must be 0 or more".into());
        }
        let mut limits = outbox::Limits::default();
        if let Some(gap) = config.min_gap_s {
            limits.min_gap = Duration::from_secs_f64(gap.max(0.0));
        }
        if let Some(per_day) = config.per_day {
            limits.per_day = per_day;
        }
        if let Some(timeout) = config.send_timeout_s {
            limits.send_timeout = Duration::from_secs_f64(timeout.clamp(0.1, 60.0));
        }
        // A claim outlives the slowest attempt through every provider.
        limits.lease = limits.lease.max(limits.send_timeout * (providers.len() as u32 + 1) + Duration::from_secs(30));
        Ok(Self {
            providers: Arc::new(providers),
            limits,
            policies: config.policies,
            public_url: public_url.trim_end_matches('/').to_owned(),
            link_ttl: Duration::from_secs_f64(config.link_hours.unwrap_or(24.0) * 3600.0),
            wake: Arc::new(Notify::new()),
            auto_open_grades: config.auto_open_grades.unwrap_or_else(|| vec![1, 2]),
            ticket_clock_scale: config.ticket_clock_scale.unwrap_or(1.0).clamp(1e-6, 1.0),
            email: config.email.as_ref().map(email::Email::load).transpose()?.map(Arc::new),
            push: config.push.unwrap_or(true).then(|| Arc::new((push::vapid_key(&link_secret), push_subject))),
            link_secret: link_secret.into(),
            push_hosts: config.push_hosts,
            chat_hosts: config.chat_hosts,
        })
    }

    /// What the outbox sends with.
    pub fn senders(&self, client: reqwest::Client) -> outbox::Senders {
        outbox::Senders {
            providers: self.providers.clone(),
            email: self.email.clone(),
            push: self.push.clone(),
            public_url: self.public_url.clone(),
            client,
            limits: self.limits,
        }
    }

    /// Whether a voice provider is configured.
    pub fn has_voice(&self) -> bool {
        self.providers.iter().any(|p| p.channel() == "voice")
    }

    /// Whether `channel` can reach a person with this phone, address and push subscription.
    pub fn reaches(&self, channel: Channel, person: &Recipient) -> bool {
        match channel {
            Channel::Push => self.push.is_some() && person.has_push,
            Channel::Sms => person.phone.is_some(),
            Channel::Voice => person.phone.is_some() && self.has_voice(),
            Channel::Email => person.email.is_some() && self.email.is_some(),
        }
    }
}

/// Opens, resumes or stops incidents from the alarm events after the cursor, and opens the
/// tickets of new alarms of the grades that get one.
/// Alarm events read in the cursor's transaction, not yet committed: the caller opens the tickets
/// they ask for in the same transaction, then commits ([`EventsRead::commit`]), so a failure reads
/// the events again and nothing is done twice.
pub struct EventsRead {
    /// The cursor's transaction, holding the incidents opened and stopped.
    pub tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// Alarms announced (or regraded) into the grades that open a ticket by themselves.
    pub ticket_alarms: Vec<i64>,
    last: i64,
}

impl EventsRead {
    /// Moves the cursor past the events read and commits.
    pub async fn commit(mut self) -> sqlx::Result<()> {
        sqlx::query("update paging_cursor set last_event_id = $1").bind(self.last).execute(&mut *self.tx).await?;
        self.tx.commit().await
    }
}

/// Reads the alarm events after the cursor (up to 1,000): a raise opens an incident, an
/// acknowledgement or a clear stops it. `None` when there were none.
pub async fn read_events(pool: &PgPool, paging: &Paging) -> sqlx::Result<Option<EventsRead>> {
    let mut tx = pool.begin().await?;
    let cursor: i64 =
        sqlx::query_scalar("select last_event_id from paging_cursor for update").fetch_one(&mut *tx).await?;
    let events: Vec<(i64, i64, String, bool, i16)> = sqlx::query_as(
        "select e.id, e.alarm_id, e.kind, e.notify, a.grade from alarm_events e join alarms a on a.id = e.alarm_id
         where e.id > $1 order by e.id limit 1000",
    )
    .bind(cursor)
    .fetch_all(&mut *tx)
    .await?;
    let Some(last) = events.last().map(|e| e.0) else { return Ok(None) };
    let mut ticket_alarms = Vec::new();
    for (_, alarm_id, kind, notify, grade) in events {
        // Announced alarms of the grades that get one open a ticket (a muted one does not);
        // a regrade into those grades opens it then.
        if notify && (kind == "raised" || kind == "regraded") && paging.auto_open_grades.contains(&grade) {
            ticket_alarms.push(alarm_id);
        }
        match kind.as_str() {
            "raised" | "reraised" | "regraded" if notify => {
                // A raise opens the incident. Raised again after it cleared, the ladder starts
                // over (a new round of keys); a worse grade brings the next step forward.
                sqlx::query(
                    "insert into incidents (alarm_id, grade, next_at) values ($1, $2, now())
                     on conflict (alarm_id) do update set
                         grade = least(incidents.grade, excluded.grade),
                         opened_at = case when incidents.stopped_because = 'cleared' then now() else incidents.opened_at end,
                         steps_done = case when incidents.stopped_because = 'cleared' then 0 else incidents.steps_done end,
                         resumed = incidents.resumed + case when incidents.stopped_because = 'cleared' then 1 else 0 end,
                         next_at = case when incidents.stopped_because = 'cleared' or excluded.grade < incidents.grade
                                        then now() else coalesce(incidents.next_at, now()) end,
                         stopped_at = null, stopped_because = null
                     where incidents.stopped_because is distinct from 'acknowledged'",
                )
                .bind(alarm_id)
                .bind(grade)
                .execute(&mut *tx)
                .await?;
            }
            "acknowledged" | "cleared" => {
                let because = if kind == "cleared" { "cleared" } else { "acknowledged" };
                sqlx::query(
                    "update incidents set stopped_at = now(), stopped_because = $2 where alarm_id = $1 and stopped_at is null",
                )
                .bind(alarm_id)
                .bind(because)
                .execute(&mut *tx)
                .await?;
            }
            _ => {}
        }
    }
    Ok(Some(EventsRead { tx, ticket_alarms, last }))
}

#[derive(Debug, sqlx::FromRow)]
struct Due {
    alarm_id: i64,
    grade: i16,
    opened_at: DateTime<Utc>,
    steps_done: i32,
    gateway_id: String,
    device_key: Option<String>,
    /// The unit's display name, when it has one.
    unit_name: Option<String>,
    title: String,
    title_zh: String,
    message: String,
    acknowledged: bool,
    shelved_until: Option<DateTime<Utc>>,
    resumed: i32,
    policy: Option<serde_json::Value>,
    rotation_id: Option<i64>,
}

/// Pages the due steps of incidents; returns how many messages it enqueued.
pub async fn escalate(pool: &PgPool, paging: &Paging) -> sqlx::Result<usize> {
    let due: Vec<Due> = sqlx::query_as(
        "select i.alarm_id, i.grade, i.opened_at, i.steps_done, a.gateway_id, u.device_key,
                coalesce(u.display_name, nullif(u.gateway_display_name, '')) as unit_name, a.title, a.title_zh,
                a.message, a.acknowledged_at is not null or a.closed_at is not null as acknowledged,
                a.shelved_until, i.resumed, s.policy, s.rotation_id
         from incidents i join alarms a on a.id = i.alarm_id left join units u on u.id = a.unit_id
         left join site_paging s on s.gateway_id = a.gateway_id
         where i.stopped_at is null and i.next_at <= now() order by i.next_at limit 200",
    )
    .fetch_all(pool)
    .await?;
    let mut enqueued = 0;
    let now = Utc::now();
    for incident in due {
        if incident.acknowledged {
            sqlx::query(
                "update incidents set stopped_at = now(), stopped_because = 'acknowledged' where alarm_id = $1",
            )
            .bind(incident.alarm_id)
            .execute(pool)
            .await?;
            continue;
        }
        // Shelved: nothing is announced until the shelf ends; the ladder waits.
        if let Some(until) = incident.shelved_until.filter(|until| *until > now) {
            sqlx::query("update incidents set next_at = $2 where alarm_id = $1")
                .bind(incident.alarm_id)
                .bind(until)
                .execute(pool)
                .await?;
            continue;
        }
        let grade = incident.grade as u8;
        let site_policies: Option<Policies> = incident.policy.clone().and_then(|p| serde_json::from_value(p).ok());
        let policy: Policy = site_policies.unwrap_or_else(|| paging.policies.clone()).for_grade(grade);
        let (steps, next) =
            policy.due(incident.opened_at.timestamp_millis(), incident.steps_done as usize, now.timestamp_millis());
        // Steps due together (the server was down) are paged once: per channel choice (a
        // level's own channels, or each person's), its audience, keyed by its last step.
        let mut groups: Vec<(Option<Vec<Channel>>, Vec<Audience>, usize)> = Vec::new();
        for step in &steps {
            let via = policy.via(*step).map(<[Channel]>::to_vec);
            let index = match groups.iter().position(|g| g.0 == via) {
                Some(index) => index,
                None => {
                    groups.push((via, Vec::new(), *step));
                    groups.len() - 1
                }
            };
            let group = &mut groups[index];
            group.2 = *step;
            for who in policy.audience(*step) {
                if !group.1.contains(&who) {
                    group.1.push(who);
                }
            }
        }
        // Each group's last step has the group's channels.
        for (_, audience, step) in groups {
            if audience.contains(&Audience::Chat) {
                enqueued += page_chat_rooms(pool, paging, &incident, step, now).await?;
            }
            for person in recipients(pool, &incident, &audience, now).await? {
                enqueued += page_person(pool, paging, &incident, &person, &policy, step, now).await?;
            }
        }
        sqlx::query("update incidents set steps_done = $2, next_at = $3 where alarm_id = $1")
            .bind(incident.alarm_id)
            .bind(incident.steps_done + steps.len() as i32)
            .bind(next.and_then(DateTime::from_timestamp_millis))
            .execute(pool)
            .await?;
        if !steps.is_empty() {
            info!(alarm = incident.alarm_id, steps = ?steps, "escalation step");
        }
    }
    Ok(enqueued)
}

/// A person to page, with how they want to be reached.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recipient {
    /// Their id.
    pub id: i64,
    /// Their name.
    pub name: String,
    /// Phone number, E.164.
    pub phone: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// `en` or `zh`.
    pub language: String,
    /// Their channels in order (none chosen: push, SMS, e-mail).
    pub channels: Option<Vec<String>>,
    /// Quiet hours, in `timezone`.
    pub quiet_from: Option<NaiveTime>,
    /// When quiet hours end.
    pub quiet_to: Option<NaiveTime>,
    /// An IANA time zone, `Asia/Shanghai`.
    pub timezone: Option<String>,
    /// Whether a browser of theirs is subscribed to push.
    pub has_push: bool,
}

impl Recipient {
    /// The channels a step reaches them by: the level's own, or theirs; only those that can.
    pub fn channels_for(&self, paging: &Paging, via: Option<&[Channel]>) -> Vec<Channel> {
        let chosen: Vec<Channel> = match (via, &self.channels) {
            (Some(via), _) => via.to_vec(),
            (None, Some(names)) => names.iter().filter_map(|n| Channel::from_name(n)).collect(),
            (None, None) => vec![Channel::Push, Channel::Sms, Channel::Email],
        };
        let mut reachable: Vec<Channel> = chosen.into_iter().filter(|c| paging.reaches(*c, self)).collect();
        // Someone whose own channels cannot reach them (push chosen, no browser subscribed
        // yet) still gets the SMS; a level's own channels are what that level is for.
        if reachable.is_empty() && via.is_none() && self.phone.is_some() {
            reachable.push(Channel::Sms);
        }
        reachable
    }
}

/// Sends one person step `step` of `policy`, one message per channel; returns how many were
/// enqueued.
async fn page_person(
    pool: &PgPool,
    paging: &Paging,
    incident: &Due,
    person: &Recipient,
    policy: &Policy,
    step: usize,
    now: DateTime<Utc>,
) -> sqlx::Result<usize> {
    let channels = person.channels_for(paging, policy.via(step));
    let window_s = policy.repeat_s.unwrap_or(1e9);
    if channels.is_empty() {
        debug!(person_id = person.id, name = person.name, "no channel reaches this person; not paged");
        return Ok(0);
    }
    // Quiet hours hold minor alarms (grades 3 and 4) until they end.
    let not_before = match (person.quiet_from, person.quiet_to) {
        (Some(from), Some(to)) if incident.grade >= 3 => {
            quiet_until(from, to, person.timezone.as_deref().unwrap_or("UTC"), now)
        }
        _ => None,
    };
    let mut enqueued = 0;
    for channel in channels {
        // Not twice on one channel to one person for one incident within the repeat window.
        let recent: bool = sqlx::query_scalar(
            "select exists (select 1 from outbox where alarm_id = $1 and person_id = $2 and channel = $4
                            and created_at > now() - make_interval(secs => $3::double precision))",
        )
        .bind(incident.alarm_id)
        .bind(person.id)
        .bind(window_s * 0.99)
        .bind(channel.name())
        .fetch_one(pool)
        .await?;
        if recent {
            continue;
        }
        let address = match channel {
            Channel::Email => person.email.clone(),
            Channel::Push => Some(format!("push:{}", person.id)),
            Channel::Sms | Channel::Voice => person.phone.clone(),
        };
        let Some(address) = address else { continue };
        let mut message = render(paging, incident, person.id, &address, &person.language, step, now);
        message.not_before = not_before;
        if channel != Channel::Sms {
            message.channel = channel.name();
            message.idempotency_key.push_str(&format!("-{}", channel.name()));
            message.reply_code = None;
        }
        match channel {
            Channel::Voice => message.body = providers::speech(&message.params, &message.language),
            Channel::Push => message.body = push::payload(&outgoing_preview(&message)).to_string(),
            Channel::Sms | Channel::Email => {}
        }
        if outbox::enqueue(&mut *pool.acquire().await?, &message).await? {
            enqueued += 1;
        }
    }
    Ok(enqueued)
}

/// An enqueued message as the outbox will hand it to a sender (for what it will show).
fn outgoing_preview(message: &outbox::NewMessage) -> providers::Outgoing {
    providers::Outgoing {
        id: 0,
        idempotency_key: message.idempotency_key.clone(),
        language: message.language.clone(),
        address: message.address.clone(),
        body: message.body.clone(),
        params: message.params.clone(),
    }
}

/// Posts a step of an incident to the site's chat rooms (and the team-wide ones).
async fn page_chat_rooms(
    pool: &PgPool,
    paging: &Paging,
    incident: &Due,
    step: usize,
    now: DateTime<Utc>,
) -> sqlx::Result<usize> {
    let rooms: Vec<(i64, String)> = sqlx::query_as(
        "select id, language from chat_rooms where gateway_id = $1 or gateway_id is null order by id limit 20",
    )
    .bind(&incident.gateway_id)
    .fetch_all(pool)
    .await?;
    let mut enqueued = 0;
    for (room, language) in rooms {
        let mut message = render(paging, incident, 0, &format!("chat:{room}"), &language, step, now);
        // The room sees the alarm's page, never a person's acknowledgement link or code.
        for personal in ["token", "link", "code"] {
            message.params[personal] = serde_json::Value::Null;
        }
        message.idempotency_key =
            format!("alarm-{}-round-{}-step-{step}-chat-{room}", incident.alarm_id, incident.resumed);
        message.person_id = None;
        message.channel = "chat";
        message.chat_room_id = Some(room);
        message.reply_code = None;
        let (title, lines) = chat::words_of(&outgoing_preview(&message));
        message.body = format!("{title}: {}", lines.join("; "));
        if outbox::enqueue(&mut *pool.acquire().await?, &message).await? {
            enqueued += 1;
        }
    }
    Ok(enqueued)
}

/// When quiet hours from `from` to `to` (local times in `timezone`, across midnight when `to`
/// is earlier) end, if `now` is inside them.
pub fn quiet_until(from: NaiveTime, to: NaiveTime, timezone: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let zone: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    let local = now.with_timezone(&zone);
    let time = local.time();
    let date = local.date_naive();
    let end_date = match from.cmp(&to) {
        std::cmp::Ordering::Less if from <= time && time < to => date,
        std::cmp::Ordering::Greater if time >= from => date.succ_opt()?,
        std::cmp::Ordering::Greater if time < to => date,
        _ => return None,
    };
    let end = end_date.and_time(to);
    // A end that falls in a clock change's gap is taken an hour later.
    let end = zone
        .from_local_datetime(&end)
        .earliest()
        .or_else(|| zone.from_local_datetime(&(end + chrono::Duration::hours(1))).earliest())?;
    Some(end.with_timezone(&Utc))
}

/// The people an audience reaches at a site, with their channels and quiet hours.
async fn recipients(
    pool: &PgPool,
    incident: &Due,
    audience: &[Audience],
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Recipient>> {
    let mut ids: Vec<i64> = Vec::new();
    for who in audience {
        let found: Vec<i64> = match who {
            Audience::OnCall => match on_call(pool, incident.rotation_id, now).await? {
                Some(person) => vec![person],
                // No rotation: the whole service team is on call.
                None => site_role(pool, &incident.gateway_id, "service").await?,
            },
            Audience::Service => site_role(pool, &incident.gateway_id, "service").await?,
            Audience::Owner => site_role(pool, &incident.gateway_id, "owner").await?,
            Audience::Manager => site_role(pool, &incident.gateway_id, "manager").await?,
            Audience::Chat => Vec::new(),
        };
        for id in found {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    people_by_id(pool, &ids).await
}

/// People with how they want to be reached.
pub async fn people_by_id(db: impl sqlx::PgExecutor<'_>, ids: &[i64]) -> sqlx::Result<Vec<Recipient>> {
    sqlx::query_as(
        "select p.id, p.name, p.phone, p.email, p.language, f.channels, f.quiet_from, f.quiet_to, f.timezone,
                exists (select 1 from push_subscriptions s where s.person_id = p.id) as has_push
         from people p left join paging_preferences f on f.person_id = p.id where p.id = any($1) order by p.id",
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

async fn site_role(pool: &PgPool, gateway: &str, role: &str) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("select person_id from site_contacts where gateway_id = $1 and role = $2 order by person_id")
        .bind(gateway)
        .bind(role)
        .fetch_all(pool)
        .await
}

async fn on_call(pool: &PgPool, rotation: Option<i64>, now: DateTime<Utc>) -> sqlx::Result<Option<i64>> {
    let Some(rotation) = rotation else { return Ok(None) };
    let row: Option<(Vec<i64>, i32, DateTime<Utc>)> =
        sqlx::query_as("select members, period_days, starts_at from rotations where id = $1")
            .bind(rotation)
            .fetch_optional(pool)
            .await?;
    let Some((members, period_days, starts_at)) = row else { return Ok(None) };
    let overrides: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "select person_id, starts_at, ends_at from rotation_overrides where rotation_id = $1 and ends_at > $2",
    )
    .bind(rotation)
    .bind(now)
    .fetch_all(pool)
    .await?;
    let overrides: Vec<(i64, i64, i64)> =
        overrides.into_iter().map(|(p, from, to)| (p, from.timestamp_millis(), to.timestamp_millis())).collect();
    Ok(policy::on_call(
        &members,
        i64::from(period_days),
        starts_at.timestamp_millis(),
        &overrides,
        now.timestamp_millis(),
    ))
}

/// A reply code: five characters nobody confuses on a phone (no 0/O, 1/I).
pub(crate) fn reply_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..5).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

/// The message for one person: short, in their language, with the key values, a signed link
/// and the reply code.
fn render(
    paging: &Paging,
    incident: &Due,
    person_id: i64,
    phone: &str,
    language: &str,
    step: usize,
    now: DateTime<Utc>,
) -> outbox::NewMessage {
    let grant = links::Grant {
        subject: incident.alarm_id,
        person_id,
        expires: now.timestamp() + paging.link_ttl.as_secs() as i64,
    };
    let token = links::sign(&paging.link_secret, links::Purpose::Acknowledge, &grant);
    let link = format!("{}/a/{token}", paging.public_url);
    let code = reply_code();
    // The name people know the unit by, else where it is.
    let unit = match (&incident.unit_name, &incident.device_key) {
        (Some(name), _) => name.clone(),
        (None, Some(device)) => format!("{device}@{}", incident.gateway_id),
        (None, None) => incident.gateway_id.clone(),
    };
    let values = providers::shorten(&incident.message, 60);
    let zh = language == "zh" && !incident.title_zh.is_empty();
    let fault = if zh { &incident.title_zh } else { &incident.title };
    let params = json!({
        "kind": providers::Kind::Alarm.name(),
        "alarm": incident.alarm_id,
        "grade": incident.grade.to_string(),
        "unit": unit,
        "fault": fault,
        "value": values,
        "code": code,
        "token": token,
        "link": link,
    });
    let language = if zh { "zh" } else { "en" };
    outbox::NewMessage {
        idempotency_key: format!(
            "alarm-{}-round-{}-step-{step}-person-{person_id}",
            incident.alarm_id, incident.resumed
        ),
        alarm_id: Some(incident.alarm_id),
        ticket_id: None,
        person_id: Some(person_id),
        channel: "sms",
        address: phone.to_owned(),
        language: language.into(),
        body: sms_text(&params, language),
        params,
        reply_code: Some(code),
        attachment: None,
        chat_room_id: None,
        not_before: None,
    }
}

/// An alarm's text message from its parameters: short, with the key values, the signed link
/// and the reply code.
pub(crate) fn sms_text(params: &serde_json::Value, language: &str) -> String {
    let text = |k: &str| params[k].as_str().unwrap_or_default();
    let (grade, unit, fault, values, link, code) =
        (text("grade"), text("unit"), text("fault"), text("value"), text("link"), text("code"));
    if language == "zh" {
        format!("Chillcloud {grade}级 {unit}：{fault}。{values}。确认 {link} 或回复 1 {code}")
    } else {
        format!("Chillcloud G{grade} {unit}: {fault}. {values}. Ack {link} or reply 1 {code}")
    }
}

/// "Send me a test" on `channel` to a person at `address`: keyed by the minute, so a double
/// click sends one.
pub fn test_message(person: &Recipient, channel: Channel, address: String, now: DateTime<Utc>) -> outbox::NewMessage {
    let zh = person.language == "zh";
    let params = json!({
        "kind": providers::Kind::Test.name(),
        "grade": "-",
        "unit": person.name,
        "fault": if zh { "测试消息" } else { "Test message" },
        "value": "-",
        "code": "-",
        "token": "test",
        "link": "",
    });
    let body = match channel {
        Channel::Voice => providers::speech(&params, &person.language),
        _ if zh => "Chillcloud 测试消息：这个渠道能收到报警。".into(),
        _ => "Chillcloud test message: alarms reach you on this channel.".into(),
    };
    outbox::NewMessage {
        idempotency_key: format!("test-{}-{}-{}", person.id, channel.name(), now.timestamp() / 60),
        alarm_id: None,
        ticket_id: None,
        person_id: Some(person.id),
        channel: channel.name(),
        address,
        language: person.language.clone(),
        params,
        body,
        reply_code: None,
        attachment: None,
        chat_room_id: None,
        not_before: None,
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use super::*;
    use crate::alarms::{engine, expr::Expr, rules};

    #[test]
    fn quiet_hours_hold_until_they_end_in_the_persons_time_zone() {
        let at = |h: u32, m: u32| NaiveTime::from_hms_opt(h, m, 0).expect("time");
        let utc = |text: &str| DateTime::parse_from_rfc3339(text).expect("time").with_timezone(&Utc);
        // 22:00 to 07:00 in Shanghai (UTC+8): 23:30 there is 15:30 UTC; it ends 07:00 there, 23:00 UTC.
        assert_eq!(
            quiet_until(at(22, 0), at(7, 0), "Asia/Shanghai", utc("2026-12-03T15:30:00Z")),
            Some(utc("2026-12-03T23:00:00Z"))
        );
        // 06:00 there, the same night's end.
        assert_eq!(
            quiet_until(at(22, 0), at(7, 0), "Asia/Shanghai", utc("2026-12-03T22:00:00Z")),
            Some(utc("2026-12-03T23:00:00Z"))
        );
        // Noon there: not quiet.
        assert_eq!(quiet_until(at(22, 0), at(7, 0), "Asia/Shanghai", utc("2026-12-03T04:00:00Z")), None);
        // Within one day, and a zone with summer time: 13:00 to 14:00 in Berlin in July (UTC+2).
        assert_eq!(
            quiet_until(at(13, 0), at(14, 0), "Europe/Berlin", utc("2026-07-01T11:30:00Z")),
            Some(utc("2026-07-01T12:00:00Z"))
        );
        // An unknown zone is UTC.
        assert_eq!(
            quiet_until(at(1, 0), at(2, 0), "Mars/Olympus", utc("2026-07-01T01:30:00Z")),
            Some(utc("2026-07-01T02:00:00Z"))
        );
    }

    /// An SMS for every shipped rule, in both languages: each template variable fits Aliyun's 35
    /// characters, is cut only between words (with "…"), the unit is named as people know it and
    /// the values carry their units.
    #[test]
    fn field_messages_are_readable() {
        let paging = Paging::load(None, vec![7; 32], "https://chillcloud.example.com".into()).expect("defaults");
        let mut files = vec![rules::site_defaults()];
        files.extend(rules::profiles().map(rules::unit_defaults));
        for file in files {
            for value in &file.rules {
                let rule = rules::parse_rule(value).expect("shipped rules are valid");
                let names: Vec<String> = match &rule.kind {
                    rules::RuleKind::Condition { when, .. } => {
                        Expr::parse(when).expect("valid").names().iter().map(|n| (*n).to_owned()).collect()
                    }
                    rules::RuleKind::Rate { of, .. } => {
                        Expr::parse(of).expect("valid").names().iter().map(|n| (*n).to_owned()).collect()
                    }
                    rules::RuleKind::Stuck { point, .. } | rules::RuleKind::Code { point, .. } => vec![point.clone()],
                    _ => Vec::new(),
                };
                let values: HashMap<Arc<str>, f64> = names.iter().map(|n| (n.as_str().into(), 1182.25)).collect();
                let units: HashMap<Arc<str>, String> =
                    names.iter().map(|n| (n.as_str().into(), "kPa".to_owned())).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let message = engine::describe(&refs, &values, &units);
                for language in ["en", "zh"] {
                    let incident = Due {
                        alarm_id: 1,
                        grade: i16::from(rule.grade),
                        opened_at: Utc::now(),
                        steps_done: 0,
                        gateway_id: "site-gw".into(),
                        device_key: Some("rthd-1".into()),
                        unit_name: Some("Chiller 2, north plant".into()),
                        title: rule.title.clone(),
                        title_zh: rule.title_zh.clone(),
                        message: message.clone(),
                        acknowledged: false,
                        shelved_until: None,
                        resumed: 0,
                        policy: None,
                        rotation_id: None,
                    };
                    let sms = render(&paging, &incident, 1, "+8613800000000", language, 0, Utc::now());
                    for key in ["unit", "fault", "value", "code", "grade"] {
                        let full =
                            sms.params[key].as_str().map(str::to_owned).unwrap_or_else(|| sms.params[key].to_string());
                        let sent = providers::variable(&sms.params, key, 35);
                        assert!(sent.chars().count() <= 35, "{}: {key} {sent:?}", rule.key);
                        if sent != full && !full.is_empty() {
                            let kept = sent
                                .strip_suffix('…')
                                .unwrap_or_else(|| panic!("{}: {key} cut without an ellipsis: {sent:?}", rule.key));
                            let rest = full
                                .strip_prefix(kept)
                                .unwrap_or_else(|| panic!("{}: {key} {sent:?} is not from {full:?}", rule.key));
                            let next = rest.chars().next().unwrap_or(' ');
                            let last = kept.chars().last().unwrap_or(' ');
                            let word = |c: char| c.is_ascii_alphanumeric() || "_.".contains(c);
                            assert!(
                                !(word(last) && word(next)),
                                "{}: {key} cut inside a word: {sent:?} of {full:?}",
                                rule.key
                            );
                        }
                    }
                    assert_eq!(sms.params["unit"], "Chiller 2, north plant", "the unit's display name");
                    if !names.is_empty() {
                        let value = providers::variable(&sms.params, "value", 35);
                        assert!(value.contains("1182.25 kPa"), "{}: a value with its unit: {value:?}", rule.key);
                    }
                }
            }
        }
    }
}
