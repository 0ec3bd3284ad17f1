//! `nightshift run`: one job, one date, now; and the run summary users read after it (also
//! under `runs show`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use chrono::NaiveDate;
use clap::Args;

use super::signals::stop_on_signals;
use super::{load_config, parse_date, ShardArgs};
use crate::record::{DateState, RunRecord, RunStatus};
use crate::run::{run_job, RunOptions};
use crate::shard::Shard;
use crate::storage::Stores;

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

pub(super) fn execute(args: &RunArgs) -> Result<ExitCode> {
    let cfg = load_config(&args.jobs)?;
    let job = cfg.job(&args.job)?;
    let stores = Stores::new(cfg.settings.s3.clone());
    let shard = match args.shard.index()? {
        None => None,
        Some((index, count)) => {
            let Some(run) = args.shard.shard_run.clone() else {
                bail!("--shards needs --shard-run (or NIGHTSHIFT_SHARD_RUN): a key all shards of this run share");
            };
            Some(Shard::new(index, count, run)?)
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

/// The run summary users read after `run`.
pub fn print_summary(r: &RunRecord) {
    let c = &r.counts;
    println!(
        "{} {} {} (run {}, model {})",
        r.job,
        r.logical_date,
        super::status_word(r),
        r.run_id,
        r.model
    );
    if r.status != RunStatus::Succeeded {
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
            "  unknown categories{:>12}  (not seen in training)",
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
    if let Some(why) = &r.no_drift_report {
        println!("  drift             no report: {why}");
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
        let date = if r.date_state == Some(DateState::Committed) {
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
