//! The launch plan's Kubernetes rows against the sandbox marketplace on the
//! local cluster (upstream 1.20.2 control plane, postlaunch-node running pods
//! as processes): a gateway pod killed and the indexer crashed, each replaced
//! by its Deployment's upstream controllers, recovery measured; kubectl reads
//! the result back.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::time::Duration;

use common::{check, report, run, table};
use shared_types::Verdict;
use testkit::marketplace::{ClusterConfig, deploy_to_cluster};
use testkit::{KubeCluster, RabbitMq, TempDatabase, local_redis_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_kill_and_indexer_crash_recover_on_the_local_cluster() {
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
    let names = |app: &str| {
        let out = cluster
            .kubectl()
            .args([
                "get",
                "pods",
                "-l",
                &format!("app={app}"),
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let gateways_before = names("gateway");
    let indexer_before = names("indexer");

    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let plan = common::root().join("docs/chaos-runner/launch-plan.yaml");
    let kubeconfig = cluster.kubeconfig().display().to_string();
    let (code, stdout, stderr) = run(&[
        "run",
        &plan.display().to_string(),
        "--var",
        "TOKEN=unused",
        "--experiment",
        "pod-kill",
        "--experiment",
        "indexer-crash",
        "--kubeconfig",
        &kubeconfig,
        "--state-dir",
        &dir.path().join("state").display().to_string(),
        "--report",
        &report_path.display().to_string(),
    ])
    .await;
    assert!(report_path.exists(), "no report: exit {code}\n{stdout}\n{stderr}");
    let ran = report(&report_path);
    eprintln!("{}\n{:?}", table(&ran), ran.measurements);
    assert_eq!(code, 0, "{stdout}\n{stderr}\n{}", table(&ran));
    for row in ["pod-kill", "indexer-crash"] {
        assert_eq!(
            check(&ran, &format!("{row}/recovered")).verdict,
            Verdict::Pass,
            "{}",
            table(&ran)
        );
        let took = ran
            .measurements
            .iter()
            .find(|m| m.name == format!("{row}.recover_seconds"))
            .unwrap()
            .value;
        // Measured from the deletion (nothing is undone): at least one probe interval.
        assert!((0.5..120.0).contains(&took), "{row}: {took} s");
    }
    // kubectl sees replacements: one gateway pod is new, the indexer pod is new.
    let gateways_after = names("gateway");
    assert_eq!(gateways_after.len(), 2, "{gateways_after:?}");
    assert_eq!(
        gateways_after.iter().filter(|n| gateways_before.contains(n)).count(),
        1,
        "{gateways_before:?} -> {gateways_after:?}"
    );
    let indexer_after = names("indexer");
    assert_eq!(indexer_after.len(), 1);
    assert_ne!(indexer_after, indexer_before);

    // The kill switch as a ConfigMap: a run refuses to start, kubectl sees it,
    // resume removes it.
    let state = dir.path().join("state").display().to_string();
    let (code, out, err) = run(&[
        "halt",
        "--namespace",
        "default",
        "--kubeconfig",
        &kubeconfig,
        "--state-dir",
        &state,
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_file(dir.path().join("state/halt")).unwrap(); // only the ConfigMap is left
    let cm = cluster
        .kubectl()
        .args(["get", "configmap", "chaos-runner-halt", "-o", "jsonpath={.data.reason}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&cm.stdout), "halted by an operator");
    let args = [
        "run",
        plan.to_str().unwrap(),
        "--var",
        "TOKEN=unused",
        "--experiment",
        "pod-kill",
        "--kubeconfig",
        &kubeconfig,
        "--state-dir",
        &state,
    ];
    let (code, _, err) = run(&args).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("ConfigMap default/chaos-runner-halt"), "{err}");
    let (code, _, _) = run(&[
        "resume",
        "--namespace",
        "default",
        "--kubeconfig",
        &kubeconfig,
        "--state-dir",
        &state,
    ])
    .await;
    assert_eq!(code, 0);
    let cm = cluster.kubectl().args(["get", "configmap", "chaos-runner-halt"]).output().unwrap();
    assert!(!cm.status.success());
}
