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

/// A float64 column of a batch, by name.
fn f64_column(batch: &RecordBatch, name: &str) -> Vec<f64> {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .unwrap()
        .values()
        .to_vec()
}

const CHURN_LGB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/churn/models/churn_lightgbm.txt"
);

/// A job scoring the churn features with `churn_lgb@1`, class probabilities on.
fn lightgbm_job(env: &Env, input: &str, extra_output: &str) {
    env.write(
        "jobs/lgb.toml",
        &format!(
            r#"name = "lgb"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
date = "yesterday"

[input]
uri = "{input}"

[model]
name = "churn_lgb"
version = 1

[output]
uri = "out/scores/lgb/dt={{date}}/"
passthrough = ["id"]
{extra_output}
"#
        ),
    );
}

/// What a user does: import the committed LightGBM model with a reference, look at it, pin it
/// in a job, run it. The last line of `import` is NAME@VERSION; `show` says what the file is;
/// the run writes each class's probability, equal to the model's own, and a drift report.
#[test]
fn an_imported_lightgbm_model_is_shown_pinned_and_scored() {
    let env = Env::new();
    let out = env.ok(&[
        "model",
        "import",
        CHURN_LGB,
        "--name",
        "churn_lgb",
        "--reference",
        &format!("{}/train/", crate::util::FIXTURES),
        "--target",
        "churned",
    ]);
    assert_eq!(
        out.stdout.lines().last(),
        Some("churn_lgb@1"),
        "{}",
        out.stdout
    );
    let show = env.ok(&["model", "show", "churn_lgb@1"]).stdout;
    for want in [
        "format      lightgbm, written by LightGBM v4",
        "objective   binary sigmoid:1",
        "classes     0, 1",
        "trees       100 trees, 3100 leaves, depth up to",
        "compiled    ",
        "reference   ",
        "metrics     accuracy=",
        "  plan                     categorical, strings coded as pandas did: basic, enterprise, premium, standard",
        "  monthly_charges          numeric",
    ] {
        assert!(show.contains(want), "model show lacks {want:?}:\n{show}");
    }
    let list = env.ok(&["model", "list"]).stdout;
    assert!(list.contains("lightgbm"), "{list}");

    lightgbm_job(
        &env,
        &format!("{}/features/dt={{date}}/", crate::util::FIXTURES),
        "probabilities = true",
    );
    let run = env.ok(&["run", "lgb", "--date", "2026-11-01"]).stdout;
    assert!(run.contains("rows scored               2000"), "{run}");
    assert!(
        run.contains("  drift             "),
        "a drift report: {run}"
    );

    // The written probabilities are the model's: proba_1 is the score, and they sum to 1.
    let registry = registry(&env.path("out/registry"));
    let model = registry
        .load(&ModelRef {
            name: "churn_lgb".into(),
            version: 1,
        })
        .unwrap();
    let dir = env.path("out/scores/lgb/dt=2026-11-01");
    for part in ["part-00000.parquet", "part-00001.parquet"] {
        let scores = read_parquet(&dir.join(part));
        let input = read_parquet(
            &Path::new(crate::util::FIXTURES).join(format!("features/dt=2026-11-01/{part}")),
        );
        let want = model.score_batch(&input).unwrap().prediction;
        let col = |name: &str| f64_column(&scores, name);
        let (p0, p1, score) = (col("proba_0"), col("proba_1"), col("score"));
        assert_eq!(score, want.score);
        assert_eq!(p1, want.score);
        for (a, b) in p0.iter().zip(&p1) {
            assert_eq!(*a, 1.0 - b);
        }
        let names: Vec<String> = scores
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "id",
                "score",
                "prediction",
                "proba_0",
                "proba_1",
                "model_name",
                "model_version",
                "run_id",
                "scored_at"
            ]
        );
    }
}

