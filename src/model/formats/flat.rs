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
    /// The same walk over small integer codes, where every feature has few enough thresholds.
    coded: Option<Coded>,
}

/// The flat form over codes, as the forest's (`model/forest.rs`, `Quantised`): a value `v` of
/// feature `f` becomes `code(v) = #{j: t_j < v}` over `f`'s distinct thresholds `t_0 < t_1 <
/// ...`, so `v > t_j` exactly when `code(v) > j`. Each feature has two code columns, one per
/// way NaN can go: where NaN goes right, NaN is `u16::MAX` (above every rank); where it goes
/// left, NaN is 0 and the other codes are one higher (as are the ranks of the nodes reading
/// that column). A step is then `left + (code[column] > rank)`, the forest's, with no test for
/// NaN. A block's rows (four bytes a feature) and the 8-byte nodes stay in L1 together, where
/// f64 rows and 16-byte nodes did not.
#[derive(Debug, Clone)]
struct Coded {
    /// Slot for slot as `Flat::nodes`.
    nodes: Vec<CodeNode>,
    /// Per feature: its distinct `LessEq` thresholds ascending, padded with `+inf` to a power
    /// of two (at least one `+inf`).
    thresholds: Vec<Vec<f64>>,
    /// Per tree (as `Flat::trees`): which step walks it.
    kinds: Vec<TreeKind>,
    /// Per feature: its category column, where a set test on it became a mask node.
    category_columns: Vec<Option<u16>>,
    /// Slot for slot as `nodes`: a mask node's 64-bit answer per category code (bit set: goes
    /// right); 0 for every other node. Empty when there is no mask node.
    masks: Vec<u64>,
    /// Codes a row holds: two columns per feature, the category columns, the sentinel.
    stride: usize,
}

/// Which step a tree needs: the plainer, the faster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TreeKind {
    /// Only `x <= t` tests: `left + (code > rank)`.
    Plain,
    /// Also categorical sets of small categories, tested by mask without a branch.
    Masked,
    /// Also rules tested on the row's value (`Flat::specials`).
    Special,
}

/// A categorical set test becomes a mask node when every category in its set is below this:
/// codes `0..CATEGORIES` are the categories, then one code for every larger value, one for
/// negative values and one for NaN, 64 in all.
const CATEGORIES: u16 = 61;
const BEYOND_CODE: u16 = CATEGORIES;
const NEGATIVE_CODE: u16 = CATEGORIES + 1;
const NAN_CATEGORY: u16 = CATEGORIES + 2;
/// A mask node's rank: no code is above it, so only its mask decides.
const MASK_RANK: u16 = u16::MAX;

/// A node over codes: a row moves to `left + (code[column] > rank)`. Column `2f` is feature
/// `f` with NaN to the right, `2f + 1` with NaN to the left; a mask node reads the feature's
/// category column and its mask (`Coded::masks`); a leaf reads the sentinel column, the last,
/// whose code is 0. A special node has `column == SPECIAL_COLUMN` and its rule is
/// `Flat::specials[rank]`, tested on the row's value.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct CodeNode {
    left: u32,
    column: u16,
    rank: u16,
}

const SPECIAL_COLUMN: u16 = u16::MAX;

