//! `[labels]`: where a job's outcomes land, how they join its scores, when they are complete,
//! and how much worse than the model's holdout a metric may get before a date is flagged
//! (docs/model-performance.md).

use std::collections::BTreeMap;
use std::time::Duration;

use strum::VariantNames;

use super::daemon::parse_duration;
use super::diag::Reporter;
use super::file::{Located, Table};
use super::{read_template, UriTemplate};
use crate::metric::Metric;

#[derive(Debug, Clone)]
pub struct LabelsSpec {
    /// Where the outcomes of a logical date are: Parquet files under this prefix.
    pub uri: UriTemplate,
    /// The columns that join an outcome to a scored row: passthrough columns of the output.
    pub key: Vec<String>,
    /// The outcome column.
    pub column: String,
    /// How long after the logical date's end its labels are complete.
    pub delay: Duration,
    /// Per metric, how much worse than the holdout value it may get (in the metric's units)
    /// before the date is flagged as degraded. Metrics not listed are reported, not flagged.
    pub tolerance: BTreeMap<Metric, f64>,
}

/// The longest `delay`: ten years.
const MAX_DELAY: Duration = Duration::from_secs(3650 * 86_400);

/// The tolerances a job gets without a `[labels.tolerance]` entry.
pub fn default_tolerance() -> BTreeMap<Metric, f64> {
    [
        (Metric::RocAuc, 0.05),
        (Metric::Accuracy, 0.05),
        (Metric::F1, 0.05),
        (Metric::MacroF1, 0.05),
        (Metric::R2, 0.05),
    ]
    .into_iter()
    .collect()
}

/// `key` is one column or a list of them.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Columns {
    One(String),
    Many(Vec<String>),
}

/// Reads `[labels]`, if present, and where its `uri` is written. `passthrough` is the output's
/// (when it was read without errors): every key column must be one of them, since the join
/// reads keys from the scores.
pub(super) fn read_labels(
    rep: &mut Reporter,
    root: &mut Table<'_>,
    passthrough: Option<&[String]>,
) -> Option<Option<(LabelsSpec, std::ops::Range<usize>)>> {
    let Some(mut t) = root.table(rep, "labels") else {
        return Some(None);
    };
    let errors_before = rep.diagnostics.len();
    let uri: Option<Located<String>> = t.required(
        rep,
        "uri",
        " (where the outcomes of a date land, with {date})",
    );
    let uri_span = uri.as_ref().map(|u| u.span.clone());
    let uri = match uri {
        Some(u) if !u.value.contains("{date}") => {
            rep.error(
                u.span,
                "a labels location must contain {date}: the outcomes of each logical date are read from a prefix of their own",
            );
            None
        }
        u => read_template(rep, u, false),
    };
    let key = t
        .required::<Columns>(
            rep,
            "key",
            " (the column or columns that join an outcome to a scored row)",
        )
        .and_then(|k| {
            let columns = match k.value {
                Columns::One(c) => vec![c],
                Columns::Many(c) => c,
            };
            if columns.is_empty() {
                rep.error(k.span, "labels.key names no column");
                return None;
            }
            for (i, c) in columns.iter().enumerate() {
                if columns[..i].contains(c) {
                    rep.error(k.span.clone(), format!("labels key '{c}' is named twice"));
                }
            }
            if let Some(passthrough) = passthrough {
                for c in &columns {
                    if !passthrough.contains(c) {
                        rep.error(
                            k.span.clone(),
                            format!(
                                "labels key '{c}' is not a passthrough column of the output; the join reads keys from the scores, so add it to [output] passthrough (now: [{}])",
                                passthrough.join(", ")
                            ),
                        );
                    }
                }
            }
            Some(columns)
        });
    let column = t.required::<String>(rep, "column", " (the outcome column)");
    if let (Some(c), Some(k)) = (&column, &key) {
        if k.contains(&c.value) {
            rep.error(
                c.span.clone(),
                format!("the label column '{}' is also a key column", c.value),
            );
        }
    }
    let delay = match t.optional::<String>(rep, "delay") {
        None => Some(Duration::ZERO),
        Some(d) => match parse_duration(&d.value) {
            Some(v) if v <= MAX_DELAY => Some(v),
            Some(_) => {
                rep.error(d.span, "delay must be at most 3650d (ten years)");
                None
            }
            None => {
                rep.error(
                    d.span,
                    format!(
                        "invalid delay '{}'; use a whole number and a unit, such as \"7d\" or \"36h\"",
                        d.value
                    ),
                );
                None
            }
        },
    };
    let mut tolerance = default_tolerance();
    if let Some(mut tt) = t.table(rep, "tolerance") {
        for &name in Metric::VARIANTS {
            if let Some(v) = tt.optional::<f64>(rep, name) {
                if v.value.is_nan() || v.value < 0.0 {
                    rep.error(
                        v.span,
                        format!("tolerance of {name} must be 0 or more (inf never flags)"),
                    );
                }
                let metric = name.parse().expect("a listed name parses");
                tolerance.insert(metric, v.value);
            }
        }
        tt.finish(rep);
    }
    t.finish(rep);
    if rep.diagnostics.len() > errors_before {
        return None;
    }
    Some(Some((
        LabelsSpec {
            uri: uri?,
            key: key?,
            column: column?.value,
            delay: delay?,
            tolerance,
        },
        uri_span?,
    )))
}
