//! A wallet that signs in with Ethereum (EIP-4361) the way a browser wallet
//! does, for tests and xtask runs that need a signed-in session on the
//! sandbox marketplace (orders need one).

use k256::ecdsa::SigningKey;
use serde_json::{Value, json};
use sha3::{Digest, Keccak256};

/// A secp256k1 key and its EIP-55 address.
#[derive(Debug)]
pub struct Wallet {
    key: SigningKey,
    /// The EIP-55 address.
    pub address: String,
}

impl Wallet {
    /// The wallet whose key is 32 times `secret` (never 0).
    pub fn new(secret: u8) -> Self {
        let key = SigningKey::from_slice(&[secret; 32]).expect("a non-zero secret is a valid key");
        let public = key.verifying_key().to_encoded_point(false);
        let hash = Keccak256::digest(&public.as_bytes()[1..]);
        let address = siwe::eip55(&hash[12..].try_into().expect("20 bytes"));
        Self { key, address }
    }

    /// EIP-191 personal_sign: r || s || v with v = 27 + recovery id.
    pub fn sign(&self, message: &str) -> String {
        let prefixed = format!("\x19Ethereum Signed Message:\n{}{message}", message.len());
        let digest = Keccak256::digest(prefixed.as_bytes());
        let (signature, recovery) =
            self.key.sign_prehash_recoverable(&digest).expect("a 32-byte digest signs");
        let mut bytes = signature.to_bytes().to_vec();
        bytes.push(27 + recovery.to_byte());
        format!("0x{}", hex::encode(bytes))
    }

    /// The EIP-4361 message for `domain`, `chain_id` and `nonce`.
    pub fn message(&self, domain: &str, chain_id: u64, nonce: &str) -> String {
        format!(
            "{domain} wants you to sign in with your Ethereum account:\n{}\n\nSign in to the marketplace.\n\nURI: http://{domain}/login\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {}",
            self.address,
            shared_types::Timestamp::now().as_str()
        )
    }
}

/// Signs in through `base` (a gateway or `--role all`): nonce, signed
/// message, verify. The session token, or the status and body of the
/// response that refused.
pub async fn sign_in(base: &str, wallet: &Wallet, device: &str) -> Result<String, (u16, String)> {
    let client = reqwest::Client::new();
    let response = client.post(format!("{base}/auth/nonce")).send().await.expect("request sent");
    if response.status() != 200 {
        return Err((response.status().as_u16(), response.text().await.unwrap_or_default()));
    }
    let grant: Value = response.json().await.expect("a JSON nonce");
    let message = wallet.message(
        grant["domain"].as_str().expect("domain"),
        grant["chain_id"].as_u64().expect("chain_id"),
        grant["nonce"].as_str().expect("nonce"),
    );
    let response = client
        .post(format!("{base}/auth/verify"))
        .header("x-device-fingerprint", device)
        .json(&json!({ "message": message, "signature": wallet.sign(&message) }))
        .send()
        .await
        .expect("request sent");
    if response.status() != 200 {
        return Err((response.status().as_u16(), response.text().await.unwrap_or_default()));
    }
    let body: Value = response.json().await.expect("a JSON session");
    Ok(body["token"].as_str().expect("token").to_owned())
}
