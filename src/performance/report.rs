//! The performance report: one row per metric of an evaluated date, and the reliability table
//! beside it, Hive-partitioned like the drift report (docs/model-performance.md):
//!
//!     REPORTS/job=NAME/dt=YYYY-MM-DD/performance.parquet
//!     REPORTS/job=NAME/dt=YYYY-MM-DD/reliability.parquet   (binary classifiers)

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Coverage, Evaluation, MetricRow};
use crate::metric::ReliabilityBin;
use crate::read::column_as as column;
use crate::storage::Location;
use crate::write::ParquetOutput;

pub const REPORT_FILE: &str = "performance.parquet";
pub const RELIABILITY_FILE: &str = "reliability.parquet";

fn partition(reports: &Location, job: &str, date: NaiveDate) -> Location {
    reports
        .join(&format!("job={job}"))
        .join(&format!("dt={date}"))
}

pub fn report_location(reports: &Location, job: &str, date: NaiveDate) -> Location {
    partition(reports, job, date).join(REPORT_FILE)
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The columns both files start with: which date, run and model (see [`header`]).
fn header_fields() -> Vec<Field> {
    vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("logical_date", DataType::Date32, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("model_name", DataType::Utf8, false),
        Field::new("model_version", DataType::Int32, false),
    ]
}

/// The report's schema, documented in docs/model-performance.md.
pub fn schema() -> Schema {
    Schema::new(
        [
            header_fields(),
            vec![
                Field::new("metric", DataType::Utf8, false),
                Field::new("value", DataType::Float64, true),
                Field::new("holdout", DataType::Float64, true),
                Field::new("change", DataType::Float64, true),
                Field::new("estimated", DataType::Float64, true),
                Field::new("tolerance", DataType::Float64, true),
                Field::new("degraded", DataType::Boolean, false),
                Field::new("scored_rows", DataType::Int64, false),
                Field::new("label_rows", DataType::Int64, false),
                Field::new("null_labels", DataType::Int64, false),
                Field::new("matched_rows", DataType::Int64, false),
                Field::new("unmatched_labels", DataType::Int64, false),
                Field::new("realized", DataType::Boolean, false),
                Field::new("labels_complete", DataType::Boolean, false),
                Field::new("notes", DataType::Utf8, true),
                Field::new("labels_fingerprint", DataType::Utf8, true),
                Field::new("evaluated_at", timestamp(), false),
            ],
        ]
        .concat(),
    )
}

/// The reliability table's schema.
pub fn reliability_schema() -> Schema {
    Schema::new(
        [
            header_fields(),
            vec![
                Field::new("lower", DataType::Float64, false),
                Field::new("upper", DataType::Float64, false),
                Field::new("rows", DataType::Int64, false),
                Field::new("mean_score", DataType::Float64, false),
                Field::new("positive_rate", DataType::Float64, false),
                Field::new("evaluated_at", timestamp(), false),
            ],
        ]
        .concat(),
    )
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
}

/// The columns every row repeats: which date, run and model.
fn header(e: &Evaluation, n: usize) -> Vec<ArrayRef> {
    let days = (e.logical_date - epoch()).num_days() as i32;
    vec![
        Arc::new(StringArray::from(vec![e.job.as_str(); n])),
        Arc::new(Date32Array::from(vec![days; n])),
        Arc::new(StringArray::from(vec![e.run_id.as_str(); n])),
        Arc::new(StringArray::from(vec![e.model_name.as_str(); n])),
        Arc::new(Int32Array::from(vec![e.model_version as i32; n])),
    ]
}

fn stamp(at: DateTime<Utc>, n: usize) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(vec![at.timestamp_micros(); n]).with_timezone("UTC"))
}

