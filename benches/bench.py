#!/usr/bin/env python3
"""`make bench`: nightshift and the peer pipelines of ../shared/bench on the same data, in one
run, on this machine, and every performance target of issue 11 checked against the result.

Method, for every timed row: whole processes are timed (interpreter or binary start-up, imports
and model loading included), several rounds, the order of the rows shuffled each round, and the
median wall time and median peak RSS (ru_maxrss of the process) reported, never one timing.

    python3 benches/bench.py [--rows 1000000] [--files 2] [--rounds 5] [--retrain]
                             [--skip-rf] [--skip-train] [--train-rounds 3]
                             [--skip-s3] [--s3-port 8015]
                             [--skip-big] [--big-rounds 2]
                             [--skip-gbdt | --only-gbdt]

NIGHTSHIFT_BIN=PATH runs another nightshift binary than target/release/nightshift.

Rows of the pipeline table (the day: FILES x ROWS rows of 20 float64 features and a 4-value
string; every scoring pipeline writes id, score, prediction as zstd Parquet):

  nightshift, logistic regression                    `nightshift run`, drift report on
  nightshift, logistic regression, no drift report   the same, [drift] enabled = false
  nightshift I/O floor                               the same job with a `prior` model (no
                                                     arithmetic, no feature encoding, the same
                                                     projected columns), drift off; skipped
                                                     with a note if the binary has no `prior`
  pyarrow / polars + scikit-learn, DuckDB SQL,       the peers of ../shared/bench/baseline.py
  pyarrow I/O floor
  nightshift / scikit-learn, random forest           scoring with 100 trees of depth 10
  nightshift / scikit-learn, train random forest     training it on the 100k training rows, a
                                                     fresh scratch registry every round
                                                     (--train-rounds rounds, benches/peer_train.py)
  nightshift, logistic regression, S3 in and out     the drift job with input and output on a
                                                     private s3s-fs on 127.0.0.1:--s3-port
                                                     (registry, state and reports local)
  boto3 download of the day (reference)              benches/s3_peer.py download: list and fetch
                                                     the same two objects from the same server
  nightshift, logistic regression, 10x day           the drift job on a day 10 times larger
                                                     (10 x FILES files of ROWS rows, the date
                                                     2026-11-02, generated once: about 3.7 GB and
                                                     a few minutes at the default size),
                                                     --big-rounds rounds

Gradient-boosted rows (issue 20; group "gbdt", --rounds rounds, after the training rows;
--skip-gbdt leaves them out, --only-gbdt runs nothing else): models trained once per data set by
benches/peer_gbdt.py train (LightGBM and XGBoost, 500 trees of 63 leaves, `plan` categorical),
imported with `nightshift model import` once:

  nightshift, LightGBM 500 x 63 leaves,              `nightshift run`, drift off (the pure-scoring
    no drift report                                  comparison; imported models have no drift
                                                     reference) of lgb_500.txt
  pyarrow + LightGBM predict                         peer_gbdt.py lightgbm: Booster.predict,
                                                     num_threads = cores
  pyarrow + onnxruntime, LightGBM ... as ONNX        peer_gbdt.py onnx: onnxmltools.convert_lightgbm
                                                     (zipmap off), intra_op_num_threads = cores
  nightshift / pyarrow + XGBoost inplace_predict /   the same three for xgb_500.json (hist,
    onnxruntime, XGBoost 500 x 63 leaves             lossguide, max_leaves 63, nthread = cores;
                                                     onnxmltools.convert_xgboost)
  nightshift, LightGBM 1,000 x 63 leaves             the LightGBM job with 1,000 trees, for its
                                                     peak RSS

A model nightshift cannot import, an ONNX conversion that failed, or a process that fails in a
round leaves its row in the table as "failed" (its targets too), with the reason in the notes.

Then a second table, "Targets (issues 11 and 20)", computes each target's ratio from the medians and
says met / NOT met (or "not run" when its rows were skipped). Both tables go to
target/bench/results.md. See docs/benchmarks.md.

Everything lives under target/bench/: each data set in its own folder
(sets/ROWSxFILES[-tTRAIN_ROWS]/ with data, registry, jobs and outputs, reused by later runs;
switching sizes never deletes another size's data), the 10x day in sets/big-..., the S3
server's data in s3/ (wiped and refilled each run; the server is stopped at the end, even on
failure).
"""
import argparse
import datetime as dt
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ROOT / "benches"
SHARED = (ROOT / ".." / "shared" / "bench").resolve()
WORK = ROOT / "target" / "bench"
# NIGHTSHIFT_BIN: another build of the binary (a path), for developing the bench itself.
NIGHTSHIFT = Path(os.environ.get("NIGHTSHIFT_BIN") or ROOT / "target" / "release" / "nightshift").resolve()
DAY = "2026-11-01"
BIG_DAY = "2026-11-02"
DEFAULT_TRAIN_ROWS = 100_000
# Throwaway credentials for the private, loopback-only S3 server.
S3_ACCESS_KEY = "nightshift-bench"
S3_SECRET_KEY = "nightshift-bench-secret"
S3_BUCKET = "nightshift-bench"
S3_PREFIX = f"features/dt={DAY}/"

