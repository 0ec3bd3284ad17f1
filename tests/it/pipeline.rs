//! The core pipeline on local storage: a job file scores a day of Parquet against a pinned
//! model, end to end, and what users rely on holds: correct scores, idempotent reruns,
//! quarantined bad rows that reconcile, and nothing half-written after a failure.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use parquet::arrow::ArrowWriter;
use proptest::prelude::*;
use serde_json::Value;

use crate::util::{files_under, read_parquet, Env, FIXTURES};

const DAY1: &str = "2026-11-01";
const DAY2: &str = "2026-11-02";

fn fixture_input() -> String {
    format!("{FIXTURES}/features/dt={{date}}/")
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn run_records(env: &Env, job: &str) -> Vec<Value> {
    let mut recs: Vec<Value> = files_under(&env.path(&format!("out/state/runs/{job}")))
        .iter()
        .map(|f| json(&env.path(&format!("out/state/runs/{job}/{f}"))))
        .collect();
    recs.sort_by_key(|r| r["started_at"].as_str().unwrap().to_string());
    recs
}

/// Scores by id, computed from the registered artifact and manifest by hand: the manifest's
/// imputation, scaling and one-hot encoding, then the logistic function. Shares no code with
/// nightshift's preprocessing or scoring.
fn expected_scores(env: &Env, input: &Path) -> HashMap<i64, f64> {
    let dir = env.path("out/registry/churn/1");
    let manifest = json(&dir.join("manifest.json"));
    let artifact = json(&dir.join(manifest["artifact"].as_str().unwrap()));
    assert_eq!(artifact["algorithm"], "logistic");
    let m = &artifact["fitted"]["model"];
    let w: Vec<f64> = m["params"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let b = m["intercept"].as_f64().unwrap();
    let class_one_is_positive = m["labels"]["pos"]["class"].as_u64().unwrap() == 1;

    let batch = read_parquet(input);
    let ids = batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .clone();
    let mut z = vec![b; batch.num_rows()];
    let mut k = 0;
    for f in manifest["preprocessing"]["features"].as_array().unwrap() {
        let col = batch.column_by_name(f["name"].as_str().unwrap()).unwrap();
        if f["kind"] == "numeric" {
            let v = cast(col, &DataType::Float64).unwrap();
            let (mean, std) = (
                f["scale"][0].as_f64().unwrap(),
                f["scale"][1].as_f64().unwrap(),
            );
            for (i, x) in v.as_primitive::<Float64Type>().iter().enumerate() {
                let x = x.unwrap_or(f["impute"].as_f64().unwrap());
                z[i] += w[k] * (x - mean) / std;
            }
            k += 1;
        } else {
            let cats: Vec<&str> = f["categories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            let s = col.as_string::<i32>();
            for (i, zi) in z.iter_mut().enumerate() {
                if let Some(j) = cats
                    .iter()
                    .position(|c| Some(*c) == s.is_valid(i).then(|| s.value(i)))
                {
                    *zi += w[k + j];
                }
            }
            k += cats.len();
        }
    }
    assert_eq!(k, w.len(), "one weight per encoded column");
    (0..ids.len())
        .map(|i| {
            let p = 1.0 / (1.0 + (-z[i]).exp());
            (
                ids.value(i),
                if class_one_is_positive { p } else { 1.0 - p },
            )
        })
        .collect()
}

fn scores_by_id(batch: &RecordBatch) -> HashMap<i64, f64> {
    let ids = batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let scores = batch
        .column_by_name("score")
        .unwrap()
        .as_primitive::<Float64Type>();
    ids.values()
        .iter()
        .copied()
        .zip(scores.values().iter().copied())
        .collect()
}

fn setup(job_run: &str) -> Env {
    let env = Env::new();
    env.train_churn();
    env.job("churn", &fixture_input(), job_run);
    env
}

#[test]
fn scores_equal_the_models_own_predictions() {
    let env = setup("");
    let out = env.ok(&["run", "churn", "--date", DAY1]);
    assert!(
        out.stdout.contains("churn 2026-11-01 succeeded"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("rows read                 2000"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("rows scored               2000"),
        "{}",
        out.stdout
    );

    let out_dir = env.path("out/scores/churn/dt=2026-11-01");
    assert_eq!(
        files_under(&out_dir),
        ["_SUCCESS", "part-00000.parquet", "part-00001.parquet"]
    );
    for part in ["part-00000.parquet", "part-00001.parquet"] {
        let got = read_parquet(&out_dir.join(part));
        let expected = expected_scores(
            &env,
            &Path::new(FIXTURES).join(format!("features/dt={DAY1}/{part}")),
        );
        let got_scores = scores_by_id(&got);
        assert_eq!(got_scores.len(), expected.len());
        for (id, s) in &expected {
            let g = got_scores[id];
            assert!(
                (g - s).abs() < 1e-12,
                "id {id}: nightshift {g}, by hand {s}"
            );
        }
        // The output schema users read.
        let schema = got.schema();
        let cols: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        assert_eq!(
            cols,
            [
                "id:Int64",
                "score:Float64",
                "prediction:Int64",
                "model_name:Utf8",
                "model_version:Int32",
                "run_id:Utf8",
                "scored_at:Timestamp(µs, \"UTC\")",
            ]
        );
        let pred = got
            .column_by_name("prediction")
            .unwrap()
            .as_primitive::<Int64Type>();
        let score = got
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..got.num_rows() {
            assert_eq!(pred.value(i), i64::from(score.value(i) >= 0.5));
        }
    }

    let success = json(&out_dir.join("_SUCCESS"));
    assert_eq!(success["model_version"], 1);
    assert_eq!(success["files"].as_array().unwrap().len(), 2);
    assert_eq!(success["counts"]["rows_scored"], 2000);
    let recs = run_records(&env, "churn");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["status"], "succeeded");
    assert_eq!(recs[0]["run_id"], success["run_id"]);
}

#[test]
fn a_rerun_replaces_the_outputs_without_duplicates_or_stale_files() {
    let env = setup("");
    env.ok(&["run", "churn", "--date", DAY1]);
    let out_dir = env.path("out/scores/churn/dt=2026-11-01");
    let first = read_parquet(&out_dir.join("part-00000.parquet"));
    let first_run = json(&out_dir.join("_SUCCESS"))["run_id"].clone();
    // An output of an input file that no longer exists must not survive a rerun.
    std::fs::copy(
        out_dir.join("part-00000.parquet"),
        out_dir.join("part-99999.parquet"),
    )
    .unwrap();

    env.ok(&["run", "churn", "--date", DAY1]);
    assert_eq!(
        files_under(&out_dir),
        ["_SUCCESS", "part-00000.parquet", "part-00001.parquet"]
    );
    let second = read_parquet(&out_dir.join("part-00000.parquet"));
    assert_eq!(second.num_rows(), first.num_rows());
    assert_eq!(scores_by_id(&second), scores_by_id(&first));
    let success = json(&out_dir.join("_SUCCESS"));
    assert_ne!(success["run_id"], first_run);
    let run_ids = second
        .column_by_name("run_id")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_string();
    assert_eq!(
        success["run_id"],
        run_ids.as_str(),
        "outputs carry the run that wrote them"
    );
    assert_eq!(run_records(&env, "churn").len(), 2);
}

#[test]
fn bad_rows_are_quarantined_with_reasons_and_counts_reconcile() {
    let env = setup("");
    let out = env.ok(&["run", "churn", "--date", DAY2]);
    assert!(
        out.stdout.contains("rows quarantined             6"),
        "{}",
        out.stdout
    );

    let q_dir = env.path("out/scores/churn_quarantine/dt=2026-11-02");
    assert_eq!(
        files_under(&q_dir),
        ["part-00000.parquet", "part-00001.parquet"]
    );
    let rec = &run_records(&env, "churn")[0];
    let c = &rec["counts"];
    assert_eq!(
        c["rows_in"].as_u64().unwrap(),
        c["rows_scored"].as_u64().unwrap()
            + c["rows_quarantined"].as_u64().unwrap()
            + c["rows_skipped"].as_u64().unwrap()
    );
    for part in ["part-00000.parquet", "part-00001.parquet"] {
        let input = read_parquet(&Path::new(FIXTURES).join(format!("features/dt={DAY2}/{part}")));
        let output = read_parquet(&env.path(&format!("out/scores/churn/dt={DAY2}/{part}")));
        let quarantine = read_parquet(&q_dir.join(part));
        assert_eq!(output.num_rows() + quarantine.num_rows(), input.num_rows());
        let reasons = quarantine
            .column_by_name("reason")
            .unwrap()
            .as_string::<i32>();
        assert!(
            reasons.iter().all(|r| r == Some("data_gb is NaN")),
            "{reasons:?}"
        );
        // Every input id is either scored or quarantined, never both.
        let mut ids: Vec<i64> = output
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        ids.extend(
            quarantine
                .column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .iter(),
        );
        ids.sort_unstable();
        let mut expected = input
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        expected.sort_unstable();
        assert_eq!(ids, expected);
        let rows = quarantine
            .column_by_name("source_row")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert!(
            rows.values().iter().all(|&r| r < 3),
            "the NaN rows are the first three: {rows:?}"
        );
    }
}

#[test]
fn on_bad_rows_skip_counts_them_and_writes_no_quarantine() {
    let env = setup("on_bad_rows = \"skip\"");
    let out = env.ok(&["run", "churn", "--date", DAY2]);
    assert!(
        out.stdout.contains("rows skipped                 6"),
        "{}",
        out.stdout
    );
    assert!(files_under(&env.path("out/scores/churn_quarantine")).is_empty());
}

fn assert_nothing_looks_complete(env: &Env, date: &str) {
    let out = files_under(&env.path(&format!("out/scores/churn/dt={date}")));
    let q = files_under(&env.path(&format!("out/scores/churn_quarantine/dt={date}")));
    assert!(out.is_empty(), "a failed run left outputs: {out:?}");
    assert!(q.is_empty(), "a failed run left quarantine files: {q:?}");
}

#[test]
fn on_bad_rows_fail_stops_at_the_first_bad_row() {
    let env = setup("on_bad_rows = \"fail\"");
    let out = env.run(&["run", "churn", "--date", DAY2]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("row 0 of"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("cannot be scored: data_gb is NaN (the job has on_bad_rows = \"fail\")"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1
    );
    assert_nothing_looks_complete(&env, DAY2);
    let rec = &run_records(&env, "churn")[0];
    assert_eq!(rec["status"], "failed");
    assert!(rec["error"].as_str().unwrap().contains("data_gb is NaN"));
}

#[test]
fn too_many_bad_rows_fail_the_run_and_leave_nothing_that_looks_complete() {
    let env = setup("max_bad_rows_fraction = 0.001");
    // A good earlier run of the same date: a failed rerun must not leave a mix behind.
    std::fs::create_dir_all(env.path("out/scores/churn/dt=2026-11-02")).unwrap();
    std::fs::write(env.path("out/scores/churn/dt=2026-11-02/_SUCCESS"), "{}").unwrap();
    let out = env.run(&["run", "churn", "--date", DAY2]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "6 of 2000 rows (0.30%) could not be scored, more than max_bad_rows_fraction = 0.001"
        ),
        "{}",
        out.stderr
    );
    assert_nothing_looks_complete(&env, DAY2);
}

#[test]
fn a_failure_mid_run_leaves_no_output_that_looks_complete() {
    let env = setup("");
    let input = env.path("in/dt=2026-11-01");
    std::fs::create_dir_all(&input).unwrap();
    let good = Path::new(FIXTURES).join("features/dt=2026-11-01/part-00000.parquet");
    std::fs::copy(&good, input.join("part-00000.parquet")).unwrap();
    // The second file's footer is intact (so planning succeeds) but its data pages are not:
    // the run fails after the first output was committed.
    let mut bytes = std::fs::read(&good).unwrap();
    for b in &mut bytes[200..6000] {
        *b = !*b;
    }
    std::fs::write(input.join("part-00001.parquet"), bytes).unwrap();
    env.job("churn", "in/dt={date}/", "");

    let out = env.run(&["run", "churn", "--date", DAY1]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("part-00001.parquet"),
        "the error names the file: {}",
        out.stderr
    );
    assert_nothing_looks_complete(&env, DAY1);
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

#[test]
fn a_signature_mismatch_names_the_column_and_the_file() {
    let env = setup("");
    let input =
        read_parquet(&Path::new(FIXTURES).join("features/dt=2026-11-01/part-00000.parquet"));
    let without_plan = input
        .project(
            &(0..input.num_columns())
                .filter(|&i| input.schema().field(i).name() != "plan")
                .collect::<Vec<_>>(),
        )
        .unwrap();
    write_parquet(&env.path("missing/dt=2026-11-01/a.parquet"), &without_plan);
    env.job("churn", "missing/dt={date}/", "");
    let out = env.run(&["run", "churn", "--date", DAY1]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("missing/dt=2026-11-01/a.parquet does not match the model signature: column 'plan' is missing"), "{}", out.stderr);

    let mut cols: Vec<Arc<dyn Array>> = input.columns().to_vec();
    let plan_idx = input.schema().index_of("plan").unwrap();
    cols[plan_idx] = Arc::new(Float64Array::from(vec![1.0; input.num_rows()]));
    let mut fields: Vec<_> = input
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[plan_idx] = arrow::datatypes::Field::new("plan", DataType::Float64, true);
    let wrong =
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols).unwrap();
    write_parquet(&env.path("wrong/dt=2026-11-01/b.parquet"), &wrong);
    env.job("churn", "wrong/dt={date}/", "");
    let out = env.run(&["run", "churn", "--date", DAY1]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("wrong/dt=2026-11-01/b.parquet does not match the model signature: column 'plan' has type Float64, but the model expects a string"), "{}", out.stderr);
}

#[test]
fn safe_upcasts_are_accepted() {
    // The fixtures have int32, int64 and float32 feature columns; the model reads float64.
    let input =
        read_parquet(&Path::new(FIXTURES).join("features/dt=2026-11-01/part-00000.parquet"));
    let types: Vec<String> = input
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    assert!(
        types.contains(&"Int32".to_string()) && types.contains(&"Float32".to_string()),
        "{types:?}"
    );
    let env = setup("");
    env.ok(&["run", "churn", "--date", DAY1]);
}

#[test]
fn a_tampered_artifact_is_refused() {
    let env = setup("");
    let dir = env.path("out/registry/churn/1");
    let manifest = json(&dir.join("manifest.json"));
    let artifact = dir.join(manifest["artifact"].as_str().unwrap());
    let body = std::fs::read_to_string(&artifact).unwrap().replacen(
        "\"intercept\":",
        "\"intercept\":1e-3+",
        0,
    );
    std::fs::write(&artifact, body.replacen("0.", "9.", 1)).unwrap();
    let out = env.run(&["run", "churn", "--date", DAY1]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("it was changed after registration, refusing to load it"),
        "{}",
        out.stderr
    );
    let show = env.run(&["model", "show", "churn@1"]);
    assert_eq!(show.code, 1);
    assert!(
        show.stderr.contains("refusing to load it"),
        "{}",
        show.stderr
    );
}

#[test]
fn a_missing_model_version_lists_the_ones_that_exist() {
    let env = Env::new();
    env.train_churn();
    env.write(
        "jobs/churn.toml",
        &std::fs::read_to_string(env.job("churn", &fixture_input(), ""))
            .unwrap()
            .replace("version = 1", "version = 7"),
    );
    let out = env.run(&["run", "churn", "--date", DAY1]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "model churn@7 is not in the registry at out/registry/ (registered versions: 1)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn every_algorithm_trains_registers_immutable_versions_and_scores() {
    let env = Env::new();
    let data = format!("{FIXTURES}/train/");
    for (algo, extra) in [
        ("logistic", ""),
        ("decision-tree", ""),
        ("random-forest", "--trees=10"),
        ("gaussian-nb", ""),
    ] {
        let mut args = vec![
            "model",
            "train",
            "--data",
            &data,
            "--target",
            "churned",
            "--algorithm",
            algo,
            "--name",
            "churn",
            "--exclude",
            "id",
        ];
        if !extra.is_empty() {
            args.push(extra);
        }
        env.ok(&args);
    }
    let out = env.ok(&[
        "model",
        "train",
        "--data",
        &data,
        "--target",
        "monthly_charges",
        "--algorithm",
        "linear",
        "--name",
        "charges",
        "--exclude",
        "id,churned",
    ]);
    assert_eq!(out.stdout.trim(), "charges@1");
    let list = env.ok(&["model", "list", "churn"]);
    for (v, algo) in [
        (1, "logistic"),
        (2, "decision-tree"),
        (3, "random-forest"),
        (4, "gaussian-nb"),
    ] {
        assert!(
            list.stdout
                .lines()
                .any(|l| l.contains(&format!("churn {v:>24}"))
                    || (l.starts_with("churn ") && l.contains(algo))),
            "{}",
            list.stdout
        );
    }
    let show = env.ok(&["model", "show", "churn@3"]);
    assert!(
        show.stdout.contains("algorithm   random-forest"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains(
            "plan                     categorical, one-hot of basic, enterprise, premium, standard"
        ),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("(verified)"), "{}", show.stdout);

    // Score a day with each classifier version and the regressor.
    for v in 1..=4 {
        env.write(
            "jobs/churn.toml",
            &std::fs::read_to_string(env.job("churn", &fixture_input(), ""))
                .unwrap()
                .replace("version = 1", &format!("version = {v}")),
        );
        env.ok(&["run", "churn", "--date", DAY1]);
        let b = read_parquet(&env.path("out/scores/churn/dt=2026-11-01/part-00000.parquet"));
        let s = b
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert!(
            s.values().iter().all(|s| (0.0..=1.0).contains(s)),
            "version {v}: scores are probabilities"
        );
    }
    let job = std::fs::read_to_string(env.job("charges", &fixture_input(), "")).unwrap();
    env.write(
        "jobs/charges.toml",
        &job.replace("name = \"churn\"", "name = \"charges\""),
    );
    env.ok(&["run", "charges", "--date", DAY1]);
    let b = read_parquet(&env.path("out/scores/charges/dt=2026-11-01/part-00000.parquet"));
    assert!(
        b.column_by_name("prediction").is_none(),
        "regressors have no class prediction"
    );
    let s = b
        .column_by_name("score")
        .unwrap()
        .as_primitive::<Float64Type>();
    let mean = s.values().iter().sum::<f64>() / s.len() as f64;
    assert!(
        (50.0..90.0).contains(&mean),
        "predicted monthly charges average {mean}"
    );
}

/// Runs the job through the library with given parallelism and returns (id, score, prediction)
/// rows in output order.
fn scored_rows(env: &Env, threads: usize, batch_rows: usize) -> Vec<(i64, u64, i64)> {
    crate::util::run_churn_in_process(env, "2026-11-02", threads, batch_rows);
    let mut rows = Vec::new();
    for part in ["part-00000.parquet", "part-00001.parquet"] {
        let b = read_parquet(&env.path(&format!("out/scores/churn/dt=2026-11-02/{part}")));
        let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let s = b
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float64Type>();
        let p = b
            .column_by_name("prediction")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            rows.push((id.value(i), s.value(i).to_bits(), p.value(i)));
        }
    }
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn scores_do_not_depend_on_batch_size_or_thread_count(threads in 1usize..5, batch_rows in 1usize..1500) {
        let env = setup("");
        let baseline = scored_rows(&env, 1, 65_536);
        prop_assert_eq!(baseline.len(), 1994);
        let rows = scored_rows(&env, threads, batch_rows);
        prop_assert_eq!(rows, baseline);
    }
}

#[test]
fn quarantine_rows_are_marked_by_column_types_readers_understand() {
    let env = setup("");
    env.ok(&["run", "churn", "--date", DAY2]);
    let q = read_parquet(&env.path("out/scores/churn_quarantine/dt=2026-11-02/part-00000.parquet"));
    let s: &StringArray = q.column_by_name("source_file").unwrap().as_string::<i32>();
    assert!(
        s.value(0)
            .ends_with("features/dt=2026-11-02/part-00000.parquet"),
        "{}",
        s.value(0)
    );
    assert_eq!(
        q.column_by_name("run_id").unwrap().data_type(),
        &DataType::Utf8
    );
}
