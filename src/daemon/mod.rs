//! `nightshift daemon`: what users leave running. It fires every job at its ticks, catches up
//! what it missed while down, follows edits of the jobs folder, answers over HTTP, and stops
//! cleanly on SIGTERM or SIGINT.
//!
//! - [`timetable`]: when a job fires and which dates it missed (pure functions).
//! - [`scheduler`]: which runs start when: overlap policy, global limit, retries.
//! - [`clock`]: the injected notion of now.
//! - [`reload`]: following the jobs folder.
//! - [`http`], [`predict`], [`metrics`]: the HTTP API.
//!
//! The timer is two tokio tasks: one calls [`Scheduler::tick`] when a tick is due (at least
//! once a second), the other looks at the jobs folder. The cron instants themselves come from [`timetable`], with the
//! job's own parsed schedule and IANA time zone (croner), and from an injected clock that
//! tests move. docs/daemon.md says why tokio-cron-scheduler no longer does this.

pub mod clock;
pub mod http;
pub mod metrics;
pub mod predict;
pub mod reload;
pub mod scheduler;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::{Config, JobSpec, Settings};
use crate::performance;
use crate::record::{RunHistory, RunRecord, RunStatus};
use crate::run::{run_job, RunFailed, RunOptions};
use crate::storage::Stores;
use crate::timetable;
use clock::SystemClock;
use metrics::Metrics;
use reload::JobsFolder;
use scheduler::{Runner, Scheduler};

/// The environment variable holding the bearer token for `POST /jobs/NAME/runs`.
pub const TOKEN_VAR: &str = "NIGHTSHIFT_API_TOKEN";

/// How long aborted runs get to stop before the daemon gives up on them.
const ABORT_WAIT: Duration = Duration::from_secs(60);

/// How the daemon was started.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub jobs: PathBuf,
    pub listen: SocketAddr,
    /// Worker threads per run (default: each job's `run.threads`).
    pub threads: Option<usize>,
    /// Rows per batch (default: each job's `run.batch_rows`).
    pub batch_rows: Option<usize>,
}

/// Runs jobs with [`run_job`], as `nightshift run` does.
pub struct JobRunner {
    pub settings: Settings,
    pub stores: Stores,
    pub threads: Option<usize>,
    pub batch_rows: Option<usize>,
}

impl Runner for JobRunner {
    fn run(
        &self,
        job: &JobSpec,
        date: NaiveDate,
        cancel: Arc<AtomicBool>,
    ) -> Result<RunRecord, Box<RunFailed>> {
        let opts = RunOptions {
            threads: self.threads,
            batch_rows: self.batch_rows,
            cancel: Some(cancel),
            ..Default::default()
        };
        run_job(job, date, &self.settings, &self.stores, &opts)
    }
}

/// The web pages' view of the daemon: its jobs, their runs and their triggers, from the
/// scheduler; dates other runners hold (a backfill, a shard in another pod) from the leases.
struct SchedulerActivity(Scheduler, Arc<Settings>, Stores);

impl crate::ui::Activity for SchedulerActivity {
    fn jobs(&self) -> Vec<Arc<JobSpec>> {
        self.0.specs()
    }

    fn active(&self, job: &str) -> std::collections::BTreeSet<NaiveDate> {
        let mut dates: std::collections::BTreeSet<NaiveDate> = self
            .0
            .view(job)
            .map(|v| {
                let running = v.running.iter().map(|a| a.date);
                running.chain(v.waiting.iter().map(|p| p.date)).collect()
            })
            .unwrap_or_default();
        match crate::ui::data::leased_dates(&self.1, &self.2, job, chrono::Utc::now()) {
            Ok(leased) => dates.extend(leased),
            Err(e) => warn!(job = %job, error = %format!("{e:#}"), "Cannot list the job's leases."),
        }
        dates
    }

