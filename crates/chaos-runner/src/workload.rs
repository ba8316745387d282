//! User traffic during an experiment, sent at a fixed rate (an open model:
//! a slow answer does not slow the traffic down), with every answer kept:
//! what users saw, and the ledger of what the system acknowledged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use crate::experiment::Workload;

/// One answer (or its absence).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since the experiment started, when the request was sent.
    pub at_ms: u64,
    /// Index of the request in the workload.
    pub request: usize,
    /// The status; none when no answer came (refused, reset, timed out).
    pub status: Option<u16>,
    /// The answer's content type.
    pub content_type: Option<String>,
    /// Time to the full answer.
    pub latency_ms: f64,
    /// Why no answer came.
    pub error: Option<String>,
    /// The acknowledged id (the `ledger` pointer of a 2xx answer).
    pub ledger_id: Option<String>,
}

impl Sample {
    /// A user-visible error: no answer, or not 2xx.
    pub fn failed(&self) -> bool {
        !self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The running workload.
#[derive(Debug)]
pub struct Running {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts sending `workload`; `origin` is the experiment's start.
pub fn start(workload: &Workload, client: reqwest::Client, origin: Instant, run: &str) -> Running {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let (stop, mut stopped) = watch::channel(false);
    let workload = workload.clone();
    let run = run.to_owned();
    let store = samples.clone();
    let task = tokio::spawn(async move {
        let rate = workload.rate.unwrap_or(20.0);
        let timeout = workload.timeout.map_or(Duration::from_secs(5), |d| d.0);
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let in_flight = Arc::new(Semaphore::new(512));
        let mut seq: u64 = 0;
        let mut pending = Vec::new();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopped.wait_for(|s| *s) => break,
            }
            let Ok(permit) = in_flight.clone().try_acquire_owned() else { continue };
            let index = usize::try_from(seq % workload.requests.len() as u64).unwrap_or(0);
            let request = workload.requests[index].clone();
            let fill = |t: &str| t.replace("{{seq}}", &seq.to_string()).replace("{{run}}", &run);
            let mut req =
                match reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => client.request(m, fill(&request.url)),
                    Err(_) => continue,
                };
            req = req.timeout(timeout);
            for (k, v) in &request.headers {
                req = req.header(k, fill(v));
            }
            if let Some(body) = &request.body {
                let body = fill(body);
                if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
                    req = req.header("content-type", "application/json");
                }
                req = req.body(body);
            }
            seq += 1;
            let store = store.clone();
            let sent = Instant::now();
            let at_ms = u64::try_from(sent.duration_since(origin).as_millis()).unwrap_or(u64::MAX);
            pending.push(tokio::spawn(async move {
                let _permit = permit;
                let sample = match req.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let content_type = response
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = response.bytes().await.unwrap_or_default();
                        let ledger_id = request
                            .ledger
                            .as_ref()
                            .filter(|_| (200..300).contains(&status))
                            .and_then(|p| {
                                let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
                                let id = v.pointer(p)?;
                                Some(id.as_str().map_or_else(|| id.to_string(), str::to_owned))
                            });
                        Sample {
                            at_ms,
                            request: index,
                            status: Some(status),
                            content_type,
                            latency_ms: sent.elapsed().as_secs_f64() * 1000.0,
                            error: None,
                            ledger_id,
                        }
                    }
                    Err(e) => Sample {
                        at_ms,
                        request: index,
                        status: None,
                        content_type: None,
                        latency_ms: sent.elapsed().as_secs_f64() * 1000.0,
                        error: Some(if e.is_timeout() {
                            "timed out".to_owned()
                        } else if e.is_connect() {
                            "connection refused or reset".to_owned()
                        } else {
                            e.to_string()
                        }),
                        ledger_id: None,
                    },
                };
                if let Ok(mut s) = store.lock() {
                    s.push(sample);
                }
            }));
            pending.retain(|t| !t.is_finished());
        }
        for t in pending {
            let _ = t.await;
        }
    });
    Running { samples, stop, task }
}

impl Running {
    /// Samples so far.
    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops sending and waits for the answers in flight.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.send_replace(true);
        let _ = self.task.await;
        let mut samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        samples.sort_by_key(|s| s.at_ms);
        samples
    }
}
