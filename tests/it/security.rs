//! Hostile requests and secrets: names in HTTP paths never reach storage, online scores come
//! only from a pinned version in its job's registry, the API token is read the way secrets are
//! mounted, no credential ever shows in anything nightshift produces, and the daemon never
//! reads every run record ever written.

use std::ops::Range;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use nightshift::config;
use nightshift::daemon::clock::ManualClock;
use nightshift::daemon::http::{bearer_token, token_digest};
use nightshift::daemon::metrics::Metrics;
use nightshift::daemon::predict::{self, ModelCache};
use nightshift::daemon::scheduler::{Runner, Scheduler};
use nightshift::model::Registry;
use nightshift::record::{RunHistory, RunRecord, RunStatus};
use nightshift::run::RunFailed;
use nightshift::schema::ModelRef;
use nightshift::score::Counts;
use nightshift::storage::{LocalStorage, Location, ObjectMeta, ObjectSink, Storage, Stores, Uri};
use nightshift::timetable::missed_dates;
use serde_json::{json, Value};

use crate::daemon::Daemon;
use crate::util::{files_under, Env, FIXTURES};

// ---------------------------------------------------------------------------------------------
// Helpers: a daemon with an environment of our choosing, and plain HTTP.

/// A schedule that does not fire while a test runs (midnight on January 1st).
const QUIET: &str = "0 0 1 1 *";

/// `nightshift -vv --log-format json daemon` in the test folder, with `vars` set on top of an
/// environment without nightshift's or AWS's variables.
fn start(env: &Env, vars: &[(&str, &str)]) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
    cmd.args([
        "-vv",
        "--log-format",
        "json",
        "daemon",
        "--listen",
        "127.0.0.1:0",
    ])
    .current_dir(env.dir.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("NIGHTSHIFT_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(vars.iter().copied());
    Daemon::spawn(cmd)
}

/// A job file that only the test runs (`extra` goes at the top level, `model` into
/// `[model]`).
fn job(env: &Env, name: &str, input: &str, model: &str, extra: &str) {
    env.write(
        &format!("jobs/{name}.toml"),
        &format!(
            r#"name = "{name}"
schedule = "{QUIET}"
timezone = "UTC"
date = "yesterday"
{extra}

[input]
uri = "{input}"

[model]
{model}

[output]
uri = "out/scores/{name}/dt={{date}}/"
passthrough = ["id"]
"#
        ),
    );
}

fn fixture_input() -> String {
    format!("{FIXTURES}/features/dt={{date}}/")
}

/// Trains `churn` into another registry (the next version there).
fn train_into(env: &Env, registry: &str, algorithm: &str) {
    env.ok(&[
        "model",
        "train",
        "--data",
        &format!("{FIXTURES}/train/train.parquet"),
        "--target",
        "churned",
        "--algorithm",
        algorithm,
        "--name",
        "churn",
        "--exclude",
        "id",
        "--registry",
        registry,
    ]);
}

/// A few rows of the fixtures as the predict endpoint takes them (no nulls, all features).
fn some_rows() -> Value {
    json!({ "rows": [
        {"tenure_months": 3, "monthly_charges": 70.5, "data_gb": 12.0, "support_calls": 4,
         "plan": "basic", "region": "north"},
        {"tenure_months": 40, "monthly_charges": 20.0, "data_gb": 1.5, "support_calls": 0,
         "plan": "premium", "region": "south"},
        {"tenure_months": 12, "monthly_charges": 55.0, "data_gb": 30.0, "support_calls": 2,
         "plan": "standard", "region": "east"},
    ]})
}

/// What the predict endpoint should answer for `rows` with a model from a registry folder.
fn expected_answer(registry: &Path, model: &ModelRef, rows: &Value) -> Value {
    let loc = Stores::default()
        .locate(&Uri::Local(registry.to_path_buf()))
        .unwrap();
    let loaded = Arc::new(Registry::new(loc).load(model).unwrap());
    let batch = predict::rows_to_batch(&loaded, rows.to_string().as_bytes()).unwrap();
    predict::score(loaded, &batch).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A store that remembers what was asked of it.

#[derive(Debug, Default)]
struct Watched {
    gets: AtomicUsize,
    keys: Mutex<Vec<String>>,
}

impl Watched {
    fn saw(&self, key: &str) {
        self.keys.lock().unwrap().push(key.to_string());
    }
    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
    fn keys(&self) -> Vec<String> {
        self.keys.lock().unwrap().clone()
    }
}

impl Storage for Watched {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.saw(prefix);
        LocalStorage.list(prefix)
    }
    fn get(&self, key: &str) -> Result<Bytes> {
        self.saw(key);
        self.gets.fetch_add(1, Ordering::SeqCst);
        LocalStorage.get(key)
    }
    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.saw(key);
        LocalStorage.get_ranges(key, ranges)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.saw(key);
        LocalStorage.head(key)
    }
    fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.saw(key);
        LocalStorage.put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.saw(key);
        LocalStorage.put_if_absent(key, data)
    }
    fn create(&self, key: &str) -> Result<Box<dyn ObjectSink>> {
        self.saw(key);
        LocalStorage.create(key)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.saw(key);
        LocalStorage.delete(key)
    }
    fn uri(&self, key: &str) -> Uri {
        LocalStorage.uri(key)
    }
    fn remove_stale_temps(&self, prefix: &str, older_than: DateTime<Utc>) -> Result<usize> {
        self.saw(prefix);
        LocalStorage.remove_stale_temps(prefix, older_than)
    }
}

