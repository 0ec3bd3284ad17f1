//! One run of one job for one logical date: plan -> read -> score -> write -> record.
//!
//! Worker threads each take a unit of work (one row group of one input object), read it in
//! batches and score them; the calling thread writes the outputs in input order. Each unit
//! has a small bounded channel, so memory stays at about (threads x (one row group's projected
//! column chunks + a few batches)), however large the partition.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use tracing::{info, info_span, warn};

use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::Float64Type;

use crate::config::{JobSpec, Settings};
use crate::drift::profile::{DatasetProfile, ProfileBuilder, RowOrigin};
use crate::drift::report::{self, ReportContext};
use crate::drift::{self, DriftSummary};
use crate::model::{LoadedModel, Registry};
use crate::plan::PartitionPlan;
use crate::read::{check_schema, is_data_file, ParquetObject};
use crate::record::{
    InputFingerprint, OutputFile, RunHistory, RunManifest, RunRecord, RunStatus, SUCCESS_MARKER,
};
use crate::score::{BatchOrigin, Counts, ScoredBatch, Scorer};
use crate::storage::{Location, Stores};
use crate::write::{output_name, ParquetOutput};

/// Knobs a caller may override for one run (tests use these to vary parallelism).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub threads: Option<usize>,
    pub batch_rows: Option<usize>,
    /// Set to abort the run (the daemon's shutdown): it stops between batches, removes its
    /// outputs like any failed run, and is recorded as aborted.
    pub cancel: Option<Arc<AtomicBool>>,
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
#[error("the run was aborted before it finished (the daemon is shutting down)")]
pub struct Aborted;

/// A failed run: the record that was written for it, and the error.
#[derive(Debug)]
pub struct RunFailed {
    pub record: RunRecord,
    pub error: anyhow::Error,
}

impl std::fmt::Display for RunFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} of {} for {} failed: {:#}",
            self.record.run_id, self.record.job, self.record.logical_date, self.error
        )
    }
}

impl std::error::Error for RunFailed {}

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
        error: None,
    };
    let outcome = (|| {
        opts.check_cancelled()?;
        let plan = PartitionPlan::resolve(job, date, stores)?;
        record.partitions = plan.objects.len();
        record.output = Some(plan.output.uri().to_string());
        record.quarantine = Some(plan.quarantine.uri().to_string());
        let registry = Registry::new(stores.locate(job.registry(settings))?);
        let model = Arc::new(registry.load(&job.model)?);
        let reference = if job.drift.enabled {
            let profile = registry.profile(&model.manifest)?;
            if profile.is_none() {
                warn!(model = %job.model, "The model version has no reference profile: no drift report.");
            }
            profile
        } else {
            None
        };
        let reports = stores.locate(&settings.reports)?;
        let run = Run {
            job,
            plan: &plan,
            model,
            run_id: &run_id,
            started_at,
            opts,
            reference,
            reports,
        };
        let result = run.execute();
        if result.is_err() {
            run.clean_up();
        }
        result
    })();
    record.finished_at = Utc::now();
    record.seconds = clock.elapsed().as_secs_f64();
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
    let history = stores.locate(&settings.state).map(RunHistory::new);
    let recorded = history.and_then(|h| h.write(&record));
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
            Ok(record)
        }
        (None, Err(e)) => Err(Box::new(RunFailed {
            error: e.context("the run succeeded but its run record could not be written"),
            record,
        })),
        (Some(_), recorded) => {
            if let Err(e) = recorded {
                warn!(error = %format!("{e:#}"), "Could not write the record of a failed run.");
            }
            let error = error.expect("checked above");
            if record.status == RunStatus::Aborted {
                warn!("Run aborted; its outputs were removed.");
            } else {
                info!(error = %format!("{error:#}"), "Run failed.");
            }
            Err(Box::new(RunFailed { record, error }))
        }
    }
}

struct Run<'a> {
    job: &'a JobSpec,
    plan: &'a PartitionPlan,
    model: Arc<LoadedModel>,
    run_id: &'a str,
    started_at: chrono::DateTime<Utc>,
    opts: &'a RunOptions,
    /// The training data's profile, when this run reports drift.
    reference: Option<DatasetProfile>,
    reports: Location,
}

