//! A miniature NFT marketplace service: the target every postlaunch tool can
//! be pointed at, so `cargo xtask verify` runs with no outside system.
//!
//! It behaves like the marketplace the launch plan describes, in small:
//!
//! - REST routes (`/api/collections`, `/api/collections/{id}`,
//!   `/api/collections/{id}/nfts?page=`, `/api/nfts/{id}`, `/api/search?q=`),
//!   `POST /graphql` with nested fields that cause N+1 lookups, and sign-in with
//!   Ethereum (`POST /auth/nonce`, `POST /auth/verify`, EIP-4361 verified by
//!   secp256k1 signature recovery);
//! - `/metrics` with the runbooks' series: `http_requests_total{route,status}`,
//!   `http_request_duration_seconds`, `db_connections_in_use`, `db_connections_max`,
//!   `cache_hits_total`, `cache_misses_total`, `circuit_breaker_state{dependency,state}`,
//!   `process_*`;
//! - a catalog in PostgreSQL (`--database-url`) or in memory, a cache in Redis
//!   (`--redis-url`) or in-process, each dependency behind a circuit breaker;
//! - fault knobs on `POST /admin/faults` (latency, error rate, stalls, database
//!   latency, a dependency down) to provoke SLO breaches deterministically.
//!
//! ```no_run
//! # async fn run() -> Result<(), sandbox::StartError> {
//! use clap::Parser;
//! let config = sandbox::config::Config::parse_from(["sandbox", "--listen", "127.0.0.1:0"]);
//! sandbox::serve(config, |addr| println!("listening on {addr}"), std::future::pending()).await
//! # }
//! ```

pub mod auth;
pub mod breaker;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod faults;
pub mod graphql;
pub mod metrics;
pub mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use shared_types::ExitCode;

use crate::auth::Authenticator;
use crate::breaker::CircuitBreaker;
use crate::cache::{Cache, CacheConnectError};
use crate::catalog::ConnectError;
use crate::catalog::{Catalog, CatalogShape, PoolSettings};
use crate::config::{Config, ConfigError};
use crate::faults::Faults;
use crate::metrics::Metrics;
use crate::routes::AppState;

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A parameter is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A URL does not parse.
    #[error("{0}")]
    InvalidUrl(String),
    /// A dependency could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The listen address is taken or not ours.
    #[error(
        "cannot listen on {addr}: {source}; pick another --listen address (port 0 picks a free one)"
    )]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server error: {0}")]
    Serve(std::io::Error),
    /// The metrics registry refused a series (a programming error).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl StartError {
    /// The process exit code for this error: 2 for usage errors, 3 for anything
    /// that stopped the service from running.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            StartError::Config(_) | StartError::InvalidUrl(_) => ExitCode::Usage,
            _ => ExitCode::CouldNotRun,
        }
    }
}

impl From<ConnectError> for StartError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::InvalidUrl(_) => StartError::InvalidUrl(e.to_string()),
            ConnectError::Unreachable { .. } => StartError::Unreachable(e.to_string()),
        }
    }
}

impl From<CacheConnectError> for StartError {
    fn from(e: CacheConnectError) -> Self {
        match e {
            CacheConnectError::InvalidUrl(_) => StartError::InvalidUrl(e.to_string()),
            CacheConnectError::Unreachable { .. } => StartError::Unreachable(e.to_string()),
        }
    }
}

/// Connects the dependencies (seeding the catalog if needed) and assembles the
/// state every handler shares.
pub async fn build(config: &Config) -> Result<AppState, StartError> {
    config.validate()?;
    let metrics = Metrics::new()?;
    let faults = Faults::default();
    let breaker = |dependency| {
        CircuitBreaker::new(
            dependency,
            config.breaker_failures,
            config.breaker_open_for,
            metrics.breaker_state.clone(),
            metrics.breaker_transitions.clone(),
        )
    };
    let shape =
        CatalogShape { collections: config.collections, nfts: config.nfts, seed: config.seed };
    let pool = PoolSettings { size: config.db_pool_size, timeout: config.db_pool_timeout };
    let catalog = match &config.database_url {
        Some(url) => {
            Catalog::postgres(
                url,
                &config.database_schema,
                shape,
                pool,
                breaker("database"),
                faults.clone(),
                metrics.clone(),
            )
            .await?
        }
        None => {
            Catalog::in_memory(shape, pool, breaker("database"), faults.clone(), metrics.clone())
        }
    };
    let cache = match &config.redis_url {
        Some(url) => {
            Cache::redis(
                url,
                &config.cache_namespace,
                config.cache_ttl,
                breaker("cache"),
                faults.clone(),
                metrics.clone(),
            )
            .await?
        }
        None => Cache::in_memory(
            &config.cache_namespace,
            config.cache_ttl,
            breaker("cache"),
            faults.clone(),
            metrics.clone(),
        ),
    };
    metrics.catalog_info.with_label_values(&[catalog.backend(), cache.backend()]).set(1);
    let catalog = Arc::new(catalog);
    Ok(AppState {
        schema: graphql::schema(catalog.clone()),
        catalog,
        cache: Arc::new(cache),
        auth: Arc::new(Authenticator::new(&config.siwe_domain, config.chain_id)),
        faults,
        metrics,
        release: config.release.as_deref().and_then(|r| axum::http::HeaderValue::from_str(r).ok()),
    })
}

/// Builds the service, binds `config.listen`, calls `on_listening` with the bound
/// address and serves until `shutdown` completes.
pub async fn serve(
    config: Config,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr =
        listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    on_listening(addr);
    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(StartError::Serve)
}
