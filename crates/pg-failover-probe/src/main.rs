//! `pg-failover-probe`: parse flags, run the probe, render the report, exit
//! with the contract's code (0 met, 1 not met, 2 usage, 3 could not run).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pg_failover_probe::target::Target;
use pg_failover_probe::verdict::Criteria;
use pg_failover_probe::workload::WorkloadConfig;
use pg_failover_probe::{DrillPlan, Mode, ProbeError, RunOptions};
use shared_types::{ExitCode, OutputFormat, Report, Threshold, parse_duration};

/// Prove PostgreSQL fails over in under 30 s with zero loss of acknowledged commits.
///
/// Writers insert rows through a pool configured like a service's; every
/// acknowledged commit is journaled to a ledger file; after the failover each
/// one must be found on the new primary.
///
/// Examples:
///   # game day: measure whatever failover Patroni does in the next 10 minutes
///   pg-failover-probe watch --url 'postgres://app@db1:5432,db2:5432/app' --duration 10m
///   # drill: crash the primary and promote the standby, then judge
///   pg-failover-probe drill --url 'postgres://postgres@127.0.0.1:5433,127.0.0.1:5434/postgres' \
///       --step 'pg_ctl -D /srv/pg1 stop -m immediate' --step 'pg_ctl -D /srv/pg2 promote -w'
///   # re-check a saved ledger a day later
///   pg-failover-probe check-ledger --url 'postgres://app@db2:5432/app' --ledger probe.jsonl
#[derive(Debug, Parser)]
#[command(name = "pg-failover-probe", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe until --duration or Ctrl-C and judge whatever failover happened.
    Watch {
        #[command(flatten)]
        run: RunArgs,
        /// How long to probe (e.g. 90s, 10m); without it, until Ctrl-C.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Trigger the failover with --step commands, then judge it.
    Drill {
        #[command(flatten)]
        run: RunArgs,
        /// A shell command of the drill, run in order (repeatable).
        #[arg(long = "step", required = true, value_name = "COMMAND")]
        steps: Vec<String>,
        /// Probing before the first step.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        warmup: Duration,
        /// Probing after writes recovered.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        settle: Duration,
        /// Longest wait for writes to recover after the last step.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        max_wait: Duration,
        /// Longest run of one step.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        step_timeout: Duration,
        /// Hosts (host or host:port) the drill may act on besides loopback ones (repeatable).
        #[arg(long = "allow-target", value_name = "HOST")]
        allow: Vec<String>,
        /// Print what the drill would do and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check a saved ledger against the database.
    CheckLedger {
        #[command(flatten)]
        output: OutputArgs,
        /// PostgreSQL URL; the host that accepts writes is checked.
        #[arg(long, env = "PG_FAILOVER_PROBE_URL")]
        url: String,
        /// The ledger file.
        #[arg(long)]
        ledger: PathBuf,
        /// How long to wait for a primary.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        wait: Duration,
    },
    /// Drop the probe schema from the primary.
    Cleanup {
        /// PostgreSQL URL.
        #[arg(long, env = "PG_FAILOVER_PROBE_URL")]
        url: String,
        /// The probe schema.
        #[arg(long, default_value = "postlaunch_probe")]
        schema: String,
        /// Hosts (host or host:port) cleanup may act on besides loopback ones (repeatable).
        #[arg(long = "allow-target", value_name = "HOST")]
        allow: Vec<String>,
        /// Print what cleanup would drop and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Report format on stdout: human, json, junit or markdown.
    #[arg(long, default_value = "human")]
    output: OutputFormat,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Override a criterion: 'downtime < 10s', 'read_downtime < 5s', 'total_downtime < 30s',
    /// 'lag_before < 1s', 'success_rate >= 50%', 'lost == 0', 'duplicates == 0'.
    #[arg(long = "threshold", value_name = "CRITERION")]
    thresholds: Vec<Threshold>,
    /// Accept asynchronous replication (it can lose the last commits on failover).
    #[arg(long)]
    accept_async: bool,
    /// Accept this criterion unmeasured: a check that could not be evaluated
    /// (e.g. read-availability with --readers 0) becomes skipped instead of
    /// making the run exit 3. Repeatable; passes and failures never change.
    #[arg(long = "skip-check", value_name = "ID")]
    skip_checks: Vec<String>,
    /// Log format on stderr.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    output: OutputArgs,
    /// PostgreSQL URL, several hosts allowed: postgres://user@h1:5432,h2:5432/db
    #[arg(long, env = "PG_FAILOVER_PROBE_URL")]
    url: String,
    /// The ack journal; an existing one is resumed. Default: pg-failover-probe-<run id>.jsonl
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: u32,
    /// Concurrent readers.
    #[arg(long, default_value_t = 2)]
    readers: u32,
    /// Pause between a writer's writes (0ms = as fast as possible).
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    write_interval: Duration,
    /// Bytes of payload per probe row.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Connect timeout and pool wait timeout.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Longest wait for a statement; beyond it the write is indeterminate.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    statement_timeout: Duration,
    /// Schema of the probe table (created if missing).
    #[arg(long, default_value = "postlaunch_probe")]
    schema: String,
    /// How often each server's role and replication state are sampled.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    sample_interval: Duration,
}

fn main() {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Watch { run, .. } | Command::Drill { run, .. } => run.output.log_format.clone(),
        Command::CheckLedger { output, .. } => output.log_format.clone(),
        Command::Cleanup { .. } => "text".to_owned(),
    };
    shared_types::init_logs(&log_format, "warn");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => fail(&ProbeError::CouldNotRun(format!("cannot start the async runtime: {e}"))),
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => std::process::exit(code.code()),
        Err(e) => fail(&e),
    }
}

