//! Planning a run: which logical date, which input objects, and where outputs go.

use anyhow::Result;
use chrono::{DateTime, NaiveDate, Utc};

use crate::config::JobSpec;
use crate::read::list_data_files;
use crate::storage::{ErrorKind, Location, ObjectMeta, Stores};

/// The date's input is not there (yet): upstream may still deliver it, so a later attempt
/// may succeed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoInput(String);

/// One run's inputs and destinations, resolved for its logical date.
#[derive(Debug, Clone)]
pub struct PartitionPlan {
    pub job: String,
    pub date: NaiveDate,
    pub input: Location,
    pub output: Location,
    pub quarantine: Location,
    /// Input objects, sorted by key.
    pub objects: Vec<ObjectMeta>,
}

impl PartitionPlan {
    pub fn resolve(job: &JobSpec, date: NaiveDate, stores: &Stores) -> Result<Self> {
        let input = stores.locate(&job.input.uri(&job.name, date)?)?;
        let output = stores.locate(&job.output.uri.uri(&job.name, date)?)?;
        let quarantine = stores.locate(&job.output.quarantine.uri(&job.name, date)?)?;
        let objects = match list_data_files(&input) {
            Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => {
                return Err(NoInput(format!("{e:#}")).into())
            }
            listed => listed?,
        };
        if objects.is_empty() {
            return Err(NoInput(format!(
                "no Parquet files for {date} at {}: nothing to score",
                input.uri()
            ))
            .into());
        }
        Ok(Self {
            job: job.name.clone(),
            date,
            input,
            output,
            quarantine,
            objects,
        })
    }
}

/// The logical date a tick at `now` scores, by the job's time zone and date rule.
pub fn logical_date(job: &JobSpec, now: DateTime<Utc>) -> NaiveDate {
    job.date
        .logical_date(now.with_timezone(&job.timezone).date_naive())
}
