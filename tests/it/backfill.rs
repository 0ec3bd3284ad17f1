//! `nightshift backfill`: the plan and its `--reprocess` modes, resume after `kill -9`, a clean
//! stop on SIGTERM, and the integrity of every date it touches.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{copy_dir, Env, Output, FIXTURES};

const DATES: [&str; 3] = ["2026-11-01", "2026-11-02", "2026-11-03"];

/// A job over `in/dt={date}/` with the three fixture dates, and a short lease ttl.
fn env() -> Env {
    env_with("")
}

fn env_with(run: &str) -> Env {
    let env = Env::new();
    env.write(
        "jobs/nightshift.toml",
        "registry = \"out/registry/\"\nstate = \"out/state/\"\nlease_ttl = \"2s\"\n",
    );
    env.train_churn();
    env.job("churn", "in/dt={date}/", run);
    for d in DATES {
        add_input(&env, d, d);
    }
    env
}

fn add_input(env: &Env, date: &str, from: &str) {
    copy_dir(
        Path::new(&format!("{FIXTURES}/features/dt={from}")),
        &env.path(&format!("in/dt={date}")),
    );
}

fn backfill(env: &Env, args: &[&str]) -> Output {
    let mut all = vec!["backfill", "churn"];
    all.extend_from_slice(args);
    env.run(&all)
}

