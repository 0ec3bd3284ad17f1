//! MLflow as the model registry and the place runs are reported, against real `mlflow server`s
//! (`make mlflow-server`: one open, one with the basic-auth app). Models are registered with
//! MLflow's own Python client (tests/mlflow_register.py) from directories MLflow's flavors
//! saved (tests/data/mlflow, made from the committed models of tests/data/models, whose
//! libraries' own predictions the scores are held to). What the tests check is what MLflow's
//! REST API answers and what nightshift wrote, never what nightshift believes it did.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};
use serde_json::{json, Value};

use crate::util::{files_under, nightshift_in, read_parquet, Env, Output, FIXTURES};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/models");
const SAVED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mlflow");
const REGISTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mlflow_register.py");
const DATE: &str = "2026-11-03";

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set, so the MLflow tests cannot run. Start the servers with `make \
             mlflow-server` and export the variables it prints (`make test` does both)."
        ),
    }
}

/// The open server.
fn server() -> String {
    var("NIGHTSHIFT_TEST_MLFLOW")
}

/// The server with MLflow's basic-auth app, and its admin's user and password.
fn auth_server() -> (String, String, String) {
    let admin = var("NIGHTSHIFT_TEST_MLFLOW_ADMIN");
    let (user, password) = admin.split_once(':').expect("USER:PASSWORD");
    (
        var("NIGHTSHIFT_TEST_MLFLOW_AUTH"),
        user.to_string(),
        password.to_string(),
    )
}

