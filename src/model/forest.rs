//! Random forest: our own CART trees (Gini), trained in parallel on histogram-binned features,
//! stored as plain data, scored through a flat node array compiled once per loaded model.
//!
//! See docs/models.md for the artifact layout and how the score is computed.
//!
//! * Training follows scikit-learn's `RandomForestClassifier`: one bootstrap sample per tree
//!   (as many draws as rows), `max_features = sqrt(n_features)` drawn anew at every split,
//!   min_samples_split 2, min_samples_leaf 1, Gini impurity weighted by bootstrap counts.
//!   Candidate thresholds are the edges of up to 255 quantile bins per feature, computed once
//!   for the whole data set (as LightGBM and scikit-learn's HistGradientBoosting do); an edge
//!   is the midpoint between two adjacent distinct values, so a feature with at most 255
//!   distinct values gets exactly scikit-learn's candidate thresholds.
//! * Each tree's random numbers come from its own stream: the seed's xoshiro256++ generator
//!   jumped `tree index` times. The forest is the same for any number of threads.
//! * A leaf stores the class proportions of the (bootstrap-weighted) rows that reached it;
//!   the forest's probabilities are their mean over the trees, as `predict_proba`.
//! * A row goes right at a node iff `x > threshold` (so left iff `x <= threshold`, as
//!   scikit-learn; a NaN, which scoring never passes, goes left).

use std::sync::OnceLock;

use anyhow::{bail, Result};
use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::de::{Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::prediction::Prediction;

/// What `Estimator::RandomForest` holds: our forest, or a forest trained by linfa-ensemble
/// before nightshift had its own (kept so those artifacts still load and score by vote share).
///
/// Serialised untagged (`{"forest": ...}` or `{"trees": ..., "tree_features": ...}`) and told
/// apart on load by the field names, without buffering the content.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RandomForestModel {
    Forest {
        forest: Forest,
    },
    /// linfa-ensemble's `RandomForest` (it has no serde support; its two fields are kept).
    Legacy {
        trees: Vec<linfa_trees::DecisionTree<f64, usize>>,
        tree_features: Vec<Vec<usize>>,
    },
}

impl<'de> Deserialize<'de> for RandomForestModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = RandomForestModel;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a random forest: `forest`, or linfa's `trees` and `tree_features`")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let (mut forest, mut trees, mut tree_features) = (None, None, None);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*key {
                        "forest" => forest = Some(map.next_value()?),
                        "trees" => trees = Some(map.next_value()?),
                        "tree_features" => tree_features = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                match (forest, trees, tree_features) {
                    (Some(forest), None, None) => Ok(RandomForestModel::Forest { forest }),
                    (None, Some(trees), Some(tree_features)) => Ok(RandomForestModel::Legacy {
                        trees,
                        tree_features,
                    }),
                    _ => Err(A::Error::custom(
                        "a random forest has either `forest`, or `trees` and `tree_features`",
                    )),
                }
            }
        }
        d.deserialize_map(Fields)
    }
}

/// How to grow a forest.
#[derive(Debug, Clone, PartialEq)]
pub struct ForestParams {
    pub trees: usize,
    /// `None`: grow until the leaves are pure (or hold one row).
    pub max_depth: Option<usize>,
    /// Features drawn at each split; `None`: `sqrt(n_features)` (at least 1).
    pub max_features: Option<usize>,
    /// Each tree on a bootstrap sample (true) or on all rows with weight 1 (false).
    pub bootstrap: bool,
    /// At most this many bins per feature (2..=256).
    pub max_bins: usize,
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            trees: 100,
            max_depth: Some(10),
            max_features: None,
            bootstrap: true,
            max_bins: 255,
            seed: 42,
        }
    }
}

/// One tree, as plain arrays indexed by node (node 0 is the root). A leaf has
/// `left == right == 0` (no node points back at the root); for a leaf `feature` and
/// `threshold` are 0 and unused. `value` holds `n_classes` numbers per node: for a leaf the
/// share of each class among the bootstrap-weighted training rows that reached it, for an
/// internal node zeros.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub feature: Vec<u32>,
    pub threshold: Vec<f64>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    pub value: Vec<f64>,
}

impl Tree {
    pub fn len(&self) -> usize {
        self.feature.len()
    }

    pub fn is_empty(&self) -> bool {
        self.feature.is_empty()
    }

    pub fn is_leaf(&self, node: usize) -> bool {
        self.left[node] == 0
    }

    /// The leaf a row ends in: a plain walk from the root.
    pub fn leaf(&self, row: &[f64]) -> usize {
        let mut i = 0;
        while !self.is_leaf(i) {
            i = if row[self.feature[i] as usize] > self.threshold[i] {
                self.right[i] as usize
            } else {
                self.left[i] as usize
            };
        }
        i
    }

    /// Longest path from the root to a leaf, in edges.
    pub fn depth(&self) -> usize {
        let mut depth = vec![0usize; self.len()];
        let mut max = 0;
        // Children come after their parent (checked on load), so one pass in order suffices.
        for i in 0..self.len() {
            if !self.is_leaf(i) {
                depth[self.left[i] as usize] = depth[i] + 1;
                depth[self.right[i] as usize] = depth[i] + 1;
            }
            max = max.max(depth[i]);
        }
        max
    }
}

/// The plain, serialised form of a forest (what the artifact holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForestData {
    pub n_features: usize,
    pub n_classes: usize,
    pub trees: Vec<Tree>,
}

/// A fitted forest: the plain data, and (built on first use) its flat scoring form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ForestData", into = "ForestData")]
pub struct Forest {
    data: ForestData,
    compiled: OnceLock<Compiled>,
}

impl PartialEq for Forest {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl From<Forest> for ForestData {
    fn from(f: Forest) -> Self {
        f.data
    }
}

impl TryFrom<ForestData> for Forest {
    type Error = String;

    /// Checks the shape of every tree, so a walk cannot index out of bounds or loop.
    fn try_from(data: ForestData) -> std::result::Result<Self, String> {
        if data.n_classes < 1 {
            return Err("random forest: n_classes must be at least 1".into());
        }
        if data.trees.is_empty() {
            return Err("random forest: no trees".into());
        }
        let k = data.n_classes;
        for (t, tree) in data.trees.iter().enumerate() {
            // Each node but the root has exactly one parent: a tree, not a graph whose shared
            // nodes would compile into an exponential expansion deeper than `depth` says.
            let mut has_parent = vec![false; tree.len()];
            let n = tree.len();
            let bad = |what: &str| Err(format!("random forest: tree {t}: {what}"));
            if n == 0 {
                return bad("no nodes");
            }
            if n >= u32::MAX as usize / 2 {
                return bad("too many nodes");
            }
            if tree.threshold.len() != n
                || tree.left.len() != n
                || tree.right.len() != n
                || tree.value.len() != n * k
            {
                return bad("arrays of different lengths");
            }
            for i in 0..n {
                let (l, r) = (tree.left[i] as usize, tree.right[i] as usize);
                if l == 0 && r == 0 {
                    if tree.value[i * k..(i + 1) * k]
                        .iter()
                        .any(|v| !(0.0..=1.0).contains(v))
                    {
                        return bad(&format!("leaf {i} has a proportion outside [0, 1]"));
                    }
                    continue;
                }
                if l <= i || r <= i || l >= n || r >= n || l == r {
                    return bad(&format!("node {i} has children {l} and {r}"));
                }
                for c in [l, r] {
                    if std::mem::replace(&mut has_parent[c], true) {
                        return bad(&format!("node {c} has two parents"));
                    }
                }
                if tree.feature[i] as usize >= data.n_features {
                    return bad(&format!("node {i} tests feature {}", tree.feature[i]));
                }
            }
        }
        Ok(Self {
            data,
            compiled: OnceLock::new(),
        })
    }
}

impl Forest {
    pub fn data(&self) -> &ForestData {
        &self.data
    }

