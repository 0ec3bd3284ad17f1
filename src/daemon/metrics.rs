//! The daemon's Prometheus metrics, defined once here: where a lifecycle event is counted is
//! where it is logged (the scheduler calls these next to its `info!`/`warn!`).
//!
//! Exposed at `GET /metrics` in the Prometheus text format (0.0.4).

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::record::{MlflowLog, RunRecord, RunStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobStatusLabels {
    pub job: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobReasonLabels {
    pub job: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobColumnLabels {
    pub job: String,
    pub column: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobMetricLabels {
    pub job: String,
    pub metric: String,
    /// `realized` (from the labels) or `estimated` (CBPE).
    pub source: String,
}

/// The performance gauges, registered together with the first evaluation.
struct PerformanceGauges {
    value: Family<JobMetricLabels, FloatGauge>,
    degraded: Family<JobLabel, Gauge>,
    date: Family<JobLabel, FloatGauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn duration_histogram() -> Histogram {
    // 1 s to about 9 hours.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    runs: Family<JobStatusLabels, Counter>,
    run_duration: Family<JobLabel, Histogram, fn() -> Histogram>,
    rows_scored: Family<JobLabel, Counter>,
    rows_quarantined: Family<JobLabel, Counter>,
    last_success: Family<JobLabel, FloatGauge>,
    next_run: Family<JobLabel, FloatGauge>,
    ticks_skipped: Family<JobReasonLabels, Counter>,
    scheduler_lag: Histogram,
    runs_active: Gauge,
    reloads: Family<OutcomeLabel, Counter>,
    mlflow_log_failures: Family<JobLabel, Counter>,
    /// Registered on first use: absent until run records carry drift results.
    drift: Mutex<Option<Family<JobColumnLabels, Gauge>>>,
    /// Registered on first use: absent until a date is evaluated.
    performance: Mutex<Option<PerformanceGauges>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let runs = Family::<JobStatusLabels, Counter>::default();
        r.register(
            "nightshift_runs",
            "Runs finished, by job and status (succeeded, failed, aborted)",
            runs.clone(),
        );
        let run_duration = Family::<JobLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        r.register(
            "nightshift_run_duration_seconds",
            "Wall time of finished runs",
            run_duration.clone(),
        );
        let rows_scored = Family::<JobLabel, Counter>::default();
        r.register(
            "nightshift_rows_scored",
            "Rows scored by succeeded runs",
            rows_scored.clone(),
        );
        let rows_quarantined = Family::<JobLabel, Counter>::default();
        r.register(
            "nightshift_rows_quarantined",
            "Rows quarantined by succeeded runs",
            rows_quarantined.clone(),
        );
        let last_success = Family::<JobLabel, FloatGauge>::default();
        r.register(
            "nightshift_last_success_timestamp_seconds",
            "When the job's last succeeded run finished (Unix time)",
            last_success.clone(),
        );
        let next_run = Family::<JobLabel, FloatGauge>::default();
        r.register(
            "nightshift_next_run_timestamp_seconds",
            "The job's next scheduled tick (Unix time)",
            next_run.clone(),
        );
        let ticks_skipped = Family::<JobReasonLabels, Counter>::default();
        r.register(
            "nightshift_ticks_skipped",
            "Ticks that started no run, by job and reason",
            ticks_skipped.clone(),
        );
        let mlflow_log_failures = Family::<JobLabel, Counter>::default();
        r.register(
            "nightshift_mlflow_log_failures",
            "Committed runs that could not be logged to MLflow ([mlflow] in the job file)",
            mlflow_log_failures.clone(),
        );
        let scheduler_lag = Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]);
        r.register(
            "nightshift_scheduler_lag_seconds",
            "How late ticks fired after their scheduled instant",
            scheduler_lag.clone(),
        );
        let runs_active = Gauge::default();
        r.register(
            "nightshift_runs_active",
            "Runs in progress",
            runs_active.clone(),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        r.register(
            "nightshift_config_reloads",
            "Reloads of the jobs folder, by outcome (ok, invalid)",
            reloads.clone(),
        );
        Self {
            registry: Mutex::new(r),
            runs,
            run_duration,
            rows_scored,
            rows_quarantined,
            last_success,
            next_run,
            ticks_skipped,
            scheduler_lag,
            runs_active,
            reloads,
            mlflow_log_failures,
            drift: Mutex::new(None),
            performance: Mutex::new(None),
        }
    }

    fn job(job: &str) -> JobLabel {
        JobLabel {
            job: job.to_string(),
        }
    }

    /// A run finished (any status).
    pub fn run_finished(&self, r: &RunRecord) {
        self.runs
            .get_or_create(&JobStatusLabels {
                job: r.job.clone(),
                status: r.status.to_string(),
            })
            .inc();
        let job = Self::job(&r.job);
        self.run_duration.get_or_create(&job).observe(r.seconds);
        if matches!(r.mlflow_log, Some(MlflowLog::Failed { .. })) {
            self.mlflow_log_failures.get_or_create(&job).inc();
        }
        if r.status == RunStatus::Succeeded {
            self.rows_scored
                .get_or_create(&job)
                .inc_by(r.counts.rows_scored);
            self.rows_quarantined
                .get_or_create(&job)
                .inc_by(r.counts.rows_quarantined);
            self.last_success(&r.job, r.finished_at);
        }
        if let Some(d) = &r.drift {
            for c in &d.columns {
                self.drift_detected(&r.job, c, d.drifted_columns.contains(c));
            }
            if let Some(p) = d.prediction_drift {
                self.drift_detected(&r.job, crate::profile::SCORE_COLUMN, p);
            }
            self.drift_detected(&r.job, crate::drift::DATASET_ROW, d.drift_detected);
        }
    }

    /// The last success known for a job (also set at start-up from its run records).
    pub fn last_success(&self, job: &str, at: DateTime<Utc>) {
        let g = self.last_success.get_or_create(&Self::job(job));
        let t = at.timestamp_millis() as f64 / 1000.0;
        if t > g.get() {
            g.set(t);
        }
    }

    pub fn next_run(&self, job: &str, at: Option<DateTime<Utc>>) {
        match at {
            Some(t) => {
                self.next_run
                    .get_or_create(&Self::job(job))
                    .set(t.timestamp() as f64);
            }
            None => {
                self.next_run.remove(&Self::job(job));
            }
        }
    }

    /// A job left the configuration: its per-job gauges go (counters stay, as counters do).
    pub fn job_removed(&self, job: &str) {
        self.next_run.remove(&Self::job(job));
        self.performance(job, None);
    }

    pub fn tick_skipped(&self, job: &str, reason: &str) {
        self.ticks_skipped
            .get_or_create(&JobReasonLabels {
                job: job.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn ticks_skipped(&self, job: &str, reason: &str) -> u64 {
        self.ticks_skipped
            .get(&JobReasonLabels {
                job: job.to_string(),
                reason: reason.to_string(),
            })
            .map_or(0, |c| c.get())
    }

    pub fn tick_fired(&self, lag_seconds: f64) {
        self.scheduler_lag.observe(lag_seconds.max(0.0));
    }

    pub fn runs_active(&self, n: usize) {
        self.runs_active.set(n as i64);
    }

    pub fn reloaded(&self, ok: bool) {
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: if ok { "ok" } else { "invalid" }.into(),
            })
            .inc();
    }

    /// A job's latest evaluated date (`None`: it has none, or no longer has `[labels]`): its
    /// realized (and estimated) metrics, whether it is degraded, and which date that is. The
    /// job's series are rebuilt each time, so none outlives the report it came from.
    pub fn performance(&self, job: &str, latest: Option<&crate::performance::Evaluation>) {
        let mut slot = self.performance.lock().expect("metrics lock");
        if slot.is_none() && latest.is_none() {
            return;
        }
        let g = slot.get_or_insert_with(|| {
            let gauges = PerformanceGauges {
                value: Family::default(),
                degraded: Family::default(),
                date: Family::default(),
            };
            let mut r = self.registry.lock().expect("metrics lock");
            r.register(
                "nightshift_performance",
                "The job's latest evaluated date: each metric, realized from the labels or estimated (CBPE)",
                gauges.value.clone(),
            );
            r.register(
                "nightshift_performance_degraded",
                "1 when the job's latest evaluated date is worse than the holdout beyond a tolerance",
                gauges.degraded.clone(),
            );
            r.register(
                "nightshift_performance_date_timestamp_seconds",
                "The logical date of the job's latest evaluation (Unix time of its midnight, UTC)",
                gauges.date.clone(),
            );
            gauges
        });
        let label = Self::job(job);
        for metric in <crate::metric::Metric as strum::IntoEnumIterator>::iter() {
            for source in ["realized", "estimated"] {
                g.value.remove(&JobMetricLabels {
                    job: job.to_string(),
                    metric: metric.to_string(),
                    source: source.to_string(),
                });
            }
        }
        let Some(e) = latest else {
            g.degraded.remove(&label);
            g.date.remove(&label);
            return;
        };
        let day = e
            .logical_date
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp() as f64;
        g.date.get_or_create(&label).set(day);
        g.degraded
            .get_or_create(&label)
            .set(i64::from(!e.degraded().is_empty()));
        for m in &e.metrics {
            for (source, v) in [("realized", m.value), ("estimated", m.estimated)] {
                if let Some(v) = v {
                    g.value
                        .get_or_create(&JobMetricLabels {
                            job: job.to_string(),
                            metric: m.metric.to_string(),
                            source: source.to_string(),
                        })
                        .set(v);
                }
            }
        }
    }

    /// A column's drift verdict in a job's last run (`score` for the model's output,
    /// `__dataset__` for the dataset verdict). The metric appears with the first report.
    pub fn drift_detected(&self, job: &str, column: &str, detected: bool) {
        let mut drift = self.drift.lock().expect("metrics lock");
        let family = drift.get_or_insert_with(|| {
            let f = Family::<JobColumnLabels, Gauge>::default();
            self.registry.lock().expect("metrics lock").register(
                "nightshift_drift_detected",
                "1 when the last run of the job found drift in the column, else 0",
                f.clone(),
            );
            f
        });
        family
            .get_or_create(&JobColumnLabels {
                job: job.to_string(),
                column: column.to_string(),
            })
            .set(i64::from(detected));
    }

    /// Everything, in the Prometheus text format (0.0.4).
    pub fn encode(&self) -> String {
        let mut open_metrics = String::new();
        let registry = self.registry.lock().expect("metrics lock");
        prometheus_client::encoding::text::encode_registry(&mut open_metrics, &registry)
            .expect("writing to a String cannot fail");
        to_prometheus_text(&open_metrics)
    }
}

/// OpenMetrics names a counter family without `_total` and its samples with it; the
/// Prometheus 0.0.4 format names both with it. Also drops the OpenMetrics-only lines.
fn to_prometheus_text(open_metrics: &str) -> String {
    let counters: Vec<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 64);
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_and_drift_appears_on_first_use() {
        let m = Metrics::new();
        m.tick_skipped("a", "overlap");
        let text = m.encode();
        assert!(text.contains("# TYPE nightshift_ticks_skipped_total counter"));
        assert!(text.contains("nightshift_ticks_skipped_total{job=\"a\",reason=\"overlap\"} 1"));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("nightshift_drift_detected"));
        m.drift_detected("a", "plan", true);
        assert!(m
            .encode()
            .contains("nightshift_drift_detected{job=\"a\",column=\"plan\"} 1"));
    }

    #[test]
    fn a_run_that_could_not_be_logged_to_mlflow_is_counted() {
        let m = Metrics::new();
        let record = |log: Option<MlflowLog>| -> RunRecord {
            let mut r: RunRecord = serde_json::from_value(serde_json::json!({
                "job": "a", "logical_date": "2026-11-03", "run_id": "r", "status": "succeeded",
                "started_at": "2026-11-04T02:30:00Z", "finished_at": "2026-11-04T02:30:01Z",
                "seconds": 1.0, "model": "churn@1", "partitions": 1,
                "counts": { "rows_in": 1, "rows_scored": 1, "rows_quarantined": 0,
                            "rows_skipped": 0, "unknown_categories": 0 },
            }))
            .unwrap();
            r.mlflow_log = log;
            r
        };
        m.run_finished(&record(None));
        m.run_finished(&record(Some(MlflowLog::Logged { run_id: "x".into() })));
        assert!(!m.encode().contains("nightshift_mlflow_log_failures_total{"));
        m.run_finished(&record(Some(MlflowLog::Failed {
            error: "down".into(),
        })));
        assert!(m
            .encode()
            .contains("nightshift_mlflow_log_failures_total{job=\"a\"} 1"));
    }
}
