//! `cost-analyzer`: flags, the inputs, the report and the contract's exit
//! code (0 the savings target met, 1 not met or the bill unexplained, 2 bad
//! input, 3 an input unreachable or the savings not evaluated).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use cost_analyzer::analyze::{self, Database, Inputs, Metrics, Options};
use cost_analyzer::bill::Bill;
use cost_analyzer::price::{self, PriceModel};
use cost_analyzer::prom::Prometheus;
use cost_analyzer::{Error, kube, s3};
use shared_types::{ExitCode, OutputFormat, Report, parse_duration};

/// What the marketplace over-pays for, with savings per recommendation, its
/// risk, and totals that reconcile to the bill.
///
/// Reads what is requested and paid for (Kubernetes workloads, nodes, claims;
/// S3 buckets; PostgreSQL) and what is used (Prometheus: cAdvisor CPU and
/// memory, request rates, pool use, its own TSDB), prices them with a price
/// model, and recommends: right-sizing (KRR's rules: CPU p95, memory peak +
/// 15 %, 14 days, at least 100 samples; never below an OOM-kill level, HPA
/// targets kept), idle workloads, unbound or unused volumes, node packing,
/// S3 lifecycle rules and classes, monitoring volume, pools. Nothing is
/// changed: --emit-patches writes kubectl-ready files for you to review.
///
/// Examples:
///   cost-analyzer analyze --prometheus http://prometheus:9090 --report cost.json
///   cost-analyzer analyze --prometheus http://prometheus:9090 --bill november.csv \
///     --baseline october.json --label team --emit-patches ./patches
///   cost-analyzer analyze --s3-endpoint http://127.0.0.1:9000 --bucket backups --no-kubernetes
///   cost-analyzer price-model > prices.yaml     # the shipped default, to edit
///
/// Exit codes: 0 the savings target is met (and the bill explained), 1 it is
/// not (or the bill is not explained within tolerance), 2 bad input (a
/// malformed price model or bill, named by file, line and field), 3 an
/// input unreachable or the savings could not be evaluated.
#[derive(Debug, Parser)]
#[command(name = "cost-analyzer", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read the inputs, recommend, allocate, reconcile, judge.
    Analyze(Box<AnalyzeArgs>),
    /// Print the shipped default price model (YAML) with its source and date.
    PriceModel,
}

