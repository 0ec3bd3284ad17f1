//! Models: preprocessing, linfa estimators, training, and the versioned registry.

mod estimator;
mod forest;
pub mod formats;
mod import;
mod kernel;
mod mlflow;
mod prediction;
mod preprocess;
mod registry;
mod source;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Float64Type};
use ndarray::{Array1, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

pub use estimator::{
    log_sum_exp, Algorithm, Estimator, Hyperparameters, Link, Prediction, Targets,
};
pub use forest::{Forest, ForestData, ForestParams, RandomForestModel, Tree};
pub use import::{import, ImportRequest};
pub use kernel::BatchScores;
pub use preprocess::{Encoded, FeatureTransform, FitOptions, Preprocessing};
pub use registry::{ImportInfo, LabelType, LoadedModel, ModelManifest, Registry, RegistryError};
pub use source::{ModelSource, Pinned};

use crate::profile::{
    reference_edges, ColumnPlan, DatasetProfile, ProfileBuilder, RowOrigin, SCORE_COLUMN,
};
use crate::read::{list_data_files, ParquetObject};
use crate::schema::{FeatureKind, SignatureField};
use crate::storage::Location;

/// A label column's values as the text of a model's classes (null stays `None`). Classes are
/// compared as text; where they are integers ("0", "1": every imported classifier's labels),
/// booleans are 1 and 0, as Python compares them. A float is not taken for an integer class
/// (1.0 stays "1.0", refused with its fix by the caller): an outcome is a class, not a value.
pub fn class_texts(
    column: &arrow::array::ArrayRef,
    label_type: LabelType,
) -> Result<Vec<Option<String>>> {
    let text = cast(column, &DataType::Utf8).context("label column as text")?;
    let text = text.as_string::<i32>();
    let integer = label_type == LabelType::Integer;
    let dt = column.data_type();
    Ok(text
        .iter()
        .map(|v| {
            v.map(|s| match dt {
                DataType::Boolean if integer => (if s == "true" { "1" } else { "0" }).to_string(),
                _ => s.to_string(),
            })
        })
        .collect())
}

/// What `model train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub data: Location,
    pub target: String,
    pub algorithm: Algorithm,
    pub name: String,
    /// Feature columns; `None` means every column but the target and `exclude`.
    pub features: Option<Vec<String>>,
    pub exclude: Vec<String>,
    /// Impute numeric nulls with the training mean (otherwise a null is a bad row).
    pub impute: bool,
    pub hyperparameters: Hyperparameters,
    /// Share of rows held out for metrics.
    pub holdout: f64,
}

impl LoadedModel {
    /// Scores encoded rows.
    pub fn predict(&self, x: ndarray::ArrayView2<f64>) -> Prediction {
        self.estimator.predict(x, self.manifest.classes.len())
    }
}

/// Reads the training data, fits preprocessing and the model on a seeded split, measures it on
/// the holdout, and registers it as a new version.
pub fn train(registry: &Registry, req: &TrainRequest) -> Result<ModelManifest> {
    Registry::check_name(&req.name)?;
    let (data, features) = read_training_data(req)?;
    let target = Target::read(&data, req)?;
    let (train_idx, holdout_idx) = split_rows(&target, data.num_rows(), req)?;
    let pick = |idx: &[u32]| take_record_batch(&data, &UInt32Array::from(idx.to_vec()));
    let train_batch = pick(&train_idx)?;
    let holdout_batch = pick(&holdout_idx)?;

    let prep = Preprocessing::fit(
        &train_batch,
        &features,
        FitOptions {
            impute: req.impute,
            scale: req.algorithm.wants_scaling(),
        },
    )?;
    let (x_train, y_train, good_train) =
        encode_good(&prep, &train_batch, target.targets(&train_idx))?;
    let (x_hold, y_hold, good_hold) =
        encode_good(&prep, &holdout_batch, target.targets(&holdout_idx))?;
    // Rows with no usable target, and rows the preprocessing cannot encode.
    let dropped = (data.num_rows() - good_train.len() - good_hold.len()) as u64;

    let n_classes = target.classes.len();
    let estimator = Estimator::fit(
        req.algorithm,
        x_train.clone(),
        y_train,
        &req.hyperparameters,
    )
    .with_context(|| format!("fitting {}", req.algorithm))?;
    let train_scores = estimator.predict(x_train.view(), n_classes).score;
    let signature: Vec<SignatureField> = prep
        .features
        .iter()
        .map(|f| SignatureField {
            name: f.name().to_string(),
            kind: f.kind(),
        })
        .collect();
    let profile = reference_profile(&train_batch, &signature, &train_scores, &good_train)?;
    let (metrics, calibration) = if x_hold.nrows() > 0 {
        let predicted = estimator.predict(x_hold.view(), n_classes);
        (
            estimator::metrics(&predicted, &y_hold)?
                .into_iter()
                .collect::<BTreeMap<String, f64>>(),
            calibrate(&predicted, &y_hold),
        )
    } else {
        (BTreeMap::new(), None)
    };

    let manifest = ModelManifest {
        name: req.name.clone(),
        version: 0,
        algorithm: req.algorithm,
        signature,
        preprocessing: prep,
        target: req.target.clone(),
        label_type: target.label_type,
        classes: target.classes,
        hyperparameters: req.hyperparameters.clone(),
        metrics,
        calibration,
        training_rows: x_train.nrows() as u64,
        holdout_rows: x_hold.nrows() as u64,
        dropped_rows: dropped,
        training_data: req.data.uri().to_string(),
        artifact: String::new(),
        artifact_sha256: String::new(),
        profile: None,
        profile_sha256: None,
        created_at: chrono::Utc::now(),
        nightshift_version: env!("CARGO_PKG_VERSION").to_string(),
        import: None,
    };
    registry.register(manifest, &estimator, Some(&profile))
}

