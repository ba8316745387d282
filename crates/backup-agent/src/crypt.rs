//! Client-side encryption of stored objects, so the object store only ever
//! holds ciphertext: AES-256-GCM in the STREAM construction (Hoang, Reyhanitabar,
//! Rogaway, Vizár; `aead::stream`, big-endian 32-bit counter, the last segment
//! flagged), over 1 MiB segments of the compressed bytes.
//!
//! Stored layout: a random 7-byte nonce prefix, then each segment's
//! ciphertext and 16-byte tag. Truncating, reordering or altering a segment
//! fails authentication, as does a missing last segment. The manifest records
//! the scheme and the key's id (a hash of the key, never the key), so a
//! restore with the wrong key is refused before any byte is read.
//!
//! Keys are 32 random bytes written as 64 hex digits in a file readable only
//! by the agent (`backup-agent keygen > key; chmod 600 key`). Lose the key and
//! the backups are gone: keep a copy apart from the repository.

use std::path::Path;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{KeyInit, OsRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AgentError, Result};

/// The scheme name recorded in manifests.
pub const SCHEME: &str = "aes-256-gcm-stream-be32-1mib";
/// Plaintext bytes per segment.
const SEGMENT: usize = 1 << 20;
/// Tag bytes per segment.
const TAG: usize = 16;
/// Random nonce prefix at the start of every object (12-byte nonce minus the
/// 4-byte counter and the 1-byte last flag).
const NONCE_PREFIX: usize = 7;

/// A 256-bit key and its public id.
#[derive(Clone)]
pub struct EncryptionKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for EncryptionKey {
    /// Shows the id only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl EncryptionKey {
    /// Reads 64 hex digits (whitespace ignored) from `path`.
    pub fn from_file(path: &Path) -> Result<EncryptionKey> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            AgentError::Usage(format!("cannot read the encryption key {}: {e}", path.display()))
        })?;
        EncryptionKey::from_hex(&text)
            .map_err(|why| AgentError::Usage(format!("encryption key {}: {why}", path.display())))
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> std::result::Result<EncryptionKey, String> {
        let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = hex::decode(&digits).map_err(|_| {
            "expected 64 hex digits (make one with `backup-agent keygen`)".to_owned()
        })?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!("expected 32 bytes (64 hex digits), found {} bytes", b.len())
        })?;
        Ok(EncryptionKey::from_bytes(key))
    }

    fn from_bytes(key: [u8; 32]) -> EncryptionKey {
        let mut hash = Sha256::new();
        hash.update(b"backup-agent key id\0");
        hash.update(key);
        let id = hex::encode(&hash.finalize()[..8]);
        EncryptionKey { key, id }
    }

    /// A new random key as 64 hex digits.
    pub fn generate_hex() -> String {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        hex::encode(key)
    }

    /// The key's id: 16 hex digits of a hash, safe to print and store.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the manifest records about objects sealed with this key.
    pub fn describe(&self) -> Encryption {
        Encryption { scheme: SCHEME.to_owned(), key_id: self.id.clone() }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.key.into())
    }

    /// Checks that this key can open objects described by `encryption`.
    pub fn check_opens(&self, encryption: &Encryption, what: &str) -> Result<()> {
        if encryption.scheme != SCHEME {
            return Err(AgentError::Usage(format!(
                "{what} is encrypted with {:?}, which this backup-agent does not know",
                encryption.scheme
            )));
        }
        if encryption.key_id != self.id {
            return Err(AgentError::Usage(format!(
                "{what} was encrypted with key {}, and --encryption-key-file holds key {}: give the key the backup was taken with",
                encryption.key_id, self.id
            )));
        }
        Ok(())
    }
}

/// How an object is encrypted, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// [`SCHEME`].
    pub scheme: String,
    /// [`EncryptionKey::id`] of the key.
    pub key_id: String,
}

/// Encrypts pushed bytes segment by segment; ciphertext collects in
/// [`output`](Self::output) to be drained as it grows.
pub struct Sealer {
    stream: EncryptorBE32<Aes256Gcm>,
    pending: Vec<u8>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with a fresh random nonce, written first.
    pub fn new(key: &EncryptionKey) -> Sealer {
        let mut prefix = [0u8; NONCE_PREFIX];
        OsRng.fill_bytes(&mut prefix);
        Sealer {
            stream: EncryptorBE32::from_aead(key.cipher(), &prefix.into()),
            pending: Vec::with_capacity(2 * SEGMENT),
            out: prefix.to_vec(),
        }
    }

    /// Adds plaintext. A full segment is sealed once more bytes follow it
    /// (only the last one carries the last flag).
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(data);
        while self.pending.len() > SEGMENT {
            let sealed = self.stream.encrypt_next(&self.pending[..SEGMENT]).map_err(seal_error)?;
            self.out.extend_from_slice(&sealed);
            self.pending.drain(..SEGMENT);
        }
        Ok(())
    }

    /// Ciphertext produced so far (take it with `std::mem::take`).
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Seals the last segment; returns the ciphertext not yet taken.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let last = self.stream.encrypt_last(&self.pending[..]).map_err(seal_error)?;
        self.out.extend_from_slice(&last);
        Ok(self.out)
    }
}

