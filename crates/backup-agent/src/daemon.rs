//! `backup-agent daemon`: run the agent's own commands on cron schedules and
//! publish how they went as Prometheus metrics, for the backup-freshness
//! alerts (`time() - backup_last_success_timestamp_seconds > 26h`).
//!
//! Each job is a command line of this same binary (`backup postgres ...`,
//! `verify --restore ...`, `prune ...`), run as a child process with
//! `--output json` at each occurrence of its schedule (UTC). A job never
//! overlaps itself: the next occurrence is computed after a run ends. On
//! SIGTERM or Ctrl-C no new run starts and running ones are waited for (a
//! backup killed midway is harmless: it has no manifest, and `recover`
//! removes it).
//!
//! ```yaml
//! metrics_listen: 0.0.0.0:9187        # GET /metrics, GET /healthz
//! jobs:
//!   - name: pg-nightly
//!     schedule: "0 2 * * *"            # minute hour day month weekday (UTC); 6 fields add seconds first
//!     args: [backup, postgres, --repo, "s3://backups/prod/pg", --pg-url, "postgres://backup@db:5432/app"]
//!   - name: pg-verify-weekly
//!     schedule: "0 4 * * SUN"
//!     args: [verify, --repo, "s3://backups/prod/pg", --restore]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};
use serde::Deserialize;
use shared_types::{Report, Verdict};

use crate::error::{AgentError, Result};

/// Commands a job may run.
pub const JOB_COMMANDS: [&str; 5] = ["backup", "verify", "prune", "drill", "recover"];

/// The daemon's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Where `/metrics` and `/healthz` are served; none serves nothing.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The scheduled jobs.
    pub jobs: Vec<JobConfig>,
}

/// One scheduled command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Unique name, the `job` label of its metrics.
    pub name: String,
    /// Cron pattern in UTC: 5 fields, or 6 with seconds first; `@daily` and friends.
    pub schedule: String,
    /// The agent's arguments, e.g. `[backup, postgres, --repo, s3://b/p, --pg-url, URL]`.
    pub args: Vec<String>,
}

impl DaemonConfig {
    /// Reads and checks a configuration file: YAML errors name the file,
    /// line and key; schedules, names and commands are checked up front.
    pub fn from_file(path: &Path) -> Result<DaemonConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            AgentError::Usage(format!("cannot read the daemon config {}: {e}", path.display()))
        })?;
        let config: DaemonConfig = serde_saphyr::from_str(&text)
            .map_err(|e| AgentError::Usage(format!("{}: {e}", path.display())))?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |job: &str, why: String| {
            AgentError::Usage(format!("{}: job {job:?}: {why}", path.display()))
        };
        if self.jobs.is_empty() {
            return Err(AgentError::Usage(format!("{}: no jobs", path.display())));
        }
        let mut names = std::collections::BTreeSet::new();
        for job in &self.jobs {
            if job.name.trim().is_empty() || !names.insert(job.name.as_str()) {
                return Err(bad(&job.name, "names must be unique and not empty".to_owned()));
            }
            parse_schedule(&job.schedule).map_err(|e| bad(&job.name, e))?;
            match job.args.first().map(String::as_str) {
                Some(command) if JOB_COMMANDS.contains(&command) => {}
                other => {
                    return Err(bad(
                        &job.name,
                        format!(
                            "args must start with one of {} (got {other:?})",
                            JOB_COMMANDS.join(", ")
                        ),
                    ));
                }
            }
            if job.args.iter().any(|a| a == "--output" || a.starts_with("--output=")) {
                return Err(bad(&job.name, "leave --output out: the daemon reads JSON".to_owned()));
            }
        }
        Ok(())
    }
}

impl JobConfig {
    /// `postgres` or `mongodb` for backup jobs: the `database` label the
    /// freshness alerts group by.
    pub fn database(&self) -> Option<&'static str> {
        match (self.args.first().map(String::as_str), self.args.get(1).map(String::as_str)) {
            (Some("backup"), Some("postgres" | "tables")) => Some("postgres"),
            (Some("backup"), Some("mongo")) => Some("mongodb"),
            _ => None,
        }
    }
}

/// A cron pattern: 5 fields, or 6 with seconds first.
pub fn parse_schedule(pattern: &str) -> std::result::Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(pattern)
        .map_err(|e| format!("schedule {pattern:?} is not a cron pattern ({e})"))
}

/// The next occurrence of `cron` strictly after `after`.
pub fn next_run(cron: &Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after, false).ok()
}

