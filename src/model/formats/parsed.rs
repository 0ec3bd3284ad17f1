//! The types every format's parser produces: what a model reads, what it is for, and the
//! scorer it compiles to.

use serde::{Deserialize, Serialize};

use super::ensemble::Ensemble;
use super::onnx;

/// The file formats `model import` reads.
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
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Format {
    Lightgbm,
    Xgboost,
    Onnx,
}

/// What a model reads from one input column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFeature {
    /// The column's name; empty when the file names none (then `--features` must).
    pub name: String,
    pub kind: InputKind,
}

/// How a column's values become the number a model reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InputKind {
    /// Integers, booleans and floats, cast to double; a null is NaN.
    Numeric,
    /// A categorical feature. A string or dictionary column is coded by its position in
    /// `categories` (pandas' codes at training time); a value not in the list, or a null, is
    /// NaN, and a non-null one counts as an unknown category. An integer column is its own
    /// code. With no `categories`, only integer columns can feed it.
    Categorical { categories: Option<Vec<String>> },
    /// A string input of an ONNX graph (OneHotEncoder, LabelEncoder read the strings
    /// themselves).
    Text,
}

/// What the model is for, and its classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Task {
    /// One value per row.
    Regression,
    /// Class probabilities, one per label (for two classes the model's output is the second
    /// label's probability).
    Classification { labels: Vec<Label> },
}

/// A class label as the file gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Label {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Int(i) => write!(f, "{i}"),
            Label::Text(s) => f.write_str(s),
        }
    }
}

/// The size of a model, for `model show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    pub trees: usize,
    pub leaves: usize,
    pub max_depth: usize,
    /// Bytes of the compiled scorer in memory.
    pub compiled_bytes: usize,
}

/// A parsed model: what `model show` describes and what scoring compiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parsed {
    pub format: Format,
    /// The producing library and its version where the file records them
    /// (`LightGBM v4`, `xgboost 3.2.0`, `skl2onnx 1.20.0`).
    pub producer: Option<String>,
    /// The objective and link as the library names them (`binary sigmoid:1`, `multi:softprob`,
    /// `TreeEnsembleClassifier post_transform=LOGISTIC`).
    pub objective: String,
    pub features: Vec<InputFeature>,
    pub task: Task,
    pub model: Compiled,
}

/// The scorer a parsed model compiles to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Compiled {
    Trees(Ensemble),
    Onnx(onnx::Pipeline),
}

/// A batch's inputs, one per [`Parsed::features`], in that order.
#[derive(Debug, Clone, PartialEq)]
pub enum InputColumn {
    /// `Numeric` and `Categorical` features: the value, NaN where missing (a null, or a
    /// category not in the list).
    Numbers(Vec<f64>),
    /// `Text` features: the strings, `None` for a null.
    Text(Vec<Option<String>>),
}

impl Parsed {
    /// The library's output for `n_rows` rows, row-major: for a classifier, each label's
    /// probability (in `Task::Classification::labels` order, two columns for a binary model);
    /// for a regressor, the one value. Rows are independent: the result does not depend on
    /// how rows are split into batches.
    pub fn predict(&self, inputs: &[InputColumn], n_rows: usize) -> Vec<f64> {
        let raw = match &self.model {
            Compiled::Trees(e) => {
                // Rows are laid out a chunk at a time (about 8 MiB of them), not a batch at once.
                let nf = e.n_features.max(1);
                let chunk = (1 << 20) / nf;
                let chunk = chunk.clamp(1, n_rows.max(1));
                let mut raw = Vec::with_capacity(n_rows * e.n_outputs);
                let mut rows = vec![f64::NAN; chunk * nf];
                for start in (0..n_rows).step_by(chunk) {
                    let n = chunk.min(n_rows - start);
                    let rows = &mut rows[..n * nf];
                    rows.fill(f64::NAN);
                    for (f, col) in inputs.iter().enumerate().take(e.n_features) {
                        if let InputColumn::Numbers(v) = col {
                            for (r, &x) in v[start..start + n].iter().enumerate() {
                                rows[r * nf + f] = x;
                            }
                        }
                    }
                    raw.extend(e.predict(rows, n));
                }
                raw
            }
            Compiled::Onnx(p) => return p.predict(inputs, n_rows),
        };
        self.expand_binary(raw)
    }

    /// A binary classifier whose model gives one probability (of the second label) gets the
    /// first label's too.
    fn expand_binary(&self, raw: Vec<f64>) -> Vec<f64> {
        match (&self.task, &self.model) {
            (Task::Classification { labels }, Compiled::Trees(e))
                if labels.len() == 2 && e.n_outputs == 1 =>
            {
                raw.iter().flat_map(|&p| [1.0 - p, p]).collect()
            }
            _ => raw,
        }
    }

    /// Trees, leaves, depth and compiled size, summed over the model's ensembles.
    pub fn shape(&self) -> Shape {
        match &self.model {
            Compiled::Trees(e) => e.shape(),
            Compiled::Onnx(p) => p.shape(),
        }
    }

    /// The number of values `predict` gives per row.
    pub fn width(&self) -> usize {
        match &self.task {
            Task::Classification { labels } => labels.len(),
            Task::Regression => 1,
        }
    }
}
