//! The tree operators (`TreeEnsembleClassifier`, `TreeEnsembleRegressor`, ml opsets 1 and 3, and
//! `TreeEnsemble`, ml opset 5) compiled into an [`Ensemble`] that gives the trees' raw sums, and
//! onnxruntime's aggregation after it: base values, its special cases for two classes with one
//! score column, which classes a row's leaves scored at all (onnxruntime writes 0 for a class no
//! leaf scored), and the post-transform in float.

use std::collections::{HashMap, VecDeque};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use super::ops::{Buf, Post, Step};
use super::proto::NodeProto;
use super::{Attrs, Compiler, ConstData, Elem};
use crate::model::formats::ensemble::{
    Arithmetic, Ensemble, Node, Rule, Split, Transform, Tree, TreeOutput,
};
use crate::model::formats::{Label, Task};

/// At most this many outputs (classes or targets) per tree ensemble.
const MAX_OUTPUTS: usize = 1 << 16;
/// At most this many leaf values (outputs x leaves) per tree ensemble: 32 MiB.
const MAX_LEAF_VALUES: usize = 1 << 22;
/// At most this many targets of a regressor (nightshift scores one; a selection may follow).
const MAX_TARGETS: usize = 256;

/// onnxruntime's `AGGREGATE_FUNCTION` (classifiers always sum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Agg {
    Sum,
    Average,
    Min,
    Max,
}

/// Whether a class gets a score from some leaf: decided at import when every tree scores it in
/// every leaf (or no leaf ever does), otherwise per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Scored {
    Always,
    Never,
    PerRow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TreeStep {
    pub input: usize,
    pub output: usize,
    /// The trees' raw per-class sums (SUM, AVERAGE), or the trees themselves with NaN for a
    /// class a leaf does not score (MIN, MAX: folded here, not by the ensemble's scorer).
    pub ensemble: Ensemble,
    /// Counts of scoring leaves per class, for classes that are `Scored::PerRow`.
    indicator: Option<Ensemble>,
    scored: Vec<Scored>,
    /// Thresholds, weights and sums in float (float and int64 inputs) or double (double input).
    f32s: bool,
    agg: Agg,
    base: Vec<f64>,
    n_trees: usize,
    post: Post,
    /// `Some` for a classifier: onnxruntime's `binary_case_` and `weights_are_all_positive_`.
    classifier: Option<(bool, bool)>,
    width: usize,
}

/// A node as the attributes give it, before the trees are laid out.
enum RawNode {
    Branch {
        feature: usize,
        mode: Mode,
        threshold: f64,
        nan_true: bool,
        t: usize,
        f: usize,
    },
    Leaf {
        weights: Vec<(usize, f64)>,
    },
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
}

