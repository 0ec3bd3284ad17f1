//! Charts drawn on the server as inline SVG (maud markup, so every label is escaped): a date
//! strip, a calendar, a heatmap, line charts and stacked bars. Tooltips are SVG `<title>`s,
//! which browsers show without any script.

use chrono::{Datelike, NaiveDate};
use maud::{html, Markup};

use super::data::Status;

pub fn colour(status: Option<Status>) -> &'static str {
    match status {
        Some(Status::Committed) => "#2e9d5b",
        Some(Status::Failed) => "#d64545",
        Some(Status::Running) => "#3d7fd9",
        Some(Status::Missing) => "#f2c14e",
        Some(Status::Stale) => "#9c6ade",
        None => "#e4e6eb",
    }
}

/// One logical date in a strip or calendar.
pub struct Day {
    pub date: NaiveDate,
    pub status: Option<Status>,
    pub href: Option<String>,
    pub title: String,
}

fn cell(d: &Day, x: f64, y: f64, size: f64) -> Markup {
    let rect = html! {
        rect x=(x) y=(y) width=(size) height=(size) rx="2" fill=(colour(d.status))
            data-date=(d.date) data-status=(d.status.map_or("none", Status::name)) {
            title { (d.title) }
        }
    };
    match &d.href {
        Some(h) => html! { a href=(h) { (rect) } },
        None => rect,
    }
}

/// Dates side by side, oldest first (the jobs page's last 30 dates).
pub fn strip(days: &[Day]) -> Markup {
    let size = 11.0;
    let w = days.len() as f64 * (size + 2.0);
    html! {
        svg class="strip" width=(w) height=(size) viewBox={"0 0 " (w) " " (size)} role="img" {
            @for (i, d) in days.iter().enumerate() {
                (cell(d, i as f64 * (size + 2.0), 0.0, size))
            }
        }
    }
}

/// Every date in weeks (columns) by weekday (rows), Monday on top, with month labels.
pub fn calendar(days: &[Day]) -> Markup {
    let Some(first) = days.first().map(|d| d.date) else {
        return html! { p.muted { "No dates yet." } };
    };
    let size = 12.0;
    let step = size + 2.0;
    let top = 14.0;
    let left = 26.0;
    let monday = first - chrono::Duration::days(first.weekday().num_days_from_monday() as i64);
    let week = |d: NaiveDate| ((d - monday).num_days() / 7) as f64;
    let weeks = days.last().map_or(1.0, |d| week(d.date) + 1.0);
    // Room on the right for the last month's name.
    let w = left + weeks * step + 30.0;
    let h = top + 7.0 * step;
    html! {
        svg class="calendar" width=(w) height=(h) viewBox={"0 0 " (w) " " (h)} role="img" {
            @for (i, label) in ["Mon", "", "Wed", "", "Fri", "", "Sun"].iter().enumerate() {
                @if !label.is_empty() {
                    text x="0" y=(top + i as f64 * step + size - 2.0) class="axis" { (label) }
                }
            }
            @for d in days {
                // A month's name over the week of its first day (and over the first date), the
                // year with January's; none too close to the first date's.
                @if d.date == first || (d.date.day() == 1 && week(d.date) >= 2.0) {
                    text x=(left + week(d.date) * step) y="10" class="axis" {
                        (d.date.format(if d.date.month() == 1 { "%b %Y" } else { "%b" }))
                    }
                }
                (cell(d, left + week(d.date) * step, top + d.date.weekday().num_days_from_monday() as f64 * step, size))
            }
        }
    }
}

/// A heatmap cell: how far the value is towards its threshold (1 = at it), whether it was
/// flagged, and its tooltip.
pub struct Heat {
    pub ratio: f64,
    pub flagged: bool,
    pub title: String,
}

/// White to amber below the threshold, red from it to three times it.
fn heat_colour(ratio: f64) -> String {
    if !ratio.is_finite() {
        return "#e4e6eb".into();
    }
    let mix = |a: (f64, f64, f64), b: (f64, f64, f64), t: f64| {
        let t = t.clamp(0.0, 1.0);
        format!(
            "#{:02x}{:02x}{:02x}",
            (a.0 + (b.0 - a.0) * t) as u8,
            (a.1 + (b.1 - a.1) * t) as u8,
            (a.2 + (b.2 - a.2) * t) as u8
        )
    };
    if ratio < 1.0 {
        mix((255.0, 255.0, 255.0), (246.0, 193.0, 78.0), ratio)
    } else {
        mix(
            (236.0, 112.0, 99.0),
            (150.0, 20.0, 20.0),
            (ratio - 1.0) / 2.0,
        )
    }
}

