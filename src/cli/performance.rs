//! `nightshift evaluate` (realized performance of committed dates, once their labels are in)
//! and `nightshift performance show | history` (the reports it wrote).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use clap::{Args, Subcommand};

use super::{load_config, parse_date, pick_report};
use crate::performance::{self, render, report};
use crate::storage::Stores;

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Name of the job (it needs a [labels] table).
    pub job: String,
    /// One logical date.
    #[arg(long, value_parser = parse_date, conflicts_with_all = ["from", "to"], required_unless_present_all = ["from", "to"])]
    pub date: Option<NaiveDate>,
    /// First date of a range (with --to).
    #[arg(long, value_parser = parse_date, requires = "to")]
    pub from: Option<NaiveDate>,
    /// Last date of a range, included.
    #[arg(long, value_parser = parse_date, requires = "from")]
    pub to: Option<NaiveDate>,
    /// Folder of job files.
    #[arg(long, default_value = "jobs")]
    pub jobs: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum PerformanceCommand {
    /// The performance report of one date: coverage, metrics against the holdout, reliability.
    Show {
        /// Name of the job.
        job: String,
        /// Logical date (default: the latest evaluated date).
        #[arg(long, value_parser = parse_date)]
        date: Option<NaiveDate>,
        /// Also write a self-contained HTML page with the reliability diagram.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Folder of job files.
        #[arg(long, default_value = "jobs")]
        jobs: PathBuf,
    },
    /// Every evaluated date of a job: its metrics, one line a date.
    History {
        /// Name of the job.
        job: String,
        /// Folder of job files.
        #[arg(long, default_value = "jobs")]
        jobs: PathBuf,
    },
}

/// Evaluates each date and writes its report. A date that cannot be evaluated (not scored,
/// no labels yet) is reported and the others go on; the exit code is 1 if any failed.
pub(super) fn evaluate(args: &EvaluateArgs) -> Result<ExitCode> {
    let cfg = load_config(&args.jobs)?;
    let job = cfg.job(&args.job)?;
    let stores = Stores::new(cfg.settings.s3.clone());
    let reports = stores.locate(&cfg.settings.reports)?;
    let (from, to) = match (args.date, args.from, args.to) {
        (Some(d), _, _) => (d, d),
        (None, Some(f), Some(t)) if f <= t => (f, t),
        (None, Some(f), Some(t)) => bail!("--from {f} is after --to {t}"),
        _ => bail!("give --date, or --from and --to"),
    };
    let mut failed = 0;
    for date in from.iter_days().take_while(|d| *d <= to) {
        let evaluated = performance::evaluate(job, &cfg.settings, &stores, date)
            .and_then(|e| Ok((report::write(&reports, &e)?, e)));
        match evaluated {
            Ok((loc, e)) => {
                print!("{}", render::table(&e));
                println!("report: {}", loc.uri());
                performance::log_to_mlflow(job, &stores, &e);
            }
            Err(e) => {
                failed += 1;
                eprintln!("{} {date}: {e:#}", args.job);
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) fn execute(command: PerformanceCommand) -> Result<ExitCode> {
    match command {
        PerformanceCommand::Show {
            job,
            date,
            html,
            jobs,
        } => show(&job, date, html.as_deref(), &jobs),
        PerformanceCommand::History { job, jobs } => history(&job, &jobs),
    }
}

fn reports_of(job: &str, jobs: &Path) -> Result<Vec<(NaiveDate, crate::storage::Location)>> {
    let cfg = load_config(jobs)?;
    cfg.job(job)?;
    let stores = Stores::new(cfg.settings.s3.clone());
    report::list(&stores.locate(&cfg.settings.reports)?, job)
}

fn show(job: &str, date: Option<NaiveDate>, html: Option<&Path>, jobs: &Path) -> Result<ExitCode> {
    let all = reports_of(job, jobs)?;
    let loc = pick_report(&all, date, "performance", job)?;
    let e = report::read(loc)?;
    print!("{}", render::table(&e));
    if let Some(path) = html {
        std::fs::write(path, render::page(&e))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn history(job: &str, jobs: &Path) -> Result<ExitCode> {
    let all = reports_of(job, jobs)?
        .iter()
        .map(|(_, loc)| report::read(loc))
        .collect::<Result<Vec<_>>>()?;
    print!("{}", render::history_table(job, &all));
    Ok(ExitCode::SUCCESS)
}
