//! The tree ensemble every imported tree model compiles to: LightGBM and XGBoost boosters and
//! ONNX's TreeEnsemble operators. The parsers (`lightgbm.rs`, `xgboost.rs`, `onnx/`) turn a
//! file into an [`Ensemble`] that states each library's rules explicitly (comparison, where a
//! missing value goes, categorical sets, f32 or f64 arithmetic, the link), so one scorer
//! reproduces all of them; [`Ensemble::compile`] lays it out flat for that scorer.

use serde::{Deserialize, Serialize};

use super::flat::Flat;

/// A tree ensemble as the library defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    /// Number of inputs the trees index (`Split::feature < n_features`).
    pub n_features: usize,
    /// Number of raw scores per row: 1 for regression and binary models, one per class (or
    /// per ONNX target) otherwise.
    pub n_outputs: usize,
    pub trees: Vec<Tree>,
    /// Raw score each output starts from, before any tree (margin space). Length `n_outputs`.
    pub base: Vec<f64>,
    /// The trees' sum is divided by this before `base` is added (LightGBM's `average_output`:
    /// the number of iterations; ONNX `AVERAGE`: the number of trees); 1 otherwise.
    pub divisor: f64,
    /// Where `base` goes: before the trees (XGBoost, LightGBM's init score folded into the
    /// first tree: base is 0 there) or after the average (ONNX: `base_values` are added to the
    /// aggregated score).
    pub base_after_average: bool,
    pub arithmetic: Arithmetic,
    /// The link from raw scores to the library's output.
    pub transform: Transform,
    /// The compiled form, built on first use (parsers write `Default::default()`).
    #[serde(skip)]
    pub compiled: FlatCache,
}

/// An ensemble's compiled form, built once. Equal to any other: it is derived from the
/// ensemble it belongs to.
#[derive(Debug, Clone, Default)]
pub struct FlatCache(std::sync::OnceLock<Box<Flat>>);

impl PartialEq for FlatCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The precision the library computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arithmetic {
    /// Inputs, thresholds and sums in double (LightGBM).
    F64,
    /// Inputs rounded to f32, thresholds f32, leaf values and sums in f32 in tree order, the
    /// link in f32 (XGBoost; onnxruntime with float inputs).
    F32,
}

/// How raw scores (`n_outputs` per row) become the library's output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Transform {
    /// The raw score itself (regression, XGBoost `binary:logitraw`).
    Identity,
    /// `1 / (1 + exp(-scale * s))` on each output (LightGBM binary `sigmoid:scale`, multiclassova,
    /// cross_entropy). ONNX tree operators use `Identity` and apply onnxruntime's post-transforms
    /// themselves (`onnx/trees.rs`), which depend on more than the raw scores.
    Sigmoid { scale: f64 },
    /// XGBoost's sigmoid in f32: `1 / (expf(min(-s, 88.7)) + 1 + 1e-16)`.
    XgbSigmoid,
    /// Softmax over the outputs, the maximum subtracted first.
    Softmax,
    /// `exp(s)` (poisson, gamma and tweedie regression).
    Exp,
    /// `sign(s) * s^2` (LightGBM regression with `sqrt`).
    SignSquare,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// `nodes[0]` is the root.
    pub nodes: Vec<Node>,
    pub output: TreeOutput,
}

