//! Turning a run into the shared [`Report`]: the checks, the headline
//! measurements, and the full statistics under `report.data` (so shards can
//! be merged and runs compared with `--baseline`), plus a Markdown summary
//! with the per-transaction table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared_types::{Check, Measurement, Report};

use crate::model::{LoadModel, Shard};
use crate::slo::Criteria;
use crate::stats::{RunStats, Summary};
use crate::watch::ServiceWatch;

/// Keys of `report.data`.
pub mod keys {
    /// The [`RunData`](super::RunData) of the run: everything needed to merge and compare.
    pub const RUN: &str = "run";
    /// Overall [`Summary`](crate::stats::Summary).
    pub const SUMMARY: &str = "summary";
    /// Per-transaction summaries.
    pub const TRANSACTIONS: &str = "transactions";
    /// Regressions against `--baseline`.
    pub const BASELINE: &str = "baseline";
}

/// What a run report carries beyond checks and measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunData {
    /// How load was applied.
    pub load_model: LoadModel,
    /// The model and latency correction, in words.
    pub load_model_description: String,
    /// Scenario name and where it came from.
    pub scenario: String,
    /// Which shard this is, if the run was sharded; shards merged, when merged.
    pub shards: Vec<Shard>,
    /// The criteria evaluated, as text (`tx:<name>:` prefix for a transaction's).
    pub criteria: Vec<String>,
    /// Full statistics: histograms and the per-second series.
    pub stats: RunStats,
    /// What the watched metrics endpoints showed.
    pub services: Vec<ServiceWatch>,
    /// Why the run stopped early, if it did.
    pub stopped_early: Option<String>,
    /// Requests goose counted itself (cross-check), when its metrics were on.
    pub goose_requests: Option<u64>,
}

impl RunData {
    /// The run data of a report written by this tool.
    pub fn from_report(report: &Report) -> Result<RunData, String> {
        let value = report.data.get(keys::RUN).ok_or_else(|| {
            format!(
                "the report has no `data.{}`: was it written by load-tester run (version {})?",
                keys::RUN,
                env!("CARGO_PKG_VERSION")
            )
        })?;
        serde_json::from_value(value.clone())
            .map_err(|e| format!("its `data.{}` cannot be read: {e}", keys::RUN))
    }
}

/// Criteria as text, for the report.
pub fn criteria_text(criteria: &Criteria) -> Vec<String> {
    criteria
        .gates
        .iter()
        .map(|g| match &g.transaction {
            Some(t) => format!("tx:{t}: {}", g.threshold),
            None => g.threshold.to_string(),
        })
        .collect()
}

/// Criteria back from their text (for merged shards).
pub fn criteria_from_text(lines: &[String]) -> Result<Criteria, String> {
    let mut c = Criteria { gates: Vec::new() };
    let defaults = Criteria::default();
    for line in lines {
        match line.strip_prefix("tx:").and_then(|rest| rest.rsplit_once(": ")) {
            Some((tx, t)) => c.set_for_transaction(tx, t.parse().map_err(|e| format!("{e}"))?)?,
            None => {
                let threshold: shared_types::Threshold =
                    line.parse().map_err(|e| format!("{e}"))?;
                let id = defaults
                    .gates
                    .iter()
                    .find(|g| g.threshold.metric == threshold.metric)
                    .map(|g| g.id.clone());
                c.set(threshold)?;
                if let (Some(id), Some(last)) = (id, c.gates.last_mut()) {
                    last.id = id;
                }
            }
        }
    }
    Ok(c)
}

