//! XGBoost boosters saved with `save_model`, as JSON (`model.json`) or UBJSON (`model.ubj`,
//! MLflow's `model.xgb`), compiled into an [`Ensemble`] that follows XGBoost's CPU predictor, so
//! scores equal `Booster.predict`'s: inputs, thresholds, leaf values and sums in f32, trees
//! added in file order onto `base_score`; `x < t` at a split; a missing value to the node's
//! default child; a categorical split sending its listed categories right (a negative or huge
//! category left); `base_score` turned into a margin by the objective's inverse link; a DART
//! tree's leaves multiplied by its weight in f32 before they are added.
//!
//! One rule comes from the Python wrapper rather than the file: a model saved by
//! `XGBClassifier.save_model` (it leaves a `scikit_learn` attribute) after early stopping
//! predicts, once loaded by the wrapper, with its first `best_iteration + 1` iterations only;
//! nightshift keeps those trees too. A `Booster` saved directly uses every tree.
//!
//! Refused with a reason: the legacy binary format (XGBoost 3.1 no longer reads it either),
//! gblinear, multi-target models, objectives without a link here (ranking, survival, hinge).
//! A file is untrusted: every count and index is checked before it is used.

use anyhow::{anyhow, bail, Context, Result};

use super::ensemble::{Arithmetic, Ensemble, Node, Rule, Split, Transform, Tree, TreeOutput};
use super::ubjson::{self, Value};
use super::{Compiled, Format, InputFeature, InputKind, Label, Parsed, Task};

/// More inputs than any table nightshift reads; it bounds what a forged `num_feature` costs.
const MAX_FEATURES: usize = 1 << 20;
/// The same for `num_class`.
const MAX_CLASSES: usize = 1 << 16;
/// XGBoost treats a category at or above 2^24 as invalid (`common::InvalidCat`): it can never
/// be in a split's set, so larger stored categories are dropped.
const MAX_CATEGORY: i64 = 1 << 24;
/// Bound on all categorical bitsets together (64 MiB): one stored category near 2^24 costs a
/// few bytes in the file and 2 MiB of bitset.
const MAX_BITSET_WORDS: usize = 1 << 24;

const LEGACY: &str =
    "XGBoost legacy binary model: save it with booster.save_model(\"model.json\") or \"model.ubj\"";

/// Parses an XGBoost JSON or UBJSON model.
pub fn parse(bytes: &[u8]) -> Result<Parsed> {
    // A byte order mark before JSON text (some editors write one) is not part of it.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let doc = match sniff(bytes) {
        Encoding::Json => ubjson::decode_json(bytes).context("reading the XGBoost JSON model")?,
        Encoding::Ubjson => {
            ubjson::decode_ubjson(bytes).context("reading the XGBoost UBJSON model")?
        }
        Encoding::Legacy => bail!(LEGACY),
    };
    model(&doc)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Json,
    Ubjson,
    Legacy,
}

/// `{` then a key's quote (or whitespace, or `}`) is JSON; `{` then a UBJSON length marker or
/// container header is UBJSON; anything else (`binf`, or the older headerless binary) legacy.
pub(super) fn sniff(bytes: &[u8]) -> Encoding {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = bytes.trim_ascii_start();
    match (bytes.first(), text.first(), text.get(1)) {
        (_, Some(b'{'), Some(b'"' | b'}' | b' ' | b'\t' | b'\n' | b'\r')) => Encoding::Json,
        (Some(b'{'), _, _) => match bytes.get(1) {
            Some(b'i' | b'U' | b'I' | b'l' | b'L' | b'$' | b'#' | b'N') => Encoding::Ubjson,
            _ => Encoding::Legacy,
        },
        _ => Encoding::Legacy,
    }
}

/// A value and its place in the document, for error messages.
#[derive(Clone)]
struct At<'a> {
    v: &'a Value,
    path: String,
}