/// Which raw scores a tree adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeOutput {
    /// Its leaf value (`Leaf::values` of length 1) goes to this output (LightGBM and XGBoost:
    /// one tree per class and iteration).
    One(u32),
    /// Its leaves hold one value per output (ONNX classifiers with several class weights per
    /// leaf).
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Node {
    Split(Split),
    Leaf { values: Vec<f64> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub feature: u32,
    pub rule: Rule,
    /// Indices into `Tree::nodes`.
    pub left: u32,
    pub right: u32,
}

/// Where a value goes at a split. Every library's comparison is written as one of these by its
/// parser: `x < t` is `LessEq` with `t` replaced by the largest double below it
/// (`f64::next_down`), which is the same test for every double `x`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    /// Left iff `x <= threshold`; NaN goes left iff `nan_left`.
    LessEq { threshold: f64, nan_left: bool },
    /// LightGBM's missing type Zero: a value with `|x| <= 1e-35f` ([`ZERO_BAND`]), or NaN,
    /// goes left iff `default_left`; other values left iff `x <= threshold`.
    ZeroMissing { threshold: f64, default_left: bool },
    /// Left iff `x == value`, or `x != value` when `negate` (ONNX `BRANCH_EQ`, `BRANCH_NEQ`);
    /// NaN goes left iff `nan_left`.
    Equal {
        value: f64,
        negate: bool,
        nan_left: bool,
    },
    /// Categorical: `x` is truncated to an integer `c`; if `0 <= c` and bit `c` of `bits` is
    /// set (`bits[c / 32] >> (c % 32) & 1`), the row goes left iff `in_set_left`, otherwise
    /// (not in the set, or `c` outside the bitset) iff `!in_set_left`. NaN goes left iff
    /// `nan_left`; a negative value goes left iff `negative_left`.
    InSet {
        bits: Vec<u32>,
        in_set_left: bool,
        nan_left: bool,
        negative_left: bool,
    },
}

/// LightGBM's `kZeroThreshold`, the float `1e-35f`: values at most this far from 0 are zero to
/// it.
pub const ZERO_BAND: f64 = 1e-35f32 as f64;

/// At most this many inputs to a tree ensemble: the compiled walk holds a block of rows of
/// them.
pub const MAX_INPUTS: usize = 1 << 16;

