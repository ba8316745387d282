//! MongoDB logical backups through the `mongodb` crate, written in
//! mongodump's directory layout (`<db>/<collection>.bson`, concatenated BSON
//! documents, and `<db>/<collection>.metadata.json` with the indexes), each
//! object compressed and checksummed like any other. With `--compression
//! none` and a local repository, `backups/<id>/` is a directory a standard
//! `mongorestore` reads.
//!
//! Consistency: each collection is read with one cursor. Against a replica set,
//! run it on a hidden secondary or during a quiet window; document counts are
//! recorded per collection for the restore's sanity check.

use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::{Client, options::ClientOptions};
use shared_types::{Check, Measurement, Report, Timestamp};
use tokio::io::AsyncWriteExt;

use shared_types::redact_url;

use crate::error::{AgentError, Result};
use crate::manifest::{
    BACKUPS_PREFIX, BackupKind, BackupManifest, MANIFEST_FORMAT, TableSnapshot, mark_in_progress,
    new_backup_id, publish,
};
use crate::object::{UploadSettings, download_bytes, upload_bytes, upload_stream};
use crate::repository::Repository;

const INSERT_BATCH: usize = 1000;

async fn client(url: &str) -> Result<Client> {
    let mut options = ClientOptions::parse(url)
        .await
        .map_err(|e| AgentError::Usage(format!("invalid MongoDB URL {}: {e}", redact_url(url))))?;
    options.server_selection_timeout = Some(std::time::Duration::from_secs(10));
    options.app_name = Some("backup-agent".into());
    Client::with_options(options).map_err(|e| {
        AgentError::CouldNotRun(format!("MongoDB client for {}: {e}", redact_url(url)))
    })
}

fn mongo_err(what: &str, url: &str, e: mongodb::error::Error) -> AgentError {
    AgentError::CouldNotRun(format!("{what} on {}: {e}", redact_url(url)))
}

/// Dumps database `db` into `repo`.
pub async fn backup(
    repo: &Repository,
    url: &str,
    db: &str,
    upload: &UploadSettings,
) -> Result<BackupManifest> {
    let client = client(url).await?;
    let database = client.database(db);
    let mut names = database
        .list_collection_names()
        .await
        .map_err(|e| mongo_err("listing collections", url, e))?;
    names.retain(|n| !n.starts_with("system."));
    names.sort();
    let started_at = Timestamp::now();
    let id = new_backup_id(&started_at, BackupKind::Mongo);
    mark_in_progress(repo, &id, &started_at).await?;
    let mut objects = Vec::new();
    let mut tables = Vec::new();
    for name in &names {
        let collection = database.collection::<RawDocumentBuf>(name);
        let mut cursor = collection
            .find(doc! {})
            .await
            .map_err(|e| mongo_err(&format!("reading {db}.{name}"), url, e))?;
        let (mut writer, reader) = tokio::io::duplex(1 << 20);
        let key = format!("{BACKUPS_PREFIX}{id}/{db}/{name}.bson{}", upload.compression.suffix());
        let produce = async {
            let mut count = 0i64;
            while cursor
                .advance()
                .await
                .map_err(|e| mongo_err(&format!("reading {db}.{name}"), url, e))?
            {
                writer
                    .write_all(cursor.current().as_bytes())
                    .await
                    .map_err(|e| AgentError::io("streaming documents", e))?;
                count += 1;
            }
            writer.shutdown().await.map_err(|e| AgentError::io("streaming documents", e))?;
            drop(writer);
            Ok::<i64, AgentError>(count)
        };
        let (count, entry) =
            tokio::join!(produce, upload_stream(repo, &key, reader, upload, |_| {}));
        let count = count?;
        objects.push(entry?);
        let indexes = database
            .run_command(doc! { "listIndexes": name.as_str() })
            .await
            .map_err(|e| mongo_err(&format!("listing indexes of {db}.{name}"), url, e))?;
        let batch = indexes
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .cloned()
            .unwrap_or_default();
        let metadata =
            doc! { "indexes": batch, "collectionName": name.as_str(), "type": "collection" };
        let json = Bson::Document(metadata).into_relaxed_extjson().to_string();
        let meta_key = format!(
            "{BACKUPS_PREFIX}{id}/{db}/{name}.metadata.json{}",
            upload.compression.suffix()
        );
        objects.push(upload_bytes(repo, &meta_key, json.as_bytes(), upload).await?);
        tables.push(TableSnapshot {
            name: format!("{db}.{name}"),
            rows: count,
            sample_sha256: None,
            references: Vec::new(),
        });
    }
    let manifest = BackupManifest {
        format: MANIFEST_FORMAT,
        id,
        kind: BackupKind::Mongo,
        source: format!(
            "{}/{db}",
            redact_url(url).split('@').next_back().unwrap_or_default().trim_end_matches('/')
        ),
        started_at,
        finished_at: Timestamp::now(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        objects,
        postgres: None,
        tables,
    };
    publish(repo, &manifest).await?;
    Ok(manifest)
}

/// Splits concatenated BSON into documents.
pub fn split_bson(data: &[u8]) -> Result<Vec<RawDocumentBuf>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let len_bytes: [u8; 4] = data
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| AgentError::Integrity(format!("truncated BSON at byte {at}")))?;
        let len = usize::try_from(i32::from_le_bytes(len_bytes)).unwrap_or(0);
        let doc = data.get(at..at + len).filter(|_| len >= 5).ok_or_else(|| {
            AgentError::Integrity(format!("bad BSON document length {len} at byte {at}"))
        })?;
        out.push(
            RawDocumentBuf::from_bytes(doc.to_vec()).map_err(|e| {
                AgentError::Integrity(format!("bad BSON document at byte {at}: {e}"))
            })?,
        );
        at += len;
    }
    Ok(out)
}

