//! The command line: argument types (clap) and what each command prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backfill::{self, DateOutcome, DatePlan, Reprocess};
use crate::config::{self, Config};
use crate::model::{self, Algorithm, Hyperparameters, ModelManifest, Registry, TrainRequest};
use crate::record::RunRecord;
use crate::run::{run_job, RunOptions};
use crate::schema::ModelRef;
use crate::storage::{Stores, Uri};

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
    /// Run every job on its schedule, with an HTTP API for health, metrics, runs and scores.
    Daemon(DaemonArgs),
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// One line per run of a job, newest last: date, status, times, rows, drift, model.
    List {
        /// Name of the job.
        job: String,
        /// Show at most this many (the newest).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only runs with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
        /// Folder of job files.
        #[arg(long, default_value = "jobs")]
        jobs: PathBuf,
    },
    /// One run's whole record, its error included: by run id, or the latest run of JOB DATE.
    Show {
        /// A run id, or a job name followed by a date.
        #[arg(num_args = 1..=2, value_names = ["RUN_ID | JOB", "DATE"])]
        run: Vec<String>,
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
        /// Folder of job files.
        #[arg(long, default_value = "jobs")]
        jobs: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Succeeded,
    Failed,
    Aborted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum DriftCommand {
    /// The drift report of one run: every column's method, statistic and verdict.
    Show {
        /// Name of the job.
        job: String,
        /// Logical date (default: the latest date with a report).
        #[arg(long, value_parser = parse_date)]
        date: Option<NaiveDate>,
        /// Also write a self-contained HTML page with the distributions overlaid.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Folder of job files.
        #[arg(long, default_value = "jobs")]
        jobs: PathBuf,
    },
    /// How each column's drift statistic moved over all dates with a report.
    History {
        /// Name of the job.
        job: String,
        /// Folder of job files.
        #[arg(long, default_value = "jobs")]
        jobs: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Folder of job files (its nightshift.toml holds shared settings); followed for edits.
    #[arg(long, default_value = "jobs")]
    pub jobs: PathBuf,
    /// Address of the HTTP API. Keep it on loopback unless something in front guards it.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Worker threads per run (default: each job's `run.threads`, else one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rows per record batch (default: each job's `run.batch_rows`).
    #[arg(long)]
    pub batch_rows: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of the job (its `name` field).
    pub job: String,
    /// Logical date to score, YYYY-MM-DD.
    #[arg(long, value_parser = parse_date)]
    pub date: NaiveDate,
    /// Folder of job files.
    #[arg(long, default_value = "jobs")]
    pub jobs: PathBuf,
    /// Worker threads (default: the job's `run.threads`, else one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rows per record batch (default: the job's `run.batch_rows`).
    #[arg(long)]
    pub batch_rows: Option<usize>,
    #[command(flatten)]
    pub shard: ShardArgs,
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

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Name of the job (its `name` field).
    pub job: String,
    /// First logical date, YYYY-MM-DD.
    #[arg(long, value_parser = parse_date)]
    pub from: NaiveDate,
    /// Last logical date, YYYY-MM-DD (inclusive).
    #[arg(long, value_parser = parse_date)]
    pub to: NaiveDate,
    /// Dates run at once; each gets its share of the worker threads.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Which dates run again: none skips committed dates and dates whose last run failed;
    /// failed also reruns failed ones; stale reruns dates scored by another model version or
    /// from changed inputs; all reruns every date.
    #[arg(long, value_enum, default_value_t = ReprocessArg::None)]
    pub reprocess: ReprocessArg,
    /// Print the plan (each date's action and why, its inputs, rows and bytes from the
    /// Parquet footers) and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Folder of job files.
    #[arg(long, default_value = "jobs")]
    pub jobs: PathBuf,
    /// Worker threads in all (default: one per core), shared by the dates in flight.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Dates go to shards in turn: date i of the range to shard i mod N.
    #[command(flatten)]
    pub shard: ShardArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReprocessArg {
    None,
    Failed,
    Stale,
    All,
}

impl From<ReprocessArg> for Reprocess {
    fn from(r: ReprocessArg) -> Self {
        match r {
            ReprocessArg::None => Reprocess::None,
            ReprocessArg::Failed => Reprocess::Failed,
            ReprocessArg::Stale => Reprocess::Stale,
            ReprocessArg::All => Reprocess::All,
        }
    }
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Registry location (default: `registry` in JOBS/nightshift.toml, else out/registry/).
    #[arg(long)]
    pub registry: Option<String>,
    /// Folder of job files whose nightshift.toml names the registry.
    #[arg(long, default_value = "jobs")]
    pub jobs: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Train a model on Parquet data and register it as a new immutable version.
    Train(TrainArgs),
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

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training data: a Parquet file or a prefix of them (local path, file:// or s3://).
    #[arg(long)]
    pub data: String,
    /// Target column.
    #[arg(long)]
    pub target: String,
    #[arg(long, value_enum)]
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

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("'{s}' is not a date in the form YYYY-MM-DD"))
}

/// Runs a parsed command line; returns the process exit code.
pub fn execute(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { paths } => validate(&paths),
        Command::Run(args) => run(&args),
        Command::Backfill(args) => backfill(&args),
        Command::Runs(RunsCommand::List {
            job,
            limit,
            status,
            format,
            jobs,
        }) => runs_list(&job, limit, status, format, &jobs),
        Command::Runs(RunsCommand::Show { run, format, jobs }) => runs_show(&run, format, &jobs),
        Command::Model(ModelCommand::Train(args)) => train(&args),
        Command::Model(ModelCommand::List { name, registry }) => {
            list_models(name.as_deref(), &registry)
        }
        Command::Model(ModelCommand::Show { model, registry }) => show_model(&model, &registry),
        Command::Drift(DriftCommand::Show {
            job,
            date,
            html,
            jobs,
        }) => drift_show(&job, date, html.as_deref(), &jobs),
        Command::Drift(DriftCommand::History { job, jobs }) => drift_history(&job, &jobs),
        Command::Daemon(args) => daemon(args),
    }
}

fn validate(paths: &[PathBuf]) -> Result<ExitCode> {
    match config::load(paths) {
        Ok(cfg) => {
            for j in &cfg.jobs {
                println!(
                    "{}: ok ({}, schedule \"{}\" {}, model {})",
                    j.path.display(),
                    j.name,
                    j.schedule.expression,
                    j.timezone,
                    j.model
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            println!("{diags}");
            let files: std::collections::BTreeSet<_> = diags.0.iter().map(|d| &d.path).collect();
            eprintln!("{} error(s) in {} file(s)", diags.0.len(), files.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn load_config(jobs: &PathBuf) -> Result<Config> {
    config::load(std::slice::from_ref(jobs)).map_err(|d| {
        anyhow::anyhow!(
            "invalid job files (run `nightshift validate {}`):\n{d}",
            jobs.display()
        )
    })
}

fn daemon(args: DaemonArgs) -> Result<ExitCode> {
    let cfg = load_config(&args.jobs)?;
    crate::daemon::run(
        cfg,
        crate::daemon::DaemonOptions {
            jobs: args.jobs,
            listen: args.listen,
            threads: args.threads,
            batch_rows: args.batch_rows,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

fn run(args: &RunArgs) -> Result<ExitCode> {
    let cfg = load_config(&args.jobs)?;
    let job = cfg.job(&args.job)?;
    let stores = Stores::new(cfg.settings.s3.clone());
    let shard = match args.shard.index()? {
        None => None,
        Some((index, count)) => {
            let Some(run) = args.shard.shard_run.clone() else {
                bail!("--shards needs --shard-run (or NIGHTSHIFT_SHARD_RUN): a key all shards of this run share");
            };
            Some(crate::shard::Shard::new(index, count, run)?)
        }
    };
    let opts = RunOptions {
        threads: args.threads,
        batch_rows: args.batch_rows,
        cancel: Some(stop_on_signals(
            "stopping: the run is aborted and its outputs removed",
        )?),
        shard,
        ..Default::default()
    };
    match run_job(job, args.date, &cfg.settings, &stores, &opts) {
        Ok(record) => {
            print_summary(&record);
            Ok(ExitCode::SUCCESS)
        }
        Err(failed) => {
            print_summary(&failed.record);
            Err(failed.error)
        }
    }
}

fn backfill(args: &BackfillArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    if args.from > args.to {
        bail!("--from {} is after --to {}", args.from, args.to);
    }
    let cfg = load_config(&args.jobs)?;
    let job = cfg.job(&args.job)?;
    let stores = Stores::new(cfg.settings.s3.clone());
    let mut range = backfill::dates(args.from, args.to);
    if let Some((index, count)) = args.shard.index()? {
        range = range
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % count == index)
            .map(|(_, d)| d)
            .collect();
    }
    let reprocess = Reprocess::from(args.reprocess);
    let plans = backfill::plan(job, &cfg.settings, &stores, &range, reprocess, args.dry_run)?;
    let to_run = plans.iter().filter(|p| p.action.runs()).count();
    println!(
        "{} {}..{} (--reprocess {}): {} dates, {to_run} to run, {} to skip",
        job.name,
        args.from,
        args.to,
        format!("{:?}", args.reprocess).to_lowercase(),
        plans.len(),
        plans.len() - to_run
    );
    if args.dry_run {
        print_plan(&plans);
        return Ok(ExitCode::SUCCESS);
    }
    for p in plans.iter().filter(|p| !p.action.runs()) {
        if let backfill::Action::Skip(why) = &p.action {
            eprintln!("{} skipped: {why}", p.date);
        }
    }

    // Ctrl-C or SIGTERM: no date starts after it, and runs in flight are aborted.
    let cancel = stop_on_signals("stopping: no further date starts; runs in flight are aborted")?;

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(to_run as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} dates  {msg}  elapsed {elapsed}  eta {eta}",
            )
            .expect("valid template"),
        );
        bar
    });
    let rows = AtomicU64::new(0);
    let failures = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let done = |date: NaiveDate, outcome: &DateOutcome| {
        let line = match outcome {
            DateOutcome::Succeeded(r) => {
                rows.fetch_add(r.counts.rows_in, Ordering::SeqCst);
                format!(
                    "{date} succeeded: {} rows in {:.1} s",
                    r.counts.rows_in, r.seconds
                )
            }
            DateOutcome::Failed(f) => {
                failures.fetch_add(1, Ordering::SeqCst);
                format!("{date} {}: {:#}", status_word(&f.record), f.error)
            }
            DateOutcome::NotStarted => format!("{date} not started (stopped)"),
        };
        let rate = rows.load(Ordering::SeqCst) as f64 / started.elapsed().as_secs_f64().max(1e-3);
        match &bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(format!(
                    "{rate:.0} rows/s  failures {}",
                    failures.load(Ordering::SeqCst)
                ));
                if !matches!(outcome, DateOutcome::Succeeded(_)) {
                    bar.println(line);
                }
            }
            None => eprintln!("{line}"),
        }
    };
    let outcomes = backfill::execute(
        job,
        &cfg.settings,
        &stores,
        &plans,
        backfill::Pace {
            parallel: args.parallel,
            threads,
        },
        cancel,
        &done,
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    print_backfill_summary(&plans, &outcomes);
    let bad = outcomes
        .iter()
        .filter(|(_, o)| !matches!(o, DateOutcome::Succeeded(_)))
        .count();
    if bad > 0 {
        bail!("{bad} of {to_run} dates did not succeed (see above; `--reprocess failed` reruns failed ones)");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_history(jobs: &std::path::Path) -> Result<crate::record::RunHistory> {
    let settings = config::load_settings(jobs).map_err(|d| {
        anyhow::anyhow!(
            "invalid settings (run `nightshift validate {}`):\n{d}",
            jobs.display()
        )
    })?;
    let stores = Stores::new(settings.s3.clone());
    Ok(crate::record::RunHistory::new(
        stores.locate(&settings.state)?,
    ))
}

fn runs_list(
    job: &str,
    limit: usize,
    status: Option<StatusArg>,
    format: FormatArg,
    jobs: &std::path::Path,
) -> Result<ExitCode> {
    let history = run_history(jobs)?;
    let wanted = status.map(|s| match s {
        StatusArg::Succeeded => crate::record::RunStatus::Succeeded,
        StatusArg::Failed => crate::record::RunStatus::Failed,
        StatusArg::Aborted => crate::record::RunStatus::Aborted,
    });
    // With a status, older records are read until `limit` of them match.
    let read = if wanted.is_some() {
        usize::MAX / 4
    } else {
        limit
    };
    let mut records: Vec<RunRecord> = history
        .latest(job, read)?
        .into_iter()
        .filter(|r| wanted.is_none_or(|w| r.status == w))
        .collect();
    let skip = records.len().saturating_sub(limit);
    records.drain(..skip);
    if format == FormatArg::Json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        println!(
            "no runs of {job}{}",
            if wanted.is_some() {
                " with that status"
            } else {
                ""
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10}  {:<9}  {:<20}  {:>8}  {:>10}  {:<8}  {:<10}  run",
        "date", "status", "started (UTC)", "seconds", "rows", "drift", "model"
    );
    for r in &records {
        let drift = match &r.drift {
            Some(d) if d.drift_detected => "DRIFT",
            Some(_) => "no",
            None => "-",
        };
        println!(
            "{:<10}  {:<9}  {:<20}  {:>8.2}  {:>10}  {drift:<8}  {:<10}  {}",
            r.logical_date,
            status_word(r),
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            r.seconds,
            r.counts.rows_in,
            r.model,
            r.run_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn runs_show(run: &[String], format: FormatArg, jobs: &std::path::Path) -> Result<ExitCode> {
    let history = run_history(jobs)?;
    let record = match run {
        [id] => history
            .find(id)?
            .with_context(|| format!("no run record with id {id}"))?,
        [job, date] => {
            let date = parse_date(date).map_err(anyhow::Error::msg)?;
            history
                .latest_of_date(job, date)?
                .with_context(|| format!("no run of {job} for {date}"))?
        }
        _ => bail!("give a run id, or a job name and a date"),
    };
    if format == FormatArg::Json {
        println!("{}", serde_json::to_string_pretty(&record)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_summary(&record);
    println!("  started           {}", record.started_at);
    println!("  finished          {}", record.finished_at);
    if let Some(state) = record.date_state {
        println!(
            "  date now holds    {}",
            serde_json::to_value(state)?.as_str().unwrap_or_default()
        );
    }
    if record.leftovers_removed > 0 {
        println!("  leftovers removed {:>12}", record.leftovers_removed);
    }
    if let Some(e) = &record.error {
        println!("  error             {e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A flag set by the first SIGTERM or SIGINT (Ctrl-C), after printing `why` on stderr: the
/// run (or backfill) in flight aborts as the daemon's runs do at shutdown, removing what it
/// wrote and releasing its lease, instead of being killed mid-write. In a container the
/// process is PID 1, which gets no default handler for SIGTERM.
fn stop_on_signals(why: &'static str) -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    // Registered before this returns, so a signal from now on is never the default (fatal).
    let (mut term, mut int) = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("nightshift-signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            eprintln!("{why}");
            flag.store(true, Ordering::SeqCst);
        })
        .context("starting the signal handler")?;
    Ok(cancel)
}

fn status_word(r: &RunRecord) -> String {
    format!("{:?}", r.status).to_lowercase()
}

fn print_plan(plans: &[DatePlan]) {
    println!(
        "{:<10}  {:<6}  {:>6}  {:>12}  {:>10}  why",
        "date", "action", "inputs", "rows", "MiB"
    );
    let (mut inputs, mut rows, mut bytes) = (0, 0, 0);
    for p in plans {
        let (action, why) = match &p.action {
            backfill::Action::Run(w) => ("run", w),
            backfill::Action::Skip(w) => ("skip", w),
        };
        let r = p.rows.unwrap_or(0);
        if p.action.runs() {
            inputs += p.inputs;
            rows += r;
            bytes += p.bytes;
        }
        println!(
            "{:<10}  {action:<6}  {:>6}  {:>12}  {:>10.2}  {why}",
            p.date,
            p.inputs,
            r,
            p.bytes as f64 / (1 << 20) as f64
        );
    }
    println!(
        "{:<10}  {:<6}  {inputs:>6}  {rows:>12}  {:>10.2}  (the dates that run)",
        "total",
        "",
        bytes as f64 / (1 << 20) as f64
    );
}

fn print_backfill_summary(plans: &[DatePlan], outcomes: &[(NaiveDate, DateOutcome)]) {
    println!(
        "{:<10}  {:<11}  {:>10}  {:>8}  detail",
        "date", "status", "rows", "seconds"
    );
    let by_date: std::collections::HashMap<_, _> = outcomes.iter().map(|(d, o)| (*d, o)).collect();
    let (mut ok, mut failed, mut skipped) = (0, 0, 0);
    for p in plans {
        let (status, rows, seconds, detail) = match (by_date.get(&p.date), &p.action) {
            (None, backfill::Action::Skip(why)) => {
                skipped += 1;
                (
                    "skipped".to_string(),
                    String::new(),
                    String::new(),
                    why.clone(),
                )
            }
            (None, _) | (Some(DateOutcome::NotStarted), _) => {
                failed += 1;
                (
                    "not started".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                )
            }
            (Some(DateOutcome::Succeeded(r)), _) => {
                ok += 1;
                (
                    "succeeded".into(),
                    r.counts.rows_in.to_string(),
                    format!("{:.2}", r.seconds),
                    format!("run {}", r.run_id),
                )
            }
            (Some(DateOutcome::Failed(f)), _) => {
                failed += 1;
                (
                    status_word(&f.record),
                    String::new(),
                    format!("{:.2}", f.record.seconds),
                    format!("{:#}", f.error),
                )
            }
        };
        println!(
            "{:<10}  {status:<11}  {rows:>10}  {seconds:>8}  {detail}",
            p.date
        );
    }
    println!("{ok} succeeded, {failed} failed or stopped, {skipped} skipped");
}

/// The run summary users read after `run`.
pub fn print_summary(r: &RunRecord) {
    let c = &r.counts;
    let status = format!("{:?}", r.status).to_lowercase();
    println!(
        "{} {} {status} (run {}, model {})",
        r.job, r.logical_date, r.run_id, r.model
    );
    if r.status != crate::record::RunStatus::Succeeded {
        // A failed run's outputs are removed and its counts are not final; the error (on
        // stderr) and the run record say what happened.
        println!("  partitions        {:>12}", r.partitions);
        println!("  seconds           {:>12.3}", r.seconds);
        return;
    }
    println!("  partitions        {:>12}", r.partitions);
    println!("  rows read         {:>12}", c.rows_in);
    println!("  rows scored       {:>12}", c.rows_scored);
    let q = r
        .quarantine
        .as_deref()
        .filter(|_| c.rows_quarantined > 0)
        .map(|q| format!("  -> {q}"))
        .unwrap_or_default();
    println!("  rows quarantined  {:>12}{q}", c.rows_quarantined);
    println!("  rows skipped      {:>12}", c.rows_skipped);
    if c.unknown_categories > 0 {
        println!(
            "  unknown categories{:>12}  (encoded as all zeros)",
            c.unknown_categories
        );
    }
    if let Some(d) = &r.drift {
        let columns = if d.drifted_columns.is_empty() {
            "no column".to_string()
        } else {
            d.drifted_columns.join(", ")
        };
        println!(
            "  drift             {columns}; dataset drift {} ({:.0}% of columns); prediction drift {}",
            if d.drift_detected { "DETECTED" } else { "no" },
            d.share_of_drifted_columns * 100.0,
            match d.prediction_drift {
                Some(true) => "DETECTED",
                Some(false) => "no",
                None => "n/a",
            }
        );
    }
    println!(
        "  seconds           {:>12.3}  ({:.0} rows/s)",
        r.seconds,
        r.rows_per_second()
    );
    if let Some(o) = &r.output {
        println!("  output            {o}");
    }
    if let Some(s) = &r.shard {
        let date = if r.date_state == Some(crate::record::DateState::Committed) {
            "the last shard: the date is committed"
        } else {
            "the date's _SUCCESS waits for the other shards"
        };
        println!(
            "  shard             {} of {} (run {}): {date}",
            s.index, s.count, s.run
        );
    }
}

/// The registry a model command works on, and the stores to reach it (and the data) with.
/// Only the shared settings are read: a model can be trained before any job file exists.
fn registry(args: &RegistryArgs) -> Result<(Registry, Stores)> {
    let settings = config::load_settings(&args.jobs).map_err(|d| {
        anyhow::anyhow!(
            "invalid settings (run `nightshift validate {}`):\n{d}",
            args.jobs.display()
        )
    })?;
    let uri = match &args.registry {
        Some(r) => Uri::parse(r)?,
        None => settings.registry.clone(),
    };
    let stores = Stores::new(settings.s3.clone());
    Ok((Registry::new(stores.locate(&uri)?), stores))
}

fn train(args: &TrainArgs) -> Result<ExitCode> {
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

fn metrics_line(m: &ModelManifest) -> String {
    m.metrics
        .iter()
        .map(|(k, v)| format!("{k}={v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn list_models(name: Option<&str>, args: &RegistryArgs) -> Result<ExitCode> {
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

fn show_model(spec: &str, args: &RegistryArgs) -> Result<ExitCode> {
    let Some((name, version)) = spec.split_once('@') else {
        bail!("expected NAME@VERSION, for example churn@1");
    };
    let version: u32 = version
        .parse()
        .with_context(|| format!("'{version}' is not a version number"))?;
    let (registry, _) = registry(args)?;
    let m = registry
        .load(&ModelRef {
            name: name.to_string(),
            version,
        })?
        .manifest;
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
            model::FeatureTransform::Numeric { impute, scale, .. } => format!(
                "numeric{}{}",
                impute
                    .map(|m| format!(", nulls -> {m:.4}"))
                    .unwrap_or_else(|| ", nulls are bad rows".into()),
                scale
                    .map(|(m, s)| format!(", scaled (x - {m:.4}) / {s:.4}"))
                    .unwrap_or_default()
            ),
            model::FeatureTransform::Categorical { categories, .. } => {
                format!("categorical, one-hot of {}", categories.join(", "))
            }
        };
        println!("  {:<24} {detail}", f.name());
    }
    Ok(ExitCode::SUCCESS)
}

fn reports_for(job: &str, jobs: &PathBuf) -> Result<(Config, Stores, crate::storage::Location)> {
    let cfg = load_config(jobs)?;
    cfg.job(job)?;
    let stores = Stores::new(cfg.settings.s3.clone());
    let reports = stores.locate(&cfg.settings.reports)?;
    Ok((cfg, stores, reports))
}

fn drift_show(
    job: &str,
    date: Option<NaiveDate>,
    html: Option<&std::path::Path>,
    jobs: &PathBuf,
) -> Result<ExitCode> {
    use crate::drift::{history, report};
    use polars::prelude::DataType;

    let (cfg, stores, reports) = reports_for(job, jobs)?;
    let all = history::load(&reports, job)?;
    let dates = history::dates(&all)?;
    let date = match date {
        Some(d) if dates.contains(&d) => d,
        Some(d) => bail!(
            "no drift report for {job} on {d}; reports exist for {}",
            dates
                .iter()
                .map(NaiveDate::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => *dates.last().expect("load found at least one report"),
    };
    let df = history::for_date(&all, date)?;
    let s = |name: &str| {
        df.column(name)
            .and_then(|c| c.cast(&DataType::String))
            .map(|c| c.str().expect("cast to string").clone())
    };
    let f = |name: &str| {
        df.column(name)
            .and_then(|c| c.cast(&DataType::Float64))
            .map(|c| c.f64().expect("cast to f64").clone())
    };
    let (column, ctype, method, run_id, model, version) = (
        s("column")?,
        s("column_type")?,
        s("method")?,
        s("run_id")?,
        s("model_name")?,
        s("model_version")?,
    );
    let (stat, p, threshold, rnull, cnull) = (
        f("statistic")?,
        f("p_value")?,
        f("threshold")?,
        f("reference_null_rate")?,
        f("current_null_rate")?,
    );
    let drift = df.column("drift_detected")?.bool()?.clone();
    println!(
        "drift report: {job} {date} (run {}, model {}@{})",
        run_id.get(0).unwrap_or("-"),
        model.get(0).unwrap_or("-"),
        version.get(0).unwrap_or("-")
    );
    println!(
        "{:<20} {:<12} {:<14} {:>11} {:>11} {:>10}  {:<6} NULLS REF -> CUR",
        "COLUMN", "TYPE", "METHOD", "STATISTIC", "P-VALUE", "THRESHOLD", "DRIFT"
    );
    let num = |x: Option<f64>| match x {
        Some(v) if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
        None => "-".into(),
    };
    let mut verdict = String::new();
    for i in 0..df.height() {
        let name = column.get(i).unwrap_or("");
        let detected = drift.get(i).unwrap_or(false);
        if name == crate::drift::DATASET_ROW {
            verdict = format!(
                "dataset drift: {} ({:.0}% of columns drifted; threshold {:.0}%)",
                if detected { "DETECTED" } else { "not detected" },
                stat.get(i).unwrap_or(0.0) * 100.0,
                threshold.get(i).unwrap_or(0.0) * 100.0
            );
            continue;
        }
        println!(
            "{:<20} {:<12} {:<14} {:>11} {:>11} {:>10}  {:<6} {:.2}% -> {:.2}%",
            name,
            ctype.get(i).unwrap_or(""),
            method.get(i).unwrap_or(""),
            num(stat.get(i)),
            num(p.get(i)),
            num(threshold.get(i)),
            if detected { "YES" } else { "no" },
            rnull.get(i).unwrap_or(0.0) * 100.0,
            cnull.get(i).unwrap_or(0.0) * 100.0
        );
    }
    println!("{verdict}");

    if let Some(path) = html {
        let job_spec = cfg.job(job)?;
        let registry = Registry::new(stores.locate(job_spec.registry(&cfg.settings))?);
        let model_ref = ModelRef {
            name: model.get(0).unwrap_or_default().to_string(),
            version: version
                .get(0)
                .unwrap_or("0")
                .parse()
                .context("model version in the report")?,
        };
        let manifest = registry.manifest(&model_ref)?;
        let reference = registry
            .profile(&manifest)?
            .context("the model version has no reference profile")?;
        let loc = report::profile_location(&reports, job, date);
        let current: crate::profile::DatasetProfile =
            serde_json::from_slice(&loc.store.get(&loc.key)?)
                .with_context(|| format!("reading {}", loc.uri()))?;
        let rows = crate::drift::report::rows_of(&df)?;
        let title = format!("Drift: {job} {date} (model {model_ref})");
        std::fs::write(
            path,
            crate::drift::html::render(&title, &rows, &reference, &current),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn drift_history(job: &str, jobs: &PathBuf) -> Result<ExitCode> {
    use crate::drift::history;
    use polars::prelude::DataType;

    let (_, _, reports) = reports_for(job, jobs)?;
    let all = history::load(&reports, job)?;
    let dates = history::dates(&all)?;
    let t = history::trend(&all)?;
    let s = |name: &str| {
        t.column(name)
            .and_then(|c| c.cast(&DataType::String))
            .map(|c| c.str().expect("cast to string").clone())
    };
    let f = |name: &str| {
        t.column(name)
            .and_then(|c| c.cast(&DataType::Float64))
            .map(|c| c.f64().expect("cast to f64").clone())
    };
    let (column, ctype, method, n, drifted) = (
        s("column")?,
        s("column_type")?,
        s("method")?,
        s("dates")?,
        s("drifted")?,
    );
    let (first, last, max, change) = (f("first")?, f("last")?, f("max")?, f("change")?);
    let values = t.column("values")?.list()?.clone();
    println!(
        "drift history: {job}, {} dates from {} to {}",
        dates.len(),
        dates.first().map(NaiveDate::to_string).unwrap_or_default(),
        dates.last().map(NaiveDate::to_string).unwrap_or_default()
    );
    println!(
        "{:<20} {:<12} {:<14} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9}  TREND",
        "COLUMN", "TYPE", "METHOD", "DATES", "DRIFTED", "FIRST", "LAST", "MAX", "CHANGE"
    );
    for i in 0..t.height() {
        let series: Vec<Option<f64>> = values
            .get_as_series(i)
            .and_then(|s| s.cast(&DataType::Float64).ok())
            .map(|s| s.f64().expect("cast to f64").iter().collect())
            .unwrap_or_default();
        println!(
            "{:<20} {:<12} {:<14} {:>5} {:>7} {:>9.4} {:>9.4} {:>9.4} {:>+9.4}  {}",
            column.get(i).unwrap_or(""),
            ctype.get(i).unwrap_or(""),
            method.get(i).unwrap_or(""),
            n.get(i).unwrap_or(""),
            drifted.get(i).unwrap_or(""),
            first.get(i).unwrap_or(f64::NAN),
            last.get(i).unwrap_or(f64::NAN),
            max.get(i).unwrap_or(f64::NAN),
            change.get(i).unwrap_or(f64::NAN),
            history::sparkline(&series)
        );
    }
    Ok(ExitCode::SUCCESS)
}
