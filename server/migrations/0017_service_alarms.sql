-- Alarms about the service itself (storage jobs failing, disk filling), not any site: at most one
-- open episode per kind, paged once to the service team and closed when healthy again.
create table service_alarms (
    id bigint generated always as identity primary key,
    kind text not null,
    grade smallint not null check (grade between 1 and 4),
    detail text not null,
    raised_at timestamptz not null default now(),
    cleared_at timestamptz
);
create unique index service_alarms_open on service_alarms (kind) where cleared_at is null;
-- The server's own: no grant and no policy for the API.
alter table service_alarms enable row level security;
