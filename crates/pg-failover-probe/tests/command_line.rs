//! The binary: a killed probe loses no ledger entry and resumes; bad URLs and
//! unreachable servers get the contract's exit codes; drills refuse targets
//! outside the allow-list and `--dry-run` changes nothing.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pg_failover_probe::ledger::LedgerContents;
use testkit::TempDatabase;

fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pg-failover-probe")).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_probe_loses_no_ledger_entry_and_resumes_the_run() {
    let db = TempDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let ledger_arg = ledger.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg-failover-probe"))
        .args([
            "watch",
            "--url",
            db.url(),
            "--ledger",
            ledger_arg,
            "--duration",
            "60s",
            "--write-interval",
            "0ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while LedgerContents::load(&ledger).map_or(0, |c| c.acked.len()) < 300 {
        assert!(Instant::now() < deadline, "the probe journals acknowledgements");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL: no chance to flush or clean up
    child.wait().unwrap();

    let first = LedgerContents::load(&ledger).unwrap();
    let in_db = common::probe_rows(db.url(), &first.run_id).await;
    assert!(first.acked.is_subset(&in_db), "every journaled ack is committed");
    let unjournaled = in_db.difference(&first.acked).count();
    assert!(
        unjournaled <= 4,
        "at most one in-flight write per writer escaped the journal, got {unjournaled}"
    );

    let resumed = probe(&[
        "watch",
        "--url",
        db.url(),
        "--ledger",
        ledger_arg,
        "--duration",
        "1s",
        "--accept-async",
    ]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let after = LedgerContents::load(&ledger).unwrap();
    assert_eq!(after.run_id, first.run_id);
    assert_eq!(after.incarnation, 2);
    assert!(first.acked.is_subset(&after.acked), "no entry of the killed run was lost");
    assert!(after.acked.iter().any(|(incarnation, _, _)| *incarnation == 2));

    let checked =
        probe(&["check-ledger", "--url", db.url(), "--ledger", ledger_arg, "--output", "json"]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));
    let report =
        shared_types::Report::from_json(&String::from_utf8_lossy(&checked.stdout)).unwrap();
    assert_eq!(report.data["acknowledged"], after.acked.len());
}

#[test]
fn a_malformed_url_exits_2() {
    let output = probe(&["watch", "--url", "postgres://[::1", "--duration", "1s"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("invalid --url"), "{}", text(&output));
}

#[test]
fn an_unreachable_server_exits_3_naming_it_without_the_password() {
    let port = testkit::free_port();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/postgres");
    let output = probe(&["watch", "--url", &url, "--duration", "1s", "--connect-timeout", "1s"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(
        message.contains(&format!("cannot reach a primary at 127.0.0.1:{port}/postgres")),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn drills_refuse_hosts_outside_the_allow_list() {
    let output =
        probe(&["drill", "--url", "postgres://app@db.prod.example:5432/app", "--step", "true"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("refusing to drill against db.prod.example:5432"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_dry_run_prints_the_plan_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("step-ran");
    let step = format!("touch {}", marker.display());
    let port = testkit::free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let output = probe(&["drill", "--url", &url, "--step", &step, "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains(&format!("sh -c \"{step}\"")), "{}", text(&output));
    assert!(!marker.exists(), "the step did not run");
}

#[test]
fn a_threshold_on_an_unknown_metric_exits_2() {
    let output =
        probe(&["watch", "--url", "postgres://postgres@127.0.0.1/x", "--threshold", "p95 < 1s"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("unknown metric \"p95\""), "{}", text(&output));
}

async fn schema_exists(url: &str, schema: &str) -> bool {
    let client = testkit::postgres::connect(url).await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            &[&schema],
        )
        .await
        .unwrap();
    row.try_get::<_, i64>(0).unwrap() == 1
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_honours_dry_run_the_allow_list_and_never_drops_shared_schemas() {
    let db = TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute("CREATE SCHEMA probe_cleanup; CREATE TABLE public.keep (x int)")
        .await
        .unwrap();

    for shared in ["public", "pg_catalog", "information_schema", "pg_toast"] {
        let output = probe(&["cleanup", "--url", db.url(), "--schema", shared]);
        assert_eq!(output.status.code(), Some(2), "{shared}: {}", text(&output));
        assert!(text(&output).contains("refusing to drop schema"), "{}", text(&output));
    }
    assert!(schema_exists(db.url(), "public").await);

    let output = probe(&["cleanup", "--url", db.url(), "--schema", "probe_cleanup", "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("DROP SCHEMA IF EXISTS probe_cleanup CASCADE"),
        "{}",
        text(&output)
    );
    assert!(schema_exists(db.url(), "probe_cleanup").await, "a dry run drops nothing");

    let output = probe(&[
        "cleanup",
        "--url",
        "postgres://app@db.prod.example:5432/app",
        "--schema",
        "probe_cleanup",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("refusing to clean up db.prod.example:5432"),
        "{}",
        text(&output)
    );

    let output = probe(&["cleanup", "--url", db.url(), "--schema", "probe_cleanup"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(!schema_exists(db.url(), "probe_cleanup").await);
    assert!(schema_exists(db.url(), "public").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn unmeasured_reads_exit_3_unless_waived_by_skip_check() {
    let db = TempDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let base = [
        "watch",
        "--url",
        db.url(),
        "--ledger",
        ledger.to_str().unwrap(),
        "--duration",
        "1s",
        "--readers",
        "0",
        "--accept-async",
        "--output",
        "json",
    ];
    let output = probe(&base);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let read = checks.iter().find(|c| c["id"] == "read-availability").unwrap();
    assert_eq!(read["verdict"], "not_evaluated", "{read}");
    let total = checks.iter().find(|c| c["id"] == "total-downtime").unwrap();
    assert_eq!(total["verdict"], "pass", "{total}");

    let mut waived = base.to_vec();
    waived.extend(["--skip-check", "read-availability"]);
    let output = probe(&waived);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_of_an_unexpected_type_is_an_error_naming_table_and_column() {
    let db = TempDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let ledger_arg = ledger.to_str().unwrap();
    let output = probe(&[
        "watch",
        "--url",
        db.url(),
        "--ledger",
        ledger_arg,
        "--duration",
        "1s",
        "--accept-async",
    ]);
    assert!(ledger.exists(), "{}", text(&output));
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute("ALTER TABLE postlaunch_probe.probe_writes ALTER incarnation TYPE bigint")
        .await
        .unwrap();
    let output = probe(&["check-ledger", "--url", db.url(), "--ledger", ledger_arg]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(message.contains("postlaunch_probe.probe_writes"), "{message}");
    assert!(message.contains("column incarnation"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_step_is_journaled_before_it_runs_and_ctrl_c_interrupts_it() {
    let db = TempDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_pg-failover-probe"))
        .args([
            "drill",
            "--url",
            db.url(),
            "--ledger",
            ledger.to_str().unwrap(),
            "--warmup",
            "0s",
            "--step",
            "sleep 60",
            "--accept-async",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let journal = std::fs::read_to_string(&ledger).unwrap_or_default();
        if journal.contains("\"drill_step_started\"") {
            assert!(!journal.contains("\"kind\":\"drill_step\""), "{journal}");
            break;
        }
        assert!(Instant::now() < deadline, "the step was never journaled as started: {journal}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let interrupted_at = Instant::now();
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(interrupted_at.elapsed() < Duration::from_secs(30), "Ctrl-C did not stop the step");
    let message = text(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(message.contains("interrupted"), "{message}");
    let journal = std::fs::read_to_string(&ledger).unwrap();
    assert!(
        journal.contains("\"kind\":\"drill_step\""),
        "the interrupted step is journaled: {journal}"
    );
}
