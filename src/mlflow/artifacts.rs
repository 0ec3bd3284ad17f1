//! Where MLflow keeps a model's or a run's files, as the server names them: through its own
//! artifact proxy (`mlflow-artifacts:/PATH`), or in storage nightshift reads itself (`s3://`
//! with the `[s3]` settings, a local path or `file://`).

use anyhow::Result;
use bytes::Bytes;

use super::Client;
use crate::storage::{ErrorKind, Location, Stores, Uri};

pub enum Root {
    /// `mlflow-artifacts:/PATH`: through the server's artifact proxy.
    Proxy(String),
    /// `s3://...` or a local path: through nightshift's own stores.
    Store(Location),
}

impl Root {
    pub fn parse(uri: &str, stores: &Stores) -> Result<Root> {
        if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts://HOST:PORT/PATH` names the server; it is the one asked.
            let path = match rest.strip_prefix("//") {
                Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
                None => rest,
            };
            return Ok(Root::Proxy(path.trim_matches('/').to_string()));
        }
        let path = uri.strip_prefix("file://").unwrap_or(uri);
        let parsed = Uri::parse(path).map_err(|_| {
            anyhow::anyhow!(
                "MLflow keeps the files at {uri}, which nightshift cannot reach (it reads \
                 mlflow-artifacts:/, s3:// and local paths)"
            )
        })?;
        Ok(Root::Store(stores.locate(&parsed)?))
    }

    /// One file, by its path under the root; a missing one is a `NotFound` that names it.
    pub fn get(&self, client: &Client, file: &str) -> Result<Bytes> {
        let got = match self {
            Root::Proxy(root) => client.get_artifact(&format!("{root}/{file}")),
            Root::Store(root) => {
                let loc = root.join(file);
                loc.store.get(&loc.key)
            }
        };
        got.map_err(|e| {
            if ErrorKind::of(&e) == Some(ErrorKind::NotFound) {
                e.context(format!("the model's file '{file}' is missing"))
            } else {
                e
            }
        })
    }

    /// Writes one file under the root.
    pub fn put(&self, client: &Client, file: &str, body: Bytes) -> Result<()> {
        match self {
            Root::Proxy(root) => client.put_artifact(&format!("{root}/{file}"), body),
            Root::Store(root) => {
                let loc = root.join(file);
                loc.store.put(&loc.key, body)
            }
        }
    }
}
