//! Running a [`ScenarioPlan`] under a [`LoadModel`] on goose: each YAML
//! scenario becomes a goose `Scenario`, each transaction a goose
//! `Transaction` whose requests go through the goose user (so goose keeps its
//! own counts), timed to the microsecond into the [`Recorder`]. One shared
//! HTTP client without cookies serves every user: 10,000 users cost 10,000
//! small tasks, not 10,000 connection pools.
//!
//! The open model runs on goose too: `max_users` goose users take arrivals
//! from one [`ArrivalSchedule`], wait for each arrival's intended start, and
//! report latency from it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use goose::client::GooseClientBuilder;
use goose::config::{GooseConfiguration, GooseDefault, GooseDefaultType};
use goose::goose::{
    Scenario as GooseScenario, Transaction as GooseTransaction, TransactionFunction,
};
use goose::{GooseAttack, GooseError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::LoadError;
use crate::model::{ArrivalSchedule, LoadModel};
use crate::scenario::{ScenarioPlan, ThinkTime};
use crate::slo::Criteria;
use crate::stats::{Recorder, RunStats, Totals};
use crate::template::UserRng;
use crate::transaction::{CustomTransaction, Shared};
use crate::watch::{ServiceWatch, WatchOptions, Watcher};

/// Everything a run needs.
#[derive(Clone)]
pub struct RunOptions {
    /// Base URL of the system under test.
    pub target: String,
    /// What users do.
    pub plan: ScenarioPlan,
    /// How load is applied (already divided for a shard).
    pub model: LoadModel,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// Replaces every think time of the plan.
    pub think_time: Option<ThinkTime>,
    /// Gates, for `--abort-on-fail`.
    pub criteria: Criteria,
    /// Stop as soon as a latency or error gate is broken.
    pub abort_on_fail: bool,
    /// Prometheus endpoints to watch.
    pub watch: Option<WatchOptions>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Transactions written in Rust, by the name scenarios use (`custom: NAME`).
    pub custom: BTreeMap<String, CustomTransaction>,
    /// Let goose aggregate its own request metrics too (a cross-check; costs throughput).
    pub goose_metrics: bool,
    /// Seed of the users' random generators.
    pub seed: u64,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("target", &self.target)
            .field("plan", &self.plan.name)
            .field("model", &self.model)
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Latencies, errors, series.
    pub stats: RunStats,
    /// What the watched endpoints showed.
    pub services: Vec<ServiceWatch>,
    /// Why the run stopped before its end, if it did.
    pub stopped_early: Option<String>,
    /// Requests goose counted itself, when its metrics were on.
    pub goose_requests: Option<u64>,
}

const ARRIVALS_DONE: &str = "load-tester: arrival schedule complete";

/// An arrival picked up this long after it was due found no free user.
const LATE_ARRIVAL: Duration = Duration::from_millis(100);

/// Runs the load and returns what was measured.
///
/// Under [`LoadModel::Staged`], standard output (file descriptor 1) points at
/// standard error while goose runs, because goose's test-plan mode prints
/// progress lines on stdout; the caller's own stdout writes in that window
/// land on stderr too.
pub async fn run_load(options: &RunOptions) -> Result<RunOutcome, LoadError> {
    let transactions: Vec<_> = options.plan.transactions().cloned().collect();
    if let Some(missing) = transactions.iter().find_map(|t| match &t.action {
        crate::scenario::Action::Custom(name) if !options.custom.contains_key(name) => {
            Some(name.clone())
        }
        _ => None,
    }) {
        return Err(LoadError::Usage(format!(
            "the scenario uses `custom: {missing}`, but no Rust transaction is registered under that name \
             (custom transactions come from the library API: RunOptions::custom)"
        )));
    }
    let recorder = Arc::new(Recorder::new(
        transactions.iter().map(|t| t.name.clone()).collect(),
        options.model.corrected(),
    ));
    let shared = Arc::new(Shared {
        plan: options.plan.clone(),
        transactions,
        recorder: recorder.clone(),
        custom: options.custom.clone(),
        next_user: AtomicUsize::new(0),
        seed: options.seed,
    });
    let total = Duration::from_secs(options.model.total_secs());
    let stopping = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let schedule = match &options.model {
        LoadModel::Open { rate, duration_secs, .. } => {
            Some(Arc::new(ArrivalSchedule::new(rate.clone(), Duration::from_secs(*duration_secs))))
        }
        LoadModel::Closed { .. } | LoadModel::Staged { .. } => None,
    };
    let scenarios = match &schedule {
        None => closed_scenarios(options, &shared, &stopping)?,
        Some(schedule) => open_scenarios(options, &shared, schedule, &in_flight)?,
    };
    let attack = configure(options, scenarios).map_err(|e| goose_error(&e))?;

    let started = Instant::now();
    let watcher = options.watch.as_ref().map(|w| Watcher::start(w, scrape_client(), started));
    let progress = options.progress.then(|| progress_bar(total));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let aborted: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let controller = {
        let (recorder, criteria, aborted, stopping) =
            (recorder.clone(), options.criteria.clone(), aborted.clone(), stopping.clone());
        let (abort_on_fail, progress, schedule, in_flight) =
            (options.abort_on_fail, progress.clone(), schedule.clone(), in_flight.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                let totals = recorder.tick();
                if started.elapsed() >= total {
                    stopping.store(true, Ordering::Relaxed);
                }
                if let Some(bar) = &progress {
                    show(bar, &totals, started.elapsed());
                }
                if abort_on_fail && let Some(reason) = criteria.breached(&totals) {
                    *aborted.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(format!("--abort-on-fail: {reason}"));
                    stopping.store(true, Ordering::Relaxed);
                    goose::trigger_killswitch("load-tester: a criterion failed (--abort-on-fail)");
                }
                if let Some(s) = &schedule
                    && s.started().is_some_and(|t| t.elapsed() >= s.duration())
                    && in_flight.load(Ordering::Relaxed) == 0
                {
                    goose::trigger_killswitch(ARRIVALS_DONE);
                }
            }
        })
    };

    let result = {
        // In test-plan mode (stages) goose prints "N users launched." on
        // stdout, which belongs to the report (`--output json`): send it to
        // stderr for the run. Process-wide, so only when goose would print.
        let _stdout =
            matches!(options.model, LoadModel::Staged { .. }).then(StdoutToStderr::redirect);
        Box::pin(attack.execute()).await
    };
    // The open model's window is the arrival schedule: throughput is
    // completions per scheduled second, as wrk2 counts it.
    let elapsed = match &schedule {
        Some(s) => s.started().map_or(started.elapsed(), |t| t.elapsed().min(s.duration())),
        None => started.elapsed(),
    };
    stopping.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = controller.await;
    recorder.tick();
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let services = match watcher {
        Some(w) => w.stop().await,
        None => Vec::new(),
    };
    let metrics = result.map_err(|e| goose_error(&e))?;
    let goose_requests = options
        .goose_metrics
        .then(|| metrics.requests.values().map(|r| (r.success_count + r.fail_count) as u64).sum());
    let stopped_early = aborted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Ok(RunOutcome { stats: recorder.finish(elapsed), services, stopped_early, goose_requests })
}

