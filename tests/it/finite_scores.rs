//! Scores are finite: a model output that is NaN or infinite is never written as a score. Gaussian
//! naive Bayes normalises in log space, so a row far from all training data still gets a
//! probability; whatever non-finite output remains (or a non-finite input) is a bad row with its
//! reason, handled by the job's `on_bad_rows` policy.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use linfa_bayes::NaiveBayes;
use ndarray::Axis;
use parquet::arrow::ArrowWriter;
use serde_json::Value;

use nightshift::model::{log_sum_exp, Estimator, LoadedModel, Registry};
use nightshift::schema::ModelRef;
use nightshift::storage::{Stores, Uri};

use crate::util::{files_under, read_parquet, Env, FIXTURES};

const DAY: &str = "2026-11-01";

fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn load(env: &Env, name: &str) -> LoadedModel {
    let root = Stores::default()
        .locate(&Uri::Local(env.path("out/registry")))
        .unwrap();
    Registry::new(root)
        .load(&ModelRef {
            name: name.into(),
            version: 1,
        })
        .unwrap()
}

/// A job scoring `input` with `model@1`; bad rows may be up to half the rows.
fn job(env: &Env, name: &str, model: &str, input: &str, on_bad_rows: &str) {
    env.write(
        &format!("jobs/{name}.toml"),
        &format!(
            r#"name = "{name}"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
date = "yesterday"

[input]
uri = "{input}"

[model]
name = "{model}"
version = 1

[output]
uri = "out/scores/{name}/dt={{date}}/"
passthrough = ["id"]

[run]
on_bad_rows = "{on_bad_rows}"
max_bad_rows_fraction = 0.5
"#
        ),
    );
}

