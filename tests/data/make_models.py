#!/usr/bin/env python3
"""Model files and their libraries' own predictions, for `nightshift model import`'s tests.

Each case under tests/data/models/<case>/ holds a model file (LightGBM model.txt, XGBoost
model.json / model.ubj, ONNX model.onnx), the rows it scores as a user's Parquet
(input.parquet, input-one-row.parquet = its first row) and expected.json: what the library
itself predicts for those rows. The Rust tests read only these files, so `make test` needs no
Python. The script also writes the example model fixtures/churn/models/churn_lightgbm.txt.

Install the pinned libraries (once) and regenerate everything:

    python3 -m venv target/models-venv
    target/models-venv/bin/pip install lightgbm==4.7.0 xgboost==3.2.0 scikit-learn==1.9.1 \
        skl2onnx==1.20.0 onnx==1.23.2 onnxruntime==1.32.0 onnxmltools==1.16.0 \
        pandas==3.1.1 pyarrow==26.0.1 numpy==2.4.6
    target/models-venv/bin/python tests/data/make_models.py

Deterministic: fixed seeds, one thread everywhere; tests/data/models is deleted and rewritten.

How features reach each library mirrors what nightshift does with the Parquet columns:
numeric columns cast to float64 (null -> NaN); for LightGBM/XGBoost string columns become a
pandas Categorical over the training categories (null or unseen -> code -1, i.e. missing);
ONNX inputs are fed per column as the converted model declares them (float32 numerics,
strings), or as one float32 tensor for the onnxmltools models (features_flag true).

Each input.parquet is ~300 rows of fixtures/churn/features/dt=2026-11-01 with: nulls in
every column kind, unseen categories, zeros/tiny/huge values, and values planted exactly on
the model's own split thresholds (and their float64/float32 neighbours).
"""
import json
import math
import shutil
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PINS = {
    "lightgbm": "4.7.0", "xgboost": "3.2.0", "sklearn": "1.9.1", "skl2onnx": "1.20.0",
    "onnx": "1.23.2", "onnxruntime": "1.32.0", "onnxmltools": "1.16.0",
    "pandas": "3.1.1", "pyarrow": "26.0.1", "numpy": "2.4.6",
}


def check_versions():
    import importlib
    wrong = []
    for name, want in PINS.items():
        have = importlib.import_module(name).__version__
        if have != want:
            wrong.append(f"{name} {have} (want {want})")
    if wrong:
        sys.exit("make_models.py: wrong library versions: " + ", ".join(wrong)
                 + "\n(see the pip line at the top of this script)")


check_versions()

import joblib  # noqa: E402
import lightgbm as lgb  # noqa: E402
import onnx  # noqa: E402
import onnxmltools  # noqa: E402
import onnxruntime as ort  # noqa: E402
import skl2onnx  # noqa: E402
import sklearn  # noqa: E402
import xgboost as xgb  # noqa: E402
from onnxmltools.convert.common.data_types import FloatTensorType as MLFloatTensorType  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType, StringTensorType  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor,  # noqa: E402
                              GradientBoostingClassifier, GradientBoostingRegressor,
                              HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                              RandomForestClassifier, RandomForestRegressor)
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT = HERE / "models"
TRAIN_PATH = REPO / "fixtures/churn/train/train.parquet"
FEATURES_PATH = REPO / "fixtures/churn/features/dt=2026-11-01/part-00000.parquet"
EXAMPLE_MODEL = REPO / "fixtures/churn/models/churn_lightgbm.txt"

NUM = ["tenure_months", "monthly_charges", "support_calls", "data_gb"]
CAT = ["plan", "region"]
SCHEMA = pa.schema([("id", pa.int64()), ("tenure_months", pa.int32()),
                    ("monthly_charges", pa.float64()), ("support_calls", pa.int64()),
                    ("data_gb", pa.float32()), ("plan", pa.string()), ("region", pa.string())])
N_ROWS = 300
N_SPECIAL = 30  # rows 0..29: nulls, unseen categories, zeros, extremes; then planted thresholds
MULTI_NAMES = ["churn", "heavy", "light"]

LGB_LIB = f"lightgbm {lgb.__version__}"
XGB_LIB = f"xgboost {xgb.__version__}"
ORT_LIB = f"onnxruntime {ort.__version__}"
LGB_TOL, ONNX_TOL = 1e-12, 1e-6  # XGBoost and ONNX: f32_tolerance()
skipped = []
worked_around = []
written = []


# --------------------------------------------------------------------------
# Training data and targets
# --------------------------------------------------------------------------

def f64(table, column):
    """A Parquet column as nightshift reads it for a model: float64, null -> NaN."""
    return pc.cast(table[column], pa.float64()).to_numpy(zero_copy_only=False)


def load_training():
    t = pq.read_table(TRAIN_PATH)
    rng = np.random.default_rng(20261206)
    X = pd.DataFrame({c: f64(t, c) for c in NUM})
    n = len(X)
    # The train file has nulls only in monthly_charges and data_gb; give the int columns some
    # too, so that models learn a missing-value direction for every numeric feature.
    for c in ("tenure_months", "support_calls"):
        X.loc[rng.random(n) < 0.02, c] = np.nan
    for c in CAT:
        X[c] = np.array(t[c].to_pylist(), dtype=object)
    churned = t["churned"].to_numpy().astype(np.int64)

    def filled(c):
        v = X[c].to_numpy()
        return np.where(np.isnan(v), np.nanmedian(v), v)

    mc, sc, ten, gb = filled("monthly_charges"), filled("support_calls"), filled("tenure_months"), filled("data_gb")
    y_reg = np.maximum(5 + 0.6 * mc + 4 * sc - 0.25 * ten + 12 * churned + rng.normal(0, 4, n), 1.0)
    y = {
        "binary": churned,
        # 3 classes: churned, else heavy / light data user.
        "multi": np.where(churned == 1, 0, np.where(gb >= np.median(gb), 1, 2)).astype(np.int64),
        "reg": y_reg,  # positive: also the gamma target
        "count": rng.poisson(np.exp(0.2 + 0.3 * np.minimum(sc, 6) + 0.6 * churned)).astype(np.float64),
        "tweedie": np.where(rng.random(n) < 0.35 + 0.4 * (1 - churned), 0.0, rng.gamma(2.0, y_reg / 40)),
        "prob": np.clip(0.15 + 0.6 * churned + 0.2 * rng.random(n) - 0.002 * ten, 0.0, 1.0),
    }
    # A copy with a few null categories, for the LightGBM categorical models.
    Xnull = X.copy()
    for c in CAT:
        v = Xnull[c].to_numpy().copy()
        v[rng.random(n) < 0.02] = None
        Xnull[c] = v
    return X, Xnull, y


