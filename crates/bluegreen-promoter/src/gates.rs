//! What a release must pass before the switch, besides readiness: smoke
//! tests (HTTP requests with expectations, a Kubernetes Job), PromQL
//! analysis of the new colour against the serving one, and a command (a
//! schema-compatibility check, a migration) with its own verdict.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};

use crate::Error;

/// A duration written as text: `500ms`, `30s`, `5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        shared_types::parse_duration(&text).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// Parses YAML into `T`, with errors naming the file, line, column and key.
pub fn parse_yaml<T: for<'de> Deserialize<'de>>(text: &str, source: &str) -> Result<T, Error> {
    serde_saphyr::from_str(text).map_err(|err| {
        let (line, col) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
        let message = err.without_snippet().to_string();
        let message = message.lines().next().unwrap_or_default();
        let message = message.rsplit_once(" at line ").map_or(message, |(m, _)| m);
        let key = shared_types::yaml_key_path(text, line, col, message);
        match key {
            Some(key) => Error::Usage(format!("{source}:{line}:{col}: {key}: {message}")),
            None => Error::Usage(format!("{source}:{line}:{col}: {message}")),
        }
    })
}

/// Reads and parses a YAML file.
pub fn read_yaml<T: for<'de> Deserialize<'de>>(path: &std::path::Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    parse_yaml(&text, &path.display().to_string())
}

/// `--smoke FILE`: HTTP requests sent through the preview Service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeFile {
    /// The requests, in order; every one must meet its expectations.
    pub requests: Vec<SmokeRequest>,
}

/// One smoke request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeRequest {
    /// Name in the report.
    pub name: String,
    /// HTTP method (GET by default).
    #[serde(default = "get")]
    pub method: String,
    /// Path and query, appended to the preview URL.
    pub path: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    #[serde(default)]
    pub body: Option<String>,
    /// What the answer must be.
    #[serde(default)]
    pub expect: Expect,
}

fn get() -> String {
    "GET".to_owned()
}

/// Expectations of a smoke request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Status code (200 by default).
    #[serde(default)]
    pub status: Option<u16>,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Slowest acceptable answer.
    #[serde(default)]
    pub max_latency: Option<Dur>,
}

impl SmokeFile {
    /// Parses a smoke file; an empty list is refused.
    pub fn parse(text: &str, source: &str) -> Result<SmokeFile, Error> {
        let file: SmokeFile = parse_yaml(text, source)?;
        if file.requests.is_empty() {
            return Err(Error::Usage(format!("{source}: `requests` is empty")));
        }
        for r in &file.requests {
            if reqwest::Method::from_bytes(r.method.as_bytes()).is_err() {
                return Err(Error::Usage(format!(
                    "{source}: request `{}`: bad method {:?}",
                    r.name, r.method
                )));
            }
            if !r.path.starts_with('/') {
                return Err(Error::Usage(format!(
                    "{source}: request `{}`: path {:?} must start with /",
                    r.name, r.path
                )));
            }
        }
        Ok(file)
    }
}

/// Runs each smoke request against `base`; the failures, one line each.
pub async fn run_smoke(file: &SmokeFile, base: &str) -> (usize, Vec<String>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build();
    let Ok(client) = client else { return (0, vec!["cannot build an HTTP client".to_owned()]) };
    let mut failures = Vec::new();
    for r in &file.requests {
        let method =
            reqwest::Method::from_bytes(r.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = client.request(method, format!("{base}{}", r.path));
        for (k, v) in &r.headers {
            req = req.header(k, v);
        }
        if let Some(body) = &r.body {
            req = req.body(body.clone());
        }
        let started = Instant::now();
        let answer = req.send().await;
        let (status, body) = match answer {
            Ok(a) => {
                let status = a.status().as_u16();
                (status, a.text().await.unwrap_or_default())
            }
            Err(e) => {
                failures.push(format!("{}: {e}", r.name));
                continue;
            }
        };
        let latency = started.elapsed();
        let want = r.expect.status.unwrap_or(200);
        if status != want {
            failures.push(format!("{}: status {status}, expected {want}", r.name));
        } else if let Some(text) =
            r.expect.body_contains.as_ref().filter(|t| !body.contains(t.as_str()))
        {
            failures.push(format!("{}: body does not contain {text:?}", r.name));
        } else if let Some(max) = r.expect.max_latency.filter(|m| latency > m.0) {
            failures.push(format!(
                "{}: answered in {} ms, slower than {} ms",
                r.name,
                latency.as_millis(),
                max.0.as_millis()
            ));
        }
    }
    (file.requests.len(), failures)
}

/// `--analysis FILE`: PromQL comparing the new colour with the serving one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisFile {
    /// Prometheus base URL (`--prometheus` overrides it).
    #[serde(default)]
    pub prometheus: Option<String>,
    /// How long the preview gets traffic before the pre-switch verdict (30 s by default).
    #[serde(default)]
    pub window: Option<Dur>,
    /// How often the post-promotion watch evaluates (5 s by default).
    #[serde(default)]
    pub interval: Option<Dur>,
    /// The sample count each colour needs before any metric is judged.
    pub samples: Samples,
    /// The metrics.
    pub metrics: Vec<Metric>,
}

