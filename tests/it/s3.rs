//! The S3 store against a real S3-compatible server, through the `Storage` trait; and, in
//! `pipeline`, whole jobs on S3 through the real binary.

// A submodule, so that `cargo test --test it s3::` (`make s3-test`) runs it too.
#[path = "s3_pipeline.rs"]
mod pipeline;

use std::io::Write;
use std::thread;

use bytes::Bytes;
use nightshift::storage::{self, ErrorKind, Storage, Stores, Uri};

use crate::util_s3::{pattern, settings, unique_bucket_name, FlakyProxy, TestBucket};

const MIB: usize = 1 << 20;

#[test]
fn put_get_head_delete_round_trip() {
    let b = TestBucket::new("round-trip");
    let s = b.store();
    let key = "scores/dt=2026-01-01/part-0.parquet";
    assert_eq!(
        s.uri(key),
        Uri::S3 {
            bucket: b.name.clone(),
            key: key.into()
        }
    );
    assert!(s.head(key).unwrap().is_none());

    s.put(key, Bytes::from_static(b"hello s3")).unwrap();
    assert_eq!(s.get(key).unwrap(), Bytes::from_static(b"hello s3"));
    let meta = s.head(key).unwrap().expect("object exists after put");
    assert_eq!((meta.key.as_str(), meta.size), (key, 8));
    assert!(meta.last_modified.is_some());
    assert!(!meta.etag.is_empty());

    // A put replaces the whole object.
    s.put(key, Bytes::from_static(b"v2")).unwrap();
    assert_eq!(s.get(key).unwrap(), Bytes::from_static(b"v2"));

    s.delete(key).unwrap();
    assert!(s.head(key).unwrap().is_none());
    // Deleting what is not there is fine.
    s.delete(key).unwrap();
}

#[test]
fn list_returns_every_page_sorted() {
    let b = TestBucket::new("list-pages");
    let s = b.store();
    let n = 1_050;
    // Several threads at once: the blocking API is shared by a job's worker threads.
    thread::scope(|scope| {
        for t in 0..6 {
            let s = &s;
            scope.spawn(move || {
                for i in (t..n).step_by(6) {
                    s.put(&format!("in/f{i:05}.parquet"), Bytes::from(vec![1; i % 7]))
                        .unwrap();
                }
            });
        }
    });
    // Neighbours that a prefix taken as a string rather than a folder would catch.
    s.put("in-other/x.parquet", Bytes::from_static(b"x"))
        .unwrap();
    s.put("input/x.parquet", Bytes::from_static(b"x")).unwrap();
    // In-progress files are hidden, as in local storage.
    s.put("in/_tmp.f.parquet.0191", Bytes::from_static(b"x"))
        .unwrap();

    for prefix in ["in", "in/"] {
        let listed = s.list(prefix).unwrap();
        assert_eq!(listed.len(), n, "prefix {prefix:?}");
        let keys: Vec<String> = listed.iter().map(|m| m.key.clone()).collect();
        let expected: Vec<String> = (0..n).map(|i| format!("in/f{i:05}.parquet")).collect();
        assert_eq!(keys, expected);
        assert!(listed
            .iter()
            .enumerate()
            .all(|(i, m)| m.size == (i % 7) as u64));
    }
    assert_eq!(s.list("").unwrap().len(), n + 2);
    assert!(s.list("nothing-here/").unwrap().is_empty());
}

#[test]
fn get_ranges_returns_the_requested_bytes_in_order() {
    let b = TestBucket::new("ranges");
    let s = b.store();
    let data = pattern(3 * MIB + 17);
    s.put("blob", Bytes::from(data.clone())).unwrap();

    let len = data.len() as u64;
    // More ranges than are fetched at once, out of order, overlapping, empty and at both ends.
    let mut ranges = vec![
        len - 8..len,
        0..4,
        5..5,
        1_000..2 * MIB as u64,
        10..20,
        15..16,
    ];
    ranges.extend((0..12).map(|i| i * 200_000..i * 200_000 + 1_234));
    let got = s.get_ranges("blob", &ranges).unwrap();
    assert_eq!(got.len(), ranges.len());
    for (r, bytes) in ranges.iter().zip(&got) {
        assert_eq!(
            bytes.as_ref(),
            &data[r.start as usize..r.end as usize],
            "range {r:?}"
        );
    }

    let err = s
        .get_ranges("missing", std::slice::from_ref(&(0..4)))
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), Some(ErrorKind::NotFound), "{err:#}");
}

#[test]
fn put_if_absent_writes_once_and_never_overwrites() {
    let b = TestBucket::new("if-absent");
    let s = b.store();
    assert!(s
        .put_if_absent("registry/churn/1.json", Bytes::from_static(b"one"))
        .unwrap());
    assert!(!s
        .put_if_absent("registry/churn/1.json", Bytes::from_static(b"two"))
        .unwrap());
    assert_eq!(
        s.get("registry/churn/1.json").unwrap(),
        Bytes::from_static(b"one")
    );
}