X_TRAIN, X_TRAIN_CATNULL, Y = load_training()
CATS = {c: sorted(set(X_TRAIN[c])) for c in CAT}


def categorical(values, cats):
    codes = np.array([cats.index(v) if v in cats else -1 for v in values], dtype=np.int64)
    return pd.Categorical.from_codes(codes, categories=pd.Index(cats))


def with_categoricals(X):
    X = X.copy()
    for c in CAT:
        X[c] = categorical(list(X[c]), CATS[c])
    return X


# --------------------------------------------------------------------------
# Scoring input: specials plus values planted on the model's thresholds
# --------------------------------------------------------------------------

BASE = pq.read_table(FEATURES_PATH).select(SCHEMA.names).slice(0, N_ROWS).cast(SCHEMA)
INT_RANGE = {"tenure_months": (-2**31, 2**31 - 1), "support_calls": (-2**63, 2**63 - 1)}


def specials(cols, onnx_strings):
    null_str = "" if onnx_strings else None
    s = cols
    s["tenure_months"][1] = None
    s["support_calls"][2] = None
    s["monthly_charges"][3] = None
    s["data_gb"][4] = None
    s["plan"][5] = null_str
    s["region"][6] = null_str
    for c in NUM:
        s[c][7] = None
    s["plan"][7] = s["region"][7] = null_str
    s["plan"][8] = "gold"          # unseen
    s["region"][9] = "central"     # unseen
    s["plan"][10] = "Basic"        # unseen (case differs)
    s["plan"][11] = ""             # unseen (empty)
    s["region"][12] = " east"      # unseen (leading space)
    s["monthly_charges"][13] = 0.0
    s["monthly_charges"][14] = -0.0
    s["monthly_charges"][15] = 1e-36     # |x| <= 1e-35: LightGBM's zero
    s["monthly_charges"][16] = -1e-300   # float32 -0.0
    s["data_gb"][17] = 0.0
    s["data_gb"][18] = float(np.float32(1e-40))  # float32 subnormal
    s["tenure_months"][19] = 0
    s["support_calls"][20] = 0
    s["monthly_charges"][21] = 1e6
    s["monthly_charges"][22] = -1e6
    s["tenure_months"][23] = -5
    s["support_calls"][24] = 10**6
    s["data_gb"][25] = -1.5
    s["tenure_months"][26] = 2**31 - 1
    s["support_calls"][27] = -2**40
    # rows 0, 28, 29 untouched


def candidates(column, t):
    """Values to plant for threshold t in a column of the input's type."""
    kind = SCHEMA.field(column).type
    if kind == pa.float64():
        t32 = np.float32(t)
        vals = [t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf),
                float(t32), float(np.nextafter(t32, np.float32(-np.inf))),
                float(np.nextafter(t32, np.float32(np.inf)))]
    elif kind == pa.float32():
        t32 = np.float32(t)
        vals = [float(t32), float(np.nextafter(t32, np.float32(-np.inf))),
                float(np.nextafter(t32, np.float32(np.inf)))]
    else:
        lo, hi = INT_RANGE[column]
        if float(t).is_integer():
            vals = [int(t) - 1, int(t), int(t) + 1]
        else:
            vals = [math.floor(t), math.ceil(t)]
        return [v for v in vals if lo <= v <= hi]
    return [float(v) for v in vals if math.isfinite(v)]


def plant(cols, thresholds, seed):
    """Round-robin over features, thresholds in a seeded order, until the rows run out."""
    rng = np.random.default_rng(seed)
    queues = {}
    for c in NUM:
        ts = sorted(set(thresholds.get(c, ())))
        seen, q = set(), []
        for i in rng.permutation(len(ts)):
            group = [v for v in candidates(c, ts[i]) if v not in seen]
            seen.update(group)
            if group:
                q.append(group)
        queues[c] = q
    row, planted = N_SPECIAL, 0
    while row < N_ROWS and any(queues.values()):
        for c in NUM:
            if not queues[c] or row >= N_ROWS:
                continue
            group = queues[c][0]
            if row + len(group) > N_ROWS:
                queues[c] = []
                continue
            queues[c].pop(0)
            for v in group:
                cols[c][row] = v
                row += 1
                planted += 1
    return planted


def make_input(d, thresholds, seed, onnx_strings=False):
    cols = {c: BASE[c].to_pylist() for c in SCHEMA.names}
    specials(cols, onnx_strings)
    planted = plant(cols, thresholds, seed)
    table = pa.table({c: pa.array(cols[c], type=SCHEMA.field(c).type) for c in SCHEMA.names},
                     schema=SCHEMA)
    if onnx_strings:
        assert all(table[c].null_count == 0 for c in CAT)
    pq.write_table(table, d / "input.parquet")
    pq.write_table(table.slice(0, 1), d / "input-one-row.parquet")
    back = pq.read_table(d / "input.parquet")
    assert back.equals(table)
    return table, planted


def unknown_categories(table, columns):
    return sum(1 for c in columns for v in table[c].to_pylist() if v is not None and v not in CATS[c])


def tree_frame(table, features):
    """LightGBM/XGBoost input: float64 numerics, string columns as training-category Categoricals."""
    X = pd.DataFrame({c: f64(table, c) for c in features if c in NUM})
    for c in features:
        if c in CAT:
            X[c] = categorical(table[c].to_pylist(), CATS[c])
    return X[features]


# --------------------------------------------------------------------------
# expected.json
# --------------------------------------------------------------------------

def finite(rows):
    for r in rows:
        for v in r:
            assert math.isfinite(v), rows
    return rows


