//! `cargo xtask bench chaos-runner`: the fault proxy's cost with no toxic
//! (pgbench and redis-benchmark through it vs direct, same run, as ratios),
//! and latency accuracy (asked vs measured) for the proxy's latency toxic and
//! for kernel netem in a runner-made namespace (where the kernel has
//! sch_netem). Figures, not assertions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::build_release;
use crate::tools;

struct Proxy {
    api: String,
    child: Child,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_proxy(binary: &std::path::Path, proxies: &[(&str, u16, &str)]) -> anyhow::Result<Proxy> {
    let api_port = testkit::free_port();
    let mut cmd = Command::new(binary);
    cmd.args(["proxy", "--api", &format!("127.0.0.1:{api_port}"), "--log-format", "text"]);
    for (name, port, upstream) in proxies {
        cmd.args(["--proxy", &format!("{name}=127.0.0.1:{port},{upstream}")]);
    }
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::null()).env("RUST_LOG", "warn").spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    if !line.starts_with("chaos-runner proxy listening") {
        bail!("the proxy did not start: {line:?}");
    }
    Ok(Proxy { api: format!("http://127.0.0.1:{api_port}"), child })
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// pgbench's `tps = N` (without the initial connection time).
fn pgbench_tps(pgbench: &std::path::Path, url: &str) -> anyhow::Result<f64> {
    let text =
        output(Command::new(pgbench).args(["-S", "-c", "8", "-j", "2", "-T", "10", "-n", url]))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .with_context(|| format!("no tps in pgbench's output: {text}"))
}

/// redis-benchmark's requests per second for GET and SET.
fn redis_rps(port: u16) -> anyhow::Result<(f64, f64)> {
    let text = output(Command::new("redis-benchmark").args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-n",
        "100000",
        "-c",
        "50",
        "-t",
        "get,set",
        "-q",
    ]))?;
    let rate = |op: &str| -> anyhow::Result<f64> {
        text.split(['\r', '\n'])
            .filter(|l| l.starts_with(op))
            .filter_map(|l| l.split(':').nth(1)?.split_whitespace().next()?.parse().ok())
            .next_back()
            .with_context(|| format!("no {op} rate in redis-benchmark's output: {text}"))
    };
    Ok((rate("GET")?, rate("SET")?))
}

/// Median round trip of a Redis PING through `port`, in ms, over 21 pings.
fn ping_ms(port: u16) -> anyhow::Result<f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut times = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..21 {
        let start = Instant::now();
        stream.write_all(b"PING\r\n")?;
        let n = stream.read(&mut buf)?;
        anyhow::ensure!(buf[..n].starts_with(b"+PONG"), "unexpected answer {:?}", &buf[..n]);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

async fn toxic(client: &reqwest::Client, api: &str, latency: u64) -> anyhow::Result<()> {
    let response = client
        .post(format!("{api}/proxies/redis/toxics"))
        .json(&serde_json::json!({"name": "bench", "type": "latency", "attributes": {"latency": latency}}))
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "adding the toxic: {}", response.status());
    Ok(())
}

async fn untoxic(client: &reqwest::Client, api: &str) -> anyhow::Result<()> {
    client.delete(format!("{api}/proxies/redis/toxics/bench")).send().await?;
    Ok(())
}

/// Median TCP connect time in ms from inside `netns` to `addr`.
fn connect_ms_inside(netns: &str, host: &str, port: u16) -> anyhow::Result<f64> {
    let script = format!(
        "import socket, time\nt = []\nfor _ in range(11):\n    s = socket.socket()\n    a = time.monotonic()\n    s.connect(('{host}', {port}))\n    t.append((time.monotonic() - a) * 1000)\n    s.close()\nt.sort()\nprint(t[5])\n"
    );
    let text = output(Command::new("ip").args(["netns", "exec", netns, "python3", "-c", &script]))?;
    text.trim().parse().with_context(|| format!("not a number: {text}"))
}

