//! The `MLmodel` file at the root of every MLflow model: which flavors saved it, which file
//! each flavor reads, the model's `model_uuid`, and its signature (input column names and
//! types). nightshift reads the flavors whose files it compiles itself (onnx, lightgbm,
//! xgboost) and refuses the ones that are Python objects (pickles, skops) in one line that
//! names the fix.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct MlModel {
    #[serde(default)]
    flavors: BTreeMap<String, yaml_serde::Value>,
    #[serde(default)]
    pub model_uuid: Option<String>,
    #[serde(default)]
    pub model_id: Option<String>,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub mlflow_version: Option<String>,
    #[serde(default)]
    signature: Option<RawSignature>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawSignature {
    /// A JSON string, as MLflow writes it.
    #[serde(default)]
    inputs: Option<String>,
}

/// One input column of a signature (MLflow's `ColSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InputColumn {
    pub name: String,
    /// `double`, `float`, `long`, `integer`, `boolean`, `string`, ...
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// What a flavor tells nightshift to compile: the format and the file, relative to the
/// model's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavor {
    /// `onnx`, `lightgbm` or `xgboost`, as MLflow names the flavor.
    pub name: &'static str,
    pub file: String,
}

/// The one line for a model nightshift will not load: how to log it so that it can.
const FIX: &str = "log the booster (mlflow.lightgbm.log_model(model.booster_, ...), \
     mlflow.xgboost.log_model(model.get_booster(), ...)), or convert the model to ONNX and log \
     it with mlflow.onnx.log_model";

impl MlModel {
    pub fn parse(bytes: &[u8]) -> Result<MlModel> {
        yaml_serde::from_slice(bytes).context("the MLmodel file is not MLflow's YAML")
    }

    /// The flavor to score, in nightshift's order of preference (onnx, lightgbm, xgboost).
    pub fn flavor(&self) -> Result<Flavor> {
        let field = |flavor: &str, key: &str| -> Option<String> {
            self.flavors
                .get(flavor)?
                .get(key)?
                .as_str()
                .map(str::to_string)
        };
        for name in ["onnx", "lightgbm", "xgboost"] {
            if !self.flavors.contains_key(name) {
                continue;
            }
            let Some(file) = field(name, "data") else {
                bail!("the MLmodel's {name} flavor names no data file");
            };
            let class = field(name, "model_class").unwrap_or_default();
            let python_object = [".pkl", ".pickle", ".skops", ".joblib"]
                .iter()
                .any(|e| file.ends_with(e));
            if name == "lightgbm" && (python_object || class.starts_with("lightgbm.sklearn")) {
                bail!(
                    "the model was logged through LightGBM's scikit-learn API ({}, saved as \
                     {file}: a Python object, which nightshift does not load): {FIX}",
                    if class.is_empty() {
                        "LGBMModel"
                    } else {
                        &class
                    }
                );
            }
            if python_object {
                bail!(
                    "the model's {name} file {file} is a pickled Python object, which nightshift \
                     does not load: {FIX}"
                );
            }
            check_relative(&file)?;
            return Ok(Flavor { name, file });
        }
        let flavors: Vec<&str> = self
            .flavors
            .keys()
            .map(String::as_str)
            .filter(|f| *f != "python_function")
            .collect();
        if flavors.contains(&"sklearn") {
            bail!(
                "the model was logged with mlflow.sklearn (a pickled or skops Python object, which \
                 nightshift does not load): {FIX}"
            );
        }
        bail!(
            "the model has no flavor nightshift reads (it has {}; nightshift reads onnx, lightgbm \
             and xgboost): {FIX}",
            if flavors.is_empty() {
                "none".to_string()
            } else {
                flavors.join(", ")
            }
        )
    }

    /// The signature's named input columns, in order; `None` when the model has no signature
    /// or a tensor signature (whose inputs have no column names).
    pub fn inputs(&self) -> Result<Option<Vec<InputColumn>>> {
        let Some(text) = self.signature.as_ref().and_then(|s| s.inputs.as_deref()) else {
            return Ok(None);
        };
        let specs: Vec<serde_json::Value> =
            serde_json::from_str(text).context("the MLmodel's signature inputs are not JSON")?;
        if specs
            .iter()
            .any(|s| s.get("type").and_then(|t| t.as_str()) == Some("tensor"))
        {
            return Ok(None);
        }
        // A column spec may have no name (a signature inferred from a bare array): then the
        // model's own input names stand.
        if specs
            .iter()
            .any(|s| s.get("name").and_then(|n| n.as_str()).is_none())
        {
            return Ok(None);
        }
        let columns: Vec<InputColumn> = specs
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()
            .context("the MLmodel's signature inputs are not column specs")?;
        Ok(Some(columns))
    }
}

/// Refuses a file name from an MLmodel that would climb out of the model's folder.
pub fn check_relative(file: &str) -> Result<()> {
    let plain = !file.is_empty()
        && !file.starts_with('/')
        && !file.contains('\\')
        && file
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if !plain {
        bail!("the MLmodel names '{file}', which is not a file inside the model");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(case: &str) -> MlModel {
        let path = format!(
            "{}/tests/data/mlflow/{case}/MLmodel",
            env!("CARGO_MANIFEST_DIR")
        );
        MlModel::parse(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn the_committed_flavors_are_read_or_refused() {
        let lgb = committed("lightgbm");
        assert_eq!(
            lgb.flavor().unwrap(),
            Flavor {
                name: "lightgbm",
                file: "model.lgb".into()
            }
        );
        let inputs = lgb.inputs().unwrap().unwrap();
        assert_eq!(inputs[0].name, "tenure_months");
        assert_eq!(inputs[0].kind, "double");
        assert!(lgb.model_uuid.as_deref().is_some_and(|u| u.len() == 32));
        assert_eq!(committed("xgboost_ubj").flavor().unwrap().file, "model.ubj");
        assert_eq!(
            committed("xgboost_json").flavor().unwrap().file,
            "model.json"
        );
        assert_eq!(committed("onnx").flavor().unwrap().name, "onnx");
        for (case, says) in [
            ("sklearn", "mlflow.sklearn"),
            ("lightgbm_sklearn", "scikit-learn API"),
        ] {
            let err = format!("{:#}", committed(case).flavor().unwrap_err());
            assert!(err.contains(says), "{case}: {err}");
            assert!(err.contains("mlflow.onnx"), "{case}: {err}");
            assert!(!err.contains('\n'), "{case}: {err}");
        }
    }

    #[test]
    fn files_outside_the_model_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "a\\b"] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
        check_relative("data/model.onnx").unwrap();
    }
}
