//! Column profiles: what a data set looks like, in bounded memory, mergeable, and independent
//! of how the rows were split into batches or threads.
//!
//! The reference profile is computed at training time and stored with the model version; the
//! current profile is accumulated while a run scores (no second read of the data). Everything
//! that feeds a drift statistic is exact and order-free: counts, histogram counts on the
//! reference's fixed bin edges, category counts, and a bottom-k sample chosen by a hash of
//! each row's position (the same rows whatever the batch size or thread count). The mean and
//! standard deviation are sums in floating point, added in the order the worker threads happen
//! to take the row groups: they can differ in their last bits between reruns. No drift
//! statistic uses them.

use std::collections::BTreeMap;

use anyhow::Result;
use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use serde::{Deserialize, Serialize};

use crate::schema::{to_f64, FeatureKind};

/// Rows kept per column for the exact tests (KS, Wasserstein).
pub const SAMPLE_SIZE: usize = 10_000;
/// Distinct numeric values tracked exactly (enough to tell two-valued and few-valued columns).
const MAX_DISTINCT_NUMBERS: usize = 64;
/// Distinct categories tracked per column; rarer ones beyond this are counted together.
const MAX_CATEGORIES: usize = 1_000;
/// The name the model's score column gets in profiles and reports.
pub const SCORE_COLUMN: &str = "score";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bin edges, ascending; values below the first or above the last edge fall in the first
    /// or last bin, so out-of-range data is counted, not dropped.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

/// Value counts: exact for the known (or first) values, the rest counted together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueCounts {
    pub counts: BTreeMap<String, u64>,
    /// Values not among `counts`: unknown to the reference, or beyond the cap.
    pub other: u64,
    /// True when more distinct values were seen than are tracked.
    pub overflowed: bool,
}

/// The profile of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    pub kind: FeatureKind,
    /// Non-null values.
    pub count: u64,
    pub nulls: u64,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// `(q, value)` for q in 1%, 5%, 25%, 50%, 75%, 95%, 99%, from the sample.
    pub quantiles: Vec<(f64, f64)>,
    pub histogram: Option<Histogram>,
    /// Numbers: exact counts of up to 64 distinct values. Strings: category counts.
    pub values: ValueCounts,
    /// Up to [`SAMPLE_SIZE`] values, sorted; all of them when the column has no more.
    pub sample: Vec<f64>,
}

impl ColumnProfile {
    pub fn null_rate(&self) -> f64 {
        let n = self.count + self.nulls;
        if n == 0 {
            0.0
        } else {
            self.nulls as f64 / n as f64
        }
    }

    /// Distinct values, or `None` when there are more than are tracked.
    pub fn distinct(&self) -> Option<usize> {
        (!self.values.overflowed).then_some(self.values.counts.len())
    }
}

/// A data set's profile: one entry per feature, plus the model's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetProfile {
    pub rows: u64,
    pub columns: Vec<ColumnProfile>,
    pub score: Option<ColumnProfile>,
}

impl DatasetProfile {
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// What a builder needs to know of a column up front.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub name: String,
    pub kind: FeatureKind,
    /// Fixed histogram edges (the reference's), for numeric columns.
    pub edges: Option<Vec<f64>>,
    /// Values to count exactly (the reference's); `None` tracks the first ones seen.
    pub known_values: Option<Vec<String>>,
    /// Whether to count values at all (not for numeric columns with many distinct values).
    pub count_values: bool,
}

impl ColumnPlan {
    /// The plan for profiling current data against a reference column.
    pub fn against(reference: &ColumnProfile) -> Self {
        Self {
            name: reference.name.clone(),
            kind: reference.kind,
            edges: reference.histogram.as_ref().map(|h| h.edges.clone()),
            known_values: Some(reference.values.counts.keys().cloned().collect()),
            count_values: reference.kind == FeatureKind::Categorical
                || !reference.values.overflowed,
        }
    }
}

/// A bottom-k sample: the values of the k rows with the smallest hash priority.
///
/// Candidates are appended while they beat the current threshold, and the buffer is cut back
/// to the k smallest (a linear-time selection) whenever it doubles: amortised O(1) an offer,
/// where a heap paid O(log k) for each of the many early replacements. The result is exactly
/// the k smallest `(priority, value bits)` pairs offered, however they were split and merged.
#[derive(Debug, Clone, Default)]
struct BottomK {
    items: Vec<(u64, u64)>,
    /// The largest kept item after the last cut; only smaller ones can still get in.
    threshold: Option<(u64, u64)>,
}

