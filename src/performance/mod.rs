//! Realized performance: a date's committed scores joined with its labels, once they arrive,
//! measured with the metrics of [`crate::metric`] and compared with the model version's
//! holdout metrics (docs/model-performance.md).
//!
//! Only a committed date is evaluated: its `_SUCCESS` names the output files and the model
//! version that wrote them, and nothing else under the prefix is read.

pub mod render;
pub mod report;

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Float64Type, SchemaRef};
use arrow::row::{RowConverter, SortField};
use arrow::util::display::array_value_to_string;
use chrono::{NaiveDate, Utc};

use crate::config::{JobSpec, LabelsSpec, Settings};
use crate::metric::{self, Metric, ReliabilityBin};
use crate::model::{ModelManifest, ModelSource};
use crate::read::{list_data_files, ParquetObject};
use crate::record::{RunManifest, SUCCESS_MARKER};
use crate::storage::{Location, Stores};

/// How the scores and the labels of a date met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coverage {
    /// Rows in the committed outputs.
    pub scored_rows: u64,
    /// Rows in the label files (null labels included).
    pub label_rows: u64,
    /// Label rows whose label is null: not outcomes yet, left out.
    pub null_labels: u64,
    /// Scored rows with a (non-null) label: the rows measured.
    pub matched_rows: u64,
    /// Labels with no scored row (for example rows the run quarantined).
    pub unmatched_labels: u64,
}

impl Coverage {
    /// The share of scored rows that have a label.
    pub fn labeled_share(&self) -> f64 {
        if self.scored_rows == 0 {
            0.0
        } else {
            self.matched_rows as f64 / self.scored_rows as f64
        }
    }
}

/// One metric of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub metric: Metric,
    /// `None` when the metric is undefined on these rows (AUC with one class).
    pub value: Option<f64>,
    /// The model version's value on its training holdout, when training measured it.
    pub holdout: Option<f64>,
    /// Estimated from the calibrated scores alone (CBPE), before or without the labels.
    pub estimated: Option<f64>,
    /// How much worse than the holdout a value may get (from `[labels.tolerance]`).
    pub tolerance: Option<f64>,
    /// Worse than the holdout by more than the tolerance.
    pub degraded: bool,
}

/// The realized performance of one committed date.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub job: String,
    pub logical_date: NaiveDate,
    /// The run whose committed scores were joined.
    pub run_id: String,
    pub model_name: String,
    pub model_version: u32,
    pub coverage: Coverage,
    /// Whether labels were joined: false for a report written by a run, with estimates only.
    pub realized: bool,
    pub metrics: Vec<MetricRow>,
    /// Binary classifiers: calibration by tenths of the score range.
    pub reliability: Vec<ReliabilityBin>,
    /// Whether the labels' delay had passed when the date was evaluated.
    pub labels_complete: bool,
    /// The label files joined (names, sizes, versions), hashed: the daemon evaluates a date
    /// again when they change.
    pub labels_fingerprint: Option<String>,
    /// What could not be computed and why (for example AUC with one class present).
    pub notes: Vec<String>,
}

impl Evaluation {
    pub fn degraded(&self) -> Vec<Metric> {
        self.metrics
            .iter()
            .filter(|m| m.degraded)
            .map(|m| m.metric)
            .collect()
    }
}

