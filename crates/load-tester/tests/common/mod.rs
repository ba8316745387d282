//! One way for every test to start the sandbox, set its faults and run the
//! binary.

#![allow(dead_code, clippy::unwrap_used)]

use std::process::Output;

use shared_types::{Check, Report};
use testkit::Sandbox;

/// The real sandbox (`cargo build -p sandbox` first), with `args`.
pub async fn sandbox(args: &[&str]) -> Sandbox {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    Sandbox::start(&args).await.unwrap()
}

/// Fetches every cached key the built-in scenario's feeds can draw (see
/// `scenarios/marketplace.yaml`), so a short run's cache hit rate does not
/// depend on how many requests a busy machine manages to send: the hit rate
/// is taken between the run's first and last scrape, after this warm-up.
pub async fn warm_cache(sandbox: &Sandbox) {
    let mut paths: Vec<String> = Vec::new();
    for page in 1..=3 {
        paths.push(format!("/api/collections?page={page}"));
    }
    for id in 1..=20 {
        paths.push(format!("/api/collections/{id}"));
        for page in 1..=3 {
            paths.push(format!("/api/collections/{id}/nfts?page={page}"));
        }
    }
    for id in 1..=100 {
        paths.push(format!("/api/nfts/{id}"));
    }
    for term in ["ape", "punk", "pixel", "cat", "bored"] {
        paths.push(format!("/api/search?q={term}"));
    }
    let client = reqwest::Client::new();
    for path in paths {
        let answer = client.get(format!("{}{path}", sandbox.url())).send().await.unwrap();
        assert!(answer.status().is_success(), "warming {path}: {}", answer.status());
    }
}

/// Sets the sandbox's fault knobs.
pub async fn faults(sandbox: &Sandbox, spec: &str) {
    let answer = reqwest::Client::new()
        .post(format!("{}/admin/faults", sandbox.url()))
        .header("content-type", "application/json")
        .body(spec.to_owned())
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "faults {spec} refused: {}",
        answer.text().await.unwrap()
    );
}

/// Runs `load-tester ARGS` in a blocking thread (the tests' runtime keeps
/// serving the sandbox's fault calls meanwhile).
pub async fn load_tester(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_load-tester")).args(&args).output().unwrap()
    })
    .await
    .unwrap()
}

/// stdout and stderr, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The JSON report printed on stdout by `--output json`.
pub fn report(output: &Output) -> Report {
    Report::from_json(&String::from_utf8_lossy(&output.stdout))
        .unwrap_or_else(|e| panic!("stdout is not a JSON report ({e}):\n{}", text(output)))
}

/// The check `id`.
pub fn check<'a>(report: &'a Report, id: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id} in {:#?}", report.checks))
}

/// A measurement's value.
pub fn measurement(report: &Report, name: &str) -> f64 {
    report
        .measurements
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value)
        .unwrap_or_else(|| panic!("no measurement {name}"))
}
