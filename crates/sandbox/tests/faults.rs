//! Fault knobs provoke SLO breaches that a client observes from outside.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::time::{Duration, Instant};

use common::{SMALL, get, get_json, metric, post_json, set_faults, start};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn added_latency_is_seen_by_clients_and_cleared() {
    let sandbox = start(&SMALL).await;
    set_faults(&sandbox, json!({ "latency_ms": 300 })).await;
    let started = Instant::now();
    assert_eq!(get(&sandbox, "/api/collections/1").await.status(), 200);
    let slow = started.elapsed();
    assert!(slow >= Duration::from_millis(300), "request took {slow:?}");
    // Operations endpoints are never slowed down.
    let started = Instant::now();
    get(&sandbox, "/healthz").await;
    assert!(started.elapsed() < Duration::from_millis(300));

    common::client().delete(format!("{}/admin/faults", sandbox.url())).send().await.unwrap();
    let started = Instant::now();
    get(&sandbox, "/api/collections/1").await;
    assert!(started.elapsed() < Duration::from_millis(250), "latency cleared");
    let slow_bucket = metric(
        &sandbox,
        "http_request_duration_seconds_bucket",
        &[("route", "/api/collections/{id}"), ("le", "0.25")],
    )
    .await;
    let all = metric(
        &sandbox,
        "http_request_duration_seconds_count",
        &[("route", "/api/collections/{id}")],
    )
    .await;
    assert_eq!(all - slow_bucket, 1.0, "exactly one request slower than 250 ms in the histogram");
}

#[tokio::test(flavor = "multi_thread")]
async fn error_rate_fails_exactly_that_share_of_requests() {
    let sandbox = start(&SMALL).await;
    set_faults(&sandbox, json!({ "error_rate": 0.25 })).await;
    let mut failures = 0;
    for id in 1..=20 {
        let response = get(&sandbox, &format!("/api/nfts/{id}")).await;
        if response.status() == 500 {
            failures += 1;
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "injected fault");
        }
    }
    assert_eq!(failures, 5);
    assert_eq!(
        metric(&sandbox, "http_requests_total", &[("route", "/api/nfts/{id}"), ("status", "500")])
            .await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn periodic_stalls_pause_requests() {
    let sandbox = start(&SMALL).await;
    set_faults(&sandbox, json!({ "stall_every_ms": 10_000, "stall_for_ms": 400 })).await;
    let started = Instant::now();
    get(&sandbox, "/api/collections/2").await;
    assert!(started.elapsed() >= Duration::from_millis(300), "first request lands in the stall");
}

#[tokio::test(flavor = "multi_thread")]
async fn database_down_opens_its_breaker_and_recovery_closes_it() {
    let sandbox = start(&[
        "--collections",
        "50",
        "--nfts",
        "500",
        "--breaker-failures",
        "3",
        "--breaker-open-for",
        "300ms",
    ])
    .await;
    set_faults(&sandbox, json!({ "down": ["database"] })).await;
    for id in 1..=3 {
        assert_eq!(get(&sandbox, &format!("/api/nfts/{id}")).await.status(), 503);
    }
    let body: serde_json::Value = get(&sandbox, "/api/nfts/4").await.json().await.unwrap();
    assert_eq!(body["error"], "database circuit breaker is open");
    assert_eq!(
        metric(&sandbox, "circuit_breaker_state", &[("dependency", "database"), ("state", "open")])
            .await,
        1.0
    );
    assert_eq!(get(&sandbox, "/readyz").await.status(), 503);

    common::client().delete(format!("{}/admin/faults", sandbox.url())).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(get(&sandbox, "/api/nfts/5").await.status(), 200, "trial call succeeds");
    assert_eq!(
        metric(
            &sandbox,
            "circuit_breaker_state",
            &[("dependency", "database"), ("state", "closed")]
        )
        .await,
        1.0
    );
    let reopened = metric(
        &sandbox,
        "circuit_breaker_transitions_total",
        &[("dependency", "database"), ("from", "half_open"), ("to", "closed")],
    )
    .await;
    assert_eq!(reopened, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_down_falls_back_to_the_database_at_once() {
    let sandbox = start(&["--collections", "50", "--nfts", "500", "--breaker-failures", "2"]).await;
    set_faults(&sandbox, json!({ "down": ["cache"] })).await;
    for _ in 0..4 {
        let response = get(&sandbox, "/api/collections/3").await;
        assert_eq!(response.status(), 200, "served from the database");
    }
    assert_eq!(
        metric(&sandbox, "circuit_breaker_state", &[("dependency", "cache"), ("state", "open")])
            .await,
        1.0
    );
    let ready = get_json(&sandbox, "/readyz").await;
    assert_eq!(ready["cache"], "degraded");
}

#[tokio::test(flavor = "multi_thread")]
async fn database_latency_fills_the_connection_pool() {
    let sandbox = start(&["--collections", "50", "--nfts", "500", "--db-pool-size", "4"]).await;
    set_faults(&sandbox, json!({ "db_latency_ms": 500 })).await;
    let url = sandbox.url().to_owned();
    let requests: Vec<_> = (1..=4)
        .map(|id| {
            let url = url.clone();
            tokio::spawn(async move { reqwest::get(format!("{url}/api/nfts/{id}")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(metric(&sandbox, "db_connections_in_use", &[]).await, 4.0);
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(metric(&sandbox, "db_connections_in_use", &[]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_fault_specs_are_refused_with_the_reason() {
    let sandbox = start(&SMALL).await;
    for (spec, expected) in [
        (json!({ "error_rate": 2 }), "error_rate must be between 0 and 1"),
        (json!({ "latency": 5 }), "unknown field `latency`"),
        (json!({ "down": ["kafka"] }), "unknown variant `kafka`"),
    ] {
        let response = post_json(&sandbox, "/admin/faults", &spec).await;
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(expected), "{body}");
    }
    let response = common::client()
        .post(format!("{}/admin/faults", sandbox.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}