/// When a date's labels are complete: the end of the logical date (UTC) plus the delay.
pub fn labels_complete_at(labels: &LabelsSpec, date: NaiveDate) -> chrono::DateTime<Utc> {
    let end = date
        .succ_opt()
        .unwrap_or(date)
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    chrono::Duration::from_std(labels.delay)
        .ok()
        .and_then(|d| end.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}

/// For a job with `[mlflow]`: adds an evaluation's realized (and estimated) metrics to the
/// date's MLflow run, which the run logged when it committed. Best effort: a failure is a
/// warning; the report is written.
pub fn log_to_mlflow(job: &JobSpec, stores: &Stores, e: &Evaluation) {
    let Some(tracking) = &job.mlflow else {
        return;
    };
    let mut metrics = Vec::new();
    for row in &e.metrics {
        if let Some(v) = row.value.filter(|_| e.realized) {
            metrics.push((format!("realized_{}", row.metric), v));
        }
        if let Some(v) = row.estimated {
            metrics.push((format!("estimated_{}", row.metric), v));
        }
    }
    let degraded: Vec<String> = e.degraded().iter().map(ToString::to_string).collect();
    let tags = vec![("nightshift.degraded".to_string(), degraded.join(","))];
    let logged =
        crate::mlflow::tracking::Tracker::new(&tracking.server, &tracking.experiment, stores)
            .and_then(|t| {
                t.add_metrics(
                    &job.name,
                    &e.logical_date.to_string(),
                    &metrics,
                    &tags,
                    chrono::Utc::now().timestamp_millis(),
                )
            });
    match logged {
        Ok(Some(run)) => tracing::info!(mlflow_run = %run, "Performance logged to MLflow."),
        Ok(None) => {
            tracing::warn!(job = %job.name, date = %e.logical_date, "The date has no MLflow run to add its performance to.")
        }
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "Could not log the performance to MLflow.")
        }
    }
}

/// Joins the committed scores of `date` with its labels and measures them.
pub fn evaluate(
    job: &JobSpec,
    settings: &Settings,
    stores: &Stores,
    date: NaiveDate,
) -> Result<Evaluation> {
    let Some(labels) = &job.labels else {
        bail!(
            "job '{}' has no [labels] table ({}); see docs/model-performance.md",
            job.name,
            job.path.display()
        );
    };
    let output = stores.locate(&job.output.uri.uri(&job.name, date)?)?;
    let committed =
        committed_run(&output).with_context(|| format!("evaluating {} on {date}", job.name))?;
    let model =
        ModelSource::for_job(job, settings, stores)?.manifest(&crate::schema::ModelRef {
            name: committed.model_name.clone(),
            version: committed.model_version,
        })?;

    let key_columns = &labels.key;
    let scores = read_scores(&output, &committed, key_columns)?;
    let label_loc = stores.locate(&labels.uri.uri(&job.name, date)?)?;
    let label_files = list_data_files(&label_loc)?;
    let label_batch = read_labels(&label_loc, &label_files, labels, &scores.schema())?;
    let joined = join(&scores, &label_batch, labels)?;

    let mut notes = Vec::new();
    let measured = measure(&model, &scores, &label_batch, &joined, labels, &mut notes)?;
    let holdout = holdout_metrics(&model);
    let estimated = estimate_scores(&model, &scores)?;
    let metrics: Vec<MetricRow> = measured
        .values
        .into_iter()
        .map(|(metric, value)| {
            let base = holdout.get(&metric).copied();
            let tolerance = labels.tolerance.get(&metric).copied();
            let degraded = match (value, base, tolerance) {
                (Some(v), Some(b), Some(t)) => metric.worsening(b, v) > t,
                _ => false,
            };
            MetricRow {
                metric,
                value,
                holdout: base,
                estimated: estimated.as_ref().and_then(|e| e.get(metric)),
                tolerance,
                degraded,
            }
        })
        .collect();
    // An estimate far from what happened means the calibration learnt on the holdout no longer
    // holds: the relation between features and outcome moved (concept shift). Said, not hidden.
    let gaps: Vec<String> = metrics
        .iter()
        .filter_map(|m| {
            let (v, e) = (m.value?, m.estimated?);
            (m.metric.worsening(e, v) > ESTIMATE_GAP)
                .then(|| format!("{} {v:.4} against {e:.4}", m.metric))
        })
        .collect();
    if !gaps.is_empty() {
        notes.push(format!(
            "realized worse than estimated by more than {ESTIMATE_GAP} ({}): the scores' calibration no longer holds on this date (a concept shift?)",
            gaps.join(", ")
        ));
    }
    Ok(Evaluation {
        job: job.name.clone(),
        logical_date: date,
        run_id: committed.run_id,
        model_name: committed.model_name,
        model_version: committed.model_version,
        coverage: joined.coverage,
        realized: true,
        metrics,
        reliability: measured.reliability,
        labels_complete: Utc::now() >= labels_complete_at(labels, date),
        labels_fingerprint: Some(fingerprint(&label_loc, &label_files)),
        notes,
    })
}

