//! When a job fires and which logical dates it missed: pure functions of a job, its run
//! records and an instant, so they are tested without waiting.
//!
//! Ticks are computed by croner in the job's IANA time zone, with the `Cron` parsed at
//! validation. Around a DST change:
//! - a fixed-time schedule (`30 2 * * *`) whose local time does not exist that night (clocks
//!   skip 02:00-03:00) fires once, at the first valid instant after the gap (03:00 local);
//! - a fixed-time schedule whose local time happens twice (clocks go back 03:00 -> 02:00)
//!   fires once, at the first occurrence;
//! - an interval schedule (`*/30 * * * *`, `0 * * * *`) skips the instants in the gap and
//!   fires at both occurrences of the repeated hour.
//!
//! The logical date of a tick is the tick's local calendar date plus the job's date rule.

use chrono::{DateTime, NaiveDate, Utc};

use crate::config::JobSpec;
use crate::record::{RunRecord, RunStatus};

/// The first tick strictly after `after`; `None` if the schedule never matches again.
pub fn next_tick(job: &JobSpec, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    job.schedule
        .cron
        .find_next_occurrence(&after.with_timezone(&job.timezone), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The last tick strictly before `before`.
pub fn previous_tick(job: &JobSpec, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
    job.schedule
        .cron
        .find_previous_occurrence(&before.with_timezone(&job.timezone), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The logical date a tick at `tick` scores.
pub fn logical_date(job: &JobSpec, tick: DateTime<Utc>) -> NaiveDate {
    crate::plan::logical_date(job, tick)
}

/// Ticks looked at, at most, when searching back for missed dates (a minutely job missing
/// 1000 days stops here rather than walk 1.4 million ticks).
const MAX_TICKS_BACK: usize = 100_000;

/// The logical dates a job missed while the daemon was down, oldest first: at most `limit`
/// (the latest ones) of those after its last finished date, and every date whose last run was
/// aborted, whatever the limit.
///
/// A date is missed when a tick at or before `now` would have scored it and it is later than
/// every date the job has a finished (succeeded or failed) run record of. Aborted runs do not
/// count as done: a date whose last run was aborted (a shutdown interrupted it) runs again,
/// whichever date it is, an older one that a trigger or catch-up was running included. A job
/// without any record has never run under this state location and catches up nothing
/// (backfills are explicit: `nightshift run` or `POST /jobs/NAME/runs`).
pub fn missed_dates(
    job: &JobSpec,
    records: &[RunRecord],
    now: DateTime<Utc>,
    limit: usize,
) -> Vec<NaiveDate> {
    if records.is_empty() {
        return Vec::new();
    }
    let mut dates = if limit == 0 {
        Vec::new()
    } else {
        dates_after_last_done(job, records, now, limit)
    };
    // Dates whose latest run was aborted, wherever they are.
    let mut latest: std::collections::HashMap<NaiveDate, &RunRecord> = Default::default();
    for r in records {
        let e = latest.entry(r.logical_date).or_insert(r);
        if r.started_at >= e.started_at {
            *e = r;
        }
    }
    dates.extend(
        latest
            .into_values()
            .filter(|r| r.status == RunStatus::Aborted)
            .map(|r| r.logical_date),
    );
    dates.sort();
    dates.dedup();
    dates
}

fn dates_after_last_done(
    job: &JobSpec,
    records: &[RunRecord],
    now: DateTime<Utc>,
    limit: usize,
) -> Vec<NaiveDate> {
    let done = records
        .iter()
        .filter(|r| r.status != RunStatus::Aborted)
        .map(|r| r.logical_date)
        .max();
    let floor = match done {
        Some(d) => d,
        None => {
            let first_aborted = records.iter().map(|r| r.logical_date).min();
            match first_aborted.and_then(|d| d.pred_opt()) {
                Some(d) => d,
                None => return Vec::new(),
            }
        }
    };
    let mut dates: Vec<NaiveDate> = Vec::new();
    // Inclusive of `now`: a tick due this very second is the scheduler's, not a missed one,
    // but it is the same date either way and the scheduler skips a date already waiting.
    let mut cursor = now + chrono::Duration::seconds(1);
    for _ in 0..MAX_TICKS_BACK {
        let Some(tick) = previous_tick(job, cursor) else {
            break;
        };
        let date = logical_date(job, tick);
        if date <= floor {
            break;
        }
        if dates.last() != Some(&date) {
            dates.push(date);
            if dates.len() == limit {
                break;
            }
        }
        cursor = tick;
    }
    dates.reverse();
    dates
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn job(schedule: &str, tz: &str) -> JobSpec {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.toml");
        std::fs::write(
            &path,
            format!(
                r#"name = "j"
schedule = "{schedule}"
timezone = "{tz}"
[input]
uri = "in/dt={{date}}/"
[model]
name = "m"
version = 1
[output]
uri = "out/dt={{date}}/"
"#
            ),
        )
        .unwrap();
        crate::config::load(&[path]).unwrap().jobs.remove(0)
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn next_tick_follows_the_time_zone_through_summer_time() {
        let j = job("30 2 * * *", "Europe/Berlin");
        // Winter: 02:30 CET is 01:30 UTC; summer: 02:30 CEST is 00:30 UTC.
        assert_eq!(
            next_tick(&j, utc(2026, 3, 1, 12, 0)),
            Some(utc(2026, 3, 2, 1, 30))
        );
        assert_eq!(
            next_tick(&j, utc(2026, 6, 1, 12, 0)),
            Some(utc(2026, 6, 2, 0, 30))
        );
    }
}
