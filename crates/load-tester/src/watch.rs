//! Watching the system under test during the run: its Prometheus text
//! endpoints are scraped (parsed with `prometheus-parse`) at an interval,
//! and/or a Prometheus server is asked through its HTTP API
//! (`/api/v1/query`, one instant query per interval for every mapped series,
//! one service per `instance` label), with a [`MetricMapping`] whose defaults
//! are the sandbox's (and the runbooks') series. What comes out: cache hit rate over the run, pool
//! utilisation, every circuit-breaker state change and the states at the
//! end, restarts (the process start time changing), CPU and memory, each as
//! a time series.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Series names to read; defaults match the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MetricMapping {
    /// Counter of cache hits.
    pub cache_hits: String,
    /// Counter of cache misses.
    pub cache_misses: String,
    /// Counter of failed cache lookups (count as not served from the cache).
    pub cache_errors: String,
    /// Gauge of pooled database connections in use.
    pub pool_in_use: String,
    /// Gauge of the pool size.
    pub pool_max: String,
    /// Gauge `{dependency, state}` = 1 for the current breaker state.
    pub breaker_state: String,
    /// Counter `{dependency, from, to}` of breaker transitions.
    pub breaker_transitions: String,
    /// Gauge of the process start time (a change is a restart).
    pub start_time: String,
    /// Counter of CPU seconds.
    pub cpu_seconds: String,
    /// Gauge of resident memory in bytes.
    pub rss_bytes: String,
}

impl Default for MetricMapping {
    fn default() -> Self {
        MetricMapping {
            cache_hits: "cache_hits_total".into(),
            cache_misses: "cache_misses_total".into(),
            cache_errors: "cache_errors_total".into(),
            pool_in_use: "db_connections_in_use".into(),
            pool_max: "db_connections_max".into(),
            breaker_state: "circuit_breaker_state".into(),
            breaker_transitions: "circuit_breaker_transitions_total".into(),
            start_time: "process_start_time_seconds".into(),
            cpu_seconds: "process_cpu_seconds_total".into(),
            rss_bytes: "process_resident_memory_bytes".into(),
        }
    }
}

impl MetricMapping {
    /// Every series name the mapping reads.
    pub fn names(&self) -> [&str; 10] {
        [
            &self.cache_hits,
            &self.cache_misses,
            &self.cache_errors,
            &self.pool_in_use,
            &self.pool_max,
            &self.breaker_state,
            &self.breaker_transitions,
            &self.start_time,
            &self.cpu_seconds,
            &self.rss_bytes,
        ]
    }

    /// Reads a mapping from a YAML file; unknown keys and wrong types are
    /// errors naming the file, line and key. Keys left out keep the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<MetricMapping, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the metric mapping {}: {e}", path.display()))?;
        serde_saphyr::from_str::<MetricMapping>(&text)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// A Prometheus server to ask through its HTTP API.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusSource {
    /// Base URL, e.g. `http://prometheus:9090`.
    pub url: String,
    /// Label matchers added to every query, e.g. `job="marketplace"`.
    pub selector: String,
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Prometheus text endpoints, e.g. `http://127.0.0.1:8080/metrics`.
    pub urls: Vec<String>,
    /// A Prometheus server queried through `/api/v1/query`; one service per `instance`.
    pub prometheus: Option<PrometheusSource>,
    /// Time between scrapes.
    pub interval: Duration,
    /// Which series mean what.
    pub mapping: MetricMapping,
}

/// One scrape, reduced to what the criteria need.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    t: f64,
    cache_hits: Option<f64>,
    cache_misses: Option<f64>,
    cache_errors: Option<f64>,
    pool_in_use: Option<f64>,
    pool_max: Option<f64>,
    breakers: BTreeMap<String, String>,
    transitions: BTreeMap<(String, String, String), f64>,
    start_time: Option<f64>,
    cpu_seconds: Option<f64>,
    rss_bytes: Option<f64>,
    /// Prometheus's `up` for the instance (Prometheus source only).
    up: Option<f64>,
    /// The gRPC histograms' buckets, per method.
    grpc: BTreeMap<crate::grpc::Key, crate::grpc::Counts>,
}

