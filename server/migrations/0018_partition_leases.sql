-- Server replicas and the partitions they own (server/src/partitions.rs): gateways are split into
-- 32 partitions by a hash of their id; each partition has one lease, held by the replica that
-- ingests and evaluates it until the lease expires unrenewed.
create table replicas (
    id text primary key check (length(id) between 1 and 200),
    heartbeat_at timestamptz not null,
    started_at timestamptz not null default now()
);
create table partition_leases (
    partition int primary key check (partition between 0 and 31),
    owner text,
    -- Counts the owners a partition has had: a new owner is a new epoch.
    epoch bigint not null default 0,
    expires_at timestamptz not null default '-infinity'
);
insert into partition_leases (partition) select generate_series(0, 31);
-- The server's own: no grant and no policy for the API.
alter table replicas enable row level security;
alter table partition_leases enable row level security;
