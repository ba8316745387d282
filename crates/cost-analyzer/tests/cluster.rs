//! cost-analyzer against the local cluster (upstream 1.20.2 control plane,
//! two m5.xlarge postlaunch-nodes that enforce memory limits), a real
//! Prometheus scraping the node's cAdvisor series and the pods, and moto's
//! S3: an oversized Deployment, an idle one, one OOM-killed, one too young
//! to judge, an unbound and an unused claim, a bucket with expired backups
//! and an incomplete upload, and a bill that does not match. kubectl checks
//! the emitted patches against the API server (server-side dry run).

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use shared_types::{Report, Verdict};
use testkit::{KubeCluster, KubeOptions, Prometheus, PrometheusOptions, S3Server};

const BIN: &str = env!("CARGO_BIN_EXE_cost-analyzer");

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name).display().to_string()
}

fn kubectl(cluster: &KubeCluster, args: &[&str]) -> String {
    let out = cluster.kubectl().args(args).output().unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rec<'a>(report: &'a Report, id: &str) -> &'a Value {
    report.data["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no recommendation {id}: {:#}", report.data["recommendations"]))
}

fn recs_of<'a>(report: &'a Report, kind: &str) -> Vec<&'a Value> {
    report.data["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

fn measure(report: &Report, name: &str) -> f64 {
    report.measurements.iter().find(|m| m.name == name).map_or(f64::NAN, |m| m.value)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_what_is_overpaid_with_savings_that_add_up_and_a_bill_reconciled() {
    let options = KubeOptions {
        nodes: vec![
            "node-1,cpu=4,memory=16Gi,zone=local-a,instance-type=m5.xlarge".to_owned(),
            "node-2,cpu=4,memory=16Gi,zone=local-b,instance-type=m5.xlarge".to_owned(),
        ],
        ..KubeOptions::default()
    };
    let cluster = tokio::task::spawn_blocking(move || KubeCluster::start_with(&options))
        .await
        .unwrap()
        .unwrap();
    let prometheus = Prometheus::start(PrometheusOptions {
        extra_scrape_configs: cluster.prometheus_scrape_configs(),
        scrape_self: true,
        ..PrometheusOptions::default()
    })
    .await
    .unwrap();
    kubectl(&cluster, &["apply", "-f", &data("workloads.yaml")]);
    kubectl(&cluster, &["rollout", "status", "deployment/shop", "--timeout=120s"]);
    kubectl(&cluster, &["rollout", "status", "deployment/idle", "--timeout=120s"]);

    // The bucket: backups past a 400-day retention, a fresh one, an upload never completed.
    let s3 = S3Server::start().await.unwrap();
    s3.create_bucket("backups").await.unwrap();
    let http = reqwest::Client::new();
    let put = |key: &str, bytes: usize| {
        http.put(format!("{}/backups/{key}", s3.endpoint())).body(vec![7u8; bytes]).send()
    };
    for key in ["pg/2024-01-01/base.tar.zst", "pg/2024-02-01/base.tar.zst"] {
        assert!(put(key, 3 << 20).await.unwrap().status().is_success());
    }
    assert!(put("pg/2099-01-01/base.tar.zst", 1 << 20).await.unwrap().status().is_success());
    let started = http
        .post(format!("{}/backups/pg/upload.tar?uploads", s3.endpoint()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let upload_id = started
        .split("<UploadId>")
        .nth(1)
        .and_then(|r| r.split("</UploadId>").next())
        .unwrap()
        .to_owned();
    let part = http
        .put(format!("{}/backups/pg/upload.tar?partNumber=1&uploadId={upload_id}", s3.endpoint()))
        .body(vec![1u8; 5 << 20])
        .send()
        .await
        .unwrap();
    assert!(part.status().is_success());

    // Traffic to shop for the whole window; none to idle.
    let shop = format!("http://{}", cluster.service_address("default", "shop", 80).unwrap());
    let traffic = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            let _ = client.get(format!("{shop}/api/collections/1")).send().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    prometheus
        .wait_for_query("count(container_memory_working_set_bytes{container=\"web\",namespace=\"default\"}) >= 3", Duration::from_secs(60))
        .await
        .unwrap();
    let window_start = Instant::now();
    // History enough to judge (the analysis asks for 20 samples per
    // container: wait for several times that), and the hog killed.
    for (selector, samples) in [
        ("container=\"web\",pod=~\"shop-.*\"", 80),
        ("container=\"web\",pod=~\"idle-.*\"", 60),
        ("container=\"worker\"", 80),
    ] {
        let query = format!(
            "sum(count_over_time(container_memory_working_set_bytes{{{selector}}}[10m])) >= {samples}"
        );
        prometheus.wait_for_query(&query, Duration::from_secs(300)).await.unwrap();
    }
    let oom = Instant::now();
    while !kubectl(
        &cluster,
        &[
            "get",
            "pods",
            "-l",
            "app=hog",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].lastState.terminated.reason}",
        ],
    )
    .contains("OOMKilled")
    {
        assert!(oom.elapsed() < Duration::from_secs(120), "the hog was never OOM-killed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Started just before the analysis: too young to judge.
    kubectl(&cluster, &["apply", "-f", &data("late.yaml")]);
    kubectl(&cluster, &["rollout", "status", "deployment/late", "--timeout=60s"]);
    let hog = kubectl(
        &cluster,
        &[
            "get",
            "pods",
            "-l",
            "app=hog",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].lastState.terminated.reason}",
        ],
    );
    assert!(hog.contains("OOMKilled"), "the hog was never OOM-killed: {hog:?}");

    let dir = tempfile::tempdir().unwrap();
    let bill = dir.path().join("bill.csv");
    std::fs::write(&bill, "date,category,service,cost\n2026-11,compute,EC2,300.00\n2026-11,storage,EBS,5.00\n2026-11,object-storage,S3,1.00\n2026-11,network,NAT gateway,32.40\n").unwrap();
    let report_path = dir.path().join("report.json");
    let patches = dir.path().join("patches");
    let window = format!("{}s", window_start.elapsed().as_secs());
    let out = Command::new(BIN)
        .args([
            "analyze",
            "--kubeconfig",
            cluster.kubeconfig().to_str().unwrap(),
            "--prometheus",
            prometheus.url(),
        ])
        .args([
            "--window",
            &window,
            "--step",
            "1s",
            "--rate-window",
            "5s",
            "--min-samples",
            "20",
            "--label",
            "team",
        ])
        .args([
            "--s3-endpoint",
            &s3.endpoint(),
            "--bucket",
            "backups",
            "--bill",
            bill.to_str().unwrap(),
            // The machine's server: max_connections against the pools.
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/postgres",
        ])
        .args([
            "--report",
            report_path.to_str().unwrap(),
            "--emit-patches",
            patches.to_str().unwrap(),
        ])
        .envs(s3.credentials().env())
        .output()
        .unwrap();
    traffic.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    let report = Report::from_json(
        &std::fs::read_to_string(&report_path).unwrap_or_else(|_| panic!("{stderr}")),
    )
    .unwrap();
    let check = |id: &str| {
        report.checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}"))
    };

    // The oversized Deployment: right-sized, but kept above p95/70 % for its HPA.
    let shop = rec(&report, "rightsize/default/deployment/shop");
    assert!(shop["saving_monthly"].as_f64().unwrap() > 0.0, "{shop:#}");
    assert_eq!(shop["risk"], "medium", "{shop:#}");
    assert!(shop["reason"].as_str().unwrap().contains("HPA shop scales on 70% CPU"), "{shop:#}");
    let cpu =
        shop["patch"]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
            .as_str()
            .unwrap();
    assert!(cost_analyzer::quantity::parse(cpu).unwrap() < 0.5, "{cpu}");
    // Idle: its whole cost.
    let idle = rec(&report, "idle/default/deployment/idle");
    assert!(close(
        idle["saving_monthly"].as_f64().unwrap(),
        idle["current_monthly"].as_f64().unwrap()
    ));
    assert!(idle["current_monthly"].as_f64().unwrap() > 0.0);
    // OOM-killed: never below the kill level (64Mi), and the risk says why.
    let hog = rec(&report, "rightsize/default/deployment/hog");
    assert_eq!(hog["risk"], "high", "{hog:#}");
    assert!(hog["reason"].as_str().unwrap().contains("OOM-killed at its 64Mi limit"), "{hog:#}");
    let memory = hog["patch"]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
        ["memory"]
        .as_str()
        .unwrap();
    assert!(cost_analyzer::quantity::parse(memory).unwrap() >= 80.0 * 1024.0 * 1024.0, "{memory}");
    // Too young: withheld, with the reason.
    let withheld = report.data["withheld"].as_array().unwrap();
    let late = withheld
        .iter()
        .find(|w| w["target"] == "default/deployment/late")
        .unwrap_or_else(|| panic!("{withheld:?}"));
    assert!(late["reason"].as_str().unwrap().contains("fewer than --min-samples 20"), "{late}");
    assert!(
        report.data["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["target"] != "default/deployment/late")
    );
    // Claims: unbound (not billed, said so); bound and unused, 20 GiB of gp3.
    let unbound = rec(&report, "volume/default/pvc/unbound");
    assert_eq!(unbound["saving_monthly"], 0.0);
    assert!(unbound["reason"].as_str().unwrap().contains("unbound"));
    assert!(close(
        rec(&report, "volume/default/pvc/orphan")["saving_monthly"].as_f64().unwrap(),
        20.0 * 0.08
    ));
    // S3: 6 MiB past retention and 5 MiB of parts, at STANDARD's 0.023.
    assert!(close(
        rec(&report, "s3-expire/backups")["saving_monthly"].as_f64().unwrap(),
        6.0 / 1024.0 * 0.023
    ));
    assert!(close(
        rec(&report, "s3-multipart/backups")["saving_monthly"].as_f64().unwrap(),
        5.0 / 1024.0 * 0.023
    ));
    // One node holds the right-sized requests: the bill loses one m5.xlarge,
    // of which the right-sizing and idle rows are part and this row the rest.
    let packing = rec(&report, "node-packing");
    let requested: f64 = report.data["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "rightsize" || r["kind"] == "idle")
        .map(|r| r["saving_monthly"].as_f64().unwrap())
        .sum();
    assert!(
        close(packing["saving_monthly"].as_f64().unwrap() + requested, 0.192 * 730.0),
        "{packing:#}"
    );

    // Pools from their series over the window (the sandbox exports its pool
    // of 20 and what is in use), whether or not the requests change; the
    // server's max_connections judged against what all pools can open.
    let pool = rec(&report, "pool/default/deployment/shop");
    assert!(pool["current"].as_str().unwrap().starts_with("pool of 20 per replica"), "{pool:#}");
    assert_eq!(pool["in_total"], false);
    let database = recs_of(&report, "database")
        .into_iter()
        .find(|r| r["id"].as_str().unwrap().starts_with("database/"))
        .unwrap_or_else(|| panic!("no database row: {:#}", report.data["recommendations"]));
    let reason = database["reason"].as_str().unwrap();
    assert!(database["current"].as_str().unwrap().starts_with("max_connections "), "{database:#}");
    assert!(
        reason.contains("the pools can open") || reason.contains("never opened by the pools"),
        "{database:#}"
    );
    assert_eq!(database["risk"] == "high", reason.contains("too many connections"), "{database:#}");

    // The totals are the sums of their parts.
    let recs = report.data["recommendations"].as_array().unwrap();
    let sum: f64 = recs
        .iter()
        .filter(|r| r["in_total"] == true)
        .map(|r| r["saving_monthly"].as_f64().unwrap())
        .sum();
    assert!(close(measure(&report, "savings_monthly"), sum));
    let parts =
        ["compute_monthly", "storage_monthly", "object_storage_monthly", "monitoring_monthly"]
            .map(|m| measure(&report, m));
    assert!(close(measure(&report, "monthly_cost"), parts.iter().sum()));
    assert!(close(measure(&report, "compute_monthly"), 2.0 * 0.192 * 730.0));
    let alloc = &report.data["allocation"];
    let by_ns: f64 =
        alloc["by_namespace"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    let workloads: f64 =
        alloc["by_workload"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert!(close(by_ns, workloads));
    assert!(close(
        alloc["idle"]["monthly"].as_f64().unwrap() + workloads - 20.0 * 0.08,
        measure(&report, "compute_monthly")
    ));
    assert!(alloc["by_label"]["team=market"].as_f64().unwrap() > 0.0);
    // The bill: its total against the allocation, the remainder by category.
    assert!(close(measure(&report, "bill_total"), 338.40));
    assert!(close(measure(&report, "bill_unexplained"), 338.40 - measure(&report, "monthly_cost")));
    let reconciled = check("bill-reconciled");
    assert_eq!(reconciled.verdict, Verdict::Fail, "{reconciled:?}");
    assert!(reconciled.observed.as_deref().unwrap().contains("network +32.40"), "{reconciled:?}");
    assert_eq!(check("savings").verdict, Verdict::Pass, "{:?}", check("savings"));
    assert_eq!(out.status.code(), Some(1), "the bill is unexplained: exit 1\n{stderr}");
    assert!(stdout.contains("rightsize/default/deployment/shop"));

    // The patches: never applied by the tool, accepted by the API server.
    let generation =
        kubectl(&cluster, &["get", "deployment", "shop", "-o", "jsonpath={.metadata.generation}"]);
    let file = patches.join("default.deployment.shop.rightsize.json");
    kubectl(
        &cluster,
        &[
            "patch",
            "deployment",
            "shop",
            "--type",
            "strategic",
            "--dry-run=server",
            "--patch-file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(
        kubectl(&cluster, &["get", "deployment", "shop", "-o", "jsonpath={.metadata.generation}"]),
        generation
    );
    let script = std::fs::read_to_string(patches.join("apply.sh")).unwrap();
    assert!(script.contains("kubectl -n default patch deployment shop"), "{script}");
}

#[tokio::test]
async fn bad_input_is_refused_by_name_and_unreachable_inputs_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>| {
        let out = Command::new(BIN).args(&args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let prices = dir.path().join("prices.yaml");
    std::fs::write(
        &prices,
        cost_analyzer::price::DEFAULT.replace("hourly: 0.192}", "hourly: lots}"),
    )
    .unwrap();
    let (code, err) = run(vec![
        "analyze".into(),
        "--no-kubernetes".into(),
        "--price-model".into(),
        prices.display().to_string(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("prices.yaml:") && err.contains("m5.xlarge"), "{err}");
    let bill = dir.path().join("bill.csv");
    std::fs::write(&bill, "category,cost\ncompute,10\nstorage,ten\n").unwrap();
    let (code, err) = run(vec![
        "analyze".into(),
        "--no-kubernetes".into(),
        "--bill".into(),
        bill.display().to_string(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bill.csv:3: field `cost`: \"ten\" is not a number"), "{err}");
    let closed = format!("http://127.0.0.1:{}", testkit::free_port());
    let (code, err) =
        run(vec!["analyze".into(), "--no-kubernetes".into(), "--prometheus".into(), closed]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("Prometheus"), "{err}");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{}', insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: x}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n",
            testkit::free_port()
        ),
    )
    .unwrap();
    let (code, err) =
        run(vec!["analyze".into(), "--kubeconfig".into(), kubeconfig.display().to_string()]);
    assert_eq!(code, Some(3), "{err}");
    let (code, err) = run(vec![
        "analyze".into(),
        "--no-kubernetes".into(),
        "--target-savings".into(),
        "lots".into(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    // Nothing given at all: nothing evaluated, exit 3 (never a pass).
    let (code, _) = run(vec!["analyze".into(), "--no-kubernetes".into()]);
    assert_eq!(code, Some(3));
}
