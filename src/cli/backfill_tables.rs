//! The tables `nightshift backfill` prints: the plan (`--dry-run`) and the summary at the end.

use std::collections::HashMap;

use chrono::NaiveDate;

use super::status_word;
use crate::backfill::{Action, DateOutcome, DatePlan};

/// Each date's action and why, its inputs, rows and MiB, and the totals of the dates that run.
pub(super) fn print_plan(plans: &[DatePlan]) {
    println!(
        "{:<10}  {:<6}  {:>6}  {:>12}  {:>10}  why",
        "date", "action", "inputs", "rows", "MiB"
    );
    let (mut inputs, mut rows, mut bytes) = (0, 0, 0);
    for p in plans {
        let (action, why) = match &p.action {
            Action::Run(w) => ("run", w),
            Action::Skip(w) => ("skip", w),
        };
        let r = p.rows.unwrap_or(0);
        if p.action.runs() {
            inputs += p.inputs;
            rows += r;
            bytes += p.bytes;
        }
        println!(
            "{:<10}  {action:<6}  {:>6}  {:>12}  {:>10.2}  {why}",
            p.date,
            p.inputs,
            r,
            p.bytes as f64 / (1 << 20) as f64
        );
    }
    println!(
        "{:<10}  {:<6}  {inputs:>6}  {rows:>12}  {:>10.2}  (the dates that run)",
        "total",
        "",
        bytes as f64 / (1 << 20) as f64
    );
}

/// A line per date of the plan: how it ended, its rows, seconds and run or error.
pub(super) fn print_summary(plans: &[DatePlan], outcomes: &[(NaiveDate, DateOutcome)]) {
    println!(
        "{:<10}  {:<11}  {:>10}  {:>8}  detail",
        "date", "status", "rows", "seconds"
    );
    let by_date: HashMap<_, _> = outcomes.iter().map(|(d, o)| (*d, o)).collect();
    let (mut ok, mut failed, mut skipped) = (0, 0, 0);
    for p in plans {
        let (status, rows, seconds, detail) = match (by_date.get(&p.date), &p.action) {
            (None, Action::Skip(why)) => {
                skipped += 1;
                (
                    "skipped".to_string(),
                    String::new(),
                    String::new(),
                    why.clone(),
                )
            }
            (None, _) | (Some(DateOutcome::NotStarted), _) => {
                failed += 1;
                (
                    "not started".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                )
            }
            (Some(DateOutcome::Succeeded(r)), _) => {
                ok += 1;
                (
                    "succeeded".into(),
                    r.counts.rows_in.to_string(),
                    format!("{:.2}", r.seconds),
                    format!("run {}", r.run_id),
                )
            }
            (Some(DateOutcome::Failed(f)), _) => {
                failed += 1;
                (
                    status_word(&f.record),
                    String::new(),
                    format!("{:.2}", f.record.seconds),
                    format!("{:#}", f.error),
                )
            }
        };
        println!(
            "{:<10}  {status:<11}  {rows:>10}  {seconds:>8}  {detail}",
            p.date
        );
    }
    println!("{ok} succeeded, {failed} failed or stopped, {skipped} skipped");
}
