//! `cargo xtask verify`: the monthly verification run.
//!
//! Starts the sandbox marketplace, runs each step against it, and merges the
//! steps' reports into one whose check ids are `<step>/<check>`. Each step's own
//! report is written to `target/verify/<step>.json`, the merged one to
//! `target/verify/report.json` (the schema in docs/report-schema.json) and
//! `target/verify/report.md`.
//!
//! Steps today: `sandbox` (health, readiness, the runbook series, and a smoke
//! load judged by the launch plan's criteria) and `pg-failover-probe` (a crash
//! drill on a local primary + synchronous standby, not evaluated (exit 3) when
//! the PostgreSQL server binaries are absent), `load-tester` (a short run of the
//! built-in marketplace scenario against the sandbox, judged by the launch
//! plan's latency, error, cache and breaker criteria), `reorg-sim` (the launch
//! plan's reorg scenario against the reference indexer on the machine's
//! PostgreSQL), `backup-agent` (the sandbox's own database backed up per table,
//! verified by a restore and drilled, then a point-in-time recovery drill of a
//! scratch cluster with WAL archiving: crash it, restore, measure RTO/RPO) and
//! `alert-linter` (the shipped
//! marketplace rules: valid, quiet, covering every critical path) and
//! `chaos-runner` (the launch plan's chaos matrix, docs/chaos-runner/launch-plan.yaml,
//! against the marketplace as processes with every dependency behind the
//! fault proxy: auth, database, Redis and RabbitMQ down, and a RabbitMQ
//! flood). Each tool issue adds its step.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use shared_types::{Check, Measurement, OutputFormat, Quantity, RenderOptions, Report, Threshold};
use testkit::Sandbox;
use testkit::metrics::{Samples, parse_samples};
use tokio::task::JoinSet;

use crate::workspace;

/// Series the marketplace's runbooks read; verify fails when one is missing.
pub const RUNBOOK_SERIES: [&str; 10] = [
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "db_connections_in_use",
    "db_connections_max",
    "cache_hits_total",
    "cache_misses_total",
    "circuit_breaker_state",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
];

/// How a verification run is carried out.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Where the reports go.
    pub out_dir: PathBuf,
    /// A sandbox already running at this URL; `None` starts one.
    pub target: Option<String>,
    /// The sandbox binary; `None` uses testkit's default (target/debug/sandbox).
    pub sandbox_binary: Option<PathBuf>,
    /// Extra sandbox arguments (catalog size, dependencies).
    pub sandbox_args: Vec<String>,
    /// Requests of the smoke load.
    pub requests: usize,
    /// Concurrent clients of the smoke load.
    pub concurrency: usize,
    /// Criteria of the smoke load, by metric (see [`SMOKE_METRICS`]).
    pub criteria: Vec<Threshold>,
    /// Steps to run (see [`STEPS`]).
    pub steps: Vec<String>,
}

/// Every step `verify` knows, in the order it runs them.
pub const STEPS: [&str; 9] = [
    "sandbox",
    "load-tester",
    "pg-failover-probe",
    "reorg-sim",
    "backup-agent",
    "alert-linter",
    "chaos-runner",
    "bluegreen-promoter",
    "cost-analyzer",
];

/// Metrics the smoke load's criteria may name.
pub const SMOKE_METRICS: [&str; 7] =
    ["p50", "p90", "p95", "p99", "max", "error_rate", "cache_hit_rate"];

/// The launch plan's criteria for the smoke load.
pub fn default_criteria() -> Vec<Threshold> {
    ["p95 < 500ms", "p99 < 1s", "error_rate < 0.1%", "cache_hit_rate > 80%"].map(criterion).to_vec()
}

/// Replaces the default criterion of each overridden metric (or adds one for a
/// metric without a default); refuses metrics the smoke load does not measure.
pub fn with_overrides(
    mut criteria: Vec<Threshold>,
    overrides: Vec<Threshold>,
) -> Result<Vec<Threshold>, String> {
    for threshold in overrides {
        if !SMOKE_METRICS.contains(&threshold.metric.as_str()) {
            return Err(format!(
                "unknown metric {:?} in --threshold \"{threshold}\": verify measures {}",
                threshold.metric,
                SMOKE_METRICS.join(", ")
            ));
        }
        criteria.retain(|c| c.metric != threshold.metric);
        criteria.push(threshold);
    }
    Ok(criteria)
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            out_dir: workspace::root().join("target/verify"),
            target: None,
            sandbox_binary: None,
            sandbox_args: Vec::new(),
            requests: 400,
            concurrency: 8,
            criteria: default_criteria(),
            steps: STEPS.map(String::from).to_vec(),
        }
    }
}