#[derive(Debug, Args)]
struct AnalyzeArgs {
    /// Kubeconfig (default: KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<String>,
    /// Kubeconfig context.
    #[arg(long)]
    context: Option<String>,
    /// Read no cluster.
    #[arg(long)]
    no_kubernetes: bool,
    /// Namespaces to analyse (repeatable; default all).
    #[arg(short, long = "namespace")]
    namespaces: Vec<String>,
    /// Prometheus base URL.
    #[arg(long)]
    prometheus: Option<String>,
    /// History analysed (KRR: 14 days).
    #[arg(long, default_value = "14d", value_parser = parse_duration)]
    window: Duration,
    /// Range-query step (default: the window / 2000, at least 15 s).
    #[arg(long, value_parser = parse_duration)]
    step: Option<Duration>,
    /// rate() window of counters.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    rate_window: Duration,
    /// Fewest samples per container before it is judged (KRR: 100).
    #[arg(long, default_value_t = 100)]
    min_samples: usize,
    /// Requests per second under which a workload is idle for the whole window.
    #[arg(long, default_value_t = 0.01)]
    idle_rps: f64,
    /// A series name or query (repeatable): cpu=, memory=, requests= (a query
    /// by namespace and pod, $RATE the rate window), pool_in_use=, pool_max=,
    /// db_connections= (default pg_stat_activity_count, postgres_exporter's).
    #[arg(long = "metric", value_name = "KEY=NAME")]
    metric: Vec<String>,
    /// The price model (YAML; default: the shipped one, `cost-analyzer price-model`).
    #[arg(long, value_name = "FILE")]
    price_model: Option<PathBuf>,
    /// A billing export (CSV with `category` and `cost` columns) to reconcile against.
    #[arg(long, value_name = "FILE")]
    bill: Option<PathBuf>,
    /// How far the allocation may be from the bill.
    #[arg(long, default_value = "5%")]
    reconcile_tolerance: String,
    /// Last month's JSON report: the month-over-month change is judged too.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// The plan's savings target.
    #[arg(long, default_value = "30%")]
    target_savings: String,
    /// Chargeback: cost per value of this workload label.
    #[arg(long)]
    label: Option<String>,
    /// PostgreSQL URLs (repeatable; sslmode honoured).
    #[arg(long = "database-url")]
    database_urls: Vec<String>,
    /// An S3-compatible endpoint (default: AWS); credentials from the environment.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long)]
    s3_region: Option<String>,
    /// Buckets to scan (repeatable; default: all the account's, when --s3-endpoint is given).
    #[arg(long = "bucket")]
    buckets: Vec<String>,
    /// Backups older than this are past retention (GFS 7/4/12 keeps about a year).
    #[arg(long, default_value = "400d", value_parser = parse_duration)]
    retention: Duration,
    /// Write kubectl-ready patch files and an apply.sh here (never applied).
    #[arg(long, value_name = "DIR")]
    emit_patches: Option<PathBuf>,
    /// Report format on stdout: human, json, junit or markdown.
    #[arg(long, default_value = "human")]
    output: OutputFormat,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Accept this criterion unmeasured (repeatable).
    #[arg(long = "skip-check", value_name = "ID")]
    skip_checks: Vec<String>,
    /// Log format on stderr.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn share(flag: &str, text: &str) -> Result<f64, Error> {
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    };
    value.ok().filter(|v| (0.0..=1.0).contains(v)).ok_or_else(|| {
        Error::Usage(format!("{flag} {text:?}: expected a share such as 30% or 0.3"))
    })
}

fn read(path: &std::path::Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::Usage.into() } else { ExitCode::Success.into() };
        }
    };
    shared_types::signals::run_tool("cost-analyzer", dispatch(cli), Error::exit_code)
}

