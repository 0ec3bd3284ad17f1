//! Drift: how the data a run scored differs from the data the model was trained on, and
//! whether the model's output moved.
//!
//! `crate::profile` summarises data sets in bounded memory (below this module, since training
//! builds profiles too); `stats` holds the statistics (checked
//! against scipy); this module picks a method per column as Evidently does and turns two
//! profiles into report rows; `report` writes and reads the report Parquet; `render` prints a
//! report and the history (`history`, with polars) for the terminal; `html` draws a report as a
//! page.

pub mod history;
pub mod html;
pub mod render;
pub mod report;
pub mod stats;

use serde::{Deserialize, Serialize};

use crate::config::{DriftSpec, Method};
use crate::profile::{ColumnPlan, ColumnProfile, DatasetProfile, ProfileBuilder};
use crate::schema::FeatureKind;

/// Reference row counts up to this use statistical tests; above it, distances.
const SMALL_REFERENCE_ROWS: u64 = 1_000;
/// Numeric columns with at most this many distinct values are compared as categories.
const FEW_VALUES: usize = 5;

/// Evidently's default method for a column, from the reference alone.
pub fn default_method(reference_rows: u64, column: &ColumnProfile) -> Method {
    let distinct = column.distinct();
    let few = |d: Option<usize>| d.is_some_and(|d| d <= FEW_VALUES);
    let categorical = column.kind == FeatureKind::Categorical || few(distinct);
    if reference_rows <= SMALL_REFERENCE_ROWS {
        if !categorical {
            Method::Ks
        } else if distinct.is_some_and(|d| d <= 2) {
            Method::Ztest
        } else {
            Method::Chisquare
        }
    } else if categorical {
        Method::Jensenshannon
    } else {
        Method::Wasserstein
    }
}

/// The method and threshold for a feature column: the job's choice, else Evidently's default.
fn feature_method(
    reference: &DatasetProfile,
    spec: &DriftSpec,
    r: &ColumnProfile,
) -> (Method, f64) {
    spec.choose(&r.name, r.kind, default_method(reference.rows, r))
}

/// The method for the model's scores: always Evidently's default.
fn score_method(reference: &DatasetProfile, r: &ColumnProfile) -> (Method, f64) {
    let method = default_method(reference.rows, r);
    (method, method.default_threshold())
}

/// Numeric columns with few distinct values are compared by their value counts.
fn as_categories(r: &ColumnProfile) -> bool {
    r.kind == FeatureKind::Categorical || r.distinct().is_some_and(|d| d <= FEW_VALUES)
}

/// Whether the comparison reads the histogram (counted over every row, then).
fn reads_histogram(r: &ColumnProfile, method: Method) -> bool {
    matches!(method, Method::Psi | Method::Jensenshannon) && !as_categories(r)
}

/// A builder for the profile of a run's data (`rows` of them in all) against `reference`:
/// histograms are counted over every row only for the columns whose method reads them; the
/// others get a picture binned from the sample, for the HTML page.
pub fn current_profile(reference: &DatasetProfile, spec: &DriftSpec, rows: u64) -> ProfileBuilder {
    let plan = |r: &ColumnProfile, (method, _): (Method, f64)| ColumnPlan {
        exact_histogram: reads_histogram(r, method),
        ..ColumnPlan::against(r)
    };
    ProfileBuilder::new(
        reference
            .columns
            .iter()
            .map(|r| plan(r, feature_method(reference, spec, r)))
            .collect(),
        reference
            .score
            .as_ref()
            .map(|r| plan(r, score_method(reference, r))),
    )
    .expecting_rows(rows)
}

/// One row of a drift report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftRow {
    pub column: String,
    /// `numeric`, `categorical`, `prediction` or `dataset`.
    pub column_type: String,
    pub method: String,
    pub statistic: f64,
    pub p_value: Option<f64>,
    pub threshold: f64,
    pub drift_detected: bool,
    pub reference_count: u64,
    pub current_count: u64,
    pub reference_null_rate: f64,
    pub current_null_rate: f64,
}

