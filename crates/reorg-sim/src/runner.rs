//! `reorg-sim run`: starts the simulator, starts the indexer under test
//! (the reference one in-process, or `--indexer-cmd` with the RPC URL in
//! its environment), plays the scenario's steps, waits for catch-up after
//! each, verifies against the oracle and writes the shared report.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use shared_types::{Check, Measurement, Report};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::chain::ReorgSpec;
use crate::indexer::{IndexerConfig, IndexerError, ReferenceIndexer, connect_db};
use crate::oracle::CanonicalOracle;
use crate::reset::{ResetError, SchemaReset};
use crate::scenario::{Expectation, Pace, ReorgScenario, Step, resolve_new_head};
use crate::simulator::ChainSimulator;
use crate::verify::{self, Expected, IndexerExit, Mapping};
use crate::workload::EventCounts;
use shared_types::redact_url;

/// The indexer the run judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexerUnderTest {
    /// The reference indexer, in-process (`no_rollback`: its faulty mode).
    Reference {
        /// Deliberately faulty mode.
        no_rollback: bool,
    },
    /// A shell command; it gets `REORG_SIM_RPC_URL`, `REORG_SIM_WS_URL`,
    /// `REORG_SIM_DATABASE_URL`, `REORG_SIM_START_BLOCK`,
    /// `REORG_SIM_FINALITY_DEPTH` and `REORG_SIM_CHAIN_ID`.
    Command(String),
}

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Database the indexer writes to.
    pub database_url: String,
    /// Which indexer.
    pub indexer: IndexerUnderTest,
    /// Schema of the reference indexer (dropped and recreated at the start).
    pub schema: String,
    /// Queries to read the indexer's state (default: the reference schema).
    pub mapping: Option<Mapping>,
    /// Longest wait for the indexer to catch up after a step.
    pub catch_up_timeout: Duration,
    /// Where the simulator listens (port 0: a free one).
    pub listen: SocketAddr,
    /// The exit code an `--indexer-cmd` must end with when a reorg beyond
    /// finality halts it (`reorg-sim index` exits 3).
    pub halt_exit_code: i32,
}

impl RunOptions {
    /// Defaults for `database_url` with the reference indexer.
    pub fn new(database_url: impl Into<String>) -> Self {
        RunOptions {
            database_url: database_url.into(),
            indexer: IndexerUnderTest::Reference { no_rollback: false },
            schema: "reorg_sim".to_owned(),
            mapping: None,
            catch_up_timeout: Duration::from_secs(60),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            halt_exit_code: verify::HALT_EXIT_CODE,
        }
    }
}

/// Why a run gave no verdict: bad options or scenario (exit 2) or something
/// needed was not there (exit 3).
pub use shared_types::ToolError as RunError;

/// How long a halted indexer (halted checkpoint seen) gets to exit.
const HALT_EXIT_GRACE: Duration = Duration::from_secs(10);

enum Running {
    InProcess {
        task: Option<JoinHandle<Result<(), IndexerError>>>,
        stop: Option<oneshot::Sender<()>>,
        ended: Option<IndexerExit>,
    },
    /// `sh -c CMD` leading its own process group, so stopping it stops
    /// whatever it started.
    Child(tokio::process::Child),
}

impl Running {
    /// `Some(how)` once the indexer has ended.
    async fn ended(&mut self) -> Option<IndexerExit> {
        match self {
            Running::InProcess { task, ended, .. } => {
                if let Some(finished) = task.take_if(|t| t.is_finished()) {
                    *ended = Some(match finished.await {
                        Ok(Ok(())) => IndexerExit::Stopped,
                        Ok(Err(e)) if e.is_halt() => IndexerExit::Halted(e.to_string()),
                        Ok(Err(e)) => IndexerExit::Crashed(e.to_string()),
                        Err(e) => IndexerExit::Crashed(format!("panicked: {e}")),
                    });
                }
                ended.clone()
            }
            Running::Child(child) => child.try_wait().ok().flatten().map(exit_of),
        }
    }