pub fn to_batch(e: &Evaluation, evaluated_at: DateTime<Utc>) -> Result<RecordBatch> {
    let rows = &e.metrics;
    let n = rows.len();
    let c = &e.coverage;
    let count = |v: u64| -> ArrayRef { Arc::new(Int64Array::from(vec![v as i64; n])) };
    let notes = (!e.notes.is_empty()).then(|| e.notes.join("\n"));
    let mut columns = header(e, n);
    columns.extend::<Vec<ArrayRef>>(vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.metric.to_string()),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.value).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.holdout).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter()
                .map(|r| Some(r.value? - r.holdout?))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.estimated).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.tolerance).collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.degraded).collect::<Vec<_>>(),
        )),
        count(c.scored_rows),
        count(c.label_rows),
        count(c.null_labels),
        count(c.matched_rows),
        count(c.unmatched_labels),
        Arc::new(BooleanArray::from(vec![e.realized; n])),
        Arc::new(BooleanArray::from(vec![e.labels_complete; n])),
        Arc::new(StringArray::from(vec![notes.as_deref(); n])),
        Arc::new(StringArray::from(vec![e.labels_fingerprint.as_deref(); n])),
        stamp(evaluated_at, n),
    ]);
    Ok(RecordBatch::try_new(Arc::new(schema()), columns)?)
}

fn reliability_batch(e: &Evaluation, evaluated_at: DateTime<Utc>) -> Result<RecordBatch> {
    let bins = &e.reliability;
    let n = bins.len();
    let f = |g: fn(&ReliabilityBin) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(bins.iter().map(g)))
    };
    let mut columns = header(e, n);
    columns.extend::<Vec<ArrayRef>>(vec![
        f(|b| b.lower),
        f(|b| b.upper),
        Arc::new(Int64Array::from_iter_values(
            bins.iter().map(|b| b.rows as i64),
        )),
        f(|b| b.mean_score),
        f(|b| b.positive_rate),
        stamp(evaluated_at, n),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(reliability_schema()),
        columns,
    )?)
}

fn write_batch(loc: &Location, batch: &RecordBatch) -> Result<()> {
    let mut out = ParquetOutput::create(loc.clone(), batch.schema())?;
    out.write(batch)?;
    out.finish()
        .with_context(|| format!("writing performance report {}", loc.uri()))?;
    Ok(())
}

/// Removes a date's report (both files), when its scores were replaced by a run that had
/// nothing to estimate: the old figures describe scores that are gone.
pub fn remove(reports: &Location, job: &str, date: NaiveDate) -> Result<()> {
    let dir = partition(reports, job, date);
    for name in [REPORT_FILE, RELIABILITY_FILE] {
        let loc = dir.join(name);
        loc.store.delete(&loc.key)?;
    }
    Ok(())
}

/// Writes (or replaces) the report of an evaluated date. The reliability table goes first:
/// `performance.parquet` is the one readers list, so it appears last, when both are there.
pub fn write(reports: &Location, e: &Evaluation) -> Result<Location> {
    let at = Utc::now();
    let dir = partition(reports, &e.job, e.logical_date);
    let reliability = dir.join(RELIABILITY_FILE);
    if e.reliability.is_empty() {
        reliability.store.delete(&reliability.key)?;
    } else {
        write_batch(&reliability, &reliability_batch(e, at)?)?;
    }
    let loc = dir.join(REPORT_FILE);
    write_batch(&loc, &to_batch(e, at)?)?;
    Ok(loc)
}

/// The dates of a job that have a performance report, oldest first.
pub fn list(reports: &Location, job: &str) -> Result<Vec<(NaiveDate, Location)>> {
    let dir = reports.join(&format!("job={job}"));
    let mut found: Vec<(NaiveDate, Location)> = dir
        .store
        .list(&dir.key)?
        .into_iter()
        .filter_map(|o| {
            let partition = dir.relative(&o.key).strip_suffix(REPORT_FILE)?;
            let date = partition
                .trim_end_matches('/')
                .strip_prefix("dt=")
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())?;
            Some((
                date,
                Location {
                    key: o.key,
                    ..dir.clone()
                },
            ))
        })
        .collect();
    if found.is_empty() {
        bail!(
            "no performance reports for job '{job}' under {} (run `nightshift evaluate {job} --date D` once the labels are in)",
            reports.uri()
        );
    }
    found.sort_by_key(|(d, _)| *d);
    Ok(found)
}

