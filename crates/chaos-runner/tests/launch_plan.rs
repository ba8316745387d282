//! The shipped launch-plan matrix (docs/chaos-runner/launch-plan.yaml)
//! against the sandbox marketplace as processes (gateway, auth, catalog,
//! consumer) on real PostgreSQL, Redis and RabbitMQ, each dependency behind
//! chaos-runner's fault proxy, with a real Prometheus loaded with the shipped
//! marketplace rules. A healthy sandbox passes every row with its recovery
//! measured; a sandbox broken on purpose fails the right rows.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::path::PathBuf;

use common::{check, report, run, table};
use shared_types::Verdict;
use testkit::chaos_stage::{ChaosStage, ChaosStageOptions};

struct Setup {
    stage: ChaosStage,
    dir: tempfile::TempDir,
}

/// The stage with every dependency behind the fault proxy; `broken` starts
/// the sandbox with `--no-cache-fallback --no-outbox`.
async fn setup(broken: bool) -> Setup {
    let stage = ChaosStage::start(ChaosStageOptions {
        chaos_runner: Some(common::BIN.into()),
        broken,
        // The launch plan's 10,000.
        flood_messages: None,
        ..ChaosStageOptions::default()
    })
    .await
    .unwrap();
    Setup { stage, dir: tempfile::tempdir().unwrap() }
}