impl<'a> At<'a> {
    fn field(&self, key: &str) -> Result<At<'a>> {
        self.opt(key).ok_or_else(|| match self.v {
            Value::Object(_) => anyhow!("`{}` is missing", self.join(key)),
            v => anyhow!("`{}` is {}, expected an object", self.path, v.kind()),
        })
    }

    fn opt(&self, key: &str) -> Option<At<'a>> {
        self.v.get(key).map(|v| At {
            v,
            path: self.join(key),
        })
    }

    fn join(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn wrong(&self, expected: &str) -> anyhow::Error {
        anyhow!("`{}` is {}, expected {expected}", self.path, self.v.kind())
    }

    fn str(&self) -> Result<&'a str> {
        match self.v {
            Value::Str(s) => Ok(s),
            _ => Err(self.wrong("a string")),
        }
    }

    /// A count XGBoost writes as a decimal string (`"num_nodes": "7"`), at most `max`.
    fn count(&self, max: usize) -> Result<usize> {
        let n = match self.v {
            Value::Str(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| anyhow!("`{}` is {s:?}, expected an integer", self.path))?,
            Value::Int(i) => *i,
            _ => return Err(self.wrong("an integer")),
        };
        match usize::try_from(n) {
            Ok(n) if n <= max => Ok(n),
            _ => bail!("`{}` is {n}, expected 0 to {max}", self.path),
        }
    }

    fn elements(&self) -> Result<&'a [Value]> {
        match self.v {
            Value::Array(xs) => Ok(xs),
            Value::Ints(xs) if xs.is_empty() => Ok(&[]),
            _ => Err(self.wrong("an array")),
        }
    }

    fn ints(&self) -> Result<Vec<i64>> {
        match self.v {
            Value::Ints(xs) => Ok(xs.clone()),
            Value::Array(xs) => xs
                .iter()
                .map(|x| match x {
                    Value::Int(i) => Ok(*i),
                    Value::Bool(b) => Ok(*b as i64),
                    _ => Err(self.wrong("an array of integers")),
                })
                .collect(),
            _ => Err(self.wrong("an array of integers")),
        }
    }

    fn floats(&self) -> Result<Vec<f32>> {
        match self.v {
            Value::Floats(xs) => Ok(xs.clone()),
            Value::Ints(xs) => Ok(xs.iter().map(|&i| i as f32).collect()),
            Value::Array(xs) => xs
                .iter()
                .map(|x| match x {
                    Value::Float(f) => Ok(*f),
                    Value::Int(i) => Ok(*i as f32),
                    _ => Err(self.wrong("an array of numbers")),
                })
                .collect(),
            _ => Err(self.wrong("an array of numbers")),
        }
    }

    fn strings(&self) -> Result<Vec<String>> {
        self.elements()?
            .iter()
            .map(|x| match x {
                Value::Str(s) => Ok(s.clone()),
                _ => Err(self.wrong("an array of strings")),
            })
            .collect()
    }

    /// An array of exactly `n` elements, as `read` gives them.
    fn sized<T>(&self, n: usize, read: fn(&Self) -> Result<Vec<T>>) -> Result<Vec<T>> {
        let xs = read(self)?;
        if xs.len() != n {
            bail!("`{}` has {} elements, expected {n}", self.path, xs.len());
        }
        Ok(xs)
    }
}

/// How an objective's `base_score` (a prediction) becomes a margin: `ProbToMargin`.
#[derive(Clone, Copy)]
enum Link {
    Identity,
    /// Logistic objectives: clamped to [1e-6, 1 - 1e-6], then `-log(1/p - 1)`, in f32.
    Logit,
    /// Poisson, gamma, tweedie: `log` in f32.
    Log,
}

/// What an objective predicts and how.
struct Objective {
    task: Task,
    n_outputs: usize,
    transform: Transform,
    link: Link,
}

/// The objectives nightshift scores. `binary:logitraw` predicts the margin itself, so it is a
/// regression here (its `predict` is the raw score). `multi:softmax` predicts the index of
/// the most probable class, which XGBoost takes from the margins (`FindMaxIndex`, the first
/// maximum); as a classification its probabilities are those of `multi:softprob`, and the
/// argmax of them is that index.
fn objective(name: &str, num_class: usize) -> Result<Objective> {
    let (classes, transform, link) = match name {
        "binary:logistic" => (Some(2), Transform::XgbSigmoid, Link::Logit),
        "reg:logistic" => (None, Transform::XgbSigmoid, Link::Logit),
        "binary:logitraw" => (None, Transform::Identity, Link::Identity),
        "multi:softprob" | "multi:softmax" => {
            if num_class == 0 {
                bail!("XGBoost objective `{name}` without num_class");
            }
            (Some(num_class), Transform::Softmax, Link::Identity)
        }
        "reg:squarederror"
        | "reg:linear"
        | "reg:squaredlogerror"
        | "reg:pseudohubererror"
        | "reg:absoluteerror"
        | "reg:quantileerror" => (None, Transform::Identity, Link::Identity),
        "count:poisson" | "reg:gamma" | "reg:tweedie" => (None, Transform::Exp, Link::Log),
        _ => bail!(
            "XGBoost objective `{name}` is not supported: nightshift scores binary:logistic, \
             binary:logitraw, multi:softprob, multi:softmax, reg:* and count:poisson models"
        ),
    };
    if !name.starts_with("multi:") && num_class > 1 {
        bail!("XGBoost objective `{name}` with num_class = {num_class}");
    }
    Ok(match classes {
        Some(k) => Objective {
            task: Task::Classification {
                labels: (0..k as i64).map(Label::Int).collect(),
            },
            // A binary model has one raw score: the second label's.
            n_outputs: if name.starts_with("multi:") { k } else { 1 },
            transform,
            link,
        },
        None => Objective {
            task: Task::Regression,
            n_outputs: 1,
            transform,
            link,
        },
    })
}

