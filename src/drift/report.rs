//! The drift report: one Parquet object per run's job and date, one row per (column, method),
//! Hive-partitioned so analytics tools read the whole history with the right types:
//!
//!     REPORTS/job=NAME/dt=YYYY-MM-DD/drift.parquet
//!
//! `read_parquet('REPORTS/**/*.parquet', hive_partitioning = true)` in DuckDB, or
//! `pl.read_parquet(..., hive_partitioning=True)` in polars, gives every run of every job.

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};

use super::DriftRow;
use crate::storage::Location;
use crate::write::ParquetOutput;

pub const REPORT_FILE: &str = "drift.parquet";
pub const PROFILE_FILE: &str = "current_profile.json";

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
    let days =
        (ctx.logical_date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32;
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

/// Report rows back from a data frame of one date (for the HTML page).
pub fn rows_of(df: &polars::prelude::DataFrame) -> Result<Vec<DriftRow>> {
    use polars::prelude::DataType as P;
    let s = |name: &str| -> Result<Vec<String>> {
        let c = df.column(name)?.cast(&P::String)?;
        Ok(c.str()?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    let f = |name: &str| -> Result<Vec<Option<f64>>> {
        let c = df.column(name)?.cast(&P::Float64)?;
        Ok(c.f64()?.iter().collect())
    };
    let (column, column_type, method) = (s("column")?, s("column_type")?, s("method")?);
    let (statistic, p_value, threshold) = (f("statistic")?, f("p_value")?, f("threshold")?);
    let (rc, cc, rn, cn) = (
        f("reference_count")?,
        f("current_count")?,
        f("reference_null_rate")?,
        f("current_null_rate")?,
    );
    let drift: Vec<bool> = df
        .column("drift_detected")?
        .bool()?
        .iter()
        .map(|b| b.unwrap_or(false))
        .collect();
    Ok((0..df.height())
        .map(|i| DriftRow {
            column: column[i].clone(),
            column_type: column_type[i].clone(),
            method: method[i].clone(),
            statistic: statistic[i].unwrap_or(f64::NAN),
            p_value: p_value[i],
            threshold: threshold[i].unwrap_or(f64::NAN),
            drift_detected: drift[i],
            reference_count: rc[i].unwrap_or(0.0) as u64,
            current_count: cc[i].unwrap_or(0.0) as u64,
            reference_null_rate: rn[i].unwrap_or(0.0),
            current_null_rate: cn[i].unwrap_or(0.0),
        })
        .collect())
}
