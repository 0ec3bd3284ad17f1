//! The pipeline end to end on S3: the real binary trains into a registry on S3 and runs the
//! example job (`jobs/churn_minio.toml`, pointed at a bucket of the test's own) with input,
//! outputs, quarantine and run records all on S3. What it writes must equal what a local run
//! of the same job on the same fixtures writes with the same model.
//!
//! Objects are uploaded, listed and read back with the admin client, not with nightshift.

use std::path::Path;
use std::process::Command;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Float64Type, Int64Type};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::Value;

use crate::util::{copy_dir, files_under, read_parquet, Env, Output, FIXTURES};
use crate::util_s3::{endpoint, settings, unique_bucket_name, TestBucket};

const JOB: &str = "churn_minio";
const DATE: &str = "2026-11-02";
const PARTS: [&str; 2] = ["part-00000.parquet", "part-00001.parquet"];
const OUTPUT: &str = "scores/churn/dt=2026-11-02/";
const QUARANTINE: &str = "scores/churn_quarantine/dt=2026-11-02/";
const RUNS: &str = "state/runs/churn_minio/2026-11-02/";

/// The example job with its bucket, `s3://nightshift/`, replaced by `base`.
fn example_job(base: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/churn_minio.toml");
    let job = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        job.matches("\"s3://nightshift/").count(),
        3,
        "input, registry and output of {path} are in s3://nightshift/"
    );
    job.replace("\"s3://nightshift/", &format!("\"{base}"))
}

/// How the binary learns where the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// An `[s3]` table in `nightshift.toml`; `AWS_ENDPOINT_URL` is unset.
    Settings,
    /// `AWS_ENDPOINT_URL` only, no `[s3]` table: what docs/minio.md tells users to do.
    Env,
}

/// A bucket of the test's own and a working folder whose `jobs/` holds the example job and
/// shared settings with the registry and state in that bucket.
struct S3Job {
    bucket: TestBucket,
    dir: Env,
    endpoint: Endpoint,
}

impl S3Job {
    fn new(test: &str, endpoint: Endpoint) -> Self {
        let bucket = TestBucket::new(test);
        let dir = Env::new();
        let b = &bucket.name;
        let mut shared =
            format!("registry = \"s3://{b}/registry/\"\nstate = \"s3://{b}/state/\"\n");
        if endpoint == Endpoint::Settings {
            let s3 = settings().s3;
            shared.push_str(&format!(
                "\n[s3]\nendpoint_url = \"{}\"\nregion = \"{}\"\nforce_path_style = true\n\
                 timeout_secs = 60\nmax_attempts = 3\n",
                s3.endpoint_url.unwrap(),
                s3.region.unwrap(),
            ));
        }
        dir.write("jobs/nightshift.toml", &shared);
        dir.write(
            &format!("jobs/{JOB}.toml"),
            &example_job(&format!("s3://{b}/")),
        );
        Self {
            bucket,
            dir,
            endpoint,
        }
    }

    fn uri(&self, key: &str) -> String {
        self.bucket.uri(key)
    }

