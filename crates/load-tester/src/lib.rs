//! Does the marketplace hold 10,000 concurrent users at P95 < 500 ms and
//! P99 < 1 s, and where is the knee? `load-tester` drives a target with
//! scenarios written in YAML (or Rust), on the [`goose`] load-testing
//! library, measures every request into HDR histograms, watches the target's
//! Prometheus metrics while it runs, and judges the launch plan's criteria
//! into the shared [`Report`].
//!
//! - [`scenario`]: the YAML scenario file (weighted scenarios, HTTP and
//!   GraphQL transactions, feeds, think time, sign-in with token reuse) and
//!   the built-in marketplace scenario.
//! - [`model`]: closed model (users, hatch rate, duration, ramp-down) and open
//!   model (arrival rate, coordinated-omission corrected), `--shard K/N`.
//! - [`runner`]: the goose attack; [`transaction`]: one request, timed.
//! - [`histogram`], [`stats`]: exact, mergeable HDR histograms per
//!   transaction and overall, errors by kind, a per-second series.
//! - [`watch`]: scraping Prometheus text endpoints during the run.
//! - [`slo`]: the criteria; [`report`], [`html`]: JSON, Markdown, HTML.
//! - [`capacity`]: step the load up until a criterion breaks.
//!
//! | check | default criterion |
//! |---|---|
//! | `p95-latency`, `p99-latency` | `p95 < 500ms`, `p99 < 1s` |
//! | `error-rate` | `error_rate < 0.1%` |
//! | `cache-hit-rate` | `cache_hit_rate > 80%` (from `cache_hits_total` / lookups) |
//! | `circuit-breakers` | `breakers_open == 0` at the end; every state change listed |
//! | `pool-utilisation` | `pool_utilisation < 90%` (peak of `db_connections_in_use / max`) |
//! | `restarts` | `restarts == 0` (`process_start_time_seconds` unchanged) |
//!
//! Every criterion is overridable (`--threshold 'p95<300ms'`, or `thresholds:`
//! in the scenario file, also per transaction).
//!
//! ```no_run
//! # async fn example() -> Result<(), load_tester::LoadError> {
//! use std::time::Duration;
//! use load_tester::{LoadTest, model::LoadModel, scenario::ScenarioPlan};
//!
//! let model = LoadModel::Closed { users: 50, hatch_rate: 25.0, duration_secs: 10, ramp_down_secs: 0 };
//! let test = LoadTest::new("http://127.0.0.1:8080", ScenarioPlan::built_in(), model);
//! let report = load_tester::run(&test).await?;
//! println!("{}", report.to_json_pretty());
//! std::process::exit(report.exit_code().code());
//! # }
//! ```

pub mod capacity;
pub mod grpc;
pub mod histogram;
pub mod html;
pub mod model;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod siwe;
pub mod slo;
pub mod stats;
pub mod template;
pub mod transaction;
pub mod watch;

use std::time::Duration;

use shared_types::{Report, Threshold};

use crate::model::{LoadModel, Shard};
use crate::report::RunData;
use crate::runner::RunOptions;
use crate::scenario::ScenarioPlan;
use crate::slo::Criteria;
use crate::watch::{MetricMapping, WatchOptions};

/// Why a run could not give a verdict: bad flags, scenario or configuration
/// (exit 2) or a target that could not be used (exit 3).
pub use shared_types::ToolError as LoadError;

/// A load test: what to run, and how to judge it.
#[derive(Debug, Clone)]
pub struct LoadTest {
    /// The run itself.
    pub options: RunOptions,
    /// This run's part of a distributed run, if any (`options.model` is the whole run's).
    pub shard: Option<Shard>,
    /// A previous report to flag regressions against.
    pub baseline: Option<Report>,
}

impl LoadTest {
    /// A test of `target` with `plan` under `model`, the launch plan's
    /// criteria plus the plan's own, the target's `/metrics` watched every
    /// second, a 30 s request timeout.
    pub fn new(target: &str, plan: ScenarioPlan, model: LoadModel) -> LoadTest {
        let target = target.trim_end_matches('/').to_owned();
        let criteria = criteria_for(&plan, &[]).unwrap_or_default();
        let watch = WatchOptions {
            urls: vec![format!("{target}/metrics")],
            prometheus: None,
            interval: Duration::from_secs(1),
            mapping: MetricMapping::default(),
        };
        LoadTest {
            options: RunOptions {
                target,
                plan,
                model,
                timeout: Duration::from_secs(30),
                think_time: None,
                criteria,
                abort_on_fail: false,
                watch: Some(watch),
                progress: false,
                custom: Default::default(),
                goose_metrics: false,
                seed: 1,
            },
            shard: None,
            baseline: None,
        }
    }
}

