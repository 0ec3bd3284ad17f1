//! One run of one job for one logical date: plan -> read -> score -> write -> record.
//!
//! Worker threads each take a unit of work (one row group of one input object), read it in
//! batches and score them; the calling thread writes the outputs in input order. Each unit
//! has a small bounded channel, so memory stays at about (threads x (one row group's projected
//! column chunks + a few batches)), however large the partition. On S3 the row groups are
//! fetched up to `threads` units ahead of the workers: twice the row groups, still bounded.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use tracing::{info, info_span, warn};

use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::Float64Type;

use crate::config::{JobSpec, Settings};
use crate::drift::report::{self, ReportContext};
use crate::drift::{self, DriftSummary};
use crate::failpoint;
use crate::lease::{Lease, LeaseHeld, LeaseLost};
use crate::model::{LoadedModel, ModelSource};
use crate::performance;
use crate::plan::PartitionPlan;
use crate::profile::{DatasetProfile, ProfileBuilder, RowOrigin};
use crate::read::{check_schema, is_data_file, FetchAhead, ParquetObject, RowGroupChunks};
use crate::record::{
    DateState, InputFingerprint, MlflowLog, OutputFile, RunHistory, RunManifest, RunRecord,
    RunStatus, Stages, StoredObject, SUCCESS_MARKER,
};
use crate::score::{BatchOrigin, Counts, ScoredBatch, Scorer};
use crate::shard::{self, Shard};
use crate::storage::{ErrorKind, Location, ObjectMeta, Stores};
use crate::write::{output_name, ParquetOutput};

/// Knobs a caller may override for one run (tests use these to vary parallelism).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub threads: Option<usize>,
    pub batch_rows: Option<usize>,
    /// Set to abort the run: it stops between batches, removes its
    /// outputs like any failed run, and is recorded as aborted.
    pub cancel: Option<Arc<AtomicBool>>,
    /// How long the run's lease on its job and date lasts without renewal (default: the
    /// settings' `lease_ttl`).
    pub lease_ttl: Option<Duration>,
    /// Temporary objects of crashed runs older than this are removed from the output and
    /// quarantine prefixes (default: the settings' `leftover_age`).
    pub leftover_age: Option<Duration>,
    /// Score only this shard of the date's objects (see [`crate::shard`]).
    pub shard: Option<Shard>,
}

impl RunOptions {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    }

    fn check_cancelled(&self) -> Result<()> {
        if self.cancelled() {
            return Err(Aborted.into());
        }
        Ok(())
    }
}

/// The error of a run stopped through [`RunOptions::cancel`].
#[derive(Debug, thiserror::Error)]
#[error("the run was aborted before it finished")]
pub struct Aborted;

/// A failed run: the record that was written for it, and the error.
#[derive(Debug, thiserror::Error)]
#[error(
    "run {} of {} for {} failed: {:#}",
    record.run_id,
    record.job,
    record.logical_date,
    error
)]
pub struct RunFailed {
    pub record: RunRecord,
    pub error: anyhow::Error,
    /// Whether the same run may succeed if tried again later (see [`is_transient`]).
    pub transient: bool,
}

/// Whether a run that failed with `e` may succeed when tried again later: the input was not
/// there yet (upstream may still deliver it), or storage was unreachable, slow or throttled
/// past the client's own retries (a [`StorageError`](crate::storage::StorageError) of kind
/// [`Transient`](ErrorKind::Transient), whichever the store). A mistake (a schema mismatch, a
/// missing model, access denied, too many bad rows) fails the same way every time.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<crate::plan::NoInput>())
        || ErrorKind::of(e) == Some(ErrorKind::Transient)
}