/// Reads the feature and target columns of every training file into one batch, and the feature
/// names (given, or every column but the target and the excluded ones).
fn read_training_data(req: &TrainRequest) -> Result<(RecordBatch, Vec<String>)> {
    let files = list_data_files(&req.data)?;
    if files.is_empty() {
        bail!("no Parquet files at {}", req.data.uri());
    }
    // Each footer is read once, several at a time: the same helper a run uses.
    let objects = ParquetObject::open_all(&req.data, &files)?;
    let features = match &req.features {
        Some(f) => f.clone(),
        None => objects[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| *n != req.target && !req.exclude.contains(n))
            .collect(),
    };
    let mut columns = features.clone();
    columns.push(req.target.clone());
    let mut batches = Vec::new();
    for obj in &objects {
        batches.extend(obj.read_all(&columns)?);
    }
    let Some(batch_schema) = batches.first().map(|b| b.schema()) else {
        bail!("no rows in {}", req.data.uri());
    };
    let data =
        concat_batches(&batch_schema, &batches).context("training files have different schemas")?;
    for f in &features {
        let dt = data.column_by_name(f).expect("projected").data_type();
        if FeatureKind::of(dt).is_none() {
            bail!("feature column '{f}' has type {dt}, which no model takes; choose columns with --features or --exclude");
        }
    }
    Ok((data, features))
}

/// The target column: class labels (sorted, numerically for integers) for a classifier, values
/// for a regressor.
struct Target {
    label_type: LabelType,
    classifier: bool,
    /// The labels as text, null where missing.
    labels: arrow::array::ArrayRef,
    /// The classes, in the order of the model's outputs (classifiers only).
    classes: Vec<String>,
    /// The values, NaN where missing (regressors only).
    values: Vec<f64>,
}

impl Target {
    fn read(data: &RecordBatch, req: &TrainRequest) -> Result<Self> {
        let target = data.column_by_name(&req.target).expect("projected");
        let label_type = match target.data_type() {
            DataType::Boolean => LabelType::Boolean,
            dt if dt.is_integer() => LabelType::Integer,
            dt if dt.is_floating() => LabelType::Float,
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(_, _) => LabelType::String,
            dt => bail!("target column '{}' has type {dt}", req.target),
        };
        let labels = cast(target, &DataType::Utf8)?;
        let classifier = req.algorithm.is_classifier();
        let mut classes: Vec<String> = Vec::new();
        let mut values: Vec<f64> = Vec::new();
        if classifier {
            if label_type == LabelType::Float {
                bail!("target '{}' is floating point; a classifier needs integer, boolean or string labels", req.target);
            }
            let mut set: Vec<String> = labels
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect();
            set.sort();
            set.dedup();
            if label_type == LabelType::Integer {
                set.sort_by_key(|s| s.parse::<i64>().unwrap_or(0));
            }
            classes = set;
        } else {
            let v =
                cast(target, &DataType::Float64).context("a regression target must be numeric")?;
            values = v
                .as_primitive::<Float64Type>()
                .iter()
                .map(|x| x.unwrap_or(f64::NAN))
                .collect();
        }
        Ok(Target {
            label_type,
            classifier,
            labels,
            classes,
            values,
        })
    }

    /// Rows with a null target cannot be learned from.
    fn usable(&self, row: usize) -> bool {
        if self.classifier {
            self.labels.is_valid(row)
        } else {
            self.values[row].is_finite()
        }
    }

