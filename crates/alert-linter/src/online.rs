//! Online checks against a live Prometheus (`--prometheus URL`) and the
//! backtest that replays alerts over past data through `query_range`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp;
use promql_parser::parser::VectorSelector;
use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::LintOutcome;
use crate::diag::{Diagnostic, Severity};
use crate::model::format_duration;
use crate::promql;
use crate::yaml::Node;

/// The server could not be asked (exit 3).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot query Prometheus at {url} ({what}): {detail}; is it running? pass --prometheus to point elsewhere"
)]
pub struct OnlineError {
    /// Server URL.
    pub url: String,
    /// Which call.
    pub what: String,
    /// Why.
    pub detail: String,
}

/// A small Prometheus HTTP API client.
#[derive(Debug, Clone)]
pub struct PrometheusApi {
    url: String,
    http: reqwest::Client,
}

impl PrometheusApi {
    /// A client for `url` (e.g. `http://127.0.0.1:9090`).
    pub fn new(url: &str) -> PrometheusApi {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        PrometheusApi { url: url.trim_end_matches('/').to_owned(), http }
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, OnlineError> {
        let err =
            |detail: String| OnlineError { url: self.url.clone(), what: path.to_owned(), detail };
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .query(params)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| err(format!("HTTP {status}: {e}")))?;
        if body["status"] != "success" {
            return Err(err(format!(
                "HTTP {status}: {}",
                body["error"].as_str().unwrap_or("error")
            )));
        }
        Ok(body["data"].clone())
    }

    /// The global scrape interval from the server's loaded config.
    pub async fn scrape_interval(&self) -> Result<Option<Duration>, OnlineError> {
        let data = self.get("/api/v1/status/config", &[]).await?;
        let yaml = data["yaml"].as_str().unwrap_or_default();
        let docs = crate::yaml::parse_documents(yaml).unwrap_or_default();
        let interval = docs
            .first()
            .and_then(|d| d.value.get("global"))
            .and_then(|g| g.value.get("scrape_interval"));
        Ok(interval.and_then(|i| match &i.value {
            Node::Str(s) => crate::model::parse_duration(s).ok(),
            _ => None,
        }))
    }

    /// Whether any series matches `selector` in the last `lookback`.
    pub async fn has_series(
        &self,
        selector: &str,
        lookback: Duration,
    ) -> Result<bool, OnlineError> {
        let end = now_secs();
        let params = [
            ("match[]", selector.to_owned()),
            ("start", format!("{:.3}", end - lookback.as_secs_f64())),
            ("end", format!("{end:.3}")),
        ];
        let data = self.get("/api/v1/series", &params).await?;
        Ok(data.as_array().is_some_and(|a| !a.is_empty()))
    }

    /// Samples an instant evaluation of `expr` touches (`stats=all`).
    pub async fn query_samples(&self, expr: &str) -> Result<Option<u64>, OnlineError> {
        let data = self
            .get("/api/v1/query", &[("query", expr.to_owned()), ("stats", "all".into())])
            .await?;
        Ok(data["stats"]["samples"]["totalQueryableSamples"].as_u64())
    }

    /// `query_range` result: (labels, [(unix seconds, value)]) per series.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<(String, Vec<f64>)>, OnlineError> {
        let params = [
            ("query", expr.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{}ms", step.as_millis().max(1))),
        ];
        let data = self.get("/api/v1/query_range", &params).await?;
        let mut out = Vec::new();
        for series in data["result"].as_array().into_iter().flatten() {
            let labels = series["metric"].to_string();
            let times = series["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v[0].as_f64())
                .collect();
            out.push((labels, times));
        }
        Ok(out)
    }
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// `name{a="b",c=~"d"}` for a selector (offsets and `@` dropped).
pub fn selector_text(vs: &VectorSelector) -> String {
    let mut parts = Vec::new();
    if let Some(name) = &vs.name {
        parts.push(format!("__name__={}", quote(name)));
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Re(_) => "=~",
            MatchOp::NotRe(_) => "!~",
        };
        parts.push(format!("{}{op}{}", m.name, quote(&m.value)));
    }
    format!("{{{}}}", parts.join(","))
}

fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Online checks: reads the scrape interval, then for every rule checks
/// that its selectors match series and that it is not too expensive.
/// Findings go into `outcome`; an unreachable server is an error.
pub async fn check(outcome: &mut LintOutcome, api: &PrometheusApi) -> Result<(), OnlineError> {
    let interval = api.scrape_interval().await?;
    if let Some(interval) = interval {
        outcome
            .extra_data
            .insert("server_scrape_interval_seconds".into(), interval.as_secs_f64().into());
    }
    let absent_ok: Vec<Regex> = outcome
        .config
        .online
        .absent_ok
        .iter()
        .filter_map(|r| Regex::new(&format!("^(?:{r})$")).ok())
        .collect();
    let mut found = Vec::new();
    let mut checked = std::collections::HashMap::new();
    for file in &outcome.files {
        for (_, rule) in file.rules() {
            let Some(expr) = &rule.expr else { continue };
            let Ok(parsed) = promql::parse(&expr.value) else { continue };
            for (vs, _, _) in promql::selectors(&parsed) {
                let name = promql::metric_name(vs).unwrap_or_default().to_owned();
                if absent_ok.iter().any(|r| r.is_match(&name)) {
                    continue;
                }
                let text = selector_text(vs);
                let exists = match checked.get(&text) {
                    Some(e) => *e,
                    None => {
                        let e = api.has_series(&text, Duration::from_secs(3600)).await?;
                        checked.insert(text.clone(), e);
                        e
                    }
                };
                if !exists {
                    let bare = if name.is_empty() {
                        false
                    } else {
                        api.has_series(
                            &format!("{{__name__={}}}", quote(&name)),
                            Duration::from_secs(3600),
                        )
                        .await?
                    };
                    let message = if bare {
                        format!(
                            "`{name}` exists on the server but no series matches {text}: a label or value is wrong"
                        )
                    } else {
                        format!(
                            "no series `{name}` on the server in the last hour: the rule can never fire"
                        )
                    };
                    found.push(
                        Diagnostic::new("online/series-missing", Severity::Warning, &file.path, expr.pos, message)
                            .help("fix the selector, or list the metric in the config's online.absent_ok if it is absent on purpose")
                            .rule(rule.name()),
                    );
                }
            }
            if let Some(samples) = api.query_samples(&expr.value).await?
                && samples > outcome.config.online.max_samples
            {
                found.push(
                    Diagnostic::new(
                        "online/query-expensive",
                        Severity::Warning,
                        &file.path,
                        expr.pos,
                        format!(
                            "one evaluation touches {samples} samples (limit {})",
                            outcome.config.online.max_samples
                        ),
                    )
                    .help("record the expensive part in a recording rule, or narrow the selectors")
                    .rule(rule.name()),
                );
            }
        }
    }
    outcome.extend(&["online/series-missing", "online/query-expensive"], found);
    Ok(())
}

/// How one alert behaved over the backtest range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertBacktest {
    /// The alert.
    pub alert: String,
    /// Firing episodes (per series, after `for`).
    pub episodes: usize,
    /// Total firing time over all series, in seconds.
    pub firing_seconds: f64,
    /// Start times (unix seconds) of the episodes.
    pub episode_starts: Vec<f64>,
}

