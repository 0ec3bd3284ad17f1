//! `nightshift runs list` and `runs show`: the run history, read from the run records.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};

use super::{load_settings, parse_date, print_summary, status_word};
use crate::record::{RunHistory, RunRecord, RunStatus};
use crate::storage::Stores;

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

pub(super) fn execute(command: RunsCommand) -> Result<ExitCode> {
    match command {
        RunsCommand::List {
            job,
            limit,
            status,
            format,
            jobs,
        } => list(&job, limit, status, format, &jobs),
        RunsCommand::Show { run, format, jobs } => show(&run, format, &jobs),
    }
}

fn run_history(jobs: &Path) -> Result<RunHistory> {
    let settings = load_settings(jobs)?;
    let stores = Stores::new(settings.s3.clone());
    Ok(RunHistory::new(stores.locate(&settings.state)?))
}

fn list(
    job: &str,
    limit: usize,
    status: Option<StatusArg>,
    format: FormatArg,
    jobs: &Path,
) -> Result<ExitCode> {
    let history = run_history(jobs)?;
    let wanted = status.map(|s| match s {
        StatusArg::Succeeded => RunStatus::Succeeded,
        StatusArg::Failed => RunStatus::Failed,
        StatusArg::Aborted => RunStatus::Aborted,
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

fn show(run: &[String], format: FormatArg, jobs: &Path) -> Result<ExitCode> {
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
