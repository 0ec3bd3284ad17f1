//! Scoring a record batch with a loaded model: the batch's columns -> the model's scores, with
//! the rows that cannot be scored and why.
//!
//! Linear models (binary logistic, linear regression) are scored column by column straight
//! from the Arrow arrays: `intercept + sum of weight x value`, one pass over each column, no
//! feature matrix. Every other model gets the encoded feature matrix. Both paths apply the same
//! imputation, scaling and bad-row rules ([`FeatureTransform::numeric_values`]).

use std::collections::HashMap;

use anyhow::{Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use ndarray::{Array2, Axis};

use super::estimator::{Estimator, Link, Prediction};
use super::formats::{InputColumn, InputFeature, InputKind, Parsed, Task};
use super::preprocess::{FeatureTransform, Preprocessing};
use super::registry::LoadedModel;
use crate::schema::to_f64;

/// A batch's model output.
#[derive(Debug)]
pub struct BatchScores {
    /// Scores (and classes) of the good rows, in row order.
    pub prediction: Prediction,
    /// Positions of the good rows in the batch.
    pub good: Vec<usize>,
    /// Why each row cannot be scored, `None` for good rows.
    pub bad: Vec<Option<String>>,
    /// Categorical values (or nulls) not seen in training.
    pub unknown_categories: u64,
}

impl LoadedModel {
    /// Scores a batch whose feature columns were checked against the signature.
    pub fn score_batch(&self, batch: &RecordBatch) -> Result<BatchScores> {
        let prep = &self.manifest.preprocessing;
        let n = batch.num_rows();
        if let Estimator::Imported(parsed) = &self.estimator {
            return imported(parsed, batch);
        }
        if let Some((intercept, weights, link)) = self.estimator.linear_form() {
            let weights = weights
                .as_slice()
                .expect("fitted parameters are contiguous");
            return linear(prep, batch, intercept, weights, link);
        }
        if let Estimator::Prior { .. } = self.estimator {
            // No arithmetic and no inputs: the same answer for every row.
            let prediction = self.predict(Array2::<f64>::zeros((n, 0)).view());
            return Ok(BatchScores {
                prediction,
                good: (0..n).collect(),
                bad: vec![None; n],
                unknown_categories: 0,
            });
        }
        let enc = prep.encode(batch)?;
        let good: Vec<usize> = (0..n).filter(|&i| enc.bad[i].is_none()).collect();
        let prediction = if good.len() == n {
            self.predict(enc.x.view())
        } else {
            self.predict(enc.x.select(Axis(0), &good).view())
        };
        Ok(BatchScores {
            prediction,
            good,
            bad: enc.bad,
            unknown_categories: enc.unknown_categories,
        })
    }
}

/// An imported model's scores: each input column as the library reads it (numbers as doubles,
/// nulls as NaN; categories as pandas' training codes), then the compiled model. Missing
/// values are data to these models, so no row is bad here; a non-finite output still is
/// (`score` quarantines it).
fn imported(parsed: &Parsed, batch: &RecordBatch) -> Result<BatchScores> {
    let n = batch.num_rows();
    let mut unknown_categories = 0;
    let mut inputs = Vec::with_capacity(parsed.features.len());
    for f in &parsed.features {
        let col = batch
            .column_by_name(&f.name)
            .with_context(|| format!("no column '{}'", f.name))?;
        inputs.push(input_column(f, col, &mut unknown_categories)?);
    }
    let out = parsed.predict(&inputs, n);
    let prediction = match &parsed.task {
        Task::Classification { labels } => Prediction::from_proba(out, labels.len()),
        Task::Regression => Prediction {
            score: out,
            class: None,
            proba: None,
        },
    };
    Ok(BatchScores {
        prediction,
        good: (0..n).collect(),
        bad: vec![None; n],
        unknown_categories,
    })
}

/// One column as an imported model reads it.
fn input_column(
    f: &InputFeature,
    col: &ArrayRef,
    unknown_categories: &mut u64,
) -> Result<InputColumn> {
    let numbers = |col: &ArrayRef| -> Result<InputColumn> {
        let v = to_f64(col).with_context(|| format!("column '{}'", f.name))?;
        let v = v.as_primitive::<Float64Type>();
        Ok(InputColumn::Numbers(if v.null_count() == 0 {
            v.values().to_vec()
        } else {
            v.iter().map(|x| x.unwrap_or(f64::NAN)).collect()
        }))
    };
    match &f.kind {
        InputKind::Numeric | InputKind::Categorical { categories: None } => numbers(col),
        InputKind::Categorical {
            categories: Some(categories),
        } => {
            let codes: HashMap<&str, f64> = categories
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), i as f64))
                .collect();
            let strings = cast(col, &DataType::Utf8)?;
            let strings = strings.as_string::<i32>();
            Ok(InputColumn::Numbers(
                strings
                    .iter()
                    .map(|s| match s {
                        None => f64::NAN,
                        Some(s) => codes.get(s).copied().unwrap_or_else(|| {
                            *unknown_categories += 1;
                            f64::NAN
                        }),
                    })
                    .collect(),
            ))
        }
        InputKind::Text => {
            let strings = cast(col, &DataType::Utf8)?;
            Ok(InputColumn::Text(
                strings
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.map(str::to_string))
                    .collect(),
            ))
        }
    }
}

