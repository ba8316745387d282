//! SLO gates: the launch plan's criteria as [`Threshold`]s, overridable by
//! `--threshold` or the scenario file, evaluated into the shared report's
//! [`Check`]s.
//!
//! | check | default | metric names for `--threshold` |
//! |---|---|---|
//! | `p95-latency` | `p95 < 500ms` | `p50`, `p90`, `p95`, `p99`, `p99.9`, `max`, `mean` |
//! | `p99-latency` | `p99 < 1s` | |
//! | `error-rate` | `error_rate < 0.1%` | `error_rate`, `rps`, `requests` |
//! | `users` | none (`--threshold "users >= 10000"`) | peak users running, measured each second |
//! | `duration` | none (`--threshold "duration >= 30m"`) | seconds with at least the `users` criterion's users running (the whole run without one) |
//! | `cache-hit-rate` | `cache_hit_rate > 80%` | |
//! | `circuit-breakers` | `breakers_open == 0`: none open at the end, none open > 60 s at a stretch; every change listed | |
//! | `pool-utilisation` | `pool_utilisation < 90%` (peak) | |
//! | `restarts` | `restarts == 0` | `cpu` (cores, peak), `rss` (bytes, peak) |

use shared_types::{Check, Quantity, Threshold};

use crate::stats::{RunStats, Summary, Totals};
use crate::watch::ServiceWatch;

/// A breaker open longer than this at a stretch counts against
/// `circuit-breakers` even if it closed before the end (the launch plan's
/// recovery budget: auth down, recovered < 60 s).
pub const BREAKER_OPEN_BUDGET_SECS: f64 = 60.0;

/// Metrics of the whole run's latencies and errors.
pub const RUN_METRICS: &[&str] = &[
    "p50",
    "p90",
    "p95",
    "p99",
    "p99.9",
    "max",
    "mean",
    "error_rate",
    "rps",
    "requests",
    "users",
    "duration",
];

/// Run metrics judged on the whole run's concurrency, not on latencies:
/// never per transaction, never mid-run.
const CONCURRENCY_METRICS: &[&str] = &["users", "duration"];
/// Metrics of the watched services.
pub const SERVICE_METRICS: &[&str] =
    &["cache_hit_rate", "breakers_open", "pool_utilisation", "restarts", "cpu", "rss"];

/// One criterion and what it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct SloGate {
    /// Check id in the report.
    pub id: String,
    /// The criterion.
    pub threshold: Threshold,
    /// `None` for the whole run, or the transaction it is limited to.
    pub transaction: Option<String>,
}

/// The criteria of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Criteria {
    /// In report order.
    pub gates: Vec<SloGate>,
}

fn gate(id: &str, text: &str) -> SloGate {
    // The defaults are constants covered by a unit test.
    let threshold = text
        .parse()
        .unwrap_or_else(|_| Threshold::new("invalid", shared_types::Op::Eq, Quantity::count(0.0)));
    SloGate { id: id.to_owned(), threshold, transaction: None }
}

impl Default for Criteria {
    /// The launch plan's success criteria.
    fn default() -> Self {
        Criteria {
            gates: vec![
                gate("p95-latency", "p95 < 500ms"),
                gate("p99-latency", "p99 < 1s"),
                gate("error-rate", "error_rate < 0.1%"),
                gate("cache-hit-rate", "cache_hit_rate > 80%"),
                gate("circuit-breakers", "breakers_open == 0"),
                gate("pool-utilisation", "pool_utilisation < 90%"),
                gate("restarts", "restarts == 0"),
            ],
        }
    }
}

fn check_id(metric: &str) -> String {
    match metric {
        "error_rate" => "error-rate".to_owned(),
        "breakers_open" => "circuit-breakers".to_owned(),
        m if m.starts_with('p') && m[1..].chars().all(|c| c.is_ascii_digit() || c == '.') => {
            format!("{m}-latency")
        }
        m => m.replace('_', "-"),
    }
}

