//! Writes the bundled fixtures: a small churn data set with a training file and three daily
//! partitions. Deterministic (seeded), so the committed files can be regenerated exactly:
//!
//!     cargo run --bin make-fixtures -- fixtures/churn
//!
//! Day 1 is clean; day 2 has three rows with a NaN `data_gb` (bad rows to quarantine); day 3
//! has drifted: `monthly_charges` is shifted up by 15 (about 0.75 standard deviations) and the
//! `plan` mix is uniform. Every day has about 1% nulls in `monthly_charges` and `data_gb`.

use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, Int8Array, RecordBatch,
    StringArray,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const PLANS: [&str; 4] = ["basic", "standard", "premium", "enterprise"];
const REGIONS: [&str; 4] = ["north", "south", "east", "west"];

struct Day {
    drifted: bool,
    nan_rows: usize,
}

fn normal(rng: &mut impl Rng) -> f64 {
    // Box-Muller: enough for fixtures, and no extra dependency.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn pick<'a>(rng: &mut impl Rng, items: &[&'a str], weights: &[f64]) -> &'a str {
    let mut u: f64 = rng.gen();
    for (item, w) in items.iter().zip(weights) {
        if u < *w {
            return item;
        }
        u -= w;
    }
    items[items.len() - 1]
}

fn make(
    rng: &mut Xoshiro256PlusPlus,
    n: usize,
    id0: i64,
    day: &Day,
    with_label: bool,
) -> Result<RecordBatch> {
    let plan_weights = if day.drifted {
        [0.25; 4]
    } else {
        [0.4, 0.3, 0.2, 0.1]
    };
    let mut id = Vec::with_capacity(n);
    let mut tenure = Vec::with_capacity(n);
    let mut charges = Vec::with_capacity(n);
    let mut calls = Vec::with_capacity(n);
    let mut data_gb = Vec::with_capacity(n);
    let mut plan = Vec::with_capacity(n);
    let mut region = Vec::with_capacity(n);
    let mut label = Vec::with_capacity(n);
    for i in 0..n {
        let t: i32 = rng.gen_range(1..=72);
        let c = 70.0 + 20.0 * normal(rng) + if day.drifted { 15.0 } else { 0.0 };
        let k: i64 = (normal(rng).abs() * 1.5).floor() as i64;
        let g = (2.0 + 0.8 * normal(rng)).exp() as f32;
        let p = pick(rng, &PLANS, &plan_weights);
        let r = pick(rng, &REGIONS, &[0.25; 4]);
        let logit = -1.0 - 0.04 * (t as f64 - 36.0) + 0.03 * (c - 70.0) + 0.5 * k as f64
            - 0.05 * (g as f64 - 7.0)
            + if p == "basic" { 0.6 } else { 0.0 };
        let y = rng.gen::<f64>() < 1.0 / (1.0 + (-logit).exp());
        id.push(id0 + i as i64);
        tenure.push(t);
        charges.push((rng.gen::<f64>() >= 0.01).then_some(c));
        calls.push(k);
        data_gb.push((rng.gen::<f64>() >= 0.01).then_some(if i < day.nan_rows {
            f32::NAN
        } else {
            g
        }));
        plan.push(p);
        region.push(r);
        label.push(y as i8);
    }
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(id))),
        ("tenure_months", Arc::new(Int32Array::from(tenure))),
        ("monthly_charges", Arc::new(Float64Array::from(charges))),
        ("support_calls", Arc::new(Int64Array::from(calls))),
        ("data_gb", Arc::new(Float32Array::from(data_gb))),
        ("plan", Arc::new(StringArray::from(plan))),
        ("region", Arc::new(StringArray::from(region))),
    ];
    if with_label {
        cols.push(("churned", Arc::new(Int8Array::from(label))));
    }
    Ok(RecordBatch::try_from_iter(cols)?)
}

fn write(path: &Path, batch: &RecordBatch) -> Result<()> {
    fs::create_dir_all(path.parent().expect("a parent folder"))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(400))
        .set_created_by("nightshift make-fixtures".into())
        .build();
    let mut w = ArrowWriter::try_new(File::create(path)?, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(())
}

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/churn".into());
    let out = Path::new(&out);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(20261101);
    let clean = Day {
        drifted: false,
        nan_rows: 0,
    };
    write(
        &out.join("train/train.parquet"),
        &make(&mut rng, 4000, 0, &clean, true)?,
    )?;
    let days = [
        (
            "2026-11-01",
            Day {
                drifted: false,
                nan_rows: 0,
            },
        ),
        (
            "2026-11-02",
            Day {
                drifted: false,
                nan_rows: 3,
            },
        ),
        (
            "2026-11-03",
            Day {
                drifted: true,
                nan_rows: 0,
            },
        ),
    ];
    let mut id0 = 100_000;
    for (date, day) in &days {
        for part in 0..2 {
            let batch = make(&mut rng, 1000, id0, day, false)?;
            id0 += 1000;
            write(
                &out.join(format!("features/dt={date}/part-{part:05}.parquet")),
                &batch,
            )?;
        }
    }
    println!("wrote {}", out.display());
    Ok(())
}
