//! Are PostgreSQL and MongoDB backed up, verified, retained (7/4/12) and
//! restorable within RTO/RPO? `backup-agent` takes the backups and proves it.
//!
//! - **Repositories** ([`repository`]): a local directory or S3 (`aws-sdk-s3`,
//!   path-style endpoints for S3-compatible stores, storage class and SSE).
//!   Objects are streamed through zstd and SHA-256 part by part ([`object`]);
//!   every backup ends with a [`manifest::BackupManifest`] written last, so a
//!   backup without one is never taken for complete.
//! - **PostgreSQL** ([`postgres`]): base backups streamed from `pg_basebackup`,
//!   WAL archiving (`archive_command = 'backup-agent wal-push %p ...'`,
//!   `restore_command = 'backup-agent wal-fetch %f %p ...'`), point-in-time
//!   restores into scratch clusters, per-table `pg_dump -Fc` backups, row counts
//!   and sampled-row checksums captured at backup time.
//! - **MongoDB** ([`mongo`]): a logical dump through the `mongodb` crate in
//!   mongodump's layout (`<db>/<coll>.bson` + `.metadata.json`) and a restore.
//! - **Retention** ([`retention`], [`prune`]): GFS 7/4/12 as a plan; never the
//!   newest verified backup, an in-progress backup, or WAL a kept base needs.
//! - **Verification** ([`verify`]) and **drills** ([`drill`], [`rehearsal`]):
//!   re-read every object; restore and compare; measure RTO and RPO.
//! - **Running it** ([`daemon`]): the commands on cron schedules, with
//!   Prometheus metrics for the backup-freshness alerts.
//!
//! | check | default criterion |
//! |---|---|
//! | `objects/<id>` | every object matches its manifest (size, SHA-256 stored and raw) |
//! | `wal-chain/<id>` | no gap in the WAL archive after the base backup |
//! | `restore/<id>` | restores; row counts and sample checksums match those at backup time |
//! | `rto` | `rto < 4h` full loss, `rto < 1h` PITR, `rto < 30m` table |
//! | `rpo` | `rpo < 1h` |
//!
//! ```no_run
//! # async fn example() -> Result<(), backup_agent::error::AgentError> {
//! use backup_agent::repository::{Repository, RepositoryLocation, S3Options};
//! use backup_agent::postgres::base::{self, BaseBackupOptions};
//! let location: RepositoryLocation = "/srv/backups".parse()?;
//! let repo = Repository::open(&location, &S3Options::default()).await?;
//! let manifest = base::backup(&repo, "postgres://postgres@127.0.0.1:5432/app", &BaseBackupOptions::default(), |_| {}).await?;
//! println!("{} complete, {} B stored", manifest.id, manifest.stored_bytes());
//! let report = backup_agent::verify::verify(&repo, &Default::default()).await?;
//! std::process::exit(report.exit_code().code());
//! # }
//! ```

pub mod crypt;
pub mod daemon;
pub mod drill;
pub mod error;
pub mod guard;
pub mod manifest;
pub mod mongo;
pub mod object;
pub mod postgres;
pub mod prune;
pub mod rehearsal;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod verify;

use shared_types::{Check, Measurement, Report};

use crate::manifest::BackupManifest;

/// The report of a finished backup: what was stored, how fast.
pub fn backup_report(target: &str, manifest: &BackupManifest, seconds: f64) -> Report {
    let mut report = Report::new("backup-agent", env!("CARGO_PKG_VERSION"), target);
    report.push_check(Check::pass(
        "backup",
        "backup complete with a manifest",
        format!("{} ({} object(s))", manifest.id, manifest.objects.len()),
    ));
    let raw = manifest.raw_bytes() as f64;
    report
        .push_measurement(Measurement::new("raw_bytes", raw, "B"))
        .push_measurement(Measurement::new("stored_bytes", manifest.stored_bytes() as f64, "B"))
        .push_measurement(Measurement::new("duration", seconds, "s"))
        .push_measurement(Measurement::new("throughput", raw / 1e6 / seconds.max(1e-9), "MB/s"));
    report.data.insert("backup_id".into(), manifest.id.clone().into());
    report.data.insert("manifest".into(), serde_json::to_value(manifest).unwrap_or_default());
    report.finish();
    report
}
