//! Where a job's model comes from: nightshift's own registry in storage, or an MLflow model
//! registry (`model/mlflow.rs`); and its drift reference: what the registry keeps, or the
//! job's `[model] reference` data, profiled once per model and reference and cached.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use super::import::apply_reference;
use super::mlflow::MlflowRegistry;
use super::registry::{LoadedModel, ModelManifest, Registry};
use crate::config::{JobSpec, ModelPin, ModelRegistry, Pin, ReferenceSpec, Settings};
use crate::mlflow::Provenance;
use crate::profile::DatasetProfile;
use crate::read::list_data_files;
use crate::schema::ModelRef;
use crate::storage::{ErrorKind, Location, Stores};

/// A job's model, loaded for a run.
pub struct Pinned {
    pub model: LoadedModel,
    /// The drift reference, when asked for and there is one.
    pub reference: Option<DatasetProfile>,
    /// Where the version came from, for a model from MLflow.
    pub provenance: Option<Provenance>,
}

enum Backend<'a> {
    Store(Registry),
    Mlflow(MlflowRegistry<'a>),
}

/// A job's registry, and its reference data if it names some.
pub struct ModelSource<'a> {
    backend: Backend<'a>,
    reference: Option<ReferenceSpec>,
    stores: &'a Stores,
    /// `STATE/references/`: profiles of `[model] reference` data.
    references: Location,
}

impl<'a> ModelSource<'a> {
    pub fn for_job(job: &JobSpec, settings: &Settings, stores: &'a Stores) -> Result<Self> {
        let state = stores.locate(&settings.state)?;
        let backend = match job.registry(settings) {
            ModelRegistry::Store(uri) => Backend::Store(Registry::new(stores.locate(&uri)?)),
            ModelRegistry::Mlflow(server) => {
                Backend::Mlflow(MlflowRegistry::new(&server, stores, &state)?)
            }
        };
        Ok(ModelSource {
            backend,
            reference: job.reference.clone(),
            stores,
            references: state.join("references"),
        })
    }

    /// The version a pin means now: an alias asks MLflow.
    pub fn resolve(&self, pin: &ModelPin) -> Result<ModelRef> {
        match (&self.backend, &pin.pin) {
            (Backend::Mlflow(m), _) => m.resolve(pin),
            (Backend::Store(_), Pin::Version(version)) => Ok(ModelRef {
                name: pin.name.clone(),
                version: *version,
            }),
            (Backend::Store(_), Pin::Alias(_)) => {
                bail!("model {pin}: nightshift's own registry has no aliases")
            }
        }
    }

    /// Loads the pinned version, with its drift reference if `reference` (and there is one).
    pub fn load(&self, pin: &ModelPin, reference: bool) -> Result<Pinned> {
        let (model, provenance) = match &self.backend {
            Backend::Store(registry) => {
                let Some(version) = pin.version() else {
                    bail!("model {pin}: nightshift's own registry has no aliases");
                };
                (registry.load(&version)?, None)
            }
            Backend::Mlflow(m) => {
                let (model, provenance) = m.load(pin)?;
                (model, Some(provenance))
            }
        };
        self.with_reference(model, provenance, reference)
    }

    /// The loaded model with the job's reference applied, and its profile if `reference`.
    fn with_reference(
        &self,
        mut model: LoadedModel,
        provenance: Option<Provenance>,
        reference: bool,
    ) -> Result<Pinned> {
        let profile = match (&self.reference, &self.backend) {
            (Some(spec), _) => {
                let profile = self.apply_reference(&mut model, spec)?;
                reference.then_some(profile)
            }
            (None, Backend::Store(registry)) if reference => registry.profile(&model.manifest)?,
            (None, _) => None,
        };
        Ok(Pinned {
            model,
            reference: profile,
            provenance,
        })
    }

    /// The manifest of a version a date was scored with: its holdout metrics and calibration
    /// for `evaluate`, its classes for reading the scores back.
    pub fn manifest(&self, model: &ModelRef) -> Result<ModelManifest> {
        match (&self.backend, &self.reference) {
            (Backend::Store(registry), None) => registry.manifest(model),
            _ => Ok(self.load_committed(model, false)?.model.manifest),
        }
    }

    /// The drift reference of a version (for the drift page).
    pub fn profile(&self, model: &ModelRef) -> Result<Option<DatasetProfile>> {
        Ok(self.load_committed(model, true)?.reference)
    }