/// The label files as listed (name, size, etag, modification time), hashed: equal
/// fingerprints, same labels.
fn fingerprint(loc: &Location, files: &[crate::storage::ObjectMeta]) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<String> = files
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {}",
                loc.relative(&f.key),
                f.size,
                f.etag,
                f.last_modified.map(|t| t.timestamp_micros()).unwrap_or(0)
            )
        })
        .collect();
    lines.sort();
    hex::encode(Sha256::digest(lines.join("\n").as_bytes()))
}

/// Why a date is (or is not) evaluated now by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Its labels' delay has not passed.
    Waiting,
    /// No `_SUCCESS` (not scored, or its run did not finish), or no label file yet.
    NothingToJoin,
    /// Its report is realized on these very scores and labels.
    UpToDate,
    /// To evaluate: no realized report yet, or the scores or the labels changed since. Holds
    /// what it would be evaluated on (the run and the labels' fingerprint).
    Now(String),
}

/// Whether the daemon should evaluate `date` of `job` at `now`.
pub fn due(
    job: &JobSpec,
    settings: &Settings,
    stores: &Stores,
    date: NaiveDate,
    now: chrono::DateTime<Utc>,
) -> Result<Due> {
    let Some(labels) = &job.labels else {
        return Ok(Due::NothingToJoin);
    };
    if now < labels_complete_at(labels, date) {
        return Ok(Due::Waiting);
    }
    let output = stores.locate(&job.output.uri.uri(&job.name, date)?)?;
    let marker = output.join(SUCCESS_MARKER);
    if marker.store.head(&marker.key)?.is_none() {
        return Ok(Due::NothingToJoin);
    }
    let committed = committed_run(&output)?;
    let label_loc = stores.locate(&labels.uri.uri(&job.name, date)?)?;
    let files = match list_data_files(&label_loc) {
        Ok(f) => f,
        Err(e)
            if crate::storage::ErrorKind::of(&e) == Some(crate::storage::ErrorKind::NotFound) =>
        {
            return Ok(Due::NothingToJoin)
        }
        Err(e) => return Err(e),
    };
    if files.is_empty() {
        return Ok(Due::NothingToJoin);
    }
    let reports = stores.locate(&settings.reports)?;
    let loc = report::report_location(&reports, &job.name, date);
    let fingerprint = fingerprint(&label_loc, &files);
    let key = format!("{} {fingerprint}", committed.run_id);
    if loc.store.head(&loc.key)?.is_none() {
        return Ok(Due::Now(key));
    }
    let Ok(last) = report::read(&loc) else {
        return Ok(Due::Now(key)); // unreadable: written again
    };
    let same = last.realized
        && last.labels_complete
        && last.run_id == committed.run_id
        && last.labels_fingerprint.as_deref() == Some(fingerprint.as_str());
    Ok(if same { Due::UpToDate } else { Due::Now(key) })
}

/// How much worse than its estimate a realized metric may be before a note says so.
pub const ESTIMATE_GAP: f64 = 0.05;

