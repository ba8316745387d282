//! Recording samples during a run ([`Recorder`]) and the statistics of a
//! finished run ([`RunStats`]): per-transaction and overall HDR histograms,
//! errors by kind and status, and a per-second series. `RunStats` is what
//! shards write and `load-tester merge` adds up, exactly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::histogram::LatencyHistogram;

/// Index of a transaction in [`Recorder::new`]'s name list.
pub type TransactionId = usize;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered as expected, with this HTTP status.
    Ok(u16),
    /// Failed: the status if one came back, and the kind of error
    /// (`status 500`, `timeout`, `connect`, `graphql: ...`).
    Failed {
        /// HTTP status, if the server answered.
        status: Option<u16>,
        /// What went wrong, short and stable enough to count by.
        kind: String,
    },
}

/// One measured request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Which transaction.
    pub transaction: TransactionId,
    /// Latency as reported: from the intended start in the open model
    /// (coordinated-omission corrected), from the send otherwise.
    pub latency: Duration,
    /// Time from the actual send to the last byte of the answer.
    pub service_time: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

#[derive(Debug, Default)]
struct TransactionAccumulator {
    stats: TransactionStats,
}

#[derive(Debug, Default)]
struct Interval {
    latency: LatencyHistogram,
    requests: u64,
    errors: u64,
}

#[derive(Debug)]
struct Shard {
    transactions: Vec<TransactionAccumulator>,
    interval: Interval,
}

/// Running totals kept by [`Recorder::tick`], for progress and `--abort-on-fail`.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Requests so far.
    pub requests: u64,
    /// Failed requests so far.
    pub errors: u64,
    /// Every latency so far.
    pub latency: LatencyHistogram,
    /// The last complete second.
    pub last_second: Option<SecondStats>,
    /// Seconds since the recorder started.
    pub elapsed: Duration,
}

/// Collects samples from every user with little contention: users write to
/// one of a few mutex-guarded shards; a collector calls [`tick`](Self::tick)
/// once a second to close the current second of the series.
#[derive(Debug)]
pub struct Recorder {
    names: Vec<String>,
    shards: Vec<Mutex<Shard>>,
    corrected: bool,
    started: Instant,
    series: Mutex<(Vec<SecondStats>, Totals)>,
    active_users: std::sync::atomic::AtomicU64,
    late_arrivals: std::sync::atomic::AtomicU64,
    late_max_micros: std::sync::atomic::AtomicU64,
}

/// A user counted as running while this lives (its first transaction until
/// goose stops it: the session data holding it is dropped).
#[derive(Debug)]
pub struct Presence(Arc<Recorder>);

