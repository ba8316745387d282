//! Sign-In with Ethereum (EIP-4361) as a load-test transaction: each user
//! holds its own secp256k1 key, asks for a nonce, signs the message with
//! EIP-191 `personal_sign` and posts it for a bearer token, as a wallet would.

use k256::ecdsa::SigningKey;
use sha3::{Digest, Keccak256};

use crate::template::UserRng;

/// A user's wallet: a key and its EIP-55 address.
#[derive(Clone)]
pub struct Wallet {
    key: SigningKey,
    address: String,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Wallet").field("address", &self.address).finish_non_exhaustive()
    }
}

impl Wallet {
    /// A wallet with a key drawn from `rng` (load-test keys, not real ones).
    pub fn generate(rng: &mut UserRng) -> Wallet {
        loop {
            let mut bytes = [0u8; 32];
            for chunk in bytes.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
            }
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                let point = key.verifying_key().to_encoded_point(false);
                let hash = keccak(point.as_bytes().get(1..).unwrap_or_default());
                let address = eip55(hash.get(12..).unwrap_or_default());
                return Wallet { key, address };
            }
        }
    }

    /// The EIP-55 checksummed address, `0x...`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The EIP-4361 message for `domain` (also the URI's host), `chain_id` and `nonce`.
    pub fn message(&self, domain: &str, chain_id: u64, nonce: &str, issued_at: &str) -> String {
        format!(
            "{domain} wants you to sign in with your Ethereum account:\n{}\n\n\nURI: http://{domain}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {issued_at}",
            self.address
        )
    }

    /// The EIP-191 `personal_sign` signature of `message`: `0x` + r, s, v (27/28).
    pub fn sign(&self, message: &str) -> Result<String, String> {
        let prefixed = format!("\x19Ethereum Signed Message:\n{}{message}", message.len());
        let digest = keccak(prefixed.as_bytes());
        let (signature, recovery) = self
            .key
            .sign_prehash_recoverable(&digest)
            .map_err(|e| format!("cannot sign the sign-in message: {e}"))?;
        let mut bytes = signature.to_bytes().to_vec();
        bytes.push(27 + recovery.to_byte());
        Ok(format!("0x{}", hex::encode(bytes)))
    }
}

fn keccak(bytes: &[u8]) -> Vec<u8> {
    Keccak256::digest(bytes).to_vec()
}

/// `0x` + hex of a 20-byte address with the EIP-55 mixed-case checksum.
fn eip55(address: &[u8]) -> String {
    let lower = hex::encode(address);
    let hash = hex::encode(keccak(lower.as_bytes()));
    let mut out = String::from("0x");
    for (c, h) in lower.chars().zip(hash.chars()) {
        let upper = h.to_digit(16).is_some_and(|d| d >= 8);
        out.push(if upper { c.to_ascii_uppercase() } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_carry_the_eip55_checksum() {
        // The EIP-55 specification's first example.
        let raw = hex::decode("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").unwrap_or_default();
        assert_eq!(eip55(&raw), "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
    }

    #[test]
    fn signatures_are_65_bytes_with_v_27_or_28() {
        let wallet = Wallet::generate(&mut UserRng::new(3));
        let sig = wallet.sign("hello").unwrap_or_default();
        assert_eq!(sig.len(), 2 + 130);
        assert!(sig.ends_with("1b") || sig.ends_with("1c"), "{sig}");
        assert!(wallet.address().starts_with("0x") && wallet.address().len() == 42);
    }
}
