//! A finding's evidence as an SVG line chart: its daily values and the fitted trend. The same
//! picture goes into the PDF and the report's page.

use std::fmt::Write;

use super::analysis::{DayValue, Evidence};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The chart of `evidence`, self-contained SVG (fonts named, no scripts, no external files).
pub fn svg(evidence: &Evidence) -> String {
    let all: Vec<&DayValue> = evidence.daily.iter().chain(&evidence.fit).collect();
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="WenQuanYi Micro Hei, sans-serif" font-size="11">"#
    );
    let (Some(first), Some(last)) = (all.iter().map(|d| d.day).min(), all.iter().map(|d| d.day).max()) else {
        out.push_str("</svg>");
        return out;
    };
    let low = all.iter().map(|d| d.value).fold(f64::INFINITY, f64::min);
    let high = all.iter().map(|d| d.value).fold(f64::NEG_INFINITY, f64::max);
    // A flat series still gets a visible band.
    let pad = ((high - low) * 0.1).max(0.1);
    let (low, high) = (low - pad, high + pad);
    let days = (last - first).num_days().max(1) as f64;
    let x = |d: &DayValue| LEFT + (d.day - first).num_days() as f64 / days * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| TOP + (high - v) / (high - low) * (HEIGHT - TOP - BOTTOM);
    let _ = write!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#bbb" stroke-width="0.8"/>"##,
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    );
    for value in [high - pad, low + pad] {
        let _ = write!(
            out,
            r##"<text x="{}" y="{:.1}" text-anchor="end" fill="#555">{value:.1}</text>"##,
            LEFT - 4.0,
            y(value) + 4.0
        );
    }
    let _ = write!(
        out,
        r##"<text x="{LEFT}" y="{}" fill="#555">{first}</text><text x="{}" y="{}" text-anchor="end" fill="#555">{last}</text>"##,
        HEIGHT - 8.0,
        WIDTH - RIGHT,
        HEIGHT - 8.0
    );
    let unit = evidence.unit.replace(['<', '>', '&'], "");
    let _ = write!(out, r##"<text x="{}" y="{}" fill="#555">{unit}</text>"##, LEFT + 4.0, TOP + 12.0);
    let line = |points: &[DayValue]| {
        points.iter().map(|d| format!("{:.1},{:.1}", x(d), y(d.value))).collect::<Vec<_>>().join(" ")
    };
    if !evidence.fit.is_empty() {
        let _ = write!(
            out,
            r##"<polyline points="{}" fill="none" stroke="#d62728" stroke-width="1.5" stroke-dasharray="6 4"/>"##,
            line(&evidence.fit)
        );
    }
    let _ = write!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="1.8"/>"##,
        line(&evidence.daily)
    );
    for d in &evidence.daily {
        let _ = write!(out, r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="#1f77b4"/>"##, x(d), y(d.value));
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::doctor::Input;

    #[test]
    fn a_chart_draws_every_day_and_the_fit() {
        let day = |d: u32, value: f64| DayValue { day: NaiveDate::from_ymd_opt(2026, 11, d).expect("date"), value };
        let evidence = Evidence {
            input: Input::CondApproach,
            unit: "K".into(),
            daily: (1..=30).map(|d| day(d, 2.0 + f64::from(d) * 0.1)).collect(),
            fit: vec![day(1, 2.1), day(30, 5.0)],
        };
        let svg = svg(&evidence);
        assert_eq!(svg.matches("<circle").count(), 30);
        assert!(svg.contains("stroke-dasharray") && svg.contains("2026-11-01") && svg.contains("2026-11-30"));
        assert!(svg.ends_with("</svg>"));
    }
}
