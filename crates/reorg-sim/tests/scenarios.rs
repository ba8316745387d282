//! Every built-in scenario against the reference indexer on the machine's
//! real PostgreSQL (one temporary database per test), the faulty indexer
//! caught, and random reorg sequences keeping the indexer equal to the oracle.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use proptest::prelude::*;
use reorg_sim::runner::{IndexerUnderTest, RunOptions, run_scenario};
use reorg_sim::scenario::ReorgScenario;
use shared_types::{ExitCode, Report, Verdict};
use testkit::TempDatabase;

async fn run(name: &str, no_rollback: bool) -> Report {
    let db = TempDatabase::create().await.unwrap();
    let mut options = RunOptions::new(db.url());
    options.indexer = IndexerUnderTest::Reference { no_rollback };
    run_scenario(&ReorgScenario::builtin(name).unwrap(), &options).await.unwrap()
}

fn verdict(report: &Report, id: &str) -> Verdict {
    report.checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}")).verdict
}

fn assert_passes(report: &Report) {
    let failed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| !matches!(c.verdict, Verdict::Pass | Verdict::Skipped))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(report.exit_code(), ExitCode::Success);
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_plan_reorg_of_50_blocks_is_rolled_back_and_reindexed() {
    let report = run("launch-plan", false).await;
    assert_passes(&report);
    for id in ["reorgs-recorded", "affected-nfts-listed", "detection-delay", "balances-match"] {
        assert_eq!(verdict(&report, id), Verdict::Pass, "{id}");
    }
    let head = report.checks.iter().find(|c| c.id == "indexer-head").unwrap();
    assert!(head.observed.as_deref().unwrap().starts_with("block 1150 "), "{head:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shallow_reorgs_of_1_to_5_blocks_converge() {
    assert_passes(&run("shallow", false).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn medium_reorgs_of_10_to_30_blocks_converge() {
    assert_passes(&run("medium", false).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_reorgs_up_to_the_64_block_finality_window_converge() {
    assert_passes(&run("deep", false).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn reorg_deeper_than_finality_halts_indexer_with_its_data_intact() {
    let report = run("extreme", false).await;
    assert_passes(&report);
    let halted = report.checks.iter().find(|c| c.id == "halted-safely").unwrap();
    assert_eq!(halted.verdict, Verdict::Pass);
    assert!(halted.detail.as_deref().unwrap().contains("finality window"), "{halted:?}");
    // The data is the old branch's, exactly: head 1100, nothing rolled back.
    let head = report.checks.iter().find(|c| c.id == "indexer-head").unwrap();
    assert!(head.observed.as_deref().unwrap().starts_with("block 1100 "), "{head:?}");
    assert_eq!(verdict(&report, "no-missing-events"), Verdict::Pass);
}

#[tokio::test(flavor = "multi_thread")]
async fn lagging_rpc_corrupts_nothing_and_raises_no_false_reorg() {
    let report = run("lagging-rpc", false).await;
    assert_passes(&report);
    let lagged = report.measurements.iter().find(|m| m.name == "lagged_responses").unwrap();
    assert!(lagged.value > 10.0, "the lagging node really answered: {lagged:?}");
    let reorgs = report.checks.iter().find(|c| c.id == "reorgs-recorded").unwrap();
    assert_eq!(reorgs.observed.as_deref(), Some("0 recorded, 0 injected"));
}

#[tokio::test(flavor = "multi_thread")]
async fn indexer_without_rollback_is_caught_by_the_verifier() {
    let report = run("launch-plan", true).await;
    assert_eq!(report.exit_code(), ExitCode::CriterionNotMet);
    for id in ["no-stale-rows", "balances-match", "reorgs-recorded", "affected-nfts-listed"] {
        assert_eq!(verdict(&report, id), Verdict::Fail, "{id} must catch the missing rollback");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random sequences of reorgs (depth 1..=16 with a 16-block window,
    /// longer, equal and shorter new branches, extensions in between) keep
    /// the reference indexer equal to the oracle.
    #[test]
    fn random_reorg_sequences_keep_the_indexer_equal_to_the_oracle(seed in any::<u64>(), reorgs in 1usize..5) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let scenario = ReorgScenario::random(seed, reorgs);
        let report = runtime.block_on(async {
            let db = TempDatabase::create().await.unwrap();
            run_scenario(&scenario, &RunOptions::new(db.url())).await.unwrap()
        });
        let failed: Vec<_> = report.checks.iter().filter(|c| !matches!(c.verdict, Verdict::Pass | Verdict::Skipped)).collect();
        prop_assert!(failed.is_empty(), "seed {seed}, {reorgs} reorgs: {failed:#?}\nsteps: {:#?}", scenario.steps);
    }
}