impl Criteria {
    /// Replaces the criterion on the same metric, or adds one. Unknown
    /// metrics are refused with the list of known ones.
    pub fn set(&mut self, threshold: Threshold) -> Result<(), String> {
        let metric = threshold.metric.as_str();
        if !RUN_METRICS.contains(&metric) && !SERVICE_METRICS.contains(&metric) {
            return Err(format!(
                "unknown metric \"{metric}\" in threshold \"{threshold}\": use one of {}, {}",
                RUN_METRICS.join(", "),
                SERVICE_METRICS.join(", ")
            ));
        }
        match self
            .gates
            .iter_mut()
            .find(|g| g.transaction.is_none() && g.threshold.metric == metric)
        {
            Some(g) => g.threshold = threshold,
            None => self.gates.push(SloGate { id: check_id(metric), threshold, transaction: None }),
        }
        Ok(())
    }

    /// Adds a criterion limited to one transaction (check id `tx:<name>:<metric>`).
    pub fn set_for_transaction(
        &mut self,
        transaction: &str,
        threshold: Threshold,
    ) -> Result<(), String> {
        if !RUN_METRICS.contains(&threshold.metric.as_str())
            || CONCURRENCY_METRICS.contains(&threshold.metric.as_str())
        {
            let allowed: Vec<&str> =
                RUN_METRICS.iter().copied().filter(|m| !CONCURRENCY_METRICS.contains(m)).collect();
            return Err(format!(
                "threshold \"{threshold}\" on transaction `{transaction}`: a transaction can be limited on {} only",
                allowed.join(", ")
            ));
        }
        let id = format!("tx:{transaction}:{}", threshold.metric);
        self.gates.retain(|g| g.id != id);
        self.gates.push(SloGate { id, threshold, transaction: Some(transaction.to_owned()) });
        Ok(())
    }

    /// Evaluates every gate.
    pub fn evaluate(&self, stats: &RunStats, services: &[ServiceWatch]) -> Vec<Check> {
        self.gates
            .iter()
            .map(|g| match &g.transaction {
                Some(name) => match stats.transactions.get(name) {
                    Some(t) => run_check(g, &t.summary(stats.duration_secs)),
                    None => Check::error(
                        &g.id,
                        g.threshold.to_string(),
                        format!("transaction `{name}` never completed a request"),
                    ),
                },
                None if CONCURRENCY_METRICS.contains(&g.threshold.metric.as_str()) => {
                    self.concurrency_check(g, stats)
                }
                None if RUN_METRICS.contains(&g.threshold.metric.as_str()) => {
                    run_check(g, &stats.overall().summary(stats.duration_secs))
                }
                None => service_check(g, services),
            })
            .collect()
    }

    /// `users` (peak running) and `duration` (seconds with at least the
    /// `users` criterion's users running, so "10K users for 30 min" is
    /// judged on the time actually held, not the run's length).
    fn concurrency_check(&self, g: &SloGate, stats: &RunStats) -> Check {
        if stats.series.is_empty() {
            return Check::error(
                &g.id,
                g.threshold.to_string(),
                "the run recorded no second: nothing to judge",
            );
        }
        let peak = stats.users_peak();
        if g.threshold.metric == "users" {
            return g.threshold.check(&g.id, Quantity::count(peak as f64)).with_detail(format!(
                "peak users running (sampled each second); {:.1} on average over {} s",
                stats.users_mean(),
                stats.series.len()
            ));
        }
        let users = self
            .gates
            .iter()
            .find(|u| u.transaction.is_none() && u.threshold.metric == "users")
            .map(|u| u.threshold.limit.value);
        let (held, detail) = match users {
            Some(n) => (
                stats.seconds_with_users(n),
                format!(
                    "seconds with at least {n:.0} users running, of a {:.0} s run",
                    stats.duration_secs
                ),
            ),
            None => (
                stats.duration_secs,
                format!(
                    "the whole run (peak {peak} users); add a users criterion to judge time held at a level"
                ),
            ),
        };
        g.threshold.check(&g.id, Quantity::seconds(held)).with_detail(detail)
    }

