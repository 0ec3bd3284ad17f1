//! Drift reports end to end: the drifted fixture day is flagged on exactly its drifted
//! columns, reports read back with polars carry the documented types, and `drift show`,
//! `drift history` and the HTML page show them. (The table itself, rendered from a report
//! without the binary, is snapshot-tested in src/drift/render.rs.)

use nightshift::drift::{render, report};
use nightshift::storage::{Stores, Uri};
use polars::prelude::*;
use std::collections::BTreeSet;

use crate::util::{Env, FIXTURES};

fn setup(extra: &str) -> Env {
    let env = Env::new();
    env.train_churn();
    let job = env.job("churn", &format!("{FIXTURES}/features/dt={{date}}/"), "");
    if !extra.is_empty() {
        let body = std::fs::read_to_string(&job).unwrap();
        std::fs::write(&job, format!("{body}\n{extra}\n")).unwrap();
    }
    env
}

fn report(env: &Env, date: &str) -> DataFrame {
    let path = env.path(&format!("out/reports/job=churn/dt={date}/drift.parquet"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetReader::new(file).finish().unwrap()
}

fn drifted_features(df: &DataFrame) -> BTreeSet<String> {
    let column = df.column("column").unwrap().str().unwrap().clone();
    let ctype = df.column("column_type").unwrap().str().unwrap().clone();
    let drift = df.column("drift_detected").unwrap().bool().unwrap().clone();
    (0..df.height())
        .filter(|&i| {
            matches!(ctype.get(i), Some("numeric" | "categorical")) && drift.get(i) == Some(true)
        })
        .map(|i| column.get(i).unwrap().to_string())
        .collect()
}

#[test]
fn the_drifted_day_is_flagged_on_exactly_its_drifted_columns() {
    let env = setup("");
    for date in ["2026-11-01", "2026-11-02", "2026-11-03"] {
        let out = env.ok(&["run", "churn", "--date", date]);
        let expected: BTreeSet<String> = if date == "2026-11-03" {
            ["monthly_charges", "plan"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            BTreeSet::new()
        };
        let df = report(&env, date);
        assert_eq!(drifted_features(&df), expected, "{date}");
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("drift "))
            .expect("summary has a drift line");
        if date == "2026-11-03" {
            assert!(line.contains("monthly_charges, plan"), "{line}");
        } else {
            assert!(line.contains("no column"), "{line}");
        }
    }
    let rec_dir = env.path("out/state/runs/churn/2026-11-03");
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(rec_dir)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        rec["drift"]["drifted_columns"],
        serde_json::json!(["monthly_charges", "plan"])
    );
    assert_eq!(
        rec["drift"]["drift_detected"], false,
        "2 of 6 columns is below the default share of 0.5"
    );
}

#[test]
fn reports_read_back_with_polars_have_the_documented_types() {
    let env = setup("");
    env.ok(&["run", "churn", "--date", "2026-11-03"]);
    let df = report(&env, "2026-11-03");
    let types: Vec<(String, String)> = df
        .schema()
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let expected = [
        ("job", "str"),
        ("logical_date", "date"),
        ("run_id", "str"),
        ("model_name", "str"),
        ("model_version", "i32"),
        ("column", "str"),
        ("column_type", "str"),
        ("method", "str"),
        ("statistic", "f64"),
        ("p_value", "f64"),
        ("threshold", "f64"),
        ("drift_detected", "bool"),
        ("reference_count", "i64"),
        ("current_count", "i64"),
        ("reference_null_rate", "f64"),
        ("current_null_rate", "f64"),
        ("computed_at", "datetime[μs, UTC]"),
    ];
    assert_eq!(types, expected.map(|(a, b)| (a.to_string(), b.to_string())));
    // One row per feature column, one for the scores, one for the dataset verdict.
    assert_eq!(df.height(), 6 + 2);
    let methods: BTreeSet<&str> = df
        .column("method")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert_eq!(
        methods,
        BTreeSet::from(["jensenshannon", "share_of_drifted_columns", "wasserstein"]),
        "3,200 reference rows: distances, as Evidently chooses"
    );
}

#[test]
fn methods_and_thresholds_can_be_overridden_per_type_and_column() {
    let env = setup(
        "[drift]\ndrift_share = 0.3\n[drift.numeric]\nmethod = \"psi\"\nthreshold = 0.2\n[drift.columns.monthly_charges]\nmethod = \"ks\"\nthreshold = 0.01\n[drift.categorical]\nmethod = \"chisquare\"",
    );
    let out = env.ok(&["run", "churn", "--date", "2026-11-03"]);
    assert!(
        out.stdout.contains("dataset drift DETECTED"),
        "{}",
        out.stdout
    );
    let df = report(&env, "2026-11-03");
    let column = df.column("column").unwrap().str().unwrap().clone();
    let method = df.column("method").unwrap().str().unwrap().clone();
    let threshold = df.column("threshold").unwrap().f64().unwrap().clone();
    let p = df.column("p_value").unwrap().f64().unwrap().clone();
    for i in 0..df.height() {
        let (c, m, t) = (
            column.get(i).unwrap(),
            method.get(i).unwrap(),
            threshold.get(i).unwrap(),
        );
        match c {
            "monthly_charges" => assert_eq!((m, t), ("ks", 0.01)),
            "plan" | "region" => {
                assert_eq!((m, t), ("chisquare", 0.05));
                assert!(p.get(i).is_some());
            }
            "tenure_months" | "data_gb" | "support_calls" => assert_eq!((m, t), ("psi", 0.2)),
            _ => {}
        }
    }
}

#[test]
fn fail_on_drift_fails_the_run_but_keeps_the_report() {
    let env = setup("[drift]\ndrift_share = 0.3\nfail_on_drift = true");
    env.ok(&["run", "churn", "--date", "2026-11-01"]);
    let out = env.run(&["run", "churn", "--date", "2026-11-03"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("the data drifted (2 of the feature columns: monthly_charges, plan) and the job has fail_on_drift = true"), "{}", out.stderr);
    assert!(env
        .path("out/reports/job=churn/dt=2026-11-03/drift.parquet")
        .exists());
    assert!(crate::util::files_under(&env.path("out/scores/churn/dt=2026-11-03")).is_empty());
}

#[test]
fn scoring_the_training_data_shows_no_drift() {
    let env = Env::new();
    env.train_churn();
    env.job("churn", &format!("{FIXTURES}/train/"), "");
    env.ok(&["run", "churn", "--date", "2026-11-01"]);
    let df = report(&env, "2026-11-01");
    assert!(drifted_features(&df).is_empty());
    let stat = df.column("statistic").unwrap().f64().unwrap().clone();
    let column = df.column("column").unwrap().str().unwrap().clone();
    for i in 0..df.height() {
        if column.get(i) != Some("__dataset__") {
            assert!(
                stat.get(i).unwrap() < 0.05,
                "{:?}: {:?}",
                column.get(i),
                stat.get(i)
            );
        }
    }
}

fn without_run_id(s: &str) -> String {
    s.lines()
        .map(|l| match l.find("(run ") {
            Some(i) => format!(
                "{}(run RUN_ID, {}",
                &l[..i],
                l[i..].split_once(", ").map_or("", |x| x.1)
            ),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn drift_show_history_and_html_are_readable() {
    let env = setup("");
    for date in ["2026-11-01", "2026-11-02", "2026-11-03"] {
        env.ok(&["run", "churn", "--date", date]);
    }
    let show = env.ok(&["drift", "show", "churn"]);
    insta::assert_snapshot!("drift_show", without_run_id(&show.stdout));
    // `drift show` prints the table the library renders from the report, nothing of its own.
    let reports = Stores::default()
        .locate(&Uri::Local(env.path("out/reports")))
        .unwrap();
    let (date, latest) = report::list(&reports, "churn").unwrap().pop().unwrap();
    assert_eq!(date.to_string(), "2026-11-03");
    assert_eq!(render::table(&report::read(&latest).unwrap()), show.stdout);
    let history = env.ok(&["drift", "history", "churn"]);
    insta::assert_snapshot!("drift_history", history.stdout);

    let page = env.path("report.html");
    env.ok(&[
        "drift",
        "show",
        "churn",
        "--date",
        "2026-11-03",
        "--html",
        page.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.to_ascii_lowercase().starts_with("<!doctype html>"));
    // The page states each statistic as the terminal table does.
    let reports = Stores::default()
        .locate(&Uri::Local(env.path("out/reports")))
        .unwrap();
    let (_, nov3) = report::list(&reports, "churn").unwrap().pop().unwrap();
    for r in report::read(&nov3).unwrap().rows {
        if r.column != nightshift::drift::DATASET_ROW {
            let cell = format!("<td>{}</td>", render::number(Some(r.statistic)));
            assert!(html.contains(&cell), "{cell}");
        }
    }
    assert_eq!(
        html.matches("<svg").count(),
        7,
        "one chart per feature and one for the scores"
    );
    assert!(html.contains("monthly_charges") && html.contains("Dataset drift: not detected"));
    assert!(!html.contains("<script"), "self-contained and static");
    // 2,000 rows a day: the sample is every row, so no bar is called a sample.
    assert!(!html.contains("a uniform sample"));

    let missing = env.run(&["drift", "show", "churn", "--date", "2026-10-01"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no drift report for churn on 2026-10-01; reports exist for 2026-11-01, 2026-11-02, 2026-11-03"), "{}", missing.stderr);
}

/// The report of a run through the library with the given parallelism, as (column, method,
/// statistic bits, p-value bits, drift) rows.
fn report_rows(
    env: &Env,
    threads: usize,
    batch_rows: usize,
) -> Vec<(String, String, u64, Option<u64>, bool)> {
    crate::util::run_churn_in_process(env, "2026-11-03", threads, batch_rows);
    let df = report(env, "2026-11-03");
    let c = df.column("column").unwrap().str().unwrap().clone();
    let m = df.column("method").unwrap().str().unwrap().clone();
    let s = df.column("statistic").unwrap().f64().unwrap().clone();
    let p = df.column("p_value").unwrap().f64().unwrap().clone();
    let d = df.column("drift_detected").unwrap().bool().unwrap().clone();
    (0..df.height())
        .map(|i| {
            (
                c.get(i).unwrap().into(),
                m.get(i).unwrap().into(),
                s.get(i).unwrap().to_bits(),
                p.get(i).map(f64::to_bits),
                d.get(i).unwrap(),
            )
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 6, ..Default::default() })]

    #[test]
    fn the_report_does_not_depend_on_batch_size_or_thread_count(threads in 1usize..5, batch_rows in 1usize..1500) {
        // KS uses the samples, so make it the method for every numeric column.
        let env = setup("[drift.numeric]\nmethod = \"ks\"");
        let baseline = report_rows(&env, 1, 65_536);
        proptest::prop_assert_eq!(report_rows(&env, threads, batch_rows), baseline);
    }
}
