//! `prune` judges the repository it leaves behind, not its own plan: the
//! `retention` check re-reads what remains (real base backups of a real
//! cluster archiving its WAL with `wal-push`) and fails on a gap in the WAL
//! chain of the oldest kept base backup.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use backup_agent::manifest::BackupManifest;
use backup_agent::postgres::base::{self, BaseBackupOptions};
use backup_agent::postgres::connect;
use backup_agent::rehearsal::{archive_current_wal, start_source};
use backup_agent::retention::wal_position;
use shared_types::{Report, Verdict};
use support::{agent, text};

const TIMEOUT: Duration = Duration::from_secs(60);

fn prune_json(repo: &str, extra: &[&str]) -> (Option<i32>, Report, String) {
    let mut args = vec!["prune", "--repo", repo, "--output", "json"];
    args.extend_from_slice(extra);
    let out = agent(&args);
    let report = Report::from_json(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out.status.code(), report, text(&out))
}

/// Archived WAL segment names (without `.zst`) on timeline 1 at or after `start`, sorted.
fn segments_from(dir: &std::path::Path, start: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".zst").map(str::to_owned))
        .filter(|n| n.len() == 24 && n.starts_with("00000001"))
        .filter(|n| wal_position(n) >= wal_position(start))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_re_reads_the_repository_and_fails_on_a_missing_wal_segment() {
    let dir = support::local_repo_dir();
    let repo_path = dir.path().to_str().unwrap().to_owned();
    let repo = support::local_repository(dir.path()).await;
    let source =
        start_source(&support::agent_command("wal-push", &repo_path, None), TIMEOUT).await.unwrap();
    let url = source.url("postgres");
    let client = connect(&url).await.unwrap();
    client.batch_execute("CREATE TABLE t (id serial PRIMARY KEY, v text)").await.unwrap();
    let options = BaseBackupOptions {
        key_tables: vec!["public.t".into()],
        upload: backup_agent::object::UploadSettings::default(),
    };
    let older: BackupManifest = base::backup(&repo, &url, &options, |_| {}).await.unwrap();
    client.batch_execute("INSERT INTO t (v) VALUES ('between')").await.unwrap();
    archive_current_wal(&client, TIMEOUT).await.unwrap();
    let newer: BackupManifest = base::backup(&repo, &url, &options, |_| {}).await.unwrap();
    for i in 0..3 {
        client.batch_execute(&format!("INSERT INTO t (v) VALUES ('after {i}')")).await.unwrap();
        archive_current_wal(&client, TIMEOUT).await.unwrap();
    }
    let newer_start = newer.postgres.as_ref().unwrap().start_wal.clone();
    let older_start = older.postgres.as_ref().unwrap().start_wal.clone();
    assert!(wal_position(&older_start) < wal_position(&newer_start));

    // Both backups are of today: the daily tier keeps the newer one only, and
    // the WAL below its start goes. What remains is checked and passes.
    let (code, report, out) = prune_json(&repo_path, &["--allow-repo", &repo_path]);
    assert_eq!(code, Some(0), "{out}");
    let retention = report.checks.iter().find(|c| c.id == "retention").unwrap();
    assert_eq!(retention.verdict, Verdict::Pass, "{retention:?}");
    let observed = retention.observed.as_deref().unwrap();
    assert!(observed.contains("1 backup(s) remains: 1 daily, 1 weekly, 1 monthly"), "{observed}");
    assert!(observed.contains(&format!("WAL chain complete from {newer_start}")), "{observed}");
    assert!(!dir.path().join("backups").join(&older.id).exists());
    assert!(dir.path().join("backups").join(&newer.id).join("manifest.json").exists());
    assert!(!dir.path().join(format!("wal/{older_start}.zst")).exists());

    // A segment in the middle of the kept backup's chain disappears from the
    // store: the next prune (dry run or not) fails naming it.
    let chain = segments_from(dir.path(), &newer_start);
    assert!(chain.len() >= 3, "{chain:?}");
    let lost = &chain[1];
    for suffix in [".zst", ".zst.sha256"] {
        std::fs::remove_file(dir.path().join(format!("wal/{lost}{suffix}"))).unwrap();
    }
    for extra in [vec!["--dry-run"], vec!["--allow-repo", repo_path.as_str()]] {
        let (code, report, out) = prune_json(&repo_path, &extra);
        assert_eq!(code, Some(1), "{extra:?}: {out}");
        let retention = report.checks.iter().find(|c| c.id == "retention").unwrap();
        assert_eq!(retention.verdict, Verdict::Fail, "{retention:?}");
        let detail = retention.detail.as_deref().unwrap();
        assert!(detail.contains(&format!("missing {lost}")), "{detail}");
        assert!(detail.contains(&newer.id), "{detail}");
    }
    // Nothing of the kept backup was deleted by the failing prune.
    assert!(dir.path().join("backups").join(&newer.id).join("manifest.json").exists());
}