    /// Waits up to `grace` for the indexer to end.
    async fn ended_within(&mut self, grace: Duration) -> Option<IndexerExit> {
        let deadline = Instant::now() + grace;
        loop {
            if let Some(how) = self.ended().await {
                return Some(how);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        match self {
            Running::InProcess { task, stop, .. } => {
                if let Some(stop) = stop {
                    let _ = stop.send(());
                }
                if let Some(task) = task {
                    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
                }
            }
            Running::Child(mut child) => {
                // The whole group: `sh -c` may have left the indexer as its child.
                if let Some(pid) = child.id() {
                    let _ = std::process::Command::new("kill")
                        .args(["-s", "KILL", "--", &format!("-{pid}")])
                        .stderr(Stdio::null())
                        .status();
                }
                let _ = child.kill().await;
            }
        }
    }
}

fn exit_of(status: std::process::ExitStatus) -> IndexerExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => IndexerExit::Code(code),
        (None, Some(signal)) => IndexerExit::Signal(signal),
        (None, None) => IndexerExit::Crashed(format!("ended with {status}")),
    }
}

/// Runs `scenario` and returns the report (checks + measurements).
pub async fn run_scenario(
    scenario: &ReorgScenario,
    options: &RunOptions,
) -> Result<Report, RunError> {
    scenario.validate().map_err(|e| RunError::Usage(e.to_string()))?;
    let sim = ChainSimulator::new(scenario.chain.clone());
    let server = sim
        .serve(options.listen)
        .await
        .map_err(|e| RunError::CouldNotRun(format!("cannot listen on {}: {e}", options.listen)))?;
    let mapping = options.mapping.clone().unwrap_or_else(|| Mapping::reference(&options.schema));
    let target = format!("{} -> {}", server.http_url(), redact_url(&options.database_url));
    let mut report = Report::new("reorg-sim", env!("CARGO_PKG_VERSION"), target);
    let db = connect_db(&options.database_url)
        .await
        .map_err(|e| RunError::CouldNotRun(e.to_string()))?;

    let mut running =
        start_indexer(scenario, options, &server.http_url(), &server.ws_url()).await?;
    sim.set_lag(scenario.lag);
    let mut heads_before_reorg = Vec::new();
    let mut followed_reorgs = Vec::new();
    let mut detection_ms = Vec::new();
    let mut halt_head = None;
    let mut exit = None;
    let mut halted_seen = None;
    let started = Instant::now();
    let mut first_catch_up = None;
    for (i, step) in scenario.steps.iter().enumerate() {
        let last_step = i + 1 == scenario.steps.len();
        // (reorgs recorded before, when injected, index in detection_ms)
        let mut watch = None;
        match step {
            Step::Extend { to, events } => extend(&sim, scenario, *to, events).await,
            Step::Reorg(spec) => {
                let snap = verify::snapshot(&db, &mapping)
                    .await
                    .map_err(|e| RunError::CouldNotRun(e.to_string()))?;
                let head = snap.head.map_or(0, |(n, _)| n);
                let spec = ReorgSpec {
                    new_head: Some(resolve_new_head(spec, sim.head_number())),
                    ..spec.clone()
                };
                let beyond = scenario.expect == Expectation::Halt && last_step;
                if beyond {
                    halt_head = Some(sim.with_chain(|c| c.head().hash));
                }
                let entry = sim.reorg(&spec).map_err(|e| {
                    RunError::Usage(format!("scenario {}: step {}: {e}", scenario.name, i + 1))
                })?;
                let injected = Instant::now();
                if !beyond {
                    heads_before_reorg.push(head);
                    followed_reorgs.push(entry);
                    detection_ms.push(None);
                    watch = snap
                        .reorgs
                        .as_ref()
                        .map(|before| (before.len(), injected, detection_ms.len() - 1));
                }
            }
        }
        if scenario.wait_between_steps || last_step {
            let target = sim.with_chain(|c| (c.head_number(), c.head().hash));
            let t0 = Instant::now();
            let outcome = wait_for(
                &db,
                &mapping,
                &mut running,
                target,
                options.catch_up_timeout,
                watch.map(|(before, at, _)| (before, at)),
            )
            .await?;
            if first_catch_up.is_none() {
                first_catch_up = Some((t0.elapsed(), target.0 - scenario.chain.start_block + 1));
            }
            if matches!(step, Step::Reorg(_)) {
                report.push_measurement(Measurement::new(
                    format!("reorg_{}_convergence", i + 1),
                    t0.elapsed().as_secs_f64() * 1000.0,
                    "ms",
                ));
            }
            if let (Some((_, _, k)), Some(after)) = (watch, outcome.detected) {
                let ms = after.as_secs_f64() * 1000.0;
                detection_ms[k] = Some(ms);
                report.push_measurement(Measurement::new(
                    format!("reorg_{}_detection", i + 1),
                    ms,
                    "ms",
                ));
            }
            match outcome.end {
                Some(CatchUpEnd::Exited(how)) => {
                    exit = Some(how);
                    break;
                }
                Some(CatchUpEnd::Halted(reason)) => {
                    halted_seen = Some(reason);
                    break;
                }
                None => {}
            }
        }
    }
    sim.set_lag(Default::default());
    if exit.is_none() {
        // A halt is an exit: give a halted indexer the time to end.
        exit = if halted_seen.is_some() && scenario.expect == Expectation::Halt {
            running.ended_within(HALT_EXIT_GRACE).await
        } else {
            running.ended().await
        };
    }
    let snap =
        verify::snapshot(&db, &mapping).await.map_err(|e| RunError::CouldNotRun(e.to_string()))?;
    running.stop().await;
    let expected_head = halt_head.unwrap_or_else(|| sim.with_chain(|c| c.head().hash));
    let state = sim.with_chain(|c| CanonicalOracle::replay(&c.canonical_blocks_to(&expected_head)));
    if let Some(worst) = detection_ms.iter().flatten().copied().reduce(f64::max) {
        report.push_measurement(Measurement::new("detection_delay_max", worst, "ms"));
    }
    let expected = Expected {
        state,
        reorgs: Some(followed_reorgs),
        heads_before_reorg,
        detection_ms,
        halt: scenario.expect == Expectation::Halt,
        exit: exit.clone(),
        halt_exit_code: options.halt_exit_code,
    };
    for check in verify::compare(&snap, &expected) {
        report.push_check(check);
    }
    if scenario.expect == Expectation::Converge {
        let how = exit.as_ref().map(ToString::to_string).or(halted_seen);
        if let Some(how) = how {
            report.push_check(Check::fail(
                "indexer-running",
                "the indexer keeps running through reorgs within finality",
                how,
            ));
        }
    }
    if let Some((elapsed, blocks)) = first_catch_up {
        report.push_measurement(Measurement::new("first_catch_up_blocks", blocks as f64, "blocks"));
        report.push_measurement(Measurement::new(
            "first_catch_up_rate",
            blocks as f64 / elapsed.as_secs_f64().max(1e-9),
            "blocks/s",
        ));
    }
    if scenario.lag.every > 0 {
        report.push_measurement(Measurement::new(
            "lagged_responses",
            sim.lagged_responses() as f64,
            "",
        ));
    }
    report.push_measurement(Measurement::new(
        "scenario_duration",
        started.elapsed().as_secs_f64(),
        "s",
    ));
    report.push_measurement(Measurement::new(
        "canonical_events",
        expected.state.events.len() as f64,
        "",
    ));
    report.data.insert("scenario".to_owned(), serde_json::json!({"name": scenario.name, "description": scenario.description, "expect": scenario.expect}));
    report.finish();
    server.stopped().await;
    Ok(report)
}

