//! `cargo xtask bench load-tester`: one nginx serving a static file on
//! loopback, driven in turn by wrk, oha, load-tester, k6 and Locust (FastHttpUser)
//! with 50 connections; then 10,000 closed-model users with think time.
//! Peak RSS of each tool is read from its rusage through a tiny Python wrapper.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::tools;

/// Seconds each peer runs at saturation.
const SECONDS: u64 = 5;
/// Connections / users / VUs of the saturation runs.
const CONNECTIONS: u32 = 50;

/// Stops an nginx master and its workers (testkit's rule, shared with the
/// backup bench's TLS proxy).
pub(crate) fn stop_nginx(child: &mut tokio::process::Child) {
    testkit::nginx::stop(child);
}

/// Runs `program args` under a Python wrapper that prints the children's peak
/// RSS (KiB) on its last stderr line; returns (stdout, stderr, peak RSS bytes).
async fn measured(program: &Path, args: &[String]) -> anyhow::Result<(String, String, f64)> {
    let wrapper = "import resource, subprocess, sys\n\
                   r = subprocess.run(sys.argv[1:])\n\
                   print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n\
                   sys.exit(r.returncode)";
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(wrapper)
        .arg(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("cannot run {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let rss = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("PEAK_RSS_KIB "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|kib| kib * 1024.0)
        .with_context(|| format!("{} did not finish: {stderr}", program.display()))?;
    Ok((stdout, stderr, rss))
}

/// load-tester under [`measured`]: its JSON report and peak RSS.
async fn measured_report(
    program: &Path,
    args: &[String],
) -> anyhow::Result<(shared_types::Report, f64)> {
    let (out, err, rss) = measured(program, args).await?;
    let report = shared_types::Report::from_json(&out)
        .with_context(|| format!("load-tester printed no report: {err}"))?;
    Ok((report, rss))
}

fn find(name: &str) -> anyhow::Result<PathBuf> {
    testkit::binaries::which(name)
        .with_context(|| format!("{name} not found: run `scripts/install-deps.sh load-bench`"))
}

struct Row {
    tool: &'static str,
    rps: f64,
    rss: f64,
}

pub(crate) async fn load_tester() -> anyhow::Result<()> {
    crate::bench::build_release("load-tester")?;
    let ours = tools::binary("release", "load-tester");
    let nginx = testkit::Nginx::start().await?;
    let url = nginx.url().to_owned();
    let dir = tempfile::tempdir()?;
    let root = crate::workspace::root();
    let mut rows = Vec::new();

    let (out, _, rss) = measured(
        &find("wrk")?,
        &[
            "-t2".into(),
            format!("-c{CONNECTIONS}"),
            format!("-d{SECONDS}s"),
            format!("{url}/index.html"),
        ],
    )
    .await?;
    let rps = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("wrk printed no Requests/sec")?;
    rows.push(Row { tool: "wrk", rps, rss });

    let (out, err, rss) = measured(
        &find("oha")?,
        &[
            "-z".into(),
            format!("{SECONDS}s"),
            "-c".into(),
            CONNECTIONS.to_string(),
            "--no-tui".into(),
            "--output-format".into(),
            "json".into(),
            format!("{url}/index.html"),
        ],
    )
    .await?;
    let oha: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("oha printed no JSON: {err}"))?;
    let rps = oha["summary"]["requestsPerSec"]
        .as_f64()
        .context("oha JSON lacks summary.requestsPerSec")?;
    rows.push(Row { tool: "oha", rps, rss });

    let scenario = root.join("crates/load-tester/scenarios/static-file.yaml");
    let args: Vec<String> = [
        "run",
        "--target",
        &url,
        "--scenario",
        scenario.to_str().unwrap_or_default(),
        "--users",
        &CONNECTIONS.to_string(),
        "--duration",
        &format!("{SECONDS}s"),
        "--no-watch",
        "--output",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let (report, rss) = measured_report(&ours, &args).await?;
    let rps = report
        .data
        .get("summary")
        .and_then(|s| s.get("rps"))
        .and_then(serde_json::Value::as_f64)
        .context("no data.summary.rps")?;
    rows.push(Row { tool: "load-tester", rps, rss });

    let script = dir.path().join("k6.js");
    std::fs::write(
        &script,
        format!(
            "import http from 'k6/http';\nexport default function () {{ http.get('{url}/index.html'); }}\n"
        ),
    )?;
    let summary = dir.path().join("k6-summary.json");
    let (_, err, rss) = measured(
        &find("k6")?,
        &[
            "run".into(),
            "--quiet".into(),
            "--vus".into(),
            CONNECTIONS.to_string(),
            "--duration".into(),
            format!("{SECONDS}s"),
            "--summary-export".into(),
            summary.display().to_string(),
            script.display().to_string(),
        ],
    )
    .await?;
    let k6: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&summary)
            .with_context(|| format!("k6 wrote no summary: {err}"))?,
    )?;
    let rps =
        k6["metrics"]["http_reqs"]["rate"].as_f64().context("k6 summary lacks http_reqs.rate")?;
    rows.push(Row { tool: "k6 1.1.0", rps, rss });

    let locustfile = dir.path().join("locustfile.py");
    std::fs::write(
        &locustfile,
        "from locust import task\nfrom locust.contrib.fasthttp import FastHttpUser\n\n\
         class Static(FastHttpUser):\n    @task\n    def index(self):\n        self.client.get('/index.html')\n",
    )?;
    let csv = dir.path().join("locust");
    let (_, err, rss) = measured(
        &find("locust")?,
        &[
            "-f".into(),
            locustfile.display().to_string(),
            "--headless".into(),
            "-u".into(),
            CONNECTIONS.to_string(),
            "-r".into(),
            CONNECTIONS.to_string(),
            "-t".into(),
            format!("{SECONDS}s"),
            "--host".into(),
            url.clone(),
            "--only-summary".into(),
            "--csv".into(),
            csv.display().to_string(),
        ],
    )
    .await?;
    let stats = std::fs::read_to_string(dir.path().join("locust_stats.csv"))
        .with_context(|| format!("locust wrote no stats: {err}"))?;
    let header: Vec<&str> = stats.lines().next().unwrap_or_default().split(',').collect();
    let column = header.iter().position(|h| *h == "Requests/s").context("no Requests/s column")?;
    let rps = stats
        .lines()
        .find(|l| l.contains("Aggregated"))
        .and_then(|l| l.split(',').nth(column))
        .and_then(|v| v.parse().ok())
        .context("no Aggregated row")?;
    rows.push(Row { tool: "Locust FastHttpUser (1 process)", rps, rss });

    println!(
        "static file on nginx, {CONNECTIONS} connections, {SECONDS} s, loopback, this machine ({} cores):",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<32} {:>12} {:>12} {:>16} {:>14}",
        "tool", "requests/s", "peak RSS", "rps vs ours", "RSS vs ours"
    );
    let base = rows.iter().find(|r| r.tool == "load-tester").map_or((1.0, 1.0), |r| (r.rps, r.rss));
    for row in &rows {
        println!(
            "{:<32} {:>12.0} {:>9.1} MiB {:>15.2}x {:>13.2}x",
            row.tool,
            row.rps,
            row.rss / 1_048_576.0,
            row.rps / base.0,
            row.rss / base.1
        );
    }

    // 10,000 closed-model users with think time, held 60 s.
    let scenario = root.join("crates/load-tester/scenarios/static-file-think.yaml");
    let args: Vec<String> = [
        "run",
        "--target",
        &url,
        "--scenario",
        scenario.to_str().unwrap_or_default(),
        "--users",
        "10000",
        "--hatch-rate",
        "2000",
        "--duration",
        "60s",
        "--no-watch",
        "--output",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let (report, rss) = measured_report(&ours, &args).await?;
    let summary = report.data.get("summary").cloned().unwrap_or_default();
    println!();
    println!(
        "10,000 users with think time held 60 s: peak RSS {:.0} MiB ({:.1} KiB per user; target < 1 GiB, k6 needs 1-5 MB per VU), {:.0} req/s, verdict {}",
        rss / 1_048_576.0,
        rss / 1024.0 / 10_000.0,
        summary.get("rps").and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN),
        report.verdict()
    );
    if rss > 1024.0 * 1_048_576.0 {
        bail!("10,000 users took more than 1 GiB");
    }
    Ok(())
}
