//! Per-table logical backups (`pg_dump -Fc`, one object per table) for the
//! "restore one table" case, and their restore with `pg_restore`.
//!
//! Row counts and checksums are taken in a repeatable-read transaction whose
//! snapshot `pg_dump --snapshot` shares, so they describe exactly what was
//! dumped.

use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use shared_types::Timestamp;
use tokio::io::AsyncReadExt;

use super::tools::{client_command, tail};
use super::{
    column, connect, display_target, foreign_keys, normalize_table, snapshot_table, user_tables,
};
use crate::error::{AgentError, Result};
use crate::manifest::{
    BACKUPS_PREFIX, BackupKind, BackupManifest, MANIFEST_FORMAT, mark_in_progress, new_backup_id,
    publish,
};
use crate::object::{ObjectEntry, UploadSettings, download_to, upload_stream};
use crate::repository::Repository;

/// Backs up `tables` (`schema.table`; empty = every user table) of the
/// database at `url`, one `pg_dump -Fc` per table, from one snapshot.
pub async fn backup(
    repo: &Repository,
    url: &str,
    tables: &[String],
    upload: &UploadSettings,
) -> Result<BackupManifest> {
    let client = connect(url).await?;
    let tables: Vec<String> = if tables.is_empty() {
        user_tables(&client).await?
    } else {
        tables.iter().map(|t| normalize_table(t)).collect()
    };
    if tables.is_empty() {
        return Err(AgentError::Usage(format!(
            "{} has no user tables to back up",
            display_target(url)
        )));
    }
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| AgentError::CouldNotRun(format!("starting the snapshot transaction: {e}")))?;
    let snapshot: String = column(
        &client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|e| AgentError::CouldNotRun(format!("pg_export_snapshot(): {e}")))?,
        0,
        "SELECT pg_export_snapshot()",
        "pg_export_snapshot",
    )?;
    let keys = foreign_keys(&client).await?;
    let mut snapshots = Vec::new();
    for table in &tables {
        let mut snapshot = snapshot_table(&client, table).await?;
        snapshot.references = keys
            .iter()
            .filter(|(from, to)| from == table && to != table)
            .map(|(_, to)| to.clone())
            .collect();
        snapshots.push(snapshot);
    }
    let started_at = Timestamp::now();
    let id = new_backup_id(&started_at, BackupKind::PgTable);
    mark_in_progress(repo, &id, &started_at).await?;
    let mut objects = Vec::new();
    for table in &tables {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let pattern =
            format!("\"{}\".\"{}\"", schema.replace('"', "\"\""), name.replace('"', "\"\""));
        let (mut cmd, url_no_password) = client_command("pg_dump", url)?;
        cmd.args([
            "-F",
            "c",
            "-Z",
            "0",
            "--no-password",
            "--snapshot",
            &snapshot,
            "-t",
            &pattern,
            "-d",
        ])
        .arg(&url_no_password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| AgentError::io("cannot start pg_dump", e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| AgentError::CouldNotRun("pg_dump has no stdout".into()))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| AgentError::CouldNotRun("pg_dump has no stderr".into()))?;
        let errors = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let key = format!("{BACKUPS_PREFIX}{id}/{table}.dump{}", upload.compression.suffix());
        let uploaded = upload_stream(repo, &key, stdout, upload, |_| {}).await;
        let status = child.wait().await.map_err(|e| AgentError::io("waiting for pg_dump", e))?;
        let log = errors.await.unwrap_or_default();
        if !status.success() {
            return Err(AgentError::CouldNotRun(format!(
                "pg_dump of {table} failed ({status}): {}",
                tail(&log, 6)
            )));
        }
        objects.push(uploaded?);
    }
    client.batch_execute("COMMIT").await.ok();
    let manifest = BackupManifest {
        format: MANIFEST_FORMAT,
        id,
        kind: BackupKind::PgTable,
        source: display_target(url),
        started_at,
        finished_at: Timestamp::now(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        objects,
        postgres: None,
        tables: snapshots,
    };
    publish(repo, &manifest).await?;
    Ok(manifest)
}

/// Restores `table` from a per-table backup into the database at `url`
/// (`pg_restore --clean --if-exists --single-transaction`: an existing table
/// of that name is replaced in one transaction, so a restore that fails or
/// dies mid-stream leaves it as it was; its schema is created when missing).
/// Returns the rows restored.
pub async fn restore_table(
    repo: &Repository,
    manifest: &BackupManifest,
    table: &str,
    url: &str,
) -> Result<i64> {
    let table = normalize_table(table);
    let entry = table_object(manifest, &table)?;
    create_schemas(url, std::slice::from_ref(&table)).await?;
    pg_restore(repo, entry, url, &table, &["--clean", "--if-exists", "--single-transaction"])
        .await?;
    let client = connect(url).await?;
    Ok(snapshot_table(&client, &table).await?.rows)
}

