//! The reference indexer's PostgreSQL schema and the statements that change
//! it. Every change runs inside a transaction the caller commits.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{Address, B256, U256};
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, GenericClient, Row, Transaction};

use crate::erc1155::Erc1155Event;
use crate::node::{HeaderInfo, NodeLog};
use crate::oracle::TokenKey;

/// The tables, created if missing (`{s}` is the schema).
const SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.blocks (
    number int8 PRIMARY KEY, hash bytea NOT NULL UNIQUE, parent_hash bytea NOT NULL, timestamp int8 NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.events (
    block_hash bytea NOT NULL, log_index int4 NOT NULL, block_number int8 NOT NULL, tx_hash bytea NOT NULL,
    contract bytea NOT NULL, kind text NOT NULL, operator bytea, from_addr bytea, to_addr bytea,
    token_ids text NOT NULL, amounts text NOT NULL, uri text,
    PRIMARY KEY (block_hash, log_index));
CREATE INDEX IF NOT EXISTS events_block_number ON {s}.events (block_number);
CREATE INDEX IF NOT EXISTS events_contract ON {s}.events (contract);
CREATE TABLE IF NOT EXISTS {s}.balances (
    contract bytea NOT NULL, token_id numeric(78,0) NOT NULL, owner bytea NOT NULL, amount numeric(78,0) NOT NULL,
    PRIMARY KEY (contract, token_id, owner));
CREATE TABLE IF NOT EXISTS {s}.collections (
    contract bytea PRIMARY KEY, holders int8 NOT NULL, supply numeric(78,0) NOT NULL, transfers int8 NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.checkpoint (
    id int4 PRIMARY KEY CHECK (id = 1), number int8 NOT NULL, hash bytea NOT NULL,
    halted bool NOT NULL DEFAULT false, halt_reason text, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {s}.reorgs (
    id bigserial PRIMARY KEY, detected_at_block int8 NOT NULL, common_ancestor int8 NOT NULL, depth int8 NOT NULL,
    old_head bytea NOT NULL, new_head bytea NOT NULL, detected_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {s}.affected_nfts (
    reorg_id int8 NOT NULL REFERENCES {s}.reorgs (id), contract bytea NOT NULL, token_id numeric(78,0) NOT NULL,
    notified bool NOT NULL DEFAULT false, PRIMARY KEY (reorg_id, contract, token_id));
";

/// The reference indexer's tables, in an order `DROP TABLE` accepts
/// (`affected_nfts` references `reorgs`).
pub const TABLES: [&str; 7] =
    ["affected_nfts", "reorgs", "checkpoint", "collections", "balances", "events", "blocks"];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The statement failed.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// A row held something the indexer's schema does not allow (a table
    /// changed by hand, or another program's table of the same name).
    #[error("{table} column {column}: {detail}")]
    Column {
        /// `schema.table`.
        table: String,
        /// The column.
        column: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Column `column` of a row of `schema.table`, or an error naming both.
fn column<'a, T: FromSql<'a>>(
    row: &'a Row,
    schema: &str,
    table: &str,
    column: &'static str,
) -> Result<T, StoreError> {
    row.try_get(column).map_err(|e| StoreError::Column {
        table: format!("{schema}.{table}"),
        column,
        detail: match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    })
}

/// A non-negative int8 column as `u64`.
fn column_u64(row: &Row, schema: &str, table: &str, name: &'static str) -> Result<u64, StoreError> {
    let value: i64 = column(row, schema, table, name)?;
    u64::try_from(value).map_err(|_| StoreError::Column {
        table: format!("{schema}.{table}"),
        column: name,
        detail: format!("{value} is negative"),
    })
}

/// A bytea column of exactly `N` bytes (a hash or an address).
fn column_bytes<const N: usize>(
    bytes: &[u8],
    schema: &str,
    table: &str,
    name: &'static str,
) -> Result<[u8; N], StoreError> {
    <[u8; N]>::try_from(bytes).map_err(|_| StoreError::Column {
        table: format!("{schema}.{table}"),
        column: name,
        detail: format!("{} bytes where {N} belong", bytes.len()),
    })
}

/// A block fetched from the node with its ERC-1155 logs.
#[derive(Debug, Clone)]
pub struct FetchedBlock {
    /// Header.
    pub header: HeaderInfo,
    /// Logs, in log-index order.
    pub logs: Vec<NodeLog>,
}

/// The indexer's last committed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Number.
    pub number: u64,
    /// Hash.
    pub hash: B256,
    /// Set when a reorg beyond the finality window stopped the indexer.
    pub halted: Option<String>,
}

/// Is `schema` a plain lower-case identifier (safe to put in SQL)?
pub fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Creates the schema and tables if missing.
pub async fn migrate(client: &Client, schema: &str) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&SCHEMA_SQL.replace("{s}", schema)).await
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Reads the checkpoint.
pub async fn checkpoint(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Option<Checkpoint>, StoreError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT number, hash, halted, halt_reason FROM {schema}.checkpoint WHERE id = 1"
            ),
            &[],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    let t = "checkpoint";
    let hash: Vec<u8> = column(&r, schema, t, "hash")?;
    let halted: bool = column(&r, schema, t, "halted")?;
    Ok(Some(Checkpoint {
        number: column_u64(&r, schema, t, "number")?,
        hash: B256::from(column_bytes::<32>(&hash, schema, t, "hash")?),
        halted: if halted {
            Some(column::<Option<String>>(&r, schema, t, "halt_reason")?.unwrap_or_default())
        } else {
            None
        },
    }))
}

/// The stored hash of block `number`.
pub async fn stored_hash(
    client: &impl GenericClient,
    schema: &str,
    number: u64,
) -> Result<Option<B256>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT hash FROM {schema}.blocks WHERE number = $1"),
            &[&to_i64(number)],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    let hash: Vec<u8> = column(&r, schema, "blocks", "hash")?;
    Ok(Some(B256::from(column_bytes::<32>(&hash, schema, "blocks", "hash")?)))
}

/// Marks the indexer halted; the indexed data is left as it is.
pub async fn halt(
    client: &Client,
    schema: &str,
    reason: &str,
) -> Result<(), tokio_postgres::Error> {
    client.execute(&format!("UPDATE {schema}.checkpoint SET halted = true, halt_reason = $1, updated_at = now() WHERE id = 1"), &[&reason]).await?;
    Ok(())
}

/// Clears a halt (after an operator repaired or re-synced the data).
pub async fn clear_halt(client: &Client, schema: &str) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "UPDATE {schema}.checkpoint SET halted = false, halt_reason = NULL WHERE id = 1"
            ),
            &[],
        )
        .await
}

