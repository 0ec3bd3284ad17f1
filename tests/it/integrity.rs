//! The integrity invariants of docs/outputs.md, tried with injected failures at every step of a
//! run, with the user's own mistakes, and with a second runner, on local storage and on the S3
//! test server alike:
//!
//! 1. `_SUCCESS` is the truth: whenever it exists, every object it lists exists with the size
//!    and ETag it records, and the output and quarantine prefixes hold no other data object.
//! 2. Fail before touching: a rerun that fails before it writes leaves the last good outputs
//!    and their `_SUCCESS` exactly as they were; one that fails after says so in its record.
//! 4. One writer per job and date.
//! 5. A failing worker never commits.
//!
//! Failures are injected through the binary's failpoints (`FAILPOINTS`, see src/failpoint.rs):
//! `return` fails the step with an error, `return(exit)` ends the process there as a kill
//! would, `panic` panics.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use serde_json::Value;

use crate::util::{read_parquet, Env, Output, FIXTURES};
use crate::util_s3::{settings, TestBucket};

const DATE: &str = "2026-11-02";
const OUT: &str = "scores/churn/dt=2026-11-02/";
const QUARANTINE: &str = "scores/churn_quarantine/dt=2026-11-02/";
const INPUT: &str = "features/dt=2026-11-02/";
const RUNS: &str = "state/runs/churn/2026-11-02/";
const LEASES: &str = "state/leases/churn/2026-11-02/";
/// A little more than the tests' `lease_ttl`.
const LEASE_TTL: Duration = Duration::from_millis(3200);

/// Whether each lease object of the date says it was released, oldest first.
fn lease_states(site: &Site) -> Vec<bool> {
    site.list(LEASES)
        .keys()
        // Generations only: a shard's part leases live in folders below.
        .filter(|k| !k.contains('/'))
        // A generation listed, then tidied by a new taker before it was read, is gone.
        .filter_map(|k| site.get(&format!("{LEASES}{k}")))
        .map(|bytes| {
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            body["released"].as_bool().unwrap()
        })
        .collect()
}

/// An object as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    size: u64,
    etag: String,
}

/// Where a test's job keeps everything: a local folder, or a bucket on the S3 test server.
/// Keys are relative to the site's base (`out/` locally, the bucket's root on S3).
enum Site {
    Local(Env),
    S3 { dir: Env, bucket: TestBucket },
}

impl Site {
    fn local() -> Self {
        let env = Env::new();
        let site = Site::Local(env);
        site.set_up("out/", "");
        site
    }

    fn s3(test: &str) -> Self {
        let bucket = TestBucket::new(test);
        let s3 = settings().s3;
        let extra = format!(
            "\n[s3]\nendpoint_url = \"{}\"\nregion = \"{}\"\nforce_path_style = true\n\
             timeout_secs = 60\nmax_attempts = 3\n",
            s3.endpoint_url.unwrap(),
            s3.region.unwrap(),
        );
        let base = format!("s3://{}/", bucket.name);
        let site = Site::S3 {
            dir: Env::new(),
            bucket,
        };
        site.set_up(&base, &extra);
        site
    }

    fn dir(&self) -> &Env {
        match self {
            Site::Local(env) => env,
            Site::S3 { dir, .. } => dir,
        }
    }

    /// The job, the shared settings, the model and the fixtures of [`DATE`].
    fn set_up(&self, base: &str, s3_table: &str) {
        let dir = self.dir();
        dir.write(
            "jobs/nightshift.toml",
            &format!(
                "registry = \"{base}registry/\"\nstate = \"{base}state/\"\n\
                 reports = \"{base}reports/\"\nleftover_age = \"0s\"\nlease_ttl = \"3s\"\n{s3_table}"
            ),
        );
        self.write_job(base, "", "[\"id\"]");
        // The model trained once per test process, copied (uploaded) into this site.
        let trained = Env::new();
        trained.train_churn();
        for (rel, bytes) in files(&trained.path("out/registry")) {
            self.put(&format!("registry/{rel}"), bytes);
        }
        for part in ["part-00000.parquet", "part-00001.parquet"] {
            let bytes = std::fs::read(format!("{FIXTURES}/{INPUT}{part}")).unwrap();
            self.put(&format!("{INPUT}{part}"), Bytes::from(bytes));
        }
    }

    fn base(&self) -> String {
        match self {
            Site::Local(_) => "out/".into(),
            Site::S3 { bucket, .. } => format!("s3://{}/", bucket.name),
        }
    }

    fn write_job(&self, base: &str, input_suffix: &str, passthrough: &str) {
        self.dir().write(
            "jobs/churn.toml",
            &format!(
                r#"name = "churn"
schedule = "30 2 * * *"

[input]
uri = "{base}features/dt={{date}}/{input_suffix}"

[model]
name = "churn"
version = 1

[output]
uri = "{base}scores/churn/dt={{date}}/"
quarantine_uri = "{base}scores/churn_quarantine/dt={{date}}/"
passthrough = {passthrough}
"#
            ),
        );
    }

