//! Read-only share links: sales show a prospect a unit's real operating record. A link names
//! one unit, expires (1 to 90 days) and can be revoked; its page (`/s/<secret>`) shows the
//! creator's label, the equipment model and a week of hourly values of the key points, and
//! nothing that identifies the site: no site, unit or device name, no serial number, no
//! alarms. Links are made by anyone who sees the unit (row security), except duty staff.

pub mod api;

use chrono::{DateTime, Utc};

/// The points a record shows first, when the unit has them.
pub(crate) const KEY_POINTS: [&str; 8] = [
    "evap_leaving_temp",
    "evap_entering_temp",
    "chw_delta_t",
    "capacity_rla",
    "cond_leaving_temp",
    "cond_refrig_pressure",
    "kw_per_ton",
    "cop",
];
/// How many points a record shows.
pub(crate) const SHOWN: usize = 6;
/// How far back it goes.
pub(crate) const DAYS_SHOWN: i64 = 7;

/// A small line of hourly averages; hours without readings break the line.
pub(crate) fn sparkline(values: &[(DateTime<Utc>, Option<f64>)], from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let known: Vec<f64> = values.iter().filter_map(|(_, v)| *v).collect();
    let (Some(low), Some(high)) = (known.iter().copied().reduce(f64::min), known.iter().copied().reduce(f64::max))
    else {
        return String::new();
    };
    let span = (to - from).num_seconds().max(1) as f64;
    let height = if high > low { high - low } else { 1.0 };
    let mut lines = Vec::new();
    let mut current = Vec::new();
    for (ts, value) in values {
        match value {
            Some(v) => {
                let x = (*ts - from).num_seconds() as f64 / span * 300.0;
                let y = 48.0 - (v - low) / height * 44.0;
                current.push(format!("{x:.1},{y:.1}"));
            }
            None if !current.is_empty() => lines.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    let polylines: String =
        lines.iter().map(|points| format!(r#"<polyline points="{}"/>"#, points.join(" "))).collect();
    format!(r#"<svg viewBox="0 0 300 50" preserveAspectRatio="none" role="img">{polylines}</svg>"#)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn a_sparkline_breaks_where_hours_have_no_readings() {
        let from = DateTime::from_timestamp(0, 0).expect("time");
        let hour = |h: i64| from + Duration::hours(h);
        let svg = sparkline(
            &[(hour(0), Some(1.0)), (hour(1), Some(2.0)), (hour(2), None), (hour(3), Some(3.0))],
            from,
            hour(4),
        );
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert_eq!(sparkline(&[(hour(0), None)], from, hour(4)), "");
    }
}
