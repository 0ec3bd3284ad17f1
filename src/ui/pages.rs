//! The pages: jobs, a job, a date's runs, a date's drift and performance reports, models.
//! Every value from data goes through maud's escaping; links are built from names that
//! validation allows in a path, and percent-encoded all the same.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::auth::Session;
use super::data::{self, JobHistory, Span, Status};
use super::svg::{self, Day, Guides, Heat, Marker, Series};
use super::{JobQuery, Refusal, Ui};
use crate::config::{JobSpec, ModelRegistry};
use crate::drift::render::number;
use crate::drift::DATASET_ROW;
use crate::metric::Metric;
use crate::record::{RunManifest, RunRecord, SUCCESS_MARKER};
use crate::storage::{ErrorKind, Uri};

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;background:#f7f8fa}
header{background:#1d2330;color:#fff;padding:.6rem 1.5rem;display:flex;gap:1.5rem;align-items:baseline}
header a{color:#fff;text-decoration:none}header .brand{font-weight:700;font-size:1.1rem}
main{padding:1rem 1.5rem;max-width:1400px}
h1{font-size:1.4rem;margin:.4rem 0 1rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
table{border-collapse:collapse;background:#fff;margin:.5rem 0}
td,th{padding:.35rem .7rem;border-bottom:1px solid #e4e6eb;text-align:left;vertical-align:middle}
th{font-size:.8rem;color:#5b6475;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:.6rem;color:#fff;font-size:.8rem}
.muted{color:#6b7384}.small{font-size:.85rem}
.card{background:#fff;border:1px solid #e4e6eb;border-radius:6px;padding:.8rem 1rem;margin:.5rem 0}
.legend span.key{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .9rem;vertical-align:middle;border-radius:2px}
svg text.axis{font-size:10px;fill:#6b7384}svg text.label{font-size:11px;fill:#1d2330}
svg .grid{stroke:#eceef2}svg .guide{stroke:#5b6475;stroke-dasharray:3 3}
svg .band{fill:#2e9d5b;fill-opacity:.12}svg .marker{fill:none;stroke:#d64545;stroke-width:2}
svg rect.flagged{stroke:#1d2330;stroke-width:1.2}
pre.error{background:#fff4f4;border:1px solid #f1c4c4;padding:.6rem;white-space:pre-wrap;word-break:break-word}
.drift{color:#b00020;font-weight:600}.ok{color:#2e7d32}.bad{background:#fdecec}
.cards{display:flex;flex-wrap:wrap;gap:1rem}.cards .card{margin:0}
form.inline{display:inline}button{font:inherit;padding:.3rem .8rem;cursor:pointer}
";

/// A path segment, percent-encoded (job names are validated, but a link never trusts that).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn job_href(job: &str) -> String {
    format!("/ui/jobs/{}", path_segment(job))
}

fn date_href(job: &str, date: NaiveDate) -> String {
    format!("/ui/jobs/{}/{date}", path_segment(job))
}

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · nightshift" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/ui" { "nightshift" }
                    a href="/ui" { "Jobs" }
                    a href="/ui/models" { "Models" }
                }
                main { (body) }
            }
        }
    }
}

fn badge(status: Option<Status>) -> Markup {
    let name = status.map_or("none", Status::name);
    html! { span.badge style={"background:" (svg::colour(status))} data-status=(name) { (name) } }
}

fn legend() -> Markup {
    html! {
        p.legend.small.muted {
            @for s in [Status::Committed, Status::Failed, Status::Running, Status::Missing, Status::Stale] {
                span.key style={"background:" (svg::colour(Some(s)))} {} (s.name())
            }
        }
    }
}

fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - then).num_seconds().max(0);
    match s {
        0..=89 => format!("{s} s ago"),
        90..=5399 => format!("{} min ago", s / 60),
        5400..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// Which date a tick scores, in words.
fn date_rule(offset_days: i64) -> String {
    match offset_days {
        0 => "the tick's own date".into(),
        -1 => "the day before the tick".into(),
        n if n < 0 => format!("{} days before the tick", -n),
        n => format!("{n} days after the tick"),
    }
}

fn local(spec: &JobSpec, t: DateTime<Utc>) -> String {
    t.with_timezone(&spec.timezone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

fn days(h: &JobHistory) -> Vec<Day> {
    h.dates
        .iter()
        .map(|&date| {
            let status = h.status(date);
            let title = match (status, h.runs.get(&date)) {
                (Some(s), Some(r)) => format!("{date}: {} (run {})", s.name(), r.latest().run_id),
                (Some(s), None) => format!("{date}: {}", s.name()),
                (None, _) => format!("{date}: not scheduled"),
            };
            Day {
                date,
                status,
                href: status.map(|_| date_href(&h.spec.name, date)),
                title,
            }
        })
        .collect()
}

/// The latest drift verdict of a job, in words.
fn drift_verdict(h: &JobHistory) -> Markup {
    let Some((date, report)) = h.drift.iter().next_back() else {
        return html! { span.muted { "no report" } };
    };
    let features: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.column_type != "dataset" && r.column_type != "prediction")
        .collect();
    let drifted = features.iter().filter(|r| r.drift_detected).count();
    let dataset = report
        .rows
        .iter()
        .find(|r| r.column == DATASET_ROW)
        .is_some_and(|r| r.drift_detected);
    html! {
        a href={(date_href(&h.spec.name, *date)) "/drift"} class=(if dataset { "drift" } else { "ok" }) {
            @if dataset { "drift: " } @else { "no drift: " }
            (drifted) " of " (features.len()) " features"
        }
        " " span.muted.small { (date) }
    }
}

/// The latest realized or estimated value of the job's first metric, with the degraded flag.
fn accuracy(h: &JobHistory) -> Markup {
    let Some((date, e)) = h.performance.iter().next_back() else {
        return html! { span.muted { "no evaluation" } };
    };
    let Some(m) = e.metrics.first() else {
        return html! { span.muted { "no metric" } };
    };
    let (value, kind) = match (m.value, e.realized) {
        (Some(v), true) => (Some(v), "realized"),
        _ => (m.estimated, "estimated"),
    };
    let degraded = e.metrics.iter().any(|m| m.degraded);
    html! {
        a href={(date_href(&h.spec.name, *date)) "/performance"} {
            (m.metric) " " (number(value))
        }
        " " span.muted.small { (kind) ", " (date) }
        @if degraded { " " span.badge style="background:#d64545" data-flag="degraded" { "degraded" } }
    }
}

/// The jobs page: one row per job.
pub fn jobs(ui: &Ui, now: DateTime<Utc>) -> Markup {
    let mut specs = ui.activity.jobs();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<(Arc<JobSpec>, Result<JobHistory>)> = specs
        .into_iter()
        .map(|spec| {
            let active = ui.activity.active(&spec.name);
            let h = data::job_history(
                spec.clone(),
                &ui.settings,
                &ui.stores,
                &ui.caches,
                Span::Last(30),
                active,
                now,
            );
            (spec, h)
        })
        .collect();
    layout(
        "Jobs",
        html! {
            h1 { "Jobs" }
            (legend())
            table.jobs {
                tr {
                    th { "job" } th { "schedule" } th { "next run" } th { "last run" }
                    th { "last 30 dates" } th { "drift" } th { "accuracy" }
                }
                @for (spec, h) in &rows {
                    tr data-job=(spec.name) {
                        td { a href=(job_href(&spec.name)) { (spec.name) } }
                        td { code { (spec.schedule.expression) } br; span.muted.small { (spec.timezone.name()) } }
                        td.small {
                            @match ui.activity.next_run(spec) {
                                Some(t) => (local(spec, t)),
                                None => span.muted { "never" },
                            }
                        }
                        @match h {
                            Ok(h) => {
                                td {
                                    @match h.latest_run() {
                                        Some(r) => {
                                            (badge(Some(data::run_status(spec, r))))
                                            " " a.small href=(date_href(&spec.name, r.logical_date)) { (r.logical_date) }
                                            br; span.muted.small { (age(r.finished_at, now)) ", took " (duration(r.seconds)) }
                                        },
                                        None => span.muted { "never ran" },
                                    }
                                }
                                td { (svg::strip(&days(h))) }
                                td { (drift_verdict(h)) }
                                td { (accuracy(h)) }
                            },
                            Err(e) => td colspan="4" { pre.error { (format!("{e:#}")) } },
                        }
                    }
                }
            }
        },
    )
}

/// How far a drift statistic is towards its threshold: 1 at it, more past it. Distances
/// (PSI, Wasserstein, Jensen-Shannon) drift at or above the threshold; tests (KS,
/// chi-square, Z) when the p-value falls below it, so their p-value is compared on a log
/// scale.
fn severity(r: &crate::drift::DriftRow) -> f64 {
    match r.p_value {
        Some(p)
            if r.method != "psi" && r.method != "wasserstein" && r.method != "jensenshannon" =>
        {
            if p <= 0.0 {
                3.0
            } else if r.threshold <= 0.0 || r.threshold >= 1.0 {
                f64::NAN
            } else {
                p.ln() / r.threshold.ln()
            }
        }
        _ if r.threshold > 0.0 => r.statistic / r.threshold,
        _ => f64::NAN,
    }
}

/// The value a line chart draws for a column: the statistic, or for tests the p-value.
fn drawn_value(r: &crate::drift::DriftRow) -> (f64, &'static str) {
    match r.p_value {
        Some(p)
            if r.method != "psi" && r.method != "wasserstein" && r.method != "jensenshannon" =>
        {
            (p, "p-value")
        }
        _ => (r.statistic, "statistic"),
    }
}

/// A job's page: calendar, drift over time, accuracy over time, volume.
pub fn job(ui: &Ui, spec: Arc<JobSpec>, query: &JobQuery, now: DateTime<Utc>) -> Result<Markup> {
    let active = ui.activity.active(&spec.name);
    let h = data::job_history(
        spec.clone(),
        &ui.settings,
        &ui.stores,
        &ui.caches,
        Span::All,
        active,
        now,
    )?;
    let name = &spec.name;
    Ok(layout(
        name,
        html! {
            h1 { "Job " (name) }
            p.small.muted {
                "schedule " code { (spec.schedule.expression) } " (" (spec.timezone.name()) "), scoring " (date_rule(spec.date.offset_days))
                ", model " (spec.model)
                @if let Some(t) = ui.activity.next_run(&spec) { ", next run " (local(&spec, t)) }
            }
            h2 { "Calendar" }
            (legend())
            div.card { (svg::calendar(&days(&h))) }
            h2 { "Drift over time" }
            (drift_section(&h, query))
            h2 { "Accuracy over time" }
            (accuracy_section(&h, query))
            h2 { "Volume" }
            (volume_section(&h))
        },
    ))
}

fn drift_section(h: &JobHistory, query: &JobQuery) -> Markup {
    if h.drift.is_empty() {
        return html! { p.muted { "No drift reports yet." } };
    }
    // Features in the order of the latest report, then any only older reports have.
    let mut features: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for report in h.drift.values().rev() {
        for r in &report.rows {
            if r.column != DATASET_ROW && seen.insert(r.column.clone()) {
                features.push(r.column.clone());
            }
        }
    }
    let dates: Vec<NaiveDate> = h.drift.keys().copied().collect();
    let reports: Vec<_> = h.drift.values().collect();
    let index: Vec<BTreeMap<&str, &crate::drift::DriftRow>> = reports
        .iter()
        .map(|r| {
            r.rows
                .iter()
                .map(|row| (row.column.as_str(), row))
                .collect()
        })
        .collect();
    let cell = |i: usize, j: usize| {
        let r = index[j].get(features[i].as_str())?;
        Some(Heat {
            ratio: severity(r),
            flagged: r.drift_detected,
            title: format!(
                "{} on {}: {} {} (threshold {}){}",
                features[i],
                dates[j],
                r.method,
                number(Some(drawn_value(r).0)),
                number(Some(r.threshold)),
                if r.drift_detected { ", drift" } else { "" }
            ),
        })
    };
    let job = h.spec.name.clone();
    let href = move |f: &str| format!("{}?feature={}#feature", job_href(&job), query_value(f));
    // The chart's feature: the one asked for, else the one most often flagged.
    let chosen = query
        .feature
        .clone()
        .filter(|f| features.contains(f))
        .or_else(|| {
            features
                .iter()
                .max_by_key(|f| {
                    index
                        .iter()
                        .filter(|m| m.get(f.as_str()).is_some_and(|r| r.drift_detected))
                        .count()
                })
                .cloned()
        });
    html! {
        p.small.muted {
            "Each cell is a feature's drift statistic on a date, relative to its threshold: "
            "white is none, amber approaches it, red is past it. Outlined cells were flagged. "
            "A feature's name draws its line below."
        }
        div.card style="overflow-x:auto" { (svg::heatmap(&features, &dates, cell, href)) }
        @if let Some(f) = chosen {
            @let points: Vec<(usize, f64, &crate::drift::DriftRow)> = index.iter().enumerate()
                .filter_map(|(j, m)| m.get(f.as_str()).map(|r| (j, drawn_value(r).0, *r))).collect();
            @let what = points.first().map_or("statistic", |p| drawn_value(p.2).1);
            @let threshold = points.last().map(|p| p.2.threshold);
            div.card id="feature" {
                form method="get" action=(job_href(&h.spec.name)) {
                    "Feature "
                    select name="feature" {
                        @for x in &features { option value=(x) selected[*x == f] { (x) } }
                    }
                    " " button type="submit" { "Draw" }
                }
                p.small { strong { (f) } ": " (what) " by date" }
                (svg::line_chart(&dates, &[Series {
                    name: format!("{f} ({what})"),
                    colour: "#3d7fd9",
                    dashed: false,
                    points: points.iter().map(|p| (p.0, p.1)).collect(),
                }], &Guides {
                    lines: threshold.map(|t| (t, format!("threshold {}", number(Some(t))))).into_iter().collect(),
                    band: None,
                    markers: points.iter().filter(|p| p.2.drift_detected)
                        .map(|p| Marker { index: p.0, value: p.1, title: format!("{}: drift", dates[p.0]) }).collect(),
                }))
            }
        }
    }
}

fn query_value(s: &str) -> String {
    path_segment(s)
}

fn accuracy_section(h: &JobHistory, query: &JobQuery) -> Markup {
    if h.performance.is_empty() {
        return html! {
            p.muted {
                @if h.spec.labels.is_some() { "No evaluations yet." }
                @else { "The job has no [labels]: the scores are never checked against outcomes." }
            }
        };
    }
    let mut metrics: Vec<Metric> = Vec::new();
    for e in h.performance.values() {
        for m in &e.metrics {
            if !metrics.contains(&m.metric) {
                metrics.push(m.metric);
            }
        }
    }
    let metric = query
        .metric
        .as_deref()
        .and_then(|q| metrics.iter().find(|m| m.to_string() == q).copied())
        .or(metrics.first().copied());
    let Some(metric) = metric else {
        return html! { p.muted { "The evaluations hold no metric." } };
    };
    let dates: Vec<NaiveDate> = h.performance.keys().copied().collect();
    let rows: Vec<_> = h
        .performance
        .values()
        .map(|e| (e, e.metrics.iter().find(|m| m.metric == metric)))
        .collect();
    let realized: Vec<(usize, f64)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, (e, m))| {
            m.filter(|_| e.realized)
                .and_then(|m| m.value)
                .map(|v| (i, v))
        })
        .collect();
    let estimated: Vec<(usize, f64)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, (_, m))| m.and_then(|m| m.estimated).map(|v| (i, v)))
        .collect();
    let latest = rows.iter().rev().find_map(|(_, m)| *m);
    let holdout = latest.and_then(|m| m.holdout);
    let tolerance = latest.and_then(|m| m.tolerance);
    let limit = holdout.zip(tolerance).map(|(h, t)| {
        if metric.higher_is_better() {
            h - t
        } else {
            h + t
        }
    });
    let markers: Vec<Marker> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, (e, m))| {
            let m = m.filter(|m| m.degraded)?;
            let v = m.value.filter(|_| e.realized).or(m.estimated)?;
            Some(Marker {
                index: i,
                value: v,
                title: format!("{}: degraded", dates[i]),
            })
        })
        .collect();
    let mut lines = Vec::new();
    if let Some(hv) = holdout {
        lines.push((hv, format!("holdout {}", number(Some(hv)))));
    }
    if let Some(l) = limit {
        lines.push((l, format!("degraded beyond {}", number(Some(l)))));
    }
    html! {
        div.card {
            form method="get" action=(job_href(&h.spec.name)) {
                "Metric "
                select name="metric" {
                    @for m in &metrics { option value=(m) selected[*m == metric] { (m) } }
                }
                " " button type="submit" { "Draw" }
            }
            p.small.muted {
                "Realized once the labels arrive (solid), estimated from the scores before that (dashed, CBPE); "
                "the shaded band is the holdout value and the tolerance; circled dates are degraded."
            }
            (svg::line_chart(&dates, &[
                Series { name: format!("{metric} realized"), colour: "#1d2330", dashed: false, points: realized },
                Series { name: format!("{metric} estimated"), colour: "#3d7fd9", dashed: true, points: estimated },
            ], &Guides { lines, band: holdout.zip(limit), markers }))
        }
    }
}

fn volume_section(h: &JobHistory) -> Markup {
    let dates: Vec<NaiveDate> = h.runs.keys().copied().collect();
    if dates.is_empty() {
        return html! { p.muted { "No runs yet." } };
    }
    let counts: Vec<crate::score::Counts> = h.runs.values().map(|r| r.counts()).collect();
    let scored: Vec<u64> = counts.iter().map(|c| c.rows_scored).collect();
    let quarantined: Vec<u64> = counts.iter().map(|c| c.rows_quarantined).collect();
    let other: Vec<u64> = counts
        .iter()
        .map(|c| {
            c.rows_in
                .saturating_sub(c.rows_scored.saturating_add(c.rows_quarantined))
        })
        .collect();
    html! {
        div.card {
            p.small.muted { "Rows per date, from each date's latest run (all its shards): scored, quarantined, and read but neither (skipped)." }
            (svg::stacked_bars(&dates, &[
                ("scored", "#2e9d5b", scored),
                ("quarantined", "#d64545", quarantined),
                ("skipped", "#b8bec9", other),
            ]))
        }
    }
}

/// The date's committed `_SUCCESS`, if the run's output has one.
fn manifest(ui: &Ui, output: &str) -> Result<Option<RunManifest>> {
    let loc = ui.stores.locate(&Uri::parse(output)?)?.join(SUCCESS_MARKER);
    match loc.store.get(&loc.key) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A date's page: its latest run's record and story, every attempt, the committed files,
/// links to its reports, and the "run this date again" action.
pub fn date(ui: &Ui, session: &Session, spec: Arc<JobSpec>, date: NaiveDate) -> Result<Markup> {
    let name = spec.name.clone();
    let active = ui.activity.active(&name);
    let running = active.contains(&date);
    let h = data::job_history(
        spec.clone(),
        &ui.settings,
        &ui.stores,
        &ui.caches,
        Span::Date(date),
        active,
        Utc::now(),
    )?;
    let runs = h.runs.get(&date);
    let latest = runs.map(|r| r.latest());
    let committed = match latest.and_then(|r| r.output.as_deref()) {
        Some(o) => manifest(ui, o)?,
        None => None,
    };
    let has_drift = h.drift.contains_key(&date);
    let has_performance = h.performance.contains_key(&date);
    Ok(layout(
        &format!("{name} {date}"),
        html! {
            h1 { a href=(job_href(&name)) { (name) } " · " (date) " " (badge(h.status(date))) }
            @if running { p { "A run of this date is running or waiting now." } }
            @if let Some(r) = latest {
                (record(&spec, r))
            } @else {
                p.muted { "No run of this date yet." }
            }
            @if has_drift || has_performance {
                h2 { "Reports" }
                ul {
                    @if has_drift { li { a href={(date_href(&name, date)) "/drift"} { "Drift report" } } }
                    @if has_performance { li { a href={(date_href(&name, date)) "/performance"} { "Performance report" } } }
                }
            }
            @if let Some(m) = &committed {
                h2 { "Committed files (" (SUCCESS_MARKER) ", run " (m.run_id) ")" }
                table {
                    tr { th { "file" } th { "rows" } th { "bytes" } th { "input" } th { "quarantined" } }
                    @for f in &m.files {
                        tr {
                            td { code { (f.name) } } td.num { (f.rows) } td.num { (f.size) }
                            td.small { (f.input.uri) }
                            td.num { (f.rows_quarantined) }
                        }
                    }
                }
                p.small { "Quarantine: " code { (m.quarantine_prefix) } }
            }
            @if let Some(runs) = runs {
                h2 { "Runs of this date" }
                table {
                    tr { th { "run" } th { "status" } th { "started" } th { "took" } th { "model" } th { "rows in" } th { "error" } }
                    @for r in &runs.runs {
                        tr {
                            td { code { (r.run_id) } }
                            td { (badge(Some(data::run_status(&spec, r)))) }
                            td.small { (local(&spec, r.started_at)) }
                            td.num { (duration(r.seconds)) }
                            td { (r.model) }
                            td.num { (r.counts.rows_in) }
                            td.small { @if let Some(e) = &r.error { (first_line(e)) } }
                        }
                    }
                }
            }
            @if let Some(csrf) = &session.csrf {
                h2 { "Run this date again" }
                form.inline method="post" action={(date_href(&name, date)) "/run"} {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" { "Run " (date) " again" }
                }
            }
        },
    ))
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() > 160 {
        line.chars().take(159).chain(['…']).collect()
    } else {
        line.to_string()
    }
}

/// A run record as a story: outcome, error chain, stages, model, counts, where it wrote.
fn record(spec: &JobSpec, r: &RunRecord) -> Markup {
    html! {
        div.card {
            p {
                "Run " code { (r.run_id) } " " (badge(Some(data::run_status(spec, r))))
                " started " (local(spec, r.started_at)) ", took " (duration(r.seconds))
                @if let Some(s) = &r.date_state { ". The date's outputs: " (s) }
                "."
            }
            @if let Some(e) = &r.error {
                p { strong { "Error" } ", outermost first:" }
                pre.error { @for (i, part) in e.split(": ").enumerate() { (if i > 0 { "\n  caused by: " } else { "" }) (part) } }
            }
            @if let Some(why) = &r.no_drift_report { p.muted { "No drift report: " (why) } }
            @if !r.stages.is_empty() {
                table {
                    tr { @for s in &r.stages { th { (s.stage) } } }
                    tr { @for s in &r.stages { td.num { (duration(s.seconds)) } } }
                }
            }
            table {
                tr { th { "model" } td { (r.model) } }
                @if let Some(p) = &r.mlflow {
                    tr { th { "from MLflow" } td { (p.server) " · " (p.name) " version " (p.version)
                        @if let Some(a) = &p.alias { " (alias " (a) ")" } }
                    }
                    tr { th { "MLflow run" } td { code { (p.run_id) } " · source " code { (p.source) } } }
                }
                tr { th { "partitions" } td.num { (r.partitions) } }
                tr { th { "rows in" } td.num { (r.counts.rows_in) } }
                tr { th { "rows scored" } td.num { (r.counts.rows_scored) } }
                tr { th { "rows quarantined" } td.num { (r.counts.rows_quarantined) } }
                tr { th { "unknown categories" } td.num { (r.counts.unknown_categories) } }
                @if let Some(o) = &r.output { tr { th { "output" } td { code { (o) } } } }
                @if let Some(q) = &r.quarantine { tr { th { "quarantine" } td { code { (q) } } } }
                @if let Some(d) = &r.drift {
                    tr { th { "drift" } td class=(if d.drift_detected { "drift" } else { "ok" }) {
                        (if d.drift_detected { "detected" } else { "not detected" })
                        @if !d.drifted_columns.is_empty() { ": " (d.drifted_columns.join(", ")) }
                    } }
                }
            }
        }
    }
}

/// How a report that cannot be read is answered: 404 when it is not there, 503 otherwise.
fn not_there<'a>(
    what: &'a str,
    spec: &'a JobSpec,
    date: NaiveDate,
) -> impl Fn(anyhow::Error) -> Refusal + 'a {
    move |e| match ErrorKind::of(&e) {
        Some(ErrorKind::NotFound) => Refusal(
            StatusCode::NOT_FOUND,
            format!("no {what} report for {} on {date}", spec.name),
        ),
        _ => super::unavailable(e),
    }
}

/// A date's drift report: the verdicts and each column's histograms against the reference.
pub fn drift(ui: &Ui, spec: &JobSpec, date: NaiveDate) -> Result<Markup, Refusal> {
    let reports = ui
        .stores
        .locate(&ui.settings.reports)
        .map_err(super::unavailable)?;
    let loc = crate::drift::report::report_location(&reports, &spec.name, date);
    let report = crate::drift::report::read(&loc).map_err(not_there("drift", spec, date))?;
    let reference = reference(ui, spec, &report, &reports);
    let body = crate::drift::html::body_stored(&report, &reference, &reports);
    Ok(layout(
        &format!("drift {} {date}", spec.name),
        html! {
            h1 { a href=(job_href(&spec.name)) { (spec.name) } " · " a href=(date_href(&spec.name, date)) { (date) } " · drift" }
            p.small.muted { "Model " (report.context.model_name) "@" (report.context.model_version) ", run " (report.context.run_id) }
            (body)
        },
    ))
}

/// The reference a report was compared with, without loading or profiling anything: as the
/// run kept it beside the report, or (reports of older versions) the version's stored profile
/// in nightshift's registry. Reports of older versions whose reference was computed (`[model]
/// reference`, MLflow) get the table alone; `drift show --html` draws them.
fn reference(
    ui: &Ui,
    spec: &JobSpec,
    report: &crate::drift::report::Report,
    reports: &crate::storage::Location,
) -> Result<crate::profile::DatasetProfile> {
    let ctx = &report.context;
    let kept =
        crate::drift::report::reference_profile_location(reports, &ctx.job, ctx.logical_date);
    match kept.store.get(&kept.key) {
        Ok(bytes) => {
            return serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", kept.uri()))
        }
        Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => {}
        Err(e) => return Err(e),
    }
    let registry = match spec.registry(&ui.settings) {
        ModelRegistry::Store(uri) if spec.reference.is_none() => {
            crate::model::Registry::new(ui.stores.locate(&uri)?)
        }
        _ => anyhow::bail!(
            "this report's run kept no reference beside it and the job's reference is computed: \
             `nightshift drift show {} --date {} --html FILE` draws them",
            spec.name,
            ctx.logical_date
        ),
    };
    let manifest = registry.manifest(&crate::schema::ModelRef {
        name: ctx.model_name.clone(),
        version: ctx.model_version,
    })?;
    registry
        .profile(&manifest)?
        .ok_or_else(|| anyhow::anyhow!("the model version has no reference profile"))
}

/// A date's performance report and its reliability curve.
pub fn performance(ui: &Ui, spec: &JobSpec, date: NaiveDate) -> Result<Markup, Refusal> {
    let reports = ui
        .stores
        .locate(&ui.settings.reports)
        .map_err(super::unavailable)?;
    let loc = crate::performance::report::report_location(&reports, &spec.name, date);
    let e = crate::performance::report::read(&loc).map_err(not_there("performance", spec, date))?;
    Ok(layout(
        &format!("performance {} {date}", spec.name),
        html! {
            h1 { a href=(job_href(&spec.name)) { (spec.name) } " · " a href=(date_href(&spec.name, date)) { (date) } " · performance" }
            p.small.muted { (if e.realized { "Realized from the labels." } else { "Estimated from the scores (no labels joined yet)." }) }
            (crate::performance::render::body(&e))
        },
    ))
}

/// The model versions of every registry the jobs use, and which jobs pin each.
pub fn models(ui: &Ui) -> Markup {
    let jobs = ui.activity.jobs();
    let mut registries: BTreeMap<String, (ModelRegistry, Vec<Arc<JobSpec>>)> = BTreeMap::new();
    for j in &jobs {
        let r = j.registry(&ui.settings);
        let key = match &r {
            ModelRegistry::Store(u) => u.to_string(),
            ModelRegistry::Mlflow(s) => format!("mlflow+{s}"),
        };
        registries
            .entry(key)
            .or_insert_with(|| (r, Vec::new()))
            .1
            .push(j.clone());
    }
    if let std::collections::btree_map::Entry::Vacant(v) =
        registries.entry(ui.settings.registry.to_string())
    {
        v.insert((
            ModelRegistry::Store(ui.settings.registry.clone()),
            Vec::new(),
        ));
    }
    layout(
        "Models",
        html! {
            h1 { "Models" }
            @for (where_, (registry, jobs)) in &registries {
                h2 { (where_) }
                @match registry {
                    ModelRegistry::Store(uri) => (store_models(ui, uri, jobs)),
                    ModelRegistry::Mlflow(_) => {
                        p.small.muted { "An MLflow registry: the versions the jobs pin (MLflow's own page lists the rest)." }
                        table {
                            tr { th { "job" } th { "pins" } }
                            @for j in jobs { tr { td { a href=(job_href(&j.name)) { (j.name) } } td { (j.model) } } }
                        }
                    },
                }
            }
        },
    )
}

/// The jobs that pin a version by number.
fn pinned_by(jobs: &[Arc<JobSpec>], name: &str, version: u32) -> Vec<String> {
    jobs.iter()
        .filter(|j| j.model.name == name && j.model.version().is_some_and(|v| v.version == version))
        .map(|j| j.name.clone())
        .collect()
}

fn store_models(ui: &Ui, uri: &Uri, jobs: &[Arc<JobSpec>]) -> Markup {
    let listed = ui.stores.locate(uri).and_then(|loc| {
        let registry = crate::model::Registry::new(loc);
        let mut all = Vec::new();
        for name in registry.names()? {
            for version in registry.versions(&name)? {
                all.push(registry.manifest(&crate::schema::ModelRef {
                    name: name.clone(),
                    version,
                })?);
            }
        }
        Ok(all)
    });
    let versions = match listed {
        Ok(v) => v,
        Err(e) => return html! { pre.error { (format!("{e:#}")) } },
    };
    if versions.is_empty() {
        return html! { p.muted { "No model versions." } };
    }
    html! {
        table {
            tr { th { "version" } th { "algorithm or format" } th { "features" } th { "holdout metrics" } th { "pinned by" } }
            @for m in &versions {
                tr {
                    td { code { (m.name) "@" (m.version) } }
                    td {
                        (m.algorithm)
                        @if let Some(i) = &m.import { br; span.small.muted { (i.format) " file" @if let Some(p) = &i.producer { ", " (p) } } }
                    }
                    td.small {
                        (m.signature.len()) ": "
                        (m.signature.iter().take(12).map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "))
                        @if m.signature.len() > 12 { ", …" }
                    }
                    td.small {
                        (m.metrics.iter().map(|(k, v)| format!("{k} {}", number(Some(*v)))).collect::<Vec<_>>().join(", "))
                    }
                    td {
                        @for (i, j) in pinned_by(jobs, &m.name, m.version).iter().enumerate() {
                            @if i > 0 { ", " }
                            a href=(job_href(j)) { (j) }
                        }
                    }
                }
            }
        }
    }
}

/// The login form (with a message after a wrong token).
pub fn login(token_set: bool, message: Option<&str>) -> Markup {
    layout(
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if !token_set {
                p { "This server needs no token: " a href="/ui" { "go to the jobs" } "." }
            } @else {
                @if let Some(m) = message { p.drift { (m) } }
                form method="post" action="/ui/login" {
                    label { "API token " input type="password" name="token" autocomplete="current-password"; }
                    " " button type="submit" { "Sign in" }
                }
                p.small.muted { "The token the server was started with (NIGHTSHIFT_API_TOKEN). Tools can send it as HTTP Basic (any user name) or as a bearer token instead." }
            }
        },
    )
}

/// A page saying what went wrong.
pub fn problem(status: StatusCode, message: &str) -> Markup {
    layout(
        status.canonical_reason().unwrap_or("Error"),
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            pre.error { (message) }
            p { a href="/ui" { "Back to the jobs" } }
        },
    )
}
