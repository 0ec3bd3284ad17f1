//! Backfills: one job over a range of logical dates, each date a run of its own through
//! [`run_job`] (its own lease, run record and `_SUCCESS`), several dates at once.
//!
//! A backfill first plans: for every date, whether to run it and why, from what the date's
//! `_SUCCESS` and run records say. A backfill that was killed is resumed by running it again:
//! the dates it committed are skipped (the default `--reprocess none`), the rest run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::NaiveDate;
use serde::Serialize;

use crate::config::{JobSpec, Settings};
use crate::model::ModelSource;
use crate::read::{list_data_files, ParquetObject};
use crate::record::{
    InputFingerprint, RunHistory, RunManifest, RunRecord, RunStatus, SUCCESS_MARKER,
};
use crate::run::{run_job, RunFailed, RunOptions};
use crate::schema::ModelRef;
use crate::storage::{ErrorKind, Location, Stores};

/// Which dates of the range run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reprocess {
    /// Dates already committed are skipped, and so are dates whose last run failed (a
    /// mistake to look at first); everything else runs.
    None,
    /// Dates already committed are skipped; everything else runs, failed dates included.
    Failed,
    /// Dates run unless committed by the model version the job pins, from the same inputs.
    Stale,
    /// Every date runs.
    All,
}

/// What the backfill does with one date, and why, in the user's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "reason", rename_all = "lowercase")]
pub enum Action {
    Run(String),
    Skip(String),
}

impl Action {
    pub fn runs(&self) -> bool {
        matches!(self, Action::Run(_))
    }
}

/// One date of a backfill's plan.
#[derive(Debug, Clone, Serialize)]
pub struct DatePlan {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub action: Action,
    /// Input objects found for the date.
    pub inputs: usize,
    pub bytes: u64,
    /// Rows in the inputs, from their Parquet footers (estimated plans only).
    pub rows: Option<u64>,
}

/// Every date from `from` to `to`, inclusive.
pub fn dates(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).collect()
}

