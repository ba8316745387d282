//! WAL archiving: `archive_command = 'backup-agent wal-push %p ...'` and
//! `restore_command = 'backup-agent wal-fetch %f %p ...'`.
//!
//! Each file is stored as `wal/<name>.zst` with a `wal/<name>.zst.sha256`
//! entry (sizes and SHA-256) written after it; a segment without its entry
//! counts as not archived, so PostgreSQL's retry re-uploads it. Pushing a file
//! that is already archived with the same content succeeds (PostgreSQL may
//! retry after a crash); with different content it fails, as the PostgreSQL
//! documentation asks of an archive command.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{AgentError, Result};
use crate::manifest::WAL_PREFIX;
use crate::object::{ObjectEntry, UploadSettings, download_to, upload_bytes};
use crate::repository::Repository;

/// Suffix of the checksum entry stored next to each archived file.
pub const ENTRY_SUFFIX: &str = ".sha256";

fn keys(name: &str, settings: &UploadSettings) -> (String, String) {
    let key = format!("{WAL_PREFIX}{name}{}", settings.compression.suffix());
    let entry = format!("{key}{ENTRY_SUFFIX}");
    (key, entry)
}

/// Whether `name` looks like a file PostgreSQL archives (segment, history,
/// backup label, partial segment): 24 hex digits or `XXXXXXXX.history`.
pub fn valid_wal_name(name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    match name.split_once('.') {
        None => name.len() == 24 && hex(name),
        Some((head, "history")) => head.len() == 8 && hex(head),
        Some((head, rest)) => {
            head.len() == 24 && hex(head) && (rest == "partial" || rest.ends_with("backup"))
        }
    }
}

async fn read_entry(repo: &Repository, entry_key: &str) -> Result<Option<ObjectEntry>> {
    match repo.get_bytes(entry_key).await {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| AgentError::Integrity(format!("{entry_key} is unreadable ({e})"))),
        Err(AgentError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Archives the WAL file at `path` (relative paths are relative to the data
/// directory, where PostgreSQL runs the archive command).
pub async fn push(
    repo: &Repository,
    path: &Path,
    settings: &UploadSettings,
) -> Result<ObjectEntry> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| valid_wal_name(n))
        .ok_or_else(|| {
            AgentError::Usage(format!(
                "{} is not a WAL file name (use archive_command = '... wal-push %p')",
                path.display()
            ))
        })?
        .to_owned();
    let data = tokio::fs::read(path)
        .await
        .map_err(|e| AgentError::io(format!("cannot read {}", path.display()), e))?;
    let (key, entry_key) = keys(&name, settings);
    if let Some(existing) = read_entry(repo, &entry_key).await? {
        let raw = hex::encode(Sha256::digest(&data));
        if existing.raw_sha256 == raw {
            return Ok(existing);
        }
        return Err(AgentError::Integrity(format!(
            "{name} is already archived with different content (sha256 {} vs {}): refusing to overwrite; two clusters may be archiving into the same repository",
            &existing.raw_sha256[..12.min(existing.raw_sha256.len())],
            &raw[..12]
        )));
    }
    let entry = upload_bytes(repo, &key, &data, settings).await?;
    let json = serde_json::to_vec(&entry)
        .map_err(|e| AgentError::CouldNotRun(format!("encoding the WAL entry: {e}")))?;
    repo.put_bytes(&entry_key, json).await?;
    Ok(entry)
}

/// Restores the archived file `name` to `dest` (written to a temporary name
/// and renamed, so PostgreSQL never reads half a segment). A file that is
/// not archived is [`AgentError::NotFound`], which ends recovery normally.
pub async fn fetch(
    repo: &Repository,
    name: &str,
    dest: &Path,
    settings: &UploadSettings,
) -> Result<()> {
    if !valid_wal_name(name) {
        return Err(AgentError::Usage(format!(
            "{name:?} is not a WAL file name (use restore_command = '... wal-fetch %f %p')"
        )));
    }
    let (_, entry_key) = keys(name, settings);
    let entry = read_entry(repo, &entry_key)
        .await?
        .ok_or_else(|| AgentError::NotFound(format!("WAL file {name} is not in the archive")))?;
    let tmp = dest.with_extension("backup-agent-partial");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| AgentError::io(format!("cannot create {}", tmp.display()), e))?;
    let result = download_to(repo, &entry, &mut file).await;
    drop(file);
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, dest)
        .await
        .map_err(|e| AgentError::io(format!("cannot rename to {}", dest.display()), e))
}

