//! The drift report: one Parquet object per run's job and date, one row per (column, method),
//! Hive-partitioned so analytics tools read the whole history with the right types:
//!
//!     REPORTS/job=NAME/dt=YYYY-MM-DD/drift.parquet
//!
//! `read_parquet('REPORTS/**/drift.parquet', hive_partitioning = true)` in DuckDB, or
//! `pl.read_parquet(..., hive_partitioning=True)` in polars, gives every run of every job.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::DriftRow;
use crate::storage::Location;
use crate::write::ParquetOutput;

pub const REPORT_FILE: &str = "drift.parquet";
pub const PROFILE_FILE: &str = "current_profile.json";
pub const REFERENCE_PROFILE_FILE: &str = "reference_profile.json";

/// Which run a report belongs to.
#[derive(Debug, Clone)]
pub struct ReportContext {
    pub job: String,
    pub logical_date: NaiveDate,
    pub run_id: String,
    pub model_name: String,
    pub model_version: u32,
    pub computed_at: DateTime<Utc>,
}

/// Where the report of a job's date lives.
pub fn report_location(reports: &Location, job: &str, date: NaiveDate) -> Location {
    reports
        .join(&format!("job={job}"))
        .join(&format!("dt={date}"))
        .join(REPORT_FILE)
}

/// Where the run's current profile is kept beside the report (for `drift show --html`).
pub fn profile_location(reports: &Location, job: &str, date: NaiveDate) -> Location {
    reports
        .join(&format!("job={job}"))
        .join(&format!("dt={date}"))
        .join(PROFILE_FILE)
}

/// Where the reference the run compared with is kept beside the report (for the web page:
/// the histograms of a date as its run drew them, whatever the reference is today).
pub fn reference_profile_location(reports: &Location, job: &str, date: NaiveDate) -> Location {
    reports
        .join(&format!("job={job}"))
        .join(&format!("dt={date}"))
        .join(REFERENCE_PROFILE_FILE)
}

/// The report's schema, documented in docs/drift.md.
pub fn schema() -> Schema {
    Schema::new(vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("logical_date", DataType::Date32, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("model_name", DataType::Utf8, false),
        Field::new("model_version", DataType::Int32, false),
        Field::new("column", DataType::Utf8, false),
        Field::new("column_type", DataType::Utf8, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("statistic", DataType::Float64, true),
        Field::new("p_value", DataType::Float64, true),
        Field::new("threshold", DataType::Float64, false),
        Field::new("drift_detected", DataType::Boolean, false),
        Field::new("reference_count", DataType::Int64, false),
        Field::new("current_count", DataType::Int64, false),
        Field::new("reference_null_rate", DataType::Float64, false),
        Field::new("current_null_rate", DataType::Float64, false),
        Field::new(
            "computed_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ])
}

pub fn to_batch(ctx: &ReportContext, rows: &[DriftRow]) -> Result<RecordBatch> {
    let n = rows.len();
    let days = (ctx.logical_date - epoch()).num_days() as i32;
    let f = |g: fn(&DriftRow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(g)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![ctx.job.as_str(); n])),
        Arc::new(Date32Array::from(vec![days; n])),
        Arc::new(StringArray::from(vec![ctx.run_id.as_str(); n])),
        Arc::new(StringArray::from(vec![ctx.model_name.as_str(); n])),
        Arc::new(Int32Array::from(vec![ctx.model_version as i32; n])),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.column.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.column_type.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.method.as_str()),
        )),
        Arc::new(Float64Array::from(
            rows.iter()
                .map(|r| r.statistic.is_finite().then_some(r.statistic))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.p_value).collect::<Vec<_>>(),
        )),
        f(|r| r.threshold),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.drift_detected).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.reference_count as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.current_count as i64),
        )),
        f(|r| r.reference_null_rate),
        f(|r| r.current_null_rate),
        Arc::new(
            TimestampMicrosecondArray::from(vec![ctx.computed_at.timestamp_micros(); n])
                .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema()), columns)?)
}

