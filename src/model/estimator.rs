//! The fitted models nightshift can train and score, all from linfa, all plain data (serde):
//! loading an artifact cannot run code.

use anyhow::{anyhow, bail, Result};
use linfa::prelude::*;
use linfa_bayes::{GaussianNb, NaiveBayes};
use linfa_linear::{FittedLinearRegression, LinearRegression};
use linfa_logistic::{
    FittedLogisticRegression, LogisticRegression, MultiFittedLogisticRegression,
    MultiLogisticRegression,
};
use linfa_trees::DecisionTree;
use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use super::forest::{Forest, ForestParams, RandomForestModel};
use super::formats::{Format, Parsed};
use crate::metric;

/// The algorithms `model train --algorithm` takes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Algorithm {
    /// Logistic regression: binary, or multinomial for more than two classes.
    Logistic,
    /// One CART decision tree (Gini).
    DecisionTree,
    /// Bagged CART trees (Gini), each on a bootstrap sample, drawing sqrt(features) at each
    /// split; the score is the mean of the leaves' class proportions (docs/models.md).
    RandomForest,
    /// Ordinary least squares regression.
    Linear,
    /// Gaussian naive Bayes.
    GaussianNb,
    /// No model: every row gets the training prior (the positive class's share for binary
    /// targets, the most frequent class's otherwise), as scikit-learn's `DummyClassifier(strategy=
    /// "prior")`. A baseline to compare a model with, and the benchmark's I/O floor: it reads
    /// the same columns and writes the same outputs, with no arithmetic in between. It reads
    /// no feature value, so no row is bad for it: NaN or null features are scored, not
    /// quarantined.
    Prior,
    /// A LightGBM text model, imported (`model import`), not trained here.
    Lightgbm,
    /// An XGBoost JSON or UBJSON model, imported.
    Xgboost,
    /// An ONNX model (skl2onnx, onnxmltools), imported.
    Onnx,
}

impl Algorithm {
    /// What `model train --algorithm` offers: every algorithm but the imported formats.
    pub const TRAINABLE: [Algorithm; 6] = [
        Algorithm::Logistic,
        Algorithm::DecisionTree,
        Algorithm::RandomForest,
        Algorithm::Linear,
        Algorithm::GaussianNb,
        Algorithm::Prior,
    ];

    /// The algorithm a version imported from a file of this format is listed under.
    pub fn imported(format: Format) -> Self {
        match format {
            Format::Lightgbm => Algorithm::Lightgbm,
            Format::Xgboost => Algorithm::Xgboost,
            Format::Onnx => Algorithm::Onnx,
        }
    }

    pub fn is_classifier(self) -> bool {
        !matches!(self, Algorithm::Linear)
    }

    /// Whether inputs are standardised before fitting (helps the optimiser; trees and naive
    /// Bayes do not need it).
    pub fn wants_scaling(self) -> bool {
        matches!(self, Algorithm::Logistic | Algorithm::Linear)
    }
}

/// Hyperparameters, with defaults close to scikit-learn's where linfa allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub max_depth: Option<usize>,
    pub trees: usize,
    pub max_iterations: u64,
    pub seed: u64,
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Self {
            max_depth: Some(10),
            trees: 100,
            max_iterations: 100,
            seed: 42,
        }
    }
}

/// A fitted model. Classes are indices into the manifest's class labels.
///
/// Adjacently tagged: an internally tagged enum would buffer the content and lose serde_json's
/// integer map keys (naive Bayes keys its classes by index).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "algorithm", content = "fitted", rename_all = "kebab-case")]
pub enum Estimator {
    Logistic {
        model: FittedLogisticRegression<f64, usize>,
    },
    MultinomialLogistic {
        model: MultiFittedLogisticRegression<f64, usize>,
    },
    DecisionTree {
        model: DecisionTree<f64, usize>,
    },
    /// Our CART forest (`fitted: {"forest": ...}`), or one trained by linfa-ensemble before it
    /// (`fitted: {"trees": ..., "tree_features": ...}`), which still loads and scores by vote
    /// share. One tag, two layouts: [`RandomForestModel`] tells them apart by their fields.
    RandomForest(RandomForestModel),
    Linear {
        model: FittedLinearRegression<f64>,
    },
    GaussianNb {
        model: GaussianNb<f64, usize>,
    },
    /// The same output for every row: `score`, and `class` for classifiers.
    Prior {
        score: f64,
        class: Option<usize>,
        /// Each class's share (classifiers; absent from versions trained before it was kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shares: Option<Vec<f64>>,
    },
    /// A model imported from a file (`model import`): compiled from the registry's copy of
    /// the original bytes at each load, never stored in this form.
    #[serde(skip)]
    Imported(std::sync::Arc<Parsed>),
}

