//! Liveness and readiness probes as the kubelet runs them: HTTP GET (2xx or
//! 3xx is success), TCP connect, or exec, against the pod's loopback twin,
//! with initialDelaySeconds, periodSeconds, timeoutSeconds,
//! successThreshold and failureThreshold.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// One probe's schedule and counters.
#[derive(Debug)]
pub struct ProbeState {
    probe: Probe,
    next: Instant,
    successes: i32,
    failures: i32,
    /// The probe's verdict so far (`None` before the first result).
    pub passing: Option<bool>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

impl ProbeState {
    /// A probe whose first run is `initialDelaySeconds` after `started`.
    pub fn new(probe: Probe, started: Instant) -> ProbeState {
        let delay = secs(probe.initial_delay_seconds, 0);
        ProbeState {
            probe,
            next: started + delay,
            successes: 0,
            failures: 0,
            passing: None,
            last_error: None,
        }
    }

    /// Runs the probe if it is due; returns the new verdict when it changed.
    pub async fn tick(
        &mut self,
        container: &Container,
        ip: Ipv4Addr,
        env: &[(String, String)],
    ) -> Option<bool> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + secs(self.probe.period_seconds, 10);
        let timeout = secs(self.probe.timeout_seconds, 1);
        let result = tokio::time::timeout(timeout, attempt(&self.probe, container, ip, env))
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {} s", timeout.as_secs())));
        let before = self.passing;
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                self.last_error = None;
                if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                    self.passing = Some(true);
                }
            }
            Err(why) => {
                self.successes = 0;
                self.failures += 1;
                self.last_error = Some(why);
                if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                    self.passing = Some(false);
                }
            }
        }
        (self.passing != before).then_some(self.passing.unwrap_or(false))
    }
}

fn secs(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(value.unwrap_or(default)).unwrap_or(0))
}

/// A container port by number or by name.
fn port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

async fn attempt(
    probe: &Probe,
    container: &Container,
    ip: Ipv4Addr,
    env: &[(String, String)],
) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        let port = port(container, &http.port)?;
        let path = http.path.as_deref().unwrap_or("/");
        let url =
            format!("http://{ip}:{port}{}{path}", if path.starts_with('/') { "" } else { "/" });
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let mut request = client.get(&url);
        for header in http.http_headers.iter().flatten() {
            request = request.header(&header.name, &header.value);
        }
        let response = request.send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        return if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("GET {url}: HTTP {status}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port(container, &tcp.port)?;
        return tokio::net::TcpStream::connect((ip, port))
            .await
            .map(drop)
            .map_err(|e| format!("connect {ip}:{port}: {e}"));
    }
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let Some((program, args)) = command.split_first() else {
            return Err("exec probe without a command".to_owned());
        };
        let status = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| format!("exec {program}: {e}"))?;
        return if status.success() { Ok(()) } else { Err(format!("exec {program}: {status}")) };
    }
    Err("the probe has no httpGet, tcpSocket or exec handler (grpc probes are not supported)"
        .to_owned())
}
