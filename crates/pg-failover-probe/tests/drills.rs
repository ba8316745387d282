//! Failover drills on a real PostgreSQL primary + streaming standby started by
//! testkit: the probe must find zero loss when replication is synchronous, and
//! exactly the lost commits when an asynchronous standby was cut off first.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use pg_failover_probe::ledger::{LedgerContents, WriteKey};
use pg_failover_probe::{DrillPlan, Mode, RunOptions};
use shared_types::{Report, Verdict};
use testkit::{PgPair, PgPairOptions};

fn options(pair: &PgPair, dir: &tempfile::TempDir) -> RunOptions {
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
        pair.primary_port(),
        pair.standby_port()
    );
    let mut options = RunOptions::new(url.parse().unwrap(), dir.path().join("ledger.jsonl"));
    options.workload.write_interval = Duration::from_millis(5);
    options.workload.connect_timeout = Duration::from_secs(1);
    options.workload.statement_timeout = Duration::from_secs(3);
    options.sample_interval = Duration::from_millis(200);
    options.verify_wait = Duration::from_secs(20);
    options
}

fn plan(steps: Vec<String>) -> DrillPlan {
    DrillPlan {
        steps,
        warmup: Duration::from_secs(2),
        settle: Duration::from_secs(1),
        max_wait: Duration::from_secs(40),
        step_timeout: Duration::from_secs(60),
    }
}

fn check<'a>(report: &'a Report, id: &str) -> &'a shared_types::Check {
    report
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id} in {}", report.to_json_pretty()))
}

fn measurement(report: &Report, name: &str) -> f64 {
    report.measurements.iter().find(|m| m.name == name).map(|m| m.value).unwrap()
}

async fn drill(pair: &PgPair, steps: Vec<String>) -> (Report, LedgerContents) {
    let dir = tempfile::tempdir().unwrap();
    let options = options(pair, &dir);
    let report = pg_failover_probe::run(&options, Mode::Drill(plan(steps)), std::future::pending())
        .await
        .unwrap();
    let ledger = LedgerContents::load(&options.ledger_path).unwrap();
    (report, ledger)
}

fn assert_clean_failover(report: &Report, ledger: &LedgerContents) {
    let json = report.to_json_pretty();
    assert!(ledger.acked.len() > 100, "the probe wrote ({} acks)", ledger.acked.len());
    for id in [
        "failover-time",
        "data-loss",
        "duplicates",
        "pool-recovery",
        "failover-visible",
        "replication-durability",
        "total-downtime",
        "read-availability",
        "replication-lag-before",
        "query-success-rate",
    ] {
        assert_eq!(check(report, id).verdict, Verdict::Pass, "{id}: {json}");
    }
    assert_eq!(report.exit_code().code(), 0, "{json}");
    let downtime = measurement(report, "write_downtime");
    assert!(downtime > 0.0 && downtime < 30_000.0, "downtime {downtime} ms");
    let total = measurement(report, "total_write_downtime");
    assert!(
        total >= downtime && total < 30_000.0,
        "total downtime {total} ms, longest {downtime} ms"
    );
    assert_eq!(measurement(report, "lost_commits"), 0.0);
    assert_eq!(report.data["primaries"]["after"]["timeline"], 2, "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_switchover_with_synchronous_replication_loses_nothing() {
    let pair = PgPair::start(PgPairOptions { synchronous: true }).await.unwrap();
    let steps = vec![pair.primary_pg_ctl("stop -m fast -w"), pair.standby_pg_ctl("promote -w")];
    let (report, ledger) = drill(&pair, steps).await;
    assert_clean_failover(&report, &ledger);
}

#[tokio::test(flavor = "multi_thread")]
async fn primary_crash_with_synchronous_replication_loses_nothing() {
    let pair = PgPair::start(PgPairOptions { synchronous: true }).await.unwrap();
    let steps =
        vec![pair.primary_pg_ctl("stop -m immediate -w"), pair.standby_pg_ctl("promote -w")];
    let (report, ledger) = drill(&pair, steps).await;
    assert_clean_failover(&report, &ledger);
    // The measured outage sits inside the drill's own timestamps: it starts
    // after the crash step began (at most one write interval earlier, the last
    // success) and ends no later than a few seconds after the promotion returned.
    let outage = &report.data["write_outage_ms"];
    let drill = &report.data["drill_window_ms"];
    let (from, to) = (outage["from"].as_f64().unwrap(), outage["to"].as_f64().unwrap());
    let (drill_from, drill_to) = (drill["from"].as_f64().unwrap(), drill["to"].as_f64().unwrap());
    assert!(
        from >= drill_from - 50.0 && from <= drill_to,
        "outage {from}..{to} vs drill {drill_from}..{drill_to}"
    );
    assert!(
        to >= drill_from && to <= drill_to + 5_000.0,
        "outage {from}..{to} vs drill {drill_from}..{drill_to}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_cutting_off_an_async_standby_reports_exactly_the_lost_commits() {
    let pair = PgPair::start(PgPairOptions { synchronous: false }).await.unwrap();
    let cut_off = format!(
        "psql -X -q -h 127.0.0.1 -p {} -U postgres -d postgres -c \"ALTER SYSTEM SET primary_conninfo = ''\" -c 'SELECT pg_reload_conf()'",
        pair.standby_port()
    );
    let steps = vec![
        cut_off,
        "sleep 1".to_owned(),
        pair.primary_pg_ctl("stop -m immediate -w"),
        pair.standby_pg_ctl("promote -w"),
    ];
    let (report, ledger) = drill(&pair, steps).await;
    let json = report.to_json_pretty();
    assert_eq!(report.exit_code().code(), 1, "{json}");
    assert_eq!(check(&report, "data-loss").verdict, Verdict::Fail, "{json}");
    assert_eq!(check(&report, "replication-durability").verdict, Verdict::Fail);
    let reported: BTreeSet<WriteKey> = serde_json::from_value(report.data["lost"].clone()).unwrap();
    assert!(!reported.is_empty(), "commits acknowledged during the cut-off are lost");

    // Ground truth, independent of the probe: restart the old primary (now a
    // split brain on the old timeline) and diff its rows with the new primary's.
    pair.start_primary().await.unwrap();
    let on_old = common::probe_rows(&pair.primary_url(), &ledger.run_id).await;
    let on_new = common::probe_rows(&pair.standby_url(), &ledger.run_id).await;
    let expected: BTreeSet<WriteKey> =
        ledger.acked.iter().filter(|k| !on_new.contains(k)).copied().collect();
    assert_eq!(
        reported, expected,
        "the probe lists exactly the acknowledged commits the new primary lacks"
    );
    assert!(
        reported.is_subset(&on_old),
        "every lost commit really was committed on the old primary"
    );
    assert!(measurement(&report, "wal_not_received") > 0.0, "{json}");
}
