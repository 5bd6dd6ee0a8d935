-- Accounts and tenant isolation.
--
-- The service organisation (the maker or installer: admin, manager, engineer, sales) services
-- every site; a customer organisation (owner, duty) owns some. A site (gateway) belongs to at
-- most one customer. Cookie sessions, API tokens and invitations are stored as SHA-256 of their
-- secret; passwords as argon2id PHC strings.
--
-- Isolation lives in the database: API requests run as the role chillcloud_api, under row
-- security, with `chillcloud.scope` set for the transaction to 'all' (service staff) or the
-- customer's organisation id. A connection of that role starts at 'none' and sees nothing.
-- The server's own tasks (ingest, rules, paging) run as the owner and are not affected.

create table organisations (
    id bigint generated always as identity primary key,
    name text not null unique,
    kind text not null check (kind in ('service', 'customer')),
    created_at timestamptz not null default now()
);

create table users (
    id bigint generated always as identity primary key,
    organisation_id bigint not null references organisations (id),
    login text not null unique,
    name text not null,
    role text not null check (role in ('admin', 'manager', 'engineer', 'sales', 'owner', 'duty')),
    language text not null default 'en' check (language in ('en', 'zh')),
    -- Null until the invitation is taken up.
    password_hash text,
    created_at timestamptz not null default now(),
    disabled_at timestamptz
);

create table sessions (
    token_hash bytea primary key,
    user_id bigint not null references users (id),
    csrf_token text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null
);
create index sessions_by_user on sessions (user_id);

create table api_tokens (
    id bigint generated always as identity primary key,
    user_id bigint not null references users (id),
    name text not null,
    token_hash bytea not null unique,
    created_at timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);

create table invitations (
    token_hash bytea primary key,
    user_id bigint not null references users (id),
    expires_at timestamptz not null,
    used_at timestamptz
);

-- Sign-ins (also failed ones) and every change made through the API.
create table audit_log (
    id bigint generated always as identity primary key,
    at timestamptz not null default now(),
    user_id bigint references users (id),
    actor text not null,
    action text not null,
    target text,
    outcome text not null,
    address text
);
create index audit_log_by_time on audit_log (at);

alter table gateways add column organisation_id bigint references organisations (id);
create index gateways_by_organisation on gateways (organisation_id);

-- The role API requests run as. Creating it needs CREATEROLE; on a managed database where the
-- server's user lacks it, an administrator creates it beforehand and grants it to that user.
do $$
begin
    if not exists (select from pg_roles where rolname = 'chillcloud_api') then
        create role chillcloud_api nologin;
    end if;
    begin
        execute format('grant chillcloud_api to %I', current_user);
    exception when insufficient_privilege or invalid_grant_operation then
        null;
    end;
end
$$;
-- Grants are explicit, table by table, here and in every later migration that adds a table: a
-- table nobody granted stays closed to the API. Readings and rollups are read only (they have no
-- row policy: the API reaches them through point ids its scoped queries returned), and the audit
-- log is written by the server itself.
grant usage on schema public to chillcloud_api;
grant select, insert, update, delete on gateways, units, points, latest_readings, dropped_intervals, alarm_rules,
    alarms, alarm_events, alarm_captures, maintenance_windows, people, site_contacts, rotations, rotation_overrides,
    site_paging, incidents, outbox, outbox_recipients, paging_cursor, tickets, ticket_events, organisations, users,
    sessions, api_tokens, invitations, gateway_sessions, pending_data, dead_letters to chillcloud_api;
grant select on readings, readings_1h, audit_log to chillcloud_api;
grant usage, select on all sequences in schema public to chillcloud_api;

-- Whether the current request may see a site of this organisation.
create function chillcloud_sees(organisation bigint) returns boolean
language sql stable as $$
    select case current_setting('chillcloud.scope', true)
        when 'all' then true
        else organisation is not null and organisation::text = current_setting('chillcloud.scope', true)
    end
$$;

-- Whether the current request is the service organisation's.
create function chillcloud_service() returns boolean
language sql stable as $$
    select current_setting('chillcloud.scope', true) = 'all'
$$;

-- Sites and everything under them: visible with their site.
alter table gateways enable row level security;
create policy tenant on gateways to chillcloud_api using (chillcloud_sees(organisation_id));
alter table units enable row level security;
create policy tenant on units to chillcloud_api
    using (exists (select 1 from gateways g where g.id = units.gateway_id));
alter table points enable row level security;
create policy tenant on points to chillcloud_api using (exists (select 1 from units u where u.id = points.unit_id));
alter table latest_readings enable row level security;
create policy tenant on latest_readings to chillcloud_api
    using (exists (select 1 from points p where p.id = latest_readings.point_id));
alter table dropped_intervals enable row level security;
create policy tenant on dropped_intervals to chillcloud_api
    using (exists (select 1 from gateways g where g.id = dropped_intervals.gateway_id));
alter table alarms enable row level security;
create policy tenant on alarms to chillcloud_api using (exists (select 1 from gateways g where g.id = alarms.gateway_id));
alter table alarm_events enable row level security;
create policy tenant on alarm_events to chillcloud_api
    using (exists (select 1 from alarms a where a.id = alarm_events.alarm_id));
alter table alarm_captures enable row level security;
create policy tenant on alarm_captures to chillcloud_api
    using (exists (select 1 from alarms a where a.id = alarm_captures.alarm_id));
alter table tickets enable row level security;
create policy tenant on tickets to chillcloud_api using (exists (select 1 from gateways g where g.id = tickets.gateway_id));
alter table ticket_events enable row level security;
create policy tenant on ticket_events to chillcloud_api
    using (exists (select 1 from tickets t where t.id = ticket_events.ticket_id));

-- The service organisation's own business: rules, maintenance, paging, people, accounts.
do $$
declare
    name text;
begin
    foreach name in array array['alarm_rules', 'maintenance_windows', 'people', 'site_contacts', 'rotations',
        'rotation_overrides', 'site_paging', 'incidents', 'outbox', 'outbox_recipients', 'paging_cursor',
        'organisations', 'users', 'sessions', 'api_tokens', 'invitations', 'audit_log', 'gateway_sessions',
        'pending_data', 'dead_letters']
    loop
        execute format('alter table %I enable row level security', name);
        execute format('create policy service on %I to chillcloud_api using (chillcloud_service())', name);
    end loop;
end
$$;
