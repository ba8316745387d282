//! Sign-in with Ethereum (EIP-4361): a nonce, a signed message, a session.
//!
//! `POST /auth/nonce` hands out a single-use nonce. The wallet signs an EIP-4361
//! message naming this sandbox's domain, the chain id and that nonce (EIP-191
//! personal_sign). `POST /auth/verify` parses the message, checks domain, chain,
//! nonce and validity window, recovers the signer from the secp256k1 signature
//! and, when it matches the message's address, issues a bearer session token
//! bound to the `X-Device-Fingerprint` header sent with the verification.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use siwe::Message;

use crate::breaker::{BreakerError, CircuitBreaker};
use crate::grpc::client::{AuthReply, RemoteAuth, describe};

/// How long a nonce stays usable.
pub const NONCE_TTL: Duration = Duration::from_secs(300);
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(3600);
/// Outstanding nonces and sessions are capped so a flood cannot exhaust memory.
const MAX_ENTRIES: usize = 200_000;

/// Why a sign-in was refused. `Malformed` is the client's syntax (HTTP 400),
/// the rest are authentication failures (HTTP 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignInError {
    /// The message or signature does not parse.
    #[error("malformed sign-in: {0}")]
    Malformed(String),
    /// The message names another domain.
    #[error("message is for domain {found:?}, this service is {expected:?}")]
    WrongDomain {
        /// This service's domain.
        expected: String,
        /// The message's domain.
        found: String,
    },
    /// The message names another chain.
    #[error("message is for chain {found}, this service accepts chain {expected}")]
    WrongChain {
        /// This service's chain id.
        expected: u64,
        /// The message's chain id.
        found: u64,
    },
    /// The nonce was never issued, has expired or was already used.
    #[error("nonce is unknown, expired or already used")]
    BadNonce,
    /// The message is outside its validity window.
    #[error("message is expired or not yet valid")]
    NotValidNow,
    /// The signature was not made by the message's address.
    #[error("signature does not match the message's address")]
    BadSignature,
    /// The session store (Redis) did not answer.
    #[error("session store unavailable: {0}")]
    StoreUnavailable(String),
}

/// A signed-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// EIP-55 address of the signer.
    pub address: String,
    /// Device fingerprint the session is bound to (may be empty).
    pub device: String,
    expires: Instant,
}

/// Where nonces and sessions live: in this process, or in Redis, so every
/// replica of the auth service honours a session any of them issued and a
/// restarted one keeps them.
enum Store {
    Memory { nonces: Mutex<HashMap<String, Instant>>, sessions: Mutex<HashMap<String, Session>> },
    Redis { connection: redis::aio::ConnectionManager, prefix: String },
}

/// Nonces and sessions, with the domain and chain messages must name.
pub struct Authenticator {
    domain: String,
    chain_id: u64,
    store: Store,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = match self.store {
            Store::Memory { .. } => "memory",
            Store::Redis { .. } => "redis",
        };
        f.debug_struct("Authenticator")
            .field("domain", &self.domain)
            .field("chain_id", &self.chain_id)
            .field("store", &store)
            .finish()
    }
}

fn store_error(e: redis::RedisError) -> SignInError {
    SignInError::StoreUnavailable(e.to_string())
}

impl Authenticator {
    /// Accepts messages for `domain` on `chain_id`.
    pub fn new(domain: &str, chain_id: u64) -> Self {
        Self {
            domain: domain.to_owned(),
            chain_id,
            store: Store::Memory { nonces: Mutex::default(), sessions: Mutex::default() },
        }
    }

    /// Keeps nonces and sessions in Redis under `PREFIX:auth:`, with their
    /// time to live: shared by every replica, kept across restarts.
    pub fn with_redis(
        domain: &str,
        chain_id: u64,
        connection: redis::aio::ConnectionManager,
        prefix: &str,
    ) -> Self {
        Self {
            domain: domain.to_owned(),
            chain_id,
            store: Store::Redis { connection, prefix: format!("{prefix}:auth") },
        }
    }

