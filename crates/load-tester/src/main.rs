//! `load-tester`: parse flags, run the library, render the report, exit with
//! the contract's code (0 met, 1 not met, 2 usage, 3 could not run).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use load_tester::capacity::CapacityPlan;
use load_tester::model::{ArrivalRate, LoadModel, Shard, UserStages};
use load_tester::scenario::{DEFAULT_SCENARIO, ScenarioPlan, ThinkTime};
use load_tester::watch::{MetricMapping, PrometheusSource, WatchOptions};
use load_tester::{LoadError, LoadTest};
use shared_types::{ExitCode, OutputFormat, RenderOptions, Report, Threshold, parse_duration};

/// Does the system hold 10K concurrent users at P95 < 500 ms, P99 < 1 s? Where is the knee?
///
/// Runs YAML scenarios (or the built-in marketplace scenario) on goose, in a
/// closed model (users with think time) or an open model (arrival rate,
/// latency corrected for coordinated omission), watches the target's
/// Prometheus metrics, and judges the launch plan's criteria.
///
/// Examples:
///   load-tester run --target http://127.0.0.1:8080 --users 100 --hatch-rate 20 --duration 60s
///   load-tester run --target http://127.0.0.1:8080 --rate 500/s --duration 30s --output json
///   load-tester run --target URL --scenario checkout.yaml --threshold 'p95<300ms' --abort-on-fail
///   load-tester run --target URL --users 10000 --shard 2/4 --report shard-2.json
///   load-tester merge shard-*.json --html report.html
///   load-tester capacity --target URL --start-users 50 --step-users 50 --max-users 2000
#[derive(Debug, Parser)]
#[command(name = "load-tester", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a load test and judge it.
    Run {
        #[command(flatten)]
        test: TestArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// Run part K of N of the load (users or rate divided by N) and write mergeable results.
        #[arg(long, value_name = "K/N")]
        shard: Option<Shard>,
        /// Stop as soon as a latency or error criterion is broken.
        #[arg(long)]
        abort_on_fail: bool,
    },
    /// Merge shard reports (JSON) into the report of the whole run.
    Merge {
        /// Shard reports written with --report.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Step the load up until a criterion breaks; report the highest load that held.
    Capacity {
        #[command(flatten)]
        test: TestArgs,
        /// Users of the first step.
        #[arg(long, default_value_t = 10)]
        start_users: usize,
        /// Users added at each step.
        #[arg(long, default_value_t = 10)]
        step_users: usize,
        /// Give up above this many users.
        #[arg(long, default_value_t = 1000)]
        max_users: usize,
        /// How long each step holds its load.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        step_duration: Duration,
    },
    /// Print the built-in scenario, or check a scenario file (exit 2 naming file, line and key).
    Scenario {
        /// The file to check.
        #[arg(long)]
        check: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Report format on stdout: human, json, junit or markdown.
    #[arg(long, default_value = "human")]
    output: OutputFormat,
    /// Also write the JSON report (full statistics included) to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Also write a self-contained HTML report (inline SVG charts).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Also write a Markdown summary.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// A previous JSON report: flag regressions of p95, p99, throughput and errors.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Accept this criterion unmeasured: a check that could not be evaluated
    /// (e.g. cache-hit-rate with no metrics source) becomes skipped instead of
    /// making the run exit 3. Repeatable; passes and failures never change.
    #[arg(long = "skip-check", value_name = "ID")]
    skip_checks: Vec<String>,
}

#[derive(Debug, Args)]
struct TestArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// Base URL of the system under test.
    #[arg(long, env = "LOAD_TESTER_TARGET")]
    target: String,
    /// Scenario file (YAML); default: the built-in marketplace scenario (`load-tester scenario`).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Replace every think time, e.g. 1s or 500ms..2s (0 for none).
    #[arg(long, value_parser = ThinkTime::parse)]
    think_time: Option<ThinkTime>,
    /// Override a criterion: 'p95<300ms', 'error_rate<1%', 'cache_hit_rate>90%', 'rps>=500'.
    #[arg(long = "threshold", value_name = "CRITERION")]
    thresholds: Vec<Threshold>,
    /// Longest wait for one answer.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Prometheus text endpoint to watch (repeatable); default: the target's
    /// /metrics. gRPC latency per method is read from the endpoints'
    /// grpc_{client,server}_handling_seconds histograms, when they have them.
    #[arg(long = "metrics-url", value_name = "URL")]
    metrics_urls: Vec<String>,
    /// Prometheus server to ask during the run (HTTP API, /api/v1/query), one
    /// service per `instance` label. Without --metrics-url, the target's
    /// /metrics is then not scraped directly.
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    /// Label matchers for the Prometheus queries, e.g. 'job="marketplace",namespace="prod"'.
    #[arg(long, value_name = "MATCHERS", default_value = "", requires = "prometheus")]
    prometheus_selector: String,
    /// YAML file naming the series to read (keys: cache_hits, cache_misses,
    /// cache_errors, pool_in_use, pool_max, breaker_state, breaker_transitions,
    /// start_time, cpu_seconds, rss_bytes); keys left out keep the sandbox's names.
    #[arg(long, value_name = "FILE")]
    metric_mapping: Option<PathBuf>,
    /// Watch no metrics endpoint (the service criteria are skipped).
    #[arg(long, conflicts_with_all = ["metrics_urls", "prometheus"])]
    no_watch: bool,
    /// Time between two scrapes of the metrics endpoints.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    scrape_interval: Duration,
    /// Let goose aggregate its own request metrics too (a cross-check that costs throughput).
    #[arg(long)]
    goose_metrics: bool,
    /// Seed of the users' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Closed model: concurrent users (open model: at most this many requests in flight).
    #[arg(long)]
    users: Option<usize>,
    /// Closed model: users started per second (default: all within 1 s).
    #[arg(long)]
    hatch_rate: Option<f64>,
    /// How long full load is held (after the ramp-up).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Closed model: stop the users gradually over this long at the end.
    #[arg(long, value_parser = parse_duration, conflicts_with = "rate")]
    ramp_down: Option<Duration>,
    /// Open model: arrival rate, e.g. 500/s, or ramping 100/s:10s,500/s:30s.
    #[arg(long, conflicts_with = "hatch_rate")]
    rate: Option<ArrivalRate>,
    /// Closed model in k6-style stages of USERS:DURATION, each ramping linearly
    /// from the previous stage's users (0 at first): 100:30s,100:5m,0:30s
    /// ramps to 100 users in 30 s, holds 5 minutes, stops them over 30 s.
    #[arg(
        long,
        value_name = "STAGES",
        conflicts_with_all = ["users", "hatch_rate", "duration", "ramp_down", "rate"]
    )]
    stages: Option<UserStages>,
}