    fn next_run(&self, job: &JobSpec) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.view(&job.name).and_then(|v| v.next_run)
    }

    fn trigger(
        &self,
        job: &str,
        date: NaiveDate,
    ) -> Option<Result<String, (axum::http::StatusCode, String)>> {
        Some(http::trigger_outcome(self.0.trigger(job, date), job, date))
    }
}

/// Runs the daemon until SIGTERM or SIGINT; `cfg` was loaded (and validated) from
/// `opts.jobs`.
pub fn run(cfg: Config, opts: DaemonOptions) -> Result<()> {
    // Made out here, and dropped after the runtime: the S3 client owns a runtime of its own,
    // which must not be dropped from inside this one (tokio panics), as it would be when the
    // runtime's tasks, which hold clones, are dropped at shutdown.
    let stores = Stores::new(cfg.settings.s3.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nightshift-daemon")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(serve(cfg, opts, stores.clone()));
    drop(rt);
    drop(stores);
    result
}

/// The daemon's life: start (signals, listener, scheduler, catch-up), tick and watch until
/// SIGTERM or SIGINT (SIGHUP reloads), then shut down within the grace period.
async fn serve(cfg: Config, opts: DaemonOptions, stores: Stores) -> Result<()> {
    // First, so that a signal during start-up is handled rather than fatal.
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr()?;

    let settings = Arc::new(cfg.settings.clone());
    let metrics = Arc::new(Metrics::new());
    let runner = Arc::new(JobRunner {
        settings: (*settings).clone(),
        stores: stores.clone(),
        threads: opts.threads,
        batch_rows: opts.batch_rows,
    });
    let scheduler = Scheduler::new(
        Arc::new(SystemClock),
        runner,
        metrics.clone(),
        settings.daemon.max_concurrent_runs,
    );
    scheduler.set_jobs(cfg.jobs.clone());
    start_catch_up(&scheduler, &metrics, &stores, &settings, &cfg.jobs).await?;

    let folder = Arc::new(Mutex::new(JobsFolder::new(&opts.jobs, &cfg)));
    let heartbeat = spawn_heartbeat(scheduler.clone());
    let watch = spawn_folder_watch(folder.clone(), scheduler.clone(), metrics.clone());
    let stop_evaluating = Arc::new(AtomicBool::new(false));
    let evaluator = spawn_evaluator(
        scheduler.clone(),
        settings.clone(),
        stores.clone(),
        metrics.clone(),
        stop_evaluating.clone(),
    );
    // The first tick now rather than in a second: a tick due at start fires at once.
    scheduler.tick();

    let api = http::Api {
        scheduler: scheduler.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
        stores: stores.clone(),
        models: Arc::new(predict::ModelCache::default()),
        token_sha256: http::Api::token_from_env(TOKEN_VAR),
        records: Default::default(),
    };
    let triggers = if api.token_sha256.is_some() {
        "on"
    } else {
        "off"
    };
    let pages = crate::ui::Ui {
        activity: Arc::new(SchedulerActivity(
            scheduler.clone(),
            settings.clone(),
            stores.clone(),
        )),
        settings: settings.clone(),
        stores: stores.clone(),
        caches: Default::default(),
        token_sha256: api.token_sha256,
        loopback: opts.listen.ip().is_loopback(),
    };
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let loopback = pages.loopback;
        let routes = http::router(api).merge(crate::ui::router(pages));
        axum::serve(listener, crate::ui::local_names_only(routes, loopback))
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });
    info!(
        addr = %addr,
        jobs = scheduler.job_names().len(),
        max_concurrent_runs = settings.daemon.max_concurrent_runs,
        triggers,
        "Daemon started; HTTP API listening."
    );

    let signal_name = loop {
        tokio::select! {
            _ = sighup.recv() => {
                info!(signal = "SIGHUP", "Reloading job files.");
                let (f, s, m) = (folder.clone(), scheduler.clone(), metrics.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    apply_reload(&mut f.lock().expect("folder lock"), &s, &m);
                }).await;
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };

    let grace = settings.daemon.shutdown_grace;
    info!(
        signal = signal_name,
        running = scheduler.running(),
        grace_seconds = grace.as_secs_f64(),
        "Shutting down: no new runs; running ones get the grace period to finish."
    );
    scheduler.stop();
    heartbeat.abort();
    watch.abort();
    stop_evaluating.store(true, std::sync::atomic::Ordering::SeqCst);
    evaluator.abort();
    let result = stop_runs(&scheduler, grace).await;
    let _ = stop_http.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "The HTTP server stopped with an error."),
        Err(e) => warn!(error = %e, "The HTTP server task failed."),
    }
    if result.is_ok() {
        info!("Daemon stopped.");
    }
    result
}