    fn targets(&self, idx: &[u32]) -> Targets {
        if self.classifier {
            let labels = self.labels.as_string::<i32>();
            let y = idx
                .iter()
                .map(|&i| {
                    self.classes
                        .binary_search_by(|c| {
                            cmp_label(c, labels.value(i as usize), self.label_type)
                        })
                        .unwrap_or(0)
                })
                .collect();
            Targets::Classes {
                y: Array1::from_vec(y),
                n_classes: self.classes.len(),
            }
        } else {
            Targets::Values(idx.iter().map(|&i| self.values[i as usize]).collect())
        }
    }
}

/// The seeded split of the usable rows: (training rows, holdout rows).
fn split_rows(target: &Target, rows: usize, req: &TrainRequest) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut order: Vec<u32> = (0..rows)
        .filter(|&i| target.usable(i))
        .map(|i| i as u32)
        .collect();
    order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(
        req.hyperparameters.seed,
    ));
    let n_holdout = ((order.len() as f64) * req.holdout).round() as usize;
    let (holdout_idx, train_idx) = order.split_at(n_holdout.min(order.len()));
    if train_idx.len() < 2 {
        bail!("too few usable training rows ({})", train_idx.len());
    }
    Ok((train_idx.to_vec(), holdout_idx.to_vec()))
}

/// A binary classifier's calibration on its holdout: at least 100 rows of both classes, so the
/// isotonic fit has something to stand on.
fn calibrate(predicted: &Prediction, y: &Targets) -> Option<crate::metric::Calibration> {
    let Targets::Classes { y, n_classes: 2 } = y else {
        return None;
    };
    let truth: Vec<bool> = y.iter().map(|&c| c == 1).collect();
    let positives = truth.iter().filter(|&&t| t).count();
    if truth.len() < 100 || positives == 0 || positives == truth.len() {
        return None;
    }
    crate::metric::Calibration::fit(&predicted.score, &truth)
}

/// The reference profile of the training rows and of the model's scores on them. Two passes
/// over data already in memory: the first finds each numeric column's range, the second
/// counts on fixed bins over it (the bins current data is counted on later).
fn reference_profile(
    batch: &RecordBatch,
    features: &[SignatureField],
    scores: &[f64],
    score_rows: &[usize],
) -> Result<DatasetProfile> {
    let origin = RowOrigin::new("training", 0);
    let columns: Vec<(&str, &arrow::array::ArrayRef)> = features
        .iter()
        .filter_map(|f| batch.column_by_name(&f.name).map(|c| (f.name.as_str(), c)))
        .collect();
    let plan = |name: &str, kind: FeatureKind, edges: Option<Vec<f64>>| ColumnPlan {
        name: name.to_string(),
        kind,
        edges,
        known_values: None,
        count_values: true,
        exact_histogram: true,
    };
    let build = |edges: &dyn Fn(&str) -> Option<Vec<f64>>| -> Result<DatasetProfile> {
        let mut b = ProfileBuilder::new(
            features
                .iter()
                .map(|f| plan(&f.name, f.kind, edges(&f.name)))
                .collect(),
            Some(plan(
                SCORE_COLUMN,
                FeatureKind::Numeric,
                edges(SCORE_COLUMN),
            )),
        );
        b.add_columns(&columns, origin)?;
        b.add_scores(scores, score_rows, origin);
        Ok(b.finish())
    };
    let first = build(&|_| None)?;
    let edges_of = |name: &str| {
        let c = if name == SCORE_COLUMN {
            first.score.as_ref()
        } else {
            first.column(name)
        }?;
        Some(reference_edges(c.min?, c.max?, c.count))
    };
    build(&edges_of)
}

fn cmp_label(a: &str, b: &str, t: LabelType) -> std::cmp::Ordering {
    match t {
        LabelType::Integer => a
            .parse::<i64>()
            .unwrap_or(0)
            .cmp(&b.parse::<i64>().unwrap_or(0)),
        _ => a.cmp(b),
    }
}

/// Encodes rows and drops the ones that cannot be used (NaN, infinity, null without imputer);
/// also returns the positions of the rows kept.
fn encode_good(
    prep: &Preprocessing,
    batch: &RecordBatch,
    targets: Targets,
) -> Result<(ndarray::Array2<f64>, Targets, Vec<usize>)> {
    let enc = prep.encode(batch)?;
    let good: Vec<usize> = (0..enc.bad.len())
        .filter(|&i| enc.bad[i].is_none())
        .collect();
    let x = enc.x.select(Axis(0), &good);
    let targets = match targets {
        Targets::Classes { y, n_classes } => Targets::Classes {
            y: y.select(Axis(0), &good),
            n_classes,
        },
        Targets::Values(y) => Targets::Values(y.select(Axis(0), &good)),
    };
    Ok((x, targets, good))
}