fn main() {
    let cli = Cli::parse();
    shared_types::init_logs(
        match &cli.command {
            Command::Run { test, .. } | Command::Capacity { test, .. } => &test.output.log_format,
            Command::Merge { output, .. } => &output.log_format,
            Command::Scenario { .. } => "text",
        },
        "warn",
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => fail(&LoadError::CouldNotRun(format!("cannot start the async runtime: {e}"))),
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => std::process::exit(code.code()),
        Err(e) => fail(&e),
    }
}

fn fail(e: &LoadError) -> ! {
    eprintln!("error: {e}");
    std::process::exit(e.exit_code().code())
}

async fn execute(command: Command) -> Result<ExitCode, LoadError> {
    match command {
        Command::Run { test, load, shard, abort_on_fail } => {
            let model = load_model(&load)?;
            let mut test_plan = load_test(&test, model)?;
            test_plan.shard = shard;
            test_plan.options.abort_on_fail = abort_on_fail;
            let report = load_tester::run(&test_plan).await?;
            emit(&report, &test.output)
        }
        Command::Merge { reports, output } => {
            let mut read = Vec::new();
            for path in &reports {
                read.push((path.display().to_string(), read_report(path)?));
            }
            let baseline = output.baseline.as_deref().map(read_report).transpose()?;
            let report = load_tester::merge(&read, baseline.as_ref())?;
            emit(&report, &output)
        }
        Command::Capacity { test, start_users, step_users, max_users, step_duration } => {
            if start_users == 0 || step_users == 0 || max_users < start_users {
                return Err(LoadError::Usage(
                    "--start-users and --step-users must be at least 1 and --max-users at least --start-users".to_owned(),
                ));
            }
            let model = LoadModel::Closed {
                users: start_users,
                hatch_rate: start_users as f64,
                duration_secs: step_duration.as_secs().max(1),
                ramp_down_secs: 0,
            };
            let base = load_test(&test, model)?;
            let plan = CapacityPlan { start_users, step_users, max_users, step_duration };
            let report = load_tester::capacity::search(&base, &plan).await?;
            emit(&report, &test.output)
        }
        Command::Scenario { check } => match check {
            None => {
                print!("{DEFAULT_SCENARIO}");
                Ok(ExitCode::Success)
            }
            Some(path) => {
                let plan =
                    ScenarioPlan::from_file(&path).map_err(|e| LoadError::Usage(e.to_string()))?;
                load_tester::criteria_for(&plan, &[])?;
                println!(
                    "{}: {} scenarios, {} transactions, {} feeds: ok",
                    path.display(),
                    plan.scenarios.len(),
                    plan.transactions().count(),
                    plan.feeds.len()
                );
                Ok(ExitCode::Success)
            }
        },
    }
}

