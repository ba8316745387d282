//! `restore`: a base backup into a scratch cluster (recovered to a time or
//! the end of the WAL, then promoted), one table into a live database, or
//! MongoDB collections; each returns the report `main` prints. The live
//! restores are guarded (`guard`): an allow-list for targets off this
//! machine, `--replace` before existing data is dropped, `--dry-run` plans.

use std::time::{Duration, Instant};

use shared_types::{Check, Measurement, Report, Timestamp};

use crate::error::Result;
use crate::guard::{self, Existing};
use crate::manifest::{BackupCatalog, BackupKind};
use crate::postgres::{base, display_target, logical, scratch::ScratchCluster};
use crate::repository::Repository;

/// How a live restore may act on its target.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Hosts off this machine the restore may write to.
    pub allow_target: Vec<String>,
    /// Plan only: change nothing.
    pub dry_run: bool,
    /// Drop and restore data that is already there.
    pub replace: bool,
}

/// Restores base backup `backup` into a new scratch cluster, recovered to
/// `target_time` (or the end of the archive) and promoted; the cluster is
/// kept running and named in the report. `wal_fetch` is the
/// `restore_command` PostgreSQL runs.
pub async fn postgres(
    repository: &Repository,
    backup: &str,
    target_time: Option<Timestamp>,
    wal_fetch: &str,
    timeout: Duration,
) -> Result<Report> {
    let started = Instant::now();
    let catalog = BackupCatalog::load(repository).await?;
    let manifest = catalog.resolve(backup, Some(BackupKind::PgBase))?;
    let target = match target_time {
        Some(t) => base::RecoveryTarget::Time(t),
        None => base::RecoveryTarget::Latest,
    };
    let mut cluster = ScratchCluster::prepare()?;
    base::restore(repository, manifest, &cluster, &target, wal_fetch, timeout).await?;
    let url = cluster.url("postgres");
    let dir = cluster.keep();
    let mut report = Report::new("backup-agent", env!("CARGO_PKG_VERSION"), repository.describe());
    report.push_check(Check::pass(
        "restore",
        "restored and promoted",
        format!(
            "{url} (data in {}; stop with pg_ctl -D {}/data stop)",
            dir.display(),
            dir.display()
        ),
    ));
    report.push_measurement(Measurement::new("duration", started.elapsed().as_secs_f64(), "s"));
    report.data.insert("url".into(), url.into());
    report.data.insert("dir".into(), dir.display().to_string().into());
    report.finish();
    Ok(report)
}

/// Restores `table` from table backup `backup` into the database at `pg_url`
/// in one transaction (a failure leaves the live table as it was).
pub async fn table(
    repository: &Repository,
    backup: &str,
    table: &str,
    pg_url: &str,
    guard: &Guard,
) -> Result<Report> {
    let started = Instant::now();
    guard::check_target(pg_url, &guard.allow_target, "restore a table")?;
    let catalog = BackupCatalog::load(repository).await?;
    let manifest = catalog.resolve(backup, Some(BackupKind::PgTable))?;
    let normalized = crate::postgres::normalize_table(table);
    let expected = manifest.tables.iter().find(|t| t.name == normalized);
    let existing: Vec<Existing> = crate::postgres::existing_rows(pg_url, &normalized)
        .await?
        .map(|rows| Existing { name: normalized.clone(), rows })
        .into_iter()
        .collect();
    let mut report = Report::new("backup-agent", env!("CARGO_PKG_VERSION"), display_target(pg_url));
    if guard.dry_run {
        report.push_check(dry_run_plan(&manifest.id, &existing, expected.map(|t| t.rows)));
        report.finish();
        return Ok(report);
    }
    guard::check_replace(&existing, guard.replace)?;
    let rows = logical::restore_table(repository, manifest, table, pg_url).await?;
    report.push_check(Check::from_bool(
        "rows",
        "rows restored == rows at backup time",
        format!("{rows} restored, {} at backup time", expected.map_or(-1, |t| t.rows)),
        expected.is_some_and(|t| t.rows == rows),
    ));
    report.push_measurement(Measurement::new("duration", started.elapsed().as_secs_f64(), "s"));
    report.finish();
    Ok(report)
}

/// Restores MongoDB backup `backup` into `mongo_url` (into `to_db` if given).
pub async fn mongo(
    repository: &Repository,
    backup: &str,
    mongo_url: &str,
    to_db: Option<&str>,
    guard: &Guard,
) -> Result<Report> {
    guard::check_target(mongo_url, &guard.allow_target, "restore MongoDB collections")?;
    let catalog = BackupCatalog::load(repository).await?;
    let manifest = catalog.resolve(backup, Some(BackupKind::Mongo))?;
    let existing = crate::mongo::existing_documents(manifest, mongo_url, to_db).await?;
    if guard.dry_run {
        let mut report =
            Report::new("backup-agent", env!("CARGO_PKG_VERSION"), display_target(mongo_url));
        let total = manifest.tables.iter().map(|t| t.rows).sum();
        report.push_check(dry_run_plan(&manifest.id, &existing, Some(total)));
        report.finish();
        return Ok(report);
    }
    guard::check_replace(&existing, guard.replace)?;
    crate::mongo::restore(repository, manifest, mongo_url, to_db).await
}

/// The check a `--dry-run` restore reports: what would be restored and replaced.
fn dry_run_plan(backup: &str, existing: &[Existing], backed_up: Option<i64>) -> Check {
    let replaced: Vec<String> = existing
        .iter()
        .filter(|e| e.rows > 0)
        .map(|e| format!("{} ({} rows now)", e.name, e.rows))
        .collect();
    let plan = format!(
        "dry run, nothing changed: would restore {} rows from {backup}{}",
        backed_up.map_or_else(|| "?".to_owned(), |r| r.to_string()),
        if replaced.is_empty() {
            String::new()
        } else {
            format!(", dropping {} (needs --replace)", replaced.join(", "))
        }
    );
    // The plan is the dry run's evidence: it was made and nothing changed.
    Check::pass("restore-plan", "a restore plan is made and nothing is changed", plan)
}