/// The report of a run (or of merged shards).
pub fn build(
    target: &str,
    data: &RunData,
    criteria: &Criteria,
    baseline: Option<&Report>,
) -> Report {
    let mut report = Report::new("load-tester", env!("CARGO_PKG_VERSION"), target);
    for check in criteria.evaluate(&data.stats, &data.services) {
        report.push_check(check);
    }
    let overall = data.stats.overall();
    let summary = overall.summary(data.stats.duration_secs);
    if let Some(reason) = &data.stopped_early {
        report.push_check(Check::skipped(
            "full-duration",
            "the run lasts its full duration",
            reason.clone(),
        ));
    }
    let regressions = baseline.map(|b| compare(&summary, b));
    if let Some(regressions) = &regressions {
        let criterion =
            "no regression against the baseline (p95/p99 +10 %, rps -10 %, error rate up)";
        report.push_check(match regressions {
            Err(e) => Check::error("baseline", criterion, e.clone()),
            Ok(list) if list.is_empty() => Check::pass("baseline", criterion, "no regression"),
            Ok(list) => Check::fail("baseline", criterion, format!("{} regression(s)", list.len()))
                .with_detail(list.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; ")),
        });
    }
    for m in measurements(&summary, data, &overall) {
        report.push_measurement(m);
    }
    let transactions: BTreeMap<&String, Summary> = data
        .stats
        .transactions
        .iter()
        .map(|(k, t)| (k, t.summary(data.stats.duration_secs)))
        .collect();
    report.data.insert(keys::RUN.to_owned(), serde_json::to_value(data).unwrap_or_default());
    report.data.insert(keys::SUMMARY.to_owned(), serde_json::to_value(summary).unwrap_or_default());
    report.data.insert(
        keys::TRANSACTIONS.to_owned(),
        serde_json::to_value(transactions).unwrap_or_default(),
    );
    if let Some(Ok(list)) = regressions {
        report
            .data
            .insert(keys::BASELINE.to_owned(), serde_json::to_value(list).unwrap_or_default());
    }
    report.finish();
    report
}

fn measurements(
    s: &Summary,
    data: &RunData,
    overall: &crate::stats::TransactionStats,
) -> Vec<Measurement> {
    let mut out = vec![
        Measurement::new("requests_total", s.requests as f64, ""),
        Measurement::new("errors_total", s.errors as f64, ""),
        Measurement::new("error_rate", s.error_rate * 100.0, "%"),
        Measurement::new("throughput", s.rps, "req/s"),
        Measurement::new("latency_p50", s.p50_ms, "ms"),
        Measurement::new("latency_p90", s.p90_ms, "ms"),
        Measurement::new("latency_p95", s.p95_ms, "ms"),
        Measurement::new("latency_p99", s.p99_ms, "ms"),
        Measurement::new("latency_p99_9", s.p999_ms, "ms"),
        Measurement::new("latency_max", s.max_ms, "ms"),
        Measurement::new("duration", data.stats.duration_secs, "s"),
        // Measured concurrency: users running, sampled each second.
        Measurement::new("users_peak", data.stats.users_peak() as f64, ""),
        Measurement::new("users_mean", data.stats.users_mean(), ""),
    ];
    if let Some(service) = &overall.service_time {
        // Without the correction: what a closed-loop tool would have reported.
        out.push(Measurement::new("service_time_p50", service.percentile_ms(50.0), "ms"));
        out.push(Measurement::new("service_time_p90", service.percentile_ms(90.0), "ms"));
        out.push(Measurement::new("service_time_p99", service.percentile_ms(99.0), "ms"));
    }
    match &data.load_model {
        LoadModel::Closed { users, .. } => {
            out.push(Measurement::new("users", *users as f64, ""));
        }
        LoadModel::Staged { stages } => {
            out.push(Measurement::new("users", stages.peak() as f64, ""));
        }
        LoadModel::Open { rate, .. } => {
            let peak = rate.stages.iter().map(|(r, _)| *r).fold(0.0, f64::max);
            out.push(Measurement::new("arrival_rate", peak, "req/s"));
            // What k6 calls dropped iterations: --users capped the requests in flight.
            out.push(Measurement::new("arrivals_late", data.stats.late_arrivals as f64, ""));
            out.push(Measurement::new("arrivals_late_max", data.stats.late_arrival_max_ms, "ms"));
        }
    }
    for s in &data.services {
        let at = s.url.trim_end_matches("/metrics");
        if let Some(r) = s.cache_hit_rate {
            out.push(Measurement::new(format!("cache_hit_rate {at}"), r * 100.0, "%"));
        }
        if let Some(p) = s.pool_utilisation_max {
            out.push(Measurement::new(format!("pool_utilisation_max {at}"), p * 100.0, "%"));
        }
        if let Some(c) = s.cpu_cores_max {
            out.push(Measurement::new(format!("cpu_cores_max {at}"), c, "cores"));
        }
        if let Some(r) = s.rss_bytes_max {
            out.push(Measurement::new(format!("rss_max {at}"), r, "B"));
        }
        // gRPC latency per method, next to the HTTP latency above.
        for method in &s.grpc {
            let name = method.label();
            if let Some(p95) = method.p95_seconds {
                out.push(Measurement::new(format!("grpc_p95 {name} {at}"), p95 * 1000.0, "ms"));
            }
            out.push(Measurement::new(format!("grpc_calls {name} {at}"), method.calls, ""));
            if method.errors > 0.0 {
                out.push(Measurement::new(format!("grpc_errors {name} {at}"), method.errors, ""));
            }
        }
    }
    out
}

/// A headline figure that got worse than the baseline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// `p95_ms`, `p99_ms`, `rps`, `error_rate`.
    pub metric: String,
    /// The baseline's value.
    pub baseline: f64,
    /// This run's value.
    pub current: f64,
}

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let change = if self.baseline != 0.0 {
            format!(" ({:+.0} %)", 100.0 * (self.current / self.baseline - 1.0))
        } else {
            String::new()
        };
        write!(f, "{} {:.4} -> {:.4}{change}", self.metric, self.baseline, self.current)
    }
}

