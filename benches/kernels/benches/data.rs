//! The benchmark data and models, shared by the criterion benches and the examples.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use nightshift::model::{train, Algorithm, LoadedModel, Registry, TrainRequest};
use nightshift::schema::ModelRef;
use nightshift::storage::{Stores, Uri};
use parquet::arrow::ArrowWriter;

pub const ROWS: usize = 16_384;
pub const FEATURES: usize = 20;

/// A splitmix64 stream: the same data on every run, no dependency on rand's versions.
pub struct Stream(pub u64);
impl Stream {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

pub fn batch(rows: usize, seed: u64, label: bool) -> RecordBatch {
    let mut s = Stream(seed);
    let mut columns: Vec<(String, ArrayRef)> = Vec::new();
    let mut sum = vec![0.0; rows];
    for f in 0..FEATURES {
        let values: Vec<Option<f64>> = (0..rows)
            .map(|i| {
                let v = s.normal();
                sum[i] += v * (f as f64 - 9.5) / 10.0;
                (f >= 5 || s.uniform() > 0.01).then_some(v)
            })
            .collect();
        columns.push((format!("f{f:02}"), Arc::new(Float64Array::from(values))));
    }
    let plans = ["basic", "plus", "pro", "team"];
    let plan: Vec<&str> = (0..rows).map(|_| plans[(s.next() % 4) as usize]).collect();
    columns.push(("plan".into(), Arc::new(StringArray::from(plan))));
    if label {
        let y: Vec<i64> = sum.iter().map(|&v| i64::from(v > 0.0)).collect();
        columns.push(("label".into(), Arc::new(Int64Array::from(y))));
    }
    RecordBatch::try_from_iter(columns).unwrap()
}

/// Trains a model of `algorithm` on 20,000 rows into a temporary registry and loads it.
pub fn model(dir: &std::path::Path, algorithm: Algorithm, extra: &str) -> (LoadedModel, Registry) {
    let data = dir.join(format!("train-{extra}"));
    std::fs::create_dir_all(&data).unwrap();
    let train_batch = batch(20_000, 7, true);
    let file = std::fs::File::create(data.join("train.parquet")).unwrap();
    let mut w = ArrowWriter::try_new(file, train_batch.schema(), None).unwrap();
    w.write(&train_batch).unwrap();
    w.close().unwrap();
    let stores = Stores::default();
    let registry = Registry::new(stores.locate(&Uri::Local(dir.join("registry"))).unwrap());
    let name = format!("bench_{extra}");
    let hp = nightshift::model::Hyperparameters {
        trees: 100,
        max_depth: Some(10),
        ..Default::default()
    };
    let req = TrainRequest {
        data: stores.locate(&Uri::Local(data)).unwrap(),
        target: "label".into(),
        algorithm,
        name: name.clone(),
        features: None,
        exclude: vec![],
        impute: true,
        hyperparameters: hp,
        holdout: 0.2,
    };
    let manifest = train(&registry, &req).unwrap();
    let loaded = registry
        .load(&ModelRef {
            name,
            version: manifest.version,
        })
        .unwrap();
    (loaded, registry)
}