/// How a linear model's sum becomes its score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The sum itself (linear regression).
    Identity,
    /// `1 / (1 + exp(-sum))`, the probability of class 1; `flip` when the fitted model's
    /// positive class is class 0 (linfa takes the more frequent class as positive).
    Logistic { flip: bool },
}

pub use super::prediction::Prediction;

pub enum Targets {
    Classes { y: Array1<usize>, n_classes: usize },
    Values(Array1<f64>),
}

impl Estimator {
    pub fn fit(
        algorithm: Algorithm,
        x: Array2<f64>,
        targets: Targets,
        hp: &Hyperparameters,
    ) -> Result<Self> {
        match (algorithm, targets) {
            (Algorithm::Prior, targets) => Ok(prior(&targets)),
            (Algorithm::Linear, Targets::Values(y)) => {
                let ds = Dataset::new(x, y);
                Ok(Self::Linear {
                    model: LinearRegression::new().fit(&ds)?,
                })
            }
            (Algorithm::Linear, Targets::Classes { .. }) => {
                bail!("linear regression needs a numeric target")
            }
            (_, Targets::Values(_)) => bail!("{algorithm} is a classifier and needs class labels"),
            (alg, Targets::Classes { y, n_classes }) => {
                if n_classes < 2 {
                    bail!("the target has only one class; a classifier needs at least two");
                }
                let ds = Dataset::new(x, y);
                let tree = || DecisionTree::params().max_depth(hp.max_depth);
                Ok(match alg {
                    Algorithm::Logistic if n_classes == 2 => Self::Logistic {
                        model: LogisticRegression::default()
                            .max_iterations(hp.max_iterations)
                            .fit(&ds)?,
                    },
                    Algorithm::Logistic => Self::MultinomialLogistic {
                        model: MultiLogisticRegression::default()
                            .max_iterations(hp.max_iterations)
                            .fit(&ds)?,
                    },
                    Algorithm::DecisionTree => Self::DecisionTree {
                        model: tree().fit(&ds)?,
                    },
                    Algorithm::RandomForest => {
                        let params = ForestParams {
                            trees: hp.trees,
                            max_depth: hp.max_depth,
                            seed: hp.seed,
                            ..ForestParams::default()
                        };
                        let y = ds.targets().as_slice().expect("a new array is contiguous");
                        let forest = Forest::fit(ds.records().view(), y, n_classes, &params)?;
                        Self::RandomForest(RandomForestModel::Forest { forest })
                    }
                    Algorithm::GaussianNb => Self::GaussianNb {
                        model: GaussianNb::params().fit(&ds)?,
                    },
                    Algorithm::Linear | Algorithm::Prior => unreachable!("handled above"),
                    Algorithm::Lightgbm | Algorithm::Xgboost | Algorithm::Onnx => {
                        bail!("{alg} models are imported (`nightshift model import`), not trained")
                    }
                })
            }
        }
    }

    /// `(intercept, weights, link)` of a binary logistic or a linear regression: their score
    /// is `link(intercept + weights . x)`, which scoring computes column by column.
    pub fn linear_form(&self) -> Option<(f64, &Array1<f64>, Link)> {
        match self {
            Self::Logistic { model } => Some((
                model.intercept(),
                model.params(),
                Link::Logistic {
                    flip: model.labels().pos.class != 1,
                },
            )),
            Self::Linear { model } => Some((model.intercept(), model.params(), Link::Identity)),
            _ => None,
        }
    }