/// The counts of the job's only run record.
fn counts(env: &Env, job: &str) -> Value {
    let dir = env.path(&format!("out/state/runs/{job}"));
    let files = files_under(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let rec: Value = serde_json::from_slice(&std::fs::read(dir.join(&files[0])).unwrap()).unwrap();
    rec["counts"].clone()
}

fn ids(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

fn scores(batch: &RecordBatch) -> Vec<f64> {
    batch
        .column_by_name("score")
        .unwrap()
        .as_primitive::<Float64Type>()
        .values()
        .to_vec()
}

/// (id, reason) of each quarantined row, by id.
fn reasons(batch: &RecordBatch) -> Vec<(i64, String)> {
    let r = batch.column_by_name("reason").unwrap().as_string::<i32>();
    let mut out: Vec<(i64, String)> = ids(batch)
        .into_iter()
        .zip(r.iter().map(|r| r.unwrap().to_string()))
        .collect();
    out.sort();
    out
}

#[test]
fn log_sum_exp_is_stable() {
    // Both terms underflow exp(); factoring out the largest keeps the sum at least 1.
    let lse = log_sum_exp(&[-1e4, -1e4 - 1.0]);
    assert!(
        (lse - (-1e4 + (1.0 + (-1.0f64).exp()).ln())).abs() < 1e-9,
        "{lse}"
    );
    assert_eq!(
        [-1e4, -1e4 - 1.0].map(f64::exp),
        [0.0, 0.0],
        "the naive way underflows"
    );
    // Equal inputs: ln(n) above each.
    let lse = log_sum_exp(&[-800.0, -800.0, -800.0]);
    assert!((lse - (-800.0 + 3f64.ln())).abs() < 1e-12, "{lse}");
    let lse = log_sum_exp(&[2.0, 2.0]);
    assert!((lse - (2.0 + 2f64.ln())).abs() < 1e-12, "{lse}");
    // Large positive inputs do not overflow either.
    let lse = log_sum_exp(&[1e4, 1e4]);
    assert!((lse - (1e4 + 2f64.ln())).abs() < 1e-9, "{lse}");
    // A single class is its own normaliser, so its probability is exactly 1.
    for v in [-1e300, -745.5, 0.0, 42.0] {
        assert_eq!(log_sum_exp(&[v]), v);
        assert_eq!((v - log_sum_exp(&[v])).exp(), 1.0);
    }
    // Probabilities from it sum to 1 even where every exp() underflows.
    let jll = [-1e6, -1e6 - 0.5, -1e6 - 30.0];
    let lse = log_sum_exp(&jll);
    let total: f64 = jll.iter().map(|v| (v - lse).exp()).sum();
    // To rounding of the inputs themselves: an ulp of 1e6 is about 1e-10.
    assert!((total - 1.0).abs() < 1e-9, "{total}");
    // No likelihood at all stays undefined: scoring quarantines it.
    assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
    assert_eq!(
        log_sum_exp(&[f64::NEG_INFINITY, f64::NEG_INFINITY]),
        f64::NEG_INFINITY
    );
    assert!(log_sum_exp(&[f64::NEG_INFINITY, f64::NAN]).is_nan());
    assert!(log_sum_exp(&[0.0, f64::NAN]).is_nan());
}

#[test]
fn gaussian_nb_gives_a_probability_to_a_row_far_from_the_training_data() {
    let env = Env::new();
    env.ok(&[
        "model",
        "train",
        "--data",
        &format!("{FIXTURES}/train/"),
        "--target",
        "churned",
        "--algorithm",
        "gaussian-nb",
        "--name",
        "churn",
        "--exclude",
        "id",
    ]);
    let model = load(&env, "churn");
    let Estimator::GaussianNb { model: nb } = &model.estimator else {
        panic!("churn@1 is not naive Bayes");
    };
    assert_eq!(model.manifest.classes, ["0", "1"]);

    // On the training rows ours equals linfa's predict_proba (where linfa's is finite).
    let train = read_parquet(&Path::new(FIXTURES).join("train/train.parquet"));
    let enc = model.manifest.preprocessing.encode(&train).unwrap();
    let good: Vec<usize> = (0..enc.bad.len())
        .filter(|&i| enc.bad[i].is_none())
        .collect();
    let x = enc.x.select(Axis(0), &good);
    assert!(x.nrows() > 3000, "{} usable training rows", x.nrows());
    let ours = model.predict(x.view()).score;
    let (linfa, classes) = nb.predict_proba(x.view());
    assert_eq!(classes, [&0, &1]);
    let mut compared = 0;
    for (i, (&a, &b)) in ours.iter().zip(linfa.column(1)).enumerate() {
        if b.is_finite() {
            assert!((a - b).abs() <= 1e-12, "row {i}: ours {a}, linfa {b}");
            compared += 1;
        }
    }
    assert_eq!(compared, x.nrows(), "linfa is finite on all training rows");

    // A row with monthly charges of 1e8 (millions of standard deviations out): every class's
    // log-likelihood is far below -745, so linfa's exp() underflows and it normalises 0 by 0.
    let col = model
        .manifest
        .preprocessing
        .encoded_names()
        .iter()
        .position(|n| n == "monthly_charges")
        .unwrap();
    let mut far = x.slice(ndarray::s![0..2, ..]).to_owned();
    far[[0, col]] = 1e8;
    far[[1, col]] = -1e8;
    let (linfa, _) = nb.predict_proba(far.view());
    assert!(
        linfa.iter().all(|p| !p.is_finite()),
        "linfa's own probabilities for these rows: {linfa}"
    );
    let pred = model.predict(far.view());
    for s in &pred.score {
        assert!(s.is_finite() && (0.0..=1.0).contains(s), "score {s}");
    }

    // End to end: the same rows in a day's input are scored, not quarantined. A value whose
    // squared distance overflows f64 (1e200) has no likelihood under any class: quarantined.
    let input =
        read_parquet(&Path::new(FIXTURES).join(format!("features/dt={DAY}/part-00000.parquet")));
    let row_ids = ids(&input);
    let charges_idx = input.schema().index_of("monthly_charges").unwrap();
    let mut charges: Vec<Option<f64>> = input
        .column(charges_idx)
        .as_primitive::<Float64Type>()
        .iter()
        .collect();
    charges[0] = Some(1e8);
    charges[1] = Some(-1e8);
    charges[2] = Some(1e200);
    let mut cols: Vec<Arc<dyn Array>> = input.columns().to_vec();
    cols[charges_idx] = Arc::new(Float64Array::from(charges));
    let changed = RecordBatch::try_new(input.schema(), cols).unwrap();
    write_parquet(&env.path(&format!("far/dt={DAY}/a.parquet")), &changed);
    job(&env, "far", "churn", "far/dt={date}/", "quarantine");
    env.ok(&["run", "far", "--date", DAY]);

    let out = read_parquet(&env.path(&format!("out/scores/far/dt={DAY}/a.parquet")));
    let scored = ids(&out);
    let s = scores(&out);
    assert!(
        s.iter().all(|s| (0.0..=1.0).contains(s)),
        "scores are probabilities"
    );
    for id in &row_ids[0..2] {
        assert!(
            scored.contains(id),
            "row {id} with extreme charges is scored"
        );
    }
    let q = read_parquet(&env.path(&format!("out/scores/far_quarantine/dt={DAY}/a.parquet")));
    assert!(
        reasons(&q).contains(&(
            row_ids[2],
            "the model returned a non-finite score (NaN)".to_string()
        )),
        "{:?}",
        reasons(&q)
    );
    assert!(!scored.contains(&row_ids[2]));
}

/// Training data for `y = 3a - 2b + 5`, which linear regression fits exactly.
fn linear_training_data() -> RecordBatch {
    let a: Vec<f64> = (0..200).map(|i| i as f64).collect();
    let b: Vec<f64> = (0..200).map(|i| ((i * 7) % 13) as f64).collect();
    let y: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| 3.0 * a - 2.0 * b + 5.0)
        .collect();
    RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..200)) as Arc<dyn Array>,
        ),
        ("a", Arc::new(Float64Array::from(a))),
        ("b", Arc::new(Float64Array::from(b))),
        ("y", Arc::new(Float64Array::from(y))),
    ])
    .unwrap()
}

