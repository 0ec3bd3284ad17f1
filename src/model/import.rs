//! `model import`: a model file trained elsewhere becomes the next immutable version of a
//! name, as a trained one does. The file is parsed and compiled here once, to refuse what
//! nightshift cannot score before anything is registered; the registry keeps the original
//! bytes, which each load compiles again.
//!
//! With a reference data set, the version gets what training gives nightshift's own models:
//! the drift reference profile, and with a target column, holdout metrics and calibration.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Float64Type};
use bytes::Bytes;
use ndarray::Array1;

use super::estimator::{self, Algorithm, Estimator, Hyperparameters, Prediction, Targets};
use super::formats::{self, Format, InputKind, Label, Parsed, Task};
use super::preprocess::Preprocessing;
use super::registry::{ImportInfo, LabelType, LoadedModel, ModelManifest, Registry};
use super::{calibrate, reference_profile};
use crate::read::{list_data_files, ParquetObject};
use crate::schema::{FeatureKind, SignatureField};
use crate::storage::Location;

/// What `model import` was asked to do.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The model file.
    pub file: Location,
    pub name: String,
    /// The file's format; detected from its bytes when `None`.
    pub format: Option<Format>,
    /// The model's inputs, in order (required where the file does not name them).
    pub features: Option<Vec<String>>,
    /// Parquet data to profile as the drift reference.
    pub reference: Option<Location>,
    /// With `reference`: the column of true outcomes, for holdout metrics and calibration.
    pub target: Option<String>,
}

/// Reads, checks and compiles a model file, then registers it as the next version of
/// `req.name`.
pub fn import(registry: &Registry, req: &ImportRequest) -> Result<ModelManifest> {
    Registry::check_name(&req.name)?;
    if req.target.is_some() && req.reference.is_none() {
        bail!("--target needs --reference: the target column is read from the reference data");
    }
    let uri = req.file.uri();
    let bytes = req
        .file
        .store
        .get(&req.file.key)
        .with_context(|| format!("reading {uri}"))?;
    let format = match req.format {
        Some(f) => f,
        None => formats::detect(&bytes).with_context(|| format!("{uri}"))?,
    };
    let parsed = formats::parse(format, &bytes, req.features.as_deref())
        .with_context(|| format!("importing {uri} as a {format} model"))?;
    let mut manifest = imported_manifest(&req.name, format, uri.to_string(), &parsed);
    let profile = match &req.reference {
        None => None,
        Some(reference) => {
            let estimator = Estimator::Imported(Arc::new(parsed));
            let target = req.target.as_deref();
            Some(apply_reference(
                &mut manifest,
                &estimator,
                reference,
                target,
            )?)
        }
    };
    registry.register_imported(manifest, Bytes::from(bytes.to_vec()), profile.as_ref())
}

/// The manifest of a model file trained elsewhere, version 0 (the registry numbers it), before
/// any reference data: no metrics, no profile.
pub(crate) fn imported_manifest(
    name: &str,
    format: Format,
    source: String,
    parsed: &Parsed,
) -> ModelManifest {
    let shape = parsed.shape();
    let (label_type, classes) = match &parsed.task {
        Task::Regression => (LabelType::Float, Vec::new()),
        Task::Classification { labels } => (
            if labels.iter().all(|l| matches!(l, Label::Int(_))) {
                LabelType::Integer
            } else {
                LabelType::String
            },
            labels.iter().map(Label::to_string).collect(),
        ),
    };
    ModelManifest {
        name: name.to_string(),
        version: 0,
        algorithm: Algorithm::imported(format),
        signature: signature(parsed),
        preprocessing: Preprocessing {
            features: Vec::new(),
        },
        target: String::new(),
        label_type,
        classes,
        hyperparameters: Hyperparameters::default(),
        metrics: BTreeMap::new(),
        calibration: None,
        training_rows: 0,
        holdout_rows: 0,
        dropped_rows: 0,
        training_data: String::new(),
        artifact: String::new(),
        artifact_sha256: String::new(),
        profile: None,
        profile_sha256: None,
        created_at: chrono::Utc::now(),
        nightshift_version: env!("CARGO_PKG_VERSION").to_string(),
        import: Some(ImportInfo {
            format,
            source,
            producer: parsed.producer.clone(),
            objective: parsed.objective.clone(),
            features: parsed.features.clone(),
            trees: shape.trees,
            leaves: shape.leaves,
            max_depth: shape.max_depth,
            compiled_bytes: shape.compiled_bytes,
        }),
    }
}

