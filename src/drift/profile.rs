//! Column profiles: what a data set looks like, in bounded memory, mergeable, and independent
//! of how the rows were split into batches or threads.
//!
//! The reference profile is computed at training time and stored with the model version; the
//! current profile is accumulated while a run scores (no second read of the data). Everything
//! that feeds a drift statistic is exact and order-free: counts, histogram counts on the
//! reference's fixed bin edges, category counts, and a bottom-k sample chosen by a hash of
//! each row's position (the same rows whatever the batch size or thread count).

use std::collections::BTreeMap;

use anyhow::Result;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use serde::{Deserialize, Serialize};

use crate::model::{to_f64, FeatureKind};

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

    fn count_value(&mut self, key: &str) {
        let cap = match self.plan.kind {
            FeatureKind::Numeric => MAX_DISTINCT_NUMBERS,
            FeatureKind::Categorical => MAX_CATEGORIES,
        };
        if let Some(c) = self.values.counts.get_mut(key) {
            *c += 1;
        } else if self.plan.known_values.is_none() && self.values.counts.len() < cap {
            self.values.counts.insert(key.to_string(), 1);
        } else {
            self.values.other += 1;
            if self.plan.known_values.is_none() {
                self.values.overflowed = true;
            }
        }
    }

    fn add_number(&mut self, v: f64, priority: u64) {
        self.count += 1;
        self.sum += v;
        self.sum_sq += v * v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if let Some(edges) = &self.plan.edges {
            self.hist[bin(edges, v)] += 1;
        }
        if self.plan.count_values && !self.values.overflowed {
            self.count_number(v);
        }
        self.sample.offer(priority, v);
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
        let mut rows = 0;
        for col in &mut self.columns {
            let Some((_, array)) = columns.iter().find(|(n, _)| *n == col.plan.name) else {
                continue;
            };
            rows = array.len();
            match col.plan.kind {
                FeatureKind::Numeric => {
                    let v = to_f64(array)?;
                    for (i, x) in v.as_primitive::<Float64Type>().iter().enumerate() {
                        match x {
                            Some(x) if x.is_finite() => col.add_number(x, origin.priority(i)),
                            // NaN and infinity are bad rows, not part of a distribution.
                            Some(_) => {}
                            None => col.nulls += 1,
                        }
                    }
                }
                FeatureKind::Categorical => {
                    let s = cast(array, &DataType::Utf8)?;
                    for v in s.as_string::<i32>().iter() {
                        match v {
                            Some(v) => {
                                col.count += 1;
                                col.count_value(v);
                            }
                            None => col.nulls += 1,
                        }
                    }
                }
            }
        }
        self.rows += rows as u64;
        Ok(())
    }

    /// Adds model scores; `rows[i]` is the row position (within the batch) of `scores[i]`.
    pub fn add_scores(&mut self, scores: &[f64], rows: &[usize], origin: RowOrigin) {
        if let Some(col) = &mut self.score {
            for (s, &i) in scores.iter().zip(rows) {
                if s.is_finite() {
                    col.add_number(*s, origin.priority(i));
                }
            }
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
    fn profiles_do_not_depend_on_how_rows_are_split() {
        let values: Vec<Option<f64>> = (0..30_000)
            .map(|i| {
                if i % 97 == 0 {
                    None
                } else {
                    Some((i as f64 * 0.37).sin())
                }
            })
            .collect();
        let plan = || {
            vec![ColumnPlan {
                name: "x".into(),
                kind: FeatureKind::Numeric,
                edges: Some(vec![-1.0, 0.0, 1.0]),
                known_values: None,
                count_values: true,
            }]
        };
        let whole = {
            let mut b = ProfileBuilder::new(plan(), None);
            b.add_columns(&[("x", &numeric(values.clone()))], RowOrigin::new("f", 0))
                .unwrap();
            b.finish()
        };
        let mut split = ProfileBuilder::new(plan(), None);
        for (k, chunk) in values.chunks(777).enumerate().rev() {
            let mut b = ProfileBuilder::new(plan(), None);
            b.add_columns(
                &[("x", &numeric(chunk.to_vec()))],
                RowOrigin::new("f", (k * 777) as u64),
            )
            .unwrap();
            split.merge(b);
        }
        let split = split.finish();
        let (a, b) = (&whole.columns[0], &split.columns[0]);
        assert_eq!(a.sample, b.sample);
        assert_eq!(a.sample.len(), SAMPLE_SIZE);
        assert_eq!(a.histogram, b.histogram);
        assert_eq!((a.count, a.nulls), (b.count, b.nulls));
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