/// `base_score` in margin space, one per output. XGBoost up to 3.0 writes one number
/// (`"5E-1"`), 3.1 and later an array (`"[5E-1]"`, one per class for multiclass models, which
/// is already a margin there); both are f32.
fn base_score(at: &At, n_outputs: usize, link: Link, objective: &str) -> Result<Vec<f64>> {
    let text = at.str()?;
    let inner = text.trim();
    let inner = inner
        .strip_prefix(['[', '('])
        .and_then(|s| s.strip_suffix([']', ')']))
        .unwrap_or(inner);
    let values = inner
        .split(',')
        .map(|s| s.trim().parse::<f32>())
        .collect::<Result<Vec<f32>, _>>()
        .map_err(|_| anyhow!("`{}` is {text:?}, expected numbers", at.path))?;
    let values = match values.len() {
        1 => vec![values[0]; n_outputs],
        n if n == n_outputs => values,
        n => bail!("`{}` has {n} values for {n_outputs} outputs", at.path),
    };
    values
        .into_iter()
        .map(|p| {
            let margin = match link {
                Link::Identity => p,
                Link::Logit => {
                    if !(0.0..=1.0).contains(&p) {
                        bail!("base_score {p} is outside [0, 1] for objective {objective}");
                    }
                    let p = p.clamp(1e-6, 1.0 - 1e-6);
                    -(1.0f32 / p - 1.0f32).ln()
                }
                Link::Log => p.ln(),
            };
            if !margin.is_finite() {
                bail!("base_score {p} has no finite margin for objective {objective}");
            }
            Ok(margin as f64)
        })
        .collect()
}

fn model(doc: &Value) -> Result<Parsed> {
    let root = At {
        v: doc,
        path: String::new(),
    };
    if !matches!(doc, Value::Object(_)) {
        bail!("the document is {}, not an XGBoost model", doc.kind());
    }
    let producer = match root.opt("version") {
        Some(v) => {
            let parts = v.ints()?;
            let parts: Vec<String> = parts.iter().map(i64::to_string).collect();
            Some(format!("xgboost {}", parts.join(".")))
        }
        None => None,
    };
    let learner = root.field("learner")?;
    let param = learner.field("learner_model_param")?;
    let n_features = param.field("num_feature")?.count(MAX_FEATURES)?;
    let num_class = param.field("num_class")?.count(MAX_CLASSES)?;
    if let Some(t) = param.opt("num_target") {
        let t = t.count(usize::MAX)?;
        if t > 1 {
            bail!("XGBoost multi-target models (num_target = {t}) are not supported");
        }
    }
    let objective_name = learner.field("objective")?.field("name")?.str()?;
    let obj = objective(objective_name, num_class)?;
    let base = base_score(
        &param.field("base_score")?,
        obj.n_outputs,
        obj.link,
        objective_name,
    )?;

    let booster = learner.field("gradient_booster")?;
    let (gbtree, weights) = match booster.field("name")?.str()? {
        // XGBoost 3.4 writes DART models as gbtree with `model.weight_drop`.
        "gbtree" => {
            let m = booster.field("model")?;
            let w = m.opt("weight_drop").or_else(|| booster.opt("weight_drop"));
            (m, w)
        }
        "dart" => {
            let m = booster.field("gbtree")?.field("model")?;
            let w = booster.opt("weight_drop").or_else(|| m.opt("weight_drop"));
            (
                m,
                Some(w.ok_or_else(|| anyhow!("DART model without weight_drop"))?),
            )
        }
        "gblinear" => bail!(
            "XGBoost gblinear models are not supported: nightshift scores tree boosters \
             (gbtree, dart)"
        ),
        other => bail!("unknown XGBoost booster `{other}`"),
    };

    let num_trees = gbtree
        .field("gbtree_model_param")?
        .field("num_trees")?
        .count(usize::MAX)?;
    let trees = gbtree.field("trees")?;
    let tree_values = trees.elements()?;
    if tree_values.len() != num_trees {
        bail!(
            "num_trees is {num_trees} but `{}` holds {} trees",
            trees.path,
            tree_values.len()
        );
    }
    let tree_info = gbtree.field("tree_info")?.sized(num_trees, At::ints)?;
    let weights = match weights {
        Some(w) => Some(w.sized(num_trees, At::floats)?),
        None => None,
    };
    let used = trees_used(&learner, &gbtree, num_trees, obj.n_outputs)?;

    let mut categorical = vec![false; n_features];
    let mut budget = MAX_BITSET_WORDS;
    let mut compiled = Vec::with_capacity(used);
    for (j, tree) in tree_values[..used].iter().enumerate() {
        let at = At {
            v: tree,
            path: format!("{}[{j}]", trees.path),
        };
        let group = tree_info[j];
        if group < 0 || group as usize >= obj.n_outputs {
            bail!(
                "tree {j} adds to output {group}, but the model has {}",
                obj.n_outputs
            );
        }
        if let Some(id) = at.opt("id") {
            if !matches!(id.v, Value::Int(i) if *i == j as i64) {
                bail!("`{}` is not {j}", id.path);
            }
        }
        let weight = weights.as_ref().map(|w| w[j]);
        let nodes = tree_nodes(&at, n_features, weight, &mut budget, &mut categorical)
            .with_context(|| format!("tree {j}"))?;
        compiled.push(Tree {
            nodes,
            output: TreeOutput::One(group as u32),
        });
    }

    let features = features(&learner, &gbtree, n_features, &categorical)?;
    Ok(Parsed {
        format: Format::Xgboost,
        producer,
        objective: objective_name.to_string(),
        features,
        task: obj.task,
        model: Compiled::Trees(Ensemble {
            n_features,
            n_outputs: obj.n_outputs,
            trees: compiled,
            base,
            divisor: 1.0,
            base_after_average: false,
            arithmetic: Arithmetic::F32,
            transform: obj.transform,
            compiled: Default::default(),
        }),
    })
}