/// The criteria of a run: the launch plan's defaults, then the scenario
/// file's `thresholds:`, then `overrides` (the command line); per-transaction
/// thresholds from the scenario file on top.
pub fn criteria_for(plan: &ScenarioPlan, overrides: &[Threshold]) -> Result<Criteria, LoadError> {
    let mut criteria = Criteria::default();
    for t in &plan.thresholds {
        criteria
            .set(t.clone())
            .map_err(|e| LoadError::Usage(format!("scenario {}: {e}", plan.source)))?;
    }
    for tx in plan.transactions() {
        for t in &tx.thresholds {
            criteria
                .set_for_transaction(&tx.name, t.clone())
                .map_err(|e| LoadError::Usage(format!("scenario {}: {e}", plan.source)))?;
        }
    }
    for t in overrides {
        criteria.set(t.clone()).map_err(|e| LoadError::Usage(format!("--threshold: {e}")))?;
    }
    Ok(criteria)
}

/// `scheme://host:port/path` without user name or password.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let path = if path.is_empty() { String::new() } else { format!("/{path}") };
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Checks that the target answers HTTP at all before any user starts.
pub async fn preflight(target: &str, timeout: Duration) -> Result<(), LoadError> {
    if !target.starts_with("http://") && !target.starts_with("https://") {
        return Err(LoadError::Usage(format!(
            "invalid --target {:?}: expected an http:// or https:// URL",
            redact(target)
        )));
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| LoadError::CouldNotRun(format!("cannot build an HTTP client: {e}")))?;
    match client.get(target).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let cause = std::error::Error::source(&e).map_or_else(
                || e.to_string(),
                |s| {
                    let mut s: &dyn std::error::Error = s;
                    while let Some(inner) = s.source() {
                        s = inner;
                    }
                    s.to_string()
                },
            );
            Err(LoadError::CouldNotRun(format!(
                "cannot reach the target {} ({cause}): is the service running and the URL right? check --target",
                redact(target)
            )))
        }
    }
}

/// Runs a load test and judges it.
pub async fn run(test: &LoadTest) -> Result<Report, LoadError> {
    let o = &test.options;
    preflight(&o.target, o.timeout).await?;
    let mut options = o.clone();
    if let Some(shard) = test.shard {
        options.model = o.model.for_shard(shard);
    }
    let outcome = Box::pin(runner::run_load(&options)).await?;
    let data = RunData {
        load_model_description: match test.shard {
            Some(shard) => {
                format!("{} (shard {shard} of the whole run's load)", options.model.describe())
            }
            None => options.model.describe(),
        },
        load_model: options.model.clone(),
        scenario: format!("{} ({})", o.plan.name, o.plan.source),
        shards: test.shard.into_iter().collect(),
        criteria: report::criteria_text(&o.criteria),
        stats: outcome.stats,
        services: outcome.services,
        stopped_early: outcome.stopped_early,
        goose_requests: outcome.goose_requests,
    };
    Ok(report::build(&redact(&o.target), &data, &o.criteria, test.baseline.as_ref()))
}

/// Merges shard reports (`load-tester merge`): histograms, counts and series
/// add up exactly; the criteria of the first shard are judged again on the
/// whole. The target's metrics are taken from the first shard that watched
/// them (every shard watched the same target).
pub fn merge(reports: &[(String, Report)], baseline: Option<&Report>) -> Result<Report, LoadError> {
    let mut merged: Option<RunData> = None;
    let mut target = String::new();
    for (name, report) in reports {
        let data =
            RunData::from_report(report).map_err(|e| LoadError::Usage(format!("{name}: {e}")))?;
        match &mut merged {
            None => {
                target = report.target.clone();
                merged = Some(data);
            }
            Some(m) => {
                if report.target != target {
                    return Err(LoadError::Usage(format!(
                        "{name} tested {}, the first report tested {target}: merge shards of one run only",
                        report.target
                    )));
                }
                if let Some(dup) = data.shards.iter().find(|s| m.shards.contains(s)) {
                    return Err(LoadError::Usage(format!("{name}: shard {dup} is given twice")));
                }
                m.stats.merge(&data.stats);
                m.shards.extend(data.shards.iter().copied());
                m.load_model = add_models(&m.load_model, &data.load_model);
                if m.services.iter().all(|s| s.scrapes == 0) {
                    m.services = data.services.clone();
                }
                m.stopped_early = m.stopped_early.take().or(data.stopped_early.clone());
                m.goose_requests = match (m.goose_requests, data.goose_requests) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
            }
        }
    }
    let mut data = merged
        .ok_or_else(|| LoadError::Usage("nothing to merge: give the shard reports".to_owned()))?;
    data.shards.sort_by_key(|s| s.index);
    data.load_model_description =
        format!("{} ({} shard reports merged)", data.load_model.describe(), reports.len());
    let criteria = report::criteria_from_text(&data.criteria).map_err(LoadError::Usage)?;
    let mut report = report::build(&target, &data, &criteria, baseline);
    if let Some(count) = data.shards.first().map(|s| s.count) {
        let missing: Vec<String> = (1..=count)
            .filter(|k| !data.shards.iter().any(|s| s.index == *k))
            .map(|k| format!("{k}/{count}"))
            .collect();
        let criterion = format!("all {count} shards merged");
        report.checks.push(if missing.is_empty() {
            shared_types::Check::pass("shards-complete", criterion, format!("{count} of {count}"))
        } else {
            shared_types::Check::error(
                "shards-complete",
                criterion,
                format!(
                    "missing shard(s) {}: the figures cover part of the load",
                    missing.join(", ")
                ),
            )
        });
    }
    Ok(report)
}

