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
    input_is_output,
    output_in_input,
    quarantine_in_output,
    passthrough_reserved,
    passthrough_twice,
    model_name_is_a_path,
    labels_key_not_passthrough,
    labels_mistakes,
    mlflow_mistakes,
    alias_without_mlflow,
);

/// Credentials written into an MLflow address are refused without being repeated.
#[test]
fn mlflow_credentials_in_a_job_file_are_not_echoed() {
    let stdout = validate_file("mlflow_mistakes");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    assert!(stdout.contains("MLFLOW_TRACKING_PASSWORD"), "{stdout}");
}

/// A location that is no URI is reported at its value, as written: the template's text and
/// bucket, not the text its placeholders were filled in to check it.
#[test]
fn bad_bucket() {
    let stdout = validate_file("bad_bucket");
    let file = "tests/data/bad_jobs/bad_bucket.toml";
    let rule = "(3 to 63 lowercase letters, digits, '-' or '.')";
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!(
                "{file}:7:7: invalid S3 bucket name 'Features' in \
                 's3://Features/churn/dt={{date}}/' {rule}"
            ),
            format!(
                "{file}:14:7: invalid S3 bucket name '{{job}}-Scores' in \
                 's3://{{job}}-Scores/churn/dt={{date}}/' {rule}"
            ),
        ],
        "{stdout}"
    );
}

/// `validate` on a folder of `tests/data/locations/`: its output and exit code.
fn validate_dir(name: &str) -> (i32, String) {
    let out = nightshift_in(
        repo(),
        &["validate", &format!("tests/data/locations/{name}")],
    );
    (out.code, out.stdout)
}

#[test]
fn locations_in_the_shared_registry_state_and_reports() {
    let (code, stdout) = validate_dir("shared");
    assert_eq!(code, 1, "{stdout}");
    insta::assert_snapshot!(stdout);
}

#[test]
fn shared_locations_overlapping_each_other() {
    let (code, stdout) = validate_dir("shared_overlap");
    assert_eq!(code, 1, "{stdout}");
    insta::assert_snapshot!(stdout);
}

#[test]
fn two_jobs_with_the_same_output() {
    let (code, stdout) = validate_dir("same_output");
    assert_eq!(code, 1, "{stdout}");
    insta::assert_snapshot!(stdout);
}

/// An output at the root of a bucket (or at the top of a relative path) gets a default
/// quarantine in the same bucket, which validates and parses like a written one.
#[test]
fn bucket_root_output_gets_a_valid_default_quarantine() {
    let (code, stdout) = validate_dir("bucket_root");
    assert_eq!(code, 0, "{stdout}");
    insta::assert_snapshot!(stdout);

    let cfg = nightshift::config::load(&[repo().join("tests/data/locations/bucket_root")]).unwrap();
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 3).unwrap();
    let quarantine = |name: &str| {
        let job = cfg.job(name).unwrap();
        let q = &job.output.quarantine;
        (q.0.clone(), q.uri(&job.name, date).unwrap().to_string())
    };
    assert_eq!(
        quarantine("s3_bucket_root"),
        (
            "s3://my-bucket/_quarantine/dt={date}/".to_string(),
            "s3://my-bucket/_quarantine/dt=2026-11-03/".to_string()
        )
    );
    assert_eq!(
        quarantine("local_top"),
        (
            "_quarantine/dt={date}/".to_string(),
            "_quarantine/dt=2026-11-03/".to_string()
        )
    );
}

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
fn run_refuses_a_job_that_writes_where_it_reads() {
    let env = crate::util::Env::new();
    env.train_churn();
    env.job("churn", "out/scores/", "");
    let out = env.run(&["run", "churn", "--date", "2026-11-01"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("output uri 'out/scores/churn/dt={date}/' is inside input uri 'out/scores/'"),
        "{}",
        out.stderr
    );
    assert!(!env.path("out/scores/churn").exists());
}

#[test]
fn help_is_useful_on_its_own() {
    let out = nightshift_in(repo(), &["run", "--help"]);
    assert_eq!(out.code, 0);
    insta::assert_snapshot!(out.stdout);
}

/// A bucket that is only a placeholder (`s3://{job}/`) is valid when the job's name makes a
/// valid bucket, and named as rendered when it does not.
#[test]
fn a_bucket_made_of_the_job_name() {
    let dir = tempfile::tempdir().unwrap();
    let job = |name: &str| {
        format!(
            "name = \"{name}\"\nschedule = \"30 2 * * *\"\n[input]\nuri = \"s3://{{job}}/features/dt={{date}}/\"\n[model]\nname = \"churn\"\nversion = 1\n[output]\nuri = \"s3://{{job}}-scores/dt={{date}}/\"\n"
        )
    };
    std::fs::write(dir.path().join("churnjob.toml"), job("churnjob")).unwrap();
    let out = nightshift_in(dir.path(), &["validate", "churnjob.toml"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    std::fs::write(dir.path().join("x.toml"), job("x")).unwrap();
    let out = nightshift_in(dir.path(), &["validate", "x.toml"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("x.toml:4:7:") && out.stdout.contains("invalid S3 bucket name 'x'"),
        "{}",
        out.stdout
    );
}

/// `[labels] uri` is checked with the job's name like the other locations.
#[test]
fn a_labels_location_made_invalid_by_the_job_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("j.toml"),
        "name = \"Churn\"\nschedule = \"30 2 * * *\"\n[input]\nuri = \"in/dt={date}/\"\n[model]\nname = \"churn\"\nversion = 1\n[output]\nuri = \"out/dt={date}/\"\npassthrough = [\"id\"]\n[labels]\nuri = \"s3://labels-{job}/dt={date}/\"\nkey = \"id\"\ncolumn = \"churned\"\n",
    )
    .unwrap();
    let out = nightshift_in(dir.path(), &["validate", "j.toml"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "j.toml:12:7: labels uri 's3://labels-{job}/dt={date}/' is not a valid location"
        ) && out.stdout.contains("'labels-Churn'"),
        "{}",
        out.stdout
    );
}
