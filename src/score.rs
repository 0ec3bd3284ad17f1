//! Scoring one record batch: features -> preprocessing -> model -> the output batch, with the
//! rows that cannot be scored split off with their reasons.

use std::sync::Arc;

use anyhow::{bail, Result};
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};

use crate::config::BadRowPolicy;
use crate::model::{BatchScores, LabelType, LoadedModel, Prediction};

/// Row counts of a batch, a file or a run. Always `rows_in = rows_scored + rows_quarantined +
/// rows_skipped`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub rows_in: u64,
    pub rows_scored: u64,
    pub rows_quarantined: u64,
    pub rows_skipped: u64,
    /// Categorical values (or nulls) not seen in training, encoded as all zeros.
    pub unknown_categories: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.rows_in += o.rows_in;
        self.rows_scored += o.rows_scored;
        self.rows_quarantined += o.rows_quarantined;
        self.rows_skipped += o.rows_skipped;
        self.unknown_categories += o.unknown_categories;
    }

    pub fn bad_rows(&self) -> u64 {
        self.rows_quarantined + self.rows_skipped
    }
}

/// The result of scoring one input batch.
#[derive(Debug)]
pub struct ScoredBatch {
    pub output: RecordBatch,
    /// Bad rows with their reasons, when the policy is to quarantine them.
    pub quarantine: Option<RecordBatch>,
    pub counts: Counts,
    /// Positions (in the input batch) of the rows in `output`.
    pub rows: Vec<usize>,
}

/// Everything needed to score batches of one run; shared by the worker threads.
pub struct Scorer {
    pub model: Arc<LoadedModel>,
    pub passthrough: Vec<String>,
    pub run_id: String,
    pub scored_at: DateTime<Utc>,
    pub policy: BadRowPolicy,
    /// Whether the output has a `proba_<label>` column per class.
    probabilities: bool,
    output_schema: SchemaRef,
}

/// Where a batch came from, for quarantine rows and error messages.
pub struct BatchOrigin<'a> {
    pub uri: &'a str,
    /// Row number (0-based, within the object) of the batch's first row.
    pub first_row: u64,
}

