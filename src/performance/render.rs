//! Performance reports as text for the terminal (`evaluate`, `performance show`, `performance
//! history`) and as an HTML page; numbers are formatted as the drift tables format them.

use std::fmt::Write;

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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained page: the metrics table and the reliability diagram (mean score against
/// positive rate per bin, the diagonal is perfect calibration).
pub fn page(e: &Evaluation) -> String {
    let mut rows = String::new();
    for m in &e.metrics {
        let change = m.value.zip(m.holdout).map(|(v, h)| v - h);
        let _ = writeln!(
            rows,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if m.degraded { " class=\"bad\"" } else { "" },
            m.metric,
            number(m.value),
            number(m.estimated),
            number(m.holdout),
            number(change),
            number(m.tolerance),
            if m.degraded { "yes" } else { "no" }
        );
    }
    let mut svg = String::new();
    if !e.reliability.is_empty() {
        let (w, h, pad) = (320.0, 320.0, 30.0);
        let x = |v: f64| pad + v * (w - 2.0 * pad);
        let y = |v: f64| h - pad - v * (h - 2.0 * pad);
        let _ = write!(
            svg,
            "<svg width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"reliability diagram\">\
             <line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4\"/>",
            x(0.0),
            y(0.0),
            x(1.0),
            y(1.0)
        );
        let points: Vec<String> = e
            .reliability
            .iter()
            .map(|b| format!("{:.1},{:.1}", x(b.mean_score), y(b.positive_rate)))
            .collect();
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"2\"/>",
            points.join(" ")
        );
        for b in &e.reliability {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1f5fa8\"><title>{:.1}-{:.1}: {} rows, mean score {}, positive rate {}</title></circle>",
                x(b.mean_score),
                y(b.positive_rate),
                b.lower,
                b.upper,
                b.rows,
                number(Some(b.mean_score)),
                number(Some(b.positive_rate))
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\">mean score</text>\
             <text x=\"4\" y=\"{}\" font-size=\"11\">positive rate</text></svg>",
            w / 2.0 - 25.0,
            h - 8.0,
            pad - 10.0
        );
    }
    let c = &e.coverage;
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>performance {job} {date}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}tr.bad{{background:#fdd}}</style></head><body>\
         <h1>{job} {date}</h1><p>Scores of run {run}, model {model}@{version}. {matched} of {scored} scored rows \
         labeled; {unmatched} labels with no scored row; {nulls} null labels.{incomplete}</p>\
         <table><tr><th>metric</th><th>realized</th><th>estimated</th><th>holdout</th><th>change</th><th>tolerance</th>\
         <th>degraded</th></tr>{rows}</table>{svg}{notes}</body></html>\n",
        job = escape(&e.job),
        date = e.logical_date,
        run = escape(&e.run_id),
        model = escape(&e.model_name),
        version = e.model_version,
        matched = c.matched_rows,
        scored = c.scored_rows,
        unmatched = c.unmatched_labels,
        nulls = c.null_labels,
        incomplete = if e.labels_complete {
            ""
        } else {
            " The labels' delay has not passed: they may be incomplete."
        },
        notes = e
            .notes
            .iter()
            .map(|n| format!("<p>note: {}</p>", escape(n)))
            .collect::<String>(),
    )
}