LR = "nightshift, logistic regression"
LR_NODRIFT = "nightshift, logistic regression, no drift report"
NS_FLOOR = "nightshift I/O floor (prior model, no drift report)"
PA_LR = "pyarrow + scikit-learn, logistic regression"
PL_LR = "polars + scikit-learn, logistic regression"
DUCK = "DuckDB SQL, logistic regression"
PA_FLOOR = "pyarrow I/O floor (no model)"
NS_RF = "nightshift, random forest 100 x depth 10"
SK_RF = "pyarrow + scikit-learn, random forest 100 x depth 10"
NS_TRAIN = "nightshift, train random forest 100 x depth 10"
SK_TRAIN = "scikit-learn, train random forest 100 x depth 10"
S3_NS = "nightshift, logistic regression, S3 in and out"
S3_BOTO = "boto3 download of the day (reference)"
BIG_NS = "nightshift, logistic regression, 10x day"
# issue 20: gradient-boosted trees, 500 trees of 63 leaves (benches/peer_gbdt.py)
NS_LGB = "nightshift, LightGBM 500 x 63 leaves, no drift report"
PY_LGB = "pyarrow + LightGBM predict, 500 x 63 leaves"
ORT_LGB = "pyarrow + onnxruntime, LightGBM 500 x 63 leaves as ONNX"
NS_XGB = "nightshift, XGBoost 500 x 63 leaves, no drift report"
PY_XGB = "pyarrow + XGBoost inplace_predict, 500 x 63 leaves"
ORT_XGB = "pyarrow + onnxruntime, XGBoost 500 x 63 leaves as ONNX"
NS_LGB1000 = "nightshift, LightGBM 1,000 x 63 leaves, no drift report"

# name, command, environment (None: inherit), rows it processes, the nightshift row a peer's
# wall time is divided by in the pipeline table (None: no ratio there), and what to do before
# each timing, untimed (None: nothing)
Row = namedtuple("Row", "name cmd env rows vs prep", defaults=(None,))


class Failed(Exception):
    pass


def sh(cmd, env=None, check=True):
    out = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    if out.returncode != 0 and check:
        raise Failed(f"failed: {' '.join(map(str, cmd))}\n{out.stdout}\n{out.stderr}")
    return out


def timed(cmd, env=None):
    """Wall seconds and peak RSS (MiB) of one whole process."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty stderr cannot block it
        t0 = time.perf_counter()
        p = subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            _, status, usage = os.wait4(p.pid, 0)
        except BaseException:  # SIGTERM or Ctrl-C: leave no timed process behind
            p.kill()
            p.wait()
            raise
        wall = time.perf_counter() - t0
        p.returncode = status
        if status != 0:
            err.seek(0)
            raise Failed(f"failed: {' '.join(map(str, cmd))}\n{err.read().decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024


def rounds(rows, n, label, failed=None):
    """Every row once per round, in an order shuffled each round; {name: [(wall, rss)]}.

    Shuffled, not rotated: a rotation keeps each row behind the same row every round, so the
    row after the heaviest peer (2 GB, 12 s of both cores) paid for it in every round. The
    shuffles are seeded by the round: a rerun uses the same orders.

    Without FAILED, a failing process ends the bench. With it (a dict), a row whose process
    fails is recorded there (name: reason), left out of the later rounds and of the medians."""
    results = {r.name: [] for r in rows}
    for i in range(n):
        order = [r for r in rows if failed is None or r.name not in failed]
        random.Random(f"{label} {i}").shuffle(order)
        for r in order:
            if r.prep:
                r.prep()
            try:
                results[r.name].append(timed(r.cmd, r.env))
            except Failed as e:
                if failed is None:
                    raise
                failed[r.name] = f"failed in round {i + 1}: {reason(e)}"
                print(f"note: {r.name}: {failed[r.name]}", flush=True)
        print(f"{label}: round {i + 1}/{n} done, in this order:", flush=True)
        for r in order:
            t = "failed" if failed is not None and r.name in failed else f"{results[r.name][-1][0]:7.2f} s"
            print(f"  {t:>9}  {r.name}", flush=True)
    return {name: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v), len(v))
            for name, v in results.items() if v and (failed is None or name not in failed)}


def reason(e):
    """The telling line(s) of a Failed: the last line of a Python traceback, else the first
    lines of the process's output."""
    lines = [l.strip() for l in str(e).splitlines()[1:] if l.strip()]
    if any(l.startswith("Traceback") for l in lines):
        lines = lines[-1:]
    return " / ".join(lines[:3])[:400] or "no output"


