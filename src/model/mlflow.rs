//! A model version registered in MLflow, scored as nightshift scores an imported file: the
//! version (or the alias, resolved once) is looked up with MLflow's REST API, its files are
//! downloaded from wherever MLflow keeps them (the server's artifact proxy, S3, a path), and
//! the flavor's model file is compiled by `model/formats`.
//!
//! Downloads are cached under the state location, one folder per server, name and version:
//! the files, then `entry.json` (written last: the commit point) with the version's run and
//! source, the `MLmodel`'s `model_uuid` and each file's sha256, checked at every load. So a
//! second run downloads nothing, and a pinned version is scored from the cache while the server
//! is down (an alias is not: only the server knows what it points at now).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::estimator::Estimator;
use super::formats::{self, Format, InputKind};
use super::import::imported_manifest;
use super::registry::{LoadedModel, ModelManifest};
use crate::config::{ModelPin, Pin};
use crate::mlflow::artifacts::Root;
use crate::mlflow::{mlmodel, Client, MlModel, ModelVersion, Provenance, Server};
use crate::schema::{FeatureKind, ModelRef};
use crate::storage::{ErrorKind, Location, StorageError, Stores};

/// What the cache keeps of a downloaded version, beside its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    server: String,
    name: String,
    version: u32,
    run_id: String,
    source: String,
    model_uuid: String,
    /// File (relative to the model's root) -> sha256.
    files: BTreeMap<String, String>,
}