    pub fn n_classes(&self) -> usize {
        self.data.n_classes
    }

    /// Builds the flat scoring form now rather than at the first prediction.
    pub fn compile(&self) {
        self.compiled();
    }

    fn compiled(&self) -> &Compiled {
        self.compiled.get_or_init(|| Compiled::new(&self.data))
    }

    /// Class probabilities, one row per input row: the plain recursive walk over the artifact
    /// (the reference the flat form must equal bit for bit).
    pub fn predict_proba_plain(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let d = &self.data;
        let k = d.n_classes;
        check_width(x, d.n_features);
        let mut p = Array2::<f64>::zeros((x.nrows(), k));
        let mut row = vec![0.0; x.ncols()];
        for (i, xr) in x.rows().into_iter().enumerate() {
            row.iter_mut().zip(xr).for_each(|(a, b)| *a = *b);
            let mut sum = vec![0.0; k];
            for tree in &d.trees {
                let leaf = tree.leaf(&row);
                let value = &tree.value[leaf * k..(leaf + 1) * k];
                sum.iter_mut().zip(value).for_each(|(s, v)| *s += v);
            }
            let total = d.trees.len() as f64;
            for c in 0..k {
                p[[i, c]] = sum[c] / total;
            }
        }
        p
    }

    /// Class probabilities through the flat form (compiled on first use).
    pub fn predict_proba(&self, x: ArrayView2<f64>) -> Array2<f64> {
        check_width(x, self.data.n_features);
        let k = self.data.n_classes;
        let mut p = Array2::<f64>::zeros((x.nrows(), k));
        if x.nrows() == 0 {
            return p;
        }
        let owned;
        let x = if x.is_standard_layout() {
            x.view()
        } else {
            owned = x.as_standard_layout().into_owned();
            owned.view()
        };
        let rows = x.as_slice().expect("standard layout");
        let out = p.as_slice_mut().expect("a new array is contiguous");
        self.compiled().predict(rows, x.ncols(), out);
        p
    }

    /// Scores rows: binary, the probability of class 1 and class 1 iff it is more probable
    /// than class 0 (a tie is class 0, as scikit-learn's argmax); more classes, the most
    /// probable class (the first on ties) and its probability.
    pub fn predict(&self, x: ArrayView2<f64>) -> Prediction {
        let p = self.predict_proba(x);
        Prediction::from_proba(p.into_raw_vec_and_offset().0, self.data.n_classes)
    }

    /// Trains a forest. `y` holds class indices below `n_classes`; `x` must be finite.
    pub fn fit(
        x: ArrayView2<f64>,
        y: &[usize],
        n_classes: usize,
        params: &ForestParams,
    ) -> Result<Self> {
        let (n, nf) = x.dim();
        if n != y.len() {
            bail!("{} rows but {} labels", n, y.len());
        }
        if n == 0 || nf == 0 {
            bail!("a random forest needs at least one row and one feature");
        }
        if params.trees == 0 {
            bail!("a random forest needs at least one tree");
        }
        if n >= u32::MAX as usize {
            bail!("too many rows for a random forest ({n})");
        }
        if let Some(c) = y.iter().find(|&&c| c >= n_classes) {
            bail!("class index {c} out of range ({n_classes} classes)");
        }
        if x.iter().any(|v| !v.is_finite()) {
            bail!("random forest training needs finite features (impute or drop NaN and infinity)");
        }
        let max_bins = params.max_bins.clamp(2, 256);
        let bins = Bins::new(x, max_bins);
        let max_features = params
            .max_features
            .unwrap_or_else(|| ((nf as f64).sqrt() as usize).max(1))
            .clamp(1, nf);
        let y32: Vec<u32> = y.iter().map(|&c| c as u32).collect();
        let grower = Grower {
            bins: &bins,
            y: &y32,
            n_classes,
            max_depth: params.max_depth.unwrap_or(usize::MAX),
            max_features,
            bootstrap: params.bootstrap,
        };
        let base = Xoshiro256PlusPlus::seed_from_u64(params.seed);
        let trees: Vec<Tree> = (0..params.trees)
            .into_par_iter()
            .map(|t| {
                let mut rng = base.clone();
                for _ in 0..t {
                    rng.jump();
                }
                grower.grow(&mut rng)
            })
            .collect();
        Forest::try_from(ForestData {
            n_features: nf,
            n_classes,
            trees,
        })
        .map_err(anyhow::Error::msg)
    }
}

fn check_width(x: ArrayView2<f64>, n_features: usize) {
    assert!(
        x.ncols() >= n_features,
        "the random forest was trained on {n_features} features, but rows have {}",
        x.ncols()
    );
}

// ---------------------------------------------------------------------------------------------
// Training

/// Every feature cut into at most `max_bins` bins: bin `b` holds the values `v` with
/// `edges[b-1] < v <= edges[b]`, so "bin <= b" is exactly "v <= edges[b]".
struct Bins {
    n: usize,
    /// Column-major: feature `f`'s bins are `codes[f * n..(f + 1) * n]`.
    codes: Vec<u8>,
    edges: Vec<Vec<f64>>,
}

impl Bins {
    fn new(x: ArrayView2<f64>, max_bins: usize) -> Self {
        let (n, nf) = x.dim();
        let cols: Vec<(Vec<f64>, Vec<u8>)> = (0..nf)
            .into_par_iter()
            .map(|f| {
                let col: Vec<f64> = x.column(f).to_vec();
                let edges = bin_edges(&col, max_bins);
                let codes = col
                    .iter()
                    .map(|&v| edges.partition_point(|&e| e < v) as u8)
                    .collect();
                (edges, codes)
            })
            .collect();
        let mut codes = Vec::with_capacity(n * nf);
        let mut edges = Vec::with_capacity(nf);
        for (e, c) in cols {
            edges.push(e);
            codes.extend_from_slice(&c);
        }
        Self { n, codes, edges }
    }

