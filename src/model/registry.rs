//! The model registry: immutable, checksummed model versions in the same storage as the data.
//!
//! Layout: `REGISTRY/NAME/VERSION/manifest.json` and, beside it, the artifact
//! `model-SHA12.json` it names. The manifest is written last with a conditional create, so it
//! is the commit point: a version exists once its manifest does, and no registration can take
//! or overwrite a version another one took.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::estimator::{Algorithm, Estimator, Hyperparameters};
use super::formats::{self, Format, InputFeature, Parsed};
use super::preprocess::Preprocessing;
use crate::profile::DatasetProfile;
use crate::schema::{is_valid_name, ModelRef, SignatureField};
use crate::storage::{ErrorKind, Location, Uri};

/// The Arrow type family of the training target, so predictions come back in the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelType {
    Integer,
    Boolean,
    String,
    Float,
}

/// Everything known about a model version, stored as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelManifest {
    pub name: String,
    pub version: u32,
    pub algorithm: Algorithm,
    pub signature: Vec<SignatureField>,
    pub preprocessing: Preprocessing,
    pub target: String,
    pub label_type: LabelType,
    /// Class labels in class-index order (sorted); empty for regressors.
    pub classes: Vec<String>,
    pub hyperparameters: Hyperparameters,
    pub metrics: BTreeMap<String, f64>,
    /// Binary classifiers: the isotonic map from score to probability fitted on the holdout,
    /// for estimating performance before labels exist (docs/model-performance.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::metric::Calibration>,
    pub training_rows: u64,
    pub holdout_rows: u64,
    /// Training rows left out because a feature was NaN or infinite, or the target was null.
    pub dropped_rows: u64,
    pub training_data: String,
    /// File name of the artifact, beside the manifest.
    pub artifact: String,
    pub artifact_sha256: String,
    /// The reference profile of the training data (for drift), beside the manifest.
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub profile_sha256: Option<String>,
    pub created_at: DateTime<Utc>,
    pub nightshift_version: String,
    /// A version imported from a model file (`model import`): the artifact is that file, byte
    /// for byte, compiled at each load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportInfo>,
}

/// What `model import` read from a model file, for `model show` and to check each load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportInfo {
    pub format: Format,
    /// Where the file was imported from.
    pub source: String,
    /// The producing library and version, where the file records them.
    pub producer: Option<String>,
    /// The objective and link, as the library names them.
    pub objective: String,
    /// The model's inputs in order, with the names the job's columns have (`--features`
    /// where given).
    pub features: Vec<InputFeature>,
    pub trees: usize,
    pub leaves: usize,
    pub max_depth: usize,
    /// Bytes of the compiled scorer in memory.
    pub compiled_bytes: usize,
}

impl ModelManifest {
    pub fn model_ref(&self) -> ModelRef {
        ModelRef {
            name: self.name.clone(),
            version: self.version,
        }
    }

    pub fn is_classifier(&self) -> bool {
        !self.classes.is_empty()
    }
}

/// The artifact's file name: `model-SHA12.json` for a trained model, the original extension
/// for an imported one.
fn artifact_name(sha: &str, extension: &str) -> String {
    format!("model-{}.{extension}", &sha[..12])
}

/// A loaded, verified model version.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub manifest: ModelManifest,
    pub estimator: Estimator,
}

pub struct Registry {
    root: Location,
}

/// Why the registry could not give a model, for callers that answer differently (online
/// predict's 404). Sits at the top of the `anyhow` error of [`Registry::manifest`] and
/// [`Registry::load`]; find it with [`RegistryError::of`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The version is not registered; `versions` are the model's versions that are
    /// (ascending, empty when no version is).
    #[error(
        "model {model} is not in the registry at {registry} ({})",
        registered(&model.name, versions)
    )]
    NotFound {
        model: ModelRef,
        registry: Uri,
        versions: Vec<u32>,
    },
}

