//! A client of one MLflow server's REST API: the calls nightshift makes, each a blocking call
//! on the client's own small runtime (the caller is a run's thread, never an async task), and
//! each failure an [`ErrorKind`] a caller can branch on: an unreachable or failing server is
//! `Transient` (the daemon tries the run again later), a missing name or version `NotFound`,
//! refused credentials `AccessDenied`.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::Server;
use crate::storage::{ErrorKind, StorageError};

/// How long a connection may take to open, a response may pause between bytes (MLflow's
/// artifact proxy copies a file from its store before it sends the first byte), and a call may
/// take in all, before it fails as transient: a stalled server must not hold a run for ever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(300);
const CALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// One registered model version, as `model-versions/get` returns it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    /// A number, sent as a string.
    pub version: String,
    /// `models:/m-...` since MLflow 3, a run's artifact path before.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub creation_timestamp: i64,
}

/// The API's error body: `{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "..."}`.
#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    message: String,
}

pub struct Client {
    server: Server,
    http: reqwest::Client,
    auth: Auth,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No headers: they hold the credentials.
        f.debug_struct("Client")
            .field("server", &self.server)
            .finish()
    }
}

/// The credentials MLflow's clients send, from the same variables they read. Never printed.
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

impl Auth {
    fn from_env() -> Result<Auth> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(token) = var("MLFLOW_TRACKING_TOKEN") {
            return Ok(Auth::Bearer(token));
        }
        match (
            var("MLFLOW_TRACKING_USERNAME"),
            var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(user), Some(password)) => Ok(Auth::Basic(user, password)),
            (None, None) => Ok(Auth::None),
            _ => anyhow::bail!(
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD must be set together"
            ),
        }
    }

    /// Adds the `Authorization` header (reqwest marks it sensitive).
    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
        }
    }
}

impl Client {
    pub fn new(server: &Server) -> Result<Client> {
        let auth = Auth::from_env()?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("nightshift/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the MLflow client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the MLflow client's runtime")?;
        Ok(Client {
            server: server.clone(),
            http,
            auth,
            runtime,
        })
    }

    /// `GET api/2.0/mlflow/model-versions/get`.
    pub fn model_version(&self, name: &str, version: u32) -> Result<ModelVersion> {
        #[derive(Deserialize)]
        struct Answer {
            model_version: ModelVersion,
        }
        let v = version.to_string();
        let a: Answer = self.get(
            "api/2.0/mlflow/model-versions/get",
            &[("name", name), ("version", &v)],
        )?;
        Ok(a.model_version)
    }

