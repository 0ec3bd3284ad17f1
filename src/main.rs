//! The `nightshift` binary: parse the command line, start logging, map the outcome to an exit
//! code. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use nightshift::cli::{execute, Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    nightshift::failpoint::setup_from_env();
    let cli = Cli::parse();
    // Commands print what users need on stdout, so they log only warnings unless asked; the
    // daemon's log (and the pages server's) is its output.
    let daemon = matches!(cli.command, Command::Daemon(_) | Command::Ui(_));
    let default_level = match cli.verbose {
        0 if !daemon => "warn",
        0 | 1 => "warn,nightshift=info",
        2 => "info,nightshift=debug",
        _ => "debug,nightshift=trace",
    };
    let filter =
        EnvFilter::try_from_env("NIGHTSHIFT_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Pretty => builder.compact().init(),
        LogFormat::Json => builder.json().init(),
    }
    let verbose = cli.verbose > 0;
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            if verbose {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
