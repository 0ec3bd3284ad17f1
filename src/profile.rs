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
use arrow::buffer::BooleanBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use serde::{Deserialize, Serialize};

use crate::schema::{to_f64, FeatureKind};
use crate::simd::simd_dispatch;

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
    /// True when the counts are of the sample's values, not of every row: a current profile's
    /// picture for the HTML page when no drift method of the job reads the histogram.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_sample: bool,
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
    /// Whether to count the histogram over every row (what `psi` and `jensenshannon` read);
    /// otherwise the sample is binned at the end, a picture for the HTML page only.
    pub exact_histogram: bool,
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
            exact_histogram: true,
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
    /// The histogram's arithmetic, set up once from the edges.
    binner: Option<Binner>,
    /// The four partial histograms of [`stats_kernel`], reused batch after batch.
    scratch: Vec<u64>,
}

impl ColumnBuilder {
    fn new(plan: ColumnPlan) -> Self {
        let bins = match &plan.edges {
            Some(e) if plan.exact_histogram => e.len().saturating_sub(1),
            _ => 0,
        };
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
        let binner = plan
            .edges
            .as_deref()
            .filter(|e| e.len() >= 2 && plan.exact_histogram)
            .map(Binner::new);
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
            binner,
            scratch: Vec::new(),
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
        kept: &mut Vec<f64>,
    ) {
        self.nulls += values.null_count() as u64;
        let v = values.values();
        if values.null_count() == 0 && all_finite(v) {
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
        // The rows to keep, gathered into a buffer the builder reuses; the sample looks at the
        // candidates among them only (a row that is no candidate cannot beat the threshold).
        let nulls = values.nulls();
        let good = |i: usize| nulls.is_none_or(|n| n.is_valid(i)) && v[i].is_finite();
        if kept.len() < v.len() {
            kept.resize(v.len(), 0.0);
        }
        let n = match nulls {
            Some(nulls) => gather_valid_finite(v, nulls.inner(), kept),
            None => gather_finite(v, kept),
        };
        self.add_stats(&kept[..n]);
        let sample = &mut self.sample;
        match candidates {
            Some(rows) => rows
                .iter()
                .filter(|&&i| good(i))
                .for_each(|&i| sample.consider(priorities[i], v[i])),
            None => (0..v.len())
                .filter(|&i| good(i))
                .for_each(|i| sample.consider(priorities[i], v[i])),
        }
    }

    /// Finite values, each with its row's sample priority; only priorities up to `below`
    /// are offered to the sample.
    fn add_finite(&mut self, v: &[f64], priorities: &[u64], below: u64) {
        self.add_stats(v);
        for (&p, &x) in priorities.iter().zip(v) {
            if p <= below {
                self.sample.consider(p, x);
            }
        }
    }

    /// Count, sums, extremes, histogram and value counts of finite values: the vectorised
    /// [`stats_kernel`], then the few values it could not bin for certain, by search.
    fn add_stats(&mut self, v: &[f64]) {
        let mut lanes = Lanes::new(self.min, self.max);
        let bins = self.hist.len();
        let mut hist = std::mem::take(&mut self.scratch);
        hist.clear();
        hist.resize(4 * bins, 0);
        let unsure = stats_kernel(v, &mut lanes, self.binner.as_ref(), &mut hist);
        self.count += v.len() as u64;
        self.sum += Lanes::total(lanes.sum);
        self.sum_sq += Lanes::total(lanes.sum_sq);
        self.min = lanes.min.into_iter().fold(self.min, min_of);
        self.max = lanes.max.into_iter().fold(self.max, max_of);
        for (k, h) in self.hist.iter_mut().enumerate() {
            *h += hist[k] + hist[bins + k] + hist[2 * bins + k] + hist[3 * bins + k];
        }
        self.scratch = hist;
        if let (Some(edges), Some(binner), true) = (&self.plan.edges, &self.binner, unsure) {
            for &x in v {
                if let (k, false) = binner.guess(x) {
                    self.hist[k] -= 1;
                    self.hist[bin(edges, x)] += 1;
                }
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
    /// A short value is found again by its bytes as one number, without comparing strings.
    fn add_strings(&mut self, values: &StringArray) {
        let mut batch: Vec<(&str, u64)> = Vec::new();
        let mut seen = ShortStrings::<usize>::new(values);
        for i in 0..values.len() {
            if values.is_null(i) {
                self.nulls += 1;
                continue;
            }
            self.count += 1;
            let key = seen.key(i);
            if let Some(j) = key.and_then(|k| seen.get(k)) {
                batch[j].1 += 1;
                continue;
            }
            let v = values.value(i);
            let j = match batch.iter().position(|(k, _)| *k == v) {
                Some(j) => {
                    batch[j].1 += 1;
                    j
                }
                None => {
                    if batch.len() == 64 {
                        // Counted in the order first seen, so a capped column keeps the same
                        // categories as counting row by row (found in review).
                        for (k, c) in batch.drain(..) {
                            self.count_value(k, c);
                        }
                        seen.clear();
                    }
                    batch.push((v, 1));
                    batch.len() - 1
                }
            };
            if let Some(k) = key {
                seen.put(k, j);
            }
        }
        for (v, c) in batch {
            self.count_value(v, c);
        }
    }

    fn merge(&mut self, o: ColumnBuilder) {
        // Saturating: a stored part (another process's) may claim any count.
        self.count = self.count.saturating_add(o.count);
        self.nulls = self.nulls.saturating_add(o.nulls);
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        for (h, x) in self.hist.iter_mut().zip(&o.hist) {
            *h = h.saturating_add(*x);
        }
        for (k, c) in o.values.counts {
            if c == 0 {
                continue;
            }
            match self.values.counts.get_mut(&k) {
                Some(n) => *n = n.saturating_add(c),
                None => {
                    self.values.other = self.values.other.saturating_add(c);
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
                Some(n) => *n = n.saturating_add(c),
                None if room => {
                    self.numbers.insert(k, c);
                }
                None => {
                    self.values.other = self.values.other.saturating_add(c);
                    self.values.overflowed |= self.plan.known_values.is_none();
                }
            }
        }
        self.values.other = self.values.other.saturating_add(o.values.other);
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
            histogram: self.plan.edges.map(|edges| {
                if self.plan.exact_histogram {
                    return Histogram {
                        edges,
                        counts: self.hist,
                        from_sample: false,
                    };
                }
                let mut counts = vec![0; edges.len().saturating_sub(1)];
                if !counts.is_empty() {
                    for &x in &sample {
                        counts[bin(&edges, x)] += 1;
                    }
                }
                Histogram {
                    edges,
                    counts,
                    from_sample: true,
                }
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
    /// The good values of a column with nulls or bad values, gathered (reused).
    kept: Vec<f64>,
    /// Only rows with a priority up to this can get into the samples (see
    /// [`Self::expecting_rows`]).
    sample_below: u64,
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

    #[inline(always)]
    fn priority(&self, i: usize) -> u64 {
        splitmix64(self.object ^ (self.first_row + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

simd_dispatch! {
    /// The sample priority of each row of a batch: 64-bit multiplications, which AVX2 does
    /// four at a time (in parts; SSE2 two).
    fn row_priorities(origin: RowOrigin, out: &mut [u64]) {
        for (i, p) in out.iter_mut().enumerate() {
            *p = origin.priority(i);
        }
    }
}

#[inline(always)]
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
            kept: Vec::new(),
            sample_below: u64::MAX,
        }
    }

    /// Tells the builder how many rows the profile will have in all (every builder merged
    /// into it told the same). The samples then look only at rows whose priority is in the
    /// lowest `3 * SAMPLE_SIZE / rows` of its range: three times as many rows as they keep.
    /// How many of a column's good rows fall under the cut-off is random; for a column at
    /// least half good it averages 15,000 or more, and fewer than 10,000 is a 40-sigma event,
    /// so the sample is exactly what it would be without the cut-off. A column with fewer
    /// good rows may get fewer: those under the cut-off, a smaller sample, still uniform.
    /// Without it every row is offered, and the early rows, before the samples fill, cost
    /// most of a profile's sampling.
    pub fn expecting_rows(mut self, rows: u64) -> Self {
        let share = 3.0 * SAMPLE_SIZE as f64 / rows.max(1) as f64;
        self.sample_below = if share >= 1.0 {
            u64::MAX
        } else {
            // 2^64 times the share; below 1, so within range.
            (share * 18_446_744_073_709_551_616.0) as u64
        };
        self
    }

    /// A builder for current data, against a reference profile: every histogram counted,
    /// every row offered to the samples (a run uses `drift::current_profile`, which counts
    /// only what its methods read).
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
        let mut priorities = vec![0; rows];
        row_priorities(origin, &mut priorities);
        let highest = self.columns.iter().try_fold(0u64, |m, c| {
            (c.plan.kind == FeatureKind::Categorical)
                .then_some(m)
                .or_else(|| c.sample.threshold.map(|t| m.max(t.0)))
        });
        let limit = highest.map_or(self.sample_below, |h| h.min(self.sample_below));
        let candidates: Option<Vec<usize>> =
            (limit < u64::MAX).then(|| (0..rows).filter(|&i| priorities[i] <= limit).collect());
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
                        &mut self.kept,
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
            col.add_finite(&finite, &priorities, self.sample_below);
        }
    }

    pub fn merge(&mut self, other: ProfileBuilder) {
        debug_assert_eq!(
            self.sample_below, other.sample_below,
            "merged samples must share a cut-off"
        );
        self.rows = self.rows.saturating_add(other.rows);
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

/// A builder's counts and samples, as one process stores them for another to merge: a
/// sharded run's shards each store theirs, and the shard that completes the date merges them
/// into the date's profile, exactly the profile one process would have built (see
/// [`ProfileBuilder::to_partial`]). Floats are kept as their bits (JSON has no infinities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialProfile {
    rows: u64,
    sample_below: u64,
    columns: Vec<PartialColumn>,
    score: Option<PartialColumn>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PartialColumn {
    name: String,
    count: u64,
    nulls: u64,
    /// `f64` bits: sum, sum of squares, min, max.
    moments: [u64; 4],
    hist: Vec<u64>,
    values: ValueCounts,
    /// Numeric value counts by bit pattern.
    numbers: Vec<(u64, u64)>,
    /// The bottom-k sample's `(priority, value bits)` pairs.
    sample: Vec<(u64, u64)>,
}

impl ColumnBuilder {
    fn to_partial(&self) -> PartialColumn {
        PartialColumn {
            name: self.plan.name.clone(),
            count: self.count,
            nulls: self.nulls,
            moments: [self.sum, self.sum_sq, self.min, self.max].map(f64::to_bits),
            hist: self.hist.clone(),
            values: self.values.clone(),
            numbers: self.numbers.iter().map(|(&k, &c)| (k, c)).collect(),
            sample: self.sample.items.clone(),
        }
    }

    /// A builder with this one's plan holding a stored part's counts.
    fn with_partial(&self, p: PartialColumn) -> Result<ColumnBuilder> {
        if p.name != self.plan.name || p.hist.len() != self.hist.len() {
            anyhow::bail!(
                "the stored profile's column '{}' is not this profile's '{}'",
                p.name,
                self.plan.name
            );
        }
        let mut c = ColumnBuilder::new(self.plan.clone());
        let [sum, sum_sq, min, max] = p.moments.map(f64::from_bits);
        c.count = p.count;
        c.nulls = p.nulls;
        (c.sum, c.sum_sq, c.min, c.max) = (sum, sum_sq, min, max);
        c.hist = p.hist;
        c.values = p.values;
        c.numbers = p.numbers.into_iter().collect();
        for item in p.sample {
            c.sample.push(item);
        }
        Ok(c)
    }
}

impl ProfileBuilder {
    /// This builder's state, to store and merge elsewhere with [`Self::merge_partial`].
    pub fn to_partial(&self) -> PartialProfile {
        PartialProfile {
            rows: self.rows,
            sample_below: self.sample_below,
            columns: self.columns.iter().map(ColumnBuilder::to_partial).collect(),
            score: self.score.as_ref().map(ColumnBuilder::to_partial),
        }
    }

    /// Merges a stored part, built with the same plans and cut-off (checked), as
    /// [`Self::merge`] merges a builder.
    pub fn merge_partial(&mut self, p: PartialProfile) -> Result<()> {
        if p.sample_below != self.sample_below
            || p.columns.len() != self.columns.len()
            || p.score.is_some() != self.score.is_some()
        {
            anyhow::bail!("the stored profile was built for other columns or another row count");
        }
        let columns = self
            .columns
            .iter()
            .zip(p.columns)
            .map(|(c, pc)| c.with_partial(pc))
            .collect::<Result<Vec<_>>>()?;
        let score = match (&self.score, p.score) {
            (Some(c), Some(pc)) => Some(c.with_partial(pc)?),
            _ => None,
        };
        self.merge(ProfileBuilder {
            rows: p.rows,
            columns,
            score,
            kept: Vec::new(),
            sample_below: p.sample_below,
        });
        Ok(())
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
#[derive(Debug, Clone)]
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
            && bins < i32::MAX as usize
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

    /// [`Self::guess`] of each value into `bins`, and whether any of them was unsure: the
    /// same arithmetic, written with comparisons and 32-bit indices so that it vectorises.
    #[inline(always)]
    fn guess_all(&self, v: &[f64], bins: &mut [u32]) -> bool {
        let top = self.bins - 1.0;
        let mut unsure = false;
        for (b, &x) in bins.iter_mut().zip(v) {
            let t = (x - self.first) * self.per_unit;
            // `t.clamp(0.0, top)`, with NaN to 0 as `guess` has it.
            let c = if t > 0.0 { t } else { 0.0 };
            let c = if c < top { c } else { top };
            // SAFETY: c is a number from 0 to `bins - 1`, which `new` keeps within i32. (`as`
            // would check, one value at a time.)
            let k = unsafe { c.to_int_unchecked::<i32>() };
            let frac = t - f64::from(k);
            let inner = (t > 0.5) & (t < self.bins - 0.5);
            let near_edge = (frac < self.tolerance) | (frac > 1.0 - self.tolerance);
            unsure |= t.is_nan() | (inner & near_edge);
            *b = k as u32;
        }
        unsure
    }
}

/// Values per block of [`stats_kernel`]: its bin indices stay in L1 between its passes.
const BLOCK: usize = 1024;

/// Running sums and extremes, in eight lanes: independent chains that pipeline (two AVX2
/// registers each), added together at the end. Values go to the lanes in turn; the last few of
/// a block (fewer than eight) to the first lanes.
struct Lanes {
    sum: [f64; LANES],
    sum_sq: [f64; LANES],
    min: [f64; LANES],
    max: [f64; LANES],
}

const LANES: usize = 8;

impl Lanes {
    fn new(min: f64, max: f64) -> Self {
        Self {
            sum: [0.0; LANES],
            sum_sq: [0.0; LANES],
            min: [min; LANES],
            max: [max; LANES],
        }
    }

    #[inline(always)]
    fn add(&mut self, v: &[f64]) {
        let (full, rest) = v.as_chunks::<LANES>();
        for x in full {
            self.step(x, x);
        }
        // The rest padded to a full step, which the compiler vectorises as the others: zeros
        // add nothing to the sums, and a repeated value changes no extreme.
        if let Some(&first) = rest.first() {
            let (mut x, mut extreme) = ([0.0; LANES], [first; LANES]);
            x[..rest.len()].copy_from_slice(rest);
            extreme[..rest.len()].copy_from_slice(rest);
            self.step(&x, &extreme);
        }
    }

    #[inline(always)]
    fn step(&mut self, x: &[f64; LANES], extreme: &[f64; LANES]) {
        for k in 0..LANES {
            self.sum[k] += x[k];
            self.sum_sq[k] += x[k] * x[k];
            // `+ 0.0` turns -0 into +0, so that the extremes do not depend on which zero
            // came first (the order of the rows).
            self.min[k] = min_of(self.min[k], extreme[k] + 0.0);
            self.max[k] = max_of(self.max[k], extreme[k] + 0.0);
        }
    }

    /// The sum of the lanes, in a fixed order.
    fn total(v: [f64; LANES]) -> f64 {
        let [a, b, c, d, e, f, g, h] = v;
        ((a + b) + (c + d)) + ((e + f) + (g + h))
    }
}

/// The smaller of two numbers that are not NaN: one comparison, which vectorises (`f64::min`
/// also handles NaN, at the price of several instructions).
#[inline(always)]
fn min_of(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

#[inline(always)]
fn max_of(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

simd_dispatch! {
    /// The per-value work of a profile, on finite values: sums and extremes into `lanes` and,
    /// with a binner, counts into four histograms side by side in `hist` (consecutive values
    /// often fall in the same bin, and one counter would wait on itself). A block at a time:
    /// the bins of its values in one vectorised pass, then the counting. Returns whether any
    /// value was too close to an edge for the arithmetic to be sure of its bin; it was counted
    /// in the guessed bin, for the caller to move.
    fn stats_kernel(v: &[f64], lanes: &mut Lanes, binner: Option<&Binner>, hist: &mut [u64]) -> bool {
        let mut unsure = false;
        let mut bins = [0u32; BLOCK];
        let width = hist.len() / 4;
        let (h01, h23) = hist.split_at_mut(2 * width);
        let (h0, h1) = h01.split_at_mut(width);
        let (h2, h3) = h23.split_at_mut(width);
        for block in v.chunks(BLOCK) {
            lanes.add(block);
            let Some(binner) = binner else {
                continue;
            };
            let bins = &mut bins[..block.len()];
            unsure |= binner.guess_all(block, bins);
            let quads = bins.chunks_exact(4);
            let rest = quads.remainder();
            for q in quads {
                h0[q[0] as usize] += 1;
                h1[q[1] as usize] += 1;
                h2[q[2] as usize] += 1;
                h3[q[3] as usize] += 1;
            }
            for &k in rest {
                h0[k as usize] += 1;
            }
        }
        unsure
    }
}

simd_dispatch! {
    /// Whether all values are finite. A fold, not `all`: no early exit, so it vectorises.
    fn all_finite(v: &[f64]) -> bool {
        v.iter().fold(true, |ok, x| ok & x.is_finite())
    }
}

/// Copies the finite values of `v` to the front of `out` (as long as `v`), in order; returns
/// how many. No branch: each value is written, and the position moves on if it is kept.
fn gather_finite(v: &[f64], out: &mut [f64]) -> usize {
    let mut n = 0;
    for &x in v {
        out[n] = x;
        n += usize::from(x.is_finite());
    }
    n
}

/// [`gather_finite`] of the valid values only, 64 rows to a word of the validity bitmap.
fn gather_valid_finite(v: &[f64], valid: &BooleanBuffer, out: &mut [f64]) -> usize {
    let bits = valid.bit_chunks();
    let words = bits.iter().chain(std::iter::once(bits.remainder_bits()));
    let mut n = 0;
    for (xs, word) in v.chunks(64).zip(words) {
        for (j, &x) in xs.iter().enumerate() {
            out[n] = x;
            n += usize::from((word >> j) & 1 == 1) & usize::from(x.is_finite());
        }
    }
    n
}

/// What the rows of a string column map to (a category, a counter), found by the row's
/// bytes as one number: a small table, for columns of few short values, that saves comparing
/// strings row by row. A value of up to 7 bytes is its own key (its bytes and its length);
/// longer values have none, and a key's slot holds the last value put there: the callers look
/// up what the table does not know, and put it in.
pub(crate) struct ShortStrings<'a, T> {
    offsets: &'a [i32],
    bytes: &'a [u8],
    slots: [(u64, T); 64],
}

/// No key: its low byte (the length) is over 7.
const NO_KEY: u64 = u64::MAX;

impl<'a, T: Copy + Default> ShortStrings<'a, T> {
    pub(crate) fn new(array: &'a StringArray) -> Self {
        Self {
            offsets: array.value_offsets(),
            bytes: array.value_data(),
            slots: [(NO_KEY, T::default()); 64],
        }
    }

    /// Row `i`'s key, if its value is short. Reads the 8 bytes from its start (which must be
    /// in the buffer) and keeps those of the value.
    #[inline]
    pub(crate) fn key(&self, i: usize) -> Option<u64> {
        let (start, end) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        let len = end - start;
        let word = self.bytes.get(start..start + 8)?;
        if len > 7 {
            return None;
        }
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let value = word & ((1u64 << (8 * len)) - 1);
        Some((value << 8) | len as u64)
    }

    #[inline]
    fn slot(key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize
    }

    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<T> {
        let (k, v) = self.slots[Self::slot(key)];
        (k == key).then_some(v)
    }

    #[inline]
    pub(crate) fn put(&mut self, key: u64, value: T) {
        self.slots[Self::slot(key)] = (key, value);
    }

    pub(crate) fn clear(&mut self) {
        self.slots = [(NO_KEY, T::default()); 64];
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
    use crate::simd::portable;
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
                    exact_histogram: true,
                },
                ColumnPlan {
                    name: "y".into(),
                    kind: FeatureKind::Numeric,
                    edges: Some(reference_edges(0.0, 1.5, 1000)),
                    known_values: None,
                    count_values: false,
                    exact_histogram: true,
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
        // Small batches, each its own builder, merged in reverse order; these builders know
        // the row count, so their samples look at half of the rows only, and must still keep
        // the same ones.
        let rows = x.len() as u64;
        let mut merged = ProfileBuilder::new(plan(), None).expecting_rows(rows);
        for from in (0..x.len()).step_by(777).rev() {
            let mut b = ProfileBuilder::new(plan(), None).expecting_rows(rows);
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
        // Three processes (a sharded run's shards), each storing its part as JSON, merged by
        // a fourth into a blank builder.
        let mut stored = ProfileBuilder::new(plan(), None).expecting_rows(rows);
        for shard in 0..3 {
            let mut b = ProfileBuilder::new(plan(), None).expecting_rows(rows);
            for from in (0..x.len()).step_by(1000).skip(shard).step_by(3) {
                add(&mut b, from, (from + 1000).min(x.len()));
            }
            let json = serde_json::to_vec(&b.to_partial()).unwrap();
            stored
                .merge_partial(serde_json::from_slice(&json).unwrap())
                .unwrap();
        }
        let other_rows = ProfileBuilder::new(plan(), None).expecting_rows(rows / 2);
        assert!(ProfileBuilder::new(plan(), None)
            .expecting_rows(rows)
            .merge_partial(other_rows.to_partial())
            .is_err());
        for other in [merged.finish(), w0.finish(), stored.finish()] {
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

    #[test]
    fn a_mostly_null_column_gets_the_rows_under_the_cut_off() {
        // 80% nulls: 10,000 good rows, of which the cut-off for 50,000 rows (the lowest 60% of
        // priorities) lets about 6,000 through.
        let x: Vec<Option<f64>> = (0..50_000)
            .map(|i| (i % 5 == 0).then_some(i as f64))
            .collect();
        let plan = || {
            vec![ColumnPlan {
                name: "x".into(),
                kind: FeatureKind::Numeric,
                edges: None,
                known_values: None,
                count_values: false,
                exact_histogram: true,
            }]
        };
        let profile = |b: ProfileBuilder| {
            let mut b = b;
            b.add_columns(&[("x", &numeric(x.clone()))], RowOrigin::new("f", 0))
                .unwrap();
            b.finish().columns.remove(0)
        };
        let all = profile(ProfileBuilder::new(plan(), None));
        let cut = profile(ProfileBuilder::new(plan(), None).expecting_rows(50_000));
        assert_eq!(all.sample.len(), 10_000);
        assert!(
            (5_500..6_500).contains(&cut.sample.len()),
            "{}",
            cut.sample.len()
        );
        assert!(cut
            .sample
            .iter()
            .all(|v| all.sample.binary_search_by(|a| a.total_cmp(v)).is_ok()));
        assert_eq!(
            (cut.count, cut.nulls, cut.min, cut.max),
            (all.count, all.nulls, all.min, all.max)
        );
    }

    #[test]
    fn a_histogram_no_method_reads_is_binned_from_the_sample() {
        let x: Vec<Option<f64>> = (0..30_000).map(|i| Some((i % 1000) as f64)).collect();
        let plan = |exact_histogram| {
            vec![ColumnPlan {
                name: "x".into(),
                kind: FeatureKind::Numeric,
                edges: Some(reference_edges(0.0, 1000.0, 1000)),
                known_values: None,
                count_values: false,
                exact_histogram,
            }]
        };
        let profile = |exact| {
            let mut b = ProfileBuilder::new(plan(exact), None);
            b.add_columns(&[("x", &numeric(x.clone()))], RowOrigin::new("f", 0))
                .unwrap();
            b.finish().columns.remove(0)
        };
        let (exact, sampled) = (profile(true), profile(false));
        let (e, s) = (exact.histogram.unwrap(), sampled.histogram.unwrap());
        assert!(!e.from_sample && s.from_sample);
        assert_eq!(e.edges, s.edges);
        assert_eq!(e.counts.iter().sum::<u64>(), 30_000);
        assert_eq!(s.counts.iter().sum::<u64>(), SAMPLE_SIZE as u64);
        let want: Vec<u64> = {
            let mut c = vec![0; s.counts.len()];
            for v in &sampled.sample {
                c[bin(&s.edges, *v)] += 1;
            }
            c
        };
        assert_eq!(s.counts, want);
        // Shares within a few points of the exact ones (a uniform sample of 10,000).
        for (a, b) in e.counts.iter().zip(&s.counts) {
            let (a, b) = (*a as f64 / 30_000.0, *b as f64 / SAMPLE_SIZE as f64);
            assert!((a - b).abs() < 0.02, "{a} {b}");
        }
        // An exact histogram reads and writes as before (no new key).
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("from_sample"), "{json}");
        assert_eq!(serde_json::from_str::<Histogram>(&json).unwrap(), e);
    }

    /// The AVX2 code and the baseline code compute the same bits, on values that take every
    /// branch: nulls, NaN, infinities, signed zeros, values on the edges and out of range.
    #[test]
    fn the_vectorised_kernels_compute_the_same_bits() {
        let edges = reference_edges(-2.0, 2.0, 5000);
        let x: Vec<Option<f64>> = (0..10_000)
            .map(|i| match i % 101 {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(f64::INFINITY),
                3 => Some(-0.0),
                4 => Some(0.0),
                5 => Some(edges[i % edges.len()]),
                6 => Some(1e300),
                _ => Some((i as f64 * 0.37).sin() * 2.5),
            })
            .collect();
        let y: Vec<Option<f64>> = (0..10_000).map(|i| Some((i as f64).cos())).collect();
        let plan = |name: &str| ColumnPlan {
            name: name.into(),
            kind: FeatureKind::Numeric,
            edges: Some(edges.clone()),
            known_values: None,
            count_values: true,
            exact_histogram: true,
        };
        let profile = || {
            let mut b = ProfileBuilder::new(vec![plan("x"), plan("y")], Some(plan("score")));
            for from in (0..x.len()).step_by(999) {
                let to = (from + 999).min(x.len());
                let (xs, ys) = (numeric(x[from..to].to_vec()), numeric(y[from..to].to_vec()));
                let origin = RowOrigin::new("f", from as u64);
                b.add_columns(&[("x", &xs), ("y", &ys)], origin).unwrap();
                let scores: Vec<f64> = y[from..to].iter().flatten().copied().collect();
                let rows: Vec<usize> = (0..scores.len()).collect();
                b.add_scores(&scores, &rows, origin);
            }
            b.finish()
        };
        let (fast, portable) = (profile(), portable(profile));
        assert_eq!(fast, portable);
        let x = &fast.columns[0];
        assert_eq!(x.nulls, 100);
        assert_eq!(
            x.count,
            10_000 - 100 - 2 * 99,
            "NaN and infinity are left out"
        );
    }

    /// The extremes do not depend on which zero comes first.
    #[test]
    fn signed_zeros_give_the_same_extremes_in_any_order() {
        let plan = ColumnPlan {
            name: "z".into(),
            kind: FeatureKind::Numeric,
            edges: None,
            known_values: None,
            count_values: false,
            exact_histogram: true,
        };
        let profile = |values: Vec<Option<f64>>| {
            let mut b = ProfileBuilder::new(vec![plan.clone()], None);
            let arr = numeric(values);
            b.add_columns(&[("z", &arr)], RowOrigin::new("f", 0))
                .unwrap();
            let c = b.finish().columns.remove(0);
            (c.min.unwrap().to_bits(), c.max.unwrap().to_bits())
        };
        let zeros = profile(vec![
            Some(0.0),
            Some(-0.0),
            Some(0.0),
            Some(-0.0),
            Some(-0.0),
        ]);
        assert_eq!(
            zeros,
            profile(vec![Some(-0.0), Some(0.0), Some(-0.0), Some(0.0), None])
        );
        assert_eq!(zeros, (0.0f64.to_bits(), 0.0f64.to_bits()));
    }

    /// Short values are found by their bytes as a number: that must tell apart what a string
    /// comparison tells apart (lengths, zero bytes, the end of the buffer) and count the same.
    #[test]
    fn category_counts_equal_a_plain_count() {
        let words = [
            "",
            "a",
            "a\0",
            "ab",
            "abcdefg",
            "abcdefg\0",
            "abcdefgh",
            "abcdefghij",
            "\0",
            "b",
        ];
        let values: Vec<Option<&str>> = (0..3000)
            .map(|i| (i % 13 != 0).then_some(words[(i * 7 + i / 5) % words.len()]))
            .chain([Some("a"), Some("")])
            .collect();
        let arr: ArrayRef = Arc::new(StringArray::from(values.clone()));
        for known in [None, Some(vec!["a".into(), "abcdefgh".into(), "".into()])] {
            let plan = ColumnPlan {
                name: "c".into(),
                kind: FeatureKind::Categorical,
                edges: None,
                known_values: known.clone(),
                count_values: true,
                exact_histogram: true,
            };
            let mut b = ProfileBuilder::new(vec![plan], None);
            b.add_columns(&[("c", &arr)], RowOrigin::new("f", 0))
                .unwrap();
            let c = b.finish().columns.remove(0);
            let mut want: BTreeMap<String, u64> = BTreeMap::new();
            let mut other = 0;
            for v in values.iter().flatten() {
                match &known {
                    Some(k) if !k.iter().any(|k| k == v) => other += 1,
                    _ => *want.entry(v.to_string()).or_default() += 1,
                }
            }
            if let Some(k) = &known {
                for v in k {
                    want.entry(v.clone()).or_default();
                }
            }
            assert_eq!(c.values.counts, want);
            assert_eq!(c.values.other, other);
            assert_eq!(
                c.nulls,
                values.iter().filter(|v| v.is_none()).count() as u64
            );
        }
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
            exact_histogram: true,
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
            exact_histogram: true,
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