/// s3s-fs checks `If-None-Match` and writes in two steps, so racing writers can all win there;
/// AWS and MinIO decide atomically. Run with `--ignored` against one of those.
#[test]
#[ignore = "needs a server with atomic conditional writes (AWS, MinIO), not s3s-fs"]
fn put_if_absent_has_one_winner_among_racing_writers() {
    let b = TestBucket::new("if-absent-race");
    let s = b.store();
    for round in 0..5 {
        let key = format!("runs/{round}.json");
        let winners: Vec<usize> = thread::scope(|scope| {
            let tries: Vec<_> = (0..6)
                .map(|t| {
                    let (s, key) = (&s, &key);
                    scope.spawn(move || {
                        s.put_if_absent(key, Bytes::from(format!("writer {t}")))
                            .unwrap()
                    })
                })
                .collect();
            tries
                .into_iter()
                .enumerate()
                .filter_map(|(t, h)| h.join().unwrap().then_some(t))
                .collect()
        });
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        assert_eq!(
            s.get(&key).unwrap(),
            Bytes::from(format!("writer {}", winners[0]))
        );
    }
}

#[test]
fn streamed_sink_uploads_parts_and_appears_only_on_commit() {
    let b = TestBucket::new("sink-parts");
    let (s, log) = b.s3_logged();
    let s = s.with_part_size(5 * MIB);
    let data = pattern(12 * MIB + 12_345);

    let mut sink = s.create("out/big.parquet").unwrap();
    // Odd-sized writes, so parts are cut across write boundaries.
    for chunk in data.chunks(777_777) {
        sink.write_all(chunk).unwrap();
    }
    sink.flush().unwrap();
    assert!(
        s.head("out/big.parquet").unwrap().is_none(),
        "visible before commit"
    );
    assert!(s.list("out/").unwrap().is_empty(), "listed before commit");
    sink.commit().unwrap();

    assert_eq!(s.get("out/big.parquet").unwrap().as_ref(), &data[..]);
    assert_eq!(
        s.head("out/big.parquet").unwrap().unwrap().size,
        data.len() as u64
    );
    // 5 + 5 + 2 MiB; multipart ETags end in the part count.
    assert_eq!((log.started().len(), log.parts()), (1, 3));
    let etag = b.admin.etag(&b.name, "out/big.parquet");
    assert!(
        etag.ends_with("-3"),
        "expected a 3-part upload, ETag {etag}"
    );
    b.admin.assert_no_parts_left(&b.name, &log);
}

#[test]
fn small_sinks_commit_with_one_put() {
    let b = TestBucket::new("sink-small");
    let (s, log) = b.s3_logged();
    let mut sink = s.create("small.json").unwrap();
    sink.write_all(b"{\"rows\": 3}").unwrap();
    sink.commit().unwrap();
    assert_eq!(
        s.get("small.json").unwrap(),
        Bytes::from_static(b"{\"rows\": 3}")
    );

    s.create("empty").unwrap().commit().unwrap();
    assert_eq!(s.head("empty").unwrap().unwrap().size, 0);
    assert_eq!((log.started().len(), log.parts()), (0, 0));
}

#[test]
fn dropped_or_aborted_sinks_leave_nothing() {
    let b = TestBucket::new("sink-abort");
    let (s, log) = b.s3_logged();
    let s = s.with_part_size(5 * MIB);
    let data = pattern(11 * MIB);

    // Dropped without commit, as when a worker panics or returns early.
    let mut sink = s.create("out/dropped.parquet").unwrap();
    sink.write_all(&data).unwrap();
    drop(sink);

    // Aborted explicitly, as `write_with` does on an error.
    let mut sink = s.create("out/aborted.parquet").unwrap();
    sink.write_all(&data).unwrap();
    sink.abort().unwrap();

    // Failing inside `write_with` aborts too.
    let failed = storage::write_with(s.create("out/failed.parquet").unwrap(), |w| {
        w.write_all(&data)?;
        anyhow::bail!("scoring failed half way")
    });
    assert!(failed.is_err());

    for key in [
        "out/dropped.parquet",
        "out/aborted.parquet",
        "out/failed.parquet",
    ] {
        assert!(s.head(key).unwrap().is_none(), "{key} exists");
    }
    assert!(s.list("").unwrap().is_empty());
    assert_eq!(
        log.started().len(),
        3,
        "each sink should have started a multipart upload"
    );
    assert!(
        log.parts() >= 6,
        "each sink should have sent its two full parts"
    );
    b.admin.assert_no_parts_left(&b.name, &log);
}

