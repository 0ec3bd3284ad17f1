//! `nightshift validate`: every job file checked, every error as path:line:col: message.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::config;

pub(super) fn execute(paths: &[PathBuf]) -> Result<ExitCode> {
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
            let files: BTreeSet<_> = diags.0.iter().map(|d| &d.path).collect();
            eprintln!("{} error(s) in {} file(s)", diags.0.len(), files.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
