//! Hostile input, fuzzed: job files, Parquet objects and model files, mutated from real ones,
//! never make nightshift panic, abort or allocate without bound. A job file gives a config or
//! diagnostics at `path:line:col`; a Parquet object gives scores, quarantined rows with their
//! reasons, or one error line naming the object; a LightGBM, XGBoost (JSON or UBJSON) or ONNX
//! model file is refused in one line, or is accepted and scores each row as it does in a batch.
//!
//! Each target is a seeded loop on the stable toolchain (no cargo-fuzz: the whole crate would
//! have to build with a sanitizer on nightly). `make test` runs a few hundred fixed cases per
//! target, in seconds; `make fuzz` runs each for `FUZZ_SECONDS` from a fresh seed. A failing case
//! is reported with its seed and saved under `target/tmp/fuzz/`; replay it with
//! `NIGHTSHIFT_FUZZ_REPLAY=<seed> cargo test --test it fuzz::<target>`. Before each case the seed
//! is written to `target/tmp/fuzz/<target>.current`, so a case that aborts the process can be
//! replayed too. A replayed case's input is saved there too, to keep for a regression test.
//!
//! Below the targets: the regressions, what a user sees for each kind of bad input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Float64Array, NullArray, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use chrono::{NaiveDate, TimeZone, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, GzipLevel, ZstdLevel};
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnChunkMetaDataBuilder, ParquetMetaData, ParquetMetaDataReader,
    ParquetMetaDataWriter,
};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use nightshift::config::{BadRowPolicy, Diagnostics};
use nightshift::model::formats::{self, Format, InputColumn, InputKind, Parsed};
use nightshift::model::{LoadedModel, Registry};
use nightshift::read::{check_schema, ParquetObject};
use nightshift::schema::ModelRef;
use nightshift::score::{BatchOrigin, Scorer};
use nightshift::storage::{Stores, Uri};
use nightshift::timetable;

use crate::util::{files_under, read_parquet, Env, FIXTURES};

type Gen = Xoshiro256PlusPlus;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------------------------------------
// The driver
// ------------------------------------------------------------------------------------------

/// The largest single allocation asked for on this thread since [`largest_allocation`] was last
/// read. A length field that makes the reader allocate gigabytes is a finding even on a machine
/// that has them: a container with a memory limit is killed by it.
struct TrackLargest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// Bytes allocated less bytes freed on this thread; their highest value since
    /// [`peak_growth`] was last read, and their value then.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static BASE: Cell<isize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

/// Reads and resets this thread's largest allocation.
fn largest_allocation() -> usize {
    LARGEST.with(|l| l.replace(0))
}

fn live(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let now = l.get().wrapping_add(delta);
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

/// Reads and resets how far this thread's live bytes rose above their level at the last read:
/// many allocations sized by a forged count add up even when none of them is huge. (Memory
/// freed by another thread is not seen: the figure may be lower, never higher.)
fn peak_growth() -> usize {
    let now = LIVE.with(Cell::get);
    let base = BASE.with(|b| b.replace(now));
    let peak = PEAK.with(|p| p.replace(now));
    usize::try_from(peak.saturating_sub(base)).unwrap_or(0)
}

// SAFETY: every method passes its arguments unchanged to the system allocator, which upholds
// GlobalAlloc's contract; noting a size touches only thread-local counters, never allocates.
unsafe impl GlobalAlloc for TrackLargest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        live(layout.size() as isize);
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        live(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        live((new_size as isize).wrapping_sub(layout.size() as isize));
        // SAFETY: `ptr` came from this allocator (that is, the system's) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        live(-(layout.size() as isize));
        // SAFETY: as for realloc.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: TrackLargest = TrackLargest;

/// More than this at once, for inputs of a few dozen kilobytes, is a finding.
const HUGE: usize = 256 << 20;

/// A case slower than this is a finding (a loop that a hostile input does not let end).
const SLOW: Duration = Duration::from_secs(20);

/// What one case did: the input it made (saved when the case fails), and its verdict: a short
/// label of the outcome, or why the invariant does not hold.
struct Case {
    input: Vec<u8>,
    verdict: Result<String, String>,
    /// How the input was made, for the report of a failure.
    made: String,
}

fn parse_seed(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("not a seed: {s:?}"))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// An outcome as a label to count: the message without the object's name and numbers.
fn label(message: &str, uri: &str) -> String {
    let m = if uri.is_empty() {
        message.to_string()
    } else {
        message.replace(uri, "OBJ")
    };
    let mut out = String::new();
    for c in m.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out.chars().take(110).collect()
}

/// Runs `case` on seeded generators: `default_cases` fixed seeds, or for
/// `NIGHTSHIFT_FUZZ_SECONDS` from `NIGHTSHIFT_FUZZ_SEED` (or the clock), or the one seed of
/// `NIGHTSHIFT_FUZZ_REPLAY`. Fails listing each distinct failure with a seed that reproduces it.
fn fuzz(target: &str, default_cases: u64, mut case: impl FnMut(&mut Gen) -> Case) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
    std::fs::create_dir_all(&dir).unwrap();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let replay = var("NIGHTSHIFT_FUZZ_REPLAY").map(|s| parse_seed(&s));
    let seconds = var("NIGHTSHIFT_FUZZ_SECONDS").map(|s| {
        s.parse::<f64>()
            .expect("NIGHTSHIFT_FUZZ_SECONDS is a number of seconds")
    });
    let base = match var("NIGHTSHIFT_FUZZ_SEED") {
        Some(s) => parse_seed(&s),
        None if seconds.is_some() => Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64,
        None => target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        }),
    };
    let start = Instant::now();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let mut cases = 0u64;
    loop {
        let done = match (replay, seconds) {
            (Some(_), _) => cases == 1,
            (None, Some(s)) => start.elapsed().as_secs_f64() >= s,
            (None, None) => cases >= default_cases,
        };
        if done {
            break;
        }
        let seed = replay.unwrap_or(base.wrapping_add(cases));
        cases += 1;
        std::fs::write(
            dir.join(format!("{target}.current")),
            format!("{seed:#018x}\n"),
        )
        .unwrap();
        let mut gen = Gen::seed_from_u64(seed);
        largest_allocation();
        let began = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| case(&mut gen))).unwrap_or_else(|p| Case {
            input: Vec::new(),
            verdict: Err(format!("the harness panicked: {}", panic_message(&*p))),
            made: String::new(),
        });
        let took = began.elapsed();
        let largest = largest_allocation();
        let saved = dir.join(format!("{target}-{seed:016x}.bin"));
        if replay.is_some() {
            // A replayed case's input, to keep as a regression test's.
            std::fs::write(&saved, &result.input).unwrap();
        }
        let verdict = match result.verdict {
            Ok(_) if largest > HUGE => Err(format!("allocated {largest} bytes at once")),
            Ok(l) if took > SLOW => Err(format!("took {took:?} ({l})")),
            v => v,
        };
        match verdict {
            Ok(outcome) => *outcomes.entry(outcome).or_default() += 1,
            Err(why) => {
                std::fs::write(&saved, &result.input).unwrap();
                let kind = label(why.lines().next().unwrap_or_default(), "");
                failures.entry(kind).or_insert_with(|| {
                    format!(
                        "seed {seed:#018x}: {why}\n  made: {}\n  input: {}\n  replay: \
                         NIGHTSHIFT_FUZZ_REPLAY={seed:#x} cargo test --test it fuzz::{target}",
                        result.made,
                        saved.display()
                    )
                });
                if failures.len() >= 20 {
                    break;
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let from = match replay {
        Some(seed) => format!("replaying seed {seed:#018x}"),
        None => format!("from seed {base:#018x}"),
    };
    let mut summary = format!("fuzz {target}: {cases} cases in {seconds:.1} s {from}; outcomes:\n");
    let mut by_count: Vec<_> = outcomes.into_iter().collect();
    by_count.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (outcome, n) in by_count {
        summary.push_str(&format!("  {n:>6}  {outcome}\n"));
    }
    eprintln!("{summary}");
    std::fs::write(dir.join(format!("{target}.summary")), &summary).unwrap();
    assert!(
        failures.is_empty(),
        "fuzz {target}: {} kind(s) of failure:\n{}",
        failures.len(),
        failures.into_values().collect::<Vec<_>>().join("\n")
    );
}

/// Byte-level mutations shared by both targets, inside `region` of `data`.
fn mutate_bytes(gen: &mut Gen, data: &mut Vec<u8>, region: Range<usize>, tokens: &[&[u8]]) {
    let region = region.start.min(data.len())..region.end.min(data.len());
    let at = if region.is_empty() {
        region.start
    } else {
        gen.gen_range(region.clone())
    };
    let interesting = [
        0x00, 0x01, 0x7f, 0x80, 0xff, b'"', b'[', b'\n', 0x15, 0x1c, 0x0c,
    ];
    match gen.gen_range(0..10) {
        0 if at < data.len() => data[at] ^= 1 << gen.gen_range(0..8),
        1 if at < data.len() => data[at] = *interesting.choose(gen).unwrap(),
        2 if at < data.len() => data[at] = gen.gen(),
        3 => {
            // A varint (thrift's lengths and sizes) or a little-endian word, overwritten.
            let v: i64 = *[
                i32::MAX as i64,
                i32::MIN as i64,
                -1,
                0,
                1 << 30,
                65_536,
                i64::MAX,
            ]
            .choose(gen)
            .unwrap();
            let mut bytes = Vec::new();
            if gen.gen_bool(0.5) {
                let mut z = ((v << 1) ^ (v >> 63)) as u64;
                loop {
                    let b = (z & 0x7f) as u8;
                    z >>= 7;
                    bytes.push(if z == 0 { b } else { b | 0x80 });
                    if z == 0 {
                        break;
                    }
                }
            } else {
                bytes.extend_from_slice(&(v as u32).to_le_bytes());
            }
            for (i, b) in bytes.into_iter().enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = b;
                }
            }
        }
        4 => {
            let end = (at + gen.gen_range(1..64)).min(data.len());
            let fill = if gen.gen_bool(0.5) { 0 } else { 0xff };
            data[at..end].fill(fill);
        }
        5 => {
            let token = tokens.choose(gen).copied().unwrap_or(b"\0");
            data.splice(at..at, token.iter().copied());
        }
        6 => {
            let end = (at + gen.gen_range(1..16)).min(data.len());
            data.drain(at..end);
        }
        7 if !data.is_empty() => {
            let from = gen.gen_range(0..data.len());
            let len = gen.gen_range(1..64).min(data.len() - from);
            let piece = data[from..from + len].to_vec();
            if gen.gen_bool(0.5) {
                data.splice(at..at, piece);
            } else {
                let end = (at + len).min(data.len());
                data.splice(at..end, piece);
            }
        }
        8 => {
            let n = gen.gen_range(1..8);
            let bytes: Vec<u8> = (0..n).map(|_| gen.gen()).collect();
            data.splice(at..at, bytes);
        }
        _ => data.truncate(at),
    }
}

// ------------------------------------------------------------------------------------------
// Target: job files and settings
// ------------------------------------------------------------------------------------------

fn toml_files(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "toml") {
            out.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// The job files and settings files to start from: the bundled jobs, every bad-job and
/// location fixture, and the fuzz seeds (every field set, every field wrong).
fn toml_corpus() -> &'static (Vec<String>, Vec<String>) {
    static CORPUS: OnceLock<(Vec<String>, Vec<String>)> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut all = Vec::new();
        for d in [
            "jobs",
            "tests/data/bad_jobs",
            "tests/data/locations",
            "tests/data/fuzz",
        ] {
            toml_files(&repo().join(d), &mut all);
        }
        let (settings, jobs): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|(p, _)| p.file_name().is_some_and(|n| n == "nightshift.toml"));
        (
            jobs.into_iter().map(|(_, s)| s).collect(),
            settings.into_iter().map(|(_, s)| s).collect(),
        )
    })
}

const FIELDS: &[&str] = &[
    "name",
    "schedule",
    "timezone",
    "date",
    "uri",
    "quarantine_uri",
    "passthrough",
    "registry",
    "version",
    "batch_rows",
    "threads",
    "on_bad_rows",
    "max_bad_rows_fraction",
    "enabled",
    "drift_share",
    "fail_on_drift",
    "method",
    "threshold",
    "concurrency",
    "catchup",
    "catchup_limit",
    "retries",
    "retry_backoff",
    "state",
    "reports",
    "endpoint_url",
    "region",
    "force_path_style",
    "timeout_secs",
    "max_attempts",
    "max_concurrent_runs",
    "shutdown_grace",
    "lease_ttl",
    "leftover_age",
    "input",
    "model",
    "output",
    "run",
    "drift",
    "s3",
];

/// Values of every type, out of range, huge, oddly spelt or oddly encoded.
fn hostile_value(gen: &mut Gen, key: &str) -> String {
    const CRON: &[&str] = &[
        "* * * * * * *",
        "60 24 32 13 8",
        "@yearly",
        "@reboot",
        "*/0 * * * *",
        "0/0 * * * *",
        "1-1000000 * * * *",
        "L W # ? *",
        "0 0 31 2 *",
        "0 0 30 2 * 2099",
        "59 23 31 12 7",
        "0 0 29 2 1#5",
        "0 0 L * 5L",
        "* * * * MON-SUN/0",
        "0-59/61 * * * *",
        "0 0 ? * ?",
        "0 0 1W * *",
        "0 0 LW * *",
        "0 0 * * 8#1",
        "0 0 * * 0#6",
        "-1 * * * *",
        "",
        "0 0 29 2 *",
        "0 0 1 1 * *",
        "99999999999999999999 * * * *",
        "* * * * 7-0",
        "0 0 * * SUN#5",
        "0 0 31 4 *",
        "0 0 30 2 * *",
        "* * * * * * * * *",
    ];
    let deep = gen.gen_range(1..3000);
    let candidates: Vec<String> = vec![
        "99999999999999999999999".into(),
        "-9223372036854775808".into(),
        "9223372036854775807".into(),
        "18446744073709551616".into(),
        "4294967296".into(),
        "1e309".into(),
        "-0.0".into(),
        "5e-324".into(),
        "nan".into(),
        "+inf".into(),
        "-inf".into(),
        "0x7fffffff".into(),
        "0o777".into(),
        "0b101".into(),
        "true".into(),
        "1979-05-27T07:32:00Z".into(),
        "07:32:00".into(),
        "1979-05-27".into(),
        "[]".into(),
        "[1, \"a\", [2]]".into(),
        "{}".into(),
        "{ a = 1, b = { c = [] } }".into(),
        "\"\"".into(),
        "\" \"".into(),
        "\"\\u0000\"".into(),
        "\"\\uD800\"".into(),
        "\"\\U0010FFFF\"".into(),
        "\"${HOME}\"".into(),
        "\"${\"".into(),
        "\"${}\"".into(),
        "\"${NIGHTSHIFT_FUZZ_NOT_SET}/dt={date}/\"".into(),
        "\"{date}{date}{job}\"".into(),
        "\"{date\"".into(),
        "\"{}\"".into(),
        "\"s3://\"".into(),
        "\"s3:///{date}\"".into(),
        "\"s3://b/../../{date}\"".into(),
        "\"file://\"".into(),
        "\"file:///{date}/\"".into(),
        "\"../../../{date}\"".into(),
        "\"/\"".into(),
        "\".\"".into(),
        "\"ü🚀\u{202e}{date}\"".into(),
        "\"é\u{301}\"".into(),
        "\"-3660d\"".into(),
        "\"-3661d\"".into(),
        "\"-9223372036854775808d\"".into(),
        "\"+1d\"".into(),
        "\"18446744073709551615d\"".into(),
        "\"0ms\"".into(),
        "\"1ms\"".into(),
        "\"Etc/GMT+14\"".into(),
        "\"right/UTC\"".into(),
        format!("\"{}\"", "x".repeat(gen.gen_range(1..100_000))),
        "\"\"\"multi\nline\"\"\"".into(),
        "'literal'".into(),
        "'''ml\nliteral'''".into(),
        format!("{}1{}", "[".repeat(deep), "]".repeat(deep)),
        format!("{}1{}", "{ a = ".repeat(deep), " }".repeat(deep)),
        format!("[{}]", vec!["\"id\""; gen.gen_range(1..2000)].join(", ")),
        "[\"score\", \"id\", \"id\", \"\", \"ü\"]".into(),
        format!("\"{}\"", CRON.choose(gen).unwrap()),
    ];
    if key == "schedule" && gen.gen_bool(0.5) {
        return format!("\"{}\"", CRON.choose(gen).unwrap());
    }
    candidates.choose(gen).unwrap().clone()
}