/// Documents already in the collections a restore of `manifest` would drop
/// (in `to_db` if given, else each collection's own database).
pub async fn existing_documents(
    manifest: &BackupManifest,
    url: &str,
    to_db: Option<&str>,
) -> Result<Vec<crate::guard::Existing>> {
    let client = client(url).await?;
    let mut out = Vec::new();
    for table in &manifest.tables {
        let (db, name) = table.name.split_once('.').unwrap_or(("test", &table.name));
        let db = to_db.unwrap_or(db);
        let rows = client
            .database(db)
            .collection::<Document>(name)
            .count_documents(doc! {})
            .await
            .map_err(|e| mongo_err(&format!("counting {db}.{name}"), url, e))?;
        out.push(crate::guard::Existing {
            name: format!("{db}.{name}"),
            rows: i64::try_from(rows).unwrap_or(i64::MAX),
        });
    }
    Ok(out)
}

/// Restores `manifest` into a scratch database `verify_<backup>` on the
/// server at `url`, compares the document counts, and drops the database
/// whatever the outcome. Returns the problems found (empty: it matches).
pub async fn verify_restore(
    repo: &Repository,
    manifest: &BackupManifest,
    url: &str,
) -> Result<Vec<String>> {
    let scratch: String = format!("verify_{}", manifest.id)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .take(60)
        .collect();
    let outcome = restore(repo, manifest, url, Some(&scratch)).await;
    let dropped = client(url).await?.database(&scratch).drop().await;
    let report = outcome?;
    dropped.map_err(|e| mongo_err(&format!("dropping the scratch database {scratch}"), url, e))?;
    Ok(report
        .checks
        .iter()
        .filter(|c| c.verdict != shared_types::Verdict::Pass)
        .map(|c| format!("{}: {}", c.id, c.observed.clone().unwrap_or_default()))
        .collect())
}

/// Restores a dump into the server at `url` (into `to_db` if given), then
/// compares document counts with the manifest.
pub async fn restore(
    repo: &Repository,
    manifest: &BackupManifest,
    url: &str,
    to_db: Option<&str>,
) -> Result<Report> {
    let started = std::time::Instant::now();
    let client = client(url).await?;
    let mut report = Report::new("backup-agent", env!("CARGO_PKG_VERSION"), redact_url(url));
    let prefix = format!("{BACKUPS_PREFIX}{}/", manifest.id);
    for table in &manifest.tables {
        let (db, name) = table.name.split_once('.').unwrap_or(("test", &table.name));
        let target_db = to_db.unwrap_or(db);
        let find = |suffix: &str| {
            manifest.objects.iter().find(|o| {
                o.key
                    .strip_prefix(&prefix)
                    .is_some_and(|k| k.starts_with(&format!("{db}/{name}{suffix}")))
            })
        };
        let data_entry = find(".bson").ok_or_else(|| {
            AgentError::Integrity(format!("no {db}/{name}.bson in {}", manifest.id))
        })?;
        let collection = client.database(target_db).collection::<RawDocumentBuf>(name);
        collection
            .drop()
            .await
            .map_err(|e| mongo_err(&format!("dropping {target_db}.{name}"), url, e))?;
        let docs = split_bson(&download_bytes(repo, data_entry).await?)?;
        let restored = docs.len();
        for chunk in docs.chunks(INSERT_BATCH) {
            collection
                .insert_many(chunk.to_vec())
                .await
                .map_err(|e| mongo_err(&format!("inserting into {target_db}.{name}"), url, e))?;
        }
        if let Some(meta_entry) = find(".metadata.json") {
            let meta: serde_json::Value =
                serde_json::from_slice(&download_bytes(repo, meta_entry).await?)
                    .map_err(|e| AgentError::Integrity(format!("{}: {e}", meta_entry.key)))?;
            let indexes: Vec<Document> = meta
                .get("indexes")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter(|i| i.get("name").and_then(|n| n.as_str()) != Some("_id_"))
                .filter_map(|i| Bson::try_from(i.clone()).ok()?.as_document().cloned())
                .map(|mut d| {
                    d.remove("ns");
                    d
                })
                .collect();
            if !indexes.is_empty() {
                client
                    .database(target_db)
                    .run_command(doc! { "createIndexes": name, "indexes": indexes })
                    .await
                    .map_err(|e| {
                        mongo_err(&format!("creating indexes on {target_db}.{name}"), url, e)
                    })?;
            }
        }
        let counted =
            collection.count_documents(doc! {}).await.map_err(|e| mongo_err("counting", url, e))?;
        report.push_check(Check::from_bool(
            format!("documents/{target_db}.{name}"),
            "documents restored == documents at backup time",
            format!("{counted} restored ({restored} in the dump), {} at backup time", table.rows),
            i64::try_from(counted).ok() == Some(table.rows),
        ));
    }
    report.push_measurement(Measurement::new("duration", started.elapsed().as_secs_f64(), "s"));
    report.finish();
    Ok(report)
}
