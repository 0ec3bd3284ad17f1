//! What storage must get right for a date's outputs to appear complete or not at all: inputs
//! reached through symbolic links are all scored (and loops and broken links are errors, not
//! silently skipped), a URI naming one object finds it or says it does not exist, a corrupt
//! footer is a clear error, and what a crash leaves behind can be found and removed.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use chrono::Utc;
use nightshift::read::list_data_files;
use nightshift::storage::{ErrorKind, Stores, Uri};

use crate::util::{files_under, Env, FIXTURES};
use crate::util_s3::TestBucket;

const DAY: &str = "2026-11-02";

fn fixture(part: &str) -> String {
    format!("{FIXTURES}/features/dt={DAY}/{part}")
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

/// A failed run: exit 1, one error line containing every one of `expected`, no panic, and
/// nothing under the date's outputs that looks complete.
fn assert_fails_cleanly(env: &Env, expected: &[&str]) {
    let out = env.run(&["run", "churn", "--date", DAY]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let lines = error_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    for e in expected {
        assert!(lines[0].contains(e), "expected {e:?} in {}", lines[0]);
    }
    let outputs = files_under(&env.path(&format!("out/scores/churn/dt={DAY}")));
    assert!(!outputs.contains(&"_SUCCESS".to_string()), "{outputs:?}");
    assert!(
        outputs.iter().all(|f| !f.ends_with(".parquet")),
        "{outputs:?}"
    );
}

fn local_env() -> Env {
    let env = Env::new();
    env.train_churn();
    env.job("churn", "in/dt={date}/", "");
    env
}

#[test]
fn a_partition_of_symlinks_is_scored_whole_under_the_link_names() {
    let env = local_env();
    let part = env.path(&format!("in/dt={DAY}"));
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    // One input linked directly, the other through a linked folder.
    symlink(fixture("part-00000.parquet"), part.join("a.parquet")).unwrap();
    symlink(fixture("part-00001.parquet"), elsewhere.join("b.parquet")).unwrap();
    symlink(&elsewhere, part.join("more")).unwrap();

    let out = env.ok(&["run", "churn", "--date", DAY]);
    assert!(
        out.stdout.contains("rows read                 2000"),
        "{}",
        out.stdout
    );
    assert_eq!(
        files_under(&env.path(&format!("out/scores/churn/dt={DAY}"))),
        ["_SUCCESS", "a.parquet", "more/b.parquet"]
    );
}

#[test]
fn a_symlink_loop_in_a_partition_fails_the_run_naming_the_link() {
    let env = local_env();
    let part = env.path(&format!("in/dt={DAY}"));
    std::fs::create_dir_all(part.join("sub")).unwrap();
    symlink(fixture("part-00000.parquet"), part.join("a.parquet")).unwrap();
    symlink("..", part.join("sub/loop")).unwrap();
    assert_fails_cleanly(&env, &[&format!("dt={DAY}/sub/loop"), "loop"]);
}

#[test]
fn a_broken_symlink_in_a_partition_fails_the_run_naming_it() {
    let env = local_env();
    let part = env.path(&format!("in/dt={DAY}"));
    std::fs::create_dir_all(&part).unwrap();
    symlink(fixture("part-00000.parquet"), part.join("a.parquet")).unwrap();
    symlink(env.path("gone.parquet"), part.join("b.parquet")).unwrap();
    assert_fails_cleanly(
        &env,
        &[&format!("dt={DAY}/b.parquet"), "broken symbolic link"],
    );
}

#[test]
fn a_missing_single_object_input_says_it_does_not_exist() {
    let env = local_env();
    std::fs::create_dir_all(env.path(&format!("in/dt={DAY}"))).unwrap();
    env.job("churn", "in/dt={date}/part-00000.parquet", "");
    assert_fails_cleanly(
        &env,
        &[&format!("in/dt={DAY}/part-00000.parquet does not exist")],
    );
}

#[test]
fn corrupt_inputs_fail_the_run_with_a_clear_error() {
    let env = local_env();
    let part = env.path(&format!("in/dt={DAY}"));
    std::fs::create_dir_all(&part).unwrap();
    let good = std::fs::read(fixture("part-00000.parquet")).unwrap();
    std::fs::write(part.join("a.parquet"), &good).unwrap();

    // Cut in half, as by a copy that died.
    std::fs::write(part.join("b.parquet"), &good[..good.len() / 2]).unwrap();
    assert_fails_cleanly(&env, &["b.parquet", "cut short"]);

    // A footer length larger than the file.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 8..n - 4].copy_from_slice(&(n as u32 * 2).to_le_bytes());
    std::fs::write(part.join("b.parquet"), &bad).unwrap();
    assert_fails_cleanly(&env, &["b.parquet", "corrupt Parquet footer"]);

    // The start cut off: the footer's offsets point past the end.
    std::fs::write(part.join("b.parquet"), &good[n / 3..]).unwrap();
    assert_fails_cleanly(&env, &["b.parquet", "corrupt Parquet footer"]);
}

fn set_age(path: &Path, age: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn stale_local_temp_files_are_removed_and_fresh_ones_kept() {
    let env = local_env();
    let part = env.path(&format!("in/dt={DAY}"));
    std::fs::create_dir_all(&part).unwrap();
    std::fs::copy(fixture("part-00000.parquet"), part.join("a.parquet")).unwrap();
    env.ok(&["run", "churn", "--date", DAY]);

    // What a killed writer leaves: temporary files beside the outputs.
    let out_dir = env.path(&format!("out/scores/churn/dt={DAY}"));
    let old = out_dir.join("_tmp.b.parquet.019300000000000000000000000000aa");
    let fresh = out_dir.join("_tmp.c.parquet.019300000000000000000000000000bb");
    std::fs::write(&old, b"half an object").unwrap();
    std::fs::write(&fresh, b"being written").unwrap();
    set_age(&old, Duration::from_secs(3 * 3600));
    set_age(&out_dir.join("a.parquet"), Duration::from_secs(3 * 3600));

    let stores = Stores::default();
    let loc = stores
        .locate(&Uri::Local(env.path("out/scores/churn")))
        .unwrap();
    let cutoff = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(loc.store.remove_stale_temps(&loc.key, cutoff).unwrap(), 1);
    assert_eq!(
        files_under(&out_dir),
        [
            "_SUCCESS",
            "_tmp.c.parquet.019300000000000000000000000000bb",
            "a.parquet"
        ]
    );
}

#[test]
fn s3_a_uri_naming_one_object_lists_it_or_says_it_does_not_exist() {
    let b = TestBucket::new("single-object");
    let s = b.store();
    let data = Bytes::from(std::fs::read(fixture("part-00000.parquet")).unwrap());
    for key in [
        "in/dt=1/part-0.parquet",
        "in/dt=1/part-1.parquet",
        "in/dt=1/table.parquet/part-0.parquet",
        "in/dt=1/table.parquet/_SUCCESS",
    ] {
        s.put(key, data.clone()).unwrap();
    }

    let one = list_data_files(&b.location("in/dt=1/part-1.parquet")).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0].key.as_str(), one[0].size),
        ("in/dt=1/part-1.parquet", data.len() as u64)
    );
    // It opens and reads like a listed object.
    let object =
        nightshift::read::ParquetObject::open(b.location("in/dt=1/part-1.parquet"), one[0].clone())
            .unwrap();
    assert_eq!(object.num_rows(), 1000);

    let err = list_data_files(&b.location("in/dt=1/part-9.parquet")).unwrap_err();
    assert_eq!(ErrorKind::of(&err), Some(ErrorKind::NotFound), "{err:#}");
    assert_eq!(
        format!("{err:#}"),
        format!("{} does not exist", b.uri("in/dt=1/part-9.parquet"))
    );

    // A folder named like an object is listed, never HEADed (s3s-fs answers that with a 500).
    let folder = list_data_files(&b.location("in/dt=1/table.parquet")).unwrap();
    let keys: Vec<&str> = folder.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["in/dt=1/table.parquet/part-0.parquet"]);
}