async fn extend(sim: &ChainSimulator, scenario: &ReorgScenario, to: u64, events: &EventCounts) {
    match scenario.pace {
        Pace::Fast => {
            sim.extend(to, events);
        }
        Pace::Realtime => {
            let first = sim.head_number() + 1;
            let blocks = to.saturating_sub(first) + 1;
            let share = |total: u32, i: u64| -> u32 {
                let total = u64::from(total);
                u32::try_from((i + 1) * total / blocks - i * total / blocks).unwrap_or(0)
            };
            for (i, n) in (first..=to).enumerate() {
                let i = i as u64;
                let e = EventCounts {
                    mints: share(events.mints, i),
                    transfers: share(events.transfers, i),
                    burns: share(events.burns, i),
                    batches: share(events.batches, i),
                    uris: share(events.uris, i),
                };
                sim.extend(n, &e);
                tokio::time::sleep(Duration::from_secs(scenario.chain.block_time_secs)).await;
            }
        }
    }
}

async fn start_indexer(
    scenario: &ReorgScenario,
    options: &RunOptions,
    rpc_url: &str,
    ws_url: &str,
) -> Result<Running, RunError> {
    match &options.indexer {
        IndexerUnderTest::Reference { no_rollback } => {
            let mut admin = connect_db(&options.database_url)
                .await
                .map_err(|e| RunError::CouldNotRun(e.to_string()))?;
            let reset = plan_reset(&admin, &options.database_url, &options.schema).await?;
            reset.apply(&mut admin).await.map_err(reset_error)?;
            let config = IndexerConfig {
                schema: options.schema.clone(),
                start_block: scenario.chain.start_block,
                finality_depth: scenario.chain.finality_depth,
                batch_blocks: 100,
                poll_interval: Duration::from_millis(20),
                no_rollback: *no_rollback,
            };
            let mut indexer = ReferenceIndexer::connect(rpc_url, &options.database_url, config)
                .await
                .map_err(|e| match e {
                    IndexerError::Config(m) => RunError::Usage(m),
                    other => RunError::CouldNotRun(other.to_string()),
                })?;
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                indexer
                    .follow(async {
                        let _ = stopped.await;
                    })
                    .await
            });
            Ok(Running::InProcess { task: Some(task), stop: Some(stop), ended: None })
        }
        IndexerUnderTest::Command(command) => {
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .env("REORG_SIM_RPC_URL", rpc_url)
                .env("REORG_SIM_WS_URL", ws_url)
                .env("REORG_SIM_DATABASE_URL", &options.database_url)
                .env("REORG_SIM_START_BLOCK", scenario.chain.start_block.to_string())
                .env("REORG_SIM_FINALITY_DEPTH", scenario.chain.finality_depth.to_string())
                .env("REORG_SIM_CHAIN_ID", scenario.chain.chain_id.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    RunError::CouldNotRun(format!("cannot start --indexer-cmd {command:?}: {e}"))
                })?;
            Ok(Running::Child(child))
        }
    }
}

