//! No verdict without evidence, on the machine's real PostgreSQL: a mapping
//! that cannot show a criterion leaves it not evaluated (waivable by name),
//! `halted-safely` passes only on a documented halt (never on a crash or a
//! signal), the schema reset refuses what it must never drop and has a dry
//! run, and rows of an unexpected type are errors naming table and column.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::process::{Command, Output};

use reorg_sim::chain::ChainConfig;
use reorg_sim::runner::{IndexerUnderTest, RunOptions, run_scenario};
use reorg_sim::scenario::ReorgScenario;
use reorg_sim::simulator::ChainSimulator;
use reorg_sim::verify::Mapping;
use reorg_sim::workload::EventCounts;
use shared_types::{Check, ExitCode, Report, Verdict};
use testkit::TempDatabase;

const BIN: &str = env!("CARGO_BIN_EXE_reorg-sim");

fn reorg_sim(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn check<'a>(report: &'a Report, id: &str) -> &'a Check {
    report.checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}"))
}

async fn run_with(name: &str, options: RunOptions) -> Report {
    run_scenario(&ReorgScenario::builtin(name).unwrap(), &options).await.unwrap()
}

// 1. Missing mapping queries.

#[tokio::test(flavor = "multi_thread")]
async fn a_mapping_without_affected_nfts_or_reorgs_leaves_those_checks_not_evaluated() {
    let db = TempDatabase::create().await.unwrap();
    let mut options = RunOptions::new(db.url());
    options.mapping = Some(Mapping { affected_nfts: None, ..Mapping::reference("reorg_sim") });
    let report = run_with("launch-plan", options).await;
    let affected = check(&report, "affected-nfts-listed");
    assert_eq!(affected.verdict, Verdict::NotEvaluated, "{affected:?}");
    assert!(affected.detail.as_deref().unwrap().contains("`affected_nfts`"), "{affected:?}");
    assert_eq!(check(&report, "reorgs-recorded").verdict, Verdict::Pass);
    assert_eq!(report.exit_code(), ExitCode::CouldNotRun, "unmeasured is never a pass");

    let db = TempDatabase::create().await.unwrap();
    let mut options = RunOptions::new(db.url());
    options.mapping = Some(Mapping { reorgs: None, ..Mapping::reference("reorg_sim") });
    let report = run_with("launch-plan", options).await;
    for id in ["reorgs-recorded", "detection-delay"] {
        let c = check(&report, id);
        assert_eq!(c.verdict, Verdict::NotEvaluated, "{c:?}");
        assert!(c.detail.as_deref().unwrap().contains("`reorgs`"), "{c:?}");
    }
    assert_eq!(check(&report, "affected-nfts-listed").verdict, Verdict::Pass);
    assert_eq!(report.exit_code(), ExitCode::CouldNotRun);
}

