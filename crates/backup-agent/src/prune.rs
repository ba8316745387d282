//! `prune` applies a [`RetentionPlan`] to a
//! repository (or only shows it with `--dry-run`), and `recover` cleans up
//! after killed runs: it finishes interrupted deletions and discards
//! incomplete backups and uploads older than a grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use shared_types::{Check, Measurement, Report, Timestamp};

use crate::error::Result;
use crate::manifest::{BACKUPS_PREFIX, BackupCatalog, BackupState, delete_backup};
use crate::postgres::wal;
use crate::repository::Repository;
use crate::retention::{
    KeepReason, RetentionCandidate, RetentionPlan, RetentionPolicy, plan, wal_chain, wal_position,
};

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
                BackupState::Incomplete { started_at, .. } => (
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
    // The verdict comes from the repository as it is now, not from the plan:
    // re-read it (a dry run looks at what would remain) and check it.
    let (after, wal_after) = if dry_run {
        let gone: BTreeSet<&str> = plan.deleted().collect();
        let mut after = catalog.clone();
        after.backups.retain(|b| !gone.contains(b.id.as_str()));
        let wal_after =
            wal_files.iter().filter(|w| !plan.wal_delete.contains(w)).cloned().collect();
        (after, wal_after)
    } else {
        (BackupCatalog::load(repo).await?, wal::list(repo).await?)
    };
    let mut check = retention_check(&plan, &after, &wal_after, policy, now, dry_run);
    let verb = if dry_run { "would delete" } else { "deleted" };
    let summary = format!(
        "{kept} kept, {deleted} {verb}; WAL: {} kept, {} {verb}",
        plan.wal_kept,
        plan.wal_delete.len()
    );
    check.detail = Some(match check.detail.take() {
        Some(detail) => format!("{summary}; {detail}"),
        None => summary,
    });
    report.push_check(check);
    report.push_measurement(Measurement::new("backups_kept", kept as f64, ""));
    report.push_measurement(Measurement::new("backups_deleted", deleted as f64, ""));
    report.push_measurement(Measurement::new("wal_deleted", plan.wal_delete.len() as f64, ""));
    report.data.insert("dry_run".into(), dry_run.into());
    report.data.insert("plan".into(), serde_json::to_value(&plan).unwrap_or_default());
    report.finish();
    Ok((report, PruneOutcome { plan, applied: !dry_run }))
}