def write_expected(d, **doc):
    doc.setdefault("labels", None)
    doc.setdefault("features_flag", False)
    doc.setdefault("predicted", None)
    doc.setdefault("unknown_categories", None)
    order = ["format", "library", "task", "labels", "features", "features_flag", "tolerance",
             "output", "predicted", "unknown_categories", "notes"]
    doc = {k: doc[k] for k in order + [k for k in doc if k not in order]}
    lines = []
    for k, v in doc.items():
        if k in ("output", "predicted") and v is not None:
            body = "[\n  " + ",\n  ".join(json.dumps(r, allow_nan=False) for r in v) + "\n]"
        else:
            body = json.dumps(v, allow_nan=False)
        lines.append(f"{json.dumps(k)}: {body}")
    (d / "expected.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    written.append(d.name)


def f32_tolerance(output):
    """XGBoost and onnxruntime compute in float32: 1e-6 absolute for values up to 1, else about
    2^-20 of the largest |value| (a few float32 ulps), so large regression outputs need not be
    bit-exact float32 replicas (expf, summation order)."""
    top = max((abs(v) for r in output or [] for v in r), default=0.0)
    if top <= 1.0:
        return 1e-6
    x = top * 2.0 ** -20
    e = math.floor(math.log10(x))
    return float(f"{math.ceil(x / 10.0 ** e)}e{e}")  # rounded up to one significant digit


def case_dir(name):
    d = OUT / name
    d.mkdir(parents=True)
    return d


def classify(probs):
    """Argmax, first on ties."""
    return [int(np.argmax(r)) for r in probs]


def same(a, b, tol=0.0):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape and np.all(np.abs(a - b) <= tol), (a, b)


# --------------------------------------------------------------------------
# LightGBM
# --------------------------------------------------------------------------

LGB_BASE = dict(num_leaves=7, learning_rate=0.1, min_data_in_leaf=20, num_threads=1, seed=7,
                deterministic=True, force_row_wise=True, verbose=-1)


def lightgbm_thresholds(model_text, features, booster):
    """Numerical split thresholds per feature, read from the model text (exact doubles) and
    checked against booster.dump_model()."""
    out = {}
    body = model_text.split("end of trees")[0]
    for block in body.split("\nTree=")[1:]:
        kv = dict(line.split("=", 1) for line in block.splitlines()[1:] if "=" in line)
        if int(kv["num_leaves"]) < 2:
            continue
        for f, t, dt in zip(kv["split_feature"].split(), kv["threshold"].split(),
                            kv["decision_type"].split()):
            if int(dt) & 1 == 0:
                out.setdefault(features[int(f)], set()).add(float(t))
    dumped = {}

    def walk(node):
        if "split_feature" in node:
            if node["decision_type"] == "<=":
                dumped.setdefault(features[node["split_feature"]], set()).add(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    assert dumped == out, "dump_model thresholds differ from model.txt"
    return out


def lightgbm_case(name, params, y, task, *, rounds=20, features=NUM, categorical_cols=(),
                  numpy_names=False, labels=None, notes="", X=None, seed=0):
    d = case_dir(name)
    X = X_TRAIN if X is None else X
    Xt = X[features]
    if categorical_cols:
        Xt = Xt.copy()
        for c in categorical_cols:
            Xt[c] = pd.Categorical(list(Xt[c]), categories=pd.Index(CATS[c]))
    data = Xt.to_numpy(dtype=np.float64) if numpy_names else Xt
    booster = lgb.train({**LGB_BASE, **params}, lgb.Dataset(data, y), num_boost_round=rounds)
    booster.save_model(str(d / "model.txt"))
    b = lgb.Booster(model_file=str(d / "model.txt"))
    text = (d / "model.txt").read_text()
    thresholds = lightgbm_thresholds(text, features, b)
    table, planted = make_input(d, thresholds, seed)

    def feed(t):
        f = tree_frame(t, features)
        return f.to_numpy(dtype=np.float64) if numpy_names else f

    raw = b.predict(feed(table), num_threads=1)
    one = b.predict(feed(table.slice(0, 1)), num_threads=1)
    same(one, raw[:1])
    if task == "binary":
        output = [[1.0 - float(p), float(p)] for p in raw]
    elif task == "multiclass":
        output = [[float(v) for v in r] for r in raw]
    else:
        output = [[float(v)] for v in raw]
    write_expected(
        d, format="lightgbm", library=LGB_LIB, task=task, labels=labels, features=list(features),
        features_flag=numpy_names, tolerance=LGB_TOL, output=finite(output),
        predicted=classify(output) if task != "regression" else None,
        unknown_categories=unknown_categories(table, categorical_cols) if categorical_cols else None,
        notes=(notes + f" {planted} rows (from row {N_SPECIAL}) planted on/next to split thresholds."
               " Predictions from lgb.Booster(model_file=model.txt).predict(num_threads=1); numerics fed"
               " as float64 with NaN for null.").strip())
    return b


def lightgbm_cases():
    yb, ym = Y["binary"], Y["multi"]
    lightgbm_case("lightgbm_binary", dict(objective="binary"), yb, "binary", labels=[0, 1],
                  notes="Binary; output [1 - p, p] with p = predict(); p0 computed as 1.0 - p in float64.")
    lightgbm_case(
        "lightgbm_binary_categorical",
        dict(objective="binary", max_cat_to_onehot=2, min_data_per_group=10, cat_smooth=5,
             cat_l2=1.0), yb, "binary", features=NUM + CAT, categorical_cols=CAT, labels=[0, 1],
        X=X_TRAIN_CATNULL, seed=1,
        notes="plan and region as pandas categoricals (model.txt ends with pandas_categorical:, the"
              " category lists in code order = sorted strings). Training had ~2% null categories."
              " Input strings map to their index in pandas_categorical; null and unseen values"
              " ('gold', 'Basic', '', ' east', 'central') are code -1 -> NaN (LightGBM's own"
              " set_categories does the same). max_cat_to_onehot=2 so plan gets many-vs-many bitset"
              " splits.")
    lightgbm_case("lightgbm_multiclass", dict(objective="multiclass", num_class=3), ym, "multiclass",
                  rounds=10, labels=[0, 1, 2], seed=2,
                  notes="3 classes (0 churned, 1 heavy data user, 2 light); softmax; 10 iterations x 3 trees.")
    lightgbm_case("lightgbm_multiclassova", dict(objective="multiclassova", num_class=3), ym,
                  "multiclass", rounds=10, labels=[0, 1, 2], seed=3,
                  notes="One-vs-all: each class's probability is its own sigmoid, rows do not sum to 1.")
    lightgbm_case("lightgbm_regression", dict(objective="regression"), Y["reg"], "regression", seed=4,
                  notes="L2 regression on a synthetic positive target.")
    lightgbm_case("lightgbm_regression_sqrt", dict(objective="regression", reg_sqrt=True), Y["reg"],
                  "regression", seed=5,
                  notes="reg_sqrt=True: model.txt objective 'regression sqrt'; output sign(x) * x^2.")
    lightgbm_case("lightgbm_poisson", dict(objective="poisson"), Y["count"], "regression",
                  numpy_names=True, seed=6,
                  notes="Poisson (exp of the raw score). Trained from a numpy array: model.txt has"
                        " LightGBM's default names Column_0..Column_3, so import needs --features.")
    lightgbm_case("lightgbm_gamma", dict(objective="gamma"), Y["reg"], "regression", seed=7,
                  notes="Gamma (exp of the raw score).")
    lightgbm_case("lightgbm_tweedie", dict(objective="tweedie", tweedie_variance_power=1.3),
                  Y["tweedie"], "regression", seed=8,
                  notes="Tweedie, variance power 1.3, zero-inflated target (exp of the raw score).")
    lightgbm_case("lightgbm_xentropy", dict(objective="cross_entropy"), Y["prob"], "regression", seed=9,
                  notes="cross_entropy (xentropy) on a target in [0, 1]: output sigmoid(raw), one value.")
    lightgbm_case("lightgbm_rf", dict(objective="binary", boosting="rf", bagging_fraction=0.7,
                                      bagging_freq=1, feature_fraction=0.8), yb, "binary",
                  labels=[0, 1], seed=10,
                  notes="Random forest mode: average_output in model.txt, raw score = mean over trees,"
                        " then sigmoid.")
    lightgbm_case("lightgbm_zero_as_missing", dict(objective="binary", zero_as_missing=True), yb,
                  "binary", labels=[0, 1], seed=11,
                  notes="zero_as_missing=True: missing type Zero; NaN and |x| <= 1e-35 take the default"
                        " branch. Rows 13-20 hold 0, -0.0, 1e-36, -1e-300, float32 subnormal.")
    lightgbm_case("lightgbm_no_missing", dict(objective="binary", use_missing=False, sigmoid=0.7), yb,
                  "binary", labels=[0, 1], seed=12,
                  notes="use_missing=False: missing type None, NaN is treated as 0.0. Also sigmoid=0.7"
                        " (binary transform 1/(1+exp(-0.7 x))).")
    d = case_dir("lightgbm_linear")
    booster = lgb.train({**LGB_BASE, "objective": "regression", "linear_tree": True},
                        lgb.Dataset(X_TRAIN[NUM], Y["reg"]), num_boost_round=5)
    booster.save_model(str(d / "model.txt"))
    assert "is_linear=1" in (d / "model.txt").read_text()
    (d / "expected.json").write_text(json.dumps({"refused": "linear", "notes": "linear_tree=True model"
                                                 " (is_linear=1, leaf_coeff); import must refuse it."}) + "\n")
    written.append(d.name)


def example_model():
    """fixtures/churn/models/churn_lightgbm.txt: the example model of the docs."""
    t = pq.read_table(TRAIN_PATH)  # the train file as is (monthly_charges and data_gb have nulls)
    X = pd.DataFrame({c: f64(t, c) for c in NUM})
    for c in CAT:
        X[c] = pd.Categorical(t[c].to_pylist(), categories=pd.Index(CATS[c]))
    params = {**LGB_BASE, "objective": "binary", "num_leaves": 31, "learning_rate": 0.05}
    booster = lgb.train(params, lgb.Dataset(X, Y["binary"]), num_boost_round=100)
    EXAMPLE_MODEL.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(EXAMPLE_MODEL))


# --------------------------------------------------------------------------
# XGBoost
# --------------------------------------------------------------------------

XGB_BASE = dict(nthread=1, max_depth=3, eta=0.3, seed=7, tree_method="hist")


def xgboost_thresholds(booster, features):
    model = json.loads(booster.save_raw(raw_format="json"))
    out = {}
    gb = model["learner"]["gradient_booster"]
    gb = gb["gbtree"] if gb["name"] == "dart" else gb
    for tree in gb["model"]["trees"]:
        for left, feat, cond, kind in zip(tree["left_children"], tree["split_indices"],
                                          tree["split_conditions"], tree["split_type"]):
            if left != -1 and kind == 0:
                out.setdefault(features[feat], set()).add(float(np.float32(cond)))
    return out, model


def xgboost_case(name, params, y, task, *, rounds=20, features=NUM, files=("model.json",),
                 numpy_names=False, labels=None, kind="prob", notes="", seed=0):
    d = case_dir(name)
    cat = [c for c in features if c in CAT]
    Xt = with_categoricals(X_TRAIN[features]) if cat else X_TRAIN[features]
    data = Xt.to_numpy(dtype=np.float64) if numpy_names else Xt
    dtrain = xgb.DMatrix(data, y, enable_categorical=bool(cat), nthread=1)
    booster = xgb.train({**XGB_BASE, **params}, dtrain, num_boost_round=rounds)
    for f in files:
        booster.save_model(str(d / f))
    thresholds, model = xgboost_thresholds(booster, features)
    table, planted = make_input(d, thresholds, seed)

    def feed(t):
        f = tree_frame(t, features)
        return f.to_numpy(dtype=np.float64) if numpy_names else f

    preds = []
    for f in files:
        b = xgb.Booster(model_file=str(d / f))
        b.set_param({"nthread": 1})
        if kind == "class":
            p = b.predict(xgb.DMatrix(feed(table), enable_categorical=bool(cat), nthread=1))
            one = b.predict(xgb.DMatrix(feed(table.slice(0, 1)), enable_categorical=bool(cat), nthread=1))
        else:
            p = b.inplace_predict(feed(table))
            one = b.inplace_predict(feed(table.slice(0, 1)))
        same(one, p[:1])
        preds.append(p)
    for p in preds[1:]:
        same(p, preds[0])
    p = preds[0]
    predicted = None
    if kind == "class":
        output, predicted = None, [int(v) for v in p]
    elif task == "binary" and kind == "margin":
        output = [[float(v)] for v in p]
        predicted = [1 if v > 0 else 0 for v in p]
    elif task == "binary":
        output = [[1.0 - float(v), float(v)] for v in p]
    elif task == "multiclass":
        output = [[float(v) for v in r] for r in p]
    else:
        output = [[float(v)] for v in p]
    if output is not None:
        finite(output)
        if predicted is None and task != "regression":
            predicted = classify(output)
    base = model["learner"]["learner_model_param"]["base_score"]
    write_expected(
        d, format="xgboost", library=XGB_LIB, task=task, labels=labels, features=list(features),
        features_flag=numpy_names, tolerance=f32_tolerance(output), output=output, predicted=predicted,
        unknown_categories=unknown_categories(table, cat) if cat else None,
        notes=(notes + f" base_score in learner_model_param: {base!r}. {planted} rows planted on/next"
               " to split_conditions (float32). Predictions: Booster(model_file)."
               + ("predict(DMatrix)" if kind == "class" else "inplace_predict")
               + " on float64 columns (XGBoost compares in float32).").strip())


def xgboost_cases():
    yb, ym = Y["binary"], Y["multi"]
    xgboost_case("xgboost_binary", dict(objective="binary:logistic"), yb, "binary", labels=[0, 1],
                 files=("model.json", "model.ubj"),
                 notes="binary:logistic saved as both model.json and model.ubj (same predictions);"
                       " output [1 - p, p], p0 = 1.0 - p in float64.")
    xgboost_case("xgboost_logitraw", dict(objective="binary:logitraw"), yb, "binary", labels=[0, 1],
                 kind="margin", seed=1,
                 notes="binary:logitraw: predict() returns the raw margin, so output is ONE value per row"
                       " (the margin, not probabilities); predicted = 1 if margin > 0 else 0.")
    xgboost_case("xgboost_reg_logistic", dict(objective="reg:logistic"), Y["prob"], "regression", seed=2,
                 notes="reg:logistic on a target in [0, 1]: sigmoid of the margin, one value.")
    xgboost_case("xgboost_multi_softprob", dict(objective="multi:softprob", num_class=3), ym,
                 "multiclass", rounds=10, labels=[0, 1, 2], files=("model.ubj",), seed=3,
                 notes="multi:softprob, 3 classes, UBJSON only; tree_info gives each tree's class.")
    xgboost_case("xgboost_multi_softmax", dict(objective="multi:softmax", num_class=3), ym,
                 "multiclass", rounds=10, labels=[0, 1, 2], kind="class", seed=4,
                 notes="multi:softmax: XGBoost predicts the class index only, so output is null and"
                       " predicted is XGBoost's predict() (ties: XGBoost's argmax, first max).")
    xgboost_case("xgboost_regression", dict(objective="reg:squarederror"), Y["reg"], "regression", seed=5,
                 notes="reg:squarederror (identity).")
    xgboost_case("xgboost_poisson", dict(objective="count:poisson"), Y["count"], "regression",
                 numpy_names=True, seed=6,
                 notes="count:poisson (exp). Trained from a numpy array: no feature_names in the JSON,"
                       " so import needs --features.")
    xgboost_case("xgboost_gamma", dict(objective="reg:gamma"), Y["reg"], "regression", seed=7,
                 notes="reg:gamma (exp).")
    xgboost_case("xgboost_tweedie", dict(objective="reg:tweedie", tweedie_variance_power=1.3),
                 Y["tweedie"], "regression", seed=8, notes="reg:tweedie, variance power 1.3 (exp).")
    xgboost_case("xgboost_dart", dict(objective="binary:logistic", booster="dart", rate_drop=0.2,
                                      skip_drop=0.3), yb, "binary", labels=[0, 1], seed=9,
                 notes="DART booster: trees scaled by weight_drop at prediction.")
    xgboost_case("xgboost_categorical", dict(objective="binary:logistic", max_cat_to_onehot=1), yb,
                 "binary", features=NUM + CAT, labels=[0, 1], seed=10,
                 notes="enable_categorical with pandas category plan/region (feature_types 'c'); the"
                       " training categories are stored in gradient_booster.model.cats (enc: UTF-8"
                       " bytes + offsets per feature, sorted). Input strings map to their index in the"
                       " training categories; null and unseen strings are fed as missing (code -1)."
                       " XGBoost itself raises 'Found a category not in the training set' for most"
                       " unseen strings in a DataFrame, so this mapping is nightshift's choice."
                       " max_cat_to_onehot=1: partition splits (categories lists; in set -> right).")
    xgboost_case("xgboost_base_score", dict(objective="binary:logistic", base_score=0.3), yb, "binary",
                 labels=[0, 1], seed=11,
                 notes="Explicit base_score=0.3: stored as the array string '[3E-1]' (XGBoost >= 3.1),"
                       " a probability; the margin starts at logit(0.3).")
    d = case_dir("xgboost_legacy")
    # XGBoost 3.2 can no longer write the deprecated binary format (save_model('x.bin') writes
    # UBJSON), so forge its opening: "binf" + LearnerModelParamLegacy (base_score f32,
    # num_feature u32, num_class i32, ...; 136 bytes) + objective and booster names.
    param = struct.pack("<fIiiiiii", 0.5, 4, 0, 0, 0, 1, 7, 1).ljust(136, b"\0")
    names = b"".join(struct.pack("<Q", len(s)) + s for s in (b"binary:logistic", b"gbtree"))
    (d / "model.bin").write_bytes(b"binf" + param + names)
    (d / "expected.json").write_text(json.dumps({"refused": "legacy", "notes": "Forged legacy binary"
                                                 " header ('binf' magic); xgboost 3.2 cannot write or"
                                                 " read this format."}) + "\n")
    written.append(d.name)


# --------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------

def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # onnxmltools' LightGBM label output declares shape [1]: a warning per run
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_feed(sess, table, features):
    feed = {}
    inputs = sess.get_inputs()
    if len(inputs) == 1 and inputs[0].type == "tensor(float)":
        feed[inputs[0].name] = np.stack([f64(table, c) for c in features], axis=1).astype(np.float32)
        return feed
    for i in inputs:
        if i.type == "tensor(float)":
            feed[i.name] = f64(table, i.name).astype(np.float32).reshape(-1, 1)
        elif i.type == "tensor(double)":
            feed[i.name] = f64(table, i.name).reshape(-1, 1)
        elif i.type == "tensor(string)":
            values = table[i.name].to_pylist()
            assert None not in values, "null strings are not fed to onnxruntime"
            feed[i.name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            raise ValueError(f"input {i.name}: {i.type}")
    return feed


def run_onnx(sess, table, features, task, labels):
    outs = sess.run(None, onnx_feed(sess, table, features))
    if task == "regression":
        return [[float(v)] for v in np.asarray(outs[0]).reshape(-1)], None
    label_out, prob_out = outs[0], outs[1]
    if isinstance(prob_out, list):  # ZipMap: a list of {label: probability}
        probs = [[float(m[k]) for k in labels] for m in prob_out]
    else:
        probs = [[float(v) for v in r] for r in np.asarray(prob_out)]
    predicted = [v if isinstance(v, str) else int(v) for v in np.asarray(label_out).reshape(-1).tolist()]
    return probs, predicted


def sklearn_thresholds(model, features):
    trees = []
    if hasattr(model, "estimators_"):
        for e in np.asarray(model.estimators_, dtype=object).reshape(-1):
            trees.append(e.tree_)
    out = {}
    for t in trees:
        for f, th in zip(t.feature, t.threshold):
            if 0 <= f < len(features):
                out.setdefault(features[f], set()).add(float(th))
    return out


def onnx_opsets(model):
    return ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)


def onnx_case(name, onnx_model, task, labels, features, thresholds, *, features_flag=False,
              notes="", seed=0, converter="", reference=None):
    d = case_dir(name)
    # The converters name the graph with a random uuid and list opsets in set order: fix both,
    # so that the file is the same on every run.
    onnx_model.graph.name = name
    opsets = sorted(((o.domain, o.version) for o in onnx_model.opset_import))
    del onnx_model.opset_import[:]
    for domain, version in opsets:
        onnx_model.opset_import.add(domain=domain, version=version)
    onnx.checker.check_model(onnx_model)
    onnx.save_model(onnx_model, str(d / "model.onnx"))
    table, planted = make_input(d, thresholds, seed, onnx_strings=True)
    sess = session(d / "model.onnx")
    output, predicted = run_onnx(sess, table, features, task, labels)
    one, one_pred = run_onnx(sess, table.slice(0, 1), features, task, labels)
    same(one, output[:1], ONNX_TOL)
    if one != output[:1]:
        notes += (" onnxruntime scores row 0 alone slightly differently from row 0 in the batch (max"
                  f" |diff| {max(abs(a - b) for a, b in zip(one[0], output[0])):.3g}, float32 rounding);"
                  " output holds the batch values.")
    assert one_pred == (predicted[:1] if predicted is not None else None)
    if reference is not None:
        # Sanity check of the feeding: the fitted Python model agrees with onnxruntime on nearly
        # every row (not all: ONNX trees compare float32 against float32 thresholds).
        ref = np.asarray(reference(table), dtype=np.float64).reshape(len(output), -1)
        close = np.all(np.abs(ref - np.asarray(output)) <= 1e-4 * np.maximum(1, np.abs(ref)), axis=1)
        assert close.mean() > 0.8, (name, close.mean())
    ins = ", ".join(f"{i.name}: {i.type}" for i in sess.get_inputs())
    outs = ", ".join(f"{o.name}: {o.type}" for o in sess.get_outputs())
    has_strings = any(c in CAT for c in features)
    write_expected(
        d, format="onnx", library=ORT_LIB, task=task, labels=labels, features=list(features),
        features_flag=features_flag, tolerance=f32_tolerance(output), output=finite(output), predicted=predicted,
        unknown_categories=unknown_categories(table, [c for c in features if c in CAT]) if has_strings else None,
        notes=(f"{converter}. {notes} Inputs [{ins}]; outputs [{outs}]; opsets {onnx_opsets(onnx_model)}."
               f" {planted} rows planted on/next to split thresholds." +
               (" Null strings are not fed (onnxruntime's Python binding turns None into the string"
                " 'None'); the rows that are null elsewhere hold '' here, an unseen category, which"
                " OneHotEncoder(handle_unknown='ignore') encodes as all zeros." if has_strings else "")
               + " Predictions from onnxruntime, CPUExecutionProvider, one thread; float32 outputs"
               " written as exact doubles.").strip())


SKL_TYPES = [(c, FloatTensorType([None, 1])) for c in NUM] + [(c, StringTensorType([None, 1])) for c in CAT]


def sk_frame(X):
    X = X[NUM + CAT].copy()
    for c in NUM:
        X[c] = X[c].astype(np.float32)
    return X


def onnx_sklearn_case(name, model, y, task, *, scaler=False, zipmap=True, notes="", seed=0,
                      label_names=None):
    num = [("imp", SimpleImputer(strategy="median"))] + ([("sc", StandardScaler())] if scaler else [])
    pre = ColumnTransformer([("num", Pipeline(num), NUM),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), CAT)])
    pipe = Pipeline([("pre", pre), ("model", model)])
    yy = np.array(label_names, dtype=object)[y] if label_names else y
    pipe.fit(sk_frame(X_TRAIN), yy)
    options = {} if (task == "regression" or zipmap) else {id(pipe): {"zipmap": False}}
    conv = f"skl2onnx {skl2onnx.__version__} (scikit-learn {sklearn.__version__}) {type(model).__name__}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = convert_sklearn(pipe, initial_types=SKL_TYPES, options=options)
    except Exception as e:  # noqa: BLE001 - recorded, not faked
        cause = e.__cause__ or e.__context__
        msg = f"{type(e).__name__}: {str(e).splitlines()[0].split(' with name=')[0][:120]}"
        if cause is not None:
            msg += f" (caused by {type(cause).__name__}: {str(cause).splitlines()[0][:200]})"
        skipped.append((name, f"{conv} conversion failed: {msg}"))
        return
    labels = None
    if task != "regression":
        labels = [v if isinstance(v, str) else int(v) for v in pipe.classes_.tolist()]
    def reference(table):
        X = pd.DataFrame({c: f64(table, c).astype(np.float32) for c in NUM})
        for c in CAT:
            X[c] = np.array(table[c].to_pylist(), dtype=object)
        return pipe.predict(X) if task == "regression" else pipe.predict_proba(X)

    onnx_case(name, onx, task, labels, NUM + CAT, sklearn_thresholds(model, NUM), seed=seed,
              converter=conv, reference=reference,
              notes=(f"Pipeline(ColumnTransformer(SimpleImputer(median){' + StandardScaler' if scaler else ''}"
                     f" on numerics, OneHotEncoder(handle_unknown='ignore') on plan/region), "
                     f"{type(model).__name__}). Numeric inputs are float32 (skl2onnx's Imputer has no"
                     f" double kernel in onnxruntime)."
                     + ("" if task == "regression" else
                        " ZipMap on (probabilities are a sequence of maps; output here in label order)."
                        if zipmap else " ZipMap off (probabilities tensor).")
                     + " " + notes))


