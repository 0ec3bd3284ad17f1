//! What the pages show, gathered from storage: a job's run records by date, its drift and
//! performance reports, and the dates its schedule should have scored. Every file read is kept
//! in [`Caches`] under its key and version, so a page reads only what changed since.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use super::cache::Versioned;
use crate::config::{JobSpec, ModelRegistry, Settings};
use crate::drift::report::{self as drift_report, Report};
use crate::performance::{report as performance_report, Evaluation};
use crate::record::{RunHistory, RunRecord, RunStatus, Version};
use crate::storage::{Location, Stores};
use crate::timetable::{logical_date, previous_tick};

/// The parsed files the pages keep (bounded; see [`Versioned`]).
pub struct Caches {
    pub records: Versioned<RunRecord>,
    pub drift: Versioned<Report>,
    pub performance: Versioned<Evaluation>,
}

impl Default for Caches {
    fn default() -> Self {
        // By count: a record is a few KiB parsed, a drift report of fifty features about ten
        // (a year of daily history of ten jobs stays warm; the jobs page needs one per job).
        Self {
            records: Versioned::new(20_000),
            drift: Versioned::new(4_000),
            performance: Versioned::new(4_000),
        }
    }
}

/// A logical date's colour on the pages, as Dagster colours partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum Status {
    /// Its latest run committed, with the model the job pins now.
    Committed,
    /// Its latest run failed or was aborted.
    Failed,
    /// A run of it is running or waiting.
    Running,
    /// The schedule should have scored it, and no run did.
    Missing,
    /// Committed, but with another model version than the job pins now: `backfill
    /// --reprocess stale` runs it again.
    Stale,
}

impl Status {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// A date's runs: the latest first.
#[derive(Debug, Clone)]
pub struct DateRuns {
    pub runs: Vec<Arc<RunRecord>>,
}

impl DateRuns {
    pub fn latest(&self) -> &RunRecord {
        &self.runs[0]
    }

    /// The records of the latest run as a whole: the latest record, or for a sharded run
    /// every shard's record of it.
    pub fn latest_run(&self) -> Vec<&RunRecord> {
        let latest = self.latest();
        match &latest.shard {
            None => vec![latest],
            Some(s) => self
                .runs
                .iter()
                .map(|r| &**r)
                .filter(|r| r.shard.as_ref().is_some_and(|o| o.run == s.run))
                .collect(),
        }
    }

    /// The latest run's rows: summed over its shards.
    pub fn counts(&self) -> crate::score::Counts {
        let mut c = crate::score::Counts::default();
        for r in self.latest_run() {
            c.add(&r.counts);
        }
        c
    }
}

/// Which part of a job's history a page needs.
#[derive(Debug, Clone, Copy)]
pub enum Span {
    /// The last `n` logical dates (the jobs page's strip): their records, and the latest
    /// drift and performance report only.
    Last(usize),
    /// Every date from the first run (at most [`MAX_DAYS`] back) to today, with every report
    /// (the job page).
    All,
    /// One date, its records and reports (a date's page).
    Date(NaiveDate),
}

/// Days a job page shows at most, back from today.
pub const MAX_DAYS: i64 = 3 * 366;

/// One job's history as a page shows it.
pub struct JobHistory {
    pub spec: Arc<JobSpec>,
    /// Today's logical date: what a tick now would score.
    pub today: NaiveDate,
    /// The dates shown, ascending: from the first one (or the window's start) to `today`.
    pub dates: Vec<NaiveDate>,
    pub runs: BTreeMap<NaiveDate, DateRuns>,
    /// Dates the schedule should have scored within the dates shown.
    pub expected: BTreeSet<NaiveDate>,
    /// Dates with a run running or waiting.
    pub active: BTreeSet<NaiveDate>,
    pub drift: BTreeMap<NaiveDate, Arc<Report>>,
    pub performance: BTreeMap<NaiveDate, Arc<Evaluation>>,
}

impl JobHistory {
    pub fn status(&self, date: NaiveDate) -> Option<Status> {
        if self.active.contains(&date) {
            return Some(Status::Running);
        }
        match self.runs.get(&date) {
            Some(r) => Some(date_status(&self.spec, r)),
            None if self.expected.contains(&date) => Some(Status::Missing),
            None => None,
        }
    }