/// Runs every step and writes the reports; the merged report is returned.
pub async fn run(options: &VerifyOptions) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&options.out_dir)
        .with_context(|| format!("cannot create {}", options.out_dir.display()))?;
    // Kept alive until the steps are done; dropping it stops the sandbox.
    let mut started = None;
    // The sandbox's catalog database: given in its arguments, or a scratch
    // database on the machine's PostgreSQL (dropped at the end), or none (the
    // catalog stays in memory and the backup step says so).
    let mut sandbox_db_url = flag_value(&options.sandbox_args, "--database-url");
    let mut sandbox_db = None;
    let url = match &options.target {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let mut args = options.sandbox_args.clone();
            if sandbox_db_url.is_none() {
                match testkit::TempDatabase::create().await {
                    Ok(db) => {
                        args.extend(["--database-url".to_owned(), db.url().to_owned()]);
                        sandbox_db_url = Some(db.url().to_owned());
                        sandbox_db = Some(db);
                    }
                    Err(e) => eprintln!(
                        "verify: the sandbox keeps its catalog in memory: no local PostgreSQL ({e})"
                    ),
                }
            }
            let sandbox = match &options.sandbox_binary {
                Some(binary) => Sandbox::start_with_binary(binary, &args).await,
                None => Sandbox::start(&args).await,
            }
            .context("cannot start the sandbox")?;
            eprintln!("sandbox running at {}", sandbox.url());
            started.insert(sandbox).url().to_owned()
        }
    };

    let mut merged = Report::new("postlaunch-verify", env!("CARGO_PKG_VERSION"), url.as_str());
    let mut steps = Vec::new();
    for name in &options.steps {
        eprintln!("verify: {name}");
        let report = match name.as_str() {
            "sandbox" => sandbox_step(&url, options).await,
            "pg-failover-probe" => failover_step(options).await,
            "alert-linter" => alert_rules_step().await,
            "load-tester" => load_step(&url).await,
            "reorg-sim" => reorg_step().await,
            "backup-agent" => backup_step(sandbox_db_url.as_deref()).await,
            "chaos-runner" => chaos_step(options).await,
            "bluegreen-promoter" => bluegreen_step(options).await,
            "cost-analyzer" => cost_step(sandbox_db_url.as_deref()).await,
            other => anyhow::bail!("unknown verify step {other:?}; steps: {}", STEPS.join(", ")),
        };
        steps.push(report);
    }
    for step in steps {
        let path = options.out_dir.join(format!("{}.json", step.tool));
        std::fs::write(&path, step.to_json_pretty())
            .with_context(|| format!("cannot write {}", path.display()))?;
        for check in &step.checks {
            let mut check = check.clone();
            check.id = format!("{}/{}", step.tool, check.id);
            merged.push_check(check);
        }
        for measurement in &step.measurements {
            let name = format!("{}/{}", step.tool, measurement.name);
            merged.push_measurement(Measurement::new(
                name,
                measurement.value,
                measurement.unit.clone(),
            ));
        }
    }
    merged.finish();
    drop(started);
    drop(sandbox_db);
    let json = options.out_dir.join("report.json");
    std::fs::write(&json, merged.to_json_pretty())
        .with_context(|| format!("cannot write {}", json.display()))?;
    let markdown = options.out_dir.join("report.md");
    std::fs::write(&markdown, merged.render(OutputFormat::Markdown, &RenderOptions::default()))
        .with_context(|| format!("cannot write {}", markdown.display()))?;
    Ok(merged)
}

/// The value of `--flag VALUE` or `--flag=VALUE` in `args`.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, arg)| match arg.strip_prefix(flag) {
        Some("") => args.get(i + 1).cloned(),
        Some(rest) => rest.strip_prefix('=').map(str::to_owned),
        None => None,
    })
}

/// The merged report for stdout: colours only on a terminal.
pub fn render_summary(report: &Report, format: OutputFormat) -> String {
    use std::io::IsTerminal;
    report.render(format, &RenderOptions { color: std::io::stdout().is_terminal() })
}

