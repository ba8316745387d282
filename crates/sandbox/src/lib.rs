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
//!
//! `--role` splits it into the marketplace's services: a `gateway` with the
//! public routes that calls `auth` and `catalog` over gRPC ([`grpc`]), each
//! call behind its own breaker, with mutual TLS when certificates are given.
//!
//! ```no_run
//! # async fn run() -> Result<(), sandbox::StartError> {
//! use clap::Parser;
//! let config = sandbox::config::Config::parse_from(["sandbox", "--listen", "127.0.0.1:0"]);
//! sandbox::serve(config, |at| println!("listening on {}", at.http), std::future::pending()).await
//! # }
//! ```

pub mod auth;
pub mod breaker;
pub mod cache;
pub mod catalog;
pub mod certs;
pub mod config;
pub mod events;
pub mod faults;
pub mod graphql;
pub mod grpc;
pub mod metrics;
pub mod orders;
pub mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use shared_types::ExitCode;

use crate::auth::{Auth, Authenticator};
use crate::breaker::CircuitBreaker;
use crate::cache::{Cache, CacheConnectError};
use crate::catalog::ConnectError;
use crate::catalog::{Catalog, CatalogShape, PoolSettings};
use crate::config::{Config, ConfigError, Role};
use crate::faults::Faults;
use crate::grpc::client::{ChannelError, RemoteAuth, RemoteCatalog, channel};
use crate::grpc::pb::{auth_server::AuthServer, catalog_server::CatalogServer};
use crate::grpc::server::{AuthService, CatalogService};
use crate::grpc::tls::TlsFiles;
use crate::metrics::Metrics;
use crate::routes::{AppState, OpsState, Readiness};

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
    /// A peer URL or the TLS material was refused by the gRPC transport.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The gRPC server could not be set up or failed while running.
    #[error("gRPC server error: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The metrics registry refused a series (a programming error).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl StartError {
    /// The process exit code for this error: 2 for usage errors, 3 for anything
    /// that stopped the service from running.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            StartError::Config(_) | StartError::InvalidUrl(_) | StartError::Channel(_) => {
                ExitCode::Usage
            }
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

/// Where a started sandbox listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The HTTP port: the marketplace routes, or `/healthz`, `/readyz` and
    /// `/metrics` for the auth and catalog roles.
    pub http: SocketAddr,
    /// The gRPC port of the auth and catalog roles.
    pub grpc: Option<SocketAddr>,
    /// Whether the gRPC port speaks (mutual) TLS.
    pub tls: bool,
}

fn breaker_for(
    config: &Config,
    metrics: &Metrics,
) -> impl Fn(&'static str) -> CircuitBreaker + use<> {
    let (failures, open_for) = (config.breaker_failures, config.breaker_open_for);
    let (state, transitions) = (metrics.breaker_state.clone(), metrics.breaker_transitions.clone());
    move |dependency| {
        CircuitBreaker::new(dependency, failures, open_for, state.clone(), transitions.clone())
    }
}

/// The catalog in PostgreSQL (`--database-url`) or in memory, behind the
/// `database` breaker: the catalog of `--role all` and `--role catalog`.
async fn local_catalog(
    config: &Config,
    metrics: &Metrics,
    faults: &Faults,
) -> Result<Catalog, StartError> {
    let breaker = breaker_for(config, metrics)("database");
    let shape =
        CatalogShape { collections: config.collections, nfts: config.nfts, seed: config.seed };
    let pool = PoolSettings { size: config.db_pool_size, timeout: config.db_pool_timeout };
    Ok(match &config.database_url {
        Some(url) => {
            Catalog::postgres(
                url,
                &config.database_schema,
                shape,
                pool,
                breaker,
                faults.clone(),
                metrics.clone(),
            )
            .await?
        }
        None => Catalog::in_memory(shape, pool, breaker, faults.clone(), metrics.clone()),
    })
}

/// Connects the dependencies (seeding the catalog if needed) and assembles the
/// state every handler shares: for `--role all`, everything in this process;
/// for `--role gateway`, clients of the auth and catalog services.
pub async fn build(config: &Config) -> Result<AppState, StartError> {
    config.validate()?;
    let tls = TlsFiles::load(config)?;
    build_with(config, tls.as_ref()).await
}

async fn build_with(config: &Config, tls: Option<&TlsFiles>) -> Result<AppState, StartError> {
    let metrics = Metrics::new()?;
    let faults = Faults::default();
    if config.error_rate > 0.0 {
        faults.set(faults::FaultSpec { error_rate: config.error_rate, ..Default::default() });
    }
    let breaker = breaker_for(config, &metrics);
    let (catalog, auth) = match (&config.auth_url, &config.catalog_url) {
        (Some(auth_url), Some(catalog_url)) if config.role == Role::Gateway => {
            let timeout = config.grpc_timeout;
            let catalog_channel = channel("--catalog-url", catalog_url, "catalog", tls, timeout)?;
            let auth_channel = channel("--auth-url", auth_url, "auth", tls, timeout)?;
            let catalog = Catalog::remote(
                RemoteCatalog::new(catalog_channel, metrics.grpc_client.clone()),
                breaker("catalog"),
                faults.clone(),
                metrics.clone(),
            );
            let client = RemoteAuth::new(auth_channel, metrics.grpc_client.clone());
            (catalog, Auth::Remote { client, breaker: breaker("auth") })
        }
        _ => (
            local_catalog(config, &metrics, &faults).await?,
            Auth::Local(Authenticator::new(&config.siwe_domain, config.chain_id)),
        ),
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
        auth: Arc::new(auth),
        faults,
        metrics,
        release: release_header(config),
        cache_fallback: !config.no_cache_fallback,
    })
}

