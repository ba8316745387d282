//! The [`BackupManifest`] (written last: a backup without one is never
//! complete) and the [`BackupCatalog`] of a repository.
//!
//! Repository layout:
//!
//! ```text
//! backups/<id>/in-progress.json   written first, removed after the manifest
//! backups/<id>/<objects>          base.tar.zst, <schema.table>.dump.zst, <db>/<coll>.bson.zst, ...
//! backups/<id>/manifest.json      written last: objects, sizes, SHA-256, LSNs, row counts
//! backups/<id>/verified.json      the latest `verify` of this backup
//! backups/<id>/deleting.json      journal of a prune in progress (manifest already gone)
//! wal/<segment>.zst               archived WAL (wal-push), history files
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared_types::Timestamp;

use crate::error::{AgentError, Result};
use crate::object::ObjectEntry;
use crate::repository::Repository;

/// Version of the manifest format.
pub const MANIFEST_FORMAT: u32 = 1;
/// Prefix of every backup's directory.
pub const BACKUPS_PREFIX: &str = "backups/";
/// Prefix of archived WAL.
pub const WAL_PREFIX: &str = "wal/";

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    /// A PostgreSQL base backup (pg_basebackup tar); restorable with archived WAL to any later point.
    PgBase,
    /// Per-table logical dumps (pg_dump -Fc).
    PgTable,
    /// A MongoDB logical dump in mongodump's layout.
    Mongo,
}

impl BackupKind {
    /// The short name used in backup ids.
    pub fn short(self) -> &'static str {
        match self {
            BackupKind::PgBase => "pg-base",
            BackupKind::PgTable => "pg-table",
            BackupKind::Mongo => "mongo",
        }
    }
}

/// PostgreSQL facts of a base backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PgBaseInfo {
    /// WAL location where the backup started, e.g. `0/2000028`.
    pub start_lsn: String,
    /// WAL location where it ended; the restore is consistent from here on.
    pub stop_lsn: String,
    /// Timeline of the start.
    pub timeline: u32,
    /// The first WAL segment a restore needs, e.g. `000000010000000000000002`.
    pub start_wal: String,
    /// The last WAL segment a consistent restore needs.
    pub stop_wal: String,
    /// `server_version` of the source.
    pub server_version: String,
}

/// Row count (and checksum of a sample) of a table at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot {
    /// `schema.table` or `db.collection`.
    pub name: String,
    /// Rows (documents) at backup time.
    pub rows: i64,
    /// SHA-256 of the first rows in primary-key order, when the table has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_sha256: Option<String>,
    /// Tables this one has foreign keys to (`schema.table`): a restore of
    /// this table into an empty database needs them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
}

/// Everything a restore and a verification need to know about one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Backup id, also its directory name: `20261130T020000.123Z-pg-base`.
    pub id: String,
    /// What it holds.
    pub kind: BackupKind,
    /// The source, without credentials (`127.0.0.1:5432/app`).
    pub source: String,
    /// When the backup started.
    pub started_at: Timestamp,
    /// When the last object was stored.
    pub finished_at: Timestamp,
    /// backup-agent version that wrote it.
    pub tool_version: String,
    /// Every object of the backup.
    pub objects: Vec<ObjectEntry>,
    /// Base-backup facts (kind `pg-base`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgBaseInfo>,
    /// Row counts of key tables (or collections) at backup time.
    #[serde(default)]
    pub tables: Vec<TableSnapshot>,
}

impl BackupManifest {
    /// Key of this backup's manifest.
    pub fn key(id: &str) -> String {
        format!("{BACKUPS_PREFIX}{id}/manifest.json")
    }

    /// Total stored bytes.
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    /// Total bytes before compression.
    pub fn raw_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.raw_size).sum()
    }

    /// Parses a manifest read from `key`.
    pub fn from_json(key: &str, data: &[u8]) -> Result<BackupManifest> {
        let manifest: BackupManifest = serde_json::from_slice(data).map_err(|e| {
            AgentError::Integrity(format!(
                "{key} is not a valid manifest ({e}): the backup cannot be trusted"
            ))
        })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(AgentError::Integrity(format!(
                "{key} has manifest format {} but this backup-agent reads {MANIFEST_FORMAT}: upgrade backup-agent",
                manifest.format
            )));
        }
        Ok(manifest)
    }
}

