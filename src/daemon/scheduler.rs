//! The scheduler: which runs start when. It owns every job's next tick, its waiting runs and
//! its running ones, and applies the overlap policy, the global limit and retries.
//!
//! It has no timer of its own: something calls [`Scheduler::tick`] (the daemon, once a second;
//! tests, after moving a [`ManualClock`](super::clock::ManualClock)), and it asks its
//! [`Clock`] what time it is. Runs execute on their own threads through a [`Runner`] (the
//! real one calls [`run_job`](crate::run::run_job)); when one finishes, the scheduler records
//! the outcome, schedules a retry if one is due, and starts whatever can start next.
//!
//! Rules, in the words of the docs (docs/daemon.md):
//! - A tick scores the logical date of its own scheduled instant, however late it fires.
//! - `forbid`: a tick while the job has a run running or waiting is skipped and counted.
//! - `queue`: ticks wait and the job's runs go one at a time, in order; a tick whose date is
//!   already waiting is skipped.
//! - `allow`: runs overlap; a tick whose date is running or waiting is skipped, since two runs
//!   of one date would write the same outputs.
//! - At most `max_concurrent_runs` runs at once; the others wait, oldest first.
//! - A failed attempt is retried `retries` times, after `retry_backoff`, doubling each time;
//!   the job counts as busy meanwhile. Aborted runs are not retried.
//! - When the daemon was stalled past several ticks of a job (a suspended machine), only the
//!   latest fires; the others are counted as skipped ("missed").

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tracing::{error, info, info_span, warn};

use super::clock::Clock;
use super::metrics::Metrics;
use crate::config::{Concurrency, JobSpec};
use crate::record::{RunRecord, RunStatus};
use crate::run::RunFailed;
use crate::timetable::{logical_date, next_tick, previous_tick};

/// Executes one run; blocking. The daemon's runner calls `run_job`; tests use fakes.
pub trait Runner: Send + Sync + 'static {
    fn run(
        &self,
        job: &JobSpec,
        date: NaiveDate,
        cancel: Arc<AtomicBool>,
    ) -> Result<RunRecord, Box<RunFailed>>;
}

/// Why a run was started, as the API and the logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Cause {
    Schedule,
    Catchup,
    Manual,
    Retry,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "never".to_string(), |t| t.to_rfc3339())
}

/// A run waiting to start.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    pub date: NaiveDate,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// It starts no earlier than this (a retry's backoff).
    pub not_before: DateTime<Utc>,
    pub cause: Cause,
    #[serde(skip)]
    seq: u64,
}

/// A run in progress.
#[derive(Debug, Clone, Serialize)]
pub struct Active {
    pub date: NaiveDate,
    pub attempt: u32,
    pub cause: Cause,
    pub started_at: DateTime<Utc>,
    #[serde(skip)]
    id: u64,
}

/// What the API shows of a job.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub name: String,
    pub file: String,
    pub schedule: String,
    pub timezone: String,
    pub date: String,
    pub model: String,
    pub concurrency: Concurrency,
    pub catchup_limit: usize,
    pub retries: u32,
    pub retry_backoff_seconds: f64,
    pub next_run: Option<DateTime<Utc>>,
    pub running: Vec<Active>,
    pub waiting: Vec<Pending>,
}

/// Why a manual trigger was refused.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("no job named '{0}'")]
    UnknownJob(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// What a manual trigger did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accepted {
    Started,
    Waiting,
}

/// Why a tick started no run; the name is the `reason` label of the skipped-ticks metric.
#[derive(Debug, Clone, Copy, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
enum Skip {
    Overlap,
    Duplicate,
}

impl Skip {
    fn label(self) -> &'static str {
        self.into()
    }

    fn message(self) -> &'static str {
        match self {
            Skip::Overlap => {
                "the job's previous run is still running or waiting (concurrency = \"forbid\")"
            }
            Skip::Duplicate => "a run of the same date is already running or waiting",
        }
    }
}