/// How many trees, from the first, the model predicts with: all of them, except for a model
/// the sklearn wrapper saved after early stopping (see the module comment).
fn trees_used(learner: &At, gbtree: &At, num_trees: usize, n_outputs: usize) -> Result<usize> {
    let indptr = match gbtree.opt("iteration_indptr") {
        Some(at) => {
            let p = at.ints()?;
            let ok = p.first() == Some(&0)
                && p.last() == Some(&(num_trees as i64))
                && p.windows(2).all(|w| w[0] <= w[1]);
            if !ok {
                bail!("`{}` does not partition the {num_trees} trees", at.path);
            }
            Some(p)
        }
        None => None,
    };
    let Some(attributes) = learner.opt("attributes") else {
        return Ok(num_trees);
    };
    let (Some(_), Some(best)) = (
        attributes.opt("scikit_learn"),
        attributes.opt("best_iteration"),
    ) else {
        return Ok(num_trees);
    };
    let layers = best.count(usize::MAX)?.saturating_add(1);
    let end = match indptr {
        Some(p) => p[layers.min(p.len() - 1)] as usize,
        None => {
            let per_layer = gbtree
                .field("gbtree_model_param")?
                .opt("num_parallel_tree")
                .map(|n| n.count(usize::MAX))
                .transpose()?
                .unwrap_or(1)
                .max(1);
            layers
                .saturating_mul(per_layer)
                .saturating_mul(n_outputs)
                .min(num_trees)
        }
    };
    Ok(end)
}

/// XGBoost's numeric test `x < t` (missing values aside) as an ensemble rule: `x <= t'` with
/// `t'` the largest double below `t`, the same test for every double. For `t` = -inf or NaN
/// (no number is below it) there is no such `t'`: an empty set sends every number right.
fn less_than(t: f32, nan_left: bool) -> Rule {
    if t == f32::NEG_INFINITY || t.is_nan() {
        Rule::InSet {
            bits: Vec::new(),
            in_set_left: true,
            nan_left,
            negative_left: false,
        }
    } else {
        Rule::LessEq {
            threshold: (t as f64).next_down(),
            nan_left,
        }
    }
}

/// One tree's reachable nodes, root first. XGBoost's predictor goes to `left_children[k] + 1`
/// for a right turn and to `right_children[k]` for a missing value going right, so the two
/// must agree; deleted nodes (unreachable) are left out.
fn tree_nodes(
    at: &At,
    n_features: usize,
    weight: Option<f32>,
    budget: &mut usize,
    categorical: &mut [bool],
) -> Result<Vec<Node>> {
    let param = at.field("tree_param")?;
    if let Some(s) = param.opt("size_leaf_vector") {
        if s.count(usize::MAX)? > 1 {
            bail!("multi-target trees (vector leaves) are not supported");
        }
    }
    let n = param.field("num_nodes")?.count(i32::MAX as usize)?;
    if n == 0 {
        bail!("the tree has no nodes");
    }
    let left = at.field("left_children")?.sized(n, At::ints)?;
    let right = at.field("right_children")?.sized(n, At::ints)?;
    let feature = at.field("split_indices")?.sized(n, At::ints)?;
    let value = at.field("split_conditions")?.sized(n, At::floats)?;
    let default_left = at.field("default_left")?.sized(n, At::ints)?;
    let split_type = match at.opt("split_type") {
        Some(s) => s.sized(n, At::ints)?,
        None => vec![0; n],
    };
    let categories = tree_categories(at, &split_type)?;

    // Reachable nodes in breadth-first order; `index[k]` is node k's place in the result.
    let mut index = vec![u32::MAX; n];
    let mut order = vec![0usize];
    index[0] = 0;
    let mut i = 0;
    while i < order.len() {
        let k = order[i];
        i += 1;
        if left[k] == -1 {
            continue;
        }
        let (l, r) = (left[k], right[k]);
        if l < 0 || l as usize >= n || r != l + 1 || r as usize >= n {
            bail!("node {k} has children {l} and {r}, expected two consecutive nodes");
        }
        for c in [l as usize, r as usize] {
            if index[c] != u32::MAX {
                bail!("node {c} is reached twice: the nodes do not form a tree");
            }
            index[c] = order.len() as u32;
            order.push(c);
        }
    }

    let mut nodes = Vec::with_capacity(order.len());
    for &k in &order {
        if left[k] == -1 {
            let v = match weight {
                Some(w) => value[k] * w,
                None => value[k],
            };
            nodes.push(Node::Leaf {
                values: vec![v as f64],
            });
            continue;
        }
        let f = feature[k];
        if f < 0 || f as usize >= n_features {
            bail!("node {k} splits on feature {f}, but the model has {n_features}");
        }
        let nan_left = default_left[k] != 0;
        let rule = match split_type[k] {
            0 => less_than(value[k], nan_left),
            _ => {
                categorical[f as usize] = true;
                let cats = categories[k].as_deref().unwrap_or(&[]);
                // XGBoost's Decision: listed categories go right, NaN to the default child, a
                // value below 0 or at 2^24 and above (invalid) left. One difference: XGBoost
                // calls -0.5 invalid where the ensemble truncates it to category 0; only a
                // float column could carry it, and categorical inputs are integer codes.
                Rule::InSet {
                    bits: bitset(cats, budget).with_context(|| format!("node {k}"))?,
                    in_set_left: false,
                    nan_left,
                    negative_left: true,
                }
            }
        };
        nodes.push(Node::Split(Split {
            feature: f as u32,
            rule,
            left: index[left[k] as usize],
            right: index[right[k] as usize],
        }));
    }
    Ok(nodes)
}