/// The JSON Schema of a scenario file (`--scenario FILE`), published as
/// `docs/load-tester/scenario.schema.json`. It checks the file's shape (keys,
/// types, enums); what only the whole file can tell (a feed named in a
/// template exists, transaction names are unique) is left to
/// `load-tester scenario --check`.
#[cfg(feature = "schema")]
pub fn scenario_schema() -> serde_json::Value {
    published(
        ScenarioPlan::file_schema(),
        "https://postlaunch.dev/schemas/load-tester/scenario.schema.json",
        "load-tester scenario",
        None,
    )
}

/// The JSON Schema of a metric mapping file (`--metric-mapping FILE`),
/// published as `docs/load-tester/metric-mapping.schema.json`.
#[cfg(feature = "schema")]
pub fn metric_mapping_schema() -> serde_json::Value {
    published(
        schemars::schema_for!(MetricMapping),
        "https://postlaunch.dev/schemas/load-tester/metric-mapping.schema.json",
        "load-tester metric mapping",
        Some(
            "Which Prometheus series mean what, for a target whose names differ from the \
             sandbox's. Keys left out keep their defaults; unknown keys are errors.",
        ),
    )
}

/// A generated schema with its `$id`, title and (optionally) description, as
/// JSON with every object's keys sorted: the committed files must not depend
/// on whether some crate in the build turned on serde_json's `preserve_order`.
#[cfg(feature = "schema")]
fn published(
    mut schema: schemars::Schema,
    id: &str,
    title: &str,
    description: Option<&str>,
) -> serde_json::Value {
    schema.insert("$id".to_owned(), id.into());
    schema.insert("title".to_owned(), title.into());
    if let Some(description) = description {
        schema.insert("description".to_owned(), description.into());
    }
    shared_types::sorted_keys(schema.to_value())
}

fn add_models(a: &LoadModel, b: &LoadModel) -> LoadModel {
    match (a, b) {
        (
            LoadModel::Closed { users: u1, hatch_rate: h1, duration_secs, ramp_down_secs },
            LoadModel::Closed { users: u2, hatch_rate: h2, .. },
        ) => LoadModel::Closed {
            users: u1 + u2,
            hatch_rate: h1 + h2,
            duration_secs: *duration_secs,
            ramp_down_secs: *ramp_down_secs,
        },
        (LoadModel::Staged { stages: s1 }, LoadModel::Staged { stages: s2 }) => LoadModel::Staged {
            stages: model::UserStages {
                stages: s1
                    .stages
                    .iter()
                    .zip(&s2.stages)
                    .map(|(a, b)| model::UserStage { users: a.users + b.users, secs: a.secs })
                    .collect(),
            },
        },
        (
            LoadModel::Open { rate: r1, max_users: m1, duration_secs },
            LoadModel::Open { rate: r2, max_users: m2, .. },
        ) => {
            let stages =
                r1.stages.iter().zip(&r2.stages).map(|((x, s), (y, _))| (x + y, *s)).collect();
            LoadModel::Open {
                rate: model::ArrivalRate { stages },
                max_users: m1 + m2,
                duration_secs: *duration_secs,
            }
        }
        (a, _) => a.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(redact("http://user:hunter2@api.example:8080/v1"), "http://api.example:8080/v1");
        assert_eq!(redact("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}