    fn column(&self, f: usize) -> &[u8] {
        &self.codes[f * self.n..(f + 1) * self.n]
    }
}

/// scikit-learn's threshold between two adjacent distinct values: their midpoint, or the
/// lower one where the midpoint rounds to the upper one.
fn midpoint(a: f64, b: f64) -> f64 {
    let m = a / 2.0 + b / 2.0;
    if m == b || !m.is_finite() {
        a
    } else {
        m
    }
}

/// Ascending bin edges for one (finite) column: between every pair of adjacent distinct
/// values when there are at most `max_bins` of them, else at about every `1/max_bins`
/// quantile (at most `max_bins - 1` edges).
fn bin_edges(col: &[f64], max_bins: usize) -> Vec<f64> {
    let mut sorted = col.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let mut distinct: Vec<(f64, usize)> = Vec::new();
    for &v in &sorted {
        match distinct.last_mut() {
            Some((last, count)) if *last == v => *count += 1,
            _ => distinct.push((v, 1)),
        }
    }
    let mut edges = Vec::new();
    if distinct.len() <= max_bins {
        for w in distinct.windows(2) {
            edges.push(midpoint(w[0].0, w[1].0));
        }
        return edges;
    }
    let n = sorted.len();
    let target = |k: usize| (n * k).div_ceil(max_bins);
    let mut k = 1;
    let mut cum = 0;
    for w in distinct.windows(2) {
        cum += w[0].1;
        if k < max_bins && cum >= target(k) {
            edges.push(midpoint(w[0].0, w[1].0));
            while k < max_bins && target(k) <= cum {
                k += 1;
            }
        }
    }
    edges
}

struct Grower<'a> {
    bins: &'a Bins,
    y: &'a [u32],
    n_classes: usize,
    max_depth: usize,
    max_features: usize,
    bootstrap: bool,
}

struct Pending {
    node: usize,
    lo: usize,
    hi: usize,
    depth: usize,
}

impl Grower<'_> {
    fn grow(&self, rng: &mut Xoshiro256PlusPlus) -> Tree {
        let n = self.bins.n;
        let k = self.n_classes;
        let nf = self.bins.edges.len();
        // Bootstrap counts are the rows' weights; rows drawn zero times take no part.
        let mut weight = vec![0u32; n];
        if self.bootstrap {
            for _ in 0..n {
                weight[rng.gen_range(0..n)] += 1;
            }
        } else {
            weight.fill(1);
        }
        let mut rows: Vec<u32> = (0..n as u32).filter(|&i| weight[i as usize] > 0).collect();

        let mut tree = Tree {
            feature: vec![0],
            threshold: vec![0.0],
            left: vec![0],
            right: vec![0],
            value: vec![0.0; k],
        };
        let mut features: Vec<usize> = (0..nf).collect();
        let mut hist = vec![0u32; 256 * k];
        let mut totals = vec![0u32; k];
        let mut left_counts = vec![0u32; k];
        let mut stack = vec![Pending {
            node: 0,
            lo: 0,
            hi: rows.len(),
            depth: 0,
        }];
        while let Some(p) = stack.pop() {
            let node_rows = &rows[p.lo..p.hi];
            totals.fill(0);
            for &r in node_rows {
                totals[self.y[r as usize] as usize] += weight[r as usize];
            }
            let w_total: u64 = totals.iter().map(|&c| c as u64).sum();
            let pure = totals.iter().filter(|&&c| c > 0).count() <= 1;
            let mut split = None;
            if p.depth < self.max_depth && node_rows.len() >= 2 && !pure {
                split = self.best_split(
                    node_rows,
                    &weight,
                    &totals,
                    w_total,
                    &mut features,
                    &mut hist,
                    &mut left_counts,
                    rng,
                );
            }
            let Some((f, b)) = split else {
                let value = &mut tree.value[p.node * k..(p.node + 1) * k];
                for (v, &c) in value.iter_mut().zip(&totals) {
                    *v = c as f64 / w_total as f64;
                }
                if k == 2 {
                    // Exactly 1 - p1, so scoring can carry p1 alone (see `Compiled`).
                    tree.value[p.node * 2] = 1.0 - tree.value[p.node * 2 + 1];
                }
                continue;
            };
            // Partition the node's rows: bin <= b to the left.
            let codes = self.bins.column(f);
            let seg = &mut rows[p.lo..p.hi];
            let mut i = 0;
            let mut j = seg.len();
            while i < j {
                if codes[seg[i] as usize] as usize <= b {
                    i += 1;
                } else {
                    j -= 1;
                    seg.swap(i, j);
                }
            }
            let mid = p.lo + i;
            let l = tree.len();
            for _ in 0..2 {
                tree.feature.push(0);
                tree.threshold.push(0.0);
                tree.left.push(0);
                tree.right.push(0);
                tree.value.extend(std::iter::repeat_n(0.0, k));
            }
            tree.feature[p.node] = f as u32;
            tree.threshold[p.node] = self.bins.edges[f][b];
            tree.left[p.node] = l as u32;
            tree.right[p.node] = (l + 1) as u32;
            stack.push(Pending {
                node: l + 1,
                lo: mid,
                hi: p.hi,
                depth: p.depth + 1,
            });
            stack.push(Pending {
                node: l,
                lo: p.lo,
                hi: mid,
                depth: p.depth + 1,
            });
        }
        tree
    }

    /// The best (feature, bin) split among `max_features` randomly drawn features that are not
    /// constant on the node (more are drawn while the drawn ones are constant, as
    /// scikit-learn does); `None` if every feature is constant on the node.
    #[allow(clippy::too_many_arguments)]
    fn best_split(
        &self,
        rows: &[u32],
        weight: &[u32],
        totals: &[u32],
        w_total: u64,
        features: &mut [usize],
        hist: &mut [u32],
        left: &mut [u32],
        rng: &mut Xoshiro256PlusPlus,
    ) -> Option<(usize, usize)> {
        let k = self.n_classes;
        let nf = features.len();
        let mut best: Option<(usize, usize)> = None;
        let mut best_proxy = f64::NEG_INFINITY;
        let mut visited = 0;
        for i in 0..nf {
            if visited == self.max_features {
                break;
            }
            let j = rng.gen_range(i..nf);
            features.swap(i, j);
            let f = features[i];
            let codes = self.bins.column(f);
            let (mut lo, mut hi) = (255usize, 0usize);
            for &r in rows {
                let b = codes[r as usize] as usize;
                lo = lo.min(b);
                hi = hi.max(b);
                hist[b * k + self.y[r as usize] as usize] += weight[r as usize];
            }
            if lo == hi {
                hist[lo * k..(lo + 1) * k].fill(0);
                continue;
            }
            visited += 1;
            left.fill(0);
            let mut w_left = 0u64;
            for b in lo..hi {
                let h = &hist[b * k..(b + 1) * k];
                let wb: u64 = h.iter().map(|&c| c as u64).sum();
                if wb == 0 {
                    continue;
                }
                w_left += wb;
                let mut sq_l = 0.0;
                let mut sq_r = 0.0;
                for c in 0..k {
                    left[c] += h[c];
                    let l = left[c] as f64;
                    let r = (totals[c] - left[c]) as f64;
                    sq_l += l * l;
                    sq_r += r * r;
                }
                let w_right = w_total - w_left;
                let proxy = sq_l / w_left as f64 + sq_r / w_right as f64;
                if proxy > best_proxy {
                    best_proxy = proxy;
                    best = Some((f, b));
                }
            }
            hist[lo * k..(hi + 1) * k].fill(0);
        }
        best
    }
}

// ---------------------------------------------------------------------------------------------
// Scoring