pub(crate) struct MlflowRegistry<'a> {
    server: Server,
    client: Client,
    stores: &'a Stores,
    /// `STATE/mlflow/`.
    cache: Location,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl<'a> MlflowRegistry<'a> {
    pub fn new(server: &Server, stores: &'a Stores, state: &Location) -> Result<Self> {
        Ok(MlflowRegistry {
            server: server.clone(),
            client: Client::new(server)?,
            stores,
            cache: state.join("mlflow"),
        })
    }

    /// The version a pin means now: an alias asks the server.
    pub fn resolve(&self, pin: &ModelPin) -> Result<ModelRef> {
        match &pin.pin {
            Pin::Version(version) => Ok(ModelRef {
                name: pin.name.clone(),
                version: *version,
            }),
            Pin::Alias(alias) => {
                let answer = self
                    .client
                    .alias(&pin.name, alias)
                    .with_context(|| self.what(pin))?;
                Ok(ModelRef {
                    name: pin.name.clone(),
                    version: version_number(&answer)?,
                })
            }
        }
    }

    fn what(&self, pin: &ModelPin) -> String {
        format!("model {pin} in MLflow at {}", self.server)
    }

    /// Loads the pinned version, from the cache where it holds that version.
    pub fn load(&self, pin: &ModelPin) -> Result<(LoadedModel, Provenance)> {
        let what = self.what(pin);
        let answer = match &pin.pin {
            Pin::Version(v) => self.client.model_version(&pin.name, *v),
            Pin::Alias(a) => self.client.alias(&pin.name, a),
        };
        let (entry, files) = match answer {
            Ok(answer) => {
                let version = version_number(&answer).with_context(|| what.clone())?;
                match answer.status.as_str() {
                    "" | "READY" => {}
                    // Still being registered: tomorrow's retry finds it ready.
                    "PENDING_REGISTRATION" => {
                        return Err(anyhow::Error::new(StorageError::new(
                            ErrorKind::Transient,
                            format!("{what}: version {version} is still PENDING_REGISTRATION"),
                        )))
                    }
                    status => bail!("{what}: version {version} is {status}, not READY"),
                }
                let cached = self
                    .cached(&pin.name, version)?
                    .filter(|e| e.run_id == answer.run_id && e.source == answer.source)
                    .and_then(|e| match self.cached_files(&e) {
                        Ok(files) => Some((e, files)),
                        Err(err) => {
                            // The server is there: download the version again.
                            warn!(model = %pin, error = %format!("{err:#}"), "The cached copy is damaged; downloading it again.");
                            None
                        }
                    });
                match cached {
                    Some(hit) => hit,
                    None => {
                        let entry = self
                            .download(&pin.name, version, &answer)
                            .with_context(|| what.clone())?;
                        let files = self.cached_files(&entry)?;
                        (entry, files)
                    }
                }
            }
            Err(e) => {
                let cached = match (&pin.pin, ErrorKind::of(&e)) {
                    (Pin::Version(v), Some(ErrorKind::Transient)) => self.cached(&pin.name, *v)?,
                    _ => None,
                };
                let Some(entry) = cached else {
                    return Err(e.context(what));
                };
                warn!(
                    model = %pin, server = %self.server, error = %format!("{e:#}"),
                    "The MLflow server did not answer: scoring the cached copy of the pinned version."
                );
                let files = self.cached_files(&entry)?;
                (entry, files)
            }
        };
        let model = self.compile_entry(&entry, &files, pin)?;
        Ok((model, self.provenance(&entry, pin)))
    }

    /// A version a committed date was scored with, for reading its scores back (`evaluate`,
    /// the drift page): from the cache first, so that a version since deleted in MLflow, or a
    /// server that is down, does not make old dates unreadable.
    pub fn load_committed(&self, model: &ModelRef) -> Result<LoadedModel> {
        let pin = ModelPin::from(model.clone());
        if let Some(entry) = self.cached(&model.name, model.version)? {
            if let Ok(files) = self.cached_files(&entry) {
                return self.compile_entry(&entry, &files, &pin);
            }
        }
        Ok(self.load(&pin)?.0)
    }

    fn compile_entry(
        &self,
        entry: &Entry,
        files: &BTreeMap<String, Bytes>,
        pin: &ModelPin,
    ) -> Result<LoadedModel> {
        compile(&entry.name, entry.version, files, &entry.source)
            .with_context(|| format!("{}: version {}", self.what(pin), entry.version))
    }

    fn provenance(&self, entry: &Entry, pin: &ModelPin) -> Provenance {
        Provenance {
            server: self.server.to_string(),
            name: entry.name.clone(),
            version: entry.version,
            alias: match &pin.pin {
                Pin::Alias(a) => Some(a.clone()),
                Pin::Version(_) => None,
            },
            run_id: entry.run_id.clone(),
            model_uuid: entry.model_uuid.clone(),
            source: entry.source.clone(),
        }
    }

    /// The cache folder of a version.
    fn folder(&self, name: &str, version: u32) -> Location {
        let key = sha256_hex(format!("{}\0{name}\0{version}", self.server).as_bytes());
        self.cache.join(&key[..32])
    }

    /// The cache's entry for a version, if a download of it was completed.
    fn cached(&self, name: &str, version: u32) -> Result<Option<Entry>> {
        let loc = self.folder(name, version).join("entry.json");
        let bytes = match loc.store.get(&loc.key) {
            Ok(b) => b,
            Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e.context("reading the MLflow model cache")),
        };
        let entry: Entry =
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", loc.uri()))?;
        // A folder is named by a hash: make sure it is this version's.
        let ours =
            entry.server == self.server.as_str() && entry.name == name && entry.version == version;
        Ok(ours.then_some(entry))
    }

    /// The files of a cached version, each checked against its sha256.
    fn cached_files(&self, entry: &Entry) -> Result<BTreeMap<String, Bytes>> {
        let folder = self.folder(&entry.name, entry.version).join("files");
        let mut files = BTreeMap::new();
        for (name, sha) in &entry.files {
            let loc = folder.join(name);
            let bytes = loc
                .store
                .get(&loc.key)
                .with_context(|| format!("reading the cached {}", loc.uri()))?;
            if sha256_hex(&bytes) != *sha {
                bail!(
                    "the cached {} does not match its sha256; delete {} to download it again",
                    loc.uri(),
                    self.folder(&entry.name, entry.version).uri()
                );
            }
            files.insert(name.clone(), bytes);
        }
        Ok(files)
    }

    /// Downloads a version's `MLmodel` and the files its flavor reads into the cache.
    fn download(&self, name: &str, version: u32, answer: &ModelVersion) -> Result<Entry> {
        let uri = self.client.download_uri(name, version)?;
        info!(model = %format!("{name}@{version}"), uri = %uri, "Downloading the model version from MLflow.");
        let root = Root::parse(&uri, self.stores)?;
        let mut files = BTreeMap::new();
        let text = root.get(&self.client, "MLmodel")?;
        let model = MlModel::parse(&text)?;
        let flavor = model.flavor()?;
        let main = root.get(&self.client, &flavor.file)?;
        if flavor.name == "onnx" {
            let dir = flavor.file.rsplit_once('/').map(|(d, _)| d);
            for external in formats::onnx::external_files(&main)? {
                let path = match dir {
                    Some(d) => format!("{d}/{external}"),
                    None => external,
                };
                mlmodel::check_relative(&path)?;
                let data = root.get(&self.client, &path)?;
                files.insert(path, data);
            }
        }
        files.insert("MLmodel".to_string(), text);
        files.insert(flavor.file.clone(), main);
        let entry = Entry {
            server: self.server.to_string(),
            name: name.to_string(),
            version,
            run_id: answer.run_id.clone(),
            source: answer.source.clone(),
            model_uuid: model
                .model_uuid
                .clone()
                .or(model.model_id.clone())
                .unwrap_or_default(),
            files: files
                .iter()
                .map(|(k, v)| (k.clone(), sha256_hex(v)))
                .collect(),
        };
        let folder = self.folder(name, version);
        for (file, bytes) in &files {
            let loc = folder.join("files").join(file);
            loc.store.put(&loc.key, bytes.clone())?;
        }
        let loc = folder.join("entry.json");
        loc.store
            .put(&loc.key, Bytes::from(serde_json::to_vec_pretty(&entry)?))?;
        Ok(entry)
    }
}