/// Runs a job for a logical date and records the run, whatever its outcome.
pub fn run_job(
    job: &JobSpec,
    date: NaiveDate,
    settings: &Settings,
    stores: &Stores,
    opts: &RunOptions,
) -> Result<RunRecord, Box<RunFailed>> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let run_id = format!(
        "{}-{}",
        started_at.format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    );
    let span = info_span!("run", job = %job.name, run_id = %run_id, date = %date);
    let _entered = span.enter();
    info!(model = %job.model, "Run started.");

    let mut record = RunRecord {
        job: job.name.clone(),
        logical_date: date,
        run_id: run_id.clone(),
        status: RunStatus::Failed,
        started_at,
        finished_at: started_at,
        seconds: 0.0,
        model: job.model.to_string(),
        partitions: 0,
        counts: Counts::default(),
        output: None,
        quarantine: None,
        drift: None,
        no_drift_report: None,
        error: None,
        date_state: Some(DateState::Untouched),
        leftovers_removed: 0,
        shard: opts.shard.clone(),
        mlflow: None,
        mlflow_log: None,
        stages: Vec::new(),
    };
    let stages = Stages::start();
    // Held until the run record is written: one writer per job and date, from the first
    // check to the last word.
    let mut lease: Option<Lease> = None;
    let mut drift_page: Option<String> = None;
    let outcome = (|| {
        opts.check_cancelled()?;
        let state = stores.locate(&settings.state)?;
        let ttl = opts.lease_ttl.unwrap_or(settings.lease_ttl);
        let label = opts.shard.as_ref().map(Shard::label);
        let shard = label
            .as_deref()
            .zip(opts.shard.as_ref().map(|s| s.run.as_str()));
        let lease = &*lease.insert(Lease::acquire(
            &state, &job.name, date, shard, &run_id, ttl,
        )?);
        stages.lap("lease");
        failpoint!("run::plan");
        let mut plan = PartitionPlan::resolve(job, date, stores)?;
        // The whole date's objects: a shard's drift sample cut-off is the date's.
        let date_objects = plan.objects.clone();
        if let Some(s) = &opts.shard {
            let input = plan.input.clone();
            plan.objects
                .retain(|o| s.owns(&output_name(&input, &o.key)));
        }
        record.partitions = plan.objects.len();
        record.output = Some(plan.output.uri().to_string());
        record.quarantine = Some(plan.quarantine.uri().to_string());
        stages.lap("plan");
        failpoint!("run::model");
        let source = ModelSource::for_job(job, settings, stores)?;
        let pinned = source.load(&job.model, job.drift.enabled)?;
        record.model = pinned.model.manifest.model_ref().to_string();
        record.mlflow = pinned.provenance.clone();
        let model = Arc::new(pinned.model);
        let reference = if job.drift.enabled {
            if pinned.reference.is_none() {
                warn!(model = %job.model, "The model version has no reference profile: no drift report.");
                record.no_drift_report = Some(format!(
                    "model {} has no drift reference (`nightshift model import --reference`, or \
                     [model] reference in the job file, gives it one)",
                    job.model
                ));
            }
            pinned.reference
        } else {
            None
        };
        // A shard profiles its part of the date for the shard that completes it: every shard
        // samples with the cut-off of the date's row count, as one unsharded run would.
        let date_rows = match (&opts.shard, &reference) {
            (Some(_), Some(_)) => Some(
                ParquetObject::open_all(&plan.input, &date_objects)?
                    .iter()
                    .fold(0u64, |n, o| n.saturating_add(o.num_rows())),
            ),
            _ => None,
        };
        let reports = stores.locate(&settings.reports)?;
        stages.lap("model");
        let run = Run {
            stages: &stages,
            job,
            plan: &plan,
            date_rows,
            model,
            provenance: record.mlflow.clone(),
            run_id: &run_id,
            started_at,
            opts,
            reference,
            reports,
            lease,
            leftover_age: opts.leftover_age.unwrap_or(settings.leftover_age),
            touched: AtomicBool::new(false),
            leftovers_removed: AtomicU64::new(0),
            drift_page: Mutex::new(None),
            committed_date: AtomicBool::new(false),
            part_recorded: AtomicBool::new(false),
        };
        let result = run.execute();
        drift_page = run.drift_page.lock().ok().and_then(|mut p| p.take());
        record.leftovers_removed = run.leftovers_removed.load(Ordering::SeqCst);
        record.date_state = Some(match &result {
            Ok(_) if run.committed_date.load(Ordering::SeqCst) => DateState::Committed,
            Ok(_) => DateState::ShardDone,
            // The date is another runner's now: what is there is its work, not ours to clear.
            Err(e) if e.chain().any(|c| c.is::<LeaseLost>()) => DateState::HandedOver,
            // A shard that failed after recording its part (while completing the date): its
            // outputs are what its manifest lists, and a peer finishing at the same instant
            // may be committing them; the date is left as it is.
            Err(_) if run.part_recorded.load(Ordering::SeqCst) => DateState::ShardDone,
            Err(_) if run.touched.load(Ordering::SeqCst) => run.clean_up(),
            Err(_) => DateState::Untouched,
        });
        result
    })();
    stages.lap(if outcome.is_ok() {
        "commit"
    } else {
        "failure and clean-up"
    });
    record.finished_at = Utc::now();
    record.seconds = clock.elapsed().as_secs_f64();
    record.stages = stages.times();
    let error = match outcome {
        Ok(manifest) => {
            record.status = RunStatus::Succeeded;
            record.counts = manifest.counts;
            record.drift = manifest.drift;
            None
        }
        Err(e) => {
            if e.is::<Aborted>() {
                record.status = RunStatus::Aborted;
            }
            record.error = Some(format!("{e:#}"));
            Some(e)
        }
    };
    if let Some(e) = &error {
        if e.chain().any(|c| c.is::<LeaseHeld>()) {
            // The date is another runner's: its record is the one that counts.
            info!(error = %format!("{e:#}"), "Run refused: another runner holds the date.");
            return Err(Box::new(RunFailed {
                record,
                error: error.expect("checked above"),
                transient: false,
            }));
        }
    }
    let history = stores.locate(&settings.state).map(RunHistory::new);
    let recorded = history.and_then(|h| h.write(&record));
    if let Some(mut lease) = lease {
        if record.date_state == Some(DateState::Committed) {
            // The shard that committed the date: the sharded run is over.
            lease.release_date();
        }
        if let Err(e) = lease.release() {
            warn!(error = %format!("{e:#}"), "Could not release the lease; it expires by itself.");
        }
    }
    let c = &record.counts;
    match (&error, recorded) {
        (None, Ok(_)) => {
            info!(
                rows_in = c.rows_in,
                rows_scored = c.rows_scored,
                rows_quarantined = c.rows_quarantined,
                seconds = record.seconds,
                "Run committed."
            );
            let mut record = record;
            if record.date_state == Some(DateState::Committed) {
                let estimate = record_estimate(job, date, &record.run_id, settings, stores);
                if let Some(tracking) = &job.mlflow {
                    // A later run that committed the date since logs it itself.
                    let ours = performance::is_run_of(job, stores, date, &record.run_id);
                    record.mlflow_log = Some(match ours {
                        Ok(true) => {
                            log_to_mlflow(tracking, &record, estimate.as_ref(), drift_page, stores)
                        }
                        Ok(false) => MlflowLog::Superseded,
                        Err(e) => MlflowLog::Failed {
                            error: format!("{e:#}"),
                        },
                    });
                }
            }
            Ok(record)
        }
        (None, Err(e)) => Err(Box::new(RunFailed {
            transient: is_transient(&e),
            error: e.context("the run succeeded but its run record could not be written"),
            record,
        })),
        (Some(_), recorded) => {
            if let Err(e) = recorded {
                warn!(error = %format!("{e:#}"), "Could not write the record of a failed run.");
            }
            let error = error.expect("checked above");
            if record.status == RunStatus::Aborted {
                warn!(date_state = ?record.date_state, "Run aborted.");
            } else {
                info!(error = %format!("{error:#}"), date_state = ?record.date_state, "Run failed.");
            }
            Err(Box::new(RunFailed {
                transient: is_transient(&error),
                record,
                error,
            }))
        }
    }
}