/// What one run of a job produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// When it started.
    pub started: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
    /// The child's exit code (`None`: killed or not started).
    pub exit_code: Option<i32>,
    /// Its report, when it printed one.
    pub report: Option<Report>,
    /// Its standard error, trimmed, for the log.
    pub stderr: String,
}

impl RunOutcome {
    /// Exit code 0 and a report that passes.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
            && self.report.as_ref().is_none_or(|r| r.verdict() != Verdict::Fail)
    }
}

/// The daemon's metrics, registered in their own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    last_success: GaugeVec,
    last_run: GaugeVec,
    last_duration: GaugeVec,
    last_exit_code: GaugeVec,
    last_size: GaugeVec,
    verified: GaugeVec,
    last_verified: GaugeVec,
    next_run: GaugeVec,
    runs: IntCounterVec,
}

impl Metrics {
    /// Registers every series.
    pub fn new() -> std::result::Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let gauge = |name: &str,
                     help: &str,
                     labels: &[&str]|
         -> std::result::Result<GaugeVec, prometheus::Error> {
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let metrics = Metrics {
            last_success: gauge(
                "backup_last_success_timestamp_seconds",
                "End of the last successful backup, Unix time.",
                &["database", "job"],
            )?,
            last_size: gauge(
                "backup_last_size_bytes",
                "Bytes stored by the last successful backup.",
                &["database", "job"],
            )?,
            verified: gauge(
                "backup_verified",
                "1 if the last verify run passed, 0 if it failed.",
                &["job"],
            )?,
            last_verified: gauge(
                "backup_last_verify_success_timestamp_seconds",
                "End of the last verify run that passed, Unix time.",
                &["job"],
            )?,
            last_run: gauge(
                "backup_job_last_run_timestamp_seconds",
                "Start of the job's last run, Unix time.",
                &["job"],
            )?,
            last_duration: gauge(
                "backup_job_last_duration_seconds",
                "Duration of the job's last run.",
                &["job"],
            )?,
            last_exit_code: gauge(
                "backup_job_last_exit_code",
                "Exit code of the job's last run (0 met, 1 not met, 2 usage, 3 could not run, -1 killed).",
                &["job"],
            )?,
            next_run: gauge(
                "backup_job_next_run_timestamp_seconds",
                "Next scheduled start of the job, Unix time.",
                &["job"],
            )?,
            runs: {
                let c = IntCounterVec::new(
                    Opts::new("backup_job_runs_total", "Runs of the job by result."),
                    &["job", "result"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            registry,
        };
        Ok(metrics)
    }

    /// Records a finished run of `job`.
    pub fn record(&self, job: &JobConfig, outcome: &RunOutcome) {
        let name = job.name.as_str();
        let ended =
            outcome.started.timestamp_millis() as f64 / 1000.0 + outcome.duration.as_secs_f64();
        self.last_run
            .with_label_values(&[name])
            .set(outcome.started.timestamp_millis() as f64 / 1000.0);
        self.last_duration.with_label_values(&[name]).set(outcome.duration.as_secs_f64());
        self.last_exit_code
            .with_label_values(&[name])
            .set(f64::from(outcome.exit_code.unwrap_or(-1)));
        let ok = outcome.succeeded();
        self.runs.with_label_values(&[name, if ok { "success" } else { "failure" }]).inc();
        if let Some(database) = job.database()
            && ok
        {
            self.last_success.with_label_values(&[database, name]).set(ended);
            if let Some(bytes) =
                outcome.report.as_ref().and_then(|r| measurement(r, "stored_bytes"))
            {
                self.last_size.with_label_values(&[database, name]).set(bytes);
            }
        }
        if job.args.first().map(String::as_str) == Some("verify") {
            self.verified.with_label_values(&[name]).set(if ok { 1.0 } else { 0.0 });
            if ok {
                self.last_verified.with_label_values(&[name]).set(ended);
            }
        }
    }

    /// Records when `job` runs next.
    pub fn scheduled(&self, job: &str, at: DateTime<Utc>) {
        self.next_run.with_label_values(&[job]).set(at.timestamp() as f64);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn measurement(report: &Report, name: &str) -> Option<f64> {
    report.measurements.iter().find(|m| m.name == name).map(|m| m.value)
}

/// Runs `exe args --output json` and waits for it.
pub async fn run_job(exe: &Path, job: &JobConfig) -> RunOutcome {
    let started = Utc::now();
    let clock = Instant::now();
    let output = tokio::process::Command::new(exe)
        .args(&job.args)
        .args(["--output", "json"])
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match output {
        Ok(out) => RunOutcome {
            started,
            duration: clock.elapsed(),
            exit_code: out.status.code(),
            report: Report::from_json(&String::from_utf8_lossy(&out.stdout)).ok(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        },
        Err(e) => RunOutcome {
            started,
            duration: clock.elapsed(),
            exit_code: None,
            report: None,
            stderr: format!("cannot start {}: {e}", exe.display()),
        },
    }
}

/// Runs the jobs until SIGTERM or Ctrl-C; serves the metrics meanwhile.
pub async fn run(config: DaemonConfig, exe: PathBuf) -> Result<()> {
    let metrics = Metrics::new()
        .map_err(|e| AgentError::CouldNotRun(format!("cannot register the metrics: {e}")))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.metrics_listen {
        serve_metrics(addr, metrics.clone(), stop_rx.clone()).await?;
    }
    let running = Arc::new(Mutex::new(BTreeMap::<String, DateTime<Utc>>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for job in config.jobs {
        let (metrics, exe, mut stop, running) =
            (metrics.clone(), exe.clone(), stop_rx.clone(), running.clone());
        tasks.spawn(async move {
            let Ok(cron) = parse_schedule(&job.schedule) else { return };
            loop {
                let Some(at) = next_run(&cron, Utc::now()) else {
                    tracing::warn!(job = job.name, "schedule has no next occurrence; job ends");
                    return;
                };
                metrics.scheduled(&job.name, at);
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
                lock(&running).insert(job.name.clone(), Utc::now());
                tracing::info!(job = job.name, args = ?job.args, "run starts");
                let outcome = run_job(&exe, &job).await;
                lock(&running).remove(&job.name);
                metrics.record(&job, &outcome);
                if outcome.succeeded() {
                    tracing::info!(
                        job = job.name,
                        seconds = outcome.duration.as_secs_f64(),
                        "run succeeded"
                    );
                } else {
                    tracing::warn!(
                        job = job.name,
                        exit_code = ?outcome.exit_code,
                        stderr = outcome.stderr,
                        "run failed"
                    );
                }
            }
        });
    }
    shared_types::signals::shutdown().await;
    let busy: Vec<String> = lock(&running).keys().cloned().collect();
    if !busy.is_empty() {
        tracing::warn!(jobs = ?busy, "stopping: waiting for running jobs to finish");
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve_metrics(
    addr: SocketAddr,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AgentError::Usage(format!("cannot listen on {addr} for metrics: {e}")))?;
    let app =
        axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let body = metrics.render();
                    async move {
                        ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
                    }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, args: &[&str]) -> JobConfig {
        JobConfig {
            name: name.to_owned(),
            schedule: "0 2 * * *".to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn schedules_parse_with_or_without_seconds() {
        let daily = parse_schedule("0 2 * * *").unwrap_or_else(|e| panic!("{e}"));
        let from = DateTime::parse_from_rfc3339("2026-11-30T03:00:00Z")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_timezone(&Utc);
        let next = next_run(&daily, from).map(|t| t.to_rfc3339());
        assert_eq!(next.as_deref(), Some("2026-12-01T02:00:00+00:00"));
        assert!(parse_schedule("*/5 * * * * *").is_ok());
        assert!(parse_schedule("@daily").is_ok());
        assert!(parse_schedule("every night").unwrap_err().contains("every night"));
    }

    #[test]
    fn backup_jobs_carry_the_database_label_of_the_alerts() {
        assert_eq!(job("a", &["backup", "postgres"]).database(), Some("postgres"));
        assert_eq!(job("a", &["backup", "tables"]).database(), Some("postgres"));
        assert_eq!(job("a", &["backup", "mongo"]).database(), Some("mongodb"));
        assert_eq!(job("a", &["verify"]).database(), None);
    }

    #[test]
    fn a_failed_run_does_not_move_the_freshness_timestamp() {
        let m = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let j = job("pg", &["backup", "postgres"]);
        let mut outcome = RunOutcome {
            started: Utc::now(),
            duration: Duration::from_secs(2),
            exit_code: Some(3),
            report: None,
            stderr: String::new(),
        };
        m.record(&j, &outcome);
        let text = m.render();
        assert!(!text.contains("backup_last_success_timestamp_seconds{"), "{text}");
        assert!(text.contains(r#"backup_job_runs_total{job="pg",result="failure"} 1"#), "{text}");
        outcome.exit_code = Some(0);
        m.record(&j, &outcome);
        let text = m.render();
        assert!(
            text.contains(r#"backup_last_success_timestamp_seconds{database="postgres",job="pg"}"#),
            "{text}"
        );
        assert!(text.contains(r#"backup_job_last_exit_code{job="pg"} 0"#), "{text}");
    }
}