/// Replays each alert over `[now - range, now]` at `step`: a series fires
/// once its expression has returned it continuously for `for`; gaps longer
/// than one step end an episode.
pub async fn backtest(
    outcome: &mut LintOutcome,
    api: &PrometheusApi,
    range: Duration,
    step: Duration,
) -> Result<Vec<AlertBacktest>, OnlineError> {
    let end = now_secs();
    let start = end - range.as_secs_f64();
    let step_s = step.as_secs_f64().max(0.001);
    let mut results = Vec::new();
    let mut found = Vec::new();
    for file in &outcome.files {
        for (_, rule) in file.rules() {
            let (Some(alert), Some(expr)) = (&rule.alert, &rule.expr) else { continue };
            if promql::parse(&expr.value).is_err() {
                continue;
            }
            let for_s = rule.for_duration().as_secs_f64();
            let mut result = AlertBacktest {
                alert: alert.value.clone(),
                episodes: 0,
                firing_seconds: 0.0,
                episode_starts: Vec::new(),
            };
            for (_, times) in api.query_range(&expr.value, start, end, step).await? {
                for (active_from, active_to) in runs(&times, step_s) {
                    let fire_at = active_from + for_s;
                    if fire_at <= active_to {
                        result.episodes += 1;
                        result.firing_seconds += active_to - fire_at + step_s;
                        result.episode_starts.push(fire_at);
                    }
                }
            }
            if result.episodes > 0 {
                found.push(
                    Diagnostic::new(
                        "backtest/fired",
                        Severity::Warning,
                        &file.path,
                        alert.pos,
                        format!(
                            "fired {} time(s), {} in total, over the last {}",
                            result.episodes,
                            format_duration(Duration::from_secs_f64(result.firing_seconds)),
                            format_duration(range)
                        ),
                    )
                    .help("if nothing was wrong then, this is a false positive: raise the threshold or lengthen `for`")
                    .rule(Some(&alert.value)),
                );
            }
            if result.episodes > outcome.config.backtest.max_episodes {
                found.push(
                    Diagnostic::new(
                        "backtest/flapping",
                        Severity::Warning,
                        &file.path,
                        alert.pos,
                        format!("flapping: {} episodes (limit {})", result.episodes, outcome.config.backtest.max_episodes),
                    )
                    .help("lengthen `for`, add keep_firing_for, or smooth the expression over a longer window")
                    .rule(Some(&alert.value)),
                );
            }
            results.push(result);
        }
    }
    outcome.extra_data.insert("backtest".into(), serde_json::json!(results));
    outcome.extend(&["backtest/fired", "backtest/flapping"], found);
    Ok(results)
}

/// Continuous runs of timestamps spaced one `step` apart: (first, last).
pub fn runs(times: &[f64], step: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for &t in times {
        match out.last_mut() {
            Some((_, last)) if t - *last <= step * 1.5 => *last = t,
            _ => out.push((t, t)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_on_gaps() {
        assert_eq!(runs(&[1.0, 2.0, 3.0, 7.0, 8.0], 1.0), vec![(1.0, 3.0), (7.0, 8.0)]);
        assert!(runs(&[], 1.0).is_empty());
    }
}