/// After a commit, for a job with `[labels]`: the date's performance estimated from its
/// calibrated scores (CBPE), written as its performance report until `evaluate` measures it.
/// The run has succeeded whatever happens here: a failure is logged, not the run's.
fn record_estimate(
    job: &JobSpec,
    date: NaiveDate,
    run_id: &str,
    settings: &Settings,
    stores: &Stores,
) -> Option<performance::Evaluation> {
    job.labels.as_ref()?;
    let estimate = || -> Result<Option<(Location, performance::Evaluation)>> {
        let reports = stores.locate(&settings.reports)?;
        if !performance::is_run_of(job, stores, date, run_id)? {
            return Ok(None); // a later run committed the date: the report is its own
        }
        match performance::estimate(job, settings, stores, date) {
            Ok(Some(e)) => Ok(Some((performance::report::write(&reports, &e)?, e))),
            // Nothing to estimate from (no calibration), or estimating failed: an earlier
            // report is of scores this run replaced.
            Ok(None) => {
                performance::report::remove(&reports, &job.name, date)?;
                Ok(None)
            }
            Err(e) => {
                let _ = performance::report::remove(&reports, &job.name, date);
                Err(e)
            }
        }
    };
    // A panic here must not become the run's: it has committed.
    match std::panic::catch_unwind(AssertUnwindSafe(estimate)) {
        Ok(Ok(Some((loc, e)))) => {
            info!(report = %loc.uri(), "Estimated performance written.");
            return Some(e);
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => {
            warn!(error = %format!("{e:#}"), "Could not estimate the date's performance.")
        }
        Err(panic) => {
            warn!(panic = %panic_message(&*panic), "Estimating the date's performance panicked.")
        }
    }
    None
}

/// After a commit, for a job with `[mlflow]`: the run logged to the date's MLflow run. Best
/// effort: the outputs and `_SUCCESS` are committed, so a failure is a warning (and counted by
/// the daemon), never the run's.
fn log_to_mlflow(
    tracking: &crate::config::MlflowTracking,
    record: &RunRecord,
    estimate: Option<&performance::Evaluation>,
    drift_page: Option<String>,
    stores: &Stores,
) -> MlflowLog {
    let log = || -> Result<String> {
        let c = &record.counts;
        let (name, version) = record.model.rsplit_once('@').unwrap_or((&record.model, ""));
        let mut metrics = vec![
            ("rows_in".to_string(), c.rows_in as f64),
            ("rows_scored".to_string(), c.rows_scored as f64),
            ("rows_quarantined".to_string(), c.rows_quarantined as f64),
            ("seconds".to_string(), record.seconds),
        ];
        if let Some(d) = &record.drift {
            metrics.push(("drift_share".to_string(), d.share_of_drifted_columns));
            metrics.push((
                "drifted_columns".to_string(),
                d.drifted_columns.len() as f64,
            ));
        }
        for row in estimate.map(|e| e.metrics.as_slice()).unwrap_or_default() {
            if let Some(v) = row.estimated {
                metrics.push((format!("estimated_{}", row.metric), v));
            }
        }
        let mut tags = vec![
            ("nightshift.status".to_string(), record.status.to_string()),
            ("nightshift.run_id".to_string(), record.run_id.clone()),
            ("nightshift.model".to_string(), record.model.clone()),
        ];
        if let Some(output) = &record.output {
            tags.push(("nightshift.output".to_string(), output.clone()));
        }
        let log = crate::mlflow::tracking::RunLog {
            job: record.job.clone(),
            logical_date: record.logical_date.to_string(),
            params: vec![
                ("job".to_string(), record.job.clone()),
                ("logical_date".to_string(), record.logical_date.to_string()),
                ("model_name".to_string(), name.to_string()),
                ("model_version".to_string(), version.to_string()),
                ("nightshift_run_id".to_string(), record.run_id.clone()),
            ],
            metrics,
            tags,
            artifacts: drift_page
                .map(|p| ("drift.html".to_string(), Bytes::from(p)))
                .into_iter()
                .collect(),
            start_ms: record.started_at.timestamp_millis(),
            end_ms: record.finished_at.timestamp_millis(),
        };
        crate::mlflow::tracking::Tracker::new(&tracking.server, &tracking.experiment, stores)?
            .log(&log)
    };
    match std::panic::catch_unwind(AssertUnwindSafe(log)) {
        Ok(Ok(run_id)) => {
            info!(mlflow_run = %run_id, server = %tracking.server, "Run logged to MLflow.");
            MlflowLog::Logged { run_id }
        }
        Ok(Err(e)) => {
            let error = format!("{e:#}");
            warn!(server = %tracking.server, error = %error, "Could not log the run to MLflow; the run is committed.");
            MlflowLog::Failed { error }
        }
        Err(panic) => {
            let error = panic_message(&*panic);
            warn!(panic = %error, "Logging the run to MLflow panicked; the run is committed.");
            MlflowLog::Failed { error }
        }
    }
}

struct Run<'a> {
    job: &'a JobSpec,
    /// The stage clock of the run record.
    stages: &'a Stages,
    plan: &'a PartitionPlan,
    /// A shard's: the row count of the whole date (all shards' objects), for the drift
    /// sample's cut-off.
    date_rows: Option<u64>,
    model: Arc<LoadedModel>,
    /// Where the model came from, for a model from MLflow.
    provenance: Option<crate::mlflow::Provenance>,
    run_id: &'a str,
    started_at: chrono::DateTime<Utc>,
    opts: &'a RunOptions,
    /// The training data's profile, when this run reports drift.
    reference: Option<DatasetProfile>,
    reports: Location,
    lease: &'a Lease,
    leftover_age: Duration,
    /// Set just before the first change to the date's outputs (the marker's removal).
    touched: AtomicBool,
    leftovers_removed: AtomicU64,
    /// Set when this run wrote the date's `_SUCCESS` (a shard's run may not).
    committed_date: AtomicBool,
    /// A shard's: set once its manifest is written (its part of the date is recorded).
    part_recorded: AtomicBool,
    /// The drift page, for a job that logs its runs to MLflow.
    drift_page: Mutex<Option<String>>,
}

/// A shard's part of its date's drift profile, as stored beside its manifest, with what it
/// was made with: the parts of one date merge only if these agree.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredPart {
    model: String,
    /// The date's row count the samples' cut-off was set for.
    date_rows: u64,
    profile: crate::profile::PartialProfile,
}

/// What the writer collected: the outputs and the counts.
struct Written {
    files: Vec<OutputFile>,
    counts: Counts,
}

/// One row group of one input object, with the row number it starts at.
struct Unit {
    object: usize,
    row_group: usize,
    first_row: u64,
}

/// What a worker sends the writer: scored batches in order, then `Done`. A unit whose channel closes without `Done` did not finish (its worker
/// panicked or stopped): its output must not be committed.
enum Piece {
    Scored(ScoredBatch),
    Done,
}

type Message = Result<Piece>;

/// What a run checked before touching the date's outputs: the input objects, one scorer each,
/// the columns read, and each object's output name.
struct Prepared {
    objects: Vec<ParquetObject>,
    scorers: Vec<Scorer>,
    columns: Vec<String>,
    names: Vec<String>,
}

