//! The NFT catalog: collections, NFTs and owners, in memory or in PostgreSQL,
//! behind a circuit breaker and a bounded connection pool.

mod memory;
mod postgres;
pub mod seed;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::breaker::{BreakerError, CircuitBreaker};
use crate::faults::{Dependency, Faults};
use crate::grpc::client::RemoteCatalog;
use crate::metrics::Metrics;
use crate::orders::{NewOrder, OrderError, Orders, PlacedOrder};
pub use memory::MemoryCatalog;
pub use postgres::{ConnectError, PgCatalog, connect_pool};
pub use seed::CatalogShape;

/// A collection (an ERC-1155 contract) in the marketplace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Collection {
    /// Catalog id, 1-based.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// URL-safe name.
    pub slug: String,
    /// Contract address.
    pub contract: String,
    /// Address of the creator.
    pub creator: String,
    /// Number of NFTs in the collection.
    pub nft_count: i64,
    /// Floor price in wei, as a decimal string (it exceeds 2^53).
    pub floor_price_wei: String,
}

/// One NFT (an ERC-1155 token id of a collection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nft {
    /// Catalog id, 1-based.
    pub id: i64,
    /// The collection it belongs to.
    pub collection_id: i64,
    /// Token id within the collection's contract.
    pub token_id: i64,
    /// Display name.
    pub name: String,
    /// Address of the current owner.
    pub owner: String,
    /// Where the media lives.
    pub image_url: String,
}

/// Why a catalog call failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database is marked down by a fault knob.
    #[error("database is down (fault injected)")]
    Down,
    /// No connection became free within the pool timeout.
    #[error("no database connection free within {0:?} (pool exhausted)")]
    PoolTimeout(Duration),
    /// The breaker of the catalog's dependency (the database, or the catalog
    /// service for a gateway) is open.
    #[error("{dependency} circuit breaker is open")]
    BreakerOpen {
        /// `database` or `catalog`.
        dependency: &'static str,
        /// When the breaker lets a trial call through.
        retry_after: Duration,
    },
    /// The catalog service failed to answer (a gateway's call over gRPC).
    #[error("{dependency} service call failed: {detail}")]
    Remote {
        /// The service called.
        dependency: &'static str,
        /// The gRPC code and message.
        detail: String,
    },
    /// PostgreSQL could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(String),
}

enum Store {
    Memory(MemoryCatalog),
    Postgres(PgCatalog),
    Remote(RemoteCatalog),
}

/// The catalog as handlers see it: every call counted in `db_queries_total`,
/// guarded by the `database` circuit breaker and subject to fault knobs.
pub struct Catalog {
    store: Store,
    orders: Option<Orders>,
    breaker: CircuitBreaker,
    faults: Faults,
    metrics: Metrics,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("backend", &self.backend()).finish_non_exhaustive()
    }
}

/// Size of the (real or simulated) connection pool and how long a query waits for a connection.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Connections in the pool.
    pub size: u32,
    /// Longest wait for a free connection.
    pub timeout: Duration,
}

/// Calls the same method on whichever store backs the catalog, inside [`Catalog::run`].
macro_rules! query {
    ($self:ident, $op:literal, $method:ident($($arg:expr),*)) => {
        $self
            .run($op, async {
                match &$self.store {
                    Store::Memory(s) => s.$method($($arg),*).await,
                    Store::Postgres(s) => s.$method($($arg),*).await,
                    Store::Remote(s) => s.$method($($arg),*).await,
                }
            })
            .await
    };
}

impl Catalog {
    /// An in-memory catalog of the given shape.
    pub fn in_memory(
        shape: CatalogShape,
        pool: PoolSettings,
        breaker: CircuitBreaker,
        faults: Faults,
        metrics: Metrics,
    ) -> Self {
        let store = MemoryCatalog::new(
            shape,
            pool.size,
            pool.timeout,
            faults.clone(),
            metrics.db_in_use.clone(),
        );
        metrics.db_max.set(i64::from(pool.size));
        Self { store: Store::Memory(store), orders: None, breaker, faults, metrics }
    }

    /// A catalog in PostgreSQL, seeded with `shape` unless it already holds it.
    pub async fn postgres(
        url: &str,
        schema: &str,
        shape: CatalogShape,
        pool: PoolSettings,
        breaker: CircuitBreaker,
        faults: Faults,
        metrics: Metrics,
    ) -> Result<Self, ConnectError> {
        let store = PgCatalog::connect(
            url,
            schema,
            shape,
            pool.size,
            pool.timeout,
            faults.clone(),
            metrics.db_in_use.clone(),
        )
        .await?;
        let orders = Orders::init(store.pool(), schema).await.map_err(|reason| {
            ConnectError::Unreachable {
                target: "the order tables".to_owned(),
                reason: format!("{reason}; check --database-url"),
            }
        })?;
        metrics.db_max.set(i64::from(pool.size));
        Ok(Self { store: Store::Postgres(store), orders: Some(orders), breaker, faults, metrics })
    }

    /// The catalog service over gRPC (a gateway's catalog), guarded by the
    /// `catalog` breaker. The database fault knobs do not apply: the catalog
    /// role has its own.
    pub fn remote(
        client: RemoteCatalog,
        breaker: CircuitBreaker,
        faults: Faults,
        metrics: Metrics,
    ) -> Self {
        Self { store: Store::Remote(client), orders: None, breaker, faults, metrics }
    }

