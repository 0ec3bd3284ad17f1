//! A self-contained HTML page for one drift report: the verdicts as a table, and per column
//! the reference and current distributions overlaid (inline SVG, no scripts, no downloads).

use anyhow::{Context, Result};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::render::{number, percent};
use super::report::{profile_location, Report};
use super::{DriftRow, DATASET_ROW};
use crate::model::ModelSource;
use crate::profile::{ColumnProfile, DatasetProfile, SCORE_COLUMN};
use crate::schema::ModelRef;
use crate::storage::Location;

const REFERENCE_COLOUR: &str = "#4C78A8";
const CURRENT_COLOUR: &str = "#F58518";

/// The bars of one column.
struct Bars {
    labels: Vec<String>,
    /// The reference's and the current data's share per bar.
    reference: Vec<f64>,
    current: Vec<f64>,
    /// The rows the current bars count, when they are a sample of the column's rows.
    sampled: Option<u64>,
}

/// Bars of one column: a histogram, or value counts where the histogram is missing, or only a
/// sample's picture while exact counts exist (few distinct numbers).
fn distributions(r: &ColumnProfile, c: &ColumnProfile) -> Bars {
    let share = |v: &[f64]| {
        let total: f64 = v.iter().sum();
        v.iter()
            .map(|x| if total > 0.0 { x / total } else { 0.0 })
            .collect::<Vec<_>>()
    };
    let histograms = match (&r.histogram, &c.histogram) {
        (Some(_), Some(ch)) if ch.from_sample && r.distinct().is_some() => None,
        (Some(rh), Some(ch)) => Some((rh, ch)),
        _ => None,
    };
    if let Some((rh, ch)) = histograms {
        let labels = rh
            .edges
            .windows(2)
            .map(|w| format!("{:.3} to {:.3}", w[0], w[1]))
            .collect();
        let rc: Vec<f64> = rh.counts.iter().map(|&x| x as f64).collect();
        let cc: Vec<f64> = ch.counts.iter().map(|&x| x as f64).collect();
        let drawn = ch.counts.iter().sum::<u64>();
        return Bars {
            labels,
            reference: share(&rc),
            current: share(&cc),
            sampled: (ch.from_sample && drawn > 0 && drawn < c.count).then_some(drawn),
        };
    }
    let mut labels: Vec<String> = r.values.counts.keys().cloned().collect();
    let mut rc: Vec<f64> = r.values.counts.values().map(|&x| x as f64).collect();
    let mut cc: Vec<f64> = labels
        .iter()
        .map(|k| c.values.counts.get(k).copied().unwrap_or(0) as f64)
        .collect();
    let known: f64 = cc.iter().sum();
    let other = c.count as f64 - known;
    if r.values.other > 0 || other > 0.0 {
        labels.push("(other)".into());
        rc.push(r.values.other as f64);
        cc.push(other.max(0.0));
    }
    Bars {
        labels,
        reference: share(&rc),
        current: share(&cc),
        sampled: None,
    }
}

fn svg(labels: &[String], reference: &[f64], current: &[f64]) -> Markup {
    let (w, h, pad) = (560.0, 180.0, 24.0);
    let n = labels.len().max(1) as f64;
    let max = reference
        .iter()
        .chain(current)
        .cloned()
        .fold(0.0_f64, f64::max)
        .max(1e-12);
    let bw = (w - 2.0 * pad) / n;
    let named = labels.len() <= 12 && !labels.first().is_some_and(|l| l.contains(" to "));
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(w) height=(h + 30.0) role="img" {
            @for (i, label) in labels.iter().enumerate() {
                @for (share, colour, dx) in [(at(reference, i), REFERENCE_COLOUR, 0.0), (at(current, i), CURRENT_COLOUR, bw * 0.15)] {
                    @let bh = share / max * (h - pad);
                    rect x=(f1(pad + i as f64 * bw + dx)) y=(f1(h - bh)) width=(f1(bw * 0.8)) height=(f1(bh))
                        fill=(colour) fill-opacity="0.6" {
                        title { (label) ": " (format!("{:.1}", share * 100.0)) "%" }
                    }
                }
            }
            line x1=(pad) y1=(h) x2=(w - pad) y2=(h) stroke="#888" {}
            @if named {
                // Categories: every bar gets its name.
                @for (i, label) in labels.iter().enumerate() {
                    text x=(f1(pad + (i as f64 + 0.5) * bw)) y=(h + 16.0) font-size="11" fill="#555" text-anchor="middle" { (label) }
                }
            } @else if let (Some(first), Some(last)) = (labels.first(), labels.last()) {
                text x=(pad) y=(h + 16.0) font-size="11" fill="#555" { (first) }
                text x=(w - pad) y=(h + 16.0) font-size="11" fill="#555" text-anchor="end" { (last) }
            }
        }
    }
}