fn goose_error(e: &GooseError) -> LoadError {
    LoadError::CouldNotRun(format!("goose could not run the load test: {e}"))
}

fn scrape_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap_or_default()
}

/// A pause of `think` (random within its bounds), cut short when the run ends.
async fn pause(think: ThinkTime, stopping: &AtomicBool) {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let span = think.max.saturating_sub(think.min).as_micros() as u64;
    let extra = UserRng::new(SEQ.fetch_add(1, Ordering::Relaxed)).below(span.saturating_add(1));
    let deadline = Instant::now() + think.min + Duration::from_micros(extra);
    while !stopping.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(Duration::from_millis(250))).await;
    }
}

fn closed_scenarios(
    options: &RunOptions,
    shared: &Arc<Shared>,
    stopping: &Arc<AtomicBool>,
) -> Result<Vec<GooseScenario>, LoadError> {
    let mut out = Vec::new();
    let mut id = 0;
    for s in &options.plan.scenarios {
        let mut scenario =
            GooseScenario::new(&s.name).set_weight(s.weight).map_err(|e| goose_error(&e))?;
        if let Some(t) = options.think_time.or(s.think_time).or(options.plan.think_time)
            && !t.max.is_zero()
        {
            scenario = scenario.set_wait_time(t.min, t.max).map_err(|e| goose_error(&e))?;
        }
        for tx in &s.transactions {
            let (shared, stopping, think) = (
                shared.clone(),
                stopping.clone(),
                if options.think_time.is_some() { None } else { tx.think_time },
            );
            let this = id;
            let function: TransactionFunction = Arc::new(move |user| {
                let (shared, stopping) = (shared.clone(), stopping.clone());
                Box::pin(async move {
                    shared.perform(this, user, None).await;
                    if let Some(t) = think {
                        pause(t, &stopping).await;
                    }
                    Ok(())
                })
            });
            let mut transaction = GooseTransaction::new(function).set_name(&tx.name);
            if tx.on_start {
                transaction = transaction.set_on_start();
            }
            if tx.weight > 1 {
                transaction = transaction.set_weight(tx.weight).map_err(|e| goose_error(&e))?;
            }
            scenario = scenario.register_transaction(transaction);
            id += 1;
        }
        out.push(scenario);
    }
    Ok(out)
}

