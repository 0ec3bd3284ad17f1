//! A self-contained HTML page for one drift report: the verdicts as a table, and per column
//! the reference and current distributions overlaid (inline SVG, no scripts, no downloads).

use std::fmt::Write;

use anyhow::{Context, Result};

use super::render::{number, percent};
use super::report::{profile_location, Report};
use super::{DriftRow, DATASET_ROW};
use crate::model::ModelSource;
use crate::profile::{ColumnProfile, DatasetProfile, SCORE_COLUMN};
use crate::schema::ModelRef;
use crate::storage::Location;

const REFERENCE_COLOUR: &str = "#4C78A8";
const CURRENT_COLOUR: &str = "#F58518";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

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

fn svg(labels: &[String], reference: &[f64], current: &[f64]) -> String {
    let (w, h, pad) = (560.0, 180.0, 24.0);
    let n = labels.len().max(1) as f64;
    let max = reference
        .iter()
        .chain(current)
        .cloned()
        .fold(0.0_f64, f64::max)
        .max(1e-12);
    let bw = (w - 2.0 * pad) / n;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" role="img">"#,
        h + 30.0
    );
    for (i, label) in labels.iter().enumerate() {
        let x = pad + i as f64 * bw;
        for (share, colour, dx) in [
            (reference[i], REFERENCE_COLOUR, 0.0),
            (current[i], CURRENT_COLOUR, bw * 0.15),
        ] {
            let bh = share / max * (h - pad);
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{colour}" fill-opacity="0.6"><title>{}: {:.1}%</title></rect>"#,
                x + dx,
                h - bh,
                bw * 0.8,
                esc(label),
                share * 100.0
            );
        }
    }
    let _ = write!(
        s,
        r##"<line x1="{pad}" y1="{h}" x2="{}" y2="{h}" stroke="#888"/>"##,
        w - pad
    );
    if labels.len() <= 12 && !labels[0].contains(" to ") {
        // Categories: every bar gets its name.
        for (i, label) in labels.iter().enumerate() {
            let x = pad + (i as f64 + 0.5) * bw;
            let _ = write!(
                s,
                r##"<text x="{x:.1}" y="{}" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
                h + 16.0,
                esc(label)
            );
        }
    } else if let (Some(first), Some(last)) = (labels.first(), labels.last()) {
        let _ = write!(
            s,
            r##"<text x="{pad}" y="{}" font-size="11" fill="#555">{}</text>"##,
            h + 16.0,
            esc(first)
        );
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="11" fill="#555" text-anchor="end">{}</text>"##,
            w - pad,
            h + 16.0,
            esc(last)
        );
    }
    s.push_str("</svg>");
    s
}

/// The page of one report read back: the model version it names gives the reference profile,
/// and the run kept its current profile beside the report.
pub fn page(report: &Report, source: &ModelSource, reports: &Location) -> Result<String> {
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
    let title = format!("Drift: {} {} (model {model})", ctx.job, ctx.logical_date);
    Ok(render(&title, &report.rows, &reference, &current))
}

/// Renders the page. `title` names the job, date and run.
pub fn render(
    title: &str,
    rows: &[DriftRow],
    reference: &DatasetProfile,
    current: &DatasetProfile,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:right}}
td:first-child,th:first-child,td:nth-child(2),td:nth-child(3){{text-align:left}}
.drift{{color:#b00020;font-weight:600}}.ok{{color:#2e7d32}}
.cards{{display:flex;flex-wrap:wrap;gap:1rem}}.card{{border:1px solid #ddd;border-radius:6px;padding:.8rem}}
.legend span{{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;vertical-align:middle}}
</style></head><body><h1>{t}</h1>"#,
        t = esc(title)
    );
    if let Some(d) = rows.iter().find(|r| r.column == DATASET_ROW) {
        let _ = write!(
            s,
            r#"<p class="{}">Dataset drift: {} ({} of columns drifted; threshold {}). Reference rows: {}, current rows: {}.</p>"#,
            if d.drift_detected { "drift" } else { "ok" },
            if d.drift_detected {
                "detected"
            } else {
                "not detected"
            },
            percent(d.statistic, 0),
            percent(d.threshold, 0),
            d.reference_count,
            d.current_count
        );
    }
    s.push_str("<table><tr><th>column</th><th>type</th><th>method</th><th>statistic</th><th>p-value</th><th>threshold</th><th>drift</th><th>null rate (ref / cur)</th></tr>");
    for r in rows.iter().filter(|r| r.column != DATASET_ROW) {
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="{}">{}</td><td>{} / {}</td></tr>"#,
            esc(&r.column),
            r.column_type,
            r.method,
            number(Some(r.statistic)),
            number(r.p_value),
            number(Some(r.threshold)),
            if r.drift_detected { "drift" } else { "ok" },
            if r.drift_detected {
                "drift"
            } else {
                "no drift"
            },
            percent(r.reference_null_rate, 2),
            percent(r.current_null_rate, 2)
        );
    }
    s.push_str("</table>");
    let _ = write!(
        s,
        r#"<p class="legend"><span style="background:{REFERENCE_COLOUR}"></span>reference (training data)<span style="background:{CURRENT_COLOUR}"></span>current (this run)</p><div class="cards">"#
    );
    let pairs = reference
        .columns
        .iter()
        .filter_map(|r| current.column(&r.name).map(|c| (r, c)))
        .chain(reference.score.iter().zip(current.score.iter()));
    for (r, c) in pairs {
        let bars = distributions(r, c);
        let verdict = rows.iter().find(|row| row.column == r.name);
        let sampled = bars.sampled.map_or(String::new(), |n| {
            format!(
                "<p><small>current bars: a uniform sample of {n} of {} rows</small></p>",
                c.count
            )
        });
        let _ = write!(
            s,
            r#"<div class="card"><h3>{}{}</h3>{}{sampled}</div>"#,
            esc(if r.name == SCORE_COLUMN {
                "score (model output)"
            } else {
                &r.name
            }),
            verdict
                .map(|v| format!(
                    r#" <small class="{}">{} {}</small>"#,
                    if v.drift_detected { "drift" } else { "ok" },
                    v.method,
                    number(Some(v.statistic))
                ))
                .unwrap_or_default(),
            svg(&bars.labels, &bars.reference, &bars.current)
        );
    }
    s.push_str("</div></body></html>\n");
    s
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