/// A point of a service's time series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePoint {
    /// Seconds since the run started.
    pub t: f64,
    /// Connections in use / pool size.
    pub pool_utilisation: Option<f64>,
    /// Cache hits / lookups since the previous point.
    pub cache_hit_rate: Option<f64>,
    /// CPU cores busy since the previous point.
    pub cpu_cores: Option<f64>,
    /// Resident memory.
    pub rss_bytes: Option<f64>,
    /// Breakers not closed.
    pub breakers_open: usize,
}

/// A circuit breaker changing state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerChange {
    /// Seconds since the run started (the scrape that saw it).
    pub t: f64,
    /// The dependency behind the breaker.
    pub dependency: String,
    /// Previous state.
    pub from: String,
    /// New state.
    pub to: String,
}

/// Everything seen on one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceWatch {
    /// The endpoint.
    pub url: String,
    /// Successful scrapes.
    pub scrapes: u64,
    /// Failed scrapes.
    pub failed_scrapes: u64,
    /// The first scrape error, if any.
    pub first_error: Option<String>,
    /// Cache hits / lookups between the first and last scrape.
    pub cache_hit_rate: Option<f64>,
    /// Cache lookups between the first and last scrape.
    pub cache_lookups: f64,
    /// Highest pool utilisation seen.
    pub pool_utilisation_max: Option<f64>,
    /// Breaker states at the last scrape, by dependency.
    pub breakers_at_end: BTreeMap<String, String>,
    /// Every breaker state change seen, in order.
    pub breaker_changes: Vec<BreakerChange>,
    /// Longest stretch each breaker stayed not closed, seconds (from the
    /// scrape that first saw it open to the one that saw it closed, or the
    /// last scrape).
    #[serde(default)]
    pub breaker_open_longest: BTreeMap<String, f64>,
    /// Restarts seen (process start time changed).
    pub restarts: u64,
    /// Times a Prometheus server saw the instance go down (`up` from 1 to 0).
    #[serde(default)]
    pub down: u64,
    /// Highest CPU use in cores.
    pub cpu_cores_max: Option<f64>,
    /// Highest resident memory.
    pub rss_bytes_max: Option<f64>,
    /// The time series.
    pub series: Vec<ServicePoint>,
    /// gRPC calls per method during the run, from the service's
    /// `grpc_{client,server}_handling_seconds` histograms.
    #[serde(default)]
    pub grpc: Vec<crate::grpc::GrpcMethod>,
}

/// A running watcher; [`stop`](Self::stop) takes a last scrape and returns the results.
#[derive(Debug)]
pub struct Watcher {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Vec<ServiceWatch>>>,
}

impl Watcher {
    /// Scrapes each endpoint now and then every `interval` until stopped.
    pub fn start(options: &WatchOptions, client: reqwest::Client, started: Instant) -> Watcher {
        let (stop, rx) = watch::channel(false);
        let mut tasks: Vec<JoinHandle<Vec<ServiceWatch>>> = options
            .urls
            .iter()
            .map(|url| {
                let (url, client, mut rx) = (url.clone(), client.clone(), rx.clone());
                let (mapping, interval) = (options.mapping.clone(), options.interval);
                tokio::spawn(async move {
                    let mut snapshots = Vec::new();
                    let mut result = ServiceWatch { url: url.clone(), ..ServiceWatch::default() };
                    loop {
                        match scrape(&client, &url, &mapping, started).await {
                            Ok(s) => {
                                result.scrapes += 1;
                                snapshots.push(s);
                            }
                            Err(e) => {
                                result.failed_scrapes += 1;
                                result.first_error.get_or_insert(e);
                            }
                        }
                        if !next_round(&mut rx, interval).await {
                            break;
                        }
                    }
                    vec![summarise(result, &snapshots)]
                })
            })
            .collect();
        if let Some(source) = &options.prometheus {
            let (source, client, rx) = (source.clone(), client.clone(), rx.clone());
            let (mapping, interval) = (options.mapping.clone(), options.interval);
            tasks.push(tokio::spawn(async move {
                watch_prometheus(&source, &client, &mapping, interval, rx, started).await
            }));
        }
        Watcher { stop, tasks }
    }

    /// Takes the last scrape and returns what each endpoint showed.
    pub async fn stop(self) -> Vec<ServiceWatch> {
        let _ = self.stop.send(true);
        let mut out = Vec::new();
        for task in self.tasks {
            if let Ok(w) = task.await {
                out.extend(w);
            }
        }
        out
    }
}

