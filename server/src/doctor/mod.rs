//! The remote doctor: operating reports with findings, drafted from the stored hourly data.
//!
//! A report covers one unit over a period. `draft` reads the unit's hourly rollups
//! (`readings_1h`, kept at ingest in both storage modes) from the longest lookback of the
//! findings to the period's end, turns them into [`Hour`]s, and hands them to the pure
//! [`analysis`]: the figures of the period and of the one before, monthly trends, and the
//! [`Finding`]s of `server/doctor/findings.toml`. Alarms and tickets of the period come from their
//! tables. The draft is stored; an engineer signs it before its owner may see it (row security
//! hides drafts from customers).

pub mod analysis;
pub mod api;
pub mod chart;
pub mod pdf;
pub mod rules;
pub mod schedule;

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

pub use self::{
    analysis::{Assumptions, Finding, Hour, Input, Kpis, MonthTrend},
    rules::DoctorRules,
};

/// The longest period a report covers, days.
pub const MAX_PERIOD_DAYS: i64 = 366;

message_error! {
    /// Why a report cannot be drafted: for people.
    pub struct InvalidReport;
}

/// The unit a report is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct ReportUnit {
    /// Unit id.
    pub id: i64,
    /// The name people know it by.
    pub name: String,
    /// Its site (gateway).
    pub site: String,
    /// Equipment model.
    pub model: String,
    /// The domain pack that named its points.
    pub family: String,
}

/// An alarm of the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct AlarmLine {
    /// Its rule.
    pub rule: String,
    /// Grade 1 to 4.
    pub grade: i16,
    /// Title, in English and Chinese.
    pub title: String,
    /// See `title`.
    pub title_zh: String,
    /// When it was raised.
    pub raised_at: DateTime<Utc>,
    /// When someone acknowledged it.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When it cleared.
    pub cleared_at: Option<DateTime<Utc>>,
}

/// A service ticket of the period with its response against the grade's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct TicketLine {
    /// Ticket id.
    pub id: i64,
    /// Grade 1 to 4.
    pub grade: i16,
    /// Its title.
    pub title: String,
    /// Its status now.
    pub status: String,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
    /// Minutes from opening to the first response, if there was one.
    pub response_minutes: Option<f64>,
    /// Minutes the grade allows for it.
    pub allowed_minutes: f64,
    /// Whether the response came within the clock.
    pub responded_in_time: Option<bool>,
}

/// A drafted report: what the owner reads once an engineer has signed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportContent {
    /// The unit.
    pub unit: ReportUnit,
    /// The period: from (inclusive) ...
    pub period_start: DateTime<Utc>,
    /// ... to (exclusive).
    pub period_end: DateTime<Utc>,
    /// The period's first and last day in the site's time zone (`2026-11-01 – 2026-11-30`).
    #[serde(default)]
    pub period_label: String,
    /// The site's time zone.
    #[serde(default)]
    pub time_zone: String,
    /// In plain words: hours run, setpoint compliance, faults, findings and their worth.
    pub headline: String,
    /// See `headline`.
    pub headline_zh: String,
    /// The period's figures.
    pub kpis: Kpis,
    /// The same for the period of equal length before it.
    pub previous: Kpis,
    /// Monthly means of the approaches, lift and ΔT, from 62 days before the period to its end.
    pub monthly: Vec<MonthTrend>,
    /// What the doctor found.
    pub findings: Vec<Finding>,
    /// Alarms raised in the period (the first 200).
    pub alarms: Vec<AlarmLine>,
    /// How many alarms were raised in the period.
    #[serde(default)]
    pub alarm_count: i64,
    /// Tickets opened in the period.
    pub tickets: Vec<TicketLine>,
    /// Ratings and tariff the figures used.
    pub assumptions: Assumptions,
    /// The unit beside others of its model in the fleet, when there are enough of them.
    #[serde(default)]
    pub fleet: Option<FleetComparison>,
}

/// Medians of the same period's reports of other customers' units of the same model (family and
/// model). Each median is over at least [`MIN_PEERS`] units that have the figure, none of them the
/// unit's own organisation's (whose figures it knows, and could otherwise plant to single one
/// out): a median is then one of several other customers' units' value, without saying whose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct FleetComparison {
    /// How many units the medians are over.
    pub units: i64,
    /// Median condenser approach over steady hours, K.
    pub cond_approach_k: Option<f64>,
    /// Median evaporator approach over steady hours, K.
    pub evap_approach_k: Option<f64>,
    /// Median lift over steady hours, K.
    pub lift_k: Option<f64>,
    /// Median share of steady hours within 0.5 K of setpoint.
    pub setpoint_compliance: Option<f64>,
    /// Median electricity per running hour, kWh.
    pub kwh_per_run_hour: Option<f64>,
}

