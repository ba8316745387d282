//! The catalog in PostgreSQL: seeded once per shape, read through a
//! `deadpool-postgres` pool.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts};
use prometheus::IntGauge;
use shared_types::pg::describe;
use tokio_postgres::Row;

use super::{CatalogError, CatalogShape, Collection, Nft, injected_query_latency};
use crate::faults::Faults;
use crate::metrics::InUseGuard;

/// Rows are inserted in batches of this many.
const SEED_BATCH: i64 = 20_000;

/// The database could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse: a usage error.
    #[error("invalid --database-url: {0}")]
    InvalidUrl(String),
    /// The server could not be reached or refused the work.
    #[error("cannot use PostgreSQL at {target}: {reason}")]
    Unreachable {
        /// host:port/dbname, without credentials.
        target: String,
        /// The underlying error, with a hint.
        reason: String,
    },
}

/// A pool of `size` connections to `url` (sslmode and sslrootcert honoured as
/// libpq does), and the server it points at, without credentials.
pub fn connect_pool(url: &str, size: u32, wait: Duration) -> Result<(Pool, String), ConnectError> {
    let shared_types::pg::PgConnectOptions { mut config, tls, .. } =
        shared_types::pg::PgConnectOptions::parse(url).map_err(|e| {
            ConnectError::InvalidUrl(format!(
                "{e} (expected postgres://user@host:port/dbname[?sslmode=verify-full&sslrootcert=CA])"
            ))
        })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("postlaunch-sandbox");
    let target = describe(&config);
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    let pool = Pool::builder(manager)
        .max_size(size as usize)
        .timeouts(Timeouts {
            wait: Some(wait),
            create: Some(Duration::from_secs(5)),
            recycle: Some(Duration::from_secs(5)),
        })
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
    Ok((pool, target))
}

/// The catalog tables in one schema of a PostgreSQL database.
#[derive(Debug)]
pub struct PgCatalog {
    pool: Pool,
    schema: String,
    faults: Faults,
    in_use: IntGauge,
}

impl PgCatalog {
    /// Connects, creates the schema and seeds it with `shape` unless it already
    /// holds exactly that catalog.
    pub async fn connect(
        url: &str,
        schema: &str,
        shape: CatalogShape,
        pool_size: u32,
        pool_timeout: Duration,
        faults: Faults,
        in_use: IntGauge,
    ) -> Result<Self, ConnectError> {
        let (pool, target) = connect_pool(url, pool_size, pool_timeout)?;
        let catalog = Self { pool, schema: schema.to_owned(), faults, in_use };
        catalog.seed(shape).await.map_err(|e| ConnectError::Unreachable {
            target,
            reason: format!(
                "{e}; is PostgreSQL running and does the database exist? check --database-url"
            ),
        })?;
        Ok(catalog)
    }

