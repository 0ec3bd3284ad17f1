//! The hot kernels of a run, one batch at a time (16,384 rows, the default `batch_rows`, 20 float64 features with 1 %
//! nulls in five of them, a 4-value string): what `make bench` times end to end, taken apart.
//!
//!     make bench-kernels            # or: cargo bench -p nightshift-kernels
//!
//! Run-to-run noise on a shared 2-core machine is 5-10 %: compare kernels, not machines.

mod data;

use arrow::array::ArrayRef;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use data::{batch, model, Stream, ROWS};
use nightshift::drift::stats::{ks_2samp, wasserstein_distance};
use nightshift::model::Algorithm;
use nightshift::profile::{ProfileBuilder, RowOrigin};

fn kernels(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let input = batch(ROWS, 42, false);
    let (lr, registry) = model(dir.path(), Algorithm::Logistic, "lr");
    let (rf, _) = model(dir.path(), Algorithm::RandomForest, "rf");
    let reference = registry
        .profile(&lr.manifest)
        .unwrap()
        .expect("a reference profile");

    let mut g = c.benchmark_group("batch of 16384 rows");
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
