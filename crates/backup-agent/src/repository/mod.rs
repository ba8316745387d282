//! Where backups live: a local directory or an S3 bucket (any S3-compatible
//! store with path-style endpoints).
//!
//! A [`Repository`] stores objects under keys relative to its root
//! (`backups/<id>/base.tar.zst`, `wal/000000010000000000000003.zst`). Large
//! objects are written through an [`Upload`]: parts go out as they are
//! produced (S3 multipart upload, or a `.partial` file renamed at the end), so
//! an object becomes visible only when it is complete and nothing is staged
//! whole on local disk.

mod local;
mod s3;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::AsyncRead;

pub use local::LocalRepository;
pub use s3::{DEFAULT_OUTAGE_BUDGET, S3Options, S3Repository};

use crate::error::{AgentError, Result};

/// Size of the parts a stream is cut into (S3's minimum is 5 MiB).
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// Where a repository is, as given on the command line: a directory
/// (`/srv/backups`, `file:///srv/backups`) or `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryLocation {
    /// A local directory.
    Local(PathBuf),
    /// A bucket and a key prefix (no leading or trailing slash, may be empty).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket.
        prefix: String,
    },
}

impl std::str::FromStr for RepositoryLocation {
    type Err = AgentError;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid {
                return Err(AgentError::Usage(format!(
                    "invalid repository {text:?}: bucket names are 3-63 lower-case letters, digits, '-' or '.' (s3://my-backups/prod)"
                )));
            }
            return Ok(RepositoryLocation::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        let path = text.strip_prefix("file://").unwrap_or(text);
        if path.is_empty() || text.contains("://") && !text.starts_with("file://") {
            return Err(AgentError::Usage(format!(
                "invalid repository {text:?}: use a directory (/srv/backups) or s3://bucket/prefix"
            )));
        }
        Ok(RepositoryLocation::Local(PathBuf::from(path)))
    }
}

impl fmt::Display for RepositoryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositoryLocation::Local(path) => write!(f, "{}", path.display()),
            RepositoryLocation::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            RepositoryLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the repository root.
    pub key: String,
    /// Stored size in bytes.
    pub size: u64,
    /// Last modification, milliseconds since the epoch (0 if unknown).
    pub modified_ms: i64,
}

/// An upload that was started and never completed (a killed backup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    /// Key the object would have had.
    pub key: String,
    /// S3 upload id, or the `.partial` file name.
    pub upload_id: String,
}

/// A readable object body.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// A backup repository.
#[derive(Debug, Clone)]
pub enum Repository {
    /// A local directory.
    Local(LocalRepository),
    /// An S3 bucket.
    S3(Box<S3Repository>),
}

impl Repository {
    /// Opens the repository at `location`; S3 settings come from `s3` and the
    /// standard AWS chain (env, profile, instance role). Nothing is contacted yet.
    pub async fn open(location: &RepositoryLocation, s3: &S3Options) -> Result<Repository> {
        Ok(match location {
            RepositoryLocation::Local(path) => {
                Repository::Local(LocalRepository::new(path.clone()))
            }
            RepositoryLocation::S3 { bucket, prefix } => {
                Repository::S3(Box::new(S3Repository::connect(bucket, prefix, s3).await?))
            }
        })
    }

    /// Seals every object written from now on with `key` and opens sealed
    /// objects with it ([`crate::crypt`]).
    pub fn with_encryption(mut self, key: Option<crate::crypt::EncryptionKey>) -> Repository {
        match &mut self {
            Repository::Local(r) => r.key = key,
            Repository::S3(r) => r.key = key,
        }
        self
    }

    /// The client-side encryption key, when one was given.
    pub fn encryption(&self) -> Option<&crate::crypt::EncryptionKey> {
        match self {
            Repository::Local(r) => r.key.as_ref(),
            Repository::S3(r) => r.key.as_ref(),
        }
    }

    /// The repository as shown to people (never with credentials).
    pub fn describe(&self) -> String {
        match self {
            Repository::Local(r) => r.describe(),
            Repository::S3(r) => r.describe(),
        }
    }