    /// Runs `nightshift ARGS` in the working folder. Credentials come from the environment
    /// the tests run in (`AWS_ACCESS_KEY_ID`, ...), as they would for a user.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
        cmd.args(args)
            .current_dir(self.dir.path(""))
            .env("NO_COLOR", "1")
            .env_remove("NIGHTSHIFT_LOG")
            .env_remove("AWS_ENDPOINT_URL_S3");
        match self.endpoint {
            Endpoint::Settings => cmd.env_remove("AWS_ENDPOINT_URL"),
            Endpoint::Env => cmd.env("AWS_ENDPOINT_URL", endpoint()),
        };
        let out = cmd.output().expect("nightshift runs");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.code, 0,
            "nightshift {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out
    }

    fn put(&self, key: &str, body: Bytes) {
        self.put_all(vec![(key.to_string(), body)]);
    }

    /// Uploads objects, many at a time.
    fn put_all(&self, objects: Vec<(String, Bytes)>) {
        let (admin, bucket) = (&self.bucket.admin, &self.bucket.name);
        let put = stream::iter(objects)
            .map(|(key, body)| async move {
                admin
                    .client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| format!("uploading {key}: {}", DisplayErrorContext(e)))
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>();
        admin.runtime.block_on(put).unwrap();
    }

    fn upload_file(&self, key: &str, path: &Path) {
        self.put(key, Bytes::from(std::fs::read(path).unwrap()));
    }

    /// The training file and the partition of [`DATE`] (six rows with a NaN `data_gb`).
    fn upload_fixtures(&self) {
        let fixtures = Path::new(FIXTURES);
        self.upload_file("train/train.parquet", &fixtures.join("train/train.parquet"));
        for part in PARTS {
            self.upload_file(
                &format!("features/dt={DATE}/{part}"),
                &fixtures.join(format!("features/dt={DATE}/{part}")),
            );
        }
    }

    /// Trains churn@1 on the training data in the bucket, into the registry in the bucket.
    fn train(&self) {
        let out = self.ok(&[
            "model",
            "train",
            "--data",
            &self.uri("train/"),
            "--target",
            "churned",
            "--algorithm",
            "logistic",
            "--name",
            "churn",
            "--exclude",
            "id",
            "--registry",
            &self.uri("registry/"),
        ]);
        assert_eq!(out.stdout.trim(), "churn@1", "{}", out.stderr);
    }

    /// Every key under `prefix`, relative to it, sorted; all pages.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let (admin, bucket) = (&self.bucket.admin, &self.bucket.name);
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = admin
                .runtime
                .block_on(
                    admin
                        .client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(prefix)
                        .set_continuation_token(token.take())
                        .send(),
                )
                .unwrap_or_else(|e| panic!("listing {prefix}: {}", DisplayErrorContext(e)));
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(|k| k.strip_prefix(prefix).unwrap().to_string()),
            );
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        keys.sort();
        keys
    }

    fn get_all(&self, keys: &[String]) -> Vec<Bytes> {
        let (admin, bucket) = (&self.bucket.admin, &self.bucket.name);
        let get = stream::iter(keys)
            .map(|key| async move {
                let out = admin
                    .client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| format!("reading {key}: {}", DisplayErrorContext(e)))?;
                let body = out.body.collect().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(body.into_bytes())
            })
            .buffered(32)
            .try_collect::<Vec<_>>();
        admin.runtime.block_on(get).unwrap()
    }

    fn get(&self, key: &str) -> Bytes {
        self.get_all(&[key.to_string()]).remove(0)
    }

    fn json(&self, key: &str) -> Value {
        serde_json::from_slice(&self.get(key)).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    /// An object read with the parquet crate's own reader.
    fn parquet(&self, key: &str) -> RecordBatch {
        parquet_batch(self.get(key))
    }

    /// The run records of [`DATE`], oldest first.
    fn run_records(&self) -> Vec<Value> {
        let mut records: Vec<Value> = self
            .keys(RUNS)
            .iter()
            .map(|k| {
                assert!(k.ends_with(".json"), "{k}");
                self.json(&format!("{RUNS}{k}"))
            })
            .collect();
        records.sort_by_key(|r| r["started_at"].as_str().unwrap().to_string());
        records
    }
}

fn parquet_batch(bytes: Bytes) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let schema = reader.schema().clone();
    let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    concat_batches(&schema, &batches).unwrap()
}

fn i64s(b: &RecordBatch, column: &str) -> Vec<i64> {
    let c = b
        .column_by_name(column)
        .unwrap_or_else(|| panic!("{column}"));
    c.as_primitive::<Int64Type>().values().to_vec()
}

