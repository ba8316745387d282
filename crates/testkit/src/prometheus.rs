//! A real Prometheus (the machine's `prometheus` binary) on a free loopback
//! port, scraping the targets a test names, with its TSDB in a temp dir.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::error::tail_of_file;
use crate::ports::{free_port, http_client, percent_encode};
use crate::service_dir::ServiceDir;
use crate::{Error, Result, binaries};

/// Job name of the targets in [`PrometheusOptions::targets`].
pub const TARGETS_JOB: &str = "postlaunch";
/// Job name of Prometheus scraping itself ([`PrometheusOptions::scrape_self`]).
pub const SELF_JOB: &str = "prometheus";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 30;

/// What a [`Prometheus`] scrapes and evaluates.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// `host:port` targets, scraped as job `postlaunch`.
    pub targets: Vec<String>,
    /// Also scrape Prometheus's own `/metrics` as job `prometheus` (its
    /// address is only known once started, so it cannot be in `targets`).
    pub scrape_self: bool,
    /// `global.scrape_interval`.
    pub scrape_interval: Duration,
    /// `global.evaluation_interval` (rules and alerts).
    pub evaluation_interval: Duration,
    /// Rule files to load (`rule_files`), absolute paths preferred.
    pub rule_files: Vec<PathBuf>,
    /// Path scraped on each target.
    pub metrics_path: String,
    /// More `scrape_configs` entries, as YAML list items indented by two
    /// spaces (e.g. [`crate::KubeCluster::prometheus_scrape_configs`]).
    pub extra_scrape_configs: String,
}

impl Default for PrometheusOptions {
    /// No targets, 1 s intervals, `/metrics`.
    fn default() -> Self {
        PrometheusOptions {
            targets: Vec::new(),
            scrape_self: false,
            scrape_interval: Duration::from_secs(1),
            evaluation_interval: Duration::from_secs(1),
            rule_files: Vec::new(),
            metrics_path: "/metrics".to_owned(),
            extra_scrape_configs: String::new(),
        }
    }
}

/// A running Prometheus, killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    url: String,
    config_path: PathBuf,
    log_path: PathBuf,
    http: reqwest::Client,
    /// Set when start-up failed: keep the log the error points at.
    keep_log: bool,
    // Last field: removed after the process is killed.
    dir: TempDir,
}

impl Prometheus {
    /// Writes `prometheus.yml`, starts `prometheus` from `PATH` and waits
    /// for `/-/ready` (about 0.1 s).
    ///
    /// The first scrape comes about 5 s after start, whatever the scrape
    /// interval: Prometheus 2.x hands discovered targets to its scraper in
    /// 5 s batches. Give [`wait_for_query`](Self::wait_for_query) 10 s or more.
    pub async fn start(options: PrometheusOptions) -> Result<Prometheus> {
        let binary = binaries::find("prometheus")?;
        let service = ServiceDir::create("prometheus")?;
        let (dir, log_path) = (service.dir, service.log_path);
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config_path = dir.path().join("prometheus.yml");
        let data_dir = dir.path().join("data");

        std::fs::write(&config_path, render_config(&options, addr))
            .map_err(|err| Error::io(format!("cannot write {}", config_path.display()), err))?;
        let (log, log_err) = ServiceDir::log_stdio_of(&log_path)?;

        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data_dir.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-lifecycle")
            .arg("--web.enable-admin-api")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| Error::io(format!("cannot start {}", binary.display()), err))?;

