//! Command-line configuration of the sandbox and its validation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use shared_types::parse_duration;

/// A miniature NFT marketplace: the default target of every postlaunch tool.
///
/// It serves the marketplace's REST routes, a GraphQL endpoint, sign-in with
/// Ethereum (EIP-4361), `/metrics` in Prometheus text format and fault knobs on
/// `POST /admin/faults`. With no flags it needs nothing else: the catalog and the
/// cache live in memory. Point it at PostgreSQL and Redis to exercise real
/// dependencies.
///
/// With `--role` it runs as one of the marketplace's services instead: a
/// gateway serving the public routes and calling `auth` and `catalog` over
/// gRPC (mTLS with `--tls-cert/--tls-key/--tls-ca`), each call guarded by its
/// own circuit breaker. `--role all` (the default) is the whole marketplace in
/// one process.
///
/// Examples:
///   sandbox --listen 127.0.0.1:0
///   sandbox --database-url postgres://postgres@127.0.0.1:5432/sandbox --redis-url redis://127.0.0.1:6379
///   curl -X POST localhost:8080/admin/faults -d '{"latency_ms":300,"error_rate":0.01}'
///
///   # the marketplace as three services, with mutual TLS between them
///   sandbox certs /tmp/pki
///   sandbox --role auth --listen 127.0.0.1:8081 --grpc-listen 127.0.0.1:50051 \
///     --tls-cert /tmp/pki/auth.pem --tls-key /tmp/pki/auth-key.pem --tls-ca /tmp/pki/ca.pem
///   sandbox --role catalog --listen 127.0.0.1:8082 --grpc-listen 127.0.0.1:50052 \
///     --tls-cert /tmp/pki/catalog.pem --tls-key /tmp/pki/catalog-key.pem --tls-ca /tmp/pki/ca.pem
///   sandbox --role gateway --listen 127.0.0.1:8080 \
///     --auth-url https://127.0.0.1:50051 --catalog-url https://127.0.0.1:50052 \
///     --tls-cert /tmp/pki/gateway.pem --tls-key /tmp/pki/gateway-key.pem --tls-ca /tmp/pki/ca.pem
///
/// Exit codes: 0 clean shutdown, 2 bad parameters, 3 a dependency or the listen
/// address could not be reached. A gRPC peer that is down at start is not an
/// error: its breaker answers for it until it comes up.
#[derive(Debug, Clone, Parser)]
#[command(name = "sandbox", version, about, long_about, verbatim_doc_comment)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Config {
    /// A helper command instead of the service.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Which service this process is: `all` (the whole marketplace), `gateway`
    /// (public routes; calls auth and catalog over gRPC), `auth` (sign-in and
    /// sessions over gRPC), `catalog` (collections, NFTs and orders over gRPC)
    /// or `consumer` (applies order events from RabbitMQ).
    #[arg(long, value_enum, default_value_t = Role::All, env = "SANDBOX_ROLE")]
    pub role: Role,

    /// gRPC address of the `auth` and `catalog` roles; port 0 picks a free one.
    /// The bound address is printed on the second line of stdout:
    /// `sandbox grpc listening on ADDR`.
    #[arg(long, default_value = "127.0.0.1:50051", env = "SANDBOX_GRPC_LISTEN")]
    pub grpc_listen: SocketAddr,

    /// The auth service's gRPC URL (`--role gateway`): `http://HOST:PORT`, or
    /// `https://HOST:PORT` with the TLS flags.
    #[arg(long, env = "SANDBOX_AUTH_URL")]
    pub auth_url: Option<String>,

    /// The catalog service's gRPC URL (`--role gateway`).
    #[arg(long, env = "SANDBOX_CATALOG_URL")]
    pub catalog_url: Option<String>,

    /// RabbitMQ URL (`amqp://user:pass@host:port/vhost`). With it, `--role all`
    /// and `--role catalog` publish the order outbox to it, and `--role
    /// consumer` (which needs it) consumes the events. Without it, order
    /// events wait in the outbox (`outbox_pending`).
    #[arg(long, env = "SANDBOX_AMQP_URL")]
    pub amqp_url: Option<String>,

    /// Deadline of every gRPC call the gateway makes, connecting included.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub grpc_timeout: Duration,

    /// This service's certificate (PEM). With `--tls-key` and `--tls-ca` the
    /// gRPC server requires client certificates signed by that CA, and the
    /// gateway presents this one to its peers.
    #[arg(long, env = "SANDBOX_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "SANDBOX_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// The CA (PEM) that signs every service's certificate.
    #[arg(long, env = "SANDBOX_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

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

    /// Redis URL for the response cache (`--role all`, `gateway`), or for the
    /// nonces and sessions (`--role auth`: shared by every replica, kept across
    /// restarts). Without it they are held in this process.
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

    /// Broken on purpose, for chaos experiments that must fail: a cache error
    /// fails the request (503) instead of falling back to the database.
    #[arg(long)]
    pub no_cache_fallback: bool,

    /// Broken on purpose, for chaos experiments that must fail: order events
    /// are dropped while RabbitMQ is unreachable (as a service publishing
    /// straight to the broker would lose them) instead of waiting in the
    /// transactional outbox.
    #[arg(long)]
    pub no_outbox: bool,

    /// Release name sent back in an `x-release` header on every response
    /// (blue/green, version A/B). Without it, the image tag a Kubernetes
    /// node passes as `POSTLAUNCH_IMAGE_TAG` (postlaunch-node does, for
    /// `postlaunch/sandbox:v2`), so a pod reports the version it runs; else none.
    #[arg(long, env = "SANDBOX_RELEASE")]
    pub release: Option<String>,

    /// Broken on purpose, for releases that must be refused: answer this share
    /// of marketplace requests (0 to 1) with HTTP 500 from the start, as
    /// `POST /admin/faults {"error_rate": R}` would.
    #[arg(long, env = "SANDBOX_ERROR_RATE", default_value_t = 0.0)]
    pub error_rate: f64,
}

