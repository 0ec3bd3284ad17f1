//! `nightshift model train`: train on Parquet data and register a new version.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{metrics_line, registry, RegistryArgs};
use crate::model::{self, Algorithm, Hyperparameters, TrainRequest};
use crate::storage::Uri;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training data: a Parquet file or a prefix of them (local path, file:// or s3://).
    #[arg(long)]
    pub data: String,
    /// Target column.
    #[arg(long)]
    pub target: String,
    /// The algorithm (docs/models.md describes each).
    #[arg(long, value_parser = algorithm_parser())]
    pub algorithm: Algorithm,
    /// Model name in the registry.
    #[arg(long)]
    pub name: String,
    /// Feature columns, comma-separated (default: all but the target and --exclude).
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Columns that are not features, comma-separated (for example an id).
    #[arg(long, value_delimiter = ',', default_value = "")]
    pub exclude: Vec<String>,
    /// Treat numeric nulls as bad rows instead of imputing the training mean.
    #[arg(long)]
    pub no_impute: bool,
    /// Share of rows held out for the metrics.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// Maximum tree depth (decision-tree, random-forest).
    #[arg(long, default_value_t = 10)]
    pub max_depth: usize,
    /// Number of trees (random-forest).
    #[arg(long, default_value_t = 100)]
    pub trees: usize,
    /// Optimiser iterations (logistic).
    #[arg(long, default_value_t = 100)]
    pub max_iterations: u64,
    /// Seed for the holdout split and the forest's sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub(super) fn execute(args: &TrainArgs) -> Result<ExitCode> {
    let (registry, stores) = registry(&args.registry)?;
    if !(0.0..1.0).contains(&args.holdout) {
        bail!("--holdout must be at least 0 and below 1");
    }
    let req = TrainRequest {
        data: stores.locate(&Uri::parse(&args.data)?)?,
        target: args.target.clone(),
        algorithm: args.algorithm,
        name: args.name.clone(),
        features: args.features.clone(),
        exclude: args
            .exclude
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        impute: !args.no_impute,
        hyperparameters: Hyperparameters {
            max_depth: Some(args.max_depth),
            trees: args.trees,
            max_iterations: args.max_iterations,
            seed: args.seed,
        },
        holdout: args.holdout,
    };
    // Training can take a while on large data: say what is going on meanwhile.
    eprintln!("training {} on {} ...", args.algorithm, args.data);
    let m = model::train(&registry, &req)
        .with_context(|| format!("training {} on {}", args.name, args.data))?;
    eprintln!(
        "trained {} on {} rows ({} held out, {} dropped): {}",
        m.algorithm,
        m.training_rows,
        m.holdout_rows,
        m.dropped_rows,
        metrics_line(&m)
    );
    println!("{}@{}", m.name, m.version);
    Ok(ExitCode::SUCCESS)
}

/// `--algorithm` takes the model layer's kebab-case names, which strum derives there: the model
/// layer knows nothing of the command line.
fn algorithm_parser() -> impl clap::builder::TypedValueParser<Value = Algorithm> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    use strum::VariantNames;
    let trainable = Algorithm::VARIANTS.iter().copied().filter(|name| {
        name.parse()
            .is_ok_and(|a: Algorithm| Algorithm::TRAINABLE.contains(&a))
    });
    PossibleValuesParser::new(trainable)
        .map(|name| name.parse::<Algorithm>().expect("every listed name parses"))
}