    /// Creates the tables and loads the generated rows, unless the catalog
    /// already matches `shape`. Concurrent sandboxes serialise on an advisory lock.
    async fn seed(&self, shape: CatalogShape) -> Result<(), String> {
        let mut client = self.pool.get().await.map_err(|e| shared_types::pg::error_chain(&e))?;
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        let s = &self.schema;
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock(hashtext('postlaunch-sandbox-seed-{s}'));
             CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.catalog_meta (
                 id int PRIMARY KEY CHECK (id = 1), collections int NOT NULL, nfts int NOT NULL,
                 seed bigint NOT NULL, seeded_at timestamptz NOT NULL DEFAULT now());"
        ))
        .await
        .map_err(|e| e.to_string())?;
        let wanted = (shape.collections as i32, shape.nfts as i32, shape.seed as i64);
        let current = tx
            .query_opt(&format!("SELECT collections, nfts, seed FROM {s}.catalog_meta"), &[])
            .await
            .map_err(|e| e.to_string())?
            .map(|r| -> Result<(i32, i32, i64), tokio_postgres::Error> {
                Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
            })
            .transpose()
            .map_err(|e| format!("{s}.catalog_meta: {e}"))?;
        if current == Some(wanted) {
            tx.commit().await.map_err(|e| e.to_string())?;
            tracing::info!(schema = s, "catalog already seeded");
            return Ok(());
        }
        tracing::info!(
            schema = s,
            collections = shape.collections,
            nfts = shape.nfts,
            "seeding catalog"
        );
        tx.batch_execute(&format!(
            "DROP TABLE IF EXISTS {s}.nfts; DROP TABLE IF EXISTS {s}.collections;
             CREATE TABLE {s}.collections (
                 id bigint PRIMARY KEY, name text NOT NULL, slug text NOT NULL, contract text NOT NULL,
                 creator text NOT NULL, nft_count bigint NOT NULL, floor_price_wei numeric NOT NULL);
             CREATE TABLE {s}.nfts (
                 id bigint PRIMARY KEY, collection_id bigint NOT NULL REFERENCES {s}.collections (id),
                 token_id bigint NOT NULL, name text NOT NULL, owner text NOT NULL, image_url text NOT NULL,
                 UNIQUE (collection_id, token_id));
             CREATE INDEX ON {s}.nfts (owner, id);"
        ))
        .await
        .map_err(|e| e.to_string())?;
        let collections: Vec<Collection> =
            (1..=i64::from(shape.collections)).filter_map(|id| shape.collection(id)).collect();
        tx.execute(
            &format!(
                "INSERT INTO {s}.collections SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[],
                 $4::text[], $5::text[], $6::bigint[], $7::text[]::numeric[])"
            ),
            &[
                &collections.iter().map(|c| c.id).collect::<Vec<_>>(),
                &collections.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                &collections.iter().map(|c| c.slug.as_str()).collect::<Vec<_>>(),
                &collections.iter().map(|c| c.contract.as_str()).collect::<Vec<_>>(),
                &collections.iter().map(|c| c.creator.as_str()).collect::<Vec<_>>(),
                &collections.iter().map(|c| c.nft_count).collect::<Vec<_>>(),
                &collections.iter().map(|c| c.floor_price_wei.as_str()).collect::<Vec<_>>(),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
        let insert_nfts = format!(
            "INSERT INTO {s}.nfts SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[],
             $4::text[], $5::text[], $6::text[])"
        );
        let mut start = 1;
        while start <= i64::from(shape.nfts) {
            let end = (start + SEED_BATCH - 1).min(i64::from(shape.nfts));
            let nfts: Vec<Nft> = (start..=end).filter_map(|id| shape.nft(id)).collect();
            tx.execute(
                &insert_nfts,
                &[
                    &nfts.iter().map(|n| n.id).collect::<Vec<_>>(),
                    &nfts.iter().map(|n| n.collection_id).collect::<Vec<_>>(),
                    &nfts.iter().map(|n| n.token_id).collect::<Vec<_>>(),
                    &nfts.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
                    &nfts.iter().map(|n| n.owner.as_str()).collect::<Vec<_>>(),
                    &nfts.iter().map(|n| n.image_url.as_str()).collect::<Vec<_>>(),
                ],
            )
            .await
            .map_err(|e| e.to_string())?;
            start = end + 1;
        }
        tx.execute(
            &format!(
                "INSERT INTO {s}.catalog_meta (id, collections, nfts, seed) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET collections = $1, nfts = $2, seed = $3, seeded_at = now()"
            ),
            &[&wanted.0, &wanted.1, &wanted.2],
        )
        .await
        .map_err(|e| e.to_string())?;
        tx.batch_execute(&format!("ANALYZE {s}.collections; ANALYZE {s}.nfts;"))
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())
    }

    /// The pool, shared with the order tables.
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    async fn checkout(&self) -> Result<(Object, InUseGuard), CatalogError> {
        let client = self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Timeout(_) => {
                CatalogError::PoolTimeout(self.pool.timeouts().wait.unwrap_or_default())
            }
            other => CatalogError::Database(other.to_string()),
        })?;
        let guard = InUseGuard::new(&self.in_use);
        injected_query_latency(&self.faults).await;
        Ok((client, guard))
    }

    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, CatalogError> {
        let (client, _guard) = self.checkout().await?;
        let statement = client.prepare_cached(sql).await.map_err(db_error)?;
        client.query(&statement, params).await.map_err(db_error)
    }

    fn collection_sql(&self, tail: &str) -> String {
        format!(
            "SELECT id, name, slug, contract, creator, nft_count, floor_price_wei::text FROM {}.collections {tail}",
            self.schema
        )
    }

    fn nft_sql(&self, tail: &str) -> String {
        format!(
            "SELECT id, collection_id, token_id, name, owner, image_url FROM {}.nfts {tail}",
            self.schema
        )
    }

    pub(super) async fn collections(
        &self,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<Collection>, CatalogError> {
        let rows = self
            .rows(&self.collection_sql("ORDER BY id OFFSET $1 LIMIT $2"), &[&offset, &limit])
            .await?;
        rows.iter().map(collection).collect()
    }

    pub(super) async fn collection(&self, id: i64) -> Result<Option<Collection>, CatalogError> {
        let rows = self.rows(&self.collection_sql("WHERE id = $1"), &[&id]).await?;
        rows.first().map(collection).transpose()
    }

    pub(super) async fn collection_nfts(
        &self,
        collection_id: i64,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<Nft>, CatalogError> {
        let sql = self.nft_sql("WHERE collection_id = $1 ORDER BY token_id OFFSET $2 LIMIT $3");
        let rows = self.rows(&sql, &[&collection_id, &offset, &limit]).await?;
        rows.iter().map(nft).collect()
    }

    pub(super) async fn nft(&self, id: i64) -> Result<Option<Nft>, CatalogError> {
        let rows = self.rows(&self.nft_sql("WHERE id = $1"), &[&id]).await?;
        rows.first().map(nft).transpose()
    }

    pub(super) async fn search(
        &self,
        text: &str,
        limit: i64,
    ) -> Result<Vec<Collection>, CatalogError> {
        let pattern =
            format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let slow = self.faults.spec().slow_query_ms;
        let rows = if slow > 0 {
            // One statement that takes `slow` ms inside the server (an
            // InitPlan: the sleep runs once per execution).
            let sql = self.collection_sql(
                "WHERE name ILIKE $1 AND (SELECT 1 FROM pg_sleep($3::float8 / 1000)) = 1 \
                 ORDER BY id LIMIT $2",
            );
            let ms = slow as f64;
            self.rows(&sql, &[&pattern, &limit, &ms]).await?
        } else {
            let sql = self.collection_sql("WHERE name ILIKE $1 ORDER BY id LIMIT $2");
            self.rows(&sql, &[&pattern, &limit]).await?
        };
        rows.iter().map(collection).collect()
    }

    pub(super) async fn owner_nfts(
        &self,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<Nft>, CatalogError> {
        let owner = owner.to_lowercase();
        let rows = self
            .rows(&self.nft_sql("WHERE owner = $1 ORDER BY id LIMIT $2"), &[&owner, &limit])
            .await?;
        rows.iter().map(nft).collect()
    }

    pub(super) async fn ping(&self) -> Result<(), CatalogError> {
        self.rows("SELECT 1", &[]).await.map(drop)
    }
}

fn collection(row: &Row) -> Result<Collection, CatalogError> {
    Ok(Collection {
        id: column(row, "collections", 0)?,
        name: column(row, "collections", 1)?,
        slug: column(row, "collections", 2)?,
        contract: column(row, "collections", 3)?,
        creator: column(row, "collections", 4)?,
        nft_count: column(row, "collections", 5)?,
        floor_price_wei: column(row, "collections", 6)?,
    })
}

fn nft(row: &Row) -> Result<Nft, CatalogError> {
    Ok(Nft {
        id: column(row, "nfts", 0)?,
        collection_id: column(row, "nfts", 1)?,
        token_id: column(row, "nfts", 2)?,
        name: column(row, "nfts", 3)?,
        owner: column(row, "nfts", 4)?,
        image_url: column(row, "nfts", 5)?,
    })
}

/// Column `index` of a row read from `table`, or an error naming both (a
/// schema that drifted from ours must not panic the service).
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    table: &str,
    index: usize,
) -> Result<T, CatalogError> {
    row.try_get(index).map_err(|e| {
        let name = row.columns().get(index).map_or("?", |c| c.name());
        CatalogError::Database(format!("{table}.{name} (column {index}): {e}"))
    })
}

fn db_error(e: tokio_postgres::Error) -> CatalogError {
    CatalogError::Database(e.to_string())
}
