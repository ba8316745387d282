//! Synthetic rule files for benchmarks (`cargo xtask bench alert-linter`).

use std::fmt::Write as _;

const SERVICES: &[&str] = &["auth", "user", "media", "gateway", "indexer"];

/// A valid rules file (promtool accepts it) with `n` alerting rules in
/// groups of 50, cycling through realistic shapes: error ratios, latency
/// quantiles, saturation, absence, breakers, lag.
pub fn synthetic_rules(n: usize) -> String {
    let mut out = String::from("groups:\n");
    for i in 0..n {
        if i % 50 == 0 {
            let _ = writeln!(out, "  - name: synthetic-{}\n    interval: 10s\n    rules:", i / 50);
        }
        let service = SERVICES[i % SERVICES.len()];
        let threshold = 1 + i % 20;
        let (expr, severity, for_) = match i % 6 {
            0 => (
                format!(
                    "sum by (job) (rate(http_requests_total{{job=\"{service}\", status=~\"5..\"}}[40s])) / sum by (job) (rate(http_requests_total{{job=\"{service}\"}}[40s])) > 0.{threshold:02}"
                ),
                "critical",
                "10s",
            ),
            1 => (
                format!(
                    "histogram_quantile(0.95, sum by (le, job) (rate(http_request_duration_seconds_bucket{{job=\"{service}\"}}[5m]))) > {}",
                    0.1 * threshold as f64
                ),
                "warning",
                "5m",
            ),
            2 => (
                format!(
                    "db_connections_in_use{{job=\"{service}\"}} / db_connections_max{{job=\"{service}\"}} > 0.{}",
                    80 + threshold % 20
                ),
                "warning",
                "1m",
            ),
            3 => (format!("absent(up{{job=\"{service}\"}})"), "warning", "2m"),
            4 => (
                format!(
                    "max by (job, dependency) (circuit_breaker_state{{job=\"{service}\", state=\"open\"}}) == 1"
                ),
                "warning",
                "2m",
            ),
            _ => (
                format!(
                    "increase(cache_misses_total{{job=\"{service}\"}}[10m]) > {}",
                    threshold * 100
                ),
                "info",
                "15m",
            ),
        };
        let _ = writeln!(out, "      - alert: Synthetic{i}_{service}");
        let _ = writeln!(out, "        expr: '{expr}'");
        let _ = writeln!(out, "        for: {for_}");
        let _ = writeln!(
            out,
            "        labels:\n          severity: {severity}\n          team: sre-{}",
            i % 7
        );
        let _ = writeln!(out, "        annotations:");
        let _ = writeln!(
            out,
            "          summary: 'synthetic alert {i} on {{{{ $labels.job }}}} at {{{{ $value | humanize }}}}'"
        );
        let _ = writeln!(
            out,
            "          runbook_url: https://runbooks.example.com/synthetic/{}",
            i % 6
        );
    }
    out
}
