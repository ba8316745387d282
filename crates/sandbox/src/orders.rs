//! Orders and their events: `POST /api/orders` stores an order and its
//! `order.created` event in one transaction (the transactional outbox), so an
//! accepted order never lacks its event and RabbitMQ being down never refuses
//! an order. [`crate::events`] publishes the outbox and consumes the events.
//!
//! Tables, in the catalog's schema:
//! - `orders`: one row per idempotency key;
//! - `outbox`: one event per order, `published_at` set once RabbitMQ confirmed it;
//! - `processed_events`: one row per event the consumer applied, with how many
//!   times it was delivered;
//! - `collection_sales`: what the consumer applies, per collection.

use deadpool_postgres::Pool;
use serde::Deserialize;

/// What an order does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderKind {
    /// Buy the NFT at the price.
    Buy,
    /// List the NFT for sale at the price.
    List,
}

impl OrderKind {
    /// `buy` or `list`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::Buy => "buy",
            OrderKind::List => "list",
        }
    }

    /// Parses `buy` or `list`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "buy" => Some(OrderKind::Buy),
            "list" => Some(OrderKind::List),
            _ => None,
        }
    }
}

/// An order as the client sends it, with who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// The client's `Idempotency-Key`.
    pub idempotency_key: String,
    /// The signed-in account.
    pub account: String,
    /// The NFT bought or listed.
    pub nft_id: i64,
    /// Buy or list.
    pub kind: OrderKind,
    /// Price in wei, decimal digits.
    pub price_wei: String,
}

/// Longest accepted idempotency key.
pub const MAX_KEY_LEN: usize = 200;

impl NewOrder {
    /// Checks what the database cannot: key length and the price's digits.
    pub fn validate(&self) -> Result<(), OrderError> {
        let key = &self.idempotency_key;
        if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
            return Err(OrderError::Invalid(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable characters"
            )));
        }
        let digits = &self.price_wei;
        if digits.is_empty() || digits.len() > 78 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OrderError::Invalid(
                "price_wei must be a decimal string of 1 to 78 digits".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedOrder {
    /// Its id.
    pub order_id: i64,
    /// The id of its `order.created` event.
    pub event_id: String,
    /// The NFT's collection.
    pub collection_id: i64,
    /// The key had already placed this order: nothing new was stored.
    pub replayed: bool,
}

/// Why an order was not stored.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The request is invalid (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The NFT does not exist (HTTP 404).
    #[error("no NFT with id {0}")]
    UnknownNft(i64),
    /// The idempotency key was used for a different order (HTTP 422).
    #[error("Idempotency-Key {0:?} was already used for a different order")]
    KeyReused(String),
    /// The catalog has no database to store orders in (HTTP 501).
    #[error("orders need the catalog in PostgreSQL (--database-url)")]
    NoDatabase,
    /// The database failed (HTTP 503 naming the database).
    #[error("database error: {0}")]
    Database(String),
    /// A dependency's breaker is open or the catalog service failed (HTTP 503).
    #[error("{detail}")]
    Unavailable {
        /// `database` or `catalog`.
        dependency: &'static str,
        /// When to try again.
        retry_after: std::time::Duration,
        /// What failed.
        detail: String,
    },
}

impl OrderError {
    /// A refusal of the request, as opposed to a failure of the service:
    /// refusals do not count against a breaker.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            OrderError::Invalid(_)
                | OrderError::UnknownNft(_)
                | OrderError::KeyReused(_)
                | OrderError::NoDatabase
        )
    }
}

/// The order tables of one schema.
#[derive(Debug, Clone)]
pub struct Orders {
    pool: Pool,
    schema: String,
}

