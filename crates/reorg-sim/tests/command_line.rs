//! The binary: the contract's exit codes and JSON report, and a reference
//! indexer killed with SIGKILL mid-catch-up that resumes from its checkpoint
//! without a duplicate.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reorg_sim::chain::ChainConfig;
use reorg_sim::runner::verify_against_node;
use reorg_sim::simulator::ChainSimulator;
use reorg_sim::verify::Mapping;
use reorg_sim::workload::EventCounts;
use shared_types::{Report, Verdict};
use testkit::TempDatabase;

const BIN: &str = env!("CARGO_BIN_EXE_reorg-sim");

fn reorg_sim(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_plan_prints_a_passing_json_report_and_exits_0() {
    let db = TempDatabase::create().await.unwrap();
    let output = reorg_sim(&[
        "run",
        "--scenario",
        "launch-plan",
        "--database-url",
        db.url(),
        "--output",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = Report::from_json(&String::from_utf8_lossy(&output.stdout)).unwrap();
    assert_eq!(report.tool, "reorg-sim");
    assert_eq!(report.verdict(), Verdict::Pass);
    assert!(report.checks.iter().any(|c| c.id == "reorgs-recorded" && c.verdict == Verdict::Pass));
    assert!(!report.target.contains("password"));
}

#[tokio::test(flavor = "multi_thread")]
async fn faulty_indexer_without_rollback_exits_1() {
    let db = TempDatabase::create().await.unwrap();
    let output = reorg_sim(&[
        "run",
        "--scenario",
        "launch-plan",
        "--no-rollback",
        "--database-url",
        db.url(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("no-stale-rows") && table.contains("FAIL"), "{table}");
}

#[test]
fn unknown_scenario_is_a_usage_error_naming_the_built_ins() {
    let output = reorg_sim(&[
        "run",
        "--scenario",
        "sideways",
        "--database-url",
        "postgres://postgres@127.0.0.1/postgres",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("launch-plan, shallow, medium, deep, extreme, lagging-rpc"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unreachable_database_exits_3_without_showing_the_password() {
    let output = reorg_sim(&[
        "run",
        "--scenario",
        "shallow",
        "--database-url",
        "postgres://app:s3cret@127.0.0.1:1/app",
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("127.0.0.1:1") && !stderr(&output).contains("s3cret"),
        "{}",
        stderr(&output)
    );
}

async fn checkpoint(client: &tokio_postgres::Client) -> i64 {
    match client.query_opt("SELECT number FROM reorg_sim.checkpoint", &[]).await {
        Ok(Some(row)) => row.try_get(0).unwrap(),
        _ => 0,
    }
}

fn start_indexer(rpc: &str, db: &str) -> std::process::Child {
    Command::new(BIN)
        .args([
            "index",
            "--rpc-url",
            rpc,
            "--database-url",
            db,
            "--start-block",
            "1000",
            "--batch-blocks",
            "7",
            "--poll-interval",
            "20ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn indexer_killed_mid_catch_up_resumes_without_duplicates() {
    let sim = ChainSimulator::new(ChainConfig::default());
    sim.extend(
        2500,
        &EventCounts { mints: 1200, transfers: 900, burns: 120, batches: 180, uris: 60 },
    );
    let server = sim.serve(([127, 0, 0, 1], 0).into()).await.unwrap();
    let db = TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();

    let mut first = start_indexer(&server.http_url(), db.url());
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&client).await < 1300 {
        assert!(Instant::now() < deadline, "the indexer makes progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().unwrap(); // SIGKILL, possibly inside a transaction
    first.wait().unwrap();
    let killed_at = checkpoint(&client).await;
    assert!(killed_at < 2500, "killed mid-catch-up, at {killed_at}");

    let mut second = start_indexer(&server.http_url(), db.url());
    while checkpoint(&client).await < 2500 {
        assert!(Instant::now() < deadline, "the restarted indexer catches up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.kill().unwrap();
    second.wait().unwrap();

    let dup_tx: i64 = client.query_one("SELECT count(*) FROM (SELECT tx_hash FROM reorg_sim.events GROUP BY tx_hash HAVING count(*) > 1) d", &[]).await.unwrap().try_get(0).unwrap();
    assert_eq!(dup_tx, 0, "no transaction indexed twice");
    let report =
        verify_against_node(&server.http_url(), db.url(), &Mapping::reference("reorg_sim"), 1000)
            .await
            .unwrap();
    let failed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail || c.verdict == Verdict::Error)
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let events = report.measurements.iter().find(|m| m.name == "canonical_events").unwrap().value;
    assert!(events > 2000.0, "{events}");
}

#[tokio::test(flavor = "multi_thread")]
async fn index_exits_3_and_keeps_its_data_when_a_reorg_passes_finality() {
    let sim = ChainSimulator::new(ChainConfig::default());
    sim.extend(1100, &EventCounts { mints: 40, transfers: 20, ..EventCounts::default() });
    let server = sim.serve(([127, 0, 0, 1], 0).into()).await.unwrap();
    let db = TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    let child = Command::new(BIN)
        .args([
            "index",
            "--rpc-url",
            &server.http_url(),
            "--database-url",
            db.url(),
            "--start-block",
            "1000",
            "--poll-interval",
            "20ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint(&client).await < 1100 {
        assert!(Instant::now() < deadline, "the indexer catches up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events_before: i64 = client
        .query_one("SELECT count(*) FROM reorg_sim.events", &[])
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    sim.reorg(&reorg_sim::chain::ReorgSpec { depth: 65, longer_by: Some(3), ..Default::default() })
        .unwrap();
    let output =
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("more than 64 blocks"), "{}", stderr(&output));
    let events_after: i64 = client
        .query_one("SELECT count(*) FROM reorg_sim.events", &[])
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(
        (checkpoint(&client).await, events_after),
        (1100, events_before),
        "nothing rolled back"
    );
}