#[test]
fn sink_dropped_inside_an_async_runtime_still_aborts() {
    let b = TestBucket::new("sink-async-drop");
    let (s, log) = b.s3_logged();
    let s = s.with_part_size(5 * MIB);
    let mut sink = s.create("x").unwrap();
    sink.write_all(&pattern(11 * MIB)).unwrap();
    // Not how nightshift calls it, but a drop must neither panic there nor leave parts.
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    other.block_on(async move { drop(sink) });
    assert_eq!(log.started().len(), 1);
    assert!(s.head("x").unwrap().is_none());
    b.admin.assert_no_parts_left(&b.name, &log);
}

#[test]
fn a_response_body_cut_off_is_fetched_again() {
    let b = TestBucket::new("body-cut");
    let data = Bytes::from(pattern(2 * MIB));
    b.store().put("blob", data.clone()).unwrap();
    // Headers and 64 KiB of body get through, then the connection drops: the SDK does not
    // retry that itself.
    let Some(proxy) = FlakyProxy::start(1, 64 * 1024) else {
        return eprintln!("skipped: fault injection needs a plain-HTTP endpoint");
    };
    let s = b.s3_via(&proxy.endpoint);
    assert_eq!(s.get("blob").unwrap(), data);
    assert_eq!(proxy.cuts_left(), 0, "the proxy did not cut a response");
}

#[test]
fn put_if_absent_counts_its_own_unacknowledged_write() {
    let b = TestBucket::new("if-absent-lost");
    // The server stores the object, but the answer never arrives; the retry then meets 412.
    let Some(proxy) = FlakyProxy::start(1, 0) else {
        return eprintln!("skipped: fault injection needs a plain-HTTP endpoint");
    };
    let s = b.s3_via(&proxy.endpoint);
    assert!(s
        .put_if_absent("runs/1.json", Bytes::from_static(b"mine"))
        .unwrap());
    assert_eq!(proxy.cuts_left(), 0, "the proxy did not cut a response");
    assert!(!s
        .put_if_absent("runs/1.json", Bytes::from_static(b"theirs"))
        .unwrap());
    assert_eq!(s.get("runs/1.json").unwrap(), Bytes::from_static(b"mine"));
}

#[test]
fn missing_key_is_not_found_and_named() {
    let b = TestBucket::new("missing-key");
    let s = b.store();
    let err = s.get("nope/x.parquet").unwrap_err();
    assert_eq!(ErrorKind::of(&err), Some(ErrorKind::NotFound), "{err:#}");
    let message = format!("{err:#}");
    assert!(message.contains(&b.uri("nope/x.parquet")), "{message}");
}

#[test]
fn missing_bucket_is_one_clear_line() {
    let name = unique_bucket_name("never-created");
    let stores = Stores::new(settings().s3);
    let loc = stores
        .locate(&Uri::S3 {
            bucket: name.clone(),
            key: "in/x.parquet".into(),
        })
        .unwrap();

    let errors = [
        ("get", loc.store.get(&loc.key).unwrap_err()),
        ("list", loc.store.list("in/").unwrap_err()),
        ("head", loc.store.head(&loc.key).unwrap_err()),
        // Not `put`: s3s-fs creates the bucket on the fly.
    ];
    for (op, err) in errors {
        let message = format!("{err:#}");
        // A missing bucket is not a missing object: the kind tells them apart.
        assert_eq!(
            ErrorKind::of(&err),
            Some(ErrorKind::NoSuchBucket),
            "{op}: {message}"
        );
        assert!(
            message.contains(&format!("bucket '{name}' does not exist")),
            "{op}: {message}"
        );
        assert!(!message.contains('\n'), "{op}: {message}");
        assert!(!message.contains(&std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or("-".into())));
    }
}

#[test]
fn one_store_serves_many_threads() {
    let b = TestBucket::new("threads");
    let s = b.store();
    thread::scope(|scope| {
        for t in 0..8 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..10 {
                    let key = format!("t{t}/o{i}");
                    let data = Bytes::from(pattern(1_000 + t * 100 + i));
                    s.put(&key, data.clone()).unwrap();
                    assert_eq!(s.get(&key).unwrap(), data);
                    assert_eq!(
                        s.get_ranges(&key, &[1..9, 100..200]).unwrap()[1],
                        data.slice(100..200)
                    );
                }
            });
        }
    });
    assert_eq!(s.list("").unwrap().len(), 80);
}

#[test]
fn stores_share_one_store_per_bucket() {
    let b = TestBucket::new("shared");
    let one = b.location("a/b");
    let two = b
        .stores
        .clone()
        .locate(&Uri::parse(&b.uri("c")).unwrap())
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&one.store, &two.store));
    assert_eq!(one.uri().to_string(), b.uri("a/b"));
    assert_eq!(
        one.join("x.parquet").uri().to_string(),
        b.uri("a/b/x.parquet")
    );
}
