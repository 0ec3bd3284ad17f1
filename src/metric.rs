//! How right a model is: the metrics of scikit-learn, computed as scikit-learn computes them
//! (`roc_auc_score`, `accuracy_score`, `precision_score`, `recall_score`, `f1_score`,
//! `log_loss`, `brier_score_loss`, `calibration_curve`, `mean_squared_error`,
//! `mean_absolute_error`, `r2_score`). `tests/data/metrics.json` (made by `tests/data/make_metrics.py`) holds scikit-learn's values
//! for committed samples (ties, one class, empty inputs included), and the tests below compare
//! to 1e-9. Training measures its holdout with these, evaluation its joined labels: the two
//! numbers are comparable because they are the same code.
//!
//! A metric that is undefined on the rows (AUC with one class present, R² of a constant target
//! predicted imperfectly is defined as scikit-learn defines it) is `None`, never a made-up
//! number. Every function here takes rows already joined and cleaned: no NaN score, no missing
//! label.

/// The metrics by name, as reports, job files and Prometheus name them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
    strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum Metric {
    RocAuc,
    Accuracy,
    Precision,
    Recall,
    F1,
    LogLoss,
    Brier,
    MacroF1,
    Rmse,
    Mae,
    R2,
}

impl Metric {
    /// Whether a larger value is better (AUC, accuracy ...) or worse (losses, errors).
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Metric::LogLoss | Metric::Brier | Metric::Rmse | Metric::Mae
        )
    }

    /// How much worse than `baseline` the `value` is: positive when worse, in the metric's
    /// own units.
    pub fn worsening(self, baseline: f64, value: f64) -> f64 {
        if self.higher_is_better() {
            baseline - value
        } else {
            value - baseline
        }
    }
}

/// The metrics of a binary classifier. `y` is whether the row's label is the positive class
/// (the model's second class); `score` the probability of the positive class; `predicted`
/// whether the model predicted the positive class (its threshold, 0.5).
#[derive(Debug, Clone, PartialEq)]
pub struct Binary {
    pub rows: usize,
    /// `None` when only one class is present: the ROC curve is not defined.
    pub roc_auc: Option<f64>,
    pub accuracy: f64,
    /// 0 when nothing was predicted positive (scikit-learn's `zero_division` default).
    pub precision: f64,
    /// 0 when no row is positive.
    pub recall: f64,
    pub f1: f64,
    pub log_loss: f64,
    pub brier: f64,
}

impl Binary {
    pub fn values(&self) -> Vec<(Metric, Option<f64>)> {
        vec![
            (Metric::RocAuc, self.roc_auc),
            (Metric::Accuracy, Some(self.accuracy)),
            (Metric::Precision, Some(self.precision)),
            (Metric::Recall, Some(self.recall)),
            (Metric::F1, Some(self.f1)),
            (Metric::LogLoss, Some(self.log_loss)),
            (Metric::Brier, Some(self.brier)),
        ]
    }
}