/// One node of the flat form, 16 bytes. A row at node `i` moves to `left + (x[feature] >
/// threshold)`: the two children are adjacent. A leaf points to itself and tests an extra
/// column that is `-inf` in every row, so a walk of a fixed number of steps (the tree's depth)
/// ends on the leaf whatever the row; its `threshold` is then free to carry the leaf's value
/// (binary: the probability of class 1; otherwise the offset of its proportions in `values`,
/// as the bits of the f64).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct FlatNode {
    threshold: f64,
    feature: u32,
    left: u32,
}

/// All trees in one array, each laid out level by level (the top levels, which every row
/// visits, share cache lines).
#[derive(Debug, Clone)]
struct Compiled {
    nodes: Vec<FlatNode>,
    /// Per tree: (root, depth).
    trees: Vec<(u32, u32)>,
    n_features: usize,
    n_classes: usize,
    /// Two classes whose every leaf holds `p0 == 1 - p1` (what training writes): a leaf
    /// carries `p1` in place. Otherwise `values` holds each leaf's proportions.
    binary: bool,
    values: Vec<f64>,
    /// The same walk over small integer codes, when every feature has few enough thresholds.
    quantised: Option<Quantised>,
}

/// The flat form over codes: a row's value `v` of feature `f` becomes its rank among `f`'s
/// distinct thresholds `t_0 < t_1 < ...`, `code(v) = #{j: t_j < v}`, so `v > t_j` exactly when
/// `code(v) > j` (a NaN, below no threshold, codes 0 and goes left everywhere, as in the plain
/// walk). A block's rows as one byte per feature, and the nodes as 8 bytes, stay in L1 together
/// (the f64 rows and 16-byte nodes did not: the walk waited on L2); coding costs about 8
/// comparisons per value, against the 10 steps of each of 100 trees that read it.
#[derive(Debug, Clone)]
struct Quantised {
    /// Slot for slot as `Compiled::nodes`.
    nodes: Vec<CodeNode>,
    /// Slot for slot, the nodes' `threshold`s, of which a walk reads the leaves' payloads: half
    /// the bytes of `Compiled::nodes` to keep in cache.
    payload: Vec<f64>,
    /// Per feature, its distinct thresholds ascending, padded with `+inf` to a power of two
    /// (at least one `+inf`, so a code is found in `log2(len)` branchless halvings).
    thresholds: Vec<Vec<f64>>,
}

/// A node over codes: a row moves to `left + (code[feature] > rank)`. A leaf points to itself
/// and tests the extra code column, 0 in every row, against rank 0.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct CodeNode {
    left: u32,
    feature: u16,
    rank: u8,
}

/// Rows scored together, tree by tree: each tree's nodes are fetched once per block (block
/// sizes from 64 to 1024 measured the same on the benchmark; 256 rows of 25 features stay in
/// L2).
const BLOCK: usize = 256;

impl Compiled {
    fn new(d: &ForestData) -> Self {
        let k = d.n_classes;
        let sentinel = d.n_features as u32;
        let binary = k == 2
            && d.trees.iter().all(|t| {
                (0..t.len())
                    .filter(|&i| t.is_leaf(i))
                    .all(|i| t.value[2 * i].to_bits() == (1.0 - t.value[2 * i + 1]).to_bits())
            });
        let mut nodes: Vec<FlatNode> = Vec::new();
        let mut values = Vec::new();
        let mut trees = Vec::with_capacity(d.trees.len());
        for tree in &d.trees {
            let root = nodes.len();
            nodes.push(FlatNode {
                threshold: 0.0,
                feature: 0,
                left: 0,
            });
            // Breadth first: (node in the tree, its slot in the flat array).
            let mut todo = std::collections::VecDeque::from([(0usize, root)]);
            while let Some((i, at)) = todo.pop_front() {
                if tree.is_leaf(i) {
                    let p = &tree.value[i * k..(i + 1) * k];
                    let payload = if binary {
                        p[1]
                    } else {
                        let offset = values.len() as u64;
                        values.extend_from_slice(p);
                        f64::from_bits(offset)
                    };
                    nodes[at] = FlatNode {
                        threshold: payload,
                        feature: sentinel,
                        left: at as u32,
                    };
                    continue;
                }
                let l = nodes.len();
                nodes.extend([nodes[at]; 2]);
                nodes[at] = FlatNode {
                    threshold: tree.threshold[i],
                    feature: tree.feature[i],
                    left: l as u32,
                };
                todo.push_back((tree.left[i] as usize, l));
                todo.push_back((tree.right[i] as usize, l + 1));
            }
            trees.push((root as u32, tree.depth() as u32));
        }
        assert!(nodes.len() < u32::MAX as usize, "random forest too large");
        let quantised = Quantised::new(d, &nodes);
        Self {
            nodes,
            trees,
            n_features: d.n_features,
            n_classes: k,
            binary,
            values,
            quantised,
        }
    }

    /// Fills `out` (rows x classes, row-major) with the mean class proportions over the trees
    /// for the row-major rows `x` of width `width` (at least `n_features`).
    fn predict(&self, x: &[f64], width: usize, out: &mut [f64]) {
        match &self.quantised {
            Some(q) => self.predict_codes(q, x, width, out),
            None => self.predict_values(x, width, out),
        }
    }

    /// `predict` over codes (see `Quantised`).
    fn predict_codes(&self, q: &Quantised, x: &[f64], width: usize, out: &mut [f64]) {
        let k = self.n_classes;
        let nf = self.n_features;
        // Each row's codes with one more column, 0, which leaves test.
        let stride = nf + 1;
        let n = x.len() / width;
        let total = self.trees.len() as f64;
        let mut at = vec![0u32; CODE_BLOCK];
        let mut codes = vec![0u8; CODE_BLOCK * stride];
        let mut s0 = vec![0.0f64; CODE_BLOCK];
        for start in (0..n).step_by(CODE_BLOCK) {
            let b = CODE_BLOCK.min(n - start);
            let block = &x[start * width..(start + b) * width];
            // Feature by feature: one feature's thresholds stay in L1 while its rows are coded.
            for (f, t) in q.thresholds.iter().enumerate() {
                if t.len() > 1 {
                    let column = block.iter().skip(f).step_by(width);
                    for (c, &v) in codes[f..].iter_mut().step_by(stride).zip(column) {
                        *c = Quantised::code(t, v);
                    }
                }
            }
            let cb = &codes[..b * stride];
            let acc = &mut out[start * k..(start + b) * k];
            s0[..b].fill(0.0);
            for &(root, depth) in &self.trees {
                let at = &mut at[..b];
                // A few rows at a time all the way down, their positions in registers: the
                // walks are independent, so the processor overlaps them.
                let mut groups = cb.chunks_exact(GROUP * stride);
                let mut ats = at.chunks_exact_mut(GROUP);
                for (rows, out) in (&mut groups).zip(&mut ats) {
                    let mut a = [root; GROUP];
                    for _ in 0..depth {
                        for (j, a) in a.iter_mut().enumerate() {
                            *a = q.step(&rows[j * stride..(j + 1) * stride], *a);
                        }
                    }
                    out.copy_from_slice(&a);
                }
                let tail = ats.into_remainder();
                tail.fill(root);
                for _ in 0..depth {
                    for (row, a) in groups.remainder().chunks_exact(stride).zip(tail.iter_mut()) {
                        *a = q.step(row, *a);
                    }
                }
                self.add_leaves(|a| q.payload[a as usize], at, acc, &mut s0[..b]);
            }
            if self.binary {
                for r in 0..b {
                    acc[r * 2] = s0[r];
                }
            }
            for p in acc.iter_mut() {
                *p /= total;
            }
        }
    }

