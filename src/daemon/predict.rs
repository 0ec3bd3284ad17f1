//! Online scoring: JSON rows in, scores out, through the same preprocessing and model as
//! batch scoring. The rows become an Arrow record batch typed by the model's signature
//! (numeric features as float64, categorical ones as strings) and go through the same
//! [`Scorer`] a run uses, so a row scores the same online as in a batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use chrono::Utc;
use serde_json::{json, Map, Value};

use crate::config::BadRowPolicy;
use crate::model::{LoadedModel, Registry, RegistryError};
use crate::schema::{FeatureKind, ModelRef};
use crate::score::{BatchOrigin, Scorer};
use crate::storage::Uri;

/// Rows one request may score.
pub const MAX_ROWS: usize = 10_000;

/// A request the caller must fix (HTTP 400), with every mistake found.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    pub message: String,
    pub errors: Vec<String>,
}

impl BadRequest {
    fn one(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            errors: Vec::new(),
        }
    }
}

/// Errors reported per request, at most; the count says how many there were in all.
const MAX_REPORTED: usize = 20;

/// Parses a request body `{"rows": [{feature: value, ...}, ...]}` into a batch with one column
/// per signature field. Fields the model does not take are ignored.
pub fn rows_to_batch(model: &LoadedModel, body: &[u8]) -> Result<RecordBatch, BadRequest> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| BadRequest::one(format!("the body is not valid JSON: {e}")))?;
    let rows = match body.get("rows") {
        Some(Value::Array(rows)) => rows,
        Some(_) => return Err(BadRequest::one("'rows' must be an array of objects")),
        None => {
            return Err(BadRequest::one(
                "missing field 'rows': send {\"rows\": [{\"feature\": value, ...}]}",
            ))
        }
    };
    if rows.is_empty() {
        return Err(BadRequest::one("'rows' is empty"));
    }
    if rows.len() > MAX_ROWS {
        return Err(BadRequest::one(format!(
            "too many rows: {}, at most {MAX_ROWS} per request",
            rows.len()
        )));
    }
    let signature = &model.manifest.signature;
    let mut errors = Vec::new();
    let mut objects: Vec<&Map<String, Value>> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        match row {
            Value::Object(o) => objects.push(o),
            other => errors.push(format!("row {i}: must be an object, found {}", kind(other))),
        }
    }
    let mut fields = Vec::with_capacity(signature.len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(signature.len());
    for f in signature {
        let name = f.name.as_str();
        let missing = |i: usize, errors: &mut Vec<String>| {
            errors.push(format!("row {i}: missing field '{name}'"));
        };
        match f.kind {
            FeatureKind::Numeric => {
                let mut values = Vec::with_capacity(objects.len());
                for (i, o) in objects.iter().enumerate() {
                    match o.get(name) {
                        None => missing(i, &mut errors),
                        Some(Value::Null) => values.push(None),
                        Some(Value::Number(n)) => values.push(n.as_f64()),
                        Some(other) => errors.push(format!(
                            "row {i}: field '{name}' must be a number or null, found {}",
                            kind(other)
                        )),
                    }
                }
                fields.push(Field::new(name, DataType::Float64, true));
                columns.push(Arc::new(Float64Array::from(values)));
            }
            FeatureKind::Categorical => {
                let mut values: Vec<Option<&str>> = Vec::with_capacity(objects.len());
                for (i, o) in objects.iter().enumerate() {
                    match o.get(name) {
                        None => missing(i, &mut errors),
                        Some(Value::Null) => values.push(None),
                        Some(Value::String(s)) => values.push(Some(s)),
                        Some(other) => errors.push(format!(
                            "row {i}: field '{name}' must be a string or null, found {}",
                            kind(other)
                        )),
                    }
                }
                fields.push(Field::new(name, DataType::Utf8, true));
                columns.push(Arc::new(StringArray::from(values)));
            }
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(MAX_REPORTED);
        return Err(BadRequest {
            message: format!(
                "{n} error(s) in the rows: {}{}",
                errors[0],
                if n > 1 {
                    " (all listed in 'errors')"
                } else {
                    ""
                }
            ),
            errors,
        });
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| BadRequest::one(format!("cannot build the rows: {e}")))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Scores a batch from [`rows_to_batch`]: one entry per row, in order. A row the model cannot
/// score (a null where the model has no imputer) gets `{"error": reason}`.
pub fn score(model: Arc<LoadedModel>, batch: &RecordBatch) -> Result<Value> {
    let scorer = Scorer::new(
        model.clone(),
        batch.schema().as_ref(),
        Vec::new(),
        "online".into(),
        Utc::now(),
        BadRowPolicy::Quarantine,
    )?;
    let scored = scorer.score(
        batch,
        &BatchOrigin {
            uri: "request",
            first_row: 0,
        },
    )?;
    let mut bad: HashMap<usize, String> = HashMap::new();
    if let Some(q) = &scored.quarantine {
        let rows = q
            .column_by_name("source_row")
            .expect("quarantine batches have source_row")
            .as_primitive::<Int64Type>();
        let reasons = q
            .column_by_name("reason")
            .expect("quarantine batches have reason")
            .as_string::<i32>();
        for i in 0..q.num_rows() {
            bad.insert(rows.value(i) as usize, reasons.value(i).to_string());
        }
    }
    let out = &scored.output;
    let scores = out
        .column_by_name("score")
        .expect("outputs have a score")
        .as_primitive::<Float64Type>();
    let predictions = out.column_by_name("prediction");
    let mut good = 0;
    let mut results = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        if let Some(reason) = bad.get(&i) {
            results.push(json!({ "error": reason }));
            continue;
        }
        let mut r = Map::new();
        r.insert("score".into(), json!(scores.value(good)));
        if let Some(p) = predictions {
            r.insert("prediction".into(), label(p, good));
        }
        results.push(Value::Object(r));
        good += 1;
    }
    Ok(json!({
        "model": model.manifest.model_ref().to_string(),
        "predictions": results,
        "unknown_categories": scored.counts.unknown_categories,
    }))
}

fn label(col: &ArrayRef, i: usize) -> Value {
    match col.data_type() {
        DataType::Boolean => json!(col.as_boolean().value(i)),
        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(i)),
        DataType::Utf8 => json!(col.as_string::<i32>().value(i)),
        _ => Value::Null,
    }
}

