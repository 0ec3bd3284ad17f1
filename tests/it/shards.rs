//! Sharded runs (`run --shards N`) and sharded backfills (`backfill --shards N`), as
//! Kubernetes Indexed Jobs run them: N processes at once on one date, each scoring its share,
//! the last one committing the date, exactly once; a shard killed and run again redoes only
//! its own objects. A child of `integrity` for its `Site` and invariant checks.

use super::*;

const PARTS: usize = 12;

/// The date's partition as twelve objects (copies of the fixture's two, under other names).
fn twelve_objects(site: &Site) {
    for i in 0..PARTS {
        let from = format!("{FIXTURES}/{INPUT}part-0000{}.parquet", i % 2);
        site.put(
            &format!("{INPUT}part-{i:05}.parquet"),
            Bytes::from(std::fs::read(from).unwrap()),
        );
    }
}

fn shard_cmd(site: &Site, index: usize, count: usize, key: &str, failpoints: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
    cmd.args(["run", "churn", "--date", DATE, "--threads", "1"])
        .args(["--shards", &count.to_string()])
        .current_dir(site.dir().path(""))
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .env("NIGHTSHIFT_SHARD_RUN", key)
        .env("FAILPOINTS", failpoints)
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `count` shards at once; returns their outputs by index.
fn run_shards(site: &Site, count: usize, key: &str, failing: Option<usize>) -> Vec<Output> {
    let children: Vec<_> = (0..count)
        .map(|i| {
            let fp = if Some(i) == failing {
                "run::output-commit=return(exit)"
            } else {
                ""
            };
            shard_cmd(site, i, count, key, fp).spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            Output {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .collect()
}

fn sharded_date_commits_exactly_once(site: &Site) {
    twelve_objects(site);
    let outs = run_shards(site, 4, "job-a", None);
    for o in &outs {
        assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    }
    assert!(site.assert_success_is_the_truth("four shards"));
    let m: Value = serde_json::from_slice(&site.get(&format!("{OUT}_SUCCESS")).unwrap()).unwrap();
    assert_eq!(
        m["files"].as_array().unwrap().len(),
        PARTS,
        "one output per input object"
    );
    assert_eq!(m["shards"]["count"], 4);
    let data: Vec<String> = site
        .list(OUT)
        .into_keys()
        .filter(|k| is_data_file(k))
        .collect();
    assert_eq!(data.len(), PARTS);
    let rows = committed_rows(site).len();
    assert_eq!(rows, PARTS / 2 * 1994, "every row of every object, once");
    let committed = site
        .records()
        .iter()
        .filter(|r| r["date_state"] == "committed")
        .count();
    assert_eq!(committed, 1, "_SUCCESS is written once, by the last shard");
    let clean = committed_rows(site);

    // A new sharded run whose shard 2 is killed while writing: no _SUCCESS (the date is not
    // complete); that shard run again completes it, with the same rows.
    let outs = run_shards(site, 4, "job-b", Some(2));
    assert_eq!(outs[2].code, 137, "{}", outs[2].stderr);
    assert!(
        !site.assert_success_is_the_truth("shard 2 killed"),
        "no _SUCCESS"
    );
    std::thread::sleep(LEASE_TTL);
    let out = run_bounded(shard_cmd(site, 2, 4, "job-b", ""), Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("the last shard: the date is committed"),
        "{}",
        out.stdout
    );
    assert!(site.assert_success_is_the_truth("shard 2 run again"));
    assert_eq!(committed_rows(site), clean);
    let m: Value = serde_json::from_slice(&site.get(&format!("{OUT}_SUCCESS")).unwrap()).unwrap();
    assert_eq!(m["shards"]["run"], "job-b");
    assert_eq!(site.leftovers(), Vec::<String>::new());
}

#[test]
fn a_sharded_date_commits_exactly_once_locally() {
    sharded_date_commits_exactly_once(&Site::local());
}

#[test]
fn a_sharded_date_commits_exactly_once_on_s3() {
    sharded_date_commits_exactly_once(&Site::s3("shards"));
}

/// Shards of a sharded run and a run of the whole date, started together: the date's lease
/// knows its mode, so either the shards (sharing it) or the whole-date run has the date, never
/// both. A shard refused because the date was taken is run again, as Kubernetes retries an
/// index, until the date is committed; then `_SUCCESS` is the truth, every input object is
/// scored once, and nothing is left over.
fn mixed_modes(site: &Site, rounds: usize) {
    twelve_objects(site);
    let whole = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
        cmd.args(["run", "churn", "--date", DATE, "--threads", "1"])
            .current_dir(site.dir().path(""))
            .env_remove("AWS_ENDPOINT_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let refused = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stderr).contains("is already being run by")
    };
    let (mut whole_won, mut shards_won) = (0, 0);
    for round in 0..rounds {
        let key = format!("mixed-{round}");
        let mut children: Vec<_> = (0..3)
            .map(|i| shard_cmd(site, i, 3, &key, "").spawn().unwrap())
            .collect();
        children.insert(round % 4, whole().spawn().unwrap());
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let context = format!("mixed round {round}");
        let whole_out = &outs[round % 4];
        let shard_outs: Vec<_> = (0..4)
            .filter(|&i| i != round % 4)
            .map(|i| &outs[i])
            .collect();
        for o in &outs {
            assert!(
                o.status.success() || refused(o),
                "{context}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let shards_ran = shard_outs.iter().any(|o| o.status.success());
        if whole_out.status.success() {
            whole_won += 1;
        } else {
            assert!(shards_ran, "{context}: someone has the date");
            let held = String::from_utf8_lossy(&whole_out.stderr).into_owned();
            assert!(
                held.contains(&format!("a shard of sharded run {key}")),
                "{context}: {held}"
            );
            shards_won += 1;
        }
        // Shards refused while the whole-date run had the date are retried (it is done now).
        for (i, o) in shard_outs.iter().enumerate() {
            if !o.status.success() && shards_ran {
                let out = run_bounded(shard_cmd(site, i, 3, &key, ""), Duration::from_secs(120));
                assert_eq!(out.code, 0, "{context}: shard {i} again: {}", out.stderr);
            }
        }
        assert!(
            site.assert_success_is_the_truth(&context),
            "{context}: committed"
        );
        assert_eq!(
            committed_rows(site).len(),
            PARTS / 2 * 1994,
            "{context}: every input scored once"
        );
        assert_eq!(site.leftovers(), Vec::<String>::new(), "{context}");
    }
    eprintln!(
        "mixed modes: {rounds} rounds, the whole-date run won {whole_won}, the shards {shards_won}"
    );
}

#[test]
fn shards_and_a_whole_date_run_never_write_one_date_together_locally() {
    mixed_modes(&Site::local(), 20);
}

#[test]
fn shards_and_a_whole_date_run_never_write_one_date_together_on_s3() {
    mixed_modes(&Site::s3("mixed-modes"), 20);
}

/// The date's drift report, as a reader finds it: each column's statistics, row by row.
fn drift_rows(site: &Site) -> Vec<String> {
    let bytes = site
        .get(&format!("reports/job=churn/dt={DATE}/drift.parquet"))
        .expect("a drift report");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let columns = [
        "column",
        "column_type",
        "method",
        "statistic",
        "p_value",
        "threshold",
        "drift_detected",
        "reference_count",
        "current_count",
        "reference_null_rate",
        "current_null_rate",
    ];
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        for i in 0..batch.num_rows() {
            let row: Vec<String> = columns
                .iter()
                .map(|c| {
                    let col = batch
                        .column_by_name(c)
                        .unwrap_or_else(|| panic!("no column {c}"));
                    arrow::util::display::array_value_to_string(col, i).unwrap()
                })
                .collect();
            rows.push(row.join(" | "));
        }
    }
    rows
}

/// A sharded date gets the drift report the same date gets unsharded: every statistic equal,
/// the samples too (bottom-k merged by priority), for 1, 3 and 7 shards. Forty objects, so that
/// the samples' cut-off (a share of the date's rows) is in play.
fn a_sharded_dates_drift_report_is_the_unsharded_one(site: &Site) {
    for i in 0..40 {
        let from = format!("{FIXTURES}/{INPUT}part-0000{}.parquet", i % 2);
        site.put(
            &format!("{INPUT}part-{i:05}.parquet"),
            Bytes::from(std::fs::read(from).unwrap()),
        );
    }
    let out = site.ok();
    assert!(out.stdout.contains("drift"), "{}", out.stdout);
    let unsharded = drift_rows(site);
    assert!(unsharded.len() > 6, "{unsharded:?}");
    let success = |site: &Site| -> Value {
        serde_json::from_slice(&site.get(&format!("{OUT}_SUCCESS")).unwrap()).unwrap()
    };
    let drift = success(site)["drift"].clone();
    assert!(drift.is_object(), "{drift}");
    for n in [1, 3, 7] {
        let outs = run_shards(site, n, &format!("drift-{n}"), None);
        for o in &outs {
            assert_eq!(o.code, 0, "{n} shards: {}\n{}", o.stdout, o.stderr);
        }
        assert!(site.assert_success_is_the_truth(&format!("{n} shards")));
        let m = success(site);
        assert_eq!(m["shards"]["count"], n);
        assert_eq!(m["drift"], drift, "{n} shards: the verdict in _SUCCESS");
        assert_eq!(drift_rows(site), unsharded, "{n} shards: the report");
        let last = site
            .records()
            .into_iter()
            .filter(|r| r["date_state"] == "committed")
            .max_by_key(|r| r["started_at"].as_str().unwrap_or("").to_string())
            .unwrap();
        assert_eq!(last["drift"], drift, "{n} shards: the last shard's record");
    }
}

#[test]
fn a_sharded_dates_drift_report_is_the_unsharded_one_locally() {
    let site = Site::local();
    a_sharded_dates_drift_report_is_the_unsharded_one(&site);
    let unsharded = drift_rows(&site);

    // The shard that completes the date fails while it merges the profiles: no _SUCCESS;
    // that shard run again merges the same parts into the same report.
    let children: Vec<_> = (0..3)
        .map(|i| {
            shard_cmd(&site, i, 3, "drift-fails", "run::shard-drift=return")
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-1))
        .collect();
    // Only a shard that found every manifest merges: one, or two that finished together.
    let failed: Vec<usize> = (0..3).filter(|&i| codes[i] != 0).collect();
    assert!(
        !failed.is_empty() && failed.len() < 3,
        "the last shard merges: {codes:?}"
    );
    assert!(site.get(&format!("{OUT}_SUCCESS")).is_none());
    std::thread::sleep(LEASE_TTL);
    for &i in &failed {
        let out = run_bounded(
            shard_cmd(&site, i, 3, "drift-fails", ""),
            Duration::from_secs(120),
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert!(site.assert_success_is_the_truth("the merging shard run again"));
    assert_eq!(drift_rows(&site), unsharded);
}

#[test]
fn a_sharded_dates_drift_report_is_the_unsharded_one_on_s3() {
    a_sharded_dates_drift_report_is_the_unsharded_one(&Site::s3("shard-drift"));
}

/// A backfill over N pods: each date is run by exactly one of them.
#[test]
fn a_sharded_backfill_runs_each_date_once() {
    let site = Site::local();
    for d in ["2026-11-01", "2026-11-03"] {
        for part in ["part-00000.parquet", "part-00001.parquet"] {
            let bytes = std::fs::read(format!("{FIXTURES}/features/dt={d}/{part}")).unwrap();
            site.put(&format!("features/dt={d}/{part}"), Bytes::from(bytes));
        }
    }
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_nightshift"))
                .args([
                    "backfill",
                    "churn",
                    "--from",
                    "2026-11-01",
                    "--to",
                    "2026-11-03",
                ])
                .args(["--shards", "2", "--threads", "1"])
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .current_dir(site.dir().path(""))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for d in ["2026-11-01", "2026-11-02", "2026-11-03"] {
        let dir = site.dir().path(&format!("out/state/runs/churn/{d}"));
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1, "{d} ran once");
        assert!(site.get(&format!("scores/churn/dt={d}/_SUCCESS")).is_some());
    }
}