    /// One step of a walk: the node after `at` for `row` (`n_features + 1` numbers).
    #[inline(always)]
    fn step(&self, row: &[f64], at: u32) -> u32 {
        debug_assert!((at as usize) < self.nodes.len());
        // SAFETY: a walk starts at a root and only moves to a child, and every child index
        // `Compiled::new` writes is a slot it allocated in `nodes`; a leaf points to itself.
        let node = unsafe { *self.nodes.get_unchecked(at as usize) };
        debug_assert!((node.feature as usize) < row.len());
        // SAFETY: features were checked below `n_features` on load (`Forest::try_from`) and
        // leaves test column `n_features`; `row` holds `n_features + 1` numbers.
        let v = unsafe { *row.get_unchecked(node.feature as usize) };
        node.left + (v > node.threshold) as u32
    }

    /// Adds the values of the leaves `at` (one per row) to the rows' sums: `acc` (rows x
    /// classes) and, for the in-place binary form, class 0's in `s0`.
    #[inline(always)]
    fn add_leaves(
        &self,
        payload: impl Fn(u32) -> f64,
        at: &[u32],
        acc: &mut [f64],
        s0: &mut [f64],
    ) {
        let k = self.n_classes;
        if self.binary {
            for (r, &a) in at.iter().enumerate() {
                let p1 = payload(a);
                s0[r] += 1.0 - p1;
                acc[r * 2 + 1] += p1;
            }
        } else {
            for (r, &a) in at.iter().enumerate() {
                let o = payload(a).to_bits() as usize;
                let v = &self.values[o..o + k];
                for c in 0..k {
                    acc[r * k + c] += v[c];
                }
            }
        }
    }

    /// `predict` over the rows' values.
    fn predict_values(&self, x: &[f64], width: usize, out: &mut [f64]) {
        let k = self.n_classes;
        let nf = self.n_features;
        // Each row copied with one more column, -inf, which leaves test.
        let stride = nf + 1;
        let n = x.len() / width;
        let total = self.trees.len() as f64;
        let mut at = vec![0u32; BLOCK];
        let mut rows = vec![f64::NEG_INFINITY; BLOCK * stride];
        let mut s0 = vec![0.0f64; BLOCK];
        for start in (0..n).step_by(BLOCK) {
            let b = BLOCK.min(n - start);
            for r in 0..b {
                let src = &x[(start + r) * width..(start + r) * width + nf];
                rows[r * stride..r * stride + nf].copy_from_slice(src);
            }
            let xb = &rows[..b * stride];
            let acc = &mut out[start * k..(start + b) * k];
            s0[..b].fill(0.0);
            for &(root, depth) in &self.trees {
                let at = &mut at[..b];
                at.fill(root);
                // Step by step over the block: the rows' walks are independent, so the
                // processor overlaps their loads. A leaf points to itself, so rows that reach
                // one early stand still.
                for _ in 0..depth {
                    for (row, a) in xb.chunks_exact(stride).zip(at.iter_mut()) {
                        *a = self.step(row, *a);
                    }
                }
                self.add_leaves(|a| self.nodes[a as usize].threshold, at, acc, &mut s0[..b]);
            }
            if self.binary {
                for r in 0..b {
                    acc[r * 2] = s0[r];
                }
            }
            for p in acc.iter_mut() {
                *p /= total;
            }
        }
    }
}

/// Rows coded and walked together: their codes (25 bytes a row on the benchmark) and a tree's
/// nodes fit L1 together.
const CODE_BLOCK: usize = 512;

/// Rows walked side by side within a block.
const GROUP: usize = 8;

impl Quantised {
    /// `None` where codes do not fit: a feature with more than 255 distinct thresholds (a
    /// legacy or hand-written forest), a NaN threshold, or too many features for a `u16`.
    fn new(d: &ForestData, nodes: &[FlatNode]) -> Option<Self> {
        let nf = d.n_features;
        if nf > u16::MAX as usize {
            return None;
        }
        // Leaves test column `nf`; every other node a feature below it.
        let mut thresholds: Vec<Vec<f64>> = vec![Vec::new(); nf];
        for node in nodes.iter().filter(|node| (node.feature as usize) < nf) {
            if node.threshold.is_nan() {
                return None;
            }
            thresholds[node.feature as usize].push(node.threshold);
        }
        for t in &mut thresholds {
            t.sort_unstable_by(f64::total_cmp);
            // By value: -0.0 and 0.0 split alike.
            t.dedup_by(|a, b| a == b);
            if t.len() > u8::MAX as usize {
                return None;
            }
            t.resize((t.len() + 1).next_power_of_two(), f64::INFINITY);
        }
        let code_nodes = nodes
            .iter()
            .map(|node| {
                let f = node.feature as usize;
                if f == nf {
                    return CodeNode {
                        left: node.left,
                        feature: nf as u16,
                        rank: 0,
                    };
                }
                let t = &thresholds[f];
                let rank = t.partition_point(|&v| v < node.threshold);
                debug_assert!(t[rank] == node.threshold);
                CodeNode {
                    left: node.left,
                    feature: f as u16,
                    rank: rank as u8,
                }
            })
            .collect();
        let payload = nodes.iter().map(|node| node.threshold).collect();
        Some(Self {
            nodes: code_nodes,
            payload,
            thresholds,
        })
    }

    /// `#{j: t[j] < v}` for the padded thresholds `t` of one feature, by halving: the largest
    /// `c` with `t[c - 1] < v` (0 for NaN, which is below nothing).
    #[inline(always)]
    fn code(t: &[f64], v: f64) -> u8 {
        let mut c = 0;
        let mut half = t.len() / 2;
        while half > 0 {
            // SAFETY: `c + half - 1 <= t.len() - 2`: `c` is a sum of distinct smaller halves.
            let below = unsafe { *t.get_unchecked(c + half - 1) } < v;
            // A select, not a branch: whether a row's value is below a threshold is a coin
            // toss the predictor cannot learn.
            c = std::hint::select_unpredictable(below, c + half, c);
            half /= 2;
        }
        c as u8
    }

