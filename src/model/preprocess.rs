//! Feature preprocessing, fitted on training data and stored with the model version.
//!
//! Training and scoring both call [`Preprocessing::encode`], so they cannot skew: the same
//! imputation, scaling and one-hot encoding, in the same column order.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::profile::ShortStrings;
use crate::schema::{to_f64, FeatureKind};
use crate::simd::simd_dispatch;

/// One fitted feature transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FeatureTransform {
    Numeric {
        name: String,
        /// Value that replaces a null (the training mean); `None` makes a null a bad row.
        impute: Option<f64>,
        /// `(mean, std)` to standardise with, for algorithms that want scaled inputs.
        scale: Option<(f64, f64)>,
    },
    Categorical {
        name: String,
        /// Categories seen in training, sorted; each gets one 0/1 column. A category not in
        /// this list, or a null, encodes as all zeros and is counted as unknown.
        categories: Vec<String>,
    },
}

impl FeatureTransform {
    pub fn name(&self) -> &str {
        match self {
            Self::Numeric { name, .. } | Self::Categorical { name, .. } => name,
        }
    }

    pub fn kind(&self) -> FeatureKind {
        match self {
            Self::Numeric { .. } => FeatureKind::Numeric,
            Self::Categorical { .. } => FeatureKind::Categorical,
        }
    }

    pub fn width(&self) -> usize {
        match self {
            Self::Numeric { .. } => 1,
            Self::Categorical { categories, .. } => categories.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub features: Vec<FeatureTransform>,
}

/// A batch turned into model input.
#[derive(Debug)]
pub struct Encoded {
    /// One row per input row (bad rows hold zeros), one column per encoded feature.
    pub x: Array2<f64>,
    /// Why each row cannot be scored, `None` for good rows.
    pub bad: Vec<Option<String>>,
    /// Values of categorical features not seen in training (encoded as all zeros).
    pub unknown_categories: u64,
}

impl Encoded {
    pub fn bad_rows(&self) -> usize {
        self.bad.iter().filter(|b| b.is_some()).count()
    }
}

/// Options for fitting.
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    pub impute: bool,
    pub scale: bool,
}

impl Preprocessing {
    /// Fits imputation means, scaling and category lists on training columns (by name).
    pub fn fit(batch: &RecordBatch, features: &[String], opts: FitOptions) -> Result<Self> {
        let mut out = Vec::with_capacity(features.len());
        for name in features {
            let col = batch
                .column_by_name(name)
                .with_context(|| format!("no column '{name}'"))?;
            let Some(kind) = FeatureKind::of(col.data_type()) else {
                bail!(
                    "column '{name}' has type {}, which is neither numeric nor string",
                    col.data_type()
                );
            };
            out.push(match kind {
                FeatureKind::Numeric => {
                    let v = to_f64(col)?;
                    let finite: Vec<f64> = v
                        .as_primitive::<Float64Type>()
                        .iter()
                        .flatten()
                        .filter(|x| x.is_finite())
                        .collect();
                    if finite.is_empty() {
                        bail!("column '{name}' has no finite values to fit on");
                    }
                    let n = finite.len() as f64;
                    let mean = finite.iter().sum::<f64>() / n;
                    let var = finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                    let std = if var > 0.0 { var.sqrt() } else { 1.0 };
                    FeatureTransform::Numeric {
                        name: name.clone(),
                        impute: opts.impute.then_some(mean),
                        scale: opts.scale.then_some((mean, std)),
                    }
                }
                FeatureKind::Categorical => {
                    let s = cast(col, &DataType::Utf8)?;
                    let mut seen = BTreeMap::new();
                    for v in s.as_string::<i32>().iter().flatten() {
                        *seen.entry(v.to_string()).or_insert(0u64) += 1;
                    }
                    FeatureTransform::Categorical {
                        name: name.clone(),
                        categories: seen.into_keys().collect(),
                    }
                }
            });
        }
        Ok(Self { features: out })
    }

    /// Number of model input columns.
    pub fn width(&self) -> usize {
        self.features.iter().map(FeatureTransform::width).sum()
    }

    /// Names of the model input columns, e.g. `plan=basic` for one-hot columns.
    pub fn encoded_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.features {
            match f {
                FeatureTransform::Numeric { name, .. } => out.push(name.clone()),
                FeatureTransform::Categorical { name, categories } => {
                    out.extend(categories.iter().map(|c| format!("{name}={c}")))
                }
            }
        }
        out
    }

