//! Performance reports as text for the terminal (`evaluate`, `performance show`, `performance
//! history`) and as an HTML page; numbers are formatted as the drift tables format them.

use std::fmt::Write;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::Evaluation;
use crate::drift::render::{number, percent};
use crate::metric::Metric;

/// One date: the join's coverage, a line per metric against the holdout, the reliability
/// table, the verdict.
pub fn table(e: &Evaluation) -> String {
    let mut s = String::new();
    let c = &e.coverage;
    let _ = writeln!(
        s,
        "performance: {} {} (scores of run {}, model {}@{})",
        e.job, e.logical_date, e.run_id, e.model_name, e.model_version
    );
    if !e.realized {
        let _ = writeln!(
            s,
            "labels: not joined yet ({} scored rows); estimated from the calibrated scores (CBPE)",
            c.scored_rows
        );
    } else {
        let _ = writeln!(
        s,
        "labels: {} of {} scored rows labeled ({}); {} labels with no scored row; {} null labels{}",
        c.matched_rows,
        c.scored_rows,
        percent(c.labeled_share(), 1),
        c.unmatched_labels,
        c.null_labels,
        if e.labels_complete {
            ""
        } else {
            "; the labels' delay has not passed: they may be incomplete"
        }
    );
    }
    let _ = writeln!(
        s,
        "{:<10} {:>11} {:>11} {:>11} {:>11} {:>10}  DEGRADED",
        "METRIC", "REALIZED", "ESTIMATED", "HOLDOUT", "CHANGE", "TOLERANCE"
    );
    for m in &e.metrics {
        let change = m.value.zip(m.holdout).map(|(v, h)| v - h);
        let _ = writeln!(
            s,
            "{:<10} {:>11} {:>11} {:>11} {:>11} {:>10}  {}",
            m.metric.to_string(),
            number(m.value),
            number(m.estimated),
            number(m.holdout),
            number(change),
            number(m.tolerance),
            if m.degraded { "YES" } else { "no" }
        );
    }
    if !e.reliability.is_empty() {
        let _ = writeln!(
            s,
            "reliability (score range: rows, mean score -> positive rate):"
        );
        for b in &e.reliability {
            let _ = writeln!(
                s,
                "  {:.1}-{:.1}  {:>8}  {} -> {}",
                b.lower,
                b.upper,
                b.rows,
                number(Some(b.mean_score)),
                number(Some(b.positive_rate))
            );
        }
    }
    for n in &e.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let degraded = e.degraded();
    let _ = writeln!(
        s,
        "performance: {}",
        if !e.realized {
            "estimated only; `nightshift evaluate` measures it once the labels are in".to_string()
        } else if degraded.is_empty() {
            "within tolerance of the holdout".to_string()
        } else {
            format!(
                "DEGRADED ({})",
                degraded
                    .iter()
                    .map(Metric::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    s
}

/// Every evaluated date of a job, oldest first: one line each, the metrics as columns.
pub fn history_table(job: &str, all: &[Evaluation]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "performance history: {job} ({} dates)", all.len());
    let mut metrics: Vec<Metric> = all
        .iter()
        .flat_map(|e| e.metrics.iter().map(|m| m.metric))
        .collect();
    metrics.sort();
    metrics.dedup();
    let _ = write!(s, "{:<10} {:<10} {:>8}", "DATE", "MODEL", "LABELED");
    for m in &metrics {
        let _ = write!(s, " {:>10}", m.to_string());
    }
    let _ = writeln!(s, "  DEGRADED");
    for e in all {
        let _ = write!(
            s,
            "{:<10} {:<10} {:>8}",
            e.logical_date.to_string(),
            format!("{}@{}", e.model_name, e.model_version),
            percent(e.coverage.labeled_share(), 0)
        );
        for m in &metrics {
            let v = e
                .metrics
                .iter()
                .find(|r| r.metric == *m)
                .and_then(|r| r.value);
            let _ = write!(s, " {:>10}", number(v));
        }
        let degraded = e.degraded();
        let _ = writeln!(
            s,
            "  {}",
            if degraded.is_empty() {
                "-".to_string()
            } else {
                degraded
                    .iter()
                    .map(Metric::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }
        );
    }
    s
}

/// The page's styles, for the standalone page (the web UI has its own).
pub const STYLE: &str =
    "body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}\
td:first-child,th:first-child{text-align:left}tr.bad{background:#fdd}";

/// A self-contained page: the metrics table and the reliability diagram.
pub fn page(e: &Evaluation) -> String {
    let title = format!("{} {}", e.job, e.logical_date);
    let page = html! {
        (DOCTYPE)
        html {
            head { meta charset="utf-8"; title { "performance " (title) } style { (PreEscaped(STYLE)) } }
            body { h1 { (title) } (body(e)) }
        }
    };
    page.into_string() + "\n"
}

/// The metrics table and the reliability diagram (mean score against positive rate per bin;
/// the diagonal is perfect calibration).
pub fn body(e: &Evaluation) -> Markup {
    let c = &e.coverage;
    html! {
        p {
            "Scores of run " (e.run_id) ", model " (e.model_name) "@" (e.model_version) ". "
            (c.matched_rows) " of " (c.scored_rows) " scored rows labeled; " (c.unmatched_labels)
            " labels with no scored row; " (c.null_labels) " null labels."
            @if !e.labels_complete { " The labels' delay has not passed: they may be incomplete." }
        }
        table {
            tr { th { "metric" } th { "realized" } th { "estimated" } th { "holdout" } th { "change" } th { "tolerance" } th { "degraded" } }
            @for m in &e.metrics {
                tr class=[m.degraded.then_some("bad")] {
                    td { (m.metric) } td { (number(m.value)) } td { (number(m.estimated)) } td { (number(m.holdout)) }
                    td { (number(m.value.zip(m.holdout).map(|(v, h)| v - h))) } td { (number(m.tolerance)) }
                    td { (if m.degraded { "yes" } else { "no" }) }
                }
            }
        }
        @if !e.reliability.is_empty() { (reliability(e)) }
        @for n in &e.notes { p { "note: " (n) } }
    }
}

fn reliability(e: &Evaluation) -> Markup {
    let (w, h, pad) = (320.0, 320.0, 30.0);
    let x = |v: f64| pad + v * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v * (h - 2.0 * pad);
    let f = |v: f64| format!("{v:.1}");
    let points: Vec<String> = e
        .reliability
        .iter()
        .map(|b| format!("{:.1},{:.1}", x(b.mean_score), y(b.positive_rate)))
        .collect();
    html! {
        svg width=(w) height=(h) role="img" aria-label="reliability diagram" {
            line x1=(x(0.0)) y1=(y(0.0)) x2=(x(1.0)) y2=(y(1.0)) stroke="#999" stroke-dasharray="4" {}
            polyline points=(points.join(" ")) fill="none" stroke="#1f5fa8" stroke-width="2" {}
            @for b in &e.reliability {
                circle cx=(f(x(b.mean_score))) cy=(f(y(b.positive_rate))) r="3" fill="#1f5fa8" {
                    title {
                        (format!("{:.1}-{:.1}", b.lower, b.upper)) ": " (b.rows) " rows, mean score "
                        (number(Some(b.mean_score))) ", positive rate " (number(Some(b.positive_rate)))
                    }
                }
            }
            text x=(w / 2.0 - 25.0) y=(h - 8.0) font-size="11" { "mean score" }
            text x="4" y=(pad - 10.0) font-size="11" { "positive rate" }
        }
    }
}
