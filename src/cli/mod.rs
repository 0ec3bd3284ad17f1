//! The command line: the clap argument types and the dispatch; each command, its own
//! arguments and what it prints are in a file of their own.

mod backfill;
mod backfill_tables;
mod daemon;
mod drift;
mod import;
mod model;
mod performance;
mod run;
mod runs;
mod signals;
mod train;
mod ui;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, Settings};
use crate::model::{ModelManifest, Registry};
use crate::storage::{Stores, Uri};

pub use backfill::{BackfillArgs, ReprocessArg};
pub use daemon::DaemonArgs;
pub use drift::DriftCommand;
pub use import::ImportArgs;
pub use model::ModelCommand;
pub use performance::{EvaluateArgs, PerformanceCommand};
pub use run::{print_summary, RunArgs};
pub use runs::{FormatArg, RunsCommand, StatusArg};
pub use train::TrainArgs;
pub use ui::UiArgs;

/// Scheduled batch scoring of machine-learning models over Parquet.
#[derive(Debug, Parser)]
#[command(name = "nightshift", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log more (-v info, -vv debug, -vvv trace); errors show their whole chain.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check job files and print every error as path:line:col: message.
    Validate {
        /// Job files or folders of them (a folder's nightshift.toml holds shared settings).
        #[arg(default_value = "jobs")]
        paths: Vec<PathBuf>,
    },
    /// Run one job now for one logical date.
    Run(RunArgs),
    /// Run one job over a range of logical dates: plan, progress, resume by running again.
    Backfill(BackfillArgs),
    /// The run history: one line per run, or one run's whole record.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Train, list and inspect model versions in the registry.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Read drift reports: one date as a table (or an HTML page), or the trend over dates.
    #[command(subcommand)]
    Drift(DriftCommand),
    /// Realized performance: join committed scores with their labels, measure, compare with
    /// the holdout, and write the performance report (jobs with [labels]).
    Evaluate(EvaluateArgs),
    /// Read performance reports: one date as a table (or an HTML page), or every date.
    #[command(subcommand)]
    Performance(PerformanceCommand),
    /// Run every job on its schedule, with an HTTP API for health, metrics, runs and scores.
    Daemon(DaemonArgs),
    /// Serve the daemon's web pages read-only, from the job files alone (no scheduling).
    Ui(UiArgs),
}

/// Splitting work over processes (Kubernetes Indexed Jobs, AWS Batch array jobs).
#[derive(Debug, Args)]
pub struct ShardArgs {
    /// Split the work over this many processes; this one does its share (see --shard-index).
    #[arg(long)]
    pub shards: Option<u32>,
    /// This process's share, 0-based (default: JOB_COMPLETION_INDEX, as Kubernetes Indexed
    /// Jobs set it).
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    pub shard_index: Option<u32>,
    /// A key shared by all shards of one sharded run (`run` only; in Kubernetes the Job's
    /// uid, from the pod label batch.kubernetes.io/controller-uid).
    #[arg(long, env = "NIGHTSHIFT_SHARD_RUN")]
    pub shard_run: Option<String>,
}

impl ShardArgs {
    /// (index, count) when sharded.
    fn index(&self) -> Result<Option<(u32, u32)>> {
        let Some(count) = self.shards else {
            return Ok(None);
        };
        let Some(index) = self.shard_index else {
            bail!("--shards {count} needs --shard-index (or JOB_COMPLETION_INDEX)");
        };
        if index >= count {
            bail!("--shard-index {index} is not in 0..{count}");
        }
        Ok(Some((index, count)))
    }
}

/// Runs a parsed command line; returns the process exit code.
pub fn execute(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { paths } => validate::execute(&paths),
        Command::Run(args) => run::execute(&args),
        Command::Backfill(args) => backfill::execute(&args),
        Command::Runs(command) => runs::execute(command),
        Command::Model(command) => model::execute(command),
        Command::Drift(command) => drift::execute(command),
        Command::Evaluate(args) => performance::evaluate(&args),
        Command::Performance(command) => performance::execute(command),
        Command::Daemon(args) => daemon::execute(args),
        Command::Ui(args) => ui::execute(args),
    }
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("'{s}' is not a date in the form YYYY-MM-DD"))
}

/// The report of `date` among a job's reports (oldest first), or the latest; otherwise an error
/// that lists the dates there are. `what` names the report ("drift", "performance").
fn pick_report<'a>(
    all: &'a [(NaiveDate, crate::storage::Location)],
    date: Option<NaiveDate>,
    what: &str,
    job: &str,
) -> Result<&'a crate::storage::Location> {
    let found = match date {
        None => all.last(),
        Some(d) => all.iter().find(|(date, _)| *date == d),
    };
    match found {
        Some((_, loc)) => Ok(loc),
        None => bail!(
            "no {what} report for {job} on {}; reports exist for {}",
            date.map_or_else(|| "any date".to_string(), |d| d.to_string()),
            all.iter()
                .map(|(d, _)| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The job files of a folder, every one valid, or the errors and how to see them one by one.
fn load_config(jobs: &Path) -> Result<Config> {
    config::load(&[jobs.to_path_buf()]).map_err(|d| {
        anyhow::anyhow!(
            "invalid job files (run `nightshift validate {}`):\n{d}",
            jobs.display()
        )
    })
}

/// Only the shared settings of a folder (its nightshift.toml), for the commands that need no
/// job: a model can be trained, and the run history read, before any job file is valid.
fn load_settings(jobs: &Path) -> Result<Settings> {
    config::load_settings(jobs).map_err(|d| {
        anyhow::anyhow!(
            "invalid settings (run `nightshift validate {}`):\n{d}",
            jobs.display()
        )
    })
}

/// A run's status as users read it.
fn status_word(r: &crate::record::RunRecord) -> String {
    r.status.to_string()
}

/// Where `model` commands (list, show, train, import) find the registry.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Registry location (default: `registry` in JOBS/nightshift.toml, else out/registry/).
    #[arg(long)]
    pub registry: Option<String>,
    /// Folder of job files whose nightshift.toml names the registry.
    #[arg(long, default_value = "jobs")]
    pub jobs: PathBuf,
}

/// The registry of `args`, and the stores it opened.
fn registry(args: &RegistryArgs) -> Result<(Registry, Stores)> {
    let settings = load_settings(&args.jobs)?;
    let uri = match &args.registry {
        Some(r) => Uri::parse(r)?,
        None => settings.registry.clone(),
    };
    let stores = Stores::new(settings.s3.clone());
    Ok((Registry::new(stores.locate(&uri)?), stores))
}

/// The holdout metrics on one line, `name=value` each.
fn metrics_line(m: &ModelManifest) -> String {
    m.metrics
        .iter()
        .map(|(k, v)| format!("{k}={v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}