    /// Checks that a loaded estimator fits its manifest: as many inputs as the preprocessing
    /// makes (`width`), as many classes as there are labels. A mismatched or tampered artifact
    /// is refused when it is loaded, not scored with some inputs or classes ignored.
    pub fn check_shape(&self, width: usize, n_classes: usize) -> Result<()> {
        let (inputs, classes) = match self {
            Self::Logistic { model } => (model.params().len(), 2),
            Self::Linear { model } => (model.params().len(), 0),
            Self::RandomForest(RandomForestModel::Forest { forest }) => {
                (forest.data().n_features, forest.n_classes().max(2))
            }
            _ => return Ok(()),
        };
        if inputs != width {
            bail!("the model takes {inputs} inputs, but its preprocessing makes {width}");
        }
        if classes != n_classes {
            bail!("the model has {classes} classes, but its manifest lists {n_classes}");
        }
        Ok(())
    }

    /// Scores rows. `n_classes` is the number of class labels (0 for regressors).
    pub fn predict(&self, x: ArrayView2<f64>, n_classes: usize) -> Prediction {
        if let Self::Prior {
            score,
            class,
            shares,
        } = self
        {
            let proba = match (class, shares) {
                (Some(_), Some(shares)) => Some(shares.repeat(x.nrows())),
                (Some(_), None) if n_classes == 2 => Some([1.0 - score, *score].repeat(x.nrows())),
                _ => None,
            };
            return Prediction {
                score: vec![*score; x.nrows()],
                class: class.map(|c| vec![c; x.nrows()]),
                proba,
            };
        }
        if let Self::RandomForest(RandomForestModel::Forest { forest }) = self {
            // No copy of the rows: the forest walks the view.
            return forest.predict(x);
        }
        let x = x.to_owned();
        let positive = |p: &Array1<f64>| Prediction {
            class: Some(p.iter().map(|&s| usize::from(s >= 0.5)).collect()),
            score: p.to_vec(),
            proba: Some(p.iter().flat_map(|&s| [1.0 - s, s]).collect()),
        };
        match self {
            Self::Logistic { model } => {
                // linfa's "positive" class is the more frequent one in training, not class 1.
                let p = model.predict_probabilities(&x);
                if model.labels().pos.class == 1 {
                    positive(&p)
                } else {
                    positive(&p.mapv(|p| 1.0 - p))
                }
            }
            Self::MultinomialLogistic { model } => {
                let p = model.predict_probabilities(&x);
                let classes = model.classes();
                from_probabilities(&p, n_classes, |j| classes[j])
            }
            Self::GaussianNb { model } => {
                let (p, labels) = naive_bayes_probabilities(model, x.view());
                if n_classes == 2 && labels == [0, 1] {
                    positive(&p.column(1).to_owned())
                } else {
                    from_probabilities(&p, n_classes, |j| labels[j])
                }
            }
            Self::DecisionTree { model } => {
                let class: Array1<usize> = model.predict(&x);
                let score = class
                    .iter()
                    .map(|&c| if n_classes == 2 { c as f64 } else { 1.0 })
                    .collect();
                // One tree's vote: all of the probability on the class it predicts.
                let k = n_classes.max(2);
                let mut proba = vec![0.0; class.len() * k];
                for (r, &c) in class.iter().enumerate() {
                    proba[r * k + c] = 1.0;
                }
                Prediction {
                    score,
                    class: Some(class.to_vec()),
                    proba: Some(proba),
                }
            }
            Self::RandomForest(RandomForestModel::Legacy {
                trees,
                tree_features,
            }) => {
                // Each tree votes; the score is the share of votes (positive class for binary,
                // winning class otherwise). Ties go to the lower class index.
                let mut votes = Array2::<u32>::zeros((x.nrows(), n_classes.max(2)));
                for (tree, features) in trees.iter().zip(tree_features) {
                    let sub = x.select(Axis(1), features);
                    let pred: Array1<usize> = tree.predict(&sub);
                    for (i, c) in pred.iter().enumerate() {
                        votes[[i, *c]] += 1;
                    }
                }
                let total = trees.len() as f64;
                let p = votes.mapv(|v| v as f64 / total);
                if n_classes == 2 {
                    positive(&p.column(1).to_owned())
                } else {
                    from_probabilities(&p, n_classes, |j| j)
                }
            }
            Self::Linear { model } => Prediction {
                score: model.predict(&x).to_vec(),
                class: None,
                proba: None,
            },
            Self::Prior { .. } => unreachable!("answered above"),
            Self::Imported(_) => unreachable!("imported models score from Arrow columns"),
            Self::RandomForest(RandomForestModel::Forest { .. }) => unreachable!("answered above"),
        }
    }
}

