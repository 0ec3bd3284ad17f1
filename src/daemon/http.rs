//! The daemon's HTTP API (axum): health, readiness, metrics, jobs and their runs, manual
//! triggers and online scoring. Every answer but `/metrics` and `/healthz` is JSON; errors are
//! `{"error": "..."}` with a status that says whose fault it is.
//!
//! Storage and models are blocking, so handlers that touch them run on tokio's blocking pool.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tracing::{error, warn};

use super::metrics::Metrics;
use super::predict::{self, ModelCache, ModelError};
use super::scheduler::{Accepted, Scheduler, TriggerError};
use crate::config::{ModelRegistry, Settings};
use crate::model::Registry;
use crate::record::{RecordCache, RunHistory, RunRecord};
use crate::schema::{is_valid_name, ModelRef};
use crate::storage::{Stores, Uri};
pub use crate::ui::auth::{bearer_token, token_digest};

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
    /// The run records `/jobs` showed last, so that it reads only the new ones.
    pub records: Arc<RecordCache>,
}

impl Api {
    /// Reads the token from its environment variable, without the whitespace around it (a
    /// secret mounted from a file ends with a newline); an empty one counts as none.
    pub fn token_from_env(var: &str) -> Option<[u8; 32]> {
        std::env::var(var).ok().as_deref().and_then(token_digest)
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

/// A value from the request as an error message shows it: at most 64 characters.
fn shown(s: &str) -> String {
    shortened(s, 64)
}

fn shortened(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// A path that did not decode (bad percent-encoding, not UTF-8) as a JSON 400.
fn bad_path(e: PathRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!("invalid path: {}", shortened(&e.body_text(), 200)),
    )
}

/// The refusal (400) of a job name that no job file could have (the rule of `nightshift
/// validate`), before it is looked up anywhere.
fn invalid_job_name(name: &str) -> Option<Response> {
    (!is_valid_name(name)).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!(
                "'{}' is not a job name: job names use only letters, digits, '_' and '-'",
                shown(name)
            ),
        )
    })
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
    let cache = api.records.clone();
    let histories = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Vec<RunRecord>>> {
        let history = RunHistory::new(stores.locate(&state)?);
        job_names
            .iter()
            .map(|n| history.latest_cached(n, LAST_RUNS, &cache))
            .collect()
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
    api.records.keep_jobs(&names);
    match describe(&api, names).await {
        Ok(jobs) => Json(json!({ "jobs": jobs })).into_response(),
        Err(r) => r,
    }
}

async fn job(State(api): State<Api>, path: Result<Path<String>, PathRejection>) -> Response {
    let name = match path {
        Ok(Path(n)) => n,
        Err(e) => return bad_path(e),
    };
    if let Some(r) = invalid_job_name(&name) {
        return r;
    }
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
        .and_then(bearer_token)
        .and_then(token_digest);
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
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refuse(&api, &headers) {
        return r;
    }
    let name = match path {
        Ok(Path(n)) => n,
        Err(e) => return bad_path(e),
    };
    if let Some(r) = invalid_job_name(&name) {
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
    let accepted = api.scheduler.trigger(&name, date);
    let status = accepted.as_ref().ok().copied();
    match trigger_outcome(accepted, &name, date) {
        Ok(message) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "job": name,
                "date": date,
                "status": status,
                "message": message,
            })),
        )
            .into_response(),
        Err((status, message)) => error(status, message),
    }
}

/// What a trigger did, in words, or the status and message of its refusal: the API's and the
/// web page's answer alike.
pub fn trigger_outcome(
    accepted: Result<Accepted, TriggerError>,
    job: &str,
    date: NaiveDate,
) -> Result<String, (StatusCode, String)> {
    match accepted {
        Ok(Accepted::Started) => Ok(format!("the run of {job} {date} started")),
        Ok(Accepted::Waiting) => Ok(format!(
            "the run of {job} {date} waits for a free slot (max_concurrent_runs) or for the job's previous run"
        )),
        Err(e @ TriggerError::UnknownJob(_)) => Err((StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ TriggerError::Conflict(_)) => Err((StatusCode::CONFLICT, e.to_string())),
        Err(e @ TriggerError::ShuttingDown) => {
            Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
    }
}

/// A model version number as a path gives it: digits only, from 1.
fn parse_version(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|&n| n > 0)
}

/// `?job=NAME` of a prediction, if given; the refusal (400) of anything else.
fn job_param(query: Option<&str>) -> Result<Option<String>, Box<Response>> {
    let mut job = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("job", name)) => {
                if let Some(r) = invalid_job_name(name) {
                    return Err(Box::new(r));
                }
                job = Some(name.to_string());
            }
            _ => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown query parameter '{}': the only one is job=NAME",
                        shown(pair)
                    ),
                )))
            }
        }
    }
    Ok(job)
}