    /// One step of a walk over codes: the node after `at` for a row's `n_features + 1` codes.
    #[inline(always)]
    fn step(&self, row: &[u8], at: u32) -> u32 {
        debug_assert!((at as usize) < self.nodes.len());
        // SAFETY: as `Compiled::step`: the same slots, and a feature at most `n_features`.
        let node = unsafe { *self.nodes.get_unchecked(at as usize) };
        debug_assert!((node.feature as usize) < row.len());
        // SAFETY: features were checked below `n_features` on load and leaves test column
        // `n_features`; a row holds `n_features + 1` codes.
        let c = unsafe { *row.get_unchecked(node.feature as usize) };
        node.left + (c > node.rank) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::prelude::*;
    use ndarray::Array1;
    use proptest::prelude::*;
    use rand::distributions::{Distribution, Uniform};
    use rand::Rng;

    /// `n` rows of `nf` uniform features; the class is `x0 + x1 > 1` (or, with three
    /// classes, a band of it), flipped with probability `noise`.
    fn synthetic(
        n: usize,
        nf: usize,
        classes: usize,
        noise: f64,
        seed: u64,
    ) -> (Array2<f64>, Vec<usize>) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let u = Uniform::new(0.0, 1.0);
        let x = Array2::from_shape_fn((n, nf), |_| u.sample(&mut rng));
        let y = x
            .rows()
            .into_iter()
            .map(|r| {
                let s = r[0] + r[1] + 0.5 * r[2 % nf] * r[3 % nf];
                let c = if classes == 2 {
                    usize::from(s > 1.1)
                } else {
                    ((s / 2.5 * classes as f64) as usize).min(classes - 1)
                };
                if rng.gen_bool(noise) {
                    rng.gen_range(0..classes)
                } else {
                    c
                }
            })
            .collect();
        (x, y)
    }

    fn accuracy(p: &Array2<f64>, y: &[usize]) -> f64 {
        let hits = p
            .rows()
            .into_iter()
            .zip(y)
            .filter(|(r, &c)| argmax(r.as_slice().unwrap()) == c)
            .count();
        hits as f64 / y.len() as f64
    }

    fn argmax(p: &[f64]) -> usize {
        let mut best = 0;
        for (j, &v) in p.iter().enumerate() {
            if v > p[best] {
                best = j;
            }
        }
        best
    }

    fn params(trees: usize, depth: usize, seed: u64) -> ForestParams {
        ForestParams {
            trees,
            max_depth: Some(depth),
            seed,
            ..Default::default()
        }
    }

    fn bits(p: &Array2<f64>) -> Vec<u64> {
        p.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn flat_scores_equal_the_plain_walk_on_training_and_random_rows() {
        for (classes, seed) in [(2, 1), (3, 2), (5, 3)] {
            let (x, y) = synthetic(600, 6, classes, 0.1, seed);
            let f = Forest::fit(x.view(), &y, classes, &params(13, 7, seed)).unwrap();
            // Trained binary forests carry p1 in the leaves; others look values up.
            assert_eq!(f.compiled().binary, classes == 2);
            assert_eq!(
                bits(&f.predict_proba(x.view())),
                bits(&f.predict_proba_plain(x.view()))
            );
            // Off the training grid, with duplicates of thresholds and extreme values.
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let t = &f.data().trees[0];
            let mut z = Array2::from_shape_fn((300, 6), |_| rng.gen_range(-0.5..1.5));
            for (i, mut row) in z.rows_mut().into_iter().enumerate().take(60) {
                row[t.feature[0] as usize] = t.threshold[0];
                row[i % 6] = [f64::MAX, f64::MIN, f64::INFINITY, -0.0][i % 4];
            }
            assert_eq!(
                bits(&f.predict_proba(z.view())),
                bits(&f.predict_proba_plain(z.view()))
            );
            // Column-major input goes through the same walk.
            let zt = z.t().as_standard_layout().into_owned();
            assert_eq!(
                bits(&f.predict_proba(zt.t())),
                bits(&f.predict_proba_plain(z.view()))
            );
        }
    }

    /// A random (valid) tree of at most `depth` levels over `nf` features and `k` classes.
    fn random_tree(rng: &mut Xoshiro256PlusPlus, nf: usize, k: usize, depth: usize) -> Tree {
        let mut t = Tree {
            feature: vec![0],
            threshold: vec![0.0],
            left: vec![0],
            right: vec![0],
            value: vec![0.0; k],
        };
        let mut todo = vec![(0usize, 0usize)];
        while let Some((i, d)) = todo.pop() {
            if d < depth && rng.gen_bool(0.7) {
                let l = t.len();
                for _ in 0..2 {
                    t.feature.push(0);
                    t.threshold.push(0.0);
                    t.left.push(0);
                    t.right.push(0);
                    t.value.extend(std::iter::repeat_n(0.0, k));
                }
                t.feature[i] = rng.gen_range(0..nf) as u32;
                t.threshold[i] = rng.gen_range(-1.0..1.0);
                // Children in either order: the flat form must not assume adjacency.
                let (a, b) = if rng.gen_bool(0.5) {
                    (l, l + 1)
                } else {
                    (l + 1, l)
                };
                t.left[i] = a as u32;
                t.right[i] = b as u32;
                todo.push((a, d + 1));
                todo.push((b, d + 1));
            } else {
                let raw: Vec<f64> = (0..k).map(|_| rng.gen_range(0.0..1.0)).collect();
                let s: f64 = raw.iter().sum();
                for (v, r) in t.value[i * k..(i + 1) * k].iter_mut().zip(&raw) {
                    *v = r / s;
                }
            }
        }
        t
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn flat_equals_plain_on_random_forests(
            seed in any::<u64>(),
            trees in 1usize..12,
            nf in 1usize..6,
            k in 1usize..4,
            depth in 0usize..9,
            rows in 0usize..300,
        ) {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let data = ForestData {
                n_features: nf,
                n_classes: k,
                trees: (0..trees).map(|_| random_tree(&mut rng, nf, k, depth)).collect(),
            };
            let f = Forest::try_from(data).unwrap();
            let x = Array2::from_shape_fn((rows, nf), |_| rng.gen_range(-1.2..1.2));
            prop_assert_eq!(bits(&f.predict_proba(x.view())), bits(&f.predict_proba_plain(x.view())));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_forest_on_any_number_of_threads() {
        let (x, y) = synthetic(2000, 8, 2, 0.1, 7);
        let fit = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| Forest::fit(x.view(), &y, 2, &params(12, 8, 99)).unwrap())
        };
        let one = fit(1);
        assert_eq!(one, fit(4));
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            serde_json::to_string(&fit(3)).unwrap()
        );
        // A different seed gives a different forest.
        let other = Forest::fit(x.view(), &y, 2, &params(12, 8, 100)).unwrap();
        assert_ne!(one, other);
    }

    #[test]
    fn a_single_tree_is_as_accurate_as_linfas_and_the_forest_beats_it() {
        let (x, y) = synthetic(6000, 8, 2, 0.15, 11);
        let (xt, yt) = (x.slice(ndarray::s![..4000, ..]), &y[..4000]);
        let (xh, yh) = (x.slice(ndarray::s![4000.., ..]), &y[4000..]);
        let depth = 6;
        let single = ForestParams {
            trees: 1,
            max_depth: Some(depth),
            max_features: Some(8),
            bootstrap: false,
            ..Default::default()
        };
        let ours = Forest::fit(xt, yt, 2, &single).unwrap();
        let ours_acc = accuracy(&ours.predict_proba(xh), yh);
        let ds = Dataset::new(xt.to_owned(), Array1::from_vec(yt.to_vec()));
        let linfa = linfa_trees::DecisionTree::params()
            .max_depth(Some(depth))
            .fit(&ds)
            .unwrap();
        let pred: Array1<usize> = linfa.predict(&xh.to_owned());
        let linfa_acc =
            pred.iter().zip(yh).filter(|(a, b)| a == b).count() as f64 / yh.len() as f64;
        assert!(
            (ours_acc - linfa_acc).abs() <= 0.02,
            "ours {ours_acc}, linfa {linfa_acc}"
        );

        let forest = Forest::fit(xt, yt, 2, &params(40, depth, 5)).unwrap();
        let forest_acc = accuracy(&forest.predict_proba(xh), yh);
        assert!(
            forest_acc >= ours_acc,
            "forest {forest_acc}, single tree {ours_acc}"
        );
        assert!(forest_acc > 0.75, "forest {forest_acc}");
    }