def peer_env():
    # OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow a current numpy; unset them for the peers only.
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def s3_env(base=None):
    env = dict(base if base is not None else os.environ)
    for k in list(env):
        if k.startswith("AWS_"):
            del env[k]
    env.update(AWS_ACCESS_KEY_ID=S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET_KEY, AWS_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    return env


def job(name, model, input_uri, output_uri, drift=True):
    return f"""name = "{name}"
schedule = "0 3 * * *"
[input]
uri = "{input_uri}"
[model]
name = "{model}"
version = 1
[output]
uri = "{output_uri}"
passthrough = ["id"]
[drift]
enabled = {"true" if drift else "false"}
"""


def settings(registry, out, s3_endpoint=None):
    text = f'registry = "{registry}/"\nstate = "{out}/state/"\nreports = "{out}/reports/"\n'
    if s3_endpoint:
        text += f'[s3]\nendpoint_url = "{s3_endpoint}"\nregion = "us-east-1"\nforce_path_style = true\n'
    return text


def set_key(rows, files, train_rows):
    return f"{rows}x{files}" + ("" if train_rows == DEFAULT_TRAIN_ROWS else f"-t{train_rows}")


def migrate_legacy():
    """Earlier versions kept one data set in target/bench/data with a stamp data-ROWSxFILES beside
    it (and deleted everything on a size change); move it into sets/ROWSxFILES/ instead."""
    data = WORK / "data"
    stamps = sorted(WORK.glob("data-*x*")) if WORK.exists() else []
    if not data.is_dir() or len(stamps) != 1 or not stamps[0].is_file():
        return
    key = stamps[0].name[len("data-"):]
    dest = WORK / "sets" / key
    if dest.exists():
        return
    dest.mkdir(parents=True)
    data.rename(dest / "data")
    (dest / "data" / ".complete").touch()
    if (WORK / "registry").is_dir():
        (WORK / "registry").rename(dest / "registry")
    stamps[0].unlink()
    for old in ("out", "jobs"):
        shutil.rmtree(WORK / old, ignore_errors=True)
    print(f"moved the cached {key} data set to {dest.relative_to(ROOT)}", flush=True)


PEER_MODELS = ("lr.joblib", "rf.joblib", "lr_duckdb.sql")


def ensure_data(data, rows, files, start, train_rows, peers):
    """Generates FILES x ROWS rows for the date START under DATA once (stamp DATA/.complete),
    and with PEERS the scikit-learn peers' models once (a set made by --only-gbdt has none)."""
    if not (data / ".complete").exists():
        shutil.rmtree(data, ignore_errors=True)  # an interrupted generation of this set only
        data.mkdir(parents=True)
        print(f"generating {files} x {rows:,} rows for {start} in {data.relative_to(ROOT)} ...", flush=True)
        sh([sys.executable, SHARED / "gen_data.py", data, "--rows", rows, "--files", files, "--days", 1,
            "--start", start, "--train-rows", train_rows])
        (data / ".complete").touch()
    if peers and not all((data / f).exists() for f in PEER_MODELS):
        print("training the peers' models (scikit-learn) ...", flush=True)
        sh([sys.executable, SHARED / "baseline.py", "train", data], env=peer_env())


def import_ns(registry, name, path):
    """`nightshift model import PATH --name NAME` into the data set's registry, once."""
    if (registry / name / "1" / "manifest.json").exists():
        return
    print(f"importing {path.name} as {name} ...", flush=True)
    sh([NIGHTSHIFT, "model", "import", path, "--name", name, "--registry", f"{registry}/"])


def gbdt_rows(data, registry, out, jobs, rows, failed):
    """Issue 20's rows (benches/peer_gbdt.py): the models trained once per data set, imported
    into nightshift once, scored by nightshift (drift off: the pure-scoring comparison; the
    imported models have no drift reference anyway) and by the peers. A model nightshift cannot
    import, or ONNX cannot convert, leaves its row in the table as failed, with a note."""
    print("training the GBDT peers' models (once per data set; a few minutes on 2 cores) ...", flush=True)
    sh([sys.executable, BENCHES / "peer_gbdt.py", "train", data], env=peer_env())
    features = f"{data}/features/dt={{date}}/"
    ns = lambda j: [NIGHTSHIFT, "run", j, "--date", DAY, "--jobs", jobs]
    gb = lambda cmd, model, out_name: [sys.executable, BENCHES / "peer_gbdt.py", cmd, data, DAY,
                                       out / out_name, "--model", data / model]
    for row, model, file, job_name in ((NS_LGB, "bench_lgb", "lgb_500.txt", "lgb"),
                                       (NS_XGB, "bench_xgb", "xgb_500.json", "xgb"),
                                       (NS_LGB1000, "bench_lgb1000", "lgb_1000.txt", "lgb1000")):
        try:
            import_ns(registry, model, data / file)
            (jobs / f"{job_name}.toml").write_text(
                job(job_name, model, features, f"{out}/scores/{job_name}/dt={{date}}/", drift=False))
        except Failed as e:
            failed[row] = f"`nightshift model import {file}` failed: {reason(e)}"
    for row, model in ((ORT_LGB, "lgb_500.onnx"), (ORT_XGB, "xgb_500.onnx")):
        failure = data / f"{model}.failed"
        if failure.exists():
            failed[row] = f"ONNX conversion failed: {failure.read_text().strip()}"
    for row in failed:
        print(f"note: {row}: {failed[row]}", flush=True)
    return [
        Row(NS_LGB, ns("lgb"), None, rows, None),
        Row(PY_LGB, gb("lightgbm", "lgb_500.txt", "peer_lgb.parquet"), peer_env(), rows, NS_LGB),
        Row(ORT_LGB, gb("onnx", "lgb_500.onnx", "peer_lgb_onnx.parquet"), peer_env(), rows, NS_LGB),
        Row(NS_XGB, ns("xgb"), None, rows, None),
        Row(PY_XGB, gb("xgboost", "xgb_500.json", "peer_xgb.parquet"), peer_env(), rows, NS_XGB),
        Row(ORT_XGB, gb("onnx", "xgb_500.onnx", "peer_xgb_onnx.parquet"), peer_env(), rows, NS_XGB),
        Row(NS_LGB1000, ns("lgb1000"), None, rows, None),
    ]


def train_ns(registry, data, name, algo, extra=()):
    if (registry / name / "1" / "manifest.json").exists():
        return
    print(f"training {name} ({algo}) with nightshift ...", flush=True)
    t0 = time.perf_counter()
    sh([NIGHTSHIFT, "model", "train", "--data", f"{data}/train/", "--target", "label", "--algorithm", algo,
        "--name", name, "--exclude", "id", "--registry", f"{registry}/", *extra])
    print(f"  {time.perf_counter() - t0:.1f} s", flush=True)


class S3Server:
    """A private s3s-fs on 127.0.0.1:PORT serving WORK/s3/data; stop() ends it (only it)."""

    def __init__(self, port):
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.dir = WORK / "s3"
        self.data = self.dir / "data"
        self.proc = None

    def _stop_leftover(self):
        # A server an earlier bench run left behind (killed with SIGKILL): ours only if its
        # command line names our data folder.
        pidfile = self.dir / "pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if any(b"s3s-fs" in c for c in cmdline) and str(self.data).encode() in cmdline:
                os.kill(pid, signal.SIGTERM)
                time.sleep(0.5)
        except (ValueError, OSError):
            pass
        pidfile.unlink(missing_ok=True)

    def start(self):
        binary = shutil.which("s3s-fs") or str(Path.home() / ".cargo" / "bin" / "s3s-fs")
        if not os.access(binary, os.X_OK):
            raise Failed("s3s-fs is not installed (`make bench` installs it)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        if self._answers():
            raise Failed(f"something already listens on 127.0.0.1:{self.port}; pass --s3-port")
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)
        log = open(self.dir / "log", "wb")
        self.proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(self.port), "--access-key",
                                      S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY, str(self.data)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        (self.dir / "pid").write_text(str(self.proc.pid))
        for _ in range(100):
            if self._answers():
                print(f"s3s-fs listening on {self.endpoint} (pid {self.proc.pid}, data in "
                      f"{self.data.relative_to(ROOT)})", flush=True)
                return
            if self.proc.poll() is not None:
                raise Failed(f"s3s-fs exited: {(self.dir / 'log').read_text(errors='replace')}")
            time.sleep(0.1)
        raise Failed(f"s3s-fs did not answer on 127.0.0.1:{self.port}")

    def _answers(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        (self.dir / "pid").unlink(missing_ok=True)
        shutil.rmtree(self.data, ignore_errors=True)
        print(f"s3s-fs on port {self.port} stopped", flush=True)
        self.proc = None


def fmt_ratio(x):
    return f"{x:.2f}"


def targets(med, a, failed=()):
    """The rows of "Targets (issues 11 and 20)": (check, computed as, target, measured, met).
    "LR" is the row "nightshift, logistic regression" (drift report on); walls and RSS are
    medians. A check whose rows failed (FAILED) says "failed" rather than "not run"."""
    rows = a.rows * a.files
    w = lambda n: med[n][0] if n in med else None
    m = lambda n: med[n][1] if n in med else None
    out = []

    def check(label, how, target, value, ok, fmt=fmt_ratio, rows=()):
        if value is None:
            state = "failed" if any(r in failed for r in rows) else "not run"
            out.append((label, how, target, state, state))
        else:
            verdict = "measured" if ok is None else "met" if ok(value) else "NOT met"
            out.append((label, how, target, fmt(value), verdict))

    def ratio(x, y):
        return None if x is None or y is None else x / y

    check("LR with drift vs DuckDB SQL", "LR wall / DuckDB SQL wall", "<= 0.80",
          ratio(w(LR), w(DUCK)), lambda v: v <= 0.80)
    share = None if w(LR) is None or w(LR_NODRIFT) is None else (w(LR) - w(LR_NODRIFT)) / w(LR)
    check("drift report's share of the run", "(LR wall - LR no-drift wall) / LR wall", "<= 0.15",
          share, lambda v: v <= 0.15)
    check("LR with drift vs nightshift I/O floor", "LR wall / nightshift I/O floor wall", "<= 1.30",
          ratio(w(LR), w(NS_FLOOR)), lambda v: v <= 1.30)
    check("random forest scoring vs scikit-learn", "nightshift RF scoring wall / scikit-learn RF scoring wall", "<= 0.20",
          ratio(w(NS_RF), w(SK_RF)), lambda v: v <= 0.20)
    check("random forest training vs scikit-learn", "nightshift RF training wall / scikit-learn RF training wall", "<= 1.00",
          ratio(w(NS_TRAIN), w(SK_TRAIN)), lambda v: v <= 1.00)
    day = f"{rows:,}-row day" + ("" if rows == 2_000_000 else " (the target is set for the 2,000,000-row day)")
    check(f"peak RSS, LR with drift, {day}", "LR peak RSS", "<= 200 MiB",
          m(LR), lambda v: v <= 200, fmt=lambda v: f"{v:.0f} MiB")
    check("peak RSS, 10x day vs the day", "LR peak RSS on the 10x day / LR peak RSS", "< 1.20",
          ratio(m(BIG_NS), m(LR)), lambda v: v < 1.20)
    check("S3 run vs boto3 download", "LR S3 in and out wall / boto3 download wall", "<= 1.20",
          ratio(w(S3_NS), w(S3_BOTO)), lambda v: v <= 1.20)
    # issue 20: gradient-boosted trees, 500 x 63 leaves, drift off (peer_gbdt.py's peers)
    # The issue sets the targets on the LightGBM model; the XGBoost rows of equal size are
    # measured beside them, with no target of their own.
    for ns_row, py_row, ort_row, lib, targeted in ((NS_LGB, PY_LGB, ORT_LGB, "LightGBM", True),
                                                   (NS_XGB, PY_XGB, ORT_XGB, "XGBoost", False)):
        tag = "issue 20" if targeted else "issue 20, no target"
        check(f"{lib} scoring vs {lib}'s own predict ({tag})",
              f"nightshift {lib} wall / pyarrow + {lib} pipeline wall", "<= 0.25" if targeted else "-",
              ratio(w(ns_row), w(py_row)), (lambda v: v <= 0.25) if targeted else None, rows=(ns_row, py_row))
        check(f"{lib} scoring vs onnxruntime ({tag})",
              f"nightshift {lib} wall / pyarrow + onnxruntime pipeline wall", "<= 0.50" if targeted else "-",
              ratio(w(ns_row), w(ort_row)), (lambda v: v <= 0.50) if targeted else None, rows=(ns_row, ort_row))
    check("peak RSS, LightGBM 1,000 x 63 leaves (issue 20)", "nightshift LightGBM 1,000 trees peak RSS",
          "<= 300 MiB", m(NS_LGB1000), lambda v: v <= 300, fmt=lambda v: f"{v:.0f} MiB", rows=(NS_LGB1000,))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per file")
    ap.add_argument("--files", type=int, default=2, help="files of the day")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the scoring and S3 rows")
    ap.add_argument("--train-rows", type=int, default=DEFAULT_TRAIN_ROWS,
                    help="rows of the training data (a different value is a different data set)")
    ap.add_argument("--retrain", action="store_true",
                    help="delete the data set's nightshift registry first, so its models are trained by this binary")
    ap.add_argument("--skip-rf", action="store_true", help="leave out the random forests (scoring and training)")
    ap.add_argument("--skip-train", action="store_true", help="leave out the training rows")
    ap.add_argument("--train-rounds", type=int, default=3, help="rounds of the training rows")
    ap.add_argument("--skip-s3", action="store_true", help="leave out the S3 rows")
    ap.add_argument("--s3-port", type=int, default=8015, help="port of the bench's own s3s-fs (not 8014: the tests')")
    ap.add_argument("--skip-big", action="store_true",
                    help="leave out the day 10 times larger (generated once and kept: ~10x the day's disk)")
    ap.add_argument("--big-rounds", type=int, default=2, help="rounds of the 10x day")
    ap.add_argument("--skip-gbdt", action="store_true",
                    help="leave out the gradient-boosted rows (issue 20: LightGBM, XGBoost, ONNX)")
    ap.add_argument("--only-gbdt", action="store_true",
                    help="run only the gradient-boosted rows (and the data and models they need)")
    a = ap.parse_args()
    if a.skip_gbdt and a.only_gbdt:
        ap.error("--skip-gbdt and --only-gbdt exclude each other")
    if a.s3_port == 8014:
        ap.error("port 8014 is the test suite's S3 server; pick another --s3-port")
    if not NIGHTSHIFT.exists():
        sys.exit(f"{NIGHTSHIFT} is missing: build it (`make bench` does)")

    # SIGTERM ends the run through the same `finally` as an error, so the S3 server stops too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    WORK.mkdir(parents=True, exist_ok=True)
    migrate_legacy()
    try:
        run(a)
    except Failed as e:
        sys.exit(str(e))


def run(a):
    notes = []
    failed = {}  # rows that could not run or failed: name -> reason
    key = set_key(a.rows, a.files, a.train_rows)
    base_dir = WORK / "sets" / key
    data, registry, out, jobs = (base_dir / d for d in ("data", "registry", "out", "jobs"))
    ensure_data(data, a.rows, a.files, DAY, a.train_rows, peers=not a.only_gbdt)
    out.mkdir(parents=True, exist_ok=True)
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / "nightshift.toml").write_text(settings(registry, out))
    for old in jobs.glob("*.toml"):
        if old.name != "nightshift.toml":
            old.unlink()

    if a.retrain:
        shutil.rmtree(registry, ignore_errors=True)
    rows = a.rows * a.files
    pipelines, med = [], {}
    if a.only_gbdt:
        notes.append("issue 11 rows (logistic regression, random forest, S3, 10x day): not run (--only-gbdt)")
    else:
        run_issue11(a, data, registry, out, jobs, base_dir, pipelines, med, notes)
    if a.skip_gbdt:
        notes.append("gradient-boosted rows (issue 20): not run (--skip-gbdt)")
    else:
        gbdt = gbdt_rows(data, registry, out, jobs, rows, failed)
        print(f"gbdt rows: {a.rounds} rounds ...", flush=True)
        med.update(rounds([r for r in gbdt if r.name not in failed], a.rounds, "gbdt", failed))
        pipelines += gbdt
        notes += [f"{name}: {why}" for name, why in failed.items()]
    if not a.only_gbdt:
        run_big(a, registry, pipelines, med, notes)
    report(a, pipelines, med, notes, f"{BIG_NS} ({10 * a.files} x {a.rows:,} rows)", failed)


def run_issue11(a, data, registry, out, jobs, base_dir, pipelines, med, notes):
    """The scoring and training groups of issue 11 (everything before the 10x day)."""
    rf = not a.skip_rf
    train_ns(registry, data, "bench_lr", "logistic")
    if rf:
        train_ns(registry, data, "bench_rf", "random-forest", ["--trees", "100", "--max-depth", "10"])
    floor = True
    try:
        train_ns(registry, data, "bench_floor", "prior")
    except Failed as e:
        floor = False
        why = next((l.strip() for l in str(e).splitlines()[1:] if l.strip()), "")
        notes.append(f"{NS_FLOOR}: not run: `nightshift model train --algorithm prior` failed ({why})")
        print("note: " + notes[-1], flush=True)

    features = f"{data}/features/dt={{date}}/"
    scores = lambda name: f"{out}/scores/{name}/dt={{date}}/"
    (jobs / "lr.toml").write_text(job("lr", "bench_lr", features, scores("lr")))
    (jobs / "lr_nodrift.toml").write_text(job("lr_nodrift", "bench_lr", features, scores("lr_nodrift"), drift=False))
    if floor:
        (jobs / "floor.toml").write_text(job("floor", "bench_floor", features, scores("floor"), drift=False))
    if rf:
        (jobs / "rf.toml").write_text(job("rf", "bench_rf", features, scores("rf")))

    rows = a.rows * a.files
    base = [sys.executable, SHARED / "baseline.py"]
    ns = lambda j, jobs_dir=jobs, day=DAY: [NIGHTSHIFT, "run", j, "--date", day, "--jobs", jobs_dir]
    pipelines += [
        Row(LR, ns("lr"), None, rows, None),
        Row(LR_NODRIFT, ns("lr_nodrift"), None, rows, None),
    ]
    if floor:
        pipelines.append(Row(NS_FLOOR, ns("floor"), None, rows, None))
    pipelines += [
        Row(PA_LR, base + ["score", data, DAY, out / "peer_lr.parquet", "--model", "lr"], peer_env(), rows, LR),
        Row(PL_LR, base + ["score", data, DAY, out / "peer_lr_pl.parquet", "--model", "lr", "--engine", "polars"],
            peer_env(), rows, LR),
        Row(DUCK, base + ["duckdb", data, DAY, out / "peer_duck.parquet"], peer_env(), rows, LR),
        Row(PA_FLOOR, base + ["copy", data, DAY, out / "peer_copy.parquet"], peer_env(), rows, None),
    ]
    if rf:
        pipelines += [
            Row(NS_RF, ns("rf"), None, rows, None),
            Row(SK_RF, base + ["score", data, DAY, out / "peer_rf.parquet", "--model", "rf"], peer_env(), rows, NS_RF),
        ]

    server = None
    try:
        if a.skip_s3:
            notes.append("S3 rows: not run (--skip-s3)")
        else:
            try:
                server = S3Server(a.s3_port)
                server.start()
                day_files = sorted((data / "features" / f"dt={DAY}").glob("*.parquet"))
                print(f"uploading the day's {len(day_files)} files to s3://{S3_BUCKET}/{S3_PREFIX} ...", flush=True)
                sh([sys.executable, BENCHES / "s3_peer.py", "upload", server.endpoint, S3_BUCKET, S3_PREFIX,
                    *day_files], env=s3_env(peer_env()))
                jobs_s3 = base_dir / "jobs_s3"
                jobs_s3.mkdir(exist_ok=True)
                (jobs_s3 / "nightshift.toml").write_text(settings(registry, out / "s3", server.endpoint))
                (jobs_s3 / "lr_s3.toml").write_text(job(
                    "lr_s3", "bench_lr", f"s3://{S3_BUCKET}/features/dt={{date}}/",
                    f"s3://{S3_BUCKET}/scores/lr_s3/dt={{date}}/"))
                pipelines += [
                    Row(S3_NS, ns("lr_s3", jobs_s3), s3_env(), rows, None),
                    Row(S3_BOTO, [sys.executable, BENCHES / "s3_peer.py", "download", server.endpoint, S3_BUCKET,
                                  S3_PREFIX], s3_env(peer_env()), rows, None),
                ]
            except Failed as e:
                notes.append(f"S3 rows: not run: {str(e).strip()}")
                print("note: " + notes[-1], flush=True)
                if server:
                    server.stop()
                server = None
        med.update(rounds(pipelines, a.rounds, "scoring"))
    finally:
        if server:
            server.stop()

    if rf and not a.skip_train:
        scratch = out / "train_registry"
        peer_model = out / "peer_rf_train.joblib"

        ns_train = [NIGHTSHIFT, "model", "train", "--data", f"{data}/train/", "--target", "label", "--algorithm",
                    "random-forest", "--trees", "100", "--max-depth", "10", "--holdout", "0", "--name",
                    "bench_rf_train", "--exclude", "id", "--registry", f"{scratch}/"]
        sk_train = [sys.executable, BENCHES / "peer_train.py", data, peer_model]
        # The scratch registry (and the peer's output) is deleted before each round, untimed, so
        # every round really trains and registers version 1.
        train_rows = [
            Row(NS_TRAIN, ns_train, None, a.train_rows, None, lambda: shutil.rmtree(scratch, ignore_errors=True)),
            Row(SK_TRAIN, sk_train, peer_env(), a.train_rows, NS_TRAIN, lambda: peer_model.unlink(missing_ok=True)),
        ]
        print(f"training rows: {a.train_rounds} rounds (nightshift's forest may take minutes a round) ...",
              flush=True)
        med.update(rounds(train_rows, a.train_rounds, "training"))
        pipelines += train_rows
    else:
        notes.append("training rows: not run (" + ("--skip-rf" if not rf else "--skip-train") + ")")


def run_big(a, registry, pipelines, med, notes):
    """The 10x day group."""
    big_files = 10 * a.files
    ns = lambda j, jobs_dir, day: [NIGHTSHIFT, "run", j, "--date", day, "--jobs", jobs_dir]
    if not a.skip_big:
        big_dir = WORK / "sets" / ("big-" + set_key(a.rows, big_files, a.train_rows))
        ensure_data(big_dir / "data", a.rows, big_files, BIG_DAY, a.train_rows, peers=False)
        big_jobs, big_out = big_dir / "jobs", big_dir / "out"
        big_jobs.mkdir(exist_ok=True)
        big_out.mkdir(exist_ok=True)
        (big_jobs / "nightshift.toml").write_text(settings(registry, big_out))
        (big_jobs / "lr_big.toml").write_text(job("lr_big", "bench_lr", f"{big_dir}/data/features/dt={{date}}/",
                                                  f"{big_out}/scores/lr_big/dt={{date}}/"))
        big = [Row(BIG_NS, ns("lr_big", big_jobs, BIG_DAY), None, a.rows * big_files, None)]
        med.update(rounds(big, a.big_rounds, "10x day"))
        pipelines += big
    else:
        notes.append("10x day: not run (--skip-big)")


def report(a, pipelines, med, notes, big_label, failed=None):
    failed = failed or {}
    rows = a.rows * a.files
    cmd = "python3 benches/bench.py" + "".join(f" {x}" for x in sys.argv[1:])
    lines = [
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}: {os.cpu_count()} cores, "
        f"{platform.machine()}, {a.files} files x {a.rows:,} rows ({rows:,} rows, 20 float64 features + a "
        f"4-value string), training on {a.train_rows:,} rows; whole processes, median of the rounds shown, "
        f"in shuffled order (`{cmd}`).",
        "",
        "| pipeline | rows | rounds | wall s | rows/s | peak RSS MiB | peer wall / nightshift wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in pipelines:
        if r.name not in med:  # could not run or failed (the notes say why)
            lines.append(f"| {r.name} | {r.rows:,} | 0 | failed | | | |")
            continue
        wall, rss, n = med[r.name]
        name = big_label if r.name == BIG_NS else r.name
        ratio = f"{wall / med[r.vs][0]:.2f}x" if r.vs in med else ""
        lines.append(f"| {name} | {r.rows:,} | {n} | {wall:.2f} | {r.rows / wall:,.0f} | {rss:.0f} | {ratio} |")
    lines += ["", "Targets (issues 11 and 20):", "",
              "| check | computed as | target | measured | met |", "|---|---|---|---|---|"]
    for check, how, target, value, met in targets(med, a, failed):
        lines.append(f"| {check} | {how} | {target} | {value} | {met} |")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    text = "\n".join(lines)
    print("\n" + text)
    (WORK / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
