//! The API calls postlaunch's Kubernetes tools make (apps/v1 Deployments,
//! v1 Services, Endpoints and ConfigMaps, watches, optimistic concurrency),
//! through the `kube` crate, against our upstream 1.20.2 cluster, and also
//! against a current cluster when `POSTLAUNCH_EXTERNAL_KUBECONFIG` names one
//! (the kind job in `.github/workflows/kind.yml`): the tools must only use
//! what both serve.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on the first surprise

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Service};
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};
use testkit::{KubeCluster, KubeOptions};

async fn external_client(path: &str) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_calls_our_tools_make_are_served_by_1_20_and_current_clusters() {
    // Ours unless a current cluster is named; the control plane is enough.
    let (_cluster, client) = match std::env::var("POSTLAUNCH_EXTERNAL_KUBECONFIG") {
        Ok(path) => (None, external_client(&path).await),
        Err(_) => {
            let cluster = KubeCluster::start_with(&KubeOptions {
                nodes: Vec::new(),
                ..KubeOptions::default()
            })
            .expect("the control plane starts");
            let client = cluster.client().await.unwrap();
            (Some(cluster), client)
        }
    };
    let info = client.apiserver_version().await.unwrap();
    eprintln!("API server {}", info.git_version);
    let ns = format!("postlaunch-api-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &object(serde_json::json!({ "metadata": { "name": ns } })))
        .await
        .unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = object(serde_json::json!({
        "metadata": { "name": "web", "labels": { "app": "web" } },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web", "version": "blue" } },
                "spec": { "containers": [{ "name": "web", "image": "postlaunch/sandbox:blue" }] }
            }
        }
    }));
    deployments.create(&PostParams::default(), &deployment).await.unwrap();

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service: Service = object(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": { "selector": { "app": "web", "version": "blue" }, "ports": [{ "port": 80, "targetPort": 8080, "protocol": "TCP" }] }
    }));
    services.create(&PostParams::default(), &service).await.unwrap();
    // The upstream endpoints controller writes a v1 Endpoints object for it.
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while endpoints.get_opt("web").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "no v1 Endpoints for the Service");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A watch sees a ConfigMap arrive; a stale replace gets 409.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mut watch = configmaps.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    let cm: ConfigMap =
        object(serde_json::json!({ "metadata": { "name": "journal" }, "data": { "step": "1" } }));
    let created = configmaps.create(&PostParams::default(), &cm).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), watch.next()).await {
            Ok(Some(Ok(WatchEvent::Added(seen))))
                if seen.metadata.name.as_deref() == Some("journal") =>
            {
                break;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the watch did not see the ConfigMap: {other:?}"),
        }
    }
    let mut fresh = created.clone();
    fresh.data.get_or_insert_default().insert("step".into(), "2".into());
    configmaps.replace("journal", &PostParams::default(), &fresh).await.unwrap();
    match configmaps.replace("journal", &PostParams::default(), &created).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a stale replace must get 409, got {other:?}"),
    }

    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
}
