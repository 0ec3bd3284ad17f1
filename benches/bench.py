#!/usr/bin/env python3
"""`make bench`: nightshift and the peer pipelines of ../shared/bench on the same data, in one
run, on this machine. Whole processes are timed (start-up and model loading included), several
rounds, the order rotated each round; medians and ratios are printed, never one timing.

    python3 benches/bench.py [--rows 1000000] [--files 2] [--rounds 5] [--skip-rf]

Data, models and outputs live under target/bench/ and are reused by later runs.
"""
import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = (ROOT / ".." / "shared" / "bench").resolve()
WORK = ROOT / "target" / "bench"
NIGHTSHIFT = ROOT / "target" / "release" / "nightshift"
DAY = "2026-11-01"


def sh(cmd, env=None, quiet=True):
    out = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{out.stdout}\n{out.stderr}")
    return out.stdout


def timed(cmd, env=None):
    """Wall seconds and peak RSS (MiB) of one whole process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def peer_env():
    # OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow a current numpy; unset them for the peers only.
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def job(name, model, drift=True):
    return f"""name = "{name}"
schedule = "0 3 * * *"
[input]
uri = "{WORK}/data/features/dt={{date}}/"
[model]
name = "{model}"
version = 1
[output]
uri = "{WORK}/out/scores/{name}/dt={{date}}/"
passthrough = ["id"]
[drift]
enabled = {"true" if drift else "false"}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per file")
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-rf", action="store_true", help="leave out the random forests")
    a = ap.parse_args()

    data = WORK / "data"
    stamp = WORK / f"data-{a.rows}x{a.files}"
    if not stamp.exists():
        shutil.rmtree(WORK, ignore_errors=True)
        data.mkdir(parents=True)
        print(f"generating {a.files} x {a.rows} rows ...", flush=True)
        sh([sys.executable, SHARED / "gen_data.py", data, "--rows", str(a.rows), "--files", str(a.files), "--days", "1"])
        print("training the peers' models (scikit-learn) ...", flush=True)
        sh([sys.executable, SHARED / "baseline.py", "train", data], env=peer_env())
        stamp.touch()
    jobs = WORK / "jobs"
    jobs.mkdir(exist_ok=True)
    (jobs / "nightshift.toml").write_text(
        f'registry = "{WORK}/registry/"\nstate = "{WORK}/out/state/"\nreports = "{WORK}/out/reports/"\n'
    )
    models = [("bench_lr", "logistic", [])]
    if not a.skip_rf:
        models.append(("bench_rf", "random-forest", ["--trees", "100", "--max-depth", "10"]))
    for name, algo, extra in models:
        if not (WORK / "registry" / name / "1" / "manifest.json").exists():
            print(f"training {name} with nightshift ...", flush=True)
            t0 = time.perf_counter()
            sh([NIGHTSHIFT, "model", "train", "--data", f"{data}/train/", "--target", "label", "--algorithm", algo,
                "--name", name, "--exclude", "id", "--registry", f"{WORK}/registry/", *extra])
            print(f"  {time.perf_counter() - t0:.1f} s", flush=True)
    (jobs / "lr.toml").write_text(job("lr", "bench_lr"))
    (jobs / "lr_nodrift.toml").write_text(job("lr_nodrift", "bench_lr", drift=False))
    if not a.skip_rf:
        (jobs / "rf.toml").write_text(job("rf", "bench_rf"))

    out = WORK / "out"
    out.mkdir(exist_ok=True)
    base = [sys.executable, SHARED / "baseline.py"]
    ns = lambda j: [NIGHTSHIFT, "run", j, "--date", DAY, "--jobs", jobs]
    pipelines = [
        ("nightshift, logistic regression", ns("lr"), None),
        ("nightshift, logistic regression, no drift report", ns("lr_nodrift"), None),
        ("pyarrow + scikit-learn, logistic regression", base + ["score", data, DAY, out / "peer_lr.parquet", "--model", "lr"], peer_env()),
        ("polars + scikit-learn, logistic regression", base + ["score", data, DAY, out / "peer_lr_pl.parquet", "--model", "lr", "--engine", "polars"], peer_env()),
        ("DuckDB SQL, logistic regression", base + ["duckdb", data, DAY, out / "peer_duck.parquet"], peer_env()),
        ("pyarrow I/O floor (no model)", base + ["copy", data, DAY, out / "peer_copy.parquet"], peer_env()),
    ]
    if not a.skip_rf:
        pipelines += [
            ("nightshift, random forest 100 x depth 10", ns("rf"), None),
            ("pyarrow + scikit-learn, random forest 100 x depth 10", base + ["score", data, DAY, out / "peer_rf.parquet", "--model", "rf"], peer_env()),
        ]
    results = {name: [] for name, _, _ in pipelines}
    for r in range(a.rounds):
        order = pipelines[r % len(pipelines):] + pipelines[: r % len(pipelines)]
        for name, cmd, env in order:
            results[name].append(timed(cmd, env))
        print(f"round {r + 1}/{a.rounds} done", flush=True)

    med = {n: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v)) for n, v in results.items()}
    rows = a.rows * a.files
    lines = [
        f"Measured {dt.date.today()} on {platform.node()}: {os.cpu_count()} cores, {platform.machine()}, "
        f"{a.files} files x {a.rows:,} rows ({rows:,} rows, 20 float64 features + a 4-value string), "
        f"whole processes, median of {a.rounds} rounds in rotated order.",
        "",
        "| pipeline | wall s | rows/s | peak RSS MiB | peer wall / nightshift wall |",
        "|---|---|---|---|---|",
    ]
    ref = {"logistic": med["nightshift, logistic regression"][0]}
    if not a.skip_rf:
        ref["forest"] = med["nightshift, random forest 100 x depth 10"][0]
    for name, _, _ in pipelines:
        wall, rss = med[name]
        kind = "forest" if "forest" in name else "logistic"
        ratio = "" if name.startswith("nightshift") or "floor" in name else f"{wall / ref[kind]:.2f}x"
        lines.append(f"| {name} | {wall:.2f} | {rows / wall:,.0f} | {rss:.0f} | {ratio} |")
    text = "\n".join(lines)
    print("\n" + text)
    (WORK / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