pub(crate) fn compile(c: &mut Compiler, node: &NodeProto, a: &Attrs) -> Result<()> {
    let x = c.value(node.input.first().map(|s| s.as_str()).unwrap_or(""))?;
    if x.elem == Elem::Str || x.dims.len() > 1 {
        bail!("{} reads a [N, k] tensor of numbers", node.op_type);
    }
    let n_features = x.width();
    let f32s = x.elem != Elem::F64;
    let v5 = node.op_type == "TreeEnsemble";
    let classifier = node.op_type == "TreeEnsembleClassifier";
    let (nodes, roots, n_out, base, post, agg, labels) = if v5 {
        read_v5(a, f32s, n_features)?
    } else {
        read_v3(a, f32s, n_features, classifier)?
    };
    let n_trees = roots.len();
    if n_trees == 0 {
        bail!("the ensemble has no tree");
    }
    let minmax = matches!(agg, Agg::Min | Agg::Max);
    // Every leaf holds `n_out` values: bound that by what the file holds, not by a count it
    // states (a forged `n_targets` must not size an allocation).
    let leaves = nodes
        .iter()
        .filter(|n| matches!(n, RawNode::Leaf { .. }))
        .count();
    let most = if classifier { MAX_OUTPUTS } else { MAX_TARGETS };
    if n_out > most || n_out.saturating_mul(leaves.max(1)) > MAX_LEAF_VALUES {
        bail!("the ensemble has {n_out} outputs for {leaves} leaves, more than nightshift holds");
    }

    // Lay the trees out, each from its root; leaf values: per-class sums of the weights (NaN for
    // an unscored class under MIN/MAX), or the first weight for a single target.
    let single = n_out == 1 && !classifier;
    let mut trees = Vec::with_capacity(n_trees);
    let mut ind_trees = Vec::with_capacity(n_trees);
    let mut always = vec![false; n_out];
    let mut ever = vec![false; n_out];
    for &root in &roots {
        let (order, index) = reachable(&nodes, root)?;
        let mut tnodes = Vec::with_capacity(order.len());
        let mut inodes = Vec::with_capacity(order.len());
        let mut all = vec![true; n_out];
        for &o in &order {
            match &nodes[o] {
                RawNode::Branch {
                    feature,
                    mode,
                    threshold,
                    nan_true,
                    t,
                    f,
                } => {
                    let (rule, true_left) = rule(*mode, *threshold, *nan_true);
                    let (ti, fi) = (index[t], index[f]);
                    let (left, right) = if true_left { (ti, fi) } else { (fi, ti) };
                    let s = Split {
                        feature: *feature as u32,
                        rule,
                        left,
                        right,
                    };
                    tnodes.push(Node::Split(s.clone()));
                    inodes.push(Node::Split(s));
                }
                RawNode::Leaf { weights } => {
                    let mut values = vec![if minmax { f64::NAN } else { 0.0 }; n_out];
                    let mut has = vec![false; n_out];
                    if single {
                        if let Some(&(_, w)) = weights.first() {
                            values[0] = w;
                            has[0] = true;
                        }
                    } else {
                        for &(k, w) in weights {
                            values[k] = if has[k] {
                                round(values[k] + w, f32s)
                            } else {
                                w
                            };
                            has[k] = true;
                        }
                    }
                    for k in 0..n_out {
                        all[k] &= has[k];
                        ever[k] |= has[k];
                    }
                    inodes.push(Node::Leaf {
                        values: has.iter().map(|&h| if h { 1.0 } else { 0.0 }).collect(),
                    });
                    tnodes.push(Node::Leaf { values });
                }
            }
        }
        for k in 0..n_out {
            always[k] |= all[k];
        }
        trees.push(Tree {
            nodes: tnodes,
            output: TreeOutput::All,
        });
        ind_trees.push(Tree {
            nodes: inodes,
            output: TreeOutput::All,
        });
    }
    let scored: Vec<Scored> = (0..n_out)
        .map(|k| {
            if always[k] {
                Scored::Always
            } else if !ever[k] {
                Scored::Never
            } else {
                Scored::PerRow
            }
        })
        .collect();
    let ensemble_of = |trees: Vec<Tree>, arithmetic| Ensemble {
        n_features,
        n_outputs: n_out,
        trees,
        base: vec![0.0; n_out],
        divisor: 1.0,
        base_after_average: true,
        arithmetic,
        transform: Transform::Identity,
        compiled: Default::default(),
    };
    let arithmetic = if f32s {
        Arithmetic::F32
    } else {
        Arithmetic::F64
    };
    let indicator = scored
        .contains(&Scored::PerRow)
        .then(|| ensemble_of(ind_trees, Arithmetic::F64));
    if let Some(i) = &indicator {
        i.check()?;
    }
    let ensemble = ensemble_of(trees, arithmetic);
    ensemble.check()?;

    let width = n_out;
    let (task, class_info) = match labels {
        Some(labels) => {
            if labels.len() < 2 {
                bail!("a classifier needs at least two labels");
            }
            if labels.len() == 2 && base.len() > 2 || labels.len() > 2 && base.len() > labels.len()
            {
                bail!("{} base values for {} classes", base.len(), labels.len());
            }
            if labels.len() == 2 && post == Post::Probit {
                bail!(
                    "PROBIT on a two-class ensemble: onnxruntime leaves one probability undefined"
                );
            }
            // onnxruntime's binary_case_ and weights_are_all_positive_.
            let (classes, all_positive) = class_stats(&nodes);
            (
                Task::Classification { labels },
                Some((n_out == 2 && classes == 1, all_positive)),
            )
        }
        None => (Task::Regression, None),
    };
    let mut objective = format!("{} post_transform={}", node.op_type, post.name());
    if agg != Agg::Sum && class_info.is_none() {
        let name = match agg {
            Agg::Sum => "SUM",
            Agg::Average => "AVERAGE",
            Agg::Min => "MIN",
            Agg::Max => "MAX",
        };
        objective.push_str(&format!(" aggregate_function={name}"));
    }
    let out_name = c.scores_output(node, classifier)?;
    let step = TreeStep {
        input: x.slot,
        output: 0,
        ensemble,
        indicator,
        scored,
        f32s,
        agg,
        base,
        n_trees,
        post,
        classifier: class_info,
        width,
    };
    c.emit(&out_name, Elem::F32, vec![width], |output| {
        Step::Trees(Box::new(TreeStep { output, ..step }))
    })?;
    c.set_model(task, objective);
    Ok(())
}