/// Writes (or replaces) the report of a run's job and date.
pub fn write(reports: &Location, ctx: &ReportContext, rows: &[DriftRow]) -> Result<Location> {
    let loc = report_location(reports, &ctx.job, ctx.logical_date);
    let batch = to_batch(ctx, rows)?;
    let mut out = ParquetOutput::create(loc.clone(), batch.schema())?;
    out.write(&batch)?;
    out.finish()
        .with_context(|| format!("writing drift report {}", loc.uri()))?;
    Ok(loc)
}

/// A report read back: which run it belongs to, and its rows.
#[derive(Debug, Clone)]
pub struct Report {
    pub context: ReportContext,
    /// Features by name, then the prediction, then the dataset verdict: the order `drift show`
    /// and the HTML page list them in.
    pub rows: Vec<DriftRow>,
}

/// The dates of a job that have a report, ascending, and where each report is. Read from the
/// partition names, so no report is opened to find them.
pub fn list(reports: &Location, job: &str) -> Result<Vec<(NaiveDate, Location)>> {
    let dir = reports.join(&format!("job={job}"));
    let mut found = Vec::new();
    for o in dir.store.list(&dir.key)? {
        let rel = dir.relative(&o.key);
        let Some(partition) = rel.strip_suffix(REPORT_FILE) else {
            continue;
        };
        let date = partition
            .trim_end_matches('/')
            .strip_prefix("dt=")
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        if let Some(date) = date {
            let key = o.key;
            found.push((date, Location { key, ..dir.clone() }));
        }
    }
    if found.is_empty() {
        bail!("no drift reports for job '{job}' under {}", reports.uri());
    }
    found.sort_by_key(|(d, _)| *d);
    Ok(found)
}

/// Reads one report, the inverse of [`write`]. Every column is cast to the type the report is
/// written with, so reports rewritten by other tools (as large strings, say) still read.
pub fn read(loc: &Location) -> Result<Report> {
    let bytes = loc.store.get(&loc.key)?;
    let context = || format!("reading drift report {}", loc.uri());
    let batches = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .with_context(context)?
        .collect::<Result<Vec<_>, _>>()
        .with_context(context)?;
    let mut header = None;
    let mut rows = Vec::new();
    for batch in &batches {
        let (ctx, mut more) = from_batch(batch).with_context(context)?;
        header = header.or(ctx);
        rows.append(&mut more);
    }
    let Some(context) = header else {
        bail!("drift report {} has no rows", loc.uri());
    };
    rows.sort_by(|a, b| {
        let order = |r: &DriftRow| match r.column_type.as_str() {
            "dataset" => 2,
            "prediction" => 1,
            _ => 0,
        };
        (order(a), &a.column).cmp(&(order(b), &b.column))
    });
    Ok(Report { context, rows })
}

/// One column of a report batch, cast to the type it is written with.
fn column<T: Array + Clone + 'static>(batch: &RecordBatch, name: &str) -> Result<T> {
    crate::read::column_as(batch, &schema(), name)
}