impl Orders {
    /// Creates the order, outbox and consumer tables if missing.
    pub async fn init(pool: Pool, schema: &str) -> Result<Self, String> {
        let mut client = pool.get().await.map_err(|e| shared_types::pg::error_chain(&e))?;
        let tx = client.transaction().await.map_err(|e| shared_types::pg::error_chain(&e))?;
        let s = schema;
        tx.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock(hashtext('postlaunch-sandbox-orders-{s}'));
                 CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.orders (
                     id bigserial PRIMARY KEY,
                     idempotency_key text NOT NULL UNIQUE,
                     account text NOT NULL,
                     nft_id bigint NOT NULL,
                     collection_id bigint NOT NULL,
                     kind text NOT NULL CHECK (kind IN ('buy', 'list')),
                     price_wei numeric(78, 0) NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT clock_timestamp());
                 CREATE TABLE IF NOT EXISTS {s}.outbox (
                     id bigserial PRIMARY KEY,
                     event_id text NOT NULL UNIQUE,
                     order_id bigint NOT NULL REFERENCES {s}.orders (id),
                     routing_key text NOT NULL,
                     payload jsonb NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                     published_at timestamptz);
                 CREATE INDEX IF NOT EXISTS outbox_pending ON {s}.outbox (id) WHERE published_at IS NULL;
                 CREATE TABLE IF NOT EXISTS {s}.processed_events (
                     event_id text PRIMARY KEY,
                     order_id bigint NOT NULL,
                     deliveries integer NOT NULL,
                     first_consumed_at timestamptz NOT NULL DEFAULT clock_timestamp());
                 CREATE TABLE IF NOT EXISTS {s}.collection_sales (
                     collection_id bigint PRIMARY KEY,
                     orders bigint NOT NULL,
                     volume_wei numeric NOT NULL);"
            ))
            .await
            .map_err(|e| shared_types::pg::error_chain(&e))?;
        tx.commit().await.map_err(|e| shared_types::pg::error_chain(&e))?;
        Ok(Self { pool, schema: schema.to_owned() })
    }

    /// Connects to `url` (the consumer, which reads no catalog) and creates the
    /// tables if missing.
    pub async fn connect(
        url: &str,
        schema: &str,
        pool_size: u32,
    ) -> Result<Self, crate::catalog::ConnectError> {
        let (pool, target) =
            crate::catalog::connect_pool(url, pool_size, std::time::Duration::from_secs(5))?;
        Self::init(pool, schema).await.map_err(|reason| crate::catalog::ConnectError::Unreachable {
            target,
            reason: format!(
                "{reason}; is PostgreSQL running and does the database exist? check --database-url"
            ),
        })
    }

    /// The pool the tables are reached through.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Stores the order and its event in one transaction; a key seen before
    /// returns the order it placed (or [`OrderError::KeyReused`]).
    pub async fn place(&self, order: &NewOrder) -> Result<PlacedOrder, OrderError> {
        order.validate()?;
        let s = &self.schema;
        let mut client = self.pool.get().await.map_err(|e| OrderError::Database(e.to_string()))?;
        let tx = client.transaction().await.map_err(db)?;
        let collection: Option<i64> = tx
            .query_opt(
                &format!("SELECT collection_id FROM {s}.nfts WHERE id = $1"),
                &[&order.nft_id],
            )
            .await
            .map_err(db)?
            .map(|row| cell(&row, "nfts", 0))
            .transpose()
            .map_err(OrderError::Database)?;
        let Some(collection_id) = collection else {
            return Err(OrderError::UnknownNft(order.nft_id));
        };
        let inserted = tx
            .query_opt(
                &format!(
                    "INSERT INTO {s}.orders (idempotency_key, account, nft_id, collection_id, kind, price_wei)
                     VALUES ($1, $2, $3, $4, $5, $6::text::numeric)
                     ON CONFLICT (idempotency_key) DO NOTHING
                     RETURNING id, created_at::text"
                ),
                &[
                    &order.idempotency_key,
                    &order.account,
                    &order.nft_id,
                    &collection_id,
                    &order.kind.as_str(),
                    &order.price_wei,
                ],
            )
            .await
            .map_err(db)?;
        let Some(row) = inserted else {
            return self.replay(&tx, order).await;
        };
        let order_id: i64 = cell(&row, "orders", 0).map_err(OrderError::Database)?;
        let created_at: String = cell(&row, "orders", 1).map_err(OrderError::Database)?;
        let event_row = tx
            .query_one(
                &format!(
                    "WITH e AS (SELECT gen_random_uuid()::text AS id)
                     INSERT INTO {s}.outbox (event_id, order_id, routing_key, payload)
                     SELECT e.id, $1::bigint, 'order.created', jsonb_build_object(
                         'event_id', e.id, 'type', 'order.created', 'order_id', $1::bigint,
                         'collection_id', $2::bigint, 'nft_id', $3::bigint, 'kind', $4::text,
                         'account', $5::text, 'price_wei', $6::text, 'created_at', $7::text)
                     FROM e RETURNING event_id"
                ),
                &[
                    &order_id,
                    &collection_id,
                    &order.nft_id,
                    &order.kind.as_str(),
                    &order.account,
                    &order.price_wei,
                    &created_at,
                ],
            )
            .await
            .map_err(db)?;
        let event_id: String = cell(&event_row, "outbox", 0).map_err(OrderError::Database)?;
        tx.commit().await.map_err(db)?;
        Ok(PlacedOrder { order_id, event_id, collection_id, replayed: false })
    }

    async fn replay(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        order: &NewOrder,
    ) -> Result<PlacedOrder, OrderError> {
        let s = &self.schema;
        let row = tx
            .query_one(
                &format!(
                    "SELECT o.id, o.account, o.nft_id, o.kind, o.price_wei::text, o.collection_id, e.event_id
                     FROM {s}.orders o JOIN {s}.outbox e ON e.order_id = o.id
                     WHERE o.idempotency_key = $1"
                ),
                &[&order.idempotency_key],
            )
            .await
            .map_err(db)?;
        let get = |index| cell::<String>(&row, "orders", index).map_err(OrderError::Database);
        let nft_id: i64 = cell(&row, "orders", 2).map_err(OrderError::Database)?;
        let same = get(1)? == order.account
            && nft_id == order.nft_id
            && get(3)? == order.kind.as_str()
            && get(4)? == order.price_wei;
        if !same {
            return Err(OrderError::KeyReused(order.idempotency_key.clone()));
        }
        Ok(PlacedOrder {
            order_id: cell(&row, "orders", 0).map_err(OrderError::Database)?,
            event_id: get(6)?,
            collection_id: cell(&row, "orders", 5).map_err(OrderError::Database)?,
            replayed: true,
        })
    }

    /// Events not yet confirmed by RabbitMQ.
    pub async fn pending(&self) -> Result<i64, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let s = &self.schema;
        let row = client
            .query_one(&format!("SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL"), &[])
            .await
            .map_err(|e| e.to_string())?;
        cell(&row, "outbox", 0)
    }
}

/// Column `index` of a row of `table`; a type mismatch is an error naming both.
pub(crate) fn cell<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    table: &str,
    index: usize,
) -> Result<T, String> {
    row.try_get(index).map_err(|e| {
        let name = row.columns().get(index).map_or("?", |c| c.name());
        format!("{table}.{name} (column {index}): {e}")
    })
}

fn db(e: tokio_postgres::Error) -> OrderError {
    OrderError::Database(shared_types::pg::error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(key: &str, price: &str) -> NewOrder {
        NewOrder {
            idempotency_key: key.to_owned(),
            account: "0xabc".to_owned(),
            nft_id: 1,
            kind: OrderKind::Buy,
            price_wei: price.to_owned(),
        }
    }

    #[test]
    fn keys_and_prices_are_checked_before_the_database() {
        assert!(order("k", "100").validate().is_ok());
        assert!(order("", "100").validate().is_err());
        assert!(order(&"k".repeat(201), "100").validate().is_err());
        assert!(order("k", "-1").validate().is_err());
        assert!(order("k", "1e18").validate().is_err());
        assert!(order("k", &"9".repeat(79)).validate().is_err());
    }
}
