//! The profile kernel alone, reporting its fastest batch: a figure that a busy machine moves
//! less than criterion's distributions.
//!
//!     cargo run --release -p nightshift-kernels --example profile_loop -- 200

#[path = "../benches/data.rs"]
mod data;

use arrow::array::ArrayRef;
use nightshift::model::Algorithm;
use nightshift::profile::{ProfileBuilder, RowOrigin};

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
    // The fastest batch after the samples filled: a busy machine only ever adds time.
    let mut best = f64::INFINITY;
    for k in 0..iterations {
        let t0 = std::time::Instant::now();
        builder
            .add_columns(&columns, RowOrigin::new("f", (k * data::ROWS) as u64))
            .unwrap();
        if k >= 16 {
            best = best.min(t0.elapsed().as_secs_f64());
        }
    }
    eprintln!(
        "{:.3} ms the fastest batch of {} rows",
        best * 1e3,
        data::ROWS
    );
}