/// Fewest other units a fleet comparison is made over.
pub const MIN_PEERS: i64 = 3;

/// The fleet comparison for `unit` over `[from, to)`, from the other units' reports of exactly
/// that period (scheduled months and weeks have them; an odd range usually has none).
pub async fn fleet_comparison(
    db: &mut PgConnection,
    unit: &ReportUnit,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Option<FleetComparison>> {
    let comparison: FleetComparison = sqlx::query_as(
        "with own as (
             select g.organisation_id from units u join gateways g on g.id = u.gateway_id where u.id = $3
         ), peers as (
             select distinct on (r.unit_id)
                 (r.content -> 'kpis' ->> 'cond_approach_k')::float8 as cond,
                 (r.content -> 'kpis' ->> 'evap_approach_k')::float8 as evap,
                 (r.content -> 'kpis' ->> 'lift_k')::float8 as lift,
                 (r.content -> 'kpis' ->> 'setpoint_compliance')::float8 as compliance,
                 (r.content -> 'kpis' ->> 'energy_kwh')::float8
                     / nullif((r.content -> 'kpis' ->> 'run_hours')::float8, 0) as per_hour
             from reports r join units u on u.id = r.unit_id join gateways g on g.id = u.gateway_id, own
             where r.period_start = $1 and r.period_end = $2 and r.unit_id <> $3 and u.family = $4 and u.model = $5
               and (own.organisation_id is null or g.organisation_id is distinct from own.organisation_id)
             order by r.unit_id, r.id desc
         )
         select count(*) as units,
             case when count(cond) >= $6 then percentile_cont(0.5) within group (order by cond) end as cond_approach_k,
             case when count(evap) >= $6 then percentile_cont(0.5) within group (order by evap) end as evap_approach_k,
             case when count(lift) >= $6 then percentile_cont(0.5) within group (order by lift) end as lift_k,
             case when count(compliance) >= $6
                 then percentile_cont(0.5) within group (order by compliance) end as setpoint_compliance,
             case when count(per_hour) >= $6
                 then percentile_cont(0.5) within group (order by per_hour) end as kwh_per_run_hour
         from peers",
    )
    .bind(from)
    .bind(to)
    .bind(unit.id)
    .bind(&unit.family)
    .bind(&unit.model)
    .bind(MIN_PEERS)
    .fetch_one(db)
    .await?;
    Ok((comparison.units >= MIN_PEERS).then_some(comparison))
}

/// Reads the hours of `unit_id`'s inputs from `from` to `to` (whole UTC hours), one per hour,
/// empty where nothing was stored.
pub async fn load_hours(
    db: &mut PgConnection,
    unit_id: i64,
    names: &std::collections::BTreeMap<Input, String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<Hour>> {
    let by_name: HashMap<&str, Vec<Input>> = names.iter().fold(HashMap::new(), |mut map, (input, name)| {
        map.entry(name.as_str()).or_default().push(*input);
        map
    });
    let wanted: Vec<&str> = by_name.keys().copied().collect();
    let rows: Vec<(String, DateTime<Utc>, f64, Option<f64>)> = sqlx::query_as(
        "select p.name, h.bucket, h.total / h.n, h.last_value
         from points p join readings_1h h on h.point_id = p.id
         where p.unit_id = $1 and p.name = any($2) and h.bucket >= $3 and h.bucket < $4 and h.n > 0",
    )
    .bind(unit_id)
    .bind(&wanted)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let count = (to - from).num_hours().max(0) as usize;
    let mut hours: Vec<Hour> = (0..count).map(|i| Hour::empty(from + Duration::hours(i as i64))).collect();
    for (name, bucket, mean, last) in rows {
        let index = (bucket - from).num_hours() as usize;
        let (Some(hour), Some(inputs)) = (hours.get_mut(index), by_name.get(name.as_str())) else { continue };
        for input in inputs {
            hour.mean[*input as usize] = Some(mean);
            hour.last[*input as usize] = last;
        }
    }
    hours.iter_mut().for_each(Hour::complete);
    Ok(hours)
}

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(t)
}