impl Presence {
    /// Counts one more running user.
    pub fn new(recorder: &Arc<Recorder>) -> Presence {
        recorder.active_users.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Presence(recorder.clone())
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.0.active_users.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Recorder {
    /// A recorder for the transactions `names`. With `corrected`, service
    /// times are kept apart from the (corrected) latencies.
    pub fn new(names: Vec<String>, corrected: bool) -> Recorder {
        let shard_count = std::thread::available_parallelism().map_or(4, |n| n.get()).clamp(2, 8);
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    transactions: names.iter().map(|_| TransactionAccumulator::default()).collect(),
                    interval: Interval::default(),
                })
            })
            .collect();
        Recorder {
            names,
            shards,
            corrected,
            started: Instant::now(),
            series: Mutex::new((Vec::new(), Totals::default())),
            active_users: std::sync::atomic::AtomicU64::new(0),
            late_arrivals: std::sync::atomic::AtomicU64::new(0),
            late_max_micros: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Open model: an arrival no user was free to start when it was due
    /// (`--users` capped the requests in flight), `by` after its time. k6
    /// drops such iterations; here they start late, and their latency
    /// counts from when they were due.
    pub fn late_arrival(&self, by: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.late_arrivals.fetch_add(1, Relaxed);
        self.late_max_micros.fetch_max(u64::try_from(by.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The transaction names, indexed by [`TransactionId`].
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Records a sample; `user` picks the shard.
    pub fn record(&self, user: usize, sample: &Sample) {
        let Some(shard) = self.shards.get(user % self.shards.len()) else { return };
        let mut shard = lock(shard);
        let failed = matches!(sample.outcome, Outcome::Failed { .. });
        shard.interval.latency.record(sample.latency);
        shard.interval.requests += 1;
        shard.interval.errors += u64::from(failed);
        let Some(acc) = shard.transactions.get_mut(sample.transaction) else { return };
        let stats = &mut acc.stats;
        stats.requests += 1;
        stats.latency.record(sample.latency);
        if self.corrected {
            stats
                .service_time
                .get_or_insert_with(LatencyHistogram::new)
                .record(sample.service_time);
        }
        let status = match &sample.outcome {
            Outcome::Ok(status) => Some(*status),
            Outcome::Failed { status, kind } => {
                stats.errors += 1;
                *stats.errors_by_kind.entry(kind.clone()).or_default() += 1;
                *status
            }
        };
        let status = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
        *stats.statuses.entry(status).or_default() += 1;
    }

    /// Closes the current second: appends it to the series and returns the totals.
    pub fn tick(&self) -> Totals {
        let mut second = Interval::default();
        for shard in &self.shards {
            let interval = std::mem::take(&mut lock(shard).interval);
            second.latency.merge(&interval.latency);
            second.requests += interval.requests;
            second.errors += interval.errors;
        }
        let mut guard = lock(&self.series);
        let (series, totals) = &mut *guard;
        let mut point = SecondStats::new(
            series.len() as u64 + 1,
            second.requests,
            second.errors,
            &second.latency,
        );
        point.users = self.active_users.load(std::sync::atomic::Ordering::Relaxed);
        totals.requests += second.requests;
        totals.errors += second.errors;
        totals.latency.merge(&second.latency);
        totals.last_second = Some(point.clone());
        totals.elapsed = self.started.elapsed();
        series.push(point);
        totals.clone()
    }

    /// The statistics of the run so far, measured over `duration`. Call
    /// [`tick`](Self::tick) once more first so the series holds the last second.
    pub fn finish(&self, duration: Duration) -> RunStats {
        let mut transactions: BTreeMap<String, TransactionStats> = BTreeMap::new();
        for shard in &self.shards {
            let shard = lock(shard);
            for (name, acc) in self.names.iter().zip(&shard.transactions) {
                transactions.entry(name.clone()).or_default().merge(&acc.stats);
            }
        }
        transactions.retain(|_, t| t.requests > 0);
        let series = lock(&self.series).0.clone();
        use std::sync::atomic::Ordering::Relaxed;
        RunStats {
            duration_secs: duration.as_secs_f64(),
            transactions,
            series,
            late_arrivals: self.late_arrivals.load(Relaxed),
            late_arrival_max_ms: self.late_max_micros.load(Relaxed) as f64 / 1000.0,
        }
    }
}

/// JSON has no NaN: serde_json writes it as null (a second without
/// requests has no percentile). Read null back as NaN.
fn number_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Everything measured for one transaction (or all of them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransactionStats {
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed (unexpected status, transport error, GraphQL error, ...).
    pub errors: u64,
    /// Failed requests by kind, e.g. `status 500`, `timeout`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Requests by HTTP status (`none` when no answer came).
    pub statuses: BTreeMap<String, u64>,
    /// Latencies as reported (corrected in the open model).
    pub latency: LatencyHistogram,
    /// Open model only: send-to-last-byte times, without the correction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_time: Option<LatencyHistogram>,
}

impl TransactionStats {
    /// Adds `other` to this one.
    pub fn merge(&mut self, other: &TransactionStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (k, v) in &other.errors_by_kind {
            *self.errors_by_kind.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.statuses {
            *self.statuses.entry(k.clone()).or_default() += v;
        }
        self.latency.merge(&other.latency);
        if let Some(service) = &other.service_time {
            self.service_time.get_or_insert_with(LatencyHistogram::new).merge(service);
        }
    }

    /// The numbers people read, over a run of `duration_secs`.
    pub fn summary(&self, duration_secs: f64) -> Summary {
        let h = &self.latency;
        Summary {
            requests: self.requests,
            errors: self.errors,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            rps: if duration_secs > 0.0 { self.requests as f64 / duration_secs } else { 0.0 },
            p50_ms: h.percentile_ms(50.0),
            p90_ms: h.percentile_ms(90.0),
            p95_ms: h.percentile_ms(95.0),
            p99_ms: h.percentile_ms(99.0),
            p999_ms: h.percentile_ms(99.9),
            max_ms: if h.is_empty() { f64::NAN } else { h.max_us() as f64 / 1000.0 },
            mean_ms: h.mean_ms(),
        }
    }
}

/// Percentiles, throughput and errors of a transaction or of the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests sent.
    pub requests: u64,
    /// Requests failed.
    pub errors: u64,
    /// errors / requests.
    #[serde(deserialize_with = "number_or_nan")]
    pub error_rate: f64,
    /// Requests per second over the run.
    #[serde(deserialize_with = "number_or_nan")]
    pub rps: f64,
    /// Median latency.
    #[serde(deserialize_with = "number_or_nan")]
    pub p50_ms: f64,
    /// 90th percentile.
    #[serde(deserialize_with = "number_or_nan")]
    pub p90_ms: f64,
    /// 95th percentile.
    #[serde(deserialize_with = "number_or_nan")]
    pub p95_ms: f64,
    /// 99th percentile.
    #[serde(deserialize_with = "number_or_nan")]
    pub p99_ms: f64,
    /// 99.9th percentile.
    #[serde(deserialize_with = "number_or_nan")]
    pub p999_ms: f64,
    /// Largest latency.
    #[serde(deserialize_with = "number_or_nan")]
    pub max_ms: f64,
    /// Mean latency.
    #[serde(deserialize_with = "number_or_nan")]
    pub mean_ms: f64,
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondStats {
    /// 1 for the first second of the run.
    pub second: u64,
    /// Requests completed in this second.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Median latency of this second (ms; null when no request completed).
    #[serde(deserialize_with = "number_or_nan")]
    pub p50_ms: f64,
    /// 95th percentile of this second.
    #[serde(deserialize_with = "number_or_nan")]
    pub p95_ms: f64,
    /// 99th percentile of this second.
    #[serde(deserialize_with = "number_or_nan")]
    pub p99_ms: f64,
    /// The second's latencies, so merged series keep exact percentiles.
    pub latency: LatencyHistogram,
    /// Users running at the end of this second (measured, not planned:
    /// users goose started and has not stopped).
    #[serde(default)]
    pub users: u64,
}

impl SecondStats {
    fn new(second: u64, requests: u64, errors: u64, latency: &LatencyHistogram) -> SecondStats {
        SecondStats {
            second,
            requests,
            errors,
            p50_ms: latency.percentile_ms(50.0),
            p95_ms: latency.percentile_ms(95.0),
            p99_ms: latency.percentile_ms(99.0),
            latency: latency.clone(),
            users: 0,
        }
    }
}

/// The statistics of a finished run (or of merged shards).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Length of the measured window in seconds (the longest shard's, when merged).
    pub duration_secs: f64,
    /// By transaction name.
    pub transactions: BTreeMap<String, TransactionStats>,
    /// One point per second.
    pub series: Vec<SecondStats>,
    /// Open model: arrivals that started late because every user was busy
    /// (what k6 reports as dropped iterations).
    #[serde(default)]
    pub late_arrivals: u64,
    /// The latest of them, ms after it was due.
    #[serde(default)]
    pub late_arrival_max_ms: f64,
}

impl RunStats {
    /// The most users running at once (sampled each second).
    pub fn users_peak(&self) -> u64 {
        self.series.iter().map(|p| p.users).max().unwrap_or(0)
    }

    /// Users running on average over the run's seconds (time-weighted).
    pub fn users_mean(&self) -> f64 {
        if self.series.is_empty() {
            return 0.0;
        }
        self.series.iter().map(|p| p.users as f64).sum::<f64>() / self.series.len() as f64
    }

    /// Seconds during which at least `users` users were running.
    pub fn seconds_with_users(&self, users: f64) -> f64 {
        self.series.iter().filter(|p| p.users as f64 >= users).count() as f64
    }

    /// Every transaction together.
    pub fn overall(&self) -> TransactionStats {
        let mut all = TransactionStats::default();
        for t in self.transactions.values() {
            all.merge(t);
        }
        all
    }

    /// Adds a shard's statistics: histograms and counts add up, the series
    /// adds up second by second, the duration is the longer one (shards run
    /// side by side).
    pub fn merge(&mut self, other: &RunStats) {
        self.duration_secs = self.duration_secs.max(other.duration_secs);
        self.late_arrivals += other.late_arrivals;
        self.late_arrival_max_ms = self.late_arrival_max_ms.max(other.late_arrival_max_ms);
        for (name, t) in &other.transactions {
            self.transactions.entry(name.clone()).or_default().merge(t);
        }
        for point in &other.series {
            match self.series.iter_mut().find(|p| p.second == point.second) {
                Some(mine) => {
                    let mut latency = mine.latency.clone();
                    latency.merge(&point.latency);
                    let users = mine.users + point.users;
                    *mine = SecondStats::new(
                        mine.second,
                        mine.requests + point.requests,
                        mine.errors + point.errors,
                        &latency,
                    );
                    mine.users = users;
                }
                None => self.series.push(point.clone()),
            }
        }
        self.series.sort_by_key(|p| p.second);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tx: usize, ms: u64, outcome: Outcome) -> Sample {
        let d = Duration::from_millis(ms);
        Sample { transaction: tx, latency: d, service_time: d, outcome }
    }

    #[test]
    fn recorder_counts_errors_by_kind_and_status() {
        let recorder = Recorder::new(vec!["a".into(), "b".into()], false);
        recorder.record(0, &sample(0, 10, Outcome::Ok(200)));
        recorder.record(
            1,
            &sample(0, 20, Outcome::Failed { status: Some(500), kind: "status 500".into() }),
        );
        recorder
            .record(2, &sample(1, 30, Outcome::Failed { status: None, kind: "timeout".into() }));
        let totals = recorder.tick();
        assert_eq!((totals.requests, totals.errors), (3, 2));
        let stats = recorder.finish(Duration::from_secs(1));
        let a = &stats.transactions["a"];
        assert_eq!((a.requests, a.errors, a.statuses["500"]), (2, 1, 1));
        assert_eq!(stats.transactions["b"].errors_by_kind["timeout"], 1);
        let overall = stats.overall().summary(stats.duration_secs);
        assert_eq!((overall.requests, overall.rps), (3, 3.0));
        assert!((overall.max_ms - 30.0).abs() < 0.1);
        assert_eq!(stats.series.len(), 1);
    }
}