/// The sample count query.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Samples {
    /// PromQL; `$COLOUR` and `$WINDOW` are substituted.
    pub query: String,
    /// The fewest samples (e.g. requests) per colour.
    pub min: f64,
}

/// One metric.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Name in the report, e.g. `error-rate`.
    pub name: String,
    /// PromQL; `$COLOUR` and `$WINDOW` (e.g. `30s`) are substituted.
    pub query: String,
    /// The new colour's ceiling.
    #[serde(default)]
    pub max: Option<f64>,
    /// How much the new colour may exceed the serving one (before the switch).
    #[serde(default)]
    pub max_over_stable: Option<f64>,
}

impl AnalysisFile {
    /// Parses an analysis file.
    pub fn parse(text: &str, source: &str) -> Result<AnalysisFile, Error> {
        let file: AnalysisFile = parse_yaml(text, source)?;
        if file.metrics.is_empty() {
            return Err(Error::Usage(format!("{source}: `metrics` is empty")));
        }
        for m in &file.metrics {
            if m.max.is_none() && m.max_over_stable.is_none() {
                return Err(Error::Usage(format!(
                    "{source}: metric `{}` has neither `max` nor `max_over_stable`",
                    m.name
                )));
            }
            if !m.query.contains("$COLOUR") {
                return Err(Error::Usage(format!(
                    "{source}: metric `{}`: its query has no $COLOUR, so it cannot tell the colours apart",
                    m.name
                )));
            }
        }
        Ok(file)
    }

    /// The analysis window.
    pub fn window(&self) -> Duration {
        self.window.map_or(Duration::from_secs(30), |d| d.0)
    }

    /// The watch interval.
    pub fn interval(&self) -> Duration {
        self.interval.map_or(Duration::from_secs(5), |d| d.0)
    }
}

/// `$COLOUR` and `$WINDOW` substituted.
pub fn substitute(query: &str, colour: &str, window: Duration) -> String {
    let seconds = window.as_secs().max(10);
    query.replace("$COLOUR", colour).replace("$WINDOW", &format!("{seconds}s"))
}

/// An instant query's single value; `None` when the result is empty.
pub async fn query(
    client: &reqwest::Client,
    prometheus: &str,
    promql: &str,
) -> Result<Option<f64>, String> {
    let url = format!("{}/api/v1/query", prometheus.trim_end_matches('/'));
    let answer = client
        .get(&url)
        .query(&[("query", promql)])
        .send()
        .await
        .map_err(|e| format!("Prometheus {prometheus}: {e}"))?;
    let status = answer.status();
    let body: serde_json::Value =
        answer.json().await.map_err(|e| format!("Prometheus {prometheus}: {e}"))?;
    if !status.is_success() || body["status"] != "success" {
        return Err(format!(
            "query `{promql}`: {}",
            body["error"].as_str().unwrap_or(status.as_str())
        ));
    }
    let result = &body["data"]["result"];
    match body["data"]["resultType"].as_str() {
        Some("scalar") => Ok(result[1].as_str().and_then(|v| v.parse().ok())),
        Some("vector") => {
            let items = result.as_array().cloned().unwrap_or_default();
            match items.len() {
                0 => Ok(None),
                1 => Ok(items[0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .filter(|v: &f64| !v.is_nan())),
                n => Err(format!(
                    "query `{promql}` returned {n} series; aggregate it to one (sum, max)"
                )),
            }
        }
        other => {
            Err(format!("query `{promql}`: result type {other:?}, expected a vector or scalar"))
        }
    }
}

/// One metric's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    /// The metric's name.
    pub name: String,
    /// The new colour's value.
    pub candidate: Option<f64>,
    /// The serving colour's value, when compared.
    pub stable: Option<f64>,
    /// `Some(true)` met, `Some(false)` not met, `None` not evaluated.
    pub met: Option<bool>,
    /// How it was judged, or why it could not be.
    pub detail: String,
}

/// Judges each metric for `candidate` (and against `stable`, if given).
pub async fn analyse(
    file: &AnalysisFile,
    prometheus: &str,
    candidate: &str,
    stable: Option<&str>,
    window: Duration,
) -> Vec<MetricResult> {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    let mut results = Vec::new();
    for m in &file.metrics {
        let q = |colour: &str| substitute(&m.query, colour, window);
        let new = query(&client, prometheus, &q(candidate)).await;
        let old = match stable {
            Some(s) if m.max_over_stable.is_some() => Some(query(&client, prometheus, &q(s)).await),
            _ => None,
        };
        let mut result = MetricResult {
            name: m.name.clone(),
            candidate: None,
            stable: None,
            met: None,
            detail: String::new(),
        };
        match (new, old) {
            (Err(e), _) | (_, Some(Err(e))) => result.detail = e,
            (Ok(None), _) => {
                result.detail = format!("no value for {candidate}: `{}`", q(candidate))
            }
            (Ok(Some(_)), Some(Ok(None))) => {
                result.detail = format!(
                    "no value for {}: `{}`",
                    stable.unwrap_or_default(),
                    q(stable.unwrap_or_default())
                );
            }
            (Ok(Some(v)), old) => {
                result.candidate = Some(v);
                let old = old.and_then(Result::ok).flatten();
                result.stable = old;
                let mut reasons = Vec::new();
                let mut met = true;
                let op = |ok: bool| if ok { "<=" } else { ">" };
                if let Some(max) = m.max {
                    met &= v <= max;
                    reasons.push(format!("{candidate} {v:.4} {} {max}", op(v <= max)));
                }
                if let (Some(over), Some(o)) = (m.max_over_stable, old) {
                    met &= v <= o + over;
                    let stable = stable.unwrap_or_default();
                    let ok = v <= o + over;
                    reasons.push(format!("{candidate} {v:.4} {} {stable} {o:.4} + {over}", op(ok)));
                }
                result.met = Some(met);
                result.detail = reasons.join(", ");
            }
        }
        results.push(result);
    }
    results
}