struct JobState {
    spec: Arc<JobSpec>,
    next_tick: Option<DateTime<Utc>>,
    waiting: VecDeque<Pending>,
    running: Vec<Active>,
}

impl JobState {
    fn has_date(&self, date: NaiveDate) -> bool {
        self.running.iter().any(|a| a.date == date) || self.waiting.iter().any(|p| p.date == date)
    }

    /// Whether the overlap policy lets a new run of `date` in.
    fn admit(&self, date: NaiveDate) -> Result<(), Skip> {
        match self.spec.scheduling.concurrency {
            Concurrency::Forbid if !self.running.is_empty() || !self.waiting.is_empty() => {
                Err(Skip::Overlap)
            }
            Concurrency::Forbid => Ok(()),
            Concurrency::Queue if self.waiting.iter().any(|p| p.date == date) => {
                Err(Skip::Duplicate)
            }
            Concurrency::Queue => Ok(()),
            Concurrency::Allow if self.has_date(date) => Err(Skip::Duplicate),
            Concurrency::Allow => Ok(()),
        }
    }
}

struct State {
    jobs: BTreeMap<String, JobState>,
    /// Runs in progress: their count and cancel flags, by run id.
    running: usize,
    cancels: HashMap<u64, Arc<AtomicBool>>,
    stopping: bool,
}

struct Inner {
    clock: Arc<dyn Clock>,
    runner: Arc<dyn Runner>,
    metrics: Arc<Metrics>,
    max_concurrent: usize,
    seq: AtomicU64,
    state: Mutex<State>,
    changed: Condvar,
}

/// The daemon's scheduler; clones share it.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

/// How many overdue ticks of one job `tick` walks through before it jumps to the latest.
const MAX_OVERDUE_WALK: usize = 10_000;

impl Scheduler {
    pub fn new(
        clock: Arc<dyn Clock>,
        runner: Arc<dyn Runner>,
        metrics: Arc<Metrics>,
        max_concurrent_runs: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                runner,
                metrics,
                max_concurrent: max_concurrent_runs.max(1),
                seq: AtomicU64::new(0),
                state: Mutex::new(State {
                    jobs: BTreeMap::new(),
                    running: 0,
                    cancels: HashMap::new(),
                    stopping: false,
                }),
                changed: Condvar::new(),
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Sets the jobs: new ones start with their next tick after now, removed ones stop firing
    /// (a run of theirs in progress finishes), and a job whose schedule or time zone changed
    /// gets its next tick anew. Other changes apply from the job's next run.
    pub fn set_jobs(&self, specs: Vec<JobSpec>) {
        let now = self.now();
        let inner = &self.inner;
        let mut st = inner.lock();
        let names: HashSet<String> = specs.iter().map(|s| s.name.clone()).collect();
        let removed: Vec<String> = st
            .jobs
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in removed {
            let js = st.jobs.remove(&name).expect("listed above");
            inner.metrics.job_removed(&name);
            info!(
                job = %name,
                running = js.running.len(),
                dropped_waiting = js.waiting.len(),
                "Job removed; it fires no more."
            );
        }
        for spec in specs {
            let name = spec.name.clone();
            match st.jobs.get_mut(&name) {
                Some(js) => {
                    let retimed = js.spec.schedule.expression != spec.schedule.expression
                        || js.spec.timezone != spec.timezone;
                    js.spec = Arc::new(spec);
                    if retimed {
                        js.next_tick = next_tick(&js.spec, now);
                        info!(
                            job = %name,
                            schedule = %js.spec.schedule.expression,
                            timezone = %js.spec.timezone,
                            next_run = %when(js.next_tick),
                            "Job schedule changed."
                        );
                    }
                    inner.metrics.next_run(&name, js.next_tick);
                }
                None => {
                    let next = next_tick(&spec, now);
                    if next.is_none() {
                        warn!(job = %name, schedule = %spec.schedule.expression, "The schedule matches no future instant; the job never fires.");
                    }
                    info!(
                        job = %name,
                        schedule = %spec.schedule.expression,
                        timezone = %spec.timezone,
                        next_run = %when(next),
                        "Job scheduled."
                    );
                    inner.metrics.next_run(&name, next);
                    st.jobs.insert(
                        name,
                        JobState {
                            spec: Arc::new(spec),
                            next_tick: next,
                            waiting: VecDeque::new(),
                            running: Vec::new(),
                        },
                    );
                }
            }
        }
        inner.dispatch(&mut st);
    }

    /// The earliest instant something is due: a job's next tick or a waiting retry.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        let st = self.inner.lock();
        st.jobs
            .values()
            .flat_map(|js| {
                js.next_tick
                    .into_iter()
                    .chain(js.waiting.iter().map(|p| p.not_before))
            })
            .min()
    }