fn seal_error(_: aes_gcm::aead::Error) -> AgentError {
    AgentError::CouldNotRun("encrypting: the stream is too long for one key and nonce".into())
}

/// Decrypts pushed ciphertext segment by segment, checking each tag.
pub struct Opener {
    cipher: Option<Aes256Gcm>,
    stream: Option<DecryptorBE32<Aes256Gcm>>,
    pending: Vec<u8>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener").field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for objects sealed with `key`.
    pub fn new(key: &EncryptionKey) -> Opener {
        Opener {
            cipher: Some(key.cipher()),
            stream: None,
            pending: Vec::with_capacity(2 * (SEGMENT + TAG)),
            out: Vec::new(),
        }
    }

    /// Adds ciphertext; returns the plaintext opened so far (clear it after use).
    pub fn push(&mut self, data: &[u8]) -> std::io::Result<&mut Vec<u8>> {
        self.pending.extend_from_slice(data);
        if self.stream.is_none() && self.pending.len() >= NONCE_PREFIX {
            let mut prefix = [0u8; NONCE_PREFIX];
            prefix.copy_from_slice(&self.pending[..NONCE_PREFIX]);
            self.pending.drain(..NONCE_PREFIX);
            let cipher = self.cipher.take().ok_or_else(|| corrupt("opener reused"))?;
            self.stream = Some(DecryptorBE32::from_aead(cipher, &prefix.into()));
        }
        if let Some(stream) = &mut self.stream {
            while self.pending.len() > SEGMENT + TAG {
                let opened = stream
                    .decrypt_next(&self.pending[..SEGMENT + TAG])
                    .map_err(|_| corrupt("a segment failed authentication"))?;
                self.out.extend_from_slice(&opened);
                self.pending.drain(..SEGMENT + TAG);
            }
        }
        Ok(&mut self.out)
    }

    /// Opens the last segment; returns the plaintext not yet taken.
    pub fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        let stream = self.stream.take().ok_or_else(|| corrupt("truncated before its nonce"))?;
        let last = stream.decrypt_last(&self.pending[..]).map_err(|_| {
            corrupt("the last segment failed authentication (truncated or altered)")
        })?;
        self.pending.clear();
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(&last);
        Ok(out)
    }
}

fn corrupt(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("cannot decrypt: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([byte; 32])
    }

    fn seal(key: &EncryptionKey, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut sealer = Sealer::new(key);
        let mut stored = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            sealer.push(piece).unwrap_or_else(|e| panic!("{e}"));
            stored.append(sealer.output());
        }
        stored.extend(sealer.finish().unwrap_or_else(|e| panic!("{e}")));
        stored
    }

    fn open(key: &EncryptionKey, stored: &[u8], chunk: usize) -> std::io::Result<Vec<u8>> {
        let mut opener = Opener::new(key);
        let mut out = Vec::new();
        for piece in stored.chunks(chunk.max(1)) {
            out.append(opener.push(piece)?);
        }
        out.extend(opener.finish()?);
        Ok(out)
    }

    #[test]
    fn round_trips_across_segment_boundaries_and_chunkings() {
        let k = key(7);
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 12345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let stored = seal(&k, &data, 300_000);
            let segments = len.div_ceil(SEGMENT).max(1);
            assert_eq!(stored.len(), NONCE_PREFIX + len + TAG * segments, "len {len}");
            assert_eq!(
                open(&k, &stored, 65_536).unwrap_or_else(|e| panic!("{e}")),
                data,
                "len {len}"
            );
        }
    }

    #[test]
    fn wrong_keys_truncation_and_tampering_fail() {
        let data = vec![42u8; 2 * SEGMENT + 10];
        let stored = seal(&key(1), &data, SEGMENT);
        assert!(open(&key(2), &stored, 4096).is_err());
        assert!(open(&key(1), &stored[..stored.len() - 1], 4096).is_err());
        assert!(
            open(&key(1), &stored[..SEGMENT + TAG + NONCE_PREFIX], 4096).is_err(),
            "a dropped last segment"
        );
        let mut altered = stored.clone();
        altered[NONCE_PREFIX + 5] ^= 1;
        assert!(open(&key(1), &altered, 4096).is_err());
        assert_ne!(
            seal(&key(1), &data, SEGMENT)[..NONCE_PREFIX],
            stored[..NONCE_PREFIX],
            "fresh nonce"
        );
    }

    #[test]
    fn keys_parse_from_hex_and_never_print() {
        let hex = EncryptionKey::generate_hex();
        let k = EncryptionKey::from_hex(&format!("{}\n{}\n", &hex[..32], &hex[32..]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.id().len(), 16);
        assert!(!format!("{k:?}").contains(&hex[..16]));
        assert!(EncryptionKey::from_hex("abcd").unwrap_err().contains("32 bytes"));
        assert!(EncryptionKey::from_hex("zz").is_err());
        let other = key(9);
        assert!(other.check_opens(&k.describe(), "backups/x").is_err());
        assert!(k.check_opens(&k.describe(), "backups/x").is_ok());
    }
}