/// The JSON Schema of the report, as committed in docs/report-schema.json.
pub fn report_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&shared_types::report_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// The sandbox step: is the target alive, observable and within the launch
/// plan's latency, error and cache criteria under a small load?
async fn sandbox_step(base: &str, options: &VerifyOptions) -> Report {
    let mut report = Report::new("sandbox", env!("CARGO_PKG_VERSION"), base);
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();

    report.push_check(status_check(&client, base, "healthz", "GET /healthz answers 200").await);
    report.push_check(
        status_check(&client, base, "readyz", "GET /readyz answers 200 (database reachable)").await,
    );

    let before = match scrape(&client, base).await {
        Ok(samples) => samples,
        Err(e) => {
            report.push_check(Check::error(
                "metrics",
                "runbook series exported on /metrics",
                format!("{e:#}"),
            ));
            report.finish();
            return report;
        }
    };
    let missing: Vec<&str> =
        RUNBOOK_SERIES.iter().copied().filter(|name| !before.has(name)).collect();
    let present = RUNBOOK_SERIES.len() - missing.len();
    let mut series = Check::from_bool(
        "metrics",
        "runbook series exported on /metrics",
        format!("{present}/{} series", RUNBOOK_SERIES.len()),
        missing.is_empty(),
    );
    if !missing.is_empty() {
        series = series.with_detail(format!("missing: {}", missing.join(", ")));
    }
    report.push_check(series);

    // A warm-up pass over the whole hot set first: the criteria describe a
    // service in steady state, not one whose cache was just emptied.
    let warm_up = smoke_load(&client, base, WARM_UP_REQUESTS, options.concurrency).await;
    let before = scrape(&client, base).await.unwrap_or(before);
    let load = smoke_load(&client, base, options.requests, options.concurrency).await;
    let after = scrape(&client, base).await.unwrap_or_default();
    let total = load.latencies.len() as f64;
    let errors = load.errors as f64;
    let rate = if load.elapsed.is_zero() { 0.0 } else { total / load.elapsed.as_secs_f64() };
    let p = |q: f64| Quantity::millis(percentile(&load.latencies, q).as_secs_f64() * 1000.0);
    let hits = after.sum("cache_hits_total", &[]) - before.sum("cache_hits_total", &[]);
    let misses = after.sum("cache_misses_total", &[]) - before.sum("cache_misses_total", &[]);
    let hit_rate = hits / (hits + misses).max(1.0);
    for threshold in &options.criteria {
        let observed = match threshold.metric.as_str() {
            "p50" => p(0.50),
            "p90" => p(0.90),
            "p95" => p(0.95),
            "p99" => p(0.99),
            "max" => p(1.0),
            "error_rate" => Quantity::ratio(errors / total.max(1.0)),
            "cache_hit_rate" => Quantity::ratio(hit_rate),
            other => {
                report.push_check(Check::error(
                    other,
                    threshold.to_string(),
                    "verify does not measure this metric",
                ));
                continue;
            }
        };
        report.push_check(threshold.check(threshold.metric.replace('_', "-"), observed));
    }
    let open = after.sum("circuit_breaker_state", &[("state", "open")]);
    report.push_check(Check::from_bool(
        "breakers",
        "no circuit breaker open after the load",
        format!("{open} open"),
        open == 0.0 && after.has("circuit_breaker_state"),
    ));

    for (name, value, unit) in [
        ("requests", total, ""),
        ("warm_up_requests", warm_up.latencies.len() as f64, ""),
        ("throughput", rate, "req/s"),
        ("p50", p(0.50).value * 1000.0, "ms"),
        ("p95", p(0.95).value * 1000.0, "ms"),
        ("p99", p(0.99).value * 1000.0, "ms"),
        ("error_rate", errors / total.max(1.0) * 100.0, "%"),
        ("cache_hit_rate", hit_rate * 100.0, "%"),
        ("resident_memory", after.sum("process_resident_memory_bytes", &[]), "bytes"),
    ] {
        report.push_measurement(Measurement::new(name, value, unit));
    }
    report.finish();
    report
}