impl Ensemble {
    /// Checks what the compiled walk relies on, whichever parser built the ensemble: every
    /// split's feature below `n_features` and children in its tree, each node reached once from
    /// the root (no cycle, no shared subtree), outputs below `n_outputs`, leaves with one value
    /// (or `n_outputs` for `TreeOutput::All`), one base value per output.
    pub fn check(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if self.n_features > MAX_INPUTS {
            bail!(
                "the trees read {} inputs, more than nightshift takes ({MAX_INPUTS})",
                self.n_features
            );
        }
        if self.n_outputs == 0 || self.base.len() != self.n_outputs {
            bail!(
                "{} outputs with {} base values",
                self.n_outputs,
                self.base.len()
            );
        }
        for (t, tree) in self.trees.iter().enumerate() {
            let width = match tree.output {
                TreeOutput::One(o) if (o as usize) < self.n_outputs => 1,
                TreeOutput::One(o) => bail!("tree {t} adds to output {o} of {}", self.n_outputs),
                TreeOutput::All => self.n_outputs,
            };
            if tree.nodes.is_empty() {
                bail!("tree {t} has no node");
            }
            let mut seen = vec![false; tree.nodes.len()];
            let mut todo = vec![0usize];
            while let Some(i) = todo.pop() {
                if std::mem::replace(&mut seen[i], true) {
                    bail!("tree {t}: node {i} is reached twice");
                }
                match &tree.nodes[i] {
                    Node::Leaf { values } if values.len() != width => {
                        bail!(
                            "tree {t}: leaf {i} has {} values, not {width}",
                            values.len()
                        )
                    }
                    Node::Leaf { .. } => {}
                    Node::Split(s) => {
                        if s.feature as usize >= self.n_features {
                            bail!(
                                "tree {t}: node {i} reads input {} of {}",
                                s.feature,
                                self.n_features
                            );
                        }
                        for child in [s.left, s.right] {
                            if child as usize >= tree.nodes.len() {
                                bail!("tree {t}: node {i} has no child {child}");
                            }
                            todo.push(child as usize);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Trees, leaves, the deepest leaf's depth, and the bytes of the compiled form.
    pub fn shape(&self) -> super::Shape {
        let mut shape = super::Shape {
            trees: self.trees.len(),
            ..Default::default()
        };
        for t in &self.trees {
            let (leaves, depth) = t.leaves_and_depth();
            shape.leaves += leaves;
            shape.max_depth = shape.max_depth.max(depth);
        }
        shape.compiled_bytes = self.compiled_bytes();
        shape
    }

    /// Bytes of the compiled form (see [`Ensemble::compile`]).
    pub fn compiled_bytes(&self) -> usize {
        self.compile().bytes()
    }
}

impl Tree {
    /// The number of leaves, and the depth of the deepest (a lone leaf has depth 0). Walks
    /// from the root, so nodes no path reaches do not count.
    pub fn leaves_and_depth(&self) -> (usize, usize) {
        let mut leaves = 0;
        let mut depth = 0;
        let mut todo = vec![(0usize, 0usize)];
        // A parser refuses cycles; the bound keeps a forged tree from looping here anyway.
        let mut budget = self.nodes.len();
        while let Some((i, d)) = todo.pop() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            match self.nodes.get(i) {
                Some(Node::Split(s)) => {
                    todo.push((s.left as usize, d + 1));
                    todo.push((s.right as usize, d + 1));
                }
                Some(Node::Leaf { .. }) => {
                    leaves += 1;
                    depth = depth.max(d);
                }
                None => {}
            }
        }
        (leaves, depth)
    }
}

impl Rule {
    /// Whether `x` goes left. The definition every compiled form must agree with.
    pub fn goes_left(&self, x: f64) -> bool {
        match self {
            Rule::LessEq {
                threshold,
                nan_left,
            } => {
                if x.is_nan() {
                    *nan_left
                } else {
                    x <= *threshold
                }
            }
            Rule::ZeroMissing {
                threshold,
                default_left,
            } => {
                if x.is_nan() || x.abs() <= ZERO_BAND {
                    *default_left
                } else {
                    x <= *threshold
                }
            }
            Rule::Equal {
                value,
                negate,
                nan_left,
            } => {
                if x.is_nan() {
                    *nan_left
                } else {
                    (x == *value) != *negate
                }
            }
            Rule::InSet {
                bits,
                in_set_left,
                nan_left,
                negative_left,
            } => {
                if x.is_nan() {
                    return *nan_left;
                }
                // Truncation toward zero, as C++'s `static_cast<int>`; saturating far out.
                let c = x.trunc();
                if c < 0.0 {
                    return *negative_left;
                }
                let c = c as u64;
                let word = (c / 32) as usize;
                let in_set = word < bits.len() && (bits[word] >> (c % 32)) & 1 == 1;
                in_set == *in_set_left
            }
        }
    }
}

impl Ensemble {
    /// The outputs of `n_rows` rows (row-major, `n_features` each), `n_outputs` per row after
    /// the transform: what every caller scores with.
    pub fn predict(&self, rows: &[f64], n_rows: usize) -> Vec<f64> {
        self.compile().predict(self, rows, n_rows)
    }

    /// The compiled form, built on the first call.
    pub fn compile(&self) -> &Flat {
        self.compiled.0.get_or_init(|| Box::new(Flat::new(self)))
    }

    /// The outputs of `n_rows` rows (row-major, `n_features` each), `n_outputs` per row after
    /// the transform, walking each row through each tree one node at a time: the plain
    /// definition, which the tests hold the compiled scorer to.
    pub fn predict_reference(&self, rows: &[f64], n_rows: usize) -> Vec<f64> {
        let k = self.n_outputs;
        let nf = self.n_features;
        let f32s = self.arithmetic == Arithmetic::F32;
        let mut out = vec![0.0; n_rows * k];
        for r in 0..n_rows {
            let row: Vec<f64> = rows[r * nf..(r + 1) * nf]
                .iter()
                .map(|&v| if f32s { v as f32 as f64 } else { v })
                .collect();
            let raw = &mut out[r * k..(r + 1) * k];
            if !self.base_after_average {
                for (s, &b) in raw.iter_mut().zip(&self.base) {
                    *s = if f32s { b as f32 as f64 } else { b };
                }
            }
            for tree in &self.trees {
                let values = tree.leaf(&row);
                match tree.output {
                    TreeOutput::One(o) => raw[o as usize] = self.add(raw[o as usize], values[0]),
                    TreeOutput::All => {
                        for (s, &v) in raw.iter_mut().zip(values) {
                            *s = self.add(*s, v);
                        }
                    }
                }
            }
            self.finish(raw);
        }
        out
    }

    /// From one row's sums over the trees to the library's output: the average, the base
    /// where it comes after it, and the link.
    pub(super) fn finish(&self, raw: &mut [f64]) {
        let f32s = self.arithmetic == Arithmetic::F32;
        if self.divisor != 1.0 {
            for s in raw.iter_mut() {
                *s = if f32s {
                    (*s as f32 / self.divisor as f32) as f64
                } else {
                    *s / self.divisor
                };
            }
        }
        if self.base_after_average {
            for (s, &b) in raw.iter_mut().zip(&self.base) {
                *s = self.add(*s, b);
            }
        }
        self.transform.apply(raw, self.arithmetic);
    }

    /// `a + b` in the ensemble's precision.
    #[inline(always)]
    fn add(&self, a: f64, b: f64) -> f64 {
        match self.arithmetic {
            Arithmetic::F64 => a + b,
            Arithmetic::F32 => (a as f32 + b as f32) as f64,
        }
    }
}

impl Tree {
    /// The leaf values `row` reaches.
    pub fn leaf(&self, row: &[f64]) -> &[f64] {
        let mut at = 0usize;
        loop {
            match &self.nodes[at] {
                Node::Leaf { values } => return values,
                Node::Split(s) => {
                    at = if s.rule.goes_left(row[s.feature as usize]) {
                        s.left as usize
                    } else {
                        s.right as usize
                    };
                }
            }
        }
    }
}

impl Transform {
    /// Applies the link to one row's raw scores in place.
    pub fn apply(&self, raw: &mut [f64], arithmetic: Arithmetic) {
        let f32s = arithmetic == Arithmetic::F32;
        match *self {
            Transform::Identity => {}
            Transform::Sigmoid { scale } => {
                for s in raw.iter_mut() {
                    *s = if f32s {
                        (1.0f32 / (1.0f32 + (-(scale as f32) * *s as f32).exp())) as f64
                    } else {
                        1.0 / (1.0 + (-scale * *s).exp())
                    };
                }
            }
            Transform::XgbSigmoid => {
                for s in raw.iter_mut() {
                    let x = *s as f32;
                    *s = (1.0f32 / ((-x).min(88.7f32).exp() + 1.0f32 + 1e-16f32)) as f64;
                }
            }
            Transform::Softmax => {
                let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if f32s {
                    let max = max as f32;
                    let mut sum = 0.0f64;
                    for s in raw.iter_mut() {
                        let e = (*s as f32 - max).exp();
                        *s = e as f64;
                        sum += e as f64;
                    }
                    for s in raw.iter_mut() {
                        *s = (*s as f32 / sum as f32) as f64;
                    }
                } else {
                    let mut sum = 0.0;
                    for s in raw.iter_mut() {
                        let e = (*s - max).exp();
                        *s = e;
                        sum += e;
                    }
                    for s in raw.iter_mut() {
                        *s /= sum;
                    }
                }
            }
            Transform::Exp => {
                for s in raw.iter_mut() {
                    *s = if f32s {
                        (*s as f32).exp() as f64
                    } else {
                        s.exp()
                    };
                }
            }
            Transform::SignSquare => {
                for s in raw.iter_mut() {
                    *s = s.signum() * *s * *s;
                }
            }
        }
    }
}