/// Scores and profiles `reference` with the model (the drift reference), and with `target`
/// measures it there (holdout metrics, calibration); writes what it found into `manifest`.
pub(crate) fn apply_reference(
    manifest: &mut ModelManifest,
    estimator: &Estimator,
    reference: &Location,
    target: Option<&str>,
) -> Result<crate::profile::DatasetProfile> {
    let model = LoadedModel {
        manifest: manifest.clone(),
        estimator: estimator.clone(),
    };
    let profiled = profile_reference(&model, reference, target)?;
    manifest.target = target.unwrap_or_default().to_string();
    manifest.training_data = reference.uri().to_string();
    manifest.training_rows = profiled.rows;
    manifest.dropped_rows = profiled.dropped;
    manifest.holdout_rows = profiled.labelled;
    manifest.metrics = profiled.metrics;
    manifest.calibration = profiled.calibration;
    Ok(profiled.profile)
}

/// The columns a job must have for the model: kinds as `check_schema` reads them. A category
/// coded from strings (pandas' categories) wants a string column; one without a list takes
/// the integer codes themselves.
fn signature(parsed: &Parsed) -> Vec<SignatureField> {
    parsed
        .features
        .iter()
        .map(|f| SignatureField {
            name: f.name.clone(),
            kind: match f.kind {
                InputKind::Numeric | InputKind::Categorical { categories: None } => {
                    FeatureKind::Numeric
                }
                InputKind::Categorical {
                    categories: Some(_),
                }
                | InputKind::Text => FeatureKind::Categorical,
            },
        })
        .collect()
}

/// What profiling the reference data gave.
struct Profiled {
    profile: crate::profile::DatasetProfile,
    rows: u64,
    /// Rows whose score is not finite (left out of the profile's scores and the metrics).
    dropped: u64,
    /// Rows with a known outcome that the metrics were measured on.
    labelled: u64,
    metrics: BTreeMap<String, f64>,
    calibration: Option<crate::metric::Calibration>,
}

/// Scores the reference data with the model, profiles its features and scores as the drift
/// reference, and measures the model against `target` where given.
fn profile_reference(
    model: &LoadedModel,
    reference: &Location,
    target: Option<&str>,
) -> Result<Profiled> {
    let uri = reference.uri();
    let files = list_data_files(reference)?;
    if files.is_empty() {
        bail!("no Parquet files at {uri}");
    }
    let objects = ParquetObject::open_all(reference, &files)?;
    let mut columns: Vec<String> = model
        .manifest
        .signature
        .iter()
        .map(|f| f.name.clone())
        .collect();
    if let Some(t) = target {
        if !columns.iter().any(|c| c == t) {
            columns.push(t.to_string());
        }
    }
    for obj in &objects {
        crate::read::check_schema(obj.schema(), &model.manifest.signature, &[], &obj.uri())?;
    }
    let mut batches = Vec::new();
    for obj in &objects {
        batches.extend(obj.read_all(&columns)?);
    }
    let Some(schema) = batches.first().map(|b| b.schema()) else {
        bail!("no rows in {uri}");
    };
    let data =
        concat_batches(&schema, &batches).context("reference files have different schemas")?;
    let scored = model.score_batch(&data)?;
    let finite: Vec<usize> = (0..scored.good.len())
        .filter(|&j| scored.prediction.score[j].is_finite())
        .collect();
    let rows: Vec<usize> = finite.iter().map(|&j| scored.good[j]).collect();
    let scores: Vec<f64> = finite.iter().map(|&j| scored.prediction.score[j]).collect();
    let profile = reference_profile(&data, &model.manifest.signature, &scores, &rows)?;
    let (labelled, metrics, calibration) = match target {
        None => (0, BTreeMap::new(), None),
        Some(t) => measure(model, &data, t, &scored.prediction, &scored.good)?,
    };
    Ok(Profiled {
        profile,
        rows: data.num_rows() as u64,
        dropped: (data.num_rows() - rows.len()) as u64,
        labelled,
        metrics,
        calibration,
    })
}