/// A model name of this test run's own.
fn unique(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

/// Registers a saved model directory as the next version of `name` with MLflow's own client;
/// returns the version.
fn register(
    tracking: &str,
    dir: &Path,
    name: &str,
    alias: Option<&str>,
    vars: &[(&str, &str)],
    extra: &[&str],
) -> u32 {
    let mut cmd = Command::new(var("NIGHTSHIFT_TEST_MLFLOW_PYTHON"));
    cmd.arg(REGISTER)
        .arg(tracking)
        .arg(dir)
        .arg(name)
        .args(extra);
    if let Some(a) = alias {
        cmd.args(["--alias", a]);
    }
    let out = cmd.envs(vars.iter().copied()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "registering {}: {stdout}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap().trim().parse().unwrap()
}

/// The committed model each saved MLflow directory was made from.
fn source_case(saved: &str) -> &'static str {
    match saved {
        "lightgbm" => "lightgbm_binary",
        "xgboost_ubj" | "xgboost_json" => "xgboost_binary",
        "onnx" => "onnx_rf_classifier",
        other => panic!("no source case for {other}"),
    }
}

/// A job scoring the source case's input with `[model]` as given.
fn job(env: &Env, name: &str, input_case: &str, model: &str, extra: &str) {
    let input = env.path(&format!("in/{name}/dt={DATE}/part-0.parquet"));
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    std::fs::copy(
        Path::new(MODELS).join(input_case).join("input.parquet"),
        &input,
    )
    .unwrap();
    env.write(
        &format!("jobs/{name}.toml"),
        &format!(
            r#"name = "{name}"
schedule = "30 2 * * *"
timezone = "UTC"
date = "yesterday"

[input]
uri = "in/{name}/dt={{date}}/"

[model]
{model}

[output]
uri = "out/scores/{name}/dt={{date}}/"
passthrough = ["id"]
probabilities = true
{extra}"#
        ),
    );
}

fn run(env: &Env, job: &str, vars: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(["run", job, "--date", DATE])
        .current_dir(env.dir.path())
        .env("NO_COLOR", "1")
        .env_remove("NIGHTSHIFT_LOG")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run_ok(env: &Env, job: &str, vars: &[(&str, &str)]) -> Output {
    let out = run(env, job, vars);
    assert_eq!(out.code, 0, "{job}:\n{}\n{}", out.stdout, out.stderr);
    out
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The run record of the job's latest run of DATE (run ids of one second do not sort by time).
fn record(env: &Env, job: &str) -> Value {
    let dir = env.path(&format!("out/state/runs/{job}/{DATE}"));
    files_under(&dir)
        .iter()
        .map(|f| json_file(&dir.join(f)))
        .max_by_key(|r| {
            r["started_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        })
        .expect("a run record")
}

/// Holds the job's output to the source case's library: every row's class probabilities
/// within the case's tolerance, matched by `id`.
fn assert_scores_as_library(env: &Env, job: &str, case: &str) {
    let exp = json_file(&Path::new(MODELS).join(case).join("expected.json"));
    let tol = exp["tolerance"].as_f64().unwrap();
    let input = read_parquet(&Path::new(MODELS).join(case).join("input.parquet"));
    let ids = input
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let row_of: std::collections::HashMap<i64, usize> =
        (0..ids.len()).map(|r| (ids.value(r), r)).collect();
    let out = read_parquet(&env.path(&format!("out/scores/{job}/dt={DATE}/part-0.parquet")));
    assert_eq!(out.num_rows(), input.num_rows(), "{job}: every row scored");
    let out_ids = out
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let labels: Vec<String> = exp["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.to_string().trim_matches('"').to_string())
        .collect();
    for (k, label) in labels.iter().enumerate() {
        let col = out
            .column_by_name(&format!("proba_{label}"))
            .unwrap_or_else(|| panic!("{job}: no proba_{label}"))
            .as_primitive::<Float64Type>()
            .clone();
        for i in 0..out.num_rows() {
            let r = row_of[&out_ids.value(i)];
            let want = exp["output"][r][k].as_f64().unwrap();
            let got = col.value(i);
            assert!(
                (got - want).abs() <= tol,
                "{job}: id {} proba_{label}: {got}, the library {want}",
                out_ids.value(i)
            );
        }
    }
}

/// A TCP proxy in front of an MLflow server, owned by one test: it counts the artifact
/// downloads that pass, can cut every response after some bytes (the server dies mid-body),
/// and can close (nothing listens on its port any more) and open again on the same port.
struct Gate {
    port: u16,
    upstream: String,
    downloads: Arc<AtomicUsize>,
    cut_after: Arc<AtomicUsize>,
    /// Bytes per second each response is passed on at (0: as fast as they come).
    throttle: Arc<AtomicUsize>,
    /// Response bytes passed on, in all.
    relayed: Arc<AtomicUsize>,
    /// Every request's bytes, as the client sent them.
    requests: Arc<std::sync::Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    accepting: Option<thread::JoinHandle<()>>,
}

impl Gate {
    fn start(upstream: &str) -> Gate {
        let mut g = Gate {
            port: 0,
            upstream: upstream.trim_start_matches("http://").to_string(),
            downloads: Arc::default(),
            cut_after: Arc::new(AtomicUsize::new(usize::MAX)),
            throttle: Arc::default(),
            relayed: Arc::default(),
            requests: Arc::default(),
            stop: Arc::default(),
            accepting: None,
        };
        g.open();
        g
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn open(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, Ordering::SeqCst);
        let (stop, upstream) = (self.stop.clone(), self.upstream.clone());
        let (downloads, cut_after) = (self.downloads.clone(), self.cut_after.clone());
        let (throttle, relayed) = (self.throttle.clone(), self.relayed.clone());
        let requests = self.requests.clone();
        self.accepting = Some(thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let downloads = downloads.clone();
                let requests = requests.clone();
                thread::spawn(move || {
                    let mut buf = vec![0; 16 * 1024];
                    while let Ok(n) = from_client.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        requests.lock().unwrap().extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&buf[..n]);
                        let gets = text
                            .matches("GET /api/2.0/mlflow-artifacts/artifacts/")
                            .count();
                        downloads.fetch_add(gets, Ordering::SeqCst);
                        if to_server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown(Shutdown::Write);
                });
                let keep = cut_after.load(Ordering::SeqCst);
                let (throttle, relayed) = (throttle.clone(), relayed.clone());
                thread::spawn(move || relay(server, client, keep, &throttle, &relayed));
            }
            // Dropping the listener frees the port: connections are refused from here on.
        }));
    }

    fn close(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accepting.take() {
            t.join().unwrap();
        }
    }

    fn downloads(&self) -> usize {
        self.downloads.load(Ordering::SeqCst)
    }

    /// What the clients sent, lowercased (header names are case-insensitive).
    fn requests(&self) -> String {
        String::from_utf8_lossy(&self.requests.lock().unwrap()).to_lowercase()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
    }
}

/// Passes the server's bytes on to the client, at most `keep` of them (at `throttle` bytes a
/// second, if set), then hangs up on both.
fn relay(
    mut server: TcpStream,
    mut client: TcpStream,
    keep: usize,
    throttle: &AtomicUsize,
    relayed: &AtomicUsize,
) {
    let mut passed = 0;
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n.min(keep - passed),
        };
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
        relayed.fetch_add(n, Ordering::SeqCst);
        let rate = throttle.load(Ordering::SeqCst);
        if rate > 0 {
            thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
        passed += n;
        if passed == keep {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

/// GET of an MLflow REST endpoint, as a plain client sees it.
fn api_get(server: &str, endpoint: &str, query: &[(&str, &str)]) -> Value {
    let url =
        reqwest::Url::parse_with_params(&format!("{server}/api/2.0/mlflow/{endpoint}"), query)
            .unwrap();
    http(reqwest::Method::GET, url.as_str(), None)
}

fn api_post(server: &str, endpoint: &str, body: Value) -> Value {
    http(
        reqwest::Method::POST,
        &format!("{server}/api/2.0/mlflow/{endpoint}"),
        Some(body),
    )
}

fn http(method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = reqwest::Client::new().request(method, url);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{url}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    })
}

#[test]
fn each_flavor_scores_as_its_library_pinned_and_by_alias_and_a_second_run_downloads_nothing() {
    let server = server();
    let gate = Gate::start(&server);
    let env = Env::new();
    for saved in ["lightgbm", "xgboost_ubj", "xgboost_json", "onnx"] {
        let name = unique(saved);
        let version = register(
            &server,
            &Path::new(SAVED).join(saved),
            &name,
            Some("champion"),
            &[],
            &[],
        );
        assert_eq!(version, 1);
        let registry = format!("registry = \"mlflow+{}\"\nname = \"{name}\"", gate.url());
        let pinned = format!("{saved}_pinned");
        let by_alias = format!("{saved}_alias");
        job(
            &env,
            &pinned,
            source_case(saved),
            &format!("{registry}\nversion = 1"),
            "",
        );
        job(
            &env,
            &by_alias,
            source_case(saved),
            &format!("{registry}\nalias = \"champion\""),
            "",
        );

        let before = gate.downloads();
        run_ok(&env, &pinned, &[]);
        assert!(
            gate.downloads() > before,
            "{saved}: the first run downloads"
        );
        assert_scores_as_library(&env, &pinned, source_case(saved));
        let after_first = gate.downloads();
        let out = run_ok(&env, &by_alias, &[]);
        assert_eq!(
            gate.downloads(),
            after_first,
            "{saved}: the alias names the cached version: nothing downloaded again\n{}",
            out.stderr
        );
        assert_scores_as_library(&env, &by_alias, source_case(saved));

        // Provenance, in the run record and in _SUCCESS.
        let version_answer = api_get(
            &server,
            "model-versions/get",
            &[("name", &name), ("version", "1")],
        );
        let mv = &version_answer["model_version"];
        let mlmodel =
            std::fs::read_to_string(Path::new(SAVED).join(saved).join("MLmodel")).unwrap();
        let uuid = mlmodel
            .lines()
            .find_map(|l| l.strip_prefix("model_uuid: "))
            .unwrap()
            .trim();
        let rec = record(&env, &by_alias);
        assert_eq!(rec["model"], format!("{name}@1"));
        let success = json_file(&env.path(&format!("out/scores/{by_alias}/dt={DATE}/_SUCCESS")));
        for prov in [&rec["mlflow"], &success["mlflow"]] {
            assert_eq!(prov["server"], gate.url());
            assert_eq!(prov["name"], name);
            assert_eq!(prov["version"], 1);
            assert_eq!(prov["alias"], "champion");
            assert_eq!(prov["run_id"], mv["run_id"]);
            assert_eq!(prov["source"], mv["source"]);
            assert_eq!(prov["model_uuid"], uuid);
        }
        assert_eq!(success["model_name"], name);
        assert_eq!(success["model_version"], 1);
        let pinned_rec = record(&env, &pinned);
        assert_eq!(pinned_rec["mlflow"]["alias"], Value::Null);
    }
}

#[test]
fn a_moved_alias_is_followed_and_backfill_reprocesses_the_dates_of_the_old_version() {
    let server = server();
    let env = Env::new();
    let name = unique("moved");
    let dir = Path::new(SAVED).join("lightgbm");
    register(&server, &dir, &name, Some("champion"), &[], &[]);
    job(
        &env,
        "moved",
        "lightgbm_binary",
        &format!("registry = \"mlflow+{server}\"\nname = \"{name}\"\nalias = \"champion\""),
        "",
    );
    run_ok(&env, "moved", &[]);
    assert_eq!(record(&env, "moved")["model"], format!("{name}@1"));
    let backfill = |env: &Env| {
        env.ok(&[
            "backfill",
            "moved",
            "--from",
            DATE,
            "--to",
            DATE,
            "--reprocess",
            "stale",
            "--dry-run",
        ])
        .stdout
    };
    let fresh = backfill(&env);
    assert!(fresh.contains("fresh"), "{fresh}");

    assert_eq!(
        register(&server, &dir, &name, Some("champion"), &[], &[]),
        2
    );
    let stale = backfill(&env);
    assert!(
        stale.contains(&format!(
            "stale: scored by {name}@1, the job pins {name}@champion (now {name}@2)"
        )),
        "{stale}"
    );
    run_ok(&env, "moved", &[]);
    let rec = record(&env, "moved");
    assert_eq!(rec["model"], format!("{name}@2"));
    assert_eq!(rec["mlflow"]["version"], 2);
    assert!(backfill(&env).contains("fresh"));
}

#[test]
fn refused_flavors_and_mistakes_are_one_clear_line_each() {
    let server = server();
    let env = Env::new();
    let registry = format!("registry = \"mlflow+{server}\"");
    let mut cases: Vec<(String, String, &str)> = Vec::new();
    for (saved, says) in [
        ("sklearn", "logged with mlflow.sklearn"),
        ("lightgbm_sklearn", "LightGBM's scikit-learn API"),
    ] {
        let name = unique(saved);
        register(
            &server,
            &Path::new(SAVED).join(saved),
            &name,
            None,
            &[],
            &[],
        );
        cases.push((
            saved.to_string(),
            format!("{registry}\nname = \"{name}\"\nversion = 1"),
            says,
        ));
    }
    // A version whose model file is gone: MLmodel names model.lgb, which was never uploaded.
    let partial = env.path("partial-model");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::copy(
        Path::new(SAVED).join("lightgbm/MLmodel"),
        partial.join("MLmodel"),
    )
    .unwrap();
    let name = unique("partial");
    register(&server, &partial, &name, Some("champion"), &[], &[]);
    cases.push((
        "missing_file".into(),
        format!("{registry}\nname = \"{name}\"\nversion = 1"),
        "the model's file 'model.lgb' is missing",
    ));
    cases.push((
        "unknown_version".into(),
        format!("{registry}\nname = \"{name}\"\nversion = 7"),
        "not found",
    ));
    cases.push((
        "unknown_name".into(),
        format!("{registry}\nname = \"no-such-model-here\"\nversion = 1"),
        "not found",
    ));
    cases.push((
        "unknown_alias".into(),
        format!("{registry}\nname = \"{name}\"\nalias = \"nope\""),
        "alias nope not found",
    ));
    // Nothing listens on a port just freed.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cases.push((
        "unreachable".into(),
        format!("registry = \"mlflow+http://127.0.0.1:{free}\"\nname = \"{name}\"\nversion = 1"),
        "could not connect",
    ));
    for (case, model, says) in &cases {
        job(&env, case, "lightgbm_binary", model, "");
        let out = run(&env, case, &[]);
        assert_ne!(out.code, 0, "{case}: {}", out.stdout);
        let rec = record(&env, case);
        let error = rec["error"].as_str().unwrap();
        assert!(error.contains(says), "{case}: {error}");
        assert!(!error.contains('\n'), "{case}: one line: {error}");
        assert!(
            error.contains("in MLflow at"),
            "{case}: the error names the model and the server: {error}"
        );
        assert_eq!(rec["date_state"], "untouched", "{case}: outputs untouched");
        assert!(!env
            .path(&format!("out/scores/{case}/dt={DATE}/_SUCCESS"))
            .exists());
    }
    let unreachable = run(&env, "unreachable", &[]);
    assert!(
        unreachable.stderr.contains("127.0.0.1"),
        "{}",
        unreachable.stderr
    );
}

#[test]
fn basic_auth_takes_the_right_password_refuses_a_wrong_one_and_never_shows_either() {
    let (server, user, password) = auth_server();
    let admin = [
        ("MLFLOW_TRACKING_USERNAME", user.as_str()),
        ("MLFLOW_TRACKING_PASSWORD", password.as_str()),
    ];
    let env = Env::new();
    let name = unique("auth");
    register(
        &server,
        &Path::new(SAVED).join("lightgbm"),
        &name,
        None,
        &admin,
        &[],
    );
    let model = format!("registry = \"mlflow+{server}\"\nname = \"{name}\"\nversion = 1");
    job(&env, "auth", "lightgbm_binary", &model, "");

    let none = run(&env, "auth", &[]);
    assert_ne!(none.code, 0);
    assert!(none.stderr.contains("401"), "{}", none.stderr);
    assert!(
        none.stderr.contains("MLFLOW_TRACKING_USERNAME"),
        "{}",
        none.stderr
    );

    const CANARY: &str = "canary-mlflow-password-5c1e";
    const TOKEN: &str = "canary-mlflow-token-9b2d";
    let wrong = run(
        &env,
        "auth",
        &[
            ("MLFLOW_TRACKING_USERNAME", user.as_str()),
            ("MLFLOW_TRACKING_PASSWORD", CANARY),
            ("NIGHTSHIFT_LOG", "trace"),
        ],
    );
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("401"), "{}", wrong.stderr);
    let token = run(
        &env,
        "auth",
        &[
            ("MLFLOW_TRACKING_TOKEN", TOKEN),
            ("NIGHTSHIFT_LOG", "trace"),
        ],
    );
    assert_ne!(token.code, 0);

    let right = run_ok(&env, "auth", &admin);
    assert_scores_as_library(&env, "auth", "lightgbm_binary");

    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{CANARY}"));
    let secrets = [CANARY, TOKEN, basic.as_str(), password.as_str()];
    for (what, text) in [
        (
            "a wrong password's run",
            format!("{}{}", wrong.stdout, wrong.stderr),
        ),
        ("a token's run", format!("{}{}", token.stdout, token.stderr)),
        (
            "the right password's run",
            format!("{}{}", right.stdout, right.stderr),
        ),
    ] {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows a secret:\n{text}");
        }
    }
    for file in files_under(env.dir.path()) {
        let bytes = std::fs::read(env.dir.path().join(&file)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for s in secrets {
            assert!(!text.contains(s), "{file} holds a secret");
        }
    }
}

