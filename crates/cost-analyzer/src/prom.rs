//! Prometheus over its HTTP API: range queries over the window (usage per
//! container, request rates), instant queries, and the TSDB's own status
//! (series count, the metric names holding most of them).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::Error;

/// A Prometheus server.
#[derive(Debug, Clone)]
pub struct Prometheus {
    url: String,
    client: reqwest::Client,
}

/// One series of a range query: its labels and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Values (NaN dropped).
    pub values: Vec<f64>,
}

impl Prometheus {
    /// A client for `url`.
    pub fn new(url: &str) -> Result<Prometheus, Error> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "--prometheus {url}: expected an http:// or https:// URL"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::CouldNotRun(e.to_string()))?;
        Ok(Prometheus { url: url.trim_end_matches('/').to_owned(), client })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Error> {
        let url = format!("{}{path}", self.url);
        let answer = self
            .client
            .get(&url)
            .query(query)
            .send()
            .await
            .map_err(|e| Error::CouldNotRun(format!("Prometheus {}: {e}", self.url)))?;
        let status = answer.status();
        let body: Value = answer.json().await.map_err(|e| {
            Error::CouldNotRun(format!("Prometheus {}: {status}, not the HTTP API: {e}", self.url))
        })?;
        if body["status"] != "success" {
            let why = body["error"].as_str().unwrap_or(status.as_str()).to_owned();
            return Err(Error::CouldNotRun(format!(
                "Prometheus {path} {:?}: {why}",
                query.first().map(|q| &q.1)
            )));
        }
        Ok(body["data"].clone())
    }

    /// A range query from `start` to `end` (Unix seconds) at `step`.
    pub async fn range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<Series>, Error> {
        let data = self
            .get(
                "/api/v1/query_range",
                &[
                    ("query", promql.to_owned()),
                    ("start", format!("{start:.3}")),
                    ("end", format!("{end:.3}")),
                    ("step", format!("{}s", step.as_secs().max(1))),
                ],
            )
            .await?;
        Ok(data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| Series {
                labels: s["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
                values: s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p[1].as_str().and_then(|v| v.parse::<f64>().ok()))
                    .filter(|v| v.is_finite())
                    .collect(),
            })
            .collect())
    }

    /// An instant query's series and values.
    pub async fn instant(
        &self,
        promql: &str,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>, Error> {
        let data = self.get("/api/v1/query", &[("query", promql.to_owned())]).await?;
        Ok(data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let labels = s["metric"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let v = s["value"][1].as_str()?.parse::<f64>().ok()?;
                Some((labels, v))
            })
            .collect())
    }

    /// `/api/v1/status/tsdb`: head series and the top metric names by series.
    pub async fn tsdb(&self) -> Result<(f64, Vec<(String, f64)>), Error> {
        let data = self.get("/api/v1/status/tsdb", &[]).await?;
        let series = data["headStats"]["numSeries"].as_f64().unwrap_or(0.0);
        let top = data["seriesCountByMetricName"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_f64()?)))
            .collect();
        Ok((series, top))
    }
}

/// The `q` quantile of `values` (nearest rank), NaN when empty.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.95), 95.0);
        assert_eq!(quantile(&mut [3.0], 0.95), 3.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }
}