fn load_model(load: &LoadArgs) -> Result<LoadModel, LoadError> {
    if let Some(stages) = &load.stages {
        return Ok(LoadModel::Staged { stages: stages.clone() });
    }
    let duration_secs = load.duration.as_secs();
    if duration_secs == 0 {
        return Err(LoadError::Usage(format!(
            "--duration {:?} is too short: give at least 1s",
            load.duration
        )));
    }
    if let Some(rate) = &load.rate {
        let peak = rate.stages.iter().map(|(r, _)| *r).fold(0.0, f64::max);
        // Enough users for 2 s of answers at the peak rate, unless told otherwise.
        let max_users = load.users.unwrap_or(((peak * 2.0).ceil() as usize).clamp(10, 10_000));
        return Ok(LoadModel::Open {
            rate: rate.clone(),
            max_users: max_users.max(1),
            duration_secs,
        });
    }
    let users = load.users.unwrap_or(10);
    if users == 0 {
        return Err(LoadError::Usage("--users must be at least 1".to_owned()));
    }
    let hatch_rate = load.hatch_rate.unwrap_or(users as f64);
    if !(hatch_rate.is_finite() && hatch_rate > 0.0) {
        return Err(LoadError::Usage(format!("--hatch-rate {hatch_rate} must be above 0")));
    }
    let ramp_down_secs = load.ramp_down.map_or(0, |d| d.as_secs());
    Ok(LoadModel::Closed { users, hatch_rate, duration_secs, ramp_down_secs })
}

fn load_test(test: &TestArgs, model: LoadModel) -> Result<LoadTest, LoadError> {
    let plan = match &test.scenario {
        Some(path) => ScenarioPlan::from_file(path).map_err(|e| LoadError::Usage(e.to_string()))?,
        None => ScenarioPlan::built_in(),
    };
    let criteria = load_tester::criteria_for(&plan, &test.thresholds)?;
    let mut t = LoadTest::new(&test.target, plan, model);
    let target = t.options.target.clone();
    t.options.criteria = criteria;
    t.options.think_time = test.think_time;
    t.options.timeout = test.timeout;
    t.options.goose_metrics = test.goose_metrics;
    t.options.seed = test.seed;
    t.options.progress = std::io::stderr().is_terminal();
    let mapping = match &test.metric_mapping {
        Some(path) => MetricMapping::from_file(path).map_err(LoadError::Usage)?,
        None => MetricMapping::default(),
    };
    t.options.watch = (!test.no_watch).then(|| WatchOptions {
        urls: match (test.metrics_urls.is_empty(), &test.prometheus) {
            (false, _) => test.metrics_urls.clone(),
            (true, Some(_)) => Vec::new(),
            (true, None) => vec![format!("{target}/metrics")],
        },
        prometheus: test.prometheus.as_ref().map(|url| PrometheusSource {
            url: url.trim_end_matches('/').to_owned(),
            selector: test.prometheus_selector.clone(),
        }),
        interval: test.scrape_interval,
        mapping,
    });
    t.baseline = test.output.baseline.as_deref().map(read_report).transpose()?;
    Ok(t)
}

fn read_report(path: &Path) -> Result<Report, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::Usage(format!("cannot read report {}: {e}", path.display())))?;
    Report::from_json(&text)
        .map_err(|e| LoadError::Usage(format!("{} is not a JSON report: {e}", path.display())))
}

fn write(path: &Path, text: &str) -> Result<(), LoadError> {
    std::fs::write(path, text)
        .map_err(|e| LoadError::CouldNotRun(format!("cannot write {}: {e}", path.display())))
}

fn emit(report: &Report, output: &OutputArgs) -> Result<ExitCode, LoadError> {
    let mut waived = report.clone();
    for id in waived.waive(&output.skip_checks) {
        tracing::warn!("--skip-check {id}: no check has this id; nothing waived");
    }
    let report = &waived;
    if let Some(path) = &output.report {
        write(path, &report.to_json_pretty())?;
    }
    if let Some(path) = &output.html {
        write(path, &load_tester::html::render(report))?;
    }
    let markdown = || {
        format!(
            "{}{}",
            report.render(OutputFormat::Markdown, &RenderOptions::default()),
            load_tester::report::transaction_table(report)
        )
    };
    if let Some(path) = &output.markdown {
        write(path, &markdown())?;
    }
    let color = std::io::stdout().is_terminal();
    let text = match output.output {
        OutputFormat::Markdown => markdown(),
        OutputFormat::Human => format!(
            "{}{}",
            load_tester::report::transaction_table(report),
            report.render(OutputFormat::Human, &RenderOptions { color })
        ),
        format => report.render(format, &RenderOptions { color }),
    };
    print!("{text}");
    Ok(report.exit_code())
}