/// Each node's categories (`categories[categories_segments[i]..][..categories_sizes[i]]` for
/// node `categories_nodes[i]`), checked against `split_type`: a node is listed iff its split
/// is categorical.
fn tree_categories(at: &At, split_type: &[i64]) -> Result<Vec<Option<Vec<i64>>>> {
    let n = split_type.len();
    let mut per_node: Vec<Option<Vec<i64>>> = vec![None; n];
    if let Some(k) = split_type.iter().position(|&t| t != 0 && t != 1) {
        bail!("node {k} has split type {}", split_type[k]);
    }
    if split_type.iter().all(|&t| t == 0) {
        return Ok(per_node);
    }
    let nodes = at.field("categories_nodes")?.ints()?;
    let segments = at
        .field("categories_segments")?
        .sized(nodes.len(), At::ints)?;
    let sizes = at.field("categories_sizes")?.sized(nodes.len(), At::ints)?;
    let categories = at.field("categories")?.ints()?;
    let mut previous = -1i64;
    for ((&k, &start), &size) in nodes.iter().zip(&segments).zip(&sizes) {
        if k <= previous || k as usize >= n || split_type[k as usize] != 1 {
            bail!("categories_nodes lists node {k}, which is not the next categorical split");
        }
        previous = k;
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(size).ok())
            .filter(|&(s, len)| {
                len > 0 && s.checked_add(len).is_some_and(|e| e <= categories.len())
            });
        let Some((s, len)) = range else {
            bail!("node {k}'s categories ({start}, {size}) are outside `categories`");
        };
        per_node[k as usize] = Some(categories[s..s + len].to_vec());
    }
    if let Some(k) = (0..n).find(|&k| split_type[k] == 1 && per_node[k].is_none()) {
        bail!("categorical node {k} has no categories");
    }
    Ok(per_node)
}

/// The bitset of a split's categories, charged to the model's budget.
fn bitset(categories: &[i64], budget: &mut usize) -> Result<Vec<u32>> {
    if let Some(c) = categories.iter().find(|&&c| c < 0) {
        bail!("negative category {c} in a split");
    }
    let Some(max) = categories
        .iter()
        .copied()
        .filter(|&c| c < MAX_CATEGORY)
        .max()
    else {
        return Ok(Vec::new());
    };
    let words = max as usize / 32 + 1;
    if words > *budget {
        bail!("categorical splits need more than {MAX_BITSET_WORDS} bitset words");
    }
    *budget -= words;
    let mut bits = vec![0u32; words];
    for &c in categories.iter().filter(|&&c| c < MAX_CATEGORY) {
        bits[c as usize / 32] |= 1 << (c % 32);
    }
    Ok(bits)
}

/// The model's inputs: names from `feature_names` (empty when absent), kinds from
/// `feature_types`, category names from the encoding XGBoost 3.1+ keeps for DataFrame inputs.
fn features(
    learner: &At,
    gbtree: &At,
    n_features: usize,
    categorical: &[bool],
) -> Result<Vec<InputFeature>> {
    let names = match learner.opt("feature_names") {
        Some(at) => at.strings()?,
        None => Vec::new(),
    };
    let types = match learner.opt("feature_types") {
        Some(at) => at.strings()?,
        None => Vec::new(),
    };
    for (what, len) in [
        ("feature_names", names.len()),
        ("feature_types", types.len()),
    ] {
        if len != 0 && len != n_features {
            bail!("`learner.{what}` has {len} entries for {n_features} features");
        }
    }
    let mut category_names = match gbtree.opt("cats") {
        Some(cats) => category_names(&cats, n_features)?,
        None => Vec::new(),
    };
    (0..n_features)
        .map(|f| {
            let is_categorical = match types.get(f).map(String::as_str) {
                Some("c") => true,
                Some("q" | "i" | "int" | "float") | None => categorical[f],
                Some(other) => bail!("feature {f} has unknown type `{other}`"),
            };
            let kind = if is_categorical {
                InputKind::Categorical {
                    categories: category_names.get_mut(f).and_then(Option::take),
                }
            } else {
                InputKind::Numeric
            };
            Ok(InputFeature {
                name: names.get(f).cloned().unwrap_or_default(),
                kind,
            })
        })
        .collect()
}

