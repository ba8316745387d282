//! An outage of the S3 store in the middle of a multipart upload: the
//! backup waits it out and resumes (the failed part is sent again, the parts
//! already accepted stay), and the result verifies; with no budget for the
//! outage, the same backup fails cleanly and leaves no visible backup.
//!
//! The outage is real TCP: a loopback proxy in front of moto that, while
//! "down", drops its open connections and refuses new ones.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::text;
use tokio::net::{TcpListener, TcpStream};

/// Forwards 127.0.0.1:<port> to `upstream`; `down` cuts everything.
async fn proxy(upstream: u16, down: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            if down.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            let down = down.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                let cut = async {
                    while !down.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::select! {
                    _ = copy => {}
                    () = cut => {}
                }
            });
        }
    });
    port
}

async fn big_database() -> testkit::TempDatabase {
    let db = testkit::TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE blobs AS SELECT g AS id, \
             (SELECT string_agg(md5(random()::text || g || s), '') FROM generate_series(1, 16) s) AS payload \
             FROM generate_series(1, 60000) g",
        )
        .await
        .unwrap();
    db
}

fn backup(repo_endpoint: &str, bucket: &str, db: &str, budget: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_backup-agent"))
        .args([
            "backup",
            "tables",
            "--repo",
            &format!("s3://{bucket}"),
            "--s3-endpoint",
            repo_endpoint,
        ])
        .args(["--pg-url", db, "--part-size-mib", "5", "--compression", "none"])
        .args(["--s3-outage-budget", budget, "--output", "json"])
        .env("AWS_ACCESS_KEY_ID", support::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until a multipart upload is under way in `repo`.
async fn until_uploading(
    repo: &backup_agent::repository::Repository,
    child: &mut std::process::Child,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while repo.incomplete_uploads("backups/").await.unwrap().is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the backup ended before the outage");
        assert!(std::time::Instant::now() < deadline, "no multipart upload started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_mid_upload_is_waited_out_and_the_upload_resumes() {
    let s3 = support::s3_server().await;
    let repo = support::s3_repository(&s3, "outage", "").await;
    let down = Arc::new(AtomicBool::new(false));
    let port = proxy(s3.port(), down.clone()).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let db = big_database().await;

    let mut child = backup(&endpoint, "outage", db.url(), "2m");
    until_uploading(&repo, &mut child).await;
    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(6)).await;
    down.store(false, Ordering::SeqCst);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the upload resumes"),
        "the outage was not seen: {}",
        text(&out)
    );
    let verified = support::agent(&[
        "verify",
        "--repo",
        "s3://outage",
        "--s3-endpoint",
        &s3.endpoint(),
        "--restore",
        "--output",
        "json",
    ]);
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));

    // No budget for an outage: the backup fails and nothing becomes visible.
    let mut child = backup(&endpoint, "outage", db.url(), "1s");
    until_uploading(&repo, &mut child).await;
    down.store(true, Ordering::SeqCst);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    down.store(false, Ordering::SeqCst);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let listed = support::agent(&[
        "list",
        "--repo",
        "s3://outage",
        "--s3-endpoint",
        &s3.endpoint(),
        "--json",
    ]);
    let backups: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let complete = backups.as_array().unwrap().iter().filter(|b| b["state"] == "complete").count();
    assert_eq!(complete, 1, "only the first backup is complete: {backups}");
}
