//! Faults are never left behind: `kill -9` of the runner with a netem
//! qdisc, a proxy toxic and a scaled Deployment in place, then `recover`;
//! the kill switch; the SLO guard; and netem's 500 ms seen from inside the
//! namespace. Kubernetes is the real upstream control plane (testkit), the
//! Deployment read back with kubectl.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, ProxyProcess, check, report, run, table, wait_applied};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use shared_types::Verdict;
use testkit::kube_cluster::{KubeCluster, KubeOptions};

/// A namespace name unique to this test process and `tag` (≤ 11 chars).
fn netns_name(tag: &str) -> String {
    format!("pl{tag}{}", std::process::id() % 100_000)
}

/// Whether the runner's nftables table for `netns` exists.
fn drop_rules(netns: &str) -> bool {
    let table = format!("postlaunch_chaos_{}", netns.replace('-', "_"));
    Command::new("nft").args(["list", "table", "inet", &table]).output().unwrap().status.success()
}

/// Whether this kernel has sch_netem (some VM kernels are built without it).
fn kernel_has_netem() -> bool {
    let out = Command::new("tc")
        .args(["qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"])
        .output()
        .unwrap();
    if out.status.success() {
        let _ = Command::new("tc").args(["qdisc", "del", "dev", "lo", "root"]).output();
        return true;
    }
    !String::from_utf8_lossy(&out.stderr).contains("qdisc kind is unknown")
}