/// MLflow's clients send MLFLOW_TRACKING_TOKEN as a bearer token: so does nightshift (seen on
/// the wire, in front of the open server, which takes any).
#[test]
fn a_token_is_sent_as_a_bearer_token() {
    let server = server();
    let gate = Gate::start(&server);
    let env = Env::new();
    let name = unique("token");
    register(
        &server,
        &Path::new(SAVED).join("lightgbm"),
        &name,
        None,
        &[],
        &[],
    );
    let model = format!(
        "registry = \"mlflow+{}\"\nname = \"{name}\"\nversion = 1",
        gate.url()
    );
    job(&env, "token", "lightgbm_binary", &model, "");
    run_ok(
        &env,
        "token",
        &[("MLFLOW_TRACKING_TOKEN", "t0ken-for-the-wire")],
    );
    let sent = gate.requests();
    let calls = sent.matches("get /api/2.0/").count();
    assert!(calls >= 3, "{sent}");
    assert_eq!(
        sent.matches("authorization: bearer t0ken-for-the-wire")
            .count(),
        calls,
        "every call carries the token"
    );
}

/// The signature names the inputs and types them: a job whose files lack a column it names,
/// or a signature that calls a numeric input a string, is refused before any output.
#[test]
fn the_signature_checks_the_input_before_any_output() {
    let server = server();
    let env = Env::new();
    let mlmodel = std::fs::read_to_string(Path::new(SAVED).join("lightgbm/MLmodel")).unwrap();
    for (case, from, to, says) in [
        (
            "renamed",
            "\"name\": \"data_gb\"",
            "\"name\": \"data_gigabytes\"",
            "data_gigabytes",
        ),
        (
            "retyped",
            "{\"type\": \"double\", \"name\": \"tenure_months\"",
            "{\"type\": \"string\", \"name\": \"tenure_months\"",
            "gives input 'tenure_months' the type string",
        ),
    ] {
        // MLflow wraps the signature's JSON over lines: match it unwrapped.
        let (start, end) = (
            mlmodel.find("  inputs: '").unwrap(),
            mlmodel.find("\n  outputs:").unwrap(),
        );
        let flat = format!(
            "{}{}{}",
            &mlmodel[..start],
            mlmodel[start..end].replace("\n    ", " "),
            &mlmodel[end..]
        );
        assert!(flat.contains(from), "{case}: {flat}");
        let dir = env.path(case);
        crate::util::copy_dir(&Path::new(SAVED).join("lightgbm"), &dir);
        std::fs::write(dir.join("MLmodel"), flat.replace(from, to)).unwrap();
        let name = unique(case);
        register(&server, &dir, &name, None, &[], &[]);
        let model = format!("registry = \"mlflow+{server}\"\nname = \"{name}\"\nversion = 1");
        job(&env, case, "lightgbm_binary", &model, "");
        let out = run(&env, case, &[]);
        assert_ne!(out.code, 0, "{case}: {}", out.stdout);
        let rec = record(&env, case);
        let error = rec["error"].as_str().unwrap();
        assert!(error.contains(says), "{case}: {error}");
        assert_eq!(rec["date_state"], "untouched", "{case}");
    }
}