fn watched(path: &Path) -> (Arc<Watched>, Location) {
    let w = Arc::new(Watched::default());
    let loc = Location {
        store: w.clone(),
        key: path.to_string_lossy().into_owned(),
    };
    (w, loc)
}

// ---------------------------------------------------------------------------------------------
// Names in paths.

/// Names that are not names never reach the registry's storage, whatever asks for them.
#[test]
fn registry_refuses_names_that_are_not_names_without_touching_storage() {
    let env = Env::new();
    env.train_churn();
    let (store, loc) = watched(&env.path("out/registry"));
    let registry = Registry::new(loc);
    let cache = ModelCache::default();
    for name in [
        "",
        "..",
        "../registry",
        "/",
        "churn/../churn",
        "a b",
        "churn%2F",
        "ç",
    ] {
        let model = ModelRef {
            name: name.into(),
            version: 1,
        };
        let e = registry.versions(name).unwrap_err();
        assert!(
            format!("{e:#}").contains("must use only letters, digits, '_' and '-'"),
            "{e:#}"
        );
        assert!(registry.manifest(&model).is_err());
        assert!(registry.load(&model).is_err());
        assert!(cache.get(&registry, &model).is_err());
    }
    assert_eq!(store.keys(), Vec::<String>::new(), "storage was asked");
    assert!(nightshift::schema::is_valid_name("churn_v2-eu"));
    // A manifest edited to point outside its folder is refused before reading.
    let manifest_path = env.path("out/registry/churn/1/manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["artifact"] = json!("../../../secret.json");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let e = registry
        .load(&ModelRef {
            name: "churn".into(),
            version: 1,
        })
        .unwrap_err();
    assert!(format!("{e:#}").contains("not a file beside it"), "{e:#}");
    assert!(!store.keys().iter().any(|k| k.contains("secret")));
}

/// Over HTTP: encoded slashes, dots and bytes in names and versions are 400s with a JSON
/// error; a model outside the registry, reachable by `..`, is never served.
#[test]
fn http_paths_with_traversal_or_bad_names_are_refused() {
    let env = Env::new();
    env.train_churn();
    // A model beside the registry, which `churn/..` or `%2E%2E` would reach.
    crate::util::copy_dir(
        &env.path("out/registry/churn"),
        &env.path("out/outside/churn"),
    );
    crate::util::copy_dir(
        &env.path("out/registry/churn"),
        &env.path("out/registry/unpinned"),
    );
    job(
        &env,
        "churn",
        &fixture_input(),
        "name = \"churn\"\nversion = 1",
        "",
    );
    let token = "tok-for-paths";
    let d = start(&env, &[("NIGHTSHIFT_API_TOKEN", token)]);
    let rows = some_rows().to_string();
    let bad_model = [
        "/models/%2F/1/predict",
        "/models/../1/predict",
        "/models/%2E%2E/1/predict",
        "/models/..%2Foutside%2Fchurn/1/predict",
        "/models/%2E%2E%2Foutside%2Fchurn/1/predict",
        "/models/churn%2F..%2F..%2Foutside%2Fchurn/1/predict",
        "/models/%5C..%5Cchurn/1/predict",
        "/models/churn%00/1/predict",
        "/models/%20churn/1/predict",
    ];
    for path in bad_model {
        let (status, body) = d.predict(path, &rows);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("is not a model name"),
            "{path}: {body}"
        );
    }
    for path in [
        "/models/churn/..%2F1/predict",
        "/models/churn/0/predict",
        "/models/churn/+1/predict",
        "/models/churn/-1/predict",
        "/models/churn/1.0/predict",
        "/models/churn/99999999999/predict",
        "/models/churn/%2E%2E/predict",
    ] {
        let (status, body) = d.predict(path, &rows);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("version number"),
            "{path}: {body}"
        );
    }
    // Bytes that are not UTF-8: still a JSON 400.
    let (status, body) = d.predict("/models/%FF%FE/1/predict", &rows);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("invalid path"));
    // A query naming a job that cannot exist, or something else.
    for q in ["job=..%2Fx", "job=", "registry=out", "job=churn&x=1"] {
        let (status, body) = d.predict(&format!("/models/churn/1/predict?{q}"), &rows);
        assert_eq!(status, 400, "{q}: {body}");
    }
    // A valid name that no job pins is not served, though it is in the registry.
    let (status, body) = d.predict("/models/unpinned/1/predict", &rows);
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no job pins"));
    // Job names.
    let auth = format!("Bearer {token}");
    for name in ["%2E%2E", "..%2Fchurn", "%2F", "churn%2F..", "%FF"] {
        let (status, body) = d.get(&format!("/jobs/{name}"));
        assert_eq!(status, 400, "/jobs/{name}: {body}");
        assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
        let (status, body) = d.request(
            "POST",
            &format!("/jobs/{name}/runs"),
            &[("Authorization", &auth)],
            r#"{"date": "2026-11-02"}"#,
        );
        assert_eq!(status, 400, "POST /jobs/{name}/runs: {body}");
    }
    // A long name is not echoed whole.
    let long = "x".repeat(5000) + "%2F";
    let (status, body) = d.get(&format!("/jobs/{long}"));
    assert_eq!(status, 400);
    assert!(body.len() < 300, "{body}");
    // The right names still work.
    let (status, body) = d.predict("/models/churn/1/predict", &rows);
    assert_eq!(status, 200, "{body}");
    assert_eq!(d.get_json("/jobs/churn")["name"], "churn");
    assert!(
        files_under(&env.path("out/state")).is_empty(),
        "nothing ran"
    );
    assert_eq!(d.terminate(), 0);
}