type Read = (
    Vec<RawNode>,
    Vec<usize>,
    usize,
    Vec<f64>,
    Post,
    Agg,
    Option<Vec<Label>>,
);

/// Float attributes, or their `*_as_tensor` double version (double inputs only).
fn numbers(a: &Attrs, name: &str, f32s: bool) -> Result<Vec<f64>> {
    let t = a.tensor(&format!("{name}_as_tensor"))?;
    let fl = a.floats(name);
    match t {
        Some(t) => {
            if !fl.is_empty() {
                bail!("both {name} and {name}_as_tensor are set");
            }
            match t.data {
                ConstData::F64(v) if !f32s => Ok(v),
                ConstData::F64(_) => bail!("{name}_as_tensor is double but the input is float"),
                ConstData::F32(v) => Ok(v.iter().map(|&x| x as f64).collect()),
                _ => bail!("{name}_as_tensor is not a float tensor"),
            }
        }
        None => Ok(fl.iter().map(|&x| x as f64).collect()),
    }
}

fn read_v3(a: &Attrs, f32s: bool, n_features: usize, classifier: bool) -> Result<Read> {
    let treeids = a.ints("nodes_treeids");
    let nodeids = a.ints("nodes_nodeids");
    let featureids = a.ints("nodes_featureids");
    let modes = a.strings("nodes_modes");
    let values = numbers(a, "nodes_values", f32s)?;
    let trues = a.ints("nodes_truenodeids");
    let falses = a.ints("nodes_falsenodeids");
    let missing = a.ints("nodes_missing_value_tracks_true");
    let n = treeids.len();
    for (name, len) in [
        ("nodes_nodeids", nodeids.len()),
        ("nodes_featureids", featureids.len()),
        ("nodes_modes", modes.len()),
        ("nodes_values", values.len()),
        ("nodes_truenodeids", trues.len()),
        ("nodes_falsenodeids", falses.len()),
    ] {
        if len != n {
            bail!("{name} has {len} entries for {n} nodes");
        }
    }
    let p = if classifier { "class" } else { "target" };
    let w_ids = a.ints(&format!("{p}_ids"));
    let w_nodes = a.ints(&format!("{p}_nodeids"));
    let w_trees = a.ints(&format!("{p}_treeids"));
    let w_values = numbers(a, &format!("{p}_weights"), f32s)?;
    let nw = w_ids.len();
    if w_nodes.len() != nw || w_trees.len() != nw || w_values.len() != nw {
        bail!("the {p}_ids, {p}_nodeids, {p}_treeids and {p}_weights lengths differ");
    }
    let labels = if classifier {
        let s = a.strings("classlabels_strings");
        let i = a.ints("classlabels_int64s");
        Some(if !s.is_empty() {
            s.into_iter().map(Label::Text).collect::<Vec<_>>()
        } else {
            i.iter().map(|&v| Label::Int(v)).collect()
        })
    } else {
        None
    };
    let n_out = match &labels {
        Some(l) => l.len(),
        None => {
            let t = a.int("n_targets").unwrap_or(0);
            usize::try_from(t)
                .ok()
                .filter(|&t| t > 0)
                .ok_or_else(|| anyhow!("n_targets is {t}"))?
        }
    };
    let base = numbers(a, "base_values", f32s)?;
    let post = Post::parse(a.string("post_transform"))?;
    let agg = if classifier {
        Agg::Sum
    } else {
        match a.string("aggregate_function").as_deref().unwrap_or("SUM") {
            "SUM" => Agg::Sum,
            "AVERAGE" => Agg::Average,
            "MIN" => Agg::Min,
            "MAX" => Agg::Max,
            other => bail!("unknown aggregate_function {other}"),
        }
    };

    let mut at: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
    for i in 0..n {
        if at.insert((treeids[i], nodeids[i]), i).is_some() {
            bail!("node {} of tree {} appears twice", nodeids[i], treeids[i]);
        }
    }
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let mode = match modes[i].as_str() {
            "LEAF" => None,
            "BRANCH_LEQ" => Some(Mode::Leq),
            "BRANCH_LT" => Some(Mode::Lt),
            "BRANCH_GTE" => Some(Mode::Gte),
            "BRANCH_GT" => Some(Mode::Gt),
            "BRANCH_EQ" => Some(Mode::Eq),
            "BRANCH_NEQ" => Some(Mode::Neq),
            other => bail!("node mode {other} is not supported"),
        };
        nodes.push(match mode {
            None => RawNode::Leaf {
                weights: Vec::new(),
            },
            Some(mode) => {
                let child = |id: i64, which: &str| -> Result<usize> {
                    let j = at.get(&(treeids[i], id)).copied().ok_or_else(|| {
                        anyhow!(
                            "node {} of tree {} has a missing {which} child {id}",
                            nodeids[i],
                            treeids[i]
                        )
                    })?;
                    if j == i {
                        bail!(
                            "node {} of tree {} is its own child",
                            nodeids[i],
                            treeids[i]
                        );
                    }
                    Ok(j)
                };
                RawNode::Branch {
                    feature: feature(featureids[i], n_features)?,
                    mode,
                    threshold: values[i],
                    nan_true: missing.get(i) == Some(&1),
                    t: child(trues[i], "true")?,
                    f: child(falses[i], "false")?,
                }
            }
        });
    }
    for w in 0..nw {
        let k = usize::try_from(w_ids[w])
            .ok()
            .filter(|&k| k < n_out)
            .ok_or_else(|| anyhow!("{p}_ids has {} for {n_out} outputs", w_ids[w]))?;
        let i = *at.get(&(w_trees[w], w_nodes[w])).ok_or_else(|| {
            anyhow!(
                "a weight is for node {} of tree {}, which does not exist",
                w_nodes[w],
                w_trees[w]
            )
        })?;
        if let RawNode::Leaf { weights } = &mut nodes[i] {
            weights.push((k, round(w_values[w], f32s)));
        } // onnxruntime ignores weights on branches (old onnxmltools wrote some)
    }
    // onnxruntime's roots: the first node of each run of equal tree ids.
    let mut roots = Vec::new();
    for i in 0..n {
        if i == 0 || treeids[i] != treeids[i - 1] {
            roots.push(i);
        }
    }
    let base = base.into_iter().map(|b| round(b, f32s)).collect();
    Ok((nodes, roots, n_out, base, post, agg, labels))
}