/// The estimated performance of a committed date, before its labels exist: what a run
/// records right after it commits (jobs with `[labels]`, binary classifiers whose version
/// stored a calibration). `None` when the model gives nothing to estimate from.
pub fn estimate(
    job: &JobSpec,
    settings: &Settings,
    stores: &Stores,
    date: NaiveDate,
) -> Result<Option<Evaluation>> {
    let output = stores.locate(&job.output.uri.uri(&job.name, date)?)?;
    let committed = committed_run(&output)?;
    let model =
        ModelSource::for_job(job, settings, stores)?.manifest(&crate::schema::ModelRef {
            name: committed.model_name.clone(),
            version: committed.model_version,
        })?;
    if !model.calibration.as_ref().is_some_and(|c| c.is_valid()) || model.classes.len() != 2 {
        return Ok(None);
    }
    let scores = read_scores(&output, &committed, &[])?;
    let Some(estimated) = estimate_scores(&model, &scores)? else {
        return Ok(None);
    };
    let holdout = holdout_metrics(&model);
    let tolerance = job.labels.as_ref().map(|l| &l.tolerance);
    let metrics = [
        Metric::RocAuc,
        Metric::Accuracy,
        Metric::Precision,
        Metric::Recall,
        Metric::F1,
    ]
    .into_iter()
    .map(|metric| MetricRow {
        metric,
        value: None,
        holdout: holdout.get(&metric).copied(),
        estimated: estimated.get(metric),
        tolerance: tolerance.and_then(|t| t.get(&metric).copied()),
        degraded: false,
    })
    .collect();
    Ok(Some(Evaluation {
        job: job.name.clone(),
        logical_date: date,
        run_id: committed.run_id,
        model_name: committed.model_name,
        model_version: committed.model_version,
        coverage: Coverage {
            scored_rows: scores.num_rows() as u64,
            ..Coverage::default()
        },
        realized: false,
        metrics,
        reliability: Vec::new(),
        labels_complete: false,
        labels_fingerprint: None,
        notes: Vec::new(),
    }))
}

/// Whether the date's committed scores are still run `run_id`'s (no later run replaced them).
pub fn is_run_of(job: &JobSpec, stores: &Stores, date: NaiveDate, run_id: &str) -> Result<bool> {
    let output = stores.locate(&job.output.uri.uri(&job.name, date)?)?;
    Ok(committed_run(&output)?.run_id == run_id)
}

/// CBPE over every scored row of the date: the scores through the version's calibration,
/// with the predictions the run wrote.
fn estimate_scores(
    model: &ModelManifest,
    scores: &RecordBatch,
) -> Result<Option<metric::Estimated>> {
    let Some(calibration) = model.calibration.as_ref().filter(|c| c.is_valid()) else {
        return Ok(None);
    };
    if model.classes.len() != 2 {
        return Ok(None);
    }
    let score = scores
        .column_by_name("score")
        .expect("read")
        .as_primitive::<Float64Type>();
    let prediction = scores
        .column_by_name("prediction")
        .ok_or_else(|| anyhow!("the scores of a classifier have no prediction column"))?;
    let prediction = cast(prediction, &DataType::Utf8)?;
    let prediction = prediction.as_string::<i32>();
    let p: Vec<f64> = score
        .values()
        .iter()
        .map(|&s| calibration.apply(s))
        .collect();
    let said: Vec<bool> = (0..prediction.len())
        .map(|i| prediction.value(i) == model.classes[1])
        .collect();
    Ok(metric::estimate_binary(&p, &said))
}

/// The date's `_SUCCESS`: only committed scores are evaluated.
fn committed_run(output: &Location) -> Result<RunManifest> {
    let marker = output.join(SUCCESS_MARKER);
    let bytes = match marker.store.get(&marker.key) {
        Ok(b) => b,
        Err(e)
            if crate::storage::ErrorKind::of(&e) == Some(crate::storage::ErrorKind::NotFound) =>
        {
            bail!(
                "no committed scores: {} is missing (the date was not scored, or its run did not finish)",
                marker.uri()
            )
        }
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes).with_context(|| format!("reading {}", marker.uri()))
}

/// The key columns, `score` and `prediction` (when there is one) of the files `_SUCCESS`
/// lists, as one batch.
fn read_scores(output: &Location, run: &RunManifest, key: &[String]) -> Result<RecordBatch> {
    let listed: HashMap<String, crate::storage::ObjectMeta> = list_data_files(output)?
        .into_iter()
        .map(|m| (output.relative(&m.key).to_string(), m))
        .collect();
    let mut batches = Vec::new();
    let mut schema: Option<SchemaRef> = None;
    for file in &run.files {
        let meta = listed.get(&file.name).cloned().ok_or_else(|| {
            anyhow!(
                "{} lists {} but the store does not have it",
                output.join(SUCCESS_MARKER).uri(),
                output.join(&file.name).uri()
            )
        })?;
        let obj = ParquetObject::open(output.join(&file.name), meta)?;
        let mut columns = key.to_vec();
        columns.push("score".to_string());
        if obj.schema().field_with_name("prediction").is_ok() {
            columns.push("prediction".to_string());
        }
        for c in key {
            if obj.schema().field_with_name(c).is_err() {
                bail!(
                    "scores {} have no column '{c}' (labels.key): was it a passthrough column when the date was scored?",
                    obj.uri()
                );
            }
        }
        for b in obj.read_all(&columns)? {
            schema.get_or_insert_with(|| b.schema());
            batches.push(b);
        }
    }
    let Some(schema) = schema else {
        bail!("the committed scores of {} have no rows", output.uri());
    };
    concat_batches(&schema, &batches).context("the output files have different schemas")
}

