//! Validated, typed configuration: what the rest of nightshift works with. Nothing past
//! `config` sees TOML.

use std::path::PathBuf;

use chrono::{Duration, NaiveDate};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::schema::ModelRef;
use crate::storage::{S3Settings, Uri};

/// One job, checked: schedule parsed, URIs parsed, model version pinned.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    /// The file it came from, for messages.
    pub path: PathBuf,
    pub schedule: Schedule,
    pub timezone: Tz,
    pub date: DateRule,
    pub input: UriTemplate,
    pub model: ModelPin,
    /// `[model] reference`: Parquet data profiled as the drift reference (and, with a target,
    /// for holdout metrics), instead of what the registry keeps.
    pub reference: Option<ReferenceSpec>,
    /// `[mlflow]`: committed runs are logged to this MLflow server.
    pub mlflow: Option<MlflowTracking>,
    pub output: OutputSpec,
    pub run: RunSpec,
    pub drift: super::DriftSpec,
    /// Where its outcomes land, for `evaluate` (docs/model-performance.md).
    pub labels: Option<super::LabelsSpec>,
    /// The job's own registry, if it overrides the shared one.
    pub registry: Option<ModelRegistry>,
    /// How the daemon schedules it: overlap policy, catch-up, retries.
    pub scheduling: super::Scheduling,
}

impl JobSpec {
    /// Where this job's model versions live.
    pub fn registry(&self, settings: &Settings) -> ModelRegistry {
        self.registry
            .clone()
            .unwrap_or_else(|| ModelRegistry::Store(settings.registry.clone()))
    }
}

/// Where a job's model versions are registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRegistry {
    /// nightshift's own registry, in storage (`model train`, `model import`).
    Store(Uri),
    /// An MLflow model registry: `registry = "mlflow+http://HOST:PORT"`.
    Mlflow(crate::mlflow::Server),
}

impl std::fmt::Display for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelRegistry::Store(uri) => write!(f, "{uri}"),
            ModelRegistry::Mlflow(server) => write!(f, "mlflow+{server}"),
        }
    }
}

/// Which version of a model a job scores: a number, or (in MLflow) an alias resolved once at
/// each run's start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pin {
    Version(u32),
    Alias(String),
}

/// The model a job names: `churn@3`, or `churn@champion` (MLflow's own `models:/NAME@ALIAS`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelPin {
    pub name: String,
    pub pin: Pin,
}

impl ModelPin {
    /// The version, when the job pins one by number.
    pub fn version(&self) -> Option<ModelRef> {
        match self.pin {
            Pin::Version(version) => Some(ModelRef {
                name: self.name.clone(),
                version,
            }),
            Pin::Alias(_) => None,
        }
    }
}

impl From<ModelRef> for ModelPin {
    fn from(m: ModelRef) -> Self {
        ModelPin {
            name: m.name,
            pin: Pin::Version(m.version),
        }
    }
}

impl std::fmt::Display for ModelPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pin {
            Pin::Version(v) => write!(f, "{}@{v}", self.name),
            Pin::Alias(a) => write!(f, "{}@{a}", self.name),
        }
    }
}

/// `[model] reference` and `reference_target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceSpec {
    pub uri: Uri,
    pub target: Option<String>,
}

/// `[mlflow]`: the tracking server and experiment committed runs are logged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlflowTracking {
    pub server: crate::mlflow::Server,
    pub experiment: String,
}

/// A cron expression, parsed once at validation.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    pub cron: croner::Cron,
}

/// Which logical date a tick at local date D scores: D plus `offset_days` (yesterday = -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRule {
    pub offset_days: i64,
}

impl DateRule {
    pub fn parse(s: &str) -> Option<Self> {
        let offset_days = match s {
            "today" => 0,
            "yesterday" => -1,
            _ => {
                let n = s.strip_suffix('d')?;
                let n: i64 = n.parse().ok()?;
                if !(-3660..=0).contains(&n) {
                    return None;
                }
                n
            }
        };
        Some(Self { offset_days })
    }

    pub fn logical_date(&self, local_day: NaiveDate) -> NaiveDate {
        local_day + Duration::days(self.offset_days)
    }
}