/// `link(intercept + weights . x)`, accumulated one feature column at a time. `weights` are in
/// encoded order: one per numeric feature, one per category of a categorical one.
fn linear(
    prep: &Preprocessing,
    batch: &RecordBatch,
    intercept: f64,
    weights: &[f64],
    link: Link,
) -> Result<BatchScores> {
    let n = batch.num_rows();
    let mut sum = vec![intercept; n];
    let mut bad: Vec<Option<String>> = vec![None; n];
    let mut unknown_categories = 0;
    let mut offset = 0;
    for f in &prep.features {
        let col = f.column(batch)?;
        let w = &weights[offset..offset + f.width()];
        match f {
            FeatureTransform::Numeric { .. } => {
                f.add_weighted(col, w[0], &mut sum, &mut bad)?;
            }
            FeatureTransform::Categorical { .. } => {
                unknown_categories += f.category_indices(col, |i, j| sum[i] += w[j])?;
            }
        }
        offset += f.width();
    }
    let good: Vec<usize> = (0..n).filter(|&i| bad[i].is_none()).collect();
    let prediction = match link {
        Link::Identity => Prediction {
            score: good.iter().map(|&i| sum[i]).collect(),
            class: None,
            proba: None,
        },
        Link::Logistic { flip } => {
            // As linfa computes it, so a score does not depend on the path that computed it.
            let score: Vec<f64> = good
                .iter()
                .map(|&i| {
                    let p = 1.0 / (1.0 + (-sum[i]).exp());
                    if flip {
                        1.0 - p
                    } else {
                        p
                    }
                })
                .collect();
            Prediction {
                class: Some(score.iter().map(|&s| usize::from(s >= 0.5)).collect()),
                proba: Some(score.iter().flat_map(|&s| [1.0 - s, s]).collect()),
                score,
            }
        }
    };
    Ok(BatchScores {
        prediction,
        good,
        bad,
        unknown_categories,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Algorithm, FitOptions, Targets};
    use arrow::array::{ArrayRef, Float64Array, StringArray};
    use std::sync::Arc;

    /// The column-by-column path gives the scores of the feature matrix path (to rounding: the
    /// sums are added in another order) and the same bad rows.
    #[test]
    fn linear_scores_equal_the_matrix_path() {
        let n = 500;
        let a: Vec<Option<f64>> = (0..n)
            .map(|i| match i % 97 {
                0 => None,
                1 => Some(f64::NAN),
                _ => Some((i as f64 * 0.37).sin() * 3.0),
            })
            .collect();
        let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
        let c: Vec<Option<&str>> = (0..n)
            .map(|i| match i % 5 {
                0 => Some("x"),
                1 => Some("y"),
                2 => None,
                3 => Some("never seen"),
                _ => Some("z"),
            })
            .collect();
        let batch = RecordBatch::try_from_iter([
            ("a", Arc::new(Float64Array::from(a)) as ArrayRef),
            ("b", Arc::new(Float64Array::from(b)) as ArrayRef),
            ("c", Arc::new(StringArray::from(c)) as ArrayRef),
        ])
        .unwrap();
        let names = ["a", "b", "c"].map(String::from);
        for algorithm in [Algorithm::Logistic, Algorithm::Linear] {
            let prep = Preprocessing::fit(
                &batch,
                &names,
                FitOptions {
                    impute: true,
                    scale: true,
                },
            )
            .unwrap();
            let enc = prep.encode(&batch).unwrap();
            let good: Vec<usize> = (0..n).filter(|&i| enc.bad[i].is_none()).collect();
            let x = enc.x.select(Axis(0), &good);
            let targets = match algorithm {
                Algorithm::Linear => {
                    Targets::Values(x.column(0).mapv(|v| 2.0 * v + 1.0) + x.column(1))
                }
                _ => Targets::Classes {
                    y: x.column(1).mapv(|v| usize::from(v > 0.2)),
                    n_classes: 2,
                },
            };
            let estimator =
                Estimator::fit(algorithm, x.clone(), targets, &Default::default()).unwrap();
            let n_classes = if algorithm == Algorithm::Linear { 0 } else { 2 };
            let want = estimator.predict(x.view(), n_classes);
            let (intercept, w, link) = estimator.linear_form().unwrap();
            let got = linear(&prep, &batch, intercept, w.as_slice().unwrap(), link).unwrap();
            assert_eq!(got.good, good);
            assert_eq!(got.bad, enc.bad);
            assert_eq!(got.unknown_categories, enc.unknown_categories);
            assert_eq!(got.prediction.class, want.class, "{algorithm}");
            for (g, w) in got.prediction.score.iter().zip(&want.score) {
                assert!(
                    (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "{algorithm}: {g} vs {w}"
                );
            }
        }
    }
}
