//! The job-file and settings fields only the daemon reads: how a job behaves when ticks
//! overlap, what it catches up after a restart, how it retries; and the daemon's shared limits.
//!
//! Read field by field like the rest of the file, so their mistakes are reported with the
//! others, each at its line and column.

use std::time::Duration;

use serde::Deserialize;

use super::diag::Reporter;
use super::file::{Located, Table};

/// What a tick does while an earlier run of the same job is still going (or waiting to start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// The tick is skipped, logged and counted (`nightshift_ticks_skipped_total`).
    #[default]
    Forbid,
    /// The tick waits; the job's runs start one after another, in order.
    Queue,
    /// The runs overlap (within `max_concurrent_runs`); never two runs of the same date.
    Allow,
}

/// How the daemon schedules one job. The defaults suit a daily job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduling {
    /// `concurrency`: "forbid" (default), "queue" or "allow".
    pub concurrency: Concurrency,
    /// How many missed logical dates to run at start-up: `catchup_limit` (default 1, the latest
    /// only); 0 when `catchup = false`.
    pub catchup_limit: usize,
    /// `retries`: further attempts after a failed one (default 0).
    pub retries: u32,
    /// `retry_backoff`: the wait before the first retry, doubled for each further one
    /// (default "30s").
    pub retry_backoff: Duration,
}

impl Default for Scheduling {
    fn default() -> Self {
        Self {
            concurrency: Concurrency::Forbid,
            catchup_limit: 1,
            retries: 0,
            retry_backoff: Duration::from_secs(30),
        }
    }
}

impl Scheduling {
    /// The wait before attempt `attempt` (2 is the first retry): backoff x 2^(attempt - 2).
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(20);
        self.retry_backoff.saturating_mul(1 << doublings)
    }
}

/// Limits shared by every job of the daemon, from `nightshift.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// `max_concurrent_runs`: runs at once across all jobs (default 2).
    pub max_concurrent_runs: usize,
    /// `shutdown_grace`: how long a stopping daemon lets running runs finish before it aborts
    /// them (default "30s").
    pub shutdown_grace: Duration,
    /// `evaluate_every`: how often the daemon looks for committed dates whose labels are
    /// complete (jobs with `[labels]`) and evaluates them (default "10m").
    pub evaluate_every: Duration,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            max_concurrent_runs: 2,
            shutdown_grace: Duration::from_secs(30),
            evaluate_every: Duration::from_secs(600),
        }
    }
}

/// Reads the daemon's fields of a job file's root table.
pub(super) fn read_scheduling(rep: &mut Reporter, root: &mut Table) -> Scheduling {
    let mut s = Scheduling::default();
    if let Some(c) = root.optional(rep, "concurrency") {
        s.concurrency = c.value;
    }
    let catchup: Option<Located<bool>> = root.optional(rep, "catchup");
    if let Some(l) = root.optional::<usize>(rep, "catchup_limit") {
        if l.value == 0 || l.value > 1000 {
            rep.error(
                l.span,
                "catchup_limit must be between 1 and 1000 (use catchup = false to catch up nothing)",
            );
        }
        s.catchup_limit = l.value;
    }
    if catchup.is_some_and(|c| !c.value) {
        s.catchup_limit = 0;
    }
    if let Some(r) = root.optional::<u32>(rep, "retries") {
        if r.value > 100 {
            rep.error(r.span, "retries must be at most 100");
        }
        s.retries = r.value;
    }
    if let Some(b) = read_duration(rep, root, "retry_backoff") {
        s.retry_backoff = b;
    }
    s
}

/// Reads the daemon's fields of `nightshift.toml`.
pub(super) fn read_daemon_settings(rep: &mut Reporter, root: &mut Table) -> DaemonSettings {
    let mut s = DaemonSettings::default();
    if let Some(m) = root.optional::<usize>(rep, "max_concurrent_runs") {
        if m.value == 0 || m.value > 1024 {
            rep.error(m.span, "max_concurrent_runs must be between 1 and 1024");
        }
        s.max_concurrent_runs = m.value;
    }
    if let Some(g) = read_duration(rep, root, "shutdown_grace") {
        s.shutdown_grace = g;
    }
    if let Some(e) = read_duration(rep, root, "evaluate_every") {
        s.evaluate_every = e.max(Duration::from_millis(100));
    }
    s
}

pub(super) fn read_duration(
    rep: &mut Reporter,
    t: &mut Table,
    key: &'static str,
) -> Option<Duration> {
    let v: Located<String> = t.optional(rep, key)?;
    match parse_duration(&v.value) {
        Some(d) => Some(d),
        None => {
            rep.error(
                v.span,
                format!(
                    "field '{key}': invalid duration '{}'; use a number and a unit, e.g. \"500ms\", \"30s\", \"5m\", \"1h\"",
                    v.value
                ),
            );
            None
        }
    }
}

/// "500ms", "30s", "5m", "2h", "1d": a whole number and one unit.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn backoff_doubles() {
        let s = Scheduling {
            retry_backoff: Duration::from_secs(30),
            ..Scheduling::default()
        };
        assert_eq!(s.backoff_before(2), Duration::from_secs(30));
        assert_eq!(s.backoff_before(3), Duration::from_secs(60));
        assert_eq!(s.backoff_before(4), Duration::from_secs(120));
    }
}