/// A job or settings file, mutated: bytes, values, keys, lines and tables.
fn mutate_toml(gen: &mut Gen, base: &str, pool: &[String]) -> Vec<u8> {
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    let mut byte_rounds = 0;
    for _ in 0..gen.gen_range(1..=4) {
        let i = gen.gen_range(0..lines.len().max(1));
        match gen.gen_range(0..11) {
            0 | 1 => {
                // A value replaced by a hostile one.
                let assignments: Vec<usize> = (0..lines.len())
                    .filter(|&j| lines[j].contains('=') && !lines[j].trim_start().starts_with('#'))
                    .collect();
                if let Some(&j) = assignments.choose(gen) {
                    let key = lines[j].split('=').next().unwrap().trim().to_string();
                    lines[j] = format!("{key} = {}", hostile_value(gen, &key));
                }
            }
            2 => {
                // A key renamed to another field's name (values of the wrong type), or unknown.
                if let Some(line) = lines.get_mut(i) {
                    if let Some((_, value)) = line.split_once('=') {
                        let key = if gen.gen_bool(0.8) {
                            FIELDS.choose(gen).unwrap().to_string()
                        } else {
                            ["ü", "\"\"", "a.b.c", "'x y'", "\"\\u0000\"", "schedule.x"]
                                .choose(gen)
                                .unwrap()
                                .to_string()
                        };
                        *line = format!("{key} ={value}");
                    }
                }
            }
            3 => {
                // A line of another file.
                let other = pool.choose(gen).unwrap();
                let other: Vec<&str> = other.lines().collect();
                if let Some(l) = other.choose(gen) {
                    lines.insert(i.min(lines.len()), l.to_string());
                }
            }
            4 => {
                let header = [
                    "[input]",
                    "[[model]]",
                    "[drift.columns.\"ü 🚀\"]",
                    "[drift.numeric]",
                    "[run.extra]",
                    "[s3]",
                    "[drift.columns.x.y]",
                    "[output.passthrough]",
                    "[[drift.columns]]",
                    "[name]",
                    "[a.b.c.d.e.f.g.h]",
                ];
                let h = header.choose(gen).unwrap().to_string();
                lines.insert(i.min(lines.len()), h);
            }
            5 if !lines.is_empty() => {
                lines.remove(i);
            }
            6 if !lines.is_empty() => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            7 => {
                let key = FIELDS.choose(gen).unwrap();
                let line = format!("{key} = {}", hostile_value(gen, key));
                lines.insert(i.min(lines.len()), line);
            }
            _ => byte_rounds += 1,
        }
    }
    let mut data = lines
        .join(if gen.gen_bool(0.1) { "\r\n" } else { "\n" })
        .into_bytes();
    let tokens: &[&[u8]] = &[
        b"\"",
        b"'",
        b"[",
        b"]",
        b"[[",
        b"]]",
        b"{",
        b"}",
        b"=",
        b"\n",
        b"#",
        b"\\",
        b".",
        b",",
        b"\"\"\"",
        b"'''",
        b"${",
        b"{date}",
        b"\r",
        b"\t",
        "ü".as_bytes(),
        "🚀".as_bytes(),
        "\u{feff}".as_bytes(),
        "\u{202e}".as_bytes(),
        "\u{301}".as_bytes(),
        b"\xc3",
        b"\xff",
        b"\0",
        b"1e999",
        b"-",
        b"nan",
    ];
    for _ in 0..byte_rounds {
        let len = data.len();
        mutate_bytes(gen, &mut data, 0..len, tokens);
    }
    data
}

/// The lines of a file, for checking that a diagnostic's line is one of them.
fn line_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count() + 1
}

#[test]
fn job_files() {
    let (jobs, settings) = toml_corpus();
    let mut pool = jobs.clone();
    pool.extend(settings.iter().cloned());
    let dir = tempfile::tempdir().unwrap();
    let job_path = dir.path().join("job.toml");
    let settings_path = dir.path().join("nightshift.toml");
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    fuzz("job_files", 600, |gen| {
        let base = jobs.choose(gen).unwrap();
        let job = mutate_toml(gen, base, &pool);
        let shared = match gen.gen_bool(0.4) {
            true => {
                let base = settings.choose(gen).unwrap();
                Some(mutate_toml(gen, base, &pool))
            }
            false => None,
        };
        std::fs::write(&job_path, &job).unwrap();
        let _ = std::fs::remove_file(&settings_path);
        if let Some(s) = &shared {
            std::fs::write(&settings_path, s).unwrap();
        }
        let mut input = job.clone();
        if let Some(s) = &shared {
            input.extend_from_slice(b"\n# ---- nightshift.toml ----\n");
            input.extend_from_slice(s);
        }
        let loaded = catch_unwind(AssertUnwindSafe(|| {
            nightshift::config::load(std::slice::from_ref(&job_path))
        }));
        let verdict = match loaded {
            Err(p) => Err(format!("load panicked: {}", panic_message(&*p))),
            Ok(Ok(config)) => catch_unwind(AssertUnwindSafe(|| {
                // What the daemon and a run do with a valid job next.
                for j in &config.jobs {
                    let date = timetable::next_tick(j, at)
                        .or_else(|| timetable::previous_tick(j, at))
                        .map(|t| timetable::logical_date(j, t))
                        .unwrap_or(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap());
                    j.input
                        .uri(&j.name, date)
                        .map_err(|e| format!("input: {e:#}"))?;
                    j.output
                        .uri
                        .uri(&j.name, date)
                        .map_err(|e| format!("output: {e:#}"))?;
                    j.output
                        .quarantine
                        .uri(&j.name, date)
                        .map_err(|e| format!("quarantine: {e:#}"))?;
                }
                Ok::<_, String>(format!("valid ({} job)", config.jobs.len()))
            }))
            .unwrap_or_else(|p| Err(format!("a valid job panicked: {}", panic_message(&*p))))
            .map_err(|e| format!("a valid job cannot be used: {e}")),
            Ok(Err(Diagnostics(diags))) => check_diagnostics(
                &diags,
                &[
                    (&job_path, line_count(&job)),
                    (&settings_path, shared.as_deref().map_or(0, line_count)),
                ],
            ),
        };
        Case {
            input,
            verdict,
            made: String::new(),
        }
    });
}

/// Every diagnostic is at a line and column of the file it names, on one line, and the first
/// one's message gives the outcome's label.
fn check_diagnostics(
    diags: &[nightshift::config::Diagnostic],
    files: &[(&PathBuf, usize)],
) -> Result<String, String> {
    if diags.is_empty() {
        return Err("an error without diagnostics".into());
    }
    for d in diags {
        let Some((_, lines)) = files.iter().find(|(p, _)| **p == d.path) else {
            return Err(format!("a diagnostic for another file: {d}"));
        };
        if d.line == 0 || d.col == 0 || d.line > *lines {
            return Err(format!(
                "a diagnostic outside its file ({lines} lines): {d}"
            ));
        }
        let breaks = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}');
        if d.message.trim().is_empty() || d.message.chars().any(breaks) {
            return Err(format!("a diagnostic that is not one line: {d:?}"));
        }
        let shown = d.to_string();
        let at = format!("{}:{}:{}: ", d.path.display(), d.line, d.col);
        if !shown.starts_with(&at) {
            return Err(format!("a diagnostic not shown as path:line:col: {shown}"));
        }
    }
    let first = &diags[0].message;
    let kind = first.split([':', '\'']).next().unwrap_or(first);
    Ok(format!("invalid: {}", label(kind, "")))
}

// ------------------------------------------------------------------------------------------
// Target: Parquet inputs
// ------------------------------------------------------------------------------------------

const DAY: &str = "2026-11-01";

fn fixture() -> PathBuf {
    PathBuf::from(format!("{FIXTURES}/features/dt={DAY}/part-00000.parquet"))
}

fn write_batch(batch: &RecordBatch, props: WriterProperties) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
    out
}

/// The fixture with some NaN, infinite and null features, for mutations to meet bad rows.
fn with_bad_values(batch: &RecordBatch) -> RecordBatch {
    let charges = batch
        .column_by_name("monthly_charges")
        .unwrap()
        .as_primitive::<Float64Type>();
    let charges: Float64Array = charges
        .iter()
        .enumerate()
        .map(|(i, v)| match i % 50 {
            1 => Some(f64::NAN),
            2 => Some(f64::INFINITY),
            3 => Some(f64::NEG_INFINITY),
            4 => None,
            5 => Some(f64::MAX),
            _ => v,
        })
        .collect();
    let plan = batch.column_by_name("plan").unwrap().as_string::<i32>();
    let plan: StringArray = plan
        .iter()
        .enumerate()
        .map(|(i, v)| match i % 40 {
            6 => None,
            7 => Some("ünknown 🚀"),
            _ => v,
        })
        .collect();
    let schema = Arc::new(Schema::new(
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<Field>>(),
    ));
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| match f.name().as_str() {
            "monthly_charges" => Arc::new(charges.clone()) as ArrayRef,
            "plan" => Arc::new(plan.clone()) as ArrayRef,
            _ => c.clone(),
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

/// One Parquet file to mutate, and where its parts are.
struct Seed {
    name: &'static str,
    bytes: Vec<u8>,
    footer: Range<usize>,
    chunks: Vec<Range<usize>>,
}

fn footer_range(file: &[u8]) -> Option<Range<usize>> {
    let n = file.len();
    if n < 12 || &file[n - 4..] != b"PAR1" {
        return None;
    }
    let len = u32::from_le_bytes(file[n - 8..n - 4].try_into().unwrap()) as usize;
    (len + 8 <= n).then(|| n - 8 - len..n - 8)
}

fn decode_footer(file: &[u8]) -> Option<ParquetMetaData> {
    ParquetMetaDataReader::decode_metadata(&file[footer_range(file)?]).ok()
}

/// The file with its footer decoded, changed by `f` and encoded again.
fn with_footer(
    file: &[u8],
    f: impl FnOnce(ParquetMetaData) -> Option<ParquetMetaData>,
) -> Option<Vec<u8>> {
    let footer = footer_range(file)?;
    let metadata = f(decode_footer(file)?)?;
    let mut out = file[..footer.start].to_vec();
    // The writer adds up row counts: absurd ones overflow (in the harness, not nightshift).
    catch_unwind(AssertUnwindSafe(|| {
        ParquetMetaDataWriter::new(&mut out, &metadata).finish()
    }))
    .ok()?
    .ok()?;
    Some(out)
}

/// Changes column chunk `c` of row group `r`; `f` also sees the row group's other chunks.
fn edit_chunk(
    metadata: ParquetMetaData,
    r: usize,
    c: usize,
    f: impl FnOnce(ColumnChunkMetaDataBuilder, &[ColumnChunkMetaData]) -> ColumnChunkMetaDataBuilder,
) -> Option<ParquetMetaData> {
    let mut builder = metadata.into_builder();
    let mut row_groups = builder.take_row_groups();
    let mut rg = row_groups.get(r)?.clone().into_builder();
    let mut columns = rg.take_columns();
    let all = columns.clone();
    columns[c] = f(all.get(c)?.clone().into_builder(), &all).build().ok()?;
    row_groups[r] = rg.set_column_metadata(columns).build().ok()?;
    Some(builder.set_row_groups(row_groups).build())
}

fn seed(name: &'static str, bytes: Vec<u8>) -> Seed {
    let footer = footer_range(&bytes).unwrap();
    let metadata = decode_footer(&bytes).unwrap();
    let chunks = metadata
        .row_groups()
        .iter()
        .flat_map(|rg| rg.columns().iter())
        .map(|c| {
            let (start, len) = c.byte_range();
            start as usize..(start + len) as usize
        })
        .collect();
    Seed {
        name,
        bytes,
        footer,
        chunks,
    }
}

/// The fixture as it is, and re-encoded with every codec, both page versions, dictionary and
/// plain, delta and byte-stream-split encodings, small pages, and bad values.
fn parquet_corpus() -> &'static Vec<Seed> {
    static CORPUS: OnceLock<Vec<Seed>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let original = std::fs::read(fixture()).unwrap();
        let batch = read_parquet(&fixture());
        let bad = with_bad_values(&batch);
        let base = || WriterProperties::builder().set_max_row_group_row_count(Some(400));
        let delta = base()
            .set_writer_version(WriterVersion::PARQUET_2_0)
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            .set_data_page_row_count_limit(128)
            .set_write_batch_size(64)
            .set_column_encoding(ColumnPath::from("id"), Encoding::DELTA_BINARY_PACKED)
            .set_column_encoding(
                ColumnPath::from("tenure_months"),
                Encoding::DELTA_BINARY_PACKED,
            )
            .set_column_encoding(
                ColumnPath::from("support_calls"),
                Encoding::DELTA_BINARY_PACKED,
            )
            .set_column_encoding(
                ColumnPath::from("monthly_charges"),
                Encoding::BYTE_STREAM_SPLIT,
            )
            .set_column_encoding(ColumnPath::from("data_gb"), Encoding::BYTE_STREAM_SPLIT)
            .set_column_encoding(ColumnPath::from("plan"), Encoding::DELTA_LENGTH_BYTE_ARRAY)
            .set_column_encoding(ColumnPath::from("region"), Encoding::DELTA_BYTE_ARRAY)
            .build();
        vec![
            seed("fixture (zstd, dictionary, v1 pages)", original),
            seed(
                "uncompressed, dictionary, small v1 pages",
                write_batch(
                    &batch,
                    base()
                        .set_compression(Compression::UNCOMPRESSED)
                        .set_data_page_row_count_limit(50)
                        .set_write_batch_size(50)
                        .build(),
                ),
            ),
            seed(
                "snappy, delta and byte-stream-split, v2 pages",
                write_batch(&batch, delta),
            ),
            seed(
                "gzip, dictionary, v1 pages, bad values",
                write_batch(
                    &bad,
                    base()
                        .set_compression(Compression::GZIP(GzipLevel::default()))
                        .set_max_row_group_row_count(Some(250))
                        .build(),
                ),
            ),
            seed(
                "lz4 raw, v2 pages, bad values",
                write_batch(
                    &bad,
                    base()
                        .set_writer_version(WriterVersion::PARQUET_2_0)
                        .set_compression(Compression::LZ4_RAW)
                        .set_data_page_row_count_limit(100)
                        .set_write_batch_size(100)
                        .build(),
                ),
            ),
            seed(
                "uncompressed plain, bad values",
                write_batch(
                    &bad,
                    base()
                        .set_compression(Compression::UNCOMPRESSED)
                        .set_dictionary_enabled(false)
                        .build(),
                ),
            ),
            seed(
                "zstd, one row group",
                write_batch(
                    &batch,
                    WriterProperties::builder()
                        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
                        .build(),
                ),
            ),
        ]
    })
}

/// Footer values a writer would never write.
fn odd_count(gen: &mut Gen) -> i64 {
    *[
        0,
        1,
        -1,
        2,
        199,
        399,
        401,
        1000,
        1 << 31,
        i32::MAX as i64,
        i64::MAX,
        i64::MIN,
    ]
    .choose(gen)
    .unwrap()
}

