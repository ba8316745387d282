//! Capacity search (`load-tester capacity`): step the closed-model load up
//! until a criterion breaks. The report gives the highest load that held
//! (the "Load Capacity" KPI), the first resource to saturate with its
//! evidence (pool, CPU, cache hit rate, errors) and what to scale.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared_types::{Check, Measurement, Report, Verdict};

use crate::model::LoadModel;
use crate::watch::ServiceWatch;
use crate::{LoadError, LoadTest};

/// How the load is stepped.
#[derive(Debug, Clone, Copy)]
pub struct CapacityPlan {
    /// Users of the first step.
    pub start_users: usize,
    /// Users added per step.
    pub step_users: usize,
    /// Largest step.
    pub max_users: usize,
    /// Length of each step at full load.
    pub step_duration: Duration,
}

/// One step of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Users.
    pub users: usize,
    /// Throughput.
    pub rps: f64,
    /// p95 in ms.
    pub p95_ms: f64,
    /// p99 in ms.
    pub p99_ms: f64,
    /// Failed share.
    pub error_rate: f64,
    /// Whether every criterion held.
    pub held: bool,
    /// The criteria that failed.
    pub failed: Vec<String>,
    /// Resources near saturation, with evidence.
    pub saturation: Vec<String>,
}

/// Runs the steps and judges them.
pub async fn search(base: &LoadTest, plan: &CapacityPlan) -> Result<Report, LoadError> {
    crate::preflight(&base.options.target, base.options.timeout).await?;
    let mut steps = Vec::new();
    let mut users = plan.start_users;
    while users <= plan.max_users {
        let mut test = base.clone();
        test.options.model = LoadModel::Closed {
            users,
            hatch_rate: users as f64,
            duration_secs: plan.step_duration.as_secs().max(1),
            ramp_down_secs: 0,
        };
        test.baseline = None;
        let report = Box::pin(crate::run(&test)).await?;
        let data = crate::report::RunData::from_report(&report).map_err(LoadError::CouldNotRun)?;
        let s = data.stats.overall().summary(data.stats.duration_secs);
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| {
                format!("{} (observed {})", c.criterion, c.observed.clone().unwrap_or_default())
            })
            .collect();
        let mut saturation = saturation(&data.services, &report);
        if s.error_rate > 0.001 {
            let kinds = data.stats.overall().errors_by_kind;
            let top: Vec<String> = kinds.iter().map(|(k, v)| format!("{k} × {v}")).collect();
            saturation.push(format!(
                "errors: {:.2} % of requests ({})",
                s.error_rate * 100.0,
                top.join(", ")
            ));
        }
        let held = failed.is_empty();
        eprintln!(
            "capacity: {users} users: {:.0} req/s, p95 {:.1} ms, p99 {:.1} ms, errors {:.2} % -> {}",
            s.rps,
            s.p95_ms,
            s.p99_ms,
            s.error_rate * 100.0,
            if held { "held" } else { "broke" }
        );
        steps.push(Step {
            users,
            rps: s.rps,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
            error_rate: s.error_rate,
            held,
            failed,
            saturation,
        });
        if !held {
            break;
        }
        users += plan.step_users;
    }
    Ok(judge(&crate::redact(&base.options.target), &steps, plan))
}

/// Resources at their limit in what the watcher saw: the pool above 90 %,
/// CPU above 85 % of this machine's cores, and the cache or a breaker when
/// its criterion failed.
pub fn saturation(services: &[ServiceWatch], report: &Report) -> Vec<String> {
    let failed = |id: &str| report.checks.iter().any(|c| c.id == id && c.verdict == Verdict::Fail);
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let mut out = Vec::new();
    for s in services {
        if let Some(p) = s.pool_utilisation_max.filter(|p| *p >= 0.9 || failed("pool-utilisation"))
        {
            out.push(format!(
                "database connection pool: peak {:.0} % of db_connections_max on {}",
                p * 100.0,
                s.url
            ));
        }
        if let Some(c) = s.cpu_cores_max.filter(|c| *c >= 0.85 * cores) {
            out.push(format!(
                "CPU: peak {c:.2} cores busy (this machine has {cores}) on {}",
                s.url
            ));
        }
        if let Some(r) = s.cache_hit_rate.filter(|_| failed("cache-hit-rate")) {
            out.push(format!("cache: hit rate {:.0} % on {}", r * 100.0, s.url));
        }
        let open: Vec<&String> = s
            .breakers_at_end
            .iter()
            .filter(|(_, st)| st.as_str() != "closed")
            .map(|(d, _)| d)
            .collect();
        if !open.is_empty() && failed("circuit-breakers") {
            out.push(format!("circuit breaker open: {open:?} on {}", s.url));
        }
    }
    out
}

