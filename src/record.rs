//! What a run leaves behind besides its outputs: the `_SUCCESS` manifest in the output prefix
//! (written last, so its presence means the set of outputs is complete) and a run record in
//! the state location for every run, successful or not.
//!
//! Run records live at `STATE/runs/JOB/DATE/RUN_ID.json`.

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::drift::DriftSummary;
use crate::score::Counts;
use crate::storage::{Location, ObjectMeta};

pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// One input object as it was read, so a later run can tell whether the input changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFingerprint {
    pub uri: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    pub etag: String,
}

impl InputFingerprint {
    pub fn of(loc: &Location, meta: &ObjectMeta) -> Self {
        Self {
            uri: loc.store.uri(&meta.key).to_string(),
            size: meta.size,
            last_modified: meta.last_modified,
            etag: meta.etag.clone(),
        }
    }
}

/// An object a run committed, as the store reported it after the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    /// Name relative to its prefix (the output or the quarantine prefix).
    pub name: String,
    pub size: u64,
    /// The store's ETag; empty on local storage.
    pub etag: String,
}

/// One output file of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Name relative to the output prefix.
    pub name: String,
    pub rows: u64,
    pub size: u64,
    /// The store's ETag; empty on local storage.
    pub etag: String,
    pub input: InputFingerprint,
    /// Quarantine file for this input, if it had bad rows.
    pub quarantine: Option<StoredObject>,
    pub rows_quarantined: u64,
}

/// The `_SUCCESS` manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub job: String,
    pub logical_date: NaiveDate,
    pub run_id: String,
    pub model_name: String,
    pub model_version: u32,
    pub model_sha256: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub counts: Counts,
    pub files: Vec<OutputFile>,
    pub quarantine_prefix: String,
    /// The drift verdict, when the run reported drift.
    pub drift: Option<DriftSummary>,
    /// For a date scored by a sharded run: how many shards, and their run key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardSet>,
    /// For a model from MLflow: the server, name, version (an alias resolved), run and
    /// `model_uuid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<crate::mlflow::Provenance>,
}

/// Its name in run records, logs and metric labels: serde and strum spell it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum RunStatus {
    Succeeded,
    Failed,
    /// Stopped on purpose (the daemon shut down); its outputs were removed.
    Aborted,
}

/// What a date's output prefix holds after a run, as far as this run knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DateState {
    /// The run failed before it changed anything: the previous outputs and their `_SUCCESS`
    /// (if any) are exactly as they were.
    Untouched,
    /// This run's outputs and its `_SUCCESS`.
    Committed,
    /// The run failed after it began writing: no `_SUCCESS`, and its outputs were removed.
    Cleared,
    /// The run failed after it began writing and could not remove every output; a
    /// `_SUCCESS` there (if the failure came after it was written) is still true, and without
    /// one readers must not trust what is there; the next run replaces it.
    Incomplete,
    /// A shard's outputs and manifest are written; the date's `_SUCCESS` waits for the other
    /// shards of its run (the last one writes it).
    ShardDone,
    /// The run lost its lease to another runner (it stalled longer than the lease ttl): the
    /// date is that runner's, and this run left it alone.
    HandedOver,
}

/// What every run records, successful or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub job: String,
    pub logical_date: NaiveDate,
    pub run_id: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
    pub model: String,
    pub partitions: usize,
    pub counts: Counts,
    pub output: Option<String>,
    pub quarantine: Option<String>,
    /// The drift verdict, when the run reported drift.
    #[serde(default)]
    pub drift: Option<DriftSummary>,
    /// Why a run with drift enabled wrote no drift report (its model version has no
    /// reference profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_drift_report: Option<String>,
    /// The error chain, for failed runs.
    pub error: Option<String>,
    /// What the date's output prefix holds now (absent in records of older versions).
    #[serde(default)]
    pub date_state: Option<DateState>,
    /// Temporary objects of crashed runs (`_tmp.` files, open multipart uploads) that this
    /// run removed from its output and quarantine prefixes.
    #[serde(default)]
    pub leftovers_removed: u64,
    /// The shard this run scored, for a sharded run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// For a model from MLflow: where the version came from (as in `_SUCCESS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<crate::mlflow::Provenance>,
    /// For a job with `[mlflow]`: whether the committed run was logged there. Not stored:
    /// logging comes after the record is written, and the daemon counts failures.
    #[serde(skip)]
    pub mlflow_log: Option<MlflowLog>,
    /// How long each stage took, in order (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageTime>,
}

