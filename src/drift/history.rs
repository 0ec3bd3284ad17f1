//! Reading drift reports back for people: the report of one date, and the trend of every
//! column's statistic over all dates, computed with polars over the report partitions.

use std::io::Cursor;

use anyhow::{bail, Result};
use chrono::NaiveDate;
use polars::prelude::*;

use super::report::REPORT_FILE;
use super::DATASET_ROW;
use crate::storage::Location;

/// Every report of a job (all dates) as one data frame, read through nightshift's storage so
/// local and S3 reports work alike.
pub fn load(reports: &Location, job: &str) -> Result<DataFrame> {
    let dir = reports.join(&format!("job={job}"));
    let mut frames = Vec::new();
    for o in dir.store.list(&dir.key)? {
        if !o.key.ends_with(REPORT_FILE) {
            continue;
        }
        let bytes = dir.store.get(&o.key)?;
        let df = anyhow::Context::with_context(
            ParquetReader::new(Cursor::new(bytes.to_vec())).finish(),
            || format!("reading drift report {}", dir.store.uri(&o.key)),
        )?;
        frames.push(df);
    }
    let Some(mut all) = frames.pop() else {
        bail!("no drift reports for job '{job}' under {}", reports.uri());
    };
    for f in frames {
        all.vstack_mut(&f)?;
    }
    Ok(all)
}

fn days(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
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

/// One date's rows, features first, then the prediction and the dataset verdict.
pub fn for_date(df: &DataFrame, date: NaiveDate) -> Result<DataFrame> {
    let out = df
        .clone()
        .lazy()
        .filter(
            col("logical_date")
                .cast(DataType::Int32)
                .eq(lit(days(date))),
        )
        .with_column(
            when(col("column_type").eq(lit("dataset")))
                .then(lit(2))
                .when(col("column_type").eq(lit("prediction")))
                .then(lit(1))
                .otherwise(lit(0))
                .alias("_order"),
        )
        .sort_by_exprs(
            [col("_order"), col("column")],
            SortMultipleOptions::default(),
        )
        .drop(cols(["_order"]))
        .collect()?;
    Ok(out)
}

/// Per column and method: how many dates, how many drifted, the statistic's first, last and
/// largest value, the change, and every value in date order (for a sparkline).
pub fn trend(df: &DataFrame) -> Result<DataFrame> {
    let out = df
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
    Ok(out)
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