/// A footer edit: counts, sizes, offsets and codecs changed, or two chunks' places swapped.
fn mutate_footer(gen: &mut Gen, file: &[u8], ops: &mut Vec<String>) -> Option<Vec<u8>> {
    let metadata = decode_footer(file)?;
    let r = gen.gen_range(0..metadata.num_row_groups());
    let columns = metadata.row_group(r).num_columns();
    let c = gen.gen_range(0..columns);
    let op = gen.gen_range(0..9);
    let value = odd_count(gen);
    let small: i64 = gen.gen_range(-64..64);
    let codec = *[
        Compression::UNCOMPRESSED,
        Compression::SNAPPY,
        Compression::GZIP(GzipLevel::default()),
        Compression::LZ4,
        Compression::LZ4_RAW,
        Compression::ZSTD(ZstdLevel::default()),
        Compression::BROTLI(Default::default()),
        Compression::LZO,
    ]
    .choose(gen)
    .unwrap();
    let other = gen.gen_range(0..columns);
    ops.push(format!("footer op {op} on row group {r} column {c} (value {value}, {small:+}, {codec:?}, other {other})"));
    with_footer(file, |m| match op {
        0 => {
            let mut b = m.into_builder();
            let mut rgs = b.take_row_groups();
            rgs[r] = rgs[r]
                .clone()
                .into_builder()
                .set_num_rows(value)
                .build()
                .ok()?;
            Some(b.set_row_groups(rgs).build())
        }
        1 => edit_chunk(m, r, c, |b, _| b.set_num_values(value)),
        2 => edit_chunk(m, r, c, |b, _| b.set_compression(codec)),
        3 => edit_chunk(m, r, c, |b, _| b.set_total_uncompressed_size(value)),
        4 => edit_chunk(m, r, c, |b, all| {
            b.set_total_compressed_size(all[c].compressed_size() + small)
        }),
        5 => edit_chunk(m, r, c, |b, all| {
            b.set_data_page_offset(all[c].data_page_offset() + small)
        }),
        // Type confusion: chunk c's metadata pointing at chunk `other`'s bytes.
        6 => edit_chunk(m, r, c, |b, all| {
            let o = &all[other];
            b.set_data_page_offset(o.data_page_offset())
                .set_dictionary_page_offset(o.dictionary_page_offset())
                .set_total_compressed_size(o.compressed_size())
                .set_compression(o.compression())
        }),
        7 => edit_chunk(m, r, c, |b, all| {
            let dict = match all[c].dictionary_page_offset() {
                Some(_) => None,
                None => Some(all[c].data_page_offset()),
            };
            b.set_dictionary_page_offset(dict)
        }),
        _ => {
            let mut b = m.into_builder();
            let mut rgs = b.take_row_groups();
            if gen.gen_bool(0.5) {
                rgs.remove(r);
            } else {
                let copy = rgs[r].clone();
                rgs.insert(r, copy);
            }
            Some(b.set_row_groups(rgs).build())
        }
    })
}

/// A fixture file mutated where it hurts: footer, page headers, page data, the tail, or cut.
fn mutate_parquet(gen: &mut Gen, seed: &Seed) -> (Vec<u8>, Vec<String>) {
    let mut ops = vec![format!("from {}", seed.name)];
    let mut data = seed.bytes.clone();
    if gen.gen_bool(0.3) {
        if let Some(edited) = mutate_footer(gen, &data, &mut ops) {
            data = edited;
        }
    }
    let n = data.len();
    let chunk = seed.chunks.choose(gen).unwrap().clone();
    let rounds = if ops.len() > 1 {
        gen.gen_range(0..=2)
    } else {
        gen.gen_range(1..=3)
    };
    for _ in 0..rounds {
        let n_now = data.len();
        let (what, region) = match gen.gen_range(0..20) {
            0..=5 => (
                "footer",
                seed.footer.start.min(n_now)..seed.footer.end.min(n_now),
            ),
            6..=10 => (
                "page header",
                chunk.start..(chunk.start + 48).min(chunk.end),
            ),
            11..=14 => ("page data", chunk.clone()),
            15 => ("tail", n.saturating_sub(8)..n),
            16 => ("head", 0..4),
            17 => {
                let cut = gen.gen_range(0..n_now.max(1));
                ops.push(format!("truncated to {cut} bytes"));
                data.truncate(cut);
                continue;
            }
            18 => {
                // A footer pointing past the end: the data cut, the footer kept.
                let cut = gen.gen_range(0..seed.footer.start);
                ops.push(format!("data cut at {cut}, footer kept"));
                let mut cut_data = data[..cut.min(data.len())].to_vec();
                cut_data.extend_from_slice(&seed.bytes[seed.footer.start..]);
                data = cut_data;
                continue;
            }
            _ => ("anywhere", 0..n_now),
        };
        ops.push(format!("{what} bytes {region:?}"));
        mutate_bytes(
            gen,
            &mut data,
            region,
            &[b"PAR1", b"\x15\x00", b"\x19\x1c", b"\x00"],
        );
    }
    (data, ops)
}

/// The trained churn model in a registry of its own.
struct ModelWorld {
    env: Env,
    model: Arc<LoadedModel>,
}

fn model_world() -> ModelWorld {
    let env = Env::new();
    env.train_churn();
    let root = Stores::default()
        .locate(&Uri::Local(env.path("out/registry")))
        .unwrap();
    let model = Registry::new(root)
        .load(&ModelRef {
            name: "churn".into(),
            version: 1,
        })
        .unwrap();
    ModelWorld {
        env,
        model: Arc::new(model),
    }
}

/// What reading and scoring one object gave.
#[derive(Debug, Default)]
struct Scored {
    rows: u64,
    scored: u64,
    quarantined: u64,
    skipped: u64,
    reasons: BTreeMap<String, u64>,
}

/// Reads and scores an object as a run does (footer, schema, each row group in batches), and
/// checks what each batch gives: counts that add up, finite scores, a reason for each
/// quarantined row.
fn read_and_score(
    path: &Path,
    model: &Arc<LoadedModel>,
    policy: BadRowPolicy,
    batch_rows: usize,
) -> anyhow::Result<Scored> {
    let loc = Stores::default().locate(&Uri::Local(path.to_path_buf()))?;
    let meta = loc.store.head(&loc.key)?.expect("the object exists");
    let obj = ParquetObject::open(loc, meta)?;
    let passthrough = vec!["id".to_string()];
    check_schema(
        obj.schema(),
        &model.manifest.signature,
        &passthrough,
        &obj.uri(),
    )?;
    let scorer = Scorer::new(
        model.clone(),
        obj.schema(),
        passthrough,
        "fuzz".into(),
        Utc::now(),
        policy,
    )?;
    let columns = scorer.input_columns();
    let uri = obj.uri().to_string();
    let mut out = Scored::default();
    for rg in 0..obj.num_row_groups() {
        for batch in obj.read_row_group(rg, &columns, batch_rows)? {
            let batch = batch?;
            let origin = BatchOrigin {
                uri: &uri,
                first_row: out.rows,
            };
            let s = anyhow::Context::with_context(scorer.score(&batch, &origin), || {
                format!("scoring {uri}")
            })?;
            let c = s.counts;
            assert_eq!(c.rows_in, batch.num_rows() as u64, "rows in");
            assert_eq!(
                c.rows_in,
                c.rows_scored + c.rows_quarantined + c.rows_skipped
            );
            assert_eq!(s.output.num_rows() as u64, c.rows_scored);
            let scores = s.output.column_by_name("score").unwrap();
            let scores = scores.as_primitive::<Float64Type>();
            assert!(
                scores.values().iter().all(|v| v.is_finite()),
                "a score is not finite"
            );
            if let Some(q) = &s.quarantine {
                assert_eq!(q.num_rows() as u64, c.rows_quarantined);
                let reasons = q.column_by_name("reason").unwrap().as_string::<i32>();
                for r in reasons.iter() {
                    let r = r
                        .filter(|r| !r.is_empty())
                        .expect("a reason for each bad row");
                    *out.reasons.entry(label(r, &uri)).or_default() += 1;
                }
            }
            out.rows += c.rows_in;
            out.scored += c.rows_scored;
            out.quarantined += c.rows_quarantined;
            out.skipped += c.rows_skipped;
        }
    }
    Ok(out)
}

/// The invariant for an error: one line, naming the object, not a panic caught on the way.
fn check_error(message: &str, uri: &str) -> Result<String, String> {
    if !message.contains(uri) {
        return Err(format!("an error that does not name the object: {message}"));
    }
    if message.contains('\n') {
        return Err(format!("an error of more than one line: {message}"));
    }
    if message.contains("panicked") {
        return Err(format!("a panic, caught: {message}"));
    }
    Ok(format!("error: {}", label(message, uri)))
}

#[test]
fn parquet_inputs() {
    let world = model_world();
    let dir = world.env.path("in");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("part-00000.parquet");
    let uri = path.display().to_string();
    let corpus = parquet_corpus();
    fuzz("parquet_inputs", 400, |gen| {
        let seed = corpus.choose(gen).unwrap();
        let (bytes, ops) = mutate_parquet(gen, seed);
        std::fs::write(&path, &bytes).unwrap();
        let policy = *[
            BadRowPolicy::Quarantine,
            BadRowPolicy::Skip,
            BadRowPolicy::Fail,
        ]
        .choose(gen)
        .unwrap();
        let batch_rows = *[1, 7, 100, 1000, 65_536].choose(gen).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            read_and_score(&path, &world.model, policy, batch_rows)
        }));
        let verdict = match outcome {
            Err(p) => Err(format!("panicked: {}", panic_message(&*p))),
            Ok(Err(e)) => check_error(&format!("{e:#}"), &uri),
            Ok(Ok(s)) if s.reasons.is_empty() => Ok(format!(
                "read ({} rows)",
                if s.rows == 0 { "no" } else { "some" }
            )),
            Ok(Ok(s)) => Ok(format!(
                "read, rows quarantined: {}",
                s.reasons.keys().cloned().collect::<Vec<_>>().join("; ")
            )),
        };
        Case {
            input: bytes,
            verdict,
            made: ops.join("; "),
        }
    });
}

/// The whole run on mutated inputs: planning, footers, workers, outputs, drift report and run
/// record. Slower per case, so fewer cases.
#[test]
fn parquet_runs() {
    let world = model_world();
    let env = &world.env;
    let input = env.path(&format!("in/dt={DAY}"));
    std::fs::create_dir_all(&input).unwrap();
    env.job(
        "churn",
        &format!("{}/in/dt={{date}}/", env.dir.path().display()),
        "max_bad_rows_fraction = 1.0",
    );
    let cfg = nightshift::config::load(&[env.path("jobs")]).unwrap();
    let mut job = cfg.job("churn").unwrap().clone();
    let local = |p: &str| Uri::Local(env.path(p));
    let settings = nightshift::config::Settings {
        registry: local("out/registry"),
        state: local("out/state"),
        reports: local("out/reports"),
        ..cfg.settings.clone()
    };
    job.output.uri.0 = env.path("out/scores/dt={date}/").display().to_string();
    job.output.quarantine.0 = env.path("out/q/dt={date}/").display().to_string();
    let stores = Stores::new(settings.s3.clone());
    let date = NaiveDate::parse_from_str(DAY, "%Y-%m-%d").unwrap();
    let path = input.join("part-00000.parquet");
    let uri = path.display().to_string();
    let good = std::fs::read(fixture()).unwrap();
    let corpus = parquet_corpus();
    fuzz("parquet_runs", 40, |gen| {
        let seed = corpus.choose(gen).unwrap();
        let (bytes, ops) = mutate_parquet(gen, seed);
        std::fs::write(&path, &bytes).unwrap();
        // Each case starts from no outputs: a run refused before it touches the date keeps
        // the last good ones, which are not this case's to judge.
        let _ = std::fs::remove_dir_all(env.path("out/scores"));
        let _ = std::fs::remove_dir_all(env.path("out/q"));
        // A second, good object: one bad object fails the date, whatever order they are read in.
        std::fs::write(input.join("part-00001.parquet"), &good).unwrap();
        let opts = nightshift::run::RunOptions {
            threads: Some(gen.gen_range(1..=3)),
            batch_rows: Some(*[1, 50, 65_536].choose(gen).unwrap()),
            ..Default::default()
        };
        job.run.on_bad_rows = *[
            BadRowPolicy::Quarantine,
            BadRowPolicy::Skip,
            BadRowPolicy::Fail,
        ]
        .choose(gen)
        .unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            nightshift::run::run_job(&job, date, &settings, &stores, &opts)
        }));
        let out_dir = env.path(&format!("out/scores/dt={DAY}"));
        let verdict = match outcome {
            Err(p) => Err(format!("run_job panicked: {}", panic_message(&*p))),
            Ok(Err(failed)) => {
                let listed = files_under(&out_dir);
                if listed
                    .iter()
                    .any(|f| f == "_SUCCESS" || f.ends_with(".parquet"))
                {
                    Err(format!("a failed run left outputs: {listed:?}"))
                } else {
                    check_error(&format!("{:#}", failed.error), &uri)
                }
            }
            Ok(Ok(record)) => {
                let c = record.counts;
                if c.rows_in != c.rows_scored + c.rows_quarantined + c.rows_skipped {
                    Err(format!("counts do not add up: {c:?}"))
                } else if !out_dir.join("_SUCCESS").exists() {
                    Err("a run succeeded without _SUCCESS".into())
                } else {
                    Ok(format!(
                        "run succeeded{}",
                        if c.bad_rows() > 0 {
                            ", with bad rows"
                        } else {
                            ""
                        }
                    ))
                }
            }
        };
        Case {
            input: bytes,
            verdict,
            made: ops.join("; "),
        }
    });
}

// ------------------------------------------------------------------------------------------
// Targets: model files (LightGBM text, XGBoost JSON and UBJSON, ONNX)
// ------------------------------------------------------------------------------------------

/// One committed model file to mutate.
struct ModelSeed {
    /// `<case>/model.<ext>`, or `... as UBJSON` for a JSON model re-encoded here.
    name: String,
    format: Format,
    bytes: Vec<u8>,
    /// The names `parse` needs: the case's features where the file has none (`features_flag`).
    features: Option<Vec<String>>,
    /// The case's feature names (empty for the refused and bad files).
    names: Vec<String>,
    /// The JSON document a UBJSON seed was encoded from, to mutate as JSON and encode again.
    json: Option<Vec<u8>>,
    /// An ONNX file's protobuf fields.
    proto: Option<Vec<PbField>>,
}

