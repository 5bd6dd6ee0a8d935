-- Fault detection: derived points, rule overrides, alarms with their history, fault-moment
-- captures, and maintenance windows.

-- Derived values (delta T, approaches, starts per hour, ...) are points of their own, written by
-- the server's rule engine, never by a gateway.
alter table points add column derived boolean not null default false;

-- Overrides of the shipped rules: per site (gateway, unit_id null) or per unit. `patch` is a JSON
-- object of fields replacing the default's, or JSON null to disable the rule there.
create table alarm_rules (
    id bigint generated always as identity primary key,
    gateway_id text not null references gateways (id),
    unit_id bigint references units (id),
    rule text not null,
    patch jsonb not null,
    updated_at timestamptz not null default now(),
    updated_by text not null
);
create unique index alarm_rules_scope on alarm_rules (gateway_id, coalesce(unit_id, 0), rule);

-- One row per episode of (target, rule): raised, maybe cleared and raised again (counted in
-- `occurrences`), until it is both cleared and acknowledged (`closed_at`).
create table alarms (
    id bigint generated always as identity primary key,
    gateway_id text not null references gateways (id),
    -- Null for a site-level alarm (the gateway itself).
    unit_id bigint references units (id),
    rule text not null,
    grade smallint not null check (grade between 1 and 4),
    title text not null,
    title_zh text not null default '',
    message text not null,
    active boolean not null,
    raised_at timestamptz not null,
    last_raised_at timestamptz not null,
    cleared_at timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by text,
    closed_at timestamptz,
    occurrences integer not null default 1,
    -- Raised and cleared too often: further occurrences are counted but not announced.
    flapping boolean not null default false,
    -- Raised during a maintenance window: recorded, not announced.
    muted boolean not null default false,
    shelved_until timestamptz,
    -- When the fault-moment capture is due (raised_at + its after window), until taken.
    capture_due_at timestamptz,
    capture_from timestamptz,
    capture_to timestamptz
);
create unique index alarms_open_episode on alarms (gateway_id, coalesce(unit_id, 0), rule) where closed_at is null;
create index alarms_by_unit on alarms (unit_id, raised_at desc);
create index alarms_open on alarms (raised_at desc) where closed_at is null;
create index alarms_capture_due on alarms (capture_due_at) where capture_due_at is not null;

-- Everything that happened to an alarm, and the event stream paging consumes in id order.
create table alarm_events (
    id bigint generated always as identity primary key,
    alarm_id bigint not null references alarms (id),
    at timestamptz not null default now(),
    -- raised, reraised, regraded, cleared, acknowledged, shelved, unshelved
    kind text not null,
    grade smallint,
    actor text,
    comment text,
    -- Whether this event should reach people (not while flapping, muted or shelved).
    notify boolean not null default false
);
create index alarm_events_by_alarm on alarm_events (alarm_id, id);

-- The readings of all the unit's points around the alarm's moment, copied so they outlive the
-- raw readings' retention.
create table alarm_captures (
    alarm_id bigint primary key references alarms (id),
    taken_at timestamptz not null default now(),
    -- [{"point": name, "unit": unit, "readings": [[ms, value or null], ...]}, ...]
    series jsonb not null
);

create table maintenance_windows (
    id bigint generated always as identity primary key,
    gateway_id text not null references gateways (id),
    -- Null: the whole site.
    unit_id bigint references units (id),
    starts_at timestamptz not null,
    ends_at timestamptz not null check (ends_at > starts_at),
    reason text not null default '',
    created_by text not null,
    created_at timestamptz not null default now()
);
create index maintenance_windows_by_gateway on maintenance_windows (gateway_id, ends_at);
