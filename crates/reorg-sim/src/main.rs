//! `reorg-sim`: parse flags, call the library, render the report, exit with
//! the contract's code (0 met, 1 not met, 2 usage, 3 could not run).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use reorg_sim::indexer::{IndexerConfig, IndexerError, ReferenceIndexer};
use reorg_sim::runner::{IndexerUnderTest, RunError, RunOptions};
use reorg_sim::scenario::{BUILTIN_NAMES, ReorgScenario};
use reorg_sim::verify::Mapping;
use shared_types::{ExitCode, Measurement, OutputFormat, Report, parse_duration};

/// Prove an ERC-1155 indexer rolls back and re-indexes chain reorgs of 1..64 blocks and halts safely beyond.
///
/// Examples:
///   # the launch plan's case against the reference indexer
///   reorg-sim run --scenario launch-plan --database-url postgres://postgres@127.0.0.1/postgres
///   # your indexer (gets REORG_SIM_RPC_URL, REORG_SIM_DATABASE_URL, ...) with your SQL mapping
///   reorg-sim run --scenario deep --indexer-cmd './my-indexer' --mapping mapping.yaml --database-url ...
///   # a chain any indexer can follow; reorg it with the reorgsim_reorg JSON-RPC method
///   reorg-sim simulate --scenario launch-plan --listen 127.0.0.1:8545
#[derive(Debug, Parser)]
#[command(name = "reorg-sim", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play a scenario against an indexer and verify it against the oracle.
    Run {
        /// Built-in name (launch-plan, shallow, medium, deep, extreme, lagging-rpc) or YAML file.
        #[arg(long)]
        scenario: String,
        #[command(flatten)]
        db: DbArgs,
        /// Shell command starting the indexer under test (default: the reference indexer in-process).
        #[arg(long, value_name = "CMD")]
        indexer_cmd: Option<String>,
        /// Run the reference indexer in its deliberately faulty mode (never rolls back).
        #[arg(long, conflicts_with = "indexer_cmd")]
        no_rollback: bool,
        /// YAML file of SQL queries reading the indexer's state (default: the reference schema).
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// Longest wait for the indexer to catch up after each step.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        catch_up_timeout: Duration,
        /// Exit code --indexer-cmd ends with when a reorg beyond finality halts it
        /// (halted-safely needs it and a halted checkpoint; a crash or signal fails).
        #[arg(long, default_value_t = reorg_sim::verify::HALT_EXIT_CODE, value_name = "CODE")]
        halt_exit_code: i32,
        /// Print what the run would do (the schema it would reset) and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Serve a scenario's chain over JSON-RPC (HTTP + WebSocket) until Ctrl-C.
    Simulate {
        /// Built-in name or YAML file.
        #[arg(long, default_value = "launch-plan")]
        scenario: String,
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:8545")]
        listen: SocketAddr,
        /// Play the scenario's next step after this pause; without it only the first step is played.
        #[arg(long, value_parser = parse_duration)]
        step_interval: Option<Duration>,
    },
    /// Run the reference indexer against a node until Ctrl-C (exit 3 when halted by a deep reorg).
    Index {
        /// JSON-RPC URL of the node.
        #[arg(long, env = "REORG_SIM_RPC_URL")]
        rpc_url: String,
        #[command(flatten)]
        db: DbArgs,
        /// First block to index.
        #[arg(long, env = "REORG_SIM_START_BLOCK", default_value_t = 0)]
        start_block: u64,
        /// Deepest reorg followed; deeper ones halt the indexer.
        #[arg(long, env = "REORG_SIM_FINALITY_DEPTH", default_value_t = 64)]
        finality_depth: u64,
        /// Blocks per transaction.
        #[arg(long, default_value_t = 100)]
        batch_blocks: u64,
        /// Pause when there is nothing new.
        #[arg(long, default_value = "500ms", value_parser = parse_duration)]
        poll_interval: Duration,
        /// Deliberately faulty mode: never roll back (for proving verifiers).
        #[arg(long)]
        no_rollback: bool,
        /// Clear a halt left by a deep reorg, then exit.
        #[arg(long)]
        clear_halt: bool,
    },
    /// Compare an indexer's database with a replay of a node's canonical chain.
    Verify {
        /// JSON-RPC URL of the node.
        #[arg(long, env = "REORG_SIM_RPC_URL")]
        rpc_url: String,
        #[command(flatten)]
        db: DbArgs,
        /// First block the indexer indexes.
        #[arg(long, env = "REORG_SIM_START_BLOCK", default_value_t = 0)]
        start_block: u64,
        /// YAML file of SQL queries (default: the reference schema).
        #[arg(long)]
        mapping: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List the built-in scenarios.
    Scenarios,
    /// Throughput: simulator and anvil eth_getBlockByNumber/eth_getLogs, indexer catch-up, 64-block rollback.
    Bench {
        #[command(flatten)]
        db: DbArgs,
        /// Blocks in the benchmark chain (at least 64: the benchmark rolls back a 64-block reorg).
        #[arg(long, default_value_t = 2000)]
        blocks: u64,
        /// Requests per method.
        #[arg(long, default_value_t = 2000)]
        requests: u64,
        /// anvil binary to measure side by side (e.g. crates/reorg-sim/tests/node/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil).
        #[arg(long)]
        anvil: Option<PathBuf>,
        /// Print what the benchmark would change (the schema it resets) and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
struct DbArgs {
    /// PostgreSQL URL the indexer writes to.
    #[arg(long, env = "REORG_SIM_DATABASE_URL")]
    database_url: String,
    /// Schema of the reference indexer's tables (`run` empties it first; public and
    /// system schemas, and schemas holding other tables, are refused).
    #[arg(long, default_value = "reorg_sim")]
    schema: String,
    /// Database host `run` and `bench` may reset schemas on besides loopback ones (repeatable).
    #[arg(long = "allow-target", value_name = "HOST")]
    allow: Vec<String>,
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Report format on stdout: human, json, junit or markdown.
    #[arg(long, default_value = "human")]
    output: OutputFormat,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Accept this criterion unmeasured: a check that could not be evaluated
    /// (e.g. affected-nfts-listed with a mapping without `affected_nfts`) becomes
    /// skipped instead of making the run exit 3. Repeatable; passes and failures never change.
    #[arg(long = "skip-check", value_name = "ID")]
    skip_checks: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    shared_types::init_logs(&cli.log_format, "warn");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => fail(ExitCode::CouldNotRun, &format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => std::process::exit(code.code()),
        Err((code, message)) => fail(code, &message),
    }
}

fn fail(code: ExitCode, message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(code.code())
}

type Outcome = Result<ExitCode, (ExitCode, String)>;

fn run_error(e: RunError) -> (ExitCode, String) {
    match e {
        RunError::Usage(m) => (ExitCode::Usage, m),
        RunError::CouldNotRun(m) => (ExitCode::CouldNotRun, m),
    }
}

fn usage(message: impl std::fmt::Display) -> (ExitCode, String) {
    (ExitCode::Usage, message.to_string())
}

fn scenario(name: &str) -> Result<ReorgScenario, (ExitCode, String)> {
    ReorgScenario::load(name).map_err(usage)
}

fn mapping(path: Option<&PathBuf>, schema: &str) -> Result<Mapping, (ExitCode, String)> {
    match path {
        Some(path) => Mapping::load(path).map_err(usage),
        None if reorg_sim::indexer::store::valid_schema(schema) => Ok(Mapping::reference(schema)),
        None => {
            Err(usage(format!("invalid --schema {schema:?}: use lower-case letters, digits and _")))
        }
    }
}

async fn execute(command: Command) -> Outcome {
    match command {
        Command::Run {
            scenario: name,
            db,
            indexer_cmd,
            no_rollback,
            mapping: mapping_path,
            catch_up_timeout,
            halt_exit_code,
            dry_run,
            output,
        } => {
            let scenario = scenario(&name)?;
            if indexer_cmd.is_none() {
                reorg_sim::reset::check_droppable(&db.schema).map_err(usage)?;
            }
            reorg_sim::runner::check_allowed_database(&db.database_url, &db.allow)
                .map_err(run_error)?;
            let mut options = RunOptions::new(db.database_url);
            options.mapping = Some(mapping(mapping_path.as_ref(), &db.schema)?);
            options.schema = db.schema;
            options.catch_up_timeout = catch_up_timeout;
            options.halt_exit_code = halt_exit_code;
            options.indexer = match indexer_cmd {
                Some(cmd) => IndexerUnderTest::Command(cmd),
                None => IndexerUnderTest::Reference { no_rollback },
            };
            if dry_run {
                let plan =
                    reorg_sim::runner::dry_run(&scenario, &options).await.map_err(run_error)?;
                println!("{plan}");
                return Ok(ExitCode::Success);
            }
            let report =
                reorg_sim::runner::run_scenario(&scenario, &options).await.map_err(run_error)?;
            emit(&report, &output)
        }
        Command::Simulate { scenario: name, listen, step_interval } => {
            let scenario = scenario(&name)?;
            let ready = |url: &str| println!("reorg-sim simulator listening on {url}");
            reorg_sim::runner::simulate(
                &scenario,
                listen,
                step_interval,
                ready,
                shared_types::signals::interrupted(),
            )
            .await
            .map_err(run_error)?;
            Ok(ExitCode::Success)
        }
        Command::Index {
            rpc_url,
            db,
            start_block,
            finality_depth,
            batch_blocks,
            poll_interval,
            no_rollback,
            clear_halt,
        } => {
            let config = IndexerConfig {
                schema: db.schema,
                start_block,
                finality_depth,
                batch_blocks,
                poll_interval,
                no_rollback,
            };
            let indexer_error = |e: IndexerError| match e {
                IndexerError::Config(m) => (ExitCode::Usage, m),
                other => (ExitCode::CouldNotRun, other.to_string()),
            };
            let mut indexer = ReferenceIndexer::connect(&rpc_url, &db.database_url, config)
                .await
                .map_err(indexer_error)?;
            if clear_halt {
                let cleared = indexer.clear_halt().await.map_err(indexer_error)?;
                eprintln!(
                    "{}",
                    if cleared { "halt cleared" } else { "nothing to clear: no checkpoint yet" }
                );
                return Ok(ExitCode::Success);
            }
            indexer.follow(shared_types::signals::interrupted()).await.map_err(indexer_error)?;
            Ok(ExitCode::Success)
        }
        Command::Verify { rpc_url, db, start_block, mapping: mapping_path, output } => {
            let mapping = mapping(mapping_path.as_ref(), &db.schema)?;
            let report = reorg_sim::runner::verify_against_node(
                &rpc_url,
                &db.database_url,
                &mapping,
                start_block,
            )
            .await
            .map_err(run_error)?;
            emit(&report, &output)
        }
        Command::Scenarios => {
            for name in BUILTIN_NAMES {
                let description =
                    ReorgScenario::builtin(name).map(|s| s.description).unwrap_or_default();
                println!("{name:<12} {description}");
            }
            Ok(ExitCode::Success)
        }
        Command::Bench { db, blocks, requests, anvil, dry_run, output } => {
            reorg_sim::bench::check_blocks(blocks).map_err(usage)?;
            if requests == 0 {
                return Err(usage("--requests 0: use --requests 1 or more"));
            }
            reorg_sim::runner::check_allowed_database(&db.database_url, &db.allow)
                .map_err(run_error)?;
            if dry_run {
                let plan = reorg_sim::bench::dry_run(&db.database_url, blocks, requests)
                    .await
                    .map_err(|e| match e {
                        reorg_sim::reset::ResetError::Refused(m) => (ExitCode::Usage, m),
                        reorg_sim::reset::ResetError::Db(m) => (ExitCode::CouldNotRun, m),
                    })?;
                println!("{plan}");
                return Ok(ExitCode::Success);
            }
            let mut report = Report::new(
                "reorg-sim",
                env!("CARGO_PKG_VERSION"),
                "bench: simulator, reference indexer, anvil",
            );
            let could_not = |e: String| (ExitCode::CouldNotRun, e);
            let figures: Vec<Measurement> =
                reorg_sim::bench::simulator_and_indexer(&db.database_url, blocks, requests)
                    .await
                    .map_err(could_not)?;
            for m in figures {
                report.push_measurement(m);
            }
            if let Some(anvil) = anvil {
                for m in reorg_sim::bench::anvil_throughput(&anvil, blocks, requests)
                    .await
                    .map_err(could_not)?
                {
                    report.push_measurement(m);
                }
            }
            report.finish();
            emit(&report, &output)
        }
    }
}

fn emit(report: &Report, output: &OutputArgs) -> Outcome {
    let mut report = report.clone();
    for id in report.waive(&output.skip_checks) {
        tracing::warn!("--skip-check {id}: no check has this id; nothing waived");
    }
    report
        .emit(output.output, output.report.as_deref())
        .map_err(|e| (ExitCode::CouldNotRun, e.to_string()))
}