// ---------------------------------------------------------------------------------------------
// Pinned versions, each from its job's registry.

#[test]
fn online_predictions_come_from_the_registry_of_the_job_pinning_the_version() {
    let env = Env::new();
    // The shared registry: churn@1, a logistic regression; and churn@3, a copy nobody pins.
    env.train_churn();
    crate::util::copy_dir(
        &env.path("out/registry/churn/1"),
        &env.path("out/registry/churn/3"),
    );
    let m3 = env.path("out/registry/churn/3/manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&m3).unwrap()).unwrap();
    manifest["version"] = json!(3);
    std::fs::write(&m3, manifest.to_string()).unwrap();
    // Another registry: churn@1, a decision tree, and churn@2, naive Bayes.
    train_into(&env, "out/registry2/", "decision-tree");
    train_into(&env, "out/registry2/", "gaussian-nb");
    let rows = some_rows();
    let churn = |version| ModelRef {
        name: "churn".into(),
        version,
    };
    let shared_1 = expected_answer(&env.path("out/registry"), &churn(1), &rows);
    let other_1 = expected_answer(&env.path("out/registry2"), &churn(1), &rows);
    let other_2 = expected_answer(&env.path("out/registry2"), &churn(2), &rows);
    assert_ne!(
        shared_1["predictions"], other_1["predictions"],
        "the two churn@1 must score differently for this test to mean anything"
    );
    assert_ne!(other_1["predictions"], other_2["predictions"]);

    // alpha pins churn@1 in the shared registry, beta churn@2 in its own.
    job(
        &env,
        "alpha",
        &fixture_input(),
        "name = \"churn\"\nversion = 1",
        "",
    );
    job(
        &env,
        "beta",
        &fixture_input(),
        "name = \"churn\"\nversion = 2\nregistry = \"out/registry2/\"",
        "",
    );
    let d = start(&env, &[]);
    let body = rows.to_string();
    let (status, answer) = d.predict("/models/churn/1/predict", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, shared_1, "churn@1 comes from alpha's registry");
    let (status, answer) = d.predict("/models/churn/2/predict", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, other_2, "churn@2 comes from beta's registry");
    // With the job named: the same; a job that pins another version: 404.
    assert_eq!(
        d.predict("/models/churn/2/predict?job=beta", &body).1,
        other_2
    );
    let (status, answer) = d.predict("/models/churn/1/predict?job=beta", &body);
    assert_eq!(status, 404, "{answer}");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("job 'beta' pins model churn@2, not churn@1"));
    // Versions no job pins are not served, though a registry holds them.
    for v in [3, 7] {
        let (status, answer) = d.predict(&format!("/models/churn/{v}/predict"), &body);
        assert_eq!(status, 404, "churn@{v}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains(&format!("no job pins churn@{v}")),
            "{message}"
        );
        assert!(message.contains("churn@1 (job alpha)"), "{message}");
    }
    let (status, answer) = d.predict("/models/nope/1/predict", &body);
    assert_eq!(status, 404, "{answer}");

    // gamma pins churn@2 in the shared registry, which does not have it: the version is
    // ambiguous until a job is named.
    job(
        &env,
        "gamma",
        &fixture_input(),
        "name = \"churn\"\nversion = 2",
        "",
    );
    let start = Instant::now();
    while d.get_json("/jobs")["jobs"].as_array().unwrap().len() != 3 {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, answer) = d.predict("/models/churn/2/predict", &body);
    assert_eq!(status, 409, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains("beta, gamma") && message.contains("?job=NAME"),
        "{message}"
    );
    assert_eq!(
        d.predict("/models/churn/2/predict?job=beta", &body).1,
        other_2
    );
    let (status, answer) = d.predict("/models/churn/2/predict?job=gamma", &body);
    assert_eq!(status, 404, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("versions: 1, 3"));
    // The same versions as data, from the registry's typed answer.
    assert_eq!(answer["versions"], json!([1, 3]), "{answer}");

    // alpha moves to the other registry: churn@1 is that registry's now, not the one loaded
    // (and kept) before, as the cache is keyed by registry too.
    job(
        &env,
        "alpha",
        &fixture_input(),
        "name = \"churn\"\nversion = 1\nregistry = \"out/registry2/\"",
        "",
    );
    let start = Instant::now();
    loop {
        let (status, answer) = d.predict("/models/churn/1/predict", &body);
        assert_eq!(status, 200, "{answer}");
        if answer == other_1 {
            break;
        }
        assert_eq!(answer, shared_1);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the edit was not picked up:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.terminate(), 0);
}