impl Scorer {
    pub fn new(
        model: Arc<LoadedModel>,
        input_schema: &Schema,
        passthrough: Vec<String>,
        run_id: String,
        scored_at: DateTime<Utc>,
        policy: BadRowPolicy,
    ) -> Result<Self> {
        let mut fields: Vec<Field> = Vec::new();
        for p in &passthrough {
            fields.push(input_schema.field_with_name(p)?.clone());
        }
        fields.push(Field::new("score", DataType::Float64, false));
        if model.manifest.is_classifier() {
            fields.push(Field::new(
                "prediction",
                prediction_type(model.manifest.label_type),
                false,
            ));
        }
        fields.push(Field::new("model_name", DataType::Utf8, false));
        fields.push(Field::new("model_version", DataType::Int32, false));
        fields.push(Field::new("run_id", DataType::Utf8, false));
        fields.push(Field::new(
            "scored_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ));
        Ok(Self {
            model,
            passthrough,
            run_id,
            scored_at,
            policy,
            probabilities: false,
            output_schema: Arc::new(Schema::new(fields)),
        })
    }

    /// Adds one float64 column per class after `prediction`, `proba_<label>`, each class's
    /// probability (`[output] probabilities = true`). Refused for a regressor, and for a model
    /// that does not know its classes' probabilities.
    pub fn with_probabilities(mut self) -> Result<Self> {
        let m = &self.model.manifest;
        if !m.is_classifier() {
            bail!(
                "[output] probabilities = true: model {} is a regressor, which has no class \
                 probabilities",
                m.model_ref()
            );
        }
        if let crate::model::Estimator::Prior { shares: None, .. } = &self.model.estimator {
            if m.classes.len() > 2 {
                bail!(
                    "[output] probabilities = true: model {} was trained before nightshift kept \
                     a prior's class shares; train it again",
                    m.model_ref()
                );
            }
        }
        let mut fields: Vec<Field> = self
            .output_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let at = fields
            .iter()
            .position(|f| f.name() == "prediction")
            .expect("a classifier's output has a prediction")
            + 1;
        for (j, label) in m.classes.iter().enumerate() {
            let name = format!("proba_{label}");
            if self.passthrough.contains(&name) {
                bail!("passthrough column '{name}' has the name of a class probability column");
            }
            fields.insert(at + j, Field::new(name, DataType::Float64, false));
        }
        self.output_schema = Arc::new(Schema::new(fields));
        self.probabilities = true;
        Ok(self)
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    /// Columns to read from each input object: features, then passthrough (no duplicates).
    pub fn input_columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = self
            .model
            .manifest
            .signature
            .iter()
            .map(|f| f.name.clone())
            .collect();
        for p in &self.passthrough {
            if !cols.contains(p) {
                cols.push(p.clone());
            }
        }
        cols
    }

    pub fn score(&self, batch: &RecordBatch, origin: &BatchOrigin) -> Result<ScoredBatch> {
        let BatchScores {
            prediction,
            good,
            mut bad,
            unknown_categories,
        } = self.model.score_batch(batch)?;
        let n = batch.num_rows();
        let mut counts = Counts {
            rows_in: n as u64,
            unknown_categories,
            ..Counts::default()
        };
        let (prediction, good) = drop_non_finite(prediction, good, &mut bad);
        // After the model ran, so the first bad row is first in row order, whatever its reason.
        self.fail_on_bad_rows(&bad, origin)?;
        let n_bad = (n - good.len()) as u64;
        counts.rows_scored = good.len() as u64;

        let good_idx = UInt32Array::from(good.iter().map(|&i| i as u32).collect::<Vec<_>>());
        let rows = good.len();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for p in &self.passthrough {
            let col = batch
                .column_by_name(p)
                .expect("passthrough column was projected");
            columns.push(if n_bad == 0 {
                col.clone()
            } else {
                take(col, &good_idx, None)?
            });
        }
        columns.push(Arc::new(Float64Array::from(prediction.score)));
        if let Some(classes) = &prediction.class {
            columns.push(self.labels(classes)?);
        }
        if self.probabilities {
            let k = self.model.manifest.classes.len();
            let Some(proba) = &prediction.proba else {
                bail!("the model gave no class probabilities");
            };
            if proba.len() != rows * k {
                bail!(
                    "the model gave {} class probabilities for {rows} rows of {k} classes",
                    proba.len()
                );
            }
            for j in 0..k {
                columns.push(Arc::new(Float64Array::from_iter_values(
                    proba.iter().skip(j).step_by(k).copied(),
                )));
            }
        }
        let m = &self.model.manifest;
        columns.push(Arc::new(StringArray::from(vec![m.name.as_str(); rows])));
        columns.push(Arc::new(Int32Array::from(vec![m.version as i32; rows])));
        columns.push(Arc::new(StringArray::from(vec![
            self.run_id.as_str();
            rows
        ])));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(vec![self.scored_at.timestamp_micros(); rows])
                .with_timezone("UTC"),
        ));
        let output = RecordBatch::try_new(self.output_schema.clone(), columns)?;

        let quarantine = if n_bad > 0 && self.policy == BadRowPolicy::Quarantine {
            counts.rows_quarantined = n_bad;
            Some(self.quarantine_batch(batch, &bad, origin)?)
        } else {
            counts.rows_skipped = n_bad;
            None
        };
        Ok(ScoredBatch {
            output,
            quarantine,
            counts,
            rows: good,
        })
    }

