//! History queries: raw readings for short ranges, one-minute buckets for medium ones and hourly
//! buckets for long ones. On plain PostgreSQL minutes are computed from raw readings and hours
//! come from the `readings_1h` rollup ingest keeps; with TimescaleDB both come from its
//! continuous aggregates.
//! Bucketed series are dense: a bucket without readings is returned with a count of 0 and no
//! values, so charts show gaps as gaps.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::timescale::StorageMode;

/// Bucket sizes the history API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Bucket {
    /// Every reading.
    #[serde(rename = "raw")]
    Raw,
    /// One-minute aggregates.
    #[serde(rename = "1m")]
    Minute,
    /// One-hour aggregates.
    #[serde(rename = "1h")]
    Hour,
}

impl Bucket {
    /// The bucket size suited to a range: raw up to 2 hours, minutes up to 3 days, then hours.
    pub fn for_span(span: TimeDelta) -> Self {
        if span <= TimeDelta::hours(2) {
            Bucket::Raw
        } else if span <= TimeDelta::days(3) {
            Bucket::Minute
        } else {
            Bucket::Hour
        }
    }

    fn width(self) -> Option<TimeDelta> {
        match self {
            Bucket::Raw => None,
            Bucket::Minute => Some(TimeDelta::minutes(1)),
            Bucket::Hour => Some(TimeDelta::hours(1)),
        }
    }
}

/// One raw reading.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct RawReading {
    /// The point.
    pub point_id: i64,
    /// When it was read.
    pub ts: DateTime<Utc>,
    /// The value; none when the read failed.
    pub value: Option<f64>,
    /// `good`, `bad` or `uncertain`.
    pub quality: String,
}

/// One bucket of aggregates.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct BucketRow {
    /// The point.
    pub point_id: i64,
    /// Start of the bucket.
    pub ts: DateTime<Utc>,
    /// Mean of the values.
    pub avg: Option<f64>,
    /// Smallest value.
    pub min: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
    /// Newest value.
    pub last: Option<f64>,
    /// Readings with a value; 0 marks a gap.
    pub count: i64,
}

/// The rows of a history query.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Rows {
    /// For [`Bucket::Raw`].
    Raw(Vec<RawReading>),
    /// For the bucketed sizes.
    Buckets(Vec<BucketRow>),
}

/// An interval whose readings a gateway dropped before delivering them: a known gap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct DroppedSpan {
    /// Time of the first dropped reading.
    pub from: DateTime<Utc>,
    /// Time of the last dropped reading.
    pub to: DateTime<Utc>,
    /// How many readings were dropped (of all the gateway's points).
    pub readings: i64,
}

/// The intervals the gateways of `point_ids` reported dropped, overlapping `[from, to)`.
pub async fn dropped(
    db: &mut sqlx::PgConnection,
    point_ids: &[i64],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<DroppedSpan>> {
    sqlx::query_as(
        "select d.from_ts as from, d.to_ts as to, d.readings
         from dropped_intervals d
         where d.gateway_id in (select u.gateway_id from points p join units u on u.id = p.unit_id
                                where p.id = any($1))
           and d.to_ts >= $2 and d.from_ts < $3
         order by d.from_ts",
    )
    .bind(point_ids)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *db)
    .await
}

