//! What a run leaves behind besides its outputs: the `_SUCCESS` manifest in the output prefix
//! (written last, so its presence means the set of outputs is complete) and a run record in
//! the state location for every run, successful or not.
//!
//! Run records live at `STATE/runs/JOB/DATE/RUN_ID.json`.

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Succeeded,
    Failed,
    /// Stopped on purpose (the daemon shut down); its outputs were removed.
    Aborted,
}

/// What a date's output prefix holds after a run, as far as this run knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateState {
    /// The run failed before it changed anything: the previous outputs and their `_SUCCESS`
    /// (if any) are exactly as they were.
    Untouched,
    /// This run's outputs and its `_SUCCESS`.
    Committed,
    /// The run failed after it began writing: no `_SUCCESS`, and its outputs were removed.
    Cleared,
    /// The run failed after it began writing and could not remove every output: no
    /// `_SUCCESS`, so readers must not trust what is there; the next run replaces it.
    Incomplete,
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
    /// The error chain, for failed runs.
    pub error: Option<String>,
    /// What the date's output prefix holds now (absent in records of older versions).
    #[serde(default)]
    pub date_state: Option<DateState>,
    /// Temporary objects of crashed runs (`_tmp.` files, open multipart uploads) that this
    /// run removed from its output and quarantine prefixes.
    #[serde(default)]
    pub leftovers_removed: u64,
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
pub struct RunHistory {
    root: Location,
}

impl RunHistory {
    pub fn new(state: Location) -> Self {
        Self {
            root: state.join("runs"),
        }
    }

    pub fn write(&self, record: &RunRecord) -> Result<Location> {
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

    /// Every record of a job, oldest first.
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
}