def with_skl2onnx_bool_fix(case, name, *args, **kwargs):
    """Runs an onnx_sklearn_case; if skl2onnx fails on a boolean node attribute (1.20.0 under
    scikit-learn 1.9.1 writes HistGradientBoosting's missing-value flags as bools, which
    onnx.helper refuses: "Expected an int, got a boolean"), records the failure and converts
    again with those flags cast to int, which is what the attribute is."""
    before = len(skipped)
    case(name, *args, **kwargs)
    if len(skipped) == before or "got a boolean" not in skipped[-1][1]:
        return
    failure = skipped.pop()[1]
    import skl2onnx.common.tree_ensemble as te
    original = te.add_node

    def add_node(*a, **k):
        flags = k.get("nodes_missing_value_tracks_true")
        if flags is not None:
            k["nodes_missing_value_tracks_true"] = (
                [int(v) for v in flags] if isinstance(flags, (list, tuple, np.ndarray)) else int(flags))
        return original(*a, **k)

    te.add_node = add_node
    try:
        notes = kwargs.pop("notes", "")
        case(name, *args, notes=(notes + f" Converted with a workaround: unpatched, {failure}; the"
                                 " boolean nodes_missing_value_tracks_true flags are cast to int"
                                 " before onnx.helper sees them.").strip(), **kwargs)
    finally:
        te.add_node = original
    worked_around.append((name, failure))


