#!/usr/bin/env python3
"""`make ui-shots`: the web pages as a browser shows them, saved under docs/ui/.

Writes the fixture state (fixtures/ui-state.rs) under target/ui-shots, serves it with
`nightshift ui`, opens each page in headless Chromium and saves a screenshot, then stops
the server.

    python3 tests/ui_shots.py --binary target/debug/nightshift \
        --state-tool target/debug/examples/ui-state [--chromium chromium]
"""
import argparse
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 9476
JOB = "churn_daily"
# name, path, window height: each page whole.
PAGES = [
    ("jobs", "/ui", 500),
    ("job", f"/ui/jobs/{JOB}", 1900),
    ("date", f"/ui/jobs/{JOB}/2026-11-02", 1300),
    ("date-failed", None, 900),
    ("drift", f"/ui/jobs/{JOB}/2026-11-02/drift", 2000),
    ("performance", f"/ui/jobs/{JOB}/2026-11-02/performance", 900),
    ("models", "/ui/models", 500),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--state-tool", required=True)
    ap.add_argument("--chromium", default="chromium")
    ap.add_argument("--out", default=str(ROOT / "docs/ui"))
    a = ap.parse_args()
    work = ROOT / "target/ui-shots"
    shutil.rmtree(work, ignore_errors=True)
    made = subprocess.run([a.state_tool, "--nightshift", a.binary, "--out", str(work), "--days", "60"],
                          check=True, capture_output=True, text=True).stdout
    print(made.strip())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([a.binary, "ui", "--jobs", str(work / "jobs"), "--listen", f"127.0.0.1:{PORT}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/ui", timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        # The failed date: the first red cell of the calendar.
        job = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/ui/jobs/{JOB}").read().decode()
        failed = job.split('data-status="failed"')[0].rsplit('data-date="', 1)[1][:10]
        for name, path, height in PAGES:
            path = path or f"/ui/jobs/{JOB}/{failed}"
            target = out / f"{name}.png"
            subprocess.run([a.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--window-size=1280,{height}", f"--screenshot={target}",
                            f"http://127.0.0.1:{PORT}{path}"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            print(f"{target.relative_to(ROOT)}  {path}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