/// The outcome of comparing a run's data with the reference.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DriftSummary {
    /// Dataset drift: at least `drift_share` of the feature columns drifted.
    pub drift_detected: bool,
    pub drifted_columns: Vec<String>,
    /// Every feature column compared.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Whether the model's score distribution moved, if the reference has scores.
    pub prediction_drift: Option<bool>,
    pub share_of_drifted_columns: f64,
}

/// Name of the report row that holds the dataset-level verdict.
pub const DATASET_ROW: &str = "__dataset__";

/// Compares every feature column (and the scores) of `current` with `reference`.
pub fn compare(
    reference: &DatasetProfile,
    current: &DatasetProfile,
    spec: &DriftSpec,
) -> (Vec<DriftRow>, DriftSummary) {
    let mut rows = Vec::new();
    let mut drifted = Vec::new();
    for r in &reference.columns {
        let Some(c) = current.column(&r.name) else {
            continue;
        };
        let (method, threshold) = feature_method(reference, spec, r);
        let row = compare_column(r, c, method, threshold, kind_name(r.kind));
        if row.drift_detected {
            drifted.push(r.name.clone());
        }
        rows.push(row);
    }
    let prediction_drift = match (&reference.score, &current.score) {
        (Some(r), Some(c)) if c.count > 0 => {
            let (method, threshold) = score_method(reference, r);
            let row = compare_column(r, c, method, threshold, "prediction");
            let detected = row.drift_detected;
            rows.push(row);
            Some(detected)
        }
        _ => None,
    };
    let n = reference.columns.len().max(1) as f64;
    let share = drifted.len() as f64 / n;
    let drift_detected = !reference.columns.is_empty() && share >= spec.drift_share;
    rows.push(DriftRow {
        column: DATASET_ROW.to_string(),
        column_type: "dataset".to_string(),
        method: "share_of_drifted_columns".to_string(),
        statistic: share,
        p_value: None,
        threshold: spec.drift_share,
        drift_detected,
        reference_count: reference.rows,
        current_count: current.rows,
        reference_null_rate: 0.0,
        current_null_rate: 0.0,
    });
    let columns = reference
        .columns
        .iter()
        .filter(|r| current.column(&r.name).is_some())
        .map(|r| r.name.clone())
        .collect();
    (
        rows,
        DriftSummary {
            drift_detected,
            drifted_columns: drifted,
            columns,
            prediction_drift,
            share_of_drifted_columns: share,
        },
    )
}

fn kind_name(kind: FeatureKind) -> &'static str {
    match kind {
        FeatureKind::Numeric => "numeric",
        FeatureKind::Categorical => "categorical",
    }
}

/// Counts per category (reference categories, then everything else), for both profiles.
fn category_counts(r: &ColumnProfile, c: &ColumnProfile) -> (Vec<f64>, Vec<f64>) {
    let mut rc: Vec<f64> = r.values.counts.values().map(|&v| v as f64).collect();
    let mut cc: Vec<f64> = r
        .values
        .counts
        .keys()
        .map(|k| c.values.counts.get(k).copied().unwrap_or(0) as f64)
        .collect();
    let current_known: u64 = r
        .values
        .counts
        .keys()
        .filter_map(|k| c.values.counts.get(k))
        .sum();
    rc.push(r.values.other as f64);
    cc.push((c.count - current_known.min(c.count)) as f64);
    (rc, cc)
}

