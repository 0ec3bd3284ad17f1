//! A flaky network between nightshift and S3, through [`FaultProxy`]: server errors, resets,
//! stalls and bodies cut short on a share of requests, each scenario run many times with the
//! real binary on a job entirely on S3 (inputs, registry, outputs, quarantine, run records,
//! reports). After every run, whatever its outcome:
//!
//! - it succeeded with the clean run's rows (`id`, `score`, `prediction`), exactly, none lost
//!   and none twice; or it failed, and then no `_SUCCESS` says otherwise (a run that failed
//!   before writing leaves the last good outputs and their `_SUCCESS` as they were);
//! - `_SUCCESS`, when there, lists exactly the data objects there are;
//! - every data object visible is a whole Parquet file;
//! - no multipart upload the client knew of is left open;
//! - the run record, when written, says what happened.
//!
//! `NIGHTSHIFT_FAULT_RUNS` sets the runs per scenario (default 8), `NIGHTSHIFT_FAULT_SEED`
//! replays the faults of a printed seed. docs/reliability.md has the measured figures.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::util::display::array_value_to_string;
use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::Bytes;
use nightshift::storage::{self, S3Storage, Storage, MIN_PART_SIZE};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::util::{files_under, Env, Output, FIXTURES};
use crate::util_s3::{pattern, settings, Fault, FaultLog, FaultMix, FaultProxy, TestBucket};

const DATE: &str = "2026-11-02";
const INPUT: &str = "features/dt=2026-11-02/";
const OUT: &str = "scores/churn/dt=2026-11-02/";
const QUARANTINE: &str = "scores/churn_quarantine/dt=2026-11-02/";
const RUNS: &str = "state/runs/churn/2026-11-02/";
/// Rows the clean run scores on [`DATE`] (2,000 read, 6 quarantined).
const CLEAN_ROWS: usize = 1994;

/// Per-attempt limits short enough that a stall costs a second or two, not the defaults' ten.
const TIMEOUTS: &str = "connect_timeout = \"1s\"\nfirst_byte_timeout = \"1s\"\n\
                        inactivity_timeout = \"1s\"\n";

/// One row of an output, as text: (object, id, score, prediction).
type Row = (String, String, String, String);

/// A bucket holding the example job's inputs and model, a working folder whose settings reach
/// the bucket through a [`FaultProxy`], and the proxy.
struct Site {
    bucket: TestBucket,
    dir: Env,
    proxy: FaultProxy,
}

impl Site {
    fn new(test: &str, seed: u64) -> Self {
        let proxy = FaultProxy::start(FaultMix::default(), seed)
            .expect("the fault proxy speaks plain HTTP: NIGHTSHIFT_TEST_S3_ENDPOINT is https");
        let bucket = TestBucket::new(test);
        let dir = Env::new();
        let b = &bucket.name;
        let region = settings().s3.region.unwrap();
        dir.write(
            "jobs/nightshift.toml",
            &format!(
                "registry = \"s3://{b}/registry/\"\nstate = \"s3://{b}/state/\"\n\
                 reports = \"s3://{b}/reports/\"\n\n[s3]\nendpoint_url = \"{}\"\n\
                 region = \"{region}\"\nforce_path_style = true\ntimeout_secs = 60\n\
                 max_attempts = 3\n{TIMEOUTS}",
                proxy.endpoint
            ),
        );
        dir.write(
            "jobs/churn.toml",
            &format!(
                r#"name = "churn"
schedule = "30 2 * * *"

[input]
uri = "s3://{b}/features/dt={{date}}/"

[model]
name = "churn"
version = 1

[output]
uri = "s3://{b}/scores/churn/dt={{date}}/"
quarantine_uri = "s3://{b}/scores/churn_quarantine/dt={{date}}/"
passthrough = ["id"]
"#
            ),
        );
        let site = Self { bucket, dir, proxy };
        // The model trained once per test process, and the fixtures of DATE.
        let trained = Env::new();
        trained.train_churn();
        let registry = trained.path("out/registry");
        for rel in files_under(&registry) {
            site.put(
                &format!("registry/{rel}"),
                std::fs::read(registry.join(&rel)).unwrap(),
            );
        }
        for part in ["part-00000.parquet", "part-00001.parquet"] {
            let bytes = std::fs::read(format!("{FIXTURES}/{INPUT}{part}")).unwrap();
            site.put(&format!("{INPUT}{part}"), bytes);
        }
        site
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        self.bucket.put(key, bytes);
    }