impl Setup {
    /// Runs rows of `file` (the launch plan by default); (exit code, report).
    async fn run(
        &self,
        file: Option<PathBuf>,
        rows: &[&str],
        name: &str,
    ) -> (i32, shared_types::Report, String) {
        let file =
            file.unwrap_or_else(|| common::root().join("docs/chaos-runner/launch-plan.yaml"));
        let report_path = self.dir.path().join(format!("{name}.json"));
        let mut args: Vec<String> = vec!["run".into(), file.display().to_string()];
        args.extend(self.stage.vars());
        for r in rows {
            args.extend(["--experiment".to_owned(), (*r).to_owned()]);
        }
        args.extend([
            "--state-dir".to_owned(),
            self.dir.path().join("state").display().to_string(),
            "--report".to_owned(),
            report_path.display().to_string(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = run(&refs).await;
        assert!(report_path.exists(), "no report: exit {code}\n{stdout}\n{stderr}");
        (code, report(&report_path), format!("{stdout}\n{stderr}"))
    }
}

fn measured(report: &shared_types::Report, name: &str) -> f64 {
    report.measurements.iter().find(|m| m.name == name).map(|m| m.value).unwrap_or_else(|| {
        let names: Vec<&str> = report.measurements.iter().map(|m| m.name.as_str()).collect();
        panic!("no measurement {name} in {names:?}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_passes_on_a_healthy_sandbox_with_its_recovery_measured() {
    let s = setup(false).await;
    let rows = ["auth-down", "database-down", "redis-down", "rabbitmq-down", "rabbitmq-flood"];
    let (code, report, output) = s.run(None, &rows, "healthy").await;
    eprintln!("{}", table(&report));
    eprintln!("{:#?}", report.measurements);
    assert_eq!(code, 0, "{}\n{output}", table(&report));
    for row in rows {
        assert_eq!(
            check(&report, &format!("{row}/recovered")).verdict,
            Verdict::Pass,
            "{}",
            table(&report)
        );
        assert_eq!(check(&report, &format!("{row}/faults-undone")).verdict, Verdict::Pass);
        // The flood heals alone (measured from the flood, not an undo): its budget is 5 minutes.
        let budget = if row == "rabbitmq-flood" { 300.0 } else { 60.0 };
        let took = measured(&report, &format!("{row}.recover_seconds"));
        assert!((0.0..budget).contains(&took), "{row} recovered in {took} s");
    }
    // Auth down: users saw errors, all of them graceful 503s, browsing unaffected,
    // and the shipped fast-burn alert fired in Prometheus.
    assert!(measured(&report, "auth-down.user_errors") > 0.0, "{}", table(&report));
    assert_eq!(check(&report, "auth-down/graceful-errors").verdict, Verdict::Pass);
    assert_eq!(check(&report, "auth-down/no-cascade").verdict, Verdict::Pass);
    assert_eq!(
        check(&report, "auth-down/alert-fired").verdict,
        Verdict::Pass,
        "{}",
        table(&report)
    );
    assert!(measured(&report, "auth-down.detect_seconds") < 10.0);
    // Redis down: no user saw anything.
    assert_eq!(measured(&report, "redis-down.user_errors"), 0.0);
    // RabbitMQ down: every acknowledged order was consumed.
    assert!(measured(&report, "rabbitmq-down.acknowledged") >= 100.0, "{}", table(&report));
    assert_eq!(check(&report, "rabbitmq-down/no-data-loss").verdict, Verdict::Pass);
    // The flood: 10,000 messages seen in the queue (a live passive-declare count), then drained.
    assert!(measured(&report, "rabbitmq-flood.max_queue_depth") > 0.0);
    assert_eq!(check(&report, "rabbitmq-flood/drained").verdict, Verdict::Pass);
    // Every fault was journaled before it was applied, and undone.
    let journal = common::journal(&s.dir.path().join("state"));
    let applying = journal.iter().filter(|e| e["event"] == "applying").count();
    let undone = journal.iter().filter(|e| e["event"] == "undone").count();
    assert_eq!(applying, 5);
    assert_eq!(undone, 5);
    for name in ["postgres", "redis", "amqp"] {
        let state: serde_json::Value =
            reqwest::get(format!("{}/proxies/{name}", s.stage.proxy_api))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(state["enabled"], true, "{state}");
    }

    // A row whose alert does not fire fails: Redis down with a fallback
    // causes no errors, so the fast-burn alert stays silent.
    let text = std::fs::read_to_string(common::root().join("docs/chaos-runner/launch-plan.yaml"))
        .unwrap()
        .replace("      max_user_errors: 0\n\n  - id: rabbitmq-down", "      max_user_errors: 0\n      alert: {name: HttpErrorRateFastBurn, fire_within: 20s}\n\n  - id: rabbitmq-down");
    let variant = s.dir.path().join("alert-variant.yaml");
    std::fs::write(&variant, text).unwrap();
    let (code, report, output) = s.run(Some(variant), &["redis-down"], "no-alert").await;
    assert_eq!(code, 1, "{}\n{output}", table(&report));
    let alert = check(&report, "redis-down/alert-fired");
    assert_eq!(alert.verdict, Verdict::Fail, "{}", table(&report));
    assert_eq!(alert.observed.as_deref(), Some("never fired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_sandbox_fails_the_right_rows() {
    let s = setup(true).await;
    let (code, report, output) = s.run(None, &["redis-down", "rabbitmq-down"], "broken").await;
    assert_eq!(code, 1, "{}\n{output}", table(&report));
    // Without the cache fallback, Redis down shows as user-visible errors.
    let errors = check(&report, "redis-down/user-errors");
    assert_eq!(errors.verdict, Verdict::Fail, "{}", table(&report));
    assert!(errors.detail.as_deref().unwrap_or("").contains("503"), "{}", table(&report));
    // Without the outbox, RabbitMQ down loses orders, named by id.
    let loss = check(&report, "rabbitmq-down/no-data-loss");
    assert_eq!(loss.verdict, Verdict::Fail, "{}", table(&report));
    let detail = loss.detail.as_deref().unwrap_or("");
    assert!(detail.starts_with("missing order ids: "), "{detail}");
    // The ids named are orders the database holds and the consumer never saw.
    let first: i64 =
        detail["missing order ids: ".len()..].split(',').next().unwrap().trim().parse().unwrap();
    let client = testkit::postgres::connect(s.stage.database.url()).await.unwrap();
    let stored: i64 = client
        .query_one("SELECT count(*) FROM sandbox.orders WHERE id = $1", &[&first])
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let consumed: i64 = client
        .query_one("SELECT count(*) FROM sandbox.processed_events WHERE order_id = $1", &[&first])
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!((stored, consumed), (1, 0));
    // The faults were undone all the same.
    assert_eq!(check(&report, "redis-down/faults-undone").verdict, Verdict::Pass);
    assert_eq!(check(&report, "rabbitmq-down/faults-undone").verdict, Verdict::Pass);
}