/// The training prior: for classes, the share of each class (the score is class 1's share for
/// two classes, the most frequent class's otherwise, ties to the lower class); for values, the
/// mean.
fn prior(targets: &Targets) -> Estimator {
    match targets {
        Targets::Values(y) => Estimator::Prior {
            score: y.mean().unwrap_or(0.0),
            class: None,
            shares: None,
        },
        Targets::Classes { y, n_classes } => {
            let mut counts = vec![0u64; (*n_classes).max(2)];
            for &c in y {
                counts[c] += 1;
            }
            let n = y.len().max(1) as f64;
            let best = (0..counts.len()).fold(0, |b, j| if counts[j] > counts[b] { j } else { b });
            let score = if *n_classes == 2 {
                counts[1]
            } else {
                counts[best]
            } as f64
                / n;
            Estimator::Prior {
                score,
                class: Some(best),
                shares: Some(counts[..*n_classes].iter().map(|&c| c as f64 / n).collect()),
            }
        }
    }
}

/// Class probabilities of Gaussian naive Bayes, one column per class label in ascending order
/// (as linfa's `predict_proba`), normalised in log space.
///
/// linfa exponentiates the joint log-likelihoods before normalising them, so a row far from
/// every class (all log-likelihoods below about -745) gives `0 / 0` or an infinite
/// probability. Subtracting the row's log-sum-exp first cannot overflow: the most likely class
/// gets `exp(0)` in the sum. Where linfa's probabilities are finite the two agree to rounding.
/// A row whose log-likelihoods are all `-inf` (a squared distance that overflows) still has no
/// probabilities: it comes out NaN, and scoring quarantines it.
fn naive_bayes_probabilities(
    model: &GaussianNb<f64, usize>,
    x: ArrayView2<f64>,
) -> (Array2<f64>, Vec<usize>) {
    let jll = model.joint_log_likelihood(x);
    let mut labels: Vec<usize> = jll.keys().map(|&&l| l).collect();
    labels.sort_unstable();
    let mut p = Array2::<f64>::zeros((x.nrows(), labels.len()));
    for (j, l) in labels.iter().enumerate() {
        p.column_mut(j).assign(&jll[l]);
    }
    for mut row in p.rows_mut() {
        let lse = log_sum_exp(row.as_slice().expect("rows of a new array are contiguous"));
        row.mapv_inplace(|v| (v - lse).exp());
    }
    (p, labels)
}

/// `ln(sum(exp(v)))` without overflow or underflow: the largest term is factored out, so the
/// sum is at least 1. `-inf` when there are no values or all are `-inf`; NaN if any is NaN.
pub fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max.is_infinite() {
        // All -inf (or none): the sum is 0. Some +inf: the sum is +inf. `f64::max` skips NaN,
        // so look for it.
        return if values.iter().any(|v| v.is_nan()) {
            f64::NAN
        } else {
            max
        };
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Picks the most probable class per row (first on ties). Column `j` of `p` is class
/// `class_of_column(j)`; a class with no column has probability 0.
fn from_probabilities(
    p: &Array2<f64>,
    n_classes: usize,
    class_of_column: impl Fn(usize) -> usize,
) -> Prediction {
    let k = n_classes.max(2);
    let mut score = Vec::with_capacity(p.nrows());
    let mut class = Vec::with_capacity(p.nrows());
    let mut proba = vec![0.0; p.nrows() * k];
    for (r, row) in p.rows().into_iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let c = class_of_column(j);
            if c < k {
                proba[r * k + c] = v;
            }
        }
        let (j, s) = row
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (j, &s)| {
                if s > best.1 {
                    (j, s)
                } else {
                    best
                }
            });
        score.push(s);
        class.push(class_of_column(j));
    }
    Prediction {
        score,
        class: Some(class),
        proba: Some(proba),
    }
}