fn read_v5(a: &Attrs, f32s: bool, n_features: usize) -> Result<Read> {
    let tensor = |name: &str| -> Result<Vec<f64>> {
        let t = a
            .tensor(name)?
            .ok_or_else(|| anyhow!("{name} is missing"))?;
        match t.data {
            ConstData::F32(v) if f32s => Ok(v.iter().map(|&x| x as f64).collect()),
            ConstData::F64(v) if !f32s => Ok(v),
            _ => bail!("{name} must be a tensor of the input's type"),
        }
    };
    let featureids = a.ints("nodes_featureids");
    let splits = tensor("nodes_splits")?;
    let modes = a
        .tensor("nodes_modes")?
        .and_then(|t| t.as_i64().map(|v| v.to_vec()))
        .ok_or_else(|| anyhow!("nodes_modes must be an integer tensor"))?;
    let trues = a.ints("nodes_truenodeids");
    let falses = a.ints("nodes_falsenodeids");
    let trueleafs = a.ints("nodes_trueleafs");
    let falseleafs = a.ints("nodes_falseleafs");
    let missing = a.ints("nodes_missing_value_tracks_true");
    let leaf_targets = a.ints("leaf_targetids");
    let leaf_weights = tensor("leaf_weights")?;
    let roots_attr = a.ints("tree_roots");
    let n = featureids.len();
    for (name, len) in [
        ("nodes_splits", splits.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", trues.len()),
        ("nodes_falsenodeids", falses.len()),
        ("nodes_trueleafs", trueleafs.len()),
        ("nodes_falseleafs", falseleafs.len()),
    ] {
        if len != n {
            bail!("{name} has {len} entries for {n} nodes");
        }
    }
    if !missing.is_empty() && missing.len() != n {
        bail!(
            "nodes_missing_value_tracks_true has {} entries for {n} nodes",
            missing.len()
        );
    }
    let nl = leaf_targets.len();
    if leaf_weights.len() != nl {
        bail!("leaf_targetids and leaf_weights lengths differ");
    }
    let t = a.int("n_targets").unwrap_or(0);
    let n_out = usize::try_from(t)
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| anyhow!("n_targets is {t}"))?;
    let post = match a.int("post_transform").unwrap_or(0) {
        0 => Post::None,
        1 => Post::Softmax,
        2 => Post::Logistic,
        3 => Post::SoftmaxZero,
        4 => Post::Probit,
        p => bail!("unknown post_transform {p}"),
    };
    let agg = match a.int("aggregate_function").unwrap_or(1) {
        0 => Agg::Average,
        1 => Agg::Sum,
        2 => Agg::Min,
        3 => Agg::Max,
        g => bail!("unknown aggregate_function {g}"),
    };
    // Branches first (index i), then leaves (index n + j).
    let mut nodes: Vec<RawNode> = Vec::with_capacity(n + nl);
    for i in 0..n {
        let child = |id: i64, leaf: i64| -> Result<usize> {
            let limit = if leaf == 1 { nl } else { n };
            let j = usize::try_from(id)
                .ok()
                .filter(|&j| j < limit)
                .ok_or_else(|| anyhow!("node {i} has child {id} out of range"))?;
            Ok(if leaf == 1 { n + j } else { j })
        };
        let (t, f) = (
            child(trues[i], trueleafs[i])?,
            child(falses[i], falseleafs[i])?,
        );
        if t == i || f == i {
            bail!("node {i} is its own child");
        }
        let mode = match modes[i] {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            5 => Mode::Neq,
            6 => bail!("BRANCH_MEMBER (set membership) nodes are not supported yet"),
            m => bail!("node mode {m} is not supported"),
        };
        nodes.push(RawNode::Branch {
            feature: feature(featureids[i], n_features)?,
            mode,
            threshold: splits[i],
            nan_true: missing.get(i) == Some(&1),
            t,
            f,
        });
    }
    for j in 0..nl {
        let k = usize::try_from(leaf_targets[j])
            .ok()
            .filter(|&k| k < n_out)
            .ok_or_else(|| anyhow!("leaf_targetids has {}", leaf_targets[j]))?;
        nodes.push(RawNode::Leaf {
            weights: vec![(k, leaf_weights[j])],
        });
    }
    let mut roots = Vec::with_capacity(roots_attr.len());
    for &r in roots_attr {
        roots.push(
            usize::try_from(r)
                .ok()
                .filter(|&r| r < n)
                .ok_or_else(|| anyhow!("tree root {r} is out of range"))?,
        );
    }
    Ok((nodes, roots, n_out, Vec::new(), post, agg, None))
}