#[test]
fn a_download_cut_midway_leaves_nothing_cached_nor_written_and_the_next_run_completes() {
    let server = server();
    let mut gate = Gate::start(&server);
    let env = Env::new();
    let name = unique("cut");
    register(
        &server,
        &Path::new(SAVED).join("lightgbm"),
        &name,
        None,
        &[],
        &[],
    );
    job(
        &env,
        "cut",
        "lightgbm_binary",
        &format!(
            "registry = \"mlflow+{}\"\nname = \"{name}\"\nversion = 1",
            gate.url()
        ),
        "",
    );
    // The API's answers and the MLmodel are a few KB; model.lgb is 20 KB: every connection
    // dies 8 KB into what the server sends, which is inside the model file.
    gate.cut_after.store(8 * 1024, Ordering::SeqCst);
    let out = run(&env, "cut", &[]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    let error = record(&env, "cut")["error"].as_str().unwrap().to_string();
    assert!(error.contains("artifact"), "{error}");
    assert!(gate.downloads() >= 2, "the cut came during the downloads");
    let cache = env.path("out/state/mlflow");
    let entries: Vec<String> = files_under(&cache)
        .into_iter()
        .filter(|f| f.ends_with("entry.json"))
        .collect();
    assert!(entries.is_empty(), "no version is cached half: {entries:?}");
    assert!(!env
        .path(&format!("out/scores/cut/dt={DATE}/_SUCCESS"))
        .exists());
    assert!(files_under(&env.path("out/scores")).is_empty());

    // The server is back (a new proxy process on the same port).
    gate.close();
    gate.cut_after.store(usize::MAX, Ordering::SeqCst);
    gate.open();
    run_ok(&env, "cut", &[]);
    assert_scores_as_library(&env, "cut", "lightgbm_binary");
}

/// An `mlflow server` of one test's own (SQLite and artifacts in a folder of its own), which
/// the test can kill (the whole process group, SIGKILL) and start again on the same port with
/// the same data.
struct PrivateServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateServer {
    fn start() -> PrivateServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = PrivateServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        s.launch();
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        use std::os::unix::process::CommandExt;
        let python = PathBuf::from(var("NIGHTSHIFT_TEST_MLFLOW_PYTHON"));
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new(python.parent().unwrap().join("mlflow"))
            .args(["server", "--host", "127.0.0.1", "--workers", "1", "--port"])
            .arg(self.port.to_string())
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}/mlflow.db", dir.display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            let up = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &format!("{}/health", self.url())])
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the private mlflow server did not start: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
    }

    /// SIGKILL to the server and its workers: no goodbye.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let killed = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                .status()
                .is_ok_and(|s| s.success());
            if !killed {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The server killed (SIGKILL) while it sends a model's files, then started again: the run
/// that was downloading fails as transient and leaves no cached version and no output; the
/// next run downloads the version whole and scores it.
#[test]
fn the_server_killed_mid_download_then_restarted() {
    let mut private = PrivateServer::start();
    let env = Env::new();
    // The ONNX model with 24 MB more in its external data file (after the tensors, which
    // keep their offsets): a download long enough to kill the server in the middle of.
    let model = env.path("big-onnx");
    crate::util::copy_dir(&Path::new(SAVED).join("onnx"), &model);
    let mut data = std::fs::read(model.join("model.onnx.data")).unwrap();
    data.resize(data.len() + 24 * 1024 * 1024, 0);
    std::fs::write(model.join("model.onnx.data"), &data).unwrap();
    let name = unique("killed");
    register(&private.url(), &model, &name, None, &[], &[]);

    let gate = Gate::start(&private.url());
    job(
        &env,
        "killed",
        "onnx_rf_classifier",
        &format!(
            "registry = \"mlflow+{}\"\nname = \"{name}\"\nversion = 1",
            gate.url()
        ),
        "",
    );
    gate.throttle.store(2 * 1024 * 1024, Ordering::SeqCst);
    let run = Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(["run", "killed", "--date", DATE])
        .current_dir(env.dir.path())
        .env("NO_COLOR", "1")
        .env_remove("NIGHTSHIFT_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while gate.relayed.load(Ordering::SeqCst) < 4 * 1024 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the download did not start"
        );
        thread::sleep(Duration::from_millis(20));
    }
    private.kill();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        gate.relayed.load(Ordering::SeqCst) < data.len(),
        "the server died before it sent the whole file"
    );
    let error = record(&env, "killed")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("model.onnx.data"), "{error}");
    let entries: Vec<String> = files_under(&env.path("out/state/mlflow"))
        .into_iter()
        .filter(|f| f.ends_with("entry.json"))
        .collect();
    assert!(entries.is_empty(), "no version is cached half: {entries:?}");
    assert!(files_under(&env.path("out/scores")).is_empty());

    private.launch();
    gate.throttle.store(0, Ordering::SeqCst);
    run_ok(&env, "killed", &[]);
    assert_scores_as_library(&env, "killed", "onnx_rf_classifier");
}

