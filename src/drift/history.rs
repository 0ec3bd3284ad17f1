//! Drift history is analytics: the trend of every column's statistic over all dates, computed
//! with polars over the report partitions. (One date's report is read by `report::read`.)

use std::io::Cursor;

use anyhow::Result;
use chrono::NaiveDate;
use polars::prelude::*;

use super::{report, DATASET_ROW};
use crate::storage::Location;

/// Every report of a job (all dates) as one data frame, read through nightshift's storage so
/// local and S3 reports work alike.
pub fn load(reports: &Location, job: &str) -> Result<DataFrame> {
    let mut frames = Vec::new();
    for (_, loc) in report::list(reports, job)? {
        let bytes = loc.store.get(&loc.key)?;
        let df = anyhow::Context::with_context(
            ParquetReader::new(Cursor::new(bytes.to_vec())).finish(),
            || format!("reading drift report {}", loc.uri()),
        )?;
        frames.push(df);
    }
    let mut all = frames.pop().expect("list finds at least one report");
    for f in frames {
        all.vstack_mut(&f)?;
    }
    Ok(all)
}

fn date_of(days: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(days.into())
}

/// The dates that have reports, ascending.
pub fn dates(df: &DataFrame) -> Result<Vec<NaiveDate>> {
    let d = df.column("logical_date")?.cast(&DataType::Int32)?;
    let mut v: Vec<NaiveDate> = d.i32()?.iter().flatten().map(date_of).collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// How one column's statistic (by one method) moved over the dates.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendRow {
    pub column: String,
    pub column_type: String,
    pub method: String,
    /// Dates with a report of the column, and how many of them drifted.
    pub dates: u32,
    pub drifted: u32,
    /// The statistic's first, last and largest value, and last minus first (NaN where it
    /// could not be computed).
    pub first: f64,
    pub last: f64,
    pub max: f64,
    pub change: f64,
    /// Every value in date order, for a sparkline.
    pub values: Vec<Option<f64>>,
}

/// Per column and method: how many dates, how many drifted, the statistic's first, last and
/// largest value, the change, and every value in date order. Types first, then columns.
pub fn trend(df: &DataFrame) -> Result<Vec<TrendRow>> {
    let t = df
        .clone()
        .lazy()
        .filter(col("column").neq(lit(DATASET_ROW)))
        .sort(["logical_date"], SortMultipleOptions::default())
        .group_by_stable([col("column"), col("column_type"), col("method")])
        .agg([
            col("logical_date").count().alias("dates"),
            col("drift_detected")
                .cast(DataType::UInt32)
                .sum()
                .alias("drifted"),
            col("statistic").first().alias("first"),
            col("statistic").last().alias("last"),
            col("statistic").max().alias("max"),
            col("statistic").alias("values"),
        ])
        .with_column((col("last") - col("first")).alias("change"))
        .sort(["column_type", "column"], SortMultipleOptions::default())
        .collect()?;
    let s = |name: &str| -> Result<Vec<String>> {
        let c = t.column(name)?.cast(&DataType::String)?;
        Ok(c.str()?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    let n = |name: &str| -> Result<Vec<u32>> {
        let c = t.column(name)?.cast(&DataType::UInt32)?;
        Ok(c.u32()?.iter().map(|v| v.unwrap_or(0)).collect())
    };
    let f = |name: &str| -> Result<Vec<f64>> {
        let c = t.column(name)?.cast(&DataType::Float64)?;
        Ok(c.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    };
    let (column, column_type, method) = (s("column")?, s("column_type")?, s("method")?);
    let (dates, drifted) = (n("dates")?, n("drifted")?);
    let (first, last, max, change) = (f("first")?, f("last")?, f("max")?, f("change")?);
    let values = t.column("values")?.list()?.clone();
    Ok((0..t.height())
        .map(|i| TrendRow {
            column: column[i].clone(),
            column_type: column_type[i].clone(),
            method: method[i].clone(),
            dates: dates[i],
            drifted: drifted[i],
            first: first[i],
            last: last[i],
            max: max[i],
            change: change[i],
            values: values
                .get_as_series(i)
                .and_then(|s| s.cast(&DataType::Float64).ok())
                .map(|s| s.f64().expect("cast to f64").iter().collect())
                .unwrap_or_default(),
        })
        .collect())
}

/// Unicode blocks for a series of values, scaled to their own range.
pub fn sparkline(values: &[Option<f64>]) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let finite: Vec<f64> = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    values
        .iter()
        .map(|v| match v {
            Some(v) if v.is_finite() => {
                let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
                BLOCKS[((t * 7.0).round() as usize).min(7)]
            }
            _ => ' ',
        })
        .collect()
}
