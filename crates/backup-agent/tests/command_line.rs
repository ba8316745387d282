//! The binary: corrupted objects and mismatching manifests fail `verify`,
//! bad repositories get the contract's exit codes with clear errors, prune
//! refuses repositories outside the allow-list, and a drill reports RTO and RPO.

#![allow(clippy::unwrap_used)]

mod support;

use shared_types::{Report, Verdict};
use support::{agent, text};

async fn table_backup(repo: &str) -> (testkit::TempDatabase, String) {
    table_backup_of(repo, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g").await
}

/// A database set up by `sql`, and a `backup tables` of it into `repo`: the database and the backup id.
async fn table_backup_of(repo: &str, sql: &str) -> (testkit::TempDatabase, String) {
    let db = testkit::TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client.batch_execute(sql).await.unwrap();
    let out =
        agent(&["backup", "tables", "--repo", repo, "--pg-url", db.url(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = Report::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let id = report.data["backup_id"].as_str().unwrap().to_owned();
    (db, id)
}

fn verify_json(extra: &[&str], repo: &str) -> (Option<i32>, Report) {
    let mut args = vec!["verify", "--repo", repo, "--output", "json"];
    args.extend_from_slice(extra);
    let out = agent(&args);
    let report = Report::from_json(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|_| panic!("{}", text(&out)));
    (out.status.code(), report)
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_detects_a_corrupted_object_and_a_manifest_that_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let (_db, id) = table_backup(repo).await;
    let (code, _) = verify_json(&[], repo);
    assert_eq!(code, Some(0));

    let object = dir.path().join(format!("backups/{id}/public.t.dump.zst"));
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&object, &bytes).unwrap();
    let (code, report) = verify_json(&[], repo);
    assert_eq!(code, Some(1));
    let check = report.checks.iter().find(|c| c.id == format!("objects/{id}")).unwrap();
    assert_eq!(check.verdict, Verdict::Fail);
    assert!(check.detail.as_deref().unwrap().contains("public.t.dump.zst"), "{check:?}");
    bytes[middle] ^= 0x5a;
    std::fs::write(&object, &bytes).unwrap();

    // A manifest whose checksum does not match the object.
    let manifest_path = dir.path().join(format!("backups/{id}/manifest.json"));
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    value["objects"][0]["sha256"] = "0".repeat(64).into();
    std::fs::write(&manifest_path, value.to_string()).unwrap();
    let (code, report) = verify_json(&[], repo);
    assert_eq!(code, Some(1));
    assert!(report.checks.iter().any(
        |c| c.verdict == Verdict::Fail && c.detail.as_deref().unwrap_or("").contains("sha256")
    ));

    // A manifest that is not JSON at all: could not run, with the key named.
    std::fs::write(&manifest_path, "{ not json").unwrap();
    let out = agent(&["verify", "--repo", repo]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("manifest.json is not a valid manifest"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_repositories_get_clear_errors_and_the_contract_exit_codes() {
    // Not a repository URL: usage error.
    let out = agent(&["list", "--repo", "ftp://x/y"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("use a directory"));

    // Unreachable endpoint: could not run.
    let port = testkit::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = agent(&["list", "--repo", "s3://backups", "--s3-endpoint", &endpoint]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("cannot reach the S3 endpoint"), "{}", text(&out));

    // Missing bucket: could not run, says how to fix it.
    let s3 = support::s3_server().await;
    let out = agent(&["list", "--repo", "s3://no-such-bucket", "--s3-endpoint", &s3.endpoint()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    assert!(!text(&out).contains(support::SECRET_KEY));

    // Prune outside the allow-list: refused, nothing deleted.
    let dir = tempfile::tempdir().unwrap();
    let out = agent(&["prune", "--repo", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--allow-repo"));
}

/// moto with signatures enforced: the right keys list the repository, a
/// wrong secret or an unknown key id exits 3 naming the S3 error and never
/// printing the secret, and a backup attempted with wrong keys leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_refused_with_a_clear_error_and_leave_nothing_behind() {
    let s3 = testkit::S3Server::start_with_auth(&["guarded"]).await.unwrap();
    let keys = s3.credentials().clone();
    let endpoint = s3.endpoint();
    let list = ["list", "--repo", "s3://guarded/prod", "--s3-endpoint", &endpoint];

    let out = support::agent_with_keys(&list, &keys.access_key_id, &keys.secret_access_key);
    assert_eq!(out.status.code(), Some(0), "the right keys: {}", text(&out));

    let wrong_secret = "wrong-secret-0123456789";
    let out = support::agent_with_keys(&list, &keys.access_key_id, wrong_secret);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("credentials were rejected"), "{}", text(&out));
    assert!(!text(&out).contains(wrong_secret) && !text(&out).contains(&keys.secret_access_key));

    let out = support::agent_with_keys(&list, "AKIANOSUCHKEY0000000", &keys.secret_access_key);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("credentials were rejected"), "{}", text(&out));

    let db = testkit::TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let backup = [
        "backup",
        "tables",
        "--repo",
        "s3://guarded/prod",
        "--s3-endpoint",
        &endpoint,
        "--pg-url",
        db.url(),
    ];
    let out = support::agent_with_keys(&backup, &keys.access_key_id, wrong_secret);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = support::agent_with_keys(
        &["list", "--repo", "s3://guarded/prod", "--s3-endpoint", &endpoint, "--json"],
        &keys.access_key_id,
        &keys.secret_access_key,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing, serde_json::json!([]), "a refused backup left objects behind");
}

/// A table in its own schema with a foreign key: `verify --restore` and a
/// table drill restore it into an empty scratch cluster with the table it
/// references, and the rows match those counted at backup time.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_with_a_foreign_key_in_its_own_schema_restores_into_an_empty_cluster() {
    let db = testkit::TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE SCHEMA shop;
             CREATE TABLE shop.collections (id int PRIMARY KEY, name text NOT NULL);
             CREATE TABLE shop.nfts (id int PRIMARY KEY, collection_id int NOT NULL REFERENCES shop.collections (id));
             INSERT INTO shop.collections SELECT g, 'c' || g FROM generate_series(1, 10) g;
             INSERT INTO shop.nfts SELECT g, 1 + g % 10 FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let out = agent(&["backup", "tables", "--repo", repo, "--pg-url", db.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let (code, report) = verify_json(&["--restore"], repo);
    assert_eq!(code, Some(0), "{}", report.to_json_pretty());
    assert!(
        report.checks.iter().any(|c| c.id.starts_with("restore/") && c.verdict == Verdict::Pass)
    );

    let out = agent(&[
        "drill",
        "--scenario",
        "table",
        "--table",
        "shop.nfts",
        "--repo",
        repo,
        "--source-url",
        db.url(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = Report::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let rpo = report.checks.iter().find(|c| c.id == "rpo").unwrap();
    assert!(rpo.detail.as_deref().unwrap_or("").contains("source server's clock"), "{rpo:?}");
    let sanity = report.checks.iter().find(|c| c.id == "sanity").unwrap();
    assert_eq!(sanity.observed.as_deref(), Some("500 rows"));
    assert!(sanity.detail.as_deref().unwrap_or("").contains("shop.collections"), "{sanity:?}");
}

#[test]
fn a_pitr_drill_reports_rto_and_rpo_against_the_launch_plan() {
    let dir = support::local_repo_dir();
    let out = agent(&[
        "drill",
        "--scenario",
        "pitr",
        "--self-contained",
        "--rows",
        "50",
        "--repo",
        dir.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = Report::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let check = |id: &str| report.checks.iter().find(|c| c.id == id).unwrap().clone();
    assert_eq!(check("rto").criterion, "rto < 1h");
    assert_eq!(check("rpo").criterion, "rpo < 1h");
    assert_eq!(check("ledger").verdict, Verdict::Pass, "{:?}", check("ledger"));
    let rto = report.measurements.iter().find(|m| m.name == "rto").unwrap();
    assert!(rto.value > 0.0 && rto.unit == "s");
    assert!(report.measurements.iter().any(|m| m.name == "rpo" && m.value.is_finite()));
    // Target and recovered commit both on the source server's clock.
    let detail = check("rpo").detail.unwrap_or_default();
    assert!(detail.contains("source server's clock"), "{detail}");
}

#[test]
fn a_drill_that_misses_its_rto_exits_1() {
    let other = support::local_repo_dir();
    let out = agent(&[
        "drill",
        "--scenario",
        "table",
        "--self-contained",
        "--rows",
        "10",
        "--rto",
        "rto < 1ms",
        "--repo",
        other.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

/// Client-side encryption end to end on S3 (moto): per-table objects hold
/// no plaintext, `verify --restore` with the key passes, without it or with
/// another key it stops with exit 2 naming the key id; a self-contained PITR
/// drill (base backup, WAL pushed and fetched by PostgreSQL) runs sealed.
#[tokio::test(flavor = "multi_thread")]
async fn encrypted_backups_hold_only_ciphertext_and_need_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let other = dir.path().join("other-key");
    for path in [&key, &other] {
        let out = agent(&["keygen"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        std::fs::write(path, &out.stdout).unwrap();
    }
    let (key, other) = (key.to_str().unwrap(), other.to_str().unwrap());
    let s3 = support::s3_server().await;
    let endpoint = s3.endpoint();
    let repo = support::s3_repository(&s3, "sealed", "prod").await;

    let db = testkit::TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute("CREATE TABLE secrets (id int PRIMARY KEY, v text); INSERT INTO secrets SELECT g, 'PLAINTEXT-MARKER-' || g FROM generate_series(1, 3000) g")
        .await
        .unwrap();
    let s3_args = ["--repo", "s3://sealed/prod", "--s3-endpoint", &endpoint];
    let with = |extra: &[&str]| -> Vec<String> {
        extra.iter().chain(s3_args.iter()).map(|a| (*a).to_owned()).collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        agent(&args)
    };
    let out = run(with(&[
        "backup",
        "tables",
        "--pg-url",
        db.url(),
        "--compression",
        "none",
        "--encryption-key-file",
        key,
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let objects = repo.list("backups/").await.unwrap();
    let dumps: Vec<_> = objects.iter().filter(|o| o.key.ends_with(".dump")).collect();
    assert_eq!(dumps.len(), 1, "{objects:?}");
    let stored = repo.get_bytes(&dumps[0].key).await.unwrap();
    assert!(!stored.windows(17).any(|w| w == b"PLAINTEXT-MARKER-"), "plaintext reached the bucket");

    let out = run(with(&["verify", "--restore", "--encryption-key-file", key, "--output", "json"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(with(&["verify"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is encrypted (key "), "{}", text(&out));
    let out = run(with(&["verify", "--encryption-key-file", other]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("give the key the backup was taken with"), "{}", text(&out));

    let local = support::local_repo_dir();
    let out = agent(&[
        "drill",
        "--scenario",
        "pitr",
        "--self-contained",
        "--rows",
        "30",
        "--repo",
        local.path().to_str().unwrap(),
        "--encryption-key-file",
        key,
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (mut objects, mut zstd_frames) = (0, 0);
    for entry in walk(local.path()) {
        if entry.extension().is_some_and(|e| e == "zst") {
            let bytes = std::fs::read(&entry).unwrap();
            objects += 1;
            zstd_frames += usize::from(bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
        }
    }
    assert!(objects >= 3, "a base backup and WAL segments: {objects} objects");
    assert_eq!(zstd_frames, 0, "every stored object is sealed, none is a bare zstd frame");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Restores into a live database are guarded: a host that is not this
/// machine needs --allow-target; a table that holds data is replaced only
/// with --replace; --dry-run says what would happen and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn restores_into_live_databases_need_consent_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let (db, _) = table_backup(repo).await;
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client.batch_execute("DELETE FROM t WHERE id > 500").await.unwrap();
    let restore = |extra: &[&str]| {
        let mut args =
            vec!["restore", "table", "--repo", repo, "--table", "t", "--pg-url", db.url()];
        args.extend_from_slice(extra);
        agent(&args)
    };

    let out = restore(&["--dry-run", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("would restore 2000 rows")
            && text(&out).contains("public.t (500 rows now)"),
        "{}",
        text(&out)
    );
    assert_eq!(rows_in_t(&client).await, 500, "a dry run changed the table");

    let out = restore(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--replace"), "{}", text(&out));
    assert_eq!(rows_in_t(&client).await, 500);

    let out = restore(&["--replace", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(rows_in_t(&client).await, 2000);

    let remote =
        db.url().replace("127.0.0.1", "db.prod.invalid").replace("localhost", "db.prod.invalid");
    let out = agent(&[
        "restore",
        "table",
        "--repo",
        repo,
        "--table",
        "t",
        "--pg-url",
        &remote,
        "--replace",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--allow-target db.prod.invalid"), "{}", text(&out));
}

async fn rows_in_t(client: &tokio_postgres::Client) -> i64 {
    client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().try_get(0).unwrap()
}

/// No backup is not a pass: verifying an empty repository fails (exit 1)
/// and says what to do, instead of passing on nothing checked.
#[test]
fn verify_of_an_empty_repository_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent(&["verify", "--repo", dir.path().to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = Report::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let backups = report.checks.iter().find(|c| c.id == "backups").unwrap();
    assert_eq!(backups.verdict, Verdict::Fail);
    assert!(backups.detail.as_deref().is_some_and(|d| d.contains("no complete backup")));
}

/// What a database returns is outside input: a database whose search_path
/// puts a user-defined `count(*)` (returning integer, not bigint) before
/// pg_catalog made `backup tables` panic on `Row::get`; now it exits 3
/// naming the query, the table and the column.
#[tokio::test(flavor = "multi_thread")]
async fn an_unexpected_column_type_is_an_error_naming_query_and_column_not_a_panic() {
    let db = testkit::TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);
             CREATE AGGREGATE public.count(*) (sfunc = int4inc, stype = int4, initcond = '0');
             DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = public, pg_catalog', current_database()); END $$",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let out = agent(&["backup", "tables", "--repo", repo, "--pg-url", db.url()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
    assert!(
        text(&out).contains("counting rows of public.t: cannot read column count (#0)"),
        "{}",
        text(&out)
    );
}

/// `freshness` measures the newest complete backup's age against
/// `--max-backup-age`: the same repository passes with the default (24 h)
/// and fails, exit 1, once the limit is below the backup's age.
#[tokio::test(flavor = "multi_thread")]
async fn verify_fails_a_backup_older_than_the_max_backup_age() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let _db =
        table_backup_of(repo, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
            .await;

    let fresh = agent(&["verify", "--repo", repo, "--output", "json"]);
    assert_eq!(fresh.status.code(), Some(0), "{}", text(&fresh));
    let report = Report::from_json(&String::from_utf8_lossy(&fresh.stdout)).unwrap();
    let check = report.checks.iter().find(|c| c.id == "freshness").unwrap();
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
    // A table dump has no WAL: point-in-time recovery does not apply.
    let rpo = report.checks.iter().find(|c| c.id == "rpo").unwrap();
    assert_eq!(rpo.verdict, Verdict::Skipped, "{rpo:?}");

    std::thread::sleep(std::time::Duration::from_millis(50));
    let stale = agent(&["verify", "--repo", repo, "--max-backup-age", "10ms", "--output", "json"]);
    assert_eq!(stale.status.code(), Some(1), "{}", text(&stale));
    let report = Report::from_json(&String::from_utf8_lossy(&stale.stdout)).unwrap();
    let check = report.checks.iter().find(|c| c.id == "freshness").unwrap();
    assert_eq!(check.verdict, Verdict::Fail, "{check:?}");
    assert!(check.detail.as_deref().is_some_and(|d| d.contains("--max-backup-age")), "{check:?}");
}

/// `--log-format` alone sets the log format: `--output json` used to turn
/// the logs into JSON too (init_logs looked for any `json` in argv).
#[test]
fn the_log_format_comes_from_its_own_flag() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_backup-agent"))
            .args(args)
            .env("RUST_LOG", "backup_agent=debug")
            .output()
            .unwrap()
    };
    let text_logs = run(&["verify", "--repo", repo, "--output", "json", "--log-format", "text"]);
    let stderr = String::from_utf8_lossy(&text_logs.stderr).into_owned();
    assert!(stderr.contains("starting"), "{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with('{')), "text logs: {stderr}");
    let json_logs = run(&["verify", "--repo", repo, "--output", "human", "--log-format", "json"]);
    let stderr = String::from_utf8_lossy(&json_logs.stderr).into_owned();
    let line = stderr.lines().find(|l| l.contains("starting")).unwrap_or_default();
    assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "json logs: {stderr}");
}

/// `restore table --replace` is one transaction (pg_restore
/// --single-transaction): a restore that dies mid-stream leaves the live
/// table as it was. The restore is held at its DROP TABLE by a lock the
/// test owns, the agent is killed (so the dump stream is cut), then the
/// lock is released: pg_restore carries on, reads a truncated archive and
/// fails. Without one transaction the DROP and CREATE had been committed
/// and the live table was left empty.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_restore_killed_mid_stream_leaves_the_live_table_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    // Far larger than a pipe buffer, so the stream is still open when the agent dies.
    let (db, _) = table_backup_of(repo, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, 200000) g").await;
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client.batch_execute("DELETE FROM t WHERE id > 500").await.unwrap();

    let locker = testkit::postgres::connect(db.url()).await.unwrap();
    locker.batch_execute("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE").await.unwrap();
    let mut restore = std::process::Command::new(env!("CARGO_BIN_EXE_backup-agent"))
        .args([
            "restore",
            "table",
            "--repo",
            repo,
            "--table",
            "t",
            "--pg-url",
            db.url(),
            "--replace",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pg_restore'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let blocked: i64 = client
            .query_one(&format!("{waiting} AND wait_event_type = 'Lock'"), &[])
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        if blocked > 0 {
            break;
        }
        assert!(
            restore.try_wait().unwrap().is_none(),
            "the restore ended before it reached the table"
        );
        assert!(std::time::Instant::now() < deadline, "pg_restore never waited on the table lock");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    restore.kill().unwrap();
    restore.wait().unwrap();
    locker.batch_execute("COMMIT").await.unwrap();
    loop {
        let left: i64 = client.query_one(waiting, &[]).await.unwrap().try_get(0).unwrap();
        if left == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "pg_restore did not end");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(rows_in_t(&client).await, 500, "the live table is as it was");
}

/// PostgreSQL reads a restore_command status above 125 as "stop recovery"
/// and any other non-zero status as "not in the archive, recovery is over".
/// A repository that cannot be reached is the first case: wal-fetch retries,
/// then exits 200. A WAL file that is simply not archived is the second.
#[test]
fn wal_fetch_aborts_recovery_on_a_repository_error_and_not_on_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let endpoint = format!("http://127.0.0.1:{}", testkit::free_port());
    let unreachable = agent(&[
        "wal-fetch",
        "000000010000000000000003",
        dest.to_str().unwrap(),
        "--repo",
        "s3://gone",
        "--s3-endpoint",
        &endpoint,
    ]);
    assert_eq!(unreachable.status.code(), Some(200), "{}", text(&unreachable));
    assert!(text(&unreachable).contains("retrying"), "{}", text(&unreachable));
    assert!(!dest.exists());

    let repo = tempfile::tempdir().unwrap();
    let missing = agent(&[
        "wal-fetch",
        "000000010000000000000003",
        dest.to_str().unwrap(),
        "--repo",
        repo.path().to_str().unwrap(),
    ]);
    let code = missing.status.code().unwrap_or(-1);
    assert!(
        (1..=125).contains(&code),
        "not archived ends recovery normally: {code} {}",
        text(&missing)
    );
}