#[test]
fn a_pinned_version_is_scored_from_the_cache_while_the_server_is_down_and_an_alias_is_not() {
    let server = server();
    let mut gate = Gate::start(&server);
    let env = Env::new();
    let name = unique("down");
    register(
        &server,
        &Path::new(SAVED).join("xgboost_ubj"),
        &name,
        Some("champion"),
        &[],
        &[],
    );
    let registry = format!("registry = \"mlflow+{}\"\nname = \"{name}\"", gate.url());
    job(
        &env,
        "pinned",
        "xgboost_binary",
        &format!("{registry}\nversion = 1"),
        "",
    );
    job(
        &env,
        "alias",
        "xgboost_binary",
        &format!("{registry}\nalias = \"champion\""),
        "",
    );
    run_ok(&env, "pinned", &[]);

    gate.close();
    std::fs::remove_dir_all(env.path("out/scores")).unwrap();
    let out = run_ok(&env, "pinned", &[]);
    assert!(
        out.stderr
            .contains("scoring the cached copy of the pinned version"),
        "{}",
        out.stderr
    );
    assert_scores_as_library(&env, "pinned", "xgboost_binary");
    assert_eq!(record(&env, "pinned")["mlflow"]["version"], 1);

    let out = run(&env, "alias", &[]);
    assert_ne!(out.code, 0);
    let error = record(&env, "alias")["error"].as_str().unwrap().to_string();
    assert!(error.contains("could not connect"), "{error}");
    assert!(error.contains("champion"), "{error}");

    gate.open();
    run_ok(&env, "alias", &[]);
}