fn feature(id: i64, n_features: usize) -> Result<usize> {
    usize::try_from(id)
        .ok()
        .filter(|&f| f < n_features)
        .ok_or_else(|| anyhow!("a split reads feature {id} of an input with {n_features}"))
}

fn round(x: f64, f32s: bool) -> f64 {
    if f32s {
        x as f32 as f64
    } else {
        x
    }
}

/// The number of distinct classes with a weight, and whether every weight is non-negative.
fn class_stats(nodes: &[RawNode]) -> (usize, bool) {
    let mut classes = std::collections::HashSet::new();
    let mut positive = true;
    for n in nodes {
        if let RawNode::Leaf { weights } = n {
            for &(k, w) in weights {
                classes.insert(k);
                positive &= w >= 0.0 || w.is_nan();
            }
        }
    }
    (classes.len(), positive)
}

/// The nodes reachable from `root`, in breadth-first order, with their new indices. A node
/// reached twice (a cycle, which onnxruntime would loop on forever, or a shared subtree, which
/// no trainer writes and the flat layout would copy per path) is refused.
fn reachable(nodes: &[RawNode], root: usize) -> Result<(Vec<usize>, HashMap<usize, u32>)> {
    let mut index: HashMap<usize, u32> = HashMap::new();
    let mut order = vec![root];
    index.insert(root, 0);
    let mut q = VecDeque::from([root]);
    while let Some(i) = q.pop_front() {
        if let RawNode::Branch { t, f, .. } = nodes[i] {
            for c in [t, f] {
                if index.contains_key(&c) {
                    bail!("a tree reaches one of its nodes twice (a cycle or a shared subtree)");
                }
                index.insert(c, order.len() as u32);
                order.push(c);
                q.push_back(c);
            }
        }
    }
    Ok((order, index))
}