    /// The domain messages must name.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The chain id messages must name.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Issues a fresh single-use nonce.
    pub async fn issue_nonce(&self) -> Result<String, SignInError> {
        let nonce = siwe::generate_nonce();
        match &self.store {
            Store::Memory { nonces, .. } => {
                let mut nonces = lock(nonces);
                let now = Instant::now();
                if nonces.len() >= MAX_ENTRIES {
                    nonces.retain(|_, expires| *expires > now);
                }
                nonces.insert(nonce.clone(), now + NONCE_TTL);
            }
            Store::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let () = redis::cmd("SET")
                    .arg(format!("{prefix}:nonce:{nonce}"))
                    .arg(1)
                    .arg("EX")
                    .arg(NONCE_TTL.as_secs())
                    .query_async(&mut connection)
                    .await
                    .map_err(store_error)?;
            }
        }
        Ok(nonce)
    }

    /// Takes the nonce if it was issued and is still fresh (once only).
    async fn take_nonce(&self, nonce: &str) -> Result<bool, SignInError> {
        match &self.store {
            Store::Memory { nonces, .. } => {
                Ok(lock(nonces).remove(nonce).is_some_and(|expires| expires > Instant::now()))
            }
            Store::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let taken: Option<String> = redis::cmd("GETDEL")
                    .arg(format!("{prefix}:nonce:{nonce}"))
                    .query_async(&mut connection)
                    .await
                    .map_err(store_error)?;
                Ok(taken.is_some())
            }
        }
    }

    /// Verifies a signed message; on success returns a new session token.
    pub async fn verify(
        &self,
        message: &str,
        signature: &str,
        device: &str,
    ) -> Result<(String, Session), SignInError> {
        let message: Message =
            message.parse().map_err(|e| SignInError::Malformed(format!("message: {e}")))?;
        let signature = parse_signature(signature)?;
        if message.domain.as_str() != self.domain {
            return Err(SignInError::WrongDomain {
                expected: self.domain.clone(),
                found: message.domain.to_string(),
            });
        }
        if message.chain_id != self.chain_id {
            return Err(SignInError::WrongChain {
                expected: self.chain_id,
                found: message.chain_id,
            });
        }
        if !message.valid_now() {
            return Err(SignInError::NotValidNow);
        }
        // The nonce is consumed before the signature is checked: a forged
        // signature burns it, so it cannot be retried.
        if !self.take_nonce(&message.nonce).await? {
            return Err(SignInError::BadNonce);
        }
        message.verify_eip191(&signature).map_err(|_| SignInError::BadSignature)?;
        let session = Session {
            address: siwe::eip55(&message.address),
            device: device.to_owned(),
            expires: Instant::now() + SESSION_TTL,
        };
        let token = format!("{}{}", siwe::generate_nonce(), siwe::generate_nonce());
        match &self.store {
            Store::Memory { sessions, .. } => {
                let mut sessions = lock(sessions);
                if sessions.len() >= MAX_ENTRIES {
                    let now = Instant::now();
                    sessions.retain(|_, s| s.expires > now);
                }
                sessions.insert(token.clone(), session.clone());
            }
            Store::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let () = redis::cmd("SET")
                    .arg(format!("{prefix}:session:{token}"))
                    .arg(format!("{}\n{}", session.address, session.device))
                    .arg("EX")
                    .arg(SESSION_TTL.as_secs())
                    .query_async(&mut connection)
                    .await
                    .map_err(store_error)?;
            }
        }
        Ok((token, session))
    }

    /// The live session of `token`, if any.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, SignInError> {
        match &self.store {
            Store::Memory { sessions, .. } => {
                Ok(lock(sessions).get(token).filter(|s| s.expires > Instant::now()).cloned())
            }
            Store::Redis { connection, prefix } => {
                if token.is_empty() || token.len() > 256 {
                    return Ok(None);
                }
                let mut connection = connection.clone();
                let value: Option<String> = redis::cmd("GET")
                    .arg(format!("{prefix}:session:{token}"))
                    .query_async(&mut connection)
                    .await
                    .map_err(store_error)?;
                Ok(value.and_then(|v| {
                    let (address, device) = v.split_once('\n')?;
                    Some(Session {
                        address: address.to_owned(),
                        device: device.to_owned(),
                        expires: Instant::now() + SESSION_TTL,
                    })
                }))
            }
        }
    }
}

/// A nonce handed to a wallet, with what its message must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceGrant {
    /// The single-use nonce.
    pub nonce: String,
    /// The domain the message must name.
    pub domain: String,
    /// The chain id the message must name.
    pub chain_id: u64,
    /// How long the nonce stays usable.
    pub expires_in_seconds: u64,
}

/// A verified sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The bearer token.
    pub token: String,
    /// EIP-55 address of the signer.
    pub address: String,
    /// How long the session lasts.
    pub expires_in_seconds: u64,
}

/// Why sign-in or a session check did not succeed, as the routes map it.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The message or signature does not parse (HTTP 400).
    #[error("{0}")]
    Malformed(String),
    /// The sign-in was refused (HTTP 401).
    #[error("{0}")]
    Refused(String),
    /// The auth service is down or its breaker is open (HTTP 503).
    #[error("{detail}")]
    Unavailable {
        /// When to try again.
        retry_after: Duration,
        /// What failed.
        detail: String,
    },
}

impl From<SignInError> for AuthError {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::Malformed(_) => AuthError::Malformed(e.to_string()),
            SignInError::StoreUnavailable(_) => AuthError::Unavailable {
                retry_after: Duration::from_secs(1),
                detail: e.to_string(),
            },
            _ => AuthError::Refused(e.to_string()),
        }
    }
}

