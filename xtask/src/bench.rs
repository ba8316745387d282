//! `cargo xtask bench <tool>`: each tool side by side with the tool its users
//! would otherwise pick, on the same input in the same run, printed as a ratio.
//! Figures, not assertions: benchmarks report, tests judge.

use anyhow::{Context, bail};
use shared_types::Report;

use crate::tools;
use crate::workspace::{cargo, run};

/// Tools with a benchmark.
pub const BENCHES: [&str; 8] = [
    "load-tester",
    "pg-failover-probe",
    "reorg-sim",
    "alert-linter",
    "backup-agent",
    "chaos-runner",
    "bluegreen-promoter",
    "cost-analyzer",
];

/// Runs the benchmark of `tool` and prints its table.
/// `runs` repeats the drills; `scale` is the pgbench scale of backup-agent's.
pub async fn bench(tool: &str, runs: usize, scale: u32) -> anyhow::Result<()> {
    match tool {
        "pg-failover-probe" => pg_failover_probe(runs).await,
        "alert-linter" => alert_linter(runs).await,
        "load-tester" => crate::bench_load::load_tester().await,
        "reorg-sim" => reorg_sim().await,
        "backup-agent" => crate::bench_backup::backup_agent(scale).await,
        "chaos-runner" => crate::bench_chaos::chaos_runner().await,
        "bluegreen-promoter" => crate::bench_bluegreen::bluegreen_promoter(runs).await,
        "cost-analyzer" => crate::bench_cost::cost_analyzer().await,
        other => bail!("no benchmark for {other:?}; benchmarks: {}", BENCHES.join(", ")),
    }
}

pub(crate) fn build_release(package: &str) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--release", "--quiet", "--package", package]);
    run(build)
}

fn measurement(report: &Report, name: &str) -> Option<f64> {
    report.measurements.iter().find(|m| m.name == name).map(|m| m.value)
}

/// Downtime accuracy over repeated crash drills, and write throughput next to
/// pgbench running the same insert on the same pair.
async fn pg_failover_probe(runs: usize) -> anyhow::Result<()> {
    build_release("pg-failover-probe")?;
    let probe = tools::binary("release", "pg-failover-probe");
    let pgbench = testkit::binaries::postgres_tool("pgbench")
        .context("pgbench is part of the PostgreSQL server package")?;
    let dir = tempfile::tempdir()?;

    println!("pg-failover-probe: measured write downtime vs ground truth over {runs} crash drills");
    println!(
        "{:>4} {:>12} {:>14} {:>12} {:>12}",
        "run", "measured ms", "server gap ms", "error ms", "drill ms"
    );
    let mut errors = Vec::new();
    for run_index in 1..=runs {
        let pair = testkit::PgPair::start(testkit::PgPairOptions { synchronous: true }).await?;
        let url = format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
            pair.primary_port(),
            pair.standby_port()
        );
        let ledger = dir.path().join(format!("drill-{run_index}.jsonl"));
        let args = [
            "drill",
            "--url",
            &url,
            "--ledger",
            ledger.to_str().unwrap_or_default(),
            "--warmup",
            "1s",
            "--settle",
            "1s",
            "--write-interval",
            "1ms",
            "--step",
            &pair.primary_pg_ctl("stop -m immediate -w"),
            "--step",
            &pair.standby_pg_ctl("promote -w"),
        ]
        .map(String::from);
        let result = tools::run_json(&probe, &args).await?;
        let measured = measurement(&result.report, "write_downtime").unwrap_or(f64::NAN);
        let drill = measurement(&result.report, "drill_window").unwrap_or(f64::NAN);
        // Ground truth from the servers' own clocks: the largest gap between
        // consecutive commits of the run on the new primary (the old primary's
        // rows arrived there by synchronous replication).
        let run_id = result
            .report
            .data
            .get("run_id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let client = testkit::postgres::connect(&pair.standby_url()).await?;
        let gap: f64 = client
            .query_one(
                "SELECT coalesce(max(extract(epoch FROM gap) * 1000), 0)::float8 FROM (
                   SELECT server_time - lag(server_time) OVER (ORDER BY server_time) AS gap
                     FROM postlaunch_probe.probe_writes WHERE run_id = $1) g",
                &[&run_id],
            )
            .await?
            .try_get(0)?;
        let error = measured - gap;
        errors.push(error);
        println!("{run_index:>4} {measured:>12.1} {gap:>14.1} {error:>12.1} {drill:>12.1}");
    }
    let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
    let worst = errors.iter().fold(0.0_f64, |w, e| w.max(e.abs()));
    println!(
        "downtime error (probe minus server-side gap): mean {mean:.1} ms, worst {worst:.1} ms"
    );

    // Throughput: the same single-row insert, 4 clients, 5 s, on one pair.
    let pair = testkit::PgPair::start(testkit::PgPairOptions { synchronous: true }).await?;
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pair.primary_port());
    let ledger = dir.path().join("throughput.jsonl");
    let args = [
        "watch",
        "--url",
        &url,
        "--ledger",
        ledger.to_str().unwrap_or_default(),
        "--duration",
        "5s",
        "--writers",
        "4",
        "--readers",
        "0",
        "--write-interval",
        "0ms",
    ]
    .map(String::from);
    let result = tools::run_json(&probe, &args).await?;
    let probe_rate = measurement(&result.report, "write_rate").unwrap_or(f64::NAN);
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO postlaunch_probe.probe_writes (run_id, incarnation, writer, seq, payload, client_time_ms) \
         VALUES ('pgbench', 0, :client_id, :client_id, repeat('x', 64), 0);\n",
    )?;
    let output = tokio::process::Command::new(&pgbench)
        .args(["-n", "-c", "4", "-j", "2", "-T", "5", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(pair.primary_port().to_string())
        .arg("-f")
        .arg(&script)
        .arg("postgres")
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout);
    let pgbench_rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| {
            format!("pgbench printed no tps: {text}{}", String::from_utf8_lossy(&output.stderr))
        })?;
    println!();
    println!("write throughput, 4 clients, synchronous pair, 5 s:");
    println!("  pg-failover-probe {probe_rate:>10.0} acknowledged+journaled writes/s");
    println!("  pgbench           {pgbench_rate:>10.0} tps");
    println!("  ratio probe/pgbench {:.2}", probe_rate / pgbench_rate);
    Ok(())
}