// ---------------------------------------------------------------------------------------------
// The API token.

#[test]
fn api_token_is_trimmed_and_the_bearer_scheme_is_case_insensitive() {
    assert_eq!(token_digest("s3cr3t\n"), token_digest("s3cr3t"));
    assert_eq!(token_digest("  s3cr3t \r\n"), token_digest("s3cr3t"));
    assert_eq!(
        token_digest(" \n"),
        None,
        "a blank token turns triggers off"
    );
    assert_ne!(token_digest("s3cr3t"), token_digest("s3cr3"));
    for header in [
        "Bearer s3cr3t",
        "bearer s3cr3t",
        "BEARER s3cr3t",
        "bEaReR   s3cr3t  ",
        "Bearer\ts3cr3t",
    ] {
        assert_eq!(bearer_token(header), Some("s3cr3t"), "{header:?}");
    }
    for header in [
        "Basic s3cr3t",
        "Bearers3cr3t",
        "Bearer",
        "Bearer   ",
        "s3cr3t",
    ] {
        assert_eq!(bearer_token(header), None, "{header:?}");
    }

    // Through the binary, with the token as a mounted secret file gives it.
    let env = Env::new();
    job(
        &env,
        "churn",
        &fixture_input(),
        "name = \"churn\"\nversion = 1",
        "",
    );
    let d = start(&env, &[("NIGHTSHIFT_API_TOKEN", "s3cr3t\n")]);
    let trigger = |auth: &str| {
        d.request(
            "POST",
            "/jobs/nope/runs",
            &[("Authorization", auth)],
            r#"{"date": "2026-11-02"}"#,
        )
        .0
    };
    // 404: past the token check, to a job that does not exist (nothing runs).
    for auth in ["Bearer s3cr3t", "bearer s3cr3t", "BEARER  s3cr3t "] {
        assert_eq!(trigger(auth), 404, "{auth:?}");
    }
    for auth in ["Bearer s3cr3t\\n", "Basic s3cr3t", "Bearer s3cr3", "Bearer"] {
        assert_eq!(trigger(auth), 401, "{auth:?}");
    }
    assert!(d.log().contains("\"triggers\":\"on\""), "{}", d.log());
    assert_eq!(d.terminate(), 0);
}

// ---------------------------------------------------------------------------------------------
// Secrets never show.

const CANARY_TOKEN: &str = "canary-token-7f3a9c1e5b";
const CANARY_SECRET: &str = "canary-secret-4d8e2b6a0c";