fn recommendation(evidence: &str) -> &'static str {
    if evidence.starts_with("database connection pool") {
        "raise the pool size (and PostgreSQL max_connections) or cut queries per request (the GraphQL N+1); add read replicas for reads"
    } else if evidence.starts_with("CPU") {
        "add replicas (HPA on CPU) or profile the hottest route; CPU is the limit"
    } else if evidence.starts_with("cache") {
        "give Redis more memory or longer TTLs and warm hot keys: misses go to the database"
    } else if evidence.starts_with("circuit breaker") {
        "a dependency failed under load: fix it before scaling the service"
    } else if evidence.starts_with("errors") {
        "read the error kinds: 503 means a dependency or pool timed out, 500 a bug under concurrency"
    } else {
        "latency grew without a saturated resource in the watched metrics: trace the slowest transaction"
    }
}

fn judge(target: &str, steps: &[Step], plan: &CapacityPlan) -> Report {
    let mut report = Report::new("load-tester", env!("CARGO_PKG_VERSION"), target);
    let held = steps.iter().rfind(|s| s.held);
    let broke = steps.iter().find(|s| !s.held);
    let criterion = format!("the first step ({} users) holds every criterion", plan.start_users);
    report.push_check(match (held, broke) {
        (Some(h), Some(b)) => Check::pass("load-capacity", criterion, format!("{} users", h.users))
            .with_detail(format!("broke at {} users: {}", b.users, b.failed.join("; "))),
        (Some(h), None) => Check::pass("load-capacity", criterion, format!("{} users", h.users))
            .with_detail(format!(
                "held up to --max-users {}: no knee found; raise --max-users",
                plan.max_users
            )),
        (None, Some(b)) => {
            Check::fail("load-capacity", criterion, format!("broke at {} users", b.users))
                .with_detail(b.failed.join("; "))
        }
        (None, None) => Check::error("load-capacity", criterion, "no step ran"),
    });
    let first = steps.iter().find(|s| !s.saturation.is_empty()).or(broke);
    let evidence = first.map(|s| {
        let what =
            s.saturation.first().cloned().unwrap_or_else(|| {
                format!("latency: p95 {:.1} ms, p99 {:.1} ms", s.p95_ms, s.p99_ms)
            });
        (s.users, what)
    });
    report.push_check(match &evidence {
        Some((users, what)) => Check::pass(
            "first-saturation",
            "the first resource to saturate is named",
            format!("at {users} users: {what}"),
        )
        .with_detail(format!("recommendation: {}", recommendation(what))),
        None => Check::skipped(
            "first-saturation",
            "the first resource to saturate is named",
            "nothing saturated in the steps run",
        ),
    });
    if let Some(h) = held {
        report.push_measurement(Measurement::new("load_capacity_users", h.users as f64, ""));
        report.push_measurement(Measurement::new("load_capacity_throughput", h.rps, "req/s"));
    }
    report
        .data
        .insert("capacity_steps".to_owned(), serde_json::to_value(steps).unwrap_or_default());
    report.data.insert(
        "recommendations".to_owned(),
        serde_json::to_value(
            steps
                .iter()
                .flat_map(|s| &s.saturation)
                .map(|e| format!("{e}: {}", recommendation(e)))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default(),
    );
    report.finish();
    report
}
