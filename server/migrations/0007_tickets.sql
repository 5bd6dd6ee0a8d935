-- Service tickets: one job against the response clocks of its grade, from the alarm (or a
-- request) to the customer's satisfaction score.

create table tickets (
    id bigint generated always as identity primary key,
    -- The alarm it was opened from; at most one ticket per alarm.
    alarm_id bigint unique references alarms (id),
    gateway_id text not null references gateways (id),
    unit_id bigint references units (id),
    grade smallint not null check (grade between 1 and 4),
    title text not null,
    status text not null default 'open'
        check (status in ('open', 'responded', 'on_site', 'resolved', 'closed')),
    -- Remote guidance or a site visit, decided at triage, with the parts and tools to bring.
    triage text check (triage in ('remote', 'site_visit')),
    parts jsonb not null default '[]',
    assignee_id bigint references people (id),
    opened_at timestamptz not null default now(),
    -- The clocks of the grade (PRODUCT.md's service table).
    respond_by timestamptz not null,
    on_site_by timestamptz not null,
    escalate_by timestamptz not null,
    responded_at timestamptz,
    on_site_at timestamptz,
    resolved_at timestamptz,
    closed_at timestamptz,
    -- Clocks already breached and escalated: respond, on_site, escalate.
    breached text[] not null default '{}',
    satisfaction smallint check (satisfaction between 1 and 5),
    satisfaction_at timestamptz
);
create index tickets_open on tickets (opened_at) where closed_at is null;

create table ticket_events (
    id bigint generated always as identity primary key,
    ticket_id bigint not null references tickets (id),
    at timestamptz not null default now(),
    -- opened, assigned, triaged, responded, on_site, note, resolved, closed, breached, feedback
    kind text not null,
    actor text not null,
    comment text not null default '',
    data jsonb
);
create index ticket_events_by_ticket on ticket_events (ticket_id, id);

-- Messages about tickets (breaches, the satisfaction question) go through the outbox too.
alter table outbox add column ticket_id bigint references tickets (id);