    /// Fires the ticks that are due and starts what can start.
    pub fn tick(&self) {
        let inner = &self.inner;
        let now = self.now();
        let mut st = inner.lock();
        if st.stopping {
            return;
        }
        for (name, js) in st.jobs.iter_mut() {
            let Some(first) = js.next_tick.filter(|t| *t <= now) else {
                continue;
            };
            // The latest tick at or before now; those before it are missed.
            let mut due = first;
            let mut missed = 0usize;
            let mut next = next_tick(&js.spec, first);
            while let Some(t) = next.filter(|t| *t <= now) {
                missed += 1;
                due = t;
                if missed >= MAX_OVERDUE_WALK {
                    due = previous_tick(&js.spec, now + chrono::Duration::seconds(1)).unwrap_or(t);
                    next = next_tick(&js.spec, due);
                    break;
                }
                next = next_tick(&js.spec, t);
            }
            js.next_tick = next;
            inner.metrics.next_run(name, next);
            if missed > 0 {
                for _ in 0..missed {
                    inner.metrics.tick_skipped(name, "missed");
                }
                warn!(job = %name, missed, fired = %due, "Several ticks were due at once (the daemon was stalled); only the latest fires.");
            }
            let date = logical_date(&js.spec, due);
            let lag = (now - due).num_milliseconds() as f64 / 1000.0;
            inner.metrics.tick_fired(lag);
            match js.admit(date) {
                Ok(()) => {
                    info!(job = %name, date = %date, tick = %due, lag_seconds = lag, "Tick fired.");
                    js.waiting.push_back(Pending {
                        date,
                        attempt: 1,
                        not_before: due,
                        cause: Cause::Schedule,
                        seq: inner.seq.fetch_add(1, Ordering::SeqCst),
                    });
                }
                Err(skip) => {
                    inner.metrics.tick_skipped(name, skip.label());
                    info!(job = %name, date = %date, tick = %due, reason = skip.label(), "Tick skipped: {}.", skip.message());
                }
            }
        }
        inner.dispatch(&mut st);
    }

    /// Starts a run of `job` for `date` now (or when the limits allow), under the job's
    /// overlap policy.
    pub fn trigger(&self, job: &str, date: NaiveDate) -> Result<Accepted, TriggerError> {
        let inner = &self.inner;
        let now = self.now();
        let mut st = inner.lock();
        if st.stopping {
            return Err(TriggerError::ShuttingDown);
        }
        let js = st
            .jobs
            .get_mut(job)
            .ok_or_else(|| TriggerError::UnknownJob(job.to_string()))?;
        js.admit(date)
            .map_err(|s| TriggerError::Conflict(format!("not started: {}", s.message())))?;
        let seq = inner.seq.fetch_add(1, Ordering::SeqCst);
        js.waiting.push_back(Pending {
            date,
            attempt: 1,
            not_before: now,
            cause: Cause::Manual,
            seq,
        });
        info!(job = %job, date = %date, "Run requested over the API.");
        inner.dispatch(&mut st);
        let still_waiting = st
            .jobs
            .get(job)
            .is_some_and(|js| js.waiting.iter().any(|p| p.seq == seq));
        Ok(if still_waiting {
            Accepted::Waiting
        } else {
            Accepted::Started
        })
    }

