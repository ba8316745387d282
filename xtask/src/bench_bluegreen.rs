//! `cargo xtask bench bluegreen-promoter`: on the local cluster, the time
//! from `deploy` to promoted and from `rollback` to traffic back, with the
//! API calls each made, next to the same release done by hand with kubectl
//! (set image, rollout status, patch the Service's selector; patch back),
//! timed to the first answer from the new version. Figures, not assertions.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::build_release;
use crate::{tools, workspace};

fn kubectl(cluster: &testkit::KubeCluster, args: &[&str]) -> anyhow::Result<(String, usize)> {
    // -v=6 logs every request the client sends, with its verb and URL.
    let out = cluster.kubectl().arg("-v=6").args(args).output().context("cannot run kubectl")?;
    if !out.status.success() {
        bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let log = String::from_utf8_lossy(&out.stderr);
    let calls = log
        .lines()
        .filter(|l| {
            ["GET https://", "POST https://", "PUT https://", "PATCH https://", "DELETE https://"]
                .iter()
                .any(|v| l.contains(v))
        })
        .count();
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), calls))
}

/// Waits until `url` answers with `x-release: version`; the time it took.
async fn until_version(url: &str, version: &str, started: Instant) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()?;
    loop {
        if let Ok(r) = client.get(format!("{url}/healthz")).send().await
            && r.headers().get("x-release").and_then(|h| h.to_str().ok()) == Some(version)
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("{url} never answered as {version}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn value(report: &shared_types::Report, name: &str) -> f64 {
    report.measurements.iter().find(|m| m.name == name).map_or(f64::NAN, |m| m.value)
}

/// The benchmark.
pub async fn bluegreen_promoter(runs: usize) -> anyhow::Result<()> {
    build_release("bluegreen-promoter")?;
    let promoter = tools::binary("release", "bluegreen-promoter");
    let cluster = tokio::task::spawn_blocking(testkit::KubeCluster::start).await??;
    let manifest = workspace::root().join("docs/bluegreen-promoter/shop.yaml");
    kubectl(&cluster, &["apply", "-f", &manifest.display().to_string()])?;
    kubectl(&cluster, &["rollout", "status", "deployment/shop-blue", "--timeout=180s"])?;
    let active = format!("http://{}", cluster.service_address("default", "shop", 80)?);
    let preview = format!("http://{}", cluster.service_address("default", "shop-preview", 80)?);
    until_version(&active, "v1", Instant::now()).await?;
    let state = tempfile::tempdir()?;
    let common = [
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
        "--allow-namespace".to_owned(),
        "default".to_owned(),
        "--state-dir".to_owned(),
        state.path().display().to_string(),
        "--active-url".to_owned(),
        active.clone(),
        "--probe-path".to_owned(),
        "/api/collections/1".to_owned(),
    ];
    println!(
        "bluegreen-promoter vs kubectl by hand: 2 replicas of the sandbox on postlaunch-node, {runs} runs"
    );
    println!(
        "{:>4} {:<22} {:>10} {:>10} {:>9} {:>7}",
        "run", "what", "deploy s", "back s", "API calls", "failed"
    );
    let mut ours = (Vec::new(), Vec::new());
    let mut theirs = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let version = format!("v{}", run + 1);
        // bluegreen-promoter: deploy (gates: ready, preview health) then rollback.
        let started = Instant::now();
        let mut args = vec![
            "deploy".to_owned(),
            "shop".to_owned(),
            "--image".to_owned(),
            format!("postlaunch/sandbox:{version}"),
        ];
        args.extend([
            "--watch-for".to_owned(),
            "0s".to_owned(),
            "--preview-url".to_owned(),
            preview.clone(),
        ]);
        args.extend(common.iter().cloned());
        let deploy = tools::run_json(&promoter, &args).await?;
        let deploy_s = started.elapsed().as_secs_f64();
        let mut args = vec!["rollback".to_owned(), "shop".to_owned()];
        args.extend(common.iter().cloned());
        let rollback = tools::run_json(&promoter, &args).await?;
        let back_s = value(&rollback.report, "rollback_seconds");
        println!(
            "{run:>4} {:<22} {deploy_s:>10.2} {back_s:>10.2} {:>4}+{:<4} {:>3}+{:<3}",
            "bluegreen-promoter",
            value(&deploy.report, "api_calls"),
            value(&rollback.report, "api_calls"),
            value(&deploy.report, "failed_requests"),
            value(&rollback.report, "failed_requests"),
        );
        ours.0.push(deploy_s);
        ours.1.push(back_s);

        // kubectl by hand: the same release of the idle (green) Deployment.
        let version = format!("k{}", run + 1);
        let started = Instant::now();
        let (_, a) = kubectl(
            &cluster,
            &[
                "set",
                "image",
                "deployment/shop-green",
                &format!("web=postlaunch/sandbox:{version}"),
            ],
        )?;
        let (_, s) = kubectl(&cluster, &["scale", "deployment/shop-green", "--replicas=2"])?;
        let (_, b) =
            kubectl(&cluster, &["rollout", "status", "deployment/shop-green", "--timeout=180s"])?;
        let (_, c) = kubectl(
            &cluster,
            &["patch", "service", "shop", "-p", "{\"spec\":{\"selector\":{\"colour\":\"green\"}}}"],
        )?;
        let deploy_s = until_version(&active, &version, started).await?.as_secs_f64();
        let started = Instant::now();
        let (_, d) = kubectl(
            &cluster,
            &["patch", "service", "shop", "-p", "{\"spec\":{\"selector\":{\"colour\":\"blue\"}}}"],
        )?;
        let back_s = until_version(&active, "v1", started).await?.as_secs_f64();
        println!(
            "{run:>4} {:<22} {deploy_s:>10.2} {back_s:>10.2} {:>4}+{:<4} {:>7}",
            "kubectl by hand",
            a + s + b + c,
            d,
            "-"
        );
        theirs.0.push(deploy_s);
        theirs.1.push(back_s);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (d_ours, b_ours) = (median(&mut ours.0), median(&mut ours.1));
    let (d_theirs, b_theirs) = (median(&mut theirs.0), median(&mut theirs.1));
    println!(
        "median deploy: bluegreen-promoter {d_ours:.2} s (gates, probes, journal), kubectl {d_theirs:.2} s: ratio {:.2}",
        d_ours / d_theirs
    );
    println!(
        "median traffic back after rollback: bluegreen-promoter {b_ours:.2} s, kubectl {b_theirs:.2} s: ratio {:.2}",
        b_ours / b_theirs
    );
    Ok(())
}
