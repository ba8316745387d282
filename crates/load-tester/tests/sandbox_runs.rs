//! The binary against the real sandbox: a healthy run passes every default
//! criterion; the sandbox's fault knobs make the latency, cache and breaker
//! criteria fail with exit 1; stalls show in the open model's corrected
//! percentiles.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::time::Instant;

use common::{check, faults, load_tester, measurement, report, sandbox, text, warm_cache};
use shared_types::Verdict;

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_sandbox_passes_every_default_criterion() {
    let sb = sandbox(&[]).await;
    warm_cache(&sb).await;
    let dir = tempfile::tempdir().unwrap();
    let (html, md) = (dir.path().join("r.html"), dir.path().join("r.md"));
    let out = load_tester(&[
        "run",
        "--target",
        sb.url(),
        "--users",
        "10",
        "--duration",
        "3s",
        "--think-time",
        "0ms..20ms",
        "--output",
        "json",
        "--html",
        html.to_str().unwrap(),
        "--markdown",
        md.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&out);
    let ids: Vec<&str> = r.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "p95-latency",
            "p99-latency",
            "error-rate",
            "cache-hit-rate",
            "circuit-breakers",
            "pool-utilisation",
            "restarts"
        ]
    );
    for c in &r.checks {
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
    }
    assert!(measurement(&r, "requests_total") > 100.0);
    let tx = r.data["transactions"].as_object().unwrap();
    for name in ["view nft", "graphql collection", "search", "sign in", "my profile"] {
        assert!(tx.contains_key(name), "transaction {name} ran: {tx:?}");
    }
    assert_eq!(tx["my profile"]["errors"], 0, "the signed-in token was reused");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("graphql collection") && !page.contains("<script")
    );
    assert!(std::fs::read_to_string(&md).unwrap().contains("| view nft |"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_800ms_latency_knob_fails_the_p95_gate_with_exit_1() {
    let sb = sandbox(&[]).await;
    faults(&sb, r#"{"latency_ms": 800}"#).await;
    let out = load_tester(&[
        "run",
        "--target",
        sb.url(),
        "--users",
        "10",
        "--duration",
        "2s",
        "--think-time",
        "0",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = report(&out);
    let p95 = check(&r, "p95-latency");
    assert_eq!(p95.verdict, Verdict::Fail, "{p95:?}");
    assert!(measurement(&r, "latency_p95") >= 800.0, "{p95:?}");
    assert_eq!(check(&r, "error-rate").verdict, Verdict::Pass);
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_on_fail_stops_a_breaking_run_early() {
    let sb = sandbox(&[]).await;
    faults(&sb, r#"{"latency_ms": 800}"#).await;
    let started = Instant::now();
    let out = load_tester(&[
        "run",
        "--target",
        sb.url(),
        "--users",
        "40",
        "--duration",
        "30s",
        "--think-time",
        "0",
        "--abort-on-fail",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed().as_secs() < 15, "stopped long before 30 s: {:?}", started.elapsed());
    let r = report(&out);
    let early = check(&r, "full-duration");
    assert!(early.detail.as_deref().unwrap().contains("p95 < 500ms"), "{early:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn periodic_stalls_show_in_the_corrected_percentiles_of_the_open_model() {
    let sb = sandbox(&[]).await;
    faults(&sb, r#"{"stall_every_ms": 1000, "stall_for_ms": 300}"#).await;
    // Few users in flight: a closed-loop tool would send only a handful of
    // requests into each stall; the schedule still wants 60 per stall.
    let out = load_tester(&[
        "run",
        "--target",
        sb.url(),
        "--rate",
        "200/s",
        "--users",
        "4",
        "--duration",
        "4s",
        "--output",
        "json",
    ])
    .await;
    let r = report(&out);
    let (p90, p99) = (measurement(&r, "latency_p90"), measurement(&r, "latency_p99"));
    let (raw_p50, raw_p90) =
        (measurement(&r, "service_time_p50"), measurement(&r, "service_time_p90"));
    assert!(p99 >= 200.0, "corrected p99 {p99} ms reflects the 300 ms stalls");
    assert!(p90 >= 100.0 && raw_p90 < 50.0, "corrected p90 {p90} ms vs uncorrected {raw_p90} ms");
    assert!(raw_p50 < 50.0, "uncorrected p50 {raw_p50} ms stays fast");
    let model = r.data["run"]["load_model_description"].as_str().unwrap();
    assert!(model.contains("open model") && model.contains("coordinated omission"), "{model}");
    assert!((700.0..=850.0).contains(&measurement(&r, "requests_total")), "about 200/s for 4 s");
    // All 4 users sit in each stall: arrivals due meanwhile start late
    // (k6 would drop them), and the report says how many and how late.
    assert!(measurement(&r, "arrivals_late") > 0.0, "late arrivals reported");
    assert!(
        measurement(&r, "arrivals_late_max") >= 100.0,
        "{}",
        measurement(&r, "arrivals_late_max")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_outage_fails_the_hit_rate_and_breaker_criteria() {
    let sb = sandbox(&[]).await;
    faults(&sb, r#"{"down": ["cache"]}"#).await;
    let out = load_tester(&[
        "run",
        "--target",
        sb.url(),
        "--users",
        "5",
        "--duration",
        "2s",
        "--think-time",
        "0ms..20ms",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = report(&out);
    let cache = check(&r, "cache-hit-rate");
    assert_eq!(
        (cache.verdict, cache.observed.as_deref()),
        (Verdict::Fail, Some("0 %")),
        "{cache:?}"
    );
    let breakers = check(&r, "circuit-breakers");
    assert_eq!(breakers.verdict, Verdict::Fail, "{breakers:?}");
    let detail = breakers.detail.as_deref().unwrap();
    assert!(
        detail.contains("open at the end: cache open") && detail.contains("cache closed→open"),
        "{detail}"
    );
    assert_eq!(check(&r, "error-rate").verdict, Verdict::Pass, "the database still serves");
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_keys_fail_the_cache_hit_rate_while_breakers_stay_closed() {
    let sb = sandbox(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("cold.yaml");
    std::fs::write(
        &scenario,
        "feeds:\n  nft: { range: [1, 100000] }\nscenarios:\n  - name: long tail\n    transactions:\n      - name: view any nft\n        request: { path: \"/api/nfts/{{nft}}\" }\n",
    )
    .unwrap();
    let out = load_tester(&[
        "run",
        "--target",
        sb.url(),
        "--scenario",
        scenario.to_str().unwrap(),
        "--users",
        "5",
        "--duration",
        "2s",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = report(&out);
    assert_eq!(check(&r, "cache-hit-rate").verdict, Verdict::Fail);
    assert_eq!(check(&r, "circuit-breakers").verdict, Verdict::Pass);
    assert_eq!(check(&r, "p95-latency").verdict, Verdict::Pass);
}

/// k6-style stages on goose's test plan: the run lasts the stages' sum, the
/// load follows the user count (a 4-user hold sends more per second than the
/// first second of the ramp), and goose's own "users launched" lines stay off
/// stdout, which holds only the JSON report.
#[tokio::test(flavor = "multi_thread")]
async fn stages_ramp_hold_and_stop_the_users_and_keep_stdout_for_the_report() {
    let sb = sandbox(&[]).await;
    // A cold cache's hit rate over 6 s depends on how busy the machine is
    // (76.6 % and 78 % seen on 2 cores); warmed, every lookup hits. Waiving
    // the check would not help: --skip-check never turns a failure into a pass.
    warm_cache(&sb).await;
    let out = load_tester(&[
        "run",
        "--target",
        sb.url(),
        "--stages",
        "4:2s,4:3s,0:1s",
        "--think-time",
        "0ms..20ms",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&out);
    let data = load_tester::report::RunData::from_report(&r).unwrap();
    assert!(
        data.load_model_description.contains("0→4 users over 2 s, 4 users held 3 s"),
        "{}",
        data.load_model_description
    );
    assert_eq!(measurement(&r, "users"), 4.0);
    let seconds = &data.stats.series;
    let first = seconds.first().map_or(0, |s| s.requests);
    let held = seconds.iter().filter(|s| (3..=5).contains(&s.second)).map(|s| s.requests).max();
    assert!(held.unwrap_or(0) > first, "ramp {first} req/s vs hold {held:?}: {seconds:?}");
    assert!((5.0..9.0).contains(&data.stats.duration_secs), "{}", data.stats.duration_secs);
}

/// The service criteria read from a real Prometheus server's HTTP API
/// (scraping the sandbox every second) instead of the target's /metrics:
/// one service per instance, with its cache hit rate and pool utilisation.
#[tokio::test(flavor = "multi_thread")]
async fn service_criteria_come_from_a_prometheus_server_when_given_one() {
    let sb = sandbox(&[]).await;
    let instance = sb.url().trim_start_matches("http://").to_owned();
    let prometheus = testkit::Prometheus::start(testkit::PrometheusOptions {
        targets: vec![instance.clone()],
        ..testkit::PrometheusOptions::default()
    })
    .await
    .unwrap();
    prometheus
        .wait_for_query("cache_hits_total", std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let out = load_tester(&[
        "run",
        "--target",
        sb.url(),
        "--users",
        "8",
        "--duration",
        "5s",
        "--think-time",
        "0ms..20ms",
        "--prometheus",
        prometheus.url(),
        "--prometheus-selector",
        &format!("job=\"{}\"", testkit::prometheus::TARGETS_JOB),
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&out);
    let data = load_tester::report::RunData::from_report(&r).unwrap();
    assert_eq!(data.services.len(), 1, "{:?}", data.services);
    let service = &data.services[0];
    assert_eq!(service.url, format!("{} instance={instance}", prometheus.url()));
    assert!(service.scrapes >= 3, "{service:?}");
    assert!(service.cache_lookups > 0.0 && service.cache_hit_rate.is_some(), "{service:?}");
    assert!(service.pool_utilisation_max.is_some(), "{service:?}");
    assert_eq!(check(&r, "cache-hit-rate").verdict, Verdict::Pass);
    assert!(check(&r, "cache-hit-rate").observed.is_some());
}

/// A target that dies during the run, watched through Prometheus: `up`
/// drops to 0, and the restarts criterion fails, saying so.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_goes_down_fails_the_restarts_criterion_through_prometheus() {
    let mut sb = sandbox(&[]).await;
    let instance = sb.url().trim_start_matches("http://").to_owned();
    let prometheus = testkit::Prometheus::start(testkit::PrometheusOptions {
        targets: vec![instance],
        ..testkit::PrometheusOptions::default()
    })
    .await
    .unwrap();
    prometheus.wait_for_query("up == 1", std::time::Duration::from_secs(30)).await.unwrap();
    let target = sb.url().to_owned();
    let url = prometheus.url().to_owned();
    let run = tokio::spawn(async move {
        load_tester(&[
            "run",
            "--target",
            &target,
            "--users",
            "4",
            "--duration",
            "7s",
            "--think-time",
            "10ms..50ms",
            "--timeout",
            "1s",
            "--prometheus",
            &url,
            "--output",
            "json",
        ])
        .await
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    sb.kill().await.unwrap();
    let out = run.await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = report(&out);
    let restarts = check(&r, "restarts");
    assert_eq!(restarts.verdict, Verdict::Fail, "{restarts:?}");
    assert!(restarts.detail.as_deref().unwrap_or("").contains("up went to 0"), "{restarts:?}");
}

/// "10K users for 30 min", scaled down: `users` is the peak of users
/// actually running (sampled each second), `duration` the seconds at least
/// that many ran. A criterion above what was reached fails with what was.
#[tokio::test(flavor = "multi_thread")]
async fn users_and_duration_criteria_judge_the_concurrency_reached() {
    let sb = sandbox(&[]).await;
    warm_cache(&sb).await;
    let run = |users: &'static str| {
        let url = sb.url().to_owned();
        async move {
            load_tester(&[
                "run",
                "--target",
                &url,
                "--users",
                "4",
                "--hatch-rate",
                "8",
                "--duration",
                "4s",
                "--think-time",
                "0ms..20ms",
                "--threshold",
                users,
                "--threshold",
                "duration >= 2s",
                "--output",
                "json",
            ])
            .await
        }
    };
    let held = run("users >= 4").await;
    assert_eq!(held.status.code(), Some(0), "{}", text(&held));
    let r = report(&held);
    assert_eq!(measurement(&r, "users_peak"), 4.0);
    assert_eq!(check(&r, "users").verdict, Verdict::Pass);
    assert_eq!(check(&r, "duration").verdict, Verdict::Pass, "{:?}", check(&r, "duration"));

    let short = run("users >= 40").await;
    assert_eq!(short.status.code(), Some(1), "{}", text(&short));
    let r = report(&short);
    let users = check(&r, "users");
    assert_eq!(users.verdict, Verdict::Fail);
    assert_eq!(users.observed.as_deref(), Some("4"), "{users:?}");
    // Never 40 users running, so never 2 s with 40 of them.
    assert_eq!(check(&r, "duration").verdict, Verdict::Fail, "{:?}", check(&r, "duration"));
}
