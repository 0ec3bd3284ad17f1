//! Job files and shared settings: TOML in, checked `JobSpec`s out, or every mistake at once.
//!
//! `validate`, `run` and the daemon all come through `load`, so they agree on what is valid.

mod daemon;
mod diag;
mod drift;
mod file;
mod labels;
mod locations;
mod spec;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use daemon::{parse_duration, Concurrency, DaemonSettings, Scheduling};
pub use diag::{Diagnostic, Diagnostics};
pub use drift::{DriftSpec, Method, MethodChoice};
pub use labels::{default_tolerance, LabelsSpec};
pub use spec::*;

use chrono_tz::Tz;
use file::Table;

use crate::schema::{is_valid_name, FeatureKind};
use diag::Reporter;
use file::Located;
use locations::Location;

use crate::storage::{S3Settings, Uri, UriError};

/// The name of the shared settings file inside a jobs folder.
pub const SETTINGS_FILE: &str = "nightshift.toml";

/// Everything loaded from a jobs folder (or a list of files).
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub jobs: Vec<JobSpec>,
}

impl Config {
    pub fn job(&self, name: &str) -> anyhow::Result<&JobSpec> {
        self.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
            anyhow::anyhow!("no job named '{name}'; jobs found: {}", names.join(", "))
        })
    }
}

/// Loads and validates job files. Each path is a job file or a folder of them; a folder's
/// `nightshift.toml` holds the shared settings. Returns every mistake of every file at once.
pub fn load(paths: &[PathBuf]) -> Result<Config, Diagnostics> {
    let mut diagnostics = Vec::new();
    let mut settings = None;
    let mut job_files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let settings_path = path.join(SETTINGS_FILE);
            if settings_path.exists() && settings.is_none() {
                settings = Some(settings_path);
            }
            match list_job_files(path) {
                Ok(files) => job_files.extend(files),
                Err(e) => diagnostics.push(io_diag(path, &e)),
            }
        } else if path.file_name().is_some_and(|n| n == SETTINGS_FILE) {
            settings = Some(path.clone());
        } else {
            job_files.push(path.clone());
            if settings.is_none() {
                let beside = path.parent().unwrap_or(Path::new(".")).join(SETTINGS_FILE);
                settings = beside.exists().then_some(beside);
            }
        }
    }

    let (settings, shared) = match settings {
        None => (Settings::default(), SharedNames::default()),
        Some(path) => {
            let (settings, diags, written) = read_settings_file(&path);
            diagnostics.extend(diags);
            let shared = SharedNames {
                file: Some(path),
                written,
            };
            (settings, shared)
        }
    };

    let mut jobs: Vec<JobSpec> = Vec::new();
    // The output and quarantine of each job read so far, to compare later jobs' with.
    let mut written: Vec<Written> = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for path in &job_files {
        let src = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                diagnostics.push(io_diag(path, &e));
                continue;
            }
        };
        let mut rep = Reporter::new(path, &src);
        if let Some((job, spans)) = read_job(&mut rep, path, &src) {
            if let Some(ours) = check_locations(&mut rep, &job, &spans, &settings, &shared) {
                check_other_jobs(&mut rep, &ours, &written);
                written.push(ours);
            }
            if let Some(other) = seen.get(&job.name) {
                rep.error(
                    spans.name,
                    format!(
                        "job name '{}' is already used by {}",
                        job.name,
                        other.display()
                    ),
                );
            } else {
                seen.insert(job.name.clone(), path.clone());
                jobs.push(job);
            }
        }
        rep.diagnostics.sort_by_key(|d| (d.line, d.col));
        diagnostics.extend(rep.diagnostics);
    }
    if job_files.is_empty() && diagnostics.is_empty() {
        let p = paths.first().cloned().unwrap_or_default();
        diagnostics.push(Diagnostic {
            path: p,
            line: 1,
            col: 1,
            message: "no job files (*.toml) found".into(),
        });
    }
    if diagnostics.is_empty() {
        Ok(Config { settings, jobs })
    } else {
        Err(Diagnostics(diagnostics))
    }
}

/// The shared settings of a jobs folder alone (defaults when it has no settings file).
pub fn load_settings(dir: &Path) -> Result<Settings, Diagnostics> {
    let path = dir.join(SETTINGS_FILE);
    if !path.exists() {
        return Ok(Settings::default());
    }
    match read_settings_file(&path) {
        (settings, diags, _) if diags.is_empty() => Ok(settings),
        (_, diags, _) => Err(Diagnostics(diags)),
    }
}

