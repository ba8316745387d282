//! The response cache: Redis when `--redis-url` is given, otherwise in-process.
//! Cache failures never fail a request: the caller falls back to the database
//! at once, and the `cache` breaker stops calling a dead Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::breaker::CircuitBreaker;
use crate::faults::{Dependency, Faults};
use crate::metrics::Metrics;

/// Entries the in-process cache holds before it starts over.
const MEMORY_CAPACITY: usize = 100_000;

enum Backend {
    Memory(Mutex<HashMap<String, (Instant, String)>>),
    Redis(ConnectionManager),
}

/// Cached JSON bodies keyed by route and parameters.
pub struct Cache {
    backend: Backend,
    namespace: String,
    ttl: Duration,
    breaker: CircuitBreaker,
    faults: Faults,
    metrics: Metrics,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.backend())
            .field("namespace", &self.namespace)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Redis could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum CacheConnectError {
    /// The URL does not parse: a usage error.
    #[error("invalid --redis-url: {0}")]
    InvalidUrl(String),
    /// Redis did not answer.
    #[error("cannot connect to Redis at {target}: {reason}; is Redis running? check --redis-url")]
    Unreachable {
        /// host:port, without credentials.
        target: String,
        /// The underlying error.
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
enum CacheError {
    #[error("cache is down (fault injected)")]
    Down,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A reconnecting Redis connection, checked with a PING: fails when Redis
/// does not answer within 5 s. Shared by the cache and auth's session store.
pub async fn connect_redis(url: &str) -> Result<ConnectionManager, CacheConnectError> {
    let client =
        redis::Client::open(url).map_err(|e| CacheConnectError::InvalidUrl(e.to_string()))?;
    let info = client.get_connection_info();
    let target = info.addr().to_string();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    let mut manager = ConnectionManager::new_with_config(client, config).await.map_err(|e| {
        CacheConnectError::Unreachable { target: target.clone(), reason: e.to_string() }
    })?;
    let _: String = redis::cmd("PING")
        .query_async(&mut manager)
        .await
        .map_err(|e| CacheConnectError::Unreachable { target, reason: e.to_string() })?;
    Ok(manager)
}

impl Cache {
    /// An in-process cache.
    pub fn in_memory(
        namespace: &str,
        ttl: Duration,
        breaker: CircuitBreaker,
        faults: Faults,
        metrics: Metrics,
    ) -> Self {
        Self {
            backend: Backend::Memory(Mutex::new(HashMap::new())),
            namespace: namespace.to_owned(),
            ttl,
            breaker,
            faults,
            metrics,
        }
    }

    /// A cache in Redis; fails when Redis does not answer within 5 s.
    pub async fn redis(
        url: &str,
        namespace: &str,
        ttl: Duration,
        breaker: CircuitBreaker,
        faults: Faults,
        metrics: Metrics,
    ) -> Result<Self, CacheConnectError> {
        let manager = connect_redis(url).await?;
        Ok(Self {
            backend: Backend::Redis(manager),
            namespace: namespace.to_owned(),
            ttl,
            breaker,
            faults,
            metrics,
        })
    }

    /// `memory` or `redis`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// The full key of `key`: `<namespace>:<key>`.
    pub fn full_key(&self, key: &str) -> String {
        format!("{}:{key}", self.namespace)
    }

    /// The cached value, counting a hit or a miss; `None` as well when the cache
    /// failed (counted in `cache_errors_total`).
    pub async fn get(&self, key: &str) -> Option<String> {
        self.lookup(key).await.ok().flatten()
    }

    /// The cached value, or why the cache could not be asked (counted in
    /// `cache_errors_total`); hits and misses are counted.
    pub async fn lookup(&self, key: &str) -> Result<Option<String>, String> {
        let key = self.full_key(key);
        let outcome = self
            .breaker
            .call(async {
                if self.faults.is_down(Dependency::Cache) {
                    return Err(CacheError::Down);
                }
                match &self.backend {
                    Backend::Memory(map) => {
                        let map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        Ok(map
                            .get(&key)
                            .filter(|(expires, _)| *expires > Instant::now())
                            .map(|(_, v)| v.clone()))
                    }
                    Backend::Redis(manager) => {
                        let mut conn = manager.clone();
                        Ok(redis::cmd("GET")
                            .arg(&key)
                            .query_async::<Option<String>>(&mut conn)
                            .await?)
                    }
                }
            })
            .await;
        match outcome {
            Ok(Some(value)) => {
                self.metrics.cache_hits.inc();
                Ok(Some(value))
            }
            Ok(None) => {
                self.metrics.cache_misses.inc();
                Ok(None)
            }
            Err(e) => {
                self.metrics.cache_errors.inc();
                tracing::debug!(error = %e, "cache get failed");
                Err(e.to_string())
            }
        }
    }

    /// Stores `value` for the cache TTL; failures are counted and otherwise ignored.
    pub async fn put(&self, key: &str, value: &str) {
        let key = self.full_key(key);
        let outcome = self
            .breaker
            .call(async {
                if self.faults.is_down(Dependency::Cache) {
                    return Err(CacheError::Down);
                }
                match &self.backend {
                    Backend::Memory(map) => {
                        let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if map.len() >= MEMORY_CAPACITY {
                            map.clear();
                        }
                        map.insert(key, (Instant::now() + self.ttl, value.to_owned()));
                        Ok(())
                    }
                    Backend::Redis(manager) => {
                        let mut conn = manager.clone();
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(value)
                            .arg("PX")
                            .arg(self.ttl.as_millis() as u64)
                            .query_async::<()>(&mut conn)
                            .await?;
                        Ok(())
                    }
                }
            })
            .await;
        if let Err(e) = outcome {
            self.metrics.cache_errors.inc();
            tracing::debug!(error = %e, "cache put failed");
        }
    }

    /// The cache breaker, for readiness.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}