/// Rows walked side by side within a block, their positions in registers.
const GROUP: usize = 8;

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
                            // `x > NaN` is false for every x, but `x <= NaN` is false too: a NaN
                            // threshold is looked up as a special rule.
                            Rule::LessEq {
                                threshold,
                                nan_left,
                            } if !threshold.is_nan() => FlatNode {
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
        let coded = Coded::new(e, &nodes, &specials, &trees);
        Self {
            nodes,
            trees,
            specials,
            values,
            coded,
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
        if let Some(coded) = &self.coded {
            return self.coded_sums::<A>(coded, e, rows, n_rows);
        }
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
                self.add_leaves(at, output, acc, k);
            }
            finish_block(e, acc, &mut out[start * k..(start + b) * k]);
        }
        out
    }

    /// `sums` over codes, a group of rows at a time all the way down each tree.
    fn coded_sums<A: Acc>(&self, q: &Coded, e: &Ensemble, rows: &[f64], n_rows: usize) -> Vec<f64> {
        let k = e.n_outputs;
        let nf = e.n_features;
        let stride = q.stride;
        let mut out = vec![0.0; n_rows * k];
        // The rows' values (in the ensemble's precision), for special nodes.
        let mut block = vec![0.0f64; CODE_BLOCK * nf];
        let mut codes = vec![0u16; CODE_BLOCK * stride];
        let mut at = vec![0u32; CODE_BLOCK];
        let mut acc = vec![A::default(); CODE_BLOCK * k];
        let base: Vec<A> = e.base.iter().map(|&b| A::from_f64(b)).collect();
        for start in (0..n_rows).step_by(CODE_BLOCK) {
            let b = CODE_BLOCK.min(n_rows - start);
            let values = &mut block[..b * nf];
            for (d, &s) in values.iter_mut().zip(&rows[start * nf..(start + b) * nf]) {
                *d = A::round(s);
            }
            // Feature by feature: one feature's thresholds stay in L1 while its rows are coded.
            for (f, t) in q.thresholds.iter().enumerate() {
                if t.len() > 1 {
                    let column = values.iter().skip(f).step_by(nf);
                    let row_codes = codes[2 * f..].chunks_mut(stride);
                    for (c, &v) in row_codes.zip(column) {
                        let (right, left) = Coded::codes(t, v);
                        c[0] = right;
                        c[1] = left;
                    }
                }
            }
            for (f, column) in q.category_columns.iter().enumerate() {
                if let Some(column) = *column {
                    let values = values.iter().skip(f).step_by(nf);
                    let row_codes = codes[column as usize..].iter_mut().step_by(stride);
                    for (c, &v) in row_codes.zip(values) {
                        *c = Coded::category(v);
                    }
                }
            }
            let cb = &codes[..b * stride];
            let acc = &mut acc[..b * k];
            if e.base_after_average {
                acc.fill(A::default());
            } else {
                for row in acc.chunks_exact_mut(k) {
                    row.copy_from_slice(&base);
                }
            }
            for (t, &(root, depth, output)) in self.trees.iter().enumerate() {
                let at = &mut at[..b];
                // Three copies of one walk, one per step: a single generic walk taking the step
                // as a closure was measured 25 % slower (10.4 -> 13 ns per row and tree on the
                // 500-tree LightGBM model), so the duplication stays.
                if q.kinds[t] == TreeKind::Masked {
                    let mut groups = cb.chunks_exact(GROUP * stride);
                    let mut ats = at.chunks_exact_mut(GROUP);
                    for (group, out) in (&mut groups).zip(&mut ats) {
                        let mut a = [root; GROUP];
                        for _ in 0..depth {
                            for (j, a) in a.iter_mut().enumerate() {
                                *a = q.masked_step(&group[j * stride..(j + 1) * stride], *a);
                            }
                        }
                        out.copy_from_slice(&a);
                    }
                    let tail = ats.into_remainder();
                    tail.fill(root);
                    for _ in 0..depth {
                        let rows = groups.remainder().chunks_exact(stride);
                        for (row, a) in rows.zip(tail.iter_mut()) {
                            *a = q.masked_step(row, *a);
                        }
                    }
                } else if q.kinds[t] == TreeKind::Special {
                    let mut groups = cb.chunks_exact(GROUP * stride);
                    let mut ats = at.chunks_exact_mut(GROUP);
                    let mut first = 0;
                    for (group, out) in (&mut groups).zip(&mut ats) {
                        let mut a = [root; GROUP];
                        let vals = &values[first * nf..(first + GROUP) * nf];
                        for _ in 0..depth {
                            for (j, a) in a.iter_mut().enumerate() {
                                let row = &group[j * stride..(j + 1) * stride];
                                *a = q.special_step(self, row, &vals[j * nf..(j + 1) * nf], *a);
                            }
                        }
                        out.copy_from_slice(&a);
                        first += GROUP;
                    }
                    let tail = ats.into_remainder();
                    tail.fill(root);
                    for _ in 0..depth {
                        let rows = groups.remainder().chunks_exact(stride);
                        for (j, (row, a)) in rows.zip(tail.iter_mut()).enumerate() {
                            let v = &values[(first + j) * nf..(first + j + 1) * nf];
                            *a = q.special_step(self, row, v, *a);
                        }
                    }
                } else {
                    let mut groups = cb.chunks_exact(GROUP * stride);
                    let mut ats = at.chunks_exact_mut(GROUP);
                    for (group, out) in (&mut groups).zip(&mut ats) {
                        let mut a = [root; GROUP];
                        for _ in 0..depth {
                            for (j, a) in a.iter_mut().enumerate() {
                                *a = q.step(&group[j * stride..(j + 1) * stride], *a);
                            }
                        }
                        out.copy_from_slice(&a);
                    }
                    let tail = ats.into_remainder();
                    tail.fill(root);
                    for _ in 0..depth {
                        for (row, a) in groups.remainder().chunks_exact(stride).zip(tail.iter_mut())
                        {
                            *a = q.step(row, *a);
                        }
                    }
                }
                self.add_leaves(at, output, acc, k);
            }
            finish_block(e, acc, &mut out[start * k..(start + b) * k]);
        }
        out
    }

    /// Adds the values of the leaves `at` (one per row of the block) to the rows' sums `acc`
    /// (rows x `k`): to `output`, or to every output (`u32::MAX`, leaves of `TreeOutput::All`).
    #[inline(always)]
    fn add_leaves<A: Acc>(&self, at: &[u32], output: u32, acc: &mut [A], k: usize) {
        if output == u32::MAX {
            for (r, &a) in at.iter().enumerate() {
                let o = self.nodes[a as usize].threshold.to_bits() as usize;
                let row = &mut acc[r * k..(r + 1) * k];
                for (s, &v) in row.iter_mut().zip(&self.values[o..o + k]) {
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

/// A block's sums (rows x `k`) as the library's outputs, into `out` (the same shape).
fn finish_block<A: Acc>(e: &Ensemble, acc: &[A], out: &mut [f64]) {
    let k = e.n_outputs;
    for (row, raw) in acc.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        for (o, &s) in raw.iter_mut().zip(row) {
            *o = s.to_f64();
        }
        e.finish(raw);
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

/// Rows coded and walked together: their codes (two bytes a feature) and the hot nodes fit L1.
const CODE_BLOCK: usize = 512;

impl Coded {
    /// The coded form of `nodes`, or `None` when a feature has more thresholds than a code
    /// holds, or there are more features or special nodes than a node's fields hold.
    fn new(
        e: &Ensemble,
        nodes: &[FlatNode],
        specials: &[(u32, Rule)],
        trees: &[(u32, u32, u32)],
    ) -> Option<Self> {
        let nf = e.n_features;
        if 3 * nf + 1 >= SPECIAL_COLUMN as usize || specials.len() > u16::MAX as usize {
            return None;
        }
        // Set tests of small categories become mask nodes, each feature of theirs a category
        // column after the value columns.
        let mask_of = |rule: &Rule| -> Option<u64> {
            let Rule::InSet { bits, .. } = rule else {
                return None;
            };
            let small = bits.iter().enumerate().all(|(w, &word)| {
                (0..32).all(|b| word >> b & 1 == 0 || w * 32 + b < CATEGORIES as usize)
            });
            if !small {
                return None;
            }
            let mut mask = 0u64;
            for code in 0..64u16 {
                let x = match code {
                    BEYOND_CODE => CATEGORIES as f64,
                    NEGATIVE_CODE => -1.0,
                    NAN_CATEGORY => f64::NAN,
                    c => c as f64,
                };
                if !rule.goes_left(x) {
                    mask |= 1 << code;
                }
            }
            Some(mask)
        };
        let mut category_columns: Vec<Option<u16>> = vec![None; nf];
        let mut next_column = 2 * nf;
        for (feature, rule) in specials {
            let f = *feature as usize;
            if mask_of(rule).is_some() && category_columns[f].is_none() {
                category_columns[f] = Some(next_column as u16);
                next_column += 1;
            }
        }
        let sentinel = next_column as u16;
        let stride = next_column + 1;
        let mut thresholds: Vec<Vec<f64>> = vec![Vec::new(); nf];
        for n in nodes {
            if n.feature & SPECIAL == 0 && (n.feature & INDEX) as usize != nf {
                thresholds[(n.feature & INDEX) as usize].push(n.threshold);
            }
        }
        for t in &mut thresholds {
            t.sort_by(f64::total_cmp);
            // By value: -0.0 and 0.0 split alike.
            t.dedup_by(|a, b| a == b);
            // Codes go up to `len + 1` (NaN-left columns), below `u16::MAX` (NaN).
            if t.len() + 2 >= u16::MAX as usize {
                return None;
            }
            t.resize((t.len() + 1).next_power_of_two(), f64::INFINITY);
        }
        let mut masks = vec![0u64; nodes.len()];
        let coded: Vec<CodeNode> = nodes
            .iter()
            .enumerate()
            .map(|(slot, n)| {
                if n.feature & SPECIAL != 0 {
                    let (feature, rule) = &specials[(n.feature & INDEX) as usize];
                    if let Some(mask) = mask_of(rule) {
                        masks[slot] = mask;
                        return CodeNode {
                            left: n.left,
                            column: category_columns[*feature as usize]
                                .expect("a column for every mask node's feature"),
                            rank: MASK_RANK,
                        };
                    }
                    return CodeNode {
                        left: n.left,
                        column: SPECIAL_COLUMN,
                        rank: (n.feature & INDEX) as u16,
                    };
                }
                let f = (n.feature & INDEX) as usize;
                if f == nf {
                    return CodeNode {
                        left: n.left,
                        column: sentinel,
                        rank: 0,
                    };
                }
                let t = &thresholds[f];
                let rank = t.partition_point(|&v| v < n.threshold);
                debug_assert!(t[rank] == n.threshold);
                if n.feature & NAN_RIGHT != 0 {
                    CodeNode {
                        left: n.left,
                        column: (2 * f) as u16,
                        rank: rank as u16,
                    }
                } else {
                    CodeNode {
                        left: n.left,
                        column: (2 * f + 1) as u16,
                        rank: rank as u16 + 1,
                    }
                }
            })
            .collect();
        // A tree's slots run from its root to the next tree's.
        let mut kinds = Vec::with_capacity(trees.len());
        for (i, &(root, _, _)) in trees.iter().enumerate() {
            let end = trees.get(i + 1).map_or(coded.len(), |t| t.0 as usize);
            let tree = &coded[root as usize..end];
            kinds.push(if tree.iter().any(|n| n.column == SPECIAL_COLUMN) {
                TreeKind::Special
            } else if tree.iter().any(|n| n.rank == MASK_RANK) {
                TreeKind::Masked
            } else {
                TreeKind::Plain
            });
        }
        if !kinds.contains(&TreeKind::Masked) && !kinds.contains(&TreeKind::Special) {
            masks = Vec::new();
        }
        Some(Self {
            nodes: coded,
            thresholds,
            kinds,
            category_columns,
            masks,
            stride,
        })
    }

    /// A value's codes in its feature's two columns: (NaN right, NaN left).
    #[inline(always)]
    fn codes(t: &[f64], v: f64) -> (u16, u16) {
        if v.is_nan() {
            return (u16::MAX, 0);
        }
        let mut c = 0;
        let mut half = t.len() / 2;
        while half > 0 {
            let below = t[c + half - 1] < v;
            // A select, not a branch: whether a value is below a threshold is a coin toss the
            // predictor cannot learn.
            c = std::hint::select_unpredictable(below, c + half, c);
            half /= 2;
        }
        (c as u16, c as u16 + 1)
    }

    /// A value's code in its feature's category column (`Rule::InSet` truncates the same way).
    #[inline(always)]
    fn category(v: f64) -> u16 {
        if v.is_nan() {
            return NAN_CATEGORY;
        }
        let c = v.trunc();
        if c < 0.0 {
            NEGATIVE_CODE
        } else if c >= CATEGORIES as f64 {
            BEYOND_CODE
        } else {
            c as u16
        }
    }

    /// One step in a tree with mask nodes: a value node's mask is 0 and a mask node's rank is
    /// above every code, so `(code > rank) | mask bit` answers both without a branch.
    #[inline(always)]
    fn masked_step(&self, row: &[u16], at: u32) -> u32 {
        debug_assert!((at as usize) < self.nodes.len());
        // SAFETY: as `step`; `masks` has a mask per slot whenever a tree is `Masked`.
        let (node, mask) = unsafe {
            (
                *self.nodes.get_unchecked(at as usize),
                *self.masks.get_unchecked(at as usize),
            )
        };
        debug_assert!((node.column as usize) < row.len());
        // SAFETY: as `step`: columns are below the row's width in trees without special nodes
        // (category columns are allocated below the sentinel, the last column).
        let c = unsafe { *row.get_unchecked(node.column as usize) };
        node.left + ((c > node.rank) | ((mask >> (c & 63)) & 1 == 1)) as u32
    }

    /// One step of a walk over codes, in a tree with no special node: the node after `at`
    /// for a row's codes.
    #[inline(always)]
    fn step(&self, row: &[u16], at: u32) -> u32 {
        debug_assert!((at as usize) < self.nodes.len());
        // SAFETY: a walk starts at a root and only moves to a child; every child index
        // `Flat::new` writes is a slot it allocated, and `nodes` has a node per slot.
        let node = unsafe { *self.nodes.get_unchecked(at as usize) };
        debug_assert!((node.column as usize) < row.len());
        // SAFETY: a node's column is `2f` or `2f + 1` for a feature `f < n_features` (the
        // parsers check split features against the ensemble's `n_features`), a category
        // column, or the sentinel, the last of the row's `stride` codes. Special nodes, whose
        // column is out of range, are only in trees walked by `special_step`.
        let c = unsafe { *row.get_unchecked(node.column as usize) };
        node.left + (c > node.rank) as u32
    }

    /// `step` in a tree with special nodes, whose rules read the row's `values`.
    #[inline(always)]
    fn special_step(&self, flat: &Flat, row: &[u16], values: &[f64], at: u32) -> u32 {
        let node = self.nodes[at as usize];
        if node.column == SPECIAL_COLUMN {
            let (feature, rule) = &flat.specials[node.rank as usize];
            return node.left + u32::from(!rule.goes_left(values[*feature as usize]));
        }
        let c = row[node.column as usize];
        let mask = self.masks[at as usize];
        node.left + ((c > node.rank) | ((mask >> (c & 63)) & 1 == 1)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::super::ensemble::{Split, Transform, Tree};
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// A random tree of `depth` levels at most over `nf` features, thresholds from `cuts`, with
    /// every kind of rule.
    fn tree(
        rng: &mut Xoshiro256PlusPlus,
        nf: usize,
        cuts: &[f64],
        output: TreeOutput,
        k: usize,
    ) -> Tree {
        let mut nodes = vec![Node::Leaf { values: vec![] }];
        let mut todo = vec![(0usize, 0usize)];
        while let Some((i, d)) = todo.pop() {
            if d >= 6 || (d > 0 && rng.gen_bool(0.25)) {
                let n = if output == TreeOutput::All { k } else { 1 };
                nodes[i] = Node::Leaf {
                    values: (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect(),
                };
                continue;
            }
            let feature = rng.gen_range(0..nf) as u32;
            let threshold = cuts[rng.gen_range(0..cuts.len())];
            let rule = match rng.gen_range(0..10) {
                0 => Rule::ZeroMissing {
                    threshold,
                    default_left: rng.gen(),
                },
                1 => Rule::Equal {
                    value: threshold,
                    negate: rng.gen(),
                    nan_left: rng.gen(),
                },
                2 => Rule::InSet {
                    // Small sets (a mask node) as often as large ones (a special node).
                    bits: vec![rng.gen(), rng.gen::<u32>() >> (rng.gen_range(0..4) * 8)],
                    in_set_left: rng.gen(),
                    nan_left: rng.gen(),
                    negative_left: rng.gen(),
                },
                _ => Rule::LessEq {
                    threshold,
                    nan_left: rng.gen(),
                },
            };
            let (left, right) = (nodes.len(), nodes.len() + 1);
            nodes.push(Node::Leaf { values: vec![] });
            nodes.push(Node::Leaf { values: vec![] });
            nodes[i] = Node::Split(Split {
                feature,
                rule,
                left: left as u32,
                right: right as u32,
            });
            todo.push((left, d + 1));
            todo.push((right, d + 1));
        }
        Tree { nodes, output }
    }

    /// The compiled walks (over codes where the ensemble allows, over values where it does not)
    /// equal the definition bit for bit, in both precisions, for every kind of rule, NaN, ±0,
    /// values on the thresholds and either side of them.
    #[test]
    fn compiled_walks_equal_the_definition() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let cuts: Vec<f64> = (0..40)
            .map(|i| (i as f64 - 20.0) / 4.0)
            .chain([0.0, -0.0, 1e-35, f64::NAN])
            .collect();
        let mut kinds = Vec::new();
        for case in 0..40 {
            let nf = rng.gen_range(1..6);
            let k = rng.gen_range(1..4);
            let all = rng.gen_bool(0.3);
            let trees = (0..rng.gen_range(1..30))
                .map(|t| {
                    let output = if all {
                        TreeOutput::All
                    } else {
                        TreeOutput::One((t % k) as u32)
                    };
                    tree(&mut rng, nf, &cuts, output, k)
                })
                .collect();
            let e = Ensemble {
                n_features: nf,
                n_outputs: k,
                trees,
                base: (0..k).map(|_| rng.gen_range(-1.0..1.0)).collect(),
                divisor: if rng.gen() { 1.0 } else { 3.0 },
                base_after_average: rng.gen(),
                arithmetic: if rng.gen() {
                    Arithmetic::F64
                } else {
                    Arithmetic::F32
                },
                transform: if k > 1 {
                    Transform::Softmax
                } else {
                    Transform::Identity
                },
                compiled: Default::default(),
            };
            let n = 1000;
            let rows: Vec<f64> = (0..n * nf)
                .map(|_| match rng.gen_range(0..8) {
                    0 => f64::NAN,
                    1 => 0.0,
                    2 => -0.0,
                    3 => cuts[rng.gen_range(0..cuts.len())],
                    4 => cuts[rng.gen_range(0..cuts.len())].next_up(),
                    5 => -(rng.gen_range(0..70) as f64),
                    _ => rng.gen_range(-6.0..6.0),
                })
                .collect();
            let want = e.predict_reference(&rows, n);
            let flat = Flat::new(&e);
            let coded = flat.coded.as_ref();
            assert!(coded.is_some(), "case {case}: few thresholds are coded");
            kinds.extend(coded.map(|c| c.kinds.clone()).unwrap_or_default());
            let same = |got: &[f64]| {
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
            };
            assert!(same(&flat.predict(&e, &rows, n)), "case {case}: codes");
            let values = Flat {
                coded: None,
                ..flat
            };
            assert!(same(&values.predict(&e, &rows, n)), "case {case}: values");
        }
        for kind in [TreeKind::Plain, TreeKind::Masked, TreeKind::Special] {
            assert!(kinds.contains(&kind), "no {kind:?} tree was walked");
        }
    }
}