    fn get(&self, key: &str) -> Option<Bytes> {
        self.bucket.get(key)
    }

    /// Every object under a prefix, relative to it, with its size and ETag.
    fn list(&self, prefix: &str) -> BTreeMap<String, (u64, String)> {
        let a = &self.bucket.admin;
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = a
                .runtime
                .block_on(
                    a.client
                        .list_objects_v2()
                        .bucket(&self.bucket.name)
                        .prefix(prefix)
                        .set_continuation_token(token.take())
                        .send(),
                )
                .unwrap();
            for o in page.contents() {
                let key = o.key().unwrap().strip_prefix(prefix).unwrap().to_string();
                let etag = o.e_tag().unwrap_or_default().to_string();
                out.insert(key, (o.size().unwrap_or(0) as u64, etag));
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out
    }

    /// `nightshift run churn --date DATE` through the proxy; killed (and failed) after two
    /// minutes, so a hang shows.
    fn run(&self) -> (Output, Duration) {
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_nightshift"))
            .args(["run", "churn", "--date", DATE])
            .current_dir(self.dir.path(""))
            .env("NO_COLOR", "1")
            .env_remove("NIGHTSHIFT_LOG")
            .env_remove("FAILPOINTS")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nightshift starts");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let limit = Duration::from_secs(120);
        let out = match rx.recv_timeout(limit) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                panic!("nightshift hung for {limit:?} behind the fault proxy");
            }
        };
        let out = Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        (out, started.elapsed())
    }

    /// The run records of DATE by key.
    fn records(&self) -> BTreeMap<String, Value> {
        self.list(RUNS)
            .into_keys()
            .filter(|k| k.ends_with(".json"))
            .map(|k| {
                let bytes = self.get(&format!("{RUNS}{k}")).unwrap();
                (k, serde_json::from_slice(&bytes).unwrap())
            })
            .collect()
    }

    /// Every visible data object of the date, read whole: (output rows, quarantine rows).
    /// Fails on an object that is not a complete Parquet file.
    fn visible_rows(&self, context: &str) -> (Vec<Row>, usize) {
        let mut rows = Vec::new();
        for name in self.list(OUT).into_keys().filter(|k| is_data_file(k)) {
            let batch = self.read_parquet(&format!("{OUT}{name}"), context);
            rows.extend(scores(&name, &batch));
        }
        let mut quarantined = 0;
        for name in self
            .list(QUARANTINE)
            .into_keys()
            .filter(|k| is_data_file(k))
        {
            quarantined += self
                .read_parquet(&format!("{QUARANTINE}{name}"), context)
                .num_rows();
        }
        rows.sort();
        (rows, quarantined)
    }

    fn read_parquet(&self, key: &str, context: &str) -> RecordBatch {
        let bytes = self
            .get(key)
            .unwrap_or_else(|| panic!("{context}: {key} is listed but cannot be read"));
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap_or_else(|e| panic!("{context}: {key} is not a whole Parquet file: {e}"));
        let schema = builder.schema().clone();
        let reader = builder
            .build()
            .unwrap_or_else(|e| panic!("{context}: {key} is not a whole Parquet file: {e}"));
        let batches: Vec<RecordBatch> = reader
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{context}: {key} is not a whole Parquet file: {e}"));
        arrow::compute::concat_batches(&schema, &batches).unwrap()
    }

    /// `_SUCCESS` lists exactly the data objects of both prefixes, with their sizes and ETags.
    /// Returns whether there is one.
    fn assert_success_is_the_truth(&self, context: &str) -> bool {
        let Some(marker) = self.get(&format!("{OUT}_SUCCESS")) else {
            return false;
        };
        let m: Value = serde_json::from_slice(&marker)
            .unwrap_or_else(|e| panic!("{context}: _SUCCESS is not a manifest: {e}"));
        let (out, quarantine) = (self.list(OUT), self.list(QUARANTINE));
        let (mut listed_out, mut listed_q) = (BTreeSet::new(), BTreeSet::new());
        for f in m["files"].as_array().unwrap() {
            let name = f["name"].as_str().unwrap();
            let found = out
                .get(name)
                .unwrap_or_else(|| panic!("{context}: _SUCCESS lists {name}, which is gone"));
            assert_eq!(found.0, f["size"].as_u64().unwrap(), "{context}: {name}");
            assert_eq!(found.1, f["etag"].as_str().unwrap(), "{context}: {name}");
            listed_out.insert(name.to_string());
            if let Some(q) = f["quarantine"].as_object() {
                let name = q["name"].as_str().unwrap();
                let found = quarantine.get(name).unwrap_or_else(|| {
                    panic!("{context}: _SUCCESS lists quarantine {name}, which is gone")
                });
                assert_eq!(found.0, q["size"].as_u64().unwrap(), "{context}: {name}");
                listed_q.insert(name.to_string());
            }
        }
        let data = |m: &BTreeMap<String, (u64, String)>| -> BTreeSet<String> {
            m.keys().filter(|k| is_data_file(k)).cloned().collect()
        };
        assert_eq!(data(&out), listed_out, "{context}: data objects in {OUT}");
        assert_eq!(data(&quarantine), listed_q, "{context}: in {QUARANTINE}");
        true
    }

    /// Multipart uploads the server started through the proxy that are still open: those the
    /// client heard of (it should have completed or aborted them), and those whose answer the
    /// proxy spoiled (the client cannot know their id; a lifecycle rule, or the next run's
    /// clean-up on servers that list uploads, removes them).
    fn open_uploads(&self) -> (Vec<String>, Vec<String>) {
        open_uploads(&self.bucket, &self.proxy.log())
    }
}