/// Checks a period: whole hours, forward, at most [`MAX_PERIOD_DAYS`].
pub fn check_period(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), InvalidReport> {
    let (from, to) = (floor_hour(from), floor_hour(to));
    if to <= from {
        return Err(InvalidReport::from("`to` must be at least an hour after `from`"));
    }
    if to - from > Duration::days(MAX_PERIOD_DAYS) {
        return Err(InvalidReport::from(format!("a report covers at most {MAX_PERIOD_DAYS} days")));
    }
    if from.timestamp() < 946_684_800 || to > Utc::now() + Duration::days(1) {
        return Err(InvalidReport::from("the period must lie between 2000 and tomorrow"));
    }
    Ok((from, to))
}

/// Drafts the report of `unit_id` for `[from, to)` on `db` (whose row security decides whether
/// the unit is seen: `None` when it is not).
pub async fn draft(
    db: &mut PgConnection,
    rules: &DoctorRules,
    unit_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Option<ReportContent>, sqlx::Error> {
    let row: Option<UnitRow> = sqlx::query_as(
        "select u.id, coalesce(u.display_name, nullif(u.gateway_display_name, ''), u.device_key) as name,
                u.gateway_id as site, u.model, u.family, u.rated_cooling_kw, u.rated_power_kw, g.tariff_per_kwh as site_tariff,
                (select o.tariff_per_kwh from organisations o where o.kind = 'service' and o.tariff_per_kwh is not null
                 order by o.id limit 1) as service_tariff,
                to_char($2 at time zone g.time_zone, 'YYYY-MM-DD') || ' – '
                    || to_char(($3 - interval '1 second') at time zone g.time_zone, 'YYYY-MM-DD') as period_label,
                g.time_zone
         from units u join gateways g on g.id = u.gateway_id where u.id = $1",
    )
    .bind(unit_id)
    .bind(from)
    .bind(to)
    .fetch_optional(&mut *db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let unit = row.unit();
    let (tariff_per_kwh, tariff_source) = match (row.site_tariff, row.service_tariff) {
        (Some(t), _) => (t, "site"),
        (None, Some(t)) => (t, "service"),
        (None, None) => (rules.energy.default_tariff_per_kwh, "default"),
    };
    let assumptions = Assumptions {
        rated_cooling_kw: row.rated_cooling_kw,
        rated_power_kw: row.rated_power_kw,
        tariff_per_kwh,
        currency: rules.energy.currency.clone(),
        tariff_source: tariff_source.into(),
    };
    let length = to - from;
    let history_from =
        (from - Duration::days(i64::from(rules.lookback_days()))).min(from - length) - Duration::hours(1);
    let names = rules.point_names(&unit.family);
    let hours = load_hours(db, unit_id, &names, history_from, to).await?;
    let period_from = (from - history_from).num_hours() as usize;
    let previous_from = (from - length - history_from).num_hours() as usize;
    let starts_before = |end: usize| hours[..end].iter().rev().find_map(|h| h.last[Input::Starts as usize]);
    let case = analysis::Case {
        hours: &hours,
        period_from,
        before_starts: starts_before(period_from),
        assumptions: &assumptions,
    };
    let kpis = analysis::kpis(&hours[period_from..], case.before_starts, &assumptions);
    let previous = analysis::kpis(&hours[previous_from..period_from], starts_before(previous_from), &assumptions);
    let findings = analysis::findings(rules, &case);
    let alarms: Vec<AlarmLine> = sqlx::query_as(
        "select rule, grade, title, title_zh, raised_at, acknowledged_at, cleared_at from alarms
         where unit_id = $1 and raised_at >= $2 and raised_at < $3 order by raised_at limit 200",
    )
    .bind(unit_id)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *db)
    .await?;
    let alarm_count: i64 =
        sqlx::query_scalar("select count(*) from alarms where unit_id = $1 and raised_at >= $2 and raised_at < $3")
            .bind(unit_id)
            .bind(from)
            .bind(to)
            .fetch_one(&mut *db)
            .await?;
    let tickets: Vec<TicketLine> = sqlx::query_as(
        "select id, grade, title, status, opened_at,
                extract(epoch from responded_at - opened_at)::float8 / 60 as response_minutes,
                extract(epoch from respond_by - opened_at)::float8 / 60 as allowed_minutes,
                responded_at <= respond_by as responded_in_time
         from tickets where unit_id = $1 and opened_at >= $2 and opened_at < $3 order by opened_at limit 200",
    )
    .bind(unit_id)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *db)
    .await?;
    let mut content = ReportContent {
        unit,
        period_start: from,
        period_end: to,
        period_label: row.period_label.clone(),
        time_zone: row.time_zone.clone(),
        headline: String::new(),
        headline_zh: String::new(),
        kpis,
        previous,
        monthly: analysis::monthly_trend(&hours[period_from.saturating_sub(24 * 62)..]),
        findings,
        alarms,
        alarm_count,
        tickets,
        assumptions,
        fleet: None,
    };
    content.fleet = fleet_comparison(db, &content.unit, from, to).await?;
    content.write_headline();
    Ok(Some(content))
}

