//! `verify`: re-read every object of a backup and check it against the
//! manifest (size, SHA-256 stored and after decompression), check that the WAL
//! chain after a base backup has no gap, and with `--restore` restore into a
//! scratch target and compare row counts and sampled checksums with those
//! captured at backup time.

use std::time::{Duration, Instant};

use shared_types::{Check, Measurement, Report, Timestamp};

use crate::error::{AgentError, Result};
use crate::manifest::{BackupCatalog, BackupKind, BackupManifest, VerificationRecord};
use crate::object::read_back;
use crate::postgres::base::{RecoveryTarget, restore as restore_base};
use crate::postgres::logical::restore_tables;
use crate::postgres::scratch::ScratchCluster;
use crate::postgres::{compare_tables, connect, wal};
use crate::repository::Repository;
use crate::retention::wal_chain;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Backup ids; empty = every complete backup.
    pub backups: Vec<String>,
    /// Also restore into a scratch target and run sanity queries.
    pub restore: bool,
    /// `restore_command` prefix for base-backup restores (`<exe> wal-fetch --repo ...`).
    pub wal_fetch: String,
    /// Longest wait for a scratch restore to come up.
    pub restore_timeout: Duration,
    /// MongoDB server that MongoDB backups are restored into (a scratch
    /// database, dropped afterwards) with `restore`.
    pub mongo_url: Option<String>,
}

/// Verifies backups and returns the report (checks per backup).
pub async fn verify(repo: &Repository, options: &VerifyOptions) -> Result<Report> {
    let mut report = Report::new("backup-agent", env!("CARGO_PKG_VERSION"), repo.describe());
    repo.check_reachable().await?;
    let catalog = BackupCatalog::load(repo).await?;
    let manifests: Vec<BackupManifest> = if options.backups.is_empty() {
        catalog.complete().map(|(_, m)| m.clone()).collect()
    } else {
        options
            .backups
            .iter()
            .map(|id| catalog.resolve(id, None).cloned())
            .collect::<Result<_>>()?
    };
    if manifests.is_empty() {
        // No backup is not a pass: "daily automated backups" is unmet.
        report.push_check(
            Check::fail("backups", "every object matches its manifest", "no complete backup")
                .with_detail("the repository holds no complete backup: run `backup-agent backup` (or check --repo)"),
        );
    }
    let wal_files = wal::list(repo).await?;
    let started = Instant::now();
    let mut bytes = 0u64;
    for manifest in &manifests {
        let mut problems = Vec::new();
        for entry in &manifest.objects {
            match read_back(repo, entry).await {
                Ok(read) => bytes += read.size,
                Err(AgentError::Integrity(problem)) => problems.push(problem),
                Err(AgentError::NotFound(_)) => problems.push(format!("{} is missing", entry.key)),
                Err(other) => return Err(other),
            }
        }
        let objects_ok = problems.is_empty();
        let observed =
            format!("{} object(s), {} B", manifest.objects.len(), manifest.stored_bytes());
        report.push_check(if objects_ok {
            Check::pass(
                format!("objects/{}", manifest.id),
                "every object matches its manifest",
                observed,
            )
        } else {
            Check::fail(
                format!("objects/{}", manifest.id),
                "every object matches its manifest",
                observed,
            )
            .with_detail(format!(
                "{}; do not restore from this backup, take a new one",
                problems.join("; ")
            ))
        });
        if manifest.kind == BackupKind::PgBase {
            report.push_check(wal_chain_check(manifest, &wal_files));
        }
        let restore_ok = if options.restore && objects_ok {
            let check = restore_check(repo, manifest, options).await;
            let ok = check.verdict == shared_types::Verdict::Pass;
            report.push_check(check);
            Some(ok)
        } else {
            None
        };
        let record = VerificationRecord { verified_at: Timestamp::now(), objects_ok, restore_ok };
        let data = serde_json::to_vec(&record)
            .map_err(|e| AgentError::CouldNotRun(format!("encoding: {e}")))?;
        repo.put_bytes(&VerificationRecord::key(&manifest.id), data).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    report.push_measurement(Measurement::new("bytes_read", bytes as f64, "B"));
    report.push_measurement(Measurement::new("verify_seconds", secs, "s"));
    report.push_measurement(Measurement::new(
        "read_throughput",
        bytes as f64 / 1e6 / secs.max(1e-9),
        "MB/s",
    ));
    report.finish();
    Ok(report)
}

/// Every WAL segment from the backup's start segment to the newest archived
/// one on the backup's timeline is present.
fn wal_chain_check(manifest: &BackupManifest, wal_files: &[String]) -> Check {
    let id = format!("wal-chain/{}", manifest.id);
    let criterion = "no gap in the WAL archive after the backup";
    let Some(info) = &manifest.postgres else {
        return Check::error(id, criterion, "the manifest has no WAL positions");
    };
    let Some(chain) = wal_chain(&info.start_wal, wal_files) else {
        return Check::error(id, criterion, format!("unreadable start segment {}", info.start_wal));
    };
    if chain.segments == 0 {
        return Check::skipped(
            id,
            criterion,
            "no WAL archived after this backup (is archive_command set to `backup-agent wal-push %p`?); restores reach only the end of the backup",
        );
    }
    let observed = format!("{} segment(s) from {}", chain.segments, info.start_wal);
    if chain.complete() {
        Check::pass(id, criterion, observed)
    } else {
        Check::fail(id, criterion, observed).with_detail(format!(
            "missing: {}; point-in-time restore stops before the first gap",
            chain.missing.join(", ")
        ))
    }
}

async fn restore_check(
    repo: &Repository,
    manifest: &BackupManifest,
    options: &VerifyOptions,
) -> Check {
    let id = format!("restore/{}", manifest.id);
    let criterion = "restores and row counts match those at backup time";
    let started = Instant::now();
    let outcome: Result<Vec<String>> = async {
        let cluster = ScratchCluster::prepare()?;
        match manifest.kind {
            BackupKind::PgBase => {
                let client = restore_base(
                    repo,
                    manifest,
                    &cluster,
                    &RecoveryTarget::Immediate,
                    &options.wal_fetch,
                    options.restore_timeout,
                )
                .await?;
                Ok(compare_tables(&client, &manifest.tables).await)
            }
            BackupKind::PgTable => {
                cluster.initdb(&cluster.local_settings()).await?;
                cluster.start(options.restore_timeout).await?;
                let all: Vec<String> = manifest.tables.iter().map(|t| t.name.clone()).collect();
                restore_tables(repo, manifest, &all, &cluster.url("postgres")).await?;
                let client = connect(&cluster.url("postgres")).await?;
                Ok(compare_tables(&client, &manifest.tables).await)
            }
            BackupKind::Mongo => match &options.mongo_url {
                Some(url) => crate::mongo::verify_restore(repo, manifest, url).await,
                None => Err(AgentError::Usage(
                    "give --mongo-url to restore MongoDB backups into a scratch database".into(),
                )),
            },
        }
    }
    .await;
    let observed = format!("{:.1} s", started.elapsed().as_secs_f64());
    match outcome {
        Ok(problems) if problems.is_empty() => Check::pass(id, criterion, observed)
            .with_detail(format!("{} table(s) compared", manifest.tables.len())),
        Ok(problems) => Check::fail(id, criterion, observed).with_detail(problems.join("; ")),
        Err(AgentError::Usage(why)) => Check::skipped(id, criterion, why),
        Err(e) => Check::fail(id, criterion, observed).with_detail(e.to_string()),
    }
}
