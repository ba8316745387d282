//! Helpers of chaos-runner's integration tests: the binary, its fault proxy
//! as a process of its own, and reports read back.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use shared_types::Report;

pub const BIN: &str = env!("CARGO_BIN_EXE_chaos-runner");

/// The workspace root (for docs/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `chaos-runner proxy` running in its own process, killed when dropped.
#[derive(Debug)]
pub struct ProxyProcess {
    pub api: String,
    child: Child,
}

impl ProxyProcess {
    /// Starts proxies `(name, upstream)`; returns it and each proxy's listen port.
    pub fn start(proxies: &[(&str, String)]) -> (ProxyProcess, Vec<u16>) {
        let api_port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["proxy", "--api", &format!("127.0.0.1:{api_port}")]);
        let mut ports = Vec::new();
        for (name, upstream) in proxies {
            let port = free_port();
            ports.push(port);
            cmd.args(["--proxy", &format!("{name}=127.0.0.1:{port},{upstream}")]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("chaos-runner proxy listening on "), "{line}");
        (ProxyProcess { api: format!("http://127.0.0.1:{api_port}"), child }, ports)
    }

    /// The proxy `name` as its API shows it.
    pub async fn state(&self, name: &str) -> Value {
        reqwest::get(format!("{}/proxies/{name}", self.api)).await.unwrap().json().await.unwrap()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to the end: (exit code, stdout, stderr).
pub async fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The report the run wrote.
pub fn report(path: &Path) -> Report {
    Report::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The check `id` of `report`.
pub fn check<'a>(report: &'a Report, id: &str) -> &'a shared_types::Check {
    report.checks.iter().find(|c| c.id == id).unwrap_or_else(|| {
        let ids: Vec<&str> = report.checks.iter().map(|c| c.id.as_str()).collect();
        panic!("no check {id} in {ids:?}")
    })
}

/// Every check as `id verdict observed detail` lines, for assertion messages.
pub fn table(report: &Report) -> String {
    report
        .checks
        .iter()
        .map(|c| {
            format!(
                "{} {:?} {} {}",
                c.id,
                c.verdict,
                c.observed.as_deref().unwrap_or(""),
                c.detail.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The journal's entries.
pub fn journal(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the journal holds `n` `applied` entries.
pub async fn wait_applied(dir: &Path, n: usize, timeout: Duration) {
    let dir = dir.to_owned();
    testkit::wait_until("faults applied in the journal", timeout, || {
        let dir = dir.clone();
        async move {
            let applied = journal(&dir).iter().filter(|e| e["event"] == "applied").count();
            if applied >= n { Ok(()) } else { Err(format!("{applied} applied")) }
        }
    })
    .await
    .unwrap();
}
