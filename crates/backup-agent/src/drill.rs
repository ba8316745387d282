//! Disaster-recovery drills: restore into a scratch target, measure the RTO
//! (drill start to restored and queryable) and the RPO (failure point minus the
//! last commit that was recovered), and judge them against the launch plan.
//!
//! | scenario | restores | RTO target | RPO |
//! |---|---|---|---|
//! | `full-loss` | newest base backup + every archived WAL | `rto < 4h` | failure point − last replayed commit (or backup end) |
//! | `pitr` | newest base backup before the target time, WAL up to it | `rto < 1h` | target time − last replayed commit |
//! | `table` | one table from the newest per-table backup | `rto < 30m` | failure point − backup snapshot time |

use std::time::{Duration, Instant};

use shared_types::{Check, Measurement, Quantity, Report, Threshold, Timestamp};

use crate::error::{AgentError, Result};
use crate::manifest::{BackupCatalog, BackupKind, BackupManifest};
use crate::postgres::base::{RecoveryTarget, restore as restore_base};
use crate::postgres::logical::restore_tables;
use crate::postgres::scratch::ScratchCluster;
use crate::postgres::{column, compare_tables, connect, normalize_table};
use crate::repository::Repository;

/// Which disaster is rehearsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillScenario {
    /// The database is gone: restore everything, as recent as possible.
    FullLoss,
    /// A bad write: restore to a point in time before it.
    Pitr,
    /// One table was dropped or mangled: restore just that table.
    Table,
}

impl std::str::FromStr for DrillScenario {
    type Err = AgentError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "full-loss" => Ok(DrillScenario::FullLoss),
            "pitr" => Ok(DrillScenario::Pitr),
            "table" => Ok(DrillScenario::Table),
            other => Err(AgentError::Usage(format!(
                "unknown scenario {other:?}: use full-loss, pitr or table"
            ))),
        }
    }
}

impl DrillScenario {
    /// The launch plan's RTO target.
    pub fn default_rto(self) -> Threshold {
        let text = match self {
            DrillScenario::FullLoss => "rto < 4h",
            DrillScenario::Pitr => "rto < 1h",
            DrillScenario::Table => "rto < 30m",
        };
        text.parse().unwrap_or_else(|_| {
            Threshold::new("rto", shared_types::Op::Lt, Quantity::seconds(3600.0))
        })
    }

    fn name(self) -> &'static str {
        match self {
            DrillScenario::FullLoss => "full-loss",
            DrillScenario::Pitr => "pitr",
            DrillScenario::Table => "table",
        }
    }
}

/// Where the failure point's time came from. The RPO compares it with the
/// source server's commit timestamps; only the server's own clock makes
/// that one clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureClock {
    /// This machine's clock at the drill's start (no source server given).
    #[default]
    ThisMachine,
    /// The source server's `clock_timestamp()` (`--source-url`, or the
    /// self-contained drill's own source).
    Server,
    /// Given by the user (`--failure-point`).
    Given,
}

/// How a drill runs.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The scenario.
    pub scenario: DrillScenario,
    /// RTO criterion (default per scenario).
    pub rto: Threshold,
    /// RPO criterion (default `rpo < 1h`).
    pub rpo: Threshold,
    /// The moment of the simulated failure (default: the drill's start).
    pub failure_point: Option<Timestamp>,
    /// Whose clock the RPO's reference (`failure_point`, or `target_time`
    /// in a PITR drill) was read from.
    pub failure_clock: FailureClock,
    /// PITR target (scenario `pitr`; default: the failure point).
    pub target_time: Option<Timestamp>,
    /// Table to restore (scenario `table`; default: the first of the backup).
    pub table: Option<String>,
    /// `restore_command` prefix (`<exe> wal-fetch --repo ...`).
    pub wal_fetch: String,
    /// Longest wait for the restored server.
    pub timeout: Duration,
    /// Keep the scratch cluster running afterwards (its directory is reported).
    pub keep: bool,
}