    /// Encodes the feature columns of a batch (already checked against the signature).
    pub fn encode(&self, batch: &RecordBatch) -> Result<Encoded> {
        let n = batch.num_rows();
        let mut x = Array2::<f64>::zeros((n, self.width()));
        let mut bad: Vec<Option<String>> = vec![None; n];
        let mut unknown_categories = 0u64;
        let mut offset = 0;
        for f in &self.features {
            let col = f.column(batch)?;
            match f {
                FeatureTransform::Numeric { .. } => {
                    f.numeric_values(col, &mut bad, |i, v| x[[i, offset]] = v)?
                }
                FeatureTransform::Categorical { .. } => {
                    unknown_categories +=
                        f.category_indices(col, |i, j| x[[i, offset + j]] = 1.0)?
                }
            }
            offset += f.width();
        }
        Ok(Encoded {
            x,
            bad,
            unknown_categories,
        })
    }
}

impl FeatureTransform {
    /// This feature's column in a batch.
    pub fn column<'a>(&self, batch: &'a RecordBatch) -> Result<&'a ArrayRef> {
        batch
            .column_by_name(self.name())
            .with_context(|| format!("batch has no column '{}'", self.name()))
    }

    /// The model input of a numeric feature, row by row: `put(row, value)` for each row that
    /// has one (imputed and scaled), a reason in `bad` for each row that cannot be scored (NaN,
    /// infinity, a null without imputer, a value too large to standardise). A row already bad
    /// keeps its first reason. The one place these rules live: every model path calls it.
    pub fn numeric_values(
        &self,
        col: &ArrayRef,
        bad: &mut [Option<String>],
        mut put: impl FnMut(usize, f64),
    ) -> Result<()> {
        let FeatureTransform::Numeric {
            name,
            impute,
            scale,
        } = self
        else {
            bail!("'{}' is not a numeric feature", self.name());
        };
        let values = to_f64(col)?;
        let values = values.as_primitive::<Float64Type>();
        let (shift, divide) = scale.unwrap_or((0.0, 1.0));
        let scaled = scale.is_some();
        let mut check = |i: usize, v: f64, bad: &mut [Option<String>]| {
            if !v.is_finite() {
                let what = if v.is_nan() { "NaN" } else { "infinite" };
                bad[i].get_or_insert_with(|| format!("{name} is {what}"));
                return;
            }
            let v = if scaled { (v - shift) / divide } else { v };
            if !v.is_finite() {
                // Near f64::MAX: the model never sees an infinite input.
                bad[i].get_or_insert_with(|| format!("{name} is too large to standardise"));
                return;
            }
            put(i, v);
        };
        if values.null_count() == 0 {
            // The common case, without a branch on validity per value.
            for (i, &v) in values.values().iter().enumerate() {
                check(i, v, bad);
            }
            return Ok(());
        }
        for (i, v) in values.iter().enumerate() {
            match (v, impute) {
                (Some(v), _) => check(i, v, bad),
                (None, Some(m)) => check(i, *m, bad),
                (None, None) => {
                    bad[i].get_or_insert_with(|| {
                        format!("{name} is null and the model has no imputer")
                    });
                }
            }
        }
        Ok(())
    }

    /// `sum[i] += weight * value(i)` for a numeric feature: the linear model's inner loop.
    /// [`add_scaled`] takes 64 rows at a time, nulls imputed; a group of 64 with a value to
    /// refuse (rare) goes through [`Self::numeric_values`] row by row instead. Both compute
    /// each value the same way: `(x - shift) / divide`, then `sum += weight * value`.
    pub fn add_weighted(
        &self,
        col: &ArrayRef,
        weight: f64,
        sum: &mut [f64],
        bad: &mut [Option<String>],
    ) -> Result<()> {
        let FeatureTransform::Numeric { impute, scale, .. } = self else {
            return self.numeric_values(col, bad, |i, v| sum[i] += weight * v);
        };
        let values = to_f64(col)?;
        let array = values.as_primitive::<Float64Type>();
        let (shift, divide) = scale.unwrap_or((0.0, 1.0));
        // A null without imputer is refused: NaN sends its group to the row-by-row path.
        let fill = impute.unwrap_or(f64::NAN);
        let valid: Vec<u64> = match array.nulls() {
            Some(nulls) => {
                let bits = nulls.inner().bit_chunks();
                let last = (bits.remainder_len() > 0).then(|| bits.remainder_bits());
                bits.iter().chain(last).collect()
            }
            None => Vec::new(),
        };
        let mut refused = Vec::new();
        add_scaled(
            array.values(),
            &valid,
            Scaling {
                fill,
                shift,
                divide,
                weight,
            },
            sum,
            &mut refused,
        );
        for group in refused {
            let rows = group * 64..((group + 1) * 64).min(sum.len());
            let part = values.slice(rows.start, rows.len());
            let (sum, bad) = (&mut sum[rows.clone()], &mut bad[rows]);
            self.numeric_values(&part, bad, |i, v| sum[i] += weight * v)?;
        }
        Ok(())
    }

    /// The category of each row of a categorical feature, as an index into the training
    /// categories: `put(row, index)`. Returns how many values (or nulls) were not seen in
    /// training; those rows get no call, and encode as all zeros.
    pub fn category_indices(
        &self,
        col: &ArrayRef,
        mut put: impl FnMut(usize, usize),
    ) -> Result<u64> {
        let FeatureTransform::Categorical { categories, .. } = self else {
            bail!("'{}' is not a categorical feature", self.name());
        };
        let find = |v: Option<&str>| {
            v.and_then(|v| categories.binary_search_by(|c| c.as_str().cmp(v)).ok())
        };
        let mut unknown = 0u64;
        if let Some(dict) = col.as_any_dictionary_opt() {
            // Look each dictionary value up once, then map the keys.
            let values = cast(dict.values(), &DataType::Utf8)?;
            let index: Vec<Option<usize>> = values.as_string::<i32>().iter().map(find).collect();
            let keys = cast(dict.keys(), &DataType::UInt32)?;
            for (i, k) in keys
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .iter()
                .enumerate()
            {
                match k.and_then(|k| index.get(k as usize).copied().flatten()) {
                    Some(j) => put(i, j),
                    None => unknown += 1,
                }
            }
            return Ok(unknown);
        }
        let s = cast(col, &DataType::Utf8)?;
        let s = s.as_string::<i32>();
        // Few distinct values, as a rule, and short ones: each looked up once per batch, then
        // found again by its bytes as one number (no string comparison).
        let mut seen = ShortStrings::new(s);
        for i in 0..s.len() {
            if s.is_null(i) {
                unknown += 1;
                continue;
            }
            let key = seen.key(i);
            let j = match key.and_then(|k| seen.get(k)) {
                Some(j) => j,
                None => {
                    let j = find(Some(s.value(i)));
                    if let Some(k) = key {
                        seen.put(k, j);
                    }
                    j
                }
            };
            match j {
                Some(j) => put(i, j),
                None => unknown += 1,
            }
        }
        Ok(unknown)
    }
}

