//! The compiled form of an [`Ensemble`]: every tree in one array of 16-byte nodes, walked by
//! blocks of rows, tree by tree, as nightshift's own forest is (`model/forest.rs`).
//!
//! A row at node `i` moves to `left + right?`, the two children being adjacent. The common
//! test, `x <= threshold` with missing values going one way, is branch-free: `right = (x >
//! threshold) | (x is NaN & nan_right)`. Every other rule (LightGBM's zero-as-missing,
//! categorical sets, ONNX's equality tests) is a *special* node whose rule is looked up and
//! evaluated by [`Rule::goes_left`], the definition itself; the branch to it is predicted
//! well, being rare or always the same for a node. A leaf points to itself and tests an extra
//! column that is `-inf` in every row, so a walk of the tree's depth in steps ends on its leaf
//! whatever the row. Sums are made per row in tree order, in the library's precision, so a
//! score does not depend on the block size: equal, bit for bit, to
//! [`Ensemble::predict_reference`].

use super::ensemble::{Arithmetic, Ensemble, Node, Rule, TreeOutput};

/// Node feature bits: the low bits index the feature (or the special rule).
const NAN_RIGHT: u32 = 1 << 31;
const SPECIAL: u32 = 1 << 30;
const INDEX: u32 = SPECIAL - 1;

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct FlatNode {
    /// Split: the threshold. Leaf: the value (single-output trees) or the offset of its values
    /// in `Flat::values`, as the bits of the f64. Special: unused.
    threshold: f64,
    /// Split: feature index, plus `NAN_RIGHT`. Special: `SPECIAL` plus the index in
    /// `Flat::specials`. Leaf: the sentinel column `n_features`.
    feature: u32,
    left: u32,
}

/// A compiled ensemble.
#[derive(Debug, Clone)]
pub struct Flat {
    nodes: Vec<FlatNode>,
    /// Per tree: root slot, depth, output (`u32::MAX` for all outputs).
    trees: Vec<(u32, u32, u32)>,
    specials: Vec<(u32, Rule)>,
    values: Vec<f64>,
}

/// Rows walked together: a block's rows (25 features of 8 bytes) stay in L2 while every tree
/// walks them.
const BLOCK: usize = 256;

impl Flat {
    /// Lays the trees out flat, each level by level. The ensemble was checked by its parser:
    /// children in range, no cycles, features below `n_features`.
    pub fn new(e: &Ensemble) -> Self {
        let sentinel = e.n_features as u32;
        let mut nodes: Vec<FlatNode> = Vec::new();
        let mut specials = Vec::new();
        let mut values = Vec::new();
        let mut trees = Vec::with_capacity(e.trees.len());
        for tree in &e.trees {
            let root = nodes.len();
            nodes.push(FlatNode {
                threshold: 0.0,
                feature: 0,
                left: 0,
            });
            let mut depth = 0;
            let mut todo = std::collections::VecDeque::from([(0usize, root, 0u32)]);
            while let Some((i, at, d)) = todo.pop_front() {
                match &tree.nodes[i] {
                    Node::Leaf { values: v } => {
                        depth = depth.max(d);
                        let threshold = match tree.output {
                            TreeOutput::One(_) => v.first().copied().unwrap_or(0.0),
                            TreeOutput::All => {
                                let offset = values.len() as u64;
                                values.extend(
                                    (0..e.n_outputs).map(|o| v.get(o).copied().unwrap_or(0.0)),
                                );
                                f64::from_bits(offset)
                            }
                        };
                        nodes[at] = FlatNode {
                            threshold,
                            feature: sentinel,
                            left: at as u32,
                        };
                    }
                    Node::Split(s) => {
                        let l = nodes.len();
                        nodes.extend([nodes[at]; 2]);
                        nodes[at] = match &s.rule {
                            Rule::LessEq {
                                threshold,
                                nan_left,
                            } => FlatNode {
                                threshold: *threshold,
                                feature: s.feature | if *nan_left { 0 } else { NAN_RIGHT },
                                left: l as u32,
                            },
                            rule => {
                                specials.push((s.feature, rule.clone()));
                                FlatNode {
                                    threshold: 0.0,
                                    feature: SPECIAL | (specials.len() - 1) as u32,
                                    left: l as u32,
                                }
                            }
                        };
                        todo.push_back((s.left as usize, l, d + 1));
                        todo.push_back((s.right as usize, l + 1, d + 1));
                    }
                }
            }
            let output = match tree.output {
                TreeOutput::One(o) => o,
                TreeOutput::All => u32::MAX,
            };
            trees.push((root as u32, depth, output));
        }
        Self {
            nodes,
            trees,
            specials,
            values,
        }
    }

