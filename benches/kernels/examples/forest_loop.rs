//! Random forest scoring alone (a batch through `LoadedModel::score_batch`: the feature matrix
//! and the forest's walk), reporting its fastest pass: a figure that a busy machine moves less
//! than criterion's distributions. The forest has the benchmark's shape (100 trees of depth 10
//! over 20 continuous features and a one-hot of 4 values).
//!
//!     cargo run --release -p nightshift-kernels --example forest_loop -- 20

#[path = "../benches/data.rs"]
mod data;

use nightshift::model::Algorithm;

fn main() {
    let passes: usize = std::env::args().nth(1).map_or(20, |n| n.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = data::model(dir.path(), Algorithm::RandomForest, "rf");
    let rows = 8 * data::ROWS;
    let input = data::batch(rows, 42, false);
    let mut best = f64::INFINITY;
    let mut check = 0.0;
    for _ in 0..passes {
        let t0 = std::time::Instant::now();
        let scores = rf.score_batch(&input).unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
        check = scores.prediction.score.iter().sum::<f64>();
    }
    eprintln!(
        "{:.2} ms the fastest pass over {rows} rows ({:.3} ns a row and tree), checksum {check}",
        best * 1e3,
        best * 1e9 / (rows as f64 * 100.0),
    );
}