/// A backup id for a backup of `kind` starting at `at`: sortable by time.
pub fn new_backup_id(at: &Timestamp, kind: BackupKind) -> String {
    let compact: String = at.as_str().chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{compact}-{}", kind.short())
}

/// Marker written before the first object of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProgress {
    /// When the backup started.
    pub started_at: Timestamp,
    /// Host and pid of the writer.
    pub writer: String,
}

/// The outcome of the latest verification of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// When it was verified.
    pub verified_at: Timestamp,
    /// Every object matched its manifest.
    pub objects_ok: bool,
    /// A restore was tried and its sanity queries passed (None = not tried).
    pub restore_ok: Option<bool>,
}

impl VerificationRecord {
    /// Key of the record of backup `id`.
    pub fn key(id: &str) -> String {
        format!("{BACKUPS_PREFIX}{id}/verified.json")
    }

    /// Whether the backup counts as verified.
    pub fn passed(&self) -> bool {
        self.objects_ok && self.restore_ok != Some(false)
    }
}

/// Where a backup's life stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupState {
    /// The manifest exists.
    Complete(Box<BackupManifest>),
    /// Objects or an in-progress marker, no manifest: being written, or killed.
    Incomplete {
        /// When it started (from the marker), if known.
        started_at: Option<Timestamp>,
        /// The in-progress marker is listed but could not be read (a store
        /// error, or not a marker): nobody knows whether the backup is still
        /// running, so nothing may delete it. Says why.
        marker_unreadable: Option<String>,
    },
    /// A prune removed the manifest and did not finish removing the objects.
    Deleting,
}

/// One backup directory of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    /// Backup id.
    pub id: String,
    /// State.
    pub state: BackupState,
    /// Keys of every object under the backup's directory.
    pub keys: Vec<String>,
    /// Latest verification, if any.
    pub verification: Option<VerificationRecord>,
}

impl BackupEntry {
    /// The manifest of a complete backup.
    pub fn manifest(&self) -> Option<&BackupManifest> {
        match &self.state {
            BackupState::Complete(m) => Some(m),
            _ => None,
        }
    }
}

/// Every backup of a repository, oldest first.
#[derive(Debug, Clone, Default)]
pub struct BackupCatalog {
    /// Backups by id (ids sort by start time).
    pub backups: Vec<BackupEntry>,
}

impl BackupCatalog {
    /// Lists the repository and reads every manifest.
    pub async fn load(repo: &Repository) -> Result<BackupCatalog> {
        let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for object in repo.list(BACKUPS_PREFIX).await? {
            let rest = &object.key[BACKUPS_PREFIX.len()..];
            if let Some((id, _)) = rest.split_once('/') {
                by_id.entry(id.to_owned()).or_default().push(object.key.clone());
            }
        }
        let mut backups = Vec::new();
        for (id, keys) in by_id {
            let has = |name: &str| keys.iter().any(|k| k.ends_with(&format!("/{name}")));
            let state = if has("deleting.json") {
                BackupState::Deleting
            } else if has("manifest.json") {
                let key = BackupManifest::key(&id);
                let data = repo.get_bytes(&key).await?;
                BackupState::Complete(Box::new(BackupManifest::from_json(&key, &data)?))
            } else {
                let marker = format!("{BACKUPS_PREFIX}{id}/in-progress.json");
                // A marker that is listed but cannot be read is not absent:
                // an S3 error says nothing about whether the backup still runs.
                let (started_at, marker_unreadable) = if has("in-progress.json") {
                    match repo.get_bytes(&marker).await {
                        Ok(data) => match serde_json::from_slice::<InProgress>(&data) {
                            Ok(m) => (Some(m.started_at), None),
                            Err(e) => (None, Some(format!("{marker} is not a marker ({e})"))),
                        },
                        Err(e) => (None, Some(format!("cannot read {marker}: {e}"))),
                    }
                } else {
                    (None, None)
                };
                BackupState::Incomplete { started_at, marker_unreadable }
            };
            let verification = if has("verified.json") {
                let data = repo.get_bytes(&VerificationRecord::key(&id)).await?;
                serde_json::from_slice(&data).ok()
            } else {
                None
            };
            backups.push(BackupEntry { id, state, keys, verification });
        }
        Ok(BackupCatalog { backups })
    }