/// After one poll: `false` once the watcher is stopped, else waits out
/// `interval` (cut short by a stop, for a last poll) and returns `true`.
async fn next_round(rx: &mut watch::Receiver<bool>, interval: Duration) -> bool {
    if *rx.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(interval) => {}
        _ = rx.changed() => {}
    }
    true
}

/// Queries `source` every `interval` until stopped; one [`ServiceWatch`]
/// per `instance`, or one saying why nothing was seen.
async fn watch_prometheus(
    source: &PrometheusSource,
    client: &reqwest::Client,
    mapping: &MetricMapping,
    interval: Duration,
    mut rx: watch::Receiver<bool>,
    started: Instant,
) -> Vec<ServiceWatch> {
    let mut by_instance: BTreeMap<String, Vec<Snapshot>> = BTreeMap::new();
    let (mut queries, mut failed, mut first_error) = (0u64, 0u64, None);
    loop {
        match query_prometheus(client, source, mapping, started).await {
            Ok(snapshots) => {
                queries += 1;
                for (instance, snapshot) in snapshots {
                    by_instance.entry(instance).or_default().push(snapshot);
                }
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        if !next_round(&mut rx, interval).await {
            break;
        }
    }
    let base = source.url.trim_end_matches('/').to_owned();
    let mut out: Vec<ServiceWatch> = by_instance
        .into_iter()
        .map(|(instance, snapshots)| {
            let w = ServiceWatch {
                url: format!("{base} instance={instance}"),
                scrapes: snapshots.len() as u64,
                failed_scrapes: failed,
                first_error: first_error.clone(),
                ..ServiceWatch::default()
            };
            summarise(w, &snapshots)
        })
        .collect();
    if out.is_empty() {
        out.push(ServiceWatch {
            url: base.clone(),
            scrapes: 0,
            failed_scrapes: failed,
            first_error: first_error.or_else(|| {
                (queries > 0).then(|| {
                    format!(
                        "{base} has none of the mapped series for {{{}}}: check --prometheus-selector and the mapping",
                        source.selector
                    )
                })
            }),
            ..ServiceWatch::default()
        });
    }
    out
}

async fn scrape(
    client: &reqwest::Client,
    url: &str,
    m: &MetricMapping,
    started: Instant,
) -> Result<Snapshot, String> {
    let answer = client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("cannot scrape {url}: {e}"))?;
    if !answer.status().is_success() {
        return Err(format!("scraping {url} answered HTTP {}", answer.status()));
    }
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = answer.text().await.map_err(|e| format!("cannot read {url}: {e}"))?;
    let samples = check_exposition(url, &content_type, &text)?;
    Ok(snapshot_of_scrape(samples, m, started.elapsed().as_secs_f64()))
}

/// A 200 that is not the Prometheus text format (an HTML page, an empty
/// body, a JSON error) is a failed scrape, not a scrape of zero series:
/// zero series would read as "no cache lookups, no restarts".
fn check_exposition(
    url: &str,
    content_type: &str,
    text: &str,
) -> Result<Vec<prometheus_parse::Sample>, String> {
    let hint = "is --metrics-url the service's Prometheus endpoint?";
    if content_type.contains("html") || text.trim_start().starts_with('<') {
        return Err(format!(
            "scraping {url} answered HTML ({content_type}), not the Prometheus text format: {hint}"
        ));
    }
    let samples = parse_samples(text);
    if samples.is_empty() {
        return Err(format!("scraping {url} answered 200 with no Prometheus series: {hint}"));
    }
    Ok(samples)
}

/// Every sample of a Prometheus text exposition (none if it does not parse).
fn parse_samples(text: &str) -> Vec<prometheus_parse::Sample> {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map(|s| s.samples)
        .unwrap_or_default()
}

/// The snapshot of parsed samples: the scalar ones, by the mapping.
fn snapshot_of_scrape(
    samples: Vec<prometheus_parse::Sample>,
    m: &MetricMapping,
    t: f64,
) -> Snapshot {
    let mut scalars = Vec::with_capacity(samples.len());
    for s in samples {
        let labels: BTreeMap<String, String> =
            s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        match &s.value {
            // A histogram of interest becomes its `_bucket` series, as a
            // Prometheus server answers them.
            prometheus_parse::Value::Histogram(buckets)
                if crate::grpc::HISTOGRAMS.iter().any(|(_, name)| *name == s.metric) =>
            {
                for bucket in buckets {
                    let mut labels = labels.clone();
                    let le = if bucket.less_than.is_infinite() {
                        "+Inf".to_owned()
                    } else {
                        bucket.less_than.to_string()
                    };
                    labels.insert("le".to_owned(), le);
                    let metric = format!("{}_bucket", s.metric);
                    scalars.push(Sample { metric, labels, value: bucket.count });
                }
            }
            value => {
                if let Some(value) = scalar(value) {
                    scalars.push(Sample { metric: s.metric, labels, value });
                }
            }
        }
    }
    snapshot_of(&scalars, m, t)
}

#[cfg(test)]
fn parse_snapshot(text: &str, m: &MetricMapping, t: f64) -> Snapshot {
    snapshot_of_scrape(parse_samples(text), m, t)
}

/// One sample of a mapped series, from a scrape or a query.
#[derive(Debug, Clone)]
struct Sample {
    metric: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn snapshot_of(samples: &[Sample], m: &MetricMapping, t: f64) -> Snapshot {
    let mut snap = Snapshot { t, ..Snapshot::default() };
    let sum = |name: &str| -> Option<f64> {
        let values: Vec<f64> =
            samples.iter().filter(|s| s.metric == name).map(|s| s.value).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    snap.cache_hits = sum(&m.cache_hits);
    snap.cache_misses = sum(&m.cache_misses);
    snap.cache_errors = sum(&m.cache_errors);
    snap.pool_in_use = sum(&m.pool_in_use);
    snap.pool_max = sum(&m.pool_max);
    snap.start_time = sum(&m.start_time);
    snap.cpu_seconds = sum(&m.cpu_seconds);
    snap.rss_bytes = sum(&m.rss_bytes);
    snap.up = sum("up");
    let label = |s: &Sample, l: &str| s.labels.get(l).cloned();
    for s in samples {
        if crate::grpc::read_bucket(&s.metric, &s.labels, s.value, &mut snap.grpc) {
            continue;
        }
        if s.metric == m.breaker_state && s.value == 1.0 {
            let dependency = label(s, "dependency").unwrap_or_else(|| "default".to_owned());
            snap.breakers.insert(dependency, label(s, "state").unwrap_or_else(|| "unknown".into()));
        }
        if s.metric == m.breaker_transitions {
            let key = |l: &str| label(s, l).unwrap_or_default();
            *snap.transitions.entry((key("dependency"), key("from"), key("to"))).or_default() +=
                s.value;
        }
    }
    snap
}

/// One instant query for every mapped series under the selector; the
/// answer split into one snapshot per `instance` label.
async fn query_prometheus(
    client: &reqwest::Client,
    source: &PrometheusSource,
    m: &MetricMapping,
    started: Instant,
) -> Result<Vec<(String, Snapshot)>, String> {
    let t = started.elapsed().as_secs_f64();
    let query = prometheus_query(m, &source.selector);
    let url = format!("{}/api/v1/query", source.url.trim_end_matches('/'));
    let answer = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("query={}", form_encode(&query)))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("cannot query {url}: {e}"))?;
    let status = answer.status();
    let body: serde_json::Value =
        answer.json().await.map_err(|e| format!("{url} answered HTTP {status}, not JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!(
            "{url} refused `{query}`: {} ({})",
            body["error"].as_str().unwrap_or("no message"),
            body["errorType"].as_str().unwrap_or("HTTP error")
        ));
    }
    Ok(split_by_instance(&body["data"]["result"], m, t))
}