    /// Fails with a clear error when the repository cannot be used at all
    /// (endpoint unreachable, credentials rejected, bucket missing).
    pub async fn check_reachable(&self) -> Result<()> {
        match self {
            Repository::Local(r) => r.check_reachable().await,
            Repository::S3(r) => r.check_reachable().await,
        }
    }

    /// Stores a small object whole (manifests, markers, WAL segments).
    pub async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<()> {
        match self {
            Repository::Local(r) => r.put_bytes(key, data).await,
            Repository::S3(r) => r.put_bytes(key, data).await,
        }
    }

    /// Starts a streamed upload of `key`; the object appears at [`Upload::complete`].
    pub async fn begin_upload(&self, key: &str) -> Result<Upload> {
        match self {
            Repository::Local(r) => r.begin_upload(key).await.map(Upload::Local),
            Repository::S3(r) => Ok(Upload::S3(Box::new(r.begin_upload(key)))),
        }
    }

    /// Reads an object as a stream.
    pub async fn get_reader(&self, key: &str) -> Result<ObjectReader> {
        match self {
            Repository::Local(r) => r.get_reader(key).await,
            Repository::S3(r) => r.get_reader(key).await,
        }
    }

    /// Reads a small object whole.
    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut reader = self.get_reader(key).await?;
        let mut data = Vec::new();
        reader
            .read_to_end(&mut data)
            .await
            .map_err(|e| self.error(format!("reading {key}: {e}")))?;
        Ok(data)
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self {
            Repository::Local(r) => Ok(r.exists(key)),
            Repository::S3(r) => r.exists(key).await,
        }
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut objects = match self {
            Repository::Local(r) => r.list(prefix).await?,
            Repository::S3(r) => r.list(prefix).await?,
        };
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Deletes an object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Repository::Local(r) => r.delete(key).await,
            Repository::S3(r) => r.delete(key).await,
        }
    }

    /// Uploads that were started and never completed or aborted.
    pub async fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<IncompleteUpload>> {
        match self {
            Repository::Local(r) => r.incomplete_uploads(prefix).await,
            Repository::S3(r) => r.incomplete_uploads(prefix).await,
        }
    }

    /// Discards an incomplete upload (its parts are deleted).
    pub async fn abort_incomplete(&self, upload: &IncompleteUpload) -> Result<()> {
        match self {
            Repository::Local(r) => r.abort_incomplete(upload).await,
            Repository::S3(r) => r.abort_incomplete(upload).await,
        }
    }

    /// A repository error with this repository's name.
    pub fn error(&self, message: impl Into<String>) -> AgentError {
        AgentError::Repository { location: self.describe(), message: message.into() }
    }
}

/// A streamed upload in progress.
#[derive(Debug)]
pub enum Upload {
    /// Writing a `.partial` file.
    Local(local::LocalUpload),
    /// An S3 multipart upload (started lazily with the first full part).
    S3(Box<s3::S3Upload>),
}

impl Upload {
    /// Sends the next part (every part but the last must be at least 5 MiB for S3).
    pub async fn put_part(&mut self, part: Vec<u8>) -> Result<()> {
        match self {
            Upload::Local(u) => u.put_part(part).await,
            Upload::S3(u) => u.put_part(part).await,
        }
    }

    /// Makes the object visible.
    pub async fn complete(self) -> Result<()> {
        match self {
            Upload::Local(u) => u.complete().await,
            Upload::S3(u) => u.complete().await,
        }
    }

    /// Discards what was sent.
    pub async fn abort(self) -> Result<()> {
        match self {
            Upload::Local(u) => u.abort().await,
            Upload::S3(u) => u.abort().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            "s3://my-backups/prod/pg/"
                .parse::<RepositoryLocation>()
                .unwrap_or_else(|e| panic!("{e}")),
            RepositoryLocation::S3 { bucket: "my-backups".into(), prefix: "prod/pg".into() }
        );
        assert_eq!(
            "file:///srv/b".parse::<RepositoryLocation>().ok(),
            Some(RepositoryLocation::Local("/srv/b".into()))
        );
        assert!("s3://A_B".parse::<RepositoryLocation>().is_err());
        assert!("http://x/y".parse::<RepositoryLocation>().is_err());
        assert!("".parse::<RepositoryLocation>().is_err());
    }
}
