//! Exit codes and files of the binary: a bad scenario exits 2 naming file,
//! line and key; an unreachable target exits 3; shard reports merge into
//! the whole run's; a baseline flags regressions; capacity names the first
//! resource to saturate.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use common::{check, faults, load_tester, measurement, report, sandbox, text};
use load_tester::histogram::LatencyHistogram;
use load_tester::report::RunData;
use shared_types::{Report, Verdict};

#[tokio::test]
async fn a_bad_scenario_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checkout.yaml");
    std::fs::write(&file, "scenarios:\n  - name: buyer\n    weight: lots\n    transactions:\n      - name: a\n        request: { path: / }\n").unwrap();
    let out = load_tester(&[
        "run",
        "--target",
        "http://127.0.0.1:9",
        "--scenario",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let message = text(&out);
    assert!(message.contains(&format!("{}:3:", file.display())), "{message}");
    assert!(message.contains("key `scenarios.weight`"), "{message}");

    let check_only = load_tester(&["scenario", "--check", file.to_str().unwrap()]).await;
    assert_eq!(check_only.status.code(), Some(2), "{}", text(&check_only));
}

#[tokio::test]
async fn an_unreachable_target_exits_3_without_its_password() {
    let port = testkit::free_port();
    let target = format!("http://ops:hunter2@127.0.0.1:{port}");
    let out = load_tester(&["run", "--target", &target, "--duration", "1s"]).await;
    let message = text(&out);
    assert_eq!(out.status.code(), Some(3), "{message}");
    assert!(
        message.contains(&format!("cannot reach the target http://127.0.0.1:{port}")),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_bad_metric_mapping_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mapping.yaml");
    std::fs::write(&file, "cache_hits: redis_keyspace_hits_total\npool_size: x\n").unwrap();
    let out = load_tester(&[
        "run",
        "--target",
        "http://127.0.0.1:9",
        "--metric-mapping",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let message = text(&out);
    assert!(message.contains("mapping.yaml") && message.contains("pool_size"), "{message}");
}

#[tokio::test]
async fn an_unknown_threshold_metric_exits_2() {
    let out =
        load_tester(&["run", "--target", "http://127.0.0.1:9", "--threshold", "latency < 1s"])
            .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown metric \"latency\""), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn merging_two_shards_equals_one_runs_histogram() {
    let sb = sandbox(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let shard = |k: &'static str, file: String| {
        let url = sb.url().to_owned();
        async move {
            load_tester(&[
                "run",
                "--target",
                &url,
                "--users",
                "6",
                "--duration",
                "2s",
                "--think-time",
                "0ms..10ms",
                "--shard",
                k,
                "--report",
                &file,
                "--output",
                "json",
            ])
            .await
        }
    };
    let (a, b) = tokio::join!(shard("1/2", path("s1.json")), shard("2/2", path("s2.json")));
    assert_eq!((a.status.code(), b.status.code()), (Some(0), Some(0)), "{}{}", text(&a), text(&b));
    let merged =
        load_tester(&["merge", &path("s1.json"), &path("s2.json"), "--output", "json"]).await;
    assert_eq!(merged.status.code(), Some(0), "{}", text(&merged));

    let run = |r: &Report| RunData::from_report(r).unwrap();
    let (ra, rb, rm) = (run(&report(&a)), run(&report(&b)), run(&report(&merged)));
    let mut expected = LatencyHistogram::new();
    for data in [&ra, &rb] {
        for (us, count) in data.stats.overall().latency.buckets() {
            for _ in 0..count {
                expected.record_us(us); // every sample of both shards, recorded one by one
            }
        }
    }
    assert_eq!(rm.stats.overall().latency, expected);
    assert_eq!(
        rm.stats.overall().requests,
        ra.stats.overall().requests + rb.stats.overall().requests
    );
    let users = |d: &RunData| d.load_model.peak_users();
    assert_eq!((users(&ra), users(&rb), users(&rm)), (3, 3, 6));
    assert_eq!(check(&report(&merged), "shards-complete").verdict, Verdict::Pass);

    let partial = load_tester(&["merge", &path("s1.json"), "--output", "json"]).await;
    assert_eq!(check(&report(&partial), "shards-complete").verdict, Verdict::Error);
    let twice = load_tester(&["merge", &path("s1.json"), &path("s1.json")]).await;
    assert_eq!(twice.status.code(), Some(2), "{}", text(&twice));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slower_run_is_flagged_against_its_baseline() {
    let sb = sandbox(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.json");
    let args = [
        "run",
        "--target",
        sb.url(),
        "--users",
        "4",
        "--duration",
        "2s",
        "--think-time",
        "0",
        "--output",
        "json",
    ];
    let first = load_tester(&[&args[..], &["--report", base.to_str().unwrap()]].concat()).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    faults(&sb, r#"{"latency_ms": 60}"#).await;
    let second = load_tester(&[&args[..], &["--baseline", base.to_str().unwrap()]].concat()).await;
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    let r = report(&second);
    let regression = check(&r, "baseline");
    assert_eq!(regression.verdict, Verdict::Fail);
    assert!(regression.detail.as_deref().unwrap().contains("p95_ms"), "{regression:?}");
    assert_eq!(
        check(&r, "p95-latency").verdict,
        Verdict::Pass,
        "60 ms is within the SLO, only worse"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_search_names_the_saturated_connection_pool() {
    let sb = sandbox(&["--db-pool-size", "8"]).await;
    faults(&sb, r#"{"db_latency_ms": 40}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("cold.yaml");
    std::fs::write(
        &scenario,
        "feeds:\n  nft: { range: [1, 100000] }\nscenarios:\n  - name: long tail\n    transactions:\n      - name: view any nft\n        request: { path: \"/api/nfts/{{nft}}\" }\n",
    )
    .unwrap();
    let out = load_tester(&[
        "capacity",
        "--target",
        sb.url(),
        "--scenario",
        scenario.to_str().unwrap(),
        "--threshold",
        "cache_hit_rate >= 0%",
        "--start-users",
        "2",
        "--step-users",
        "14",
        "--max-users",
        "30",
        "--step-duration",
        "2s",
        "--output",
        "json",
    ])
    .await;
    let r = report(&out);
    let capacity = check(&r, "load-capacity");
    assert_eq!(capacity.verdict, Verdict::Pass, "{}", text(&out));
    assert_eq!(measurement(&r, "load_capacity_users"), 2.0, "{capacity:?}");
    let first = check(&r, "first-saturation");
    let observed = first.observed.as_deref().unwrap();
    assert!(observed.contains("database connection pool"), "{first:?}");
    assert!(first.detail.as_deref().unwrap().contains("pool size"), "{first:?}");
}
