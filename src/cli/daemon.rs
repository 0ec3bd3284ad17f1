//! `nightshift daemon`: every job on its schedule, with the HTTP API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::load_config;
use crate::daemon::{self, DaemonOptions};

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Folder of job files (its nightshift.toml holds shared settings); followed for edits.
    #[arg(long, default_value = "jobs")]
    pub jobs: PathBuf,
    /// Address of the HTTP API. Keep it on loopback unless something in front guards it.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Worker threads per run (default: each job's `run.threads`, else one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rows per record batch (default: each job's `run.batch_rows`).
    #[arg(long)]
    pub batch_rows: Option<usize>,
}

pub(super) fn execute(args: DaemonArgs) -> Result<ExitCode> {
    let cfg = load_config(&args.jobs)?;
    daemon::run(
        cfg,
        DaemonOptions {
            jobs: args.jobs,
            listen: args.listen,
            threads: args.threads,
            batch_rows: args.batch_rows,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