/// Wall time of one command, best of `runs`, with its exit code.
async fn best_of(
    runs: usize,
    program: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<(std::time::Duration, Option<i32>)> {
    let mut best = std::time::Duration::MAX;
    let mut code = None;
    for _ in 0..runs.max(1) {
        let started = std::time::Instant::now();
        let output = tokio::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .with_context(|| format!("cannot run {}", program.display()))?;
        best = best.min(started.elapsed());
        code = output.code();
    }
    Ok((best, code))
}

/// A generated file of 10,000 alert rules, linted by alert-linter and checked
/// by `promtool check rules`, on the same file in the same run.
async fn alert_linter(runs: usize) -> anyhow::Result<()> {
    build_release("alert-linter")?;
    let linter = tools::binary("release", "alert-linter");
    let promtool = testkit::binaries::find("promtool")?;
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules-10000.yml");
    std::fs::write(&rules, alert_linter::synthetic_rules(10_000))?;
    let file = rules.to_str().unwrap_or_default();
    let (ours, our_code) = best_of(runs, &linter, &["lint", "--no-coverage", file]).await?;
    let (theirs, their_code) = best_of(runs, &promtool, &["check", "rules", file]).await?;
    println!("10,000 alert rules, best of {runs} runs:");
    println!(
        "  alert-linter lint   {:>9.1} ms (exit {our_code:?}; schema + PromQL semantics + policy + detection time)",
        ours.as_secs_f64() * 1000.0
    );
    println!(
        "  promtool check rules {:>8.1} ms (exit {their_code:?}; schema + PromQL parse)",
        theirs.as_secs_f64() * 1000.0
    );
    println!(
        "  ratio promtool/alert-linter {:.2} (above 1: alert-linter is faster)",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    Ok(())
}

/// The simulator's JSON-RPC throughput next to anvil's on the same calls, the
/// reference indexer's catch-up rate and a 64-block rollback, measured by
/// `reorg-sim bench` and printed here as ratios.
async fn reorg_sim() -> anyhow::Result<()> {
    build_release("reorg-sim")?;
    let anvil = testkit::anvil::binary()?;
    let database = testkit::TempDatabase::create().await?;
    let args: Vec<String> = [
        "bench",
        "--database-url",
        database.url(),
        "--blocks",
        "2000",
        "--requests",
        "4000",
        "--anvil",
        anvil.to_str().unwrap_or_default(),
    ]
    .map(String::from)
    .to_vec();
    let run = tools::run_json(&tools::binary("release", "reorg-sim"), &args).await?;
    let value = |name: &str| measurement(&run.report, name).unwrap_or(f64::NAN);
    println!(
        "reorg-sim simulator vs anvil, same JSON-RPC calls, 2000-block chains, 4000 requests per method:"
    );
    println!("{:<22} {:>14} {:>14} {:>16}", "call", "simulator", "anvil", "simulator/anvil");
    for (call, ours, theirs, unit) in [
        (
            "eth_getBlockByNumber",
            "simulator_eth_getBlockByNumber_rate",
            "anvil_eth_getBlockByNumber_rate",
            "req/s",
        ),
        ("eth_getLogs", "simulator_eth_getLogs_rate", "anvil_eth_getLogs_rate", "req/s"),
        (
            "eth_getLogs (logs)",
            "simulator_eth_getLogs_logs_rate",
            "anvil_eth_getLogs_logs_rate",
            "logs/s",
        ),
    ] {
        let (a, b) = (value(ours), value(theirs));
        println!("{call:<22} {a:>8.0} {unit:<5} {b:>8.0} {unit:<5} {:>15.2}x", a / b);
    }
    println!(
        "reference indexer: catch-up {:.0} blocks/s, {:.0} events/s; 64-block rollback + re-index {:.1} ms",
        value("indexer_catch_up_blocks_rate"),
        value("indexer_catch_up_events_rate"),
        value("indexer_rollback_64_blocks")
    );
    Ok(())
}