fn open_scenarios(
    options: &RunOptions,
    shared: &Arc<Shared>,
    schedule: &Arc<ArrivalSchedule>,
    in_flight: &Arc<AtomicUsize>,
) -> Result<Vec<GooseScenario>, LoadError> {
    // Arrivals pick a transaction by scenario weight x transaction weight.
    let mut picks: Vec<(u64, usize)> = Vec::new();
    let mut total = 0u64;
    let mut on_start = Vec::new();
    let mut id = 0;
    for s in &options.plan.scenarios {
        for tx in &s.transactions {
            if tx.on_start {
                on_start.push((id, tx.name.clone()));
            } else {
                total += (s.weight * tx.weight) as u64;
                picks.push((total, id));
            }
            id += 1;
        }
    }
    let mut scenario = GooseScenario::new("open model");
    for (id, name) in on_start {
        let shared = shared.clone();
        let function: TransactionFunction = Arc::new(move |user| {
            let shared = shared.clone();
            Box::pin(async move {
                shared.perform(id, user, None).await;
                Ok(())
            })
        });
        scenario = scenario
            .register_transaction(GooseTransaction::new(function).set_name(&name).set_on_start());
    }
    let (shared, schedule, in_flight) = (shared.clone(), schedule.clone(), in_flight.clone());
    let picks = Arc::new(picks);
    let seq = Arc::new(AtomicU64::new(options.seed));
    let function: TransactionFunction = Arc::new(move |user| {
        let (shared, schedule, in_flight, picks, seq) =
            (shared.clone(), schedule.clone(), in_flight.clone(), picks.clone(), seq.clone());
        Box::pin(async move {
            let Some(intended) = schedule.next() else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(());
            };
            let lag = Instant::now().saturating_duration_since(intended);
            if lag > LATE_ARRIVAL {
                shared.recorder.late_arrival(lag);
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until(intended.into()).await;
            let r = UserRng::new(seq.fetch_add(1, Ordering::Relaxed)).below(total);
            let id = picks.iter().find(|(cum, _)| r < *cum).map_or(0, |(_, id)| *id);
            shared.perform(id, user, Some(intended)).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            Ok(())
        })
    });
    Ok(vec![scenario.register_transaction(GooseTransaction::new(function).set_name("arrival"))])
}

