//! `nightshift model list` and `model show`: the versions in the registry. (`model train` is
//! in train.rs.)

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::import::ImportArgs;
use super::train::TrainArgs;
use super::{metrics_line, registry, RegistryArgs};
use crate::model::formats::InputKind;
use crate::model::{FeatureTransform, ImportInfo, ModelManifest};
use crate::schema::ModelRef;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Train a model on Parquet data and register it as a new immutable version.
    Train(TrainArgs),
    /// Register a LightGBM, XGBoost or ONNX model file as a new immutable version.
    Import(ImportArgs),
    /// List models, or the versions of one model.
    List {
        name: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Show one version: algorithm, signature, metrics, checksum.
    Show {
        /// NAME@VERSION
        model: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

pub(super) fn execute(command: ModelCommand) -> Result<ExitCode> {
    match command {
        ModelCommand::Train(args) => super::train::execute(&args),
        ModelCommand::Import(args) => super::import::execute(&args),
        ModelCommand::List { name, registry } => list(name.as_deref(), &registry),
        ModelCommand::Show { model, registry } => show(&model, &registry),
    }
}

/// The registry a model command works on, and the stores to reach it (and the data) with.
/// Only the shared settings are read: a model can be trained before any job file exists.
fn list(name: Option<&str>, args: &RegistryArgs) -> Result<ExitCode> {
    let (registry, _) = registry(args)?;
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => registry.names()?,
    };
    println!(
        "{:<20} {:>7}  {:<14} {:>9}  {:<32} CREATED",
        "MODEL", "VERSION", "ALGORITHM", "ROWS", "HOLDOUT METRICS"
    );
    for n in names {
        let versions = registry.versions(&n)?;
        if versions.is_empty() {
            bail!("no model named '{n}' in the registry");
        }
        for v in versions {
            let m = registry.manifest(&ModelRef {
                name: n.clone(),
                version: v,
            })?;
            println!(
                "{:<20} {:>7}  {:<14} {:>9}  {:<32} {}",
                m.name,
                m.version,
                m.algorithm.to_string(),
                m.training_rows,
                metrics_line(&m),
                m.created_at.format("%Y-%m-%d %H:%M:%SZ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(spec: &str, args: &RegistryArgs) -> Result<ExitCode> {
    let Some((name, version)) = spec.split_once('@') else {
        bail!("expected NAME@VERSION, for example churn@1");
    };
    let version: u32 = version
        .parse()
        .with_context(|| format!("'{version}' is not a version number"))?;
    let (registry, _) = registry(args)?;
    let loaded = registry.load(&ModelRef {
        name: name.to_string(),
        version,
    })?;
    let m = loaded.manifest;
    if let Some(import) = &m.import {
        show_imported(&m, import);
        return Ok(ExitCode::SUCCESS);
    }
    println!("model       {}@{}", m.name, m.version);
    println!("algorithm   {}", m.algorithm);
    println!(
        "target      {} ({:?}){}",
        m.target,
        m.label_type,
        if m.classes.is_empty() {
            String::new()
        } else {
            format!(", classes {}", m.classes.join(", "))
        }
    );
    println!(
        "trained on  {} ({} rows, {} held out, {} dropped)",
        m.training_data, m.training_rows, m.holdout_rows, m.dropped_rows
    );
    println!("metrics     {}", metrics_line(&m));
    println!(
        "artifact    {} sha256 {} (verified)",
        m.artifact, m.artifact_sha256
    );
    println!("created     {}", m.created_at.to_rfc3339());
    println!("signature");
    for f in &m.preprocessing.features {
        let detail = match f {
            FeatureTransform::Numeric { impute, scale, .. } => format!(
                "numeric{}{}",
                impute
                    .map(|m| format!(", nulls -> {m:.4}"))
                    .unwrap_or_else(|| ", nulls are bad rows".into()),
                scale
                    .map(|(m, s)| format!(", scaled (x - {m:.4}) / {s:.4}"))
                    .unwrap_or_default()
            ),
            FeatureTransform::Categorical { categories, .. } => {
                format!("categorical, one-hot of {}", categories.join(", "))
            }
        };
        println!("  {:<24} {detail}", f.name());
    }
    Ok(ExitCode::SUCCESS)
}

/// `model show` of an imported version: what the file says it is.
fn show_imported(m: &ModelManifest, import: &ImportInfo) {
    println!("model       {}@{}", m.name, m.version);
    println!(
        "format      {}{}",
        import.format,
        import
            .producer
            .as_deref()
            .map(|p| format!(", written by {p}"))
            .unwrap_or_default()
    );
    println!("objective   {}", import.objective);
    if m.classes.is_empty() {
        println!("output      a value (regression)");
    } else {
        println!("classes     {}", m.classes.join(", "));
    }
    println!(
        "trees       {} trees, {} leaves, depth up to {}",
        import.trees, import.leaves, import.max_depth
    );
    println!(
        "compiled    {:.1} KiB in memory",
        import.compiled_bytes as f64 / 1024.0
    );
    println!("imported    from {}", import.source);
    if m.training_data.is_empty() {
        println!(
            "reference   none: runs write no drift report (model import --reference adds one)"
        );
    } else {
        println!(
            "reference   {} ({} rows{})",
            m.training_data,
            m.training_rows,
            if m.metrics.is_empty() {
                String::new()
            } else {
                format!("; metrics on {} rows with '{}'", m.holdout_rows, m.target)
            }
        );
    }
    if !m.metrics.is_empty() {
        println!("metrics     {}", metrics_line(m));
    }
    println!(
        "artifact    {} sha256 {} (verified, compiled)",
        m.artifact, m.artifact_sha256
    );
    println!("created     {}", m.created_at.to_rfc3339());
    println!("features");
    for f in &import.features {
        let kind = match &f.kind {
            InputKind::Numeric => "numeric".to_string(),
            InputKind::Categorical { categories: None } => "categorical, integer codes".to_string(),
            InputKind::Categorical {
                categories: Some(c),
            } => format!("categorical, strings coded as pandas did: {}", c.join(", ")),
            InputKind::Text => "text".to_string(),
        };
        println!("  {:<24} {kind}", f.name);
    }
}