/// `load-tester run --target URL EXTRA... --output json`, judged by its own
/// report: its exit 0 passes, 1 fails, anything else is not evaluated.
pub async fn run_load_tester(
    binary: &std::path::Path,
    url: &str,
    extra: &[String],
    timeout: Duration,
    criterion: &str,
) -> shared_types::Check {
    use shared_types::Check;
    let id = "smoke-load";
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(["run", "--target", url]).args(extra).args(["--output", "json"]);
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => {
            return Check::not_evaluated(
                id,
                criterion,
                format!("load-tester did not finish within {} s", timeout.as_secs()),
            );
        }
        Ok(Err(e)) => {
            return Check::not_evaluated(
                id,
                criterion,
                format!("cannot run {}: {e} (--load-tester PATH)", binary.display()),
            );
        }
        Ok(Ok(o)) => o,
    };
    let report = shared_types::Report::from_json(&String::from_utf8_lossy(&output.stdout));
    let Ok(report) = report else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        return Check::not_evaluated(
            id,
            criterion,
            format!("load-tester gave no report ({}): {last}", output.status),
        );
    };
    let bad: Vec<String> = report
        .checks
        .iter()
        .filter(|c| {
            !matches!(c.verdict, shared_types::Verdict::Pass | shared_types::Verdict::Skipped)
        })
        .map(|c| {
            format!(
                "{} {}: {}",
                c.id,
                c.verdict.label(),
                c.observed.clone().or(c.detail.clone()).unwrap_or_default()
            )
        })
        .collect();
    let observed = format!(
        "load-tester: {}{}",
        report.counts(),
        if bad.is_empty() { String::new() } else { format!("; {}", bad.join("; ")) }
    );
    match output.status.code() {
        Some(0) => Check::pass(id, criterion, observed),
        Some(1) => Check::fail(id, criterion, observed),
        _ => Check::not_evaluated(id, criterion, observed),
    }
}

/// Runs `command` with `sh -c` and the release's variables; exit 0 passes.
pub async fn run_command(
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<(bool, String), String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(command).stdin(std::process::Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| format!("`{command}` did not finish within {} s", timeout.as_secs()))?
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let code = output.status.code().map_or("a signal".to_owned(), |c| format!("exit {c}"));
    Ok((output.status.success(), format!("{code}; {}", tail.join(" | "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_smoke_files_name_the_line_and_key() {
        let err = SmokeFile::parse(
            "requests:\n  - name: a\n    path: /x\n    expect: {status: nope}\n",
            "smoke.yaml",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.starts_with("smoke.yaml:4:"), "{err}");
        let err = SmokeFile::parse("requests:\n  - name: a\n    path: x\n", "s.yaml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("must start with /"), "{err}");
        let err = SmokeFile::parse("requests: []\n", "s.yaml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("empty"), "{err}");
        assert!(
            SmokeFile::parse("requests:\n  - name: a\n    path: /x\n    bogus: 1\n", "s").is_err()
        );
    }

    #[test]
    fn analysis_needs_a_colour_and_a_threshold() {
        let ok = "samples: {query: 'x{c=\"$COLOUR\"}', min: 10}\nmetrics:\n  - {name: e, query: 'y{c=\"$COLOUR\"}[$WINDOW]', max: 0.01}\n";
        assert!(AnalysisFile::parse(ok, "a").is_ok());
        let no_colour = ok.replace("y{c=\\\"$COLOUR\\\"}", "y");
        let no_colour = no_colour.replace("'y{c=\"$COLOUR\"}[$WINDOW]'", "'y[$WINDOW]'");
        assert!(AnalysisFile::parse(&no_colour, "a").is_err());
        let no_max = ok.replace(", max: 0.01", "");
        assert!(AnalysisFile::parse(&no_max, "a").is_err());
        assert_eq!(
            substitute("r[$WINDOW]{c=\"$COLOUR\"}", "green", Duration::from_secs(3)),
            "r[10s]{c=\"green\"}"
        );
    }

    proptest::proptest! {
        #[test]
        fn no_smoke_text_panics(text in "\\PC{0,200}") {
            let _ = SmokeFile::parse(&text, "fuzz");
            let _ = AnalysisFile::parse(&text, "fuzz");
        }
    }
}