    /// During a run: the first latency or error gate the totals break, if
    /// any, once enough has been seen (3 s and 50 requests) to judge.
    pub fn breached(&self, totals: &Totals) -> Option<String> {
        if totals.requests < 50 || totals.elapsed.as_secs() < 3 {
            return None;
        }
        let secs = totals.elapsed.as_secs_f64();
        let stats = crate::stats::TransactionStats {
            requests: totals.requests,
            errors: totals.errors,
            latency: totals.latency.clone(),
            ..Default::default()
        };
        let summary = stats.summary(secs);
        self.gates
            .iter()
            .filter(|g| {
                g.transaction.is_none() && RUN_METRICS.contains(&g.threshold.metric.as_str())
            })
            .filter(|g| g.threshold.metric != "rps" && g.threshold.metric != "requests")
            .filter(|g| !CONCURRENCY_METRICS.contains(&g.threshold.metric.as_str()))
            .map(|g| run_check(g, &summary))
            .find(|c| c.verdict == shared_types::Verdict::Fail)
            .map(|c| {
                format!(
                    "{} observed {} after {secs:.0} s",
                    c.criterion,
                    c.observed.unwrap_or_default()
                )
            })
    }
}

fn run_check(g: &SloGate, s: &Summary) -> Check {
    if s.requests == 0 {
        return Check::error(
            &g.id,
            g.threshold.to_string(),
            "no request completed: nothing to judge",
        );
    }
    let observed = match g.threshold.metric.as_str() {
        "p50" => Quantity::millis(s.p50_ms),
        "p90" => Quantity::millis(s.p90_ms),
        "p95" => Quantity::millis(s.p95_ms),
        "p99" => Quantity::millis(s.p99_ms),
        "p99.9" => Quantity::millis(s.p999_ms),
        "max" => Quantity::millis(s.max_ms),
        "mean" => Quantity::millis(s.mean_ms),
        "error_rate" => Quantity::ratio(s.error_rate),
        "rps" => Quantity::count(s.rps),
        _ => Quantity::count(s.requests as f64),
    };
    let check = g.threshold.check(&g.id, observed);
    match g.threshold.metric.as_str() {
        "error_rate" => {
            let detail = format!("{} of {} requests failed", s.errors, s.requests);
            check.with_detail(detail)
        }
        _ => check,
    }
}