fn kubectl_replicas(cluster: &KubeCluster) -> String {
    let out = cluster
        .kubectl()
        .args(["get", "deployment", "web", "-n", "default", "-o", "jsonpath={.spec.replicas}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_experiment_then_recover_undoes_kernel_rules_toxic_scale_and_chaos_mesh() {
    let cluster =
        KubeCluster::start_with(&KubeOptions { nodes: vec![], ..KubeOptions::default() }).unwrap();
    let client = cluster.client().await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let web: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "postlaunch/sandbox" }] }
            }
        }
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &web).await.unwrap();
    // Chaos Mesh's PodChaos CRD (its group, kind and plural; the schema kept
    // open): the API server serves the objects, no Chaos Mesh controller acts.
    let crd = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
      "metadata": {"name": "podchaos.chaos-mesh.org"},
      "spec": {"group": "chaos-mesh.org", "scope": "Namespaced",
        "names": {"kind": "PodChaos", "plural": "podchaos", "singular": "podchaos", "listKind": "PodChaosList"},
        "versions": [{"name": "v1alpha1", "served": true, "storage": true,
          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}"#;
    let mut apply =
        cluster.kubectl().args(["apply", "-f", "-"]).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut apply.stdin.take().unwrap(), crd.as_bytes()).unwrap();
    assert!(apply.wait().unwrap().success());
    let established = cluster
        .kubectl()
        .args([
            "wait",
            "--for",
            "condition=established",
            "crd/podchaos.chaos-mesh.org",
            "--timeout=60s",
        ])
        .output()
        .unwrap();
    assert!(established.status.success(), "{}", String::from_utf8_lossy(&established.stderr));
    let podchaos = |cluster: &KubeCluster| {
        let out = cluster
            .kubectl()
            .args(["get", "podchaos", "-n", "default", "-o", "name"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let (proxy, _) = ProxyProcess::start(&[("redis", "127.0.0.1:6379".to_owned())]);
    let netns = netns_name("k");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("three.yaml");
    std::fs::write(
        &file,
        format!(
            "allow: {{namespaces: [default], netns: [{netns}]}}
experiments:
  - id: three-faults
    method:
      - name: cut-port
        netem: {{netns: {netns}, drop_ports: [5432]}}
        duration: 10m
      - name: slow-redis
        proxy: {{api: '{api}', proxy: redis, toxic: latency, attributes: {{latency: 300}}}}
        duration: 10m
      - name: no-web
        scale: {{namespace: default, deployment: web, replicas: 0}}
        duration: 10m
      - name: web-failure
        chaos_mesh: {{kind: PodChaos, namespace: default, spec: {{action: pod-failure, mode: one, selector: {{labelSelectors: {{app: web}}}}}}}}
        duration: 10m
",
            api = proxy.api
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let kubeconfig = cluster.kubeconfig().display().to_string();
    let log = dir.path().join("runner.log");
    let mut runner = Command::new(BIN)
        .args(["run", &file.display().to_string(), "--kubeconfig", &kubeconfig])
        .args(["--state-dir", &state.display().to_string()])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("runner.err")).unwrap())
        .spawn()
        .unwrap();
    if testkit::wait_until("four faults applied", Duration::from_secs(60), || async {
        let applied = common::journal(&state).iter().filter(|e| e["event"] == "applied").count();
        if applied >= 4 { Ok(()) } else { Err(format!("{applied} applied")) }
    })
    .await
    .is_err()
    {
        let _ = runner.kill();
        panic!(
            "the runner did not apply its faults:\n{}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("runner.err")).unwrap_or_default()
        );
    }
    runner.kill().unwrap(); // SIGKILL: no undo of its own
    runner.wait().unwrap();

    // All four are still applied.
    assert!(drop_rules(&netns));
    assert_eq!(podchaos(&cluster), 1);
    assert_eq!(proxy.state("redis").await["toxics"].as_array().unwrap().len(), 1);
    assert_eq!(kubectl_replicas(&cluster), "0");

    // A dry run lists what it would undo, changes nothing, and exits 0: the
    // plan is its evidence.
    let (code, stdout, stderr) = run(&[
        "recover",
        "--dry-run",
        "--state-dir",
        &state.display().to_string(),
        "--kubeconfig",
        &kubeconfig,
    ])
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("4 outstanding fault(s) would be undone"), "{stdout}");
    assert!(drop_rules(&netns));
    assert_eq!(podchaos(&cluster), 1);
    assert_eq!(proxy.state("redis").await["toxics"].as_array().unwrap().len(), 1);
    assert_eq!(kubectl_replicas(&cluster), "0");

    let report_path = dir.path().join("recover.json");
    let (code, stdout, stderr) = run(&[
        "recover",
        "--state-dir",
        &state.display().to_string(),
        "--kubeconfig",
        &kubeconfig,
        "--report",
        &report_path.display().to_string(),
    ])
    .await;
    let recovered = report(&report_path);
    assert_eq!(code, 0, "{stdout}\n{stderr}\n{}", table(&recovered));
    assert_eq!(recovered.checks.len(), 4, "{}", table(&recovered));
    assert!(recovered.checks.iter().all(|c| c.verdict == Verdict::Pass));

    // All four are undone, and the journal says who did it.
    assert!(!drop_rules(&netns));
    assert_eq!(podchaos(&cluster), 0);
    assert_eq!(proxy.state("redis").await["toxics"].as_array().unwrap().len(), 0);
    assert_eq!(kubectl_replicas(&cluster), "2");
    let journal = common::journal(&state);
    let by_recover: Vec<&str> = journal
        .iter()
        .filter(|e| e["event"] == "undone" && e["by"] == "recover")
        .map(|e| e["fault"].as_str().unwrap())
        .collect();
    assert_eq!(by_recover.len(), 4, "{journal:?}");
    for step in ["cut-port", "slow-redis", "no-web", "web-failure"] {
        assert!(by_recover.contains(&format!("three-faults/{step}").as_str()), "{by_recover:?}");
    }

    // Idempotent: nothing is left, and a second recover says so.
    let (code, stdout, _) = run(&["recover", "--state-dir", &state.display().to_string()]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("nothing outstanding"), "{stdout}");
    let _ = Command::new(BIN).args(["netns", "delete", &netns]).output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_undoes_a_running_experiment_within_two_seconds() {
    let (proxy, _) = ProxyProcess::start(&[("redis", "127.0.0.1:6379".to_owned())]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.yaml");
    let write = |duration: &str| {
        std::fs::write(
            &file,
            format!(
                "experiments:
  - id: slow-redis
    steady_state:
      - name: redis
        tcp: {{address: '127.0.0.1:6379'}}
    method:
      - name: latency
        proxy: {{api: '{}', proxy: redis, toxic: latency, attributes: {{latency: 1000}}}}
        duration: {duration}
",
                proxy.api
            ),
        )
        .unwrap();
    };
    write("10m");
    let state = dir.path().join("state").display().to_string();
    let report_path = dir.path().join("report.json");
    let mut runner = Command::new(BIN)
        .args(["run", &file.display().to_string(), "--state-dir", &state])
        .args(["--report", &report_path.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_applied(dir.path().join("state").as_path(), 1, Duration::from_secs(30)).await;
    assert_eq!(proxy.state("redis").await["toxics"].as_array().unwrap().len(), 1);

    let halted_at = Instant::now();
    let (code, stdout, _) = run(&["halt", "--state-dir", &state, "--reason", "test"]).await;
    assert_eq!(code, 0, "{stdout}");
    testkit::wait_until("the toxic removed", Duration::from_secs(5), || async {
        let toxics = proxy.state("redis").await["toxics"].as_array().unwrap().len();
        if toxics == 0 { Ok(()) } else { Err(format!("{toxics} toxics")) }
    })
    .await
    .unwrap();
    let undone_in = halted_at.elapsed();
    assert!(undone_in < Duration::from_secs(2), "undone {undone_in:?} after halt");
    let status = tokio::task::spawn_blocking(move || runner.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(3));
    let halted = report(&report_path);
    let run_check = check(&halted, "slow-redis/run");
    assert_eq!(run_check.verdict, Verdict::Error);
    assert!(
        run_check.detail.as_deref().unwrap_or("").contains("kill switch"),
        "{}",
        table(&halted)
    );

    // Halted: nothing starts until resume.
    write("1s");
    let (code, _, stderr) = run(&["run", &file.display().to_string(), "--state-dir", &state]).await;
    assert_eq!(code, 3);
    assert!(stderr.contains("halted") && stderr.contains("chaos-runner resume"), "{stderr}");
    assert_eq!(proxy.state("redis").await["toxics"].as_array().unwrap().len(), 0);
    let (code, _, _) = run(&["resume", "--state-dir", &state]).await;
    assert_eq!(code, 0);
    let (code, stdout, stderr) =
        run(&["run", &file.display().to_string(), "--state-dir", &state]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_slo_guard_breach_aborts_and_undoes() {
    let sandbox = testkit::Sandbox::start(&[
        "--collections".into(),
        "20".into(),
        "--nfts".into(),
        "100".into(),
    ])
    .await
    .unwrap();
    let upstream = sandbox.url().trim_start_matches("http://").to_owned();
    let (proxy, ports) = ProxyProcess::start(&[("web", upstream)]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guarded.yaml");
    std::fs::write(
        &file,
        format!(
            "experiments:
  - id: web-blackhole
    steady_state:
      - name: web
        http: {{url: 'http://127.0.0.1:{port}/healthz', timeout: 1s}}
    guard:
      name: web-answers
      http: {{url: 'http://127.0.0.1:{port}/healthz', timeout: 1s}}
    method:
      - name: drop-everything
        proxy: {{api: '{api}', proxy: web, toxic: timeout, attributes: {{timeout: 0}}}}
        duration: 10m
",
            port = ports[0],
            api = proxy.api
        ),
    )
    .unwrap();
    let started = Instant::now();
    let report_path = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let (code, stdout, stderr) = run(&[
        "run",
        &file.display().to_string(),
        "--state-dir",
        &dir.path().join("state").display().to_string(),
        "--report",
        &report_path.display().to_string(),
        "--html",
        &html.display().to_string(),
    ])
    .await;
    let took = started.elapsed();
    let guarded = report(&report_path);
    assert_eq!(code, 1, "{stdout}\n{stderr}\n{}", table(&guarded));
    assert!(took < Duration::from_secs(30), "took {took:?}: the guard did not abort");
    let guard = check(&guarded, "web-blackhole/slo-guard");
    assert_eq!(guard.verdict, Verdict::Fail);
    assert!(guard.observed.as_deref().unwrap_or("").contains("web-answers"), "{}", table(&guarded));
    assert_eq!(check(&guarded, "web-blackhole/faults-undone").verdict, Verdict::Pass);
    assert_eq!(
        check(&guarded, "web-blackhole/recovered").verdict,
        Verdict::Pass,
        "{}",
        table(&guarded)
    );
    assert_eq!(proxy.state("web").await["toxics"].as_array().unwrap().len(), 0);
    // The HTML report draws the timeline: the fault's bar, the probe looks, the abort.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("<rect") && page.contains("abort"), "{page}");
    assert!(page.contains("web-blackhole/slo-guard"));
}

/// Median TCP connect time in ms from inside `netns` to `addr` over 5
/// tries, or `None` if a connect did not complete within 2 s.
fn rtt_inside(netns: &str, addr: &str) -> Option<f64> {
    let (host, port) = addr.split_once(':').unwrap();
    let script = format!(
        "import socket, time\nt = []\nfor _ in range(5):\n    s = socket.socket()\n    s.settimeout(2)\n    a = time.monotonic()\n    try:\n        s.connect(('{host}', {port}))\n    except OSError:\n        print('timeout')\n        raise SystemExit(0)\n    t.append((time.monotonic() - a) * 1000)\n    s.close()\nt.sort()\nprint(t[2])\n"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Runs a one-fault netem experiment in the background; returns the child.
fn start_netem(
    dir: &std::path::Path,
    netns: &str,
    addr: &str,
    fault: &str,
    duration: &str,
) -> std::process::Child {
    let file = dir.join(format!("netem-{duration}.yaml"));
    std::fs::write(
        &file,
        format!(
            "allow: {{netns: [{netns}]}}
experiments:
  - id: slow-link
    steady_state:
      - name: listener
        tcp: {{address: '{addr}'}}
    method:
      - name: link
        netem: {{netns: {netns}, {fault}}}
        duration: {duration}
"
        ),
    )
    .unwrap();
    Command::new(BIN)
        .args([
            "run",
            &file.display().to_string(),
            "--state-dir",
            &dir.join("state").display().to_string(),
        ])
        .args(["--report", &dir.join(format!("report-{duration}.json")).display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_faults_are_seen_inside_the_namespace_and_gone_after_undo() {
    let netns = netns_name("n");
    let (code, stdout, stderr) = run(&["netns", "create", &netns]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let host_addr = stdout
        .split("host side ")
        .nth(1)
        .unwrap()
        .split('(')
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_owned();
    // A listener on the host end of the veth: the namespace's client connects to it.
    let listener = std::net::TcpListener::bind(format!("{host_addr}:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream)
        }
    });
    let before = rtt_inside(&netns, &addr).unwrap();
    assert!(before < 50.0, "{before} ms before the fault");
    let dir = tempfile::tempdir().unwrap();

    // The launch plan's "cut database connections": the port is dropped, then back.
    let mut runner = start_netem(dir.path(), &netns, &addr, &format!("drop_ports: [{port}]"), "6s");
    wait_applied(&dir.path().join("state"), 1, Duration::from_secs(20)).await;
    assert_eq!(rtt_inside(&netns, &addr), None, "the port was not cut");
    let status = tokio::task::spawn_blocking(move || runner.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(rtt_inside(&netns, &addr).unwrap() < 50.0, "the port is still cut after the undo");

    // 500 ms of delay, measured from inside the namespace.
    let mut runner = start_netem(dir.path(), &netns, &addr, "delay: 500ms", "8s");
    if kernel_has_netem() {
        wait_applied(&dir.path().join("state"), 2, Duration::from_secs(20)).await;
        let during = rtt_inside(&netns, &addr).unwrap();
        assert!((450.0..=550.0).contains(&during), "{during} ms with 500 ms asked");
        let status = tokio::task::spawn_blocking(move || runner.wait().unwrap()).await.unwrap();
        assert_eq!(status.code(), Some(0));
    } else {
        // This kernel cannot delay packets: the fault says why, exits 3,
        // and leaves nothing applied.
        let status = tokio::task::spawn_blocking(move || runner.wait().unwrap()).await.unwrap();
        assert_eq!(status.code(), Some(3));
        let failed = report(&dir.path().join("report-8s.json"));
        let undone = check(&failed, "slow-link/faults-undone");
        assert_eq!(undone.verdict, Verdict::Error);
        assert!(
            undone.detail.as_deref().unwrap_or("").contains("no sch_netem"),
            "{}",
            table(&failed)
        );
    }
    let after = rtt_inside(&netns, &addr).unwrap();
    assert!(after < 50.0, "{after} ms after the undo");
    let (code, _, _) = run(&["netns", "delete", &netns]).await;
    assert_eq!(code, 0);
}