    /// A version a committed date was scored with: as [`ModelSource::load`], but a version
    /// from MLflow is read from the cache first (it may be gone from the server since).
    fn load_committed(&self, model: &ModelRef, reference: bool) -> Result<Pinned> {
        match &self.backend {
            Backend::Store(_) => self.load(&ModelPin::from(model.clone()), reference),
            Backend::Mlflow(m) => self.with_reference(m.load_committed(model)?, None, reference),
        }
    }

    /// Profiles the job's reference data with the model (once per model version, reference
    /// files and target: cached under the state location) and puts what it measured into the
    /// model's manifest.
    fn apply_reference(
        &self,
        model: &mut LoadedModel,
        spec: &ReferenceSpec,
    ) -> Result<DatasetProfile> {
        let loc = self.stores.locate(&spec.uri)?;
        let files = list_data_files(&loc)
            .with_context(|| format!("listing the reference data {}", spec.uri))?;
        if files.is_empty() {
            bail!("[model] reference: no Parquet files at {}", spec.uri);
        }
        let key = fingerprint(&model.manifest, spec, &files);
        let cached_at = self.references.join(&format!("{}.json", &key[..32]));
        match cached_at.store.get(&cached_at.key) {
            Ok(bytes) => {
                let cached: CachedReference = serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", cached_at.uri()))?;
                cached.apply(&mut model.manifest);
                return Ok(cached.profile);
            }
            Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
        info!(model = %model.manifest.model_ref(), reference = %spec.uri, "Profiling the reference data (once: the profile is cached).");
        let profile = apply_reference(
            &mut model.manifest,
            &model.estimator,
            &loc,
            spec.target.as_deref(),
        )
        .with_context(|| format!("[model] reference {}", spec.uri))?;
        let cached = CachedReference::of(&model.manifest, profile);
        cached_at
            .store
            .put(&cached_at.key, Bytes::from(serde_json::to_vec(&cached)?))?;
        Ok(cached.profile)
    }
}

/// What profiling reference data gave, as cached.
#[derive(Serialize, Deserialize)]
struct CachedReference {
    target: String,
    training_data: String,
    training_rows: u64,
    holdout_rows: u64,
    dropped_rows: u64,
    metrics: BTreeMap<String, f64>,
    calibration: Option<crate::metric::Calibration>,
    profile: DatasetProfile,
}

impl CachedReference {
    fn of(m: &ModelManifest, profile: DatasetProfile) -> Self {
        CachedReference {
            target: m.target.clone(),
            training_data: m.training_data.clone(),
            training_rows: m.training_rows,
            holdout_rows: m.holdout_rows,
            dropped_rows: m.dropped_rows,
            metrics: m.metrics.clone(),
            calibration: m.calibration.clone(),
            profile,
        }
    }

    fn apply(&self, m: &mut ModelManifest) {
        m.target = self.target.clone();
        m.training_data = self.training_data.clone();
        m.training_rows = self.training_rows;
        m.holdout_rows = self.holdout_rows;
        m.dropped_rows = self.dropped_rows;
        m.metrics = self.metrics.clone();
        m.calibration = self.calibration.clone();
    }
}

/// The cache key of a reference profile: the model's artifact, the target, and each reference
/// object's name, size and version (ETag or modification time).
fn fingerprint(
    m: &ModelManifest,
    spec: &ReferenceSpec,
    files: &[crate::storage::ObjectMeta],
) -> String {
    let mut h = Sha256::new();
    h.update(m.model_ref().to_string().as_bytes());
    h.update([0]);
    h.update(m.artifact_sha256.as_bytes());
    // Where the file came from: MLflow's `models:/m-...` differs for a model logged again,
    // even with the same graph (an ONNX model's external weights are not in its sha256).
    h.update([0]);
    h.update(
        m.import
            .as_ref()
            .map_or("", |i| i.source.as_str())
            .as_bytes(),
    );
    h.update([0]);
    h.update(spec.target.as_deref().unwrap_or("").as_bytes());
    for f in files {
        h.update([0]);
        h.update(f.key.as_bytes());
        h.update(f.size.to_le_bytes());
        h.update(f.etag.as_bytes());
        h.update(
            f.last_modified
                .map(|t| t.timestamp_nanos_opt().unwrap_or_default())
                .unwrap_or_default()
                .to_le_bytes(),
        );
    }
    hex::encode(h.finalize())
}