/// A step's report holding one check that could not be evaluated as asked
/// (an error, or not evaluated with the reason).
fn unevaluated(tool: &str, target: &str, check: Check) -> Report {
    let mut report = Report::new(tool, env!("CARGO_PKG_VERSION"), target);
    report.push_check(check);
    report.finish();
    report
}

/// Runs `tool args... --output json` and returns its report, or a report whose
/// one check `id` is an error saying why the tool gave none.
async fn tool_report(
    tool: &str,
    args: &[String],
    target: &str,
    id: &str,
    criterion: &str,
) -> Report {
    match crate::tools::run_json(&crate::tools::binary("debug", tool), args).await {
        Ok(run) => run.report,
        Err(e) => unevaluated(tool, target, Check::error(id, criterion, format!("{e:#}"))),
    }
}

/// A not-evaluated check when the machine has no PostgreSQL server binaries,
/// which the steps that build local clusters need: the criterion applies, so a
/// missing binary is missing evidence (exit 3), never a skip.
fn without_postgres(tool: &str, target: &str, id: &str, criterion: &str) -> Option<Report> {
    let missing = testkit::binaries::postgres_tool("initdb").err()?;
    let reason = format!(
        "no PostgreSQL server binaries to build a local cluster ({missing}): \
         install postgresql-15 (scripts/install-deps.sh does)"
    );
    Some(unevaluated(tool, target, Check::not_evaluated(id, criterion, reason)))
}

/// The failover step: a crash of the primary and promotion of a synchronous
/// standby on a local pair, judged by pg-failover-probe.
async fn failover_step(options: &VerifyOptions) -> Report {
    let (tool, target) = ("pg-failover-probe", "local primary + standby");
    let criterion = "PostgreSQL fails over in < 30 s with zero loss of acknowledged commits";
    if let Some(skipped) = without_postgres(tool, target, "drill", criterion) {
        return skipped;
    }
    let pair = match testkit::PgPair::start(testkit::PgPairOptions { synchronous: true }).await {
        Ok(pair) => pair,
        Err(e) => {
            let detail = format!("cannot start a local pair: {e}");
            return unevaluated(tool, target, Check::error("drill", criterion, detail));
        }
    };
    let ledger = options.out_dir.join("pg-failover-probe.ledger.jsonl");
    let _ = std::fs::remove_file(&ledger);
    let args: Vec<String> = [
        "drill".to_owned(),
        "--url".to_owned(),
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
            pair.primary_port(),
            pair.standby_port()
        ),
        "--ledger".to_owned(),
        ledger.display().to_string(),
        "--warmup".to_owned(),
        "2s".to_owned(),
        "--settle".to_owned(),
        "1s".to_owned(),
        "--step".to_owned(),
        pair.primary_pg_ctl("stop -m immediate -w"),
        "--step".to_owned(),
        pair.standby_pg_ctl("promote -w"),
    ]
    .to_vec();
    tool_report(tool, &args, target, "drill", criterion).await
}

/// The launch plan's chaos rows that run on processes, against a stage of
/// their own (testkit's ChaosStage: the marketplace roles, RabbitMQ, the
/// fault proxy, Prometheus with the shipped rules), the flood at the launch
/// plan's 10,000 messages.
async fn chaos_step(options: &VerifyOptions) -> Report {
    let (tool, target) = ("chaos-runner", "the sandbox marketplace's chaos matrix");
    let criterion = "the marketplace degrades gracefully, loses nothing and recovers within budget";
    let stage =
        match testkit::chaos_stage::ChaosStage::start(testkit::chaos_stage::ChaosStageOptions {
            chaos_runner: Some(crate::tools::binary("debug", tool)),
            flood_messages: None,
            ..Default::default()
        })
        .await
        {
            Ok(stage) => stage,
            Err(e) => {
                let detail = format!("cannot start the chaos stage: {e}");
                return unevaluated(tool, target, Check::error("matrix", criterion, detail));
            }
        };
    let plan = workspace::root().join("docs/chaos-runner/launch-plan.yaml");
    let mut args = vec!["run".to_owned(), plan.display().to_string()];
    args.extend(stage.vars());
    for row in ["auth-down", "database-down", "redis-down", "rabbitmq-down", "rabbitmq-flood"] {
        args.extend(["--experiment".to_owned(), row.to_owned()]);
    }
    let state = options.out_dir.join("chaos-runner-state");
    let _ = std::fs::remove_dir_all(&state);
    args.extend(["--state-dir".to_owned(), state.display().to_string()]);
    tool_report(tool, &args, target, "matrix", criterion).await
}