fn configure(
    options: &RunOptions,
    scenarios: Vec<GooseScenario>,
) -> Result<GooseAttack, GooseError> {
    let client = GooseClientBuilder::new()
        .without_cookies()
        .timeout(options.timeout)
        .user_agent(concat!("postlaunch-load-tester/", env!("CARGO_PKG_VERSION")));
    let mut attack = GooseAttack::initialize_with_config(GooseConfiguration::default())?
        .set_client_builder_without_cookies(client)?;
    for s in scenarios {
        attack = attack.register_scenario(s);
    }
    let mut attack = *attack
        .set_default(GooseDefault::Host, options.target.as_str())?
        .set_default(GooseDefault::NoTelnet, true)?
        .set_default(GooseDefault::NoPrintMetrics, true)?
        .set_default(GooseDefault::NoErrorSummary, true)?
        .set_default(GooseDefault::NoMetrics, !options.goose_metrics)?
        .set_default(GooseDefault::NoGzip, true)?;
    attack = match &options.model {
        // goose's ramp up / hold / ramp down.
        LoadModel::Closed { users, hatch_rate, duration_secs, ramp_down_secs } => {
            let attack = attack
                .set_default(GooseDefault::Users, *users)?
                .set_default(GooseDefault::IncreaseRate, format!("{hatch_rate}").as_str())?
                .set_default(GooseDefault::RunTime, *duration_secs as usize)?;
            if *ramp_down_secs > 0 {
                *attack.set_default(GooseDefault::DecreaseTime, *ramp_down_secs as usize)?
            } else {
                *attack
            }
        }
        // k6-like stages are goose's test plan, step for step.
        LoadModel::Staged { stages } => {
            *attack.set_default(GooseDefault::TestPlan, stages.goose_test_plan().as_str())?
        }
        LoadModel::Open { max_users, duration_secs, .. } => *attack
            .set_default(GooseDefault::Users, *max_users)?
            .set_default(
                GooseDefault::IncreaseRate,
                format!("{}", (*max_users * 50).max(1000)).as_str(),
            )?
            // Ended by the controller once the schedule is done and nothing is in flight.
            .set_default(
                GooseDefault::RunTime,
                (*duration_secs + options.timeout.as_secs() + 5) as usize,
            )?,
    };
    Ok(attack)
}

/// While alive, file descriptor 1 points at standard error; dropping it
/// restores standard output. Best effort: if the descriptors cannot be
/// duplicated, output is left where it is.
struct StdoutToStderr {
    saved: Option<std::os::fd::OwnedFd>,
}

impl StdoutToStderr {
    fn redirect() -> StdoutToStderr {
        use std::io::Write as _;
        use std::os::fd::AsFd as _;
        let _ = std::io::stdout().flush();
        let saved = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .filter(|_| rustix::stdio::dup2_stdout(std::io::stderr().as_fd()).is_ok());
        StdoutToStderr { saved }
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        use std::io::Write as _;
        if let Some(saved) = &self.saved {
            let _ = std::io::stdout().flush();
            let _ = rustix::stdio::dup2_stdout(saved);
        }
    }
}

fn progress_bar(total: Duration) -> ProgressBar {
    let bar = ProgressBar::new(total.as_secs().max(1));
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn show(bar: &ProgressBar, totals: &Totals, elapsed: Duration) {
    bar.set_position(elapsed.as_secs());
    let last = totals.last_second.as_ref();
    let rate = if totals.requests == 0 {
        0.0
    } else {
        100.0 * totals.errors as f64 / totals.requests as f64
    };
    bar.set_message(format!(
        "{} req/s · p95 {:.0} ms · errors {rate:.2} % ({} total)",
        last.map_or(0, |s| s.requests),
        totals.latency.percentile_ms(95.0),
        totals.errors
    ));
}