/// onnxruntime's test at a node as a [`Rule`], and whether its true branch is the rule's left.
fn rule(mode: Mode, t: f64, nan_true: bool) -> (Rule, bool) {
    let below = |t: f64| {
        if t.is_nan() {
            f64::INFINITY
        } else {
            t.next_down()
        }
    };
    match mode {
        Mode::Leq => (
            Rule::LessEq {
                threshold: t,
                nan_left: nan_true,
            },
            true,
        ),
        Mode::Lt if t.is_nan() => (
            Rule::LessEq {
                threshold: f64::INFINITY,
                nan_left: !nan_true,
            },
            false,
        ),
        Mode::Lt => (
            Rule::LessEq {
                threshold: below(t),
                nan_left: nan_true,
            },
            true,
        ),
        // x >= t is the false side of x < t; x > t the false side of x <= t.
        Mode::Gte => (
            Rule::LessEq {
                threshold: below(t),
                nan_left: !nan_true,
            },
            false,
        ),
        Mode::Gt if t.is_nan() => (
            Rule::LessEq {
                threshold: f64::INFINITY,
                nan_left: !nan_true,
            },
            false,
        ),
        Mode::Gt => (
            Rule::LessEq {
                threshold: t,
                nan_left: !nan_true,
            },
            false,
        ),
        Mode::Eq => (
            Rule::Equal {
                value: t,
                negate: false,
                nan_left: nan_true,
            },
            true,
        ),
        // NaN != t is true: NaN always takes the true branch.
        Mode::Neq => (
            Rule::Equal {
                value: t,
                negate: true,
                nan_left: true,
            },
            true,
        ),
    }
}