#[derive(sqlx::FromRow)]
struct UnitRow {
    id: i64,
    name: String,
    site: String,
    model: String,
    family: String,
    rated_cooling_kw: Option<f64>,
    rated_power_kw: Option<f64>,
    period_label: String,
    time_zone: String,
    site_tariff: Option<f64>,
    service_tariff: Option<f64>,
}

impl UnitRow {
    fn unit(&self) -> ReportUnit {
        ReportUnit {
            id: self.id,
            name: self.name.clone(),
            site: self.site.clone(),
            model: self.model.clone(),
            family: self.family.clone(),
        }
    }
}

impl ReportContent {
    /// Writes the headline in plain words, English and Chinese, from the figures and findings
    /// (again after an engineer dropped a finding).
    pub fn write_headline(&mut self) {
        let (unit, kpis, alarms, findings, assumptions) =
            (&self.unit, &self.kpis, self.alarm_count, &self.findings, &self.assumptions);
        (self.headline, self.headline_zh) = headline(unit, kpis, alarms, findings, assumptions);
    }
}

fn headline(
    unit: &ReportUnit,
    kpis: &Kpis,
    alarms: i64,
    findings: &[Finding],
    assumptions: &Assumptions,
) -> (String, String) {
    let compliance = kpis.setpoint_compliance.map_or("-".to_owned(), |c| format!("{:.0}", c * 100.0));
    let starts = kpis.starts.map_or("-".to_owned(), |s| format!("{s:.0}"));
    let worth: f64 = findings.iter().filter_map(|f| f.yearly_cost).sum();
    let currency = &assumptions.currency;
    let findings_en = match findings.len() {
        0 => "no findings".to_owned(),
        1 => format!("1 finding worth about {worth:.0} {currency} a year"),
        n => format!("{n} findings worth about {worth:.0} {currency} a year"),
    };
    let findings_zh = if findings.is_empty() {
        "未发现问题".to_owned()
    } else {
        format!("发现 {} 项问题，估计每年价值约 {worth:.0} {currency}", findings.len())
    };
    (
        format!(
            "{} ran {:.0} h of {:.0} h ({starts} starts); the chilled water was within 0.5 K of setpoint in {compliance} % of steady running hours; {alarms} alarms; {findings_en}.",
            unit.name, kpis.run_hours, kpis.hours
        ),
        format!(
            "{}运行 {:.0} 小时（共 {:.0} 小时，启动 {starts} 次）；稳定运行时出水温度在设定值 ±0.5 K 以内的时间占 {compliance}%；报警 {alarms} 次；{findings_zh}。",
            unit.name, kpis.run_hours, kpis.hours
        ),
    )
}

/// Stores a draft; returns its id.
pub async fn store_draft(db: &mut PgConnection, content: &ReportContent, drafted_by: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into reports (unit_id, period_start, period_end, content, drafted_by) values ($1, $2, $3, $4, $5)
         returning id",
    )
    .bind(content.unit.id)
    .bind(content.period_start)
    .bind(content.period_end)
    .bind(sqlx::types::Json(content))
    .bind(drafted_by)
    .fetch_one(db)
    .await
}

/// The languages of the site's owner contacts who have an e-mail address: the PDFs to make.
pub async fn owner_email_languages(db: &mut PgConnection, site: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select distinct p.language from site_contacts c join people p on p.id = c.person_id
         where c.gateway_id = $1 and c.role = 'owner' and p.email is not null",
    )
    .bind(site)
    .fetch_all(db)
    .await
}