impl Run<'_> {
    /// The run's stages, in order: check everything that can be checked, take the date's
    /// `_SUCCESS` away, score and write, report drift, settle the stored set, commit. A failure
    /// at any stage leaves no `_SUCCESS` over a partial set (see `run_job` for the clean-up).
    fn execute(&self) -> Result<RunManifest> {
        let prepared = self.prepare()?;
        self.stages.lap("check");
        let marker = self.open_date()?;
        let (Written { mut files, counts }, profile) = self.score_all(&prepared)?;
        self.check_bad_rows(&counts)?;
        self.stages.lap("score");

        failpoint!("run::drift");
        let drift = match (&self.reference, profile, &self.opts.shard) {
            // The shard that completes the date reports its drift from every shard's part.
            (Some(_), Some(current), Some(s)) => {
                let loc = s.profile(&self.plan.output);
                let part = StoredPart {
                    model: self.part_origin(),
                    date_rows: self.date_rows.unwrap_or_default(),
                    profile: current.to_partial(),
                };
                loc.store
                    .put(&loc.key, Bytes::from(serde_json::to_vec(&part)?))?;
                None
            }
            (Some(reference), Some(current), None) => {
                Some(self.report_drift(reference, current.finish())?)
            }
            _ => None,
        };
        self.stages.lap("drift");
        self.settle_outputs(&mut files)?;
        self.stages.lap("settle");

        let plan = self.plan;
        let manifest = RunManifest {
            job: self.job.name.clone(),
            logical_date: plan.date,
            run_id: self.run_id.to_string(),
            model_name: self.model.manifest.name.clone(),
            model_version: self.model.manifest.version,
            model_sha256: self.model.manifest.artifact_sha256.clone(),
            started_at: self.started_at,
            finished_at: Utc::now(),
            counts,
            files,
            quarantine_prefix: plan.quarantine.uri().to_string(),
            drift,
            shards: None,
            mlflow: self.provenance.clone(),
        };
        self.opts.check_cancelled()?;
        // A runner that stalled past its lease must not commit over its successor's work.
        self.lease.ensure_held()?;
        if let Some(s) = &self.opts.shard {
            return self.commit_shard(s, manifest);
        }
        failpoint!("run::marker-write");
        marker.store.put(
            &marker.key,
            Bytes::from(serde_json::to_vec_pretty(&manifest)?),
        )?;
        failpoint!("run::after-marker");
        self.committed_date.store(true, Ordering::SeqCst);
        Ok(manifest)
    }

    /// Everything that can be checked is checked before the date's outputs are touched: a run
    /// that fails here leaves the last good outputs and their `_SUCCESS` as they were.
    fn prepare(&self) -> Result<Prepared> {
        let (plan, job) = (self.plan, self.job);
        failpoint!("run::footers");
        let objects = ParquetObject::open_all(&plan.input, &plan.objects)?;
        failpoint!("run::schema");
        if job.output.probabilities && !self.model.manifest.is_classifier() {
            bail!(
                "[output] probabilities = true: model {} is a regressor, which has no class \
                 probabilities",
                job.model
            );
        }
        let mut scorers = Vec::with_capacity(objects.len());
        for obj in &objects {
            check_schema(
                obj.schema(),
                &self.model.manifest.signature,
                &job.output.passthrough,
                &obj.uri(),
            )?;
            let scorer = Scorer::new(
                self.model.clone(),
                obj.schema(),
                job.output.passthrough.clone(),
                self.run_id.to_string(),
                self.started_at,
                job.run.on_bad_rows,
            )?;
            scorers.push(if job.output.probabilities {
                scorer.with_probabilities()?
            } else {
                scorer
            });
        }
        let columns = scorers
            .first()
            .map(Scorer::input_columns)
            .unwrap_or_default();
        check_one_schema(&objects, &columns)?;
        let names = output_names(plan, &objects)?;
        check_no_aliases(plan)?;
        self.opts.check_cancelled()?;
        self.lease.ensure_held()?;
        Ok(Prepared {
            objects,
            scorers,
            columns,
            names,
        })
    }

    /// The first change to the date's outputs: without the marker, readers know the set is
    /// not complete. Returns where the marker goes back at commit.
    fn open_date(&self) -> Result<Location> {
        let plan = self.plan;
        // Shards share the prefixes with live writers: the last one cleans up (`clean_up`).
        if self.opts.shard.is_none() {
            self.remove_leftovers();
        }
        failpoint!("run::marker-delete");
        self.touched.store(true, Ordering::SeqCst);
        let marker = plan.output.join(SUCCESS_MARKER);
        marker.store.delete(&marker.key)?;
        if let Some(s) = &self.opts.shard {
            shard::forget(s, &plan.output)?;
        }
        Ok(marker)
    }

    /// Scores every row group on the worker threads and writes the outputs in order (see
    /// `write_outputs`); returns what was written and the merged profile of the scored rows.
    fn score_all(&self, prepared: &Prepared) -> Result<(Written, Option<ProfileBuilder>)> {
        let Prepared {
            objects,
            scorers,
            columns,
            names,
        } = prepared;
        let plan = self.plan;
        let mut units = Vec::new();
        // The date's rows, by the row groups' counts (which size the drift samples' cut-off).
        let mut rows = 0u64;
        for (i, obj) in objects.iter().enumerate() {
            let mut first_row = 0;
            for rg in 0..obj.num_row_groups() {
                units.push(Unit {
                    object: i,
                    row_group: rg,
                    first_row,
                });
                let n = obj.reader_meta.metadata().row_group(rg).num_rows();
                first_row += n as u64;
                rows = rows.saturating_add(u64::try_from(n).unwrap_or(0));
            }
        }
        let threads = self
            .opts
            .threads
            .unwrap_or_else(|| self.job.run.worker_threads())
            .max(1);
        let batch_rows = self
            .opts
            .batch_rows
            .unwrap_or(self.job.run.batch_rows)
            .max(1);

        let mut senders: Vec<Mutex<Option<SyncSender<Message>>>> = Vec::with_capacity(units.len());
        let mut receivers: Vec<Receiver<Message>> = Vec::with_capacity(units.len());
        for _ in &units {
            let (tx, rx) = sync_channel(2);
            senders.push(Mutex::new(Some(tx)));
            receivers.push(rx);
        }
        let next = AtomicUsize::new(0);
        let cancelled = AtomicBool::new(false);
        let stopping = || cancelled.load(Ordering::SeqCst) || self.opts.cancelled();
        // On a store behind a network, fetcher threads fetch units in order ahead of the
        // workers (see `FetchAhead`), so a worker's core decodes while the next units download.
        let (ahead, fetchers) = fetch_ahead_depth(&plan.input, threads);
        let prefetch = (ahead > 0).then(|| FetchAhead::new(units.len(), ahead, fetchers));
        // One profile per worker, merged at the end: profiles are exact and order-free, and a
        // builder that sees many units fills its sample once instead of once a unit.
        let profiles: Mutex<Vec<ProfileBuilder>> = Mutex::new(Vec::new());
        let blank_profile = self
            .reference
            .as_ref()
            .map(|r| drift::current_profile(r, &self.job.drift, self.date_rows.unwrap_or(rows)));
        let span = tracing::Span::current();

        let written = std::thread::scope(|scope| -> Result<Written> {
            if let Some(prefetch) = &prefetch {
                for _ in 0..fetchers {
                    scope.spawn(|| {
                        let _entered = span.enter();
                        prefetch.fetch(
                            |i| {
                                let u = &units[i];
                                let obj = &objects[u.object];
                                // A panic is this unit's failure, like a worker's.
                                std::panic::catch_unwind(AssertUnwindSafe(|| {
                                    fetch_unit(obj, u, columns)
                                }))
                                .unwrap_or_else(|panic| {
                                    Err(anyhow!(
                                        "a thread panicked fetching row group {} of {}: {}",
                                        u.row_group,
                                        obj.uri(),
                                        panic_message(&*panic)
                                    ))
                                })
                            },
                            stopping,
                        )
                    });
                }
            }
            for _ in 0..threads.min(units.len()) {
                scope.spawn(|| {
                    let _entered = span.enter();
                    let mut profile = blank_profile.clone();
                    // Units are handed out in order, so the unit the writer waits on is always
                    // running or done: workers blocked on a full channel cannot starve it.
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= units.len() {
                            break;
                        }
                        if cancelled.load(Ordering::SeqCst) || self.opts.cancelled() {
                            // Close the channels of the units nobody will take, so the writer
                            // waiting on one of them sees it end instead of waiting for ever.
                            for s in &senders[i..] {
                                s.lock().unwrap_or_else(|e| e.into_inner()).take();
                            }
                            break;
                        }
                        let tx = senders[i]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take()
                            .expect("each unit is taken once");
                        let u = &units[i];
                        let obj = &objects[u.object];
                        // A panic is this unit's failure, reported to the writer like an error;
                        // the worker goes on to the next unit (the writer stops the run).
                        let scored = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            let chunks = match &prefetch {
                                Some(prefetch) => match prefetch.take(i, stopping) {
                                    Some(fetched) => fetched?,
                                    // Stopped: the channel closes unfinished, as below.
                                    None => return Ok(()),
                                },
                                None => fetch_unit(obj, u, columns)?,
                            };
                            score_unit(
                                obj,
                                &scorers[u.object],
                                u,
                                chunks,
                                batch_rows,
                                profile.as_mut().map(|p| (p, names[u.object].as_str())),
                                &tx,
                            )
                        }));
                        let failed = match scored {
                            Ok(Ok(())) => continue,
                            Ok(Err(e)) => e,
                            Err(panic) => anyhow!(
                                "a worker thread panicked scoring row group {} of {}: {}",
                                u.row_group,
                                obj.uri(),
                                panic_message(&*panic)
                            ),
                        };
                        let _ = tx.send(Err(failed));
                    }
                    if let Some(p) = profile {
                        profiles.lock().unwrap_or_else(|e| e.into_inner()).push(p);
                    }
                });
            }
            let result = self.write_outputs(objects, scorers, &units, names, receivers);
            if result.is_err() {
                cancelled.store(true, Ordering::SeqCst);
                if let Some(prefetch) = &prefetch {
                    prefetch.stop();
                }
            }
            result
        })?;
        let profile = profiles
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .reduce(|mut a, b| {
                a.merge(b);
                a
            })
            .or(blank_profile);
        Ok((written, profile))
    }

    /// Fails the run when more rows were bad than the job allows.
    fn check_bad_rows(&self, counts: &Counts) -> Result<()> {
        let bad = counts.bad_rows();
        let allowed = self.job.run.max_bad_rows_fraction;
        if bad > 0 && bad as f64 > allowed * counts.rows_in as f64 {
            bail!(
                "{bad} of {} rows ({:.2}%) could not be scored, more than max_bad_rows_fraction = {allowed}; the bad rows are in {}",
                counts.rows_in,
                100.0 * bad as f64 / counts.rows_in as f64,
                self.plan.quarantine.uri()
            );
        }
        Ok(())
    }

    /// Removes this run's stale outputs (a rerun replaces the date: outputs of input files that
    /// are gone now are stale), checks that the stored set is exactly what was written, and
    /// records each object's size and etag as the store now has it: what `_SUCCESS` lists is
    /// exactly what a reader finds.
    fn settle_outputs(&self, files: &mut [OutputFile]) -> Result<()> {
        let plan = self.plan;
        let keep: HashSet<String> = files
            .iter()
            .map(|f| plan.output.join(&f.name).key)
            .collect();
        let keep_q: HashSet<String> = files
            .iter()
            .filter_map(|f| f.quarantine.as_ref())
            .map(|q| plan.quarantine.join(&q.name).key)
            .collect();
        failpoint!("run::stale-cleanup");
        let mine = |prefix: &Location, k: &str| self.owns(prefix.relative(k));
        remove_data_files(&plan.output, |k| mine(&plan.output, k) && !keep.contains(k))?;
        remove_data_files(&plan.quarantine, |k| {
            mine(&plan.quarantine, k) && !keep_q.contains(k)
        })?;

        let stored_of = |prefix: &Location| -> Result<HashMap<String, ObjectMeta>> {
            Ok(stored_data_files(prefix)?
                .into_iter()
                .filter(|(k, _)| mine(prefix, k))
                .collect())
        };
        let stored = stored_of(&plan.output)?;
        let stored_q = stored_of(&plan.quarantine)?;
        check_only(&plan.output, &stored, &keep)?;
        check_only(&plan.quarantine, &stored_q, &keep_q)?;
        for f in files {
            let meta = &stored[&plan.output.join(&f.name).key];
            f.size = meta.size;
            f.etag = meta.etag.clone();
            if let Some(q) = &mut f.quarantine {
                let meta = &stored_q[&plan.quarantine.join(&q.name).key];
                q.size = meta.size;
                q.etag = meta.etag.clone();
            }
        }
        Ok(())
    }

    /// Whether a name in the output or quarantine prefix is this run's to write and remove:
    /// all of them, or its shard's.
    fn owns(&self, name: &str) -> bool {
        self.opts.shard.as_ref().is_none_or(|s| s.owns(name))
    }

    /// A shard writes its manifest; the shard that completes its run writes `_SUCCESS`.
    fn commit_shard(&self, s: &Shard, manifest: RunManifest) -> Result<RunManifest> {
        let plan = self.plan;
        let loc = s.manifest(&plan.output);
        failpoint!("run::shard-manifest");
        loc.store
            .put(&loc.key, Bytes::from(serde_json::to_vec_pretty(&manifest)?))
            .with_context(|| format!("writing shard manifest {}", loc.uri()))?;
        self.part_recorded.store(true, Ordering::SeqCst);
        let relative = |prefix: &Location, m: &HashMap<String, ObjectMeta>| {
            m.values()
                .map(|o| {
                    (
                        prefix.relative(&o.key).to_string(),
                        (o.size, o.etag.clone()),
                    )
                })
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        failpoint!("run::marker-write");
        let date = shard::complete(
            s,
            &plan.output,
            &plan.quarantine,
            manifest.clone(),
            || {
                Ok((
                    relative(&plan.output, &stored_data_files(&plan.output)?),
                    relative(&plan.quarantine, &stored_data_files(&plan.quarantine)?),
                ))
            },
            || self.merged_drift(s),
            || self.lease.ensure_held(),
        )?;
        let mut manifest = manifest;
        if let Some(date) = &date {
            manifest.drift = date.drift.clone();
            info!(
                shards = s.count,
                files = date.files.len(),
                "Last shard: the date is committed."
            );
            self.committed_date.store(true, Ordering::SeqCst);
            // Every shard of the run is done: what is left in the prefixes is dead.
            self.remove_leftovers();
        } else {
            info!(shard = %s.label(), "Shard committed; the date waits for the other shards.");
        }
        Ok(manifest)
    }

    /// What a shard's stored profile was made with: the model version and its artifact.
    fn part_origin(&self) -> String {
        let m = &self.model.manifest;
        format!("{} ({})", m.model_ref(), m.artifact_sha256)
    }

    /// The shard that completes a date: every shard's stored profile merged into the date's,
    /// compared with the reference and reported, as one unsharded run would have.
    fn merged_drift(&self, s: &Shard) -> Result<Option<DriftSummary>> {
        let Some(reference) = &self.reference else {
            return Ok(None);
        };
        failpoint!("run::shard-drift");
        let rows = self.date_rows.unwrap_or_default();
        let mut merged = drift::current_profile(reference, &self.job.drift, rows);
        for index in 0..s.count {
            let other = Shard { index, ..s.clone() };
            let loc = other.profile(&self.plan.output);
            let part = loc
                .store
                .get(&loc.key)
                .with_context(|| format!("reading shard {}'s profile", other.label()))?;
            let part: StoredPart =
                serde_json::from_slice(&part).with_context(|| format!("reading {}", loc.uri()))?;
            if part.model != self.part_origin() || part.date_rows != rows {
                bail!(
                    "shard {} profiled {} rows with model {}, this shard {} rows with {}: the \
                     shards of one run must score the same date with the same model",
                    other.label(),
                    part.date_rows,
                    part.model,
                    rows,
                    self.part_origin()
                );
            }
            merged
                .merge_partial(part.profile)
                .with_context(|| format!("merging {}", loc.uri()))?;
        }
        Ok(Some(self.report_drift(reference, merged.finish())?))
    }

    /// Removes what crashed runs left in the date's prefixes (temp files, open multipart
    /// uploads) once old enough that no live writer can own them. Best effort: a failure here
    /// is logged, not fatal, as leftovers are invisible to readers.
    fn remove_leftovers(&self) {
        let Ok(age) = chrono::Duration::from_std(self.leftover_age) else {
            return;
        };
        let cutoff = Utc::now() - age;
        for loc in [&self.plan.output, &self.plan.quarantine] {
            match loc.store.remove_stale_temps(&loc.key, cutoff) {
                Ok(0) => {}
                Ok(n) => {
                    info!(prefix = %loc.uri(), removed = n, "Removed what crashed runs left.");
                    self.leftovers_removed.fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(e) => {
                    warn!(prefix = %loc.uri(), error = %format!("{e:#}"), "Could not look for what crashed runs left.")
                }
            }
        }
    }

    /// Receives scored batches in input order and writes one output (and at most one
    /// quarantine file) per input object.
    fn write_outputs(
        &self,
        objects: &[ParquetObject],
        scorers: &[Scorer],
        units: &[Unit],
        names: &[String],
        receivers: Vec<Receiver<Message>>,
    ) -> Result<Written> {
        let mut files = Vec::with_capacity(objects.len());
        let mut counts = Counts::default();
        let mut receivers = units.iter().zip(receivers).peekable();
        for (i, obj) in objects.iter().enumerate() {
            let name = names[i].clone();
            let mut output =
                ParquetOutput::create(self.plan.output.join(&name), scorers[i].output_schema())?;
            let mut quarantine: Option<ParquetOutput> = None;
            let mut file_counts = Counts::default();
            while let Some((u, rx)) = receivers.next_if(|(u, _)| u.object == i) {
                let mut done = false;
                for message in rx {
                    self.opts.check_cancelled()?;
                    let scored = match message? {
                        Piece::Scored(s) => s,
                        Piece::Done => {
                            done = true;
                            continue;
                        }
                    };
                    output.write(&scored.output)?;
                    if let Some(q) = &scored.quarantine {
                        if quarantine.is_none() {
                            let loc = self.plan.quarantine.join(&name);
                            quarantine = Some(ParquetOutput::create(loc, q.schema())?);
                        }
                        quarantine.as_mut().expect("created above").write(q)?;
                    }
                    file_counts.add(&scored.counts);
                }
                self.opts.check_cancelled()?;
                if !done {
                    bail!(
                        "the worker scoring row group {} of {} stopped before it finished",
                        u.row_group,
                        obj.uri()
                    );
                }
            }
            self.opts.check_cancelled()?;
            // Checked before each commit (in the store once the lease nears expiry): a runner
            // that stalled past its ttl must not replace its successor's outputs.
            self.lease.ensure_held_cheaply()?;
            failpoint!("run::output-commit");
            let rows = output.finish()?;
            let quarantine = match quarantine {
                Some(q) => {
                    failpoint!("run::quarantine-commit");
                    q.finish()?;
                    Some(StoredObject {
                        name: name.clone(),
                        size: 0,
                        etag: String::new(),
                    })
                }
                None => None,
            };
            info!(file = %name, rows, rows_quarantined = file_counts.rows_quarantined, "Output committed.");
            counts.add(&file_counts);
            files.push(OutputFile {
                name,
                rows,
                size: 0,
                etag: String::new(),
                input: InputFingerprint::of(&self.plan.input, &obj.meta),
                quarantine,
                rows_quarantined: file_counts.rows_quarantined,
            });
        }
        Ok(Written { files, counts })
    }

    /// Compares the run's data with the training data, writes the report (and the current
    /// profile, for the HTML page) and fails the run if the job says drift should.
    fn report_drift(
        &self,
        reference: &DatasetProfile,
        current: DatasetProfile,
    ) -> Result<DriftSummary> {
        let (rows, summary) = drift::compare(reference, &current, &self.job.drift);
        let ctx = ReportContext {
            job: self.job.name.clone(),
            logical_date: self.plan.date,
            run_id: self.run_id.to_string(),
            model_name: self.model.manifest.name.clone(),
            model_version: self.model.manifest.version,
            computed_at: Utc::now(),
        };
        let loc = report::write(&self.reports, &ctx, &rows)?;
        // The page draws histograms and counts; the samples (most of the bytes) stay here.
        let mut current = current;
        for c in current.columns.iter_mut().chain(current.score.as_mut()) {
            c.sample = Vec::new();
        }
        if self.job.mlflow.is_some() {
            let title = format!(
                "Drift: {} {} (model {}@{})",
                ctx.job, ctx.logical_date, ctx.model_name, ctx.model_version
            );
            let page = drift::html::render(&title, &rows, reference, &current);
            if let Ok(mut slot) = self.drift_page.lock() {
                *slot = Some(page);
            }
        }
        let profile_loc = report::profile_location(&self.reports, &ctx.job, ctx.logical_date);
        profile_loc
            .store
            .put(&profile_loc.key, Bytes::from(serde_json::to_vec(&current)?))?;
        // And the reference it was compared with, for the web page (without its samples).
        let mut reference = reference.clone();
        for c in reference.columns.iter_mut().chain(reference.score.as_mut()) {
            c.sample = Vec::new();
        }
        let reference_loc =
            report::reference_profile_location(&self.reports, &ctx.job, ctx.logical_date);
        reference_loc.store.put(
            &reference_loc.key,
            Bytes::from(serde_json::to_vec(&reference)?),
        )?;
        info!(
            report = %loc.uri(),
            drift_detected = summary.drift_detected,
            drifted_columns = %summary.drifted_columns.join(","),
            "Drift report written."
        );
        if summary.drift_detected && self.job.drift.fail_on_drift {
            bail!(
                "the data drifted ({} of the feature columns: {}) and the job has fail_on_drift = true; see {}",
                summary.drifted_columns.len(),
                summary.drifted_columns.join(", "),
                loc.uri()
            );
        }
        Ok(summary)
    }

    /// After a failure that came once writing began: no output of this date may look
    /// complete, so the marker goes first (if it is still or already there), then the date's
    /// outputs and quarantine files. Says what the date holds after.
    fn clean_up(&self) -> DateState {
        let marker = self.plan.output.join(SUCCESS_MARKER);
        if let Err(e) = marker.store.delete(&marker.key) {
            warn!(marker = %marker.uri(), error = %format!("{e:#}"), "Could not remove the marker after a failed run.");
            return DateState::Incomplete;
        }
        if let Some(s) = &self.opts.shard {
            if let Err(e) = shard::forget(s, &self.plan.output) {
                warn!(error = %format!("{e:#}"), "Could not remove the shard's manifest after a failed run.");
                return DateState::Incomplete;
            }
        }
        let mut state = DateState::Cleared;
        for loc in [&self.plan.output, &self.plan.quarantine] {
            if let Err(e) = remove_data_files(loc, |k| self.owns(loc.relative(k))) {
                warn!(prefix = %loc.uri(), error = %format!("{e:#}"), "Could not remove the outputs of a failed run.");
                state = DateState::Incomplete;
            }
        }
        state
    }
}

/// How many units fetcher threads fetch ahead of the workers, and how many fetchers: none
/// for a store that does not gain from it (local files, read faster than decoded), else as
/// many units ahead as there are workers (each worker finds its next unit fetched), by two
/// fetchers (two units on their way at once, a few GETs each).
fn fetch_ahead_depth(input: &Location, threads: usize) -> (usize, usize) {
    match input.store.fetch_ahead() {
        true => (threads, threads.min(2)),
        false => (0, 0),
    }
}

/// Fetches the column chunks of one unit.
fn fetch_unit(obj: &ParquetObject, unit: &Unit, columns: &[String]) -> Result<RowGroupChunks> {
    fetch_failpoint().with_context(|| format!("reading {}", obj.uri()))?;
    obj.fetch_row_group(unit.row_group, columns)
}

/// `run::fetch`: fails a unit's fetch (as a failed read of its object would, the caller adds
/// the object's name), or slows it (`sleep(ms)`).
fn fetch_failpoint() -> Result<()> {
    failpoint!("run::fetch");
    Ok(())
}

/// Decodes and scores one unit from its fetched column chunks, sending the scored batches to
/// the writer.
fn score_unit(
    obj: &ParquetObject,
    scorer: &Scorer,
    unit: &Unit,
    chunks: RowGroupChunks,
    batch_rows: usize,
    mut profile: Option<(&mut ProfileBuilder, &str)>,
    tx: &SyncSender<Message>,
) -> Result<()> {
    let uri = obj.uri().to_string();
    let mut first_row = unit.first_row;
    for batch in obj.decode_row_group(chunks, batch_rows)? {
        let batch = batch?;
        failpoint!("run::score-batch");
        let scored = scorer
            .score(
                &batch,
                &BatchOrigin {
                    uri: &uri,
                    first_row,
                },
            )
            .with_context(|| format!("scoring {uri}"))?;
        if let Some((builder, object)) = &mut profile {
            // The profile is built in the same pass as scoring: no second read of the data.
            let origin = RowOrigin::new(object, first_row);
            let schema = batch.schema();
            let columns: Vec<(&str, &ArrayRef)> = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(f, c)| (f.name().as_str(), c))
                .collect();
            builder.add_columns(&columns, origin)?;
            let scores = scored
                .output
                .column_by_name("score")
                .expect("outputs have scores")
                .as_primitive::<Float64Type>();
            builder.add_scores(scores.values(), &scored.rows, origin);
        }
        first_row += batch.num_rows() as u64;
        if tx.send(Ok(Piece::Scored(scored))).is_err() {
            return Ok(()); // the writer stopped: the run failed elsewhere
        }
    }
    let _ = tx.send(Ok(Piece::Done));
    Ok(())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The columns a run reads must have one type across the date's objects: outputs of one date
/// share a schema, and a reader of the date sees one table.
fn check_one_schema(objects: &[ParquetObject], columns: &[String]) -> Result<()> {
    let Some(first) = objects.first() else {
        return Ok(());
    };
    let mut problems = Vec::new();
    for obj in &objects[1..] {
        for c in columns {
            let (Ok(a), Ok(b)) = (
                first.schema().field_with_name(c),
                obj.schema().field_with_name(c),
            ) else {
                continue; // missing columns were reported by check_schema
            };
            if a.data_type() != b.data_type() {
                problems.push(format!(
                    "column '{c}' is {} in {} but {} in {}",
                    a.data_type(),
                    first.uri(),
                    b.data_type(),
                    obj.uri()
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "the date's input objects do not share one schema: {}",
            problems.join("; ")
        )
    }
}

/// Output names, one per input object, checked to be distinct and to be data-file names.
fn output_names(plan: &PartitionPlan, objects: &[ParquetObject]) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(objects.len());
    for obj in objects {
        let name = output_name(&plan.input, &obj.meta.key);
        if !is_data_file(&name) {
            bail!(
                "cannot derive an output name from {} (got '{name}')",
                obj.uri()
            );
        }
        if !seen.insert(name.clone()) {
            bail!("two input objects would write the same output {name}");
        }
        names.push(name);
    }
    Ok(names)
}

/// On local storage, the run never writes or deletes through a symbolic link in its output or
/// quarantine folders (a link could lead anywhere, into the input or out of the tree), and
/// the folders are not one another, or the input, under another name.
fn check_no_aliases(plan: &PartitionPlan) -> Result<()> {
    use crate::storage::Uri;
    let local = |loc: &Location| match loc.uri() {
        Uri::Local(p) => Some(p),
        Uri::S3 { .. } => None,
    };
    let (Some(input), Some(output), Some(quarantine)) = (
        local(&plan.input),
        local(&plan.output),
        local(&plan.quarantine),
    ) else {
        return Ok(());
    };
    for dir in [&output, &quarantine] {
        if let Some(link) = find_symlink(dir)? {
            bail!(
                "{} is a symbolic link inside the output folder {}: nightshift does not write or delete through links there; replace it with a real folder",
                link.display(),
                dir.display()
            );
        }
    }
    let named = [
        ("input", &input),
        ("output", &output),
        ("quarantine", &quarantine),
    ];
    let real: Vec<_> = named
        .iter()
        .map(|(n, p)| Ok((*n, *p, real_path(p)?)))
        .collect::<Result<_>>()?;
    for (i, (a, ap, ar)) in real.iter().enumerate() {
        for (b, bp, br) in &real[i + 1..] {
            if ar.starts_with(br) || br.starts_with(ar) {
                bail!(
                    "the {a} location {} and the {b} location {} are the same folder or nest in each other once symbolic links are followed ({} and {})",
                    ap.display(),
                    bp.display(),
                    ar.display(),
                    br.display()
                );
            }
        }
    }
    Ok(())
}

/// The first symbolic link at or below `dir` (the folder itself included), not following any.
fn find_symlink(dir: &std::path::Path) -> Result<Option<std::path::PathBuf>> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if meta.file_type().is_symlink() {
        return Ok(Some(dir.to_path_buf()));
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            if let Some(link) = find_symlink(&entry?.path())? {
                return Ok(Some(link));
            }
        }
    }
    Ok(None)
}

/// A path with every symbolic link of its existing part resolved (the part that does not exist
/// yet cannot be a link).
fn real_path(p: &std::path::Path) -> Result<std::path::PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(real) => {
                let mut out = real;
                out.extend(rest.iter().rev());
                return Ok(out);
            }
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent;
                }
                _ => return Ok(abs),
            },
        }
    }
}