#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub uri: UriTemplate,
    pub quarantine: UriTemplate,
    pub passthrough: Vec<String>,
    /// One `proba_<label>` column per class (classifiers only).
    pub probabilities: bool,
}

#[derive(Debug, Clone)]
pub struct RunSpec {
    pub batch_rows: usize,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    pub on_bad_rows: BadRowPolicy,
    pub max_bad_rows_fraction: f64,
}

impl RunSpec {
    pub fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// What happens to a row the model cannot score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRowPolicy {
    /// The first bad row fails the run.
    Fail,
    /// Bad rows are counted and dropped.
    Skip,
    /// Bad rows are counted and written, with their reason, to the quarantine location.
    Quarantine,
}

/// A URI with `{date}` (YYYY-MM-DD) and `{job}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriTemplate(pub String);

pub const PLACEHOLDERS: [&str; 2] = ["{date}", "{job}"];

impl UriTemplate {
    pub fn render(&self, job: &str, date: NaiveDate) -> String {
        self.0
            .replace("{date}", &date.format("%Y-%m-%d").to_string())
            .replace("{job}", job)
    }

    /// Renders and parses; the template was checked at validation, so this only fails on
    /// values that a date or job name cannot produce.
    pub fn uri(&self, job: &str, date: NaiveDate) -> anyhow::Result<Uri> {
        Ok(Uri::parse(&self.render(job, date))?)
    }

    /// The default quarantine location: beside the output, never inside it, and always in the
    /// same storage (the same S3 bucket, the same local root).
    ///
    /// The first path segment with a placeholder is where the per-run part starts. The folder
    /// just above it gets a `_quarantine` suffix: `out/scores/churn/dt={date}/` gives
    /// `out/scores/churn_quarantine/dt={date}/`. When there is no such folder to rename (the
    /// per-run part starts at the bucket root, the filesystem root or the top of a relative
    /// path, or the folder above is `.` or `..`), a `_quarantine` folder is inserted there
    /// instead: `s3://my-bucket/dt={date}/` gives `s3://my-bucket/_quarantine/dt={date}/`,
    /// `dt={date}/` gives `_quarantine/dt={date}/`. A bucket name is never changed.
    /// Validation checks the result like a written `quarantine_uri`.
    pub fn quarantine_sibling(&self) -> UriTemplate {
        let s = self.0.trim_end_matches('/');
        // The root never changes: `s3://bucket/`, `file://` and a leading `/`.
        let (scheme, path) = match s.strip_prefix("s3://") {
            Some(rest) => match rest.split_once('/') {
                Some((bucket, key)) => (format!("s3://{bucket}/"), key),
                None => (format!("s3://{rest}/"), ""),
            },
            None => match s.strip_prefix("file://") {
                Some(p) => ("file://".to_string(), p),
                None => (String::new(), s),
            },
        };
        let (root, path) = match path.strip_prefix('/') {
            Some(p) => (format!("{scheme}/"), p),
            None => (scheme, path),
        };
        let mut segments: Vec<String> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').map(str::to_string).collect()
        };
        let first_templated = segments
            .iter()
            .position(|seg| seg.contains('{'))
            .unwrap_or(segments.len());
        let renamable = first_templated
            .checked_sub(1)
            .filter(|&i| !matches!(segments[i].as_str(), "" | "." | ".."));
        match renamable {
            Some(i) => segments[i].push_str("_quarantine"),
            None => segments.insert(first_templated, "_quarantine".to_string()),
        }
        UriTemplate(format!("{root}{}/", segments.join("/")))
    }
}

/// Column names nightshift writes itself: the output's (`score`, `prediction`, `model_name`,
/// `model_version`, `run_id`, `scored_at`) and the quarantine's extra ones (`reason`,
/// `source_file`, `source_row`). A passthrough column may not take one of these names.
// score.rs builds both schemas with these names written out; it should take them from here.
pub const RESERVED_COLUMNS: [&str; 9] = [
    "score",
    "prediction",
    "model_name",
    "model_version",
    "run_id",
    "scored_at",
    "reason",
    "source_file",
    "source_row",
];