def onnx_cases():
    yb, ym, yr = Y["binary"], Y["multi"], Y["reg"]
    onnx_sklearn_case("onnx_logreg_binary", LogisticRegression(max_iter=1000), yb, "binary",
                      scaler=True, zipmap=True, seed=1)
    onnx_sklearn_case("onnx_logreg_multinomial", LogisticRegression(max_iter=1000), ym, "multiclass",
                      scaler=True, zipmap=True, label_names=MULTI_NAMES, seed=2,
                      notes="String class labels (churn, heavy, light); multinomial softmax.")
    onnx_sklearn_case("onnx_rf_classifier", RandomForestClassifier(n_estimators=10, max_depth=4,
                                                                    random_state=0, n_jobs=1),
                      yb, "binary", zipmap=False, seed=3)
    onnx_sklearn_case("onnx_extratrees_classifier", ExtraTreesClassifier(n_estimators=10, max_depth=4,
                                                                         random_state=0, n_jobs=1),
                      ym, "multiclass", zipmap=False, seed=4, notes="3 int classes.")
    onnx_sklearn_case("onnx_gb_classifier", GradientBoostingClassifier(n_estimators=20, max_depth=3,
                                                                        random_state=0),
                      yb, "binary", zipmap=False, seed=5)
    with_skl2onnx_bool_fix(onnx_sklearn_case, "onnx_hgb_classifier", HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=7,
                                                                            random_state=0),
                      yb, "binary", zipmap=False, seed=6)
    onnx_sklearn_case("onnx_rf_regressor", RandomForestRegressor(n_estimators=10, max_depth=4,
                                                                  random_state=0, n_jobs=1),
                      yr, "regression", seed=7)
    onnx_sklearn_case("onnx_extratrees_regressor", ExtraTreesRegressor(n_estimators=10, max_depth=4,
                                                                        random_state=0, n_jobs=1),
                      yr, "regression", seed=8)
    onnx_sklearn_case("onnx_gb_regressor", GradientBoostingRegressor(n_estimators=20, max_depth=3,
                                                                      random_state=0),
                      yr, "regression", seed=9)
    with_skl2onnx_bool_fix(onnx_sklearn_case, "onnx_hgb_regressor", HistGradientBoostingRegressor(max_iter=20, max_leaf_nodes=7,
                                                                          random_state=0),
                      yr, "regression", seed=10)

    # onnxmltools: one float32 tensor input, no feature names -> --features.
    Xn = X_TRAIN[NUM].to_numpy(dtype=np.float64)
    one_input = [("input", MLFloatTensorType([None, len(NUM)]))]
    conv = f"onnxmltools {onnxmltools.__version__}"
    clf = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, learning_rate=0.1, n_jobs=1,
                             random_state=7, deterministic=True, force_row_wise=True, verbose=-1)
    clf.fit(Xn, yb)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = onnxmltools.convert_lightgbm(clf, initial_types=one_input, zipmap=False)
        text = clf.booster_.model_to_string()
        onnx_case("onnx_lightgbm_binary", onx, "binary", [0, 1], NUM,
                  lightgbm_thresholds(text, NUM, clf.booster_), features_flag=True, seed=11,
                  reference=lambda t: clf.predict_proba(np.stack([f64(t, c) for c in NUM], axis=1)),
                  converter=f"{conv} convert_lightgbm of an LGBMClassifier (lightgbm {lgb.__version__})",
                  notes="One float32 tensor input [N, 4] in the order of features; ZipMap off."
                        " The label output declares shape [1] but holds N values."
                        " Thresholds are float32 in ONNX, so results differ from LightGBM's own"
                        " float64 predict near splits.")
    except Exception as e:  # noqa: BLE001
        skipped.append(("onnx_lightgbm_binary", f"{conv} convert_lightgbm failed: {type(e).__name__}: {e}"))
    xclf = xgb.XGBClassifier(n_estimators=10, max_depth=3, learning_rate=0.3, n_jobs=1, random_state=7,
                             tree_method="hist", objective="multi:softprob")
    xclf.fit(Xn, ym)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = onnxmltools.convert_xgboost(xclf, initial_types=one_input)
        onnx_case("onnx_xgboost_multiclass", onx, "multiclass", [0, 1, 2], NUM,
                  xgboost_thresholds(xclf.get_booster(), NUM)[0], features_flag=True, seed=12,
                  reference=lambda t: xclf.predict_proba(np.stack([f64(t, c) for c in NUM], axis=1)),
                  converter=f"{conv} convert_xgboost of an XGBClassifier (xgboost {xgb.__version__})",
                  notes="multi:softprob, 3 classes; one float32 tensor input [N, 4] in the order of"
                        " features.")
    except Exception as e:  # noqa: BLE001
        skipped.append(("onnx_xgboost_multiclass", f"{conv} convert_xgboost failed: {type(e).__name__}: {e}"))


