//! MLflow, over its REST API as MLflow's own clients use it: the model registry (a version,
//! an alias, where a version's files are) and the artifact proxy in `client`, the `MLmodel`
//! file in `mlmodel`, and a run per committed date in `tracking`.
//!
//! Credentials are read as MLflow's clients read them, from `MLFLOW_TRACKING_TOKEN` (bearer)
//! or `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` (basic), never from a job
//! file, and never appear in a message, a log line or a record: errors name the server and
//! the endpoint only.

pub mod artifacts;
pub mod client;
pub mod mlmodel;
pub mod tracking;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use client::{Client, ModelVersion};
pub use mlmodel::{Flavor, MlModel};

/// An MLflow server, `http(s)://HOST[:PORT][/PATH]` without a trailing slash, credentials,
/// query or fragment: what the REST API's paths are appended to, and the server's name in
/// records and cache keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Server(String);

/// What is said instead of an address that holds credentials: never the address itself.
pub const CREDENTIALS_IN_ADDRESS: &str = "the address holds credentials: remove them and set \
     MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the \
     environment instead";

/// Whether `s` looks like `SCHEME://USER[:PASSWORD]@...`: checked before any message quotes
/// an address, so a password is never repeated, whatever else is wrong with it.
pub fn has_userinfo(s: &str) -> bool {
    let Some((_, rest)) = s.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.contains('@')
}

impl Server {
    /// A `[model] registry` value, `mlflow+http(s)://...`; `None` if it names no MLflow server
    /// (a storage registry), an error if it names one badly.
    pub fn from_registry(s: &str) -> Option<Result<Server, String>> {
        let rest = s.strip_prefix("mlflow+")?;
        Some(Self::parse(rest))
    }

    /// A tracking URI, `http(s)://HOST[:PORT][/PATH]`.
    pub fn parse(s: &str) -> Result<Server, String> {
        if has_userinfo(s) || s.contains('@') {
            return Err(CREDENTIALS_IN_ADDRESS.to_string());
        }
        let url = reqwest::Url::parse(s).map_err(|e| format!("'{s}' is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "'{s}' is not an http:// or https:// address of an MLflow server"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CREDENTIALS_IN_ADDRESS.to_string());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("'{s}' names no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("'{s}' must not have a query or a fragment"));
        }
        Ok(Server(url.as_str().trim_end_matches('/').to_string()))
    }

    /// `http://HOST:PORT`, as records show it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL of a REST endpoint, `api/2.0/mlflow/...`.
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.0)
    }
}

/// Where a version scored by a run came from in MLflow, as the run record and `_SUCCESS`
/// keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The server, `http://HOST:PORT`.
    pub server: String,
    pub name: String,
    pub version: u32,
    /// The alias the job named, resolved to `version` at the run's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The MLflow run that logged the model.
    pub run_id: String,
    /// The `MLmodel`'s `model_uuid`.
    pub model_uuid: String,
    /// The version's source, `models:/m-...` since MLflow 3.
    pub source: String,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_parsed_and_credentials_refused_without_echoing_them() {
        let s = Server::from_registry("mlflow+http://127.0.0.1:5000/").unwrap();
        assert_eq!(s.unwrap().as_str(), "http://127.0.0.1:5000");
        assert_eq!(
            Server::from_registry("mlflow+https://mlflow.example.com/prefix")
                .unwrap()
                .unwrap()
                .url("api/2.0/mlflow/model-versions/get"),
            "https://mlflow.example.com/prefix/api/2.0/mlflow/model-versions/get"
        );
        assert!(Server::from_registry("s3://bucket/registry/").is_none());
        let err = Server::from_registry("mlflow+http://alice:hunter2@host:5000")
            .unwrap()
            .unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("MLFLOW_TRACKING_USERNAME"), "{err}");
        // Whatever else is wrong, the password is not repeated.
        for bad in [
            "mlflow+https://bob:pa#ss@host:5000",
            "mlflow+ftp://bob:secret@host",
            "mlflow+http://bob:secret@",
        ] {
            let err = Server::from_registry(bad).unwrap().unwrap_err();
            assert!(
                !err.contains("pa#ss") && !err.contains("secret"),
                "{bad}: {err}"
            );
        }
        assert!(has_userinfo("https://u:p@h/x") && !has_userinfo("s3://bucket/a@b"));
        assert!(Server::parse("ftp://host").is_err());
        assert!(Server::parse("http://host:5000/?x=1").is_err());
    }
}
