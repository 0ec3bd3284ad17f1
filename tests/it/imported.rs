//! Imported models score as their own libraries do. Every case under tests/data/models (made
//! by tests/data/make_models.py with pinned LightGBM, XGBoost, scikit-learn, skl2onnx and
//! onnxruntime) is imported into a fresh registry through the library's `model::import`,
//! loaded back as a job would load it, and scored from its Parquet input; each row's outputs
//! must equal the library's within the case's tolerance (LightGBM 1e-12, XGBoost and ONNX
//! 1e-6), with the same predicted labels. Bad files are refused in one line, never a panic.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use nightshift::model::formats::{self, Format};
use nightshift::model::{import, ImportRequest, LoadedModel, Registry};
use nightshift::schema::ModelRef;
use nightshift::storage::{Location, Stores, Uri};
use serde_json::Value;

use crate::util::{read_parquet, Env};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/models");

fn locate(path: &Path) -> Location {
    Stores::default()
        .locate(&Uri::Local(path.to_path_buf()))
        .unwrap()
}

fn registry(dir: &Path) -> Registry {
    std::fs::create_dir_all(dir).unwrap();
    Registry::new(locate(dir))
}

/// The model files of a case: `model.txt`, `model.json`, `model.ubj` or `model.onnx` (a case
/// may have both XGBoost encodings of one booster).
fn model_files(case: &Path) -> Vec<PathBuf> {
    [
        "model.txt",
        "model.json",
        "model.ubj",
        "model.onnx",
        "model.bin",
    ]
    .iter()
    .map(|f| case.join(f))
    .filter(|p| p.exists())
    .collect()
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(MODELS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").exists())
        .collect();
    cases.sort();
    cases
}

fn expected(case: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(case.join("expected.json")).unwrap()).unwrap()
}

