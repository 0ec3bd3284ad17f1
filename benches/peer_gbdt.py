#!/usr/bin/env python3
"""Gradient-boosted peers of `make bench` (issue 20): train the models once, then score the day
with LightGBM, XGBoost or onnxruntime, as a user would without nightshift.

    peer_gbdt.py train DATA [--force]
    peer_gbdt.py lightgbm DATA DAY OUT --model lgb_500.txt      pyarrow + Booster.predict
    peer_gbdt.py xgboost  DATA DAY OUT --model xgb_500.json     pyarrow + Booster.inplace_predict
    peer_gbdt.py onnx     DATA DAY OUT --model lgb_500.onnx     pyarrow + onnxruntime

`train` reads DATA/train/train.parquet (f00..f19 float64 with nulls left as missing, `plan` as a
pandas category) and writes next to lr.joblib, once (again with --force):

  lgb_1000.txt   LightGBM binary, 1,000 trees of 63 leaves (learning rate 0.05, seed 0,
                 deterministic, no early stopping)
  lgb_500.txt    its first 500 trees: the same model as 500 rounds of the same training
  lgb_500.onnx   lgb_500.txt through onnxmltools.convert_lightgbm (zipmap off)
  xgb_500.json   XGBoost binary:logistic, 500 trees of at most 63 leaves (hist, lossguide,
                 max_depth 0 = unbounded like LightGBM's leaf-wise trees, `plan` categorical)
  xgb_500.onnx   xgb_500.json through onnxmltools.convert_xgboost (features renamed f0..f20,
                 the names that converter reads)
  gbdt.json      the input columns, `plan`'s training categories, the conversions' checks
                 (largest |ONNX - native| probability on 20,000 training rows)

A conversion that fails writes NAME.onnx.failed (the error) instead, and `train` still exits 0:
the bench shows that row as failed.

Every scoring command reads the day's Parquet files with pyarrow (`plan` dictionary-encoded),
makes `plan` a pandas category with the training categories, predicts with every core
(`num_threads` / `nthread` / `intra_op_num_threads`), and writes `id, score, prediction` as zstd
Parquet, like ../shared/bench/baseline.py's peers; it prints one line: rows, seconds, rows/s.
The ONNX models take one float32 matrix whose last column is `plan`'s category code, as
LightGBM sees it (an unknown category is NaN, LightGBM's code -1). Time whole processes.
Needs: numpy, pyarrow, pandas, lightgbm, xgboost, onnxruntime; onnxmltools and onnx to train.
"""
import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
SEED = 0
LEAVES = 63
RATE = 0.05
CAT = "plan"
FILES = {
    "lgb": "lgb_500.txt", "lgb1000": "lgb_1000.txt", "lgb_onnx": "lgb_500.onnx",
    "xgb": "xgb_500.json", "xgb_onnx": "xgb_500.onnx", "meta": "gbdt.json",
}


def read_frame(paths, features, categories):
    """The columns as a pandas frame (plan a category with the training categories) and `id`."""
    t = pq.read_table(paths, columns=["id"] + features, read_dictionary=[CAT])
    df = t.select(features).to_pandas()
    df[CAT] = df[CAT].cat.set_categories(categories)
    return df, t["id"]


def day_files(data, day):
    fs = sorted(glob.glob(f"{data}/features/dt={day}/*.parquet"))
    if not fs:
        sys.exit(f"no partition files for dt={day}")
    return fs


def write(out, ids, proba):
    proba = np.asarray(proba, dtype=np.float64)
    t = pa.table({"id": ids, "score": pa.array(proba), "prediction": pa.array((proba >= 0.5).astype(np.int8))})
    pq.write_table(t, out, compression="zstd")


def report(n, t0):
    s = time.perf_counter() - t0
    print(f"rows={n} seconds={s:.3f} rows_per_s={n / s:.0f}")


def onnx_matrix(df):
    """float32 [n, features]: the numeric columns as they are (NaN for nulls), `plan` as its code."""
    x = np.empty((len(df), df.shape[1]), dtype=np.float32)
    for j, c in enumerate(df.columns):
        if c == CAT:
            codes = df[c].cat.codes.to_numpy().astype(np.float32)
            codes[codes < 0] = np.nan
            x[:, j] = codes
        else:
            x[:, j] = df[c].to_numpy(dtype=np.float64, na_value=np.nan)
    return x


