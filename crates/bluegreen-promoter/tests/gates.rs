//! Releases the gates refuse, on the local cluster with a real Prometheus
//! discovering the pods: a v2 never ready, a v2 failing a smoke test, a v2
//! answering 5 % errors (green against blue, from Prometheus), and a v2 that
//! fails after the switch and is switched back by itself. Blue serves
//! throughout, untouched; kubectl reads the result back.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::time::{Duration, Instant};

use common::{Shop, assert_verdict, check, fingerprint, strings, table};
use shared_types::Verdict;
use testkit::{Prometheus, PrometheusOptions};

/// shop.yaml's pod template (the gateway role) with `args` for the container
/// and a readiness path.
fn template(args: &[&str], readiness: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "metadata:\n  labels: {{app: shop}}\n  annotations: {{prometheus.io/scrape: \"true\", prometheus.io/port: \"8080\"}}\n\
         spec:\n  terminationGracePeriodSeconds: 5\n  containers:\n    - name: web\n      image: postlaunch/sandbox:v2\n\
         \x20     args: [\"--role\", \"gateway\", \"--listen\", \"$(POD_LOOPBACK_IP):8080\", \
         \"--auth-url\", \"http://$(AUTH_SERVICE_HOST):$(AUTH_SERVICE_PORT_GRPC)\", \
         \"--catalog-url\", \"http://$(CATALOG_SERVICE_HOST):$(CATALOG_SERVICE_PORT_GRPC)\"{}]\n\
         \x20     ports: [{{name: http, containerPort: 8080}}]\n\
         \x20     readinessProbe: {{httpGet: {{path: {readiness}, port: http}}, periodSeconds: 1}}\n",
        if args.is_empty() { String::new() } else { format!(", {}", args.join(", ")) }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_gates_never_switch_and_post_promotion_errors_switch_back() {
    let shop = Shop::start().await;
    let prometheus = Prometheus::start(PrometheusOptions {
        extra_scrape_configs: shop.cluster.prometheus_scrape_configs(),
        ..PrometheusOptions::default()
    })
    .await
    .unwrap();
    // Blue's pods are scraped, with their labels.
    prometheus
        .wait_for_query(
            "count(up{app=\"shop\",colour=\"blue\"} == 1) == 2",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let blue_before = fingerprint(&shop.get("deployment", "shop-blue"));
    let analysis =
        common::root().join("docs/bluegreen-promoter/analysis.yaml").display().to_string();

    // 1. Readiness never passes: the deadline fails the release, no traffic moves.
    let never = shop.file("never-ready.yaml", &template(&[], "/no-such-path"));
    let mut args = strings(&["deploy", "shop", "--pod-template", &never, "--ready-timeout", "15s"]);
    args.extend(shop.args());
    let (code, report, out) = shop.run(&args, "never-ready").await;
    let report = report.unwrap_or_else(|| panic!("{out}"));
    eprintln!("{}", table(&report));
    assert_eq!(code, 1, "{out}");
    assert_verdict(&report, "green-ready", Verdict::Fail);
    assert_verdict(&report, "failed-requests", Verdict::Pass);
    assert_eq!(check(&report, "smoke").verdict, Verdict::Skipped);
    assert_eq!(shop.serving(), "blue");
    assert_eq!(shop.get("deployment", "shop-green")["spec"]["replicas"], 0, "green left running");
    let by_version = check(&report, "failed-requests").observed.clone().unwrap_or_default();
    assert!(!by_version.contains("v2"), "green received traffic: {by_version}");

    // 2. A smoke test fails: aborted before the switch.
    let smoke = shop.file(
        "smoke.yaml",
        "requests:\n  - name: collection\n    path: /api/collections/1\n    expect: {status: 200, body_contains: 'no such text'}\n",
    );
    let good = shop.file("good.yaml", &template(&[], "/readyz"));
    let mut args = strings(&["deploy", "shop", "--pod-template", &good, "--smoke", &smoke]);
    args.extend(shop.args());
    let (code, report, out) = shop.run(&args, "smoke").await;
    let report = report.unwrap_or_else(|| panic!("{out}"));
    eprintln!("{}", table(&report));
    assert_eq!(code, 1, "{out}");
    assert_verdict(&report, "green-ready", Verdict::Pass);
    assert_verdict(&report, "smoke", Verdict::Fail);
    assert!(check(&report, "smoke").observed.clone().unwrap_or_default().contains("no such text"));
    assert_eq!(shop.serving(), "blue");

    // A smoke Job that fails, then a pre-switch command (a schema check) that fails.
    let failing = common::root()
        .join("crates/bluegreen-promoter/tests/data/failing-job.yaml")
        .display()
        .to_string();
    let mut args = strings(&["deploy", "shop", "--pod-template", &good, "--smoke-job", &failing]);
    args.extend(shop.args());
    let (code, report, out) = shop.run(&args, "job").await;
    let report = report.unwrap_or_else(|| panic!("{out}"));
    assert_eq!(code, 1, "{out}");
    assert_verdict(&report, "smoke-job", Verdict::Fail);
    assert_eq!(shop.serving(), "blue");
    let mut args = strings(&[
        "deploy",
        "shop",
        "--pod-template",
        &good,
        "--pre-switch-cmd",
        "echo 'column nfts.owner dropped'; exit 4",
    ]);
    args.extend(shop.args());
    let (code, report, out) = shop.run(&args, "pre-switch").await;
    let report = report.unwrap_or_else(|| panic!("{out}"));
    assert_eq!(code, 1, "{out}");
    assert_verdict(&report, "pre-switch", Verdict::Fail);
    let seen = check(&report, "pre-switch").observed.clone().unwrap_or_default();
    assert!(seen.contains("exit 4") && seen.contains("nfts.owner"), "{seen}");
    assert_eq!(shop.serving(), "blue");

    // 3. 5 % errors: the metric gate (green against blue, from Prometheus) fails.
    let flaky = shop.file("flaky.yaml", &template(&["--error-rate", "0.05"], "/readyz"));
    let mut args = strings(&[
        "deploy",
        "shop",
        "--pod-template",
        &flaky,
        "--analysis",
        &analysis,
        "--prometheus",
        prometheus.url(),
    ]);
    args.extend(shop.args());
    let (code, report, out) = shop.run(&args, "flaky").await;
    let report = report.unwrap_or_else(|| panic!("{out}"));
    eprintln!("{}", table(&report));
    assert_eq!(code, 1, "{out}");
    assert_verdict(&report, "analysis", Verdict::Fail);
    let seen = check(&report, "analysis").observed.clone().unwrap_or_default();
    assert!(seen.contains("error-rate NOT met"), "{seen}");
    assert!(seen.contains("p95-latency met"), "{seen}");
    assert_eq!(shop.serving(), "blue");
    assert_verdict(&report, "blue-untouched", Verdict::Pass);
    assert_eq!(fingerprint(&shop.get("deployment", "shop-blue")), blue_before, "blue changed");

    // 4. Good before the switch, failing after it: switched back by itself.
    let mut args = strings(&[
        "deploy",
        "shop",
        "--pod-template",
        &good,
        "--analysis",
        &analysis,
        "--prometheus",
        prometheus.url(),
        "--watch-for",
        "60s",
    ]);
    args.extend(shop.args());
    let all = args.clone();
    let run = tokio::spawn(async move {
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(common::BIN).args(&all).output().unwrap()
        })
        .await
        .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    });
    // When traffic moves to green, green starts failing half its requests.
    let started = Instant::now();
    while shop.serving() != "green" {
        assert!(started.elapsed() < Duration::from_secs(180), "never switched");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ips = shop.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=shop,colour=green",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    for ip in ips.split_whitespace() {
        let twin = testkit::kube_cluster::loopback_twin(ip).unwrap();
        let answer = reqwest::Client::new()
            .post(format!("http://{twin}:8080/admin/faults"))
            .body("{\"error_rate\": 0.5}")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
    }
    let (code, out) = run.await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("post-promotion"), "{out}");
    assert_eq!(shop.serving(), "blue", "not switched back: {out}");
    shop.wait_version(&shop.active_url, "v1").await;
    let history =
        shop.get("service", "shop")["metadata"]["annotations"]["bluegreen.postlaunch.dev/history"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(history.contains("rolled-back: post-promotion"), "{history}");
}
