//! `cargo xtask verify`: the monthly verification run.
//!
//! Without a plan, starts the sandbox marketplace (its catalog on a scratch
//! PostgreSQL with `pg_stat_statements`), runs each step against it, and
//! merges the steps' reports into one whose check ids are `<step>/<check>`.
//! With `--plan verify.yaml` (see [`crate::plan`]) nothing is started: each
//! step runs against the part of the team's system the plan names.
//!
//! Every step's own report is written to `target/verify/<step>.json`; the
//! launch plan's KPI table ([`crate::kpi`]) is filled from those reports only
//! (and from the system's Prometheus over the month when the plan names one),
//! added to the merged report as `kpi/<id>` checks, kept in the history by
//! month, and written with the merged report to `report.json` (the schema in
//! docs/report-schema.json, the table under `data.kpis`), `report.md` and a
//! self-contained `report.html`.
//!
//! Steps: `sandbox` (health, readiness and the runbook series of the gateway),
//! `load-tester` (the built-in marketplace scenario, judged by the launch
//! plan's latency, error, cache and breaker criteria), `capacity`
//! (`load-tester capacity`: the highest load that holds them), `database`
//! (pg_stat_statements: query time, slow queries, unused indexes),
//! `pg-failover-probe` (a crash drill on a local primary + synchronous
//! standby), `reorg-sim` (the launch plan's reorg against the reference
//! indexer), `backup-agent` (the database backed up per table, verified by a
//! restore and drilled; on the sandbox also a point-in-time recovery drill of
//! a scratch cluster), `alert-linter` (the rules: valid, quiet, covering every
//! critical path), `chaos-runner` (the launch plan's chaos matrix),
//! `bluegreen-promoter` (a release and its rollback on a local cluster) and
//! `cost-analyzer` (what the system over-pays for).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use shared_types::{Check, Measurement, OutputFormat, RenderOptions, Report};
use testkit::Sandbox;
use testkit::metrics::{Samples, parse_samples};

use crate::kpi::{self, History};
use crate::plan::{CapacityPlan, LoadPlan, LoadedPlan, Plan};
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
    /// The team's system; `None` verifies the built-in sandbox.
    pub plan: Option<LoadedPlan>,
    /// A sandbox already running at this URL; `None` starts one (no plan only).
    pub target: Option<String>,
    /// The sandbox binary; `None` uses testkit's default (target/debug/sandbox).
    pub sandbox_binary: Option<PathBuf>,
    /// Extra sandbox arguments (catalog size, dependencies).
    pub sandbox_args: Vec<String>,
    /// Steps to run (see [`STEPS`]); with a plan, the plan's.
    pub steps: Vec<String>,
    /// Where each month's KPI table is kept.
    pub history_dir: PathBuf,
    /// This run's month, `YYYY-MM`.
    pub month: String,
}

/// Every step `verify` knows, in the order it runs them.
pub const STEPS: [&str; 11] = [
    "sandbox",
    "load-tester",
    "capacity",
    "database",
    "pg-failover-probe",
    "reorg-sim",
    "backup-agent",
    "alert-linter",
    "chaos-runner",
    "bluegreen-promoter",
    "cost-analyzer",
];