#[test]
fn a_non_finite_model_output_is_quarantined_with_its_reason_never_written() {
    let env = Env::new();
    write_parquet(&env.path("train/train.parquet"), &linear_training_data());
    env.ok(&[
        "model",
        "train",
        "--data",
        "train/",
        "--target",
        "y",
        "--algorithm",
        "linear",
        "--name",
        "lin",
        "--exclude",
        "id",
    ]);
    let manifest = load(&env, "lin").manifest;
    let std_b = match &manifest.preprocessing.features[1] {
        nightshift::model::FeatureTransform::Numeric { scale, .. } => scale.unwrap().1,
        f => panic!("{f:?}"),
    };
    assert!(
        std_b > 1.0,
        "b's standard deviation {std_b}: 1e308 stays finite once scaled"
    );

    // Ten ordinary rows, then rows whose output overflows (+inf, -inf, inf - inf), an infinite
    // input, and a NaN input.
    let mut a: Vec<f64> = (0..10).map(|i| i as f64).collect();
    let mut b: Vec<f64> = vec![1.0; 10];
    a.extend([1e308, 0.0, 1e308, f64::INFINITY, f64::NAN]);
    b.extend([0.0, 1e308, 1e308, 0.0, 0.0]);
    let n = a.len() as i64;
    let input = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(100..100 + n)) as Arc<dyn Array>,
        ),
        ("a", Arc::new(Float64Array::from(a))),
        ("b", Arc::new(Float64Array::from(b))),
    ])
    .unwrap();
    write_parquet(&env.path(&format!("in/dt={DAY}/part-0.parquet")), &input);
    job(&env, "lin", "lin", "in/dt={date}/", "quarantine");
    let run = env.ok(&["run", "lin", "--date", DAY]);
    assert!(
        run.stdout.contains("rows quarantined             5"),
        "{}",
        run.stdout
    );
    let c = counts(&env, "lin");
    assert_eq!(c["rows_in"], 15);
    assert_eq!(c["rows_scored"], 10);
    assert_eq!(c["rows_quarantined"], 5);

    let out = read_parquet(&env.path(&format!("out/scores/lin/dt={DAY}/part-0.parquet")));
    assert_eq!(ids(&out), (100..110).collect::<Vec<_>>());
    let s = scores(&out);
    assert!(s.iter().all(|s| s.is_finite()), "{s:?}");
    assert!((s[2] - (3.0 * 2.0 - 2.0 + 5.0)).abs() < 1e-9, "{s:?}");

    let q = read_parquet(&env.path(&format!(
        "out/scores/lin_quarantine/dt={DAY}/part-0.parquet"
    )));
    assert_eq!(
        reasons(&q),
        [
            (
                110,
                "the model returned a non-finite score (inf)".to_string()
            ),
            (
                111,
                "the model returned a non-finite score (-inf)".to_string()
            ),
            (
                112,
                "the model returned a non-finite score (NaN)".to_string()
            ),
            (113, "a is infinite".to_string()),
            (114, "a is NaN".to_string()),
        ]
    );

    // With on_bad_rows = "fail" the first such row ends the run, with its reason.
    job(&env, "lin_strict", "lin", "in/dt={date}/", "fail");
    let run = env.run(&["run", "lin_strict", "--date", DAY]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains("row 10 of")
            && run
                .stderr
                .contains("cannot be scored: the model returned a non-finite score (inf)"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_input_too_large_to_standardise_is_a_bad_row() {
    // Logistic regression standardises its inputs: f64::MAX over a standard deviation below 1
    // is infinite, and the model never sees an infinite input.
    let env = Env::new();
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..100)) as Arc<dyn Array>,
        ),
        (
            "a",
            Arc::new(Float64Array::from_iter_values(
                (0..100).map(|i| i as f64 / 100.0),
            )),
        ),
        (
            "y",
            Arc::new(Int64Array::from_iter_values(
                (0..100).map(|i| i64::from(i >= 50)),
            )),
        ),
    ])
    .unwrap();
    write_parquet(&env.path("train/train.parquet"), &batch);
    env.ok(&[
        "model",
        "train",
        "--data",
        "train/",
        "--target",
        "y",
        "--algorithm",
        "logistic",
        "--name",
        "small",
        "--exclude",
        "id",
    ]);
    let input = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])) as Arc<dyn Array>,
        ),
        (
            "a",
            Arc::new(Float64Array::from(vec![0.7, f64::MAX, -f64::MAX, 0.2, 1e6])),
        ),
    ])
    .unwrap();
    write_parquet(&env.path(&format!("in/dt={DAY}/part-0.parquet")), &input);
    job(&env, "small", "small", "in/dt={date}/", "quarantine");
    env.ok(&["run", "small", "--date", DAY]);
    let out = read_parquet(&env.path(&format!("out/scores/small/dt={DAY}/part-0.parquet")));
    assert_eq!(
        ids(&out),
        [1, 4, 5],
        "1e6 is far out, but finite once standardised"
    );
    let q = read_parquet(&env.path(&format!(
        "out/scores/small_quarantine/dt={DAY}/part-0.parquet"
    )));
    assert_eq!(
        reasons(&q),
        [
            (2, "a is too large to standardise".to_string()),
            (3, "a is too large to standardise".to_string()),
        ]
    );
}