fn open_uploads(bucket: &TestBucket, log: &FaultLog) -> (Vec<String>, Vec<String>) {
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    if let Some(open) = bucket.admin.open_uploads(&bucket.name) {
        // A server that lists uploads tells about every one; the proxy's log is then redundant.
        let answered: BTreeSet<&str> = log
            .uploads
            .iter()
            .filter(|u| u.answered)
            .map(|u| u.key.as_str())
            .collect();
        for key in open {
            if answered.contains(key.as_str()) {
                known.push(key);
            } else {
                unknown.push(key);
            }
        }
        return (known, unknown);
    }
    // Otherwise each upload the proxy saw is asked to abort: a success means it was open (and
    // is not any more). S3 answers a closed one `NoSuchUpload`, s3s-fs `AccessDenied`.
    for upload in &log.uploads {
        let a = &bucket.admin;
        let aborted = a.runtime.block_on(
            a.client
                .abort_multipart_upload()
                .bucket(&bucket.name)
                .key(&upload.key)
                .upload_id(&upload.upload_id)
                .send(),
        );
        let open = match aborted {
            Ok(_) => true,
            Err(e) if matches!(e.code(), Some("NoSuchUpload" | "AccessDenied")) => false,
            Err(e) => panic!(
                "aborting upload {} of {}: {}",
                upload.upload_id,
                upload.key,
                aws_sdk_s3::error::DisplayErrorContext(e)
            ),
        };
        if open {
            let id = format!("{} ({})", upload.key, upload.upload_id);
            if upload.answered {
                known.push(id);
            } else {
                unknown.push(id);
            }
        }
    }
    (known, unknown)
}

fn is_data_file(rel: &str) -> bool {
    rel.ends_with(".parquet")
        && rel
            .split('/')
            .all(|s| !s.starts_with('_') && !s.starts_with('.'))
}

/// The `id`, `score` and `prediction` of every row of an output, as text (floats in their
/// shortest exact form).
fn scores(object: &str, batch: &RecordBatch) -> Vec<Row> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("{object} has no column {name}"))
    };
    let (id, score, prediction) = (column("id"), column("score"), column("prediction"));
    (0..batch.num_rows())
        .map(|i| {
            (
                object.to_string(),
                array_value_to_string(id, i).unwrap(),
                array_value_to_string(score, i).unwrap(),
                array_value_to_string(prediction, i).unwrap(),
            )
        })
        .collect()
}

/// How the runs of one scenario ended.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    succeeded: usize,
    failed_cleanly: usize,
    rows_lost: usize,
    duplicates: usize,
    orphaned_uploads: usize,
    slowest: Duration,
    total: Duration,
    /// The clean reference run's time, to compare with.
    clean: Duration,
    failures: Vec<String>,
}