    /// `GET api/2.0/mlflow/registered-models/alias`: the version an alias points at now.
    pub fn alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        #[derive(Deserialize)]
        struct Answer {
            model_version: ModelVersion,
        }
        let a: Answer = self.get(
            "api/2.0/mlflow/registered-models/alias",
            &[("name", name), ("alias", alias)],
        )?;
        Ok(a.model_version)
    }

    /// `GET api/2.0/mlflow/model-versions/get-download-uri`: where the version's files are
    /// (`mlflow-artifacts:/...`, `s3://...`, a path).
    pub fn download_uri(&self, name: &str, version: u32) -> Result<String> {
        #[derive(Deserialize)]
        struct Answer {
            artifact_uri: String,
        }
        let v = version.to_string();
        let a: Answer = self.get(
            "api/2.0/mlflow/model-versions/get-download-uri",
            &[("name", name), ("version", &v)],
        )?;
        Ok(a.artifact_uri)
    }

    /// One file of the server's artifact proxy, whole.
    pub fn get_artifact(&self, path: &str) -> Result<Bytes> {
        let url = self.artifact_url(path)?;
        let what = format!("artifact '{path}'");
        self.call(
            Method::GET,
            url,
            None,
            &what,
            |r| async move { r.bytes().await },
        )
    }

    /// Uploads one file through the server's artifact proxy.
    pub fn put_artifact(&self, path: &str, body: Bytes) -> Result<()> {
        let url = self.artifact_url(path)?;
        let what = format!("uploading artifact '{path}'");
        self.call(Method::PUT, url, Some(body), &what, |_| async { Ok(()) })
    }

    fn artifact_url(&self, path: &str) -> Result<Url> {
        let mut url = Url::parse(&self.server.url("api/2.0/mlflow-artifacts/artifacts"))?;
        url.path_segments_mut()
            .map_err(|_| anyhow::anyhow!("{} cannot hold a path", self.server))?
            .extend(path.split('/').filter(|s| !s.is_empty()));
        Ok(url)
    }

    /// A GET of a JSON endpoint.
    pub fn get<T: DeserializeOwned>(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<T> {
        let url = Url::parse_with_params(&self.server.url(endpoint), query)?;
        self.json(Method::GET, url, None, endpoint)
    }

    /// A POST of a JSON body to a JSON endpoint.
    pub fn post<T: DeserializeOwned>(&self, endpoint: &str, body: &Value) -> Result<T> {
        let url = Url::parse(&self.server.url(endpoint))?;
        let body = Bytes::from(serde_json::to_vec(body)?);
        self.json(Method::POST, url, Some(body), endpoint)
    }

    fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Bytes>,
        endpoint: &str,
    ) -> Result<T> {
        let bytes = self.call(
            method,
            url,
            body,
            endpoint,
            |r| async move { r.bytes().await },
        )?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "MLflow server {}: the answer of {endpoint} is not what MLflow answers",
                self.server
            )
        })
    }

    /// Sends one request; a status other than 2xx becomes an error of its kind, with the
    /// server's own message.
    fn call<T, F, Fut>(
        &self,
        method: Method,
        url: Url,
        body: Option<Bytes>,
        what: &str,
        read: F,
    ) -> Result<T>
    where
        F: FnOnce(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = reqwest::Result<T>>,
    {
        let server = &self.server;
        let network = |e: reqwest::Error| {
            // The URL is the server's plus the endpoint: no secret in it.
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            let how = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            anyhow::Error::new(StorageError::new(
                ErrorKind::Transient,
                format!("MLflow server {server}: {what} {how}{cause}"),
            ))
        };
        self.runtime.block_on(async {
            let mut request = self.auth.apply(self.http.request(method, url));
            if let Some(b) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b);
            }
            let response = request.send().await.map_err(network)?;
            let status = response.status();
            if status.is_success() {
                return read(response).await.map_err(network);
            }
            let text = response.text().await.unwrap_or_default();
            let api: Option<ApiError> = serde_json::from_str(&text).ok();
            let message = api
                .as_ref()
                .map(|a| a.message.trim())
                .filter(|m| !m.is_empty())
                .map(|m| one_line(m, 300))
                .unwrap_or_else(|| one_line(text.trim(), 200));
            let code = api.as_ref().map(|a| a.error_code.as_str()).unwrap_or("");
            let kind = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::AccessDenied,
                StatusCode::NOT_FOUND => ErrorKind::NotFound,
                s if s.is_server_error()
                    || s == StatusCode::TOO_MANY_REQUESTS
                    || s == StatusCode::REQUEST_TIMEOUT =>
                {
                    ErrorKind::Transient
                }
                _ if code == "RESOURCE_DOES_NOT_EXIST" => ErrorKind::NotFound,
                _ => ErrorKind::Other,
            };
            let hint = if kind == ErrorKind::AccessDenied {
                " (set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or \
                 MLFLOW_TRACKING_TOKEN)"
            } else {
                ""
            };
            let message = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            Err(anyhow::Error::new(StorageError::new(
                kind,
                format!("MLflow server {server}: {what}: HTTP {status}{message}{hint}"),
            )))
        })
    }
}

/// `text` on one line, at most `max` characters: a server's message goes into a one-line error.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &flat[..i]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon retries what is transient: a server that is not there is.
    #[test]
    fn an_unreachable_server_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Server::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = Client::new(&server)
            .unwrap()
            .alias("churn", "champion")
            .unwrap_err();
        assert_eq!(ErrorKind::of(&err), Some(ErrorKind::Transient), "{err:#}");
        assert!(format!("{err:#}").contains("could not connect"), "{err:#}");
    }
}