    fn put(&self, key: &str, bytes: Bytes) {
        match self {
            Site::Local(env) => {
                let p = env.path(&format!("out/{key}"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, bytes).unwrap();
            }
            Site::S3 { bucket, .. } => bucket.put(key, bytes),
        }
    }

    fn delete(&self, key: &str) {
        match self {
            Site::Local(env) => std::fs::remove_file(env.path(&format!("out/{key}"))).unwrap(),
            Site::S3 { bucket, .. } => {
                let a = &bucket.admin;
                a.runtime
                    .block_on(
                        a.client
                            .delete_object()
                            .bucket(&bucket.name)
                            .key(key)
                            .send(),
                    )
                    .unwrap();
            }
        }
    }

    fn get(&self, key: &str) -> Option<Bytes> {
        match self {
            Site::Local(env) => std::fs::read(env.path(&format!("out/{key}")))
                .ok()
                .map(Bytes::from),
            Site::S3 { bucket, .. } => bucket.get(key),
        }
    }

    /// Every object under a prefix (temp objects included), relative to it.
    fn list(&self, prefix: &str) -> BTreeMap<String, Listed> {
        match self {
            Site::Local(env) => files(&env.path(&format!("out/{prefix}")))
                .into_iter()
                .map(|(k, b)| {
                    (
                        k,
                        Listed {
                            size: b.len() as u64,
                            etag: String::new(),
                        },
                    )
                })
                .collect(),
            Site::S3 { bucket, .. } => {
                let a = &bucket.admin;
                let mut out = BTreeMap::new();
                let mut token = None;
                loop {
                    let page = a
                        .runtime
                        .block_on(
                            a.client
                                .list_objects_v2()
                                .bucket(&bucket.name)
                                .prefix(prefix)
                                .set_continuation_token(token.take())
                                .send(),
                        )
                        .unwrap();
                    for o in page.contents() {
                        out.insert(
                            o.key().unwrap().strip_prefix(prefix).unwrap().to_string(),
                            Listed {
                                size: o.size().unwrap() as u64,
                                etag: o.e_tag().unwrap_or_default().to_string(),
                            },
                        );
                    }
                    match page.next_continuation_token() {
                        Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                        _ => break,
                    }
                }
                out
            }
        }
    }

    /// `nightshift run churn --date DATE`, with failpoints, killed if it hangs.
    fn run(&self, failpoints: &str, extra: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
        cmd.args(["run", "churn", "--date", DATE])
            .args(extra)
            .current_dir(self.dir().path(""))
            .env("NO_COLOR", "1")
            .env("FAILPOINTS", failpoints)
            .env_remove("NIGHTSHIFT_LOG")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3");
        run_bounded(cmd, Duration::from_secs(120))
    }

    fn ok(&self) -> Output {
        let out = self.run("", &[]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        out
    }

    /// The run records of [`DATE`], oldest first.
    fn records(&self) -> Vec<Value> {
        let mut records: Vec<Value> = self
            .list(RUNS)
            .keys()
            .filter(|k| k.ends_with(".json"))
            .map(|k| serde_json::from_slice(&self.get(&format!("{RUNS}{k}")).unwrap()).unwrap())
            .collect();
        records.sort_by_key(|r| r["started_at"].as_str().unwrap().to_string());
        records
    }

    /// What a reader of the date sees: the listings of both prefixes and the marker's bytes.
    fn snapshot(
        &self,
    ) -> (
        BTreeMap<String, Listed>,
        BTreeMap<String, Listed>,
        Option<Bytes>,
    ) {
        (
            self.list(OUT),
            self.list(QUARANTINE),
            self.get(&format!("{OUT}_SUCCESS")),
        )
    }

    /// Invariant 1. Returns whether the date is committed (has a `_SUCCESS`).
    fn assert_success_is_the_truth(&self, context: &str) -> bool {
        let Some(marker) = self.get(&format!("{OUT}_SUCCESS")) else {
            return false;
        };
        let m: Value = serde_json::from_slice(&marker)
            .unwrap_or_else(|e| panic!("{context}: _SUCCESS is not a manifest: {e}"));
        let out = self.list(OUT);
        let quarantine = self.list(QUARANTINE);
        let mut listed_out = Vec::new();
        let mut listed_q = Vec::new();
        for f in m["files"].as_array().unwrap() {
            let name = f["name"].as_str().unwrap();
            let found = out
                .get(name)
                .unwrap_or_else(|| panic!("{context}: _SUCCESS lists {name}, which is gone"));
            assert_eq!(
                found.size,
                f["size"].as_u64().unwrap(),
                "{context}: size of {name}"
            );
            assert_eq!(
                found.etag,
                f["etag"].as_str().unwrap(),
                "{context}: ETag of {name}"
            );
            listed_out.push(name.to_string());
            if let Some(q) = f["quarantine"].as_object() {
                let qname = q["name"].as_str().unwrap();
                let found = quarantine.get(qname).unwrap_or_else(|| {
                    panic!("{context}: _SUCCESS lists quarantine {qname}, which is gone")
                });
                assert_eq!(
                    found.size,
                    q["size"].as_u64().unwrap(),
                    "{context}: size of {qname}"
                );
                assert_eq!(
                    found.etag,
                    q["etag"].as_str().unwrap(),
                    "{context}: ETag of {qname}"
                );
                listed_q.push(qname.to_string());
            }
        }
        let data = |m: &BTreeMap<String, Listed>| -> Vec<String> {
            m.keys().filter(|k| is_data_file(k)).cloned().collect()
        };
        listed_out.sort();
        listed_q.sort();
        assert_eq!(
            data(&out),
            listed_out,
            "{context}: data objects in {OUT} besides _SUCCESS's"
        );
        assert_eq!(
            data(&quarantine),
            listed_q,
            "{context}: data objects in {QUARANTINE}"
        );
        true
    }

    /// Temp objects and open multipart uploads left in the date's prefixes.
    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .list(OUT)
            .into_keys()
            .chain(self.list(QUARANTINE).into_keys())
            .filter(|k| k.rsplit('/').next().unwrap().starts_with("_tmp."))
            .collect();
        if let Site::S3 { bucket, .. } = self {
            left.extend(bucket.admin.open_uploads(&bucket.name).unwrap_or_default());
        }
        left
    }
}

/// Files under a folder, relative, with their bytes.
fn files(dir: &Path) -> Vec<(String, Bytes)> {
    crate::util::files_under(dir)
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(dir.join(&rel)).unwrap();
            (rel, Bytes::from(bytes))
        })
        .collect()
}

fn is_data_file(rel: &str) -> bool {
    rel.ends_with(".parquet")
        && rel
            .split('/')
            .all(|s| !s.starts_with('_') && !s.starts_with('.'))
}

/// Runs a command to its end, or kills it after `limit`: a hang is a failure, not a stuck CI.
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