/// The rows of one batch, and the run they belong to (from its first row, if any).
fn from_batch(batch: &RecordBatch) -> Result<(Option<ReportContext>, Vec<DriftRow>)> {
    let job: StringArray = column(batch, "job")?;
    let date: Date32Array = column(batch, "logical_date")?;
    let run_id: StringArray = column(batch, "run_id")?;
    let model_name: StringArray = column(batch, "model_name")?;
    let model_version: Int32Array = column(batch, "model_version")?;
    let computed_at: TimestampMicrosecondArray = column(batch, "computed_at")?;
    let name: StringArray = column(batch, "column")?;
    let column_type: StringArray = column(batch, "column_type")?;
    let method: StringArray = column(batch, "method")?;
    let statistic: Float64Array = column(batch, "statistic")?;
    let p_value: Float64Array = column(batch, "p_value")?;
    let threshold: Float64Array = column(batch, "threshold")?;
    let drift: BooleanArray = column(batch, "drift_detected")?;
    let reference_count: Int64Array = column(batch, "reference_count")?;
    let current_count: Int64Array = column(batch, "current_count")?;
    let reference_null: Float64Array = column(batch, "reference_null_rate")?;
    let current_null: Float64Array = column(batch, "current_null_rate")?;
    // A null float is a statistic that could not be computed (written so for NaN).
    let float = |a: &Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    let context = (batch.num_rows() > 0).then(|| ReportContext {
        job: job.value(0).to_string(),
        logical_date: epoch() + chrono::Duration::days(date.value(0).into()),
        run_id: run_id.value(0).to_string(),
        model_name: model_name.value(0).to_string(),
        model_version: model_version.value(0) as u32,
        computed_at: DateTime::from_timestamp_micros(computed_at.value(0)).unwrap_or_default(),
    });
    let rows = (0..batch.num_rows())
        .map(|i| DriftRow {
            column: name.value(i).to_string(),
            column_type: column_type.value(i).to_string(),
            method: method.value(i).to_string(),
            statistic: float(&statistic, i).unwrap_or(f64::NAN),
            p_value: float(&p_value, i),
            threshold: float(&threshold, i).unwrap_or(f64::NAN),
            drift_detected: drift.is_valid(i) && drift.value(i),
            reference_count: reference_count.value(i).max(0) as u64,
            current_count: current_count.value(i).max(0) as u64,
            reference_null_rate: float(&reference_null, i).unwrap_or(0.0),
            current_null_rate: float(&current_null, i).unwrap_or(0.0),
        })
        .collect();
    Ok((context, rows))
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Stores, Uri};

    fn row(column: &str, column_type: &str, statistic: f64) -> DriftRow {
        DriftRow {
            column: column.into(),
            column_type: column_type.into(),
            method: "wasserstein".into(),
            statistic,
            p_value: None,
            threshold: 0.1,
            drift_detected: statistic >= 0.1,
            reference_count: 3200,
            current_count: 800,
            reference_null_rate: 0.0078,
            current_null_rate: 0.011,
        }
    }

    #[test]
    fn a_report_reads_back_as_written_in_display_order() {
        let dir = tempfile::tempdir().unwrap();
        let reports = Stores::default()
            .locate(&Uri::Local(dir.path().to_path_buf()))
            .unwrap();
        let ctx = ReportContext {
            job: "churn".into(),
            logical_date: NaiveDate::from_ymd_opt(2026, 11, 3).unwrap(),
            run_id: "run-1".into(),
            model_name: "churn".into(),
            model_version: 2,
            computed_at: DateTime::from_timestamp_micros(1_793_671_200_123_456).unwrap(),
        };
        let dataset = row(super::super::DATASET_ROW, "dataset", 0.5);
        let score = row("score", "prediction", 0.27);
        let ks = DriftRow {
            method: "ks".into(),
            p_value: Some(1.2e-5),
            ..row("tenure", "numeric", 0.31)
        };
        let (plan, nan) = (
            row("plan", "categorical", 0.02),
            row("empty", "numeric", f64::NAN),
        );
        let written = [
            ks.clone(),
            score.clone(),
            plan.clone(),
            nan,
            dataset.clone(),
        ];
        write(&reports, &ctx, &written).unwrap();
        write(
            &reports,
            &ReportContext {
                logical_date: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
                ..ctx.clone()
            },
            &written,
        )
        .unwrap();

        let found = list(&reports, "churn").unwrap();
        let dates: Vec<String> = found.iter().map(|(d, _)| d.to_string()).collect();
        assert_eq!(dates, ["2026-11-01", "2026-11-03"]);
        let back = read(&found[1].1).unwrap();
        assert_eq!(back.context.logical_date, ctx.logical_date);
        assert_eq!(back.context.computed_at, ctx.computed_at);
        assert_eq!(
            (back.context.run_id.as_str(), back.context.model_version),
            ("run-1", 2)
        );
        let names: Vec<&str> = back.rows.iter().map(|r| r.column.as_str()).collect();
        assert_eq!(names, ["empty", "plan", "tenure", "score", "__dataset__"]);
        assert!(back.rows[0].statistic.is_nan(), "NaN is written as null");
        assert_eq!(back.rows[1..], [plan, ks, score, dataset]);

        let missing = list(&reports, "other").unwrap_err().to_string();
        assert!(
            missing.starts_with("no drift reports for job 'other' under "),
            "{missing}"
        );
    }
}