/// The key columns (cast to the scores' key types) and the label column of every label file.
fn read_labels(
    loc: &Location,
    files: &[crate::storage::ObjectMeta],
    labels: &LabelsSpec,
    scores: &SchemaRef,
) -> Result<RecordBatch> {
    if files.is_empty() {
        bail!("no label files (*.parquet) at {}", loc.uri());
    }
    let mut columns = labels.key.clone();
    columns.push(labels.column.clone());
    let mut batches = Vec::new();
    for obj in ParquetObject::open_all(loc, files)? {
        for c in &columns {
            if obj.schema().field_with_name(c).is_err() {
                bail!(
                    "label file {} has no column '{c}' (labels.{})",
                    obj.uri(),
                    if *c == labels.column { "column" } else { "key" }
                );
            }
        }
        for b in obj.read_all(&columns)? {
            // Keys as the scores have them, so that 7 (int32) meets 7 (int64).
            let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
            for c in &labels.key {
                let want = scores.field_with_name(c)?.data_type();
                let have = b.column_by_name(c).expect("projected");
                arrays.push(strict_cast(have, want).with_context(|| {
                    format!(
                        "label key '{c}' of {} is {}, the scores' is {want}",
                        obj.uri(),
                        have.data_type()
                    )
                })?);
            }
            arrays.push(b.column_by_name(&labels.column).expect("projected").clone());
            batches.push(arrays);
        }
    }
    let fields: Vec<arrow::datatypes::Field> = labels
        .key
        .iter()
        .map(|c| {
            scores
                .field_with_name(c)
                .map(|f| f.as_ref().clone().with_nullable(true))
        })
        .collect::<Result<_, _>>()?;
    let label_type = batches
        .first()
        .map(|a| a.last().expect("label column").data_type().clone())
        .unwrap_or(DataType::Null);
    let mut all_fields = fields;
    all_fields.push(arrow::datatypes::Field::new(
        &labels.column,
        label_type,
        true,
    ));
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(all_fields));
    let batches = batches
        .into_iter()
        .map(|a| RecordBatch::try_new(schema.clone(), a))
        .collect::<Result<Vec<_>, _>>()
        .context("label files have different schemas")?;
    concat_batches(&schema, &batches).context("label files have different schemas")
}

/// Scored row and label row of each matched pair, and the coverage.
struct Joined {
    pairs: Vec<(usize, usize)>,
    coverage: Coverage,
}

