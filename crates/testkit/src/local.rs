//! The services the machine starts before a session (PostgreSQL on 5432,
//! Redis on 6379): their URLs, unique names, and throw-away databases.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// Default URL of the machine's PostgreSQL.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Default URL of the machine's Redis.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Every [`TempDatabase`] name starts with this.
pub const TEMP_DATABASE_PREFIX: &str = "postlaunch_test_";

/// How long dropping a [`TempDatabase`] may take before it gives up.
const DROP_TIMEOUT: Duration = Duration::from_secs(15);

/// The machine's PostgreSQL: env `POSTLAUNCH_PG_URL`, else
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn local_postgres_url() -> String {
    std::env::var("POSTLAUNCH_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// The machine's Redis: env `POSTLAUNCH_REDIS_URL`, else `redis://127.0.0.1:6379`.
pub fn local_redis_url() -> String {
    std::env::var("POSTLAUNCH_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// A name no other test (in this or another process) is using now:
/// `<prefix><pid>_<counter>_<microseconds since the epoch>`, lower case.
/// Good for database names and Redis key namespaces.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    format!("{prefix}{}_{n}_{micros}", std::process::id()).to_lowercase()
}

/// A database created on the machine's PostgreSQL for one test, dropped
/// (`DROP DATABASE .. WITH (FORCE)`) when this value is dropped.
#[derive(Debug)]
pub struct TempDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TempDatabase {
    /// Creates `postlaunch_test_<unique>` on [`local_postgres_url`].
    pub async fn create() -> Result<TempDatabase> {
        let admin_url = local_postgres_url();
        let name = unique_name(TEMP_DATABASE_PREFIX);
        let client = crate::postgres::connect(&admin_url)
            .await
            .map_err(|err| with_local_hint(err, &admin_url))?;
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .await
            .map_err(|err| Error::pg(format!("CREATE DATABASE {name} on {admin_url}"), err))?;
        let url = with_database(&admin_url, &name);
        Ok(TempDatabase { name, url, admin_url })
    }

    /// Connection URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of this database.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TempDatabase {
    /// Drops the database from a fresh thread with its own runtime: this may
    /// run inside a tokio runtime, where blocking on a future would panic.
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        let joined = std::thread::Builder::new()
            .name("testkit-drop-db".to_owned())
            .spawn(move || drop_database(&admin_url, &name))
            .map(|handle| handle.join());
        match joined {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!("leaving database {}: {err}", self.name),
            Ok(Err(_)) => tracing::warn!("leaving database {}: drop thread panicked", self.name),
            Err(err) => {
                tracing::warn!("leaving database {}: cannot spawn thread: {err}", self.name)
            }
        }
    }
}

/// A database on [`local_postgres_url`] that stays (for a marketplace a
/// developer keeps running): created when missing; its URL.
pub async fn ensure_database(name: &str) -> Result<String> {
    let admin_url = local_postgres_url();
    let client = crate::postgres::connect(&admin_url)
        .await
        .map_err(|err| with_local_hint(err, &admin_url))?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|err| Error::pg(format!("looking for database {name} on {admin_url}"), err))?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await
            .map_err(|err| Error::pg(format!("CREATE DATABASE {name} on {admin_url}"), err))?;
    }
    Ok(with_database(&admin_url, name))
}

fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::io("cannot build a runtime to drop the database", err))?;
    runtime.block_on(async {
        let drop = async {
            let client = crate::postgres::connect(admin_url).await?;
            client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(name)
                ))
                .await
                .map_err(|err| Error::pg(format!("DROP DATABASE {name}"), err))
        };
        tokio::time::timeout(DROP_TIMEOUT, drop).await.map_err(|_| Error::Timeout {
            what: format!("DROP DATABASE {name}"),
            after: DROP_TIMEOUT,
            hint: "is the local PostgreSQL responsive?".to_owned(),
        })?
    })
}

fn with_local_hint(err: Error, url: &str) -> Error {
    match err {
        Error::Postgres { source, .. } => Error::Postgres {
            what: format!(
                "cannot connect to the local PostgreSQL at {url}: run scripts/install-deps.sh \
                 (it starts it) or set POSTLAUNCH_PG_URL"
            ),
            source,
        },
        other => other,
    }
}

/// `"name"` with embedded quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `url` with its database (the path) replaced by `database`, query kept.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// A temporary directory the PostgreSQL server user can write to (chowned to
/// `postgres` when running as root): for WAL archives and backup repositories
/// that a server's `archive_command` writes into.
pub fn postgres_writable_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|err| Error::io(format!("cannot create a temp dir {prefix}*"), err))?;
    if crate::unix_user::is_root() {
        crate::unix_user::chown_to(dir.path(), "postgres")?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:1?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:1/db?a=b", "x"), "postgres://u@h:1/x?a=b");
    }

    #[test]
    fn unique_names_differ_and_are_lower_case() {
        let a = unique_name("Prefix_");
        let b = unique_name("Prefix_");
        assert_ne!(a, b);
        assert!(a.starts_with("prefix_"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
    }
}