/// What a failure at a step leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaves {
    /// The previous outputs and `_SUCCESS`, exactly.
    Untouched,
    /// No `_SUCCESS` and no data object (the run cleaned up).
    Cleared,
    /// No `_SUCCESS` (a crash: the next run cleans up).
    NoMarker,
    /// This run's complete outputs and `_SUCCESS` (a crash right after the commit).
    Committed,
}

/// Every step of a run, each broken in each way that applies.
const SCENARIOS: &[(&str, &str, Leaves)] = &[
    ("run::plan", "return", Leaves::Untouched),
    ("run::model", "return", Leaves::Untouched),
    ("run::footers", "return", Leaves::Untouched),
    ("run::schema", "return", Leaves::Untouched),
    ("run::marker-delete", "return", Leaves::Untouched),
    ("run::score-batch", "return", Leaves::Cleared),
    ("run::score-batch", "1*off->panic", Leaves::Cleared),
    ("run::output-commit", "return", Leaves::Cleared),
    ("run::output-commit", "1*off->return", Leaves::Cleared),
    ("run::quarantine-commit", "return", Leaves::Cleared),
    ("run::drift", "return", Leaves::Cleared),
    ("run::stale-cleanup", "return", Leaves::Cleared),
    ("run::marker-write", "return", Leaves::Cleared),
    ("run::after-marker", "return", Leaves::Cleared),
    ("run::plan", "return(exit)", Leaves::Untouched),
    ("run::schema", "return(exit)", Leaves::Untouched),
    ("run::score-batch", "return(exit)", Leaves::NoMarker),
    (
        "run::output-commit",
        "1*off->return(exit)",
        Leaves::NoMarker,
    ),
    ("run::quarantine-commit", "return(exit)", Leaves::NoMarker),
    ("run::stale-cleanup", "return(exit)", Leaves::NoMarker),
    ("run::marker-write", "return(exit)", Leaves::NoMarker),
    ("run::after-marker", "return(exit)", Leaves::Committed),
];

fn break_every_step(site: &Site) {
    site.ok();
    assert!(site.assert_success_is_the_truth("first run"));
    let good_rows = rows_committed(site);
    assert_eq!(
        good_rows,
        (1994, 6),
        "scored and quarantined rows of {DATE}"
    );

    for &(point, action, leaves) in SCENARIOS {
        let context = format!("{point}={action}");
        let before = site.snapshot();
        let records_before = site.records().len();
        let out = site.run(&format!("{point}={action}"), &["--batch-rows", "300"]);
        assert_ne!(
            out.code, 0,
            "{context}: the run should fail\n{}",
            out.stderr
        );
        let committed = site.assert_success_is_the_truth(&context);
        let (out_now, q_now, _) = site.snapshot();
        match leaves {
            Leaves::Untouched => assert!(site.snapshot() == before, "{context}: outputs changed"),
            Leaves::Cleared => {
                assert!(!committed, "{context}: _SUCCESS left");
                let data: Vec<_> = out_now
                    .keys()
                    .chain(q_now.keys())
                    .filter(|k| is_data_file(k))
                    .collect();
                assert!(data.is_empty(), "{context}: data left: {data:?}");
            }
            Leaves::NoMarker => assert!(!committed, "{context}: _SUCCESS left"),
            Leaves::Committed => {
                assert!(committed, "{context}: no _SUCCESS");
                assert_eq!(rows_committed(site), good_rows, "{context}");
            }
        }
        // A run that failed (rather than crashed) says what the date holds now.
        let records = site.records();
        if !action.contains("exit") {
            assert_eq!(
                records.len(),
                records_before + 1,
                "{context}: one record more"
            );
            let last = records.last().unwrap();
            assert_eq!(last["status"], "failed", "{context}");
            let expected = match leaves {
                Leaves::Untouched => "untouched",
                _ => "cleared",
            };
            assert_eq!(last["date_state"], expected, "{context}: {last}");
            if action.contains("panic") {
                let error = last["error"].as_str().unwrap();
                assert!(error.contains("panicked"), "{context}: {error}");
            }
        }

        // The next run recovers the date whole, and removes what a crash left (once the
        // crashed runner's lease has expired).
        if action.contains("exit") {
            std::thread::sleep(LEASE_TTL);
        }
        let left = site.leftovers();
        site.ok();
        assert_eq!(
            site.records().last().unwrap()["leftovers_removed"],
            left.len(),
            "rerun after {context}: counts what it removed, {left:?}"
        );
        assert!(site.assert_success_is_the_truth(&format!("rerun after {context}")));
        assert_eq!(rows_committed(site), good_rows, "rerun after {context}");
        assert_eq!(
            site.leftovers(),
            Vec::<String>::new(),
            "rerun after {context}"
        );
    }
}

/// Scored and quarantined rows of the committed date, read back from the outputs themselves.
fn rows_committed(site: &Site) -> (usize, usize) {
    let m: Value = serde_json::from_slice(&site.get(&format!("{OUT}_SUCCESS")).unwrap()).unwrap();
    let mut scored = 0;
    let mut quarantined = 0;
    for f in m["files"].as_array().unwrap() {
        scored += parquet_rows(
            &site
                .get(&format!("{OUT}{}", f["name"].as_str().unwrap()))
                .unwrap(),
        );
        if let Some(q) = f["quarantine"].as_object() {
            quarantined += parquet_rows(
                &site
                    .get(&format!("{QUARANTINE}{}", q["name"].as_str().unwrap()))
                    .unwrap(),
            );
        }
    }
    (scored, quarantined)
}

fn parquet_rows(bytes: &Bytes) -> usize {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum()
}

#[test]
fn success_is_the_truth_whatever_step_fails_locally() {
    break_every_step(&Site::local());
}

#[test]
fn success_is_the_truth_whatever_step_fails_on_s3() {
    break_every_step(&Site::s3("integrity-steps"));
}