/// `{__name__=~"a|b|...",SELECTOR}`.
fn prometheus_query(m: &MetricMapping, selector: &str) -> String {
    let grpc = crate::grpc::HISTOGRAMS.map(|(_, name)| format!("{name}_bucket"));
    let names: Vec<String> = m
        .names()
        .iter()
        .copied()
        .chain(["up"])
        .chain(grpc.iter().map(String::as_str))
        .map(regex_escape)
        .collect();
    let selector = selector.trim().trim_start_matches('{').trim_end_matches('}').trim();
    let extra = if selector.is_empty() { String::new() } else { format!(",{selector}") };
    format!("{{__name__=~\"{}\"{extra}}}", names.join("|"))
}

fn regex_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if !(c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            // A regex escape inside a PromQL string: `\\.`.
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `vector` result as snapshots, one per `instance` label.
fn split_by_instance(
    result: &serde_json::Value,
    m: &MetricMapping,
    t: f64,
) -> Vec<(String, Snapshot)> {
    let mut by_instance: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for series in result.as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(labels) = series["metric"].as_object() else { continue };
        let Some(value) = series["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let labels: BTreeMap<String, String> = labels
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect();
        let Some(metric) = labels.get("__name__").cloned() else { continue };
        let instance = labels.get("instance").cloned().unwrap_or_else(|| "unknown".to_owned());
        by_instance.entry(instance).or_default().push(Sample { metric, labels, value });
    }
    by_instance.into_iter().map(|(i, samples)| (i, snapshot_of(&samples, m, t))).collect()
}

fn scalar(v: &prometheus_parse::Value) -> Option<f64> {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => Some(*x),
        _ => None,
    }
}

