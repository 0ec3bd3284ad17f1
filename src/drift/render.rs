//! Drift reports as text for the terminal: one date's report (`drift show`) and the history
//! (`drift history`). [`number`] formats a statistic for these tables and the HTML page alike,
//! so a value reads the same in both.

use std::fmt::Write;

use chrono::NaiveDate;

use super::history::{sparkline, TrendRow};
use super::report::Report;
use super::DATASET_ROW;

/// A statistic, p-value or threshold: four decimals, or scientific notation where four
/// decimals would hide the value (below 0.001) or overflow an 11-character column (a million
/// and up); `-` where there is none or it could not be computed.
pub fn number(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() && v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) => {
            format!("{v:.3e}")
        }
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "-".into(),
    }
}

/// A share (0 to 1) as a percentage with `places` decimals.
pub fn percent(share: f64, places: usize) -> String {
    format!("{:.*}%", places, share * 100.0)
}

/// One date's report: a header naming the run, a line per column, the dataset verdict.
pub fn table(report: &Report) -> String {
    let ctx = &report.context;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "drift report: {} {} (run {}, model {}@{})",
        ctx.job, ctx.logical_date, ctx.run_id, ctx.model_name, ctx.model_version
    );
    let _ = writeln!(
        s,
        "{:<20} {:<12} {:<14} {:>11} {:>11} {:>10}  {:<6} NULLS REF -> CUR",
        "COLUMN", "TYPE", "METHOD", "STATISTIC", "P-VALUE", "THRESHOLD", "DRIFT"
    );
    let mut verdict = String::new();
    for r in &report.rows {
        if r.column == DATASET_ROW {
            verdict = format!(
                "dataset drift: {} ({} of columns drifted; threshold {})",
                if r.drift_detected {
                    "DETECTED"
                } else {
                    "not detected"
                },
                percent(r.statistic, 0),
                percent(r.threshold, 0)
            );
            continue;
        }
        let _ = writeln!(
            s,
            "{:<20} {:<12} {:<14} {:>11} {:>11} {:>10}  {:<6} {} -> {}",
            r.column,
            r.column_type,
            r.method,
            number(Some(r.statistic)),
            number(r.p_value),
            number(Some(r.threshold)),
            if r.drift_detected { "YES" } else { "no" },
            percent(r.reference_null_rate, 2),
            percent(r.current_null_rate, 2)
        );
    }
    let _ = writeln!(s, "{verdict}");
    s
}

/// The history of a job's reports over `dates`: a line per column and method with a sparkline.
pub fn history_table(job: &str, dates: &[NaiveDate], trend: &[TrendRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "drift history: {job}, {} dates from {} to {}",
        dates.len(),
        dates.first().map(NaiveDate::to_string).unwrap_or_default(),
        dates.last().map(NaiveDate::to_string).unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "{:<20} {:<12} {:<14} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9}  TREND",
        "COLUMN", "TYPE", "METHOD", "DATES", "DRIFTED", "FIRST", "LAST", "MAX", "CHANGE"
    );
    for t in trend {
        // Fixed decimals, unlike `number`: the columns of a trend compare at a glance.
        let _ = writeln!(
            s,
            "{:<20} {:<12} {:<14} {:>5} {:>7} {:>9.4} {:>9.4} {:>9.4} {:>+9.4}  {}",
            t.column,
            t.column_type,
            t.method,
            t.dates,
            t.drifted,
            t.first,
            t.last,
            t.max,
            t.change,
            sparkline(&t.values)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::report::ReportContext;
    use crate::drift::DriftRow;

    fn row(column: &str, column_type: &str, method: &str, statistic: f64) -> DriftRow {
        DriftRow {
            column: column.into(),
            column_type: column_type.into(),
            method: method.into(),
            statistic,
            p_value: None,
            threshold: 0.1,
            drift_detected: statistic >= 0.1,
            reference_count: 3200,
            current_count: 800,
            reference_null_rate: 0.0,
            current_null_rate: 0.0,
        }
    }

    #[test]
    fn numbers_read_the_same_small_large_and_missing() {
        assert_eq!(number(Some(0.0)), "0.0000");
        assert_eq!(number(Some(0.25)), "0.2500");
        assert_eq!(number(Some(0.000_42)), "4.200e-4");
        assert_eq!(number(Some(123_456.0)), "123456.0000");
        assert_eq!(number(Some(2_500_000.0)), "2.500e6");
        assert_eq!(number(Some(f64::NAN)), "-");
        assert_eq!(number(None), "-");
    }

    #[test]
    fn a_report_renders_as_a_table() {
        let report = Report {
            context: ReportContext {
                job: "churn".into(),
                logical_date: NaiveDate::from_ymd_opt(2026, 11, 3).unwrap(),
                run_id: "20261103T020000Z-abcd".into(),
                model_name: "churn".into(),
                model_version: 2,
                computed_at: chrono::DateTime::from_timestamp(1_793_671_200, 0).unwrap(),
            },
            rows: vec![
                DriftRow {
                    p_value: Some(0.000_012),
                    threshold: 0.05,
                    drift_detected: true,
                    current_null_rate: 0.011,
                    reference_null_rate: 0.0078,
                    ..row("monthly_charges", "numeric", "ks", 0.31)
                },
                DriftRow {
                    p_value: Some(0.0),
                    threshold: 0.05,
                    drift_detected: true,
                    ..row("plan", "categorical", "chisquare", 1_834_567.25)
                },
                row("tenure_months", "numeric", "wasserstein", 0.0193),
                DriftRow {
                    drift_detected: false,
                    ..row("unseen", "numeric", "wasserstein", f64::NAN)
                },
                row("score", "prediction", "wasserstein", 0.2729),
                DriftRow {
                    threshold: 0.5,
                    drift_detected: false,
                    ..row(
                        DATASET_ROW,
                        "dataset",
                        "share_of_drifted_columns",
                        2.0 / 6.0,
                    )
                },
            ],
        };
        insta::assert_snapshot!(table(&report));
    }
}