def onnx_tree_ensemble_v5():
    """TreeEnsemble of ai.onnx.ml opset 5, which no converter here writes yet: built by hand with
    onnx.helper. Two trees over the four numeric features, branch modes LEQ, LT and GTE, NaN
    tracked to the true branch at the root, SUM of one target; onnxruntime scores it."""
    from onnx import TensorProto, helper, numpy_helper
    splits = np.array([40.5, 70.25, 2.0, 15.5], dtype=np.float32)
    node = helper.make_node(
        "TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml",
        tree_roots=[0, 3],
        nodes_featureids=[0, 1, 2, 3],
        # 0 BRANCH_LEQ, 1 BRANCH_LT, 2 BRANCH_GTE, 3 BRANCH_GT
        nodes_modes=numpy_helper.from_array(np.array([0, 1, 2, 3], dtype=np.uint8), name="nodes_modes"),
        nodes_splits=numpy_helper.from_array(splits, name="nodes_splits"),
        # tree 0: node 0 true -> node 1, false -> node 2; node 1 -> leaves 0, 1; node 2 -> leaves 2, 3
        # tree 1: node 3 -> leaves 4, 5
        nodes_truenodeids=[1, 0, 2, 4],
        nodes_trueleafs=[0, 1, 1, 1],
        nodes_falsenodeids=[2, 1, 3, 5],
        nodes_falseleafs=[0, 1, 1, 1],
        nodes_missing_value_tracks_true=[1, 0, 0, 1],
        leaf_targetids=[0, 0, 0, 0, 0, 0],
        leaf_weights=numpy_helper.from_array(
            np.array([1.5, -2.0, 3.25, 4.0, 10.0, -20.0], dtype=np.float32), name="leaf_weights"),
        n_targets=1, aggregate_function=1, post_transform=0)
    graph = helper.make_graph(
        [node], "onnx_tree_ensemble_v5",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, len(NUM)])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("ai.onnx.ml", 5)],
                              producer_name="onnx.helper", producer_version=onnx.__version__)
    model.ir_version = 10
    thresholds = {c: {float(t)} for c, t in zip(NUM, splits)}
    onnx_case("onnx_tree_ensemble_v5", model, "regression", None, NUM, thresholds,
              features_flag=True, seed=13, converter="built by hand with onnx.helper",
              notes="TreeEnsemble (ai.onnx.ml 5): modes LEQ, LT, GTE, GT; missing values tracked"
                    " to the true branch at both roots; one float32 tensor input [N, 4].")


