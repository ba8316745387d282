//! Streaming an object into and out of a repository: zstd (multi-threaded)
//! compression, optional client-side encryption ([`crate::crypt`], when the
//! repository has a key), and SHA-256 of both the stored and the original
//! bytes, computed on the way, part by part, so nothing is staged whole on
//! disk or in memory.

use std::io::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::crypt::{Encryption, Opener, Sealer};
use crate::error::{AgentError, Result};
use crate::repository::Repository;

const READ_CHUNK: usize = 1 << 20;

/// How an object is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// As produced.
    None,
    /// zstd frames (level 3 by default, multi-threaded).
    #[default]
    Zstd,
}

impl Compression {
    /// The file-name suffix of objects stored this way.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = AgentError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            other => {
                Err(AgentError::Usage(format!("unknown compression {other:?}: use zstd or none")))
            }
        }
    }
}

/// What the manifest records about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Key relative to the repository root.
    pub key: String,
    /// Stored size in bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// Size before compression.
    pub raw_size: u64,
    /// SHA-256 of the bytes before compression, hex.
    pub raw_sha256: String,
    /// How the object is stored.
    pub compression: Compression,
    /// Client-side encryption, when the repository has a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// Settings of a streamed upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadSettings {
    /// Compression of the stored object.
    pub compression: Compression,
    /// zstd level (1-19).
    pub level: i32,
    /// zstd worker threads (0 = compress on the calling thread).
    pub threads: u32,
    /// Bytes per uploaded part.
    pub part_size: usize,
}

impl Default for UploadSettings {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        UploadSettings {
            compression: Compression::Zstd,
            level: 3,
            threads: u32::try_from(threads).unwrap_or(1),
            part_size: crate::repository::DEFAULT_PART_SIZE,
        }
    }
}

/// Compresses into a growing buffer that is cut into parts.
enum Sink {
    Plain(Vec<u8>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Sink {
    fn new(settings: &UploadSettings) -> std::io::Result<Sink> {
        Ok(match settings.compression {
            Compression::None => Sink::Plain(Vec::new()),
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), settings.level)?;
                if settings.threads > 0 {
                    encoder.multithread(settings.threads)?;
                }
                Sink::Zstd(encoder)
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Plain(buf) => {
                buf.extend_from_slice(data);
                Ok(())
            }
            Sink::Zstd(encoder) => encoder.write_all(data),
        }
    }

    fn buffered(&mut self) -> &mut Vec<u8> {
        match self {
            Sink::Plain(buf) => buf,
            Sink::Zstd(encoder) => encoder.get_mut(),
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Sink::Plain(buf) => Ok(buf),
            Sink::Zstd(encoder) => encoder.finish(),
        }
    }
}

/// Streams `reader` into `repo` under `key`: compressed, hashed, uploaded part
/// by part. The object is visible only once complete; on any error the upload
/// is aborted. `on_progress` gets the raw bytes read so far.
pub async fn upload_stream<R>(
    repo: &Repository,
    key: &str,
    mut reader: R,
    settings: &UploadSettings,
    mut on_progress: impl FnMut(u64),
) -> Result<ObjectEntry>
where
    R: AsyncRead + Unpin,
{
    let mut upload = repo.begin_upload(key).await?;
    let result: Result<ObjectEntry> = async {
        let compress_err =
            |e: std::io::Error| AgentError::CouldNotRun(format!("compressing {key}: {e}"));
        let mut sink = Sink::new(settings).map_err(compress_err)?;
        let mut sealer = repo.encryption().map(Sealer::new);
        let (mut raw_hash, mut stored_hash) = (Sha256::new(), Sha256::new());
        let (mut raw_size, mut size) = (0u64, 0u64);
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            let n = reader
                .read(&mut chunk)
                .await
                .map_err(|e| AgentError::CouldNotRun(format!("reading the data for {key}: {e}")))?;
            if n == 0 {
                break;
            }
            raw_hash.update(&chunk[..n]);
            raw_size += n as u64;
            sink.write(&chunk[..n]).map_err(compress_err)?;
            on_progress(raw_size);
            let outbox = match &mut sealer {
                Some(sealer) => {
                    sealer.push(&std::mem::take(sink.buffered()))?;
                    sealer.output()
                }
                None => sink.buffered(),
            };
            if outbox.len() >= settings.part_size {
                let part = std::mem::take(outbox);
                stored_hash.update(&part);
                size += part.len() as u64;
                upload.put_part(part).await?;
            }
        }
        let mut last = sink.finish().map_err(compress_err)?;
        if let Some(mut sealer) = sealer {
            sealer.push(&last)?;
            last = sealer.finish()?;
        }
        stored_hash.update(&last);
        size += last.len() as u64;
        upload.put_part(last).await?;
        Ok(ObjectEntry {
            key: key.to_owned(),
            size,
            sha256: hex::encode(stored_hash.finalize()),
            raw_size,
            raw_sha256: hex::encode(raw_hash.finalize()),
            compression: settings.compression,
            encryption: repo.encryption().map(crate::crypt::EncryptionKey::describe),
        })
    }
    .await;
    match result {
        Ok(entry) => {
            upload.complete().await?;
            Ok(entry)
        }
        Err(err) => {
            if let Err(abort) = upload.abort().await {
                tracing::warn!("cannot abort the upload of {key}: {abort}");
            }
            Err(err)
        }
    }
}

