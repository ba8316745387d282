//! `prune` applies a [`RetentionPlan`] to a
//! repository (or only shows it with `--dry-run`), and `recover` cleans up
//! after killed runs: it finishes interrupted deletions and discards
//! incomplete backups and uploads older than a grace period.

use std::time::Duration;

use serde::Serialize;
use shared_types::{Check, Measurement, Report, Timestamp};

use crate::error::Result;
use crate::manifest::{BACKUPS_PREFIX, BackupCatalog, BackupState, delete_backup};
use crate::postgres::wal;
use crate::repository::Repository;
use crate::retention::{RetentionCandidate, RetentionPlan, RetentionPolicy, plan};

/// The retention candidates of a catalog.
pub fn candidates(catalog: &BackupCatalog) -> Vec<RetentionCandidate> {
    catalog
        .backups
        .iter()
        .filter_map(|b| {
            let (complete, time_ms, series, start_wal) = match &b.state {
                BackupState::Complete(m) => (
                    true,
                    m.started_at.unix_millis()?,
                    format!("{}:{}", m.kind.short(), m.source),
                    m.postgres.as_ref().map(|p| p.start_wal.clone()),
                ),
                BackupState::Incomplete { started_at } => (
                    false,
                    started_at.as_ref().and_then(Timestamp::unix_millis).unwrap_or(i64::MAX),
                    String::new(),
                    b.id.ends_with("-pg-base").then(String::new),
                ),
                BackupState::Deleting => return None,
            };
            Some(RetentionCandidate {
                id: b.id.clone(),
                series,
                time_ms,
                complete,
                verified: b.verification.as_ref().is_some_and(|v| v.passed()),
                start_wal,
            })
        })
        .collect()
}

/// What a prune did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct PruneOutcome {
    /// The plan.
    pub plan: RetentionPlan,
    /// Whether anything was deleted.
    pub applied: bool,
}

/// Computes the plan for the repository and, unless `dry_run`, deletes
/// what it does not keep: backups first (each one journaled so that it never
/// looks complete half-deleted), then WAL below the oldest kept base backup.
pub async fn prune(
    repo: &Repository,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> Result<(Report, PruneOutcome)> {
    let mut report = Report::new("backup-agent", env!("CARGO_PKG_VERSION"), repo.describe());
    repo.check_reachable().await?;
    let catalog = BackupCatalog::load(repo).await?;
    let wal_files = wal::list(repo).await?;
    let now = Timestamp::now().unix_millis().unwrap_or(0);
    let plan = plan(&candidates(&catalog), &wal_files, policy, now);
    if !dry_run {
        for id in plan.deleted() {
            let keys = catalog.get(id).map(|b| b.keys.clone()).unwrap_or_default();
            delete_backup(repo, id, &keys).await?;
        }
        for name in &plan.wal_delete {
            wal::delete(repo, name).await?;
        }
    }
    let kept = plan.kept().count();
    let deleted = plan.deleted().count();
    let verb = if dry_run { "would delete" } else { "deleted" };
    report.push_check(Check::pass(
        "retention",
        format!("GFS {}/{}/{} daily/weekly/monthly", policy.daily, policy.weekly, policy.monthly),
        format!(
            "{kept} kept, {deleted} {verb}; WAL: {} kept, {} {verb}",
            plan.wal_kept,
            plan.wal_delete.len()
        ),
    ));
    report.push_measurement(Measurement::new("backups_kept", kept as f64, ""));
    report.push_measurement(Measurement::new("backups_deleted", deleted as f64, ""));
    report.push_measurement(Measurement::new("wal_deleted", plan.wal_delete.len() as f64, ""));
    report.data.insert("dry_run".into(), dry_run.into());
    report.data.insert("plan".into(), serde_json::to_value(&plan).unwrap_or_default());
    report.finish();
    Ok((report, PruneOutcome { plan, applied: !dry_run }))
}

/// The plan as lines people read: what stays and why, what goes.
pub fn describe_plan(plan: &RetentionPlan) -> String {
    let mut out = String::new();
    for d in &plan.decisions {
        if d.reasons.is_empty() {
            out.push_str(&format!("  delete {}\n", d.id));
        } else {
            let why: Vec<String> = d
                .reasons
                .iter()
                .map(|r| {
                    serde_json::to_value(r)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect();
            out.push_str(&format!("  keep   {}  ({})\n", d.id, why.join(", ")));
        }
    }
    match &plan.wal_keep_from {
        Some(from) => out.push_str(&format!(
            "  WAL: keep {} file(s) from {from} on, delete {} older\n",
            plan.wal_kept,
            plan.wal_delete.len()
        )),
        None => out.push_str(&format!(
            "  WAL: keep all {} file(s) (no kept base backup bounds them)\n",
            plan.wal_kept
        )),
    }
    out
}

/// Cleans up after killed runs: finishes deletions a prune left, removes
/// incomplete backups that started more than `grace` ago (or have no marker
/// time), and aborts incomplete uploads under them. Returns a report.
pub async fn recover(repo: &Repository, grace: Duration, dry_run: bool) -> Result<Report> {
    let mut report = Report::new("backup-agent", env!("CARGO_PKG_VERSION"), repo.describe());
    repo.check_reachable().await?;
    let catalog = BackupCatalog::load(repo).await?;
    let now = Timestamp::now().unix_millis().unwrap_or(0);
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let mut removed = Vec::new();
    let mut stale_ids = Vec::new();
    for backup in &catalog.backups {
        let stale = match &backup.state {
            BackupState::Deleting => true,
            BackupState::Incomplete { started_at } => started_at
                .as_ref()
                .and_then(Timestamp::unix_millis)
                .is_none_or(|t| now.saturating_sub(t) >= grace_ms),
            BackupState::Complete(_) => false,
        };
        if stale {
            stale_ids.push(backup.id.clone());
            if !dry_run {
                delete_backup(repo, &backup.id, &backup.keys).await?;
            }
            removed.push(backup.id.clone());
        }
    }
    let mut aborted = 0usize;
    for upload in repo.incomplete_uploads(BACKUPS_PREFIX).await? {
        let under_stale =
            stale_ids.iter().any(|id| upload.key.starts_with(&format!("{BACKUPS_PREFIX}{id}/")));
        let orphan = !catalog
            .backups
            .iter()
            .any(|b| upload.key.starts_with(&format!("{BACKUPS_PREFIX}{}/", b.id)));
        if under_stale || orphan {
            if !dry_run {
                repo.abort_incomplete(&upload).await?;
            }
            aborted += 1;
        }
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    report.push_check(Check::pass(
        "recover",
        "no interrupted backup or deletion is left behind",
        format!("{verb} {} incomplete backup(s), aborted {aborted} upload(s)", removed.len()),
    ));
    report.data.insert("removed".into(), serde_json::json!(removed));
    report.finish();
    Ok(report)
}
