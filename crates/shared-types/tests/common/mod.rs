//! The fixed report the snapshot and round-trip tests share.

use std::collections::BTreeMap;

use serde_json::json;
use shared_types::{Check, Measurement, Report, SCHEMA_VERSION, Timestamp};

/// A report with every verdict, details that need escaping in every output
/// format (`<`, `&`, `|`, quotes, newlines, a terminal escape sequence), and
/// measurements. Timestamps are fixed so snapshots are stable.
pub fn sample_report() -> Report {
    let mut data = BTreeMap::new();
    data.insert(
        "latency_histogram_ms".to_owned(),
        json!({ "bounds": [50, 100, 250, 500], "counts": [120, 5400, 1800, 80] }),
    );
    Report {
        schema_version: SCHEMA_VERSION.to_owned(),
        tool: "load-tester".to_owned(),
        version: "0.1.0".to_owned(),
        target: "https://api.example.com/graphql?token=[redacted]".to_owned(),
        started_at: Timestamp::from_unix_millis(1_796_044_105_123),
        finished_at: Some(Timestamp::from_unix_millis(1_796_044_198_573)),
        checks: vec![
            Check::pass("p95-latency", "p95 < 500ms", "412 ms"),
            Check::fail("error-rate", "error_rate < 0.1%", "0.5 %").with_detail(
                "37 of 7400 requests failed: <html> 502 Bad Gateway & \"retry\" | 'later'\n\
                 first failure at 13:09:02",
            ),
            Check::error(
                "db-pool",
                "pool_utilisation <= 0.8",
                "cannot connect to postgres at 127.0.0.1:5433 (connection refused): \
                 server said \u{1b}[2J<gone>",
            ),
            Check::skipped("ws-latency", "ws_p95 < 200ms", "no websocket endpoint configured"),
            Check::pass("cache-hit-rate", "hit_rate > 80%", "93.1 %"),
        ],
        measurements: vec![
            Measurement::new("requests_total", 7400.0, ""),
            Measurement::new("latency_p95", 412.3, "ms"),
            Measurement::new("throughput", 79.186, "req/s"),
            Measurement::new("error_rate", 0.5, "%"),
        ],
        data,
    }
}