/// What the writer collected: the outputs, the counts, and the merged profile.
struct Written {
    files: Vec<OutputFile>,
    counts: Counts,
    profile: Option<ProfileBuilder>,
}

/// One row group of one input object, with the row number it starts at.
struct Unit {
    object: usize,
    row_group: usize,
    first_row: u64,
}

/// What a worker sends the writer: scored batches in order, then the unit's data profile.
enum Piece {
    Scored(ScoredBatch),
    Profile(Box<ProfileBuilder>),
}

type Message = Result<Piece>;

impl Run<'_> {
    fn execute(&self) -> Result<RunManifest> {
        let plan = self.plan;
        let job = self.job;
        // Read every footer and check every schema before writing anything.
        let objects = ParquetObject::open_all(&plan.input, &plan.objects)?;
        let mut scorers = Vec::with_capacity(objects.len());
        for obj in &objects {
            check_schema(
                obj.schema(),
                &self.model.manifest.signature,
                &job.output.passthrough,
                &obj.uri(),
            )?;
            scorers.push(Scorer::new(
                self.model.clone(),
                obj.schema(),
                job.output.passthrough.clone(),
                self.run_id.to_string(),
                self.started_at,
                job.run.on_bad_rows,
            )?);
        }

        // From here on the date's outputs change: without the marker, readers know the set is
        // not complete.
        let marker = plan.output.join(SUCCESS_MARKER);
        marker.store.delete(&marker.key)?;

        let mut units = Vec::new();
        for (i, obj) in objects.iter().enumerate() {
            let mut first_row = 0;
            for rg in 0..obj.num_row_groups() {
                units.push(Unit {
                    object: i,
                    row_group: rg,
                    first_row,
                });
                first_row += obj.reader_meta.metadata().row_group(rg).num_rows() as u64;
            }
        }
        let threads = self
            .opts
            .threads
            .unwrap_or_else(|| job.run.worker_threads())
            .max(1);
        let batch_rows = self.opts.batch_rows.unwrap_or(job.run.batch_rows).max(1);
        let columns = scorers
            .first()
            .map(Scorer::input_columns)
            .unwrap_or_default();

        let mut senders: Vec<Mutex<Option<SyncSender<Message>>>> = Vec::with_capacity(units.len());
        let mut receivers: Vec<Receiver<Message>> = Vec::with_capacity(units.len());
        for _ in &units {
            let (tx, rx) = sync_channel(2);
            senders.push(Mutex::new(Some(tx)));
            receivers.push(rx);
        }
        let next = AtomicUsize::new(0);
        let cancelled = AtomicBool::new(false);
        let span = tracing::Span::current();

        let written = std::thread::scope(|scope| -> Result<Written> {
            for _ in 0..threads.min(units.len()) {
                scope.spawn(|| {
                    let _entered = span.enter();
                    // Units are handed out in order, so the unit the writer waits on is always
                    // running or done: workers blocked on a full channel cannot starve it.
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= units.len()
                            || cancelled.load(Ordering::SeqCst)
                            || self.opts.cancelled()
                        {
                            break;
                        }
                        let tx = senders[i]
                            .lock()
                            .expect("sender lock")
                            .take()
                            .expect("each unit is taken once");
                        let u = &units[i];
                        let obj = &objects[u.object];
                        let profile = self.reference.as_ref().map(|r| {
                            let name = output_name(&plan.input, &obj.meta.key);
                            (ProfileBuilder::against(r), name)
                        });
                        if let Err(e) = score_unit(
                            obj,
                            &scorers[u.object],
                            u,
                            &columns,
                            batch_rows,
                            profile,
                            &tx,
                        ) {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            }
            let result = self.write_outputs(&objects, &scorers, &units, receivers);
            if result.is_err() {
                cancelled.store(true, Ordering::SeqCst);
            }
            result
        })?;
        let Written {
            files,
            counts,
            profile,
        } = written;

        let bad = counts.bad_rows();
        if bad > 0 && bad as f64 > job.run.max_bad_rows_fraction * counts.rows_in as f64 {
            bail!(
                "{bad} of {} rows ({:.2}%) could not be scored, more than max_bad_rows_fraction = {}; the bad rows are in {}",
                counts.rows_in,
                100.0 * bad as f64 / counts.rows_in as f64,
                job.run.max_bad_rows_fraction,
                plan.quarantine.uri()
            );
        }

        let drift = match (&self.reference, profile) {
            (Some(reference), Some(current)) => {
                Some(self.report_drift(reference, current.finish())?)
            }
            _ => None,
        };

        // A rerun replaces the date: outputs of input files that are gone now are stale.
        let keep: HashSet<String> = files
            .iter()
            .map(|f| plan.output.join(&f.name).key)
            .collect();
        let keep_q: HashSet<String> = files
            .iter()
            .filter_map(|f| f.quarantine.as_ref())
            .map(|q| plan.quarantine.join(q).key)
            .collect();
        remove_data_files(&plan.output, |k| !keep.contains(k))?;
        remove_data_files(&plan.quarantine, |k| !keep_q.contains(k))?;

        let manifest = RunManifest {
            job: job.name.clone(),
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
        };
        marker.store.put(
            &marker.key,
            Bytes::from(serde_json::to_vec_pretty(&manifest)?),
        )?;
        Ok(manifest)
    }

    /// Receives scored batches in input order and writes one output (and at most one
    /// quarantine file) per input object.
    fn write_outputs(
        &self,
        objects: &[ParquetObject],
        scorers: &[Scorer],
        units: &[Unit],
        receivers: Vec<Receiver<Message>>,
    ) -> Result<Written> {
        let mut files = Vec::with_capacity(objects.len());
        let mut counts = Counts::default();
        let mut profile = self.reference.as_ref().map(ProfileBuilder::against);
        let mut receivers = units.iter().zip(receivers).peekable();
        for (i, obj) in objects.iter().enumerate() {
            let name = output_name(&self.plan.input, &obj.meta.key);
            let mut output =
                ParquetOutput::create(self.plan.output.join(&name), scorers[i].output_schema())?;
            let mut quarantine: Option<ParquetOutput> = None;
            let mut file_counts = Counts::default();
            while let Some((_, rx)) = receivers.next_if(|(u, _)| u.object == i) {
                for message in rx {
                    self.opts.check_cancelled()?;
                    let scored = match message? {
                        Piece::Scored(s) => s,
                        Piece::Profile(p) => {
                            if let Some(total) = profile.as_mut() {
                                total.merge(*p);
                            }
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
            }
            let rows = output.finish()?;
            let quarantine = match quarantine {
                Some(q) => {
                    q.finish()?;
                    Some(name.clone())
                }
                None => None,
            };
            info!(file = %name, rows, rows_quarantined = file_counts.rows_quarantined, "Output committed.");
            counts.add(&file_counts);
            files.push(OutputFile {
                name,
                rows,
                input: InputFingerprint::of(&self.plan.input, &obj.meta),
                quarantine,
                rows_quarantined: file_counts.rows_quarantined,
            });
        }
        Ok(Written {
            files,
            counts,
            profile,
        })
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
        let profile_loc = report::profile_location(&self.reports, &ctx.job, ctx.logical_date);
        profile_loc
            .store
            .put(&profile_loc.key, Bytes::from(serde_json::to_vec(&current)?))?;
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

    /// After a failure: no output of this date may look complete, so the date's outputs and
    /// quarantine files go (the marker is already gone).
    fn clean_up(&self) {
        for loc in [&self.plan.output, &self.plan.quarantine] {
            if let Err(e) = remove_data_files(loc, |_| true) {
                warn!(prefix = %loc.uri(), error = %format!("{e:#}"), "Could not remove the outputs of a failed run.");
            }
        }
    }
}

fn score_unit(
    obj: &ParquetObject,
    scorer: &Scorer,
    unit: &Unit,
    columns: &[String],
    batch_rows: usize,
    mut profile: Option<(ProfileBuilder, String)>,
    tx: &SyncSender<Message>,
) -> Result<()> {
    let uri = obj.uri().to_string();
    let mut first_row = unit.first_row;
    for batch in obj.read_row_group(unit.row_group, columns, batch_rows)? {
        let batch = batch?;
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
    if let Some((builder, _)) = profile {
        let _ = tx.send(Ok(Piece::Profile(Box::new(builder))));
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
