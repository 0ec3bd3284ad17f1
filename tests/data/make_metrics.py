"""scikit-learn's metrics on committed samples, for src/metric.rs's tests.

    python3 tests/data/make_metrics.py > tests/data/metrics.json

The samples are drawn from a fixed seed; the file is committed, so `make test` needs no Python.
"""
import json
import sys

import numpy as np
import sklearn
from sklearn.calibration import calibration_curve
from sklearn.metrics import (accuracy_score, brier_score_loss, f1_score, log_loss,
                             mean_absolute_error, mean_squared_error, precision_score,
                             r2_score, recall_score, roc_auc_score)

rng = np.random.default_rng(20261201)
cases = []


def num(x):
    x = float(x)
    return None if np.isnan(x) else x


def binary(name, y, score, predicted=None):
    y = np.asarray(y, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    predicted = (score >= 0.5).astype(np.int64) if predicted is None else np.asarray(predicted)
    if len(y) == 0:
        keys = ["roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"]
        cases.append({"name": name, "kind": "binary", "expected": {k: None for k in keys}})
        return
    one_class = len(np.unique(y)) < 2
    bins = np.linspace(0.0, 1.0, 11)
    binids = np.searchsorted(bins[1:-1], score)
    total = np.bincount(binids, minlength=10)
    prob_true, prob_pred = calibration_curve(y, score, n_bins=10, pos_label=1)
    cases.append({
        "name": name, "kind": "binary",
        "y": y.tolist(), "score": score.tolist(), "predicted": predicted.tolist(),
        "expected": {
            "roc_auc": None if one_class else roc_auc_score(y, score),
            "accuracy": accuracy_score(y, predicted),
            "precision": precision_score(y, predicted, zero_division=0),
            "recall": recall_score(y, predicted, zero_division=0),
            "f1": f1_score(y, predicted, zero_division=0),
            "log_loss": log_loss(y, score, labels=[0, 1]),
            "brier": brier_score_loss(y, score, pos_label=1),
        },
        "reliability": [[int(r), float(pp), float(pt)]
                        for r, pp, pt in zip(total[total > 0], prob_pred, prob_true)],
    })


def multiclass(name, y, predicted):
    cases.append({
        "name": name, "kind": "multiclass", "y": list(map(int, y)),
        "predicted": list(map(int, predicted)),
        "expected": {"accuracy": accuracy_score(y, predicted),
                     "macro_f1": f1_score(y, predicted, average="macro", zero_division=0)},
    })


def regression(name, y, predicted):
    cases.append({
        "name": name, "kind": "regression", "y": list(map(float, y)),
        "predicted": list(map(float, predicted)),
        "expected": {"rmse": float(np.sqrt(mean_squared_error(y, predicted))),
                     "mae": mean_absolute_error(y, predicted),
                     "r2": r2_score(y, predicted)},
    })


# Binary: a calibrated model on 2,000 rows.
x = rng.normal(size=2000)
p = 1 / (1 + np.exp(-(0.3 + 1.7 * x)))
binary("binary calibrated", rng.random(2000) < p, p)
# Heavy ties, scores on the bin edges (0.1, 0.3, ...) and at 0 and 1 exactly (log loss clips).
s = np.round(rng.random(700) * 10) / 10
binary("binary ties on the edges", rng.random(700) < s, s)
binary("binary certain and wrong", [1, 0, 1, 0, 1], [1.0, 0.0, 0.0, 1.0, 0.5])
# One class present: AUC undefined.
binary("binary one class", [1] * 50, rng.random(50))
binary("binary only negatives", [0] * 30, rng.random(30))
# Nothing predicted positive: precision is 0 by scikit-learn's zero_division.
binary("binary no positive prediction", rng.random(200) < 0.3, rng.random(200) * 0.49)
binary("binary tiny", [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
# A threshold other than the score's: the prediction column as given.
y = rng.random(300) < 0.5
binary("binary given predictions", y, rng.random(300), (rng.random(300) < 0.5).astype(int))
binary("binary empty", [], [])

y = rng.integers(0, 4, 1000)
multiclass("multiclass noisy", y, np.where(rng.random(1000) < 0.6, y, rng.integers(0, 4, 1000)))
multiclass("multiclass predicted class never true", [0, 1, 1, 2, 0], [0, 1, 3, 2, 1])
multiclass("multiclass perfect", [2, 0, 1], [2, 0, 1])

y = rng.normal(50, 10, 800)
regression("regression noisy", y, y + rng.normal(0, 3, 800))
regression("regression constant target, imperfect", [3.0] * 5, [3.0, 3.0, 2.0, 3.0, 3.0])
regression("regression constant target, perfect", [3.0] * 4, [3.0] * 4)

# Isotonic calibration: scores with ties, fitted and predicted as nightshift's Calibration.
from sklearn.isotonic import IsotonicRegression
s = np.round(rng.random(600), 2)
yi = (rng.random(600) < s ** 1.5).astype(float)
iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s, yi)
at = np.concatenate([np.linspace(-0.1, 1.1, 241), s[:50]])
isotonic = {"score": s.tolist(), "y": yi.tolist(), "at": at.tolist(),
            "predicted": iso.predict(at).tolist()}

json.dump({"scikit_learn": sklearn.__version__, "cases": cases, "isotonic": isotonic},
          sys.stdout, indent=None)
sys.stdout.write("\n")