/// (id, score bits, prediction) in output order.
fn scored_rows(b: &RecordBatch) -> Vec<(i64, u64, i64)> {
    let scores = b
        .column_by_name("score")
        .unwrap()
        .as_primitive::<Float64Type>();
    let ids = i64s(b, "id");
    let predictions = i64s(b, "prediction");
    (0..b.num_rows())
        .map(|i| (ids[i], scores.value(i).to_bits(), predictions[i]))
        .collect()
}

/// (id, source_row, reason) in quarantine order.
fn quarantined_rows(b: &RecordBatch) -> Vec<(i64, i64, String)> {
    let reasons = b.column_by_name("reason").unwrap().as_string::<i32>();
    let (ids, rows) = (i64s(b, "id"), i64s(b, "source_row"));
    (0..b.num_rows())
        .map(|i| (ids[i], rows[i], reasons.value(i).to_string()))
        .collect()
}

fn column_types(b: &RecordBatch) -> Vec<String> {
    let schema = b.schema();
    let fields = schema.fields().iter();
    fields
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect()
}

fn local_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The same job on local files: the example job with its bucket replaced by the working
/// folder, the fixture partition copied there, and churn@1 trained locally with the same
/// command and seed.
fn local_run() -> Env {
    let env = Env::new();
    env.train_churn();
    copy_dir(&env.path("out/registry"), &env.path("registry"));
    copy_dir(
        &Path::new(FIXTURES).join(format!("features/dt={DATE}")),
        &env.path(&format!("features/dt={DATE}")),
    );
    env.write(&format!("jobs/{JOB}.toml"), &example_job(""));
    env.ok(&["run", JOB, "--date", DATE]);
    env
}

fn error_lines(out: &Output) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect()
}