/// The settings, their mistakes, and which of the shared locations the file sets.
fn read_settings_file(path: &Path) -> (Settings, Vec<Diagnostic>, Vec<&'static str>) {
    match std::fs::read_to_string(path) {
        Ok(src) => {
            let mut rep = Reporter::new(path, &src);
            let mut written = Vec::new();
            let settings = read_settings(&mut rep, &src, &mut written).unwrap_or_default();
            rep.diagnostics.sort_by_key(|d| (d.line, d.col));
            (settings, rep.diagnostics, written)
        }
        Err(e) => (Settings::default(), vec![io_diag(path, &e)], Vec::new()),
    }
}

fn io_diag(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic {
        path: path.to_path_buf(),
        line: 1,
        col: 1,
        message: format!("cannot read: {e}"),
    }
}

fn list_job_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let is_settings = path.file_name().is_some_and(|n| n == SETTINGS_FILE);
        if path.is_file() && is_toml && !is_settings {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Replaces `${VAR}` with the environment variable's value, so secrets and per-machine values
/// stay out of job files.
fn interpolate(rep: &mut Reporter, s: &Located<String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = s.value.as_str();
    let mut ok = true;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            rep.error(s.span.clone(), "unclosed '${' in value");
            return None;
        };
        let var = &rest[start + 2..start + len];
        match std::env::var(var) {
            Ok(v) => out.push_str(&v),
            Err(_) => {
                rep.error(
                    s.span.clone(),
                    format!("environment variable '{var}' is not set"),
                );
                ok = false;
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    ok.then_some(out)
}

fn read_uri(rep: &mut Reporter, v: Option<Located<String>>) -> Option<Uri> {
    let v = v?;
    let s = interpolate(rep, &v)?;
    match Uri::parse(&s) {
        Ok(u) => Some(u),
        Err(e) => {
            rep.error(v.span, e.to_string());
            None
        }
    }
}

fn read_template(
    rep: &mut Reporter,
    v: Option<Located<String>>,
    per_date: bool,
) -> Option<UriTemplate> {
    let v = v?;
    let s = interpolate(rep, &v)?;
    // Reruns replace a date's outputs and a failed run clears them, so every date needs a
    // prefix of its own.
    if per_date && !s.contains("{date}") {
        rep.error(v.span, "an output location must contain {date}, so that each logical date has a prefix of its own");
        return None;
    }
    // The template with its placeholders filled in by values that fit anywhere a URI allows
    // (a bucket name included: `s3://{job}-scores/`); the job's real name is checked with the
    // other locations (`locations.rs`).
    let mut probe = s.clone();
    for p in PLACEHOLDERS {
        probe = probe.replace(p, if p == "{date}" { "2000-01-01" } else { "job" });
    }
    if let Some(i) = probe.find('{') {
        let end = probe[i..].find('}').map_or(probe.len(), |e| i + e + 1);
        rep.error(
            v.span,
            format!(
                "unknown placeholder '{}'; known: {}",
                &probe[i..end],
                PLACEHOLDERS.join(", ")
            ),
        );
        return None;
    }
    if let Err(e) = Uri::parse(&probe) {
        // Named as written, placeholders and all: the probe is not in the file.
        rep.error(v.span, e.of_text(&s).to_string());
        return None;
    }
    Some(UriTemplate(s))
}

fn read_settings(
    rep: &mut Reporter,
    src: &str,
    written: &mut Vec<&'static str>,
) -> Option<Settings> {
    let mut root = file::parse(rep, src)?;
    let defaults = Settings::default();
    let registry = root.optional(rep, "registry");
    let registry_span = registry.as_ref().map(|r: &Located<String>| r.span.clone());
    let registry = read_uri(rep, registry).unwrap_or(defaults.registry);
    let state = root.optional(rep, "state");
    let state_span = state.as_ref().map(|r: &Located<String>| r.span.clone());
    let state = read_uri(rep, state).unwrap_or(defaults.state);
    let mut s3 = S3Settings::default();
    if let Some(mut t) = root.table(rep, "s3") {
        s3.endpoint_url = t
            .optional::<String>(rep, "endpoint_url")
            .and_then(|v| interpolate(rep, &v));
        s3.region = t.optional(rep, "region").map(|v| v.value);
        s3.force_path_style = t.optional(rep, "force_path_style").map(|v| v.value);
        s3.timeout_secs = t.optional(rep, "timeout_secs").map(|v| v.value);
        s3.max_attempts = t.optional(rep, "max_attempts").map(|v| v.value);
        // Per-attempt limits; a zero would fail every request.
        for (key, slot) in [
            ("connect_timeout", &mut s3.connect_timeout),
            ("first_byte_timeout", &mut s3.first_byte_timeout),
            ("inactivity_timeout", &mut s3.inactivity_timeout),
        ] {
            let Some(v) = t.optional::<String>(rep, key) else {
                continue;
            };
            match daemon::parse_duration(&v.value) {
                Some(d) if !d.is_zero() => *slot = Some(d),
                Some(_) => rep.error(v.span, format!("field 's3.{key}' must be more than 0")),
                None => rep.error(
                    v.span,
                    format!(
                        "field 's3.{key}': invalid duration '{}'; use a number and a unit, e.g. \"500ms\", \"3s\", \"1m\"",
                        v.value
                    ),
                ),
            }
        }
        t.finish(rep);
    }
    let reports = root.optional(rep, "reports");
    let reports_span = reports.as_ref().map(|r: &Located<String>| r.span.clone());
    let reports = read_uri(rep, reports).unwrap_or(defaults.reports);
    let daemon = daemon::read_daemon_settings(rep, &mut root);
    let lease_ttl = match root.optional::<String>(rep, "lease_ttl") {
        None => defaults.lease_ttl,
        Some(v) => match daemon::parse_duration(&v.value) {
            Some(d) if d >= std::time::Duration::from_secs(1) => d,
            Some(_) => {
                rep.error(v.span, "lease_ttl must be at least 1s");
                defaults.lease_ttl
            }
            None => {
                rep.error(
                    v.span,
                    format!(
                        "field 'lease_ttl': invalid duration '{}'; use a number and a unit, e.g. \"30s\", \"2m\"",
                        v.value
                    ),
                );
                defaults.lease_ttl
            }
        },
    };
    let leftover_age =
        daemon::read_duration(rep, &mut root, "leftover_age").unwrap_or(defaults.leftover_age);
    root.finish(rep);

    // The shared locations must not overlap one another; a mistake is reported at the later
    // of the two fields the file sets.
    let shared = [
        ("registry", &registry, registry_span),
        ("state", &state, state_span),
        ("reports", &reports, reports_span),
    ];
    for (name, _, span) in &shared {
        if span.is_some() {
            written.push(name);
        }
    }
    for (i, (name, uri, span)) in shared.iter().enumerate() {
        for (other, other_uri, other_span) in &shared[..i] {
            let at = match (span, other_span) {
                (Some(s), _) | (None, Some(s)) => s.clone(),
                (None, None) => continue,
            };
            let (subject, object, object_written) = if span.is_some() {
                ((name, uri), (other, other_uri), other_span.is_some())
            } else {
                ((other, other_uri), (name, uri), false)
            };
            if let Some(o) = Location::of_uri(subject.1).overlap(&Location::of_uri(object.1)) {
                let default = if object_written { "" } else { "the default " };
                rep.error(
                    at,
                    format!(
                        "{} '{}' {} {default}{} '{}'; registry, state and reports must not overlap",
                        subject.0,
                        subject.1,
                        o.phrase(),
                        object.0,
                        object.1
                    ),
                );
            }
        }
    }
    Some(Settings {
        registry,
        state,
        reports,
        s3,
        daemon,
        lease_ttl,
        leftover_age,
    })
}

/// Where a job file's fields are, for mistakes found once the whole job is read.
struct JobSpans {
    name: Range<usize>,
    input: Range<usize>,
    output: Range<usize>,
    /// `None` when the quarantine is the default one, derived from the output.
    quarantine: Option<Range<usize>>,
    /// `None` when the job uses the shared registry.
    registry: Option<Range<usize>>,
    /// `None` when the job has no `[labels]`.
    labels: Option<Range<usize>>,
}

/// Reads one job file. Returns the job (if it has no errors) and where its fields are. Each
/// part of the file is read by its own function below, in the file's order; every error is
/// reported before the job is given up, so one `validate` lists them all.
fn read_job(rep: &mut Reporter, path: &Path, src: &str) -> Option<(JobSpec, JobSpans)> {
    let errors_before = rep.diagnostics.len();
    let mut root = file::parse(rep, src)?;
    let name = read_name(rep, &mut root);
    let schedule = read_schedule(rep, &mut root);
    let timezone = read_timezone(rep, &mut root);
    let date = read_date_rule(rep, &mut root);
    let input = read_input(rep, &mut root);
    let model = read_model(rep, &mut root);
    let output = read_output(rep, &mut root);
    let passthrough = output.as_ref().map(|o| o.spec.passthrough.as_slice());
    let labels = labels::read_labels(rep, &mut root, passthrough);
    let run = read_run(rep, &mut root);
    let drift = match root.table(rep, "drift") {
        Some(t) => read_drift(rep, t),
        None => DriftSpec::default(),
    };
    let scheduling = daemon::read_scheduling(rep, &mut root);
    let mlflow = read_mlflow(rep, &mut root, name.as_ref());
    root.finish(rep);

    if rep.diagnostics.len() > errors_before {
        return None;
    }
    let name = name?;
    let (input, input_span) = input?;
    let (labels, labels_span) = match labels? {
        Some((l, span)) => (Some(l), Some(span)),
        None => (None, None),
    };
    let model = model?;
    let output = output?;
    let spans = JobSpans {
        name: name.span,
        input: input_span,
        output: output.span,
        quarantine: output.quarantine_span,
        registry: model.registry_span,
        labels: labels_span,
    };
    Some((
        JobSpec {
            name: name.value,
            path: path.to_path_buf(),
            schedule: schedule?,
            timezone: timezone?,
            date: date?,
            input,
            model: model.model,
            reference: model.reference,
            mlflow: mlflow?,
            output: output.spec,
            run,
            drift,
            labels,
            registry: model.registry,
            scheduling,
        },
        spans,
    ))
}

/// `name`: one rule for job and model names, since both become path segments (and HTTP paths).
fn read_name(rep: &mut Reporter, root: &mut Table<'_>) -> Option<Located<String>> {
    let name: Option<Located<String>> = root.required(rep, "name", "");
    if let Some(n) = &name {
        if !is_valid_name(&n.value) {
            rep.error(
                n.span.clone(),
                "job name must be non-empty and use only letters, digits, '_' and '-'",
            );
        }
    }
    name
}

fn read_schedule(rep: &mut Reporter, root: &mut Table<'_>) -> Option<Schedule> {
    let schedule = root.required::<String>(
        rep,
        "schedule",
        " (a 5-field cron expression, e.g. \"30 2 * * *\")",
    )?;
    match parse_cron(&schedule.value) {
        Ok(cron) => Some(Schedule {
            expression: schedule.value,
            cron,
        }),
        Err(e) => {
            rep.error(
                schedule.span,
                format!("invalid cron expression '{}': {e} (fields: minute hour day-of-month month day-of-week)", schedule.value),
            );
            None
        }
    }
}

/// `timezone`, UTC when absent.
fn read_timezone(rep: &mut Reporter, root: &mut Table<'_>) -> Option<Tz> {
    let Some(tz) = root.optional::<String>(rep, "timezone") else {
        return Some(Tz::UTC);
    };
    match tz.value.parse::<Tz>() {
        Ok(t) => Some(t),
        Err(_) => {
            rep.error(
                tz.span,
                format!(
                    "unknown time zone '{}'; use an IANA name such as \"Europe/Berlin\" or \"UTC\"",
                    tz.value
                ),
            );
            None
        }
    }
}

/// `date`: which logical date a tick scores, yesterday when absent.
fn read_date_rule(rep: &mut Reporter, root: &mut Table<'_>) -> Option<DateRule> {
    let Some(d) = root.optional::<String>(rep, "date") else {
        return Some(DateRule { offset_days: -1 });
    };
    DateRule::parse(&d.value).or_else(|| {
        rep.error(
            d.span,
            format!(
                "invalid date rule '{}'; use \"today\", \"yesterday\" or \"-Nd\"",
                d.value
            ),
        );
        None
    })
}

/// `[input]`: the template, and where `uri` is written (for the location checks).
fn read_input(rep: &mut Reporter, root: &mut Table<'_>) -> Option<(UriTemplate, Range<usize>)> {
    let Some(mut t) = root.table(rep, "input") else {
        rep.error(0..0, "missing table [input]");
        return None;
    };
    let uri: Option<Located<String>> = t.required(rep, "uri", "");
    let span = uri.as_ref().map(|u| u.span.clone());
    let template = read_template(rep, uri, false);
    t.finish(rep);
    Some((template?, span?))
}

/// `[model]`, read.
struct ModelTable {
    model: ModelPin,
    /// The job's own registry, when it does not use the shared one.
    registry: Option<ModelRegistry>,
    registry_span: Option<Range<usize>>,
    reference: Option<ReferenceSpec>,
}

fn read_model(rep: &mut Reporter, root: &mut Table<'_>) -> Option<ModelTable> {
    let Some(mut t) = root.table(rep, "model") else {
        rep.error(0..0, "missing table [model]");
        return None;
    };
    let name = t.required::<String>(rep, "name", "");
    let registry: Option<Located<String>> = t.optional(rep, "registry");
    let registry_span = registry.as_ref().map(|r| r.span.clone());
    let registry = registry.and_then(|r| interpolate(rep, &r).map(|s| (s, r.span)));
    // Meant as MLflow even where the address is wrong: the name and pin rules follow it.
    let mlflow = registry
        .as_ref()
        .is_some_and(|(s, _)| s.starts_with("mlflow+"));
    let registry = registry.and_then(|(s, span)| {
        if crate::mlflow::has_userinfo(&s) {
            // Before anything quotes the value: it holds a secret.
            rep.error(
                span,
                format!("registry: {}", crate::mlflow::CREDENTIALS_IN_ADDRESS),
            );
            return None;
        }
        match crate::mlflow::Server::from_registry(&s) {
            Some(Ok(server)) => Some(ModelRegistry::Mlflow(server)),
            Some(Err(e)) => {
                rep.error(span, format!("registry: {e}"));
                None
            }
            None => Uri::parse(&s)
                .map(ModelRegistry::Store)
                .map_err(|e| rep.error(span, e.to_string()))
                .ok(),
        }
    });
    if let Some(n) = name.as_ref() {
        // MLflow names its models as it likes (spaces, dots); nightshift's registry keeps
        // names that are one path segment.
        let valid = if mlflow {
            !n.value.trim().is_empty() && !n.value.chars().any(char::is_control)
        } else {
            is_valid_name(&n.value)
        };
        if !valid {
            rep.error(
                n.span.clone(),
                if mlflow {
                    "model name must not be empty or hold control characters"
                } else {
                    "model name must be non-empty and use only letters, digits, '_' and '-'"
                },
            );
        }
    }
    let version = t.optional::<u32>(rep, "version");
    let alias = t.optional::<String>(rep, "alias");
    let pin = match (version, alias) {
        (Some(v), None) if v.value == 0 => {
            rep.error(v.span, "model versions start at 1");
            None
        }
        (Some(v), None) => Some(Pin::Version(v.value)),
        (None, Some(a)) if !mlflow => {
            rep.error(
                a.span,
                "alias needs an MLflow registry (registry = \"mlflow+http://HOST:PORT\"); \
                 nightshift's own registry has no aliases: pin a version",
            );
            None
        }
        (None, Some(a)) if a.value.trim().is_empty() || a.value.chars().any(char::is_control) => {
            rep.error(a.span, "alias must not be empty or hold control characters");
            None
        }
        (None, Some(a)) => Some(Pin::Alias(a.value)),
        (Some(_), Some(a)) => {
            rep.error(
                a.span,
                "a job pins its model by version or by alias, not both: remove one",
            );
            None
        }
        (None, None) => {
            rep.error(
                t.span(),
                "missing field 'version' in [model]: a job must pin its model version (see \
                 `nightshift model list`), or, with an MLflow registry, name an alias",
            );
            None
        }
    };
    let reference_uri: Option<Located<String>> = t.optional(rep, "reference");
    let written = reference_uri.is_some();
    let reference_uri = read_uri(rep, reference_uri);
    let target = t.optional::<String>(rep, "reference_target");
    let reference = match (reference_uri, target) {
        (Some(uri), target) => Some(ReferenceSpec {
            uri,
            target: target.map(|t| t.value),
        }),
        (None, Some(t)) if !written => {
            rep.error(
                t.span,
                "reference_target needs reference: the target column is read from the \
                 reference data",
            );
            None
        }
        _ => None,
    };
    t.finish(rep);
    Some(ModelTable {
        model: ModelPin {
            name: name?.value,
            pin: pin?,
        },
        registry,
        registry_span,
        reference,
    })
}

/// `[mlflow]`: where committed runs are logged, if anywhere.
fn read_mlflow(
    rep: &mut Reporter,
    root: &mut Table<'_>,
    job: Option<&Located<String>>,
) -> Option<Option<MlflowTracking>> {
    let Some(mut t) = root.table(rep, "mlflow") else {
        return Some(None);
    };
    let uri = t.required::<String>(
        rep,
        "tracking_uri",
        ": the MLflow server runs are logged to",
    );
    let server = uri.and_then(|u| {
        let s = interpolate(rep, &u)?;
        crate::mlflow::Server::parse(&s)
            .map_err(|e| rep.error(u.span.clone(), format!("tracking_uri: {e}")))
            .ok()
    });
    let experiment = t.optional::<String>(rep, "experiment");
    if let Some(e) = experiment.as_ref().filter(|e| e.value.trim().is_empty()) {
        rep.error(e.span.clone(), "experiment must not be empty");
    }
    t.finish(rep);
    let experiment = match experiment {
        Some(e) => e.value,
        None => format!("nightshift/{}", job?.value),
    };
    Some(Some(MlflowTracking {
        server: server?,
        experiment,
    }))
}

/// `[output]`, read, with where its locations are written.
struct OutputTable {
    spec: OutputSpec,
    span: Range<usize>,
    /// `None` when the quarantine is the default one, derived from the output.
    quarantine_span: Option<Range<usize>>,
}

fn read_output(rep: &mut Reporter, root: &mut Table<'_>) -> Option<OutputTable> {
    let Some(mut t) = root.table(rep, "output") else {
        rep.error(0..0, "missing table [output]");
        return None;
    };
    let uri: Option<Located<String>> = t.required(rep, "uri", "");
    let span = uri.as_ref().map(|u| u.span.clone());
    let uri = read_template(rep, uri, true);
    let mut quarantine_span = None;
    let quarantine = t.optional(rep, "quarantine_uri").map(|q: Located<String>| {
        quarantine_span = Some(q.span.clone());
        read_template(rep, Some(q), true)
    });
    let passthrough = read_passthrough(rep, &mut t);
    let probabilities = t
        .optional::<bool>(rep, "probabilities")
        .is_some_and(|p| p.value);
    t.finish(rep);
    let quarantine = match quarantine {
        Some(q) => q,
        None => uri.as_ref().map(UriTemplate::quarantine_sibling),
    };
    Some(OutputTable {
        spec: OutputSpec {
            uri: uri?,
            quarantine: quarantine?,
            passthrough,
            probabilities,
        },
        span: span?,
        quarantine_span,
    })
}

/// `[run]`, defaults filled in.
fn read_run(rep: &mut Reporter, root: &mut Table<'_>) -> RunSpec {
    let mut run = RunSpec {
        batch_rows: 16_384,
        threads: 0,
        on_bad_rows: BadRowPolicy::Quarantine,
        max_bad_rows_fraction: 0.01,
    };
    let Some(mut t) = root.table(rep, "run") else {
        return run;
    };
    if let Some(b) = t.optional::<usize>(rep, "batch_rows") {
        if b.value == 0 || b.value > 16 * 1024 * 1024 {
            rep.error(b.span, "batch_rows must be between 1 and 16777216");
        }
        run.batch_rows = b.value;
    }
    if let Some(n) = t.optional::<usize>(rep, "threads") {
        run.threads = n.value;
    }
    if let Some(p) = t.optional(rep, "on_bad_rows") {
        run.on_bad_rows = p.value;
    }
    if let Some(f) = t.optional::<f64>(rep, "max_bad_rows_fraction") {
        if !(0.0..=1.0).contains(&f.value) {
            rep.error(f.span, "max_bad_rows_fraction must be between 0 and 1");
        }
        run.max_bad_rows_fraction = f.value;
    }
    t.finish(rep);
    run
}

/// `[output] passthrough`: input columns copied to the output. Each is reported at its own
/// place in the list when it takes the name of a column nightshift writes, or comes twice.
fn read_passthrough(rep: &mut Reporter, t: &mut Table<'_>) -> Vec<String> {
    let Some(list) = t.optional::<Vec<toml::Spanned<String>>>(rep, "passthrough") else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    for column in list.value {
        let span = column.span();
        let name = column.into_inner();
        if RESERVED_COLUMNS.contains(&name.as_str()) {
            rep.error(
                span,
                format!(
                    "passthrough column '{name}' has the name of a column nightshift writes \
                     (output and quarantine columns: {})",
                    RESERVED_COLUMNS.join(", ")
                ),
            );
        } else if names.contains(&name) {
            rep.error(span, format!("passthrough column '{name}' is listed twice"));
        } else {
            names.push(name);
        }
    }
    names
}

/// Names the shared locations in messages: set in `nightshift.toml`, or defaults.
#[derive(Default)]
struct SharedNames {
    file: Option<PathBuf>,
    /// The fields of `registry`, `state` and `reports` that the file sets.
    written: Vec<&'static str>,
}

impl SharedNames {
    fn describe(&self, field: &'static str, uri: &Uri) -> String {
        match &self.file {
            Some(f) if self.written.contains(&field) => {
                format!("{field} '{uri}' in {}", f.display())
            }
            _ => format!("the default {field} '{uri}'"),
        }
    }
}

/// One of a job's locations, ready to be compared and named in a message.
struct Place {
    /// How a message names it, value included: "output uri 'out/scores/dt={date}/'".
    name: String,
    location: Location,
    /// Where to report a mistake about it; `None` for the shared locations.
    span: Option<Range<usize>>,
}

impl Place {
    fn of_template(
        name: String,
        span: &Range<usize>,
        t: &UriTemplate,
        job: &str,
    ) -> Result<Self, UriError> {
        Ok(Self {
            location: Location::of_template(&t.0, job)?,
            name,
            span: Some(span.clone()),
        })
    }
}

/// A job's output and quarantine, kept to compare the next jobs' with.
struct Written {
    /// "of job 'a' (jobs/a.toml)".
    job: String,
    places: [Place; 2],
}

/// Checks that a job's locations are valid once rendered for it and that no two of them
/// overlap: input, output, quarantine (written or default), registry (its own or the shared
/// one), state and reports. Each overlap is reported once, at the later of the two job-file
/// fields (input, registry, output, quarantine; a default quarantine at the output). Returns
/// the job's output and quarantine, for comparing with other jobs'.
fn check_locations(
    rep: &mut Reporter,
    job: &JobSpec,
    spans: &JobSpans,
    settings: &Settings,
    shared: &SharedNames,
) -> Option<Written> {
    let mut template = |span: &Range<usize>, name: String, t: &UriTemplate| {
        Place::of_template(name.clone(), span, t, &job.name)
            .map_err(|e| rep.error(span.clone(), format!("{name} is not a valid location: {e}")))
            .ok()
    };
    let input = template(
        &spans.input,
        format!("input uri '{}'", job.input.0),
        &job.input,
    );
    // Outcomes are read, never written: only checked as a location of this job's.
    if let (Some(labels), Some(span)) = (&job.labels, &spans.labels) {
        template(span, format!("labels uri '{}'", labels.uri.0), &labels.uri);
    }
    let output = template(
        &spans.output,
        format!("output uri '{}'", job.output.uri.0),
        &job.output.uri,
    );
    let quarantine = match &spans.quarantine {
        Some(span) => template(
            span,
            format!("quarantine_uri '{}'", job.output.quarantine.0),
            &job.output.quarantine,
        ),
        None => template(
            &spans.output,
            format!(
                "the default quarantine location '{}' (derived from the output uri)",
                job.output.quarantine.0
            ),
            &job.output.quarantine,
        ),
    };
    // An MLflow registry is no location of the job's: MLflow keeps its files.
    let registry = match (&job.registry, &spans.registry) {
        (Some(ModelRegistry::Mlflow(_)), _) => None,
        (Some(ModelRegistry::Store(uri)), Some(span)) => Some(Place {
            name: format!("model registry '{uri}'"),
            location: Location::of_uri(uri),
            span: Some(span.clone()),
        }),
        _ => Some(Place {
            name: shared.describe("registry", &settings.registry),
            location: Location::of_uri(&settings.registry),
            span: None,
        }),
    };
    let shared_place = |field, uri| Place {
        name: shared.describe(field, uri),
        location: Location::of_uri(uri),
        span: None,
    };
    let (input, output, quarantine) = (input?, output?, quarantine?);
    // In reporting order: a mistake is reported at the later of the two.
    let state = shared_place("state", &settings.state);
    let reports = shared_place("reports", &settings.reports);
    let places: Vec<&Place> = [
        Some(&state),
        Some(&reports),
        Some(&input),
        registry.as_ref(),
    ]
    .into_iter()
    .flatten()
    .chain([&output, &quarantine])
    .collect();
    let mut reported = HashSet::new();
    for (i, place) in places.iter().enumerate() {
        let Some(span) = &place.span else { continue };
        for other in &places[..i] {
            let Some(overlap) = place.location.overlap(&other.location) else {
                continue;
            };
            if reported.insert((span.start, &other.name)) {
                rep.error(
                    span.clone(),
                    format!(
                        "{} {} {}; a job's locations must not overlap",
                        place.name,
                        overlap.phrase(),
                        other.name
                    ),
                );
            }
        }
    }
    Some(Written {
        job: format!("of job '{}' ({})", job.name, job.path.display()),
        places: [output, quarantine],
    })
}

/// Checks a job's output and quarantine against those of the jobs read before it, reporting
/// at this job's fields (each at most once per other job).
fn check_other_jobs(rep: &mut Reporter, ours: &Written, earlier: &[Written]) {
    for theirs in earlier {
        let mut reported = HashSet::new();
        for place in &ours.places {
            let Some(span) = &place.span else { continue };
            for other in &theirs.places {
                let Some(overlap) = place.location.overlap(&other.location) else {
                    continue;
                };
                if reported.insert(span.start) {
                    rep.error(
                        span.clone(),
                        format!(
                            "{} {} {} {}; two jobs must not write to overlapping locations",
                            place.name,
                            overlap.phrase(),
                            other.name,
                            theirs.job
                        ),
                    );
                }
            }
        }
    }
}

/// Standard 5-field cron (as crontab and Kubernetes take it), or 6 fields with seconds first.
/// Day-of-month and day-of-week combine with OR, as in Vixie cron. The daemon fires with the
/// `Cron` parsed here, so validation and firing cannot disagree.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
}

/// The `[drift]` table: verdict settings, and method overrides for all columns, per column
/// type (`[drift.numeric]`, `[drift.categorical]`) and per column (`[drift.columns.NAME]`).
fn read_drift(rep: &mut Reporter, mut t: Table<'_>) -> DriftSpec {
    let mut spec = DriftSpec::default();
    if let Some(v) = t.optional(rep, "enabled") {
        spec.enabled = v.value;
    }
    if let Some(v) = t.optional::<f64>(rep, "drift_share") {
        if !(0.0..=1.0).contains(&v.value) {
            rep.error(v.span.clone(), "drift_share must be between 0 and 1");
        }
        spec.drift_share = v.value;
    }
    if let Some(v) = t.optional(rep, "fail_on_drift") {
        spec.fail_on_drift = v.value;
    }
    spec.all = read_method(rep, &mut t, None);
    if let Some(mut n) = t.table(rep, "numeric") {
        spec.numeric = read_method(rep, &mut n, Some(FeatureKind::Numeric));
        n.finish(rep);
    }
    if let Some(mut c) = t.table(rep, "categorical") {
        spec.categorical = read_method(rep, &mut c, Some(FeatureKind::Categorical));
        c.finish(rep);
    }
    if let Some(columns) = t.table(rep, "columns") {
        for (name, mut col) in columns.tables(rep) {
            let choice = read_method(rep, &mut col, None);
            col.finish(rep);
            spec.columns.insert(name, choice);
        }
    }
    t.finish(rep);
    spec
}

fn read_method(rep: &mut Reporter, t: &mut Table<'_>, kind: Option<FeatureKind>) -> MethodChoice {
    let method = t.optional::<Method>(rep, "method");
    if let (Some(m), Some(k)) = (&method, kind) {
        if !m.value.supports(k) {
            rep.error(
                m.span.clone(),
                format!("method '{}' cannot compare {k:?} columns", m.value.name()).to_lowercase(),
            );
        }
    }
    let threshold = t.optional::<f64>(rep, "threshold");
    if let Some(th) = &threshold {
        if th.value.is_nan() || th.value <= 0.0 {
            rep.error(th.span.clone(), "threshold must be positive");
        }
    }
    MethodChoice {
        method: method.map(|m| m.value),
        threshold: threshold.map(|t| t.value),
    }
}