/// Imports `file` as `name` (with the case's feature names where the file has none).
fn import_case(
    registry: &Registry,
    file: &Path,
    name: &str,
    exp: &Value,
) -> anyhow::Result<LoadedModel> {
    let features = exp["features_flag"].as_bool().unwrap_or(false).then(|| {
        exp["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    });
    let m = import(
        registry,
        &ImportRequest {
            file: locate(file),
            name: name.to_string(),
            format: None,
            features,
            reference: None,
            target: None,
        },
    )?;
    registry.load(&ModelRef {
        name: m.name,
        version: m.version,
    })
}

/// The label a JSON value names, as nightshift writes labels.
fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Scores `batch` and compares with the expected rows `[first, first + n)`; returns the
/// mismatches found.
fn compare(model: &LoadedModel, batch: &RecordBatch, exp: &Value, what: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let scored = model.score_batch(batch).unwrap();
    let n = batch.num_rows();
    let p = &scored.prediction;
    if scored.good.len() != n {
        problems.push(format!(
            "{what}: {} of {n} rows were bad",
            n - scored.good.len()
        ));
        return problems;
    }
    let tol = exp["tolerance"].as_f64().unwrap();
    if let Some(rows) = exp["output"].as_array() {
        for (r, row) in rows.iter().take(n).enumerate() {
            let want: Vec<f64> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect();
            let got: Vec<f64> = match &p.proba {
                Some(proba) => proba[r * want.len()..(r + 1) * want.len()].to_vec(),
                None => vec![p.score[r]],
            };
            // NaN on either side is a mismatch (f64::max would skip it).
            let far = got.len() != want.len()
                || got
                    .iter()
                    .zip(&want)
                    .any(|(g, w)| (g - w).abs().is_nan() || (g - w).abs() > tol);
            if far {
                problems.push(format!(
                    "{what}: row {r}: got {got:?}, the library {want:?}"
                ));
            }
        }
    }
    if let (Some(want), Some(classes)) = (exp["predicted"].as_array(), &p.class) {
        for (r, w) in want.iter().take(n).enumerate() {
            let got = &model.manifest.classes[classes[r]];
            if *got != label(w) {
                problems.push(format!(
                    "{what}: row {r}: predicted {got}, the library {}",
                    label(w)
                ));
            }
        }
    }
    // ONNX text inputs are not counted: their categories live inside the graph's encoders.
    if n > 1 && exp["format"] != "onnx" {
        if let Some(u) = exp["unknown_categories"].as_u64() {
            if scored.unknown_categories != u {
                problems.push(format!(
                    "{what}: {} unknown categories, expected {u}",
                    scored.unknown_categories
                ));
            }
        }
    }
    problems
}

#[test]
fn every_committed_model_scores_as_its_library() {
    let env = Env::new();
    let registry = registry(&env.path("registry"));
    let mut problems = Vec::new();
    let mut scored = 0;
    for case in cases() {
        let exp = expected(&case);
        let name = case.file_name().unwrap().to_str().unwrap().to_string();
        for file in model_files(&case) {
            let what = format!("{name}/{}", file.file_name().unwrap().to_str().unwrap());
            if let Some(word) = exp["refused"].as_str() {
                match import_case(&registry, &file, &name, &exp) {
                    Ok(_) => problems.push(format!("{what}: imported, but must be refused")),
                    Err(e) => {
                        let msg = format!("{e:#}");
                        if !msg.contains(word) || msg.contains('\n') {
                            problems.push(format!("{what}: refused with {msg:?}, which does not say '{word}' in one line"));
                        }
                    }
                }
                continue;
            }
            let model = match import_case(&registry, &file, &name, &exp) {
                Ok(m) => m,
                Err(e) => {
                    problems.push(format!("{what}: {e:#}"));
                    continue;
                }
            };
            let format = model.manifest.import.as_ref().unwrap().format;
            if format.to_string() != exp["format"].as_str().unwrap() {
                problems.push(format!("{what}: detected as {format}"));
            }
            problems.extend(compare(
                &model,
                &read_parquet(&case.join("input.parquet")),
                &exp,
                &what,
            ));
            let one = read_parquet(&case.join("input-one-row.parquet"));
            problems.extend(compare(&model, &one, &exp, &format!("{what} (one row)")));
            scored += 1;
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(scored >= 30, "only {scored} models scored");
}

#[test]
fn bad_files_are_refused_in_one_line() {
    let env = Env::new();
    let registry = registry(&env.path("registry"));
    let bad = Path::new(MODELS).join("bad");
    let cases = [
        (
            "model.pkl",
            vec![
                "pickle",
                "booster.save_model",
                "save_model(\"model.json\")",
                "skl2onnx.to_onnx",
            ],
        ),
        ("truncated_lightgbm.txt", vec!["LightGBM"]),
        ("truncated.onnx", vec!["ONNX"]),
        ("truncated.ubj", vec!["XGBoost"]),
    ];
    for (file, words) in cases {
        let err = import(
            &registry,
            &ImportRequest {
                file: locate(&bad.join(file)),
                name: "bad".into(),
                format: None,
                features: None,
                reference: None,
                target: None,
            },
        )
        .expect_err(file);
        let msg = format!("{err:#}");
        assert!(!msg.contains('\n'), "{file}: {msg}");
        for w in words {
            assert!(msg.contains(w), "{file}: {msg:?} does not say {w:?}");
        }
    }
    assert!(
        registry.names().unwrap().is_empty(),
        "nothing is registered"
    );
}

/// The compiled scorer equals the definition (`predict_reference`) bit for bit, on every
/// committed tree model and its inputs split at every block size.
#[test]
fn the_compiled_ensemble_equals_its_definition() {
    for case in cases() {
        let exp = expected(&case);
        if exp["refused"].is_string() {
            continue;
        }
        for file in model_files(&case) {
            let bytes = std::fs::read(&file).unwrap();
            let format = formats::detect(&bytes).unwrap();
            if format == Format::Onnx {
                continue;
            }
            let names = exp["features"].as_array().map(|f| {
                f.iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            });
            let Ok(parsed) = formats::parse(format, &bytes, names.as_deref()) else {
                continue;
            };
            let formats::Compiled::Trees(e) = &parsed.model else {
                continue;
            };
            // Inputs: the case's numeric values, with NaN, zeros and exact thresholds among them.
            let n = 700;
            let rows: Vec<f64> = (0..n * e.n_features)
                .map(|i| match i % 11 {
                    0 => f64::NAN,
                    1 => 0.0,
                    2 => -1e-36,
                    _ => ((i * 7919) % 1000) as f64 / 10.0 - 20.0,
                })
                .collect();
            let want = e.predict_reference(&rows, n);
            let got = e.predict(&rows, n);
            let same = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
            assert!(same, "{}: compiled and reference differ", file.display());
        }
    }
}
