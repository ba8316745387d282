//! Does PostgreSQL fail over in under 30 s without losing an acknowledged
//! commit? `pg-failover-probe` measures it from the client's side, the way
//! Jepsen would.
//!
//! Writer tasks insert `(writer, seq, payload, client time)` rows through a
//! `deadpool-postgres` pool configured like a service's (multi-host URL,
//! `target_session_attrs=read-write`, timeouts). Every acknowledged commit goes
//! into an [`ledger::AckLedger`] journaled to a file before anything else
//! happens; commits whose outcome is unknown are recorded as indeterminate.
//! Readers measure read availability, an [`observe::Observer`] samples every
//! server's role, timeline, WAL position and replication state. After the
//! failover the ledger is checked against the new primary and the run is judged
//! by the launch plan's criteria:
//!
//! | check | default criterion |
//! |---|---|
//! | `failover-time` | `downtime < 30s` (longest span without a successful write) |
//! | `read-availability` | `read_downtime < 30s` |
//! | `data-loss` | `lost == 0` acknowledged commits missing |
//! | `duplicates` | `duplicates == 0` |
//! | `pool-recovery` | writes succeed again without restarting the probe |
//! | `failover-visible` | another primary or a new timeline is seen |
//! | `replication-durability` | settings cannot lose acknowledged commits (sync replication) |
//!
//! Modes: [`Mode::Watch`] measures whatever failover happens (game days with
//! Patroni or CloudNativePG), [`Mode::Drill`] triggers it with shell commands and
//! compares with their timestamps, [`check_ledger_report`] re-verifies a saved
//! ledger later.
//!
//! ```no_run
//! # async fn example() -> Result<(), pg_failover_probe::ProbeError> {
//! use std::time::Duration;
//! use pg_failover_probe::{Mode, RunOptions};
//! let target = "postgres://postgres@127.0.0.1:5433,127.0.0.1:5434/postgres".parse().expect("url");
//! let options = RunOptions::new(target, "probe.jsonl".into());
//! let report = pg_failover_probe::run(&options, Mode::Watch { duration: Some(Duration::from_secs(60)) }, std::future::pending()).await?;
//! println!("{}", report.to_json_pretty());
//! # Ok(()) }
//! ```

pub mod ledger;
pub mod ledger_check;
pub mod observe;
pub mod target;
pub mod verdict;
pub mod workload;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared_types::{Check, Report};

use crate::ledger::{AckLedger, JournalEntry, LedgerContents, unix_millis};
use crate::observe::Observer;
use crate::target::Target;
use crate::verdict::{Criteria, Observations};
use crate::workload::{AttemptKind, Outcome, Workload, WorkloadConfig};

/// Why a run could not give a verdict: bad flags (exit 2) or a target that
/// could not be used (exit 3).
pub use shared_types::ToolError as ProbeError;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The database under test.
    pub target: Target,
    /// Writers, readers, pacing, timeouts, schema.
    pub workload: WorkloadConfig,
    /// The ack journal; an existing one is resumed.
    pub ledger_path: PathBuf,
    /// Run id for a new ledger.
    pub run_id: String,
    /// How often each server is sampled.
    pub sample_interval: Duration,
    /// How long to wait for a primary when checking the ledger.
    pub verify_wait: Duration,
    /// The criteria.
    pub criteria: Criteria,
    /// Show a live status line on stderr (only drawn on a terminal).
    pub progress: bool,
}

impl RunOptions {
    /// Defaults for `target` journaling to `ledger_path`.
    pub fn new(target: Target, ledger_path: PathBuf) -> Self {
        Self {
            target,
            workload: WorkloadConfig::default(),
            ledger_path,
            run_id: format!("run-{}", unix_millis()),
            sample_interval: Duration::from_millis(500),
            verify_wait: Duration::from_secs(60),
            criteria: Criteria::default(),
            progress: false,
        }
    }
}

/// A failover triggered by the probe itself.
#[derive(Debug, Clone)]
pub struct DrillPlan {
    /// Shell commands run one after the other (`sh -c`), e.g. an immediate stop
    /// of the primary then `pg_ctl promote` of the standby.
    pub steps: Vec<String>,
    /// Probing before the first step, to have a baseline.
    pub warmup: Duration,
    /// Probing after writes recovered.
    pub settle: Duration,
    /// Longest wait for writes to recover after the last step.
    pub max_wait: Duration,
    /// Longest run of one step.
    pub step_timeout: Duration,
}

impl DrillPlan {
    /// What `drill --dry-run` prints: everything the drill would do against
    /// `options`' target, nothing done.
    pub fn describe(&self, options: &RunOptions) -> String {
        let w = &options.workload;
        let mut out = format!(
            "dry run: nothing is changed. The drill would:\n  probe {} with {} writers and {} readers (schema {})\n  journal acknowledged commits to {}\n  after {:?} of warm-up, run:\n",
            options.target.display(),
            w.writers,
            w.readers,
            w.schema,
            options.ledger_path.display(),
            self.warmup
        );
        for (i, step) in self.steps.iter().enumerate() {
            out.push_str(&format!("    {}. sh -c {step:?}\n", i + 1));
        }
        out.push_str(&format!(
            "  wait up to {:?} for writes to recover, then check every acknowledged commit\n",
            self.max_wait
        ));
        out
    }
}