/// The registry a pinned model version is served from: that of the job pinning it (`job`
/// when given). Only pinned versions are served, so a request never makes the daemon look
/// for a model no job file names, and never in a registry no job uses.
fn pinned_registry(
    api: &Api,
    model: &ModelRef,
    job: Option<&str>,
) -> Result<Uri, (StatusCode, String)> {
    let specs: Vec<_> = api
        .scheduler
        .job_names()
        .iter()
        .filter_map(|n| api.scheduler.spec(n))
        .collect();
    if let Some(job) = job {
        return match specs.iter().find(|j| j.name == job) {
            None => Err((StatusCode::NOT_FOUND, format!("no job named '{job}'"))),
            Some(j) if j.model.version().as_ref() != Some(model) => Err((
                StatusCode::NOT_FOUND,
                format!("job '{job}' pins model {}, not {model}", j.model),
            )),
            Some(j) => match j.registry(&api.settings) {
                ModelRegistry::Store(uri) => Ok(uri),
                ModelRegistry::Mlflow(server) => Err((
                    StatusCode::NOT_FOUND,
                    format!(
                        "job '{job}' takes its model from MLflow ({server}); online scoring serves \
                         versions of nightshift's own registry"
                    ),
                )),
            },
        };
    }
    // Jobs that pin this version in nightshift's own registry, with that registry.
    let pins: Vec<(&str, Uri)> = specs
        .iter()
        .filter(|j| j.model.version().as_ref() == Some(model))
        .filter_map(|j| match j.registry(&api.settings) {
            ModelRegistry::Store(uri) => Some((j.name.as_str(), uri)),
            ModelRegistry::Mlflow(_) => None,
        })
        .collect();
    match pins.as_slice() {
        [] => {
            let others: Vec<String> = specs
                .iter()
                .filter(|j| j.model.name == model.name)
                .map(|j| format!("{} (job {})", j.model, j.name))
                .collect();
            Err((
                StatusCode::NOT_FOUND,
                if others.is_empty() {
                    format!(
                        "no job pins a model named '{}': only versions that a job pins are served",
                        model.name
                    )
                } else {
                    format!(
                        "no job pins {model}: only versions that a job pins are served (pinned: {})",
                        others.join(", ")
                    )
                },
            ))
        }
        [(_, registry), rest @ ..] => {
            if rest.iter().all(|(_, r)| r == registry) {
                Ok(registry.clone())
            } else {
                let names: Vec<&str> = pins.iter().map(|(name, _)| *name).collect();
                Err((
                    StatusCode::CONFLICT,
                    format!(
                        "{model} is pinned by jobs with different registries ({}): say which \
                         job's with ?job=NAME",
                        names.join(", ")
                    ),
                ))
            }
        }
    }
}

async fn predict(
    State(api): State<Api>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let (name, version) = match path {
        Ok(Path(p)) => p,
        Err(e) => return bad_path(e),
    };
    if !is_valid_name(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "'{}' is not a model name: model names use only letters, digits, '_' and '-'",
                shown(&name)
            ),
        );
    }
    let Some(version) = parse_version(&version) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "'{}' is not a model version number (1, 2, ...)",
                shown(&version)
            ),
        );
    };
    let job = match job_param(query.as_deref()) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let model_ref = ModelRef { name, version };
    let registry_uri = match pinned_registry(&api, &model_ref, job.as_deref()) {
        Ok(u) => u,
        Err((status, message)) => return error(status, message),
    };
    let outcome = tokio::task::spawn_blocking(move || -> Result<Value, (StatusCode, Value)> {
        let fail = |status, message: String| (status, json!({ "error": message }));
        let registry = api
            .stores
            .locate(&registry_uri)
            .map(Registry::new)
            .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
        let model = api
            .models
            .get(&registry, &model_ref)
            .map_err(|e| match e {
                // The versions there are, from the registry's own answer, for a client to
                // pick from without parsing the message.
                ModelError::NotFound { ref versions, .. } => (
                    StatusCode::NOT_FOUND,
                    json!({ "error": e.to_string(), "versions": versions }),
                ),
                ModelError::Other(e) => {
                    error!(model = %model_ref, registry = %registry_uri, error = %format!("{e:#}"), "Could not load a model for online scoring.");
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