#[test]
fn a_version_whose_artifacts_mlflow_keeps_on_s3_is_read_with_nightshifts_own_s3_client() {
    let server = server();
    let bucket = crate::util_s3::TestBucket::new("mlflow-artifacts");
    let endpoint = crate::util_s3::endpoint();
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    let s3 = [
        ("MLFLOW_S3_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let name = unique("s3");
    let experiment = unique("nightshift-s3");
    let location = bucket.uri("mlflow");
    register(
        &server,
        &Path::new(SAVED).join("onnx"),
        &name,
        None,
        &s3,
        &[
            "--experiment",
            &experiment,
            "--artifact-location",
            &location,
        ],
    );
    let uri = api_get(
        &server,
        "model-versions/get-download-uri",
        &[("name", &name), ("version", "1")],
    );
    let uri = uri["artifact_uri"].as_str().unwrap();
    assert!(uri.starts_with(&location), "MLflow keeps them on S3: {uri}");

    let env = Env::new();
    env.write(
        "jobs/nightshift.toml",
        &format!(
            "registry = \"out/registry/\"\nstate = \"out/state/\"\n\n[s3]\nendpoint_url = \
             \"{endpoint}\"\nregion = \"us-east-1\"\nforce_path_style = true\n"
        ),
    );
    job(
        &env,
        "s3",
        "onnx_rf_classifier",
        &format!("registry = \"mlflow+{server}\"\nname = \"{name}\"\nversion = 1"),
        "",
    );
    run_ok(&env, "s3", &s3[1..]);
    assert_scores_as_library(&env, "s3", "onnx_rf_classifier");
}

/// A saved MLflow LightGBM model of the churn fixtures (no signature: the booster names its
/// features), as `mlflow.lightgbm.save_model` writes one.
fn churn_lightgbm_dir(env: &Env) -> PathBuf {
    let dir = env.path("churn-lgb-model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        Path::new(FIXTURES).join("models/churn_lightgbm.txt"),
        dir.join("model.lgb"),
    )
    .unwrap();
    std::fs::write(
        dir.join("MLmodel"),
        "flavors:\n  lightgbm:\n    code: null\n    data: model.lgb\n    lgb_version: 4.7.0\n    \
         model_class: lightgbm.basic.Booster\n  python_function:\n    data: model.lgb\n    \
         loader_module: mlflow.lightgbm\nmlflow_version: 3.17.2\nmodel_uuid: \
         0f5c3c8e2b7a4f1d9e6a5b4c3d2e1f00\n",
    )
    .unwrap();
    dir
}

#[test]
fn runs_are_logged_back_once_per_date_with_drift_and_then_realized_performance() {
    let server = server();
    let env = Env::new();
    let name = unique("tracked");
    register(
        &server,
        &churn_lightgbm_dir(&env),
        &name,
        Some("champion"),
        &[],
        &[],
    );
    let experiment = unique("nightshift/tracked");
    env.write(
        "jobs/tracked.toml",
        &format!(
            r#"name = "tracked"
schedule = "30 2 * * *"
timezone = "UTC"
date = "yesterday"

[input]
uri = "{FIXTURES}/features/dt={{date}}/"

[model]
registry = "mlflow+{server}"
name = "{name}"
alias = "champion"
reference = "{FIXTURES}/train/"
reference_target = "churned"

[output]
uri = "out/scores/tracked/dt={{date}}/"
passthrough = ["id"]

[labels]
uri = "{FIXTURES}/labels/dt={{date}}/"
key = "id"
column = "churned"
delay = "3d"

[mlflow]
tracking_uri = "{server}"
experiment = "{experiment}"
"#
        ),
    );
    run_ok(&env, "tracked", &[]);
    let references = files_under(&env.path("out/state/references"));
    assert_eq!(
        references.len(),
        1,
        "the reference is profiled once: {references:?}"
    );
    let profiled = std::fs::metadata(env.path("out/state/references").join(&references[0]))
        .unwrap()
        .modified()
        .unwrap();
    let first = record(&env, "tracked");
    // Twice more: a rerun and a backfill of the same date.
    run_ok(&env, "tracked", &[]);
    env.ok(&[
        "backfill",
        "tracked",
        "--from",
        DATE,
        "--to",
        DATE,
        "--reprocess",
        "all",
    ]);
    let last = record(&env, "tracked");
    assert_eq!(files_under(&env.path("out/state/references")), references);
    assert_eq!(
        std::fs::metadata(env.path("out/state/references").join(&references[0]))
            .unwrap()
            .modified()
            .unwrap(),
        profiled,
        "not profiled again"
    );

    let exp = api_get(
        &server,
        "experiments/get-by-name",
        &[("experiment_name", &experiment)],
    );
    let exp_id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let search = || {
        api_post(
            &server,
            "runs/search",
            json!({ "experiment_ids": [exp_id], "max_results": 10 }),
        )["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let runs = search();
    assert_eq!(
        runs.len(),
        1,
        "one MLflow run for the date, however often it ran"
    );
    let data = &runs[0]["data"];
    let get = |list: &str, key: &str| -> Value {
        data[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["key"] == key)
            .map(|p| p["value"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(get("params", "job"), "tracked");
    assert_eq!(get("params", "logical_date"), DATE);
    assert_eq!(get("params", "model_name"), name);
    assert_eq!(get("params", "model_version"), "1");
    // Params are MLflow's immutable first values; the tags follow the latest run.
    assert_eq!(get("params", "nightshift_run_id"), first["run_id"]);
    assert_eq!(get("tags", "nightshift.run_id"), last["run_id"]);
    assert_eq!(get("tags", "nightshift.status"), "succeeded");
    assert_eq!(
        get("tags", "nightshift.output"),
        "out/scores/tracked/dt=2026-11-03/"
    );
    assert_eq!(get("tags", "nightshift.job"), "tracked");
    let c = &last["counts"];
    assert_eq!(get("metrics", "rows_in"), c["rows_in"].as_f64().unwrap());
    assert_eq!(
        get("metrics", "rows_scored"),
        c["rows_scored"].as_f64().unwrap()
    );
    assert_eq!(
        get("metrics", "rows_quarantined"),
        c["rows_quarantined"].as_f64().unwrap()
    );
    assert_eq!(get("metrics", "seconds"), last["seconds"]);
    let drift = &last["drift"];
    assert_eq!(
        get("metrics", "drift_share"),
        drift["share_of_drifted_columns"].as_f64().unwrap()
    );
    assert_eq!(
        get("metrics", "drifted_columns"),
        drift["drifted_columns"].as_array().unwrap().len() as f64
    );
    assert!(get("metrics", "estimated_roc_auc").is_f64(), "{data}");
    assert_eq!(runs[0]["info"]["status"], "FINISHED");
    let run_id = runs[0]["info"]["run_id"].as_str().unwrap();
    let artifact_root = runs[0]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mlflow-artifacts:/")
        .to_string();
    let listed = http(
        reqwest::Method::GET,
        &format!("{server}/api/2.0/mlflow-artifacts/artifacts?path={artifact_root}"),
        None,
    );
    assert_eq!(listed["files"][0]["path"], "drift.html", "{listed}");
    let page = Command::new("curl")
        .args([
            "-sf",
            &format!("{server}/api/2.0/mlflow-artifacts/artifacts/{artifact_root}/drift.html"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&page.stdout).contains("<svg"),
        "the drift page"
    );

    // Later, the labels: `evaluate` adds the realized metrics to the same MLflow run.
    env.ok(&["evaluate", "tracked", "--date", DATE]);
    let runs = search();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["info"]["run_id"], run_id);
    let perf = read_parquet(&env.path(&format!(
        "out/reports/job=tracked/dt={DATE}/performance.parquet"
    )));
    let metrics = perf
        .column_by_name("metric")
        .unwrap()
        .as_string::<i32>()
        .clone();
    let values = perf
        .column_by_name("value")
        .unwrap()
        .as_primitive::<Float64Type>()
        .clone();
    let auc = (0..perf.num_rows())
        .find(|&i| metrics.value(i) == "roc_auc")
        .map(|i| values.value(i))
        .unwrap();
    let logged = runs[0]["data"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "realized_roc_auc")
        .map(|m| m["value"].as_f64().unwrap());
    assert_eq!(logged, Some(auc));
}

#[test]
fn a_tracking_server_that_fails_leaves_the_run_committed_with_a_warning() {
    let env = Env::new();
    env.train_churn();
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.job(
        "untracked",
        &format!("{FIXTURES}/features/dt={{date}}/"),
        "",
    );
    let path = env.path("jobs/untracked.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[mlflow]\ntracking_uri = \"http://127.0.0.1:{free}\"\n"
    ));
    std::fs::write(&path, text).unwrap();
    let out = nightshift_in(env.dir.path(), &["run", "untracked", "--date", DATE]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("Could not log the run to MLflow; the run is committed"),
        "{}",
        out.stderr
    );
    assert!(env
        .path(&format!("out/scores/untracked/dt={DATE}/_SUCCESS"))
        .exists());
}

/// The example job, `jobs/churn_mlflow.toml`, as shipped: validated with the others, and run
/// against the test server (its address and the model's name the only changes).
#[test]
fn the_example_job_validates_and_runs_against_a_real_server() {
    let out = nightshift_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["validate", "jobs/"],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("churn_mlflow"), "{}", out.stdout);

    let server = server();
    let env = Env::new();
    let name = unique("churn_lgb");
    register(
        &server,
        &churn_lightgbm_dir(&env),
        &name,
        Some("champion"),
        &[],
        &[],
    );
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/jobs/churn_mlflow.toml"
    ))
    .unwrap();
    assert!(shipped.contains("http://127.0.0.1:5000") && shipped.contains("\"churn_lgb\""));
    let ours = shipped
        .replace("http://127.0.0.1:5000", &server)
        .replace("\"churn_lgb\"", &format!("\"{name}\""))
        .replace(
            "nightshift/churn_mlflow",
            &unique("nightshift/churn_mlflow"),
        )
        .replace("fixtures/churn/", &format!("{FIXTURES}/"));
    env.write("jobs/churn_mlflow.toml", &ours);
    let out = env.ok(&["run", "churn_mlflow", "--date", DATE]);
    assert!(
        out.stdout.contains(&format!("model {name}@1")),
        "{}",
        out.stdout
    );
    let rec = record(&env, "churn_mlflow");
    assert_eq!(rec["mlflow"]["alias"], "champion");
    assert!(
        rec["drift"].is_object(),
        "a drift report, from the reference: {rec}"
    );
}