/// Loaded model versions, kept: a version is immutable once registered. Keyed by registry,
/// name and version: two registries may each hold a different `churn@1`.
#[derive(Default)]
pub struct ModelCache {
    models: Mutex<HashMap<(String, String, u32), Arc<LoadedModel>>>,
}

/// Why a model could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The version is not registered (HTTP 404): the registry's own
    /// [`RegistryError::NotFound`], with the versions it has.
    #[error("{}", not_found(model, registry, versions))]
    NotFound {
        model: ModelRef,
        registry: Uri,
        versions: Vec<u32>,
    },
    #[error(transparent)]
    Other(anyhow::Error),
}

impl From<anyhow::Error> for ModelError {
    fn from(e: anyhow::Error) -> Self {
        match RegistryError::of(&e) {
            Some(RegistryError::NotFound {
                model,
                registry,
                versions,
            }) => ModelError::NotFound {
                model: model.clone(),
                registry: registry.clone(),
                versions: versions.clone(),
            },
            None => ModelError::Other(e),
        }
    }
}

/// The API's words for a missing version: the model's name alone when it has none.
fn not_found(model: &ModelRef, registry: &Uri, versions: &[u32]) -> String {
    if versions.is_empty() {
        return format!("no model named '{}' in the registry {registry}", model.name);
    }
    let versions: Vec<String> = versions.iter().map(u32::to_string).collect();
    format!(
        "model {model} is not in the registry {registry} (versions: {})",
        versions.join(", ")
    )
}

impl ModelCache {
    /// The version from the registry (blocking: call off the async runtime). The name must
    /// be valid ([`Registry::check_name`]); an invalid one is an error, never a listing. A
    /// version that is not registered is [`ModelError::NotFound`], from the registry's answer:
    /// the registry is listed only then, and only by the registry.
    pub fn get(
        &self,
        registry: &Registry,
        model: &ModelRef,
    ) -> Result<Arc<LoadedModel>, ModelError> {
        let key = (
            registry.uri().to_string(),
            model.name.clone(),
            model.version,
        );
        if let Some(m) = self.models.lock().expect("model cache lock").get(&key) {
            return Ok(m.clone());
        }
        let loaded = Arc::new(registry.load(model)?);
        self.models
            .lock()
            .expect("model cache lock")
            .insert(key, loaded.clone());
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_version_is_a_404_from_the_registry_error() {
        let model = ModelRef {
            name: "churn".into(),
            version: 2,
        };
        let registry = Uri::Local("out/registry/".into());
        let from_registry = |versions: Vec<u32>| {
            ModelError::from(
                anyhow::Error::new(RegistryError::NotFound {
                    model: model.clone(),
                    registry: registry.clone(),
                    versions,
                })
                .context("loading churn@2"),
            )
        };
        let err = from_registry(vec![1, 3]);
        let ModelError::NotFound { versions, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(versions, &[1, 3]);
        assert_eq!(
            err.to_string(),
            "model churn@2 is not in the registry out/registry/ (versions: 1, 3)"
        );
        assert_eq!(
            from_registry(Vec::new()).to_string(),
            "no model named 'churn' in the registry out/registry/"
        );
        // Anything else stays what it was.
        let other = ModelError::from(anyhow::anyhow!("checksum mismatch"));
        assert!(matches!(other, ModelError::Other(_)), "{other}");
    }
}
