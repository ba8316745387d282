//! Physical base backups: `pg_basebackup -Ft -D -` streamed through zstd into
//! the repository (never staged on disk), and their restore into a scratch
//! cluster, to the end of the backup, the end of the WAL archive, or a time.

use std::process::Stdio;
use std::time::Duration;

use shared_types::Timestamp;
use tokio::io::AsyncReadExt;

use super::scratch::ScratchCluster;
use super::tools::{client_command, hand_to_postgres, server_command, tail, which};
use super::{column, connect, display_target, snapshot_table, user_tables};
use crate::error::{AgentError, Result};
use crate::manifest::{
    BACKUPS_PREFIX, BackupKind, BackupManifest, MANIFEST_FORMAT, PgBaseInfo, mark_in_progress,
    new_backup_id, publish,
};
use crate::object::{UploadSettings, download_to, upload_stream};
use crate::repository::Repository;

/// Options of a base backup.
#[derive(Debug, Clone, Default)]
pub struct BaseBackupOptions {
    /// Tables whose row counts are recorded (`schema.table`); empty = every user table, up to 20.
    pub key_tables: Vec<String>,
    /// Compression and part size.
    pub upload: UploadSettings,
}

/// Takes a base backup of the server at `url` into `repo`; returns its
/// manifest once published. `on_progress` gets the raw bytes streamed so far.
pub async fn backup(
    repo: &Repository,
    url: &str,
    options: &BaseBackupOptions,
    on_progress: impl FnMut(u64),
) -> Result<BackupManifest> {
    let client = connect(url).await?;
    let server_version: String = column(
        &client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| AgentError::CouldNotRun(format!("SHOW server_version: {e}")))?,
        0,
        "SHOW server_version",
        "server_version",
    )?;
    let segment_size: i64 = column(
        &client
            .query_one(
                "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'",
                &[],
            )
            .await
            .map_err(|e| AgentError::CouldNotRun(format!("reading wal_segment_size: {e}")))?,
        0,
        "reading wal_segment_size (pg_settings)",
        "setting",
    )?;
    let started_at = Timestamp::now();
    let id = new_backup_id(&started_at, BackupKind::PgBase);
    mark_in_progress(repo, &id, &started_at).await?;

    let (mut cmd, url_no_password) = client_command("pg_basebackup", url)?;
    cmd.args(["-D", "-", "-F", "t", "-X", "fetch", "-c", "fast", "-v", "--no-password", "-d"])
        .arg(&url_no_password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| AgentError::io("cannot start pg_basebackup", e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| AgentError::CouldNotRun("pg_basebackup has no stdout".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| AgentError::CouldNotRun("pg_basebackup has no stderr".into()))?;
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let key = format!("{BACKUPS_PREFIX}{id}/base.tar{}", options.upload.compression.suffix());
    let uploaded = upload_stream(repo, &key, stdout, &options.upload, on_progress).await;
    let status = child.wait().await.map_err(|e| AgentError::io("waiting for pg_basebackup", e))?;
    let log = stderr_task.await.unwrap_or_default();
    if !status.success() {
        if uploaded.is_ok() {
            repo.delete(&key).await.ok();
        }
        return Err(AgentError::CouldNotRun(format!(
            "pg_basebackup from {} failed ({status}): {}\nhint: the user needs the REPLICATION attribute and a `replication` line in pg_hba.conf",
            display_target(url),
            tail(&log, 8)
        )));
    }
    let entry = uploaded?;
    let info = parse_basebackup_log(&log, segment_size, server_version).ok_or_else(|| {
        AgentError::CouldNotRun(format!(
            "cannot read the WAL start/end points from pg_basebackup's output: {}",
            tail(&log, 8)
        ))
    })?;

    // Without --key-tables every user table is snapshotted (row count and
    // checksum), so a drill's consistency check compares them all.
    let mut tables = options.key_tables.clone();
    if tables.is_empty() {
        tables = user_tables(&client).await?;
    }
    let mut snapshots = Vec::new();
    for table in &tables {
        snapshots.push(snapshot_table(&client, table).await?);
    }
    let manifest = BackupManifest {
        format: MANIFEST_FORMAT,
        id,
        kind: BackupKind::PgBase,
        source: display_target(url),
        started_at,
        finished_at: Timestamp::now(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        objects: vec![entry],
        postgres: Some(info),
        tables: snapshots,
    };
    publish(repo, &manifest).await?;
    Ok(manifest)
}

/// Parses an LSN `X/Y`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The WAL file name holding `lsn` on `timeline`.
pub fn wal_file_name(timeline: u32, lsn: u64, segment_size: u64) -> String {
    let segno = lsn / segment_size.max(1);
    let per_id = 0x1_0000_0000 / segment_size.max(1);
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// Reads `write-ahead log start point: 0/2000028 on timeline 1` and `... end
/// point: 0/2000100` from `pg_basebackup -v`.
fn parse_basebackup_log(
    log: &str,
    segment_size: i64,
    server_version: String,
) -> Option<PgBaseInfo> {
    let after = |marker: &str| {
        log.lines().find_map(|l| l.split_once(marker).map(|(_, r)| r.trim().to_owned()))
    };
    let start = after("write-ahead log start point:")?;
    let (start_lsn, timeline) = match start.split_once(" on timeline ") {
        Some((lsn, tli)) => (lsn.trim().to_owned(), tli.trim().parse().ok()?),
        None => (start, 1),
    };
    let stop_lsn = after("write-ahead log end point:")?;
    let size = u64::try_from(segment_size).ok()?;
    Some(PgBaseInfo {
        start_wal: wal_file_name(timeline, parse_lsn(&start_lsn)?, size),
        stop_wal: wal_file_name(timeline, parse_lsn(&stop_lsn)?, size),
        start_lsn,
        stop_lsn,
        timeline,
        server_version,
    })
}

/// How far a restore replays WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Stop as soon as the backup is consistent (uses only the WAL in the backup).
    Immediate,
    /// Replay every archived WAL segment, then promote.
    Latest,
    /// Stop before the first commit after this time, then promote.
    Time(Timestamp),
}

/// Restores the base backup `manifest` into `cluster`'s (absent) data
/// directory, configures recovery to `target` with `restore_command =
/// '<wal_fetch> %f %p'`, starts the server and waits until it is promoted.
pub async fn restore(
    repo: &Repository,
    manifest: &BackupManifest,
    cluster: &ScratchCluster,
    target: &RecoveryTarget,
    wal_fetch: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client> {
    if manifest.kind != BackupKind::PgBase {
        return Err(AgentError::Usage(format!(
            "backup {} is a {} backup, not a base backup",
            manifest.id,
            manifest.kind.short()
        )));
    }
    let entry = manifest.objects.iter().find(|o| o.key.contains("/base.tar")).ok_or_else(|| {
        AgentError::Integrity(format!("the manifest of {} lists no base.tar", manifest.id))
    })?;
    let data_dir = cluster.data_dir();
    std::fs::create_dir(data_dir)
        .map_err(|e| AgentError::io(format!("cannot create {}", data_dir.display()), e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| AgentError::io(format!("chmod {}", data_dir.display()), e))?;
    }
    hand_to_postgres(data_dir)?;
    let tar =
        which("tar").ok_or_else(|| AgentError::CouldNotRun("tar not found on PATH".into()))?;
    let mut cmd = server_command(&tar);
    cmd.arg("-x")
        .arg("-f")
        .arg("-")
        .arg("-C")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| AgentError::io("cannot start tar", e))?;
    let mut stdin =
        child.stdin.take().ok_or_else(|| AgentError::CouldNotRun("tar has no stdin".into()))?;
    let copied = download_to(repo, entry, &mut stdin).await;
    drop(stdin);
    let output =
        child.wait_with_output().await.map_err(|e| AgentError::io("waiting for tar", e))?;
    copied?;
    if !output.status.success() {
        return Err(AgentError::CouldNotRun(format!(
            "tar could not unpack {} into {}: {}",
            entry.key,
            data_dir.display(),
            tail(&String::from_utf8_lossy(&output.stderr), 5)
        )));
    }
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut conf = cluster.local_settings();
    conf.push_str(&format!("restore_command = {}\n", quote(&format!("{wal_fetch} %f %p"))));
    conf.push_str("recovery_target_action = 'promote'\nhot_standby = on\n");
    match target {
        RecoveryTarget::Immediate => conf.push_str("recovery_target = 'immediate'\n"),
        RecoveryTarget::Latest => {}
        RecoveryTarget::Time(at) => {
            let pg_time = at.as_str().replacen('T', " ", 1).replace('Z', "+00");
            conf.push_str(&format!(
                "recovery_target_time = {}\nrecovery_target_inclusive = on\n",
                quote(&pg_time)
            ));
        }
    }
    cluster.append_conf("postgresql.auto.conf", &conf)?;
    cluster.append_conf("recovery.signal", "")?;
    cluster.start(timeout).await?;
    cluster.wait_until_promoted(timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_map_to_wal_file_names() {
        let size = 16 * 1024 * 1024;
        assert_eq!(
            wal_file_name(1, parse_lsn("0/2000028").unwrap_or(0), size),
            "000000010000000000000002"
        );
        assert_eq!(
            wal_file_name(3, parse_lsn("1A/FF000000").unwrap_or(0), size),
            "000000030000001A000000FF"
        );
    }

    #[test]
    fn basebackup_log_is_parsed() {
        let log = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
                   pg_basebackup: write-ahead log start point: 0/4000028 on timeline 1\n\
                   pg_basebackup: write-ahead log end point: 0/5000100\n";
        let info = parse_basebackup_log(log, 16 * 1024 * 1024, "15.8".into());
        let info = info.unwrap_or_default();
        assert_eq!(
            (info.start_wal.as_str(), info.stop_wal.as_str()),
            ("000000010000000000000004", "000000010000000000000005")
        );
        assert_eq!(info.timeline, 1);
    }
}
