#!/usr/bin/env python3
"""The web pages on a year of history (issue 23): a job page with 365 logical dates and 50
features must render in under 300 ms on this machine, with the reports on local storage.

Writes the state with fixtures/ui-state.rs (365 dates, 50 features), serves
it with `nightshift ui` (release), and times each page over HTTP: the first request (every
report read and parsed) and then ROUNDS more (from the cache, as a person reloading the page
gets it). Prints medians and writes target/bench/ui.json.

    python3 benches/ui.py --binary target/release/nightshift \
        --state-tool target/debug/examples/ui-state [--rounds 20]
"""
import argparse
import json
import shutil
import statistics
import subprocess
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 9478
JOB = "churn_daily"
TARGET_MS = 300.0


def fetch(path):
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=60) as r:
        body = r.read()
        status = r.status
    return status, len(body), (time.perf_counter() - start) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--state-tool", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--features", type=int, default=50)
    a = ap.parse_args()
    work = ROOT / "target/bench/ui-state"
    shutil.rmtree(work, ignore_errors=True)
    made = subprocess.run([a.state_tool, "--nightshift", a.binary, "--out", str(work),
                           "--days", str(a.days), "--features", str(a.features)],
                          check=True, capture_output=True, text=True).stdout.strip()
    print(made)
    server = subprocess.Popen([a.binary, "ui", "--jobs", str(work / "jobs"), "--listen", f"127.0.0.1:{PORT}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        for _ in range(200):
            try:
                fetch("/ui/models")
                break
            except OSError:
                time.sleep(0.05)
        for name, path in [("job page (365 dates x 50 features)", f"/ui/jobs/{JOB}"),
                           ("jobs page", "/ui"),
                           ("date page", f"/ui/jobs/{JOB}/2026-11-02"),
                           ("drift page", f"/ui/jobs/{JOB}/2026-11-02/drift")]:
            status, size, first = fetch(path)
            assert status == 200, (path, status)
            times = [fetch(path)[2] for _ in range(a.rounds)]
            rows.append({"page": name, "path": path, "bytes": size, "first_ms": first,
                         "median_ms": statistics.median(times), "max_ms": max(times)})
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\n| page | bytes | first request ms | median of {a.rounds} ms | max ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['page']} | {r['bytes']:,} | {r['first_ms']:.0f} | {r['median_ms']:.1f} | {r['max_ms']:.1f} |")
    job = rows[0]
    met = job["median_ms"] < TARGET_MS
    print(f"\ntarget: job page with {a.days} dates and {a.features} features under {TARGET_MS:.0f} ms: "
          f"median {job['median_ms']:.1f} ms ({job['median_ms'] / TARGET_MS:.2f} of the target), "
          f"{'met' if met else 'NOT met'}; first request {job['first_ms']:.0f} ms")
    out = ROOT / "target/bench/ui.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"measured": datetime.now(timezone.utc).isoformat(), "rows": rows,
                               "target_ms": TARGET_MS, "met": met}, indent=2))


if __name__ == "__main__":
    main()