# ---------------------------------------------------------------------------------------- train

def train(a):
    """Each file is made once: a missing one (or all, with --force) is made again; a conversion
    that failed (NAME.onnx.failed) is tried again too."""
    data = Path(a.data)
    paths = {k: data / v for k, v in FILES.items()}
    if a.force:
        for p in paths.values():
            p.unlink(missing_ok=True)
    for k in ("lgb_onnx", "xgb_onnx"):
        Path(f"{paths[k]}.failed").unlink(missing_ok=True)
    if all(p.exists() for p in paths.values()):
        print("gbdt models already trained")
        return

    import pandas as pd

    df = pq.read_table(data / "train" / "train.parquet").to_pandas()
    features = [c for c in df.columns if c.startswith("f")] + [CAT]
    categories = sorted(df[CAT].dropna().unique().tolist())
    X = df[features].copy()
    X[CAT] = pd.Categorical(X[CAT], categories=categories)
    y = df["label"].to_numpy()
    meta = {"features": features, "categories": {CAT: categories}, "trees": {}, "onnx_check": {}}
    if paths["meta"].exists():
        meta.update({k: v for k, v in json.loads(paths["meta"].read_text()).items() if k in ("trees", "onnx_check")})
    paths["meta"].unlink(missing_ok=True)  # written last: its presence means every step ran
    sample = X.iloc[:20_000]

    import lightgbm as lgb

    if not (paths["lgb"].exists() and paths["lgb1000"].exists()):
        paths["lgb_onnx"].unlink(missing_ok=True)
        t0 = time.perf_counter()
        params = dict(objective="binary", num_leaves=LEAVES, learning_rate=RATE, seed=SEED, deterministic=True,
                      force_row_wise=True, num_threads=CORES, verbose=-1)
        booster = lgb.train(params, lgb.Dataset(X, y, categorical_feature=[CAT]), num_boost_round=1000)
        # Boosting is sequential and nothing here depends on the total: the first 500 trees are
        # the model 500 rounds would give, so one training serves both sizes.
        booster.save_model(paths["lgb1000"])
        booster.save_model(paths["lgb"], num_iteration=500)
        print(f"LightGBM: 1,000 trees in {time.perf_counter() - t0:.1f} s", flush=True)
    lgb500 = lgb.Booster(model_file=str(paths["lgb"]))
    meta["trees"]["lightgbm"] = leaves(lgb500.dump_model()["tree_info"], lambda t: t["num_leaves"])
    print(f"LightGBM 500-tree model: {meta['trees']['lightgbm']}", flush=True)

    import xgboost as xgb

    if not paths["xgb"].exists():
        paths["xgb_onnx"].unlink(missing_ok=True)
        t0 = time.perf_counter()
        dtrain = xgb.DMatrix(X, label=y, enable_categorical=True, nthread=CORES)
        xparams = dict(objective="binary:logistic", tree_method="hist", grow_policy="lossguide",
                       max_leaves=LEAVES, max_depth=0, eta=RATE, seed=SEED, nthread=CORES)
        xgb.train(xparams, dtrain, num_boost_round=500).save_model(paths["xgb"])
        print(f"XGBoost: 500 trees in {time.perf_counter() - t0:.1f} s", flush=True)
    xbooster = xgb.Booster(model_file=str(paths["xgb"]))
    xbooster.set_param({"nthread": CORES})
    dumps = [json.loads(d) for d in xbooster.get_dump(dump_format="json")]
    meta["trees"]["xgboost"] = leaves(dumps, count_xgb_leaves)
    print(f"XGBoost model: {meta['trees']['xgboost']}", flush=True)

    if not paths["lgb_onnx"].exists():
        convert(paths["lgb_onnx"], lambda: lgb_to_onnx(lgb500, len(features)), sample,
                lgb500.predict(sample, num_threads=CORES), meta, "lightgbm")
    if not paths["xgb_onnx"].exists():
        convert(paths["xgb_onnx"], lambda: xgb_to_onnx(xbooster, len(features)), sample,
                xbooster.inplace_predict(sample), meta, "xgboost")
    paths["meta"].write_text(json.dumps(meta, indent=1) + "\n")


