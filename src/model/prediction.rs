//! What a model gives for a block of rows: every estimator, nightshift's forests and the
//! imported formats alike (so none of them needs another's module for it).

/// Model output for a block of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Probability of the positive class (binary), of the predicted class (multiclass), or the
    /// predicted value (regression).
    pub score: Vec<f64>,
    /// Predicted class index, for classifiers.
    pub class: Option<Vec<usize>>,
    /// Classifiers: every class's probability, row-major (rows x classes, in class order).
    /// `None` where the model cannot give them (a prior trained before shares were kept).
    pub proba: Option<Vec<f64>>,
}

impl Prediction {
    /// A classifier's prediction from its class probabilities (row-major, `k` per row): two
    /// classes, the probability of class 1, and class 1 iff it is more probable than class 0;
    /// more, the most probable class (the first on ties) and its probability.
    pub fn from_proba(proba: Vec<f64>, k: usize) -> Self {
        let rows = proba.len() / k.max(1);
        let mut score = Vec::with_capacity(rows);
        let mut class = Vec::with_capacity(rows);
        for row in proba.chunks_exact(k.max(1)) {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            score.push(if k == 2 { row[1] } else { row[best] });
            class.push(best);
        }
        Prediction {
            score,
            class: Some(class),
            proba: Some(proba),
        }
    }
}
