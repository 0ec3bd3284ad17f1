#!/usr/bin/env python3
"""`make soak`: the daemon for SOAK_MINUTES (default 30) at real speed, as production runs it.

100 job files, each on an every-minute schedule over a small fixture partition; while the
daemon runs, this script edits job files (hot reload), triggers runs over HTTP, and scrapes
/metrics every 5 s, sampling the daemon's RSS, open file descriptors and threads from /proc.
At the end it stops the daemon and checks:

- RSS, open file descriptors and threads grow by at most 10 % between the 5th minute and the
  end (the first minutes are warm-up: allocator arenas, thread pools, connection pools);
- fire delay, from each scheduled run's cron instant to its start (the run record's
  `started_at`): p99 under 2 s;
- every scheduled run committed (its record `succeeded`, `committed`), no tick skipped, no
  run failed; no lease left unreleased, no temporary object, no abort marker;
- `/jobs` answers in under 100 ms with 100 jobs and their history (p99 of the calls made).

    python3 tests/soak.py --binary target/debug/nightshift [--minutes 30] [--jobs 100]

Writes its figures to target/soak/figures.json and prints a table; exits 1 if a check fails.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "churn"
TOKEN = "soak-token"


def sh(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def job_text(i, comment=""):
    return f'''# soak job {i}{comment}
name = "soak_{i:03d}"
schedule = "* * * * *"
timezone = "UTC"
date = "yesterday"

[input]
uri = "{FIXTURES}/features/dt=2026-11-0{1 + i % 3}/"

[model]
name = "churn"
version = 1

[output]
uri = "out/scores/{{job}}/dt={{date}}/"
passthrough = ["id"]

[run]
threads = 1
'''


def http(port, method, path, body=None, timeout=10):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    if method == "POST":
        req.add_header("Authorization", f"Bearer {TOKEN}")
        req.add_header("Content-Type", "application/json")
    start = time.monotonic()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        data = r.read()
    return r.status, data, time.monotonic() - start


def proc_sample(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(fields["VmRSS"].split()[0])
    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mib": rss_kib / 1024, "threads": threads, "fds": fds}


def percentile(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target/debug/nightshift"))
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 30)))
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--port", type=int, default=9474)
    ap.add_argument("--dir", default=str(ROOT / "target/soak"))
    a = ap.parse_args()
    binary = str(Path(a.binary).resolve())
    work = Path(a.dir)
    shutil.rmtree(work, ignore_errors=True)
    (work / "jobs").mkdir(parents=True)
    (work / "jobs/nightshift.toml").write_text(
        'registry = "out/registry/"\nstate = "out/state/"\nreports = "out/reports/"\n'
        "max_concurrent_runs = 128\n")
    sh([binary, "model", "train", "--data", str(FIXTURES / "train"), "--target", "churned",
        "--algorithm", "logistic", "--name", "churn", "--exclude", "id"], work)
    for i in range(a.jobs):
        (work / f"jobs/soak_{i:03d}.toml").write_text(job_text(i))
    sh([binary, "validate", "jobs/"], work)

    log = open(work / "daemon.log", "w")
    env = dict(os.environ, NIGHTSHIFT_API_TOKEN=TOKEN, NO_COLOR="1")
    daemon = subprocess.Popen([binary, "daemon", "--jobs", "jobs", "--listen", f"127.0.0.1:{a.port}"],
                              cwd=work, stdout=log, stderr=log, env=env)
    started = time.monotonic()
    t0 = datetime.now(timezone.utc)
    for _ in range(100):
        try:
            if http(a.port, "GET", "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    samples, jobs_latency, triggers, edits, scrape_errors = [], [], 0, 0, 0
    end = started + a.minutes * 60
    tick = 0
    try:
        while time.monotonic() < end:
            tick += 1
            try:
                _, metrics, _ = http(a.port, "GET", "/metrics")
                s = proc_sample(daemon.pid)
                s["minute"] = (time.monotonic() - started) / 60
                s["runs_total"] = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.decode().splitlines()
                                      if l.startswith("nightshift_runs_total{"))
                samples.append(s)
                _, _, dt = http(a.port, "GET", "/jobs")
                jobs_latency.append(dt)
            except OSError as e:
                scrape_errors += 1
                print(f"scrape failed: {e}", file=sys.stderr)
            if tick % 2 == 0:  # a run of another date, every 10 s
                i = tick % a.jobs
                try:
                    http(a.port, "POST", f"/jobs/soak_{i:03d}/runs", {"date": "2026-11-01"})
                    triggers += 1
                except OSError as e:
                    print(f"trigger failed: {e}", file=sys.stderr)
            if tick % 4 == 0:  # a job file edited, every 20 s
                i = (tick // 4) % a.jobs
                (work / f"jobs/soak_{i:03d}.toml").write_text(job_text(i, f" (edit {tick})"))
                edits += 1
            if tick % 12 == 0:
                last = samples[-1] if samples else {}
                print(f"{s['minute']:.1f} min: rss {last.get('rss_mib', 0):.0f} MiB, fds {last.get('fds')}, "
                      f"threads {last.get('threads')}, runs {last.get('runs_total', 0):.0f}", flush=True)
            time.sleep(max(0.0, started + tick * 5 - time.monotonic()))
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=120)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()

    # Scheduled runs: every record of a date other than the triggered one.
    records = []
    for f in (work / "out/state/runs").glob("*/*/*.json"):
        r = json.loads(f.read_text())
        if r["logical_date"] != "2026-11-01":
            records.append(r)
    delays, bad = [], []
    for r in records:
        start = datetime.fromisoformat(r["started_at"].replace("Z", "+00:00"))
        cron = start.replace(second=0, microsecond=0)
        delays.append((start - cron).total_seconds())
        if r["status"] != "succeeded" or r.get("date_state") != "committed":
            bad.append(f"{r['job']} {r['run_id']}: {r['status']} {r.get('date_state')} {r.get('error')}")
    expected = int(a.minutes) * a.jobs  # at least one tick a minute for each job
    leftovers = []
    for f in (work / "out/state/leases").rglob("*.json"):
        body = json.loads(f.read_text())
        if not body.get("released"):
            leftovers.append(str(f.relative_to(work)))
    leftovers += [str(p.relative_to(work)) for p in (work / "out").rglob("_tmp*")]
    leftovers += [str(p.relative_to(work)) for p in (work / "out/state").rglob("aborted/**/*") if p.is_file()]
    metrics_text = ""
    skipped = [l for l in (work / "daemon.log").read_text(errors="replace").splitlines() if "skipped" in l.lower()]

    base = [s for s in samples if s["minute"] >= 5] or samples
    growth = {}
    for k in ("rss_mib", "fds", "threads"):
        if base:
            first, last = base[0][k], max(s[k] for s in base[-6:])
            growth[k] = {"at_5_min": first, "at_end": last, "growth": (last - first) / max(first, 1e-9)}
    figures = {
        "started": t0.isoformat(), "minutes": a.minutes, "jobs": a.jobs,
        "scheduled_runs": len(records), "expected_at_least": expected,
        "fire_delay_p50_s": percentile(delays, 0.5), "fire_delay_p99_s": percentile(delays, 0.99),
        "fire_delay_max_s": max(delays) if delays else None,
        "jobs_endpoint_p50_ms": percentile(jobs_latency, 0.5) * 1000,
        "jobs_endpoint_p99_ms": percentile(jobs_latency, 0.99) * 1000,
        "growth": growth, "triggers": triggers, "edits": edits, "scrape_errors": scrape_errors,
        "not_committed": bad[:20], "leftovers": leftovers[:20],
    }
    (work / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    checks = [
        ("RSS growth after minute 5 <= 10 %", growth.get("rss_mib", {}).get("growth", 1) <= 0.10),
        ("open fds growth <= 10 %", growth.get("fds", {}).get("growth", 1) <= 0.10),
        ("threads growth <= 10 %", growth.get("threads", {}).get("growth", 1) <= 0.10),
        ("fire delay p99 < 2 s", figures["fire_delay_p99_s"] < 2.0),
        (f"scheduled runs >= {expected}", len(records) >= expected),
        ("every scheduled run committed", not bad),
        ("no lease, temp object or marker left", not leftovers),
        ("/jobs p99 < 100 ms", figures["jobs_endpoint_p99_ms"] < 100),
        ("no scrape failed", scrape_errors == 0),
    ]
    print(json.dumps(figures, indent=2, default=str))
    failed = 0
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        failed += not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