#[tokio::test(flavor = "multi_thread")]
async fn skip_check_waives_an_unevaluated_check_by_name_and_nothing_else() {
    let db = TempDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mapping.yaml");
    let mapping = Mapping { affected_nfts: None, ..Mapping::reference("reorg_sim") };
    // JSON is YAML.
    std::fs::write(&path, serde_json::to_string(&mapping).unwrap()).unwrap();
    let path = path.to_str().unwrap();
    let args = ["run", "--scenario", "shallow", "--database-url", db.url(), "--mapping", path];

    let output = reorg_sim(&args);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("affected-nfts-listed"));

    let output = reorg_sim(&[&args[..], &["--skip-check", "affected-nfts-lisd"]].concat());
    assert_eq!(
        output.status.code(),
        Some(3),
        "a misspelt waiver waives nothing: {}",
        text(&output)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("affected-nfts-lisd"));

    let output = reorg_sim(
        &[&args[..], &["--skip-check", "affected-nfts-listed", "--output", "json"]].concat(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report = Report::from_json(&String::from_utf8_lossy(&output.stdout)).unwrap();
    let waived = check(&report, "affected-nfts-listed");
    assert_eq!(waived.verdict, Verdict::Skipped);
    assert!(waived.detail.as_deref().unwrap().contains("waived by --skip-check"), "{waived:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_query_without_the_halted_column_leaves_halted_safely_not_evaluated() {
    let db = TempDatabase::create().await.unwrap();
    let mut options = RunOptions::new(db.url());
    let reference = Mapping::reference("reorg_sim");
    options.mapping = Some(Mapping {
        checkpoint: "SELECT number::text, encode(hash, 'hex') FROM reorg_sim.checkpoint".to_owned(),
        ..reference
    });
    let report = run_with("extreme", options).await;
    let halted = check(&report, "halted-safely");
    assert_eq!(halted.verdict, Verdict::NotEvaluated, "{halted:?}");
    assert!(halted.detail.as_deref().unwrap().contains("`halted` column"), "{halted:?}");
}

// 2. halted-safely needs the documented halt.

/// `reorg-sim index` (exit 3 and a halted checkpoint on a reorg beyond
/// finality), wrapped by `then`, which runs after it with its code in `$code`.
fn indexer_cmd(then: &str) -> IndexerUnderTest {
    IndexerUnderTest::Command(format!("'{BIN}' index --poll-interval 20ms; code=$?; {then}"))
}

async fn extreme_with(indexer: IndexerUnderTest) -> Report {
    let db = TempDatabase::create().await.unwrap();
    let mut options = RunOptions::new(db.url());
    options.indexer = indexer;
    run_with("extreme", options).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_indexer_command_that_halts_with_exit_3_passes_halted_safely() {
    let report = extreme_with(indexer_cmd("exit $code")).await;
    let halted = check(&report, "halted-safely");
    assert_eq!(halted.verdict, Verdict::Pass, "{halted:?}");
    assert!(halted.detail.as_deref().unwrap().contains("exited with code 3"), "{halted:?}");
    assert_eq!(report.exit_code(), ExitCode::Success, "{:#?}", report.checks);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_indexer_that_crashes_on_an_extreme_reorg_fails_halted_safely() {
    // The checkpoint says halted, but the process ends like a Rust panic.
    let report = extreme_with(indexer_cmd("[ $code -eq 3 ] && exit 101; exit $code")).await;
    let halted = check(&report, "halted-safely");
    assert_eq!(halted.verdict, Verdict::Fail, "{halted:?}");
    assert!(halted.observed.as_deref().unwrap().contains("exited with code 101"), "{halted:?}");
    assert_eq!(report.exit_code(), ExitCode::CriterionNotMet);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_indexer_killed_on_an_extreme_reorg_fails_halted_safely() {
    let report = extreme_with(indexer_cmd("kill -9 $$")).await;
    let halted = check(&report, "halted-safely");
    assert_eq!(halted.verdict, Verdict::Fail, "{halted:?}");
    assert!(halted.observed.as_deref().unwrap().contains("killed by signal 9"), "{halted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_indexer_that_follows_a_reorg_beyond_finality_instead_of_halting_fails() {
    // The faulty mode never rolls back and never halts: it keeps running.
    let report = extreme_with(IndexerUnderTest::Command(format!(
        "'{BIN}' index --no-rollback --poll-interval 20ms; exit $?"
    )))
    .await;
    let halted = check(&report, "halted-safely");
    assert_eq!(halted.verdict, Verdict::Fail, "{halted:?}");
    assert_eq!(halted.observed.as_deref(), Some("checkpoint not halted"), "{halted:?}");
}

// 3. The schema reset.

async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().try_get(0).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_to_drop_public_and_system_schemas() {
    let db = TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute("CREATE TABLE public.users (id int); INSERT INTO public.users VALUES (1)")
        .await
        .unwrap();
    for schema in ["public", "pg_catalog", "information_schema", "pg_toast"] {
        for dry_run in [false, true] {
            let mut args = vec![
                "run",
                "--scenario",
                "shallow",
                "--database-url",
                db.url(),
                "--schema",
                schema,
            ];
            if dry_run {
                args.push("--dry-run");
            }
            let output = reorg_sim(&args);
            assert_eq!(output.status.code(), Some(2), "{schema}: {}", text(&output));
            assert!(
                String::from_utf8_lossy(&output.stderr)
                    .contains("public and system schemas are never dropped"),
                "{}",
                text(&output)
            );
        }
    }
    assert_eq!(scalar(&client, "SELECT count(*) FROM public.users").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_a_schema_holding_tables_the_reference_indexer_did_not_create() {
    let db = TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE SCHEMA app; CREATE TABLE app.users (id int); INSERT INTO app.users VALUES (1)",
        )
        .await
        .unwrap();
    for extra in [None, Some("--dry-run")] {
        let mut args =
            vec!["run", "--scenario", "shallow", "--database-url", db.url(), "--schema", "app"];
        args.extend(extra);
        let output = reorg_sim(&args);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains("(users)"), "{}", text(&output));
    }
    assert_eq!(scalar(&client, "SELECT count(*) FROM app.users").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reset_never_cascades_into_objects_that_depend_on_the_indexer_tables() {
    let db = TempDatabase::create().await.unwrap();
    let args = ["run", "--scenario", "shallow", "--database-url", db.url()];
    let output = reorg_sim(&args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE VIEW public.event_count AS SELECT count(*) AS n FROM reorg_sim.events",
        )
        .await
        .unwrap();
    let output = reorg_sim(&args);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nothing was dropped"),
        "{}",
        text(&output)
    );
    assert!(
        scalar(&client, "SELECT n FROM public.event_count").await > 0,
        "the view and the data survive"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_reset_and_changes_nothing() {
    let db = TempDatabase::create().await.unwrap();
    let output = reorg_sim(&["run", "--scenario", "shallow", "--database-url", db.url()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    let events = scalar(&client, "SELECT count(*) FROM reorg_sim.events").await;
    let checkpoint_at = "SELECT extract(epoch FROM updated_at)::int8 * 1000000 + extract(microseconds FROM updated_at)::int8 FROM reorg_sim.checkpoint";
    let updated = scalar(&client, checkpoint_at).await;

    let output =
        reorg_sim(&["run", "--scenario", "launch-plan", "--database-url", db.url(), "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("dry run: nothing is changed"), "{stdout}");
    assert!(stdout.contains("DROP TABLE IF EXISTS reorg_sim.affected_nfts"), "{stdout}");
    assert!(stdout.contains("DROP SCHEMA IF EXISTS reorg_sim RESTRICT"), "{stdout}");
    assert!(!stdout.contains("CASCADE"), "{stdout}");
    assert_eq!(scalar(&client, "SELECT count(*) FROM reorg_sim.events").await, events);
    assert_eq!(scalar(&client, checkpoint_at).await, updated, "no indexer ran");

    let output = reorg_sim(&["bench", "--database-url", db.url(), "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("reorg_sim_bench"),
        "{}",
        text(&output)
    );
    let bench_schema =
        scalar(&client, "SELECT count(*) FROM pg_namespace WHERE nspname = 'reorg_sim_bench'")
            .await;
    assert_eq!(bench_schema, 0, "the dry run created nothing");
}

// 4. Rows of an unexpected type.

#[tokio::test(flavor = "multi_thread")]
async fn index_exits_3_naming_table_and_column_when_its_checkpoint_holds_the_wrong_type() {
    let sim = ChainSimulator::new(ChainConfig::default());
    sim.extend(1010, &EventCounts { mints: 5, ..EventCounts::default() });
    let server = sim.serve(([127, 0, 0, 1], 0).into()).await.unwrap();
    for (table, wants) in [
        // number as int4: the indexer reads int8.
        (
            "CREATE TABLE reorg_sim.checkpoint (id int4 PRIMARY KEY, number int4 NOT NULL, hash bytea NOT NULL, halted bool NOT NULL DEFAULT false, halt_reason text, updated_at timestamptz NOT NULL DEFAULT now()); INSERT INTO reorg_sim.checkpoint (id, number, hash) VALUES (1, 1005, '\\x0102')",
            "reorg_sim.checkpoint column number",
        ),
        // a 2-byte hash.
        (
            "CREATE TABLE reorg_sim.checkpoint (id int4 PRIMARY KEY, number int8 NOT NULL, hash bytea NOT NULL, halted bool NOT NULL DEFAULT false, halt_reason text, updated_at timestamptz NOT NULL DEFAULT now()); INSERT INTO reorg_sim.checkpoint (id, number, hash) VALUES (1, 1005, '\\x0102')",
            "reorg_sim.checkpoint column hash: 2 bytes where 32 belong",
        ),
    ] {
        let db = TempDatabase::create().await.unwrap();
        let client = testkit::postgres::connect(db.url()).await.unwrap();
        client.batch_execute(&format!("CREATE SCHEMA reorg_sim; {table}")).await.unwrap();
        let url = server.http_url();
        let output = reorg_sim(&[
            "index",
            "--rpc-url",
            &url,
            "--database-url",
            db.url(),
            "--start-block",
            "1000",
            "--poll-interval",
            "20ms",
        ]);
        assert_eq!(output.status.code(), Some(3), "no panic: {}", text(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains(wants), "{}", text(&output));
    }
}

// 5. Detection delay in time.

#[tokio::test(flavor = "multi_thread")]
async fn detection_delay_is_measured_in_milliseconds_as_well_as_blocks() {
    let db = TempDatabase::create().await.unwrap();
    let report = run_with("launch-plan", RunOptions::new(db.url())).await;
    let delay = check(&report, "detection-delay");
    assert_eq!(delay.verdict, Verdict::Pass, "{delay:?}");
    assert!(delay.observed.as_deref().unwrap().ends_with(" ms"), "{delay:?}");
    let measured = |name: &str| {
        report.measurements.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no {name}"))
    };
    let detection = measured("reorg_2_detection");
    assert_eq!(detection.unit, "ms");
    assert!(detection.value > 0.0 && detection.value < 60_000.0, "{detection:?}");
    assert_eq!(measured("detection_delay_max").value, detection.value);
}