fn fail(e: &ProbeError) -> ! {
    eprintln!("error: {e}");
    std::process::exit(e.exit_code().code())
}

async fn execute(command: Command) -> Result<ExitCode, ProbeError> {
    match command {
        Command::Watch { run, duration } => {
            let options = run_options(&run)?;
            let report = pg_failover_probe::run(
                &options,
                Mode::Watch { duration },
                shared_types::signals::interrupted(),
            )
            .await?;
            emit(&report, &run.output)
        }
        Command::Drill { run, steps, warmup, settle, max_wait, step_timeout, allow, dry_run } => {
            let options = run_options(&run)?;
            refuse_unlisted(&options.target, &allow, "drill against")?;
            let plan = DrillPlan { steps, warmup, settle, max_wait, step_timeout };
            if dry_run {
                print!("{}", plan.describe(&options));
                return Ok(ExitCode::Success);
            }
            let report = pg_failover_probe::run(
                &options,
                Mode::Drill(plan),
                shared_types::signals::interrupted(),
            )
            .await?;
            emit(&report, &run.output)
        }
        Command::CheckLedger { output, url, ledger, wait } => {
            let target = parse_target(&url)?;
            let criteria = criteria(&output)?;
            let report =
                pg_failover_probe::check_ledger_report(&target, &ledger, wait, &criteria).await?;
            emit(&report, &output)
        }
        Command::Cleanup { url, schema, allow, dry_run } => {
            let target = parse_target(&url)?;
            check_identifier(&schema)?;
            pg_failover_probe::refuse_shared_schema(&schema)?;
            refuse_unlisted(&target, &allow, "clean up")?;
            if dry_run {
                println!(
                    "dry run: nothing is changed. Cleanup would run DROP SCHEMA IF EXISTS {schema} CASCADE on the primary of {}",
                    target.display()
                );
                return Ok(ExitCode::Success);
            }
            pg_failover_probe::cleanup(&target, &schema).await?;
            eprintln!("dropped schema {schema} on {}", target.display());
            Ok(ExitCode::Success)
        }
    }
}

fn parse_target(url: &str) -> Result<Target, ProbeError> {
    url.parse()
        .map_err(|e: pg_failover_probe::target::InvalidTarget| ProbeError::Usage(e.to_string()))
}

fn check_identifier(schema: &str) -> Result<(), ProbeError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ProbeError::Usage(format!(
            "invalid --schema {schema:?}: use lowercase letters, digits and _"
        )))
    }
}

fn criteria(output: &OutputArgs) -> Result<Criteria, ProbeError> {
    let mut criteria = Criteria { accept_async: output.accept_async, ..Criteria::default() };
    for threshold in &output.thresholds {
        criteria.set(threshold.clone()).map_err(ProbeError::Usage)?;
    }
    Ok(criteria)
}

fn run_options(run: &RunArgs) -> Result<RunOptions, ProbeError> {
    let target = parse_target(&run.url)?;
    check_identifier(&run.schema)?;
    if run.writers == 0 {
        return Err(ProbeError::Usage("--writers must be at least 1".to_owned()));
    }
    let mut options = RunOptions::new(target, PathBuf::new());
    options.ledger_path = run
        .ledger
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("pg-failover-probe-{}.jsonl", options.run_id)));
    options.workload = WorkloadConfig {
        writers: run.writers,
        readers: run.readers,
        write_interval: run.write_interval,
        payload_bytes: run.payload_bytes,
        connect_timeout: run.connect_timeout,
        statement_timeout: run.statement_timeout,
        schema: run.schema.clone(),
        ..WorkloadConfig::default()
    };
    options.sample_interval = run.sample_interval;
    options.criteria = criteria(&run.output)?;
    options.progress = std::io::stderr().is_terminal();
    Ok(options)
}

/// Drills and cleanup act only on loopback hosts and hosts listed with
/// --allow-target; `action` names what was refused ("drill against").
fn refuse_unlisted(target: &Target, allow: &[String], action: &str) -> Result<(), ProbeError> {
    let hosts = target
        .hosts()
        .into_iter()
        .map(|(host, port)| shared_types::UrlHost { entry: format!("{host}:{port}"), host });
    let refused = shared_types::outside_allow_list(hosts, allow);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ProbeError::Usage(shared_types::allow_list_refusal(action, &refused, "--allow-target")))
    }
}

fn emit(report: &Report, output: &OutputArgs) -> Result<ExitCode, ProbeError> {
    let mut report = report.clone();
    for id in report.waive(&output.skip_checks) {
        tracing::warn!("--skip-check {id}: no check has this id; nothing waived");
    }
    report
        .emit(output.output, output.report.as_deref())
        .map_err(|e| ProbeError::CouldNotRun(e.to_string()))
}
