//! Probes: one look at the system, with what was seen. A probe that could
//! not look (Prometheus down, bad SQL) does not hold: it never passes by
//! default.

use std::time::{Duration, Instant};

use serde::Serialize;
use shared_types::{Quantity, Threshold};

use crate::experiment::Probe;
use crate::kube::Kube;
use crate::process;

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The probe.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// What was seen: `200 in 12 ms`, `value 0.03`, `2/2 ready`.
    pub observed: String,
}

/// What probes need.
#[derive(Debug, Clone)]
pub struct Probes {
    /// HTTP client.
    pub http: reqwest::Client,
    /// The cluster, when configured.
    pub kube: Option<Kube>,
    /// The file's Prometheus.
    pub prometheus: Option<String>,
}

impl Probes {
    /// Runs `probe` once.
    pub async fn run(&self, probe: &Probe) -> Outcome {
        let (ok, observed) = match self.look(probe).await {
            Ok(pair) => pair,
            Err(e) => (false, e),
        };
        Outcome { name: probe.name.clone(), ok, observed }
    }

    /// Runs every probe, at once.
    pub async fn run_all<'a>(&self, probes: impl IntoIterator<Item = &'a Probe>) -> Vec<Outcome> {
        futures::future::join_all(probes.into_iter().map(|p| self.run(p))).await
    }

    async fn look(&self, probe: &Probe) -> Result<(bool, String), String> {
        if let Some(h) = &probe.http {
            let method = reqwest::Method::from_bytes(h.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("`{}` is not an HTTP method", h.method))?;
            let timeout = h.timeout.map_or(Duration::from_secs(2), |d| d.0);
            let mut req = self.http.request(method, &h.url).timeout(timeout);
            for (k, v) in &h.headers {
                req = req.header(k, v);
            }
            if let Some(b) = &h.body {
                req = req.body(b.clone());
            }
            let started = Instant::now();
            let response = req.send().await.map_err(|e| describe_http_error(&e, timeout))?;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            let took = started.elapsed();
            let mut ok = h.status.contains(&status);
            let mut observed = format!("{status} in {} ms", took.as_millis());
            if let Some(max) = h.max_latency
                && took > max.0
            {
                ok = false;
                observed.push_str(&format!(" (slower than {:?})", max.0));
            }
            if let Some(text) = &h.body_contains
                && !body.contains(text.as_str())
            {
                ok = false;
                observed.push_str(&format!(" (body lacks {text:?})"));
            }
            return Ok((ok, observed));
        }
        if let Some(t) = &probe.tcp {
            let timeout = t.timeout.map_or(Duration::from_secs(2), |d| d.0);
            let started = Instant::now();
            return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&t.address))
                .await
            {
                Ok(Ok(_)) => {
                    Ok((true, format!("connected in {} ms", started.elapsed().as_millis())))
                }
                Ok(Err(e)) => Ok((false, format!("{}: {e}", t.address))),
                Err(_) => Ok((false, format!("{}: no answer within {timeout:?}", t.address))),
            };
        }
        if let Some(p) = &probe.promql {
            let base = p.prometheus.as_ref().or(self.prometheus.as_ref()).ok_or("no Prometheus")?;
            let value = instant_query(&self.http, base, &p.query).await?;
            return Ok(match value {
                Some(v) => compare(&p.tolerance, v),
                None => (false, "no sample (empty result)".to_owned()),
            });
        }
        if let Some(s) = &probe.sql {
            let value = sql_number(&s.url, &s.query).await?;
            return Ok(compare(&s.tolerance, value));
        }
        if let Some(target) = &probe.process {
            // Looking is not acting: any process may be probed.
            return Ok(match process::find(target) {
                Ok(found) => {
                    let stopped: Vec<String> = found
                        .iter()
                        .filter(|p| matches!(p.state, 'T' | 't' | 'Z'))
                        .map(|p| format!("PID {} state {}", p.pid, p.state))
                        .collect();
                    if stopped.is_empty() {
                        let pids: Vec<String> = found.iter().map(|p| p.pid.to_string()).collect();
                        (true, format!("alive: PID {}", pids.join(", ")))
                    } else {
                        (false, stopped.join(", "))
                    }
                }
                Err(e) => (false, e),
            });
        }
        if let Some(p) = &probe.pods {
            let kube = self.kube.as_ref().ok_or("no Kubernetes cluster: pass --kubeconfig")?;
            let (ready, listed) = kube.ready_pods(&p.namespace, &p.selector).await?;
            let ok = ready >= p.min_ready && ready == listed;
            return Ok((ok, format!("{ready}/{listed} ready (need {})", p.min_ready)));
        }
        if let Some(c) = &probe.command {
            let timeout = c.timeout.map_or(Duration::from_secs(10), |d| d.0);
            let run = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&c.run)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            return match tokio::time::timeout(timeout, run).await {
                Err(_) => Ok((false, format!("`{}` ran longer than {timeout:?}", c.run))),
                Ok(Err(e)) => Err(format!("cannot run `{}`: {e}", c.run)),
                Ok(Ok(out)) => {
                    let code = out.status.code().unwrap_or(-1);
                    Ok((c.exit_code.contains(&code), format!("exit {code}")))
                }
            };
        }
        Err(format!("probe `{}` has no kind", probe.name))
    }
}