/// The benchmark.
pub async fn chaos_runner() -> anyhow::Result<()> {
    build_release("chaos-runner")?;
    let binary = tools::binary("release", "chaos-runner");
    let pgbench = testkit::binaries::postgres_tool("pgbench")
        .context("pgbench is part of the PostgreSQL server package")?;
    let db = testkit::TempDatabase::create().await?;
    let pg = shared_types::url_hosts(db.url())
        .into_iter()
        .next()
        .context("no host in the database URL")?
        .entry;
    output(Command::new(&pgbench).args(["-i", "-s", "10", "-q", db.url()]))?;
    let (pg_port, redis_port) = (testkit::free_port(), testkit::free_port());
    let proxy = start_proxy(
        &binary,
        &[("postgres", pg_port, &pg), ("redis", redis_port, "127.0.0.1:6379")],
    )?;
    let through = db.url().replacen(&pg, &format!("127.0.0.1:{pg_port}"), 1);

    println!(
        "chaos-runner: the fault proxy with no toxic, next to the same client going direct (release build, one run)"
    );
    println!("{:<34} {:>14} {:>14} {:>8}", "workload", "direct", "through proxy", "ratio");
    let direct = pgbench_tps(&pgbench, db.url())?;
    let proxied = pgbench_tps(&pgbench, &through)?;
    println!(
        "{:<34} {:>10.0} tps {:>10.0} tps {:>8.2}",
        "pgbench -S, 8 clients, 10 s",
        direct,
        proxied,
        proxied / direct
    );
    let (get, set) = redis_rps(6379)?;
    let (pget, pset) = redis_rps(redis_port)?;
    println!(
        "{:<34} {:>8.0} req/s {:>8.0} req/s {:>8.2}",
        "redis-benchmark GET, 50 clients",
        get,
        pget,
        pget / get
    );
    println!(
        "{:<34} {:>8.0} req/s {:>8.0} req/s {:>8.2}",
        "redis-benchmark SET, 50 clients",
        set,
        pset,
        pset / set
    );

    println!();
    println!("latency accuracy: asked vs measured (median of 21 round trips)");
    println!("{:<34} {:>10} {:>12} {:>8}", "fault", "asked ms", "measured ms", "error");
    let base = ping_ms(redis_port)?;
    println!("{:<34} {:>10} {:>12.2} {:>8}", "proxy, no toxic (Redis PING)", 0, base, "-");
    let client = reqwest::Client::new();
    for asked in [100u64, 500] {
        toxic(&client, &proxy.api, asked).await?;
        let measured = ping_ms(redis_port)?;
        untoxic(&client, &proxy.api).await?;
        let error = (measured - asked as f64) / asked as f64 * 100.0;
        println!(
            "{:<34} {:>10} {:>12.2} {:>7.1}%",
            "proxy latency toxic (Redis PING)", asked, measured, error
        );
    }
    let netns = format!("plb{}", std::process::id() % 100_000);
    let created = output(Command::new(&binary).args(["netns", "create", &netns]))?;
    let host = created
        .split("host side ")
        .nth(1)
        .and_then(|r| r.split('(').nth(1))
        .and_then(|r| r.split(')').next())
        .context("no host address")?
        .to_owned();
    let listener = std::net::TcpListener::bind(format!("{host}:0"))?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s)
        }
    });
    let device = format!("{netns}-h");
    for asked in [100u64, 500] {
        let applied = Command::new("tc")
            .args([
                "qdisc",
                "replace",
                "dev",
                &device,
                "root",
                "netem",
                "delay",
                &format!("{asked}ms"),
            ])
            .output()?;
        if !applied.status.success() {
            println!(
                "{:<34} {:>10} {:>12} {:>8}",
                "netem delay (TCP connect in netns)", asked, "n/a", "-"
            );
            println!(
                "  netem is not available: {}",
                String::from_utf8_lossy(&applied.stderr).trim()
            );
            break;
        }
        let measured = connect_ms_inside(&netns, &host, port)?;
        let _ = Command::new("tc").args(["qdisc", "del", "dev", &device, "root"]).output();
        let error = (measured - asked as f64) / asked as f64 * 100.0;
        println!(
            "{:<34} {:>10} {:>12.2} {:>7.1}%",
            "netem delay (TCP connect in netns)", asked, measured, error
        );
    }
    let _ = Command::new(&binary).args(["netns", "delete", &netns]).output();
    drop(proxy);
    Ok(())
}