/// Runs the job `runs` times with `mix` on every request, checking every invariant after each
/// run; prints and returns the tally.
fn scenario(name: &str, mix: FaultMix) -> Tally {
    let (runs, seed) = crate::util::fault_plan(name, 8);
    let site = Site::new(name, seed);

    // The reference: a clean run through the same proxy, without faults.
    let (clean, clean_took) = site.run();
    assert_eq!(
        clean.code, 0,
        "clean run: {}\n{}",
        clean.stdout, clean.stderr
    );
    assert!(site.assert_success_is_the_truth("clean run"));
    let (reference, _) = site.visible_rows("clean run");
    assert_eq!(reference.len(), CLEAN_ROWS);

    site.proxy.set_mix(mix);
    let mut tally = Tally {
        runs,
        clean: clean_took,
        ..Tally::default()
    };
    for i in 0..runs {
        let context = format!("{name} run {i} (NIGHTSHIFT_FAULT_SEED={seed})");
        let marker_before = site.get(&format!("{OUT}_SUCCESS"));
        let records_before = site.records();
        let (out, took) = site.run();
        tally.slowest = tally.slowest.max(took);
        tally.total += took;
        let context = format!("{context}, exit {}: {}", out.code, out.stderr.trim());

        // What a reader sees now.
        let committed = site.assert_success_is_the_truth(&context);
        let (rows, quarantined) = site.visible_rows(&context);
        let ids: BTreeSet<(&str, &str)> = rows.iter().map(|r| (&*r.0, &*r.1)).collect();
        tally.duplicates += rows.len() - ids.len();
        if committed {
            let reference_ids = reference.iter().map(|r| (&*r.0, &*r.1));
            tally.rows_lost += reference_ids.filter(|id| !ids.contains(id)).count();
            assert_eq!(
                rows, reference,
                "{context}: committed rows differ from the clean run's"
            );
            assert_eq!(quarantined, 6, "{context}: quarantined rows");
        }

        // The run's own record, if it could write one.
        let records = site.records();
        let new: Vec<&Value> = records
            .iter()
            .filter(|(k, _)| !records_before.contains_key(*k))
            .map(|(_, r)| r)
            .collect();
        assert!(
            new.len() <= 1,
            "{context}: {} records for one run",
            new.len()
        );
        let record = new.first();
        if out.code == 0 {
            assert!(committed, "{context}: succeeded without _SUCCESS");
            let r = record.unwrap_or_else(|| panic!("{context}: succeeded without a record"));
            assert_eq!(r["status"], "succeeded", "{context}");
            assert_eq!(r["date_state"], "committed", "{context}");
            assert_eq!(r["counts"]["rows_scored"], CLEAN_ROWS, "{context}");
            tally.succeeded += 1;
        } else {
            if let Some(r) = record {
                assert_eq!(r["status"], "failed", "{context}");
                match r["date_state"].as_str() {
                    Some("cleared" | "incomplete") => {
                        assert!(!committed, "{context}: _SUCCESS after a failed run")
                    }
                    Some("untouched") => assert_eq!(
                        site.get(&format!("{OUT}_SUCCESS")),
                        marker_before,
                        "{context}: an untouched date's _SUCCESS changed"
                    ),
                    other => panic!("{context}: a failed run says the date is {other:?}"),
                }
            } else if committed {
                // No record: failed before its lease, or the record itself could not be
                // written (the run says so). Either way the marker must be true (checked).
                assert!(
                    out.stderr.contains("record")
                        || site.get(&format!("{OUT}_SUCCESS")) == marker_before,
                    "{context}: a new _SUCCESS without a record"
                );
            }
            tally.failed_cleanly += 1;
            tally
                .failures
                .push(format!("run {i}: {}", out.stderr.trim()));
        }
    }
    let (known, unknown) = site.open_uploads();
    assert_eq!(known, Vec::<String>::new(), "{name}: uploads left open");
    tally.orphaned_uploads = known.len() + unknown.len();
    report(name, seed, &tally, &site.proxy.log());
    tally
}

