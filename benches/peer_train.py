#!/usr/bin/env python3
"""Peer for the training row of `make bench`: scikit-learn fits ONLY the random forest.

    peer_train.py DATA OUT

Reads DATA/train/train.parquet, fits the same pipeline as ../shared/bench/baseline.py's `train`
(mean-impute the numeric columns, one-hot encode `plan`) with
RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=-1, random_state=0) on all rows,
and writes it to OUT with joblib. Time the whole process from outside (interpreter start,
imports, reading and writing included), as `nightshift model train` is timed.
Needs: numpy, pyarrow, pandas, scikit-learn, joblib.
"""
import sys
import time
from pathlib import Path

SHARED = (Path(__file__).resolve().parent.parent / ".." / "shared" / "bench").resolve()
sys.path.insert(0, str(SHARED))

import joblib  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from baseline import pipeline  # noqa: E402  (the peers' own preprocessing, not a copy of it)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data, out = sys.argv[1], sys.argv[2]
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    df = pq.read_table(f"{data}/train/train.parquet").to_pandas()
    numeric = [c for c in df.columns if c.startswith("f")]
    X, y = df[numeric + ["plan"]], df["label"]
    rf = pipeline(RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=-1, random_state=0), numeric)
    rf.fit(X, y)
    joblib.dump(rf, out)
    s = time.perf_counter() - t0
    print(f"rows={len(df)} seconds={s:.3f} rows_per_s={len(df) / s:.0f}")


if __name__ == "__main__":
    main()