/// Every committed model (tests/data/models/*/model.*, the refused and bad files included, and
/// the demo's LightGBM model), and each XGBoost JSON model encoded as UBJSON too: the committed
/// UBJSON files are only two.
fn model_corpus() -> &'static Vec<ModelSeed> {
    static CORPUS: OnceLock<Vec<ModelSeed>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = repo().join("tests/data/models");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        let mut files = Vec::new();
        for dir in dirs {
            let exp: Option<serde_json::Value> = std::fs::read(dir.join("expected.json"))
                .ok()
                .map(|b| serde_json::from_slice(&b).unwrap());
            let names: Vec<String> = exp
                .as_ref()
                .and_then(|e| e["features"].as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let flag = exp
                .as_ref()
                .and_then(|e| e["features_flag"].as_bool())
                .unwrap_or(false);
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            in_dir.sort();
            for path in in_dir {
                files.push((path, names.clone(), flag));
            }
        }
        files.push((
            repo().join("fixtures/churn/models/churn_lightgbm.txt"),
            Vec::new(),
            false,
        ));
        let mut seeds = Vec::new();
        for (path, names, flag) in files {
            let Some(format) = (match path.extension().and_then(|e| e.to_str()) {
                Some("txt") => Some(Format::Lightgbm),
                Some("json") if !path.ends_with("expected.json") => Some(Format::Xgboost),
                Some("ubj" | "bin") => Some(Format::Xgboost),
                Some("onnx") => Some(Format::Onnx),
                _ => None,
            }) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let name = path
                .strip_prefix(&root)
                .unwrap_or(path.strip_prefix(repo()).unwrap_or(&path))
                .display()
                .to_string();
            let proto = (format == Format::Onnx)
                .then(|| pb_decode(&bytes, 0))
                .flatten();
            seeds.push(ModelSeed {
                name,
                format,
                features: flag.then(|| names.clone()),
                names,
                bytes,
                json: None,
                proto,
            });
        }
        let encoded: Vec<ModelSeed> = seeds
            .iter()
            .filter(|s| s.format == Format::Xgboost && s.name.ends_with(".json"))
            .filter_map(|s| {
                Some(ModelSeed {
                    name: format!("{} as UBJSON", s.name),
                    format: s.format,
                    bytes: json_to_ubjson(&s.bytes)?,
                    features: s.features.clone(),
                    names: s.names.clone(),
                    json: Some(s.bytes.clone()),
                    proto: None,
                })
            })
            .collect();
        seeds.extend(encoded);
        seeds
    })
}

fn model_seeds(format: Format) -> Vec<&'static ModelSeed> {
    let seeds: Vec<_> = model_corpus()
        .iter()
        .filter(|s| s.format == format)
        .collect();
    // The harness is only as good as its seeds: each case's model parses as it is.
    for s in &seeds {
        if !s.names.is_empty() {
            let parsed = formats::parse(s.format, &s.bytes, s.features.as_deref());
            assert!(parsed.is_ok(), "seed {}: {:#}", s.name, parsed.unwrap_err());
        }
    }
    seeds
}

/// A JSON document in UBJSON as XGBoost writes it: keys and strings with `L` lengths, numeric
/// arrays typed (`[$l#`, `[$L#`, `[$d#`), other arrays counted, objects closed by `}`.
fn json_to_ubjson(json: &[u8]) -> Option<Vec<u8>> {
    fn len(n: usize, out: &mut Vec<u8>) {
        out.push(b'L');
        out.extend_from_slice(&(n as i64).to_be_bytes());
    }
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value as J;
        match v {
            J::Null => out.push(b'Z'),
            J::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
            J::Number(n) => match n.as_i64() {
                Some(i) => match i32::try_from(i) {
                    Ok(i) => {
                        out.push(b'l');
                        out.extend_from_slice(&i.to_be_bytes());
                    }
                    Err(_) => {
                        out.push(b'L');
                        out.extend_from_slice(&i.to_be_bytes());
                    }
                },
                None => {
                    out.push(b'd');
                    let x = n.as_f64().unwrap_or(f64::NAN) as f32;
                    out.extend_from_slice(&x.to_be_bytes());
                }
            },
            J::String(s) => {
                out.push(b'S');
                len(s.len(), out);
                out.extend_from_slice(s.as_bytes());
            }
            J::Array(a) => {
                out.push(b'[');
                let ints: Option<Vec<i64>> = a.iter().map(|x| x.as_i64()).collect();
                match ints {
                    Some(ints) if !ints.is_empty() => {
                        if ints.iter().all(|&i| i32::try_from(i).is_ok()) {
                            out.extend_from_slice(b"$l#");
                            len(ints.len(), out);
                            for i in ints {
                                out.extend_from_slice(&(i as i32).to_be_bytes());
                            }
                        } else {
                            out.extend_from_slice(b"$L#");
                            len(ints.len(), out);
                            for i in ints {
                                out.extend_from_slice(&i.to_be_bytes());
                            }
                        }
                    }
                    _ if !a.is_empty() && a.iter().all(|x| x.is_number()) => {
                        out.extend_from_slice(b"$d#");
                        len(a.len(), out);
                        for x in a {
                            let x = x.as_f64().unwrap_or(f64::NAN) as f32;
                            out.extend_from_slice(&x.to_be_bytes());
                        }
                    }
                    _ => {
                        out.push(b'#');
                        len(a.len(), out);
                        for x in a {
                            write(x, out);
                        }
                    }
                }
            }
            J::Object(m) => {
                out.push(b'{');
                for (k, x) in m {
                    len(k.len(), out);
                    out.extend_from_slice(k.as_bytes());
                    write(x, out);
                }
                out.push(b'}');
            }
        }
    }
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let mut out = Vec::new();
    write(&v, &mut out);
    Some(out)
}

/// Integers a forger would write where a count, an index or a length goes.
const HOSTILE_INTS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "7",
    "255",
    "65536",
    "16777216",
    "-2147483648",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "1099511627776",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
];

/// Anything else that may stand where a number goes.
const HOSTILE_NUMBERS: &[&str] = &[
    "1e9", "1e300", "-1e300", "1e39", "1e-36", "5e-324", "nan", "NaN", "-nan", "inf", "-inf",
    "Infinity", "1.5", "-0", "+3", "0x10", "", " ", "1 ", "-", "1e", ".",
];

fn hostile_number(gen: &mut Gen) -> String {
    if gen.gen_bool(0.6) {
        HOSTILE_INTS.choose(gen).unwrap().to_string()
    } else {
        HOSTILE_NUMBERS.choose(gen).unwrap().to_string()
    }
}

/// What one case of a model target made: the file, and how.
struct MadeModel {
    bytes: Vec<u8>,
    ops: Vec<String>,
}

/// Parses `bytes` as `model import` does (the detected format, or the seed's as `--format`
/// names it), scores a few rows when the file is accepted, and checks the invariants: no
/// panic, one error line, a bounded largest allocation, `n_rows x width` values.
fn model_case(gen: &mut Gen, seed: &ModelSeed, made: MadeModel) -> Case {
    let MadeModel { bytes, mut ops } = made;
    let forced = gen.gen_bool(0.15);
    let features = match &seed.features {
        Some(f) => Some(f.clone()),
        // Names given where the file has its own replace them; a list of another length is
        // refused.
        None if !seed.names.is_empty() && gen.gen_bool(0.1) => {
            let mut names = seed.names.clone();
            if gen.gen_bool(0.3) {
                names.pop();
            }
            Some(names)
        }
        None => None,
    };
    let n_rows = *[0, 1, 3, 8].choose(gen).unwrap();
    let mut rows = Gen::seed_from_u64(gen.gen());
    ops.push(format!(
        "{}, features {}, {n_rows} rows",
        if forced {
            format!("--format {}", seed.format)
        } else {
            "format detected".into()
        },
        match &features {
            Some(f) => format!("given ({})", f.len()),
            None => "from the file".into(),
        }
    ));
    largest_allocation();
    peak_growth();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let format = match forced {
            true => seed.format,
            false => formats::detect(&bytes)?,
        };
        let parsed = formats::parse(format, &bytes, features.as_deref())?;
        parsed.shape();
        let inputs = model_inputs(&parsed, n_rows, &mut rows);
        let out = parsed.predict(&inputs, n_rows);
        // Rows are independent: each scores alone as it does in the batch.
        let width = parsed.width();
        let alone = (0..n_rows)
            .filter(|_| out.len() == n_rows * width)
            .find(|&r| {
                let row: Vec<InputColumn> = inputs
                    .iter()
                    .map(|c| match c {
                        InputColumn::Numbers(v) => InputColumn::Numbers(vec![v[r]]),
                        InputColumn::Text(v) => InputColumn::Text(vec![v[r].clone()]),
                    })
                    .collect();
                let one = parsed.predict(&row, 1);
                let same =
                    |(a, b): (&f64, &f64)| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan();
                one.len() != width || !one.iter().zip(&out[r * width..]).all(same)
            });
        Ok::<_, anyhow::Error>((width, out.len(), alone))
    }));
    let largest = largest_allocation();
    let growth = peak_growth();
    // For the harness's own (looser) check too.
    note(largest);
    let verdict = match outcome {
        Err(p) => Err(format!("panicked: {}", panic_message(&*p))),
        Ok(_) if largest > largest_bound(bytes.len()) => Err(format!(
            "allocated {largest} bytes at once for a {}-byte file (bound {})",
            bytes.len(),
            largest_bound(bytes.len())
        )),
        Ok(_) if growth > total_bound(bytes.len()) => Err(format!(
            "held {growth} bytes at once for a {}-byte file (bound {})",
            bytes.len(),
            total_bound(bytes.len())
        )),
        Ok(Err(e)) => {
            let message = format!("{e:#}");
            if message.contains(LINE_BREAKS) {
                // One kind of failure however many messages show it: the first line only.
                Err(format!("an error of more than one line:\n  {message:?}"))
            } else if message.trim().is_empty() {
                Err("an empty error".into())
            } else if message.contains("panicked") {
                Err(format!("a panic, caught: {message}"))
            } else {
                Ok(format!(
                    "refused: {}",
                    label(&message, "").chars().take(80).collect::<String>()
                ))
            }
        }
        Ok(Ok((width, len, _))) if len != n_rows * width => Err(format!(
            "predict gave {len} values for {n_rows} rows of {width}"
        )),
        Ok(Ok((_, _, Some(r)))) => Err(format!(
            "row {r} of {n_rows} scores differently alone than in the batch"
        )),
        Ok(Ok(_)) => Ok("accepted and scored".into()),
    };
    Case {
        input: bytes,
        verdict,
        made: format!("from {}: {}", seed.name, ops.join("; ")),
    }
}

/// The most a model file may have allocated at once while it is parsed and a few rows scored:
/// 64 MiB, and 16 bytes for each byte of the file (a typed UBJSON array of 1-byte integers
/// becomes 8-byte ones; a tree's nodes are larger than their text).
fn largest_bound(file_len: usize) -> usize {
    (64 << 20) + 16 * file_len
}

/// The most it may hold in all: 128 MiB, and 64 bytes for each byte of the file.
fn total_bound(file_len: usize) -> usize {
    (128 << 20) + 64 * file_len
}

/// What breaks a message over lines on a terminal.
const LINE_BREAKS: [char; 4] = ['\n', '\r', '\u{2028}', '\u{2029}'];

/// `n_rows` rows for the model's inputs: numbers with NaN, zero, the zero band, negatives,
/// category codes and huge values; strings known, unknown, empty and null.
fn model_inputs(parsed: &Parsed, n_rows: usize, gen: &mut Gen) -> Vec<InputColumn> {
    const NUMBERS: &[f64] = &[
        f64::NAN,
        0.0,
        -0.0,
        1.0,
        2.0,
        3.0,
        -1.0,
        0.5,
        30.5,
        70.0,
        1e-36,
        1e30,
        -1e30,
        5e-324,
        f64::MAX,
        4294967296.0,
    ];
    const TEXTS: &[Option<&str>] = &[
        Some("basic"),
        Some("enterprise"),
        Some("premium"),
        Some("standard"),
        Some("east"),
        Some("north"),
        Some("south"),
        Some("west"),
        Some(""),
        Some("ünknown 🚀"),
        None,
    ];
    parsed
        .features
        .iter()
        .map(|f| match f.kind {
            InputKind::Text => InputColumn::Text(
                (0..n_rows)
                    .map(|_| TEXTS.choose(gen).unwrap().map(String::from))
                    .collect(),
            ),
            _ => InputColumn::Numbers((0..n_rows).map(|_| *NUMBERS.choose(gen).unwrap()).collect()),
        })
        .collect()
}

/// Runs a model target: a seed of `format`, mutated by `mutate`, each case checked by
/// [`model_case`].
fn fuzz_models(
    target: &str,
    format: Format,
    default_cases: u64,
    mutate: impl Fn(&mut Gen, &ModelSeed, &[&ModelSeed]) -> MadeModel,
) {
    let seeds = model_seeds(format);
    assert!(!seeds.is_empty(), "no {format} seeds");
    // Each case's file, written before it is parsed: the input of a case that aborts the
    // process (an allocation that fails) is there to replay.
    let input = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz/{target}.input"));
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    fuzz(target, default_cases, |gen| {
        let seed = *seeds.choose(gen).unwrap();
        let made = mutate(gen, seed, &seeds);
        std::fs::write(&input, &made.bytes).unwrap();
        model_case(gen, seed, made)
    });
}

// LightGBM text models.

/// The keys whose values LightGBM's reader counts, indexes or sizes by.
const LIGHTGBM_KEYS: &[&str] = &[
    "num_leaves",
    "num_cat",
    "num_class",
    "num_tree_per_iteration",
    "max_feature_idx",
    "label_index",
    "tree_sizes",
    "Tree",
    "cat_boundaries",
    "cat_threshold",
    "split_feature",
    "left_child",
    "right_child",
    "decision_type",
    "threshold",
    "leaf_value",
    "leaf_count",
    "leaf_weight",
    "internal_value",
    "shrinkage",
    "is_linear",
    "version",
    "average_output",
];

const LIGHTGBM_OBJECTIVES: &[&str] = &[
    "binary sigmoid:1",
    "binary sigmoid:0",
    "binary sigmoid:nan",
    "binary sigmoid:-1e308",
    "binary",
    "multiclass num_class:3",
    "multiclass num_class:1",
    "multiclass num_class:0",
    "multiclass num_class:4294967297",
    "multiclass num_class:99999999999999999999",
    "multiclassova num_class:3 sigmoid:1",
    "multiclassova num_class:-1 sigmoid:1",
    "regression",
    "regression sqrt",
    "regression_l1",
    "huber",
    "quantile",
    "poisson",
    "gamma",
    "tweedie",
    "cross_entropy",
    "cross_entropy_lambda",
    "lambdarank",
    "rank_xendcg",
    "custom",
    "none",
    "",
    "binary sigmoid:1 sigmoid:2",
    "multiclass\tnum_class:3",
];