/// Names of the archived WAL files (complete ones, with their entry).
pub async fn list(repo: &Repository) -> Result<Vec<String>> {
    let objects = repo.list(WAL_PREFIX).await?;
    let entries: std::collections::BTreeSet<&str> =
        objects.iter().filter_map(|o| o.key.strip_suffix(ENTRY_SUFFIX)).collect();
    Ok(objects
        .iter()
        .filter(|o| entries.contains(o.key.as_str()))
        .filter_map(|o| {
            let name = o.key.strip_prefix(WAL_PREFIX)?;
            Some(name.strip_suffix(".zst").unwrap_or(name).to_owned())
        })
        .collect())
}

/// The newest archived WAL file (not a history file) and when it was
/// archived (its entry's modification time, ms since the epoch; 0 if the
/// store gives none).
pub async fn newest_archived(repo: &Repository) -> Result<Option<(String, i64)>> {
    let objects = repo.list(WAL_PREFIX).await?;
    let data: std::collections::BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    Ok(objects
        .iter()
        .filter_map(|o| {
            let key = o.key.strip_suffix(ENTRY_SUFFIX)?;
            let name = key.strip_prefix(WAL_PREFIX)?;
            let name = name.strip_suffix(".zst").unwrap_or(name);
            (data.contains(key) && !name.ends_with(".history"))
                .then(|| (name.to_owned(), o.modified_ms))
        })
        .max_by_key(|(_, modified)| *modified))
}

/// Deletes an archived file: its entry first, so it stops counting as archived.
pub async fn delete(repo: &Repository, name: &str) -> Result<()> {
    for compression in [crate::object::Compression::Zstd, crate::object::Compression::None] {
        let settings = UploadSettings { compression, ..UploadSettings::default() };
        let (key, entry_key) = keys(name, &settings);
        repo.delete(&entry_key).await?;
        repo.delete(&key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_wal_name;

    #[test]
    fn wal_names() {
        assert!(valid_wal_name("000000010000000000000003"));
        assert!(valid_wal_name("00000002.history"));
        assert!(valid_wal_name("000000010000000000000002.00000028.backup"));
        assert!(valid_wal_name("000000010000000000000003.partial"));
        assert!(!valid_wal_name("../etc/passwd"));
        assert!(!valid_wal_name("RECOVERYXLOG"));
    }
}

/// Attempts of `wal-fetch` on a repository error before it gives up.
pub const FETCH_ATTEMPTS: u32 = 4;

/// `wal-fetch`'s exit status when the repository failed: PostgreSQL aborts
/// recovery on a restore_command status above 125, where any other non-zero
/// status means "not in the archive" and recovery ends there, promoting a
/// server that silently lacks the WAL it could not read.
pub const FETCH_ABORT_STATUS: i32 = 200;

/// How `wal-fetch` ended when it did not fetch the file.
#[derive(Debug)]
pub enum FetchFailure {
    /// Not archived, or bad arguments: the normal end of recovery (or a
    /// usage error); no retry helps.
    Final(AgentError),
    /// The repository kept failing for every attempt: recovery must stop
    /// (exit [`FETCH_ABORT_STATUS`]) rather than end here.
    RepositoryFailed {
        /// The last error.
        error: AgentError,
        /// How many attempts were made.
        attempts: u32,
    },
}

/// [`fetch`] with retries: each attempt opens the repository with `open`; a
/// repository error is retried [`FETCH_ATTEMPTS`] times with a doubling
/// delay from 500 ms, "not archived" and usage errors are not.
pub async fn fetch_with_retries<F, Fut>(
    open: F,
    name: &str,
    dest: &Path,
    settings: &UploadSettings,
) -> std::result::Result<(), FetchFailure>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Repository>>,
{
    let mut delay = std::time::Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let fetched = match open().await {
            Ok(repository) => fetch(&repository, name, dest, settings).await,
            Err(e) => Err(e),
        };
        match fetched {
            Ok(()) => return Ok(()),
            Err(e @ (AgentError::NotFound(_) | AgentError::Usage(_))) => {
                return Err(FetchFailure::Final(e));
            }
            Err(error) if attempt >= FETCH_ATTEMPTS => {
                return Err(FetchFailure::RepositoryFailed { error, attempts: attempt });
            }
            Err(e) => {
                eprintln!("wal-fetch {name}: {e}; retrying in {} ms", delay.as_millis());
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}