/// Reads each job's run records and queues the dates it missed (see [`catch_up`]), before the
/// first tick.
async fn start_catch_up(
    scheduler: &Scheduler,
    metrics: &Arc<Metrics>,
    stores: &Stores,
    settings: &Settings,
    jobs: &[JobSpec],
) -> Result<()> {
    let (s, st, m, state) = (
        scheduler.clone(),
        stores.clone(),
        metrics.clone(),
        settings.state.clone(),
    );
    let jobs = jobs.to_vec();
    tokio::task::spawn_blocking(move || match st.locate(&state) {
        Ok(loc) => catch_up(&s, &m, &RunHistory::new(loc), &jobs),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "Cannot read run records; nothing is caught up.")
        }
    })
    .await?;
    Ok(())
}

/// A plain one-second interval: a late tick is delayed, never fired twice in a burst.
fn every_second() -> tokio::time::Interval {
    let mut t = tokio::time::interval(Duration::from_secs(1));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Ticks the scheduler when its next tick or retry is due, and at least every second (it
/// computes cron instants itself, with croner, in each job's time zone).
fn spawn_heartbeat(scheduler: Scheduler) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // At the next due instant (a few milliseconds after it), not on the next whole
            // second after it: a tick fires when it is due, not up to a second late. At least
            // once a second all the same, for runs waiting on a free slot.
            // (A panic under the scheduler's lock poisons it: the tick below logs that.)
            let due =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scheduler.next_due()))
                    .ok()
                    .flatten();
            let wait = due
                .and_then(|t| (t - scheduler.now()).to_std().ok())
                .map_or(Duration::from_secs(1), |d| d + Duration::from_millis(2))
                .min(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
            // A panic in one tick must not stop every later one (the loop is one task for
            // the daemon's life): it is logged, and the next second ticks again.
            let tick = std::panic::AssertUnwindSafe(|| scheduler.tick());
            if std::panic::catch_unwind(tick).is_err() {
                error!("A scheduler tick panicked; ticking again in a second.");
            }
        }
    })
}

/// Looks at the jobs folder every second and reloads it when a file changed.
fn spawn_folder_watch(
    folder: Arc<Mutex<JobsFolder>>,
    scheduler: Scheduler,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let mut timer = every_second();
    tokio::spawn(async move {
        loop {
            timer.tick().await;
            let (f, s, m) = (folder.clone(), scheduler.clone(), metrics.clone());
            let _ = tokio::task::spawn_blocking(move || {
                let mut folder = f.lock().expect("folder lock");
                if folder.changed() {
                    info!("The jobs folder changed; reloading.");
                    apply_reload(&mut folder, &s, &m);
                }
            })
            .await;
        }
    })
}