const LIGHTGBM_PANDAS: &[&str] = &[
    "pandas_categorical:null",
    "pandas_categorical:[]",
    "pandas_categorical:[[]]",
    "pandas_categorical:[[], [], [], [], [], [], []]",
    "pandas_categorical:[[\"a\", \"a\"], [\"b\"]]",
    "pandas_categorical:[[1, 2.5, true, null], [\"x\"]]",
    "pandas_categorical:[[\"a\\nb\"], [\"\\u0000\"]]",
    "pandas_categorical:[[\"basic\", \"enterprise\"",
    "pandas_categorical:[[1e999], [-1e999]]",
    "pandas_categorical:{\"a\": 1}",
    "pandas_categorical:\"basic\"",
    "pandas_categorical:[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

/// The lines of the `Tree=` block starting at line `start`: up to the next `Tree=` or
/// `end of trees`.
fn lightgbm_block(lines: &[String], start: usize) -> Range<usize> {
    let end = (start + 1..lines.len())
        .find(|&j| lines[j].starts_with("Tree=") || lines[j].starts_with("end of trees"))
        .unwrap_or(lines.len());
    start..end
}

fn mutate_lightgbm(gen: &mut Gen, seed: &ModelSeed, pool: &[&ModelSeed]) -> MadeModel {
    let text = String::from_utf8_lossy(&seed.bytes);
    let mut lines: Vec<String> = text.split('\n').map(String::from).collect();
    let mut ops = Vec::new();
    let lines_of = |s: &ModelSeed| -> Vec<String> {
        String::from_utf8_lossy(&s.bytes)
            .split('\n')
            .map(String::from)
            .collect()
    };
    for _ in 0..gen.gen_range(1..=3) {
        let i = gen.gen_range(0..lines.len().max(1));
        match gen.gen_range(0..14) {
            0..=4 => {
                // A count, an index, a threshold or a decision type forged.
                let key = *LIGHTGBM_KEYS.choose(gen).unwrap();
                let prefix = format!("{key}=");
                let at: Vec<usize> = (0..lines.len())
                    .filter(|&j| lines[j].starts_with(&prefix))
                    .collect();
                if let Some(&j) = at.choose(gen) {
                    let value = lines[j][prefix.len()..].to_string();
                    let mut values: Vec<String> = value.split(' ').map(String::from).collect();
                    let k = gen.gen_range(0..values.len());
                    let new = match key {
                        "decision_type" if gen.gen_bool(0.6) => {
                            gen.gen_range(0..=255u32).to_string()
                        }
                        _ => hostile_number(gen),
                    };
                    ops.push(format!("{key}= value {k} of line {j} set to {new:?}"));
                    values[k] = new;
                    lines[j] = format!("{prefix}{}", values.join(" "));
                }
            }
            5 | 6 => {
                // An array one element short or long, or thousands long.
                let at: Vec<usize> = (0..lines.len())
                    .filter(|&j| {
                        lines[j]
                            .split_once('=')
                            .is_some_and(|(_, v)| v.contains(' '))
                    })
                    .collect();
                if let Some(&j) = at.choose(gen) {
                    let (key, value) = lines[j].split_once('=').unwrap();
                    let key = key.to_string();
                    let mut values: Vec<&str> = value.split(' ').collect();
                    let k = gen.gen_range(0..values.len());
                    let what = match gen.gen_range(0..4) {
                        0 => {
                            values.remove(k);
                            "one short"
                        }
                        1 => {
                            values.insert(k, values[k]);
                            "one long"
                        }
                        2 => {
                            let v = values[k];
                            values.extend(std::iter::repeat_n(v, 5000));
                            "5000 long"
                        }
                        _ => {
                            values.truncate(k);
                            "cut"
                        }
                    };
                    ops.push(format!("{key}= on line {j} {what} (at {k})"));
                    lines[j] = format!("{key}={}", values.join(" "));
                }
            }
            7 if !lines.is_empty() => {
                ops.push(format!("line {i} removed"));
                lines.remove(i);
            }
            8 if !lines.is_empty() => {
                ops.push(format!("line {i} twice"));
                lines.insert(i, lines[i].clone());
            }
            9 => {
                let other = lines_of(pool.choose(gen).unwrap());
                if let Some(l) = other.choose(gen) {
                    ops.push(format!("line {l:?} inserted at {i}"));
                    lines.insert(i.min(lines.len()), l.clone());
                }
            }
            10 => {
                // A tree removed, twice, or another model's.
                let trees: Vec<usize> = (0..lines.len())
                    .filter(|&j| lines[j].starts_with("Tree="))
                    .collect();
                if let Some(&t) = trees.choose(gen) {
                    let block = lightgbm_block(&lines, t);
                    match gen.gen_range(0..3) {
                        0 => {
                            ops.push(format!("tree at line {t} removed"));
                            lines.drain(block);
                        }
                        1 => {
                            ops.push(format!("tree at line {t} twice"));
                            let copy: Vec<String> = lines[block.clone()].to_vec();
                            lines.splice(block.end..block.end, copy);
                        }
                        _ => {
                            let other = lines_of(pool.choose(gen).unwrap());
                            let theirs: Vec<usize> = (0..other.len())
                                .filter(|&j| other[j].starts_with("Tree="))
                                .collect();
                            if let Some(&o) = theirs.choose(gen) {
                                ops.push(format!("tree at line {t} replaced by another's"));
                                let copy = other[lightgbm_block(&other, o)].to_vec();
                                lines.splice(block, copy);
                            }
                        }
                    }
                }
            }
            11 => {
                let objective = LIGHTGBM_OBJECTIVES.choose(gen).unwrap();
                if let Some(j) = lines.iter().position(|l| l.starts_with("objective=")) {
                    ops.push(format!("objective={objective}"));
                    lines[j] = format!("objective={objective}");
                }
            }
            12 => {
                let pandas = LIGHTGBM_PANDAS.choose(gen).unwrap().to_string();
                ops.push(pandas.clone());
                match lines
                    .iter()
                    .position(|l| l.starts_with("pandas_categorical:"))
                {
                    Some(j) => lines[j] = pandas,
                    None => lines.push(pandas),
                }
            }
            _ => {
                // Feature names: one fewer, one more, twice, or odd.
                if let Some(j) = lines.iter().position(|l| l.starts_with("feature_names=")) {
                    let mut names: Vec<String> = lines[j]["feature_names=".len()..]
                        .split(' ')
                        .map(String::from)
                        .collect();
                    let k = gen.gen_range(0..names.len());
                    match gen.gen_range(0..4) {
                        0 => drop(names.remove(k)),
                        1 => names.push("extra".into()),
                        2 => names.insert(k, names[k].clone()),
                        _ => {
                            names[k] = ["", "a=b", "ü🚀", "\r", "\t", "[", "\u{202e}x"]
                                .choose(gen)
                                .unwrap()
                                .to_string()
                        }
                    }
                    ops.push(format!("feature_names={}", names.join(" ")));
                    lines[j] = format!("feature_names={}", names.join(" "));
                }
            }
        }
    }
    let mut bytes = lines.join("\n").into_bytes();
    if gen.gen_bool(0.3) {
        let rounds = gen.gen_range(1..=2);
        ops.push(format!("{rounds} byte mutation(s)"));
        for _ in 0..rounds {
            let n = bytes.len();
            mutate_bytes(
                gen,
                &mut bytes,
                0..n,
                &[
                    b"\n",
                    b"=",
                    b" ",
                    b"Tree=",
                    b"\nend of trees\n",
                    b"num_leaves=",
                    b"-1",
                    b"4294967295",
                    b"nan",
                    b"inf",
                    b"[",
                    b":",
                    b"\r",
                ],
            );
        }
    }
    MadeModel { bytes, ops }
}

#[test]
fn lightgbm_files() {
    fuzz_models("lightgbm_files", Format::Lightgbm, 2500, mutate_lightgbm);
}

// XGBoost JSON and UBJSON.

/// The keys whose values XGBoost's reader counts, indexes or sizes by, and some it reads.
const XGBOOST_KEYS: &[&str] = &[
    "num_trees",
    "num_parallel_tree",
    "num_feature",
    "num_class",
    "num_target",
    "num_nodes",
    "num_deleted",
    "size_leaf_vector",
    "base_score",
    "boost_from_average",
    "left_children",
    "right_children",
    "parents",
    "split_indices",
    "split_conditions",
    "split_type",
    "default_left",
    "base_weights",
    "categories",
    "categories_nodes",
    "categories_segments",
    "categories_sizes",
    "tree_info",
    "iteration_indptr",
    "feature_names",
    "feature_types",
    "trees",
    "id",
    "name",
    "weight_drop",
    "best_iteration",
    "scikit_learn",
    "version",
    "scale_pos_weight",
    "sorted_idx",
    "feature_segments",
    "attributes",
];

const XGBOOST_NAMES: &[&str] = &[
    "gbtree",
    "gblinear",
    "dart",
    "binary:logistic",
    "binary:logitraw",
    "binary:hinge",
    "multi:softprob",
    "multi:softmax",
    "reg:squarederror",
    "reg:logistic",
    "reg:pseudohubererror",
    "reg:absoluteerror",
    "reg:quantileerror",
    "reg:tweedie",
    "reg:gamma",
    "count:poisson",
    "survival:cox",
    "survival:aft",
    "rank:pairwise",
    "rank:ndcg",
    "",
];

/// JSON values of every type, and numbers no writer writes.
const JSON_HOSTILE: &[&str] = &[
    "null",
    "true",
    "{}",
    "[]",
    "[[]]",
    "\"\"",
    "\"x\"",
    "{\"a\":1}",
    "4294967295",
    "4294967296",
    "-1",
    "0",
    "2147483647",
    "2147483648",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "99999999999999999999",
    "16777216",
    "1e39",
    "-1e39",
    "NaN",
    "Infinity",
    "-Infinity",
    "1.5",
    "-0",
    "1e",
];

/// Where the JSON value starting at `at` ends (a string, array, object or scalar).
fn json_value_end(b: &[u8], at: usize) -> Option<usize> {
    match *b.get(at)? {
        b'"' => {
            let mut i = at + 1;
            while i < b.len() {
                match b[i] {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
            None
        }
        b'[' | b'{' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = json_value_end(b, i)?;
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let mut i = at;
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']') {
                i += 1;
            }
            Some(i)
        }
    }
}

/// The elements of the JSON array `b[range]` (brackets included), as ranges.
fn json_elements(b: &[u8], range: Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = range.start + 1;
    while i < range.end - 1 {
        while i < range.end - 1 && matches!(b[i], b' ' | b'\n' | b'\t' | b'\r' | b',') {
            i += 1;
        }
        if i >= range.end - 1 {
            break;
        }
        match json_value_end(b, i) {
            Some(end) if end < range.end && end > i => {
                out.push(i..end);
                i = end;
            }
            _ => break,
        }
    }
    out
}

/// An XGBoost JSON document with one value forged: a count, an array element, an array's
/// length, a value's type, an objective, or a string's escapes.
fn mutate_xgboost_json(gen: &mut Gen, json: &[u8], ops: &mut Vec<String>) -> Vec<u8> {
    let mut data = json.to_vec();
    for _ in 0..gen.gen_range(1..=3) {
        let key = *XGBOOST_KEYS.choose(gen).unwrap();
        let needle = format!("\"{key}\":");
        let found: Vec<usize> = data
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle.as_bytes())
            .map(|(i, _)| i + needle.len())
            .collect();
        let Some(&at) = found.choose(gen) else {
            continue;
        };
        let mut at = at;
        while data.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
            at += 1;
        }
        let Some(end) = json_value_end(&data, at) else {
            continue;
        };
        let value = data[at..end].to_vec();
        let new: Vec<u8> = match (value.first(), gen.gen_range(0..10)) {
            // The whole value of another type, or a hostile number.
            (_, 0) => JSON_HOSTILE.choose(gen).unwrap().as_bytes().to_vec(),
            (Some(b'"'), n) => {
                let inner = if key == "name" && n < 5 {
                    XGBOOST_NAMES.choose(gen).unwrap().to_string()
                } else if key == "base_score" && n < 7 {
                    let x = *[
                        "1E+39",
                        "NaN",
                        "-Infinity",
                        "0",
                        "1",
                        "-1",
                        "5E-1,5E-1",
                        "",
                        "[",
                        "1e-45",
                    ]
                    .choose(gen)
                    .unwrap();
                    format!("[{x}]")
                } else if n < 8 {
                    hostile_number(gen)
                } else {
                    // An escape or a control character in a string.
                    let s = String::from_utf8_lossy(&value[1..value.len() - 1]).to_string();
                    let odd = *[
                        "\\n", "\\r", "\\u0000", "\\ud800", "\\u2028", "\\\"", "\\", "\n", "\\x",
                        "\\u00", "\u{202e}",
                    ]
                    .choose(gen)
                    .unwrap();
                    let k = gen.gen_range(0..=s.len());
                    let k = (0..=k).rev().find(|&k| s.is_char_boundary(k)).unwrap_or(0);
                    format!("{}{odd}{}", &s[..k], &s[k..])
                };
                format!("\"{inner}\"").into_bytes()
            }
            (Some(b'['), n) => {
                let elements = json_elements(&data, at..end);
                let mut parts: Vec<Vec<u8>> =
                    elements.iter().map(|r| data[r.clone()].to_vec()).collect();
                if parts.is_empty() {
                    parts.push(JSON_HOSTILE.choose(gen).unwrap().as_bytes().to_vec());
                } else {
                    let k = gen.gen_range(0..parts.len());
                    match n {
                        1..=4 => {
                            parts[k] = match parts[k].first() {
                                // In a list of names, an escape or a name twice.
                                Some(b'"') if gen.gen_bool(0.5) => {
                                    let other = parts.choose(gen).unwrap().clone();
                                    if gen.gen_bool(0.5) {
                                        other
                                    } else {
                                        b"\"a\\nb\"".to_vec()
                                    }
                                }
                                _ => JSON_HOSTILE.choose(gen).unwrap().as_bytes().to_vec(),
                            }
                        }
                        5 => drop(parts.remove(k)),
                        6 => parts.insert(k, parts[k].clone()),
                        7 => {
                            let p = parts[k].clone();
                            parts.extend(std::iter::repeat_n(p, gen.gen_range(2..3000)));
                        }
                        8 => parts.truncate(k),
                        _ => parts.shuffle(gen),
                    }
                }
                let mut out = b"[".to_vec();
                out.extend(parts.join(&b","[..]));
                out.push(b']');
                out
            }
            (_, _) => hostile_number(gen).into_bytes(),
        };
        ops.push(format!(
            "\"{key}\" at byte {at}: {} -> {}",
            String::from_utf8_lossy(&value[..value.len().min(40)]),
            String::from_utf8_lossy(&new[..new.len().min(40)])
        ));
        data.splice(at..end, new);
    }
    data
}

/// Where in a UBJSON document a count or a length is: `#` counts, and `L` integers that look
/// like lengths (keys, strings, counts: their top four bytes zero).
fn ubjson_lengths(data: &[u8]) -> Vec<usize> {
    (0..data.len())
        .filter(|&i| {
            (data[i] == b'#' && data.get(i + 1).is_some_and(|m| b"iUIlL".contains(m)))
                || (data[i] == b'L'
                    && i > 0
                    && data[i - 1] != b'#'
                    && data.get(i + 1..i + 5) == Some(&[0, 0, 0, 0]))
        })
        .map(|i| if data[i] == b'#' { i + 1 } else { i })
        .collect()
}

/// A UBJSON integer of `marker` (`i`, `U`, `I`, `l`, `L`): its payload, big-endian.
fn ubjson_int(marker: u8, v: i64) -> Vec<u8> {
    match marker {
        b'i' => (v as i8).to_be_bytes().to_vec(),
        b'U' => (v as u8).to_be_bytes().to_vec(),
        b'I' => (v as i16).to_be_bytes().to_vec(),
        b'l' => (v as i32).to_be_bytes().to_vec(),
        _ => v.to_be_bytes().to_vec(),
    }
}

fn ubjson_width(marker: u8) -> usize {
    match marker {
        b'i' | b'U' => 1,
        b'I' => 2,
        b'l' => 4,
        _ => 8,
    }
}

fn mutate_ubjson(gen: &mut Gen, data: &mut Vec<u8>, ops: &mut Vec<String>) {
    match gen.gen_range(0..6) {
        0..=2 => {
            // A count or a length forged, in its own width or another.
            let sites = ubjson_lengths(data);
            if let Some(&at) = sites.choose(gen) {
                let old_marker = data[at];
                let old_width = ubjson_width(old_marker);
                if at + 1 + old_width > data.len() {
                    return;
                }
                let mut old = [0u8; 8];
                old[8 - old_width..].copy_from_slice(&data[at + 1..at + 1 + old_width]);
                let old = i64::from_be_bytes(old);
                let left = (data.len() - at) as i64;
                let value = *[
                    0,
                    1,
                    -1,
                    127,
                    128,
                    255,
                    32_767,
                    65_535,
                    i32::MAX as i64,
                    i32::MIN as i64,
                    1 << 32,
                    1 << 40,
                    i64::MAX,
                    i64::MIN,
                    old.wrapping_add(1),
                    old.wrapping_sub(1),
                    old.saturating_mul(2),
                    left,
                    left + 1,
                    left / 4,
                ]
                .choose(gen)
                .unwrap();
                let marker = if gen.gen_bool(0.7) {
                    old_marker
                } else {
                    *b"iUIlL".choose(gen).unwrap()
                };
                let mut new = vec![marker];
                new.extend(ubjson_int(marker, value));
                ops.push(format!(
                    "length at byte {at}: {}{old} -> {}{value}",
                    old_marker as char, marker as char
                ));
                data.splice(at..at + 1 + old_width, new);
            }
        }
        3 => {
            // A typed container's element type changed.
            let sites: Vec<usize> = (0..data.len().saturating_sub(1))
                .filter(|&i| data[i] == b'$' && b"iUIlLdD".contains(&data[i + 1]))
                .map(|i| i + 1)
                .collect();
            if let Some(&at) = sites.choose(gen) {
                let t = *b"iUIlLdDCSHZTFN[{#$".choose(gen).unwrap();
                ops.push(format!(
                    "typed container at byte {at}: {} -> {}",
                    data[at] as char, t as char
                ));
                data[at] = t;
            }
        }
        _ => {
            let n = data.len();
            ops.push("UBJSON byte mutation".into());
            let deep = "[".repeat(gen.gen_range(60..3000)).into_bytes();
            mutate_bytes(
                gen,
                data,
                0..n,
                &[
                    b"[",
                    b"{",
                    b"]",
                    b"}",
                    b"N",
                    b"Z",
                    b"H",
                    b"#L\x7f\xff\xff\xff\xff\xff\xff\xff",
                    b"[$d#L\x00\x00\x00\x00\x10\x00\x00\x00",
                    b"[$L#l\x7f\xff\xff\xff",
                    b"[#L\x00\x00\x00\x00\x7f\xff\xff\xff",
                    b"SL\x7f\xff\xff\xff\xff\xff\xff\xff",
                    b"Si\xff",
                    b"SU\x05\xff\xfe\x00\n\r",
                    &deep,
                ],
            );
        }
    }
}