/// The fixture partition with one column cast to another type.
fn with_column_as(column: &str, to: DataType) -> Bytes {
    let batch = read_parquet(Path::new(&format!("{FIXTURES}/{INPUT}part-00001.parquet")));
    let schema = batch.schema();
    let mut fields: Vec<Field> = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if f.name() == column {
            fields.push(Field::new(f.name(), to.clone(), true));
            columns.push(cast(c, &to).unwrap());
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    let batch = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).unwrap();
    parquet_bytes(&batch)
}

fn parquet_bytes(batch: &RecordBatch) -> Bytes {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
    Bytes::from(buf)
}

/// Invariant 2 with the mistakes users make: each rerun fails before it writes, names the
/// problem, and leaves the last good outputs and `_SUCCESS` exactly as they were.
fn user_mistakes_leave_the_last_good_date(site: &Site) {
    site.ok();
    let good = site.snapshot();
    let base = site.base();
    let check = |what: &str, expect: &str, undo: &dyn Fn()| {
        let out = site.run("", &[]);
        assert_ne!(out.code, 0, "{what}: should fail");
        assert!(out.stderr.contains(expect), "{what}: {}", out.stderr);
        assert!(site.snapshot() == good, "{what}: the good outputs changed");
        assert_eq!(
            site.records().last().unwrap()["date_state"],
            "untouched",
            "{what}"
        );
        undo();
    };

    // A broken file dropped into the partition.
    site.put(
        &format!("{INPUT}part-00002.parquet"),
        Bytes::from_static(b"not parquet at all"),
    );
    check("broken file", "part-00002.parquet", &|| {
        site.delete(&format!("{INPUT}part-00002.parquet"))
    });
    // A file whose column has another type than the others' (both numbers: the model takes
    // either, but one date is one schema).
    site.put(
        &format!("{INPUT}part-00002.parquet"),
        with_column_as("monthly_charges", DataType::Float32),
    );
    check("column type differs", "do not share one schema", &|| {
        site.delete(&format!("{INPUT}part-00002.parquet"))
    });
    // A passthrough column that is missing.
    site.write_job(&base, "", "[\"id\", \"customer_name\"]");
    check(
        "missing passthrough",
        "passthrough column 'customer_name' is missing",
        &|| site.write_job(&base, "", "[\"id\"]"),
    );
    // A wrong model: the artifact does not match its checksum.
    let artifact = site
        .list("registry/churn/1/")
        .into_keys()
        .find(|k| k.starts_with("model"))
        .expect("a model artifact");
    let key = format!("registry/churn/1/{artifact}");
    let original = site.get(&key).unwrap();
    let mut tampered = original.to_vec();
    let last = tampered.len() - 2;
    tampered[last] ^= 1;
    site.put(&key, Bytes::from(tampered));
    check("tampered model", "sha256", &|| {
        site.put(&key, original.clone())
    });

    // Mended, the next run commits again.
    site.ok();
    assert!(site.assert_success_is_the_truth("after the mistakes"));
}

#[test]
fn user_mistakes_leave_the_last_good_outputs_locally() {
    user_mistakes_leave_the_last_good_date(&Site::local());
}

#[test]
fn user_mistakes_leave_the_last_good_outputs_on_s3() {
    user_mistakes_leave_the_last_good_date(&Site::s3("integrity-mistakes"));
}

/// Invariant 4: while one runner works on the date, a second is refused, naming the holder;
/// a crashed holder blocks the date only until its lease expires.
fn one_writer_per_date(site: &Site) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
    cmd.args(["run", "churn", "--date", DATE])
        .current_dir(site.dir().path(""))
        .env("FAILPOINTS", "run::footers=sleep(4000)")
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let first = cmd.spawn().unwrap();
    let pid = first.id();
    let leases = "state/leases/churn/2026-11-02/";
    let deadline = Instant::now() + Duration::from_secs(60);
    while site.list(leases).is_empty() {
        assert!(Instant::now() < deadline, "the first runner took no lease");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = site.run("", &[]);
    assert_ne!(second.code, 0, "a second runner must be refused");
    assert!(
        second.stderr.contains("is already being run by")
            && second.stderr.contains(&format!("pid {pid}")),
        "{}",
        second.stderr
    );
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(site.assert_success_is_the_truth("after two runners"));
    let records = site.records();
    assert_eq!(
        records.len(),
        1,
        "the refused runner records nothing: {records:?}"
    );
    assert_eq!(
        lease_states(site),
        [true],
        "the lease is released (and kept)"
    );

    // A holder killed mid-run leaves its lease; it blocks the date until it expires.
    let crashed = site.run("run::footers=return(exit)", &[]);
    assert_eq!(crashed.code, 137, "{}", crashed.stderr);
    assert_eq!(
        lease_states(site),
        [false],
        "a killed runner leaves its lease live; older generations are tidied"
    );
    let refused = site.run("", &[]);
    assert_ne!(refused.code, 0, "the lease is still live");
    assert!(
        refused.stderr.contains("is already being run by"),
        "{}",
        refused.stderr
    );
    std::thread::sleep(LEASE_TTL);
    site.ok();
    assert!(site.assert_success_is_the_truth("after the expired lease"));
}

#[test]
fn one_writer_per_date_locally() {
    one_writer_per_date(&Site::local());
}

#[test]
fn one_writer_per_date_on_s3() {
    one_writer_per_date(&Site::s3("integrity-lease"));
}

/// Invariant 5: a worker that panics or fails never lets its output be committed, and the
/// run ends, with any number of threads.
#[test]
fn a_failing_worker_never_commits_with_any_thread_count() {
    let site = Site::local();
    for threads in ["1", "2", "5"] {
        for action in ["panic", "1*off->panic", "2*off->return"] {
            let context = format!("{threads} threads, {action}");
            let out = site.run(
                &format!("run::score-batch={action}"),
                &["--threads", threads, "--batch-rows", "250"],
            );
            assert_ne!(out.code, 0, "{context}");
            assert!(!site.assert_success_is_the_truth(&context), "{context}");
            let data: Vec<_> = site
                .list(OUT)
                .into_keys()
                .filter(|k| is_data_file(k))
                .collect();
            assert!(data.is_empty(), "{context}: {data:?}");
        }
    }
    site.ok();
    assert!(site.assert_success_is_the_truth("after the failing workers"));
}

