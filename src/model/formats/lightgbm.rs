//! LightGBM text models (`booster.save_model("model.txt")`), compiled to the tree [`Ensemble`].
//!
//! The rules are LightGBM's own `predict` (`include/LightGBM/tree.h`, `src/c_api.cpp` at
//! bae0b7b), written out as [`Rule`]s so that one scorer reproduces it in double:
//! * Before any tree, an input with `|x| <= kZeroThreshold` becomes 0 (the dense row is made
//!   sparse). `kZeroThreshold` is the float literal `1e-35f`, a little above `1e-35` in double.
//!   A numerical threshold inside that band moves to its edge, so the row goes where 0 goes.
//! * Missing type None: NaN is 0. Zero: NaN and the band go the default way
//!   ([`Rule::ZeroMissing`], whose band is `1e-35` until it takes LightGBM's constant: see the
//!   ignored test). NaN: NaN goes the default way. Categorical splits ignore both: NaN and negative values go
//!   right, others are truncated to an integer looked up in the bitset (left when in it).
//! * Leaf values are stored after shrinkage and the init score is folded into the first tree,
//!   so `base` is zero; random-forest mode (`average_output`) divides by the iterations.
//! * `pandas_categorical` (appended by the Python package) lists the categories of each pandas
//!   category column; a value's code is its index there. Its lists are matched, in order, to
//!   the features LightGBM treats as categorical; when the counts differ (an ordered pandas
//!   Categorical, which LightGBM reads as a number, or `categorical_feature` given by hand)
//!   the file is refused rather than guessed. Categories that are not strings are kept as
//!   Python's `str` writes them (`1`, `2.5`, `True`), the text a string column would hold.
//!
//! The file may be truncated or forged: every count is checked against the values present,
//! children and features against their ranges, and each tree must reach every node exactly
//! once from its root, so a bad file is one error line, never a panic or a huge allocation.
//! Linear trees, ranking objectives and `cross_entropy_lambda` (a softplus link) are refused.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use anyhow::{anyhow, Result};

use super::ensemble::{Arithmetic, Ensemble, Node, Rule, Split, Transform, Tree, TreeOutput};
use super::{Compiled, Format, InputFeature, InputKind, Label, Parsed, Task};

/// LightGBM's `kZeroThreshold` (`const double kZeroThreshold = 1e-35f;`).
const ZERO_THRESHOLD: f64 = 1e-35f32 as f64;

/// An error line without the `LightGBM model: ` prefix.
type Fallible<T> = std::result::Result<T, String>;

/// Parses a LightGBM text model. Every error is one line starting with `LightGBM model: `.
pub fn parse(bytes: &[u8]) -> Result<Parsed> {
    parse_text(bytes).map_err(|e| anyhow!("LightGBM model: {e}"))
}

fn parse_text(bytes: &[u8]) -> Fallible<Parsed> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (byte {})", e.valid_up_to()))?;
    let file = Sections::split(text)?;
    let header = Header::read(&file.header)?;

    // Refused before anything else: a linear tree has extra arrays the checks below don't know.
    if file.parameter("linear_tree").map(str::trim) == Some("1")
        || file
            .trees
            .iter()
            .any(|t| t.keys.get("is_linear").is_some_and(|v| v.trim() != "0"))
    {
        return Err(
            "linear trees (is_linear) are not supported; retrain with linear_tree=false".into(),
        );
    }

    let k = header.trees_per_iteration;
    let (task, transform) = objective(header.objective, k)?;
    if file.trees.is_empty() {
        return Err("the model has no trees".into());
    }
    if file.trees.len() % k != 0 {
        return Err(format!(
            "{} trees is not a multiple of num_tree_per_iteration={k}",
            file.trees.len()
        ));
    }
    if let Some(sizes) = header.tree_sizes {
        if sizes != file.trees.len() {
            return Err(format!(
                "tree_sizes lists {sizes} trees but the file holds {} (truncated or edited?)",
                file.trees.len()
            ));
        }
    }

    let n_features = header.names.len();
    let mut split_categorical = BTreeSet::new();
    let mut trees = Vec::with_capacity(file.trees.len());
    for (i, block) in file.trees.iter().enumerate() {
        let tree = read_tree(block, n_features, (i % k) as u32, &mut split_categorical)
            .map_err(|e| format!("tree {i} (line {}): {e}", block.line))?;
        trees.push(tree);
    }

    let features = features(&header, &file, &split_categorical)?;
    let divisor = if header.average_output {
        (file.trees.len() / k) as f64
    } else {
        1.0
    };
    let ensemble = Ensemble {
        n_features,
        n_outputs: k,
        trees,
        base: vec![0.0; k],
        divisor,
        base_after_average: false,
        arithmetic: Arithmetic::F64,
        transform,
        compiled: Default::default(),
    };
    Ok(Parsed {
        format: Format::Lightgbm,
        producer: Some(match header.version {
            Some(v) => format!("LightGBM {v}"),
            None => "LightGBM".into(),
        }),
        objective: header.objective.unwrap_or("none").to_string(),
        features,
        task,
        model: Compiled::Trees(ensemble),
    })
}

/// The file cut into its parts: header lines, `Tree=` blocks, and what follows `end of trees`.
struct Sections<'a> {
    header: Vec<(usize, &'a str)>,
    trees: Vec<TreeBlock<'a>>,
    tail: Vec<&'a str>,
}

/// One `Tree=` block's `key=value` lines.
struct TreeBlock<'a> {
    /// The 1-based line of `Tree=`.
    line: usize,
    keys: HashMap<&'a str, &'a str>,
}