/// Decides, for each date of the range, whether it runs. With `estimate`, reads the inputs'
/// footers for their row counts (one request per object on S3).
pub fn plan(
    job: &JobSpec,
    settings: &Settings,
    stores: &Stores,
    range: &[NaiveDate],
    reprocess: Reprocess,
    estimate: bool,
) -> Result<Vec<DatePlan>> {
    let history = RunHistory::new(stores.locate(&settings.state)?);
    // The version the job means now, once for the whole range (an alias asks MLflow), and
    // the MLflow server it comes from (none: nightshift's own registry).
    let wanted = match reprocess {
        Reprocess::Stale => Some(Wanted {
            model: ModelSource::for_job(job, settings, stores)?
                .resolve(&job.model)
                .with_context(|| format!("resolving the model of job '{}'", job.name))?,
            server: match job.registry(settings) {
                crate::config::ModelRegistry::Mlflow(s) => Some(s.to_string()),
                crate::config::ModelRegistry::Store(_) => None,
            },
        }),
        _ => None,
    };
    let mut plans = Vec::with_capacity(range.len());
    for &date in range {
        let input = stores.locate(&job.input.uri(&job.name, date)?)?;
        let objects = match list_data_files(&input) {
            Ok(objects) => objects,
            Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        let output = stores.locate(&job.output.uri.uri(&job.name, date)?)?;
        let manifest = read_manifest(&output)?;
        let last = history.latest_of_date(&job.name, date)?;
        let mut action = decide(
            job,
            wanted.as_ref(),
            reprocess,
            manifest.as_ref(),
            last.as_ref(),
            &input,
            &objects,
        );
        if let Action::Run(why) = &mut action {
            if objects.is_empty() {
                why.push_str("; no input yet: it will fail");
            }
        }
        let rows = if estimate && !objects.is_empty() {
            let opened = ParquetObject::open_all(&input, &objects)?;
            Some(opened.iter().map(ParquetObject::num_rows).sum())
        } else {
            None
        };
        plans.push(DatePlan {
            date,
            action,
            inputs: objects.len(),
            bytes: objects.iter().map(|o| o.size).sum(),
            rows,
        });
    }
    Ok(plans)
}

/// What `--reprocess stale` compares a date's `_SUCCESS` with.
struct Wanted {
    model: ModelRef,
    /// The MLflow server the job's model comes from; `None` for nightshift's registry.
    server: Option<String>,
}

fn decide(
    job: &JobSpec,
    wanted: Option<&Wanted>,
    reprocess: Reprocess,
    manifest: Option<&RunManifest>,
    last: Option<&RunRecord>,
    input: &Location,
    objects: &[crate::storage::ObjectMeta],
) -> Action {
    if reprocess == Reprocess::All {
        return Action::Run("--reprocess all".into());
    }
    if let Some(m) = manifest {
        if reprocess != Reprocess::Stale {
            return Action::Skip(format!("committed by run {}", m.run_id));
        }
        let Some(Wanted {
            model: pinned,
            server,
        }) = wanted
        else {
            return Action::Run(format!(
                "stale: the job's model {} is not resolved",
                job.model
            ));
        };
        // The same name and number in another registry is another model.
        let scored_in = m.mlflow.as_ref().map(|p| p.server.as_str());
        if scored_in != server.as_deref() {
            let place = |s: Option<&str>| {
                s.map_or("nightshift's registry".to_string(), |s| {
                    format!("MLflow at {s}")
                })
            };
            return Action::Run(format!(
                "stale: scored with a model from {}, the job's comes from {}",
                place(scored_in),
                place(server.as_deref())
            ));
        }
        if m.model_name != pinned.name || m.model_version != pinned.version {
            let means = if job.model.version().as_ref() == Some(pinned) {
                String::new()
            } else {
                format!(" (now {pinned})")
            };
            return Action::Run(format!(
                "stale: scored by {}@{}, the job pins {}{means}",
                m.model_name, m.model_version, job.model
            ));
        }
        let then: BTreeMap<&str, &InputFingerprint> = m
            .files
            .iter()
            .map(|f| (f.input.uri.as_str(), &f.input))
            .collect();
        let now: Vec<InputFingerprint> = objects
            .iter()
            .map(|o| InputFingerprint::of(input, o))
            .collect();
        let now_uris: BTreeSet<&str> = now.iter().map(|f| f.uri.as_str()).collect();
        let added = now
            .iter()
            .filter(|f| !then.contains_key(f.uri.as_str()))
            .count();
        let gone = then.keys().filter(|u| !now_uris.contains(*u)).count();
        let changed = now
            .iter()
            .filter(|f| then.get(f.uri.as_str()).is_some_and(|t| **t != **f))
            .count();
        if added + gone + changed > 0 {
            return Action::Run(format!(
                "stale: inputs changed since run {} ({added} new, {gone} gone, {changed} changed)",
                m.run_id
            ));
        }
        return Action::Skip(format!(
            "fresh: committed by run {} with {pinned} from the same inputs",
            m.run_id
        ));
    }
    match last {
        None => Action::Run("never run".into()),
        Some(r) if r.status == RunStatus::Failed && reprocess == Reprocess::None => {
            Action::Skip(format!(
                "last run {} failed; --reprocess failed runs it again",
                r.run_id
            ))
        }
        Some(r) => Action::Run(format!(
            "not committed (last run {} {})",
            r.run_id, r.status
        )),
    }
}

/// The date's `_SUCCESS`, if it has one. An unreadable one counts as none: the date runs.
fn read_manifest(output: &Location) -> Result<Option<RunManifest>> {
    let marker = output.join(SUCCESS_MARKER);
    match marker.store.get(&marker.key) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How one planned date ended.
#[derive(Debug)]
pub enum DateOutcome {
    Succeeded(Box<RunRecord>),
    Failed(Box<RunFailed>),
    /// Not started: the backfill was stopped first.
    NotStarted,
}

/// How many dates run at once, and the worker threads they share.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub parallel: usize,
    pub threads: usize,
}

/// Runs the dates of `plans` that run, `pace.parallel` at once, each with its share of the
/// threads. `done` is called as each date ends (from the worker threads). Setting `cancel`
/// stops the backfill: no date starts after it, and runs in flight are aborted.
pub fn execute(
    job: &JobSpec,
    settings: &Settings,
    stores: &Stores,
    plans: &[DatePlan],
    pace: Pace,
    cancel: Arc<AtomicBool>,
    done: &(dyn Fn(NaiveDate, &DateOutcome) + Sync),
) -> Vec<(NaiveDate, DateOutcome)> {
    let to_run: Vec<NaiveDate> = plans
        .iter()
        .filter(|p| p.action.runs())
        .map(|p| p.date)
        .collect();
    let parallel = pace.parallel.clamp(1, to_run.len().max(1));
    let opts = RunOptions {
        threads: Some((pace.threads / parallel).max(1)),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<(NaiveDate, DateOutcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&date) = to_run.get(i) else { break };
                let outcome = if cancel.load(Ordering::SeqCst) {
                    DateOutcome::NotStarted
                } else {
                    match run_job(job, date, settings, stores, &opts) {
                        Ok(r) => DateOutcome::Succeeded(Box::new(r)),
                        Err(f) => DateOutcome::Failed(f),
                    }
                };
                done(date, &outcome);
                outcomes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((date, outcome));
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.sort_by_key(|(d, _)| *d);
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(dates(d("2026-02-27"), d("2026-03-01")).len(), 3);
        assert_eq!(dates(d("2026-03-01"), d("2026-03-01")).len(), 1);
        assert!(dates(d("2026-03-02"), d("2026-03-01")).is_empty());
    }
}