fn service_check(g: &SloGate, services: &[ServiceWatch]) -> Check {
    let criterion = g.threshold.to_string();
    let scraped: Vec<&ServiceWatch> = services.iter().filter(|s| s.scrapes > 0).collect();
    if scraped.is_empty() {
        let why = match services.first() {
            None => "no metrics source: pass --metrics-url URL (the target's /metrics is tried by default) or --prometheus URL; or waive with --skip-check ID".to_owned(),
            Some(s) => format!(
                "no scrape of {} succeeded: {}; pass --metrics-url or --prometheus with the service's series, or waive with --skip-check {}",
                s.url,
                s.first_error.clone().unwrap_or_default(),
                g.id
            ),
        };
        return Check::not_evaluated(&g.id, criterion, why);
    }
    let urls = scraped.iter().map(|s| s.url.as_str()).collect::<Vec<_>>().join(", ");
    match g.threshold.metric.as_str() {
        "cache_hit_rate" => {
            let lookups: f64 = scraped.iter().map(|s| s.cache_lookups).sum();
            let hits: f64 =
                scraped.iter().filter_map(|s| Some(s.cache_hit_rate? * s.cache_lookups)).sum();
            if scraped.iter().all(|s| s.cache_hit_rate.is_none()) || lookups == 0.0 {
                return Check::not_evaluated(
                    &g.id,
                    criterion,
                    format!(
                        "no cache lookup seen on {urls} during the run (series cache_hits_total)"
                    ),
                );
            }
            g.threshold
                .check(&g.id, Quantity::ratio(hits / lookups))
                .with_detail(format!("{hits:.0} of {lookups:.0} lookups served from the cache"))
        }
        "breakers_open" => {
            if scraped.iter().all(|s| s.breakers_at_end.is_empty()) {
                return Check::not_evaluated(
                    &g.id,
                    criterion,
                    format!("{urls} exports no circuit_breaker_state series"),
                );
            }
            let open: Vec<String> = scraped
                .iter()
                .flat_map(|s| {
                    s.breakers_at_end
                        .iter()
                        .filter(|(_, st)| st.as_str() != "closed")
                        .map(|(d, st)| format!("{d} {st}"))
                })
                .collect();
            // Stuck: open longer than the plan's recovery budget at a
            // stretch, even if it closed again before the last scrape.
            let stuck: Vec<String> = scraped
                .iter()
                .flat_map(|s| {
                    s.breaker_open_longest
                        .iter()
                        .filter(|(d, secs)| {
                            **secs > BREAKER_OPEN_BUDGET_SECS
                                && s.breakers_at_end.get(*d).is_none_or(|st| st == "closed")
                        })
                        .map(|(d, secs)| format!("{d} open {secs:.0} s"))
                })
                .collect();
            let changes: Vec<String> = scraped
                .iter()
                .flat_map(|s| &s.breaker_changes)
                .map(|c| format!("t={:.1}s {} {}→{}", c.t, c.dependency, c.from, c.to))
                .collect();
            let detail = match (open.is_empty(), changes.is_empty()) {
                (_, true) => "no state change during the run".to_owned(),
                (_, false) => format!("state changes: {}", changes.join("; ")),
            };
            let detail = if open.is_empty() {
                detail
            } else {
                format!("open at the end: {}; {detail}", open.join(", "))
            };
            let detail = if stuck.is_empty() {
                detail
            } else {
                format!(
                    "stuck open longer than {BREAKER_OPEN_BUDGET_SECS:.0} s during the run: {}; {detail}",
                    stuck.join(", ")
                )
            };
            g.threshold
                .check(&g.id, Quantity::count((open.len() + stuck.len()) as f64))
                .with_detail(detail)
        }
        "pool_utilisation" => {
            match scraped.iter().filter_map(|s| s.pool_utilisation_max).reduce(f64::max) {
                Some(peak) => g
                    .threshold
                    .check(&g.id, Quantity::ratio(peak))
                    .with_detail("peak of db_connections_in_use / db_connections_max"),
                None => Check::not_evaluated(
                    &g.id,
                    criterion,
                    format!("{urls} exports no db_connections_in_use / db_connections_max"),
                ),
            }
        }
        "restarts" => {
            // A crash shows as a new process start time, or (through a
            // Prometheus server) as `up` dropping to 0; one crash usually
            // shows both, so the larger count per service is taken.
            let restarts: u64 = scraped.iter().map(|s| s.restarts.max(s.down)).sum();
            let down: u64 = scraped.iter().map(|s| s.down).sum();
            let failed: u64 = scraped.iter().map(|s| s.failed_scrapes).sum();
            let detail = format!(
                "process_start_time_seconds over {} scrapes ({failed} failed){}",
                scraped.iter().map(|s| s.scrapes).sum::<u64>(),
                if down > 0 { format!("; up went to 0 {down} time(s)") } else { String::new() }
            );
            g.threshold.check(&g.id, Quantity::count(restarts as f64)).with_detail(detail)
        }
        "cpu" => match scraped.iter().filter_map(|s| s.cpu_cores_max).reduce(f64::max) {
            Some(peak) => {
                g.threshold.check(&g.id, Quantity::count(peak)).with_detail("peak CPU in cores")
            }
            None => Check::not_evaluated(
                &g.id,
                criterion,
                format!("{urls} exports no process_cpu_seconds_total"),
            ),
        },
        _ => match scraped.iter().filter_map(|s| s.rss_bytes_max).reduce(f64::max) {
            Some(peak) => {
                g.threshold.check(&g.id, Quantity::bytes(peak)).with_detail("peak resident memory")
            }
            None => Check::not_evaluated(
                &g.id,
                criterion,
                format!("{urls} exports no process_resident_memory_bytes"),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_overrides_replace_them() {
        let mut c = Criteria::default();
        assert!(c.gates.iter().all(|g| g.threshold.metric != "invalid"));
        assert_eq!(c.gates[0].threshold.to_string(), "p95 < 500ms");
        c.set("p95<300ms".parse().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.gates[0].threshold.to_string(), "p95 < 300ms");
        c.set("p99.9 < 2s".parse().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.gates.last().map(|g| g.id.as_str()), Some("p99.9-latency"));
        let err = c.set("latency < 1s".parse().unwrap_or_else(|e| panic!("{e}"))).unwrap_err();
        assert!(err.contains("unknown metric \"latency\""), "{err}");
    }

    fn second(n: u64, users: u64) -> crate::stats::SecondStats {
        let mut s: crate::stats::SecondStats = serde_json::from_value(serde_json::json!({
            "second": n, "requests": 1, "errors": 0, "p50_ms": 1.0, "p95_ms": 1.0, "p99_ms": 1.0,
            "latency": crate::histogram::LatencyHistogram::new(),
        }))
        .unwrap();
        s.users = users;
        s
    }

    #[test]
    fn users_and_duration_are_judged_on_measured_concurrency() {
        // Ramp 0→100 over 10 s, hold 100 for 20 s, stop.
        let mut stats = RunStats { duration_secs: 31.0, ..RunStats::default() };
        stats.series = (1..=31)
            .map(|n| {
                second(
                    n,
                    if n <= 10 {
                        n * 10
                    } else if n <= 30 {
                        100
                    } else {
                        0
                    },
                )
            })
            .collect();
        let mut criteria = Criteria { gates: Vec::new() };
        criteria.set("users >= 100".parse().unwrap()).unwrap();
        criteria.set("duration >= 25s".parse().unwrap()).unwrap();
        let checks = criteria.evaluate(&stats, &[]);
        assert_eq!(checks[0].verdict, shared_types::Verdict::Pass, "{:?}", checks[0]);
        // 21 s at 100 users (second 10 and 11-30), not the run's 31 s.
        assert_eq!(checks[1].verdict, shared_types::Verdict::Fail, "{:?}", checks[1]);
        assert!(checks[1].observed.as_deref().unwrap_or("").starts_with("21"), "{:?}", checks[1]);
        criteria.set("users >= 200".parse().unwrap()).unwrap();
        let checks = criteria.evaluate(&stats, &[]);
        assert_eq!(checks[0].verdict, shared_types::Verdict::Fail, "peak was 100: {:?}", checks[0]);
        assert!(criteria.clone().set_for_transaction("x", "users >= 1".parse().unwrap()).is_err());
    }

    #[test]
    fn a_breaker_open_longer_than_the_budget_fails_even_if_it_closed() {
        let watch = ServiceWatch {
            url: "http://s/metrics".into(),
            scrapes: 90,
            breakers_at_end: [("redis".to_owned(), "closed".to_owned())].into_iter().collect(),
            breaker_open_longest: [("redis".to_owned(), 75.0)].into_iter().collect(),
            ..ServiceWatch::default()
        };
        let checks =
            Criteria::default().evaluate(&RunStats::default(), std::slice::from_ref(&watch));
        let c = checks.iter().find(|c| c.id == "circuit-breakers").unwrap();
        assert_eq!(c.verdict, shared_types::Verdict::Fail, "{c:?}");
        assert!(c.detail.as_deref().unwrap_or("").contains("redis open 75 s"), "{c:?}");
        let brief = ServiceWatch {
            breaker_open_longest: [("redis".to_owned(), 20.0)].into_iter().collect(),
            ..watch
        };
        let checks = Criteria::default().evaluate(&RunStats::default(), &[brief]);
        let c = checks.iter().find(|c| c.id == "circuit-breakers").unwrap();
        assert_eq!(c.verdict, shared_types::Verdict::Pass, "{c:?}");
    }

    #[test]
    fn service_checks_are_not_evaluated_without_a_scrape() {
        let checks = Criteria::default().evaluate(&RunStats::default(), &[]);
        for id in ["cache-hit-rate", "circuit-breakers", "pool-utilisation", "restarts"] {
            let verdict = checks.iter().find(|c| c.id == id).map(|c| c.verdict);
            assert_eq!(verdict, Some(shared_types::Verdict::NotEvaluated), "{id}");
        }
        let p95 = checks.iter().find(|c| c.id == "p95-latency").map(|c| c.verdict);
        assert_eq!(p95, Some(shared_types::Verdict::Error));
    }
}