impl<'a> Sections<'a> {
    fn split(text: &'a str) -> Fallible<Self> {
        // A byte-order mark or blank lines before `tree` pass, as in LightGBM's own loader.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .skip_while(|(_, l)| l.trim().is_empty())
            .peekable();
        if lines.peek().map(|&(_, l)| l.trim()) != Some("tree") {
            return Err("the first line is not `tree`: not a LightGBM text model".into());
        }
        let mut header = Vec::new();
        while let Some(&(n, line)) = lines.peek() {
            if line.starts_with("Tree=") || line == "end of trees" {
                break;
            }
            header.push((n, line));
            lines.next();
        }
        let mut trees: Vec<TreeBlock> = Vec::new();
        let mut ended = false;
        for (n, line) in lines.by_ref() {
            if line == "end of trees" {
                ended = true;
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with("Tree=") {
                trees.push(TreeBlock {
                    line: n,
                    keys: HashMap::new(),
                });
                continue;
            }
            // The header loop stops only at `Tree=` or `end of trees`, so a block is open.
            let Some(block) = trees.last_mut() else {
                return Err(format!("line {n}: a tree line outside any tree"));
            };
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!(
                    "line {n}: expected key=value, found {}",
                    excerpt(line)
                ));
            };
            if block.keys.insert(key, value).is_some() {
                return Err(format!("line {n}: {key} appears twice in one tree"));
            }
        }
        if !ended {
            return Err(format!(
                "truncated: no `end of trees` line (after {} trees)",
                trees.len()
            ));
        }
        let tail: Vec<&str> = lines.map(|(_, l)| l).collect();
        // A cut here would silently drop `pandas_categorical`, which follows the parameters.
        if tail.iter().any(|l| l.trim_end() == "parameters:")
            && !tail.iter().any(|l| l.trim_end() == "end of parameters")
        {
            return Err("truncated: the parameters section has no end".into());
        }
        Ok(Sections {
            header,
            trees,
            tail,
        })
    }

    /// A `[name: value]` line of the `parameters:` section.
    fn parameter(&self, name: &str) -> Option<&'a str> {
        let mut inside = false;
        for line in &self.tail {
            match line.trim_end() {
                "parameters:" => inside = true,
                "end of parameters" => return None,
                l if inside => {
                    let found = l
                        .strip_prefix('[')
                        .and_then(|l| l.strip_suffix(']'))
                        .and_then(|l| l.strip_prefix(name))
                        .and_then(|l| l.strip_prefix(": ").or_else(|| l.strip_prefix(':')));
                    if found.is_some() {
                        return found;
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// The JSON after `pandas_categorical:` on the last non-blank line, where the Python
    /// package appends it.
    fn pandas_categorical(&self) -> Option<&'a str> {
        self.tail
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .and_then(|l| l.strip_prefix("pandas_categorical:"))
    }
}

/// The header's keys this parser uses.
struct Header<'a> {
    version: Option<&'a str>,
    trees_per_iteration: usize,
    objective: Option<&'a str>,
    average_output: bool,
    names: Vec<&'a str>,
    infos: Vec<&'a str>,
    tree_sizes: Option<usize>,
}

impl<'a> Header<'a> {
    fn read(lines: &[(usize, &'a str)]) -> Fallible<Self> {
        let mut keys: HashMap<&str, &str> = HashMap::new();
        for &(n, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            if keys.insert(key, value).is_some() {
                return Err(format!("line {n}: {key} appears twice in the header"));
            }
        }
        let int = |key: &str, min: i64| -> Fallible<Option<usize>> {
            let Some(v) = keys.get(key) else {
                return Ok(None);
            };
            match v.trim().parse::<i64>() {
                Ok(i) if i >= min && i <= u32::MAX as i64 => Ok(Some(i as usize)),
                _ => Err(format!("{key}={} is not a valid count", excerpt(v))),
            }
        };
        let num_class = int("num_class", 1)?.ok_or("no num_class line")?;
        let trees_per_iteration = int("num_tree_per_iteration", 1)?.unwrap_or(num_class);
        let max_feature_idx = int("max_feature_idx", 0)?.ok_or("no max_feature_idx line")?;
        let n_features = max_feature_idx + 1;
        let words = |key: &str| -> Fallible<Vec<&'a str>> {
            let v: &'a str = keys.get(key).ok_or_else(|| format!("no {key} line"))?;
            let words: Vec<&str> = v.split(' ').filter(|w| !w.is_empty()).collect();
            if words.len() != n_features {
                return Err(format!(
                    "{key} has {} entries, max_feature_idx={max_feature_idx} needs {n_features}",
                    words.len()
                ));
            }
            Ok(words)
        };
        let names = words("feature_names")?;
        let infos = words("feature_infos")?;
        Ok(Header {
            version: keys.get("version").copied(),
            trees_per_iteration,
            objective: keys.get("objective").map(|o| o.trim()),
            average_output: keys.contains_key("average_output"),
            names,
            infos,
            tree_sizes: keys
                .get("tree_sizes")
                .map(|v| v.split(' ').filter(|w| !w.is_empty()).count()),
        })
    }
}

/// What the objective line makes of the raw scores, as each objective's `ConvertOutput`.
fn objective(line: Option<&str>, k: usize) -> Fallible<(Task, Transform)> {
    let words: Vec<&str> = line
        .unwrap_or("")
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect();
    let name = words.first().map_or("custom", |w| alias(w));
    let params = words.get(1..).unwrap_or_default();
    let param = |key: &str| {
        params
            .iter()
            .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
    };
    let sigmoid = || -> Fallible<f64> {
        match param("sigmoid").map(f64::from_str) {
            Some(Ok(s)) if s.is_finite() && s > 0.0 => Ok(s),
            _ => Err(format!(
                "objective `{name}` needs sigmoid:<positive number>"
            )),
        }
    };
    let one_output = || -> Fallible<()> {
        if k == 1 {
            Ok(())
        } else {
            Err(format!(
                "objective `{name}` with num_tree_per_iteration={k} (needs 1)"
            ))
        }
    };
    let classes = || -> Fallible<Task> {
        match param("num_class").map(usize::from_str) {
            Some(Ok(n)) if n == k && n >= 2 => Ok(Task::Classification {
                labels: (0..n as i64).map(Label::Int).collect(),
            }),
            _ => Err(format!(
                "objective `{name}` needs num_class:<n> equal to num_tree_per_iteration={k}, at least 2"
            )),
        }
    };
    Ok(match name {
        "binary" => {
            one_output()?;
            let labels = vec![Label::Int(0), Label::Int(1)];
            (
                Task::Classification { labels },
                Transform::Sigmoid { scale: sigmoid()? },
            )
        }
        "multiclass" => (classes()?, Transform::Softmax),
        // LightGBM does not normalise the per-class probabilities: neither does this.
        "multiclassova" => (classes()?, Transform::Sigmoid { scale: sigmoid()? }),
        // These honour `sqrt`; huber, poisson, gamma and tweedie drop it when they load.
        "regression" | "regression_l1" | "quantile" | "fair" | "mape" => {
            one_output()?;
            let link = if params.contains(&"sqrt") {
                Transform::SignSquare
            } else {
                Transform::Identity
            };
            (Task::Regression, link)
        }
        "huber" | "custom" => {
            one_output()?;
            (Task::Regression, Transform::Identity)
        }
        "poisson" | "gamma" | "tweedie" => {
            one_output()?;
            (Task::Regression, Transform::Exp)
        }
        // Labels in [0, 1] are probabilities, not classes: the output is one number.
        "cross_entropy" => {
            one_output()?;
            (Task::Regression, Transform::Sigmoid { scale: 1.0 })
        }
        "cross_entropy_lambda" => {
            return Err(
                "objective cross_entropy_lambda (output log(1 + exp(score))) is not supported"
                    .into(),
            )
        }
        "lambdarank" | "rank_xendcg" => {
            return Err(format!("ranking objective {name} is not supported"))
        }
        other => return Err(format!("unknown objective {}", excerpt(other))),
    })
}

/// LightGBM's `ParseObjectiveAlias`, on the objective's name.
fn alias(name: &str) -> &str {
    match name {
        "regression_l2"
        | "mean_squared_error"
        | "mse"
        | "l2"
        | "l2_root"
        | "root_mean_squared_error"
        | "rmse" => "regression",
        "mean_absolute_error" | "l1" | "mae" => "regression_l1",
        "softmax" => "multiclass",
        "multiclass_ova" | "ova" | "ovr" => "multiclassova",
        "xentropy" => "cross_entropy",
        "xentlambda" => "cross_entropy_lambda",
        "mean_absolute_percentage_error" => "mape",
        "xendcg" | "xe_ndcg" | "xe_ndcg_mart" | "xendcg_mart" => "rank_xendcg",
        "none" | "null" | "na" => "custom",
        other => other,
    }
}

/// One `Tree=` block as nodes: LightGBM's internal nodes `0..num_leaves-1` (the root first),
/// then its leaves. Features that a categorical split reads go into `categorical`.
fn read_tree(
    block: &TreeBlock,
    n_features: usize,
    output: u32,
    categorical: &mut BTreeSet<usize>,
) -> Fallible<Tree> {
    let output = TreeOutput::One(output);
    let count = |key: &str| -> Fallible<usize> {
        let v = block.keys.get(key).ok_or_else(|| format!("no {key}"))?;
        match v.trim().parse::<i64>() {
            Ok(i) if i >= 0 && i <= u32::MAX as i64 => Ok(i as usize),
            _ => Err(format!("{key}={} is not a valid count", excerpt(v))),
        }
    };
    let num_leaves = count("num_leaves")?;
    let num_cat = count("num_cat")?;
    if num_leaves == 0 {
        return Err("num_leaves=0".into());
    }
    let leaves_needed = format!("num_leaves={num_leaves} needs {num_leaves}");
    let leaf_value: Vec<f64> = values(block, "leaf_value", num_leaves, &leaves_needed)?;
    if num_leaves == 1 {
        return Ok(Tree {
            nodes: vec![Node::Leaf {
                values: vec![leaf_value[0]],
            }],
            output,
        });
    }

    let m = num_leaves - 1;
    let needed = format!("num_leaves={num_leaves} needs {m}");
    let split_feature: Vec<i64> = values(block, "split_feature", m, &needed)?;
    let threshold: Vec<f64> = values(block, "threshold", m, &needed)?;
    let left_child: Vec<i64> = values(block, "left_child", m, &needed)?;
    let right_child: Vec<i64> = values(block, "right_child", m, &needed)?;
    let decision_type: Vec<i64> = if block.keys.contains_key("decision_type") {
        values(block, "decision_type", m, &needed)?
    } else {
        vec![0; m]
    };
    let (cat_boundaries, cat_threshold): (Vec<usize>, Vec<u32>) = if num_cat > 0 {
        let b: Vec<usize> = values(
            block,
            "cat_boundaries",
            num_cat + 1,
            &format!("num_cat={num_cat} needs {}", num_cat + 1),
        )?;
        if b.windows(2).any(|w| w[0] > w[1]) {
            return Err("cat_boundaries are not in increasing order".into());
        }
        let end = b[num_cat];
        let t = values(
            block,
            "cat_threshold",
            end,
            &format!("cat_boundaries end at {end}"),
        )?;
        (b, t)
    } else {
        (Vec::new(), Vec::new())
    };

    let n_nodes = m + num_leaves;
    let child = |c: i64, node: usize, side: &str| -> Fallible<u32> {
        let at = if c >= 0 {
            c as usize
        } else {
            // `!c` is LightGBM's leaf index for a negative child.
            m.saturating_add(!c as usize)
        };
        if c >= m as i64 || at >= n_nodes {
            return Err(format!(
                "node {node}: {side}_child {c} is out of range for num_leaves={num_leaves}"
            ));
        }
        Ok(at as u32)
    };
    let mut nodes = Vec::with_capacity(n_nodes);
    for i in 0..m {
        let feature = split_feature[i];
        if feature < 0 || feature as usize >= n_features {
            return Err(format!(
                "node {i}: split_feature {feature} is not one of the {n_features} features"
            ));
        }
        let dt = decision_type[i];
        if !(0..16).contains(&dt) {
            return Err(format!("node {i}: decision_type {dt} is not valid"));
        }
        let t = threshold[i];
        let default_left = dt & 2 != 0;
        let rule = if dt & 1 != 0 {
            // `CategoricalDecision`: NaN and negative values right whatever the missing type.
            let c = t as usize;
            if num_cat == 0 || !(t >= 0.0 && t.fract() == 0.0 && c < num_cat) {
                return Err(format!(
                    "node {i}: categorical split {} is not one of num_cat={num_cat} bitsets",
                    t
                ));
            }
            categorical.insert(feature as usize);
            Rule::InSet {
                bits: cat_threshold[cat_boundaries[c]..cat_boundaries[c + 1]].to_vec(),
                in_set_left: true,
                nan_left: false,
                negative_left: false,
            }
        } else {
            match (dt >> 2) & 3 {
                // None: NaN is 0.
                0 => Rule::LessEq {
                    threshold: past_zero_band(t),
                    nan_left: 0.0 <= t,
                },
                // Zero: the band (which NaN joins) goes the default way; outside it only
                // `|x| > kZeroThreshold` reaches the comparison, so `t` stays.
                1 => Rule::ZeroMissing {
                    threshold: t,
                    default_left,
                },
                2 => Rule::LessEq {
                    threshold: past_zero_band(t),
                    nan_left: default_left,
                },
                _ => return Err(format!("node {i}: decision_type {dt} has missing type 3")),
            }
        };
        nodes.push(Node::Split(Split {
            feature: feature as u32,
            rule,
            left: child(left_child[i], i, "left")?,
            right: child(right_child[i], i, "right")?,
        }));
    }
    nodes.extend(
        leaf_value
            .into_iter()
            .map(|v| Node::Leaf { values: vec![v] }),
    );

    // Every node reached exactly once from the root: no cycle, no sharing, nothing left over.
    let mut seen = vec![false; n_nodes];
    let mut stack = vec![0u32];
    while let Some(at) = stack.pop() {
        let at = at as usize;
        if seen[at] {
            return Err(format!("{} is reached twice: not a tree", node_name(at, m)));
        }
        seen[at] = true;
        if let Node::Split(s) = &nodes[at] {
            stack.push(s.right);
            stack.push(s.left);
        }
    }
    if let Some(at) = seen.iter().position(|s| !s) {
        return Err(format!(
            "{} is not reachable from the root",
            node_name(at, m)
        ));
    }
    Ok(Tree { nodes, output })
}

/// A node as LightGBM numbers it: internal nodes, then leaves.
fn node_name(at: usize, m: usize) -> String {
    if at < m {
        format!("node {at}")
    } else {
        format!("leaf {}", at - m)
    }
}

/// The threshold that sends every value where LightGBM sends it after zeroing the band
/// `|x| <= kZeroThreshold`: inside the band everything is 0, which goes left iff `0 <= t`.
fn past_zero_band(t: f64) -> f64 {
    if (-ZERO_THRESHOLD..ZERO_THRESHOLD).contains(&t) {
        if t >= 0.0 {
            ZERO_THRESHOLD
        } else {
            (-ZERO_THRESHOLD).next_down()
        }
    } else {
        t
    }
}

/// A tree's array `key`, which must hold `want` values (`needed` says why, for the error).
fn values<T: FromStr>(block: &TreeBlock, key: &str, want: usize, needed: &str) -> Fallible<Vec<T>> {
    let line = block.keys.get(key).ok_or_else(|| format!("no {key}"))?;
    let words = line.split(' ').filter(|w| !w.is_empty());
    let have = words.clone().count();
    if have != want {
        return Err(format!("{key} has {have} values, {needed}"));
    }
    words
        .enumerate()
        .map(|(i, w)| {
            w.parse()
                .map_err(|_| format!("{key} value {i} is not valid: {}", excerpt(w)))
        })
        .collect()
}

/// Each feature's name and kind. Categorical: listed in `categorical_feature`, shown as a
/// category list in `feature_infos`, or read by a categorical split.
fn features(
    header: &Header,
    file: &Sections,
    split_categorical: &BTreeSet<usize>,
) -> Fallible<Vec<InputFeature>> {
    let n = header.names.len();
    let mut categorical = split_categorical.clone();
    for (i, info) in header.infos.iter().enumerate() {
        if *info != "none" && !info.starts_with('[') {
            categorical.insert(i);
        }
    }
    if let Some(listed) = file.parameter("categorical_feature") {
        categorical.extend(
            parameter_features(listed, &header.names)
                .into_iter()
                .filter(|&i| i < n),
        );
    }

    let lists = match file.pandas_categorical() {
        None => Vec::new(),
        Some(json) => pandas_lists(json)?,
    };
    let mut categories: HashMap<usize, Vec<String>> = HashMap::new();
    if !lists.is_empty() {
        if lists.len() != categorical.len() {
            let names: Vec<&str> = categorical.iter().map(|&i| header.names[i]).collect();
            return Err(format!(
                "pandas_categorical has {} category lists but {} categorical features ({}): \
                 an ordered pandas Categorical or a hand-set categorical_feature makes the \
                 pairing ambiguous",
                lists.len(),
                categorical.len(),
                names.join(", ")
            ));
        }
        for (&f, list) in categorical.iter().zip(lists) {
            // The codes seen in training must index the list, or the pairing is wrong.
            let seen = header.infos[f]
                .split(':')
                .filter_map(|c| c.parse::<i64>().ok());
            if let Some(code) = seen.max().filter(|&c| c >= list.len() as i64) {
                return Err(format!(
                    "feature {}: category code {code} was seen in training but \
                     pandas_categorical lists {} categories for it",
                    header.names[f],
                    list.len()
                ));
            }
            categories.insert(f, list);
        }
    }
    Ok(header
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| InputFeature {
            name: name.to_string(),
            kind: if categorical.contains(&i) {
                InputKind::Categorical {
                    categories: categories.remove(&i),
                }
            } else {
                InputKind::Numeric
            },
        })
        .collect())
}

/// The features a `categorical_feature` parameter names: indices (`1,3`), or `name:a,b`.
/// Anything else names none (the category lists in `feature_infos` still count).
fn parameter_features(listed: &str, names: &[&str]) -> Vec<usize> {
    let listed = listed.trim();
    if let Some(by_name) = listed.strip_prefix("name:") {
        return by_name
            .split(',')
            .filter_map(|w| names.iter().position(|n| *n == w.trim()))
            .collect();
    }
    let indices: std::result::Result<Vec<usize>, _> = listed
        .split(',')
        .filter(|w| !w.trim().is_empty())
        .map(|w| w.trim().parse::<usize>())
        .collect();
    indices.unwrap_or_default()
}

/// `pandas_categorical`'s lists, each category as Python's `str` writes it; `null` is none.
fn pandas_lists(json: &str) -> Fallible<Vec<Vec<String>>> {
    use serde_json::Value;
    let bad = |why: &str| format!("pandas_categorical: {why}");
    let value: Value = serde_json::from_str(json).map_err(|e| bad(&format!("not JSON ({e})")))?;
    let lists = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(lists) => lists,
        _ => return Err(bad("not a list of lists")),
    };
    lists
        .into_iter()
        .map(|list| match list {
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    Value::Bool(b) => Ok(if b { "True" } else { "False" }.to_string()),
                    Value::Number(n) => Ok(match (n.as_i64(), n.as_u64(), n.as_f64()) {
                        (Some(i), _, _) => i.to_string(),
                        (_, Some(u), _) => u.to_string(),
                        (_, _, Some(f)) => python_float(f),
                        _ => n.to_string(),
                    }),
                    other => Err(bad(&format!(
                        "a category is {}",
                        excerpt(&other.to_string())
                    ))),
                })
                .collect(),
            _ => Err(bad("not a list of lists")),
        })
        .collect()
}