fn not_closed(state: &str) -> bool {
    state != "closed"
}

fn summarise(mut w: ServiceWatch, snaps: &[Snapshot]) -> ServiceWatch {
    let (Some(first), Some(last)) = (snaps.first(), snaps.last()) else { return w };
    let lookups = |s: &Snapshot| -> Option<f64> {
        Some(s.cache_hits? + s.cache_misses.unwrap_or(0.0) + s.cache_errors.unwrap_or(0.0))
    };
    // Counters are summed over consecutive scrapes, so a restart of the
    // service between two scrapes (its counters back to 0) is an increase
    // of the new value, as PromQL's increase() reads it, not a drop.
    if lookups(first).is_some() && first.cache_hits.is_some() && lookups(last).is_some() {
        let (mut all, mut hits) = (0.0, 0.0);
        for pair in snaps.windows(2) {
            if let (Some(l0), Some(l1), Some(h0), Some(h1)) =
                (lookups(&pair[0]), lookups(&pair[1]), pair[0].cache_hits, pair[1].cache_hits)
            {
                all += increase(l0, l1);
                hits += increase(h0, h1);
            }
        }
        w.cache_lookups = all;
        if all > 0.0 {
            w.cache_hit_rate = Some((hits / all).clamp(0.0, 1.0));
        }
    }
    w.breakers_at_end = last.breakers.clone();
    w.breaker_open_longest = open_stretches(snaps);
    w.grpc = crate::grpc::summarise(&snaps.iter().map(|s| &s.grpc).collect::<Vec<_>>());
    let mut prev: Option<&Snapshot> = None;
    for (i, s) in snaps.iter().enumerate() {
        let utilisation = match (s.pool_in_use, s.pool_max) {
            (Some(used), Some(max)) if max > 0.0 => Some(used / max),
            _ => None,
        };
        let mut point = ServicePoint {
            t: s.t,
            pool_utilisation: utilisation,
            cache_hit_rate: None,
            cpu_cores: None,
            rss_bytes: s.rss_bytes,
            breakers_open: s.breakers.values().filter(|v| not_closed(v)).count(),
        };
        if let Some(p) = prev {
            if let (Some(l0), Some(l1), Some(h0), Some(h1)) =
                (lookups(p), lookups(s), p.cache_hits, s.cache_hits)
                && increase(l0, l1) > 0.0
            {
                point.cache_hit_rate = Some((increase(h0, h1) / increase(l0, l1)).clamp(0.0, 1.0));
            }
            point.cpu_cores = cpu_over_window(snaps, i);
            if let (Some(a), Some(b)) = (p.start_time, s.start_time)
                && (a - b).abs() > 0.5
            {
                w.restarts += 1;
            }
            if p.up == Some(1.0) && s.up == Some(0.0) {
                w.down += 1;
            }
            w.breaker_changes.extend(breaker_changes(p, s));
        }
        w.pool_utilisation_max = max_opt(w.pool_utilisation_max, point.pool_utilisation);
        w.cpu_cores_max = max_opt(w.cpu_cores_max, point.cpu_cores);
        w.rss_bytes_max = max_opt(w.rss_bytes_max, point.rss_bytes);
        w.series.push(point);
        prev = Some(s);
    }
    w
}