def leaves(trees, count):
    n = [count(t) for t in trees]
    return {"trees": len(n), "leaves_min": min(n), "leaves_max": max(n), "leaves_mean": round(sum(n) / len(n), 1)}


def count_xgb_leaves(node):
    return 1 if "leaf" in node else sum(count_xgb_leaves(c) for c in node["children"])


def lgb_to_onnx(booster, n):
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType
    return convert_lightgbm(booster, initial_types=[("input", FloatTensorType([None, n]))], zipmap=False)


def xgb_to_onnx(booster, n):
    """onnxmltools reads XGBoost's feature names as f0, f1, ...: a copy renamed so (the input is
    positional anyway; `plan` stays categorical, its splits become chains of BRANCH_EQ)."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    renamed = booster.copy()
    renamed.feature_names = [f"f{i}" for i in range(n)]
    return convert_xgboost(renamed, initial_types=[("input", FloatTensorType([None, n]))])


def convert(path, make, sample, expect, meta, which):
    """Writes the ONNX model and checks it against the native probabilities, or PATH.failed."""
    t0 = time.perf_counter()
    try:
        model = make()
        path.write_bytes(model.SerializeToString())
        got = onnx_predict(session(path), onnx_matrix(sample))
        diff = float(np.max(np.abs(got - expect)))
        meta["onnx_check"][which] = {"max_abs_diff": diff}
        print(f"{path.name}: converted in {time.perf_counter() - t0:.1f} s, largest |ONNX - {which}| "
              f"probability on {len(sample):,} training rows {diff:.2e}", flush=True)
        if not diff < 1e-3:
            raise ValueError(f"the ONNX model disagrees with {which}: largest difference {diff:.3g}")
    except Exception as e:  # any converter or runtime error: the bench shows the row as failed
        path.unlink(missing_ok=True)
        reason = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
        Path(f"{path}.failed").write_text(reason + "\n")
        meta["onnx_check"][which] = {"failed": reason}
        print(f"{path.name}: conversion failed: {reason}", flush=True)


# ---------------------------------------------------------------------------------------- score

def session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = CORES
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_predict(sess, x):
    outs = sess.get_outputs()
    # zipmap off: (label, probabilities [n, 2]); XGBoost's converter names them the same way
    name = next((o.name for o in outs if "prob" in o.name), outs[-1].name)
    (p,) = sess.run([name], {sess.get_inputs()[0].name: x})
    return p[:, 1] if p.ndim == 2 else p


def meta_of(data):
    return json.loads((Path(data) / FILES["meta"]).read_text())


def score_lightgbm(a):
    t0 = time.perf_counter()
    import lightgbm as lgb
    booster = lgb.Booster(model_file=a.model)
    features = booster.feature_name()
    df, ids = read_frame(day_files(a.data, a.day), features, booster.pandas_categorical[0])
    proba = booster.predict(df, num_threads=CORES)
    write(a.out, ids, proba)
    report(len(df), t0)


def score_xgboost(a):
    t0 = time.perf_counter()
    import xgboost as xgb
    meta = meta_of(a.data)
    booster = xgb.Booster(model_file=a.model)
    booster.set_param({"nthread": CORES})
    df, ids = read_frame(day_files(a.data, a.day), meta["features"], meta["categories"][CAT])
    proba = booster.inplace_predict(df)
    write(a.out, ids, proba)
    report(len(df), t0)


def score_onnx(a):
    t0 = time.perf_counter()
    meta = meta_of(a.data)
    sess = session(a.model)
    df, ids = read_frame(day_files(a.data, a.day), meta["features"], meta["categories"][CAT])
    proba = onnx_predict(sess, onnx_matrix(df))
    write(a.out, ids, proba)
    report(len(df), t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train")
    p.add_argument("data")
    p.add_argument("--force", action="store_true", help="train again even if the models exist")
    for name in ("lightgbm", "xgboost", "onnx"):
        p = sub.add_parser(name)
        p.add_argument("data"); p.add_argument("day"); p.add_argument("out")
        p.add_argument("--model", required=True)
    a = ap.parse_args()
    {"train": train, "lightgbm": score_lightgbm, "xgboost": score_xgboost, "onnx": score_onnx}[a.cmd](a)


if __name__ == "__main__":
    main()