/// The plan's dates that run, from `--dry-run`.
fn planned(env: &Env, args: &[&str]) -> Vec<String> {
    let mut all = args.to_vec();
    all.push("--dry-run");
    let out = backfill(env, &all);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("run"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

fn marker(env: &Env, date: &str) -> Option<Value> {
    let p = env.path(&format!("out/scores/churn/dt={date}/_SUCCESS"));
    std::fs::read(p)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

fn records(env: &Env, date: &str) -> Vec<Value> {
    let dir = env.path(&format!("out/state/runs/churn/{date}"));
    let mut out: Vec<Value> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|r| r["started_at"].as_str().unwrap().to_string());
    out
}

#[test]
fn reprocess_modes_pick_exactly_the_dates_they_say() {
    let env = env();
    let range = ["--from", "2026-10-31", "--to", "2026-11-03"];
    let with = |mode: &str| {
        let mut a = range.to_vec();
        a.extend(["--reprocess", mode]);
        planned(&env, &a)
    };
    // Nothing ran yet: every date runs (10-31 has no input and will fail).
    assert_eq!(
        with("none"),
        ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03"]
    );
    let dry = backfill(&env, &[range[0], range[1], range[2], range[3], "--dry-run"]);
    assert!(
        dry.stdout.contains("no input yet: it will fail"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .lines()
            .any(|l| l.starts_with("2026-11-01") && l.contains(" 2000 ")),
        "rows from the footers:\n{}",
        dry.stdout
    );
    assert!(
        !env.path("out/scores").exists(),
        "a dry run touches nothing"
    );
    assert!(!env.path("out/state").exists(), "a dry run records nothing");

    let out = backfill(&env, &range);
    assert_ne!(out.code, 0, "a failed date makes the exit code non-zero");
    assert!(
        out.stderr.contains("1 of 4 dates did not succeed"),
        "{}",
        out.stderr
    );
    for d in DATES {
        assert!(
            marker(&env, d).is_some(),
            "{d} committed though 10-31 failed"
        );
        assert!(
            out.stderr.contains(&format!("{d} succeeded")),
            "one line per date off a terminal:\n{}",
            out.stderr
        );
    }

    // none: committed dates and the failed one are left alone; failed: the failed one runs.
    assert!(with("none").is_empty());
    assert_eq!(with("failed"), ["2026-10-31"]);
    add_input(&env, "2026-10-31", "2026-11-01");
    env.ok(&[
        "backfill",
        "churn",
        range[0],
        range[1],
        range[2],
        range[3],
        "--reprocess",
        "failed",
    ]);
    assert!(marker(&env, "2026-10-31").is_some());

    // stale: nothing until an input changes (its fingerprint: size, mtime, ETag) ...
    assert!(with("stale").is_empty());
    let part = env.path("in/dt=2026-11-02/part-00001.parquet");
    let f = std::fs::File::options().write(true).open(&part).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    assert_eq!(with("stale"), ["2026-11-02"]);
    // An input gone counts too.
    std::fs::remove_file(env.path("in/dt=2026-11-03/part-00001.parquet")).unwrap();
    assert_eq!(with("stale"), ["2026-11-02", "2026-11-03"]);
    let mut stale_args = range.to_vec();
    stale_args.extend(["--reprocess", "stale", "--dry-run"]);
    let dry = backfill(&env, &stale_args);
    assert!(
        dry.stdout.contains("(0 new, 1 gone, 0 changed)"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("(0 new, 0 gone, 1 changed)"),
        "{}",
        dry.stdout
    );
    // ... or the job pins another model version: then every date scored by the old one.
    let registry = env.path("out/registry/churn");
    copy_dir(&registry.join("1"), &registry.join("2"));
    let manifest = registry.join("2/manifest.json");
    let m = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, m.replace("\"version\": 1", "\"version\": 2")).unwrap();
    let job = std::fs::read_to_string(env.path("jobs/churn.toml")).unwrap();
    env.write(
        "jobs/churn.toml",
        &job.replace("version = 1", "version = 2"),
    );
    assert_eq!(
        with("stale"),
        ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03"]
    );
    let dry = backfill(&env, &stale_args);
    assert!(
        dry.stdout
            .contains("stale: scored by churn@1, the job pins churn@2"),
        "{}",
        dry.stdout
    );
    assert_eq!(with("all").len(), 4);
}

/// Spawns a backfill of the three dates, slowed down (a few ms a batch) so a signal lands in
/// the middle of it.
fn slow_backfill(env: &Env) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args([
            "backfill",
            "churn",
            "--from",
            DATES[0],
            "--to",
            DATES[2],
            "--threads",
            "1",
        ])
        .current_dir(env.path(""))
        .env("FAILPOINTS", "run::score-batch=sleep(40)")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_backfill_resumes_and_redoes_nothing_committed() {
    let env = env_with("batch_rows = 100");
    let mut child = slow_backfill(&env);
    wait_for("the first date's commit", || {
        marker(&env, DATES[0]).is_some()
    });
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let first = marker(&env, DATES[0]).unwrap()["run_id"].clone();
    std::thread::sleep(Duration::from_millis(2200)); // the killed run's lease expires

    let out = env.ok(&["backfill", "churn", "--from", DATES[0], "--to", DATES[2]]);
    assert!(
        out.stderr
            .contains(&format!("{} skipped: committed by run", DATES[0])),
        "{}",
        out.stderr
    );
    assert_eq!(marker(&env, DATES[0]).unwrap()["run_id"], first, "redone");
    assert_eq!(
        records(&env, DATES[0]).len(),
        1,
        "one run of the committed date"
    );
    for d in DATES {
        assert!(marker(&env, d).is_some(), "{d} not finished");
    }
}

#[test]
fn sigterm_stops_a_backfill_cleanly_and_the_next_one_finishes() {
    let env = env_with("batch_rows = 100");
    let child = slow_backfill(&env);
    wait_for("the first run's lease", || {
        env.path("out/state/leases/churn").exists()
    });
    std::thread::sleep(Duration::from_millis(100));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a stop is prompt"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a stopped backfill exits non-zero");
    assert!(stderr.contains("stopping"), "{stderr}");
    // The date in flight was aborted and recorded so; no date looks complete but committed
    // ones; nothing started after the signal.
    let aborted: Vec<&str> = DATES
        .iter()
        .copied()
        .filter(|d| records(&env, d).iter().any(|r| r["status"] == "aborted"))
        .collect();
    assert_eq!(aborted.len(), 1, "{stderr}");
    assert!(marker(&env, aborted[0]).is_none());
    let never: Vec<&str> = DATES
        .iter()
        .copied()
        .filter(|d| records(&env, d).is_empty())
        .collect();
    assert!(
        !never.is_empty(),
        "dates after the signal never started: {stderr}"
    );

    env.ok(&["backfill", "churn", "--from", DATES[0], "--to", DATES[2]]);
    for d in DATES {
        assert!(marker(&env, d).is_some(), "{d}");
    }
}

#[test]
fn runs_list_and_show_read_the_history() {
    let env = env();
    let out = backfill(&env, &["--from", "2026-10-31", "--to", DATES[2]]);
    assert_ne!(out.code, 0, "10-31 has no input");

    let list = env.ok(&["runs", "list", "churn"]);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "a header and one line per run:\n{}",
        list.stdout
    );
    assert!(lines[0].starts_with("date") && lines[0].contains("drift"));
    assert_eq!(
        lines.iter().filter(|l| l.contains(" succeeded ")).count(),
        3,
        "{}",
        list.stdout
    );

    let failed = env.ok(&[
        "runs", "list", "churn", "--status", "failed", "--format", "json",
    ]);
    let failed: Vec<Value> = serde_json::from_str(&failed.stdout).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["logical_date"], "2026-10-31");
    let limited = env.ok(&["runs", "list", "churn", "--limit", "2", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&limited.stdout)
            .unwrap()
            .len(),
        2
    );

    let id = failed[0]["run_id"].as_str().unwrap();
    let show = env.ok(&["runs", "show", id]);
    assert!(
        show.stdout.contains("churn 2026-10-31 failed"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout
            .contains("error             no Parquet files for 2026-10-31"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("date now holds    untouched"),
        "{}",
        show.stdout
    );
    let by_date = env.ok(&["runs", "show", "churn", DATES[1], "--format", "json"]);
    let r: Value = serde_json::from_str(&by_date.stdout).unwrap();
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["counts"]["rows_quarantined"], 6);
    let missing = env.run(&["runs", "show", "20991231T000000Z-00000000"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("no run record with id"),
        "{}",
        missing.stderr
    );
}

/// `run` stopped by SIGTERM (a pod deleted, Ctrl-C) aborts like a daemon run: recorded
/// aborted, nothing of it left, its lease released at once for the next runner.
#[test]
fn sigterm_aborts_a_run_cleanly() {
    let env = env_with("batch_rows = 100");
    let child = Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(["run", "churn", "--date", DATES[1], "--threads", "1"])
        .current_dir(env.path(""))
        .env("FAILPOINTS", "run::score-batch=sleep(40)")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the run's lease", || {
        env.path("out/state/leases/churn").exists()
    });
    std::thread::sleep(Duration::from_millis(150));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("the run was aborted"), "{stderr}");
    let records = records(&env, DATES[1]);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["status"], "aborted");
    assert!(marker(&env, DATES[1]).is_none());
    let left = crate::util::files_under(&env.path(&format!("out/scores/churn/dt={}", DATES[1])));
    assert!(left.is_empty(), "{left:?}");
    // No lease to wait for: the next run goes at once.
    env.ok(&["run", "churn", "--date", DATES[1]]);
}