    /// With `on_bad_rows = "fail"`, the first bad row ends the run.
    fn fail_on_bad_rows(&self, bad: &[Option<String>], origin: &BatchOrigin) -> Result<()> {
        if self.policy != BadRowPolicy::Fail {
            return Ok(());
        }
        if let Some(i) = bad.iter().position(Option::is_some) {
            bail!(
                "row {} of {} cannot be scored: {} (the job has on_bad_rows = \"fail\")",
                origin.first_row + i as u64,
                origin.uri,
                bad[i].as_deref().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Class indices as the training target's type.
    fn labels(&self, classes: &[usize]) -> Result<ArrayRef> {
        let labels = &self.model.manifest.classes;
        Ok(match self.model.manifest.label_type {
            LabelType::Integer => {
                let parsed: Vec<i64> =
                    labels.iter().map(|l| l.parse()).collect::<Result<_, _>>()?;
                Arc::new(Int64Array::from_iter_values(
                    classes.iter().map(|&c| parsed[c]),
                ))
            }
            LabelType::Boolean => Arc::new(BooleanArray::from(
                classes
                    .iter()
                    .map(|&c| labels[c] == "true")
                    .collect::<Vec<_>>(),
            )),
            LabelType::String | LabelType::Float => Arc::new(StringArray::from_iter_values(
                classes.iter().map(|&c| labels[c].as_str()),
            )),
        })
    }

    /// The bad rows: every input column read, plus why, where from, and which run.
    fn quarantine_batch(
        &self,
        batch: &RecordBatch,
        bad: &[Option<String>],
        origin: &BatchOrigin,
    ) -> Result<RecordBatch> {
        let idx: Vec<u32> = (0..bad.len())
            .filter(|&i| bad[i].is_some())
            .map(|i| i as u32)
            .collect();
        let take_idx = UInt32Array::from(idx.clone());
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| take(c, &take_idx, None))
            .collect::<Result<_, _>>()?;
        fields.push(Field::new("reason", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from_iter_values(
            idx.iter()
                .map(|&i| bad[i as usize].as_deref().unwrap_or_default()),
        )));
        fields.push(Field::new("source_file", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(vec![origin.uri; idx.len()])));
        fields.push(Field::new("source_row", DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from_iter_values(
            idx.iter().map(|&i| (origin.first_row + i as u64) as i64),
        )));
        fields.push(Field::new("run_id", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(vec![
            self.run_id.as_str();
            idx.len()
        ])));
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

/// Turns the rows whose model output is NaN or infinite into bad rows, with the value as the
/// reason: such an output is never written as a score. Returns the prediction and the input
/// positions of the rows that keep theirs.
fn drop_non_finite(
    prediction: Prediction,
    good: Vec<usize>,
    bad: &mut [Option<String>],
) -> (Prediction, Vec<usize>) {
    if prediction.score.iter().all(|s| s.is_finite()) {
        return (prediction, good);
    }
    let k = prediction
        .proba
        .as_ref()
        .map_or(0, |p| p.len() / prediction.score.len().max(1));
    let mut kept = Prediction {
        score: Vec::with_capacity(good.len()),
        class: prediction
            .class
            .as_ref()
            .map(|_| Vec::with_capacity(good.len())),
        proba: prediction
            .proba
            .as_ref()
            .map(|_| Vec::with_capacity(good.len() * k)),
    };
    let mut rows = Vec::with_capacity(good.len());
    for (j, (&s, &i)) in prediction.score.iter().zip(&good).enumerate() {
        if !s.is_finite() {
            bad[i] = Some(format!("the model returned a non-finite score ({s})"));
            continue;
        }
        kept.score.push(s);
        if let (Some(kept), Some(all)) = (&mut kept.class, &prediction.class) {
            kept.push(all[j]);
        }
        if let (Some(kept), Some(all)) = (&mut kept.proba, &prediction.proba) {
            kept.extend_from_slice(&all[j * k..(j + 1) * k]);
        }
        rows.push(i);
    }
    (kept, rows)
}

fn prediction_type(t: LabelType) -> DataType {
    match t {
        LabelType::Integer => DataType::Int64,
        LabelType::Boolean => DataType::Boolean,
        LabelType::String | LabelType::Float => DataType::Utf8,
    }
}
