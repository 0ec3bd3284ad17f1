//! `nightshift validate`: what users read when a job file is wrong, one fixture per mistake.

use std::path::Path;

use crate::util::nightshift_in;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn validate_file(name: &str) -> String {
    let path = format!("tests/data/bad_jobs/{name}.toml");
    let out = nightshift_in(repo(), &["validate", &path]);
    assert_eq!(
        out.code, 1,
        "validate must fail for {name}:\n{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("error(s) in 1 file(s)"),
        "{}",
        out.stderr
    );
    out.stdout
}

macro_rules! snapshot_cases {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            insta::assert_snapshot!(validate_file(stringify!($name)));
        }
    )*};
}

snapshot_cases!(
    misspelt_field,
    missing_version,
    bad_cron,
    bad_timezone,
    bad_policy,
    wrong_type,
    output_without_date,
    syntax_error,
    many_errors,
);

#[test]
fn every_error_of_every_file_at_once() {
    let out = nightshift_in(repo(), &["validate", "tests/data/bad_jobs"]);
    assert_eq!(out.code, 1);
    let files = std::fs::read_dir(repo().join("tests/data/bad_jobs"))
        .unwrap()
        .count();
    for entry in std::fs::read_dir(repo().join("tests/data/bad_jobs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            out.stdout.contains(&name),
            "no error reported for {name}:\n{}",
            out.stdout
        );
    }
    let many = out
        .stdout
        .lines()
        .filter(|l| l.contains("many_errors.toml"))
        .count();
    assert_eq!(
        many, 8,
        "each mistake of many_errors.toml is reported:\n{}",
        out.stdout
    );
    assert!(
        out.stderr.contains(&format!("in {files} file(s)")),
        "{}",
        out.stderr
    );
}

#[test]
fn the_bundled_jobs_are_valid() {
    let out = nightshift_in(repo(), &["validate"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("churn_nightly"), "{}", out.stdout);
}

#[test]
fn duplicate_job_names_are_an_error() {
    let env = crate::util::Env::new();
    let a = env.job("same", "in/dt={date}/", "");
    let body = std::fs::read_to_string(&a).unwrap();
    env.write("jobs/other.toml", &body);
    let out = env.run(&["validate", "jobs"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("jobs/same.toml:1:8: job name 'same' is already used by"),
        "{}",
        out.stdout
    );
}

#[test]
fn run_refuses_an_invalid_job_folder_with_the_validate_errors() {
    let env = crate::util::Env::new();
    env.write("jobs/broken.toml", "name = \"broken\"\nshedule = \"x\"\n");
    let out = env.run(&["run", "broken", "--date", "2026-11-01"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("unknown field 'shedule', did you mean 'schedule'?"),
        "{}",
        out.stderr
    );
}

#[test]
fn help_is_useful_on_its_own() {
    let out = nightshift_in(repo(), &["run", "--help"]);
    assert_eq!(out.code, 0);
    insta::assert_snapshot!(out.stdout);
}
