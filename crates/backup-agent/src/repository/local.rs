//! A repository in a local directory. Objects are written to `<key>.partial`
//! and renamed into place when complete, so a reader never sees half an object.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use tokio::io::AsyncWriteExt;

use super::{IncompleteUpload, ObjectInfo, ObjectReader};
use crate::error::{AgentError, Result};

const PARTIAL_SUFFIX: &str = ".partial";

/// A directory holding backups.
#[derive(Debug, Clone)]
pub struct LocalRepository {
    root: PathBuf,
    pub(super) key: Option<crate::crypt::EncryptionKey>,
}

impl LocalRepository {
    /// The repository rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> LocalRepository {
        LocalRepository { root, key: None }
    }

    /// Path of `key` on disk.
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub(super) fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn error(&self, message: String) -> AgentError {
        AgentError::Repository { location: self.describe(), message }
    }

    pub(super) async fn check_reachable(&self) -> Result<()> {
        match tokio::fs::metadata(&self.root).await {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(self.error("is not a directory".to_owned())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                tokio::fs::create_dir_all(&self.root).await.map_err(|e| {
                    self.error(format!(
                        "does not exist and cannot be created ({e}): check the path and permissions"
                    ))
                })
            }
            Err(err) => Err(self.error(format!("cannot be read: {err}"))),
        }
    }

    async fn ensure_parent(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| self.error(format!("cannot create {}: {e}", parent.display())))?;
        }
        Ok(())
    }

    pub(super) async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let path = self.path_of(key);
        self.ensure_parent(&path).await?;
        let tmp = partial_path(&path);
        tokio::fs::write(&tmp, &data)
            .await
            .map_err(|e| self.error(format!("cannot write {}: {e}", tmp.display())))?;
        sync_and_rename(&tmp, &path).await.map_err(|e| self.error(e))
    }

    pub(super) async fn begin_upload(&self, key: &str) -> Result<LocalUpload> {
        let path = self.path_of(key);
        self.ensure_parent(&path).await?;
        let partial = partial_path(&path);
        let file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| self.error(format!("cannot create {}: {e}", partial.display())))?;
        Ok(LocalUpload { file, partial, path, location: self.describe() })
    }

    pub(super) async fn get_reader(&self, key: &str) -> Result<ObjectReader> {
        let path = self.path_of(key);
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Box::pin(tokio::io::BufReader::with_capacity(1 << 20, file))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(AgentError::NotFound(format!("{key} in {}", self.describe())))
            }
            Err(err) => Err(self.error(format!("cannot open {}: {err}", path.display()))),
        }
    }

    pub(super) fn exists(&self, key: &str) -> bool {
        self.path_of(key).is_file()
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(self.error(format!("cannot list {}: {err}", dir.display()))),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| self.error(format!("cannot list {}: {e}", dir.display())))?
            {
                let path = entry.path();
                let meta = entry
                    .metadata()
                    .await
                    .map_err(|e| self.error(format!("{}: {e}", path.display())))?;
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Some(key) = self.key_of(&path) else { continue };
                if key.ends_with(PARTIAL_SUFFIX) || !key.starts_with(prefix) {
                    continue;
                }
                let modified_ms = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                out.push(ObjectInfo { key, size: meta.len(), modified_ms });
            }
        }
        Ok(out)
    }

    fn key_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        Some(rel.to_str()?.to_owned())
    }

    pub(super) async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(self.error(format!("cannot delete {}: {err}", path.display()))),
        }
        // Remove directories left empty, up to the root; a non-empty one stops it.
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }

    pub(super) async fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<IncompleteUpload>> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(mut entries) = tokio::fs::read_dir(&dir).await else { continue };
            while let Ok(Some(entry)) = entries.next_entry().await {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(key) = self.key_of(&path)
                    && let Some(object) = key.strip_suffix(PARTIAL_SUFFIX)
                    && object.starts_with(prefix)
                {
                    out.push(IncompleteUpload { key: object.to_owned(), upload_id: key.clone() });
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn abort_incomplete(&self, upload: &IncompleteUpload) -> Result<()> {
        self.delete(&upload.upload_id).await
    }
}

/// A `.partial` file being written.
#[derive(Debug)]
pub struct LocalUpload {
    file: tokio::fs::File,
    partial: PathBuf,
    path: PathBuf,
    location: String,
}

impl LocalUpload {
    fn error(&self, message: String) -> AgentError {
        AgentError::Repository { location: self.location.clone(), message }
    }

    pub(super) async fn put_part(&mut self, part: Vec<u8>) -> Result<()> {
        self.file
            .write_all(&part)
            .await
            .map_err(|e| self.error(format!("cannot write {}: {e}", self.partial.display())))
    }

    pub(super) async fn complete(mut self) -> Result<()> {
        self.file
            .flush()
            .await
            .map_err(|e| self.error(format!("{}: {e}", self.partial.display())))?;
        drop(self.file);
        sync_and_rename(&self.partial, &self.path)
            .await
            .map_err(|e| AgentError::Repository { location: self.location, message: e })
    }

    pub(super) async fn abort(self) -> Result<()> {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.partial).await;
        Ok(())
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(PARTIAL_SUFFIX);
    PathBuf::from(name)
}

/// fsyncs `tmp`, renames it to `path` and fsyncs the directory, so a crash
/// leaves either the old state or the complete object.
async fn sync_and_rename(tmp: &Path, path: &Path) -> std::result::Result<(), String> {
    let file = tokio::fs::File::open(tmp)
        .await
        .map_err(|e| format!("cannot reopen {}: {e}", tmp.display()))?;
    file.sync_all().await.map_err(|e| format!("cannot fsync {}: {e}", tmp.display()))?;
    tokio::fs::rename(tmp, path)
        .await
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = tokio::fs::File::open(parent).await
    {
        let _ = dir.sync_all().await;
    }
    Ok(())
}