/// Settings shared by all jobs of a folder, from `nightshift.toml` beside the job files.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where model versions live.
    pub registry: Uri,
    /// Where run records live.
    pub state: Uri,
    /// Where drift reports live (Hive-partitioned by job and date).
    pub reports: Uri,
    /// S3 client settings, for every `s3://` URI.
    pub s3: S3Settings,
    /// The daemon's limits.
    pub daemon: super::DaemonSettings,
    /// How long a run's lease on its job and date lasts without renewal: a runner that dies
    /// blocks the date for at most this long.
    pub lease_ttl: std::time::Duration,
    /// Temporary objects of crashed runs older than this are removed by the next run that
    /// writes the same prefix.
    pub leftover_age: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            registry: Uri::parse(DEFAULT_REGISTRY).expect("default registry parses"),
            state: Uri::parse(DEFAULT_STATE).expect("default state parses"),
            reports: Uri::parse(DEFAULT_REPORTS).expect("default reports parses"),
            s3: S3Settings::default(),
            daemon: super::DaemonSettings::default(),
            lease_ttl: crate::lease::DEFAULT_TTL,
            leftover_age: DEFAULT_LEFTOVER_AGE,
        }
    }
}

pub const DEFAULT_REGISTRY: &str = "out/registry/";
pub const DEFAULT_STATE: &str = "out/state/";
pub const DEFAULT_REPORTS: &str = "out/reports/";
pub const DEFAULT_LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_rules() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(
            DateRule::parse("yesterday")
                .unwrap()
                .logical_date(d)
                .to_string(),
            "2026-02-28"
        );
        assert_eq!(DateRule::parse("today").unwrap().logical_date(d), d);
        assert_eq!(
            DateRule::parse("-3d").unwrap().logical_date(d).to_string(),
            "2026-02-26"
        );
        assert!(DateRule::parse("+3d").is_none());
        assert!(DateRule::parse("3d").is_none());
        assert!(DateRule::parse("tomorrow").is_none());
    }

    #[test]
    fn quarantine_is_a_sibling_of_the_output() {
        let t = UriTemplate("out/scores/churn/dt={date}/".into());
        assert_eq!(
            t.quarantine_sibling().0,
            "out/scores/churn_quarantine/dt={date}/"
        );
        let t = UriTemplate("s3://b/scores/{job}/dt={date}".into());
        assert_eq!(
            t.quarantine_sibling().0,
            "s3://b/scores_quarantine/{job}/dt={date}/"
        );
        let t = UriTemplate("out/scores/".into());
        assert_eq!(t.quarantine_sibling().0, "out/scores_quarantine/");
    }

    #[test]
    fn quarantine_never_changes_the_bucket_or_the_root() {
        let cases = [
            (
                "s3://my-bucket/{date}/",
                "s3://my-bucket/_quarantine/{date}/",
            ),
            (
                "s3://my-bucket/dt={date}/",
                "s3://my-bucket/_quarantine/dt={date}/",
            ),
            (
                "s3://my-bucket/{job}/dt={date}",
                "s3://my-bucket/_quarantine/{job}/dt={date}/",
            ),
            (
                "s3://my-bucket/a/dt={date}/",
                "s3://my-bucket/a_quarantine/dt={date}/",
            ),
            ("dt={date}/", "_quarantine/dt={date}/"),
            ("./dt={date}/", "./_quarantine/dt={date}/"),
            ("../dt={date}/", "../_quarantine/dt={date}/"),
            ("/dt={date}/", "/_quarantine/dt={date}/"),
            ("/data/dt={date}/", "/data_quarantine/dt={date}/"),
            ("file:///dt={date}/", "file:///_quarantine/dt={date}/"),
            (
                "file:///srv/out/dt={date}/",
                "file:///srv/out_quarantine/dt={date}/",
            ),
            ("out//dt={date}/", "out//_quarantine/dt={date}/"),
        ];
        for (output, quarantine) in cases {
            let q = UriTemplate(output.into()).quarantine_sibling();
            assert_eq!(q.0, quarantine, "quarantine of {output}");
            let day = NaiveDate::from_ymd_opt(2026, 11, 3).unwrap();
            let (o, q) = (
                UriTemplate(output.into()).uri("job", day).unwrap(),
                q.uri("job", day).unwrap(),
            );
            if let (Uri::S3 { bucket: a, .. }, Uri::S3 { bucket: b, .. }) = (&o, &q) {
                assert_eq!(a, b);
            }
        }
    }
}
