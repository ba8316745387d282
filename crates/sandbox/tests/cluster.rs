//! The marketplace on the local Kubernetes (upstream 1.20.2 control plane,
//! postlaunch-node running pods as processes): `deploy/sandbox` brings every
//! Deployment to ready, the gateway reaches auth and catalog through their
//! Services, and the load-tester's built-in scenario passes against the
//! gateway's Service. kubectl, the upstream controllers and the load-tester
//! binary are the clients; nothing here is the sandbox's own test code path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on the first surprise

mod common;

use std::time::Duration;

use common::wallet::{Wallet, sign_in};
use serde_json::{Value, json};
use testkit::marketplace::{ClusterConfig, deploy_to_cluster};
use testkit::{KubeCluster, RabbitMq, TempDatabase, local_redis_url};

/// `http://TWIN:8080/metrics` of every pod of `app` (its IP's loopback twin,
/// where the node runs it), as Prometheus' pod discovery would find them.
async fn pod_metrics_urls(cluster: &KubeCluster, app: &str) -> Vec<String> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let pods: Api<Pod> = Api::namespaced(cluster.client().await.unwrap(), "default");
    let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap();
    list.items
        .iter()
        .filter_map(|pod| pod.status.as_ref()?.pod_ip.clone())
        .map(|ip| {
            let twin = testkit::kube_cluster::loopback_twin(&ip).expect("a pod IP of the cluster");
            format!("http://{twin}:8080/metrics")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_marketplace_deploys_to_the_local_cluster_and_holds_the_built_in_load() {
    let load_tester = testkit::workspace_binary("debug", "load-tester");
    let reorg_sim = testkit::workspace_binary("debug", "reorg-sim");
    for binary in [&load_tester, &reorg_sim] {
        assert!(
            binary.exists(),
            "{} is missing: run `cargo build --workspace --bins` (cargo xtask test does)",
            binary.display()
        );
    }
    let db = TempDatabase::create().await.unwrap();
    let rabbit = RabbitMq::start().await.unwrap();
    let cluster = tokio::task::spawn_blocking(KubeCluster::start).await.unwrap().unwrap();
    let config = ClusterConfig {
        database_url: db.url().to_owned(),
        redis_url: local_redis_url(),
        amqp_url: rabbit.amqp_url(),
        collections: 20,
        nfts: 200,
    };
    deploy_to_cluster(&cluster, &config, Duration::from_secs(180)).await.unwrap();

    let gateway = format!("http://{}", cluster.service_address("default", "gateway", 80).unwrap());
    let collection: Value =
        reqwest::get(format!("{gateway}/api/collections/3")).await.unwrap().json().await.unwrap();
    assert_eq!(collection["id"], 3, "{collection}");

    // Sign-in through the auth Service, an order through the catalog Service,
    // its event through RabbitMQ to the consumer pod.
    let token = sign_in(&gateway, &Wallet::new(21), "d").await.unwrap();
    let order = reqwest::Client::new()
        .post(format!("{gateway}/api/orders"))
        .bearer_auth(&token)
        .header("x-device-fingerprint", "d")
        .header("idempotency-key", "cluster-order-1")
        .json(&json!({"nft_id": 5, "kind": "buy", "price_wei": "1000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), 201, "{}", order.text().await.unwrap());
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    let client = &client;
    testkit::wait_until(
        "the consumer pod to apply the order's event",
        Duration::from_secs(60),
        || async move {
            let applied: i64 = client
                .query_one("SELECT count(*) FROM sandbox.processed_events", &[])
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
            if applied == 1 { Ok(()) } else { Err(format!("{applied} applied")) }
        },
    )
    .await
    .unwrap();

    // The load-tester, as a user runs it, against the gateway's Service,
    // watching every gateway and catalog pod (the pool is the catalog's).
    let mut watch = Vec::new();
    for app in ["gateway", "catalog"] {
        for url in pod_metrics_urls(&cluster, app).await {
            watch.extend(["--metrics-url".to_owned(), url]);
        }
    }
    assert_eq!(watch.len(), 8, "two gateway and two catalog pods: {watch:?}");
    let output = tokio::process::Command::new(&load_tester)
        .args(["run", "--target", &gateway, "--users", "20", "--hatch-rate", "20"])
        .args(&watch)
        .args(["--duration", "5s", "--think-time", "0ms..50ms", "--output", "json"])
        .output()
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    assert_eq!(
        output.status.code(),
        Some(0),
        "load-tester against {gateway}: {report:#}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for check in report["checks"].as_array().unwrap() {
        assert_eq!(check["verdict"], "pass", "{check:#}");
    }
    // The pages went through the catalog Service over gRPC, timed on both sides.
    let measured = |prefix: &str| {
        report["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
    };
    assert!(measured("grpc_p95 client Catalog/"), "{report:#}");
    assert!(measured("grpc_p95 server Catalog/"), "{report:#}");
}
