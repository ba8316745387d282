//! `cargo xtask bench cost-analyzer`: wall time and peak memory of one
//! analysis of 1,000 workloads with 14 days of cAdvisor samples in
//! Prometheus (written with `promtool tsdb create-blocks-from openmetrics`,
//! one sample every 5 minutes, for the pods the cluster holds), per
//! workload; KRR beside it on the same Prometheus and cluster when it is
//! installed (`KRR=/path/to/krr`: KRR is not on PyPI; its GitHub source
//! installs into a venv).
//! Figures, not assertions.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::build_release;
use crate::tools;

const WORKLOADS: usize = 1000;
const DAYS: u64 = 14;
const STEP: u64 = 300;

/// Runs `cmd` to the end; its wall time, peak RSS (sampled from /proc every
/// 20 ms) and output.
fn measured(cmd: &mut Command) -> anyhow::Result<(Duration, u64, std::process::Output)> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{cmd:?}"))?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut v);
        v
    });
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    Ok((started.elapsed(), peak, output))
}

/// The OpenMetrics text: CPU counter and working set per workload's pod.
fn openmetrics(path: &std::path::Path, end: u64, pods: &[String]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let samples = DAYS * 86_400 / STEP;
    let start = end - samples * STEP;
    let pod = |w: usize| pods[w].clone();
    writeln!(
        out,
        "# HELP container_cpu_usage_seconds_total CPU seconds.\n# TYPE container_cpu_usage_seconds_total gauge"
    )?;
    for w in 0..WORKLOADS {
        // Each workload its own steady use, 5m..500m, with a daily swing.
        let base = 0.005 + (w % 100) as f64 * 0.005;
        let mut total = 0.0;
        for i in 0..samples {
            let t = start + i * STEP;
            let swing = 1.0 + 0.5 * ((t % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU).sin();
            total += base * swing * STEP as f64;
            writeln!(
                out,
                "container_cpu_usage_seconds_total{{namespace=\"bench\",pod=\"{}\",container=\"app\"}} {total:.3} {t}",
                pod(w)
            )?;
        }
    }
    writeln!(
        out,
        "# HELP container_memory_working_set_bytes Working set.\n# TYPE container_memory_working_set_bytes gauge"
    )?;
    for w in 0..WORKLOADS {
        let base = 32.0 * 1024.0 * 1024.0 * (1.0 + (w % 16) as f64);
        for i in 0..samples {
            let t = start + i * STEP;
            let v = base * (1.0 + 0.2 * ((i % 144) as f64 / 144.0));
            writeln!(
                out,
                "container_memory_working_set_bytes{{namespace=\"bench\",pod=\"{}\",container=\"app\"}} {v:.0} {t}",
                pod(w)
            )?;
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(())
}

/// The benchmark.
pub async fn cost_analyzer() -> anyhow::Result<()> {
    build_release("cost-analyzer")?;
    let analyzer = tools::binary("release", "cost-analyzer");
    let dir = tempfile::tempdir()?;
    // The cluster: the control plane only, 1,000 Deployments (their pods stay Pending).
    let options = testkit::KubeOptions { nodes: Vec::new(), ..testkit::KubeOptions::default() };
    let cluster =
        tokio::task::spawn_blocking(move || testkit::KubeCluster::start_with(&options)).await??;
    let manifest = dir.path().join("workloads.yaml");
    let mut m = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n");
    for w in 0..WORKLOADS {
        m.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: w{w:04}, namespace: bench}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: w{w:04}}}}}\n  template:\n    metadata: {{labels: {{app: w{w:04}}}}}\n    spec:\n      containers:\n        - name: app\n          image: postlaunch/sandbox:v1\n          resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}\n"
        ));
    }
    std::fs::write(&manifest, m)?;
    let started = Instant::now();
    let out = cluster.kubectl().args(["apply", "-f"]).arg(&manifest).output()?;
    if !out.status.success() {
        bail!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!("{WORKLOADS} Deployments applied in {:.1} s", started.elapsed().as_secs_f64());

    // Each workload's pod (Pending: there is no node), by workload.
    let listed = Instant::now();
    let names = loop {
        let out = cluster
            .kubectl()
            .args([
                "-n",
                "bench",
                "get",
                "pods",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
            ])
            .output()?;
        let names: Vec<String> =
            String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        if names.len() >= WORKLOADS {
            break names;
        }
        if listed.elapsed() > Duration::from_secs(300) {
            bail!("only {} of {WORKLOADS} pods after 300 s", names.len());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let pods: Vec<String> = (0..WORKLOADS)
        .map(|w| {
            names.iter().find(|p| p.starts_with(&format!("w{w:04}-"))).cloned().unwrap_or_default()
        })
        .collect();

    let end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() / STEP
        * STEP
        - 3600;
    let text = dir.path().join("samples.om");
    let started = Instant::now();
    openmetrics(&text, end, &pods)?;
    let size = std::fs::metadata(&text)?.len();
    println!(
        "cost-analyzer: {WORKLOADS} workloads, {DAYS} days every {} min: {:.0} MB of OpenMetrics in {:.1} s",
        STEP / 60,
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let data = dir.path().join("tsdb");
    let started = Instant::now();
    let promtool = testkit::binaries::which("promtool")
        .context("promtool (scripts/install-deps.sh installs it)")?;
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&text)
        .arg(&data)
        .output()?;
    if !out.status.success() {
        bail!("promtool create-blocks-from: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_file(&text)?;
    println!(
        "promtool tsdb create-blocks-from openmetrics: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Prometheus on those blocks, scraping nothing.
    let port = testkit::free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global: {scrape_interval: 1m}\nscrape_configs: []\n")?;
    let prometheus_bin = testkit::binaries::which("prometheus").context("prometheus")?;
    let mut prometheus = Command::new(prometheus_bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--storage.tsdb.retention.time=30d")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let ready = Instant::now();
    let client = reqwest::Client::new();
    while !client.get(format!("{url}/-/ready")).send().await.is_ok_and(|r| r.status().is_success())
    {
        if ready.elapsed() > Duration::from_secs(120) {
            let _ = prometheus.kill();
            bail!("Prometheus did not become ready on the generated blocks");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!(
        "{:<22} {:>8} {:>12} {:>14} {:>14}  result",
        "tool", "wall s", "peak RSS MB", "ms / workload", "KB / workload"
    );
    let mut cmd = Command::new(&analyzer);
    cmd.args([
        "analyze",
        "--namespace",
        "bench",
        "--window",
        "14d",
        "--step",
        "10m",
        "--rate-window",
        "10m",
        "--output",
        "json",
    ])
    .arg("--kubeconfig")
    .arg(cluster.kubeconfig())
    .args(["--prometheus", &url]);
    let (took, peak, out) = measured(&mut cmd)?;
    let report = shared_types::Report::from_json(&String::from_utf8_lossy(&out.stdout));
    let summary = match &report {
        Ok(r) => format!(
            "{} recommendations, {} withheld",
            r.measurements.iter().find(|m| m.name == "recommendations").map_or(0.0, |m| m.value),
            r.measurements.iter().find(|m| m.name == "withheld").map_or(0.0, |m| m.value)
        ),
        Err(_) => format!(
            "no report: {}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
        ),
    };
    let row = |name: &str, took: Duration, peak: u64, summary: &str| {
        println!(
            "{name:<22} {:>8.2} {:>12.1} {:>14.2} {:>14.1}  {summary}",
            took.as_secs_f64(),
            peak as f64 / 1024.0,
            took.as_secs_f64() * 1000.0 / WORKLOADS as f64,
            peak as f64 / WORKLOADS as f64
        );
    };
    row("cost-analyzer", took, peak, &summary);
    match std::env::var_os("KRR") {
        Some(krr) => {
            let mut cmd = Command::new(krr);
            // The same settings: 14 days, a 10-minute step (also KRR's rate
            // window), p95, +15 %, 100 points.
            cmd.args(["simple", "--prometheus-url", &url, "-n", "bench"])
                .args(["--history-duration", "336", "--timeframe-duration", "10"])
                .args(["--cpu-percentile", "95", "--memory-buffer-percentage", "15"])
                .args(["--points-required", "100", "-f", "json", "--logtostderr"])
                .arg("--kubeconfig")
                .arg(cluster.kubeconfig());
            let (k_took, k_peak, k_out) = measured(&mut cmd)?;
            let scans = serde_json::from_slice::<serde_json::Value>(&k_out.stdout)
                .ok()
                .and_then(|v| v["scans"].as_array().map(Vec::len))
                .map_or_else(
                    || {
                        format!(
                            "exit {:?}: {}",
                            k_out.status.code(),
                            String::from_utf8_lossy(&k_out.stderr)
                                .lines()
                                .last()
                                .unwrap_or_default()
                        )
                    },
                    |n| format!("{n} scans"),
                );
            row("KRR (simple)", k_took, k_peak, &scans);
            println!(
                "ratio (cost-analyzer / KRR): wall {:.2}, memory {:.2}",
                took.as_secs_f64() / k_took.as_secs_f64(),
                peak as f64 / k_peak as f64
            );
        }
        None => {
            println!("KRR: not run (set KRR=/path/to/krr; pip install robusta-krr into a venv)")
        }
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    Ok(())
}