async fn dispatch(cli: Cli) -> Result<ExitCode, Error> {
    let a = match cli.command {
        Command::PriceModel => {
            print!("{}", price::DEFAULT);
            return Ok(ExitCode::Success);
        }
        Command::Analyze(a) => a,
    };
    shared_types::init_logs(&a.log_format, "warn");
    // Every file is read and checked before anything is asked of a server.
    let prices = match &a.price_model {
        Some(p) => {
            Some((PriceModel::parse(&read(p)?, &p.display().to_string())?, p.display().to_string()))
        }
        None => None,
    };
    let bill = match &a.bill {
        Some(p) => {
            Some((Bill::parse(&read(p)?, &p.display().to_string())?, p.display().to_string()))
        }
        None => None,
    };
    let baseline = match &a.baseline {
        Some(p) => Some(
            Report::from_json(&read(p)?)
                .map_err(|e| Error::Usage(format!("{}: not a JSON report: {e}", p.display())))?,
        ),
        None => None,
    };
    let mut metrics = Metrics::default();
    for m in &a.metric {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--metric {m:?}: expected KEY=NAME")))?;
        let slot = match k {
            "cpu" => &mut metrics.cpu,
            "memory" => &mut metrics.memory,
            "requests" => &mut metrics.requests_query,
            "pool_in_use" => &mut metrics.pool_in_use,
            "pool_max" => &mut metrics.pool_max,
            "db_connections" => &mut metrics.db_connections,
            other => {
                return Err(Error::Usage(format!(
                    "--metric {other}=: keys are cpu, memory, requests, pool_in_use, pool_max, db_connections"
                )));
            }
        };
        *slot = v.to_owned();
    }
    let options = Options {
        window: a.window,
        step: a.step.unwrap_or_else(|| (a.window / 2000).max(Duration::from_secs(15))),
        rate_window: a.rate_window,
        min_samples: a.min_samples,
        cpu_quantile: 0.95,
        memory_buffer: 0.15,
        idle_rps: a.idle_rps,
        metrics,
        target_savings: share("--target-savings", &a.target_savings)?,
        reconcile_tolerance: share("--reconcile-tolerance", &a.reconcile_tolerance)?,
        label: a.label.clone(),
        retention: a.retention,
    };
    let prometheus = a.prometheus.as_deref().map(Prometheus::new).transpose()?;
    let inventory = if a.no_kubernetes {
        None
    } else {
        let client = kube::connect(a.kubeconfig.as_deref(), a.context.as_deref()).await;
        match client {
            Ok(c) => Some(kube::inventory(&c, &a.namespaces).await?),
            // No kubeconfig at all and none asked for: the cluster is an absent input.
            Err(Error::Usage(e))
                if a.kubeconfig.is_none() && std::env::var_os("KUBECONFIG").is_none() =>
            {
                eprintln!("cost-analyzer: no cluster ({e}); --no-kubernetes says so explicitly");
                None
            }
            Err(e) => return Err(e),
        }
    };
    let buckets = if a.s3_endpoint.is_some() || !a.buckets.is_empty() {
        let client = s3::connect(a.s3_endpoint.as_deref(), a.s3_region.as_deref()).await;
        Some(s3::scan(&client, &a.buckets, a.retention).await?)
    } else {
        None
    };
    let mut databases = Vec::new();
    for url in &a.database_urls {
        databases.push(database(url).await?);
    }
    let inputs = Inputs { inventory, prometheus, buckets, databases, prices, bill, baseline };
    let mut report = analyze::analyze(&inputs, &options).await?;
    if let Some(dir) = &a.emit_patches {
        let n = analyze::emit_patches(&report, dir)?;
        eprintln!("cost-analyzer: {n} patch files and apply.sh in {} (not applied)", dir.display());
    }
    for unknown in report.waive(&a.skip_checks) {
        eprintln!(
            "cost-analyzer: --skip-check {unknown}: no such check in this report (nothing waived)"
        );
    }
    match a.output {
        OutputFormat::Human => print!("{}", analyze::table(&report, false)),
        OutputFormat::Markdown => print!("{}", analyze::table(&report, true)),
        _ => {}
    }
    report.emit(a.output, a.report.as_deref()).map_err(|e| Error::CouldNotRun(e.to_string()))
}

async fn database(url: &str) -> Result<Database, Error> {
    let options = shared_types::pg::PgConnectOptions::parse(url)
        .map_err(|e| Error::Usage(format!("--database-url: {e}")))?;
    let target = shared_types::pg::describe(&options.config);
    let client = options
        .connect(Duration::from_secs(10))
        .await
        .map_err(|e| Error::CouldNotRun(format!("PostgreSQL {}: {}", e.target, e.reason)))?;
    let number = |row: &tokio_postgres::Row, what: &str| -> Result<f64, Error> {
        row.try_get::<_, i64>(0)
            .map(|v| v as f64)
            .map_err(|e| Error::CouldNotRun(format!("PostgreSQL {target}: {what}: {e}")))
    };
    let max = client
        .query_one("SELECT setting::bigint FROM pg_settings WHERE name = 'max_connections'", &[])
        .await
        .map_err(|e| {
            Error::CouldNotRun(format!("PostgreSQL {target}: pg_settings.max_connections: {e}"))
        })?;
    let now = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
            &[],
        )
        .await
        .map_err(|e| Error::CouldNotRun(format!("PostgreSQL {target}: pg_stat_activity: {e}")))?;
    Ok(Database {
        max_connections: number(&max, "max_connections")?,
        connections: number(&now, "pg_stat_activity")?,
        target,
    })
}
