//! Each committed date as an MLflow run (`[mlflow]` in a job file): its parameters, counts,
//! drift and performance as the run's params and metrics, its status and output as tags, and
//! the drift page as an artifact, so that a data scientist sees every night's scoring of their
//! model in the MLflow UI they already use.
//!
//! One MLflow run per job and logical date, found again by its tags: a rerun or a backfill of
//! the date updates that run (its metrics and tags; params are immutable in MLflow and keep
//! their first values) rather than logging a second one, and `evaluate` adds the realized
//! metrics to it later. Logging is best effort: the caller has committed before it logs, and
//! turns a failure into a warning.

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::artifacts::Root;
use super::{Client, Server};
use crate::storage::{ErrorKind, Stores};

/// The tags that identify a date's MLflow run.
pub const JOB_TAG: &str = "nightshift.job";
pub const DATE_TAG: &str = "nightshift.logical_date";

/// What one committed run logs.
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    pub job: String,
    /// `YYYY-MM-DD`.
    pub logical_date: String,
    /// Logged once per MLflow run (params never change in MLflow): later runs of the date add
    /// only those it lacks.
    pub params: Vec<(String, String)>,
    pub metrics: Vec<(String, f64)>,
    pub tags: Vec<(String, String)>,
    /// File name and bytes, uploaded to the run's artifacts.
    pub artifacts: Vec<(String, Bytes)>,
    /// Milliseconds since the epoch: the MLflow run's start (when created) and end.
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Debug, Deserialize)]
struct RunInfo {
    run_id: String,
    #[serde(default)]
    artifact_uri: String,
}

#[derive(Debug, Deserialize)]
struct RunAnswer {
    run: RunBody,
}

#[derive(Debug, Deserialize)]
struct RunBody {
    info: RunInfo,
    #[serde(default)]
    data: RunData,
}

#[derive(Debug, Default, Deserialize)]
struct RunData {
    #[serde(default)]
    params: Vec<KeyValue>,
}

#[derive(Debug, Deserialize)]
struct KeyValue {
    key: String,
}

pub struct Tracker<'a> {
    client: Client,
    experiment: String,
    stores: &'a Stores,
}

impl<'a> Tracker<'a> {
    pub fn new(server: &Server, experiment: &str, stores: &'a Stores) -> Result<Self> {
        Ok(Tracker {
            client: Client::new(server)?,
            experiment: experiment.to_string(),
            stores,
        })
    }

    /// The experiment's id, creating the experiment the first time.
    fn experiment_id(&self) -> Result<String> {
        let by_name = |c: &Client| -> Result<Option<String>> {
            match c.get::<Value>(
                "api/2.0/mlflow/experiments/get-by-name",
                &[("experiment_name", &self.experiment)],
            ) {
                Ok(v) => Ok(v["experiment"]["experiment_id"]
                    .as_str()
                    .map(str::to_string)),
                Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => Ok(None),
                Err(e) => Err(e),
            }
        };
        if let Some(id) = by_name(&self.client)? {
            return Ok(id);
        }
        let created: Result<Value> = self.client.post(
            "api/2.0/mlflow/experiments/create",
            &json!({ "name": self.experiment }),
        );
        match created {
            Ok(v) => v["experiment_id"]
                .as_str()
                .map(str::to_string)
                .context("experiments/create answered no experiment_id"),
            // Another runner created it first.
            Err(e) => by_name(&self.client)?.ok_or(e),
        }
    }

    /// The date's MLflow run, if one was logged.
    fn find(&self, experiment_id: &str, job: &str, date: &str) -> Result<Option<RunBody>> {
        #[derive(Deserialize)]
        struct Found {
            #[serde(default)]
            runs: Vec<RunBody>,
        }
        let filter = format!(
            "tags.`{JOB_TAG}` = '{}' and tags.`{DATE_TAG}` = '{}'",
            quote(job),
            quote(date)
        );
        let found: Found = self.client.post(
            "api/2.0/mlflow/runs/search",
            &json!({
                "experiment_ids": [experiment_id],
                "filter": filter,
                "max_results": 1,
                "order_by": ["attributes.start_time ASC"],
            }),
        )?;
        Ok(found.runs.into_iter().next())
    }