/// Every `evaluate_every` (the first pass at start), evaluates the dates that are due (see
/// [`Evaluator::pass`]), for the jobs as currently loaded. `stop` ends a pass between dates.
fn spawn_evaluator(
    scheduler: Scheduler,
    settings: Arc<Settings>,
    stores: Stores,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let mut timer = tokio::time::interval(settings.daemon.evaluate_every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let evaluator = Arc::new(Mutex::new(Evaluator::new(stop)));
    tokio::spawn(async move {
        loop {
            timer.tick().await;
            let jobs: Vec<JobSpec> = scheduler
                .job_names()
                .iter()
                .filter_map(|n| scheduler.spec(n))
                .filter(|j| j.labels.is_some())
                .map(|j| (*j).clone())
                .collect();
            if jobs.is_empty() {
                continue;
            }
            let (settings, stores, metrics, evaluator) = (
                settings.clone(),
                stores.clone(),
                metrics.clone(),
                evaluator.clone(),
            );
            let pass = tokio::task::spawn_blocking(move || {
                let mut evaluator = evaluator.lock().unwrap_or_else(|e| e.into_inner());
                evaluator.pass(&jobs, &settings, &stores, &metrics, chrono::Utc::now())
            })
            .await;
            if let Err(e) = pass {
                error!(error = %e, "An evaluation pass failed; trying again at the next one.");
            }
        }
    })
}

/// How far back (beyond a job's labels delay) the daemon looks for dates to evaluate.
pub const EVALUATION_WINDOW_DAYS: i64 = 90;

/// Run records read per job and pass: the newest, enough for [`EVALUATION_WINDOW_DAYS`] of a
/// daily job with its failed attempts.
pub const EVALUATION_RECORDS: usize = 400;

/// What one evaluation pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Dates evaluated and their reports written.
    pub evaluated: usize,
    /// Dates whose evaluation was tried and failed.
    pub failed: usize,
}

/// The daemon's evaluation of dates against their labels, pass after pass.
pub struct Evaluator {
    /// Dates whose evaluation failed, with the scores and labels it failed on: not tried
    /// again (nor logged again) until one of them changes.
    failed: HashMap<(String, NaiveDate), String>,
    stop: Arc<AtomicBool>,
}

impl Evaluator {
    pub fn new(stop: Arc<AtomicBool>) -> Self {
        Self {
            failed: HashMap::new(),
            stop,
        }
    }

    /// One pass. For each job with `[labels]`: the dates its newest succeeded runs committed in
    /// the last [`EVALUATION_WINDOW_DAYS`] (plus its labels delay) that are due
    /// ([`performance::due`]: labels complete, report missing or not of these scores and
    /// labels) are evaluated and their reports written; then the job's gauges show its latest
    /// realized report.
    pub fn pass(
        &mut self,
        jobs: &[JobSpec],
        settings: &Settings,
        stores: &Stores,
        metrics: &Metrics,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Pass {
        let located = stores
            .locate(&settings.state)
            .and_then(|state| Ok((RunHistory::new(state), stores.locate(&settings.reports)?)));
        let (history, reports) = match located {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "Cannot read run records or reports; nothing is evaluated.");
                return Pass::default();
            }
        };
        let mut done = Pass::default();
        for job in jobs {
            let Some(labels) = &job.labels else {
                continue;
            };
            let delay_days = (labels.delay.as_secs() / 86_400) as i64 + 1;
            let oldest =
                now.date_naive() - chrono::Duration::days(EVALUATION_WINDOW_DAYS + delay_days);
            let records = match history.latest(&job.name, EVALUATION_RECORDS) {
                Ok(r) => r,
                Err(e) => {
                    warn!(job = %job.name, error = %format!("{e:#}"), "Cannot read the job's run records; it is not evaluated.");
                    continue;
                }
            };
            let mut dates: Vec<NaiveDate> = records
                .iter()
                .filter(|r| r.status == RunStatus::Succeeded && r.logical_date >= oldest)
                .map(|r| r.logical_date)
                .collect();
            dates.sort();
            dates.dedup();
            for date in dates {
                if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return done;
                }
                let key = match performance::due(job, settings, stores, date, now) {
                    Ok(performance::Due::Now(key)) => key,
                    Ok(_) => continue,
                    Err(e) => {
                        warn!(job = %job.name, %date, error = %format!("{e:#}"), "Cannot tell whether the date is due for evaluation.");
                        continue;
                    }
                };
                let memo = (job.name.clone(), date);
                if self.failed.get(&memo) == Some(&key) {
                    continue; // failed on these very scores and labels: said once already
                }
                let written = performance::evaluate(job, settings, stores, date).and_then(|e| {
                    performance::report::write(&reports, &e)?;
                    performance::log_to_mlflow(job, stores, &e);
                    Ok(e)
                });
                match written {
                    Ok(e) => {
                        self.failed.remove(&memo);
                        let degraded: Vec<String> =
                            e.degraded().iter().map(ToString::to_string).collect();
                        info!(job = %job.name, %date, degraded = %degraded.join(","), "Date evaluated against its labels.");
                        done.evaluated += 1;
                    }
                    Err(e) => {
                        warn!(job = %job.name, %date, error = %format!("{e:#}"), "Could not evaluate the date; it is tried again when its scores or labels change.");
                        self.failed.insert(memo, key);
                        done.failed += 1;
                    }
                }
            }
            // The gauges: the latest date with realized metrics (also after a restart).
            let latest = performance::report::list(&reports, &job.name)
                .ok()
                .and_then(|all| {
                    all.iter()
                        .rev()
                        .filter_map(|(_, loc)| performance::report::read(loc).ok())
                        .find(|e| e.realized)
                });
            metrics.performance(&job.name, latest.as_ref());
        }
        done
    }
}