/// `--release` as the `x-release` header value (checked by [`Config::validate`]).
fn release_header(config: &Config) -> Option<axum::http::HeaderValue> {
    config.release_name().and_then(|r| axum::http::HeaderValue::from_str(&r).ok())
}

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Builds the service for `config.role`, binds its ports, calls
/// `on_listening` with the bound addresses and serves until `shutdown`
/// completes.
pub async fn serve(
    config: Config,
    on_listening: impl FnOnce(&Listening),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    config.validate()?;
    // tonic's TLS builds rustls configurations with the process default
    // provider; when the workspace also links aws-lc-rs there is none.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = TlsFiles::load(&config)?;
    let release = release_header(&config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let relay = |orders: Option<&orders::Orders>, metrics: &Metrics| {
        if let (Some(url), Some(orders)) = (&config.amqp_url, orders) {
            tokio::spawn(events::relay(
                orders.clone(),
                url.clone(),
                metrics.clone(),
                stopped.clone(),
                !config.no_outbox,
            ));
        }
    };
    // The HTTP router of the role, and the gRPC services it serves, if any.
    let (router, grpc) = match config.role {
        Role::All | Role::Gateway => {
            let state = build_with(&config, tls.as_ref()).await?;
            relay(state.catalog.orders(), &state.metrics);
            (routes::router(state), None)
        }
        Role::Consumer => {
            let metrics = Metrics::new()?;
            let (Some(database_url), Some(amqp_url)) = (&config.database_url, &config.amqp_url)
            else {
                return Err(StartError::Config(ConfigError {
                    flag: "--amqp-url",
                    reason: "--role consumer needs --database-url and --amqp-url".to_owned(),
                }));
            };
            let orders =
                orders::Orders::connect(database_url, &config.database_schema, config.db_pool_size)
                    .await?;
            let faults = Faults::default();
            tokio::spawn(events::consume(
                orders.clone(),
                amqp_url.clone(),
                metrics.clone(),
                faults.clone(),
                stopped.clone(),
            ));
            let ops = OpsState {
                metrics,
                faults: Some(faults),
                readiness: Readiness::Consumer(orders),
                release,
            };
            (routes::operations(ops), None)
        }
        Role::Auth => {
            let metrics = Metrics::new()?;
            let auth = match &config.redis_url {
                Some(url) => Authenticator::with_redis(
                    &config.siwe_domain,
                    config.chain_id,
                    cache::connect_redis(url).await?,
                    &config.cache_namespace,
                ),
                None => Authenticator::new(&config.siwe_domain, config.chain_id),
            };
            let auth = Arc::new(auth);
            let service = AuthServer::new(AuthService::new(auth, metrics.clone()));
            let ops = OpsState { metrics, faults: None, readiness: Readiness::Auth, release };
            (routes::operations(ops), Some(tonic::service::Routes::new(service)))
        }
        Role::Catalog => {
            let metrics = Metrics::new()?;
            let faults = Faults::default();
            let catalog = Arc::new(local_catalog(&config, &metrics, &faults).await?);
            metrics.catalog_info.with_label_values(&[catalog.backend(), "none"]).set(1);
            relay(catalog.orders(), &metrics);
            let service = CatalogServer::new(CatalogService::new(catalog.clone(), metrics.clone()));
            let ops = OpsState {
                metrics,
                faults: Some(faults),
                readiness: Readiness::Catalog(catalog),
                release,
            };
            (routes::operations(ops), Some(tonic::service::Routes::new(service)))
        }
    };
    let (http_listener, http) = bind(config.listen).await?;
    let Some(grpc) = grpc else {
        on_listening(&Listening { http, grpc: None, tls: false });
        return axum::serve(http_listener, router)
            .with_graceful_shutdown(until_stopped(stopped))
            .await
            .map_err(StartError::Serve);
    };
    let (grpc_listener, grpc_addr) = bind(config.grpc_listen).await?;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        server = server.tls_config(tls.server())?;
    }
    on_listening(&Listening { http, grpc: Some(grpc_addr), tls: tls.is_some() });
    let http_server =
        axum::serve(http_listener, router).with_graceful_shutdown(until_stopped(stopped.clone()));
    let grpc_server = server.add_routes(grpc).serve_with_incoming_shutdown(
        tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
        until_stopped(stopped),
    );
    tokio::try_join!(async { http_server.await.map_err(StartError::Serve) }, async {
        grpc_server.await.map_err(StartError::Grpc)
    },)?;
    Ok(())
}