/// The release step: on the local cluster (the upstream control plane and
/// postlaunch-node), the sandbox as `shop` v1 (docs/bluegreen-promoter/
/// shop.yaml); bluegreen-promoter releases v2 through its gates with the
/// prober on the active Service, then rolls it back.
async fn bluegreen_step(options: &VerifyOptions) -> Report {
    let (tool, target) = ("bluegreen-promoter", "shop (the sandbox) on the local cluster");
    let criterion = "a release and its rollback with zero failed requests, within budget";
    let cluster = match tokio::task::spawn_blocking(testkit::KubeCluster::start).await {
        Ok(Ok(cluster)) => cluster,
        Ok(Err(e)) => {
            let detail = format!("cannot start the local cluster: {e}");
            return unevaluated(tool, target, Check::not_evaluated("release", criterion, detail));
        }
        Err(e) => {
            return unevaluated(tool, target, Check::error("release", criterion, e.to_string()));
        }
    };
    let manifest = workspace::root().join("docs/bluegreen-promoter/shop.yaml");
    for args in [
        vec!["apply".to_owned(), "-f".to_owned(), manifest.display().to_string()],
        strings(&["rollout", "status", "deployment/shop-blue", "--timeout=180s"]),
    ] {
        match cluster.kubectl().args(&args).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let detail =
                    format!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
                return unevaluated(tool, target, Check::error("release", criterion, detail));
            }
            Err(e) => {
                return unevaluated(
                    tool,
                    target,
                    Check::error("release", criterion, e.to_string()),
                );
            }
        }
    }
    let address =
        |name: &str| cluster.service_address("default", name, 80).map(|a| format!("http://{a}"));
    let (active, preview) = match (address("shop"), address("shop-preview")) {
        (Ok(a), Ok(p)) => (a, p),
        (Err(e), _) | (_, Err(e)) => {
            return unevaluated(tool, target, Check::error("release", criterion, e.to_string()));
        }
    };
    let state = options.out_dir.join("bluegreen-promoter-state");
    let _ = std::fs::remove_dir_all(&state);
    let common = vec![
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
        "--allow-namespace".to_owned(),
        "default".to_owned(),
        "--state-dir".to_owned(),
        state.display().to_string(),
        "--active-url".to_owned(),
        active,
        "--probe-path".to_owned(),
        "/api/collections/1".to_owned(),
    ];
    let smoke = workspace::root().join("docs/bluegreen-promoter/smoke.yaml");
    let mut deploy =
        strings(&["deploy", "shop", "--image", "postlaunch/sandbox:v2", "--watch-for", "5s"]);
    deploy.extend([
        "--smoke".to_owned(),
        smoke.display().to_string(),
        "--preview-url".to_owned(),
        preview,
    ]);
    deploy.extend(common.clone());
    let mut report = Report::new(tool, env!("CARGO_PKG_VERSION"), target);
    let released = tool_report(tool, &deploy, target, "release", criterion).await;
    absorb(&mut report, "deploy", released);
    let mut rollback = strings(&["rollback", "shop"]);
    rollback.extend(common);
    let rolled_back = tool_report(tool, &rollback, target, "rollback", criterion).await;
    absorb(&mut report, "rollback", rolled_back);
    report.finish();
    report
}