    /// Queues the dates a job missed while the daemon was down, oldest first; they run one
    /// after another (or side by side, for `allow`), whatever ticks do meanwhile.
    pub fn catch_up(&self, job: &str, dates: &[NaiveDate]) {
        if dates.is_empty() {
            return;
        }
        let inner = &self.inner;
        let now = self.now();
        let mut st = inner.lock();
        let Some(js) = st.jobs.get_mut(job) else {
            return;
        };
        let mut queued = Vec::new();
        for &date in dates {
            if js.has_date(date) {
                continue;
            }
            js.waiting.push_back(Pending {
                date,
                attempt: 1,
                not_before: now,
                cause: Cause::Catchup,
                seq: inner.seq.fetch_add(1, Ordering::SeqCst),
            });
            queued.push(date.to_string());
        }
        info!(job = %job, dates = %queued.join(","), "Catching up dates missed while the daemon was down.");
        inner.dispatch(&mut st);
    }

    /// Stops starting runs: no more ticks, waiting runs are dropped, triggers are refused.
    /// Running runs go on.
    pub fn stop(&self) {
        let mut st = self.inner.lock();
        st.stopping = true;
        for (name, js) in st.jobs.iter_mut() {
            if !js.waiting.is_empty() {
                info!(job = %name, dropped = js.waiting.len(), "Waiting runs dropped: the daemon is stopping.");
            }
            js.waiting.clear();
        }
    }

    /// Asks every running run to abort.
    pub fn abort_running(&self) {
        let st = self.inner.lock();
        for (name, js) in &st.jobs {
            for a in &js.running {
                warn!(job = %name, date = %a.date, "Aborting the run.");
            }
        }
        // Includes runs of jobs a reload removed, which are not in `jobs` any more.
        for c in st.cancels.values() {
            c.store(true, Ordering::SeqCst);
        }
    }

    /// Runs in progress.
    pub fn running(&self) -> usize {
        self.inner.lock().running
    }

    /// Waits until no run is in progress; `false` if `timeout` passed first.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let st = self.inner.lock();
        let (st, _) = self
            .inner
            .changed
            .wait_timeout_while(st, timeout, |st| st.running > 0)
            .expect("scheduler lock");
        st.running == 0
    }

    pub fn job_names(&self) -> Vec<String> {
        self.inner.lock().jobs.keys().cloned().collect()
    }

    pub fn spec(&self, job: &str) -> Option<Arc<JobSpec>> {
        self.inner.lock().jobs.get(job).map(|js| js.spec.clone())
    }

    pub fn specs(&self) -> Vec<Arc<JobSpec>> {
        let st = self.inner.lock();
        st.jobs.values().map(|js| js.spec.clone()).collect()
    }

    pub fn views(&self) -> Vec<JobView> {
        let st = self.inner.lock();
        st.jobs.values().map(view).collect()
    }

    pub fn view(&self, job: &str) -> Option<JobView> {
        self.inner.lock().jobs.get(job).map(view)
    }
}

fn date_rule(offset: i64) -> String {
    match offset {
        0 => "today".into(),
        -1 => "yesterday".into(),
        n => format!("{n}d"),
    }
}

fn view(js: &JobState) -> JobView {
    let s = &js.spec;
    JobView {
        name: s.name.clone(),
        file: s.path.display().to_string(),
        schedule: s.schedule.expression.clone(),
        timezone: s.timezone.name().to_string(),
        date: date_rule(s.date.offset_days),
        model: s.model.to_string(),
        concurrency: s.scheduling.concurrency,
        catchup_limit: s.scheduling.catchup_limit,
        retries: s.scheduling.retries,
        retry_backoff_seconds: s.scheduling.retry_backoff.as_secs_f64(),
        next_run: js.next_tick,
        running: js.running.clone(),
        waiting: js.waiting.iter().cloned().collect(),
    }
}