/// Regressions of `current` against a baseline report.
pub fn compare(current: &Summary, baseline: &Report) -> Result<Vec<Regression>, String> {
    let base: Summary = baseline
        .data
        .get(keys::SUMMARY)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| {
            "the baseline report has no load-tester summary (data.summary)".to_owned()
        })?;
    let mut out = Vec::new();
    let mut worse = |metric: &str, b: f64, c: f64, bad: bool| {
        if bad {
            out.push(Regression { metric: metric.to_owned(), baseline: b, current: c });
        }
    };
    // Latency: 10 % and at least 2 ms worse (sub-millisecond noise is no regression).
    worse(
        "p95_ms",
        base.p95_ms,
        current.p95_ms,
        current.p95_ms > base.p95_ms * 1.1 && current.p95_ms - base.p95_ms > 2.0,
    );
    worse(
        "p99_ms",
        base.p99_ms,
        current.p99_ms,
        current.p99_ms > base.p99_ms * 1.1 && current.p99_ms - base.p99_ms > 2.0,
    );
    worse("rps", base.rps, current.rps, current.rps < base.rps * 0.9);
    worse(
        "error_rate",
        base.error_rate,
        current.error_rate,
        current.error_rate > base.error_rate * 1.5 + 0.0005,
    );
    Ok(out)
}

/// The per-transaction table, as Markdown.
pub fn transaction_table(report: &Report) -> String {
    let Ok(data) = RunData::from_report(report) else { return String::new() };
    let mut out = format!("\n{}\n\n", data.load_model_description);
    out.push_str("| transaction | requests | errors | req/s | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut rows: Vec<(String, Summary)> = data
        .stats
        .transactions
        .iter()
        .map(|(k, t)| (k.clone(), t.summary(data.stats.duration_secs)))
        .collect();
    rows.push(("**all**".to_owned(), data.stats.overall().summary(data.stats.duration_secs)));
    for (name, s) in rows {
        out.push_str(&format!(
            "| {name} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            s.requests, s.errors, s.rps, s.p50_ms, s.p95_ms, s.p99_ms, s.p999_ms, s.max_ms
        ));
    }
    let errors: BTreeMap<String, u64> = data.stats.overall().errors_by_kind;
    if !errors.is_empty() {
        out.push_str("\nerrors by kind: ");
        out.push_str(
            &errors.iter().map(|(k, v)| format!("{k} × {v}")).collect::<Vec<_>>().join(", "),
        );
        out.push('\n');
    }
    out
}