/// Waits up to `grace` for the running runs, then aborts what is left; an error when runs
/// still go on [`ABORT_WAIT`] after the abort.
async fn stop_runs(scheduler: &Scheduler, grace: Duration) -> Result<()> {
    let s = scheduler.clone();
    if tokio::task::spawn_blocking(move || s.wait_idle(grace)).await? {
        return Ok(());
    }
    warn!(
        running = scheduler.running(),
        "Runs still going after the grace period; aborting them."
    );
    scheduler.abort_running();
    let s = scheduler.clone();
    if tokio::task::spawn_blocking(move || s.wait_idle(ABORT_WAIT)).await? {
        return Ok(());
    }
    error!(
        running = scheduler.running(),
        "Runs did not stop after being aborted."
    );
    Err(anyhow::anyhow!(
        "{} run(s) did not stop within {}s of being aborted",
        scheduler.running(),
        ABORT_WAIT.as_secs()
    ))
}

/// Run records read per job at start, the newest (plus what catch-up needs beyond them, see
/// [`RunHistory::for_catch_up`]): start-up does not read every record ever written.
pub const CATCH_UP_RECORDS: usize = 50;

/// At start: each job's last success (for the metric) and the dates it missed, which the
/// scheduler then runs (see [`timetable::missed_dates`]).
pub fn catch_up(scheduler: &Scheduler, metrics: &Metrics, history: &RunHistory, jobs: &[JobSpec]) {
    let now = scheduler.now();
    for job in jobs {
        let records = match history.for_catch_up(&job.name, CATCH_UP_RECORDS) {
            Ok(r) => r,
            Err(e) => {
                warn!(job = %job.name, error = %format!("{e:#}"), "Cannot read the job's run records; it catches up nothing.");
                continue;
            }
        };
        if let Some(last) = records
            .iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .map(|r| r.finished_at)
            .max()
        {
            metrics.last_success(&job.name, last);
        }
        let dates = timetable::missed_dates(job, &records, now, job.scheduling.catchup_limit);
        scheduler.catch_up(&job.name, &dates);
    }
}

/// Reloads the jobs folder, reports the outcome and hands the jobs to the scheduler.
pub fn apply_reload(folder: &mut JobsFolder, scheduler: &Scheduler, metrics: &Metrics) {
    let r = folder.reload();
    reload::report(&r);
    metrics.reloaded(r.errors.is_none());
    scheduler.set_jobs(r.jobs);
}