fn mutated_ubjson(gen: &mut Gen, bytes: &[u8], ops: &mut Vec<String>) -> Vec<u8> {
    let mut data = bytes.to_vec();
    for _ in 0..gen.gen_range(1..=3) {
        mutate_ubjson(gen, &mut data, ops);
    }
    data
}

fn mutate_xgboost(gen: &mut Gen, seed: &ModelSeed, pool: &[&ModelSeed]) -> MadeModel {
    let mut ops = Vec::new();
    let json = seed.bytes.first() == Some(&b'{')
        && seed
            .bytes
            .get(1)
            .is_some_and(|b| matches!(b, b'"' | b'}') || b.is_ascii_whitespace());
    let mut bytes = match (&seed.json, json) {
        // A UBJSON seed encoded from JSON: forged as JSON and encoded again (when serde_json
        // reads the result), or mutated as UBJSON.
        (Some(source), _) if gen.gen_bool(0.5) => {
            let forged = mutate_xgboost_json(gen, source, &mut ops);
            match json_to_ubjson(&forged) {
                Some(b) => b,
                None => {
                    ops.push("(JSON serde_json does not read: mutated as UBJSON)".into());
                    mutated_ubjson(gen, &seed.bytes, &mut ops)
                }
            }
        }
        (_, true) => mutate_xgboost_json(gen, &seed.bytes, &mut ops),
        (_, false) => mutated_ubjson(gen, &seed.bytes, &mut ops),
    };
    if gen.gen_bool(0.25) {
        let n = bytes.len();
        match gen.gen_range(0..3) {
            0 => {
                // A piece of another model of the same encoding spliced in.
                let other = pool.choose(gen).unwrap();
                let from = gen.gen_range(0..other.bytes.len());
                let len = gen.gen_range(1..2000).min(other.bytes.len() - from);
                let at = gen.gen_range(0..=n);
                let end = (at + gen.gen_range(0..2000)).min(n);
                ops.push(format!(
                    "bytes {at}..{end} replaced by {from}..{} of {}",
                    from + len,
                    other.name
                ));
                bytes.splice(at..end, other.bytes[from..from + len].iter().copied());
            }
            _ => {
                ops.push("byte mutation".into());
                mutate_bytes(
                    gen,
                    &mut bytes,
                    0..n,
                    &[
                        b"{",
                        b"}",
                        b"[",
                        b"]",
                        b",",
                        b":",
                        b"\"",
                        b"NaN",
                        b"-Infinity",
                        b"1e39",
                        b"\\u0000",
                        b"\\n",
                        b"\\ud800",
                        b"99999999999999999999",
                        b"\xff",
                    ],
                );
            }
        }
    }
    MadeModel { bytes, ops }
}

#[test]
fn xgboost_files() {
    fuzz_models("xgboost_files", Format::Xgboost, 1200, mutate_xgboost);
}

// ONNX: protobuf fields.

/// A protobuf field, decoded as far as the bytes allow: a length-delimited field whose bytes
/// read as fields is a message (a string or packed numbers may read as one too; encoding it
/// again gives the same bytes).
#[derive(Clone, Debug)]
struct PbField {
    number: u64,
    value: PbValue,
    /// A length written instead of the true one.
    forged_len: Option<u64>,
}

#[derive(Clone, Debug)]
enum PbValue {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(Vec<u8>),
    Message(Vec<PbField>),
}

fn pb_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn pb_decode(b: &[u8], depth: usize) -> Option<Vec<PbField>> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let tag = pb_varint(b, &mut at)?;
        let number = tag >> 3;
        if number == 0 || number >= 1 << 29 {
            return None;
        }
        let value = match tag & 7 {
            0 => PbValue::Varint(pb_varint(b, &mut at)?),
            1 => {
                let v = b.get(at..at + 8)?.try_into().ok()?;
                at += 8;
                PbValue::Fixed64(v)
            }
            2 => {
                let len = usize::try_from(pb_varint(b, &mut at)?).ok()?;
                let end = at.checked_add(len)?;
                let body = b.get(at..end)?;
                at = end;
                match (depth < 16 && !body.is_empty())
                    .then(|| pb_decode(body, depth + 1))
                    .flatten()
                {
                    Some(m) => PbValue::Message(m),
                    None => PbValue::Bytes(body.to_vec()),
                }
            }
            5 => {
                let v = b.get(at..at + 4)?.try_into().ok()?;
                at += 4;
                PbValue::Fixed32(v)
            }
            _ => return None,
        };
        out.push(PbField {
            number,
            value,
            forged_len: None,
        });
    }
    Some(out)
}

fn pb_put_varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn pb_encode(fields: &[PbField], out: &mut Vec<u8>) {
    for f in fields {
        let wire = match &f.value {
            PbValue::Varint(_) => 0,
            PbValue::Fixed64(_) => 1,
            PbValue::Bytes(_) | PbValue::Message(_) => 2,
            PbValue::Fixed32(_) => 5,
        };
        pb_put_varint((f.number << 3) | wire, out);
        match &f.value {
            PbValue::Varint(v) => pb_put_varint(*v, out),
            PbValue::Fixed64(b) => out.extend_from_slice(b),
            PbValue::Fixed32(b) => out.extend_from_slice(b),
            PbValue::Bytes(b) => {
                pb_put_varint(f.forged_len.unwrap_or(b.len() as u64), out);
                out.extend_from_slice(b);
            }
            PbValue::Message(m) => {
                let mut body = Vec::new();
                pb_encode(m, &mut body);
                pb_put_varint(f.forged_len.unwrap_or(body.len() as u64), out);
                out.extend(body);
            }
        }
    }
}

/// The bytes of a length-delimited field.
fn pb_body(f: &PbField) -> Option<Vec<u8>> {
    match &f.value {
        PbValue::Bytes(b) => Some(b.clone()),
        PbValue::Message(m) => {
            let mut body = Vec::new();
            pb_encode(m, &mut body);
            Some(body)
        }
        _ => None,
    }
}

/// Paths (indices from the top) to every field.
fn pb_paths(fields: &[PbField], prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    for (i, f) in fields.iter().enumerate() {
        prefix.push(i);
        out.push(prefix.clone());
        if let PbValue::Message(m) = &f.value {
            pb_paths(m, prefix, out);
        }
        prefix.pop();
    }
}

/// The list holding the field at `path`, to read.
fn pb_list<'a>(fields: &'a [PbField], path: &[usize]) -> &'a [PbField] {
    let mut list = fields;
    for &i in &path[..path.len() - 1] {
        list = match &list[i].value {
            PbValue::Message(m) => m,
            _ => unreachable!("a path goes through messages"),
        };
    }
    list
}

fn pb_ref<'a>(fields: &'a [PbField], path: &[usize]) -> &'a PbField {
    &pb_list(fields, path)[*path.last().unwrap()]
}

/// The list holding the field at `path`.
fn pb_siblings<'a>(fields: &'a mut Vec<PbField>, path: &[usize]) -> &'a mut Vec<PbField> {
    let mut list = fields;
    for &i in &path[..path.len() - 1] {
        list = match &mut list[i].value {
            PbValue::Message(m) => m,
            _ => unreachable!("a path goes through messages"),
        };
    }
    list
}

fn pb_field<'a>(fields: &'a mut Vec<PbField>, path: &[usize]) -> &'a mut PbField {
    &mut pb_siblings(fields, path)[*path.last().unwrap()]
}

/// Whether the field at `path` is the only one of its number among its siblings (a header
/// field: a type, a version, a dimension count), rarer than the elements of repeated ones.
fn pb_single(fields: &[PbField], path: &[usize]) -> bool {
    let list = pb_list(fields, path);
    let n = list[*path.last().unwrap()].number;
    list.iter().filter(|f| f.number == n).count() == 1
}

/// Varints as protobuf's packed encoding holds them, when `b` is exactly that.
fn packed_varints(b: &[u8]) -> Option<Vec<u64>> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        out.push(pb_varint(b, &mut at)?);
    }
    (!out.is_empty()).then_some(out)
}

const PB_HOSTILE: &[u64] = &[
    0,
    1,
    2,
    3,
    u64::MAX, // -1 as int64
    0xffff_ffff,
    0x7fff_ffff,
    0x8000_0000,
    1 << 24,
    (1 << 24) + 1,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    i64::MIN as u64,
    u64::MAX - 1, // -2
    65_536,
];

fn pb_hostile(gen: &mut Gen, old: u64) -> u64 {
    match gen.gen_range(0..5) {
        0 => old.wrapping_add(1),
        1 => old.wrapping_sub(1),
        _ => *PB_HOSTILE.choose(gen).unwrap(),
    }
}

/// Odd floats for an `f`, a `floats` element or a tensor value.
fn pb_odd_float(gen: &mut Gen) -> f32 {
    *[
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        -0.0,
        1e-45,
        1e20,
        -1.0,
        0.0,
        4294967296.0,
    ]
    .choose(gen)
    .unwrap()
}

/// One edit of an ONNX file's fields: a number, a packed array, a float, a string, a
/// repeated message, a length or a field number; `donors` lend same-numbered fields.
fn mutate_proto(
    gen: &mut Gen,
    fields: &mut Vec<PbField>,
    donors: &[&ModelSeed],
    ops: &mut Vec<String>,
) {
    let mut paths = Vec::new();
    pb_paths(fields, &mut Vec::new(), &mut paths);
    if paths.is_empty() {
        return;
    }
    // Mostly edits that keep the encoding (values, strings, repeated fields), which get past
    // the protobuf decoder to nightshift's checks; now and then one that breaks it.
    let op = *[0, 0, 0, 0, 0, 0, 0, 3, 3, 4, 4, 5, 5, 7, 7, 7, 9, 10, 11, 0]
        .choose(gen)
        .unwrap();
    let wants = |f: &PbField| match op {
        0..=2 => matches!(f.value, PbValue::Varint(_)),
        3 => matches!(f.value, PbValue::Fixed32(_)),
        4 | 9 => matches!(f.value, PbValue::Bytes(_) | PbValue::Message(_)),
        5 | 6 => matches!(&f.value, PbValue::Bytes(b) if b.iter().all(u8::is_ascii_graphic)),
        7 | 8 => matches!(f.value, PbValue::Message(_)),
        _ => true,
    };
    let candidates: Vec<&Vec<usize>> = paths.iter().filter(|p| wants(pb_ref(fields, p))).collect();
    let singles: Vec<&Vec<usize>> = candidates
        .iter()
        .copied()
        .filter(|p| pb_single(fields, p))
        .collect();
    // Half the time a field that is alone of its number: the many elements of repeated ones
    // would otherwise take nearly every pick.
    let pick = if !singles.is_empty() && gen.gen_bool(0.5) {
        singles.choose(gen)
    } else {
        candidates.choose(gen)
    };
    let Some(path) = pick.map(|p| (*p).clone()) else {
        return;
    };
    let at = format!("{path:?}");
    match op {
        0..=2 => {
            let f = pb_field(fields, &path);
            if let PbValue::Varint(v) = &mut f.value {
                let new = pb_hostile(gen, *v);
                ops.push(format!(
                    "varint field {} at {at}: {} -> {}",
                    f.number, *v as i64, new as i64
                ));
                *v = new;
            }
        }
        3 => {
            let f = pb_field(fields, &path);
            let x = pb_odd_float(gen);
            ops.push(format!("float field {} at {at} -> {x}", f.number));
            f.value = PbValue::Fixed32(x.to_le_bytes());
        }
        4 => {
            // A packed array's element, or its length, forged.
            let f = pb_field(fields, &path);
            let body = pb_body(f).unwrap_or_default();
            if let Some(mut xs) = packed_varints(&body) {
                let k = gen.gen_range(0..xs.len());
                match gen.gen_range(0..4) {
                    0 => drop(xs.remove(k)),
                    1 => xs.insert(k, xs[k]),
                    _ => xs[k] = pb_hostile(gen, xs[k]),
                }
                ops.push(format!("packed varints of field {} at {at}", f.number));
                let mut out = Vec::new();
                for x in xs {
                    pb_put_varint(x, &mut out);
                }
                f.value = PbValue::Bytes(out);
            } else if body.len() >= 4 {
                // Packed floats (or raw tensor data): an odd value, or a length that is not
                // a multiple of the element size.
                let mut body = body;
                if body.len().is_multiple_of(8) && gen.gen_bool(0.4) {
                    // Raw int64 data (a Reshape's shape, a Gather's indices).
                    let k = gen.gen_range(0..body.len() / 8) * 8;
                    let v = pb_hostile(gen, 0) as i64;
                    body[k..k + 8].copy_from_slice(&v.to_le_bytes());
                    ops.push(format!("raw int64 of field {} at {at} -> {v}", f.number));
                } else if gen.gen_bool(0.7) {
                    let k = gen.gen_range(0..body.len() / 4) * 4;
                    body[k..k + 4].copy_from_slice(&pb_odd_float(gen).to_le_bytes());
                    ops.push(format!("packed float of field {} at {at}", f.number));
                } else {
                    let cut = gen.gen_range(1..4);
                    body.truncate(body.len() - cut);
                    ops.push(format!("{cut} bytes off field {} at {at}", f.number));
                }
                f.value = PbValue::Bytes(body);
            }
        }
        5 | 6 => {
            // A string: a line break, a bidi override, invalid UTF-8, empty, or another
            // string of the file (a name defined twice, an edge into a cycle).
            let strings: Vec<Vec<u8>> = paths
                .iter()
                .filter_map(|p| match &pb_ref(fields, p).value {
                    PbValue::Bytes(b)
                        if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic()) =>
                    {
                        Some(b.clone())
                    }
                    _ => None,
                })
                .collect();
            let f = pb_field(fields, &path);
            let mut body = pb_body(f).unwrap_or_default();
            let new = match (gen.gen_range(0..3), strings.choose(gen)) {
                (0, Some(other)) => other.clone(),
                (1, _) => Vec::new(),
                _ => {
                    let odd: &[u8] = [
                        &b"\n"[..],
                        b"\r",
                        "\u{2028}".as_bytes(),
                        "\u{202e}".as_bytes(),
                        b"\xff",
                        b"\0",
                        b" ",
                    ]
                    .choose(gen)
                    .unwrap();
                    let k = gen.gen_range(0..=body.len());
                    body.splice(k..k, odd.iter().copied());
                    body
                }
            };
            ops.push(format!(
                "string field {} at {at} -> {:?}",
                f.number,
                String::from_utf8_lossy(&new[..new.len().min(40)])
            ));
            f.value = PbValue::Bytes(new);
        }
        7 | 8 => {
            // A repeated message removed, doubled, swapped, or another model's.
            let i = *path.last().unwrap();
            let list = pb_siblings(fields, &path);
            let number = list[i].number;
            match gen.gen_range(0..5) {
                0 => {
                    ops.push(format!("field {number} at {at} removed"));
                    list.remove(i);
                }
                1 => {
                    let copies = *[1, 1, 2, 50].choose(gen).unwrap();
                    ops.push(format!("field {number} at {at} {copies} more time(s)"));
                    let f = list[i].clone();
                    for _ in 0..copies {
                        list.insert(i, f.clone());
                    }
                }
                2 => {
                    let j = gen.gen_range(0..list.len());
                    ops.push(format!("field {number} at {at} swapped with sibling {j}"));
                    list.swap(i, j);
                }
                _ => {
                    let donor = donors.choose(gen).unwrap();
                    let Some(theirs) = &donor.proto else {
                        return;
                    };
                    let mut their_paths = Vec::new();
                    pb_paths(theirs, &mut Vec::new(), &mut their_paths);
                    let same: Vec<&Vec<usize>> = their_paths
                        .iter()
                        .filter(|p| pb_ref(theirs, p).number == number)
                        .collect();
                    if let Some(p) = same.choose(gen) {
                        ops.push(format!(
                            "field {number} at {at} replaced by {}'s at {p:?}",
                            donor.name
                        ));
                        list[i] = pb_ref(theirs, p).clone();
                    }
                }
            }
        }
        9 => {
            // A length that is not the field's.
            let f = pb_field(fields, &path);
            let real = pb_body(f).map_or(0, |b| b.len() as u64);
            let forged = match gen.gen_range(0..4) {
                0 => real + gen.gen_range(1..4),
                1 => real.saturating_sub(gen.gen_range(1..4)),
                _ => *PB_HOSTILE.choose(gen).unwrap(),
            };
            ops.push(format!(
                "length of field {} at {at}: {real} -> {forged}",
                f.number
            ));
            f.forged_len = Some(forged);
        }
        10 => {
            let f = pb_field(fields, &path);
            let number = gen.gen_range(1..=20);
            ops.push(format!("field {} at {at} renumbered {number}", f.number));
            f.number = number;
        }
        _ => {
            // A value of another wire type under the same number.
            let f = pb_field(fields, &path);
            let value = match gen.gen_range(0..4) {
                0 => PbValue::Varint(*PB_HOSTILE.choose(gen).unwrap()),
                1 => PbValue::Fixed32(pb_odd_float(gen).to_le_bytes()),
                2 => PbValue::Fixed64(u64::MAX.to_le_bytes()),
                _ => PbValue::Bytes(b"\x08\x01".to_vec()),
            };
            ops.push(format!("field {} at {at} -> {value:?}", f.number));
            f.value = value;
        }
    }
}

