//! History through the API: raw, one-minute and one-hour buckets, gaps returned as gaps, the
//! hourly rollup equal to the same aggregates computed from raw readings, and CSV export.

use std::time::Duration;

use chillcloud_server::history::{BucketRow, hourly_from_raw};
use chillcloud_tests::harness::{Stack, count_readings, wait_for};
use chrono::{DateTime, TimeDelta, Utc};

/// An hour boundary: 2023-11-14T22:00:00Z.
const T0_MS: i64 = 1_699_999_200_000;
const STEP_MS: i64 = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn history_serves_raw_minute_and_hour_buckets_with_gaps_as_gaps() {
    let stack = Stack::start().await;
    let pool = stack.postgres.pool().await;
    let api = stack.api();
    let mut gateway = stack.gateway(2).await;

    // Three hours of readings every 10 s, except minutes 20 to 39 of the second hour. Point p0
    // reads the minute number (so aggregates are known), p1 a constant.
    let mut published = 0;
    let mut replay = Vec::new();
    for step in 0..(3 * 3600 * 1000 / STEP_MS) {
        let time_ms = T0_MS + step * STEP_MS;
        let minute = (time_ms - T0_MS) / 60_000;
        if (80..100).contains(&minute) {
            continue;
        }
        let data = gateway.data_at(time_ms, &[(0, minute as f64), (1, 1.5)]);
        gateway.publish_data(&data).await;
        published += 2;
        if step % 7 == 0 {
            replay.push(data);
        }
    }
    // Redelivered copies must not be counted twice in the rollup.
    for data in &replay {
        gateway.publish_data(data).await;
    }
    gateway.wait_acked(Duration::from_secs(60)).await;
    wait_for("every reading stored", Duration::from_secs(60), || async {
        (count_readings(&pool).await.0 == published).then_some(())
    })
    .await;

    let units = api.get("/api/v1/units").await.expect("units");
    let unit_id = units[0]["id"].as_i64().expect("unit id");
    let t = |offset: TimeDelta| (DateTime::from_timestamp_millis(T0_MS).expect("valid") + offset).to_rfc3339();
    let range = |from: TimeDelta, to: TimeDelta, extra: &str| {
        format!("/api/v1/units/{unit_id}/history?from={}&to={}{extra}", urlencode(&t(from)), urlencode(&t(to)))
    };

    // Hourly buckets from the rollup, for both points.
    let hourly = api.get(&range(TimeDelta::zero(), TimeDelta::hours(3), "&bucket=1h")).await.expect("hourly");
    assert_eq!(hourly["bucket"], "1h");
    let rows: Vec<BucketRow> = serde_json::from_value(hourly["rows"].clone()).expect("bucket rows");
    assert_eq!(rows.len(), 6, "3 hours x 2 points");
    let p0: Vec<&BucketRow> = rows.iter().filter(|r| r.point_id == rows[0].point_id).collect();
    assert_eq!(p0.iter().map(|r| r.count).collect::<Vec<_>>(), vec![360, 240, 360]);
    assert_eq!(p0[0].avg, Some(29.5));
    assert_eq!((p0[1].min, p0[1].max, p0[1].last), (Some(60.0), Some(119.0), Some(119.0)));
    // The rollup equals the same aggregates computed from raw readings.
    let point_ids: Vec<i64> =
        rows.iter().map(|r| r.point_id).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let from = DateTime::<Utc>::from_timestamp_millis(T0_MS).expect("valid");
    let mut connection = pool.acquire().await.expect("a connection");
    let raw =
        hourly_from_raw(&mut connection, &point_ids, from, from + TimeDelta::hours(3)).await.expect("raw aggregates");
    for (rolled, computed) in rows.iter().zip(&raw) {
        assert_eq!((rolled.point_id, rolled.ts, rolled.count), (computed.point_id, computed.ts, computed.count));
        assert_eq!((rolled.min, rolled.max, rolled.last), (computed.min, computed.max, computed.last));
        let (a, b) = (rolled.avg.expect("avg"), computed.avg.expect("avg"));
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    // Minute buckets over the second hour: the gap is there as empty buckets.
    let minutes = api.get(&range(TimeDelta::hours(1), TimeDelta::hours(2), "&bucket=1m")).await.expect("minutes");
    let rows: Vec<BucketRow> = serde_json::from_value(minutes["rows"].clone()).expect("bucket rows");
    let p0: Vec<&BucketRow> = rows.iter().filter(|r| r.point_id == point_ids[0]).collect();
    assert_eq!(p0.len(), 60);
    for (minute, row) in p0.iter().enumerate() {
        if (20..40).contains(&minute) {
            assert_eq!((row.count, row.avg), (0, None), "minute {minute} is a gap");
        } else {
            assert_eq!((row.count, row.avg), (6, Some((60 + minute) as f64)), "minute {minute}");
        }
    }

    // The bucket follows the range when not given; raw for short ranges.
    let short = api.get(&range(TimeDelta::zero(), TimeDelta::minutes(10), "")).await.expect("raw");
    assert_eq!(short["bucket"], "raw");
    assert_eq!(short["rows"].as_array().expect("rows").len(), 2 * 60);
    let long = api.get(&range(TimeDelta::zero(), TimeDelta::days(30), "")).await.expect("long");
    assert_eq!(long["bucket"], "1h");

    // CSV export, and clear refusals.
    let (status, csv) = api.get_raw(&range(TimeDelta::zero(), TimeDelta::hours(3), "&bucket=1h&format=csv")).await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().next(), Some("point_id,ts,avg,min,max,last,count"));
    assert_eq!(csv.lines().count(), 7);
    let (status, body) = api.get_raw(&range(TimeDelta::hours(2), TimeDelta::hours(1), "")).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = api.get_raw(&range(TimeDelta::zero(), TimeDelta::hours(1), "&bucket=5m")).await;
    assert_eq!(status, 400);
    let (status, _) = api.get_raw("/api/v1/units/999999/history").await;
    assert_eq!(status, 404);
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}