#[test]
fn a_job_entirely_on_s3_writes_what_the_same_job_writes_locally() {
    let s = S3Job::new("e2e", Endpoint::Settings);
    s.upload_fixtures();
    s.train();

    // The registered version is the one local training registers from the same data with the
    // same seed: the same files (manifest, artifact and whatever else a version holds), and
    // all but the manifest (which records where and when it was trained) byte for byte.
    let manifest = s.json("registry/churn/1/manifest.json");
    assert_eq!(manifest["training_data"], s.uri("train/"));
    let local = local_run();
    let local_dir = local.path("registry/churn/1");
    let files = s.keys("registry/churn/1/");
    assert_eq!(files, files_under(&local_dir));
    let artifact = manifest["artifact"].as_str().unwrap();
    assert!(files.iter().any(|f| f == artifact), "{files:?}");
    let local_manifest = local_json(&local_dir.join("manifest.json"));
    assert_eq!(
        manifest["artifact_sha256"],
        local_manifest["artifact_sha256"]
    );
    for f in files.iter().filter(|f| *f != "manifest.json") {
        assert!(
            s.get(&format!("registry/churn/1/{f}")) == std::fs::read(local_dir.join(f)).unwrap(),
            "{f} differs between the S3 and the local registry"
        );
    }
    let show = s.ok(&[
        "model",
        "show",
        "churn@1",
        "--registry",
        &s.uri("registry/"),
    ]);
    assert!(show.stdout.contains("(verified)"), "{}", show.stdout);

    let out = s.ok(&["run", JOB, "--date", DATE]);
    assert!(
        out.stdout.contains("churn_minio 2026-11-02 succeeded"),
        "{}",
        out.stdout
    );
    for line in [
        "rows read                 2000".to_string(),
        "rows scored               1994".to_string(),
        format!("rows quarantined             6  -> {}", s.uri(QUARANTINE)),
        format!("output            {}", s.uri(OUTPUT)),
    ] {
        assert!(out.stdout.contains(&line), "{line:?} in:\n{}", out.stdout);
    }

    // Everything a run leaves is on S3.
    assert_eq!(s.keys(OUTPUT), ["_SUCCESS", PARTS[0], PARTS[1]]);
    assert_eq!(s.keys(QUARANTINE), PARTS);
    let success = s.json(&format!("{OUTPUT}_SUCCESS"));
    assert_eq!(success["model_sha256"], manifest["artifact_sha256"]);
    assert_eq!(success["quarantine_prefix"], s.uri(QUARANTINE));
    for (file, part) in success["files"].as_array().unwrap().iter().zip(PARTS) {
        assert_eq!(file["name"], part);
        let input = &file["input"];
        assert_eq!(input["uri"], s.uri(&format!("features/dt={DATE}/{part}")));
        // Not the ETag: s3s-fs lists objects without one.
        assert_eq!(
            input["size"],
            std::fs::metadata(Path::new(FIXTURES).join(format!("features/dt={DATE}/{part}")))
                .unwrap()
                .len()
        );
        assert!(input["last_modified"].is_string(), "{input}");
    }
    let records = s.run_records();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["run_id"], success["run_id"]);
    assert_eq!(record["partitions"], 2);
    assert_eq!(record["output"], s.uri(OUTPUT));
    assert_eq!(record["quarantine"], s.uri(QUARANTINE));
    assert_eq!(record["counts"], success["counts"]);
    assert_eq!(record["counts"]["rows_quarantined"], 6);
    if let Some(open) = s.bucket.admin.open_uploads(&s.bucket.name) {
        assert!(open.is_empty(), "multipart uploads left open: {open:?}");
    }

    // The same rows, scores and predictions, in the same order, as the local run.
    let local_out = local.path(&format!("scores/churn/dt={DATE}"));
    let local_q = local.path(&format!("scores/churn_quarantine/dt={DATE}"));
    let local_success = local_json(&local_out.join("_SUCCESS"));
    assert_eq!(success["counts"], local_success["counts"]);
    assert_eq!(success["model_sha256"], local_success["model_sha256"]);
    for part in PARTS {
        let got = s.parquet(&format!("{OUTPUT}{part}"));
        let expected = read_parquet(&local_out.join(part));
        assert_eq!(column_types(&got), column_types(&expected), "{part}");
        assert_eq!(got.num_rows(), 997, "{part}");
        assert!(
            scored_rows(&got) == scored_rows(&expected),
            "{part}: scores on S3 differ from the local run's"
        );
        let run_ids = got.column_by_name("run_id").unwrap().as_string::<i32>();
        assert!(run_ids.iter().all(|r| r == success["run_id"].as_str()));

        let got = s.parquet(&format!("{QUARANTINE}{part}"));
        let expected = read_parquet(&local_q.join(part));
        assert_eq!(column_types(&got), column_types(&expected), "{part}");
        assert_eq!(
            quarantined_rows(&got),
            quarantined_rows(&expected),
            "{part}"
        );
        assert_eq!(got.num_rows(), 3, "{part}");
        let sources = got
            .column_by_name("source_file")
            .unwrap()
            .as_string::<i32>();
        let source = s.uri(&format!("features/dt={DATE}/{part}"));
        assert!(sources.iter().all(|f| f == Some(source.as_str())));
    }
}