/// One stage of a run and its wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
}

/// Times a run's stages as it goes: each lap is the time since the previous one (or since
/// the start), so the stages add up to the run.
#[derive(Debug)]
pub struct Stages(std::sync::Mutex<(std::time::Instant, Vec<StageTime>)>);

impl Stages {
    pub fn start() -> Self {
        Self(std::sync::Mutex::new((
            std::time::Instant::now(),
            Vec::new(),
        )))
    }

    /// Ends the stage called `stage` now.
    pub fn lap(&self, stage: &str) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let seconds = now.duration_since(g.0).as_secs_f64();
        g.0 = now;
        g.1.push(StageTime {
            stage: stage.to_string(),
            seconds,
        });
    }

    pub fn times(&self) -> Vec<StageTime> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).1.clone()
    }
}

/// How logging a committed run to MLflow went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MlflowLog {
    Logged {
        run_id: String,
    },
    Failed {
        error: String,
    },
    /// Not logged: another run committed the date since, and logs it.
    Superseded,
}

impl RunRecord {
    pub fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.counts.rows_in as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Reads and writes run records under the state location.
///
/// Records pile up (one per attempt, forever), so what the daemon reads at start and for
/// `GET /jobs` is never all of them: the listing gives each record's date and run id (from its
/// key, `JOB/DATE/RUN_ID.json`), run ids start with the start time, and only the newest few
/// are read, plus the few that catch-up needs beyond them ([`RunHistory::for_catch_up`]). A
/// record that cannot be read or parsed is skipped with a warning naming it.
///
/// An aborted run also leaves an empty marker, `STATE/aborted/JOB/DATE/RUN_ID`, so that a
/// date whose latest run was aborted is found from listings however old it is.
pub struct RunHistory {
    root: Location,
    aborted: Location,
}

/// A record known from the listing, not read yet.
#[derive(Debug, Clone)]
pub(crate) struct RecordKey {
    pub key: String,
    pub date: NaiveDate,
    pub run_id: String,
    /// What the listing said of the object: a cached copy is used only while it matches.
    pub version: Version,
}

/// An object's size, modification time and ETag, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    pub etag: String,
}

impl Version {
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            size: meta.size,
            last_modified: meta.last_modified,
            etag: meta.etag.clone(),
        }
    }
}

/// Parsed run records kept between calls of [`RunHistory::latest_cached`], so that a caller
/// asking again and again (the daemon's `/jobs`) reads and parses only the records written
/// since. An entry is used only while the listing shows the object unchanged (size, time and
/// ETag), and each job keeps only the entries its last call used: the cache holds at most
/// `2 n` records per job.
#[derive(Debug, Default)]
pub struct RecordCache {
    jobs: std::sync::Mutex<std::collections::HashMap<String, Vec<(RecordKey, RunRecord)>>>,
}

impl RecordCache {
    /// Forgets the jobs not named (removed from the daemon's job files).
    pub fn keep_jobs(&self, names: &[String]) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.retain(|job, _| names.contains(job));
    }
}

/// Records read past the newest ones at most, looking for the last succeeded run (for the
/// `nightshift_last_success_timestamp_seconds` metric) when none of them succeeded.
const MAX_SUCCESS_SEARCH: usize = 500;

impl RunHistory {
    pub fn new(state: Location) -> Self {
        Self {
            root: state.join("runs"),
            aborted: state.join("aborted"),
        }
    }

    pub fn write(&self, record: &RunRecord) -> Result<Location> {
        if record.status == RunStatus::Aborted {
            // Before the record: a marker without its record is ignored, a record without its
            // marker is only found among the newest.
            let marker = self
                .aborted
                .join(&record.job)
                .join(&record.logical_date.to_string())
                .join(&record.run_id);
            if let Err(e) = marker.store.put(&marker.key, Bytes::new()) {
                warn!(marker = %marker.uri(), error = %format!("{e:#}"), "Could not mark an aborted run.");
            }
        }
        let loc = self
            .root
            .join(&record.job)
            .join(&record.logical_date.to_string())
            .join(&format!("{}.json", record.run_id));
        let body = Bytes::from(serde_json::to_vec_pretty(record)?);
        loc.store
            .put(&loc.key, body)
            .with_context(|| format!("writing run record {}", loc.uri()))?;
        Ok(loc)
    }