impl TreeStep {
    pub fn run(&self, x: &Buf, n_rows: usize) -> Buf {
        let nf = self.ensemble.n_features;
        let n = n_rows * nf;
        let mut rows: Vec<f64> = (0..n)
            .map(|i| {
                match x {
                    Buf::F32(v) => v.get(i).map(|&a| a as f64),
                    Buf::F64(v) => v.get(i).copied(),
                    Buf::I64(v) => v.get(i).map(|&a| a as f32 as f64),
                    Buf::Str(_) => None,
                }
                .unwrap_or(f64::NAN)
            })
            .collect();
        if self.f32s {
            for v in &mut rows {
                *v = *v as f32 as f64;
            }
        }
        let k = self.ensemble.n_outputs;
        let (raw, mut has) = match self.agg {
            Agg::Sum | Agg::Average => {
                let raw = self.ensemble.predict(&rows, n_rows);
                let has = match &self.indicator {
                    Some(ind) => ind
                        .predict(&rows, n_rows)
                        .iter()
                        .map(|&c| c > 0.0)
                        .collect(),
                    None => vec![false; n_rows * k],
                };
                (raw, has)
            }
            Agg::Min | Agg::Max => self.min_max(&rows, n_rows),
        };
        for (i, h) in has.iter_mut().enumerate() {
            match self.scored[i % k] {
                Scored::Always => *h = true,
                Scored::Never => *h = false,
                Scored::PerRow => {}
            }
        }
        let mut out = Vec::with_capacity(n_rows * self.width);
        for r in 0..n_rows {
            let mut s = raw[r * k..(r + 1) * k].to_vec();
            let mut h = has[r * k..(r + 1) * k].to_vec();
            match self.classifier {
                Some((binary_case, all_positive)) => {
                    self.finish_classifier(&mut s, &mut h, binary_case, all_positive, &mut out)
                }
                None => self.finish_regressor(&mut s, &h, &mut out),
            }
        }
        Buf::F32(out)
    }

    /// MIN and MAX folded over the trees in order, as onnxruntime's aggregators do.
    fn min_max(&self, rows: &[f64], n_rows: usize) -> (Vec<f64>, Vec<bool>) {
        let k = self.ensemble.n_outputs;
        let nf = self.ensemble.n_features;
        let mut raw = vec![0.0; n_rows * k];
        let mut has = vec![false; n_rows * k];
        for r in 0..n_rows {
            let row = &rows[r * nf..(r + 1) * nf];
            let (s, h) = (&mut raw[r * k..(r + 1) * k], &mut has[r * k..(r + 1) * k]);
            for tree in &self.ensemble.trees {
                for (j, &v) in tree.leaf(row).iter().enumerate().take(k) {
                    if v.is_nan() {
                        continue;
                    }
                    let better = if self.agg == Agg::Min {
                        v < s[j]
                    } else {
                        v > s[j]
                    };
                    if !h[j] || better {
                        s[j] = v;
                    }
                    h[j] = true;
                }
            }
        }
        (raw, has)
    }

    fn finish_regressor(&self, s: &mut [f64], h: &[bool], out: &mut Vec<f32>) {
        let r = |x: f64| round(x, self.f32s);
        let nt = if self.f32s {
            self.n_trees as f32 as f64
        } else {
            self.n_trees as f64
        };
        if s.len() == 1 {
            let origin = if self.base.len() == 1 {
                self.base[0]
            } else {
                0.0
            };
            let v = match self.agg {
                Agg::Sum => r(s[0] + origin),
                Agg::Average => r(r(s[0] / nt) + origin),
                Agg::Min | Agg::Max => {
                    if h[0] {
                        r(s[0] + origin)
                    } else {
                        origin
                    }
                }
            };
            out.push(if self.post == Post::Probit {
                probit(v as f32)
            } else {
                v as f32
            });
            return;
        }
        let use_base = self.base.len() == s.len();
        for (j, v) in s.iter_mut().enumerate() {
            let b = if use_base { self.base[j] } else { 0.0 };
            *v = match self.agg {
                Agg::Sum => r(*v + b),
                Agg::Average => r(r(*v / nt) + b),
                Agg::Min | Agg::Max => r(b + if h[j] { *v } else { 0.0 }),
            };
        }
        let start = out.len();
        out.extend(
            s.iter()
                .zip(h)
                .map(|(&v, &h)| if h { v as f32 } else { 0.0 }),
        );
        post_transform(&mut out[start..], self.post);
    }