/// Columns of the events insert (one entry per event), for `unnest`.
#[derive(Default)]
struct EventColumns(
    Vec<Vec<u8>>,
    Vec<i32>,
    Vec<i64>,
    Vec<Vec<u8>>,
    Vec<Vec<u8>>,
    Vec<&'static str>,
);
/// Operator, from, to (absent for `URI`).
#[derive(Default)]
struct PartyColumns(Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>);
/// Token ids, amounts, URI.
#[derive(Default)]
struct ValueColumns(Vec<String>, Vec<String>, Vec<Option<String>>);

type BalanceDeltas = BTreeMap<(Address, U256, Address), (U256, U256)>;

fn add_delta(deltas: &mut BalanceDeltas, contract: Address, event: &Erc1155Event, sign: bool) {
    if let Erc1155Event::Transfer { from, to, ids, values, .. } = event {
        for (id, value) in ids.iter().zip(values) {
            for (owner, credit) in [(*from, !sign), (*to, sign)] {
                if owner == Address::ZERO {
                    continue;
                }
                let slot = deltas.entry((contract, *id, owner)).or_default();
                if credit {
                    slot.0 = slot.0.saturating_add(*value);
                } else {
                    slot.1 = slot.1.saturating_add(*value);
                }
            }
        }
    }
}

async fn apply_deltas(
    tx: &Transaction<'_>,
    schema: &str,
    deltas: &BalanceDeltas,
) -> Result<(), tokio_postgres::Error> {
    let mut contracts = Vec::new();
    let mut ids = Vec::new();
    let mut owners = Vec::new();
    let mut amounts = Vec::new();
    for ((contract, id, owner), (plus, minus)) in deltas {
        let net = if plus >= minus {
            (*plus - *minus).to_string()
        } else {
            format!("-{}", *minus - *plus)
        };
        contracts.push(contract.to_vec());
        ids.push(id.to_string());
        owners.push(owner.to_vec());
        amounts.push(net);
    }
    tx.execute(
        &format!(
            "INSERT INTO {schema}.balances AS b (contract, token_id, owner, amount)
             SELECT c, t::numeric, o, d::numeric FROM unnest($1::bytea[], $2::text[], $3::bytea[], $4::text[]) AS x(c, t, o, d)
             ON CONFLICT (contract, token_id, owner) DO UPDATE SET amount = b.amount + excluded.amount"
        ),
        &[&contracts, &ids, &owners, &amounts],
    )
    .await?;
    tx.execute(&format!("DELETE FROM {schema}.balances WHERE amount = 0"), &[]).await?;
    Ok(())
}