/// A bar's share; none past the end (a current histogram with other edges than the
/// reference's draws no bar, rather than failing the page).
fn at(shares: &[f64], i: usize) -> f64 {
    shares.get(i).copied().unwrap_or(0.0)
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

/// The page of one report read back: the model version it names gives the reference profile,
/// and the run kept its current profile beside the report.
pub fn page(report: &Report, source: &ModelSource, reports: &Location) -> Result<String> {
    let ctx = &report.context;
    let title = format!(
        "Drift: {} {} (model {}@{})",
        ctx.job, ctx.logical_date, ctx.model_name, ctx.model_version
    );
    let (reference, current) = profiles(report, source, reports)?;
    Ok(render(&title, &report.rows, &reference, &current))
}

/// [`body`] of one report read back, for the web UI, with the reference profile it was
/// given: without the histograms (and saying why) when either profile cannot be read.
pub fn body_stored(
    report: &Report,
    reference: &Result<DatasetProfile>,
    reports: &Location,
) -> Markup {
    let ctx = &report.context;
    let loc = profile_location(reports, &ctx.job, ctx.logical_date);
    let current = loc.store.get(&loc.key).and_then(|b| {
        serde_json::from_slice::<DatasetProfile>(&b)
            .with_context(|| format!("reading {}", loc.uri()))
    });
    let why = match (reference, &current) {
        (Ok(reference), Ok(current)) => return body(&report.rows, Some((reference, current))),
        (Err(e), _) | (_, Err(e)) => format!("{e:#}"),
    };
    html! {
        (body(&report.rows, None))
        p.muted { "No histograms: " (why) }
    }
}

fn profiles(
    report: &Report,
    source: &ModelSource,
    reports: &Location,
) -> Result<(DatasetProfile, DatasetProfile)> {
    let ctx = &report.context;
    let model = ModelRef {
        name: ctx.model_name.clone(),
        version: ctx.model_version,
    };
    let reference = source
        .profile(&model)?
        .context("the model version has no reference profile")?;
    let loc = profile_location(reports, &ctx.job, ctx.logical_date);
    let current: DatasetProfile = serde_json::from_slice(&loc.store.get(&loc.key)?)
        .with_context(|| format!("reading {}", loc.uri()))?;
    Ok((reference, current))
}

/// The page's styles, for the standalone page (the web UI has its own).
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1rem 0}td,th{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child,td:nth-child(2),td:nth-child(3){text-align:left}
.drift{color:#b00020;font-weight:600}.ok{color:#2e7d32}
.cards{display:flex;flex-wrap:wrap;gap:1rem}.card{border:1px solid #ddd;border-radius:6px;padding:.8rem}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;vertical-align:middle}";

/// Renders the page. `title` names the job, date and run.
pub fn render(
    title: &str,
    rows: &[DriftRow],
    reference: &DatasetProfile,
    current: &DatasetProfile,
) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (title) } style { (PreEscaped(STYLE)) } }
            body { h1 { (title) } (body(rows, Some((reference, current)))) }
        }
    };
    page.into_string() + "\n"
}

