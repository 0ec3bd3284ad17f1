//! `nightshift model import`: register a model file trained elsewhere (LightGBM, XGBoost,
//! ONNX) as a new immutable version.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::{metrics_line, registry, RegistryArgs};
use crate::model::formats::Format;
use crate::model::{self, ImportRequest};
use crate::storage::Uri;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The model file: a local path or an s3:// URI. LightGBM `model.txt`, XGBoost
    /// `model.json` or `model.ubj`, or an ONNX file (docs/models.md).
    pub path: String,
    /// Model name in the registry.
    #[arg(long)]
    pub name: String,
    /// The file's format; detected from its bytes by default.
    #[arg(long, value_parser = format_parser())]
    pub format: Option<Format>,
    /// The model's input columns in order, comma-separated: required where the file does not
    /// name its features, and replaces the file's names where it does.
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Parquet data (a file or a prefix) to profile as the version's drift reference.
    #[arg(long)]
    pub reference: Option<String>,
    /// With --reference: the column of true outcomes, for the holdout metrics and calibration
    /// that `evaluate` compares with.
    #[arg(long, requires = "reference")]
    pub target: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub(super) fn execute(args: &ImportArgs) -> Result<ExitCode> {
    let (registry, stores) = registry(&args.registry)?;
    let req = ImportRequest {
        file: stores.locate(&Uri::parse(&args.path)?)?,
        name: args.name.clone(),
        format: args.format,
        features: args.features.clone(),
        reference: args
            .reference
            .as_deref()
            .map(|r| stores.locate(&Uri::parse(r)?))
            .transpose()?,
        target: args.target.clone(),
    };
    let m = model::import(&registry, &req)
        .with_context(|| format!("importing {} as {}", args.path, args.name))?;
    let import = m.import.as_ref().expect("an imported version");
    eprintln!(
        "imported {} ({}{}): {} features, {} trees, {} leaves",
        import.format,
        import.objective,
        import
            .producer
            .as_deref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default(),
        import.features.len(),
        import.trees,
        import.leaves,
    );
    match &args.reference {
        Some(r) if m.metrics.is_empty() => {
            eprintln!("drift reference: {r} ({} rows)", m.training_rows)
        }
        Some(r) => eprintln!(
            "drift reference: {r} ({} rows); holdout metrics on {} rows: {}",
            m.training_rows,
            m.holdout_rows,
            metrics_line(&m)
        ),
        None => eprintln!(
            "no drift reference: runs write no drift report and say so in their summary; add one with --reference"
        ),
    }
    println!("{}@{}", m.name, m.version);
    Ok(ExitCode::SUCCESS)
}

/// `--format` takes the model layer's lowercase names (strum derives them there).
fn format_parser() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    use strum::VariantNames;
    PossibleValuesParser::new(Format::VARIANTS)
        .map(|name| name.parse::<Format>().expect("every listed name parses"))
}
