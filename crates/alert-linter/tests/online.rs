//! Online checks and the backtest against a real Prometheus (Debian's
//! package, started by testkit) scraping the real sandbox (started by
//! testkit; `cargo build -p sandbox` first). The sandbox's fault knob
//! (`error_rate: 1.0`) drives an error alert to fire inside the backtest
//! window; a second alert stays quiet. Loopback only.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use testkit::{Prometheus, PrometheusOptions, Sandbox};

const RULES: &str = r#"groups:
  - name: sandbox
    interval: 1s
    rules:
      - alert: SandboxErrors
        expr: 'sum by (route) (rate(http_requests_total{status=~"5.."}[5s])) > 0.5'
        for: 2s
        labels:
          severity: warning
          team: sre
        annotations:
          summary: '{{ $labels.route }} fails'
          runbook_url: https://runbooks.example.com/sandbox-errors
      - alert: SandboxDown
        expr: 'up == 0'
        for: 2s
        labels:
          severity: warning
          team: sre
        annotations:
          summary: '{{ $labels.instance }} down'
          runbook_url: https://runbooks.example.com/sandbox-down
      - alert: QueueLag
        expr: 'rabbitmq_queue_messages_ready{queue="mint"} > 100'
        for: 1m
        labels:
          severity: warning
          team: sre
        annotations:
          summary: '{{ $labels.queue }} lags'
          runbook_url: https://runbooks.example.com/queue-lag
"#;

fn lint(args: &[&str], rules: &Path) -> (Option<i32>, serde_json::Value) {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_alert-linter"))
        .args(args)
        .args(["--output", "json"])
        .arg(rules)
        .output()
        .unwrap_or_else(|e| panic!("cannot run alert-linter: {e}"));
    let json = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)));
    (o.status.code(), json)
}

fn checks_of(report: &serde_json::Value, check: &str) -> Vec<String> {
    report["data"]["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["check"] == check)
        .map(|d| d["rule"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_the_sandbox_fire_in_the_backtest_and_online_checks_see_real_series() {
    let sandbox = Sandbox::start(&[]).await.unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rules = dir.path().join("sandbox-rules.yml");
    std::fs::write(&rules, RULES).unwrap_or_else(|e| panic!("{e}"));
    let prometheus = Prometheus::start(PrometheusOptions {
        targets: vec![sandbox.addr().to_string()],
        rule_files: vec![rules.clone()],
        ..PrometheusOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    prometheus
        .wait_for_query("up == 1", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Healthy traffic, then every request failing for a while, then healthy again.
    let http = reqwest::Client::new();
    let traffic = |seconds: u64| {
        let http = http.clone();
        let url = format!("{}/api/collections", sandbox.url());
        async move {
            let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
            while tokio::time::Instant::now() < end {
                let _ = http.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    traffic(3).await;
    let faults = format!("{}/admin/faults", sandbox.url());
    let set = http.post(&faults).json(&serde_json::json!({"error_rate": 1.0})).send().await;
    assert!(set.is_ok_and(|r| r.status().is_success()), "cannot set the sandbox fault");
    traffic(10).await;
    let _ = http.delete(&faults).send().await;
    prometheus
        .wait_for_query(
            "ALERTS{alertname=\"SandboxErrors\",alertstate=\"firing\"}",
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|e| panic!("Prometheus itself never fired the alert: {e}"));

    // Online: the real series exist, the RabbitMQ one does not; the scrape interval is read.
    let (code, online) = lint(&["lint", "--no-coverage", "--prometheus", prometheus.url()], &rules);
    assert_eq!(code, Some(0), "warnings only at --fail-on error: {online}");
    assert_eq!(checks_of(&online, "online/series-missing"), vec!["QueueLag".to_owned()]);
    assert_eq!(online["data"]["server_scrape_interval_seconds"], 1.0);

    // Backtest over the last 5 minutes at 1 s: the error alert fired, the others did not.
    let args = [
        "backtest",
        "--range",
        "5m",
        "--step",
        "1s",
        "--fail-on",
        "warning",
        "--prometheus",
        prometheus.url(),
    ];
    let (code, backtest) = lint(&args, &rules);
    assert_eq!(code, Some(1), "a fired alert fails at --fail-on warning: {backtest}");
    assert_eq!(checks_of(&backtest, "backtest/fired"), vec!["SandboxErrors".to_owned()]);
    let results = backtest["data"]["backtest"].as_array().cloned().unwrap_or_default();
    let errors =
        results.iter().find(|r| r["alert"] == "SandboxErrors").cloned().unwrap_or_default();
    assert!(errors["episodes"].as_u64() >= Some(1), "{errors}");
    let firing = errors["firing_seconds"].as_f64().unwrap_or_default();
    assert!((1.0..=30.0).contains(&firing), "firing time should reflect a ~10 s fault: {firing}");
    let quiet = results.iter().find(|r| r["alert"] == "SandboxDown").cloned().unwrap_or_default();
    assert_eq!(quiet["episodes"], 0);
}
