-- Paging: people and who to reach for each site, on-call rotations, one incident per paged
-- alarm with its escalation state, and the durable outbox messages go through.

create table people (
    id bigint generated always as identity primary key,
    name text not null,
    -- E.164, for example +8613800138000.
    phone text,
    email text,
    language text not null default 'en' check (language in ('en', 'zh')),
    created_at timestamptz not null default now()
);

-- Who is reached for a site's alarms: its owner's staff, its service team, the service managers.
create table site_contacts (
    gateway_id text not null references gateways (id),
    person_id bigint not null references people (id),
    role text not null check (role in ('owner', 'service', 'manager')),
    primary key (gateway_id, person_id, role)
);

-- Members take turns of `period_days` days, the first turn starting at `starts_at`; an override
-- puts someone else on call for a while.
create table rotations (
    id bigint generated always as identity primary key,
    name text not null,
    period_days integer not null check (period_days in (1, 7)),
    starts_at timestamptz not null,
    members bigint[] not null check (cardinality(members) > 0)
);

create table rotation_overrides (
    id bigint generated always as identity primary key,
    rotation_id bigint not null references rotations (id),
    person_id bigint not null references people (id),
    starts_at timestamptz not null,
    ends_at timestamptz not null check (ends_at > starts_at)
);

-- A site's on-call rotation and its escalation policy (JSON; null: the defaults by grade).
create table site_paging (
    gateway_id text primary key references gateways (id),
    rotation_id bigint references rotations (id),
    policy jsonb
);

-- One per paged alarm: where its escalation stands.
create table incidents (
    alarm_id bigint primary key references alarms (id),
    grade smallint not null,
    opened_at timestamptz not null default now(),
    -- Escalation steps done (see paging::policy) and when the next one is due.
    steps_done integer not null default 0,
    next_at timestamptz,
    -- Why paging stopped: acknowledged, cleared or closed.
    stopped_at timestamptz,
    stopped_because text
);
create index incidents_due on incidents (next_at) where stopped_at is null;

-- Every message to a person, written before it is sent. The idempotency key makes enqueueing
-- safe to repeat and is handed to providers that honour one, so a retry never sends twice.
create table outbox (
    id bigint generated always as identity primary key,
    idempotency_key text not null unique,
    alarm_id bigint references alarms (id),
    person_id bigint references people (id),
    channel text not null check (channel in ('sms', 'webhook', 'console')),
    address text not null,
    language text not null,
    -- Template parameters (grade, unit, fault, values, link, code) and the rendered text.
    params jsonb not null,
    body text not null,
    -- A short code the recipient quotes in a reply, so the reply finds its alarm.
    reply_code text,
    status text not null default 'pending' check (status in ('pending', 'sending', 'sent', 'failed', 'merged')),
    -- For 'merged': the digest message that carried it.
    merged_into bigint references outbox (id),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    provider text,
    provider_reference text,
    last_error text,
    created_at timestamptz not null default now(),
    sent_at timestamptz
);
create index outbox_due on outbox (next_attempt_at) where status in ('pending', 'sending');
create index outbox_by_person on outbox (person_id, sent_at) where status = 'sent';
create unique index outbox_reply_code on outbox (reply_code) where reply_code is not null;

-- How far paging has read the alarm event stream.
create table paging_cursor (
    only_row boolean primary key default true check (only_row),
    last_event_id bigint not null
);
insert into paging_cursor (last_event_id) values (0);