    /// The complete backups, oldest first.
    pub fn complete(&self) -> impl Iterator<Item = (&BackupEntry, &BackupManifest)> {
        self.backups.iter().filter_map(|b| b.manifest().map(|m| (b, m)))
    }

    /// The backup with this id.
    pub fn get(&self, id: &str) -> Option<&BackupEntry> {
        self.backups.iter().find(|b| b.id == id)
    }

    /// The complete backup `id`, or the newest complete one of `kind` for `latest`.
    pub fn resolve(&self, id: &str, kind: Option<BackupKind>) -> Result<&BackupManifest> {
        if id == "latest" {
            return self
                .complete()
                .filter(|(_, m)| kind.is_none_or(|k| m.kind == k))
                .last()
                .map(|(_, m)| m)
                .ok_or_else(|| {
                    AgentError::NotFound(format!(
                        "no complete {}backup in the repository: run `backup-agent backup` first",
                        kind.map(|k| format!("{} ", k.short())).unwrap_or_default()
                    ))
                });
        }
        match self.get(id).map(|b| &b.state) {
            Some(BackupState::Complete(m)) => Ok(m),
            Some(BackupState::Incomplete { .. }) => Err(AgentError::Usage(format!(
                "backup {id} has no manifest: it is still being written or was interrupted, and cannot be restored"
            ))),
            Some(BackupState::Deleting) => Err(AgentError::Usage(format!(
                "backup {id} is being pruned and cannot be restored"
            ))),
            None => Err(AgentError::NotFound(format!(
                "backup {id}: `backup-agent list` shows the backups"
            ))),
        }
    }
}

/// Writes the manifest, then removes the in-progress marker: from this moment
/// the backup is complete.
pub async fn publish(repo: &Repository, manifest: &BackupManifest) -> Result<()> {
    let data = serde_json::to_vec_pretty(manifest)
        .map_err(|e| AgentError::CouldNotRun(format!("cannot encode the manifest: {e}")))?;
    repo.put_bytes(&BackupManifest::key(&manifest.id), data).await?;
    repo.delete(&format!("{BACKUPS_PREFIX}{}/in-progress.json", manifest.id)).await
}

/// Writes the in-progress marker of backup `id`.
pub async fn mark_in_progress(repo: &Repository, id: &str, started_at: &Timestamp) -> Result<()> {
    let marker = InProgress {
        started_at: started_at.clone(),
        writer: format!("pid {}", std::process::id()),
    };
    let data = serde_json::to_vec(&marker)
        .map_err(|e| AgentError::CouldNotRun(format!("cannot encode the marker: {e}")))?;
    repo.put_bytes(&format!("{BACKUPS_PREFIX}{id}/in-progress.json"), data).await
}

/// Deletes backup `id` so that it never looks complete on the way: the
/// `deleting.json` journal first, then the manifest, then the objects, then the journal.
pub async fn delete_backup(repo: &Repository, id: &str, keys: &[String]) -> Result<()> {
    let journal = format!("{BACKUPS_PREFIX}{id}/deleting.json");
    let note = serde_json::json!({ "deleting_since": Timestamp::now() }).to_string();
    repo.put_bytes(&journal, note.into_bytes()).await?;
    repo.delete(&BackupManifest::key(id)).await?;
    for key in keys {
        if *key != journal {
            repo.delete(key).await?;
        }
    }
    repo.delete(&journal).await
}
