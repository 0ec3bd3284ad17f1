//! The daemon's HTTP API (axum): health, readiness, metrics, jobs and their runs, manual
//! triggers and online scoring. Every answer but `/metrics` and `/healthz` is JSON; errors are
//! `{"error": "..."}` with a status that says whose fault it is.
//!
//! Storage and models are blocking, so handlers that touch them run on tokio's blocking pool.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{error, warn};

use super::metrics::Metrics;
use super::predict::{self, ModelCache, ModelError};
use super::scheduler::{Accepted, Scheduler, TriggerError};
use crate::config::{ModelRef, Settings};
use crate::model::Registry;
use crate::record::{RunHistory, RunRecord};
use crate::storage::Stores;

/// Bodies of requests other than predictions.
pub const MAX_BODY: usize = 64 * 1024;
/// Bodies of prediction requests (10,000 rows of a few dozen features fit).
pub const MAX_PREDICT_BODY: usize = 16 * 1024 * 1024;
/// Runs `GET /jobs` shows per job, newest first.
const LAST_RUNS: usize = 10;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    pub scheduler: Scheduler,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    pub stores: Stores,
    pub models: Arc<ModelCache>,
    /// SHA-256 of the API token; `None` turns triggering off.
    pub token_sha256: Option<[u8; 32]>,
}

impl Api {
    /// Reads the token from its environment variable; an empty one counts as none.
    pub fn token_from_env(var: &str) -> Option<[u8; 32]> {
        std::env::var(var)
            .ok()
            .filter(|t| !t.is_empty())
            .map(|t| Sha256::digest(t.as_bytes()).into())
    }
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/jobs", get(jobs))
        .route("/jobs/{name}", get(job))
        .route("/jobs/{name}/runs", post(trigger))
        .route(
            "/models/{name}/{version}/predict",
            post(predict).layer(DefaultBodyLimit::max(MAX_PREDICT_BODY)),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(api): State<Api>) -> Response {
    let jobs = api.scheduler.job_names().len();
    let probe = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let state = api.stores.locate(&api.settings.state)?;
        let probe = state.join("runs").join(".readyz");
        probe.store.head(&probe.key)?;
        Ok(())
    })
    .await;
    match probe {
        Ok(Ok(())) if jobs > 0 => {
            (StatusCode::OK, Json(json!({ "ready": true, "jobs": jobs }))).into_response()
        }
        Ok(Ok(())) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": "no jobs loaded" })),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": format!("state storage unreachable: {e:#}") })),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.metrics.encode(),
    )
        .into_response()
}

fn run_summary(r: &RunRecord) -> Value {
    json!({
        "run_id": r.run_id,
        "date": r.logical_date,
        "status": r.status,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "seconds": r.seconds,
        "model": r.model,
        "rows_scored": r.counts.rows_scored,
        "rows_quarantined": r.counts.rows_quarantined,
        "output": r.output,
        "error": r.error,
    })
}

/// Jobs as the API shows them, with their last runs from the run records.
async fn describe(api: &Api, names: Vec<String>) -> Result<Vec<Value>, Response> {
    let views: Vec<_> = names.iter().filter_map(|n| api.scheduler.view(n)).collect();
    let stores = api.stores.clone();
    let state = api.settings.state.clone();
    let job_names: Vec<String> = views.iter().map(|v| v.name.clone()).collect();
    let histories = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Vec<RunRecord>>> {
        let history = RunHistory::new(stores.locate(&state)?);
        job_names.iter().map(|n| history.list(n)).collect()
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read run records: {e:#}"),
        )
    })?;
    Ok(views
        .into_iter()
        .zip(histories)
        .map(|(v, records)| {
            let mut obj = serde_json::to_value(&v).expect("views serialize");
            let last: Vec<Value> = records
                .iter()
                .rev()
                .take(LAST_RUNS)
                .map(run_summary)
                .collect();
            obj["last_runs"] = Value::Array(last);
            obj
        })
        .collect())
}