impl Config {
    /// `--release`, or else the image tag the node passed.
    pub fn release_name(&self) -> Option<String> {
        self.release
            .clone()
            .or_else(|| std::env::var("POSTLAUNCH_IMAGE_TAG").ok().filter(|tag| !tag.is_empty()))
    }
}

/// The service a sandbox process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The whole marketplace in one process.
    All,
    /// Public REST/GraphQL routes and sign-in, calling auth and catalog over gRPC.
    Gateway,
    /// Sign-in with Ethereum and sessions, over gRPC.
    Auth,
    /// Collections and NFTs, over gRPC.
    Catalog,
    /// Applies order events from RabbitMQ, once each (needs `--database-url`
    /// and `--amqp-url`).
    Consumer,
}

impl Role {
    /// The role's name, as given to `--role` (also the DNS name in its certificate).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Auth => "auth",
            Role::Catalog => "catalog",
            Role::Consumer => "consumer",
        }
    }
}

/// Helper commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Writes a throw-away CA and one certificate per service into DIR:
    /// `ca.pem`, `ca-key.pem`, and `ROLE.pem` / `ROLE-key.pem` for gateway,
    /// auth and catalog (each valid for the DNS name ROLE, `localhost` and
    /// 127.0.0.1). For tests and the local cluster, not for production.
    Certs {
        /// Directory to write into (created if missing).
        dir: PathBuf,
        /// Extra DNS names for every service certificate (repeatable), e.g.
        /// `auth.marketplace.svc`.
        #[arg(long = "dns-name")]
        dns_names: Vec<String>,
    },
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
        if self.release_name().is_some_and(|r| axum::http::HeaderValue::from_str(&r).is_err()) {
            return fail("--release", "must be printable ASCII (it is sent as an HTTP header)");
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return fail("--error-rate", "must be between 0 and 1");
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
        if self.grpc_timeout.is_zero() {
            return fail("--grpc-timeout", "must be longer than 0s");
        }
        self.validate_role()?;
        self.validate_tls()
    }

    /// Whether the TLS flags were given (all three, or [`Config::validate`] fails).
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    fn validate_role(&self) -> Result<(), ConfigError> {
        if self.role == Role::Consumer {
            for (flag, value) in
                [("--database-url", &self.database_url), ("--amqp-url", &self.amqp_url)]
            {
                if value.is_none() {
                    return Err(ConfigError {
                        flag,
                        reason: "required with --role consumer (it applies events from \
                                 RabbitMQ into PostgreSQL)"
                            .to_owned(),
                    });
                }
            }
        }
        if let Some(url) = &self.amqp_url {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(ConfigError {
                    flag: "--amqp-url",
                    reason: format!("{url:?}: use amqp://user:pass@host:port/vhost"),
                });
            }
            if matches!(self.role, Role::All | Role::Catalog) && self.database_url.is_none() {
                return Err(ConfigError {
                    flag: "--amqp-url",
                    reason: "the order outbox lives in PostgreSQL: give --database-url too"
                        .to_owned(),
                });
            }
            if matches!(self.role, Role::Gateway | Role::Auth) {
                return Err(ConfigError {
                    flag: "--amqp-url",
                    reason: format!(
                        "--role {} publishes no events (the catalog's relay does)",
                        self.role.as_str()
                    ),
                });
            }
        }
        let peers = [("--auth-url", &self.auth_url), ("--catalog-url", &self.catalog_url)];
        for (flag, url) in peers {
            match (self.role, url) {
                (Role::Gateway, None) => {
                    return Err(ConfigError {
                        flag,
                        reason: format!(
                            "required with --role gateway (the {} service's gRPC address, \
                             e.g. http://127.0.0.1:50051)",
                            flag.trim_start_matches("--").trim_end_matches("-url")
                        ),
                    });
                }
                (Role::Gateway, Some(url)) => self.validate_peer_url(flag, url)?,
                (role, Some(_)) => {
                    return Err(ConfigError {
                        flag,
                        reason: format!(
                            "only --role gateway calls peers; this is --role {}",
                            role.as_str()
                        ),
                    });
                }
                (_, None) => {}
            }
        }
        Ok(())
    }

    fn validate_peer_url(&self, flag: &'static str, url: &str) -> Result<(), ConfigError> {
        let fail = |reason: String| Err(ConfigError { flag, reason });
        let Ok(uri) = url.parse::<axum::http::Uri>() else {
            return fail(format!("{url:?} is not a URL; use http://HOST:PORT"));
        };
        if uri.host().is_none() || uri.port_u16().is_none() {
            return fail(format!("{url:?} needs a host and a port, e.g. http://127.0.0.1:50051"));
        }
        match (uri.scheme_str(), self.tls()) {
            (Some("http"), false) | (Some("https"), true) => Ok(()),
            (Some("http"), true) => {
                fail(format!("{url:?} is plaintext but --tls-cert is given; use https://"))
            }
            (Some("https"), false) => {
                fail(format!("{url:?} asks for TLS: give --tls-cert, --tls-key and --tls-ca"))
            }
            _ => fail(format!("{url:?}: the scheme must be http or https")),
        }
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let files = [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-ca", &self.tls_ca),
        ];
        let given = files.iter().filter(|(_, path)| path.is_some()).count();
        if given == 0 {
            return Ok(());
        }
        if matches!(self.role, Role::All | Role::Consumer) {
            return Err(ConfigError {
                flag: "--tls-cert",
                reason: format!(
                    "TLS secures the gRPC calls between roles; --role {} makes none",
                    self.role.as_str()
                ),
            });
        }
        if let Some((flag, _)) = files.iter().find(|(_, path)| path.is_none()) {
            return Err(ConfigError {
                flag,
                reason: "--tls-cert, --tls-key and --tls-ca go together".to_owned(),
            });
        }
        for (flag, path) in files {
            if let Some(path) = path {
                crate::grpc::tls::check_pem(flag, path)?;
            }
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
    fn a_gateway_needs_both_peers_and_names_the_missing_flag() {
        let config = Config::parse_from([
            "sandbox",
            "--role",
            "gateway",
            "--auth-url",
            "http://127.0.0.1:1",
        ]);
        let err = config.validate().unwrap_err();
        assert_eq!(err.flag, "--catalog-url");
        let config = Config::parse_from([
            "sandbox",
            "--role",
            "gateway",
            "--auth-url",
            "https://127.0.0.1:1",
            "--catalog-url",
            "http://127.0.0.1:2",
        ]);
        let err = config.validate().unwrap_err();
        assert_eq!(err.flag, "--auth-url");
        assert!(err.reason.contains("--tls-cert"), "{err}");
    }

    #[test]
    fn tls_flags_go_together_and_name_a_missing_file() {
        let config = Config::parse_from([
            "sandbox",
            "--role",
            "auth",
            "--tls-cert",
            "/nonexistent/a.pem",
            "--tls-key",
            "/nonexistent/k.pem",
            "--tls-ca",
            "/nonexistent/ca.pem",
        ]);
        let err = config.validate().unwrap_err();
        assert_eq!(err.flag, "--tls-cert");
        assert!(err.reason.contains("/nonexistent/a.pem"), "{err}");
        let config = Config::parse_from([
            "sandbox",
            "--role",
            "auth",
            "--tls-cert",
            "/nonexistent/a.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ]);
        assert_eq!(config.validate().unwrap_err().flag, "--tls-ca");
    }

    #[test]
    fn schema_names_are_restricted_to_safe_identifiers() {
        let config = Config::parse_from(["sandbox", "--database-schema", "x; drop table"]);
        assert_eq!(config.validate().unwrap_err().flag, "--database-schema");
    }
}