/// Longest not-closed stretch per breaker over the scrapes.
fn open_stretches(snaps: &[Snapshot]) -> BTreeMap<String, f64> {
    let mut since: BTreeMap<&str, f64> = BTreeMap::new();
    let mut longest: BTreeMap<String, f64> = BTreeMap::new();
    let Some(end) = snaps.last().map(|s| s.t) else { return longest };
    for s in snaps {
        for (dependency, state) in &s.breakers {
            if not_closed(state) {
                since.entry(dependency.as_str()).or_insert(s.t);
            } else if let Some(start) = since.remove(dependency.as_str()) {
                let e = longest.entry(dependency.clone()).or_insert(0.0);
                *e = e.max(s.t - start);
            }
        }
    }
    for (dependency, start) in since {
        let e = longest.entry(dependency.to_owned()).or_insert(0.0);
        *e = e.max(end - start);
    }
    longest
}

/// What a counter gained from `before` to `after`: a lower value means the
/// counter was reset (the process restarted) and counted `after` since.
fn increase(before: f64, after: f64) -> f64 {
    if after >= before { after - before } else { after }
}

/// Span over which CPU is differenced: a CPU-seconds counter advances in
/// coarse steps (clock ticks, or a runtime that publishes it every few
/// hundred ms), so a rate over one 1 s scrape alternates between 0 and a
/// spike that never happened.
const CPU_WINDOW_SECS: f64 = 5.0;

/// CPU cores busy over the window ending at scrape `i`: from the newest
/// scrape at least [`CPU_WINDOW_SECS`] earlier (the first one early in the
/// run, once 2 s apart), summing increases so a restart does not count
/// negative. `None` until the window has 2 s of scrapes.
fn cpu_over_window(snaps: &[Snapshot], i: usize) -> Option<f64> {
    let now = &snaps[i];
    now.cpu_seconds?;
    let start = (0..i).rev().find(|&j| now.t - snaps[j].t >= CPU_WINDOW_SECS).unwrap_or(0);
    let span = now.t - snaps[start].t;
    if span < 2.0 {
        return None;
    }
    let mut busy = 0.0;
    for pair in snaps[start..=i].windows(2) {
        busy += increase(pair[0].cpu_seconds?, pair[1].cpu_seconds?);
    }
    Some((busy / span).max(0.0))
}