/// A killed backup with a readable marker a day old is removed; one whose
/// marker is listed but cannot be read (moto answers `InvalidObjectState`:
/// the marker sits in GLACIER) may still be running and is kept, and the run
/// is not evaluated (exit 3). Deleting needs the repository allow-listed.
#[tokio::test(flavor = "multi_thread")]
async fn recover_never_deletes_a_backup_whose_marker_cannot_be_read() {
    use backup_agent::manifest::{BackupCatalog, BackupState, mark_in_progress};
    use backup_agent::repository::{Repository, S3Options};

    let s3 = support::s3_server().await;
    let readable = support::s3_repository(&s3, "markers", "pg").await;
    let archived = Repository::open(
        &"s3://markers/pg".parse().unwrap(),
        &S3Options { storage_class: Some("GLACIER".into()), ..support::s3_options(&s3) },
    )
    .await
    .unwrap();
    let day_ago = shared_types::Timestamp::from_unix_millis(
        shared_types::Timestamp::now().unix_millis().unwrap() - 86_400_000,
    );
    let killed = "20261201T020000.000Z-pg-base";
    let unknown = "20261201T023000.000Z-pg-table";
    mark_in_progress(&readable, killed, &day_ago).await.unwrap();
    readable.put_bytes(&format!("backups/{killed}/base.tar.zst"), b"part".to_vec()).await.unwrap();
    mark_in_progress(&archived, unknown, &day_ago).await.unwrap();
    readable
        .put_bytes(&format!("backups/{unknown}/public.t.dump.zst"), b"part".to_vec())
        .await
        .unwrap();
    let catalog = BackupCatalog::load(&readable).await.unwrap();
    let state = |id: &str| catalog.get(id).map(|b| b.state.clone());
    assert!(matches!(
        state(unknown),
        Some(BackupState::Incomplete { marker_unreadable: Some(ref why), .. }) if why.contains("InvalidObjectState")
    ));

    let endpoint = s3.endpoint();
    let repo = "s3://markers/pg";
    let base = ["recover", "--repo", repo, "--s3-endpoint", &endpoint, "--output", "json"];
    // Outside the allow-list: refused before anything is read or deleted.
    let out = agent(&base);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--allow-repo"), "{}", text(&out));
    assert_eq!(BackupCatalog::load(&readable).await.unwrap().backups.len(), 2);

    let out = agent(&[&base[..], &["--allow-repo", repo]].concat());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let report = Report::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let check = report.checks.iter().find(|c| c.id == "recover").unwrap();
    assert_eq!(check.verdict, Verdict::NotEvaluated, "{check:?}");
    let detail = check.detail.as_deref().unwrap();
    assert!(detail.contains(unknown) && detail.contains("InvalidObjectState"), "{detail}");
    assert_eq!(report.data["removed"], serde_json::json!([killed]));
    let after = BackupCatalog::load(&readable).await.unwrap();
    let ids: Vec<&str> = after.backups.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, [unknown]);
    assert_eq!(after.backups[0].keys.len(), 2, "{:?}", after.backups[0].keys);
}