/// The version number of an answer (the API sends it as a string).
fn version_number(answer: &ModelVersion) -> Result<u32> {
    answer
        .version
        .parse()
        .with_context(|| format!("MLflow answered version '{}', not a number", answer.version))
}

/// Compiles a downloaded version: the flavor's file with the signature's input names.
fn compile(
    name: &str,
    version: u32,
    files: &BTreeMap<String, Bytes>,
    source: &str,
) -> Result<LoadedModel> {
    let text = files.get("MLmodel").context("the cache has no MLmodel")?;
    let mlmodel = MlModel::parse(text)?;
    let flavor = mlmodel.flavor()?;
    let main = files
        .get(&flavor.file)
        .with_context(|| format!("the cache has no {}", flavor.file))?;
    let format = match flavor.name {
        "onnx" => Format::Onnx,
        "lightgbm" => Format::Lightgbm,
        _ => Format::Xgboost,
    };
    let bytes: Vec<u8> = if format == Format::Onnx {
        let dir = flavor.file.rsplit_once('/').map(|(d, _)| format!("{d}/"));
        let beside: BTreeMap<String, Bytes> = files
            .iter()
            .filter_map(|(k, v)| {
                let rel = match &dir {
                    Some(d) => k.strip_prefix(d.as_str())?,
                    None => k.as_str(),
                };
                Some((rel.to_string(), v.clone()))
            })
            .collect();
        formats::onnx::inline_external_data(main, &beside)?
    } else {
        main.to_vec()
    };
    let inputs = mlmodel.inputs()?;
    let names: Option<Vec<String>> = inputs
        .as_ref()
        .map(|cols| cols.iter().map(|c| c.name.clone()).collect());
    let parsed = formats::parse(format, &bytes, names.as_deref()).map_err(|e| {
        anyhow::anyhow!("{e:#} (the input names come from the MLmodel's signature)")
    })?;
    let mut manifest = imported_manifest(name, format, source.to_string(), &parsed);
    manifest.version = version;
    manifest.artifact = flavor.file.clone();
    manifest.artifact_sha256 = sha256_hex(main);
    if let Some(cols) = &inputs {
        check_signature(&mut manifest, cols, &parsed.features)?;
    }
    Ok(LoadedModel {
        manifest,
        estimator: Estimator::Imported(std::sync::Arc::new(parsed)),
    })
}

/// The signature's types against what the model reads: a string column feeds categories or
/// text, a number a numeric input (or integer category codes).
fn check_signature(
    manifest: &mut ModelManifest,
    cols: &[mlmodel::InputColumn],
    features: &[formats::InputFeature],
) -> Result<()> {
    for (col, feature) in cols.iter().zip(features) {
        let text = matches!(col.kind.as_str(), "string" | "binary");
        let wants_text = match &feature.kind {
            InputKind::Numeric | InputKind::Categorical { categories: None } => false,
            InputKind::Categorical {
                categories: Some(_),
            }
            | InputKind::Text => true,
        };
        if text != wants_text {
            bail!(
                "the MLmodel's signature gives input '{}' the type {}, but the model reads {} there",
                col.name,
                col.kind,
                if wants_text { "strings" } else { "numbers" }
            );
        }
    }
    for field in &mut manifest.signature {
        if let Some(col) = cols.iter().find(|c| c.name == field.name) {
            field.kind = if matches!(col.kind.as_str(), "string" | "binary") {
                FeatureKind::Categorical
            } else {
                FeatureKind::Numeric
            };
        }
    }
    Ok(())
}