/// Transitions between two scrapes: from the transitions counter when the
/// target has one (it catches flips between scrapes), else from the states.
fn breaker_changes(p: &Snapshot, s: &Snapshot) -> Vec<BreakerChange> {
    let mut out = Vec::new();
    if !s.transitions.is_empty() {
        for ((dependency, from, to), count) in &s.transitions {
            let before = p
                .transitions
                .get(&(dependency.clone(), from.clone(), to.clone()))
                .copied()
                .unwrap_or(0.0);
            for _ in 0..(count - before).max(0.0).round() as u64 {
                out.push(BreakerChange {
                    t: s.t,
                    dependency: dependency.clone(),
                    from: from.clone(),
                    to: to.clone(),
                });
            }
        }
        return out;
    }
    for (dependency, state) in &s.breakers {
        let before = p.breakers.get(dependency).cloned().unwrap_or_else(|| "closed".to_owned());
        if &before != state {
            out.push(BreakerChange {
                t: s.t,
                dependency: dependency.clone(),
                from: before,
                to: state.clone(),
            });
        }
    }
    out
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(t: f64, hits: f64, misses: f64, cpu: f64) -> Snapshot {
        Snapshot {
            t,
            cache_hits: Some(hits),
            cache_misses: Some(misses),
            cpu_seconds: Some(cpu),
            ..Snapshot::default()
        }
    }

    #[test]
    fn the_longest_open_stretch_of_each_breaker_is_measured() {
        let at = |t: f64, state: &str| Snapshot {
            t,
            breakers: [("redis".to_owned(), state.to_owned())].into_iter().collect(),
            ..Snapshot::default()
        };
        let snaps = [
            at(0.0, "closed"),
            at(1.0, "open"),
            at(71.0, "half_open"),
            at(72.0, "closed"),
            at(80.0, "open"),
            at(85.0, "open"),
        ];
        let longest = open_stretches(&snaps);
        assert_eq!(longest["redis"], 71.0);
    }

    #[test]
    fn a_counter_reset_between_scrapes_counts_the_new_value_not_a_drop() {
        // 90/100 hits, then the service restarts: its counters start again.
        let snaps =
            [snap(0.0, 0.0, 0.0, 0.0), snap(1.0, 90.0, 10.0, 0.5), snap(2.0, 9.0, 1.0, 0.1)];
        let w = summarise(ServiceWatch::default(), &snaps);
        assert_eq!(w.cache_lookups, 110.0);
        assert!((w.cache_hit_rate.unwrap() - 99.0 / 110.0).abs() < 1e-9, "{:?}", w.cache_hit_rate);
    }

    #[test]
    fn cpu_is_a_rate_over_a_window_not_one_coarse_step() {
        // A counter that advances 1.1 s every other 1 s scrape: 0.55 cores.
        let snaps: Vec<Snapshot> =
            (0..12).map(|i| snap(f64::from(i), 0.0, 0.0, 1.1 * f64::from(i / 2))).collect();
        let w = summarise(ServiceWatch::default(), &snaps);
        let cores: Vec<f64> = w.series.iter().filter_map(|p| p.cpu_cores).collect();
        assert!(cores.len() >= 8, "{cores:?}");
        for c in &cores[2..] {
            assert!((0.4..0.7).contains(c), "{cores:?}");
        }
        assert!(w.cpu_cores_max.unwrap() < 0.8, "{:?}", w.cpu_cores_max);
    }

    #[test]
    fn html_and_empty_answers_are_failed_scrapes_not_zero_series() {
        let html =
            check_exposition("http://x/metrics", "text/html", "<html><body>hi</body></html>");
        assert!(html.unwrap_err().contains("answered HTML"));
        let sneaky = check_exposition("http://x/metrics", "text/plain", "<!DOCTYPE html>");
        assert!(sneaky.is_err());
        let empty = check_exposition("http://x/metrics", "text/plain", "\n# just a comment\n");
        assert!(empty.unwrap_err().contains("no Prometheus series"));
        assert!(
            check_exposition("http://x/metrics", "text/plain; version=0.0.4", "up 1\n").is_ok()
        );
    }

    const SCRAPE: &str = "# TYPE cache_hits_total counter\ncache_hits_total 90\ncache_misses_total 10\n\
        db_connections_in_use 5\ndb_connections_max 20\n\
        circuit_breaker_state{dependency=\"cache\",state=\"closed\"} 0\n\
        circuit_breaker_state{dependency=\"cache\",state=\"open\"} 1\n\
        process_start_time_seconds 1700000000\nprocess_cpu_seconds_total 2\n";

    #[test]
    fn snapshots_read_the_mapped_series() {
        let s = parse_snapshot(SCRAPE, &MetricMapping::default(), 1.0);
        assert_eq!((s.cache_hits, s.pool_in_use, s.pool_max), (Some(90.0), Some(5.0), Some(20.0)));
        assert_eq!(s.breakers.get("cache").map(String::as_str), Some("open"));
    }

    #[test]
    fn summaries_compute_rates_changes_and_restarts() {
        let m = MetricMapping::default();
        let a = parse_snapshot(SCRAPE, &m, 0.0);
        let b = parse_snapshot(
            &SCRAPE
                .replace("hits_total 90", "hits_total 170")
                .replace("misses_total 10", "misses_total 30")
                .replace("state=\"closed\"} 0", "state=\"closed\"} 1")
                .replace("state=\"open\"} 1", "state=\"open\"} 0")
                .replace("1700000000", "1700000100")
                .replace("total 2\n", "total 3\n"),
            &m,
            2.0,
        );
        let w = summarise(ServiceWatch::default(), &[a, b]);
        assert_eq!(w.cache_hit_rate, Some(0.8));
        assert_eq!(w.restarts, 1);
        assert_eq!(w.breaker_changes.len(), 1);
        assert_eq!(
            (w.breaker_changes[0].from.as_str(), w.breaker_changes[0].to.as_str()),
            ("open", "closed")
        );
        assert_eq!(w.series[1].cpu_cores, Some(0.5));
        assert_eq!(w.pool_utilisation_max, Some(0.25));
    }

    #[test]
    fn prometheus_answers_split_by_instance() {
        let m = MetricMapping::default();
        let q = prometheus_query(&m, r#"{job="marketplace"}"#);
        assert!(q.starts_with(r#"{__name__=~"cache_hits_total|cache_misses_total|"#), "{q}");
        assert!(
            q.ends_with(r#"|up|grpc_client_handling_seconds_bucket|grpc_server_handling_seconds_bucket",job="marketplace"}"#),
            "{q}"
        );
        assert_eq!(prometheus_query(&m, "").matches('{').count(), 1);
        let answer = serde_json::json!([
            {"metric": {"__name__": "cache_hits_total", "instance": "a:1"}, "value": [1.0, "80"]},
            {"metric": {"__name__": "cache_misses_total", "instance": "a:1"}, "value": [1.0, "20"]},
            {"metric": {"__name__": "circuit_breaker_state", "instance": "b:2", "dependency": "db", "state": "open"}, "value": [1.0, "1"]},
            {"metric": {"__name__": "db_connections_in_use"}, "value": [1.0, "NaN-ish"]},
            {"metric": "garbage"}
        ]);
        let snaps = split_by_instance(&answer, &m, 3.0);
        assert_eq!(snaps.len(), 2);
        assert_eq!(snaps[0].0, "a:1");
        assert_eq!((snaps[0].1.cache_hits, snaps[0].1.cache_misses), (Some(80.0), Some(20.0)));
        assert_eq!(snaps[1].1.breakers.get("db").map(String::as_str), Some("open"));
    }

    #[test]
    fn prometheus_answers_carry_the_grpc_buckets() {
        let m = MetricMapping::default();
        let at = |t: f64, fast: &str, all: &str| {
            let bucket = |le: &str, v: &str| {
                serde_json::json!({"metric": {
                "__name__": "grpc_server_handling_seconds_bucket", "instance": "c:1",
                "grpc_service": "pkg.Catalog", "grpc_method": "GetNft", "grpc_code": "OK", "le": le},
                "value": [t, v]})
            };
            let answer = serde_json::json!([bucket("0.005", fast), bucket("+Inf", all)]);
            split_by_instance(&answer, &m, t).remove(0).1
        };
        let w = summarise(ServiceWatch::default(), &[at(0.0, "10", "10"), at(1.0, "110", "110")]);
        assert_eq!(w.grpc.len(), 1);
        assert_eq!((w.grpc[0].label().as_str(), w.grpc[0].calls), ("server Catalog/GetNft", 100.0));
        assert!(w.grpc[0].p95_seconds.is_some_and(|p| p <= 0.005));
    }

    #[test]
    fn prometheus_up_going_to_zero_counts_as_down() {
        let m = MetricMapping::default();
        let at = |t: f64, up: &str| {
            let answer = serde_json::json!([
                {"metric": {"__name__": "up", "instance": "a:1"}, "value": [t, up]},
                {"metric": {"__name__": "process_start_time_seconds", "instance": "a:1"}, "value": [t, "100"]}
            ]);
            split_by_instance(&answer, &m, t).remove(0).1
        };
        let w = summarise(ServiceWatch::default(), &[at(0.0, "1"), at(1.0, "0"), at(2.0, "1")]);
        assert_eq!((w.down, w.restarts), (1, 0));
    }

    #[test]
    fn mappings_from_files_name_the_bad_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, "cache_hits: redis_keyspace_hits_total\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let m = MetricMapping::from_file(&good).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.cache_hits, "redis_keyspace_hits_total");
        assert_eq!(m.pool_max, MetricMapping::default().pool_max);
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "cache_hits: a\ncache_hit: b\n").unwrap_or_else(|e| panic!("{e}"));
        let err = MetricMapping::from_file(&bad).unwrap_err();
        assert!(
            err.contains("bad.yaml") && err.contains("cache_hit") && err.contains('2'),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_not_a_panic() {
        for text in
            ["", "{{{", "x{a=\"b\"} notanumber", "# TYPE x histogram\nx_bucket{le=\"+Inf\"} 3\n"]
        {
            let _ = parse_snapshot(text, &MetricMapping::default(), 0.0);
        }
    }
}