fn compare(tolerance: &Threshold, value: f64) -> (bool, String) {
    let ok = tolerance.is_met(Quantity::count(value)).unwrap_or(false);
    (ok, format!("value {value}"))
}

fn describe_http_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {timeout:?}")
    } else if e.is_connect() {
        "connection refused or reset".to_owned()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

/// The first sample of an instant query, `None` for an empty result.
pub async fn instant_query(
    client: &reqwest::Client,
    base: &str,
    query: &str,
) -> Result<Option<f64>, String> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let response = client
        .get(&url)
        .query(&[("query", query)])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("Prometheus {base}: {e}"))?;
    let status = response.status();
    let body: serde_json::Value =
        response.json().await.map_err(|e| format!("Prometheus {base}: not JSON: {e}"))?;
    if !status.is_success() || body["status"] != "success" {
        return Err(format!(
            "Prometheus {base}: query `{query}` failed: {}",
            body["error"].as_str().unwrap_or(status.as_str())
        ));
    }
    let result = &body["data"]["result"];
    let sample = match body["data"]["resultType"].as_str() {
        Some("vector") => result.get(0).map(|s| &s["value"][1]),
        Some("scalar") => Some(&result[1]),
        _ => None,
    };
    match sample.and_then(|v| v.as_str()) {
        None => Ok(None),
        Some(text) => text
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("Prometheus {base}: `{text}` is not a number")),
    }
}

/// The labels of every series an instant query returns.
pub async fn series(
    client: &reqwest::Client,
    base: &str,
    query: &str,
) -> Result<Vec<serde_json::Value>, String> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let body: serde_json::Value = client
        .get(&url)
        .query(&[("query", query)])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("Prometheus {base}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("Prometheus {base}: not JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("Prometheus {base}: query `{query}` failed: {}", body["error"]));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|s| s["metric"].clone())
        .collect())
}

/// Connects to `url` (sslmode honoured) with a 3 s deadline.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let options = shared_types::pg::PgConnectOptions::parse(url).map_err(|e| e.to_string())?;
    options.connect(Duration::from_secs(3)).await.map_err(|e| e.to_string())
}

async fn sql_number(url: &str, query: &str) -> Result<f64, String> {
    let client = connect(url).await?;
    let row = tokio::time::timeout(Duration::from_secs(5), client.query_one(query, &[]))
        .await
        .map_err(|_| format!("`{query}`: no answer within 5s"))?
        .map_err(|e| format!("`{query}`: {}", shared_types::pg::error_chain(&e)))?;
    let cell = |t: &str| format!("`{query}`: the first column is not a number ({t})");
    if let Ok(v) = row.try_get::<_, i64>(0) {
        return Ok(v as f64);
    }
    if let Ok(v) = row.try_get::<_, i32>(0) {
        return Ok(f64::from(v));
    }
    if let Ok(v) = row.try_get::<_, f64>(0) {
        return Ok(v);
    }
    if let Ok(Some(v)) = row.try_get::<_, Option<String>>(0) {
        return v.trim().parse().map_err(|_| cell(&v));
    }
    Err(cell(row.columns().first().map_or("no column", |c| c.type_().name())))
}