fn mutate_onnx(gen: &mut Gen, seed: &ModelSeed, pool: &[&ModelSeed]) -> MadeModel {
    let mut ops = Vec::new();
    let mut bytes = match &seed.proto {
        Some(proto) if gen.gen_bool(0.85) => {
            let mut fields = proto.clone();
            for _ in 0..gen.gen_range(1..=3) {
                mutate_proto(gen, &mut fields, pool, &mut ops);
            }
            let mut out = Vec::new();
            pb_encode(&fields, &mut out);
            out
        }
        _ => seed.bytes.clone(),
    };
    if ops.is_empty() || gen.gen_bool(0.1) {
        let n = bytes.len();
        ops.push("byte mutation".into());
        mutate_bytes(
            gen,
            &mut bytes,
            0..n,
            &[
                b"\x08\x07",
                b"\x3a\xff\xff\xff\xff\x0f",
                b"\x0a\x80\x80\x80\x80\x08",
                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                b"\x12\x00",
                b"\x42\x04\x12\x02\x08\x01",
            ],
        );
    }
    MadeModel { bytes, ops }
}

#[test]
fn onnx_files() {
    fuzz_models("onnx_files", Format::Onnx, 1500, mutate_onnx);
}

// ------------------------------------------------------------------------------------------
// Regressions: what a user sees for each kind of bad input
// ------------------------------------------------------------------------------------------

/// A folder with churn@1 and a job scoring `in/dt={date}/` (relative, as users write it), any
/// share of whose rows may be bad.
fn bad_input_env() -> Env {
    let env = Env::new();
    env.train_churn();
    env.job("churn", "in/dt={date}/", "max_bad_rows_fraction = 1.0");
    env
}

/// Puts an input object of the date; returns its URI as messages name it.
fn put(env: &Env, name: &str, bytes: &[u8]) -> String {
    let rel = format!("in/dt={DAY}/{name}");
    let path = env.path(&rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    rel
}

/// A run that fails: exit 1, and the one error line users read.
fn run_fails(env: &Env) -> String {
    let out = env.run(&["run", "churn", "--date", DAY]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    lines[0].to_string()
}

/// A run that fails without a panic anywhere on the way.
fn run_fails_cleanly(env: &Env) -> String {
    let out = env.run(&["run", "churn", "--date", DAY]);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    run_fails(env)
}

/// A run that succeeds; its summary.
fn run_succeeds(env: &Env) -> String {
    let out = env.ok(&["run", "churn", "--date", DAY]);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out.stdout
}

/// The summary line of `name` ("rows quarantined"), as printed.
fn summary_line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} in {stdout}"))
        .trim()
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(fixture()).unwrap()
}

#[test]
fn truncated_parquet_is_cut_short_or_not_parquet() {
    let env = bad_input_env();
    let good = fixture_bytes();
    let n = good.len();
    for cut in [n / 2, n - 1, 12] {
        let uri = put(&env, "part-00000.parquet", &good[..cut]);
        assert_eq!(
            run_fails_cleanly(&env),
            format!(
                "error: {uri} is not a Parquet file, or is cut short (no PAR1 magic at its end)"
            )
        );
    }
    let uri = put(&env, "part-00000.parquet", &good[..11]);
    assert_eq!(
        run_fails_cleanly(&env),
        format!("error: {uri} is not a Parquet file (11 bytes)")
    );
}

#[test]
fn wrong_magic_bytes_are_not_parquet() {
    let env = bad_input_env();
    let good = fixture_bytes();
    let n = good.len();
    let mut bad = good.clone();
    bad[n - 4..].copy_from_slice(b"PAR0");
    let uri = put(&env, "part-00000.parquet", &bad);
    assert_eq!(
        run_fails_cleanly(&env),
        format!("error: {uri} is not a Parquet file, or is cut short (no PAR1 magic at its end)")
    );
    // A file with an encrypted footer ends in PARE: said as such, not as cut short.
    bad[n - 4..].copy_from_slice(b"PARE");
    std::fs::write(env.path(&uri), &bad).unwrap();
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri} has an encrypted footer (PARE magic at its end), which nightshift \
             cannot read"
        )
    );
    // Only the magic at the start wrong: the footer says where every column chunk is, and the
    // object reads as what it is (as pyarrow and the parquet crate read it).
    let mut head = good.clone();
    head[..4].copy_from_slice(b"XXXX");
    std::fs::write(env.path(&uri), &head).unwrap();
    let out = run_succeeds(&env);
    assert_eq!(
        summary_line(&out, "rows scored"),
        "rows scored               1000"
    );
}

#[test]
fn a_footer_pointing_past_the_end_is_corrupt() {
    let env = bad_input_env();
    let good = fixture_bytes();
    let n = good.len();

    // The footer's length field says more than the object holds.
    let mut bad = good.clone();
    bad[n - 8..n - 4].copy_from_slice(&(n as u32 * 2).to_le_bytes());
    let uri = put(&env, "part-00000.parquet", &bad);
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri}: corrupt Parquet footer: its length field says {} bytes, more than \
             the {n}-byte object holds",
            n * 2
        )
    );

    // A column chunk said to start beyond the end.
    let far = with_footer(&good, |m| {
        edit_chunk(m, 1, 0, |b, _| b.set_data_page_offset(1 << 33))
    })
    .unwrap();
    std::fs::write(env.path(&uri), &far).unwrap();
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri}: corrupt Parquet footer: column chunk 0 of row group 1 has its first \
             data page at byte 8589934592, past the end of the {}-byte object",
            far.len()
        )
    );

    // The page indexes and the last ten bytes of data lost, as by a copy that dropped a
    // block: the last column chunk now runs into the footer.
    let m = decode_footer(&good).unwrap();
    let (r, c, end) = (0..m.num_row_groups())
        .flat_map(|r| (0..m.row_group(r).num_columns()).map(move |c| (r, c)))
        .map(|(r, c)| {
            let (start, len) = m.row_group(r).column(c).byte_range();
            (r, c, (start + len) as usize)
        })
        .max_by_key(|(_, _, end)| *end)
        .unwrap();
    let footer = footer_range(&good).unwrap();
    let mut cut = good[..end - 10].to_vec();
    cut.extend_from_slice(&good[footer.start..]);
    std::fs::write(env.path(&uri), &cut).unwrap();
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri}: corrupt Parquet footer: column chunk {c} of row group {r} ends at \
             byte {end}, inside the footer (which starts at byte {} of the {}-byte object)",
            end - 10,
            cut.len()
        )
    );
}

#[test]
fn an_empty_file_is_not_parquet_and_a_file_of_no_rows_scores_nothing() {
    let env = bad_input_env();
    let uri = put(&env, "part-00000.parquet", b"");
    assert_eq!(
        run_fails_cleanly(&env),
        format!("error: {uri} is not a Parquet file (0 bytes)")
    );

    // A Parquet file with the schema and no rows is a date with nothing to score.
    let batch = read_parquet(&fixture());
    put(
        &env,
        "part-00000.parquet",
        &write_batch(&batch.slice(0, 0), WriterProperties::builder().build()),
    );
    let out = run_succeeds(&env);
    assert_eq!(
        summary_line(&out, "rows read"),
        "rows read                    0"
    );
    assert_eq!(
        files_under(&env.path(&format!("out/scores/churn/dt={DAY}"))),
        ["_SUCCESS", "part-00000.parquet"]
    );
}

/// The fixture's batch with columns replaced by name.
fn replace_columns(batch: &RecordBatch, replace: &[(&str, ArrayRef)]) -> RecordBatch {
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        match replace.iter().find(|(name, _)| name == f.name()) {
            Some((name, new)) => {
                fields.push(Field::new(*name, new.data_type().clone(), true));
                columns.push(new.clone());
            }
            None => {
                fields.push(f.as_ref().clone().with_nullable(true));
                columns.push(c.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

#[test]
fn all_null_columns_are_imputed_or_refused_by_type() {
    let env = bad_input_env();
    let batch = read_parquet(&fixture());
    let n = batch.num_rows();
    // Typed columns of nulls: numeric ones take the training mean, a categorical one encodes
    // as unknown; every row is scored.
    let nulls = replace_columns(
        &batch,
        &[
            (
                "monthly_charges",
                Arc::new(Float64Array::from(vec![None; n])),
            ),
            ("data_gb", Arc::new(Float32Array::from(vec![None; n]))),
            ("plan", Arc::new(StringArray::from(vec![None::<&str>; n]))),
        ],
    );
    put(
        &env,
        "part-00000.parquet",
        &write_batch(&nulls, WriterProperties::builder().build()),
    );
    let out = run_succeeds(&env);
    assert_eq!(
        summary_line(&out, "rows scored"),
        "rows scored               1000"
    );
    assert_eq!(
        summary_line(&out, "rows quarantined"),
        "rows quarantined             0"
    );

    // A column of Arrow's null type (what pandas writes for a column of None) is no number.
    let untyped = replace_columns(&batch, &[("data_gb", Arc::new(NullArray::new(n)))]);
    let uri = put(
        &env,
        "part-00000.parquet",
        &write_batch(&untyped, WriterProperties::builder().build()),
    );
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri} does not match the model signature: column 'data_gb' has type Null, \
             but the model expects a number (boolean, int8..int64, uint8..uint32, float16..float64)"
        )
    );
}

#[test]
fn nan_and_infinities_are_quarantined_with_their_reasons() {
    let env = bad_input_env();
    let batch = read_parquet(&fixture()).slice(0, 8);
    let charges = Float64Array::from(vec![
        Some(f64::NAN),
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
        Some(70.0),
        Some(f64::MAX),
        Some(-0.0),
        Some(f64::MIN_POSITIVE),
        Some(70.0),
    ]);
    let data_gb = Float32Array::from(vec![
        Some(1.0),
        Some(f32::NAN),
        Some(1.0),
        Some(f32::INFINITY),
        Some(1.0),
        Some(f32::NEG_INFINITY),
        Some(1.0),
        Some(f32::MAX),
    ]);
    let bad = replace_columns(
        &batch,
        &[
            ("monthly_charges", Arc::new(charges)),
            ("data_gb", Arc::new(data_gb)),
        ],
    );
    put(
        &env,
        "part-00000.parquet",
        &write_batch(&bad, WriterProperties::builder().build()),
    );
    let out = run_succeeds(&env);
    let q = read_parquet(&env.path(&format!(
        "out/scores/churn_quarantine/dt={DAY}/part-00000.parquet"
    )));
    let rows = q
        .column_by_name("source_row")
        .unwrap()
        .as_primitive::<Int64Type>();
    let reasons = q.column_by_name("reason").unwrap().as_string::<i32>();
    let table: Vec<String> = rows
        .values()
        .iter()
        .zip(reasons.iter())
        .map(|(r, why)| format!("row {r}: {}", why.unwrap()))
        .collect();
    assert_eq!(
        table,
        [
            "row 0: monthly_charges is NaN",
            "row 1: monthly_charges is infinite",
            "row 2: monthly_charges is infinite",
            "row 3: data_gb is infinite",
            "row 5: data_gb is infinite",
        ]
    );
    assert_eq!(
        summary_line(&out, "rows scored"),
        "rows scored                  3"
    );
}

#[test]
fn a_very_wide_file_reads_only_the_model_columns() {
    let env = bad_input_env();
    let batch = read_parquet(&fixture()).slice(0, 100);
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let extra: ArrayRef = Arc::new(Float64Array::from_iter_values((0..100).map(f64::from)));
    while fields.len() < 5000 {
        fields.push(Field::new(
            format!("extra_{:04}", fields.len()),
            DataType::Float64,
            false,
        ));
        columns.push(extra.clone());
    }
    let wide = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let bytes = write_batch(&wide, WriterProperties::builder().build());
    // The footer alone is larger than the first read of an object's end.
    let footer = footer_range(&bytes).unwrap();
    assert!(footer.len() > 64 * 1024, "{} byte footer", footer.len());
    put(&env, "part-00000.parquet", &bytes);
    let began = Instant::now();
    let out = run_succeeds(&env);
    assert_eq!(
        summary_line(&out, "rows scored"),
        "rows scored                100"
    );
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "{:?}",
        began.elapsed()
    );
    let scores = read_parquet(&env.path(&format!("out/scores/churn/dt={DAY}/part-00000.parquet")));
    assert_eq!(scores.num_columns(), 7, "{:?}", scores.schema());
}

