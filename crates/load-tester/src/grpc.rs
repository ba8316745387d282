//! gRPC latency per method from the services' histograms, as
//! go-grpc-prometheus (and the sandbox) export them:
//! `grpc_client_handling_seconds` and `grpc_server_handling_seconds`
//! `{grpc_type, grpc_service, grpc_method, grpc_code}`. The run reports the
//! calls, the failed calls (any code but OK) and the p50/p95 each method took
//! during the run, computed from the bucket increases the way PromQL's
//! `histogram_quantile` does (linear within a bucket).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The histogram series read, and which side of the call each one times.
pub const HISTOGRAMS: [(&str, &str); 2] =
    [("client", "grpc_client_handling_seconds"), ("server", "grpc_server_handling_seconds")];

/// One method's calls during the run, as one service saw them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpcMethod {
    /// `client` (the service called it) or `server` (the service served it).
    pub side: String,
    /// `grpc_service`, e.g. `postlaunch.marketplace.v1.Catalog`.
    pub service: String,
    /// `grpc_method`, e.g. `GetCollection`.
    pub method: String,
    /// Calls completed during the run.
    pub calls: f64,
    /// Calls that ended with a code other than OK.
    pub errors: f64,
    /// Median duration, seconds (bucket-interpolated).
    pub p50_seconds: Option<f64>,
    /// 95th percentile duration, seconds (bucket-interpolated).
    pub p95_seconds: Option<f64>,
}

impl GrpcMethod {
    /// `client Catalog/GetCollection`: the side and the service's last name.
    pub fn label(&self) -> String {
        let service = self.service.rsplit('.').next().unwrap_or(&self.service);
        format!("{} {service}/{}", self.side, self.method)
    }
}

/// (side, service, method).
pub(crate) type Key = (String, String, String);

/// Cumulative bucket counts of one method at one scrape, summed over codes,
/// and the count of the calls that did not end OK.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counts {
    /// (upper bound, cumulative count), by bound.
    buckets: Vec<(f64, f64)>,
    failed: f64,
}

impl Counts {
    fn add(&mut self, le: f64, value: f64, ok: bool) {
        match self.buckets.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, count)) => *count += value,
            None => {
                self.buckets.push((le, value));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
        if !ok && le.is_infinite() {
            self.failed += value;
        }
    }

    fn total(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, count)| *count)
    }
}

/// Reads one `<histogram>_bucket` sample into `into`; false when it is not one of [`HISTOGRAMS`].
pub(crate) fn read_bucket(
    metric: &str,
    labels: &BTreeMap<String, String>,
    value: f64,
    into: &mut BTreeMap<Key, Counts>,
) -> bool {
    let Some(base) = metric.strip_suffix("_bucket") else { return false };
    let Some((side, _)) = HISTOGRAMS.iter().find(|(_, name)| *name == base) else { return false };
    let Some(le) = labels.get("le").and_then(|le| parse_bound(le)) else { return false };
    let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
    let ok = labels.get("grpc_code").is_none_or(|code| code == "OK");
    into.entry(((*side).to_owned(), label("grpc_service"), label("grpc_method")))
        .or_default()
        .add(le, value, ok);
    true
}

fn parse_bound(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

/// What a counter gained: a lower value means it was reset (a restart).
fn increase(before: f64, after: f64) -> f64 {
    if after >= before { after - before } else { after }
}

/// The methods' calls over a run: the bucket increases between consecutive
/// scrapes, summed (a restart between two scrapes counts from zero).
pub(crate) fn summarise(scrapes: &[&BTreeMap<Key, Counts>]) -> Vec<GrpcMethod> {
    let mut gained: BTreeMap<Key, Counts> = BTreeMap::new();
    for pair in scrapes.windows(2) {
        for (key, now) in pair[1] {
            let before = pair[0].get(key);
            let sum = gained.entry(key.clone()).or_default();
            for (bound, count) in &now.buckets {
                let was = before
                    .and_then(|b| b.buckets.iter().find(|(x, _)| x == bound))
                    .map_or(0.0, |(_, c)| *c);
                sum.add(*bound, increase(was, *count), true);
            }
            sum.failed += increase(before.map_or(0.0, |b| b.failed), now.failed);
        }
    }
    gained
        .into_iter()
        .filter(|(_, counts)| counts.total() > 0.0)
        .map(|((side, service, method), counts)| GrpcMethod {
            side,
            service,
            method,
            calls: counts.total(),
            errors: counts.failed,
            p50_seconds: quantile(&counts.buckets, 0.5),
            p95_seconds: quantile(&counts.buckets, 0.95),
        })
        .collect()
}

/// `histogram_quantile` over cumulative buckets: linear within the bucket
/// holding the rank; the highest finite bound when it falls in `+Inf`.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let share = if within > 0.0 { (rank - lower.1) / within } else { 1.0 };
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(rows: &[(&str, &str, &str, f64)]) -> BTreeMap<Key, Counts> {
        let mut out = BTreeMap::new();
        for (method, code, le, value) in rows {
            let labels: BTreeMap<String, String> = [
                ("grpc_service", "pkg.Catalog"),
                ("grpc_method", method),
                ("grpc_code", code),
                ("le", le),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), (*v).to_owned()))
            .collect();
            assert!(read_bucket("grpc_client_handling_seconds_bucket", &labels, *value, &mut out));
        }
        out
    }

    #[test]
    fn quantiles_come_from_the_increase_during_the_run_summed_over_codes() {
        let before = scrape(&[
            ("Get", "OK", "0.01", 100.0),
            ("Get", "OK", "0.1", 100.0),
            ("Get", "OK", "+Inf", 100.0),
        ]);
        let after = scrape(&[
            ("Get", "OK", "0.01", 190.0),
            ("Get", "OK", "0.1", 200.0),
            ("Get", "OK", "+Inf", 200.0),
            ("Get", "Unavailable", "0.01", 0.0),
            ("Get", "Unavailable", "0.1", 0.0),
            ("Get", "Unavailable", "+Inf", 10.0),
        ]);
        let methods = summarise(&[&before, &after]);
        assert_eq!(methods.len(), 1);
        let get = &methods[0];
        assert_eq!((get.calls, get.errors), (110.0, 10.0));
        assert_eq!(get.label(), "client Catalog/Get");
        // 90 of 110 under 10 ms: the median is inside the first bucket.
        let p50 = get.p50_seconds.unwrap();
        assert!((p50 - 0.01 * 55.0 / 90.0).abs() < 1e-9, "{p50}");
        // Rank 104.5 falls in +Inf (only 100 under 100 ms): the highest finite bound.
        assert_eq!(get.p95_seconds, Some(0.1));
    }

    #[test]
    fn a_restart_counts_from_zero_and_idle_methods_are_left_out() {
        let before = scrape(&[("Get", "OK", "+Inf", 500.0), ("Idle", "OK", "+Inf", 7.0)]);
        let after = scrape(&[("Get", "OK", "+Inf", 20.0), ("Idle", "OK", "+Inf", 7.0)]);
        let methods = summarise(&[&before, &after]);
        assert_eq!(methods.len(), 1);
        assert_eq!(methods[0].calls, 20.0);
    }

    #[test]
    fn other_series_and_bad_bounds_are_not_read() {
        let mut out = BTreeMap::new();
        let labels: BTreeMap<String, String> = [("le".to_owned(), "abc".to_owned())].into();
        assert!(!read_bucket("http_request_duration_seconds_bucket", &labels, 1.0, &mut out));
        assert!(!read_bucket("grpc_server_handling_seconds_bucket", &labels, 1.0, &mut out));
        assert!(out.is_empty());
    }
}
