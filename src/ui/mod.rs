//! The web pages over the runs (docs/ui.md): every job with its last 30 dates, a job's
//! calendar, drift and accuracy over time, a date's runs and reports, and the models.
//!
//! Rendered on the server with maud, which escapes every value by default; charts are
//! inline SVG ([`svg`]); the pages need no script, nothing from the internet, and no build
//! step. The daemon serves them beside its API, and `nightshift ui` serves them read-only
//! from the job files alone. Who serves them says which dates are running ([`Activity`]).
//!
//! - [`data`]: what a page shows, read from storage through [`cache`].
//! - [`pages`]: the pages themselves.
//! - [`auth`]: the token, the login cookie and the CSRF token of the one action.

pub mod auth;
pub mod cache;
pub mod data;
pub mod pages;
pub mod svg;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{DateTime, NaiveDate, Utc};
use maud::Markup;
use serde::Deserialize;

use crate::config::{JobSpec, Settings};
use crate::storage::Stores;
use data::Caches;

/// What only the server knows: the jobs it has, which dates are running, and how to start a
/// run. The daemon answers from its scheduler; `nightshift ui` from the job files and the
/// leases in storage, and starts nothing.
pub trait Activity: Send + Sync {
    fn jobs(&self) -> Vec<Arc<JobSpec>>;
    /// Dates of the job running or waiting now.
    fn active(&self, job: &str) -> BTreeSet<NaiveDate>;
    /// When the job fires next, if this server schedules it.
    fn next_run(&self, job: &JobSpec) -> Option<DateTime<Utc>> {
        crate::timetable::next_tick(job, Utc::now())
    }
    /// Starts a run of the date, as `POST /jobs/NAME/runs` does; what to tell the user, or
    /// why not. `None`: this server starts no runs.
    fn trigger(
        &self,
        _job: &str,
        _date: NaiveDate,
    ) -> Option<Result<String, (StatusCode, String)>> {
        None
    }
}

/// The jobs of `nightshift ui`: as loaded at its start; running dates from the leases.
pub struct ReadOnly {
    pub jobs: Vec<Arc<JobSpec>>,
    pub settings: Arc<Settings>,
    pub stores: Stores,
}

impl Activity for ReadOnly {
    fn jobs(&self) -> Vec<Arc<JobSpec>> {
        self.jobs.clone()
    }

    fn active(&self, job: &str) -> BTreeSet<NaiveDate> {
        data::leased_dates(&self.settings, &self.stores, job, Utc::now()).unwrap_or_else(|e| {
            tracing::warn!(job = %job, error = %format!("{e:#}"), "Cannot list the job's leases; no date shows as running.");
            BTreeSet::new()
        })
    }
}

/// What the pages share.
#[derive(Clone)]
pub struct Ui {
    pub activity: Arc<dyn Activity>,
    pub settings: Arc<Settings>,
    pub stores: Stores,
    pub caches: Arc<Caches>,
    /// SHA-256 of the API token: when set, every page needs it.
    pub token_sha256: Option<[u8; 32]>,
    /// The server listens on a loopback address: requests must name it so (see
    /// [`auth::host_is_local`]).
    pub loopback: bool,
}

/// The pages under `/ui`, and `/` sending a browser there.
pub fn router(ui: Ui) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(jobs_page))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", get(logout))
        .route("/ui/models", get(models_page))
        .route("/ui/jobs/{name}", get(job_page))
        .route("/ui/jobs/{name}/{date}", get(date_page))
        .route("/ui/jobs/{name}/{date}/drift", get(drift_page))
        .route("/ui/jobs/{name}/{date}/performance", get(performance_page))
        .route("/ui/jobs/{name}/{date}/run", post(run_again))
        .with_state(ui)
}

/// `router` answering, on a loopback address, only requests that name it so: a web page
/// elsewhere whose DNS name is pointed at 127.0.0.1 (DNS rebinding) reads nothing, neither
/// the pages nor the daemon's JSON API served beside them.
pub fn local_names_only(router: Router, loopback: bool) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| async move {
            if loopback && !auth::host_is_local(request.headers()) {
                return problem(
                    StatusCode::MISDIRECTED_REQUEST,
                    "this server listens on a loopback address and answers only to localhost, 127.0.0.1 or [::1]",
                );
            }
            next.run(request).await
        },
    ))
}

async fn logout() -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, auth::logout()),
            (header::LOCATION, "/ui/login".to_string()),
        ],
    )
        .into_response()
}

/// Why a page is not shown: its status and what to say.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        problem(self.0, &self.1)
    }
}

/// A page, or why not.
type Page = Result<Markup, Refusal>;

fn html(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // The pages load nothing from elsewhere and run only their own inline script.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        page.into_string(),
    )
        .into_response()
}

/// 401 with the login form, and HTTP Basic offered.
fn ask_for_token() -> Response {
    let mut r = html(StatusCode::UNAUTHORIZED, pages::login(true, None));
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(r#"Basic realm="nightshift", charset="UTF-8""#),
    );
    r
}

fn problem(status: StatusCode, message: &str) -> Response {
    html(status, pages::problem(status, message))
}