/// Invariant 7: a URI naming one object works (the output takes its name), on both stores;
/// a partition of zero-row files is a success with zero rows.
fn inputs_as_users_have_them(site: &Site) {
    let base = site.base();
    site.write_job(&base, "part-00001.parquet", "[\"id\"]");
    site.ok();
    assert!(site.assert_success_is_the_truth("single object"));
    let m: Value = serde_json::from_slice(&site.get(&format!("{OUT}_SUCCESS")).unwrap()).unwrap();
    let names: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["part-00001.parquet"]);
    assert_eq!(site.leftovers(), Vec::<String>::new());

    // Zero-row files: the date is committed, empty.
    site.write_job(&base, "", "[\"id\"]");
    let batch = read_parquet(Path::new(&format!("{FIXTURES}/{INPUT}part-00000.parquet")));
    let empty = parquet_bytes(&batch.slice(0, 0));
    site.put(&format!("{INPUT}part-00000.parquet"), empty.clone());
    site.put(&format!("{INPUT}part-00001.parquet"), empty);
    site.ok();
    assert!(site.assert_success_is_the_truth("zero rows"));
    assert_eq!(rows_committed(site), (0, 0));
}

#[test]
fn inputs_as_users_have_them_locally() {
    inputs_as_users_have_them(&Site::local());
}

#[test]
fn inputs_as_users_have_them_on_s3() {
    inputs_as_users_have_them(&Site::s3("integrity-inputs"));
}

/// Every committed row of the date as (id, score bits, prediction), sorted: what a clean run
/// and a recovered one must agree on, row for row.
fn committed_rows(site: &Site) -> Vec<(i64, u64, i64)> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};
    let m: Value = serde_json::from_slice(&site.get(&format!("{OUT}_SUCCESS")).unwrap()).unwrap();
    let mut rows = Vec::new();
    for f in m["files"].as_array().unwrap() {
        let bytes = site
            .get(&format!("{OUT}{}", f["name"].as_str().unwrap()))
            .unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let ids = cast(b.column_by_name("id").unwrap(), &DataType::Int64).unwrap();
            let ids = ids.as_primitive::<Int64Type>();
            let scores = b
                .column_by_name("score")
                .unwrap()
                .as_primitive::<Float64Type>();
            let pred = cast(b.column_by_name("prediction").unwrap(), &DataType::Int64).unwrap();
            let pred = pred.as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                rows.push((ids.value(i), scores.value(i).to_bits(), pred.value(i)));
            }
        }
    }
    rows.sort_unstable();
    rows
}

/// `kill -9` at a random instant of a run, then a rerun: the date always ends with the clean
/// run's rows, exactly, and nothing left behind; at no instant does `_SUCCESS` lie.
fn killed_while_writing(site: &Site, scenario: &str) {
    use rand::{Rng, SeedableRng};
    site.ok();
    let clean = committed_rows(site);
    assert_eq!(clean.len(), 1994);
    let (runs, seed) = crate::util::fault_plan(scenario, 8);
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut killed_with_marker = 0;
    for i in 0..runs {
        // Slowed down (a few ms a batch) so that a kill lands anywhere in it.
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
        cmd.args([
            "run",
            "churn",
            "--date",
            DATE,
            "--batch-rows",
            "100",
            "--threads",
            "2",
        ])
        .current_dir(site.dir().path(""))
        .env("FAILPOINTS", "run::score-batch=sleep(25)")
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let delay = rng.gen_range(0..500);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        let context = format!("{scenario} run {i}: killed after {delay} ms ({status})");
        if site.assert_success_is_the_truth(&context) {
            killed_with_marker += 1;
            assert_eq!(committed_rows(site), clean, "{context}");
        }
        std::thread::sleep(LEASE_TTL); // the dead runner's lease expires
        site.ok();
        assert!(site.assert_success_is_the_truth(&context));
        assert_eq!(
            committed_rows(site),
            clean,
            "{context}: rows after the rerun"
        );
        assert_eq!(site.leftovers(), Vec::<String>::new(), "{context}");
    }
    eprintln!("{scenario}: {runs} kills, {killed_with_marker} after the commit");
}

#[test]
fn killed_while_writing_then_run_again_locally() {
    killed_while_writing(&Site::local(), "kill -9 locally");
}

#[test]
fn killed_while_writing_then_run_again_on_s3() {
    killed_while_writing(&Site::s3("integrity-kill"), "kill -9 on S3");
}