/// What the built-in sandbox cannot show, waived in its table with the reason.
fn sandbox_waivers() -> BTreeMap<String, String> {
    [
        (
            "load-capacity",
            "the sandbox shares this machine with the load generator; the capacity step's \
             short search shows the method, 10K users need the team's system (--plan)",
        ),
        (
            "infrastructure-cost",
            "the sandbox's bill does not change from month to month; the cost-analyzer step \
             judges the savings it finds",
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into_iter()
    .collect()
}

/// This month, `YYYY-MM`, in UTC.
pub fn this_month() -> String {
    chrono::Utc::now().format("%Y-%m").to_string()
}

impl Default for VerifyOptions {
    fn default() -> Self {
        let out_dir = workspace::root().join("target/verify");
        Self {
            history_dir: out_dir.join("history"),
            out_dir,
            plan: None,
            target: None,
            sandbox_binary: None,
            sandbox_args: Vec::new(),
            steps: STEPS.map(String::from).to_vec(),
            month: this_month(),
        }
    }
}

/// The sandbox's database: a scratch server with pg_stat_statements, or a
/// scratch database on the machine's server without it, or none.
enum SandboxDb {
    Scratch { _server: testkit::ScratchPostgres },
    Temp { _database: testkit::TempDatabase },
}

async fn sandbox_database() -> Option<(String, SandboxDb)> {
    let settings = [
        ("shared_preload_libraries", "'pg_stat_statements'"),
        ("pg_stat_statements.track_utility", "off"),
        ("max_connections", "100"),
    ];
    match testkit::ScratchPostgres::start(&settings).await {
        Ok(server) => {
            let url = server.url("postgres");
            match crate::database_step::connect(&url).await {
                Ok(client) => {
                    if let Err(e) = client
                        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                        .await
                    {
                        eprintln!("verify: CREATE EXTENSION pg_stat_statements failed: {e}");
                    }
                    return Some((url, SandboxDb::Scratch { _server: server }));
                }
                Err(e) => eprintln!("verify: the scratch PostgreSQL does not answer: {e}"),
            }
        }
        Err(e) => eprintln!(
            "verify: no scratch PostgreSQL with pg_stat_statements ({e}); the sandbox's \
             catalog goes to the machine's PostgreSQL"
        ),
    }
    match testkit::TempDatabase::create().await {
        Ok(db) => Some((db.url().to_owned(), SandboxDb::Temp { _database: db })),
        Err(e) => {
            eprintln!("verify: the sandbox keeps its catalog in memory: no local PostgreSQL ({e})");
            None
        }
    }
}

/// Runs every step and writes the reports; the merged report is returned,
/// its KPI table under `data.kpis`.
pub async fn run(options: &VerifyOptions) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&options.out_dir)
        .with_context(|| format!("cannot create {}", options.out_dir.display()))?;
    let history = History::load(&options.history_dir)?;
    // Kept alive until the steps are done; dropping them stops the sandbox
    // and removes its database.
    let mut started = None;
    let mut sandbox_db = None;
    let empty = Plan::default();
    let (plan, steps, waive): (&Plan, Vec<String>, BTreeMap<String, String>) = match &options.plan {
        Some(loaded) => (&loaded.plan, loaded.plan.steps.clone(), loaded.plan.waive.clone()),
        None => (&empty, options.steps.clone(), sandbox_waivers()),
    };
    let mut db_url = plan.system.database.clone();
    let url = match (&options.plan, &options.target) {
        (Some(_), _) => {
            plan.system.gateway.clone().unwrap_or_default().trim_end_matches('/').to_owned()
        }
        (None, Some(url)) => url.trim_end_matches('/').to_owned(),
        (None, None) => {
            let mut args = options.sandbox_args.clone();
            db_url = flag_value(&options.sandbox_args, "--database-url");
            if db_url.is_none()
                && let Some((url, db)) = sandbox_database().await
            {
                args.extend(["--database-url".to_owned(), url.clone()]);
                db_url = Some(url);
                sandbox_db = Some(db);
            }
            let sandbox = match &options.sandbox_binary {
                Some(binary) => Sandbox::start_with_binary(binary, &args).await,
                None => Sandbox::start(&args).await,
            }
            .context("cannot start the sandbox")?;
            eprintln!("sandbox running at {}", sandbox.url());
            // Statistics from here on: the seeding is not the workload.
            if let (Some(SandboxDb::Scratch { .. }), Some(url)) = (&sandbox_db, &db_url)
                && let Ok(client) = crate::database_step::connect(url).await
            {
                let _ = client
                    .batch_execute("SELECT pg_stat_statements_reset(); SELECT pg_stat_reset();")
                    .await;
            }
            started.insert(sandbox).url().to_owned()
        }
    };
    let title = match &options.plan {
        Some(loaded) => format!("plan {}", loaded.path.display()),
        None => url.clone(),
    };
    let mut merged = Report::new("postlaunch-verify", env!("CARGO_PKG_VERSION"), title.as_str());
    let mut reports: BTreeMap<String, Report> = BTreeMap::new();
    let in_plan = options.plan.is_some();
    for name in &steps {
        eprintln!("verify: {name}");
        let report = match name.as_str() {
            "sandbox" => sandbox_step(&url, plan.system.metrics_url.as_deref()).await,
            "load-tester" => load_step(&url, &plan.load).await,
            "capacity" => capacity_step(&url, &plan.capacity).await,
            "database" => match &db_url {
                Some(db) => crate::database_step::run(db).await,
                None => unevaluated(
                    "database",
                    "no database",
                    Check::not_evaluated(
                        "statements",
                        "statement statistics are read from pg_stat_statements",
                        "the sandbox has no database (no local PostgreSQL)",
                    ),
                ),
            },
            "pg-failover-probe" => failover_step(options, plan).await,
            "alert-linter" => alert_rules_step(plan).await,
            "reorg-sim" => reorg_step(plan).await,
            "backup-agent" => backup_step(db_url.as_deref(), in_plan).await,
            "chaos-runner" => chaos_step(options, plan).await,
            "bluegreen-promoter" => bluegreen_step(options, plan).await,
            "cost-analyzer" => cost_step(db_url.as_deref(), plan).await,
            other => anyhow::bail!("unknown verify step {other:?}; steps: {}", STEPS.join(", ")),
        };
        reports.insert(name.clone(), report);
    }
    for name in &steps {
        let Some(step) = reports.get(name) else { continue };
        let path = options.out_dir.join(format!("{name}.json"));
        std::fs::write(&path, step.to_json_pretty())
            .with_context(|| format!("cannot write {}", path.display()))?;
        for check in &step.checks {
            let mut check = check.clone();
            check.id = format!("{name}/{}", check.id);
            merged.push_check(check);
        }
        for measurement in &step.measurements {
            merged.push_measurement(Measurement::new(
                format!("{name}/{}", measurement.name),
                measurement.value,
                measurement.unit.clone(),
            ));
        }
    }
    let rows = kpi::collect(&kpi::Inputs {
        steps: &reports,
        asked: &steps,
        prometheus: plan.system.prometheus.as_ref(),
        waive: &waive,
        history: &history,
        month: &options.month,
    })
    .await;
    for row in &rows {
        merged.push_check(row.check());
    }
    merged.data.insert("kpis".to_owned(), serde_json::to_value(&rows)?);
    merged.data.insert("month".to_owned(), serde_json::Value::from(options.month.clone()));
    merged.finish();
    drop(started);
    drop(sandbox_db);
    let recorded = History::record(&options.history_dir, &options.month, &rows)?;
    eprintln!("verify: KPIs of {} kept in {}", options.month, recorded.display());
    let json = options.out_dir.join("report.json");
    std::fs::write(&json, merged.to_json_pretty())
        .with_context(|| format!("cannot write {}", json.display()))?;
    let markdown = options.out_dir.join("report.md");
    let mut md = kpi::render_markdown(&rows, &options.month);
    md.push('\n');
    md.push_str(&merged.render(OutputFormat::Markdown, &RenderOptions::default()));
    std::fs::write(&markdown, md)
        .with_context(|| format!("cannot write {}", markdown.display()))?;
    let html = options.out_dir.join("report.html");
    std::fs::write(
        &html,
        kpi::render_html(&rows, &history, &options.month, merged.verdict().label()),
    )
    .with_context(|| format!("cannot write {}", html.display()))?;
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

/// The merged report for stdout (colours only on a terminal); for people,
/// the KPI table follows the checks.
pub fn render_summary(report: &Report, format: OutputFormat) -> String {
    use std::io::IsTerminal;
    let mut out = report.render(format, &RenderOptions { color: std::io::stdout().is_terminal() });
    if matches!(format, OutputFormat::Human | OutputFormat::Markdown) {
        let rows: Vec<kpi::Row> = report
            .data
            .get("kpis")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let month = report.data.get("month").and_then(|m| m.as_str()).unwrap_or_default();
        out.push_str(&match format {
            OutputFormat::Markdown => kpi::render_markdown(&rows, month),
            _ => kpi::render_text(&rows, month),
        });
    }
    out
}

/// The JSON Schema of the report, as committed in docs/report-schema.json.
pub fn report_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&shared_types::report_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// The sandbox step: is the gateway alive, ready and observable? (Its
/// latency, errors and cache are the load step's: one source each.)
async fn sandbox_step(base: &str, metrics_url: Option<&str>) -> Report {
    let mut report = Report::new("sandbox", env!("CARGO_PKG_VERSION"), base);
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();

    report.push_check(status_check(&client, base, "healthz", "GET /healthz answers 200").await);
    report.push_check(
        status_check(&client, base, "readyz", "GET /readyz answers 200 (database reachable)").await,
    );
    let metrics = metrics_url.map_or_else(|| format!("{base}/metrics"), str::to_owned);
    let samples = match scrape(&client, &metrics).await {
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
        RUNBOOK_SERIES.iter().copied().filter(|name| !samples.has(name)).collect();
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
    let open = samples.sum("circuit_breaker_state", &[("state", "open")]);
    report.push_check(if samples.has("circuit_breaker_state") {
        Check::from_bool("breakers", "no circuit breaker open", format!("{open} open"), open == 0.0)
    } else {
        Check::not_evaluated(
            "breakers",
            "no circuit breaker open",
            "no circuit_breaker_state series on /metrics",
        )
    });
    report.push_measurement(Measurement::new(
        "resident_memory",
        samples.sum("process_resident_memory_bytes", &[]),
        "bytes",
    ));
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

/// The failover step: on the sandbox, a crash of the primary and promotion
/// of a synchronous standby on a local pair; with a plan, the plan's drill
/// of the system's database (its commands, run in order); judged by
/// pg-failover-probe.
async fn failover_step(options: &VerifyOptions, plan: &Plan) -> Report {
    let tool = "pg-failover-probe";
    let criterion = "PostgreSQL fails over in < 30 s with zero loss of acknowledged commits";
    if let Some(failover) = &plan.failover {
        // A ledger per run, never removed: an earlier drill's ledger against
        // the team's database stays for `pg-failover-probe check-ledger`.
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let ledger = options.out_dir.join(format!("pg-failover-probe.{stamp}.ledger.jsonl"));
        let target = shared_types::redact_url(&failover.url);
        let mut args = vec![
            "drill".to_owned(),
            "--url".to_owned(),
            failover.url.clone(),
            "--ledger".to_owned(),
            ledger.display().to_string(),
        ];
        for step in &failover.steps {
            args.extend(["--step".to_owned(), step.clone()]);
        }
        return tool_report(tool, &args, &target, "drill", criterion).await;
    }
    let target = "local primary + standby";
    let ledger = options.out_dir.join("pg-failover-probe.ledger.jsonl");
    let _ = std::fs::remove_file(&ledger);
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

/// The launch plan's chaos matrix: the rows that run on processes, against a
/// stage of their own (testkit's ChaosStage: the marketplace roles, RabbitMQ,
/// the fault proxy, Prometheus with the shipped rules), the flood at the
/// launch plan's 10,000 messages; then the Kubernetes rows (pod-kill,
/// indexer-crash) on the marketplace deployed to a local cluster.
///
/// With a plan: the plan's experiment file as it is, against the system.
async fn chaos_step(options: &VerifyOptions, plan: &Plan) -> Report {
    let (tool, target) = ("chaos-runner", "the sandbox marketplace's chaos matrix");
    let criterion = "the marketplace degrades gracefully, loses nothing and recovers within budget";
    // Against the team's system the journal is kept: it is what
    // `chaos-runner recover --state-dir` undoes an interrupted run from.
    let state = options.out_dir.join("chaos-runner-state");
    if let Some(chaos) = &plan.chaos {
        let file = chaos.experiment.display().to_string();
        let mut args = vec!["run".to_owned(), file.clone()];
        for (name, value) in &chaos.vars {
            args.extend(["--var".to_owned(), format!("{name}={value}")]);
        }
        for id in &chaos.only {
            args.extend(["--experiment".to_owned(), id.clone()]);
        }
        args.extend(["--state-dir".to_owned(), state.display().to_string()]);
        return tool_report(tool, &args, &file, "matrix", criterion).await;
    }
    // The built-in stage's journal names processes that no longer exist.
    let _ = std::fs::remove_dir_all(&state);
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
    args.extend(["--state-dir".to_owned(), state.display().to_string()]);
    let mut report = tool_report(tool, &args, target, "matrix", criterion).await;
    drop(stage);
    // The Kubernetes rows: a gateway pod killed and the indexer crashed on
    // the marketplace deployed to a local cluster.
    let cluster_rows = cluster_chaos_rows(&state.join("cluster")).await;
    report.target = format!("{target} (processes and the local cluster)");
    report.checks.extend(cluster_rows.checks);
    report.measurements.extend(cluster_rows.measurements);
    report.finish();
    report
}

/// The launch plan's `pod-kill` and `indexer-crash` rows against
/// deploy/sandbox/marketplace.yaml on a local cluster (the upstream control
/// plane, postlaunch-node), its database a scratch one on the machine's
/// PostgreSQL and RabbitMQ a node of its own.
async fn cluster_chaos_rows(state: &std::path::Path) -> Report {
    let (tool, target) = ("chaos-runner", "the marketplace on the local cluster");
    let criterion = "killed pods and a crashed indexer recover within budget";
    let unevaluated_row = |detail: String| {
        unevaluated(tool, target, Check::not_evaluated("cluster-rows", criterion, detail))
    };
    let db = match testkit::TempDatabase::create().await {
        Ok(db) => db,
        Err(e) => return unevaluated_row(format!("no scratch database: {e}")),
    };
    let rabbit = match testkit::RabbitMq::start().await {
        Ok(r) => r,
        Err(e) => return unevaluated_row(format!("cannot start a RabbitMQ node: {e}")),
    };
    let cluster = match tokio::task::spawn_blocking(testkit::KubeCluster::start).await {
        Ok(Ok(cluster)) => cluster,
        Ok(Err(e)) => return unevaluated_row(format!("cannot start the local cluster: {e}")),
        Err(e) => return unevaluated_row(e.to_string()),
    };
    let config = testkit::marketplace::ClusterConfig {
        database_url: db.url().to_owned(),
        redis_url: testkit::local_redis_url(),
        amqp_url: rabbit.amqp_url(),
        collections: 20,
        nfts: 200,
    };
    if let Err(e) =
        testkit::marketplace::deploy_to_cluster(&cluster, &config, Duration::from_secs(180)).await
    {
        return unevaluated_row(format!("cannot deploy the marketplace: {e}"));
    }
    let plan = workspace::root().join("docs/chaos-runner/launch-plan.yaml");
    let _ = std::fs::remove_dir_all(state);
    let mut args = vec!["run".to_owned(), plan.display().to_string()];
    args.extend(strings(&["--var", "TOKEN=unused"]));
    for row in ["pod-kill", "indexer-crash"] {
        args.extend(["--experiment".to_owned(), row.to_owned()]);
    }
    args.extend([
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
        "--state-dir".to_owned(),
        state.display().to_string(),
    ]);
    tool_report(tool, &args, target, "cluster-rows", criterion).await
}

/// The release step: on the local cluster (the upstream control plane and
/// postlaunch-node), the sandbox as `shop` v1 (docs/bluegreen-promoter/
/// shop.yaml); bluegreen-promoter releases v2 through its gates with the
/// prober on the active Service, then rolls it back.
///
/// With a plan: the plan's release of an app on the system's cluster, and
/// its rollback unless the plan says `rollback: false`.
async fn bluegreen_step(options: &VerifyOptions, plan: &Plan) -> Report {
    let (tool, target) = ("bluegreen-promoter", "shop (the sandbox) on the local cluster");
    let criterion = "a release and its rollback with zero failed requests, within budget";
    let state = options.out_dir.join("bluegreen-promoter-state");
    if let (Some(release), Some(kubeconfig)) = (&plan.release, &plan.system.kubeconfig) {
        let target = format!("{}/{}", release.namespace, release.app);
        let mut common = vec![
            "--kubeconfig".to_owned(),
            kubeconfig.display().to_string(),
            "-n".to_owned(),
            release.namespace.clone(),
            "--allow-namespace".to_owned(),
            release.namespace.clone(),
            "--state-dir".to_owned(),
            state.display().to_string(),
            "--active-url".to_owned(),
            release.active_url.clone(),
            "--probe-path".to_owned(),
            release.probe_path.clone(),
        ];
        if let Some(context) = &plan.system.context {
            common.extend(["--context".to_owned(), context.clone()]);
        }
        let mut deploy = strings(&["deploy", &release.app, "--image", &release.image]);
        if let Some(url) = &release.preview_url {
            deploy.extend(["--preview-url".to_owned(), url.clone()]);
        }
        if let Some(smoke) = &release.smoke {
            deploy.extend(["--smoke".to_owned(), smoke.display().to_string()]);
        }
        deploy.extend(common.clone());
        let mut report = Report::new(tool, env!("CARGO_PKG_VERSION"), target.as_str());
        absorb(
            &mut report,
            "deploy",
            tool_report(tool, &deploy, &target, "release", criterion).await,
        );
        if release.rollback {
            let mut rollback = strings(&["rollback", &release.app]);
            rollback.extend(common);
            let back = tool_report(tool, &rollback, &target, "rollback", criterion).await;
            absorb(&mut report, "rollback", back);
        }
        report.finish();
        return report;
    }
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
///
/// With a plan: the system's Prometheus over the plan's window, its cluster
/// when a kubeconfig is given, and its database.
async fn cost_step(sandbox_db: Option<&str>, plan: &Plan) -> Report {
    let (tool, target) = ("cost-analyzer", "the sandbox on a local two-node cluster");
    let criterion = "the launch plan's savings target is measured";
    if let Some(prometheus) = &plan.system.prometheus {
        let system = &plan.system;
        let mut args =
            strings(&["analyze", "--prometheus", &prometheus.url, "--window", &prometheus.window]);
        match &system.kubeconfig {
            Some(kubeconfig) => {
                args.extend(["--kubeconfig".to_owned(), kubeconfig.display().to_string()]);
            }
            // Never the machine's default kubeconfig: it may name a cluster
            // the plan did not allow.
            None => args.push("--no-kubernetes".to_owned()),
        }
        if let Some(context) = &system.context {
            args.extend(["--context".to_owned(), context.clone()]);
        }
        for ns in &system.namespaces {
            args.extend(["--namespace".to_owned(), ns.clone()]);
        }
        if let Some(url) = sandbox_db {
            args.extend(["--database-url".to_owned(), url.to_owned()]);
        }
        return tool_report(tool, &args, &prometheus.url, "analysis", criterion).await;
    }
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

/// The load step: the built-in marketplace scenario, by default 20 users for
/// 5 s with think times shortened so a run this short warms the cache like
/// real traffic (the plan's `load` sets them).
async fn load_step(url: &str, load: &LoadPlan) -> Report {
    let users = load.users.to_string();
    let args = strings(&[
        "run",
        "--target",
        url,
        "--users",
        &users,
        "--hatch-rate",
        &users,
        "--duration",
        &load.duration,
        "--think-time",
        &load.think_time,
    ]);
    let criterion = "the marketplace holds the load within the launch plan's criteria";
    tool_report("load-tester", &args, url, "run", criterion).await
}

/// The capacity step: `load-tester capacity`, steps of users until a
/// criterion breaks or the search's end (the plan's `capacity`).
async fn capacity_step(url: &str, capacity: &CapacityPlan) -> Report {
    let (start, step, max) = (
        capacity.start_users.to_string(),
        capacity.step_users.to_string(),
        capacity.max_users.to_string(),
    );
    let args = strings(&[
        "capacity",
        "--target",
        url,
        "--start-users",
        &start,
        "--step-users",
        &step,
        "--max-users",
        &max,
        "--step-duration",
        &capacity.step_duration,
        "--think-time",
        "0ms..50ms",
    ]);
    let criterion = "the highest load that holds the launch plan's criteria is found";
    let mut report = tool_report("load-tester", &args, url, "load-capacity", criterion).await;
    report.tool = "capacity".to_owned();
    report
}

/// The reorg step: index blocks 1000-1100 with 10 mints, reorg at 1050 (50
/// deep), new branch to 1150; the reference indexer must converge on the oracle.
///
/// With a plan: the team's indexer (its command and mapping) on its own test
/// database, the plan's scenario.
async fn reorg_step(plan: &Plan) -> Report {
    let (tool, target) = ("reorg-sim", "launch-plan scenario");
    let criterion =
        "the indexer detects, rolls back and re-indexes the launch plan's 50-block reorg";
    if let Some(indexer) = &plan.indexer {
        let mut args = strings(&[
            "run",
            "--scenario",
            &indexer.scenario,
            "--indexer-cmd",
            &indexer.cmd,
            "--database-url",
            &indexer.database,
        ]);
        args.extend(["--mapping".to_owned(), indexer.mapping.display().to_string()]);
        for host in &plan.allow.hosts {
            args.extend(["--allow-target".to_owned(), host.clone()]);
        }
        return tool_report(tool, &args, &indexer.cmd, "run", criterion).await;
    }
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
///
/// With a plan: the system's database, backed up per table into a local
/// repository and verified by a restore into a scratch cluster; nothing is
/// written to the system.
async fn backup_step(sandbox_db: Option<&str>, in_plan: bool) -> Report {
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
        Some(url) => {
            let table = (!in_plan).then_some("sandbox.nfts");
            sandbox_database_backup(url, table, &mut report).await;
        }
        None => {
            report.push_check(Check::skipped(
                "sandbox-db",
                criterion,
                "the sandbox keeps its catalog in memory (no local PostgreSQL, or --target): no database to back up",
            ));
        }
    }
    if in_plan {
        report.finish();
        return report;
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
async fn sandbox_database_backup(url: &str, drill_table: Option<&str>, report: &mut Report) {
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
    let Some(table) = drill_table else { return };
    let drill = tool_report(
        tool,
        &strings(&["drill", "--scenario", "table", "--table", table, "--repo", &repo]),
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

/// The alerting step: the rules (the shipped marketplace rules, or the
/// plan's) lint clean (warnings count) and cover every critical path.
async fn alert_rules_step(plan: &Plan) -> Report {
    let root = workspace::root();
    let rules = if plan.system.rules.is_empty() {
        vec![root.join("docs/alert-linter/marketplace-rules.yml")]
    } else {
        plan.system.rules.clone()
    };
    let config = plan
        .system
        .rules_config
        .clone()
        .unwrap_or_else(|| root.join("docs/alert-linter/marketplace.yml"));
    let target = rules.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(" ");
    let mut args = vec!["lint".to_owned()];
    args.extend(rules.iter().map(|r| r.display().to_string()));
    args.extend([
        "--config".to_owned(),
        config.display().to_string(),
        "--fail-on".to_owned(),
        "warning".to_owned(),
    ]);
    tool_report("alert-linter", &args, &target, "lint", "the marketplace alert rules lint clean")
        .await
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

async fn scrape(client: &reqwest::Client, url: &str) -> anyhow::Result<Samples> {
    let text = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url} failed"))?
        .error_for_status()
        .with_context(|| format!("GET {url} failed"))?
        .text()
        .await?;
    Ok(parse_samples(&text))
}