/// Why a history request cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The range is empty or out of range.
    #[error("{0}")]
    Range(String),
    /// The answer would hold more than [`MAX_ROWS`] rows.
    #[error("{0}")]
    TooMuch(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

const EPOCH: &str = "timestamptz '2000-01-01 00:00:00+00'";

/// The most rows one answer may hold, over all its points (JSON at most about 12 MB): 30 days of
/// hours for 138 points, 3 days of minutes for a 21-point Trane unit.
pub const MAX_ROWS: i64 = 100_000;

/// How many buckets of `width` the queries below produce over `[from, to)`: from the bucket
/// holding `from` (binned from 2000-01-01, as `date_bin` does) to the one holding `to`'s last
/// microsecond.
fn bucket_count(from: DateTime<Utc>, to: DateTime<Utc>, width: TimeDelta) -> i64 {
    let micros = |t: DateTime<Utc>| t.timestamp_micros();
    let width = width.num_microseconds().unwrap_or(i64::MAX).max(1);
    let epoch = 946_684_800_000_000;
    let first = micros(from) - (micros(from) - epoch).rem_euclid(width);
    (micros(to) - 1 - first).div_euclid(width) + 1
}

/// SQL naming a `quality` column's value as the API spells it (null stays null).
pub(crate) const QUALITY_NAME: &str = "case quality when 0 then 'good' when 1 then 'bad' when 2 then 'uncertain' end";

/// The query of the buckets of `point_ids` ($1) overlapping `[$2, $3)` of `width`, from what
/// `storage` keeps: columns `point_id, bucket, avg, min, max, last, n`. One-minute buckets on plain
/// PostgreSQL are computed from the readings inside the range; the others are whole buckets kept
/// ahead: the `readings_1h` rollup, or TimescaleDB's continuous aggregates (materialised up to
/// their last refresh, computed from raw readings after it).
/// Returns the bucket width too.
fn buckets_of(storage: StorageMode, bucket: Bucket) -> (&'static str, String) {
    let (view, width, ..) = crate::timescale::AGGREGATES[if bucket == Bucket::Minute { 0 } else { 1 }];
    let whole = format!("bucket >= date_bin('{width}', $2, {EPOCH}) and bucket < $3");
    let sql = match (storage, bucket) {
        (StorageMode::Timescale, _) => {
            format!("select point_id, bucket, avg, min, max, last, n from {view} where point_id = any($1) and {whole}")
        }
        (StorageMode::Plain, Bucket::Minute) => format!(
            "select point_id, date_bin('1 minute', ts, {EPOCH}) as bucket, avg(value) as avg, min(value) as min,
                    max(value) as max, (array_agg(value order by ts desc) filter (where value is not null))[1] as last,
                    count(value) as n
             from readings where point_id = any($1) and ts >= $2 and ts < $3 group by 1, 2"
        ),
        (StorageMode::Plain, _) => format!(
            "select point_id, bucket, total / nullif(n, 0) as avg, lo as min, hi as max, last_value as last, n
             from readings_1h where point_id = any($1) and {whole}"
        ),
    };
    (width, sql)
}

/// Reads the history of `point_ids` over `[from, to)` at `bucket` size, from the aggregates
/// `storage` keeps.
pub async fn query(
    db: &mut sqlx::PgConnection,
    storage: StorageMode,
    point_ids: &[i64],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> Result<Rows, HistoryError> {
    if from >= to {
        return Err(HistoryError::Range("`from` must be before `to`".into()));
    }
    let limit = MAX_ROWS;
    if let Some(width) = bucket.width() {
        // Buckets are dense: the answer has exactly this many rows, known before any is read.
        let buckets = bucket_count(from, to, width);
        let rows = buckets.saturating_mul(point_ids.len() as i64);
        if rows > MAX_ROWS {
            return Err(HistoryError::TooMuch(format!(
                "{buckets} buckets of {} points is {rows} rows, more than {MAX_ROWS}: choose a larger bucket, a shorter \
                 range or fewer points",
                point_ids.len()
            )));
        }
    }
    Ok(match bucket {
        Bucket::Raw => {
            let rows: Vec<RawReading> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "select point_id, ts, value, {QUALITY_NAME} as quality
                 from readings where point_id = any($1) and ts >= $2 and ts < $3
                 order by point_id, ts limit $4"
            )))
            .bind(point_ids)
            .bind(from)
            .bind(to)
            .bind(limit + 1)
            .fetch_all(&mut *db)
            .await?;
            if rows.len() as i64 > limit {
                return Err(HistoryError::TooMuch(format!(
                    "more than {limit} raw readings: choose bucket=1m or 1h, or a shorter range"
                )));
            }
            Rows::Raw(rows)
        }
        Bucket::Minute | Bucket::Hour => {
            let (width, source) = buckets_of(storage, bucket);
            Rows::Buckets(
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "select p.id as point_id, s.bucket as ts, a.avg, a.min, a.max, a.last, coalesce(a.n, 0) as count
                     from unnest($1::bigint[]) as p(id)
                     cross join generate_series(date_bin('{width}', $2, {EPOCH}), $3 - interval '1 microsecond',
                                                interval '{width}') as s(bucket)
                     left join ({source}) a on a.point_id = p.id and a.bucket = s.bucket
                     order by 1, 2"
                )))
                .bind(point_ids)
                .bind(from)
                .bind(to)
                .fetch_all(&mut *db)
                .await?,
            )
        }
    })
}