/// The cost step: on a local cluster of two m5.xlarge nodes, the sandbox
/// sized by guess (docs/cost-analyzer/sandbox.yaml) under steady traffic,
/// Prometheus scraping the node's cAdvisor series and the pods; after a
/// short window cost-analyzer judges what it over-pays for.
async fn cost_step(sandbox_db: Option<&str>) -> Report {
    let (tool, target) = ("cost-analyzer", "the sandbox on a local two-node cluster");
    let criterion = "the launch plan's savings target is measured";
    let options = testkit::KubeOptions {
        nodes: vec![
            "node-1,cpu=4,memory=16Gi,zone=local-a,instance-type=m5.xlarge".to_owned(),
            "node-2,cpu=4,memory=16Gi,zone=local-b,instance-type=m5.xlarge".to_owned(),
        ],
        ..testkit::KubeOptions::default()
    };
    let cluster =
        match tokio::task::spawn_blocking(move || testkit::KubeCluster::start_with(&options)).await
        {
            Ok(Ok(cluster)) => cluster,
            Ok(Err(e)) => {
                let detail = format!("cannot start the local cluster: {e}");
                return unevaluated(
                    tool,
                    target,
                    Check::not_evaluated("analysis", criterion, detail),
                );
            }
            Err(e) => {
                return unevaluated(
                    tool,
                    target,
                    Check::error("analysis", criterion, e.to_string()),
                );
            }
        };
    let prometheus = match testkit::Prometheus::start(testkit::PrometheusOptions {
        extra_scrape_configs: cluster.prometheus_scrape_configs(),
        scrape_self: true,
        ..testkit::PrometheusOptions::default()
    })
    .await
    {
        Ok(p) => p,
        Err(e) => {
            return unevaluated(
                tool,
                target,
                Check::error("analysis", criterion, format!("cannot start Prometheus: {e}")),
            );
        }
    };
    let manifest = workspace::root().join("docs/cost-analyzer/sandbox.yaml");
    for args in [
        vec!["apply".to_owned(), "-f".to_owned(), manifest.display().to_string()],
        strings(&["rollout", "status", "deployment/gateway", "--timeout=180s"]),
    ] {
        match cluster.kubectl().args(&args).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let detail =
                    format!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
                return unevaluated(tool, target, Check::error("analysis", criterion, detail));
            }
            Err(e) => {
                return unevaluated(
                    tool,
                    target,
                    Check::error("analysis", criterion, e.to_string()),
                );
            }
        }
    }
    let gateway = match cluster.service_address("default", "gateway", 80) {
        Ok(a) => format!("http://{a}"),
        Err(e) => {
            return unevaluated(tool, target, Check::error("analysis", criterion, e.to_string()));
        }
    };
    // Browsing traffic for the window: 20 requests a second.
    let traffic = tokio::spawn(async move {
        let client = reqwest::Client::new();
        for n in 0u64.. {
            let _ = client.get(format!("{gateway}/api/collections/{}", n % 20 + 1)).send().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let window = Duration::from_secs(75);
    let _ = prometheus
        .wait_for_query(
            "count(container_memory_working_set_bytes{container=\"gateway\"}) >= 3",
            Duration::from_secs(60),
        )
        .await;
    tokio::time::sleep(window).await;
    traffic.abort();
    let mut args = strings(&[
        "analyze",
        "--step",
        "1s",
        "--rate-window",
        "5s",
        "--min-samples",
        "20",
        "--label",
        "team",
    ]);
    args.extend([
        "--window".to_owned(),
        format!("{}s", window.as_secs()),
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
        "--prometheus".to_owned(),
        prometheus.url().to_owned(),
    ]);
    if let Some(url) = sandbox_db {
        args.extend(["--database-url".to_owned(), url.to_owned()]);
    }
    tool_report(tool, &args, target, "analysis", criterion).await
}

/// The load step: 20 users of the built-in marketplace scenario for 5 s. Think
/// times are shortened so a run this short warms the cache like real traffic.
async fn load_step(url: &str) -> Report {
    let args: Vec<String> = [
        "run",
        "--target",
        url,
        "--users",
        "20",
        "--hatch-rate",
        "20",
        "--duration",
        "5s",
        "--think-time",
        "0ms..50ms",
    ]
    .map(String::from)
    .to_vec();
    let criterion = "the marketplace holds a short load within the launch plan's criteria";
    tool_report("load-tester", &args, url, "run", criterion).await
}

/// The reorg step: index blocks 1000-1100 with 10 mints, reorg at 1050 (50
/// deep), new branch to 1150; the reference indexer must converge on the oracle.
async fn reorg_step() -> Report {
    let (tool, target) = ("reorg-sim", "launch-plan scenario");
    let criterion =
        "the indexer detects, rolls back and re-indexes the launch plan's 50-block reorg";
    let database = match testkit::TempDatabase::create().await {
        Ok(database) => database,
        Err(e) => {
            let detail = format!("cannot create a scratch database on the local PostgreSQL: {e}");
            return unevaluated(tool, target, Check::error("run", criterion, detail));
        }
    };
    let args: Vec<String> = ["run", "--scenario", "launch-plan", "--database-url", database.url()]
        .map(String::from)
        .to_vec();
    tool_report(tool, &args, target, "run", criterion).await
}

/// The backup step, two parts:
/// - the sandbox's own database (its catalog on the machine's PostgreSQL):
///   per-table backup, `verify --restore` into a scratch cluster, and a
///   table-restore drill judged by `rto < 30m`;
/// - a self-contained point-in-time recovery drill (a scratch source cluster
///   archiving WAL into a local repository, a base backup, more commits, a
///   crash, a restore checked row by row), judged by RTO < 1h and RPO < 1h.
///
/// The sandbox's database is backed up logically: it lives on the machine's
/// shared PostgreSQL, whose `archive_command` verify must not change, so the
/// physical path runs on the scratch cluster it owns.
async fn backup_step(sandbox_db: Option<&str>) -> Report {
    let tool = "backup-agent";
    let mut report = Report::new(
        tool,
        env!("CARGO_PKG_VERSION"),
        match sandbox_db {
            Some(url) => format!(
                "sandbox database {} + local scratch cluster",
                shared_types::redact_url(url)
            ),
            None => "local scratch cluster".to_owned(),
        },
    );
    let criterion = "the sandbox's database is backed up, verified by a restore and drilled";
    match sandbox_db {
        Some(url) => sandbox_database_backup(url, &mut report).await,
        None => {
            report.push_check(Check::skipped(
                "sandbox-db",
                criterion,
                "the sandbox keeps its catalog in memory (no local PostgreSQL, or --target): no database to back up",
            ));
        }
    }
    let criterion = "a point-in-time restore meets the launch plan's RTO and RPO";
    let pitr = match without_postgres(tool, "local scratch cluster", "drill", criterion) {
        Some(skipped) => skipped,
        None => match testkit::postgres_writable_dir("postlaunch-verify-backup-") {
            Ok(repository) => {
                let args = strings(&[
                    "drill",
                    "--scenario",
                    "pitr",
                    "--self-contained",
                    "--repo",
                    &repository.path().display().to_string(),
                ]);
                tool_report(tool, &args, "local scratch cluster", "drill", criterion).await
            }
            Err(e) => {
                let detail = format!("cannot create a repository directory: {e}");
                unevaluated(tool, "local scratch cluster", Check::error("drill", criterion, detail))
            }
        },
    };
    absorb(&mut report, "pitr-drill", pitr);
    report.finish();
    report
}

/// Backup, verify with a restore, and a table drill of the sandbox's database
/// into a temporary local repository; each run's checks land in `report`
/// under `sandbox-db/<run>/`.
async fn sandbox_database_backup(url: &str, report: &mut Report) {
    let tool = "backup-agent";
    let target = shared_types::redact_url(url);
    let repository =
        match tempfile::Builder::new().prefix("postlaunch-verify-sandbox-db-").tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                report.push_check(Check::error(
                    "sandbox-db/backup",
                    "the sandbox's database is backed up",
                    format!("cannot create a repository directory: {e}"),
                ));
                return;
            }
        };
    let repo = repository.path().display().to_string();
    let backup = tool_report(
        tool,
        &strings(&["backup", "tables", "--repo", &repo, "--pg-url", url]),
        &target,
        "backup",
        "the sandbox's tables are backed up with their row counts",
    )
    .await;
    let backed_up = backup.verdict() == shared_types::Verdict::Pass;
    absorb(report, "sandbox-db/backup", backup);
    if !backed_up {
        return;
    }
    let verified = tool_report(
        tool,
        &strings(&["verify", "--repo", &repo, "--restore"]),
        &target,
        "verify",
        "every object matches its manifest and a restore has the backed-up rows",
    )
    .await;
    absorb(report, "sandbox-db/verify", verified);
    let drill = tool_report(
        tool,
        &strings(&["drill", "--scenario", "table", "--table", "sandbox.nfts", "--repo", &repo]),
        &target,
        "drill",
        "restoring the nfts table meets the launch plan's rto < 30m",
    )
    .await;
    absorb(report, "sandbox-db/drill", drill);
}

