//! The profile and linear scoring kernels alone, each reporting its fastest batch: a figure
//! that a busy machine moves less than criterion's distributions.
//!
//!     cargo run --release -p nightshift-kernels --example profile_loop -- 200

#[path = "../benches/data.rs"]
mod data;

use arrow::array::ArrayRef;
use nightshift::model::Algorithm;
use nightshift::profile::{ProfileBuilder, RowOrigin};

/// The fastest of `iterations` calls after the first 16 (a busy machine only ever adds time;
/// the first batches fill the samples, which later ones mostly skip).
fn fastest(iterations: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut best = f64::INFINITY;
    for k in 0..iterations {
        let t0 = std::time::Instant::now();
        f(k);
        if k >= 16 {
            best = best.min(t0.elapsed().as_secs_f64());
        }
    }
    best
}

fn main() {
    let iterations: usize = std::env::args().nth(1).map_or(200, |n| n.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let input = data::batch(data::ROWS, 42, false);
    let (lr, registry) = data::model(dir.path(), Algorithm::Logistic, "lr");
    let reference = registry.profile(&lr.manifest).unwrap().unwrap();
    let columns: Vec<(&str, &ArrayRef)> = input
        .schema_ref()
        .fields()
        .iter()
        .zip(input.columns())
        .map(|(f, c)| (f.name().as_str(), c))
        .collect();
    let mut builder = ProfileBuilder::against(&reference);
    let profile = fastest(iterations, |k| {
        builder
            .add_columns(&columns, RowOrigin::new("f", (k * data::ROWS) as u64))
            .unwrap();
    });
    let scored = lr.score_batch(&input).unwrap();
    let scores = fastest(iterations, |k| {
        builder.add_scores(
            &scored.prediction.score,
            &scored.good,
            RowOrigin::new("f", (k * data::ROWS) as u64),
        );
    });
    let score = fastest(iterations, |_| {
        std::hint::black_box(lr.score_batch(&input).unwrap());
    });
    let rows = data::ROWS;
    eprintln!(
        "{:.3} ms the fastest batch of {rows} rows (profile, 21 columns)",
        profile * 1e3
    );
    eprintln!(
        "{:.3} ms the fastest batch of {rows} scores (profile)",
        scores * 1e3
    );
    eprintln!(
        "{:.3} ms the fastest batch of {rows} rows (logistic regression)",
        score * 1e3
    );
}