/// The same hourly averages computed from raw readings: the baseline the rollup is measured
/// against (benchmark P7), and the reference its tests compare with.
pub async fn hourly_from_raw(
    db: &mut sqlx::PgConnection,
    point_ids: &[i64],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<BucketRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select point_id, date_bin('1 hour', ts, {EPOCH}) as ts, avg(value) as avg, min(value) as min,
                max(value) as max, (array_agg(value order by ts desc) filter (where value is not null))[1] as last,
                count(value) as count
         from readings where point_id = any($1) and ts >= $2 and ts < $3
         group by 1, 2 order by 1, 2"
    )))
    .bind(point_ids)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *db)
    .await
}

/// Rows as CSV: a header line, then chunks of at most 1,000 rows, so the text of a large export
/// is never held whole.
pub fn csv_chunks(rows: Rows) -> impl Iterator<Item = String> {
    const CHUNK: usize = 1_000;
    let (header, chunks): (&str, Vec<Rows>) = match rows {
        Rows::Raw(rows) => ("point_id,ts,value,quality\n", rows.chunks(CHUNK).map(|c| Rows::Raw(c.to_vec())).collect()),
        Rows::Buckets(rows) => {
            ("point_id,ts,avg,min,max,last,count\n", rows.chunks(CHUNK).map(|c| Rows::Buckets(c.to_vec())).collect())
        }
    };
    std::iter::once(header.to_owned()).chain(chunks.into_iter().map(|chunk| csv_lines(&chunk)))
}

/// The CSV lines of rows, without the header.
fn csv_lines(rows: &Rows) -> String {
    fn number(value: Option<f64>) -> String {
        value.map(|v| v.to_string()).unwrap_or_default()
    }
    let mut out = String::new();
    match rows {
        Rows::Raw(rows) => {
            for r in rows {
                out.push_str(&format!("{},{},{},{}\n", r.point_id, r.ts.to_rfc3339(), number(r.value), r.quality));
            }
        }
        Rows::Buckets(rows) => {
            for r in rows {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{}\n",
                    r.point_id,
                    r.ts.to_rfc3339(),
                    number(r.avg),
                    number(r.min),
                    number(r.max),
                    number(r.last),
                    r.count
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_size_follows_the_span() {
        assert_eq!(Bucket::for_span(TimeDelta::minutes(30)), Bucket::Raw);
        assert_eq!(Bucket::for_span(TimeDelta::hours(2)), Bucket::Raw);
        assert_eq!(Bucket::for_span(TimeDelta::hours(25)), Bucket::Minute);
        assert_eq!(Bucket::for_span(TimeDelta::days(30)), Bucket::Hour);
    }

    #[test]
    fn buckets_are_counted_as_the_queries_make_them() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc);
        let hour = TimeDelta::hours(1);
        assert_eq!(bucket_count(at("2026-06-01T00:00:00Z"), at("2026-06-01T05:00:00Z"), hour), 5);
        assert_eq!(bucket_count(at("2026-06-01T00:30:00Z"), at("2026-06-01T05:00:00Z"), hour), 5);
        assert_eq!(bucket_count(at("2026-06-01T00:30:00Z"), at("2026-06-01T05:00:01Z"), hour), 6);
        assert_eq!(bucket_count(at("2026-06-01T00:00:00Z"), at("2026-06-01T00:00:01Z"), TimeDelta::minutes(1)), 1);
    }

    #[test]
    fn csv_marks_gaps_with_empty_fields() {
        let ts = DateTime::from_timestamp(1_700_000_000, 0).expect("valid");
        let rows =
            Rows::Buckets(vec![BucketRow { point_id: 1, ts, avg: None, min: None, max: None, last: None, count: 0 }]);
        let csv: String = csv_chunks(rows).collect();
        assert_eq!(csv, "point_id,ts,avg,min,max,last,count\n1,2023-11-14T22:13:20+00:00,,,,,0\n");
    }
}