/// Moves `from`'s checks and measurements into `into`, ids prefixed `prefix/`.
fn absorb(into: &mut Report, prefix: &str, from: Report) {
    for mut check in from.checks {
        check.id = format!("{prefix}/{}", check.id);
        into.push_check(check);
    }
    for m in from.measurements {
        into.push_measurement(Measurement::new(format!("{prefix}/{}", m.name), m.value, m.unit));
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// The alerting step: the shipped marketplace rules lint clean (warnings
/// count) and cover every critical path of the launch plan.
async fn alert_rules_step() -> Report {
    let rules = workspace::root().join("docs/alert-linter/marketplace-rules.yml");
    let target = rules.display().to_string();
    let config = workspace::root().join("docs/alert-linter/marketplace.yml");
    let args = [
        "lint".to_owned(),
        target.clone(),
        "--config".to_owned(),
        config.display().to_string(),
        "--fail-on".to_owned(),
        "warning".to_owned(),
    ];
    tool_report("alert-linter", &args, &target, "lint", "the marketplace alert rules lint clean")
        .await
}

/// A criterion written in the threshold language; the literals above are valid.
fn criterion(text: &str) -> Threshold {
    text.parse().unwrap_or_else(|e| panic!("built-in criterion {text:?} does not parse: {e}"))
}

async fn status_check(client: &reqwest::Client, base: &str, path: &str, criterion: &str) -> Check {
    match client.get(format!("{base}/{path}")).send().await {
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let check = Check::from_bool(
                path,
                criterion,
                format!("HTTP {}", status.as_u16()),
                status.is_success(),
            );
            if status.is_success() { check } else { check.with_detail(body) }
        }
        Err(e) => Check::error(path, criterion, format!("request failed: {e}")),
    }
}

async fn scrape(client: &reqwest::Client, base: &str) -> anyhow::Result<Samples> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .context("GET /metrics failed")?
        .error_for_status()
        .context("GET /metrics failed")?
        .text()
        .await?;
    Ok(parse_samples(&text))
}