    /// Every record of a job, oldest first. Reads them all and fails on the first one it
    /// cannot parse: for tools, not for the daemon (see [`RunHistory::latest`]).
    pub fn list(&self, job: &str) -> Result<Vec<RunRecord>> {
        let dir = self.root.join(job);
        let mut out = Vec::new();
        for o in dir.store.list(&dir.key)? {
            if !o.key.ends_with(".json") {
                continue;
            }
            let bytes = dir.store.get(&o.key)?;
            let rec: RunRecord = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading run record {}", dir.store.uri(&o.key)))?;
            out.push(rec);
        }
        out.sort_by_key(|r| r.started_at);
        Ok(out)
    }

    /// The job's records as the listing shows them, newest first (by run id, which starts
    /// with the start time). Objects not laid out as `DATE/RUN_ID.json` are not records
    /// (temporary files of a write in progress among them).
    pub(crate) fn keys(&self, job: &str) -> Result<Vec<RecordKey>> {
        let mut keys = listed(&self.root.join(job), ".json")?;
        keys.sort_by(|a, b| (&b.run_id, &b.key).cmp(&(&a.run_id, &a.key)));
        Ok(keys)
    }

    /// Reads one record; an unreadable one is logged (naming it) and skipped.
    pub(crate) fn read(&self, k: &RecordKey) -> Option<RunRecord> {
        let parsed = self.root.store.get(&k.key).and_then(|bytes| {
            serde_json::from_slice::<RunRecord>(&bytes).map_err(anyhow::Error::from)
        });
        match parsed {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(
                    record = %self.root.store.uri(&k.key),
                    error = %format!("{e:#}"),
                    "Skipping a run record that cannot be read."
                );
                None
            }
        }
    }

    /// The record of a run, by its id, under any job and date.
    pub fn find(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let name = format!("{run_id}.json");
        for o in self.root.store.list(&self.root.key)? {
            if o.key.rsplit('/').next() == Some(name.as_str()) {
                let bytes = self.root.store.get(&o.key)?;
                return Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("reading run record {}", self.root.store.uri(&o.key))
                })?));
            }
        }
        Ok(None)
    }

    /// The latest readable record of a job and date.
    pub fn latest_of_date(&self, job: &str, date: NaiveDate) -> Result<Option<RunRecord>> {
        let dir = self.root.join(job).join(&date.to_string());
        let mut newest: Option<RunRecord> = None;
        for o in dir.store.list(&dir.key)? {
            if !o.key.ends_with(".json") {
                continue;
            }
            let Ok(bytes) = dir.store.get(&o.key) else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<RunRecord>(&bytes) {
                if newest.as_ref().is_none_or(|n| r.started_at > n.started_at) {
                    newest = Some(r);
                }
            }
        }
        Ok(newest)
    }

    /// The job's `n` newest readable records (by start), oldest first. Reads about `n`
    /// records however many there are; unreadable ones are skipped (and replaced by older
    /// ones, up to `n` more reads).
    pub fn latest(&self, job: &str, n: usize) -> Result<Vec<RunRecord>> {
        self.latest_cached(job, n, &RecordCache::default())
    }

    /// [`RunHistory::latest`], reading only the records that `cache` does not hold as listed.
    pub fn latest_cached(
        &self,
        job: &str,
        n: usize,
        cache: &RecordCache,
    ) -> Result<Vec<RunRecord>> {
        let keys = self.keys(job)?;
        let before = {
            let mut jobs = cache.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.remove(job).unwrap_or_default()
        };
        let mut used: Vec<(RecordKey, RunRecord)> = Vec::with_capacity(n.min(1024));
        let mut out = Vec::with_capacity(n.min(1024));
        for k in keys.iter().take(2 * n) {
            if out.len() == n {
                break;
            }
            let cached = before
                .iter()
                .find(|(c, _)| c.key == k.key && c.version == k.version)
                .map(|(_, r)| r.clone());
            if let Some(r) = cached.or_else(|| self.read(k)) {
                used.push((k.clone(), r.clone()));
                out.push(r);
            }
        }
        cache
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.to_string(), used);
        out.sort_by_key(|r| r.started_at);
        Ok(out)
    }

    /// What the daemon needs at start, oldest first, without reading every record: the `n`
    /// newest records; every record of the latest date that has a finished (not aborted) run,
    /// down to that run; the latest run of every date whose latest run was aborted (known from
    /// the markers); and, if none of those succeeded, older records until one that did (at
    /// most [`MAX_SUCCESS_SEARCH`] more), for the last-success metric. So
    /// the daemon's catch-up (`missed_dates`) sees the latest date done, every date whose
    /// latest run was aborted, and for every date it sees, that date's latest run.
    ///
    /// (Aborted runs recorded by versions without markers are found among the `n` newest.)
    pub fn for_catch_up(&self, job: &str, n: usize) -> Result<Vec<RunRecord>> {
        let keys = self.keys(job)?;
        let mut read = vec![false; keys.len()];
        let mut out: Vec<RunRecord> = Vec::new();
        // Reads key i once; its status if it was read now.
        let take = |i: usize, read: &mut [bool], out: &mut Vec<RunRecord>| {
            if std::mem::replace(&mut read[i], true) {
                return None;
            }
            let r = self.read(&keys[i])?;
            let status = r.status;
            out.push(r);
            Some(status)
        };
        // The newest n: every date among them has its latest run here too.
        for i in 0..keys.len().min(n) {
            take(i, &mut read, &mut out);
        }
        // The latest date done. Dates after the newest runs' latest done date can only be
        // known done by reading their records, newest first, until a finished one.
        let done_here = out
            .iter()
            .filter(|r| r.status != RunStatus::Aborted)
            .map(|r| r.logical_date)
            .max();
        let mut dates: Vec<NaiveDate> = keys.iter().map(|k| k.date).collect();
        dates.sort_unstable_by(|a, b| b.cmp(a));
        dates.dedup();
        'dates: for date in dates {
            if done_here.is_some_and(|d| date <= d) {
                break;
            }
            for i in (0..keys.len()).filter(|&i| keys[i].date == date) {
                if matches!(take(i, &mut read, &mut out), Some(s) if s != RunStatus::Aborted) {
                    break 'dates;
                }
            }
        }
        // Dates whose latest run was aborted, however old: from the markers, each checked
        // against the listing (a later run of the date supersedes it) and read.
        match listed(&self.aborted.join(job), "") {
            Ok(markers) => {
                for m in markers {
                    // Keys are newest first: the first of the date is its latest run.
                    let latest = keys.iter().position(|k| k.date == m.date);
                    if let Some(i) = latest.filter(|&i| keys[i].run_id == m.run_id) {
                        take(i, &mut read, &mut out);
                    }
                }
            }
            Err(e) => warn!(
                job = %job,
                error = %format!("{e:#}"),
                "Cannot list the markers of aborted runs; only the newest runs are looked at."
            ),
        }
        // The last success, for its metric, within reason.
        if !out.iter().any(|r| r.status == RunStatus::Succeeded) {
            let mut looked = 0;
            for i in 0..keys.len() {
                if read[i] {
                    continue;
                }
                if looked == MAX_SUCCESS_SEARCH {
                    break;
                }
                looked += 1;
                if take(i, &mut read, &mut out) == Some(RunStatus::Succeeded) {
                    break;
                }
            }
        }
        out.sort_by_key(|r| r.started_at);
        Ok(out)
    }
}