/// `None` for no rows: no metric is defined on an empty join.
pub fn binary(y: &[bool], score: &[f64], predicted: &[bool]) -> Option<Binary> {
    assert_eq!(y.len(), score.len());
    assert_eq!(y.len(), predicted.len());
    if y.is_empty() {
        return None;
    }
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    let mut correct = 0usize;
    for (&t, &p) in y.iter().zip(predicted) {
        tp += usize::from(t && p);
        fp += usize::from(!t && p);
        fn_ += usize::from(t && !p);
        correct += usize::from(t == p);
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Some(Binary {
        rows: y.len(),
        roc_auc: roc_auc(y, score),
        accuracy: correct as f64 / y.len() as f64,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        f1: ratio(2 * tp, 2 * tp + fp + fn_),
        log_loss: log_loss(y, score),
        brier: brier(y, score),
    })
}

/// Area under the ROC curve: the probability that a random positive row scores above a random
/// negative one, ties counted half (the Mann-Whitney statistic on mid-ranks, which is the
/// trapezoidal area scikit-learn computes). `None` with one class present.
pub fn roc_auc(y: &[bool], score: &[f64]) -> Option<f64> {
    let positives = y.iter().filter(|&&t| t).count();
    let negatives = y.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    // Sum of the positives' mid-ranks (1-based), tie group by tie group.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score[order[j + 1]] == score[order[i]] {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        let tied_positives = order[i..=j].iter().filter(|&&k| y[k]).count();
        rank_sum += mid_rank * tied_positives as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Mean cross-entropy, probabilities clipped to `[eps, 1 - eps]` with `eps` the float64
/// machine epsilon, as scikit-learn 1.5 and later clip them (the negative class's
/// probability is `1 - score`, clipped in its turn).
pub fn log_loss(y: &[bool], score: &[f64]) -> f64 {
    let clip = |p: f64| p.clamp(f64::EPSILON, 1.0 - f64::EPSILON);
    let total: f64 = y
        .iter()
        .zip(score)
        .map(|(&t, &p)| {
            if t {
                -clip(p).ln()
            } else {
                -clip(1.0 - p).ln()
            }
        })
        .sum();
    total / y.len() as f64
}

/// Mean squared difference between the score and the outcome (1 or 0).
pub fn brier(y: &[bool], score: &[f64]) -> f64 {
    let total: f64 = y
        .iter()
        .zip(score)
        .map(|(&t, &p)| (p - f64::from(u8::from(t))).powi(2))
        .sum();
    total / y.len() as f64
}

/// One bin of a reliability table.
#[derive(Debug, Clone, PartialEq)]
pub struct ReliabilityBin {
    /// The bin is `(lower, upper]`, the first one `[0, upper]`.
    pub lower: f64,
    pub upper: f64,
    pub rows: u64,
    /// The mean score of the bin's rows: what the model said.
    pub mean_score: f64,
    /// The share of the bin's rows that were positive: what happened.
    pub positive_rate: f64,
}

/// Calibration by tenths of the score range, as scikit-learn's `calibration_curve(y, score,
/// n_bins=10)` bins it (same edges, same side of an edge); bins with no row are left out.
pub fn reliability(y: &[bool], score: &[f64]) -> Vec<ReliabilityBin> {
    const BINS: usize = 10;
    // numpy's linspace(0, 1, 11): k * 0.1, the last edge exactly 1.
    let edge = |k: usize| {
        if k == BINS {
            1.0
        } else {
            k as f64 * (1.0 / BINS as f64)
        }
    };
    let mut rows = [0u64; BINS];
    let mut sums = [0.0; BINS];
    let mut positives = [0.0; BINS];
    for (&t, &p) in y.iter().zip(score) {
        // searchsorted(inner edges, p, side="left"): the number of inner edges below p.
        let bin = (1..BINS).filter(|&k| edge(k) < p).count();
        rows[bin] += 1;
        sums[bin] += p;
        positives[bin] += f64::from(u8::from(t));
    }
    (0..BINS)
        .filter(|&b| rows[b] > 0)
        .map(|b| ReliabilityBin {
            lower: edge(b),
            upper: edge(b + 1),
            rows: rows[b],
            mean_score: sums[b] / rows[b] as f64,
            positive_rate: positives[b] / rows[b] as f64,
        })
        .collect()
}

/// The metrics of a multiclass classifier, on class indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Multiclass {
    pub rows: usize,
    pub accuracy: f64,
    /// The unweighted mean of the per-class F1 over the classes present in the labels or the
    /// predictions, as `f1_score(average="macro")`.
    pub macro_f1: f64,
}

impl Multiclass {
    pub fn values(&self) -> Vec<(Metric, Option<f64>)> {
        vec![
            (Metric::Accuracy, Some(self.accuracy)),
            (Metric::MacroF1, Some(self.macro_f1)),
        ]
    }
}

pub fn multiclass(y: &[usize], predicted: &[usize]) -> Option<Multiclass> {
    assert_eq!(y.len(), predicted.len());
    if y.is_empty() {
        return None;
    }
    let classes = y.iter().chain(predicted).copied().max().unwrap_or(0) + 1;
    let (mut tp, mut fp, mut fn_) = (
        vec![0usize; classes],
        vec![0usize; classes],
        vec![0usize; classes],
    );
    let mut seen = vec![false; classes];
    let mut correct = 0usize;
    for (&t, &p) in y.iter().zip(predicted) {
        seen[t] = true;
        seen[p] = true;
        if t == p {
            tp[t] += 1;
            correct += 1;
        } else {
            fp[p] += 1;
            fn_[t] += 1;
        }
    }
    let present: Vec<usize> = (0..classes).filter(|&c| seen[c]).collect();
    let f1_sum: f64 = present
        .iter()
        .map(|&c| 2.0 * tp[c] as f64 / (2 * tp[c] + fp[c] + fn_[c]) as f64)
        .sum();
    Some(Multiclass {
        rows: y.len(),
        accuracy: correct as f64 / y.len() as f64,
        macro_f1: f1_sum / present.len() as f64,
    })
}

/// The metrics of a regressor.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    pub rows: usize,
    pub rmse: f64,
    pub mae: f64,
    /// As `r2_score`: 1 for a perfect prediction of a constant target, 0 for an imperfect one.
    pub r2: f64,
}

