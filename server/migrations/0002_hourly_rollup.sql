-- Hourly rollups of readings, maintained at ingest from the rows actually inserted (so
-- redelivered readings are never counted twice). Serves long history ranges without scanning
-- raw readings. Buckets are aligned to UTC hours.
create table readings_1h (
    point_id bigint not null,
    bucket timestamptz not null,
    -- Readings with a value in the bucket, and their sum (for the average).
    n bigint not null,
    total double precision not null,
    lo double precision,
    hi double precision,
    -- The newest reading with a value, for "last".
    last_ts timestamptz,
    last_value double precision,
    primary key (point_id, bucket)
);