fn compare_column(
    r: &ColumnProfile,
    c: &ColumnProfile,
    method: Method,
    threshold: f64,
    column_type: &str,
) -> DriftRow {
    let binned = || match (&r.histogram, &c.histogram) {
        (Some(rh), Some(ch)) if reads_histogram(r, method) => (
            rh.counts.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            ch.counts.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        ),
        _ => category_counts(r, c),
    };
    let (statistic, p_value) = if r.count == 0 || c.count == 0 {
        (f64::NAN, None)
    } else {
        match method {
            Method::Ks => {
                let k = stats::ks_2samp(&r.sample, &c.sample);
                (k.statistic, Some(k.p_value))
            }
            Method::Wasserstein => (stats::normed_wasserstein(&r.sample, &c.sample), None),
            Method::Psi => {
                let (a, b) = binned();
                (stats::psi(&a, &b), None)
            }
            Method::Jensenshannon => {
                let (a, b) = binned();
                (stats::jensen_shannon_distance_base(&a, &b, 2.0), None)
            }
            Method::Chisquare => {
                let (a, b) = category_counts(r, c);
                let t = stats::chi_square(&a, &b);
                (t.statistic, Some(t.p_value))
            }
            Method::Ztest => {
                // Successes: the first reference value; everything else is the other outcome.
                let first = r.values.counts.keys().next();
                let rs = first
                    .and_then(|k| r.values.counts.get(k))
                    .copied()
                    .unwrap_or(0);
                let cs = first
                    .and_then(|k| c.values.counts.get(k))
                    .copied()
                    .unwrap_or(0);
                let t = stats::proportion_z_test(rs, r.count, cs, c.count);
                (t.statistic, Some(t.p_value))
            }
        }
    };
    let drift_detected = match p_value {
        Some(p) => p < threshold,
        None => statistic >= threshold,
    };
    DriftRow {
        column: r.name.clone(),
        column_type: column_type.to_string(),
        method: method.name().to_string(),
        statistic,
        p_value,
        threshold,
        drift_detected,
        reference_count: r.count,
        current_count: c.count,
        reference_null_rate: r.null_rate(),
        current_null_rate: c.null_rate(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array};

    use super::*;
    use crate::config::MethodChoice;
    use crate::profile::{reference_edges, RowOrigin};

    fn column(n: usize, shift: f64) -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(
            (0..n).map(|i| (i % 997) as f64 + shift),
        ))
    }

    #[test]
    fn only_the_columns_whose_method_reads_it_count_the_histogram_over_every_row() {
        let plan = |name: &str| ColumnPlan {
            name: name.into(),
            kind: FeatureKind::Numeric,
            edges: Some(reference_edges(0.0, 997.0, 50_000)),
            known_values: None,
            count_values: true,
            exact_histogram: true,
        };
        let (a, b) = (column(50_000, 0.0), column(50_000, 0.0));
        let mut r = ProfileBuilder::new(vec![plan("a"), plan("b")], None);
        r.add_columns(&[("a", &a), ("b", &b)], RowOrigin::new("training", 0))
            .unwrap();
        let reference = r.finish();
        // `b` is given psi; `a` keeps the default (wasserstein on a sample).
        let mut spec = DriftSpec::default();
        spec.columns.insert(
            "b".into(),
            MethodChoice {
                method: Some(Method::Psi),
                threshold: None,
            },
        );
        let (a, b) = (column(40_000, 300.0), column(40_000, 300.0));
        let mut c = current_profile(&reference, &spec, 40_000);
        c.add_columns(&[("a", &a), ("b", &b)], RowOrigin::new("day", 0))
            .unwrap();
        let current = c.finish();
        let hist = |name: &str| current.column(name).unwrap().histogram.clone().unwrap();
        assert!(hist("a").from_sample);
        assert_eq!(hist("a").counts.iter().sum::<u64>(), 10_000);
        assert!(!hist("b").from_sample);
        assert_eq!(hist("b").counts.iter().sum::<u64>(), 40_000);
        let (rows, _) = compare(&reference, &current, &spec);
        let row = |name: &str| rows.iter().find(|r| r.column == name).unwrap().clone();
        assert_eq!(row("a").method, "wasserstein");
        assert_eq!(row("b").method, "psi");
        assert!(row("a").drift_detected && row("b").drift_detected);
    }
}