#[test]
fn unicode_column_names_pass_through() {
    let env = bad_input_env();
    let batch = read_parquet(&fixture()).slice(0, 10);
    let names = ["顧客番号", "Kündigungsgrund 🚀", "e\u{301}", "\u{202e}txt"];
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for name in names {
        fields.push(Field::new(name, DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from_iter_values(
            (0..10).map(|i| format!("{name} {i}")),
        )));
    }
    let wide = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    put(
        &env,
        "part-00000.parquet",
        &write_batch(&wide, WriterProperties::builder().build()),
    );
    let job = std::fs::read_to_string(env.path("jobs/churn.toml")).unwrap().replace(
        "passthrough = [\"id\"]",
        "passthrough = [\"id\", \"顧客番号\", \"Kündigungsgrund 🚀\", \"e\\u0301\", \"\\u202etxt\"]",
    );
    env.write("jobs/churn.toml", &job);
    run_succeeds(&env);
    let scores = read_parquet(&env.path(&format!("out/scores/churn/dt={DAY}/part-00000.parquet")));
    let schema = scores.schema();
    let columns: Vec<&str> = schema
        .fields()
        .iter()
        .take(5)
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "id",
            "顧客番号",
            "Kündigungsgrund 🚀",
            "e\u{301}",
            "\u{202e}txt"
        ]
    );
    let kept = scores.column(2).as_string::<i32>().value(3).to_string();
    assert_eq!(kept, "Kündigungsgrund 🚀 3");

    // A passthrough column the objects lack is named as written (NFC "é" is not "e" + U+0301).
    let job = job.replace("\"e\\u0301\"", "\"\\u00e9\"");
    env.write("jobs/churn.toml", &job);
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: in/dt={DAY}/part-00000.parquet does not match the model signature: \
             passthrough column 'é' is missing"
        )
    );
}

#[test]
fn duplicate_column_names_are_refused_when_the_run_reads_them() {
    let env = bad_input_env();
    let batch = read_parquet(&fixture()).slice(0, 10);
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    // An unread column twice is no problem.
    fields.push(Field::new("note", DataType::Utf8, true));
    fields.push(Field::new("note", DataType::Utf8, true));
    columns.push(Arc::new(StringArray::from(vec![Some("a"); 10])));
    columns.push(Arc::new(StringArray::from(vec![Some("b"); 10])));
    let twice =
        RecordBatch::try_new(Arc::new(Schema::new(fields.clone())), columns.clone()).unwrap();
    put(
        &env,
        "part-00000.parquet",
        &write_batch(&twice, WriterProperties::builder().build()),
    );
    run_succeeds(&env);

    // A feature twice, with other values: which one would the model score?
    fields.push(Field::new("data_gb", DataType::Float64, true));
    columns.push(Arc::new(Float64Array::from(vec![Some(1e6); 10])));
    let feature = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let uri = put(
        &env,
        "part-00000.parquet",
        &write_batch(&feature, WriterProperties::builder().build()),
    );
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri} does not match the model signature: column 'data_gb' appears 2 times"
        )
    );
}

/// A run's stderr: every line but the logs.
fn validate(path: &str) -> (i32, String) {
    let out = crate::util::nightshift_in(repo(), &["validate", path]);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    (out.code, out.stdout)
}

#[test]
fn a_job_file_with_every_field_wrong_reports_each_mistake() {
    let (code, stdout) = validate("tests/data/fuzz/every_field_wrong");
    assert_eq!(code, 1);
    insta::assert_snapshot!(stdout);
}

#[test]
fn a_job_file_with_every_field_set_is_valid() {
    let (code, stdout) = validate("tests/data/fuzz/all_fields");
    assert_eq!(code, 0, "{stdout}");
}

// Found by fuzzing.

/// A value with a line break or a bidi override, echoed in a message, is shown escaped: each
/// diagnostic is one `path:line:col: message` line (fuzz job_files, seed 0xd63635d755487d06).
#[test]
fn a_value_with_a_line_break_is_reported_on_one_line() {
    let env = Env::new();
    env.job(
        "churn",
        "in/dt={date}/",
        "on_bad_rows = \"\"\"multi\nline\"\"\"",
    );
    let job = std::fs::read_to_string(env.path("jobs/churn.toml"))
        .unwrap()
        .replace("Europe/Berlin", "Europe/Berlin\u{202e}");
    env.write("jobs/churn.toml", &job);
    let out = env.run(&["validate", "jobs/churn.toml"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "jobs/churn.toml:3:12: unknown time zone 'Europe/Berlin\\u{202e}'; use an IANA name \
         such as \"Europe/Berlin\" or \"UTC\"\n\
         jobs/churn.toml:18:15: field 'run.on_bad_rows': unknown variant `multi\\nline`, expected \
         one of `fail`, `skip`, `quarantine`\n"
    );
}

/// Corrupt pages that panicked the Parquet decoder are refused before decoding, naming the
/// object, column and row group, without a panic (fuzz parquet_inputs, seeds
/// 0xed48d81c495328e7 and 0xed48d81c49532a55).
#[test]
fn a_corrupt_page_that_panicked_the_decoder_is_refused_before_decoding() {
    let env = bad_input_env();
    // A chunk whose dictionary page the footer does not announce: its data pages refer to a
    // dictionary the decoder never set ("Decoder for dict should have been set").
    let seed = &parquet_corpus()[1];
    let m = decode_footer(&seed.bytes).unwrap();
    assert!(m.row_group(2).column(2).dictionary_page_offset().is_some());
    let undeclared = with_footer(&seed.bytes, |m| {
        edit_chunk(m, 2, 2, |b, _| b.set_dictionary_page_offset(None))
    })
    .unwrap();
    let uri = put(&env, "part-00000.parquet", &undeclared);
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri}: corrupt Parquet pages in column 'monthly_charges' of row group 2: a \
             data page is dictionary-encoded, but no dictionary page comes before it"
        )
    );

    // A dictionary page of strings whose header was damaged to say it holds no values: the
    // decoder divided by that ("attempt to divide by zero").
    let divide = std::fs::read(repo().join("tests/data/fuzz/decoder_divide_by_zero.parquet"));
    std::fs::write(env.path(&uri), divide.unwrap()).unwrap();
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri}: corrupt Parquet pages in column 'plan' of row group 1: a dictionary \
             page says it holds 0 values in 46 bytes"
        )
    );
}

/// A column name with a line break in the Parquet schema but not in the Arrow schema stored
/// with it: the error says so on one line (fuzz parquet_runs, seed 0x4a6e5b4e1df8b0c1).
#[test]
fn a_column_name_with_a_line_break_stays_on_one_line() {
    let env = bad_input_env();
    let mut bytes = fixture_bytes();
    let footer = footer_range(&bytes).unwrap();
    let at = footer.start
        + bytes[footer.clone()]
            .windows(4)
            .position(|w| w == b"plan")
            .unwrap();
    bytes[at] = b'\n';
    let uri = put(&env, "part-00000.parquet", &bytes);
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: reading the Arrow schema of {uri}: Arrow: incompatible arrow schema, \
             expected field named \\nlan got plan"
        )
    );
}

/// The first page header of column chunk `c` of row group 0 with its `k`-th integer field set
/// to `value`; the bytes after it move, and the footer says where they went. ArrowWriter
/// writes the fields in order, in short form: type, uncompressed size, compressed size, then
/// for a dictionary page its header (a struct) of number of values and encoding.
fn with_page_header_field(file: &[u8], c: usize, k: usize, value: i32) -> Vec<u8> {
    let m = decode_footer(file).unwrap();
    let (start, _) = m.row_group(0).column(c).byte_range();
    let start = start as usize;
    let (mut at, mut i) = (start, 0);
    let (from, to) = loop {
        match file[at] {
            0x4c => at += 1,
            0x15 => {
                let mut end = at + 1;
                while file[end] & 0x80 != 0 {
                    end += 1;
                }
                if i == k {
                    break (at + 1, end + 1);
                }
                (at, i) = (end + 1, i + 1);
            }
            other => panic!("unexpected field header {other:#x} at {at}"),
        }
    };
    let varint = zigzag_varint(i64::from(value));
    let shift = varint.len() as i64 - (to - from) as i64;
    let mut out = file.to_vec();
    out.splice(from..to, varint);
    with_footer(&out, |m| {
        let mut b = m.into_builder();
        let mut rgs = b.take_row_groups();
        for rg in rgs.iter_mut() {
            let mut builder = rg.clone().into_builder();
            let columns = builder
                .take_columns()
                .into_iter()
                .map(|col| {
                    let moved = |o: i64| if o as usize > start { o + shift } else { o };
                    let grows = col.byte_range().0 as usize == start;
                    let size = col.compressed_size() + if grows { shift } else { 0 };
                    let dict = col.dictionary_page_offset().map(moved);
                    let data = moved(col.data_page_offset());
                    col.into_builder()
                        .set_total_compressed_size(size)
                        .set_dictionary_page_offset(dict)
                        .set_data_page_offset(data)
                        .build()
                        .unwrap()
                })
                .collect();
            *rg = builder.set_column_metadata(columns).build().unwrap();
        }
        Some(b.set_row_groups(rgs).build())
    })
    .unwrap()
}

fn with_page_claiming(file: &[u8], c: usize, size: i32) -> Vec<u8> {
    with_page_header_field(file, c, 1, size)
}

/// A page header claiming 2 GiB in a small chunk is refused before anything is allocated for
/// it, whatever the codec (snappy would zero all of it).
#[test]
fn a_page_header_claiming_2_gib_is_refused_before_allocating_it() {
    let model = model_world();
    let batch = read_parquet(&fixture());
    for compression in [
        Compression::SNAPPY,
        Compression::ZSTD(ZstdLevel::default()),
        Compression::GZIP(GzipLevel::default()),
        Compression::LZ4_RAW,
    ] {
        let file = write_batch(
            &batch,
            WriterProperties::builder()
                .set_compression(compression)
                .set_dictionary_enabled(false)
                .build(),
        );
        let huge = with_page_claiming(&file, 2, i32::MAX);
        let path = model.env.path("part-00000.parquet");
        std::fs::write(&path, &huge).unwrap();
        largest_allocation();
        let err = read_and_score(&path, &model.model, BadRowPolicy::Quarantine, 1000).unwrap_err();
        let largest = largest_allocation();
        let chunk = decode_footer(&huge)
            .unwrap()
            .row_group(0)
            .column(2)
            .uncompressed_size();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "{}: corrupt Parquet pages in column 'monthly_charges' of row group 0: a \
                 page says it holds 2147483647 bytes uncompressed, more than its whole column \
                 chunk ({chunk} bytes)",
                path.display()
            ),
            "{compression:?}"
        );
        assert!(
            largest < 16 << 20,
            "{compression:?}: {largest} bytes at once"
        );
    }

    // What a user sees.
    let env = bad_input_env();
    let file = write_batch(
        &batch,
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let huge = with_page_claiming(&file, 2, i32::MAX);
    let uri = put(&env, "part-00000.parquet", &huge);
    let chunk = decode_footer(&huge)
        .unwrap()
        .row_group(0)
        .column(2)
        .uncompressed_size();
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri}: corrupt Parquet pages in column 'monthly_charges' of row group \
             0: a page says it holds 2147483647 bytes uncompressed, more than its whole column \
             chunk ({chunk} bytes)"
        )
    );
}

/// Thrift's zigzag varint of `v`.
fn zigzag_varint(v: i64) -> Vec<u8> {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        out.push(if z == 0 { b } else { b | 0x80 });
        if z == 0 {
            return out;
        }
    }
}

/// The file with the one varint `from` in its footer replaced by `to` (and the footer's length
/// field to match): for footers the parquet crate's writer would not write.
fn patch_footer_varint(file: &[u8], from: i64, to: i64) -> Vec<u8> {
    let footer = footer_range(file).unwrap();
    let needle = zigzag_varint(from);
    let found: Vec<usize> = file[footer.clone()]
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_slice())
        .map(|(i, _)| footer.start + i)
        .collect();
    assert_eq!(found.len(), 1, "{from} in the footer");
    let mut out = file.to_vec();
    out.splice(found[0]..found[0] + needle.len(), zigzag_varint(to));
    let len = footer.len() + zigzag_varint(to).len() - needle.len();
    let n = out.len();
    out[n - 8..n - 4].copy_from_slice(&(len as u32).to_le_bytes());
    out
}

/// Row counts that add up past what a row number can hold, or to another count than the
/// file's, are a corrupt footer: the row numbers of quarantined rows are sums of them.
#[test]
fn row_counts_that_do_not_add_up_are_a_corrupt_footer() {
    let env = bad_input_env();
    let good = fixture_bytes();
    let set_rows = |rows: &[(usize, i64)]| {
        with_footer(&good, |m| {
            let mut b = m.into_builder();
            let mut rgs = b.take_row_groups();
            for &(r, n) in rows {
                rgs[r] = rgs[r].clone().into_builder().set_num_rows(n).build().ok()?;
            }
            Some(b.set_row_groups(rgs).build())
        })
        .unwrap()
    };
    // The footer writer sums the row groups up for the file's count, so the counts are
    // written as values it can add, then patched.
    let (a, b) = ((1i64 << 62) + 1, -(1i64 << 62));
    let overflow = set_rows(&[(0, a), (1, b)]);
    let overflow = patch_footer_varint(&overflow, a, i64::MAX);
    let overflow = patch_footer_varint(&overflow, b, i64::MAX);
    let uri = put(&env, "part-00000.parquet", &overflow);
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri}: corrupt Parquet footer: its row groups hold more than 2^63 rows, but \
             it says the file has 201"
        )
    );

    let big = (1i64 << 40) + 400;
    let more = patch_footer_varint(&set_rows(&[(1, big)]), big, 401);
    std::fs::write(env.path(&uri), &more).unwrap();
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri}: corrupt Parquet footer: its row groups hold 1001 rows, but it says \
             the file has {}",
            big + 600
        )
    );
}

/// A dictionary page claiming half a billion values in a few kilobytes is refused before the
/// decoder sizes (and zeroes) a dictionary for them: 4 GiB of doubles here, 7 GB when found
/// (fuzz parquet_inputs, seed 0x18ece276d13a9f58).
#[test]
fn a_dictionary_page_claiming_half_a_billion_values_is_refused() {
    let model = model_world();
    let file = fixture_bytes();
    let m = decode_footer(&file).unwrap();
    assert!(m.row_group(0).column(2).dictionary_page_offset().is_some());
    let huge = with_page_header_field(&file, 2, 3, 1 << 29);
    let path = model.env.path("part-00000.parquet");
    std::fs::write(&path, &huge).unwrap();
    largest_allocation();
    let err = read_and_score(&path, &model.model, BadRowPolicy::Quarantine, 1000).unwrap_err();
    let largest = largest_allocation();
    assert!(largest < 16 << 20, "{largest} bytes at once");
    let message = format!("{err:#}");
    let prefix = format!(
        "{}: corrupt Parquet pages in column 'monthly_charges' of row group 0: a \
         dictionary page says it holds 536870912 values in ",
        path.display()
    );
    assert!(message.starts_with(&prefix), "{message}");
    assert!(message.ends_with(" bytes"), "{message}");

    let env = bad_input_env();
    let uri = put(&env, "part-00000.parquet", &huge);
    let bytes = message.strip_prefix(&prefix).unwrap();
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri}: corrupt Parquet pages in column 'monthly_charges' of row group \
             0: a dictionary page says it holds 536870912 values in {bytes}"
        )
    );
}

/// A DELTA_BYTE_ARRAY page of 128 strings whose lengths claim 2^35: the parquet crate asked for
/// 128 GiB at once and the process aborted in the middle of a fuzz run (fuzz parquet_inputs,
/// seed 0x18ece41986295d63). Refused before decoding, naming the column and row group.
#[test]
fn a_delta_byte_array_page_claiming_billions_of_strings_is_refused() {
    let env = bad_input_env();
    let bytes = std::fs::read(repo().join("tests/data/fuzz/delta_byte_array_count.parquet"));
    let uri = put(&env, "part-00000.parquet", &bytes.unwrap());
    assert_eq!(
        run_fails_cleanly(&env),
        format!(
            "error: {uri}: corrupt Parquet pages in column 'region' of row group 2: a page of 128 \
             DELTA_BYTE_ARRAY values says it holds 34359738240 string lengths"
        )
    );
}