/// The data files under a prefix, by key.
fn stored_data_files(prefix: &Location) -> Result<HashMap<String, ObjectMeta>> {
    Ok(prefix
        .store
        .list(&prefix.key)?
        .into_iter()
        .filter(|o| is_data_file(prefix.relative(&o.key)))
        .map(|o| (o.key.clone(), o))
        .collect())
}

/// Fails unless the prefix holds exactly the expected data files.
fn check_only(
    prefix: &Location,
    stored: &HashMap<String, ObjectMeta>,
    expected: &HashSet<String>,
) -> Result<()> {
    if let Some(missing) = expected.iter().find(|k| !stored.contains_key(*k)) {
        bail!(
            "{} is missing right after it was written; not committing",
            prefix.store.uri(missing)
        );
    }
    if let Some(extra) = stored.keys().find(|k| !expected.contains(*k)) {
        bail!(
            "{} appeared in the output while the run wrote it (another writer?); not committing",
            prefix.store.uri(extra)
        );
    }
    Ok(())
}

/// Deletes the data files under a prefix that `remove` selects.
fn remove_data_files(prefix: &Location, remove: impl Fn(&str) -> bool) -> Result<()> {
    for o in prefix.store.list(&prefix.key)? {
        if is_data_file(prefix.relative(&o.key)) && remove(&o.key) {
            prefix.store.delete(&o.key)?;
        }
    }
    Ok(())
}
