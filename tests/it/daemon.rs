//! `nightshift daemon`: scheduling through the library with a manual clock and a fake runner
//! (DST nights, overlap policies, retries, catch-up, reload), and the real binary over HTTP
//! (API, metrics, online scores equal to batch scores, triggers, SIGTERM mid-run).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use nightshift::config::{self, JobSpec};
use nightshift::daemon::clock::{Clock, ManualClock};
use nightshift::daemon::metrics::Metrics;
use nightshift::daemon::reload::JobsFolder;
use nightshift::daemon::scheduler::{Runner, Scheduler, TriggerError};
use nightshift::record::{RunHistory, RunRecord, RunStatus};
use nightshift::run::RunFailed;
use nightshift::score::Counts;
use nightshift::storage::{Stores, Uri};
use serde_json::{json, Value};

use crate::util::{files_under, read_parquet, Env, FIXTURES};

// ---------------------------------------------------------------------------------------------
// Library: the scheduler with a manual clock and a fake runner.

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A job file with the given schedule, time zone and extra top-level fields, loaded.
fn spec(dir: &Path, name: &str, schedule: &str, tz: &str, extra: &str) -> JobSpec {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, job_file(name, schedule, tz, extra)).unwrap();
    config::load(&[path]).unwrap().jobs.remove(0)
}

fn job_file(name: &str, schedule: &str, tz: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
schedule = "{schedule}"
timezone = "{tz}"
date = "yesterday"
{extra}

[input]
uri = "in/{name}/dt={{date}}/"

[model]
name = "churn"
version = 1

[output]
uri = "out/{name}/dt={{date}}/"
"#
    )
}

#[derive(Debug, Clone, PartialEq)]
struct Call {
    job: String,
    date: NaiveDate,
    at: DateTime<Utc>,
}

/// Records each run; optionally holds runs until released, and fails some dates.
#[derive(Default)]
struct FakeRunner {
    clock: Option<Arc<ManualClock>>,
    calls: Mutex<Vec<Call>>,
    gate: Mutex<Gate>,
    opened: Condvar,
    failing: Mutex<Vec<NaiveDate>>,
    /// Dates that fail with a mistake (not transient): never worth a retry.
    broken: Mutex<Vec<NaiveDate>>,
}

#[derive(Default)]
struct Gate {
    closed: bool,
    permits: usize,
}

impl FakeRunner {
    fn new(clock: &Arc<ManualClock>) -> Arc<Self> {
        Arc::new(Self {
            clock: Some(clock.clone()),
            ..Self::default()
        })
    }

    fn gated(clock: &Arc<ManualClock>) -> Arc<Self> {
        let r = Self::new(clock);
        r.gate.lock().unwrap().closed = true;
        r
    }