/// One line per scenario on stderr (`--nocapture` shows it), the figures of
/// docs/reliability.md.
fn report(name: &str, seed: u64, t: &Tally, log: &FaultLog) {
    let faults: Vec<String> = log
        .faults
        .iter()
        .filter(|(f, _)| **f != Fault::Pass)
        .map(|(f, n)| format!("{f:?} {n}"))
        .collect();
    let clean = if t.clean.is_zero() {
        String::new()
    } else {
        format!(" (clean run {:.1} s)", t.clean.as_secs_f64())
    };
    let line = format!(
        "{name}: runs {}, succeeded {}, failed cleanly {}, rows lost {}, duplicates {}, \
         orphaned uploads {}; {} of {} requests spoiled ({}); mean run {:.1} s, slowest {:.1} s\
         {clean}; NIGHTSHIFT_FAULT_SEED={seed}",
        t.runs,
        t.succeeded,
        t.failed_cleanly,
        t.rows_lost,
        t.duplicates,
        t.orphaned_uploads,
        log.spoiled(),
        log.requests,
        faults.join(", "),
        t.total.as_secs_f64() / t.runs.max(1) as f64,
        t.slowest.as_secs_f64(),
    );
    eprintln!("{line}");
    for f in &t.failures {
        eprintln!("  {f}");
    }
    // Collected across scenarios for docs/reliability.md when asked.
    if let Ok(path) = std::env::var("NIGHTSHIFT_FAULT_REPORT") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(file, "{line}").unwrap();
    }
}

/// The verdicts every scenario must meet: nothing lost, nothing twice, nothing left open, and
/// retries carrying most runs through.
fn assert_survived(name: &str, t: &Tally) {
    assert_eq!(t.rows_lost, 0, "{name}");
    assert_eq!(t.duplicates, 0, "{name}");
    assert_eq!(t.succeeded + t.failed_cleanly, t.runs, "{name}");
    assert!(
        t.succeeded * 4 >= t.runs * 3,
        "{name}: only {} of {} runs succeeded despite retries: {:#?}",
        t.succeeded,
        t.runs,
        t.failures
    );
}

#[test]
fn server_errors_5_percent() {
    let mix = FaultMix {
        server_errors: 0.05,
        ..FaultMix::default()
    };
    let t = scenario("server_errors_5_percent", mix);
    assert_survived("server errors", &t);
}

#[test]
fn resets_2_percent() {
    let mix = FaultMix {
        resets: 0.02,
        ..FaultMix::default()
    };
    let t = scenario("resets_2_percent", mix);
    assert_survived("resets", &t);
}

#[test]
fn stalls_2_percent() {
    let mix = FaultMix {
        stalls: 0.02,
        ..FaultMix::default()
    };
    let t = scenario("stalls_2_percent", mix);
    assert_survived("stalls", &t);
    // A stall costs about a first-byte (or inactivity) timeout and a backoff, not the 60 s
    // request timeout; each run has a few.
    assert!(
        t.slowest < Duration::from_secs(30),
        "a run took {:?} with 2% stalls",
        t.slowest
    );
}

/// A store on the bucket through `endpoint`, configured as a job's `[s3]` table with
/// [`TIMEOUTS`] would, parts of the smallest size S3 allows.
fn store_via(bucket: &TestBucket, endpoint: &str) -> S3Storage {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut s3 = settings().s3;
    s3.endpoint_url = Some(endpoint.to_string());
    s3.connect_timeout = Some(Duration::from_secs(1));
    s3.first_byte_timeout = Some(Duration::from_secs(1));
    s3.inactivity_timeout = Some(Duration::from_secs(1));
    let client = runtime.block_on(storage::s3_client(&s3));
    S3Storage::new(bucket.name.clone(), client, Arc::new(runtime))
        .with_max_attempts(3)
        .with_part_size(MIN_PART_SIZE)
}