/// Joins by key. A key twice among the scores, or twice among the labels, is an error that
/// names examples: a join that silently picked one would measure the wrong rows.
fn join(scores: &RecordBatch, labels: &RecordBatch, spec: &LabelsSpec) -> Result<Joined> {
    let n_keys = spec.key.len();
    // The scores' key columns by name (the file has them in passthrough order); the labels'
    // are in key order already (`read_labels`).
    let score_keys: Vec<ArrayRef> = spec
        .key
        .iter()
        .map(|k| scores.column_by_name(k).expect("read").clone())
        .collect();
    let label_keys: Vec<ArrayRef> = labels.columns()[..n_keys].to_vec();
    let fields: Vec<SortField> = score_keys
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let score_rows = converter.convert_columns(&score_keys)?;
    let label_rows = converter.convert_columns(&label_keys)?;
    let label_values = labels.column(n_keys);
    // A null key identifies nothing: such rows join nothing (they would all be one key).
    let keyed = |keys: &[ArrayRef], row: usize| keys.iter().all(|k| k.is_valid(row));

    let show = |keys: &[ArrayRef], row: usize| -> String {
        keys.iter()
            .map(|c| array_value_to_string(c, row).unwrap_or_else(|_| "?".to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut by_key: HashMap<&[u8], usize> = HashMap::with_capacity(labels.num_rows());
    let mut duplicates = Vec::new();
    let mut null_labels = 0u64;
    for i in 0..labels.num_rows() {
        if is_missing(label_values, i) || !keyed(&label_keys, i) {
            null_labels += 1;
            continue;
        }
        if by_key.insert(label_rows.row(i).data(), i).is_some() {
            duplicates.push(show(&label_keys, i));
        }
    }
    if !duplicates.is_empty() {
        bail!(
            "{} label rows repeat a key ({}); each scored row must have one outcome. Examples: ({})",
            duplicates.len(),
            spec.key.join(", "),
            duplicates.iter().take(5).cloned().collect::<Vec<_>>().join("), (")
        );
    }
    let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(scores.num_rows());
    let mut dup_scores = Vec::new();
    let mut pairs = Vec::new();
    for i in 0..scores.num_rows() {
        if !keyed(&score_keys, i) {
            continue;
        }
        let key = score_rows.row(i).data();
        if seen.insert(key, i).is_some() {
            dup_scores.push(show(&score_keys, i));
            continue;
        }
        if let Some(&l) = by_key.get(key) {
            pairs.push((i, l));
        }
    }
    if !dup_scores.is_empty() {
        bail!(
            "{} scored rows repeat a key ({}), so a label cannot say which row it is for; choose labels.key columns that identify a row. Examples: ({})",
            dup_scores.len(),
            spec.key.join(", "),
            dup_scores.iter().take(5).cloned().collect::<Vec<_>>().join("), (")
        );
    }
    let matched = pairs.len() as u64;
    let labeled = labels.num_rows() as u64 - null_labels;
    Ok(Joined {
        coverage: Coverage {
            scored_rows: scores.num_rows() as u64,
            label_rows: labels.num_rows() as u64,
            null_labels,
            matched_rows: matched,
            unmatched_labels: labeled - matched,
        },
        pairs,
    })
}

/// A cast that fails on a value it cannot convert, where arrow's default makes it null (an id
/// "A-17" would otherwise become a null key, a label "abc" a missing value).
fn strict_cast(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    let strict = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    Ok(arrow::compute::cast_with_options(array, to, &strict)?)
}

/// An outcome that is not known: null, or NaN (as pandas writes a missing float).
fn is_missing(values: &ArrayRef, row: usize) -> bool {
    if values.is_null(row) {
        return true;
    }
    match values.data_type() {
        DataType::Float64 => values.as_primitive::<Float64Type>().value(row).is_nan(),
        DataType::Float32 => values
            .as_primitive::<arrow::datatypes::Float32Type>()
            .value(row)
            .is_nan(),
        _ => false,
    }
}

struct Measured {
    values: Vec<(Metric, Option<f64>)>,
    reliability: Vec<ReliabilityBin>,
}

/// The metrics of the matched rows, by the kind of model.
fn measure(
    model: &ModelManifest,
    scores: &RecordBatch,
    labels: &RecordBatch,
    joined: &Joined,
    spec: &LabelsSpec,
    notes: &mut Vec<String>,
) -> Result<Measured> {
    let score = scores
        .column_by_name("score")
        .expect("read")
        .as_primitive::<Float64Type>();
    let label = labels.column(spec.key.len());
    if joined.pairs.is_empty() {
        notes.push("no scored row has a label: no metric is defined".to_string());
    }
    if !model.is_classifier() {
        let values = strict_cast(label, &DataType::Float64).with_context(|| {
            format!(
                "label column '{}' must be numeric for a regressor",
                spec.column
            )
        })?;
        let values = values.as_primitive::<Float64Type>();
        // A value that reads as NaN ("NaN" as text) is not known either.
        let pairs: Vec<(usize, usize)> = joined
            .pairs
            .iter()
            .copied()
            .filter(|&(_, l)| !values.value(l).is_nan())
            .collect();
        if pairs.len() < joined.pairs.len() {
            notes.push(format!(
                "{} labels read as NaN: not measured",
                joined.pairs.len() - pairs.len()
            ));
        }
        let y: Vec<f64> = pairs.iter().map(|&(_, l)| values.value(l)).collect();
        let p: Vec<f64> = pairs.iter().map(|&(s, _)| score.value(s)).collect();
        let values = match metric::regression(&y, &p) {
            Some(m) => m.values(),
            None => none_of(&[Metric::Rmse, Metric::Mae, Metric::R2]),
        };
        return Ok(Measured {
            values,
            reliability: Vec::new(),
        });
    }

    // Classes by their text, as training knows them ("1", "true", "churned").
    let label_text = crate::model::class_texts(label, model.label_type)?;
    let class_of: HashMap<&str, usize> = model
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
    let mut y = Vec::with_capacity(joined.pairs.len());
    for &(_, l) in &joined.pairs {
        let text = label_text[l].as_deref().unwrap_or_default();
        match class_of.get(text) {
            Some(&c) => y.push(c),
            None => *unknown.entry(text.to_string()).or_default() += 1,
        }
    }
    if !unknown.is_empty() {
        bail!(
            "labels that are not classes of model {}@{} (classes: {}; labels are compared as text with the values training saw, so give the label column the training target's type): {}",
            model.name,
            model.version,
            model.classes.join(", "),
            unknown
                .iter()
                .take(5)
                .map(|(v, n)| format!("'{v}' ({n} rows)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let prediction = scores
        .column_by_name("prediction")
        .ok_or_else(|| anyhow!("the scores of a classifier have no prediction column"))?;
    let prediction = cast(prediction, &DataType::Utf8)?;
    let prediction = prediction.as_string::<i32>();
    let predicted = joined
        .pairs
        .iter()
        .map(|&(s, _)| {
            let text = prediction.value(s);
            class_of.get(text).copied().ok_or_else(|| {
                anyhow!(
                    "the scores predict '{text}', which is not a class of model {}@{}",
                    model.name,
                    model.version
                )
            })
        })
        .collect::<Result<Vec<usize>>>()?;

    if model.classes.len() == 2 {
        let truth: Vec<bool> = y.iter().map(|&c| c == 1).collect();
        let p: Vec<f64> = joined.pairs.iter().map(|&(s, _)| score.value(s)).collect();
        let said: Vec<bool> = predicted.iter().map(|&c| c == 1).collect();
        let Some(m) = metric::binary(&truth, &p, &said) else {
            return Ok(Measured {
                values: none_of(&[
                    Metric::RocAuc,
                    Metric::Accuracy,
                    Metric::Precision,
                    Metric::Recall,
                    Metric::F1,
                    Metric::LogLoss,
                    Metric::Brier,
                ]),
                reliability: Vec::new(),
            });
        };
        if m.roc_auc.is_none() {
            let only = if truth.first() == Some(&true) {
                &model.classes[1]
            } else {
                &model.classes[0]
            };
            notes.push(format!(
                "roc_auc is undefined: every labeled row is of class {only}"
            ));
        }
        return Ok(Measured {
            values: m.values(),
            reliability: metric::reliability(&truth, &p),
        });
    }
    let values = match metric::multiclass(&y, &predicted) {
        Some(m) => m.values(),
        None => none_of(&[Metric::Accuracy, Metric::MacroF1]),
    };
    Ok(Measured {
        values,
        reliability: Vec::new(),
    })
}

fn none_of(metrics: &[Metric]) -> Vec<(Metric, Option<f64>)> {
    metrics.iter().map(|&m| (m, None)).collect()
}

/// The version's holdout metrics by name (older versions wrote AUC as `auc`).
fn holdout_metrics(model: &ModelManifest) -> BTreeMap<Metric, f64> {
    model
        .metrics
        .iter()
        .filter_map(|(name, &v)| {
            let name = if name == "auc" {
                "roc_auc"
            } else {
                name.as_str()
            };
            Some((name.parse::<Metric>().ok()?, v))
        })
        .collect()
}