        let mut prometheus = Prometheus {
            child,
            addr,
            url: format!("http://{addr}"),
            config_path,
            log_path,
            http: http_client()?,
            keep_log: false,
            dir,
        };
        if let Err(err) = prometheus.wait_until_ready().await {
            prometheus.keep_log = true;
            return Err(err);
        }
        Ok(prometheus)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT`, also the `instance` label when it scrapes itself.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The generated `prometheus.yml`; edit it and call [`reload`](Self::reload).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Prometheus's own log (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The temporary directory holding config, log and TSDB.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Instant query (`/api/v1/query`); returns `data.result`.
    pub async fn query(&self, promql: &str) -> Result<Value> {
        let url = format!("{}/api/v1/query?query={}", self.url, percent_encode(promql));
        let what = || format!("Prometheus query `{promql}` at {}", self.url);
        let response = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|source| Error::Http { what: what(), source })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|source| Error::Http {
            what: format!("{} (HTTP {status}, body not JSON)", what()),
            source,
        })?;
        if body["status"] != "success" {
            return Err(Error::Unexpected {
                what: what(),
                detail: format!(
                    "HTTP {status}, {}: {}; check the PromQL",
                    body["errorType"].as_str().unwrap_or("error"),
                    body["error"].as_str().unwrap_or("(no message)")
                ),
            });
        }
        Ok(body["data"]["result"].clone())
    }

    /// Polls [`query`](Self::query) until its result is non-empty (a vector
    /// or matrix with at least one series, or any scalar/string) and returns it.
    pub async fn wait_for_query(&self, promql: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.query(promql).await {
                Ok(result) if !is_empty_result(&result) => return Ok(result),
                Ok(result) => format!("empty result {result}"),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("a non-empty result for `{promql}` from {}", self.url),
                    after: timeout,
                    hint: format!(
                        "last answer: {last}; see {}/targets for scrape errors",
                        self.url
                    ),
                });
            }
            sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reloads the configuration and rule files (`POST /-/reload`).
    pub async fn reload(&self) -> Result<()> {
        let url = format!("{}/-/reload", self.url);
        let response = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|source| Error::Http { what: format!("POST {url}"), source })?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(Error::Unexpected {
            what: format!("POST {url}"),
            detail: format!(
                "HTTP {status}: {}; check the config with `promtool check config {}`",
                body.trim(),
                self.config_path.display()
            ),
        })
    }

    async fn wait_until_ready(&mut self) -> Result<()> {
        let ready = format!("{}/-/ready", self.url);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|err| Error::io("cannot check on the Prometheus process", err))?
            {
                return Err(Error::ProcessFailed {
                    what: format!("prometheus on {} exited before it was ready", self.addr),
                    exit_code: status.code(),
                    log_tail: tail_of_file(&self.log_path, LOG_TAIL_LINES),
                    log_path: Some(self.log_path.clone()),
                    hint: format!(
                        "read its log; check the config with `promtool check config {}`",
                        self.config_path.display()
                    ),
                });
            }
            let attempt = self.http.get(&ready).timeout(Duration::from_secs(2)).send().await;
            if matches!(&attempt, Ok(resp) if resp.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::ProcessFailed {
                    what: format!("prometheus on {} not ready after {READY_TIMEOUT:?}", self.addr),
                    exit_code: None,
                    log_tail: tail_of_file(&self.log_path, LOG_TAIL_LINES),
                    log_path: Some(self.log_path.clone()),
                    hint: format!("GET {ready} never answered 200; read its log"),
                });
            }
            sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Prometheus {
    /// Kills the process and waits briefly for it to exit, so the TSDB
    /// directory is not removed under a live process. After a failed start,
    /// keeps the config and log (the error names them), not the TSDB.
    fn drop(&mut self) {
        if self.child.start_kill().is_ok() {
            for _ in 0..200 {
                match self.child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    _ => break,
                }
            }
        }
        if self.keep_log {
            let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
            self.dir.disable_cleanup(true);
        }
    }
}

/// `prometheus.yml` for `options`; strings are written as JSON strings,
/// which YAML reads as double-quoted scalars.
fn render_config(options: &PrometheusOptions, own_addr: SocketAddr) -> String {
    let quote = |text: &str| Value::String(text.to_owned()).to_string();
    let mut yml = String::new();
    let _ = writeln!(yml, "global:");
    let _ = writeln!(yml, "  scrape_interval: {}", duration(options.scrape_interval));
    let _ = writeln!(yml, "  evaluation_interval: {}", duration(options.evaluation_interval));
    if !options.rule_files.is_empty() {
        let _ = writeln!(yml, "rule_files:");
        for file in &options.rule_files {
            let _ = writeln!(yml, "  - {}", quote(&file.display().to_string()));
        }
    }
    let mut jobs = Vec::new();
    if !options.targets.is_empty() {
        jobs.push((TARGETS_JOB, options.targets.clone()));
    }
    if options.scrape_self {
        jobs.push((SELF_JOB, vec![own_addr.to_string()]));
    }
    if !jobs.is_empty() || !options.extra_scrape_configs.is_empty() {
        let _ = writeln!(yml, "scrape_configs:");
    }
    for (job, targets) in jobs {
        let _ = writeln!(yml, "  - job_name: {}", quote(job));
        let path = if job == SELF_JOB { "/metrics" } else { &options.metrics_path };
        let _ = writeln!(yml, "    metrics_path: {}", quote(path));
        let _ = writeln!(yml, "    static_configs:");
        let list: Vec<String> = targets.iter().map(|t| quote(t)).collect();
        let _ = writeln!(yml, "      - targets: [{}]", list.join(", "));
    }
    yml.push_str(&options.extra_scrape_configs);
    yml
}

/// A Prometheus duration in milliseconds, at least `1ms`.
fn duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

fn is_empty_result(result: &Value) -> bool {
    match result {
        Value::Array(items) => items.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_targets_rules_and_self() {
        let options = PrometheusOptions {
            targets: vec!["127.0.0.1:1234".to_owned()],
            scrape_self: true,
            rule_files: vec![PathBuf::from("/tmp/rules.yml")],
            scrape_interval: Duration::from_millis(500),
            ..PrometheusOptions::default()
        };
        let yml = render_config(&options, SocketAddr::from(([127, 0, 0, 1], 9)));
        assert!(yml.contains("scrape_interval: 500ms"));
        assert!(yml.contains("- \"/tmp/rules.yml\""));
        assert!(yml.contains("targets: [\"127.0.0.1:1234\"]"));
        assert!(yml.contains("targets: [\"127.0.0.1:9\"]"));
    }
}
