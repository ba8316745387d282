//! Command-line configuration of the sandbox and its validation.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use shared_types::parse_duration;

/// A miniature NFT marketplace: the default target of every postlaunch tool.
///
/// It serves the marketplace's REST routes, a GraphQL endpoint, sign-in with
/// Ethereum (EIP-4361), `/metrics` in Prometheus text format and fault knobs on
/// `POST /admin/faults`. With no flags it needs nothing else: the catalog and the
/// cache live in memory. Point it at PostgreSQL and Redis to exercise real
/// dependencies.
///
/// Examples:
///   sandbox --listen 127.0.0.1:0
///   sandbox --database-url postgres://postgres@127.0.0.1:5432/sandbox --redis-url redis://127.0.0.1:6379
///   curl -X POST localhost:8080/admin/faults -d '{"latency_ms":300,"error_rate":0.01}'
///
/// Exit codes: 0 clean shutdown, 2 bad parameters, 3 a dependency or the listen
/// address could not be reached.
#[derive(Debug, Clone, Parser)]
#[command(name = "sandbox", version, about, long_about, verbatim_doc_comment)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port. The bound address is printed
    /// on the first line of stdout: `sandbox listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SANDBOX_LISTEN")]
    pub listen: SocketAddr,

    /// PostgreSQL URL for the catalog (seeded on first start). Without it the
    /// catalog is held in memory.
    #[arg(long, env = "SANDBOX_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Schema that holds the catalog tables in PostgreSQL.
    #[arg(long, default_value = "sandbox")]
    pub database_schema: String,

    /// Redis URL for the response cache. Without it the cache is in-process.
    #[arg(long, env = "SANDBOX_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every cache key, so several sandboxes can share one Redis.
    #[arg(long, default_value = "sandbox")]
    pub cache_namespace: String,

    /// Time a cached response stays fresh.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub cache_ttl: Duration,

    /// Number of collections in the seeded catalog.
    #[arg(long, default_value_t = 1_000)]
    pub collections: u32,

    /// Number of NFTs in the seeded catalog, spread evenly over the collections.
    #[arg(long, default_value_t = 100_000)]
    pub nfts: u32,

    /// Seed of the generated catalog: the same seed gives the same catalog.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Database connection pool size (also the limit of the in-memory catalog's
    /// simulated pool); exported as `db_connections_max`.
    #[arg(long, default_value_t = 20)]
    pub db_pool_size: u32,

    /// How long a request waits for a free database connection before failing.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub db_pool_timeout: Duration,

    /// Consecutive failures of a dependency that open its circuit breaker.
    #[arg(long, default_value_t = 5)]
    pub breaker_failures: u32,

    /// How long an open breaker rejects calls before letting a trial call through.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub breaker_open_for: Duration,

    /// The domain that sign-in messages (EIP-4361) must name.
    #[arg(long, default_value = "localhost")]
    pub siwe_domain: String,

    /// The chain id that sign-in messages must name (137 = Polygon).
    #[arg(long, default_value_t = 137)]
    pub chain_id: u64,

    /// Log format on stderr.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Release name sent back in an `x-release` header on every response
    /// (blue/green, version A/B); none by default.
    #[arg(long, env = "SANDBOX_RELEASE")]
    pub release: Option<String>,
}

/// A parameter combination that cannot work, found before anything starts.
#[derive(Debug, thiserror::Error)]
#[error("invalid parameter {flag}: {reason}")]
pub struct ConfigError {
    /// The flag at fault, e.g. `--collections`.
    pub flag: &'static str,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

impl Config {
    /// Checks the limits clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |flag, reason: &str| Err(ConfigError { flag, reason: reason.to_owned() });
        if self.release.as_deref().is_some_and(|r| axum::http::HeaderValue::from_str(r).is_err()) {
            return fail("--release", "must be printable ASCII (it is sent as an HTTP header)");
        }
        if self.collections == 0 {
            return fail("--collections", "must be at least 1");
        }
        if self.collections > 1_000_000 {
            return fail(
                "--collections",
                "at most 1000000 (the sandbox holds the catalog index in memory)",
            );
        }
        if self.nfts > 10_000_000 {
            return fail("--nfts", "at most 10000000");
        }
        if self.db_pool_size == 0 || self.db_pool_size > 1_000 {
            return fail("--db-pool-size", "must be between 1 and 1000");
        }
        if self.breaker_failures == 0 {
            return fail("--breaker-failures", "must be at least 1");
        }
        if self.cache_ttl.is_zero() {
            return fail("--cache-ttl", "must be longer than 0s");
        }
        let schema_ok = !self.database_schema.is_empty()
            && self.database_schema.len() <= 63
            && self
                .database_schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !self.database_schema.starts_with(|c: char| c.is_ascii_digit());
        if !schema_ok {
            return fail(
                "--database-schema",
                "use lowercase letters, digits and _ (at most 63), not starting with a digit",
            );
        }
        if self.cache_namespace.is_empty() || self.cache_namespace.contains(char::is_whitespace) {
            return fail("--cache-namespace", "must be non-empty and contain no whitespace");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_collections_is_rejected() {
        let config = Config::parse_from(["sandbox", "--collections", "0"]);
        let err = config.validate().unwrap_err();
        assert_eq!(err.to_string(), "invalid parameter --collections: must be at least 1");
    }

    #[test]
    fn schema_names_are_restricted_to_safe_identifiers() {
        let config = Config::parse_from(["sandbox", "--database-schema", "x; drop table"]);
        assert_eq!(config.validate().unwrap_err().flag, "--database-schema");
    }
}