    pub fn latest_run(&self) -> Option<&RunRecord> {
        self.runs
            .values()
            .map(|r| r.latest())
            .max_by_key(|r| r.started_at)
    }
}

/// The colour of a date from its runs. A sharded run counts as committed when one of its
/// shards committed the date, as failed when one failed, and as failed while its shards are
/// done but none completed the set (the running ones show from their leases).
pub fn date_status(spec: &JobSpec, runs: &DateRuns) -> Status {
    let latest = runs.latest();
    if latest.shard.is_none() {
        return run_status(spec, latest);
    }
    let shards = runs.latest_run();
    if let Some(c) = shards
        .iter()
        .find(|r| r.date_state == Some(crate::record::DateState::Committed))
    {
        return run_status(spec, c);
    }
    Status::Failed
}

/// The colour of a finished run.
pub fn run_status(spec: &JobSpec, r: &RunRecord) -> Status {
    match r.status {
        RunStatus::Succeeded if is_stale(spec, r) => Status::Stale,
        RunStatus::Succeeded => Status::Committed,
        RunStatus::Failed | RunStatus::Aborted => Status::Failed,
    }
}

/// Scored by another version than the job pins by number now, or from another registry.
/// (A job that pins an alias is not resolved for a page, and inputs changed since are not
/// looked at: `backfill --reprocess stale --dry-run` says both.)
fn is_stale(spec: &JobSpec, r: &RunRecord) -> bool {
    let Some(pinned) = spec.model.version() else {
        return false;
    };
    let server_then = r.mlflow.as_ref().map(|p| p.server.clone());
    let server_now = match &spec.registry {
        Some(ModelRegistry::Mlflow(s)) => Some(s.to_string()),
        _ => None,
    };
    r.model != pinned.to_string() || server_then != server_now
}

/// Gathers what a page shows of `spec`. `active` are the dates running or waiting now, as
/// whoever serves the page knows them.
pub fn job_history(
    spec: Arc<JobSpec>,
    settings: &Settings,
    stores: &Stores,
    caches: &Caches,
    span: Span,
    active: BTreeSet<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<JobHistory> {
    let today = crate::plan::logical_date(&spec, now);
    let history = RunHistory::new(stores.locate(&settings.state)?);
    let keys = history.keys(&spec.name)?;
    // Dates past today (a run of a date typed wrong) or years back are not drawn.
    let floor = today - chrono::Duration::days(MAX_DAYS);
    let first_run = keys.iter().map(|k| k.date).filter(|d| *d >= floor).min();
    let (from, to) = match span {
        Span::Last(n) => (
            today - chrono::Duration::days(n.saturating_sub(1) as i64),
            today,
        ),
        Span::All => (
            first_run
                .unwrap_or(today)
                .min(today - chrono::Duration::days(29)),
            today,
        ),
        Span::Date(d) => (d, d),
    };
    let mut runs: BTreeMap<NaiveDate, DateRuns> = BTreeMap::new();
    // Keys are newest first, so each date's runs are too.
    for k in keys.iter().filter(|k| k.date >= from && k.date <= to) {
        let record = caches.records.get(&k.key, &k.version, || {
            history
                .read(k)
                .ok_or_else(|| anyhow::anyhow!("unreadable run record"))
        });
        if let Ok(r) = record {
            runs.entry(k.date)
                .or_insert_with(|| DateRuns { runs: Vec::new() })
                .runs
                .push(r);
        }
    }
    let dates: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    // A job is expected to have scored the dates from its first run on: before it, the
    // daemon catches up nothing (timetable::missed_dates), and a job that never ran misses
    // nothing yet.
    let expected = match first_run {
        Some(first) => expected_dates(&spec, from.max(first), now)
            .into_iter()
            .filter(|d| *d <= to)
            .collect(),
        None => BTreeSet::new(),
    };
    let (drift, performance) = reports(&spec.name, settings, stores, caches, span, today)?;
    Ok(JobHistory {
        spec,
        today,
        dates,
        runs,
        expected,
        active,
        drift,
        performance,
    })
}

/// Ticks looked at, at most, walking back over a job's schedule (one per day is enough: the
/// walk jumps to the start of each tick's day).
const MAX_TICKS: usize = 20_000;

/// The logical dates the job's ticks from `from` to `now` score.
pub fn expected_dates(spec: &JobSpec, from: NaiveDate, now: DateTime<Utc>) -> BTreeSet<NaiveDate> {
    let mut out = BTreeSet::new();
    let mut cursor = now + chrono::Duration::seconds(1);
    for _ in 0..MAX_TICKS {
        let Some(tick) = previous_tick(spec, cursor) else {
            break;
        };
        let date = logical_date(spec, tick);
        if date < from {
            break;
        }
        out.insert(date);
        // Every earlier tick of the same local day scores the same date: skip them.
        let day = tick.with_timezone(&spec.timezone).date_naive();
        let midnight = day
            .and_hms_opt(0, 0, 0)
            .and_then(|m| spec.timezone.from_local_datetime(&m).earliest())
            .map(|m| m.with_timezone(&Utc));
        cursor = midnight.filter(|m| *m < tick).unwrap_or(tick);
    }
    out
}

type Reports = (
    BTreeMap<NaiveDate, Arc<Report>>,
    BTreeMap<NaiveDate, Arc<Evaluation>>,
);

/// The job's drift and performance reports (all, or only the latest of each), from one
/// listing of its report partitions.
fn reports(
    job: &str,
    settings: &Settings,
    stores: &Stores,
    caches: &Caches,
    span: Span,
    today: NaiveDate,
) -> Result<Reports> {
    let root = stores.locate(&settings.reports)?;
    let dir = root.join(&format!("job={job}"));
    let mut drift_files = BTreeMap::new();
    let mut performance_files = BTreeMap::new();
    for o in dir.store.list(&dir.key)? {
        let rel = dir.relative(&o.key);
        let Some((partition, file)) = rel.split_once('/') else {
            continue;
        };
        let Some(date) = partition
            .strip_prefix("dt=")
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        else {
            continue;
        };
        // As the records: nothing past today or more than MAX_DAYS back.
        if date > today || date < today - chrono::Duration::days(MAX_DAYS) {
            continue;
        }
        let entry = (o.key.clone(), Version::of(&o));
        if file == drift_report::REPORT_FILE {
            drift_files.insert(date, entry);
        } else if file == performance_report::REPORT_FILE {
            performance_files.insert(date, entry);
        }
    }
    match span {
        Span::Last(_) => {
            drift_files = drift_files.pop_last().into_iter().collect();
            performance_files = performance_files.pop_last().into_iter().collect();
        }
        Span::Date(d) => {
            drift_files.retain(|date, _| *date == d);
            performance_files.retain(|date, _| *date == d);
        }
        Span::All => {}
    }
    let at = |key: &str| Location {
        key: key.to_string(),
        ..dir.clone()
    };
    let drift = load(drift_files, &caches.drift, &at, drift_report::read, "drift");
    let performance = load(
        performance_files,
        &caches.performance,
        &at,
        performance_report::read,
        "performance",
    );
    Ok((drift, performance))
}

/// Each listed report through `cache`; one that cannot be read is skipped with a warning.
fn load<T>(
    files: BTreeMap<NaiveDate, (String, Version)>,
    cache: &Versioned<T>,
    at: &dyn Fn(&str) -> Location,
    read: fn(&Location) -> Result<T>,
    what: &str,
) -> BTreeMap<NaiveDate, Arc<T>> {
    let mut out = BTreeMap::new();
    for (date, (key, version)) in files {
        match cache.get(&key, &version, || read(&at(&key))) {
            Ok(r) => {
                out.insert(date, r);
            }
            Err(e) => {
                tracing::warn!(report = %at(&key).uri(), error = %format!("{e:#}"), "Skipping a {what} report that cannot be read.")
            }
        }
    }
    out
}

/// The dates of `job` whose lease is live now, for a server that runs nothing itself
/// (`nightshift ui`): a lease object modified within `recent` is read, older ones are long
/// expired or released.
pub fn leased_dates(
    settings: &Settings,
    stores: &Stores,
    job: &str,
    now: DateTime<Utc>,
) -> Result<BTreeSet<NaiveDate>> {
    let state = stores.locate(&settings.state)?;
    let dir = state.join("leases").join(job);
    // A sharded run's claim holds for ten ttls without renewal (lease.rs).
    let recent =
        chrono::Duration::from_std(settings.lease_ttl * 11).unwrap_or(chrono::Duration::MAX);
    let mut candidates = BTreeSet::new();
    for o in dir.store.list(&dir.key)? {
        let fresh = o.last_modified.is_none_or(|t| t + recent > now);
        let date = dir
            .relative(&o.key)
            .split('/')
            .next()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        if let Some(date) = date.filter(|_| fresh) {
            candidates.insert(date);
        }
    }
    let mut live = BTreeSet::new();
    for date in candidates {
        if crate::lease::holder(&state, job, date)?.is_some() {
            live.insert(date);
        }
    }
    Ok(live)
}
