//! The one place reorg-sim drops anything: `run` (the reference indexer)
//! and `bench` start from an empty schema of the reference indexer's
//! tables. The reset refuses `public` and the system schemas by name,
//! refuses a schema holding anything but the reference indexer's tables,
//! and never cascades: it drops those tables and then the schema with
//! `RESTRICT`, so PostgreSQL refuses whatever else depends on them (a view
//! in another schema) instead of dropping it. [`SchemaReset::plan`] is what
//! `--dry-run` prints.

use std::fmt;

use tokio_postgres::Client;

use crate::indexer::store::{self, TABLES};

/// Why a schema may not be reset.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The schema is not one reorg-sim may drop (exit 2).
    #[error("{0}")]
    Refused(String),
    /// PostgreSQL failed (exit 3).
    #[error("{0}")]
    Db(String),
}

/// Refuses `schema` before any connection: it must be a plain lower-case
/// identifier and neither `public` (applications' tables live there) nor a
/// system schema (`pg_*`, `information_schema`).
pub fn check_droppable(schema: &str) -> Result<(), ResetError> {
    let lower = schema.to_ascii_lowercase();
    if lower == "public" || lower == "information_schema" || lower.starts_with("pg_") {
        return Err(ResetError::Refused(format!(
            "refusing to reset schema {schema:?}: public and system schemas are never dropped; \
             pass a schema of its own to --schema (default reorg_sim)"
        )));
    }
    if !store::valid_schema(schema) {
        return Err(ResetError::Refused(format!(
            "invalid --schema {schema:?}: use lower-case letters, digits and _"
        )));
    }
    Ok(())
}

/// What a reset of one schema will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReset {
    /// The schema.
    pub schema: String,
    /// Where (host:port/dbname, no password).
    pub target: String,
    /// The reference indexer's tables it holds now (dropped with their rows).
    pub tables: Vec<String>,
    /// Whether the schema exists.
    pub exists: bool,
}

impl SchemaReset {
    /// Inspects `schema` and returns the plan, or refuses: a public or
    /// system schema, or one holding relations that are not the reference
    /// indexer's tables (named in the error).
    pub async fn plan(client: &Client, target: &str, schema: &str) -> Result<Self, ResetError> {
        check_droppable(schema)?;
        let db = |e: tokio_postgres::Error| {
            ResetError::Db(format!("cannot inspect schema {schema} on {target}: {e}"))
        };
        let exists = client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await
            .map_err(db)?
            .is_some();
        let rows = client
            .query(
                "SELECT c.relname::text AS name, c.relkind::text AS kind FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
                &[&schema],
            )
            .await
            .map_err(db)?;
        let mut tables = Vec::new();
        let mut foreign = Vec::new();
        for row in &rows {
            let column = |name: &str| {
                row.try_get::<_, String>(name).map_err(|e| {
                    ResetError::Db(format!("pg_class column {name} of schema {schema}: {e}"))
                })
            };
            let (name, kind) = (column("name")?, column("kind")?);
            if kind == "r" && TABLES.contains(&name.as_str()) {
                tables.push(name);
            } else {
                foreign.push(name);
            }
        }
        if !foreign.is_empty() {
            return Err(ResetError::Refused(format!(
                "refusing to reset schema {schema} on {target}: it holds {} that the reference \
                 indexer did not create ({}); pass a schema of its own to --schema",
                if foreign.len() == 1 { "a relation" } else { "relations" },
                foreign.join(", ")
            )));
        }
        Ok(SchemaReset { schema: schema.to_owned(), target: target.to_owned(), tables, exists })
    }

    /// The statements, in order.
    pub fn statements(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.tables.is_empty() {
            let list: Vec<String> = TABLES
                .iter()
                .filter(|t| self.tables.iter().any(|have| have == *t))
                .map(|t| format!("{}.{t}", self.schema))
                .collect();
            out.push(format!("DROP TABLE IF EXISTS {} RESTRICT", list.join(", ")));
        }
        if self.exists {
            out.push(format!("DROP SCHEMA IF EXISTS {} RESTRICT", self.schema));
        }
        out
    }

    /// Runs the statements in one transaction; PostgreSQL's refusal
    /// (something else depends on the tables) is a refusal, nothing dropped.
    pub async fn apply(&self, client: &mut Client) -> Result<(), ResetError> {
        let fail = |e: tokio_postgres::Error| {
            let refused =
                e.code() == Some(&tokio_postgres::error::SqlState::DEPENDENT_OBJECTS_STILL_EXIST);
            let text = match e.as_db_error() {
                Some(db) => match db.detail() {
                    Some(detail) => format!("{}: {detail}", db.message()),
                    None => db.message().to_owned(),
                },
                None => e.to_string(),
            };
            let message = format!("cannot reset schema {} on {}: {text}", self.schema, self.target);
            if refused {
                ResetError::Refused(format!("{message}; nothing was dropped"))
            } else {
                ResetError::Db(message)
            }
        };
        let tx = client.transaction().await.map_err(fail)?;
        for statement in self.statements() {
            tx.batch_execute(&statement).await.map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(())
    }
}

impl fmt::Display for SchemaReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.exists {
            return write!(
                f,
                "schema {} does not exist on {}: nothing to drop",
                self.schema, self.target
            );
        }
        write!(f, "on {}: ", self.target)?;
        for (i, statement) in self.statements().iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{statement}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_system_schemas_are_refused_by_name() {
        for schema in ["public", "PUBLIC", "pg_catalog", "pg_toast", "information_schema"] {
            assert!(matches!(check_droppable(schema), Err(ResetError::Refused(_))), "{schema}");
        }
        assert!(matches!(check_droppable("x; DROP"), Err(ResetError::Refused(_))));
        assert!(check_droppable("reorg_sim").is_ok());
    }

    #[test]
    fn the_statements_drop_only_the_reference_tables_and_never_cascade() {
        let plan = SchemaReset {
            schema: "reorg_sim".to_owned(),
            target: "127.0.0.1:5432/db".to_owned(),
            tables: vec!["blocks".to_owned(), "affected_nfts".to_owned(), "reorgs".to_owned()],
            exists: true,
        };
        assert_eq!(
            plan.statements(),
            [
                "DROP TABLE IF EXISTS reorg_sim.affected_nfts, reorg_sim.reorgs, reorg_sim.blocks RESTRICT",
                "DROP SCHEMA IF EXISTS reorg_sim RESTRICT",
            ]
        );
        assert!(!plan.to_string().contains("CASCADE"));
    }
}