/// Tells the site's owner contacts that report `report_id` of `content` is signed: an SMS to
/// each phone and an e-mail to each address, in the person's language, with the link to the
/// report's page (they sign in to read it); the e-mail carries the PDF in their language from
/// `pdfs` (by language) when there is one. In the caller's transaction; each message at most
/// once. Returns how many were enqueued.
pub async fn deliver(
    db: &mut PgConnection,
    public_url: &str,
    report_id: i64,
    content: &ReportContent,
    pdfs: &HashMap<String, Vec<u8>>,
) -> sqlx::Result<usize> {
    let owners: Vec<(i64, Option<String>, Option<String>, String)> = sqlx::query_as(
        "select p.id, p.phone, p.email, p.language from site_contacts c join people p on p.id = c.person_id
         where c.gateway_id = $1 and c.role = 'owner'",
    )
    .bind(&content.unit.site)
    .fetch_all(&mut *db)
    .await?;
    let link = format!("{public_url}/#/report/{report_id}");
    let period = content.period_label.replace(" – ", "~");
    let mut enqueued = 0;
    for (person, phone, email, language) in owners {
        let unit = &content.unit.name;
        let body = if language == "zh" {
            format!("Chillcloud：{unit} {period} 运行报告已由工程师签发，请查看 {link}")
        } else {
            format!("Chillcloud: the operating report of {unit} for {period} is signed by your engineer: {link}")
        };
        let channels = [("sms", phone), ("email", email)];
        for (channel, address) in channels.into_iter().filter_map(|(c, a)| Some((c, a?))) {
            let message = crate::paging::outbox::NewMessage {
                idempotency_key: format!("report-{report_id}-person-{person}-{channel}"),
                alarm_id: None,
                ticket_id: None,
                person_id: Some(person),
                channel,
                address,
                language: language.clone(),
                params: serde_json::json!({
                    "kind": crate::paging::providers::Kind::Report.name(),
                    "unit": crate::paging::providers::shorten(unit, 20),
                    "period": period,
                    "report": report_id.to_string(),
                    "link": link,
                }),
                body: body.clone(),
                reply_code: None,
                chat_room_id: None,
                not_before: None,
                attachment: (channel == "email").then(|| pdfs.get(&language)).flatten().map(|pdf| {
                    crate::paging::outbox::Attachment {
                        filename: format!("report-{report_id}.pdf"),
                        content_type: "application/pdf".into(),
                        data: pdf.clone(),
                    }
                }),
            };
            if crate::paging::outbox::enqueue(&mut *db, &message).await? {
                enqueued += 1;
            }
        }
    }
    Ok(enqueued)
}

/// A site's period at a glance: its units' reports of exactly that period (the newest each unit
/// has; customers see signed ones only), summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteSummary {
    /// The site (gateway).
    pub site: String,
    /// The period: from (inclusive) ...
    pub period_start: DateTime<Utc>,
    /// ... to (exclusive).
    pub period_end: DateTime<Utc>,
    /// In plain words: units, hours run, energy, findings and their worth.
    pub headline: String,
    /// See `headline`.
    pub headline_zh: String,
    /// Hours run, summed over the units.
    pub run_hours: f64,
    /// Electricity, summed over the units that have a figure, kWh.
    pub energy_kwh: Option<f64>,
    /// Whether any unit's energy is estimated from %RLA.
    pub energy_estimated: bool,
    /// Alarms raised in the period, over the units.
    pub alarms: i64,
    /// Findings, over the units.
    pub findings: usize,
    /// What the findings are worth a year, summed, at the tariffs.
    pub yearly_cost: f64,
    /// Its currency.
    pub currency: String,
    /// Each unit's line, by unit id.
    pub units: Vec<SiteUnit>,
}

#[derive(sqlx::FromRow)]
struct SiteRow {
    id: i64,
    status: String,
    unit: sqlx::types::Json<ReportUnit>,
    headline: String,
    headline_zh: String,
    run_hours: f64,
    energy_kwh: Option<f64>,
    energy_estimated: bool,
    alarm_count: i64,
    currency: String,
    findings: sqlx::types::Json<Vec<SiteFinding>>,
}

