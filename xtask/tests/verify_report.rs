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
        sandbox_args: ["--collections", "100", "--nfts", "2000"].map(String::from).to_vec(),
        requests: 120,
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
        "sandbox/p95",
        "sandbox/error-rate",
        "sandbox/cache-hit-rate",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(out.path().join("sandbox.json").exists());
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(markdown.contains("sandbox/p95"), "{markdown}");

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
        target: Some(sandbox.url().to_owned()),
        requests: 100,
        steps: vec!["sandbox".to_owned()],
        ..VerifyOptions::default()
    };
    let report = verify::run(&options).await.unwrap();
    assert_eq!(report.exit_code().code(), 1, "a criterion not met exits 1");
    let error_rate = report.checks.iter().find(|c| c.id == "sandbox/error-rate").unwrap();
    assert_eq!(error_rate.verdict, shared_types::Verdict::Fail);
    // The knob fails every 20th request; the measured window is requests 301-400.
    assert_eq!(error_rate.observed.as_deref(), Some("5 %"), "5 of 100 requests failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overridden_criterion_replaces_the_launch_plan_default() {
    let out = tempfile::tempdir().unwrap();
    let strict =
        verify::with_overrides(verify::default_criteria(), vec!["p95 < 1us".parse().unwrap()])
            .unwrap();
    let options = VerifyOptions {
        out_dir: PathBuf::from(out.path()),
        sandbox_args: ["--collections", "20", "--nfts", "100"].map(String::from).to_vec(),
        requests: 50,
        criteria: strict,
        steps: vec!["sandbox".to_owned()],
        ..VerifyOptions::default()
    };
    let report = verify::run(&options).await.unwrap();
    let p95: Vec<_> = report.checks.iter().filter(|c| c.id == "sandbox/p95").collect();
    assert_eq!(p95.len(), 1, "the default p95 criterion was replaced, not doubled");
    assert_eq!(p95[0].criterion, "p95 < 1us");
    assert_eq!(p95[0].verdict, shared_types::Verdict::Fail);
    assert_eq!(report.exit_code().code(), 1);
}
