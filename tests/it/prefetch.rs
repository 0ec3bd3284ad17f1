//! Fetching ahead on S3 (`FetchAhead` in src/read.rs): fetcher threads download the column
//! chunks of the next row groups while the workers decode the current ones. These tests run the
//! real binary on inputs of many small row groups in a bucket of the S3 test server, and check
//! that fetching ahead changes nothing but the speed:
//!
//! - the scores are those of the same inputs read from local files (which are not fetched
//!   ahead), with any number of threads;
//! - a fetch that fails (`run::fetch=...->return`, as a failed read would) fails the run with
//!   the object's name, and leaves no `_SUCCESS` and no data object;
//! - a fetch that panics fails the run the same way, without hanging it;
//! - a run that fails while fetchers are busy ends promptly: the fetchers stop, no thread waits
//!   for ever.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

use crate::util::{Env, Output, FIXTURES};
use crate::util_s3::{settings, TestBucket};

const DATE: &str = "2026-11-02";
const INPUT: &str = "features/dt=2026-11-02/";
const OUT: &str = "scores/churn/dt=2026-11-02/";
const QUARANTINE: &str = "scores/churn_quarantine/dt=2026-11-02/";
const PARTS: [&str; 2] = ["part-00000.parquet", "part-00001.parquet"];
/// Rows per row group of the inputs: 1,000 rows an object, so 10 units of work each.
const ROW_GROUP_ROWS: usize = 100;

/// A fixture object rewritten with row groups of [`ROW_GROUP_ROWS`] rows.
fn small_row_groups(part: &str) -> Vec<u8> {
    let file = std::fs::File::open(format!("{FIXTURES}/{INPUT}{part}")).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batches[0].schema(), Some(props)).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    let meta = w.close().unwrap();
    assert_eq!(meta.row_groups().len(), 1000 / ROW_GROUP_ROWS);
    out
}

/// The churn job reading [`INPUT`] from a bucket of the test server and writing there, its
/// registry and run records in a local folder; and the same job on local files, for reference.
struct Site {
    bucket: TestBucket,
    dir: Env,
}

impl Site {
    fn new(test: &str) -> Self {
        let bucket = TestBucket::new(test);
        let dir = Env::new();
        dir.train_churn();
        let s3 = settings().s3;
        dir.write(
            "jobs/nightshift.toml",
            &format!(
                "registry = \"out/registry/\"\nstate = \"out/state/\"\nreports = \"out/reports/\"\n\
                 \n[s3]\nendpoint_url = \"{}\"\nregion = \"{}\"\nforce_path_style = true\n\
                 timeout_secs = 60\nmax_attempts = 3\n",
                s3.endpoint_url.unwrap(),
                s3.region.unwrap(),
            ),
        );
        let b = &bucket.name;
        for (name, base) in [("churn", format!("s3://{b}/")), ("local", "out/".into())] {
            dir.write(
                &format!("jobs/{name}.toml"),
                &format!(
                    r#"name = "{name}"
schedule = "30 2 * * *"

[input]
uri = "{base}features/dt={{date}}/"

[model]
name = "churn"
version = 1

[output]
uri = "{base}scores/{name}/dt={{date}}/"
quarantine_uri = "{base}scores/{name}_quarantine/dt={{date}}/"
passthrough = ["id"]
"#
                ),
            );
        }
        let site = Self { bucket, dir };
        for part in PARTS {
            let bytes = small_row_groups(part);
            let local = site.dir.path(&format!("out/{INPUT}{part}"));
            std::fs::create_dir_all(local.parent().unwrap()).unwrap();
            std::fs::write(local, &bytes).unwrap();
            site.put(&format!("{INPUT}{part}"), bytes);
        }
        site
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        self.bucket.put(key, bytes);
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.bucket.get(key).map(|b| b.to_vec())
    }

    fn list(&self, prefix: &str) -> Vec<String> {
        let a = &self.bucket.admin;
        a.runtime.block_on(async {
            let page = a
                .client
                .list_objects_v2()
                .bucket(&self.bucket.name)
                .prefix(prefix)
                .send()
                .await
                .unwrap();
            page.contents()
                .iter()
                .filter_map(|o| o.key())
                .map(|k| k.strip_prefix(prefix).unwrap_or(k).to_string())
                .collect()
        })
    }