    /// Bytes of the compiled form.
    pub fn bytes(&self) -> usize {
        self.nodes.len() * std::mem::size_of::<FlatNode>()
            + self.trees.len() * 12
            + self.values.len() * 8
            + self.specials.len() * std::mem::size_of::<(u32, Rule)>()
    }

    /// [`Ensemble::predict`], compiled.
    pub fn predict(&self, e: &Ensemble, rows: &[f64], n_rows: usize) -> Vec<f64> {
        match e.arithmetic {
            Arithmetic::F64 => self.sums::<f64>(e, rows, n_rows),
            Arithmetic::F32 => self.sums::<f32>(e, rows, n_rows),
        }
    }

    fn sums<A: Acc>(&self, e: &Ensemble, rows: &[f64], n_rows: usize) -> Vec<f64> {
        let k = e.n_outputs;
        let nf = e.n_features;
        let stride = nf + 1;
        let mut out = vec![0.0; n_rows * k];
        let mut block = vec![f64::NEG_INFINITY; BLOCK * stride];
        let mut at = vec![0u32; BLOCK];
        let mut acc = vec![A::default(); BLOCK * k];
        let base: Vec<A> = e.base.iter().map(|&b| A::from_f64(b)).collect();
        for start in (0..n_rows).step_by(BLOCK) {
            let b = BLOCK.min(n_rows - start);
            for r in 0..b {
                let src = &rows[(start + r) * nf..(start + r + 1) * nf];
                let dst = &mut block[r * stride..r * stride + nf];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = A::round(s);
                }
            }
            let xb = &block[..b * stride];
            let acc = &mut acc[..b * k];
            if e.base_after_average {
                acc.fill(A::default());
            } else {
                for row in acc.chunks_exact_mut(k) {
                    row.copy_from_slice(&base);
                }
            }
            for &(root, depth, output) in &self.trees {
                let at = &mut at[..b];
                at.fill(root);
                for _ in 0..depth {
                    for (row, a) in xb.chunks_exact(stride).zip(at.iter_mut()) {
                        *a = self.step(row, *a);
                    }
                }
                if output == u32::MAX {
                    for (r, &a) in at.iter().enumerate() {
                        let o = self.nodes[a as usize].threshold.to_bits() as usize;
                        for (s, &v) in acc[r * k..(r + 1) * k]
                            .iter_mut()
                            .zip(&self.values[o..o + k])
                        {
                            *s += A::from_f64(v);
                        }
                    }
                } else {
                    let o = output as usize;
                    for (r, &a) in at.iter().enumerate() {
                        acc[r * k + o] += A::from_f64(self.nodes[a as usize].threshold);
                    }
                }
            }
            for (r, row) in acc.chunks_exact(k).enumerate() {
                let raw = &mut out[(start + r) * k..(start + r + 1) * k];
                for (o, &s) in raw.iter_mut().zip(row) {
                    *o = s.to_f64();
                }
                e.finish(raw);
            }
        }
        out
    }

    /// One step of a walk: the node after `at` for `row` (`n_features + 1` numbers).
    #[inline(always)]
    fn step(&self, row: &[f64], at: u32) -> u32 {
        let node = self.nodes[at as usize];
        if node.feature & SPECIAL != 0 {
            return self.special(row, node);
        }
        let v = row[(node.feature & INDEX) as usize];
        let nan_right = node.feature & NAN_RIGHT != 0;
        node.left + ((v > node.threshold) | (v.is_nan() & nan_right)) as u32
    }

    #[cold]
    fn special(&self, row: &[f64], node: FlatNode) -> u32 {
        let (feature, rule) = &self.specials[(node.feature & INDEX) as usize];
        node.left + u32::from(!rule.goes_left(row[*feature as usize]))
    }
}

/// The sum a row's trees are added in: f64 for LightGBM, f32 for XGBoost and onnxruntime.
trait Acc: Copy + Default + std::ops::AddAssign {
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// An input value in this precision (as a double).
    fn round(v: f64) -> f64;
}

impl Acc for f64 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn round(v: f64) -> f64 {
        v
    }
}

impl Acc for f32 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn round(v: f64) -> f64 {
        v as f32 as f64
    }
}
