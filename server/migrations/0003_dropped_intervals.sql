-- Intervals whose readings a gateway read but had to drop before it could deliver them (its
-- store-and-forward queue hit its size or age limit). History shows them as known gaps.
create table dropped_intervals (
    gateway_id text not null references gateways (id),
    from_ts timestamptz not null,
    to_ts timestamptz not null,
    readings bigint not null,
    -- A redelivered report stores nothing twice.
    primary key (gateway_id, from_ts, to_ts)
);
