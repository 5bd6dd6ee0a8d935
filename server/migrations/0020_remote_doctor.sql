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
-- Whose the report is: the organisation that owned the site when it was drafted (a report of an
-- earlier owner's time is not the next owner's to read), like alarms and tickets (0014).
alter table reports add column organisation_id bigint references organisations (id);
create trigger owner before insert on reports for each row execute function chillcloud_owner_of_unit();
-- A customer reads its own units' signed reports; only the service organisation writes them.
alter table reports enable row level security;
create policy tenant on reports for select to chillcloud_api
    using (chillcloud_sees(organisation_id) and exists (select 1 from units u where u.id = reports.unit_id)
           and (status = 'signed' or chillcloud_service()));
create policy service_writes on reports for all to chillcloud_api
    using (chillcloud_service()) with check (chillcloud_service());
grant select, insert, update, delete on reports to chillcloud_api;
grant usage, select on sequence reports_id_seq to chillcloud_api;

-- A site moving to another customer: reports drafted while it had no owner go with it, as
-- commands do; reports of an earlier owner's time stay theirs. (0014's function, with reports.)
create or replace function chillcloud_site_moved() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
    if new.organisation_id is not distinct from old.organisation_id then
        return new;
    end if;
    -- Who acknowledged or shelved an open alarm under the previous owner stays in the audit log,
    -- not in what the new owner reads.
    if old.organisation_id is not null then
        update alarm_events e set actor = 'previous owner' from alarms a
            where a.id = e.alarm_id and a.gateway_id = new.id and a.closed_at is null and e.actor is not null;
        update alarms set acknowledged_by = 'previous owner'
            where gateway_id = new.id and closed_at is null and acknowledged_by is not null;
    end if;
    update alarms set organisation_id = new.organisation_id
        where gateway_id = new.id and (closed_at is null or organisation_id is null and old.organisation_id is null);
    update tickets set organisation_id = new.organisation_id
        where gateway_id = new.id and (status <> 'closed' or organisation_id is null and old.organisation_id is null);
    update commands set organisation_id = new.organisation_id
        where organisation_id is null and old.organisation_id is null
          and unit_id in (select id from units where gateway_id = new.id);
    update reports set organisation_id = new.organisation_id
        where organisation_id is null and old.organisation_id is null
          and unit_id in (select id from units where gateway_id = new.id);
    update share_links set revoked_at = now()
        where revoked_at is null and unit_id in (select id from units where gateway_id = new.id);
    return new;
end
$$;
