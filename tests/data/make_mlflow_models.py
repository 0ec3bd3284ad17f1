#!/usr/bin/env python3
"""MLflow model directories, as MLflow's own flavors save them, for the MLflow registry tests.

Each case under tests/data/mlflow/<case>/ is what `mlflow.<flavor>.save_model` writes (the
MLmodel file, the model file, the environment files), made from a committed model of
tests/data/models (whose expected.json the Rust tests compare against: the same model). The
tests upload a directory to a real `mlflow server` as a logged model and register it
(tests/mlflow_register.py), exactly as `mlflow.<flavor>.log_model(...,
registered_model_name=...)` does, so the server needs no LightGBM or XGBoost at test time.

    target/models-venv/bin/pip install mlflow==3.17.2   # beside make_models.py's pins
    target/models-venv/bin/python tests/data/make_mlflow_models.py

Cases:
- lightgbm: a Booster, mlflow.lightgbm (model.lgb);
- xgboost_ubj: a Booster, mlflow.xgboost default model_format "xgb" (UBJSON);
- xgboost_json: the same with model_format="json";
- onnx: a scikit-learn forest converted by skl2onnx, mlflow.onnx, its initializers kept in an
  external data file (as mlflow.onnx.save_model does for large ones; threshold 0 here, so
  that the small committed model has one);
- sklearn: a scikit-learn pipeline, mlflow.sklearn (a pickle: refused);
- lightgbm_sklearn: an LGBMClassifier, mlflow.lightgbm (a pickle: refused).
"""
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"
OUT = ROOT / "mlflow"


def frame(case, columns):
    df = pq.read_table(MODELS / case / "input.parquet").to_pandas()
    return df[columns]


def main():
    import mlflow
    if mlflow.__version__ != "3.17.2":
        sys.exit(f"mlflow {mlflow.__version__}: want 3.17.2")
    import lightgbm as lgb
    import onnx
    import onnx.numpy_helper
    import xgboost as xgb
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    warnings.filterwarnings("ignore")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()

    booster = lgb.Booster(model_file=str(MODELS / "lightgbm_binary" / "model.txt"))
    df = frame("lightgbm_binary", booster.feature_name())
    mlflow.lightgbm.save_model(booster, OUT / "lightgbm", signature=infer_signature(df))

    xb = xgb.Booster()
    xb.load_model(str(MODELS / "xgboost_binary" / "model.json"))
    df = frame("xgboost_binary", xb.feature_names)
    mlflow.xgboost.save_model(xb, OUT / "xgboost_ubj", signature=infer_signature(df))
    mlflow.xgboost.save_model(xb, OUT / "xgboost_json", model_format="json",
                              signature=infer_signature(df))

    model = onnx.load(str(MODELS / "onnx_rf_classifier" / "model.onnx"))
    names = [i.name for i in model.graph.input]
    mlflow.onnx.save_model(model, OUT / "onnx", signature=infer_signature(frame("onnx_rf_classifier", names)))
    for i, t in enumerate(model.graph.initializer):
        # raw_data, which is what onnx moves to external files.
        model.graph.initializer[i].CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t), t.name))
    onnx.save_model(model, str(OUT / "onnx" / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)

    x = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 5.0], [4.0, 3.0]])
    y = np.array([0, 1, 0, 1])
    mlflow.sklearn.save_model(LogisticRegression().fit(x, y), OUT / "sklearn")
    mlflow.lightgbm.save_model(
        lgb.LGBMClassifier(n_estimators=2, min_child_samples=1, verbose=-1).fit(x, y),
        OUT / "lightgbm_sklearn")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