/// Objects under `dir` laid out as `DATE/RUN_ID{suffix}`; others are skipped.
fn listed(dir: &Location, suffix: &str) -> Result<Vec<RecordKey>> {
    Ok(dir
        .store
        .list(&dir.key)?
        .into_iter()
        .filter_map(|o| {
            let rel = dir.relative(&o.key);
            let (date, file) = rel.split_once('/')?;
            let run_id = file.strip_suffix(suffix)?;
            if run_id.is_empty() || run_id.contains('/') || run_id.starts_with(['.', '_']) {
                return None;
            }
            let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
            Some(RecordKey {
                run_id: run_id.to_string(),
                date,
                version: Version::of(&o),
                key: o.key,
            })
        })
        .collect())
}

// The types of a sharded run as records hold them; `shard` splits and commits the work.

/// This process's share of a sharded run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
    /// Shared by all shards of one sharded run.
    pub run: String,
}

/// In a sharded date's `_SUCCESS`: how many shards, and their run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSet {
    pub count: u32,
    pub run: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run records (serde) and metric labels (strum) name a status the same way.
    #[test]
    fn a_status_has_one_name() {
        for s in [RunStatus::Succeeded, RunStatus::Failed, RunStatus::Aborted] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.to_string())
            );
        }
        for s in [
            DateState::Untouched,
            DateState::Committed,
            DateState::Cleared,
            DateState::Incomplete,
            DateState::ShardDone,
            DateState::HandedOver,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.to_string())
            );
        }
    }
}
