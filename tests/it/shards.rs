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
