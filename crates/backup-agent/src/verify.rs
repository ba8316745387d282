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

/// Default age limit of the newest complete backup (daily backups, with slack).
pub const DEFAULT_MAX_BACKUP_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default RPO: the newest recoverable point must be younger than this.
pub const DEFAULT_RPO: Duration = Duration::from_secs(3600);

/// What to verify.
#[derive(Debug, Clone)]
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
    /// `freshness`: the newest complete backup must have finished less than this ago.
    pub max_backup_age: Duration,
    /// `rpo`: the newest point a restore can reach (archived WAL or base
    /// backup end) must be younger than this, when the repository holds base
    /// backups.
    pub rpo: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            backups: Vec::new(),
            restore: false,
            wal_fetch: String::new(),
            restore_timeout: Duration::from_secs(600),
            mongo_url: None,
            max_backup_age: DEFAULT_MAX_BACKUP_AGE,
            rpo: DEFAULT_RPO,
        }
    }
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
    let now_ms = Timestamp::now().unix_millis().unwrap_or(0);
    report.push_check(backup_freshness(&catalog, options.max_backup_age, now_ms));
    report.push_check(wal_freshness(repo, &catalog, options.rpo, now_ms).await?);
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

/// `a` as people read an age: `26.0 h`, `12 min`, `40 s`.
fn age(ms: i64) -> String {
    let secs = ms as f64 / 1000.0;
    if secs >= 7200.0 {
        format!("{:.1} h", secs / 3600.0)
    } else if secs >= 120.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{secs:.0} s")
    }
}

fn limit_ms(limit: Duration) -> i64 {
    i64::try_from(limit.as_millis()).unwrap_or(i64::MAX)
}

/// `freshness`: the newest complete backup finished less than `limit` ago.
fn backup_freshness(catalog: &BackupCatalog, limit: Duration, now_ms: i64) -> Check {
    let criterion = format!("newest complete backup younger than {}", age(limit_ms(limit)));
    let newest = catalog
        .complete()
        .filter_map(|(_, m)| m.finished_at.unix_millis().map(|t| (t, m)))
        .max_by_key(|(t, _)| *t);
    let Some((finished, manifest)) = newest else {
        return Check::fail("freshness", criterion, "no complete backup").with_detail(
            "the repository holds no complete backup: the daily backup is not running (or --repo is wrong)",
        );
    };
    let elapsed = now_ms.saturating_sub(finished);
    let observed = format!("{} ({} finished {})", age(elapsed), manifest.id, manifest.finished_at);
    if elapsed < limit_ms(limit) {
        Check::pass("freshness", criterion, observed)
    } else {
        Check::fail("freshness", criterion, observed).with_detail(
            "the newest backup is older than the limit: is the backup job (daemon, CronJob) running and succeeding? --max-backup-age changes the limit",
        )
    }
}

/// `rpo`: with PostgreSQL base backups in the repository, the newest point
/// a restore can reach (the newest archived WAL, or the end of the newest
/// base backup when no later WAL is archived) is younger than the RPO.
async fn wal_freshness(
    repo: &Repository,
    catalog: &BackupCatalog,
    rpo: Duration,
    now_ms: i64,
) -> Result<Check> {
    let criterion =
        format!("newest recoverable point younger than the RPO ({})", age(limit_ms(rpo)));
    let newest_base = catalog
        .complete()
        .filter(|(_, m)| m.kind == BackupKind::PgBase)
        .filter_map(|(_, m)| m.finished_at.unix_millis().map(|t| (t, m.id.clone())))
        .max_by_key(|(t, _)| *t);
    let Some((base_finished, base_id)) = newest_base else {
        return Ok(Check::skipped(
            "rpo",
            criterion,
            "no PostgreSQL base backup in this repository: point-in-time recovery does not apply",
        ));
    };
    let newest_wal = wal::newest_archived(repo).await?;
    if let Some((name, 0)) = &newest_wal {
        return Ok(Check::not_evaluated(
            "rpo",
            criterion,
            format!("the store gives no modification time for the archived WAL {name}"),
        ));
    }
    let (point, what) = match newest_wal {
        Some((name, modified)) if modified > base_finished => {
            (modified, format!("archived WAL {name}"))
        }
        _ => (base_finished, format!("end of base backup {base_id}, no later WAL archived")),
    };
    let elapsed = now_ms.saturating_sub(point);
    let observed = format!("{} ({what})", age(elapsed));
    Ok(if elapsed < limit_ms(rpo) {
        Check::pass("rpo", criterion, observed)
    } else {
        Check::fail("rpo", criterion, observed).with_detail(
            "a restore now would lose more than the RPO: WAL archiving has stalled, is not set up (archive_command = 'backup-agent wal-push %p --repo ...'), or the server writes too little to switch segments (set archive_timeout below the RPO); --rpo changes the limit",
        )
    })
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