/// What [`add_scaled`] computes of each value `x` (`fill` for a null):
/// `weight * ((x - shift) / divide)`.
#[derive(Debug, Clone, Copy)]
struct Scaling {
    fill: f64,
    shift: f64,
    divide: f64,
    weight: f64,
}

simd_dispatch! {
    /// `sum[i] += weight * ((x - shift) / divide)` for each group of 64 rows whose scaled values
    /// are all finite (`(x - 0.0) / 1.0` is exact, so no scaling is the same arithmetic); the
    /// other groups are listed in `refused`, untouched. `valid` holds a word of the validity
    /// bitmap per group (none: no nulls); nulls take the value `fill`, chosen without a branch,
    /// so that the loop vectorises.
    fn add_scaled(v: &[f64], valid: &[u64], s: Scaling, sum: &mut [f64], refused: &mut Vec<usize>) {
        let word = |g: usize| valid.get(g).copied().unwrap_or(u64::MAX);
        let (groups, tail) = v.as_chunks::<64>();
        let (sums, sum_tail) = sum.as_chunks_mut::<64>();
        for (g, (xs, sum)) in groups.iter().zip(sums).enumerate() {
            if !add_group(xs, word(g), s, sum) {
                refused.push(g);
            }
        }
        if !tail.is_empty() {
            // Padded to a full group; the padding counts as valid zeros, added to nothing.
            let (mut xs, mut part) = ([0.0; 64], [0.0; 64]);
            xs[..tail.len()].copy_from_slice(tail);
            part[..tail.len()].copy_from_slice(sum_tail);
            if add_group(&xs, word(groups.len()) | (u64::MAX << tail.len()), s, &mut part) {
                sum_tail.copy_from_slice(&part[..tail.len()]);
            } else {
                refused.push(groups.len());
            }
        }
    }
}