/// A unit's line in a [`SiteSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteUnit {
    /// The report.
    pub report_id: i64,
    /// `draft` or `signed`.
    pub status: String,
    /// The unit.
    pub unit: ReportUnit,
    /// Its headline, in English and Chinese.
    pub headline: String,
    /// See `headline`.
    pub headline_zh: String,
    /// Its findings' keys and titles, with their yearly cost.
    pub findings: Vec<SiteFinding>,
}

/// A finding as a site's summary lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteFinding {
    /// The rule's key.
    pub key: String,
    /// Title, in English and Chinese.
    pub title: String,
    /// See `title`.
    pub title_zh: String,
    /// What it is worth a year, if estimated.
    pub yearly_cost: Option<f64>,
}

/// The summary of `site` over `[from, to)` as `db` sees it; `None` when the site is not seen.
pub async fn site_summary(
    db: &mut PgConnection,
    site: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Option<SiteSummary>> {
    let seen: bool = sqlx::query_scalar("select exists (select 1 from gateways where id = $1)")
        .bind(site)
        .fetch_one(&mut *db)
        .await?;
    if !seen {
        return Ok(None);
    }
    // Only what the summary shows, not each report's evidence.
    let rows: Vec<SiteRow> = sqlx::query_as(
        "select distinct on (r.unit_id) r.id, r.status, r.content -> 'unit' as unit,
             r.content ->> 'headline' as headline, r.content ->> 'headline_zh' as headline_zh,
             (r.content -> 'kpis' ->> 'run_hours')::float8 as run_hours,
             (r.content -> 'kpis' ->> 'energy_kwh')::float8 as energy_kwh,
             coalesce((r.content -> 'kpis' ->> 'energy_estimated')::boolean, false) as energy_estimated,
             coalesce((r.content ->> 'alarm_count')::bigint, 0) as alarm_count,
             r.content -> 'assumptions' ->> 'currency' as currency,
             coalesce((select jsonb_agg(jsonb_build_object('key', f ->> 'key', 'title', f ->> 'title',
                                                           'title_zh', f ->> 'title_zh', 'yearly_cost', f -> 'yearly_cost'))
                       from jsonb_array_elements(r.content -> 'findings') f), '[]') as findings
         from reports r join units u on u.id = r.unit_id
         where u.gateway_id = $1 and r.period_start = $2 and r.period_end = $3
         order by r.unit_id, r.id desc",
    )
    .bind(site)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *db)
    .await?;
    let energies: Vec<f64> = rows.iter().filter_map(|r| r.energy_kwh).collect();
    let currency = rows.first().map_or_else(|| DoctorRules::shipped().energy.currency.clone(), |r| r.currency.clone());
    let alarms: i64 = rows.iter().map(|r| r.alarm_count).sum();
    let run_hours: f64 = rows.iter().map(|r| r.run_hours).sum();
    let energy_estimated = rows.iter().any(|r| r.energy_estimated);
    let units: Vec<SiteUnit> = rows
        .into_iter()
        .map(|row| SiteUnit {
            report_id: row.id,
            status: row.status,
            unit: row.unit.0,
            headline: row.headline,
            headline_zh: row.headline_zh,
            findings: row.findings.0,
        })
        .collect();
    let findings: usize = units.iter().map(|u| u.findings.len()).sum();
    let yearly_cost: f64 = units.iter().flat_map(|u| &u.findings).filter_map(|f| f.yearly_cost).sum();
    let energy_kwh = (!energies.is_empty()).then(|| energies.iter().sum::<f64>());
    let energy_en = energy_kwh.map_or(String::new(), |e| format!(", {e:.0} kWh"));
    let energy_zh = energy_kwh.map_or(String::new(), |e| format!("，耗电 {e:.0} kWh"));
    Ok(Some(SiteSummary {
        site: site.to_owned(),
        period_start: from,
        period_end: to,
        headline: format!(
            "{site}: {} units ran {run_hours:.0} h{energy_en}; {alarms} alarms; {findings} findings worth about {yearly_cost:.0} {currency} a year.",
            units.len()
        ),
        headline_zh: format!(
            "{site}：{} 台机组共运行 {run_hours:.0} 小时{energy_zh}；报警 {alarms} 次；发现 {findings} 项问题，估计每年价值约 {yearly_cost:.0} {currency}。",
            units.len()
        ),
        run_hours,
        energy_kwh,
        energy_estimated,
        alarms,
        findings,
        yearly_cost,
        currency,
        units,
    }))
}