    /// Lets `n` held runs finish.
    fn release(&self, n: usize) {
        self.gate.lock().unwrap().permits += n;
        self.opened.notify_all();
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn dates(&self) -> Vec<String> {
        self.calls().iter().map(|c| c.date.to_string()).collect()
    }
}

fn record(job: &str, date: NaiveDate, status: RunStatus) -> RunRecord {
    let now = Utc::now();
    RunRecord {
        job: job.into(),
        logical_date: date,
        run_id: format!("{}-{}", now.timestamp_nanos_opt().unwrap(), date),
        status,
        started_at: now,
        finished_at: now,
        seconds: 0.0,
        model: "churn@1".into(),
        partitions: 0,
        counts: Counts::default(),
        output: None,
        quarantine: None,
        drift: None,
        no_drift_report: None,
        error: None,
        date_state: None,
        leftovers_removed: 0,
        shard: None,
        mlflow: None,
        mlflow_log: None,
        stages: Vec::new(),
    }
}

impl Runner for FakeRunner {
    fn run(
        &self,
        job: &JobSpec,
        date: NaiveDate,
        _cancel: Arc<AtomicBool>,
    ) -> Result<RunRecord, Box<RunFailed>> {
        let at = self.clock.as_ref().map(|c| c.now()).unwrap_or_default();
        self.calls.lock().unwrap().push(Call {
            job: job.name.clone(),
            date,
            at,
        });
        let mut gate = self.gate.lock().unwrap();
        while gate.closed && gate.permits == 0 {
            gate = self.opened.wait(gate).unwrap();
        }
        if gate.closed {
            gate.permits -= 1;
        }
        drop(gate);
        if self.failing.lock().unwrap().contains(&date) {
            return Err(Box::new(RunFailed {
                record: record(&job.name, date, RunStatus::Failed),
                error: anyhow::anyhow!("input not there yet"),
                transient: true,
            }));
        }
        if self.broken.lock().unwrap().contains(&date) {
            return Err(Box::new(RunFailed {
                record: record(&job.name, date, RunStatus::Failed),
                error: anyhow::anyhow!("column 'tenure_months' is missing"),
                transient: false,
            }));
        }
        Ok(record(&job.name, date, RunStatus::Succeeded))
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Rig {
    clock: Arc<ManualClock>,
    runner: Arc<FakeRunner>,
    metrics: Arc<Metrics>,
    sched: Scheduler,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new(start: DateTime<Utc>, gated: bool, max_concurrent: usize) -> Self {
        let clock = Arc::new(ManualClock::new(start));
        let runner = if gated {
            FakeRunner::gated(&clock)
        } else {
            FakeRunner::new(&clock)
        };
        let metrics = Arc::new(Metrics::new());
        let sched = Scheduler::new(
            clock.clone(),
            runner.clone(),
            metrics.clone(),
            max_concurrent,
        );
        Self {
            clock,
            runner,
            metrics,
            sched,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn job(&self, name: &str, schedule: &str, tz: &str, extra: &str) -> JobSpec {
        spec(self.dir.path(), name, schedule, tz, extra)
    }

    /// Moves the clock to `t` and ticks.
    fn tick_at(&self, t: DateTime<Utc>) {
        self.clock.set(t);
        self.sched.tick();
    }

    /// Walks the clock minute by minute over (from, to], ticking and letting each run finish.
    fn walk(&self, from: DateTime<Utc>, to: DateTime<Utc>) {
        let mut t = from;
        while t < to {
            t += chrono::Duration::minutes(1);
            self.tick_at(t);
            assert!(self.sched.wait_idle(Duration::from_secs(10)));
        }
    }

    fn fired(&self, job: &str) -> Vec<(String, String)> {
        self.runner
            .calls()
            .iter()
            .filter(|c| c.job == job)
            .map(|c| (c.at.format("%m-%d %H:%M").to_string(), c.date.to_string()))
            .collect()
    }

    fn waiting(&self, job: &str) -> Vec<String> {
        let v = self.sched.view(job).unwrap();
        v.waiting.iter().map(|p| p.date.to_string()).collect()
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Every half hour in UTC from `from` (exclusive) to `to` (inclusive), as "MM-DD HH:MM".
fn half_hours(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
    let mut out = Vec::new();
    let mut t = from + chrono::Duration::minutes(30);
    while t <= to {
        out.push(t.format("%m-%d %H:%M").to_string());
        t += chrono::Duration::minutes(30);
    }
    out
}

/// Europe/Berlin, 2026-03-29: clocks jump from 02:00 CET to 03:00 CEST. A job at 02:30 fires
/// once, at 03:00 CEST (01:00 UTC), the first valid instant after the gap; 01:30 is unaffected;
/// an every-30-minutes job simply has no 02:00 and 02:30 that night.
#[test]
fn ticks_fire_at_the_right_instants_when_clocks_spring_forward() {
    let rig = Rig::new(utc(2026, 3, 28, 22, 0), false, 4);
    let berlin = "Europe/Berlin";
    rig.sched.set_jobs(vec![
        rig.job("at_0230", "30 2 * * *", berlin, ""),
        rig.job("at_0130", "30 1 * * *", berlin, ""),
        rig.job("every_30", "*/30 * * * *", berlin, ""),
    ]);
    rig.walk(utc(2026, 3, 28, 22, 0), utc(2026, 3, 30, 4, 0));
    assert_eq!(
        rig.fired("at_0230"),
        pairs(&[("03-29 01:00", "2026-03-28"), ("03-30 00:30", "2026-03-29")])
    );
    assert_eq!(
        rig.fired("at_0130"),
        pairs(&[("03-29 00:30", "2026-03-28"), ("03-29 23:30", "2026-03-29")])
    );
    let every_30: Vec<String> = rig.fired("every_30").into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        every_30,
        half_hours(utc(2026, 3, 28, 22, 0), utc(2026, 3, 30, 4, 0))
    );
    assert_eq!(rig.metrics.ticks_skipped("every_30", "overlap"), 0);
}

/// Europe/Berlin, 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET, so 02:00-03:00
/// happens twice. A job at 02:30 fires once, at the first 02:30 (CEST, 00:30 UTC); an
/// every-30-minutes job fires at both 02:00 and both 02:30.
#[test]
fn ticks_fire_at_the_right_instants_when_clocks_fall_back() {
    let rig = Rig::new(utc(2026, 10, 24, 22, 0), false, 4);
    let berlin = "Europe/Berlin";
    rig.sched.set_jobs(vec![
        rig.job("at_0230", "30 2 * * *", berlin, ""),
        rig.job("every_30", "*/30 * * * *", berlin, ""),
    ]);
    rig.walk(utc(2026, 10, 24, 22, 0), utc(2026, 10, 26, 4, 0));
    assert_eq!(
        rig.fired("at_0230"),
        pairs(&[("10-25 00:30", "2026-10-24"), ("10-26 01:30", "2026-10-25")])
    );
    let every_30 = rig.fired("every_30");
    let times: Vec<String> = every_30.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(
        times,
        half_hours(utc(2026, 10, 24, 22, 0), utc(2026, 10, 26, 4, 0))
    );
    // 02:00 and 02:30 local, twice each: 00:00, 00:30 UTC (CEST) and 01:00, 01:30 UTC (CET).
    for t in ["10-25 00:00", "10-25 00:30", "10-25 01:00", "10-25 01:30"] {
        assert!(times.contains(&t.to_string()), "{t} missing");
    }
}

#[test]
fn forbid_skips_a_tick_while_the_previous_run_is_going() {
    let rig = Rig::new(utc(2026, 6, 1, 0, 0), true, 4);
    rig.sched
        .set_jobs(vec![rig.job("daily", "30 2 * * *", "UTC", "")]);
    rig.tick_at(utc(2026, 6, 1, 2, 30));
    wait_until("the first run", || rig.runner.calls().len() == 1);
    rig.tick_at(utc(2026, 6, 2, 2, 30));
    assert_eq!(rig.metrics.ticks_skipped("daily", "overlap"), 1);
    assert!(rig.waiting("daily").is_empty());
    rig.runner.release(1);
    assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    rig.tick_at(utc(2026, 6, 3, 2, 30));
    wait_until("the next run", || rig.runner.calls().len() == 2);
    rig.runner.release(1);
    assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    assert_eq!(rig.runner.dates(), ["2026-05-31", "2026-06-02"]);
}

#[test]
fn queue_runs_ticks_one_after_another() {
    let rig = Rig::new(utc(2026, 6, 1, 0, 0), true, 4);
    rig.sched.set_jobs(vec![rig.job(
        "daily",
        "30 2 * * *",
        "UTC",
        "concurrency = \"queue\"",
    )]);
    rig.tick_at(utc(2026, 6, 1, 2, 30));
    wait_until("the first run", || rig.runner.calls().len() == 1);
    rig.tick_at(utc(2026, 6, 2, 2, 30));
    rig.tick_at(utc(2026, 6, 3, 2, 30));
    assert_eq!(rig.waiting("daily"), ["2026-06-01", "2026-06-02"]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        rig.runner.calls().len(),
        1,
        "queued runs wait for the running one"
    );
    rig.runner.release(1);
    wait_until("the second run", || rig.runner.calls().len() == 2);
    assert_eq!(rig.waiting("daily"), ["2026-06-02"]);
    rig.runner.release(2);
    assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    wait_until("the third run", || rig.runner.calls().len() == 3);
    assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    assert_eq!(
        rig.runner.dates(),
        ["2026-05-31", "2026-06-01", "2026-06-02"]
    );
    assert_eq!(rig.metrics.ticks_skipped("daily", "overlap"), 0);
}

#[test]
fn allow_overlaps_runs_up_to_the_global_limit_never_two_of_one_date() {
    let rig = Rig::new(utc(2026, 6, 1, 0, 0), true, 2);
    rig.sched.set_jobs(vec![rig.job(
        "daily",
        "30 2 * * *",
        "UTC",
        "concurrency = \"allow\"",
    )]);
    rig.tick_at(utc(2026, 6, 1, 2, 30));
    rig.tick_at(utc(2026, 6, 2, 2, 30));
    wait_until("two overlapping runs", || rig.runner.calls().len() == 2);
    // The third tick finds max_concurrent_runs = 2 taken: it waits.
    rig.tick_at(utc(2026, 6, 3, 2, 30));
    assert_eq!(rig.waiting("daily"), ["2026-06-02"]);
    // A second run of a date that is running is refused.
    match rig.sched.trigger("daily", date("2026-05-31")) {
        Err(TriggerError::Conflict(m)) => assert!(m.contains("same date"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    rig.runner.release(1);
    wait_until("the waiting run", || rig.runner.calls().len() == 3);
    rig.runner.release(2);
    assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    let mut dates = rig.runner.dates();
    assert_eq!(dates[2], "2026-06-02", "the waiting run starts last");
    dates.sort();
    assert_eq!(dates, ["2026-05-31", "2026-06-01", "2026-06-02"]);
}

#[test]
fn failed_runs_are_retried_with_exponential_backoff() {
    let rig = Rig::new(utc(2026, 6, 1, 0, 0), false, 2);
    rig.sched.set_jobs(vec![rig.job(
        "daily",
        "30 2 * * *",
        "UTC",
        "retries = 2\nretry_backoff = \"30s\"",
    )]);
    rig.runner.failing.lock().unwrap().push(date("2026-05-31"));
    let t0 = utc(2026, 6, 1, 2, 30);
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    rig.tick_at(t0);
    assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    assert_eq!(rig.runner.calls().len(), 1);
    for (t, calls) in [(29, 1), (30, 2), (89, 2), (90, 3), (500, 3)] {
        rig.tick_at(at(t));
        assert!(rig.sched.wait_idle(Duration::from_secs(10)));
        assert_eq!(rig.runner.calls().len(), calls, "at +{t}s");
    }
    let starts: Vec<i64> = rig
        .runner
        .calls()
        .iter()
        .map(|c| (c.at - t0).num_seconds())
        .collect();
    assert_eq!(starts, [0, 30, 90], "30s, then 60s: the backoff doubles");
    assert!(
        rig.waiting("daily").is_empty(),
        "no attempt after the last retry"
    );
}

#[test]
fn a_run_that_fails_for_good_is_not_retried() {
    let rig = Rig::new(utc(2026, 6, 1, 0, 0), false, 2);
    rig.sched.set_jobs(vec![rig.job(
        "daily",
        "30 2 * * *",
        "UTC",
        "retries = 3\nretry_backoff = \"30s\"",
    )]);
    rig.runner.broken.lock().unwrap().push(date("2026-05-31"));
    let t0 = utc(2026, 6, 1, 2, 30);
    rig.tick_at(t0);
    assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    for t in [30, 90, 500] {
        rig.tick_at(t0 + chrono::Duration::seconds(t));
        assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    }
    assert_eq!(rig.runner.calls().len(), 1, "a mistake is not retried");
    assert!(rig.waiting("daily").is_empty());
}

/// What the daemon's retry policy reads: transient causes only.
#[test]
fn transient_causes_are_told_from_mistakes() {
    use nightshift::run::is_transient;
    use nightshift::storage::{ErrorKind, StorageError};
    // The kind decides, whichever store: a file system error maps to one...
    let io = |k| {
        anyhow::Error::new(StorageError::io(
            "reading in/x.parquet",
            std::io::Error::from(k),
        ))
        .context("scoring in/x.parquet")
    };
    assert!(is_transient(&io(std::io::ErrorKind::TimedOut)));
    assert!(is_transient(&io(std::io::ErrorKind::ConnectionReset)));
    assert!(!is_transient(&io(std::io::ErrorKind::PermissionDenied)));
    assert!(!is_transient(&io(std::io::ErrorKind::NotFound)));
    // ...as an S3 request does.
    let s3 = |kind| {
        anyhow::Error::new(StorageError::new(
            kind,
            "SlowDown: Please reduce your request rate",
        ))
        .context("reading s3://b/k")
    };
    assert!(is_transient(&s3(ErrorKind::Transient)));
    for kind in [
        ErrorKind::NotFound,
        ErrorKind::NoSuchBucket,
        ErrorKind::AccessDenied,
        ErrorKind::Other,
    ] {
        assert!(!is_transient(&s3(kind)), "{kind:?}");
    }
    // Only the kind: a message that reads like a timeout is not one.
    assert!(!is_transient(&anyhow::anyhow!("operation timed out")));
    assert!(!is_transient(&anyhow::anyhow!("column 'x' is missing")));
    // A storage error an encoder saw as an io::Error (a sink's write) keeps its kind.
    let through_io = anyhow::Error::new(std::io::Error::other(StorageError::new(
        ErrorKind::Transient,
        "writing s3://b/k: connection reset",
    )))
    .context("writing the outputs");
    assert!(is_transient(&through_io));

    // Through a real run: a date without input is worth another try, a missing model is not.
    let env = Env::new();
    env.train_churn();
    env.job("churn", "in/dt={date}/", "");
    let cfg = nightshift::config::load(&[env.path("jobs")]).unwrap();
    let mut job = cfg.job("churn").unwrap().clone();
    job.input.0 = env.path("in/dt={date}/").to_string_lossy().into_owned();
    job.output.uri.0 = env.path("out/s/dt={date}/").to_string_lossy().into_owned();
    job.output.quarantine.0 = env.path("out/q/dt={date}/").to_string_lossy().into_owned();
    let local = |p: &str| Uri::Local(env.path(p));
    let settings = nightshift::config::Settings {
        registry: local("out/registry"),
        state: local("out/state"),
        reports: local("out/reports"),
        ..cfg.settings.clone()
    };
    let stores = Stores::new(settings.s3.clone());
    let opts = nightshift::run::RunOptions::default();
    let failed =
        nightshift::run::run_job(&job, date("2026-11-02"), &settings, &stores, &opts).unwrap_err();
    assert!(failed.transient, "no input yet: {:#}", failed.error);
    crate::util::copy_dir(
        Path::new(&format!("{}/features/dt=2026-11-02", crate::util::FIXTURES)),
        &env.path("in/dt=2026-11-02"),
    );
    job.model.pin = nightshift::config::Pin::Version(7);
    let failed =
        nightshift::run::run_job(&job, date("2026-11-02"), &settings, &stores, &opts).unwrap_err();
    assert!(!failed.transient, "missing model: {:#}", failed.error);
}

fn history(dir: &Path) -> RunHistory {
    let loc = Stores::default()
        .locate(&Uri::Local(dir.join("state")))
        .unwrap();
    RunHistory::new(loc)
}

/// `/jobs` keeps the records it showed: one is read again only when the listing shows it
/// changed (size, time or ETag), and a new one is read.
#[test]
fn cached_history_reads_only_records_the_listing_shows_changed() {
    use nightshift::record::RecordCache;
    let dir = tempfile::tempdir().unwrap();
    let h = history(dir.path());
    let day = date("2026-03-01");
    let first = h.write(&record("j", day, RunStatus::Succeeded)).unwrap();
    let cache = RecordCache::default();
    let seen = h.latest_cached("j", 10, &cache).unwrap();
    assert_eq!(seen.len(), 1);
    // The same bytes' length and time, other content: the cache answers, so nothing is read.
    let path = std::path::PathBuf::from(&first.key);
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![b' '; len]).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let again = h.latest_cached("j", 10, &cache).unwrap();
    assert_eq!(again.len(), 1, "served from the cache");
    assert_eq!(again[0].run_id, seen[0].run_id);
    assert!(
        h.latest("j", 10).unwrap().is_empty(),
        "read afresh, the blank record is skipped"
    );
    // A changed time: read again (and skipped, being blank); a new record: read.
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(mtime + std::time::Duration::from_secs(1))
        .unwrap();
    drop(f);
    std::thread::sleep(std::time::Duration::from_millis(2));
    h.write(&record("j", day, RunStatus::Failed)).unwrap();
    let now = h.latest_cached("j", 10, &cache).unwrap();
    let statuses: Vec<_> = now.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![RunStatus::Failed]);
    // A job no longer configured is forgotten; asking again reads it afresh.
    cache.keep_jobs(&[]);
    assert_eq!(h.latest_cached("j", 10, &cache).unwrap().len(), 1);
}

#[test]
fn catch_up_runs_exactly_the_missed_dates_up_to_the_limit() {
    use nightshift::timetable::missed_dates;
    let dir = tempfile::tempdir().unwrap();
    let h = history(dir.path());
    // Daily at 02:30 Berlin for yesterday; the last run was for 2026-03-01 (the tick of
    // 03-02). Down until 03-05 12:00 UTC: the ticks of 03-03, 03-04 and 03-05 were missed.
    let job = spec(dir.path(), "daily", "30 2 * * *", "Europe/Berlin", "");
    h.write(&record("daily", date("2026-02-28"), RunStatus::Succeeded))
        .unwrap();
    h.write(&record("daily", date("2026-03-01"), RunStatus::Failed))
        .unwrap();
    let records = h.list("daily").unwrap();
    let now = utc(2026, 3, 5, 12, 0);
    let missed = |limit| -> Vec<String> {
        missed_dates(&job, &records, now, limit)
            .iter()
            .map(|d| d.to_string())
            .collect()
    };
    assert_eq!(missed(1), ["2026-03-04"]);
    assert_eq!(missed(2), ["2026-03-03", "2026-03-04"]);
    assert_eq!(missed(10), ["2026-03-02", "2026-03-03", "2026-03-04"]);
    assert!(missed(0).is_empty(), "catchup = false");
    assert!(
        missed_dates(&job, &[], now, 10).is_empty(),
        "a job that never ran"
    );
    // An aborted run does not count as done: its date runs again.
    let mut with_aborted = records.clone();
    with_aborted.push(record("daily", date("2026-03-04"), RunStatus::Aborted));
    assert_eq!(
        missed_dates(&job, &with_aborted, now, 10).len(),
        3,
        "the aborted 03-04 is still missed"
    );
    // An older date whose last run was aborted (a trigger of 02-20 interrupted by a shutdown)
    // comes back too, though later dates are done; one rerun since then settles it.
    let mut old_aborted = records.clone();
    old_aborted.push(record("daily", date("2026-02-20"), RunStatus::Aborted));
    assert_eq!(
        missed_dates(&job, &old_aborted, now, 10)
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>(),
        ["2026-02-20", "2026-03-02", "2026-03-03", "2026-03-04"]
    );
    // Whatever the limit, catch-up off included: the aborted run was one the daemon began.
    let strs = |d: Vec<NaiveDate>| d.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    assert_eq!(
        strs(missed_dates(&job, &old_aborted, now, 1)),
        ["2026-02-20", "2026-03-04"]
    );
    assert_eq!(
        strs(missed_dates(&job, &old_aborted, now, 0)),
        ["2026-02-20"]
    );
    std::thread::sleep(std::time::Duration::from_millis(2));
    old_aborted.push(record("daily", date("2026-02-20"), RunStatus::Succeeded));
    assert_eq!(missed_dates(&job, &old_aborted, now, 10).len(), 3);

    // Through the daemon's start-up path: records -> missed dates -> runs, oldest first.
    let rig = Rig::new(now, false, 2);
    let limited = spec(
        dir.path(),
        "daily",
        "30 2 * * *",
        "Europe/Berlin",
        "catchup_limit = 2",
    );
    let unlimited = spec(
        dir.path(),
        "other",
        "30 2 * * *",
        "Europe/Berlin",
        "catchup = false",
    );
    h.write(&record("other", date("2026-02-01"), RunStatus::Succeeded))
        .unwrap();
    rig.sched.set_jobs(vec![limited.clone(), unlimited.clone()]);
    nightshift::daemon::catch_up(&rig.sched, &rig.metrics, &h, &[limited, unlimited]);
    assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    wait_until("catch-up runs", || rig.runner.calls().len() == 2);
    assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    assert_eq!(rig.fired("daily").len(), 2);
    assert_eq!(rig.runner.dates(), ["2026-03-03", "2026-03-04"]);
}

#[test]
fn reload_picks_up_edits_and_survives_a_broken_file() {
    let rig = Rig::new(utc(2026, 6, 1, 0, 0), false, 2);
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join("nightshift.toml"), "state = \"out/state/\"\n").unwrap();
    let write =
        |name: &str, body: &str| std::fs::write(jobs.join(format!("{name}.toml")), body).unwrap();
    write("a", &job_file("a", "30 2 * * *", "UTC", ""));
    let cfg = config::load(std::slice::from_ref(&jobs)).unwrap();
    let mut folder = JobsFolder::new(&jobs, &cfg);
    rig.sched.set_jobs(cfg.jobs);
    let reload = |folder: &mut JobsFolder| {
        nightshift::daemon::apply_reload(folder, &rig.sched, &rig.metrics)
    };
    let schedule = |job: &str| rig.sched.view(job).map(|v| v.schedule);
    assert!(!folder.changed());

    // An edited schedule takes effect, with its next tick anew.
    write("a", &job_file("a", "0 4 * * *", "UTC", ""));
    assert!(folder.changed());
    reload(&mut folder);
    assert_eq!(schedule("a").as_deref(), Some("0 4 * * *"));
    assert_eq!(
        rig.sched.view("a").unwrap().next_run,
        Some(utc(2026, 6, 1, 4, 0))
    );

    // A new file adds a job.
    write("b", &job_file("b", "15 3 * * *", "UTC", ""));
    reload(&mut folder);
    assert_eq!(rig.sched.job_names(), ["a", "b"]);

    // A broken file is reported and its job keeps its previous definition; the others apply.
    write("a", "name = \"a\"\nschedule = \"0 5 * * *\"\n[input\n");
    write("b", &job_file("b", "45 3 * * *", "UTC", ""));
    let r = folder.reload();
    let errors = r.errors.as_ref().expect("a.toml is broken");
    assert!(errors.to_string().contains("a.toml:3:"), "{errors}");
    rig.sched.set_jobs(r.jobs);
    assert_eq!(schedule("a").as_deref(), Some("0 4 * * *"));
    assert_eq!(schedule("b").as_deref(), Some("45 3 * * *"));

    // The job keeps firing on its previous definition.
    rig.tick_at(utc(2026, 6, 1, 4, 0));
    assert!(rig.sched.wait_idle(Duration::from_secs(10)));
    assert_eq!(rig.fired("a"), pairs(&[("06-01 04:00", "2026-05-31")]));

    // A deleted file removes its job; a fixed one applies.
    std::fs::remove_file(jobs.join("b.toml")).unwrap();
    write(
        "a",
        &job_file("a", "0 6 * * *", "UTC", "concurrency = \"queue\""),
    );
    reload(&mut folder);
    assert_eq!(rig.sched.job_names(), ["a"]);
    assert_eq!(schedule("a").as_deref(), Some("0 6 * * *"));
    // A folder emptied of job files (an unmounted volume?) is a mistake: the jobs stay.
    std::fs::remove_file(jobs.join("a.toml")).unwrap();
    let r = folder.reload();
    assert!(r.errors.is_some());
    rig.sched.set_jobs(r.jobs);
    assert_eq!(rig.sched.job_names(), ["a"]);
    let text = rig.metrics.encode();
    assert!(
        text.contains("nightshift_config_reloads_total{outcome=\"ok\"} 3"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// The real binary.

const TOKEN: &str = "s3cr3t-token-for-tests";

/// A running `nightshift daemon`, its address and its log (JSON lines).
/// A `nightshift daemon` process of a test, its log collected line by line.
pub(crate) struct Daemon {
    child: Child,
    addr: String,
    pub(crate) log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(env: &Env, extra: &[&str], token: Option<&str>) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nightshift"));
        cmd.args(["--log-format", "json", "daemon", "--listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(env.dir.path())
            .env_remove("NIGHTSHIFT_LOG")
            .env_remove(nightshift::daemon::TOKEN_VAR);
        if let Some(t) = token {
            cmd.env(nightshift::daemon::TOKEN_VAR, t);
        }
        Daemon::spawn(cmd)
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Starts a daemon command (with `--log-format json` and `--listen 127.0.0.1:0`), keeps
    /// everything it prints on stdout and stderr, and waits for the address it listens on.
    pub(crate) fn spawn(mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("nightshift daemon starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for (out, tx) in [
            (Box::new(stdout) as Box<dyn Read + Send>, None),
            (Box::new(stderr), Some(tx)),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let (Some(tx), Ok(v)) = (&tx, serde_json::from_str::<Value>(&line)) {
                        if let Some(a) = v["fields"]["addr"].as_str() {
                            let _ = tx.send(a.to_string());
                        }
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the daemon did not start:\n{}", log.lock().unwrap())
            });
        Daemon { child, addr, log }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        http(&self.addr, method, path, headers, body)
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &[], "")
    }

    pub(crate) fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub(crate) fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    pub(crate) fn predict(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, body) = self.request("POST", path, &[], body);
        let v = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {body}"));
        (status, v)
    }

    /// Waits until a log line contains `what`.
    pub(crate) fn wait_for_log(&self, what: &str) {
        let start = Instant::now();
        while !self.log().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no '{what}' in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and returns the exit code.
    pub(crate) fn terminate(mut self) -> i32 {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the daemon did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection; returns the status and the body.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_full(addr, method, path, headers, body);
    (status, body)
}

/// [`http`], with the response's head (status line and headers) too. A body is sent as JSON
/// unless `headers` name another Content-Type.
pub(crate) fn http_full(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    let typed = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if !body.is_empty() && !typed {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // A server refusing a large body may answer and close before reading all of it: keep
    // what it answered.
    let _ = s
        .write_all(req.as_bytes())
        .and_then(|_| s.write_all(body.as_bytes()));
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A schedule that does not fire while a test runs (midnight on January 1st).
const QUIET: &str = "0 0 1 1 *";

/// `Env::job`, scheduled at `QUIET`, so that only the test starts runs.
fn quiet_job(env: &Env, name: &str, input: &str, extra_run: &str) {
    let path = env.job(name, input, extra_run);
    let body = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, body.replace("30 2 * * *", QUIET)).unwrap();
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn fixture_input() -> String {
    format!("{FIXTURES}/features/dt={{date}}/")
}

/// Rows of a Parquet file as JSON objects with the model's features (and the id), skipping
/// rows JSON cannot carry (NaN).
fn rows_as_json(path: &Path, signature: &[Value], n: usize) -> Vec<(i64, Value)> {
    let batch = read_parquet(path);
    let ids = batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .clone();
    let mut out = Vec::new();
    'rows: for i in 0..batch.num_rows() {
        let mut row = serde_json::Map::new();
        row.insert("id".into(), json!(ids.value(i)));
        for f in signature {
            let name = f["name"].as_str().unwrap();
            let col = batch.column_by_name(name).unwrap();
            let v = if f["kind"] == "numeric" {
                let c = cast(col, &DataType::Float64).unwrap();
                let c = c.as_primitive::<Float64Type>();
                if c.is_null(i) {
                    Value::Null
                } else if !c.value(i).is_finite() {
                    continue 'rows;
                } else {
                    json!(c.value(i))
                }
            } else {
                let c = cast(col, &DataType::Utf8).unwrap();
                let c = c.as_string::<i32>();
                if c.is_null(i) {
                    Value::Null
                } else {
                    json!(c.value(i))
                }
            };
            row.insert(name.into(), v);
        }
        out.push((ids.value(i), Value::Object(row)));
        if out.len() == n {
            break;
        }
    }
    out
}

fn metric<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

#[test]
fn http_api_serves_jobs_metrics_triggers_and_predictions_equal_to_batch_scores() {
    let env = Env::new();
    env.train_churn();
    quiet_job(&env, "churn", &fixture_input(), "");
    let d = Daemon::start(&env, &[], Some(TOKEN));

    assert_eq!(d.get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(d.get_json("/readyz")["ready"], true);
    let jobs = d.get_json("/jobs");
    assert_eq!(jobs["jobs"][0]["name"], "churn");
    assert_eq!(jobs["jobs"][0]["schedule"], QUIET);
    assert_eq!(jobs["jobs"][0]["timezone"], "Europe/Berlin");
    assert!(jobs["jobs"][0]["next_run"].is_string());
    assert_eq!(d.get("/jobs/nope").0, 404);

    // Triggering needs the token.
    let body = r#"{"date": "2026-11-02"}"#;
    let run =
        |headers: &[(&str, &str)], body: &str| d.request("POST", "/jobs/churn/runs", headers, body);
    assert_eq!(run(&[], body).0, 401);
    assert_eq!(run(&[("Authorization", "Bearer wrong")], body).0, 401);
    let b = bearer();
    let auth = [("Authorization", b.as_str())];
    assert_eq!(run(&auth, r#"{"date": "02/11/2026"}"#).0, 400);
    assert_eq!(d.request("POST", "/jobs/nope/runs", &auth, body).0, 404);
    let big = format!(
        r#"{{"date": "2026-11-02", "pad": "{}"}}"#,
        "x".repeat(100_000)
    );
    assert_eq!(run(&auth, &big).0, 413, "bodies are limited");
    let (status, accepted) = run(&auth, body);
    assert_eq!(status, 202, "{accepted}");
    let accepted: Value = serde_json::from_str(&accepted).unwrap();
    assert_eq!(accepted["date"], "2026-11-02");

    // The run shows in /jobs/NAME once recorded.
    let start = Instant::now();
    let job = loop {
        let job = d.get_json("/jobs/churn");
        // Not running any more: the daemon has counted the run, too.
        let done = job["running"].as_array().is_some_and(|r| r.is_empty());
        if done && job["last_runs"][0]["status"] == "succeeded" {
            break job;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no run recorded: {job}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let last = &job["last_runs"][0];
    assert_eq!(last["date"], "2026-11-02");
    let rows_scored = last["rows_scored"].as_u64().unwrap();
    assert!(rows_scored > 0);

    // Metrics, read by a Prometheus text parser.
    let (status, text) = d.get("/metrics");
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let churn = [("job", "churn")];
    let runs = metric(
        &scrape,
        "nightshift_runs_total",
        &[("job", "churn"), ("status", "succeeded")],
    )
    .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(runs.value, prometheus_parse::Value::Counter(1.0));
    assert_eq!(
        metric(&scrape, "nightshift_rows_scored_total", &churn)
            .unwrap()
            .value,
        prometheus_parse::Value::Counter(rows_scored as f64)
    );
    assert_eq!(
        metric(&scrape, "nightshift_rows_quarantined_total", &churn)
            .unwrap()
            .value,
        prometheus_parse::Value::Counter(last["rows_quarantined"].as_u64().unwrap() as f64)
    );
    match &metric(&scrape, "nightshift_run_duration_seconds", &churn)
        .unwrap()
        .value
    {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(buckets.last().unwrap().count, 1.0)
        }
        other => panic!("not a histogram: {other:?}"),
    }
    let next_run = DateTime::parse_from_rfc3339(job["next_run"].as_str().unwrap()).unwrap();
    assert_eq!(
        metric(&scrape, "nightshift_next_run_timestamp_seconds", &churn)
            .unwrap()
            .value,
        prometheus_parse::Value::Gauge(next_run.timestamp() as f64)
    );
    assert!(matches!(
        metric(&scrape, "nightshift_last_success_timestamp_seconds", &churn).unwrap().value,
        prometheus_parse::Value::Gauge(t) if t > 0.0
    ));
    assert!(metric(&scrape, "nightshift_scheduler_lag_seconds", &[]).is_some());
    // 2026-11-02 is a fixture day without drift: every column's gauge is there, at 0.
    for column in ["monthly_charges", "plan", "score", "__dataset__"] {
        assert_eq!(
            metric(
                &scrape,
                "nightshift_drift_detected",
                &[("job", "churn"), ("column", column)]
            )
            .unwrap_or_else(|| panic!("no drift gauge for {column}:\n{text}"))
            .value,
            prometheus_parse::Value::Gauge(0.0)
        );
    }

    // Online scores equal the batch scores of the same rows.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(env.path("out/registry/churn/1/manifest.json")).unwrap(),
    )
    .unwrap();
    let signature = manifest["signature"].as_array().unwrap();
    let rows = rows_as_json(
        &Path::new(FIXTURES).join("features/dt=2026-11-02/part-00000.parquet"),
        signature,
        200,
    );
    let out = read_parquet(&env.path("out/scores/churn/dt=2026-11-02/part-00000.parquet"));
    let out_ids = out
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let out_scores = out
        .column_by_name("score")
        .unwrap()
        .as_primitive::<Float64Type>();
    let batch: HashMap<i64, f64> = (0..out.num_rows())
        .map(|i| (out_ids.value(i), out_scores.value(i)))
        .collect();
    let request = json!({ "rows": rows.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>() });
    let (status, answer) = d.request("POST", "/models/churn/1/predict", &[], &request.to_string());
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["model"], "churn@1");
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), rows.len());
    for ((id, _), p) in rows.iter().zip(predictions) {
        let online = p["score"]
            .as_f64()
            .unwrap_or_else(|| panic!("row {id}: {p}"));
        assert_eq!(
            online, batch[id],
            "row {id}: online and batch scores differ"
        );
        assert!(
            p["prediction"].is_boolean()
                || p["prediction"].is_number()
                || p["prediction"].is_string()
        );
    }

    // Input mistakes are 400s that say what is wrong.
    let mut missing = rows[0].1.clone();
    missing.as_object_mut().unwrap().remove("plan");
    let mut wrong = rows[0].1.clone();
    wrong["tenure_months"] = json!("three");
    let (status, err) = d.request(
        "POST",
        "/models/churn/1/predict",
        &[],
        &json!({ "rows": [missing, wrong] }).to_string(),
    );
    assert_eq!(status, 400, "{err}");
    assert!(err.contains("row 0: missing field 'plan'"), "{err}");
    assert!(
        err.contains("row 1: field 'tenure_months' must be a number or null, found a string"),
        "{err}"
    );
    let too_many = json!({ "rows": vec![json!({}); 10_001] }).to_string();
    let (status, err) = d.request("POST", "/models/churn/1/predict", &[], &too_many);
    assert_eq!(status, 400);
    assert!(err.contains("too many rows"), "{err}");
    assert_eq!(
        d.request("POST", "/models/churn/7/predict", &[], &request.to_string())
            .0,
        404
    );
    assert_eq!(
        d.request("POST", "/models/churn/x/predict", &[], &request.to_string())
            .0,
        400
    );
    assert_eq!(
        d.request("POST", "/models/churn/1/predict", &[], "{").0,
        400
    );

    // Edits of the jobs folder are picked up; a broken file does not stop the daemon.
    let path = env.path("jobs/churn.toml");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace(QUIET, "0 5 1 1 *");
    std::fs::write(&path, edited).unwrap();
    env.write(
        "jobs/broken.toml",
        "name = \"broken\"\nschedule = \"61 2 * * *\"\n",
    );
    let start = Instant::now();
    while d.get_json("/jobs/churn")["schedule"] != "0 5 1 1 *" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the edit was not picked up:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        d.log().contains("broken.toml"),
        "the broken file is reported"
    );
    assert_eq!(d.get_json("/jobs")["jobs"].as_array().unwrap().len(), 1);
    d.signal("HUP");
    let start = Instant::now();
    while !d.log().contains("\"signal\":\"SIGHUP\"") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "SIGHUP not handled:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let log = d.log();
    assert!(!log.contains(TOKEN), "the token must never be logged");
    assert_eq!(d.terminate(), 0);
}

#[test]
fn trigger_endpoint_is_off_without_a_token() {
    let env = Env::new();
    env.train_churn();
    quiet_job(&env, "churn", &fixture_input(), "");
    let d = Daemon::start(&env, &[], None);
    let (status, body) = d.request(
        "POST",
        "/jobs/churn/runs",
        &[("Authorization", "Bearer anything")],
        r#"{"date": "2026-11-01"}"#,
    );
    assert_eq!(status, 403);
    assert!(body.contains("NIGHTSHIFT_API_TOKEN"), "{body}");
    assert!(
        files_under(&env.path("out/state")).is_empty(),
        "nothing ran"
    );
    assert_eq!(d.terminate(), 0);
}

#[test]
fn daemon_refuses_to_start_listing_every_error() {
    let env = Env::new();
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad_jobs");
    for f in ["bad_cron.toml", "bad_timezone.toml"] {
        std::fs::copy(bad.join(f), env.path(&format!("jobs/{f}"))).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_nightshift"))
        .args(["daemon", "--listen", "127.0.0.1:0"])
        .current_dir(env.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the daemon started with invalid job files");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("jobs/bad_cron.toml:2:12: invalid cron expression"),
        "{stderr}"
    );
    assert!(stderr.contains("jobs/bad_timezone.toml"), "{stderr}");
}

#[test]
fn sigterm_during_a_run_aborts_it_leaving_no_partial_output_and_exits_0() {
    let env = Env::new();
    env.train_churn();
    env.write(
        "jobs/nightshift.toml",
        "registry = \"out/registry/\"\nstate = \"out/state/\"\nshutdown_grace = \"200ms\"\n",
    );
    // A slow input: many files, scored one row per batch on one thread.
    let source = Path::new(FIXTURES).join("features/dt=2026-11-01/part-00000.parquet");
    std::fs::create_dir_all(env.path("slow/dt=2026-11-01")).unwrap();
    for i in 0..200 {
        std::fs::copy(
            &source,
            env.path(&format!("slow/dt=2026-11-01/part-{i:05}.parquet")),
        )
        .unwrap();
    }
    quiet_job(&env, "slow", "slow/dt={date}/", "batch_rows = 1");
    let d = Daemon::start(&env, &["--threads", "1"], Some(TOKEN));
    let b = bearer();
    let (status, body) = d.request(
        "POST",
        "/jobs/slow/runs",
        &[("Authorization", b.as_str())],
        r#"{"date": "2026-11-01"}"#,
    );
    assert_eq!(status, 202, "{body}");
    let out = env.path("out/scores/slow/dt=2026-11-01");
    let start = Instant::now();
    while files_under(&out).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the run wrote nothing:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let log = {
        let log = d.log.clone();
        assert_eq!(d.terminate(), 0);
        let l = log.lock().unwrap().clone();
        l
    };
    let left = files_under(&out);
    assert!(
        left.is_empty(),
        "an aborted run leaves nothing behind (no data file, no temp file, no _SUCCESS): {left:?}"
    );
    let records = files_under(&env.path("out/state/runs/slow"));
    assert_eq!(records.len(), 1, "{records:?}");
    let record: Value = serde_json::from_slice(
        &std::fs::read(env.path(&format!("out/state/runs/slow/{}", records[0]))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["status"], "aborted", "{log}");
    assert!(
        log.contains("Runs still going after the grace period"),
        "{log}"
    );
}

/// SIGTERM to the daemon in the middle of a run, then a restart, again and again: the
/// aborted date comes back by itself (catch-up finds it, though the run was a trigger and the
/// schedule would never score it), and ends committed with every row, once.
#[test]
fn a_date_aborted_by_sigterm_comes_back_after_a_restart() {
    let (runs, _) = crate::util::fault_plan("SIGTERM to the daemon, then a restart", 3);
    let env = Env::new();
    env.train_churn();
    env.write(
        "jobs/nightshift.toml",
        "registry = \"out/registry/\"\nstate = \"out/state/\"\nshutdown_grace = \"100ms\"\nlease_ttl = \"2s\"\n",
    );
    let source = Path::new(FIXTURES).join("features/dt=2026-11-01/part-00000.parquet");
    std::fs::create_dir_all(env.path("slow/dt=2026-11-01")).unwrap();
    for i in 0..40 {
        std::fs::copy(
            &source,
            env.path(&format!("slow/dt=2026-11-01/part-{i:05}.parquet")),
        )
        .unwrap();
    }
    let out = env.path("out/scores/slow/dt=2026-11-01");
    let marker = out.join("_SUCCESS");
    for round in 0..runs {
        std::fs::remove_dir_all(env.path("out/scores")).ok();
        // Slow (a row a batch) for the run to abort; fast for the one that comes back.
        quiet_job(&env, "slow", "slow/dt={date}/", "batch_rows = 1");
        let d = Daemon::start(&env, &["--threads", "1"], Some(TOKEN));
        let b = bearer();
        let (status, body) = d.request(
            "POST",
            "/jobs/slow/runs",
            &[("Authorization", b.as_str())],
            r#"{"date": "2026-11-01"}"#,
        );
        assert_eq!(status, 202, "{body}");
        let start = Instant::now();
        while files_under(&out).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(30), "{}", d.log());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(d.terminate(), 0, "round {round}");
        assert!(
            !marker.exists(),
            "round {round}: an aborted run leaves no _SUCCESS"
        );

        quiet_job(&env, "slow", "slow/dt={date}/", "");
        let d = Daemon::start(&env, &["--threads", "1"], Some(TOKEN));
        let start = Instant::now();
        while !marker.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "round {round}: the aborted date did not come back:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(d.terminate(), 0);
        let m: Value = serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
        assert_eq!(m["files"].as_array().unwrap().len(), 40, "round {round}");
        assert_eq!(m["counts"]["rows_in"], 40 * 1000, "round {round}");
        let data: Vec<String> = files_under(&out)
            .into_iter()
            .filter(|f| f.ends_with(".parquet"))
            .collect();
        assert_eq!(
            data.len(),
            40,
            "round {round}: one output per input, no temp file"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Validation of the daemon's fields: what users read.

#[test]
fn daemon_fields_are_validated_with_the_others() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = crate::util::nightshift_in(
        repo,
        &["validate", "tests/data/bad_jobs/bad_daemon_fields.toml"],
    );
    assert_eq!(out.code, 1);
    insta::assert_snapshot!("bad_daemon_fields", out.stdout);

    let env = Env::new();
    env.write(
        "jobs/nightshift.toml",
        "max_concurrent_runs = 0\nshutdown_grace = \"soon\"\n",
    );
    quiet_job(&env, "churn", &fixture_input(), "");
    let out = env.run(&["validate", "jobs"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!("bad_daemon_settings", out.stdout);
}
