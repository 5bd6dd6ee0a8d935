-- The registry of gateways, devices (units) and points, and the narrow readings table.

-- A gateway exists only once provisioned: its row holds the broker credential's hash.
create table gateways (
    id text primary key,
    -- The gateway's line for Mosquitto's password file (PBKDF2-SHA512, written by mosquitto_passwd).
    mqtt_password_hash text not null,
    software_version text,
    -- The latest session announced in a birth; a death for an older session is ignored.
    session bigint,
    online boolean not null default false,
    last_seen timestamptz,
    created_at timestamptz not null default now()
);

-- A device behind a gateway: in this product, a chiller unit.
create table units (
    id bigint generated always as identity primary key,
    gateway_id text not null references gateways (id),
    -- The device id from the gateway's configuration.
    device_key text not null,
    profile text not null default '',
    model text not null default '',
    display_name text,
    created_at timestamptz not null default now(),
    constraint units_gateway_device_key unique (gateway_id, device_key)
);

create table points (
    id bigint generated always as identity primary key,
    unit_id bigint not null references units (id),
    name text not null,
    unit_of_measure text not null default '',
    decimals integer not null default 0,
    writable boolean not null default false,
    constraint points_unit_name unique (unit_id, name)
);

-- Each gateway session's alias table: data messages name points by alias.
create table gateway_sessions (
    gateway_id text not null references gateways (id),
    session bigint not null,
    started_at timestamptz not null,
    -- Point ids indexed by alias (null where an alias is unused).
    point_ids bigint[] not null,
    primary key (gateway_id, session)
);

-- Data that arrived before its session's birth, held (not lost) until the birth arrives.
create table pending_data (
    id bigint generated always as identity primary key,
    gateway_id text not null,
    session bigint not null,
    payload bytea not null,
    received_at timestamptz not null default now()
);
create index pending_data_session on pending_data (gateway_id, session);

-- Readings have no foreign key to points: the key check would cost every insert, and points are
-- never deleted while readings refer to them.
create table readings (
    point_id bigint not null,
    ts timestamptz not null,
    value double precision,
    -- 0 good, 1 bad (no value), 2 uncertain, as on the wire.
    quality smallint not null,
    primary key (point_id, ts)
);

-- The newest reading of each point, kept up to date at ingest so dashboards never scan history.
create table latest_readings (
    point_id bigint primary key references points (id),
    ts timestamptz not null,
    value double precision,
    quality smallint not null
);

-- A sample of rejected messages, for diagnosis.
create table dead_letters (
    id bigint generated always as identity primary key,
    received_at timestamptz not null default now(),
    topic text not null,
    reason text not null,
    payload bytea not null
);