async fn jobs(State(api): State<Api>) -> Response {
    let names = api.scheduler.job_names();
    match describe(&api, names).await {
        Ok(jobs) => Json(json!({ "jobs": jobs })).into_response(),
        Err(r) => r,
    }
}

async fn job(State(api): State<Api>, Path(name): Path<String>) -> Response {
    if api.scheduler.view(&name).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no job named '{name}'"));
    }
    match describe(&api, vec![name]).await {
        Ok(mut jobs) if !jobs.is_empty() => Json(jobs.remove(0)).into_response(),
        Ok(_) => error(StatusCode::NOT_FOUND, "the job was just removed"),
        Err(r) => r,
    }
}

/// Checks `Authorization: Bearer TOKEN` in constant time (digests of equal length compared);
/// the refusal, if any.
fn refuse(api: &Api, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &api.token_sha256 else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "triggering runs over HTTP is off: start the daemon with NIGHTSHIFT_API_TOKEN set to enable it",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| -> [u8; 32] { Sha256::digest(t.trim().as_bytes()).into() });
    let ok = given.is_some_and(|g| bool::from(g.ct_eq(expected)));
    if ok {
        None
    } else {
        warn!("Refused a run request: missing or wrong bearer token.");
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Some(r)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    date: Option<String>,
}

async fn trigger(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refuse(&api, &headers) {
        return r;
    }
    let Some(spec) = api.scheduler.spec(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no job named '{name}'"));
    };
    let parsed: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody { date: None }
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body must be {{\"date\": \"YYYY-MM-DD\"}}: {e}"),
                )
            }
        }
    };
    let date = match parsed.date {
        None => crate::plan::logical_date(&spec, api.scheduler.now()),
        Some(d) => match NaiveDate::parse_from_str(&d, "%Y-%m-%d") {
            Ok(d) => d,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("'{d}' is not a date in the form YYYY-MM-DD"),
                )
            }
        },
    };
    match api.scheduler.trigger(&name, date) {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "job": name,
                "date": date,
                "status": accepted,
                "message": match accepted {
                    Accepted::Started => "the run started",
                    Accepted::Waiting => "the run waits for a free slot (max_concurrent_runs) or for the job's previous run",
                },
            })),
        )
            .into_response(),
        Err(e @ TriggerError::UnknownJob(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ TriggerError::Conflict(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ TriggerError::ShuttingDown) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

async fn predict(
    State(api): State<Api>,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(version) = version.parse::<u32>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("'{version}' is not a model version number"),
        );
    };
    let model_ref = ModelRef { name, version };
    let outcome = tokio::task::spawn_blocking(move || -> Result<Value, (StatusCode, Value)> {
        let fail = |status, message: String| (status, json!({ "error": message }));
        // A job that pins this model in a registry of its own is where the model lives.
        let registry_uri = api
            .scheduler
            .job_names()
            .iter()
            .filter_map(|n| api.scheduler.spec(n))
            .find(|j| j.model.name == model_ref.name && j.registry.is_some())
            .and_then(|j| j.registry.clone())
            .unwrap_or_else(|| api.settings.registry.clone());
        let registry = api
            .stores
            .locate(&registry_uri)
            .map(Registry::new)
            .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
        let model = api
            .models
            .get(&registry, &model_ref)
            .map_err(|e| match e {
                ModelError::NotFound(m) => fail(StatusCode::NOT_FOUND, m),
                ModelError::Other(e) => {
                    error!(model = %model_ref, error = %format!("{e:#}"), "Could not load a model for online scoring.");
                    fail(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot load model {model_ref}: {e:#}"))
                }
            })?;
        let batch = predict::rows_to_batch(&model, &body).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                json!({ "error": e.message, "errors": e.errors }),
            )
        })?;
        predict::score(model, &batch)
            .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("cannot score the rows: {e:#}")))
    })
    .await;
    match outcome {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err((status, body))) => (status, Json(body)).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