/// How a run thread ended.
enum Outcome {
    Finished(Box<Result<RunRecord, Box<RunFailed>>>),
    Panicked(String),
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("scheduler lock")
    }

    /// Starts waiting runs, oldest first, while the global limit allows.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        if st.stopping {
            return;
        }
        let now = self.clock.now();
        while st.running < self.max_concurrent {
            let mut best: Option<(String, usize, u64)> = None;
            for (name, js) in &st.jobs {
                let serial = js.spec.scheduling.concurrency != Concurrency::Allow;
                for (i, p) in js.waiting.iter().enumerate() {
                    if serial && (i > 0 || !js.running.is_empty()) {
                        break;
                    }
                    if p.not_before > now || js.running.iter().any(|a| a.date == p.date) {
                        if serial {
                            break;
                        }
                        continue;
                    }
                    if best.as_ref().is_none_or(|b| p.seq < b.2) {
                        best = Some((name.clone(), i, p.seq));
                    }
                    break;
                }
            }
            let Some((name, i, _)) = best else {
                break;
            };
            let js = st.jobs.get_mut(&name).expect("found above");
            let p = js.waiting.remove(i).expect("found above");
            self.start(st, &name, p);
        }
    }

    fn start(self: &Arc<Self>, st: &mut State, name: &str, p: Pending) {
        let js = st.jobs.get_mut(name).expect("caller checked");
        let id = self.seq.fetch_add(1, Ordering::SeqCst);
        let cancel = Arc::new(AtomicBool::new(false));
        js.running.push(Active {
            date: p.date,
            attempt: p.attempt,
            cause: p.cause,
            started_at: self.clock.now(),
            id,
        });
        let spec = js.spec.clone();
        st.running += 1;
        st.cancels.insert(id, cancel.clone());
        self.metrics.runs_active(st.running);
        info!(job = %name, date = %p.date, attempt = p.attempt, cause = p.cause.as_str(), "Run starting.");
        let inner = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("run-{name}"))
            .spawn(move || {
                let span =
                    info_span!("daemon_run", job = %spec.name, date = %p.date, attempt = p.attempt);
                let _entered = span.enter();
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    inner.runner.run(&spec, p.date, cancel)
                }));
                let outcome = match outcome {
                    Ok(r) => Outcome::Finished(Box::new(r)),
                    Err(panic) => Outcome::Panicked(
                        panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default(),
                    ),
                };
                if inner.finished(&spec, id, p, outcome) {
                    release_free_memory();
                }
            });
        if let Err(e) = spawned {
            error!(job = %name, error = %e, "Could not start a thread for the run.");
            let js = st.jobs.get_mut(name).expect("caller checked");
            js.running.retain(|a| a.id != id);
            st.running -= 1;
            st.cancels.remove(&id);
            self.metrics.runs_active(st.running);
        }
    }

    /// Books a run's end: metrics, retries, the next runs. Whether no run is left running.
    fn finished(self: &Arc<Self>, spec: &JobSpec, id: u64, p: Pending, outcome: Outcome) -> bool {
        let now = self.clock.now();
        let mut st = self.lock();
        st.running -= 1;
        st.cancels.remove(&id);
        self.metrics.runs_active(st.running);
        let stopping = st.stopping;
        let name = spec.name.as_str();
        // A date held by a killed runner of this host (a daemon restarted within the lease
        // ttl) is tried again once that lease has expired, as the same attempt.
        let mut after_dead_holder = None;
        let failed_attempt = match outcome {
            Outcome::Finished(r) if r.is_ok() => {
                let record = r.expect("checked");
                self.metrics.run_finished(&record);
                info!(job = %name, date = %p.date, run_id = %record.run_id, attempt = p.attempt, seconds = record.seconds, "Run succeeded.");
                false
            }
            Outcome::Finished(r) => {
                let failed = r.expect_err("checked");
                let held = failed
                    .error
                    .chain()
                    .find_map(|c| c.downcast_ref::<crate::lease::LeaseHeld>());
                if let Some(held) = held {
                    // Another process (a `run`, a backfill, a second replica) is on this date:
                    // its run is the one that counts, so this one is skipped, not retried.
                    if held.holder_is_gone() {
                        info!(job = %name, date = %p.date, holder_pid = held.holder.pid, holder_run_id = %held.holder.run_id, retry_at = %held.expires_at, "The date is held by a runner of this host that is gone; trying again when its lease expires.");
                        after_dead_holder = Some(held.expires_at + chrono::Duration::seconds(1));
                    } else {
                        warn!(job = %name, date = %p.date, holder_host = %held.holder.host, holder_pid = held.holder.pid, holder_run_id = %held.holder.run_id, since = %held.acquired_at, "Run skipped: another runner holds the date.");
                        self.metrics.tick_skipped(name, "lease_held");
                    }
                } else {
                    self.metrics.run_finished(&failed.record);
                }
                let r = &failed.record;
                if held.is_some() {
                    false
                } else if r.status == RunStatus::Aborted {
                    warn!(job = %name, date = %p.date, run_id = %r.run_id, "Run aborted.");
                    false
                } else if failed.transient {
                    warn!(job = %name, date = %p.date, run_id = %r.run_id, attempt = p.attempt, error = %format!("{:#}", failed.error), "Run attempt failed.");
                    true
                } else {
                    // Retrying a mistake fails the same way `retries` more times: say it once.
                    warn!(job = %name, date = %p.date, run_id = %r.run_id, attempt = p.attempt, error = %format!("{:#}", failed.error), "Run failed; not retried (the cause is not transient).");
                    false
                }
            }
            Outcome::Panicked(msg) => {
                error!(job = %name, date = %p.date, attempt = p.attempt, panic = %msg, "Run panicked.");
                true
            }
        };
        let retries = spec.scheduling.retries;
        if let Some(js) = st.jobs.get_mut(name) {
            js.running.retain(|a| a.id != id);
            if let Some(not_before) = after_dead_holder.filter(|_| !stopping) {
                js.waiting.push_front(Pending {
                    date: p.date,
                    attempt: p.attempt,
                    not_before,
                    cause: Cause::Retry,
                    seq: self.seq.fetch_add(1, Ordering::SeqCst),
                });
            } else if failed_attempt && !stopping && p.attempt <= retries {
                let wait = js.spec.scheduling.backoff_before(p.attempt + 1);
                let not_before =
                    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                info!(job = %name, date = %p.date, next_attempt = p.attempt + 1, retry_at = %not_before, "Retry scheduled.");
                js.waiting.push_front(Pending {
                    date: p.date,
                    attempt: p.attempt + 1,
                    not_before,
                    cause: Cause::Retry,
                    seq: self.seq.fetch_add(1, Ordering::SeqCst),
                });
            }
        }
        self.dispatch(&mut st);
        self.changed.notify_all();
        st.running == 0
    }
}

/// Gives the memory that the runs freed back to the system, once none is running.
///
/// A burst of runs (a hundred jobs on one schedule) takes hundreds of MiB at its peak and frees
/// nearly all of it, but glibc's allocator keeps freed pages in its arenas, and with fragments
/// of longer-lived allocations among them the daemon's RSS crept up by a few MiB a minute in
/// `make soak` although heaptrack found under 6 MiB live (docs/reliability.md).
/// `malloc_trim` returns every free page of every arena; it takes milliseconds, and runs only
/// when the daemon has gone idle.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists under its locks; it takes
    // no pointer and invalidates no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
