//! The hot kernels of a run, one batch at a time (65,536 rows, 20 float64 features with 1 %
//! nulls in five of them, a 4-value string): what `make bench` times end to end, taken apart.
//!
//!     make bench-kernels            # or: cargo bench -p nightshift-kernels
//!
//! Run-to-run noise on a shared 2-core machine is 5-10 %: compare kernels, not machines.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nightshift::config::ModelRef;
use nightshift::drift::profile::{ProfileBuilder, RowOrigin};
use nightshift::drift::stats::{ks_2samp, wasserstein_distance};
use nightshift::model::{train, Algorithm, LoadedModel, Registry, TrainRequest};
use nightshift::storage::{Stores, Uri};
use parquet::arrow::ArrowWriter;

const ROWS: usize = 65_536;
const FEATURES: usize = 20;

/// A splitmix64 stream: the same data on every run, no dependency on rand's versions.
struct Stream(u64);
impl Stream {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn batch(rows: usize, seed: u64, label: bool) -> RecordBatch {
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
fn model(dir: &std::path::Path, algorithm: Algorithm, extra: &str) -> (LoadedModel, Registry) {
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
    let mut hp = nightshift::model::Hyperparameters::default();
    hp.trees = 100;
    hp.max_depth = Some(10);
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

fn kernels(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let input = batch(ROWS, 42, false);
    let (lr, registry) = model(dir.path(), Algorithm::Logistic, "lr");
    let (rf, _) = model(dir.path(), Algorithm::RandomForest, "rf");
    let reference = registry
        .profile(&lr.manifest)
        .unwrap()
        .expect("a reference profile");

    let mut g = c.benchmark_group("batch of 65536 rows");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("batch to feature matrix", |b| {
        b.iter(|| lr.manifest.preprocessing.encode(&input).unwrap())
    });
    g.bench_function("logistic regression, column by column", |b| {
        b.iter(|| lr.score_batch(&input).unwrap())
    });
    g.bench_function("random forest 100 x depth 10, matrix and trees", |b| {
        b.iter(|| rf.score_batch(&input).unwrap())
    });
    let columns: Vec<(&str, &ArrayRef)> = input
        .schema_ref()
        .fields()
        .iter()
        .zip(input.columns())
        .map(|(f, c)| (f.name().as_str(), c))
        .collect();
    // One builder for all iterations, as a worker keeps one for the whole run: after the first
    // few batches its samples are full, and most rows no longer get in.
    let mut builder = ProfileBuilder::against(&reference);
    let mut first_row = 0;
    g.bench_function("profile update (21 columns)", |b| {
        b.iter(|| {
            builder
                .add_columns(&columns, RowOrigin::new("f", first_row))
                .unwrap();
            first_row += ROWS as u64;
        })
    });
    g.finish();

    let mut s = Stream(1);
    let a: Vec<f64> = (0..10_000).map(|_| s.normal()).collect();
    let b: Vec<f64> = (0..10_000).map(|_| s.normal() + 0.1).collect();
    let mut g = c.benchmark_group("two samples of 10000");
    g.bench_function("Kolmogorov-Smirnov", |bench| {
        bench.iter(|| ks_2samp(&a, &b))
    });
    g.bench_function("Wasserstein", |bench| {
        bench.iter(|| wasserstein_distance(&a, &b))
    });
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