/// Holdout metrics, by name: the metrics of [`crate::metric`], the same code that measures a
/// date's labels (`evaluate`), so the two compare. A metric undefined on the holdout (AUC with
/// one class) is left out.
pub fn metrics(pred: &Prediction, targets: &Targets) -> Result<Vec<(String, f64)>> {
    let values = match targets {
        Targets::Classes { y, n_classes } => {
            let class = pred
                .class
                .as_ref()
                .ok_or_else(|| anyhow!("classifier gave no classes"))?;
            if *n_classes == 2 {
                let truth: Vec<bool> = y.iter().map(|&c| c == 1).collect();
                let said: Vec<bool> = class.iter().map(|&c| c == 1).collect();
                metric::binary(&truth, &pred.score, &said).map(|m| m.values())
            } else {
                metric::multiclass(y.as_slice().expect("contiguous"), class).map(|m| m.values())
            }
        }
        Targets::Values(y) => {
            metric::regression(y.as_slice().expect("contiguous"), &pred.score).map(|m| m.values())
        }
    };
    Ok(values
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(m, v)| Some((m.to_string(), v?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn naive_bayes_probabilities_stay_finite_far_from_the_training_data() {
        let x = array![
            [-2., -1.],
            [-1., -1.],
            [-1., -2.],
            [1., 1.],
            [1., 2.],
            [2., 1.]
        ];
        let y = array![0, 0, 0, 1, 1, 1];
        let targets = Targets::Classes { y, n_classes: 2 };
        let est = Estimator::fit(
            Algorithm::GaussianNb,
            x.clone(),
            targets,
            &Default::default(),
        )
        .unwrap();
        let Estimator::GaussianNb { model } = &est else {
            panic!("not naive Bayes")
        };
        let (linfa, _) = model.predict_proba(x.view());
        let ours = est.predict(x.view(), 2).score;
        for (a, b) in ours.iter().zip(linfa.column(1)) {
            assert!((a - b).abs() < 1e-12, "ours {a}, linfa {b}");
        }

        // Log-likelihoods around -2e6 under both classes: linfa's exp() underflows to 0 / 0.
        let far = array![[1e3, 1e3], [-1e3, -1e3]];
        let (linfa, _) = model.predict_proba(far.view());
        assert!(linfa.iter().all(|p| !p.is_finite()), "{linfa}");
        let p = est.predict(far.view(), 2);
        assert_eq!(p.score, [1.0, 0.0]);
        assert_eq!(p.class, Some(vec![1, 0]));

        // A squared distance that overflows leaves no likelihood at all: NaN, for scoring to
        // quarantine.
        assert!(est.predict(array![[1e200, 0.0]].view(), 2).score[0].is_nan());
    }

    /// Found in review: an artifact with more or fewer inputs or classes than its manifest
    /// was scored with some of them ignored. It is refused at load now.
    #[test]
    fn an_estimator_that_does_not_fit_its_manifest_is_refused() {
        let x = array![[0., 1.], [1., 0.], [0., 0.], [1., 1.]];
        let targets = || Targets::Classes {
            y: array![0, 1, 0, 1],
            n_classes: 2,
        };
        for algorithm in [Algorithm::Logistic, Algorithm::RandomForest] {
            let est = Estimator::fit(algorithm, x.clone(), targets(), &Default::default()).unwrap();
            assert!(est.check_shape(2, 2).is_ok(), "{algorithm}");
            let e = est.check_shape(3, 2).unwrap_err().to_string();
            assert!(
                e.contains("takes 2 inputs, but its preprocessing makes 3"),
                "{e}"
            );
            let e = est.check_shape(2, 3).unwrap_err().to_string();
            assert!(e.contains("has 2 classes, but its manifest lists 3"), "{e}");
        }
    }
}