    /// Runs `job` with `FAILPOINTS`, killed after two minutes: a hang is a failure.
    fn run(&self, job: &str, failpoints: &str, extra: &[&str]) -> (Output, Duration) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
        cmd.args(["run", job, "--date", DATE])
            .args(extra)
            .current_dir(self.dir.path(""))
            .env("NO_COLOR", "1")
            .env("FAILPOINTS", failpoints)
            .env_remove("NIGHTSHIFT_LOG")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3");
        let started = Instant::now();
        let out = run_bounded(cmd, Duration::from_secs(120));
        (out, started.elapsed())
    }

    /// `(id, score)` of every output row on S3, by object, in order.
    fn scores_on_s3(&self) -> Vec<(String, Vec<(i64, f64)>)> {
        PARTS
            .iter()
            .map(|part| {
                let bytes = self.get(&format!("{OUT}{part}")).expect("output exists");
                (part.to_string(), scores(bytes::Bytes::from(bytes)))
            })
            .collect()
    }

    fn scores_locally(&self) -> Vec<(String, Vec<(i64, f64)>)> {
        PARTS
            .iter()
            .map(|part| {
                let path = self.dir.path(&format!("out/scores/local/dt={DATE}/{part}"));
                let bytes = std::fs::read(&path).unwrap();
                (part.to_string(), scores(bytes::Bytes::from(bytes)))
            })
            .collect()
    }

    /// The date on S3 holds no `_SUCCESS` and no data object, output or quarantine.
    fn assert_cleared(&self, context: &str) {
        let left: Vec<String> = self
            .list(OUT)
            .into_iter()
            .chain(self.list(QUARANTINE))
            .filter(|k| k == "_SUCCESS" || k.ends_with(".parquet"))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "{context}: left behind");
    }

    /// The newest run record of the S3 job.
    fn last_record(&self) -> Value {
        let dir = self.dir.path(&format!("out/state/runs/churn/{DATE}"));
        let mut records: Vec<Value> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        records.sort_by_key(|r| r["started_at"].as_str().unwrap().to_string());
        records.pop().expect("a run record")
    }
}

fn scores(bytes: bytes::Bytes) -> Vec<(i64, f64)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let scores = batch
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(ids.null_count(), 0);
        out.extend(
            ids.values()
                .iter()
                .copied()
                .zip(scores.values().iter().copied()),
        );
    }
    out
}

/// Runs a command to its end, or kills it after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nightshift starts");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("nightshift hung for {limit:?}: {cmd:?}");
        }
    };
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_ok(out: &Output, context: &str) {
    assert_eq!(
        out.code, 0,
        "{context}: the run failed\n{}\n{}",
        out.stdout, out.stderr
    );
}

#[test]
fn fetching_ahead_scores_what_reading_locally_does() {
    let site = Site::new("prefetch-same");
    let (local, _) = site.run("local", "", &[]);
    assert_ok(&local, "local run");
    let reference = site.scores_locally();
    assert_eq!(
        reference.iter().map(|(_, r)| r.len()).sum::<usize>(),
        1994,
        "rows scored locally"
    );
    for threads in ["1", "2", "5"] {
        let context = format!("{threads} threads on S3");
        let (out, _) = site.run("churn", "", &["--threads", threads, "--batch-rows", "40"]);
        assert_ok(&out, &context);
        assert_eq!(site.scores_on_s3(), reference, "{context}");
        assert!(site.get(&format!("{OUT}_SUCCESS")).is_some(), "{context}");
    }
}

/// The 14th fetch fails, or panics: with two fetchers racing, the unit it hits is the 14th or
/// a neighbour, in the second object either way. The error must say each of `expected`
/// (`{object}` is the second object's URI).
fn a_failing_fetch(action: &str, expected: &[&str]) {
    let site = Site::new(&format!("prefetch-{action}"));
    let (out, _) = site.run("churn", "", &[]);
    assert_ok(&out, "first run");
    assert!(site.get(&format!("{OUT}_SUCCESS")).is_some());

    for threads in ["1", "2", "5"] {
        let context = format!("run::fetch={action}, {threads} threads");
        let (out, _) = site.run(
            "churn",
            &format!("run::fetch=13*off->{action}"),
            &["--threads", threads],
        );
        assert_ne!(out.code, 0, "{context}: the run should fail");
        let failed_object = site.bucket.uri(&format!("{INPUT}part-00001.parquet"));
        let record = site.last_record();
        for expected in expected {
            let expected = expected.replace("{object}", &failed_object);
            assert!(
                out.stderr.contains(&expected),
                "{context}: the error should say `{expected}`:\n{}",
                out.stderr
            );
            assert!(
                record["error"].as_str().unwrap().contains(&expected),
                "{context}: {}",
                record["error"]
            );
        }
        site.assert_cleared(&context);
        assert_eq!(record["status"], "failed", "{context}");
        assert_eq!(record["date_state"], "cleared", "{context}");
    }

    // And the next clean run commits the date again.
    let (out, _) = site.run("churn", "", &[]);
    assert_ok(&out, "after the failures");
    assert!(site.get(&format!("{OUT}_SUCCESS")).is_some());
}

#[test]
fn a_failed_fetch_fails_the_run_with_the_objects_name() {
    a_failing_fetch(
        "return",
        &["reading {object}: injected failure at run::fetch"],
    );
}

#[test]
fn a_panicking_fetch_fails_the_run_without_hanging_it() {
    a_failing_fetch(
        "panic",
        &["a thread panicked fetching row group ", " of {object}: "],
    );
}

#[test]
fn a_run_that_fails_while_fetching_stops_the_fetchers() {
    let site = Site::new("prefetch-stop");
    // Each fetch takes half a second: fetching the date's 20 units would take 5 s and more;
    // the first unit's scoring fails, and the run must end with the fetches in flight.
    let (out, took) = site.run(
        "churn",
        "run::fetch=sleep(500);run::score-batch=return",
        &["--threads", "2"],
    );
    assert_ne!(out.code, 0, "the run should fail");
    assert!(
        out.stderr.contains("injected failure at run::score-batch"),
        "{}",
        out.stderr
    );
    assert!(
        took < Duration::from_secs(4),
        "the run took {took:?} to fail: it waited on fetches it did not need"
    );
    site.assert_cleared("a failed scoring");
}