/// What to do while the workload runs.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Measure whatever happens, until the duration ends or `shutdown` completes.
    Watch {
        /// How long; `None` = until shutdown.
        duration: Option<Duration>,
    },
    /// Trigger the failover with the plan's steps.
    Drill(DrillPlan),
}

/// Runs the probe and returns the judged report.
pub async fn run(
    options: &RunOptions,
    mode: Mode,
    shutdown: impl Future<Output = ()>,
) -> Result<Report, ProbeError> {
    let target = &options.target;
    workload::prepare(target, &options.workload).await.map_err(|e| {
        ProbeError::CouldNotRun(format!(
            "cannot reach a primary at {}: {}; is PostgreSQL running and does --url name the right hosts (and sslmode/sslrootcert the right CA)?",
            target.display(),
            shared_types::pg::error_chain(&e)
        ))
    })?;
    let ledger = AckLedger::open(
        &options.ledger_path,
        &options.run_id,
        &target.display(),
        &options.workload.schema,
    )
    .map_err(|e| ProbeError::CouldNotRun(e.to_string()))?;
    let ledger = Arc::new(ledger);
    let mut report = Report::new("pg-failover-probe", env!("CARGO_PKG_VERSION"), target.display());
    report.data.insert("run_id".to_owned(), serde_json::json!(ledger.run_id()));
    report.data.insert("incarnation".to_owned(), serde_json::json!(ledger.incarnation()));
    report.data.insert("ledger".to_owned(), serde_json::json!(ledger.path().display().to_string()));

    let workload =
        Workload::start(target, &options.workload, ledger.clone()).map_err(ProbeError::Usage)?;
    let started = workload.started;
    let observer =
        Observer::start(target, options.sample_interval, options.workload.connect_timeout, started);
    let progress =
        options.progress.then(|| Progress::start(workload.timeline.clone(), ledger.clone()));

    let mut drill_window = None;
    let mut drill_error = None;
    tokio::pin!(shutdown);
    match &mode {
        Mode::Watch { duration } => match duration {
            Some(d) => {
                tokio::select! { _ = tokio::time::sleep(*d) => {}, _ = &mut shutdown => {} }
            }
            None => shutdown.as_mut().await,
        },
        Mode::Drill(plan) => {
            let interrupted = tokio::select! { _ = tokio::time::sleep(plan.warmup) => false, _ = &mut shutdown => true };
            if !interrupted {
                match run_steps(plan, &ledger, started, &mut shutdown).await {
                    Ok(window) => {
                        drill_window = Some(window);
                        wait_for_recovery(&workload, window.1, plan, &mut shutdown).await;
                    }
                    Err(e) => drill_error = Some(e),
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let timeline = workload.stop().await;
    let samples = observer.stop().await;
    if let Some(progress) = progress {
        progress.finish();
    }
    let contents = ledger.contents();
    let ledger_check = ledger_check::check_ledger(
        target,
        &contents,
        options.workload.connect_timeout,
        options.verify_wait,
    )
    .await
    .map_err(|e| e.to_string());
    if let Some(e) = &drill_error {
        report.push_check(Check::error("drill", "the drill's steps ran", e.clone()));
    }
    let observations = Observations {
        attempts: timeline.snapshot(),
        samples,
        ledger: ledger_check,
        elapsed,
        failover_expected: matches!(mode, Mode::Drill(_)) && drill_error.is_none(),
        drill_window,
    };
    verdict::judge(&mut report, &observations, &options.criteria);
    report.data.insert("drill_steps".to_owned(), serde_json::json!(contents.drill_steps));
    report.finish();
    Ok(report)
}

/// Runs the drill's steps; returns the window from the first step's start to
/// the last step's end, relative to the run's start.
async fn run_steps(
    plan: &DrillPlan,
    ledger: &AckLedger,
    started: Instant,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<(Duration, Duration), String> {
    let first = started.elapsed();
    for command in &plan.steps {
        let started_ms = unix_millis();
        // Journaled before the command runs: a crash mid-step leaves a record.
        ledger
            .record_step(JournalEntry::DrillStepStarted { command: command.clone(), started_ms })
            .map_err(|e| e.to_string())?;
        tracing::info!(%command, "drill step");
        let child =
            tokio::process::Command::new("sh").arg("-c").arg(command).kill_on_drop(true).output();
        // Ctrl-C kills the step (kill_on_drop) and journals it as interrupted.
        let output = tokio::select! {
            output = tokio::time::timeout(plan.step_timeout, child) => Some(output),
            _ = &mut *shutdown => None,
        };
        let Some(output) = output else {
            ledger
                .record_step(JournalEntry::DrillStep {
                    command: command.clone(),
                    started_ms,
                    finished_ms: unix_millis(),
                    exit_code: None,
                })
                .map_err(|e| e.to_string())?;
            return Err(format!(
                "drill step `{command}` interrupted (Ctrl-C); the step was killed"
            ));
        };
        let (exit_code, failure) = match output {
            Ok(Ok(out)) if out.status.success() => (out.status.code(), None),
            Ok(Ok(out)) => (
                out.status.code(),
                Some(format!(
                    "drill step `{command}` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            ),
            Ok(Err(e)) => (None, Some(format!("cannot run drill step `{command}`: {e}"))),
            Err(_) => (
                None,
                Some(format!(
                    "drill step `{command}` did not finish within {:?}",
                    plan.step_timeout
                )),
            ),
        };
        let step = JournalEntry::DrillStep {
            command: command.clone(),
            started_ms,
            finished_ms: unix_millis(),
            exit_code,
        };
        ledger.record_step(step).map_err(|e| e.to_string())?;
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
    Ok((first, started.elapsed()))
}

/// Waits until a write succeeds after `after`, then `settle` more, bounded by
/// `max_wait` and shutdown.
async fn wait_for_recovery(
    workload: &Workload,
    after: Duration,
    plan: &DrillPlan,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) {
    let deadline = Instant::now() + plan.max_wait;
    let recovered = async {
        loop {
            let done = workload.timeline.snapshot().iter().any(|a| {
                a.kind == AttemptKind::Write && a.outcome == Outcome::Ok && a.started >= after
            });
            if done || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(plan.settle).await;
    };
    tokio::select! { _ = recovered => {}, _ = shutdown => {} }
}

/// Re-verifies a saved ledger against the database.
pub async fn check_ledger_report(
    target: &Target,
    ledger_path: &std::path::Path,
    wait: Duration,
    criteria: &Criteria,
) -> Result<Report, ProbeError> {
    let contents =
        LedgerContents::load(ledger_path).map_err(|e| ProbeError::Usage(e.to_string()))?;
    let check = ledger_check::check_ledger(target, &contents, Duration::from_secs(5), wait)
        .await
        .map_err(|e| ProbeError::CouldNotRun(e.to_string()))?;
    let mut report = Report::new("pg-failover-probe", env!("CARGO_PKG_VERSION"), target.display());
    let observations = Observations {
        attempts: Vec::new(),
        samples: Vec::new(),
        ledger: Ok(check),
        elapsed: Duration::ZERO,
        failover_expected: false,
        drill_window: None,
    };
    // Only the ledger's checks apply to a saved ledger.
    verdict::judge(&mut report, &observations, criteria);
    report.checks.retain(|c| matches!(c.id.as_str(), "data-loss" | "duplicates"));
    report.measurements.retain(|m| {
        matches!(
            m.name.as_str(),
            "rows_found"
                | "lost_commits"
                | "indeterminate_committed"
                | "indeterminate_not_committed"
        )
    });
    report.data.insert("run_id".to_owned(), serde_json::json!(contents.run_id));
    report.data.insert("acknowledged".to_owned(), serde_json::json!(contents.acked.len()));
    report.finish();
    Ok(report)
}

/// Schemas cleanup never drops: `public` (the application's tables live
/// there) and PostgreSQL's own (`pg_catalog`, `information_schema`,
/// `pg_toast`, `pg_temp_*`, anything starting with `pg_`).
pub fn refuse_shared_schema(schema: &str) -> Result<(), ProbeError> {
    let lower = schema.to_ascii_lowercase();
    if lower == "public" || lower == "information_schema" || lower.starts_with("pg_") {
        return Err(ProbeError::Usage(format!(
            "refusing to drop schema {schema:?}: it is not the probe's own (public and system schemas are never dropped); pass the probe's --schema"
        )));
    }
    Ok(())
}

/// Drops the probe schema from the primary. Refuses `public` and system
/// schemas ([`refuse_shared_schema`]).
pub async fn cleanup(target: &Target, schema: &str) -> Result<(), ProbeError> {
    refuse_shared_schema(schema)?;
    let (client, connection) =
        target.writer_config(Duration::from_secs(5)).connect(target.tls()).await.map_err(|e| {
            ProbeError::CouldNotRun(format!(
                "cannot reach a primary at {}: {}",
                target.display(),
                shared_types::pg::error_chain(&e)
            ))
        })?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .map_err(|e| ProbeError::CouldNotRun(e.to_string()))
}

/// A live status line on stderr.
struct Progress {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(timeline: Arc<workload::Timeline>, ledger: Arc<AckLedger>) -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        let ticker = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let (ok, failed, unknown) = timeline.counts(AttemptKind::Write);
                let (reads, read_failed, _) = timeline.counts(AttemptKind::Read);
                ticker.set_message(format!(
                    "writes: {ok} ok, {failed} failed, {unknown} indeterminate · reads: {reads} ok, {read_failed} failed · ledger {}",
                    ledger.acked_count()
                ));
                ticker.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self { bar, task }
    }

    fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
