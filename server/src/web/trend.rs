//! The overview's 30-day trend: open issues at the end of each day, drawn
//! as inline SVG (no script, no outside image).

use chrono::{DateTime, Duration, Utc};
use maud::{Markup, html};

use crate::store::IssueSpan;

/// Days drawn.
pub const DAYS: i64 = 30;

/// Open issues at the end of each of the last [`DAYS`] days, oldest first
/// (the last one is now).
pub fn daily_open(spans: &[IssueSpan], now: DateTime<Utc>) -> Vec<(DateTime<Utc>, u64)> {
    (0..DAYS)
        .rev()
        .map(|back| {
            let t = now - Duration::days(back);
            let open = spans
                .iter()
                .filter(|s| s.opened_at <= t && s.closed_at.is_none_or(|c| c > t))
                .count() as u64;
            (t, open)
        })
        .collect()
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
const PAD: f64 = 28.0;

/// The chart of `points`.
pub fn chart(points: &[(DateTime<Utc>, u64)]) -> Markup {
    let top = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let step = (WIDTH - 2.0 * PAD) / (points.len().max(2) - 1) as f64;
    let xy = |i: usize, n: u64| {
        (
            PAD + i as f64 * step,
            HEIGHT - PAD - (n as f64 / top) * (HEIGHT - 2.0 * PAD),
        )
    };
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (_, n))| {
            let (x, y) = xy(i, *n);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let first = points.first().map(|p| p.0.format("%b %d").to_string());
    let last = points.last().map(|p| p.0.format("%b %d").to_string());
    html! {
        svg.trend role="img" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT) {
            title { "Open issues at the end of each of the last " (DAYS) " days" }
            line x1=(PAD) y1=(HEIGHT - PAD) x2=(WIDTH - PAD) y2=(HEIGHT - PAD) stroke="#888";
            line x1=(PAD) y1=(PAD) x2=(PAD) y2=(HEIGHT - PAD) stroke="#888";
            text x="2" y=(PAD + 4.0) font-size="11" { (top as u64) }
            text x="2" y=(HEIGHT - PAD) font-size="11" { "0" }
            @if let Some(first) = first { text x=(PAD) y=(HEIGHT - 8.0) font-size="11" { (first) } }
            @if let Some(last) = last { text x=(WIDTH - PAD - 40.0) y=(HEIGHT - 8.0) font-size="11" { (last) } }
            polyline points=(line.join(" ")) fill="none" stroke="#b3261e" stroke-width="2";
            @for (i, (t, n)) in points.iter().enumerate() {
                @let (x, y) = xy(i, *n);
                circle cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="2.5" fill="#b3261e" {
                    title { (t.format("%Y-%m-%d")) ": " (n) " open" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_day_counts_what_was_open_at_its_end() {
        let now = Utc::now();
        let spans = [
            IssueSpan {
                opened_at: now - Duration::days(10),
                closed_at: None,
            },
            IssueSpan {
                opened_at: now - Duration::days(5),
                closed_at: Some(now - Duration::days(2) - Duration::hours(1)),
            },
        ];
        let days = daily_open(&spans, now);
        assert_eq!(days.len(), 30);
        let counts: Vec<u64> = days.iter().map(|d| d.1).collect();
        assert_eq!(counts[29], 1, "today: only the one still open");
        assert_eq!(counts[29 - 3], 2, "three days ago both were open");
        assert_eq!(counts[29 - 11], 0, "eleven days ago neither");
    }
}