impl BottomK {
    /// Offers a value, after a cheap test: once the sample is full, few rows beat it.
    #[inline]
    fn consider(&mut self, priority: u64, value: f64) {
        if self.threshold.is_none_or(|t| priority <= t.0) {
            self.offer(priority, value);
        }
    }

    fn offer(&mut self, priority: u64, value: f64) {
        self.push((priority, value.to_bits()));
    }

    fn push(&mut self, item: (u64, u64)) {
        if self.threshold.is_some_and(|t| item >= t) {
            return;
        }
        self.items.push(item);
        if self.items.len() >= 2 * SAMPLE_SIZE {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.items.len() > SAMPLE_SIZE {
            self.items.select_nth_unstable(SAMPLE_SIZE - 1);
            self.items.truncate(SAMPLE_SIZE);
            self.threshold = self.items.iter().max().copied();
        }
    }

    fn merge(&mut self, other: BottomK) {
        for item in other.items {
            self.push(item);
        }
    }

    fn sorted_values(&mut self) -> Vec<f64> {
        self.cut();
        let mut v: Vec<f64> = self.items.iter().map(|(_, v)| f64::from_bits(*v)).collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

#[derive(Debug, Clone)]
struct ColumnBuilder {
    plan: ColumnPlan,
    count: u64,
    nulls: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    hist: Vec<u64>,
    values: ValueCounts,
    /// Numeric value counts by bit pattern (cheap in the hot loop; named at the end).
    numbers: BTreeMap<u64, u64>,
    sample: BottomK,
}

impl ColumnBuilder {
    fn new(plan: ColumnPlan) -> Self {
        let bins = plan.edges.as_ref().map_or(0, |e| e.len().saturating_sub(1));
        let mut values = ValueCounts::default();
        let mut numbers = BTreeMap::new();
        if let Some(known) = &plan.known_values {
            match plan.kind {
                FeatureKind::Categorical => {
                    values.counts = known.iter().map(|k| (k.clone(), 0)).collect()
                }
                FeatureKind::Numeric => {
                    numbers = known
                        .iter()
                        .filter_map(|k| k.parse::<f64>().ok())
                        .map(|v| (v.to_bits(), 0))
                        .collect()
                }
            }
        }
        Self {
            plan,
            count: 0,
            nulls: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            hist: vec![0; bins],
            values,
            numbers,
            sample: BottomK::default(),
        }
    }

    fn count_number(&mut self, v: f64) {
        let bits = v.to_bits();
        if let Some(c) = self.numbers.get_mut(&bits) {
            *c += 1;
        } else if self.plan.known_values.is_none() && self.numbers.len() < MAX_DISTINCT_NUMBERS {
            self.numbers.insert(bits, 1);
        } else {
            self.values.other += 1;
            if self.plan.known_values.is_none() {
                self.values.overflowed = true;
            }
        }
    }

    fn count_value(&mut self, key: &str, n: u64) {
        let cap = match self.plan.kind {
            FeatureKind::Numeric => MAX_DISTINCT_NUMBERS,
            FeatureKind::Categorical => MAX_CATEGORIES,
        };
        if let Some(c) = self.values.counts.get_mut(key) {
            *c += n;
        } else if self.plan.known_values.is_none() && self.values.counts.len() < cap {
            self.values.counts.insert(key.to_string(), n);
        } else {
            self.values.other += n;
            if self.plan.known_values.is_none() {
                self.values.overflowed = true;
            }
        }
    }

    /// A batch of a numeric column; `priorities[i]` is row i's sample priority. NaN and
    /// infinity are bad rows, not part of a distribution: skipped.
    /// `candidates`, when given, are the only rows whose priority can get into the sample.
    fn add_numbers(
        &mut self,
        values: &Float64Array,
        priorities: &[u64],
        candidates: Option<&[usize]>,
    ) {
        self.nulls += values.null_count() as u64;
        let v = values.values();
        // A fold, not `all`: no early exit, so it vectorises.
        let all_finite = v.iter().fold(true, |ok, x| ok & x.is_finite());
        if values.null_count() == 0 && all_finite {
            self.add_stats(v);
            let sample = &mut self.sample;
            match candidates {
                Some(rows) => rows
                    .iter()
                    .for_each(|&i| sample.consider(priorities[i], v[i])),
                None => (0..v.len()).for_each(|i| sample.consider(priorities[i], v[i])),
            }
            return;
        }
        let keep: Vec<usize> = match values.nulls() {
            Some(nulls) => nulls
                .valid_indices()
                .filter(|&i| v[i].is_finite())
                .collect(),
            None => (0..v.len()).filter(|&i| v[i].is_finite()).collect(),
        };
        let kept: Vec<f64> = keep.iter().map(|&i| v[i]).collect();
        let kept_priorities: Vec<u64> = keep.iter().map(|&i| priorities[i]).collect();
        self.add_finite(&kept, &kept_priorities);
    }

    /// Finite values, each with its row's sample priority.
    fn add_finite(&mut self, v: &[f64], priorities: &[u64]) {
        self.add_stats(v);
        for (&p, &x) in priorities.iter().zip(v) {
            self.sample.consider(p, x);
        }
    }

    /// Count, sums, extremes, histogram and value counts of finite values. One simple pass
    /// per statistic, so that each loop pipelines: four running sums, and four histograms that
    /// are added at the end (consecutive values often fall in the same bin, and one counter
    /// would wait on itself).
    fn add_stats(&mut self, v: &[f64]) {
        let mut sum = [0.0; 4];
        let mut sum_sq = [0.0; 4];
        let mut min = [self.min; 4];
        let mut max = [self.max; 4];
        let chunks = v.chunks_exact(4);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..4 {
                sum[k] += c[k];
                sum_sq[k] += c[k] * c[k];
                min[k] = min[k].min(c[k]);
                max[k] = max[k].max(c[k]);
            }
        }
        for &x in rest {
            sum[0] += x;
            sum_sq[0] += x * x;
            min[0] = min[0].min(x);
            max[0] = max[0].max(x);
        }
        self.count += v.len() as u64;
        self.sum += (sum[0] + sum[1]) + (sum[2] + sum[3]);
        self.sum_sq += (sum_sq[0] + sum_sq[1]) + (sum_sq[2] + sum_sq[3]);
        self.min = min.into_iter().fold(self.min, f64::min);
        self.max = max.into_iter().fold(self.max, f64::max);

        if let Some(edges) = &self.plan.edges {
            let binner = Binner::new(edges);
            let bins = self.hist.len();
            let mut hist = vec![0u64; 4 * bins];
            let mut unsure = Vec::new();
            for (i, &x) in v.iter().enumerate() {
                let (k, sure) = binner.guess(x);
                hist[(i & 3) * bins + k] += 1;
                if !sure {
                    unsure.push((k, x));
                }
            }
            for (k, h) in self.hist.iter_mut().enumerate() {
                *h += hist[k] + hist[bins + k] + hist[2 * bins + k] + hist[3 * bins + k];
            }
            for (k, x) in unsure {
                self.hist[k] -= 1;
                self.hist[bin(edges, x)] += 1;
            }
        }
        if self.plan.count_values && !self.values.overflowed {
            for &x in v {
                self.count_number(x);
            }
        }
    }

    /// A batch of a categorical column: counted per distinct value of the batch (few, as a
    /// rule, else 64 at a time), then added to the column's counts in the order first seen.
    fn add_strings(&mut self, values: &StringArray) {
        let mut batch: Vec<(&str, u64)> = Vec::new();
        for v in values {
            let Some(v) = v else {
                self.nulls += 1;
                continue;
            };
            self.count += 1;
            match batch.iter().position(|(k, _)| *k == v) {
                Some(j) => batch[j].1 += 1,
                None => {
                    if batch.len() == 64 {
                        // Counted in the order first seen, so a capped column keeps the same
                        // categories as counting row by row (found in review).
                        for (k, c) in batch.drain(..) {
                            self.count_value(k, c);
                        }
                    }
                    batch.push((v, 1));
                }
            }
        }
        for (v, c) in batch {
            self.count_value(v, c);
        }
    }

    fn merge(&mut self, o: ColumnBuilder) {
        self.count += o.count;
        self.nulls += o.nulls;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        for (h, x) in self.hist.iter_mut().zip(&o.hist) {
            *h += x;
        }
        for (k, c) in o.values.counts {
            if c == 0 {
                continue;
            }
            match self.values.counts.get_mut(&k) {
                Some(n) => *n += c,
                None => {
                    self.values.other += c;
                    self.values.overflowed |= self.plan.known_values.is_none();
                }
            }
        }
        for (k, c) in o.numbers {
            if c == 0 {
                continue;
            }
            let room =
                self.plan.known_values.is_none() && self.numbers.len() < MAX_DISTINCT_NUMBERS;
            match self.numbers.get_mut(&k) {
                Some(n) => *n += c,
                None if room => {
                    self.numbers.insert(k, c);
                }
                None => {
                    self.values.other += c;
                    self.values.overflowed |= self.plan.known_values.is_none();
                }
            }
        }
        self.values.other += o.values.other;
        self.values.overflowed |= o.values.overflowed;
        self.sample.merge(o.sample);
    }

    fn finish(mut self) -> ColumnProfile {
        if self.plan.kind == FeatureKind::Numeric {
            if self.values.overflowed && self.plan.known_values.is_none() {
                self.numbers.clear();
            }
            self.values.counts = self
                .numbers
                .iter()
                .map(|(&k, &c)| (number_key(f64::from_bits(k)), c))
                .collect();
        }
        let sample = self.sample.sorted_values();
        let numeric = self.plan.kind == FeatureKind::Numeric && self.count > 0;
        let n = self.count as f64;
        let mean = numeric.then(|| self.sum / n);
        let std = mean.map(|m| (self.sum_sq / n - m * m).max(0.0).sqrt());
        let quantiles = if numeric {
            [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
                .iter()
                .map(|&q| (q, quantile(&sample, q)))
                .collect()
        } else {
            Vec::new()
        };
        ColumnProfile {
            name: self.plan.name,
            kind: self.plan.kind,
            count: self.count,
            nulls: self.nulls,
            mean,
            std,
            min: numeric.then_some(self.min),
            max: numeric.then_some(self.max),
            quantiles,
            histogram: self.plan.edges.map(|edges| Histogram {
                edges,
                counts: self.hist,
            }),
            values: self.values,
            sample: if self.plan.kind == FeatureKind::Numeric {
                sample
            } else {
                Vec::new()
            },
        }
    }
}

/// Accumulates a [`DatasetProfile`] batch by batch.
#[derive(Debug, Clone)]
pub struct ProfileBuilder {
    rows: u64,
    columns: Vec<ColumnBuilder>,
    score: Option<ColumnBuilder>,
}

/// Where a batch's rows are, so each row gets the same sample priority however it is read.
#[derive(Debug, Clone, Copy)]
pub struct RowOrigin {
    /// A hash of the object the rows come from.
    pub object: u64,
    /// Position of the batch's first row in that object.
    pub first_row: u64,
}

impl RowOrigin {
    pub fn new(object_name: &str, first_row: u64) -> Self {
        // FNV-1a: stable across runs and platforms, unlike std's RandomState.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in object_name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            object: h,
            first_row,
        }
    }

    fn priority(&self, i: usize) -> u64 {
        splitmix64(self.object ^ (self.first_row + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl ProfileBuilder {
    pub fn new(columns: Vec<ColumnPlan>, score: Option<ColumnPlan>) -> Self {
        Self {
            rows: 0,
            columns: columns.into_iter().map(ColumnBuilder::new).collect(),
            score: score.map(ColumnBuilder::new),
        }
    }

    /// A builder for current data, against a reference profile.
    pub fn against(reference: &DatasetProfile) -> Self {
        Self::new(
            reference.columns.iter().map(ColumnPlan::against).collect(),
            reference.score.as_ref().map(ColumnPlan::against),
        )
    }

    /// Adds a batch's feature columns (looked up by name).
    pub fn add_columns(&mut self, columns: &[(&str, &ArrayRef)], origin: RowOrigin) -> Result<()> {
        let rows = columns.first().map_or(0, |(_, a)| a.len());
        // A row's sample priority is the same in every column: hashed once per row. Once the
        // samples are full, only rows under the highest threshold can get into any of them:
        // listed once here, so each column looks at those rows only.
        let priorities: Vec<u64> = (0..rows).map(|i| origin.priority(i)).collect();
        let highest = self.columns.iter().try_fold(0u64, |m, c| {
            (c.plan.kind == FeatureKind::Categorical)
                .then_some(m)
                .or_else(|| c.sample.threshold.map(|t| m.max(t.0)))
        });
        let candidates: Option<Vec<usize>> =
            highest.map(|h| (0..rows).filter(|&i| priorities[i] <= h).collect());
        for col in &mut self.columns {
            let Some((_, array)) = columns.iter().find(|(n, _)| *n == col.plan.name) else {
                continue;
            };
            match col.plan.kind {
                FeatureKind::Numeric => {
                    let v = to_f64(array)?;
                    col.add_numbers(
                        v.as_primitive::<Float64Type>(),
                        &priorities,
                        candidates.as_deref(),
                    );
                }
                FeatureKind::Categorical => {
                    let s = cast(array, &DataType::Utf8)?;
                    col.add_strings(s.as_string::<i32>());
                }
            }
        }
        self.rows += rows as u64;
        Ok(())
    }

    /// Adds model scores; `rows[i]` is the row position (within the batch) of `scores[i]`.
    pub fn add_scores(&mut self, scores: &[f64], rows: &[usize], origin: RowOrigin) {
        if let Some(col) = &mut self.score {
            let (finite, priorities): (Vec<f64>, Vec<u64>) = scores
                .iter()
                .zip(rows)
                .filter(|(s, _)| s.is_finite())
                .map(|(&s, &i)| (s, origin.priority(i)))
                .unzip();
            col.add_finite(&finite, &priorities);
        }
    }

    pub fn merge(&mut self, other: ProfileBuilder) {
        self.rows += other.rows;
        for (a, b) in self.columns.iter_mut().zip(other.columns) {
            a.merge(b);
        }
        if let (Some(a), Some(b)) = (&mut self.score, other.score) {
            a.merge(b);
        }
    }

    pub fn finish(self) -> DatasetProfile {
        DatasetProfile {
            rows: self.rows,
            columns: self
                .columns
                .into_iter()
                .map(ColumnBuilder::finish)
                .collect(),
            score: self.score.map(ColumnBuilder::finish),
        }
    }
}

/// Fixed bin edges for a reference column: Sturges' rule for the bin count (as numpy's
/// `bins="sturges"`), uniform over the reference's range.
pub fn reference_edges(min: f64, max: f64, n: u64) -> Vec<f64> {
    let bins = ((n.max(1) as f64).log2().ceil() as usize + 1).clamp(2, 64);
    if max.partial_cmp(&min) != Some(std::cmp::Ordering::Greater) {
        return vec![min - 0.5, min + 0.5];
    }
    (0..=bins)
        .map(|i| min + (max - min) * i as f64 / bins as f64)
        .collect()
}

/// The bin of a value: numpy's rule (half-open bins, the last one closed), with values
/// outside the edges clamped into the first or last bin.
fn bin(edges: &[f64], v: f64) -> usize {
    let last = edges.len() - 2;
    match edges.partition_point(|e| *e <= v) {
        0 => 0,
        i => (i - 1).min(last),
    }
}

/// [`bin`] in constant time for uniform edges (the reference's): the bin is the value's
/// position in the range, times the bin count, rounded down. That is exact unless the value
/// sits within rounding error of an inner edge; there (rarely), and for edges that are not
/// uniform, the caller asks [`bin`] itself.
struct Binner {
    first: f64,
    per_unit: f64,
    bins: f64,
    /// How close to a whole number (in bins) a position must be to need the exact answer.
    tolerance: f64,
}

impl Binner {
    fn new(edges: &[f64]) -> Self {
        let bins = edges.len() - 1;
        let (first, last) = (edges[0], edges[bins]);
        let per_unit = bins as f64 / (last - first);
        let uniform = per_unit.is_finite()
            && per_unit > 0.0
            && edges.iter().enumerate().all(|(i, &e)| {
                let t = (e - first) * per_unit;
                (t - i as f64).abs() <= 1e-6
            });
        // Rounding in `v - first`, in the product and in the edges themselves: a few ulps of
        // the largest magnitude involved, in bins, with a wide margin.
        let magnitude = first.abs().max(last.abs());
        let tolerance = 1e-6 + 64.0 * f64::EPSILON * (magnitude * per_unit + bins as f64);
        Self {
            first,
            per_unit: if uniform { per_unit } else { f64::NAN },
            bins: bins as f64,
            tolerance,
        }
    }

    /// The bin by arithmetic, and whether that is certainly [`bin`]'s answer: it is unless
    /// the value is within rounding distance of an inner edge (or the edges are not uniform).
    /// Values outside the range are clamped into the end bins, as [`bin`] does. No branch.
    #[inline]
    fn guess(&self, v: f64) -> (usize, bool) {
        let t = (v - self.first) * self.per_unit;
        // Truncation is floor for t >= 0; NaN (edges not uniform) gives 0.
        let k = t.clamp(0.0, self.bins - 1.0) as i64;
        let frac = t - k as f64;
        let inner = (t > 0.5) & (t < self.bins - 0.5);
        let near_edge = (frac < self.tolerance) | (frac > 1.0 - self.tolerance);
        (k as usize, !(t.is_nan() | (inner & near_edge)))
    }
}

/// The text a numeric value is counted under.
pub fn number_key(v: f64) -> String {
    format!("{v}")
}

/// Linear-interpolated quantile of sorted values (numpy's default method).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use std::sync::Arc;

    fn numeric(values: Vec<Option<f64>>) -> ArrayRef {
        Arc::new(Float64Array::from(values))
    }

    #[test]
    fn bins_follow_numpy_and_clamp_outliers() {
        let edges = [0.0, 1.0, 2.0];
        assert_eq!(bin(&edges, 0.0), 0);
        assert_eq!(bin(&edges, 0.99), 0);
        assert_eq!(bin(&edges, 1.0), 1);
        assert_eq!(bin(&edges, 2.0), 1, "the last bin is closed");
        assert_eq!(bin(&edges, -5.0), 0);
        assert_eq!(bin(&edges, 9.0), 1);
    }

    #[test]
    fn the_fast_binner_agrees_with_the_edges() {
        let edge_sets = [
            reference_edges(-3.7, 12.1, 100_000),
            reference_edges(0.1, 0.3, 7),
            vec![0.0, 1.0, 2.0],
            vec![-1.0, 0.0, 0.5, 10.0],
            vec![5.0 - 0.5, 5.0 + 0.5],
        ];
        for edges in &edge_sets {
            let b = Binner::new(edges);
            let (lo, hi) = (edges[0], edges[edges.len() - 1]);
            let mut values: Vec<f64> = edges.clone();
            values.extend(edges.iter().map(|e| e.next_up()));
            values.extend(edges.iter().map(|e| e.next_down()));
            values.extend((0..1000).map(|i| lo - 1.0 + (hi - lo + 2.0) * i as f64 / 999.0));
            values.extend([f64::MAX, f64::MIN, 1e300, -1e300]);
            let mut unsure = 0;
            for v in &values {
                match b.guess(*v) {
                    (k, true) => assert_eq!(k, bin(edges, *v), "{v} in {edges:?}"),
                    _ => unsure += 1,
                }
            }
            // Uniform edges leave only the values at or next to an inner edge to the search.
            let uniform = edges.len() != 4;
            if uniform {
                assert!(
                    unsure <= 3 * edges.len(),
                    "{unsure} of {} unsure",
                    values.len()
                );
            } else {
                assert_eq!(
                    unsure,
                    values.len(),
                    "edges that are not uniform are searched"
                );
            }
        }
    }

    #[test]
    fn profiles_do_not_depend_on_how_rows_are_split() {
        // x has nulls (the filtered path), y has none (the candidate-list path) and values
        // exactly on its bin edges.
        let x: Vec<Option<f64>> = (0..60_000)
            .map(|i| (i % 97 != 0).then(|| (i as f64 * 0.37).sin()))
            .collect();
        let y: Vec<Option<f64>> = (0..60_000).map(|i| Some(f64::from(i % 7) * 0.25)).collect();
        let plan = || {
            vec![
                ColumnPlan {
                    name: "x".into(),
                    kind: FeatureKind::Numeric,
                    edges: Some(vec![-1.0, 0.0, 1.0]),
                    known_values: None,
                    count_values: true,
                },
                ColumnPlan {
                    name: "y".into(),
                    kind: FeatureKind::Numeric,
                    edges: Some(reference_edges(0.0, 1.5, 1000)),
                    known_values: None,
                    count_values: false,
                },
            ]
        };
        let add = |b: &mut ProfileBuilder, from: usize, to: usize| {
            let (xs, ys) = (numeric(x[from..to].to_vec()), numeric(y[from..to].to_vec()));
            b.add_columns(&[("x", &xs), ("y", &ys)], RowOrigin::new("f", from as u64))
                .unwrap();
        };
        let whole = {
            let mut b = ProfileBuilder::new(plan(), None);
            add(&mut b, 0, x.len());
            b.finish()
        };
        // Small batches, each its own builder, merged in reverse order.
        let mut merged = ProfileBuilder::new(plan(), None);
        for from in (0..x.len()).step_by(777).rev() {
            let mut b = ProfileBuilder::new(plan(), None);
            add(&mut b, from, (from + 777).min(x.len()));
            merged.merge(b);
        }
        // Two workers, each one builder over every other batch of 4,096 (a run's pattern).
        let mut workers = [
            ProfileBuilder::new(plan(), None),
            ProfileBuilder::new(plan(), None),
        ];
        for (k, from) in (0..x.len()).step_by(4096).enumerate() {
            add(&mut workers[k % 2], from, (from + 4096).min(x.len()));
        }
        let [mut w0, w1] = workers;
        w0.merge(w1);
        for other in [merged.finish(), w0.finish()] {
            for (a, b) in whole.columns.iter().zip(&other.columns) {
                assert_eq!(a.sample, b.sample, "{}", a.name);
                assert_eq!(a.sample.len(), SAMPLE_SIZE);
                assert_eq!(a.histogram, b.histogram, "{}", a.name);
                assert_eq!((a.count, a.nulls), (b.count, b.nulls));
                assert_eq!((a.min, a.max), (b.min, b.max));
            }
        }
        // The histogram of y counts the edge values as numpy does.
        let h = whole.columns[1].histogram.as_ref().unwrap();
        let want: Vec<u64> = {
            let mut c = vec![0; h.counts.len()];
            for v in y.iter().flatten() {
                c[bin(&h.edges, *v)] += 1;
            }
            c
        };
        assert_eq!(h.counts, want);
    }

    /// Found in review: holding a batch's first 64 values back let later ones take the cap.
    #[test]
    fn a_capped_category_column_keeps_the_first_categories_seen() {
        let plan = ColumnPlan {
            name: "c".into(),
            kind: FeatureKind::Categorical,
            edges: None,
            known_values: None,
            count_values: true,
        };
        let mut b = ProfileBuilder::new(vec![plan], None);
        let values: Vec<String> = (0..1100).map(|i| format!("c{i:04}")).collect();
        let arr: ArrayRef = Arc::new(StringArray::from_iter_values(&values));
        b.add_columns(&[("c", &arr)], RowOrigin::new("f", 0))
            .unwrap();
        let c = &b.finish().columns[0];
        assert_eq!(c.values.counts.len(), MAX_CATEGORIES);
        assert!(c.values.counts.contains_key("c0000"));
        assert!(c.values.counts.contains_key("c0999"));
        assert!(!c.values.counts.contains_key("c1000"));
        assert_eq!(c.values.other, 100);
    }

    #[test]
    fn current_categories_are_counted_against_the_reference() {
        let plan = ColumnPlan {
            name: "c".into(),
            kind: FeatureKind::Categorical,
            edges: None,
            known_values: Some(vec!["a".into(), "b".into()]),
            count_values: true,
        };
        let mut b = ProfileBuilder::new(vec![plan], None);
        let arr: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            Some("z"),
            None,
            Some("a"),
        ]));
        b.add_columns(&[("c", &arr)], RowOrigin::new("f", 0))
            .unwrap();
        let p = b.finish();
        let c = &p.columns[0];
        assert_eq!(c.values.counts.get("a"), Some(&2));
        assert_eq!(c.values.counts.get("b"), Some(&0));
        assert_eq!(c.values.other, 1);
        assert_eq!(c.nulls, 1);
    }
}