struct Load {
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
}

/// Requests of the unmeasured warm-up: enough to touch every key of the hot set.
const WARM_UP_REQUESTS: usize = 300;

/// Browsing traffic over a hot set of items, what a marketplace's front page
/// sees: collections 1 to 10 and NFTs 1 to 50, so any catalog at least that
/// large answers every request.
fn smoke_request(client: &reqwest::Client, base: &str, n: usize) -> reqwest::RequestBuilder {
    match n % 6 {
        0 => client.get(format!("{base}/api/collections?page={}", n % 3 + 1)),
        1 => client.get(format!("{base}/api/collections/{}", n % 10 + 1)),
        2 => client.get(format!("{base}/api/collections/{}/nfts?page=1", n % 10 + 1)),
        3 => client.get(format!("{base}/api/nfts/{}", n % 50 + 1)),
        4 => client.get(format!("{base}/api/search?q={}", ["cosmic", "apes", "neon"][n % 3])),
        _ => client.post(format!("{base}/graphql")).json(&serde_json::json!({
            "query": "{ collections(first: 3) { id name nfts(first: 2) { tokenId owner { address } } } }"
        })),
    }
}

async fn smoke_load(
    client: &reqwest::Client,
    base: &str,
    requests: usize,
    concurrency: usize,
) -> Load {
    let started = Instant::now();
    let mut workers = JoinSet::new();
    let concurrency = concurrency.max(1);
    for worker in 0..concurrency {
        let client = client.clone();
        let base = base.to_owned();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            for n in (worker..requests).step_by(concurrency) {
                let sent = Instant::now();
                let ok = match smoke_request(&client, &base, n).send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let body = response.text().await.unwrap_or_default();
                        ok && !body.contains("\"errors\"")
                    }
                    Err(_) => false,
                };
                latencies.push(sent.elapsed());
                errors += usize::from(!ok);
            }
            (latencies, errors)
        });
    }
    let mut load =
        Load { latencies: Vec::with_capacity(requests), errors: 0, elapsed: Duration::ZERO };
    while let Some(joined) = workers.join_next().await {
        if let Ok((latencies, errors)) = joined {
            load.latencies.extend(latencies);
            load.errors += errors;
        }
    }
    load.elapsed = started.elapsed();
    load.latencies.sort_unstable();
    load
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.95), Duration::from_millis(95));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn built_in_criteria_parse() {
        for text in ["p95 < 500ms", "p99 < 1s", "error_rate < 0.1%", "cache_hit_rate > 80%"] {
            assert_eq!(criterion(text).to_string(), text);
        }
    }
}
