//! Test helpers: each test gets its own folder with job files, a registry and outputs, and
//! runs the real binary or the library against the bundled fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/churn");

pub struct Env {
    pub dir: tempfile::TempDir,
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    /// A folder with `jobs/nightshift.toml` pointing the registry and state inside it.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        std::fs::write(
            dir.path().join("jobs/nightshift.toml"),
            "registry = \"out/registry/\"\nstate = \"out/state/\"\n",
        )
        .unwrap();
        Self { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, body: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        p
    }

    /// Runs `nightshift ARGS` in the test folder.
    pub fn run(&self, args: &[&str]) -> Output {
        nightshift_in(self.dir.path(), args)
    }

    /// Runs and insists on success.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.code, 0,
            "nightshift {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out
    }

    /// Registers the fixture model (logistic regression on the training file) as churn@1.
    pub fn train_churn(&self) {
        copy_registry(&self.path("out/registry"));
    }

    /// A job file scoring `input` (a template) with churn@1.
    pub fn job(&self, name: &str, input: &str, extra_run: &str) -> PathBuf {
        self.write(
            &format!("jobs/{name}.toml"),
            &format!(
                r#"name = "{name}"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
date = "yesterday"

[input]
uri = "{input}"

[model]
name = "churn"
version = 1

[output]
uri = "out/scores/{name}/dt={{date}}/"
passthrough = ["id"]

[run]
{extra_run}
"#
            ),
        )
    }
}

/// Runs `nightshift ARGS` in a folder.
pub fn nightshift_in(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("NIGHTSHIFT_LOG")
        .output()
        .expect("nightshift runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Trains churn@1 once per test process and copies that registry into each test's folder, so
/// tests do not pay for training (nor depend on its timing) more than once.
fn copy_registry(to: &Path) {
    static TRAINED: OnceLock<tempfile::TempDir> = OnceLock::new();
    let trained = TRAINED.get_or_init(|| {
        let env = Env::new();
        env.ok(&[
            "model",
            "train",
            "--data",
            &format!("{FIXTURES}/train/train.parquet"),
            "--target",
            "churned",
            "--algorithm",
            "logistic",
            "--name",
            "churn",
            "--exclude",
            "id",
        ]);
        env.dir
    });
    copy_dir(&trained.path().join("out/registry"), to);
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Reads a Parquet file with the parquet crate's own reader (not nightshift's).
pub fn read_parquet(path: &Path) -> RecordBatch {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let b = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    let schema = b.schema().clone();
    let batches: Vec<RecordBatch> = b.build().unwrap().map(Result::unwrap).collect();
    concat_batches(&schema, &batches).unwrap()
}

/// Files (not folders) under a folder, relative and sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Runs the `churn` job through the library (not the binary) for a date, with the given
/// parallelism, everything inside the test folder.
pub fn run_churn_in_process(env: &Env, date: &str, threads: usize, batch_rows: usize) {
    let cfg = nightshift::config::load(&[env.path("jobs")]).unwrap();
    let mut job = cfg.job("churn").unwrap().clone();
    let local = |p: &str| nightshift::storage::Uri::Local(env.path(p));
    let settings = nightshift::config::Settings {
        registry: local("out/registry"),
        state: local("out/state"),
        reports: local("out/reports"),
        ..cfg.settings.clone()
    };
    // Outputs must be inside the test folder too, not relative to the test process.
    job.output.uri.0 = env
        .path("out/scores/churn/dt={date}/")
        .to_string_lossy()
        .into_owned();
    job.output.quarantine.0 = env.path("out/q/dt={date}/").to_string_lossy().into_owned();
    let stores = nightshift::storage::Stores::new(settings.s3.clone());
    let opts = nightshift::run::RunOptions {
        threads: Some(threads),
        batch_rows: Some(batch_rows),
        ..Default::default()
    };
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    nightshift::run::run_job(&job, date, &settings, &stores, &opts).unwrap();
}

/// How many rounds a fault scenario runs (`NIGHTSHIFT_FAULT_RUNS`, else `default_runs`) and
/// the seed of its random faults or timings (`NIGHTSHIFT_FAULT_SEED` replays a failure),
/// printed either way.
pub fn fault_plan(scenario: &str, default_runs: usize) -> (usize, u64) {
    let runs = std::env::var("NIGHTSHIFT_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_runs);
    let seed = std::env::var("NIGHTSHIFT_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{scenario}: {runs} runs, NIGHTSHIFT_FAULT_SEED={seed}");
    (runs, seed)
}