fn read_batches(loc: &Location) -> Result<Vec<RecordBatch>> {
    let bytes = loc.store.get(&loc.key)?;
    let context = || format!("reading performance report {}", loc.uri());
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .with_context(context)?
        .collect::<Result<Vec<_>, _>>()
        .with_context(context)
}

/// Reads a report back (and its reliability table, when there is one): the inverse of
/// [`write`].
pub fn read(loc: &Location) -> Result<Evaluation> {
    let schema = schema();
    let mut evaluation: Option<Evaluation> = None;
    let mut written_at = None;
    for batch in read_batches(loc)? {
        if batch.num_rows() == 0 {
            continue;
        }
        let at: TimestampMicrosecondArray = column(&batch, &schema, "evaluated_at")?;
        written_at.get_or_insert(at.value(0));
        let s = |name| column::<StringArray>(&batch, &schema, name);
        let i64s = |name| column::<Int64Array>(&batch, &schema, name);
        let f64s = |name| column::<Float64Array>(&batch, &schema, name);
        let (job, run_id, model_name, metric, notes) = (
            s("job")?,
            s("run_id")?,
            s("model_name")?,
            s("metric")?,
            s("notes")?,
        );
        // Optional: reports written before the column existed have none.
        let fingerprint = s("labels_fingerprint").ok();
        let date: Date32Array = column(&batch, &schema, "logical_date")?;
        let version: Int32Array = column(&batch, &schema, "model_version")?;
        let (value, holdout, tolerance) = (f64s("value")?, f64s("holdout")?, f64s("tolerance")?);
        let estimated = f64s("estimated").ok();
        let realized = column::<BooleanArray>(&batch, &schema, "realized").ok();
        let degraded: BooleanArray = column(&batch, &schema, "degraded")?;
        let complete: BooleanArray = column(&batch, &schema, "labels_complete")?;
        let float = |a: &Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
        let e = evaluation.get_or_insert_with(|| Evaluation {
            job: job.value(0).to_string(),
            logical_date: epoch() + chrono::Duration::days(date.value(0).into()),
            run_id: run_id.value(0).to_string(),
            model_name: model_name.value(0).to_string(),
            model_version: version.value(0) as u32,
            coverage: Coverage::default(),
            realized: realized.as_ref().is_none_or(|r| r.value(0)),
            metrics: Vec::new(),
            reliability: Vec::new(),
            labels_complete: complete.value(0),
            labels_fingerprint: fingerprint
                .as_ref()
                .filter(|f| f.is_valid(0))
                .map(|f| f.value(0).to_string()),
            notes: if notes.is_valid(0) {
                notes.value(0).lines().map(str::to_string).collect()
            } else {
                Vec::new()
            },
        });
        let count = |name| -> Result<u64> { Ok(i64s(name)?.value(0).max(0) as u64) };
        e.coverage = Coverage {
            scored_rows: count("scored_rows")?,
            label_rows: count("label_rows")?,
            null_labels: count("null_labels")?,
            matched_rows: count("matched_rows")?,
            unmatched_labels: count("unmatched_labels")?,
        };
        for i in 0..batch.num_rows() {
            let Ok(m) = metric.value(i).parse() else {
                continue; // a metric of a later version
            };
            e.metrics.push(MetricRow {
                metric: m,
                value: float(&value, i),
                holdout: float(&holdout, i),
                estimated: estimated.as_ref().and_then(|a| float(a, i)),
                tolerance: float(&tolerance, i),
                degraded: degraded.is_valid(i) && degraded.value(i),
            });
        }
    }
    let Some(mut e) = evaluation else {
        bail!("performance report {} has no rows", loc.uri());
    };
    let reliability = Location {
        key: loc.key.replace(REPORT_FILE, RELIABILITY_FILE),
        ..loc.clone()
    };
    if reliability.store.head(&reliability.key)?.is_some() {
        let schema = reliability_schema();
        for batch in read_batches(&reliability)? {
            // Only the table written with this report: a write that failed between the two
            // files must not pair an old table with a new report, or the reverse.
            let run: StringArray = column(&batch, &schema, "run_id")?;
            let at: TimestampMicrosecondArray = column(&batch, &schema, "evaluated_at")?;
            if batch.num_rows() == 0 || run.value(0) != e.run_id || Some(at.value(0)) != written_at
            {
                continue;
            }
            let f = |name| column::<Float64Array>(&batch, &schema, name);
            let (lower, upper, mean, rate) = (
                f("lower")?,
                f("upper")?,
                f("mean_score")?,
                f("positive_rate")?,
            );
            let rows: Int64Array = column(&batch, &schema, "rows")?;
            for i in 0..batch.num_rows() {
                e.reliability.push(ReliabilityBin {
                    lower: lower.value(i),
                    upper: upper.value(i),
                    rows: rows.value(i).max(0) as u64,
                    mean_score: mean.value(i),
                    positive_rate: rate.value(i),
                });
            }
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;
    use crate::storage::{Stores, Uri};

    fn evaluation(run_id: &str, bins: u64) -> Evaluation {
        Evaluation {
            job: "churn".into(),
            logical_date: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            run_id: run_id.into(),
            model_name: "churn".into(),
            model_version: 1,
            coverage: Coverage {
                scored_rows: 10,
                label_rows: 10,
                null_labels: 0,
                matched_rows: 10,
                unmatched_labels: 0,
            },
            realized: true,
            metrics: vec![MetricRow {
                metric: Metric::RocAuc,
                value: Some(0.7),
                holdout: Some(0.75),
                estimated: Some(0.72),
                tolerance: Some(0.05),
                degraded: false,
            }],
            reliability: (0..bins)
                .map(|b| ReliabilityBin {
                    lower: b as f64 / 10.0,
                    upper: (b + 1) as f64 / 10.0,
                    rows: 1,
                    mean_score: 0.5,
                    positive_rate: 0.5,
                })
                .collect(),
            labels_complete: true,
            labels_fingerprint: Some("f".into()),
            notes: vec!["one; with a semicolon".into(), "two".into()],
        }
    }

    /// A report reads back as written; a reliability table written by an evaluation that died
    /// before its report (the files are written table first) is not paired with the older
    /// report, and a report with no table deletes the old one.
    #[test]
    fn reports_read_back_and_a_half_written_evaluation_shows_nothing_new() {
        let dir = tempfile::tempdir().unwrap();
        let reports = Stores::default()
            .locate(&Uri::Local(dir.path().to_path_buf()))
            .unwrap();
        let first = evaluation("run-1", 3);
        let loc = write(&reports, &first).unwrap();
        let back = read(&loc).unwrap();
        assert_eq!(back.metrics, first.metrics);
        assert_eq!(back.reliability, first.reliability);
        assert_eq!(back.coverage, first.coverage);
        assert_eq!(back.notes, first.notes);
        assert_eq!(back.labels_fingerprint, first.labels_fingerprint);

        // A second evaluation dies between its two files.
        let second = evaluation("run-2", 5);
        let table = partition(&reports, "churn", second.logical_date).join(RELIABILITY_FILE);
        write_batch(&table, &reliability_batch(&second, Utc::now()).unwrap()).unwrap();
        let back = read(&loc).unwrap();
        assert_eq!(back.run_id, "run-1");
        assert!(back.reliability.is_empty(), "not the other run's table");

        // One with no table: none is shown, and the file is gone.
        write(&reports, &evaluation("run-3", 0)).unwrap();
        assert!(read(&loc).unwrap().reliability.is_empty());
        assert!(!dir
            .path()
            .join("job=churn/dt=2026-11-01/reliability.parquet")
            .exists());
    }
}
