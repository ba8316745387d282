//! PostgreSQL: physical base backups streamed from `pg_basebackup`, WAL
//! archiving (`wal-push` / `wal-fetch`), restores and point-in-time restores
//! into scratch clusters, per-table logical backups, and the row counts used
//! as sanity checks.

pub mod base;
pub mod logical;
pub mod scratch;
pub mod tools;
pub mod wal;

use std::time::Duration;

use tokio_postgres::Client;

use shared_types::redact_url;

use crate::error::{AgentError, Result};
use crate::manifest::TableSnapshot;

/// Rows in the sample whose checksum is recorded.
pub const SAMPLE_ROWS: i64 = 1000;

/// Connects as libpq would: `sslmode` (disable/prefer/require/verify-ca/
/// verify-full) and `sslrootcert` in the URL are honoured (shared-types'
/// `pg`); the default `prefer` encrypts when the server offers TLS.
pub async fn connect(url: &str) -> Result<Client> {
    let options = shared_types::pg::PgConnectOptions::parse(url)
        .map_err(|e| AgentError::Usage(format!("--pg-url {}: {e}", redact_url(url))))?;
    options
        .connect(Duration::from_secs(10))
        .await
        .map_err(|e| AgentError::CouldNotRun(format!("{e}: is the server running? check --pg-url")))
}

/// Column `index` (named `column`) of a row that `query` returned, as `T`.
/// What a database returns is outside input: a type or NULL it did not
/// promise is an error naming the query and the column, never a panic.
pub fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
    query: &str,
    column: &str,
) -> Result<T> {
    row.try_get(index).map_err(|e| {
        AgentError::CouldNotRun(format!("{query}: cannot read column {column} (#{index}): {e}"))
    })
}

/// The server's clock (`clock_timestamp()`): the clock its commit
/// timestamps come from, so an RPO measured against it uses one clock.
pub async fn server_now(client: &Client) -> Result<shared_types::Timestamp> {
    let query = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";
    let row = client
        .query_one(query, &[])
        .await
        .map_err(|e| AgentError::CouldNotRun(format!("reading the server's clock: {e}")))?;
    Ok(shared_types::Timestamp::from_unix_millis(column::<i64>(&row, 0, query, "now_ms")?))
}

/// `"name"` with quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` -> `"schema"."table"`; a bare name is in `public`.
pub fn qualified(table: &str) -> String {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// `schema.table` with the schema made explicit.
pub fn normalize_table(table: &str) -> String {
    if table.contains('.') { table.to_owned() } else { format!("public.{table}") }
}

/// Rows in `table` (`schema.table`) of the database at `url`, `None` if it does not exist.
pub async fn existing_rows(url: &str, table: &str) -> Result<Option<i64>> {
    let client = connect(url).await?;
    let table = normalize_table(table);
    let exists: Option<String> = column(
        &client
            .query_one("SELECT to_regclass($1)::text", &[&table])
            .await
            .map_err(|e| AgentError::CouldNotRun(format!("looking up {table}: {e}")))?,
        0,
        &format!("looking up {table}"),
        "to_regclass",
    )?;
    match exists {
        None => Ok(None),
        Some(name) => {
            let row = client
                .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                .await
                .map_err(|e| AgentError::CouldNotRun(format!("counting {table}: {e}")))?;
            column(&row, 0, &format!("counting {table}"), "count").map(Some)
        }
    }
}

/// Foreign keys between user tables: (referencing, referenced), as `schema.table`.
pub async fn foreign_keys(client: &Client) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT sn.nspname || '.' || s.relname, tn.nspname || '.' || t.relname \
             FROM pg_constraint c \
             JOIN pg_class s ON s.oid = c.conrelid JOIN pg_namespace sn ON sn.oid = s.relnamespace \
             JOIN pg_class t ON t.oid = c.confrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace \
             WHERE c.contype = 'f' ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| AgentError::CouldNotRun(format!("listing foreign keys: {e}")))?;
    let what = "listing foreign keys (pg_constraint)";
    rows.iter()
        .map(|r| Ok((column(r, 0, what, "referencing")?, column(r, 1, what, "referenced")?)))
        .collect()
}

/// Every ordinary user table as `schema.table`, sorted.
pub async fn user_tables(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| AgentError::CouldNotRun(format!("listing tables: {e}")))?;
    rows.iter().map(|r| column(r, 0, "listing tables (pg_tables)", "table")).collect()
}

/// Row count and the SHA-256 of the first [`SAMPLE_ROWS`] rows in
/// primary-key order (no checksum for a table without a primary key).
pub async fn snapshot_table(client: &Client, table: &str) -> Result<TableSnapshot> {
    let name = normalize_table(table);
    let q = qualified(&name);
    let err = |what: &str, e: tokio_postgres::Error| {
        AgentError::CouldNotRun(format!(
            "{what} of {name}: {e} (does the table exist? check --key-table)"
        ))
    };
    let rows: i64 = column(
        &client
            .query_one(&format!("SELECT count(*) FROM {q}"), &[])
            .await
            .map_err(|e| err("counting rows", e))?,
        0,
        &format!("counting rows of {name}"),
        "count",
    )?;
    let pk: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&q],
        )
        .await
        .map_err(|e| err("reading the primary key", e))?
        .iter()
        .map(|r| column(r, 0, &format!("reading the primary key of {name} (pg_index)"), "attname"))
        .collect::<Result<_>>()?;
    let sample_sha256 = if pk.is_empty() {
        None
    } else {
        let order: Vec<String> = pk.iter().map(|c| quote_ident(c)).collect();
        let sql = format!(
            "SELECT encode(sha256(convert_to(coalesce(string_agg(r, E'\\n' ORDER BY n), ''), 'UTF8')), 'hex') \
             FROM (SELECT t::text AS r, row_number() OVER (ORDER BY {o}) AS n FROM {q} t ORDER BY {o} LIMIT {SAMPLE_ROWS}) s",
            o = order.join(", ")
        );
        let row = client.query_one(&sql, &[]).await.map_err(|e| err("checksumming rows", e))?;
        Some(column(&row, 0, &format!("checksumming rows of {name}"), "sha256")?)
    };
    Ok(TableSnapshot { name, rows, sample_sha256, references: Vec::new() })
}

/// Compares snapshots taken at backup time with a restored database: one
/// line per problem, empty when everything matches.
pub async fn compare_tables(client: &Client, expected: &[TableSnapshot]) -> Vec<String> {
    let mut problems = Vec::new();
    for want in expected {
        match snapshot_table(client, &want.name).await {
            Ok(got) => {
                if got.rows != want.rows {
                    problems.push(format!(
                        "{}: {} rows restored, {} at backup time",
                        want.name, got.rows, want.rows
                    ));
                } else if want.sample_sha256.is_some() && got.sample_sha256 != want.sample_sha256 {
                    problems.push(format!(
                        "{}: the sampled rows differ from those at backup time",
                        want.name
                    ));
                }
            }
            Err(e) => problems.push(format!("{}: {e}", want.name)),
        }
    }
    problems
}

/// `host:port/db` of a URL, for reports.
pub fn display_target(url: &str) -> String {
    let redacted = redact_url(url);
    let rest = redacted.split_once("://").map_or(redacted.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('?').next().unwrap_or(rest).to_owned()
}