/// The holdout metrics (and, for binary classifiers, the calibration) of the model's
/// predictions on the rows whose outcome in `target` is known and whose score is finite.
fn measure(
    model: &LoadedModel,
    data: &RecordBatch,
    target: &str,
    prediction: &Prediction,
    good: &[usize],
) -> Result<(
    u64,
    BTreeMap<String, f64>,
    Option<crate::metric::Calibration>,
)> {
    let column = data
        .column_by_name(target)
        .with_context(|| format!("the reference data has no target column '{target}'"))?;
    let m = &model.manifest;
    // Positions in `prediction` of the rows measured, and their outcomes.
    let mut kept = Vec::new();
    let targets = if m.is_classifier() {
        let labels = super::class_texts(column, m.label_type)
            .with_context(|| format!("target column '{target}' is not a class label"))?;
        let mut y = Vec::new();
        for (j, &row) in good.iter().enumerate() {
            let class = labels[row]
                .as_deref()
                .and_then(|l| m.classes.iter().position(|c| c == l));
            if let (Some(c), true) = (class, prediction.score[j].is_finite()) {
                kept.push(j);
                y.push(c);
            }
        }
        Targets::Classes {
            y: Array1::from_vec(y),
            n_classes: m.classes.len(),
        }
    } else {
        let values = cast(column, &DataType::Float64)
            .with_context(|| format!("target column '{target}' is not numeric"))?;
        let values = values.as_primitive::<Float64Type>();
        let mut y = Vec::new();
        for (j, &row) in good.iter().enumerate() {
            if values.is_valid(row)
                && values.value(row).is_finite()
                && prediction.score[j].is_finite()
            {
                kept.push(j);
                y.push(values.value(row));
            }
        }
        Targets::Values(Array1::from_vec(y))
    };
    if kept.is_empty() {
        bail!("no row of the reference data has a known outcome in '{target}' and a score");
    }
    let k = m.classes.len();
    let picked = Prediction {
        score: kept.iter().map(|&j| prediction.score[j]).collect(),
        class: prediction
            .class
            .as_ref()
            .map(|c| kept.iter().map(|&j| c[j]).collect()),
        proba: prediction.proba.as_ref().map(|p| {
            kept.iter()
                .flat_map(|&j| p[j * k..(j + 1) * k].iter().copied())
                .collect()
        }),
    };
    let metrics = estimator::metrics(&picked, &targets)?.into_iter().collect();
    let calibration = calibrate(&picked, &targets);
    Ok((kept.len() as u64, metrics, calibration))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int8Array, StringArray};

    use super::super::class_texts;
    use super::LabelType;

    /// Found in review: an imported binary model's classes are "0" and "1", and labels kept as
    /// booleans did not match them. Floats stay refused (the caller says to give the labels
    /// the target's type).
    #[test]
    fn booleans_are_integer_classes_and_floats_are_not() {
        let cases: [(ArrayRef, LabelType, [Option<&str>; 3]); 4] = [
            (
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
                LabelType::Integer,
                [Some("1"), Some("0"), None],
            ),
            (
                Arc::new(Float64Array::from(vec![Some(1.0), Some(0.5), None])),
                LabelType::Integer,
                [Some("1.0"), Some("0.5"), None],
            ),
            (
                Arc::new(Int8Array::from(vec![Some(1), Some(0), None])),
                LabelType::Integer,
                [Some("1"), Some("0"), None],
            ),
            (
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
                LabelType::Boolean,
                [Some("true"), Some("false"), None],
            ),
        ];
        for (column, label_type, want) in cases {
            let got = class_texts(&column, label_type).unwrap();
            let want: Vec<Option<String>> = want.iter().map(|w| w.map(String::from)).collect();
            assert_eq!(got, want, "{:?}", column.data_type());
        }
        let text: ArrayRef = Arc::new(StringArray::from(vec!["churned"]));
        assert_eq!(
            class_texts(&text, LabelType::String).unwrap(),
            [Some("churned".to_string())]
        );
    }
}