    #[test]
    fn probabilities_are_proportions_for_several_classes() {
        let (x, y) = synthetic(1500, 5, 4, 0.1, 3);
        let f = Forest::fit(x.view(), &y, 4, &params(15, 6, 1)).unwrap();
        let p = f.predict_proba(x.view());
        for r in p.rows() {
            assert!(r.iter().all(|&v| (0.0..=1.0).contains(&v)), "{r}");
            assert!((r.sum() - 1.0).abs() < 1e-9, "{r}");
        }
        assert!(accuracy(&p, &y) > 0.7);
        // Every leaf's value sums to 1.
        for t in &f.data().trees {
            for i in (0..t.len()).filter(|&i| t.is_leaf(i)) {
                let s: f64 = t.value[i * 4..(i + 1) * 4].iter().sum();
                assert!((s - 1.0).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn constant_features_pure_nodes_and_one_class_give_leaves() {
        // Feature 0 constant, feature 1 decides: the trees never test feature 0.
        let x = Array2::from_shape_fn((200, 2), |(i, j)| if j == 0 { 3.0 } else { i as f64 });
        let y: Vec<usize> = (0..200).map(|i| usize::from(i >= 100)).collect();
        let f = Forest::fit(x.view(), &y, 2, &params(5, 10, 0)).unwrap();
        for t in &f.data().trees {
            for i in (0..t.len()).filter(|&i| !t.is_leaf(i)) {
                assert_eq!(t.feature[i], 1);
            }
            // Pure children are leaves: one split separates the classes.
            assert!(t.len() <= 3, "{t:?}");
        }
        let p = f.predict_proba(x.view());
        assert_eq!(accuracy(&p, &y), 1.0);

        // Every feature constant: one leaf per tree, with the class shares.
        let x = Array2::from_elem((10, 3), 1.0);
        let y = vec![0, 1, 1, 1, 1, 0, 1, 1, 1, 1];
        let f = Forest::fit(x.view(), &y, 2, &params(3, 10, 0)).unwrap();
        assert!(f.data().trees.iter().all(|t| t.len() == 1));
        let p = f.predict_proba_plain(x.view());
        assert_eq!(bits(&f.predict_proba(x.view())), bits(&p));

        // All rows one class: probability 1 for it, 0 for a class never seen.
        let y = vec![2; 10];
        let x = Array2::from_shape_fn((10, 2), |(i, j)| (i * j) as f64);
        let f = Forest::fit(x.view(), &y, 3, &params(3, 10, 0)).unwrap();
        let p = f.predict_proba(x.view());
        assert!(p.rows().into_iter().all(|r| r.to_vec() == [0.0, 0.0, 1.0]));
    }

    #[test]
    fn codes_split_exactly_as_values_at_thresholds_nan_zeros_and_infinities() {
        // One feature's thresholds include -0.0 and 0.0 (one code), the infinities and
        // neighbouring floats; rows hold exactly those values, their neighbours and NaN.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let special = [
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.0,
            f64::from_bits(1.0f64.to_bits() + 1),
            -1e-300,
        ];
        let mut trees: Vec<Tree> = (0..6).map(|_| random_tree(&mut rng, 3, 2, 6)).collect();
        for t in &mut trees {
            for i in 0..t.len() {
                if !t.is_leaf(i) && rng.gen_bool(0.5) {
                    t.threshold[i] = special[rng.gen_range(0..special.len())];
                }
            }
        }
        let f = Forest::try_from(ForestData {
            n_features: 3,
            n_classes: 2,
            trees,
        })
        .unwrap();
        assert!(f.compiled().quantised.is_some());
        let mut values: Vec<f64> = f
            .data()
            .trees
            .iter()
            .flat_map(|t| t.threshold.clone())
            .collect();
        values.extend(special);
        values.push(f64::NAN);
        let near: Vec<f64> = values
            .iter()
            .flat_map(|&v| [v, v.next_up(), v.next_down()])
            .collect();
        let x = Array2::from_shape_fn((1500, 3), |_| near[rng.gen_range(0..near.len())]);
        assert_eq!(
            bits(&f.predict_proba(x.view())),
            bits(&f.predict_proba_plain(x.view()))
        );
    }

    #[test]
    fn forests_with_many_thresholds_or_a_nan_one_score_by_values() {
        // More than 255 distinct thresholds on one feature (a legacy or hand-written forest):
        // codes would not fit a byte.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
        let mut data = ForestData {
            n_features: 2,
            n_classes: 3,
            trees: (0..60).map(|_| random_tree(&mut rng, 2, 3, 8)).collect(),
        };
        let mut inner = 0;
        for t in &mut data.trees {
            for i in 0..t.len() {
                if !t.is_leaf(i) {
                    t.feature[i] = 1;
                    inner += 1;
                }
            }
        }
        assert!(inner > 300, "{inner}");
        let f = Forest::try_from(data.clone()).unwrap();
        assert!(f.compiled().quantised.is_none());
        let x = Array2::from_shape_fn((700, 2), |_| rng.gen_range(-1.2..1.2));
        assert_eq!(
            bits(&f.predict_proba(x.view())),
            bits(&f.predict_proba_plain(x.view()))
        );
        // A NaN threshold sends every row left.
        let mut tree = data.trees.iter().find(|t| !t.is_leaf(0)).unwrap().clone();
        tree.threshold[0] = f64::NAN;
        let data = ForestData {
            trees: vec![tree],
            ..data
        };
        let f = Forest::try_from(data).unwrap();
        assert!(f.compiled().quantised.is_none());
        assert_eq!(
            bits(&f.predict_proba(x.view())),
            bits(&f.predict_proba_plain(x.view()))
        );
    }

    #[test]
    fn nan_does_not_panic_and_goes_left() {
        let (x, y) = synthetic(300, 3, 2, 0.0, 9);
        let f = Forest::fit(x.view(), &y, 2, &params(4, 5, 0)).unwrap();
        let z = Array2::from_elem((3, 3), f64::NAN);
        assert_eq!(
            bits(&f.predict_proba(z.view())),
            bits(&f.predict_proba_plain(z.view()))
        );
        assert!(Forest::fit(z.view(), &[0, 1, 0], 2, &params(1, 2, 0)).is_err());
    }

    #[test]
    fn bin_edges_are_sklearn_midpoints_for_few_values_and_quantiles_for_many() {
        assert_eq!(bin_edges(&[3.0, 1.0, 2.0, 1.0], 255), [1.5, 2.5]);
        assert_eq!(bin_edges(&[1.0; 5], 255), Vec::<f64>::new());
        let col: Vec<f64> = (0..1000).map(f64::from).collect();
        let e = bin_edges(&col, 4);
        assert_eq!(e, [249.5, 499.5, 749.5]);
        let e = bin_edges(&col, 255);
        assert!(e.len() <= 254 && e.len() > 240, "{}", e.len());
        assert!(e.windows(2).all(|w| w[0] < w[1]));
        // Adjacent floats: the midpoint rounds up, so the lower value is the edge.
        let a = 1.0f64;
        let b = f64::from_bits(a.to_bits() + 1);
        assert_eq!(bin_edges(&[a, b], 255), [a]);
    }

    #[test]
    fn estimator_artifacts_round_trip_and_ties_go_to_class_0() {
        use super::super::estimator::{Algorithm, Estimator, Hyperparameters, Targets};
        let (x, y) = synthetic(500, 4, 2, 0.1, 4);
        let hp = Hyperparameters {
            trees: 10,
            max_depth: Some(5),
            ..Default::default()
        };
        let targets = Targets::Classes {
            y: Array1::from_vec(y.clone()),
            n_classes: 2,
        };
        let est = Estimator::fit(Algorithm::RandomForest, x.clone(), targets, &hp).unwrap();
        let json = serde_json::to_value(&est).unwrap();
        assert_eq!(json["algorithm"], "random-forest");
        assert!(json["fitted"]["forest"]["trees"][0]["threshold"].is_array());
        let back: Estimator = serde_json::from_value(json.clone()).unwrap();
        let (a, b) = (est.predict(x.view(), 2), back.predict(x.view(), 2));
        assert_eq!(a, b);
        let Estimator::RandomForest(RandomForestModel::Forest { forest }) = &est else {
            panic!("not our forest")
        };
        let p = forest.predict_proba_plain(x.view());
        for (i, r) in p.rows().into_iter().enumerate() {
            assert_eq!(a.score[i].to_bits(), r[1].to_bits());
            assert_eq!(a.class.as_ref().unwrap()[i], usize::from(r[1] > r[0]));
        }
        // Content before the tag: serde buffers it, and the fields still tell the layouts apart.
        let text = format!(
            r#"{{"fitted":{},"algorithm":"random-forest"}}"#,
            serde_json::to_string(&json["fitted"]).unwrap()
        );
        let swapped: Estimator = serde_json::from_str(&text).unwrap();
        assert_eq!(swapped.predict(x.view(), 2), a);

        // Two trees that disagree completely: p = (0.5, 0.5), class 0.
        let leafy = |p1: f64| Tree {
            feature: vec![0],
            threshold: vec![0.0],
            left: vec![0],
            right: vec![0],
            value: vec![1.0 - p1, p1],
        };
        let tie = Forest::try_from(ForestData {
            n_features: 1,
            n_classes: 2,
            trees: vec![leafy(1.0), leafy(0.0)],
        })
        .unwrap();
        let p = tie.predict(Array2::zeros((2, 1)).view());
        assert_eq!(p.score, [0.5, 0.5]);
        assert_eq!(p.class, Some(vec![0, 0]));
    }

    #[test]
    fn linfa_forest_artifacts_still_load_and_score_by_votes() {
        use super::super::estimator::Estimator;
        use linfa_ensemble::EnsembleLearnerParams;
        let (x, y) = synthetic(400, 4, 3, 0.1, 8);
        let ds = Dataset::new(x.clone(), Array1::from_vec(y));
        let old = EnsembleLearnerParams::new_fixed_rng(
            linfa_trees::DecisionTree::params().max_depth(Some(4)),
            Xoshiro256PlusPlus::seed_from_u64(1),
        )
        .ensemble_size(7)
        .bootstrap_proportion(1.0)
        .feature_proportion(0.5)
        .fit(&ds)
        .unwrap();
        // What the linfa-based nightshift wrote.
        let artifact = serde_json::json!({
            "algorithm": "random-forest",
            "fitted": {"trees": old.models, "tree_features": old.model_features},
        });
        let est: Estimator = serde_json::from_value(artifact.clone()).unwrap();
        assert!(matches!(
            est,
            Estimator::RandomForest(RandomForestModel::Legacy { .. })
        ));
        let p = est.predict(x.view(), 3);
        let mut votes = Array2::<f64>::zeros((x.nrows(), 3));
        for (tree, features) in old.models.iter().zip(&old.model_features) {
            let pred: Array1<usize> = tree.predict(&x.select(ndarray::Axis(1), features));
            for (i, c) in pred.iter().enumerate() {
                votes[[i, *c]] += 1.0;
            }
        }
        for (i, r) in votes.rows().into_iter().enumerate() {
            let best = argmax(r.as_slice().unwrap());
            assert_eq!(p.class.as_ref().unwrap()[i], best);
            assert_eq!(p.score[i], r[best] / 7.0);
        }
        // Written back, it keeps its layout.
        assert_eq!(serde_json::to_value(&est).unwrap(), artifact);
        // Neither layout: refused.
        let bad = serde_json::json!({"algorithm": "random-forest", "fitted": {"trees": []}});
        assert!(serde_json::from_value::<Estimator>(bad).is_err());
    }

    #[test]
    fn malformed_artifacts_are_refused() {
        let tree = |left: Vec<u32>, right: Vec<u32>, feature: Vec<u32>| Tree {
            threshold: vec![0.0; left.len()],
            value: vec![0.5; left.len() * 2],
            feature,
            left,
            right,
        };
        let data = |t: Tree| ForestData {
            n_features: 2,
            n_classes: 2,
            trees: vec![t],
        };
        assert!(Forest::try_from(data(tree(vec![1, 0, 0], vec![2, 0, 0], vec![1, 0, 0]))).is_ok());
        // A cycle, a child out of range, an unknown feature.
        assert!(Forest::try_from(data(tree(vec![1, 0], vec![0, 0], vec![0, 0]))).is_err());
        assert!(Forest::try_from(data(tree(vec![1, 0, 0], vec![3, 0, 0], vec![0, 0, 0]))).is_err());
        assert!(Forest::try_from(data(tree(vec![1, 0, 0], vec![2, 0, 0], vec![2, 0, 0]))).is_err());
        assert!(serde_json::from_str::<Forest>(
            r#"{"n_features":1,"n_classes":2,"trees":[{"feature":[1,0],"threshold":[0,0],"left":[1,0],"right":[1,0],"value":[0,0,1,0]}]}"#
        )
        .is_err());
        // Shared children (a graph, found in review: it passed, then the compiled walk stopped
        // on an inner node, and a chain of them compiles to 2^n nodes).
        let shared = tree(
            vec![1, 2, 4, 4, 8, 0, 0, 0, 0, 0],
            vec![3, 5, 6, 7, 9, 0, 0, 0, 0, 0],
            vec![0; 10],
        );
        let e = Forest::try_from(data(shared)).unwrap_err();
        assert!(e.contains("node 4 has two parents"), "{e}");
        let chain = tree(vec![1, 2, 0], vec![1, 2, 0], vec![0; 3]);
        assert!(Forest::try_from(data(chain)).is_err());
        // A leaf whose proportion is not one.
        let mut t = tree(vec![1, 0, 0], vec![2, 0, 0], vec![1, 0, 0]);
        t.value[2] = 7.0;
        assert!(Forest::try_from(data(t)).is_err());
    }
}