/// [`add_scaled`] of one group; false (and nothing added) if a scaled value is not finite.
#[inline(always)]
fn add_group(xs: &[f64; 64], word: u64, s: Scaling, sum: &mut [f64; 64]) -> bool {
    let mut terms = [0.0; 64];
    let mut clean = true;
    for j in 0..64 {
        // The value or `fill` by its validity bit, as a mask on the bits: a branch or a
        // select here is compiled into loading from one of two addresses, one value at a time.
        let keep = 0u64.wrapping_sub((word >> j) & 1);
        let x = f64::from_bits((xs[j].to_bits() & keep) | (s.fill.to_bits() & !keep));
        let y = (x - s.shift) / s.divide;
        clean &= y.is_finite();
        terms[j] = s.weight * y;
    }
    if clean {
        for (a, t) in sum.iter_mut().zip(&terms) {
            *a += t;
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array, StringArray};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "a",
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    None,
                    Some(3.0),
                    Some(f64::NAN),
                ])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(Int32Array::from(vec![1, 2, 3, 4])) as ArrayRef,
            ),
            (
                "c",
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    Some("y"),
                    None,
                    Some("x"),
                ])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn fits_and_encodes_the_same_way() {
        let b = batch();
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let p = Preprocessing::fit(
            &b,
            &names,
            FitOptions {
                impute: true,
                scale: false,
            },
        )
        .unwrap();
        assert_eq!(p.encoded_names(), ["a", "b", "c=x", "c=y"]);
        let e = p.encode(&b).unwrap();
        assert_eq!(e.x.row(0).to_vec(), [1.0, 1.0, 1.0, 0.0]);
        assert_eq!(
            e.x.row(1).to_vec(),
            [2.0, 2.0, 0.0, 1.0],
            "null imputed with the mean of 1 and 3"
        );
        assert_eq!(e.bad[3].as_deref(), Some("a is NaN"));
        assert_eq!(e.unknown_categories, 1, "the null category");
        assert_eq!(e.bad_rows(), 1);
    }

    /// The linear kernel's groups of 64 give each row exactly what the row-by-row rules give
    /// it, refused rows included, with the AVX2 code and with the baseline code.
    #[test]
    fn weighted_sums_equal_the_row_by_row_values() {
        let n = 1000;
        let x: Vec<Option<f64>> = (0..n)
            .map(|i| match i % 211 {
                0 | 5 => None,
                1 => Some(f64::NAN),
                2 => Some(f64::NEG_INFINITY),
                3 => Some(f64::MAX),
                _ => Some((i as f64 * 0.7).sin() * 1e3),
            })
            .collect();
        // Offset into its buffers, as a batch sliced from a larger one is.
        let col: ArrayRef = Arc::new(Float64Array::from(x).slice(3, n - 3));
        for (impute, scale) in [
            (Some(0.25), Some((1.5, 0.3))),
            (None, Some((1.5, 0.3))),
            (Some(-2.0), None),
            (None, None),
        ] {
            let f = FeatureTransform::Numeric {
                name: "x".into(),
                impute,
                scale,
            };
            let weight = -0.7;
            let mut want = vec![0.5; n - 3];
            let mut want_bad = vec![None; n - 3];
            f.numeric_values(&col, &mut want_bad, |i, v| want[i] += weight * v)
                .unwrap();
            let run = || {
                let mut sum = vec![0.5; n - 3];
                let mut bad = vec![None; n - 3];
                f.add_weighted(&col, weight, &mut sum, &mut bad).unwrap();
                (sum, bad)
            };
            for (sum, bad) in [run(), crate::simd::portable(run)] {
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&sum), bits(&want), "{impute:?} {scale:?}");
                assert_eq!(bad, want_bad);
            }
        }
    }

    /// Categories are found by their bytes as a number when short: the same indices as a
    /// search, for values that differ only in length, in zero bytes or at the buffer's end.
    #[test]
    fn category_indices_equal_a_search() {
        let categories: Vec<String> = ["", "a", "a\0", "abcdefg", "abcdefgh", "b"]
            .map(String::from)
            .to_vec();
        let f = FeatureTransform::Categorical {
            name: "c".into(),
            categories: categories.clone(),
        };
        let words = [
            "",
            "a",
            "a\0",
            "\0",
            "abcdefg",
            "abcdefg\0",
            "abcdefgh",
            "zz",
            "b",
        ];
        let values: Vec<Option<&str>> = (0..2000)
            .map(|i| (i % 17 != 0).then_some(words[(i * 5 + i / 7) % words.len()]))
            .chain([Some("b"), Some("")])
            .collect();
        let col: ArrayRef = Arc::new(StringArray::from(values.clone()));
        let mut got = vec![None; values.len()];
        let unknown = f.category_indices(&col, |i, j| got[i] = Some(j)).unwrap();
        let want: Vec<Option<usize>> = values
            .iter()
            .map(|v| v.and_then(|v| categories.iter().position(|c| c == v)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(unknown, want.iter().filter(|j| j.is_none()).count() as u64);
    }

    #[test]
    fn null_without_imputer_is_a_bad_row() {
        let b = batch();
        let p = Preprocessing::fit(
            &b,
            &["a".to_string()],
            FitOptions {
                impute: false,
                scale: true,
            },
        )
        .unwrap();
        let e = p.encode(&b).unwrap();
        assert_eq!(
            e.bad[1].as_deref(),
            Some("a is null and the model has no imputer")
        );
        assert!((e.x[[0, 0]] + 1.0).abs() < 1e-12, "scaled: (1 - 2) / 1");
    }
}