/// The verdicts as a table, then per column the reference and current distributions (when the
/// profiles are given).
pub fn body(rows: &[DriftRow], profiles: Option<(&DatasetProfile, &DatasetProfile)>) -> Markup {
    let pairs: Vec<_> = match profiles {
        Some((reference, current)) => reference
            .columns
            .iter()
            .filter_map(|r| current.column(&r.name).map(|c| (r, c)))
            .chain(reference.score.iter().zip(current.score.iter()))
            .collect(),
        None => Vec::new(),
    };
    let verdict = |d: bool| if d { "drift" } else { "ok" };
    html! {
        @if let Some(d) = rows.iter().find(|r| r.column == DATASET_ROW) {
            p class=(verdict(d.drift_detected)) {
                "Dataset drift: " (if d.drift_detected { "detected" } else { "not detected" })
                " (" (percent(d.statistic, 0)) " of columns drifted; threshold " (percent(d.threshold, 0))
                "). Reference rows: " (d.reference_count) ", current rows: " (d.current_count) "."
            }
        }
        table {
            tr { th { "column" } th { "type" } th { "method" } th { "statistic" } th { "p-value" } th { "threshold" } th { "drift" } th { "null rate (ref / cur)" } }
            @for r in rows.iter().filter(|r| r.column != DATASET_ROW) {
                tr {
                    td { (r.column) } td { (r.column_type) } td { (r.method) }
                    td { (number(Some(r.statistic))) } td { (number(r.p_value)) } td { (number(Some(r.threshold))) }
                    td class=(verdict(r.drift_detected)) { (if r.drift_detected { "drift" } else { "no drift" }) }
                    td { (percent(r.reference_null_rate, 2)) " / " (percent(r.current_null_rate, 2)) }
                }
            }
        }
        @if !pairs.is_empty() {
            p.legend {
                span.key style={"background:" (REFERENCE_COLOUR)} {} "reference (training data)"
                span.key style={"background:" (CURRENT_COLOUR)} {} "current (this run)"
            }
        }
        div.cards {
            @for (r, c) in pairs {
                @let bars = distributions(r, c);
                div.card {
                    h3 {
                        (if r.name == SCORE_COLUMN { "score (model output)" } else { &r.name })
                        @if let Some(v) = rows.iter().find(|row| row.column == r.name) {
                            " " small class=(verdict(v.drift_detected)) { (v.method) " " (number(Some(v.statistic))) }
                        }
                    }
                    @if let Some(n) = bars.sampled {
                        p { small { "current bars: a uniform sample of " (n) " of " (c.count) " rows" } }
                    }
                    (svg(&bars.labels, &bars.reference, &bars.current))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array};

    use super::*;
    use crate::config::DriftSpec;
    use crate::drift::{compare, current_profile};
    use crate::profile::{reference_edges, ColumnPlan, ProfileBuilder, RowOrigin};
    use crate::schema::FeatureKind;

    fn data(n: usize, values: u32) -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(
            (0..n).map(|i| f64::from(i as u32 % values)),
        ))
    }

    #[test]
    fn sampled_bars_say_so_and_few_values_are_drawn_from_their_counts() {
        let plan = |name: &str, max: f64| ColumnPlan {
            name: name.into(),
            kind: FeatureKind::Numeric,
            edges: Some(reference_edges(0.0, max, 50_000)),
            known_values: None,
            count_values: true,
            exact_histogram: true,
        };
        let columns = |n| [("wide", data(n, 1000)), ("few", data(n, 3))];
        let add = |b: &mut ProfileBuilder, n| {
            let c = columns(n);
            let refs: Vec<(&str, &ArrayRef)> = c.iter().map(|(k, a)| (*k, a)).collect();
            b.add_columns(&refs, RowOrigin::new("x", 0)).unwrap();
        };
        let mut r = ProfileBuilder::new(vec![plan("wide", 999.0), plan("few", 2.0)], None);
        add(&mut r, 50_000);
        let reference = r.finish();
        let spec = DriftSpec::default();
        let mut c = current_profile(&reference, &spec, 40_000);
        add(&mut c, 40_000);
        let current = c.finish();
        assert!(
            current
                .column("few")
                .unwrap()
                .histogram
                .as_ref()
                .unwrap()
                .from_sample
        );
        let (rows, _) = compare(&reference, &current, &spec);
        let page = render("t", &rows, &reference, &current);
        assert_eq!(
            page.matches("a uniform sample of 10000 of 40000 rows")
                .count(),
            1,
            "only the wide column's bars are from the sample"
        );
        // The few-valued column is drawn from its exact counts: one bar per value.
        let bars = distributions(
            reference.column("few").unwrap(),
            current.column("few").unwrap(),
        );
        assert_eq!(bars.labels, ["0", "1", "2"]);
        assert!((bars.current.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
