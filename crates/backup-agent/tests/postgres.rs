//! PostgreSQL against real servers: base backup + WAL archive to S3 (moto),
//! point-in-time restore checked row by row, a one-table restore, a killed
//! upload that never becomes a visible backup.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use backup_agent::manifest::{BackupCatalog, BackupState};
use backup_agent::object::UploadSettings;
use backup_agent::postgres::base::{self, BaseBackupOptions, RecoveryTarget};
use backup_agent::postgres::scratch::ScratchCluster;
use backup_agent::postgres::{connect, logical};
use backup_agent::rehearsal::{archive_current_wal, start_source};
use backup_agent::verify::{VerifyOptions, verify};
use shared_types::{Timestamp, Verdict};
use support::{agent, agent_command, text};

const TIMEOUT: Duration = Duration::from_secs(120);

async fn rows(client: &tokio_postgres::Client, table: &str) -> Vec<(i32, String)> {
    client
        .query(&format!("SELECT id, payload FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.try_get(0).unwrap(), r.try_get(1).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_restore_from_s3_returns_exactly_the_rows_committed_before_the_target() {
    let s3 = support::s3_server().await;
    let repo = support::s3_repository(&s3, "pitr", "prod/pg").await;
    let wal_push = agent_command("wal-push", "s3://pitr/prod/pg", Some(&s3.endpoint()));
    let source = start_source(&wal_push, TIMEOUT).await.unwrap();
    let client = connect(&source.url("postgres")).await.unwrap();
    client
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY, payload text NOT NULL)")
        .await
        .unwrap();
    // More tables than the 20 the manifest used to keep: without
    // --key-tables every user table is snapshotted, so a drill compares all.
    for i in 1..=24 {
        client
            .batch_execute(&format!("CREATE TABLE extra_{i:02} (id int PRIMARY KEY)"))
            .await
            .unwrap();
    }
    let manifest =
        base::backup(&repo, &source.url("postgres"), &BaseBackupOptions::default(), |_| {})
            .await
            .unwrap();
    assert_eq!(manifest.tables.len(), 25, "every user table: {:?}", manifest.tables);
    for i in 1..=50 {
        client
            .execute("INSERT INTO orders VALUES ($1, $2)", &[&i, &format!("before-{i}")])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let target = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 51..=80 {
        client
            .execute("INSERT INTO orders VALUES ($1, $2)", &[&i, &format!("after-{i}")])
            .await
            .unwrap();
    }
    client.execute("UPDATE orders SET payload = 'mangled' WHERE id <= 10", &[]).await.unwrap();
    archive_current_wal(&client, TIMEOUT).await.unwrap();
    source.crash().await.unwrap();

    let scratch = ScratchCluster::prepare().unwrap();
    let wal_fetch = agent_command("wal-fetch", "s3://pitr/prod/pg", Some(&s3.endpoint()));
    let restored = base::restore(
        &repo,
        &manifest,
        &scratch,
        &RecoveryTarget::Time(target),
        &wal_fetch,
        TIMEOUT,
    )
    .await
    .unwrap();
    let expected: Vec<(i32, String)> = (1..=50).map(|i| (i, format!("before-{i}"))).collect();
    assert_eq!(rows(&restored, "orders").await, expected);

    // The repository verifies: objects match, the WAL chain has no gap.
    let report = verify(&repo, &VerifyOptions::default()).await.unwrap();
    assert_eq!(report.verdict(), Verdict::Pass, "{}", report.to_json_pretty());
    assert!(
        report.checks.iter().any(|c| c.id.starts_with("wal-chain/") && c.verdict == Verdict::Pass)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_table_is_restored_from_a_per_table_backup_row_by_row() {
    let db = testkit::TempDatabase::create().await.unwrap();
    let client = connect(db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE nfts (id int PRIMARY KEY, payload text NOT NULL);
             CREATE TABLE users (id int PRIMARY KEY, payload text NOT NULL);
             INSERT INTO nfts SELECT g, 'nft-' || g FROM generate_series(1, 500) g;
             INSERT INTO users SELECT g, 'user-' || g FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = support::local_repository(dir.path()).await;
    let manifest = logical::backup(&repo, db.url(), &[], &UploadSettings::default()).await.unwrap();
    assert_eq!(
        manifest.tables.iter().map(|t| (t.name.as_str(), t.rows)).collect::<Vec<_>>(),
        [("public.nfts", 500), ("public.users", 20)]
    );
    let before = rows(&client, "nfts").await;
    client.batch_execute("DROP TABLE nfts; UPDATE users SET payload = 'kept'").await.unwrap();

    let restored = logical::restore_table(&repo, &manifest, "nfts", db.url()).await.unwrap();
    assert_eq!(restored, 500);
    assert_eq!(rows(&client, "nfts").await, before);
    // The other table is untouched by a one-table restore.
    let users: i64 = client
        .query_one("SELECT count(*) FROM users WHERE payload = 'kept'", &[])
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(users, 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_killed_midway_never_becomes_a_visible_backup_and_recover_cleans_it_up() {
    let s3 = support::s3_server().await;
    let repo = support::s3_repository(&s3, "killed", "").await;
    let source = start_source("true", TIMEOUT).await.unwrap();
    let url = source.url("postgres");
    let client = connect(&url).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE big AS SELECT o.id, (SELECT string_agg(md5(random()::text || o.id || s.n), '') \
             FROM generate_series(1, 24) AS s(n)) AS payload FROM generate_series(1, 120000) AS o(id)",
        )
        .await
        .unwrap();
    let endpoint = s3.endpoint();
    let args = [
        "backup",
        "postgres",
        "--repo",
        "s3://killed",
        "--s3-endpoint",
        &endpoint,
        "--pg-url",
        &url,
        "--part-size-mib",
        "5",
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backup-agent"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", support::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::SECRET_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a multipart upload is under way.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if !repo.incomplete_uploads("backups/").await.unwrap().is_empty() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup finished before it could be killed"
        );
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let catalog = BackupCatalog::load(&repo).await.unwrap();
    assert_eq!(catalog.backups.len(), 1);
    assert!(matches!(catalog.backups[0].state, BackupState::Incomplete { .. }));
    assert!(catalog.resolve("latest", None).is_err(), "a killed backup must not be restorable");
    let listed = agent(&["list", "--repo", "s3://killed", "--s3-endpoint", &endpoint]);
    assert!(text(&listed).contains("INCOMPLETE"), "{}", text(&listed));

    let recovered = agent(&[
        "recover",
        "--repo",
        "s3://killed",
        "--allow-repo",
        "s3://killed",
        "--s3-endpoint",
        &endpoint,
        "--grace",
        "0s",
    ]);
    assert_eq!(recovered.status.code(), Some(0), "{}", text(&recovered));
    assert!(repo.incomplete_uploads("").await.unwrap().is_empty());
    assert!(BackupCatalog::load(&repo).await.unwrap().backups.is_empty());

    // Running it again gives a complete backup that verifies.
    let again = agent(&args);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let verified =
        agent(&["verify", "--repo", "s3://killed", "--s3-endpoint", &endpoint, "--output", "json"]);
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
}
