//! The zero-downtime prober: requests at a steady rate through a Service,
//! each on a new connection (a Service proxy, kube-proxy included, picks a
//! backend per connection, so a kept-alive connection would stay on its old
//! pod and hide when traffic moved), each response's status and version
//! recorded against one clock.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One request.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was sent, from the prober's clock origin.
    pub sent: Duration,
    /// When its answer (or error) came.
    pub done: Duration,
    /// HTTP status, if any answer came.
    pub status: Option<u16>,
    /// The version header's value.
    pub version: Option<String>,
}

impl Sample {
    /// A 2xx or 3xx answer.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..400).contains(&s))
    }
}

/// A running prober.
#[derive(Debug)]
pub struct Prober {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<Sample>>,
}

/// What the prober saw over a window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// Requests sent.
    pub requests: usize,
    /// Requests without a 2xx/3xx answer.
    pub failed: usize,
    /// The longest time without a successful answer.
    pub longest_gap: Duration,
    /// When the first response from `new` was sent.
    pub first_new: Option<Duration>,
    /// When the last response from `old` was sent.
    pub last_old: Option<Duration>,
    /// Responses from `old` sent after the first from `new`: 0 = traffic moved at one instant.
    pub old_after_new: usize,
    /// Answers by version.
    pub by_version: std::collections::BTreeMap<String, usize>,
}

impl Prober {
    /// Starts sending GET `url` `rate` times a second; times count from `origin`.
    pub fn start(url: String, rate: f64, version_header: String, origin: Instant) -> Prober {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            // No idle pool: every request opens its own connection.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(2))
                .build();
            let Ok(client) = client else { return Vec::new() };
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.changed() => break,
                }
                let (client, url, header, tx) =
                    (client.clone(), url.clone(), version_header.clone(), tx.clone());
                tokio::spawn(async move {
                    let sent = origin.elapsed();
                    let answer = client.get(&url).send().await;
                    let (status, version) = match answer {
                        Ok(r) => {
                            let version = r
                                .headers()
                                .get(&header)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            (Some(status), version)
                        }
                        Err(_) => (None, None),
                    };
                    let _ = tx.send(Sample { sent, done: origin.elapsed(), status, version });
                });
            }
            drop(tx);
            // In-flight requests finish (or time out) before the window closes.
            let mut samples = Vec::new();
            while let Some(s) = rx.recv().await {
                samples.push(s);
            }
            samples.sort_by_key(|s| s.sent);
            samples
        });
        Prober { stop, task }
    }

    /// Stops sending and returns every sample, by time sent.
    pub async fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// The summary of `samples` between `from` and `to` (by time sent), with
/// `old` and `new` the versions traffic moves between.
pub fn summarize(
    samples: &[Sample],
    from: Duration,
    to: Duration,
    old: Option<&str>,
    new: Option<&str>,
) -> Summary {
    let window: Vec<&Sample> = samples.iter().filter(|s| s.sent >= from && s.sent <= to).collect();
    let mut summary = Summary { requests: window.len(), ..Summary::default() };
    let mut last_ok = from;
    for s in &window {
        if let Some(v) = &s.version {
            *summary.by_version.entry(v.clone()).or_default() += 1;
        }
        if !s.ok() {
            summary.failed += 1;
            continue;
        }
        summary.longest_gap = summary.longest_gap.max(s.done.saturating_sub(last_ok));
        last_ok = last_ok.max(s.done);
        if new.is_some() && s.version.as_deref() == new && summary.first_new.is_none() {
            summary.first_new = Some(s.sent);
        }
        if old.is_some() && s.version.as_deref() == old {
            summary.last_old = Some(s.sent);
        }
    }
    summary.longest_gap =
        summary.longest_gap.max(to.saturating_sub(last_ok).min(to.saturating_sub(from)));
    if let Some(first) = summary.first_new {
        summary.old_after_new = window
            .iter()
            .filter(|s| s.ok() && s.version.as_deref() == old && s.sent > first)
            .count();
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sent_ms: u64, status: Option<u16>, version: &str) -> Sample {
        Sample {
            sent: Duration::from_millis(sent_ms),
            done: Duration::from_millis(sent_ms + 5),
            status,
            version: Some(version.to_owned()),
        }
    }

    #[test]
    fn a_clean_switch_moves_at_one_instant() {
        let samples = vec![
            s(0, Some(200), "v1"),
            s(100, Some(200), "v1"),
            s(200, Some(200), "v2"),
            s(300, Some(200), "v2"),
        ];
        let sum =
            summarize(&samples, Duration::ZERO, Duration::from_millis(310), Some("v1"), Some("v2"));
        assert_eq!((sum.requests, sum.failed, sum.old_after_new), (4, 0, 0));
        assert_eq!(sum.first_new, Some(Duration::from_millis(200)));
        assert_eq!(sum.last_old, Some(Duration::from_millis(100)));
        assert_eq!(sum.longest_gap, Duration::from_millis(100));
    }

    #[test]
    fn failures_and_flapping_are_counted() {
        let samples = vec![
            s(0, Some(200), "v1"),
            s(100, None, ""),
            s(200, Some(502), "v2"),
            s(300, Some(200), "v2"),
            s(400, Some(200), "v1"),
        ];
        let sum =
            summarize(&samples, Duration::ZERO, Duration::from_millis(410), Some("v1"), Some("v2"));
        assert_eq!((sum.failed, sum.old_after_new), (2, 1));
        assert_eq!(sum.longest_gap, Duration::from_millis(300));
    }
}
