-- Gateway configuration held by the server (issue: fleet operations). Every version of a
-- gateway's site part (lines, devices, queue bounds, as TOML) is kept with who made it, when
-- and why, and what the gateway said of it. The newest version is the desired one; the version
-- a gateway runs comes from its births and reports. Only the service organisation reads or
-- writes them: a gateway's wiring is the maker's engineers' business.
create table gateway_config_versions (
    gateway_id text not null references gateways (id) on delete cascade,
    version integer not null check (version > 0),
    -- Well below the largest MQTT message a gateway takes (proto::MAX_PAYLOAD_BYTES).
    site_toml text not null check (octet_length(site_toml) <= 200000),
    changed_by bigint references users (id) on delete set null,
    changed_by_name text not null,
    note text not null default '' check (length(note) <= 500),
    created_at timestamptz not null default now(),
    -- The gateway's report: applied (after its trial), refused (with the field), rolled_back.
    outcome text check (outcome in ('applied', 'refused', 'rolled_back')),
    outcome_reason text,
    outcome_at timestamptz,
    -- When the server last published it to the gateway.
    sent_at timestamptz,
    primary key (gateway_id, version)
);

-- The version each gateway last said it runs (0: its local file), and when.
alter table gateways add column config_running_version integer not null default 0;
alter table gateways add column config_reported_at timestamptz;

alter table gateway_config_versions enable row level security;
create policy service on gateway_config_versions to chillcloud_api
    using (chillcloud_service()) with check (chillcloud_service());
grant select, insert on gateway_config_versions to chillcloud_api;