/// Stores a small in-memory object with its entry.
pub async fn upload_bytes(
    repo: &Repository,
    key: &str,
    data: &[u8],
    settings: &UploadSettings,
) -> Result<ObjectEntry> {
    upload_stream(repo, key, data, settings, |_| {}).await
}

/// Decrypts (when sealed) and decompresses pushed bytes.
struct Unpacker {
    opener: Option<Opener>,
    decoder: Option<zstd::stream::write::Decoder<'static, Vec<u8>>>,
    out: Vec<u8>,
}

impl Unpacker {
    fn new(compression: Compression, opener: Option<Opener>) -> std::io::Result<Unpacker> {
        let decoder = match compression {
            Compression::None => None,
            Compression::Zstd => Some(zstd::stream::write::Decoder::new(Vec::new())?),
        };
        Ok(Unpacker { opener, decoder, out: Vec::new() })
    }

    /// Feeds stored bytes; returns the original bytes available so far.
    fn push(&mut self, data: &[u8]) -> std::io::Result<&mut Vec<u8>> {
        let plain: Vec<u8>;
        let data = match &mut self.opener {
            Some(opener) => {
                plain = std::mem::take(opener.push(data)?);
                &plain[..]
            }
            None => data,
        };
        self.feed(data)
    }

    fn feed(&mut self, data: &[u8]) -> std::io::Result<&mut Vec<u8>> {
        match &mut self.decoder {
            None => {
                self.out.clear();
                self.out.extend_from_slice(data);
                Ok(&mut self.out)
            }
            Some(decoder) => {
                decoder.write_all(data)?;
                Ok(decoder.get_mut())
            }
        }
    }

    fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        let mut tail = Vec::new();
        if let Some(mut opener) = self.opener.take() {
            let last = opener.finish()?;
            tail = std::mem::take(self.feed(&last)?);
        }
        match &mut self.decoder {
            None => Ok(tail),
            Some(decoder) => {
                decoder.flush()?;
                tail.append(decoder.get_mut());
                Ok(tail)
            }
        }
    }
}

/// What re-reading an object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    /// Stored bytes read.
    pub size: u64,
    /// SHA-256 of the stored bytes.
    pub sha256: String,
    /// Bytes after decompression.
    pub raw_size: u64,
    /// SHA-256 after decompression.
    pub raw_sha256: String,
}