impl Regression {
    pub fn values(&self) -> Vec<(Metric, Option<f64>)> {
        vec![
            (Metric::Rmse, Some(self.rmse)),
            (Metric::Mae, Some(self.mae)),
            (Metric::R2, Some(self.r2)),
        ]
    }
}

pub fn regression(y: &[f64], predicted: &[f64]) -> Option<Regression> {
    assert_eq!(y.len(), predicted.len());
    if y.is_empty() {
        return None;
    }
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let (mut sse, mut sae, mut sst) = (0.0, 0.0, 0.0);
    for (&t, &p) in y.iter().zip(predicted) {
        sse += (t - p) * (t - p);
        sae += (t - p).abs();
        sst += (t - mean) * (t - mean);
    }
    let r2 = if sst > 0.0 {
        1.0 - sse / sst
    } else if sse == 0.0 {
        1.0
    } else {
        0.0
    };
    Some(Regression {
        rows: y.len(),
        rmse: (sse / n).sqrt(),
        mae: sae / n,
        r2,
    })
}

/// A monotone map from a binary classifier's score to a calibrated probability, fitted on the
/// holdout at training: isotonic regression (pool adjacent violators), predicted as
/// scikit-learn's `IsotonicRegression(out_of_bounds="clip")` predicts, by linear interpolation
/// between the fitted points, clipped at both ends. Plain data, stored with the version.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// Scores, increasing.
    pub x: Vec<f64>,
    /// The calibrated probability at each, non-decreasing.
    pub y: Vec<f64>,
}