/// Category names by feature from `cats.enc`: strings as Arrow-style offsets into bytes,
/// integer categories as their decimal form; `None` for a feature with none.
fn category_names(cats: &At, n_features: usize) -> Result<Vec<Option<Vec<String>>>> {
    let Some(enc) = cats.opt("enc") else {
        return Ok(Vec::new());
    };
    let columns = enc.elements()?;
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    if columns.len() != n_features {
        bail!(
            "`{}` has {} entries for {n_features} features",
            enc.path,
            columns.len()
        );
    }
    columns
        .iter()
        .enumerate()
        .map(|(f, column)| {
            let at = At {
                v: column,
                path: format!("{}[{f}]", enc.path),
            };
            let values = at.field("values")?;
            let names: Vec<String> = match at.opt("offsets") {
                Some(offsets) => {
                    let offsets = offsets.ints()?;
                    let bytes: Vec<u8> = values.ints()?.iter().map(|&b| b as u8).collect();
                    let ok = offsets.first().is_none_or(|&o| o == 0)
                        && offsets.windows(2).all(|w| w[0] <= w[1])
                        && offsets.last().is_none_or(|&o| o as usize == bytes.len());
                    if !ok {
                        bail!("`{}.offsets` do not partition its values", at.path);
                    }
                    offsets
                        .windows(2)
                        .map(|w| {
                            String::from_utf8(bytes[w[0] as usize..w[1] as usize].to_vec()).map_err(
                                |_| anyhow!("a category name of `{}` is not UTF-8", at.path),
                            )
                        })
                        .collect::<Result<_>>()?
                }
                None => match values.v {
                    Value::Floats(xs) => xs.iter().map(f32::to_string).collect(),
                    _ => values.ints()?.iter().map(i64::to_string).collect(),
                },
            };
            Ok((!names.is_empty()).then_some(names))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two features `a` (numeric) and `c` (categorical, names x y z), binary:logistic, two
    /// trees: tree 0 splits `a < 0.5` (missing right) into leaves -0.25 and 0.5; tree 1 sends
    /// categories {1, 2} of `c` right (leaf 0.125) and the rest left (leaf -0.125), missing left.
    fn model_json(base_score: &str) -> String {
        format!(
            r#"{{"learner": {{
  "attributes": {{}},
  "feature_names": ["a", "c"],
  "feature_types": ["float", "c"],
  "gradient_booster": {{"name": "gbtree", "model": {{
    "cats": {{"enc": [{{"offsets": [], "values": []}},
                     {{"offsets": [0, 1, 2, 3], "values": [120, 121, 122]}}],
              "feature_segments": [0, 0, 3], "sorted_idx": [0, 1, 2]}},
    "gbtree_model_param": {{"num_parallel_tree": "1", "num_trees": "2"}},
    "iteration_indptr": [0, 1, 2],
    "tree_info": [0, 0],
    "trees": [
      {{"id": 0, "tree_param": {{"num_deleted": "0", "num_feature": "2", "num_nodes": "3",
        "size_leaf_vector": "1"}},
        "left_children": [1, -1, -1], "right_children": [2, -1, -1],
        "parents": [2147483647, 0, 0], "split_indices": [0, 0, 0],
        "split_conditions": [5E-1, -2.5E-1, 5E-1], "default_left": [0, 0, 0],
        "split_type": [0, 0, 0], "categories": [], "categories_nodes": [],
        "categories_segments": [], "categories_sizes": [],
        "base_weights": [0E0, 0E0, 0E0], "loss_changes": [1E0, 0E0, 0E0],
        "sum_hessian": [1E0, 5E-1, 5E-1]}},
      {{"id": 1, "tree_param": {{"num_deleted": "0", "num_feature": "2", "num_nodes": "3",
        "size_leaf_vector": "1"}},
        "left_children": [1, -1, -1], "right_children": [2, -1, -1],
        "parents": [2147483647, 0, 0], "split_indices": [1, 0, 0],
        "split_conditions": [1E-45, -1.25E-1, 1.25E-1], "default_left": [1, 0, 0],
        "split_type": [1, 0, 0], "categories": [1, 2], "categories_nodes": [0],
        "categories_segments": [0], "categories_sizes": [2],
        "base_weights": [0E0, 0E0, 0E0], "loss_changes": [NaN, 0E0, 0E0],
        "sum_hessian": [1E0, 5E-1, 5E-1]}}
    ]}}}},
  "learner_model_param": {{"base_score": "{base_score}", "boost_from_average": "1",
    "num_class": "0", "num_feature": "2", "num_target": "1"}},
  "objective": {{"name": "binary:logistic", "reg_loss_param": {{"scale_pos_weight": "1"}}}}
}}, "version": [3, 2, 0]}}"#
        )
    }

    /// UBJSON as XGBoost writes it: `#L` counts, typed arrays for flat numbers.
    fn to_ubjson(v: &Value, out: &mut Vec<u8>) {
        fn len(n: usize, out: &mut Vec<u8>) {
            out.push(b'L');
            out.extend((n as i64).to_be_bytes());
        }
        match v {
            Value::Null => out.push(b'Z'),
            Value::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
            Value::Int(i) => {
                out.push(b'L');
                out.extend(i.to_be_bytes());
            }
            Value::Float(f) => {
                out.push(b'd');
                out.extend(f.to_be_bytes());
            }
            Value::Str(s) => {
                out.push(b'S');
                len(s.len(), out);
                out.extend(s.as_bytes());
            }
            Value::Array(xs) => {
                out.extend(b"[#");
                len(xs.len(), out);
                for x in xs {
                    to_ubjson(x, out);
                }
            }
            Value::Object(entries) => {
                out.push(b'{');
                for (k, x) in entries {
                    len(k.len(), out);
                    out.extend(k.as_bytes());
                    to_ubjson(x, out);
                }
                out.push(b'}');
            }
            Value::Ints(xs) => {
                out.extend(b"[$l#");
                len(xs.len(), out);
                for &x in xs {
                    out.extend((x as i32).to_be_bytes());
                }
            }
            Value::Floats(xs) => {
                out.extend(b"[$d#");
                len(xs.len(), out);
                for &x in xs {
                    out.extend(x.to_be_bytes());
                }
            }
        }
    }

    fn ubjson_of(json: &str) -> Vec<u8> {
        let mut out = Vec::new();
        to_ubjson(&ubjson::decode_json(json.as_bytes()).unwrap(), &mut out);
        out
    }

    fn predict(p: &Parsed, rows: &[[f64; 2]]) -> Vec<f64> {
        let Compiled::Trees(e) = &p.model else {
            panic!()
        };
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        e.predict_reference(&flat, rows.len())
    }

    fn sigmoid(x: f32) -> f64 {
        (1.0f32 / ((-x).min(88.7).exp() + 1.0 + 1e-16)) as f64
    }

    fn error(bytes: &[u8]) -> String {
        format!("{:#}", parse(bytes).unwrap_err())
    }

    #[test]
    fn small_json_model() {
        let p = parse(model_json("5E-1").as_bytes()).unwrap();
        assert_eq!(p.format, Format::Xgboost);
        assert_eq!(p.producer.as_deref(), Some("xgboost 3.2.0"));
        assert_eq!(p.objective, "binary:logistic");
        assert_eq!(
            p.task,
            Task::Classification {
                labels: vec![Label::Int(0), Label::Int(1)]
            }
        );
        assert_eq!(p.features[0].name, "a");
        assert_eq!(p.features[0].kind, InputKind::Numeric);
        assert_eq!(
            p.features[1].kind,
            InputKind::Categorical {
                categories: Some(vec!["x".into(), "y".into(), "z".into()])
            }
        );
        let nan = f64::NAN;
        let got = predict(
            &p,
            &[
                [0.4999, 0.0],
                [0.5, 1.0],
                [nan, 2.0],
                [0.0, 3.0],
                [0.0, nan],
                [0.0, -0.5],
                [0.0, -3.0],
                [0.0, 2.9],
            ],
        );
        // base_score 0.5 is margin 0: a < 0.5 -> -0.25, else 0.5; c in {1, 2} -> 0.125.
        let want = [
            sigmoid(-0.25 - 0.125),
            sigmoid(0.5 + 0.125),
            sigmoid(0.5 + 0.125),
            sigmoid(-0.25 - 0.125),
            sigmoid(-0.25 - 0.125),
            sigmoid(-0.25 - 0.125),
            sigmoid(-0.25 - 0.125),
            sigmoid(-0.25 + 0.125),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn ubjson_equals_json() {
        let json = model_json("[5E-1]");
        let ubj = ubjson_of(&json);
        assert_eq!(ubj[0], b'{');
        assert_eq!(parse(&ubj).unwrap(), parse(json.as_bytes()).unwrap());
    }

    #[test]
    fn category_zero() {
        // Category 0 listed: 0 and -0.0 are category 0 (right); 0.9 truncates to 0.
        let json = model_json("5E-1").replace(r#""categories": [1, 2]"#, r#""categories": [0, 2]"#);
        let p = parse(json.as_bytes()).unwrap();
        let got = predict(
            &p,
            &[
                [0.0, -0.0],
                [0.0, 0.0],
                [0.0, 0.9],
                [0.0, 1.0],
                [0.0, f64::NAN],
                [0.0, -1.0],
            ],
        );
        let left = sigmoid(-0.25 - 0.125);
        let right = sigmoid(-0.25 + 0.125);
        assert_eq!(got, [right, right, right, left, left, left]);
    }

    #[test]
    fn thresholds_without_a_number_below() {
        // `x < -inf` and `x < NaN` hold for no x: every number goes right, NaN by default.
        for (t, default_left) in [(f32::NEG_INFINITY, true), (f32::NAN, false)] {
            let rule = less_than(t, default_left);
            for x in [f64::NEG_INFINITY, -1e30, 0.0, f64::INFINITY] {
                assert!(!rule.goes_left(x), "{t} {x}");
            }
            assert_eq!(rule.goes_left(f64::NAN), default_left);
        }
        let rule = less_than(f32::INFINITY, false);
        assert!(rule.goes_left(f64::MAX) && !rule.goes_left(f64::INFINITY));
        let rule = less_than(0.5, false);
        assert!(rule.goes_left(0.49999999999999994) && !rule.goes_left(0.5));
    }

    #[test]
    fn base_score_both_forms() {
        for (text, p) in [
            ("5E-1", 0.5f32),
            ("[5E-1]", 0.5),
            ("[2.5E-1]", 0.25),
            ("7.5E-1", 0.75),
        ] {
            let parsed = parse(model_json(text).as_bytes()).unwrap();
            let Compiled::Trees(e) = &parsed.model else {
                panic!()
            };
            assert_eq!(e.base, [-(1.0f32 / p - 1.0).ln() as f64], "{text}");
        }
        assert!(error(model_json("[5E-1, 5E-1]").as_bytes()).contains("2 values for 1 outputs"));
        assert!(error(model_json("1.5").as_bytes()).contains("outside [0, 1]"));
        assert!(error(model_json("abc").as_bytes()).contains("expected numbers"));
    }

    #[test]
    fn legacy_binary_refused() {
        assert_eq!(error(b"binf\x00\x00\x00\x3f"), LEGACY);
        assert_eq!(error(b"\x00\x00\x00\x3f"), LEGACY);
        assert_eq!(error(b""), LEGACY);
    }

    #[test]
    fn truncated_files_fail() {
        let json = model_json("5E-1");
        let ubj = ubjson_of(&json);
        for cut in (0..ubj.len()).step_by(7) {
            assert!(parse(&ubj[..cut]).is_err(), "UBJSON cut at {cut}");
        }
        for cut in (0..json.len()).step_by(13) {
            assert!(parse(&json.as_bytes()[..cut]).is_err(), "JSON cut at {cut}");
        }
        assert!(error(&ubj[..ubj.len() / 2]).contains("truncated"));
    }

    #[test]
    fn forged_counts_fail() {
        let ubj = ubjson_of(&model_json("5E-1"));
        // Every `#L` count in the file, in turn, set to 2^40 and to -1.
        let counts: Vec<usize> = ubj
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"#L")
            .map(|(i, _)| i + 2)
            .collect();
        assert!(counts.len() > 10);
        for &at in &counts {
            for forged in [1i64 << 40, -1, i64::MAX] {
                let mut bad = ubj.clone();
                bad[at..at + 8].copy_from_slice(&forged.to_be_bytes());
                assert!(parse(&bad).is_err(), "count at {at} = {forged}");
            }
        }
        let json = model_json("5E-1");
        for (from, to) in [
            (r#""num_trees": "2""#, r#""num_trees": "3""#),
            (r#""num_nodes": "3""#, r#""num_nodes": "4000000000""#),
            (
                r#""num_feature": "2", "num_target""#,
                r#""num_feature": "99999999999", "num_target""#,
            ),
            (
                r#""left_children": [1, -1, -1]"#,
                r#""left_children": [0, -1, -1]"#,
            ),
            (
                r#""left_children": [1, -1, -1]"#,
                r#""left_children": [2, -1, -1]"#,
            ),
            (
                r#""split_indices": [0, 0, 0]"#,
                r#""split_indices": [2, 0, 0]"#,
            ),
            (r#""categories": [1, 2]"#, r#""categories": [1, -2]"#),
            (r#""categories_sizes": [2]"#, r#""categories_sizes": [3]"#),
            (r#""tree_info": [0, 0]"#, r#""tree_info": [0, 1]"#),
            (r#""size_leaf_vector": "1""#, r#""size_leaf_vector": "3""#),
        ] {
            let bad = json.replacen(from, to, 1);
            assert_ne!(bad, json, "{from}");
            assert!(parse(bad.as_bytes()).is_err(), "{to}");
        }
    }

    #[test]
    fn huge_category_is_bounded() {
        // Categories at 2^24 and above can never match: no bitset is built for them.
        let json = model_json("5E-1").replace(
            r#""categories": [1, 2]"#,
            r#""categories": [1, 2147483647]"#,
        );
        let p = parse(json.as_bytes()).unwrap();
        let Compiled::Trees(e) = &p.model else {
            panic!()
        };
        let Node::Split(s) = &e.trees[1].nodes[0] else {
            panic!()
        };
        assert!(matches!(&s.rule, Rule::InSet { bits, .. } if bits == &[2]));
    }

    #[test]
    fn dart_weights_scale_leaves() {
        let json = model_json("5E-1").replace(
            r#""gradient_booster": {"name": "gbtree", "model": {"#,
            r#""gradient_booster": {"name": "dart", "weight_drop": [3E-1, 1E0], "gbtree": {"name": "gbtree", "model": {"#,
        ).replace(r#"]}},
  "learner_model_param""#, r#"]}}},
  "learner_model_param""#);
        let p = parse(json.as_bytes()).unwrap();
        let Compiled::Trees(e) = &p.model else {
            panic!()
        };
        assert_eq!(
            e.trees[0].nodes[1],
            Node::Leaf {
                values: vec![(-0.25f32 * 0.3f32) as f64]
            }
        );
    }

    #[test]
    fn sklearn_early_stopping_keeps_best_iteration() {
        let json = model_json("5E-1").replace(
            r#""attributes": {}"#,
            r#""attributes": {"best_iteration": "0", "scikit_learn": "{}"}"#,
        );
        let Compiled::Trees(e) = parse(json.as_bytes()).unwrap().model else {
            panic!()
        };
        assert_eq!(e.trees.len(), 1);
        let json = model_json("5E-1").replace(
            r#""attributes": {}"#,
            r#""attributes": {"best_iteration": "0"}"#,
        );
        let Compiled::Trees(e) = parse(json.as_bytes()).unwrap().model else {
            panic!()
        };
        assert_eq!(e.trees.len(), 2);
    }

    #[test]
    fn unsupported_models_name_the_reason() {
        let json = model_json("5E-1");
        let rank = json.replace(r#""name": "binary:logistic""#, r#""name": "rank:pairwise""#);
        assert!(error(rank.as_bytes()).contains("rank:pairwise"));
        let linear = json.replace(
            r#""name": "gbtree", "model""#,
            r#""name": "gblinear", "model""#,
        );
        assert!(error(linear.as_bytes()).contains("gblinear"));
    }
}
