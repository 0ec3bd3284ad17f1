//! `nightshift drift show` and `drift history`: the reports, read and rendered by the drift
//! module; this file only finds them and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::Subcommand;

use super::{load_config, parse_date, pick_report};
use crate::config::Config;
use crate::drift::{history, html, render, report};
use crate::model::ModelSource;
use crate::storage::{Location, Stores};

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

pub(super) fn execute(command: DriftCommand) -> Result<ExitCode> {
    match command {
        DriftCommand::Show {
            job,
            date,
            html,
            jobs,
        } => show(&job, date, html.as_deref(), &jobs),
        DriftCommand::History { job, jobs } => history(&job, &jobs),
    }
}

/// The job's configuration (the job must exist), the stores, and where its reports are.
fn reports_for(job: &str, jobs: &Path) -> Result<(Config, Stores, Location)> {
    let cfg = load_config(jobs)?;
    cfg.job(job)?;
    let stores = Stores::new(cfg.settings.s3.clone());
    let reports = stores.locate(&cfg.settings.reports)?;
    Ok((cfg, stores, reports))
}

fn show(job: &str, date: Option<NaiveDate>, html: Option<&Path>, jobs: &Path) -> Result<ExitCode> {
    let (cfg, stores, reports) = reports_for(job, jobs)?;
    let all = report::list(&reports, job)?;
    let loc = pick_report(&all, date, "drift", job)?;
    let report = report::read(loc)?;
    print!("{}", render::table(&report));

    if let Some(path) = html {
        let source = ModelSource::for_job(cfg.job(job)?, &cfg.settings, &stores)?;
        let page = html::page(&report, &source, &reports)?;
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn history(job: &str, jobs: &Path) -> Result<ExitCode> {
    let (_, _, reports) = reports_for(job, jobs)?;
    let all = history::load(&reports, job)?;
    let dates = history::dates(&all)?;
    let trend = history::trend(&all)?;
    print!("{}", render::history_table(job, &dates, &trend));
    Ok(ExitCode::SUCCESS)
}
