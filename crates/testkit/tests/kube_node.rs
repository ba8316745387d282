//! The node that runs pods as processes (crate `kube-node`, ours) under the
//! upstream 1.20.2 control plane, driven by clients we did not write:
//! kubectl, the `kube` crate and Prometheus' Kubernetes service discovery.
//! Scheduling, ReplicaSets, Endpoints and validation are upstream's; the
//! processes, probes, restarts, memory limits and the Service proxy are the
//! node's, and each is checked by what a user would see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on the first surprise

use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use testkit::{KubeCluster, KubeOptions, Prometheus, PrometheusOptions};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn kubectl(cluster: &KubeCluster, args: &[&str]) -> Output {
    cluster.kubectl().args(args).output().expect("kubectl runs")
}

fn kubectl_ok(cluster: &KubeCluster, args: &[&str]) -> String {
    let o = kubectl(cluster, args);
    assert!(o.status.success(), "kubectl {}: {}", args.join(" "), text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn apply(cluster: &KubeCluster, manifest: &str) {
    use std::io::Write;
    let mut child = cluster
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "kubectl apply: {}\n{manifest}", text(&o));
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(cluster: &KubeCluster, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ok(cluster, &all)).unwrap()
}

/// A Deployment of the sandbox whose pods say `release` in `x-release`.
fn sandbox_deployment(name: &str, version: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: sandbox, version: {version}}}}}
  template:
    metadata:
      labels: {{app: sandbox, version: {version}}}
      annotations: {{prometheus.io/scrape: \"true\", prometheus.io/port: \"8080\"}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: sandbox
        image: postlaunch/sandbox:{version}
        args: [\"--listen\", \"$(POD_LOOPBACK_IP):8080\", \"--collections\", \"10\", \"--nfts\", \"200\", \"--release\", \"$(RELEASE)\"]
        env: [{{name: RELEASE, value: \"{version}\"}}]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /readyz, port: http}}, periodSeconds: 1}}
        resources:
          requests: {{cpu: 100m, memory: 64Mi}}
          limits: {{memory: 512Mi}}
"
    )
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: sandbox}
spec:
  selector: {app: sandbox, version: a}
  ports: [{name: web, port: 80, targetPort: http, protocol: TCP}]
";

/// Ready pods of a label selector: name → (IP, container PID).
fn ready_pods(cluster: &KubeCluster, selector: &str) -> Vec<(String, String, i32)> {
    let list = json(cluster, &["get", "pods", "-l", selector]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
        .map(|p| {
            let id = p["status"]["containerStatuses"][0]["containerID"].as_str().unwrap_or("");
            let pid = id.strip_prefix("process://").and_then(|p| p.parse().ok()).unwrap_or(0);
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p["status"]["podIP"].as_str().unwrap_or("").to_owned(),
                pid,
            )
        })
        .collect()
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

async fn release_of(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client.get(url).send().await.ok()?;
    response.headers().get("x-release").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_rolls_out_the_sandbox_the_proxy_serves_it_and_pods_are_real_processes() {
    let mut cluster = KubeCluster::start()
        .expect("control plane and node start (see the step named in the error)");
    // A figure for people, not a verdict: start-up time depends on the machine's load.
    eprintln!("cluster with a ready node in {:.1} s", cluster.started_in.as_secs_f64());
    let slot = cluster.slot();

    let nodes = json(&cluster, &["get", "nodes"]);
    let node = &nodes["items"][0];
    assert_eq!(node["metadata"]["name"], "node-1");
    assert!(node["spec"]["taints"].is_null(), "the not-ready taint is gone: {node}");
    assert_eq!(node["status"]["capacity"]["cpu"], "4");
    assert_eq!(node["metadata"]["labels"]["topology.kubernetes.io/zone"], "local-a");

    apply(&cluster, &sandbox_deployment("sandbox-a", "a", 2));
    apply(&cluster, SERVICE);
    let rollout =
        kubectl(&cluster, &["rollout", "status", "deployment/sandbox-a", "--timeout=60s"]);
    assert!(rollout.status.success(), "{}", text(&rollout));
    assert!(text(&rollout).contains("successfully rolled out"), "{}", text(&rollout));

    let wide = kubectl_ok(&cluster, &["get", "pods", "-o", "wide"]);
    eprintln!("{wide}");
    let pods = ready_pods(&cluster, "version=a");
    assert_eq!(pods.len(), 2, "{wide}");
    for (name, ip, pid) in &pods {
        assert!(
            ip.starts_with(&format!("198.19.{slot}.")),
            "{name} has a pod IP from the node's range: {ip}"
        );
        assert!(wide.contains(ip.as_str()), "kubectl get pods -o wide shows {ip}");
        assert!(pid_alive(*pid), "{name} runs as process {pid}");
    }

    // The Service answers through the proxy, from both pods in turn.
    let address = cluster.service_address("default", "sandbox", 80).unwrap();
    assert!(address.starts_with(&format!("127.18.{slot}.")), "{address}");
    // A new connection per request: the proxy, like kube-proxy, picks the
    // backend per connection, so a kept-alive one stays on its pod.
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
    let url = format!("http://{address}/api/collections/1");
    let answer = http.get(&url).send().await.unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(answer.headers()["x-release"], "a");

    // kubectl delete pod ends the process; the ReplicaSet replaces it.
    let (victim, _, victim_pid) = pods[0].clone();
    let before: BTreeSet<String> = pods.iter().map(|p| p.0.clone()).collect();
    let deleted_at = Instant::now();
    kubectl_ok(&cluster, &["delete", "pod", &victim, "--wait=false"]);
    let replacement = wait_until("a ready replacement pod", Duration::from_secs(60), || {
        ready_pods(&cluster, "version=a").into_iter().find(|p| !before.contains(&p.0))
    });
    let replaced_in = deleted_at.elapsed();
    eprintln!(
        "delete pod → ready replacement {} in {:.2} s",
        replacement.0,
        replaced_in.as_secs_f64()
    );
    wait_until("the deleted pod's process to end", Duration::from_secs(10), || {
        (!pid_alive(victim_pid)).then_some(())
    });
    assert!(pid_alive(replacement.2));
    let direct = format!(
        "http://{}:8080/healthz",
        testkit::kube_cluster::loopback_twin(&replacement.1).unwrap()
    );
    assert_eq!(http.get(&direct).send().await.unwrap().text().await.unwrap(), "ok");
    wait_until("the deleted pod object to go", Duration::from_secs(30), || {
        (!kubectl_ok(&cluster, &["get", "pods", "-o", "name"]).contains(&victim)).then_some(())
    });

    // A selector patch moves traffic from version a to version b.
    apply(&cluster, &sandbox_deployment("sandbox-b", "b", 1));
    let rollout =
        kubectl(&cluster, &["rollout", "status", "deployment/sandbox-b", "--timeout=60s"]);
    assert!(rollout.status.success(), "{}", text(&rollout));
    for _ in 0..6 {
        assert_eq!(
            release_of(&http, &url).await.as_deref(),
            Some("a"),
            "before the patch only a serves"
        );
    }
    kubectl_ok(
        &cluster,
        &["patch", "service", "sandbox", "-p", r#"{"spec":{"selector":{"version":"b"}}}"#],
    );
    let switched = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let release = release_of(&http, &url).await;
        if release.as_deref() == Some("b") || !seen.is_empty() {
            seen.push(release);
        }
        assert!(switched.elapsed() < Duration::from_secs(20), "traffic did not move: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("selector patch → traffic on b in {:.2} s", switched.elapsed().as_secs_f64());
    assert!(
        seen.iter().all(|r| r.as_deref() == Some("b")),
        "after the switch only b serves: {seen:?}"
    );

    // Prometheus, discovering through the API server, has each sandbox pod's memory.
    let prometheus = Prometheus::start(PrometheusOptions {
        extra_scrape_configs: cluster.prometheus_scrape_configs(),
        ..PrometheusOptions::default()
    })
    .await
    .unwrap();
    let running: BTreeSet<String> =
        ready_pods(&cluster, "app=sandbox").into_iter().map(|p| p.0).collect();
    assert_eq!(running.len(), 3);
    let query =
        r#"container_memory_working_set_bytes{namespace="default",container="sandbox"} > 1e6"#;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let result = prometheus.query(query).await.unwrap();
        let seen: BTreeSet<String> = result
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["metric"]["pod"].as_str().map(str::to_owned))
            .collect();
        if seen == running {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus has {seen:?}, want {running:?}: {result}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Each sandbox pod's own /metrics, scraped at its twin (targets appear
    // one by one as discovery refreshes: wait for all three).
    loop {
        let up = prometheus.query(r#"up{job="kubernetes-pods"} == 1"#).await.unwrap();
        if up.as_array().map(Vec::len) == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "each sandbox pod's /metrics is scraped: {up}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A crash of the node (SIGKILL, no clean-up code runs) takes its pods'
    // processes with it: none is left serving on the machine.
    let pids: Vec<i32> = ready_pods(&cluster, "app=sandbox").into_iter().map(|p| p.2).collect();
    assert_eq!(pids.len(), 3);
    cluster.kill_node();
    wait_until("the pods' processes to die with the node", Duration::from_secs(10), || {
        pids.iter().all(|pid| !pid_alive(*pid)).then_some(())
    });
}

const PROBED: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  containers:
  - name: hog
    image: postlaunch/python:3
    command: ["python3", "-c", "import time\nb = bytearray(256 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(600)"]
    resources: {limits: {memory: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: unhealthy}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: sandbox
    image: postlaunch/sandbox:a
    args: ["--listen", "$(POD_LOOPBACK_IP):8080", "--collections", "10", "--nfts", "100"]
    ports: [{containerPort: 8080}]
    livenessProbe: {httpGet: {path: /no-such-page, port: 8080}, periodSeconds: 1, failureThreshold: 2, initialDelaySeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: never-ready, labels: {app: probed}}
spec:
  containers:
  - name: sandbox
    image: postlaunch/sandbox:a
    args: ["--listen", "$(POD_LOOPBACK_IP):8080", "--collections", "10", "--nfts", "100"]
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /no-such-page, port: 8080}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: ready, labels: {app: probed}}
spec:
  containers:
  - name: sandbox
    image: postlaunch/sandbox:a
    args: ["--listen", "$(POD_LOOPBACK_IP):8080", "--collections", "10", "--nfts", "100"]
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: probed}
spec:
  selector: {app: probed}
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn memory_limits_and_probes_restart_containers_and_the_kube_crate_sees_it_all() {
    let cluster = KubeCluster::start_with(&KubeOptions {
        nodes: vec!["node-a,zone=local-a".into(), "node-b,zone=local-b,cpu=2,memory=4Gi".into()],
        ..KubeOptions::default()
    })
    .expect("control plane and nodes start");
    let client = cluster.client().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    // A watch from the kube crate sees the pods arrive.
    let list = pods.list(&ListParams::default()).await.unwrap();
    let version = list.metadata.resource_version.clone().unwrap();
    let mut watch = pods.watch(&WatchParams::default(), &version).await.unwrap().boxed();
    apply(&cluster, PROBED);
    let mut added = BTreeSet::new();
    while added.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
            Ok(Some(Ok(WatchEvent::Added(pod)))) => {
                added.insert(pod.metadata.name.unwrap());
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("watch ended or failed: {other:?}"),
        }
    }
    assert_eq!(
        added,
        ["hog", "never-ready", "ready", "unhealthy"].map(String::from).into_iter().collect()
    );

    let status = |name: &'static str| {
        let v = json(&cluster, &["get", "pod", name]);
        v["status"]["containerStatuses"][0].clone()
    };
    // Over its memory limit: killed and restarted with reason OOMKilled.
    let hog = wait_until("the hog to be OOMKilled and restarted", Duration::from_secs(60), || {
        let s = status("hog");
        (s["restartCount"].as_i64().unwrap_or(0) >= 1 && !s["lastState"]["terminated"].is_null())
            .then_some(s)
    });
    assert_eq!(hog["lastState"]["terminated"]["reason"], "OOMKilled", "{hog}");
    assert_eq!(hog["lastState"]["terminated"]["exitCode"], 137, "{hog}");

    // A failing liveness probe restarts the container.
    let unhealthy = wait_until("the liveness restart", Duration::from_secs(60), || {
        let s = status("unhealthy");
        (s["restartCount"].as_i64().unwrap_or(0) >= 1).then_some(s)
    });
    let message = unhealthy["lastState"]["terminated"]["message"].as_str().unwrap_or("");
    assert!(message.contains("liveness probe failed"), "{unhealthy}");

    // A failing readiness probe keeps the pod out of the Service's endpoints.
    let pod_ip = |name: &str| {
        json(&cluster, &["get", "pod", name])["status"]["podIP"].as_str().unwrap_or("").to_owned()
    };
    let (ready_ip, never_ip) = wait_until("both pods to have IPs", Duration::from_secs(30), || {
        let (a, b) = (pod_ip("ready"), pod_ip("never-ready"));
        (!a.is_empty() && !b.is_empty()).then_some((a, b))
    });
    let endpoints =
        wait_until("the endpoints to list the ready pod", Duration::from_secs(30), || {
            let ep = json(&cluster, &["get", "endpoints", "probed"]);
            let subset = &ep["subsets"][0];
            let ips = |key: &str| -> Vec<String> {
                subset[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["ip"].as_str().map(str::to_owned))
                    .collect()
            };
            let (ready, not_ready) = (ips("addresses"), ips("notReadyAddresses"));
            (ready == [ready_ip.clone()] && not_ready == [never_ip.clone()]).then_some(ep)
        });
    eprintln!("endpoints: {endpoints}");
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
    let address = cluster.service_address("default", "probed", 80).unwrap();
    for _ in 0..4 {
        let answer = http.get(format!("http://{address}/healthz")).send().await.unwrap();
        assert_eq!(answer.text().await.unwrap(), "ok", "only the ready pod serves");
    }

    // The scheduler spread pods over both nodes, whose zones are labels.
    let nodes: BTreeSet<String> = json(&cluster, &["get", "pods"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");

    // A stale resourceVersion update gets 409 from the real server.
    let mut stale = pods.get("ready").await.unwrap();
    let mut fresh = stale.clone();
    fresh.metadata.labels.get_or_insert_default().insert("touched".into(), "yes".into());
    pods.replace("ready", &PostParams::default(), &fresh).await.unwrap();
    stale.metadata.labels.get_or_insert_default().insert("touched".into(), "no".into());
    match pods.replace("ready", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a stale replace must get 409, got {other:?}"),
    }
}