/// Restores `tables` and every table they reference through foreign keys
/// (recorded at backup time) into an empty database at `url`: first each
/// table's definition and rows, then its indexes and constraints, so a
/// foreign key finds the rows it points to. Returns the tables restored.
pub async fn restore_tables(
    repo: &Repository,
    manifest: &BackupManifest,
    tables: &[String],
    url: &str,
) -> Result<Vec<String>> {
    let wanted = with_references(manifest, tables);
    let mut entries = Vec::new();
    for table in &wanted {
        entries.push((table, table_object(manifest, table)?));
    }
    create_schemas(url, &wanted).await?;
    for (table, entry) in &entries {
        pg_restore(repo, entry, url, table, &["--section=pre-data", "--section=data"]).await?;
    }
    for (table, entry) in &entries {
        pg_restore(repo, entry, url, table, &["--section=post-data"]).await?;
    }
    Ok(wanted)
}

/// `tables` (normalised) and, transitively, the tables they reference.
pub fn with_references(manifest: &BackupManifest, tables: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut queue: Vec<String> = tables.iter().map(|t| normalize_table(t)).collect();
    while let Some(table) = queue.pop() {
        if out.contains(&table) {
            continue;
        }
        if let Some(snapshot) = manifest.tables.iter().find(|t| t.name == table) {
            queue.extend(snapshot.references.iter().cloned());
        }
        out.push(table);
    }
    out.sort();
    out
}

fn table_object<'m>(manifest: &'m BackupManifest, table: &str) -> Result<&'m ObjectEntry> {
    manifest
        .objects
        .iter()
        .find(|o| {
            o.key.ends_with(&format!("/{table}.dump.zst"))
                || o.key.ends_with(&format!("/{table}.dump"))
        })
        .ok_or_else(|| {
            let have: Vec<&str> = manifest.tables.iter().map(|t| t.name.as_str()).collect();
            AgentError::Usage(format!(
                "backup {} has no table {table}; it has: {}",
                manifest.id,
                have.join(", ")
            ))
        })
}

/// `CREATE SCHEMA IF NOT EXISTS` for the schemas of `tables` (a per-table
/// dump does not carry its schema).
async fn create_schemas(url: &str, tables: &[String]) -> Result<()> {
    let client = connect(url).await?;
    let mut schemas: Vec<&str> =
        tables.iter().filter_map(|t| t.split_once('.').map(|(s, _)| s)).collect();
    schemas.sort_unstable();
    schemas.dedup();
    for schema in schemas {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.replace('"', "\"\"")
            ))
            .await
            .map_err(|e| {
                AgentError::CouldNotRun(format!(
                    "creating schema {schema} in {}: {e}",
                    display_target(url)
                ))
            })?;
    }
    Ok(())
}

/// Streams one dump object into `pg_restore ARGS`; pg_restore's own error
/// comes first when it fails (a broken pipe on our side is only its echo).
async fn pg_restore(
    repo: &Repository,
    entry: &ObjectEntry,
    url: &str,
    table: &str,
    args: &[&str],
) -> Result<()> {
    let (mut cmd, url_no_password) = client_command("pg_restore", url)?;
    cmd.args(args)
        .args(["--no-owner", "--no-password", "--exit-on-error", "-d"])
        .arg(&url_no_password)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| AgentError::io("cannot start pg_restore", e))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| AgentError::CouldNotRun("pg_restore has no stdin".into()))?;
    let mut stdin = UntilClosed { inner: stdin, closed: false };
    let copied = download_to(repo, entry, &mut stdin).await;
    drop(stdin);
    let output =
        child.wait_with_output().await.map_err(|e| AgentError::io("waiting for pg_restore", e))?;
    if !output.status.success() {
        return Err(AgentError::CouldNotRun(format!(
            "pg_restore {} of {table} into {} failed: {}",
            args.join(" "),
            display_target(url),
            tail(&String::from_utf8_lossy(&output.stderr), 6)
        )));
    }
    copied.map(|_| ())
}

/// A pipe writer that, once the reader has closed its end, swallows the rest:
/// `pg_restore --section=...` stops reading when it has what its sections
/// need, while the download goes on to the end so the object's checksum is
/// still checked.
struct UntilClosed<W> {
    inner: W,
    closed: bool,
}

impl<W> UntilClosed<W> {
    /// `polled` as is, except that a broken pipe (the reader left) closes
    /// the writer and counts as `done`; once closed, everything is `done`.
    fn absorb<T>(
        &mut self,
        done: T,
        poll: impl FnOnce(Pin<&mut W>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>>
    where
        W: Unpin,
    {
        if self.closed {
            return Poll::Ready(Ok(done));
        }
        match poll(Pin::new(&mut self.inner)) {
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Poll::Ready(Ok(done))
            }
            other => other,
        }
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for UntilClosed<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.absorb(buf.len(), |w| w.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.absorb((), |w| w.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.absorb((), |w| w.poll_shutdown(cx))
    }
}