impl Calibration {
    /// Fits on (score, outcome) pairs; `None` with fewer than two distinct scores.
    pub fn fit(score: &[f64], y: &[bool]) -> Option<Self> {
        let mut pairs: Vec<(f64, f64)> = score
            .iter()
            .zip(y)
            .filter(|(s, _)| s.is_finite())
            .map(|(&s, &t)| (s, f64::from(u8::from(t))))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        // One point per distinct score: the mean outcome, weighted by its rows.
        let mut points: Vec<(f64, f64, f64)> = Vec::new(); // (x, y mean, weight)
        for (x, t) in pairs {
            match points.last_mut() {
                Some((px, py, w)) if *px == x => {
                    *py = (*py * *w + t) / (*w + 1.0);
                    *w += 1.0;
                }
                _ => points.push((x, t, 1.0)),
            }
        }
        if points.len() < 2 {
            return None;
        }
        // Pool adjacent violators: blocks of (value, weight, points in the block).
        let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(points.len());
        for &(_, y, w) in &points {
            blocks.push((y, w, 1));
            while blocks.len() > 1 {
                let (v2, w2, n2) = blocks[blocks.len() - 1];
                let (v1, w1, n1) = blocks[blocks.len() - 2];
                if v1 <= v2 {
                    break;
                }
                blocks.pop();
                let last = blocks.last_mut().expect("two blocks");
                *last = ((v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2);
            }
        }
        let mut x = Vec::new();
        let mut fitted = Vec::new();
        let mut i = 0;
        for (v, _, n) in blocks {
            // The ends of a flat run are enough for the interpolation.
            x.push(points[i].0);
            fitted.push(v);
            if n > 1 {
                x.push(points[i + n - 1].0);
                fitted.push(v);
            }
            i += n;
        }
        Some(Calibration { x, y: fitted })
    }

    /// Whether the map can be applied: as `fit` makes it (a hand-edited manifest may not be).
    pub fn is_valid(&self) -> bool {
        !self.x.is_empty()
            && self.x.len() == self.y.len()
            && self.x.windows(2).all(|w| w[0] < w[1])
            && self.x.iter().chain(&self.y).all(|v| v.is_finite())
    }

    /// The calibrated probability of a score (NaN for NaN). The map must be valid.
    pub fn apply(&self, s: f64) -> f64 {
        let (x, y) = (&self.x, &self.y);
        if s.is_nan() {
            return f64::NAN;
        }
        if s <= x[0] {
            return y[0];
        }
        if s >= x[x.len() - 1] {
            return y[y.len() - 1];
        }
        let j = x.partition_point(|&v| v <= s); // x[j - 1] <= s < x[j]
        let (x0, x1, y0, y1) = (x[j - 1], x[j], y[j - 1], y[j]);
        y0 + (y1 - y0) * (s - x0) / (x1 - x0)
    }
}

/// A binary classifier's metrics estimated from calibrated probabilities alone, before any
/// label exists: NannyML's confidence-based performance estimation (CBPE). A row predicted
/// positive with probability `p` is a true positive with probability `p` and a false positive
/// with `1 - p`; the expected confusion matrix gives accuracy, precision, recall and F1, and
/// the expected ROC curve (cumulative `p` and `1 - p`, rows in decreasing `p`) gives AUC.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimated {
    pub roc_auc: Option<f64>,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Estimated {
    pub fn get(&self, m: Metric) -> Option<f64> {
        match m {
            Metric::RocAuc => self.roc_auc,
            Metric::Accuracy => Some(self.accuracy),
            Metric::Precision => Some(self.precision),
            Metric::Recall => Some(self.recall),
            Metric::F1 => Some(self.f1),
            _ => None,
        }
    }
}

/// `p`: calibrated probabilities of the positive class; `predicted`: the model's predictions.
/// `None` for no rows.
pub fn estimate_binary(p: &[f64], predicted: &[bool]) -> Option<Estimated> {
    assert_eq!(p.len(), predicted.len());
    if p.is_empty() {
        return None;
    }
    let (mut tp, mut fp, mut fn_, mut tn) = (0.0, 0.0, 0.0, 0.0);
    for (&q, &said) in p.iter().zip(predicted) {
        if said {
            tp += q;
            fp += 1.0 - q;
        } else {
            fn_ += q;
            tn += 1.0 - q;
        }
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let mut sorted = p.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let (positives, negatives) = (tp + fn_, fp + tn);
    let roc_auc = (positives > 0.0 && negatives > 0.0).then(|| {
        let (mut t, mut f, mut area) = (0.0, 0.0, 0.0);
        for q in sorted {
            let (t1, f1) = (t + q, f + (1.0 - q));
            area += (f1 - f) * (t1 + t) / 2.0;
            (t, f) = (t1, f1);
        }
        area / (positives * negatives)
    });
    Some(Estimated {
        roc_auc,
        accuracy: (tp + tn) / p.len() as f64,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        f1: ratio(2.0 * tp, 2.0 * tp + fp + fn_),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// One committed sample and scikit-learn's values for it (`tests/data/make_metrics.py`).
    #[derive(Deserialize)]
    struct Case {
        name: String,
        kind: String,
        #[serde(default)]
        y: Vec<f64>,
        #[serde(default)]
        score: Vec<f64>,
        #[serde(default)]
        predicted: Vec<f64>,
        expected: std::collections::BTreeMap<String, Option<f64>>,
        #[serde(default)]
        reliability: Vec<[f64; 3]>,
    }

    #[derive(Deserialize)]
    struct Samples {
        cases: Vec<Case>,
    }

    fn cases() -> Vec<Case> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/metrics.json");
        let samples: Samples =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        samples.cases
    }

    fn close(name: &str, metric: &str, ours: Option<f64>, theirs: Option<f64>) {
        match (ours, theirs) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 1e-9,
                "{name}: {metric} is {a}, scikit-learn says {b}"
            ),
            _ => panic!("{name}: {metric} is {ours:?}, scikit-learn says {theirs:?}"),
        }
    }

    #[test]
    fn every_metric_equals_scikit_learns_on_the_committed_samples() {
        let cases = cases();
        assert!(cases.len() >= 10, "only {} samples", cases.len());
        for c in &cases {
            let get = |m: &str| -> Option<f64> {
                *c.expected
                    .get(m)
                    .unwrap_or_else(|| panic!("{}: no {m}", c.name))
            };
            match c.kind.as_str() {
                "binary" => {
                    let y: Vec<bool> = c.y.iter().map(|&v| v == 1.0).collect();
                    let p: Vec<bool> = c.predicted.iter().map(|&v| v == 1.0).collect();
                    let Some(m) = binary(&y, &c.score, &p) else {
                        assert!(c.y.is_empty(), "{}", c.name);
                        assert!(c.expected.values().all(Option::is_none), "{}", c.name);
                        continue;
                    };
                    close(&c.name, "roc_auc", m.roc_auc, get("roc_auc"));
                    close(&c.name, "accuracy", Some(m.accuracy), get("accuracy"));
                    close(&c.name, "precision", Some(m.precision), get("precision"));
                    close(&c.name, "recall", Some(m.recall), get("recall"));
                    close(&c.name, "f1", Some(m.f1), get("f1"));
                    close(&c.name, "log_loss", Some(m.log_loss), get("log_loss"));
                    close(&c.name, "brier", Some(m.brier), get("brier"));
                    let bins = reliability(&y, &c.score);
                    assert_eq!(bins.len(), c.reliability.len(), "{}: bins", c.name);
                    for (b, [rows, prob_pred, prob_true]) in bins.iter().zip(&c.reliability) {
                        assert_eq!(b.rows as f64, *rows, "{}", c.name);
                        close(&c.name, "mean_score", Some(b.mean_score), Some(*prob_pred));
                        close(
                            &c.name,
                            "positive_rate",
                            Some(b.positive_rate),
                            Some(*prob_true),
                        );
                    }
                }
                "multiclass" => {
                    let y: Vec<usize> = c.y.iter().map(|&v| v as usize).collect();
                    let p: Vec<usize> = c.predicted.iter().map(|&v| v as usize).collect();
                    let m = multiclass(&y, &p).expect("rows");
                    close(&c.name, "accuracy", Some(m.accuracy), get("accuracy"));
                    close(&c.name, "macro_f1", Some(m.macro_f1), get("macro_f1"));
                }
                "regression" => {
                    let m = regression(&c.y, &c.predicted).expect("rows");
                    close(&c.name, "rmse", Some(m.rmse), get("rmse"));
                    close(&c.name, "mae", Some(m.mae), get("mae"));
                    close(&c.name, "r2", Some(m.r2), get("r2"));
                }
                other => panic!("{}: unknown kind {other}", c.name),
            }
        }
    }

    /// Isotonic calibration equals scikit-learn's `IsotonicRegression(out_of_bounds="clip")`
    /// on the committed sample (fitted and predicted there, ties and all).
    #[test]
    fn calibration_equals_scikit_learns_isotonic_regression() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/metrics.json");
        let all: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let case = &all["isotonic"];
        let floats = |k: &str| -> Vec<f64> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        };
        let (score, y, at, want) = (
            floats("score"),
            floats("y"),
            floats("at"),
            floats("predicted"),
        );
        let y: Vec<bool> = y.iter().map(|&v| v == 1.0).collect();
        let c = Calibration::fit(&score, &y).unwrap();
        assert!(c.y.windows(2).all(|w| w[0] <= w[1]));
        for (s, w) in at.iter().zip(&want) {
            assert!(
                (c.apply(*s) - w).abs() <= 1e-9,
                "at {s}: {} against {w}",
                c.apply(*s)
            );
        }
    }

    /// CBPE on calibrated probabilities: when outcomes really are drawn with those
    /// probabilities, the estimates are the expected values of the realized metrics; with many
    /// rows they land close.
    #[test]
    fn estimates_land_near_the_realized_metrics_when_calibration_holds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
        let p: Vec<f64> = (0..200_000).map(|_| rng.gen::<f64>().powi(2)).collect();
        let y: Vec<bool> = p.iter().map(|&q| rng.gen::<f64>() < q).collect();
        let said: Vec<bool> = p.iter().map(|&q| q >= 0.5).collect();
        let est = estimate_binary(&p, &said).unwrap();
        let real = binary(&y, &p, &said).unwrap();
        for (name, e, r) in [
            ("roc_auc", est.roc_auc.unwrap(), real.roc_auc.unwrap()),
            ("accuracy", est.accuracy, real.accuracy),
            ("precision", est.precision, real.precision),
            ("recall", est.recall, real.recall),
            ("f1", est.f1, real.f1),
        ] {
            assert!((e - r).abs() < 0.005, "{name}: estimated {e}, realized {r}");
        }
        assert_eq!(estimate_binary(&[], &[]), None);
        assert_eq!(
            estimate_binary(&[1.0, 1.0], &[true, true]).unwrap().roc_auc,
            None
        );
    }

    #[test]
    fn nothing_is_made_up_for_an_empty_join_or_one_class() {
        assert_eq!(binary(&[], &[], &[]), None);
        assert_eq!(multiclass(&[], &[]), None);
        assert_eq!(regression(&[], &[]), None);
        let m = binary(&[true, true], &[0.9, 0.4], &[true, false]).unwrap();
        assert_eq!(m.roc_auc, None);
        assert_eq!(m.accuracy, 0.5);
    }
}