    /// Logs a committed run: to the date's MLflow run if there is one, to a new one if not.
    /// Returns the MLflow run's id.
    pub fn log(&self, log: &RunLog) -> Result<String> {
        let experiment_id = self.experiment_id()?;
        let (info, logged_params) = match self.find(&experiment_id, &log.job, &log.logical_date)? {
            Some(run) => (run.info, run.data.params),
            None => {
                let answer: RunAnswer = self.client.post(
                    "api/2.0/mlflow/runs/create",
                    &json!({
                        "experiment_id": experiment_id,
                        "run_name": format!("{} {}", log.job, log.logical_date),
                        "start_time": log.start_ms,
                        "tags": [
                            { "key": JOB_TAG, "value": log.job },
                            { "key": DATE_TAG, "value": log.logical_date },
                        ],
                    }),
                )?;
                (answer.run.info, Vec::new())
            }
        };
        let kv = |pairs: &[(String, String)]| -> Vec<Value> {
            pairs
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect()
        };
        let metrics: Vec<Value> = log
            .metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({ "key": k, "value": v, "timestamp": log.end_ms, "step": 0 }))
            .collect();
        // Params never change in MLflow: log those the run does not have yet (all, the first
        // time; any a failed first attempt left out, later).
        let missing: Vec<(String, String)> = log
            .params
            .iter()
            .filter(|(k, _)| !logged_params.iter().any(|p| p.key == *k))
            .cloned()
            .collect();
        let params = kv(&missing);
        let _: Value = self.client.post(
            "api/2.0/mlflow/runs/log-batch",
            &json!({
                "run_id": info.run_id,
                "params": params,
                "metrics": metrics,
                "tags": kv(&log.tags),
            }),
        )?;
        if !log.artifacts.is_empty() {
            let root = Root::parse(&info.artifact_uri, self.stores)?;
            if let Root::Store(loc) = &root {
                if !loc.uri().to_string().starts_with("s3://") {
                    // A path of the tracking server's own, which nightshift's host may also
                    // have: writing there would say "logged" and put it nowhere MLflow reads.
                    anyhow::bail!(
                        "MLflow keeps run {}'s artifacts at the path {}, which only the server \
                         can write; serve artifacts through the server (mlflow server \
                         --serve-artifacts) or on S3",
                        info.run_id,
                        info.artifact_uri
                    );
                }
            }
            for (name, bytes) in &log.artifacts {
                root.put(&self.client, name, bytes.clone())
                    .with_context(|| format!("uploading {name} to MLflow run {}", info.run_id))?;
            }
        }
        let _: Value = self.client.post(
            "api/2.0/mlflow/runs/update",
            &json!({ "run_id": info.run_id, "status": "FINISHED", "end_time": log.end_ms }),
        )?;
        Ok(info.run_id)
    }

    /// Adds metrics (and tags) to the date's MLflow run; `None` when the date has none.
    pub fn add_metrics(
        &self,
        job: &str,
        date: &str,
        metrics: &[(String, f64)],
        tags: &[(String, String)],
        at_ms: i64,
    ) -> Result<Option<String>> {
        let experiment_id = self.experiment_id()?;
        let Some(info) = self.find(&experiment_id, job, date)?.map(|r| r.info) else {
            return Ok(None);
        };
        let _: Value = self.client.post(
            "api/2.0/mlflow/runs/log-batch",
            &json!({
                "run_id": info.run_id,
                "metrics": metrics
                    .iter()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(k, v)| json!({ "key": k, "value": v, "timestamp": at_ms, "step": 0 }))
                    .collect::<Vec<_>>(),
                "tags": tags
                    .iter()
                    .map(|(k, v)| json!({ "key": k, "value": v }))
                    .collect::<Vec<_>>(),
            }),
        )?;
        Ok(Some(info.run_id))
    }
}

/// A value inside single quotes of MLflow's search filter.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}
