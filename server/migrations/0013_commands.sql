-- Remote control: each writable point's bounds as its gateway's birth announces them, and every
-- command asked of a gateway with who asked, from which value to which, and what became of it.
-- This table is the audit trail of remote control; rows are never deleted.
alter table points
    add column write_min double precision,
    add column write_max double precision,
    add column write_step double precision;

create table commands (
    -- 128 random bits in hex: the id the gateway executes at most once.
    id text primary key,
    unit_id bigint not null references units (id),
    point_id bigint not null references points (id),
    gateway_id text not null references gateways (id),
    value double precision not null,
    -- The point's latest reading when the command was asked.
    previous_value double precision,
    requested_by text not null,
    user_id bigint references users (id),
    requested_at timestamptz not null default now(),
    expires_at timestamptz not null,
    -- sent: on its way or executing; done: written and read back equal; refused: not written
    -- (by the server or the gateway, see message); failed: the write or the read back failed;
    -- expired: reached the gateway too late, not written; unanswered: no result by a while
    -- after its expiry (the gateway may or may not have written it).
    status text not null default 'sent'
        check (status in ('sent', 'done', 'refused', 'failed', 'expired', 'unanswered')),
    message text not null default '',
    read_back double precision,
    finished_at timestamptz
);
create index commands_by_unit on commands (unit_id, requested_at desc);
create index commands_waiting on commands (expires_at) where status = 'sent';
alter table commands enable row level security;
create policy tenant on commands to chillcloud_api
    using (exists (select 1 from units u where u.id = commands.unit_id));
-- The API records commands; only the server's own tasks record their results.
grant select, insert on commands to chillcloud_api;