/// How a catch-up ended before the indexer reached its target.
enum CatchUpEnd {
    /// The indexer ended.
    Exited(IndexerExit),
    /// Its checkpoint says halted (the reason).
    Halted(String),
}

/// What [`wait_for`] saw.
struct CatchUp {
    /// How long after the reorg the indexer's reorg record appeared.
    detected: Option<Duration>,
    /// Ended before the target.
    end: Option<CatchUpEnd>,
}

/// Waits until the indexer's head is `target` (number and hash). Stops
/// early if the indexer ends or says it halted; a timeout is not an error:
/// the verifier reports how far it got. With `watch` (reorgs recorded
/// before the reorg, when it was injected), notes when a new record appears.
async fn wait_for(
    db: &tokio_postgres::Client,
    mapping: &Mapping,
    running: &mut Running,
    target: (u64, alloy_primitives::B256),
    timeout: Duration,
    watch: Option<(usize, Instant)>,
) -> Result<CatchUp, RunError> {
    let deadline = Instant::now() + timeout;
    let mut seen = CatchUp { detected: None, end: None };
    loop {
        if let Some(how) = running.ended().await {
            seen.end = Some(CatchUpEnd::Exited(how));
            return Ok(seen);
        }
        // Before the indexer created its tables the query fails: keep waiting.
        if let Ok(snap) = verify::snapshot(db, mapping).await {
            if let (Some((before, injected)), Some(recorded), None) =
                (watch, &snap.reorgs, seen.detected)
                && recorded.len() > before
            {
                seen.detected = Some(injected.elapsed());
            }
            if snap.head == Some(target) {
                return Ok(seen);
            }
            if let Some(reason) = snap.halted {
                seen.end = Some(CatchUpEnd::Halted(reason));
                return Ok(seen);
            }
        }
        if Instant::now() > deadline {
            tracing::warn!("the indexer did not reach block {} within {timeout:?}", target.0);
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reset_error(e: ResetError) -> RunError {
    match e {
        ResetError::Refused(m) => RunError::Usage(m),
        ResetError::Db(m) => RunError::CouldNotRun(m),
    }
}

/// What resetting `schema` in `database_url` will drop, or why it must not
/// (a public or system schema, one holding tables the reference indexer
/// did not create).
pub async fn plan_reset(
    client: &tokio_postgres::Client,
    database_url: &str,
    schema: &str,
) -> Result<SchemaReset, RunError> {
    SchemaReset::plan(client, &redact_url(database_url), schema).await.map_err(reset_error)
}

/// `run --dry-run`: what `run_scenario` would do, changing nothing. Refuses
/// what the run would refuse; connects only to inspect the schema.
pub async fn dry_run(scenario: &ReorgScenario, options: &RunOptions) -> Result<String, RunError> {
    scenario.validate().map_err(|e| RunError::Usage(e.to_string()))?;
    let mut plan = vec![format!(
        "dry run: nothing is changed. `run` would play scenario {} ({} steps, expect {:?})",
        scenario.name,
        scenario.steps.len(),
        scenario.expect
    )];
    match &options.indexer {
        IndexerUnderTest::Reference { no_rollback } => {
            crate::reset::check_droppable(&options.schema).map_err(reset_error)?;
            let db = connect_db(&options.database_url)
                .await
                .map_err(|e| RunError::CouldNotRun(e.to_string()))?;
            let reset = plan_reset(&db, &options.database_url, &options.schema).await?;
            plan.push(format!("reset the reference indexer's schema: {reset}"));
            plan.push(format!(
                "run the reference indexer{} into schema {}",
                if *no_rollback { " (no-rollback mode)" } else { "" },
                options.schema
            ));
        }
        IndexerUnderTest::Command(command) => {
            plan.push(format!(
                "start `sh -c {command:?}` (nothing is dropped: the indexer manages its own tables)"
            ));
        }
    }
    plan.push(format!(
        "serve the chain on {} and compare the indexer's database with the oracle",
        options.listen
    ));
    Ok(plan.join("\n"))
}

/// `reorg-sim verify`: reads the canonical chain `start_block..=head` from
/// any node, replays it with the oracle and compares `database_url`'s
/// state (through `mapping`). The reorg history comes from the simulator's
/// `reorgsim_reorgHistory`; other nodes have none and those checks are skipped.
pub async fn verify_against_node(
    rpc_url: &str,
    database_url: &str,
    mapping: &Mapping,
    start_block: u64,
) -> Result<Report, RunError> {
    let node = crate::node::NodeClient::new(rpc_url);
    let could_not = |e: String| RunError::CouldNotRun(e);
    let head = node.block_number().await.map_err(|e| could_not(e.to_string()))?;
    let blocks =
        node.canonical_blocks(start_block, head).await.map_err(|e| could_not(e.to_string()))?;
    let reorgs = match node.call("reorgsim_reorgHistory", serde_json::json!([])).await {
        Ok(value) => serde_json::from_value(value).ok(),
        Err(_) => None,
    };
    let db = connect_db(database_url).await.map_err(|e| could_not(e.to_string()))?;
    let snap = verify::snapshot(&db, mapping).await.map_err(|e| could_not(e.to_string()))?;
    let mut report = Report::new(
        "reorg-sim",
        env!("CARGO_PKG_VERSION"),
        format!("{rpc_url} -> {}", redact_url(database_url)),
    );
    let expected =
        Expected { state: CanonicalOracle::replay(&blocks), reorgs, ..Expected::default() };
    for check in verify::compare(&snap, &expected) {
        report.push_check(check);
    }
    report.push_measurement(Measurement::new("canonical_blocks", blocks.len() as f64, "blocks"));
    report.push_measurement(Measurement::new(
        "canonical_events",
        expected.state.events.len() as f64,
        "",
    ));
    report.finish();
    Ok(report)
}

/// `reorg-sim simulate`: serves `scenario`'s chain on `listen`, playing one
/// step every `step_interval` (`None`: only the first step; drive the rest
/// with `reorgsim_mine` / `reorgsim_reorg`), until `stop` resolves.
/// `ready` gets the HTTP URL once the server listens.
pub async fn simulate(
    scenario: &ReorgScenario,
    listen: SocketAddr,
    step_interval: Option<Duration>,
    ready: impl FnOnce(&str),
    stop: impl Future<Output = ()>,
) -> Result<(), RunError> {
    scenario.validate().map_err(|e| RunError::Usage(e.to_string()))?;
    let sim = ChainSimulator::new(scenario.chain.clone());
    sim.set_lag(scenario.lag);
    let server = sim
        .serve(listen)
        .await
        .map_err(|e| RunError::CouldNotRun(format!("cannot listen on {listen}: {e}")))?;
    ready(&server.http_url());
    let play = async {
        for (i, step) in scenario.steps.iter().enumerate() {
            if i > 0 {
                match step_interval {
                    Some(interval) => tokio::time::sleep(interval).await,
                    None => std::future::pending::<()>().await,
                }
            }
            match step {
                Step::Extend { to, events } => extend(&sim, scenario, *to, events).await,
                Step::Reorg(spec) => {
                    let spec = ReorgSpec {
                        new_head: Some(resolve_new_head(spec, sim.head_number())),
                        ..spec.clone()
                    };
                    if let Err(e) = sim.reorg(&spec) {
                        tracing::error!("step {}: {e}", i + 1);
                    }
                }
            }
            tracing::info!(step = i + 1, head = sim.head_number(), "played");
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = play => {}
        () = stop => {}
    }
    server.stopped().await;
    Ok(())
}

/// `run` and `bench` drop and recreate the reference indexer's schema: they
/// act only on loopback databases and on hosts listed in `allowed`.
pub fn check_allowed_database(url: &str, allowed: &[String]) -> Result<(), RunError> {
    // A URL without a host (a Unix socket) is local.
    let refused = shared_types::outside_allow_list(shared_types::url_hosts(url), allowed);
    if refused.is_empty() {
        return Ok(());
    }
    Err(RunError::Usage(shared_types::allow_list_refusal(
        "reset schemas on",
        &refused,
        "--allow-target",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_or_listed_databases_are_touched() {
        assert!(check_allowed_database("postgres://postgres@127.0.0.1:5432/postgres", &[]).is_ok());
        assert!(check_allowed_database("postgres://u:p@localhost/db", &[]).is_ok());
        assert!(check_allowed_database("postgres://u:p@[::1]:5432/db", &[]).is_ok());
        assert!(check_allowed_database("postgres://u:p@db.prod:5432/db", &[]).is_err());
        assert!(
            check_allowed_database("postgres://u:p@db.prod:5432/db", &["db.prod".to_owned()])
                .is_ok()
        );
    }
}
