-- The remote doctor: what it needs to know of a unit and a site, and the reports it drafts.

-- A unit's size, for energy and cooling estimated from %RLA where nothing is metered.
alter table units add column rated_cooling_kw double precision check (rated_cooling_kw > 0 and rated_cooling_kw < 1e6);
alter table units add column rated_power_kw double precision check (rated_power_kw > 0 and rated_power_kw < 1e6);
-- Price of a kWh: the site's own, else the service organisation's default.
alter table gateways add column tariff_per_kwh double precision check (tariff_per_kwh >= 0 and tariff_per_kwh < 1000);
alter table organisations add column tariff_per_kwh double precision check (tariff_per_kwh >= 0 and tariff_per_kwh < 1000);
-- When a site's reports are drafted on their own: the periods (calendar weeks from Monday,
-- calendar months) in the site's time zone (an IANA name PostgreSQL knows).
alter table gateways add column time_zone text not null default 'UTC';
alter table gateways add column report_periods text[] not null default '{month}'
    check (report_periods <@ array['week', 'month']);

create table reports (
    id bigint generated always as identity primary key,
    unit_id bigint not null references units (id),
    period_start timestamptz not null,
    period_end timestamptz not null check (period_end > period_start),
    -- Drafted by the doctor; an engineer signs it before the owner may see it.
    status text not null default 'draft' check (status in ('draft', 'signed')),
    -- The report: figures, findings with their evidence, alarms and tickets (doctor::Report).
    content jsonb not null,
    drafted_by text not null,
    -- Drafted by the schedule (once per unit and period) rather than on demand.
    scheduled boolean not null default false,
    created_at timestamptz not null default now(),
    -- The engineer who signed it: their user and their name as the owner reads it.
    signed_by bigint references users (id),
    signer text,
    signed_at timestamptz,
    note text not null default ''
);
create index reports_by_unit on reports (unit_id, period_end desc);
create unique index reports_scheduled_once on reports (unit_id, period_start, period_end) where scheduled;
create index reports_drafts on reports (created_at) where status = 'draft';
-- Peers' reports of the same period, for the fleet comparison.
create index reports_by_period on reports (period_start, period_end);
-- A file an e-mail from the outbox carries (a report's PDF).
create table outbox_attachments (
    outbox_id bigint primary key references outbox (id) on delete cascade,
    filename text not null,
    content_type text not null,
    data bytea not null check (octet_length(data) <= 8388608)
);
-- The service's, like the outbox (a report's owner signs nothing, so never writes one).
alter table outbox_attachments enable row level security;
create policy service on outbox_attachments to chillcloud_api using (chillcloud_service());
grant select, insert on outbox_attachments to chillcloud_api;

-- An owner's question about a report is a service ticket (clocks, assignment, breaches).
alter table tickets add column report_id bigint references reports (id);
create index tickets_by_report on tickets (report_id) where report_id is not null;
-- A customer sees its own units' reports once signed; the service organisation sees drafts too.
alter table reports enable row level security;
create policy tenant on reports to chillcloud_api
    using (exists (select 1 from units u where u.id = reports.unit_id) and (status = 'signed' or chillcloud_service()));
grant select, insert, update, delete on reports to chillcloud_api;
grant usage, select on sequence reports_id_seq to chillcloud_api;
