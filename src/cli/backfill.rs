//! `nightshift backfill`: one job over a range of dates, with its plan, progress and summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::signals::stop_on_signals;
use super::{load_config, parse_date, status_word, ShardArgs};
use crate::backfill::{self, Action, DateOutcome, Pace, Reprocess};
use crate::storage::Stores;

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

pub(super) fn execute(args: &BackfillArgs) -> Result<ExitCode> {
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
        super::backfill_tables::print_plan(&plans);
        return Ok(ExitCode::SUCCESS);
    }
    for p in &plans {
        if let Action::Skip(why) = &p.action {
            eprintln!("{} skipped: {why}", p.date);
        }
    }

    // Ctrl-C or SIGTERM: no date starts after it, and runs in flight are aborted.
    let cancel = stop_on_signals("stopping: no further date starts; runs in flight are aborted")?;

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let progress = Progress::new(to_run);
    let outcomes = backfill::execute(
        job,
        &cfg.settings,
        &stores,
        &plans,
        Pace {
            parallel: args.parallel,
            threads,
        },
        cancel,
        &|date, outcome| progress.done(date, outcome),
    );
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    super::backfill_tables::print_summary(&plans, &outcomes);
    let bad = outcomes
        .iter()
        .filter(|(_, o)| !matches!(o, DateOutcome::Succeeded(_)))
        .count();
    if bad > 0 {
        bail!("{bad} of {to_run} dates did not succeed (see above; `--reprocess failed` reruns failed ones)");
    }
    Ok(ExitCode::SUCCESS)
}

/// What a backfill shows while it runs: a bar on a terminal (with a line for each date that
/// did not succeed), else a line per date on stderr, so logs of a batch job keep them all.
struct Progress {
    bar: Option<ProgressBar>,
    rows: AtomicU64,
    failures: AtomicUsize,
    started: Instant,
}

impl Progress {
    fn new(dates: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(dates as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} dates  {msg}  elapsed {elapsed}  eta {eta}",
                )
                .expect("valid template"),
            );
            bar
        });
        Self {
            bar,
            rows: AtomicU64::new(0),
            failures: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    /// Called from the backfill's threads as each date ends.
    fn done(&self, date: NaiveDate, outcome: &DateOutcome) {
        let line = match outcome {
            DateOutcome::Succeeded(r) => {
                self.rows.fetch_add(r.counts.rows_in, Ordering::SeqCst);
                format!(
                    "{date} succeeded: {} rows in {:.1} s",
                    r.counts.rows_in, r.seconds
                )
            }
            DateOutcome::Failed(f) => {
                self.failures.fetch_add(1, Ordering::SeqCst);
                format!("{date} {}: {:#}", status_word(&f.record), f.error)
            }
            DateOutcome::NotStarted => format!("{date} not started (stopped)"),
        };
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.rows.load(Ordering::SeqCst) as f64 / seconds;
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(format!(
                    "{rate:.0} rows/s  failures {}",
                    self.failures.load(Ordering::SeqCst)
                ));
                if !matches!(outcome, DateOutcome::Succeeded(_)) {
                    bar.println(line);
                }
            }
            None => eprintln!("{line}"),
        }
    }
}