# --------------------------------------------------------------------------
# Bad files
# --------------------------------------------------------------------------

def bad_files():
    d = case_dir("bad")
    lr = LogisticRegression(max_iter=1000).fit(X_TRAIN[["tenure_months"]].fillna(0).to_numpy(), Y["binary"])
    joblib.dump(lr, d / "model.pkl")
    text = (OUT / "lightgbm_binary/model.txt").read_bytes()
    cut = text.index(b"\nTree=3\n") + 60  # inside tree 3
    (d / "truncated_lightgbm.txt").write_bytes(text[:cut])
    onx = (OUT / "onnx_logreg_binary/model.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(onx[: len(onx) // 2])
    ubj = (OUT / "xgboost_binary/model.ubj").read_bytes()
    (d / "truncated.ubj").write_bytes(ubj[: len(ubj) // 2])
    (d / "README.md").write_text(
        "Files `nightshift model import` must reject with a clear error (written by make_models.py):\n\n"
        "- model.pkl: joblib.dump of a scikit-learn LogisticRegression (a pickle, never loaded).\n"
        "- truncated_lightgbm.txt: lightgbm_binary/model.txt cut inside Tree=3 (no `end of trees`).\n"
        "- truncated.onnx: the first half of onnx_logreg_binary/model.onnx.\n"
        "- truncated.ubj: the first half of xgboost_binary/model.ubj.\n")


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    lightgbm_cases()
    example_model()
    xgboost_cases()
    onnx_cases()
    onnx_tree_ensemble_v5()
    bad_files()
    lines = ["# Cases make_models.py could not write", ""]
    if skipped:
        lines += [f"- {name}: {why}" for name, why in skipped]
    else:
        lines.append("None.")
    if worked_around:
        lines += ["", "# Cases written around a converter bug", ""]
        lines += [f"- {name}: unpatched, {why}; written with the flags cast to int"
                  for name, why in worked_around]
    (OUT / "SKIPPED.md").write_text("\n".join(lines) + "\n")
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(written)} cases to {OUT} ({size / 1e6:.2f} MB) and {EXAMPLE_MODEL}")
    for name, why in worked_around:
        print(f"worked around: {name}: {why}")
    print("skipped:" if skipped else "skipped: none")
    for name, why in skipped:
        print(f"  {name}: {why}")


if __name__ == "__main__":
    main()