/// Two runners started together on one date, again and again: one commits, the other is
/// refused naming it (or runs after it); the date is always whole and `_SUCCESS` true.
///
/// s3s-fs (the test server) does not make `If-None-Match: *` atomic with the write: two
/// runners creating the same lease generation at once can leave the object with one writer's
/// bytes under the other's checksum, so both then fail reading it ("body checksum mismatch",
/// for good: rereading does not help), under load about one round in fifty. AWS S3 and MinIO answer one of them 412.
/// Such a runner fails safe (it records a failed run and writes nothing), and the round is
/// counted as the server's, not as a commit; every other check holds for it.
fn two_runners_race(site: &Site, scenario: &str) {
    let (runs, _) = crate::util::fault_plan(scenario, 8);
    let mut refused = 0;
    let mut server_races = 0;
    let mut commits = 0;
    let lost_to_the_server =
        |err: &str| err.contains("/state/leases/") && err.contains("body checksum mismatch");
    for i in 0..runs {
        let spawn = || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
            cmd.args(["run", "churn", "--date", DATE])
                .current_dir(site.dir().path(""))
                .env_remove("AWS_ENDPOINT_URL")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let context = format!("{scenario} round {i}");
        let ok = outs.iter().filter(|o| o.status.success()).count();
        let errors: Vec<String> = outs
            .iter()
            .filter(|o| !o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect();
        assert!(
            ok >= 1 || errors.iter().all(|e| lost_to_the_server(e)),
            "{context}: neither runner committed:\n{}",
            errors.join("\n---\n")
        );
        for err in &errors {
            if lost_to_the_server(err) {
                server_races += 1;
                continue;
            }
            assert!(err.contains("is already being run by"), "{context}: {err}");
            refused += 1;
        }
        commits += ok;
        // Before any commit (the server raced both runners of round 0) the date has no
        // `_SUCCESS` yet; after one, it always tells the truth.
        let marked = site.assert_success_is_the_truth(&context);
        assert!(marked || commits == 0, "{context}");
        if commits > 0 {
            assert_eq!(rows_committed(site), (1994, 6), "{context}");
        }
    }
    assert!(commits >= runs / 2, "{commits} commits in {runs} rounds");
    let records = site.records();
    assert_eq!(
        records.len(),
        2 * runs - refused,
        "refused runners record nothing"
    );
    let failed = records
        .iter()
        .filter(|r| r["status"] != "succeeded")
        .count();
    assert_eq!(failed, server_races, "only runners the server raced fail");
    eprintln!(
        "{scenario}: {runs} rounds, {refused} runners refused, {server_races} lost to the server's race"
    );
}

#[test]
fn two_runners_on_one_date_locally() {
    two_runners_race(&Site::local(), "two runners locally");
}

#[test]
fn two_runners_on_one_date_on_s3() {
    two_runners_race(&Site::s3("integrity-race"), "two runners on S3");
}

/// A runner frozen (SIGSTOP) past its lease ttl loses the date to the next runner; when it
/// wakes it finds it out before its next write, stops, and leaves the new runner's outputs
/// alone.
fn a_stalled_runner_hands_the_date_over(site: &Site) {
    site.ok();
    let clean = committed_rows(site);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
    cmd.args(["run", "churn", "--date", DATE, "--batch-rows", "500"])
        .current_dir(site.dir().path(""))
        .env("FAILPOINTS", "run::score-batch=sleep(1500)")
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stalled = cmd.spawn().unwrap();
    let pid = stalled.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lease_states(site) != [false] {
        assert!(Instant::now() < deadline, "the first runner took no lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // into its scoring
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(LEASE_TTL);
    site.ok(); // takes the date over and commits it
    let committed = site.snapshot();
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let out = stalled.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the stalled runner must not succeed");
    assert!(stderr.contains("was lost"), "{stderr}");
    assert!(
        site.snapshot() == committed,
        "the stalled runner touched the new outputs"
    );
    assert!(site.assert_success_is_the_truth("after the hand-over"));
    assert_eq!(committed_rows(site), clean);
    let states: Vec<String> = site
        .records()
        .iter()
        .map(|r| r["date_state"].as_str().unwrap().to_string())
        .collect();
    // By start: the first run, the stalled one, the one that took over.
    assert_eq!(states, ["committed", "handed_over", "committed"]);
}

#[test]
fn a_stalled_runner_hands_the_date_over_locally() {
    a_stalled_runner_hands_the_date_over(&Site::local());
}

#[test]
fn a_stalled_runner_hands_the_date_over_on_s3() {
    a_stalled_runner_hands_the_date_over(&Site::s3("integrity-handover"));
}

/// Local folders reached through symbolic links: the run neither writes nor deletes through
/// a link in its output, nor writes scores where its quarantine (or input) really is.
#[test]
fn output_folders_reached_through_links_are_refused_before_anything_is_touched() {
    let site = Site::local();
    site.ok();
    let good = site.snapshot();
    let env = site.dir();
    // A link inside the output folder to data elsewhere: never deleted as a stale output.
    let precious = env.path("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("keep.parquet"), b"not ours").unwrap();
    std::os::unix::fs::symlink(&precious, env.path(&format!("out/{OUT}archive"))).unwrap();
    let out = site.run("", &[]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("is a symbolic link inside the output folder"),
        "{}",
        out.stderr
    );
    assert!(
        precious.join("keep.parquet").exists(),
        "deleted through a link"
    );
    std::fs::remove_file(env.path(&format!("out/{OUT}archive"))).unwrap();
    assert!(site.snapshot() == good);

    // A quarantine folder that is the output folder under another name.
    std::fs::create_dir_all(env.path("out/alias")).unwrap();
    std::os::unix::fs::symlink(env.path("out/scores/churn"), env.path("out/alias/q")).unwrap();
    let job = std::fs::read_to_string(env.path("jobs/churn.toml")).unwrap();
    env.write(
        "jobs/churn.toml",
        &job.replace("scores/churn_quarantine/dt={date}/", "alias/q/dt={date}/"),
    );
    let out = site.run("", &[]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("nest in each other once symbolic links are followed"),
        "{}",
        out.stderr
    );
    assert!(site.snapshot() == good, "outputs changed");
}

/// Credentials of the test's own s3s-fs (it listens on loopback only).
const OWN_KEY: &str = "nightshift-test";
const OWN_SECRET: &str = "nightshift-test-secret";

/// An s3s-fs of the test's own, on a free port and a data folder of its own, which the test
/// kills (`kill -9`) and starts again on the same port and data: the shared test server is
/// never touched.
struct OwnServer {
    port: u16,
    data: tempfile::TempDir,
    logs: tempfile::TempDir,
    child: Option<std::process::Child>,
    starts: usize,
}

impl OwnServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = OwnServer {
            port,
            data: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
            child: None,
            starts: 0,
        };
        server.spawn();
        server
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts s3s-fs on the port and data folder, and waits until it accepts connections.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "s3s-fs is already running");
        self.starts += 1;
        let log = self.logs.path().join(format!("s3s-fs.{}.log", self.starts));
        let mut child = match Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", OWN_KEY, "--secret-key", OWN_SECRET])
            .arg(self.data.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "s3s-fs is not on PATH, so the server-restart scenario cannot run: `make test` \
                 (or `make s3-server`) installs it (cargo install s3s-fs@0.14.1 --features \
                 binary --locked)"
            ),
            Err(e) => panic!("starting s3s-fs: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "s3s-fs on port {} exited ({status}): {}",
                    self.port,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not answer on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// `kill -9`: no clean shutdown, connections in flight are cut.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// Multipart uploads started and neither completed nor aborted: s3s-fs cannot list them
    /// (501), but keeps each as `.upload-<id>.json` (and its parts as `.upload_id-<id>.part-N`)
    /// at the root of its data folder.
    fn open_uploads(&self) -> Vec<String> {
        std::fs::read_dir(self.data.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(".upload-") || n.starts_with(".upload_id-"))
            .collect()
    }

    /// An admin client of this server, and a fresh bucket on it.
    fn bucket(&self, test: &str) -> TestBucket {
        use aws_sdk_s3::config::{Credentials, Region};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let endpoint = self.endpoint();
        let client = runtime.block_on(async {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(endpoint)
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new(OWN_KEY, OWN_SECRET, None, None, "test"))
                .load()
                .await;
            aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(true)
                    .build(),
            )
        });
        let name = crate::util_s3::unique_bucket_name(test);
        runtime
            .block_on(client.create_bucket().bucket(&name).send())
            .unwrap_or_else(|e| {
                panic!(
                    "creating bucket {name}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
        TestBucket {
            name,
            stores: nightshift::storage::Stores::default(),
            admin: crate::util_s3::Admin { runtime, client },
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Site {
    /// The job, its settings (with `s3_table` as their `[s3]` table), model and inputs in a
    /// bucket of a server of the test's own.
    fn s3_at(bucket: TestBucket, s3_table: &str) -> Self {
        let base = format!("s3://{}/", bucket.name);
        let site = Site::S3 {
            dir: Env::new(),
            bucket,
        };
        site.set_up(&base, s3_table);
        site
    }
}

/// `nightshift run churn --date DATE` with the own server's credentials (whatever the
/// environment has) and failpoints.
fn own_server_run(site: &Site, failpoints: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
    cmd.args(["run", "churn", "--date", DATE])
        .args(extra)
        .current_dir(site.dir().path(""))
        .env("NO_COLOR", "1")
        .env("FAILPOINTS", failpoints)
        .env("AWS_ACCESS_KEY_ID", OWN_KEY)
        .env("AWS_SECRET_ACCESS_KEY", OWN_SECRET)
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_MAX_ATTEMPTS")
        .env_remove("NIGHTSHIFT_LOG")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_S3");
    cmd
}

/// Rows of `clean` missing from `got`, and rows of `got` beyond `clean` (duplicates or
/// strangers); both sorted.
fn rows_lost_and_extra(clean: &[(i64, u64, i64)], got: &[(i64, u64, i64)]) -> (usize, usize) {
    let (mut i, mut j, mut lost, mut extra) = (0, 0, 0, 0);
    while i < clean.len() || j < got.len() {
        match (clean.get(i), got.get(j)) {
            (Some(a), Some(b)) if a == b => (i, j) = (i + 1, j + 1),
            (Some(a), Some(b)) if a < b => (i, lost) = (i + 1, lost + 1),
            (Some(_), None) => (i, lost) = (i + 1, lost + 1),
            _ => (j, extra) = (j + 1, extra + 1),
        }
    }
    (lost, extra)
}

/// Every data object a reader can see in the date's prefixes is a whole Parquet file.
fn assert_visible_objects_whole(site: &Site, context: &str) {
    for prefix in [OUT, QUARANTINE] {
        for key in site.list(prefix).into_keys().filter(|k| is_data_file(k)) {
            let bytes = site.get(&format!("{prefix}{key}")).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .unwrap_or_else(|e| panic!("{context}: {prefix}{key} is not whole: {e}"))
                    .build()
                    .unwrap();
            for batch in reader {
                batch.unwrap_or_else(|e| panic!("{context}: {prefix}{key} is not whole: {e}"));
            }
        }
    }
}

/// How a run with the server killed under it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestartOutcome {
    /// Its retries rode over the outage.
    Succeeded,
    /// Failed, and no `_SUCCESS` is there.
    FailedCleared,
    /// Failed before writing: the last good `_SUCCESS` and outputs are as they were.
    FailedUntouched,
    /// Failed after writing its `_SUCCESS`, which is true.
    FailedCommitted,
}

/// Issue 9, "the S3 server killed in the middle of a run and restarted": a job entirely on an
/// s3s-fs of the test's own; each round a slowed run, the server `kill -9`ed at a random instant
/// of it and started again (same port, same data) 0.5 to 1 s later. The run either rides over
/// the outage on its retries or fails cleanly (non-zero, and no `_SUCCESS`, or the last good one
/// untouched if it failed before writing); then a plain rerun (after the lease ttl if the run
/// failed) succeeds. A last round keeps the server down 8 s, longer than the retry budget, so
/// that the failing side is tried too. After each round: `_SUCCESS` true, the clean run's rows
/// exactly (none lost, none twice), every visible object whole, no temp object nor open
/// multipart upload left, the rerun's record `succeeded`.
/// `NIGHTSHIFT_FAULT_RUNS` (default 4) rounds, `NIGHTSHIFT_FAULT_SEED` replays the timings.
#[test]
fn s3_server_killed_mid_run_and_restarted() {
    use rand::{Rng, SeedableRng};
    let scenario = "S3 server killed and restarted";
    let began = Instant::now();
    let mut server = OwnServer::start();
    // The SDK's retries (backoffs of up to 1 s, 2 s, 4 s) ride over an outage of about a
    // second nearly always; a request is given up after 10 s whatever its attempts.
    let s3_table = format!(
        "\n[s3]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\n\
         timeout_secs = 10\nmax_attempts = 4\n",
        server.endpoint()
    );
    let site = Site::s3_at(server.bucket("server-restart"), &s3_table);
    let ok = |failpoints: &str, extra: &[&str], context: &str| {
        let out = run_bounded(
            own_server_run(&site, failpoints, extra),
            Duration::from_secs(90),
        );
        assert_eq!(out.code, 0, "{context}\n{}\n{}", out.stdout, out.stderr);
    };
    ok("", &[], "clean run");
    assert!(site.assert_success_is_the_truth("clean run"));
    let clean = committed_rows(&site);
    assert_eq!(clean.len(), 1994);

    // How long a slowed run takes with the server up: kills land within it.
    let slowed = ["--batch-rows", "100", "--threads", "2"];
    let t = Instant::now();
    ok("run::score-batch=sleep(25)", &slowed, "slowed run");
    let span = t.elapsed().as_millis() as u64;
    assert_eq!(committed_rows(&site), clean, "slowed run");

    eprintln!("{scenario}: a slowed run takes {span} ms");
    let (runs, seed) = crate::util::fault_plan(scenario, 4);
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut uploads_seen = 0;

    let mut round = |context: String, delay: Duration, outage: Duration| -> RestartOutcome {
        let before = site.get(&format!("{OUT}_SUCCESS"));
        let mut cmd = own_server_run(&site, "run::score-batch=sleep(25)", &slowed);
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
        let t = Instant::now();
        std::thread::sleep(delay);
        let done_early = rx.try_recv().ok();
        let ended_first = done_early.is_some();
        server.kill();
        std::thread::sleep(outage);
        server.spawn();
        let out = match done_early {
            Some(out) => out,
            None => rx
                .recv_timeout(Duration::from_secs(90))
                .unwrap_or_else(|_| {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    panic!("{context}: nightshift hung after the restart");
                }),
        }
        .unwrap();
        let took = t.elapsed();
        let context = format!(
            "{context}: killed after {} ms{}, down {} ms",
            delay.as_millis(),
            if ended_first {
                " (the run had ended)"
            } else {
                ""
            },
            outage.as_millis()
        );

        // What a reader sees once the server is back, before anything else runs.
        let committed = site.assert_success_is_the_truth(&context);
        assert_visible_objects_whole(&site, &context);
        if committed {
            let got = committed_rows(&site);
            let lost_extra = rows_lost_and_extra(&clean, &got);
            assert_eq!(lost_extra, (0, 0), "{context}: rows lost, rows extra");
            assert_eq!(got, clean, "{context}");
        }
        let reason = String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        let outcome = if out.status.success() {
            assert!(committed, "{context}: the run succeeded without a _SUCCESS");
            RestartOutcome::Succeeded
        } else if !committed {
            RestartOutcome::FailedCleared
        } else if site.get(&format!("{OUT}_SUCCESS")) == before {
            RestartOutcome::FailedUntouched
        } else {
            RestartOutcome::FailedCommitted
        };
        if outcome == RestartOutcome::Succeeded {
            eprintln!("{context}: {outcome:?} in {} ms", took.as_millis());
        } else {
            eprintln!(
                "{context}: {outcome:?} in {} ms: {reason}",
                took.as_millis()
            );
        }

        // Then a plain rerun succeeds, once a lease the outage left live has expired.
        if outcome != RestartOutcome::Succeeded {
            std::thread::sleep(LEASE_TTL);
        }
        ok("", &[], &format!("{context}: the rerun"));
        assert!(site.assert_success_is_the_truth(&context));
        let got = committed_rows(&site);
        let lost_extra = rows_lost_and_extra(&clean, &got);
        assert_eq!(
            lost_extra,
            (0, 0),
            "{context}: rows lost, rows extra after the rerun"
        );
        assert_eq!(got, clean, "{context}: rows after the rerun");
        assert_eq!(
            site.leftovers(),
            Vec::<String>::new(),
            "{context}: temp objects"
        );
        let uploads = server.open_uploads();
        uploads_seen += uploads.len();
        assert!(
            uploads.is_empty(),
            "{context}: multipart uploads left open: {uploads:?}"
        );
        let last = site.records().pop().unwrap();
        assert_eq!(last["status"], "succeeded", "{context}: the rerun's record");
        outcome
    };

    let mut outcomes = Vec::new();
    for i in 0..runs {
        // Within the first 80% of a run, so that nearly every kill lands in one.
        let delay = Duration::from_millis(rng.gen_range(0..(span * 4 / 5).max(1)));
        let outage = Duration::from_millis(rng.gen_range(500..1000));
        outcomes.push(round(format!("{scenario} run {i}"), delay, outage));
    }
    // Late in the run, once it has begun to write.
    let delay = Duration::from_millis(rng.gen_range(span / 2..(span * 4 / 5).max(span / 2 + 1)));
    let long = round(
        format!("{scenario}, down 8 s"),
        delay,
        Duration::from_secs(8),
    );
    let count = |o: RestartOutcome| outcomes.iter().filter(|&&x| x == o).count();
    eprintln!(
        "{scenario}: {runs} runs (down 0.5-1 s): {} succeeded, {} failed cleanly ({} with no \
         _SUCCESS, {} before writing with the last good _SUCCESS kept, {} after a true \
         _SUCCESS); down 8 s: {long:?}; rows lost 0, duplicates 0, open multipart uploads \
         {uploads_seen}; {:.1} s",
        count(RestartOutcome::Succeeded),
        runs - count(RestartOutcome::Succeeded),
        count(RestartOutcome::FailedCleared),
        count(RestartOutcome::FailedUntouched),
        count(RestartOutcome::FailedCommitted),
        began.elapsed().as_secs_f64()
    );
}

/// Sharded runs and backfills, with the checks above.
#[path = "shards.rs"]
mod shards;