/// The `retention` check of a prune: what remains in the repository (`after`,
/// `wal_after`, read back after deleting) is exactly the set the policy keeps,
/// each tier holds what the plan gave it, and the WAL chain from the oldest
/// kept base backup of each timeline to its newest archived segment has no gap.
pub fn retention_check(
    plan: &RetentionPlan,
    after: &BackupCatalog,
    wal_after: &[String],
    policy: &RetentionPolicy,
    now_ms: i64,
    dry_run: bool,
) -> Check {
    let criterion = format!(
        "what remains is the GFS {}/{}/{} daily/weekly/monthly set and the WAL chain from the oldest kept base backup is complete",
        policy.daily, policy.weekly, policy.monthly
    );
    let remains = if dry_run { "would remain" } else { "remains" };
    if after.backups.is_empty() {
        return Check::not_evaluated(
            "retention",
            criterion,
            "the repository holds no backup: nothing is retained (run `backup-agent backup`, or check --repo)",
        );
    }
    let mut problems = Vec::new();
    for id in plan.kept() {
        if after.get(id).is_none() {
            problems.push(format!("backup {id} was to be kept but is gone"));
        }
    }
    for id in plan.deleted() {
        if after.get(id).is_some() {
            problems.push(format!(
                "backup {id} was to be deleted but {remains} (a later `prune` or `recover` finishes it)"
            ));
        }
    }
    for b in after.backups.iter().filter(|b| b.state == BackupState::Deleting) {
        if !plan.decisions.iter().any(|d| d.id == b.id) {
            problems.push(format!(
                "backup {} is half-deleted by an interrupted prune: run `backup-agent recover`",
                b.id
            ));
        }
    }
    let remaining = candidates(after);
    let again = crate::retention::plan(&remaining, wal_after, policy, now_ms);
    let extra: Vec<&str> = again.deleted().collect();
    if !extra.is_empty() {
        problems.push(format!(
            "not the GFS set: {} backup(s) that no tier keeps {remains} ({})",
            extra.len(),
            extra.join(", ")
        ));
    }
    if !again.wal_delete.is_empty() {
        problems.push(format!(
            "{} WAL file(s) below the oldest kept base backup {remains} (first {})",
            again.wal_delete.len(),
            again.wal_delete[0]
        ));
    }
    let tiers = [KeepReason::Daily, KeepReason::Weekly, KeepReason::Monthly];
    for reason in tiers {
        if again.count(reason) != plan.count(reason) {
            problems.push(format!(
                "{reason:?} tier holds {} backup(s), the plan gave it {}",
                again.count(reason),
                plan.count(reason)
            ));
        }
    }
    // The oldest kept complete base backup of each timeline bounds its chain.
    let mut oldest: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for (entry, manifest) in after.complete() {
        let Some(start) = manifest.postgres.as_ref().map(|p| p.start_wal.as_str()) else {
            continue;
        };
        let Some(timeline) = start.get(..8) else { continue };
        let slot = oldest.entry(timeline.to_owned()).or_insert((start, entry.id.as_str()));
        if wal_position(start) < wal_position(slot.0) {
            *slot = (start, entry.id.as_str());
        }
    }
    let mut chains = Vec::new();
    let mut unevaluated = Vec::new();
    for (start, id) in oldest.values() {
        match wal_chain(start, wal_after) {
            None => problems.push(format!("backup {id} has an unreadable start segment {start:?}")),
            Some(chain) if chain.segments == 0 => unevaluated.push(format!(
                "no WAL is archived at or after {start}, the start of the oldest kept base backup {id} (is archive_command set to `backup-agent wal-push %p`?)"
            )),
            Some(chain) if !chain.complete() => problems.push(format!(
                "the WAL chain from {start} (oldest kept base backup {id}) to {} has {} gap(s): missing {}{}; point-in-time restores from {id} stop at the first gap",
                chain.newest.as_deref().unwrap_or("?"),
                chain.missing_count,
                chain.missing.join(", "),
                if chain.missing_count > chain.missing.len() { ", ..." } else { "" }
            )),
            Some(chain) => chains.push(format!(
                "WAL chain complete from {start} to {} ({} segment(s))",
                chain.newest.as_deref().unwrap_or("?"),
                chain.segments
            )),
        }
    }
    let observed = format!(
        "{} backup(s) {remains}: {} daily, {} weekly, {} monthly{}",
        after.backups.len(),
        again.count(KeepReason::Daily),
        again.count(KeepReason::Weekly),
        again.count(KeepReason::Monthly),
        if chains.is_empty() { String::new() } else { format!("; {}", chains.join("; ")) }
    );
    if !problems.is_empty() {
        Check::fail("retention", criterion, observed).with_detail(problems.join("; "))
    } else if !unevaluated.is_empty() {
        Check::not_evaluated("retention", criterion, unevaluated.join("; ")).with_observed(observed)
    } else {
        Check::pass("retention", criterion, observed)
    }
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
/// incomplete backups that started more than `grace` ago (or have no
/// marker), and aborts incomplete uploads under them. A backup whose marker
/// is listed but could not be read is left alone (it may still be running)
/// and makes the `recover` check not evaluated. Returns a report.
pub async fn recover(repo: &Repository, grace: Duration, dry_run: bool) -> Result<Report> {
    let mut report = Report::new("backup-agent", env!("CARGO_PKG_VERSION"), repo.describe());
    repo.check_reachable().await?;
    let catalog = BackupCatalog::load(repo).await?;
    let now = Timestamp::now().unix_millis().unwrap_or(0);
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let mut removed = Vec::new();
    let mut stale_ids = Vec::new();
    let mut undecided = Vec::new();
    for backup in &catalog.backups {
        let stale = match &backup.state {
            BackupState::Deleting => true,
            BackupState::Incomplete { marker_unreadable: Some(why), .. } => {
                undecided.push(format!("{}: {why}", backup.id));
                false
            }
            BackupState::Incomplete { started_at, marker_unreadable: None } => started_at
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
    let criterion = "no interrupted backup or deletion is left behind";
    let observed =
        format!("{verb} {} incomplete backup(s), aborted {aborted} upload(s)", removed.len());
    report.push_check(if undecided.is_empty() {
        Check::pass("recover", criterion, observed)
    } else {
        Check::not_evaluated(
            "recover",
            criterion,
            format!(
                "kept {} incomplete backup(s) whose in-progress marker could not be read, so they may still be running: {}; fix the store (or the marker) and run recover again",
                undecided.len(),
                undecided.join("; ")
            ),
        )
        .with_observed(observed)
    });
    report.data.insert("removed".into(), serde_json::json!(removed));
    report.data.insert("undecided".into(), serde_json::json!(undecided));
    report.finish();
    Ok(report)
}