/// Nulls in every kind of feature are scored as LightGBM scores NaN, not quarantined; a run
/// without a drift reference succeeds and says so; a probability column on a regressor, or a
/// missing feature column, fails the run before any output exists.
#[test]
fn nulls_are_data_and_mistakes_fail_before_any_output() {
    let env = Env::new();
    env.ok(&["model", "import", CHURN_LGB, "--name", "churn_lgb"]);
    let case = Path::new(MODELS).join("lightgbm_binary_categorical");
    std::fs::create_dir_all(env.path("in/dt=2026-11-01")).unwrap();
    std::fs::copy(
        case.join("input.parquet"),
        env.path("in/dt=2026-11-01/part-0.parquet"),
    )
    .unwrap();
    lightgbm_job(&env, "in/dt={date}/", "");
    let run = env.ok(&["run", "lgb", "--date", "2026-11-01"]).stdout;
    assert!(run.contains("rows read                  300"), "{run}");
    assert!(run.contains("rows scored                300"), "{run}");
    assert!(run.contains("rows quarantined             0"), "{run}");
    assert!(run.contains("unknown categories"), "{run}");
    assert!(
        run.contains("drift             no report: model churn_lgb@1 has no drift reference"),
        "{run}"
    );

    // A regressor has no class probabilities: refused before anything is written.
    let reg = Path::new(MODELS).join("lightgbm_regression/model.txt");
    env.ok(&["model", "import", reg.to_str().unwrap(), "--name", "reg"]);
    let job = std::fs::read_to_string(env.path("jobs/lgb.toml"))
        .unwrap()
        .replace("name = \"churn_lgb\"", "name = \"reg\"")
        .replace(
            "passthrough = [\"id\"]",
            "passthrough = [\"id\"]\nprobabilities = true",
        )
        .replace("out/scores/lgb/", "out/scores/reg/");
    env.write("jobs/lgb.toml", &job);
    let out = env.run(&["run", "lgb", "--date", "2026-11-01"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("is a regressor, which has no class probabilities"),
        "{}",
        out.stderr
    );
    assert!(!env.path("out/scores/reg").exists());

    // An input without one of the model's columns: named, nothing written.
    let input = read_parquet(&env.path("in/dt=2026-11-01/part-0.parquet"));
    let i = input.schema().index_of("region").unwrap();
    let mut without = input.clone();
    without.remove_column(i);
    std::fs::create_dir_all(env.path("in/dt=2026-11-02")).unwrap();
    let f = std::fs::File::create(env.path("in/dt=2026-11-02/part-0.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, without.schema(), None).unwrap();
    w.write(&without).unwrap();
    w.close().unwrap();
    lightgbm_job(&env, "in/dt={date}/", "");
    let out = env.run(&["run", "lgb", "--date", "2026-11-02"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("column 'region' is missing (the model needs it)"),
        "{}",
        out.stderr
    );
    assert!(!env.path("out/scores/lgb/dt=2026-11-02").exists());
}

/// The command line refuses what it cannot import in one line, and registers nothing.
#[test]
fn the_command_line_refuses_bad_imports_in_one_line() {
    let env = Env::new();
    let bad = Path::new(MODELS).join("bad");
    let pkl = bad.join("model.pkl");
    let out = env.run(&["model", "import", pkl.to_str().unwrap(), "--name", "x"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("skl2onnx.to_onnx"), "{}", out.stderr);

    // A file without feature names needs --features, with as many names as inputs.
    let poisson = Path::new(MODELS).join("xgboost_poisson/model.json");
    let p = poisson.to_str().unwrap();
    let out = env.run(&["model", "import", p, "--name", "x"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--features a,b,c"), "{}", out.stderr);
    let out = env.run(&["model", "import", p, "--name", "x", "--features", "a,b"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("the model takes 4 features; --features names 2"),
        "{}",
        out.stderr
    );
    // --format overrides detection: a LightGBM file read as ONNX is refused, not guessed.
    let out = env.run(&[
        "model", "import", CHURN_LGB, "--name", "x", "--format", "onnx",
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(!env.path("out/registry/x").exists());
}

/// `[output] probabilities = true` is for every classifier, nightshift's own included: the
/// churn logistic regression writes proba_0 and proba_1, which sum to 1, proba_1 its score.
#[test]
fn a_trained_classifier_writes_every_class_probability_too() {
    let env = Env::new();
    env.train_churn();
    env.job(
        "churn",
        &format!("{}/features/dt={{date}}/", crate::util::FIXTURES),
        "",
    );
    let job = std::fs::read_to_string(env.path("jobs/churn.toml"))
        .unwrap()
        .replace(
            "passthrough = [\"id\"]",
            "passthrough = [\"id\"]\nprobabilities = true",
        );
    env.write("jobs/churn.toml", &job);
    env.ok(&["run", "churn", "--date", "2026-11-01"]);
    let scores = read_parquet(&env.path("out/scores/churn/dt=2026-11-01/part-00000.parquet"));
    let col = |name: &str| f64_column(&scores, name);
    let (p0, p1, score) = (col("proba_0"), col("proba_1"), col("score"));
    assert!(!score.is_empty());
    assert_eq!(p1, score);
    for (a, b) in p0.iter().zip(&p1) {
        assert!((a + b - 1.0).abs() < 1e-15, "{a} + {b}");
    }
}
