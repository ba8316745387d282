//! The upstream Kubernetes 1.20.2 control plane (kube-apiserver,
//! kube-controller-manager, kube-scheduler and etcd, none of it ours) started
//! by testkit on loopback, driven by kubectl, a client we did not write:
//! validation, controllers and optimistic concurrency are upstream's own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on the first surprise

use std::process::Output;
use std::time::{Duration, Instant};

use testkit::{KubeCluster, KubeOptions};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn kubectl(cluster: &KubeCluster, args: &[&str]) -> Output {
    cluster.kubectl().args(args).output().expect("kubectl runs")
}

fn kubectl_stdin(cluster: &KubeCluster, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cluster
        .kubectl()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

const SANDBOX: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sandbox
  labels: {app: sandbox}
spec:
  replicas: 2
  selector:
    matchLabels: {app: sandbox}
  template:
    metadata:
      labels: {app: sandbox, version: v1}
    spec:
      containers:
      - name: sandbox
        image: postlaunch/sandbox:v1
        ports: [{containerPort: 8080}]
        resources:
          requests: {cpu: 100m, memory: 64Mi}
          limits: {memory: 256Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: sandbox
spec:
  selector: {app: sandbox}
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
";

#[test]
fn kubectl_drives_the_upstream_control_plane() {
    // The control plane alone: no node, so the pods stay Pending.
    let cluster =
        KubeCluster::start_with(&KubeOptions { nodes: Vec::new(), ..KubeOptions::default() })
            .expect("the control plane starts (see the step named in the error)");
    eprintln!("control plane ready in {:.1} s", cluster.started_in.as_secs_f64());

    let version = kubectl(&cluster, &["version", "-o", "json"]);
    assert!(text(&version).contains("\"gitVersion\": \"v1.20.2"), "{}", text(&version));

    let applied = kubectl_stdin(&cluster, &["apply", "-f", "-"], SANDBOX);
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(text(&applied).contains("deployment.apps/sandbox created"), "{}", text(&applied));

    // The upstream deployment and replicaset controllers create 2 pods.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pods = loop {
        let o = kubectl(&cluster, &["get", "pods", "-l", "app=sandbox", "-o", "name"]);
        let names: Vec<String> =
            String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect();
        if names.len() == 2 || Instant::now() > deadline {
            break names;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(pods.len(), 2, "the ReplicaSet controller made two pods: {pods:?}");
    let rs = kubectl(
        &cluster,
        &["get", "replicasets", "-l", "app=sandbox", "-o", "jsonpath={.items[0].spec.replicas}"],
    );
    assert_eq!(String::from_utf8_lossy(&rs.stdout), "2", "{}", text(&rs));

    // The API server validates: a Service port out of range is refused.
    let bad = kubectl_stdin(
        &cluster,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports: [{port: 70000, protocol: TCP}]\n",
    );
    assert!(!bad.status.success());
    assert!(text(&bad).contains("Invalid value: 70000"), "{}", text(&bad));

    // Optimistic concurrency: an update from a stale resourceVersion gets 409.
    let stale = kubectl(&cluster, &["get", "deployment", "sandbox", "-o", "json"]);
    let stale = String::from_utf8_lossy(&stale.stdout).into_owned();
    let scaled = kubectl(&cluster, &["scale", "deployment", "sandbox", "--replicas", "3"]);
    assert!(scaled.status.success(), "{}", text(&scaled));
    let replaced = kubectl_stdin(&cluster, &["replace", "-f", "-"], &stale);
    assert!(!replaced.status.success(), "a stale replace must be refused");
    assert!(
        text(&replaced).contains("the object has been modified"),
        "409 Conflict from the real server: {}",
        text(&replaced)
    );

    // The Service got a cluster IP from the benchmarking range, which carries
    // no traffic here; the endpoints controller follows its selector.
    let ip = kubectl(&cluster, &["get", "service", "sandbox", "-o", "jsonpath={.spec.clusterIP}"]);
    let range = format!("198.18.{}.", cluster.slot());
    assert!(String::from_utf8_lossy(&ip.stdout).starts_with(&range), "{}", text(&ip));
    let ep = kubectl(&cluster, &["get", "endpoints", "sandbox", "-o", "name"]);
    assert!(ep.status.success(), "the endpoints controller made the object: {}", text(&ep));
}