/// Runs `f` (which reads storage) on the blocking pool, after the token check.
async fn render(
    ui: &Ui,
    headers: &HeaderMap,
    f: impl FnOnce(&Ui, &auth::Session) -> Page + Send + 'static,
) -> Response {
    let session = match auth::check(ui, headers) {
        Ok(s) => s,
        Err(auth::Unauthorized) => return ask_for_token(),
    };
    let ui = ui.clone();
    match tokio::task::spawn_blocking(move || f(&ui, &session)).await {
        Ok(Ok(page)) => html(StatusCode::OK, page),
        Ok(Err(r)) => r.into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn spec(ui: &Ui, name: &str) -> Result<Arc<JobSpec>, Refusal> {
    ui.activity
        .jobs()
        .into_iter()
        .find(|j| j.name == name)
        .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("no job named '{name}'")))
}

fn parse_date(date: &str) -> Result<NaiveDate, Refusal> {
    NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| {
        Refusal(
            StatusCode::NOT_FOUND,
            format!("'{date}' is not a date in the form YYYY-MM-DD"),
        )
    })
}

fn unavailable(e: anyhow::Error) -> Refusal {
    Refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read the job's state: {e:#}"),
    )
}

async fn jobs_page(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    render(&ui, &headers, |ui, _| Ok(pages::jobs(ui, Utc::now()))).await
}

#[derive(Debug, Default, Deserialize)]
pub struct JobQuery {
    /// The feature whose statistic the line chart draws.
    pub feature: Option<String>,
    /// The metric the accuracy chart draws.
    pub metric: Option<String>,
}

async fn job_page(
    State(ui): State<Ui>,
    Path(name): Path<String>,
    Query(query): Query<JobQuery>,
    headers: HeaderMap,
) -> Response {
    render(&ui, &headers, move |ui, _| {
        let spec = spec(ui, &name)?;
        pages::job(ui, spec, &query, Utc::now()).map_err(unavailable)
    })
    .await
}

async fn date_page(
    State(ui): State<Ui>,
    Path((name, date)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    render(&ui, &headers, move |ui, session| {
        let spec = spec(ui, &name)?;
        let date = parse_date(&date)?;
        pages::date(ui, session, spec, date).map_err(unavailable)
    })
    .await
}

/// A date's report page (drift or performance), by `page`.
async fn report_page(
    ui: Ui,
    name: String,
    date: String,
    headers: HeaderMap,
    page: fn(&Ui, &JobSpec, NaiveDate) -> Page,
) -> Response {
    render(&ui, &headers, move |ui, _| {
        let spec = spec(ui, &name)?;
        let date = parse_date(&date)?;
        page(ui, &spec, date)
    })
    .await
}

async fn drift_page(
    State(ui): State<Ui>,
    Path((name, date)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    report_page(ui, name, date, headers, pages::drift).await
}

async fn performance_page(
    State(ui): State<Ui>,
    Path((name, date)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    report_page(ui, name, date, headers, pages::performance).await
}

async fn models_page(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    render(&ui, &headers, |ui, _| Ok(pages::models(ui))).await
}

async fn login_form(State(ui): State<Ui>) -> Response {
    html(
        StatusCode::OK,
        pages::login(ui.token_sha256.is_some(), None),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(ui): State<Ui>, Form(form): Form<LoginForm>) -> Response {
    match auth::login(&ui, &form.token) {
        Some(cookie) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, cookie),
                (header::LOCATION, "/ui".to_string()),
            ],
        )
            .into_response(),
        None => html(
            StatusCode::UNAUTHORIZED,
            pages::login(true, Some("That is not the token.")),
        ),
    }
}

#[derive(Deserialize)]
struct RunForm {
    csrf: String,
}

/// "Run this date again": the token (as for every page) and the CSRF token of the page's
/// form, then the same path as `POST /jobs/NAME/runs`.
async fn run_again(
    State(ui): State<Ui>,
    Path((name, date)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<RunForm>,
) -> Response {
    if ui.token_sha256.is_none() {
        return problem(
            StatusCode::FORBIDDEN,
            "starting runs from the page is off: start the daemon with NIGHTSHIFT_API_TOKEN set to enable it",
        );
    }
    let session = match auth::check(&ui, &headers) {
        Ok(s) => s,
        Err(auth::Unauthorized) => return ask_for_token(),
    };
    if !session.csrf_matches(&form.csrf) {
        return problem(
            StatusCode::FORBIDDEN,
            "the form is stale or not this page's: reload the page and try again",
        );
    }
    let date = match parse_date(&date) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let activity = ui.activity.clone();
    let job = name.clone();
    let outcome = tokio::task::spawn_blocking(move || activity.trigger(&job, date)).await;
    match outcome {
        Ok(Some(Ok(_))) => {
            Redirect::to(&format!("/ui/jobs/{}/{date}", pages::path_segment(&name))).into_response()
        }
        Ok(Some(Err((status, message)))) => problem(status, &message),
        Ok(None) => problem(
            StatusCode::FORBIDDEN,
            "this server only shows the runs (`nightshift ui`); the daemon starts them",
        ),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