impl ReadBack {
    /// `None` if it matches `entry`, else what differs.
    pub fn mismatch(&self, entry: &ObjectEntry) -> Option<String> {
        let mut problems = Vec::new();
        if self.size != entry.size {
            problems.push(format!("stored size {} B, manifest says {} B", self.size, entry.size));
        }
        if self.sha256 != entry.sha256 {
            problems.push(format!(
                "sha256 {}…, manifest says {}…",
                short(&self.sha256),
                short(&entry.sha256)
            ));
        }
        if self.raw_size != entry.raw_size || self.raw_sha256 != entry.raw_sha256 {
            problems.push(format!(
                "content after decompression differs ({} B, sha256 {}…; manifest: {} B, {}…)",
                self.raw_size,
                short(&self.raw_sha256),
                entry.raw_size,
                short(&entry.raw_sha256)
            ));
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// Streams the object of `entry` into `writer`, decompressed, and checks it
/// against the manifest at the end. A mismatch is an [`AgentError::Integrity`]
/// (the caller must discard what was written).
pub async fn download_to<W>(
    repo: &Repository,
    entry: &ObjectEntry,
    writer: &mut W,
) -> Result<ReadBack>
where
    W: AsyncWrite + Unpin,
{
    let key = &entry.key;
    let opener = match (&entry.encryption, repo.encryption()) {
        (None, _) => None,
        (Some(sealed), Some(k)) => {
            k.check_opens(sealed, key)?;
            Some(Opener::new(k))
        }
        (Some(sealed), None) => {
            return Err(AgentError::Usage(format!(
                "{key} is encrypted (key {}): give --encryption-key-file (or BACKUP_AGENT_ENCRYPTION_KEY_FILE)",
                sealed.key_id
            )));
        }
    };
    let mut reader = repo.get_reader(key).await?;
    let mut unpacker = Unpacker::new(entry.compression, opener)
        .map_err(|e| AgentError::CouldNotRun(format!("decompressing {key}: {e}")))?;
    let (mut raw_hash, mut stored_hash) = (Sha256::new(), Sha256::new());
    let (mut raw_size, mut size) = (0u64, 0u64);
    let mut chunk = vec![0u8; READ_CHUNK];
    let write_err = |e: std::io::Error| {
        AgentError::CouldNotRun(format!("writing the restored data of {key}: {e}"))
    };
    let corrupt = |e: std::io::Error| {
        AgentError::Integrity(format!("{key} cannot be read back ({e}): the object is corrupt"))
    };
    loop {
        let n =
            reader.read(&mut chunk).await.map_err(|e| repo.error(format!("reading {key}: {e}")))?;
        if n == 0 {
            break;
        }
        stored_hash.update(&chunk[..n]);
        size += n as u64;
        let out = unpacker.push(&chunk[..n]).map_err(corrupt)?;
        raw_hash.update(&out[..]);
        raw_size += out.len() as u64;
        writer.write_all(out).await.map_err(write_err)?;
        out.clear();
    }
    let tail = unpacker.finish().map_err(corrupt)?;
    raw_hash.update(&tail);
    raw_size += tail.len() as u64;
    writer.write_all(&tail).await.map_err(write_err)?;
    writer.flush().await.map_err(write_err)?;
    let read = ReadBack {
        size,
        sha256: hex::encode(stored_hash.finalize()),
        raw_size,
        raw_sha256: hex::encode(raw_hash.finalize()),
    };
    match read.mismatch(entry) {
        Some(problem) => Err(AgentError::Integrity(format!("{key}: {problem}"))),
        None => Ok(read),
    }
}

/// Re-reads an object and compares it with its manifest entry, writing nothing.
pub async fn read_back(repo: &Repository, entry: &ObjectEntry) -> Result<ReadBack> {
    download_to(repo, entry, &mut tokio::io::sink()).await
}

/// Downloads a small object whole, decompressed and checked.
pub async fn download_bytes(repo: &Repository, entry: &ObjectEntry) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    download_to(repo, entry, &mut out).await?;
    Ok(out)
}