#[test]
fn s3_stale_uploads_and_temp_objects_are_removed() {
    let b = TestBucket::new("stale-temps");
    let s = b.store();
    let (admin, bucket) = (&b.admin, b.name.as_str());
    // What a killed writer leaves: an upload started, one part sent, never completed.
    let start = |key: &str| -> String {
        let created = admin
            .runtime
            .block_on(
                admin
                    .client
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("starting an upload: {}", DisplayErrorContext(e)));
        let id = created.upload_id().unwrap().to_string();
        admin
            .runtime
            .block_on(
                admin
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&id)
                    .part_number(1)
                    .body(ByteStream::from_static(b"half an object"))
                    .send(),
            )
            .unwrap_or_else(|e| panic!("uploading a part: {}", DisplayErrorContext(e)));
        id
    };
    let inside = start("out/dt=1/part-0.parquet");
    let outside = start("other/part-0.parquet");
    s.put(
        "out/dt=1/_tmp.part-1.parquet.0193",
        Bytes::from_static(b"x"),
    )
    .unwrap();
    s.put("out/dt=1/part-2.parquet", Bytes::from_static(b"x"))
        .unwrap();
    let parts_of = |key: &str, id: &str| -> Option<usize> {
        match admin.runtime.block_on(
            admin
                .client
                .list_parts()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .send(),
        ) {
            Ok(out) => Some(out.parts().len()),
            Err(e) if e.code() == Some("NoSuchUpload") => None,
            Err(e) => panic!("listing parts: {}", DisplayErrorContext(e)),
        }
    };

    // Everything is younger than a cutoff in the past: nothing is removed.
    let past = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(s.remove_stale_temps("out/", past).unwrap(), 0);
    assert_eq!(parts_of("out/dt=1/part-0.parquet", &inside), Some(1));

    // Everything is older than a cutoff in the future.
    let future = Utc::now() + chrono::Duration::hours(1);
    let removed = s.remove_stale_temps("out", future).unwrap();
    let listed: Vec<String> = admin
        .runtime
        .block_on(admin.client.list_objects_v2().bucket(bucket).send())
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    assert_eq!(
        listed,
        ["out/dt=1/part-2.parquet"],
        "the temporary object is gone"
    );
    match admin.open_uploads(bucket) {
        // AWS, MinIO: the upload under the prefix is aborted, the other kept.
        Some(open) => {
            assert_eq!(removed, 2);
            assert_eq!(open, ["other/part-0.parquet"]);
            assert_eq!(parts_of("out/dt=1/part-0.parquet", &inside), None);
        }
        // s3s-fs cannot list uploads, so none can be found: not an error, nothing aborted.
        None => {
            assert_eq!(removed, 1);
            assert_eq!(parts_of("out/dt=1/part-0.parquet", &inside), Some(1));
        }
    }
    assert_eq!(parts_of("other/part-0.parquet", &outside), Some(1));
    // Tidy up what s3s-fs could not be asked about.
    for (key, id) in [
        ("out/dt=1/part-0.parquet", &inside),
        ("other/part-0.parquet", &outside),
    ] {
        let _ = admin.runtime.block_on(
            admin
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .send(),
        );
    }
}