/// Every file under a folder that contains a canary, with the canary.
fn files_with_canaries(dir: &Path) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    for f in files_under(dir) {
        let bytes = std::fs::read(dir.join(&f)).unwrap_or_default();
        for c in [CANARY_TOKEN, CANARY_SECRET] {
            if bytes.windows(c.len()).any(|w| w == c.as_bytes()) {
                found.push((f.clone(), c));
            }
        }
    }
    found
}

fn assert_no_canary(what: &str, text: &str) {
    for c in [CANARY_TOKEN, CANARY_SECRET] {
        assert!(!text.contains(c), "{what} contains the canary {c}:\n{text}");
    }
}

/// The API token and the AWS secret key, planted as canaries in the daemon's environment,
/// never show in its logs, its HTTP answers (errors included), run records, reports, outputs
/// or what `nightshift run` prints, while S3 calls fail for want of the right secret.
#[test]
fn no_secret_shows_in_logs_records_reports_or_responses() {
    let endpoint = crate::util_s3::endpoint();
    let env = Env::new();
    env.train_churn();
    env.write(
        "jobs/nightshift.toml",
        &format!(
            "registry = \"out/registry/\"\nstate = \"out/state/\"\nreports = \"out/reports/\"\n\
             \n[s3]\nendpoint_url = \"{endpoint}\"\nregion = \"us-east-1\"\n\
             force_path_style = true\ntimeout_secs = 20\nmax_attempts = 1\n"
        ),
    );
    let bucket = crate::util_s3::unique_bucket_name("canary");
    job(
        &env,
        "local_ok",
        &fixture_input(),
        "name = \"churn\"\nversion = 1",
        "",
    );
    job(
        &env,
        "s3_input",
        &format!("s3://{bucket}/in/dt={{date}}/"),
        "name = \"churn\"\nversion = 1",
        "",
    );
    job(
        &env,
        "s3_model",
        &fixture_input(),
        &format!("name = \"churn\"\nversion = 1\nregistry = \"s3://{bucket}/registry/\""),
        "",
    );
    let mounted_token = format!("{CANARY_TOKEN}\n");
    let vars = [
        ("NIGHTSHIFT_API_TOKEN", mounted_token.as_str()),
        ("AWS_ACCESS_KEY_ID", "nightshift-test"),
        ("AWS_SECRET_ACCESS_KEY", CANARY_SECRET),
        ("AWS_REGION", "us-east-1"),
    ];
    let d = start(&env, &vars);
    let mut answers = String::new();
    let mut keep = |what: &str, (status, body): (u16, String)| {
        answers.push_str(&format!("{what} -> {status} {body}\n"));
        (status, body)
    };
    let auth = format!("Bearer {CANARY_TOKEN}");
    let wrong = format!("Bearer {CANARY_TOKEN}-but-not-quite");
    let date = r#"{"date": "2026-11-02"}"#;
    for job in ["local_ok", "s3_input", "s3_model"] {
        let path = format!("/jobs/{job}/runs");
        let (status, body) = keep(
            "trigger",
            d.request("POST", &path, &[("Authorization", &auth)], date),
        );
        assert_eq!(status, 202, "{job}: {body}");
        let (status, _) = keep(
            "wrong token",
            d.request("POST", &path, &[("Authorization", &wrong)], date),
        );
        assert_eq!(status, 401);
    }
    keep(
        "bad body",
        d.request(
            "POST",
            "/jobs/local_ok/runs",
            &[("Authorization", &auth)],
            "{\"date\": 1}",
        ),
    );
    // Wait for the three runs to be recorded.
    let start = Instant::now();
    loop {
        let jobs = d.get_json("/jobs");
        let done = jobs["jobs"].as_array().unwrap().iter().all(|j| {
            j["running"].as_array().is_some_and(|r| r.is_empty())
                && j["waiting"].as_array().is_some_and(|w| w.is_empty())
                && j["last_runs"][0]["status"].is_string()
        });
        if done {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "runs not recorded: {jobs}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let jobs = keep("/jobs", d.get("/jobs")).1;
    let jobs: Value = serde_json::from_str(&jobs).unwrap();
    let status_of = |name: &str| {
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap()["last_runs"][0]
            .clone()
    };
    assert_eq!(status_of("local_ok")["status"], "succeeded", "{jobs}");
    for failing in ["s3_input", "s3_model"] {
        let last = status_of(failing);
        assert_eq!(last["status"], "failed", "{jobs}");
        assert!(last["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    for path in [
        "/jobs/local_ok",
        "/jobs/s3_input",
        "/jobs/s3_model",
        "/metrics",
        "/readyz",
        "/healthz",
        "/jobs/nope",
    ] {
        keep(path, d.get(path));
    }
    let rows = some_rows().to_string();
    for path in [
        "/models/churn/1/predict?job=s3_model",
        "/models/churn/1/predict?job=local_ok",
        "/models/churn/1/predict",
        "/models/churn/9/predict",
    ] {
        keep(path, d.request("POST", path, &[], &rows));
    }
    assert!(
        answers.contains("predict?job=s3_model -> 500"),
        "the S3 registry cannot be read: {answers}"
    );
    let daemon_log = d.log.clone();
    assert_eq!(d.terminate(), 0);
    let daemon_log = daemon_log.lock().unwrap().clone();
    assert!(
        daemon_log.contains("SignatureDoesNotMatch"),
        "S3 calls failed for want of the right secret, and were logged: {daemon_log}"
    );
    assert!(!daemon_log.contains("panicked"), "{daemon_log}");

    // A run by hand, as verbose as it gets, against the same S3 server with the same secret.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
    cmd.args(["-vvv", "run", "s3_input", "--date", "2026-11-02"])
        .current_dir(env.dir.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("NIGHTSHIFT_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.envs(vars.iter().copied()).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let run_output = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        run_output.contains("s3_input"),
        "the run said something: {run_output}"
    );

    assert_no_canary("the daemon's log", &daemon_log);
    assert_no_canary("the HTTP answers", &answers);
    assert_no_canary("`nightshift run`", &run_output);
    let found = files_with_canaries(env.dir.path());
    assert!(found.is_empty(), "files with a canary: {found:?}");
    // What was searched is what the runs produced.
    assert!(!files_under(&env.path("out/state/runs/s3_input")).is_empty());
    assert!(!files_under(&env.path("out/reports")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Run records: never all of them.

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A record as a run writes it, from JSON, so that fields added later (with defaults) need no
/// change here.
fn rec(date: NaiveDate, status: RunStatus, started: DateTime<Utc>, n: usize) -> RunRecord {
    serde_json::from_value(json!({
        "job": "daily",
        "logical_date": date,
        "run_id": format!("{}-{n:08x}", ts(started)),
        "status": status,
        "started_at": started,
        "finished_at": started + chrono::Duration::seconds(30),
        "seconds": 30.0,
        "model": "churn@1",
        "partitions": 1,
        "counts": Counts::default(),
    }))
    .unwrap()
}

/// 2,000 records of a daily job, and a garbage file that sorts newest. The last date done, 4
/// days before `now`, ran before the newest runs, which are 60 backfills of old dates and a
/// rerun. Of those old dates, three runs were aborted: the 6th backfill (not among the 50
/// newest runs: found by its marker), the 11th (superseded by the rerun), and the last one
/// (whose marker is removed, as a record of an older version would have none: found among the
/// newest). Returns every record written.
fn many_records(state: &Path, now: DateTime<Utc>) -> Vec<RunRecord> {
    let h = RunHistory::new(
        Stores::default()
            .locate(&Uri::Local(state.to_path_buf()))
            .unwrap(),
    );
    let last_done = (now - chrono::Duration::days(4)).date_naive();
    let mut all = Vec::new();
    // Nightly runs, one per date, the latest for `last_done`.
    let nightly = 1939;
    for i in 0..nightly {
        let date = last_done - chrono::Duration::days((nightly - 1 - i) as i64);
        let started = Utc.from_utc_datetime(
            &(date + chrono::Duration::days(1))
                .and_hms_opt(2, 30, 0)
                .unwrap(),
        );
        let status = if i % 7 == 3 {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        all.push(rec(date, status, started, i));
    }
    // Then 60 backfills of old dates, started after all of them (the newest runs).
    let first = all[0].logical_date;
    let backfill_start = now - chrono::Duration::days(2);
    for i in 0..60 {
        let date = first + chrono::Duration::days(100 + i as i64);
        let status = match i {
            5 | 10 | 59 => RunStatus::Aborted,
            _ => RunStatus::Succeeded,
        };
        let started = backfill_start + chrono::Duration::minutes(i as i64);
        all.push(rec(date, status, started, 10_000 + i));
    }
    // The rerun of the 11th backfill's date, newest of all.
    all.push(rec(
        first + chrono::Duration::days(110),
        RunStatus::Succeeded,
        backfill_start + chrono::Duration::minutes(61),
        20_000,
    ));
    assert_eq!(all.len(), 2000);
    for r in &all {
        h.write(r).unwrap();
    }
    let last = &all[nightly + 59];
    let marker = state.join(format!(
        "aborted/daily/{}/{}",
        last.logical_date, last.run_id
    ));
    std::fs::remove_file(&marker).unwrap();
    // Garbage where the newest record would be.
    let garbage = state.join(format!(
        "runs/daily/{}/{}-ffffffff.json",
        last_done + chrono::Duration::days(1),
        ts(now + chrono::Duration::days(365))
    ));
    std::fs::create_dir_all(garbage.parent().unwrap()).unwrap();
    std::fs::write(&garbage, "{\"job\": \"daily\", this is not JSON").unwrap();
    all
}

/// Records the dates it is asked to run, and runs nothing.
#[derive(Default)]
struct NoRunner {
    dates: Mutex<Vec<NaiveDate>>,
}

impl Runner for NoRunner {
    fn run(
        &self,
        job: &config::JobSpec,
        date: NaiveDate,
        _cancel: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<RunRecord, Box<RunFailed>> {
        self.dates.lock().unwrap().push(date);
        // Failed, so that the last-success metric stays what catch-up read.
        let mut record = rec(date, RunStatus::Failed, Utc::now(), 0);
        record.job = job.name.clone();
        Err(Box::new(RunFailed {
            record,
            error: anyhow::anyhow!("not run: a test"),
            transient: false,
        }))
    }
}

/// `daily` at 02:30 UTC for yesterday, catching up to 10 dates.
fn daily_job(dir: &Path) -> config::JobSpec {
    let path = dir.join("daily.toml");
    std::fs::write(
        &path,
        r#"name = "daily"
schedule = "30 2 * * *"
timezone = "UTC"
date = "yesterday"
catchup_limit = 10

[input]
uri = "in/dt={date}/"

[model]
name = "churn"
version = 1

[output]
uri = "out/dt={date}/"
"#,
    )
    .unwrap();
    config::load(&[path]).unwrap().jobs.remove(0)
}

#[test]
fn catch_up_and_last_runs_read_only_the_newest_records_and_skip_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let now = Utc.with_ymd_and_hms(2026, 3, 5, 13, 0, 0).unwrap();
    let all = many_records(&state, now);
    let job = daily_job(dir.path());

    // What catch-up would do with every record read.
    let mut sorted = all.clone();
    sorted.sort_by_key(|r| r.started_at);
    let expected = missed_dates(&job, &sorted, now, 10);
    let last_done = (now - chrono::Duration::days(4)).date_naive();
    assert_eq!(
        expected.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        [
            (all[0].logical_date + chrono::Duration::days(105)).to_string(),
            (all[0].logical_date + chrono::Duration::days(159)).to_string(),
            (last_done + chrono::Duration::days(1)).to_string(),
            (last_done + chrono::Duration::days(2)).to_string(),
            (last_done + chrono::Duration::days(3)).to_string(),
        ],
        "the setting: two old dates last aborted, and the three days since the last one done"
    );

    // The daemon's start-up path, on a store that counts reads.
    let (store, loc) = watched(&state);
    let history = RunHistory::new(loc);
    let clock = Arc::new(ManualClock::new(now));
    let runner = Arc::new(NoRunner::default());
    let metrics = Arc::new(Metrics::new());
    let sched = Scheduler::new(clock, runner.clone(), metrics.clone(), 1);
    sched.set_jobs(vec![job.clone()]);
    nightshift::daemon::catch_up(&sched, &metrics, &history, std::slice::from_ref(&job));
    assert!(sched.wait_idle(Duration::from_secs(20)));
    let start = Instant::now();
    while runner.dates.lock().unwrap().len() < expected.len() {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(5));
        assert!(sched.wait_idle(Duration::from_secs(20)));
    }
    assert_eq!(*runner.dates.lock().unwrap(), expected);
    let reads = store.gets();
    assert!(
        reads <= nightshift::daemon::CATCH_UP_RECORDS + 5,
        "catch-up read {reads} of 2000 records"
    );
    // The last success is the newest succeeded backfill.
    let last_success = all
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .map(|r| r.finished_at)
        .max()
        .unwrap();
    let text = metrics.encode();
    let line = text
        .lines()
        .find(|l| l.starts_with("nightshift_last_success_timestamp_seconds{job=\"daily\"}"))
        .unwrap_or_else(|| panic!("{text}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(value, last_success.timestamp() as f64, "{line}");

    // The last runs `GET /jobs` shows: the newest 10, the garbage skipped.
    let (store, loc) = watched(&state);
    let latest = RunHistory::new(loc).latest("daily", 10).unwrap();
    assert_eq!(
        latest.iter().map(|r| &r.run_id).collect::<Vec<_>>(),
        sorted[sorted.len() - 10..]
            .iter()
            .map(|r| &r.run_id)
            .collect::<Vec<_>>()
    );
    assert!(store.gets() <= 11, "{} reads", store.gets());
    assert!(
        RunHistory::new(Location {
            store: Arc::new(LocalStorage),
            key: state.to_string_lossy().into_owned(),
        })
        .list("daily")
        .is_err(),
        "list, which reads everything, is strict"
    );

    // No finished run among the newest: the latest date done is still found, by reading
    // that date's records, not all of them.
    let dir2 = tempfile::tempdir().unwrap();
    let state2 = dir2.path().join("state");
    let h2 = RunHistory::new(
        Stores::default()
            .locate(&Uri::Local(state2.clone()))
            .unwrap(),
    );
    let mut all2 = Vec::new();
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 0).unwrap();
    for i in 0..300 {
        let date = NaiveDate::from_ymd_opt(2025, 5, 1).unwrap() + chrono::Duration::days(i);
        all2.push(rec(
            date,
            RunStatus::Succeeded,
            base + chrono::Duration::minutes(i),
            i as usize,
        ));
    }
    // The last date done was aborted twice since; 60 aborted runs of old dates came after.
    let top = all2.last().unwrap().logical_date;
    for i in 0..2 {
        all2.push(rec(
            top,
            RunStatus::Aborted,
            base + chrono::Duration::days(10 + i),
            500 + i as usize,
        ));
    }
    for i in 0..60 {
        let date = NaiveDate::from_ymd_opt(2025, 5, 1).unwrap() + chrono::Duration::days(i);
        all2.push(rec(
            date,
            RunStatus::Aborted,
            base + chrono::Duration::days(20) + chrono::Duration::minutes(i),
            600 + i as usize,
        ));
    }
    for r in &all2 {
        h2.write(r).unwrap();
    }
    let (store, loc) = watched(&state2);
    let read = RunHistory::new(loc).for_catch_up("daily", 50).unwrap();
    let now2 = Utc.from_utc_datetime(
        &(top + chrono::Duration::days(3))
            .and_hms_opt(12, 0, 0)
            .unwrap(),
    );
    all2.sort_by_key(|r| r.started_at);
    let day = |n| top + chrono::Duration::days(n);
    // The 60 old dates last aborted (their markers say so), the latest date done (aborted
    // since, so it runs again) and the two after it: as with every record read.
    let expected = missed_dates(&job, &all2, now2, 1000);
    assert_eq!(expected.len(), 60 + 3);
    assert_eq!(expected[60..], [day(0), day(1), day(2)]);
    assert_eq!(missed_dates(&job, &read, now2, 1000), expected);
    assert_eq!(
        store.gets(),
        50 + 3 + 10,
        "the 50 newest, the top date's three, and the 10 older aborted runs"
    );
}

/// The real daemon over a state folder of 2,000 records and a garbage file: `/jobs` answers
/// at once with the newest runs, the garbage is named in a warning, and catch-up runs what
/// reading everything would.
#[test]
fn jobs_endpoint_answers_fast_over_thousands_of_records() {
    let env = Env::new();
    env.train_churn();
    let now = Utc::now();
    let all = many_records(&env.path("out/state"), now);
    let spec = daily_job(&env.path("jobs"));
    let mut sorted = all.clone();
    sorted.sort_by_key(|r| r.started_at);
    let expected = missed_dates(&spec, &sorted, now, 10);
    let d = start(&env, &[]);
    d.wait_for_log("Catching up dates missed");
    let start = Instant::now();
    let (status, body) = d.get("/jobs/daily");
    let took = start.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(2), "/jobs/daily took {took:?}");
    let job: Value = serde_json::from_str(&body).unwrap();
    let last_runs = job["last_runs"].as_array().unwrap();
    assert_eq!(last_runs.len(), 10);
    // Newest first: catch-up runs (if recorded yet), then the newest planted records.
    let ids: Vec<&str> = last_runs
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    let planted: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| all.iter().any(|r| r.run_id == *id))
        .collect();
    let newest: Vec<&str> = sorted
        .iter()
        .rev()
        .take(planted.len())
        .map(|r| r.run_id.as_str())
        .collect();
    assert_eq!(planted, newest, "{ids:?}");
    assert_eq!(&ids[ids.len() - planted.len()..], planted.as_slice());
    let log = d.log();
    assert!(
        log.contains("Skipping a run record that cannot be read"),
        "{log}"
    );
    assert!(
        log.contains("-ffffffff.json"),
        "the warning names the file: {log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("Catching up dates missed"))
        .unwrap();
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        v["fields"]["dates"],
        expected
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(","),
        "{line}"
    );
    assert_eq!(d.terminate(), 0);
}