/// Sign-in as the routes see it: in this process (`--role all`), or the auth
/// service over gRPC behind the `auth` circuit breaker (`--role gateway`).
#[derive(Debug)]
pub enum Auth {
    /// Nonces and sessions held here.
    Local(Authenticator),
    /// The auth service.
    Remote {
        /// Its client.
        client: RemoteAuth,
        /// The `auth` breaker.
        breaker: CircuitBreaker,
    },
}

impl Auth {
    /// The `auth` breaker, when auth is a remote service.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        match self {
            Auth::Local(_) => None,
            Auth::Remote { breaker, .. } => Some(breaker),
        }
    }

    /// Issues a nonce.
    pub async fn issue_nonce(&self) -> Result<NonceGrant, AuthError> {
        match self {
            Auth::Local(auth) => Ok(NonceGrant {
                nonce: auth.issue_nonce().await?,
                domain: auth.domain().to_owned(),
                chain_id: auth.chain_id(),
                expires_in_seconds: NONCE_TTL.as_secs(),
            }),
            Auth::Remote { client, breaker } => {
                let reply = guarded(breaker, client.issue_nonce()).await?;
                Ok(NonceGrant {
                    nonce: reply.nonce,
                    domain: reply.domain,
                    chain_id: reply.chain_id,
                    expires_in_seconds: reply.expires_in_seconds,
                })
            }
        }
    }

    /// Verifies a signed message; a new session on success.
    pub async fn verify(
        &self,
        message: &str,
        signature: &str,
        device: &str,
    ) -> Result<SignedIn, AuthError> {
        match self {
            Auth::Local(auth) => {
                let (token, session) = auth.verify(message, signature, device).await?;
                Ok(SignedIn {
                    token,
                    address: session.address,
                    expires_in_seconds: SESSION_TTL.as_secs(),
                })
            }
            Auth::Remote { client, breaker } => {
                let reply = guarded(breaker, client.verify(message, signature, device)).await?;
                Ok(SignedIn {
                    token: reply.token,
                    address: reply.address,
                    expires_in_seconds: reply.expires_in_seconds,
                })
            }
        }
    }

    /// The live session of `token` as (address, device), if any.
    pub async fn session(&self, token: &str) -> Result<Option<(String, String)>, AuthError> {
        match self {
            Auth::Local(auth) => Ok(auth.session(token).await?.map(|s| (s.address, s.device))),
            Auth::Remote { client, breaker } => {
                let reply = guarded(breaker, client.session(token)).await?;
                Ok(reply.found.then_some((reply.address, reply.device)))
            }
        }
    }
}

/// One call to the auth service through its breaker. A refusal is an answer,
/// not a failure of the service: it does not count against the breaker.
async fn guarded<T>(
    breaker: &CircuitBreaker,
    call: impl Future<Output = Result<AuthReply<T>, tonic::Status>>,
) -> Result<T, AuthError> {
    match breaker.call(call).await {
        Ok(AuthReply::Ok(reply)) => Ok(reply),
        Ok(AuthReply::Malformed(message)) => Err(AuthError::Malformed(message)),
        Ok(AuthReply::Refused(message)) => Err(AuthError::Refused(message)),
        Err(BreakerError::Open { dependency, retry_after }) => Err(AuthError::Unavailable {
            retry_after,
            detail: format!("{dependency} circuit breaker is open"),
        }),
        Err(BreakerError::Inner(status)) => Err(AuthError::Unavailable {
            retry_after: breaker.retry_after(),
            detail: format!("auth service call failed: {}", describe(&status)),
        }),
    }
}

fn parse_signature(signature: &str) -> Result<[u8; 65], SignInError> {
    let hex_digits = signature.trim().strip_prefix("0x").unwrap_or(signature.trim());
    let bytes = hex::decode(hex_digits)
        .map_err(|e| SignInError::Malformed(format!("signature is not hex: {e}")))?;
    <[u8; 65]>::try_from(bytes.as_slice()).map_err(|_| {
        SignInError::Malformed(format!("signature must be 65 bytes (r, s, v), got {}", bytes.len()))
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn garbage_is_malformed_not_a_panic() {
        let auth = Authenticator::new("localhost", 137);
        assert!(matches!(auth.verify("hello", "0x00", "").await, Err(SignInError::Malformed(_))));
        assert!(matches!(parse_signature("0xzz"), Err(SignInError::Malformed(_))));
        assert!(parse_signature(&"ab".repeat(64)).unwrap_err().to_string().contains("65 bytes"));
    }

    #[tokio::test]
    async fn nonces_are_distinct() {
        let auth = Authenticator::new("localhost", 137);
        assert_ne!(auth.issue_nonce().await.unwrap(), auth.issue_nonce().await.unwrap());
    }
}
