//! The main job's output keeps the documented contract: the report written to
//! `report.json` validates against docs/report-schema.json, and the committed
//! schema is the one the report types generate.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::path::PathBuf;

use serde_json::Value;
use xtask::verify::{self, VerifyOptions};

fn committed_schema() -> Value {
    let path = xtask::workspace::root().join("docs/report-schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn committed_schema_matches_the_report_types() {
    let committed = committed_schema();
    let generated: Value = serde_json::from_str(&verify::report_schema_text()).unwrap();
    assert_eq!(committed, generated, "docs/report-schema.json is stale: run `cargo xtask schema`");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_writes_a_report_that_validates_against_the_schema() {
    let out = tempfile::tempdir().unwrap();
    let options = VerifyOptions {
        out_dir: PathBuf::from(out.path()),
        history_dir: out.path().join("history"),
        sandbox_args: ["--collections", "100", "--nfts", "2000"].map(String::from).to_vec(),
        ..VerifyOptions::default()
    };
    let report = verify::run(&options).await.expect("verify runs against the sandbox");
    assert_eq!(report.exit_code().code(), 0, "{}", report.to_json_pretty());

    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    let validator =
        jsonschema::validator_for(&committed_schema()).expect("the schema is a valid JSON Schema");
    let problems: Vec<String> =
        validator.iter_errors(&written).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(problems.is_empty(), "report.json breaks the schema: {problems:#?}");

    let ids: Vec<&str> =
        written["checks"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    for id in [
        "sandbox/healthz",
        "sandbox/metrics",
        "load-tester/p95-latency",
        "database/slow-queries",
        "kpi/p95",
        "kpi/error-rate",
        "kpi/uptime",
        "kpi/mttr",
        "kpi/load-capacity",
        "kpi/db-query-time",
        "kpi/cache-hit-rate",
        "kpi/infrastructure-cost",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(out.path().join("sandbox.json").exists());
    // Every KPI of the table has a value and a source, or says why not.
    let rows = written["data"]["kpis"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    for row in rows {
        assert!(!row["source"].as_str().unwrap().is_empty(), "{row}");
        if row["value"].is_null() {
            assert!(!row["evidence"].as_str().unwrap().is_empty(), "{row}");
        }
    }
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(markdown.contains("| P95 response time |"), "{markdown}");
    assert!(markdown.contains("kpi/p95"), "{markdown}");
    assert!(out.path().join("report.html").exists());

    // A report that breaks the contract is caught by the same validator.
    let mut broken = written.clone();
    broken["checks"][0]["verdict"] = Value::from("maybe");
    assert!(!validator.is_valid(&broken));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_fails_when_the_target_breaches_the_error_budget() {
    let sandbox =
        testkit::Sandbox::start(&["--collections", "10", "--nfts", "100"].map(String::from))
            .await
            .expect("sandbox binary built by `cargo xtask test`");
    let faults = reqwest::Client::new()
        .post(format!("{}/admin/faults", sandbox.url()))
        .json(&serde_json::json!({ "error_rate": 0.05 }))
        .send()
        .await
        .unwrap();
    assert_eq!(faults.status(), 200);

    let out = tempfile::tempdir().unwrap();
    let options = VerifyOptions {
        out_dir: PathBuf::from(out.path()),
        history_dir: out.path().join("history"),
        target: Some(sandbox.url().to_owned()),
        steps: vec!["load-tester".to_owned()],
        ..VerifyOptions::default()
    };
    let report = verify::run(&options).await.unwrap();
    assert_eq!(report.exit_code().code(), 1, "a criterion not met exits 1");
    let error_rate = report.checks.iter().find(|c| c.id == "kpi/error-rate").unwrap();
    assert_eq!(error_rate.verdict, shared_types::Verdict::Fail, "{error_rate:#?}");
    // The knob fails every 20th request (more fail in the load's sessions:
    // a failed sign-in fails the collector's next calls); the KPI is the load
    // step's own figure, whatever it is.
    let step = report.measurements.iter().find(|m| m.name == "load-tester/error_rate").unwrap();
    let observed: f64 =
        error_rate.observed.as_deref().unwrap().trim_end_matches(" %").parse().unwrap();
    assert!((observed - step.value).abs() < 0.01, "{observed} vs {}", step.value);
    assert!(step.value >= 5.0, "at least the knob's 5 %: {}", step.value);
    // KPIs whose steps were not asked for are not run, not passed.
    let cost = report.checks.iter().find(|c| c.id == "kpi/infrastructure-cost").unwrap();
    assert_eq!(cost.verdict, shared_types::Verdict::Skipped);
}