/// Multipart uploads (what outputs larger than a part use) under all three kinds of fault at
/// once: each object is either committed whole or absent, and no upload the client started is
/// left open. The job's outputs are too small for multipart, hence this test at the store's
/// level.
#[test]
fn multipart_uploads_under_faults() {
    let (runs, seed) = crate::util::fault_plan("multipart_uploads_under_faults", 8);
    let bucket = TestBucket::new("faults-multipart");
    let proxy = FaultProxy::start(
        FaultMix {
            server_errors: 0.05,
            resets: 0.02,
            stalls: 0.02,
            trickle: None,
        },
        seed,
    )
    .expect("plain HTTP endpoint");
    let store = store_via(&bucket, &proxy.endpoint);
    let mut tally = Tally {
        runs,
        ..Tally::default()
    };
    for i in 0..runs {
        let started = Instant::now();
        // Two parts: one of 5 MiB and a short last one; each object's bytes differ.
        let mut data = pattern(MIN_PART_SIZE + 1_000_000 + i);
        data.rotate_left(i * 7919);
        let key = format!("out/object-{i}.bin");
        let written = store.create(&key).and_then(|mut sink| {
            sink.write_all(&data)?;
            sink.commit()
        });
        let took = started.elapsed();
        tally.slowest = tally.slowest.max(took);
        tally.total += took;
        let a = &bucket.admin;
        let visible = a.runtime.block_on(async {
            let out = a
                .client
                .get_object()
                .bucket(&bucket.name)
                .key(&key)
                .send()
                .await
                .ok()?;
            Some(out.body.collect().await.unwrap().into_bytes())
        });
        match written {
            Ok(()) => {
                let visible = visible.unwrap_or_else(|| panic!("{key}: committed but absent"));
                assert!(visible == data, "{key}: committed bytes differ");
                tally.succeeded += 1;
            }
            Err(e) => {
                assert!(visible.is_none(), "{key}: failed ({e:#}) but visible");
                tally.failed_cleanly += 1;
                tally.failures.push(format!("object {i}: {e:#}"));
            }
        }
    }
    let log = proxy.log();
    let (known, unknown) = open_uploads(&bucket, &log);
    assert_eq!(
        known,
        Vec::<String>::new(),
        "uploads the client knew left open"
    );
    tally.orphaned_uploads = known.len() + unknown.len();
    report("multipart_uploads_under_faults", seed, &tally, &log);
    if !unknown.is_empty() {
        eprintln!("  uploads whose CreateMultipartUpload answer was lost: {unknown:?}");
    }
    assert_survived("multipart uploads", &tally);
}

/// A slow transfer that never stops is not a stall: with every response body of 1 KiB or more
/// trickling in six pieces 300 ms apart (1.5 s each, more than the inactivity timeout), the
/// run succeeds with a clean run's rows and makes exactly the requests a clean rerun makes:
/// no body was cut and fetched again.
#[test]
fn slow_bodies_are_not_stalls() {
    let site = Site::new("faults-slow", 1);
    let (first, _) = site.run();
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let before = site.proxy.log().requests;
    let (rerun, _) = site.run();
    assert_eq!(rerun.code, 0, "{}\n{}", rerun.stdout, rerun.stderr);
    let clean_requests = site.proxy.log().requests - before;

    site.proxy.set_mix(FaultMix {
        trickle: Some(Duration::from_millis(300)),
        ..FaultMix::default()
    });
    let before = site.proxy.log().requests;
    let (out, took) = site.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(site.assert_success_is_the_truth("slow bodies"));
    let (rows, _) = site.visible_rows("slow bodies");
    assert_eq!(rows.len(), CLEAN_ROWS);
    let log = site.proxy.log();
    let trickled = log.faults.get(&Fault::Trickle).copied().unwrap_or(0);
    eprintln!(
        "slow bodies: {trickled} responses trickled, run took {:.1} s",
        took.as_secs_f64()
    );
    assert!(trickled > 0, "no body was slow: {log:?}");
    assert_eq!(
        log.requests - before,
        clean_requests,
        "requests of a slow run and of a clean one: a slow body was cut and retried"
    );
}

/// The three per-attempt limits are read from `[s3]`, and mistakes in them are reported at
/// their line like every other field's.
#[test]
fn stall_timeouts_are_read_and_checked() {
    let env = Env::new();
    env.job("churn", "in/dt={date}/", "");
    env.write(
        "jobs/nightshift.toml",
        "[s3]\nconnect_timeout = \"2s\"\nfirst_byte_timeout = \"500ms\"\n\
         inactivity_timeout = \"1m\"\n",
    );
    let cfg = nightshift::config::load(&[env.path("jobs")]).unwrap();
    let s3 = &cfg.settings.s3;
    assert_eq!(s3.connect_timeout, Some(Duration::from_secs(2)));
    assert_eq!(s3.first_byte_timeout, Some(Duration::from_millis(500)));
    assert_eq!(s3.inactivity_timeout, Some(Duration::from_secs(60)));

    env.write(
        "jobs/nightshift.toml",
        "[s3]\nconnect_timeout = \"0s\"\nfirst_byte_timeout = \"10\"\ninactivity_timeout = 5\n",
    );
    let out = env.run(&["validate"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    let text = format!("{}{}", out.stdout, out.stderr);
    for expected in [
        "nightshift.toml:2:",
        "field 's3.connect_timeout' must be more than 0",
        "nightshift.toml:3:",
        "field 's3.first_byte_timeout': invalid duration '10'",
        "nightshift.toml:4:",
        "inactivity_timeout",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}