/// Rows by columns; `cell(row, column)` gives each cell (none: no report of it that date).
/// Rows link to `row_href`, columns to `column_href`.
pub fn heatmap(
    rows: &[String],
    columns: &[NaiveDate],
    cell: impl Fn(usize, usize) -> Option<Heat>,
    row_href: impl Fn(&str) -> String,
) -> Markup {
    let cw = if columns.len() > 120 {
        3.0
    } else if columns.len() > 40 {
        6.0
    } else {
        14.0
    };
    let ch = 14.0;
    let left = 150.0;
    let top = 16.0;
    let w = left + columns.len() as f64 * cw + 4.0;
    let h = top + rows.len() as f64 * ch + 4.0;
    let label_every = ((60.0 / cw).ceil() as usize).max(1);
    html! {
        svg class="heatmap" width=(w) height=(h) viewBox={"0 0 " (w) " " (h)} role="img" {
            @for (j, d) in columns.iter().enumerate() {
                @if j % label_every == 0 {
                    text x=(left + j as f64 * cw) y="11" class="axis" { (d.format("%m-%d")) }
                }
            }
            @for (i, r) in rows.iter().enumerate() {
                a href=(row_href(r)) {
                    text x=(left - 6.0) y=(top + i as f64 * ch + 10.0) text-anchor="end" class="label" data-column=(r) { (short(r, 22)) title { (r) } }
                }
                @for j in 0..columns.len() {
                    @if let Some(c) = cell(i, j) {
                        // Only flagged cells name their column and date as attributes: a year of
                        // fifty features is 18,250 cells, and the tooltip says it for the rest.
                        @if c.flagged {
                            rect x=(left + j as f64 * cw) y=(top + i as f64 * ch) width=(cw) height=(ch - 1.0)
                                fill=(heat_colour(c.ratio)) class="flagged" data-column=(r) data-date=(columns[j]) {
                                title { (c.title) }
                            }
                        } @else {
                            rect x=(left + j as f64 * cw) y=(top + i as f64 * ch) width=(cw) height=(ch - 1.0)
                                fill=(heat_colour(c.ratio)) {
                                title { (c.title) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

/// A line of a line chart: a value per date index (gaps allowed).
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub dashed: bool,
    pub points: Vec<(usize, f64)>,
}

/// A marked point (a degraded date, say).
pub struct Marker {
    pub index: usize,
    pub value: f64,
    pub title: String,
}

/// What a line chart draws besides its lines.
#[derive(Default)]
pub struct Guides {
    /// Horizontal lines with their labels (a threshold, a holdout value).
    pub lines: Vec<(f64, String)>,
    /// A shaded band (the tolerance around the holdout value).
    pub band: Option<(f64, f64)>,
    pub markers: Vec<Marker>,
}

/// Lines over the dates, with a legend, guides and y-axis ticks.
pub fn line_chart(dates: &[NaiveDate], series: &[Series], guides: &Guides) -> Markup {
    let (w, h) = (760.0, 220.0);
    let (left, right, top, bottom) = (56.0, 12.0, 12.0, 28.0);
    let mut values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(guides.lines.iter().map(|l| l.0))
        .chain(guides.band.iter().flat_map(|b| [b.0, b.1]))
        .filter(|v| v.is_finite())
        .collect();
    if values.is_empty() || dates.is_empty() {
        return html! { p.muted { "Nothing to draw yet." } };
    }
    values.sort_by(f64::total_cmp);
    let (mut lo, mut hi) = (values[0], values[values.len() - 1]);
    if hi - lo < 1e-12 {
        lo -= 0.5;
        hi += 0.5;
    }
    let pad = (hi - lo) * 0.08;
    let (lo, hi) = (lo - pad, hi + pad);
    let n = dates.len().max(2) as f64 - 1.0;
    let x = |i: usize| left + (w - left - right) * i as f64 / n;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v - lo) / (hi - lo));
    let ticks: Vec<f64> = (0..=4).map(|k| lo + (hi - lo) * k as f64 / 4.0).collect();
    let label_every = (dates.len() / 8).max(1);
    html! {
        svg class="chart" width=(w) height=(h + 18.0) viewBox={"0 0 " (w) " " (h + 18.0)} role="img" {
            @if let Some((a, b)) = guides.band {
                rect x=(left) y=(y(a.max(b))) width=(w - left - right) height=((y(a.min(b)) - y(a.max(b))).max(0.0)) class="band" {}
            }
            @for t in &ticks {
                line x1=(left) x2=(w - right) y1=(y(*t)) y2=(y(*t)) class="grid" {}
                text x=(left - 4.0) y=(y(*t) + 3.0) text-anchor="end" class="axis" { (tick_label(*t)) }
            }
            @for (i, d) in dates.iter().enumerate() {
                @if i % label_every == 0 {
                    text x=(x(i)) y=(h - bottom + 14.0) text-anchor="middle" class="axis" { (d) }
                }
            }
            @for (v, label) in &guides.lines {
                line x1=(left) x2=(w - right) y1=(y(*v)) y2=(y(*v)) class="guide" {}
                text x=(w - right) y=(y(*v) - 3.0) text-anchor="end" class="axis" { (label) }
            }
            @for s in series {
                polyline points=(polyline(&s.points, &x, &y)) fill="none" stroke=(s.colour) stroke-width="1.6"
                    stroke-dasharray=[s.dashed.then_some("5 3")] {}
                @for (i, v) in &s.points {
                    circle cx=(x(*i)) cy=(y(*v)) r="2.2" fill=(s.colour) {
                        title { (s.name) " " (dates[*i]) ": " (tick_label(*v)) }
                    }
                }
            }
            @for m in &guides.markers {
                circle cx=(x(m.index)) cy=(y(m.value)) r="5" class="marker" { title { (m.title) } }
            }
            @for (k, s) in series.iter().enumerate() {
                line x1=(left + k as f64 * 170.0) x2=(left + k as f64 * 170.0 + 18.0) y1=(h + 10.0) y2=(h + 10.0)
                    stroke=(s.colour) stroke-width="2" stroke-dasharray=[s.dashed.then_some("5 3")] {}
                text x=(left + k as f64 * 170.0 + 22.0) y=(h + 14.0) class="axis" { (s.name) }
            }
        }
    }
}

fn polyline(points: &[(usize, f64)], x: &impl Fn(usize) -> f64, y: &impl Fn(f64) -> f64) -> String {
    points
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|(i, v)| format!("{:.1},{:.1}", x(*i), y(*v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2e}", v)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Stacked bars per date: each bar's parts, bottom first, with their colours and names.
pub fn stacked_bars(dates: &[NaiveDate], parts: &[(&str, &'static str, Vec<u64>)]) -> Markup {
    let (w, h) = (760.0, 160.0);
    let (left, top, bottom) = (56.0, 8.0, 28.0);
    let totals: Vec<u64> = (0..dates.len())
        .map(|i| parts.iter().map(|p| p.2.get(i).copied().unwrap_or(0)).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bw = ((w - left - 40.0) / dates.len().max(1) as f64).max(1.0);
    let scale = |v: u64| (h - top - bottom) * v as f64 / max;
    let label_every = (dates.len() / 8).max(1);
    html! {
        svg class="chart" width=(w) height=(h + 18.0) viewBox={"0 0 " (w) " " (h + 18.0)} role="img" {
            text x=(left - 4.0) y=(top + 8.0) text-anchor="end" class="axis" { (max as u64) }
            text x=(left - 4.0) y=(h - bottom) text-anchor="end" class="axis" { "0" }
            @for (i, d) in dates.iter().enumerate() {
                @let mut base = h - bottom;
                @for (name, colour, values) in parts {
                    @let v = values.get(i).copied().unwrap_or(0);
                    @if v > 0 {
                        @let hgt = scale(v);
                        @let y0 = { base -= hgt; base };
                        rect x=(left + i as f64 * bw) y=(y0) width=((bw - 1.0).max(0.5)) height=(hgt) fill=(colour) {
                            title { (d) " " (name) ": " (v) }
                        }
                    }
                }
                @if i % label_every == 0 {
                    text x=(left + i as f64 * bw) y=(h - bottom + 14.0) class="axis" { (d) }
                }
            }
            @for (k, (name, colour, _)) in parts.iter().enumerate() {
                rect x=(left + k as f64 * 150.0) y=(h + 4.0) width="12" height="10" fill=(colour) {}
                text x=(left + k as f64 * 150.0 + 16.0) y=(h + 13.0) class="axis" { (name) }
            }
        }
    }
}