/// Python's `repr(float)`: the shortest round-trip digits, fixed notation for exponents from
/// -4 to 15 (with at least one decimal), scientific with a signed two-digit exponent otherwise.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sci = format!("{x:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return x.to_string();
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return x.to_string();
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}{rest}e{exp_sign}{:02}", exp.abs())
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() > int_len {
            format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
        } else {
            format!("{sign}{digits:0<int_len$}.0")
        }
    } else {
        format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
    }
}

/// The start of a bad value, for an error line.
fn excerpt(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{:?}...", &s[..at]),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model file around `trees` (each a `Tree=` block's lines), with `head` overriding
    /// header lines and `tail` appended after `end of trees`.
    fn model(head: &[&str], trees: &[&str], tail: &str) -> String {
        let mut keys = vec![
            ("version", "v4"),
            ("num_class", "1"),
            ("num_tree_per_iteration", "1"),
            ("label_index", "0"),
            ("max_feature_idx", "1"),
            ("objective", "regression"),
            ("feature_names", "a b"),
            ("feature_infos", "[-1:1] [-1:1]"),
        ];
        for h in head {
            let (k, v) = h.split_once('=').unwrap_or((h, ""));
            match keys.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => keys.push((k, v)),
            }
        }
        let mut s = String::from("tree\n");
        for (k, v) in keys {
            if k == "average_output" {
                s += "average_output\n";
            } else {
                s += &format!("{k}={v}\n");
            }
        }
        s += "\n";
        for (i, t) in trees.iter().enumerate() {
            s += &format!("Tree={i}\n{}\nis_linear=0\nshrinkage=1\n\n\n", t.trim());
        }
        s += "end of trees\n\nfeature_importances:\na=1\n";
        s + tail
    }

    /// One split on feature `f` with `threshold` and `decision_type`: leaf 0 is -1, leaf 1 is 1.
    fn stump(f: usize, threshold: &str, dt: i32) -> String {
        format!(
            "num_leaves=2\nnum_cat=0\nsplit_feature={f}\nsplit_gain=1\nthreshold={threshold}\n\
             decision_type={dt}\nleft_child=-1\nright_child=-2\nleaf_value=-1 1\nleaf_weight=1 1\n\
             leaf_count=1 1\ninternal_value=0\ninternal_weight=0\ninternal_count=2"
        )
    }

    fn ensemble(p: &Parsed) -> &Ensemble {
        match &p.model {
            Compiled::Trees(e) => e,
            Compiled::Onnx(_) => panic!("not trees"),
        }
    }

    /// The raw score of each row (one feature per row: `a`, with `b` = 0).
    fn scores(text: &str, xs: &[f64]) -> Vec<f64> {
        let p = parse(text.as_bytes()).unwrap();
        let e = ensemble(&p);
        let rows: Vec<f64> = xs
            .iter()
            .flat_map(|&x| {
                let mut r = vec![0.0; e.n_features];
                r[0] = x;
                r
            })
            .collect();
        e.predict_reference(&rows, xs.len())
    }

    fn error(text: &str) -> String {
        format!("{}", parse(text.as_bytes()).unwrap_err())
    }

    const NAN: f64 = f64::NAN;

    #[test]
    fn missing_type_none_sends_nan_as_zero() {
        // dt 0: missing None, default right (the bit is ignored). 0 <= 0.5, so NaN goes left.
        let m = model(&[], &[&stump(0, "0.5", 0)], "");
        assert_eq!(scores(&m, &[0.4, 0.5, 0.6, NAN]), [-1.0, -1.0, 1.0, -1.0]);
        let m = model(&[], &[&stump(0, "-0.5", 2)], "");
        assert_eq!(scores(&m, &[-0.6, -0.4, NAN]), [-1.0, 1.0, 1.0]);
    }

    #[test]
    fn missing_type_zero_sends_zero_and_nan_the_default_way() {
        // dt 4: missing Zero, default right; dt 6: default left.
        let m = model(&[], &[&stump(0, "0.5", 4)], "");
        assert_eq!(
            scores(&m, &[0.4, 0.0, -0.0, NAN, 1e-36, 0.6]),
            [-1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        );
        let m = model(&[], &[&stump(0, "-0.5", 6)], "");
        assert_eq!(scores(&m, &[-0.6, -0.4, 0.0, NAN]), [-1.0, 1.0, -1.0, -1.0]);
        let p = parse(m.as_bytes()).unwrap();
        assert!(matches!(
            ensemble(&p).trees[0].nodes[0],
            Node::Split(Split {
                rule: Rule::ZeroMissing {
                    threshold: -0.5,
                    default_left: true
                },
                ..
            })
        ));
    }

    /// LightGBM zeroes `|x| <= 1e-35f` (1.0000000180025095e-35) before the trees, so such an
    /// `x` goes the default way at a Zero split: `Rule::ZeroMissing` tests `|x| <= 1e-35f`.
    #[test]
    fn missing_type_zero_band_is_lightgbms_float_constant() {
        let m = model(&[], &[&stump(0, "0.5", 4)], "");
        let inside = 1e-35f64.next_up();
        assert_eq!(
            scores(&m, &[inside, -inside, ZERO_THRESHOLD]),
            [1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn missing_type_nan_sends_nan_the_default_way() {
        // dt 8: missing NaN, default right; dt 10: default left.
        let m = model(&[], &[&stump(0, "0.5", 8)], "");
        assert_eq!(scores(&m, &[0.4, 0.0, 0.6, NAN]), [-1.0, -1.0, 1.0, 1.0]);
        let m = model(&[], &[&stump(0, "0.5", 10)], "");
        assert_eq!(scores(&m, &[0.6, NAN]), [1.0, -1.0]);
    }

    #[test]
    fn thresholds_are_read_exactly_and_the_zero_band_is_zero() {
        let m = model(&[], &[&stump(0, "0.10000000000000001", 2)], "");
        assert_eq!(scores(&m, &[0.1, 0.1f64.next_up()]), [-1.0, 1.0]);
        // LightGBM zeroes |x| <= 1e-35f before the trees: with t = -1e-35f (a usual bin edge),
        // -1e-35f itself is 0 and goes right; anything below goes left.
        let edge = -ZERO_THRESHOLD;
        let m = model(&[], &[&stump(0, "-1.0000000180025095e-35", 2)], "");
        assert_eq!(
            scores(&m, &[edge, edge.next_down(), -1e-36]),
            [1.0, -1.0, 1.0]
        );
        // t = 0: the whole band is 0, so left, up to the band's edge.
        let m = model(&[], &[&stump(0, "0", 2)], "");
        assert_eq!(
            scores(&m, &[1e-36, ZERO_THRESHOLD, ZERO_THRESHOLD.next_up()]),
            [-1.0, -1.0, 1.0]
        );
        // t = -1e-36 (inside the band, below 0): 0 goes right, so only x < -1e-35f goes left.
        let m = model(&[], &[&stump(0, "-1e-36", 0)], "");
        assert_eq!(
            scores(&m, &[-1e-36, -2e-36, edge.next_down(), NAN]),
            [1.0, 1.0, -1.0, 1.0]
        );
    }

    /// Two categorical splits: feature 0 in {1, 3} or, past it, feature 1 in {0, 33}.
    const CATEGORICAL: &str = "num_leaves=3\nnum_cat=2\nsplit_feature=0 1\nsplit_gain=1 1\n\
        threshold=0 1\ndecision_type=1 9\nleft_child=-1 -2\nright_child=1 -3\n\
        leaf_value=10 20 30\ncat_boundaries=0 1 3\ncat_threshold=10 1 2";

    #[test]
    fn categorical_splits_follow_the_bitset_and_send_nan_and_negatives_right() {
        let m = model(&["feature_infos=1:3 0:33"], &[CATEGORICAL], "");
        let p = parse(m.as_bytes()).unwrap();
        let e = ensemble(&p);
        let at = |a: f64, b: f64| e.predict_reference(&[a, b], 1)[0];
        assert_eq!(at(1.0, NAN), 10.0);
        assert_eq!(at(3.7, NAN), 10.0); // truncated to 3
        assert_eq!(at(2.0, 0.0), 20.0);
        assert_eq!(at(-0.5, 33.0), 20.0); // -0.5 truncates to 0: not in {1, 3}
        assert_eq!(at(NAN, 0.0), 20.0); // NaN right, whatever the missing type (NaN here)
        assert_eq!(at(-1.0, 0.0), 20.0); // negative right
        assert_eq!(at(1e10, 32.0), 30.0); // far out: not in the set
        assert_eq!(at(0.0, NAN), 30.0);
        assert_eq!(at(0.0, -3.0), 30.0);
        assert_eq!(at(0.0, 64.0), 30.0); // past the bitset
        assert!(p
            .features
            .iter()
            .all(|f| f.kind == InputKind::Categorical { categories: None }));
    }

    #[test]
    fn pandas_categories_pair_with_categorical_features_in_order() {
        let tail = "\nparameters:\n[linear_tree: 0]\n[categorical_feature: 0,1]\nend of parameters\n\n\
                    pandas_categorical:[[\"x\", \"y\", \"z\", \"w\"], [1, 2.5, 3.0, 1e-05, 1e+16, true]]\n";
        let m = model(&["feature_infos=1:3 0:5"], &[CATEGORICAL], tail);
        let p = parse(m.as_bytes()).unwrap();
        let cats = |i: usize| match &p.features[i].kind {
            InputKind::Categorical { categories } => categories.clone().unwrap(),
            k => panic!("{k:?}"),
        };
        assert_eq!(cats(0), ["x", "y", "z", "w"]);
        assert_eq!(cats(1), ["1", "2.5", "3.0", "1e-05", "1e+16", "True"]);

        let null = model(
            &["feature_infos=1:3 0:5"],
            &[CATEGORICAL],
            "pandas_categorical:null\n",
        );
        assert!(parse(null.as_bytes())
            .unwrap()
            .features
            .iter()
            .all(|f| f.kind == InputKind::Categorical { categories: None }));

        // An ordered Categorical is a pandas list for a numeric feature: refused, not guessed.
        let m = model(
            &["max_feature_idx=2", "feature_names=a b o", "feature_infos=1:3 0:5 [0:1]"],
            &[CATEGORICAL],
            "pandas_categorical:[[\"x\",\"y\",\"z\",\"w\"],[\"p\",\"q\",\"r\",\"s\",\"t\",\"u\"],[\"lo\",\"hi\"]]\n",
        );
        assert!(error(&m)
            .contains("pandas_categorical has 3 category lists but 2 categorical features (a, b)"));
        // A training code past the list's end: the pairing is wrong.
        let m = model(
            &["feature_infos=1:3 0:5"],
            &[CATEGORICAL],
            "pandas_categorical:[[\"x\"],[\"p\",\"q\",\"r\",\"s\",\"t\",\"u\"]]\n",
        );
        assert!(error(&m).contains("feature a: category code 3 was seen"));
    }

    #[test]
    fn python_floats_print_as_repr() {
        let cases = [
            (0.1, "0.1"),
            (2.0, "2.0"),
            (-0.0, "-0.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (-2.5e-300, "-2.5e-300"),
            (123.456, "123.456"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float(x), want);
        }
    }

    #[test]
    fn objectives_set_the_task_and_the_link() {
        let parsed = |head: &[&str], n_trees: usize| {
            let stump = stump(0, "0", 2);
            let trees = vec![stump.as_str(); n_trees];
            parse(model(head, &trees, "").as_bytes())
        };
        let p = parsed(&["objective=binary sigmoid:0.5"], 1).unwrap();
        assert_eq!(ensemble(&p).transform, Transform::Sigmoid { scale: 0.5 });
        assert_eq!(
            p.task,
            Task::Classification {
                labels: vec![Label::Int(0), Label::Int(1)]
            }
        );
        assert_eq!(p.objective, "binary sigmoid:0.5");
        assert_eq!(p.producer.as_deref(), Some("LightGBM v4"));
        let p = parsed(&["objective=regression sqrt"], 1).unwrap();
        assert_eq!(ensemble(&p).transform, Transform::SignSquare);
        let p = parsed(&["objective=huber"], 1).unwrap();
        assert_eq!(ensemble(&p).transform, Transform::Identity);
        let p = parsed(&["objective=tweedie"], 1).unwrap();
        assert_eq!(ensemble(&p).transform, Transform::Exp);
        let p = parsed(&["objective=cross_entropy"], 1).unwrap();
        assert_eq!(
            (&p.task, ensemble(&p).transform),
            (&Task::Regression, Transform::Sigmoid { scale: 1.0 })
        );

        let multi = [
            "num_class=3",
            "num_tree_per_iteration=3",
            "objective=multiclass num_class:3",
        ];
        let p = parsed(&multi, 6).unwrap();
        let e = ensemble(&p);
        assert_eq!((e.n_outputs, e.transform), (3, Transform::Softmax));
        let outputs: Vec<_> = e.trees.iter().map(|t| t.output).collect();
        assert_eq!(outputs, [0, 1, 2, 0, 1, 2].map(TreeOutput::One));
        let ova = [
            "num_class=3",
            "num_tree_per_iteration=3",
            "objective=multiclassova num_class:3 sigmoid:1",
        ];
        assert_eq!(
            ensemble(&parsed(&ova, 3).unwrap()).transform,
            Transform::Sigmoid { scale: 1.0 }
        );
        assert!(parsed(&multi, 4)
            .unwrap_err()
            .to_string()
            .contains("4 trees is not a multiple"));

        let p = parsed(&["average_output"], 4).unwrap();
        assert_eq!(ensemble(&p).divisor, 4.0);

        for (objective, says) in [
            (
                "lambdarank",
                "ranking objective lambdarank is not supported",
            ),
            ("cross_entropy_lambda", "cross_entropy_lambda"),
            ("binary", "needs sigmoid:"),
            ("what", "unknown objective \"what\""),
        ] {
            let o = format!("objective={objective}");
            let e = parsed(&[&o], 1).unwrap_err().to_string();
            assert!(e.starts_with("LightGBM model: ") && e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_single_leaf_tree_is_its_value() {
        let m = model(
            &[],
            &["num_leaves=1\nnum_cat=0\nsplit_feature=\nthreshold=\nleaf_value=0.25"],
            "",
        );
        assert_eq!(scores(&m, &[NAN]), [0.25]);
    }

    #[test]
    fn linear_trees_are_refused() {
        let linear = stump(0, "0", 2) + "\nis_linear=1\nleaf_const=0 0\nnum_features=1 1\nleaf_features=0  0 \nleaf_coeff=1  2 ";
        let mut m = model(&[], &[&linear], "");
        m = m.replacen("is_linear=0\n", "", 1);
        assert!(error(&m).contains("linear trees (is_linear) are not supported"));
    }

    #[test]
    fn every_truncation_is_an_error_and_nothing_panics() {
        let m = model(
            &["feature_infos=1:3 0:33"],
            &[CATEGORICAL, &stump(1, "0.5", 2)],
            "",
        );
        let end = m.find("end of trees").unwrap();
        for cut in 0..m.len() {
            let result = parse(&m.as_bytes()[..cut]);
            if cut < end + "end of trees".len() {
                assert!(result.is_err(), "cut at {cut} parsed");
            }
        }
        assert!(error(&m[..end]).contains("truncated: no `end of trees` line (after 2 trees)"));
    }

    #[test]
    fn forged_counts_and_links_are_errors() {
        let bad =
            |from: &str, to: &str| error(&model(&[], &[&stump(0, "0", 2).replace(from, to)], ""));
        assert_eq!(
            bad("num_leaves=2", "num_leaves=5"),
            "LightGBM model: tree 0 (line 11): leaf_value has 2 values, num_leaves=5 needs 5"
        );
        assert!(bad("num_leaves=2", "num_leaves=99999999999").contains("not a valid count"));
        assert!(bad("left_child=-1", "left_child=-1 -2")
            .contains("left_child has 2 values, num_leaves=2 needs 1"));
        assert!(bad("left_child=-1", "left_child=-3").contains("left_child -3 is out of range"));
        assert!(bad("left_child=-1", "left_child=1").contains("left_child 1 is out of range"));
        assert!(bad("left_child=-1", "left_child=0").contains("node 0 is reached twice"));
        assert!(bad("left_child=-1", "left_child=-2").contains("leaf 1 is reached twice"));
        assert!(bad("split_feature=0", "split_feature=2")
            .contains("split_feature 2 is not one of the 2 features"));
        assert!(bad("decision_type=2", "decision_type=1")
            .contains("categorical split 0 is not one of num_cat=0"));
        assert!(bad("decision_type=2", "decision_type=12").contains("missing type 3"));
        assert!(bad("threshold=0", "threshold=zero")
            .contains("threshold value 0 is not valid: \"zero\""));
        assert!(bad("leaf_value=-1 1", "leaf_value=-1 1\nleaf_value=2 3")
            .contains("leaf_value appears twice"));

        // A cycle: node 1 is its own child (and 0's).
        let cycle =
            "num_leaves=3\nnum_cat=0\nsplit_feature=0 0\nthreshold=0 0\ndecision_type=2 2\n\
                     left_child=1 1\nright_child=-1 -2\nleaf_value=1 2 3";
        assert!(error(&model(&[], &[cycle], "")).contains("node 1 is reached twice"));
        // Categorical bitsets out of order or past cat_threshold.
        let cat = |b: &str| {
            error(&model(
                &[],
                &[&CATEGORICAL.replace("cat_boundaries=0 1 3", b)],
                "",
            ))
        };
        assert!(cat("cat_boundaries=0 2 1").contains("not in increasing order"));
        assert!(cat("cat_boundaries=0 1 4")
            .contains("cat_threshold has 3 values, cat_boundaries end at 4"));
        assert!(
            cat("cat_boundaries=0 1").contains("cat_boundaries has 2 values, num_cat=2 needs 3")
        );

        assert!(
            error(&model(&["feature_names=a"], &[&stump(0, "0", 2)], ""))
                .contains("feature_names has 1 entries, max_feature_idx=1 needs 2")
        );
        assert!(
            error(&model(&["tree_sizes=10 10"], &[&stump(0, "0", 2)], ""))
                .contains("tree_sizes lists 2 trees")
        );
        assert!(error("{\"learner\": {}}").contains("not a LightGBM text model"));
        let bom = format!(
            "\u{feff}\r\n{}",
            model(&[], &[&stump(0, "0", 2)], "").replace('\n', "\r\n")
        );
        assert!(parse(bom.as_bytes()).is_ok());
        assert!(error(&model(&[], &[], "")).contains("no trees"));
        assert!(parse(b"tree\n\xff\n")
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
    }
}