/// Recomputes the statistics of `contracts` from balances and events.
pub async fn refresh_collections(
    tx: &Transaction<'_>,
    schema: &str,
    contracts: &BTreeSet<Address>,
) -> Result<(), tokio_postgres::Error> {
    let list: Vec<Vec<u8>> = contracts.iter().map(|c| c.to_vec()).collect();
    tx.execute(
        &format!(
            "INSERT INTO {schema}.collections AS c (contract, holders, supply, transfers)
             SELECT k.contract,
                    (SELECT count(DISTINCT owner) FROM {schema}.balances b WHERE b.contract = k.contract AND b.amount > 0),
                    (SELECT coalesce(sum(amount), 0) FROM {schema}.balances b WHERE b.contract = k.contract),
                    (SELECT count(*) FROM {schema}.events e WHERE e.contract = k.contract AND e.kind <> 'uri')
             FROM unnest($1::bytea[]) AS k(contract)
             ON CONFLICT (contract) DO UPDATE SET holders = excluded.holders, supply = excluded.supply, transfers = excluded.transfers"
        ),
        &[&list],
    )
    .await?;
    tx.execute(&format!("DELETE FROM {schema}.collections WHERE transfers = 0"), &[]).await?;
    Ok(())
}

fn join(values: &[U256]) -> String {
    values.iter().map(U256::to_string).collect::<Vec<_>>().join(",")
}

fn split(text: &str) -> Vec<U256> {
    text.split(',').filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect()
}

/// Inserts `blocks` with their events and balance changes and moves the
/// checkpoint to the last one. `tolerate_duplicates` is the faulty mode's
/// "upsert and hope" (a correct indexer never needs it). Returns the
/// collections touched and the number of events stored.
pub async fn apply_blocks(
    tx: &Transaction<'_>,
    schema: &str,
    blocks: &[FetchedBlock],
    tolerate_duplicates: bool,
) -> Result<(BTreeSet<Address>, u64), tokio_postgres::Error> {
    let Some(last) = blocks.last() else {
        return Ok((BTreeSet::new(), 0));
    };
    let numbers: Vec<i64> = blocks.iter().map(|b| to_i64(b.header.number)).collect();
    let hashes: Vec<Vec<u8>> = blocks.iter().map(|b| b.header.hash.to_vec()).collect();
    let parents: Vec<Vec<u8>> = blocks.iter().map(|b| b.header.parent_hash.to_vec()).collect();
    let times: Vec<i64> = blocks.iter().map(|b| to_i64(b.header.timestamp)).collect();
    let on_conflict = if tolerate_duplicates {
        "ON CONFLICT (number) DO UPDATE SET hash = excluded.hash, parent_hash = excluded.parent_hash"
    } else {
        ""
    };
    tx.execute(
        &format!("INSERT INTO {schema}.blocks (number, hash, parent_hash, timestamp) SELECT * FROM unnest($1::int8[], $2::bytea[], $3::bytea[], $4::int8[]) {on_conflict}"),
        &[&numbers, &hashes, &parents, &times],
    )
    .await?;

    let mut cols = EventColumns::default();
    let mut people = PartyColumns::default();
    let mut values = ValueColumns::default();
    let mut deltas = BalanceDeltas::new();
    let mut touched = BTreeSet::new();
    for block in blocks {
        for log in &block.logs {
            let Some(event) = Erc1155Event::decode(&log.topics, &log.data) else { continue };
            cols.0.push(block.header.hash.to_vec());
            cols.1.push(i32::try_from(log.log_index).unwrap_or(i32::MAX));
            cols.2.push(to_i64(block.header.number));
            cols.3.push(log.transaction_hash.to_vec());
            cols.4.push(log.address.to_vec());
            touched.insert(log.address);
            add_delta(&mut deltas, log.address, &event, true);
            match &event {
                Erc1155Event::Transfer { operator, from, to, ids, values: amounts, batch } => {
                    cols.5.push(if *batch { "batch" } else { "single" });
                    people.0.push(Some(operator.to_vec()));
                    people.1.push(Some(from.to_vec()));
                    people.2.push(Some(to.to_vec()));
                    values.0.push(join(ids));
                    values.1.push(join(amounts));
                    values.2.push(None);
                }
                Erc1155Event::Uri { id, value } => {
                    cols.5.push("uri");
                    people.0.push(None);
                    people.1.push(None);
                    people.2.push(None);
                    values.0.push(id.to_string());
                    values.1.push(String::new());
                    values.2.push(Some(value.clone()));
                }
            }
        }
    }
    let count = cols.0.len() as u64;
    if count > 0 {
        let on_conflict = if tolerate_duplicates { "ON CONFLICT DO NOTHING" } else { "" };
        tx.execute(
            &format!(
                "INSERT INTO {schema}.events (block_hash, log_index, block_number, tx_hash, contract, kind, operator, from_addr, to_addr, token_ids, amounts, uri)
                 SELECT * FROM unnest($1::bytea[], $2::int4[], $3::int8[], $4::bytea[], $5::bytea[], $6::text[], $7::bytea[], $8::bytea[], $9::bytea[], $10::text[], $11::text[], $12::text[]) {on_conflict}"
            ),
            &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5, &people.0, &people.1, &people.2, &values.0, &values.1, &values.2],
        )
        .await?;
        apply_deltas(tx, schema, &deltas).await?;
    }
    set_checkpoint(tx, schema, last.header.number, last.header.hash).await?;
    Ok((touched, count))
}