#[test]
fn a_rerun_on_s3_replaces_the_outputs_without_duplicates() {
    // Through AWS_ENDPOINT_URL alone, as the MinIO guide does it.
    let s = S3Job::new("rerun", Endpoint::Env);
    s.upload_fixtures();
    s.train();
    s.ok(&["run", JOB, "--date", DATE]);
    let first_success = s.json(&format!("{OUTPUT}_SUCCESS"));
    let first: Vec<Vec<(i64, u64, i64)>> = PARTS
        .iter()
        .map(|p| scored_rows(&s.parquet(&format!("{OUTPUT}{p}"))))
        .collect();
    // Outputs of an input that is gone now must not survive the rerun.
    let stale = s.get(&format!("{OUTPUT}{}", PARTS[0]));
    s.put(&format!("{OUTPUT}part-99999.parquet"), stale);
    let stale = s.get(&format!("{QUARANTINE}{}", PARTS[0]));
    s.put(&format!("{QUARANTINE}part-99999.parquet"), stale);

    s.ok(&["run", JOB, "--date", DATE]);
    assert_eq!(s.keys(OUTPUT), ["_SUCCESS", PARTS[0], PARTS[1]]);
    assert_eq!(s.keys(QUARANTINE), PARTS);
    let success = s.json(&format!("{OUTPUT}_SUCCESS"));
    assert_ne!(success["run_id"], first_success["run_id"]);
    assert_eq!(success["counts"], first_success["counts"]);
    let mut ids = Vec::new();
    for (part, first) in PARTS.iter().zip(&first) {
        let got = s.parquet(&format!("{OUTPUT}{part}"));
        assert!(
            scored_rows(&got) == *first,
            "{part}: the rerun scored differently"
        );
        let run_ids = got.column_by_name("run_id").unwrap().as_string::<i32>();
        assert!(
            run_ids.iter().all(|r| r == success["run_id"].as_str()),
            "{part} was not rewritten by the rerun"
        );
        ids.extend(i64s(&got, "id"));
    }
    let rows = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((rows, ids.len()), (1994, 1994), "duplicate rows");

    let records = s.run_records();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["status"] == "succeeded"));
    assert_eq!(records[1]["run_id"], success["run_id"]);
}

#[test]
fn a_prefix_of_more_than_a_thousand_objects_is_scored_whole() {
    // More than one listing page (1,000 keys) of inputs, and of outputs.
    const FILES: usize = 1_005;
    const ROWS: usize = 3;
    let s = S3Job::new("many-inputs", Endpoint::Settings);
    s.upload_file(
        "train/train.parquet",
        &Path::new(FIXTURES).join("train/train.parquet"),
    );
    s.train();
    let source =
        read_parquet(&Path::new(FIXTURES).join("features/dt=2026-11-01/part-00000.parquet"));
    let objects = (0..FILES)
        .map(|i| {
            let rows = source.slice(i * ROWS % (source.num_rows() - ROWS), ROWS);
            let mut w = ArrowWriter::try_new(Vec::new(), rows.schema(), None).unwrap();
            w.write(&rows).unwrap();
            let key = format!("features/dt={DATE}/part-{i:05}.parquet");
            (key, Bytes::from(w.into_inner().unwrap()))
        })
        .collect();
    s.put_all(objects);

    // Reading a thousand tiny objects is waiting, not computing: more workers than cores.
    let out = s.ok(&["run", JOB, "--date", DATE, "--threads", "16"]);
    assert!(
        out.stdout.contains("partitions                1005"),
        "{}",
        out.stdout
    );
    let records = s.run_records();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["partitions"], FILES);
    assert_eq!(record["counts"]["rows_in"], FILES * ROWS);
    assert_eq!(record["counts"]["rows_scored"], FILES * ROWS);

    let keys = s.keys(OUTPUT);
    assert_eq!(keys.len(), FILES + 1);
    assert_eq!(keys[0], "_SUCCESS");
    let outputs: Vec<String> = keys[1..].iter().map(|k| format!("{OUTPUT}{k}")).collect();
    let written: usize = s
        .get_all(&outputs)
        .into_iter()
        .map(|b| parquet_batch(b).num_rows())
        .sum();
    assert_eq!(record["counts"]["rows_scored"], written);
    let success = s.json(&format!("{OUTPUT}_SUCCESS"));
    assert_eq!(success["files"].as_array().unwrap().len(), FILES);
    assert!(s.keys(QUARANTINE).is_empty());
}