impl RegistryError {
    /// The registry error in an error chain, if the registry caused it.
    pub fn of(e: &anyhow::Error) -> Option<&RegistryError> {
        e.chain().find_map(|c| c.downcast_ref::<RegistryError>())
    }
}

/// What a [`RegistryError::NotFound`] says there is instead.
fn registered(name: &str, versions: &[u32]) -> String {
    if versions.is_empty() {
        format!(
            "no versions are registered under that name; \
             `nightshift model train --name {name} ...` registers one"
        )
    } else {
        format!("registered versions: {}", join_versions(versions))
    }
}

/// `1, 2, 5`.
fn join_versions(versions: &[u32]) -> String {
    versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

const MANIFEST: &str = "manifest.json";

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Refuses a file name from a manifest that is not a plain name beside it (an edited manifest
/// must not make the registry read elsewhere).
fn beside_manifest(file: &str) -> Result<()> {
    let plain = !file.is_empty()
        && file != "."
        && file != ".."
        && !file.contains(['/', '\\'])
        && !file.starts_with('.');
    if !plain {
        bail!("the model manifest names '{file}', which is not a file beside it");
    }
    Ok(())
}

impl Registry {
    pub fn new(root: Location) -> Self {
        Self { root }
    }

    /// Where the registry is, for messages and as part of cache keys.
    pub fn uri(&self) -> Uri {
        self.root.uri()
    }

    /// Refuses a model name that is not [`is_valid_name`], with the message users read.
    pub fn check_name(name: &str) -> Result<()> {
        if !is_valid_name(name) {
            bail!("model name '{name}' must use only letters, digits, '_' and '-'");
        }
        Ok(())
    }

    /// A version's folder; the name was checked by the caller ([`Registry::check_name`]).
    fn version_dir(&self, name: &str, version: u32) -> Location {
        debug_assert!(is_valid_name(name));
        self.root.join(name).join(&version.to_string())
    }

    /// Model names with at least one version.
    pub fn names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .root
            .store
            .list(&self.root.key)?
            .iter()
            .filter_map(|o| {
                let rel = self.root.relative(&o.key);
                let mut parts = rel.split('/');
                let (name, _v, file) = (parts.next()?, parts.next()?, parts.next()?);
                (file == MANIFEST).then(|| name.to_string())
            })
            .collect();
        names.dedup();
        Ok(names)
    }

    /// Registered versions of a model, ascending.
    pub fn versions(&self, name: &str) -> Result<Vec<u32>> {
        Self::check_name(name)?;
        let dir = self.root.join(name);
        let mut versions: Vec<u32> = dir
            .store
            .list(&dir.key)?
            .iter()
            .filter_map(|o| {
                let rel = dir.relative(&o.key);
                let (v, file) = rel.split_once('/')?;
                (file == MANIFEST).then(|| v.parse().ok()).flatten()
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// A version's manifest. A version that is not registered is a [`RegistryError::NotFound`]
    /// (at the top of the error), which lists the versions there are.
    pub fn manifest(&self, model: &ModelRef) -> Result<ModelManifest> {
        Self::check_name(&model.name)?;
        let loc = self.version_dir(&model.name, model.version).join(MANIFEST);
        let bytes = match loc.store.get(&loc.key) {
            Ok(b) => b,
            Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => {
                // Listed once, here, so that no caller lists the registry again to say what
                // there is instead.
                return Err(RegistryError::NotFound {
                    model: model.clone(),
                    registry: self.root.uri(),
                    versions: self.versions(&model.name).unwrap_or_default(),
                }
                .into());
            }
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&bytes)
            .with_context(|| format!("reading model manifest {}", loc.uri()))
    }

    /// Loads a version and checks its artifact against the manifest's checksum.
    pub fn load(&self, model: &ModelRef) -> Result<LoadedModel> {
        let manifest = self.manifest(model)?;
        beside_manifest(&manifest.artifact)?;
        let loc = self
            .version_dir(&model.name, model.version)
            .join(&manifest.artifact);
        let bytes = loc
            .store
            .get(&loc.key)
            .with_context(|| format!("reading model artifact for {model}"))?;
        let actual = sha256_hex(&bytes);
        if actual != manifest.artifact_sha256 {
            bail!(
                "model {model}: artifact {} has sha256 {actual}, but the manifest says {}; \
                 it was changed after registration, refusing to load it",
                loc.uri(),
                manifest.artifact_sha256
            );
        }
        if let Some(import) = &manifest.import {
            let parsed = compile_imported(&manifest, import, &bytes)
                .with_context(|| format!("model {model}: artifact {}", loc.uri()))?;
            return Ok(LoadedModel {
                manifest,
                estimator: Estimator::Imported(std::sync::Arc::new(parsed)),
            });
        }
        let estimator: Estimator = serde_json::from_slice(&bytes)
            .with_context(|| format!("decoding model artifact {}", loc.uri()))?;
        estimator
            .check_shape(manifest.preprocessing.width(), manifest.classes.len())
            .with_context(|| format!("model {model}: artifact {}", loc.uri()))?;
        Ok(LoadedModel {
            manifest,
            estimator,
        })
    }

    /// The reference profile of a version, checked against the manifest's checksum.
    pub fn profile(&self, manifest: &ModelManifest) -> Result<Option<DatasetProfile>> {
        let (Some(name), Some(sha)) = (&manifest.profile, &manifest.profile_sha256) else {
            return Ok(None);
        };
        Self::check_name(&manifest.name)?;
        beside_manifest(name)?;
        let loc = self
            .version_dir(&manifest.name, manifest.version)
            .join(name);
        let bytes = loc.store.get(&loc.key).with_context(|| {
            format!("reading the reference profile of {}", manifest.model_ref())
        })?;
        if sha256_hex(&bytes) != *sha {
            bail!("reference profile {} does not match its checksum in the manifest; refusing to use it", loc.uri());
        }
        Ok(Some(
            serde_json::from_slice(&bytes).with_context(|| format!("decoding {}", loc.uri()))?,
        ))
    }

    /// Registers a new version (the next free number) and returns its manifest.
    pub fn register(
        &self,
        manifest: ModelManifest,
        estimator: &Estimator,
        profile: Option<&DatasetProfile>,
    ) -> Result<ModelManifest> {
        let artifact = Bytes::from(serde_json::to_vec(estimator)?);
        self.register_artifact(manifest, artifact, "json", profile)
    }

    /// Registers a new version whose artifact is an imported model file, kept byte for byte.
    pub fn register_imported(
        &self,
        manifest: ModelManifest,
        file: Bytes,
        profile: Option<&DatasetProfile>,
    ) -> Result<ModelManifest> {
        let Some(import) = &manifest.import else {
            bail!("an imported version needs its import description");
        };
        let extension = formats::extension(import.format, &file);
        self.register_artifact(manifest, file, extension, profile)
    }

    fn register_artifact(
        &self,
        mut manifest: ModelManifest,
        artifact: Bytes,
        extension: &str,
        profile: Option<&DatasetProfile>,
    ) -> Result<ModelManifest> {
        Self::check_name(&manifest.name)?;
        manifest.artifact_sha256 = sha256_hex(&artifact);
        manifest.artifact = artifact_name(&manifest.artifact_sha256, extension);
        let profile = profile
            .map(serde_json::to_vec)
            .transpose()?
            .map(Bytes::from);
        if let Some(p) = &profile {
            let sha = sha256_hex(p);
            manifest.profile = Some(format!("profile-{}.json", &sha[..12]));
            manifest.profile_sha256 = Some(sha);
        }
        for _ in 0..20 {
            let version = self.versions(&manifest.name)?.last().map_or(1, |v| v + 1);
            manifest.version = version;
            let dir = self.version_dir(&manifest.name, version);
            let artifact_loc = dir.join(&manifest.artifact);
            artifact_loc
                .store
                .put(&artifact_loc.key, artifact.clone())?;
            if let (Some(p), Some(name)) = (&profile, &manifest.profile) {
                let loc = dir.join(name);
                loc.store.put(&loc.key, p.clone())?;
            }
            let manifest_loc = dir.join(MANIFEST);
            let body = Bytes::from(serde_json::to_vec_pretty(&manifest)?);
            if manifest_loc.store.put_if_absent(&manifest_loc.key, body)? {
                return Ok(manifest);
            }
            // Another registration took this version first. The artifact name carries its
            // checksum, so ours only overwrote an identical copy if it overwrote anything.
            let theirs = self.manifest(&manifest.model_ref())?;
            if theirs.artifact != manifest.artifact {
                artifact_loc.store.delete(&artifact_loc.key)?;
            }
        }
        bail!(
            "could not register a version of '{}': too many concurrent registrations",
            manifest.name
        )
    }
}

/// Compiles an imported version's file and checks that it is the model its manifest describes:
/// the same format, the same inputs in the same order and kinds.
fn compile_imported(manifest: &ModelManifest, import: &ImportInfo, bytes: &[u8]) -> Result<Parsed> {
    let names: Vec<String> = import.features.iter().map(|f| f.name.clone()).collect();
    let parsed = formats::parse(import.format, bytes, Some(&names))?;
    if parsed.features != import.features {
        bail!("the file's inputs are not the ones its manifest lists");
    }
    let labels: Vec<String> = match &parsed.task {
        formats::Task::Classification { labels } => labels.iter().map(|l| l.to_string()).collect(),
        formats::Task::Regression => Vec::new(),
    };
    if labels != manifest.classes {
        bail!(
            "the file's classes ({}) are not the ones its manifest lists ({})",
            labels.join(", "),
            manifest.classes.join(", ")
        );
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Stores;

    /// A registry under `dir` holding `churn` versions 1 and 3 (their manifests are all the
    /// listing looks at).
    fn registry(dir: &std::path::Path) -> Registry {
        for v in [1, 3] {
            let folder = dir.join(format!("churn/{v}"));
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join(MANIFEST), b"{}").unwrap();
        }
        let root = Stores::default()
            .locate(&Uri::Local(dir.to_path_buf()))
            .unwrap();
        Registry::new(root)
    }

    fn churn(version: u32) -> ModelRef {
        ModelRef {
            name: "churn".into(),
            version,
        }
    }

    #[test]
    fn a_missing_version_is_not_found_with_the_versions_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let err = registry.load(&churn(2)).unwrap_err();
        assert_eq!(
            RegistryError::of(&err),
            Some(&RegistryError::NotFound {
                model: churn(2),
                registry: registry.uri(),
                versions: vec![1, 3],
            })
        );
        assert_eq!(
            format!("{err:#}"),
            format!(
                "model churn@2 is not in the registry at {} (registered versions: 1, 3)",
                registry.uri()
            )
        );

        let other = ModelRef {
            name: "other".into(),
            version: 1,
        };
        let err = registry.manifest(&other).unwrap_err();
        let Some(RegistryError::NotFound { versions, .. }) = RegistryError::of(&err) else {
            panic!("{err:#}");
        };
        assert!(versions.is_empty());
        assert!(
            format!("{err:#}").ends_with(
                "(no versions are registered under that name; \
                 `nightshift model train --name other ...` registers one)"
            ),
            "{err:#}"
        );
    }

    #[test]
    fn a_broken_version_is_no_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        // The manifest is there but unreadable as one: an error, not a 404.
        let err = registry.load(&churn(1)).unwrap_err();
        assert_eq!(RegistryError::of(&err), None, "{err:#}");
    }
}
