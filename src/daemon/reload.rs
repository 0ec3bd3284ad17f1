//! The jobs folder as the daemon follows it: noticing changes (file names, sizes and
//! modification times, looked at once a second, or SIGHUP) and reloading with the same
//! validation as `nightshift validate`.
//!
//! A reload applies what validates: changed jobs take their new definition, new files add
//! jobs, deleted files remove theirs. A file that no longer validates is reported, every
//! error of it, and the jobs it defined keep their previous definition. Shared settings
//! (`nightshift.toml`) are read at start only; a change to them is reported and waits for a
//! restart.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::{info, warn};

use crate::config::{self, Config, Diagnostics, JobSpec, SETTINGS_FILE};

/// What a reload found.
#[derive(Debug)]
pub struct Reloaded {
    /// The jobs to run from now on.
    pub jobs: Vec<JobSpec>,
    /// What did not validate (the jobs of those files kept their previous definition).
    pub errors: Option<Diagnostics>,
}

/// The followed folder: what it looked like, and the jobs last applied from it.
pub struct JobsFolder {
    dir: PathBuf,
    seen: Vec<(PathBuf, Option<SystemTime>, u64)>,
    jobs: Vec<JobSpec>,
    settings_seen: Option<(Option<SystemTime>, u64)>,
}

impl JobsFolder {
    /// Follows `dir`, whose jobs were just loaded as `cfg`.
    pub fn new(dir: &Path, cfg: &Config) -> Self {
        let mut f = Self {
            dir: dir.to_path_buf(),
            seen: Vec::new(),
            jobs: cfg.jobs.clone(),
            settings_seen: None,
        };
        f.seen = f.look();
        f.settings_seen = f.settings_stamp();
        f
    }

    fn look(&self) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "toml") {
                    // Following symlinks: a Kubernetes ConfigMap swaps their targets.
                    let m = std::fs::metadata(&p).ok();
                    out.push((
                        p,
                        m.as_ref().and_then(|m| m.modified().ok()),
                        m.map_or(0, |m| m.len()),
                    ));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn settings_stamp(&self) -> Option<(Option<SystemTime>, u64)> {
        let m = std::fs::metadata(self.dir.join(SETTINGS_FILE)).ok()?;
        Some((m.modified().ok(), m.len()))
    }

    /// Whether any `*.toml` file was added, removed or changed since the last look.
    pub fn changed(&mut self) -> bool {
        let now = self.look();
        if now != self.seen {
            self.seen = now;
            true
        } else {
            false
        }
    }

    /// Reloads the folder; see the module documentation for what applies.
    pub fn reload(&mut self) -> Reloaded {
        self.seen = self.look();
        let stamp = self.settings_stamp();
        if stamp != self.settings_seen {
            self.settings_seen = stamp;
            warn!(file = %self.dir.join(SETTINGS_FILE).display(), "Shared settings changed; they take effect when the daemon restarts.");
        }
        let (jobs, errors) = match config::load(std::slice::from_ref(&self.dir)) {
            Ok(cfg) => (cfg.jobs, None),
            Err(diags) => (self.partial(&diags), Some(diags)),
        };
        self.jobs = jobs.clone();
        Reloaded { jobs, errors }
    }

    /// The jobs after a reload some files of which did not validate: those of the good files,
    /// and the previous definitions of those of the bad ones.
    fn partial(&self, diags: &Diagnostics) -> Vec<JobSpec> {
        let bad: BTreeSet<&PathBuf> = diags.0.iter().map(|d| &d.path).collect();
        let settings = self.dir.join(SETTINGS_FILE);
        if bad.contains(&settings) || bad.contains(&self.dir) {
            return self.jobs.clone();
        }
        let good: Vec<PathBuf> = self
            .seen
            .iter()
            .map(|(p, _, _)| p.clone())
            .filter(|p| !bad.contains(p) && p.file_name().is_some_and(|n| n != SETTINGS_FILE))
            .collect();
        let mut jobs = if good.is_empty() {
            Vec::new()
        } else {
            match config::load(&good) {
                Ok(cfg) => cfg.jobs,
                // Should not happen (these files were fine a moment ago): keep everything.
                Err(_) => return self.jobs.clone(),
            }
        };
        let mut names: HashSet<String> = jobs.iter().map(|j| j.name.clone()).collect();
        for previous in &self.jobs {
            if bad.contains(&previous.path) && names.insert(previous.name.clone()) {
                jobs.push(previous.clone());
            }
        }
        jobs
    }
}

/// Logs a reload's outcome: every error of every bad file, or the new set of jobs.
pub fn report(r: &Reloaded) {
    match &r.errors {
        None => info!(jobs = r.jobs.len(), "Job files reloaded."),
        Some(diags) => {
            for d in &diags.0 {
                warn!(file = %d.path.display(), line = d.line, col = d.col, error = %d.message, "Invalid job file.");
            }
            warn!(
                jobs = r.jobs.len(),
                errors = diags.0.len(),
                "Job files reloaded with errors; the jobs of invalid files keep their previous definition."
            );
        }
    }
}
