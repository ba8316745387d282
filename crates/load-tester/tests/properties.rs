//! Property tests: histograms and run statistics merge exactly (shards add up
//! to one run), survive JSON, and the scenario parser never panics.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use load_tester::histogram::LatencyHistogram;
use load_tester::scenario::ScenarioPlan;
use load_tester::stats::{RunStats, TransactionStats};
use proptest::prelude::*;

fn histogram(samples: &[u64]) -> LatencyHistogram {
    let mut h = LatencyHistogram::new();
    for &us in samples {
        h.record_us(us);
    }
    h
}

fn stats(samples: &[u64], errors: u64, seconds: &[u64]) -> RunStats {
    let tx = TransactionStats {
        requests: samples.len() as u64,
        errors,
        latency: histogram(samples),
        ..Default::default()
    };
    let series = seconds
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let h = histogram(&samples[..(*n as usize).min(samples.len())]);
            serde_json::from_value(serde_json::json!({
                "second": i as u64 + 1, "requests": n, "errors": 0,
                "p50_ms": h.percentile_ms(50.0), "p95_ms": h.percentile_ms(95.0), "p99_ms": h.percentile_ms(99.0),
                "latency": h
            }))
            .unwrap()
        })
        .collect();
    RunStats {
        duration_secs: seconds.len() as f64,
        transactions: BTreeMap::from([("t".to_owned(), tx)]),
        series,
        ..RunStats::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn merged_histograms_equal_the_histogram_of_all_samples(
        a in prop::collection::vec(1u64..120_000_000, 0..300),
        b in prop::collection::vec(1u64..120_000_000, 0..300),
    ) {
        let mut merged = histogram(&a);
        merged.merge(&histogram(&b));
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(&merged, &histogram(&all));
        let back: LatencyHistogram = serde_json::from_str(&serde_json::to_string(&merged).unwrap()).unwrap();
        prop_assert_eq!(back, merged);
    }

    #[test]
    fn shard_statistics_merge_through_json_into_one_runs(
        a in prop::collection::vec(1u64..5_000_000, 1..200),
        b in prop::collection::vec(1u64..5_000_000, 1..200),
        sa in prop::collection::vec(0u64..50, 1..5),
        sb in prop::collection::vec(0u64..50, 1..5),
    ) {
        let (x, y) = (stats(&a, 1, &sa), stats(&b, 2, &sb));
        let through_json = |s: &RunStats| -> RunStats { serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap() };
        let mut merged = through_json(&x);
        merged.merge(&through_json(&y));
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        let overall = merged.overall();
        prop_assert_eq!(&overall.latency, &histogram(&all));
        prop_assert_eq!(overall.requests, (a.len() + b.len()) as u64);
        prop_assert_eq!(overall.errors, 3);
        prop_assert_eq!(merged.series.len(), sa.len().max(sb.len()));
        let second_one: u64 = merged.series[0].requests;
        prop_assert_eq!(second_one, sa[0] + sb[0]);
        // Merging is order-independent.
        let mut other = through_json(&y);
        other.merge(&through_json(&x));
        prop_assert_eq!(other.overall(), merged.overall());
    }

    #[test]
    fn the_scenario_parser_never_panics(text in "[ -~\n]{0,300}") {
        let _ = ScenarioPlan::from_yaml(&text, "fuzz.yaml", Path::new("."), None);
    }

    #[test]
    fn scenario_errors_always_name_the_file_and_a_line(key in "[a-z]{1,8}", value in "[a-z0-9]{1,8}") {
        let text = format!("scenarios:\n  - name: s\n    {key}: {value}\n    transactions:\n      - name: t\n        request: {{ path: / }}\n");
        if let Err(e) = ScenarioPlan::from_yaml(&text, "p.yaml", Path::new("."), None) {
            prop_assert!(e.to_string().starts_with("scenario p.yaml:"), "{}", e);
        }
    }
}