    /// `memory`, `postgres` or `remote` (the catalog service).
    pub fn backend(&self) -> &'static str {
        match self.store {
            Store::Memory(_) => "memory",
            Store::Postgres(_) => "postgres",
            Store::Remote(_) => "remote",
        }
    }

    /// The database breaker, for readiness.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// One page of collections ordered by id.
    pub async fn collections(
        &self,
        page: u32,
        per_page: u32,
    ) -> Result<Vec<Collection>, CatalogError> {
        let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
        self.collections_at(offset, per_page).await
    }

    /// `limit` collections from `offset`, ordered by id.
    pub async fn collections_at(
        &self,
        offset: i64,
        limit: u32,
    ) -> Result<Vec<Collection>, CatalogError> {
        query!(self, "collections", collections(offset, i64::from(limit)))
    }

    /// One collection.
    pub async fn collection(&self, id: i64) -> Result<Option<Collection>, CatalogError> {
        query!(self, "collection", collection(id))
    }

    /// One page of a collection's NFTs ordered by token id.
    pub async fn collection_nfts(
        &self,
        collection_id: i64,
        page: u32,
        per_page: u32,
    ) -> Result<Vec<Nft>, CatalogError> {
        let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
        self.collection_nfts_at(collection_id, offset, per_page).await
    }

    /// `limit` of a collection's NFTs from `offset`, ordered by token id.
    pub async fn collection_nfts_at(
        &self,
        collection_id: i64,
        offset: i64,
        limit: u32,
    ) -> Result<Vec<Nft>, CatalogError> {
        query!(self, "collection_nfts", collection_nfts(collection_id, offset, i64::from(limit)))
    }

    /// One NFT.
    pub async fn nft(&self, id: i64) -> Result<Option<Nft>, CatalogError> {
        query!(self, "nft", nft(id))
    }

    /// Collections whose name contains `text`, case-insensitively.
    pub async fn search(&self, text: &str, limit: u32) -> Result<Vec<Collection>, CatalogError> {
        query!(self, "search", search(text, i64::from(limit)))
    }

    /// NFTs held by `owner`, ordered by id.
    pub async fn owner_nfts(&self, owner: &str, limit: u32) -> Result<Vec<Nft>, CatalogError> {
        query!(self, "owner_nfts", owner_nfts(owner, i64::from(limit)))
    }

    /// The order tables, when the catalog is in PostgreSQL.
    pub fn orders(&self) -> Option<&Orders> {
        self.orders.as_ref()
    }

    /// Stores an order and its event: in this catalog's database, or through
    /// the catalog service. A refusal (unknown NFT, reused key) is an answer
    /// and does not count against the breaker.
    pub async fn place_order(&self, order: &NewOrder) -> Result<PlacedOrder, OrderError> {
        order.validate()?;
        let local = !matches!(self.store, Store::Remote(_));
        let call = async {
            let outcome = match (&self.store, &self.orders) {
                (Store::Remote(remote), _) => remote.place_order(order).await,
                (_, Some(_)) if self.faults.is_down(Dependency::Database) => {
                    Err(OrderError::Database("database is down (fault injected)".to_owned()))
                }
                (_, Some(orders)) => orders.place(order).await,
                (_, None) => Err(OrderError::NoDatabase),
            };
            match outcome {
                Err(e) if !e.is_refusal() => Err(e),
                answer => Ok(answer),
            }
        };
        self.metrics.db_queries.with_label_values(&["place_order"]).inc();
        match self.breaker.call(Box::pin(call)).await {
            Ok(answer) => answer,
            Err(BreakerError::Open { dependency, retry_after }) => Err(OrderError::Unavailable {
                dependency,
                retry_after,
                detail: format!("{dependency} circuit breaker is open"),
            }),
            Err(BreakerError::Inner(OrderError::Database(detail))) if local => {
                Err(OrderError::Unavailable {
                    dependency: "database",
                    retry_after: self.breaker.retry_after(),
                    detail: format!("database error: {detail}"),
                })
            }
            Err(BreakerError::Inner(e)) => Err(e),
        }
    }

    /// A trivial round trip, for readiness.
    pub async fn ping(&self) -> Result<(), CatalogError> {
        query!(self, "ping", ping())
    }

    async fn run<T>(
        &self,
        operation: &'static str,
        query: impl Future<Output = Result<T, CatalogError>>,
    ) -> Result<T, CatalogError> {
        self.metrics.db_queries.with_label_values(&[operation]).inc();
        let local = !matches!(self.store, Store::Remote(_));
        let guarded = async {
            if local && self.faults.is_down(Dependency::Database) {
                return Err(CatalogError::Down);
            }
            query.await
        };
        // Boxed: the store futures are large and every handler awaits one.
        self.breaker.call(Box::pin(guarded)).await.map_err(|e| match e {
            BreakerError::Open { dependency, retry_after } => {
                CatalogError::BreakerOpen { dependency, retry_after }
            }
            BreakerError::Inner(e) => e,
        })
    }
}

/// Sleeps for the injected per-query database latency, while a connection is held.
async fn injected_query_latency(faults: &Faults) {
    let ms = faults.spec().db_latency_ms;
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Shared handle type used by the server.
pub type SharedCatalog = Arc<Catalog>;