    /// onnxruntime's `TreeAggregatorClassifier::FinalizeScores`.
    fn finish_classifier(
        &self,
        s: &mut [f64],
        h: &mut [bool],
        binary_case: bool,
        all_positive: bool,
        out: &mut Vec<f32>,
    ) {
        let r = |x: f64| round(x, self.f32s);
        let base = &self.base;
        let n = s.len();
        if n > 2 {
            for j in 0..base.len().min(n) {
                if h[j] {
                    s[j] = r(s[j] + base[j]);
                } else {
                    h[j] = true;
                    s[j] = base[j];
                }
            }
            let start = out.len();
            out.extend(
                s.iter()
                    .zip(h.iter())
                    .map(|(&v, &h)| if h { v as f32 } else { 0.0 }),
            );
            post_transform(&mut out[start..], self.post);
            return;
        }
        let mut extra = -1; // write_additional_scores
        let mut len = 2;
        match base.len() {
            2 => {
                if h[1] {
                    s[1] = r(base[1] + s[0]);
                    s[0] = -s[1];
                } else {
                    s[1] = r(s[1] + base[1]);
                    s[0] = r(s[0] + base[0]);
                }
            }
            1 => {
                s[0] = r(s[0] + base[0]);
                if !h[1] {
                    len = 1;
                }
            }
            _ => {
                extra = 3;
                if !h[1] {
                    len = 1;
                }
            }
        }
        if binary_case {
            let pos = if len == 2 && h[1] {
                s[1]
            } else if h[0] {
                s[0]
            } else {
                0.0
            };
            extra = match (all_positive, pos) {
                (true, p) if p > 0.5 => 0,
                (true, _) => 1,
                (false, p) if p > 0.0 => 2,
                (false, _) => 3,
            };
        }
        let g = |j: usize| if h[j] { s[j] } else { 0.0 };
        if len == 2 {
            let start = out.len();
            out.push(g(0) as f32);
            out.push(g(1) as f32);
            post_transform(&mut out[start..], self.post);
            return;
        }
        let v = g(0);
        match (self.post, extra) {
            (Post::Logistic, 0 | 1) => {
                let p = logistic(v as f32);
                out.push(1.0 - p);
                out.push(p);
            }
            (_, 0 | 1) => {
                out.push(r(1.0 - v) as f32);
                out.push(v as f32);
            }
            (Post::Logistic, 2 | 3) => {
                out.push(logistic(-v as f32));
                out.push(logistic(v as f32));
            }
            (_, 2 | 3) => {
                out.push(-v as f32);
                out.push(v as f32);
            }
            _ => {
                // onnxruntime writes the first column only; the second is undefined.
                out.push(v as f32);
                out.push(f32::NAN);
            }
        }
    }
}

/// onnxruntime's `ComputeLogistic`.
pub(crate) fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 {
        1.0 - v
    } else {
        v
    }
}

/// onnxruntime's `ComputeProbit`: `sqrt(2) * ErfInv(2p - 1)` with its approximation, in float.
pub(crate) fn probit(p: f32) -> f32 {
    let x = 2.0 * p - 1.0;
    let sgn: f32 = if x < 0.0 { -1.0 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    std::f32::consts::SQRT_2 * (sgn * v3.sqrt())
}

/// onnxruntime's post-transform of a row of two or more scores, in float.
pub(crate) fn post_transform(s: &mut [f32], post: Post) {
    match post {
        Post::None => {}
        Post::Probit => s.iter_mut().for_each(|v| *v = probit(*v)),
        Post::Logistic => s.iter_mut().for_each(|v| *v = logistic(*v)),
        Post::Softmax => {
            let max = s.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
            let mut sum = 0f32;
            for v in s.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            s.iter_mut().for_each(|v| *v /= sum);
        }
        Post::SoftmaxZero => {
            let max = s.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
            let exp_neg_max = (-max).exp();
            let mut sum = 0f32;
            for v in s.iter_mut() {
                if *v > 0.000_000_1 || *v < -0.000_000_1 {
                    *v = (*v - max).exp();
                    sum += *v;
                } else {
                    *v *= exp_neg_max;
                }
            }
            s.iter_mut().for_each(|v| *v /= sum);
        }
    }
}