#[test]
fn a_missing_input_bucket_or_prefix_is_one_clear_line() {
    let s = S3Job::new("missing-input", Endpoint::Settings);
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "-".into());

    // A date with nothing under its prefix.
    let out = s.run(&["run", JOB, "--date", DATE]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let expected = format!(
        "error: no Parquet files for {DATE} at {}: nothing to score",
        s.uri(&format!("features/dt={DATE}/"))
    );
    assert_eq!(error_lines(&out), [expected.as_str()], "{}", out.stderr);

    // A bucket that does not exist.
    let missing = unique_bucket_name("never-created");
    let job = example_job(&format!("s3://{}/", s.bucket.name)).replace(
        &format!("s3://{}/features/", s.bucket.name),
        &format!("s3://{missing}/features/"),
    );
    s.dir.write(&format!("jobs/{JOB}.toml"), &job);
    let out = s.run(&["run", JOB, "--date", DATE]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    let line = lines[0];
    assert!(
        line.contains(&format!("s3://{missing}/features/dt={DATE}/")),
        "the error names the URI: {line}"
    );
    assert!(
        line.ends_with(&format!("bucket '{missing}' does not exist")),
        "{line}"
    );
    assert!(!out.stderr.contains(&secret));

    // Both failures are recorded, and neither left anything under the outputs.
    let records = s.run_records();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["status"] == "failed"));
    let error = records[1]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("bucket '{missing}' does not exist")),
        "{error}"
    );
    assert!(s.keys("scores/").is_empty());
}

/// A model trained in Python and kept in the bucket: `model import s3://...` with its drift
/// reference in the bucket registers it in the bucket's registry, byte for byte, and the
/// example job scores the day with it, exactly as it scores the same day locally.
#[test]
fn a_lightgbm_model_in_the_bucket_is_imported_and_scored_on_s3() {
    let s = S3Job::new("import", Endpoint::Settings);
    s.upload_fixtures();
    let model = Path::new(FIXTURES).join("models/churn_lightgbm.txt");
    s.upload_file("models/churn.txt", &model);
    let out = s.ok(&[
        "model",
        "import",
        &s.uri("models/churn.txt"),
        "--name",
        "churn",
        "--reference",
        &s.uri("train/"),
        "--target",
        "churned",
    ]);
    assert_eq!(out.stdout.trim(), "churn@1", "{}", out.stderr);
    let stored = s.keys("registry/churn/1/");
    let artifact = stored
        .iter()
        .find(|k| k.ends_with(".txt"))
        .unwrap_or_else(|| panic!("no model file in {stored:?}"));
    assert_eq!(
        s.get(&format!("registry/churn/1/{artifact}")),
        Bytes::from(std::fs::read(&model).unwrap()),
        "the registry keeps the file byte for byte"
    );
    assert!(
        stored.iter().any(|k| k.starts_with("profile-")),
        "{stored:?}"
    );
    s.ok(&["run", JOB, "--date", DATE]);

    // The same model and day, locally.
    let local = Env::new();
    local.ok(&[
        "model",
        "import",
        model.to_str().unwrap(),
        "--name",
        "churn",
    ]);
    local.write(
        "jobs/lgb.toml",
        &format!(
            "name = \"lgb\"\nschedule = \"30 2 * * *\"\ntimezone = \"UTC\"\ndate = \"yesterday\"\n\
             [input]\nuri = \"{FIXTURES}/features/dt={{date}}/\"\n[model]\nname = \"churn\"\n\
             version = 1\n[output]\nuri = \"out/dt={{date}}/\"\npassthrough = [\"id\"]\n"
        ),
    );
    local.ok(&["run", "lgb", "--date", DATE]);
    for part in PARTS {
        let on_s3 = s.parquet(&format!("{OUTPUT}{part}"));
        let here = read_parquet(&local.path(&format!("out/dt={DATE}/{part}")));
        let scores = |b: &RecordBatch| {
            b.column_by_name("score")
                .unwrap()
                .as_primitive::<Float64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(i64s(&on_s3, "id"), i64s(&here, "id"));
        assert_eq!(scores(&on_s3), scores(&here));
    }
}