async fn set_checkpoint(
    tx: &Transaction<'_>,
    schema: &str,
    number: u64,
    hash: B256,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &format!(
            "INSERT INTO {schema}.checkpoint (id, number, hash) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET number = excluded.number, hash = excluded.hash, updated_at = now()"
        ),
        &[&to_i64(number), &hash.to_vec()],
    )
    .await?;
    Ok(())
}

/// What a rollback undid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollback {
    /// Collections whose statistics changed.
    pub touched: BTreeSet<Address>,
    /// NFTs with events in the rolled-back blocks.
    pub affected: BTreeSet<TokenKey>,
    /// Events removed.
    pub events: u64,
}

/// Undoes every block above `ancestor`: reverses balance changes, deletes
/// events and blocks, records the reorg and the NFTs it affected.
pub async fn rollback(
    tx: &Transaction<'_>,
    schema: &str,
    ancestor: u64,
    detected_at: u64,
    old_head: (u64, B256),
    new_head: B256,
) -> Result<Rollback, StoreError> {
    let rows = tx
        .query(&format!("SELECT contract, kind, from_addr, to_addr, token_ids, amounts FROM {schema}.events WHERE block_number > $1"), &[&to_i64(ancestor)])
        .await?;
    let mut out = Rollback::default();
    let mut deltas = BalanceDeltas::new();
    let t = "events";
    for row in &rows {
        let contract: Vec<u8> = column(row, schema, t, "contract")?;
        let contract = Address::from(column_bytes::<20>(&contract, schema, t, "contract")?);
        let kind: String = column(row, schema, t, "kind")?;
        let ids = split(column(row, schema, t, "token_ids")?);
        for id in &ids {
            out.affected.insert((contract, *id));
        }
        out.touched.insert(contract);
        if kind != "uri" {
            let addr = |name: &'static str| -> Result<Address, StoreError> {
                match column::<Option<Vec<u8>>>(row, schema, t, name)? {
                    Some(bytes) => Ok(Address::from(column_bytes::<20>(&bytes, schema, t, name)?)),
                    None => Ok(Address::ZERO),
                }
            };
            let event = Erc1155Event::Transfer {
                operator: Address::ZERO,
                from: addr("from_addr")?,
                to: addr("to_addr")?,
                ids,
                values: split(column(row, schema, t, "amounts")?),
                batch: false,
            };
            add_delta(&mut deltas, contract, &event, false);
        }
    }
    out.events = rows.len() as u64;
    apply_deltas(tx, schema, &deltas).await?;
    tx.execute(
        &format!("DELETE FROM {schema}.events WHERE block_number > $1"),
        &[&to_i64(ancestor)],
    )
    .await?;
    tx.execute(&format!("DELETE FROM {schema}.blocks WHERE number > $1"), &[&to_i64(ancestor)])
        .await?;
    let depth = old_head.0.saturating_sub(ancestor);
    let row = tx
        .query_one(
            &format!("INSERT INTO {schema}.reorgs (detected_at_block, common_ancestor, depth, old_head, new_head) VALUES ($1, $2, $3, $4, $5) RETURNING id"),
            &[&to_i64(detected_at), &to_i64(ancestor), &to_i64(depth), &old_head.1.to_vec(), &new_head.to_vec()],
        )
        .await?;
    let reorg_id: i64 = column(&row, schema, "reorgs", "id")?;
    let contracts: Vec<Vec<u8>> = out.affected.iter().map(|(c, _)| c.to_vec()).collect();
    let ids: Vec<String> = out.affected.iter().map(|(_, id)| id.to_string()).collect();
    tx.execute(
        &format!("INSERT INTO {schema}.affected_nfts (reorg_id, contract, token_id) SELECT $1, c, t::numeric FROM unnest($2::bytea[], $3::text[]) AS x(c, t)"),
        &[&reorg_id, &contracts, &ids],
    )
    .await?;
    Ok(out)
}