/// Runs the drill and returns its report (RTO and RPO as checks and measurements).
pub async fn drill(repo: &Repository, options: &DrillOptions) -> Result<Report> {
    let mut report = Report::new("backup-agent", env!("CARGO_PKG_VERSION"), repo.describe());
    let started_at = Timestamp::now();
    let clock = Instant::now();
    let failure_point = options.failure_point.clone().unwrap_or_else(|| started_at.clone());
    repo.check_reachable().await?;
    let catalog = BackupCatalog::load(repo).await?;
    let mut cluster = ScratchCluster::prepare()?;
    let (manifest, recovered_until, sanity) = match options.scenario {
        DrillScenario::FullLoss | DrillScenario::Pitr => {
            let target = match options.scenario {
                DrillScenario::Pitr => RecoveryTarget::Time(
                    options.target_time.clone().unwrap_or_else(|| failure_point.clone()),
                ),
                _ => RecoveryTarget::Latest,
            };
            let before = match &target {
                RecoveryTarget::Time(t) => t.unix_millis(),
                _ => None,
            };
            let manifest = newest(&catalog, BackupKind::PgBase, before)?;
            let client = restore_base(
                repo,
                &manifest,
                &cluster,
                &target,
                &options.wal_fetch,
                options.timeout,
            )
            .await?;
            let last: Option<String> = column(
                &client
                    .query_one("SELECT to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')", &[])
                    .await
                    .map_err(|e| AgentError::CouldNotRun(format!("reading the last replayed commit: {e}")))?,
                0,
                "reading the last replayed commit (pg_last_xact_replay_timestamp)",
                "to_char",
            )?;
            let recovered = last
                .and_then(|t| Timestamp::parse(&t))
                .unwrap_or_else(|| manifest.finished_at.clone());
            let tables: i64 = column(
                &client
                    .query_one("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')", &[])
                    .await
                    .map_err(|e| AgentError::CouldNotRun(format!("sanity query: {e}")))?,
                0,
                "sanity query (pg_tables)",
                "count",
            )?;
            let expected = manifest.tables.len();
            let sanity = Check::from_bool(
                "sanity",
                "restored cluster answers queries and has the backed-up tables",
                format!("{tables} user table(s)"),
                usize::try_from(tables).unwrap_or(0) >= expected,
            );
            (manifest, recovered, sanity)
        }
        DrillScenario::Table => {
            let manifest = newest(&catalog, BackupKind::PgTable, None)?;
            let table = match &options.table {
                Some(t) => normalize_table(t),
                None => manifest.tables.first().map(|t| t.name.clone()).unwrap_or_default(),
            };
            cluster.initdb(&cluster.local_settings()).await?;
            cluster.start(options.timeout).await?;
            let restored = restore_tables(
                repo,
                &manifest,
                std::slice::from_ref(&table),
                &cluster.url("postgres"),
            )
            .await?;
            let client = connect(&cluster.url("postgres")).await?;
            let expected: Vec<_> =
                manifest.tables.iter().filter(|t| restored.contains(&t.name)).cloned().collect();
            let problems = compare_tables(&client, &expected).await;
            let rows = expected.iter().find(|t| t.name == table).map_or(0, |t| t.rows);
            let sanity = Check::from_bool(
                "sanity",
                format!("{table} has the rows it had at backup time"),
                format!("{rows} rows"),
                problems.is_empty(),
            );
            let referenced: Vec<&str> =
                restored.iter().filter(|t| **t != table).map(String::as_str).collect();
            let sanity = match (problems.is_empty(), referenced.is_empty()) {
                (false, _) => sanity.with_detail(problems.join("; ")),
                (true, false) => sanity.with_detail(format!(
                    "restored with the table(s) its foreign keys reference: {}",
                    referenced.join(", ")
                )),
                (true, true) => sanity,
            };
            (manifest.clone(), manifest.started_at.clone(), sanity)
        }
    };
    let rto = clock.elapsed().as_secs_f64();
    let reference = match (options.scenario, &options.target_time) {
        (DrillScenario::Pitr, Some(t)) => t.clone(),
        _ => failure_point.clone(),
    };
    let rpo = match (recovered_until.unix_millis(), reference.unix_millis()) {
        (Some(r), Some(f)) => (f - r).max(0) as f64 / 1000.0,
        _ => f64::NAN,
    };
    report.target =
        format!("{} ({} drill of {})", repo.describe(), options.scenario.name(), manifest.id);
    report.push_check(options.rto.check("rto", Quantity::seconds(rto)).with_detail(format!(
        "from drill start to a restored, promoted, queryable {} scratch cluster",
        options.scenario.name()
    )));
    let clock = match options.failure_clock {
        FailureClock::Server => "from the source server's clock, like the commit timestamps",
        FailureClock::Given => "as given",
        FailureClock::ThisMachine => {
            "from this machine's clock at the drill's start; pass --source-url so both ends come from the server's clock"
        }
    };
    report.push_check(options.rpo.check("rpo", Quantity::seconds(rpo)).with_detail(format!(
        "last recovered commit {} (server clock) vs {} {} ({clock})",
        recovered_until,
        if options.scenario == DrillScenario::Pitr { "target" } else { "failure point" },
        reference
    )));
    report.push_check(sanity);
    report.push_measurement(Measurement::new("rto", rto, "s"));
    report.push_measurement(Measurement::new("rpo", rpo, "s"));
    report.push_measurement(Measurement::new("restored_bytes", manifest.raw_bytes() as f64, "B"));
    report.data.insert("backup".into(), manifest.id.clone().into());
    report.data.insert("recovered_until".into(), recovered_until.as_str().into());
    if options.keep {
        let dir = cluster.keep();
        report.data.insert(
            "scratch".into(),
            serde_json::json!({ "dir": dir, "url": cluster.url("postgres") }),
        );
    }
    report.finish();
    Ok(report)
}

/// The newest complete backup of `kind`, started before `before_ms` if given.
fn newest(
    catalog: &BackupCatalog,
    kind: BackupKind,
    before_ms: Option<i64>,
) -> Result<BackupManifest> {
    catalog
        .complete()
        .map(|(_, m)| m)
        .filter(|m| m.kind == kind)
        .filter(|m| before_ms.is_none_or(|b| m.finished_at.unix_millis().is_some_and(|f| f <= b)))
        .last()
        .cloned()
        .ok_or_else(|| {
            AgentError::CouldNotRun(format!(
                "no complete {} backup{} in the repository: take one with `backup-agent backup {}`",
                kind.short(),
                if before_ms.is_some() { " finished before the target time" } else { "" },
                match kind {
                    BackupKind::PgBase => "postgres",
                    BackupKind::PgTable => "tables",
                    BackupKind::Mongo => "mongo",
                }
            ))
        })
}
